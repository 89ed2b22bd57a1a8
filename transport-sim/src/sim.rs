//! The network: nodes running the unmodified core, links that behave like gRPC over TCP,
//! a virtual clock, one delivery queue ordered by (time, sequence), faults and checks.

use crate::fault::{Fault, ReaderMode, ScheduledFault, fmt_duration};
use crate::node::{
    Delivered, EventRecord, NodeSpec, NodeState, SimComm, TlsMode, Totals, made_up_cert, payload,
};
use crate::rng::SimRng;
use crate::slab::{Key, Slab};
use crate::trace::{Digest8, Trace, TraceMode};
use bytes::Bytes;
use core::fmt;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{
    DataMessage, Envelope, GossipMessage, Payload, gossip_message,
};
use fabric_gossip_core::proto::prost::Message as _;
use fabric_gossip_core::{
    Acceptor, Action, CertHash, Comm, Config, DialId, Error, Event, HandshakeError, Instant, OpId,
    Output, PkiId, ReceivedMessage, RemotePeer, SignedMessage, Stats, StreamEnd, StreamId,
    SubscriptionId, TlsHashes,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

/// Where virtual time starts: a fixed instant (2023-11-14), so traces never depend on the
/// wall clock and certificate validity checks see a plausible date.
pub const START: Instant = Instant::from_unix_secs(1_700_000_000);

/// Index of a node in the network, in the order nodes were added.
pub type NodeId = usize;

/// Handle of a raw stream: a test-controlled client that speaks bytes, not protocol.
pub type RawId = usize;

/// Violations kept per run; a broken invariant tends to repeat, and the first few say it.
pub const MAX_VIOLATIONS: usize = 64;

/// Steps at one virtual instant after which the run is declared livelocked.
pub const LIVELOCK_STEPS: u64 = 5_000_000;

/// Settings of a run. Everything that varies between runs of the same code is here or
/// drawn from the RNG seeded by `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of the run's only RNG.
    pub seed: u64,
    /// One-way latency of every link; a dial or a Ping costs a round trip.
    pub latency: Duration,
    /// Extra one-way delay drawn uniformly from `0..=jitter` per packet. Streams stay
    /// ordered: a packet never overtakes an earlier one of the same stream.
    pub jitter: Duration,
    /// Bytes a stream direction holds unread (in flight or waiting for a paused reader)
    /// before writes block, as HTTP/2 flow control does; a write of any size is let into an
    /// empty window.
    pub stream_window: usize,
    /// How long a stream survives a partition that cuts it before both ends see it reset
    /// (gRPC keepalive).
    pub keepalive_timeout: Duration,
    /// How much of the trace to keep.
    pub trace: TraceMode,
    /// Trace lines kept in [`TraceMode::Full`].
    pub trace_limit: usize,
    /// Deliveries and events kept per node for inspection; past it they are only counted.
    pub record_limit: usize,
    /// Check invariants after every step (a few per cent of run time).
    pub check_invariants: bool,
    /// Acknowledge every delivered message that carries a nonce (a `send_with_ack`), as an
    /// application would; workloads use it to exercise acks.
    pub auto_ack: bool,
    /// How to rerun this seed, with `{seed}` standing for it; printed with failures.
    pub reproduce: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(50),
            stream_window: 64 * 1024,
            keepalive_timeout: Duration::from_secs(10),
            trace: TraceMode::Hash,
            trace_limit: 1_000_000,
            record_limit: 100_000,
            check_invariants: true,
            auto_ack: false,
            reproduce: "fabric-gossip sim --seed {seed}".into(),
        }
    }
}

impl SimConfig {
    /// Default settings with this seed.
    pub fn seeded(seed: u64) -> Self {
        SimConfig {
            seed,
            ..Self::default()
        }
    }
}

/// A broken invariant, with the virtual time it was seen at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at +{}: {}", fmt_duration(self.at), self.what)
    }
}

/// What the simulated network itself did, beyond the cores' counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Queue entries processed.
    pub steps: u64,
    /// Dials answered with success.
    pub dials_ok: u64,
    /// Dials refused.
    pub dials_refused: u64,
    /// Dials left hanging (partition).
    pub dials_hung: u64,
    /// Pings answered.
    pub pings_ok: u64,
    /// Pings failed.
    pub pings_failed: u64,
    /// Pings left hanging.
    pub pings_hung: u64,
    /// Streams opened.
    pub streams_opened: u64,
    /// Streams reset (fault, crash, keepalive).
    pub streams_reset: u64,
    /// Envelopes put on a link.
    pub envelopes: u64,
    /// Envelopes lost: arrived at a closed end, or in flight on a reset stream.
    pub envelopes_lost: u64,
    /// Envelopes written by a silent node and swallowed.
    pub envelopes_swallowed: u64,
    /// Envelopes corrupted by a fault.
    pub envelopes_corrupted: u64,
    /// Messages taken from subscriptions by the applications.
    pub delivered: u64,
    /// Faults applied.
    pub faults: u64,
    /// Messages the workload sent (`send` and `send_with_ack` calls).
    pub workload_sends: u64,
}

/// A steady stream of messages from every node to random peers, for random runs and
/// benchmarks.
#[derive(Clone, Debug)]
pub struct Workload {
    /// When sending starts, from the start of the run.
    pub start: Duration,
    /// When sending stops, from the start of the run.
    pub stop: Duration,
    /// Mean time between two sends of one node (each gap is drawn from 0.5..1.5 of it).
    pub interval: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// Peers per send.
    pub fanout: usize,
    /// Sends that use `send_with_ack` instead of `send`, per mille.
    pub ack_per_mille: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            start: Duration::ZERO,
            stop: Duration::from_secs(10),
            interval: Duration::from_millis(10),
            size: 1024,
            fanout: 1,
            ack_per_mille: 0,
        }
    }
}

// ------------------------------------------------------------------ internals

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Core { node: usize, inc: u32 },
    Raw(usize),
}

#[derive(Debug)]
struct End {
    owner: Owner,
    stream: Option<StreamId>,
    open: bool,
    paused: bool,
    writes: u64,
}

/// What travels on a pipe. Kept small (the rare `Open` is boxed) because queue entries
/// are moved on every heap operation.
#[derive(Debug)]
enum Item {
    Open(Box<(Option<CertHash>, String)>),
    Env(Bytes),
    End(StreamEnd),
}

#[derive(Debug, Default)]
struct Pipe {
    /// Bytes written into the pipe and not yet consumed by the reader.
    unread: usize,
    /// Writes waiting for window credit (not yet confirmed to the writer). The writer's
    /// core hands out at most `write_window` unconfirmed writes, which bounds this.
    blocked: VecDeque<Bytes>,
    /// Envelopes arrived while the reader was paused (counted in `unread`, so bounded by
    /// the window plus one envelope).
    held: VecDeque<Bytes>,
    /// Items cut off by a partition, sent on when it heals (counted in `unread` as well).
    stalled: VecDeque<Item>,
    last_arrival: Instant,
}

#[derive(Debug)]
struct Link {
    /// 0: the side that opened the stream, 1: the side that accepted it.
    ends: [End; 2],
    /// `pipes[d]` carries from `ends[d]` to `ends[1 - d]`.
    pipes: [Pipe; 2],
    keepalive_armed: bool,
}

#[derive(Clone, Copy, Debug)]
struct StreamSlot {
    generation: u32,
    link: Key,
    side: usize,
}

#[derive(Clone, Copy, Debug)]
struct DialSlot {
    generation: u32,
    target: Option<usize>,
    target_inc: u32,
}

struct Node {
    endpoint: String,
    spec: NodeSpec,
    state: NodeState,
    comm: Option<SimComm>,
    incarnation: u32,
    booted: bool,
    identity_gen: u32,
    first_pki: PkiId,
    certs: Option<TlsHashes>,
    subs: Vec<SubscriptionId>,
    /// Subscriptions that reported `DeliveryReady` and were not emptied yet.
    ready: Vec<SubscriptionId>,
    streams: Vec<Option<StreamSlot>>,
    dials: Vec<Option<DialSlot>>,
    wake_at: Option<Instant>,
    reader_tick: bool,
    deliveries: Vec<Delivered>,
    events: Vec<EventRecord>,
    ops_done: BTreeMap<OpId, usize>,
    delivered_total: u64,
    records_dropped: u64,
    retired: Totals,
    workload_seq: u64,
}

struct RawPeer {
    link: Key,
    addr: String,
    received: Vec<Bytes>,
    received_total: u64,
    ended: Option<StreamEnd>,
}

/// Envelopes a raw stream keeps of what it received; the rest are counted.
pub const RAW_RECEIVE_LIMIT: usize = 4096;

enum Ev {
    DialDone {
        node: usize,
        inc: u32,
        dial: DialId,
        result: Box<Result<Option<CertHash>, String>>,
    },
    PingDone {
        node: usize,
        inc: u32,
        dial: DialId,
        result: Result<(), String>,
    },
    Arrive {
        link: Key,
        dir: u8,
        item: Item,
    },
    Reset {
        node: usize,
        inc: u32,
        link: Key,
        stream: StreamId,
        reason: &'static str,
        write_pending: bool,
    },
    Wake {
        node: usize,
        inc: u32,
    },
    ReaderTick {
        node: usize,
        inc: u32,
    },
    Keepalive {
        link: Key,
    },
    Fault(Box<Fault>),
    Work {
        node: usize,
    },
}

/// A heap entry: when, in which order, and where the event waits. The event itself stays
/// in a slot of `Sim::pending`, so heap operations move 24 bytes instead of a whole event.
struct Queued {
    at: Instant,
    seq: u64,
    slot: u32,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Why a core input may legitimately produce a PresumedDead.
type Cause = Option<&'static str>;

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace.is_on() {
            let elapsed = ($sim.now - START).as_nanos() as u64;
            $sim.trace.record(elapsed, format_args!($($arg)*));
        }
    };
}

/// A deterministic network of comm cores.
///
/// Build it, add nodes, schedule faults, make API calls, then run it until a condition or
/// a virtual deadline. Every step takes the earliest entry of one queue ordered by
/// (virtual time, sequence number), feeds it to the node it concerns, and carries out
/// that core's outputs, which queue further entries. Nothing reads the wall clock and
/// every random choice comes from the run's RNG, so a seed reproduces a run exactly; the
/// trace hash proves it.
///
/// # Bounds
///
/// The queue holds what is in flight: per stream direction at most
/// [`SimConfig::stream_window`] bytes of envelopes (plus one), the open and close
/// markers, one result per dial or Ping, a few wake-ups per node, one workload tick per
/// node and the faults scheduled. Writes beyond the window wait per stream, at most the
/// core's `write_window` of them (checked). Deliveries and events kept for inspection stop
/// at [`SimConfig::record_limit`] per node, trace lines at [`SimConfig::trace_limit`],
/// violations at [`MAX_VIOLATIONS`]; past those only counters grow. Raw streams keep a
/// small record each and [`RAW_RECEIVE_LIMIT`] envelopes.
pub struct Sim {
    cfg: SimConfig,
    rng: SimRng,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    /// Events waiting in the queue, by slot (bounded by what the queue holds).
    pending: Vec<Option<Ev>>,
    free_slots: Vec<u32>,
    nodes: Vec<Node>,
    endpoints: BTreeMap<String, usize>,
    links: Slab<Link>,
    raws: Vec<RawPeer>,
    blocked: BTreeSet<(usize, usize)>,
    corrupt: BTreeMap<(usize, usize), u32>,
    trace: Trace,
    counters: Counters,
    violations: Vec<Violation>,
    violations_total: u64,
    cause: Cause,
    sent: Vec<(usize, StreamId)>,
    feed: VecDeque<(Key, usize)>,
    touched: Vec<usize>,
    workload: Option<(Workload, Bytes)>,
    instant_steps: u64,
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
            queue: BinaryHeap::new(),
            pending: Vec::new(),
            free_slots: Vec::new(),
            nodes: Vec::new(),
            endpoints: BTreeMap::new(),
            links: Slab::default(),
            raws: Vec::new(),
            blocked: BTreeSet::new(),
            corrupt: BTreeMap::new(),
            counters: Counters::default(),
            violations: Vec::new(),
            violations_total: 0,
            cause: None,
            sent: Vec::new(),
            feed: VecDeque::new(),
            touched: Vec::new(),
            workload: None,
            instant_steps: 0,
        }
    }

    // -------------------------------------------------------------- building

    /// Adds a node at the next endpoint (`127.0.0.1:7051`, `:7052`, …). Fails only if the
    /// core refuses the node's own identity.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, HandshakeError> {
        let id = self.nodes.len();
        let endpoint = format!("127.0.0.1:{}", 7051 + id);
        self.endpoints.insert(endpoint.clone(), id);
        self.nodes.push(Node {
            endpoint,
            spec,
            state: NodeState::Crashed,
            comm: None,
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
            ops_done: BTreeMap::new(),
            delivered_total: 0,
            records_dropped: 0,
            retired: Totals::default(),
            workload_seq: 0,
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

    /// Starts (or restarts) node `id`'s process.
    fn boot(&mut self, id: usize, new_identity: bool) -> Result<(), HandshakeError> {
        let seed = self.rng.u64();
        let now = self.now;
        let node = &mut self.nodes[id];
        if new_identity {
            node.identity_gen += 1;
        }
        let generation = node.identity_gen;
        let security = node.spec.make_security(&node.endpoint, generation);
        let certs = (node.spec.tls != TlsMode::Off).then(|| TlsHashes {
            client_cert_hash: made_up_cert("client", &node.endpoint, generation),
            server_cert_hash: made_up_cert("server", &node.endpoint, generation),
        });
        let mut config: Config = node.spec.config.clone().with_seed(seed);
        config.tls = match (&certs, node.spec.tls) {
            (Some(_), TlsMode::MutualWrongClaim) => Some(TlsHashes {
                client_cert_hash: made_up_cert("forged client", &node.endpoint, generation),
                server_cert_hash: made_up_cert("forged server", &node.endpoint, generation),
            }),
            (c, _) => c.clone(),
        };
        let comm = Comm::new(config, security, now)?;
        if node.booted {
            node.incarnation += 1;
        }
        node.booted = true;
        node.comm = Some(comm);
        node.certs = certs;
        node.state = NodeState::Up;
        node.subs.clear();
        node.ready.clear();
        node.streams.clear();
        node.dials.clear();
        node.wake_at = None;
        node.reader_tick = false;
        let subscribe_all = node.spec.subscribe_all;
        let pki = self.pki_id(id);
        let inc = self.nodes[id].incarnation;
        trace!(self, "n{id} * start inc={inc} pki={pki}");
        if subscribe_all {
            let _ = self.subscribe(id, Box::new(|_| true));
        }
        Ok(())
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

    /// Sets a workload: from `w.start` to `w.stop` every running node sends messages to
    /// random peers.
    pub fn set_workload(&mut self, mut w: Workload) {
        // A zero interval would send forever without time passing.
        w.interval = w.interval.max(Duration::from_micros(1));
        let data = payload(w.size);
        for n in 0..self.nodes.len() {
            let at = START + w.start + self.rng.duration(Duration::ZERO, w.interval);
            self.schedule(at, Ev::Work { node: n });
        }
        self.workload = Some((w, data));
    }

    /// Schedules faults at offsets from the start of the run (in the past: now).
    pub fn schedule_faults(&mut self, faults: &[ScheduledFault]) {
        for f in faults {
            let at = (START + f.at).max(self.now);
            self.schedule(at, Ev::Fault(Box::new(f.fault.clone())));
        }
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
            .and_then(|x| x.comm.as_ref())
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

    /// Node `n` as a send target with its current PKI-ID.
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
        self.nodes.get(n).and_then(|x| x.comm.as_ref())
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

    /// Core counters summed over every node and incarnation.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for n in &self.nodes {
            t.merge(&n.retired);
            if let Some(c) = &n.comm {
                t.add(c.stats());
            }
        }
        t
    }

    /// The trace.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Invariant violations seen so far (the first [`MAX_VIOLATIONS`]).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether nothing is queued: no packet in flight, no timer, no fault, no workload.
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

    /// The command line that reruns this seed, from [`SimConfig::reproduce`].
    pub fn reproduce_hint(&self) -> String {
        format!(
            "reproduce with: {}",
            self.cfg
                .reproduce
                .replace("{seed}", &self.cfg.seed.to_string())
        )
    }

    /// `Err` with every violation and the reproduce line, if any invariant broke.
    pub fn check(&self) -> Result<(), String> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let mut s = format!(
            "{} invariant violation(s) in seed {}:\n",
            self.violations_total, self.cfg.seed
        );
        for v in &self.violations {
            s.push_str(&format!("  {v}\n"));
        }
        s.push_str(&self.reproduce_hint());
        Err(s)
    }

    // -------------------------------------------------------------- API calls

    fn comm_mut_or_stopped(&mut self, n: NodeId) -> Result<&mut SimComm, Error> {
        match self.nodes.get_mut(n) {
            Some(Node {
                comm: Some(c),
                state: NodeState::Up,
                ..
            }) => Ok(c),
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
        self.with_comm(n, |c, now| c.send(now, msg, peers))?
    }

    /// Sends `msg` from node `n` to nodes `to`, addressed by their current PKI-IDs.
    pub fn send_to(&mut self, n: NodeId, msg: &SignedMessage, to: &[NodeId]) -> Result<(), Error> {
        let peers: Vec<RemotePeer> = to.iter().map(|t| self.remote_peer(*t)).collect();
        self.send(n, msg, &peers)
    }

    /// Fabric's `SendWithAck` from node `n`; the result arrives as an event
    /// ([`Sim::op_result`]).
    pub fn send_with_ack(
        &mut self,
        n: NodeId,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        trace!(
            self,
            "n{n} api send_with_ack {} min_ack={min_ack} timeout={} -> {}",
            msg.content_name(),
            fmt_duration(timeout),
            Peers(peers)
        );
        self.with_comm(n, |c, now| {
            c.send_with_ack(now, msg, timeout, min_ack, peers)
        })?
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

    /// Fabric's `CloseConn` on node `n`.
    pub fn close_conn(&mut self, n: NodeId, pki: &PkiId) -> Result<(), Error> {
        trace!(self, "n{n} api close_conn {pki}");
        self.with_comm(n, |c, now| c.close_conn(now, pki))
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

    /// Kills node `n`'s process.
    pub fn crash(&mut self, n: NodeId) {
        self.apply(Fault::Crash(n));
    }

    /// Restarts node `n` (stopping or crashing it first if it runs), with the same or a new
    /// identity at the same endpoint.
    /// Fails for a node that does not exist ([`HandshakeError::Cancelled`]) or whose
    /// provider refuses its own identity.
    pub fn restart(&mut self, n: NodeId, new_identity: bool) -> Result<(), HandshakeError> {
        if n >= self.nodes.len() {
            return Err(HandshakeError::Cancelled);
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

    // -------------------------------------------------------------- raw streams

    /// Opens a raw `GossipStream` to node `n` from a test-controlled client at a made-up
    /// address, presenting `cert` as its TLS client certificate hash. Nothing is sent
    /// until [`Sim::raw_send`]: this is how a test plays a peer that misbehaves. A stream
    /// to a node that does not exist is refused at once. Each call keeps a small record
    /// for inspection, so tests open raw streams by the handful, not by the million.
    pub fn raw_connect(&mut self, n: NodeId, cert: Option<CertHash>) -> RawId {
        let id = self.raws.len();
        if n >= self.nodes.len() {
            self.raws.push(RawPeer {
                link: Key {
                    index: u32::MAX,
                    generation: u32::MAX,
                },
                addr: String::new(),
                received: Vec::new(),
                received_total: 0,
                ended: Some(StreamEnd::Error("connection refused: no such node".into())),
            });
            return id;
        }
        let addr = format!("127.0.0.1:{}", 40000 + id);
        let inc = self.incarnation(n);
        let link = self.links.insert(Link {
            ends: [
                End {
                    owner: Owner::Raw(id),
                    stream: None,
                    open: true,
                    paused: false,
                    writes: 0,
                },
                End {
                    owner: Owner::Core { node: n, inc },
                    stream: None,
                    open: true,
                    paused: false,
                    writes: 0,
                },
            ],
            pipes: [Pipe::default(), Pipe::default()],
            keepalive_armed: false,
        });
        self.raws.push(RawPeer {
            link,
            addr: addr.clone(),
            received: Vec::new(),
            received_total: 0,
            ended: None,
        });
        trace!(self, "raw{id} * connect n{n} from {addr}");
        self.counters.streams_opened += 1;
        self.transmit(link, 0, Item::Open(Box::new((cert, addr))));
        id
    }

    /// Writes raw bytes as one envelope on raw stream `raw` (ignored once it ended).
    pub fn raw_send(&mut self, raw: RawId, bytes: Bytes) {
        let Some(r) = self.raws.get(raw) else { return };
        let link = r.link;
        trace!(self, "raw{raw} > {}B {}", bytes.len(), Digest8(&bytes));
        let open = self.links.get(link).is_some_and(|l| l.ends[0].open);
        if open {
            self.transmit(link, 0, Item::Env(bytes));
        }
    }

    /// Ends raw stream `raw` cleanly from the client side.
    pub fn raw_close(&mut self, raw: RawId) {
        let Some(r) = self.raws.get(raw) else { return };
        let link = r.link;
        trace!(self, "raw{raw} > close");
        self.close_end(link, 0, StreamEnd::Finished);
        if let Some(r) = self.raws.get_mut(raw)
            && r.ended.is_none()
        {
            r.ended = Some(StreamEnd::Finished);
        }
    }

    /// Envelopes raw stream `raw` received (the first [`RAW_RECEIVE_LIMIT`]).
    pub fn raw_received(&self, raw: RawId) -> &[Bytes] {
        self.raws.get(raw).map_or(&[], |r| &r.received)
    }

    /// How raw stream `raw` ended, once it has.
    pub fn raw_ended(&self, raw: RawId) -> Option<&StreamEnd> {
        self.raws.get(raw).and_then(|r| r.ended.as_ref())
    }

    /// The address the node sees raw stream `raw` coming from.
    pub fn raw_addr(&self, raw: RawId) -> &str {
        self.raws.get(raw).map_or("", |r| r.addr.as_str())
    }

    // -------------------------------------------------------------- running

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        let slot = match self.free_slots.pop() {
            Some(i) => {
                self.pending[i as usize] = Some(ev);
                i
            }
            None => {
                self.pending.push(Some(ev));
                u32::try_from(self.pending.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.queue.push(Reverse(Queued {
            at: at.max(self.now),
            seq: self.seq,
            slot,
        }));
    }

    /// Processes the earliest queued entry; `false` when nothing is queued.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(q)) = self.queue.pop() else {
            return false;
        };
        if q.at > self.now {
            self.now = q.at;
            self.instant_steps = 0;
        }
        self.instant_steps += 1;
        self.counters.steps += 1;
        let Some(ev) = self.pending.get_mut(q.slot as usize).and_then(Option::take) else {
            return true;
        };
        self.free_slots.push(q.slot);
        self.process(q.at, ev);
        self.drain_work();
        if self.cfg.check_invariants {
            self.check_touched();
        }
        self.touched.clear();
        true
    }

    /// Runs until `cond` holds (checked before every step) or nothing is queued before
    /// `deadline`; virtual time then stands at `deadline` unless `cond` held earlier.
    /// Returns whether `cond` held.
    pub fn run_until(&mut self, deadline: Instant, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            if !self.step_until(deadline) {
                return cond(self);
            }
        }
    }

    /// Processes the earliest queued entry if it is due at or before `deadline` and returns
    /// `true`; otherwise moves virtual time to `deadline` and returns `false`. The building
    /// block of drivers that check their own conditions between steps (`false` also when
    /// the run is livelocked).
    pub fn step_until(&mut self, deadline: Instant) -> bool {
        if self.instant_steps > LIVELOCK_STEPS {
            self.violation(format!(
                "livelock: more than {LIVELOCK_STEPS} steps at one virtual instant"
            ));
            return false;
        }
        match self.queue.peek() {
            Some(Reverse(q)) if q.at <= deadline => self.step(),
            _ => {
                if deadline > self.now {
                    self.now = deadline;
                    self.instant_steps = 0;
                }
                false
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline, |_| false);
    }

    /// Runs until nothing is queued, or `limit` of virtual time has passed; returns whether
    /// the network went idle. Virtual time stays where the last thing happened.
    ///
    /// Core deadlines beyond `limit` with nothing else queued count as idle: a certificate
    /// that expires in years arms a timer, but nothing is in flight until then.
    pub fn run_until_idle(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while let Some(Reverse(q)) = self.queue.peek() {
            if self.instant_steps > LIVELOCK_STEPS {
                return false;
            }
            if q.at > deadline {
                return self
                    .pending
                    .iter()
                    .flatten()
                    .all(|ev| matches!(ev, Ev::Wake { .. }));
            }
            self.step();
        }
        true
    }

    fn process(&mut self, at: Instant, ev: Ev) {
        match ev {
            Ev::DialDone {
                node,
                inc,
                dial,
                result,
            } => {
                if !self.dial_live(node, inc, dial) {
                    return;
                }
                trace!(self, "n{node} < dial {dial} {}", Res(&result));
                let cause = result.is_err().then_some("dial failed");
                self.input(node, cause, |c, now| {
                    let _ = c.handle_dial_result(now, dial, *result);
                });
            }
            Ev::PingDone {
                node,
                inc,
                dial,
                result,
            } => {
                if !self.dial_live(node, inc, dial) {
                    return;
                }
                trace!(self, "n{node} < ping {dial} {}", Res(&result));
                let cause = result.is_err().then_some("ping failed");
                self.input(node, cause, |c, now| {
                    let _ = c.handle_ping_result(now, dial, result);
                });
            }
            Ev::Arrive { link, dir, item } => self.arrive(link, usize::from(dir), item),
            Ev::Reset {
                node,
                inc,
                link,
                stream,
                reason,
                write_pending,
            } => {
                if !self.node_live(node, inc) {
                    return;
                }
                let slot = self.slot(node, stream);
                if slot.is_none_or(|s| s.link != link) {
                    return;
                }
                self.unmap_stream(node, stream);
                if write_pending {
                    trace!(self, "n{node} < write failed {stream}: {reason}");
                    self.input(node, Some("write failed"), |c, now| {
                        let _ = c.handle_write_failed(now, stream, reason.into());
                    });
                } else {
                    trace!(self, "n{node} < closed {stream} error: {reason}");
                    self.input(node, Some("stream reset"), |c, now| {
                        let _ =
                            c.handle_stream_closed(now, stream, StreamEnd::Error(reason.into()));
                    });
                }
            }
            Ev::Wake { node, inc } => {
                if !self.node_live(node, inc) {
                    return;
                }
                if self.nodes[node].wake_at == Some(at) {
                    self.nodes[node].wake_at = None;
                }
                let due = self.nodes[node]
                    .comm
                    .as_mut()
                    .and_then(|c| c.poll_timeout())
                    .is_some_and(|t| t <= self.now);
                if due {
                    trace!(self, "n{node} < timeout");
                    self.input(node, Some("timeout"), |c, now| c.handle_timeout(now));
                } else {
                    self.reschedule_wake(node);
                }
            }
            Ev::ReaderTick { node, inc } => {
                if !self.node_live(node, inc) {
                    return;
                }
                self.nodes[node].reader_tick = false;
                if let ReaderMode::Every(d) = self.nodes[node].spec.reader {
                    self.take_one_each(node);
                    self.pump(node);
                    if self.has_queued_deliveries(node) {
                        self.nodes[node].reader_tick = true;
                        self.schedule(self.now + d, Ev::ReaderTick { node, inc });
                    }
                }
            }
            Ev::Keepalive { link } => {
                let Some(l) = self.links.get_mut(link) else {
                    return;
                };
                l.keepalive_armed = false;
                if self.link_cut(link) {
                    self.reset_link(link, "keepalive: connection lost", Duration::ZERO);
                }
            }
            Ev::Fault(f) => self.apply_fault(*f),
            Ev::Work { node } => self.work(node),
        }
    }

    fn node_live(&self, node: usize, inc: u32) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.incarnation == inc && n.comm.is_some())
    }

    fn dial_live(&self, node: usize, inc: u32, dial: DialId) -> bool {
        self.node_live(node, inc)
            && self.nodes[node]
                .dials
                .get(dial.index() as usize)
                .copied()
                .flatten()
                .is_some_and(|d| d.generation == dial.generation())
    }

    /// Feeds one input to node `n`'s core and carries out everything it produces.
    fn input(&mut self, n: usize, cause: Cause, f: impl FnOnce(&mut SimComm, Instant)) {
        let now = self.now;
        let Some(comm) = self.nodes.get_mut(n).and_then(|x| x.comm.as_mut()) else {
            return;
        };
        self.cause = cause;
        f(comm, now);
        self.pump(n);
        self.cause = None;
    }

    /// Drains node `n`'s actions, events and (per its reader mode) deliveries until the
    /// core has nothing more to say, then re-arms its wake-up.
    fn pump(&mut self, n: usize) {
        loop {
            let mut progress = false;
            // The core's one output: actions, then events, until the time-out ends it.
            while let Some(out) = self.nodes[n].comm.as_mut().map(Comm::poll_output) {
                match out {
                    Output::Action(a) => self.on_action(n, a),
                    Output::Event(e) => self.on_event(n, e),
                    Output::Timeout(_) => break,
                }
                progress = true;
            }
            // Only subscriptions that said DeliveryReady have anything: an eager reader
            // empties them, so the core says it again when the next message comes.
            while self.nodes[n].state == NodeState::Up
                && self.nodes[n].spec.reader == ReaderMode::Eager
                && let Some(sub) = self.nodes[n].ready.pop()
            {
                while let Some(m) = self.nodes[n]
                    .comm
                    .as_mut()
                    .and_then(|c| c.poll_delivery(sub))
                {
                    progress = true;
                    self.on_delivery(n, sub, m);
                }
            }
            if !progress {
                break;
            }
        }
        self.reschedule_wake(n);
        if self.cfg.check_invariants && self.touched.last() != Some(&n) {
            self.touched.push(n);
        }
    }

    /// Carries out work that inputs left behind: write confirmations and reads resumed.
    fn drain_work(&mut self) {
        loop {
            if let Some((n, stream)) = self.sent.pop() {
                trace!(self, "n{n} < sent {stream} (window opened)");
                self.input(n, None, |c, now| {
                    let _ = c.handle_sent(now, stream, 1);
                });
                continue;
            }
            if let Some((link, dir)) = self.feed.pop_front() {
                self.feed_held(link, dir);
                continue;
            }
            break;
        }
    }

    fn reschedule_wake(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        let Some(t) = node.comm.as_mut().and_then(|c| c.poll_timeout()) else {
            return;
        };
        if node.wake_at.is_none_or(|w| t < w) {
            let inc = node.incarnation;
            self.nodes[n].wake_at = Some(t);
            self.schedule(t, Ev::Wake { node: n, inc });
        }
    }

    fn take_one_each(&mut self, n: usize) {
        for i in 0..self.nodes[n].subs.len() {
            let sub = self.nodes[n].subs[i];
            if let Some(m) = self.nodes[n]
                .comm
                .as_mut()
                .and_then(|c| c.poll_delivery(sub))
            {
                self.on_delivery(n, sub, m);
            }
        }
    }

    fn has_queued_deliveries(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        node.comm
            .as_ref()
            .is_some_and(|c| node.subs.iter().any(|s| c.delivery_queue_len(*s) > 0))
    }

    // -------------------------------------------------------------- outputs

    fn on_action(&mut self, n: usize, a: Action) {
        trace!(self, "n{n} > {}", ActionFmt(&a));
        match a {
            Action::Dial { dial, endpoint } => self.dial(n, dial, &endpoint),
            Action::Ping { dial } => self.ping(n, dial),
            Action::OpenStream { dial, stream } => self.open_stream(n, dial, stream),
            Action::Write { stream, envelope } => self.write(n, stream, envelope),
            Action::PauseRead { stream } => {
                if let Some(s) = self.slot(n, stream)
                    && let Some(l) = self.links.get_mut(s.link)
                {
                    l.ends[s.side].paused = true;
                }
            }
            Action::ResumeRead { stream } => {
                if let Some(s) = self.slot(n, stream)
                    && let Some(l) = self.links.get_mut(s.link)
                {
                    l.ends[s.side].paused = false;
                    self.feed.push_back((s.link, 1 - s.side));
                }
            }
            Action::CloseStream { stream, error } => {
                let Some(s) = self.slot(n, stream) else {
                    return;
                };
                self.unmap_stream(n, stream);
                let end = error.map_or(StreamEnd::Finished, StreamEnd::Error);
                self.close_end(s.link, s.side, end);
            }
            Action::CloseDial { dial } => {
                if let Some(d) = self.nodes[n].dials.get_mut(dial.index() as usize)
                    && d.is_some_and(|d| d.generation == dial.generation())
                {
                    *d = None;
                }
            }
        }
    }

    fn on_event(&mut self, n: usize, e: Event) {
        trace!(self, "n{n} ! {}", EventFmt(&e));
        match &e {
            Event::PresumedDead(p) => match self.cause {
                Some(cause) => {
                    trace!(self, "n{n}   cause of PresumedDead {p}: {cause}");
                }
                None => self.violation(format!(
                    "n{n}: PresumedDead({p}) without a failed dial, ping, handshake, write or \
                     stream to cause it"
                )),
            },
            Event::DeliveryReady(sub) => {
                if self.nodes[n].spec.reader == ReaderMode::Eager {
                    self.nodes[n].ready.push(*sub);
                }
                if let ReaderMode::Every(d) = self.nodes[n].spec.reader
                    && !self.nodes[n].reader_tick
                {
                    let inc = self.nodes[n].incarnation;
                    self.nodes[n].reader_tick = true;
                    self.schedule(self.now + d, Ev::ReaderTick { node: n, inc });
                }
                return;
            }
            _ => {}
        }
        let node = &mut self.nodes[n];
        if node.events.len() < self.cfg.record_limit {
            if let Event::ProbeDone { op, .. }
            | Event::HandshakeDone { op, .. }
            | Event::SendWithAckDone { op, .. } = &e
            {
                node.ops_done.insert(*op, node.events.len());
            }
            node.events.push((self.now, e));
        } else {
            node.records_dropped += 1;
        }
    }

    fn on_delivery(&mut self, n: usize, sub: SubscriptionId, m: ReceivedMessage) {
        trace!(
            self,
            "n{n} @ {sub} from {} {} {}B",
            m.sender(),
            m.message.content_name(),
            m.envelope_bytes.len()
        );
        self.counters.delivered += 1;
        let node = &mut self.nodes[n];
        node.delivered_total += 1;
        if node.state != NodeState::Up {
            let st = node.state;
            self.violation(format!("n{n}: delivery while {st:?}"));
        }
        if self.cfg.auto_ack
            && m.message.nonce != 0
            && !matches!(m.message.content, Some(gossip_message::Content::Ack(_)))
            && let Some(c) = self.nodes[n].comm.as_mut()
        {
            let _ = c.ack(self.now, m.conn, m.message.nonce, None);
        }
        let node = &mut self.nodes[n];
        if node.deliveries.len() < self.cfg.record_limit {
            let incarnation = node.incarnation;
            node.deliveries.push(Delivered {
                at: self.now,
                incarnation,
                sub,
                msg: m,
            });
        } else {
            node.records_dropped += 1;
        }
    }

    // -------------------------------------------------------------- the network

    fn cut(&self, from: usize, to: usize) -> bool {
        !self.blocked.is_empty() && self.blocked.contains(&(from, to))
    }

    fn jitter(&mut self) -> Duration {
        if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.rng.duration(Duration::ZERO, self.cfg.jitter)
        }
    }

    fn rtt(&mut self) -> Duration {
        self.cfg.latency * 2 + self.jitter()
    }

    fn slot(&self, n: usize, stream: StreamId) -> Option<StreamSlot> {
        self.nodes[n]
            .streams
            .get(stream.index() as usize)
            .copied()
            .flatten()
            .filter(|s| s.generation == stream.generation())
    }

    fn map_stream(&mut self, n: usize, stream: StreamId, link: Key, side: usize) {
        let v = &mut self.nodes[n].streams;
        let i = stream.index() as usize;
        if v.len() <= i {
            v.resize(i + 1, None);
        }
        v[i] = Some(StreamSlot {
            generation: stream.generation(),
            link,
            side,
        });
    }

    fn unmap_stream(&mut self, n: usize, stream: StreamId) {
        if let Some(s) = self.nodes[n].streams.get_mut(stream.index() as usize)
            && s.is_some_and(|x| x.generation == stream.generation())
        {
            *s = None;
        }
    }

    fn dial(&mut self, n: usize, dial: DialId, endpoint: &str) {
        let target = self.endpoints.get(endpoint).copied();
        let target_inc = target.map_or(0, |t| self.nodes[t].incarnation);
        let i = dial.index() as usize;
        let dials = &mut self.nodes[n].dials;
        if dials.len() <= i {
            dials.resize(i + 1, None);
        }
        dials[i] = Some(DialSlot {
            generation: dial.generation(),
            target,
            target_inc,
        });
        let result = match target {
            None => Some(Err("connection refused: no such host".to_string())),
            Some(t) if self.nodes[t].state != NodeState::Up => {
                Some(Err("connection refused".to_string()))
            }
            Some(t) if self.cut(n, t) || self.cut(t, n) => None,
            Some(t) => Some(Ok(self.nodes[t].certs.as_ref().map(|c| c.server_cert_hash))),
        };
        let inc = self.nodes[n].incarnation;
        match result {
            None => self.counters.dials_hung += 1,
            Some(Ok(_)) => self.counters.dials_ok += 1,
            Some(Err(_)) => self.counters.dials_refused += 1,
        }
        if let Some(result) = result {
            let at = self.now + self.rtt();
            self.schedule(
                at,
                Ev::DialDone {
                    node: n,
                    inc,
                    dial,
                    result: Box::new(result),
                },
            );
        }
    }

    fn ping(&mut self, n: usize, dial: DialId) {
        let Some(d) = self.nodes[n]
            .dials
            .get(dial.index() as usize)
            .copied()
            .flatten()
        else {
            return;
        };
        let result = match d.target {
            Some(t)
                if self.nodes[t].state != NodeState::Up
                    || self.nodes[t].incarnation != d.target_inc =>
            {
                Some(Err("unavailable: connection closed".to_string()))
            }
            Some(t) if self.cut(n, t) || self.cut(t, n) || self.nodes[t].spec.hang_ping => None,
            Some(_) => Some(Ok(())),
            None => Some(Err("unavailable".to_string())),
        };
        match result {
            None => self.counters.pings_hung += 1,
            Some(Ok(())) => self.counters.pings_ok += 1,
            Some(Err(_)) => self.counters.pings_failed += 1,
        }
        let inc = self.nodes[n].incarnation;
        if let Some(result) = result {
            let at = self.now + self.rtt();
            self.schedule(
                at,
                Ev::PingDone {
                    node: n,
                    inc,
                    dial,
                    result,
                },
            );
        }
    }

    fn open_stream(&mut self, n: usize, dial: DialId, stream: StreamId) {
        let Some(d) = self.nodes[n]
            .dials
            .get(dial.index() as usize)
            .copied()
            .flatten()
        else {
            self.violation(format!("n{n}: OpenStream {stream} on unknown dial {dial}"));
            return;
        };
        let Some(t) = d.target else { return };
        let inc = self.nodes[n].incarnation;
        let link = self.links.insert(Link {
            ends: [
                End {
                    owner: Owner::Core { node: n, inc },
                    stream: Some(stream),
                    open: true,
                    paused: false,
                    writes: 0,
                },
                End {
                    owner: Owner::Core {
                        node: t,
                        inc: d.target_inc,
                    },
                    stream: None,
                    open: true,
                    paused: false,
                    writes: 0,
                },
            ],
            pipes: [Pipe::default(), Pipe::default()],
            keepalive_armed: false,
        });
        self.map_stream(n, stream, link, 0);
        self.counters.streams_opened += 1;
        let node = &self.nodes[n];
        let cert = match node.spec.tls {
            TlsMode::MutualNoClientCert | TlsMode::Off => None,
            _ => node.certs.as_ref().map(|c| c.client_cert_hash),
        };
        let addr = node.endpoint.clone();
        self.transmit(link, 0, Item::Open(Box::new((cert, addr))));
    }

    fn write(&mut self, n: usize, stream: StreamId, mut bytes: Bytes) {
        let Some(s) = self.slot(n, stream) else {
            self.violation(format!(
                "n{n}: Write on {stream}, which it never opened or closed"
            ));
            return;
        };
        // Whatever happens to the bytes, the local write succeeds at once unless flow
        // control holds it: a real Send returns before the remote reads.
        let Some(l) = self.links.get_mut(s.link) else {
            // The stream was reset under the writer; it learns when the reset arrives.
            self.counters.envelopes_lost += 1;
            self.confirm_now(n, stream);
            return;
        };
        l.ends[s.side].writes += 1;
        let first = l.ends[s.side].writes == 1;
        let remote_open = l.ends[1 - s.side].open;
        let (silent, bad_signature) = {
            let spec = &self.nodes[n].spec;
            (spec.silent, spec.bad_signature)
        };
        if silent {
            self.counters.envelopes_swallowed += 1;
            trace!(self, "n{n}   swallowed (silent)");
            self.confirm_now(n, stream);
            return;
        }
        if bad_signature && first {
            bytes = mangle_signature(bytes);
            trace!(self, "n{n}   signature mangled {}", Digest8(&bytes));
        }
        if !remote_open {
            self.counters.envelopes_lost += 1;
            self.confirm_now(n, stream);
            return;
        }
        let window = self.cfg.stream_window;
        let Some(l) = self.links.get_mut(s.link) else {
            return;
        };
        let pipe = &mut l.pipes[s.side];
        if pipe.blocked.is_empty() && (pipe.unread == 0 || pipe.unread + bytes.len() <= window) {
            self.transmit(s.link, s.side, Item::Env(bytes));
            self.confirm_now(n, stream);
        } else {
            pipe.blocked.push_back(bytes);
            let limit = self.nodes[n]
                .comm
                .as_ref()
                .map_or(usize::MAX, |c| c.config().write_window);
            let held = pipe.blocked.len();
            if held > limit {
                self.violation(format!(
                    "n{n}: {held} writes blocked on {stream}, more than write_window {limit}"
                ));
            }
        }
    }

    /// Confirms a write of node `n` while its actions are being drained (the core allows
    /// it: a confirmation only returns credit, and whatever it releases joins the actions
    /// being drained), which saves a separate input per message.
    fn confirm_now(&mut self, n: usize, stream: StreamId) {
        let now = self.now;
        if let Some(c) = self.nodes[n].comm.as_mut() {
            let _ = c.handle_sent(now, stream, 1);
        }
    }

    fn owner_node(o: Owner) -> Option<usize> {
        match o {
            Owner::Core { node, .. } => Some(node),
            Owner::Raw(_) => None,
        }
    }

    /// Puts an item on pipe `dir` of `link`: scheduled for arrival after the latency (never
    /// before an earlier item of the same pipe), or stalled if a partition cuts it.
    fn transmit(&mut self, link: Key, dir: usize, item: Item) {
        let jitter = self.jitter();
        let Some(l) = self.links.get(link) else {
            return;
        };
        let from = Self::owner_node(l.ends[dir].owner);
        let to = Self::owner_node(l.ends[1 - dir].owner);
        let mut item = item;
        if let Item::Env(b) = &mut item {
            self.counters.envelopes += 1;
            if let (Some(f), Some(t)) = (from, to)
                && let Some(k) = self.corrupt.get_mut(&(f, t))
                && *k > 0
            {
                *k -= 1;
                let flips = 1 + self.rng.index(3);
                let mut v = b.to_vec();
                for _ in 0..flips {
                    if !v.is_empty() {
                        let i = self.rng.index(v.len());
                        v[i] ^= 1 << self.rng.below(8);
                    }
                }
                *b = Bytes::from(v);
                self.counters.envelopes_corrupted += 1;
                trace!(self, "n{f}   corrupted on the way to n{t} {}", Digest8(b));
            }
        }
        let cut = matches!((from, to), (Some(f), Some(t)) if self.cut(f, t));
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let pipe = &mut l.pipes[dir];
        if let Item::Env(b) = &item {
            pipe.unread += b.len();
        }
        if cut {
            pipe.stalled.push_back(item);
            if !l.keepalive_armed {
                l.keepalive_armed = true;
                let at = self.now + self.cfg.keepalive_timeout;
                self.schedule(at, Ev::Keepalive { link });
            }
            return;
        }
        let at = (self.now + self.cfg.latency + jitter).max(pipe.last_arrival);
        pipe.last_arrival = at;
        let dir = u8::from(dir == 1);
        self.schedule(at, Ev::Arrive { link, dir, item });
    }

    fn arrive(&mut self, link: Key, dir: usize, item: Item) {
        let Some(l) = self.links.get(link) else {
            if matches!(item, Item::Env(_)) {
                self.counters.envelopes_lost += 1;
            }
            return;
        };
        let end = &l.ends[1 - dir];
        let (owner, mut open, paused, stream) = (end.owner, end.open, end.paused, end.stream);
        if let Owner::Core { node, inc } = owner
            && !matches!(item, Item::Open(_))
            && !self.node_live(node, inc)
        {
            // The process this end belonged to is gone; only the link's bookkeeping remains.
            open = false;
        }
        match item {
            Item::Open(hello) => {
                let (cert, addr) = *hello;
                let Owner::Core { node, inc } = owner else {
                    return;
                };
                if !open {
                    return;
                }
                let up =
                    self.nodes[node].state == NodeState::Up && self.nodes[node].incarnation == inc;
                if !up {
                    trace!(self, "n{node} < refused stream from {addr}: not listening");
                    self.close_end(link, 1 - dir, StreamEnd::Error("connection refused".into()));
                    return;
                }
                trace!(
                    self,
                    "n{node} < accept from {addr} cert={}",
                    Cert(cert.as_ref())
                );
                let now = self.now;
                let Some(comm) = self.nodes[node].comm.as_mut() else {
                    return;
                };
                match comm.accept_stream(now, &addr, cert) {
                    Ok(sid) => {
                        if let Some(l) = self.links.get_mut(link) {
                            l.ends[1 - dir].stream = Some(sid);
                        }
                        self.map_stream(node, sid, link, 1 - dir);
                        trace!(self, "n{node}   accepted as {sid}");
                        self.pump(node);
                    }
                    Err(e) => {
                        trace!(self, "n{node}   refused: {e}");
                        self.close_end(link, 1 - dir, StreamEnd::Error("Shutting down".into()));
                    }
                }
            }
            Item::Env(bytes) => {
                if !open {
                    self.counters.envelopes_lost += 1;
                    self.consumed(link, dir, bytes.len());
                    return;
                }
                match owner {
                    Owner::Raw(r) => {
                        self.consumed(link, dir, bytes.len());
                        trace!(self, "raw{r} < {}B {}", bytes.len(), Digest8(&bytes));
                        if let Some(raw) = self.raws.get_mut(r) {
                            raw.received_total += 1;
                            if raw.received.len() < RAW_RECEIVE_LIMIT {
                                raw.received.push(bytes);
                            }
                        }
                    }
                    Owner::Core { .. } if paused => {
                        if let Some(l) = self.links.get_mut(link) {
                            l.pipes[dir].held.push_back(bytes);
                        }
                    }
                    Owner::Core { node, .. } => {
                        if let Some(sid) = stream {
                            self.consume(link, dir, node, sid, bytes);
                        }
                    }
                }
            }
            Item::End(how) => {
                if !open {
                    self.drop_if_closed(link);
                    return;
                }
                if let Some(l) = self.links.get_mut(link) {
                    let e = &mut l.ends[1 - dir];
                    e.open = false;
                    e.paused = false;
                    l.pipes[1 - dir].blocked.clear();
                }
                match owner {
                    Owner::Raw(r) => {
                        trace!(self, "raw{r} < end {}", EndFmt(&how));
                        if let Some(raw) = self.raws.get_mut(r) {
                            raw.ended = Some(how);
                        }
                    }
                    Owner::Core { node, inc } => {
                        if let Some(sid) = stream
                            && self.node_live(node, inc)
                        {
                            self.unmap_stream(node, sid);
                            trace!(self, "n{node} < closed {sid} {}", EndFmt(&how));
                            self.input(node, Some("stream ended"), |c, now| {
                                let _ = c.handle_stream_closed(now, sid, how);
                            });
                        }
                    }
                }
                self.drop_if_closed(link);
            }
        }
    }

    /// Hands one envelope to the reading core, then lets blocked writes into the window.
    fn consume(&mut self, link: Key, dir: usize, node: usize, sid: StreamId, bytes: Bytes) {
        let len = bytes.len();
        let handshaking = self.nodes[node]
            .comm
            .as_ref()
            .is_some_and(|c| c.connection_info(sid).is_none());
        let cause = handshaking.then_some("handshake message");
        if self.trace.is_on() {
            trace!(self, "n{node} < envelope {sid} {}", EnvFmt(&bytes));
        }
        self.input(node, cause, |c, now| {
            let _ = c.handle_envelope(now, sid, bytes);
        });
        self.consumed(link, dir, len);
    }

    /// `len` bytes of pipe `dir` were read: return the credit and let blocked writes go.
    fn consumed(&mut self, link: Key, dir: usize, len: usize) {
        let window = self.cfg.stream_window;
        let mut released = Vec::new();
        if let Some(l) = self.links.get_mut(link) {
            let pipe = &mut l.pipes[dir];
            pipe.unread = pipe.unread.saturating_sub(len);
            let mut projected = pipe.unread;
            while let Some(front) = pipe.blocked.front() {
                if projected != 0 && projected + front.len() > window {
                    break;
                }
                projected += front.len();
                if let Some(b) = pipe.blocked.pop_front() {
                    released.push(b);
                }
            }
        }
        if released.is_empty() {
            return;
        }
        let Some(l) = self.links.get(link) else {
            return;
        };
        let writer = (l.ends[dir].owner, l.ends[dir].stream);
        for b in released {
            self.transmit(link, dir, Item::Env(b));
            if let (Owner::Core { node, .. }, Some(sid)) = writer {
                self.sent.push((node, sid));
            }
        }
    }

    fn feed_held(&mut self, link: Key, dir: usize) {
        loop {
            let Some(l) = self.links.get_mut(link) else {
                return;
            };
            let end = &l.ends[1 - dir];
            let (owner, stream) = (end.owner, end.stream);
            if end.paused || !end.open {
                return;
            }
            let Some(bytes) = l.pipes[dir].held.pop_front() else {
                return;
            };
            if let (Owner::Core { node, .. }, Some(sid)) = (owner, stream) {
                self.consume(link, dir, node, sid, bytes);
            }
        }
    }

    /// Closes side `side` of `link` from its own end: `how` travels to the other end after
    /// whatever that side already wrote.
    fn close_end(&mut self, link: Key, side: usize, how: StreamEnd) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if !l.ends[side].open {
            return;
        }
        l.ends[side].open = false;
        l.ends[side].paused = false;
        l.pipes[side].blocked.clear();
        let held: usize = l.pipes[1 - side].held.drain(..).map(|b| b.len()).sum();
        l.pipes[1 - side].unread = l.pipes[1 - side].unread.saturating_sub(held);
        if l.ends[1 - side].open {
            self.transmit(link, side, Item::End(how));
        } else {
            self.links.remove(link);
        }
    }

    fn drop_if_closed(&mut self, link: Key) {
        if self
            .links
            .get(link)
            .is_some_and(|l| !l.ends[0].open && !l.ends[1].open)
        {
            self.links.remove(link);
        }
    }

    /// Resets a stream: both open ends learn after `delay`; whatever was in flight is lost.
    fn reset_link(&mut self, link: Key, reason: &'static str, delay: Duration) {
        let Some(l) = self.links.remove(link) else {
            return;
        };
        self.counters.streams_reset += 1;
        let lost: u64 = l.pipes.iter().map(|p| p.stalled.len() as u64).sum();
        self.counters.envelopes_lost += lost;
        for side in 0..2 {
            let e = &l.ends[side];
            if !e.open {
                continue;
            }
            match e.owner {
                Owner::Raw(r) => {
                    if let Some(raw) = self.raws.get_mut(r) {
                        raw.ended = Some(StreamEnd::Error(reason.into()));
                    }
                }
                Owner::Core { node, inc } => {
                    let Some(stream) = e.stream else { continue };
                    if !self.node_live(node, inc) || self.nodes[node].state != NodeState::Up {
                        continue;
                    }
                    let write_pending = !l.pipes[side].blocked.is_empty();
                    let at = self.now + delay;
                    self.schedule(
                        at,
                        Ev::Reset {
                            node,
                            inc,
                            link,
                            stream,
                            reason,
                            write_pending,
                        },
                    );
                }
            }
        }
    }

    fn link_nodes(l: &Link) -> (Option<usize>, Option<usize>) {
        (
            Self::owner_node(l.ends[0].owner),
            Self::owner_node(l.ends[1].owner),
        )
    }

    fn link_cut(&self, link: Key) -> bool {
        match self.links.get(link).map(Self::link_nodes) {
            Some((Some(a), Some(b))) => self.cut(a, b) || self.cut(b, a),
            _ => false,
        }
    }

    fn established_end(&self, e: &End) -> Option<usize> {
        let (Owner::Core { node, inc }, Some(sid), true) = (e.owner, e.stream, e.open) else {
            return None;
        };
        if !self.node_live(node, inc) {
            return None;
        }
        let comm = self.nodes[node].comm.as_ref()?;
        comm.connection_info(sid)?;
        Some(node)
    }

    // -------------------------------------------------------------- faults

    fn apply_fault(&mut self, fault: Fault) {
        self.counters.faults += 1;
        if fault.nodes().iter().any(|n| *n >= self.nodes.len()) {
            trace!(self, "* {fault} ignored: no such node");
            return;
        }
        trace!(self, "* {fault}");
        match fault {
            Fault::Partition { a, b } => {
                for x in &a {
                    for y in &b {
                        if x != y {
                            self.blocked.insert((*x, *y));
                            self.blocked.insert((*y, *x));
                        }
                    }
                }
                self.arm_keepalives();
            }
            Fault::OneWay { from, to } => {
                for x in &from {
                    for y in &to {
                        if x != y {
                            self.blocked.insert((*x, *y));
                        }
                    }
                }
                self.arm_keepalives();
            }
            Fault::Isolate(n) => {
                for y in 0..self.nodes.len() {
                    if y != n {
                        self.blocked.insert((n, y));
                        self.blocked.insert((y, n));
                    }
                }
                self.arm_keepalives();
            }
            Fault::Heal => {
                self.blocked.clear();
                self.corrupt.clear();
                for link in self.links.keys() {
                    for dir in 0..2 {
                        let stalled: Vec<Item> = match self.links.get_mut(link) {
                            Some(l) => l.pipes[dir].stalled.drain(..).collect(),
                            None => continue,
                        };
                        for item in stalled {
                            if let (Item::Env(b), Some(l)) = (&item, self.links.get_mut(link)) {
                                l.pipes[dir].unread = l.pipes[dir].unread.saturating_sub(b.len());
                            }
                            self.transmit(link, dir, item);
                        }
                    }
                }
            }
            Fault::Crash(n) => {
                if self.nodes[n].comm.is_none() {
                    return;
                }
                self.retire(n);
                let node = &mut self.nodes[n];
                node.comm = None;
                node.state = NodeState::Crashed;
                node.streams.clear();
                node.dials.clear();
                node.subs.clear();
                node.wake_at = None;
                self.reset_links_of(n, None, "connection reset");
            }
            Fault::Stop(n) => {
                if self.nodes[n].state != NodeState::Up {
                    return;
                }
                self.input(n, None, |c, now| c.stop(now));
                self.nodes[n].state = NodeState::Stopped;
            }
            Fault::Restart(n) | Fault::RestartNewIdentity(n) => {
                if self.nodes[n].state == NodeState::Up {
                    trace!(self, "n{n}   restart ignored: running");
                    return;
                }
                self.retire(n);
                let new = matches!(fault, Fault::RestartNewIdentity(_));
                if let Err(e) = self.boot(n, new) {
                    trace!(self, "n{n}   restart failed: {e}");
                }
            }
            Fault::Reset(a, b) => self.reset_links_of(a, Some(b), "stream reset"),
            Fault::Corrupt(a, b) => *self.corrupt.entry((a, b)).or_insert(0) += 1,
            Fault::Silent(n, on) => self.nodes[n].spec.silent = on,
            Fault::BadSignature(n, on) => self.nodes[n].spec.bad_signature = on,
            Fault::HangPing(n, on) => self.nodes[n].spec.hang_ping = on,
            Fault::Reader(n, mode) => {
                self.nodes[n].spec.reader = mode;
                match mode {
                    ReaderMode::Eager => {
                        if self.nodes[n].comm.is_some() {
                            // Deliveries may have waited since before the switch.
                            let subs = self.nodes[n].subs.clone();
                            self.nodes[n].ready = subs;
                            self.pump(n);
                        }
                    }
                    ReaderMode::Paused => {}
                    ReaderMode::Every(d) => {
                        if !self.nodes[n].reader_tick && self.has_queued_deliveries(n) {
                            let inc = self.nodes[n].incarnation;
                            self.nodes[n].reader_tick = true;
                            self.schedule(self.now + d, Ev::ReaderTick { node: n, inc });
                        }
                    }
                }
            }
        }
    }

    /// Counters of node `n`'s current process go to its retired totals (before a crash or
    /// restart replaces the process).
    fn retire(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if let Some(c) = node.comm.take() {
            node.retired.add(c.stats());
            // A stopped process's core is dropped here; keep the node's state as it was.
        }
    }

    fn reset_links_of(&mut self, a: usize, b: Option<usize>, reason: &'static str) {
        let latency = self.cfg.latency;
        for link in self.links.keys() {
            let Some(l) = self.links.get(link) else {
                continue;
            };
            let (x, y) = Self::link_nodes(l);
            let hit = match b {
                None => x == Some(a) || y == Some(a),
                Some(b) => (x == Some(a) && y == Some(b)) || (x == Some(b) && y == Some(a)),
            };
            if hit {
                self.reset_link(link, reason, latency);
            }
        }
    }

    fn arm_keepalives(&mut self) {
        for link in self.links.keys() {
            if self.link_cut(link)
                && let Some(l) = self.links.get_mut(link)
                && !l.keepalive_armed
            {
                l.keepalive_armed = true;
                let at = self.now + self.cfg.keepalive_timeout;
                self.schedule(at, Ev::Keepalive { link });
            }
        }
    }

    // -------------------------------------------------------------- workload

    fn work(&mut self, n: usize) {
        let Some((w, data)) = self.workload.clone() else {
            return;
        };
        if self.now >= START + w.stop {
            return;
        }
        let gap = self.rng.duration(w.interval / 2, w.interval * 3 / 2);
        self.schedule(self.now + gap, Ev::Work { node: n });
        if self.nodes[n].state != NodeState::Up || self.nodes.len() < 2 {
            return;
        }
        let others = self.nodes.len() - 1;
        let mut targets: Vec<usize> = Vec::with_capacity(w.fanout.min(others));
        while targets.len() < w.fanout.min(others) {
            let mut t = self.rng.index(others);
            if t >= n {
                t += 1;
            }
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let peers: Vec<RemotePeer> = targets
            .iter()
            .map(|t| {
                // Half the time address a peer by the identity it first had, as a node that
                // has not heard of a restart would: this is what exercises IdentitySwitch.
                let pki = if self.rng.chance(500) {
                    self.first_pki_id(*t)
                } else {
                    self.pki_id(*t)
                };
                let pki = if pki.is_empty() {
                    self.first_pki_id(*t)
                } else {
                    pki
                };
                RemotePeer::new(self.endpoint(*t), pki)
            })
            .collect();
        self.nodes[n].workload_seq += 1;
        let msg = data_message(self.nodes[n].workload_seq, data);
        self.counters.workload_sends += 1;
        if self.rng.chance(w.ack_per_mille) {
            let min_ack = peers.len();
            let _ = self.send_with_ack(n, msg, Duration::from_secs(2), min_ack, &peers);
        } else {
            let _ = self.send(n, &SignedMessage::noop(msg), &peers);
        }
    }

    // -------------------------------------------------------------- invariants

    fn violation(&mut self, what: String) {
        trace!(self, "VIOLATION {what}");
        self.violations_total += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                at: self.elapsed(),
                what,
            });
        }
    }

    /// Queue bounds of the nodes the last step touched.
    fn check_touched(&mut self) {
        let touched = core::mem::take(&mut self.touched);
        for &n in &touched {
            if let Some(v) = self.queue_bounds(n) {
                self.violation(v);
            }
        }
        self.touched = touched;
    }

    fn queue_bounds(&self, n: usize) -> Option<String> {
        let node = &self.nodes[n];
        let c = node.comm.as_ref()?;
        let cfg = c.config();
        for fabric_gossip_core::ConnectionEntry {
            pki_id: pki,
            primary,
            secondary,
        } in c.connections()
        {
            for s in [Some(primary), secondary].into_iter().flatten() {
                if let Some(fabric_gossip_core::SendQueueLen {
                    buffered: buf,
                    waiting,
                    in_flight,
                }) = c.send_queue_len(s)
                    && (buf > cfg.send_buffer_size.max(1)
                        || waiting > cfg.max_waiting_sends
                        || in_flight > cfg.write_window)
                {
                    return Some(format!(
                        "n{n}: connection {s} to {pki} holds buffer {buf}/{}, waiting \
                         {waiting}/{}, in flight {in_flight}/{}",
                        cfg.send_buffer_size, cfg.max_waiting_sends, cfg.write_window
                    ));
                }
            }
        }
        for sub in &node.subs {
            let q = c.delivery_queue_len(*sub);
            if q > cfg.subscription_buffer + cfg.recv_buffer_size {
                return Some(format!(
                    "n{n}: subscription {sub} queues {q}, more than {} + {}",
                    cfg.subscription_buffer, cfg.recv_buffer_size
                ));
            }
        }
        let fabric_gossip_core::LiveCounts {
            streams,
            dials,
            ops,
        } = c.live_counts();
        if streams > 2 * cfg.max_connections + cfg.max_pending_handshakes + cfg.max_operations
            || dials > streams + cfg.max_operations + cfg.max_connections
            || ops > cfg.max_operations
        {
            return Some(format!(
                "n{n}: live streams {streams}, dials {dials}, operations {ops} exceed bounds"
            ));
        }
        None
    }

    /// Checks what must hold once the network is quiescent: at most one connection per
    /// pair of PKI-IDs, no crossing secondary left over, both ends agreeing on each
    /// connection, and every node's queues within bounds. Records violations and returns
    /// them as an `Err` with the reproduce line.
    pub fn check_quiescent(&mut self) -> Result<(), String> {
        let mut pairs: BTreeMap<(PkiId, PkiId), usize> = BTreeMap::new();
        let mut found = Vec::new();
        for link in self.links.keys() {
            let Some(l) = self.links.get(link) else {
                continue;
            };
            let (Some(a), Some(b)) = (
                self.established_end(&l.ends[0]),
                self.established_end(&l.ends[1]),
            ) else {
                continue;
            };
            let (pa, pb) = (self.pki_id(a), self.pki_id(b));
            let key = if pa <= pb { (pa, pb) } else { (pb, pa) };
            *pairs.entry(key).or_insert(0) += 1;
        }
        for ((x, y), count) in &pairs {
            if *count > 1 {
                found.push(format!("{count} connections between {x} and {y}"));
            }
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].state != NodeState::Up {
                continue;
            }
            let Some(c) = self.nodes[n].comm.as_ref() else {
                continue;
            };
            for fabric_gossip_core::ConnectionEntry {
                pki_id: pki,
                primary,
                secondary,
            } in c.connections()
            {
                if let Some(s) = secondary {
                    found.push(format!(
                        "n{n}: crossing secondary {s} to {pki} still open when quiescent"
                    ));
                }
                // The remote end of our primary must be open and registered there too.
                let Some(slot) = self.slot(n, primary) else {
                    found.push(format!("n{n}: connection {primary} to {pki} has no stream"));
                    continue;
                };
                let remote_ok = self.links.get(slot.link).is_some_and(|l| {
                    let e = &l.ends[1 - slot.side];
                    match e.owner {
                        Owner::Raw(_) => e.open,
                        Owner::Core { .. } => self.established_end(e).is_some(),
                    }
                });
                if !remote_ok {
                    found.push(format!(
                        "n{n}: connection {primary} to {pki} is not established at the other end"
                    ));
                }
            }
            if let Some(v) = self.queue_bounds(n) {
                found.push(v);
            }
        }
        for f in found {
            self.violation(format!("quiescent: {f}"));
        }
        self.check()
    }
}

/// A data message as workloads and benchmarks send it.
pub fn data_message(seq: u64, data: Bytes) -> GossipMessage {
    GossipMessage {
        nonce: 0,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::DataMsg(DataMessage {
            payload: Some(Payload {
                seq_num: seq,
                data,
                private_data: vec![],
            }),
        })),
    }
}

/// Flips a bit of an Envelope's signature (or of its last byte if it does not decode).
fn mangle_signature(bytes: Bytes) -> Bytes {
    match Envelope::decode(bytes.clone()) {
        Ok(mut env) if !env.signature.is_empty() => {
            let mut sig = env.signature.to_vec();
            if let Some(b) = sig.last_mut() {
                *b ^= 0x01;
            }
            env.signature = Bytes::from(sig);
            Bytes::from(env.encode_to_vec())
        }
        _ => {
            let mut v = bytes.to_vec();
            if let Some(b) = v.last_mut() {
                *b ^= 0x01;
            }
            Bytes::from(v)
        }
    }
}

// ------------------------------------------------------------------ trace formatting

struct Peers<'a>(&'a [RemotePeer]);
impl fmt::Display for Peers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if p.pki_id.as_bytes() == p.endpoint.as_bytes() {
                write!(f, "{}", p.endpoint)?;
            } else {
                write!(f, "{}={}", p.endpoint, p.pki_id)?;
            }
        }
        f.write_str("]")
    }
}

struct Cert<'a>(Option<&'a CertHash>);
impl fmt::Display for Cert<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(h) => Digest8(h).fmt(f),
        }
    }
}

struct Res<'a, T>(&'a Result<T, String>);
impl<T> fmt::Display for Res<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(_) => f.write_str("ok"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}

struct EndFmt<'a>(&'a StreamEnd);
impl fmt::Display for EndFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StreamEnd::Finished => f.write_str("finished"),
            StreamEnd::Error(e) => write!(f, "error: {e}"),
        }
    }
}

struct EnvFmt<'a>(&'a Bytes);
impl fmt::Display for EnvFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = SignedMessage::from_envelope_bytes(self.0.clone())
            .map_or("undecodable", |m| m.message().content_name());
        write!(f, "{kind} {}B {}", self.0.len(), Digest8(self.0))
    }
}

struct ActionFmt<'a>(&'a Action);
impl fmt::Display for ActionFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::Dial { dial, endpoint } => write!(f, "Dial {dial} {endpoint}"),
            Action::Ping { dial } => write!(f, "Ping {dial}"),
            Action::OpenStream { dial, stream } => write!(f, "OpenStream {dial} {stream}"),
            Action::Write { stream, envelope } => write!(f, "Write {stream} {}", EnvFmt(envelope)),
            Action::PauseRead { stream } => write!(f, "PauseRead {stream}"),
            Action::ResumeRead { stream } => write!(f, "ResumeRead {stream}"),
            Action::CloseStream { stream, error } => match error {
                None => write!(f, "CloseStream {stream}"),
                Some(e) => write!(f, "CloseStream {stream} error: {e}"),
            },
            Action::CloseDial { dial } => write!(f, "CloseDial {dial}"),
        }
    }
}

struct EventFmt<'a>(&'a Event);
impl fmt::Display for EventFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::PresumedDead(p) => write!(f, "PresumedDead {p}"),
            Event::IdentitySwitch(p) => write!(f, "IdentitySwitch {p}"),
            Event::DeliveryReady(s) => write!(f, "DeliveryReady {s}"),
            Event::ProbeDone { op, result } => match result {
                Ok(()) => write!(f, "ProbeDone {op} ok"),
                Err(e) => write!(f, "ProbeDone {op} error: {e}"),
            },
            Event::HandshakeDone { op, result } => match result {
                Ok(info) => write!(f, "HandshakeDone {op} ok {}", info.id),
                Err(e) => write!(f, "HandshakeDone {op} {}: {e}", e.label()),
            },
            Event::SendWithAckDone { op, results } => {
                write!(f, "SendWithAckDone {op} [")?;
                for (i, r) in results.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &r.result {
                        Ok(()) => write!(f, "{} ok", r.peer)?,
                        Err(e) => write!(f, "{} error: {e}", r.peer)?,
                    }
                }
                f.write_str("]")
            }
            Event::Connected {
                conn,
                info,
                inbound,
            } => write!(
                f,
                "Connected {conn} {} {}",
                info.id,
                if *inbound { "inbound" } else { "outbound" }
            ),
            Event::Disconnected {
                conn,
                pki_id,
                reason,
            } => write!(f, "Disconnected {conn} {pki_id} {reason}"),
            Event::HandshakeFailed {
                stream,
                remote,
                inbound,
                error,
            } => write!(
                f,
                "HandshakeFailed {stream} {remote} {} {}: {error}",
                if *inbound { "inbound" } else { "outbound" },
                error.label()
            ),
            Event::Stopped => f.write_str("Stopped"),
        }
    }
}
