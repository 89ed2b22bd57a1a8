//! Two nodes that start sending to each other at the same moment dial each other at once
//! (crossing dials); every `send_with_ack` each way must still be acked.

use crate::common;

use common::*;
use fabric_gossip_core::Event;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_send_with_ack_each_way_with_crossing_dials() {
    const N: u64 = 1000;
    for round in 0..5 {
        let mut cfg = config();
        cfg.max_waiting_sends = 4 * N as usize;
        let (ta, mut ra) = tokio::sync::mpsc::channel(10_000);
        let (tb, mut rb) = tokio::sync::mpsc::channel(10_000);
        let start = |tap| {
            fabric_gossip_tonic::Node::builder(cfg.clone())
                .events(tap)
                .start_with(|addr| fabric_gossip_core::TestOnlyHmacSecurity::new(addr.to_string()))
        };
        let a = start(ta).await.unwrap();
        let b = start(tb).await.unwrap();
        let ackers: Vec<_> = [&a, &b]
            .into_iter()
            .map(|n| {
                let mut inbox = n.accept(|_| true).unwrap();
                tokio::spawn(async move {
                    while let Some(m) = inbox.recv().await {
                        m.ack(None).await.unwrap();
                    }
                })
            })
            .collect();
        let mut ops = Vec::new();
        for i in 0..N {
            for (from, to) in [(&a, &b), (&b, &a)] {
                let (from, peer) = (from.clone(), to.as_peer());
                ops.push(tokio::spawn(async move {
                    from.send_with_ack(data_msg(i, 10), Duration::from_secs(5), 1, &[peer])
                        .await
                        .unwrap()
                }));
            }
        }
        let mut failed = 0;
        for op in ops {
            let r = within("op", op).await.unwrap();
            if r.iter().filter(|r| r.result.is_ok()).count() != 1 {
                failed += 1;
            }
        }
        if failed > 0 {
            let dump = |r: &mut tokio::sync::mpsc::Receiver<Event>| {
                let mut v = Vec::new();
                while let Ok(e) = r.try_recv() {
                    if !matches!(e, Event::SendWithAckDone { .. }) {
                        v.push(format!("{e:?}"));
                    }
                }
                v
            };
            panic!(
                "round {round}: {failed} not acked\nA {:?}\n{:#?}\nB {:?}\n{:#?}\nA stats {:?}\nB stats {:?}",
                a.pki_id(),
                dump(&mut ra),
                b.pki_id(),
                dump(&mut rb),
                a.stats(),
                b.stats()
            );
        }
        stop_all(&[&a, &b]).await;
        for t in ackers {
            within("acker", t).await.unwrap();
        }
    }
}
