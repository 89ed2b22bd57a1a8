//! Simulated deliveries per wall-clock second at 1,000 nodes with the traffic of
//! `fabric-gossip sim` (issue 12): a fresh network per iteration, so every connection is
//! dialled and handshaken during the run; every node sends 1 KiB messages to random peers
//! every 10 ms on average (a tenth of them with SendWithAck, acked by the receiver) for
//! one second of virtual time; then the network runs until idle. Trace off, per-step
//! invariant checks on (they are incremental), as a long simulation would run.
//! `cargo bench -p fabric-gossip-sim --bench scale`. The simulator is single-threaded:
//! the figure is one core's.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_sim::{Sim, SimConfig, TraceMode, Workload};
use std::time::{Duration, Instant};

const NODES: usize = 1000;

fn network(seed: u64) -> Sim {
    let mut cfg = SimConfig::seeded(seed);
    cfg.trace = TraceMode::Off;
    cfg.check_invariants = true;
    cfg.record_limit = 0;
    cfg.auto_ack = true;
    let mut sim = Sim::new(cfg);
    sim.add_nodes(NODES);
    sim.set_workload(Workload {
        stop: Duration::from_secs(1),
        ack_per_mille: 100,
        ..Workload::default()
    });
    sim
}

/// Runs one network to idle; returns its deliveries and the handshakes it made.
fn run(sim: &mut Sim) -> (u64, u64) {
    assert!(sim.run_until_idle(Duration::from_secs(300)), "never idle");
    (sim.counters().delivered, sim.totals().handshakes_ok)
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux; zero
/// elsewhere): the figure that does not depend on what else loads the machine.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn bench(c: &mut Criterion) {
    let mut probe = network(1);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let (per_run, handshakes) = run(&mut probe);
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    eprintln!(
        "one run: {per_run} deliveries, {handshakes} handshakes in {:.2} s wall, {:.2} s CPU: \
         {:.0} deliveries per wall second, {:.0} per CPU second",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        per_run as f64 / wall.as_secs_f64(),
        per_run as f64 / cpu.as_secs_f64().max(1e-9)
    );
    probe.check_quiescent().expect("invariants");
    assert!(
        per_run > 50_000 && handshakes > 10_000,
        "{per_run} deliveries, {handshakes} handshakes"
    );
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(per_run));
    g.bench_function("deliveries_1000_nodes_handshakes_traffic", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let mut sim = network(1);
                let start = Instant::now();
                let (delivered, _) = run(&mut sim);
                spent += start.elapsed();
                assert_eq!(delivered, per_run, "same seed, same run");
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
