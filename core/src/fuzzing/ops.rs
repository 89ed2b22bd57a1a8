//! The `core_ops` target: arbitrary driver events, API calls and time steps.

use super::*;

/// One step of the `core_ops` target: a driver event, an API call or time passing. Handles
/// are chosen by index among those the core ever issued (dead ones included), so both
/// sides of every "is the handle live" branch are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A remote opens a stream; `cert` picks the certificate it presents.
    Accept {
        /// Which remote (`PEERS`, or ourselves).
        peer: u8,
        /// 0 its own certificate, 1 none, 2 a wrong one.
        cert: u8,
    },
    /// A dial completes.
    DialResult {
        /// Which dial.
        dial: u8,
        /// Whether it succeeded.
        ok: bool,
        /// The certificate the server presents, as for `Accept`.
        cert: u8,
    },
    /// A Ping completes.
    PingResult {
        /// Which dial.
        dial: u8,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A ConnEstablish arrives on a stream.
    Hello {
        /// Which stream.
        stream: u8,
        /// Who it claims to be: below 128, `PEERS` or ourselves; from 128, the peer the
        /// stream really leads to.
        peer: u8,
        /// 0 valid, 1 bad signature, 2 wrong certificate hash, 3 not a ConnEstablish,
        /// 4 unsigned, 5 a probe.
        flaw: u8,
    },
    /// One of our data messages arrives on a stream.
    Data {
        /// Which stream.
        stream: u8,
    },
    /// An Acknowledgement arrives, for a nonce we sent (or a made-up one).
    AckIn {
        /// Which stream.
        stream: u8,
        /// Which nonce.
        nonce: u8,
        /// Whether it carries an error.
        error: bool,
    },
    /// These bytes arrive as an Envelope.
    Garbage {
        /// Which stream.
        stream: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// An Envelope one byte over the limit arrives.
    Oversized {
        /// Which stream.
        stream: u8,
    },
    /// The driver confirms writes.
    Sent {
        /// Which stream.
        stream: u8,
        /// How many.
        count: u8,
    },
    /// A write fails.
    WriteFailed {
        /// Which stream.
        stream: u8,
    },
    /// A stream ends.
    Closed {
        /// Which stream.
        stream: u8,
        /// With an error rather than cleanly.
        error: bool,
    },
    /// `send` to the peers in a bit mask.
    Send {
        /// Bits 0–4: `PEERS`; bits 5–7: how the RemotePeer is named.
        peers: u8,
    },
    /// `send_wait` to one peer.
    SendWait {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// `send_with_ack` to the peers in a bit mask.
    SendWithAck {
        /// As for `Send`.
        peers: u8,
        /// `min_ack`.
        min_ack: u8,
        /// Time-out, in 100 ms.
        timeout: u8,
    },
    /// `probe` a peer.
    Probe {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// A `handshake()` operation.
    Handshake {
        /// Which peer and how it is named.
        peer: u8,
    },
    /// `subscribe` with an acceptor: 0 all, 1 even sequence numbers, 2 odd.
    Subscribe {
        /// The acceptor.
        filter: u8,
    },
    /// `unsubscribe`.
    Unsubscribe {
        /// Which subscription.
        sub: u8,
    },
    /// The application polls deliveries.
    Poll {
        /// Which subscription.
        sub: u8,
        /// At most this many.
        count: u8,
    },
    /// `respond` on a stream.
    Respond {
        /// Which stream.
        stream: u8,
    },
    /// `ack` on a stream.
    AckOut {
        /// Which stream.
        stream: u8,
        /// Nonce acked.
        nonce: u8,
    },
    /// `close_conn`.
    CloseConn {
        /// Which peer.
        peer: u8,
    },
    /// `stop`.
    Stop,
    /// Time passes, then `handle_timeout`.
    Advance {
        /// Milliseconds.
        millis: u16,
    },
    /// Time jumps to the next deadline, then `handle_timeout`.
    AdvanceToDeadline,
    /// The provider revokes a peer's identity (a CRL arrives), then the node revalidates.
    Revoke {
        /// Which peer (`PEERS`).
        peer: u8,
    },
    /// A driver input with a handle made up from parts.
    StaleHandle {
        /// 0 stream, 1 dial, 2 subscription.
        kind: u8,
        /// Slot index.
        index: u8,
        /// Generation.
        generation: u8,
    },
}

pub(super) const OP_KINDS: u8 = 27;

impl Op {
    pub(super) fn read(i: &mut Input<'_>) -> Op {
        match i.u8() % OP_KINDS {
            0 => Op::Accept {
                peer: i.u8(),
                cert: i.u8(),
            },
            1 => Op::DialResult {
                dial: i.u8(),
                ok: i.bool(),
                cert: i.u8(),
            },
            2 => Op::PingResult {
                dial: i.u8(),
                ok: i.bool(),
            },
            3 => Op::Hello {
                stream: i.u8(),
                peer: i.u8(),
                flaw: i.u8(),
            },
            4 => Op::Data { stream: i.u8() },
            5 => Op::AckIn {
                stream: i.u8(),
                nonce: i.u8(),
                error: i.bool(),
            },
            6 => Op::Garbage {
                stream: i.u8(),
                bytes: i.blob().to_vec(),
            },
            7 => Op::Oversized { stream: i.u8() },
            8 => Op::Sent {
                stream: i.u8(),
                count: i.u8(),
            },
            9 => Op::WriteFailed { stream: i.u8() },
            10 => Op::Closed {
                stream: i.u8(),
                error: i.bool(),
            },
            11 => Op::Send { peers: i.u8() },
            12 => Op::SendWait { peer: i.u8() },
            13 => Op::SendWithAck {
                peers: i.u8(),
                min_ack: i.u8(),
                timeout: i.u8(),
            },
            14 => Op::Probe { peer: i.u8() },
            15 => Op::Handshake { peer: i.u8() },
            16 => Op::Subscribe { filter: i.u8() },
            17 => Op::Unsubscribe { sub: i.u8() },
            18 => Op::Poll {
                sub: i.u8(),
                count: i.u8(),
            },
            19 => Op::Respond { stream: i.u8() },
            20 => Op::AckOut {
                stream: i.u8(),
                nonce: i.u8(),
            },
            21 => Op::CloseConn { peer: i.u8() },
            22 => Op::Stop,
            23 => Op::Advance { millis: i.u16() },
            24 => Op::AdvanceToDeadline,
            25 => Op::StaleHandle {
                kind: i.u8(),
                index: i.u8(),
                generation: i.u8(),
            },
            _ => Op::Revoke { peer: i.u8() },
        }
    }

    pub(super) fn write(&self, o: &mut Output) {
        match self {
            Op::Accept { peer, cert } => o.bytes(&[0, *peer, *cert]),
            Op::DialResult { dial, ok, cert } => o.bytes(&[1, *dial, u8::from(*ok), *cert]),
            Op::PingResult { dial, ok } => o.bytes(&[2, *dial, u8::from(*ok)]),
            Op::Hello { stream, peer, flaw } => o.bytes(&[3, *stream, *peer, *flaw]),
            Op::Data { stream } => o.bytes(&[4, *stream]),
            Op::AckIn {
                stream,
                nonce,
                error,
            } => o.bytes(&[5, *stream, *nonce, u8::from(*error)]),
            Op::Garbage { stream, bytes } => {
                o.bytes(&[6, *stream]);
                o.blob(bytes);
            }
            Op::Oversized { stream } => o.bytes(&[7, *stream]),
            Op::Sent { stream, count } => o.bytes(&[8, *stream, *count]),
            Op::WriteFailed { stream } => o.bytes(&[9, *stream]),
            Op::Closed { stream, error } => o.bytes(&[10, *stream, u8::from(*error)]),
            Op::Send { peers } => o.bytes(&[11, *peers]),
            Op::SendWait { peer } => o.bytes(&[12, *peer]),
            Op::SendWithAck {
                peers,
                min_ack,
                timeout,
            } => o.bytes(&[13, *peers, *min_ack, *timeout]),
            Op::Probe { peer } => o.bytes(&[14, *peer]),
            Op::Handshake { peer } => o.bytes(&[15, *peer]),
            Op::Subscribe { filter } => o.bytes(&[16, *filter]),
            Op::Unsubscribe { sub } => o.bytes(&[17, *sub]),
            Op::Poll { sub, count } => o.bytes(&[18, *sub, *count]),
            Op::Respond { stream } => o.bytes(&[19, *stream]),
            Op::AckOut { stream, nonce } => o.bytes(&[20, *stream, *nonce]),
            Op::CloseConn { peer } => o.bytes(&[21, *peer]),
            Op::Stop => o.u8(22),
            Op::Advance { millis } => {
                o.u8(23);
                o.u16(*millis);
            }
            Op::AdvanceToDeadline => o.u8(24),
            Op::StaleHandle {
                kind,
                index,
                generation,
            } => o.bytes(&[25, *kind, *index, *generation]),
            Op::Revoke { peer } => o.bytes(&[26, *peer]),
        }
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut i = Input(Unstructured::new(u.bytes(u.len().min(1 << 16))?));
        Ok(Op::read(&mut i))
    }
}

/// The configuration bytes of a `core_ops` input: small bounds so that every limit is hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpsConfig(pub [u8; 12]);

impl OpsConfig {
    pub(super) fn config(&self) -> (Config, u8) {
        let b = self.0;
        let ms = |x: u8, unit: u64| Duration::from_millis(unit * u64::from(x % 8));
        let cfg = Config {
            dial_timeout: ms(b[0], 100),
            // Bits 3-7 of b[0]: 0 is one attempt a dial (as every input before retries
            // were modelled), more a back-off from 20 ms, so retries fit the dial timeout.
            dial_backoff: match b[0] >> 3 {
                0 => None,
                k => Some(crate::DialBackoff {
                    base_delay: Duration::from_millis(20 * u64::from(k)),
                    ..crate::DialBackoff::GRPC_DEFAULT
                }),
            },
            conn_timeout: ms(b[1], 100),
            handshake_timeout: ms(b[2], 250),
            send_buffer_size: usize::from(b[3] % 4),
            // Bits 3-7 of b[9]: 0 keeps the default, more bounds a queue to a few messages.
            send_buffer_bytes: match b[9] >> 3 {
                0 => crate::SEND_BUFFER_BYTES,
                k => 64 * usize::from(k),
            },
            max_waiting_sends: usize::from((b[3] >> 2) % 4),
            write_window: usize::from((b[3] >> 4) % 3),
            subscription_buffer: usize::from(b[4] % 3),
            recv_buffer_size: usize::from((b[4] >> 2) % 3),
            presumed_dead_buffer: usize::from((b[4] >> 4) % 3),
            max_queued_events: crate::MAX_QUEUED_EVENTS,
            max_message_size: 200 + 4 * usize::from(b[5]),
            max_identity_size: 64,
            max_pending_handshakes: usize::from(b[6] % 4),
            max_connections: usize::from((b[6] >> 2) % 5),
            identity_store_capacity: usize::from(b[7] % 6),
            // Bits 2-7 of b[8]: 0 keeps Fabric's hour (never reached by an input), 1 no
            // purge, more a threshold of a few hundred milliseconds, so that inputs purge.
            identity_usage_threshold: match b[8] >> 2 {
                0 => Some(crate::IDENTITY_USAGE_THRESHOLD),
                1 => None,
                k => Some(Duration::from_millis(50 * u64::from(k))),
            },
            max_operations: usize::from((b[7] >> 3) % 4),
            max_subscriptions: usize::from(b[8] % 3),
            crossing_grace: ms(b[9], 100),
            tls: None,
            rng_seed: u64::from(b[10]),
        };
        (cfg, b[11])
    }
}

/// Encodes a configuration and a list of operations as input for [`core_ops`] (for seeds).
pub fn encode_ops(config: &OpsConfig, ops: &[Op]) -> Vec<u8> {
    let mut o = Output::default();
    for b in config.0 {
        o.u8(b);
    }
    for op in ops {
        op.write(&mut o);
    }
    o.0
}

pub(super) fn remote_peer(sel: u8) -> RemotePeer {
    let k = usize::from(sel) % (PEERS.len() + 1);
    let name = PEERS.get(k).copied().unwrap_or(ME);
    match (sel >> 5) % 4 {
        0 => RemotePeer::new(name, name),
        1 => RemotePeer::new(name, PkiId::default()),
        2 => RemotePeer::new(name, PEERS[(k + 1) % PEERS.len()]),
        _ => RemotePeer::new(PEERS[(k + 2) % PEERS.len()], name),
    }
}

pub(super) fn mask_peers(mask: u8) -> Vec<RemotePeer> {
    (0..PEERS.len())
        .filter(|k| mask & (1 << k) != 0)
        .map(|k| remote_peer(k as u8 | (mask >> 5) << 5))
        .collect()
}

pub(super) fn pick<T: Copy>(items: impl Iterator<Item = T> + Clone, sel: u8) -> Option<T> {
    let n = items.clone().count();
    (n > 0).then(|| items.clone().nth(usize::from(sel) % n))?
}

/// An `Arbitrary` list of driver events, API calls and time steps fed to one core, which
/// the harness drives as the call order prescribes, checking the core's invariants after
/// each: one primary connection per PKI-ID, no action naming a handle after its close,
/// handles live exactly until closed, every queue within its bound, nothing delivered after
/// stop, counters monotonic, no deadline left in the past, and every message the core took
/// on (to send or to deliver) accounted for: written, delivered, still queued, or counted
/// as dropped. The run ends with `stop`, after which the accounting must be exact.
pub fn core_ops(data: &[u8]) {
    core_ops_stats(data);
}

/// Runs [`core_ops`] and returns the core's final counters, so a seed can be checked to
/// reach the states its scenario is about.
pub fn core_ops_stats(data: &[u8]) -> Stats {
    let mut i = Input(Unstructured::new(data));
    let mut cb = [0u8; 12];
    for b in &mut cb {
        *b = i.u8();
    }
    let (cfg, tls) = OpsConfig(cb).config();
    let mut d = Driver::new(cfg, tls);
    let cfg = d.comm.config().clone();
    let mut steps = 0;
    while !i.is_empty() && steps < 512 {
        steps += 1;
        let op = Op::read(&mut i);
        step(&mut d, &cfg, op);
        d.check();
    }
    if !d.stopped {
        d.stop();
    }
    d.comm.stats().clone()
}

pub(super) fn step(d: &mut Driver, cfg: &Config, op: Op) {
    let stream = |d: &Driver, sel: u8| pick(d.stream_order.iter().copied(), sel);
    let dial = |d: &Driver, sel: u8| pick(d.dial_order.iter().copied(), sel);
    let cert_of = |d: &Driver, sel: u8, k: usize, client: bool| match sel % 3 {
        _ if d.comm.config().tls.is_none() => None,
        0 => Some(cert(k, client)),
        1 => None,
        _ => Some(WRONG_CERT),
    };
    match op {
        Op::Accept { peer, cert } => {
            let k = usize::from(peer) % (PEERS.len() + 1);
            let _ = d.try_accept(k, cert);
        }
        Op::DialResult {
            dial: sel,
            ok,
            cert,
        } => {
            if let Some(x) = dial(d, sel) {
                let k = d.dials[&x].peer;
                let r = if ok {
                    Ok(cert_of(d, cert, k, false))
                } else {
                    Err("refused".to_owned())
                };
                let live = !d.dials[&x].closed;
                let failed = r.is_err();
                let res = d.comm.handle_dial_result(d.now, x, r);
                assert_eq!(res.is_ok(), live, "{res:?}");
                if failed && live {
                    d.dial_failed.insert(x);
                }
                d.drain();
            }
        }
        Op::PingResult { dial: sel, ok } => {
            if let Some(x) = dial(d, sel) {
                let r = if ok { Ok(()) } else { Err("down".to_owned()) };
                let live = !d.dials[&x].closed;
                let res = d.comm.handle_ping_result(d.now, x, r);
                assert_eq!(res.is_ok(), live, "{res:?}");
                d.drain();
            }
        }
        Op::Hello {
            stream: sel,
            peer,
            flaw,
        } => {
            if let Some(s) = stream(d, sel) {
                let inbound = d.streams[&s].inbound;
                // High values: whoever the stream really leads to.
                let k = if peer >= 128 {
                    d.streams[&s].link.peer
                } else {
                    usize::from(peer) % (PEERS.len() + 1)
                };
                let bytes = match flaw % 6 {
                    0 => d_hello(k, inbound, 0),
                    1 => {
                        let mut env = Envelope::decode(d_hello(k, inbound, 0)).expect("ours");
                        env.signature = Bytes::from_static(&[1; 32]);
                        Bytes::from(env.encode_to_vec())
                    }
                    2 => d_hello(k, inbound, 1),
                    3 => SignedMessage::noop(data_message(0))
                        .envelope_bytes()
                        .clone(),
                    4 => {
                        let mut env = Envelope::decode(d_hello(k, inbound, 0)).expect("ours");
                        env.signature = Bytes::new();
                        Bytes::from(env.encode_to_vec())
                    }
                    _ => hello_with(k, inbound, 0, true),
                };
                feed(d, s, bytes);
            }
        }
        Op::Data { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                d.seq += 1;
                let m = SignedMessage::noop(data_message(d.seq));
                feed(d, s, m.envelope_bytes().clone());
            }
        }
        Op::AckIn {
            stream: sel,
            nonce,
            error,
        } => {
            if let Some(s) = stream(d, sel) {
                let n = pick(d.nonces.iter().copied(), nonce).unwrap_or(u64::from(nonce));
                let m = GossipMessage {
                    nonce: n,
                    content: Some(gossip_message::Content::Ack(Acknowledgement {
                        error: if error { "nope".into() } else { String::new() },
                    })),
                    ..Default::default()
                };
                feed(d, s, SignedMessage::noop(m).envelope_bytes().clone());
            }
        }
        Op::Garbage { stream: sel, bytes } => {
            if let Some(s) = stream(d, sel) {
                feed(d, s, Bytes::from(bytes));
            }
        }
        Op::Oversized { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                feed(d, s, Bytes::from(vec![0u8; cfg.max_message_size + 1]));
            }
        }
        Op::Sent { stream: sel, count } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].link.closed;
                let r = d.comm.handle_sent(d.now, s, usize::from(count % 4));
                assert_eq!(r.is_ok(), live);
                d.drain();
            }
        }
        Op::WriteFailed { stream: sel } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].link.closed;
                let r = d.comm.handle_write_failed(d.now, s, "broken pipe".into());
                assert_eq!(r.is_ok(), live);
                d.drain();
                assert!(!d.comm.is_live_stream(s));
            }
        }
        Op::Closed { stream: sel, error } => {
            if let Some(s) = stream(d, sel) {
                let live = !d.streams[&s].link.closed;
                let end = if error {
                    StreamEnd::Error("reset".into())
                } else {
                    StreamEnd::Finished
                };
                let r = d.comm.handle_stream_closed(d.now, s, end);
                assert_eq!(r.is_ok(), live);
                d.drain();
                assert!(!d.comm.is_live_stream(s));
            }
        }
        Op::Send { peers } => {
            let to = mask_peers(peers);
            d.seq += 1;
            let m = SignedMessage::noop(data_message(d.seq));
            match d.comm.send(d.now, &m, &to) {
                Ok(()) => d.sent.units += to.len() as u64,
                Err(Error::NoPeers) => assert!(to.is_empty()),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::SendWait { peer } => {
            d.seq += 1;
            let m = SignedMessage::noop(data_message(d.seq));
            let to = remote_peer(peer);
            match d.comm.send_wait(d.now, &m, &to) {
                Ok(()) => d.sent.units += 1,
                Err(Error::WouldBlock) => assert!(!d.stopped),
                // Another peer of unknown PKI-ID is being dialled.
                Err(Error::UnknownPkiIdBusy { .. }) => assert!(to.pki_id.is_empty()),
                Err(e) => assert!(
                    (d.stopped && e == Error::Stopped) || matches!(e, Error::LimitReached(_)),
                    "{e:?}"
                ),
            }
            d.drain();
        }
        Op::SendWithAck {
            peers,
            min_ack,
            timeout,
        } => {
            let to = mask_peers(peers);
            d.seq += 1;
            let unique: BTreeSet<_> = to.iter().map(|p| p.pki_id.clone()).collect();
            let r = d.comm.send_with_ack(
                d.now,
                data_message(d.seq),
                Duration::from_millis(100 * u64::from(timeout % 16)),
                usize::from(min_ack % 4),
                &to,
            );
            match r {
                Ok(op) => {
                    assert!(d.ops.insert(op, unique.len()).is_none());
                    d.sent.units += unique.len() as u64;
                }
                Err(Error::NoPeers) => assert!(to.is_empty()),
                Err(Error::LimitReached(_)) => assert!(d.ops.len() >= cfg.max_operations),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::Probe { peer } | Op::Handshake { peer } => {
            let p = remote_peer(peer);
            let r = if matches!(op, Op::Probe { .. }) {
                d.comm.probe(d.now, &p)
            } else {
                d.comm.handshake(d.now, &p)
            };
            match r {
                Ok(id) => assert!(d.ops.insert(id, 0).is_none()),
                Err(Error::LimitReached(_)) => assert!(d.ops.len() >= cfg.max_operations),
                Err(e) => assert!(d.stopped && e == Error::Stopped, "{e:?}"),
            }
            d.drain();
        }
        Op::Subscribe { filter } => {
            let _ = d.subscribe(filter);
        }
        Op::Unsubscribe { sub } => {
            if let Some(s) = pick(d.sub_order.iter().copied(), sub) {
                let queued = d.comm.delivery_queue_len(s) as u64;
                let live = d.live_subs.contains(&s) && !d.stopped;
                let r = d.comm.unsubscribe(s);
                assert_eq!(r.is_ok(), live, "{r:?}");
                if r.is_ok() {
                    d.delivered.discarded += queued;
                    d.live_subs.remove(&s);
                }
                d.drain();
            }
        }
        Op::Poll { sub, count } => {
            if let Some(s) = pick(d.sub_order.iter().copied(), sub) {
                d.poll(s, usize::from(count % 8) + 1);
            }
        }
        Op::Respond { stream: sel } | Op::AckOut { stream: sel, .. } => {
            if let Some(s) = stream(d, sel) {
                let r = match op {
                    Op::AckOut { nonce, .. } => {
                        let n = pick(d.nonces.iter().copied(), nonce).unwrap_or(u64::from(nonce));
                        d.comm.ack(d.now, s, n, None)
                    }
                    _ => {
                        d.seq += 1;
                        d.comm.respond(d.now, s, data_message(d.seq))
                    }
                };
                match r {
                    Ok(()) => d.sent.units += 1,
                    Err(Error::Stopped) => assert!(d.stopped),
                    Err(Error::ConnectionClosed) => {
                        assert!(d.streams[&s].link.closed || !d.conn_pki.contains_key(&s));
                    }
                    Err(Error::WouldBlock) => assert!(!d.streams[&s].link.closed),
                    Err(e) => panic!("{e:?}"),
                }
                d.drain();
            }
        }
        Op::CloseConn { peer } => {
            let p = remote_peer(peer);
            d.comm.close_conn(d.now, &p.pki_id);
            d.drain();
            assert!(d.comm.connection(&p.pki_id).is_none());
        }
        Op::Stop => d.stop(),
        Op::Advance { millis } => d.advance(Duration::from_millis(u64::from(millis))),
        Op::AdvanceToDeadline => {
            if let Some(t) = d.comm.poll_timeout() {
                let by = t.saturating_duration_since(d.now);
                d.advance(by);
            }
        }
        Op::Revoke { peer } => {
            let name = PEERS[usize::from(peer) % PEERS.len()];
            d.comm
                .security()
                .revoked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name.as_bytes().to_vec());
            let refused = d.comm.revalidate_identities(d.now);
            d.revalidating = Some(refused);
            d.drain();
            assert!(
                d.revalidating.is_none(),
                "IdentitiesRevalidated reported for every revalidation"
            );
            // Nothing connects the node to a revoked identity any more.
            let pki = PkiId::from(name);
            assert!(d.comm.connection(&pki).is_none(), "{name} still connected");
        }
        Op::StaleHandle {
            kind,
            index,
            generation,
        } => {
            let (index, generation) = (u32::from(index % 8), u32::from(generation % 4));
            match kind % 3 {
                0 => {
                    let s = StreamId::from_parts(index, generation);
                    let live = d.streams.get(&s).is_some_and(|st| !st.link.closed);
                    let r = d.comm.handle_sent(d.now, s, 0);
                    assert_eq!(r.is_ok(), live);
                    #[cfg(test)]
                    checked("stale stream", (s, live));
                }
                1 => {
                    let x = DialId::from_parts(index, generation);
                    let live = d.dials.get(&x).is_some_and(|st| !st.closed);
                    // A dial result for a dial past dialling is ignored, not an error.
                    let r = d.comm.handle_dial_result(d.now, x, Err("late".into()));
                    assert_eq!(r.is_ok(), live);
                    if live {
                        d.dial_failed.insert(x);
                    }
                    #[cfg(test)]
                    checked("stale dial", (x, live));
                }
                _ => {
                    let s = SubscriptionId::from_parts(index, generation);
                    if !d.live_subs.contains(&s) || d.stopped {
                        assert!(d.comm.poll_delivery(s).is_none());
                        assert_eq!(d.comm.unsubscribe(s), Err(Error::UnknownHandle));
                        #[cfg(test)]
                        checked("stale subscription", s);
                    }
                }
            }
            d.drain();
        }
    }
}

/// Hands an envelope to a stream: `Ok` exactly when the stream is live.
pub(super) fn feed(d: &mut Driver, s: StreamId, bytes: Bytes) {
    let live = !d.streams[&s].link.closed;
    let r = d.feed(s, bytes);
    assert_eq!(r.is_ok(), live, "{r:?}");
    d.drain();
}
