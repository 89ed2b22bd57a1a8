//! Connection store, sending and receiving rules (`gossip/comm/conn.go`, `connectionStore`
//! and `connection`; `gossip/comm/comm_impl.go`), on the in-memory
//! harness with a virtual clock.

use crate::common;
use common::*;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::*;
use std::time::Duration;

fn cfg(_: usize) -> Config {
    Config::default()
}

fn events_of(net: &Net, i: usize) -> &[Event] {
    &net.nodes[i].events
}

#[test]
fn concurrent_sends_share_one_attempt_and_arrive_in_order() {
    let mut net = Net::new(2, cfg);
    net.subscribe_all(1);
    net.record = true;
    for k in 0..5u8 {
        net.send(0, 1, &[k]);
    }
    let dials = net.log.iter().filter(|l| l.starts_with("n0 Dial")).count();
    assert_eq!(dials, 1, "one attempt per PKI-ID: {:#?}", net.log);
    net.settle();
    assert_eq!(
        net.delivered_data(1),
        (0..5u8).map(|k| vec![k]).collect::<Vec<_>>()
    );
}

/// Attempts are keyed by PKI-ID: a message for a peer of unknown PKI-ID, sent while an
/// attempt to another endpoint of unknown PKI-ID is in progress, would have joined that
/// attempt and gone to its peer. It is refused (blocking) or dropped and counted instead;
/// once the attempt has ended, the same send dials its own endpoint.
#[test]
fn a_peer_of_unknown_pki_id_never_gets_another_ones_message() {
    let mut net = Net::new(3, cfg);
    net.subscribe_all(1);
    net.subscribe_all(2);
    let unknown = PkiId::default();
    net.send_expecting(0, 1, &unknown, b"for 1");
    let now = net.now;
    let to_2 = RemotePeer::new(ep(2), unknown.clone());
    let msg = SignedMessage::noop(data_msg(b"for 2"));
    let r = net.nodes[0].comm.send_wait(now, &msg, &to_2);
    assert_eq!(r, Err(Error::UnknownPkiIdBusy { pending: ep(1) }));
    net.nodes[0]
        .comm
        .send(now, &msg, std::slice::from_ref(&to_2))
        .unwrap();
    assert_eq!(net.nodes[0].comm.stats().dropped_no_connection, 1);
    // Another message for the endpoint being dialled joins its attempt.
    net.send_expecting(0, 1, &unknown, b"for 1 again");
    net.settle();
    assert_eq!(
        net.delivered_data(1),
        vec![b"for 1".to_vec(), b"for 1 again".to_vec()]
    );
    assert!(net.delivered_data(2).is_empty());
    let now = net.now;
    net.nodes[0].comm.send_wait(now, &msg, &to_2).unwrap();
    net.flush(0);
    net.settle();
    assert_eq!(net.delivered_data(2), vec![b"for 2".to_vec()]);
}

#[test]
fn crossing_dials_end_with_one_connection_on_the_same_stream() {
    for first_lower in [true, false] {
        let mut net = Net::new(2, cfg);
        net.subscribe_all(0);
        net.subscribe_all(1);
        // Both dial at the same instant.
        let (a, b) = if first_lower { (0, 1) } else { (1, 0) };
        net.send(a, b, b"x");
        net.send(b, a, b"y");
        net.settle();
        net.advance(Duration::from_secs(5));
        let c0 = net.nodes[0].comm.connections();
        let c1 = net.nodes[1].comm.connections();
        assert_eq!(c0.len(), 1);
        assert_eq!(c1.len(), 1);
        assert_eq!(
            c0[0].secondary, None,
            "secondary closed after the grace period"
        );
        assert_eq!(c1[0].secondary, None);
        // Node 0 has the lower PKI-ID ("127.0.0.1:7050"): its outbound stream wins.
        let info0 = net.nodes[0]
            .comm
            .connection_info(c0[0].primary)
            .unwrap()
            .clone();
        assert_eq!(info0.id, PkiId::from(ep(1).as_str()));
        assert!(net.nodes[0].events.iter().any(
            |e| matches!(e, Event::Connected { conn, inbound: false, .. } if *conn == c0[0].primary)
        ));
        assert!(net.nodes[1].events.iter().any(
            |e| matches!(e, Event::Connected { conn, inbound: true, .. } if *conn == c1[0].primary)
        ));
        let (to0, to1) = if first_lower {
            (b"y", b"x")
        } else {
            (b"x", b"y")
        };
        assert_eq!(net.delivered_data(0), vec![to0.to_vec()]);
        assert_eq!(net.delivered_data(1), vec![to1.to_vec()]);
        assert!(net.nodes[0].comm.stats().crossings + net.nodes[1].comm.stats().crossings >= 1);
        // And the surviving stream still works both ways.
        net.send(0, 1, b"after");
        net.send(1, 0, b"after");
        net.settle();
        assert_eq!(net.delivered_data(1).last().unwrap(), b"after");
        assert_eq!(net.delivered_data(0).last().unwrap(), b"after");
    }
}

#[test]
fn reconnect_from_the_same_side_replaces_the_old_connection() {
    let mut net = Net::connected_pair(cfg, b"1");
    let old = net.conn(1, 0).unwrap();
    // Node 0 restarts (same identity) and reconnects before node 1 notices the old one.
    net.restart(
        0,
        Box::new(TestOnlyHmacSecurity::new(ep(0))),
        Config::default(),
    );
    net.send(0, 1, b"2");
    net.settle();
    let new = net.conn(1, 0).unwrap();
    assert_ne!(old, new);
    assert!(events_of(&net, 1).iter().any(|e| matches!(e, Event::Disconnected { conn, reason: CloseReason::Replaced, .. } if *conn == old)));
    assert_eq!(net.delivered_data(1), vec![b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn close_conn_then_resend_reconnects() {
    let mut net = Net::connected_pair(cfg, b"1");
    let first = net.conn(0, 1).unwrap();
    net.close_conn(0, 1);
    net.flush(0);
    net.settle();
    assert!(net.nodes[0].comm.connections().is_empty());
    assert!(
        net.nodes[1].comm.connections().is_empty(),
        "remote saw the stream end"
    );
    net.send(0, 1, b"2");
    net.settle();
    let second = net.conn(0, 1).unwrap();
    assert_ne!(first, second);
    assert_eq!(net.delivered_data(1), vec![b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn failed_dial_presumes_the_peer_dead() {
    let mut net = Net::new(2, cfg);
    net.refuse_dials.insert(1);
    let deadline = net.now + net.nodes[0].comm.config().dial_timeout;
    net.send(0, 1, b"x");
    net.send(0, 1, b"y");
    net.settle();
    // Refused, the dial tries again until its deadline (grpc-go under Fabric's dial
    // timeout): nothing is presumed dead before.
    net.advance(deadline - Duration::from_millis(1) - net.now);
    assert!(
        !events_of(&net, 0)
            .iter()
            .any(|e| matches!(e, Event::PresumedDead(_))),
        "presumed dead before the dial timeout"
    );
    assert_eq!(net.nodes[0].comm.stats().dial_retries, 2);
    net.advance(Duration::from_millis(1));
    let dead: Vec<_> = events_of(&net, 0)
        .iter()
        .filter_map(|e| match e {
            Event::PresumedDead(p) => {
                // Named (PKI-ID and endpoint) and with its cause.
                assert_eq!(p.endpoint, ep(1));
                assert!(
                    matches!(p.cause, DeadCause::Connect(HandshakeError::Dial(_))),
                    "{p:?}"
                );
                Some(p.pki_id.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(dead, vec![PkiId::from(ep(1).as_str())]);
    let st = net.nodes[0].comm.stats();
    assert_eq!(st.dropped_no_connection, 2);
    assert_eq!(st.presumed_dead, 1);
}

#[test]
fn presumed_dead_after_remote_stops() {
    let mut net = Net::connected_pair(cfg, b"x");
    net.crash(1);
    net.settle();
    // The reset closed the connection; the next send cannot connect.
    net.send(0, 1, b"y");
    net.settle();
    assert!(
        events_of(&net, 0).iter().any(
            |e| matches!(e, Event::PresumedDead(p) if p.pki_id == PkiId::from(ep(1).as_str()))
        )
    );
}

#[test]
fn write_failure_presumes_dead_and_closes() {
    let mut net = Net::new(2, cfg);
    net.send(0, 1, b"x");
    net.settle();
    let s = net.conn(0, 1).unwrap();
    let now = net.now;
    net.nodes[0]
        .comm
        .handle_write_failed(now, s, "broken pipe".into())
        .unwrap();
    net.flush(0);
    assert!(
        events_of(&net, 0)
            .iter()
            .any(|e| matches!(e, Event::PresumedDead(_)))
    );
    assert!(events_of(&net, 0).iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: CloseReason::WriteFailed(_),
            ..
        }
    )));
    assert!(net.nodes[0].comm.connections().is_empty());
}

/// A remote that refuses us writes its ConnEstablish first (Fabric's server too), so our
/// side of the handshake succeeds and the connection registers; then the remote ends the
/// stream with an error. That is a refusal: counted, and the peer presumed dead, as
/// Fabric's dialler finds at its next send. It had been a connection that closed, every
/// send dialling again and refused again, reported nowhere (review beside Fabric's
/// `conn.go`, 2026-12-05).
#[test]
fn a_remote_that_refuses_us_after_its_handshake_is_presumed_dead() {
    let mut net = Net::with_security(2, cfg, |i| -> Box<dyn Security> {
        let s = TestOnlyHmacSecurity::new(ep(i));
        Box::new(if i == 1 { s.rejecting(ep(0)) } else { s })
    });
    net.subscribe_all(1);
    net.send(0, 1, b"x");
    net.settle();
    let dead: Vec<_> = events_of(&net, 0)
        .iter()
        .filter_map(|e| match e {
            Event::PresumedDead(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 1, "{:#?}", events_of(&net, 0));
    assert_eq!(dead[0].pki_id, PkiId::from(ep(1).as_str()));
    assert!(
        matches!(&dead[0].cause, DeadCause::Connect(HandshakeError::RefusedByRemote { status }) if !status.is_empty()),
        "{:?}",
        dead[0]
    );
    let st = net.nodes[0].comm.stats();
    assert_eq!(st.handshake_failures_for("refused_by_remote"), 1);
    assert_eq!(st.presumed_dead, 1);
    assert!(net.delivered_data(1).is_empty());
}

/// Only an error soon after our handshake is a refusal: a stream that ends cleanly, or
/// with an error once `conn_timeout` has passed, is a connection that closed.
#[test]
fn a_dialled_connection_that_ends_later_or_cleanly_is_not_a_refusal() {
    for (wait, end, refused) in [
        (Duration::ZERO, StreamEnd::Error("refused".into()), 1),
        (Duration::from_secs(3), StreamEnd::Error("reset".into()), 0),
        (Duration::ZERO, StreamEnd::Finished, 0),
    ] {
        let mut net = Net::new(2, cfg);
        net.send(0, 1, b"x");
        net.settle();
        net.advance(wait);
        let s = net.conn(0, 1).unwrap();
        let now = net.now;
        net.nodes[0]
            .comm
            .handle_stream_closed(now, s, end.clone())
            .unwrap();
        net.flush(0);
        let st = net.nodes[0].comm.stats();
        assert_eq!(
            (st.presumed_dead, st.handshake_failures_total()),
            (refused, refused),
            "{end:?} after {wait:?}"
        );
    }
}

/// A connected pair whose node 0 may have one write unconfirmed, the network held until
/// the test runs it: its sends pile up in the send buffer.
fn window_of_one(config: Config) -> Net {
    Net::connected_pair(|_| config.clone().with_write_window(1), b"warm")
}

#[test]
fn full_send_buffer_drops_and_counts_without_closing() {
    let mut net = window_of_one(Config::default().with_send_buffer(4));
    // The remote never reads: hold every write by not running the network.
    let (now, c) = (net.now, &mut net.nodes[0].comm);
    for k in 0..50u8 {
        c.send(now, &SignedMessage::noop(data_msg(&[k])), &[peer(1)])
            .unwrap();
    }
    let st = net.nodes[0].comm.stats().clone();
    // 1 in flight + 4 buffered; the other 45 dropped.
    assert_eq!(st.dropped_overflow, 45);
    let s = net.conn(0, 1).unwrap();
    assert_eq!(
        net.nodes[0]
            .comm
            .send_queue_len(s)
            .map(|q| (q.buffered, q.waiting, q.in_flight)),
        Some((4, 0, 1))
    );
    // What a flush waits for: the 5 accepted and not yet written (the 45 are counted).
    assert_eq!(net.nodes[0].comm.unsent(), 5);
    net.flush(0);
    net.settle();
    assert_eq!(
        net.nodes[0].comm.connections().len(),
        1,
        "overflow does not tear the connection down"
    );
    assert_eq!(net.delivered_data(1).len(), 1 + 5);
    assert_eq!(net.nodes[0].comm.unsent(), 0);
}

/// `unsent` counts what waits for a connection attempt too, and falls to zero once each
/// message is written or dropped: what a tool's flush before `stop` waits for.
#[test]
fn unsent_counts_messages_until_written_or_dropped() {
    let mut net = Net::new(3, |_| Config::default());
    net.subscribe_all(1);
    let now = net.now;
    let to = net.peer(1);
    for k in 0..3u8 {
        net.nodes[0]
            .comm
            .send(
                now,
                &SignedMessage::noop(data_msg(&[k])),
                std::slice::from_ref(&to),
            )
            .unwrap();
    }
    assert_eq!(
        net.nodes[0].comm.unsent(),
        3,
        "held by the connection attempt"
    );
    net.settle();
    assert_eq!(net.delivered_data(1).len(), 3);
    assert_eq!(net.nodes[0].comm.unsent(), 0);
    // A peer that cannot be reached: dropped, counted, no longer unsent.
    net.crash(2);
    let gone = net.peer(2);
    net.nodes[0]
        .comm
        .send(now, &SignedMessage::noop(data_msg(b"x")), &[gone])
        .unwrap();
    assert_eq!(net.nodes[0].comm.unsent(), 1);
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.nodes[0].comm.unsent(), 0);
    assert_eq!(net.nodes[0].comm.stats().dropped_no_connection, 1);
}

#[test]
fn send_wait_queues_instead_of_dropping_and_keeps_order() {
    let mut net = window_of_one(Config::default().with_send_buffer(2));
    let (now, c) = (net.now, &mut net.nodes[0].comm);
    for k in 0..20u8 {
        c.send_wait(now, &SignedMessage::noop(data_msg(&[k])), &peer(1))
            .unwrap();
    }
    assert_eq!(net.nodes[0].comm.stats().dropped_overflow, 0);
    net.flush(0);
    net.settle();
    let got = net.delivered_data(1);
    assert_eq!(got.len(), 21);
    assert_eq!(
        &got[1..],
        (0..20u8).map(|k| vec![k]).collect::<Vec<_>>().as_slice()
    );
}

#[test]
fn send_wait_refuses_when_the_wait_queue_is_full() {
    let mut c = Config::default().with_send_buffer(1).with_write_window(1);
    c.max_waiting_sends = 2;
    let mut net = Net::new(2, move |_| c.clone());
    net.send(0, 1, b"warm");
    net.settle();
    let now = net.now;
    let m = SignedMessage::noop(data_msg(b"z"));
    let results: Vec<_> = (0..5)
        .map(|_| net.nodes[0].comm.send_wait(now, &m, &peer(1)))
        .collect();
    // 1 in flight, 1 buffered, 2 waiting, then refused.
    assert_eq!(results[..4], [Ok(()), Ok(()), Ok(()), Ok(())]);
    assert_eq!(results[4], Err(Error::WouldBlock));
}

/// The first byte of a DataMessage's data.
fn first_byte(m: &ReceivedMessage) -> Option<u8> {
    data_payload(&m.message).and_then(|(_, data)| data.first().copied())
}

#[test]
fn predicates_route_each_message_only_to_its_subscribers() {
    let mut net = Net::new(2, cfg);
    let even = net.nodes[1]
        .comm
        .subscribe(Box::new(|m: &ReceivedMessage| {
            first_byte(m).is_some_and(|b| b % 2 == 0)
        }))
        .unwrap();
    let odd = net.nodes[1]
        .comm
        .subscribe(Box::new(|m: &ReceivedMessage| {
            first_byte(m).is_some_and(|b| b % 2 == 1)
        }))
        .unwrap();
    net.nodes[1].subs = vec![even, odd];
    for k in 0..10u8 {
        net.send(0, 1, &[k]);
    }
    net.settle();
    let data = |sub| -> Vec<u8> {
        net.nodes[1].delivered[&sub]
            .iter()
            .map(|m| first_byte(m).unwrap_or(255))
            .collect()
    };
    assert_eq!(data(even), vec![0, 2, 4, 6, 8]);
    assert_eq!(data(odd), vec![1, 3, 5, 7, 9]);
}

#[test]
fn received_messages_carry_connection_info_and_original_bytes() {
    let net = Net::connected_pair(cfg, b"info");
    let m = net.nodes[1].delivered.values().next().unwrap()[0].clone();
    assert_eq!(m.info.id, PkiId::from(ep(0).as_str()));
    assert_eq!(m.info.identity.as_ref(), ep(0).as_bytes());
    assert_eq!(m.info.endpoint, ep(0));
    assert!(!m.info.signed_data.is_empty() && !m.info.signature.is_empty());
    assert_eq!(
        &m.envelope_bytes,
        SignedMessage::noop(data_msg(b"info")).envelope_bytes()
    );
}

#[test]
fn respond_goes_back_on_the_same_connection() {
    let mut net = Net::new(2, cfg);
    net.subscribe_all(0);
    net.subscribe_all(1);
    net.send(0, 1, b"ping");
    net.settle();
    let m = net.nodes[1].delivered.values().next().unwrap()[0].clone();
    let now = net.now;
    net.nodes[1]
        .comm
        .respond(now, m.conn, data_msg(b"pong"))
        .unwrap();
    net.flush(1);
    net.settle();
    assert_eq!(net.delivered_data(0), vec![b"pong".to_vec()]);
    let reply = &net.nodes[0].delivered.values().next().unwrap()[0];
    assert!(
        reply.envelope.signature.is_empty(),
        "responses are noop-signed"
    );
}

/// An answer that must not wait (a membership response) is dropped and counted once the
/// requester's send buffer is full, where `respond` would queue it among the waiting sends.
#[test]
fn respond_or_drop_never_queues_beyond_the_send_buffer() {
    let mut net = window_of_one(Config::default().with_send_buffer(4));
    let m = net.nodes[1].delivered.values().next().unwrap()[0].clone();
    let (now, c) = (net.now, &mut net.nodes[1].comm);
    for k in 0..50u8 {
        c.respond_or_drop(now, m.conn, data_msg(&[k])).unwrap();
    }
    // 1 in flight + 4 buffered; the other 45 dropped, none waiting.
    assert_eq!(c.stats().dropped_overflow, 45);
    assert_eq!(c.unsent(), 5);
    c.respond(now, m.conn, data_msg(b"waits")).unwrap();
    assert_eq!(c.stats().dropped_overflow, 45);
    assert_eq!(c.unsent(), 6);
}

/// Fabric's `SendToPeer` for an answer: on the request's connection while it is open;
/// once it closed, over a connection attempt to the requester (a dial), then over the
/// requester's connection there is now; with neither a connection nor an endpoint, dropped
/// and counted without a dial. `respond_or_drop` had only the request's connection.
#[test]
fn respond_to_peer_or_drop_follows_the_requester_past_its_closed_connection() {
    let mut net = Net::connected_pair(cfg, b"x");
    net.subscribe_all(0);
    let m = net.nodes[1].delivered.values().next().unwrap()[0].clone();
    let to_0 = net.peer(0);
    let answer = |net: &mut Net, conn, peer: &RemotePeer, data: &[u8]| {
        let now = net.now;
        net.nodes[1]
            .comm
            .respond_to_peer_or_drop(now, conn, peer, data_msg(data))
    };
    assert_eq!(
        answer(&mut net, m.conn, &to_0, b"on it"),
        Ok(SendOutcome::Queued(m.conn))
    );
    net.settle();
    net.close_conn(1, 0);
    net.settle();
    assert_eq!(net.conn(1, 0), None);
    assert_eq!(
        answer(&mut net, m.conn, &to_0, b"dialled"),
        Ok(SendOutcome::Connecting)
    );
    assert!(net.nodes[1].comm.is_connecting(&to_0.pki_id));
    net.settle();
    let new = net.conn(1, 0).expect("dialled");
    assert_ne!(new, m.conn);
    assert_eq!(
        answer(&mut net, m.conn, &to_0, b"on the new one"),
        Ok(SendOutcome::Queued(new))
    );
    net.settle();
    assert_eq!(
        net.delivered_data(0),
        [
            b"on it".to_vec(),
            b"dialled".to_vec(),
            b"on the new one".to_vec()
        ]
    );
    net.close_conn(1, 0);
    net.settle();
    let nowhere = RemotePeer::new("", to_0.pki_id.clone());
    assert_eq!(
        answer(&mut net, m.conn, &nowhere, b"lost"),
        Ok(SendOutcome::Dropped)
    );
    assert_eq!(net.nodes[1].comm.stats().dropped_no_connection, 1);
    assert!(!net.nodes[1].comm.is_connecting(&to_0.pki_id));
    assert_eq!(
        answer(&mut net, StreamId::from_parts(999, 0), &to_0, b"?"),
        Err(Error::UnknownHandle)
    );
}

#[test]
fn respond_after_close_is_a_typed_error() {
    let mut net = Net::connected_pair(cfg, b"x");
    let m = net.nodes[1].delivered.values().next().unwrap()[0].clone();
    net.close_conn(1, 0);
    let now = net.now;
    assert_eq!(
        net.nodes[1].comm.respond(now, m.conn, data_msg(b"late")),
        Err(Error::ConnectionClosed)
    );
    assert_eq!(
        net.nodes[1].comm.ack(now, m.conn, 1, None),
        Err(Error::ConnectionClosed)
    );
    assert_eq!(
        net.nodes[1]
            .comm
            .respond(now, StreamId::from_parts(999, 0), data_msg(b"?")),
        Err(Error::UnknownHandle)
    );
}

fn ack_results(net: &Net, i: usize) -> Vec<Vec<SendResult>> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SendWithAckDone { results, .. } => Some(results.clone()),
            _ => None,
        })
        .collect()
}

/// Node `i` acks every DataMessage it receives, with `error` if given.
fn ack_all(net: &mut Net, i: usize, error: Option<&str>) {
    let msgs: Vec<ReceivedMessage> = net.nodes[i]
        .delivered
        .values_mut()
        .flat_map(std::mem::take)
        .collect();
    let now = net.now;
    for m in msgs {
        net.nodes[i]
            .comm
            .ack(now, m.conn, m.message.nonce, error)
            .unwrap();
    }
    net.flush(i);
}

#[test]
fn send_with_ack_collects_acks_and_intercepts_them() {
    let mut net = Net::new(3, cfg);
    net.subscribe_all(0);
    net.subscribe_all(1);
    net.subscribe_all(2);
    let op = net.send_with_ack(0, &[1, 2], b"a", 2, Duration::from_secs(5));
    net.settle();
    ack_all(&mut net, 1, None);
    ack_all(&mut net, 2, Some("no thanks"));
    net.settle();
    let done: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::SendWithAckDone { op: o, .. } if *o == op))
        .collect();
    assert_eq!(done.len(), 1);
    let results = &ack_results(&net, 0)[0];
    assert_eq!(results.len(), 2);
    assert!(results.contains(&SendResult {
        peer: PkiId::from(ep(1).as_str()),
        result: Ok(())
    }));
    assert!(results.contains(&SendResult {
        peer: PkiId::from(ep(2).as_str()),
        result: Err(AckError::Remote("no thanks".into()))
    }));
    assert!(
        net.delivered_data(0).is_empty(),
        "acks are never delivered to subscribers"
    );
}

#[test]
fn send_with_ack_signed_sends_the_encoded_message_with_a_fresh_nonce() {
    let mut net = Net::new(3, cfg);
    net.subscribe_all(1);
    net.subscribe_all(2);
    // Signed, with a nonce of its own: what goes out is noop-signed with a fresh one.
    let mut original = data_msg(b"once");
    original.nonce = 99;
    original.channel = bytes::Bytes::from_static(b"ch");
    let sec = TestOnlyHmacSecurity::new("app");
    let msg = SignedMessage::sign(original.clone(), &sec).unwrap();
    let peers = [net.peer(1), net.peer(2)];
    let now = net.now;
    for _ in 0..2 {
        net.nodes[0]
            .comm
            .send_with_ack_signed(now, &msg, Duration::from_secs(5), 2, &peers)
            .unwrap();
    }
    net.flush(0);
    net.settle();
    let mut nonces = Vec::new();
    for i in [1, 2] {
        let got: Vec<ReceivedMessage> =
            net.nodes[i].delivered.values().flatten().cloned().collect();
        assert_eq!(got.len(), 2);
        for m in got {
            assert_ne!(m.message.nonce, 99);
            assert_eq!(
                m.message,
                GossipMessage {
                    nonce: m.message.nonce,
                    ..original.clone()
                }
            );
            assert!(m.envelope.signature.is_empty(), "noop-signed");
            nonces.push(m.message.nonce);
        }
    }
    assert_eq!(nonces[0], nonces[2], "one nonce for every peer of a call");
    assert_ne!(nonces[0], nonces[1], "a fresh nonce per call");
    ack_all(&mut net, 1, None);
    ack_all(&mut net, 2, None);
    net.settle();
    let results = ack_results(&net, 0);
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r.len() == 2 && r.iter().all(|r| r.result.is_ok()))
    );
    // An empty message is refused, as by `send_with_ack`.
    let empty = SignedMessage::noop(GossipMessage::default());
    assert!(matches!(
        net.nodes[0]
            .comm
            .send_with_ack_signed(now, &empty, Duration::from_secs(5), 1, &peers),
        Err(Error::EmptyMessage)
    ));
}

#[test]
fn send_with_ack_returns_once_min_ack_reached() {
    // 0 is taken as 1 (documented on `Comm::send_with_ack`): the same run either way.
    for min_ack in [1, 0] {
        min_ack_reached(min_ack);
    }
}

fn min_ack_reached(min_ack: usize) {
    let mut net = Net::new(3, cfg);
    net.subscribe_all(1);
    net.subscribe_all(2);
    net.send_with_ack(0, &[1, 2], b"a", min_ack, Duration::from_secs(5));
    net.settle();
    // Nothing acked yet: not done, whatever `min_ack` says.
    assert_eq!(
        ack_results(&net, 0),
        Vec::<Vec<SendResult>>::new(),
        "min_ack {min_ack}"
    );
    ack_all(&mut net, 1, None);
    net.settle();
    let results = ack_results(&net, 0);
    assert_eq!(
        results,
        vec![vec![SendResult {
            peer: PkiId::from(ep(1).as_str()),
            result: Ok(())
        }]]
    );
    // A late ack for the finished operation is counted, not delivered.
    ack_all(&mut net, 2, None);
    net.settle();
    assert_eq!(net.nodes[0].comm.stats().acks_unmatched, 1);
}

#[test]
fn send_with_ack_times_out() {
    let mut net = Net::new(2, cfg);
    net.subscribe_all(1);
    net.send_with_ack(0, &[1], b"a", 1, Duration::from_secs(1));
    net.advance(Duration::from_secs(2));
    assert_eq!(
        ack_results(&net, 0),
        vec![vec![SendResult {
            peer: PkiId::from(ep(1).as_str()),
            result: Err(AckError::Timeout)
        }]]
    );
}

#[test]
fn send_with_ack_to_an_unreachable_peer_fails_fast() {
    let mut net = Net::new(2, cfg);
    net.refuse_dials.insert(1);
    net.send_with_ack(0, &[1], b"a", 1, Duration::from_secs(60));
    // The dial is refused and retried until the dial timeout (3 s), then the ack fails.
    net.advance(Duration::from_secs(3));
    let r = ack_results(&net, 0);
    assert!(
        matches!(r[0][0].result, Err(AckError::NoConnection(_))),
        "{r:?}"
    );
    assert!(
        net.now < Instant::from_unix_secs(1_700_000_010),
        "did not wait for the 60 s time-out"
    );
}

#[test]
fn many_parallel_send_with_ack_each_way() {
    let mut net = Net::new(2, |_| Config::default().with_send_buffer(200));
    net.subscribe_all(0);
    net.subscribe_all(1);
    for k in 0..1000u32 {
        for (from, to) in [(0, 1), (1, 0)] {
            net.send_with_ack(from, &[to], &k.to_be_bytes(), 1, Duration::from_secs(10));
        }
    }
    for _ in 0..50 {
        net.settle();
        ack_all(&mut net, 0, None);
        ack_all(&mut net, 1, None);
    }
    net.settle();
    for i in 0..2 {
        let r = ack_results(&net, i);
        assert_eq!(r.len(), 1000, "node {i}");
        assert!(r.iter().all(|v| v.len() == 1 && v[0].result.is_ok()));
    }
}

#[test]
fn probe_succeeds_and_fails_by_conn_timeout_when_ping_hangs() {
    let mut net = Net::new(3, cfg);
    net.hang_pings.insert(2);
    let now = net.now;
    let ok = net.nodes[0].comm.probe(now, &peer(1)).unwrap();
    let hung = net.nodes[0].comm.probe(now, &peer(2)).unwrap();
    net.flush(0);
    net.settle();
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::ProbeDone { op, result: Ok(()) } if *op == ok))
    );
    assert!(
        !net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::ProbeDone { op, .. } if *op == hung)),
        "hung ping pending"
    );
    net.advance(Duration::from_secs(3));
    let results: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ProbeDone { op, result } => Some((*op, result.clone(), net.now)),
            _ => None,
        })
        .collect();
    assert!(results.iter().any(|(op, r, _)| *op == ok && r.is_ok()));
    assert!(
        results
            .iter()
            .any(|(op, r, _)| *op == hung && matches!(r, Err(ProbeError::Ping(_))))
    );
    assert!(
        net.nodes[0].comm.connections().is_empty(),
        "probe registers nothing"
    );
    assert!(net.nodes[1].comm.connections().is_empty());
    assert_eq!(
        net.nodes[0].comm.live_counts(),
        LiveCounts::default(),
        "no leftovers"
    );
}

#[test]
fn handshake_op_authenticates_and_registers_nothing() {
    let mut net = Net::new(2, cfg);
    let now = net.now;
    let op = net.nodes[0].comm.handshake(now, &peer(1)).unwrap();
    let wrong = net.nodes[0]
        .comm
        .handshake(now, &RemotePeer::new(ep(1), "someone-else"))
        .unwrap();
    net.flush(0);
    net.settle();
    let mut seen = 0;
    for e in &net.nodes[0].events {
        if let Event::HandshakeDone { op: o, result } = e {
            seen += 1;
            if *o == op {
                assert_eq!(result.as_ref().unwrap().identity.as_ref(), ep(1).as_bytes());
            } else {
                assert_eq!(*o, wrong);
                assert!(matches!(result, Err(HandshakeError::PkiIdMismatch { .. })));
            }
        }
    }
    assert_eq!(seen, 2);
    assert!(net.nodes[0].comm.connections().is_empty());
    assert!(
        net.nodes[1].comm.connections().is_empty(),
        "the remote saw a probe"
    );
    assert_eq!(net.nodes[1].comm.stats().probed, 2);
}

/// Node 1 restarts with a new identity (of Org1, or of `org_of_new`) at the same
/// endpoint, and node 0 sends to it by the PKI-ID it knew. Node 0 knew that PKI-ID from a
/// first exchange (`handshook`), or only from the identity a layer shared with it
/// (`Comm::learn_identity`, as membership does for members it never connected to).
/// Returns whether node 0 reported the switch and whether it refused the peer.
fn restart_node_1_with_a_new_identity(
    org_of_new: &'static str,
    handshook: bool,
) -> (Net, bool, bool) {
    let mk = move |i: usize| -> Box<dyn Security> {
        Box::new(
            TestOnlyHmacSecurity::new(ep(i))
                .with_organization(ep(0), "Org1")
                .with_organization(ep(1), "Org1")
                .with_organization("new-identity-of-1", org_of_new),
        )
    };
    let mut net = Net::with_security(2, cfg, mk);
    let old = PkiId::from(ep(1).as_str());
    if handshook {
        net.subscribe_all(1);
        net.send(0, 1, b"x");
        net.settle();
        net.crash(1);
        net.settle();
    } else {
        let now = net.now;
        let learnt = net.nodes[0]
            .comm
            .learn_identity(now, &old, ep(1).as_bytes());
        assert_eq!(learnt, Ok(true));
        assert_eq!(net.nodes[0].comm.stats().identities_shared, 1);
        assert_eq!(
            net.nodes[0].comm.learn_identity(now, &old, b"other"),
            Ok(false)
        );
        assert_eq!(
            net.nodes[0].comm.identity_of(&old).unwrap(),
            ep(1).as_bytes()
        );
    }
    let new_sec = TestOnlyHmacSecurity::new("new-identity-of-1")
        .with_organization(ep(0), "Org1")
        .with_organization("new-identity-of-1", org_of_new);
    net.restart(1, Box::new(new_sec), Config::default());
    net.subscribe_all(1);
    net.send(0, 1, b"y");
    net.settle();
    let switched = net.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, Event::IdentitySwitch(p) if p.old == old));
    let refused = net.nodes[0].events.iter().any(|e| {
        matches!(
            e,
            Event::HandshakeFailed {
                error: HandshakeError::UnexpectedPeer { .. },
                ..
            }
        )
    });
    (net, switched, refused)
}

#[test]
fn identity_switch_same_org_is_reported_other_org_refused() {
    for handshook in [true, false] {
        let (net, switched, refused) = restart_node_1_with_a_new_identity("Org1", handshook);
        assert!(switched && !refused, "handshook before: {handshook}");
        assert_eq!(net.delivered_data(1), vec![b"y".to_vec()]);
        assert!(
            net.nodes[0]
                .comm
                .connection(&PkiId::from("new-identity-of-1"))
                .is_some()
        );
        let (net, switched, refused) = restart_node_1_with_a_new_identity("Org2", handshook);
        assert!(refused && !switched, "handshook before: {handshook}");
        assert!(net.delivered_data(1).is_empty());
    }
}

/// Without the old identity comm cannot tell a renewed certificate from an impostor: a
/// peer known by PKI-ID alone (no handshake, nothing shared) is refused even in our
/// organization. The case `learn_identity` exists for.
#[test]
fn a_new_identity_under_a_pki_id_comm_never_held_is_refused() {
    let mk = |i: usize| -> Box<dyn Security> {
        Box::new(
            TestOnlyHmacSecurity::new(if i == 1 {
                "new-identity-of-1".to_owned()
            } else {
                ep(i)
            })
            .with_organization(ep(0), "Org1")
            .with_organization(ep(1), "Org1")
            .with_organization("new-identity-of-1", "Org1"),
        )
    };
    let mut net = Net::with_security(2, cfg, mk);
    net.subscribe_all(1);
    net.send_expecting(0, 1, &PkiId::from(ep(1).as_str()), b"y");
    net.settle();
    assert!(net.delivered_data(1).is_empty());
    assert_eq!(net.nodes[0].comm.stats().identity_switches, 0);
    assert_eq!(
        net.nodes[0]
            .comm
            .stats()
            .handshake_failures_for("unexpected_peer"),
        1
    );
}

#[test]
fn learn_identity_refuses_what_a_handshake_would() {
    let mut net = Net::new(1, cfg);
    let now = net.now;
    let comm = &mut net.nodes[0].comm;
    let limit = Config::default().max_identity_size;
    let cases: [(&[u8], Vec<u8>, HandshakeError); 4] = [
        (b"", b"x".to_vec(), HandshakeError::NoPkiId),
        (b"x", Vec::new(), HandshakeError::NoIdentity),
        (b"x", b"y".to_vec(), HandshakeError::IdentityMismatch),
        (
            b"x",
            vec![b'x'; limit + 1],
            HandshakeError::IdentityTooLarge {
                size: limit + 1,
                limit,
            },
        ),
    ];
    for (pki, identity, want) in cases {
        let got = comm.learn_identity(now, &PkiId::from(pki), &identity);
        assert_eq!(got, Err(want));
    }
    assert_eq!(comm.stats().identities_shared, 0);
    assert_eq!(comm.identity_count(), 1, "only its own");
}

#[test]
fn stop_closes_everything_and_refuses_work() {
    let mut net = Net::connected_pair(cfg, b"x");
    let now = net.now;
    net.nodes[1].comm.stop(now);
    net.nodes[1].comm.stop(now); // idempotent
    net.flush(1);
    let stopped = net.nodes[1]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Stopped))
        .count();
    assert_eq!(stopped, 1);
    assert!(net.nodes[1].comm.connections().is_empty());
    assert_eq!(net.nodes[1].comm.live_counts(), LiveCounts::default());
    let m = SignedMessage::noop(data_msg(b"late"));
    assert_eq!(
        net.nodes[1].comm.send(now, &m, &[peer(0)]),
        Err(Error::Stopped)
    );
    assert_eq!(net.nodes[1].comm.probe(now, &peer(0)), Err(Error::Stopped));
    assert!(net.nodes[1].comm.subscribe(Box::new(|_| true)).is_err());
    assert_eq!(net.nodes[1].comm.poll_action(), None);
    net.settle();
    assert!(
        net.nodes[0].comm.connections().is_empty(),
        "the remote saw the close"
    );
}

#[test]
fn nothing_is_delivered_after_stop() {
    let mut net = Net::new(2, cfg);
    let sub = net.subscribe_all(1);
    net.nodes[1].slow_reader = true;
    for k in 0..5u8 {
        net.send(0, 1, &[k]);
    }
    net.settle();
    assert_eq!(net.nodes[1].comm.delivery_queue_len(sub), 5);
    let now = net.now;
    net.nodes[1].comm.stop(now);
    assert!(net.nodes[1].comm.poll_delivery(sub).is_none());
    assert_eq!(net.nodes[1].comm.stats().dropped_on_stop, 5);
}

#[test]
fn slow_subscriber_pauses_reading_and_loses_nothing() {
    let mut net = Net::new(2, |_| {
        Config::default()
            .with_subscription_buffer(3)
            .with_send_buffer(100)
    });
    let sub = net.subscribe_all(1);
    net.nodes[1].slow_reader = true;
    for k in 0..20u8 {
        net.send(0, 1, &[k]);
    }
    net.settle();
    assert_eq!(
        net.nodes[1].comm.delivery_queue_len(sub),
        3,
        "reading paused at the buffer size"
    );
    assert!(net.nodes[1].comm.stats().read_pauses >= 1);
    net.nodes[1].slow_reader = false;
    net.drain_deliveries(1);
    net.settle();
    net.drain_deliveries(1);
    assert_eq!(
        net.delivered_data(1),
        (0..20u8).map(|k| vec![k]).collect::<Vec<_>>()
    );
    assert_eq!(net.nodes[1].comm.stats().dropped_subscription_overflow, 0);
}

#[test]
fn bad_envelope_after_handshake_ends_the_connection() {
    let mut net = Net::connected_pair(cfg, b"x");
    let s = net.conn(1, 0).unwrap();
    let now = net.now;
    net.nodes[1]
        .comm
        .handle_envelope(now, s, bytes::Bytes::from_static(&[0x0a, 0xff]))
        .unwrap();
    net.flush(1);
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: CloseReason::Malformed(_),
            ..
        }
    )));
    assert_eq!(net.nodes[1].comm.stats().malformed, 1);
    assert!(net.nodes[1].comm.connections().is_empty());
}

#[test]
fn concurrent_close_and_send_lose_nothing_silently() {
    let mut net = Net::connected_pair(|_| Config::default().with_send_buffer(100), b"warm");
    let now = net.now;
    for k in 0..10u8 {
        net.nodes[0]
            .comm
            .send(now, &SignedMessage::noop(data_msg(&[k])), &[peer(1)])
            .unwrap();
        if k == 5 {
            net.close_conn(0, 1);
        }
    }
    net.flush(0);
    net.settle();
    let st = net.nodes[0].comm.stats();
    let delivered = net.delivered_data(1).len() as u64;
    // Every message is delivered or counted as dropped.
    assert_eq!(
        delivered - 1 + st.dropped_on_close + st.dropped_overflow,
        10,
        "{st:?}"
    );
    assert_eq!(
        net.nodes[0].comm.connections().len(),
        1,
        "sends after close reconnect"
    );
}

#[test]
fn writes_handed_out_and_unconfirmed_at_close_are_counted() {
    // Three messages go out inside the write window; the driver never confirms them, and
    // the stream ends. They are in no queue any more, and maybe not at the peer: counted
    // apart from what was still queued.
    let mut net = Net::connected_pair(|_| Config::default().with_send_buffer(100), b"warm");
    let s = net.conn(0, 1).unwrap();
    let now = net.now;
    for k in 0..3u8 {
        net.nodes[0]
            .comm
            .send(now, &SignedMessage::noop(data_msg(&[k])), &[peer(1)])
            .unwrap();
    }
    let mut handed = 0;
    loop {
        match net.nodes[0].comm.poll_output() {
            Output::Action(Action::Write {
                kind: WriteKind::Message,
                ..
            }) => handed += 1,
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(handed, 3);
    net.nodes[0]
        .comm
        .handle_stream_closed(now, s, StreamEnd::Finished)
        .unwrap();
    let st = net.nodes[0].comm.stats();
    assert_eq!(st.unconfirmed_on_close, 3, "{st:?}");
    assert_eq!(st.dropped_on_close, 0, "{st:?}");
    assert_eq!(
        st.counters()
            .into_iter()
            .find(|(n, _)| *n == "unconfirmed_on_close"),
        Some(("unconfirmed_on_close", 3))
    );
}

#[test]
fn an_ack_that_must_not_wait_is_dropped_and_counted_when_the_buffer_is_full() {
    // Node 1 answers node 0 without its writes being confirmed: the write window (8) and
    // the send buffer (1) fill, and the next ack is dropped, counted, not queued to wait.
    let mut net = Net::connected_pair(|_| Config::default().with_send_buffer(1), b"warm");
    let s = net.conn(1, 0).unwrap();
    let now = net.now;
    let c = &mut net.nodes[1].comm;
    let before = c.stats().dropped_overflow;
    let queued: Vec<bool> = (1..=10u64)
        .map(|nonce| c.ack_or_drop(now, s, nonce, None).unwrap())
        .collect();
    assert_eq!(queued.iter().filter(|q| **q).count(), 9, "{queued:?}");
    assert!(!queued[9]);
    assert_eq!(c.stats().dropped_overflow, before + 1);
    // The ack that waits takes a place in the wait queue instead, and drops nothing.
    c.ack(now, s, 11, None).unwrap();
    assert_eq!(c.stats().dropped_overflow, before + 1);
}

/// A message to the node's own PKI-ID is dialled like any other, and both ends of the
/// connection, the node itself, refuse it (`OwnPkiId`): the message is dropped and counted,
/// and `PresumedDead` names the node itself (an outside embedder found `send_wait` to its
/// own `as_peer()` answer `Ok`; it queued the message, as documented, for this end).
#[test]
fn a_send_to_itself_is_refused_by_its_own_handshake() {
    let mut net = Net::new(1, cfg);
    net.send(0, 0, b"x");
    net.settle();
    let me = PkiId::from(ep(0).as_str());
    let refused = events_of(&net, 0)
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::HandshakeFailed {
                    error: HandshakeError::OwnPkiId,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        refused,
        2,
        "as dialler and as server: {:?}",
        events_of(&net, 0)
    );
    assert!(
        events_of(&net, 0).iter().any(|e| matches!(e,
            Event::PresumedDead(p) if p.pki_id == me
                && matches!(p.cause, DeadCause::Connect(HandshakeError::OwnPkiId)))),
        "{:?}",
        events_of(&net, 0)
    );
    let st = net.nodes[0].comm.stats();
    assert_eq!((st.dropped_no_connection, st.received), (1, 0));
}

// ------------------------------------------------------------ the identity usage purge

const HOUR: Duration = Duration::from_secs(3600);

/// Node `i`'s view of node `j`'s identity.
fn holds(net: &Net, i: usize, j: usize) -> bool {
    net.nodes[i]
        .comm
        .identity_of(&PkiId::from(ep(j).as_str()))
        .is_some()
}

fn purged_unused(net: &Net, i: usize, j: usize) -> bool {
    let who = PkiId::from(ep(j).as_str());
    events_of(net, i).iter().any(|e| {
        matches!(e, Event::IdentityPurged { pki_id, reason: CloseReason::IdentityUnused }
            if *pki_id == who)
    })
}

/// Fabric's identity mapper purges an identity nothing used for its usage threshold (one
/// hour), looking every tenth of it, and its `onPurge` closes the connection to that
/// peer. Two nodes that handshook and then stayed idle: both still hold each other's
/// identity at 65 minutes (the sweep at 60 finds it exactly an hour unused, which Fabric
/// keeps), both purge it at the sweep of 66, close the connection with
/// `IdentityUnused`, report it and count it. A later send handshakes anew.
#[test]
fn an_identity_unused_for_the_threshold_is_purged_and_its_connection_closed() {
    let mut net = Net::connected_pair(cfg, b"hello");
    assert!(holds(&net, 0, 1) && holds(&net, 1, 0));
    net.advance(HOUR + Duration::from_secs(5 * 60));
    assert!(holds(&net, 0, 1) && holds(&net, 1, 0));
    assert!(net.conn(0, 1).is_some());
    net.advance(Duration::from_secs(2 * 60));
    net.settle();
    for (i, j) in [(0, 1), (1, 0)] {
        assert!(!holds(&net, i, j), "n{i} still holds n{j}'s identity");
        assert!(
            net.conn(i, j).is_none(),
            "n{i}'s connection to n{j} is open"
        );
        assert_eq!(net.nodes[i].comm.stats().identities_purged_unused, 1);
        assert_eq!(net.nodes[i].comm.identity_count(), 1, "its own is kept");
        assert!(purged_unused(&net, i, j), "{:?}", events_of(&net, i));
        assert!(events_of(&net, i).iter().any(|e| matches!(
            e,
            Event::Disconnected {
                reason: CloseReason::IdentityUnused,
                ..
            } | Event::Disconnected {
                reason: CloseReason::RemoteClosed,
                ..
            }
        )));
    }
    // With nothing else held, the sweep stops: no deadline is left.
    assert_eq!(net.nodes[0].comm.poll_timeout(), None);
    net.send(0, 1, b"again");
    net.settle();
    assert!(holds(&net, 0, 1) && net.conn(0, 1).is_some());
    assert!(
        net.nodes[0].comm.poll_timeout().is_some(),
        "the sweep again"
    );
}

/// A use (`Comm::use_identity`, Fabric's mapper `Get`, which a layer calls when it
/// verifies a message of the peer) keeps the identity and the connection: two nodes
/// that use each other's identity every ten minutes stay connected for five hours.
#[test]
fn an_identity_in_use_is_kept_for_hours() {
    let mut net = Net::connected_pair(cfg, b"hello");
    let conn = net.conn(0, 1);
    for _ in 0..30 {
        net.advance(Duration::from_secs(10 * 60));
        let now = net.now;
        for (i, j) in [(0, 1), (1, 0)] {
            let who = PkiId::from(ep(j).as_str());
            assert!(net.nodes[i].comm.use_identity(now, &who).is_some());
        }
    }
    assert_eq!(net.conn(0, 1), conn);
    assert!(holds(&net, 0, 1) && holds(&net, 1, 0));
    assert_eq!(net.nodes[0].comm.stats().identities_purged_unused, 0);
    assert_eq!(net.nodes[1].comm.stats().identities_purged_unused, 0);
}

/// A handshake is a use (Fabric verifies the `ConnEstablish` through its mapper): a
/// reconnection at 50 minutes starts the hour again, on both sides.
#[test]
fn a_new_handshake_starts_the_threshold_again() {
    let mut net = Net::connected_pair(cfg, b"hello");
    net.advance(Duration::from_secs(50 * 60));
    net.close_conn(0, 1);
    net.flush(0);
    net.settle();
    assert!(net.conn(0, 1).is_none());
    net.send(0, 1, b"again");
    net.settle();
    assert!(net.conn(0, 1).is_some());
    // 80 minutes after the first handshake, 30 after the second.
    net.advance(Duration::from_secs(30 * 60));
    assert!(holds(&net, 0, 1) && holds(&net, 1, 0));
    assert!(net.conn(0, 1).is_some());
    net.advance(Duration::from_secs(40 * 60));
    assert!(!holds(&net, 0, 1) && !holds(&net, 1, 0));
}

/// `identity_usage_threshold: None` keeps every identity however long unused, with no
/// sweep deadline, as before the purge.
#[test]
fn no_usage_threshold_no_purge() {
    let off = |_: usize| Config::default().with_identity_usage_threshold(None);
    let mut net = Net::connected_pair(off, b"hello");
    assert_eq!(net.nodes[0].comm.poll_timeout(), None);
    net.advance(10 * HOUR);
    assert!(holds(&net, 0, 1) && holds(&net, 1, 0));
    assert!(net.conn(0, 1).is_some());
}
