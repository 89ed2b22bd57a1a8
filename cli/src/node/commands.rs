//! stdin: the lines read ([`read_line`]) and the commands they hold, run by [`State`]'s
//! methods (`send`, `send_with_ack`, `stats`, `members`, `reload_trust`, plain lines), with the
//! fields they read and the DataMessages they send.

use super::{MAX_ACKS_PENDING, MAX_LINE, Next, State};
use crate::logging::TARGET;
use crate::lookup::Refused;
use crate::membership;
use crate::opts::{self, ConfigError, PkiForm};
use crate::out::Out;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_core::{AckError, HandshakeError, PkiId, RemotePeer, SendResult, SignedMessage};
use fabric_gossip_tonic::Node;
use serde_json::{Value, json};
use std::future::Future;
use std::io::BufRead;
use std::task::{Context, Waker};
use std::time::Duration;

/// Starts `op` now, in the caller's order, and lets it finish in a task of its own.
///
/// An operation of the node is queued in the core when its future is first polled; a
/// spawned task is first polled whenever the runtime gets to it, so two commands read in
/// one order could reach the core in the other. Polling once here, in the command loop,
/// queues each in the order the lines were read.
fn start_in_order(op: impl Future<Output = ()> + Send + 'static) {
    let mut op = Box::pin(op);
    // The waker is replaced by the task's own when the task polls it.
    if op
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        tokio::spawn(op);
    }
}

/// `GossipMessage{nonce, tag EMPTY, data_msg{payload{seq_num, data}}}`.
pub(crate) fn data_message(seq: u64, data: &[u8], nonce: u64) -> GossipMessage {
    GossipMessage {
        nonce,
        ..fabric_gossip_core::data_message(seq, data.to_vec())
    }
}

/// A tag by its name in Fabric's message.proto (`CHAN_AND_ORG`), in any case.
fn parse_tag(name: &str) -> Result<Tag, String> {
    Tag::from_str_name(&name.trim().to_ascii_uppercase()).ok_or_else(|| {
        format!(
            "\"tag\": unknown tag {name:?} (EMPTY, ORG_ONLY, CHAN_ONLY, CHAN_AND_ORG, \
             CHAN_OR_ORG, UNDEFINED)"
        )
    })
}

/// A stdin line, or why it was not read.
pub(super) enum Line {
    Text(String),
    Bad(String),
}

/// Reads one line of at most `MAX_LINE` bytes of text (its line end, `\n` or `\r\n`, not
/// counted, so a Windows writer gets the same bound); `None` at end of input. An overlong
/// line is skipped to its end and reported, so a runaway writer cannot exhaust memory.
pub(super) fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            if buf.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE + 2 {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        if done {
            break;
        }
    }
    let text = buf
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |last| last + 1);
    if too_long || text > MAX_LINE {
        return Ok(Some(Line::Bad(format!(
            "line longer than {MAX_LINE} bytes ignored"
        ))));
    }
    buf.truncate(text);
    Ok(Some(match String::from_utf8(buf) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::Bad("line is not UTF-8".into()),
    }))
}

/// A peer known by its endpoint alone (`--peer`, a command without `"pki_id"`): under test
/// identities its PKI-ID is the endpoint; under MSP identities it is unknown, and learnt
/// before sending (see [`Lookups`]).
///
/// [`Lookups`]: crate::lookup::Lookups
pub(super) fn peer_at(form: PkiForm, endpoint: String) -> RemotePeer {
    let pki = match form {
        PkiForm::Text => PkiId::from(endpoint.as_str()),
        PkiForm::Hex => PkiId::default(),
    };
    RemotePeer::new(endpoint, pki)
}

fn field_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" (a string) is required"))
}

fn field_u64(v: &Value, name: &str, default: Option<u64>) -> Result<u64, String> {
    match v.get(name) {
        None | Some(Value::Null) => {
            default.ok_or_else(|| format!("\"{name}\" (a number) is required"))
        }
        Some(x) => x
            .as_u64()
            .ok_or_else(|| format!("\"{name}\" must be a non-negative integer, got {x}")),
    }
}

impl State {
    /// The destination of a `send`/`send_with_ack` command.
    fn remote(&self, v: &Value) -> Result<RemotePeer, String> {
        let to = opts::parse_endpoint(field_str(v, "to")?).map_err(|e| format!("\"to\": {e}"))?;
        match v.get("pki_id").and_then(Value::as_str) {
            Some(p) => Ok(RemotePeer::new(to, self.form.parse(p, "\"pki_id\"")?)),
            None => Ok(peer_at(self.form, to)),
        }
    }

    pub(super) fn command(&mut self, line: &str) -> Next {
        let line = line.trim();
        if line.is_empty() {
            return Next::Continue;
        }
        // The first 200 characters: a line may be megabytes of data.
        tracing::debug!(
            target: TARGET,
            "command: {}",
            line.chars().take(200).collect::<String>()
        );
        if !line.starts_with('{') {
            self.broadcast(line);
            return Next::Continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                self.out.command_error(format!("not a JSON command: {e}"));
                return Next::Continue;
            }
        };
        let r = match v.get("cmd").and_then(Value::as_str) {
            Some("stop") => return Next::Stop,
            Some("send") => self.send(&v),
            Some("send_with_ack") => self.send_with_ack(&v),
            Some("stats") => {
                self.stats();
                Ok(())
            }
            Some("reload_trust") => {
                self.reload_trust("command");
                Ok(())
            }
            Some("members") => match membership::table(&self.node) {
                Some(t) => {
                    self.out
                        .emit(&membership::membership_json("members", &t, self.form));
                    Ok(())
                }
                None => Err(
                    "the membership layer is not running (start the node with --bootstrap, \
                     --membership or --config)"
                        .into(),
                ),
            },
            Some(other) => Err(format!(
                "unknown command {other:?} (send, send_with_ack, stats, members, reload_trust, \
                 stop)"
            )),
            None => Err("\"cmd\" (a string) is required".into()),
        };
        if let Err(e) = r {
            self.out.command_error(e);
        }
        Next::Continue
    }

    /// Reads the trust store again (CRLs included) and has the node revalidate every
    /// identity it holds, closing the connections of those now refused (Fabric's
    /// `SuspectPeers` after a configuration update). Prints `trust_reloaded`, or
    /// `trust_reload_failed` and keeps the store it had.
    pub(super) fn reload_trust(&mut self, by: &str) {
        let Some(r) = &self.reload else {
            self.out.emit(&json!({
                "event": "trust_reload_failed",
                "by": by,
                "error": "the test identity has no trust store",
            }));
            return;
        };
        match r.args.reload_trust(&r.handle) {
            Ok(trust) => {
                let refused = self.node.revalidate_identities();
                tracing::info!(target: TARGET, "trust reloaded ({by}); {refused} identities refused");
                let mut line = json!({
                    "event": "trust_reloaded",
                    "by": by,
                    "trust": crate::opts::trust_summary(&trust),
                    "refused": refused,
                });
                if let Some(c) = crate::opts::channels_summary(&trust) {
                    line["channels"] = c;
                }
                self.out.emit(&line);
                // Fabric learns the anchor peers on every configuration update: those of
                // the blocks read again that are not members yet.
                if let Some(org) = r.args.msp_id.as_deref() {
                    membership::connect_anchors(&self.node, org, trust.channel_configs(), true);
                }
            }
            Err(ConfigError(e)) => {
                tracing::warn!(target: TARGET, "trust not reloaded ({by}): {e}");
                self.out.emit(&json!({
                    "event": "trust_reload_failed",
                    "by": by,
                    "error": e,
                }));
            }
        }
    }

    /// `"seq"` of a command, or the next of the node's own sequence (shared with plain
    /// lines) when left out.
    fn seq(&mut self, v: &Value) -> Result<u64, String> {
        match v.get("seq") {
            None | Some(Value::Null) => {
                self.text_seq += 1;
                Ok(self.text_seq)
            }
            Some(_) => field_u64(v, "seq", None),
        }
    }

    /// The DataMessage of a `send`/`send_with_ack` command, with its channel and tag.
    fn message(&mut self, v: &Value, nonce: u64) -> Result<GossipMessage, String> {
        let data = field_str(v, "data")?.as_bytes().to_vec();
        let channel = match v.get("channel") {
            None | Some(Value::Null) => None,
            Some(_) => Some(field_str(v, "channel")?.to_owned()),
        };
        let tag = match v.get("tag") {
            None | Some(Value::Null) => None,
            Some(_) => Some(parse_tag(field_str(v, "tag")?)?),
        };
        let mut msg = data_message(self.seq(v)?, &data, nonce);
        if let Some(c) = &channel {
            msg.channel = c.as_bytes().to_vec().into();
        }
        // What Fabric's gossip requires of a DataMessage on a channel ("Tag should be
        // CHAN_AND_ORG"); messages outside a channel keep Fabric's comm tests' EMPTY.
        msg.tag = match (tag, &channel) {
            (Some(t), _) => t as i32,
            (None, Some(_)) => Tag::ChanAndOrg as i32,
            (None, None) => Tag::Empty as i32,
        };
        Ok(msg)
    }

    fn send(&mut self, v: &Value) -> Result<(), String> {
        let peer = self.remote(v)?;
        let nonce = field_u64(v, "nonce", Some(0))?;
        let msg = self.message(v, nonce)?;
        Ok(self.send_to(SignedMessage::noop(msg), peer)?)
    }

    /// Fabric's Send of `msg` to `peer`; when its PKI-ID is unknown, the message waits for
    /// the handshake that learns it, behind the others to the same endpoint ([`Lookups`]).
    /// Given, the message still goes behind those, if any wait.
    ///
    /// [`Lookups`]: crate::lookup::Lookups
    pub(super) fn send_to(&self, msg: SignedMessage, peer: RemotePeer) -> Result<(), Refused> {
        if peer.pki_id.is_empty() {
            return self
                .lookups
                .send(&self.node, &self.out, msg, &peer.endpoint);
        }
        self.lookups.send_named(&self.node, msg, peer)
    }

    fn send_with_ack(&mut self, v: &Value) -> Result<(), String> {
        let peer = self.remote(v)?;
        let msg = self.message(v, 0)?;
        let seq = match &msg.content {
            Some(Content::DataMsg(d)) => d.payload.as_ref().map_or(0, |p| p.seq_num),
            _ => 0,
        };
        let timeout = Duration::from_millis(field_u64(v, "timeout_ms", None)?);
        let permit = self.acks_pending.clone().try_acquire_owned().map_err(|_| {
            format!("{MAX_ACKS_PENDING} send_with_ack commands are already waiting")
        })?;
        let (node, form, out) = (self.node.clone(), self.form, self.out.clone());
        // Queued in the order the commands were read: at once with the PKI-ID given (always
        // under test identities), else in its turn among the messages waiting for the
        // handshake that learns it.
        let size = fabric_gossip_core::proto::prost::Message::encoded_len(&msg);
        let ask = move |peer: RemotePeer| {
            start_in_order(async move {
                let _permit = permit;
                let shown = form.show(&peer.pki_id);
                let (ok, error) = ack_outcome(node.send_with_ack(msg, timeout, 1, &[peer]).await);
                out.emit(&json!({
                    "event": "ack_result",
                    "peer": shown,
                    "seq": seq,
                    "ok": ok,
                    "error": error,
                }));
            });
        };
        let (endpoint, out) = (peer.endpoint.clone(), self.out.clone());
        let then = {
            // Named by its PKI-ID when given, as every other result; else by its endpoint,
            // as presumed_dead names a peer whose PKI-ID was never learnt (it printed ""
            // before).
            let shown = if peer.pki_id.is_empty() {
                endpoint.clone()
            } else {
                self.form.show(&peer.pki_id)
            };
            move |learnt: Result<RemotePeer, String>| match learnt {
                Ok(peer) => ask(peer),
                Err(e) => out.emit(&json!({
                    "event": "ack_result",
                    "peer": shown,
                    "seq": seq,
                    "ok": false,
                    "error": e,
                })),
            }
        };
        if peer.pki_id.is_empty() {
            self.lookups
                .then(&self.node, &self.out, &endpoint, size, Box::new(then))?;
        } else {
            self.lookups.then_named(peer, size, Box::new(then))?;
        }
        Ok(())
    }

    /// A plain-text line: a DataMessage to every connected peer; to the `--peer` endpoints
    /// instead while none is connected or while lines wait for a `--peer`'s PKI-ID.
    fn broadcast(&mut self, text: &str) {
        // The peer whose PKI-ID is being learnt may have dialled us meanwhile: a line sent
        // to the connected peers would overtake those waiting for it.
        if self
            .dials
            .iter()
            .any(|d| d.pki_id.is_empty() && self.lookups.waiting(&d.endpoint))
        {
            self.broadcast_to_dials(text);
            return;
        }
        let mut peers: Vec<RemotePeer> = self
            .node
            .connections()
            .into_iter()
            .map(|entry| {
                let pki = entry.pki_id;
                // The registered connection is found by PKI-ID; the endpoint is only used
                // to redial, which needs one under test identities (where it is the PKI-ID).
                let endpoint = match self.form {
                    PkiForm::Text => self.form.show(&pki),
                    PkiForm::Hex => String::new(),
                };
                RemotePeer::new(endpoint, pki)
            })
            .collect();
        if peers.is_empty() {
            self.broadcast_to_dials(text);
            return;
        }
        let mut to: Vec<String> = peers.iter().map(|p| self.form.show(&p.pki_id)).collect();
        // And each --peer whose PKI-ID is known and that is not connected (yet): queued
        // behind its dial, so that a --peer whose connection is still coming up misses no
        // line (it missed those read meanwhile, uncounted, when another peer was connected).
        // One whose PKI-ID is unknown and not being learnt (its handshake failed) is left
        // out: it may be a connected peer, which would get the line twice.
        for dial in &self.dials {
            let pki = if dial.pki_id.is_empty() {
                match self.lookups.known(&dial.endpoint) {
                    Some(pki) => pki,
                    None => continue,
                }
            } else {
                dial.pki_id.clone()
            };
            if !peers.iter().any(|p| p.pki_id == pki) {
                // By its PKI-ID, as once it is connected.
                to.push(self.form.show(&pki));
                peers.push(RemotePeer::new(dial.endpoint.clone(), pki));
            }
        }
        self.text_seq += 1;
        let msg = SignedMessage::noop(data_message(self.text_seq, text.as_bytes(), 0));
        match self.node.send(&msg, &peers) {
            Ok(()) => self.out.emit(&json!({
                "event": "sent",
                "seq": self.text_seq,
                "to": to,
            })),
            Err(e) => self.out.command_error(format!("send: {e}")),
        }
    }

    /// A plain line read while no peer is connected, or while lines wait for a `--peer`'s
    /// PKI-ID: a script piping lines into `node --peer X` reads them before the `--peer`
    /// connections are up, so each goes to the `--peer` endpoints as
    /// `{"cmd":"send","to":X}` would, queued behind the dial (or the handshake that learns
    /// the PKI-ID). A failed dial, or under an MSP identity a
    /// failed handshake, counts the line dropped and reports the peer presumed dead (as for
    /// such a `send`). Refused when there is no `--peer`, or past [`Lookups`]' limits.
    ///
    /// [`Lookups`]: crate::lookup::Lookups
    fn broadcast_to_dials(&mut self, text: &str) {
        if self.dials.is_empty() {
            self.out.command_error(
                "no connected peer to send the line to, and no --peer was given \
                 (give --peer, or use {\"cmd\":\"send\",\"to\":ADDR,\"data\":TEXT})",
            );
            return;
        }
        self.text_seq += 1;
        let msg = SignedMessage::noop(data_message(self.text_seq, text.as_bytes(), 0));
        let mut to = Vec::new();
        for peer in &self.dials {
            let d = &peer.endpoint;
            match self.send_to(msg.clone(), peer.clone()) {
                Ok(()) => to.push(d.clone()),
                Err(e) => self.out.command_error(format!("send to {d}: {e}")),
            }
        }
        if !to.is_empty() {
            // Named by endpoint: with an MSP identity the PKI-ID is not known yet.
            self.out
                .emit(&json!({"event": "sent", "seq": self.text_seq, "to": to}));
        }
    }

    fn stats(&self) {
        let mut v = stats_json(&self.node, &self.out);
        let lost = self.lookups.dropped();
        v["dropped_unauthenticated"] = json!(lost.unauthenticated);
        v["dropped_awaiting_pki"] = json!(lost.awaiting_pki);
        // The core's, and the endpoints whose PKI-IDs could not be learnt: one a
        // `presumed_dead` line.
        let core = v["presumed_dead"].as_u64().unwrap_or_default();
        v["presumed_dead"] = json!(core + self.lookups.presumed_dead());
        if let Some(m) = v.get_mut("membership").and_then(Value::as_object_mut) {
            m.extend(self.tables.counters());
        }
        self.out.emit(&v);
    }

    /// Prints the `membership` line: the whole table, once the pacer lets it out.
    pub(super) fn print_table(&mut self) {
        let now = tokio::time::Instant::now();
        let Some(t) = membership::table(&self.node) else {
            self.tables.printed(now, 0);
            return;
        };
        let line = membership::membership_json("membership", &t, self.form).to_string();
        self.out
            .lines()
            .line(line.len(), |buf| buf.extend_from_slice(line.as_bytes()));
        self.tables.printed(now, line.len() + 1);
    }
}

/// The `ok` and `error` of the `ack_result` line of a `send_with_ack` to one peer.
fn ack_outcome(r: Result<Vec<SendResult>, fabric_gossip_core::Error>) -> (bool, String) {
    match r {
        Ok(results) => match results.first().map(|r| &r.result) {
            Some(Ok(())) => (true, String::new()),
            Some(Err(AckError::Remote(e))) if e.is_empty() => {
                (false, "acked with an empty error".into())
            }
            Some(Err(e)) => (false, e.to_string()),
            None => (false, AckError::Timeout.to_string()),
        },
        Err(e) => (false, e.to_string()),
    }
}

/// Every counter of the core and the driver, handshake failures by reason, and the lines
/// of output dropped. Counter names are the fields' names; the driver's two counters that
/// share a name with the core's are prefixed `driver_`.
pub(crate) fn stats_json(node: &Node, out: &Out) -> Value {
    let s = node.stats();
    let d = node.driver_stats();
    let reasons: serde_json::Map<String, Value> = HandshakeError::LABELS
        .iter()
        .zip(s.handshake_failures.iter())
        .map(|(l, n)| ((*l).to_owned(), json!(n)))
        .collect();
    // The core's counters come from its one list (`Stats::counters`), so a counter added to
    // the core is printed without a change here.
    let mut v = json!({
        "event": "stats",
        "connections": node.connections().len(),
        "handshakes_failed": s.handshake_failures_total(),
        "handshake_failures": reasons,
        "output_dropped": out.dropped(),
    });
    let driver = json!({
        "driver_presumed_dead_dropped": d.presumed_dead_dropped,
        "identity_switch_dropped": d.identity_switch_dropped,
        "write_failures": d.write_failures,
        "dials_ok": d.dials_ok,
        "dials_failed": d.dials_failed,
        "driver_events_dropped": d.events_dropped,
        "writes_after_end": d.writes_after_end,
        "inbound_accepted": d.inbound_accepted,
        "inbound_open": d.inbound_open,
        "inbound_pending": d.inbound_pending,
        "inbound_refused": d.inbound_refused,
        "inbound_evicted": d.inbound_evicted,
        "inbound_setup_timeouts": d.inbound_setup_timeouts,
        "inbound_tls_failures": d.inbound_tls_failures,
        "accept_errors": d.accept_errors,
        "incomplete_bytes": d.incomplete_bytes,
        "incomplete_bytes_peak": d.incomplete_bytes_peak,
        "incomplete_budget_waits": d.incomplete_budget_waits,
        "stalled_messages": d.stalled_messages,
        "unfinished_closes": d.unfinished_closes,
        "bad_framing": d.bad_framing,
        "unread_at_close": d.unread_at_close,
        "layer_events_dropped": d.layer_events_dropped,
        "dropped_with_incoming": d.dropped_with_incoming,
    });
    if let (Some(obj), Value::Object(driver)) = (v.as_object_mut(), driver) {
        for (name, n) in s.counters() {
            obj.insert(name.to_owned(), json!(n));
        }
        obj.extend(driver);
    }
    if let Some(m) = membership::stats_json(node) {
        v["membership"] = m;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ack is `ok`, or not with the peer's error, a time-out when none came, or the
    /// node's error; an ack with an empty error is said to be one.
    #[test]
    fn an_ack_result_reads_ok_or_the_peer_s_error() {
        let acked = |result| {
            Ok(vec![SendResult {
                peer: PkiId::from("p"),
                result,
            }])
        };
        assert_eq!(ack_outcome(acked(Ok(()))), (true, String::new()));
        let refused = ack_outcome(acked(Err(AckError::Remote("no".into()))));
        assert_eq!(refused, (false, "no".into()));
        let empty = ack_outcome(acked(Err(AckError::Remote(String::new()))));
        assert_eq!(empty, (false, "acked with an empty error".into()));
        assert_eq!(ack_outcome(Ok(vec![])), (false, "timed out".into()));
        let stopped = ack_outcome(Err(fabric_gossip_core::Error::Stopped));
        assert_eq!(stopped, (false, "comm is stopped".into()));
    }

    /// The lines of `input` read through a buffer of `capacity` bytes (16 at most), as
    /// text or why they were not read.
    fn lines_of(input: &[u8], capacity: usize) -> Vec<Result<String, String>> {
        let mut r = std::io::BufReader::with_capacity(capacity, input);
        std::iter::from_fn(|| read_line(&mut r).expect("read"))
            .take(16)
            .map(|l| match l {
                Line::Text(t) => Ok(t),
                Line::Bad(e) => Err(e),
            })
            .collect()
    }

    /// A stdin line ends at its newline (a CR before it dropped), however many reads it
    /// takes; a line of MAX_LINE bytes of text is read whether it ends in LF or CRLF, a
    /// longer one is reported and skipped to its end, at the end of input too, and the lines
    /// after it are read.
    #[test]
    fn stdin_lines_end_at_their_newline_and_the_longest_is_max_line() {
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(
            lines_of(b"ab\nc\r\n\n\xffz\nlast", 3),
            [
                ok("ab"),
                ok("c"),
                ok(""),
                Err("line is not UTF-8".into()),
                ok("last")
            ]
        );
        assert_eq!(lines_of(b"", 3), []);
        let too_long = Err(format!("line longer than {MAX_LINE} bytes ignored"));
        let at_bound = [&vec![b'y'; MAX_LINE][..], b"\n"].concat();
        let over = [&vec![b'z'; MAX_LINE + 1][..], b"\nnext\n"].concat();
        let crlf_at_bound = [&vec![b'x'; MAX_LINE][..], b"\r\n"].concat();
        let crlf_over = [&vec![b'v'; MAX_LINE + 1][..], b"\r\n"].concat();
        let got = lines_of(&[at_bound, over, crlf_at_bound, crlf_over].concat(), 8192);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].as_ref().map(String::len), Ok(MAX_LINE));
        assert_eq!(got[1..3], [too_long.clone(), ok("next")]);
        assert_eq!(
            got[3].as_ref().map(|l| (l.len(), l.ends_with('x'))),
            Ok((MAX_LINE, true))
        );
        assert_eq!(got[4], too_long);
        assert_eq!(lines_of(&vec![b'w'; MAX_LINE + 100], 8192), [too_long]);
    }

    /// A line's end is one LF or CRLF: MAX_LINE bytes of text and a carriage return before
    /// a CRLF is a longer line, refused as soon as the bound is passed (so no line is held
    /// in memory past MAX_LINE and a CRLF), and the next line is read.
    #[test]
    fn a_carriage_return_before_a_crlf_counts_towards_max_line() {
        let too_long = Err(format!("line longer than {MAX_LINE} bytes ignored"));
        let crcrlf = [&vec![b'u'; MAX_LINE][..], b"\r\r\nnext\n"].concat();
        assert_eq!(lines_of(&crcrlf, 8192), [too_long, Ok("next".to_owned())]);
    }

    /// A command's fields are read with their types, or refused naming the field; a tag is
    /// read by its name in Fabric's message.proto, in any case.
    #[test]
    fn command_fields_are_read_with_their_types_and_tags_by_name() {
        let v = json!({"to": "a:1", "n": 5, "neg": -1, "none": null});
        assert_eq!(field_str(&v, "to"), Ok("a:1"));
        assert_eq!(
            field_str(&v, "n"),
            Err("\"n\" (a string) is required".into())
        );
        assert_eq!(field_u64(&v, "n", None), Ok(5));
        assert_eq!(field_u64(&v, "none", Some(7)), Ok(7));
        assert_eq!(
            field_u64(&v, "gone", None),
            Err("\"gone\" (a number) is required".into())
        );
        assert_eq!(
            field_u64(&v, "neg", Some(7)),
            Err("\"neg\" must be a non-negative integer, got -1".into())
        );
        assert_eq!(parse_tag(" chan_only "), Ok(Tag::ChanOnly));
        assert!(parse_tag("loud").is_err_and(|e| e.contains("unknown tag \"loud\"")));
    }
}
