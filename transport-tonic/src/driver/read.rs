//! The read side of streams: an inbound stream's registration ([`accept_inbound`]) and
//! every stream's reader ([`read_loop`]), which hands the core batches of Envelopes under
//! the lock, honours `PauseRead` ([`StreamCtl`]) and counts what a close leaves unread
//! ([`LateCount`]). Its own part: the path of received bytes into the core.

use super::drain::{drain, drain_actions};
use super::errors::status_text;
use super::write::{Out, OutStream};
use super::{Inner, StreamEntry};
use crate::framed::{FramedOut, Role};
use crate::inbound::Slot;
use crate::metered::{Fault, FaultSlot, MeteredBody, take_fault};
use bytes::Bytes;
use fabric_gossip_core::{CertHash, StreamEnd, StreamId};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::sync::{Notify, mpsc};
use tonic::Status;
use tracing::Instrument;

/// Envelopes read from a stream and handed to the core under one lock.
const READ_BATCH: usize = 64;

/// ... or fewer, once they add up to this many bytes.
const READ_BATCH_BYTES: usize = 1 << 20;

/// Read-side control of one stream, shared with its reader task.
#[derive(Debug)]
pub(crate) struct StreamCtl {
    pub(super) paused: AtomicBool,
    /// The RPC ended (its outgoing half is gone): read to the end regardless of pauses, so
    /// the end and the remote's status reach the core.
    pub(super) ended: AtomicBool,
    /// The core closed this outbound stream while stopping: its reader reads the
    /// response to its end, discarding it, so the stop knows the remote took everything
    /// written before (see [`Winding`]).
    ///
    /// [`Winding`]: super::stop::Winding
    pub(super) linger: AtomicBool,
    pub(super) resume: Notify,
    /// Envelopes the reader took from HTTP/2: the messages its body completed (in its
    /// batch, parked at a pause, or still in the body: the rest of a DATA frame of up to
    /// 256 Envelopes, or those held back for budget). Stored by the reader at every poll.
    pub(super) taken: AtomicU64,
    /// Of them, those handed to the core (by the reader, or by the drain of a
    /// `ResumeRead`); changed only under the lock. A close loses `taken - fed`, counted
    /// then in [`DriverStats::unread_at_close`].
    ///
    /// [`DriverStats::unread_at_close`]: super::DriverStats::unread_at_close
    pub(super) fed: AtomicU64,
    /// `taken` as the close found it (`u64::MAX` while open): what the reader took after
    /// (while filling on another worker as the close came) it counts itself.
    pub(super) counted_to: AtomicU64,
}

impl Default for StreamCtl {
    fn default() -> Self {
        StreamCtl {
            paused: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            resume: Notify::new(),
            taken: AtomicU64::new(0),
            fed: AtomicU64::new(0),
            counted_to: AtomicU64::new(u64::MAX),
        }
    }
}

impl StreamCtl {
    /// One more envelope handed to the core (under the lock, so a load and a store).
    pub(super) fn fed_one(&self) {
        let fed = self.fed.load(Ordering::Relaxed);
        self.fed.store(fed + 1, Ordering::Relaxed);
    }
}

/// Registers an inbound stream with the core and starts its reader. Returns the stream's
/// outgoing half, or the status to refuse the RPC with.
pub(crate) fn accept_inbound(
    inner: &Arc<Inner>,
    remote_addr: &str,
    remote_cert_hash: Option<CertHash>,
    body: MeteredBody,
    conn: Option<Arc<Slot>>,
    fault: FaultSlot,
) -> Result<FramedOut, Status> {
    let mut st = inner.lock();
    let now = inner.now();
    let stream = st
        .comm
        .accept_stream(now, remote_addr, remote_cert_hash)
        .map_err(|_| Status::unavailable("Shutting down"))?;
    let (tx, rx) = mpsc::channel(inner.settings.write_window + 2);
    let ctl = Arc::new(StreamCtl::default());
    let out_ctl = ctl.clone();
    let span = tracing::info_span!(
        "gossip_stream", %stream, inbound = true, remote = %remote_addr,
        pki_id = tracing::field::Empty, endpoint = tracing::field::Empty
    );
    let task = inner.rt.spawn(
        read_loop(inner.clone(), stream, body, ctl.clone(), Some(fault)).instrument(span.clone()),
    );
    st.streams.insert(
        stream,
        StreamEntry {
            tx,
            ctl,
            task: Some(task.abort_handle()),
            conn,
            _auth: None,
            span,
            outbound: false,
            held: VecDeque::new(),
        },
    );
    drain(inner, &mut st);
    Ok(FramedOut::new(
        OutStream::new(inner.clone(), stream, rx, out_ctl),
        Role::Server,
        inner.settings.max_message_size,
        inner.bodies.clone(),
    ))
}

/// Collects Envelopes that are ready without waiting, up to a batch. `Ready(None)`: a batch
/// is there; `Ready(Some(end))`: the stream ended (after the batch), `Ok` at its end, `Err`
/// with the status that ended it (the remote's, or a fault of its bytes).
fn fill(
    s: &mut MeteredBody,
    batch: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<(), Status>>> {
    let mut bytes = 0;
    while batch.len() < READ_BATCH && bytes < READ_BATCH_BYTES {
        match s.poll_message(cx) {
            Poll::Ready(Some(Ok(b))) => {
                bytes += b.len();
                batch.push_back(b);
            }
            Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
            Poll::Pending => break,
        }
    }
    if batch.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(None)
    }
}

/// Reads a stream the core closed while stopping to its end, discarding what comes (see
/// [`Winding`]): the remote's messages that were still coming, counted as unread at close
/// by the reader's [`LateCount`] through `taken`.
///
/// [`Winding`]: super::stop::Winding
async fn discard_to_end(body: &mut MeteredBody, ctl: &StreamCtl) {
    let mut batch = VecDeque::new();
    loop {
        batch.clear();
        let end = poll_fn(|cx| {
            let r = fill(body, &mut batch, cx);
            ctl.taken.store(body.completed(), Ordering::Relaxed);
            r
        })
        .await;
        if end.is_some() {
            return;
        }
    }
}

/// Reads a stream into the core, honouring PauseRead: while paused it does not poll the
/// stream, so HTTP/2 flow control pushes back to the sender. Envelopes read before a pause
/// took effect are held here (at most one batch) and handed in on resume, so none is lost.
pub(super) async fn read_loop(
    inner: Arc<Inner>,
    stream: StreamId,
    mut body: MeteredBody,
    ctl: Arc<StreamCtl>,
    fault: Option<FaultSlot>,
) {
    let _late = LateCount {
        to: &inner.unread_late,
        ctl: &ctl,
    };
    let closed_first = feed_core(&inner, stream, &mut body, &ctl, fault).await;
    if closed_first && ctl.linger.load(Ordering::Acquire) {
        discard_to_end(&mut body, &ctl).await;
    }
}

/// Counts, when a reader's task ends or is aborted, the envelopes it took after the core's
/// close counted what it had taken: a close that lands while the reader, on another
/// worker, is inside a poll that completes messages and then waits (messages held back
/// for budget) reads `taken` before that poll stores it, and the abort that follows ends
/// the task without another look. The reader stores `taken` at every poll, so at the end
/// it is exact; a reader that counted the rest itself moved `counted_to` up to it.
pub(super) struct LateCount<'a> {
    /// [`Inner::unread_late`].
    to: &'a AtomicU64,
    ctl: &'a StreamCtl,
}

impl Drop for LateCount<'_> {
    fn drop(&mut self) {
        // Nothing while the stream is open: `counted_to` is `u64::MAX` until a close.
        let late = match self.ctl.counted_to.load(Ordering::Relaxed) {
            u64::MAX => 0,
            counted => self
                .ctl
                .taken
                .load(Ordering::Relaxed)
                .saturating_sub(counted),
        };
        if late > 0 {
            self.to.fetch_add(late, Ordering::Relaxed);
        }
    }
}

/// [`read_loop`]'s work until the stream ends or the core closes it: whether the core
/// closed it first.
async fn feed_core(
    inner: &Arc<Inner>,
    stream: StreamId,
    body: &mut MeteredBody,
    ctl: &StreamCtl,
    fault: Option<FaultSlot>,
) -> bool {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(READ_BATCH);
    let mut end: Option<Result<(), Status>> = None;
    // This reader parked a backlog in its stream's entry (see below) and has not looked since.
    let mut parked = false;
    loop {
        let held = |ctl: &StreamCtl| {
            ctl.paused.load(Ordering::Acquire)
                && !ctl.ended.load(Ordering::Acquire)
                && !ctl.linger.load(Ordering::Acquire)
        };
        while held(ctl) {
            let resumed = ctl.resume.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !held(ctl) {
                break;
            }
            resumed.await;
        }
        if batch.is_empty() && end.is_none() {
            // Stored at every poll: a close while the reader waits counts what the body
            // completed meanwhile (messages held back for budget above all).
            end = poll_fn(|cx| {
                let r = fill(body, &mut batch, cx);
                ctl.taken.store(body.completed(), Ordering::Relaxed);
                r
            })
            .await;
        }
        let mut st = inner.lock();
        let now = inner.now();
        // What is left of a backlog parked at a pause (the drain of the ResumeRead hands
        // it in, but a reader that reads to the end regardless of pauses may get here
        // first) goes before anything this reader took since. Only this reader parks, so
        // the stream's entry is looked up only after it did.
        if core::mem::take(&mut parked)
            && let Some(e) = st.streams.get_mut(&stream)
        {
            while let Some(b) = e.held.pop_back() {
                batch.push_front(b);
            }
        }
        while let Some(b) = batch.pop_front() {
            if held(ctl) {
                batch.push_front(b);
                break;
            }
            if st.comm.handle_envelope(now, stream, b).is_err() {
                // The core closed the stream meanwhile. Its close counted what the reader
                // had taken when it came; what the reader took after (filling on another
                // worker as the close came) is counted here. What the envelopes before
                // this one produced (a DeliveryReady above all) must still go out.
                let counted = ctl.counted_to.load(Ordering::Relaxed);
                st.stats.unread_at_close += body.completed().saturating_sub(counted);
                // Counted through here: the reader's `LateCount` adds nothing more.
                ctl.taken.store(body.completed(), Ordering::Relaxed);
                ctl.counted_to.store(body.completed(), Ordering::Relaxed);
                drain(inner, &mut st);
                return true;
            }
            ctl.fed_one();
            drain_actions(inner, &mut st);
        }
        // Paused with a backlog: parked where the ResumeRead's drain finds it, with the
        // rest of what the body completed (a DATA frame carries up to 256 Envelopes). The
        // end of the stream, if it came, waits here behind it.
        if !batch.is_empty()
            && let Some(e) = st.streams.get_mut(&stream)
        {
            e.held.extend(batch.drain(..));
            body.take_ready(&mut e.held);
            parked = true;
        }
        if batch.is_empty()
            && !parked
            && let Some(ended) = end.take()
        {
            let fault = fault.as_ref().and_then(take_fault);
            // Logged before the sender learns of it below: a sender (a test, a probe)
            // that gets the status and then reads the log finds the line already there.
            match &fault {
                Some(Fault::Oversized(size)) => {
                    tracing::warn!(size, "oversized message refused at its length prefix");
                }
                Some(Fault::Stalled { received }) => {
                    tracing::warn!(received, "stream reset: message in progress stalled");
                }
                Some(Fault::Framing(why)) => {
                    tracing::warn!(error = %why, "stream ended: bad gRPC framing");
                }
                None => {}
            }
            // The sender of an oversized, stalled or badly framed message learns why on an
            // inbound stream, with the code grpc-go gives such a message (RESOURCE_EXHAUSTED,
            // INTERNAL; DEADLINE_EXCEEDED for a stall, which grpc-go does not time): the
            // writer ends the RPC with the fault's status before the core's close (UNKNOWN,
            // or none for a stream error) reaches it. An outbound stream's request has no
            // status to carry: it ends, and the stream is closed after it.
            if fault.is_some()
                && let Err(status) = &ended
                && let Some(entry) = st.streams.get(&stream)
            {
                let _ = entry.tx.try_send(Out::End(Some(status.clone())));
            }
            let e = match ended {
                Ok(()) => StreamEnd::Finished,
                Err(status) => StreamEnd::Error(status_text(&status)),
            };
            match fault {
                Some(Fault::Oversized(size)) => {
                    let _ = st.comm.handle_oversized(now, stream, size);
                }
                other => {
                    if other.is_none() {
                        tracing::debug!(end = ?e, "stream ended");
                    }
                    let _ = st.comm.handle_stream_closed(now, stream, e);
                }
            }
            drain(inner, &mut st);
            return false;
        }
        drain(inner, &mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metered::{Budget, Side};
    use std::task::Waker;

    /// A close that lands while the reader, on another worker, is inside a poll that
    /// completes messages and then waits (held back for budget) counts what the reader had
    /// taken before that poll; the abort that follows drops the task, and its
    /// `LateCount` counts the rest. Before, those were lost in no counter.
    #[tokio::test]
    async fn an_aborted_reader_counts_what_it_took_after_the_close() {
        let late = Arc::new(AtomicU64::new(0));
        let ctl = Arc::new(StreamCtl::default());
        ctl.taken.store(10, Ordering::Relaxed);
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn({
            let (late, ctl) = (late.clone(), ctl.clone());
            async move {
                let _late = LateCount {
                    to: &late,
                    ctl: &ctl,
                };
                // The close, on the other worker, read `taken` as 10 ...
                ctl.counted_to.store(10, Ordering::Relaxed);
                // ... as this poll completed five more, and the reader waits.
                ctl.taken.store(15, Ordering::Relaxed);
                let _ = polled_tx.send(());
                std::future::pending::<()>().await;
            }
        });
        polled_rx.await.unwrap();
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());
        assert_eq!(late.load(Ordering::Relaxed), 5);

        // A reader whose stream is open (its own end came first), or that counted the
        // rest itself under the lock (it moved `counted_to` up to `taken`), adds nothing.
        for counted_to in [u64::MAX, 15] {
            let ctl = StreamCtl::default();
            ctl.taken.store(15, Ordering::Relaxed);
            ctl.counted_to.store(counted_to, Ordering::Relaxed);
            drop(LateCount {
                to: &late,
                ctl: &ctl,
            });
            assert_eq!(late.load(Ordering::Relaxed), 5, "counted_to {counted_to}");
        }
    }

    /// A stream the core closed while stopping is read to its end (so the stop knows the
    /// remote took everything), and the messages still coming are discarded: they were in
    /// no counter (audit, 2026-12-05). The reader's `LateCount` counts them now, past
    /// what the close counted.
    #[tokio::test]
    async fn messages_discarded_while_stopping_are_counted() {
        use crate::metered::tests::{data, reader, wire};
        let budget = Budget::new(1 << 20);
        let three = wire(&[(0, 10, 1), (0, 20, 2), (0, 30, 3)]);
        let mut body = reader(vec![data(&three)], Side::Request, &budget);
        let late = AtomicU64::new(0);
        let ctl = StreamCtl::default();
        // The close found nothing taken and counted nothing; the reader lingers.
        ctl.counted_to.store(0, Ordering::Relaxed);
        {
            let _late = LateCount {
                to: &late,
                ctl: &ctl,
            };
            discard_to_end(&mut body, &ctl).await;
        }
        assert_eq!(late.load(Ordering::Relaxed), 3);
    }

    /// A reader hands the core at most 64 Envelopes under one lock, or fewer once they add
    /// up to 1 MiB: the batch is bounded both ways, and the rest waits in the body for the
    /// next batch, in order.
    #[test]
    fn a_readers_batch_ends_at_64_envelopes_or_at_1_mib() {
        use crate::metered::tests::{data, reader, wire};
        let budget = Budget::new(8 << 20);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = VecDeque::new();
        let small = wire(&[(0, 10, 1); 100]);
        let mut body = reader(vec![data(&small)], Side::Request, &budget);
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(batch.len(), 64);
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(Some(Ok(())))
        ));
        assert_eq!(batch.len(), 36);

        // Four of 256 KiB make 1 MiB exactly.
        let large = wire(&[(0, 256 << 10, 2); 6]);
        let mut body = reader(vec![data(&large)], Side::Request, &budget);
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(
            batch.iter().map(Bytes::len).collect::<Vec<_>>(),
            [256 << 10; 4]
        );
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(Some(Ok(())))
        ));
        assert_eq!(batch.len(), 2);
    }
}
