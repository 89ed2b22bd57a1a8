//! How a simulated node is described, and what is recorded about it.

use crate::fault::ReaderMode;
use crate::layer::{LayerContext, LayerFactory, SimLayer};
use bytes::Bytes;
use core::fmt;
use fabric_gossip_core::{
    CertHash, Comm, Config, Event, HandshakeError, Instant, ReceivedMessage, Security, Stats,
    SubscriptionId, TestOnlyHmacSecurity,
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
    pub subscribe_all: bool,
    /// The gRPC server accepts connections but never answers Ping.
    pub hang_ping: bool,
    /// The node writes nothing on its streams: it never sends its `ConnEstablish`.
    pub silent: bool,
    /// The first envelope of each of its streams (the `ConnEstablish`) arrives with a
    /// mangled signature.
    pub bad_signature: bool,
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
            .field("layer", &self.layer.is_some())
            .finish()
    }
}

impl NodeSpec {
    /// A node with Fabric's default configuration and the test provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `config` (seed and TLS are still set by the simulator).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses a custom provider factory (e.g. a real X.509 MSP).
    pub fn security(
        mut self,
        f: impl Fn(&str, u32) -> Box<dyn Security> + Send + Sync + 'static,
    ) -> Self {
        self.security = Some(Arc::new(f));
        self
    }

    /// Sets the TLS mode.
    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the reader mode.
    pub fn reader(mut self, reader: ReaderMode) -> Self {
        self.reader = reader;
        self
    }

    /// Whether to subscribe to every message automatically.
    pub fn subscribe_all(mut self, on: bool) -> Self {
        self.subscribe_all = on;
        self
    }

    /// Runs a layer above the core: `f` makes it at every start and restart of the
    /// node's process (see the `layer` module for what the simulator does with it).
    pub fn layer<L: SimLayer + 'static>(
        mut self,
        f: impl Fn(&LayerContext) -> L + Send + Sync + 'static,
    ) -> Self {
        self.layer = Some(Arc::new(move |ctx| Box::new(f(ctx)) as Box<dyn SimLayer>));
        self
    }

    /// Makes Ping hang.
    pub fn hang_ping(mut self, on: bool) -> Self {
        self.hang_ping = on;
        self
    }

    /// Makes the node silent.
    pub fn silent(mut self, on: bool) -> Self {
        self.silent = on;
        self
    }

    /// Mangles the node's `ConnEstablish` signatures.
    pub fn bad_signature(mut self, on: bool) -> Self {
        self.bad_signature = on;
        self
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

/// Counters summed over every node and every incarnation (a crashed process's counters are
/// kept), for summaries. Field meanings follow [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// Envelopes written (handshakes excluded).
    pub sent: u64,
    /// Envelopes received on established connections.
    pub received: u64,
    /// Send-buffer overflows.
    pub dropped_overflow: u64,
    /// Queued messages lost when their connection closed.
    pub dropped_on_close: u64,
    /// Messages whose connection attempt failed.
    pub dropped_no_connection: u64,
    /// Deliveries dropped by a full subscription.
    pub dropped_subscription_overflow: u64,
    /// Deliveries discarded at stop.
    pub dropped_on_stop: u64,
    /// Received messages nobody subscribed to.
    pub unrouted: u64,
    /// Envelopes that closed their connection for being malformed or oversized.
    pub malformed: u64,
    /// Successful handshakes.
    pub handshakes_ok: u64,
    /// Failed handshakes by [`HandshakeError::LABELS`] index (every label has a slot:
    /// the array is sized by the failure kinds, so a new reason cannot be dropped).
    pub handshake_failures: [u64; fabric_gossip_core::HandshakeFailure::COUNT],
    /// Connections registered.
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Crossing dials resolved.
    pub crossings: u64,
    /// PresumedDead events.
    pub presumed_dead: u64,
    /// IdentitySwitch events.
    pub identity_switches: u64,
    /// Read pauses.
    pub read_pauses: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, s: &Stats) {
        self.sent += s.sent;
        self.received += s.received;
        self.dropped_overflow += s.dropped_overflow;
        self.dropped_on_close += s.dropped_on_close;
        self.dropped_no_connection += s.dropped_no_connection;
        self.dropped_subscription_overflow += s.dropped_subscription_overflow;
        self.dropped_on_stop += s.dropped_on_stop;
        self.unrouted += s.unrouted;
        self.malformed += s.malformed + s.oversized;
        self.handshakes_ok += s.handshakes_ok;
        for (t, x) in self.handshake_failures.iter_mut().zip(s.handshake_failures) {
            *t += x;
        }
        self.connections_opened += s.connections_opened;
        self.connections_closed += s.connections_closed;
        self.crossings += s.crossings;
        self.presumed_dead += s.presumed_dead;
        self.identity_switches += s.identity_switches;
        self.read_pauses += s.read_pauses;
    }

    pub(crate) fn merge(&mut self, o: &Totals) {
        self.sent += o.sent;
        self.received += o.received;
        self.dropped_overflow += o.dropped_overflow;
        self.dropped_on_close += o.dropped_on_close;
        self.dropped_no_connection += o.dropped_no_connection;
        self.dropped_subscription_overflow += o.dropped_subscription_overflow;
        self.dropped_on_stop += o.dropped_on_stop;
        self.unrouted += o.unrouted;
        self.malformed += o.malformed;
        self.handshakes_ok += o.handshakes_ok;
        for (t, x) in self.handshake_failures.iter_mut().zip(o.handshake_failures) {
            *t += x;
        }
        self.connections_opened += o.connections_opened;
        self.connections_closed += o.connections_closed;
        self.crossings += o.crossings;
        self.presumed_dead += o.presumed_dead;
        self.identity_switches += o.identity_switches;
        self.read_pauses += o.read_pauses;
    }

    /// Failed handshakes by label, only the non-zero ones, in [`HandshakeError::LABELS`]
    /// order.
    pub fn handshake_failures_by_label(&self) -> Vec<(&'static str, u64)> {
        HandshakeError::LABELS
            .iter()
            .zip(self.handshake_failures)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (*l, n))
            .collect()
    }

    /// All failed handshakes.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures.iter().sum()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_keep_every_handshake_failure_label() {
        let mut s = Stats::default();
        s.handshake_failures.iter_mut().for_each(|x| *x = 1);
        let mut t = Totals::default();
        t.add(&s);
        let mut all = Totals::default();
        all.merge(&t);
        let labels = all.handshake_failures_by_label();
        assert_eq!(labels.len(), HandshakeError::LABELS.len());
        assert_eq!(
            all.handshake_failures_total(),
            HandshakeError::LABELS.len() as u64
        );
        assert_eq!(
            labels.last().map(|(l, _)| *l),
            HandshakeError::LABELS.last().copied()
        );
    }
}
