//! Latency over fresh connections, plaintext and mutual TLS:
//!
//! * `new_connection_to_first_delivery`: close the connection, `send` one 1 KiB
//!   DataMessage, wait until the receiver has it: dial TCP (and TLS), Ping, open the stream,
//!   the two-way `ConnEstablish` handshake, then the message. Fabric v2.4.9: p50 1.3 ms
//!   plaintext, 2.4 ms TLS; goal p50 ≤ 0.7 ms / ≤ 1.5 ms.
//! * `probe`: dial and Ping over a new connection each time. Fabric: p50 0.8 ms / 1.5 ms;
//!   goal p50 ≤ 0.5 ms plaintext.
//!
//! Criterion reports means; the `bench_report` example prints p50 and p99 of the same
//! workloads. Each iteration opens a connection, so measurement times are kept short: on
//! loopback Linux reuses TIME_WAIT ports (`tcp_tw_reuse` = 2), but there is no need to
//! churn through tens of thousands of them.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

mod common;
use common::{TRANSPORTS, message, pair, runtime, stop_pair};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use fabric_gossip_core::Config;
use std::time::{Duration, Instant};

/// Upper bound on one connection or probe; far above the expected milliseconds, so a
/// stall fails the benchmark instead of hanging it.
const STALL: Duration = Duration::from_secs(10);

/// A group whose every iteration opens a connection: short warm-up and measurement (see
/// the module's note on TIME_WAIT ports).
fn connection_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(30);
    group
}

fn new_connection_to_first_delivery(c: &mut Criterion) {
    let rt = runtime();
    let mut group = connection_group(c, "new_connection_to_first_delivery");
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, Config::default());
        let mut inbox = b.accept(|_| true).unwrap();
        let (peer, msg) = (b.as_peer(), message());
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        a.close_conn(b.pki_id());
                        let t = Instant::now();
                        a.send(&msg, std::slice::from_ref(&peer)).unwrap();
                        tokio::time::timeout(STALL, inbox.recv())
                            .await
                            .expect("delivery within STALL")
                            .expect("inbox open");
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
        assert_eq!(a.stats().dropped_overflow, 0);
        drop(inbox);
        stop_pair(&rt, &a, &b);
    }
    group.finish();
}

fn probe(c: &mut Criterion) {
    let rt = runtime();
    let mut group = connection_group(c, "probe");
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, Config::default());
        let peer = b.as_peer();
        group.bench_function(name, |bench| {
            bench.to_async(&rt).iter(|| async {
                tokio::time::timeout(STALL, a.probe(&peer))
                    .await
                    .expect("probe within STALL")
                    .unwrap()
            })
        });
        stop_pair(&rt, &a, &b);
    }
    group.finish();
}

criterion_group!(benches, new_connection_to_first_delivery, probe);
criterion_main!(benches);
