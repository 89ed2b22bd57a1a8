//! Seed sweeps: many random runs, each checked for every invariant.
//!
//! * `crossing_dials`: 2 to 10 nodes all dial each other at (nearly) the same time, with a
//!   random latency and jitter; they must converge to exactly one connection per pair,
//!   deliver every message, and presume nobody dead.
//! * `random_faults`: 2 to 6 nodes under a random workload and a random fault schedule
//!   (partitions, crashes, restarts with new identities, resets, corruption, silent and
//!   lying peers, slow readers); every invariant must hold after every step and once the
//!   network is quiet again, and then, with every fault undone, every node must still
//!   reach every other.
//!
//! The loop, the seeds, the reproduce line and the determinism check are
//! [`fabric_gossip_sim::Sweep`]: by default 10,000 seeds in a release build
//! (`cargo test -p fabric-gossip-tests --release --test sweeps`) and 500 in a debug
//! build; `SIM_SEEDS=K` runs `0..K`, `SIM_SEED=N` runs seed `N` alone and prints its whole
//! trace on failure. Every 500th seed also runs twice and must give the same trace hash.

use fabric_gossip_core::{Event, SignedMessage};
use fabric_gossip_sim::{
    Fault, NodeSpec, ReaderMode, ScheduledFault, Sim, SimConfig, SimRng, Sweep, Workload,
    data_message, random_schedule,
};
use fabric_gossip_tests::seq_of;
use std::time::Duration;

fn sweep(test: &str) -> Sweep {
    Sweep::from_env(
        format!(
            "SIM_SEED={{seed}} cargo test -p fabric-gossip-tests --release --test sweeps sweep::{test}"
        ),
        500,
        10_000,
    )
}

/// Every node sends to every other within a window shorter than a round trip, so dials
/// cross; then the network runs until idle.
fn crossing(mut cfg: SimConfig) -> (Sim, Result<(), String>) {
    let seed = cfg.seed;
    let mut rng = SimRng::new(seed ^ 0xc055);
    let n = 2 + (seed % 9) as usize;
    cfg.latency = rng.duration(Duration::from_micros(10), Duration::from_millis(5));
    cfg.jitter = rng.duration(Duration::ZERO, cfg.latency);
    let mut sim = Sim::new(cfg);
    sim.add_nodes(n);
    let window = sim.config().latency * 2;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.index(i + 1));
    }
    for from in order {
        let to: Vec<usize> = (0..n).filter(|t| *t != from).collect();
        let msg = SignedMessage::noop(data_message(from as u64, vec![7u8; 32]));
        if let Err(e) = sim.send_to(from, &msg, &to) {
            return (sim, Err(format!("send: {e}")));
        }
        let d = rng.duration(Duration::ZERO, window / n as u32);
        sim.run_for(d);
    }
    if !sim.run_until_idle(Duration::from_secs(300)) {
        return (sim, Err("never idle".into()));
    }
    let verdict = crossing_converged(&mut sim);
    (sim, verdict)
}

fn crossing_converged(sim: &mut Sim) -> Result<(), String> {
    sim.check_quiescent()?;
    let n = sim.node_count();
    for a in 0..n {
        let got = sim.deliveries(a).len();
        if got != n - 1 {
            return Err(format!("node {a} received {got} of {}", n - 1));
        }
        if sim
            .events(a)
            .iter()
            .any(|(_, e)| matches!(e, Event::PresumedDead(_)))
        {
            return Err(format!("node {a} presumed a peer dead"));
        }
        for b in a + 1..n {
            let c = sim.connections_between(a, b);
            if c != 1 {
                return Err(format!("{c} connections between {a} and {b}"));
            }
        }
    }
    Ok(())
}

#[test]
fn crossing_dials() {
    sweep("crossing_dials")
        .run(crossing)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn chaos(mut cfg: SimConfig) -> Sim {
    let seed = cfg.seed;
    cfg.auto_ack = true;
    let mut rng = SimRng::new(seed ^ 0xfa17);
    cfg.latency = rng.duration(Duration::from_micros(50), Duration::from_millis(2));
    cfg.jitter = rng.duration(Duration::ZERO, cfg.latency);
    let n = 2 + (seed % 5) as usize;
    let span = Duration::from_secs(3);
    let mut sim = Sim::new(cfg);
    sim.add_nodes(n);
    sim.set_workload(Workload {
        stop: span,
        interval: Duration::from_millis(20),
        size: 64,
        fanout: 1 + (seed % 2) as usize,
        ack_per_mille: 150,
        ..Workload::default()
    });
    sim.schedule_faults(&random_schedule(
        &mut rng,
        n,
        span,
        4 + (seed % 13) as usize,
    ));
    sim
}

/// After recovery nothing may be stuck: a message from every node to every other arrives.
fn everyone_reaches_everyone(sim: &mut Sim) -> Result<(), String> {
    let n = sim.node_count();
    let marker = |a: usize, b: usize| 1_000_000 + (a * n + b) as u64;
    for a in 0..n {
        for b in (0..n).filter(|b| *b != a) {
            let msg = SignedMessage::noop(data_message(marker(a, b), vec![1u8; 8]));
            sim.send_to(a, &msg, &[b])
                .map_err(|e| format!("after recovery node {a} cannot send: {e}"))?;
        }
    }
    if !sim.run_until_idle(Duration::from_secs(600)) {
        return Err("never idle after recovery".into());
    }
    for b in 0..n {
        for a in (0..n).filter(|a| *a != b) {
            let seq = marker(a, b);
            if !sim
                .deliveries(b)
                .iter()
                .any(|d| seq_of(&d.msg) == Some(seq))
            {
                return Err(format!("after recovery node {a} cannot reach node {b}"));
            }
        }
    }
    sim.check_quiescent()
}

/// The first random-fault seed (of 10,000, 19 in all) on which a message was lost without
/// a count: a node whose reader is paused had a connection replaced after an
/// IdentitySwitch, and its core closed the old stream with a message unread on it, the
/// same loss as issue 10's finding 1 by another path. The core now keeps a replaced
/// stream it paused open until reading resumes.
#[test]
fn random_faults_silent_loss() {
    let mut sweep = sweep("random_faults_silent_loss");
    sweep.seeds = vec![1492];
    sweep
        .run(|cfg| {
            let mut sim = chaos(cfg);
            sim.run_until_idle(Duration::from_secs(600));
            (sim, Ok(()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn random_faults() {
    let mut faults = 0;
    let mut presumed = 0;
    let mut switches = 0;
    let mut failed_handshakes = 0;
    let sweep = sweep("random_faults");
    sweep
        .run(|cfg| {
            let mut sim = chaos(cfg);
            let verdict = if sim.run_until_idle(Duration::from_secs(600)) {
                sim.check_quiescent()
                    .and_then(|()| everyone_reaches_everyone(&mut sim))
            } else {
                Err("never idle".into())
            };
            let t = sim.totals();
            faults += sim.counters().faults;
            presumed += t.presumed_dead;
            switches += t.identity_switches;
            failed_handshakes += t.handshake_failures_total();
            (sim, verdict)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // A sweep that injected nothing, or whose faults never bit, proves nothing.
    if sweep.seeds.len() >= 100 {
        assert!(
            faults > 0 && presumed > 0 && switches > 0 && failed_handshakes > 0,
            "faults {faults}, presumed dead {presumed}, identity switches {switches}, \
             failed handshakes {failed_handshakes}"
        );
    }
}

/// How a node of [`crossing_with_readers`] reads.
fn reader_for(rng: &mut SimRng, paused: bool) -> (ReaderMode, Duration) {
    match rng.below(if paused { 3 } else { 2 }) {
        0 => (ReaderMode::Eager, Duration::ZERO),
        1 => {
            let every = rng.duration(Duration::from_micros(100), Duration::from_millis(20));
            (ReaderMode::Every(every), Duration::ZERO)
        }
        _ => {
            let until = rng.duration(Duration::from_millis(100), Duration::from_secs(5));
            (ReaderMode::Paused, until)
        }
    }
}

/// 2 to 6 nodes, each reading eagerly, slowly (one message per subscription every 0.1 to
/// 20 ms) or, with `paused`, not at all until a time between 0.1 and 5 s; every node sends
/// 10 to 100 messages to every other at once, so dials cross while readers lag. Every
/// message must be delivered or counted as dropped by a core or by the network, and the
/// network must converge to one connection per pair.
fn crossing_with_readers(mut cfg: SimConfig, paused: bool) -> (Sim, Result<(), String>) {
    let seed = cfg.seed;
    let mut rng = SimRng::new(seed ^ 0x51_0e);
    let n = 2 + (seed % 5) as usize;
    let per_peer = 10 + rng.below(91);
    cfg.latency = rng.duration(Duration::from_micros(10), Duration::from_millis(5));
    cfg.jitter = rng.duration(Duration::ZERO, cfg.latency);
    // As the tonic driver's tasks: a reader hands in a paused backlog some time after the
    // `ResumeRead`, and with a short `crossing_grace` a look at a retired stream falls
    // between the two (a reader fed at once hid the race the core fixed on 2026-12-05);
    // a timer fires some time after its deadline.
    cfg.resume_lag = rng.duration(Duration::ZERO, Duration::from_millis(5));
    cfg.timer_lag = rng.duration(Duration::ZERO, Duration::from_millis(5));
    // A writer task confirms writes some time after the core's `Write`, so write windows
    // and send buffers fill as on the network (for half the seeds; drawn on its own, so
    // the draws above stay what they were for each seed).
    let mut lag = SimRng::new(seed ^ 0xc0_f1);
    if lag.below(2) == 0 {
        cfg.confirm_lag = lag.duration(Duration::ZERO, Duration::from_millis(5));
    }
    let short_grace = rng.below(2) == 0;
    let mut sim = Sim::new(cfg);
    let mut wake = Vec::new();
    for i in 0..n {
        let (reader, until) = reader_for(&mut rng, paused);
        let mut config = fabric_gossip_core::Config::default();
        if short_grace {
            config.crossing_grace = rng.duration(Duration::ZERO, Duration::from_millis(20));
        }
        if let Err(e) = sim.add_node(NodeSpec::new().config(config).reader(reader)) {
            return (sim, Err(format!("add node: {e}")));
        }
        if reader == ReaderMode::Paused {
            wake.push(ScheduledFault {
                at: until,
                fault: Fault::Reader(i, ReaderMode::Eager),
            });
        }
    }
    sim.schedule_faults(&wake);
    let mut accepted = 0u64;
    for k in 0..per_peer {
        for from in 0..n {
            let to: Vec<usize> = (0..n).filter(|t| *t != from).collect();
            let msg = SignedMessage::noop(data_message(k, vec![3u8; 48]));
            if let Err(e) = sim.send_to(from, &msg, &to) {
                return (sim, Err(format!("send: {e}")));
            }
            accepted += to.len() as u64;
        }
    }
    if !sim.run_until_idle(Duration::from_secs(300)) {
        return (sim, Err("never idle".into()));
    }
    let verdict = sim.check_quiescent().and_then(|()| {
        let t = sim.totals();
        let c = sim.counters();
        let delivered: u64 = (0..n).map(|i| sim.delivered_total(i)).sum();
        let accounted = delivered
            + t.dropped_overflow
            + t.dropped_on_close
            + t.dropped_no_connection
            + t.dropped_subscription_overflow
            + t.dropped_on_stop
            + t.unrouted
            + c.envelopes_lost
            + c.envelopes_discarded_unread;
        if accounted != accepted {
            return Err(format!(
                "{accepted} messages accepted, {accounted} accounted for ({delivered} \
                 delivered, totals {t:?}, network {c:?})"
            ));
        }
        for a in 0..n {
            for b in a + 1..n {
                let c = sim.connections_between(a, b);
                if c != 1 {
                    return Err(format!("{c} connections between {a} and {b}"));
                }
            }
        }
        Ok(())
    });
    (sim, verdict)
}

#[test]
fn crossing_dials_slow_readers() {
    sweep("crossing_dials_slow_readers")
        .run(|cfg| crossing_with_readers(cfg, false))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn crossing_dials_paused_readers() {
    sweep("crossing_dials_paused_readers")
        .run(|cfg| crossing_with_readers(cfg, true))
        .unwrap_or_else(|e| panic!("{e}"));
}
