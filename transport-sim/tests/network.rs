//! The simulator's own behaviour: determinism, links, faults and invariant checks.

use fabric_gossip_core::{Event, HandshakeError, SignedMessage};
use fabric_gossip_sim::*;
use std::time::Duration;

fn msg(i: u64) -> SignedMessage {
    SignedMessage::noop(data_message(i, bytes::Bytes::from(vec![1u8; 16])))
}

/// Every node sends to every other at (almost) the same time, so dials cross.
fn crossing(seed: u64, n: usize) -> Sim {
    let mut cfg = SimConfig::seeded(seed);
    let mut rng = SimRng::new(seed ^ 0x5eed);
    cfg.latency = rng.duration(Duration::from_micros(10), Duration::from_millis(5));
    cfg.jitter = rng.duration(Duration::ZERO, cfg.latency);
    let mut sim = Sim::new(cfg);
    sim.add_nodes(n);
    for a in 0..n {
        for b in 0..n {
            if a != b {
                sim.send_to(a, &msg((a * n + b) as u64), &[b]).unwrap();
            }
        }
        let d = rng.duration(Duration::ZERO, Duration::from_micros(300));
        sim.run_for(d);
    }
    sim.run_until_idle(Duration::from_secs(120));
    sim
}

#[test]
fn crossing_dials_converge_to_one_connection_per_pair() {
    for seed in 0..300 {
        let n = 2 + (seed as usize % 5);
        let mut sim = crossing(seed, n);
        sim.check_quiescent().unwrap_or_else(|e| panic!("{e}"));
        for a in 0..n {
            assert_eq!(sim.deliveries(a).len(), n - 1, "seed {seed} node {a}");
            for b in a + 1..n {
                assert_eq!(sim.connections_between(a, b), 1, "seed {seed} {a}-{b}");
            }
        }
    }
}

#[test]
fn same_seed_same_trace_hash() {
    let run = |seed| {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        sim.add_nodes(4);
        sim.set_workload(Workload {
            stop: Duration::from_secs(2),
            ack_per_mille: 200,
            ..Workload::default()
        });
        let mut rng = SimRng::new(seed);
        sim.schedule_faults(&random_schedule(&mut rng, 4, Duration::from_secs(2), 10));
        sim.run_until_idle(Duration::from_secs(60));
        (sim.trace().hash(), sim.trace().count())
    };
    let (a, n) = run(11);
    assert!(n > 1000, "trace too short to mean anything: {n}");
    assert_eq!(a, run(11).0);
    assert_ne!(a, run(12).0);
}

#[test]
fn random_faults_keep_invariants() {
    for seed in 0..200 {
        let mut cfg = SimConfig::seeded(seed);
        cfg.auto_ack = true;
        let mut sim = Sim::new(cfg);
        let n = 2 + (seed as usize % 4);
        sim.add_nodes(n);
        sim.set_workload(Workload {
            stop: Duration::from_secs(3),
            interval: Duration::from_millis(20),
            size: 64,
            ack_per_mille: 100,
            ..Workload::default()
        });
        let mut rng = SimRng::new(seed);
        sim.schedule_faults(&random_schedule(&mut rng, n, Duration::from_secs(3), 12));
        assert!(
            sim.run_until_idle(Duration::from_secs(600)),
            "seed {seed} never idle"
        );
        sim.check_quiescent().unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn silent_peer_times_out_handshake() {
    let mut sim = Sim::new(SimConfig::seeded(1));
    let a = sim.add_node(NodeSpec::new()).unwrap();
    let b = sim.add_node(NodeSpec::new().silent(true)).unwrap();
    sim.send_to(a, &msg(1), &[b]).unwrap();
    sim.run_until_idle(Duration::from_secs(60));
    let timed_out = sim.events(a).iter().any(|(_, e)| {
        matches!(
            e,
            Event::HandshakeFailed {
                error: HandshakeError::Timeout,
                ..
            }
        )
    });
    assert!(timed_out, "{:#?}", sim.events(a));
    assert!(
        sim.events(a)
            .iter()
            .any(|(_, e)| matches!(e, Event::PresumedDead(_)))
    );
    sim.check().unwrap();
}
