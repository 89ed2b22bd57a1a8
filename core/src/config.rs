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

/// The shortest wait before a dial tries again after a failed connection attempt, whatever
/// [`DialBackoff`] computes: a back-off of zero (a zero `base_delay`, or a jitter of 1
/// drawing its lowest factor) would otherwise have a driver whose attempts fail at once
/// dial again at the same instant, for ever, without its clock moving.
pub const DIAL_RETRY_MIN: Duration = Duration::from_millis(10);

/// Default of [`Config::identity_usage_threshold`]: Fabric's identity mapper purges an
/// identity unused for an hour (`gossip/identity/identity.go`, `usageThreshold`). An hour
/// is far beyond anything a live peer lets pass between two uses (the membership layer
/// verifies each member's alive message every 5 s), and short enough that the identities
/// of peers gone for good, and connections to them, do not stay for the life of the node.
pub const IDENTITY_USAGE_THRESHOLD: Duration = Duration::from_secs(3600);

/// The shortest interval between two sweeps of the identity store for unused identities
/// ([`Config::identity_sweep_interval`]): a zero threshold would otherwise re-arm the sweep
/// at the very instant it fires, and `handle_timeout` would never return.
pub const IDENTITY_SWEEP_MIN: Duration = Duration::from_millis(10);

/// How a dial waits before trying again after one of its connection attempts failed:
/// grpc-go's connection back-off, which Fabric's dials run under without naming it
/// (`grpc.DialContext` with `WithBlock()` and no back-off option; grpc-go v1.31.0, as
/// Fabric v2.4.9 vendors it, `backoff/backoff.go` and `internal/backoff/backoff.go`).
///
/// After the `n`-th failed attempt of a dial (`n` from 0) the next one starts
/// `base_delay` later for `n = 0`, without jitter, and otherwise
/// `min(base_delay · multiplierⁿ, max_delay) · (1 + jitter · u)` later, `u` drawn evenly
/// from [-1, 1) by the core's seeded generator: with the defaults, after 1 s, then
/// 1.28–1.92 s, then 2.05–3.07 s. The wait counts from the failure, not from the start of
/// the attempt, as grpc-go's does. All of it happens within the dial's `dial_timeout`:
/// a dial whose next attempt would start after its deadline waits for the deadline and
/// fails then, with the last attempt's error, as `grpc.DialContext` returns only when its
/// context ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DialBackoff {
    /// The wait after the first failed attempt (grpc-go `BaseDelay`, 1 s).
    pub base_delay: Duration,
    /// The factor the wait grows by after each further failure (grpc-go `Multiplier`,
    /// 1.6); below 1 (or not a number) counts as 1.
    pub multiplier: f64,
    /// How far each wait but the first is spread either way, as a fraction of it (grpc-go
    /// `Jitter`, 0.2), so that dials that failed together do not retry together; kept
    /// within 0 and 1.
    pub jitter: f64,
    /// The longest wait before jitter (grpc-go `MaxDelay`, 120 s).
    pub max_delay: Duration,
}

impl DialBackoff {
    /// grpc-go's `backoff.DefaultConfig`, what every Fabric dial uses.
    pub const GRPC_DEFAULT: DialBackoff = DialBackoff {
        base_delay: Duration::from_secs(1),
        multiplier: 1.6,
        jitter: 0.2,
        max_delay: Duration::from_secs(120),
    };

    /// The wait after the `failures`-th failed attempt (1 for the first), given `unit`,
    /// a draw evenly from [0, 1) (grpc-go's `Exponential.Backoff(retries)` with
    /// `retries = failures - 1`), at least [`DIAL_RETRY_MIN`].
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let delay = if failures <= 1 {
            self.base_delay
        } else {
            let max = self.max_delay.as_nanos() as f64;
            // One power, not a loop per failure: a dial may fail many thousands of times
            // under a long `dial_timeout`. An infinite or NaN product is cut to `max`.
            let grown =
                self.base_delay.as_nanos() as f64 * self.multiplier.powf(f64::from(failures - 1));
            let d = grown.min(max) * (1.0 + self.jitter * (unit * 2.0 - 1.0));
            // `as` saturates: a negative or NaN product is 0, a huge one u64::MAX.
            Duration::from_nanos(d as u64)
        };
        delay.max(DIAL_RETRY_MIN)
    }

    /// Multiplier and jitter brought within the bounds [`DialBackoff::delay`] assumes.
    fn sanitized(mut self) -> Self {
        if self.multiplier.is_nan() || self.multiplier < 1.0 {
            self.multiplier = 1.0;
        }
        self.jitter = if self.jitter.is_nan() {
            0.0
        } else {
            self.jitter.clamp(0.0, 1.0)
        };
        self
    }
}

impl Default for DialBackoff {
    fn default() -> Self {
        DialBackoff::GRPC_DEFAULT
    }
}

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
    /// Upper bound on dialling a peer (Fabric `dialTimeout`, 3 s), its retries included.
    pub dial_timeout: Duration,
    /// How a dial tries again after a failed connection attempt (refused, unreachable, a
    /// failed TLS handshake: any failure the driver reports), until `dial_timeout`:
    /// grpc-go's back-off, as every Fabric dial has it, so a peer whose port opens within
    /// the dial timeout (a restart) is reached by the send that dialled it, and a peer
    /// that stays down is presumed dead after `dial_timeout`, not at its first refusal.
    /// `None`: one attempt, whose failure ends the dial at once (this crate's behaviour
    /// before 2026-12-05, quicker to report a dead peer than Fabric is).
    ///
    /// What it retries is the connection attempt alone (the driver's `Err` to an
    /// `Action::Dial`): a Ping that fails or a gossip handshake that is refused ends the
    /// dial at once. Every dial retries, a `probe` and a `handshake` too, so with the
    /// default a probe of a closed port, or a TLS dial of a plaintext port (a failed TLS
    /// handshake), fails after the whole `dial_timeout` (3 s), not at the first refusal,
    /// with the last attempt's error; give those a `Config` with `None` (or a shorter
    /// `dial_timeout`) when an answer at once matters more than riding out a restart.
    pub dial_backoff: Option<DialBackoff>,
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
    /// `send_buffer_size + write_window`, where Fabric's is `sendBuffSize` and the one
    /// message its writer holds: a peer that reads slowly has a few more messages queued
    /// for it here before `send` drops (28 against 21 by default).
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
    /// Identities the identity store keeps (from handshakes and from
    /// [`Comm::learn_identity`](crate::Comm::learn_identity)), the node's own included;
    /// when full, the one held longest is evicted (counted in `Stats::identities_evicted`),
    /// one found in use by a connection counting as just stored, the node's own never.
    /// "Longest" counts from when it was stored: learning it again does not renew it.
    /// While every identity held is in use by a connection, none goes and the store holds
    /// more than this, as many as the connections need. At least 2 (a smaller value is
    /// raised to 2). A peer whose identity was evicted and that comes back with a renewed
    /// certificate is refused where it would have been an identity switch.
    pub identity_store_capacity: usize,
    /// How long an identity other than the node's own stays in the identity store unused
    /// before it is purged, and its connections closed with
    /// [`CloseReason::IdentityUnused`](crate::CloseReason::IdentityUnused) (Fabric's
    /// identity mapper usage threshold, `identity.SetIdentityUsageThreshold`: one hour,
    /// which Fabric's `core.yaml` does not expose). The store is swept every tenth of it
    /// (at most every [`IDENTITY_SWEEP_MIN`]), as Fabric's mapper is, so an identity goes between
    /// one and 1.1 thresholds after its last use. A use is what Fabric's mapper `Get`
    /// is: a handshake that verified the remote with it, the identity-switch check of a
    /// dial that found another PKI-ID, and a layer's verification through
    /// [`Comm::use_identity`](crate::Comm::use_identity) (the membership layer's, of every
    /// alive message). Without the purge, the store holds the identity of every peer ever
    /// met (up to `identity_store_capacity`) and keeps a connection to a peer that has
    /// gone quiet open forever. `None`: never purged for disuse (this crate's behaviour
    /// before 2026-12-06).
    pub identity_usage_threshold: Option<Duration>,
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
    /// Seed of the core's only randomness (SendWithAck nonces, and on a stream of its own
    /// the jitter of [`DialBackoff`]). Same seed, same nonces and the same retry times: the
    /// default, 0, is the same for every node, so a node in a real network should get its
    /// own (from the OS's randomness; the sans-IO core cannot draw one itself).
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dial_timeout: Duration::from_secs(3),
            dial_backoff: Some(DialBackoff::GRPC_DEFAULT),
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
            identity_usage_threshold: Some(IDENTITY_USAGE_THRESHOLD),
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

    /// Sets how a dial retries a failed connection attempt ([`Config::dial_backoff`];
    /// `None`: one attempt).
    pub fn with_dial_backoff(mut self, backoff: Option<DialBackoff>) -> Self {
        self.dial_backoff = backoff;
        self
    }

    /// Sets how long an identity may go unused before it is purged
    /// ([`Config::identity_usage_threshold`]; `None`: never).
    pub fn with_identity_usage_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.identity_usage_threshold = threshold;
        self
    }

    /// How often the identity store is swept for unused identities: a tenth of the
    /// threshold, as Fabric's mapper does, at least [`IDENTITY_SWEEP_MIN`] (a zero
    /// threshold must not make the core spin); `None` when nothing is purged for disuse.
    pub fn identity_sweep_interval(&self) -> Option<Duration> {
        self.identity_usage_threshold
            .map(|t| (t / 10).max(IDENTITY_SWEEP_MIN))
    }

    /// Bounds below which the core cannot work are raised to 1, so a zero never wedges it.
    pub(crate) fn sanitized(mut self) -> Self {
        self.dial_backoff = self.dial_backoff.map(DialBackoff::sanitized);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn the_first_retry_waits_the_base_delay_without_jitter() {
        let b = DialBackoff::GRPC_DEFAULT;
        for unit in [0.0, 0.5, 0.999] {
            assert_eq!(b.delay(1, unit), Duration::from_secs(1));
        }
    }

    #[test]
    fn later_waits_grow_by_the_multiplier_within_the_jitter() {
        let b = DialBackoff::GRPC_DEFAULT;
        // grpc-go: 1.6 s ± 20 %, then 2.56 s ± 20 %.
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(1600));
        assert!((ms(b.delay(2, 0.0)) - 1280.0).abs() < 1e-3);
        assert!((ms(b.delay(2, 1.0)) - 1920.0).abs() < 1e-3);
        assert!((ms(b.delay(3, 0.5)) - 2560.0).abs() < 1e-3);
        assert!((ms(b.delay(3, 0.0)) - 2048.0).abs() < 1e-3);
    }

    #[test]
    fn the_wait_stops_growing_at_max_delay_before_jitter() {
        let b = DialBackoff::GRPC_DEFAULT;
        assert_eq!(b.delay(100, 0.5), Duration::from_secs(120));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(120));
        assert!((b.delay(100, 1.0).as_secs_f64() - 144.0).abs() < 1e-6);
    }

    #[test]
    fn no_wait_is_shorter_than_the_floor() {
        let zero = DialBackoff {
            base_delay: Duration::ZERO,
            ..DialBackoff::GRPC_DEFAULT
        };
        assert_eq!(zero.delay(1, 0.5), DIAL_RETRY_MIN);
        assert_eq!(zero.delay(5, 0.0), DIAL_RETRY_MIN);
        let wild = DialBackoff {
            jitter: 1.0,
            ..DialBackoff::GRPC_DEFAULT
        };
        assert_eq!(wild.delay(2, 0.0), DIAL_RETRY_MIN);
    }

    #[test]
    fn fabrics_sample_peer_is_the_default_with_a_send_buffer_of_200() {
        let sample = format!("{:?}", Config::fabric_sample_peer());
        assert_eq!(
            sample,
            format!("{:?}", Config::default().with_send_buffer(200))
        );
        assert_ne!(sample, format!("{:?}", Config::default()));
    }

    #[test]
    fn the_timeouts_are_set_together_each_to_its_own() {
        let s = Duration::from_secs;
        let c = Config::default().with_timeouts(s(1), s(2), s(3));
        assert_eq!(
            (c.dial_timeout, c.conn_timeout, c.handshake_timeout),
            (s(1), s(2), s(3))
        );
    }

    #[test]
    fn sanitizing_bounds_multiplier_and_jitter() {
        let b = DialBackoff {
            multiplier: f64::NAN,
            jitter: 7.0,
            ..DialBackoff::GRPC_DEFAULT
        }
        .sanitized();
        assert_eq!((b.multiplier, b.jitter), (1.0, 1.0));
        let b = DialBackoff {
            multiplier: 0.5,
            jitter: f64::NAN,
            ..DialBackoff::GRPC_DEFAULT
        }
        .sanitized();
        assert_eq!((b.multiplier, b.jitter), (1.0, 0.0));
        let cfg = Config::default().with_dial_backoff(Some(b)).sanitized();
        assert_eq!(cfg.dial_backoff, Some(b));
        assert_eq!(
            Config::default().dial_backoff,
            Some(DialBackoff::GRPC_DEFAULT)
        );
    }
}
