//! The identity pull (certstore) on a small cluster: a member whose identity period ended
//! before a newcomer joined is learnt by the newcomer only through the pull, and the
//! messages exchanged are Fabric's (snapshot; and checked against Fabric's own message
//! vectors). HMAC identities of one organization and the virtual clock make every byte
//! deterministic.

use crate::common;

use common::{Cluster, dcfg};
use core::time::Duration;
use fabric_gossip_core::testing::ep;
use fabric_gossip_core::{Instant, Security, TestOnlyHmacSecurity};
use fabric_gossip_discovery::DiscoveryConfig;

const T0: Instant = Instant::from_unix_secs(1_700_000_000);

fn org1(i: usize) -> Box<dyn Security> {
    let mut s = TestOnlyHmacSecurity::new(ep(i));
    for j in 0..3 {
        s = s.with_organization(ep(j), "Org1");
    }
    Box::new(s)
}

/// Fabric's defaults, but no identity in alive messages at all (the period over).
fn cfg(i: usize, pull: bool) -> DiscoveryConfig {
    let mut c = dcfg(i);
    c.publish_cert_period = Duration::ZERO;
    c.certstore.enabled = pull;
    if i > 0 {
        c = c.with_bootstrap([ep(i - 1)]);
    }
    c
}

/// n0 and n1 run for 12 s; then n2 joins through n1. Returns the cluster and the time n2
/// joined.
fn late_joiner(pull: bool) -> (Cluster, Instant) {
    let mut c = Cluster::with_security(T0, 3, org1, |i| cfg(i, pull));
    c.crash(2);
    c.run_for(Duration::from_secs(12));
    assert!(c.sees_alive(1, 0) && c.sees_alive(0, 1), "n0 and n1 joined");
    let joined = c.now();
    c.restart(2, org1(2), cfg(2, pull));
    (c, joined)
}

#[test]
fn a_member_past_its_identity_period_is_learnt_through_the_pull() {
    let (mut c, joined) = late_joiner(true);
    let took = c
        .run_until(Duration::from_secs(20), |c| {
            c.sees_alive(2, 0) && c.sees_alive(0, 2)
        })
        .expect("n2 and n0 learn each other");
    let s = c.layer(2).stats().clone();
    assert!(
        s.alive_unknown_identity > 0,
        "n0's alive messages reached n2 before its identity: {s:?}"
    );
    assert!(s.certstore.identities_learned >= 1, "{:?}", s.certstore);
    // The first pull starts one pull interval after the join.
    assert!(took >= c.layer(2).config().pull_interval, "{took:?}");
    let mut lines: Vec<String> = c
        .trace
        .iter()
        .filter(|(t, l)| {
            *t >= joined
                && (l.starts_with("n2 <-") || l.contains("<- n2"))
                && !l.contains("alive_msg")
                && !l.contains("mem_re")
        })
        .map(|(t, l)| format!("+{:.3}s {l}", (*t - joined).as_secs_f64()))
        .collect();
    lines.extend(c.events[2].iter().map(|(t, e)| {
        format!(
            "+{:.3}s n2 {}",
            (*t - joined).as_secs_f64(),
            c.describe_event(e)
        )
    }));
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn without_the_pull_the_newcomer_never_learns_that_member() {
    let (mut c, _) = late_joiner(false);
    c.run_for(Duration::from_secs(30));
    assert!(c.sees_alive(2, 1), "n2 joined through n1");
    assert!(!c.sees_alive(2, 0), "n0 was learnt without its identity");
    assert!(c.layer(2).stats().alive_unknown_identity > 0);
    assert_eq!(c.layer(2).stats().certstore, Default::default());
}

#[test]
fn every_node_serves_the_identities_it_pulled() {
    let (mut c, _) = late_joiner(true);
    c.run_for(Duration::from_secs(20));
    for i in 0..3 {
        assert_eq!(c.layer(i).pulled_identities(), 3, "node {i}");
    }
}

/// A record of Fabric's own gossip message vectors (built by Fabric v2.4.9's code, signed
/// with its test HMAC key), shared with the proto crate's vector tests.
fn fabric_vector(name: &str, field: &str) -> Vec<u8> {
    common::vector_hex(
        include_str!("../../proto/tests/fixtures/gossip_messages.json"),
        name,
        field,
    )
}

#[test]
fn a_peer_identity_signed_by_fabric_validates_and_a_tampered_one_does_not() {
    use fabric_gossip_core::proto::gossip::Envelope;
    use fabric_gossip_discovery::certstore::wire::{IdentityMsgError, validate_identity_msg};
    use prost::Message;
    let env = Envelope::decode(&fabric_vector("peer_identity", "signed_envelope_hex")[..]).unwrap();
    let verifier = TestOnlyHmacSecurity::new("verifier");
    let v = validate_identity_msg(&verifier, &env, T0).unwrap();
    assert_eq!(&v.pki_id.0[..], b"127.0.0.1:7051");
    assert_eq!(&v.cert[..], b"127.0.0.1:7051");
    let mut tampered = env.clone();
    let mut payload = tampered.payload.to_vec();
    *payload.last_mut().unwrap() ^= 1;
    tampered.payload = payload.into();
    assert!(matches!(
        validate_identity_msg(&verifier, &tampered, T0),
        Err(IdentityMsgError::BadSignature(_))
    ));
}

#[test]
fn our_data_request_is_fabrics() {
    use fabric_gossip_core::PkiId;
    use fabric_gossip_core::proto::gossip::GossipMessage;
    use fabric_gossip_discovery::certstore::wire;
    use prost::Message;
    let fabric = GossipMessage::decode(&fabric_vector("data_req", "bytes_hex")[..]).unwrap();
    let ours = wire::request(
        557,
        &[
            PkiId::new(&b"127.0.0.1:7051"[..]),
            PkiId::new(&b"127.0.0.1:7052"[..]),
        ],
    );
    assert_eq!(ours.content, fabric.content);
    assert_eq!(ours.tag, fabric.tag, "EMPTY, as Fabric tags identity pulls");
}

/// A member of a four-node organization.
fn org1_of_four(i: usize) -> Box<dyn Security> {
    let mut s = TestOnlyHmacSecurity::new(ep(i));
    for j in 0..4 {
        s = s.with_organization(ep(j), "Org1");
    }
    Box::new(s)
}

/// Identities unused for a minute are purged (Fabric: an hour), every 6 s.
const USAGE: Duration = Duration::from_secs(60);

fn cfg_usage(i: usize) -> DiscoveryConfig {
    let mut c = cfg(i, true);
    c.certstore.identity_usage_threshold = USAGE;
    c
}

/// Four nodes started 1.5 s apart (so that their sweeps, and so their purges, fall at
/// different times), run until each holds every identity.
fn four_holding_every_identity() -> Cluster {
    let mut c = Cluster::with_security(T0, 4, org1_of_four, cfg_usage);
    for i in 1..4 {
        c.crash(i);
    }
    for i in 1..4 {
        c.run_for(Duration::from_millis(1500));
        c.restart(i, org1_of_four(i), cfg_usage(i));
    }
    c.run_until(Duration::from_secs(60), |c| {
        (0..4).all(|i| c.layer(i).pulled_identities() == 4)
    })
    .expect("every node pulls every identity");
    c
}

/// Finding F3: once its owner has gone, an identity leaves the network. Each node purges it
/// after the usage threshold, at its own time, and does not pull it back from a node that
/// has not purged it yet (which used to give it a fresh hour of disuse, so that it went
/// round for ever).
#[test]
fn the_identity_of_a_member_that_left_is_purged_everywhere_and_stays_purged() {
    let mut c = four_holding_every_identity();
    c.crash(3);
    c.run_for(10 * USAGE);
    for i in 0..3 {
        let s = c.layer(i).stats().certstore.clone();
        assert_eq!(c.layer(i).pulled_identities(), 3, "node {i}: {s:?}");
        assert_eq!(s.identities_unused, 1, "node {i} purged it once: {s:?}");
    }
    let skipped: u64 = (0..3)
        .map(|i| c.layer(i).stats().certstore.identities_skipped_forgotten)
        .sum();
    assert!(skipped > 0, "some node was offered it back");
}

/// A member that comes back while the others still remember its identity as purged is
/// learnt again: its verified alive messages (its identity from a handshake) end the
/// period, and the pull brings its identity again.
#[test]
fn a_member_back_before_the_others_stop_remembering_its_purge_is_learnt_again() {
    let mut c = four_holding_every_identity();
    c.crash(3);
    c.run_until(USAGE * 2, |c| {
        (0..3).all(|i| c.layer(i).stats().certstore.identities_unused == 1)
    })
    .expect("every node purges it");
    c.restart(3, org1_of_four(3), cfg_usage(3));
    c.run_until(Duration::from_secs(40), |c| {
        (0..4).all(|i| (0..4).all(|j| i == j || c.sees_alive(i, j)))
            && (0..4).all(|i| c.layer(i).pulled_identities() == 4)
    })
    .expect("n3 is seen alive and its identity pulled again everywhere");
}
