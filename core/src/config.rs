//! Settings, with Fabric's defaults.

use core::time::Duration;

/// Default of [`Config::max_queued_events`].
pub const MAX_QUEUED_EVENTS: usize = 65_536;

/// Default of [`Config::send_buffer_bytes`]: 32 MiB, room for the send buffer of 20 of
/// the blocks a Fabric channel cuts by default (at most 2 MB preferred, 10 MB absolute);
/// a connection holding nothing still takes one message up to `max_message_size`.
pub const SEND_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// The shortest wait before a retired (or crossing-loser) stream whose reading is paused
/// is looked at again. Normally that wait is [`Config::crossing_grace`]; a zero grace
/// would otherwise re-arm the look at the very instant it fires, and `handle_timeout`
/// would never return.
pub const PAUSED_RELOOK_MIN: Duration = Duration::from_millis(10);

/// SHA-256 of a DER certificate, as carried in `ConnEstablish.tls_cert_hash`.
pub type CertHash = [u8; 32];

/// The node's own TLS certificates, by role. With TLS on, Fabric binds the certificate a
/// side actually used on a connection into its handshake, and that differs by role: the
/// client certificate when the side opened the stream, the server certificate when it
/// accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsHashes {
    /// SHA-256 of the DER of the certificate presented when dialling (client role).
    pub client_cert_hash: CertHash,
    /// SHA-256 of the DER of the certificate presented when accepting (server role).
    pub server_cert_hash: CertHash,
}

/// Configuration of one comm core. `Default` gives Fabric's code defaults
/// (`gossip/comm`); [`Config::fabric_sample_peer`] gives the sample `core.yaml` values.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Upper bound on dialling a peer (Fabric `dialTimeout`, 3 s).
    pub dial_timeout: Duration,
    /// Upper bound on a Ping and on waiting for the remote's `ConnEstablish`
    /// (Fabric `connTimeout`, 2 s).
    pub conn_timeout: Duration,
    /// Upper bound on a whole `handshake()` operation (Fabric `handshakeTimeout`, 10 s).
    pub handshake_timeout: Duration,
    /// Messages a connection's send buffer holds before `send` drops (Fabric `sendBuffSize`,
    /// 20 in code, 200 in the sample peer config).
    pub send_buffer_size: usize,
    /// Bytes a connection's send buffer, wait queue and write window hold together before a
    /// further send is refused like one beyond `send_buffer_size` (dropped and counted, or
    /// `WouldBlock`); a connection holding nothing takes one message of any size. Beyond
    /// Fabric, which bounds its buffer in messages alone: a peer that never reads would
    /// otherwise hold `send_buffer_size` times the largest message (at the sample config's
    /// 200 and 100 MiB, 20 GB) per connection. Envelopes shared by several connections (a
    /// broadcast) count in each.
    pub send_buffer_bytes: usize,
    /// Blocking sends (`respond`, `ack`, `send_with_ack`, `send_wait`) that may wait for room
    /// per connection beyond the send buffer. Fabric parks one goroutine per such send with
    /// no bound; here the excess is refused with [`crate::Error::WouldBlock`].
    pub max_waiting_sends: usize,
    /// Envelopes the core lets the driver have in flight per stream (written but not yet
    /// confirmed with `handle_sent`). Effective buffering per connection is
    /// `send_buffer_size + write_window`.
    pub write_window: usize,
    /// Deliveries a subscription queues before the core asks the driver to pause reading the
    /// streams that feed it (Fabric's subscription buffer, 10). The depth that suits depends
    /// on where the consumer runs: on a multi-threaded runtime a queue of 1,024 cost 22-51 %
    /// more CPU per message than one of 64, with the consumer on the node's own
    /// current-thread runtime 64 cost 14-51 % more than 1,024, both in threads sleeping and
    /// waking (README, "A subscription buffer's depth, and where the consumer runs").
    pub subscription_buffer: usize,
    /// Extra deliveries a subscription accepts past `subscription_buffer` from drivers that
    /// still had envelopes in flight when reading was paused (Fabric `recvBuffSize`, 20).
    /// Past this, messages for that subscription are dropped and counted.
    pub recv_buffer_size: usize,
    /// PresumedDead notifications held until polled (Fabric buffers 100).
    pub presumed_dead_buffer: usize,
    /// Informational events (connected, disconnected, handshake failed) held until
    /// polled; beyond this many undrained ones they are dropped and counted in
    /// `Stats::events_dropped`. Results and PresumedDead have their own bounds.
    pub max_queued_events: usize,
    /// Largest Envelope accepted from the wire, in bytes (Fabric peer default 100 MiB).
    pub max_message_size: usize,
    /// Largest identity accepted in a `ConnEstablish`, in bytes. Beyond Fabric, which has no
    /// bound: a stored identity lives as long as its connection, so without one a peer could
    /// park up to `max_message_size` per identity-store slot. Real identities (an X.509 PEM
    /// in a `SerializedIdentity`, or Idemix) are a few KiB.
    pub max_identity_size: usize,
    /// Inbound streams that may be handshaking at once; when a new one arrives at the cap,
    /// the oldest pending one is refused first (its remote is the likeliest to be stuck).
    /// Default 2,048: what the tonic driver's pending connections (128) may open at once
    /// (16 streams each), so that unauthenticated connections within the driver's limits
    /// cannot push a legitimate handshake out.
    pub max_pending_handshakes: usize,
    /// Connections (authenticated streams) the core holds at most; further inbound streams
    /// are refused after the handshake.
    pub max_connections: usize,
    /// Identities the identity store keeps; when full, the oldest identity with no open
    /// connection is evicted.
    pub identity_store_capacity: usize,
    /// Concurrent `probe`/`handshake`/`send_with_ack` operations.
    pub max_operations: usize,
    /// Subscriptions (Accept calls) at most.
    pub max_subscriptions: usize,
    /// How long the side with the higher PKI-ID keeps its own losing stream of a crossing
    /// dial open before closing it (see the crate docs: crossing dials); also how often a
    /// retired stream kept open while its reading is paused is looked at again (at least
    /// [`PAUSED_RELOOK_MIN`]).
    pub crossing_grace: Duration,
    /// Own TLS certificate hashes; `None` runs without TLS (no certificate binding).
    pub tls: Option<TlsHashes>,
    /// Seed of the core's only randomness (SendWithAck nonces). Same seed, same nonces: the
    /// default, 0, is the same for every node, so a node in a real network should get its
    /// own (from the OS's randomness; the sans-IO core cannot draw one itself).
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dial_timeout: Duration::from_secs(3),
            conn_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            send_buffer_size: 20,
            send_buffer_bytes: SEND_BUFFER_BYTES,
            max_waiting_sends: 1024,
            write_window: 8,
            subscription_buffer: 10,
            recv_buffer_size: 20,
            presumed_dead_buffer: 100,
            max_queued_events: MAX_QUEUED_EVENTS,
            max_message_size: fabric_gossip_proto::MAX_MESSAGE_SIZE,
            max_identity_size: 64 * 1024,
            max_pending_handshakes: 2048,
            max_connections: 4096,
            identity_store_capacity: 16 * 1024,
            max_operations: 64 * 1024,
            max_subscriptions: 1024,
            crossing_grace: Duration::from_secs(2),
            tls: None,
            rng_seed: 0,
        }
    }
}

impl Config {
    /// Largest first Envelope of a stream (the remote's `ConnEstablish`), in bytes:
    /// `max_identity_size` + 64 KiB, at most `max_message_size`. Beyond Fabric, which reads
    /// a first message up to its message limit: decoding is where an unauthenticated remote
    /// could make a node allocate many times what it sent (a 90 MB message of empty
    /// repeated fields took one to 2.6 GB), while a `ConnEstablish` is an identity, a
    /// PKI-ID, a hash and a signature. Larger first messages are refused undecoded as
    /// `Malformed` and counted in `Stats::oversized`.
    pub fn max_handshake_message_size(&self) -> usize {
        self.max_identity_size
            .saturating_add(64 * 1024)
            .min(self.max_message_size)
    }

    /// The values of Fabric's sample peer `core.yaml` (send buffer 200).
    pub fn fabric_sample_peer() -> Self {
        Config {
            send_buffer_size: 200,
            ..Config::default()
        }
    }

    /// Sets the RNG seed (builder style, since the struct is non-exhaustive).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Turns on TLS certificate binding with the given own certificate hashes.
    pub fn with_tls(mut self, tls: TlsHashes) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the send buffer size.
    pub fn with_send_buffer(mut self, n: usize) -> Self {
        self.send_buffer_size = n;
        self
    }

    /// Sets the bytes a connection's queues hold ([`Config::send_buffer_bytes`]).
    pub fn with_send_buffer_bytes(mut self, n: usize) -> Self {
        self.send_buffer_bytes = n;
        self
    }

    /// Sets the per-subscription delivery buffer.
    pub fn with_subscription_buffer(mut self, n: usize) -> Self {
        self.subscription_buffer = n;
        self
    }

    /// Sets the write window.
    pub fn with_write_window(mut self, n: usize) -> Self {
        self.write_window = n;
        self
    }

    /// Sets dial, connection and handshake time-outs at once.
    pub fn with_timeouts(mut self, dial: Duration, conn: Duration, handshake: Duration) -> Self {
        self.dial_timeout = dial;
        self.conn_timeout = conn;
        self.handshake_timeout = handshake;
        self
    }

    /// Bounds below which the core cannot work are raised to 1, so a zero never wedges it.
    pub(crate) fn sanitized(mut self) -> Self {
        self.write_window = self.write_window.max(1);
        self.subscription_buffer = self.subscription_buffer.max(1);
        self.presumed_dead_buffer = self.presumed_dead_buffer.max(1);
        self.max_queued_events = self.max_queued_events.max(1);
        self.max_pending_handshakes = self.max_pending_handshakes.max(1);
        self.max_connections = self.max_connections.max(1);
        self.identity_store_capacity = self.identity_store_capacity.max(2);
        self.max_operations = self.max_operations.max(1);
        self.max_subscriptions = self.max_subscriptions.max(1);
        self
    }
}
