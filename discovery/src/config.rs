//! The membership layer's configuration, with Fabric v2.4.9's defaults (`peer.gossip.*`).

use crate::certstore::CertStoreConfig;
use crate::error::ConfigError;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::Instant;

/// The earliest instant taken for the wall clock (2017-01-01, before Fabric 1.0): a layer
/// started before it, with no [`DiscoveryConfig::incarnation`] set, warns that the
/// driver's clock is not the wall clock. Its incarnation is the instant it starts, so
/// with a clock that counts from the process's start a restarted node is no newer than
/// the run before, and the peers that knew it refuse its alive messages as stale.
pub const PLAUSIBLE_WALL_CLOCK: Instant = Instant::from_unix_secs(1_483_228_800);

/// How one node takes part in membership. Every duration defaults to Fabric's value
/// (`gossip/gossip/config.go`, `loadConfig`), so a node configured only with its endpoints
/// behaves towards Fabric peers as a stock peer does.
///
/// Start from [`DiscoveryConfig::new`] and change what differs, with the `with_*` methods
/// or by assigning fields: the struct is `#[non_exhaustive]`, so that a setting added later
/// (this layer has gained bounds as attacks were found) breaks no one's build, which
/// rules out struct literals and `..` updates outside this crate.
///
/// ```
/// use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
/// use std::time::Duration;
///
/// let mut cfg = DiscoveryConfig::new("10.0.0.1:7051")
///     .with_external_endpoint("peer0.org1.example.com:7051")
///     .with_bootstrap(["10.0.0.2:7051", "10.0.0.3:7051"])
///     .with_seed(42)
///     // expiry 5 s (checked every 0.5 s, store TTL 100 s), reconnect every 5 s, as Fabric
///     .with_alive_interval(Duration::from_secs(1));
/// assert_eq!(cfg.alive_expiration, Duration::from_secs(5));
/// cfg.max_members = 500;
/// cfg.certstore.digest_wait = Duration::from_millis(200);
/// cfg.validate()?; // what Discovery::new refuses, before a driver needs the layer
/// let layer = Discovery::new(cfg)?;
/// # Ok::<(), fabric_gossip_discovery::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryConfig {
    /// `host:port` peers of the same organization reach us at (`peer.gossip.endpoint`);
    /// carried only in the signed `SecretEnvelope`, never shown to other organizations.
    /// Required (the argument of [`new`](Self::new)). It is what peers will dial, so it is
    /// an address they can reach, not a listen address such as `0.0.0.0:7051`; a driver
    /// that hands the layer its bound address (`NodeBuilder::layer`) gives a dialable one
    /// only when it listens on a specific address. IPv6 literals (`[::1]:7051`) are
    /// refused, as Fabric refuses any endpoint with more than one colon: use a host name.
    pub internal_endpoint: String,
    /// `host:port` other organizations reach us at (`peer.gossip.externalEndpoint`); empty
    /// (the default) keeps the node invisible outside its organization. Checked as
    /// `internal_endpoint` is when not empty.
    pub external_endpoint: String,
    /// Peers of our organization to join through (`peer.gossip.bootstrap`), `host:port`
    /// each (the host may be an IPv6 literal in brackets); none by default. One that is
    /// not `host:port` is refused by [`validate`](Self::validate)
    /// ([`ConfigError::BadBootstrap`](crate::ConfigError::BadBootstrap)); an unreachable
    /// one shows as [`BootstrapFailed`](crate::DiscoveryEvent::BootstrapFailed), retried
    /// every `reconnect_interval` up to `max_connection_attempts`. Our own endpoint may be
    /// listed (Fabric's configurations often list every peer): it is skipped by
    /// [`is_my_own_endpoint`](Self::is_my_own_endpoint), a textual check. A peer of
    /// another organization is refused once its handshake shows it; join such a peer
    /// with [`Discovery::connect_anchor`](crate::Discovery::connect_anchor) instead.
    pub bootstrap: Vec<String>,
    /// Heartbeat period (`aliveTimeInterval`, 5 s). Assigned alone it leaves
    /// `alive_expiration` and `reconnect_interval` at 25 s; a Fabric peer whose core.yaml
    /// sets only `aliveTimeInterval` derives both from it, which
    /// [`with_alive_interval`](Self::with_alive_interval) does.
    pub alive_interval: Duration,
    /// Silence after which an alive member is declared dead (`aliveExpirationTimeout`, 25 s).
    /// Keep it several `alive_interval`s long (Fabric's ratio is 5): a member whose
    /// heartbeats are further apart than this is declared dead between two of them.
    /// [`validate`](Self::validate) refuses one not longer than `alive_interval`
    /// (Fabric checks nothing). It also sets the expiry check's period, unless
    /// [`alive_expiration_check_interval`](Self::alive_expiration_check_interval) does, and
    /// the store's TTL ([`msg_ttl`](Self::msg_ttl)).
    pub alive_expiration: Duration,
    /// How often alive members are checked for expiry (Fabric's
    /// `AliveExpirationCheckInterval` of `gossip/discovery`). `None`, the default, takes
    /// Fabric's value, `alive_expiration / 10` (2.5 s), recomputed when `alive_expiration`
    /// changes; the period in use is
    /// [`expiration_check_interval`](Self::expiration_check_interval). A member is
    /// declared dead between `alive_expiration` and `alive_expiration` + this after its
    /// last alive message: set it shorter to detect deaths more precisely, at the cost of
    /// a scan of the membership per check. A Fabric peer cannot change it (its core.yaml
    /// has no key for it; `gossip/gossip/config.go` derives it), but Fabric's discovery
    /// layer takes it as a setting, and so does this one. Must be non-zero and no longer
    /// than `alive_expiration` ([`validate`](Self::validate)).
    pub alive_expiration_check_interval: Option<Duration>,
    /// Period of the dead-member reconnect pass and of bootstrap retries
    /// (`reconnectInterval`, 25 s).
    pub reconnect_interval: Duration,
    /// Attempts to identify a bootstrap peer, and requests sent to it, before giving up
    /// (`maxConnectionAttempts`, 120).
    pub max_connection_attempts: u32,
    /// Alive-message store TTL = `alive_expiration` × this (`msgExpirationFactor`, 20 ⇒ 500 s);
    /// [`validate`](Self::validate) refuses 0. The TTL is also how long a member stays dead before it is purged.
    pub msg_expiration_factor: u32,
    /// How long a bootstrap request waits for its response before it is resent
    /// (hard-coded 5 s in Fabric's `sendUntilAcked`).
    pub ack_wait: Duration,
    /// How long after start our alive messages carry our identity (`publishCertPeriod`, 10 s).
    /// Zero is allowed: members then learn our identity from a handshake with us or from
    /// the identity pull ([`certstore`](Self::certstore)).
    pub publish_cert_period: Duration,
    /// Membership sync period (`pullInterval`, 4 s).
    pub pull_interval: Duration,
    /// Members asked at each sync (`pullPeerNum`, 3).
    pub pull_peer_num: usize,
    /// Fan-out of heartbeats and forwarded alive messages (`propagatePeerNum`, 3).
    pub propagate_peer_num: usize,
    /// How many times each heartbeat and forwarded alive message is sent, each time to a
    /// fresh random choice of `propagate_peer_num` members (`propagateIterations`, 1), so
    /// a member may be chosen more than once. Fabric's emitter sends the iterations one
    /// batch apart (`maxPropagationBurstLatency`, 10 ms); they go at once here. 0 spreads
    /// nothing, as Fabric's `PropagateIterations: 0` (membership then travels by syncs
    /// only); a core.yaml's 0 means the default, as `GetIntOrDefault` reads it.
    pub propagate_iterations: usize,
    /// Our `Member.metadata` (empty by default, as in a stock peer). Peers of this crate
    /// refuse alive messages whose metadata exceeds their `max_metadata_size` (4 KiB by
    /// default), so more than that makes us invisible to them.
    pub metadata: Bytes,
    /// Incarnation number; `None` takes the start time in Unix nanoseconds, as Fabric does.
    /// Set it only to test restarts with a skewed clock.
    pub incarnation: Option<u64>,
    /// Seed of every random choice (fan-out peers, bootstrap nonces); 0 by default. In a
    /// simulation take it from the run (`LayerContext::seed` in `fabric-gossip-sim`), so
    /// that the run's seed replays the layer too; on a real network give each node its
    /// own (from the OS, or its start time), or nodes started alike choose alike.
    pub seed: u64,
    /// Upper bound on known members (alive and dead); beyond it a new member takes the
    /// place of one of an organization with a larger share (ours always may) or is
    /// refused and counted, so a flood of valid identities cannot grow memory without
    /// bound. The default, 10,000, is far beyond Fabric networks' hundreds of peers; what
    /// they hold is bounded too (`max_membership_bytes`).
    pub max_members: usize,
    /// Upper bound, in bytes, on what known members hold in all (their alive envelopes,
    /// identities, metadata and endpoints, as `Membership` counts them); beyond it new
    /// members take a place or are refused as beyond `max_members`
    /// (`members_refused_full`). A hostile
    /// organization can mint valid certificates of 64 KiB: 10,000 such members had taken a
    /// node to 1.7 GB. Real members hold 3–5 KiB, so the default (64 MiB) fits 10,000.
    pub max_membership_bytes: usize,
    /// Upper bound on `Member.metadata` in an alive message, in bytes (default 4 KiB).
    /// Stock Fabric peers send it
    /// empty, and nothing in Fabric bounds it: one member announcing 100 MB of metadata
    /// made every node hold and forward it, and pushed every membership response past the
    /// message size limit. Larger ones are refused (`alive_too_large`).
    pub max_metadata_size: usize,
    /// Upper bound on the membership responses this node has queued for requesters that
    /// have not yet taken them, in bytes, over all requesters. A response is unique to its
    /// requester, so each one that does not read holds a whole one (up to the
    /// membership's size) for as long as its connection lives: 64 requesters minted by a
    /// hostile organization's CA had made a node hold 2.27 GB. A response that does not
    /// fit is dropped (`responses_over_backlog`), and the connections of requesters that
    /// have left theirs untaken for [`RESPONSE_STALL`](crate::RESPONSE_STALL) are closed
    /// (`stalled_requesters_closed`); what they hold counts for as long again, the time
    /// the driver gives their connections to go. Requesters of other organizations hold
    /// at most three quarters of it between them, so that however many identities a
    /// hostile organization mints, our own organization's peers (the only ones that may
    /// join through us) are still answered; those three quarters are shared evenly among
    /// the other organizations that asked within `RESPONSE_STALL`, so the other
    /// organizations' peers are answered too. The default, 256 MiB, holds four responses of a
    /// membership at its byte bound. Beyond Fabric, which bounds none of this.
    pub max_response_backlog: usize,
    /// Upper bound on events the driver has not taken yet ([`Discovery::poll_event`](
    /// crate::Discovery::poll_event)); beyond it events are dropped and counted
    /// (`DiscoveryStats::events_dropped`). Default 65,536. A driver that hosts the layer
    /// drains these at once into its own queue, which has its own bound (the tonic
    /// driver's `NodeBuilder::layer_event_buffer`).
    pub max_events: usize,
    /// The identity pull (Fabric's certstore), which runs every `pull_interval` with
    /// `pull_peer_num` members; on, with Fabric's waits, by default.
    pub certstore: CertStoreConfig,
}

/// Fabric's default `peer.gossip.pullInterval`: how often its peers sync membership, so
/// the fastest a peer with Fabric's defaults asks one member.
const FABRIC_PULL_INTERVAL: Duration = Duration::from_secs(4);

impl DiscoveryConfig {
    /// Fabric's defaults for a node reachable by its organization at `internal_endpoint`.
    /// Nothing is checked here: [`validate`](Self::validate) (or
    /// [`Discovery::new`](crate::Discovery::new), which calls it) says what is wrong.
    pub fn new(internal_endpoint: impl Into<String>) -> Self {
        DiscoveryConfig {
            internal_endpoint: internal_endpoint.into(),
            external_endpoint: String::new(),
            bootstrap: Vec::new(),
            alive_interval: Duration::from_secs(5),
            alive_expiration: Duration::from_secs(25),
            alive_expiration_check_interval: None,
            reconnect_interval: Duration::from_secs(25),
            max_connection_attempts: 120,
            msg_expiration_factor: 20,
            ack_wait: Duration::from_secs(5),
            publish_cert_period: Duration::from_secs(10),
            pull_interval: FABRIC_PULL_INTERVAL,
            pull_peer_num: 3,
            propagate_peer_num: 3,
            propagate_iterations: 1,
            metadata: Bytes::new(),
            incarnation: None,
            seed: 0,
            max_members: 10_000,
            max_membership_bytes: 64 << 20,
            max_metadata_size: 4096,
            max_response_backlog: 256 << 20,
            max_events: 65_536,
            certstore: CertStoreConfig::default(),
        }
    }

    /// The same configuration with an external endpoint.
    pub fn with_external_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.external_endpoint = endpoint.into();
        self
    }

    /// The same configuration with bootstrap peers.
    pub fn with_bootstrap<I, E>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = E>,
        E: Into<String>,
    {
        self.bootstrap = peers.into_iter().map(Into::into).collect();
        self
    }

    /// The same configuration with another heartbeat period, and the expiry and the
    /// reconnect period Fabric derives from it when its core.yaml leaves them out
    /// (`gossip/gossip/config.go`, `loadConfig`): `alive_expiration` five heartbeats,
    /// `reconnect_interval` one expiry (so the expiry check, unless set, a tenth of it).
    /// Shortening the heartbeat by assigning `alive_interval` alone keeps the 25 s expiry,
    /// which a Fabric peer with the same setting does not; assign either field after this
    /// call to choose it.
    pub fn with_alive_interval(mut self, interval: Duration) -> Self {
        self.alive_interval = interval;
        self.alive_expiration = interval.saturating_mul(5);
        self.reconnect_interval = self.alive_expiration;
        self
    }

    /// The same configuration with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Period of the alive check: [`alive_expiration_check_interval`](
    /// Self::alive_expiration_check_interval) when set, else Fabric's
    /// `alive_expiration / 10` (2.5 s by default), at least 1 ms.
    pub fn expiration_check_interval(&self) -> Duration {
        self.alive_expiration_check_interval
            .unwrap_or(self.alive_expiration / 10)
            .max(Duration::from_millis(1))
    }

    /// How often a requester's bucket of answers gains one (see
    /// [`ANSWER_BURST`](crate::ANSWER_BURST)): half the shortest of `pull_interval`,
    /// `reconnect_interval` and Fabric's default sync period (4 s), so 2 s with Fabric's
    /// defaults and never more. A peer configured as we are, or with Fabric's defaults,
    /// asks a given member at most once a sync period (a sync picks `pull_peer_num`
    /// distinct members), or once a reconnect period while that member is dead to it (no
    /// sync then goes to it), so its bucket refills at least twice as fast as it asks; the
    /// headroom is for peers set a little faster. A peer set more than twice as fast as
    /// both (a `pull_interval` under 2 s beside our 4 s) may find some of its syncs to us
    /// dropped: it learns membership from its other syncs and the heartbeats. Derived
    /// rather than set, so that shortening the periods (as tests do) does not throttle
    /// honest peers, and capped so that lengthening ours does not throttle theirs.
    pub fn answer_refill(&self) -> Duration {
        self.pull_interval
            .min(self.reconnect_interval)
            .min(FABRIC_PULL_INTERVAL)
            / 2
    }

    /// TTL of the alive-message store (500 s by default); entries are kept, still
    /// blocking replays, for twice that.
    pub fn msg_ttl(&self) -> Duration {
        // `validate` refuses a factor of 0; a configuration not validated keeps a TTL.
        self.alive_expiration
            .saturating_mul(self.msg_expiration_factor.max(1))
    }

    /// Checks what Fabric checks at start (`validateSelfConfig`): the internal endpoint is
    /// `host:port` with one colon and a 16-bit port (more strictly: a non-empty host and a
    /// port that is a u16, where Fabric takes `:7051` or `host:-1`), and beyond Fabric, which
    /// takes any string there, the external one alike when set; and
    /// that the periods (`alive_interval`, `alive_expiration`, `reconnect_interval`,
    /// `ack_wait`, `pull_interval`, `alive_expiration_check_interval` when set, and the
    /// certstore's waits) are non-zero, since a zero period would fire its timer in a
    /// loop. Beyond Fabric, which takes these as they come and misbehaves later, it also
    /// refuses a bootstrap endpoint that is not `host:port` ([`ConfigError::BadBootstrap`]),
    /// an `alive_expiration` not longer than `alive_interval`
    /// ([`ConfigError::ExpirationNotAfterInterval`]), an expiry check less often than once
    /// per `alive_expiration` ([`ConfigError::TooLong`]: members would outlive their
    /// expiration by more than the expiration itself), and a `max_members`,
    /// `max_membership_bytes` or `msg_expiration_factor` of 0 ([`ConfigError::Zero`]). Not
    /// checked: whether bootstrap peers answer (their failures are events), and the other
    /// bounds (`max_events = 0` keeps no event; the certstore's bounds of 0 learn no
    /// identity by pull).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_endpoint(&self.internal_endpoint)?;
        if !self.external_endpoint.is_empty() {
            check_endpoint(&self.external_endpoint)?;
        }
        for b in &self.bootstrap {
            let good = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !good {
                return Err(ConfigError::BadBootstrap(b.clone()));
            }
        }
        for (name, zero) in [
            ("max_members", self.max_members == 0),
            ("max_membership_bytes", self.max_membership_bytes == 0),
            ("msg_expiration_factor", self.msg_expiration_factor == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("alive_interval", self.alive_interval),
            ("alive_expiration", self.alive_expiration),
            ("reconnect_interval", self.reconnect_interval),
            ("ack_wait", self.ack_wait),
            ("pull_interval", self.pull_interval),
        ]
        .into_iter()
        .chain(
            self.alive_expiration_check_interval
                .map(|d| ("alive_expiration_check_interval", d)),
        )
        .chain(self.certstore.durations())
        {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        if self.alive_expiration <= self.alive_interval {
            return Err(ConfigError::ExpirationNotAfterInterval {
                expiration: self.alive_expiration,
                interval: self.alive_interval,
            });
        }
        if let Some(d) = self
            .alive_expiration_check_interval
            .filter(|d| *d > self.alive_expiration)
        {
            return Err(ConfigError::TooLong {
                name: "alive_expiration_check_interval",
                value: d,
                limit: "alive_expiration",
                max: self.alive_expiration,
            });
        }
        Ok(())
    }

    /// The port of the internal endpoint (what Fabric's self check compares against).
    pub(crate) fn own_port(&self) -> &str {
        self.internal_endpoint
            .rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or("")
    }

    /// Fabric's textual self check (`isMyOwnEndpoint`): only exact strings are recognised.
    pub fn is_my_own_endpoint(&self, endpoint: &str) -> bool {
        let port = self.own_port();
        endpoint == format!("127.0.0.1:{port}")
            || endpoint == format!("localhost:{port}")
            || endpoint == self.internal_endpoint
            || (!self.external_endpoint.is_empty() && endpoint == self.external_endpoint)
    }
}

fn check_endpoint(ep: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadEndpoint(ep.to_owned());
    let (host, port) = ep.split_once(':').ok_or_else(bad)?;
    // Longer than any member would take from us (`validate::MAX_ENDPOINT`).
    if host.is_empty()
        || port.contains(':')
        || port.parse::<u16>().is_err()
        || ep.len() > crate::validate::MAX_ENDPOINT
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fabrics() {
        let c = DiscoveryConfig::new("10.0.0.1:7051");
        assert_eq!(c.alive_interval, Duration::from_secs(5));
        assert_eq!(c.alive_expiration, Duration::from_secs(25));
        assert_eq!(c.expiration_check_interval(), Duration::from_millis(2500));
        assert_eq!(c.reconnect_interval, Duration::from_secs(25));
        assert_eq!(c.msg_ttl(), Duration::from_secs(500));
        assert_eq!(c.max_connection_attempts, 120);
        assert_eq!(c.publish_cert_period, Duration::from_secs(10));
        assert_eq!(c.pull_interval, Duration::from_secs(4));
        assert_eq!((c.pull_peer_num, c.propagate_peer_num), (3, 3));
        assert_eq!(c.propagate_iterations, 1);
        assert!(c.validate().is_ok());
    }

    /// A heartbeat period given alone takes the expiry and reconnect period Fabric
    /// derives from it; the fields assigned after it win.
    #[test]
    fn a_heartbeat_period_derives_the_expiry_and_the_reconnect_period_as_fabric() {
        let mut c =
            DiscoveryConfig::new("10.0.0.1:7051").with_alive_interval(Duration::from_secs(2));
        assert_eq!(c.alive_interval, Duration::from_secs(2));
        assert_eq!(c.alive_expiration, Duration::from_secs(10));
        assert_eq!(c.reconnect_interval, Duration::from_secs(10));
        assert_eq!(c.expiration_check_interval(), Duration::from_secs(1));
        assert_eq!(c.msg_ttl(), Duration::from_secs(200));
        assert!(c.validate().is_ok());
        c.reconnect_interval = Duration::from_secs(3);
        assert_eq!(c.alive_expiration, Duration::from_secs(10));
        assert_eq!(c.reconnect_interval, Duration::from_secs(3));
    }

    /// A requester's bucket of answers gains one every half of the shortest of the sync
    /// and reconnect periods and Fabric's sync period: 2 s with Fabric's, shorter when
    /// ours are, never longer.
    #[test]
    fn the_answer_refill_is_half_the_shorter_of_the_sync_and_reconnect_periods() {
        let mut c = DiscoveryConfig::new("10.0.0.1:7051");
        assert_eq!(c.answer_refill(), Duration::from_secs(2));
        c.pull_interval = Duration::from_secs(1);
        assert_eq!(c.answer_refill(), Duration::from_millis(500));
        c.pull_interval = Duration::from_secs(60);
        assert_eq!(
            c.answer_refill(),
            Duration::from_secs(2),
            "never slower than for peers with Fabric's periods"
        );
        c.reconnect_interval = Duration::from_secs(3);
        assert_eq!(
            c.answer_refill(),
            Duration::from_millis(1_500),
            "reconnect's"
        );
    }

    /// What Fabric takes and misbehaves with later is refused at once, each with its
    /// own reason.
    #[test]
    fn bootstrap_endpoints_the_expiry_and_the_bounds_are_checked() {
        for bad in ["", "peer0", "peer0:", ":7051", "peer0:70510", "peer0:port"] {
            let c = DiscoveryConfig::new("h:1").with_bootstrap(["ok:7051", bad]);
            assert_eq!(
                c.validate(),
                Err(ConfigError::BadBootstrap(bad.to_owned())),
                "{bad:?}"
            );
        }
        let c = DiscoveryConfig::new("h:1").with_bootstrap(["[::1]:7051", "peer0.org1:7051"]);
        assert_eq!(c.validate(), Ok(()));
        let mut c = DiscoveryConfig::new("h:1");
        c.alive_expiration = c.alive_interval;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ExpirationNotAfterInterval {
                expiration: Duration::from_secs(5),
                interval: Duration::from_secs(5),
            })
        );
        c.alive_expiration += Duration::from_millis(1);
        assert_eq!(c.validate(), Ok(()));
        for (name, set) in [
            (
                "max_members",
                (|c| c.max_members = 0) as fn(&mut DiscoveryConfig),
            ),
            ("max_membership_bytes", |c| c.max_membership_bytes = 0),
            ("msg_expiration_factor", |c| c.msg_expiration_factor = 0),
        ] {
            let mut c = DiscoveryConfig::new("h:1");
            set(&mut c);
            assert_eq!(c.validate(), Err(ConfigError::Zero(name)));
        }
    }

    #[test]
    fn internal_endpoint_must_be_host_port() {
        // As long as a member's endpoint may be (`validate::MAX_ENDPOINT`), not longer.
        let max = crate::validate::MAX_ENDPOINT;
        let longest = format!("{}:7051", "h".repeat(max - 5));
        assert_eq!(DiscoveryConfig::new(longest.as_str()).validate(), Ok(()));
        let long = format!("{}:7051", "h".repeat(max - 4));
        for bad in [
            "",
            "host",
            "a:b:7051",
            "host:70510",
            ":7051",
            "host:port",
            &long,
        ] {
            assert_eq!(
                DiscoveryConfig::new(bad).validate(),
                Err(ConfigError::BadEndpoint(bad.to_owned())),
                "{bad}"
            );
        }
        let c = DiscoveryConfig::new("h:1").with_external_endpoint("x");
        assert!(matches!(c.validate(), Err(ConfigError::BadEndpoint(_))));
        // An IPv6 literal is refused too, as Fabric refuses it, and the text says why.
        for v6 in ["[::1]:7051", "::1:7051"] {
            let e = DiscoveryConfig::new(v6).validate().unwrap_err();
            assert_eq!(e, ConfigError::BadEndpoint(v6.to_owned()));
            assert!(e.to_string().contains("is an IPv6 literal"), "{e}");
        }
        for other in ["host", "a:b:7051"] {
            let e = ConfigError::BadEndpoint(other.into()).to_string();
            assert_eq!(e, format!("endpoint {other:?} is not host:port"));
        }
        let mut c = DiscoveryConfig::new("h:1");
        c.alive_interval = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("alive_interval"))
        );
    }

    #[test]
    fn the_expiry_check_interval_is_fabrics_unless_set_and_is_checked() {
        let mut c = DiscoveryConfig::new("h:1");
        assert_eq!(c.alive_expiration_check_interval, None);
        // Derived from the expiration as Fabric derives it, also after it changed (the
        // heartbeat shortened too: validate wants the expiration longer).
        c.alive_interval = Duration::from_secs(1);
        c.alive_expiration = Duration::from_secs(5);
        assert_eq!(c.expiration_check_interval(), Duration::from_millis(500));
        c.alive_expiration_check_interval = Some(Duration::from_millis(50));
        assert_eq!(c.expiration_check_interval(), Duration::from_millis(50));
        assert!(c.validate().is_ok());
        // As long as the expiration is allowed, not longer, not zero.
        c.alive_expiration_check_interval = Some(Duration::from_secs(5));
        assert!(c.validate().is_ok());
        c.alive_expiration_check_interval = Some(Duration::from_secs(6));
        assert_eq!(
            c.validate(),
            Err(ConfigError::TooLong {
                name: "alive_expiration_check_interval",
                value: Duration::from_secs(6),
                limit: "alive_expiration",
                max: Duration::from_secs(5),
            })
        );
        assert!(crate::Discovery::new(c.clone()).is_err());
        c.alive_expiration_check_interval = Some(Duration::ZERO);
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroDuration("alive_expiration_check_interval"))
        );
    }

    #[test]
    fn self_detection_is_textual() {
        let c = DiscoveryConfig::new("peer0:7051").with_external_endpoint("pub.example:443");
        for me in [
            "127.0.0.1:7051",
            "localhost:7051",
            "peer0:7051",
            "pub.example:443",
        ] {
            assert!(c.is_my_own_endpoint(me), "{me}");
        }
        for other in ["peer0.local:7051", "127.0.0.1:7052", "10.0.0.1:7051"] {
            assert!(!c.is_my_own_endpoint(other), "{other}");
        }
    }
}
