//! Simulated message deliveries per wall-clock second: 100 nodes, fully connected,
//! exchanging 1 KiB messages, with tracing and per-step invariant checks off (what a long
//! simulation would run with). The README's figure comes from here:
//! `cargo bench -p fabric-gossip-sim --bench deliveries`.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::{RemotePeer, SignedMessage};
use fabric_gossip_sim::{Sim, SimConfig, SimRng, TraceMode, data_message};
use std::hint::black_box;
use std::time::{Duration, Instant};

const NODES: usize = 100;
const PER_NODE: usize = 20;

fn meshed() -> Sim {
    let mut cfg = SimConfig::seeded(1);
    cfg.trace = TraceMode::Off;
    cfg.check_invariants = false;
    cfg.record_limit = 0;
    let mut sim = Sim::new(cfg);
    sim.add_nodes(NODES);
    let hello = SignedMessage::noop(data_message(0, vec![0u8; 16]));
    for a in 0..NODES {
        let to: Vec<usize> = (0..NODES).filter(|b| *b != a).collect();
        sim.send_to(a, &hello, &to).expect("send");
    }
    assert!(
        sim.run_until_idle(Duration::from_secs(60)),
        "mesh never settled"
    );
    sim.check_quiescent().expect("mesh invariants");
    sim
}

/// One round: every node sends `PER_NODE` 1 KiB messages to random peers; runs until all
/// are delivered. Returns the deliveries of the round.
fn round(sim: &mut Sim, rng: &mut SimRng, msg: &SignedMessage, peers: &[RemotePeer]) -> u64 {
    let before = sim.counters().delivered;
    for a in 0..NODES {
        for _ in 0..PER_NODE {
            let mut b = rng.index(NODES - 1);
            if b >= a {
                b += 1;
            }
            let _ = sim.send(a, msg, std::slice::from_ref(&peers[b]));
        }
    }
    sim.run_until_idle(Duration::from_secs(60));
    sim.counters().delivered - before
}

fn bench(c: &mut Criterion) {
    let mut sim = meshed();
    let peers: Vec<RemotePeer> = (0..NODES).map(|n| sim.remote_peer(n)).collect();
    let msg = SignedMessage::noop(data_message(1, vec![0x5a; 1024]));
    let mut rng = SimRng::new(2);
    let per_round = round(&mut sim, &mut rng, &msg, &peers);
    assert_eq!(
        per_round,
        (NODES * PER_NODE) as u64,
        "every message is delivered"
    );
    if let Some(n) = std::env::var("SIM_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut total = 0;
        for _ in 0..n {
            total += round(&mut sim, &mut rng, &msg, &peers);
        }
        eprintln!("SIM_ROUNDS {n}: {total} deliveries");
        return;
    }
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(per_round));
    g.bench_function("deliveries_100_nodes_1KiB", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(round(&mut sim, &mut rng, &msg, &peers));
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
