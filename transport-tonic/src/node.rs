//! The user-facing handle: Fabric's `Comm` as async methods on a cheap-to-clone [`Node`].

use crate::driver::{
    Clock, Core, DriverStats, Inner, MAX_FRAME, Settings, Waiter, drain, flow_window, timer_task,
};
use crate::inbound::{DriverLimits, GuardedIncoming, TlsIncoming, reaper_task};
use crate::layer::{AnyEvent, Hosted, HostedCore, LayerFactory, NodeSecurity};
use crate::service::GossipService;
use crate::tls::TlsConfig;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage};
use fabric_gossip_core::{
    Comm, Config, ConnectionInfo, Error, Event, HandshakeError, Layer, OpId, PkiId, ProbeError,
    ReceivedMessage, RemotePeer, Security, SendResult, SignedMessage, Stats, SubscriptionId,
    TlsHashes,
};
use std::any::TypeId;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_stream::Stream;
use tonic::transport::Server;

/// Messages an [`Incoming`] takes from the core per lock, at most; they are its only
/// buffering beyond the core's own subscription queue.
pub const DELIVERY_BATCH: usize = 32;

/// A stream of PKI-IDs (PresumedDead or IdentitySwitch notifications).
///
/// Every stream of one kind returned by a node draws from the same bounded queue, as every
/// caller of Fabric's `PresumedDead()` reads the same channel: each notification goes to
/// one reader. The stream ends after the node stops and the queue is drained.
pub type NotificationStream = Pin<Box<dyn Stream<Item = PkiId> + Send>>;

/// The hosted layer's events, in the order it produced them (see
/// [`Node::layer_events`]). Every stream of one node draws from the same bounded queue;
/// it ends once the node has stopped and the queue is drained.
pub type LayerEvents<E> = Pin<Box<dyn Stream<Item = E> + Send>>;

/// Layer events queued for the application by default before further ones are dropped
/// (and counted in [`DriverStats::layer_events_dropped`]).
pub const LAYER_EVENT_BUFFER: usize = 4096;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The listen address could not be bound (in use, not an address of this host, a port
    /// below 1024 without the right) or the listener handed over is unusable. Names the
    /// address: a node started among others is otherwise hard to tell apart.
    ///
    /// Like every error of this crate, its text is whole (the operating system's reason
    /// included) and it has no `source()`, so a reporter that prints the chain
    /// (`anyhow`'s `{:#}`) says the reason once.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address asked for ([`NodeBuilder::listen`]), or that of the listener handed
        /// over.
        addr: SocketAddr,
        /// What the operating system said (its `kind()` tells an address in use from one
        /// not of this host).
        error: std::io::Error,
    },
    /// The TLS material is unusable (bad PEM, key not matching, no CA).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The security provider refused the node's own identity.
    /// (A refusal's text without the `identity refused: ` it has as a remote's: the
    /// message says whose already.)
    #[error("own identity refused: {}", match .0 {
        HandshakeError::InvalidIdentity(e) => e.to_string(),
        e => e.to_string(),
    })]
    Identity(HandshakeError),
    /// The gRPC server could not be configured.
    #[error("gRPC server: {0}")]
    Server(String),
    /// The endpoint given to [`NodeBuilder::advertise`] is not `host:port` with a 16-bit
    /// port.
    #[error("advertised endpoint {0:?} is not host:port")]
    Advertise(String),
    /// The factory given to [`NodeBuilder::try_layer`] refused to make its layer (for
    /// the membership layer, a `ConfigError`: downcast the boxed error to read it). Its
    /// text is in this error's own, not behind `source()`.
    #[error("layer: {0}")]
    Layer(Box<dyn std::error::Error + Send + Sync>),
}

/// How an asynchronous operation (`probe`, `handshake`) ended badly: refused at once (API
/// misuse, node stopped, too many operations) or failed on the network. Kept apart so a
/// caller can tell "I asked wrongly" from "the peer is not there". A `Failed` carries the
/// transport's own text (hyper, h2, rustls); [`DialDiagnosis::of`]`(&error.to_string(),
/// tls)` names its usual cause (nothing listening, the port serves TLS or plaintext, the
/// certificate's name or CA) with what to change.
///
/// [`DialDiagnosis::of`]: crate::DialDiagnosis::of
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError<E> {
    /// The core refused to start the operation.
    #[error("refused: {0}")]
    Refused(Error),
    /// The operation ran and failed.
    #[error("{0}")]
    Failed(E),
}

/// Configures and starts a [`Node`].
#[derive(Debug)]
pub struct NodeBuilder {
    config: Config,
    listen: SocketAddr,
    listener: Option<std::net::TcpListener>,
    tls: Option<TlsConfig>,
    stop_timeout: Duration,
    event_tap: Option<tokio::sync::mpsc::Sender<Event>>,
    hang_ping: bool,
    claimed_hashes: Option<TlsHashes>,
    limits: DriverLimits,
    layer: Option<LayerFactory>,
    layer_event_buffer: usize,
    advertise: Option<String>,
}

impl NodeBuilder {
    /// The limits the driver enforces against remotes: how long and how many inbound
    /// connections may stay without an authenticated stream, how many inbound connections
    /// in all, and the bytes and stall time allowed for incomplete messages. Defaults:
    /// [`DriverLimits::default`].
    pub fn limits(mut self, limits: DriverLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Hosts a protocol layer above the core (Fabric's membership layer,
    /// `fabric_gossip_discovery::Discovery`, or an application's own), built by `make`
    /// once the listen address is known (port 0 is only resolved by binding). The node
    /// runs it in the core's `Stack`: the layer sees every core event first, consumes
    /// the deliveries of its own subscriptions, and its deadlines share the node's
    /// timer; the driver knows none of its rules. Its events come out of
    /// [`Node::layer_events`], its state through [`Node::with_layer`].
    ///
    /// The address `make` gets is the one bound, which a membership layer takes as its
    /// internal endpoint, the one peers dial: listen on an address they can reach (a node
    /// bound to `0.0.0.0` should name its endpoint itself, in the layer's configuration
    /// and in [`advertise`](Self::advertise) alike). A layer whose constructor can
    /// fail, as `Discovery::new` can, is better given to [`try_layer`](Self::try_layer),
    /// whose error `start` returns instead of the factory panicking inside it.
    pub fn layer<L, F>(mut self, make: F) -> Self
    where
        L: Layer<NodeSecurity> + Send + 'static,
        L::Event: Send + 'static,
        F: FnOnce(SocketAddr) -> L + Send + 'static,
    {
        self.layer = Some(LayerFactory::new(move |addr| {
            Ok::<_, std::convert::Infallible>(make(addr))
        }));
        self
    }

    /// [`layer`](Self::layer) for a layer whose constructor can fail: `start` returns
    /// `make`'s error as [`StartError::Layer`], before the node serves anything, where an
    /// `expect` in a `layer` factory would panic inside `start`. For membership,
    /// `.try_layer(|addr| Discovery::new(DiscoveryConfig::new(addr.to_string())))`.
    pub fn try_layer<L, E, F>(mut self, make: F) -> Self
    where
        L: Layer<NodeSecurity> + Send + 'static,
        L::Event: Send + 'static,
        E: std::error::Error + Send + Sync + 'static,
        F: FnOnce(SocketAddr) -> Result<L, E> + Send + 'static,
    {
        self.layer = Some(LayerFactory::new(make));
        self
    }

    /// How many layer events wait for the application before further ones are dropped
    /// and counted (default [`LAYER_EVENT_BUFFER`]); at least 1.
    pub fn layer_event_buffer(mut self, events: usize) -> Self {
        self.layer_event_buffer = events.max(1);
        self
    }

    /// For tests of other nodes: the server takes `Ping` calls but never answers them, as
    /// a hung peer would, so that callers' `conn_timeout` handling can be exercised.
    pub fn hang_ping(mut self, hang: bool) -> Self {
        self.hang_ping = hang;
        self
    }

    /// For tests of other nodes: bind these hashes into handshakes instead of those of the
    /// certificates actually presented (needs [`NodeBuilder::tls`]), so that peers'
    /// `tls_cert_hash` check can be exercised. A node so configured is refused by every
    /// honest peer.
    pub fn claim_tls_hashes(mut self, hashes: TlsHashes) -> Self {
        self.claimed_hashes = Some(hashes);
        self
    }

    /// Sends a copy of every core event except `DeliveryReady` (connections opened and
    /// closed, handshake failures, PresumedDead, operation results...) into `tap`, for
    /// logging and tests. Never blocks the node: when `tap` is full the copy is dropped and
    /// counted in [`DriverStats::events_dropped`].
    pub fn events(mut self, tap: tokio::sync::mpsc::Sender<Event>) -> Self {
        self.event_tap = Some(tap);
        self
    }

    /// Where to listen; `127.0.0.1:0` (a free loopback port) unless set.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve on a listener the caller already bound (it is switched to non-blocking mode).
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The `host:port` other nodes reach this one at, when it is not the listen address:
    /// what [`Node::endpoint`] and [`Node::as_peer`] hand out. Fabric keeps the two apart
    /// too (`peer.listenAddress` is bound, `peer.address` and `peer.gossip.endpoint` are
    /// told to others): a node that listens on `0.0.0.0:7051`, behind NAT, or in a
    /// container reached by a host name must advertise a dialable address, or every peer
    /// given its `as_peer()` dials `0.0.0.0:7051`. Unset, the listen address as bound is
    /// advertised. Checked at [`start`](Self::start) (`host:port` with a 16-bit port, else
    /// [`StartError::Advertise`]); it names a place, so nothing else changes: the
    /// handshake carries no endpoint, and a hosted membership layer takes its endpoint
    /// from its own configuration (give it the same one).
    pub fn advertise(mut self, endpoint: impl Into<String>) -> Self {
        self.advertise = Some(endpoint.into());
        self
    }

    /// Turns on mutual TLS. The core's `Config::tls` is then set from these certificates;
    /// without this call it is cleared, since the core cannot bind certificates that the
    /// transport does not use.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Upper bound on [`Node::stop`] waiting for the server to finish its connections
    /// gracefully (default 5 s); past it they are cut.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts the node with `security` as its identity and crypto provider.
    pub async fn start<S: Security + 'static>(self, security: S) -> Result<Node, StartError> {
        self.start_with(move |_| security).await
    }

    /// Starts the node, building the security provider once the listen address is known
    /// (Fabric's test identities are the endpoint itself, and port 0 is only resolved by
    /// binding).
    pub async fn start_with<S, F>(self, security: F) -> Result<Node, StartError>
    where
        S: Security + 'static,
        F: FnOnce(SocketAddr) -> S,
    {
        let NodeBuilder {
            mut config,
            listen,
            listener,
            tls,
            stop_timeout,
            event_tap,
            hang_ping,
            claimed_hashes,
            limits,
            layer,
            layer_event_buffer,
            advertise,
        } = self;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            StartError::Server("a node must be started inside a tokio runtime".into())
        })?;
        if let Some(a) = advertise.as_deref().filter(|a| !is_host_port(a)) {
            return Err(StartError::Advertise(a.to_owned()));
        }
        let tls = match &tls {
            Some(t) => Some(t.prepare().map_err(StartError::Tls)?),
            None => None,
        };
        config.tls = tls
            .as_ref()
            .map(|t| claimed_hashes.unwrap_or_else(|| t.hashes.clone()));
        let addr = listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(listen);
        let bind = |error| StartError::Bind { addr, error };
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true).map_err(bind)?;
                tokio::net::TcpListener::from_std(l).map_err(bind)?
            }
            None => tokio::net::TcpListener::bind(listen).await.map_err(bind)?,
        };
        let local_addr = listener.local_addr().map_err(bind)?;
        if advertise.is_none() && layer.is_some() && local_addr.ip().is_unspecified() {
            // Allowed (on one host, 0.0.0.0 dials the host itself), but a layer given this
            // address tells its peers an endpoint no other host can dial: say so once.
            tracing::warn!(
                listen = %local_addr,
                "the node listens on an unspecified address, hosts a layer and advertises \
                 no endpoint: peers elsewhere cannot dial the endpoint it hands out; give \
                 NodeBuilder::advertise and the layer the address peers reach it at"
            );
        }
        let clock = Clock::new();
        let security: Box<dyn Security> = Box::new(security(local_addr));
        let settings = Settings {
            max_message_size: config.max_message_size,
            max_handshake_message_size: config.max_handshake_message_size(),
            write_window: config.write_window.max(1),
            tls: tls.as_ref().map(|t| t.client.clone()),
            event_tap,
            hang_ping,
            limits,
            resolver: Default::default(),
        };
        if settings.limits.max_incomplete_bytes < settings.max_message_size + crate::metered::PREFIX
        {
            // Allowed (a budget is a trade-off, and tests of the budget set small ones), but
            // a message spread over frames never completes past it: say so once.
            tracing::warn!(
                max_incomplete_bytes = settings.limits.max_incomplete_bytes,
                max_message_size = settings.max_message_size,
                "the incomplete-message budget is below the largest message accepted: \
                 larger messages can never complete and their streams stall"
            );
        }
        let comm = Core::new(config, security, clock.now()).map_err(StartError::Identity)?;
        let pki_id = comm.pki_id().clone();
        let (layer_types, layer_events, comm) = match layer {
            Some(factory) => {
                let types = (factory.layer_type, factory.event_type);
                let (tx, rx) = tokio::sync::mpsc::channel(layer_event_buffer);
                let layer = factory.build(local_addr).map_err(StartError::Layer)?;
                let hosted = HostedCore::new(comm, layer, Some(tx));
                (
                    Some(types),
                    Some(Arc::new(tokio::sync::Mutex::new(rx))),
                    hosted,
                )
            }
            None => (None, None, HostedCore::new(comm, Hosted::none(), None)),
        };
        let window = flow_window(&settings.limits);
        let max_streams = settings.limits.max_concurrent_streams.max(1);
        let inner = Inner::new(comm, settings, clock, rt.clone());

        let mut server = Server::builder()
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .max_frame_size(Some(MAX_FRAME))
            .max_concurrent_streams(max_streams);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let incoming = GuardedIncoming::new(listener, inner.admission.clone());
        let reaper = rt
            .spawn(reaper_task(inner.admission.clone()))
            .abort_handle();
        let router = server.add_service(GossipService::new(inner.clone()));
        let shutdown = async {
            let _ = shutdown_rx.await;
        };
        let server_task = match &tls {
            Some(t) => {
                let incoming = TlsIncoming::new(incoming, t.server.clone());
                rt.spawn(async move {
                    let _ = router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await;
                })
            }
            None => rt.spawn(async move {
                let _ = router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
            }),
        };
        // Starting the layer may have queued work (subscriptions, bootstrap dials).
        {
            let mut st = inner.lock();
            drain(&inner, &mut st);
        }
        let timer = rt.spawn(timer_task(inner.clone())).abort_handle();
        Ok(Node {
            h: Arc::new(Handle {
                inner,
                endpoint: advertise.unwrap_or_else(|| local_addr.to_string()),
                local_addr,
                pki_id,
                shutdown: Mutex::new(Some(shutdown_tx)),
                server: tokio::sync::Mutex::new(Some(server_task)),
                timer,
                reaper,
                stop_timeout,
                layer_types,
                layer_events,
            }),
        })
    }
}

/// One running gossip comm node. Clones share it; it stops when [`Node::stop`] is called,
/// the last clone is dropped, or the runtime it was started in shuts down (its tasks are
/// gone then, so its methods fail with `Stopped` rather than wait for them).
#[derive(Clone)]
pub struct Node {
    h: Arc<Handle>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("pki_id", &self.h.pki_id)
            .field("local_addr", &self.h.local_addr)
            .field("endpoint", &self.h.endpoint)
            .finish_non_exhaustive()
    }
}

struct Handle {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
    /// What [`Node::endpoint`] hands out: the advertised endpoint, else `local_addr`.
    endpoint: String,
    pki_id: PkiId,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    server: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    timer: AbortHandle,
    reaper: AbortHandle,
    stop_timeout: Duration,
    /// The hosted layer's type and its event type, if a layer is hosted.
    layer_types: Option<(TypeId, TypeId)>,
    layer_events: Option<Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<AnyEvent>>>>,
}

impl Handle {
    /// The part of stopping that needs no waiting: the core closes everything, the server
    /// stops accepting.
    fn stop_now(&self) {
        self.inner.with_core(|c, now| c.stop(now));
        let tx = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_now();
        self.timer.abort();
        self.reaper.abort();
        // The same wind-down as `Node::stop`'s, without blocking here.
        let server = self.server.try_lock().ok().and_then(|mut s| s.take());
        let inner = self.inner.clone();
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        self.inner.rt.spawn(async move {
            wind_down(&inner, server, deadline).await;
        });
    }
}

/// The waiting part of stopping, until `deadline`: the server winds down, and the remotes
/// of the streams this node opened end them as they finish reading them; then what is
/// left is cut.
async fn wind_down(inner: &Inner, server: Option<JoinHandle<()>>, deadline: tokio::time::Instant) {
    if let Some(mut task) = server
        && tokio::time::timeout_at(deadline, &mut task).await.is_err()
    {
        task.abort();
    }
    inner.winding.wait(deadline).await;
}

impl Node {
    /// Starts configuring a node with this core configuration.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: None,
            tls: None,
            stop_timeout: Duration::from_secs(5),
            event_tap: None,
            hang_ping: false,
            claimed_hashes: None,
            limits: DriverLimits::default(),
            layer: None,
            layer_event_buffer: LAYER_EVENT_BUFFER,
            advertise: None,
        }
    }

    /// The node's own PKI-ID (Fabric `GetPKIid`).
    pub fn pki_id(&self) -> &PkiId {
        &self.h.pki_id
    }

    /// The address the server listens on (as bound: port 0 resolved, `0.0.0.0` kept).
    pub fn local_addr(&self) -> SocketAddr {
        self.h.local_addr
    }

    /// `host:port` that other nodes dial: the endpoint given to
    /// [`NodeBuilder::advertise`], else the listen address as text (which is not
    /// dialable when the node listens on `0.0.0.0` or `::`: advertise then).
    pub fn endpoint(&self) -> String {
        self.h.endpoint.clone()
    }

    /// The node's time, what its core and layers are given as `now`: the wall clock read
    /// at start plus a monotonic clock, so that timers never jump when the wall clock is
    /// stepped. Times a layer reports (a member's last alive message) are on this scale,
    /// and the distance of the wall clock from it is what a security provider judging
    /// certificates by the wall clock is told (`MspSecurity::wall_clock_offset`).
    pub fn now(&self) -> fabric_gossip_core::Instant {
        self.h.inner.now()
    }

    /// This node as a [`RemotePeer`] for others to send to, at [`Node::endpoint`].
    pub fn as_peer(&self) -> RemotePeer {
        RemotePeer::new(self.endpoint(), self.h.pki_id.clone())
    }

    /// Fabric's `Send`: queues `msg` for each peer without waiting, connecting as needed. A
    /// full send buffer drops the message and counts it (`Stats::dropped_overflow`); failing
    /// to connect presumes the peer dead. `Err` only for misuse (stopped, no peers, too large).
    pub fn send(&self, msg: &SignedMessage, peers: &[RemotePeer]) -> Result<(), Error> {
        self.h.inner.with_core(|c, now| c.send(now, msg, peers))
    }

    /// Like [`Node::send`] to one peer, but waits for buffer room instead of dropping: for
    /// callers that must not lose messages to a full buffer. Returns once the message is
    /// queued; it can still be lost if the connection breaks. Cancellation-safe: dropping
    /// the future before it completes leaves the message unsent.
    pub async fn send_wait(&self, msg: &SignedMessage, peer: &RemotePeer) -> Result<(), Error> {
        self.h
            .inner
            .retry_blocked(|c, now| c.send_wait(now, msg, peer))
            .await
    }

    /// Fabric's `SendWithAck`: sends `msg` (with a fresh nonce, noop-signed) to every peer
    /// and returns when `min_ack` peers acked, every peer has a result, or `timeout` passed:
    /// one result per peer that answered or failed in time. `min_ack` is taken as at
    /// least 1 ([`Comm::send_with_ack`](fabric_gossip_core::Comm::send_with_ack)).
    ///
    /// A Fabric peer acknowledges only what its protocol acknowledges (private data
    /// pushed to it, `gossip/state`): to anything else its result is the time-out.
    pub async fn send_with_ack(
        &self,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<Vec<SendResult>, Error> {
        self.acks_of(|c, now| c.send_with_ack(now, msg, timeout, min_ack, peers))
            .await
    }

    /// [`Node::send_with_ack`] for a message already encoded, as Fabric's `SendWithAck`
    /// takes a `SignedGossipMessage`: the nonce is replaced in `msg`'s encoding instead of
    /// the message being encoded again, so a message sent with acks many times is encoded
    /// once ([`Comm::send_with_ack_signed`](fabric_gossip_core::Comm::send_with_ack_signed)).
    pub async fn send_with_ack_signed(
        &self,
        msg: &SignedMessage,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<Vec<SendResult>, Error> {
        self.acks_of(|c, now| c.send_with_ack_signed(now, msg, timeout, min_ack, peers))
            .await
    }

    /// Starts a SendWithAck with `start` and waits for its results.
    async fn acks_of(
        &self,
        start: impl FnOnce(&mut Core, fabric_gossip_core::Instant) -> Result<OpId, Error>,
    ) -> Result<Vec<SendResult>, Error> {
        let (tx, rx) = oneshot::channel();
        self.h.inner.with_core_op(Waiter::Ack(tx), start)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Fabric's `Probe`: dials and Pings the peer, no handshake, nothing registered.
    ///
    /// The dial retries a failed connection attempt until `dial_timeout`
    /// ([`Config::dial_backoff`](fabric_gossip_core::Config::dial_backoff)), as Fabric's
    /// does: with the defaults a probe of a closed port (or a TLS probe of a plaintext one)
    /// fails after 3 s with the last attempt's error. [`DialDiagnosis::of`] names the
    /// usual cause of the error's text: `DialDiagnosis::of(&error.to_string(), tls)`.
    ///
    /// [`DialDiagnosis::of`]: crate::DialDiagnosis::of
    pub async fn probe(&self, peer: &RemotePeer) -> Result<(), OpError<ProbeError>> {
        self.run_op(
            Waiter::Probe,
            |c, now| c.probe(now, peer),
            ProbeError::Stopped,
        )
        .await
    }

    /// Fabric's `Handshake`: dials, Pings, authenticates the peer on a probing stream
    /// (bounded by `handshake_timeout`) and returns what it proved; nothing is registered.
    /// An empty expected PKI-ID accepts whoever answers.
    pub async fn handshake(
        &self,
        peer: &RemotePeer,
    ) -> Result<Arc<ConnectionInfo>, OpError<HandshakeError>> {
        self.run_op(
            Waiter::Handshake,
            |c, now| c.handshake(now, peer),
            HandshakeError::ShuttingDown,
        )
        .await
    }

    /// Starts a core operation (`start`) whose result comes back through a oneshot held by
    /// the `waiter`, and waits for it; `stopped` if the node stops first.
    async fn run_op<T, E>(
        &self,
        waiter: impl FnOnce(oneshot::Sender<Result<T, E>>) -> Waiter,
        start: impl FnOnce(&mut Core, fabric_gossip_core::Instant) -> Result<OpId, Error>,
        stopped: E,
    ) -> Result<T, OpError<E>> {
        let (tx, rx) = oneshot::channel();
        self.h
            .inner
            .with_core_op(waiter(tx), start)
            .map_err(OpError::Refused)?;
        match rx.await {
            Ok(r) => r.map_err(OpError::Failed),
            Err(_) => Err(OpError::Failed(stopped)),
        }
    }

    /// Fabric's `Accept`: a stream of received messages (acks excepted) that `acceptor`
    /// accepts, in arrival order. Messages are taken from the core only as the stream is
    /// polled, so a slow consumer makes the core pause the connections feeding it and the
    /// senders feel it through HTTP/2 flow control. Dropping the stream unsubscribes.
    ///
    /// Beside a layer, refuse the layer's messages (for membership:
    /// `accept(|m| !fabric_gossip_discovery::takes(m.message(), true))`): the core copies a
    /// message to every subscription that accepts it, so an `accept(|_| true)` gets copies
    /// of the membership traffic, and left unread it pauses the connections the layer reads
    /// too, until members expire.
    pub fn accept<F>(&self, acceptor: F) -> Result<Incoming, Error>
    where
        F: Fn(&ReceivedMessage) -> bool + Send + 'static,
    {
        let inner = self.h.inner.clone();
        let sub = {
            let mut st = inner.lock();
            let sub = st.comm.subscribe(Box::new(acceptor))?;
            st.subs.insert(sub, None);
            sub
        };
        Ok(Incoming {
            inner,
            sub,
            buf: VecDeque::new(),
            done: false,
        })
    }

    /// Fabric's `PresumedDead()`: PKI-IDs of peers that sending to failed (no connection
    /// could be had, or a write failed).
    ///
    /// A connection that merely closes is not reported, as in Fabric: a peer that stops is
    /// reported when the next send to it fails. Whoever needs to learn of a silent peer
    /// sooner sends to it, or hosts the membership layer, whose alive messages expire.
    pub fn presumed_dead(&self) -> NotificationStream {
        notifications(self.h.inner.presumed_dead.clone())
    }

    /// Fabric's `IdentitySwitch()`: old PKI-IDs of peers that answered with a new identity
    /// of the same organization.
    pub fn identity_switch(&self) -> NotificationStream {
        notifications(self.h.inner.identity_switch.clone())
    }

    /// Fabric's `CloseConn`: closes the connection to `pki_id`; a later send reconnects.
    /// A connection still being made for a send (a dial waiting to retry among them) goes
    /// on, as in Fabric ([`Comm::close_conn`](fabric_gossip_core::Comm::close_conn)).
    pub fn close_conn(&self, pki_id: &PkiId) {
        self.h.inner.with_core(|c, now| c.close_conn(now, pki_id));
    }

    /// Gives comm an identity learnt outside a handshake, as Fabric's membership puts
    /// what it accepts into the identity mapper comm shares
    /// ([`Comm::learn_identity`](fabric_gossip_core::Comm::learn_identity): the same
    /// checks, the same errors, `Ok(false)` for a PKI-ID comm holds). For an application
    /// running a membership of its own over this driver: without it, a member known only
    /// from that membership that comes back with a renewed certificate is refused as
    /// `UnexpectedPeer` where it would have been an identity switch. A hosted layer (the
    /// membership layer does) calls the core's method itself.
    pub fn learn_identity(&self, pki_id: &PkiId, identity: &[u8]) -> Result<bool, HandshakeError> {
        self.h
            .inner
            .with_core(|c, now| c.learn_identity(now, pki_id, identity))
    }

    /// Fabric's identity mapper `Get`: the identity comm holds for `pki_id`, marked as used
    /// now, so that the usage purge (`Config::identity_usage_threshold`, one hour) leaves
    /// it and the connection to its peer alone for another threshold
    /// ([`Comm::use_identity`](fabric_gossip_core::Comm::use_identity)). For an
    /// application running a membership of its own over this driver: call it whenever it
    /// verifies a message of that peer, or a live peer that only talks through it is
    /// purged an hour after its handshake. A hosted layer (the membership layer does)
    /// calls the core's method itself. `None` if comm holds no identity for `pki_id`.
    pub fn use_identity(&self, pki_id: &PkiId) -> Option<Bytes> {
        self.h
            .inner
            .with_core(|c, now| c.use_identity(now, pki_id).cloned())
    }

    /// Fabric's `SuspectPeers`, after what the security provider accepts has changed (for
    /// `MspSecurity`, through its `TrustHandle`): validates every identity the node holds
    /// again and closes the connections of those refused, each reported as `Disconnected`
    /// with `CloseReason::IdentityRefused`. Returns how many were refused.
    pub fn revalidate_identities(&self) -> usize {
        self.h
            .inner
            .with_core(|c, now| c.revalidate_identities(now))
    }

    /// Waits until every message sent so far is handed to HTTP/2 or dropped (each drop
    /// counted in [`Node::stats`]), at most `limit`; whether all were. [`Node::stop`] is
    /// Fabric's `Stop`, which drops what is still queued or waiting for a connection: a tool
    /// whose last sends must go out (a script piping messages in, then stopping) flushes
    /// first. What HTTP/2 holds then is written while `stop` winds the connections down,
    /// within the builder's `stop_timeout`. Returns at once when nothing is queued; sends
    /// made while it waits are waited for too. A hosted layer's messages that wait for a
    /// connection attempt are not (the membership layer's gossip to a member that has just
    /// left would hold the flush for the attempt's whole back-off, for messages the layer,
    /// stopping with the node, no longer needs); see `Comm::unsent_to_flush`.
    pub async fn flush(&self, limit: Duration) -> bool {
        self.h.inner.flush(limit).await
    }

    /// Fabric's `Stop`: idempotent. Closes every stream and channel, ends every
    /// subscription, fails pending operations, refuses new streams ("Shutting down"), and
    /// waits for the server to wind down and for the remotes of the streams this node
    /// opened to end them (a remote ends a stream once it has read it to its end, so what
    /// HTTP/2 held reached it), at most the builder's `stop_timeout` (then what is left is
    /// cut). Concurrent callers all return once it is done.
    pub async fn stop(&self) {
        self.h.stop_now();
        let deadline = tokio::time::Instant::now() + self.h.stop_timeout;
        // Held throughout, so that concurrent callers return once it is done.
        let mut server = self.h.server.lock().await;
        wind_down(&self.h.inner, server.take(), deadline).await;
        self.h.timer.abort();
        self.h.reaper.abort();
    }

    /// The core's counters (Fabric's sent, received and overflow counters among them).
    pub fn stats(&self) -> Stats {
        self.h.inner.lock().comm.stats().clone()
    }

    /// The driver's own counters.
    pub fn driver_stats(&self) -> DriverStats {
        let mut stats = self.h.inner.driver_stats();
        stats.layer_events_dropped = self.h.inner.lock().comm.events_dropped();
        stats
    }

    /// Whether the node hosts a layer (see [`NodeBuilder::layer`]).
    pub fn has_layer(&self) -> bool {
        self.h.inner.lock().comm.has_layer()
    }

    /// The hosted layer's events as a stream of its own event type `E` (for the
    /// membership layer, `DiscoveryEvent`); `None` without a layer or when `E` is not
    /// its event type. Every stream of one node draws from the same bounded queue (each
    /// event goes to one reader); events nobody takes in time are dropped and counted in
    /// [`DriverStats::layer_events_dropped`], so a node never waits for its application.
    pub fn layer_events<E: Send + 'static>(&self) -> Option<LayerEvents<E>> {
        let (_, event_type) = self.h.layer_types?;
        if event_type != TypeId::of::<E>() {
            return None;
        }
        let rx = self.h.layer_events.clone()?;
        Some(Box::pin(futures_util::stream::unfold(
            rx,
            |rx| async move {
                loop {
                    let next = rx.lock().await.recv().await?;
                    // The type was checked above; a mismatch cannot happen, and is skipped.
                    if let Ok(e) = next.downcast::<E>() {
                        return Some((*e, rx));
                    }
                }
            },
        )))
    }

    /// Reads the hosted layer (e.g. the membership layer's `members()`): runs `f` on it
    /// under the node's lock, so keep it short. `None` without a layer or when it is not
    /// an `L`.
    pub fn with_layer<L: 'static, R>(&self, f: impl FnOnce(&L) -> R) -> Option<R> {
        self.with_layer_mut(|l: &mut L, _| f(l))
    }

    /// Calls into the hosted layer with the core at hand (e.g. the membership layer's
    /// `connect_anchor`), then carries out whatever it asked of the network. `None`
    /// without a layer or when it is not an `L`.
    pub fn with_layer_mut<L: 'static, R>(
        &self,
        f: impl FnOnce(&mut L, &mut Comm<NodeSecurity>) -> R,
    ) -> Option<R> {
        let (layer_type, _) = self.h.layer_types?;
        if layer_type != TypeId::of::<L>() {
            return None;
        }
        let inner = &self.h.inner;
        let mut st = inner.lock();
        let r = st.comm.with_layer(f);
        drain(inner, &mut st);
        r
    }

    /// Registered connections (PKI-ID, primary, crossing secondary), sorted by PKI-ID.
    pub fn connections(&self) -> Vec<fabric_gossip_core::ConnectionEntry> {
        self.h.inner.lock().comm.connections()
    }

    /// Identities comm holds now (its own included): how full its identity store is
    /// ([`Config::identity_store_capacity`](fabric_gossip_core::Config::identity_store_capacity)),
    /// which membership fills too, and [`Node::learn_identity`].
    pub fn identity_count(&self) -> usize {
        self.h.inner.lock().comm.identity_count()
    }

    /// Whether a connection to `pki_id` is registered.
    pub fn is_connected(&self, pki_id: &PkiId) -> bool {
        self.h.inner.lock().comm.connection(pki_id).is_some()
    }

    /// Whether `stop` was called (or the last handle dropped, or its runtime shut down).
    pub fn is_stopped(&self) -> bool {
        self.h.inner.lock().comm.is_stopped()
    }
}

fn notifications(
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<PkiId>>>,
) -> NotificationStream {
    Box::pin(futures_util::stream::unfold(rx, |rx| async move {
        let next = rx.lock().await.recv().await;
        next.map(|p| (p, rx))
    }))
}

impl Inner {
    /// Starts an operation and registers who waits for its result, under one lock so that
    /// even a result produced at once finds its waiter.
    fn with_core_op(
        self: &Arc<Self>,
        waiter: Waiter,
        start: impl FnOnce(&mut Core, fabric_gossip_core::Instant) -> Result<OpId, Error>,
    ) -> Result<OpId, Error> {
        let mut st = self.lock();
        let now = self.now();
        let r = start(&mut st.comm, now);
        if let Ok(op) = r {
            st.ops.insert(op, waiter);
        }
        drain(self, &mut st);
        r
    }
}

/// Received messages of one subscription, as a `Stream` (Fabric's `Accept` channel).
///
/// Cancellation-safe: state lives in the stream, so dropping a pending `recv()` loses
/// nothing. Dropping the stream unsubscribes; messages it still held are discarded
/// (counted: [`DriverStats::dropped_with_incoming`], and the core's
/// `Stats::dropped_on_unsubscribe` for those still queued in its subscription).
pub struct Incoming {
    inner: Arc<Inner>,
    sub: SubscriptionId,
    /// Boxed as the core queued them: taking a delivery moves a pointer, not the message.
    buf: VecDeque<Box<ReceivedMessage>>,
    done: bool,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("sub", &self.sub)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// The next message; `None` once the node stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Waits for at least one message, then appends to `buf` as many as are ready, up to
    /// `limit` (tokio's `recv_many`): a consumer that handles messages in batches pays
    /// one wake-up and one lock of the core per batch instead of per message. Returns how
    /// many were appended: 0 once the node stopped (or for a `limit` of 0). Up to `limit`
    /// messages are then held here, beyond the core's subscription queue.
    pub async fn recv_many(&mut self, buf: &mut Vec<Received>, limit: usize) -> usize {
        std::future::poll_fn(|cx| {
            if limit == 0 {
                return Poll::Ready(0);
            }
            if self.poll_fill(cx, limit).is_pending() {
                return Poll::Pending;
            }
            let n = self.buf.len().min(limit);
            let inner = &self.inner;
            buf.extend(self.buf.drain(..n).map(|msg| Received {
                msg: Some(msg),
                inner: inner.clone(),
            }));
            Poll::Ready(n)
        })
        .await
    }

    /// Tops the buffer up from the core to `want` messages. `Pending` (the waker kept)
    /// when none is ready; ready with an empty buffer once the node stopped.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<()> {
        if self.done || self.buf.len() >= want {
            return Poll::Ready(());
        }
        let inner = self.inner.clone();
        let mut st = inner.lock();
        if st.comm.is_stopped() {
            self.done = self.buf.is_empty();
            return Poll::Ready(());
        }
        inner.return_deliveries(&mut st);
        let before = self.buf.len();
        while self.buf.len() < want {
            match st.comm.poll_delivery_boxed(self.sub) {
                Some(m) => self.buf.push_back(m),
                None => break,
            }
        }
        if self.buf.is_empty() {
            st.subs.insert(self.sub, Some(cx.waker().clone()));
            return Poll::Pending;
        }
        if self.buf.len() > before {
            // Taking deliveries may resume paused streams.
            drain(&inner, &mut st);
        }
        Poll::Ready(())
    }
}

impl Stream for Incoming {
    type Item = Received;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let this = self.get_mut();
        if this.buf.is_empty() && this.poll_fill(cx, DELIVERY_BATCH).is_pending() {
            return Poll::Pending;
        }
        match this.buf.pop_front() {
            Some(msg) => Poll::Ready(Some(Received {
                msg: Some(msg),
                inner: this.inner.clone(),
            })),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.subs.remove(&self.sub);
        // Discarded with the stream: counted, as the core counts what it still queued.
        st.stats.dropped_with_incoming += self.buf.len() as u64;
        let _ = st.comm.unsubscribe(self.sub);
        drain(&self.inner, &mut st);
    }
}

/// A received message (Fabric's `ReceivedMessage`): the message, its original Envelope
/// bytes, who sent it, and the means to answer on the same connection.
#[derive(Clone)]
pub struct Received {
    /// Always `Some` but in `drop`, which gives the allocation back to the core.
    msg: Option<Box<ReceivedMessage>>,
    inner: Arc<Inner>,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.msg(), f)
    }
}

/// A dropped delivery of an Envelope this large or larger releases the buffer it refers to
/// at once; a smaller DataMessage when its allocation is next used ([`keep_until_reused`]).
const RELEASE_ON_DROP: usize = 64 * 1024;

/// Whether a dropped delivery may keep what it refers to until its allocation is reused:
/// only a small DataMessage without private data, whose every field is a slice of the
/// received buffer. Anything else is emptied at once: repeated fields can decode to far
/// more than their Envelope (30,000 empty alive Envelopes fit in 60 KB of a membership
/// response and take 4 MiB decoded), and a kept allocation may wait long to be reused.
fn keep_until_reused(msg: &ReceivedMessage) -> bool {
    use fabric_gossip_core::proto::gossip::gossip_message::Content;
    msg.envelope_bytes.len() < RELEASE_ON_DROP
        && matches!(
            &msg.message.content,
            Some(Content::DataMsg(d))
                if d.payload.as_ref().is_none_or(|p| p.private_data.is_empty())
        )
}

impl Drop for Received {
    /// The message's allocation goes back to the core for a later message (see
    /// [`fabric_gossip_core::Comm::recycle_delivery`]).
    ///
    /// What a small message refers to (the received buffer, shared with the messages read
    /// with it) is released when the core decodes the next message into the allocation,
    /// on the connection's thread, which took the buffer's reference count for each field
    /// it decoded: released here, on the application's thread, that count's cache line
    /// went from core to core and back for every message, about 2 % of the CPU of a
    /// lossless one-way run (`bench_report --only ratio`, 2026-12-03). The buffers held
    /// this way are at most those of the last `2 × (subscription_buffer +
    /// recv_buffer_size)` small messages (the deliveries kept here and in the core), twice
    /// what a full subscription queue holds. A large message (64 KiB or more) has a
    /// buffer of its own, and any other kind of message may hold more than its Envelope's
    /// size decoded: both are released here (`keep_until_reused`).
    fn drop(&mut self) {
        if let Some(mut msg) = self.msg.take() {
            if !keep_until_reused(&msg) {
                msg.clear();
            }
            self.inner.recycle_delivery(msg);
        }
    }
}

impl Received {
    fn msg(&self) -> &ReceivedMessage {
        self.msg
            .as_deref()
            .expect("a Received holds its message until dropped")
    }

    /// The decoded message.
    pub fn message(&self) -> &GossipMessage {
        &self.msg().message
    }

    /// The decoded Envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.msg().envelope
    }

    /// The Envelope exactly as received: verify and forward these bytes, never a
    /// re-encoding (spec section 3).
    pub fn envelope_bytes(&self) -> &Bytes {
        &self.msg().envelope_bytes
    }

    /// What the sender proved in its handshake.
    pub fn info(&self) -> &Arc<ConnectionInfo> {
        &self.msg().info
    }

    /// The sender's PKI-ID.
    pub fn sender(&self) -> &PkiId {
        self.msg().sender()
    }

    /// The core's view of the message, for code shared with other transports.
    pub fn as_received_message(&self) -> &ReceivedMessage {
        self.msg()
    }

    /// Re-wraps the message with its original bytes, for forwarding.
    pub fn to_signed(&self) -> SignedMessage {
        self.msg().to_signed()
    }

    /// Fabric's `Respond`: sends `msg`, noop-signed, back on the connection this message
    /// came in on, waiting for buffer room. Fails with `ConnectionClosed` if it is gone.
    pub async fn respond(&self, msg: GossipMessage) -> Result<(), Error> {
        let conn = self.msg().conn;
        self.inner
            .retry_blocked(|c, now| c.respond(now, conn, msg.clone()))
            .await
    }

    /// Fabric's `Ack`: answers this message's nonce with an Acknowledgement carrying
    /// `error` (`None` for success).
    pub async fn ack(&self, error: Option<&str>) -> Result<(), Error> {
        let conn = self.msg().conn;
        let nonce = self.msg().message.nonce;
        self.inner
            .retry_blocked(|c, now| c.ack(now, conn, nonce, error))
            .await
    }

    /// [`Received::ack`] that never waits: `Ok(true)` queued, `Ok(false)` dropped because
    /// the connection's send buffer is full (counted in `Stats::dropped_overflow`). For an
    /// application answering many peers, so that one that stopped reading cannot hold its
    /// answers to the others (the sender's SendWithAck then times out, as with a lost ack).
    pub fn try_ack(&self, error: Option<&str>) -> Result<bool, Error> {
        let conn = self.msg().conn;
        let nonce = self.msg().message.nonce;
        self.inner
            .with_core(|c, now| c.ack_or_drop(now, conn, nonce, error))
    }
}

/// `host:port` with a non-empty host and a 16-bit port (an IPv6 literal in brackets
/// passes: the port is after the last colon).
fn is_host_port(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_core::StreamId;
    use fabric_gossip_core::proto::gossip::gossip_message::Content;
    use fabric_gossip_core::proto::gossip::{DataMessage, MembershipResponse, Payload};

    fn received(message: GossipMessage) -> ReceivedMessage {
        let signed = SignedMessage::noop(message);
        ReceivedMessage {
            message: signed.message().clone(),
            envelope: Envelope::default(),
            envelope_bytes: signed.envelope_bytes().clone(),
            conn: StreamId::from_parts(1, 0),
            info: Arc::new(ConnectionInfo {
                id: PkiId::from("p"),
                identity: Bytes::new(),
                endpoint: String::new(),
                signed_data: Bytes::new(),
                signature: Bytes::new(),
            }),
        }
    }

    fn with(content: Content) -> GossipMessage {
        GossipMessage {
            content: Some(content),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_small_plain_data_message_keeps_its_fields_once_dropped() {
        let data = |len: usize, private: usize| {
            with(Content::DataMsg(DataMessage {
                payload: Some(Payload {
                    seq_num: 1,
                    data: vec![7u8; len].into(),
                    private_data: vec![Bytes::new(); private],
                }),
            }))
        };
        assert!(keep_until_reused(&received(data(1024, 0))));
        // Large: its buffer goes at once.
        assert!(!keep_until_reused(&received(data(RELEASE_ON_DROP, 0))));
        // Repeated fields decode to more than their bytes: 30,000 empty alive Envelopes
        // are 60 KB on the wire and 4 MiB decoded.
        assert!(!keep_until_reused(&received(data(16, 3))));
        let flood = with(Content::MemRes(MembershipResponse {
            alive: vec![Envelope::default(); 30_000],
            dead: Vec::new(),
        }));
        let flood = received(flood);
        assert!(flood.envelope_bytes.len() < RELEASE_ON_DROP);
        assert!(!keep_until_reused(&flood));
    }

    /// The line is drawn at 64 KiB of Envelope, as documented: a DataMessage a byte
    /// under it keeps its fields once dropped, one of 64 KiB is released at once.
    #[test]
    fn a_data_message_is_released_at_once_from_64_kib_of_envelope() {
        let mut m = received(with(Content::DataMsg(DataMessage::default())));
        for (len, kept) in [(32 * 1024, true), (65_535, true), (65_536, false)] {
            m.envelope_bytes = Bytes::from(vec![0u8; len]);
            assert_eq!(keep_until_reused(&m), kept, "an Envelope of {len} bytes");
        }
    }
}
