//! Counts what the lossless one-way path allocates per message: a fixed number of 1 KiB
//! messages sent with `send_wait` from one node to another in this process (the workload of
//! `bench_report`'s plaintext and TLS rows), both nodes counted together.
//!
//! ```text
//! cargo run --release -p fabric-gossip-tonic --example alloc_count -- plain 200000
//! cargo run --release -p fabric-gossip-tonic --example alloc_count -- tls 200000 --one-thread
//! cargo run --release -p fabric-gossip-tonic --example alloc_count -- acks 100000 --one-thread
//! ```
//!
//! glibc's allocator is warmed first, as `fabric-gossip node` does
//! (`fabric_gossip_tonic::malloc::warm_glibc_malloc`); `--cold-malloc` leaves it cold.
//!
//! It prints heap allocations (and reallocations) per message and bytes allocated per
//! message, over the messages after a warm-up of 20,000. `acks` counts per acknowledged
//! SendWithAck instead, 16 callers in plaintext with the default configuration, the other
//! node acking every message (`bench_report --only acks`'s workload). A fixed amount of work also makes
//! instruction counts comparable between builds, where timing on a shared machine is not:
//! `perf stat -e instructions:u` over runs of N and 2N messages, their difference over N,
//! is the user-space instructions per message without start-up and shut-down. To see where
//! the allocations come from, run it under `heaptrack` (the counting allocator below passes
//! every call through to the system's).

// The counting allocator below must implement `GlobalAlloc`, an unsafe trait; it only passes
// every call on to the system's allocator and counts on the side.
#![allow(unsafe_code)]

#[path = "../benches/common/mod.rs"]
mod common;

use fabric_gossip_core::proto::gossip::{GossipMessage, gossip_message};
use fabric_gossip_core::{Config, SignedMessage};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting calls and bytes.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters are only atomics on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(
            new_size.saturating_sub(layout.size()) as u64,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RING: u64 = 64;
const WARMUP: u64 = 20_000;

fn counters() -> [u64; 3] {
    [&ALLOCS, &REALLOCS, &BYTES].map(|c| c.load(Ordering::Relaxed))
}

fn seq_of(m: &GossipMessage) -> Option<u64> {
    match &m.content {
        Some(gossip_message::Content::DataMsg(d)) => d.payload.as_ref().map(|p| p.seq_num),
        _ => None,
    }
}

async fn run(tls: bool, n: u64) -> Result<[u64; 3], String> {
    let (a, b) = common::start_pair(tls, common::throughput_config())
        .await
        .map_err(|e| e.to_string())?;
    let msgs: Vec<SignedMessage> = (0..RING)
        .map(|seq| {
            SignedMessage::noop(fabric_gossip_core::data_message(
                seq,
                vec![(seq % 251) as u8; 1024],
            ))
        })
        .collect();
    let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let peer = b.as_peer();
    let mut before = [0; 3];
    let total = WARMUP + n;
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            for seq in 0..total {
                let m = &msgs[(seq % RING) as usize];
                a.send_wait(m, &peer).await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
    };
    for want in 0..total {
        if want == WARMUP {
            before = counters();
        }
        let m = inbox.recv().await.ok_or("inbox ended")?;
        if seq_of(m.message()) != Some(want % RING) {
            return Err(format!("message {want} out of order"));
        }
    }
    let after = counters();
    sender.await.map_err(|e| e.to_string())??;
    let stats = (a.stats(), b.stats());
    a.stop().await;
    b.stop().await;
    let lost = stats.0.dropped_overflow
        + stats.0.dropped_on_close
        + stats.0.dropped_no_connection
        + stats.1.dropped_subscription_overflow;
    if lost > 0 {
        return Err(format!("{lost} messages lost"));
    }
    Ok([0, 1, 2].map(|i| after[i] - before[i]))
}

/// SendWithAck from 16 callers, `n` acks after the warm-up, each message acked by the
/// other node.
async fn acks(n: u64) -> Result<[u64; 3], String> {
    const CALLERS: u64 = 16;
    let (a, b) = common::start_pair(false, Config::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let acker = tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            let _ = m.ack(None).await;
        }
    });
    // Encoded once, as Fabric's callers hand `SendWithAck` a `SignedGossipMessage`.
    let msg = SignedMessage::noop(fabric_gossip_core::data_message(1, vec![7u8; 1024]));
    let peer = b.as_peer();
    let round = async |calls: u64| -> Result<(), String> {
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (a, peer, msg) = (a.clone(), peer.clone(), msg.clone());
                tokio::spawn(async move {
                    for _ in 0..calls {
                        let r = a
                            .send_with_ack_signed(
                                &msg,
                                std::time::Duration::from_secs(10),
                                1,
                                std::slice::from_ref(&peer),
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                        if r.first().is_none_or(|r| r.result.is_err()) {
                            return Err("an ack failed".to_string());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    };
    round(WARMUP / CALLERS).await?;
    let before = counters();
    round(n / CALLERS).await?;
    let after = counters();
    a.stop().await;
    b.stop().await;
    let _ = acker.await;
    Ok([0, 1, 2].map(|i| after[i] - before[i]))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map(String::as_str).unwrap_or_default();
    if !["plain", "tls", "acks"].contains(&what) {
        eprintln!("usage: alloc_count plain|tls|acks [MESSAGES] [--one-thread] [--cold-malloc]");
        std::process::exit(2);
    }
    // As `fabric-gossip node` and `bench_report` run it, unless asked (README, "glibc's
    // heap trimming"); the warm-up's one allocation precedes the counting.
    if !args.iter().any(|a| a == "--cold-malloc") {
        fabric_gossip_tonic::malloc::warm_glibc_malloc();
    }
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    // Whole rounds of the 16 callers.
    let n = if what == "acks" { n / 16 * 16 } else { n };
    let rt = if args.iter().any(|a| a == "--one-thread") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let r = rt.block_on(async {
        match what {
            "acks" => tokio::spawn(acks(n)).await,
            _ => tokio::spawn(run(what == "tls", n)).await,
        }
    });
    match r {
        Ok(Ok([allocs, reallocs, bytes])) => {
            let per = |x: u64| x as f64 / n as f64;
            println!(
                "{what} {n} messages: {:.3} allocations, {:.3} reallocations, {:.0} bytes per message",
                per(allocs),
                per(reallocs),
                per(bytes),
            );
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("panicked: {e}");
            std::process::exit(1);
        }
    }
}
