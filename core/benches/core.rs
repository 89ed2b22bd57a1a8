//! The core alone, no I/O: how many messages per second one core moves
//! from Envelope bytes in to delivery out, and from `send` to `Action::Write` out,
//! on an established connection with 1 KiB DataMessages.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::testing::Net;
use fabric_gossip_core::*;
use std::hint::black_box;

const BATCH: usize = 1024;

fn data_msg(seq: u64) -> GossipMessage {
    data_message(seq, Bytes::from(vec![0xab; 1024]))
}

/// Two cores connected back to back by the test harness, its network then set aside:
/// (a, b, a's stream to b, b's stream from a, now, b as a remote of a).
fn connected(config: Config) -> (Core, Core, StreamId, StreamId, Instant, RemotePeer) {
    let mut net = Net::new(2, |_| config.clone());
    net.send(0, 1, b"warm-up");
    net.settle();
    let (sa, sb) = (net.conn(0, 1).unwrap(), net.conn(1, 0).unwrap());
    let (now, peer) = (net.now, net.peer(1));
    let b = net.nodes.pop().unwrap().comm;
    let a = net.nodes.pop().unwrap().comm;
    (a, b, sa, sb, now, peer)
}

type Core = Comm<Box<dyn Security>>;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(BATCH as u64));

    // Receive path: Envelope bytes in -> decoded, routed, polled delivery out.
    {
        let (_a, mut b, _sa, sb, now, _) =
            connected(Config::default().with_subscription_buffer(BATCH * 2));
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
        let (mut a, _b, sa, _sb, now, peer) =
            connected(Config::default().with_write_window(BATCH * 2));
        let peer = [peer];
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

    // Identities learnt from membership into a full identity store (16,384 held, the
    // default bound): each new one evicts the one held longest.
    {
        let now = Instant::from_unix_nanos(1_000_000_000);
        let mut comm = Comm::new(
            Config::default(),
            Box::new(TestOnlyHmacSecurity::new("own")) as Box<dyn Security>,
            now,
        )
        .unwrap();
        let cap = Config::default().identity_store_capacity as u64;
        let id = |n: u64| Bytes::from(format!("peer-{n}"));
        for n in 0..cap {
            let i = id(n);
            comm.learn_identity(now, &PkiId(i.clone()), &i).unwrap();
        }
        let mut next = cap;
        g.bench_function("learn_identity_into_full_store", |bch| {
            bch.iter(|| {
                for _ in 0..BATCH {
                    let i = id(next);
                    next += 1;
                    black_box(comm.learn_identity(now, &PkiId(i.clone()), &i).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
