//! Fabric's membership layer in the CLI: the options `node` and `watch` share
//! (`--bootstrap`, endpoints, alive intervals, or `peer.gossip.*` from a core.yaml), the
//! layer built from them, and how members and membership events are written (JSON lines
//! and the table of `watch`).

use crate::config::GossipConfig;
use crate::opts::{self, ConfigError, PkiForm};
use clap::Args;
use fabric_gossip_core::Instant;
use fabric_gossip_discovery::{
    AnchorDial, ConfigError as DiscoveryConfigError, DeadReason, Discovery, DiscoveryConfig,
    DiscoveryEvent, MemberInfo, PurgeReason,
};
use fabric_gossip_tonic::Node;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// How the node takes part in membership (Fabric's `peer.gossip.*`).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct MembershipArgs {
    /// A peer of this node's organization to join the network through (Fabric's
    /// peer.gossip.bootstrap): it is sent a membership request until it answers.
    /// Repeatable.
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_endpoint)]
    pub(crate) bootstrap: Vec<String>,
    /// Where `bootstrap` came from when not from the flag (core.yaml's key and its file or
    /// variable), so that warnings about its values name what to edit.
    #[arg(skip)]
    pub(crate) bootstrap_from: Option<String>,
    /// A peer to reach as an anchor peer, as a Fabric peer reaches those its channels'
    /// configuration lists (--channel-config; core.yaml has no key for them), for a network
    /// with no channel block at hand (keygen's): MSPID=HOST:PORT, the peer's identity then
    /// checked to be of that MSP when it is this node's own, or HOST:PORT. One of another
    /// organization needs --external-endpoint. Repeatable.
    #[arg(long, value_name = "[MSPID=]HOST:PORT", value_parser = parse_anchor_peer)]
    pub(crate) anchor_peer: Vec<AnchorPeer>,
    /// The address peers of this organization reach this node at, carried in its signed
    /// alive messages (peer.gossip.endpoint). Default: the address bound by --listen.
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_endpoint)]
    pub(crate) endpoint: Option<String>,
    /// The address other organizations reach this node at (peer.gossip.externalEndpoint).
    /// Without it the node is invisible outside its organization, as a Fabric peer is.
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_endpoint)]
    pub(crate) external_endpoint: Option<String>,
    /// Period of this node's alive messages (peer.gossip.aliveTimeInterval; Fabric: 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) alive_interval: Option<Duration>,
    /// Silence after which a member is declared dead (peer.gossip.aliveExpirationTimeout;
    /// Fabric: five times --alive-interval, 25s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) alive_expiration: Option<Duration>,
    /// How often members are checked for expiry, at most --alive-expiration (Fabric's
    /// AliveExpirationCheckInterval, which a peer derives and core.yaml cannot set;
    /// default: a tenth of --alive-expiration, 2.5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) alive_expiration_check_interval: Option<Duration>,
    /// Period of reconnection attempts to dead members and bootstrap retries
    /// (peer.gossip.reconnectInterval; Fabric: --alive-expiration, 25s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) reconnect_interval: Option<Duration>,
    /// Identification attempts of a bootstrap peer before it is given up
    /// (peer.gossip.maxConnectionAttempts; Fabric: 120).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connection_attempts: Option<u32>,
    /// How many --alive-expiration periods a dead member is kept before it is forgotten
    /// (peer.gossip.msgExpirationFactor; Fabric: 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) msg_expiration_factor: Option<u32>,
    /// How long after start this node's alive messages carry its certificate
    /// (peer.gossip.publishCertPeriod; Fabric: 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) publish_cert_period: Option<Duration>,
    /// Members each alive message is forwarded to (peer.gossip.propagatePeerNum; Fabric: 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) propagate_peer_num: Option<u16>,
    /// Times each alive message is sent, each time to a fresh random choice of
    /// --propagate-peer-num members (peer.gossip.propagateIterations; Fabric: 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) propagate_iterations: Option<u16>,
    /// Period of membership syncs and identity pulls (peer.gossip.pullInterval; Fabric: 4s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) pull_interval: Option<Duration>,
    /// Members asked at each sync and identity pull (peer.gossip.pullPeerNum; Fabric: 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) pull_peer_num: Option<u16>,
    /// How long an identity pull collects digests before it asks for what it lacks
    /// (peer.gossip.digestWaitTime; Fabric: 1s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) digest_wait: Option<Duration>,
    /// How long a hello's nonce stays valid for the puller's request
    /// (peer.gossip.requestWaitTime; Fabric: 1500ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) request_wait: Option<Duration>,
    /// How long an identity pull accepts updates after its requests
    /// (peer.gossip.responseWaitTime; Fabric: 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) response_wait: Option<Duration>,
}

/// An anchor peer given on the command line (`--anchor-peer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnchorPeer {
    /// The organization it is listed under, as a channel block lists it; `None`: any.
    pub(crate) msp_id: Option<String>,
    /// Where it is dialled.
    pub(crate) endpoint: String,
}

/// `--anchor-peer`'s value: `MSPID=HOST:PORT` or `HOST:PORT`.
fn parse_anchor_peer(s: &str) -> Result<AnchorPeer, String> {
    let (msp_id, endpoint) = match s.split_once('=') {
        Some(("", _)) => {
            return Err("an empty MSP ID before '=' (MSPID=HOST:PORT, or HOST:PORT)".into());
        }
        Some((msp, ep)) => (Some(msp.to_owned()), ep),
        None => (None, s),
    };
    Ok(AnchorPeer {
        msp_id,
        endpoint: opts::parse_endpoint(endpoint)?,
    })
}

/// Dials the `--anchor-peer`s through the running membership layer, as
/// [`connect_anchors`] dials a channel block's: `connect_anchor_of` for one given with its
/// MSP ID, `connect_anchor` for one without. Returns how many the layer dials; none without
/// the layer. What becomes of each is the layer's `bootstrap_joined` or `bootstrap_failed`;
/// one the layer does not dial is logged as such ([`log_anchor_dial`]), never as dialled.
/// `warn_skipped`: warn of one skipped for want of an external endpoint (`node`; `watch`
/// says so in its own view of the attempts, and would say it twice).
pub(crate) fn connect_anchor_peers(
    node: &Node,
    anchors: &[AnchorPeer],
    warn_skipped: bool,
) -> usize {
    if anchors.is_empty() {
        return 0;
    }
    let dialled = node.with_layer_mut(|d: &mut Discovery, comm| {
        let mut dialled = 0;
        for a in anchors {
            let outcome = match &a.msp_id {
                Some(m) => {
                    d.connect_anchor_of(comm.now(), a.endpoint.clone(), m.clone().into_bytes())
                }
                None => d.connect_anchor(comm.now(), a.endpoint.clone()),
            };
            if outcome == AnchorDial::NotDialledWithoutExternalEndpoint && !warn_skipped {
                continue;
            }
            let what = format!(
                "anchor peer {}{} (--anchor-peer)",
                a.endpoint,
                a.msp_id
                    .as_deref()
                    .map(|m| format!(" of {m}"))
                    .unwrap_or_default()
            );
            dialled += usize::from(log_anchor_dial("", &what, outcome));
        }
        dialled
    });
    dialled.unwrap_or(0)
}

/// Logs what the membership layer did with anchor peer `what` (a description such as
/// "anchor peer H:P of Org2MSP", after `context`): "dialling" only when it dials. Returns
/// whether it does. An anchor of another organization skipped for want of an external
/// endpoint is a warning here (the layer logs it at info, as Fabric does for a channel
/// block's): an operator who named it wants to know what the skip costs.
fn log_anchor_dial(context: &str, what: &str, outcome: AnchorDial) -> bool {
    match outcome {
        AnchorDial::Dialling => {
            tracing::info!(target: crate::logging::TARGET, "{context}dialling {what}");
            return true;
        }
        AnchorDial::InProgress => {
            tracing::debug!(target: crate::logging::TARGET, "{context}{what}: already being dialled");
        }
        AnchorDial::OwnEndpoint => tracing::info!(
            target: crate::logging::TARGET,
            "{context}{what} not dialled: it is this node's own endpoint"
        ),
        AnchorDial::NotDialledWithoutExternalEndpoint => tracing::warn!(
            target: crate::logging::TARGET,
            "{context}{what} not dialled: it is of another organization and this node has no \
             external endpoint (--external-endpoint, peer.gossip.externalEndpoint), so no \
             other organization could reach it back (Fabric skips it too)"
        ),
        AnchorDial::Refused => tracing::warn!(
            target: crate::logging::TARGET,
            "{context}{what} not dialled: the membership layer already follows {} bootstrap and \
             anchor endpoints, none of them done (counted as anchors_refused)",
            fabric_gossip_discovery::MAX_BOOTSTRAPS
        ),
        // A reason a later layer adds: said as the layer gives it, never as dialled.
        other => tracing::info!(
            target: crate::logging::TARGET,
            "{context}{what} not dialled: {other:?}"
        ),
    }
    false
}

/// A Go duration (`5s`, `500ms`, `1m30s`), as Fabric writes them.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = crate::config::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 5s or 500ms: {e}"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

impl MembershipArgs {
    /// Whether any membership option was given.
    pub(crate) fn any(&self) -> bool {
        !self.bootstrap.is_empty()
            || !self.anchor_peer.is_empty()
            || self.endpoint.is_some()
            || self.external_endpoint.is_some()
            || self.alive_interval.is_some()
            || self.alive_expiration.is_some()
            || self.alive_expiration_check_interval.is_some()
            || self.reconnect_interval.is_some()
            || self.max_connection_attempts.is_some()
            || self.msg_expiration_factor.is_some()
            || self.publish_cert_period.is_some()
            || self.propagate_peer_num.is_some()
            || self.propagate_iterations.is_some()
            || self.pull_interval.is_some()
            || self.pull_peer_num.is_some()
            || self.digest_wait.is_some()
            || self.request_wait.is_some()
            || self.response_wait.is_some()
    }

    /// Fills what the flags left out from a core.yaml's `peer.gossip.*` (flags win).
    pub(crate) fn merge_file(&mut self, g: &GossipConfig) {
        if self.bootstrap.is_empty() && !g.bootstrap.is_empty() {
            self.bootstrap.clone_from(&g.bootstrap);
            self.bootstrap_from = Some(g.bootstrap_from.clone());
        }
        if self.endpoint.is_none() {
            self.endpoint.clone_from(&g.endpoint);
        }
        if self.external_endpoint.is_none() {
            self.external_endpoint.clone_from(&g.external_endpoint);
        }
        self.alive_interval = self.alive_interval.or(g.alive_time_interval);
        self.alive_expiration = self.alive_expiration.or(g.alive_expiration_timeout);
        self.reconnect_interval = self.reconnect_interval.or(g.reconnect_interval);
        self.max_connection_attempts = self.max_connection_attempts.or(g.max_connection_attempts);
        self.msg_expiration_factor = self.msg_expiration_factor.or(g.msg_expiration_factor);
        self.publish_cert_period = self.publish_cert_period.or(g.publish_cert_period);
        self.propagate_peer_num = self.propagate_peer_num.or(g.propagate_peer_num);
        self.propagate_iterations = self.propagate_iterations.or(g.propagate_iterations);
        self.pull_interval = self.pull_interval.or(g.pull_interval);
        self.pull_peer_num = self.pull_peer_num.or(g.pull_peer_num);
        self.digest_wait = self.digest_wait.or(g.digest_wait_time);
        self.request_wait = self.request_wait.or(g.request_wait_time);
        self.response_wait = self.response_wait.or(g.response_wait_time);
    }

    /// The layer's configuration once the listen address is bound; checked before the
    /// node starts by [`MembershipArgs::layer`], which refuses an invalid one.
    pub(crate) fn config(&self, bound: SocketAddr) -> DiscoveryConfig {
        let internal = self.endpoint.clone().unwrap_or_else(|| bound.to_string());
        let mut cfg = DiscoveryConfig::new(internal)
            .with_bootstrap(self.bootstrap.iter().cloned())
            .with_seed(fabric_gossip_tonic::random_seed());
        if let Some(e) = &self.external_endpoint {
            cfg = cfg.with_external_endpoint(e.clone());
        }
        // Fabric's derived defaults (gossip/gossip/config.go): the expiration five alive
        // periods, reconnection every expiration.
        cfg.alive_interval = self.alive_interval.unwrap_or(cfg.alive_interval);
        cfg.alive_expiration = self
            .alive_expiration
            .unwrap_or_else(|| cfg.alive_interval.saturating_mul(5));
        cfg.alive_expiration_check_interval = self.alive_expiration_check_interval;
        cfg.reconnect_interval = self.reconnect_interval.unwrap_or(cfg.alive_expiration);
        cfg.max_connection_attempts = self
            .max_connection_attempts
            .unwrap_or(cfg.max_connection_attempts);
        cfg.msg_expiration_factor = self
            .msg_expiration_factor
            .unwrap_or(cfg.msg_expiration_factor);
        cfg.publish_cert_period = self.publish_cert_period.unwrap_or(cfg.publish_cert_period);
        cfg.propagate_peer_num = self
            .propagate_peer_num
            .map_or(cfg.propagate_peer_num, usize::from);
        cfg.propagate_iterations = self
            .propagate_iterations
            .map_or(cfg.propagate_iterations, usize::from);
        cfg.pull_interval = self.pull_interval.unwrap_or(cfg.pull_interval);
        cfg.pull_peer_num = self.pull_peer_num.map_or(cfg.pull_peer_num, usize::from);
        let pull = &mut cfg.certstore;
        pull.digest_wait = self.digest_wait.unwrap_or(pull.digest_wait);
        pull.request_wait = self.request_wait.unwrap_or(pull.request_wait);
        pull.response_wait = self.response_wait.unwrap_or(pull.response_wait);
        cfg
    }

    /// Binds `listen` (`--listen`) for a node's gRPC server, so that the bound port is
    /// known before the node starts, and makes the membership layer for it (its endpoint
    /// is the bound address unless given).
    pub(crate) fn bind(
        &self,
        listen: SocketAddr,
    ) -> Result<(std::net::TcpListener, Discovery), ConfigError> {
        let cannot = |e| ConfigError(format!("--listen {listen}: cannot listen: {e}"));
        let listener = std::net::TcpListener::bind(listen).map_err(cannot)?;
        let bound = listener.local_addr().map_err(cannot)?;
        Ok((listener, self.layer(bound)?))
    }

    /// The membership layer for a node bound at `bound`, or what is wrong with its
    /// settings.
    pub(crate) fn layer(&self, bound: SocketAddr) -> Result<Discovery, ConfigError> {
        if self.endpoint.is_none() && bound.ip().is_unspecified() {
            tracing::warn!(
                target: crate::logging::TARGET,
                "{bound} is not an address others can dial; give --endpoint HOST:PORT \
                 (peer.gossip.endpoint) so that members can reach this node"
            );
        }
        let cfg = self.config(bound);
        for b in self.own_bootstraps(&cfg) {
            let named = match &self.bootstrap_from {
                Some(from) => format!("{from}: {b}"),
                None => format!("--bootstrap {b}"),
            };
            tracing::warn!(
                target: crate::logging::TARGET,
                "{named} is this node's own endpoint: skipped, as Fabric skips it"
            );
        }
        let shown = (cfg.internal_endpoint.clone(), cfg.external_endpoint.clone());
        Discovery::new(cfg).map_err(|e| match e {
            // Named by the flags (and core.yaml keys) that set them.
            DiscoveryConfigError::BadBootstrap(b) => ConfigError(format!(
                "--bootstrap {b:?} (peer.gossip.bootstrap): not HOST:PORT"
            )),
            DiscoveryConfigError::ExpirationNotAfterInterval {
                expiration,
                interval,
            } => ConfigError(format!(
                "--alive-expiration {expiration:?} (peer.gossip.aliveExpirationTimeout) must be \
                 longer than --alive-interval {interval:?} (peer.gossip.aliveTimeInterval), or \
                 members are declared dead between their heartbeats"
            )),
            // The layer names its fields; each has a flag of the same name.
            DiscoveryConfigError::TooLong {
                name,
                value,
                limit,
                max,
            } => {
                let flag = |field: &str| format!("--{}", field.replace('_', "-"));
                let key = if limit == "alive_expiration" {
                    " (peer.gossip.aliveExpirationTimeout)"
                } else {
                    ""
                };
                ConfigError(format!(
                    "{} {value:?} must not exceed {} {max:?}{key}",
                    flag(name),
                    flag(limit)
                ))
            }
            e => ConfigError(format!(
                "membership (endpoint {:?}, external endpoint {:?}): {e}",
                shown.0, shown.1
            )),
        })
    }

    /// The bootstrap peers that are this node itself by Fabric's textual check
    /// (`isMyOwnEndpoint`), which the layer skips: listing them is harmless in a shared
    /// configuration, but a node with no other way in never joins.
    pub(crate) fn own_bootstraps<'a>(&'a self, cfg: &DiscoveryConfig) -> Vec<&'a str> {
        self.bootstrap
            .iter()
            .filter(|b| cfg.is_my_own_endpoint(b))
            .map(String::as_str)
            .collect()
    }
}

/// The endpoint to dial for an anchor peer `host:port` that a channel configuration lists
/// under organization `org`, or why it is skipped, by Fabric's `learnAnchorPeers` rules
/// (`gossip/gossip/gossip_impl.go`): an empty host or port 0; this node's own endpoint
/// (`cfg.is_my_own_endpoint`, which the layer skips too); an anchor of another
/// organization than `my_org` while this node has no external endpoint, since it could not
/// tell that organization how to reach it. Beyond Fabric, a port that is no TCP port
/// (negative or above 65535) is skipped rather than dialled in vain. An IPv6 host is
/// bracketed, as Go's `net.JoinHostPort` does.
pub(crate) fn anchor_endpoint(
    host: &str,
    port: i32,
    org: &str,
    my_org: &str,
    cfg: &DiscoveryConfig,
) -> Result<String, String> {
    if host.is_empty() {
        return Err("its host is empty".into());
    }
    if port == 0 {
        return Err("its port is 0".into());
    }
    let Ok(port) = u16::try_from(port) else {
        return Err(format!("{port} is not a TCP port"));
    };
    let endpoint = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if cfg.is_my_own_endpoint(&endpoint) {
        return Err("it is this node's own endpoint".into());
    }
    if org != my_org && cfg.external_endpoint.is_empty() {
        return Err(format!(
            "it is of another organization ({org}) and this node has no external endpoint \
             (--external-endpoint, peer.gossip.externalEndpoint)"
        ));
    }
    Ok(endpoint)
}

/// Dials the anchor peers of the channel configuration blocks `channels` through the
/// running membership layer (`Discovery::connect_anchor_of`, Fabric's `Connect` from
/// `learnAnchorPeers`): each anchor's identity is checked against the organization the
/// block lists it under when that is ours (`my_org`), then it is sent a membership request
/// until it answers; a channel whose application organizations do not include `my_org` is
/// left out, as Fabric's `updateAnchors` leaves it. Skipped anchors ([`anchor_endpoint`])
/// are logged at debug, dialled ones at info. `skip_alive`: leave out anchors that are
/// already an alive member's endpoint (after a reload; the layer would only ask them
/// again). Returns how many were dialled; none without the layer.
pub(crate) fn connect_anchors(
    node: &Node,
    my_org: &str,
    channels: &[fabric_gossip_msp::ChannelTrust],
    skip_alive: bool,
) -> usize {
    if channels.iter().all(|c| c.anchor_peers.is_empty()) {
        return 0;
    }
    let Some((cfg, alive)) = node.with_layer(|d: &Discovery| (d.config().clone(), d.members()))
    else {
        // At `info`, the node's default: a live check gave a Fabric channel's block alone
        // and expected a peer of it, and nothing said the node stayed comm-only. A node
        // given the block for its trust alone is fine as it is, so not a warning.
        let n: usize = channels.iter().map(|c| c.anchor_peers.len()).sum();
        tracing::info!(
            target: crate::logging::TARGET,
            "the channel configuration's {n} anchor peer(s) not dialled: the membership \
             layer is off, so no peer lists this node; pass --membership (or \
             --external-endpoint, --bootstrap) to join the channel's network as a Fabric \
             peer does"
        );
        return 0;
    };
    let dial = anchors_to_dial(my_org, channels, &cfg, &alive, skip_alive);
    if dial.is_empty() {
        return 0;
    }
    node.with_layer_mut(|d: &mut Discovery, comm| {
        let mut dialled = 0;
        for (channel, endpoint, org) in dial {
            let what = format!("anchor peer {endpoint} of {org}");
            let outcome = d.connect_anchor_of(comm.now(), endpoint, org.into_bytes());
            let channel = format!("channel {channel}: ");
            dialled += usize::from(log_anchor_dial(&channel, &what, outcome));
        }
        dialled
    })
    .unwrap_or(0)
}

/// The anchor peers [`connect_anchors`] dials, each once, with the organization it is
/// dialled as: the channel listing it first, its endpoint and MSP ID, in the blocks' order.
fn anchors_to_dial(
    my_org: &str,
    channels: &[fabric_gossip_msp::ChannelTrust],
    cfg: &DiscoveryConfig,
    alive: &[MemberInfo],
    skip_alive: bool,
) -> Vec<(String, String, String)> {
    let mut dial: Vec<(String, String, String)> = Vec::new();
    for c in channels {
        let ch = &c.channel_id;
        // Fabric's `updateAnchors` joins no channel its organization is not in.
        if !c.anchor_peers.contains_key(my_org) {
            tracing::debug!(
                target: crate::logging::TARGET,
                "channel {ch}: anchor peers not dialled: {my_org} is not among its application \
                 organizations"
            );
            continue;
        }
        for (org, peers) in &c.anchor_peers {
            if peers.is_empty() {
                tracing::debug!(
                    target: crate::logging::TARGET,
                    "channel {ch}: no anchor peers of {org}"
                );
            }
            for (host, port) in peers {
                let endpoint = match anchor_endpoint(host, *port, org, my_org, cfg) {
                    Ok(e) => e,
                    Err(why) => {
                        tracing::debug!(
                            target: crate::logging::TARGET,
                            "channel {ch}: anchor peer {host:?}:{port} of {org} skipped: {why}"
                        );
                        continue;
                    }
                };
                if skip_alive
                    && alive
                        .iter()
                        .any(|m| m.endpoint == endpoint || m.internal_endpoint == endpoint)
                {
                    tracing::debug!(
                        target: crate::logging::TARGET,
                        "channel {ch}: anchor peer {endpoint} of {org} skipped: already an alive \
                         member"
                    );
                    continue;
                }
                // Listed twice (two blocks): dialled once, as our organization's if either
                // listing says so, so that its identity is checked against ours.
                if let Some((_, _, listed)) = dial.iter_mut().find(|(_, e, _)| *e == endpoint) {
                    if org == my_org {
                        *listed = org.clone();
                    }
                    continue;
                }
                dial.push((ch.clone(), endpoint, org.clone()));
            }
        }
    }
    dial
}

/// How long ago `t`, a time the node reported, was: on the node's time, which is the wall
/// clock unless that was stepped since start (then a member heard a second ago read as
/// two days ago: an attack with libfaketime, 2026-12-07).
pub(crate) fn age(t: Instant) -> Duration {
    crate::expiry::node_now().saturating_duration_since(t)
}

/// When a member's identity expires, for people: `in 41 days`, `in 5.2 h`, `in 12 min`,
/// `expired`, or `-` when the provider gives no expiry (test identities, and certificates
/// valid past 2554, which never expire by the core's clock).
pub(crate) fn expires_in(m: &MemberInfo) -> String {
    let Some(at) = m.identity_expires else {
        return "-".to_owned();
    };
    let at = crate::expiry::on_wall_clock(at);
    until(std::time::UNIX_EPOCH + Duration::from_nanos(at.as_unix_nanos()))
}

/// The same wording for any certificate date (the watcher's own NotAfter, a member's).
pub(crate) fn until(at: std::time::SystemTime) -> String {
    time_left(
        at.duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_secs()),
    )
}

fn time_left(left: u64) -> String {
    match left {
        0 => "expired".to_owned(),
        1..3600 => format!("in {} min", left.div_ceil(60)),
        3600..172_800 => format!("in {:.1} h", left as f64 / 3600.0),
        _ => format!("in {} days", left / 86_400),
    }
}

/// One member as a JSON object.
pub(crate) fn member_json(m: &MemberInfo, form: PkiForm) -> Value {
    json!({
        "pki_id": form.show(&m.pki_id),
        "msp_id": m.org.clone().unwrap_or_default(),
        "endpoint": m.endpoint,
        "internal_endpoint": m.internal_endpoint,
        "inc": m.timestamp.inc,
        "seq": m.timestamp.seq,
        "last_alive_ms_ago": u64::try_from(age(m.last_seen).as_millis()).unwrap_or(u64::MAX),
        "alive": m.alive,
        // The certificate's NotAfter (the layer keeps the first instant it is expired).
        "identity_expires_unix_ms": m.identity_expires.map(crate::expiry::not_after_unix_ms),
    })
}

pub(crate) fn dead_reason(r: DeadReason) -> &'static str {
    match r {
        DeadReason::Expired => "expired",
        DeadReason::PresumedDead => "presumed_dead",
        DeadReason::Reported => "reported",
        // A reason a later layer adds, until this tool knows it.
        _ => "other",
    }
}

pub(crate) fn purge_reason(r: PurgeReason) -> &'static str {
    match r {
        PurgeReason::LongDead => "long_dead",
        PurgeReason::IdentitySwitch => "identity_switch",
        PurgeReason::IdentityExpired => "identity_expired",
        PurgeReason::IdentityRefused => "identity_refused",
        PurgeReason::Evicted => "evicted",
        _ => "other",
    }
}

/// The JSON line of a membership event.
pub(crate) fn event_json(ev: &DiscoveryEvent, form: PkiForm) -> Value {
    let with_member = |name: &str, m: &MemberInfo| {
        let mut v = member_json(m, form);
        v["event"] = json!(name);
        v
    };
    match ev {
        DiscoveryEvent::MemberAlive {
            member,
            resurrected,
        } => {
            let mut v = with_member("member_alive", member);
            v["resurrected"] = json!(resurrected);
            v
        }
        DiscoveryEvent::MemberRestarted {
            member,
            previous_incarnation,
        } => {
            let mut v = with_member("member_restarted", member);
            v["previous_inc"] = json!(previous_incarnation);
            v
        }
        DiscoveryEvent::MemberDead { member, reason } => {
            let mut v = with_member("member_dead", member);
            v["reason"] = json!(dead_reason(*reason));
            v
        }
        DiscoveryEvent::MemberPurged { member, reason } => {
            let mut v = with_member("member_purged", member);
            v["reason"] = json!(purge_reason(*reason));
            v
        }
        DiscoveryEvent::BootstrapJoined { endpoint, pki_id } => json!({
            "event": "bootstrap_joined",
            "endpoint": endpoint,
            "pki_id": form.show(pki_id),
        }),
        DiscoveryEvent::BootstrapFailed {
            endpoint,
            error,
            attempt,
            gave_up,
        } => json!({
            "event": "bootstrap_failed",
            "endpoint": endpoint,
            "error": error.to_string(),
            "attempt": attempt,
            "gave_up": gave_up,
        }),
        // News a later layer adds, printed rather than lost until this tool knows it.
        other => json!({
            "event": "membership_event",
            "detail": format!("{other:?}"),
        }),
    }
}

/// Alive members first, then dead ones, each in PKI-ID order; `None` without the layer.
pub(crate) fn table(node: &Node) -> Option<Vec<MemberInfo>> {
    node.with_layer(|d: &Discovery| {
        let mut all = d.members();
        all.extend(d.dead_members());
        all
    })
}

/// The membership as one JSON object (`event` names it: `membership` after changes,
/// `members` in answer to the command).
pub(crate) fn membership_json(event: &str, members: &[MemberInfo], form: PkiForm) -> Value {
    json!({
        "event": event,
        "alive": members.iter().filter(|m| m.alive).count(),
        "dead": members.iter().filter(|m| !m.alive).count(),
        "members": members.iter().map(|m| member_json(m, form)).collect::<Vec<_>>(),
    })
}

/// `node` prints its `membership` line (the whole table) after changes at most this often.
pub(crate) const TABLE_PERIOD: Duration = Duration::from_millis(500);
/// ... and, after a table of B bytes, not before B / this many bytes a second have passed, so
/// that the table's output stays within this budget whatever the membership's size: members
/// cost about 260 bytes each, so tables up to about 500 members are paced by
/// [`TABLE_PERIOD`] alone, and a table of 10,000 members (about 2.6 MB) comes at most every
/// ten seconds or so.
pub(crate) const TABLE_BYTES_PER_SEC: u64 = 256 * 1024;

/// When `node` prints its `membership` line: after a change, as soon as both the period
/// ([`TABLE_PERIOD`]) and the byte budget ([`TABLE_BYTES_PER_SEC`]) earned by the previous
/// table allow it. Changes meanwhile are folded into that one table, so the last state
/// always comes out, at most one wait after the last change. Pure bookkeeping: the caller
/// gives the time, prints, and says how many bytes it printed.
#[derive(Debug)]
pub(crate) struct TablePacer {
    period: Duration,
    bytes_per_sec: u64,
    /// When the first change not yet in a printed table came, if one did.
    pending_since: Option<tokio::time::Instant>,
    /// The earliest the next table may be printed.
    next: tokio::time::Instant,
    /// How long the last table made the next one wait (the period, or more for its bytes).
    last_gap: Duration,
    /// Tables printed.
    printed: u64,
    /// Their bytes, newlines included.
    printed_bytes: u64,
    /// Tables printed later than the period alone would have had them, held back by the
    /// byte budget.
    delayed: u64,
}

impl TablePacer {
    /// A pacer that lets the first table out at once (from `now`).
    pub(crate) fn new(now: tokio::time::Instant) -> TablePacer {
        TablePacer {
            period: TABLE_PERIOD,
            bytes_per_sec: TABLE_BYTES_PER_SEC,
            pending_since: None,
            next: now,
            last_gap: Duration::ZERO,
            printed: 0,
            printed_bytes: 0,
            delayed: 0,
        }
    }

    /// The membership changed at `now`.
    pub(crate) fn changed(&mut self, now: tokio::time::Instant) {
        self.pending_since.get_or_insert(now);
    }

    /// Whether a change waits to be printed.
    pub(crate) fn pending(&self) -> bool {
        self.pending_since.is_some()
    }

    /// When the waiting change may be printed (possibly already past); `None` if none
    /// waits.
    pub(crate) fn due(&self) -> Option<tokio::time::Instant> {
        self.pending_since.map(|since| since.max(self.next))
    }

    /// A table of `bytes` bytes (its newline included) was printed at `now` (queued for
    /// stdout: one dropped because stdout is not read counts here too, and in
    /// `output_dropped`): the next one waits the period, or longer for these bytes.
    pub(crate) fn printed(&mut self, now: tokio::time::Instant, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        if let Some(since) = self.pending_since.take()
            && self.last_gap > self.period
            && since < self.next
        {
            self.delayed += 1;
        }
        // Rounded up: the wait is never shorter than the bytes' share of the budget.
        let nanos = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(self.bytes_per_sec));
        let budget = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.last_gap = self.period.max(budget);
        self.next = now + self.last_gap;
        self.printed += 1;
        self.printed_bytes = self.printed_bytes.saturating_add(bytes);
    }

    /// The counters, for the `membership` object of the `stats` event.
    pub(crate) fn counters(&self) -> serde_json::Map<String, Value> {
        [
            ("membership_lines", self.printed),
            ("membership_line_bytes", self.printed_bytes),
            ("membership_lines_delayed", self.delayed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect()
    }
}

/// The membership layer's counters by the names the `stats` command's `membership` object
/// and `/metrics` (`fabric_gossip_membership_<name>`) give them: the layer's own, then its
/// identity pull's (`certstore`). One list, so that the two never disagree.
pub(crate) struct Counters {
    pub(crate) layer: Vec<(&'static str, u64)>,
    pub(crate) certstore: Vec<(&'static str, u64)>,
}

pub(crate) fn counters(d: &Discovery) -> Counters {
    let s = d.stats();
    let c = &s.certstore;
    Counters {
        layer: vec![
            ("alive_received", s.alive_received),
            ("alive_sent", s.alive_sent),
            ("alive_forwarded", s.alive_forwarded),
            ("alive_refused", s.alive_refused()),
            ("alive_malformed", s.alive_malformed),
            ("alive_unknown_identity", s.alive_unknown_identity),
            ("alive_bad_identity", s.alive_bad_identity),
            ("alive_bad_signature", s.alive_bad_signature),
            ("alive_too_large", s.alive_too_large),
            ("alive_about_me", s.alive_about_me),
            ("alive_impostors", s.alive_impostors),
            ("alive_duplicate", s.alive_duplicate),
            ("alive_stale", s.alive_stale),
            ("alive_endpoint_taken", s.alive_endpoint_taken),
            ("endpoint_owners_full", s.endpoint_owners_full),
            ("alive_store_full", s.alive_store_full),
            ("tombstones_store_full", s.tombstones_store_full),
            ("illegal_tag", s.illegal_tag),
            ("requests_sent", s.requests_sent),
            ("requests_received", s.requests_received),
            ("requests_spoofed", s.requests_spoofed),
            ("requests_invalid", s.requests_invalid),
            ("requests_refused", s.requests_refused),
            ("requests_throttled", s.requests_throttled),
            ("responses_sent", s.responses_sent),
            ("responses_rerouted", s.responses_rerouted),
            ("responses_dropped", s.responses_dropped),
            ("responses_over_backlog", s.responses_over_backlog),
            ("stalled_requesters_closed", s.stalled_requesters_closed),
            ("responses_received", s.responses_received),
            ("responses_aborted", s.responses_aborted),
            ("response_entries_repeated", s.response_entries_repeated),
            ("responses_truncated", s.responses_truncated),
            ("members_learned", s.members_learned),
            ("members_resurrected", s.members_resurrected),
            ("members_expired", s.members_expired),
            ("members_presumed_dead", s.members_presumed_dead),
            ("members_purged", s.members_purged),
            ("members_purged_long_dead", s.members_purged_long_dead),
            (
                "members_purged_identity_switch",
                s.members_purged_identity_switch,
            ),
            (
                "members_purged_identity_expired",
                s.members_purged_identity_expired,
            ),
            (
                "members_purged_identity_refused",
                s.members_purged_identity_refused,
            ),
            ("members_refused_full", s.members_refused_full),
            ("members_evicted", s.members_evicted),
            ("reconnect_probes", s.reconnect_probes),
            ("reconnect_deferred", s.reconnect_deferred),
            ("bootstrap_acked", s.bootstrap_acked),
            ("bootstrap_failures", s.bootstrap_failures),
            ("anchors_refused", s.anchors_refused),
            ("comm_errors", s.comm_errors),
            ("events_dropped", s.events_dropped),
        ],
        certstore: vec![
            ("hellos_sent", c.hellos_sent),
            ("hellos_received", c.hellos_received),
            ("hellos_refused_full", c.hellos_refused_full),
            ("hellos_refused_peer", c.hellos_refused_peer),
            ("hellos_replayed", c.hellos_replayed),
            ("hellos_evicted", c.hellos_evicted),
            ("digests_sent", c.digests_sent),
            ("digests_received", c.digests_received),
            ("digests_unsolicited", c.digests_unsolicited),
            ("digest_items_dropped", c.digest_items_dropped),
            ("requests_sent", c.requests_sent),
            ("requests_received", c.requests_received),
            ("requests_unsolicited", c.requests_unsolicited),
            ("requests_replayed", c.requests_replayed),
            ("request_items_dropped", c.request_items_dropped),
            ("updates_sent", c.updates_sent),
            ("updates_received", c.updates_received),
            ("updates_unsolicited", c.updates_unsolicited),
            ("updates_unrequested", c.updates_unrequested),
            ("updates_refused", c.updates_refused),
            ("identity_malformed", c.identity_malformed),
            ("identity_too_large", c.identity_too_large),
            ("identity_bad", c.identity_bad),
            ("identity_expired", c.identity_expired),
            ("identity_bad_signature", c.identity_bad_signature),
            ("identities_learned", c.identities_learned),
            ("identities_refused_full", c.identities_refused_full),
            ("identities_refused_bytes", c.identities_refused_bytes),
            ("identities_evicted", c.identities_evicted),
            ("identities_expired", c.identities_expired),
            ("identities_unused", c.identities_unused),
            (
                "identities_skipped_forgotten",
                c.identities_skipped_forgotten,
            ),
            ("identities_remembered_again", c.identities_remembered_again),
            ("identities_refused_later", c.identities_refused_later),
        ],
    }
}

/// The layer's counters, for the `stats` event: every counter of `DiscoveryStats` (each
/// refusal under its own reason, so an operator can tell a forged message from a stale one),
/// the certstore's under `certstore`.
pub(crate) fn stats_json(node: &Node) -> Option<Value> {
    node.with_layer(|d: &Discovery| {
        let object = |pairs: &[(&str, u64)]| -> serde_json::Map<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect()
        };
        let Counters { layer, certstore } = counters(d);
        let mut out = object(&[
            ("members_alive", d.members().len() as u64),
            ("members_dead", d.dead_members().len() as u64),
        ]);
        out.extend(object(&layer));
        out.insert("certstore".to_owned(), Value::Object(object(&certstore)));
        Value::Object(out)
    })
}

/// Whether a received message is the membership layer's (alive, membership request or
/// response, the identity pull): the layer consumes those, the application's inbox need not
/// show them. The node always runs the identity pull with its membership layer.
pub(crate) fn is_membership_message(m: &fabric_gossip_core::ReceivedMessage) -> bool {
    fabric_gossip_discovery::takes(&m.message, true)
}

#[cfg(test)]
mod tests {
    use super::{
        MembershipArgs, TABLE_BYTES_PER_SEC, TABLE_PERIOD, TablePacer, age, anchor_endpoint,
        anchors_to_dial, event_json, expires_in, member_json, membership_json, parse_duration,
        time_left, until,
    };
    use crate::logging::tests::logged;
    use crate::opts::PkiForm;
    use fabric_gossip_core::Instant as CoreInstant;
    use fabric_gossip_discovery::{DeadReason, DiscoveryEvent, MemberInfo, PurgeReason};
    use serde_json::{Value, json};
    use std::time::Duration;
    use tokio::time::Instant;

    /// A channel's anchor peers: `channel_id` with each organization's list.
    fn channel(id: &str, anchors: &[(&str, &[(&str, i32)])]) -> fabric_gossip_msp::ChannelTrust {
        let mut c = fabric_gossip_msp::ChannelTrust::default();
        c.channel_id = id.into();
        for (org, peers) in anchors {
            let peers = peers.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect();
            c.anchor_peers.insert((*org).to_owned(), peers);
        }
        c
    }

    /// Which anchor peers are dialled, and as whose: a channel this node's organization is
    /// not in gives none; an endpoint two blocks list is dialled once, as this node's
    /// organization's if either block says so (so that its identity is checked against
    /// ours), whichever block comes first; after a reload, one that is already an alive
    /// member's endpoint or internal endpoint is left to the layer.
    #[test]
    fn anchors_are_dialled_once_as_whose_they_are_and_alive_ones_left_after_a_reload() {
        let cfg = MembershipArgs {
            endpoint: Some("peer0.org1:7051".into()),
            external_endpoint: Some("peer0.org1.example.com:7051".into()),
            ..MembershipArgs::default()
        }
        .config("127.0.0.1:7051".parse().unwrap());
        let mine = channel(
            "a",
            &[
                ("Org1MSP", &[("peer1.org1", 7051)]),
                ("Org2MSP", &[("peer0.org2", 9051)]),
            ],
        );
        // The same endpoint listed as Org2MSP's in a second block, and Org2MSP's as ours.
        let again = channel(
            "b",
            &[
                ("Org1MSP", &[("peer0.org2", 9051)]),
                ("Org2MSP", &[("peer1.org1", 7051)]),
            ],
        );
        let not_ours = channel("c", &[("Org2MSP", &[("peer5.org2", 9051)])]);
        let listed = |channels: &[fabric_gossip_msp::ChannelTrust], alive: &[MemberInfo], skip| {
            anchors_to_dial("Org1MSP", channels, &cfg, alive, skip)
        };
        let dial = |channels: &[fabric_gossip_msp::ChannelTrust], alive: &[MemberInfo], skip| {
            let dial = listed(channels, alive, skip);
            dial.into_iter().map(|(_, e, o)| (e, o)).collect::<Vec<_>>()
        };
        let pair = |e: &str, o: &str| (e.to_owned(), o.to_owned());
        let both = vec![
            pair("peer1.org1:7051", "Org1MSP"),
            pair("peer0.org2:9051", "Org1MSP"),
        ];
        assert_eq!(
            dial(&[mine.clone(), again.clone(), not_ours.clone()], &[], false),
            both
        );
        // Each named with the channel that listed it first.
        let channels: Vec<_> = listed(&[mine.clone(), again.clone()], &[], false)
            .into_iter()
            .map(|(c, _, _)| c)
            .collect();
        assert_eq!(channels, ["a", "a"]);
        let reversed = vec![
            pair("peer0.org2:9051", "Org1MSP"),
            pair("peer1.org1:7051", "Org1MSP"),
        ];
        assert_eq!(dial(&[again.clone(), mine.clone()], &[], false), reversed);
        assert_eq!(
            dial(std::slice::from_ref(&mine), &[], false),
            [
                pair("peer1.org1:7051", "Org1MSP"),
                pair("peer0.org2:9051", "Org2MSP")
            ]
        );
        assert_eq!(dial(&[not_ours], &[], false), []);

        let mut by_endpoint = member(true, Duration::from_secs(1), None);
        by_endpoint.endpoint = "peer1.org1:7051".into();
        let mut by_internal = member(true, Duration::from_secs(1), None);
        by_internal.internal_endpoint = "peer0.org2:9051".into();
        let alive = [by_endpoint, by_internal];
        assert_eq!(dial(std::slice::from_ref(&mine), &alive, true), []);
        assert_eq!(
            dial(std::slice::from_ref(&mine), &alive[..1], true),
            [pair("peer0.org2:9051", "Org2MSP")]
        );
        assert_eq!(
            dial(std::slice::from_ref(&mine), &alive[1..], true),
            [pair("peer1.org1:7051", "Org1MSP")]
        );
        assert_eq!(dial(&[mine], &alive, false).len(), 2);
    }

    /// Fabric's `learnAnchorPeers` rules: empty host, port 0, itself, and another
    /// organization's anchor without an external endpoint are skipped; the rest dialled.
    #[test]
    fn anchor_peers_are_skipped_as_fabric_skips_them() {
        let bound = "127.0.0.1:7051".parse().unwrap();
        let internal = MembershipArgs {
            endpoint: Some("peer0.org1:7051".into()),
            ..MembershipArgs::default()
        }
        .config(bound);
        let external = MembershipArgs {
            endpoint: Some("peer0.org1:7051".into()),
            external_endpoint: Some("peer0.org1.example.com:7051".into()),
            ..MembershipArgs::default()
        }
        .config(bound);
        let of = |host: &str, port: i32, org: &str, cfg| {
            anchor_endpoint(host, port, org, "Org1MSP", cfg)
        };
        for cfg in [&internal, &external] {
            assert!(
                of("", 7051, "Org1MSP", cfg)
                    .unwrap_err()
                    .contains("host is empty")
            );
            assert!(
                of("peer1.org1", 0, "Org1MSP", cfg)
                    .unwrap_err()
                    .contains("port is 0")
            );
            assert!(
                of("peer1.org1", 70000, "Org1MSP", cfg)
                    .unwrap_err()
                    .contains("not a TCP port")
            );
            assert!(
                of("peer1.org1", -1, "Org1MSP", cfg)
                    .unwrap_err()
                    .contains("not a TCP port")
            );
            // Itself, by its endpoint or the loopback forms of its port.
            for me in ["peer0.org1", "127.0.0.1", "localhost"] {
                assert!(
                    of(me, 7051, "Org1MSP", cfg)
                        .unwrap_err()
                        .contains("own endpoint"),
                    "{me}"
                );
            }
            // Our organization's anchors: dialled, with or without an external endpoint.
            assert_eq!(
                of("peer1.org1", 7051, "Org1MSP", cfg).unwrap(),
                "peer1.org1:7051"
            );
            assert_eq!(of("::1", 7051, "Org1MSP", cfg).unwrap(), "[::1]:7051");
        }
        assert!(
            of("peer0.org1.example.com", 7051, "Org1MSP", &external)
                .unwrap_err()
                .contains("own endpoint")
        );
        // Another organization's: only with an external endpoint to give it.
        let e = of("peer0.org2", 9051, "Org2MSP", &internal).unwrap_err();
        assert!(
            e.contains("another organization (Org2MSP)") && e.contains("--external-endpoint"),
            "{e}"
        );
        assert_eq!(
            of("peer0.org2", 9051, "Org2MSP", &external).unwrap(),
            "peer0.org2:9051"
        );
    }

    /// Fabric derives the expiration (five alive periods) and the reconnection period (the
    /// expiration) from what is given: `aliveTimeInterval: 1s` alone gives 5 s and 5 s,
    /// where fixed defaults gave 25 s death detection, and `aliveTimeInterval: 30s` alone
    /// was refused as longer than the expiration.
    #[test]
    fn the_expiration_and_reconnection_follow_the_alive_period_as_in_fabric() {
        let bound = "127.0.0.1:7051".parse().unwrap();
        let cfg = |alive: u64, expiration: Option<u64>| {
            MembershipArgs {
                alive_interval: Some(Duration::from_secs(alive)),
                alive_expiration: expiration.map(Duration::from_secs),
                ..MembershipArgs::default()
            }
            .config(bound)
        };
        let c = cfg(1, None);
        assert_eq!(c.alive_expiration, Duration::from_secs(5));
        assert_eq!(c.reconnect_interval, Duration::from_secs(5));
        let c = cfg(30, None);
        assert_eq!(c.alive_expiration, Duration::from_secs(150));
        c.validate().expect("valid");
        let c = cfg(5, Some(60));
        assert_eq!(c.reconnect_interval, Duration::from_secs(60));
        let d = MembershipArgs::default().config(bound);
        assert_eq!(
            (d.alive_expiration, d.reconnect_interval),
            (Duration::from_secs(25), Duration::from_secs(25))
        );
        // The file's keys that had no flag reach the layer too.
        let mut m = MembershipArgs::default();
        m.merge_file(&crate::config::GossipConfig {
            max_connection_attempts: Some(5),
            msg_expiration_factor: Some(4),
            publish_cert_period: Some(Duration::from_secs(30)),
            propagate_peer_num: Some(6),
            propagate_iterations: Some(2),
            ..Default::default()
        });
        let c = m.config(bound);
        assert_eq!((c.max_connection_attempts, c.msg_expiration_factor), (5, 4));
        assert_eq!(c.publish_cert_period, Duration::from_secs(30));
        assert_eq!(c.propagate_peer_num, 6);
        assert_eq!(c.propagate_iterations, 2);
        assert_eq!(d.propagate_iterations, 1, "Fabric's default");
    }

    /// `--alive-expiration-check-interval` reaches the layer, and one longer than the
    /// expiration is refused with the reason (the node then exits with status 2).
    #[test]
    fn the_expiry_check_interval_flag_reaches_the_layer_and_is_checked() {
        let bound = "127.0.0.1:7051".parse().unwrap();
        let mut m = MembershipArgs {
            alive_expiration_check_interval: Some(Duration::from_millis(200)),
            ..MembershipArgs::default()
        };
        assert!(m.any());
        let layer = m.layer(bound).expect("valid");
        assert_eq!(
            layer.config().expiration_check_interval(),
            Duration::from_millis(200)
        );
        // Unset: Fabric's tenth of the expiration.
        let layer = MembershipArgs::default().layer(bound).expect("valid");
        assert_eq!(layer.config().alive_expiration_check_interval, None);
        assert_eq!(
            layer.config().expiration_check_interval(),
            Duration::from_millis(2500)
        );
        m.alive_interval = Some(Duration::from_millis(200));
        m.alive_expiration = Some(Duration::from_secs(1));
        m.alive_expiration_check_interval = Some(Duration::from_secs(2));
        let e = m.layer(bound).expect_err("longer than the expiration").0;
        assert!(
            e.contains(
                "--alive-expiration-check-interval 2s must not exceed --alive-expiration 1s"
            ),
            "{e}"
        );
    }

    /// The `membership` lines a node prints, by the virtual clock: the membership changes
    /// at each of `changes` (from the start), the table is `bytes` long; each printed line's
    /// time and size, and the pacer's counters at the end (every change printed). Changes
    /// due at the same instant as a table come first, as in `node`'s loop.
    fn lines(changes: &[Duration], bytes: usize) -> (Vec<(Duration, usize)>, TablePacer) {
        let start = Instant::now();
        let mut p = TablePacer::new(start);
        let mut out = Vec::new();
        let mut changes = changes.iter().peekable();
        loop {
            let change = changes.peek().map(|&&c| start + c);
            match (change, p.due()) {
                (Some(c), due) if due.is_none_or(|d| c <= d) => {
                    p.changed(c);
                    changes.next();
                }
                (_, Some(due)) => {
                    p.printed(due, bytes);
                    out.push((due - start, bytes));
                }
                _ => return (out, p),
            }
        }
    }

    /// Today's rule, for comparison: after a change, at once if the last line is at least
    /// the period ago, else at the period.
    fn half_second_rule(changes: &[Duration]) -> Vec<Duration> {
        let mut out: Vec<Duration> = Vec::new();
        let mut pending: Option<Duration> = None;
        for &c in changes {
            if let Some(at) = pending
                && at <= c
            {
                out.push(at);
                pending = None;
            }
            if pending.is_none() {
                let earliest = out.last().map_or(c, |&l| (l + TABLE_PERIOD).max(c));
                pending = Some(earliest);
            }
        }
        out.extend(pending);
        out
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn small_tables_come_out_as_before_at_most_twice_a_second() {
        // 300 members (~78 KB): changes every 100 ms for 3 s, a pause, one more.
        let mut changes: Vec<Duration> = (0..30).map(|i| ms(100 * i)).collect();
        changes.push(ms(10_000));
        let (out, p) = lines(&changes, 300 * 260);
        let at: Vec<Duration> = out.iter().map(|l| l.0).collect();
        assert_eq!(at, half_second_rule(&changes));
        assert_eq!(
            at,
            [0, 500, 1000, 1500, 2000, 2500, 3000, 10_000].map(ms),
            "the last change of the burst (2.9 s) at 3 s, the lone one at once"
        );
        let c = p.counters();
        assert_eq!(c["membership_lines"], 8);
        assert_eq!(c["membership_line_bytes"], 8 * 300 * 260);
        assert_eq!(c["membership_lines_delayed"], 0);
    }

    /// The finding: 20,000 members (a 5.2 MB table) and one new member every 0.4 s made a
    /// node print the whole table twice a second, 10.6 MB/s. Now the table's bytes over any
    /// span are at most one table plus the budget for that span, and the last change still
    /// comes out.
    #[test]
    fn large_tables_stay_within_the_byte_budget_and_the_last_state_comes_out() {
        let table = 5_200_000;
        let changes: Vec<Duration> = (0..38).map(|i| ms(400 * i)).collect();
        let last_change = *changes.last().expect("changes");
        let (out, p) = lines(&changes, table);
        let budget =
            |span: Duration| table as f64 + TABLE_BYTES_PER_SEC as f64 * span.as_secs_f64();
        for (i, &(from, _)) in out.iter().enumerate() {
            for &(to, _) in &out[i..] {
                let bytes: usize = out
                    .iter()
                    .filter(|l| (from..=to).contains(&l.0))
                    .map(|l| l.1)
                    .sum();
                assert!(
                    bytes as f64 <= budget(to - from),
                    "{bytes} bytes from {from:?} to {to:?}: {out:?}"
                );
            }
        }
        let in_15s: usize = out.iter().filter(|l| l.0 < ms(15_000)).map(|l| l.1).sum();
        assert!(in_15s <= table, "{in_15s} bytes in the first 15 s: {out:?}");
        // The last change is printed, within one budgeted wait.
        let (last, _) = *out.last().expect("a line");
        let wait = Duration::from_secs_f64(table as f64 / TABLE_BYTES_PER_SEC as f64);
        assert!(
            last >= last_change && last <= last_change + wait,
            "{last:?}: {out:?}"
        );
        assert!(!p.pending());
        let c = p.counters();
        assert_eq!(c["membership_lines"], out.len());
        assert_eq!(c["membership_lines_delayed"], out.len() - 1, "{out:?}");
    }

    #[test]
    fn a_table_waits_for_its_bytes_then_the_next_change_is_at_once() {
        let start = Instant::now();
        let mut p = TablePacer::new(start);
        assert_eq!(p.due(), None);
        p.changed(start);
        assert_eq!(p.due(), Some(start));
        // 1 MiB: 4 s of budget.
        p.printed(start, 1 << 20);
        assert_eq!(p.due(), None);
        p.changed(start + ms(100));
        assert_eq!(p.due(), Some(start + Duration::from_secs(4)));
        p.printed(start + Duration::from_secs(4), 1000);
        // A small table after it: the period again, and a change long after is at once.
        p.changed(start + Duration::from_secs(60));
        assert_eq!(p.due(), Some(start + Duration::from_secs(60)));
    }

    #[test]
    fn time_left_reads_in_the_unit_that_matters() {
        assert_eq!(time_left(0), "expired");
        assert_eq!(time_left(1), "in 1 min");
        assert_eq!(time_left(3599), "in 60 min");
        assert_eq!(time_left(3600), "in 1.0 h");
        assert_eq!(time_left(172_799), "in 48.0 h");
        assert_eq!(time_left(172_800), "in 2 days");
        assert_eq!(time_left(400 * 86_400 + 5), "in 400 days");
    }

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        m: MembershipArgs,
    }

    /// A Go duration of more than zero; zero and what is no duration are refused, saying
    /// what is expected.
    #[test]
    fn membership_durations_are_go_durations_of_more_than_zero() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s").unwrap_err(), "must be more than zero");
        let e = parse_duration("soon").unwrap_err();
        assert!(
            e.starts_with("expected a duration such as 5s or 500ms: "),
            "{e}"
        );
    }

    /// Each membership flag on its own turns the layer on; none leaves it off.
    #[test]
    fn any_membership_flag_alone_counts() {
        use clap::Parser;
        assert!(!T::parse_from(["t"]).m.any());
        let flags = [
            ("--bootstrap", "127.0.0.1:7051"),
            ("--endpoint", "127.0.0.1:7051"),
            ("--external-endpoint", "127.0.0.1:7051"),
            ("--alive-interval", "1s"),
            ("--alive-expiration", "5s"),
            ("--alive-expiration-check-interval", "1s"),
            ("--reconnect-interval", "5s"),
            ("--max-connection-attempts", "3"),
            ("--msg-expiration-factor", "3"),
            ("--publish-cert-period", "5s"),
            ("--propagate-peer-num", "2"),
            ("--propagate-iterations", "2"),
            ("--pull-interval", "2s"),
            ("--pull-peer-num", "2"),
            ("--digest-wait", "1s"),
            ("--request-wait", "1s"),
            ("--response-wait", "1s"),
        ];
        for (flag, value) in flags {
            assert!(T::parse_from(["t", flag, value]).m.any(), "{flag}");
        }
    }

    /// A node bound to every interface without `--endpoint` is warned that nobody can dial
    /// it back; one with an endpoint, or bound to an address, is not. Bootstrap peers that
    /// are this node are named, and warned about.
    #[test]
    fn an_endpoint_nobody_can_dial_and_bootstrap_peers_that_are_this_node_are_warned_about() {
        let everywhere: std::net::SocketAddr = "0.0.0.0:7051".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:7051".parse().unwrap();
        let undialable = "is not an address others can dial";
        let log = logged(|| {
            MembershipArgs::default().layer(everywhere).expect("valid");
        });
        assert!(log.contains(&format!("0.0.0.0:7051 {undialable}")), "{log}");
        let with_endpoint = MembershipArgs {
            endpoint: Some("peer0.org1:7051".into()),
            ..MembershipArgs::default()
        };
        let log = logged(|| {
            with_endpoint.layer(everywhere).expect("valid");
            MembershipArgs::default().layer(loopback).expect("valid");
        });
        assert!(!log.contains(undialable), "{log}");

        let m = MembershipArgs {
            bootstrap: vec![
                "127.0.0.1:7051".into(),
                "peer1.org1:7051".into(),
                "localhost:7051".into(),
            ],
            ..MembershipArgs::default()
        };
        assert_eq!(
            m.own_bootstraps(&m.config(loopback)),
            ["127.0.0.1:7051", "localhost:7051"]
        );
        let log = logged(|| {
            m.layer(loopback).expect("valid");
        });
        assert!(
            log.contains("--bootstrap localhost:7051 is this node's own endpoint: skipped"),
            "{log}"
        );
        assert!(!log.contains("--bootstrap peer1.org1:7051"), "{log}");
        // README walk-through finding 12: a value from core.yaml is named by its key and
        // file, not by a flag that was not given.
        let mut m = MembershipArgs::default();
        m.merge_file(&crate::config::GossipConfig {
            bootstrap: vec!["127.0.0.1:7051".into()],
            bootstrap_from: "peer.gossip.bootstrap (from --config cfg/core.yaml)".into(),
            ..Default::default()
        });
        let log = logged(|| {
            m.layer(loopback).expect("valid");
        });
        assert!(
            log.contains(
                "peer.gossip.bootstrap (from --config cfg/core.yaml): 127.0.0.1:7051 is this \
                 node's own endpoint: skipped"
            ),
            "{log}"
        );
        assert!(!log.contains("--bootstrap"), "{log}");
    }

    /// A check interval longer than the expiration is refused naming both flags and the
    /// expiration's core.yaml key.
    #[test]
    fn a_check_interval_over_the_expiration_names_the_expiration_s_key() {
        let m = MembershipArgs {
            alive_expiration: Some(Duration::from_secs(25)),
            alive_expiration_check_interval: Some(Duration::from_secs(30)),
            ..MembershipArgs::default()
        };
        let e = m
            .layer("127.0.0.1:7051".parse().unwrap())
            .expect_err("refused")
            .0;
        assert_eq!(
            e,
            "--alive-expiration-check-interval 30s must not exceed --alive-expiration 25s \
             (peer.gossip.aliveExpirationTimeout)"
        );
    }

    /// A member as the tests show it: last seen `seen_ago` ago, its identity expired from
    /// `expires` on (Unix seconds).
    fn member(alive: bool, seen_ago: Duration, expires: Option<u64>) -> MemberInfo {
        let now = crate::expiry::wall_now();
        MemberInfo {
            pki_id: fabric_gossip_core::PkiId::new(&b"\x01\xab"[..]),
            endpoint: "peer0.org1:7051".into(),
            internal_endpoint: "10.0.0.1:7051".into(),
            org: Some("Org1MSP".into()),
            timestamp: fabric_gossip_discovery::alive::Timestamp { inc: 7, seq: 9 },
            last_seen: CoreInstant::from_unix_nanos(
                now.as_unix_nanos() - u64::try_from(seen_ago.as_nanos()).unwrap(),
            ),
            alive,
            identity_expires: expires.map(CoreInstant::from_unix_secs),
        }
    }

    /// A member's JSON object: its PKI-ID in the node's form, MSP ID, endpoints, timestamp,
    /// how long ago it was last heard of, its state, and its certificate's NotAfter (the
    /// whole second before the first instant it is expired).
    #[test]
    fn a_member_is_shown_with_its_age_state_and_notafter() {
        let m = member(true, Duration::from_secs(10), Some(2_000_000_000));
        let age = age(m.last_seen);
        assert!(
            age >= Duration::from_secs(10) && age < Duration::from_secs(70),
            "{age:?}"
        );
        let mut v = member_json(&m, PkiForm::Hex);
        let ago = v["last_alive_ms_ago"].as_u64().expect("ms ago");
        assert!((10_000..70_000).contains(&ago), "{v}");
        v["last_alive_ms_ago"] = json!(0);
        assert_eq!(
            v,
            json!({
                "pki_id": "01ab",
                "msp_id": "Org1MSP",
                "endpoint": "peer0.org1:7051",
                "internal_endpoint": "10.0.0.1:7051",
                "inc": 7,
                "seq": 9,
                "last_alive_ms_ago": 0,
                "alive": true,
                "identity_expires_unix_ms": 2_000_000_000_000u64,
            })
        );
        let table = membership_json(
            "members",
            &[
                m,
                member(false, Duration::ZERO, None),
                member(false, Duration::ZERO, None),
            ],
            PkiForm::Text,
        );
        assert_eq!(
            (&table["event"], &table["alive"], &table["dead"]),
            (&json!("members"), &json!(1), &json!(2))
        );
        let members = table["members"].as_array().expect("members");
        assert_eq!(members.len(), 3);
        assert_eq!(members[1]["alive"], false);
        assert_eq!(members[1]["identity_expires_unix_ms"], Value::Null);
        assert_eq!(members[0]["pki_id"], "\u{1}\u{fffd}");
    }

    /// A member's NotAfter is the certificate's whole second, however far within a few
    /// milliseconds the node's time stood from the wall clock when the layer took the
    /// expiry: a live check printed one certificate's NotAfter as ...996 to ...003 ms.
    #[test]
    fn a_member_s_notafter_is_the_certificate_s_second_whatever_the_clock_jitter() {
        let not_after_ms = 2_112_056_640_000u64;
        for jitter_ns in [-4_000_000i64, -1, 0, 1, 3_999_999] {
            let expired_from = (not_after_ms * 1_000_000 + 1).saturating_add_signed(jitter_ns);
            let mut m = member(true, Duration::ZERO, None);
            m.identity_expires = Some(CoreInstant::from_unix_nanos(expired_from));
            let v = member_json(&m, PkiForm::Hex);
            assert_eq!(
                v["identity_expires_unix_ms"], not_after_ms,
                "{jitter_ns} ns: {v}"
            );
        }
    }

    /// When a member's certificate expires, read for people, by the wall clock.
    #[test]
    fn a_member_s_expiry_reads_as_the_time_left() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let in_days = member(true, Duration::ZERO, Some(now + 3 * 86_400 + 3_600));
        assert_eq!(expires_in(&in_days), "in 3 days");
        let expired = member(true, Duration::ZERO, Some(now - 60));
        assert_eq!(expires_in(&expired), "expired");
        assert_eq!(expires_in(&member(true, Duration::ZERO, None)), "-");
        let in_hours = std::time::SystemTime::now() + Duration::from_secs(2 * 3600 + 30);
        assert_eq!(until(in_hours), "in 2.0 h");
        assert_eq!(until(std::time::UNIX_EPOCH), "expired");
    }

    /// Each reason a member died or was purged has its own word in the events.
    #[test]
    fn each_reason_of_a_death_or_a_purge_has_its_word() {
        let m = || member(false, Duration::ZERO, None);
        for (reason, word) in [
            (DeadReason::Expired, "expired"),
            (DeadReason::PresumedDead, "presumed_dead"),
            (DeadReason::Reported, "reported"),
        ] {
            let v = event_json(
                &DiscoveryEvent::MemberDead {
                    member: m(),
                    reason,
                },
                PkiForm::Hex,
            );
            assert_eq!(
                (&v["event"], &v["reason"]),
                (&json!("member_dead"), &json!(word))
            );
            assert_eq!(v["pki_id"], "01ab");
        }
        for (reason, word) in [
            (PurgeReason::LongDead, "long_dead"),
            (PurgeReason::IdentitySwitch, "identity_switch"),
            (PurgeReason::IdentityExpired, "identity_expired"),
            (PurgeReason::IdentityRefused, "identity_refused"),
            (PurgeReason::Evicted, "evicted"),
        ] {
            let v = event_json(
                &DiscoveryEvent::MemberPurged {
                    member: m(),
                    reason,
                },
                PkiForm::Hex,
            );
            assert_eq!(
                (&v["event"], &v["reason"]),
                (&json!("member_purged"), &json!(word))
            );
        }
    }
}
