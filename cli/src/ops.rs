//! The operations service, as a Fabric peer has it (`operations.listenAddress`): HTTP
//! `/metrics` (Prometheus), `/healthz` and `/version`, on an address of its own so that it
//! can be firewalled apart from the gossip port.
//!
//! Metrics are read from the node's counters when a scrape asks for them (no second set of
//! counters to keep in step), at most once per [`METRICS_FRESH`]: scrapes in between get the
//! last rendering (see [`State::metrics`]). They are encoded by the `prometheus` crate in the
//! classic text format (0.0.4), the one a Fabric peer serves. Names are Fabric's where the
//! peer has one, and a counter's samples carry its name as a peer's do
//! (`gossip_comm_messages_sent`, no `_total`), so dashboards and alerts written for peers
//! find them.

use crate::logging::TARGET;
use crate::lookup::Lookups;
use crate::out::Out;
use bytes::Bytes;
use fabric_gossip_core::{HandshakeError, LogBudget};
use fabric_gossip_tonic::Node;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Connections held at once, a hard cap (so memory stays bounded). A scraper and a health
/// checker need a handful. When all are taken, a new connection evicts one that waits for
/// its request (see [`Slots`]); it waits for a slot only while none can be evicted (all
/// being answered or not yet run), which lasts microseconds.
const MAX_CONNECTIONS: usize = 32;
/// How long a connection may wait for a complete request (headers, and a `PUT`'s body):
/// from `accept`, the TLS handshake included, and again after each answer (keep-alive).
/// Health checkers and scrapers send theirs at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection that has not sent a byte yet is not taken for a silent one when
/// a slot is needed: its request may be on its way (a round trip, a TLS handshake's first
/// flight).
const FIRST_BYTES_GRACE: Duration = Duration::from_millis(500);
/// A connection is closed after this long, whatever it is doing, so that slow clients
/// cannot hold the slots.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// After answering `413` to a request whose body is over [`MAX_BODY`], the connection goes
/// on reading (and dropping) what the client sends for this long at most, and at most
/// [`LINGER_BYTES`], before it is closed, as a web server's "lingering close" does: closing
/// a socket with unread bytes resets the connection, and a client still sending its body
/// would get that reset (a broken pipe) instead of the answer.
const LINGER: Duration = Duration::from_secs(1);
/// See [`LINGER`]: a 10 MB body sent at once is read whole on a local network.
const LINGER_BYTES: u64 = 16 << 20;
/// How long a rendering of `/metrics` is served again before the next scrape renders anew.
/// A rendering builds a registry, reads `/proc` and takes the node's stats: 140–155 µs of
/// CPU (a release build), against about 3 µs for `/healthz`, so pipelined scrapes had taken
/// both cores (100,000 in 8 s) and a gossip round trip from 0.6 ms to 76 ms. With this, a
/// flood costs at most 10 renderings a second (about 1.5 ms of CPU), and the rest of a
/// scrape costs what `/healthz` does. 100 ms is far below any scrape interval (Prometheus's
/// are seconds) and below the wait of anyone who acts and then looks, so a scraper, or two
/// that scrape together, still reads figures of that moment; only a client asking again
/// within 100 ms gets the same figures twice.
const METRICS_FRESH: Duration = Duration::from_millis(100);

/// Where the node is in its life, for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// The operations service is up, the gossip server not yet.
    Starting = 0,
    /// Serving gossip.
    Serving = 1,
    /// Stop was asked for.
    Stopping = 2,
}

/// The running node, as the metrics read it: its own counters, and the CLI's (output lines
/// dropped, messages lost while their peers' PKI-IDs were learnt).
pub(crate) struct Served {
    node: Node,
    out: Out,
    lookups: Lookups,
}

/// What the handlers read: the phase, and the node once it runs.
pub(crate) struct State {
    phase: AtomicU8,
    node: OnceLock<Served>,
    /// The node's own certificates, for their time left.
    certificates: OnceLock<crate::expiry::OwnCertificates>,
    /// Whether `/metrics` is served (`metrics.provider: prometheus`).
    metrics: bool,
    /// What the operations service did with its own connections.
    connections: ConnectionCounters,
    /// The last answer to `/metrics`, served again for [`METRICS_FRESH`].
    metrics_rendering: Mutex<Option<Rendering>>,
}

/// An answer to `/metrics`, rendered at `at`.
struct Rendering {
    at: Instant,
    status: StatusCode,
    content_type: hyper::header::HeaderValue,
    body: Bytes,
}

/// The operations service's counters of its connections, for `/metrics`.
#[derive(Debug, Default)]
struct ConnectionCounters {
    /// Connections closed to make room for a new one: they had not sent a complete request
    /// and every slot was taken.
    evicted: AtomicU64,
    /// Connections closed because no complete request came within [`REQUEST_TIMEOUT`].
    request_timeouts: AtomicU64,
    /// Requests for `/metrics` or `/logspec` over TLS without a verified client
    /// certificate (answered 401).
    unauthorized: AtomicU64,
    /// When 401s were last logged.
    unauthorized_logged: Throttle,
    /// Scrapes of `/metrics` answered with the last rendering (made less than
    /// [`METRICS_FRESH`] before) rather than a new one.
    metrics_cached: AtomicU64,
}

/// A flood's warning: a line a second (the core's `LogBudget` of one), each with the number
/// of events since the previous line, not a line per event.
#[derive(Debug)]
struct Throttle(Mutex<LogBudget>);

impl Default for Throttle {
    fn default() -> Self {
        Throttle(Mutex::new(LogBudget::per_second(1)))
    }
}

impl Throttle {
    /// If a line is due (none was logged in the last second): how many events since the
    /// last line, this one included.
    fn due(&self) -> Option<u64> {
        self.due_at(crate::expiry::wall_now())
    }

    /// [`Throttle::due`] at `now`.
    fn due_at(&self, now: fabric_gossip_core::Instant) -> Option<u64> {
        lock(&self.0).admit(now).map(|not_logged| not_logged + 1)
    }
}

impl State {
    pub(crate) fn new(metrics: bool) -> Arc<State> {
        Arc::new(State {
            phase: AtomicU8::new(Phase::Starting as u8),
            node: OnceLock::new(),
            certificates: OnceLock::new(),
            metrics,
            connections: ConnectionCounters::default(),
            metrics_rendering: Mutex::new(None),
        })
    }

    /// The node is serving, with these certificates of its own.
    pub(crate) fn serving(
        &self,
        node: Node,
        out: Out,
        lookups: Lookups,
        certificates: crate::expiry::OwnCertificates,
    ) {
        let _ = self.node.set(Served { node, out, lookups });
        let _ = self.certificates.set(certificates);
        self.phase.store(Phase::Serving as u8, Ordering::SeqCst);
        // The next scrape shows the node, not what was rendered before it ran.
        *lock(&self.metrics_rendering) = None;
    }

    /// The node is stopping: health checks fail from now on.
    pub(crate) fn stopping(&self) {
        self.phase.store(Phase::Stopping as u8, Ordering::SeqCst);
    }

    /// Counts a 401, and logs it unless a line was logged in the last second: a client without a certificate pipelining requests
    /// (with 60 KB methods) had written 120 MB of warnings in half a second.
    fn unauthorized(&self) {
        let c = &self.connections;
        let total = c.unauthorized.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(since) = c.unauthorized_logged.due() else {
            return;
        };
        tracing::warn!(
            target: TARGET,
            "operations service: {since} request(s) for /metrics or /logspec refused (401) \
             since the last such line ({total} in all): a valid client certificate is needed"
        );
    }

    /// The answer to `/metrics` asked for at `now`: the last rendering if it was made less
    /// than [`METRICS_FRESH`] before (counted in `metrics_cached`), else a new one. The
    /// lock is held while rendering, so that requests arriving together render once: one
    /// waits at most a rendering (about 150 µs), at most 10 times a second. The rendering
    /// stays on the async worker: `spawn_blocking` would add a thread hand-off to each one
    /// to spare the workers at most 1.5 ms a second.
    fn metrics(&self, now: Instant) -> Response<Full<Bytes>> {
        let mut last = lock(&self.metrics_rendering);
        let r = match &mut *last {
            // A rendering made after `now` (by a request that took the lock first) is fresh
            // too.
            Some(r) if now.saturating_duration_since(r.at) < METRICS_FRESH => {
                self.connections
                    .metrics_cached
                    .fetch_add(1, Ordering::Relaxed);
                r
            }
            last => last.insert(self.render_metrics(now)),
        };
        let mut response = Response::new(Full::new(r.body.clone()));
        *response.status_mut() = r.status;
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, r.content_type.clone());
        response
    }

    /// Reads every metric now and encodes them.
    fn render_metrics(&self, at: Instant) -> Rendering {
        let mut registry = registry(self.node.get());
        if let Some(certs) = self.certificates.get() {
            own_certificates(&mut registry, certs);
        }
        operations_connections(&mut registry, &self.connections);
        build_info(&mut registry);
        // The classic text format, as a Fabric peer serves it (client_golang without
        // OpenMetrics): a counter's samples keep its name, `gossip_comm_messages_sent`,
        // where OpenMetrics would make Prometheus store `..._total`, and dashboards
        // written for peers would find nothing.
        let encoder = prometheus::TextEncoder::new();
        let mut text = Vec::new();
        let (status, content_type, body) = match encoder.encode(&registry.gather(), &mut text) {
            Ok(()) => (StatusCode::OK, encoder.format_type(), Bytes::from(text)),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                Bytes::from_static(b"metrics could not be encoded\n"),
            ),
        };
        Rendering {
            at,
            status,
            content_type: hyper::header::HeaderValue::from_str(content_type)
                .unwrap_or(hyper::header::HeaderValue::from_static("text/plain")),
            body,
        }
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Stopping,
        }
    }
}

/// TLS for the operations service (Fabric's `operations.tls.*`), PEM.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpsTls {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    /// CAs that clients' certificates must chain to; empty: no client certificate asked
    /// for, so no client can open `/metrics` or `/logspec` (as on a Fabric peer).
    pub(crate) client_ca_pem: Vec<u8>,
    /// Whether TLS refuses a client without a certificate (`clientAuthRequired`); if not,
    /// one that is given is still verified (Go's `VerifyClientCertIfGiven`).
    pub(crate) client_cert_required: bool,
}

impl OpsTls {
    /// The rustls server configuration, or what is wrong with the material.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        // The transport's policy (aws-lc-rs, AES-128-GCM first), so both endpoints agree.
        let provider = Arc::new(fabric_gossip_tonic::tls_crypto_provider());
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| format!("key: {e}"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if self.client_ca_pem.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&self.client_ca_pem) {
                roots
                    .add(ca.map_err(|e| format!("client CA: {e}"))?)
                    .map_err(|e| format!("client CA: {e}"))?;
            }
            let mut verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            if !self.client_cert_required {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The paths the operations service answers, as its start line names them: `/metrics`
/// only with a metrics provider (a core.yaml's `metrics.provider: disabled` answers it
/// 404, which the line had still named: a day-2 trial).
fn served_paths(metrics: bool) -> &'static str {
    if metrics {
        "/metrics, /healthz, /version, /logspec"
    } else {
        "/healthz, /version, /logspec; /metrics off: metrics.provider is not prometheus"
    }
}

/// Binds `addr` and serves in a background task (over TLS with `tls`); the address actually
/// bound.
pub(crate) async fn start(
    addr: SocketAddr,
    state: Arc<State>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let paths = served_paths(state.metrics);
    tokio::spawn(accept_loop(listener, state, tls.map(TlsAcceptor::from)));
    tracing::info!(target: TARGET, "operations service on {scheme}://{bound} ({paths})");
    Ok(bound)
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(Slots::new(state.clone()));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(target: TARGET, "operations service: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Taken after `accept`, so that a new connection can evict one that waits.
        let conn = slots.admit().await;
        tokio::spawn(serve_connection(
            tcp,
            conn,
            slots.clone(),
            state.clone(),
            tls.clone(),
        ));
    }
}

/// One connection, until it ends, is evicted, waits too long for a request, or reaches
/// [`CONNECTION_LIFETIME`]; its slot is freed when this returns.
async fn serve_connection(
    tcp: TcpStream,
    conn: Arc<Conn>,
    slots: Arc<Slots>,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
) {
    let _slot = SlotGuard {
        slots: slots.clone(),
        id: conn.id,
    };
    let tcp = Watched {
        tcp,
        conn: conn.clone(),
        linger: None,
    };
    let serve = async {
        match tls {
            None => serve_io(tcp, state.clone(), conn.clone(), Access::Plaintext).await,
            Some(acceptor) => match acceptor.accept(tcp).await {
                Ok(stream) => {
                    // The verifier checked any certificate presented against the client
                    // CAs; one held here is a verified one.
                    let access = match stream.get_ref().1.peer_certificates() {
                        Some(c) if !c.is_empty() => Access::VerifiedClient,
                        _ => Access::Anonymous,
                    };
                    serve_io(stream, state.clone(), conn.clone(), access).await;
                }
                Err(e) => {
                    tracing::debug!(target: TARGET, "operations service: TLS: {e}");
                }
            },
        }
    };
    // The TLS handshake counts against the connection's lifetime too.
    let mut serve = std::pin::pin!(tokio::time::timeout(CONNECTION_LIFETIME, serve));
    let mut first = true;
    let serve = std::future::poll_fn(|cx| {
        let done = serve.as_mut().poll(cx);
        if std::mem::take(&mut first) {
            // It has read what had come (a request there is being answered): it may be
            // evicted from now on.
            conn.polled();
        }
        done
    });
    tokio::select! {
        _ = serve => {}
        // Counted and logged by `Slots::admit`.
        () = conn.evict.notified() => {}
        () = conn.request_deadline() => {
            state.connections.request_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: TARGET,
                "operations service: connection closed: no complete request within {REQUEST_TIMEOUT:?}"
            );
        }
    }
    // Dropping the socket here closes it, whichever way the connection ended.
}

/// Who is asking, for the paths a Fabric peer's operations service guards over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// No TLS: every path is open (Fabric's too).
    Plaintext,
    /// TLS, no client certificate: `/metrics` and `/logspec` answer 401.
    Anonymous,
    /// TLS with a client certificate verified against the client CAs.
    VerifiedClient,
}

async fn serve_io<I>(io: I, state: Arc<State>, conn: Arc<Conn>, access: Access)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(req, &state, &conn, access).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// The connections held, at most [`MAX_CONNECTIONS`].
///
/// A connection holds its slot from `accept`, but while it *waits* (for its TLS handshake,
/// for the rest of its request's headers or body, for the next request on a kept-alive
/// connection) it does not hold it against newcomers: a new connection over the cap evicts
/// one that waits, see [`Slots::victim`]. A connection being *answered* (a complete
/// request, until hyper has taken the whole response) is never evicted, nor one whose task
/// has not run yet (when it runs, it reads a request already sent and is answering it
/// before anything can evict it, however fast a flood is accepted); both last
/// microseconds, so silent sockets and half-sent requests cannot keep a health check out.
/// The old code took a slot before `accept` and held it up to 10 s: 32 idle sockets kept
/// every request out for that long.
struct Slots {
    state: Arc<State>,
    table: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Wakes the accept loop when a slot is freed or a connection starts to wait.
    freed: Arc<Notify>,
    /// When evictions were last logged.
    logged: Throttle,
}

/// One connection's entry in [`Slots`].
struct Conn {
    id: u64,
    phase: Mutex<ConnPhase>,
    /// A byte came from the remote (a TLS handshake or a request under way).
    spoke: AtomicBool,
    /// A request body was refused: the connection closes after its answer, reading what
    /// the client still sends for a moment first (see [`LINGER`]).
    linger: AtomicBool,
    /// Closes the connection (it was evicted).
    evict: Notify,
    /// [`Slots::freed`].
    freed: Arc<Notify>,
}

/// Whether a connection is being answered, or since when it waits for a request.
#[derive(Clone, Copy, Debug)]
enum ConnPhase {
    /// Accepted then, its task not yet run.
    Accepted(Instant),
    Waiting(Instant),
    /// Requests being answered (hyper answers one at a time on a connection; a count
    /// anyway, so that the phase cannot go wrong).
    Answering(u32),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slots {
    fn new(state: Arc<State>) -> Slots {
        Slots {
            state,
            table: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            freed: Arc::new(Notify::new()),
            logged: Throttle::default(),
        }
    }

    /// A slot for a connection just accepted: a free one, else the slot of the connection
    /// that has waited longest for a request (evicted), else, when every connection is
    /// being answered, the first slot freed.
    async fn admit(&self) -> Arc<Conn> {
        loop {
            {
                let mut table = lock(&self.table);
                if table.len() >= MAX_CONNECTIONS
                    && let Some(victim) = Self::victim(&table).and_then(|id| table.remove(&id))
                {
                    victim.evict.notify_one();
                    self.evicted();
                }
                if table.len() < MAX_CONNECTIONS {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let conn = Arc::new(Conn {
                        id,
                        phase: Mutex::new(ConnPhase::Accepted(Instant::now())),
                        spoke: AtomicBool::new(false),
                        linger: AtomicBool::new(false),
                        evict: Notify::new(),
                        freed: self.freed.clone(),
                    });
                    table.insert(id, conn.clone());
                    return conn;
                }
            }
            // Every connection is being answered or has yet to run: a slot comes soon.
            // `notify_one` keeps a wake-up given while nobody waited: none is lost.
            self.freed.notified().await;
        }
    }

    /// The connection to evict, of those waiting for a request: one that has sent no byte
    /// for [`FIRST_BYTES_GRACE`] since it began to wait, then one that has sent bytes (a
    /// TLS handshake or a request under way: a legitimate client, unless the flood sends
    /// bytes too), then one still within its grace; of each, the one that has waited
    /// longest first. None while only connections being answered are left, or while the
    /// best has sent bytes or is within its grace and connections not yet run may turn
    /// out silent.
    ///
    /// Without the grace, a flood whose sockets each send a byte at a time made every new
    /// client the first evicted, in the moment between its connection and its request:
    /// with 500 such sockets, 1 health check in 21 was answered (an attack, 2026-12-02).
    fn victim(table: &BTreeMap<u64, Arc<Conn>>) -> Option<u64> {
        let now = Instant::now();
        let mut unknown = false;
        let (class, _, id) = table
            .values()
            .filter_map(|c| match *lock(&c.phase) {
                ConnPhase::Waiting(since) => {
                    let spoke = c.spoke.load(Ordering::Relaxed);
                    let class = match (spoke, now.duration_since(since) >= FIRST_BYTES_GRACE) {
                        (false, true) => 0u8,
                        (true, _) => 1,
                        (false, false) => 2,
                    };
                    Some((class, since, c.id))
                }
                ConnPhase::Accepted(_) => {
                    unknown = true;
                    None
                }
                ConnPhase::Answering(_) => None,
            })
            .min()?;
        (class == 0 || !unknown).then_some(id)
    }

    /// Counts an eviction, and logs it unless a line was logged in the last second (a
    /// flood makes a line a second, not one per socket).
    fn evicted(&self) {
        let total = self
            .state
            .connections
            .evicted
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let Some(since) = self.logged.due() else {
            return;
        };
        tracing::warn!(
            target: TARGET,
            "operations service: {since} connection(s) evicted since the last such line \
             ({total} in all): all {MAX_CONNECTIONS} slots were taken and they had not sent \
             a complete request (an idle-connection flood?)"
        );
    }
}

/// Frees a connection's slot when its task ends (it may have been evicted already).
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if lock(&self.slots.table).remove(&self.id).is_some() {
            self.slots.freed.notify_one();
        }
    }
}

impl Conn {
    /// The connection is being answered until the guard is dropped.
    fn answering(self: &Arc<Self>) -> Answering {
        let mut phase = lock(&self.phase);
        *phase = match *phase {
            ConnPhase::Accepted(_) | ConnPhase::Waiting(_) => ConnPhase::Answering(1),
            ConnPhase::Answering(n) => ConnPhase::Answering(n + 1),
        };
        Answering(self.clone())
    }

    /// Its task has run once.
    fn polled(&self) {
        let mut phase = lock(&self.phase);
        if let ConnPhase::Accepted(since) = *phase {
            *phase = ConnPhase::Waiting(since);
            drop(phase);
            self.freed.notify_one();
        }
    }

    /// Returns once the connection has waited [`REQUEST_TIMEOUT`] for a request.
    async fn request_deadline(&self) {
        loop {
            let at = match *lock(&self.phase) {
                ConnPhase::Accepted(since) | ConnPhase::Waiting(since) => since + REQUEST_TIMEOUT,
                // Looked at again later: it cannot wait before then.
                ConnPhase::Answering(_) => Instant::now() + REQUEST_TIMEOUT,
            };
            if at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// A connection's socket, noting when the first byte comes, and closing it with a
/// lingering close when its request's body was refused.
struct Watched {
    tcp: TcpStream,
    conn: Arc<Conn>,
    /// The lingering close under way.
    linger: Option<Linger>,
}

/// A lingering close (see [`LINGER`]): the write side is shut down, so the client sees the
/// answer end, and what it sends is read and dropped until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] have come.
struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    write_shut: bool,
    drained: u64,
}

impl Watched {
    /// Drives the lingering close; ready when the socket may be closed.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use tokio::io::{AsyncRead, AsyncWrite};
        let linger = self.linger.get_or_insert_with(|| Linger {
            until: Box::pin(tokio::time::sleep(LINGER)),
            write_shut: false,
            drained: 0,
        });
        if !linger.write_shut {
            std::task::ready!(Pin::new(&mut self.tcp).poll_shutdown(cx))?;
            linger.write_shut = true;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            if linger.drained >= LINGER_BYTES || linger.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut read = tokio::io::ReadBuf::new(&mut buf);
            match Pin::new(&mut self.tcp).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => linger.drained += read.filled().len() as u64,
                // Closed by the client, or reset: nothing more to wait for.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before && !self.conn.spoke.load(Ordering::Relaxed) {
            self.conn.spoke.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Under TLS, after the TLS layer has sent its close_notify.
        if self.conn.linger.load(Ordering::Relaxed) {
            return self.poll_linger(cx);
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Held while a connection is being answered: from a complete request until hyper has
/// taken the whole response (it drops the body then).
struct Answering(Arc<Conn>);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut phase = lock(&self.0.phase);
        *phase = match *phase {
            ConnPhase::Answering(n) if n > 1 => ConnPhase::Answering(n - 1),
            _ => ConnPhase::Waiting(Instant::now()),
        };
        drop(phase);
        // It may be evicted now, if the accept loop waits for a slot.
        self.0.freed.notify_one();
    }
}

/// A response's body, holding its connection in the answering phase until hyper has taken
/// it whole.
struct Answer {
    body: Full<Bytes>,
    _answering: Answering,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        hyper::body::Body::poll_frame(Pin::new(&mut self.body), cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

/// Largest request body read: a `/logspec` request is a few dozen bytes, and no other
/// request has one.
const MAX_BODY: usize = 4096;

/// Routes one request of `conn`, which is answering it from when the request is complete
/// (a `PUT`'s body read) until the response has been taken.
async fn handle(
    req: Request<Incoming>,
    state: &State,
    conn: &Arc<Conn>,
    access: Access,
) -> Response<Answer> {
    let declared = hyper::body::Body::size_hint(req.body()).lower();
    let path = req.uri().path();
    let (response, answering) = if declared > MAX_BODY as u64 {
        // Answered before the body is read (and without `100 Continue`: a client that
        // asks first does not send it).
        let answering = conn.answering();
        (body_too_large(conn), answering)
    } else if access == Access::Anonymous && (path == "/metrics" || path == "/logspec") {
        // Fabric's `RequireCert` on the paths it registers as secure when TLS is on:
        // scraping and changing the log levels need a verified client certificate even
        // where TLS lets a client without one in (for /healthz and /version).
        state.unauthorized();
        let answering = conn.answering();
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        (r, answering)
    } else if path == "/logspec" {
        let method = req.method().clone();
        let body = if method == Method::PUT {
            // Still waiting for the request while its body comes.
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => Some(Ok(b.to_bytes())),
                // A chunked body: its size shows only as it comes.
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    let answering = conn.answering();
                    return body_too_large(conn).map(|body| Answer {
                        body,
                        _answering: answering,
                    });
                }
                Err(e) => Some(Err(e.to_string())),
            }
        } else {
            None
        };
        let answering = conn.answering();
        (logspec(&method, body), answering)
    } else {
        let answering = conn.answering();
        (respond(req.method(), req.uri().path(), state), answering)
    };
    response.map(|body| Answer {
        body,
        _answering: answering,
    })
}

/// `413 Payload Too Large` for a request body over [`MAX_BODY`], closing the connection
/// after it (the body is not read, so the next request could not be found); the close
/// lingers (see [`LINGER`]) so that a client still sending its body gets this answer
/// rather than a reset. Fabric's Go server would answer such a request, not cut it off.
fn body_too_large(conn: &Conn) -> Response<Full<Bytes>> {
    conn.linger.store(true, Ordering::Relaxed);
    let mut r = json_reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        &json!({"Error": format!("request body over {MAX_BODY} bytes")}),
    );
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// Fabric's `/logspec`: GET `{"spec":SPEC}`; PUT `{"spec":SPEC}` (`body`, read) changes
/// the log filter of the running node (204); a bad spec or body, or another method, is
/// 400 with `{"error":REASON}`, as Fabric's handler answers (its key is lower-case here,
/// capitalised in `/version`'s answers; tools parsing one or the other find what a peer
/// gives). A body without `spec` is the empty spec, Fabric's default level.
fn logspec(method: &Method, body: Option<Result<Bytes, String>>) -> Response<Full<Bytes>> {
    let bad = |e: String| json_reply(StatusCode::BAD_REQUEST, &json!({"error": e}));
    match *method {
        Method::GET => json_reply(
            StatusCode::OK,
            &json!({"spec": crate::logging::current_spec().unwrap_or_default()}),
        ),
        Method::PUT => {
            let body = match body {
                Some(Ok(b)) => b,
                Some(Err(e)) => return bad(format!("cannot read the request: {e}")),
                None => return bad("cannot read the request".into()),
            };
            let spec = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .filter(serde_json::Value::is_object)
                .and_then(|v| match v.get("spec") {
                    None => Some(String::new()),
                    Some(s) => s.as_str().map(str::to_owned),
                });
            let Some(spec) = spec else {
                return bad(r#"expected {"spec":"LOGGER=LEVEL:..."}"#.into());
            };
            match crate::logging::set_spec(&spec) {
                Ok(()) => {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    *r.status_mut() = StatusCode::NO_CONTENT;
                    r
                }
                Err(e) => bad(e.to_string()),
            }
        }
        ref m => bad(format!("invalid request method: {m}")),
    }
}

/// Every path but `/logspec`, answered as a Fabric peer's operations service answers: a
/// method other than GET is 405 with no body on `/healthz` (fabric-lib-go's checker),
/// 400 with `{"Error":REASON}` on `/version`; `/metrics` answers any method, as
/// Prometheus's handler does; an unknown path is Go's 404.
fn respond(method: &Method, path: &str, state: &State) -> Response<Full<Bytes>> {
    if method != Method::GET {
        match path {
            "/healthz" => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                return r;
            }
            "/version" => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"Error": format!("invalid request method: {method}")}),
                );
            }
            _ => {}
        }
    }
    match path {
        "/healthz" => match state.phase() {
            Phase::Serving => json_reply(StatusCode::OK, &json!({"status": "OK", "time": now()})),
            phase => {
                let reason = if phase == Phase::Starting {
                    "the gossip server is starting"
                } else {
                    "the gossip server is stopping"
                };
                json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({
                        "status": "Service Unavailable",
                        "time": now(),
                        "failed_checks": [{"component": "gossip", "reason": reason}],
                    }),
                )
            }
        },
        "/version" => json_reply(
            StatusCode::OK,
            &json!({"Version": env!("CARGO_PKG_VERSION")}),
        ),
        "/metrics" if state.metrics => state.metrics(Instant::now()),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found\n".into(),
        ),
    }
}

/// The time of a health check's answer, as fabric-lib-go's checker writes it (Go's
/// `time.Time` in JSON: RFC 3339 with nanoseconds).
fn now() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// One metric's value: a counter, a gauge, or a counter family by one label.
enum Metric<'a> {
    Counter(u64),
    Gauge(u64),
    Family(&'a str, Vec<(&'a str, u64)>),
}

/// Registers `name` with its value. The names and labels are this file's constants, so a
/// refusal (an invalid or repeated name) is a bug the tests catch; it is logged, not fatal.
fn register(r: &mut Registry, name: &str, help: &str, value: Metric<'_>) {
    let registered = match value {
        Metric::Counter(v) => IntCounter::new(name, help).and_then(|c| {
            c.inc_by(v);
            r.register(Box::new(c))
        }),
        Metric::Gauge(v) => IntGauge::new(name, help).and_then(|g| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            r.register(Box::new(g))
        }),
        Metric::Family(label, values) => IntCounterVec::new(Opts::new(name, help), &[label])
            .and_then(|f| {
                for (l, v) in values {
                    f.with_label_values(&[l]).inc_by(v);
                }
                r.register(Box::new(f))
            }),
    };
    if let Err(e) = registered {
        tracing::error!(target: TARGET, "metric {name} not served: {e}");
    }
}

/// The seconds left until each of the node's own certificates expires, by certificate.
fn own_certificates(r: &mut Registry, certs: &crate::expiry::OwnCertificates) {
    let left = certs.seconds_left(std::time::SystemTime::now());
    if left.is_empty() {
        return;
    }
    let registered = IntGaugeVec::new(
        Opts::new(
            "fabric_gossip_cli_certificate_expiry_seconds",
            "Seconds until the node's own certificate expires (0 once expired), by \
             certificate: enrollment, server_tls, client_tls",
        ),
        &["certificate"],
    )
    .and_then(|f| {
        for (certificate, seconds) in left {
            f.with_label_values(&[certificate.as_str()])
                .set(i64::try_from(seconds).unwrap_or(i64::MAX));
        }
        r.register(Box::new(f))
    });
    if let Err(e) = registered {
        tracing::error!(target: TARGET, "certificate expiry metric not served: {e}");
    }
}

/// `fabric_gossip_build_info{version}` 1, Prometheus's convention for telling which build
/// each target runs, where a Fabric peer serves `fabric_version{version}` (not served here:
/// dashboards counting Fabric peers by version would count this node as a Fabric release).
fn build_info(r: &mut Registry) {
    let registered = IntGaugeVec::new(
        Opts::new(
            "fabric_gossip_build_info",
            "Always 1; its version label is this fabric-gossip build's (as /version gives it)",
        ),
        &["version"],
    )
    .and_then(|g| {
        g.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(g))
    });
    if let Err(e) = registered {
        tracing::error!(target: TARGET, "build info metric not served: {e}");
    }
}

/// What the operations service did with its own connections (served before the node runs
/// too).
fn operations_connections(r: &mut Registry, c: &ConnectionCounters) {
    register(
        r,
        "fabric_gossip_cli_operations_connections_evicted",
        "Operations-service connections closed to make room for a new one: every slot was \
         taken and they had not sent a complete request (idle or half-sent)",
        Metric::Counter(c.evicted.load(Ordering::Relaxed)),
    );
    register(
        r,
        "fabric_gossip_cli_operations_request_timeouts",
        &format!(
            "Operations-service connections closed because no complete request came within \
             {} s (TLS handshake included; also idle kept-alive connections)",
            REQUEST_TIMEOUT.as_secs()
        ),
        Metric::Counter(c.request_timeouts.load(Ordering::Relaxed)),
    );
    register(
        r,
        "fabric_gossip_cli_operations_requests_unauthorized",
        "Requests for /metrics or /logspec over TLS without a verified client certificate \
         (answered 401)",
        Metric::Counter(c.unauthorized.load(Ordering::Relaxed)),
    );
    register(
        r,
        "fabric_gossip_cli_operations_metrics_cached",
        &format!(
            "Scrapes of /metrics answered with the last rendering, made less than {} ms \
             before, rather than a new one (renderings are at most one per {} ms)",
            METRICS_FRESH.as_millis(),
            METRICS_FRESH.as_millis()
        ),
        Metric::Counter(c.metrics_cached.load(Ordering::Relaxed)),
    );
}

/// The `prometheus` crate's process metrics, with `process_cpu_seconds_total` to the
/// kernel's tick (10 ms) as client_golang serves it on a Fabric peer: the crate rounds it
/// down to whole seconds, so a `rate()` over an idle node's 1–2 % of a CPU read as steps of
/// a second or nothing (an operator's trial).
#[cfg(target_os = "linux")]
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

#[cfg(target_os = "linux")]
impl prometheus::core::Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.0.collect();
        let cpu = procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .map(|s| (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64);
        if let Ok(seconds) = cpu
            && let Some(f) = families
                .iter_mut()
                .find(|f| f.name() == "process_cpu_seconds_total")
        {
            for m in f.mut_metric() {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(seconds);
                m.set_counter(counter);
            }
        }
        families
    }
}

/// The metrics of `node` now (none before it runs).
pub(crate) fn registry(served: Option<&Served>) -> Registry {
    use Metric::{Counter as C, Family as F, Gauge as G};
    let mut r = Registry::new();
    // The process's own figures (start time, CPU, resident memory, open and maximum file
    // descriptors, threads), which client_golang serves on every Fabric peer and generic
    // alerts (restarts, descriptor exhaustion) rely on; Linux only.
    #[cfg(target_os = "linux")]
    if let Err(e) = r.register(Box::new(ProcessMetrics(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))) {
        tracing::error!(target: TARGET, "process metrics not served: {e}");
    }
    let Some(Served { node, out, lookups }) = served else {
        return r;
    };
    let s = node.stats();
    let d = node.driver_stats();
    let lost = lookups.dropped();
    let reasons: Vec<(&str, u64)> = HandshakeError::LABELS
        .iter()
        .copied()
        .zip(s.handshake_failures.iter().copied())
        .collect();
    let connections = node.connections().len() as u64;
    let identities = node.identity_count() as u64;
    let metrics = [
        // Fabric's names (gossip/metrics/metrics.go).
        (
            "gossip_comm_messages_sent",
            "Number of messages sent",
            C(s.sent),
        ),
        (
            "gossip_comm_messages_received",
            "Number of messages received",
            C(s.received),
        ),
        (
            "gossip_comm_overflow_count",
            "Number of outgoing queue buffer overflows",
            C(s.dropped_overflow),
        ),
        // This implementation's own.
        (
            "gossip_comm_connections_open",
            "Connections registered now (one per remote PKI-ID)",
            G(connections),
        ),
        (
            "gossip_comm_connections_opened",
            "Connections registered after a successful handshake",
            C(s.connections_opened),
        ),
        (
            "gossip_comm_connections_closed",
            "Connections closed, for any reason",
            C(s.connections_closed),
        ),
        (
            "gossip_comm_handshakes_completed",
            "Handshakes that authenticated the remote peer",
            C(s.handshakes_ok),
        ),
        (
            "gossip_comm_handshake_failures",
            "Handshakes refused or failed, by reason",
            F("reason", reasons),
        ),
        (
            "gossip_comm_messages_dropped",
            "Messages dropped, by cause (overflow is also gossip_comm_overflow_count)",
            F(
                "cause",
                vec![
                    ("overflow", s.dropped_overflow),
                    ("connection_closed", s.dropped_on_close),
                    // An ack or response given after its connection closed.
                    ("answer_after_close", s.answers_after_close),
                    // Handed to the driver, unconfirmed at the close: maybe delivered.
                    ("unconfirmed_at_close", s.unconfirmed_on_close),
                    ("no_connection", s.dropped_no_connection),
                    ("subscription_overflow", s.dropped_subscription_overflow),
                    ("stopped", s.dropped_on_stop),
                    ("unrouted", s.unrouted),
                    // The CLI's own: sends to an endpoint whose PKI-ID was to be learnt.
                    ("unauthenticated", lost.unauthenticated),
                    ("awaiting_pki", lost.awaiting_pki),
                    ("empty", s.empty_messages),
                    // Read from a stream, not yet handed to the core when it closed.
                    ("unread_at_close", d.unread_at_close),
                    // Queued for a subscription, or held by its `Incoming`, when it ended.
                    (
                        "unsubscribed",
                        s.dropped_on_unsubscribe + d.dropped_with_incoming,
                    ),
                ],
            ),
        ),
        (
            "gossip_comm_envelopes_refused",
            "Received envelopes refused before use, by reason; each closed its connection",
            F(
                "reason",
                vec![("oversized", s.oversized), ("malformed", s.malformed)],
            ),
        ),
        (
            "gossip_comm_read_pauses",
            "Times reading a stream was paused because a subscriber was full (back-pressure)",
            C(s.read_pauses),
        ),
        (
            "gossip_comm_retired_closed_unread",
            "Replaced connections closed while reading them was paused, their unread messages discarded (the peer replaced the connection twice before we read)",
            C(s.retired_closed_unread),
        ),
        (
            "gossip_comm_presumed_dead",
            "PresumedDead notifications: sends that could not reach a peer (and peers named by endpoint whose PKI-ID could not be learnt)",
            C(s.presumed_dead + lookups.presumed_dead()),
        ),
        (
            "gossip_comm_identity_switches",
            "Peers that reconnected with a new identity of the same organization",
            C(s.identity_switches),
        ),
        (
            "gossip_comm_identities_shared",
            "Identities the membership layer shared with comm (alive messages, the identity pull), so that a peer's new certificate is taken as an identity switch",
            C(s.identities_shared),
        ),
        (
            "gossip_comm_identities_held",
            "Identities comm holds now, its own included (bounded by the identity store's capacity)",
            G(identities),
        ),
        (
            "gossip_comm_identities_evicted",
            "Identities the full identity store let go to make room for a newer one (the one held longest with no connection)",
            C(s.identities_evicted),
        ),
        (
            "gossip_comm_identities_purged_unused",
            "Identities purged because nothing used them for the usage threshold (Fabric's identity mapper, one hour), their connections closed",
            C(s.identities_purged_unused),
        ),
        (
            "gossip_comm_probes_answered",
            "Inbound probes (Ping and probing handshakes) answered",
            C(s.probed),
        ),
        (
            "gossip_comm_crossing_dials",
            "Crossing dials resolved to one connection",
            C(s.crossings),
        ),
        (
            "gossip_comm_acks_unmatched",
            "Acks that matched no pending SendWithAck",
            C(s.acks_unmatched),
        ),
        (
            "gossip_comm_notifications_dropped",
            "Notifications and events dropped because nobody drained them, by kind",
            F(
                "kind",
                vec![
                    ("presumed_dead", s.presumed_dead_dropped),
                    ("presumed_dead_stream", d.presumed_dead_dropped),
                    ("identity_switch_stream", d.identity_switch_dropped),
                    ("core_event", s.events_dropped),
                    ("event_tap", d.events_dropped),
                ],
            ),
        ),
        (
            "gossip_comm_dials",
            "Outbound TCP (and TLS) connection attempts, by result",
            F(
                "result",
                vec![("ok", d.dials_ok), ("failed", d.dials_failed)],
            ),
        ),
        (
            "gossip_comm_dial_retries",
            "Connection attempts a dial made again after its previous one failed (grpc-go's back-off within the dial timeout)",
            C(s.dial_retries),
        ),
        (
            "gossip_comm_write_failures",
            "Writes that found their stream broken",
            C(d.write_failures),
        ),
        (
            "gossip_comm_writes_after_end",
            "Writes to an RPC the remote had already ended (its status is reported instead)",
            C(d.writes_after_end),
        ),
        (
            "gossip_comm_inbound_connections",
            "Inbound TCP connections by what became of them (admission control)",
            F(
                "outcome",
                vec![
                    ("accepted", d.inbound_accepted),
                    ("refused", d.inbound_refused),
                    ("evicted", d.inbound_evicted),
                    ("setup_timeout", d.inbound_setup_timeouts),
                    ("tls_failed", d.inbound_tls_failures),
                ],
            ),
        ),
        (
            "gossip_comm_inbound_open",
            "Inbound TCP connections open now",
            G(d.inbound_open),
        ),
        // Fabric's gRPC server pair, which peers' dashboards chart: opened minus closed is
        // the connections open now. Fabric counts a connection once its transport is up
        // (after TLS); these count it from its admission, TLS failures included.
        (
            "grpc_comm_conn_opened",
            "gRPC connections opened. Open minus closed is the active number of connections.",
            C(d.inbound_accepted),
        ),
        (
            "grpc_comm_conn_closed",
            "gRPC connections closed. Open minus closed is the active number of connections.",
            C(d.inbound_accepted.saturating_sub(d.inbound_open)),
        ),
        (
            "gossip_comm_inbound_pending",
            "Inbound connections open now that have not yet authenticated a stream",
            G(d.inbound_pending),
        ),
        (
            "gossip_comm_accept_errors",
            "accept() failures (such as running out of file descriptors), each backed off",
            C(d.accept_errors),
        ),
        (
            "gossip_comm_incomplete_bytes",
            "Bytes held now for messages not yet received whole (node-wide budget)",
            G(d.incomplete_bytes),
        ),
        (
            "gossip_comm_incomplete_bytes_peak",
            "Most bytes ever held at once for messages not yet received whole",
            G(d.incomplete_bytes_peak),
        ),
        (
            "gossip_comm_incomplete_budget_waits",
            "Times a stream waited for room in the node-wide budget for incomplete messages",
            C(d.incomplete_budget_waits),
        ),
        (
            "gossip_comm_stalled_messages",
            "Half-sent messages whose stream was reset after the stall deadline",
            C(d.stalled_messages),
        ),
        (
            "gossip_comm_unfinished_closes",
            "Inbound connections closed because a stream closed by the node was not finished in time",
            C(d.unfinished_closes),
        ),
        (
            "gossip_comm_bad_framing",
            "Streams closed for gRPC framing that is not a gossip message (bad flag, cut message)",
            C(d.bad_framing),
        ),
        (
            "fabric_gossip_cli_output_lines_dropped",
            "JSON lines of `node` not printed because stdout was not read",
            C(out.dropped()),
        ),
    ];
    for (name, help, value) in metrics {
        register(&mut r, name, help, value);
    }
    if let Some((alive, dead, soonest, counters)) =
        node.with_layer(|d: &fabric_gossip_discovery::Discovery| {
            let alive = d.members();
            let soonest = alive.iter().filter_map(|m| m.identity_expires).min();
            let counters = crate::membership::counters(d);
            (alive.len(), d.dead_members().len(), soonest, counters)
        })
    {
        // Every counter of the layer and its identity pull, under the `stats` command's
        // names, so that an operator can alert on refusals (forged signatures, impostors,
        // throttled requesters) as on comm's.
        for (prefix, what, list) in [
            ("fabric_gossip_membership_", "membership", &counters.layer),
            (
                "fabric_gossip_membership_certstore_",
                "membership.certstore",
                &counters.certstore,
            ),
        ] {
            for (name, value) in list {
                register(
                    &mut r,
                    &format!("{prefix}{name}"),
                    &format!("The membership layer's {name} (the stats command's {what}.{name})"),
                    C(*value),
                );
            }
        }
        if let Some(at) = soonest {
            let now = crate::expiry::node_now();
            register(
                &mut r,
                "fabric_gossip_cli_membership_identity_expiry_soonest_seconds",
                "Seconds until the first alive member's certificate expires (0 once expired): \
                 alert on it to renew before members are purged",
                G(at.saturating_duration_since(now).as_secs()),
            );
        }
        let membership = [
            // Fabric's name (gossip/metrics: MembershipMetrics.Total); Fabric labels it by
            // channel, and this node has none.
            (
                "gossip_membership_total_peers_known",
                "Total known alive peers",
                G(alive as u64),
            ),
            (
                "gossip_membership_dead_peers_known",
                "Members declared dead and still remembered (reconnect targets)",
                G(dead as u64),
            ),
            (
                "fabric_gossip_cli_membership_events_dropped",
                "Membership events not printed because they were not taken in time",
                C(d.layer_events_dropped),
            ),
        ];
        for (name, help, value) in membership {
            register(&mut r, name, help, value);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start line names the paths served: not `/metrics` when metrics are off, which
    /// then answers 404.
    #[test]
    fn the_start_line_names_metrics_only_when_they_are_served() {
        for metrics in [true, false] {
            let st = State::new(metrics);
            let status = respond(&Method::GET, "/metrics", &st).status();
            assert_eq!(status == StatusCode::OK, metrics);
            let named = served_paths(metrics).starts_with("/metrics");
            assert_eq!(named, metrics, "{}", served_paths(metrics));
        }
    }

    /// `process_cpu_seconds_total` to the tick: the `prometheus` crate's collector serves
    /// whole seconds, `floor` of what `/proc` says, which is below the ticks read before it
    /// whenever they are not whole seconds (made so here by a bounded busy loop).
    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_time_is_served_to_the_tick_not_in_whole_seconds() {
        use prometheus::core::Collector;
        let tps = procfs::ticks_per_second();
        let ticks = || {
            let s = procfs::process::Process::myself()
                .and_then(|p| p.stat())
                .expect("/proc/self/stat");
            s.utime + s.stime
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut spin = 0u64;
        while ticks() < 5 || ticks() % tps == 0 {
            assert!(std::time::Instant::now() < deadline, "no CPU time to show");
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let before = ticks() as f64 / tps as f64;
        let families =
            ProcessMetrics(prometheus::process_collector::ProcessCollector::for_self()).collect();
        let after = ticks() as f64 / tps as f64;
        let served = families
            .iter()
            .find(|f| f.name() == "process_cpu_seconds_total")
            .and_then(|f| f.get_metric().first())
            .map(|m| m.get_counter().get_value())
            .expect("process_cpu_seconds_total");
        assert!(
            before <= served && served <= after,
            "{before} <= {served} <= {after}"
        );
    }

    #[test]
    fn healthz_follows_the_phase_and_metrics_follow_the_provider() {
        let st = State::new(false);
        let r = respond(&Method::GET, "/healthz", &st);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        st.phase.store(Phase::Serving as u8, Ordering::SeqCst);
        assert_eq!(
            respond(&Method::GET, "/healthz", &st).status(),
            StatusCode::OK
        );
        st.stopping();
        assert_eq!(
            respond(&Method::GET, "/healthz", &st).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // metrics.provider: disabled.
        assert_eq!(
            respond(&Method::GET, "/metrics", &st).status(),
            StatusCode::NOT_FOUND
        );
        // Other methods, as a Fabric peer answers them.
        assert_eq!(
            respond(&Method::POST, "/version", &st).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            respond(&Method::HEAD, "/healthz", &st).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            respond(&Method::DELETE, "/nowhere", &st).status(),
            StatusCode::NOT_FOUND
        );
        let r = logspec(&Method::POST, None);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = |r: Response<Full<Bytes>>| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let b = rt.block_on(r.into_body().collect()).expect("a full body");
            String::from_utf8(b.to_bytes().to_vec()).expect("utf-8")
        };
        assert_eq!(body(r), "{\"error\":\"invalid request method: POST\"}");
        let r = logspec(&Method::PUT, Some(Ok(Bytes::from_static(b"{\"spec\":5}"))));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(r).starts_with("{\"error\":"));
        let r = logspec(&Method::PUT, Some(Ok(Bytes::from_static(b"[]"))));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    /// A flood of scrapes renders the metrics at most once per [`METRICS_FRESH`] (each
    /// rendering cost about 150 µs of CPU, so pipelined scrapes took both cores); the first
    /// scrape and the first after the interval render anew, and answers from the last
    /// rendering are counted.
    #[test]
    fn metrics_are_rendered_at_most_once_per_interval() {
        const CACHED: &str = "fabric_gossip_cli_operations_metrics_cached";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let body = |r: Response<Full<Bytes>>| {
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                r.headers()[hyper::header::CONTENT_TYPE],
                prometheus::TEXT_FORMAT
            );
            rt.block_on(r.into_body().collect())
                .expect("a full body")
                .to_bytes()
        };
        let sample = |b: &Bytes| -> u64 {
            let text = std::str::from_utf8(b).expect("utf-8");
            text.lines()
                .find_map(|l| l.strip_prefix(CACHED)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{CACHED} in {text}"))
        };
        let st = State::new(true);
        let cached = || st.connections.metrics_cached.load(Ordering::Relaxed);

        // On a clock of the test's own: the first scrape renders.
        let t0 = Instant::now();
        let first = body(st.metrics(t0));
        assert_eq!((cached(), sample(&first)), (0, 0));
        // A thousand more within the interval get that rendering, counted.
        for i in 0..1000u32 {
            let again = body(st.metrics(t0 + METRICS_FRESH * i / 1000));
            assert!(again == first, "scrape {i}: not the first rendering");
        }
        assert_eq!(cached(), 1000);
        // The first scrape once the interval is over renders anew, and shows the count.
        let fresh = body(st.metrics(t0 + METRICS_FRESH));
        assert_eq!(sample(&fresh), 1000);
        assert_eq!(cached(), 1000);

        // Through the router, on the real clock: the renderings are at least the interval
        // apart, so `n` of them span at least (n - 1) intervals of the loop's time.
        const SCRAPES: u64 = 2000;
        let before = cached();
        let began = Instant::now();
        for _ in 0..SCRAPES {
            body(respond(&Method::GET, "/metrics", &st));
        }
        let took = began.elapsed();
        let rendered = SCRAPES - (cached() - before);
        let allowed = took.as_nanos() / METRICS_FRESH.as_nanos() + 1;
        assert!(
            u128::from(rendered) <= allowed,
            "{rendered} renderings for {SCRAPES} scrapes in {took:?}"
        );
    }

    /// A connection of a slot table, in `phase`, that has sent bytes or not.
    fn conn(id: u64, phase: ConnPhase, spoke: bool) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            phase: Mutex::new(phase),
            spoke: AtomicBool::new(spoke),
            linger: AtomicBool::new(false),
            evict: Notify::new(),
            freed: Arc::new(Notify::new()),
        })
    }

    /// Whether `n` has a wake-up stored.
    async fn notified(n: &Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, n.notified())
            .await
            .is_ok()
    }

    /// The connection evicted for a newcomer: one silent for its grace (exactly too), then
    /// one that has sent bytes, then one within its grace, of each the one waiting
    /// longest; never one being answered; and while a connection has yet to run, only a
    /// silent one.
    #[tokio::test(start_paused = true)]
    async fn the_connection_evicted_is_the_one_least_likely_to_be_a_client_s() {
        use ConnPhase::{Accepted, Answering, Waiting};
        let t = Instant::now();
        let ms = Duration::from_millis;
        let victim =
            |conns: &[Arc<Conn>]| Slots::victim(&conns.iter().map(|c| (c.id, c.clone())).collect());
        let silent_at_grace = conn(1, Waiting(t - FIRST_BYTES_GRACE), false);
        let spoke_long_ago = conn(2, Waiting(t - ms(5000)), true);
        let silent_within = conn(3, Waiting(t - ms(499)), false);
        let spoke_lately = conn(4, Waiting(t - ms(10)), true);
        let silent_longer = conn(5, Waiting(t - ms(700)), false);
        assert_eq!(victim(&[]), None);
        assert_eq!(
            victim(&[spoke_long_ago.clone(), silent_at_grace.clone()]),
            Some(1)
        );
        assert_eq!(
            victim(&[silent_at_grace.clone(), silent_longer.clone()]),
            Some(5)
        );
        assert_eq!(
            victim(&[silent_within.clone(), spoke_lately.clone()]),
            Some(4)
        );
        assert_eq!(
            victim(&[spoke_lately.clone(), spoke_long_ago.clone()]),
            Some(2)
        );
        assert_eq!(victim(std::slice::from_ref(&silent_within)), Some(3));
        // Being answered: never.
        assert_eq!(victim(&[conn(6, Answering(1), true)]), None);
        // A connection yet to run may turn out silent: only a silent one is evicted.
        let unknown = conn(7, Accepted(t - ms(5000)), false);
        assert_eq!(victim(std::slice::from_ref(&unknown)), None);
        assert_eq!(victim(&[unknown.clone(), spoke_long_ago]), None);
        assert_eq!(victim(&[unknown.clone(), silent_within]), None);
        assert_eq!(victim(&[unknown, silent_at_grace]), Some(1));
    }

    /// A connection waits for a complete request [`REQUEST_TIMEOUT`] at most, from its
    /// accept and again from each answer, and not while it is answered (two answers at
    /// once counted as two); its first poll makes it evictable and wakes the accept loop.
    #[tokio::test(start_paused = true)]
    async fn a_connection_waits_for_a_request_at_most_the_request_timeout_from_its_last_answer() {
        let ms = Duration::from_millis;
        let accepted = Instant::now();
        let c = conn(0, ConnPhase::Accepted(accepted), false);
        let waits = |limit| tokio::time::timeout(limit, c.request_deadline());
        assert!(waits(REQUEST_TIMEOUT - ms(1)).await.is_err());
        c.polled();
        assert!(matches!(*lock(&c.phase), ConnPhase::Waiting(t) if t == accepted));
        assert!(notified(&c.freed).await);
        c.polled();
        assert!(!notified(&c.freed).await);
        assert!(waits(ms(1)).await.is_ok());
        let first = c.answering();
        let second = c.answering();
        assert!(waits(REQUEST_TIMEOUT * 3).await.is_err());
        drop(first);
        assert!(matches!(*lock(&c.phase), ConnPhase::Answering(1)));
        assert!(waits(REQUEST_TIMEOUT * 3).await.is_err());
        assert!(notified(&c.freed).await);
        drop(second);
        let answered = Instant::now();
        assert!(matches!(*lock(&c.phase), ConnPhase::Waiting(t) if t == answered));
        assert!(waits(REQUEST_TIMEOUT - ms(1)).await.is_err());
        assert!(waits(ms(1)).await.is_ok());
    }

    /// A flood's warning is a line a second: the first event's, then none within that
    /// second, then one counting every event since the last line.
    #[test]
    fn a_throttled_warning_counts_the_events_since_its_last_line() {
        let throttle = Throttle::default();
        let t0 = crate::expiry::wall_now();
        assert_eq!(throttle.due_at(t0), Some(1));
        for _ in 0..3 {
            assert_eq!(throttle.due_at(t0 + Duration::from_millis(999)), None);
        }
        assert_eq!(throttle.due_at(t0 + Duration::from_secs(1)), Some(4));
    }

    /// A 401 and an eviction are each counted and logged with their count.
    #[test]
    fn a_refusal_and_an_eviction_are_counted_and_logged() {
        let st = State::new(true);
        let slots = Slots::new(st.clone());
        let log = crate::logging::tests::logged(|| {
            st.unauthorized();
            slots.evicted();
        });
        assert!(
            log.contains(
                "operations service: 1 request(s) for /metrics or /logspec refused (401) since \
                 the last such line (1 in all): a valid client certificate is needed"
            ),
            "{log}"
        );
        assert!(
            log.contains(
                "operations service: 1 connection(s) evicted since the last such line (1 in \
                 all): all 32 slots were taken"
            ),
            "{log}"
        );
        let c = &st.connections;
        assert_eq!(c.unauthorized.load(Ordering::Relaxed), 1);
        assert_eq!(c.evicted.load(Ordering::Relaxed), 1);
    }

    /// A health check that fails says why: the gossip server is starting, or stopping.
    #[test]
    fn a_failed_health_check_names_the_phase_of_the_gossip_server() {
        let st = State::new(false);
        let reason = |st: &State| {
            let r = respond(&Method::GET, "/healthz", st);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let b = rt.block_on(r.into_body().collect()).expect("a full body");
            let v: serde_json::Value = serde_json::from_slice(&b.to_bytes()).expect("JSON");
            assert_eq!(v["status"], "Service Unavailable", "{v}");
            assert_eq!(v["failed_checks"][0]["component"], "gossip", "{v}");
            v["failed_checks"][0]["reason"].clone()
        };
        assert_eq!(reason(&st), "the gossip server is starting");
        st.stopping();
        assert_eq!(reason(&st), "the gossip server is stopping");
    }

    /// The slots: 32 connections are admitted at once; a 33rd waits while none can be
    /// evicted, takes the slot of one that waits silent past its grace (evicted, counted),
    /// or the slot a connection ending frees.
    #[tokio::test(start_paused = true)]
    async fn a_newcomer_over_the_cap_evicts_a_silent_connection_or_waits_for_a_free_slot() {
        let slots = Arc::new(Slots::new(State::new(false)));
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let c = tokio::time::timeout(Duration::ZERO, slots.admit())
                .await
                .expect("a free slot");
            held.push(c);
        }
        let newcomer = || {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit().await.id })
        };
        // Every connection yet to run: none is evicted, the newcomer waits.
        let mut waiting = newcomer();
        let hour = Duration::from_secs(3600);
        assert!(tokio::time::timeout(hour, &mut waiting).await.is_err());
        // One has run, silent for an hour: it is evicted for the newcomer.
        held[3].polled();
        let id = tokio::time::timeout(hour, waiting).await.expect("admitted");
        assert_eq!(id.expect("admit"), MAX_CONNECTIONS as u64);
        assert!(notified(&held[3].evict).await);
        assert_eq!(slots.state.connections.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&slots.table).len(), MAX_CONNECTIONS);
        // Full again, nobody to evict: the newcomer takes the slot of one that ends.
        let waiting = newcomer();
        let ended = SlotGuard {
            slots: slots.clone(),
            id: held[5].id,
        };
        drop(ended);
        let id = tokio::time::timeout(hour, waiting).await.expect("admitted");
        assert_eq!(id.expect("admit"), MAX_CONNECTIONS as u64 + 1);
        assert_eq!(slots.state.connections.evicted.load(Ordering::Relaxed), 1);
        assert_eq!(lock(&slots.table).len(), MAX_CONNECTIONS);
    }

    /// A connected pair of loopback sockets: (client, server).
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    /// The server's socket of a connection whose body was refused (its close lingers),
    /// with the connection.
    fn refused(tcp: TcpStream) -> (Watched, Arc<Conn>) {
        let c = conn(0, ConnPhase::Answering(1), true);
        c.linger.store(true, Ordering::Relaxed);
        let w = Watched {
            tcp,
            conn: c.clone(),
            linger: None,
        };
        (w, c)
    }

    /// A connection's socket: a byte read marks the connection as having spoken, a read
    /// that finds nothing does not; writes, vectored or not, pass through, and a close
    /// without a refused body is a plain one.
    #[tokio::test(start_paused = true)]
    async fn a_watched_socket_notes_the_first_byte_and_passes_writes_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, tcp) = tcp_pair().await;
        let c = conn(0, ConnPhase::Waiting(Instant::now()), false);
        let mut w = Watched {
            tcp,
            conn: c.clone(),
            linger: None,
        };
        let mut buf = [0u8; 8];
        let hour = Duration::from_secs(3600);
        assert!(tokio::time::timeout(hour, w.read(&mut buf)).await.is_err());
        assert!(!c.spoke.load(Ordering::Relaxed));
        client.write_all(b"G").await.expect("write");
        assert_eq!(w.read(&mut buf).await.expect("read"), 1);
        assert!(c.spoke.load(Ordering::Relaxed));
        w.write_all(b"one ").await.expect("write");
        let two = [std::io::IoSlice::new(b"tw"), std::io::IoSlice::new(b"o")];
        assert_eq!(w.write_vectored(&two).await.expect("write"), 3);
        w.flush().await.expect("flush");
        w.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        tokio::time::timeout(hour, client.read_to_end(&mut got))
            .await
            .expect("the end")
            .expect("read");
        assert_eq!(got, b"one two");
    }

    /// A lingering close ends the answer at once (the client reads its end) and then
    /// waits [`LINGER`] for the client to stop sending, not a moment less.
    #[tokio::test(start_paused = true)]
    async fn a_lingering_close_ends_the_answer_at_once_and_lasts_its_time() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, tcp) = tcp_pair().await;
        let (mut w, _) = refused(tcp);
        let mut shut = std::pin::pin!(w.shutdown());
        let ms = Duration::from_millis;
        assert!(
            tokio::time::timeout(LINGER - ms(1), &mut shut)
                .await
                .is_err()
        );
        let mut rest = Vec::new();
        let hour = Duration::from_secs(3600);
        tokio::time::timeout(hour, client.read_to_end(&mut rest))
            .await
            .expect("the answer's end")
            .expect("read");
        assert!(tokio::time::timeout(ms(1), &mut shut).await.is_ok());
    }

    /// A lingering close reads and drops what the client sends until it closes, or until
    /// [`LINGER_BYTES`] have come (the time here never ends it).
    #[tokio::test]
    async fn a_lingering_close_drains_until_the_client_closes_or_its_bytes_have_come() {
        use tokio::io::AsyncWriteExt;
        let hour = Duration::from_secs(3600);
        let lingering = |tcp| {
            let (mut w, _) = refused(tcp);
            w.linger = Some(Linger {
                until: Box::pin(tokio::time::sleep(hour)),
                write_shut: false,
                drained: 0,
            });
            w
        };
        let bound = Duration::from_secs(60);
        // 100 KB, then the client's close.
        let (mut client, tcp) = tcp_pair().await;
        let mut w = lingering(tcp);
        client.write_all(&[7; 100_000]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        tokio::time::timeout(bound, w.shutdown())
            .await
            .expect("ended by the client's close")
            .expect("shutdown");
        assert_eq!(w.linger.as_ref().map(|l| l.drained), Some(100_000));
        // More than the bytes allowed, the connection held open.
        let (mut client, tcp) = tcp_pair().await;
        let mut w = lingering(tcp);
        let sender = tokio::spawn(async move {
            let _ = client
                .write_all(&vec![7; LINGER_BYTES as usize + (1 << 20)])
                .await;
            client
        });
        tokio::time::timeout(bound, w.shutdown())
            .await
            .expect("ended by the bytes")
            .expect("shutdown");
        let drained = w.linger.as_ref().map_or(0, |l| l.drained);
        assert!(
            (LINGER_BYTES..LINGER_BYTES + 16 * 1024).contains(&drained),
            "{drained}"
        );
        drop(w);
        let _ = sender.await;
    }
}
