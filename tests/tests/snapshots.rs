//! Canonical traces, snapshotted: any change in protocol behaviour (an extra write, a
//! different order, other bytes on the wire) shows up in review as a diff of these files.
//! Fixed latency, no jitter, so the times read easily. Update with `cargo insta review`
//! (or `INSTA_UPDATE=always cargo test -p fabric-gossip-tests --test snapshots`).

use fabric_gossip_core::{RemotePeer, SignedMessage};
use fabric_gossip_sim::{Fault, NodeSpec, Sim, SimConfig, TraceMode, data_message};
use std::time::Duration;

fn sim() -> Sim {
    let mut cfg = SimConfig::seeded(1);
    cfg.latency = Duration::from_millis(1);
    cfg.jitter = Duration::ZERO;
    cfg.trace = TraceMode::Full;
    Sim::new(cfg)
}

/// Two nodes with the test provider: most traces start there.
fn two_nodes() -> Sim {
    let mut sim = sim();
    sim.add_nodes(2);
    sim
}

fn msg(seq: u64, text: &'static str) -> SignedMessage {
    SignedMessage::noop(data_message(seq, text))
}

fn finish(mut sim: Sim) -> String {
    sim.run_until_idle(Duration::from_secs(60));
    sim.check_quiescent().unwrap();
    sim.trace().text()
}

#[test]
fn two_nodes_handshake_and_exchange() {
    let mut sim = two_nodes();
    sim.send_to(0, &msg(1, "hello"), &[1]).unwrap();
    sim.run_for(Duration::from_millis(10));
    sim.send_to(1, &msg(2, "back"), &[0]).unwrap();
    insta::assert_snapshot!(finish(sim));
}

#[test]
fn crossing_dials_resolve_to_the_lower_pki_id() {
    let mut sim = two_nodes();
    sim.send_to(0, &msg(1, "from 0"), &[1]).unwrap();
    sim.send_to(1, &msg(2, "from 1"), &[0]).unwrap();
    insta::assert_snapshot!(finish(sim));
}

#[test]
fn probe_of_a_peer_whose_ping_hangs() {
    let mut sim = sim();
    sim.add_node(NodeSpec::new()).unwrap();
    sim.add_node(NodeSpec::new().hang_ping(true)).unwrap();
    let peer = sim.remote_peer(1);
    sim.probe(0, &peer).unwrap();
    insta::assert_snapshot!(finish(sim));
}

#[test]
fn partition_stalls_a_stream_until_it_heals() {
    let mut sim = two_nodes();
    sim.send_to(0, &msg(1, "before"), &[1]).unwrap();
    sim.run_for(Duration::from_millis(10));
    sim.apply(Fault::Partition {
        a: vec![0],
        b: vec![1],
    });
    sim.send_to(0, &msg(2, "during"), &[1]).unwrap();
    sim.run_for(Duration::from_secs(1));
    sim.apply(Fault::Heal);
    insta::assert_snapshot!(finish(sim));
}

#[test]
fn restart_with_a_new_identity_switches() {
    let mut sim = two_nodes();
    let old = sim.remote_peer(1);
    sim.send_to(0, &msg(1, "first"), &[1]).unwrap();
    sim.run_for(Duration::from_millis(10));
    sim.crash(1);
    sim.restart(1, true).unwrap();
    sim.run_for(Duration::from_millis(10));
    sim.send(
        0,
        &msg(2, "second"),
        &[RemotePeer::new(old.endpoint, old.pki_id)],
    )
    .unwrap();
    insta::assert_snapshot!(finish(sim));
}

/// A send to a peer that is down: its dial is refused, tried again 1 s later (the same
/// handle, a new `Dial`), refused again, and the retry after the jittered back-off reaches
/// the peer, restarted meanwhile: the message arrives and nobody is presumed dead.
#[test]
fn a_refused_dial_is_retried_until_the_restarted_peer_answers() {
    let mut sim = two_nodes();
    sim.crash(1);
    sim.send_to(0, &msg(1, "while down"), &[1]).unwrap();
    sim.run_for(Duration::from_millis(1500));
    sim.restart(1, false).unwrap();
    insta::assert_snapshot!(finish(sim));
}

/// A send to a peer that stays down: refused at once, after 1 s and after the jittered
/// back-off, and presumed dead when the 3 s dial timeout is up.
#[test]
fn a_peer_that_stays_down_is_presumed_dead_at_the_dial_timeout() {
    let mut sim = two_nodes();
    sim.crash(1);
    sim.send_to(0, &msg(1, "lost"), &[1]).unwrap();
    insta::assert_snapshot!(finish(sim));
}
