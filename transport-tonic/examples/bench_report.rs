//! The performance report of the tonic transport: one run that measures every figure of the
//! performance goals on this machine and prints them next to Fabric v2.4.9's comm layer
//! (measured on the same kind of machine) and the goals, as a Markdown table.
//!
//! ```text
//! cargo run --release -p fabric-gossip-tonic --example bench_report            # ~70 s
//! cargo run --release -p fabric-gossip-tonic --example bench_report -- --quick # ~10 s
//! cargo run --release -p fabric-gossip-tonic --example bench_report -- --only tls
//! ```
//!
//! `--only` runs one group: raw (with HTTP/2 alone), plain, tls, blocks (64 KiB messages,
//! plaintext and TLS), fabric, drops, acks or latency.
//!
//! Workload: two nodes on 127.0.0.1 in this process, on one tokio runtime with 2 workers (the
//! target machine has 2 cores, shared by sender and receiver as Fabric's two peers shared
//! theirs), Fabric's unit-test security provider (`TestOnlyHmacSecurity`), 1 KiB
//! DataMessages, noop-signed as Fabric's `Send` puts them on the wire.
//!
//! * **Raw TCP baseline**: the same Envelope bytes, u32-length-prefixed, over one tokio
//!   `TcpStream`, buffered writes, zero-copy frame splitting on read. No gRPC, no HTTP/2, no
//!   core: what one loopback connection carries here, i.e. the ceiling for us.
//! * **HTTP/2 alone** (with the raw baseline): the same Envelopes, gRPC-framed, over one
//!   stream on `h2` with the driver's windows and frame size, nothing encoded or decoded;
//!   and, with the SendWithAck rows, 16 messages in flight answered by acks the same way on
//!   one thread. The floor under any gRPC transport of these messages: what the rows above
//!   it cost beyond this is the gossip layer's own.
//! * **Lossless one-way**: `send_wait` (waits for buffer room, never drops) over one
//!   connection, the receiver reading `accept`; every message carries a sequence number that
//!   the receiver checks, so "lossless and in order" is verified, not assumed. Measured
//!   twice: both nodes on the 2 workers, then each node on a current-thread runtime of its
//!   own thread (the sender's node on one, the receiver's on the other), the layout of two
//!   peers in two processes, where tokio cannot move one node's tasks onto the other's
//!   thread. The senders cycle through 64 pre-encoded messages (64 KiB, which stays in
//!   cache, as a message just encoded would; the raw baseline sends one).
//! * **Unpaced `send`**: Fabric's semantics, drop on full buffer; the share dropped with send
//!   buffer 20 (Fabric's code default) and 200 (its sample `core.yaml`).
//! * **SendWithAck**: 1 caller and 16 concurrent callers against a peer that acks
//!   everything, each call passing the same message encoded once
//!   (`Node::send_with_ack_signed`, as Fabric's callers pass a `SignedGossipMessage`);
//!   then 16 callers again with each node on a current-thread runtime of its
//!   own thread (the node and its callers on one, the acking node on the other: the layout
//!   two peers in two processes would each have, see the crate docs, "Runtimes"). Runs in a
//!   child process of this example (`--child acks`) so that its peak RSS (`VmHWM`) is its
//!   own, not that of the throughput runs before it. Its rows also give the context
//!   switches per ack of all the child's threads: many more than 0.02 per ack mean the run
//!   fell into the slow mode of an idle machine, where hand-offs put threads to sleep.
//! * **Latency**: new connection to first delivery (close the connection, `send`, wait for the
//!   delivery: dial, Ping, stream, two-way handshake, message) and `probe` (dial and Ping),
//!   each over many fresh connections; p50 and p99.
//!
//! Each workload is bounded in time (a few seconds; a fraction with `--quick`); every wait is
//! bounded too, and a workload that cannot finish reports the failure instead of hanging.
#![allow(clippy::print_stdout)]

#[path = "../benches/common/mod.rs"]
mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fabric_gossip_core::proto::gossip::{GossipMessage, gossip_message};
use fabric_gossip_core::{Config, RemotePeer, SignedMessage};
use fabric_gossip_tonic::{DriverLimits, Incoming, Node};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// Payload bytes of each DataMessage.
const PAYLOAD: usize = 1024;
/// Payload bytes of each message of the `blocks` rows: a small Fabric block. At 1 KiB the
/// costs per message hide those per byte (copies, the TLS cipher); at this size they show.
const BLOCK_PAYLOAD: usize = 64 * 1024;
/// Distinct pre-encoded messages the senders cycle through: the receiver checks each
/// sequence number (mod this), and the sender's cost stays the transport's, not protobuf
/// encoding's. Few enough to stay in cache (64 KiB), as a message a sender has just encoded
/// would be: with 4,096 (4 MiB) each copy read memory the cache had lost, which the raw
/// baseline, sending one Envelope, never paid. The count of messages received is checked
/// too, so a loss of a multiple of this many is still caught.
const RING: u64 = 64;
/// Longest any single wait may take before the workload is declared failed.
const STALL: Duration = Duration::from_secs(10);

/// How long each part runs.
#[derive(Clone, Copy)]
struct Budget {
    /// Unmeasured run before each throughput figure (connects, grows buffers).
    warmup: Duration,
    /// One measured round; each throughput figure is the median of `rounds` of them, since
    /// the machine is shared and a single round can catch someone else's compile.
    round: Duration,
    rounds: usize,
    latency_samples: usize,
}

impl Budget {
    fn new(quick: bool) -> Self {
        if quick {
            Budget {
                warmup: Duration::from_millis(100),
                round: Duration::from_millis(200),
                rounds: 3,
                latency_samples: 40,
            }
        } else {
            Budget {
                warmup: Duration::from_millis(300),
                round: Duration::from_millis(800),
                rounds: 5,
                latency_samples: 200,
            }
        }
    }
}

type Res<T> = Result<T, String>;

const USAGE: &str = "\
Usage: bench_report [--quick] [--only WORKLOAD] [--tls-records auto|ring|aws-lc] [--cold-malloc]

Measures the tonic transport on this machine and prints a Markdown table (stdout) beside
Fabric v2.4.9's figures and the goals, with the load average during each workload and the
share of this VM's CPU time its host took for other guests (steal): above 2 % the run is
marked as one from a loaded machine.

Options:
  --quick           short rounds (~10 s in all instead of ~70 s)
  --only WORKLOAD   run one group: raw (with HTTP/2 alone), plain, tls, ratio (raw TCP,
                    plaintext and TLS taking turns round by round: issue 12's ratios),
                    blocks (64 KiB messages, plaintext and TLS), fabric, drops, acks or
                    latency
  --tls-records LIB which library seals and opens the TLS records (AES-GCM): auto (the
                    node's choice for this CPU, the default), ring or aws-lc; run the
                    report once with each to compare them on this machine
  --cold-malloc     leave glibc's allocator as a fresh process has it, trimming its heaps'
                    tops at 128 KiB free, instead of warming it first as `fabric-gossip node`
                    does (fabric_gossip_tonic::malloc::warm_glibc_malloc)
  -h, --help        print this help

Build with --release: a debug build measures the compiler, not the transport.";

/// What the command line asked for.
struct Args {
    quick: bool,
    only: Option<String>,
    /// `None`: the node's own choice for this CPU.
    tls_records: Option<fabric_gossip_tonic::RecordCipher>,
    /// Internal: run the SendWithAck workload as the parent's child process.
    child_acks: bool,
    /// Internal: run the HTTP/2-alone workload as the parent's child process.
    child_h2: bool,
    /// Leave glibc's allocator cold (children too).
    cold_malloc: bool,
}

impl Args {
    /// `Ok(None)`: help was asked for.
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let mut args = Args {
            quick: false,
            only: None,
            tls_records: None,
            child_acks: false,
            child_h2: false,
            cold_malloc: false,
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "-h" | "--help" => return Ok(None),
                "--quick" => args.quick = true,
                "--cold-malloc" => args.cold_malloc = true,
                "--only" => {
                    let w = it.next().ok_or("--only needs a workload")?;
                    if !WORKLOADS.contains(&w.as_str()) {
                        return Err(format!("unknown workload {w:?}; one of {WORKLOADS:?}"));
                    }
                    args.only = Some(w);
                }
                "--tls-records" => {
                    let v = it
                        .next()
                        .ok_or("--tls-records needs auto, ring or aws-lc")?;
                    let cipher = v.parse().map_err(|e| format!("--tls-records {e}"))?;
                    args.tls_records = (v != "auto").then_some(cipher);
                }
                "--child" => match it.next().as_deref() {
                    Some("acks") => args.child_acks = true,
                    Some("h2") => args.child_h2 = true,
                    other => return Err(format!("unknown child {other:?}")),
                },
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(Some(args))
    }
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("bench_report: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    // First, before anything allocates: the report measures the allocator as the node
    // binary runs it, unless asked not to (README, "glibc's heap trimming").
    if args.cold_malloc {
        COLD_MALLOC.store(true, std::sync::atomic::Ordering::Relaxed);
    } else {
        fabric_gossip_tonic::malloc::warm_glibc_malloc();
    }
    let quick = args.quick;
    let budget = Budget::new(quick);
    // Before any node: a node's TLS (both sides) takes the process's default provider.
    let records = args
        .tls_records
        .unwrap_or_else(fabric_gossip_tonic::RecordCipher::for_this_cpu);
    if args.tls_records.is_some() {
        let _ = fabric_gossip_tonic::tls_crypto_provider_with(records).install_default();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.child_h2 {
        // The HTTP/2-alone child: one machine-readable line for the parent.
        match on_workers(&rt, h2_alone(budget)) {
            Ok(t) => println!("H2 rounds={}", t.encode()),
            Err(e) => println!("H2 error={e}"),
        }
        return;
    }
    if args.child_acks {
        // The SendWithAck child: one machine-readable line for the parent.
        let line = match acks_workload(&rt, budget) {
            Ok(a) => format!(
                "ACKS one={} sixteen={} per_node={} one_thread={} hwm_kib={} rss_min_kib={} \
                 rss_max_kib={} failed={}",
                a.one.encode(),
                a.sixteen.encode(),
                a.per_node.encode(),
                a.one_thread.encode(),
                a.hwm_kib,
                a.rss_min_kib,
                a.rss_max_kib,
                a.failed
            ),
            Err(e) => format!("ACKS error={e}"),
        };
        println!("{line}");
        return;
    }
    report(
        &rt,
        budget,
        quick,
        args.only.as_deref(),
        records,
        args.tls_records.is_none(),
    );
}

// ------------------------------------------------------------------------ the report

/// Every figure of the report, one field per workload `--only` can pick; `None` for
/// workloads not selected.
#[derive(Default)]
struct Figures {
    raw: Option<Res<Throughput>>,
    /// The same messages over HTTP/2 with nothing of gossip (measured with `raw`).
    h2: Option<Res<Throughput>>,
    plain: Option<Res<Throughput>>,
    tls: Option<Res<Throughput>>,
    /// The same with each node on a current-thread runtime of its own thread.
    plain_per_node: Option<Res<Throughput>>,
    tls_per_node: Option<Res<Throughput>>,
    /// Lossless with 64 KiB messages, plaintext and mutual TLS.
    blocks: Option<[Res<Throughput>; 2]>,
    /// Lossless with Fabric's send buffers: 20 (its default) and 200 (its sample peer).
    fabric: Option<[Res<Throughput>; 2]>,
    /// Unpaced sends with send buffer 20 and 200.
    drops: Option<[Res<Drops>; 2]>,
    acks: Option<Res<AcksFigures>>,
    /// What two threads taking turns cost on this machine (measured with the acks).
    wakeups: Option<Res<Wakeups>>,
    /// SendWithAck's floor: 16 messages in flight and their acks over HTTP/2 alone.
    acks_h2: Option<Res<Throughput>>,
    latency: Option<LatencyFigures>,
    /// With raw, plain and tls taking turns: the two CPUs' cache-line round trip before
    /// each of their rounds, ns (`core_to_core_ns`).
    c2c: Option<[Vec<f64>; 3]>,
    /// With raw, plain and tls taking turns: the host's share of the VM's CPU time during
    /// each of their rounds, per cent (steal).
    steal: Option<[Vec<Option<f64>>; 3]>,
    /// What faulting in fresh memory costs on this machine (measured with the one-way rows).
    fault_cost: Option<Res<FaultCost>>,
}

/// The `latency` workload: a new connection until its first delivery, and a probe, each
/// in plaintext and under mutual TLS.
struct LatencyFigures {
    conn_plain: Res<Latency>,
    conn_tls: Res<Latency>,
    probe_plain: Res<Latency>,
    probe_tls: Res<Latency>,
}

/// Workloads `--only` can pick (one figure group per run, e.g. for profiling).
const WORKLOADS: [&str; 9] = [
    "raw", "plain", "tls", "ratio", "blocks", "fabric", "drops", "acks", "latency",
];

fn report(
    rt: &tokio::runtime::Runtime,
    budget: Budget,
    quick: bool,
    only: Option<&str>,
    records: fabric_gossip_tonic::RecordCipher,
    records_chosen_by_cpu: bool,
) {
    let started = Instant::now();
    let load_start = loadavg();
    let ticks_start = common::VmTicks::now();
    let run = |w: &str| only.is_none_or(|o| o == w);
    let step = |name: &str| eprintln!("  [{:5.1} s] {name}", started.elapsed().as_secs_f64());
    eprintln!("bench_report: measuring (quick={quick}); progress on stderr, table on stdout");
    let mut f = Figures::default();
    let reported0 = reported_kib();
    // The 1-minute load average as each group ends, printed beside its rows: the rates
    // move with whatever else runs on the machine.
    let mut loads: Vec<(&str, String)> = Vec::new();
    // Issue 12's ratios compare rows measured at different moments, and this machine's
    // speed drifts by a third from one minute to the next (the raw baseline alone has
    // spanned 1.4-3.6 M msg/s within one run). With all three selected, their rounds take
    // turns, so each round of ours has a raw round beside it (`paired_ratios`).
    let paired = only == Some("ratio") || only.is_none();
    if paired {
        let c0 = GroupStart::now();
        step("raw TCP, lossless plaintext and mutual TLS, round by round in turn");
        let [raw, plain, tls] = match on_workers(rt, interleaved(budget)) {
            Ok(t) => {
                f.c2c = Some(t.c2c);
                f.steal = Some(t.steal);
                t.rounds.map(Ok)
            }
            Err(e) => [0, 1, 2].map(|_| Err(e.clone())),
        };
        (f.raw, f.plain, f.tls) = (Some(raw), Some(plain), Some(tls));
        if only.is_some() {
            let c = conditions(c0);
            loads.extend(["raw", "plain", "tls"].map(|g| (g, c.clone())));
        }
    }
    if run("raw") {
        let c0 = GroupStart::now();
        if !paired {
            step("raw TCP baseline");
            f.raw = Some(on_workers(rt, raw_tcp(budget)));
        }
        step("HTTP/2 alone (child process)");
        f.h2 = Some(h2_child(quick));
        loads.push(("raw", conditions(c0)));
    }
    if run("plain") {
        let c0 = GroupStart::now();
        if !paired {
            step("lossless one-way, plaintext");
            f.plain = Some(on_workers(rt, one_way(false, budget)));
        }
        step("lossless one-way, plaintext, a runtime per node");
        f.plain_per_node = Some(one_way_per_node(false, budget));
        loads.push(("plain", conditions(c0)));
    }
    if run("tls") {
        let c0 = GroupStart::now();
        if !paired {
            step("lossless one-way, mutual TLS");
            f.tls = Some(on_workers(rt, one_way(true, budget)));
        }
        step("lossless one-way, mutual TLS, a runtime per node");
        f.tls_per_node = Some(one_way_per_node(true, budget));
        loads.push(("tls", conditions(c0)));
    }
    if run("blocks") {
        let c0 = GroupStart::now();
        step("lossless one-way, 64 KiB messages, plaintext and mutual TLS");
        f.blocks = Some([false, true].map(|tls| on_workers(rt, one_way_blocks(tls, budget))));
        loads.push(("blocks", conditions(c0)));
    }
    if run("fabric") {
        let c0 = GroupStart::now();
        step("lossless one-way with Fabric's buffers (send buffer 20 / 200, write window 8)");
        f.fabric = Some(
            [Config::default(), Config::fabric_sample_peer()]
                .map(|cfg| on_workers(rt, one_way_cfg(false, budget, cfg))),
        );
        loads.push(("fabric", conditions(c0)));
    }
    if run("drops") {
        let c0 = GroupStart::now();
        step("unpaced send, buffer 20 and 200");
        f.drops = Some([20, 200].map(|buffer| on_workers(rt, unpaced(buffer, budget))));
        loads.push(("drops", conditions(c0)));
    }
    if run("acks") {
        let c0 = GroupStart::now();
        step("SendWithAck (child process)");
        f.acks = Some(acks_child(quick));
        f.wakeups = Some(wakeups(budget));
        f.acks_h2 = Some(current_thread().and_then(|rt| rt.block_on(h2_acks(budget))));
        loads.push(("acks", conditions(c0)));
    }
    if run("latency") {
        let c0 = GroupStart::now();
        step("new connection to first delivery, probe");
        f.latency = Some(LatencyFigures {
            conn_plain: on_workers(rt, connect_latency(false, budget)),
            conn_tls: on_workers(rt, connect_latency(true, budget)),
            probe_plain: on_workers(rt, probe_latency(false, budget)),
            probe_tls: on_workers(rt, probe_latency(true, budget)),
        });
        loads.push(("latency", conditions(c0)));
    }
    if run("raw") || run("plain") || run("tls") {
        f.fault_cost = Some(fault_cost());
    }
    let load_end = loadavg();
    let steal = common::VmTicks::steal_since(ticks_start);
    let reported = reported0
        .zip(reported_kib())
        .map(|(a, b)| b.saturating_sub(a));
    step("done");

    let mut t = String::new();
    let _ = writeln!(t, "\n## fabric-gossip-tonic performance report\n");
    let _ = writeln!(
        t,
        "Machine: {} CPU(s) ({}), {}; load average at start {load_start}, at end {load_end}; \
         {}; {:.0} s{}; GLIBC_TUNABLES {}; glibc's allocator {}; {}; TLS records sealed by {} ({}).\n",
        nproc(),
        cpu_model(),
        kernel(),
        host_share(steal),
        started.elapsed().as_secs_f64(),
        if quick { ", --quick" } else { "" },
        // glibc's heap trimming moves the TLS rows by up to 40 % (docs/performance-log.md,
        // "glibc's heap trimming"): a report says which allocator settings it ran with.
        std::env::var("GLIBC_TUNABLES")
            .ok()
            .filter(|v| !v.is_empty())
            .map_or_else(|| "unset".to_string(), |v| format!("`{v}`")),
        if COLD_MALLOC.load(std::sync::atomic::Ordering::Relaxed) {
            "cold (--cold-malloc)"
        } else {
            "warmed first, as `fabric-gossip node` does"
        },
        halt_polling(),
        records.name(),
        if records_chosen_by_cpu {
            "the node's choice for this CPU"
        } else {
            "--tls-records"
        },
    );
    let _ = writeln!(
        t,
        "Both nodes in this process on one tokio runtime with 2 workers (rows that say so: \
         each node on a current-thread runtime of its own thread), 127.0.0.1, \
         TestOnlyHmacSecurity, {PAYLOAD} B DataMessages ({} B Envelopes). Throughput: median \
         of {} rounds of {:.2} s (range), and CPU time of the process per message. Lossless \
         rows use send buffer 1024, write window 512, subscription buffer 64 (1024 in the \
         rows with a runtime per node, whose consumer shares the node's thread) unless they \
         say otherwise; the other rows use Fabric's defaults.\n",
        message(0).envelope_bytes().len(),
        budget.rounds,
        budget.round.as_secs_f64(),
    );
    let _ = writeln!(
        t,
        "| workload | ours | Fabric v2.4.9 | goal | met? | load (1 min); core to core (start → end) |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    let load_of = |g: &str| {
        loads
            .iter()
            .find(|(w, _)| *w == g)
            .map_or_else(|| "—".to_string(), |(_, l)| l.clone())
    };
    let mut row = |g: &str, w: &str, ours: String, fabric: &str, goal: &str, ok: Option<bool>| {
        let met = match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let load = load_of(g);
        let _ = writeln!(t, "| {w} | {ours} | {fabric} | {goal} | {met} | {load} |");
    };
    fn cell<T>(r: &Res<T>, show: impl Fn(&T) -> String) -> String {
        match r {
            Ok(x) => show(x),
            Err(e) => format!("FAILED: {e}"),
        }
    }
    let tp = |r: &Res<Throughput>| cell(r, |x| x.cell("msg"));
    let (fab20, fab200) = match &f.fabric {
        Some([b20, b200]) => (Some(b20), Some(b200)),
        None => (None, None),
    };
    // (group, workload, result, Fabric's figure, goal, the goal in msg/s if there is one)
    let lossless = [
        (
            "plain",
            "lossless one-way, plaintext, 1 connection",
            f.plain.as_ref(),
            "≈ 37,000 (buffer 20), ≈ 60,000 (200)",
            "≥ 300,000",
            Some(300_000.0),
        ),
        (
            "tls",
            "lossless one-way, mutual TLS, 1 connection",
            f.tls.as_ref(),
            "—",
            "≥ 200,000",
            Some(200_000.0),
        ),
        (
            "plain",
            "lossless one-way, plaintext, each node on its own current-thread runtime",
            f.plain_per_node.as_ref(),
            "—",
            "≥ 300,000",
            Some(300_000.0),
        ),
        (
            "tls",
            "lossless one-way, mutual TLS, each node on its own current-thread runtime",
            f.tls_per_node.as_ref(),
            "—",
            "≥ 200,000",
            Some(200_000.0),
        ),
        (
            "fabric",
            "lossless one-way, plaintext, send buffer 20, write window 8",
            fab20,
            "≈ 37,000",
            "—",
            None,
        ),
        (
            "fabric",
            "lossless one-way, plaintext, send buffer 200, write window 8",
            fab200,
            "≈ 60,000",
            "—",
            None,
        ),
    ];
    for (g, w, r, fabric, goal, min) in lossless {
        if let Some(r) = r {
            let ok = min.map(|m| r.as_ref().is_ok_and(|x| x.median() >= m));
            row(g, w, tp(r), fabric, goal, ok);
        }
    }
    if let Some(blocks) = &f.blocks {
        let envelope = message_of(0, BLOCK_PAYLOAD).envelope_bytes().len() as f64;
        for (r, how) in blocks.iter().zip(["plaintext", "mutual TLS"]) {
            let ours = cell(r, |x| {
                format!(
                    "{} MB/s ({}; {:.2} µs CPU per KiB)",
                    thousands(x.median() * envelope / 1e6),
                    x.cell("msg"),
                    x.cpu_us_per_msg() * 1024.0 / envelope
                )
            });
            let w = format!(
                "lossless one-way, {} KiB messages, {how}",
                BLOCK_PAYLOAD / 1024
            );
            row("blocks", &w, ours, "—", "—", None);
        }
    }
    if let Some(r) = &f.raw {
        row(
            "raw",
            "raw TCP, u32-length-prefixed 1 KiB frames, 1 connection (the limit)",
            tp(r),
            "—",
            "—",
            None,
        );
        if let Some(h) = &f.h2 {
            row(
                "raw",
                "HTTP/2 alone: the same Envelopes gRPC-framed on one h2 stream, the driver's \
                 windows and frames; nothing encoded or decoded (the floor under gRPC; a child \
                 process, glibc's heap trimming off)",
                tp(h),
                "—",
                "—",
                None,
            );
        }
        let frac = |ours: Option<&Res<Throughput>>| match (ours, r) {
            (Some(Ok(o)), Ok(r)) if r.median() > 0.0 => {
                format!("{:.1} %", 100.0 * o.median() / r.median())
            }
            _ => "—".into(),
        };
        let paired = match (f.plain.as_ref(), f.tls.as_ref(), r) {
            (Some(Ok(p)), Some(Ok(t)), Ok(r)) if paired => {
                let (p, t) = (paired_ratios(p, r), paired_ratios(t, r));
                format!(
                    "paired round by round, median {:.1} % / {:.1} % (rounds {} / {}); \
                     medians of the rows: ",
                    median_percent(&p),
                    median_percent(&t),
                    percents(&p),
                    percents(&t)
                )
            }
            _ => String::new(),
        };
        row(
            "raw",
            "lossless plaintext / TLS as a fraction of raw TCP (≥ 60 % / ≥ 45 %, issue 12)",
            format!(
                "{paired}{} / {}; a runtime per node: {} / {}; HTTP/2 alone: {}",
                frac(f.plain.as_ref()),
                frac(f.tls.as_ref()),
                frac(f.plain_per_node.as_ref()),
                frac(f.tls_per_node.as_ref()),
                frac(f.h2.as_ref())
            ),
            "—",
            "—",
            None,
        );
    }
    for (buf, d) in [20, 200].into_iter().zip(f.drops.iter().flatten()) {
        row(
            "drops",
            &format!("unpaced `send`, send buffer {buf}: share dropped"),
            cell(d, |d| {
                format!(
                    "{:.1} % ({} of {} calls; {} msg/s delivered)",
                    100.0 * d.dropped as f64 / d.attempted.max(1) as f64,
                    thousands(d.dropped as f64),
                    thousands(d.attempted as f64),
                    thousands(d.delivered_rate)
                )
            }),
            "70–85 %",
            "— (dropping is Fabric's semantics)",
            None,
        );
    }
    if let Some(a) = &f.acks {
        row(
            "acks",
            "SendWithAck, 1 caller",
            cell(a, |a| a.one.cell("ack")),
            "≈ 11,000",
            "—",
            None,
        );
        // 16 callers: both nodes on the 2-worker runtime, then a runtime per node, then
        // both nodes on one thread.
        let sixteen: [(&str, AcksFigure); 3] = [
            ("SendWithAck, 16 callers", |a| &a.sixteen),
            (
                "SendWithAck, 16 callers, each node on its own current-thread runtime",
                |a| &a.per_node,
            ),
            (
                "SendWithAck, 16 callers, both nodes on one current-thread runtime (no thread ever waits for another)",
                |a| &a.one_thread,
            ),
        ];
        for (w, figure) in sixteen {
            let met = |a: &AcksFigures| {
                let x = figure(a);
                x.median() >= 250_000.0 && x.cpu_us_per_msg() <= 4.0
            };
            row(
                "acks",
                w,
                cell(a, |a| figure(a).cell("ack")),
                "≈ 27,000",
                "≥ 250,000, ≤ 4 µs CPU per ack",
                Some(a.as_ref().is_ok_and(met)),
            );
        }
        if let Some(h) = &f.acks_h2 {
            row(
                "acks",
                "HTTP/2 alone, one thread: 16 messages in flight on one h2 stream, each \
                 answered by an ack; nothing encoded, decoded or woken (the floor under the \
                 row above)",
                cell(h, |x| x.cell("ack")),
                "—",
                "—",
                None,
            );
        }
        row(
            "acks",
            "peak RSS under SendWithAck (child process, both nodes)",
            cell(a, |a| {
                format!(
                    "{:.1} MiB (VmHWM); VmRSS {:.1}–{:.1} MiB while loaded",
                    a.hwm_kib as f64 / 1024.0,
                    a.rss_min_kib as f64 / 1024.0,
                    a.rss_max_kib as f64 / 1024.0
                )
            }),
            "≈ 570 MiB",
            "≤ 64 MiB, flat",
            Some(a.as_ref().is_ok_and(|a| a.hwm_kib <= 64 * 1024)),
        );
    }
    let lat = |r: &Res<Latency>| {
        cell(r, |l| {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (n={})",
                ms(l.p50),
                ms(l.p99),
                l.n
            )
        })
    };
    // (workload, result, Fabric's figure, goal, the goal's p50 in ms if there is one)
    let latencies = f.latency.as_ref().map(|l| {
        [
            (
                "new connection → first delivery, plaintext",
                &l.conn_plain,
                "p50 1.3 ms",
                "p50 ≤ 0.7 ms",
                Some(0.7),
            ),
            (
                "new connection → first delivery, mutual TLS",
                &l.conn_tls,
                "p50 2.4 ms",
                "p50 ≤ 1.5 ms",
                Some(1.5),
            ),
            (
                "Probe, plaintext",
                &l.probe_plain,
                "p50 0.8 ms",
                "p50 ≤ 0.5 ms",
                Some(0.5),
            ),
            ("Probe, mutual TLS", &l.probe_tls, "p50 1.5 ms", "—", None),
        ]
    });
    for (w, r, fabric, goal, max_ms) in latencies.into_iter().flatten() {
        let ok = max_ms.map(|m| r.as_ref().is_ok_and(|l| ms(l.p50) <= m));
        row("latency", w, lat(r), fabric, goal, ok);
    }
    let _ = writeln!(t);
    for (name, r) in [
        ("plaintext", f.plain.as_ref()),
        ("mutual TLS", f.tls.as_ref()),
        ("plaintext, a runtime per node", f.plain_per_node.as_ref()),
        ("mutual TLS, a runtime per node", f.tls_per_node.as_ref()),
        ("send buffer 20", fab20),
        ("send buffer 200", fab200),
    ] {
        if let Some(Ok(x)) = r {
            let _ = writeln!(
                t,
                "Lossless {name}: {} messages measured, every one received once, in order; \
                 none dropped.",
                thousands(x.messages() as f64),
            );
        }
    }
    if let (Some(c2c), Some(steal), Some(Ok(raw)), Some(Ok(plain)), Some(Ok(tls))) =
        (&f.c2c, &f.steal, &f.raw, &f.plain, &f.tls)
    {
        turns_table(&mut t, c2c, steal, [raw, plain, tls]);
    }
    if let Some(Ok(a)) = &f.acks {
        let _ = writeln!(
            t,
            "SendWithAck: every call passes the same 1 KiB DataMessage, encoded once \
             (`send_with_ack_signed`, as Fabric's callers pass a `SignedGossipMessage`); \
             each call only puts its nonce into that encoding."
        );
        if a.failed > 0 {
            let _ = writeln!(t, "SendWithAck: {} calls got no ack.", a.failed);
        }
    }
    match &f.wakeups {
        Some(Ok(w)) => {
            let _ = writeln!(
                t,
                "This machine's wake-ups: two threads passing one byte back and forth over a \
                 Unix socket take {:.1} µs per round trip and {:.1} µs of CPU (two wake-ups). \
                 A SendWithAck round trip between two threads pays at least that, on top of \
                 the driver's own CPU per ack (the one-thread row).",
                w.wall_us, w.cpu_us
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(t, "This machine's wake-ups: not measured: {e}");
        }
        None => {}
    }
    match &f.fault_cost {
        Some(Ok(c)) => {
            // What the page faults each one-way row counted cost it, at this machine's price.
            let mut per_row = Vec::new();
            for (name, r) in [
                ("plaintext", f.plain.as_ref()),
                ("mutual TLS", f.tls.as_ref()),
                ("plaintext, a runtime per node", f.plain_per_node.as_ref()),
                ("mutual TLS, a runtime per node", f.tls_per_node.as_ref()),
            ] {
                if let Some(Ok(x)) = r
                    && let Some(per_1000) = x.faults_per_1000()
                {
                    per_row.push(format!(
                        "{name} {:.3} µs/msg",
                        per_1000 * c.median_us / 1000.0
                    ));
                }
            }
            let rows = if per_row.is_empty() {
                String::new()
            } else {
                format!(
                    " At that price, the page faults of the one-way rows cost: {}.",
                    per_row.join(", ")
                )
            };
            let reporting = reported.map_or_else(String::new, |kib| {
                format!(
                    " This kernel hands freed memory back to the hypervisor (free page \
                     reporting): {} MiB during this run, which the next fault there pays for \
                     again.",
                    thousands(kib as f64 / 1024.0)
                )
            });
            let _ = writeln!(
                t,
                "This machine's page faults: faulting in fresh memory costs {:.2} µs per 4 KiB \
                 page (median of {}, {:.2}–{:.2}; {} MiB each), beyond writing it.{rows}{reporting}",
                c.median_us,
                c.samples,
                c.min_us,
                c.max_us,
                FAULT_PROBE >> 20,
            );
        }
        Some(Err(e)) => {
            let _ = writeln!(t, "This machine's page faults: not measured: {e}");
        }
        None => {}
    }
    // What a figure would be if CPU were the only limit and both cores were ours: the rate
    // figures move with whatever else runs on the machine, this hardly does.
    let mut ceilings = Vec::new();
    for (name, r, unit) in [
        ("plaintext", f.plain.as_ref(), "msg"),
        ("mutual TLS", f.tls.as_ref(), "msg"),
        (
            "plaintext, a runtime per node",
            f.plain_per_node.as_ref(),
            "msg",
        ),
        (
            "mutual TLS, a runtime per node",
            f.tls_per_node.as_ref(),
            "msg",
        ),
        ("raw TCP", f.raw.as_ref(), "msg"),
        ("HTTP/2 alone", f.h2.as_ref(), "msg"),
    ] {
        if let Some(Ok(x)) = r {
            ceilings.push(format!("{name} {} {unit}/s", thousands(ceiling(x))));
        }
    }
    if let Some(Ok(a)) = &f.acks {
        ceilings.push(format!(
            "SendWithAck ×16 {} ack/s (a runtime per node: {}; one thread: {})",
            thousands(ceiling(&a.sixteen)),
            thousands(ceiling(&a.per_node)),
            thousands(ceiling(&a.one_thread))
        ));
    }
    if !ceilings.is_empty() {
        let _ = writeln!(
            t,
            "CPU-bound ceiling on {} idle cores (cores ÷ CPU per message): {}.",
            nproc(),
            ceilings.join(", ")
        );
    }
    // Where a new connection's time goes, from the p50s: a probe is TCP (and TLS) connect,
    // the HTTP/2 preface and one Ping; a first delivery adds the stream, the two-way
    // ConnEstablish handshake and the message.
    if let Some(LatencyFigures {
        conn_plain: Ok(cp),
        probe_plain: Ok(pp),
        probe_tls,
        ..
    }) = &f.latency
    {
        let mut line = format!(
            "p50 breakdown: connect + HTTP/2 + Ping {:.2} ms; stream + handshake + first \
             message {:.2} ms more",
            ms(pp.p50),
            ms(cp.p50.saturating_sub(pp.p50))
        );
        if let Ok(pt) = probe_tls {
            let _ = write!(
                line,
                "; mutual TLS adds {:.2} ms to a probe",
                ms(pt.p50.saturating_sub(pp.p50))
            );
        }
        let _ = writeln!(t, "{line}.");
    }
    println!("{t}");
}

/// The rate `nproc()` cores would sustain at the measured CPU time per message.
/// The rounds of raw TCP, plaintext and TLS as they took turns, each with where the two
/// CPUs were just before it, and the turns' ratios: what moved a run's figures, and whether
/// ours and the baseline moved together.
fn turns_table(
    t: &mut String,
    c2c: &[Vec<f64>; 3],
    steal: &[Vec<Option<f64>>; 3],
    rows: [&Throughput; 3],
) {
    let _ = writeln!(
        t,
        "\nRaw TCP, plaintext and mutual TLS took turns, one round each (the first of each \
         turn rotating). Each cell: msg/s, µs of CPU per message, cores this process kept busy \
         (under 1.9 of 2 in our rounds, which are CPU-bound, means other work had the rest), \
         the two CPUs' cache-line round trip just before the round (`core_to_core_ns`: about 30 ns when the hypervisor \
         has them on two hyperthreads of one core, about 60 on two cores sharing an L3 cache, \
         150 or more on cores that share none), and the share of this VM's CPU time its host \
         took for other guests during the round (steal).\n"
    );
    let _ = writeln!(
        t,
        "| turn | raw TCP | plaintext | mutual TLS | plaintext / TLS of raw |\n|---|---|---|---|---|"
    );
    let (raw, plain, tls) = (rows[0], rows[1], rows[2]);
    let cell = |r: &Round, ns: f64, steal: Option<f64>| {
        format!(
            "{:.2} M ({:.2} µs, {:.2} cores; {}; steal {})",
            r.rate() / 1e6,
            1e6 * r.cpu_secs / r.messages.max(1) as f64,
            r.cpu_secs / r.secs.max(1e-9),
            common::core_to_core_text(ns),
            common::steal_text(steal, 0)
        )
    };
    let mut shared = [Vec::new(), Vec::new()];
    let mut unstolen = [Vec::new(), Vec::new()];
    for i in 0..raw
        .rounds
        .len()
        .min(plain.rounds.len())
        .min(tls.rounds.len())
    {
        let ns = [0, 1, 2].map(|k| c2c[k].get(i).copied().unwrap_or(f64::NAN));
        let st = [0, 1, 2].map(|k| steal[k].get(i).copied().flatten());
        let (r, p, s) = (&raw.rounds[i], &plain.rounds[i], &tls.rounds[i]);
        let (fp, fs) = (p.rate() / r.rate().max(1e-9), s.rate() / r.rate().max(1e-9));
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} % / {:.0} % |",
            i + 1,
            cell(r, ns[0], st[0]),
            cell(p, ns[1], st[1]),
            cell(s, ns[2], st[2]),
            100.0 * fp,
            100.0 * fs
        );
        if ns.iter().all(|&n| (40.0..=100.0).contains(&n)) {
            shared[0].push(fp);
            shared[1].push(fs);
        }
        if st
            .iter()
            .all(|s| s.is_some_and(|p| p <= common::STEAL_LOADED_PCT))
        {
            unstolen[0].push(fp);
            unstolen[1].push(fs);
        }
    }
    // The turns of a kind, and their median ratios when there are any.
    let subset = |kind: String, ratios: &[Vec<f64>; 2]| {
        format!(
            "Turns whose three rounds {kind}: {} of {}{}.",
            ratios[0].len(),
            raw.rounds.len(),
            if ratios[0].is_empty() {
                String::new()
            } else {
                format!(
                    "; their median plaintext / TLS share of raw TCP: {:.1} % / {:.1} %",
                    median_percent(&ratios[0]),
                    median_percent(&ratios[1])
                )
            }
        )
    };
    let _ = writeln!(
        t,
        "\n{}\n{}",
        subset(
            "all began on two cores sharing an L3 cache (40-100 ns)".into(),
            &shared
        ),
        subset(
            format!("had at most {:.0} % steal", common::STEAL_LOADED_PCT),
            &unstolen
        )
    );
}

/// Each round of `ours` as a fraction of the raw round measured beside it (`interleaved`).
fn paired_ratios(ours: &Throughput, raw: &Throughput) -> Vec<f64> {
    ours.rounds
        .iter()
        .zip(&raw.rounds)
        .map(|(o, r)| o.rate() / r.rate().max(1e-9))
        .collect()
}

fn median_percent(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    100.0 * v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percents(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{:.0}", 100.0 * x))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ceiling(x: &Throughput) -> f64 {
    nproc() as f64 * 1e6 / x.cpu_us_per_msg().max(1e-9)
}

// ------------------------------------------------------------------------ helpers

/// Runs a workload as a task on the runtime's 2 workers, not on the calling thread as
/// `block_on` would: the code under test and the harness then share the 2 cores the way
/// an application's tasks would, with no third thread doing part of the work.
fn on_workers<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(rt.spawn(f)).expect("workload task panicked")
}

fn message(seq: u64) -> SignedMessage {
    message_of(seq, PAYLOAD)
}

fn message_of(seq: u64, payload: usize) -> SignedMessage {
    SignedMessage::noop(fabric_gossip_core::data_message(
        seq,
        vec![(seq % 251) as u8; payload],
    ))
}

fn ring() -> Arc<Vec<SignedMessage>> {
    ring_of(PAYLOAD)
}

fn ring_of(payload: usize) -> Arc<Vec<SignedMessage>> {
    Arc::new((0..RING).map(|seq| message_of(seq, payload)).collect())
}

fn seq_of(m: &GossipMessage) -> Option<u64> {
    match &m.content {
        Some(gossip_message::Content::DataMsg(d)) => d.payload.as_ref().map(|p| p.seq_num),
        _ => None,
    }
}

/// Two nodes, `a` sending to `b`.
async fn pair(tls: bool, config: Config) -> Res<(Node, Node)> {
    common::start_pair(tls, config)
        .await
        .map_err(|e| e.to_string())
}

async fn stop(nodes: &[&Node]) {
    for n in nodes {
        n.stop().await;
    }
}

async fn within<F: std::future::Future>(what: &str, f: F) -> Res<F::Output> {
    tokio::time::timeout(STALL, f)
        .await
        .map_err(|_| format!("stalled: {what}"))
}

/// One measured round of a throughput workload.
#[derive(Clone, Copy)]
struct Round {
    messages: u64,
    secs: f64,
    /// CPU time of the whole process (both nodes, every thread) during the round.
    cpu_secs: f64,
    /// Context switches of the process's threads during the round, where measured
    /// (SendWithAck): how often its hand-offs put a thread to sleep and woke it.
    switches: Option<u64>,
    /// Page faults of the process during the round, where measured (the lossless one-way
    /// rows): many mean glibc handed the top of a heap back and faulted it in again (the
    /// README's "glibc's heap trimming"), the slow mode of those rows.
    faults: Option<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.secs
    }
}

/// Rounds of one throughput workload.
struct Throughput {
    rounds: Vec<Round>,
}

impl Throughput {
    fn rates(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.rounds.iter().map(Round::rate).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    fn median(&self) -> f64 {
        let r = self.rates();
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }

    fn messages(&self) -> u64 {
        self.rounds.iter().map(|r| r.messages).sum()
    }

    /// CPU microseconds per message, all rounds together: unlike the rate, this hardly
    /// depends on what else runs on the machine, and 2 cores / this is the rate an
    /// otherwise idle 2-core machine would reach if CPU is the limit.
    fn cpu_us_per_msg(&self) -> f64 {
        let cpu: f64 = self.rounds.iter().map(|r| r.cpu_secs).sum();
        1e6 * cpu / self.messages().max(1) as f64
    }

    /// Cores the process kept busy on average (of 2 here): well under 2 on a loaded machine
    /// means others had the rest; under 2 on an idle one means waiting, not computing, limits.
    fn cores(&self) -> f64 {
        let cpu: f64 = self.rounds.iter().map(|r| r.cpu_secs).sum();
        let secs: f64 = self.rounds.iter().map(|r| r.secs).sum();
        cpu / secs.max(1e-9)
    }

    /// Context switches per message over the rounds that count them.
    fn switches_per_msg(&self) -> Option<f64> {
        let counted: Vec<&Round> = self
            .rounds
            .iter()
            .filter(|r| r.switches.is_some())
            .collect();
        let switches: u64 = counted.iter().filter_map(|r| r.switches).sum();
        let messages: u64 = counted.iter().map(|r| r.messages).sum();
        (!counted.is_empty()).then(|| switches as f64 / messages.max(1) as f64)
    }

    /// Page faults per 1,000 messages over the rounds that count them.
    fn faults_per_1000(&self) -> Option<f64> {
        let counted: Vec<&Round> = self.rounds.iter().filter(|r| r.faults.is_some()).collect();
        let faults: u64 = counted.iter().filter_map(|r| r.faults).sum();
        let messages: u64 = counted.iter().map(|r| r.messages).sum();
        (!counted.is_empty()).then(|| 1000.0 * faults as f64 / messages.max(1) as f64)
    }

    /// `messages:secs:cpu_secs:switches` per round, comma-separated: how the SendWithAck
    /// child hands its rounds to the parent.
    fn encode(&self) -> String {
        let r: Vec<String> = self
            .rounds
            .iter()
            .map(|r| {
                let switches = r.switches.map_or_else(String::new, |n| n.to_string());
                format!("{}:{}:{}:{switches}", r.messages, r.secs, r.cpu_secs)
            })
            .collect();
        r.join(",")
    }

    fn decode(s: &str) -> Option<Self> {
        let rounds = s
            .split(',')
            .map(|r| {
                let mut f = r.split(':');
                Some(Round {
                    messages: f.next()?.parse().ok()?,
                    secs: f.next()?.parse().ok()?,
                    cpu_secs: f.next()?.parse().ok()?,
                    switches: f.next().and_then(|n| n.parse().ok()),
                    faults: None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Throughput { rounds })
    }

    fn cell(&self, unit: &str) -> String {
        let r = self.rates();
        // One-way rows count both, a few per thousand messages; SendWithAck rows count
        // switches only, a fraction of one per ack.
        let counts = match (self.switches_per_msg(), self.faults_per_1000()) {
            (Some(s), Some(f)) => format!(
                ", {:.1} context switches and {f:.1} page faults/1,000 {unit}",
                s * 1000.0
            ),
            (Some(s), None) => format!(", {s:.3} context switches/{unit}"),
            (None, Some(f)) => format!(", {f:.1} page faults/1,000 {unit}"),
            (None, None) => String::new(),
        };
        format!(
            "{} {unit}/s (median of {}, {}–{}; {:.2} µs CPU/{unit}, {:.2} cores busy{counts})",
            thousands(self.median()),
            r.len(),
            thousands(r.first().copied().unwrap_or(0.0)),
            thousands(r.last().copied().unwrap_or(0.0)),
            self.cpu_us_per_msg(),
            self.cores()
        )
    }
}

/// Context switches so far (voluntary and not) of every thread of this process, from
/// `/proc/self/task/*/status`. SendWithAck on an idle machine is slow when its hand-offs
/// make threads sleep and wake (issue 12): a run that fell into that mode shows several
/// times as many per ack. Threads that ended before the call are not counted, so it is
/// read around rounds during which no thread ends.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let of = |status: String| -> u64 {
        status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum()
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(of)
        .sum()
}

/// The sum of the numbered fields of `/proc/self/stat` (counted from 1, as in `proc(5)`;
/// 0 where unreadable). Every thread of the process is counted in them.
fn self_stat(fields: &[usize]) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (field 2, which may contain spaces) start with the
    // state, field 3.
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    fields
        .iter()
        .filter_map(|&n| f.get(n.checked_sub(3)?)?.parse::<u64>().ok())
        .sum()
}

/// Process CPU time (user + system, all threads) in seconds: `utime` and `stime` (fields 14
/// and 15), in USER_HZ ticks, 100 per second on Linux (fixed by its ABI).
fn cpu_time() -> f64 {
    self_stat(&[14, 15]) as f64 / 100.0
}

/// Minor and major page faults of this process so far (`minflt` and `majflt`, fields 10
/// and 12).
fn page_faults() -> u64 {
    self_stat(&[10, 12])
}

// ------------------------------------------------------------------------ raw TCP

/// A warm-up round of `round`, then `budget.rounds` measured ones.
async fn warm_then_measure<F: std::future::Future<Output = Res<Round>>>(
    budget: Budget,
    round: impl Fn(Duration) -> F,
) -> Res<Throughput> {
    round(budget.warmup).await?;
    let mut rounds = Vec::with_capacity(budget.rounds);
    for _ in 0..budget.rounds {
        rounds.push(round(budget.round).await?);
    }
    Ok(Throughput { rounds })
}

/// The ceiling: the same Envelope bytes as u32-length-prefixed frames over one loopback TCP
/// connection, written through a 64 KiB buffer, read into one buffer and split into frames
/// without copying (what tonic's decoder does too). A warm-up round, then the rounds.
async fn raw_tcp(budget: Budget) -> Res<Throughput> {
    warm_then_measure(budget, raw_round).await
}

/// A listener on a free loopback port, and its address.
async fn loopback_listener() -> Res<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

/// The round of a one-way run whose sender counted `sent` messages and receiver `got`, over
/// `secs` from process CPU time `cpu0`: an error unless every message arrived.
fn lossless_round(sent: u64, got: u64, secs: f64, cpu0: f64) -> Res<Round> {
    if sent != got {
        return Err(format!("sent {sent}, received {got}"));
    }
    Ok(Round {
        messages: got,
        secs,
        cpu_secs: cpu_time() - cpu0,
        switches: None,
        faults: None,
    })
}

async fn raw_round(dur: Duration) -> Res<Round> {
    let (listener, addr) = loopback_listener().await?;
    let envelope = message(0).envelope_bytes().clone();
    let frame_len = envelope.len();
    let cpu0 = cpu_time();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut w = BufWriter::with_capacity(64 * 1024, s);
        let len = (envelope.len() as u32).to_be_bytes();
        let mut n: u64 = 0;
        while start.elapsed() < dur {
            // Check the clock every 64 frames, not on each.
            for _ in 0..64 {
                w.write_all(&len).await?;
                w.write_all(&envelope).await?;
            }
            n += 64;
        }
        w.flush().await?;
        w.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    });
    let (mut s, _) = within("raw accept", listener.accept())
        .await?
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut got: u64 = 0;
    // Bounded by the writer's time budget (it then closes); each read by STALL.
    loop {
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        let n = within("raw read", s.read_buf(&mut buf))
            .await?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len).freeze();
            if frame.len() != frame_len {
                return Err("bad frame".into());
            }
            got += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let sent = writer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    lossless_round(sent, got, secs, cpu0)
}

// ------------------------------------------------------------------------ HTTP/2 alone

/// The driver's HTTP/2 settings: its default window (`DriverLimits::flow_control_window`,
/// per stream and per connection) and its frame size (`driver/mod.rs`: `MAX_FRAME`, not public).
fn h2_window() -> u32 {
    DriverLimits::default().flow_control_window
}
const H2_FRAME: u32 = 64 << 10;

/// A gRPC-style request stream to `addr` on `h2` with the driver's settings: the response to
/// come, the request body's sender, the client (dropping it ends the connection) and the
/// task that drives the connection.
async fn h2_open(
    addr: std::net::SocketAddr,
) -> Res<(
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
)> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(h2_window())
        .initial_connection_window_size(h2_window())
        .max_frame_size(H2_FRAME)
        .handshake::<_, Bytes>(s)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = http::Request::post("http://127.0.0.1/gossip.Gossip/GossipStream")
        .header("content-type", "application/grpc")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, send) = client.send_request(req, false).map_err(|e| e.to_string())?;
    Ok((response, send, client, conn))
}

/// The server side of [`h2_open`]: accepts one connection on `listener` and its first
/// request; the returned task drives the connection until aborted.
async fn h2_accept(
    listener: tokio::net::TcpListener,
) -> Res<(
    http::Request<h2::RecvStream>,
    h2::server::SendResponse<Bytes>,
    tokio::task::JoinHandle<()>,
)> {
    let (s, _) = within("h2 accept", listener.accept())
        .await?
        .map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut conn = h2::server::Builder::new()
        .initial_window_size(h2_window())
        .initial_connection_window_size(h2_window())
        .max_frame_size(H2_FRAME)
        .handshake::<_, Bytes>(s)
        .await
        .map_err(|e| e.to_string())?;
    let (req, respond) = within("h2 request", conn.accept())
        .await?
        .ok_or("h2: no request")?
        .map_err(|e| e.to_string())?;
    // The connection makes progress only while polled.
    let driving = tokio::spawn(async move { while let Some(Ok(_)) = conn.accept().await {} });
    Ok((req, respond, driving))
}

/// The floor under any gRPC transport of these messages: the same Envelopes, gRPC-framed,
/// over one HTTP/2 stream on `h2` (what tonic runs on) with the driver's windows and frame
/// size. The sender hands h2 one pre-built chunk of whole messages (just under a 64 KiB frame)
/// again and again, encoding nothing; the receiver splits what h2 hands it into messages as
/// raw TCP's receiver does, decoding nothing. What the lossless rows cost above this row is
/// the gossip layer's own (protobuf, the core, the driver's queues, the delivery).
async fn h2_alone(budget: Budget) -> Res<Throughput> {
    warm_then_measure(budget, h2_round).await
}

async fn h2_round(dur: Duration) -> Res<Round> {
    let e = |e: h2::Error| e.to_string();
    let (listener, addr) = loopback_listener().await?;
    let envelope = message(0).envelope_bytes().clone();
    let msg_len = envelope.len();
    let per_chunk = H2_FRAME as usize / (5 + msg_len);
    let chunk = grpc_frames(&envelope, per_chunk);
    let cpu0 = cpu_time();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let (_response, mut send, client, conn) = h2_open(addr).await?;
        let mut n: u64 = 0;
        while start.elapsed() < dur {
            // As hyper sends a body: wait for window, then hand h2 the whole chunk (it holds
            // what the window does not yet allow; at most this one chunk).
            send.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(e(err)),
                None => return Err("h2 stream closed".into()),
            }
            send.send_data(chunk.clone(), false).map_err(e)?;
            n += per_chunk as u64;
        }
        send.send_data(Bytes::new(), true).map_err(e)?;
        drop(client);
        let _ = within("h2 client ends", conn).await;
        Ok::<u64, String>(n)
    });
    let (req, _respond, driving) = h2_accept(listener).await?;
    let mut body = req.into_body();
    // A message split across two chunks is joined in `pending`; the rest are sliced out of
    // h2's chunks without a copy.
    let mut pending = BytesMut::new();
    let mut got: u64 = 0;
    // Bounded: the sender ends the stream after `dur`; each read by STALL.
    while let Some(data) = within("h2 read", body.data()).await? {
        let mut data = data.map_err(e)?;
        let _ = body.flow_control().release_capacity(data.len());
        if !pending.is_empty() {
            pending.extend_from_slice(&data);
            data = pending.split().freeze();
        }
        while data.len() >= 5 {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            if data.len() < 5 + len {
                break;
            }
            data.advance(5);
            if data.split_to(len).len() != msg_len {
                return Err("h2: bad message length".into());
            }
            got += 1;
        }
        pending.extend_from_slice(&data);
    }
    let secs = start.elapsed().as_secs_f64();
    driving.abort();
    let sent = writer.await.map_err(|e| e.to_string())??;
    lossless_round(sent, got, secs, cpu0)
}

/// The floor under SendWithAck with 16 callers on one thread: HTTP/2 alone (as
/// [`h2_alone`]), 16 messages in flight on one stream, each answered on the response stream
/// by an ack of the size the core sends, both ends on one current-thread runtime. Nothing is
/// encoded or decoded, no caller is woken: each batch of acks read is answered by one write
/// of as many messages, and each batch of messages by one write of as many acks. What the
/// one-thread SendWithAck row costs above this is the gossip layer's own.
async fn h2_acks(budget: Budget) -> Res<Throughput> {
    warm_then_measure(budget, h2_acks_round).await
}

/// `n` gRPC-framed copies of `m`, back to back.
fn grpc_frames(m: &[u8], n: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(n * (5 + m.len()));
    for _ in 0..n {
        // gRPC's framing: not compressed, then the length, big-endian.
        b.put_u8(0);
        b.put_u32(m.len() as u32);
        b.extend_from_slice(m);
    }
    b.freeze()
}

/// How many whole gRPC messages of `len` bytes `data` completes, with `pending` holding
/// what it left of a partial one.
fn count_frames(pending: &mut usize, data: usize, len: usize) -> usize {
    let total = *pending + data;
    *pending = total % (5 + len);
    total / (5 + len)
}

async fn h2_acks_round(dur: Duration) -> Res<Round> {
    const IN_FLIGHT: usize = 16;
    let e = |e: h2::Error| e.to_string();
    let (listener, addr) = loopback_listener().await?;
    let msg_len = message(0).envelope_bytes().len();
    let msgs = grpc_frames(message(0).envelope_bytes(), IN_FLIGHT);
    let ack = SignedMessage::noop(GossipMessage {
        nonce: u64::MAX,
        content: Some(gossip_message::Content::Ack(Default::default())),
        ..Default::default()
    });
    let ack_len = ack.envelope_bytes().len();
    let acks = grpc_frames(ack.envelope_bytes(), IN_FLIGHT);
    let acker = tokio::spawn(async move {
        let (req, mut respond, driving) = h2_accept(listener).await?;
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = respond.send_response(response, false).map_err(e)?;
        let mut body = req.into_body();
        let mut pending = 0;
        while let Some(data) = body.data().await {
            let data = data.map_err(e)?;
            let _ = body.flow_control().release_capacity(data.len());
            let n = count_frames(&mut pending, data.len(), msg_len);
            if n > 0 {
                // At most IN_FLIGHT messages are ever unacked.
                send.send_data(acks.slice(..n * (5 + ack_len)), false)
                    .map_err(e)?;
            }
        }
        let _ = send.send_data(Bytes::new(), true);
        driving.abort();
        Ok::<(), String>(())
    });
    let (response, mut send, client, conn) = h2_open(addr).await?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    send.send_data(msgs.clone(), false).map_err(e)?;
    let mut body = within("h2 response", response)
        .await?
        .map_err(e)?
        .into_body();
    let (mut acked, mut unacked, mut pending) = (0u64, IN_FLIGHT, 0);
    // Bounded: each read by STALL, the loop by `dur` (then the last acks drain).
    while unacked > 0 {
        let data = within("h2 ack read", body.data())
            .await?
            .ok_or("h2: response ended")?
            .map_err(e)?;
        let _ = body.flow_control().release_capacity(data.len());
        let n = count_frames(&mut pending, data.len(), ack_len);
        acked += n as u64;
        unacked -= n;
        if n > 0 && start.elapsed() < dur {
            send.send_data(msgs.slice(..n * (5 + msg_len)), false)
                .map_err(e)?;
            unacked += n;
        }
    }
    let round = Round {
        messages: acked,
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_time() - cpu0,
        switches: None,
        faults: None,
    };
    send.send_data(Bytes::new(), true).map_err(e)?;
    within("h2 acker ends", acker)
        .await?
        .map_err(|e| e.to_string())??;
    drop(client);
    conn.abort();
    Ok(round)
}

// ------------------------------------------------------------------------ lossless one-way

async fn one_way(tls: bool, budget: Budget) -> Res<Throughput> {
    one_way_cfg(tls, budget, common::throughput_config()).await
}

async fn one_way_cfg(tls: bool, budget: Budget, config: Config) -> Res<Throughput> {
    one_way_of(tls, budget, config, ring()).await
}

/// Lossless one-way with 64 KiB messages; buffers of 64 messages (4 MiB) per connection,
/// as much in flight as 4,096 of the 1 KiB rows' messages.
async fn one_way_blocks(tls: bool, budget: Budget) -> Res<Throughput> {
    let config = Config::default()
        .with_send_buffer(64)
        .with_write_window(32)
        .with_subscription_buffer(64);
    one_way_of(tls, budget, config, ring_of(BLOCK_PAYLOAD)).await
}

/// Messages a lossless run from `a` to `b` lost: dropped by the sender for any reason, or
/// by the receiver's subscription.
fn lost(a: &Node, b: &Node) -> u64 {
    let (sa, sb) = (a.stats(), b.stats());
    sa.dropped_overflow
        + sa.dropped_on_close
        + sa.dropped_no_connection
        + sb.dropped_subscription_overflow
}

async fn one_way_of(
    tls: bool,
    budget: Budget,
    config: Config,
    msgs: Arc<Vec<SignedMessage>>,
) -> Res<Throughput> {
    let (a, b) = pair(tls, config).await?;
    let r = one_way_on(&a, &b, budget, msgs).await;
    let lost = lost(&a, &b);
    stop(&[&a, &b]).await;
    let x = r?;
    if lost > 0 {
        return Err(format!("{lost} messages lost ({} sent)", x.messages()));
    }
    Ok(x)
}

async fn one_way_on(
    a: &Node,
    b: &Node,
    budget: Budget,
    msgs: Arc<Vec<SignedMessage>>,
) -> Res<Throughput> {
    let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let mut next_seq = 0u64;
    phase(a, b, &mut inbox, &msgs, &mut next_seq, budget.warmup).await?;
    let mut rounds = Vec::with_capacity(budget.rounds);
    for _ in 0..budget.rounds {
        rounds.push(phase(a, b, &mut inbox, &msgs, &mut next_seq, budget.round).await?);
    }
    Ok(Throughput { rounds })
}

/// Raw TCP, lossless plaintext and lossless mutual TLS, one round of each in turn (the
/// first of each turn rotating, so none always runs first): each round of ours then has a
/// raw round measured within seconds of it, under the same conditions of this shared
/// machine. Both pairs of nodes stay connected throughout and every message is checked, as
/// in `one_way`. Before each round, [`core_to_core_ns`] says where the two CPUs were.
async fn interleaved(budget: Budget) -> Res<Turns> {
    let config = common::throughput_config();
    let plain = pair(false, config.clone()).await?;
    let tls = pair(true, config).await?;
    let mut inboxes = [
        plain.1.accept(|_| true).map_err(|e| e.to_string())?,
        tls.1.accept(|_| true).map_err(|e| e.to_string())?,
    ];
    let msgs = ring();
    let mut seqs = [0u64; 2];
    let mut rounds: [Vec<Round>; 3] = Default::default();
    let mut c2c: [Vec<f64>; 3] = Default::default();
    let mut steal: [Vec<Option<f64>>; 3] = Default::default();
    // Turn 0 is the warm-up.
    for turn in 0..=budget.rounds {
        let dur = if turn == 0 {
            budget.warmup
        } else {
            budget.round
        };
        for k in 0..3 {
            let which = (turn + k) % 3;
            let ns = common::core_to_core_ns();
            let ticks = common::VmTicks::now();
            let round = match which {
                0 => raw_round(dur).await?,
                w => {
                    let (a, b) = if w == 1 { &plain } else { &tls };
                    phase(a, b, &mut inboxes[w - 1], &msgs, &mut seqs[w - 1], dur).await?
                }
            };
            if turn > 0 {
                rounds[which].push(round);
                c2c[which].push(ns);
                steal[which].push(common::VmTicks::steal_since(ticks));
            }
        }
    }
    for (a, b) in [&plain, &tls] {
        let lost = lost(a, b);
        stop(&[a, b]).await;
        if lost > 0 {
            return Err(format!("{lost} messages lost"));
        }
    }
    Ok(Turns {
        rounds: rounds.map(|rounds| Throughput { rounds }),
        c2c,
        steal,
    })
}

/// What [`interleaved`] measured: raw TCP, plaintext and TLS, round `i` of each in turn
/// `i`, the two CPUs' cache-line round trip just before each round, and the share of the
/// VM's CPU time its host took during each round (steal, per cent).
struct Turns {
    rounds: [Throughput; 3],
    c2c: [Vec<f64>; 3],
    steal: [Vec<Option<f64>>; 3],
}

/// Lossless one-way with each node on a current-thread runtime of its own thread, as two
/// peers in two processes would run: node `a` and its sender on one thread, node `b` and
/// the consumer checking every sequence number on the other.
fn one_way_per_node(tls: bool, budget: Budget) -> Res<Throughput> {
    let (ta, tb) = if tls {
        let (x, y) = common::tls_pair();
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    let config = common::same_thread_config();
    let received = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let reached = Arc::new(tokio::sync::Notify::new());
    let receive = {
        let (received, target, reached, config) = (
            received.clone(),
            target.clone(),
            reached.clone(),
            config.clone(),
        );
        async move |peer_tx: PeerTx, stop_rx: StopRx| -> Res<()> {
            let b = common::start_node(tb, config)
                .await
                .map_err(|e| e.to_string())?;
            let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
            let _ = peer_tx.send(b.as_peer());
            let check = async {
                let mut want = 0u64;
                while let Some(m) = inbox.recv().await {
                    check_seq(m.message(), want)?;
                    want += 1;
                    received.store(want, Ordering::Release);
                    if want == target.load(Ordering::Acquire) {
                        reached.notify_one();
                    }
                }
                Ok(())
            };
            let r = tokio::select! {
                r = check => r,
                _ = stop_rx => Ok(()),
            };
            b.stop().await;
            r
        }
    };
    on_two_threads(receive, async |peer: RemotePeer| {
        let a = common::start_node(ta, config)
            .await
            .map_err(|e| e.to_string())?;
        let msgs = ring();
        let mut seq = 0u64;
        let mut phase = async |dur: Duration| -> Res<Round> {
            let first = seq;
            let (cpu0, faults0, switches0) = (cpu_time(), page_faults(), context_switches());
            let start = Instant::now();
            send_for(&a, &peer, &msgs, &mut seq, start, dur).await?;
            let notified = reached.notified();
            target.store(seq, Ordering::Release);
            if received.load(Ordering::Acquire) < seq {
                within("the receiver to catch up", notified).await?;
            }
            Ok(Round {
                messages: seq - first,
                secs: start.elapsed().as_secs_f64(),
                cpu_secs: cpu_time() - cpu0,
                switches: Some(context_switches().saturating_sub(switches0)),
                faults: Some(page_faults().saturating_sub(faults0)),
            })
        };
        phase(budget.warmup).await?;
        let mut rounds = Vec::with_capacity(budget.rounds);
        for _ in 0..budget.rounds {
            rounds.push(phase(budget.round).await?);
        }
        let stats = a.stats();
        a.stop().await;
        let lost = stats.dropped_overflow + stats.dropped_on_close + stats.dropped_no_connection;
        if lost > 0 {
            return Err(format!("{lost} messages lost"));
        }
        Ok(Throughput { rounds })
    })
}

/// Sends node `b`'s peer from the receiving thread to the sending one.
type PeerTx = std::sync::mpsc::Sender<RemotePeer>;
/// Tells the receiving thread the sending one is done.
type StopRx = tokio::sync::oneshot::Receiver<()>;

/// Runs `receive` (which starts node `b` and sends its peer) on a current-thread runtime of
/// a thread of its own, and `send` with that peer on another current-thread runtime on this
/// thread; `receive` is told to stop once `send` is done, and its error wins over `send`'s
/// result.
fn on_two_threads<R>(
    receive: impl AsyncFnOnce(PeerTx, StopRx) -> Res<()> + Send + 'static,
    send: impl AsyncFnOnce(RemotePeer) -> Res<R>,
) -> Res<R> {
    let (peer_tx, peer_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver =
        std::thread::spawn(move || current_thread()?.block_on(receive(peer_tx, stop_rx)));
    let peer = peer_rx
        .recv_timeout(STALL)
        .map_err(|_| "the receiving node did not start")?;
    let r = current_thread()?.block_on(send(peer));
    let _ = stop_tx.send(());
    receiver
        .join()
        .map_err(|_| "the receiving thread panicked")??;
    r
}

/// Sends the ring's messages in order with `send_wait` from `*seq` on until `dur` after
/// `start`, reading the clock once per 64 messages.
async fn send_for(
    a: &Node,
    peer: &RemotePeer,
    msgs: &[SignedMessage],
    seq: &mut u64,
    start: Instant,
    dur: Duration,
) -> Res<()> {
    while start.elapsed() < dur {
        for _ in 0..64 {
            let m = &msgs[(*seq % RING) as usize];
            a.send_wait(m, peer).await.map_err(|e| e.to_string())?;
            *seq += 1;
        }
    }
    Ok(())
}

/// Whether `m` carries the sequence number `want` (mod the ring).
fn check_seq(m: &GossipMessage, want: u64) -> Res<()> {
    let got = seq_of(m).ok_or("not a DataMessage")?;
    if got != want % RING {
        return Err(format!("expected seq {} got {got}", want % RING));
    }
    Ok(())
}

/// Sends with `send_wait` for `dur`, receives all of it, checking each sequence number.
/// The rate is messages received over the time from the first send to the last receipt.
///
/// The harness stays out of the way of what it measures: the sender reads the clock once
/// per 64 messages, and the receiver has one time-out for the whole phase rather than a
/// timer per message.
async fn phase(
    a: &Node,
    b: &Node,
    inbox: &mut Incoming,
    msgs: &Arc<Vec<SignedMessage>>,
    next_seq: &mut u64,
    dur: Duration,
) -> Res<Round> {
    let first = *next_seq;
    let (cpu0, faults0, switches0) = (cpu_time(), page_faults(), context_switches());
    let start = Instant::now();
    let mut sender = {
        let (a, peer, msgs) = (a.clone(), b.as_peer(), msgs.clone());
        tokio::spawn(async move {
            let mut seq = first;
            send_for(&a, &peer, &msgs, &mut seq, start, dur).await?;
            Ok::<u64, String>(seq)
        })
    };
    let mut want = first;
    let receive = async {
        let mut end: Option<u64> = None;
        // Bounded: the sender stops after `dur`, and the whole loop by `dur + STALL`.
        while end != Some(want) {
            tokio::select! {
                biased;
                m = inbox.recv() => {
                    let m = m.ok_or("inbox ended")?;
                    check_seq(m.message(), want)?;
                    want += 1;
                }
                r = &mut sender, if end.is_none() => {
                    end = Some(r.map_err(|e| e.to_string())??);
                }
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(dur + STALL, receive).await {
        Ok(r) => r?,
        Err(_) => {
            sender.abort();
            return Err(format!("stalled after {} messages", want - first));
        }
    }
    *next_seq = want;
    Ok(Round {
        messages: want - first,
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_time() - cpu0,
        switches: Some(context_switches().saturating_sub(switches0)),
        faults: Some(page_faults().saturating_sub(faults0)),
    })
}

// ------------------------------------------------------------------------ unpaced send

struct Drops {
    attempted: u64,
    dropped: u64,
    delivered_rate: f64,
}

/// Fabric's `Send` as fast as one task can call it, with Fabric's default write window and
/// the given send buffer: what share is dropped on a full buffer. The sender yields to the
/// scheduler every 256 calls (a goroutine would be preempted too) and checks that
/// everything not dropped arrives.
async fn unpaced(send_buffer: usize, budget: Budget) -> Res<Drops> {
    let (a, b) = pair(false, Config::default().with_send_buffer(send_buffer)).await?;
    let r = unpaced_on(&a, &b, budget).await;
    stop(&[&a, &b]).await;
    r
}

async fn unpaced_on(a: &Node, b: &Node, budget: Budget) -> Res<Drops> {
    let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let peer = b.as_peer();
    let msg = message(0);
    // Connect first, so no message is lost to the dial.
    a.send_wait(&msg, &peer).await.map_err(|e| e.to_string())?;
    within("first delivery", inbox.recv())
        .await?
        .ok_or("inbox ended")?;
    let base = a.stats();
    let received = Arc::new(AtomicU64::new(0));
    let stop_rx = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (received, stop_rx) = (received.clone(), stop_rx.clone());
        tokio::spawn(async move {
            // Bounded by `stop_rx`, set by the caller after at most the budget plus STALL.
            while !stop_rx.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(50), inbox.recv()).await {
                    Ok(Some(_)) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        })
    };
    let start = Instant::now();
    let mut attempted: u64 = 0;
    while start.elapsed() < budget.round {
        for _ in 0..256 {
            a.send(&msg, std::slice::from_ref(&peer))
                .map_err(|e| e.to_string())?;
        }
        attempted += 256;
        tokio::task::yield_now().await;
    }
    let dropped = a.stats().dropped_overflow - base.dropped_overflow;
    let expect = attempted - dropped;
    // Wait (bounded) for everything not dropped to arrive.
    let t = Instant::now();
    while received.load(Ordering::Relaxed) < expect && t.elapsed() < STALL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop_rx.store(true, Ordering::Release);
    let _ = consumer.await;
    let got = received.load(Ordering::Relaxed);
    if got != expect {
        return Err(format!(
            "{attempted} sent, {dropped} dropped, {got} received"
        ));
    }
    Ok(Drops {
        attempted,
        dropped,
        delivered_rate: got as f64 / secs,
    })
}

// ------------------------------------------------------------------------ SendWithAck

struct AcksFigures {
    one: Throughput,
    sixteen: Throughput,
    /// 16 callers, each node (with its callers or its acker) on its own current-thread
    /// runtime and thread.
    per_node: Throughput,
    /// 16 callers, both nodes, the callers and the acker on one current-thread runtime: the
    /// driver's own cost per ack, with no wake-up of another thread in it.
    one_thread: Throughput,
    hwm_kib: u64,
    rss_min_kib: u64,
    rss_max_kib: u64,
    failed: u64,
}

/// One of the SendWithAck figures.
type AcksFigure = fn(&AcksFigures) -> &Throughput;

/// `--cold-malloc` was given: the children get it too.
static COLD_MALLOC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs this example as `--child <kind>` and returns the line of its output that starts with
/// `prefix`, with `env` added to the child's environment.
fn child_line(kind: &str, prefix: &str, quick: bool, env: &[(&str, String)]) -> Res<String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--child", kind]);
    if quick {
        cmd.arg("--quick");
    }
    if COLD_MALLOC.load(std::sync::atomic::Ordering::Relaxed) {
        cmd.arg("--cold-malloc");
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Bounded: the child's own workloads are time-bounded; past 60 s it is killed. Its one
    // line of output fits the pipe, so it is read once it has exited.
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().map_err(|e| e.to_string())?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the {kind} child did not finish in 60 s"));
    };
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read as _;
        out.read_to_string(&mut text).map_err(|e| e.to_string())?;
    }
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .ok_or_else(|| format!("the {kind} child printed no result ({status})"))
}

/// glibc's setting that keeps it from handing the top of its heap back to the kernel after
/// each burst (README, "glibc's heap trimming").
const NO_TRIM: &str = "glibc.malloc.trim_threshold=1073741824";

/// HTTP/2 alone, in a child process whose glibc does not trim its heap: h2's reader
/// allocates a buffer per 64 KiB frame, and with nothing else on the heap glibc hands that
/// memory back and faults it in again for every frame, which halves h2's rate or worse. A
/// floor measured so would be the allocator's, not HTTP/2's.
fn h2_child(quick: bool) -> Res<Throughput> {
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(t) if !t.is_empty() => format!("{t}:{NO_TRIM}"),
        _ => NO_TRIM.to_string(),
    };
    let line = child_line("h2", "H2 ", quick, &[("GLIBC_TUNABLES", tunables)])?;
    if let Some(e) = line.strip_prefix("H2 error=") {
        return Err(e.to_string());
    }
    line.strip_prefix("H2 rounds=")
        .and_then(Throughput::decode)
        .ok_or_else(|| format!("unreadable child line: {line}"))
}

/// Runs `--child acks` in a child process and parses its line.
fn acks_child(quick: bool) -> Res<AcksFigures> {
    let line = child_line("acks", "ACKS ", quick, &[])?;
    let field = |k: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    };
    if let Some(e) = line.strip_prefix("ACKS error=") {
        return Err(e.to_string());
    }
    let num = |k: &str| -> Res<f64> {
        field(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("child line lacks {k}: {line}"))
    };
    let rounds = |k: &str| -> Res<Throughput> {
        field(k)
            .and_then(Throughput::decode)
            .ok_or_else(|| format!("child line lacks {k}: {line}"))
    };
    Ok(AcksFigures {
        one: rounds("one")?,
        sixteen: rounds("sixteen")?,
        per_node: rounds("per_node")?,
        one_thread: rounds("one_thread")?,
        hwm_kib: num("hwm_kib")? as u64,
        rss_min_kib: num("rss_min_kib")? as u64,
        rss_max_kib: num("rss_max_kib")? as u64,
        failed: num("failed")? as u64,
    })
}

/// In the child: SendWithAck with 1 and then 16 callers with both nodes on the 2-worker
/// runtime `rt`, then 16 callers with each node on a current-thread runtime of its own, then
/// 16 callers with both nodes on one current-thread runtime, each against a peer that acks
/// every message; VmRSS sampled every 100 ms meanwhile.
fn acks_workload(rt: &tokio::runtime::Runtime, budget: Budget) -> Res<AcksFigures> {
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let (mut lo, mut hi) = (u64::MAX, 0);
            // Bounded by `sampling`, cleared after the measured phases.
            while sampling.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(kib) = proc_status_kib("VmRSS:") {
                    lo = lo.min(kib);
                    hi = hi.max(kib);
                }
            }
            (lo, hi)
        })
    };
    let shared = on_workers(rt, acks_shared_runtime(budget));
    let per_node = acks_per_node_runtime(budget);
    let one_thread = current_thread().and_then(|rt| rt.block_on(acks_on_one_runtime(budget)));
    sampling.store(false, Ordering::Release);
    let (lo, hi) = sampler.join().map_err(|_| "RSS sampler panicked")?;
    let (one, sixteen, mut failed) = shared?;
    let (per_node, f) = per_node?;
    failed += f;
    let (one_thread, f) = one_thread?;
    failed += f;
    Ok(AcksFigures {
        one,
        sixteen,
        per_node,
        one_thread,
        hwm_kib: proc_status_kib("VmHWM:").unwrap_or(0),
        rss_min_kib: lo,
        rss_max_kib: hi,
        failed,
    })
}

/// Acks every message `inbox` receives; ends when its node stops.
async fn ack_everything(mut inbox: Incoming) {
    while let Some(m) = inbox.recv().await {
        let _ = m.ack(None).await;
    }
}

/// Both nodes, 16 callers and the acker on the runtime this runs on (the child runs it on a
/// current-thread runtime: every hand-off of a round trip happens on one thread).
async fn acks_on_one_runtime(budget: Budget) -> Res<(Throughput, u64)> {
    let (a, b) = pair(false, Config::default()).await?;
    let inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let acker = tokio::spawn(ack_everything(inbox));
    let r = acks_rounds(&a, &b.as_peer(), 16, budget).await;
    stop(&[&a, &b]).await;
    let _ = within("acker ends", acker).await;
    r
}

/// Both nodes, their callers and the acker on the caller's runtime: 1 caller, then 16.
async fn acks_shared_runtime(budget: Budget) -> Res<(Throughput, Throughput, u64)> {
    let (a, b) = pair(false, Config::default()).await?;
    let inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
    let acker = tokio::spawn(ack_everything(inbox));
    let peer = b.as_peer();
    let r = async {
        let (one, f1) = acks_rounds(&a, &peer, 1, budget).await?;
        let (sixteen, f16) = acks_rounds(&a, &peer, 16, budget).await?;
        Ok((one, sixteen, f1 + f16))
    }
    .await;
    stop(&[&a, &b]).await;
    let _ = within("acker ends", acker).await;
    r
}

/// A current-thread runtime: the node started inside it runs all its tasks on the one
/// thread that drives it (see the crate docs, "Runtimes").
fn current_thread() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// 16 callers with each node on its own current-thread runtime and thread, as two peers in
/// two processes would each run one: node `b` and its acker on one thread, node `a` and the
/// callers on another.
fn acks_per_node_runtime(budget: Budget) -> Res<(Throughput, u64)> {
    let receive = async |peer_tx: PeerTx, stop_rx: StopRx| -> Res<()> {
        let b = common::start_node(None, Config::default())
            .await
            .map_err(|e| e.to_string())?;
        let inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
        let acker = tokio::spawn(ack_everything(inbox));
        let _ = peer_tx.send(b.as_peer());
        // The sender drops `stop_tx` at the latest when its thread ends.
        let _ = stop_rx.await;
        b.stop().await;
        let _ = within("acker ends", acker).await;
        Ok(())
    };
    on_two_threads(receive, async |peer: RemotePeer| {
        let a = common::start_node(None, Config::default())
            .await
            .map_err(|e| e.to_string())?;
        let r = acks_rounds(&a, &peer, 16, budget).await;
        a.stop().await;
        r
    })
}

/// A short warm-up (connects), then the measured rounds of `callers` SendWithAck callers.
async fn acks_rounds(
    a: &Node,
    peer: &RemotePeer,
    callers: usize,
    budget: Budget,
) -> Res<(Throughput, u64)> {
    // Encoded once, as Fabric's callers hand `SendWithAck` a `SignedGossipMessage`.
    let msg = message(0);
    let (_, mut failed) = acks_phase(a, peer, &msg, callers, budget.warmup).await?;
    let mut rounds = Vec::with_capacity(budget.rounds);
    for _ in 0..budget.rounds {
        let (r, f) = acks_phase(a, peer, &msg, callers, budget.round).await?;
        failed += f;
        rounds.push(r);
    }
    Ok((Throughput { rounds }, failed))
}

/// `callers` tasks each calling SendWithAck back to back for `dur`: the acks as a round, and
/// how many calls got no ack.
async fn acks_phase(
    a: &Node,
    peer: &RemotePeer,
    msg: &SignedMessage,
    callers: usize,
    dur: Duration,
) -> Res<(Round, u64)> {
    let cpu0 = cpu_time();
    let switches0 = context_switches();
    let start = Instant::now();
    // The callers stop when this timer sets `done`: reading a flag per call costs less
    // than reading the clock, which would count against the driver's CPU per ack.
    let done = Arc::new(AtomicBool::new(false));
    let timer = {
        let done = done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(dur).await;
            done.store(true, Ordering::Relaxed);
        })
    };
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (a, peer, msg, done) = (a.clone(), peer.clone(), msg.clone(), done.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    let r = a
                        .send_with_ack_signed(&msg, STALL, 1, std::slice::from_ref(&peer))
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.first().is_some_and(|r| r.result.is_ok()) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                Ok::<_, String>((ok, failed))
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = within("SendWithAck caller", t)
            .await?
            .map_err(|e| e.to_string())??;
        ok += o;
        failed += f;
    }
    let _ = timer.await;
    let round = Round {
        messages: ok,
        secs: start.elapsed().as_secs_f64(),
        cpu_secs: cpu_time() - cpu0,
        switches: Some(context_switches().saturating_sub(switches0)),
        faults: None,
    };
    Ok((round, failed))
}

/// Two threads taking turns, with nothing else in between: per round trip.
struct Wakeups {
    wall_us: f64,
    cpu_us: f64,
}

/// Passes one byte back and forth between two threads over a Unix socket pair for about
/// a round's time: the cost of a thread waking another and sleeping until woken, which
/// every SendWithAck round trip between two threads pays. Virtual machines differ widely.
fn wakeups(budget: Budget) -> Res<Wakeups> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::net::UnixStream;
    let (mut here, mut there) = UnixStream::pair().map_err(|e| e.to_string())?;
    for s in [&here, &there] {
        s.set_read_timeout(Some(STALL)).map_err(|e| e.to_string())?;
    }
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        // Ends when `here` is dropped (a read of 0 bytes) or after STALL without a byte.
        while matches!(there.read(&mut b), Ok(1)) {
            if there.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut b = [7u8; 1];
    let mut trips = 0u64;
    let (cpu0, start) = (cpu_time(), Instant::now());
    while start.elapsed() < budget.round {
        for _ in 0..100 {
            here.write_all(&b).map_err(|e| e.to_string())?;
            here.read_exact(&mut b).map_err(|e| e.to_string())?;
        }
        trips += 100;
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_time() - cpu0);
    drop(here);
    echo.join().map_err(|_| "the echo thread panicked")?;
    Ok(Wakeups {
        wall_us: wall * 1e6 / trips as f64,
        cpu_us: cpu * 1e6 / trips as f64,
    })
}

/// Bytes of fresh memory each page-fault sample touches: well above glibc's largest
/// `mmap` threshold (32 MiB), so each sample is memory the kernel maps anew.
const FAULT_PROBE: usize = 64 << 20;

/// What it costs to fault in one 4 KiB page of fresh anonymous memory, in µs.
struct FaultCost {
    median_us: f64,
    min_us: f64,
    max_us: f64,
    samples: usize,
}

/// Times writing [`FAULT_PROBE`] bytes of fresh memory, and writing them again once they
/// are mapped; the difference, per page faulted in, is what a fault costs. On bare metal it
/// is a fraction of a microsecond; under a hypervisor that backs guest memory lazily, or
/// takes back what the guest frees, it is several times that. That is the price of an
/// allocator giving memory back to the kernel and taking it again, which is what the
/// page-fault counts of the one-way rows show.
fn fault_cost() -> Res<FaultCost> {
    const SAMPLES: usize = 5;
    let mut costs = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let faults0 = page_faults();
        let t0 = Instant::now();
        let mut v = std::hint::black_box(vec![1u8; FAULT_PROBE]);
        let first = t0.elapsed();
        let faulted = page_faults().saturating_sub(faults0);
        let t1 = Instant::now();
        v.fill(2);
        std::hint::black_box(&v);
        let again = t1.elapsed();
        drop(v);
        // Fewer faults than pages means the memory came mapped (transparent huge pages, or
        // an allocator that kept it): not what this measures.
        if faulted < (FAULT_PROBE / 4096 / 2) as u64 {
            return Err(format!(
                "{faulted} page faults for {} pages: memory came already mapped",
                FAULT_PROBE / 4096
            ));
        }
        costs.push(first.saturating_sub(again).as_secs_f64() * 1e6 / faulted as f64);
    }
    costs.sort_by(f64::total_cmp);
    Ok(FaultCost {
        median_us: costs[SAMPLES / 2],
        min_us: costs[0],
        max_us: costs[SAMPLES - 1],
        samples: SAMPLES,
    })
}

/// KiB of freed memory the kernel has reported to the hypervisor so far (virtio-balloon
/// free page reporting), if it does: the hypervisor discards it, and the guest's next use
/// of it faults there as well.
fn reported_kib() -> Option<u64> {
    std::fs::read_to_string("/sys/module/page_reporting/parameters/reported_kib")
        .ok()?
        .trim()
        .parse()
        .ok()
}

// ------------------------------------------------------------------------ latency

struct Latency {
    p50: Duration,
    p99: Duration,
    n: usize,
}

fn percentiles(mut v: Vec<Duration>) -> Res<Latency> {
    if v.is_empty() {
        return Err("no samples".into());
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Ok(Latency {
        p50: at(0.50),
        p99: at(0.99),
        n: v.len(),
    })
}

/// New connection to first delivery: close the connection, `send` one message, time until
/// the receiver has it. Each sample dials TCP (and TLS), Pings, opens the stream, runs the
/// two-way handshake and delivers the message.
async fn connect_latency(tls: bool, budget: Budget) -> Res<Latency> {
    let (a, b) = pair(tls, Config::default()).await?;
    let r = async {
        let mut inbox = b.accept(|_| true).map_err(|e| e.to_string())?;
        let (peer, msg) = (b.as_peer(), message(0));
        let mut samples = Vec::with_capacity(budget.latency_samples);
        // A few unmeasured rounds warm up allocator and caches.
        for i in 0..budget.latency_samples + 5 {
            a.close_conn(b.pki_id());
            let t = Instant::now();
            a.send(&msg, std::slice::from_ref(&peer))
                .map_err(|e| e.to_string())?;
            within("first delivery", inbox.recv())
                .await?
                .ok_or("inbox ended")?;
            if i >= 5 {
                samples.push(t.elapsed());
            }
        }
        if a.stats().dropped_overflow > 0 {
            return Err("a message was dropped".to_string());
        }
        percentiles(samples)
    }
    .await;
    stop(&[&a, &b]).await;
    r
}

/// `probe`: dial (TCP, and TLS) and Ping over a fresh connection each time.
async fn probe_latency(tls: bool, budget: Budget) -> Res<Latency> {
    let (a, b) = pair(tls, Config::default()).await?;
    let r = async {
        let peer = b.as_peer();
        let mut samples = Vec::with_capacity(budget.latency_samples);
        for i in 0..budget.latency_samples + 5 {
            let t = Instant::now();
            within("probe", a.probe(&peer))
                .await?
                .map_err(|e| e.to_string())?;
            if i >= 5 {
                samples.push(t.elapsed());
            }
        }
        percentiles(samples)
    }
    .await;
    stop(&[&a, &b]).await;
    r
}

// ------------------------------------------------------------------------ machine info

fn proc_status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Where a group of rows began: the two CPUs' cache-line round trip then, and the
/// machine's CPU time so far (for the hypervisor's share of it since).
struct GroupStart {
    c2c_ns: f64,
    ticks: Option<common::VmTicks>,
}

impl GroupStart {
    fn now() -> Self {
        GroupStart {
            c2c_ns: common::core_to_core_ns(),
            ticks: common::VmTicks::now(),
        }
    }
}

/// The load column of a group that began at `c0`: what else ran (the 1-minute load
/// average, and the share of this VM's CPU time its host took for other guests), and where
/// the hypervisor had put the two CPUs at the group's start and end.
fn conditions(c0: GroupStart) -> String {
    format!(
        "{}; steal {}; {} → {}",
        load1(),
        common::steal_text(common::VmTicks::steal_since(c0.ticks), 0),
        common::core_to_core_text(c0.c2c_ns),
        common::core_to_core_text(common::core_to_core_ns())
    )
}

/// The machine line's verdict on the host, in bold when it marks the run's figures as
/// from a loaded machine.
fn host_share(steal: Option<f64>) -> String {
    match common::host_verdict(steal) {
        (v, true) => format!("**{v}**"),
        (v, false) => v,
    }
}

/// The 1-minute load average alone.
fn load1() -> String {
    loadavg()
        .split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_string()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// How long an idle virtual CPU polls before it halts (the guest haltpoll driver), if
/// this kernel has one: with none, every wake-up of an idle CPU goes through the
/// hypervisor, which is what the SendWithAck rows with two threads pay for (README,
/// "Performance").
fn halt_polling() -> String {
    let driver = std::fs::read_to_string("/sys/devices/system/cpu/cpuidle/current_driver")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Ok(ns) if driver == "haltpoll" => {
            format!(
                "guest halt polling {} µs before halting",
                ns.trim().parse::<u64>().unwrap_or(0) / 1000
            )
        }
        _ if driver.is_empty() => "cpuidle driver unknown".to_string(),
        _ => format!("cpuidle driver {driver}"),
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "unknown OS".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
