//! Scale: one tonic node accepting thousands of authenticated peers, and `fabric-gossip node`
//! as a sink.
//!
//! ```text
//! cargo run --release -p fabric-gossip-tonic --example scale -- \
//!     [--peers 2000] [--rounds 250] [--bursts 3] [--concurrency 100] [--max-pending N]
//!     [--only plaintext|tls] [--tls-records auto|ring|aws-lc]
//! cargo build --release -p fabric-gossip-cli
//! cargo run --release -p fabric-gossip-tonic --example scale -- sink \
//!     --bin target/release/fabric-gossip [--payload none,hex,both] [--count 1000000]
//! ```
//!
//! **Hub.** One node (the hub, Org1MSP) accepts `--peers` nodes of Org2MSP, real X.509/ECDSA
//! identities from a development PKI (and mutual TLS with `tls`). The peers live in a
//! child process, so the hub's process holds the hub alone and its RSS before and after the
//! peers connect gives memory per connection directly. Each mode runs in a fresh hub process
//! of its own, so the second does not start from the first one's heap. Reported: time from
//! "dial" until the hub has every connection (the peers dial `--concurrency` at a time),
//! the hub's RSS per connection, then `--rounds` 1 KiB DataMessages each sent with one
//! `Node::send` to all peers, timed until the peers' process has received every copy; that
//! fan-out `--bursts` times, the first finding the peers' process cold (its memory faulted
//! in as it goes), the later ones as a long-running peer would be.
//!
//! **Sink.** Starts `fabric-gossip node --test-identity --payload P` with stdout on a pipe
//! that this process reads (counting lines, as `wc -l` would), sends it `--count` 1 KiB
//! DataMessages with `send_wait` from a node in this process, and reports received lines
//! printed per second, from the first to the last.
//!
//! This is an example rather than a criterion bench: a run is one-shot and expensive
//! (thousands of connections, a child process, seconds of set-up), and what it reports —
//! time to connect, RSS per connection — is not a per-iteration time criterion can repeat.

#[path = "../benches/common/mod.rs"]
mod common;

use fabric_gossip_core::proto::gossip::{Empty, GossipMessage, gossip_message};
use fabric_gossip_core::{Config, Event, PkiId, RemotePeer, SignedMessage, TestOnlyHmacSecurity};
use fabric_gossip_msp::dev::{self, DevOrg, OrgSpec, Validity};
use fabric_gossip_tonic::{DriverLimits, Node, TlsConfig};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ORG1_SEED: u64 = 1;
const ORG2_SEED: u64 = 2;
/// Upper bound on each phase; a run that exceeds it reports what it got and fails.
const PHASE: Duration = Duration::from_secs(180);
/// Dials a peer makes before it counts as not connected.
const CONNECT_TRIES: u32 = 3;

type Res<T> = Result<T, String>;

fn main() -> std::process::ExitCode {
    // The hub's allocator as `fabric-gossip node` runs it (README, "glibc's heap trimming").
    fabric_gossip_tonic::malloc::warm_glibc_malloc();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("--help" | "-h") => {
            println!("{}", usage());
            Ok(())
        }
        Some("__hub") => hub(&args[1..]),
        Some("__peers") => peers(&args[1..]),
        Some("sink") => sink(&args[1..]),
        _ => orchestrate(&args),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "scale [--peers 2000] [--rounds 250] [--bursts 3] [--concurrency 100] [--max-pending N] [--only plaintext|tls] [--tls-records auto|ring|aws-lc]\n\
     scale sink --bin PATH/fabric-gossip [--payload none,hex,both] [--count 1000000]"
}

/// `--name value` from `args`, or `default`.
fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn num(args: &[String], name: &str, default: u64) -> Res<u64> {
    let v = flag(args, name, &default.to_string());
    v.parse().map_err(|_| format!("{name} {v:?}: not a number"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The sum of the numbered fields of `/proc/<pid>/stat` (counted from 1, as in `proc(5)`;
/// 0 where unreadable).
fn stat_fields(pid: &str, fields: &[usize]) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, hence the last ')') start with
    // the state, field 3.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .filter_map(|&n| f.get(n.checked_sub(3)?)?.parse::<u64>().ok())
        .sum()
}

/// User + system CPU time of a process (`utime` and `stime`, fields 14 and 15, in ticks of
/// 10 ms).
fn cpu(pid: &str) -> Duration {
    Duration::from_millis(stat_fields(pid, &[14, 15]) * 10)
}

/// Page faults of a process so far (`minflt` and `majflt`, fields 10 and 12). Faulting in
/// fresh memory is dear on a virtual machine (`bench_report` prints what it costs): the
/// peers' share of a fan-out moves with how much of it they fault in.
fn faults(pid: &str) -> u64 {
    stat_fields(pid, &[10, 12])
}

fn raise_nofile() -> Res<u64> {
    rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))
}

fn data_message(len: usize) -> SignedMessage {
    SignedMessage::noop(fabric_gossip_core::data_message(1, vec![7u8; len]))
}

/// Where `needle` starts in `hay`. Candidates are found by their first byte, a quick scan:
/// comparing every window cost the sink's reader more than the node spent per line.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = 0;
    while let Some(i) = hay.get(at..)?.iter().position(|&b| b == first) {
        let start = at + i;
        if hay.get(start + 1..start + needle.len()) == Some(rest) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Res<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("bad hex {s:?}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Hub

/// Runs each mode in a hub process of its own and prints their reports.
fn orchestrate(args: &[String]) -> Res<()> {
    let only = flag(args, "--only", "both");
    let modes: &[&str] = match only.as_str() {
        "both" => &["plaintext", "tls"],
        "plaintext" => &["plaintext"],
        "tls" => &["tls"],
        o => return Err(format!("--only {o:?}: plaintext or tls\n{}", usage())),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!("load average at start: {}", loadavg());
    let ticks = common::VmTicks::now();
    for m in modes {
        let st = Command::new(&exe)
            .arg("__hub")
            .arg(m)
            .args(args)
            .status()
            .map_err(|e| format!("hub process: {e}"))?;
        if !st.success() {
            return Err(format!("{m}: hub process exited with {st}"));
        }
    }
    println!("load average at end: {}", loadavg());
    println!(
        "{}",
        common::host_verdict(common::VmTicks::steal_since(ticks)).0
    );
    Ok(())
}

/// The PKI both processes derive from the same seeds: Org1 (the hub) and Org2 (the
/// peers; only its CAs when `peers` is 0), and the trust store and TLS roots of both.
fn pki(
    peers: usize,
    start_secs: u64,
) -> Res<(DevOrg, DevOrg, fabric_gossip_msp::TrustStore, String)> {
    let start =
        fabric_gossip_core::Instant::from_system_time(UNIX_EPOCH + Duration::from_secs(start_secs));
    let validity = Validity::starting(start, Duration::from_secs(86_400));
    let org1 = DevOrg::generate(
        &OrgSpec::new("Org1MSP", "org1.example.com", 1),
        validity,
        &mut ChaCha20Rng::seed_from_u64(ORG1_SEED),
    )
    .map_err(|e| format!("org1: {e}"))?;
    let org2 = DevOrg::generate(
        &OrgSpec::new("Org2MSP", "org2.example.com", peers),
        validity,
        &mut ChaCha20Rng::seed_from_u64(ORG2_SEED),
    )
    .map_err(|e| format!("org2: {e}"))?;
    let tls_cas = org1.tls_ca.cert_pem() + &org2.tls_ca.cert_pem();
    let orgs = [org1, org2];
    let trust = dev::trust_all(&orgs).map_err(|e| format!("trust: {e}"))?;
    let [org1, org2] = orgs;
    Ok((org1, org2, trust, tls_cas))
}

/// Makes `--tls-records` (auto, ring or aws-lc) this process's TLS provider, before any
/// node takes the process's default; returns the library that seals the records.
fn install_records(name: &str) -> Res<&'static str> {
    let cipher: fabric_gossip_tonic::RecordCipher = name
        .parse()
        .map_err(|e| format!("--tls-records {e}\n{}", usage()))?;
    let _ = fabric_gossip_tonic::tls_crypto_provider_with(cipher).install_default();
    Ok(cipher.name())
}

/// One mode: the hub here, its peers in a child process.
fn hub(args: &[String]) -> Res<()> {
    let tls = match args.first().map(String::as_str) {
        Some("tls") => true,
        Some("plaintext") => false,
        o => return Err(format!("hub mode {o:?}")),
    };
    let args = &args[1..];
    let n = num(args, "--peers", 2000)? as usize;
    let rounds = num(args, "--rounds", 250)?;
    let bursts = num(args, "--bursts", 3)?.max(1) as usize;
    let concurrency = num(args, "--concurrency", 100)?;
    let nofile = raise_nofile()?;
    let start_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        - 3600;
    let (org1, _, trust, tls_cas) = pki(0, start_secs)?;
    let records = flag(args, "--tls-records", "auto");
    let sealed_by = install_records(&records)?;
    let me = std::process::id().to_string();
    let rt = runtime()?;
    let mut limits = DriverLimits::default();
    // The default (512) is a guard for a peer of an ordinary network; a hub of thousands
    // must be told.
    limits.max_inbound_connections = n + 64;
    // Connections count as pending at the hub until it has verified the peer's identity,
    // which can lag behind the peer seeing its own handshake done (and dialling the next)
    // when the hub is short of CPU: with the default 128 and 100 peers dialling at once, the
    // 129th pending connection evicted the oldest, a peer in the middle of its handshake
    // (seen once as 1,999 of 2,000 connected). A node that expects this many dials at once
    // must allow them; `evicted` below says whether any was. `--max-pending` overrides it
    // (128, the default, to see the evictions).
    let pending = limits
        .max_pending_connections
        .max(2 * concurrency as usize + 64);
    limits.max_pending_connections = num(args, "--max-pending", pending as u64)? as usize;
    // Every round must fit in each connection's buffer: this measures delivery, not drops.
    let config = Config::default().with_send_buffer(rounds as usize + 8);
    let limits_pending = limits.max_pending_connections;
    let hub = rt.block_on(async {
        let mut b = Node::builder(config).limits(limits);
        if tls {
            let p = &org1.peers[0];
            b = b.tls(TlsConfig::new(
                p.tls.cert_pem(),
                p.tls.key_pem.clone(),
                tls_cas.clone(),
            ));
        }
        let sec = org1
            .security(&org1.peers[0], trust.clone())
            .map_err(|e| format!("hub identity: {e}"))?;
        b.start(sec).await.map_err(|e| format!("hub: {e}"))
    })?;
    let mode = if tls {
        format!("mutual TLS (records sealed by {sealed_by})")
    } else {
        "plaintext".to_string()
    };

    // The peers' process: it generates the same PKI, starts its nodes and says "ready".
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("__peers").args([
        n.to_string(),
        hub.local_addr().to_string(),
        hex(hub.pki_id().as_bytes()),
        tls.to_string(),
        start_secs.to_string(),
        concurrency.to_string(),
        records.clone(),
    ]);
    let Piped {
        mut child,
        pid: child_pid,
        stdin: mut to_child,
        stdout: out,
    } = spawn_piped(&mut cmd, "peers process")?;
    let (tx, from_child) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let expect = |prefix: &str| -> Res<String> {
        loop {
            let l = from_child
                .recv_timeout(PHASE)
                .map_err(|_| format!("peers process: no {prefix:?} line"))?;
            if l.starts_with(prefix) {
                return Ok(l);
            }
        }
    };
    let mut peer_list = Vec::with_capacity(n);
    loop {
        let l = expect("")?;
        if l == "ready" {
            break;
        }
        if let Some(rest) = l.strip_prefix("peer ") {
            let (ep, id) = rest.split_once(' ').ok_or("peer line")?;
            peer_list.push(RemotePeer::new(ep, PkiId::from(unhex(id)?)));
        } else {
            return Err(format!("peers process: {l}"));
        }
    }

    // Connect.
    let rss_before = status_kib(&me, "VmRSS:");
    let cpu0 = cpu(&me);
    let t0 = Instant::now();
    writeln!(to_child, "go").map_err(|e| e.to_string())?;
    let connected = rt.block_on(async {
        let deadline = t0 + PHASE;
        loop {
            let k = hub.connections().len();
            if k >= n || Instant::now() > deadline {
                return k;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let connect_time = t0.elapsed();
    let connect_cpu = cpu(&me) - cpu0;
    let child_line = expect("connected")?;
    let rss_after = status_kib(&me, "VmRSS:");
    let per_conn = (rss_after as f64 - rss_before as f64) / n as f64;
    let ds = hub.driver_stats();
    let admission = format!(
        "inbound refused {}, evicted {}, setup time-outs {}",
        ds.inbound_refused, ds.inbound_evicted, ds.inbound_setup_timeouts
    );
    if connected < n {
        return Err(format!(
            "{mode}: only {connected} of {n} connected within {PHASE:?} ({child_line}; hub: {admission})"
        ));
    }

    let hwm_connected = status_kib(&me, "VmHWM:");
    println!(
        "{mode}: {n} peers (dialling {concurrency} at a time, max pending {limits_pending}), load {}, RLIMIT_NOFILE {nofile}\n  \
         connect: all {n} in {:.2} s ({:.0} conn/s), hub CPU {:.2} s ({:.0} µs per connection); peers: {child_line}; hub: {admission}\n  \
         memory: hub VmRSS {:.1} MiB empty -> {:.1} MiB connected = {per_conn:.1} KiB per connection (goal <= 64), VmHWM {:.1} MiB",
        loadavg(),
        connect_time.as_secs_f64(),
        n as f64 / connect_time.as_secs_f64(),
        connect_cpu.as_secs_f64(),
        connect_cpu.as_secs_f64() * 1e6 / n as f64,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm_connected as f64 / 1024.0,
    );

    // Fan out, `bursts` times: the first burst finds the peers' process cold (each peer's
    // HTTP/2 and TLS buffers, and the data in flight, fault in fresh memory), the later
    // ones as a long-running peer would be.
    let msg = data_message(1024);
    let total = rounds * n as u64;
    let mut rates = Vec::with_capacity(bursts);
    let mut after_conn = 0.0;
    for burst in 1..=bursts {
        writeln!(to_child, "fan {total}").map_err(|e| e.to_string())?;
        expect("armed")?;
        let dropped0 = hub.stats().dropped_overflow;
        let (cpu1, ccpu1) = (cpu(&me), cpu(&child_pid));
        let (faults1, cfaults1) = (faults(&me), faults(&child_pid));
        let child_rss1 = status_kib(&child_pid, "VmRSS:");
        let c2c0 = common::core_to_core_ns();
        let ticks = common::VmTicks::now();
        let t1 = Instant::now();
        rt.block_on(async {
            for r in 0..rounds {
                hub.send(&msg, &peer_list)
                    .map_err(|e| format!("send: {e}"))?;
                if r % 4 == 3 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, String>(())
        })?;
        let sent_in = t1.elapsed();
        let done = expect("done")?;
        let fan_time = t1.elapsed();
        let (fan_cpu, child_cpu) = (cpu(&me) - cpu1, cpu(&child_pid) - ccpu1);
        let (fan_faults, child_faults) = (
            faults(&me).saturating_sub(faults1),
            faults(&child_pid).saturating_sub(cfaults1),
        );
        let child_growth = status_kib(&child_pid, "VmRSS:") as f64 - child_rss1 as f64;
        let steal = common::steal_text(common::VmTicks::steal_since(ticks), 1);
        let c2c1 = common::core_to_core_ns();
        let dropped = hub.stats().dropped_overflow - dropped0;
        let rss_end = status_kib(&me, "VmRSS:");
        let rate = total as f64 / fan_time.as_secs_f64();
        rates.push(rate);
        after_conn = (rss_end as f64 - rss_before as f64) / n as f64;
        let which = if burst == 1 { "cold" } else { "warm" };
        println!(
            "  fan-out {burst} ({which}): {rounds} x 1 KiB to all {n} = {total} deliveries in {:.3} s = {rate:.0} deliveries/s (goal >= 500000); \
             send calls took {:.3} s; dropped {dropped}; hub CPU {:.2} s ({:.2} µs/delivery), peers' CPU {:.2} s ({:.2} µs/delivery); {done}\n    \
             page faults: hub {fan_faults}, peers {child_faults} (the peers' RSS {:+.1} MiB); \
             the two CPUs' cache-line round trip before and after it {} / {}; the host's steal {steal}; load {}\n    \
             hub VmRSS after {:.1} MiB = {after_conn:.1} KiB per connection beyond the empty node (goal <= 64)",
            fan_time.as_secs_f64(),
            sent_in.as_secs_f64(),
            fan_cpu.as_secs_f64(),
            fan_cpu.as_secs_f64() * 1e6 / total as f64,
            child_cpu.as_secs_f64(),
            child_cpu.as_secs_f64() * 1e6 / total as f64,
            child_growth / 1024.0,
            common::core_to_core_text(c2c0),
            common::core_to_core_text(c2c1),
            loadavg(),
            rss_end as f64 / 1024.0,
        );
        if !done.starts_with("done: the peers received all") {
            return Err(format!("{mode}: fan-out {burst}: {done}"));
        }
    }
    let hwm = status_kib(&me, "VmHWM:");
    println!("  hub VmHWM at the end {:.1} MiB", hwm as f64 / 1024.0);
    let _ = writeln!(to_child, "quit");
    let _ = child.wait();

    let show = |r: Option<&f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
    let mut warm = rates.get(1..).unwrap_or_default().to_vec();
    warm.sort_by(f64::total_cmp);
    println!(
        "SCALE mode={} peers={n} connect_s={:.3} kib_per_conn={per_conn:.1} kib_per_conn_after={after_conn:.1} deliveries_per_s_cold={} deliveries_per_s_warm_median={} evicted={}",
        if tls { "tls" } else { "plaintext" },
        connect_time.as_secs_f64(),
        show(rates.first()),
        show(warm.get(warm.len() / 2)),
        ds.inbound_evicted
    );
    rt.block_on(hub.stop());
    Ok(())
}

/// The peers' process: `n` nodes of Org2MSP that dial the hub on "go" and count what it
/// sends them.
fn peers(args: &[String]) -> Res<()> {
    let [n, hub_addr, hub_pki, tls, start_secs, concurrency, records] = args else {
        return Err("__peers N HUB_ADDR HUB_PKI TLS START_SECS CONCURRENCY RECORDS".into());
    };
    install_records(records)?;
    let n: usize = n.parse().map_err(|_| "N")?;
    let tls = tls == "true";
    let start_secs: u64 = start_secs.parse().map_err(|_| "START_SECS")?;
    let concurrency: usize = concurrency.parse().map_err(|_| "CONCURRENCY")?;
    let hub = RemotePeer::new(hub_addr.as_str(), PkiId::from(unhex(hub_pki)?));
    raise_nofile()?;
    let (_, org2, trust, tls_cas) = pki(n, start_secs)?;
    let rt = runtime()?;
    let count = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let reached = Arc::new(tokio::sync::Notify::new());
    let mut nodes = Vec::with_capacity(n);
    rt.block_on(async {
        for p in &org2.peers {
            let (etx, erx) = tokio::sync::mpsc::channel(64);
            let mut b = Node::builder(Config::default()).events(etx);
            if tls {
                b = b.tls(TlsConfig::new(
                    p.tls.cert_pem(),
                    p.tls.key_pem.clone(),
                    tls_cas.clone(),
                ));
            }
            let sec = org2
                .security(p, trust.clone())
                .map_err(|e| format!("peer identity: {e}"))?;
            let node = b.start(sec).await.map_err(|e| format!("peer: {e}"))?;
            let mut inbox = node.accept(|_| true).map_err(|e| e.to_string())?;
            let (count, target, reached) = (count.clone(), target.clone(), reached.clone());
            tokio::spawn(async move {
                while inbox.recv().await.is_some() {
                    let c = count.fetch_add(1, Ordering::Relaxed) + 1;
                    if c == target.load(Ordering::Relaxed) {
                        reached.notify_one();
                    }
                }
            });
            println!("peer {} {}", node.endpoint(), hex(node.pki_id().as_bytes()));
            nodes.push((node, erx));
        }
        Ok::<_, String>(())
    })?;
    println!("ready");
    let (ltx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if ltx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    rt.block_on(async {
        while let Some(l) = lines.recv().await {
            if l == "go" {
                let t = Instant::now();
                let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
                let opener = SignedMessage::noop(GossipMessage {
                    tag: gossip_message::Tag::Empty as i32,
                    content: Some(gossip_message::Content::Empty(Empty {})),
                    ..Default::default()
                });
                let mut tasks = Vec::with_capacity(n);
                for (node, mut events) in nodes.drain(..) {
                    let Ok(permit) = sem.clone().acquire_owned().await else {
                        break;
                    };
                    let (hub, opener) = (hub.clone(), opener.clone());
                    tasks.push(tokio::spawn(async move {
                        let _permit = permit;
                        // A peer whose connection failed dials again, as a Fabric peer's
                        // next message (or its membership layer) would; each retry is
                        // counted and reported.
                        let mut tries = 0;
                        let ok = loop {
                            tries += 1;
                            let ok = node.send_wait(&opener, &hub).await.is_ok()
                                && tokio::time::timeout(PHASE, async {
                                    while let Some(ev) = events.recv().await {
                                        match ev {
                                            Event::Connected { .. } => return true,
                                            // A connection lost before its handshake
                                            // ended (e.g. evicted by the hub while
                                            // pending) reaches a sender as PresumedDead.
                                            Event::HandshakeFailed { .. }
                                            | Event::Disconnected { .. }
                                            | Event::PresumedDead(_) => return false,
                                            _ => {}
                                        }
                                    }
                                    false
                                })
                                .await
                                .unwrap_or(false);
                            if ok || tries == CONNECT_TRIES {
                                break ok;
                            }
                        };
                        (node, ok, tries - 1)
                    }));
                }
                let (mut ok, mut retries) = (0, 0);
                let mut kept = Vec::with_capacity(n);
                for t in tasks {
                    if let Ok((node, k, r)) = t.await {
                        ok += usize::from(k);
                        retries += r;
                        kept.push(node);
                    }
                }
                println!(
                    "connected {ok} of {n} in {:.2} s as the peers saw it, {retries} dials retried",
                    t.elapsed().as_secs_f64()
                );
                // The nodes must outlive this loop.
                std::mem::forget(kept);
            } else if let Some(t) = l.strip_prefix("fan ") {
                let t: u64 = t.parse().unwrap_or(0);
                let goal = count.load(Ordering::Relaxed) + t;
                target.store(goal, Ordering::Relaxed);
                println!("armed");
                let (count, reached) = (count.clone(), reached.clone());
                let started = Instant::now();
                if tokio::time::timeout(PHASE, async {
                    while count.load(Ordering::Relaxed) < goal {
                        reached.notified().await;
                    }
                })
                .await
                .is_ok()
                {
                    println!("done: the peers received all {t}");
                } else {
                    println!(
                        "done: only {} of {t} in {:.1} s",
                        t - (goal - count.load(Ordering::Relaxed)),
                        started.elapsed().as_secs_f64()
                    );
                }
            } else if l == "quit" {
                break;
            }
        }
    });
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------
// Sink

/// `fabric-gossip node` fed by a node here; its stdout read as a pipe.
fn sink(args: &[String]) -> Res<()> {
    let bin = flag(args, "--bin", "target/release/fabric-gossip");
    let forms = flag(args, "--payload", "none,hex,both");
    let count = num(args, "--count", 1_000_000)?;
    let size = num(args, "--size", 1024)? as usize;
    println!("load average at start: {}", loadavg());
    let ticks = common::VmTicks::now();
    for form in forms.split(',') {
        sink_one(&bin, form, count, size)?;
    }
    println!("load average at end: {}", loadavg());
    println!(
        "{}",
        common::host_verdict(common::VmTicks::steal_since(ticks)).0
    );
    Ok(())
}

/// A child process the example talks to over its standard input and output.
struct Piped {
    child: Child,
    /// Its process id, for reading its CPU time.
    pid: String,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// Starts `cmd` with piped standard input and output (`what` names it in errors).
fn spawn_piped(cmd: &mut Command, what: &str) -> Res<Piped> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id().to_string();
    let stdin = child.stdin.take().ok_or("child stdin")?;
    let stdout = child.stdout.take().ok_or("child stdout")?;
    Ok(Piped {
        child,
        pid,
        stdin,
        stdout,
    })
}

fn sink_one(bin: &str, form: &str, count: u64, size: usize) -> Res<()> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "node",
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--payload",
        form,
    ])
    .stderr(Stdio::null());
    let Piped {
        mut child,
        pid,
        mut stdin,
        stdout,
    } = spawn_piped(&mut cmd, bin)?;
    let mut out = BufReader::with_capacity(1 << 16, stdout);
    let mut line = String::new();
    out.read_line(&mut line).map_err(|e| e.to_string())?;
    let addr = line
        .split("\"addr\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| format!("no address in {line:?}"))?
        .to_owned();
    // The reader: counts received lines and dropped ones, as a pipe reader would, until
    // every message is accounted for (or stdout closes).
    let reader = std::thread::spawn(move || {
        let (mut received, mut dropped, mut lost, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        let (mut first, mut last) = (None, Instant::now());
        let mut buf = Vec::with_capacity(4096);
        let number_after = |buf: &[u8], key: &[u8]| {
            find(buf, key).map(|p| {
                buf[p + key.len()..]
                    .iter()
                    .take_while(|c| c.is_ascii_digit())
                    .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'))
            })
        };
        while received + dropped + lost < count {
            buf.clear();
            match out.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => bytes += k as u64,
            }
            if find(&buf, b"\"event\":\"received\"").is_some() {
                received += 1;
                last = Instant::now();
                first.get_or_insert(last);
            } else if let Some(d) = number_after(&buf, b"\"lines\":") {
                dropped += d;
            } else if let Some(d) = number_after(&buf, b"\"dropped_subscription_overflow\":") {
                // Messages the node's core dropped before printing (its receive buffer,
                // Fabric's recvBuffSize, was full): cumulative.
                lost = d;
            }
        }
        let took = first.map(|f| last - f);
        (received, dropped, lost, bytes, took)
    });

    let rt = runtime()?;
    let (sent_in, node_cpu, sender) = rt.block_on(async {
        let me = Node::builder(Config::default().with_send_buffer(1024))
            .start_with(|a| TestOnlyHmacSecurity::new(a.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let peer = RemotePeer::new(addr.as_str(), PkiId::from(addr.as_str()));
        let msg = data_message(size);
        let cpu0 = cpu(&pid);
        let t = Instant::now();
        for _ in 0..count {
            me.send_wait(&msg, &peer)
                .await
                .map_err(|e| format!("send: {e}"))?;
        }
        // The node is kept until the reader is done: dropping it stops it, and the
        // messages still in its send buffer would be lost.
        Ok::<_, String>((t.elapsed(), cpu0, me))
    })?;
    // Lines dropped at the end are announced only before the next line: a `stats` command
    // makes one. A node that stops printing altogether is stopped at the deadline.
    let deadline = Instant::now() + PHASE;
    while !reader.is_finished() && Instant::now() < deadline {
        let _ = writeln!(stdin, "{{\"cmd\":\"stats\"}}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let node_cpu = cpu(&pid) - node_cpu;
    let _ = writeln!(stdin, "{{\"cmd\":\"stop\"}}");
    drop(stdin);
    if !reader.is_finished() {
        let _ = child.kill();
    }
    let (received, dropped, lost, bytes, took) = reader.join().map_err(|_| "reader panicked")?;
    let _ = child.wait();
    drop(sender);
    let took = took.unwrap_or_default();
    println!(
        "--payload {form}: {received} received lines ({dropped} lines dropped by the output queue, \
         {lost} messages by the receive buffer) of {count} x {size} B in {:.2} s \
         = {:.0} lines/s printed to a pipe (goal >= 300000); {:.0} bytes/line; sender done in {:.2} s; \
         node CPU {:.2} s ({:.2} µs/msg); load {}",
        took.as_secs_f64(),
        received as f64 / took.as_secs_f64(),
        bytes as f64 / received.max(1) as f64,
        sent_in.as_secs_f64(),
        node_cpu.as_secs_f64(),
        node_cpu.as_secs_f64() * 1e6 / count as f64,
        loadavg()
    );
    Ok(())
}
