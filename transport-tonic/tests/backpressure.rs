//! Flow control end to end: a sender using `send_wait` against a consumer that does not read
//! for a while loses nothing, and the receiving core paused reading meanwhile.

use crate::common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const N: u64 = 20_000;
const SIZE: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_loses_nothing_to_a_slow_consumer() {
    for tls in [false, true] {
        let pki = Pki::new("bp-ca");
        let small = || {
            config()
                .with_send_buffer(4)
                .with_write_window(2)
                .with_subscription_buffer(2)
        };
        let a = node(small(), tls.then(|| pki.tls("a"))).await;
        let b = node(small(), tls.then(|| pki.tls("b"))).await;
        let mut inbox = b.accept(|_| true).unwrap();

        // 20 MiB is far more than HTTP/2 windows and every buffer on the way hold, so the
        // sender must be held back until the consumer starts.
        let sent = Arc::new(AtomicU64::new(0));
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
        let sender = {
            let (a, peer, sent) = (a.clone(), b.as_peer(), sent.clone());
            tokio::spawn(async move {
                for seq in 0..N {
                    a.send_wait(&data(seq, SIZE), &peer).await.unwrap();
                    sent.store(seq + 1, Ordering::Release);
                    let _ = progress_tx.send(seq + 1);
                }
            })
        };
        // Wait until the sender got well ahead of a consumer that has not read anything.
        within("sender gets going", progress.wait_for(|n| *n >= 1000))
            .await
            .unwrap();
        for want in 0..N {
            let m = within("delivery", inbox.recv()).await.expect("message");
            assert_eq!(seq_of(m.message()), Some(want), "tls={tls}");
        }
        within("sender finishes", sender).await.unwrap();
        assert!(sent.load(Ordering::Acquire) == N);

        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.dropped_overflow, 0, "tls={tls}");
        assert_eq!(sa.dropped_on_close, 0, "tls={tls}");
        assert_eq!(sb.dropped_subscription_overflow, 0, "tls={tls}");
        assert!(sb.read_pauses > 0, "the receiver never paused: tls={tls}");
        assert_eq!(sb.received, N);
        stop_all(&[&a, &b]).await;
    }
}

/// Fabric's non-blocking send against the same slow consumer drops and counts instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_send_drops_and_counts() {
    let small = || config().with_send_buffer(4).with_write_window(2);
    let a = node(small(), None).await;
    let b = node(small(), None).await;
    let mut inbox = b.accept(|_| true).unwrap();
    a.send(&data(0, 10), &[b.as_peer()]).unwrap();
    within("connect", inbox.recv()).await.unwrap();
    for seq in 1..N {
        a.send(&data(seq, SIZE), &[b.as_peer()]).unwrap();
    }
    let s = a.stats();
    assert!(s.dropped_overflow > 0, "{s:?}");
    stop_all(&[&a, &b]).await;
}
