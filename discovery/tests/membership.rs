//! Multi-node membership scenarios with Fabric's test HMAC provider, on the in-memory
//! cluster of `common` (virtual time; every run is deterministic).

use crate::common;

use bytes::Bytes;
use common::{Cluster, dcfg, one_joins_zero};
use core::time::Duration;
use fabric_gossip_core::TestOnlyHmacSecurity;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::testing::ep;
use fabric_gossip_core::{PkiId, RemotePeer, SignedMessage};
use fabric_gossip_discovery::alive::{alive_message, encode_secret};
use fabric_gossip_discovery::{DeadReason, DiscoveryEvent, Timestamp, membership_request};
use prost::Message;

/// Node 0 is the seed; every other node bootstraps to it.
fn seeded(n: usize) -> Cluster {
    Cluster::hmac(n, |i| {
        let cfg = dcfg(i);
        if i > 0 {
            cfg.with_bootstrap([ep(0)])
        } else {
            cfg
        }
    })
}

fn full_view(c: &Cluster, nodes: &[usize]) -> bool {
    nodes
        .iter()
        .all(|&i| nodes.iter().all(|&j| i == j || c.sees_alive(i, j)))
}

/// Sends raw envelope bytes from node `from` to node `to` over their connection.
fn inject(c: &mut Cluster, from: usize, to: usize, envelope: Bytes) {
    let now = c.now();
    let msg = SignedMessage::from_envelope_bytes(envelope).unwrap();
    let pki = c.net.nodes[to].comm.pki_id().clone();
    c.net.nodes[from]
        .comm
        .send(now, &msg, &[RemotePeer::new(ep(to), pki)])
        .unwrap();
    c.net.flush(from);
}

#[test]
fn two_nodes_through_a_bootstrap() {
    let mut c = seeded(2);
    let took = c
        .run_until(Duration::from_secs(2), |c| full_view(c, &[0, 1]))
        .expect("both alive");
    assert!(took < Duration::from_millis(100), "{took:?}");
    assert_eq!(c.layer(1).stats().bootstrap_acked, 1);
    assert!(matches!(
        c.events[1][0].1,
        DiscoveryEvent::BootstrapJoined { .. }
    ));
    // They stay alive well beyond the expiration time.
    c.run_for(Duration::from_secs(120));
    assert!(full_view(&c, &[0, 1]));
    assert_eq!(c.layer(0).stats().members_expired, 0);
    assert!(
        c.layer(0).stats().alive_received >= 20,
        "{:?}",
        c.layer(0).stats()
    );
}

#[test]
fn a_bootstrap_that_never_answers_is_asked_again() {
    let mut c = seeded(2);
    c.frozen[0] = true; // its comm handshakes, its layer never answers
    c.run_for(Duration::from_secs(100));
    let s = c.layer(1).stats();
    // Sends at 0, ~30, ~60, ~90 s: 5 s wait + 25 s back-off each.
    assert_eq!((s.requests_sent, s.bootstrap_acked), (4, 0), "{s:?}");
    c.frozen[0] = false;
    c.run_for(Duration::from_secs(30));
    assert_eq!(c.layer(1).stats().bootstrap_acked, 1);
    assert!(full_view(&c, &[0, 1]));
}

#[test]
fn a_bootstrap_equal_to_our_own_endpoint_is_skipped() {
    let mut c = Cluster::hmac(1, |i| {
        dcfg(i).with_bootstrap([ep(0), "localhost:7050".into()])
    });
    c.run_for(Duration::from_secs(60));
    assert_eq!(c.layer(0).stats().requests_sent, 0);
    assert!(c.events[0].is_empty());
    assert_eq!(c.layer(0).stats().alive_sent, 0, "no heartbeat while alone");
}

#[test]
fn a_third_node_is_learnt_from_the_bootstraps_response() {
    let mut c = Cluster::hmac(3, one_joins_zero);
    c.run_until(Duration::from_secs(1), |c| full_view(c, &[0, 1]))
        .unwrap();
    c.run_for(Duration::from_secs(1));
    c.restart_hmac(2, dcfg(2).with_bootstrap([ep(0)]));
    let start = c.now();
    let took = c
        .run_until(Duration::from_secs(1), |c| c.sees_alive(2, 1))
        .expect("node 2 learns node 1");
    assert!(took < Duration::from_millis(50), "{took:?}");
    // Learnt from node 0's response, not from node 1 itself.
    assert!(
        !c.trace
            .iter()
            .any(|(t, l)| *t >= start && l.starts_with("n2 <- n1")),
        "{:?}",
        c.trace
    );
    c.run_until(Duration::from_secs(15), |c| full_view(c, &[0, 1, 2]))
        .expect("everyone sees everyone");
}

#[test]
fn a_silent_member_is_declared_dead_after_the_expiration_time() {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(10));
    assert!(full_view(&c, &[0, 1, 2]));
    c.frozen[2] = true; // hung: its connections stay open, it sends nothing
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    c.run_until(Duration::from_secs(40), |c| !c.sees_alive(0, 2))
        .expect("declared dead");
    let m = c.layer(0).member(&pki2).unwrap();
    let silent = c.now() - m.last_seen;
    assert!(
        silent > Duration::from_secs(25) && silent <= Duration::from_millis(27_500 + 10),
        "{silent:?}"
    );
    let dead = c.events[0]
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                DiscoveryEvent::MemberDead {
                    reason: DeadReason::Expired,
                    ..
                }
            )
        })
        .count();
    assert_eq!(dead, 1);
    assert_eq!(c.layer(0).stats().members_expired, 1);
    assert!(
        c.net.nodes[0].comm.connection(&pki2).is_none(),
        "connection closed"
    );
    // The dead member is probed every reconnect interval; it does not come back while hung.
    c.run_for(Duration::from_secs(60));
    assert!(!c.sees_alive(0, 2));
    assert!(c.layer(0).stats().reconnect_probes >= 2);
    assert_eq!(c.layer(0).dead_members().len(), 1);
}

/// `alive_expiration_check_interval` set shorter than Fabric's `alive_expiration / 10`:
/// a silent member is declared dead within that much of the expiration, not 2.5 s late.
#[test]
fn a_shorter_expiry_check_declares_the_silent_member_dead_sooner() {
    let check = Duration::from_millis(100);
    let mut c = Cluster::hmac(3, |i| {
        let mut cfg = dcfg(i);
        cfg.alive_expiration_check_interval = Some(check);
        if i > 0 {
            cfg.with_bootstrap([ep(0)])
        } else {
            cfg
        }
    });
    assert_eq!(c.layer(0).config().expiration_check_interval(), check);
    c.run_for(Duration::from_secs(10));
    assert!(full_view(&c, &[0, 1, 2]));
    c.frozen[2] = true;
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    c.run_until(Duration::from_secs(40), |c| !c.sees_alive(0, 2))
        .expect("declared dead");
    let silent = c.now() - c.layer(0).member(&pki2).unwrap().last_seen;
    assert!(
        silent > Duration::from_secs(25)
            && silent <= Duration::from_secs(25) + check + common::STEP,
        "{silent:?}"
    );
    assert_eq!(c.layer(0).stats().members_expired, 1);
}

#[test]
fn a_crashed_member_is_presumed_dead_at_the_next_send() {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(10));
    c.crash(2);
    c.run_until(Duration::from_secs(20), |c| {
        !c.sees_alive(0, 2) && !c.sees_alive(1, 2)
    })
    .expect("declared dead before the expiration time");
    assert!(c.events[0].iter().any(|(_, e)| matches!(
        e,
        DiscoveryEvent::MemberDead {
            reason: DeadReason::PresumedDead,
            ..
        }
    )));
    assert!(full_view(&c, &[0, 1]));
}

/// Three nodes that met; then node 2 crashes and node 0 declares it dead. Node 2's
/// PKI-ID, and the incarnation node 0 knew it by.
fn three_then_node_2_dead() -> (Cluster, PkiId, u64) {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(10));
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    let inc = c.layer(0).member(&pki2).unwrap().timestamp.inc;
    c.crash(2);
    c.run_until(Duration::from_secs(30), |c| !c.sees_alive(0, 2))
        .unwrap();
    (c, pki2, inc)
}

#[test]
fn a_restarted_member_is_resurrected() {
    let (mut c, pki2, old_inc) = three_then_node_2_dead();
    c.run_for(Duration::from_secs(5));
    // Back on the same endpoint and identity, without a bootstrap peer: node 0's
    // reconnect pass must find it.
    c.restart_hmac(2, dcfg(2));
    let took = c
        .run_until(Duration::from_secs(30), |c| c.sees_alive(0, 2))
        .expect("resurrected");
    assert!(took <= Duration::from_secs(26), "{took:?}");
    let m = c.layer(0).member(&pki2).unwrap();
    assert!(m.timestamp.inc > old_inc);
    assert!(c.events[0].iter().any(|(_, e)| matches!(
        e,
        DiscoveryEvent::MemberAlive { resurrected: true, member } if member.pki_id == pki2
    )));
    assert_eq!(c.layer(0).stats().members_resurrected, 1);
    c.run_until(Duration::from_secs(15), |c| full_view(c, &[0, 1, 2]))
        .expect("everyone again");
}

#[test]
fn a_stale_incarnation_is_ignored() {
    let (mut c, _, inc) = three_then_node_2_dead();
    // Restart with a clock that went back.
    let mut cfg = dcfg(2).with_bootstrap([ep(0)]);
    cfg.incarnation = Some(inc - 1);
    c.restart_hmac(2, cfg);
    c.run_for(Duration::from_secs(60));
    assert!(!c.sees_alive(0, 2));
    assert!(c.layer(0).stats().alive_stale + c.layer(0).stats().alive_duplicate > 0);
}

#[test]
fn forged_replayed_and_spoofed_messages_are_refused_and_counted() {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(8));
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    // Node 0's own copy: genuine and, whatever node 1 heard since, not newer for node 0.
    let genuine = c.layer(0).member_envelope(&pki2).unwrap().clone();
    let before = c.layer(0).member(&pki2).unwrap();
    let s0 = c.layer(0).stats().clone();

    // Replay: node 1 sends node 2's genuine but old alive to node 0.
    inject(&mut c, 1, 0, Bytes::from(genuine.encode_to_vec()));
    c.run_for(Duration::from_millis(20));
    // Dropped by the store if node 0 had it by gossip, else found stale by membership.
    let s = c.layer(0).stats();
    assert_eq!(
        s.alive_duplicate + s.alive_stale,
        s0.alive_duplicate + s0.alive_stale + 1
    );
    assert_eq!(
        c.layer(0).member(&pki2).unwrap().last_seen,
        before.last_seen
    );

    // Forgery: a newer timestamp under the old signature.
    let mut msg = GossipMessage::decode(genuine.payload.clone()).unwrap();
    let Some(gossip_message::Content::AliveMsg(a)) = &mut msg.content else {
        panic!()
    };
    a.timestamp.as_mut().unwrap().seq_num += 1000;
    let forged = Envelope {
        payload: msg.encode_to_vec().into(),
        ..genuine.clone()
    };
    inject(&mut c, 1, 0, Bytes::from(forged.encode_to_vec()));
    c.run_for(Duration::from_millis(20));
    assert_eq!(
        c.layer(0).stats().alive_bad_signature,
        s0.alive_bad_signature + 1
    );
    assert!(c.layer(0).member(&pki2).unwrap().timestamp.seq < before.timestamp.seq + 1000);

    // Spoofing: a membership request whose self_information is someone else's.
    let req = SignedMessage::noop(membership_request(genuine.clone(), 0));
    inject(&mut c, 1, 0, req.envelope_bytes().clone());
    c.run_for(Duration::from_millis(20));
    assert_eq!(c.layer(0).stats().requests_spoofed, s0.requests_spoofed + 1);
    assert_eq!(
        c.layer(0).stats().responses_sent,
        s0.responses_sent,
        "no answer"
    );

    // Illegal tag.
    let mut bad_tag = GossipMessage::decode(genuine.payload.clone()).unwrap();
    bad_tag.tag = gossip_message::Tag::OrgOnly as i32;
    let bad = SignedMessage::noop(bad_tag);
    inject(&mut c, 1, 0, bad.envelope_bytes().clone());
    c.run_for(Duration::from_millis(20));
    assert_eq!(c.layer(0).stats().illegal_tag, s0.illegal_tag + 1);
    assert!(full_view(&c, &[0, 1, 2]), "nothing disturbed membership");
}

#[test]
fn replays_do_not_keep_a_member_alive() {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(8));
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    c.frozen[2] = true;
    let last = c.layer(1).member_envelope(&pki2).unwrap().encode_to_vec();
    let mut died = false;
    for _ in 0..8 {
        inject(&mut c, 1, 0, Bytes::from(last.clone()));
        c.run_for(Duration::from_secs(5));
        died |= !c.sees_alive(0, 2);
    }
    assert!(died);
    assert!(c.layer(0).stats().alive_duplicate >= 8);
}

#[test]
fn a_long_dead_member_is_purged_but_not_a_bootstrap_peer() {
    let mut c = seeded(3);
    c.run_for(Duration::from_secs(10));
    let pki0 = c.net.nodes[0].comm.pki_id().clone();
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    c.crash(2);
    c.crash(0);
    c.run_for(Duration::from_secs(505));
    let l1 = c.layer(1);
    assert!(l1.member(&pki2).is_none(), "purged after the TTL");
    assert!(
        l1.member(&pki0).is_some_and(|m| !m.alive),
        "bootstrap peer kept, dead"
    );
    assert_eq!(l1.stats().members_purged, 1);
    assert_eq!(l1.stats().members_purged_long_dead, 1);
}

/// An anchor peer (`connect_anchor`) is kept like a bootstrap peer: Fabric's store expiry
/// skips both.
#[test]
fn a_long_dead_anchor_peer_is_not_purged() {
    let mut c = seeded(4);
    let now = c.now();
    c.layers[1].as_mut().unwrap().connect_anchor(now, ep(3));
    c.run_for(Duration::from_secs(10));
    let pki2 = c.net.nodes[2].comm.pki_id().clone();
    let pki3 = c.net.nodes[3].comm.pki_id().clone();
    c.crash(2);
    c.crash(3);
    c.run_for(Duration::from_secs(505));
    let l1 = c.layer(1);
    assert!(l1.member(&pki2).is_none(), "purged after the TTL");
    assert!(
        l1.member(&pki3).is_some_and(|m| !m.alive),
        "anchor peer kept, dead"
    );
    // Node 0 never took 3 as an anchor: it purges it.
    assert!(c.layer(0).member(&pki3).is_none());
}

#[test]
fn same_seed_same_trace() {
    let run = || {
        let mut c = seeded(4);
        c.run_for(Duration::from_secs(30));
        c.crash(3);
        c.run_for(Duration::from_secs(30));
        (
            c.trace.clone(),
            (0..3).map(|i| c.describe_events(i)).collect::<Vec<_>>(),
        )
    };
    assert_eq!(run(), run());
}

#[test]
fn twenty_nodes_reach_full_membership() {
    let mut c = seeded(20);
    let all: Vec<usize> = (0..20).collect();
    let took = c
        .run_until(Duration::from_secs(60), |c| full_view(c, &all))
        .expect("full membership");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// A signed alive message of member `insider:7051` at `seq`, whose secret names `internal`
/// as its internal endpoint (where the others of its organization dial it).
fn insider_alive(seq: u64, internal: &str) -> Bytes {
    let who = "insider:7051";
    let security = TestOnlyHmacSecurity::new(who);
    let msg = alive_message(
        String::new(),
        Bytes::from(who),
        Bytes::new(),
        Timestamp { inc: 1, seq },
        Bytes::from(who),
    );
    SignedMessage::sign_with_secret(msg, encode_secret(internal), &security)
        .unwrap()
        .envelope_bytes()
        .clone()
}

/// A member whose alive messages name a live member's endpoint (two peers behind one
/// address, or an insider's doing), a new one every second: each node's dial for it
/// reaches that member instead, an identity switch that purges it and replaces the
/// victim's connection, and its next alive message taught it back, to be dialled again.
/// Now the endpoint is the one that answered's for a while and the claim is refused
/// meanwhile: a few switches per node in two minutes instead of one nearly every second.
#[test]
fn a_member_naming_a_live_members_endpoint_costs_a_switch_per_hold_not_per_message() {
    let mut c = seeded(4);
    c.run_until(Duration::from_secs(20), |c| full_view(c, &[0, 1, 2, 3]))
        .expect("full membership");
    let run = Duration::from_secs(120);
    // Node 1 relays the insider's messages to node 2, which spreads them as gossip.
    for seq in 1..=run.as_secs() {
        inject(&mut c, 1, 2, insider_alive(seq, &ep(0)));
        c.run_for(Duration::from_secs(1));
    }
    let hold = c.layer(2).config().alive_expiration;
    let most = run.as_secs() / hold.as_secs() + 2;
    let switches: Vec<u64> = (0..4)
        .map(|i| c.net.nodes[i].comm.stats().identity_switches)
        .collect();
    assert!(switches[2] >= 1, "the insider was dialled: {switches:?}");
    assert!(
        switches.iter().all(|&n| n <= most),
        "identity switches per node {switches:?} in {run:?}, at most {most} allowed"
    );
    assert!(c.layer(2).stats().alive_endpoint_taken > 10);
    assert!(full_view(&c, &[0, 1, 2, 3]), "no honest member lost");
}

/// The same insider naming the live member's endpoint a different way in each message
/// (`127.0.0.2:7050`, `127.0.0.3:7050`, … all reach a server bound on `0.0.0.0`, as a
/// port's leading zeros, a name's capitals or a second DNS name do): an endpoint noted
/// as the member's own is a string, so each new way was a new dial and switch. Now a
/// member whose dials reached another member twice within a hold is refused whatever
/// endpoint it names: two switches per node per hold at most. The victim's own dials of
/// it, which reach itself, count the same way.
#[test]
fn a_member_naming_a_live_members_endpoint_a_new_way_each_time_is_held_after_two() {
    let mut c = seeded(4);
    c.run_until(Duration::from_secs(20), |c| full_view(c, &[0, 1, 2, 3]))
        .expect("full membership");
    let run = Duration::from_secs(120);
    let way = |seq: u64| format!("127.0.0.{}:7050", seq + 1);
    for seq in 1..=run.as_secs() {
        c.net.aliases.insert(way(seq), 0);
    }
    for seq in 1..=run.as_secs() {
        inject(&mut c, 1, 2, insider_alive(seq, &way(seq)));
        c.run_for(Duration::from_secs(1));
    }
    let hold = c.layer(2).config().alive_expiration;
    let most = 2 * (run.as_secs() / hold.as_secs() + 1);
    let switches: Vec<u64> = (0..4)
        .map(|i| c.net.nodes[i].comm.stats().identity_switches)
        .collect();
    // The victim's own dials of the insider reach itself: each is two failed handshakes
    // (its outbound and its inbound side), 248 when each message was dialled.
    let own = c.net.nodes[0]
        .comm
        .stats()
        .handshake_failures_for("own_pki_id");
    assert!(own <= 2 * most, "the victim dialled itself {own} / 2 times");
    assert!(switches[2] >= 2, "the insider was dialled: {switches:?}");
    assert!(
        switches.iter().all(|&n| n <= most),
        "identity switches per node {switches:?} in {run:?}, at most {most} allowed"
    );
    assert!(c.layer(2).stats().alive_endpoint_taken > 10);
    assert!(full_view(&c, &[0, 1, 2, 3]), "no honest member lost");
}
