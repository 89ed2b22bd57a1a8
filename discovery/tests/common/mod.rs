//! A deterministic in-memory cluster of `Comm` + `Discovery` nodes on a virtual clock.
//!
//! It reuses the core's own harness (`fabric_gossip_core::testing::Net`) for the network
//! and hosts the membership layer above each core as a driver must (the `Layer`
//! contract): every new core event goes to `handle_comm_event`, the deliveries of the
//! layer's subscription to `handle_message`, its deadline to `handle_timeout`, and the
//! core's actions are carried out after each call. Time advances in steps of at most
//! `STEP`, so a layer reacts to the network within `STEP` of virtual time.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use core::time::Duration;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::testing::{Net, ep};
use fabric_gossip_core::{Config, Event, Instant, Layer, PkiId, Security, TestOnlyHmacSecurity};
use fabric_gossip_discovery::validate::parse_alive;
use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};

/// Largest virtual-time step between two routings.
pub const STEP: Duration = Duration::from_millis(5);

/// One line per discovery message a node's layer received, and per layer event.
pub struct Cluster {
    pub net: Net,
    pub layers: Vec<Option<Discovery>>,
    seen: Vec<usize>,
    /// Nodes whose layer is frozen (a hung process: connections stay, nothing is sent).
    pub frozen: Vec<bool>,
    pub events: Vec<Vec<(Instant, DiscoveryEvent)>>,
    /// `(time, "n<to> <- n<from>: <message>")` for every discovery message delivered.
    pub trace: Vec<(Instant, String)>,
}

/// The discovery config of node `i` (internal endpoint = its test endpoint).
pub fn dcfg(i: usize) -> DiscoveryConfig {
    DiscoveryConfig::new(ep(i)).with_seed(i as u64)
}

/// The configs of the common join: node 1 names node 0 as its bootstrap peer, every
/// other node starts alone and is learnt through them.
pub fn one_joins_zero(i: usize) -> DiscoveryConfig {
    if i == 1 {
        dcfg(1).with_bootstrap([ep(0)])
    } else {
        dcfg(i)
    }
}

impl Cluster {
    /// `n` nodes with the test HMAC provider, node `i` configured by `cfg(i)`.
    pub fn hmac(n: usize, cfg: impl Fn(usize) -> DiscoveryConfig) -> Self {
        Self::build(Net::new(n, |_| Config::default()), cfg)
    }

    /// `n` nodes with the given providers, starting at `now`.
    pub fn with_security(
        now: Instant,
        n: usize,
        security: impl FnMut(usize) -> Box<dyn Security>,
        cfg: impl Fn(usize) -> DiscoveryConfig,
    ) -> Self {
        Self::build(Net::at(now, n, |_| Config::default(), security), cfg)
    }

    fn build(net: Net, cfg: impl Fn(usize) -> DiscoveryConfig) -> Self {
        let n = net.nodes.len();
        let mut c = Cluster {
            net,
            layers: (0..n).map(|_| None).collect(),
            seen: vec![0; n],
            frozen: vec![false; n],
            events: vec![Vec::new(); n],
            trace: Vec::new(),
        };
        for i in 0..n {
            c.start(i, cfg(i));
        }
        c
    }

    /// Starts (or restarts) node `i`'s layer on its current core.
    pub fn start(&mut self, i: usize, cfg: DiscoveryConfig) {
        let mut d = Discovery::new(cfg).unwrap();
        let now = self.net.now;
        d.start(now, &mut self.net.nodes[i].comm);
        // Let the harness poll the layer's subscription as soon as anything arrives (as a
        // driver must), so a busy node does not overflow it between two routings.
        if let Some(sub) = d.subscription() {
            self.net.nodes[i].subs.push(sub);
        }
        self.layers[i] = Some(d);
        self.seen[i] = 0;
        self.frozen[i] = false;
        self.net.flush(i);
    }

    /// Crashes node `i` (its streams reset at the remote ends).
    pub fn crash(&mut self, i: usize) {
        self.net.crash(i);
        self.layers[i] = None;
    }

    /// Restarts node `i` with a fresh core (`security`) and layer (`cfg`).
    pub fn restart(&mut self, i: usize, security: Box<dyn Security>, cfg: DiscoveryConfig) {
        self.net.restart(i, security, Config::default());
        self.start(i, cfg);
    }

    /// Restarts node `i` with the HMAC provider.
    pub fn restart_hmac(&mut self, i: usize, cfg: DiscoveryConfig) {
        self.restart(i, Box::new(TestOnlyHmacSecurity::new(ep(i))), cfg);
    }

    pub fn layer(&self, i: usize) -> &Discovery {
        self.layers[i].as_ref().unwrap()
    }

    pub fn now(&self) -> Instant {
        self.net.now
    }

    /// Routes node `i`'s new core events and deliveries to its layer until quiet.
    /// Returns whether anything was routed.
    fn route(&mut self, i: usize) -> bool {
        if !self.net.nodes[i].up || self.frozen[i] {
            return false;
        }
        let Some(mut layer) = self.layers[i].take() else {
            return false;
        };
        let now = self.net.now;
        let mut any = false;
        loop {
            let mut progressed = false;
            while self.seen[i] < self.net.nodes[i].events.len() {
                let ev: Event = self.net.nodes[i].events[self.seen[i]].clone();
                self.seen[i] += 1;
                progressed = true;
                layer.handle_comm_event(now, &mut self.net.nodes[i].comm, &ev);
                self.net.flush(i);
            }
            if let Some(sub) = layer.subscription() {
                self.net.drain_deliveries(i);
                let queued = self.net.nodes[i].delivered.remove(&sub).unwrap_or_default();
                for m in queued {
                    progressed = true;
                    let from = (0..self.net.nodes.len())
                        .find(|j| self.net.nodes[*j].comm.pki_id() == m.sender())
                        .map_or_else(|| "?".to_string(), |j| format!("n{j}"));
                    let mut line = format!(
                        "n{i} <- {from}: {}",
                        describe_received(&m.message, &m.envelope)
                    );
                    for j in 0..self.net.nodes.len() {
                        let pki = format!("pki={}", self.net.nodes[j].comm.pki_id());
                        line = line.replace(&format!("{pki} "), &format!("pki=n{j} "));
                    }
                    self.trace.push((now, line));
                    layer.handle_message(now, &mut self.net.nodes[i].comm, m);
                    self.net.flush(i);
                }
            }
            if layer.poll_timeout().is_some_and(|t| t <= now) {
                progressed = true;
                layer.handle_timeout(now, &mut self.net.nodes[i].comm);
                self.net.flush(i);
            }
            while let Some(e) = layer.poll_event() {
                self.events[i].push((now, e));
            }
            if !progressed {
                break;
            }
            any = true;
        }
        self.layers[i] = Some(layer);
        any
    }

    fn route_all(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.layers.len() {
                any |= self.route(i);
            }
            if !any {
                break;
            }
            self.net.settle();
        }
    }

    /// Runs the cluster for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.net.now + d;
        self.route_all();
        while self.net.now < end {
            let next_layer = (0..self.layers.len())
                .filter(|i| self.net.nodes[*i].up && !self.frozen[*i])
                .filter_map(|i| self.layers[i].as_ref().and_then(|l| l.poll_timeout()))
                .min();
            let mut step_end = (self.net.now + STEP).min(end);
            if let Some(t) = next_layer {
                step_end = step_end.min(t.max(self.net.now));
            }
            let step = step_end - self.net.now;
            self.net.advance(step);
            self.route_all();
        }
    }

    /// Runs until `pred` holds (checked every step), at most `limit`; returns the time it
    /// took, or `None`.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&Cluster) -> bool,
    ) -> Option<Duration> {
        let start = self.net.now;
        let end = start + limit;
        loop {
            if pred(self) {
                return Some(self.net.now - start);
            }
            if self.net.now >= end {
                return None;
            }
            self.run_for(STEP.min(end - self.net.now));
        }
    }

    /// Whether node `i` sees node `j` alive.
    pub fn sees_alive(&self, i: usize, j: usize) -> bool {
        let pki = self.net.nodes[j].comm.pki_id();
        self.layers[i]
            .as_ref()
            .and_then(|l| l.member(pki))
            .is_some_and(|m| m.alive)
    }

    /// PKI-IDs node `i` sees alive.
    pub fn alive_view(&self, i: usize) -> Vec<PkiId> {
        self.layer(i)
            .members()
            .into_iter()
            .map(|m| m.pki_id)
            .collect()
    }

    /// Node index of a PKI-ID.
    pub fn node_of(&self, pki: &PkiId) -> Option<usize> {
        (0..self.net.nodes.len()).find(|j| self.net.nodes[*j].comm.pki_id() == pki)
    }

    /// Events of node `i`, formatted with node names instead of PKI-IDs.
    pub fn describe_events(&self, i: usize) -> Vec<String> {
        self.events[i]
            .iter()
            .map(|(t, e)| format!("{t} {}", self.describe_event(e)))
            .collect()
    }

    pub fn describe_event(&self, e: &DiscoveryEvent) -> String {
        let name = |p: &PkiId| {
            self.node_of(p)
                .map_or_else(|| p.to_string(), |j| format!("n{j}"))
        };
        match e {
            DiscoveryEvent::MemberAlive {
                member,
                resurrected,
            } => format!(
                "MemberAlive {} resurrected={resurrected}",
                name(&member.pki_id)
            ),
            DiscoveryEvent::MemberDead { member, reason } => {
                format!("MemberDead {} {reason:?}", name(&member.pki_id))
            }
            DiscoveryEvent::MemberPurged { member, reason } => {
                format!("MemberPurged {} {reason:?}", name(&member.pki_id))
            }
            DiscoveryEvent::BootstrapJoined { endpoint, pki_id } => {
                format!("BootstrapJoined {endpoint} {}", name(pki_id))
            }
            other => format!("{other:?}"),
        }
    }
}

/// A readable, signature-free description of an alive envelope.
pub fn describe_alive(env: &Envelope) -> String {
    match parse_alive(env) {
        Ok(p) => format!(
            "alive{{pki={} endpoint={:?} inc={} seq={} identity={} secret={:?} signed}}",
            p.pki_id,
            p.endpoint,
            p.ts.inc,
            p.ts.seq,
            if p.identity.is_empty() {
                "-".to_string()
            } else {
                format!("{} bytes", p.identity.len())
            },
            env.secret_envelope
                .as_ref()
                .map(|_| p.internal_endpoint.clone()),
        ),
        Err(e) => format!("invalid alive ({e})"),
    }
}

/// A readable description of a discovery message and its envelope.
pub fn describe_received(m: &GossipMessage, env: &Envelope) -> String {
    match &m.content {
        Some(gossip_message::Content::AliveMsg(_)) => {
            format!("alive_msg tag={} {}", m.tag, describe_alive(env))
        }
        Some(gossip_message::Content::MemReq(r)) => format!(
            "mem_req nonce={} tag={} self={}",
            m.nonce,
            m.tag,
            r.self_information
                .as_ref()
                .map_or("none".into(), describe_alive)
        ),
        Some(gossip_message::Content::MemRes(r)) => format!(
            "mem_res nonce={} tag={} alive=[{}] dead=[{}]",
            m.nonce,
            m.tag,
            r.alive
                .iter()
                .map(describe_alive)
                .collect::<Vec<_>>()
                .join(", "),
            r.dead
                .iter()
                .map(describe_alive)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(gossip_message::Content::Hello(h)) => {
            format!("hello nonce={} type={}", h.nonce, h.msg_type)
        }
        Some(gossip_message::Content::DataDig(d)) => format!(
            "data_dig nonce={} type={} digests=[{}]",
            d.nonce,
            d.msg_type,
            describe_digests(&d.digests)
        ),
        Some(gossip_message::Content::DataReq(r)) => format!(
            "data_req nonce={} type={} digests=[{}]",
            r.nonce,
            r.msg_type,
            describe_digests(&r.digests)
        ),
        Some(gossip_message::Content::DataUpdate(u)) => format!(
            "data_update nonce={} type={} data=[{}]",
            u.nonce,
            u.msg_type,
            u.data
                .iter()
                .map(describe_identity)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => m.content_name().to_string(),
    }
}

/// Pull digests (PKI-IDs), each written `pki=<id> ` so the trace names the nodes.
fn describe_digests(digests: &[bytes::Bytes]) -> String {
    digests
        .iter()
        .map(|d| format!("pki={} ", PkiId(d.clone())))
        .collect()
}

/// A readable description of a signed `PeerIdentity` envelope.
pub fn describe_identity(env: &Envelope) -> String {
    use prost::Message;
    let Ok(msg) = GossipMessage::decode(env.payload.clone()) else {
        return "undecodable".to_string();
    };
    match msg.content {
        Some(gossip_message::Content::PeerIdentity(p)) => format!(
            "identity{{pki={} cert={} bytes tag={} signed={}}}",
            PkiId(p.pki_id),
            p.cert.len(),
            msg.tag,
            !env.signature.is_empty()
        ),
        _ => "not an identity".to_string(),
    }
}

/// The bytes of field `field` (hex) of the record named `name` in a vector file's
/// `records` array.
pub fn vector_hex(vectors: &str, name: &str, field: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(vectors).unwrap();
    let r = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap();
    hex::decode(r[field].as_str().unwrap()).unwrap()
}
