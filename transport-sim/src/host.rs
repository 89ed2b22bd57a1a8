//! Hosting a core per node: starting and restarting its process, feeding it one input at
//! a time, and carrying out what it asks for (actions to the network, events and
//! deliveries to the node's simulated application and to the observer).

use crate::fault::ReaderMode;
use crate::layer::{LayerEvent, LayerRecord, SimStack, StartError};
use crate::network::{DialSlot, StreamSlot};
use crate::node::{Delivered, EventRecord, NodeSpec, NodeState, SimComm, TlsMode, made_up_cert};
use crate::observe::Observation;
use crate::queue::Ev;
use crate::sim::Sim;
use crate::trace::{ActionFmt, EventFmt, trace};
use core::time::Duration;
use fabric_gossip_core::proto::gossip::gossip_message;
use fabric_gossip_core::{
    Action, Comm, Config, DialId, Event, Instant, OpId, PkiId, ReceivedMessage, Security, Stack,
    StackOutput, Stats, StreamEnd, StreamId, SubscriptionId, TlsHashes,
};
use std::collections::BTreeMap;

/// Whether `security` signs one message twice with two different signatures, as ECDSA with
/// random nonces does: such a node would make the run differ from its seed's trace. A
/// provider that cannot sign is left to the core, which refuses it at start.
fn signs_at_random(security: &dyn Security) -> bool {
    const PROBE: &[u8] = b"fabric-gossip-sim: does this provider sign deterministically?";
    matches!(
        (security.sign(PROBE), security.sign(PROBE)),
        (Ok(first), Ok(second)) if first != second
    )
}

pub(crate) struct Node {
    pub(crate) endpoint: String,
    pub(crate) spec: NodeSpec,
    pub(crate) state: NodeState,
    /// The node's process: its core and the layer above it (none unless its spec has one).
    pub(crate) stack: Option<SimStack>,
    pub(crate) incarnation: u32,
    pub(crate) booted: bool,
    pub(crate) identity_gen: u32,
    pub(crate) first_pki: PkiId,
    pub(crate) certs: Option<TlsHashes>,
    pub(crate) subs: Vec<SubscriptionId>,
    /// Subscriptions that reported `DeliveryReady` and were not emptied yet.
    pub(crate) ready: Vec<SubscriptionId>,
    pub(crate) streams: Vec<Option<StreamSlot>>,
    pub(crate) dials: Vec<Option<DialSlot>>,
    pub(crate) wake_at: Option<Instant>,
    pub(crate) reader_tick: bool,
    pub(crate) deliveries: Vec<Delivered>,
    pub(crate) events: Vec<EventRecord>,
    pub(crate) layer_events: Vec<LayerRecord>,
    pub(crate) ops_done: BTreeMap<OpId, usize>,
    pub(crate) delivered_total: u64,
    pub(crate) records_dropped: u64,
    /// Counters of the node's earlier processes (a crashed process's are kept).
    pub(crate) retired: Stats,
    pub(crate) workload_seq: u64,
    /// How far the node's wall clock is from the virtual clock, in nanoseconds (positive:
    /// ahead): the sum of its [`Fault::StepClock`](crate::Fault::StepClock)s.
    pub(crate) wall_step: i128,
    /// Whether the node's clock was ever stepped: a process started after steps that sum
    /// to zero is told too, since a provider its factory shares across processes (an
    /// `MspSecurity` clone) still holds the offset of the last step it was told.
    pub(crate) wall_stepped: bool,
}

impl Node {
    /// The node's core, if its process exists.
    pub(crate) fn core(&self) -> Option<&SimComm> {
        self.stack.as_ref().map(Stack::comm)
    }

    /// The node's core, mutably.
    pub(crate) fn core_mut(&mut self) -> Option<&mut SimComm> {
        self.stack.as_mut().map(Stack::comm_mut)
    }

    /// What the node's wall clock reads when the virtual clock reads `now`.
    pub(crate) fn wall_clock(&self, now: Instant) -> Instant {
        now.shifted(self.wall_step)
    }

    /// The earlier of the core's and the layer's deadlines ([`Stack::poll_timeout`]).
    pub(crate) fn deadline(&mut self) -> Option<Instant> {
        self.stack.as_mut()?.poll_timeout()
    }
}

/// Why a core input may legitimately produce a PresumedDead.
pub(crate) type Cause = Option<&'static str>;

impl Sim {
    /// Starts (or restarts) node `id`'s process.
    pub(crate) fn boot(&mut self, id: usize, new_identity: bool) -> Result<(), StartError> {
        let seed = self.rng.u64();
        let now = self.now;
        let node = &mut self.nodes[id];
        if new_identity {
            node.identity_gen += 1;
        }
        let generation = node.identity_gen;
        let security = node.spec.make_security(&node.endpoint, generation);
        if !node.spec.random_signatures && signs_at_random(&*security) {
            return Err(StartError::RandomSignatures {
                endpoint: node.endpoint.clone(),
            });
        }
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
        if node.wall_stepped {
            // A new process of a machine whose clock was stepped: its provider learns the
            // wall clock before it judges anything, its own identity first (the virtual
            // clock's own time when the steps cancel out while the node was down).
            security.wall_clock(now, node.wall_clock(now));
        }
        let comm = Comm::new(config, security, now).map_err(StartError::Identity)?;
        let incarnation = node.incarnation + u32::from(node.booted);
        let has_layer = node.spec.layer.is_some();
        // Made before the node changes, so that a factory's refusal leaves it as it was
        // (not running, same incarnation); the core made above is dropped unstarted.
        let layer = self
            .make_layer(id, incarnation)
            .map_err(StartError::Layer)?;
        self.hosts_layers |= has_layer;
        let node = &mut self.nodes[id];
        node.incarnation = incarnation;
        node.booted = true;
        // Starts the layer: what it does (subscribe, dial) waits in the core's output.
        node.stack = Some(Stack::new(comm, layer));
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
        if has_layer {
            // What the layer did at start (only a layer does anything here, so nodes
            // without one keep their traces).
            self.pump(id);
        }
        Ok(())
    }

    pub(crate) fn node_live(&self, node: usize, inc: u32) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| n.incarnation == inc && n.stack.is_some())
    }

    pub(crate) fn dial_live(&self, node: usize, inc: u32, dial: DialId) -> bool {
        self.node_live(node, inc)
            && self
                .dial_slot(node, dial)
                .is_some_and(|d| d.generation == dial.generation())
    }

    /// Feeds one input to node `n`'s core and carries out everything it produces.
    pub(crate) fn input(&mut self, n: usize, cause: Cause, f: impl FnOnce(&mut SimComm, Instant)) {
        let now = self.now;
        let Some(comm) = self.nodes.get_mut(n).and_then(|x| x.core_mut()) else {
            return;
        };
        self.cause = cause;
        f(comm, now);
        self.pump(n);
        self.cause = None;
    }

    /// Drains node `n`'s actions, events and (per its reader mode) deliveries until the
    /// core has nothing more to say, then re-arms its wake-up.
    pub(crate) fn pump(&mut self, n: usize) {
        // A node without a layer is its core alone: the stack would only pass the core's
        // outputs through (and ask the core for its deadline at the end of every drain), so
        // the core is drained directly, in the same order, and asked once at the end.
        let hosted = self.nodes[n]
            .stack
            .as_ref()
            .is_some_and(|s| s.layer().is_some());
        // A hosted stack's deadline as its last drain ended it: nothing happens between
        // that drain and the end of the pump, so it is what `Node::deadline` would compute.
        let mut deadline = None;
        loop {
            // A drain ends with nothing pending: carrying out an action or an event never
            // feeds this node's core without pumping it then and there. Only taking
            // deliveries (which may resume reading, or ack) calls for another drain.
            if hosted {
                self.drain_stack(n, &mut deadline);
            } else {
                self.drain_core(n);
            }
            let mut progress = false;
            // Only subscriptions that said DeliveryReady have anything: an eager reader
            // empties them, so the core says it again when the next message comes.
            while self.nodes[n].state == NodeState::Up
                && self.nodes[n].spec.reader == ReaderMode::Eager
                && let Some(sub) = self.nodes[n].ready.pop()
            {
                while let Some(m) = self.nodes[n]
                    .core_mut()
                    .and_then(|c| c.poll_delivery_boxed(sub))
                {
                    progress = true;
                    self.on_delivery(n, sub, m);
                }
            }
            if !progress {
                break;
            }
        }
        if !hosted {
            deadline = self.nodes[n].core_mut().and_then(Comm::poll_timeout);
        }
        self.wake_at(n, deadline);
        if self.cfg.check_invariants && self.touched.last() != Some(&n) {
            self.touched.push(n);
        }
    }

    /// One drain of a hosted stack's output (actions, events, the layer's events) until
    /// its time-out, which goes to `deadline`.
    fn drain_stack(&mut self, n: usize, deadline: &mut Option<Instant>) {
        *deadline = None;
        while let Some(out) = self.nodes[n].stack.as_mut().map(Stack::poll_output) {
            match out {
                StackOutput::Action(a) => self.on_action(n, a),
                StackOutput::Event(e) => self.on_event(n, e),
                StackOutput::Layer(e) => self.on_layer_event(n, e),
                StackOutput::Timeout(t) => {
                    *deadline = t;
                    break;
                }
            }
        }
    }

    /// One drain of a bare core: actions before events, re-checked after each one, the
    /// order of `Comm::poll_output`.
    fn drain_core(&mut self, n: usize) {
        while let Some(c) = self.nodes[n].core_mut() {
            if let Some(a) = c.poll_action() {
                self.on_action(n, a);
            } else if let Some(e) = c.poll_event() {
                self.on_event(n, e);
            } else {
                break;
            }
        }
    }

    /// Carries out work that inputs left behind: write confirmations and reads resumed.
    pub(crate) fn drain_work(&mut self) {
        loop {
            if let Some((n, stream)) = self.sent.pop() {
                self.confirm(n, stream);
                continue;
            }
            if let Some((link, dir)) = self.feed.pop_front() {
                self.feed_held(link, dir);
                continue;
            }
            break;
        }
    }

    /// A write of node `n` on `stream` confirmed: its core gets the credit back.
    pub(crate) fn confirm(&mut self, n: usize, stream: StreamId) {
        trace!(self, "n{n} < sent {stream} (window opened)");
        self.touch_stream(n, stream);
        self.input(n, None, |c, now| {
            let _ = c.handle_sent(now, stream, 1);
        });
    }

    pub(crate) fn reschedule_wake(&mut self, n: usize) {
        let deadline = self.nodes[n].deadline();
        self.wake_at(n, deadline);
    }

    /// Makes sure node `n` is woken at `deadline` (its stack's next one), unless an
    /// earlier wake-up is already queued.
    fn wake_at(&mut self, n: usize, deadline: Option<Instant>) {
        let Some(mut t) = deadline else {
            return;
        };
        if !self.cfg.timer_lag.is_zero() {
            t = t + self.rng.duration(Duration::ZERO, self.cfg.timer_lag);
        }
        // As the queue schedules it: a deadline already past wakes the node now. Kept
        // unclamped, a wake-up in the past was queued at `now`, never matched the time
        // kept here, and no later wake-up was ever queued.
        let t = t.max(self.now);
        let node = &mut self.nodes[n];
        if node.wake_at.is_none_or(|w| t < w) {
            let inc = node.incarnation;
            node.wake_at = Some(t);
            self.schedule(t, Ev::Wake { node: n, inc });
        }
    }

    pub(crate) fn take_one_each(&mut self, n: usize) {
        for i in 0..self.nodes[n].subs.len() {
            let sub = self.nodes[n].subs[i];
            if let Some(m) = self.nodes[n]
                .core_mut()
                .and_then(|c| c.poll_delivery_boxed(sub))
            {
                self.on_delivery(n, sub, m);
            }
        }
    }

    pub(crate) fn has_queued_deliveries(&self, n: usize) -> bool {
        let node = &self.nodes[n];
        node.core()
            .is_some_and(|c| node.subs.iter().any(|s| c.delivery_queue_len(*s) > 0))
    }

    // -------------------------------------------------------------- outputs

    pub(crate) fn on_action(&mut self, n: usize, a: Action) {
        trace!(self, "n{n} > {}", ActionFmt(&a));
        if let Action::Write { stream, .. }
        | Action::PauseRead { stream }
        | Action::ResumeRead { stream } = &a
        {
            self.touch_stream(n, *stream);
        }
        match a {
            Action::Dial { dial, endpoint } => self.dial(n, dial, &endpoint),
            Action::Ping { dial } => self.ping(n, dial),
            Action::OpenStream { dial, stream } => self.open_stream(n, dial, stream),
            Action::Write {
                stream,
                envelope,
                kind,
            } => self.write(n, stream, envelope, kind),
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
                    if self.cfg.resume_lag.is_zero() {
                        self.feed.push_back((s.link, 1 - s.side));
                    } else {
                        let lag = self.rng.duration(Duration::ZERO, self.cfg.resume_lag);
                        let dir = u8::from(s.side == 0);
                        self.schedule(self.now + lag, Ev::Feed { link: s.link, dir });
                    }
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

    pub(crate) fn on_event(&mut self, n: usize, e: Event) {
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
        let incarnation = self.nodes[n].incarnation;
        self.observe(
            n,
            Observation::Event {
                at: self.now,
                incarnation,
                event: &e,
            },
        );
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

    pub(crate) fn on_layer_event(&mut self, n: usize, e: LayerEvent) {
        trace!(self, "n{n} L {e:?}");
        let incarnation = self.nodes[n].incarnation;
        let at = self.now;
        self.observe(
            n,
            Observation::Layer {
                at,
                incarnation,
                event: &e,
            },
        );
        let node = &mut self.nodes[n];
        if node.layer_events.len() < self.cfg.record_limit {
            node.layer_events.push(LayerRecord {
                at,
                incarnation,
                event: e,
            });
        } else {
            node.records_dropped += 1;
        }
    }

    /// One delivery taken by node `n`'s application (boxed as the core decoded it: it is
    /// moved out only into a record that is kept or observed).
    pub(crate) fn on_delivery(&mut self, n: usize, sub: SubscriptionId, m: Box<ReceivedMessage>) {
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
            && let Some(c) = self.nodes[n].core_mut()
        {
            let _ = c.ack(self.now, m.conn, m.message.nonce, None);
        }
        if self.observer.is_none() && self.nodes[n].deliveries.len() >= self.cfg.record_limit {
            // Nobody looks and nothing is kept (a long run): no record to build.
            self.nodes[n].records_dropped += 1;
            return;
        }
        let delivered = Delivered {
            at: self.now,
            incarnation: self.nodes[n].incarnation,
            sub,
            msg: *m,
        };
        self.observe(n, Observation::Delivery(&delivered));
        let node = &mut self.nodes[n];
        if node.deliveries.len() < self.cfg.record_limit {
            node.deliveries.push(delivered);
        } else {
            node.records_dropped += 1;
        }
    }

    /// Counters of node `n`'s current process go to its retired totals (before a crash or
    /// restart replaces the process).
    pub(crate) fn retire(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if let Some(c) = node.stack.take() {
            node.retired.merge(c.comm().stats());
            // A stopped process's core is dropped here; keep the node's state as it was.
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{NodeSpec, START, Sim, SimConfig, StartError};
    use bytes::Bytes;
    use fabric_gossip_core::{Instant, PkiId, Security, SecurityError, TestOnlyHmacSecurity};
    use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// A node's deadline is its core's (here the retry of a refused dial); a node whose
    /// process is gone has none.
    #[test]
    fn a_nodes_deadline_is_its_cores_and_none_once_its_process_is_gone() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        sim.add_nodes(2);
        sim.crash(1);
        let m = fabric_gossip_core::SignedMessage::noop(crate::data_message(1, "x"));
        sim.send_to(0, &m, &[1]).unwrap();
        sim.run_for(core::time::Duration::from_millis(10));
        let core = sim.nodes[0].core_mut().and_then(|c| c.poll_timeout());
        assert!(core.is_some_and(|t| t > START), "{core:?}");
        assert_eq!(sim.nodes[0].deadline(), core);
        sim.crash(0);
        assert_eq!(sim.nodes[0].deadline(), None);
    }

    /// A pump records its node for the checks after the step, once however often it
    /// pumps, and only when invariants are checked.
    #[test]
    fn a_pump_records_its_node_for_the_steps_checks_once() {
        for check in [true, false] {
            let mut cfg = SimConfig::seeded(1);
            cfg.check_invariants = check;
            let mut sim = Sim::new(cfg);
            sim.add_nodes(2);
            sim.touched.clear();
            sim.pump(1);
            sim.pump(1);
            let want: &[usize] = if check { &[1] } else { &[] };
            assert_eq!(sim.touched, want, "check_invariants {check}");
        }
    }

    /// Starting a node with a layer turns on, for good, the periodic sweep of every queue
    /// (a layer sends inside its node, unseen by the step's bookkeeping).
    #[test]
    fn a_node_with_a_layer_turns_the_queue_sweep_on() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        sim.add_nodes(1);
        assert!(!sim.hosts_layers);
        let member = NodeSpec::new().try_layer(|ctx| {
            Discovery::new(DiscoveryConfig::new(ctx.endpoint.clone()).with_seed(ctx.seed))
        });
        sim.add_node(member).unwrap();
        assert!(sim.hosts_layers);
        sim.add_nodes(1);
        sim.restart(0, false).unwrap();
        assert!(sim.hosts_layers);
    }

    /// Fabric's test provider, watched: with `counting`, each signature carries a count of
    /// those made before, as ECDSA with random nonces gives a new signature each time; every
    /// report of the wall clock it is given is kept in `told`.
    struct Watched {
        inner: TestOnlyHmacSecurity,
        counting: bool,
        signed: AtomicU64,
        told: Arc<Mutex<Vec<(Instant, Instant)>>>,
    }

    impl Watched {
        fn new(endpoint: &str) -> Self {
            Watched {
                inner: TestOnlyHmacSecurity::new(endpoint),
                counting: false,
                signed: AtomicU64::new(0),
                told: Arc::default(),
            }
        }

        /// A provider that signs one message differently each time.
        fn counting(endpoint: &str) -> Box<dyn Security> {
            Box::new(Watched {
                counting: true,
                ..Watched::new(endpoint)
            })
        }
    }

    impl Security for Watched {
        fn own_identity(&self) -> Bytes {
            self.inner.own_identity()
        }
        fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
            let mut sig = self.inner.sign(msg)?.to_vec();
            if self.counting {
                sig.extend(self.signed.fetch_add(1, Ordering::Relaxed).to_be_bytes());
            }
            Ok(sig.into())
        }
        fn verify(&self, identity: &[u8], sig: &[u8], msg: &[u8]) -> Result<(), SecurityError> {
            let count = if self.counting { 8 } else { 0 };
            let plain = sig
                .get(..sig.len().saturating_sub(count))
                .unwrap_or_default();
            self.inner.verify(identity, plain, msg)
        }
        fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError> {
            self.inner.validate_identity(identity, now)
        }
        fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
            self.inner.expiration(identity)
        }
        fn pki_id_of(&self, identity: &[u8]) -> PkiId {
            self.inner.pki_id_of(identity)
        }
        fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
            self.inner.organization_of(identity)
        }
        fn wall_clock(&self, now: Instant, wall: Instant) {
            self.told.lock().unwrap().push((now, wall));
        }
    }

    /// A clock step tells the node's provider where the wall clock now is, the sum of the
    /// node's steps from the virtual clock; a process started later (even one that was
    /// down when the clock moved) is told at start, before its own identity is judged; a
    /// node never stepped is never told, and a step of a node that does not exist is
    /// ignored.
    #[test]
    fn a_clock_step_is_told_to_the_provider_and_to_each_later_process() {
        use crate::Fault;
        use core::time::Duration;
        let told = Arc::new(Mutex::new(Vec::new()));
        let log = told.clone();
        let mut sim = Sim::new(SimConfig {
            trace: crate::TraceMode::Full,
            ..SimConfig::seeded(1)
        });
        let n = sim
            .add_node(NodeSpec::new().security(move |ep, _| {
                Box::new(Watched {
                    told: log.clone(),
                    ..Watched::new(ep)
                })
            }))
            .unwrap();
        let hour = Duration::from_secs(3600);
        let step = |ahead, by| Fault::StepClock { node: n, ahead, by };
        sim.restart(n, false).unwrap();
        assert_eq!(*told.lock().unwrap(), [], "told of a clock never stepped");

        let t0 = sim.now();
        sim.apply(step(true, 2 * hour));
        sim.run_for(Duration::from_secs(1));
        let t1 = sim.now();
        sim.apply(step(false, 3 * hour));
        sim.crash(n);
        sim.apply(step(false, hour));
        sim.run_for(Duration::from_secs(1));
        let t2 = sim.now();
        sim.restart(n, false).unwrap();
        // Steps that cancel out while the node is down: its next process is still told,
        // that the wall clock is the virtual clock again.
        sim.crash(n);
        sim.apply(step(true, 2 * hour));
        sim.run_for(Duration::from_secs(1));
        let t3 = sim.now();
        sim.restart(n, false).unwrap();
        sim.apply(Fault::StepClock {
            node: n + 1,
            ahead: true,
            by: hour,
        });
        assert_eq!(
            *told.lock().unwrap(),
            [
                (t0, t0 + 2 * hour),
                (t1, t1 - hour),
                (t2, t2 - 2 * hour),
                (t3, t3)
            ]
        );
        assert!(
            sim.trace()
                .lines()
                .iter()
                .any(|l| l.ends_with("* clock:1=+3600s ignored: no such node")),
            "{}",
            sim.trace().text()
        );
    }

    /// A node whose own identity its provider refuses does not start, and says why once
    /// (it had read "own identity refused: identity refused: …", an operator's trial).
    #[test]
    fn a_refused_own_identity_is_said_once() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        let refused = NodeSpec::new()
            .security(|ep, _| Box::new(TestOnlyHmacSecurity::new(ep).rejecting(ep.to_owned())));
        let err = sim.add_node(refused).unwrap_err();
        assert!(matches!(err, StartError::Identity(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("own identity refused: "), "{text}");
        assert_eq!(text.matches("refused").count(), 2, "{text}");
        assert!(
            !text.contains("identity refused: identity refused"),
            "{text}"
        );
    }

    /// A provider that signs one message two ways would make every replay of a seed differ:
    /// the node does not start (not added; a restart leaves it down) unless the spec allows
    /// it, and then it runs as any other.
    #[test]
    fn a_provider_signing_at_random_is_refused_unless_allowed() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        let random = NodeSpec::new().security(|ep, _| Watched::counting(ep));
        let err = sim.add_node(random.clone()).unwrap_err();
        assert!(
            matches!(&err, StartError::RandomSignatures { endpoint } if endpoint == "127.0.0.1:7051"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("with_deterministic_signatures"),
            "{err}"
        );
        assert!(sim.nodes.is_empty());

        let allowed = random.random_signatures(true);
        let a = sim.add_node(allowed.clone()).unwrap();
        let b = sim.add_node(allowed).unwrap();
        let m = fabric_gossip_core::SignedMessage::noop(crate::data_message(1, "x"));
        sim.send_to(a, &m, &[b]).unwrap();
        let deadline = sim.now() + core::time::Duration::from_secs(1);
        assert!(sim.run_until(deadline, |s| !s.deliveries(b).is_empty()));

        // Generation 1 signs at random, generation 0 did not: the restart is refused.
        let c = sim
            .add_node(NodeSpec::new().security(|ep, generation| {
                if generation == 0 {
                    Box::new(TestOnlyHmacSecurity::new(ep))
                } else {
                    Watched::counting(ep)
                }
            }))
            .unwrap();
        let err = sim.restart(c, true).unwrap_err();
        assert!(
            matches!(err, StartError::RandomSignatures { .. }),
            "{err:?}"
        );
        assert_ne!(sim.state(c), Some(crate::NodeState::Up));
    }
}
