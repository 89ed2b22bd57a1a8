//! The simulator's front: [`Sim`], what it holds, how a test builds a network, reads it
//! and makes API calls on its nodes. The run loop is in `queue`, the network in
//! `network`, node hosting in `host`, faults in `fault`, checks in `invariants`.

use crate::config::{Counters, NodeId, START, SimConfig, Violation};
use crate::fault::Fault;
use crate::fault::fmt_duration;
use crate::host::{Cause, Node};
use crate::layer::StartError;
use crate::network::LinkId;
use crate::network::{Cuts, Link};
use crate::node::{Delivered, NodeSpec, NodeState, SimComm};
use crate::observe::Observer;
use crate::queue::Ev;
use crate::raw::RawPeer;
use crate::rng::SimRng;
use crate::timeline::Timeline;
use crate::trace::{Peers, Trace, trace};
use crate::workload::Workload;
use bytes::Bytes;
use core::fmt;
use core::time::Duration;
use fabric_gossip_core::Slab;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{
    Acceptor, Comm, Error, Event, Instant, OpId, PkiId, RemotePeer, SignedMessage, Stats, StreamId,
    SubscriptionId,
};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A deterministic network of comm cores.
///
/// Build it, add nodes, schedule faults, make API calls, then run it until a condition or
/// a virtual deadline. Every step takes the earliest entry of one queue ordered by
/// (virtual time, sequence number), feeds it to the node it concerns, and carries out
/// that core's outputs, which queue further entries. Nothing reads the wall clock and
/// every random choice comes from the run's RNG, so a seed reproduces a run exactly; the
/// trace hash proves it.
///
/// # Methods by task
///
/// * Build: [`Sim::new`], [`Sim::add_node`] (a [`NodeSpec`](crate::NodeSpec) each),
///   [`Sim::add_nodes`], [`Sim::set_spec`].
/// * Act as the application: [`Sim::send`], [`Sim::send_to`], [`Sim::send_with_ack`],
///   [`Sim::send_with_ack_to`], [`Sim::send_with_ack_signed`], [`Sim::probe`],
///   [`Sim::handshake`], [`Sim::subscribe`], [`Sim::ack`], [`Sim::close_conn`],
///   [`Sim::with_comm`]; a layer's: [`Sim::with_layer`].
/// * Break things: [`Sim::schedule_faults`], [`Sim::stop_node`], [`Sim::crash`],
///   [`Sim::restart`]; random traffic: [`Sim::set_workload`].
/// * Run: [`Sim::run_until`] (a condition and a virtual deadline), [`Sim::run_for`],
///   [`Sim::run_until_idle`], [`Sim::step`].
/// * Look: [`Sim::deliveries`], [`Sim::events`], [`Sim::op_result`], [`Sim::layer`],
///   [`Sim::layer_events`], [`Sim::stats`], [`Sim::connections_between`], [`Sim::trace`];
///   as it happens: [`Sim::set_observer`].
/// * Judge: [`Sim::check`], [`Sim::check_quiescent`], [`Sim::violations`],
///   [`Sim::reproduce_hint`].
///
/// # Bounds
///
/// The queue holds what is in flight: per stream direction at most
/// [`SimConfig::stream_window`] bytes of envelopes (plus one), the open and close
/// markers, one result per dial or Ping, a few wake-ups per node, one workload tick per
/// node and the faults scheduled. Writes beyond the window wait per stream, at most the
/// core's `write_window` of them (checked). Deliveries and events kept for inspection stop
/// at [`SimConfig::record_limit`] per node, trace lines at [`SimConfig::trace_limit`],
/// violations at [`MAX_VIOLATIONS`](crate::MAX_VIOLATIONS); past those only counters grow. Raw streams keep a
/// small record each and [`RAW_RECEIVE_LIMIT`](crate::RAW_RECEIVE_LIMIT) envelopes.
pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) rng: SimRng,
    pub(crate) now: Instant,
    pub(crate) seq: u64,
    /// Everything that will happen, in order.
    pub(crate) queue: Timeline<Ev>,
    pub(crate) nodes: Vec<Node>,
    /// The node listening at each endpoint, looked up on every dial (hashed: only
    /// looked up and removed from, never walked in order).
    pub(crate) endpoints: HashMap<String, usize>,
    pub(crate) links: Slab<LinkId, Link>,
    pub(crate) raws: Vec<RawPeer>,
    pub(crate) blocked: Cuts,
    pub(crate) corrupt: BTreeMap<(usize, usize), u32>,
    pub(crate) trace: Trace,
    pub(crate) counters: Counters,
    pub(crate) violations: Vec<Violation>,
    pub(crate) violations_total: u64,
    pub(crate) cause: Cause,
    pub(crate) sent: Vec<(usize, StreamId)>,
    pub(crate) feed: VecDeque<(LinkId, usize)>,
    pub(crate) touched: Vec<usize>,
    /// Streams the current step acted on or fed, with their node: the send queues to
    /// check after it (only with `check_invariants`).
    pub(crate) touched_streams: Vec<(usize, StreamId)>,
    /// Steps since every node's queues were last checked (see `check_touched`).
    pub(crate) steps_since_sweep: usize,
    /// Whether a send queue may have changed unseen since the last sweep: a node hosts a
    /// layer (it sends inside its node), or a call through [`Sim::with_comm`] did what
    /// the step's bookkeeping does not follow. Without either, the sweep has nothing to
    /// find and is skipped.
    pub(crate) unseen_sends: bool,
    /// Some node was started with a layer.
    pub(crate) hosts_layers: bool,
    pub(crate) workload: Option<(Workload, Bytes)>,
    /// Each node's peers under a workload with a view ([`Workload::view`]); empty
    /// without one.
    pub(crate) views: Vec<Vec<NodeId>>,
    /// The peers of the workload's last send, kept so that the next one reuses their
    /// endpoint strings instead of allocating new ones.
    pub(crate) workload_peers: Vec<RemotePeer>,
    pub(crate) instant_steps: u64,
    /// Sees every delivery and event as it happens ([`Sim::set_observer`]).
    pub(crate) observer: Option<Observer>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.cfg.seed)
            .field("now", &self.elapsed())
            .field("nodes", &self.nodes.len())
            .field("queued", &self.queue.len())
            .field("links", &self.links.len())
            .field("violations", &self.violations.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        Sim {
            rng: SimRng::new(cfg.seed),
            trace: Trace::new(cfg.trace, cfg.trace_limit),
            cfg,
            now: START,
            seq: 0,
            queue: Timeline::default(),
            nodes: Vec::new(),
            endpoints: HashMap::new(),
            links: Slab::default(),
            raws: Vec::new(),
            blocked: Cuts::default(),
            corrupt: BTreeMap::new(),
            counters: Counters::default(),
            violations: Vec::new(),
            violations_total: 0,
            cause: None,
            sent: Vec::new(),
            feed: VecDeque::new(),
            touched: Vec::new(),
            touched_streams: Vec::new(),
            steps_since_sweep: 0,
            unseen_sends: false,
            hosts_layers: false,
            workload: None,
            views: Vec::new(),
            workload_peers: Vec::new(),
            instant_steps: 0,
            observer: None,
        }
    }

    // -------------------------------------------------------------- building

    /// Adds a node at the next endpoint (`127.0.0.1:7051`, `:7052`, …). Fails, adding
    /// nothing, if the core refuses the node's own identity ([`StartError::Identity`]) or
    /// its layer factory ([`NodeSpec::try_layer`]) refuses to make its layer
    /// ([`StartError::Layer`]), or if its security provider signs one message two ways
    /// ([`StartError::RandomSignatures`], unless [`NodeSpec::random_signatures`] allows it).
    ///
    /// Its process starts at once, at the current virtual time, layer included: a peer
    /// it is told to reach that is added after it is not there yet. A dial retries a
    /// refused connection within the core's `dial_timeout` (grpc-go's back-off: after
    /// about 1 s, then 2.5 s, with the defaults), so a peer added within that time is
    /// reached about a second later; one added later than that is not, and a membership
    /// layer tries its bootstrap peer again only a `reconnect_interval` (25 s) after the
    /// dial failed. Let nodes join through nodes added before them.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, StartError> {
        let id = self.nodes.len();
        let endpoint = format!("127.0.0.1:{}", 7051 + id);
        self.endpoints.insert(endpoint.clone(), id);
        self.nodes.push(Node {
            endpoint,
            spec,
            state: NodeState::Crashed,
            stack: None,
            incarnation: 0,
            booted: false,
            identity_gen: 0,
            first_pki: PkiId::default(),
            certs: None,
            subs: Vec::new(),
            ready: Vec::new(),
            streams: Vec::new(),
            dials: Vec::new(),
            wake_at: None,
            reader_tick: false,
            deliveries: Vec::new(),
            events: Vec::new(),
            layer_events: Vec::new(),
            ops_done: BTreeMap::new(),
            delivered_total: 0,
            records_dropped: 0,
            retired: Stats::default(),
            workload_seq: 0,
            wall_step: 0,
            wall_stepped: false,
        });
        if let Err(e) = self.boot(id, false) {
            self.nodes.pop();
            self.endpoints.retain(|_, v| *v != id);
            return Err(e);
        }
        self.nodes[id].first_pki = self.pki_id(id);
        Ok(id)
    }

    /// Adds `n` default nodes (Fabric defaults, test provider, no TLS).
    pub fn add_nodes(&mut self, n: usize) -> Vec<NodeId> {
        (0..n)
            .filter_map(|_| self.add_node(NodeSpec::default()).ok())
            .collect()
    }

    /// Subscribes node `n`'s application (Fabric's `Accept`); deliveries are taken
    /// according to the node's reader mode and kept in [`Sim::deliveries`].
    pub fn subscribe(&mut self, n: NodeId, acceptor: Acceptor) -> Result<SubscriptionId, Error> {
        let comm = self.comm_mut_or_stopped(n)?;
        let sub = comm.subscribe(acceptor)?;
        self.nodes[n].subs.push(sub);
        trace!(self, "n{n} api subscribe {sub}");
        Ok(sub)
    }

    // -------------------------------------------------------------- getters

    /// The run's settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.now - START
    }

    /// Number of nodes ever added.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `n`'s endpoint, which stays the same across restarts.
    pub fn endpoint(&self, n: NodeId) -> &str {
        self.nodes.get(n).map_or("", |x| x.endpoint.as_str())
    }

    /// Node `n`'s current PKI-ID (empty if it has no running or stopped process).
    pub fn pki_id(&self, n: NodeId) -> PkiId {
        self.nodes
            .get(n)
            .and_then(|x| x.core())
            .map(|c| c.pki_id().clone())
            .unwrap_or_default()
    }

    /// The PKI-ID node `n` had when first started (what peers that have not heard of a
    /// new identity still expect).
    pub fn first_pki_id(&self, n: NodeId) -> PkiId {
        self.nodes
            .get(n)
            .map(|x| x.first_pki.clone())
            .unwrap_or_default()
    }

    /// Node `n` as a send target with its current PKI-ID. A node that is down has none
    /// (the PKI-ID given is empty): to send to a crashed node as its peers would, keep its
    /// PKI-ID from before the crash.
    pub fn remote_peer(&self, n: NodeId) -> RemotePeer {
        RemotePeer::new(self.endpoint(n), self.pki_id(n))
    }

    /// Node `n`'s process state.
    pub fn state(&self, n: NodeId) -> Option<NodeState> {
        self.nodes.get(n).map(|x| x.state)
    }

    /// Which run of node `n`'s process this is (0 first, +1 per restart).
    pub fn incarnation(&self, n: NodeId) -> u32 {
        self.nodes.get(n).map_or(0, |x| x.incarnation)
    }

    /// Node `n`'s core, if its process exists (running or stopped).
    pub fn comm(&self, n: NodeId) -> Option<&SimComm> {
        self.nodes.get(n).and_then(|x| x.core())
    }

    /// Node `n`'s core counters (current incarnation).
    pub fn stats(&self, n: NodeId) -> Option<&Stats> {
        self.comm(n).map(Comm::stats)
    }

    /// Node `n`'s subscriptions (current incarnation).
    pub fn subscriptions(&self, n: NodeId) -> &[SubscriptionId] {
        self.nodes.get(n).map_or(&[], |x| &x.subs)
    }

    /// Deliveries kept for node `n`, all incarnations, oldest first.
    pub fn deliveries(&self, n: NodeId) -> &[Delivered] {
        self.nodes.get(n).map_or(&[], |x| &x.deliveries)
    }

    /// Deliveries node `n` took, kept or not.
    pub fn delivered_total(&self, n: NodeId) -> u64 {
        self.nodes.get(n).map_or(0, |x| x.delivered_total)
    }

    /// Events kept for node `n` with their times, all incarnations, oldest first.
    pub fn events(&self, n: NodeId) -> &[(Instant, Event)] {
        self.nodes.get(n).map_or(&[], |x| &x.events)
    }

    /// Deliveries and events of node `n` not kept because of `record_limit`.
    pub fn records_dropped(&self, n: NodeId) -> u64 {
        self.nodes.get(n).map_or(0, |x| x.records_dropped)
    }

    /// The event that finished operation `op` of node `n` (ProbeDone, HandshakeDone or
    /// SendWithAckDone), once it has.
    pub fn op_result(&self, n: NodeId, op: OpId) -> Option<&Event> {
        let node = self.nodes.get(n)?;
        node.ops_done
            .get(&op)
            .and_then(|i| node.events.get(*i))
            .map(|e| &e.1)
    }

    /// Network counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Core counters summed over every node and every incarnation (a crashed process's
    /// counters are kept), for summaries.
    pub fn totals(&self) -> Stats {
        let mut t = Stats::default();
        for n in &self.nodes {
            t.merge(&n.retired);
            if let Some(c) = n.core() {
                t.merge(c.stats());
            }
        }
        t
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Invariant violations seen so far (the first [`MAX_VIOLATIONS`](crate::MAX_VIOLATIONS)).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether nothing is queued: no packet in flight, no timer, no fault, no workload.
    /// Once nodes have talked their cores keep timers armed far ahead (the identity-usage
    /// sweep), so this stays false long after the network went quiet: ask
    /// [`Sim::is_idle_until`] the end of the run instead, or use [`Sim::run_until_idle`].
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Streams open at both ends between nodes `a` and `b` that both cores have
    /// authenticated (registered connections, primary or crossing secondary).
    pub fn connections_between(&self, a: NodeId, b: NodeId) -> usize {
        self.links
            .keys()
            .into_iter()
            .filter_map(|k| self.links.get(k))
            .filter(|l| {
                let pair = (
                    self.established_end(&l.ends[0]),
                    self.established_end(&l.ends[1]),
                );
                matches!(pair, (Some(x), Some(y)) if (x == a && y == b) || (x == b && y == a))
            })
            .count()
    }

    // -------------------------------------------------------------- API calls

    fn comm_mut_or_stopped(&mut self, n: NodeId) -> Result<&mut SimComm, Error> {
        match self.nodes.get_mut(n) {
            Some(Node {
                stack: Some(s),
                state: NodeState::Up,
                ..
            }) => Ok(s.comm_mut()),
            _ => Err(Error::Stopped),
        }
    }

    /// Runs `f` on node `n`'s core at the current virtual time, then carries out whatever
    /// it asked for: the escape hatch for any API call without a wrapper here.
    pub fn with_comm<R>(
        &mut self,
        n: NodeId,
        f: impl FnOnce(&mut SimComm, Instant) -> R,
    ) -> Result<R, Error> {
        // Whatever `f` queued is not followed stream by stream: the next sweep looks.
        self.unseen_sends = true;
        self.with_comm_seen(n, f)
    }

    /// [`Sim::with_comm`] for calls whose effect on send queues the caller records itself
    /// (`touch_peers`).
    fn with_comm_seen<R>(
        &mut self,
        n: NodeId,
        f: impl FnOnce(&mut SimComm, Instant) -> R,
    ) -> Result<R, Error> {
        let now = self.now;
        let comm = self.comm_mut_or_stopped(n)?;
        let r = f(comm, now);
        self.pump(n);
        self.drain_work();
        Ok(r)
    }

    /// Fabric's `Send` from node `n`.
    pub fn send(
        &mut self,
        n: NodeId,
        msg: &SignedMessage,
        peers: &[RemotePeer],
    ) -> Result<(), Error> {
        trace!(
            self,
            "n{n} api send {} {}B -> {}",
            msg.message().content_name(),
            msg.envelope_bytes().len(),
            Peers(peers)
        );
        let r = self.with_comm_seen(n, |c, now| c.send(now, msg, peers))?;
        self.touch_peers(n, peers);
        r
    }

    /// Sends `msg` from node `n` to nodes `to`, addressed by their current PKI-IDs (none
    /// for a node that is down: the send then dials its endpoint expecting anyone; to
    /// send to a crashed node as its peers would, keep [`Sim::remote_peer`] from before
    /// the crash and call [`Sim::send`]).
    ///
    /// The simulator has no `send_wait`: a step cannot block. A test that must not lose a
    /// message to a full buffer calls [`fabric_gossip_core::Comm::send_wait`] through
    /// [`Sim::with_comm`], and on `Err(WouldBlock)` runs the network a little and tries
    /// again, as a tonic node's `send_wait` waits for room.
    pub fn send_to(&mut self, n: NodeId, msg: &SignedMessage, to: &[NodeId]) -> Result<(), Error> {
        let peers: Vec<RemotePeer> = to.iter().map(|t| self.remote_peer(*t)).collect();
        self.send(n, msg, &peers)
    }

    /// Fabric's `SendWithAck` from node `n` (`min_ack` taken as at least 1, as
    /// [`fabric_gossip_core::Comm::send_with_ack`] says); the result arrives as an event
    /// ([`Sim::op_result`]). Simulated applications do not answer by themselves: set
    /// [`SimConfig::auto_ack`], or have the receiver call [`Sim::ack`] on its delivery,
    /// or every peer's result is a time-out.
    pub fn send_with_ack(
        &mut self,
        n: NodeId,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        let content = msg.content_name();
        self.start_send_with_ack(
            n,
            "send_with_ack",
            content,
            timeout,
            min_ack,
            peers,
            |c, now| c.send_with_ack(now, msg, timeout, min_ack, peers),
        )
    }

    /// [`Sim::send_with_ack`] to nodes of this network by index, as [`Sim::send_to`] is
    /// to [`Sim::send`] (each named by its current PKI-ID, [`Sim::remote_peer`]).
    pub fn send_with_ack_to(
        &mut self,
        n: NodeId,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        to: &[NodeId],
    ) -> Result<OpId, Error> {
        let peers: Vec<RemotePeer> = to.iter().map(|t| self.remote_peer(*t)).collect();
        self.send_with_ack(n, msg, timeout, min_ack, &peers)
    }

    /// [`Sim::send_with_ack`] for a message already encoded, as a tonic node's
    /// `send_with_ack_signed`: the fresh nonce is put into `msg`'s encoding
    /// ([`fabric_gossip_core::Comm::send_with_ack_signed`]), so code written against either
    /// driver runs on the other unchanged.
    pub fn send_with_ack_signed(
        &mut self,
        n: NodeId,
        msg: &SignedMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        let content = msg.message().content_name();
        let api = "send_with_ack_signed";
        self.start_send_with_ack(n, api, content, timeout, min_ack, peers, |c, now| {
            c.send_with_ack_signed(now, msg, timeout, min_ack, peers)
        })
    }

    /// Traces a SendWithAck from node `n` (the call `api`, the message's `content`),
    /// starts it with `start`, and has the queues it touched checked.
    #[allow(clippy::too_many_arguments)] // what the trace line names, and the call itself
    fn start_send_with_ack(
        &mut self,
        n: NodeId,
        api: &str,
        content: &str,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
        start: impl FnOnce(&mut SimComm, Instant) -> Result<OpId, Error>,
    ) -> Result<OpId, Error> {
        trace!(
            self,
            "n{n} api {api} {content} min_ack={min_ack} timeout={} -> {}",
            fmt_duration(timeout),
            Peers(peers)
        );
        let r = self.with_comm_seen(n, start)?;
        self.touch_peers(n, peers);
        r
    }

    /// A send from node `n` may have queued on its connections to `peers` without
    /// writing: their queues are checked after the step.
    fn touch_peers(&mut self, n: NodeId, peers: &[RemotePeer]) {
        if !self.cfg.check_invariants {
            return;
        }
        for p in peers {
            if let Some(s) = self.comm(n).and_then(|c| c.connection(&p.pki_id)) {
                self.touch_stream(n, s);
            }
        }
    }

    /// Fabric's `Probe` from node `n`.
    pub fn probe(&mut self, n: NodeId, peer: &RemotePeer) -> Result<OpId, Error> {
        trace!(self, "n{n} api probe {}", peer.endpoint);
        self.with_comm(n, |c, now| c.probe(now, peer))?
    }

    /// Fabric's `Handshake` from node `n`.
    pub fn handshake(&mut self, n: NodeId, peer: &RemotePeer) -> Result<OpId, Error> {
        trace!(self, "n{n} api handshake {} {}", peer.endpoint, peer.pki_id);
        self.with_comm(n, |c, now| c.handshake(now, peer))?
    }

    /// Fabric's `Respond` on node `n`'s connection `conn`.
    pub fn respond(&mut self, n: NodeId, conn: StreamId, msg: GossipMessage) -> Result<(), Error> {
        trace!(self, "n{n} api respond {conn} {}", msg.content_name());
        self.with_comm(n, |c, now| c.respond(now, conn, msg))?
    }

    /// Fabric's `Ack` on node `n`'s connection `conn`.
    pub fn ack(
        &mut self,
        n: NodeId,
        conn: StreamId,
        nonce: u64,
        error: Option<&str>,
    ) -> Result<(), Error> {
        trace!(self, "n{n} api ack {conn} nonce={nonce} error={error:?}");
        self.with_comm(n, |c, now| c.ack(now, conn, nonce, error))?
    }

    /// Fabric's `CloseConn` on node `n`: its connections to `pki` close; one still being
    /// made for a send goes on ([`Comm::close_conn`](fabric_gossip_core::Comm::close_conn)).
    pub fn close_conn(&mut self, n: NodeId, pki: &PkiId) -> Result<(), Error> {
        trace!(self, "n{n} api close_conn {pki}");
        self.with_comm(n, |c, now| c.close_conn(now, pki))
    }

    /// Fabric's `SuspectPeers` on node `n`, after its security provider changed what it
    /// accepts: see `Comm::revalidate_identities`. Returns how many identities were refused.
    pub fn revalidate_identities(&mut self, n: NodeId) -> Result<usize, Error> {
        trace!(self, "n{n} api revalidate_identities");
        self.with_comm(n, |c, now| c.revalidate_identities(now))
    }

    /// Applies a fault now.
    pub fn apply(&mut self, fault: Fault) {
        self.apply_fault(fault);
        self.drain_work();
    }

    /// Stops node `n` gracefully (Fabric's `Stop`, then the listener closes).
    pub fn stop_node(&mut self, n: NodeId) {
        self.apply(Fault::Stop(n));
    }

    /// Kills node `n`'s process. Its peers learn it as a real peer would: a send to it
    /// right after is accepted (the connection still looks alive) and is lost when the
    /// connection resets, counted in [`Counters::envelopes_lost`] and reported as
    /// `Disconnected`, not as `PresumedDead`, which only a failed send or dial gives (as
    /// in Fabric). The next send then dials, and that fails. A test that wants to see a
    /// restarted node's new identity should let the network run past the reset first.
    pub fn crash(&mut self, n: NodeId) {
        self.apply(Fault::Crash(n));
    }

    /// Restarts node `n` (crashing it first if it runs: call [`Sim::stop_node`] before for a
    /// graceful stop), with the same or a new identity at the same endpoint.
    /// Fails for a node that does not exist ([`StartError::NoSuchNode`]), whose provider
    /// refuses its own identity, or whose layer factory fails; the node then stays down.
    pub fn restart(&mut self, n: NodeId, new_identity: bool) -> Result<(), StartError> {
        if n >= self.nodes.len() {
            return Err(StartError::NoSuchNode(n));
        }
        if self.state(n) == Some(NodeState::Up) {
            self.apply(Fault::Crash(n));
        }
        trace!(self, "n{n} * restart new_identity={new_identity}");
        self.retire(n);
        let r = self.boot(n, new_identity);
        self.drain_work();
        r
    }

    /// Replaces node `n`'s spec (takes effect at its next restart).
    pub fn set_spec(&mut self, n: NodeId, spec: NodeSpec) {
        if let Some(node) = self.nodes.get_mut(n) {
            node.spec = spec;
        }
    }
}
