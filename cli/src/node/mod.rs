//! `fabric-gossip node`: a long-running gossip comm node driven through stdin and stdout,
//! for people (type a line, see what arrives) and for programs (the interop harness drives
//! it against an independent implementation). The contract is written at the top of
//! `interop/interop_test.py`; this module implements exactly that, plus MSP identities.
//!
//! stdout carries only JSON objects, one per line, flushed at once, in the order things
//! happened; logs go to stderr. stdin takes JSON commands (`send`, `send_with_ack`, `stats`,
//! `stop`), and any other non-empty line is sent as a DataMessage to every connected peer.

mod settings;
mod signals;

pub(crate) use settings::NodeArgs;
pub(crate) use signals::Signals;

use self::settings::{PayloadForm, Settings, settings};
use crate::logging::TARGET;
use crate::lookup::{Lookups, Refused};
use crate::membership;
use crate::opts::{self, ConfigError, Identity, PkiForm};
use crate::out::{LineBuf, Measure, Out, push_json_str};
use fabric_gossip_core::proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_core::proto::gossip::{Empty, GossipMessage};
use fabric_gossip_core::{
    AckError, Event, HandshakeError, PkiId, RemotePeer, SendResult, SignedMessage, StreamId,
};
use fabric_gossip_discovery::DiscoveryEvent;
use fabric_gossip_tonic::{Node, Received};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Events the transport may queue for printing. Printing is fast, so this only fills when
/// stdout is not read; then copies are dropped and counted (see the `stats` command).
const EVENT_TAP: usize = 4096;
/// Received messages printed per lock of the output queue, at most: the batch is formatted
/// straight into the queue and the writer woken once for it.
const RECEIVE_BATCH: usize = 256;
/// Acks waiting for room at once for `--auto-ack`. Past this, or past a sender's share
/// ([`MAX_ACKS_PER_SENDER`]), an ack goes only if its connection has room now, and is
/// dropped and counted (`dropped_overflow`) otherwise: the node never stops taking
/// messages for acks, so one peer that stopped reading cannot stall the others.
const MAX_ACKS_IN_FLIGHT: usize = 256;
/// Acks one sender may have waiting for room: a peer that reads nothing holds at most
/// this many of the [`MAX_ACKS_IN_FLIGHT`] slots.
const MAX_ACKS_PER_SENDER: usize = 32;
/// `send_with_ack` commands waiting for their acks at once; more are refused.
const MAX_ACKS_PENDING: usize = 1024;
/// Longest stdin line accepted (a DataMessage's text must fit in it).
const MAX_LINE: usize = 4 << 20;
/// Lines read ahead of the command loop.
const LINE_QUEUE: usize = 64;
/// Upper bound on waiting for connections to wind down at stop. The core has closed every
/// gossip stream by then; what is left are HTTP/2 connections, some of which never said
/// anything (a connection flood), so waiting long buys nothing, and the streams this node
/// opened, whose peers end them once they have read what HTTP/2 still held (a loopback
/// round trip or two; a peer that never reads loses it either way). With `OUTPUT_DRAIN` and
/// `RUNTIME_SHUTDOWN` a stop takes well under the 1 s promised.
const STOP_TIMEOUT: Duration = Duration::from_millis(300);
/// Upper bound on writing the last lines (`stopped` among them) to a slow stdout reader.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);

/// How long `stop` and the end of stdin (`--exit-on-eof`) wait at least for the commands
/// already read to have their messages written before the node stops (longer when the dial
/// and connection timeouts need it: a peer being dialled has its dial timeout, 3 s by
/// default, then the Ping and the handshake).
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Upper bound on tasks finishing once the node has stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

/// Runs `fabric-gossip node`.
pub(crate) fn run(args: &NodeArgs) -> ExitCode {
    let loaded = settings(args).and_then(|set| {
        let id = set.identity.load(true)?;
        let tls = set.tls.load(&set.identity.channel_tls_cas()?)?;
        Ok((set, id, tls, opts::runtime()?))
    });
    let (set, identity, tls, rt) = match loaded {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let out = Out::start(std::io::stdout());
    // The command loop runs as a task on the runtime's workers rather than on this thread:
    // a delivery then wakes it on the worker that read the message, instead of waking
    // another thread for every batch.
    let serving = rt.spawn(serve(args.clone(), set, identity, tls, out.clone()));
    let code = rt.block_on(serving).unwrap_or_else(|e| {
        tracing::error!(target: TARGET, "the node's task failed: {e}");
        ExitCode::FAILURE
    });
    if !out.drain(OUTPUT_DRAIN) {
        tracing::warn!(target: TARGET, "stdout is not being read; the last lines are lost");
    }
    // Tasks still running (acks in flight) are cut; stdin is read by a thread of its own,
    // which the process exit ends.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

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

/// The connections each peer has open, as the `connected` and `disconnected` events tell
/// them. A peer has two for a moment when both sides dial at once (one each way) and one of
/// them then closes, the stream its remote opened being the one a Fabric peer keeps: the
/// `disconnected` line says how many are left, so that the end of one is not read as the
/// peer's going. A peer's entry goes with its last connection.
#[derive(Debug, Default)]
struct OpenConnections(HashMap<PkiId, Vec<StreamId>>);

impl OpenConnections {
    /// Notes a connection opened; for a closed one, how many the peer has left.
    fn note(&mut self, ev: &Event) -> Option<usize> {
        match ev {
            Event::Connected { conn, info, .. } => {
                self.0.entry(info.id.clone()).or_default().push(*conn);
                None
            }
            Event::Disconnected { conn, pki_id, .. } => {
                let left = self.0.get_mut(pki_id).map_or(0, |open| {
                    open.retain(|c| c != conn);
                    open.len()
                });
                if left == 0 {
                    self.0.remove(pki_id);
                }
                Some(left)
            }
            _ => None,
        }
    }
}

/// The JSON line for a core event, `None` for events that are not printed (operation
/// results are printed by the command that started them).
fn event_json(ev: &Event, form: PkiForm, tls: bool, open: &mut OpenConnections) -> Option<Value> {
    let left = open.note(ev);
    Some(match ev {
        Event::Connected {
            conn,
            info,
            inbound,
        } => {
            let mut v = json!({
                "event": "connected",
                "peer": form.show(&info.id),
                "conn": conn.to_string(),
                "inbound": inbound,
                "endpoint": info.endpoint,
            });
            if form == PkiForm::Hex
                && let Some((msp, _)) = opts::msp_of(&info.identity)
            {
                v["msp_id"] = json!(msp);
            }
            v
        }
        Event::Probed { info, .. } => json!({
            "event": "probed",
            "peer": form.show(&info.id),
            "endpoint": info.endpoint,
        }),
        Event::Disconnected {
            conn,
            pki_id,
            reason,
        } => json!({
            "event": "disconnected",
            "peer": form.show(pki_id),
            "conn": conn.to_string(),
            "reason": reason.to_string(),
            "connections_left": left.unwrap_or_default(),
        }),
        Event::HandshakeFailed {
            remote,
            inbound,
            error,
            ..
        } => {
            let error = error.to_string();
            let mut v = json!({
                "event": "handshake_failed",
                "remote": remote,
                "error": error,
                "inbound": inbound,
            });
            // Dialling with the wrong TLS setting is the usual mistake; say so.
            let hint = crate::probe::dial_hint(&error, tls);
            if !inbound && !hint.is_empty() {
                v["hint"] = json!(hint.trim().trim_start_matches("hint: "));
            }
            v
        }
        Event::PresumedDead(p) => {
            // A peer dialled without a PKI-ID is named by its endpoint.
            let peer = if p.pki_id.is_empty() {
                p.endpoint.clone()
            } else {
                form.show(&p.pki_id)
            };
            json!({"event": "presumed_dead", "peer": peer, "endpoint": p.endpoint,
                   "reason": p.cause.to_string()})
        }
        Event::IdentitySwitch(p) => json!({"event": "identity_switch", "peer": form.show(p)}),
        Event::IdentityPurged { pki_id, reason } => json!({
            "event": "identity_purged",
            "peer": form.show(pki_id),
            "reason": reason.to_string(),
        }),
        _ => return None,
    })
}

/// The `received` line for `m` from `from` (already a JSON string), written straight into
/// the output buffer rather than through a `serde_json::Value`: a sink prints hundreds of
/// thousands of these a second, and the map and its strings cost more than the rest of the
/// path. Keys are in the order `Value`'s `to_string` gives them (sorted), so the bytes are
/// those of earlier versions. Run on a [`Measure`] first: a large message prints up to
/// eight times its size, and a line the output queue cannot take is not formatted.
fn received_line(buf: &mut impl LineBuf, m: &GossipMessage, from: &[u8], payload: PayloadForm) {
    let data = match &m.content {
        Some(Content::DataMsg(d)) => Some(
            d.payload
                .as_ref()
                .map_or((0, &[][..]), |p| (p.seq_num, &p.data[..])),
        ),
        _ => None,
    };
    let text = match (payload, data) {
        (PayloadForm::Both | PayloadForm::Text, Some((_, d))) => std::str::from_utf8(d).ok(),
        _ => None,
    };
    let hex = match payload {
        PayloadForm::Both | PayloadForm::Hex => true,
        PayloadForm::Text => text.is_none(),
        PayloadForm::None => false,
    };
    buf.push_bytes(b"{");
    if !m.channel.is_empty() {
        buf.push_bytes(b"\"channel\":");
        buf.push_json_str(&String::from_utf8_lossy(&m.channel));
        buf.push_bytes(b",");
    }
    buf.push_bytes(b"\"content\":");
    buf.push_json_str(m.content_name());
    if let (Some((_, d)), true) = (data, hex) {
        buf.push_bytes(b",\"data_hex\":\"");
        buf.push_hex(d);
        buf.push_bytes(b"\"");
    }
    buf.push_bytes(b",\"event\":\"received\",\"from\":");
    buf.push_bytes(from);
    if let (Some((_, d)), PayloadForm::None) = (data, payload) {
        buf.push_bytes(b",\"len\":");
        buf.push_u64(d.len() as u64);
    }
    buf.push_bytes(b",\"nonce\":");
    buf.push_u64(m.nonce);
    if let Some((seq, _)) = data {
        buf.push_bytes(b",\"seq\":");
        buf.push_u64(seq);
    }
    if m.tag != Tag::Empty as i32 {
        buf.push_bytes(b",\"tag\":");
        match Tag::try_from(m.tag) {
            Ok(t) => buf.push_json_str(t.as_str_name()),
            Err(_) => buf.push_json_str(itoa::Buffer::new().format(m.tag)),
        }
    }
    if let Some(t) = text {
        buf.push_bytes(b",\"text\":");
        buf.push_json_str(t);
    }
    buf.push_bytes(b"}");
}

/// The last sender's PKI-ID as a JSON string: messages come in runs from one sender, and
/// showing a PKI-ID allocates.
#[derive(Default)]
struct SenderName {
    last: Option<(PkiId, Vec<u8>)>,
}

impl SenderName {
    fn of(&mut self, id: &PkiId, form: PkiForm) -> &[u8] {
        if self.last.as_ref().is_none_or(|(last, _)| last != id) {
            let mut shown = Vec::new();
            push_json_str(&mut shown, &form.show(id));
            self.last = Some((id.clone(), shown));
        }
        self.last.as_ref().map_or(&[][..], |(_, shown)| shown)
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
enum Line {
    Text(String),
    Bad(String),
}

/// Reads one line of at most `MAX_LINE` bytes of text (its line end, `\n` or `\r\n`, not
/// counted, so a Windows writer gets the same bound); `None` at end of input. An overlong
/// line is skipped to its end and reported, so a runaway writer cannot exhaust memory.
fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<Line>> {
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
fn peer_at(form: PkiForm, endpoint: String) -> RemotePeer {
    let pki = match form {
        PkiForm::Text => PkiId::from(endpoint.as_str()),
        PkiForm::Hex => PkiId::default(),
    };
    RemotePeer::new(endpoint, pki)
}

/// What the loop does after a command.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

struct State {
    node: Node,
    form: PkiForm,
    out: Out,
    acks_pending: Arc<Semaphore>,
    /// The handshakes that learn unknown PKI-IDs, and the messages waiting for them.
    lookups: Lookups,
    /// Sequence numbers of plain-text lines.
    text_seq: u64,
    /// How to read the trust store again; `None` under the test identity.
    reload: Option<Reload>,
    /// When the `membership` line (the whole table) may be printed after changes.
    tables: membership::TablePacer,
    /// The `--peer` peers: where a plain line goes while no peer is connected yet.
    dials: Vec<RemotePeer>,
}

/// What reloading the trust store needs: the flags it was read from, and the running
/// provider's handle.
struct Reload {
    args: crate::opts::IdentityArgs,
    handle: fabric_gossip_msp::TrustHandle,
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

    fn command(&mut self, line: &str) -> Next {
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
    fn reload_trust(&mut self, by: &str) {
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
    fn send_to(&self, msg: SignedMessage, peer: RemotePeer) -> Result<(), Refused> {
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
    fn print_table(&mut self) {
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

/// Acks `r` for `--auto-ack` without waiting: in a task holding a slot and a share of its
/// sender's while it waits for room, when both are free; otherwise at once if its
/// connection has room, else dropped and counted.
fn auto_ack(acks: &Arc<Semaphore>, shares: &AckShares, r: Received) {
    if shares.take(r.sender()) {
        match acks.clone().try_acquire_owned() {
            Ok(permit) => return spawn_ack(permit, shares.clone(), r),
            Err(_) => shares.give_back(r.sender()),
        }
    }
    // Sent if the connection has room now; otherwise dropped, counted by the core.
    if let Err(e) = r.try_ack(None) {
        tracing::warn!(target: TARGET, "ack of nonce {}: {e}", r.message().nonce);
    }
}

/// Acks `r` in a task of its own, holding an ack slot and its sender's share until it is
/// written or has failed (the connection closed: the node then says so in a warning).
fn spawn_ack(permit: tokio::sync::OwnedSemaphorePermit, shares: AckShares, r: Received) {
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = r.ack(None).await {
            tracing::warn!(target: TARGET, "ack of nonce {}: {e}", r.message().nonce);
        }
        shares.give_back(r.sender());
    });
}

/// The `--auto-ack` slots each sender holds, so that none holds more than
/// [`MAX_ACKS_PER_SENDER`]. An entry goes when its count reaches zero, so the map holds
/// only senders with acks waiting.
#[derive(Clone, Default)]
struct AckShares(Arc<std::sync::Mutex<HashMap<PkiId, usize>>>);

impl AckShares {
    /// Takes one of `who`'s slots; `false` when it holds its whole share.
    fn take(&self, who: &PkiId) -> bool {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.entry(who.clone()).or_default();
        if *n >= MAX_ACKS_PER_SENDER {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, who: &PkiId) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                held.remove(who);
            }
        }
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

async fn serve(
    args: NodeArgs,
    set: Settings,
    identity: Identity,
    tls: Option<fabric_gossip_tonic::TlsConfig>,
    out: Out,
) -> ExitCode {
    // Before anything is printed: whoever saw "listening" may send SIGTERM at once.
    let Some(mut signals) = Signals::with_reload() else {
        return ExitCode::FAILURE;
    };
    let form = identity.pki_form();
    let msp_id = identity.msp_id().map(str::to_owned);
    let trust = identity.trust_summary();
    let channels = identity.channels_summary();
    let reload = identity.trust_handle().map(|handle| Reload {
        args: set.identity.clone(),
        handle,
    });
    let health = crate::ops::State::new(set.metrics);
    let operations = match set.operations {
        Some(addr) => {
            match crate::ops::start(addr, health.clone(), set.operations_tls.clone()).await {
                Ok(bound) => Some(bound),
                Err(e) => {
                    eprintln!("error: --operations {addr}: cannot listen: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let (tap_tx, mut tap) = mpsc::channel(EVENT_TAP);
    let mut open = OpenConnections::default();
    let flush_limit = flush_limit(&set.core, form);
    let mut builder = fabric_gossip_tonic::Node::builder(set.core)
        .listen(set.listen)
        .events(tap_tx)
        .limits(set.limits)
        .stop_timeout(STOP_TIMEOUT);
    // The membership layer's endpoint is the bound address unless given: bind first.
    let mut membership_info = None;
    if let Some(m) = &set.membership {
        let (listener, layer) = match m.bind(set.listen) {
            Ok(x) => x,
            Err(ConfigError(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let c = layer.config();
        membership_info = Some(json!({
            "endpoint": c.internal_endpoint,
            "external_endpoint": c.external_endpoint,
            "bootstrap": c.bootstrap,
        }));
        // The node is known by the endpoint its alive messages carry (--endpoint,
        // peer.gossip.endpoint or peer.address), not by --listen's 0.0.0.0.
        builder = builder
            .listener(listener)
            .advertise(c.internal_endpoint.clone())
            .layer(move |_| layer);
    }
    let tls_on = tls.is_some();
    if let Some(t) = tls {
        builder = builder.tls(t);
    }
    let certificates = crate::expiry::OwnCertificates::read(&identity, &set.tls);
    let node = match opts::start(builder, identity, &set.listen.to_string(), &set.tls).await {
        Ok(n) => n,
        Err(ConfigError(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut listening = json!({
        "event": "listening",
        "addr": node.endpoint(),
        "pki_id": form.show(node.pki_id()),
        "tls": tls_on,
    });
    // The address bound, when others are told another one (`addr`).
    let bound = node.local_addr().to_string();
    if bound != node.endpoint() {
        listening["listen"] = json!(bound);
    }
    if let Some(m) = &msp_id {
        listening["msp_id"] = json!(m);
    }
    if let Some(t) = trust {
        listening["trust"] = t;
    }
    if let Some(c) = channels {
        listening["channels"] = c;
    }
    if let Some(a) = operations {
        listening["operations"] = json!(a.to_string());
    }
    if let Some(m) = membership_info {
        listening["membership"] = m;
    }
    let expires = certificates.json();
    if expires.as_object().is_some_and(|m| !m.is_empty()) {
        listening["certificates_expire_unix_ms"] = expires;
    }
    certificates.track();
    let lookups = Lookups::default();
    health.serving(node.clone(), out.clone(), lookups.clone(), certificates);
    out.emit(&listening);
    let at = if listening.get("listen").is_some() {
        format!("{bound} (advertised as {})", node.endpoint())
    } else {
        bound
    };
    tracing::info!(
        target: TARGET,
        "listening on {} as {} ({}), TLS {}",
        at,
        form.show(node.pki_id()),
        msp_id
            .as_deref()
            .map_or("test identity, TEST ONLY".to_owned(), |m| format!(
                "MSP {m}"
            )),
        if tls_on { "on" } else { "off" },
    );
    // As a Fabric peer joining its channels: the anchor peers of the --channel-config blocks.
    if let (Some(org), Some(r)) = (&msp_id, &reload) {
        membership::connect_anchors(&node, org, r.handle.current().channel_configs(), false);
    }

    let mut member_events = node.layer_events::<DiscoveryEvent>();
    let layer_on = member_events.is_some();
    // The membership layer consumes its own messages; the inbox shows the others.
    let mut inbox = match node.accept(move |m| !(layer_on && membership::is_membership_message(m)))
    {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: cannot subscribe to received messages: {e}");
            node.stop().await;
            return ExitCode::FAILURE;
        }
    };
    // The PresumedDead and IdentitySwitch notifications are printed from the event tap,
    // in order with the other events; the API streams are drained so that their bounded
    // buffers never fill and count drops, and tell the PKI-IDs learnt for endpoints which
    // to forget (the peer may come back with another certificate).
    for mut stream in [node.presumed_dead(), node.identity_switch()] {
        let lookups = lookups.clone();
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            while let Some(pki) = stream.next().await {
                lookups.forget(&pki);
            }
        });
    }
    let mut st = State {
        node: node.clone(),
        form,
        out: out.clone(),
        acks_pending: Arc::new(Semaphore::new(MAX_ACKS_PENDING)),
        lookups,
        text_seq: 0,
        reload,
        tables: membership::TablePacer::new(tokio::time::Instant::now()),
        dials: args.peer.iter().map(|p| peer_at(form, p.clone())).collect(),
    };
    for peer in &st.dials {
        let hello = GossipMessage {
            nonce: 0,
            channel: Default::default(),
            tag: Tag::Empty as i32,
            content: Some(Content::Empty(Empty {})),
        };
        if let Err(e) = st.send_to(SignedMessage::noop(hello), peer.clone()) {
            tracing::warn!(target: TARGET, "--peer {}: {e}", peer.endpoint);
        }
    }

    let (line_tx, mut lines) = mpsc::channel::<Line>(LINE_QUEUE);
    // A plain thread: a read from a terminal or pipe blocks for as long as nobody types, and
    // the runtime's blocking pool would make the exit wait for it.
    let reader = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                match read_line(&mut stdin) {
                    Ok(Some(l)) => {
                        if line_tx.blocking_send(l).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(target: TARGET, "stdin: {e}");
                        break;
                    }
                }
            }
        });
    if let Err(e) = reader {
        eprintln!("error: cannot read stdin: {e}");
        // The --peer hellos waiting for PKI-IDs are counted too.
        st.lookups.abandon();
        node.stop().await;
        return ExitCode::FAILURE;
    }
    let mut stdin_open = true;
    let mut flush_first = true;

    // `--auto-ack`: the loop never waits for an ack. Acks waiting for room hold a slot
    // (`acks`, which `flush` waits for) and their sender's share (`shares`); the rest go
    // at once or are dropped and counted, so a peer that stopped reading stalls nothing.
    let acks = Arc::new(Semaphore::new(MAX_ACKS_IN_FLIGHT));
    let shares = AckShares::default();
    let mut received = Vec::with_capacity(RECEIVE_BATCH);
    let mut sender = SenderName::default();
    // A `membership` line after changes, when `st.tables` lets it out (at most twice a
    // second, and within a byte budget however large the table).
    let table_due = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(table_due);
    loop {
        if let Some(due) = st.tables.due()
            && table_due.deadline() != due
        {
            table_due.as_mut().reset(due);
        }
        tokio::select! {
            biased;
            Some(ev) = next_event(&mut member_events) => {
                if matches!(
                    ev,
                    DiscoveryEvent::MemberAlive { .. }
                        | DiscoveryEvent::MemberDead { .. }
                        | DiscoveryEvent::MemberPurged { .. }
                ) {
                    st.tables.changed(tokio::time::Instant::now());
                }
                out.emit(&membership::event_json(&ev, form));
            }
            () = &mut table_due, if st.tables.pending() => st.print_table(),
            ev = tap.recv() => {
                if let Some(v) = ev.as_ref().and_then(|e| event_json(e, form, tls_on, &mut open)) {
                    out.emit(&v);
                }
            }
            n = inbox.recv_many(&mut received, RECEIVE_BATCH) => {
                if n == 0 {
                    break;
                }
                // The connection's events were queued before its first message could be
                // delivered: print them first, so "connected" precedes "received".
                while let Ok(ev) = tap.try_recv() {
                    if let Some(v) = event_json(&ev, form, tls_on, &mut open) {
                        out.emit(&v);
                    }
                }
                {
                    let mut printed = out.lines();
                    for r in &received {
                        // An Empty message carries nothing: it is how a peer (our --peer
                        // among them) opens a connection, since Fabric's comm has no bare
                        // "connect".
                        let opener = r.message().nonce == 0
                            && matches!(r.message().content, Some(Content::Empty(_)));
                        if !opener {
                            let from = sender.of(r.sender(), form);
                            let mut len = Measure::default();
                            received_line(&mut len, r.message(), from, args.payload);
                            printed.line(len.0, |buf| {
                                received_line(buf, r.message(), from, args.payload);
                            });
                        }
                    }
                }
                if args.auto_ack {
                    for r in received.drain(..).filter(|r| r.message().nonce != 0) {
                        auto_ack(&acks, &shares, r);
                    }
                }
                received.clear();
            }
            line = lines.recv(), if stdin_open => match line {
                Some(Line::Text(l)) => {
                    if st.command(&l) == Next::Stop {
                        break;
                    }
                }
                Some(Line::Bad(e)) => out.command_error(e),
                None if args.exit_on_eof => break,
                None => {
                    // A daemon: keeps serving until told to stop.
                    stdin_open = false;
                    tracing::info!(
                        target: TARGET,
                        "end of stdin; running until SIGINT or SIGTERM (--exit-on-eof stops here)"
                    );
                }
            },
            name = signals.next() => {
                if name == "SIGHUP" {
                    st.reload_trust("SIGHUP");
                    continue;
                }
                tracing::info!(target: TARGET, "{name}, stopping");
                // A daemon asked to stop stops at once, as a Fabric peer does; what is
                // still queued is dropped and counted.
                flush_first = false;
                break;
            }
        }
    }
    health.stopping();
    // `stop` or the end of stdin (--exit-on-eof): the script's last sends go out first,
    // unless a signal asks for a stop at once meanwhile.
    if flush_first {
        tokio::select! {
            done = flush(&node, &st, &acks, flush_limit) => if !done {
                tracing::warn!(
                    target: TARGET,
                    "stopping with messages still unsent after {} s; they are dropped and counted",
                    flush_limit.as_secs()
                );
            },
            name = signals.next() => {
                tracing::info!(target: TARGET, "{name} while flushing, stopping at once");
            }
        }
    }
    // Messages whose PKI-ID is still being learnt: counted, not lost unseen. Before the
    // stop, which would fail their handshakes and count them as refused by the peer.
    let abandoned = st.lookups.abandon();
    if abandoned > 0 {
        tracing::warn!(
            target: TARGET,
            "{abandoned} messages dropped at stop: they waited for handshakes learning their \
             peers' PKI-IDs"
        );
    }
    node.stop().await;
    while let Ok(ev) = tap.try_recv() {
        if let Some(v) = event_json(&ev, form, tls_on, &mut open) {
            out.emit(&v);
        }
    }
    if let Some(events) = &mut member_events {
        // The stream ends once the stopped node's last events are taken.
        let rest = async {
            use tokio_stream::StreamExt;
            while let Some(ev) = events.next().await {
                out.emit(&membership::event_json(&ev, form));
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN, rest).await;
    }
    let s = node.stats();
    let d = node.driver_stats();
    out.emit(&json!({"event": "stopped"}));
    tracing::info!(
        target: TARGET,
        "stopped; sent {}, dropped {} (by cause in stats and /metrics), received {}, \
         handshakes ok {} failed {}, presumed dead {}, events not printed {}, \
         output lines dropped {}",
        s.sent,
        s.dropped_overflow
            + s.dropped_on_close
            + s.dropped_no_connection
            + st.lookups.dropped().total(),
        s.received,
        s.handshakes_ok,
        s.handshake_failures_total(),
        s.presumed_dead + st.lookups.presumed_dead(),
        d.events_dropped,
        out.dropped(),
    );
    ExitCode::SUCCESS
}

/// How long a stop waits at most for the messages already given to be written: a message
/// may need a dial, a Ping and a handshake first, and under an MSP identity one to a peer
/// named by its endpoint alone needs two (the handshake that learns its PKI-ID, then the
/// connection's own).
fn flush_limit(core: &fabric_gossip_core::Config, form: PkiForm) -> Duration {
    let connection = core.dial_timeout + core.conn_timeout * 2;
    let connections = match form {
        PkiForm::Text => 1,
        PkiForm::Hex => 2,
    };
    FLUSH_LIMIT.max(connection * connections)
}

/// Waits, at most `limit`, until every command already read has its messages written or
/// dropped: first the commands' own tasks (a send whose PKI-ID is learnt by a handshake
/// first, a `send_with_ack` waiting for its ack, an `--auto-ack` ack waiting for room:
/// their permits all come back), then the node's queues ([`Node::flush`]). Whether it got
/// there.
async fn flush(node: &Node, st: &State, acks: &Semaphore, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let commands = async {
        let all = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        st.lookups.idle().await;
        let _pending = st.acks_pending.acquire_many(all(MAX_ACKS_PENDING)).await;
        let _acks = acks.acquire_many(all(MAX_ACKS_IN_FLIGHT)).await;
    };
    if tokio::time::timeout_at(deadline, commands).await.is_err() {
        return false;
    }
    node.flush(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
}

/// The next membership event; never ready without the layer.
pub(crate) async fn next_event(
    events: &mut Option<fabric_gossip_tonic::LayerEvents<DiscoveryEvent>>,
) -> Option<DiscoveryEvent> {
    use tokio_stream::StreamExt;
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop waits for a connection's dial, Ping and handshake (Fabric's defaults: 3 s, and
    /// 2 s for each of the other two), and under an MSP identity for two: the handshake
    /// that learns a PKI-ID before the connection's own. Never less than five seconds.
    #[test]
    fn a_stop_waits_long_enough_for_the_connections_a_message_may_need() {
        let mut core = fabric_gossip_core::Config::default();
        assert_eq!(flush_limit(&core, PkiForm::Text), Duration::from_secs(7));
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(14));
        core.dial_timeout = Duration::from_millis(500);
        core.conn_timeout = Duration::from_millis(300);
        assert_eq!(flush_limit(&core, PkiForm::Text), FLUSH_LIMIT);
        core.dial_timeout = Duration::from_secs(2);
        core.conn_timeout = Duration::from_millis(250);
        assert_eq!(flush_limit(&core, PkiForm::Text), FLUSH_LIMIT);
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(5));
        core.conn_timeout = Duration::from_millis(500);
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(6));
    }

    #[test]
    fn a_sender_holds_at_most_its_share_of_the_ack_slots() {
        let shares = AckShares::default();
        let (quiet, busy) = (PkiId::from("quiet"), PkiId::from("busy"));
        for _ in 0..MAX_ACKS_PER_SENDER {
            assert!(shares.take(&busy));
        }
        // The busy sender's next acks do not wait; another sender's still may.
        assert!(!shares.take(&busy));
        assert!(shares.take(&quiet));
        shares.give_back(&busy);
        assert!(shares.take(&busy));
        for _ in 0..MAX_ACKS_PER_SENDER {
            shares.give_back(&busy);
        }
        shares.give_back(&quiet);
        let held = shares.0.lock().expect("lock");
        assert!(
            held.is_empty(),
            "senders with nothing waiting stay: {held:?}"
        );
    }

    /// The `received` line of `m` from `from`, as text.
    fn line(m: &GossipMessage, from: &str, payload: PayloadForm) -> String {
        let (mut buf, mut shown) = (Vec::new(), Vec::new());
        push_json_str(&mut shown, from);
        received_line(&mut buf, m, &shown, payload);
        let mut len = Measure::default();
        received_line(&mut len, m, &shown, payload);
        assert_eq!(len.0, buf.len(), "measured as written");
        String::from_utf8(buf).expect("UTF-8")
    }

    fn msg(data: &[u8], channel: &[u8], tag: Tag) -> GossipMessage {
        let mut m = data_message(7, data, 9);
        m.channel = channel.to_vec().into();
        m.tag = tag as i32;
        m
    }

    /// Dials that cross leave a peer two connections for a moment; the end of one is
    /// printed with the one left, and the peer's entry goes with its last.
    #[test]
    fn a_closed_connection_says_how_many_the_peer_has_left() {
        use fabric_gossip_core::{CloseReason, ConnectionInfo};
        let info = Arc::new(ConnectionInfo {
            id: PkiId::from("peer0"),
            identity: Default::default(),
            endpoint: "127.0.0.1:7051".into(),
            signed_data: Default::default(),
            signature: Default::default(),
        });
        let (ours, theirs) = (StreamId::from_parts(0, 0), StreamId::from_parts(1, 0));
        let mut open = OpenConnections::default();
        let connected = |conn, inbound| Event::Connected {
            conn,
            info: info.clone(),
            inbound,
        };
        let gone = |conn| Event::Disconnected {
            conn,
            pki_id: info.id.clone(),
            reason: CloseReason::Replaced,
        };
        let show = |ev: &Event, open: &mut OpenConnections| {
            event_json(ev, PkiForm::Text, false, open).expect("printed")
        };
        let up = show(&connected(ours, false), &mut open);
        assert_eq!(up["conn"], ours.to_string(), "{up}");
        show(&connected(theirs, true), &mut open);
        let first = show(&gone(ours), &mut open);
        assert_eq!(first["conn"], ours.to_string(), "{first}");
        assert_eq!(first["connections_left"], 1, "{first}");
        let last = show(&gone(theirs), &mut open);
        assert_eq!(last["connections_left"], 0, "{last}");
        assert!(open.0.is_empty(), "{open:?}");
        // A close whose opening was not seen (the event tap was full) leaves nothing behind.
        let stray = show(&gone(ours), &mut open);
        assert_eq!(stray["connections_left"], 0, "{stray}");
        assert!(open.0.is_empty(), "{open:?}");
        // Three: each close takes its own away, and the peer stays until the last.
        let three: Vec<StreamId> = (0..3).map(|i| StreamId::from_parts(i, 1)).collect();
        for &c in &three {
            show(&connected(c, true), &mut open);
        }
        for (&c, left) in three.iter().zip([2, 1, 0]) {
            let v = show(&gone(c), &mut open);
            assert_eq!(v["connections_left"], left, "{v}");
        }
    }

    /// Comm letting go of an identity (Fabric's identity mapper purging it for disuse or at
    /// its expiry) is a line an operator can grep, with the reason as a label.
    #[test]
    fn a_purged_identity_is_a_line_with_its_reason() {
        use fabric_gossip_core::CloseReason;
        let mut open = OpenConnections::default();
        for (reason, label) in [
            (CloseReason::IdentityUnused, "identity_unused"),
            (CloseReason::IdentityExpired, "identity_expired"),
        ] {
            let ev = Event::IdentityPurged {
                pki_id: PkiId::from("peer0"),
                reason,
            };
            let v = event_json(&ev, PkiForm::Text, false, &mut open).expect("printed");
            assert_eq!(
                v,
                json!({"event": "identity_purged", "peer": "peer0", "reason": label})
            );
        }
    }

    /// The default form is byte for byte what the `serde_json::Value` of earlier versions
    /// printed (keys sorted, strings escaped alike), whatever the bytes and the tag.
    #[test]
    fn the_default_line_is_the_earlier_json() {
        let ascii: Vec<u8> = (0..0x80).collect();
        let unicode = "é\u{7f}\u{2028}😀 \\/".as_bytes();
        for (data, channel, tag) in [
            (&b"he said \"hi\"\n"[..], &b"ch"[..], Tag::ChanAndOrg as i32),
            (&[0xff, 0x00][..], &b""[..], Tag::Empty as i32),
            (&ascii[..], &b"c\x01h\xff"[..], 99),
            (unicode, &b""[..], -3),
            (&[][..], &b"x"[..], Tag::OrgOnly as i32),
        ] {
            let mut m = msg(data, channel, Tag::Empty);
            m.tag = tag;
            let mut v = json!({
                "event": "received", "from": "p\"1\u{1}", "nonce": 9, "content": "data_msg",
                "data_hex": hex::encode(data), "seq": 7,
            });
            if !channel.is_empty() {
                v["channel"] = json!(String::from_utf8_lossy(channel));
            }
            if tag != Tag::Empty as i32 {
                v["tag"] =
                    Tag::try_from(tag).map_or(json!(tag.to_string()), |t| json!(t.as_str_name()));
            }
            if let Ok(t) = std::str::from_utf8(data) {
                v["text"] = json!(t);
            }
            assert_eq!(line(&m, "p\"1\u{1}", PayloadForm::Both), v.to_string());
        }
    }

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

    /// The sender's name is kept for a run of its messages and made anew for the next sender.
    #[test]
    fn a_sender_s_name_is_shown_anew_when_the_sender_changes() {
        let mut names = SenderName::default();
        let (a, b) = (PkiId::from("a"), PkiId::from("b"));
        assert_eq!(names.of(&a, PkiForm::Text), b"\"a\"");
        assert_eq!(names.of(&b, PkiForm::Text), b"\"b\"");
        assert_eq!(names.of(&a, PkiForm::Hex), b"\"61\"");
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

    /// Each event of the core that is printed is a line of its own kind; an outbound
    /// handshake's failure carries a hint when its error suggests one, an MSP peer's
    /// connection its MSP ID, a dead peer dialled without a PKI-ID its endpoint as its name.
    #[test]
    fn each_printed_event_is_a_line_of_its_kind() {
        use fabric_gossip_core::proto::msp::SerializedIdentity;
        use fabric_gossip_core::proto::prost::Message;
        use fabric_gossip_core::{ConnectionInfo, DeadCause, DeadPeer, SubscriptionId};
        let identity = SerializedIdentity {
            mspid: "Org1MSP".into(),
            id_bytes: b"-----BEGIN CERTIFICATE-----\n".to_vec().into(),
        };
        let info = Arc::new(ConnectionInfo {
            id: PkiId::from("p0"),
            identity: identity.encode_to_vec().into(),
            endpoint: "127.0.0.1:7051".into(),
            signed_data: Default::default(),
            signature: Default::default(),
        });
        let show = |ev: Event, form: PkiForm| {
            event_json(&ev, form, false, &mut OpenConnections::default())
        };
        let conn = StreamId::from_parts(0, 0);
        let connected = || Event::Connected {
            conn,
            info: info.clone(),
            inbound: true,
        };
        let hex = show(connected(), PkiForm::Hex).expect("printed");
        assert_eq!(
            (&hex["peer"], &hex["msp_id"]),
            (&json!("7030"), &json!("Org1MSP"))
        );
        let text = show(connected(), PkiForm::Text).expect("printed");
        assert!(text.get("msp_id").is_none(), "{text}");
        let probed = Event::Probed {
            stream: conn,
            info: info.clone(),
        };
        assert_eq!(
            show(probed, PkiForm::Text),
            Some(json!({"event": "probed", "peer": "p0", "endpoint": "127.0.0.1:7051"}))
        );
        let failed = |inbound, error| Event::HandshakeFailed {
            stream: conn,
            remote: "127.0.0.1:7051".into(),
            inbound,
            error,
        };
        let broken = || HandshakeError::StreamEnded("broken pipe".into());
        let out = show(failed(false, broken()), PkiForm::Text).expect("printed");
        assert_eq!(
            out,
            json!({"event": "handshake_failed", "remote": "127.0.0.1:7051", "inbound": false,
                   "error": "stream ended during handshake: broken pipe",
                   "hint": "the peer seems to serve TLS; pass --tls-cert, --tls-key and \
                            --tls-ca (its organization's tlscacerts/ file)"})
        );
        for (inbound, error) in [(true, broken()), (false, HandshakeError::WrongType)] {
            let v = show(failed(inbound, error), PkiForm::Text).expect("printed");
            assert!(v.get("hint").is_none(), "{v}");
        }
        let dead = |pki_id: &str| {
            Event::PresumedDead(DeadPeer {
                pki_id: PkiId::from(pki_id),
                endpoint: "peer1:7051".into(),
                cause: DeadCause::Write("reset".into()),
            })
        };
        let want = |peer: &str| {
            json!({"event": "presumed_dead", "peer": peer, "endpoint": "peer1:7051",
                   "reason": "write failed: reset"})
        };
        assert_eq!(show(dead("p1"), PkiForm::Text), Some(want("p1")));
        assert_eq!(show(dead(""), PkiForm::Text), Some(want("peer1:7051")));
        assert_eq!(
            show(Event::IdentitySwitch(PkiId::from("p1")), PkiForm::Hex),
            Some(json!({"event": "identity_switch", "peer": "7031"}))
        );
        let unprinted = Event::DeliveryReady(SubscriptionId::from_parts(0, 0));
        assert_eq!(show(unprinted, PkiForm::Text), None);
    }

    #[test]
    fn text_falls_back_to_hex_and_none_gives_the_length() {
        let bin = msg(&[0xff, 0x01], b"", Tag::Empty);
        let v: Value = serde_json::from_str(&line(&bin, "p", PayloadForm::Text)).unwrap();
        assert_eq!(v["data_hex"], "ff01");
        assert!(v.get("text").is_none());
        let v: Value = serde_json::from_str(&line(&bin, "p", PayloadForm::None)).unwrap();
        assert_eq!(v["len"], 2);
        assert!(v.get("data_hex").is_none() && v.get("text").is_none());
        // Messages without data carry none of the three.
        let empty = GossipMessage {
            nonce: 1,
            tag: Tag::Empty as i32,
            content: Some(Content::Empty(Empty {})),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&line(&empty, "p", PayloadForm::None)).unwrap();
        assert_eq!(
            v,
            json!({"event": "received", "from": "p", "nonce": 1, "content": "empty"})
        );
    }
}
