//! Admission of inbound connections: who may hold a socket of this node, and for how long.
//!
//! tonic's server keeps every accepted connection for as long as the remote likes, however
//! little it sends, and retries a failing `accept` at once: 2,000 idle TCP connections locked
//! every legitimate peer out of a node with the usual 1,024 open files, and the accept loop
//! spun on `EMFILE`. This module is the incoming stream the server is given instead. Each
//! accepted socket is wrapped in a [`GuardedIo`] registered in the [`Admission`] table, which
//!
//! - counts a connection as **pending** until one of its gossip streams has authenticated
//!   (the core reported it `Connected`), and again once its last authenticated stream closed;
//! - closes a pending connection once it has been pending for [`DriverLimits::setup_timeout`]
//!   (TLS, the HTTP/2 preface, opening a stream and the handshake must all fit in it);
//! - caps pending connections ([`DriverLimits::max_pending_connections`]) and all inbound
//!   connections ([`DriverLimits::max_inbound_connections`]): a new connection over a cap
//!   evicts a pending connection of the remote address (an IPv6 one by its /64) holding
//!   the most of them, the one that got least far (no bytes, then no gRPC request, then no
//!   authenticated stream), oldest first; or it is refused when none is pending;
//! - backs off when `accept` fails for want of resources (`EMFILE`, `ENFILE`, `ENOBUFS`),
//!   evicting a pending connection to free a descriptor, instead of spinning.
//!
//! Closing a connection is done from inside its I/O: the wrapper's reads and writes fail
//! once it is marked, and its pending read is woken, so hyper (or the TLS handshake) ends the
//! connection and drops the socket without the table owning any task.

use crate::readahead::ReadAhead;
use futures_util::task::AtomicWaker;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// Limits the driver enforces against remotes, beyond the core's own `Config`.
///
/// The defaults protect a node with the usual soft limit of 1,024 open files and keep what
/// remotes that have not authenticated can make it hold under about 280 MiB (see the crate
/// docs); every field can be changed after `DriverLimits::default()`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverLimits {
    /// How long an inbound connection may stay without an authenticated gossip stream: from
    /// `accept` through TLS, the HTTP/2 preface, opening `GossipStream` and the handshake, and
    /// again after its last authenticated stream closed. Default 10 s. grpc-go allows 120 s
    /// for the TLS handshake alone, but with a cap on such connections every second an idle
    /// socket may live is a second a slot is taken; a legitimate Fabric peer needs its dial
    /// timeout (3 s) plus the first message's (2 s) at most, so 10 s leaves twice that for a
    /// slow link. `Ping`-only connections (probes) count as pending: they are done in
    /// milliseconds.
    pub setup_timeout: Duration,
    /// Pending connections (see `setup_timeout`) held at once; one more evicts a pending
    /// connection of the address (an IPv6 one: its /64) holding the most, the one that got
    /// least far, oldest first. Default 128: far above the connections a node's peers open at once, far
    /// below the open-file limit.
    pub max_pending_connections: usize,
    /// Inbound connections held at once, authenticated or not. Over it, a new connection
    /// evicts a pending one, or is refused if none is pending. Default 512, half the usual
    /// soft open-file limit, leaving the rest for outbound connections and files.
    pub max_inbound_connections: usize,
    /// Bytes this node holds, over all streams, for gRPC messages that have begun to arrive
    /// and are not complete. A stream whose next chunk would pass it waits (HTTP/2 flow
    /// control then holds the sender back) until others complete or are reset; an incomplete
    /// message of at most 64 KiB may use an 8 MiB reserve beyond it instead, so ordinary
    /// messages keep flowing while half-sent large ones hold the budget. Default 128 MiB: at
    /// least one message of the core's default `max_message_size` (100 MiB) always fits; with
    /// the reserve and the HTTP/2 windows of the pending connections, see
    /// `flow_control_window` for the total.
    pub max_incomplete_bytes: usize,
    /// How long a message in progress may go without receiving a byte (or without budget
    /// to take its next bytes) before its stream is reset. Default 10 s. A sender that is
    /// slow but steady is never cut: the clock restarts with every chunk. So messages that
    /// stall together take turns: each reset frees budget the others take a little of,
    /// which restarts their clocks, and N of them can hold the budget for up to N times
    /// this (small messages meanwhile use the reserve).
    pub message_stall_timeout: Duration,
    /// Bytes a remote may send on a connection (and on each of its streams) before this node
    /// has read them: the HTTP/2 flow-control window this node advertises. A connection this
    /// node is not reading, because its messages wait for `max_incomplete_bytes` or its
    /// subscriber is slow, holds at most this much in HTTP/2's buffers. So remotes that have
    /// not authenticated can make the node hold at most `max_incomplete_bytes` + the 8 MiB
    /// reserve + `max_pending_connections` × this: 264 MiB with the defaults, plus the
    /// node's working set (when the driver advertised 4 MiB per stream, 100 such remotes
    /// made a node hold 525 MiB). Default 1 MiB: on loopback it holds back neither a gossip
    /// connection nor HTTP/2 alone (512 KiB held back HTTP/2 alone, by a third); over a link
    /// with a 50 ms round trip it allows about 20 MB/s per connection, so raise it for such
    /// links. Values below HTTP/2's 65,535 are raised to it, above 2^31 − 1 lowered to that.
    pub flow_control_window: u32,
    /// HTTP/2 streams (gRPC calls) a remote may have open at once on one connection: the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` this node advertises. A Fabric peer opens one at a
    /// time (`Ping`, then `GossipStream`), this node's own dials at most two, and other
    /// clients multiplex a few peers on one connection (the interop suite's Python peers
    /// share one gRPC channel, and failed with a cap of 4). Default 16.
    /// Without a cap one connection opened 372,700 `GossipStream`s in 8 s, each a pending
    /// handshake of the core: it grew the node to 1.3 GB and made the core refuse
    /// legitimate handshakes as the oldest of too many pending (`Config::
    /// max_pending_handshakes`, 2,048, is `max_pending_connections` × this, so pending
    /// connections alone cannot fill it), and a flood of `Ping`s never read back grew it by
    /// 200 MB/s.
    pub max_concurrent_streams: u32,
    /// How long an inbound stream the core closed may take to finish before its whole
    /// connection is closed (`DriverStats::unfinished_closes`). The core forgets a closed
    /// stream's queue, but what it had already handed over (up to its write window, a
    /// whole membership response among them) stays with the stream's response body until
    /// HTTP/2 has sent it, and a remote that keeps its flow-control window shut, or never
    /// reads, kept it there as long as it kept the connection: a live re-attack held
    /// 645-662 MB so with 64 such requesters. A remote that reads takes a stream's end in
    /// well under a second. Default 10 s.
    pub close_grace: Duration,
    /// How often a connection this node dialled sends an HTTP/2 PING, busy or idle, and
    /// how long it waits for the answer before closing the connection: Fabric's gossip
    /// client (`peer.keepalive.client.interval` and `.timeout`, 60 s and 20 s). Without it a
    /// peer that vanished without a word (powered off, a path cut) was noticed only when
    /// TCP gave up retransmitting, about 15 minutes on Linux, while sends to it filled its
    /// queue and were dropped. A Fabric peer refuses pings more often than once a minute
    /// (`GOAWAY` "too_many_pings"), so keep 60 s towards Fabric peers. Zero turns it off.
    pub keepalive_interval: Duration,
    /// See [`keepalive_interval`](Self::keepalive_interval). Default 20 s.
    pub keepalive_timeout: Duration,
}

impl DriverLimits {
    /// These limits with `max_incomplete_bytes` raised, if need be, to hold one message of
    /// `max_message_size` whole, with its gRPC prefix: a node configured for messages
    /// larger than the default budget holds (a Fabric peer's `peer.maxRecvMsgSize` above
    /// 128 MiB) would otherwise let them begin and never complete.
    #[must_use]
    pub fn fitting(mut self, max_message_size: usize) -> Self {
        let one = max_message_size.saturating_add(crate::metered::PREFIX);
        self.max_incomplete_bytes = self.max_incomplete_bytes.max(one);
        self
    }
}

impl Default for DriverLimits {
    fn default() -> Self {
        DriverLimits {
            setup_timeout: Duration::from_secs(10),
            max_pending_connections: 128,
            max_inbound_connections: 512,
            max_incomplete_bytes: 128 << 20,
            message_stall_timeout: Duration::from_secs(10),
            flow_control_window: 1 << 20,
            max_concurrent_streams: 16,
            close_grace: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How far a pending connection got, lowest evicted first.
const STAGE_SILENT: u8 = 0;
const STAGE_BYTES: u8 = 1;
const STAGE_REQUEST: u8 = 2;

/// Shortest and longest pause after `accept` failed for want of resources.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One inbound connection's entry.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    remote: Option<SocketAddr>,
    stage: AtomicU8,
    /// Authenticated gossip streams open on it.
    authenticated: AtomicU32,
    /// When it last became pending, in ms since the table's base.
    pending_since: AtomicU64,
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl Slot {
    fn pending(&self) -> bool {
        self.authenticated.load(Ordering::Acquire) == 0
    }

    /// The connection carried a gRPC request (a stream or a `Ping`).
    pub(crate) fn saw_request(&self) {
        self.stage.fetch_max(STAGE_REQUEST, Ordering::AcqRel);
    }

    /// The remote address, for logs and the core.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// Closes the connection: its reads and writes fail from now on.
    pub(crate) fn kill(&self) {
        kill(self);
    }
}

/// What the admission table did with a connection (or with `accept`): each outcome
/// indexes its counter, so a new outcome cannot be counted without a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A socket entered the table.
    Accepted,
    /// A socket was refused: the table was full of authenticated connections.
    Refused,
    /// A connection still in its setup was cut to make room.
    Evicted,
    /// A connection did not authenticate within `setup_timeout`.
    SetupTimeout,
    /// `accept` itself failed (not for one connection's sake).
    AcceptError,
    /// An admitted connection's TLS handshake failed (an untrusted client certificate, a
    /// client that is not speaking TLS, no HTTP/2 by ALPN), the table not having closed it
    /// and the client having sent something (a bare connect and close is no TLS failure).
    TlsFailed,
}

impl Outcome {
    const COUNT: usize = Outcome::TlsFailed as usize + 1;
}

/// Counters of the admission table, one per [`Outcome`], copied into `DriverStats`.
#[derive(Debug, Default)]
pub(crate) struct AdmissionCounters([AtomicU64; Outcome::COUNT]);

impl AdmissionCounters {
    /// Counts one `outcome`. Release, with [`get`](Self::get)'s acquire: a reader who
    /// sees the count also sees what its counter wrote before it (its log line).
    pub(crate) fn count(&self, outcome: Outcome) {
        self.0[outcome as usize].fetch_add(1, Ordering::Release);
    }

    /// How many times `outcome` happened.
    pub(crate) fn get(&self, outcome: Outcome) -> u64 {
        self.0[outcome as usize].load(Ordering::Acquire)
    }
}

/// The table of inbound connections and the limits it enforces.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: DriverLimits,
    base: tokio::time::Instant,
    table: Mutex<BTreeMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    /// Wakes the reaper when a connection becomes pending.
    reaper: Notify,
    pub(crate) counters: AdmissionCounters,
    /// Bytes each admitted socket reads at once for a smaller reader (0: no read-ahead;
    /// the node reads ahead under TLS only).
    read_ahead: usize,
    /// Evictions and setup time-outs are logged at most 20 a second: a flood of
    /// connections made one line each (4,250 in 6 s in a loopback attack). The counters
    /// count every one.
    log: Mutex<fabric_gossip_core::LogBudget>,
}

impl Admission {
    pub(crate) fn new(limits: DriverLimits, read_ahead: usize) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            read_ahead,
            log: Mutex::default(),
            base: tokio::time::Instant::now(),
            table: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            reaper: Notify::new(),
            counters: AdmissionCounters::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// (open, pending) inbound connections now.
    pub(crate) fn open(&self) -> (usize, usize) {
        let t = self.lock();
        (t.len(), t.values().filter(|s| s.pending()).count())
    }

    /// Registers an accepted socket, evicting or refusing per the caps.
    fn admit(self: &Arc<Self>, tcp: TcpStream, remote: SocketAddr) -> Option<GuardedIo> {
        let mut t = self.lock();
        let pending = t.values().filter(|s| s.pending()).count();
        if t.len() >= self.limits.max_inbound_connections
            || pending >= self.limits.max_pending_connections
        {
            match Self::victim(&t) {
                Some(v) => {
                    if let Some(s) = t.remove(&v) {
                        if let Some(not_logged) = self.log_now() {
                            tracing::info!(
                                remote = ?s.remote, stage = s.stage.load(Ordering::Relaxed),
                                not_logged,
                                "inbound connection evicted: connection limit reached"
                            );
                        }
                        self.counters.count(Outcome::Evicted);
                        kill(&s);
                    }
                }
                None => {
                    drop(t);
                    self.counters.count(Outcome::Refused);
                    tracing::warn!(%remote, "inbound connection refused: every slot is authenticated");
                    return None;
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            id,
            remote: Some(remote),
            stage: AtomicU8::new(STAGE_SILENT),
            authenticated: AtomicU32::new(0),
            pending_since: AtomicU64::new(self.now_ms()),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        t.insert(id, slot.clone());
        drop(t);
        self.counters.count(Outcome::Accepted);
        self.reaper.notify_one();
        Some(GuardedIo {
            tcp: ReadAhead::new(tcp, self.read_ahead),
            slot,
            admission: self.clone(),
        })
    }

    /// The pending connection to close for room: from the source holding the most pending
    /// connections ([`source`]: a flood from a few hosts pays for itself, a peer setting up
    /// its one connection is spared), the one that got least far, oldest first.
    fn victim(t: &BTreeMap<u64, Arc<Slot>>) -> Option<u64> {
        let mut per_source: HashMap<Option<IpAddr>, usize> = HashMap::new();
        let mut per_address: HashMap<Option<IpAddr>, usize> = HashMap::new();
        for s in t.values().filter(|s| s.pending()) {
            *per_source.entry(source(s.remote)).or_default() += 1;
            *per_address.entry(s.remote.map(|a| a.ip())).or_default() += 1;
        }
        let (from, _) = per_source.into_iter().max_by_key(|(ip, n)| (*n, *ip))?;
        // Within an IPv6 /64 (hosts of one subnet may share one), the address holding the
        // most goes first: one flooding host among honest neighbours pays for itself.
        let held = |s: &Slot| per_address.get(&s.remote.map(|a| a.ip())).copied();
        t.values()
            .filter(|s| s.pending() && source(s.remote) == from)
            .min_by_key(|s| {
                (
                    std::cmp::Reverse(held(s)),
                    s.stage.load(Ordering::Acquire),
                    s.id,
                )
            })
            .map(|s| s.id)
    }

    /// Whether an admission line may be logged now (`Some(n)`: `n` were not, before it).
    fn log_now(&self) -> Option<u64> {
        let elapsed = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(fabric_gossip_core::Instant::from_unix_nanos(elapsed))
    }

    /// Frees a descriptor after `accept` failed for want of one.
    fn evict_one(&self) {
        let mut t = self.lock();
        if let Some(s) = Self::victim(&t).and_then(|v| t.remove(&v)) {
            drop(t);
            if let Some(not_logged) = self.log_now() {
                tracing::info!(
                    remote = ?s.remote, not_logged,
                    "inbound connection evicted: out of file descriptors"
                );
            }
            self.counters.count(Outcome::Evicted);
            kill(&s);
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// One more authenticated stream on `slot`'s connection.
    pub(crate) fn authenticated(&self, slot: &Slot) {
        slot.authenticated.fetch_add(1, Ordering::AcqRel);
    }

    /// One authenticated stream fewer; the connection is pending again after its last.
    pub(crate) fn unauthenticated(&self, slot: &Slot) {
        if slot.authenticated.fetch_sub(1, Ordering::AcqRel) == 1 {
            slot.pending_since.store(self.now_ms(), Ordering::Release);
            self.reaper.notify_one();
        }
    }

    /// Closes pending connections past `setup_timeout`; returns the time of the next
    /// deadline, if any connection is pending.
    fn reap(&self) -> Option<tokio::time::Instant> {
        let limit = u64::try_from(self.limits.setup_timeout.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let mut expired = Vec::new();
        let mut next: Option<u64> = None;
        {
            let mut t = self.lock();
            t.retain(|_, s| {
                if !s.pending() {
                    return true;
                }
                let deadline = s
                    .pending_since
                    .load(Ordering::Acquire)
                    .saturating_add(limit);
                if deadline <= now {
                    expired.push(s.clone());
                    false
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    true
                }
            });
        }
        for s in expired {
            if let Some(not_logged) = self.log_now() {
                tracing::info!(
                    remote = ?s.remote, stage = s.stage.load(Ordering::Relaxed),
                    timeout = ?self.limits.setup_timeout, not_logged,
                    "inbound connection closed: no authenticated stream within the setup timeout"
                );
            }
            self.counters.count(Outcome::SetupTimeout);
            kill(&s);
        }
        next.map(|ms| self.base + Duration::from_millis(ms))
    }
}

fn kill(s: &Slot) {
    s.killed.store(true, Ordering::Release);
    s.waker.wake();
}

/// Closes connections that stay pending too long; runs until aborted.
pub(crate) async fn reaper_task(admission: Arc<Admission>) {
    loop {
        let woken = admission.reaper.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        match admission.reap() {
            Some(at) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => woken.await,
        }
    }
}

/// The server's incoming connections: accepts, admits, and backs off on resource errors.
pub(crate) struct GuardedIncoming {
    listener: TcpListener,
    admission: Arc<Admission>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
    delay: Duration,
}

impl GuardedIncoming {
    pub(crate) fn new(listener: TcpListener, admission: Arc<Admission>) -> Self {
        GuardedIncoming {
            listener,
            admission,
            backoff: None,
            delay: BACKOFF_MIN,
        }
    }
}

/// `accept` errors that concern one connection (it was gone before we took it): retry at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Stream for GuardedIncoming {
    type Item = io::Result<GuardedIo>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = &mut this.backoff {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((tcp, remote))) => {
                    this.delay = BACKOFF_MIN;
                    let _ = tcp.set_nodelay(true);
                    if let Some(io) = this.admission.admit(tcp, remote) {
                        return Poll::Ready(Some(Ok(io)));
                    }
                }
                Poll::Ready(Err(e)) if per_connection(&e) => {}
                Poll::Ready(Err(e)) => {
                    this.admission.counters.count(Outcome::AcceptError);
                    tracing::warn!(error = %e, backoff = ?this.delay, "accept failed; backing off");
                    this.admission.evict_one();
                    this.backoff = Some(Box::pin(tokio::time::sleep(this.delay)));
                    this.delay = (this.delay * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// What a remote's pending connections are charged to when one must go: its IPv4 address,
/// or its IPv6 address's /64, what one host or site is given: counted by address, a flood
/// from many addresses of one /64 was as many sources of one connection each, and an honest
/// peer with two pending connections (crossing dials) was the one evicted.
fn source(remote: Option<SocketAddr>) -> Option<IpAddr> {
    remote.map(|a| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !(u128::from(u64::MAX)),
            )),
        },
        v4 => v4,
    })
}

/// Most sockets [`TlsIncoming`] takes from the listener in one poll before it lets the
/// server's task do other work: under a flood of connections it still hands over those
/// whose handshakes have finished.
const ACCEPTS_PER_POLL: usize = 32;

/// The server's incoming connections under TLS: admitted sockets as [`GuardedIncoming`]
/// yields them, each with its TLS handshake run in a task of its own, so that a slow or
/// silent client holds back nobody else's; the connections whose handshakes completed come
/// out. The node does this rather than tonic because tonic's TLS settings cannot take a
/// client certificate without checking its chain
/// ([`crate::TlsConfig::verify_client_chain`]). A handshake cut by the table (eviction,
/// `setup_timeout`) is counted as that; any other failure of a client that sent a byte as
/// [`Outcome::TlsFailed`].
pub(crate) struct TlsIncoming {
    tcp: GuardedIncoming,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: tokio::task::JoinSet<Option<tokio_rustls::server::TlsStream<GuardedIo>>>,
    /// The listener's stream ended (it does not, but a stream may not be polled after).
    tcp_done: bool,
}

impl TlsIncoming {
    pub(crate) fn new(
        tcp: GuardedIncoming,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> Self {
        TlsIncoming {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshakes: tokio::task::JoinSet::new(),
            tcp_done: false,
        }
    }

    /// A connection whose handshake has completed, if one has; failed ones (counted by
    /// their tasks) are passed over. Registers the task for the next end when none has.
    fn finished(&mut self, cx: &mut Context<'_>) -> Option<TlsConn> {
        loop {
            match self.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(tls)))) => return Some(TlsConn(Box::new(tls))),
                // Failed, or its task panicked: the next one.
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) | Poll::Pending => return None,
            }
        }
    }

    fn start(&mut self, io: GuardedIo) {
        let slot = io.slot.clone();
        let counters = io.admission.clone();
        let handshake = self.acceptor.accept(io);
        self.handshakes.spawn(async move {
            match handshake.await {
                Ok(tls) => Some(tls),
                Err(e) => {
                    // Not a failure of TLS: the table cut it (counted as that), or the client
                    // closed before sending a byte (a TCP health check, a port scan).
                    let cut = slot.killed.load(Ordering::Acquire);
                    let spoke = slot.stage.load(Ordering::Acquire) >= STAGE_BYTES;
                    if !cut && spoke {
                        // A warning, as a Fabric peer logs its own ("TLS handshake failed"),
                        // at most as often as the table's other lines: a client whose TLS
                        // is wrong retries, and a flood of them must not flood the log.
                        if let Some(not_logged) = counters.log_now() {
                            tracing::warn!(
                                remote = ?slot.remote, error = %e, not_logged,
                                "TLS handshake failed"
                            );
                        }
                        // Counted after its line is out (here and at the table's other
                        // lines): whoever sees the count go up finds the line already
                        // written, even with the handshake on another worker thread.
                        counters.counters.count(Outcome::TlsFailed);
                    }
                    None
                }
            }
        });
    }
}

/// An accepted TLS connection, its stream boxed as tonic's own TLS boxes it: inline, the
/// rustls connection state made each connection's hyper task larger, and a hub with 2,000
/// TLS peers held about 1 KiB more per connection (`--example scale`: 45.0–45.5 KiB
/// against 43.8–44.0 boxed).
pub(crate) struct TlsConn(Box<tokio_rustls::server::TlsStream<GuardedIo>>);

impl Connected for TlsConn {
    type ConnectInfo = tonic::transport::server::TlsConnectInfo<InboundConn>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}

impl Stream for TlsIncoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // A finished handshake first: one waiting here is out of the table's reach (evicted,
        // it would still hold its socket), so none waits behind new sockets.
        if let Some(tls) = this.finished(cx) {
            return Poll::Ready(Some(Ok(tls)));
        }
        // Then new sockets; the handshakes they start are polled below, which registers
        // this task for their end (an empty set registers nothing).
        let mut accepted = 0;
        while !this.tcp_done {
            if accepted == ACCEPTS_PER_POLL {
                // More may be waiting: come back after the server's task has run.
                cx.waker().wake_by_ref();
                break;
            }
            match Pin::new(&mut this.tcp).poll_next(cx) {
                Poll::Ready(Some(Ok(io))) => {
                    this.start(io);
                    accepted += 1;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.tcp_done = true,
                Poll::Pending => break,
            }
        }
        if let Some(tls) = this.finished(cx) {
            return Poll::Ready(Some(Ok(tls)));
        }
        if this.tcp_done && this.handshakes.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// What the service learns about the connection a request came on (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct InboundConn {
    pub(crate) slot: Arc<Slot>,
}

/// An admitted socket: fails its reads and writes once the table closed it.
#[derive(Debug)]
pub(crate) struct GuardedIo {
    /// Read ahead when TLS is on (see [`ReadAhead`]).
    tcp: ReadAhead<TcpStream>,
    slot: Arc<Slot>,
    admission: Arc<Admission>,
}

impl GuardedIo {
    fn closed(&self) -> Option<io::Error> {
        self.slot.killed.load(Ordering::Acquire).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by this node's connection limits",
            )
        })
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.admission.remove(self.slot.id);
    }
}

impl Connected for GuardedIo {
    type ConnectInfo = InboundConn;

    fn connect_info(&self) -> InboundConn {
        InboundConn {
            slot: self.slot.clone(),
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.slot.waker.register(cx.waker());
        if let Some(e) = this.closed() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.slot.stage.fetch_max(STAGE_BYTES, Ordering::AcqRel);
        }
        r
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.closed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.closed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_stream::StreamExt;

    /// The budget grows to hold one message of a larger limit whole, never shrinks.
    #[test]
    fn limits_fitting_a_message_size_hold_one_message_whole() {
        let default = DriverLimits::default();
        assert_eq!(default.clone().fitting(1024), default);
        let big = 200 << 20;
        let fitted = default.clone().fitting(big);
        assert_eq!(fitted.max_incomplete_bytes, big + crate::metered::PREFIX);
        assert_eq!(
            DriverLimits {
                max_incomplete_bytes: 0,
                ..fitted.clone()
            },
            DriverLimits {
                max_incomplete_bytes: 0,
                ..default
            },
            "nothing else changes"
        );
        assert_eq!(fitted.fitting(usize::MAX).max_incomplete_bytes, usize::MAX);
    }

    fn pending(id: u64, remote: &str) -> (u64, Arc<Slot>) {
        let slot = Slot {
            id,
            remote: Some(remote.parse().unwrap()),
            stage: AtomicU8::new(STAGE_SILENT),
            authenticated: AtomicU32::new(0),
            pending_since: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        };
        (id, Arc::new(slot))
    }

    /// A flood from three addresses of one IPv6 /64 is one source of three connections,
    /// evicted before an honest peer's two (counted by address, the peer had been the one).
    #[test]
    fn an_ipv6_64_is_one_source() {
        let victim = |entries: &[(u64, &str)]| {
            let table: BTreeMap<_, _> = entries.iter().map(|&(id, a)| pending(id, a)).collect();
            Admission::victim(&table)
        };
        let flood = [
            (1, "[2001:db8:1::1]:7051"),
            (2, "[2001:db8:1::1]:7052"),
            (3, "[2001:db8:2::a]:40000"),
            (4, "[2001:db8:2::b]:40000"),
            (5, "[2001:db8:2:0:ffff::c]:40000"),
        ];
        assert_eq!(victim(&flood), Some(3));
        // Within a /64, the address holding the most goes first, whatever its age.
        let one_64 = [
            (1, "[2001:db8:1::1]:7051"),
            (2, "[2001:db8:1::2]:7051"),
            (3, "[2001:db8:1::66]:40000"),
            (4, "[2001:db8:1::66]:40001"),
        ];
        assert_eq!(victim(&one_64), Some(3));
        // IPv4 addresses stay apart, and an IPv4-mapped IPv6 address is its IPv4 one.
        let v4 = [
            (1, "10.0.0.1:7051"),
            (2, "[::ffff:10.0.0.1]:7052"),
            (3, "10.0.0.2:40000"),
        ];
        assert_eq!(victim(&v4), Some(1));
    }

    fn limits(max_inbound: usize, max_pending: usize) -> DriverLimits {
        DriverLimits {
            max_inbound_connections: max_inbound,
            max_pending_connections: max_pending,
            ..DriverLimits::default()
        }
    }

    /// A loopback connection to `listener`: the client's end, and the server's end as
    /// `admission` admitted it (`None`: refused).
    async fn admitted(
        admission: &Arc<Admission>,
        listener: &TcpListener,
    ) -> (TcpStream, Option<GuardedIo>) {
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, remote) = listener.accept().await.unwrap();
        (client, admission.admit(tcp, remote))
    }

    async fn loopback() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    /// Whether polling `fut` once leaves it pending (the task's waker then registered).
    async fn pends<F: Future>(mut fut: Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await
    }

    /// Each cap is enforced on its own: over the inbound cap (the pending one not reached)
    /// or over the pending cap (the inbound one not reached), a pending connection is
    /// evicted for the newcomer, never an authenticated one; with none pending the
    /// newcomer is refused. Under both caps nobody is evicted. Each outcome is counted.
    #[tokio::test]
    async fn each_cap_evicts_a_pending_connection_or_refuses_the_newcomer() {
        let l = loopback().await;
        // The inbound cap: 2 connections, one of them authenticated.
        let adm = Admission::new(limits(2, 2), 0);
        let (_ca, a) = admitted(&adm, &l).await;
        let a = a.expect("under both caps");
        adm.authenticated(&a.slot);
        let (_cb, b) = admitted(&adm, &l).await;
        let b = b.expect("under both caps");
        assert_eq!(adm.open(), (2, 1));
        assert_eq!(adm.counters.get(Outcome::Evicted), 0);
        let (_cc, c) = admitted(&adm, &l).await;
        let c = c.expect("a pending connection made room");
        assert!(
            b.slot.killed.load(Ordering::Acquire),
            "the pending one goes"
        );
        assert!(!a.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::Evicted), 1);
        assert_eq!(adm.open(), (2, 1));
        // Every slot authenticated: refused, nobody evicted.
        adm.authenticated(&c.slot);
        let (_cd, d) = admitted(&adm, &l).await;
        assert!(d.is_none(), "refused");
        assert_eq!(adm.counters.get(Outcome::Refused), 1);
        assert_eq!(adm.counters.get(Outcome::Evicted), 1);
        assert!(!a.slot.killed.load(Ordering::Acquire) && !c.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::Accepted), 3);
        assert_eq!(adm.open(), (2, 0));

        // The pending cap alone: one pending connection allowed, ten in all.
        let adm = Admission::new(limits(10, 1), 0);
        let (_cx, x) = admitted(&adm, &l).await;
        let x = x.expect("under both caps");
        let (_cy, y) = admitted(&adm, &l).await;
        let y = y.expect("the pending one made room");
        assert!(x.slot.killed.load(Ordering::Acquire));
        assert!(!y.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::Evicted), 1);
        assert_eq!(adm.open(), (1, 1));
        // A dropped connection leaves the table.
        drop(y);
        assert_eq!(adm.open(), (0, 0));
    }

    /// Evicting for want of a descriptor takes a pending connection, and never an
    /// authenticated one.
    #[tokio::test]
    async fn evict_one_takes_a_pending_connection_only() {
        let l = loopback().await;
        let adm = Admission::new(DriverLimits::default(), 0);
        let (_ca, a) = admitted(&adm, &l).await;
        let (_cb, b) = admitted(&adm, &l).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        adm.authenticated(&a.slot);
        adm.evict_one();
        assert!(b.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::Evicted), 1);
        assert_eq!(adm.open(), (1, 0));
        adm.evict_one();
        assert!(!a.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::Evicted), 1);
    }

    /// An admitted socket carries bytes both ways (vectored writes and the shutdown of
    /// its write side included) and knows its remote address; once closed by the table,
    /// a read waiting on it is woken and fails, and so does every read and write after.
    #[tokio::test]
    async fn an_admitted_socket_carries_bytes_until_the_table_closes_it() {
        let l = loopback().await;
        let adm = Admission::new(DriverLimits::default(), 0);
        let (mut client, io) = admitted(&adm, &l).await;
        let mut io = io.unwrap();
        assert_eq!(io.slot.remote(), Some(client.local_addr().unwrap()));
        assert!(io.is_write_vectored(), "as its TCP socket");

        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let bufs = [io::IoSlice::new(b"wor"), io::IoSlice::new(b"ld")];
        // Loopback takes 5 bytes at once.
        assert_eq!(io.write_vectored(&bufs).await.unwrap(), 5);
        io.write_all(b"!").await.unwrap();
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        // The write side is shut: the client reads to its end with `io` still open.
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .expect("the shutdown reached the client")
            .unwrap();
        assert_eq!(got, b"world!");

        let slot = io.slot.clone();
        let mut read_buf = [0u8; 8];
        let mut read = std::pin::pin!(io.read(&mut read_buf));
        assert!(pends(read.as_mut()).await, "nothing to read yet");
        slot.kill();
        let r = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the waiting read is woken");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        client.write_all(b"late").await.unwrap();
        let e = io.read(&mut read_buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        let e = io.write(b"x").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        let e = io.write_vectored(&bufs).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }

    /// How far a connection got decides which pending one goes: one that sent a byte is
    /// kept before a silent one (a read that found nothing is no byte), one that made a
    /// request before one that only sent bytes, whatever their ages.
    #[tokio::test]
    async fn the_connection_that_got_least_far_is_evicted_first() {
        let l = loopback().await;
        let adm = Admission::new(DriverLimits::default(), 0);
        let (mut c_bytes, bytes) = admitted(&adm, &l).await;
        let (_c_req, req) = admitted(&adm, &l).await;
        let (_c_silent, silent) = admitted(&adm, &l).await;
        let (mut bytes, req, mut silent) = (bytes.unwrap(), req.unwrap(), silent.unwrap());
        c_bytes.write_all(b"x").await.unwrap();
        bytes.read_exact(&mut [0u8; 1]).await.unwrap();
        req.slot.saw_request();
        let mut buf = [0u8; 1];
        assert!(pends(std::pin::pin!(silent.read(&mut buf))).await);
        assert_eq!(Admission::victim(&adm.lock()), Some(silent.slot.id));
        adm.authenticated(&silent.slot);
        assert_eq!(Admission::victim(&adm.lock()), Some(bytes.slot.id));
        adm.authenticated(&bytes.slot);
        assert_eq!(Admission::victim(&adm.lock()), Some(req.slot.id));
    }

    /// A connection is closed once pending for `setup_timeout`, not a millisecond
    /// before; an authenticated one is kept, and its clock restarts when its last
    /// authenticated stream closes. `reap` tells when the next deadline falls.
    #[tokio::test(start_paused = true)]
    async fn a_connection_pending_for_the_setup_timeout_is_closed() {
        let l = loopback().await;
        let adm = Admission::new(DriverLimits::default(), 0);
        let timeout = adm.limits.setup_timeout;
        let (_ca, a) = admitted(&adm, &l).await;
        let (_cb, b) = admitted(&adm, &l).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        // Two streams, one closed: still authenticated.
        adm.authenticated(&b.slot);
        adm.authenticated(&b.slot);
        adm.unauthenticated(&b.slot);
        tokio::time::advance(timeout - Duration::from_millis(1)).await;
        assert_eq!(adm.reap(), Some(adm.base + timeout));
        assert!(!a.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::SetupTimeout), 0);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(adm.reap(), None, "only an authenticated connection is left");
        assert!(a.slot.killed.load(Ordering::Acquire));
        assert!(!b.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::SetupTimeout), 1);
        assert_eq!(adm.open(), (1, 0));
        // The last stream closes: pending again, for a whole `setup_timeout` from now.
        adm.unauthenticated(&b.slot);
        assert_eq!(adm.open(), (1, 1));
        assert_eq!(adm.reap(), Some(adm.base + 2 * timeout));
        assert!(!b.slot.killed.load(Ordering::Acquire));
        tokio::time::advance(timeout).await;
        assert_eq!(adm.reap(), None);
        assert!(b.slot.killed.load(Ordering::Acquire));
        assert_eq!(adm.counters.get(Outcome::SetupTimeout), 2);
    }

    /// The reaper task, idle while nothing is pending, is woken by a new connection and
    /// closes it at its setup timeout. (The sleeps are on tokio's paused clock: they move
    /// it, in order with the reaper's own timer, and take no time.)
    #[tokio::test(start_paused = true)]
    async fn the_reaper_closes_a_new_connection_at_its_setup_timeout() {
        let l = loopback().await;
        let adm = Admission::new(DriverLimits::default(), 0);
        let timeout = adm.limits.setup_timeout;
        let reaper = tokio::spawn(reaper_task(adm.clone()));
        tokio::task::yield_now().await;
        let (_ca, a) = admitted(&adm, &l).await;
        let a = a.unwrap();
        tokio::time::sleep(timeout - Duration::from_millis(1)).await;
        assert!(!a.slot.killed.load(Ordering::Acquire), "closed early");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(
            a.slot.killed.load(Ordering::Acquire),
            "not closed at its timeout"
        );
        assert_eq!(adm.counters.get(Outcome::SetupTimeout), 1);
        reaper.abort();
    }

    /// Every outcome has a counter of its own.
    #[test]
    fn each_outcome_is_counted_apart() {
        use Outcome::*;
        let counters = AdmissionCounters::default();
        let all = [
            Accepted,
            Refused,
            Evicted,
            SetupTimeout,
            AcceptError,
            TlsFailed,
        ];
        assert_eq!(all.len(), Outcome::COUNT);
        for (i, &o) in all.iter().enumerate() {
            for _ in 0..=i {
                counters.count(o);
            }
        }
        for (i, &o) in all.iter().enumerate() {
            assert_eq!(counters.get(o), i as u64 + 1, "{o:?}");
        }
    }

    /// Only the `accept` errors of one connection are retried at once; any other (out of
    /// descriptors or buffers) backs off.
    #[test]
    fn only_errors_of_one_connection_are_retried_at_once() {
        use io::ErrorKind::*;
        for kind in [
            ConnectionAborted,
            ConnectionReset,
            ConnectionRefused,
            Interrupted,
            WouldBlock,
        ] {
            assert!(per_connection(&io::Error::from(kind)), "{kind:?}");
        }
        // EMFILE, ENFILE, ENOBUFS.
        for errno in [24, 23, 105] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(!per_connection(&e), "{e}");
        }
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Under a flood of connections one poll of the TLS server's incoming stream takes
    /// `ACCEPTS_PER_POLL` sockets from the listener, each handshake started, and wakes
    /// itself to come back for the rest once the server's task has run (it could hand
    /// over a finished handshake meanwhile); the next poll takes the rest. With nothing
    /// to take it pends, and does not end.
    #[tokio::test]
    async fn the_tls_server_takes_a_bounded_number_of_sockets_per_poll() {
        use fabric_gossip_msp::dev::{OrgSpec, seeded_in_memory};
        let orgs = seeded_in_memory(&[OrgSpec::new("Org1MSP", "org1.example.com", 1)], 7).unwrap();
        let peer = &orgs[0].peers[0];
        let tls = crate::TlsConfig::new(
            peer.tls.cert_pem(),
            peer.tls.key_pem.clone(),
            orgs[0].tls_ca.cert_pem(),
        )
        .prepare()
        .unwrap();
        let l = loopback().await;
        let addr = l.local_addr().unwrap();
        let adm = Admission::new(DriverLimits::default(), 0);
        let mut incoming = TlsIncoming::new(GuardedIncoming::new(l, adm.clone()), tls.server);
        assert!(pends(std::pin::pin!(incoming.next())).await);

        let n = ACCEPTS_PER_POLL + 8;
        let mut clients = Vec::new();
        for _ in 0..n {
            // Each connect turns the runtime's driver, which sees the listener readable.
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut incoming).poll_next(&mut cx).is_pending());
        assert_eq!(incoming.handshakes.len(), ACCEPTS_PER_POLL);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1, "woke itself");
        assert!(Pin::new(&mut incoming).poll_next(&mut cx).is_pending());
        assert_eq!(incoming.handshakes.len(), n);
        assert_eq!(adm.open(), (n, n));
    }

    /// An accepted TLS connection flushes what rustls still holds: with the socket full
    /// (the client reads nothing), a flush pends where the last write pended, and it
    /// completes once the client reads, every byte delivered. h2 flushes after the last
    /// frame of each burst; a flush that answered done with records still held left them
    /// there until the next write, a stream's last messages stuck behind a socket that
    /// had been full (mutation testing of `TlsConn::poll_flush`, 2026-12-06).
    #[tokio::test]
    async fn a_tls_connection_flushes_what_a_full_socket_held_back() {
        use fabric_gossip_msp::dev::{OrgSpec, seeded_in_memory};
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
        let orgs = seeded_in_memory(&[OrgSpec::new("Org1MSP", "org1.example.com", 1)], 7).unwrap();
        let (peer, ca) = (&orgs[0].peers[0], orgs[0].tls_ca.cert_pem());
        let tls = crate::TlsConfig::new(peer.tls.cert_pem(), peer.tls.key_pem.clone(), ca.clone())
            .prepare()
            .unwrap();
        let l = loopback().await;
        let addr = l.local_addr().unwrap();
        let adm = Admission::new(DriverLimits::default(), 0);
        let mut incoming = TlsIncoming::new(GuardedIncoming::new(l, adm), tls.server);
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let client_config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            crate::tls::crypto_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        });
        let mut server = incoming.next().await.unwrap().unwrap();
        let mut client = client.await.unwrap();

        // Write until a write pends: the socket is full and so is rustls's buffer.
        let chunk = vec![7u8; 16 << 10];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut written = 0;
        loop {
            match Pin::new(&mut server).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => panic!("write: {e}"),
                Poll::Pending => break,
            }
            assert!(
                written < 1 << 30,
                "1 GiB written and the socket never filled"
            );
        }
        assert!(
            Pin::new(&mut server).poll_flush(&mut cx).is_pending(),
            "a flush with records held and the socket full said done"
        );

        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut read = 0;
            while read < written {
                match client.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => read += n,
                }
            }
            read
        });
        let deadline = Duration::from_secs(20);
        tokio::time::timeout(deadline, server.flush())
            .await
            .expect("the flush completes once the client reads")
            .unwrap();
        let read = tokio::time::timeout(deadline, reader)
            .await
            .expect("the client read everything")
            .unwrap();
        assert_eq!(read, written);
    }

    /// Eviction and time-out lines are logged 20 a second; the first line of the next
    /// second says how many were not.
    #[tokio::test(start_paused = true)]
    async fn admission_lines_are_logged_twenty_a_second() {
        let adm = Admission::new(DriverLimits::default(), 0);
        let lines: Vec<_> = (0..21).map(|_| adm.log_now()).collect();
        assert_eq!(lines[..20], [Some(0); 20]);
        assert_eq!(lines[20], None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(adm.log_now(), Some(1));
    }
}
