//! [`Harness`] on the deterministic simulator.

use crate::{
    Delivery, DiscoveryEvent, DiscoveryStats, Envelope, Harness, MemberInfo, MemberSpec, NodeId,
    OpOutcome, OpRef, OpRequest, Outcome, Pass, RawRef, SubRef,
};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{
    Acceptor, CertHash, Error, Event, OpId, PkiId, RemotePeer, SignedMessage, Stats, StreamEnd,
    StreamId,
};
use fabric_gossip_discovery::Discovery;
use fabric_gossip_sim::{Fault, NodeSpec, Sim, SimConfig, TraceMode};

/// The seeds a simulator test runs a scenario on: `SIM_SEED=N` alone (to reproduce a
/// failure), else `1..=K` for `SIM_SCENARIO_SEEDS=K`, else `1..=default_count`. Every
/// binary that sweeps scenarios over seeds reads the same variables, so one reproduce
/// line works for all of them.
pub fn scenario_seeds(default_count: u64) -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let k = std::env::var("SIM_SCENARIO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    (1..=k).collect()
}

/// Runs `scenario` on a fresh [`SimHarness`] for each of [`scenario_seeds`], each run
/// followed by [`SimHarness::finish`] (the quiescent invariant checks). Panics on the
/// first failure with the scenario's error, the trace's last lines and the reproduce
/// line; a skip is a failure too, since the simulator supports everything a scenario
/// can ask for.
pub fn run_on_sim_seeds(
    name: &str,
    default_count: u64,
    mut scenario: impl FnMut(&mut SimHarness) -> Outcome,
) {
    for seed in scenario_seeds(default_count) {
        let mut h = SimHarness::new(seed);
        let result = scenario(&mut h).and_then(|pass| h.finish().map(|()| pass));
        match result {
            Ok(Pass::Done) => {}
            Ok(Pass::Skipped(what)) => panic!("{name}: the simulator must support {what}"),
            Err(e) => panic!(
                "{name} failed on {}:\n{e}\n--- last trace lines ---\n{}\n{}",
                h.name(),
                h.trace_tail(60),
                h.sim().reproduce_hint()
            ),
        }
    }
}

/// The scenario harness on [`Sim`]: virtual time, one seed, every invariant checked after
/// every step. [`SimHarness::finish`] lets the network go quiet and runs the quiescent
/// checks, so every scenario also checks the simulator's invariants.
#[derive(Debug)]
pub struct SimHarness {
    sim: Sim,
    ops: Vec<(NodeId, OpId)>,
}

impl SimHarness {
    /// A harness on a network seeded with `seed`, keeping the full trace.
    pub fn new(seed: u64) -> Self {
        let mut cfg = SimConfig::seeded(seed);
        cfg.trace = TraceMode::Full;
        cfg.reproduce =
            "SIM_SEED={seed} cargo test -p fabric-gossip-tests --test suite sim_scenarios::".into();
        Self::with_config(cfg)
    }

    /// A harness on a network with these settings.
    pub fn with_config(cfg: SimConfig) -> Self {
        SimHarness {
            sim: Sim::new(cfg),
            ops: Vec::new(),
        }
    }

    /// The simulator, for what the harness does not cover (faults, traces, counters).
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The simulator, mutably.
    pub fn sim_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }

    /// Runs until the network is idle (at most 10 virtual minutes), then checks every
    /// invariant, quiescent ones included. `Err` holds the violations and the reproduce
    /// line.
    pub fn finish(&mut self) -> Result<(), String> {
        if !self.sim.run_until_idle(Duration::from_secs(600)) {
            return Err(format!(
                "network not idle after 10 virtual minutes\n{}",
                self.sim.reproduce_hint()
            ));
        }
        self.sim.check_quiescent()
    }

    /// The last `n` trace lines, for failure messages.
    pub fn trace_tail(&self, n: usize) -> String {
        let lines = self.sim.trace().lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Harness for SimHarness {
    fn name(&self) -> String {
        format!("sim(seed {})", self.sim.seed())
    }

    fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, String> {
        self.sim.add_node(spec).map_err(|e| e.to_string())
    }

    fn peer(&self, n: NodeId) -> RemotePeer {
        self.sim.remote_peer(n)
    }

    fn subscribe(&mut self, n: NodeId, acceptor: Acceptor) -> Result<SubRef, Error> {
        let sub = self.sim.subscribe(n, acceptor)?;
        Ok(SubRef(sub.index() as usize))
    }

    fn send(&mut self, n: NodeId, msg: &SignedMessage, to: &[RemotePeer]) -> Result<(), Error> {
        self.sim.send(n, msg, to)
    }

    fn start_op(&mut self, n: NodeId, op: OpRequest) -> Result<OpRef, Error> {
        let op = match op {
            OpRequest::Probe(to) => self.sim.probe(n, &to),
            OpRequest::Handshake(to) => self.sim.handshake(n, &to),
            OpRequest::SendWithAck {
                msg,
                timeout,
                min_ack,
                to,
            } => self.sim.send_with_ack(n, msg, timeout, min_ack, &to),
        }?;
        self.ops.push((n, op));
        Ok(OpRef(self.ops.len() as u64 - 1))
    }

    fn respond(&mut self, n: NodeId, delivery: usize, msg: GossipMessage) -> Result<(), Error> {
        let (conn, inc) = self.delivery_conn(n, delivery)?;
        if inc != self.sim.incarnation(n) {
            return Err(Error::ConnectionClosed);
        }
        self.sim.respond(n, conn, msg)
    }

    fn ack(&mut self, n: NodeId, delivery: usize, error: Option<&str>) -> Result<(), Error> {
        let d = self
            .sim
            .deliveries(n)
            .get(delivery)
            .ok_or(Error::UnknownHandle)?;
        let (conn, nonce, inc) = (d.msg.conn, d.msg.message.nonce, d.incarnation);
        if inc != self.sim.incarnation(n) {
            return Err(Error::ConnectionClosed);
        }
        self.sim.ack(n, conn, nonce, error)
    }

    fn close_conn(&mut self, n: NodeId, pki: &PkiId) {
        let _ = self.sim.close_conn(n, pki);
    }

    fn revalidate_identities(&mut self, n: NodeId) -> usize {
        self.sim.revalidate_identities(n).unwrap_or(0)
    }

    fn stop_node(&mut self, n: NodeId) {
        self.sim.stop_node(n);
    }

    fn restart_node(&mut self, n: NodeId, new_identity: bool) -> Result<(), String> {
        self.sim.stop_node(n);
        self.sim.restart(n, new_identity).map_err(|e| e.to_string())
    }

    fn inject(&mut self, fault: Fault) -> Result<(), String> {
        self.sim.apply(fault);
        Ok(())
    }

    fn run_until(&mut self, within: Duration, cond: &mut dyn FnMut(&Self) -> bool) -> bool {
        let deadline = self.sim.now() + within;
        loop {
            if cond(self) {
                return true;
            }
            if !self.sim.step_until(deadline) {
                return cond(self);
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    fn deliveries(&self, n: NodeId) -> Vec<Delivery> {
        self.sim
            .deliveries(n)
            .iter()
            .map(|d| Delivery {
                sub: SubRef(d.sub.index() as usize),
                msg: d.msg.clone(),
            })
            .collect()
    }

    fn delivery_count(&self, n: NodeId) -> usize {
        self.sim.deliveries(n).len()
    }

    fn events(&self, n: NodeId) -> Vec<Event> {
        self.sim.events(n).iter().map(|(_, e)| e.clone()).collect()
    }

    fn op_result(&self, op: OpRef) -> Option<OpOutcome> {
        let (n, id) = *self.ops.get(usize::try_from(op.0).ok()?)?;
        match self.sim.op_result(n, id)? {
            Event::ProbeDone { result, .. } => Some(OpOutcome::Probe(result.clone())),
            Event::HandshakeDone { result, .. } => Some(OpOutcome::Handshake(result.clone())),
            Event::SendWithAckDone { results, .. } => Some(OpOutcome::SendWithAck(results.clone())),
            _ => None,
        }
    }

    fn stats(&self, n: NodeId) -> Stats {
        self.sim.stats(n).cloned().unwrap_or_default()
    }

    fn connections(&self, n: NodeId) -> Vec<fabric_gossip_core::ConnectionEntry> {
        self.sim
            .comm(n)
            .filter(|c| !c.is_stopped())
            .map(|c| c.connections())
            .unwrap_or_default()
    }

    fn supports_membership(&self) -> bool {
        true
    }

    fn add_member(&mut self, spec: MemberSpec) -> Result<NodeId, String> {
        let node = member_node(&self.sim, spec)?;
        self.add_node(node)
    }

    fn members(&self, n: NodeId) -> Vec<MemberInfo> {
        self.sim
            .layer::<Discovery>(n)
            .map(Discovery::members)
            .unwrap_or_default()
    }

    fn dead_members(&self, n: NodeId) -> Vec<MemberInfo> {
        self.sim
            .layer::<Discovery>(n)
            .map(Discovery::dead_members)
            .unwrap_or_default()
    }

    fn member_events(&self, n: NodeId) -> Vec<DiscoveryEvent> {
        self.sim
            .layer_events(n)
            .iter()
            .filter_map(|r| r.event.downcast_ref::<DiscoveryEvent>().cloned())
            .collect()
    }

    fn member_stats(&self, n: NodeId) -> Option<DiscoveryStats> {
        self.sim.layer::<Discovery>(n).map(|d| d.stats().clone())
    }

    fn member_envelope(&self, n: NodeId, pki: &PkiId) -> Option<Envelope> {
        self.sim
            .layer::<Discovery>(n)
            .and_then(|d| d.member_envelope(pki).cloned())
    }

    fn connect_anchor(&mut self, n: NodeId, to: NodeId) -> Result<(), String> {
        let endpoint = self.sim.endpoint(to).to_string();
        let now = self.sim.now();
        self.sim
            .with_layer::<Discovery, _>(n, |d, _comm| d.connect_anchor(now, endpoint))
            .ok_or_else(|| format!("node {n} runs no membership layer"))
            .and_then(crate::anchor_dialled)
    }

    fn raw_open(&mut self, n: NodeId, client_cert: Option<CertHash>) -> Option<RawRef> {
        Some(RawRef(self.sim.raw_connect(n, client_cert)))
    }

    fn raw_send(&mut self, raw: RawRef, bytes: Bytes) {
        self.sim.raw_send(raw.0, bytes);
    }

    fn raw_received(&self, raw: RawRef) -> Vec<Bytes> {
        self.sim.raw_received(raw.0).to_vec()
    }

    fn raw_ended(&self, raw: RawRef) -> Option<StreamEnd> {
        self.sim.raw_ended(raw.0).cloned()
    }
}

/// The simulator node of a member: `spec.node` hosting Fabric's membership layer
/// ([`Discovery`]), made anew at every start of the node's process with the seed the
/// simulator draws for it, bootstrapping from the endpoints of `spec.bootstrap` in `sim`
/// (nodes not added yet included: they get the next endpoints in order).
pub fn member_node(sim: &Sim, spec: MemberSpec) -> Result<NodeSpec, String> {
    let boot: Vec<String> = spec
        .bootstrap
        .iter()
        .map(|&b| {
            if b < sim.node_count() {
                sim.endpoint(b).to_string()
            } else {
                // A node not added yet: the endpoint `Sim::add_node` will give it.
                format!("127.0.0.1:{}", 7051 + b)
            }
        })
        .collect();
    // Checked once here, so the factory below cannot fail.
    spec.discovery_config("127.0.0.1:1")
        .with_bootstrap(boot.clone())
        .validate()
        .map_err(|e| e.to_string())?;
    Ok(spec.node.clone().layer(move |ctx| {
        let cfg = spec
            .discovery_config(&ctx.endpoint)
            .with_bootstrap(boot.clone())
            .with_seed(ctx.seed);
        Discovery::new(cfg).expect("validated above")
    }))
}

impl SimHarness {
    fn delivery_conn(&self, n: NodeId, delivery: usize) -> Result<(StreamId, u32), Error> {
        let d = self
            .sim
            .deliveries(n)
            .get(delivery)
            .ok_or(Error::UnknownHandle)?;
        Ok((d.msg.conn, d.incarnation))
    }
}
