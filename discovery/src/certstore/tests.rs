//! The certstore's rules on one node, with hand-made inputs (no network): the node's comm
//! has no real connections, so what it sends is seen through the counters (an answer on a
//! made-up connection is attempted and counted as a comm error).

use super::wire::{self, IdentityMsgError, validate_identity_msg};
use crate::tests::{
    SEC, T0, TestProvider, alive, alive_with, direct, me, me_with, node, pki, received, security,
};
use crate::{Discovery, DiscoveryConfig};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, PeerIdentity, gossip_message};
use fabric_gossip_core::{
    Comm, Instant, Layer, Security, SignedMessage, TestOnlyHmacSecurity, proto::gossip::PullMsgType,
};
use prost::Message;

type Node = (Comm<TestOnlyHmacSecurity>, crate::Discovery);

/// Room for ten identities, of any size.
const TEN: super::identities::Bounds = super::identities::Bounds {
    count: 10,
    bytes: usize::MAX,
};

/// `who`'s own signed identity message.
fn identity_of(who: &str) -> Envelope {
    wire::own_identity_message(&security(who)).unwrap()
}

/// A pull message from `from`, as comm would deliver it.
fn pull_from(from: &str, msg: GossipMessage) -> fabric_gossip_core::ReceivedMessage {
    let env = crate::alive::envelope_of(&SignedMessage::noop(msg.clone()));
    received(from, msg, env)
}

/// A node that knows `a1` alive (identity embedded) and has started a pull round with it:
/// returns the round's nonce for `a1` and the time.
fn in_a_round() -> (Node, u64, Instant) {
    in_a_round_with(security("me"))
}

/// [`in_a_round`] on a node whose provider is `sec`.
fn in_a_round_with(sec: TestOnlyHmacSecurity) -> (Node, u64, Instant) {
    let (mut comm, mut d) = me_with(sec);
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    let t = T0 + d.config().pull_interval;
    d.handle_timeout(t, &mut comm);
    assert_eq!(
        d.stats().certstore.hellos_sent,
        1,
        "one alive member, one hello"
    );
    let nonces = d.certstore.engine.round_nonces();
    assert_eq!(nonces.len(), 1);
    assert_eq!(nonces[0].0, pki("a1"));
    let nonce = nonces[0].1;
    ((comm, d), nonce, t)
}

/// Runs the node a minute at a time from `T0` until a fifth of the identity usage
/// threshold past it, `keep_alive(seq)` delivered each minute (seq 1, 2, ...): the time
/// and the last seq.
fn past_the_usage_threshold(
    comm: &mut Comm<TestOnlyHmacSecurity>,
    d: &mut crate::Discovery,
    keep_alive: impl Fn(u64) -> fabric_gossip_core::ReceivedMessage,
) -> (Instant, u64) {
    let threshold = d.config().certstore.identity_usage_threshold;
    let mut t = T0;
    let mut seq = 0;
    while t < T0 + threshold + threshold / 5 {
        t = t + Duration::from_secs(60);
        seq += 1;
        d.handle_message(t, comm, keep_alive(seq));
        d.handle_timeout(t, comm);
    }
    (t, seq)
}

/// A node whose provider says b2's identity expired just after `T0`, in its request
/// phase after `a1` advertised b1 and b2: the node, the round's nonce and the time.
fn b1_and_expired_b2_asked_of_a1() -> (Node, u64, Instant) {
    let sec = security("me").expiring(&b"b2"[..], T0 + SEC);
    let (mut node, nonce, t) = in_a_round_with(sec);
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    (node, nonce, t)
}

/// Runs the round on to its request phase after `a1` advertised `items`.
fn to_request_phase(node: &mut Node, nonce: u64, t: Instant, items: &[&str]) -> Instant {
    let (comm, d) = node;
    let ids: Vec<_> = items.iter().map(|i| pki(i)).collect();
    d.handle_message(t, comm, pull_from("a1", wire::digest(nonce, &ids)));
    let t = t + d.config().certstore.digest_wait;
    d.handle_timeout(t, comm);
    t
}

#[test]
fn own_identity_message_is_fabrics_and_valid() {
    let env = identity_of("me");
    let msg = GossipMessage::decode(env.payload.clone()).unwrap();
    assert_eq!(msg.tag, gossip_message::Tag::Empty as i32);
    assert_eq!((msg.nonce, msg.channel.len()), (0, 0));
    let Some(gossip_message::Content::PeerIdentity(p)) = msg.content else {
        panic!("not a PeerIdentity: {msg:?}");
    };
    assert_eq!(
        (&p.pki_id[..], &p.cert[..], p.metadata.len()),
        (&b"me"[..], &b"me"[..], 0)
    );
    let v = validate_identity_msg(&security("x"), &env, T0).unwrap();
    assert_eq!(v.pki_id, pki("me"));
}

#[test]
fn pull_messages_are_identity_typed_and_recognised() {
    for m in [
        wire::hello(1),
        wire::digest(1, &[pki("a")]),
        wire::request(1, &[pki("a")]),
        wire::update(1, vec![]),
    ] {
        assert!(wire::is_identity_pull(&m), "{m:?}");
        assert_eq!((m.nonce, m.tag), (0, gossip_message::Tag::Empty as i32));
    }
    let mut block_pull = wire::hello(1);
    if let Some(gossip_message::Content::Hello(h)) = &mut block_pull.content {
        h.msg_type = PullMsgType::BlockMsg as i32;
    }
    assert!(!wire::is_identity_pull(&block_pull));
    // What the layer takes for itself (and an application inbox may leave out): the identity
    // pull only while it runs, never a block pull.
    assert!(crate::takes(&wire::hello(1), true));
    assert!(!crate::takes(&wire::hello(1), false));
    assert!(!crate::takes(&block_pull, true));
}

/// A `PeerIdentity` claiming `pki_id` with `cert`, signed by `signer`.
fn identity_msg(pki_id: &str, cert: &str, signer: TestOnlyHmacSecurity) -> Envelope {
    let msg = GossipMessage {
        content: Some(gossip_message::Content::PeerIdentity(PeerIdentity {
            pki_id: Bytes::copy_from_slice(pki_id.as_bytes()),
            cert: Bytes::copy_from_slice(cert.as_bytes()),
            metadata: Bytes::new(),
        })),
        ..Default::default()
    };
    crate::alive::envelope_of(&SignedMessage::sign(msg, &signer).unwrap())
}

#[test]
fn every_identity_check_refuses_with_its_own_reason() {
    let v = security("v");
    let check = |env: &Envelope, sec: &TestOnlyHmacSecurity| validate_identity_msg(sec, env, T0);
    assert!(check(&identity_msg("a1", "a1", security("a1")), &v).is_ok());
    assert_eq!(
        check(&identity_msg("a1", "a2", security("a2")), &v),
        Err(IdentityMsgError::IdentityMismatch),
        "PKI-ID must be the certificate's"
    );
    assert!(matches!(
        check(
            &identity_msg("a1", "a1", security("a1").with_corrupt_signatures()),
            &v
        ),
        Err(IdentityMsgError::BadSignature(_))
    ));
    assert!(matches!(
        check(
            &identity_msg("a1", "a1", security("a1")),
            &v.clone().rejecting(&b"a1"[..])
        ),
        Err(IdentityMsgError::BadIdentity(_))
    ));
    assert_eq!(
        check(
            &identity_msg("a1", "a1", security("a1")),
            &v.clone().expiring(&b"a1"[..], T0)
        ),
        Err(IdentityMsgError::IdentityExpired)
    );
    assert!(
        matches!(
            check(
                &identity_msg("a1", "a1", security("a1").with_corrupt_signatures()),
                &v.clone().expiring(&b"a1"[..], T0)
            ),
            Err(IdentityMsgError::BadSignature(_))
        ),
        "expired and forged: the forgery is what counts, as in Fabric's order"
    );
    assert_eq!(
        check(&identity_msg("", "a1", security("a1")), &v),
        Err(IdentityMsgError::MissingField("pki_id"))
    );
    assert_eq!(
        check(&identity_msg("a1", "", security("a1")), &v),
        Err(IdentityMsgError::MissingField("cert"))
    );
    assert_eq!(
        check(&alive("a1", 1, 1, ""), &v),
        Err(IdentityMsgError::NotIdentity)
    );
    let mut unsigned = identity_of("a1");
    unsigned.signature = Bytes::new();
    assert_eq!(check(&unsigned, &v), Err(IdentityMsgError::Unsigned));
    let junk = Envelope {
        payload: Bytes::from_static(&[0xff; 3]),
        signature: Bytes::from_static(b"s"),
        secret_envelope: None,
    };
    assert!(matches!(
        check(&junk, &v),
        Err(IdentityMsgError::Undecodable(_))
    ));
}

#[test]
fn a_pulled_identity_lets_a_later_alive_without_identity_validate() {
    let (mut node, nonce, t) = in_a_round();
    // Before: b1's alive message, past its publish period, cannot be checked.
    let bare = alive_with("b1", 1, 1, "b1:1", false);
    node.1
        .handle_message(t, &mut node.0, direct("a1", bare.clone()));
    assert_eq!(node.1.stats().alive_unknown_identity, 1);
    assert!(node.1.member(&pki("b1")).is_none());

    let t = to_request_phase(&mut node, nonce, t, &["b1", "me"]);
    let (comm, d) = &mut node;
    assert_eq!(
        d.stats().certstore.requests_sent,
        1,
        "b1 asked of a1; our own not"
    );
    let upd = wire::update(nonce, vec![identity_of("b1")]);
    assert!(comm.identity_of(&pki("b1")).is_none());
    let shared = comm.stats().identities_shared;
    d.handle_message(t, comm, pull_from("a1", upd));
    assert_eq!(d.stats().certstore.identities_learned, 1);
    // Shared with comm, as Fabric's certstore fills the mapper comm reads: b1 coming back
    // with a renewed certificate is then an identity switch, not an impostor.
    assert_eq!(
        comm.identity_of(&pki("b1")).map(|b| &b[..]),
        Some(&b"b1"[..])
    );
    assert_eq!(comm.stats().identities_shared, shared + 1);
    let bare = alive_with("b1", 1, 2, "b1:1", false);
    d.handle_message(t, comm, direct("a1", bare));
    assert!(d.member(&pki("b1")).is_some_and(|m| m.alive));
    assert_eq!(d.stats().alive_unknown_identity, 1);
}

#[test]
fn one_forged_item_refuses_the_whole_update() {
    let (mut node, nonce, t) = in_a_round();
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    let (comm, d) = &mut node;
    let forged = identity_msg("b2", "b2", security("b2").with_corrupt_signatures());
    d.handle_message(
        t,
        comm,
        pull_from("a1", wire::update(nonce, vec![identity_of("b1"), forged])),
    );
    let s = &d.stats().certstore;
    assert_eq!((s.updates_refused, s.identity_bad_signature), (1, 1));
    assert_eq!(s.identities_learned, 0);
    assert!(d.pulled_identity(&pki("b1"), t).is_none());
    assert!(
        comm.identity_of(&pki("b1")).is_none(),
        "nothing of it shared"
    );
}

/// Fabric checks an update's items without their expiry and leaves that to its identity
/// mapper, item by item: an expired item is not stored, the others are, and the expired
/// one stays in the pull's state, never asked for again. We refused the whole update, and
/// asked for the expired item (which a peer whose clock runs behind still serves) every
/// round, losing the others each time.
#[test]
fn an_expired_item_is_left_out_the_rest_kept_and_not_asked_for_again() {
    let (mut node, nonce, t) = b1_and_expired_b2_asked_of_a1();
    let (comm, d) = &mut node;
    assert_eq!(d.stats().certstore.requests_sent, 1);
    let upd = wire::update(nonce, vec![identity_of("b2"), identity_of("b1")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!(
        (s.updates_refused, s.identity_expired, s.identities_learned),
        (0, 1, 1),
        "{s:?}"
    );
    assert!(d.pulled_identity(&pki("b1"), t).is_some());
    assert!(d.pulled_identity(&pki("b2"), t).is_none());

    // The next round: a1 still lists b2, and it is not asked for again.
    let t = T0 + d.config().pull_interval * 2;
    d.handle_message(t, comm, direct("a1", alive("a1", 1, 2, "")));
    d.handle_timeout(t, comm);
    let nonce = d.certstore.engine.round_nonces()[0].1;
    // b2's owner still gossips; its alive messages, unverifiable here, do not end the skip
    // (they would every 5 s, and it would be asked for again every round).
    let (comm, d) = &mut node;
    d.handle_message(t, comm, direct("a1", alive_with("b2", 1, 5, "b2:1", false)));
    assert_eq!(d.stats().certstore.identities_remembered_again, 0);
    to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    let s = &node.1.stats().certstore;
    assert_eq!(s.requests_sent, 1, "neither b1 (held) nor b2 asked for");
    assert_eq!(s.identities_skipped_forgotten, 1);
}

/// An expired certificate stands only for its own PKI-ID. The MSP refuses an expired
/// identity in its validation, before the PKI-ID is compared; an item claiming another
/// member's PKI-ID with an expired certificate was taken as "expired" and that member left
/// unasked for an hour, where Fabric (PKI-ID first) refuses the update.
#[test]
fn an_expired_certificate_claiming_another_pki_id_is_a_mismatch() {
    let sec = TestProvider {
        expired: vec![Bytes::from_static(b"a1")],
        ..TestProvider::new("v")
    };
    assert_eq!(
        validate_identity_msg(&sec, &identity_msg("a2", "a1", security("a1")), T0),
        Err(IdentityMsgError::IdentityMismatch)
    );
    assert_eq!(
        validate_identity_msg(&sec, &identity_msg("a1", "a1", security("a1")), T0),
        Err(IdentityMsgError::IdentityExpired)
    );
}

/// An update refused for a forged item remembers nothing of the expired item it held: the
/// next round asks for it again, as for everything a refused update held.
#[test]
fn a_refused_update_leaves_its_expired_item_to_be_asked_again() {
    let (mut node, nonce, t) = b1_and_expired_b2_asked_of_a1();
    let (comm, d) = &mut node;
    let forged = identity_msg("b1", "b1", security("b1").with_corrupt_signatures());
    let upd = wire::update(nonce, vec![identity_of("b2"), forged]);
    d.handle_message(t, comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!((s.updates_refused, s.identity_expired), (1, 0), "{s:?}");
    assert!(!d.certstore.identities.is_forgotten(&pki("b2"), t));
}

/// A member whose identity we purged for disuse comes back without restarting (its alive
/// messages carry no identity) and never connects to us: its first new alive message
/// ends the period in which the pull would not bring its identity back, and the next
/// round does. It used to stay unverifiable here for up to an hour.
#[test]
fn a_member_back_after_its_identity_was_purged_is_pulled_again_at_the_next_round() {
    let (mut comm, mut d) = me();
    let v = validate_identity_msg(comm.security(), &identity_of("b1"), T0).unwrap();
    d.certstore.identities.put(v, None, T0, TEN).unwrap();
    let (t, seq) = past_the_usage_threshold(&mut comm, &mut d, |seq| {
        direct("a1", alive("a1", 1, seq, ""))
    });
    assert_eq!(d.stats().certstore.identities_unused, 1);
    assert!(d.certstore.identities.is_forgotten(&pki("b1"), t));

    // b1 is back: its new alive message, relayed by a1, cannot be verified here.
    let back = alive_with("b1", 1, 50, "b1:1", false);
    d.handle_message(t, &mut comm, direct("a1", back));
    assert_eq!(d.stats().alive_unknown_identity, 1);
    assert_eq!(d.stats().certstore.identities_remembered_again, 1);
    assert!(!d.certstore.identities.is_forgotten(&pki("b1"), t));

    // The next round asks a1 for it, and b1's next alive message verifies.
    let t = t + d.config().pull_interval;
    d.handle_message(t, &mut comm, direct("a1", alive("a1", 1, seq + 1, "")));
    d.handle_timeout(t, &mut comm);
    let (_, nonce) = d
        .certstore
        .engine
        .round_nonces()
        .into_iter()
        .find(|(p, _)| *p == pki("a1"))
        .expect("a round with a1");
    let asked = d.stats().certstore.requests_sent;
    let mut node = (comm, d);
    let t = to_request_phase(&mut node, nonce, t, &["b1"]);
    let (comm, d) = &mut node;
    assert_eq!(
        d.stats().certstore.requests_sent,
        asked + 1,
        "b1 asked of a1"
    );
    let upd = wire::update(nonce, vec![identity_of("b1")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    assert!(d.pulled_identity(&pki("b1"), t).is_some());
    d.handle_message(
        t,
        comm,
        direct("a1", alive_with("b1", 1, 51, "b1:1", false)),
    );
    assert!(d.member(&pki("b1")).is_some_and(|m| m.alive));
}

#[test]
fn digests_and_updates_outside_our_round_are_refused_and_counted() {
    let (mut node, nonce, t) = in_a_round();
    let (comm, d) = &mut node;
    // An update before any request, a digest from a member never asked, a wrong nonce.
    d.handle_message(
        t,
        comm,
        pull_from("a1", wire::update(nonce, vec![identity_of("b1")])),
    );
    d.handle_message(t, comm, pull_from("a2", wire::digest(nonce, &[pki("b1")])));
    d.handle_message(
        t,
        comm,
        pull_from("a1", wire::digest(nonce ^ 1, &[pki("b1")])),
    );
    let s = &d.stats().certstore;
    assert_eq!((s.updates_unsolicited, s.digests_unsolicited), (1, 2));
    let t = to_request_phase(&mut node, nonce, t, &["b1"]);
    let (comm, d) = &mut node;
    assert_eq!(d.stats().certstore.requests_sent, 1);
    // Too late: the response phase is over.
    let late = t + d.config().certstore.response_wait;
    d.handle_timeout(late, comm);
    d.handle_message(
        late,
        comm,
        pull_from("a1", wire::update(nonce, vec![identity_of("b1")])),
    );
    assert_eq!(d.stats().certstore.updates_unsolicited, 2);
    assert!(d.pulled_identity(&pki("b1"), late).is_none());
}

#[test]
fn a_request_is_served_only_after_the_senders_own_hello_and_within_request_wait() {
    let (mut comm, mut d) = me();
    d.handle_message(
        T0,
        &mut comm,
        pull_from("a1", wire::request(5, &[pki("me")])),
    );
    assert_eq!(d.stats().certstore.requests_unsolicited, 1);
    d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(5)));
    // The digest (our own identity) is attempted on the made-up connection.
    let s = d.stats().clone();
    assert_eq!(s.certstore.digests_sent + s.comm_errors, 1);
    d.handle_message(
        T0,
        &mut comm,
        pull_from("a2", wire::request(5, &[pki("me")])),
    );
    assert_eq!(
        d.stats().certstore.requests_unsolicited,
        2,
        "another peer's nonce"
    );
    d.handle_message(
        T0,
        &mut comm,
        pull_from("a1", wire::request(5, &[pki("me")])),
    );
    let s = d.stats().clone();
    assert_eq!(s.certstore.updates_sent + s.comm_errors, 2, "served");
    let later = T0 + d.config().certstore.request_wait;
    d.handle_message(
        later,
        &mut comm,
        pull_from("a1", wire::request(5, &[pki("me")])),
    );
    assert_eq!(d.stats().certstore.requests_unsolicited, 3, "nonce expired");
}

#[test]
fn pending_hellos_are_bounded() {
    let mut cfg = DiscoveryConfig::new("me.int:7051");
    cfg.certstore.max_pending_hellos = 2;
    let (mut comm, mut d) = node(cfg);
    for (n, who) in ["a1", "a2", "b1"].into_iter().enumerate() {
        d.handle_message(T0, &mut comm, pull_from(who, wire::hello(n as u64)));
    }
    assert_eq!(d.stats().certstore.hellos_refused_full, 1);
    assert_eq!(d.certstore.engine.pending_hellos(), 2);
}

#[test]
fn identities_held_are_bounded() {
    let mut cfg = DiscoveryConfig::new("me.int:7051");
    cfg.certstore.max_identities = 2;
    let (mut comm, mut d) = node(cfg);
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    let t = T0 + d.config().pull_interval;
    d.handle_timeout(t, &mut comm);
    let nonce = d.certstore.engine.round_nonces()[0].1;
    let mut node = (comm, d);
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    let (comm, d) = &mut node;
    // Only one item fits beside our own identity: one asked for, one dropped.
    assert_eq!(d.stats().certstore.digest_items_dropped, 1);
    // The item dropped was not asked for, so an update may not bring it either.
    let upd = wire::update(nonce, vec![identity_of("b1"), identity_of("b2")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!((s.updates_unrequested, s.identities_learned), (1, 0));
    assert_eq!(d.pulled_identities(), 1);
}

#[test]
fn another_org_sees_only_external_identities_of_its_org_or_ours() {
    // me (A, external), a1 (A, no external endpoint), a2 (A, external),
    // b2 (B, external), c1 (C, external).
    let (mut comm, mut d) = me();
    for (who, ep) in [("a1", ""), ("a2", "a2:1"), ("b2", "b2:1"), ("c1", "c1:1")] {
        d.handle_message(T0, &mut comm, direct(who, alive(who, 1, 1, ep)));
        let v = validate_identity_msg(comm.security(), &identity_of(who), T0).unwrap();
        let org = comm.security().organization_of(&v.cert);
        d.certstore.identities.put(v, org, T0, TEN).unwrap();
    }
    let shown = |d: &crate::Discovery, comm: &Comm<TestOnlyHmacSecurity>, to: &str| {
        let m = pull_from(to, wire::hello(1));
        d.visible(T0, comm, &m, None)
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k.0).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(shown(&d, &comm, "a1"), ["a1", "a2", "b2", "c1", "me"]);
    assert_eq!(shown(&d, &comm, "b1"), ["a2", "b2", "me"]);
    assert!(
        shown(&d, &comm, "stranger").is_empty(),
        "unknown organization"
    );
}

#[test]
fn unused_and_expired_identities_are_purged_used_ones_kept() {
    let (mut comm, mut d) = me();
    for who in ["a1", "a2"] {
        let v = validate_identity_msg(comm.security(), &identity_of(who), T0).unwrap();
        d.certstore.identities.put(v, None, T0, TEN).unwrap();
    }
    // a1 keeps verifying alive messages; a2 falls silent.
    let (t, _) = past_the_usage_threshold(&mut comm, &mut d, |seq| {
        direct("a2", alive_with("a1", 1, seq, "", false))
    });
    assert!(d.member(&pki("a1")).is_some_and(|m| m.alive));
    assert!(d.pulled_identity(&pki("a1"), t).is_some());
    assert!(d.pulled_identity(&pki("a2"), t).is_none());
    assert_eq!(d.stats().certstore.identities_unused, 1);
    assert!(
        d.pulled_identity(&pki("me"), t).is_some(),
        "ours is never purged"
    );
}

#[test]
fn disabled_it_neither_pulls_nor_answers() {
    let mut cfg = DiscoveryConfig::new("me.int:7051");
    cfg.certstore.enabled = false;
    let (mut comm, mut d) = node(cfg);
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    d.handle_timeout(T0 + Duration::from_secs(60), &mut comm);
    d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(1)));
    assert_eq!(d.stats().certstore, Default::default());
    assert_eq!(d.pulled_identities(), 0);
}

/// [`in_a_round`] run on to its request phase after `a1` advertised `items`, with a
/// provider that counts its checks: the node, the round's nonce for `a1`, the time and the
/// count.
fn asked_of_a1(
    items: &[&str],
) -> (
    Comm<TestProvider>,
    crate::Discovery,
    u64,
    Instant,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let sec = TestProvider::new("me");
    let checks = sec.checks.clone();
    let mut comm = Comm::new(fabric_gossip_core::Config::default(), sec, T0).unwrap();
    let mut d = crate::Discovery::new(
        DiscoveryConfig::new("me.int:7051").with_external_endpoint("me.ext:7051"),
    )
    .unwrap();
    d.start(T0, &mut comm);
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    let t = T0 + d.config().pull_interval;
    d.handle_timeout(t, &mut comm);
    let nonce = d.certstore.engine.round_nonces()[0].1;
    let ids: Vec<_> = items.iter().map(|i| pki(i)).collect();
    d.handle_message(t, &mut comm, pull_from("a1", wire::digest(nonce, &ids)));
    let t = t + d.config().certstore.digest_wait;
    d.handle_timeout(t, &mut comm);
    assert_eq!(d.stats().certstore.requests_sent, 1);
    checks.store(0, std::sync::atomic::Ordering::Relaxed);
    (comm, d, nonce, t, checks)
}

/// Finding F1b: an update may hold only the items we asked of its sender, each once; any
/// other is refused whole before a single certificate or signature check, so a peer cannot
/// make us verify thousands of copies of its own valid identity.
#[test]
fn an_update_with_unrequested_or_repeated_items_is_refused_without_crypto() {
    use std::sync::atomic::Ordering::Relaxed;
    let forged = identity_msg("b2", "b2", security("b2").with_corrupt_signatures());
    let mut flood = vec![identity_of("a1"); 2_000];
    flood.push(forged);
    let cases = [
        ("copies of the sender's own identity", flood),
        ("the requested item twice", vec![identity_of("b1"); 2]),
        (
            "the requested item and another",
            vec![identity_of("b1"), identity_of("a2")],
        ),
    ];
    for (what, data) in cases {
        let (mut comm, mut d, nonce, t, checks) = asked_of_a1(&["b1"]);
        d.handle_message(t, &mut comm, pull_from("a1", wire::update(nonce, data)));
        let s = &d.stats().certstore;
        assert_eq!(checks.load(Relaxed), 0, "{what}: no crypto");
        assert_eq!(
            (
                s.updates_unrequested,
                s.updates_refused,
                s.identities_learned
            ),
            (1, 0, 0),
            "{what}"
        );
        assert!(d.pulled_identity(&pki("b1"), t).is_none(), "{what}");
    }
    // The requested item, once, is learnt; a replay of that answer is not read again.
    let (mut comm, mut d, nonce, t, checks) = asked_of_a1(&["b1"]);
    let upd = wire::update(nonce, vec![identity_of("b1")]);
    d.handle_message(t, &mut comm, pull_from("a1", upd.clone()));
    assert_eq!(d.stats().certstore.identities_learned, 1);
    let after_one = checks.load(Relaxed);
    assert!(after_one > 0);
    d.handle_message(t, &mut comm, pull_from("a1", upd));
    assert_eq!(
        checks.load(Relaxed),
        after_one,
        "the replay costs no crypto"
    );
    assert_eq!(d.stats().certstore.updates_unsolicited, 1);
}

/// A malformed item (found by the cheap first pass) still refuses the update as before,
/// under `updates_refused` and `identity_malformed`, without crypto.
#[test]
fn a_malformed_item_refuses_the_update_without_crypto() {
    use std::sync::atomic::Ordering::Relaxed;
    let (mut comm, mut d, nonce, t, checks) = asked_of_a1(&["b1", "b2"]);
    let junk = Envelope {
        payload: Bytes::from_static(&[0xff; 3]),
        signature: Bytes::from_static(b"s"),
        secret_envelope: None,
    };
    let upd = wire::update(nonce, vec![identity_of("b1"), junk]);
    d.handle_message(t, &mut comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!(
        (
            s.updates_refused,
            s.identity_malformed,
            s.updates_unrequested
        ),
        (1, 1, 0)
    );
    assert_eq!(checks.load(Relaxed), 0);
}

/// A peer's hello is answered once: replayed while pending, it gets no second digest (a
/// digest lists every identity held: megabytes for a 12-byte hello, as often as it came).
#[test]
fn a_replayed_hello_gets_one_digest() {
    let (mut comm, mut d) = me();
    for _ in 0..20 {
        d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(5)));
    }
    // Digests (our own identity) are attempted on the made-up connection.
    let answered = |d: &Discovery| d.stats().certstore.digests_sent + d.stats().comm_errors;
    let s = &d.stats().certstore;
    assert_eq!(s.hellos_received, 20);
    assert_eq!(answered(&d), 1);
    assert_eq!(s.hellos_replayed, 19);
    assert_eq!(
        s.hellos_refused_peer, 0,
        "the replays take no more of a1's share"
    );
    // A fresh nonce is a new hello, answered.
    d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(6)));
    assert_eq!(answered(&d), 2);
}

/// Finding F5: one peer flooding hellos cannot fill the table of pending hellos and so
/// make another peer's hello be refused.
#[test]
fn a_peer_flooding_hellos_cannot_starve_another_peers_hello() {
    let (mut comm, mut d) = me();
    let cap = d.config().certstore.max_pending_hellos as u64;
    for n in 0..cap + 100 {
        d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(n)));
    }
    d.handle_message(T0, &mut comm, pull_from("a2", wire::hello(7)));
    d.handle_message(
        T0,
        &mut comm,
        pull_from("a2", wire::request(7, &[pki("me")])),
    );
    let s = &d.stats().certstore;
    assert_eq!(s.requests_unsolicited, 0, "a2's request is served");
    assert_eq!(s.hellos_refused_full, 0);
    let per_peer = d.config().certstore.max_pending_hellos_per_peer as u64;
    assert_eq!(s.hellos_refused_peer, cap + 100 - per_peer);
}

/// With the table full of several peers' hellos, a peer holding none takes the place of
/// the oldest hello of the peer holding the most; a peer holding as many as the most
/// loaded one less one is refused.
#[test]
fn a_full_table_makes_room_for_a_peer_holding_none() {
    let mut cfg = DiscoveryConfig::new("me.int:7051");
    cfg.certstore.max_pending_hellos = 3;
    cfg.certstore.max_pending_hellos_per_peer = 2;
    let (mut comm, mut d) = node(cfg);
    for (who, n) in [("a1", 1), ("a1", 2), ("a2", 3)] {
        d.handle_message(T0, &mut comm, pull_from(who, wire::hello(n)));
    }
    // a2 holds 1, a1 (the most) 2: refused, it would only trade places with a1.
    d.handle_message(T0, &mut comm, pull_from("a2", wire::hello(4)));
    assert_eq!(d.stats().certstore.hellos_refused_full, 1);
    // b1 holds none: a1's oldest hello makes room.
    d.handle_message(T0, &mut comm, pull_from("b1", wire::hello(5)));
    let s = &d.stats().certstore;
    assert_eq!((s.hellos_refused_full, s.hellos_evicted), (1, 1));
    let served = |d: &mut crate::Discovery, comm: &mut Comm<TestOnlyHmacSecurity>, who, n| {
        let before = d.stats().certstore.requests_unsolicited;
        d.handle_message(T0, comm, pull_from(who, wire::request(n, &[pki("me")])));
        d.stats().certstore.requests_unsolicited == before
    };
    assert!(!served(&mut d, &mut comm, "a1", 1), "evicted");
    assert!(served(&mut d, &mut comm, "a1", 2));
    assert!(served(&mut d, &mut comm, "a2", 3));
    assert!(served(&mut d, &mut comm, "b1", 5));
    assert!(!served(&mut d, &mut comm, "a2", 4), "refused");
}

/// Finding F4: a request echoing a hello is served once; its replays within the hello's
/// `request_wait` are refused and counted, not answered again (an attacker had a 90 MB
/// item sent 20 times for 20 copies of one 44-byte request).
#[test]
fn a_hellos_request_is_served_once_and_replays_are_counted() {
    let (mut comm, mut d) = me();
    let ask = |d: &mut Discovery, comm: &mut Comm<_>, at, nonce| {
        d.handle_message(
            at,
            comm,
            pull_from("a1", wire::request(nonce, &[pki("me")])),
        );
    };
    // Digests and updates are attempted on the made-up connection.
    let answered = |d: &Discovery| {
        let s = d.stats();
        s.certstore.digests_sent + s.certstore.updates_sent + s.comm_errors
    };
    d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(5)));
    for _ in 0..20 {
        ask(&mut d, &mut comm, T0, 5);
    }
    // The digest and one update.
    assert_eq!(answered(&d), 2);
    let s = &d.stats().certstore;
    assert_eq!((s.requests_replayed, s.requests_unsolicited), (19, 0));
    // A new hello buys one new answer.
    let later = T0 + d.config().certstore.request_wait;
    d.handle_message(later, &mut comm, pull_from("a1", wire::hello(6)));
    ask(&mut d, &mut comm, later, 6);
    assert_eq!(answered(&d), 4);
    assert_eq!(d.stats().certstore.requests_replayed, 19);
}

/// `who`'s own identity message, validly signed, with `metadata` bytes of metadata and a
/// channel of `channel` bytes.
fn identity_with_metadata(who: &str, metadata: usize, channel: usize) -> Envelope {
    let msg = GossipMessage {
        content: Some(gossip_message::Content::PeerIdentity(PeerIdentity {
            pki_id: Bytes::copy_from_slice(who.as_bytes()),
            cert: Bytes::copy_from_slice(who.as_bytes()),
            metadata: vec![7; metadata].into(),
        })),
        channel: vec![8; channel].into(),
        ..Default::default()
    };
    crate::alive::envelope_of(&SignedMessage::sign(msg, &security(who)).unwrap())
}

/// Finding F2: a pulled identity message larger than an identity and its metadata may be
/// (the membership's bounds) is refused, with the update that carries it, before it is
/// decoded or any certificate or signature is checked; nothing of it is stored.
#[test]
fn an_oversized_identity_is_refused_before_crypto_and_not_stored() {
    use std::sync::atomic::Ordering::Relaxed;
    let max_metadata = DiscoveryConfig::new("x:1").max_metadata_size;
    let cases = [
        ("20 MB of metadata", 20 << 20, 0),
        (
            "an envelope within bounds, its metadata not",
            max_metadata + 1,
            0,
        ),
        (
            "its certificate and metadata within bounds, the envelope not",
            0,
            1 << 20,
        ),
    ];
    for (what, metadata, channel) in cases {
        let (mut comm, mut d, nonce, t, checks) = asked_of_a1(&["b1"]);
        let upd = wire::update(nonce, vec![identity_with_metadata("b1", metadata, channel)]);
        d.handle_message(t, &mut comm, pull_from("a1", upd));
        let s = &d.stats().certstore;
        assert_eq!(
            (
                s.identity_too_large,
                s.updates_refused,
                s.identities_learned
            ),
            (1, 1, 0),
            "{what}"
        );
        assert_eq!(checks.load(Relaxed), 0, "{what}: no crypto");
        assert!(d.pulled_identity(&pki("b1"), t).is_none(), "{what}");
    }
    // Metadata within the bound is still accepted.
    let (mut comm, mut d, nonce, t, _) = asked_of_a1(&["b1"]);
    let upd = wire::update(nonce, vec![identity_with_metadata("b1", max_metadata, 0)]);
    d.handle_message(t, &mut comm, pull_from("a1", upd));
    assert_eq!(d.stats().certstore.identities_learned, 1);
}

/// Finding F2: the identities held are bounded in bytes; a new one that would pass the
/// bound is refused and counted, and the bytes held stay within it.
#[test]
fn identities_held_are_bounded_in_bytes() {
    let (mut comm, mut d) = me();
    let b1 = validate_identity_msg(comm.security(), &identity_of("b1"), T0).unwrap();
    let room = super::identities::weight(&b1, comm.security().organization_of(&b1.cert).as_ref());
    // Room for ours and b1, not for b2 (the same size).
    d.cfg.certstore.max_identity_bytes = d.certstore.identities.bytes() + room;
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    let t = T0 + d.config().pull_interval;
    d.handle_timeout(t, &mut comm);
    let nonce = d.certstore.engine.round_nonces()[0].1;
    let mut node = (comm, d);
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    let (comm, d) = &mut node;
    let upd = wire::update(nonce, vec![identity_of("b1"), identity_of("b2")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!(
        (
            s.identities_learned,
            s.identities_refused_bytes,
            s.identities_refused_full
        ),
        (1, 1, 0)
    );
    assert!(d.pulled_identity(&pki("b1"), t).is_some());
    assert!(d.pulled_identity(&pki("b2"), t).is_none());
    assert_eq!(
        d.certstore.identities.bytes(),
        d.config().certstore.max_identity_bytes
    );
}

/// Only the first `max_identities` items of a request or a digest are read: a member's
/// request of 3 million items had held the node's lock 2.8 s, a digest of as many 1.3 s.
#[test]
fn only_the_first_max_identities_items_of_a_request_or_digest_are_read() {
    let mut cfg = DiscoveryConfig::new("me.int:7051");
    cfg.certstore.max_identities = 4;
    let (mut comm, mut d) = node(cfg);
    let served = |d: &Discovery| {
        let s = d.stats();
        s.certstore.updates_sent + s.comm_errors
    };
    // Our identity asked for past the first four items: not read, so not served.
    let mut items: Vec<fabric_gossip_core::PkiId> = (0..6).map(|i| pki(&format!("x{i}"))).collect();
    items.push(pki("me"));
    d.handle_message(T0, &mut comm, pull_from("a1", wire::hello(5)));
    let before = served(&d);
    d.handle_message(T0, &mut comm, pull_from("a1", wire::request(5, &items)));
    assert_eq!(served(&d), before);
    assert_eq!(d.stats().certstore.request_items_dropped, 3);
    // Among the first four, it is.
    d.handle_message(T0, &mut comm, pull_from("a2", wire::hello(6)));
    let before = served(&d);
    d.handle_message(
        T0,
        &mut comm,
        pull_from("a2", wire::request(6, &items[3..])),
    );
    assert_eq!(served(&d), before + 1);
    assert_eq!(d.stats().certstore.request_items_dropped, 3);
    // A digest of ten items: the last six not read, and the round's bound (three beside
    // our own identity) drops one of the first four.
    let (mut node, nonce, t) = in_a_round();
    node.1.cfg.certstore.max_identities = 4;
    let ten: Vec<String> = (0..10).map(|i| format!("y{i}")).collect();
    let ten: Vec<&str> = ten.iter().map(String::as_str).collect();
    to_request_phase(&mut node, nonce, t, &ten);
    assert_eq!(node.1.stats().certstore.digest_items_dropped, 7);
}

/// A node that knows a1 and has sent its round's hello, with a digest phase (half a
/// second) that ends when nothing else of the node is due; and the time it sent it.
fn hellos_out_with_a_short_digest_wait() -> (Node, Instant) {
    let mut cfg = DiscoveryConfig::new("me.int:7051").with_external_endpoint("me.ext:7051");
    cfg.certstore.digest_wait = SEC / 2;
    let (mut comm, mut d) = node(cfg);
    d.handle_message(T0, &mut comm, direct("a1", alive("a1", 1, 1, "")));
    let t = T0 + d.config().pull_interval;
    d.handle_timeout(t, &mut comm);
    assert_eq!(d.stats().certstore.hellos_sent, 1);
    ((comm, d), t)
}

/// The pull's deadlines are the node's: with its hellos out, the node asks to be woken
/// when the round's digest phase ends (`digest_wait`, sooner here than anything else it
/// waits for), so its requests leave on time rather than at the next heartbeat.
#[test]
fn the_node_wakes_for_the_end_of_a_rounds_digest_phase() {
    let ((_comm, d), t) = hellos_out_with_a_short_digest_wait();
    assert_eq!(d.poll_timeout(), Some(t + SEC / 2));
}

/// An item whose certificate the MSP refuses refuses its whole update (as in Fabric) and
/// is counted as `identity_bad`, its reason, beside `updates_refused`.
#[test]
fn an_item_whose_certificate_is_refused_is_counted_as_bad() {
    let (mut node, nonce, t) = in_a_round_with(security("me").rejecting(&b"b1"[..]));
    let t = to_request_phase(&mut node, nonce, t, &["b1"]);
    let (comm, d) = &mut node;
    assert_eq!(d.stats().certstore.requests_sent, 1);
    d.handle_message(
        t,
        comm,
        pull_from("a1", wire::update(nonce, vec![identity_of("b1")])),
    );
    let s = &d.stats().certstore;
    assert_eq!((s.updates_refused, s.identity_bad), (1, 1), "{s:?}");
    assert!(d.pulled_identity(&pki("b1"), t).is_none());
}

/// Expired identities are purged by the sweep, which runs every tenth of
/// `identity_usage_threshold` (six minutes by default) and not at every tick, since each
/// sweep walks every identity held (up to `max_identities`); each purge is counted in
/// `identities_expired`.
#[test]
fn expired_identities_are_purged_by_the_sweep_every_tenth_of_the_usage_threshold() {
    let period = super::CertStoreConfig::default().identity_usage_threshold / 10;
    let (b1_ends, b3_ends) = (T0 + 10 * SEC, T0 + period + SEC);
    let sec = security("me")
        .expiring(&b"b1"[..], b1_ends)
        .expiring(&b"b3"[..], b3_ends);
    let (mut node, nonce, t) = in_a_round_with(sec);
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b3"]);
    let (comm, d) = &mut node;
    assert_eq!(d.config().certstore.identity_usage_threshold / 10, period);
    let upd = wire::update(nonce, vec![identity_of("b1"), identity_of("b3")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    assert_eq!(d.stats().certstore.updates_received, 1);
    assert_eq!(d.stats().certstore.identities_learned, 2);
    let expired_at = |d: &mut Discovery, comm: &mut Comm<TestOnlyHmacSecurity>, at: Instant| {
        d.handle_timeout(at, comm);
        d.stats().certstore.identities_expired
    };
    assert_eq!(
        expired_at(d, comm, b1_ends + SEC),
        0,
        "b1 expired, no sweep yet"
    );
    assert_eq!(expired_at(d, comm, T0 + period), 1, "the first sweep");
    assert_eq!(
        expired_at(d, comm, b3_ends + SEC),
        1,
        "b3 expired, no sweep yet"
    );
    assert_eq!(expired_at(d, comm, T0 + 2 * period), 2, "the second sweep");
}

/// A pull message comm refuses to send (here: comm stopped under the layer) is counted
/// in `comm_errors`, not as sent.
#[test]
fn a_pull_request_comm_refuses_is_a_comm_error_not_a_request_sent() {
    let ((mut comm, mut d), t) = hellos_out_with_a_short_digest_wait();
    let nonce = d.certstore.engine.round_nonces()[0].1;
    d.handle_message(
        t,
        &mut comm,
        pull_from("a1", wire::digest(nonce, &[pki("b1")])),
    );
    assert_eq!(d.stats().certstore.digests_received, 1);
    comm.stop(t);
    let errors = d.stats().comm_errors;
    d.handle_timeout(t + SEC / 2, &mut comm);
    assert_eq!(d.stats().certstore.requests_sent, 0);
    assert_eq!(d.stats().comm_errors - errors, 1);
}

/// A node that cannot sign its own identity message at the start serves no identity of
/// its own and counts the failure in `comm_errors`.
#[test]
fn an_own_identity_message_that_cannot_be_signed_is_a_comm_error() {
    let start = |pull: bool| {
        let sec = TestProvider::new("me");
        sec.fail_sign
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut comm = Comm::new(fabric_gossip_core::Config::default(), sec, T0).unwrap();
        let mut cfg = DiscoveryConfig::new("me.int:7051");
        cfg.certstore.enabled = pull;
        let mut d = Discovery::new(cfg).unwrap();
        d.start(T0, &mut comm);
        d
    };
    let (with, without) = (start(true), start(false));
    assert_eq!(with.pulled_identities(), 0);
    assert_eq!(with.stats().comm_errors - without.stats().comm_errors, 1);
}

/// Answers comm takes are counted as sent: on a live connection a hello is answered with
/// a digest (`digests_sent`) and its request with an update (`updates_sent`), and no comm
/// error is counted (the other tests answer on made-up connections, where only the sum
/// of the two tells).
#[test]
fn answers_on_a_live_connection_count_as_digests_and_updates_sent() {
    let (mut comm, mut d) = me();
    let s = comm.accept_stream(T0, "a1:1", None).unwrap();
    let hello = fabric_gossip_core::testing::conn_establish(b"a1", b"a1", b"", false, true);
    comm.handle_envelope(T0, s, hello).unwrap();
    let _ = fabric_gossip_core::testing::drain(&mut comm);
    let on_s = |msg| {
        let mut m = pull_from("a1", msg);
        m.conn = s;
        m
    };
    let errors = d.stats().comm_errors;
    d.handle_message(T0, &mut comm, on_s(wire::hello(5)));
    d.handle_message(T0, &mut comm, on_s(wire::request(5, &[pki("me")])));
    let st = &d.stats().certstore;
    assert_eq!((st.hellos_received, st.requests_received), (1, 1));
    assert_eq!((st.digests_sent, st.updates_sent), (1, 1));
    assert_eq!(d.stats().comm_errors, errors);
}

/// An update may hold fewer items than were asked of its sender (it may no longer hold
/// some): what it holds is taken. Only one holding more, or items not asked for, is
/// refused unread as unrequested.
#[test]
fn an_update_holding_fewer_items_than_asked_is_taken() {
    let (mut node, nonce, t) = in_a_round();
    let t = to_request_phase(&mut node, nonce, t, &["b1", "b2"]);
    let (comm, d) = &mut node;
    assert_eq!(d.stats().certstore.requests_sent, 1);
    let upd = wire::update(nonce, vec![identity_of("b1")]);
    d.handle_message(t, comm, pull_from("a1", upd));
    let s = &d.stats().certstore;
    assert_eq!(
        (s.updates_unrequested, s.identities_learned),
        (0, 1),
        "{s:?}"
    );
    assert!(d.pulled_identity(&pki("b1"), t).is_some());
}

/// A node holding at most eight identities (other organizations six of them), holding
/// ours, b1 to b5 (organization B) and c1 (C), in the request phase of its next round after
/// `a1` advertised `item` (the one item there is room to ask for). Its provider puts `b6`
/// in organization B too.
fn other_organizations_share_full_then_asked(item: &str) -> (Node, u64, Instant) {
    let sec = security("me").with_organization(Bytes::from("b6"), Bytes::from("B"));
    let (mut node, nonce, t) = in_a_round_with(sec);
    node.1.cfg.certstore.max_identities = 8;
    let held = ["b1", "b2", "b3", "b4", "b5", "c1"];
    let t = to_request_phase(&mut node, nonce, t, &held);
    let (comm, d) = &mut node;
    let upd = wire::update(nonce, held.map(identity_of).to_vec());
    d.handle_message(t, comm, pull_from("a1", upd));
    assert_eq!(d.stats().certstore.identities_learned, 6);
    let t = T0 + d.config().pull_interval * 2;
    d.handle_message(t, comm, direct("a1", alive("a1", 1, 2, "")));
    d.handle_timeout(t, comm);
    let nonce = d.certstore.engine.round_nonces()[0].1;
    let t = to_request_phase(&mut node, nonce, t, &[item]);
    assert_eq!(node.1.stats().certstore.requests_sent, 2);
    (node, nonce, t)
}

/// With other organizations' share of the store full, a newcomer of an organization
/// holding less (C) takes the place of the least recently used identity of the one
/// holding the most (B): counted as learnt and as evicted. A newcomer of the organization
/// holding the most (B) has no one's place to take: refused and counted
/// (`identities_refused_full`).
#[test]
fn a_newcomer_takes_an_identitys_place_or_is_refused_and_each_is_counted() {
    // (newcomer, (learnt, evicted, refused as full), kept)
    for (item, counts, kept) in [("c2", (7, 1, 0), true), ("b6", (6, 0, 1), false)] {
        let ((mut comm, mut d), nonce, t) = other_organizations_share_full_then_asked(item);
        let upd = wire::update(nonce, vec![identity_of(item)]);
        d.handle_message(t, &mut comm, pull_from("a1", upd));
        let s = &d.stats().certstore;
        let got = (
            s.identities_learned,
            s.identities_evicted,
            s.identities_refused_full,
        );
        assert_eq!(got, counts, "{item}: {s:?}");
        assert_eq!(d.pulled_identity(&pki(item), t).is_some(), kept, "{item}");
        if kept {
            assert_eq!(d.pulled_identities(), 7);
        }
    }
}
