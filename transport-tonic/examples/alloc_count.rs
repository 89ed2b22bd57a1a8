//! Counts what the lossless one-way path allocates per message: a fixed number of 1 KiB
//! messages sent with `send_wait` from one node to another in this process (the workload of
//! `bench_report`'s plaintext and TLS rows), both nodes counted together.
//!
//! ```text
//! cargo run --release -p fabric-gossip-tonic --example alloc_count -- plain 200000
//! cargo run --release -p fabric-gossip-tonic --example alloc_count -- tls 200000 --one-thread
//! ```
//!
//! It prints heap allocations (and reallocations) per message and bytes allocated per
//! message, over the messages after a warm-up of 20,000. A fixed amount of work also makes
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
    let config = Config::default()
        .with_send_buffer(1024)
        .with_write_window(512)
        .with_subscription_buffer(1024);
    let (a, b) = common::start_pair(tls, config)
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tls = match args.first().map(String::as_str) {
        Some("plain") => false,
        Some("tls") => true,
        _ => {
            eprintln!("usage: alloc_count plain|tls [MESSAGES] [--one-thread]");
            std::process::exit(2);
        }
    };
    eprintln!(
        "sizes: ReceivedMessage {} GossipMessage {} Envelope {}",
        std::mem::size_of::<fabric_gossip_core::ReceivedMessage>(),
        std::mem::size_of::<GossipMessage>(),
        std::mem::size_of::<fabric_gossip_core::proto::gossip::Envelope>()
    );
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200_000);
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
    let r = rt.block_on(async { tokio::spawn(run(tls, n)).await });
    match r {
        Ok(Ok([allocs, reallocs, bytes])) => {
            let per = |x: u64| x as f64 / n as f64;
            println!(
                "{} {n} messages: {:.3} allocations, {:.3} reallocations, {:.0} bytes per message",
                if tls { "tls" } else { "plain" },
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
