//! Issue 10, finding 2: connections that never become useful must not lock peers out.
//!
//! 2,000 TCP connections that send nothing, or only the HTTP/2 preface, or stall in the
//! middle of the TLS handshake, while a legitimate peer dials, pings and handshakes again and
//! again. The process's open-file limit is set to 2,600 so that, as on a node with the usual
//! limits, holding every flood connection would exhaust the server's descriptors (before the
//! fix: `EMFILE`, a spinning accept loop and every peer locked out). Its own binary, since the
//! limit is the process's.

mod common;

use common::*;
use fabric_gossip_core::TestOnlyHmacSecurity;
use fabric_gossip_tonic::{DriverLimits, Node, TlsConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLOOD: usize = 2_000;
const OPEN_FILES: u64 = 2_600;
const HANDSHAKES: usize = 60;
const SETUP_TIMEOUT: Duration = Duration::from_secs(4);
/// The flood comes from another loopback address than the legitimate peer, as it would
/// from another host.
const ATTACKER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2)),
    0,
);

#[derive(Clone, Copy, Debug)]
enum Flood {
    /// TCP connections that send nothing.
    Idle,
    /// The HTTP/2 client preface, then nothing.
    Preface,
    /// The first bytes of a TLS ClientHello, then nothing.
    MidTls,
}

impl Flood {
    fn bytes(self) -> &'static [u8] {
        match self {
            Flood::Idle => b"",
            Flood::Preface => b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // A handshake record announcing 512 bytes, of which 9 arrive.
            Flood::MidTls => &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc],
        }
    }
}

fn limit_open_files() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    assert!(
        hard >= OPEN_FILES,
        "hard open-file limit {hard} < {OPEN_FILES}"
    );
    rlimit::setrlimit(rlimit::Resource::NOFILE, OPEN_FILES, hard).expect("setrlimit");
}

/// Opens the flood; each connection's task counts it once the server closed it.
async fn flood(
    addr: SocketAddr,
    kind: Flood,
    closed: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
    opened: Arc<tokio::sync::Notify>,
    connected: Arc<AtomicUsize>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..FLOOD {
        let connect = async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(ATTACKER)?;
            sock.connect(addr).await
        };
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
            // Refused or not accepted in time: counts as closed by the server.
            closed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        connected.fetch_add(1, Ordering::Relaxed);
        if !kind.bytes().is_empty() && s.write_all(kind.bytes()).await.is_err() {
            closed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let closed = closed.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Ok(_) => {}
                    },
                    _ = stop.notified() => return,
                }
            }
        });
    }
    opened.notify_one();
    while tasks.join_next().await.is_some() {}
}

/// Handshakes and probes from `a` to `b`, each timed; all must succeed.
async fn legitimate(kind: Flood, phase: &str, a: &Node, b: &Node, n: usize) -> Vec<Duration> {
    let peer = b.as_peer();
    let mut latencies = Vec::with_capacity(2 * n);
    for i in 0..n {
        let t = Instant::now();
        let r = within("legitimate handshake", a.handshake(&peer)).await;
        latencies.push(t.elapsed());
        assert!(r.is_ok(), "{kind:?} {phase}: handshake {i} failed: {r:?}");
        let t = Instant::now();
        within("legitimate probe", a.probe(&peer))
            .await
            .unwrap_or_else(|e| panic!("{kind:?} {phase}: probe {i} failed: {e}"));
        latencies.push(t.elapsed());
    }
    latencies.sort();
    eprintln!(
        "{kind:?} {phase}: {} handshakes and probes, p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1],
    );
    latencies
}

async fn run(kind: Flood) {
    let pki = Pki::new("ca");
    let tls =
        |cn: &str| -> Option<TlsConfig> { matches!(kind, Flood::MidTls).then(|| pki.tls(cn)) };
    let mut limits = DriverLimits::default();
    limits.setup_timeout = SETUP_TIMEOUT;
    let mut builder = Node::builder(config())
        .limits(limits)
        .stop_timeout(Duration::from_secs(3));
    if let Some(t) = tls("b") {
        builder = builder.tls(t);
    }
    let b = builder
        .start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts");
    let a = node(config(), tls("a")).await;

    // Warm up (first TLS handshake), then the same measurement without a flood: on a loaded
    // machine a debug build's TLS handshake alone can pass 50 ms at p99.
    legitimate(kind, "warm-up", &a, &b, 2).await;
    let quiet = legitimate(kind, "before the flood", &a, &b, HANDSHAKES).await;
    let quiet_p99 = quiet[quiet.len() * 99 / 100];

    let closed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::new(tokio::sync::Notify::new());
    let connected = Arc::new(AtomicUsize::new(0));
    let flood_task = tokio::spawn(flood(
        b.local_addr(),
        kind,
        closed.clone(),
        stop.clone(),
        opened.clone(),
        connected.clone(),
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    within("flood starts", async {
        while connected.load(Ordering::Relaxed) < 200 {
            tick.tick().await;
        }
    })
    .await;
    // While the flood is being opened: every legitimate attempt succeeds.
    let opening = legitimate(kind, "while the flood opens", &a, &b, 20).await;
    within("flood opened", opened.notified()).await;
    // While it is held (the pending ones live until the setup timeout): p99 under 50 ms.
    let held_since = Instant::now();
    let held = legitimate(kind, "while the flood is held", &a, &b, HANDSHAKES).await;
    let p99 = held[held.len() * 99 / 100];
    let stats = b.driver_stats();
    eprintln!("{kind:?}: {stats:?}");
    assert!(
        held_since.elapsed() < SETUP_TIMEOUT,
        "the measurement outlasted the flood"
    );
    // The goal is 50 ms on loopback (release builds measure 4-11 ms, see NOTES); a loaded
    // machine may need more even without a flood, so the flood may at most double that.
    let limit = Duration::from_millis(50).max(quiet_p99 * 2);
    assert!(
        p99 < limit,
        "{kind:?}: p99 {p99:?} while the flood is held (limit {limit:?}, {quiet_p99:?} without it)"
    );
    assert!(opening.len() == 40);

    // Every flood connection is closed: evicted at the pending cap, or at the setup timeout.
    within("flood closed", async {
        while closed.load(Ordering::Relaxed) < FLOOD {
            tick.tick().await;
        }
    })
    .await;
    let stats = b.driver_stats();
    assert!(
        stats.inbound_evicted + stats.inbound_setup_timeouts >= FLOOD as u64,
        "{stats:?}"
    );
    assert!(stats.inbound_setup_timeouts > 0, "{stats:?}");
    assert!(stats.inbound_open <= 2, "{stats:?}");
    stop.notify_waiters();
    within("flood ends", flood_task).await.unwrap();
    stop_all(&[&a, &b]).await;
}

/// With no descriptor left, `accept` fails (`EMFILE`): the server backs off (5 ms doubling
/// to 1 s) instead of retrying at once, and serves again once descriptors are free.
async fn accept_errors_back_off() {
    const WINDOW: Duration = Duration::from_millis(1500);
    let b = node(config(), None).await;
    let a = node(config(), None).await;
    // Sockets made while descriptors remain; connecting them needs none.
    let socks: Vec<_> = (0..30)
        .map(|_| tokio::net::TcpSocket::new_v4().unwrap())
        .collect();
    // Opened while descriptors remain: reading the CPU time later needs none.
    let mut stat = std::fs::File::open("/proc/self/stat").unwrap();
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    // The directory listing holds one descriptor while counting: the limit leaves none.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64 - 1;
    rlimit::setrlimit(rlimit::Resource::NOFILE, open, hard).unwrap();
    let before = b.driver_stats().accept_errors;
    let addr = b.local_addr();
    let mut held = Vec::new();
    for s in socks {
        held.push(tokio::spawn(async move { s.connect(addr).await }));
    }
    let cpu_before = cpu_time(&mut stat);
    tokio::time::sleep(WINDOW).await;
    let cpu = cpu_time(&mut stat) - cpu_before;
    let errors = b.driver_stats().accept_errors - before;
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    eprintln!("without descriptors for {WINDOW:?}: {errors} accept errors, {cpu:?} CPU");
    // Each error waits at least 5 ms (and evicts a pending connection to free a descriptor,
    // so each of the 30 waiting connections costs about one); retrying at once spun a core.
    assert!(errors >= 1, "the limit left a descriptor");
    assert!(
        errors as u128 <= WINDOW.as_millis() / 5,
        "{errors} accept errors in {WINDOW:?}"
    );
    assert!(cpu < WINDOW / 2, "{cpu:?} of CPU in {WINDOW:?}: spinning");
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    within("connections accepted once descriptors are free", async {
        while b.driver_stats().inbound_accepted < 30 {
            tick.tick().await;
        }
    })
    .await;
    within("handshake", a.handshake(&b.as_peer()))
        .await
        .expect("handshake after the descriptor shortage");
    drop(held);
    within("the shortage's connections closed", async {
        while b.driver_stats().inbound_open > 1 {
            tick.tick().await;
        }
    })
    .await;

    // A shortage that evicting frees nothing for: with the limit under the lowest free
    // descriptor, no accept can succeed, so the back-off is never reset and doubles: 5, 10,
    // 20 ... 640 ms, nine errors in 1.5 s. Above, each error freed a descriptor by evicting
    // the connection the accept before had let in, and the success after it reset the delay.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    let before = b.driver_stats().accept_errors;
    rlimit::setrlimit(rlimit::Resource::NOFILE, 3, hard).unwrap();
    let waiting = tokio::spawn(async move { sock.connect(addr).await });
    tokio::time::sleep(WINDOW).await;
    let errors = b.driver_stats().accept_errors - before;
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    eprintln!("no descriptor to be had for {WINDOW:?}: {errors} accept errors");
    // At a constant 5 ms it would be about 300; at 5 ms doubling, 9 (fewer if the timer is late).
    assert!(
        (5..=10).contains(&errors),
        "{errors} accept errors in {WINDOW:?}"
    );
    let accepted = b.driver_stats().inbound_accepted;
    within(
        "the waiting connection accepted at the back-off's next try",
        async {
            while b.driver_stats().inbound_accepted == accepted {
                tick.tick().await;
            }
        },
    )
    .await;
    drop(waiting);
    stop_all(&[&a, &b]).await;
}

/// CPU time this process used so far (user + system; Linux reports it in 1/100 s), read
/// through a `/proc/self/stat` opened beforehand, since the caller may have no descriptor left.
fn cpu_time(file: &mut std::fs::File) -> Duration {
    use std::io::{Read, Seek};
    file.rewind().unwrap();
    let mut stat = String::new();
    file.read_to_string(&mut stat).unwrap();
    // Fields after the command name (which is in parentheses): utime and stime are 12 and 13.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_floods_do_not_lock_peers_out() {
    limit_open_files();
    for kind in [Flood::Idle, Flood::Preface, Flood::MidTls] {
        run(kind).await;
    }
    accept_errors_back_off().await;
}
