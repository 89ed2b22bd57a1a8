//! Membership scenarios: Fabric's discovery layer (`fabric-gossip-discovery`) hosted above
//! the core on every node, written once on the [`Harness`] like the comm scenarios.
//!
//! Each scenario takes a function that makes the node specification of its `i`-th member
//! (of organization `org`), so the same scenario runs with the test HMAC identities
//! ([`hmac_member`]) and with real X.509 / ECDSA identities
//! ([`msp_member`](crate::msp_scenarios::msp_member)). A harness that does not host the
//! membership layer ([`Harness::supports_membership`]) skips them.

use crate::{
    Envelope, Harness, MemberInfo, NodeId, NodeSpec, OrgSecurity, Outcome, PASS, Pass, ensure,
    node, wait,
};
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{GossipMessage, gossip_message};
use fabric_gossip_core::{PkiId, SignedMessage};
use fabric_gossip_discovery::{DeadReason, DiscoveryConfig, DiscoveryEvent};
use prost::Message;
use std::collections::BTreeSet;

pub use crate::certstore::member_past_its_identity_period_learnt_through_the_pull;

/// Calls `$m!(name)` for every membership scenario (each is generic over the harness and
/// takes a [`MemberMaker`]).
#[macro_export]
macro_rules! for_each_membership_scenario {
    ($m:ident) => {
        $m!(two_members_through_a_bootstrap);
        $m!(third_member_learnt_from_the_response);
        $m!(stopped_member_declared_dead_then_resurrected);
        $m!(member_of_another_org_without_external_endpoint_not_disclosed);
        $m!(forged_and_replayed_alive_messages_refused_and_counted);
        $m!(member_past_its_identity_period_learnt_through_the_pull);
    };
}

/// Makes the node specification of member `i` of organization `org` (0 or 1).
pub type MemberMaker = fn(org: usize, i: usize) -> NodeSpec;

/// How a scenario starts a member: its node, the members it bootstraps from (of its own
/// organization), whether it has an external endpoint (its own endpoint) and the
/// membership configuration.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// The node (identity, core configuration). Its application subscribes to nothing:
    /// the layer's own subscription takes membership messages.
    pub node: NodeSpec,
    /// Nodes to bootstrap from.
    pub bootstrap: Vec<NodeId>,
    /// Whether the member publishes its endpoint as external endpoint (visible to other
    /// organizations).
    pub external: bool,
    /// The membership configuration, from Fabric's defaults for the member's endpoint.
    pub configure: fn(DiscoveryConfig) -> DiscoveryConfig,
}

impl MemberSpec {
    /// A member with an external endpoint, no bootstrap and [`member_config`].
    pub fn new(node: NodeSpec) -> Self {
        MemberSpec {
            node,
            bootstrap: Vec::new(),
            external: true,
            configure: member_config,
        }
    }

    /// Bootstraps from `peers`.
    pub fn bootstrap(mut self, peers: impl IntoIterator<Item = NodeId>) -> Self {
        self.bootstrap = peers.into_iter().collect();
        self
    }

    /// No external endpoint: invisible outside its organization.
    pub fn internal_only(mut self) -> Self {
        self.external = false;
        self
    }

    /// The configuration this spec gives a member at `endpoint` (the harness adds the
    /// bootstrap endpoints and the seed).
    pub fn discovery_config(&self, endpoint: &str) -> DiscoveryConfig {
        let mut c = DiscoveryConfig::new(endpoint);
        if self.external {
            c = c.with_external_endpoint(endpoint);
        }
        (self.configure)(c)
    }
}

/// Fabric's membership defaults with the periods shortened five-fold (heartbeat 1 s,
/// expiry 5 s, reconnect 5 s, sync and identity pull 1 s, bootstrap resend 1 s, pull waits
/// 200 / 300 / 400 ms), so scenarios waiting for an expiry stay quick on a real network too.
pub fn member_config(c: DiscoveryConfig) -> DiscoveryConfig {
    let mut c = c.with_alive_interval(Duration::from_secs(1));
    c.pull_interval = Duration::from_secs(1);
    c.ack_wait = Duration::from_secs(1);
    c.publish_cert_period = Duration::from_secs(2);
    c.certstore.digest_wait = Duration::from_millis(200);
    c.certstore.request_wait = Duration::from_millis(300);
    c.certstore.response_wait = Duration::from_millis(400);
    c
}

/// Member `i` of organization `org` with the test HMAC provider: identity = endpoint,
/// organization `Org1` or `Org2`.
pub fn hmac_member(org: usize, _i: usize) -> NodeSpec {
    let name = if org == 0 { "Org1" } else { "Org2" };
    node()
        .subscribe_all(false)
        .security(move |ep, g| Box::new(OrgSecurity::new(name, ep, g)))
}

/// The PKI-IDs of node `n`'s alive view.
pub fn alive_view<H: Harness>(h: &H, n: NodeId) -> BTreeSet<PkiId> {
    h.members(n).into_iter().map(|m| m.pki_id).collect()
}

/// Whether node `n` lists `m` (its current PKI-ID) alive.
pub fn lists_alive<H: Harness>(h: &H, n: NodeId, m: NodeId) -> bool {
    let pki = h.peer(m).pki_id;
    h.members(n).iter().any(|x| x.pki_id == pki)
}

/// Whether node `n` lists `m` dead (and not alive).
pub fn lists_dead<H: Harness>(h: &H, n: NodeId, m: NodeId) -> bool {
    let pki = h.peer(m).pki_id;
    h.dead_members(n).iter().any(|x| x.pki_id == pki) && !lists_alive(h, n, m)
}

/// Whether every node of `nodes` lists exactly the others alive: full and correct
/// membership.
pub fn full_membership<H: Harness>(h: &H, nodes: &[NodeId]) -> bool {
    nodes.iter().all(|&a| {
        let want: BTreeSet<PkiId> = nodes
            .iter()
            .filter(|&&b| b != a)
            .map(|&b| h.peer(b).pki_id)
            .collect();
        alive_view(h, a) == want
    })
}

/// What node `n` knows of node `m`, alive or dead.
pub fn info_of<H: Harness>(h: &H, n: NodeId, m: NodeId) -> Option<MemberInfo> {
    let pki = h.peer(m).pki_id;
    h.members(n)
        .into_iter()
        .chain(h.dead_members(n))
        .find(|x| x.pki_id == pki)
}

const JOIN: Duration = Duration::from_secs(30);

macro_rules! needs_membership {
    ($h:expr) => {
        if !$h.supports_membership() {
            return Ok(Pass::Skipped("membership"));
        }
    };
}

/// Two members find each other through a bootstrap peer, with the endpoints each
/// announced.
pub fn two_members_through_a_bootstrap<H: Harness>(h: &mut H, mk: MemberMaker) -> Outcome {
    needs_membership!(h);
    let a = h.add_member(MemberSpec::new(mk(0, 0)))?;
    let b = h.add_member(MemberSpec::new(mk(0, 1)).bootstrap([a]))?;
    wait(h, JOIN, "a and b list each other alive", |h| {
        full_membership(h, &[a, b])
    })?;
    let a_pki = h.peer(a).pki_id;
    ensure!(
        h.member_events(b).iter().any(
            |e| matches!(e, DiscoveryEvent::BootstrapJoined { pki_id, .. } if *pki_id == a_pki)
        ),
        "b never reported joining through a: {:?}",
        h.member_events(b)
    );
    let seen = info_of(h, b, a).ok_or("b has no record of a")?;
    let ep = h.peer(a).endpoint;
    ensure!(
        seen.endpoint == ep && seen.internal_endpoint == ep,
        "b sees a at {seen:?}, not {ep}"
    );
    PASS
}

/// A third member bootstrapping from the first learns the second from the first's
/// membership response (and the second learns it).
pub fn third_member_learnt_from_the_response<H: Harness>(h: &mut H, mk: MemberMaker) -> Outcome {
    needs_membership!(h);
    let a = h.add_member(MemberSpec::new(mk(0, 0)))?;
    let b = h.add_member(MemberSpec::new(mk(0, 1)).bootstrap([a]))?;
    wait(h, JOIN, "a and b joined", |h| full_membership(h, &[a, b]))?;
    let c = h.add_member(MemberSpec::new(mk(0, 2)).bootstrap([a]))?;
    wait(h, JOIN, "all three list each other", |h| {
        full_membership(h, &[a, b, c])
    })?;
    let stats = h.member_stats(c).ok_or("no stats for c")?;
    ensure!(
        stats.responses_received > 0,
        "c learnt without a membership response: {stats:?}"
    );
    PASS
}

/// Starts three members of one organization, the second and third bootstrapping from the
/// first, and waits until all three list each other: the opening of the scenarios that
/// then stop, forge or replay one of them. Also returns the members' discovery settings,
/// whose timers bound how long what follows may take.
fn three_joined_through_the_first<H: Harness>(
    h: &mut H,
    mk: MemberMaker,
) -> Result<(DiscoveryConfig, [NodeId; 3]), String> {
    let spec = MemberSpec::new(mk(0, 0));
    let cfg = spec.discovery_config("x:1");
    let a = h.add_member(spec)?;
    let b = h.add_member(MemberSpec::new(mk(0, 1)).bootstrap([a]))?;
    let c = h.add_member(MemberSpec::new(mk(0, 2)).bootstrap([a]))?;
    wait(h, JOIN, "all three joined", |h| {
        full_membership(h, &[a, b, c])
    })?;
    Ok((cfg, [a, b, c]))
}

/// A stopped member is declared dead by the others within the expiration time (plus one
/// expiry check and one heartbeat period), never kept alive; restarted (a new process, a
/// new incarnation) it is resurrected everywhere.
pub fn stopped_member_declared_dead_then_resurrected<H: Harness>(
    h: &mut H,
    mk: MemberMaker,
) -> Outcome {
    needs_membership!(h);
    let (cfg, [a, b, c]) = three_joined_through_the_first(h, mk)?;
    let old_inc = info_of(h, a, c).map(|m| m.timestamp.inc);
    let stopped = h.elapsed();
    h.stop_node(c);
    let bound = cfg.alive_expiration + cfg.expiration_check_interval() + cfg.alive_interval;
    wait(h, bound * 2, "a and b list c dead", |h| {
        lists_dead(h, a, c) && lists_dead(h, b, c)
    })?;
    let took = h.elapsed() - stopped;
    ensure!(
        took <= bound + Duration::from_secs(1),
        "c declared dead {took:?} after its stop (bound {bound:?})"
    );
    for n in [a, b] {
        let c_pki = h.peer(c).pki_id;
        let reason = h.member_events(n).iter().rev().find_map(|e| match e {
            DiscoveryEvent::MemberDead { member, reason } if member.pki_id == c_pki => {
                Some(*reason)
            }
            _ => None,
        });
        match reason {
            // Declared by expiry: only after the expiration time since its last alive.
            Some(DeadReason::Expired) => ensure!(
                took + cfg.alive_interval >= cfg.alive_expiration,
                "n{n} expired c only {took:?} after its stop"
            ),
            Some(DeadReason::PresumedDead) => {}
            // a and b knew c alive: a dead list never kills a known member.
            Some(DeadReason::Reported) => {
                return Err(format!("n{n} took c's death from a membership response"));
            }
            None => return Err(format!("n{n} lists c dead without a MemberDead event")),
            Some(other) => return Err(format!("n{n} declared c dead for {other:?}")),
        }
    }
    h.restart_node(c, false)?;
    wait(h, JOIN, "c resurrected at a and b", |h| {
        full_membership(h, &[a, b, c])
    })?;
    let new_inc = info_of(h, a, c).map(|m| m.timestamp.inc);
    ensure!(
        new_inc > old_inc,
        "c came back with incarnation {new_inc:?}, not newer than {old_inc:?}"
    );
    let c_pki = h.peer(c).pki_id;
    ensure!(
        h.member_events(a).iter().any(|e| matches!(
            e,
            DiscoveryEvent::MemberAlive { member, resurrected: true } if member.pki_id == c_pki
        )),
        "a never reported c resurrected"
    );
    PASS
}

/// Org1: n0 (external endpoint), n1 (none, bootstraps from n0). Org2: n2 (external,
/// joins Org1 through n0 as anchor), n3 (none, bootstraps from n2). Org2 never learns n1,
/// Org1 never learns n3, and no internal endpoint crosses organizations.
pub fn member_of_another_org_without_external_endpoint_not_disclosed<H: Harness>(
    h: &mut H,
    mk: MemberMaker,
) -> Outcome {
    needs_membership!(h);
    let n0 = h.add_member(MemberSpec::new(mk(0, 0)))?;
    let n1 = h.add_member(MemberSpec::new(mk(0, 1)).internal_only().bootstrap([n0]))?;
    let n2 = h.add_member(MemberSpec::new(mk(1, 0)))?;
    let n3 = h.add_member(MemberSpec::new(mk(1, 1)).internal_only().bootstrap([n2]))?;
    h.connect_anchor(n2, n0)?;
    let views = |h: &H| {
        lists_alive(h, n0, n1)
            && lists_alive(h, n0, n2)
            && lists_alive(h, n2, n0)
            && lists_alive(h, n2, n3)
            && lists_alive(h, n1, n0)
            && lists_alive(h, n3, n2)
    };
    wait(h, JOIN, "each sees what it may", views)?;
    // Let several heartbeats and syncs pass: nothing more may leak.
    let _ = h.run_until(Duration::from_secs(10), &mut |_| false);
    ensure!(views(h), "a member dropped out of a view");
    for (n, hidden) in [(n2, n1), (n3, n1), (n0, n3), (n1, n3), (n1, n2), (n3, n0)] {
        ensure!(
            info_of(h, n, hidden).is_none(),
            "n{n} knows n{hidden}, which it must never learn: {:?}",
            info_of(h, n, hidden)
        );
    }
    let n0_at_n2 = info_of(h, n2, n0).ok_or("n2 does not know n0")?;
    ensure!(
        n0_at_n2.internal_endpoint.is_empty(),
        "n0's internal endpoint crossed to Org2: {n0_at_n2:?}"
    );
    let n1_at_n0 = info_of(h, n0, n1).ok_or("n0 does not know n1")?;
    ensure!(
        n1_at_n0.internal_endpoint == h.peer(n1).endpoint,
        "n0 should see n1's internal endpoint: {n1_at_n0:?}"
    );
    PASS
}

/// A forged alive message (a's, with its sequence number raised and the signature kept) is
/// refused and counted under bad signature; a's last alive message replayed by another
/// member every second after a stopped, for longer than the expiry bound, neither keeps a
/// alive nor counts as new.
pub fn forged_and_replayed_alive_messages_refused_and_counted<H: Harness>(
    h: &mut H,
    mk: MemberMaker,
) -> Outcome {
    needs_membership!(h);
    let (cfg, [a, b, c]) = three_joined_through_the_first(h, mk)?;
    let a_pki = h.peer(a).pki_id;
    let to_b = [h.peer(b)];

    // Forged: a's envelope with a higher sequence number, a's signature kept.
    let env = h
        .member_envelope(b, &a_pki)
        .ok_or("b keeps no envelope of a")?;
    let mut msg = GossipMessage::decode(env.payload.as_ref()).map_err(|e| e.to_string())?;
    let Some(gossip_message::Content::AliveMsg(alive)) = msg.content.as_mut() else {
        return Err("a's envelope is not an alive message".into());
    };
    let ts = alive.timestamp.as_mut().ok_or("no timestamp")?;
    ts.seq_num += 1_000_000;
    let forged_seq = ts.seq_num;
    let forged = Envelope {
        payload: msg.encode_to_vec().into(),
        ..env.clone()
    };
    let before = h.member_stats(b).ok_or("no stats")?;
    h.send(c, &signed(&forged)?, &to_b)
        .map_err(|e| e.to_string())?;
    wait(h, Duration::from_secs(5), "b refuses the forgery", |h| {
        h.member_stats(b)
            .is_some_and(|s| s.alive_bad_signature > before.alive_bad_signature)
    })?;
    let after = h.member_stats(b).ok_or("no stats")?;
    ensure!(
        after.alive_bad_signature == before.alive_bad_signature + 1,
        "one forgery, {} refusals",
        after.alive_bad_signature - before.alive_bad_signature
    );
    let seen = info_of(h, b, a).ok_or("b forgot a")?;
    ensure!(
        seen.timestamp.seq < forged_seq,
        "b took the forged sequence number"
    );

    // Replayed: a stops; c replays a's last alive to b every second.
    let last = h
        .member_envelope(b, &a_pki)
        .ok_or("b keeps no envelope of a")?;
    let replay = signed(&last)?;
    let ignored = |h: &H| {
        h.member_stats(b)
            .map_or(0, |s| s.alive_duplicate + s.alive_stale)
    };
    let ignored_before = ignored(h);
    h.stop_node(a);
    let stopped = h.elapsed();
    let bound = cfg.alive_expiration + cfg.expiration_check_interval() + cfg.alive_interval;
    let mut replays = 0u64;
    while h.elapsed() - stopped < bound {
        h.send(c, &replay, &to_b).map_err(|e| e.to_string())?;
        replays += 1;
        let _ = h.run_until(Duration::from_secs(1), &mut |_| false);
    }
    ensure!(
        lists_dead(h, b, a),
        "{replays} replays over {bound:?} kept a alive at b"
    );
    let ignored = ignored(h) - ignored_before;
    ensure!(
        ignored >= replays,
        "{replays} replays, only {ignored} counted as duplicate or stale"
    );
    PASS
}

fn signed(env: &Envelope) -> Result<SignedMessage, String> {
    SignedMessage::from_envelope_bytes(env.encode_to_vec().into()).map_err(|e| e.to_string())
}
