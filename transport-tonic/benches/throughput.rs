//! Lossless one-way throughput over one loopback connection: one node sends 1 KiB
//! DataMessages with `send_wait` (never dropping), the other consumes them from `accept`.
//! Reported as elements (messages) per second, plaintext and mutual TLS. Also SendWithAck
//! with 16 concurrent callers, with both nodes on one 2-worker runtime and with each node on
//! a current-thread runtime of its own thread. (Latencies are in `latency.rs`.)
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

mod common;
use common::{TRANSPORTS, message, pair, runtime, start_node, stop_pair, throughput_config};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::{RemotePeer, SignedMessage};
use fabric_gossip_tonic::{Incoming, Node};
use std::time::{Duration, Instant};

fn one_way(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("one_way_1KiB");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, throughput_config());
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

/// Concurrent SendWithAck callers in the acks benchmarks.
const CALLERS: u64 = 16;

/// Acks every message `inbox` receives; ends when its node stops.
async fn ack_everything(mut inbox: Incoming) {
    while let Some(m) = inbox.recv().await {
        let _ = m.ack(None).await;
    }
}

/// `iters` SendWithAck calls from `a` to `peer`, split among [`CALLERS`] tasks on the
/// current runtime; the time scaled to exactly `iters` calls.
async fn ack_calls(a: &Node, peer: &RemotePeer, msg: &SignedMessage, iters: u64) -> Duration {
    let per = iters.div_ceil(CALLERS);
    let t = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (a, msg, peer) = (a.clone(), msg.clone(), peer.clone());
            tokio::spawn(async move {
                for _ in 0..per {
                    let r = a
                        .send_with_ack_signed(
                            &msg,
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
}

fn acks(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("send_with_ack_16_callers");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for (name, tls) in TRANSPORTS {
        let (a, b) = pair(&rt, tls, throughput_config());
        let acker = rt.spawn(ack_everything(b.accept(|_| true).unwrap()));
        let peer = b.as_peer();
        // Encoded once, as Fabric's callers hand `SendWithAck` a `SignedGossipMessage`.
        let msg = message();
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| rt.block_on(ack_calls(&a, &peer, &msg, iters)))
        });
        stop_pair(&rt, &a, &b);
        acker.abort();
    }
    group.finish();
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// SendWithAck, 16 callers, plaintext, each node on a current-thread runtime of its own
/// thread (the crate docs, "Runtimes"): `a` and its callers on the one the benchmark drives,
/// `b` and its acker on another.
fn acks_runtime_per_node(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_with_ack_16_callers_runtime_per_node");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    let (peer_tx, peer_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let b = start_node(None, throughput_config()).await.unwrap();
            let acker = tokio::spawn(ack_everything(b.accept(|_| true).unwrap()));
            peer_tx.send(b.as_peer()).unwrap();
            let _ = stop_rx.await;
            b.stop().await;
            acker.abort();
        })
    });
    let peer = peer_rx.recv().unwrap();
    let rt = current_thread();
    let a = rt.block_on(start_node(None, throughput_config())).unwrap();
    let msg = message();
    group.bench_function("plaintext", |bench| {
        bench.iter_custom(|iters| rt.block_on(ack_calls(&a, &peer, &msg, iters)))
    });
    rt.block_on(a.stop());
    stop_tx.send(()).unwrap();
    receiver.join().unwrap();
    group.finish();
}

// Latency (probe, new connection to first delivery) is in benches/latency.rs.
criterion_group!(benches, one_way, acks, acks_runtime_per_node);
criterion_main!(benches);
