//! Simulated deliveries per wall-clock second at 1,000 nodes with the traffic of
//! `fabric-gossip sim` (issue 12): a fresh network per iteration, so every connection is
//! dialled and handshaken during the run; every node sends 1 KiB messages every 10 ms on
//! average (a tenth of them with SendWithAck, acked by the receiver) for one second of
//! virtual time; then the network runs until idle. Trace off, per-step invariant checks
//! on (they are incremental), as a long simulation would run. Two workloads: each message
//! to a random peer among all 999 (nearly one new connection per message), and each node
//! sending only within a fixed random view of 20 peers (connections made once, then
//! traffic, as a Fabric peer gossips within its membership view).
//! `cargo bench -p fabric-gossip-sim --bench scale`. The simulator is single-threaded:
//! the figure is one core's. With `--features mimalloc` the bench binary allocates with
//! mimalloc instead of the system allocator (the library never picks an allocator); the
//! first line printed says which.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_sim::{Sim, SimConfig, TraceMode, Workload};
use std::time::{Duration, Instant};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this binary was built with, for the printed figures.
const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system allocator"
};

const NODES: usize = 1000;

/// Peers per node in the second workload: each node sends only within a fixed random
/// view of this many peers, so its connections are made once and then carry traffic.
const VIEW: usize = 20;

/// The two workloads: a random peer per send (a new connection for nearly every
/// message: the worst case, all handshakes), and a fixed view per node.
const CASES: [(&str, usize); 2] = [
    ("deliveries_1000_nodes_handshakes_traffic", 0),
    ("deliveries_1000_nodes_view_20_traffic", VIEW),
];

fn network(seed: u64, view: usize) -> Sim {
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
        view,
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

/// One run of a workload outside criterion, with its CPU time printed; returns its
/// deliveries (the same for every run of the seed).
fn probe(name: &str, view: usize) -> u64 {
    let mut probe = network(1, view);
    let (wall, cpu) = (Instant::now(), thread_cpu());
    let (per_run, handshakes) = run(&mut probe);
    let (wall, cpu) = (wall.elapsed(), thread_cpu() - cpu);
    eprintln!(
        "{name}, one run ({ALLOCATOR_NAME}): {per_run} deliveries, {handshakes} handshakes, \
         {} steps in {:.2} s wall, {:.2} s CPU: {:.0} deliveries per wall second, {:.0} per \
         CPU second",
        probe.counters().steps,
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
    per_run
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    // `SIM_SCALE_ONLY=view` runs (and probes) only the workloads whose name contains it.
    let only = std::env::var("SIM_SCALE_ONLY").unwrap_or_default();
    // `SIM_SCALE_PROBE=1` stops after the first runs (for a profiler or instruction count).
    let probe_only = std::env::var_os("SIM_SCALE_PROBE").is_some();
    for (name, view) in CASES.into_iter().filter(|(name, _)| name.contains(&only)) {
        let per_run = probe(name, view);
        if probe_only {
            continue;
        }
        g.throughput(Throughput::Elements(per_run));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let mut sim = network(1, view);
                    let start = Instant::now();
                    let (delivered, _) = run(&mut sim);
                    spent += start.elapsed();
                    assert_eq!(delivered, per_run, "same seed, same run");
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
