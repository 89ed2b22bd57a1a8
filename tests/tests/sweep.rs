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
//! Each sweep runs `SIM_SEEDS` seeds: by default 10,000 in a release build
//! (`cargo test -p fabric-gossip-tests --release --test sweep`, about 20 s on two cores)
//! and 500 in a debug build, which is 12 times slower. `SIM_SEED=N` runs that seed
//! alone, with the full trace printed on failure. Every 500th seed also runs twice and
//! must give the same trace hash.

use fabric_gossip_core::{Event, SignedMessage};
use fabric_gossip_sim::{
    Sim, SimConfig, SimRng, TraceMode, Workload, data_message, random_schedule,
};
use std::time::Duration;

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 500 } else { 10_000 });
    (0..n).collect()
}

fn single() -> bool {
    std::env::var("SIM_SEED").is_ok()
}

fn config(seed: u64, test: &str, trace: TraceMode) -> SimConfig {
    let mut cfg = SimConfig::seeded(seed);
    cfg.trace = if single() { TraceMode::Full } else { trace };
    cfg.reproduce = format!(
        "SIM_SEED={{seed}} cargo test -p fabric-gossip-tests --release --test sweep {test}"
    );
    cfg
}

fn fail(sim: &Sim, why: &str) -> ! {
    if single() {
        eprintln!("{}", sim.trace().text());
    }
    panic!(
        "seed {}: {why}\n{}\n(SIM_SEED alone prints the whole trace)",
        sim.seed(),
        sim.reproduce_hint()
    );
}

fn crossing(seed: u64, trace: TraceMode) -> Sim {
    let mut cfg = config(seed, "crossing_dials", trace);
    let mut rng = SimRng::new(seed ^ 0xc055);
    let n = 2 + (seed % 9) as usize;
    cfg.latency = rng.duration(Duration::from_micros(10), Duration::from_millis(5));
    cfg.jitter = rng.duration(Duration::ZERO, cfg.latency);
    let mut sim = Sim::new(cfg);
    sim.add_nodes(n);
    // Each node starts within a window shorter than a round trip, so dials cross.
    let window = sim.config().latency * 2;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.index(i + 1));
    }
    for from in order {
        let to: Vec<usize> = (0..n).filter(|t| *t != from).collect();
        let msg = SignedMessage::noop(data_message(from as u64, vec![7u8; 32].into()));
        sim.send_to(from, &msg, &to)
            .unwrap_or_else(|e| fail(&sim, &format!("send: {e}")));
        let d = rng.duration(Duration::ZERO, window / n as u32);
        sim.run_for(d);
    }
    if !sim.run_until_idle(Duration::from_secs(300)) {
        fail(&sim, "never idle");
    }
    sim
}

#[test]
fn crossing_dials() {
    for seed in seeds() {
        let mut sim = crossing(seed, TraceMode::Off);
        if let Err(e) = sim.check_quiescent() {
            fail(&sim, &e);
        }
        let n = sim.node_count();
        for a in 0..n {
            if sim.deliveries(a).len() != n - 1 {
                fail(
                    &sim,
                    &format!("node {a} received {} of {}", sim.deliveries(a).len(), n - 1),
                );
            }
            if sim
                .events(a)
                .iter()
                .any(|(_, e)| matches!(e, Event::PresumedDead(_)))
            {
                fail(&sim, &format!("node {a} presumed a peer dead"));
            }
            for b in a + 1..n {
                let c = sim.connections_between(a, b);
                if c != 1 {
                    fail(&sim, &format!("{c} connections between {a} and {b}"));
                }
            }
        }
        if seed % 500 == 0 {
            let x = crossing(seed, TraceMode::Hash).trace().hash();
            let y = crossing(seed, TraceMode::Hash).trace().hash();
            if x != y {
                fail(&sim, "the same seed gave two different traces");
            }
        }
    }
}

fn chaos(seed: u64, trace: TraceMode) -> Sim {
    let mut cfg = config(seed, "random_faults", trace);
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
    if !sim.run_until_idle(Duration::from_secs(600)) {
        fail(&sim, "never idle");
    }
    sim
}

/// After recovery nothing may be stuck: a message from every node to every other arrives.
fn everyone_reaches_everyone(sim: &mut Sim) {
    let n = sim.node_count();
    let marker = |a: usize, b: usize| 1_000_000 + (a * n + b) as u64;
    for a in 0..n {
        for b in (0..n).filter(|b| *b != a) {
            let msg = SignedMessage::noop(data_message(marker(a, b), vec![1u8; 8].into()));
            if let Err(e) = sim.send_to(a, &msg, &[b]) {
                fail(sim, &format!("after recovery node {a} cannot send: {e}"));
            }
        }
    }
    if !sim.run_until_idle(Duration::from_secs(600)) {
        fail(sim, "never idle after recovery");
    }
    for b in 0..n {
        for a in (0..n).filter(|a| *a != b) {
            let seq = marker(a, b);
            let got = sim.deliveries(b).iter().any(|d| {
                matches!(&d.msg.message.content,
                    Some(fabric_gossip_core::proto::gossip::gossip_message::Content::DataMsg(m))
                        if m.payload.as_ref().is_some_and(|p| p.seq_num == seq))
            });
            if !got {
                fail(
                    sim,
                    &format!("after recovery node {a} cannot reach node {b}"),
                );
            }
        }
    }
    if let Err(e) = sim.check_quiescent() {
        fail(sim, &e);
    }
}

#[test]
fn random_faults() {
    let mut faults = 0;
    let mut presumed = 0;
    let mut switches = 0;
    let mut failed_handshakes = 0;
    for seed in seeds() {
        let mut sim = chaos(seed, TraceMode::Off);
        if let Err(e) = sim.check_quiescent() {
            fail(&sim, &e);
        }
        everyone_reaches_everyone(&mut sim);
        let t = sim.totals();
        faults += sim.counters().faults;
        presumed += t.presumed_dead;
        switches += t.identity_switches;
        failed_handshakes += t.handshake_failures_total();
        if seed % 500 == 0 {
            let x = chaos(seed, TraceMode::Hash).trace().hash();
            let y = chaos(seed, TraceMode::Hash).trace().hash();
            if x != y {
                fail(&sim, "the same seed gave two different traces");
            }
        }
    }
    // A sweep that injected nothing, or whose faults never bit, proves nothing.
    if seeds().len() >= 100 {
        assert!(
            faults > 0 && presumed > 0 && switches > 0 && failed_handshakes > 0,
            "faults {faults}, presumed dead {presumed}, identity switches {switches}, \
             failed handshakes {failed_handshakes}"
        );
    }
}
