//! [`Harness`] on the real network: `fabric-gossip-tonic` nodes talking gRPC over loopback,
//! in plaintext or with mutual TLS.
//!
//! The harness owns a tokio runtime and blocks on it. Background tasks record what the
//! nodes' applications observe (deliveries from every subscription, a copy of every core
//! event, operation results, raw streams) and wake [`Harness::run_until`], which waits with
//! a real deadline.
//!
//! A member ([`Harness::add_member`]) hosts Fabric's membership layer through
//! `NodeBuilder::layer`, a new one at every start of its process (a restart is a new
//! incarnation, as for a Fabric peer); its getters read the layer under the node's lock
//! (`Node::with_layer`), and its events are taken from `Node::layer_events` whenever the
//! scenario looks or waits.

use crate::{
    Delivery, DiscoveryEvent, DiscoveryStats, Envelope, Harness, MemberInfo, MemberSpec, NodeId,
    NodeSpec, OpOutcome, OpRef, OpRequest, RawRef, SubRef, TlsMode,
};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::GOSSIP_STREAM_PATH;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{
    Acceptor, CertHash, Error, Event, PkiId, RemotePeer, SignedMessage, Stats, StreamEnd,
    TlsHashes, cert_hash,
};
use fabric_gossip_discovery::Discovery;
use fabric_gossip_sim::{Fault, ReaderMode};
use fabric_gossip_tonic::{Incoming, LayerEvents, Node, OpError, RawCodec, Received, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;
use tokio::sync::{Notify, mpsc};

/// One tick of the coarse monotonic clock the driver gives the core, with room: 4 ms at
/// the common 250 Hz, 10 ms on kernels built for 100 Hz.
const COARSE_CLOCK_SLACK: Duration = Duration::from_millis(10);

/// Bound on one blocking call into a node (stop, respond, ack, starting).
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// Event copies a node may have queued for the recorder before new ones are dropped.
const EVENT_TAP: usize = 1 << 16;
/// Envelopes a raw stream may have queued for sending.
const RAW_QUEUE: usize = 64;

/// What the nodes' applications observed, shared with the recording tasks.
#[derive(Default)]
struct Record {
    /// Per node: deliveries of every process, with the process's incarnation.
    deliveries: Vec<Vec<(Delivery, u32, Received)>>,
    /// Per node: core events of every process (DeliveryReady excepted).
    events: Vec<Vec<Event>>,
    /// Per node: the event taps of its processes, drained into `events` on every look.
    /// Drained synchronously, not by a task: a node sends to its tap in the same critical
    /// section in which its core changes, so whatever a scenario saw of the core (a
    /// connection gone) is already in the tap, and the events it reads agree with it.
    taps: Vec<Vec<mpsc::Receiver<Event>>>,
    /// Per operation: its outcome once known.
    ops: Vec<Option<OpOutcome>>,
    /// Per raw stream: envelopes received and how it ended.
    raws: Vec<(Vec<Bytes>, Option<StreamEnd>)>,
    /// Per node: membership events of every process (members only).
    member_events: Vec<Vec<DiscoveryEvent>>,
    /// Per node: the membership event streams of its processes still open, drained into
    /// `member_events` on every look (and while waiting, so their bounded queues never
    /// overflow). Drained synchronously for the same reason as `taps`: the node queues a
    /// layer event under the lock in which the layer's state changed, so the events read
    /// agree with the members read.
    member_taps: Vec<Vec<LayerEvents<DiscoveryEvent>>>,
}

impl Record {
    /// Moves what node `n`'s membership streams hold into `member_events`, without waiting.
    fn drain_members(&mut self, n: NodeId) {
        let (Some(taps), Some(events)) =
            (self.member_taps.get_mut(n), self.member_events.get_mut(n))
        else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        taps.retain_mut(|tap| {
            loop {
                match tap.as_mut().poll_next(&mut cx) {
                    Poll::Ready(Some(e)) => events.push(e),
                    // Ended with its process: never polled again.
                    Poll::Ready(None) => return false,
                    Poll::Pending => return true,
                }
            }
        });
    }
}

struct Slot {
    opts: NodeSpec,
    node: Node,
    endpoint: String,
    generation: u32,
    incarnation: u32,
    subscriptions: usize,
    tls: bool,
    /// For a member: its spec and the endpoints it bootstraps from (a restart hosts a new
    /// membership layer, as a new process of a Fabric peer would).
    member: Option<(MemberSpec, Vec<String>)>,
}

/// The scenario harness on real gRPC over 127.0.0.1.
pub struct TonicHarness {
    rt: tokio::runtime::Runtime,
    mutual_tls: bool,
    ca: CertifiedIssuer<'static, KeyPair>,
    slots: Vec<Slot>,
    raws: Vec<mpsc::Sender<Bytes>>,
    record: Arc<Mutex<Record>>,
    changed: Arc<Notify>,
    started: Instant,
}

impl core::fmt::Debug for TonicHarness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TonicHarness")
            .field("mutual_tls", &self.mutual_tls)
            .field("nodes", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl TonicHarness {
    /// Nodes in plaintext unless a scenario asks for TLS.
    pub fn plaintext() -> Self {
        Self::new(false)
    }

    /// Every node with mutual TLS: scenarios that ask for plaintext get TLS too, so the
    /// whole suite runs over TLS. Raw streams are plaintext only, so scenarios that need
    /// them are skipped.
    pub fn mutual_tls() -> Self {
        Self::new(true)
    }

    fn new(mutual_tls: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scenario CA");
        let key = KeyPair::generate().expect("a CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        TonicHarness {
            rt,
            mutual_tls,
            ca,
            slots: Vec::new(),
            raws: Vec::new(),
            record: Arc::new(Mutex::new(Record::default())),
            changed: Arc::new(Notify::new()),
            started: Instant::now(),
        }
    }

    /// How many nodes were added.
    pub fn node_count(&self) -> usize {
        self.slots.len()
    }

    /// Every node's state, counters and latest events, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (n, s) in self.slots.iter().enumerate() {
            let events = self.events(n);
            out.push_str(&format!(
                "node {n} {} (incarnation {}, stopped {}): connections {:?}\n  {:?}\n  {:?}\n",
                s.endpoint,
                s.incarnation,
                s.node.is_stopped(),
                s.node.connections(),
                s.node.stats(),
                s.node.driver_stats(),
            ));
            for e in &events[events.len().saturating_sub(15)..] {
                out.push_str(&format!("  {e:?}\n"));
            }
        }
        out
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A leaf certificate for 127.0.0.1 / localhost: (certificate PEM, key PEM, DER).
    fn leaf(&self) -> Result<(String, String, Vec<u8>), String> {
        let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| e.to_string())?;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&key, &self.ca)
            .map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
    }

    fn effective_tls(&self, opts: &NodeSpec) -> TlsMode {
        match opts.tls {
            TlsMode::Off if self.mutual_tls => TlsMode::Mutual,
            t => t,
        }
    }

    /// Starts a process of node `n`: binds `listen`, wires the event recorder and, for a
    /// member, hosts a new membership layer (`incarnation` goes into its seed).
    fn start(
        &mut self,
        n: NodeId,
        opts: &NodeSpec,
        listen: std::net::SocketAddr,
        generation: u32,
        member: Option<&(MemberSpec, Vec<String>)>,
        incarnation: u32,
    ) -> Result<(Node, bool), String> {
        let tls_mode = self.effective_tls(opts);
        let (tx, rx) = mpsc::channel(EVENT_TAP);
        let mut tls = None;
        let mut claimed = None;
        if tls_mode != TlsMode::Off {
            let (cert, key, _) = self.leaf()?;
            let mut t = TlsConfig::new(cert, key, self.ca.pem());
            if tls_mode == TlsMode::MutualNoClientCert {
                t = t.without_client_identity();
            }
            tls = Some(t);
            if tls_mode == TlsMode::MutualWrongClaim {
                let (_, _, other) = self.leaf()?;
                let h = cert_hash(&other);
                claimed = Some(TlsHashes {
                    client_cert_hash: h,
                    server_cert_hash: h,
                });
            }
        }
        let builder = || {
            let mut b = Node::builder(opts.config.clone())
                .listen(listen)
                .events(tx.clone())
                .hang_ping(opts.hang_ping)
                .stop_timeout(Duration::from_secs(3));
            if let Some(t) = &tls {
                b = b.tls(t.clone());
            }
            if let Some(h) = &claimed {
                b = b.claim_tls_hashes(h.clone());
            }
            if let Some((spec, boot)) = member {
                let (spec, boot) = (spec.clone(), boot.clone());
                let seed = ((n as u64) << 32) | u64::from(incarnation);
                b = b.layer(move |addr: std::net::SocketAddr| {
                    let cfg = spec
                        .discovery_config(&addr.to_string())
                        .with_bootstrap(boot)
                        .with_seed(seed);
                    Discovery::new(cfg).expect("validated by add_member")
                });
            }
            b
        };
        let spec = opts.clone();
        let node = self.rt.block_on(async {
            // The port of a stopped process may take a moment to be released.
            let deadline = tokio::time::Instant::now() + CALL_LIMIT;
            loop {
                let spec = spec.clone();
                let started = builder()
                    .start_with(move |addr| -> Box<dyn fabric_gossip_core::Security> {
                        spec.make_security(&addr.to_string(), generation)
                    })
                    .await;
                match started {
                    Ok(node) => return Ok(node),
                    Err(fabric_gossip_tonic::StartError::Bind { .. })
                        if tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        })?;
        drop(tx);
        let members = if member.is_some() {
            Some(
                node.layer_events::<DiscoveryEvent>()
                    .ok_or("the node hosts no membership layer")?,
            )
        } else {
            None
        };
        let mut r = self.record();
        r.taps[n].push(rx);
        r.member_taps[n].extend(members);
        drop(r);
        Ok((node, tls_mode != TlsMode::Off))
    }

    /// Records everything `incoming` yields as deliveries of node `n`.
    fn collect(&self, n: NodeId, sub: SubRef, incarnation: u32, mut incoming: Incoming) {
        let (record, changed) = (self.record.clone(), self.changed.clone());
        self.rt.spawn(async move {
            while let Some(m) = incoming.recv().await {
                let d = Delivery {
                    sub,
                    msg: m.as_received_message().clone(),
                };
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .deliveries[n]
                    .push((d, incarnation, m));
                changed.notify_waiters();
            }
        });
    }

    fn subscribe_in(&mut self, n: NodeId, acceptor: Acceptor) -> Result<SubRef, Error> {
        let slot = self.slots.get_mut(n).ok_or(Error::UnknownHandle)?;
        let incoming = slot.node.accept(acceptor)?;
        let sub = SubRef(slot.subscriptions);
        slot.subscriptions += 1;
        let incarnation = slot.incarnation;
        self.collect(n, sub, incarnation, incoming);
        Ok(sub)
    }

    /// Starts an operation whose refusal is known at once (its future returns `Err` on its
    /// first poll) and whose outcome comes later.
    fn op<F>(&mut self, fut: F) -> Result<OpRef, Error>
    where
        F: Future<Output = Result<OpOutcome, Error>> + Send + 'static,
    {
        let mut fut: Pin<Box<F>> = Box::pin(fut);
        let first = self.rt.block_on(async {
            std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
        });
        let id = {
            let mut r = self.record();
            r.ops.push(None);
            r.ops.len() - 1
        };
        match first {
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(o)) => self.record().ops[id] = Some(o),
            Poll::Pending => {
                let (record, changed) = (self.record.clone(), self.changed.clone());
                self.rt.spawn(async move {
                    let outcome = fut
                        .await
                        .unwrap_or_else(|_| OpOutcome::SendWithAck(Vec::new()));
                    record.lock().unwrap_or_else(PoisonError::into_inner).ops[id] = Some(outcome);
                    changed.notify_waiters();
                });
            }
        }
        Ok(OpRef(id as u64))
    }

    fn delivered(&self, n: NodeId, delivery: usize) -> Result<Received, Error> {
        let slot = self.slots.get(n).ok_or(Error::UnknownHandle)?;
        let r = self.record();
        let (_, inc, m) = r
            .deliveries
            .get(n)
            .and_then(|d| d.get(delivery))
            .ok_or(Error::UnknownHandle)?;
        if *inc != slot.incarnation {
            return Err(Error::ConnectionClosed);
        }
        Ok(m.clone())
    }

    /// Starts a node, a member when `member` is given.
    fn add(
        &mut self,
        opts: NodeSpec,
        member: Option<(MemberSpec, Vec<String>)>,
    ) -> Result<NodeId, String> {
        if opts.reader != ReaderMode::Eager || opts.silent || opts.bad_signature {
            return Err(format!(
                "{} cannot run a node with reader {:?}, silent {}, bad signature {}",
                self.name(),
                opts.reader,
                opts.silent,
                opts.bad_signature
            ));
        }
        let n = self.slots.len();
        {
            let mut r = self.record();
            r.deliveries.push(Vec::new());
            r.events.push(Vec::new());
            r.taps.push(Vec::new());
            r.member_events.push(Vec::new());
            r.member_taps.push(Vec::new());
        }
        let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let (node, tls) = self.start(n, &opts, listen, 0, member.as_ref(), 0)?;
        self.slots.push(Slot {
            endpoint: node.endpoint(),
            opts: opts.clone(),
            node,
            generation: 0,
            incarnation: 0,
            subscriptions: 0,
            tls,
            member,
        });
        if opts.subscribe_all {
            self.subscribe_in(n, Box::new(|_| true))
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    /// Runs `f` on node `n`'s membership layer; `None` for a node that is not a member or
    /// is stopped (a stopped process runs no application, as in the simulator).
    fn member_layer<R>(&self, n: NodeId, f: impl FnOnce(&Discovery) -> R) -> Option<R> {
        let s = self.slots.get(n)?;
        if s.node.is_stopped() {
            return None;
        }
        s.node.with_layer(f)
    }

    fn call<T>(&self, f: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.rt
            .block_on(async { tokio::time::timeout(CALL_LIMIT, f).await })
            .unwrap_or(Err(Error::WouldBlock))
    }
}

/// How a node's operation ended, as a harness records it: a refusal is the start's `Err`,
/// a failure on the network is an outcome of kind `kind`.
fn outcome<T, E>(
    r: Result<T, OpError<E>>,
    kind: fn(Result<T, E>) -> OpOutcome,
) -> Result<OpOutcome, Error> {
    match r {
        Ok(x) => Ok(kind(Ok(x))),
        Err(OpError::Failed(e)) => Ok(kind(Err(e))),
        Err(OpError::Refused(e)) => Err(e),
    }
}

impl Harness for TonicHarness {
    fn name(&self) -> String {
        if self.mutual_tls {
            "tonic(mutual TLS)".into()
        } else {
            "tonic(plaintext)".into()
        }
    }

    fn add_node(&mut self, opts: NodeSpec) -> Result<NodeId, String> {
        self.add(opts, None)
    }

    fn peer(&self, n: NodeId) -> RemotePeer {
        match self.slots.get(n) {
            Some(s) => RemotePeer::new(s.endpoint.clone(), s.node.pki_id().clone()),
            None => RemotePeer::new("", PkiId::default()),
        }
    }

    fn subscribe(&mut self, n: NodeId, acceptor: Acceptor) -> Result<SubRef, Error> {
        self.subscribe_in(n, acceptor)
    }

    fn send(&mut self, n: NodeId, msg: &SignedMessage, to: &[RemotePeer]) -> Result<(), Error> {
        let slot = self.slots.get(n).ok_or(Error::UnknownHandle)?;
        let _guard = self.rt.enter();
        slot.node.send(msg, to)
    }

    fn start_op(&mut self, n: NodeId, op: OpRequest) -> Result<OpRef, Error> {
        let node = self.slots.get(n).ok_or(Error::UnknownHandle)?.node.clone();
        self.op(async move {
            match op {
                OpRequest::Probe(to) => outcome(node.probe(&to).await, OpOutcome::Probe),
                OpRequest::Handshake(to) => {
                    outcome(node.handshake(&to).await, OpOutcome::Handshake)
                }
                OpRequest::SendWithAck {
                    msg,
                    timeout,
                    min_ack,
                    to,
                } => node
                    .send_with_ack(msg, timeout, min_ack, &to)
                    .await
                    .map(OpOutcome::SendWithAck),
            }
        })
    }

    fn respond(&mut self, n: NodeId, delivery: usize, msg: GossipMessage) -> Result<(), Error> {
        let m = self.delivered(n, delivery)?;
        self.call(m.respond(msg))
    }

    fn ack(&mut self, n: NodeId, delivery: usize, error: Option<&str>) -> Result<(), Error> {
        let m = self.delivered(n, delivery)?;
        self.call(m.ack(error))
    }

    fn close_conn(&mut self, n: NodeId, pki: &PkiId) {
        if let Some(s) = self.slots.get(n) {
            let _guard = self.rt.enter();
            s.node.close_conn(pki);
        }
    }

    fn revalidate_identities(&mut self, n: NodeId) -> usize {
        self.slots.get(n).map_or(0, |s| {
            let _guard = self.rt.enter();
            s.node.revalidate_identities()
        })
    }

    fn stop_node(&mut self, n: NodeId) {
        if let Some(s) = self.slots.get(n) {
            let node = s.node.clone();
            self.rt.block_on(node.stop());
        }
    }

    fn inject(&mut self, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Stop(n) => {
                self.stop_node(n);
                Ok(())
            }
            Fault::Restart(n) => self.restart_node(n, false),
            Fault::RestartNewIdentity(n) => self.restart_node(n, true),
            other => Err(format!("{} cannot inject {other}", self.name())),
        }
    }

    fn restart_node(&mut self, n: NodeId, new_identity: bool) -> Result<(), String> {
        self.stop_node(n);
        let slot = self.slots.get(n).ok_or("no such node")?;
        let opts = slot.opts.clone();
        let member = slot.member.clone();
        let listen: std::net::SocketAddr = slot.endpoint.parse().map_err(|e| format!("{e}"))?;
        let generation = slot.generation + u32::from(new_identity);
        let incarnation = slot.incarnation + 1;
        let (node, tls) = self.start(n, &opts, listen, generation, member.as_ref(), incarnation)?;
        let slot = &mut self.slots[n];
        slot.node = node;
        slot.generation = generation;
        slot.incarnation = incarnation;
        slot.subscriptions = 0;
        slot.tls = tls;
        if opts.subscribe_all {
            self.subscribe_in(n, Box::new(|_| true))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn run_until(&mut self, within: Duration, cond: &mut dyn FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            {
                let mut r = self.record();
                for n in 0..self.slots.len() {
                    r.drain_members(n);
                }
            }
            if cond(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return cond(self);
            }
            // Woken by any recorded change; re-checked at least every few milliseconds for
            // state that changes without a recorded event.
            let wait = (deadline - now).min(Duration::from_millis(5));
            let changed = self.changed.clone();
            self.rt.block_on(async {
                let _ = tokio::time::timeout(wait, changed.notified()).await;
            });
        }
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn clock_slack(&self) -> Duration {
        COARSE_CLOCK_SLACK
    }

    fn deliveries(&self, n: NodeId) -> Vec<Delivery> {
        self.record()
            .deliveries
            .get(n)
            .map(|d| d.iter().map(|(d, _, _)| d.clone()).collect())
            .unwrap_or_default()
    }

    fn delivery_count(&self, n: NodeId) -> usize {
        self.record().deliveries.get(n).map_or(0, Vec::len)
    }

    fn events(&self, n: NodeId) -> Vec<Event> {
        let mut guard = self.record();
        let r = &mut *guard;
        let (Some(taps), Some(events)) = (r.taps.get_mut(n), r.events.get_mut(n)) else {
            return Vec::new();
        };
        for tap in taps.iter_mut() {
            while let Ok(ev) = tap.try_recv() {
                events.push(ev);
            }
        }
        events.clone()
    }

    fn op_result(&self, op: OpRef) -> Option<OpOutcome> {
        let i = usize::try_from(op.0).ok()?;
        self.record().ops.get(i).cloned().flatten()
    }

    fn stats(&self, n: NodeId) -> Stats {
        self.slots
            .get(n)
            .map(|s| s.node.stats())
            .unwrap_or_default()
    }

    fn connections(&self, n: NodeId) -> Vec<fabric_gossip_core::ConnectionEntry> {
        match self.slots.get(n) {
            Some(s) if !s.node.is_stopped() => s.node.connections(),
            _ => Vec::new(),
        }
    }

    fn supports_membership(&self) -> bool {
        true
    }

    /// Bootstraps from the endpoints of nodes already added (a real node's endpoint is
    /// only known once it is bound).
    fn add_member(&mut self, spec: MemberSpec) -> Result<NodeId, String> {
        let boot = spec
            .bootstrap
            .iter()
            .map(|&b| {
                self.slots
                    .get(b)
                    .map(|s| s.endpoint.clone())
                    .ok_or_else(|| format!("bootstrap node {b} is not started yet"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Checked once here, so the layer factory cannot fail.
        spec.discovery_config("127.0.0.1:1")
            .with_bootstrap(boot.clone())
            .validate()
            .map_err(|e| e.to_string())?;
        let node = spec.node.clone();
        self.add(node, Some((spec, boot)))
    }

    fn members(&self, n: NodeId) -> Vec<MemberInfo> {
        self.member_layer(n, Discovery::members).unwrap_or_default()
    }

    fn dead_members(&self, n: NodeId) -> Vec<MemberInfo> {
        self.member_layer(n, Discovery::dead_members)
            .unwrap_or_default()
    }

    fn member_events(&self, n: NodeId) -> Vec<DiscoveryEvent> {
        let mut r = self.record();
        r.drain_members(n);
        r.member_events.get(n).cloned().unwrap_or_default()
    }

    fn member_stats(&self, n: NodeId) -> Option<DiscoveryStats> {
        self.member_layer(n, |d| d.stats().clone())
    }

    fn member_envelope(&self, n: NodeId, pki: &PkiId) -> Option<Envelope> {
        self.member_layer(n, |d| d.member_envelope(pki).cloned())
            .flatten()
    }

    fn connect_anchor(&mut self, n: NodeId, to: NodeId) -> Result<(), String> {
        let endpoint = self.slots.get(to).ok_or("no such anchor")?.endpoint.clone();
        let slot = self.slots.get(n).ok_or("no such node")?;
        // The call may dial: the node's tasks are spawned on this runtime.
        let _guard = self.rt.enter();
        slot.node
            .with_layer_mut(|d: &mut Discovery, comm| d.connect_anchor(comm.now(), endpoint))
            .ok_or_else(|| format!("node {n} runs no membership layer"))
            .and_then(crate::anchor_dialled)
    }

    /// Plaintext nodes only: a raw client cannot present a certificate by hash.
    fn raw_open(&mut self, n: NodeId, client_cert: Option<CertHash>) -> Option<RawRef> {
        let slot = self.slots.get(n)?;
        if slot.tls || client_cert.is_some() {
            return None;
        }
        let endpoint = slot.endpoint.clone();
        let (tx, rx) = mpsc::channel::<Bytes>(RAW_QUEUE);
        let id = {
            let mut r = self.record();
            r.raws.push((Vec::new(), None));
            r.raws.len() - 1
        };
        self.raws.push(tx);
        let (record, changed) = (self.record.clone(), self.changed.clone());
        let end = move |e: StreamEnd| {
            record.lock().unwrap_or_else(PoisonError::into_inner).raws[id].1 = Some(e);
            changed.notify_waiters();
        };
        let (record, changed) = (self.record.clone(), self.changed.clone());
        self.rt.spawn(async move {
            let channel =
                match tonic::transport::Endpoint::from_shared(format!("http://{endpoint}")) {
                    Ok(ep) => match ep.connect().await {
                        Ok(c) => c,
                        Err(e) => return end(StreamEnd::Error(e.to_string())),
                    },
                    Err(e) => return end(StreamEnd::Error(e.to_string())),
                };
            let mut grpc = tonic::client::Grpc::new(channel);
            if let Err(e) = grpc.ready().await {
                return end(StreamEnd::Error(e.to_string()));
            }
            let response = grpc
                .streaming(
                    tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                    tonic::codegen::http::uri::PathAndQuery::from_static(GOSSIP_STREAM_PATH),
                    RawCodec,
                )
                .await;
            let mut stream = match response {
                Ok(r) => r.into_inner(),
                Err(status) => return end(StreamEnd::Error(status.message().to_string())),
            };
            loop {
                match stream.message().await {
                    Ok(Some(b)) => {
                        record.lock().unwrap_or_else(PoisonError::into_inner).raws[id]
                            .0
                            .push(b);
                        changed.notify_waiters();
                    }
                    Ok(None) => return end(StreamEnd::Finished),
                    Err(status) => return end(StreamEnd::Error(status.message().to_string())),
                }
            }
        });
        Some(RawRef(id))
    }

    fn raw_send(&mut self, raw: RawRef, bytes: Bytes) {
        if let Some(tx) = self.raws.get(raw.0).cloned() {
            self.rt.block_on(async {
                let _ = tokio::time::timeout(CALL_LIMIT, tx.send(bytes)).await;
            });
        }
    }

    fn raw_received(&self, raw: RawRef) -> Vec<Bytes> {
        self.record()
            .raws
            .get(raw.0)
            .map(|r| r.0.clone())
            .unwrap_or_default()
    }

    fn raw_ended(&self, raw: RawRef) -> Option<StreamEnd> {
        self.record().raws.get(raw.0).and_then(|r| r.1.clone())
    }
}
