//! The write side of a stream: the items of its writer's queue ([`Out`]) and
//! [`OutStream`], which hands them to the stream's HTTP/2 body, gives the core its write
//! credit back and lets a burst of writes leave as one DATA frame. Its own part: the path
//! of the core's writes out to HTTP/2.

use super::Inner;
use super::drain::drain;
use super::lock::Gate;
use super::read::StreamCtl;
use bytes::Bytes;
use fabric_gossip_core::{StreamId, WriteKind};
use futures_util::task::AtomicWaker;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc;
use tonic::Status;

/// One item for a stream's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// An encoded Envelope, and whether it uses the core's write credit.
    Env(Bytes, WriteKind),
    /// Envelopes the core handed out in one drain, in order ([`Writes`]).
    ///
    /// [`Writes`]: super::drain::Writes
    Batch(Vec<(Bytes, WriteKind)>),
    /// End the stream; for an inbound stream, with this error status: UNKNOWN with the
    /// core's message when the core closed it (as a Fabric handler returning an error),
    /// or the code of a fault the driver found in the stream's bytes (as grpc-go's own).
    End(Option<Status>),
}

/// The outgoing half of a stream: Envelopes the core wrote, pulled by its HTTP/2 body
/// ([`FramedOut`]).
///
/// Taking an Envelope out counts as written. Credit goes back to the core in batches: every
/// half write window, and whenever the queue runs dry, so the core can refill it before the
/// encoder is told to wait. The handshake's `ConnEstablish` ([`WriteKind::Handshake`]) is
/// outside the core's write window and is not counted.
///
/// # Coalescing writes
///
/// The body pulls Envelopes until this stream says `Pending`, then hands what it has to
/// HTTP/2 as one DATA frame, which h2 writes with one `writev`. When the stream is woken
/// after running dry, the task that woke it may have woken others that are about to write
/// too, or may itself write more before it pauses (the acker of a batch of messages).
/// tokio runs a task woken this way next (its LIFO slot), ahead of those others, so without
/// a pause each of them got its own frame, `writev` and wake-up of h2's connection task. So
/// the first poll after running dry yields once to the scheduler ([`tokio::task::yield_now`]
/// runs every task ready now first), and the Envelopes they queue meanwhile leave together.
/// The callers of a batch of acks are woken one after the other instead, and the writer
/// only after the last of them (see [`Locked`]): its queue reaches it through a [`Gate`].
/// The yield stays for them too: skipping it when the gate wakes the writer measured
/// slower (5.6 against 5.4 µs of CPU per ack).
///
/// [`FramedOut`]: crate::framed::FramedOut
/// [`Locked`]: super::lock::Locked
pub(crate) struct OutStream {
    inner: Arc<Inner>,
    stream: StreamId,
    rx: mpsc::Receiver<Out>,
    unreported: usize,
    report_every: usize,
    done: bool,
    /// The queue ran dry at the last poll: the next poll starts a burst and yields first.
    dry: bool,
    /// The yield in progress at the start of a burst.
    yielding: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>>,
    /// What the queue wakes: the writer's task, unless the node holds writers.
    gate: Arc<Gate>,
    gate_waker: Waker,
    /// Items taken from `rx` in one batch, last first: one poll of the channel (and one
    /// release of its permits) per batch instead of per Envelope. They are within the
    /// core's write window already, so the batch adds nothing to what a stream may hold;
    /// its allocation is released whenever the queue runs dry.
    batch: Vec<Out>,
    /// The rest of the [`Out::Batch`] being written.
    run: std::vec::IntoIter<(Bytes, WriteKind)>,
    /// The stream's reader's controls: dropping this half (HTTP/2 gives it up when the
    /// connection dies) marks the RPC ended, so a paused reader still reads to its end.
    ctl: Arc<StreamCtl>,
}

impl Drop for OutStream {
    /// A connection that died while its reader was paused (its subscriber not reading, a
    /// full send buffer) would otherwise stay registered in the core with nobody to tell
    /// it: no write comes to find the stream gone, so callers waiting for buffer room (an
    /// ack, a `send_wait`) would wait forever. Seen against `fabric-gossip node
    /// --auto-ack` and a peer that advertised a zero window and hung up.
    fn drop(&mut self) {
        self.ctl.ended.store(true, Ordering::Release);
        self.ctl.resume.notify_one();
    }
}

/// Items [`OutStream`] takes from its queue at once: about one chunk of 1 KiB Envelopes.
const OUT_BATCH: usize = 64;

impl OutStream {
    pub(crate) fn new(
        inner: Arc<Inner>,
        stream: StreamId,
        rx: mpsc::Receiver<Out>,
        ctl: Arc<StreamCtl>,
    ) -> Self {
        let report_every = (inner.settings.write_window / 2).max(1);
        let gate = Arc::new(Gate {
            gates: inner.gates.clone(),
            task: AtomicWaker::new(),
        });
        OutStream {
            gate_waker: Waker::from(gate.clone()),
            gate,
            inner,
            stream,
            rx,
            unreported: 0,
            report_every,
            done: false,
            dry: false,
            yielding: None,
            batch: Vec::new(),
            run: Vec::new().into_iter(),
            ctl,
        }
    }

    /// The next item of the queue, woken through the gate.
    fn poll_queue(&mut self) -> Poll<Option<Out>> {
        let mut cx = Context::from_waker(&self.gate_waker);
        Self::next_out(&mut self.run, &mut self.batch, &mut self.rx, &mut cx)
    }

    /// The next item of the queue `rx`, never an [`Out::Batch`]: from the `run` of the
    /// batch item being handed out, from the `batch` of items taken last, or from a new
    /// batch.
    fn next_out(
        run: &mut std::vec::IntoIter<(Bytes, WriteKind)>,
        batch: &mut Vec<Out>,
        rx: &mut mpsc::Receiver<Out>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Out>> {
        loop {
            if let Some((b, kind)) = run.next() {
                return Poll::Ready(Some(Out::Env(b, kind)));
            }
            let Some(out) = batch.pop() else {
                match rx.poll_recv_many(cx, batch, OUT_BATCH) {
                    Poll::Ready(0) => return Poll::Ready(None),
                    Poll::Ready(_) => batch.reverse(),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            };
            match out {
                Out::Batch(items) => *run = items.into_iter(),
                out => return Poll::Ready(Some(out)),
            }
        }
    }

    fn report(&mut self) {
        let n = std::mem::take(&mut self.unreported);
        let inner = self.inner.clone();
        {
            let mut st = inner.lock();
            let now = inner.now();
            let _ = st.comm.handle_sent(now, self.stream, n);
            drain(&inner, &mut st);
        }
        inner.wake_room();
    }

    /// Counts an Envelope handed on, reporting every `report_every`.
    fn written(&mut self, b: Bytes, kind: WriteKind) -> Bytes {
        if kind == WriteKind::Message {
            self.unreported += 1;
            if self.unreported >= self.report_every {
                self.report();
            }
        }
        b
    }

    /// The next Envelope; `Err` carries the error status the core closed the stream with.
    pub(crate) fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut self.dry) {
            self.yielding = Some(Box::pin(tokio::task::yield_now()));
        }
        if let Some(y) = self.yielding.as_mut() {
            if y.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = None;
        }
        loop {
            let mut polled = self.poll_queue();
            if polled.is_pending() {
                // The writer's waker goes to the gate only once the queue is empty, not for
                // every Envelope; then the queue is looked at again, so a write in between
                // is either seen here or finds the waker registered.
                self.gate.task.register(cx.waker());
                polled = self.poll_queue();
            }
            match polled {
                Poll::Ready(Some(Out::Env(b, kind))) => {
                    return Poll::Ready(Some(Ok(self.written(b, kind))));
                }
                // `next_out` unpacks batches; one it returned would be unpacked here.
                Poll::Ready(Some(Out::Batch(items))) => self.run = items.into_iter(),
                Poll::Ready(Some(Out::End(error))) => {
                    self.done = true;
                    return Poll::Ready(error.map(Err));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending if self.unreported > 0 => self.report(),
                Poll::Pending => {
                    self.dry = true;
                    // An idle stream holds no batch (a node may have thousands).
                    self.batch = Vec::new();
                    self.run = Vec::new().into_iter();
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(i: u32) -> Out {
        Out::Env(Bytes::from(i.to_be_bytes().to_vec()), WriteKind::Message)
    }

    fn index(out: &Out) -> Option<u32> {
        match out {
            Out::Env(b, _) => Some(u32::from_be_bytes(b[..].try_into().ok()?)),
            Out::Batch(_) | Out::End(_) => None,
        }
    }

    /// Batches of up to `OUT_BATCH` hand the queue's items out in the order they were queued,
    /// across batches and items queued between them, and the end of the queue after them.
    #[test]
    fn batches_keep_the_queue_order() {
        let (tx, mut rx) = mpsc::channel(3 * OUT_BATCH);
        let mut batch = Vec::new();
        let mut run = Vec::new().into_iter();
        let mut cx = Context::from_waker(Waker::noop());
        let mut next = |batch: &mut Vec<Out>, rx: &mut mpsc::Receiver<Out>| {
            OutStream::next_out(&mut run, batch, rx, &mut cx)
        };
        for i in 0..(2 * OUT_BATCH + 5) as u32 {
            tx.try_send(env(i)).unwrap();
        }
        let mut got = Vec::new();
        // The first batch is full; more is queued while it is handed out.
        for _ in 0..10 {
            let Poll::Ready(Some(out)) = next(&mut batch, &mut rx) else {
                panic!("an item was queued");
            };
            got.push(index(&out).unwrap());
        }
        assert_eq!(batch.len(), OUT_BATCH - 10, "one batch taken, in full");
        let queued = (2 * OUT_BATCH + 5) as u32;
        for i in queued..queued + 7 {
            tx.try_send(env(i)).unwrap();
        }
        tx.try_send(Out::End(Some(Status::unknown("closed"))))
            .unwrap();
        drop(tx);
        let mut ended = false;
        loop {
            match next(&mut batch, &mut rx) {
                Poll::Ready(Some(Out::End(why))) => {
                    assert_eq!(why.as_ref().map(Status::message), Some("closed"));
                    assert!(!ended, "one end");
                    ended = true;
                }
                Poll::Ready(Some(out)) => {
                    assert!(!ended, "nothing after the end");
                    got.push(index(&out).unwrap());
                }
                Poll::Ready(None) => break,
                Poll::Pending => panic!("the sender is gone: the queue ends, never pends"),
            }
        }
        assert!(ended);
        assert_eq!(got, (0..queued + 7).collect::<Vec<_>>());
    }

    /// A batch item is handed out envelope by envelope, in its place in the queue.
    #[test]
    fn batches_are_unpacked_in_their_place() {
        let (tx, mut rx) = mpsc::channel(8);
        let (mut batch, mut run) = (Vec::new(), Vec::new().into_iter());
        let mut cx = Context::from_waker(Waker::noop());
        let run_of = |r: std::ops::Range<u32>| {
            let items = r.map(|i| match env(i) {
                Out::Env(b, k) => (b, k),
                _ => unreachable!(),
            });
            Out::Batch(items.collect())
        };
        for item in [env(0), run_of(1..4), env(4), run_of(5..5), run_of(5..6)] {
            tx.try_send(item).unwrap();
        }
        tx.try_send(Out::End(None)).unwrap();
        drop(tx);
        let mut got = Vec::new();
        loop {
            match OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx) {
                Poll::Ready(Some(Out::End(_))) => got.push(u32::MAX),
                Poll::Ready(Some(out)) => got.push(index(&out).expect("an envelope")),
                Poll::Ready(None) => break,
                Poll::Pending => panic!("the sender is gone: the queue ends, never pends"),
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5, u32::MAX]);
    }

    /// An empty queue with its sender alive pends, holding no batch.
    #[test]
    fn an_empty_queue_pends() {
        let (tx, mut rx) = mpsc::channel::<Out>(4);
        let mut batch = Vec::new();
        let mut run = Vec::new().into_iter();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx).is_pending());
        tx.try_send(env(7)).unwrap();
        let Poll::Ready(Some(out)) = OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx)
        else {
            panic!("an item was queued");
        };
        assert_eq!(index(&out), Some(7));
        assert!(batch.is_empty());
        assert!(OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx).is_pending());
    }
}
