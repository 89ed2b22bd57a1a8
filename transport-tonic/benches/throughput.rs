//! Lossless one-way throughput over one loopback connection: one node sends 1 KiB
//! DataMessages with `send_wait` (never dropping), the other consumes them from `accept`.
//! Reported as elements (messages) per second, plaintext and mutual TLS. Also SendWithAck
//! with 16 concurrent callers. (Latencies are in `latency.rs`.)
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

mod common;
use common::{TRANSPORTS, message, pair, runtime, stop_pair};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::Config;
use std::time::{Duration, Instant};

fn config() -> Config {
    // Buffers sized for throughput rather than Fabric's defaults.
    Config::default()
        .with_send_buffer(1024)
        .with_write_window(512)
        .with_subscription_buffer(1024)
}

fn one_way(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("one_way_1KiB");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, config());
        let mut inbox = b.accept(|_| true).unwrap();
        // Connect before measuring.
        rt.block_on(async {
            a.send_wait(&message(), &b.as_peer()).await.unwrap();
            inbox.recv().await.unwrap();
        });
        let msg = message();
        let peer = b.as_peer();
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let sender = {
                        let (a, msg, peer) = (a.clone(), msg.clone(), peer.clone());
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                a.send_wait(&msg, &peer).await.unwrap();
                            }
                        })
                    };
                    for _ in 0..iters {
                        inbox.recv().await.unwrap();
                    }
                    let took = start.elapsed();
                    sender.await.unwrap();
                    took
                })
            })
        });
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.dropped_overflow + sb.dropped_subscription_overflow, 0);
        stop_pair(&rt, &a, &b);
    }
    group.finish();
}

fn acks(c: &mut Criterion) {
    const CALLERS: u64 = 16;
    let rt = runtime();
    let mut group = c.benchmark_group("send_with_ack_16_callers");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, config());
        let mut inbox = b.accept(|_| true).unwrap();
        let acker = rt.spawn(async move {
            while let Some(m) = inbox.recv().await {
                let _ = m.ack(None).await;
            }
        });
        let peer = b.as_peer();
        let msg = message().message().clone();
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let per = iters.div_ceil(CALLERS);
                    let t = Instant::now();
                    let tasks: Vec<_> = (0..CALLERS)
                        .map(|_| {
                            let (a, msg, peer) = (a.clone(), msg.clone(), peer.clone());
                            tokio::spawn(async move {
                                for _ in 0..per {
                                    let r = a
                                        .send_with_ack(
                                            msg.clone(),
                                            Duration::from_secs(10),
                                            1,
                                            std::slice::from_ref(&peer),
                                        )
                                        .await
                                        .unwrap();
                                    assert!(r[0].result.is_ok());
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    t.elapsed().mul_f64(iters as f64 / (per * CALLERS) as f64)
                })
            })
        });
        stop_pair(&rt, &a, &b);
        acker.abort();
    }
    group.finish();
}

// Latency (probe, new connection to first delivery) is in benches/latency.rs.
criterion_group!(benches, one_way, acks);
criterion_main!(benches);
