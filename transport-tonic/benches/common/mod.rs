// What both benchmarks need: a runtime of two workers, two nodes (plaintext or mutual TLS
// with a throwaway CA), and the 1 KiB DataMessage every workload sends.
#![allow(dead_code)]

use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{Config, SignedMessage, TestOnlyHmacSecurity};
use fabric_gossip_tonic::{Node, StartError, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::time::Duration;

/// Mutual-TLS material for two nodes signed by one fresh CA.
pub(crate) fn tls_pair() -> (TlsConfig, TlsConfig) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = || {
        let p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        TlsConfig::new(cert.pem(), key.serialize_pem(), issuer.pem())
    };
    (leaf(), leaf())
}

/// A noop-signed 1 KiB DataMessage, as Fabric's `Send` puts it on the wire.
pub(crate) fn message() -> SignedMessage {
    SignedMessage::noop(GossipMessage::data(1, vec![7u8; 1024]))
}

/// The buffers of every lossless one-way workload, sized for throughput rather than Fabric's
/// defaults. The write window lets the writer batch many Envelopes into one HTTP/2 write.
/// The subscription buffer is two of `Incoming`'s delivery batches (64): on 2 workers a
/// queue of 1,024 let the reader run up to 1 MiB ahead of the consumer, and the threads
/// slept and woke 4.2-4.5 times per 1,000 messages instead of 0.3, for 22-51 % more CPU per
/// message (README, "A subscription buffer's depth, and where the consumer runs").
pub(crate) fn throughput_config() -> Config {
    Config::default()
        .with_send_buffer(1024)
        .with_write_window(512)
        .with_subscription_buffer(2 * fabric_gossip_tonic::DELIVERY_BATCH)
}

/// [`throughput_config`] for a node whose consumer runs on the node's own current-thread
/// runtime: there the order is reversed, and a reader paused every 64 deliveries cost
/// 14-51 % more CPU per message than a queue of 1,024 (the same README section).
pub(crate) fn same_thread_config() -> Config {
    throughput_config().with_subscription_buffer(1024)
}

/// Each workload runs over both: `(name, mutual TLS?)`.
pub(crate) const TRANSPORTS: [(&str, bool); 2] = [("plaintext", false), ("mutual_tls", true)];

/// The runtime every benchmark runs on: two workers, as the machine the goals are set for
/// has 2 cores.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One node with `config`, with mutual TLS if given, started on the caller's runtime.
pub(crate) async fn start_node(tls: Option<TlsConfig>, config: Config) -> Result<Node, StartError> {
    let mut b = Node::builder(config).stop_timeout(Duration::from_secs(2));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.start_with(|a| TestOnlyHmacSecurity::new(a.to_string()))
        .await
}

/// Two nodes with `config`, in plaintext or with mutual TLS, started on the caller's
/// runtime: the benchmarks block on it, the report example awaits it inside its workloads.
pub(crate) async fn start_pair(tls: bool, config: Config) -> Result<(Node, Node), StartError> {
    let (ta, tb) = if tls {
        let (x, y) = tls_pair();
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    Ok((
        start_node(ta, config.clone()).await?,
        start_node(tb, config).await?,
    ))
}

/// Two nodes with `config`, in plaintext or with mutual TLS.
pub(crate) fn pair(rt: &tokio::runtime::Runtime, tls: bool, config: Config) -> (Node, Node) {
    rt.block_on(start_pair(tls, config)).unwrap()
}

/// Stops both nodes of a [`pair`].
pub(crate) fn stop_pair(rt: &tokio::runtime::Runtime, a: &Node, b: &Node) {
    rt.block_on(async {
        a.stop().await;
        b.stop().await;
    });
}

/// Where the hypervisor has put this machine's two virtual CPUs, as a round trip of one
/// cache line between two threads (ns): on this kind of machine (AMD EPYC, Zen 4) about 30
/// when they are two hyperthreads of one core, about 60 for two cores sharing an L3 cache,
/// 150-350 for cores that share none. It changes while a run goes on, and every figure of
/// a workload that passes data between the two cores moves with it (the README's "Performance").
pub(crate) fn core_to_core_ns() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    // The other thread's turn is an odd value, ours the next even one; `QUIT` ends it.
    static LINE: AtomicU64 = AtomicU64::new(0);
    const QUIT: u64 = u64::MAX;
    const TRIPS: u64 = 20_000;
    // Two spinning threads on a machine whose other CPU is busy take turns by time slices:
    // the probe gives up after this, with the trips it made.
    const LIMIT: Duration = Duration::from_millis(50);
    LINE.store(0, Ordering::SeqCst);
    let other = std::thread::spawn(|| {
        let mut i = 0;
        loop {
            match LINE.load(Ordering::Acquire) {
                QUIT => return,
                // A swap, not a store: it must not overwrite a `QUIT` stored meanwhile.
                v if v == 2 * i + 1 => {
                    if LINE
                        .compare_exchange(v, v + 1, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        i += 1;
                    }
                }
                _ => std::hint::spin_loop(),
            }
        }
    });
    let t0 = Instant::now();
    let mut trips = 0;
    'trips: while trips < TRIPS {
        LINE.store(2 * trips + 1, Ordering::Release);
        let mut spins = 0u32;
        while LINE.load(Ordering::Acquire) != 2 * trips + 2 {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && t0.elapsed() > LIMIT {
                break 'trips;
            }
        }
        trips += 1;
    }
    let ns = t0.elapsed().as_secs_f64() * 1e9 / trips.max(1) as f64;
    LINE.store(QUIT, Ordering::Release);
    let _ = other.join();
    ns
}

/// A [`core_to_core_ns`] reading as the reports print it. A reading above 10 µs is not a
/// cache line's trip at all: the probe's other thread waited for a time slice because the
/// other CPU was busy (another process, or a loaded host), so it says that instead of a
/// figure the README's ranges (30-750 ns) would misread.
pub(crate) fn core_to_core_text(ns: f64) -> String {
    if ns > 10_000.0 {
        "CPUs busy, not measured".to_string()
    } else {
        format!("{ns:.0} ns")
    }
}

/// This VM's CPU time so far, from the first line of `/proc/stat`, in clock ticks: all of
/// it, and the part its host ran other work while a virtual CPU had work to do (steal).
/// On a shared host steal is what makes a run slow while the load average looks quiet: a
/// virtual CPU the host does not run counts as busy inside the guest.
#[derive(Clone, Copy)]
pub(crate) struct VmTicks {
    total: u64,
    steal: u64,
}

impl VmTicks {
    pub(crate) fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let v: Vec<u64> = line
            .split_whitespace()
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 8).then(|| VmTicks {
            total: v.iter().sum(),
            steal: v[7],
        })
    }

    /// The share of the VM's CPU time the host took since `t0`, in per cent.
    pub(crate) fn steal_since(t0: Option<Self>) -> Option<f64> {
        let (a, b) = (t0?, Self::now()?);
        let total = b.total.checked_sub(a.total)?;
        (total > 0).then(|| 100.0 * b.steal.saturating_sub(a.steal) as f64 / total as f64)
    }
}

/// A steal share as the reports print it, to `decimals` places.
pub(crate) fn steal_text(pct: Option<f64>, decimals: usize) -> String {
    pct.map_or_else(|| "unknown".to_string(), |p| format!("{p:.decimals$} %"))
}

/// Above this share of steal, a run's figures are marked as from a loaded machine (issue
/// 12's "Reporting"): on these VMs a quiet host gives 0-1 %.
pub(crate) const STEAL_LOADED_PCT: f64 = 2.0;

/// What a report says of the host given the steal of its run (per cent), and whether that
/// makes its figures ones from a loaded machine.
pub(crate) fn host_verdict(steal: Option<f64>) -> (String, bool) {
    match steal {
        Some(p) if p > STEAL_LOADED_PCT => (
            format!(
                "the host took {p:.1} % of this VM's CPU time for other guests (steal): \
                 figures from a loaded machine"
            ),
            true,
        ),
        Some(p) => (
            format!("the host took {p:.1} % of this VM's CPU time (steal): a quiet host"),
            false,
        ),
        None => ("steal time unknown (no /proc/stat)".to_string(), false),
    }
}
