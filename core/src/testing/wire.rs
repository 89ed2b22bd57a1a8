//! The harness's network: carrying a core's actions out and delivering what they put
//! on the wire, after [`LATENCY`].

use super::*;

impl Net {
    pub(super) fn act(&mut self, i: usize, a: Action) {
        let stream = match &a {
            Action::OpenStream { stream, .. }
            | Action::Write { stream, .. }
            | Action::PauseRead { stream }
            | Action::ResumeRead { stream }
            | Action::CloseStream { stream, .. } => Some(*stream),
            _ => None,
        };
        let dial = match &a {
            Action::Dial { dial, .. }
            | Action::Ping { dial }
            | Action::OpenStream { dial, .. }
            | Action::CloseDial { dial } => Some(*dial),
            _ => None,
        };
        if let Some(s) = stream {
            assert!(
                !self.closed_streams.contains(&(i, s)),
                "node {i}: {a:?} names a closed stream"
            );
        }
        if let Some(d) = dial {
            assert!(
                !self.closed_dials.contains(&(i, d)),
                "node {i}: {a:?} names a closed dial"
            );
        }
        match &a {
            Action::CloseStream { stream, .. } => {
                self.closed_streams.insert((i, *stream));
            }
            Action::CloseDial { dial } => {
                self.closed_dials.insert((i, *dial));
            }
            _ => {}
        }
        match a {
            Action::Dial { dial, endpoint } => {
                let target = self.node_of(&endpoint);
                let ok =
                    target.is_some_and(|t| self.nodes[t].up && !self.refuse_dials.contains(&t));
                if let Some(t) = target {
                    self.dial_target.insert((i, dial), t);
                }
                let hash = target.and_then(|t| {
                    self.presented_hash
                        .get(&t)
                        .copied()
                        .or(self.nodes[t].tls_hash)
                });
                self.push(
                    LATENCY,
                    Wire::DialResult {
                        node: i,
                        dial,
                        ok,
                        hash,
                    },
                );
            }
            Action::Ping { dial } => {
                let t = self.dial_target[&(i, dial)];
                if !self.hang_pings.contains(&t) {
                    let ok = self.nodes[t].up;
                    self.push(LATENCY * 2, Wire::PingResult { node: i, dial, ok });
                }
            }
            Action::OpenStream { dial, stream } => {
                let t = self.dial_target[&(i, dial)];
                self.links.insert((i, stream), (t, None));
                let hash = if self.no_client_cert.contains(&i) {
                    None
                } else {
                    self.presented_hash.get(&i).copied().or(self.nodes[i]
                        .comm
                        .config()
                        .tls
                        .as_ref()
                        .map(|t| t.client_cert_hash))
                };
                self.push(
                    LATENCY,
                    Wire::Accept {
                        from: i,
                        from_stream: stream,
                        to: t,
                        hash,
                    },
                );
            }
            Action::Write {
                stream,
                envelope,
                kind,
            } => match self.links.get(&(i, stream)).copied() {
                Some((t, Some(ts))) => self.carry((i, stream), (t, ts), envelope, kind),
                Some((_, None)) => {
                    self.pending_writes
                        .entry((i, stream))
                        .or_default()
                        .push((envelope, kind));
                }
                None => {}
            },
            Action::CloseStream { stream, error } => {
                if let Some((t, ts)) = self.links.remove(&(i, stream))
                    && let Some(ts) = ts
                {
                    self.links.remove(&(t, ts));
                    // An error status reaches the other end as one, as over gRPC.
                    self.close_end(t, ts, error.map_or(StreamEnd::Finished, StreamEnd::Error));
                }
                self.pending_writes.remove(&(i, stream));
            }
            Action::PauseRead { stream } => {
                self.paused.insert((i, stream));
            }
            Action::ResumeRead { stream } => {
                self.paused.remove(&(i, stream));
                if let Some(mut q) = self.held.remove(&(i, stream)) {
                    while let Some(b) = q.pop_front() {
                        if self.paused.contains(&(i, stream)) {
                            self.held.entry((i, stream)).or_default().push_back(b);
                            continue;
                        }
                        self.record_arrival(i, stream, &b);
                        let _ = self.nodes[i].comm.handle_envelope(self.now, stream, b);
                    }
                    self.flush(i);
                }
            }
            Action::CloseDial { .. } => {}
        }
    }

    /// Puts one write on the wire to the remote end, and confirms it to the writer at once
    /// when it used write credit (the handshake does not).
    fn carry(
        &mut self,
        (from, from_stream): (usize, StreamId),
        (to, to_stream): (usize, StreamId),
        bytes: Bytes,
        kind: WriteKind,
    ) {
        self.push(
            LATENCY,
            Wire::Envelope {
                node: to,
                stream: to_stream,
                bytes,
            },
        );
        if kind == WriteKind::Message {
            self.push(
                Duration::ZERO,
                Wire::Sent {
                    node: from,
                    stream: from_stream,
                },
            );
        }
    }

    /// Tells node `node` that its stream ended, after the link's latency.
    pub(super) fn close_end(&mut self, node: usize, stream: StreamId, end: StreamEnd) {
        self.push(LATENCY, Wire::Closed { node, stream, end });
    }

    pub(super) fn record_arrival(&mut self, node: usize, stream: StreamId, bytes: &Bytes) {
        if self.nodes[node].comm.connection_info(stream).is_none() {
            return;
        }
        if let Ok(m) = SignedMessage::from_envelope_bytes(bytes.clone())
            && let Some((_, data)) = crate::data_payload(m.message())
        {
            self.arrivals.entry(node).or_default().push(data.to_vec());
        }
    }

    pub(super) fn deliver(&mut self, w: Wire) {
        let now = self.now;
        let node = match &w {
            Wire::DialResult { node, .. }
            | Wire::PingResult { node, .. }
            | Wire::Envelope { node, .. }
            | Wire::Sent { node, .. }
            | Wire::Closed { node, .. } => *node,
            Wire::Accept { to, .. } => *to,
        };
        if !self.nodes[node].up {
            return;
        }
        match w {
            Wire::DialResult {
                node,
                dial,
                ok,
                hash,
            } => {
                let r = if ok {
                    Ok(hash)
                } else {
                    Err("connection refused".to_string())
                };
                let _ = self.nodes[node].comm.handle_dial_result(now, dial, r);
            }
            Wire::PingResult { node, dial, ok } => {
                let r = if ok {
                    Ok(())
                } else {
                    Err("unavailable".to_string())
                };
                let _ = self.nodes[node].comm.handle_ping_result(now, dial, r);
            }
            Wire::Accept {
                from,
                from_stream,
                to,
                hash,
            } => {
                if !self.links.contains_key(&(from, from_stream)) {
                    return;
                }
                match self.nodes[to].comm.accept_stream(now, &ep(from), hash) {
                    Ok(s) => {
                        self.links.insert((from, from_stream), (to, Some(s)));
                        self.links.insert((to, s), (from, Some(from_stream)));
                        for (b, kind) in self
                            .pending_writes
                            .remove(&(from, from_stream))
                            .unwrap_or_default()
                        {
                            self.carry((from, from_stream), (to, s), b, kind);
                        }
                    }
                    Err(_) => {
                        self.links.remove(&(from, from_stream));
                        self.close_end(from, from_stream, StreamEnd::Error("Shutting down".into()));
                    }
                }
                self.flush(to);
            }
            Wire::Envelope {
                node,
                stream,
                bytes,
            } => {
                if self.paused.contains(&(node, stream)) {
                    self.held
                        .entry((node, stream))
                        .or_default()
                        .push_back(bytes);
                    return;
                }
                self.record_arrival(node, stream, &bytes);
                let _ = self.nodes[node].comm.handle_envelope(now, stream, bytes);
            }
            Wire::Sent { node, stream } => {
                let _ = self.nodes[node].comm.handle_sent(now, stream, 1);
            }
            Wire::Closed { node, stream, end } => {
                let _ = self.nodes[node].comm.handle_stream_closed(now, stream, end);
            }
        }
        self.flush(node);
    }
}
