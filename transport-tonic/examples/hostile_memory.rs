//! Peak memory of a node under hostile remotes, and a legitimate peer's latency meanwhile.
//!
//! `cargo run --release -p fabric-gossip-tonic --example hostile_memory` starts, for each
//! attack, a fresh node with the default `Config` and `DriverLimits` in a child process (so
//! its memory is its own, and none of it is left from an earlier attack), runs the attack
//! against it from this process while a legitimate node handshakes with it, and prints one
//! row per attack: the child's peak resident memory during the attack (VmRSS sampled every
//! 5 ms) and the legitimate handshakes' p50 / p99. The node prints its `DriverStats` to
//! stderr as it stops. `-- --quick` shortens the attacks.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{ChunkBody, config, framed_conn_establish, grpc_prefix, raw_stream};
use fabric_gossip_core::{Config, RemotePeer, TestOnlyHmacSecurity};
use fabric_gossip_tonic::{DriverLimits, Node};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--child") {
        return child();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(parent(quick));
}

/// The node under attack: default configuration, prints its address, runs until stdin ends.
fn child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let node = Node::builder(Config::default())
            .start_with(|a| TestOnlyHmacSecurity::new(a.to_string()))
            .await
            .expect("node starts");
        // A subscriber that reads, as a running peer has.
        let mut inbox = node.accept(|_| true).unwrap();
        tokio::spawn(async move { while inbox.recv().await.is_some() {} });
        println!("{}", node.endpoint());
        std::io::stdout().flush().unwrap();
        let stats = node.clone();
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                eprintln!("{:?}", stats.driver_stats());
                line.clear();
            }
        })
        .await
        .unwrap();
        node.stop().await;
    });
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Samples the child's VmRSS until `stop`, keeping the maximum (KiB).
fn sampler(pid: u32, stop: Arc<AtomicBool>, peak: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

async fn legit_latency(a: &Node, peer: &RemotePeer, until: Instant) -> (Vec<Duration>, usize) {
    let mut lat = Vec::new();
    let mut failed = 0;
    while Instant::now() < until {
        let t = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), a.handshake(peer)).await {
            Ok(Ok(_)) => lat.push(t.elapsed()),
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    (lat, failed)
}

fn pct(lat: &[Duration], p: usize) -> String {
    if lat.is_empty() {
        return "-".into();
    }
    format!(
        "{:.2}",
        lat[(lat.len() * p / 100).min(lat.len() - 1)].as_secs_f64() * 1e3
    )
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    None,
    IdleFlood,
    PrefaceFlood,
    HalfSentBeforeHandshake,
    /// The same from 100 remotes at once, under the 128 pending connections a node holds:
    /// each leaves up to a flow-control window unread once the budget is spent.
    HalfSentBeforeHandshakeBy100,
    HalfSentAfterHandshake,
    Oversized,
}

async fn run_attack(attack: Attack, addr: SocketAddr, dur: Duration) {
    let attacker: SocketAddr = "127.0.0.2:0".parse().unwrap();
    match attack {
        Attack::None => tokio::time::sleep(dur).await,
        Attack::IdleFlood | Attack::PrefaceFlood => {
            let mut held = Vec::new();
            for _ in 0..2000 {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind(attacker).unwrap();
                if let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(2), sock.connect(addr)).await
                {
                    if matches!(attack, Attack::PrefaceFlood) {
                        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                    }
                    held.push(s);
                }
            }
            tokio::time::sleep(dur).await;
            drop(held);
        }
        Attack::HalfSentBeforeHandshake
        | Attack::HalfSentBeforeHandshakeBy100
        | Attack::HalfSentAfterHandshake => {
            let mib = Bytes::from(vec![0u8; 1 << 20]);
            let mut peers = Vec::new();
            let n = if matches!(attack, Attack::HalfSentBeforeHandshakeBy100) {
                100
            } else {
                8
            };
            for i in 0..n {
                let mut chunks = if matches!(attack, Attack::HalfSentAfterHandshake) {
                    framed_conn_establish(&format!("attacker:{i}"))
                } else {
                    Vec::new()
                };
                chunks.push(grpc_prefix(99 << 20));
                chunks.extend(std::iter::repeat_n(mib.clone(), 95));
                let a = addr.to_string();
                peers.push(tokio::spawn(async move {
                    raw_stream(&a, ChunkBody::new(chunks, true)).await
                }));
            }
            let _ = tokio::time::timeout(dur, async {
                for p in peers {
                    let _ = p.await;
                }
            })
            .await;
        }
        Attack::Oversized => {
            let end = Instant::now() + dur;
            while Instant::now() < end {
                let body = ChunkBody::new(
                    vec![grpc_prefix(200 << 20), Bytes::from(vec![0; 1 << 20])],
                    true,
                );
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    raw_stream(&addr.to_string(), body),
                )
                .await;
            }
        }
    }
}

/// The node under attack, in a child process of its own.
struct Target {
    child: std::process::Child,
    pid: u32,
    peer: RemotePeer,
    addr: SocketAddr,
}

impl Target {
    fn start() -> Target {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .arg("--child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("child starts");
        let pid = child.id();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr: SocketAddr = line.trim().parse().unwrap();
        let peer = RemotePeer::new(addr.to_string(), addr.to_string().as_str());
        Target {
            child,
            pid,
            peer,
            addr,
        }
    }

    /// Has the node print its `DriverStats` (to stderr) and stop.
    fn stop(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        let _ = writeln!(stdin);
        drop(stdin);
        let _ = self.child.wait();
    }
}

async fn parent(quick: bool) {
    let a = Node::builder(config())
        .limits(DriverLimits::default())
        .start_with(|x| TestOnlyHmacSecurity::new(x.to_string()))
        .await
        .unwrap();
    // Half-sent messages are only reset after the default 10 s stall timeout.
    let long = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(13)
    };
    let short = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    // Each attack meets a fresh node: what one attack makes a node hold, not what glibc
    // kept of the attacks before it (README, "Hostile input").
    println!(
        "| attack (default Config and DriverLimits; a fresh node each) | node peak RSS, sampled (MiB) | legit handshake p50 / p99 (ms) | failed |"
    );
    println!("|---|---|---|---|");
    for attack in [
        Attack::None,
        Attack::IdleFlood,
        Attack::PrefaceFlood,
        Attack::Oversized,
        Attack::HalfSentBeforeHandshake,
        Attack::HalfSentBeforeHandshakeBy100,
        Attack::HalfSentAfterHandshake,
    ] {
        let dur = match attack {
            Attack::HalfSentBeforeHandshake
            | Attack::HalfSentBeforeHandshakeBy100
            | Attack::HalfSentAfterHandshake => long,
            _ => short,
        };
        let target = Target::start();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let s = sampler(target.pid, stop.clone(), peak.clone());
        let until = Instant::now() + dur;
        let (lat, failed) = tokio::join!(
            legit_latency(&a, &target.peer, until),
            run_attack(attack, target.addr, dur)
        )
        .0;
        stop.store(true, Ordering::Relaxed);
        s.join().unwrap();
        println!(
            "| {attack:?} | {:.1} | {} / {} | {failed} of {} |",
            peak.load(Ordering::Relaxed) as f64 / 1024.0,
            pct(&lat, 50),
            pct(&lat, 99),
            lat.len() + failed
        );
        target.stop();
    }
    a.stop().await;
}
