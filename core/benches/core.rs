//! The core alone, no I/O: how many messages per second one core moves
//! from Envelope bytes in to delivery out, and from `send` to `Action::Write` out,
//! on an established connection with 1 KiB DataMessages.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::proto::gossip::{DataMessage, GossipMessage, Payload, gossip_message};
use fabric_gossip_core::*;
use std::hint::black_box;

const BATCH: usize = 1024;

fn data_msg(seq: u64) -> GossipMessage {
    GossipMessage {
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::DataMsg(DataMessage {
            payload: Some(Payload {
                seq_num: seq,
                data: Bytes::from(vec![0xab; 1024]),
                private_data: vec![],
            }),
        })),
        ..Default::default()
    }
}

/// Two cores connected back to back; returns (a, b, a's stream, b's stream).
fn connected(
    config: Config,
) -> (
    Comm<TestOnlyHmacSecurity>,
    Comm<TestOnlyHmacSecurity>,
    StreamId,
    StreamId,
) {
    let now = Instant::from_unix_secs(1_700_000_000);
    let mut a = Comm::new(
        config.clone(),
        TestOnlyHmacSecurity::new("127.0.0.1:7051"),
        now,
    )
    .unwrap();
    let mut b = Comm::new(config, TestOnlyHmacSecurity::new("127.0.0.1:7052"), now).unwrap();
    let peer = RemotePeer::new("127.0.0.1:7052", "127.0.0.1:7052");
    a.send(now, &SignedMessage::noop(data_msg(0)), &[peer])
        .unwrap();
    let (mut sa, mut sb) = (None, None);
    let mut to_b = Vec::new();
    let mut to_a = Vec::new();
    for _ in 0..8 {
        while let Some(act) = a.poll_action() {
            match act {
                Action::Dial { dial, .. } => a.handle_dial_result(now, dial, Ok(None)).unwrap(),
                Action::Ping { dial } => a.handle_ping_result(now, dial, Ok(())).unwrap(),
                Action::OpenStream { stream, .. } => {
                    sa = Some(stream);
                    sb = Some(b.accept_stream(now, "127.0.0.1:7051", None).unwrap());
                }
                Action::Write { stream, envelope } => {
                    to_b.push(envelope);
                    a.handle_sent(now, stream, 1).unwrap();
                }
                _ => {}
            }
        }
        while let Some(act) = b.poll_action() {
            if let Action::Write { stream, envelope } = act {
                to_a.push(envelope);
                b.handle_sent(now, stream, 1).unwrap();
            }
        }
        for e in to_b.drain(..) {
            b.handle_envelope(now, sb.unwrap(), e).unwrap();
        }
        for e in to_a.drain(..) {
            a.handle_envelope(now, sa.unwrap(), e).unwrap();
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
    }
    (a, b, sa.unwrap(), sb.unwrap())
}

fn bench(c: &mut Criterion) {
    let now = Instant::from_unix_secs(1_700_000_000);
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Receive path: Envelope bytes in -> decoded, routed, polled delivery out.
    {
        let (_a, mut b, _sa, sb) = connected(Config::default().with_subscription_buffer(BATCH * 2));
        let sub = b.subscribe(Box::new(|_| true)).unwrap();
        let envs: Vec<Bytes> = (0..BATCH as u64)
            .map(|i| SignedMessage::noop(data_msg(i)).envelope_bytes().clone())
            .collect();
        g.bench_function("recv_1KiB_envelope_to_delivery", |bch| {
            bch.iter(|| {
                for e in &envs {
                    b.handle_envelope(now, sb, e.clone()).unwrap();
                }
                while let Some(m) = b.poll_delivery(sub) {
                    black_box(m);
                }
                while b.poll_event().is_some() {}
                while b.poll_action().is_some() {}
            })
        });
    }

    // Send path: send() -> Action::Write out (write confirmed at once).
    {
        let (mut a, _b, sa, _sb) = connected(Config::default().with_write_window(BATCH * 2));
        let peer = [RemotePeer::new("127.0.0.1:7052", "127.0.0.1:7052")];
        let msg = SignedMessage::noop(data_msg(1));
        g.bench_function("send_1KiB_to_write_action", |bch| {
            bch.iter(|| {
                for _ in 0..BATCH {
                    a.send(now, &msg, &peer).unwrap();
                }
                let mut n = 0;
                while let Some(act) = a.poll_action() {
                    if let Action::Write { envelope, .. } = act {
                        black_box(envelope);
                        n += 1;
                    }
                }
                a.handle_sent(now, sa, n).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
