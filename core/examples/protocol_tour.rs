//! Two cores wired in memory: they handshake, exchange messages, ack one, and stop.
//! Every action and event is printed, so this is also a readable tour of the protocol.
//!
//! Run with `cargo run -p fabric-gossip-core --example protocol_tour`.

#![allow(clippy::needless_range_loop)] // nodes are addressed by index on both sides of each wire

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::testing::fmt_action;
use fabric_gossip_core::*;
use std::collections::VecDeque;
use std::time::Duration;

/// One node of the example: its core, its subscription, and the stream peer table.
struct Node {
    name: &'static str,
    comm: Comm<TestOnlyHmacSecurity>,
    sub: SubscriptionId,
}

fn data(seq: u64, text: &str) -> GossipMessage {
    data_message(seq, Bytes::copy_from_slice(text.as_bytes()))
}

fn main() {
    let mut now = Instant::from_unix_secs(1_700_000_000);
    let mk = |name, ep: &str| {
        let mut comm = Comm::new(Config::default(), TestOnlyHmacSecurity::new(ep), now).unwrap();
        let sub = comm.subscribe(Box::new(|_| true)).unwrap();
        Node { name, comm, sub }
    };
    let mut nodes = [mk("A", "127.0.0.1:7051"), mk("B", "127.0.0.1:7052")];
    // Which stream of the other node each stream is wired to, once the remote accepted it.
    let mut wires: Vec<((usize, StreamId), (usize, StreamId))> = Vec::new();
    let mut in_flight: VecDeque<(usize, StreamId, Bytes)> = VecDeque::new();

    let b = RemotePeer::new("127.0.0.1:7052", "127.0.0.1:7052");
    let a = RemotePeer::new("127.0.0.1:7051", "127.0.0.1:7051");
    println!("A sends two messages to B (no connection yet: A dials)");
    for (seq, text) in [(1, "hello"), (2, "world")] {
        let m = SignedMessage::noop(data(seq, text));
        nodes[0]
            .comm
            .send(now, &m, std::slice::from_ref(&b))
            .unwrap();
    }
    println!("B asks A for an ack");
    let op = nodes[1]
        .comm
        .send_with_ack(now, data(3, "ack me"), Duration::from_secs(1), 1, &[a])
        .unwrap();

    for _round in 0..20 {
        now = now + Duration::from_millis(1);
        for i in 0..2 {
            // One drain per node: actions and events in the core's order, until the
            // time-out says nothing else is pending.
            loop {
                let action = match nodes[i].comm.poll_output() {
                    Output::Action(action) => action,
                    Output::Event(event) => {
                        match &event {
                            Event::SendWithAckDone { op: done, results } if *done == op => {
                                println!(
                                    "  {} event: SendWithAck finished: {results:?}",
                                    nodes[i].name
                                );
                            }
                            other => println!("  {} event: {}", nodes[i].name, short_event(other)),
                        }
                        continue;
                    }
                    Output::Timeout(_) => break,
                };
                println!("  {} action: {}", nodes[i].name, fmt_action(&action));
                match action {
                    Action::Dial { dial, .. } => nodes[i]
                        .comm
                        .handle_dial_result(now, dial, Ok(None))
                        .unwrap(),
                    Action::Ping { dial } => {
                        nodes[i].comm.handle_ping_result(now, dial, Ok(())).unwrap()
                    }
                    Action::OpenStream { stream, .. } => {
                        let j = 1 - i;
                        let remote = nodes[j]
                            .comm
                            .accept_stream(now, nodes[i].comm.pki_id().to_string().as_str(), None)
                            .unwrap();
                        wires.push(((i, stream), (j, remote)));
                        wires.push(((j, remote), (i, stream)));
                    }
                    Action::Write {
                        stream,
                        envelope,
                        kind,
                    } => {
                        if let Some((_, (j, remote))) =
                            wires.iter().find(|(from, _)| *from == (i, stream))
                        {
                            in_flight.push_back((*j, *remote, envelope));
                        }
                        // The handshake is outside the write window: only messages are
                        // confirmed.
                        if kind == WriteKind::Message {
                            nodes[i].comm.handle_sent(now, stream, 1).unwrap();
                        }
                    }
                    _ => {}
                }
            }
            // Deliveries; what taking them queues (acks, ResumeRead) comes out of the
            // next drain.
            let sub = nodes[i].sub;
            while let Some(m) = nodes[i].comm.poll_delivery(sub) {
                let text = match data_payload(&m.message) {
                    Some((_, data)) => String::from_utf8_lossy(data).into_owned(),
                    None => m.message.content_name().to_string(),
                };
                println!(
                    "  {} received {text:?} from {} (nonce {})",
                    nodes[i].name,
                    m.sender(),
                    m.message.nonce
                );
                if m.message.nonce != 0 {
                    nodes[i]
                        .comm
                        .ack(now, m.conn, m.message.nonce, None)
                        .unwrap();
                }
            }
        }
        while let Some((j, stream, env)) = in_flight.pop_front() {
            let _ = nodes[j].comm.handle_envelope(now, stream, env);
        }
    }
    for n in &mut nodes {
        n.comm.stop(now);
        let s = n.comm.stats();
        println!(
            "{}: sent {} received {} handshakes ok {} dropped {}",
            n.name, s.sent, s.received, s.handshakes_ok, s.dropped_overflow
        );
    }
}

fn short_event(e: &Event) -> String {
    match e {
        Event::Connected {
            conn,
            info,
            inbound,
        } => format!("Connected to {} on {conn} (inbound: {inbound})", info.id),
        other => format!("{other:?}"),
    }
}
