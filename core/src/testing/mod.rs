//! An in-memory network of cores on a virtual clock, for tests that drive cores through
//! their public API (quinn-proto's `Pair`, generalised to N nodes).
//!
//! Enabled by the `testing` feature. Links are reliable and ordered with a fixed
//! [`LATENCY`]; tests can refuse dials, hang pings, withhold TLS client certificates, crash
//! and restart nodes, and act as a slow subscriber. Every action a core emits is checked
//! against the handles it already closed, so a test also proves that no output names a
//! dead handle. The deterministic, fault-injecting simulator for whole networks is the
//! `fabric-gossip-sim` crate; this harness is the small one a unit test wants.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use crate::*;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

mod logs;
mod remote;
mod wire;

pub use logs::{Logged, captured_logs};
pub use remote::{conn_establish, drain, envelope_of, open_outbound};

/// One-way latency of every link.
pub const LATENCY: Duration = Duration::from_millis(1);

/// The endpoint of node `i` (`127.0.0.1:7050 + i`), also its test-provider identity.
pub fn ep(i: usize) -> String {
    format!("127.0.0.1:{}", 7050 + i)
}

/// Node `i` as a remote, with the test provider's PKI-ID (its endpoint).
pub fn peer(i: usize) -> RemotePeer {
    RemotePeer::new(ep(i), ep(i).as_str())
}

#[derive(Debug, Clone)]
enum Wire {
    DialResult {
        node: usize,
        dial: DialId,
        ok: bool,
        hash: Option<CertHash>,
    },
    PingResult {
        node: usize,
        dial: DialId,
        ok: bool,
    },
    Accept {
        from: usize,
        from_stream: StreamId,
        to: usize,
        hash: Option<CertHash>,
    },
    Envelope {
        node: usize,
        stream: StreamId,
        bytes: Bytes,
    },
    Sent {
        node: usize,
        stream: StreamId,
    },
    Closed {
        node: usize,
        stream: StreamId,
        end: StreamEnd,
    },
}

/// One node of a [`Net`]: its core and what it has seen.
pub struct Node {
    /// The core.
    pub comm: Comm<Box<dyn Security>>,
    /// False while crashed.
    pub up: bool,
    /// Every event the core emitted, in order.
    pub events: Vec<Event>,
    /// Subscriptions whose deliveries the harness polls.
    pub subs: Vec<SubscriptionId>,
    /// Deliveries taken from each subscription, in order.
    pub delivered: BTreeMap<SubscriptionId, Vec<ReceivedMessage>>,
    /// When true, deliveries are not polled automatically (a slow subscriber).
    pub slow_reader: bool,
    /// The TLS server certificate hash this node presents to dialers.
    pub tls_hash: Option<CertHash>,
    /// The PKI-ID other nodes expect at this endpoint: the first identity's, kept across
    /// restarts (like a membership view that has not caught up), so a restart with a new
    /// identity exercises IdentitySwitch.
    pub expected_pki: PkiId,
}

/// N cores wired in memory on a virtual clock.
pub struct Net {
    /// Virtual now.
    pub now: Instant,
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    queue: VecDeque<(Instant, Wire)>,
    /// (node, stream) -> (peer node, peer stream); peer stream may be unknown until accepted.
    links: BTreeMap<(usize, StreamId), (usize, Option<StreamId>)>,
    /// Writes waiting for the remote stream id (open in flight).
    pending_writes: BTreeMap<(usize, StreamId), Vec<(Bytes, WriteKind)>>,
    paused: BTreeSet<(usize, StreamId)>,
    held: BTreeMap<(usize, StreamId), VecDeque<Bytes>>,
    /// Nodes whose dials are refused.
    pub refuse_dials: BTreeSet<usize>,
    /// Other endpoints that reach a node besides its own ([`ep`]): as any `127.x.y.z`
    /// reaches a server bound on `0.0.0.0`, or a second DNS name its host.
    pub aliases: BTreeMap<String, usize>,
    /// Nodes that never answer a Ping.
    pub hang_pings: BTreeSet<usize>,
    /// Node whose outbound streams present no TLS client certificate.
    pub no_client_cert: BTreeSet<usize>,
    /// Override the TLS hash node i presents (as if its certificate differed from its claim).
    pub presented_hash: BTreeMap<usize, CertHash>,
    dial_target: BTreeMap<(usize, DialId), usize>,
    /// Every action and event, formatted, while `record` is on (for snapshots).
    pub log: Vec<String>,
    /// Whether to fill `log`.
    pub record: bool,
    /// Handles each node has closed; an action naming one afterwards is a bug.
    closed_streams: BTreeSet<(usize, StreamId)>,
    closed_dials: BTreeSet<(usize, DialId)>,
    /// Data payloads in the order each node's core received them (handle_envelope).
    pub arrivals: BTreeMap<usize, Vec<Vec<u8>>>,
}

impl Net {
    /// `n` nodes with Fabric's test provider, configured by `config(i)`.
    pub fn new(n: usize, config: impl Fn(usize) -> Config) -> Self {
        Self::with_security(n, config, |i| Box::new(TestOnlyHmacSecurity::new(ep(i))))
    }

    /// `n` nodes with the given providers, the clock at 2023-11-14.
    pub fn with_security(
        n: usize,
        config: impl Fn(usize) -> Config,
        security: impl FnMut(usize) -> Box<dyn Security>,
    ) -> Self {
        Self::at(Instant::from_unix_secs(1_700_000_000), n, config, security)
    }

    /// Like [`Net::with_security`], with the clock starting at `now` (e.g. where test
    /// certificates are valid).
    pub fn at(
        now: Instant,
        n: usize,
        config: impl Fn(usize) -> Config,
        mut security: impl FnMut(usize) -> Box<dyn Security>,
    ) -> Self {
        let nodes = (0..n)
            .map(|i| {
                let cfg = config(i);
                let tls_hash = cfg.tls.as_ref().map(|t| t.server_cert_hash);
                let comm = Comm::new(cfg.with_seed(i as u64), security(i), now).unwrap();
                let expected_pki = comm.pki_id().clone();
                Node {
                    comm,
                    expected_pki,
                    up: true,
                    events: Vec::new(),
                    subs: Vec::new(),
                    delivered: BTreeMap::new(),
                    slow_reader: false,
                    tls_hash,
                }
            })
            .collect();
        Net {
            now,
            nodes,
            queue: VecDeque::new(),
            links: BTreeMap::new(),
            pending_writes: BTreeMap::new(),
            paused: BTreeSet::new(),
            held: BTreeMap::new(),
            refuse_dials: BTreeSet::new(),
            aliases: BTreeMap::new(),
            hang_pings: BTreeSet::new(),
            no_client_cert: BTreeSet::new(),
            presented_hash: BTreeMap::new(),
            dial_target: BTreeMap::new(),
            log: Vec::new(),
            record: false,
            closed_streams: BTreeSet::new(),
            closed_dials: BTreeSet::new(),
            arrivals: BTreeMap::new(),
        }
    }

    /// Node `i`'s registered connection to node `j` (named by `j`'s endpoint, which is its
    /// PKI-ID under the test provider).
    pub fn conn(&self, i: usize, j: usize) -> Option<StreamId> {
        self.nodes[i].comm.connection(&PkiId::from(ep(j).as_str()))
    }

    /// Two nodes, node 1 subscribed to everything, connected by node 0 sending it `first`
    /// and the network settling: the start of most connection tests.
    pub fn connected_pair(config: impl Fn(usize) -> Config, first: &[u8]) -> Self {
        let mut net = Net::new(2, config);
        net.subscribe_all(1);
        net.send(0, 1, first);
        net.settle();
        net
    }

    /// Node `i` as a remote: its endpoint and the PKI-ID others expect there.
    pub fn peer(&self, i: usize) -> RemotePeer {
        RemotePeer::new(ep(i), self.nodes[i].expected_pki.clone())
    }

    /// Sends `data` from `from` to node `to` expected under `pki_id` (which may be stale).
    pub fn send_expecting(&mut self, from: usize, to: usize, pki_id: &PkiId, data: &[u8]) {
        let now = self.now;
        self.nodes[from]
            .comm
            .send(
                now,
                &SignedMessage::noop(data_msg(data)),
                &[RemotePeer::new(ep(to), pki_id.clone())],
            )
            .unwrap();
        self.flush(from);
    }

    /// Subscribes node `i` to every message; the harness polls it.
    pub fn subscribe_all(&mut self, i: usize) -> SubscriptionId {
        let sub = self.nodes[i].comm.subscribe(Box::new(|_| true)).unwrap();
        self.nodes[i].subs.push(sub);
        sub
    }

    fn node_of(&self, endpoint: &str) -> Option<usize> {
        (0..self.nodes.len())
            .find(|i| ep(*i) == endpoint)
            .or_else(|| self.aliases.get(endpoint).copied())
    }

    fn push(&mut self, delay: Duration, w: Wire) {
        self.queue.push_back((self.now + delay, w));
    }

    /// Carries out node `i`'s pending actions and records its events (and deliveries,
    /// unless it is a slow reader).
    pub fn flush(&mut self, i: usize) {
        self.drain_outputs(i);
        if !self.nodes[i].slow_reader {
            self.drain_deliveries(i);
        }
    }

    /// Node `i`'s [`Comm::poll_output`] until it ends with the time-out: actions carried
    /// out, events recorded. Returns whether there was anything.
    fn drain_outputs(&mut self, i: usize) -> bool {
        let mut any = false;
        loop {
            match self.nodes[i].comm.poll_output() {
                Output::Action(a) => {
                    if self.record {
                        self.log.push(format!("n{i} {}", fmt_action(&a)));
                    }
                    self.act(i, a);
                }
                Output::Event(e) => {
                    if self.record {
                        self.log.push(format!("n{i} {}", fmt_event(&e)));
                    }
                    self.nodes[i].events.push(e);
                }
                Output::Timeout(_) => return any,
            }
            any = true;
        }
    }

    /// Polls every subscription of node `i` until empty. Taking deliveries may resume
    /// paused streams; the outputs that follow are carried out before polling again.
    pub fn drain_deliveries(&mut self, i: usize) {
        loop {
            let mut any = false;
            for sub in self.nodes[i].subs.clone() {
                while let Some(m) = self.nodes[i].comm.poll_delivery(sub) {
                    any = true;
                    self.nodes[i].delivered.entry(sub).or_default().push(m);
                }
            }
            let more = self.drain_outputs(i);
            if !any && !more {
                break;
            }
        }
    }

    /// Runs until nothing is queued and no timer is due before `limit` from now.
    /// Runs the network and every timer for at most `limit` of virtual time.
    pub fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        loop {
            let next_wire = self.queue.iter().map(|(t, _)| *t).min();
            let next_timer = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].up)
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|i| self.nodes[i].comm.poll_timeout())
                .min();
            let next = match (next_wire, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(x) => x,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            if next > self.now {
                self.now = next;
            }
            if let Some(pos) = self.queue.iter().position(|(t, _)| *t <= self.now) {
                let (_, w) = self.queue.remove(pos).unwrap();
                self.deliver(w);
                continue;
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].up
                    && self.nodes[i]
                        .comm
                        .poll_timeout()
                        .is_some_and(|t| t <= self.now)
                {
                    self.nodes[i].comm.handle_timeout(self.now);
                    self.flush(i);
                }
            }
        }
        if self.now < end && self.queue.is_empty() {
            // Quiescent: the clock stays where the last thing happened.
        }
    }

    /// Delivers everything in flight (time moves to each delivery); fires only timers that
    /// fall due on the way. Deadlines later than the last delivery stay pending: use
    /// `advance` to let virtual time pass.
    pub fn settle(&mut self) {
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        while let Some(next) = self.queue.iter().map(|(t, _)| *t).min() {
            let due_timer = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].up)
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|i| self.nodes[i].comm.poll_timeout().map(|t| (t, i)))
                .filter(|(t, _)| *t < next)
                .min();
            if let Some((t, i)) = due_timer {
                self.now = self.now.max(t);
                self.nodes[i].comm.handle_timeout(self.now);
                self.flush(i);
                continue;
            }
            self.now = self.now.max(next);
            let pos = self.queue.iter().position(|(t, _)| *t <= self.now).unwrap();
            let (_, w) = self.queue.remove(pos).unwrap();
            self.deliver(w);
        }
    }

    /// Advances virtual time by `d`, firing whatever is due.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_for(d);
        self.now = end;
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                self.nodes[i].comm.handle_timeout(self.now);
                self.flush(i);
            }
        }
    }

    /// Sends a DataMessage carrying `data` from `from` to node `to` (its expected PKI-ID).
    pub fn send(&mut self, from: usize, to: usize, data: &[u8]) {
        let msg = data_msg(data);
        let now = self.now;
        let to_peer = self.peer(to);
        self.nodes[from]
            .comm
            .send(now, &SignedMessage::noop(msg), &[to_peer])
            .unwrap();
        self.flush(from);
    }

    /// Node `i` closes its connection to node `j` (known by the test provider's PKI-ID, as
    /// [`peer`]). Its actions wait for [`Net::flush`], so that a test can interleave other
    /// calls between the close and the driver carrying it out.
    pub fn close_conn(&mut self, i: usize, j: usize) {
        let now = self.now;
        self.nodes[i].comm.close_conn(now, &peer(j).pki_id);
    }

    /// Node `from` sends a DataMessage carrying `data` to nodes `to` with
    /// [`Comm::send_with_ack`], wanting `min_ack` acks within `timeout`; returns the
    /// operation, whose result comes as an event.
    pub fn send_with_ack(
        &mut self,
        from: usize,
        to: &[usize],
        data: &[u8],
        min_ack: usize,
        timeout: Duration,
    ) -> OpId {
        let peers: Vec<_> = to.iter().map(|&j| self.peer(j)).collect();
        let now = self.now;
        let op = self.nodes[from]
            .comm
            .send_with_ack(now, data_msg(data), timeout, min_ack, &peers)
            .unwrap();
        self.flush(from);
        op
    }

    /// Crash: the node stops answering; its streams reset on the remote side.
    /// Crashes node `i`: it stops answering and its streams reset at the remote ends.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        let links: Vec<_> = self
            .links
            .iter()
            .filter(|((n, _), _)| *n == i)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((_, s), (t, ts)) in links {
            self.links.remove(&(i, s));
            if let Some(ts) = ts {
                self.links.remove(&(t, ts));
                self.close_end(t, ts, StreamEnd::Error("connection reset".into()));
            }
        }
    }

    /// Restarts node i with a fresh core. Streams of the old incarnation are forgotten; a
    /// remote that was not told (no `crash` first) keeps a stream into a black hole.
    pub fn restart(&mut self, i: usize, security: Box<dyn Security>, config: Config) {
        let stale: Vec<_> = self
            .links
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for k in stale {
            self.links.remove(&k);
        }
        for v in self.links.values_mut() {
            if v.0 == i {
                *v = (usize::MAX, None);
            }
        }
        self.pending_writes.retain(|(n, _), _| *n != i);
        self.closed_streams.retain(|(n, _)| *n != i);
        self.closed_dials.retain(|(n, _)| *n != i);
        self.paused.retain(|(n, _)| *n != i);
        self.held.retain(|(n, _), _| *n != i);
        self.queue.retain(|(_, w)| !matches!(w,
            Wire::DialResult { node, .. } | Wire::PingResult { node, .. } | Wire::Envelope { node, .. }
            | Wire::Sent { node, .. } | Wire::Closed { node, .. } if *node == i));
        self.nodes[i].comm =
            Comm::new(config.with_seed(1000 + i as u64), security, self.now).unwrap();
        self.nodes[i].up = true;
        self.nodes[i].subs.clear();
        self.nodes[i].delivered.clear();
        self.nodes[i].events.clear();
    }

    /// The payloads of every DataMessage node `i` has had delivered, in order.
    pub fn delivered_data(&self, i: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for msgs in self.nodes[i].delivered.values() {
            for m in msgs {
                if let Some((_, data)) = crate::data_payload(&m.message) {
                    out.push(data.to_vec());
                }
            }
        }
        out
    }
}

/// A DataMessage carrying `data` as payload number 1.
pub fn data_msg(data: &[u8]) -> crate::proto::gossip::GossipMessage {
    crate::data_message(1, Bytes::copy_from_slice(data))
}

/// One line describing an action (writes by content type), for logs and snapshots.
pub fn fmt_action(a: &Action) -> String {
    match a {
        Action::Write {
            stream, envelope, ..
        } => {
            let kind = SignedMessage::from_envelope_bytes(envelope.clone())
                .map(|m| m.message().content_name().to_string())
                .unwrap_or_else(|_| "?".into());
            format!("Write {stream} {kind} ({} bytes)", envelope.len())
        }
        other => format!("{other:?}"),
    }
}

/// One line describing an event, for logs and snapshots.
pub fn fmt_event(e: &Event) -> String {
    match e {
        Event::Connected {
            conn,
            info,
            inbound,
        } => format!("Connected {conn} {} inbound={inbound}", info.id),
        Event::HandshakeDone { op, result } => format!(
            "HandshakeDone {op} {:?}",
            result.as_ref().map(|i| i.id.to_string())
        ),
        other => format!("{other:?}"),
    }
}
