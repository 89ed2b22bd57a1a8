//! `fabric-gossip demo`: the whole comm layer at work on one machine, with nothing to set
//! up. Nodes of two organizations (fresh development MSP identities and TLS certificates,
//! made in memory) run on loopback with mutual TLS, exchange messages all-to-all, lose a
//! member (the others presume it dead when sending to it fails, as Fabric's comm reports),
//! get it back on the same address and identity (they reconnect), and exchange messages
//! again. Then the same peers start again as members of a gossip network, with Fabric's
//! membership layer (`fabric-gossip-discovery`) above comm: they find each other from one
//! bootstrap peer per organization and an anchor peer between the two, declare a stopped
//! member dead and take it back when it returns. Live progress lines show what happens; a
//! table and a list of checks end the run.
//! Exit status 0 only if every check holds, 1 otherwise (with the reason), and the whole
//! run is bounded by `--deadline`.

use clap::Args;
use fabric_gossip_core::{Event, PkiId, RemotePeer, SignedMessage, Stats};
use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use fabric_gossip_msp::TrustStore;
use fabric_gossip_msp::dev::{self, DevOrg, OrgSpec, Validity};
use fabric_gossip_tonic::{Node, StartError, TlsConfig};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::membership;
use crate::node::data_message;
use crate::opts;
use crate::out::{self, WriteError};

/// Events a demo node may queue for the progress printer before copies are dropped.
const EVENT_TAP: usize = 1024;
/// Longest any single phase may take before it is declared failed.
const PHASE_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopped node may take to wind its connections down.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Sequence numbers carry the round: `round * ROUND_BASE + i`.
const ROUND_BASE: u64 = 1_000_000;
/// The membership nodes' heartbeat (Fabric's `aliveTimeInterval`, 5 s by default): Fabric's
/// protocol, 20 times faster, so that the demo shows it within seconds.
const ALIVE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a membership node's silence makes it dead (`aliveExpirationTimeout`), and how
/// often dead members are redialled (`reconnectInterval`): eight heartbeats. Fabric derives
/// five (1.25 s here), which heartbeats of 20 nodes sharing a starved process overshot, so
/// that members flapped dead and alive and never all listed each other.
const ALIVE_EXPIRATION: Duration = Duration::from_secs(2);

/// Arguments of `fabric-gossip demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Nodes to run (3 to 20), split between two organizations (Org1MSP gets the extra
    /// one).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(3..=20))]
    nodes: u16,
    /// Messages each node sends to each other node in each round (1 to 10,000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    messages: u32,
    /// Give up, with exit status 1, if the demo is not over after this many seconds (10 to
    /// 600; a passing run takes about 6).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(10..=600))]
    deadline: u64,
    /// Print only the phases, the table and the checks (no per-connection events).
    #[arg(long)]
    quiet: bool,
    /// Print one JSON object with the result (checks, per-node counters, time) instead of
    /// the progress lines and the table.
    #[arg(long)]
    json: bool,
}

/// What the nodes' observer tasks have seen, for the phases to wait on.
#[derive(Default)]
struct Seen {
    /// `received[round][to][from]`: messages delivered.
    received: Vec<Vec<Vec<u32>>>,
    /// How many problems were seen: messages whose payload did not match what their sender
    /// sent or from a stranger, peers authenticated under the wrong MSP.
    problems: usize,
    /// The first few, described.
    first_problems: Vec<String>,
    /// `connected[node][peer]`: Connected events (either direction).
    connected: Vec<Vec<u32>>,
    /// `disconnected[node][peer]`: Disconnected events.
    disconnected: Vec<Vec<u32>>,
    /// `presumed_dead[node][peer]`: PresumedDead notifications (Fabric's API stream).
    presumed_dead: Vec<Vec<u32>>,
    /// `views[node][peer]`: what the membership node `node` knows of `peer`, from its
    /// layer's events.
    views: Vec<Vec<View>>,
    /// `joined[node]`: how many times membership node `node` joined through a bootstrap
    /// or anchor peer (its answer to our membership request came).
    joined: Vec<u32>,
}

/// What one membership node knows of another.
#[derive(Clone, Copy, Debug, Default)]
struct View {
    /// Listed alive now.
    alive: bool,
    /// The incarnation of its latest alive message (its start time in Unix nanoseconds): a
    /// restarted member comes back with a higher one.
    inc: u64,
    /// How many times it was declared dead.
    deaths: u32,
}

/// Problems described in full; the rest are only counted.
const PROBLEMS_KEPT: usize = 8;

impl Seen {
    fn problem(&mut self, what: String) {
        self.problems += 1;
        if self.first_problems.len() < PROBLEMS_KEPT {
            self.first_problems.push(what);
        }
    }

    /// Counts a message node `to` got from member `from` (`None`: not a member) as
    /// delivered only when it is exactly what that member sent it in a round the demo
    /// has; anything else is a problem, which names the sender (`stranger` for a
    /// non-member). A judgment of its own so that a test can show it a stranger, a forged
    /// payload or a round out of range, which the demo's nodes never send.
    fn judge(
        &mut self,
        to: usize,
        from: Option<usize>,
        got: Option<Carried>,
        stranger: impl FnOnce() -> String,
    ) {
        match (from, got) {
            (Some(f), Some((round, n, data)))
                if round < self.received.len() && data == payload(round, f, to, n).as_bytes() =>
            {
                self.received[round][to][f] += 1;
            }
            (f, _) => self.problem(format!(
                "node{to} got an unexpected message from {}",
                f.map_or_else(stranger, |f| format!("node{f}"))
            )),
        }
    }

    /// Whether membership node `i` has joined through a bootstrap or anchor peer.
    fn has_joined(&self, i: usize) -> bool {
        self.joined.get(i).is_some_and(|&n| n > 0)
    }

    /// The last check's verdict: no problem seen, and no membership event dropped (`lost`)
    /// before the observers read it, which would have left a view behind.
    fn verdict(&self, lost: u64) -> Result<(), String> {
        match self.first_problems.first() {
            None if lost == 0 => Ok(()),
            None => Err(format!(
                "{lost} membership events dropped before the demo read them"
            )),
            Some(first) => Err(format!("{} problems, the first: {first}", self.problems)),
        }
    }

    /// Whether membership node `i` declared `v` dead since it had declared it dead
    /// `before` times, and lists it dead still.
    fn declared_dead(&self, i: usize, v: usize, before: u32) -> bool {
        let w = self.views[i][v];
        w.deaths > before && !w.alive
    }

    /// Whether membership node `i` lists `j` alive, with an incarnation above `newer_than`
    /// if given (a restarted member's new one).
    fn lists_alive(&self, i: usize, j: usize, newer_than: Option<u64>) -> bool {
        let w = self.views[i][j];
        w.alive && newer_than.is_none_or(|old| w.inc > old)
    }

    /// Follows membership node `i`'s event `ev` about demo peer `j`, a member of `msp_id`,
    /// into [`Seen::views`]; a member listed under another organization is a problem.
    fn follow(&mut self, i: usize, j: usize, msp_id: &str, ev: &DiscoveryEvent) {
        let (member, alive) = match ev {
            DiscoveryEvent::MemberAlive { member, .. }
            | DiscoveryEvent::MemberRestarted { member, .. } => (member, true),
            DiscoveryEvent::MemberDead { member, .. }
            | DiscoveryEvent::MemberPurged { member, .. } => (member, false),
            _ => return,
        };
        if let Some(org) = member.org.as_deref().filter(|o| *o != msp_id) {
            self.problem(format!("node{i} listed node{j} as a member of {org:?}"));
        }
        let v = &mut self.views[i][j];
        v.alive = alive;
        if alive {
            v.inc = member.timestamp.inc;
        } else if matches!(ev, DiscoveryEvent::MemberDead { .. }) {
            v.deaths += 1;
        }
    }
}

/// What a data message carries, as the receiver reads it: the round and the message's
/// index in it (from the sequence number), and the payload.
type Carried = (usize, u64, Vec<u8>);

/// Splits a sequence number `round * ROUND_BASE + i` back into its round and `i`.
fn carried(seq: u64, data: &[u8]) -> Carried {
    let round = usize::try_from(seq / ROUND_BASE).unwrap_or(usize::MAX);
    (round, seq % ROUND_BASE, data.to_vec())
}

/// Shared between the observer tasks and the phases.
struct Shared {
    seen: Mutex<Seen>,
    changed: Notify,
    started: Instant,
    quiet: bool,
    /// Set once the checks are over, so that the final stops do not print, and once stdout
    /// cannot be written.
    muted: AtomicBool,
    /// Why stdout could not be written (the reader went away): the demo then stops.
    stdout: Mutex<Option<WriteError>>,
    /// Signalled (once) when `stdout` is set.
    gone: Notify,
    names: Vec<String>,
    /// Each member's MSP ID, to check what its peers authenticated.
    msp_ids: Vec<String>,
    by_pki: HashMap<PkiId, usize>,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen());
        self.changed.notify_waiters();
    }

    fn say(&self, line: impl AsRef<str>) {
        if self.muted.load(Ordering::Relaxed) {
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        if let Err(e) = out::print("progress", format!("[{t:6.2}s] {}\n", line.as_ref())) {
            // The rule of every one-shot command (`out::WriteError`): nobody reads the
            // demo any more, so it ends, with that error.
            self.muted.store(true, Ordering::Relaxed);
            let mut first = self.stdout.lock().unwrap_or_else(PoisonError::into_inner);
            if first.is_none() {
                *first = Some(e);
                self.gone.notify_one();
            }
        }
    }

    fn detail(&self, line: impl AsRef<str>) {
        if !self.quiet {
            self.say(format!("  {}", line.as_ref()));
        }
    }

    fn name(&self, pki: &PkiId) -> String {
        self.by_pki
            .get(pki)
            .map_or_else(|| format!("unknown peer {pki}"), |i| self.names[*i].clone())
    }

    /// The demo's one wait: until `ok(seen, x)` holds for every `x` of `items`, or
    /// `deadline` passes; the error then says `what` and names the first few items still
    /// missing, each described by `missing(seen, x)`.
    async fn wait_each<T: Copy>(
        &self,
        deadline: Instant,
        items: &[T],
        ok: impl Fn(&Seen, T) -> bool,
        what: &str,
        missing: impl Fn(&Seen, T) -> String,
    ) -> Result<(), String> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change right after it is not missed.
            notified.as_mut().enable();
            let done = {
                let s = self.seen();
                items.iter().all(|x| ok(&s, *x))
            };
            if done {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let s = self.seen();
                let list: Vec<String> = items
                    .iter()
                    .filter(|x| !ok(&s, **x))
                    .take(6)
                    .map(|x| missing(&s, *x))
                    .collect();
                return Err(format!("{what}: {}", list.join(", ")));
            }
        }
    }
}

/// One demo member: its identity and TLS material outlive its node, so it can restart.
struct Member {
    /// Index of its organization and of the peer in it.
    org: usize,
    peer: usize,
    msp_id: String,
    pki: PkiId,
    addr: SocketAddr,
    tls: TlsConfig,
    node: Option<Node>,
    tasks: Vec<JoinHandle<()>>,
    /// Counters of earlier incarnations.
    past: Vec<Stats>,
    restarted: bool,
}

impl Member {
    fn peer(&self) -> RemotePeer {
        RemotePeer::new(self.addr.to_string(), self.pki.clone())
    }

    /// The same peer (identity and TLS material), not started, its address to be chosen by
    /// its first start: the membership phases run each peer again as a node of its own.
    fn fresh(&self) -> Member {
        Member {
            org: self.org,
            peer: self.peer,
            msp_id: self.msp_id.clone(),
            pki: self.pki.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: self.tls.clone(),
            node: None,
            tasks: Vec::new(),
            past: Vec::new(),
            restarted: false,
        }
    }
}

/// What a started node runs above comm.
#[derive(Clone, Copy)]
enum Role {
    /// Comm alone: the application sends and receives (phases 1 to 8).
    Comm,
    /// Fabric's membership layer, joining through `bootstrap` if given (phases 9 to 11).
    Member { bootstrap: Option<SocketAddr> },
}

/// The membership layer's settings for a node listening on `addr`: reached there by its
/// own organization and by the other (its external endpoint), Fabric's defaults but for
/// the heartbeat and the expiry ([`ALIVE_INTERVAL`], [`ALIVE_EXPIRATION`]).
fn membership_config(addr: SocketAddr, bootstrap: Option<SocketAddr>) -> DiscoveryConfig {
    let mut c = DiscoveryConfig::new(addr.to_string())
        .with_external_endpoint(addr.to_string())
        .with_bootstrap(bootstrap.map(|b| b.to_string()))
        .with_alive_interval(ALIVE_INTERVAL)
        .with_seed(fabric_gossip_tonic::random_seed());
    c.alive_expiration = ALIVE_EXPIRATION;
    c.reconnect_interval = ALIVE_EXPIRATION;
    c
}

/// The payload of message `i` of `round` from `from` to `to`; the receiver recomputes it.
fn payload(round: usize, from: usize, to: usize, i: u64) -> String {
    format!("round {round}: node{from} -> node{to}, message {i}")
}

/// Why the demo did not pass.
enum Failure {
    /// A check failed, or a phase could not run: the reason.
    Check(String),
    /// stdout could not be written (see [`WriteError`]): exit status 2.
    Write(WriteError),
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure::Check(reason)
    }
}

/// Runs `fabric-gossip demo`: exit status 0 when every check holds, 1 when one fails or
/// the deadline passes, 2 when stdout cannot be written (a reader gone away:
/// [`WriteError`]).
pub(crate) fn run(a: &DemoArgs) -> ExitCode {
    let rt = match opts::runtime() {
        Ok(rt) => rt,
        Err(e) => return opts::config_failure(&e),
    };
    let deadline = Duration::from_secs(a.deadline);
    let code = rt.block_on(async {
        let outcome = tokio::time::timeout(deadline, demo(a)).await.ok();
        let code = match &outcome {
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(Failure::Write(e))) => return e.exit(),
            _ => ExitCode::FAILURE,
        };
        let Some(text) = failure_text(a.json, a.deadline, outcome.as_ref()) else {
            return code;
        };
        match out::print("result", text) {
            Ok(()) => code,
            Err(e) => e.exit(),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// What is left to print of a demo that did not pass, given how it ended (`None`: not
/// within `--deadline`): its reason, as text or as the JSON object; nothing when it passed,
/// when stdout is gone, or when `--json` already printed the object, reason included. A
/// function of its own so that a test can show it the failures a passing machine never
/// has.
fn failure_text(
    json: bool,
    deadline: u64,
    outcome: Option<&Result<(), Failure>>,
) -> Option<String> {
    let reason = match outcome {
        Some(Ok(()) | Err(Failure::Write(_))) => return None,
        Some(Err(Failure::Check(_))) if json => return None,
        Some(Err(Failure::Check(reason))) => reason.clone(),
        None => format!("not finished within --deadline {deadline}s"),
    };
    Some(if json {
        format!(
            "{}\n",
            json!({"result": "failed", "ok": false, "reason": reason})
        )
    } else {
        format!("\nDEMO FAILED: {reason}\n")
    })
}

/// Generates both organizations in memory and returns them with the trust store.
fn make_orgs(n: usize) -> Result<(Vec<DevOrg>, TrustStore, Vec<u8>), String> {
    let org1 = n.div_ceil(2);
    let specs = [
        OrgSpec::new("Org1MSP", "org1.example.com", org1),
        OrgSpec::new("Org2MSP", "org2.example.com", n - org1),
    ];
    let now = fabric_gossip_core::Instant::from_system_time(std::time::SystemTime::now());
    // Valid from an hour ago: certificates made "now" must not be refused as not yet valid.
    let validity = Validity::starting(now - Duration::from_secs(3600), Duration::from_secs(86_400));
    let orgs = dev::generate_in_memory(&specs, validity, &mut dev::OsRng)
        .map_err(|e| format!("generating development certificates: {e}"))?;
    let trust = dev::trust_all(&orgs).map_err(|e| format!("trust store: {e}"))?;
    let mut tls_cas = Vec::new();
    for o in &orgs {
        tls_cas.extend_from_slice(o.tls_ca.cert_pem().as_bytes());
    }
    Ok((orgs, trust, tls_cas))
}

/// Starts (or restarts) member `i`'s node in `role`, on its address if it has had one, and
/// its observer tasks.
async fn start_member(
    m: &mut Member,
    i: usize,
    org: &DevOrg,
    trust: &TrustStore,
    shared: &Arc<Shared>,
    deadline: Instant,
    role: Role,
) -> Result<(), String> {
    let mut last_bind_error = String::new();
    let (node, tap) = loop {
        // A provider holds the private key and is consumed by a start, so each attempt
        // builds one for the same identity.
        let security = org
            .security(&org.peers[m.peer], trust.clone())
            .map_err(|e| format!("node{i}: identity: {e}"))?;
        let b = Node::builder(opts::config())
            .listen(m.addr)
            .tls(m.tls.clone())
            .stop_timeout(STOP_TIMEOUT);
        let (b, rx) = match role {
            Role::Comm => {
                let (tx, rx) = mpsc::channel(EVENT_TAP);
                (b.events(tx), Some(rx))
            }
            // Made once the listener is bound: port 0 is only known then.
            Role::Member { bootstrap } => (
                b.try_layer(move |addr| Discovery::new(membership_config(addr, bootstrap))),
                None,
            ),
        };
        match b.start(security).await {
            Ok(node) => break (node, rx),
            // Only a restart can race the release of its old listener; retry it briefly.
            Err(StartError::Bind { error, .. })
                if m.addr.port() != 0 && Instant::now() < deadline =>
            {
                last_bind_error = error.to_string();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e @ StartError::Bind { .. }) if m.addr.port() != 0 => {
                return Err(format!("node{i}: {e} (again; before: {last_bind_error})"));
            }
            Err(e) => return Err(format!("node{i} did not start: {e}")),
        }
    };
    if *node.pki_id() != m.pki {
        return Err(format!("node{i} started with another PKI-ID"));
    }
    m.addr = node.local_addr();
    // Kept before anything can fail, so that the final stop stops it.
    let node = m.node.insert(node);
    match tap {
        Some(tap) => m.tasks.extend(observe(i, node, tap, shared)),
        None => m.tasks.push(observe_membership(i, node, shared)?),
    }
    Ok(())
}

/// Follows membership node `i`'s layer events into [`Seen::views`], and shows them. A
/// member no demo peer is, or listed under another organization than its own, is a
/// problem.
fn observe_membership(
    i: usize,
    node: &Node,
    shared: &Arc<Shared>,
) -> Result<JoinHandle<()>, String> {
    let mut events = node
        .layer_events::<DiscoveryEvent>()
        .ok_or_else(|| format!("node{i} hosts no membership layer"))?;
    let sh = shared.clone();
    Ok(tokio::spawn(async move {
        use tokio_stream::StreamExt;
        // The stream ends when the node stops.
        while let Some(ev) = events.next().await {
            let (member, how) = match &ev {
                DiscoveryEvent::MemberAlive {
                    member,
                    resurrected: false,
                } => (member, "alive".to_string()),
                DiscoveryEvent::MemberAlive { member, .. } => (
                    member,
                    format!("alive again, incarnation {}", member.timestamp.inc),
                ),
                DiscoveryEvent::MemberRestarted { member, .. } => (
                    member,
                    format!("restarted, incarnation {}", member.timestamp.inc),
                ),
                DiscoveryEvent::MemberDead { member, reason } => (
                    member,
                    format!("dead: {}", membership::dead_reason(*reason)),
                ),
                DiscoveryEvent::MemberPurged { member, reason } => (
                    member,
                    format!("purged: {}", membership::purge_reason(*reason)),
                ),
                DiscoveryEvent::BootstrapJoined { endpoint, pki_id } => {
                    sh.detail(format!(
                        "node{i}: joined through {} at {endpoint}",
                        sh.name(pki_id)
                    ));
                    sh.update(|s| {
                        if let Some(j) = s.joined.get_mut(i) {
                            *j += 1;
                        }
                    });
                    continue;
                }
                DiscoveryEvent::BootstrapFailed {
                    endpoint, error, ..
                } => {
                    sh.detail(format!(
                        "node{i}: joining through {endpoint} failed: {error}"
                    ));
                    continue;
                }
                _ => continue,
            };
            let org = member.org.as_deref().unwrap_or("?");
            let Some(j) = sh.by_pki.get(&member.pki_id).copied() else {
                sh.update(|s| {
                    s.problem(format!(
                        "node{i} listed a member no demo peer is: {} of {org}",
                        member.pki_id
                    ));
                });
                continue;
            };
            sh.detail(format!(
                "node{i}: node{j} {how} ({org} at {})",
                member.preferred_endpoint()
            ));
            sh.update(|s| s.follow(i, j, &sh.msp_ids[j], &ev));
        }
    }))
}

fn observe(
    i: usize,
    node: &Node,
    mut tap: mpsc::Receiver<Event>,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let sh = shared.clone();
    tasks.push(tokio::spawn(async move {
        while let Some(ev) = tap.recv().await {
            match ev {
                Event::Connected { info, inbound, .. } => {
                    let p = sh.by_pki.get(&info.id).copied();
                    let msp = opts::msp_of(&info.identity)
                        .map(|(m, _)| m)
                        .unwrap_or_default();
                    sh.detail(format!(
                        "node{i}: connected to {} ({msp}, {}, mutual TLS)",
                        sh.name(&info.id),
                        if inbound { "inbound" } else { "outbound" }
                    ));
                    if let Some(p) = p {
                        sh.update(|s| {
                            s.connected[i][p] += 1;
                            if msp != sh.msp_ids[p] {
                                s.problem(format!(
                                    "node{i} authenticated node{p} as a member of {msp:?}"
                                ));
                            }
                        });
                    }
                }
                Event::Disconnected { pki_id, reason, .. } => {
                    sh.detail(format!(
                        "node{i}: connection to {} closed ({reason})",
                        sh.name(&pki_id)
                    ));
                    if let Some(p) = sh.by_pki.get(&pki_id).copied() {
                        sh.update(|s| s.disconnected[i][p] += 1);
                    }
                }
                Event::HandshakeFailed { remote, error, .. } => {
                    sh.detail(format!("node{i}: handshake with {remote} failed: {error}"));
                }
                _ => {}
            }
        }
    }));
    let sh = shared.clone();
    let mut dead = node.presumed_dead();
    tasks.push(tokio::spawn(async move {
        use tokio_stream::StreamExt;
        while let Some(p) = dead.next().await {
            sh.say(format!(
                "node{i}: {} presumed dead (sending to it failed)",
                sh.name(&p)
            ));
            if let Some(j) = sh.by_pki.get(&p).copied() {
                sh.update(|s| s.presumed_dead[i][j] += 1);
            }
        }
    }));
    let sh = shared.clone();
    match node.accept(|_| true) {
        Ok(mut inbox) => tasks.push(tokio::spawn(async move {
            while let Some(r) = inbox.recv().await {
                let from = sh.by_pki.get(r.sender()).copied();
                let got = match &r.message().content {
                    Some(fabric_gossip_core::proto::gossip::gossip_message::Content::DataMsg(
                        d,
                    )) => d.payload.as_ref().map(|p| carried(p.seq_num, &p.data)),
                    _ => None,
                };
                sh.update(|s| s.judge(i, from, got, || sh.name(r.sender())));
            }
        })),
        Err(e) => sh.say(format!("node{i}: cannot subscribe: {e}")),
    }
    tasks
}

/// Who sends to whom in a round: `(sender, receivers)`.
type Plan = Vec<(usize, Vec<usize>)>;

/// Every member of `group` to every other member of `group`.
fn all_to_all(group: &[usize]) -> Plan {
    group
        .iter()
        .map(|s| (*s, group.iter().copied().filter(|t| t != s).collect()))
        .collect()
}

/// The (sender, receiver) pairs of a plan.
fn pairs(plan: &Plan) -> Vec<(usize, usize)> {
    plan.iter()
        .flat_map(|(s, ts)| ts.iter().map(move |t| (*s, *t)))
        .collect()
}

/// Sends round `round` of `plan`: `m` messages from each sender to each of its receivers,
/// waiting for buffer room (so that none is dropped for lack of it); and, when `dead` is
/// given, `m` to it as well, Fabric-style without waiting, from every sender. Returns once
/// every message is queued.
async fn send_round(
    members: &[Member],
    round: usize,
    plan: &Plan,
    dead: Option<usize>,
    m: u64,
    deadline: Instant,
) -> Result<(), String> {
    let mut tasks = Vec::new();
    for (s, receivers) in plan {
        let s = *s;
        let node = members[s]
            .node
            .clone()
            .ok_or_else(|| format!("node{s} is not running"))?;
        let targets: Vec<(usize, RemotePeer)> =
            receivers.iter().map(|t| (*t, members[*t].peer())).collect();
        let dead = dead.map(|d| (d, members[d].peer()));
        tasks.push(tokio::spawn(async move {
            for i in 1..=m {
                let seq = round as u64 * ROUND_BASE + i;
                for (t, peer) in &targets {
                    let msg = data_message(seq, payload(round, s, *t, i).as_bytes(), 0);
                    node.send_wait(&SignedMessage::noop(msg), peer)
                        .await
                        .map_err(|e| format!("node{s} -> node{t}: {e}"))?;
                }
                if let Some((d, peer)) = &dead {
                    let msg = data_message(seq, payload(round, s, *d, i).as_bytes(), 0);
                    node.send(&SignedMessage::noop(msg), std::slice::from_ref(peer))
                        .map_err(|e| format!("node{s} -> node{d}: {e}"))?;
                }
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(format!("a sender task failed: {e}")),
            Err(_) => return Err("sending did not finish in time".into()),
        }
    }
    Ok(())
}

/// Waits until every receiver of `plan` has all `m` messages of `round` from its sender,
/// then checks that none came twice. Returns how many were delivered.
async fn wait_delivered(
    shared: &Shared,
    round: usize,
    plan: &Plan,
    m: u64,
    deadline: Instant,
) -> Result<usize, String> {
    let pairs = pairs(plan);
    let m = u32::try_from(m).unwrap_or(u32::MAX);
    shared
        .wait_each(
            deadline,
            &pairs,
            |s, (f, t)| s.received[round][t][f] >= m,
            "not all delivered",
            |s, (f, t)| format!("node{t} has {}/{m} from node{f}", s.received[round][t][f]),
        )
        .await?;
    let s = shared.seen();
    if let Some((f, t)) = pairs.iter().find(|(f, t)| s.received[round][*t][*f] != m) {
        return Err(format!(
            "node{t} received {} messages of this round from node{f}, {m} were sent",
            s.received[round][*t][*f]
        ));
    }
    Ok(pairs.len() * m as usize)
}

/// Sends a round and waits for it, printing how long delivery took.
async fn exchange(
    members: &[Member],
    shared: &Shared,
    round: usize,
    plan: &Plan,
    dead: Option<usize>,
    m: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + PHASE_LIMIT;
    let t = Instant::now();
    send_round(members, round, plan, dead, m, deadline).await?;
    let count = wait_delivered(shared, round, plan, m, deadline).await?;
    shared.say(format!(
        "delivered {count} messages in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

/// Checks that every member of `group` holds a connection to every other member.
fn connected_all(members: &[Member], group: &[usize]) -> Result<(), String> {
    for &i in group {
        let node = members[i]
            .node
            .as_ref()
            .ok_or_else(|| format!("node{i} is not running"))?;
        for &j in group {
            if i != j && !node.is_connected(&members[j].pki) {
                return Err(format!("node{i} holds no connection to node{j}"));
            }
        }
    }
    Ok(())
}

/// One row of the final table: the counters of every incarnation of a member.
struct Row {
    connections: usize,
    sent: u64,
    received: u64,
    dropped: u64,
    presumed_dead: u64,
    handshakes_ok: u64,
    handshakes_failed: u64,
}

fn row(m: &Member) -> Row {
    let mut all = m.past.clone();
    if let Some(n) = &m.node {
        all.push(n.stats());
    }
    let sum = |f: fn(&Stats) -> u64| all.iter().map(f).sum::<u64>();
    Row {
        connections: m.node.as_ref().map_or(0, |n| n.connections().len()),
        sent: sum(|s| s.sent),
        received: sum(|s| s.received),
        dropped: sum(|s| {
            s.dropped_overflow
                + s.dropped_on_close
                + s.dropped_no_connection
                + s.dropped_subscription_overflow
        }),
        presumed_dead: sum(|s| s.presumed_dead),
        handshakes_ok: sum(|s| s.handshakes_ok),
        handshakes_failed: sum(Stats::handshake_failures_total),
    }
}

/// Stops every member's node, all at once, then ends its observer tasks. Each stop may wait
/// up to [`STOP_TIMEOUT`] for its remotes: one after the other, the 2 × `--nodes` stops of a
/// starved machine took longer than the phases (49 s for 40 nodes), and a failed check was
/// then reported as `--deadline` passing, without the table or the checks.
async fn stop_all<'a>(members: impl Iterator<Item = &'a mut Member>) {
    let mut stops = tokio::task::JoinSet::new();
    let mut tasks = Vec::new();
    for m in members {
        if let Some(node) = m.node.take() {
            stops.spawn(async move { node.stop().await });
        }
        tasks.append(&mut m.tasks);
    }
    while stops.join_next().await.is_some() {}
    for t in tasks {
        t.abort();
    }
}

/// A member's row as JSON, for `--json`; `listed`: the members its membership node listed
/// alive at the end (`None`: not running then).
fn row_json(i: usize, m: &Member, listed: Option<usize>) -> Value {
    let r = row(m);
    json!({
        "node": format!("node{i}"),
        "org": m.msp_id,
        "address": m.addr.to_string(),
        "restarted": m.restarted,
        "connections": r.connections,
        "sent": r.sent,
        "received": r.received,
        "dropped": r.dropped,
        "presumed_dead": r.presumed_dead,
        "handshakes_ok": r.handshakes_ok,
        "handshakes_failed": r.handshakes_failed,
        "members_alive": listed,
    })
}

/// The final table: each member's comm counters over phases 1 to 8, and how many members
/// its membership node listed alive at the end (`listed`; `-` where it was not running).
fn table(members: &[Member], listed: &[Option<usize>]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<7} {:<8} {:<16} {:>5} {:>6} {:>6} {:>7} {:>13} {:>17} {:>7}",
        "node",
        "org",
        "address",
        "conns",
        "sent",
        "recv",
        "dropped",
        "presumed-dead",
        "handshakes ok/bad",
        "members"
    );
    for (i, m) in members.iter().enumerate() {
        let r = row(m);
        let name = format!("node{i}{}", if m.restarted { "*" } else { "" });
        let _ = writeln!(
            t,
            "{:<7} {:<8} {:<16} {:>5} {:>6} {:>6} {:>7} {:>13} {:>17} {:>7}",
            name,
            m.msp_id,
            m.addr.to_string(),
            r.connections,
            r.sent,
            r.received,
            r.dropped,
            r.presumed_dead,
            format!("{}/{}", r.handshakes_ok, r.handshakes_failed),
            listed
                .get(i)
                .copied()
                .flatten()
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        );
    }
    t
}

/// The checks, in order; the first failure ends the run.
#[derive(Default)]
/// The checks made so far: a stable name for scripts (`--json`'s `id`), the sentence a
/// reader gets, and the outcome.
struct Checks(Vec<(&'static str, String, Result<(), String>)>);

impl Checks {
    fn record(
        &mut self,
        shared: &Shared,
        id: &'static str,
        what: String,
        r: Result<(), String>,
    ) -> Result<(), ()> {
        match &r {
            Ok(()) => shared.say(format!("ok: {what}")),
            Err(e) => shared.say(format!("FAILED: {what}: {e}")),
        }
        let failed = r.is_err();
        self.0.push((id, what, r));
        if failed { Err(()) } else { Ok(()) }
    }
}

fn short(p: &PkiId) -> String {
    hex::encode(&p.as_bytes()[..p.as_bytes().len().min(6)])
}

/// The members of `orgs`, in order, each with its identity and TLS material, not started,
/// their address to be chosen by their first start.
fn members(orgs: &[DevOrg], trust: &TrustStore, tls_cas: &[u8]) -> Result<Vec<Member>, String> {
    let mut members = Vec::new();
    for (oi, org) in orgs.iter().enumerate() {
        for (pi, peer) in org.peers.iter().enumerate() {
            let security = org
                .security(peer, trust.clone())
                .map_err(|e| format!("{}: {e}", peer.host))?;
            members.push(Member {
                org: oi,
                peer: pi,
                msp_id: org.spec.msp_id.clone(),
                pki: security.pki_id().clone(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: TlsConfig::new(
                    peer.tls.cert_pem(),
                    peer.tls.key_pem.clone(),
                    tls_cas.to_vec(),
                )
                .require_client_certificate(true),
                node: None,
                tasks: Vec::new(),
                past: Vec::new(),
                restarted: false,
            });
        }
    }
    Ok(members)
}

async fn demo(a: &DemoArgs) -> Result<(), Failure> {
    let n = usize::from(a.nodes);
    let m = u64::from(a.messages);
    let t0 = Instant::now();
    if !a.json {
        out::print(
            "progress",
            format!(
                "fabric-gossip demo: {n} gossip nodes of two organizations on loopback, \
                 mutual TLS, {m} messages per pair and round\n"
            ),
        )
        .map_err(Failure::Write)?;
    }
    let (orgs, trust, tls_cas) = make_orgs(n)?;
    let mut members = members(&orgs, &trust, &tls_cas)?;
    let mut joiners: Vec<Member> = members.iter().map(Member::fresh).collect();
    let rounds = 5;
    let grid = || vec![vec![0u32; n]; n];
    let shared = Arc::new(Shared {
        seen: Mutex::new(Seen {
            received: (0..rounds).map(|_| grid()).collect(),
            problems: 0,
            first_problems: Vec::new(),
            connected: grid(),
            disconnected: grid(),
            presumed_dead: grid(),
            views: vec![vec![View::default(); n]; n],
            joined: vec![0; n],
        }),
        changed: Notify::new(),
        started: t0,
        quiet: a.quiet,
        // With --json only the final object is printed.
        muted: AtomicBool::new(a.json),
        stdout: Mutex::new(None),
        gone: Notify::new(),
        names: (0..n).map(|i| format!("node{i}")).collect(),
        msp_ids: members.iter().map(|m| m.msp_id.clone()).collect(),
        by_pki: members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.pki.clone(), i))
            .collect(),
    });
    shared.say(format!(
        "generated 2 identity CAs, 2 TLS CAs and {n} peer identities + TLS certificates \
         (Org1MSP, Org2MSP; ECDSA P-256) in memory"
    ));
    let mut checks = Checks::default();
    // A reader gone away ends the run at once: the nodes are stopped below as usual.
    let result = tokio::select! {
        r = phases(a, &mut members, &mut joiners, &orgs, &trust, &shared, &mut checks) => r,
        () = shared.gone.notified() => Err(()),
    };

    let secs = t0.elapsed().as_secs_f64();
    // Only a membership node still running lists anyone.
    let listed: Vec<Option<usize>> = {
        let s = shared.seen();
        s.views
            .iter()
            .zip(&joiners)
            .map(|(v, m)| {
                m.node
                    .as_ref()
                    .map(|_| v.iter().filter(|v| v.alive).count())
            })
            .collect()
    };
    let table = table(&members, &listed);
    let rows: Vec<Value> = members
        .iter()
        .enumerate()
        .map(|(i, m)| row_json(i, m, listed[i]))
        .collect();
    shared.muted.store(true, Ordering::Relaxed);
    stop_all(members.iter_mut().chain(joiners.iter_mut())).await;
    if let Some(e) = shared
        .stdout
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(Failure::Write(e));
    }
    let reason = result.is_err().then(|| {
        checks
            .0
            .iter()
            .find_map(|(_, w, r)| r.as_ref().err().map(|e| format!("{w}: {e}")))
            .unwrap_or_else(|| "a phase failed".into())
    });
    if a.json {
        let checks: Vec<Value> = checks
            .0
            .iter()
            .map(|(id, what, r)| match r {
                Ok(()) => json!({"id": id, "check": what, "ok": true}),
                Err(e) => json!({"id": id, "check": what, "ok": false, "error": e}),
            })
            .collect();
        let mut v = json!({
            "result": if reason.is_none() { "passed" } else { "failed" },
            // The exit status in one field, as `ping`, `handshake` and `sim` have it.
            "ok": reason.is_none(),
            "nodes": rows,
            "checks": checks,
            "seconds": (secs * 1000.0).round() / 1000.0,
        });
        if let Some(r) = &reason {
            v["reason"] = json!(r);
        }
        out::print("result", format!("{v}\n")).map_err(Failure::Write)?;
        return reason.map_or(Ok(()), |r| Err(Failure::Check(r)));
    }
    let mut text = format!("\n{table}");
    if members.iter().any(|m| m.restarted) {
        text.push_str(
            "* restarted: counters of both runs. dropped = messages sent to a node while it \
             was down (Fabric's Send drops them and reports the peer presumed dead).\n",
        );
    }
    text.push_str(
        "members = the others its membership node (phases 9 to 11, on an address of its own) \
         listed alive at the end.\n",
    );
    text.push_str("\nchecks:\n");
    for (_, what, r) in &checks.0 {
        let _ = match r {
            Ok(()) => writeln!(text, "  ok      {what}"),
            Err(e) => writeln!(text, "  FAILED  {what}: {e}"),
        };
    }
    if reason.is_none() {
        let _ = writeln!(
            text,
            "\nDEMO PASSED: {} checks in {secs:.2} s",
            checks.0.len()
        );
    }
    out::print("result", text).map_err(Failure::Write)?;
    reason.map_or(Ok(()), |r| Err(Failure::Check(r)))
}

/// The demo proper, one method per phase; each phase records its check, and the first
/// failure stops the run.
struct Phases<'a> {
    members: &'a mut [Member],
    /// The same peers as membership nodes (phases 9 to 11).
    joiners: &'a mut [Member],
    orgs: &'a [DevOrg],
    trust: &'a TrustStore,
    shared: &'a Arc<Shared>,
    checks: &'a mut Checks,
    /// Messages per pair and round.
    m: u64,
    /// The node that is stopped and restarted: the last.
    victim: usize,
}

/// What a phase returns: `Err` once a check failed (it is in [`Checks`]).
type Phase = Result<(), ()>;

/// Runs every phase in order.
async fn phases(
    a: &DemoArgs,
    members: &mut [Member],
    joiners: &mut [Member],
    orgs: &[DevOrg],
    trust: &TrustStore,
    shared: &Arc<Shared>,
    checks: &mut Checks,
) -> Phase {
    let victim = members.len() - 1;
    let mut p = Phases {
        members,
        joiners,
        orgs,
        trust,
        shared,
        checks,
        m: u64::from(a.messages),
        victim,
    };
    p.start_nodes().await?;
    p.handshakes().await?;
    p.all_to_all(3, 1, "").await?;
    p.stop_victim().await?;
    p.send_while_victim_is_down().await?;
    p.restart_victim().await?;
    p.reconnect_to_victim().await?;
    p.all_to_all(8, 4, ", node{victim} included").await?;
    p.membership_converges().await?;
    p.membership_loses_victim().await?;
    p.membership_takes_victim_back().await?;
    p.nothing_unexpected()
}

impl Phases<'_> {
    fn n(&self) -> usize {
        self.members.len()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// Every node but the victim.
    fn others(&self) -> Vec<usize> {
        (0..self.victim).collect()
    }

    fn record(&mut self, id: &'static str, what: String, r: Result<(), String>) -> Phase {
        self.checks.record(self.shared, id, what, r)
    }

    async fn start(&mut self, i: usize) -> Result<(), String> {
        let org = &self.orgs[self.members[i].org];
        start_member(
            &mut self.members[i],
            i,
            org,
            self.trust,
            self.shared,
            Instant::now() + PHASE_LIMIT,
            Role::Comm,
        )
        .await
    }

    /// The first peer of `i`'s organization: its bootstrap peer.
    fn first_of_org(&self, i: usize) -> usize {
        let org = self.joiners[i].org;
        self.joiners.iter().position(|m| m.org == org).unwrap_or(i)
    }

    /// Starts membership node `i`, joining through its organization's first peer (started
    /// before it: the members are in order of organization) unless it is that peer; the
    /// other organization's first peer also reaches node0 as an anchor peer.
    async fn start_joiner(&mut self, i: usize) -> Result<(), String> {
        let first = self.first_of_org(i);
        let bootstrap = (first != i).then(|| self.joiners[first].addr);
        let org = &self.orgs[self.joiners[i].org];
        start_member(
            &mut self.joiners[i],
            i,
            org,
            self.trust,
            self.shared,
            Instant::now() + PHASE_LIMIT,
            Role::Member { bootstrap },
        )
        .await?;
        if first != i || first == 0 {
            return Ok(());
        }
        let anchor = self.joiners[0].addr.to_string();
        self.joiners[i]
            .node
            .as_ref()
            .and_then(|node| {
                node.with_layer_mut(|d: &mut Discovery, comm| {
                    d.connect_anchor(comm.now(), anchor);
                })
            })
            .ok_or_else(|| format!("node{i} hosts no membership layer"))
    }

    /// Every ordered pair of distinct membership nodes.
    fn both_ways(&self) -> Vec<(usize, usize)> {
        pairs(&all_to_all(&self.all()))
    }

    /// Phase 9: The peers start again with the membership layer and find each other: each
    /// joins through its organization's first peer (Fabric's bootstrap, which must be of
    /// its own organization), and the other organization's first peer reaches node0 as an
    /// anchor peer (what a channel's configuration names); alive messages do the rest.
    async fn membership_converges(&mut self) -> Phase {
        let n = self.n();
        let org2 = self.first_of_org(n - 1);
        self.shared.say(format!(
            "== 9. membership: the {n} peers start again as members of a gossip network \
             (Fabric's membership layer, a heartbeat every {} ms): each joins through its \
             organization's first peer, node{org2} reaches Org1MSP through node0 as an \
             anchor peer",
            ALIVE_INTERVAL.as_millis()
        ));
        let t = Instant::now();
        let mut r = Ok(());
        for i in 0..n {
            if let Err(e) = self.start_joiner(i).await {
                r = Err(e);
                break;
            }
        }
        let deadline = Instant::now() + PHASE_LIMIT;
        // node0 joins nobody: the others come to it.
        let joiners: Vec<usize> = (1..n).collect();
        let (pairs, sh) = (self.both_ways(), self.shared);
        let r = async {
            r?;
            sh.wait_each(
                deadline,
                &joiners,
                |s, i| s.has_joined(i),
                "not joined through its bootstrap or anchor peer",
                |_, i| format!("node{i}"),
            )
            .await?;
            sh.wait_each(
                deadline,
                &pairs,
                |s, (i, j)| s.lists_alive(i, j, None),
                "not (yet) listed alive",
                |_, (i, j)| format!("node{j} by node{i}"),
            )
            .await
        }
        .await;
        if r.is_ok() {
            self.shared.say(format!(
                "full membership in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            ));
        }
        // The members are in order of organization: node{org2} is Org2MSP's first.
        self.record(
            "membership_joined",
            format!(
                "every node but node0 joined through its bootstrap or anchor peer, and every \
                 node lists the other {} alive (of {n} peers: {org2} of Org1MSP, {} of Org2MSP)",
                n - 1,
                n - org2
            ),
            r,
        )
    }

    /// Phase 10: The victim's membership node stops: every other member must declare it
    /// dead (its connections close and sends to it fail, or its heartbeats stop).
    async fn membership_loses_victim(&mut self) -> Phase {
        let v = self.victim;
        self.shared.say(format!(
            "== 10. stopping node{v}'s membership node: the others must declare it dead"
        ));
        let base: Vec<u32> = {
            let s = self.shared.seen();
            (0..self.n()).map(|i| s.views[i][v].deaths).collect()
        };
        let m = &mut self.joiners[v];
        if let Some(node) = m.node.take() {
            node.stop().await;
        }
        // Its view ended with it: what its observer still had queued is not news.
        for t in m.tasks.drain(..) {
            t.abort();
        }
        self.shared
            .update(|s| s.views[v] = vec![View::default(); s.views.len()]);
        let r = self
            .shared
            .wait_each(
                Instant::now() + PHASE_LIMIT,
                &self.others(),
                |s, i| s.declared_dead(i, v, base[i]),
                "still listed alive",
                |_, i| format!("node{v} by node{i}"),
            )
            .await;
        self.record(
            "membership_dead_detected",
            format!("every other node declared node{v} dead"),
            r,
        )
    }

    /// Phase 11: The victim's membership node starts again, on the same address with the
    /// same identity: it must list every other member, and they it, with its new
    /// incarnation.
    async fn membership_takes_victim_back(&mut self) -> Phase {
        let (v, n) = (self.victim, self.n());
        self.shared.say(format!(
            "== 11. restarting node{v}'s membership node: it joins again, a new incarnation"
        ));
        // The victim's own view was emptied when it stopped (phase 10).
        let old: Vec<u64> = {
            let s = self.shared.seen();
            (0..n).map(|i| s.views[i][v].inc).collect()
        };
        self.joiners[v].restarted = true;
        // Every pair again, not only the victim's: the table's members column is the whole
        // view at the end.
        let items = self.both_ways();
        let r = match self.start_joiner(v).await {
            Ok(()) => {
                self.shared
                    .wait_each(
                        Instant::now() + PHASE_LIMIT,
                        &items,
                        |s, (i, j)| s.lists_alive(i, j, (j == v).then(|| old[i])),
                        "not (yet) listed alive",
                        |_, (i, j)| format!("node{j} by node{i}"),
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        self.record(
            "membership_rejoined",
            format!(
                "node{v} is back: every other node lists its new incarnation alive, and every \
                 node lists every other"
            ),
            r,
        )
    }

    /// Phase 1: Every node starts with its MSP identity and mutual TLS.
    async fn start_nodes(&mut self) -> Phase {
        let n = self.n();
        self.shared.say(format!("== 1. starting {n} nodes"));
        let mut started = Ok(());
        for i in 0..n {
            if let Err(e) = self.start(i).await {
                started = Err(e);
                break;
            }
            let mb = &self.members[i];
            self.shared.detail(format!(
                "node{i}: {} of {} listening on {} (mutual TLS), PKI-ID {}...",
                self.orgs[mb.org].peers[mb.peer].host,
                mb.msp_id,
                mb.addr,
                short(&mb.pki)
            ));
        }
        self.record(
            "started",
            format!("{n} nodes started with MSP identities of Org1MSP and Org2MSP and mutual TLS"),
            started,
        )
    }

    /// Phase 2: Each node greets the nodes started after it, so each pair connects once, from
    /// one side (both sides sending first would make crossing dials, which the core
    /// resolves but which would double the output). One node greets at a time: with many
    /// nodes on a busy machine, all handshakes at once could exceed Fabric's 2 s
    /// connection timeout.
    async fn handshakes(&mut self) -> Phase {
        let n = self.n();
        self.shared.say(
            "== 2. handshakes: each node sends a first message to the nodes after it, which \
             connects them (dial, TLS, Ping, signed ConnEstablish both ways)",
        );
        let t = Instant::now();
        let r = self.greet_in_turn().await;
        if r.is_ok() {
            self.shared.say(format!(
                "{} connections in {:.0} ms",
                n * (n - 1) / 2,
                t.elapsed().as_secs_f64() * 1e3
            ));
        }
        // Wait for both sides' connection events too: they carry the MSP ID each side
        // authenticated, which the last check looks at.
        let both_ways = pairs(&all_to_all(&self.all()));
        let r = match r {
            Ok(()) => {
                self.shared
                    .wait_each(
                        Instant::now() + PHASE_LIMIT,
                        &both_ways,
                        |s, (i, j)| s.connected[i][j] >= 1,
                        "no connection event from",
                        |_, (i, j)| format!("node{i} to node{j}"),
                    )
                    .await
            }
            Err(e) => Err(e),
        }
        .and_then(|()| connected_all(self.members, &self.all()));
        self.record(
            "connected",
            format!(
                "all {} pairs connected, each side authenticated by MSP identity and TLS \
                 certificate",
                n * (n - 1) / 2
            ),
            r,
        )
    }

    async fn greet_in_turn(&self) -> Result<(), String> {
        let n = self.n();
        for i in 0..n - 1 {
            let wave: Plan = vec![(i, (i + 1..n).collect())];
            let deadline = Instant::now() + PHASE_LIMIT;
            send_round(self.members, 0, &wave, None, 1, deadline).await?;
            wait_delivered(self.shared, 0, &wave, 1, deadline).await?;
        }
        Ok(())
    }

    /// Phases 3 and 8: Every node sends `m` messages to every other node, as round `round`.
    async fn all_to_all(&mut self, phase: usize, round: usize, who: &str) -> Phase {
        let (m, n) = (self.m, self.n());
        let who = who.replace("{victim}", &self.victim.to_string());
        let again = if round > 1 { " again" } else { "" };
        self.shared.say(format!(
            "== {phase}. all-to-all{again}{who}: every node sends {m} messages to every other \
             node"
        ));
        let r = exchange(
            self.members,
            self.shared,
            round,
            &all_to_all(&self.all()),
            None,
            m,
        )
        .await;
        let flow = if round > 1 {
            "messages flow again: "
        } else {
            ""
        };
        let others = n - 1;
        let what = format!(
            "{flow}every node received exactly {m} messages from each of the other {others}"
        );
        self.record(
            if round > 1 {
                "messages_flow_again"
            } else {
                "messages_exchanged"
            },
            what,
            r,
        )
    }

    /// Phase 4: The victim stops; every other node must see its connection close.
    async fn stop_victim(&mut self) -> Phase {
        let v = self.victim;
        self.shared.say(format!(
            "== 4. stopping node{v} ({})",
            self.members[v].msp_id
        ));
        let base: Vec<u32> = {
            let s = self.shared.seen();
            (0..self.n()).map(|i| s.disconnected[i][v]).collect()
        };
        if let Some(node) = self.members[v].node.take() {
            self.members[v].past.push(node.stats());
            node.stop().await;
        }
        let r = self
            .shared
            .wait_each(
                Instant::now() + PHASE_LIMIT,
                &self.others(),
                |s, i| s.disconnected[i][v] > base[i],
                "still connected",
                |_, i| format!("node{i}"),
            )
            .await;
        self.record(
            "connections_closed",
            format!("every other node saw its connection to node{v} close"),
            r,
        )
    }

    /// Phase 5: The others exchange messages and send to the victim too: they must presume it
    /// dead and keep delivering to each other.
    async fn send_while_victim_is_down(&mut self) -> Phase {
        let (v, m, others) = (self.victim, self.m, self.others());
        self.shared.say(format!(
            "== 5. the others send {m} messages to each other and to node{v}, which is down"
        ));
        let plan = all_to_all(&others);
        let deadline = Instant::now() + PHASE_LIMIT;
        let r = match send_round(self.members, 2, &plan, Some(v), m, deadline).await {
            Ok(()) => {
                self.shared
                    .wait_each(
                        deadline,
                        &others,
                        |s, i| s.presumed_dead[i][v] >= 1,
                        "no PresumedDead from",
                        |_, i| format!("node{i}"),
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        self.record(
            "presumed_dead",
            format!("every other node reported node{v} presumed dead after sending to it"),
            r,
        )?;
        let r = wait_delivered(self.shared, 2, &plan, m, Instant::now() + PHASE_LIMIT)
            .await
            .map(|_| ());
        let others = self.n() - 1;
        self.record(
            "others_kept_exchanging",
            format!("the other {others} nodes kept exchanging messages meanwhile"),
            r,
        )
    }

    /// Phase 6: The victim starts again on the same address with the same identity.
    async fn restart_victim(&mut self) -> Phase {
        let v = self.victim;
        self.shared.say(format!(
            "== 6. restarting node{v} on {} with the same identity",
            self.members[v].addr
        ));
        self.members[v].restarted = true;
        let r = self.start(v).await;
        self.record(
            "restarted",
            format!("node{v} restarted on the same address and PKI-ID"),
            r,
        )
    }

    /// Phase 7: The others send to the victim again: each must reconnect to it.
    async fn reconnect_to_victim(&mut self) -> Phase {
        let (v, others) = (self.victim, self.others());
        self.shared
            .say(format!("== 7. the others send to node{v} again"));
        let base: Vec<u32> = {
            let s = self.shared.seen();
            (0..self.n()).map(|i| s.connected[i][v]).collect()
        };
        let back: Plan = others.iter().map(|i| (*i, vec![v])).collect();
        let r = match exchange(self.members, self.shared, 3, &back, None, 1).await {
            // The connection events are counted by the observers, which may lag the delivery.
            Ok(()) => {
                self.shared
                    .wait_each(
                        Instant::now() + PHASE_LIMIT,
                        &others,
                        |s, i| s.connected[i][v] > base[i],
                        &format!("no new connection to node{v} from"),
                        |_, i| format!("node{i}"),
                    )
                    .await
            }
            Err(e) => Err(e),
        }
        .and_then(|()| connected_all(self.members, &self.all()));
        self.record(
            "reconnected",
            format!("every other node reconnected to node{v}"),
            r,
        )
    }

    /// Last: Nothing unexpected arrived, every peer had the expected MSP ID, and every
    /// member listed was a demo peer of its own organization.
    fn nothing_unexpected(&mut self) -> Phase {
        let lost: u64 = self
            .joiners
            .iter()
            .filter_map(|m| m.node.as_ref())
            .map(|n| n.driver_stats().layer_events_dropped)
            .sum();
        let r = self.shared.seen().verdict(lost);
        self.record(
            "integrity",
            "no message corrupted, misattributed or unexpected; every peer had the expected \
             MSP ID; every member listed was a demo peer of its own organization"
                .into(),
            r,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Shared` for `n` members with made-up PKI-IDs, muted so that nothing is printed.
    fn shared(n: usize) -> Shared {
        let grid = || vec![vec![0u32; n]; n];
        Shared {
            seen: Mutex::new(Seen {
                received: (0..2).map(|_| grid()).collect(),
                connected: grid(),
                disconnected: grid(),
                presumed_dead: grid(),
                ..Seen::default()
            }),
            changed: Notify::new(),
            started: Instant::now(),
            quiet: false,
            muted: AtomicBool::new(true),
            stdout: Mutex::new(None),
            gone: Notify::new(),
            names: (0..n).map(|i| format!("node{i}")).collect(),
            msp_ids: (0..n).map(|_| "Org1MSP".to_string()).collect(),
            by_pki: (0..n).map(|i| (pki(i), i)).collect(),
        }
    }

    fn pki(i: usize) -> PkiId {
        PkiId::from(vec![
            0xa0,
            0xb1,
            0xc2,
            0xd3,
            0xe4,
            0xf5,
            0x06,
            u8::try_from(i).unwrap(),
        ])
    }

    fn stats(base: u64) -> Stats {
        let mut s = Stats::default();
        s.sent = base;
        s.received = base + 1;
        s.dropped_overflow = base + 2;
        s.dropped_on_close = base + 3;
        s.dropped_no_connection = base + 4;
        s.dropped_subscription_overflow = base + 5;
        s.presumed_dead = base + 6;
        s.handshakes_ok = base + 7;
        s
    }

    fn member(restarted: bool, past: Vec<Stats>) -> Member {
        Member {
            org: 1,
            peer: 0,
            msp_id: "Org2MSP".into(),
            pki: pki(0),
            addr: SocketAddr::from(([127, 0, 0, 1], 7051)),
            tls: TlsConfig::new("", "", ""),
            node: None,
            tasks: Vec::new(),
            past,
            restarted,
        }
    }

    #[test]
    fn problems_are_all_counted_and_the_first_eight_kept() {
        let mut s = Seen::default();
        for k in 0..11 {
            s.problem(format!("p{k}"));
        }
        assert_eq!(s.problems, 11);
        let kept: Vec<String> = (0..PROBLEMS_KEPT).map(|k| format!("p{k}")).collect();
        assert_eq!(s.first_problems, kept);
    }

    #[test]
    fn a_member_s_message_counts_only_when_it_is_what_that_member_sent() {
        let sh = shared(3);
        let mut s = sh.seen();
        // Round 1, message 4, node2 -> node0: counted.
        let (round, i, data) = carried(ROUND_BASE + 4, payload(1, 2, 0, 4).as_bytes());
        assert_eq!((round, i), (1, 4));
        s.judge(0, Some(2), Some((round, i, data)), || "nobody".into());
        assert_eq!(s.received[1][0][2], 1);
        assert_eq!(s.problems, 0);
        // The same payload said to come from node1, or with another index: problems.
        s.judge(
            0,
            Some(1),
            Some(carried(ROUND_BASE + 4, payload(1, 2, 0, 4).as_bytes())),
            || "nobody".into(),
        );
        s.judge(
            0,
            Some(2),
            Some(carried(ROUND_BASE + 5, payload(1, 2, 0, 4).as_bytes())),
            || "nobody".into(),
        );
        assert_eq!(s.problems, 2);
        assert_eq!(
            s.first_problems[0],
            "node0 got an unexpected message from node1"
        );
        assert_eq!(
            s.first_problems[1],
            "node0 got an unexpected message from node2"
        );
        assert_eq!(s.received[1][0], vec![0, 0, 1]);
    }

    #[test]
    fn a_stranger_a_message_without_data_or_a_round_the_demo_lacks_are_problems() {
        let sh = shared(3);
        let mut s = sh.seen();
        s.judge(
            1,
            None,
            Some(carried(4, payload(0, 2, 1, 4).as_bytes())),
            || "unknown peer 0a0b".into(),
        );
        s.judge(1, Some(0), None, || "nobody".into());
        // Two rounds are kept: round 2 (the first past them) and a huge one are refused,
        // not counted out of bounds.
        s.judge(
            1,
            Some(0),
            Some(carried(2 * ROUND_BASE + 1, payload(2, 0, 1, 1).as_bytes())),
            || "nobody".into(),
        );
        s.judge(1, Some(0), Some(carried(u64::MAX, b"")), || "nobody".into());
        assert_eq!(s.problems, 4);
        assert_eq!(
            s.first_problems[0],
            "node1 got an unexpected message from unknown peer 0a0b"
        );
        assert!(s.received.iter().flatten().flatten().all(|c| *c == 0));
    }

    #[test]
    fn payloads_name_the_round_the_pair_and_the_index() {
        assert_eq!(payload(3, 1, 4, 7), "round 3: node1 -> node4, message 7");
        assert_eq!(carried(3 * ROUND_BASE + 7, b"x"), (3, 7, b"x".to_vec()));
    }

    #[test]
    fn all_to_all_pairs_every_member_with_every_other() {
        let plan = all_to_all(&[0, 2, 3]);
        assert_eq!(
            plan,
            vec![(0, vec![2, 3]), (2, vec![0, 3]), (3, vec![0, 2])]
        );
        assert_eq!(
            pairs(&plan),
            vec![(0, 2), (0, 3), (2, 0), (2, 3), (3, 0), (3, 2)]
        );
    }

    #[test]
    fn members_are_named_and_strangers_shown_by_pki_id() {
        let sh = shared(3);
        assert_eq!(sh.name(&pki(2)), "node2");
        let stranger = PkiId::from(vec![0xab, 0xcd]);
        assert_eq!(sh.name(&stranger), format!("unknown peer {stranger}"));
        assert_eq!(short(&pki(1)), "a0b1c2d3e4f5");
        assert_eq!(short(&stranger), "abcd");
    }

    #[test]
    fn a_failed_check_is_recorded_and_stops_the_phases() {
        let sh = shared(2);
        let mut checks = Checks::default();
        assert_eq!(checks.record(&sh, "a", "first".into(), Ok(())), Ok(()));
        assert_eq!(
            checks.record(&sh, "b", "second".into(), Err("why".into())),
            Err(())
        );
        assert_eq!(
            checks.0,
            vec![
                ("a", "first".to_string(), Ok(())),
                ("b", "second".to_string(), Err("why".to_string()))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_gives_up_at_its_deadline_naming_the_first_six_missing() {
        let sh = shared(2);
        let t = Instant::now();
        let items: Vec<usize> = (0..10).collect();
        let r = sh
            .wait_each(
                t + Duration::from_secs(3),
                &items,
                |_, x| x == 2,
                "missing",
                |_, x| format!("m{x}"),
            )
            .await;
        assert_eq!(r, Err("missing: m0, m1, m3, m4, m5, m6".to_string()));
        assert_eq!(t.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_with_the_update_that_completes_it() {
        let sh = Arc::new(shared(2));
        let t = Instant::now();
        let other = sh.clone();
        let task = tokio::spawn(async move {
            for k in 1..=2 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                other.update(|s| s.connected[0][k - 1] = 1);
            }
        });
        let r = sh
            .wait_each(
                t + Duration::from_secs(10),
                &[0, 1],
                |s, j| s.connected[0][j] == 1,
                "not connected",
                |_, j| format!("node{j}"),
            )
            .await;
        assert_eq!(r, Ok(()));
        assert_eq!(t.elapsed(), Duration::from_secs(2));
        task.await.expect("updater");
    }

    #[tokio::test(start_paused = true)]
    async fn delivery_is_counted_and_a_message_too_many_is_an_error() {
        let sh = shared(3);
        let plan = all_to_all(&[0, 1, 2]);
        let deadline = Instant::now() + Duration::from_secs(1);
        sh.update(|s| s.received[1] = vec![vec![2; 3]; 3]);
        assert_eq!(wait_delivered(&sh, 1, &plan, 2, deadline).await, Ok(12));
        sh.update(|s| s.received[1][2][0] = 3);
        assert_eq!(
            wait_delivered(&sh, 1, &plan, 2, deadline).await,
            Err("node2 received 3 messages of this round from node0, 2 were sent".into())
        );
        sh.update(|s| s.received[1][1][2] = 1);
        assert_eq!(
            wait_delivered(&sh, 1, &plan, 2, deadline).await,
            Err("not all delivered: node1 has 1/2 from node2".into())
        );
    }

    #[test]
    fn the_first_organization_gets_the_extra_node() {
        for (n, org1) in [(3, 2), (4, 2), (5, 3)] {
            let (orgs, _, tls_cas) = make_orgs(n).expect("orgs");
            let sizes: Vec<(&str, usize)> = orgs
                .iter()
                .map(|o| (o.spec.msp_id.as_str(), o.peers.len()))
                .collect();
            assert_eq!(sizes, vec![("Org1MSP", org1), ("Org2MSP", n - org1)]);
            let cas = String::from_utf8(tls_cas).expect("pem");
            assert_eq!(cas.matches("BEGIN CERTIFICATE").count(), 2);
        }
    }

    #[test]
    fn a_row_sums_every_incarnation_s_counters() {
        let m = member(true, vec![stats(0), stats(100)]);
        let r = row_json(3, &m, Some(4));
        assert_eq!(
            r,
            json!({
                "node": "node3",
                "org": "Org2MSP",
                "address": "127.0.0.1:7051",
                "restarted": true,
                "connections": 0,
                "sent": 100,
                "received": 102,
                "dropped": 2 + 3 + 4 + 5 + 102 + 103 + 104 + 105,
                "presumed_dead": 112,
                "handshakes_ok": 114,
                "handshakes_failed": 0,
                "members_alive": 4,
            })
        );
    }

    #[test]
    fn the_table_marks_a_restarted_node_and_aligns_its_columns() {
        let t = table(
            &[member(false, vec![stats(0)]), member(true, vec![stats(10)])],
            &[Some(4), None],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0].starts_with("node    org      address          conns"),
            "{t}"
        );
        assert!(
            lines[0].ends_with("presumed-dead handshakes ok/bad members"),
            "{t}"
        );
        assert_eq!(
            lines[1],
            "node0   Org2MSP  127.0.0.1:7051       0      0      1      14             6               7/0       4"
        );
        assert_eq!(
            lines[2],
            "node1*  Org2MSP  127.0.0.1:7051       0     10     11      54            16              17/0       -"
        );
    }

    /// A member of a fresh 3-node demo, its node started on a port the OS chose, and
    /// stopped: what a restart begins with.
    async fn stopped_member() -> (Vec<DevOrg>, TrustStore, Member, Arc<Shared>) {
        let (orgs, trust, tls_cas) = make_orgs(3).expect("orgs");
        let mut members = members(&orgs, &trust, &tls_cas).expect("members");
        let mut m = members.remove(0);
        let shared = Arc::new(shared(3));
        let deadline = Instant::now() + PHASE_LIMIT;
        start_member(&mut m, 0, &orgs[0], &trust, &shared, deadline, Role::Comm)
            .await
            .expect("first start");
        assert_ne!(m.addr.port(), 0);
        m.node.take().expect("node").stop().await;
        (orgs, trust, m, shared)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_retries_its_taken_address_until_the_deadline_then_says_why() {
        let (orgs, trust, mut m, shared) = stopped_member().await;
        // Something else holds the address now, until the end of the test.
        let _holder = std::net::TcpListener::bind(m.addr).expect("take the address");
        let t = Instant::now();
        let limit = Duration::from_millis(300);
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            start_member(&mut m, 0, &orgs[0], &trust, &shared, t + limit, Role::Comm),
        )
        .await
        .expect("gave up at its deadline");
        let e = r.expect_err("the address is taken");
        // It retried (the error of an earlier attempt is kept) until the deadline.
        assert!(e.starts_with("node0: "), "{e}");
        let before = e.split_once("(again; before: ").map(|(_, b)| b);
        assert!(before.is_some_and(|b| b.len() > 1), "{e}");
        assert!(t.elapsed() >= limit, "{e}");
        assert!(m.node.is_none());
    }

    /// A [`stopped_member`] started again, and the address it had before.
    async fn restarted_member() -> (Member, SocketAddr) {
        let (orgs, trust, mut m, shared) = stopped_member().await;
        let addr = m.addr;
        start_member(
            &mut m,
            0,
            &orgs[0],
            &trust,
            &shared,
            Instant::now(),
            Role::Comm,
        )
        .await
        .expect("restart");
        (m, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_gets_its_address_back_once_it_is_free() {
        let (mut m, addr) = restarted_member().await;
        assert_eq!(m.addr, addr);
        assert_eq!(m.node.as_ref().map(Node::local_addr), Some(addr));
        m.node.take().expect("node").stop().await;
    }

    /// The end of a run stops every node and ends every observer, whatever else fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_end_stops_every_node_and_its_observers() {
        let (mut m, _) = restarted_member().await;
        let node = m.node.clone().expect("node");
        assert!(!node.is_stopped() && !m.tasks.is_empty());
        let mut idle = m.fresh();
        stop_all([&mut m, &mut idle].into_iter()).await;
        assert!(node.is_stopped());
        assert!(m.node.is_none() && m.tasks.is_empty());
    }

    /// A membership event about a member of Org1MSP, whose MSP ID is `org`.
    fn member_info(org: Option<&str>, inc: u64) -> fabric_gossip_discovery::MemberInfo {
        fabric_gossip_discovery::MemberInfo {
            pki_id: pki(1),
            endpoint: "127.0.0.1:7051".into(),
            internal_endpoint: "127.0.0.1:7051".into(),
            org: org.map(str::to_string),
            timestamp: fabric_gossip_discovery::Timestamp { inc, seq: 1 },
            last_seen: fabric_gossip_core::Instant::from_unix_secs(1),
            alive: true,
            identity_expires: None,
        }
    }

    /// The membership phases wait on the views: alive with the latest incarnation, dead
    /// with a count of deaths; a purge is no death; a member listed under another
    /// organization than its own is a problem, one whose organization is not known is not.
    #[test]
    fn a_membership_node_s_view_follows_its_layer_s_events() {
        use fabric_gossip_discovery::{DeadReason, PurgeReason};
        let mut s = Seen {
            views: vec![vec![View::default(); 2]; 2],
            ..Seen::default()
        };
        let alive = |inc| DiscoveryEvent::MemberAlive {
            member: member_info(Some("Org1MSP"), inc),
            resurrected: false,
        };
        let dead = DiscoveryEvent::MemberDead {
            member: member_info(Some("Org1MSP"), 7),
            reason: DeadReason::Expired,
        };
        let purged = DiscoveryEvent::MemberPurged {
            member: member_info(Some("Org1MSP"), 9),
            reason: PurgeReason::LongDead,
        };
        // Nothing but members' news changes a view.
        let joined = DiscoveryEvent::BootstrapJoined {
            endpoint: "127.0.0.1:7051".into(),
            pki_id: pki(1),
        };
        // (event, then alive, incarnation, deaths)
        let steps = [
            (alive(7), true, 7, 0),
            (dead, false, 7, 1),
            (alive(9), true, 9, 1),
            (purged, false, 9, 1),
            (joined, false, 9, 1),
        ];
        for (ev, alive, inc, deaths) in steps {
            s.follow(0, 1, "Org1MSP", &ev);
            let v = s.views[0][1];
            assert!(
                v.alive == alive && v.inc == inc && v.deaths == deaths,
                "{v:?} after {ev:?}"
            );
        }
        assert_eq!(s.problems, 0);
        let unknown_org = DiscoveryEvent::MemberAlive {
            member: member_info(None, 3),
            resurrected: false,
        };
        s.follow(1, 0, "Org1MSP", &unknown_org);
        assert!(s.views[1][0].alive);
        assert_eq!(s.problems, 0);
        s.follow(1, 0, "Org2MSP", &alive(4));
        assert_eq!(s.problems, 1);
        assert_eq!(
            s.first_problems,
            vec!["node1 listed node0 as a member of \"Org1MSP\"".to_string()]
        );
    }

    /// The last check fails on a problem, or on a membership event dropped; phase 9 waits
    /// for each node but node0 to have joined.
    #[test]
    fn the_last_check_fails_on_a_problem_or_a_dropped_membership_event() {
        let mut s = Seen {
            joined: vec![0, 1],
            ..Seen::default()
        };
        assert_eq!(s.verdict(0), Ok(()));
        assert_eq!(
            s.verdict(2),
            Err("2 membership events dropped before the demo read them".into())
        );
        s.problem("node1 listed a stranger".into());
        s.problem("node2 listed a stranger".into());
        assert_eq!(
            s.verdict(0),
            Err("2 problems, the first: node1 listed a stranger".into())
        );
        assert!(!s.has_joined(0) && s.has_joined(1) && !s.has_joined(2));
    }

    /// Phase 10 waits until each other node has declared the victim dead once more than
    /// before it stopped, and lists it dead; phase 11 until each lists it alive with a newer
    /// incarnation than before.
    #[test]
    fn the_membership_phases_wait_for_a_new_death_and_a_newer_incarnation() {
        let mut s = Seen {
            views: vec![vec![View::default(); 2]; 2],
            ..Seen::default()
        };
        s.views[0][1] = View {
            alive: false,
            inc: 7,
            deaths: 1,
        };
        assert!(!s.declared_dead(0, 1, 1), "no death since");
        assert!(s.declared_dead(0, 1, 0));
        s.views[0][1].alive = true;
        assert!(!s.declared_dead(0, 1, 0), "alive again");
        assert!(s.lists_alive(0, 1, None));
        assert!(s.lists_alive(0, 1, Some(6)));
        assert!(!s.lists_alive(0, 1, Some(7)), "the same incarnation");
        s.views[0][1].alive = false;
        assert!(!s.lists_alive(0, 1, None));
        assert!(!s.lists_alive(0, 1, Some(6)));
    }

    /// Two membership nodes of one organization, the second joining through the first, as
    /// phase 9 starts them: each lists the other alive; the second stops and the first
    /// declares it dead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn membership_nodes_find_each_other_and_declare_a_stopped_one_dead() {
        let (orgs, trust, tls_cas) = make_orgs(4).expect("orgs");
        let mut joiners: Vec<Member> = members(&orgs, &trust, &tls_cas)
            .expect("members")
            .iter()
            .map(Member::fresh)
            .take(2)
            .collect();
        let mut shared = shared(2);
        shared.by_pki = joiners
            .iter()
            .enumerate()
            .map(|(i, m)| (m.pki.clone(), i))
            .collect();
        shared.seen().views = vec![vec![View::default(); 2]; 2];
        shared.seen().joined = vec![0; 2];
        let shared = Arc::new(shared);
        let deadline = Instant::now() + PHASE_LIMIT;
        for i in 0..2 {
            let bootstrap = (i == 1).then(|| joiners[0].addr);
            start_member(
                &mut joiners[i],
                i,
                &orgs[0],
                &trust,
                &shared,
                deadline,
                Role::Member { bootstrap },
            )
            .await
            .expect("start");
        }
        let both = [(0, 1), (1, 0)];
        let listed = |s: &Seen, (i, j): (usize, usize)| s.views[i][j].alive;
        let unlisted = |_: &Seen, (i, j)| format!("node{j} by node{i}");
        shared
            .wait_each(deadline, &both, listed, "not listed", unlisted)
            .await
            .expect("each lists the other");
        // The second joined through the first; the first joined nobody.
        let joined = |s: &Seen, i: usize| s.joined == [0, 1] && i == 1;
        shared
            .wait_each(deadline, &[1], joined, "not joined", |_, i| {
                format!("node{i}")
            })
            .await
            .expect("joined");
        let before = shared.seen().views[0][1].deaths;
        joiners[1].node.take().expect("node").stop().await;
        let dead = |s: &Seen, i: usize| s.declared_dead(i, 1, before);
        shared
            .wait_each(deadline, &[0], dead, "alive", |_, i| format!("node{i}"))
            .await
            .expect("declared dead");
        assert_eq!(shared.seen().problems, 0);
        for m in &mut joiners {
            if let Some(node) = m.node.take() {
                node.stop().await;
            }
        }
    }

    #[test]
    fn a_failure_is_printed_once_as_text_or_as_json() {
        let check = Err(Failure::Check("the reason".into()));
        assert_eq!(
            failure_text(false, 30, Some(&check)).as_deref(),
            Some("\nDEMO FAILED: the reason\n")
        );
        // demo() printed the JSON object, reason included.
        assert_eq!(failure_text(true, 30, Some(&check)), None);
        assert_eq!(
            failure_text(false, 30, None).as_deref(),
            Some("\nDEMO FAILED: not finished within --deadline 30s\n")
        );
        let late: Value =
            serde_json::from_str(&failure_text(true, 7, None).expect("json")).expect("one object");
        assert_eq!(
            late,
            json!({"result": "failed", "ok": false, "reason": "not finished within --deadline 7s"})
        );
        let gone = Err(Failure::Write(WriteError::new(
            "result",
            std::io::ErrorKind::BrokenPipe.into(),
        )));
        for json in [false, true] {
            assert_eq!(failure_text(json, 30, Some(&Ok(()))), None);
            assert_eq!(failure_text(json, 30, Some(&gone)), None);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connected_all_names_a_missing_connection_or_a_node_not_running() {
        let (orgs, trust, tls_cas) = make_orgs(3).expect("orgs");
        let mut members = members(&orgs, &trust, &tls_cas).expect("members");
        let shared = Arc::new(shared(3));
        for (i, m) in members.iter_mut().enumerate().take(2) {
            let deadline = Instant::now() + PHASE_LIMIT;
            start_member(m, i, &orgs[m.org], &trust, &shared, deadline, Role::Comm)
                .await
                .expect("start");
        }
        // Started, never introduced to each other.
        assert_eq!(connected_all(&members, &[0]), Ok(()));
        assert_eq!(
            connected_all(&members, &[0, 1]),
            Err("node0 holds no connection to node1".into())
        );
        assert_eq!(
            connected_all(&members, &[2, 0]),
            Err("node2 is not running".into())
        );
        for m in &mut members {
            if let Some(node) = m.node.take() {
                node.stop().await;
            }
        }
    }
}
