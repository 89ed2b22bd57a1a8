//! SendWithAck callers completed by one batch of acks are woken one at a time (the driver's
//! chain, see `Locked` in `driver/lock.rs`): every one of them must still get its result when
//! none of them ever calls the node again, and the node's other writes must still leave.

use crate::common;

use common::*;
use std::time::Duration;

const CALLERS: u64 = 16;

/// `CALLERS` tasks each make one SendWithAck from `a` to `b`, hand over the result and then
/// wait forever without touching `a` again; `b` acks only once it holds every message, so
/// that the acks leave together and complete the calls in one batch. Then `a` sends once
/// more, and `b` must receive it.
async fn callers_that_never_return_get_every_result() {
    let (a, b) = pair(false).await;
    let mut b_in = connect(&a, &b).await;
    let acker = tokio::spawn(async move {
        let mut held = Vec::new();
        while (held.len() as u64) < CALLERS {
            let want = CALLERS as usize - held.len();
            if b_in.recv_many(&mut held, want).await == 0 {
                return None;
            }
        }
        for m in &held {
            m.ack(None).await.unwrap();
        }
        // The next plain message from `a`.
        b_in.recv().await.map(|m| seq_of(m.message()))
    });
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(CALLERS as usize);
    let mut callers = Vec::new();
    for i in 0..CALLERS {
        let (a, peer, done) = (a.clone(), b.as_peer(), done_tx.clone());
        callers.push(tokio::spawn(async move {
            let r = a
                .send_with_ack(data_msg(i, 10), Duration::from_secs(10), 1, &[peer])
                .await;
            done.send(r).await.unwrap();
            std::future::pending::<()>().await;
        }));
    }
    for _ in 0..CALLERS {
        let r = within("a SendWithAck result", done_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].result, Ok(()));
    }
    a.send(&data(1000, 10), &[b.as_peer()]).unwrap();
    assert_eq!(
        within("the message after the acks", acker).await.unwrap(),
        Some(Some(1000))
    );
    for c in callers {
        c.abort();
    }
    stop_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_never_return_get_every_result_on_two_workers() {
    callers_that_never_return_get_every_result().await;
}

#[tokio::test(flavor = "current_thread")]
async fn callers_that_never_return_get_every_result_on_one_thread() {
    callers_that_never_return_get_every_result().await;
}
