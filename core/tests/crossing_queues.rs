//! Regressions around crossing dials, found by the scenario suite over the tonic transport,
//! where the real network's timing lets a remote's stream register while our own dial is
//! still pending, and the loser's buffer fill before the crossing resolves:
//! * merging queues into the winner must not drop blocking sends from a send buffer;
//! * messages queued for our attempt must leave before messages sent after the remote's
//!   stream registered (one FIFO per peer).

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::*;
use std::time::Duration;

const A: &str = "127.0.0.1:7051"; // the lower PKI-ID: its own dial wins the crossing
const B: &str = "127.0.0.1:7052";

fn msg(seq: u64) -> GossipMessage {
    data_message(seq, Bytes::from_static(b"x"))
}

fn core(ep: &str, now: Instant) -> Comm<TestOnlyHmacSecurity> {
    let cfg = Config::default()
        .with_send_buffer(4)
        .with_write_window(2)
        .with_seed(7);
    Comm::new(cfg, TestOnlyHmacSecurity::new(ep), now).unwrap()
}

/// Drains actions, returning the Envelopes written per stream (in order), and the dials.
fn drain(c: &mut Comm<TestOnlyHmacSecurity>) -> (Vec<(StreamId, Bytes)>, Vec<Action>) {
    let mut writes = Vec::new();
    let mut other = Vec::new();
    while let Some(a) = c.poll_action() {
        match a {
            Action::Write {
                stream, envelope, ..
            } => writes.push((stream, envelope)),
            a => other.push(a),
        }
    }
    while c.poll_event().is_some() {}
    (writes, other)
}

fn seq_of(env: &Bytes) -> Option<u64> {
    let m = SignedMessage::from_envelope_bytes(env.clone()).ok()?;
    data_payload(m.message()).map(|(seq, _)| seq)
}

#[test]
fn crossing_keeps_blocking_sends_from_the_losers_buffer_and_the_attempt() {
    let now = Instant::from_unix_secs(1_700_000_000);
    let mut a = core(A, now);
    let peer_b = RemotePeer::new(B, B);

    // B's ConnEstablish, as B writes it on a stream it opened (no TLS: the same bytes
    // serve both roles).
    let mut b = core(B, now);
    b.send(now, &SignedMessage::noop(msg(0)), &[RemotePeer::new(A, A)])
        .unwrap();
    let (_, acts) = drain(&mut b);
    let Some(Action::Dial { dial: bd, .. }) = acts.first().cloned() else {
        panic!("B dials")
    };
    b.handle_dial_result(now, bd, Ok(None)).unwrap();
    drain(&mut b);
    b.handle_ping_result(now, bd, Ok(())).unwrap();
    let (writes, _) = drain(&mut b);
    let ce_b = writes[0].1.clone();

    // 1. A starts dialling B with six blocking sends queued in its attempt.
    let timeout = Duration::from_secs(10);
    for seq in 1..=6 {
        a.send_with_ack(now, msg(seq), timeout, 1, std::slice::from_ref(&peer_b))
            .unwrap();
    }
    let (_, acts) = drain(&mut a);
    let Some(Action::Dial { dial: ad, .. }) = acts.first().cloned() else {
        panic!("A dials")
    };

    // 2. Meanwhile B's own stream reaches A and authenticates: A registers it.
    let s0 = a.accept_stream(now, "127.0.0.1:40000", None).unwrap();
    a.handle_envelope(now, s0, ce_b.clone()).unwrap();
    assert_eq!(a.connection(&PkiId::from(B)), Some(s0));
    let (mut written, _) = drain(&mut a);

    // The attempt's messages moved onto it at once, ahead of anything sent later.
    // 3. Six more blocking sends go to that stream; none is confirmed written, so they
    //    wait behind a full send buffer (two in flight, four buffered, six waiting).
    for seq in 7..=12 {
        a.send_with_ack(now, msg(seq), timeout, 1, std::slice::from_ref(&peer_b))
            .unwrap();
    }
    let (w, _) = drain(&mut a);
    written.extend(w);
    assert_eq!(
        a.send_queue_len(s0)
            .map(|q| (q.buffered, q.waiting, q.in_flight)),
        Some((4, 6, 2))
    );

    // 4. A's own dial completes and authenticates B: a crossing, which A's stream wins.
    a.handle_dial_result(now, ad, Ok(None)).unwrap();
    drain(&mut a);
    a.handle_ping_result(now, ad, Ok(())).unwrap();
    let (w, acts) = drain(&mut a);
    written.extend(w);
    let Some(Action::OpenStream { stream: s1, .. }) = acts.first().cloned() else {
        panic!("A opens its stream")
    };
    a.handle_envelope(now, s1, ce_b).unwrap();
    assert_eq!(a.connection(&PkiId::from(B)), Some(s1));
    assert_eq!(a.stats().crossings, 1);
    let (w, _) = drain(&mut a);
    written.extend(w);

    // Nothing may be dropped, and every message is eventually written exactly once.
    assert_eq!(a.stats().dropped_overflow, 0);
    for _ in 0..20 {
        for s in [s0, s1] {
            if let Some(SendQueueLen { in_flight, .. }) = a.send_queue_len(s) {
                a.handle_sent(now, s, in_flight).unwrap();
            }
        }
        let (w, _) = drain(&mut a);
        written.extend(w);
    }
    // Every message left exactly once, in the order it was sent: the first two on the
    // loser before the crossing, the rest on the winner.
    let seqs: Vec<u64> = written.iter().filter_map(|(_, e)| seq_of(e)).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let on_winner: Vec<u64> = written
        .iter()
        .filter(|(s, _)| *s == s1)
        .filter_map(|(_, e)| seq_of(e))
        .collect();
    assert_eq!(on_winner, (3..=12).collect::<Vec<_>>());
}
