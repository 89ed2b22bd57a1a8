//! How a simulated node is described, and what is recorded about it.

use crate::fault::ReaderMode;
use crate::layer::{HostedLayer, LayerContext, LayerError, LayerEvent, LayerFactory, SimLayer};
use bytes::Bytes;
use core::fmt;
use fabric_gossip_core::{
    CertHash, Comm, Config, Event, Instant, ReceivedMessage, Security, SubscriptionId,
    TestOnlyHmacSecurity,
};
use std::sync::Arc;

/// The core as the simulator runs it: any security provider, boxed, so that nodes with
/// different providers share one network.
pub type SimComm = Comm<Box<dyn Security>>;

/// Makes a node's security provider from its endpoint and identity generation (0 at
/// first start, +1 at every restart with a new identity). A factory rather than a value,
/// because a restarted process must build its provider again; it must return a distinct
/// identity for each generation, or "new identity" restarts are not new.
pub type SecurityFactory = Arc<dyn Fn(&str, u32) -> Box<dyn Security> + Send + Sync>;

/// TLS as the simulator fakes it: each node gets made-up client and server certificate
/// hashes, the dialer learns the server's from the dial and the acceptor the client's
/// from the stream, exactly as a real driver reports them to the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS: no certificates, no binding.
    #[default]
    Off,
    /// Mutual TLS with honest hashes.
    Mutual,
    /// TLS on, but the node presents no client certificate when it dials.
    MutualNoClientCert,
    /// TLS on, but the node claims certificate hashes other than the ones it presents.
    MutualWrongClaim,
}

/// Everything needed to start (and restart) a node.
#[derive(Clone)]
pub struct NodeSpec {
    /// The core's configuration; its `rng_seed` and `tls` are overwritten by the simulator
    /// (the seed comes from the run's RNG, the TLS hashes from [`TlsMode`]).
    pub config: Config,
    /// The security provider factory; `None` uses Fabric's test provider
    /// ([`TestOnlyHmacSecurity`]) with identity = endpoint, `endpoint#G` for generation G.
    pub security: Option<SecurityFactory>,
    /// TLS behaviour.
    pub tls: TlsMode,
    /// How the application consumes deliveries.
    pub reader: ReaderMode,
    /// Subscribe to every message at start and restart, as most tests and workloads want.
    /// Beside a layer, that subscription also gets a copy of every message the layer
    /// consumes (the core copies a message to each subscription that accepts it), and a
    /// reader that falls behind pauses the streams the layer reads too: turn it off with a
    /// layer (`NodeSpec::subscribe_all(false)`), or subscribe to what the layer leaves
    /// (for membership, what `fabric_gossip_discovery::takes` refuses).
    pub subscribe_all: bool,
    /// The gRPC server accepts connections but never answers Ping.
    pub hang_ping: bool,
    /// The node writes nothing on its streams: it never sends its `ConnEstablish`.
    pub silent: bool,
    /// The first envelope of each of its streams (the `ConnEstablish`) arrives with a
    /// mangled signature.
    pub bad_signature: bool,
    /// Lets the node's security provider sign the same message differently each time
    /// (ECDSA with random nonces: `fabric_gossip_msp::MspSecurity` as built, unless
    /// `with_deterministic_signatures`). Off by default, and then the simulator refuses to
    /// start such a node ([`StartError::RandomSignatures`]): signatures travel in every
    /// handshake and alive message, so the run would differ from its seed's trace on every
    /// replay, and a [`Sweep`](crate::Sweep) would find it only on the seeds it replays.
    /// Turn it on for a run that needs no replay (same behaviour, a different trace).
    ///
    /// [`StartError::RandomSignatures`]: crate::StartError::RandomSignatures
    pub random_signatures: bool,
    /// The layer above the core its processes run (membership, a user's protocol), made
    /// anew at every start and restart; `None`: the core alone. See the `layer` module.
    pub layer: Option<LayerFactory>,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            config: Config::default(),
            security: None,
            tls: TlsMode::Off,
            reader: ReaderMode::Eager,
            subscribe_all: true,
            hang_ping: false,
            silent: false,
            bad_signature: false,
            random_signatures: false,
            layer: None,
        }
    }
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSpec")
            .field("config", &self.config)
            .field("custom_security", &self.security.is_some())
            .field("tls", &self.tls)
            .field("reader", &self.reader)
            .field("subscribe_all", &self.subscribe_all)
            .field("hang_ping", &self.hang_ping)
            .field("silent", &self.silent)
            .field("bad_signature", &self.bad_signature)
            .field("random_signatures", &self.random_signatures)
            .field("layer", &self.layer.is_some())
            .finish()
    }
}

/// Builder methods that each set one field of a [`NodeSpec`] to the value given.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

impl NodeSpec {
    /// A node with Fabric's default configuration and the test provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses a custom provider factory (e.g. a real X.509 MSP). The factory is called with
    /// the node's endpoint, `127.0.0.1:{7051 + node id}` (node ids count from 0 in the
    /// order of [`Sim::add_node`](crate::Sim::add_node)), and its identity generation.
    ///
    /// Its provider must sign deterministically, or the node does not start (see
    /// [`random_signatures`](Self::random_signatures)): for
    /// `fabric_gossip_msp::MspSecurity`, call `with_deterministic_signatures()` on it.
    pub fn security(
        mut self,
        f: impl Fn(&str, u32) -> Box<dyn Security> + Send + Sync + 'static,
    ) -> Self {
        self.security = Some(Arc::new(f));
        self
    }

    /// Runs a layer above the core: `f` makes it at every start and restart of the
    /// node's process (see the `layer` module for what the simulator does with it). Turn
    /// [`subscribe_all`](Self::subscribe_all) off beside it unless the application also
    /// wants the layer's own messages: see that field.
    ///
    /// A layer whose constructor can fail (`Discovery::new` refuses a bad configuration)
    /// is better given to [`try_layer`](Self::try_layer), so that its error is the
    /// simulator's to return rather than a panic inside the run.
    pub fn layer<L: SimLayer>(
        mut self,
        f: impl Fn(&LayerContext) -> L + Send + Sync + 'static,
    ) -> Self {
        self.layer = Some(Arc::new(move |ctx| {
            Ok(HostedLayer::new(f(ctx), LayerEvent::new))
        }));
        self
    }

    /// [`layer`](Self::layer) for a factory that can fail, as the tonic driver's
    /// `NodeBuilder::try_layer` is: its error is [`StartError::Layer`] from
    /// [`Sim::add_node`] or [`Sim::restart`] (and a `restart failed` trace line for a
    /// scheduled restart), and the node is not running, where an `expect` inside a
    /// [`layer`](Self::layer) factory would panic in the middle of the run. A factory
    /// that fails the same way for the same [`LayerContext`] keeps runs deterministic:
    /// the seed it was given is drawn either way. For membership:
    /// `.try_layer(|ctx| Discovery::new(DiscoveryConfig::new(ctx.endpoint.clone()).with_seed(ctx.seed)))`.
    ///
    /// [`StartError::Layer`]: crate::StartError::Layer
    /// [`Sim::add_node`]: crate::Sim::add_node
    /// [`Sim::restart`]: crate::Sim::restart
    pub fn try_layer<L, E>(
        mut self,
        f: impl Fn(&LayerContext) -> Result<L, E> + Send + Sync + 'static,
    ) -> Self
    where
        L: SimLayer,
        E: Into<LayerError>,
    {
        self.layer = Some(Arc::new(move |ctx| {
            let layer = f(ctx).map_err(Into::into)?;
            Ok(HostedLayer::new(layer, LayerEvent::new))
        }));
        self
    }

    setters! {
        /// Uses `config` (seed and TLS are still set by the simulator).
        config: Config;
        /// Sets the TLS mode.
        tls: TlsMode;
        /// Sets the reader mode.
        reader: ReaderMode;
        /// Whether to subscribe to every message automatically.
        subscribe_all: bool;
        /// Makes Ping hang.
        hang_ping: bool;
        /// Makes the node silent.
        silent: bool;
        /// Mangles the node's `ConnEstablish` signatures.
        bad_signature: bool;
        /// Lets its security provider sign with random nonces (see the field).
        random_signatures: bool;
    }

    /// The security provider of this node's process at `endpoint`, identity generation
    /// `generation`: what the simulator builds at each (re)start, and what another driver
    /// hosting the same spec (a real-network test harness) should build, so that a spec
    /// means the same identities everywhere.
    pub fn make_security(&self, endpoint: &str, generation: u32) -> Box<dyn Security> {
        match &self.security {
            Some(f) => f(endpoint, generation),
            None if generation == 0 => Box::new(TestOnlyHmacSecurity::new(endpoint)),
            None => Box::new(TestOnlyHmacSecurity::new(format!(
                "{endpoint}#{generation}"
            ))),
        }
    }
}

/// Whether a node's process is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Running and listening.
    Up,
    /// `stop` was called: the comm is stopped and the listener closed.
    Stopped,
    /// The process died; nothing of it remains but its records.
    Crashed,
}

/// One message taken from a subscription by the node's (simulated) application.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// Virtual time of delivery.
    pub at: Instant,
    /// Which run of the node's process received it (0 first, +1 per restart).
    pub incarnation: u32,
    /// The subscription it came from.
    pub sub: SubscriptionId,
    /// The message, with its connection info.
    pub msg: ReceivedMessage,
}

/// Made-up certificate hashes for a node identity: stable per (endpoint, generation), so a
/// restarted process presents the same certificate and a new identity a new one.
pub(crate) fn made_up_cert(role: &str, endpoint: &str, generation: u32) -> CertHash {
    fabric_gossip_core::cert_hash(format!("sim {role} cert {endpoint} gen {generation}").as_bytes())
}

/// The application's view of an event, kept with its time.
pub(crate) type EventRecord = (Instant, Event);

/// Shared read-only payload for workload messages, so sending costs no copy of the data.
pub(crate) fn payload(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}
