//! A node-wide bound on bytes held for incomplete gRPC messages, and a stall deadline.
//!
//! tonic's decoder gathers a message until its last byte arrives, and HTTP/2 flow control
//! does not stop that: every chunk it takes opens the window again. So 8 peers sending 95 MiB
//! of a 99 MiB message and stalling held 775 MiB for as long as they wished. [`MeteredBody`]
//! sits between the HTTP/2 body and the decoder and reads the gRPC length prefixes itself:
//!
//! - a message announced over `max_message_size` is refused at its prefix, before any of it
//!   is held ([`Fault::Oversized`], which the core counts as `oversized`);
//! - bytes of a message that has begun and not ended are charged to one [`Budget`] per node;
//!   a chunk that would pass it is held back (one HTTP/2 DATA frame at most) and the stream
//!   waits, so flow control pushes back to that sender, until other messages complete;
//!   messages of at most 64 KiB may instead draw on an 8 MiB reserve, so that ordinary
//!   traffic is not held up while half-sent large messages fill the budget;
//! - a message that receives nothing (or gets no budget) for the stall timeout ends the
//!   stream ([`Fault::Stalled`]), releasing what it held;
//! - a compression flag other than 0 or 1, or a stream that ends inside a message, is bad
//!   framing ([`Fault::Framing`]), reported apart from malformed Envelopes.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tonic::Status;

/// Length of a gRPC message prefix: a compression flag and a big-endian u32 length.
pub(crate) const PREFIX: usize = 5;

/// What polling a gRPC body of this crate gives: the next frame (data, or trailers with the
/// status), a status that ends the stream, or its end. Both directions' bodies yield it
/// (this one for requests received, [`crate::framed::FramedOut`] for those sent).
pub(crate) type PolledFrame = Poll<Option<Result<Frame<Bytes>, Status>>>;

/// A message may hold this much from the reserve when the budget is spent: a small message
/// split across two HTTP/2 frames (the largest this node accepts is 64 KiB) completes
/// within the next one, so peers sending ordinary messages are not held up by half-sent
/// large ones.
const SMALL: usize = 64 << 10;
/// The reserve for such messages, node-wide, on top of the budget.
pub(crate) const RESERVE: usize = 8 << 20;

/// Why a metered body ended the stream, for the reader to report precisely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// A message of this many bytes was announced, over the limit.
    Oversized(usize),
    /// A message in progress made no progress for the stall timeout.
    Stalled {
        /// Bytes of it received.
        received: usize,
    },
    /// The bytes are not gRPC messages.
    Framing(String),
}

/// Where a body leaves its fault for the stream's reader.
pub(crate) type FaultSlot = Arc<Mutex<Option<Fault>>>;

pub(crate) fn take_fault(slot: &FaultSlot) -> Option<Fault> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// The node's allowance of bytes for incomplete messages.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    held: AtomicUsize,
    /// Taken from the reserve for small messages.
    reserve_held: AtomicUsize,
    peak: AtomicUsize,
    freed: Arc<Notify>,
    /// Streams waiting for budget now: releases wake them only when there are any (waking
    /// nobody still costs `Notify`'s lock, on every completed message).
    waiting: AtomicUsize,
    /// Times a stream had to wait for budget.
    pub(crate) waits: AtomicU64,
    /// Streams ended because their message stalled.
    pub(crate) stalls: AtomicU64,
    /// Streams ended for bad framing.
    pub(crate) bad_framing: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            held: AtomicUsize::new(0),
            reserve_held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            freed: Arc::new(Notify::new()),
            waiting: AtomicUsize::new(0),
            waits: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            bad_framing: AtomicU64::new(0),
        })
    }

    /// Bytes held now (budget and reserve), and the most ever held.
    pub(crate) fn held(&self) -> (usize, usize) {
        (
            self.held.load(Ordering::Acquire) + self.reserve_held.load(Ordering::Acquire),
            self.peak.load(Ordering::Acquire),
        )
    }

    fn take_from(counter: &AtomicUsize, limit: usize, n: usize) -> bool {
        // SeqCst with `waiting`: a waiter counts itself then tries, a release gives back then
        // looks for waiters; one of the two always sees the other.
        let mut cur = counter.load(Ordering::SeqCst);
        loop {
            let Some(next) = cur.checked_add(n).filter(|v| *v <= limit) else {
                return false;
            };
            match counter.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    fn note_peak(&self) {
        let (now, _) = self.held();
        self.peak.fetch_max(now, Ordering::AcqRel);
    }

    /// Charges `n` more bytes to a message that holds `charge`: from the budget, or for a
    /// small message from the reserve.
    fn try_take(&self, charge: &mut Charge, n: usize) -> bool {
        if Self::take_from(&self.held, self.limit, n) {
            charge.budget += n;
        } else if charge.budget == 0
            && charge.reserve + n <= SMALL
            && Self::take_from(&self.reserve_held, RESERVE, n)
        {
            charge.reserve += n;
        } else {
            return false;
        }
        self.note_peak();
        true
    }

    fn give_back(&self, charge: &mut Charge) {
        let Charge { budget, reserve } = std::mem::take(charge);
        if budget > 0 {
            self.held.fetch_sub(budget, Ordering::SeqCst);
        }
        if reserve > 0 {
            self.reserve_held.fetch_sub(reserve, Ordering::SeqCst);
        }
        if budget + reserve > 0 && self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// What one message holds, and from where.
#[derive(Clone, Copy, Debug, Default)]
struct Charge {
    budget: usize,
    reserve: usize,
}

impl Charge {
    fn total(&self) -> usize {
        self.budget + self.reserve
    }
}

/// Settings of one metered body.
#[derive(Clone, Debug)]
pub(crate) struct Metering {
    pub(crate) budget: Arc<Budget>,
    pub(crate) max_message: usize,
    pub(crate) stall: Duration,
}

/// An HTTP/2 body whose incomplete gRPC messages are charged to the node's [`Budget`].
pub(crate) struct MeteredBody<B> {
    inner: Pin<Box<B>>,
    m: Metering,
    fault: FaultSlot,
    /// Prefix bytes of the next message gathered so far.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// Bytes of the current incomplete message received (prefix included).
    received: usize,
    /// Bytes charged for the current message.
    charged: Charge,
    /// A chunk waiting for budget, with the charge it needs.
    held_back: Option<(Frame<Bytes>, usize)>,
    /// When the current message last received bytes (or got budget for them).
    last_progress: tokio::time::Instant,
    /// Wakes the stream to check for a stall. It is re-armed only when it fires, not per
    /// chunk: timer operations take the runtime's timer lock.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    freed: Option<Pin<Box<OwnedNotified>>>,
    done: bool,
}

impl<B> MeteredBody<B> {
    pub(crate) fn new(inner: B, m: Metering, fault: FaultSlot) -> Self {
        MeteredBody {
            inner: Box::pin(inner),
            m,
            fault,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            received: 0,
            charged: Charge::default(),
            held_back: None,
            last_progress: tokio::time::Instant::now(),
            stall: None,
            freed: None,
            done: false,
        }
    }

    fn fail(&mut self, fault: Fault) -> Status {
        let status = match &fault {
            Fault::Oversized(n) => Status::resource_exhausted(format!(
                "message of {n} bytes exceeds the limit of {}",
                self.m.max_message
            )),
            Fault::Stalled { received } => {
                self.m.budget.stalls.fetch_add(1, Ordering::Relaxed);
                Status::deadline_exceeded(format!(
                    "message stalled: nothing received for {:?} after {received} bytes",
                    self.m.stall
                ))
            }
            Fault::Framing(why) => {
                self.m.budget.bad_framing.fetch_add(1, Ordering::Relaxed);
                Status::internal(format!("bad gRPC framing: {why}"))
            }
        };
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = Some(fault);
        self.release();
        self.stop_waiting();
        self.done = true;
        status
    }

    fn release(&mut self) {
        self.m.budget.give_back(&mut self.charged);
    }

    /// Walks the prefixes in `data`: the size the current incomplete message will have
    /// after it (0 if it ends on a message boundary), or the fault it shows.
    fn scan(&self, data: &Bytes) -> Result<Scan, Fault> {
        let mut prefix = self.prefix;
        let mut prefix_len = self.prefix_len;
        let mut remaining = self.remaining;
        let mut received = self.received;
        let mut rest = data.as_ref();
        while !rest.is_empty() {
            if remaining == 0 && prefix_len < PREFIX {
                let take = (PREFIX - prefix_len).min(rest.len());
                prefix[prefix_len..prefix_len + take].copy_from_slice(&rest[..take]);
                prefix_len += take;
                received += take;
                rest = &rest[take..];
                if prefix_len < PREFIX {
                    break;
                }
                let flag = prefix[0];
                if flag > 1 {
                    return Err(Fault::Framing(format!(
                        "compression flag {flag} (only 0 and 1 exist)"
                    )));
                }
                let len = (&prefix[1..]).get_u32() as usize;
                if len > self.m.max_message {
                    return Err(Fault::Oversized(len));
                }
                remaining = len;
                if len == 0 {
                    prefix_len = 0;
                    received = 0;
                }
                continue;
            }
            let take = remaining.min(rest.len());
            remaining -= take;
            received += take;
            rest = &rest[take..];
            if remaining == 0 {
                prefix_len = 0;
                received = 0;
            }
        }
        Ok(Scan {
            prefix,
            prefix_len,
            remaining,
            received,
        })
    }
}

struct Scan {
    prefix: [u8; PREFIX],
    prefix_len: usize,
    remaining: usize,
    received: usize,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.release();
        self.stop_waiting();
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some((_, need)) = &this.held_back {
                let need = *need;
                // Register before trying, so a release in between is not missed.
                let freed = this
                    .freed
                    .get_or_insert_with(|| Box::pin(this.m.budget.freed.clone().notified_owned()));
                freed.as_mut().enable();
                if this.m.budget.try_take(&mut this.charged, need) {
                    this.freed = None;
                    let frame = this.stop_waiting();
                    this.last_progress = tokio::time::Instant::now();
                    if let Some(frame) = frame {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    continue;
                }
                if freed.as_mut().poll(cx).is_ready() {
                    this.freed = None;
                    continue;
                }
                return this.poll_stall(cx);
            }
            let frame = match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return this.poll_stall(cx),
                Poll::Ready(None) => {
                    if this.prefix_len > 0 || this.remaining > 0 {
                        let why = format!(
                            "stream ended inside a message ({} bytes received)",
                            this.received
                        );
                        return Poll::Ready(Some(Err(this.fail(Fault::Framing(why)))));
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.release();
                    this.done = true;
                    return Poll::Ready(Some(Err(Status::from_error(e.into()))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            let scan = match this.scan(data) {
                Ok(s) => s,
                Err(f) => return Poll::Ready(Some(Err(this.fail(f)))),
            };
            this.prefix = scan.prefix;
            this.prefix_len = scan.prefix_len;
            this.remaining = scan.remaining;
            let incomplete = scan.received;
            this.received = incomplete;
            // Whatever the chunk completed is released; what it leaves incomplete is charged.
            let charged = this.charged.total();
            let need = if incomplete >= charged && incomplete > 0 && charged > 0 {
                incomplete - charged
            } else {
                this.release();
                incomplete
            };
            if incomplete == 0 {
                return Poll::Ready(Some(Ok(frame)));
            }
            if need == 0 || this.m.budget.try_take(&mut this.charged, need) {
                this.last_progress = tokio::time::Instant::now();
                return Poll::Ready(Some(Ok(frame)));
            }
            this.m.budget.waits.fetch_add(1, Ordering::Relaxed);
            this.m.budget.waiting.fetch_add(1, Ordering::SeqCst);
            this.held_back = Some((frame, need));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.held_back.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<B> MeteredBody<B> {
    /// Leaves the budget's wait, returning the chunk that waited.
    fn stop_waiting(&mut self) -> Option<Frame<Bytes>> {
        let (frame, _) = self.held_back.take()?;
        self.m.budget.waiting.fetch_sub(1, Ordering::SeqCst);
        Some(frame)
    }

    /// Pending, unless the message in progress has stalled.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> PolledFrame {
        let in_progress = self.held_back.is_some() || self.prefix_len > 0 || self.remaining > 0;
        if !in_progress {
            return Poll::Pending;
        }
        let deadline = self.last_progress + self.m.stall;
        if tokio::time::Instant::now() >= deadline {
            let received = self.received;
            return Poll::Ready(Some(Err(self.fail(Fault::Stalled { received }))));
        }
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // A timer armed for an earlier message or an older chunk fires early: re-arm it for
        // the current deadline (later, never earlier) and wait again.
        if sleep.as_mut().poll(cx).is_ready() {
            sleep.as_mut().reset(deadline);
            if sleep.as_mut().poll(cx).is_ready() {
                // The deadline passed meanwhile.
                let received = self.received;
                return Poll::Ready(Some(Err(self.fail(Fault::Stalled { received }))));
            }
        }
        Poll::Pending
    }
}
