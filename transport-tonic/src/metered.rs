//! A node-wide bound on bytes held for incomplete gRPC messages, and a stall deadline.
//!
//! tonic's decoder gathers a message until its last byte arrives, and HTTP/2 flow control
//! does not stop that: every chunk it takes opens the window again. So 8 peers sending 95 MiB
//! of a 99 MiB message and stalling held 775 MiB for as long as they wished. [`MeteredBody`]
//! reads the HTTP/2 body in its place: it reads the gRPC length prefixes itself, takes the
//! messages out (a message inside one DATA frame is a slice of it, not a copy), and:
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

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame};
use std::collections::VecDeque;
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

/// The most a message spread over frames has allocated for it before its bytes arrive.
const GATHER_UP_FRONT: usize = 1 << 20;

/// What polling a gRPC body gives: the next frame (data, or trailers with the status), a
/// status that ends the stream, or its end. [`crate::framed::FramedOut`] yields it for the
/// bodies this node sends; [`MeteredBody`] reads it from those it receives.
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

    /// The books the `grpc_framing` fuzz target balances: bytes held from the budget,
    /// from the reserve, and the streams waiting.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn books(&self) -> (usize, usize, usize) {
        (
            self.held.load(Ordering::SeqCst),
            self.reserve_held.load(Ordering::SeqCst),
            self.waiting.load(Ordering::SeqCst),
        )
    }

    /// The most the budget lends (the reserve apart).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn limit(&self) -> usize {
        self.limit
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
    /// small message (`small`: announced at most [`SMALL`] with its prefix, or whose length
    /// is not known yet) from the reserve.
    fn try_take(&self, charge: &mut Charge, n: usize, small: bool) -> bool {
        if Self::take_from(&self.held, self.limit, n) {
            charge.budget += n;
        } else if small
            && charge.total() + n <= SMALL
            && Self::take_from(&self.reserve_held, RESERVE, charge.budget + n)
        {
            // A small message that began on the budget's last bytes moves to the reserve
            // whole: otherwise it would wait, with its stream, for budget that half-sent
            // large messages hold until their stall deadline.
            let moved = std::mem::take(&mut charge.budget);
            charge.reserve += moved + n;
            self.give_back(&mut Charge {
                budget: moved,
                reserve: 0,
            });
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
    /// The limit of the first message (a gossip stream's handshake), which is smaller.
    pub(crate) max_first_message: usize,
    pub(crate) stall: Duration,
}

/// Which end of a call a body is read at: it decides what the end of the body means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// A request the server received: its trailers say nothing, and a client cancelling its
    /// call is a clean end.
    Request,
    /// The response to a call this node made, whose headers had this HTTP status and no
    /// `grpc-status`: the trailers' `grpc-status` (or, lacking one, the HTTP status) says
    /// how the call ended.
    Response(http::StatusCode),
    /// A response whose headers already carried `grpc-status` OK (trailers-only): nothing
    /// more is checked at its end.
    EmptyResponse,
}

impl Side {
    /// The side of a response, from its headers: a `grpc-status` there makes it
    /// trailers-only (tonic refuses such a response when the status is not OK before the
    /// body is read).
    pub(crate) fn of_response<B>(resp: &http::Response<B>) -> Self {
        if resp.headers().contains_key(Status::GRPC_STATUS) {
            Side::EmptyResponse
        } else {
            Side::Response(resp.status())
        }
    }

    /// How a body that ended (with these trailers, if any) ended the call: `Some` error
    /// status, or `None` for a clean end. The same reading as tonic's decoder, so a peer
    /// ending its stream with a non-OK status is reported with that status.
    fn ending(self, trailers: Option<http::HeaderMap>) -> Option<Status> {
        let Side::Response(http_status) = self else {
            return None;
        };
        if let Some(status) = trailers.as_ref().and_then(status_of) {
            return (status.code() != tonic::Code::Ok).then_some(status);
        }
        // gRPC's mapping of HTTP statuses, for a response without a grpc-status.
        let code = match http_status {
            http::StatusCode::OK => {
                return Some(Status::unknown(
                    "protocol error: missing grpc-status trailer, stream was terminated \
                     without a final status",
                ));
            }
            http::StatusCode::BAD_REQUEST => tonic::Code::Internal,
            http::StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            http::StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
            http::StatusCode::NOT_FOUND => tonic::Code::Unimplemented,
            http::StatusCode::TOO_MANY_REQUESTS
            | http::StatusCode::BAD_GATEWAY
            | http::StatusCode::SERVICE_UNAVAILABLE
            | http::StatusCode::GATEWAY_TIMEOUT => tonic::Code::Unavailable,
            _ => tonic::Code::Unknown,
        };
        Some(Status::new(
            code,
            format!(
                "grpc-status header missing, mapped from HTTP status code {}",
                http_status.as_u16()
            ),
        ))
    }
}

/// The status in `headers`, if they carry one. Binary details are left out: tonic panics on
/// ones that are not base64, and nothing here reads them.
pub(crate) fn status_of(headers: &http::HeaderMap) -> Option<Status> {
    headers.get(Status::GRPC_STATUS)?;
    if headers.contains_key(Status::GRPC_STATUS_DETAILS) {
        let mut headers = headers.clone();
        headers.remove(Status::GRPC_STATUS_DETAILS);
        return Status::from_header_map(&headers);
    }
    Status::from_header_map(headers)
}

/// The gRPC messages of an HTTP/2 body, with incomplete ones charged to the node's
/// [`Budget`].
///
/// It reads every length prefix anyway (to refuse and to charge), so it also takes the
/// messages out, in place of tonic's `Streaming` decoder, which copied every DATA frame
/// into a buffer of its own before splitting messages off it. Here a message lying inside
/// one frame is a slice of that frame (no copy); only a message spread over frames is
/// gathered, copied once into a buffer of its exact size (up to 1 MiB allocated before its
/// bytes arrive; a larger one grows as they do).
pub(crate) struct MeteredBody {
    inner: tonic::body::Body,
    side: Side,
    m: Metering,
    fault: FaultSlot,
    /// Prefix bytes of the next message gathered so far, when its prefix spans frames.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Body bytes of the current message still to come, and its announced length.
    remaining: usize,
    len: usize,
    /// Body bytes received so far of a message spread over frames.
    gather: BytesMut,
    /// Bytes of the current incomplete message received (prefix included).
    received: usize,
    /// Messages complete and not yet taken, in order.
    ready: VecDeque<Bytes>,
    /// Messages completed so far ([`MeteredBody::completed`]).
    completed: u64,
    /// What ends the stream once `ready` is taken: a message compressed although the call
    /// named no compression (tonic's decoder refused it there too).
    pending_error: Option<Status>,
    /// Bytes charged for the current message.
    charged: Charge,
    /// The charge the messages of the last frame wait for: while it is set, `ready` is
    /// held back, and the stream waits for budget.
    held_back: Option<usize>,
    /// When the current message last received bytes (or got budget for them).
    last_progress: tokio::time::Instant,
    /// Wakes the stream to check for a stall. It is re-armed only when it fires, not per
    /// chunk: timer operations take the runtime's timer lock.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    freed: Option<Pin<Box<OwnedNotified>>>,
    done: bool,
    /// The limit of the message whose prefix comes next: the first message's, then
    /// `max_message`.
    limit: usize,
}

/// What taking the next message gives: a message, the status that ended the stream, or its
/// clean end.
pub(crate) type PolledMessage = Poll<Option<Result<Bytes, Status>>>;

impl MeteredBody {
    pub(crate) fn new<B>(inner: B, side: Side, m: Metering, fault: FaultSlot) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tonic::codegen::StdError>,
    {
        MeteredBody {
            inner: tonic::body::Body::new(inner),
            side,
            limit: m.max_first_message.min(m.max_message),
            m,
            fault,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
            len: 0,
            gather: BytesMut::new(),
            received: 0,
            ready: VecDeque::new(),
            completed: 0,
            pending_error: None,
            charged: Charge::default(),
            held_back: None,
            last_progress: tokio::time::Instant::now(),
            stall: None,
            freed: None,
            done: false,
        }
    }

    /// Ends the stream with `fault`: what it held is released and nothing more is read,
    /// but the messages completed before the fault are still handed out, then the status
    /// (grpc-go, so a Fabric peer, delivers the messages ahead of a bad one too). Until
    /// 2026-12-05 they were dropped with the stream, in no counter.
    fn fail(&mut self, fault: Fault) -> PolledMessage {
        let status = match &fault {
            Fault::Oversized(n) => Status::resource_exhausted(format!(
                "message of {n} bytes exceeds the limit of {}",
                self.limit
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
        self.gather = BytesMut::new();
        self.pending_error = Some(status);
        self.take_ready_then_end()
    }

    /// The next message completed before the stream's end, or the status that ends it.
    fn take_ready_then_end(&mut self) -> PolledMessage {
        if let Some(message) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        let status = self.pending_error.take();
        self.finish();
        Poll::Ready(status.map(Err))
    }

    /// Ends the stream: what it held is released, and nothing more is read.
    fn finish(&mut self) {
        self.release();
        self.stop_waiting();
        self.ready.clear();
        self.gather = BytesMut::new();
        self.done = true;
    }

    fn release(&mut self) {
        self.m.budget.give_back(&mut self.charged);
    }

    /// Takes the messages out of one DATA frame: those it completes go to `ready`, the
    /// start of one it leaves incomplete stays in the prefix or gather buffer.
    fn split(&mut self, data: Bytes) -> Result<(), Fault> {
        let bytes = data.as_ref();
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if self.remaining == 0 {
                // A prefix: in place when it lies whole in this frame, else gathered.
                let (flag, len) = if self.prefix_len == 0 && rest.len() >= PREFIX {
                    pos += PREFIX;
                    self.received = PREFIX;
                    (rest[0], (&rest[1..PREFIX]).get_u32() as usize)
                } else {
                    let take = (PREFIX - self.prefix_len).min(rest.len());
                    self.prefix[self.prefix_len..self.prefix_len + take]
                        .copy_from_slice(&rest[..take]);
                    self.prefix_len += take;
                    self.received += take;
                    pos += take;
                    if self.prefix_len < PREFIX {
                        break;
                    }
                    self.prefix_len = 0;
                    (self.prefix[0], (&self.prefix[1..]).get_u32() as usize)
                };
                if flag > 1 {
                    return Err(Fault::Framing(format!(
                        "compression flag {flag} (only 0 and 1 exist)"
                    )));
                }
                if len > self.limit {
                    return Err(Fault::Oversized(len));
                }
                self.limit = self.m.max_message;
                if flag == 1 {
                    // No compression is negotiated on these calls; tonic's decoder ended
                    // the stream here with this status, after the messages before it. It is
                    // bytes this node cannot read: counted as bad framing, and recorded as
                    // the stream's fault so that the sender's call ends with the status
                    // (it used to end OK while the node closed the connection).
                    let why = "received message with compressed-flag but no grpc-encoding \
                               was specified";
                    self.pending_error = Some(Status::internal(format!("protocol error: {why}")));
                    self.m.budget.bad_framing.fetch_add(1, Ordering::Relaxed);
                    *self.fault.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Fault::Framing(why.into()));
                    self.received = 0;
                    return Ok(());
                }
                let in_frame = bytes.len() - pos;
                if len <= in_frame {
                    // The whole body is here: a slice of the frame, no copy.
                    self.ready.push_back(data.slice(pos..pos + len));
                    self.completed += 1;
                    pos += len;
                    self.received = 0;
                    continue;
                }
                self.remaining = len;
                self.len = len;
                // Its exact size when small; a large one grows as its bytes arrive, so an
                // announced length alone (up to `max_message_size`) allocates nothing.
                self.gather.reserve(len.min(GATHER_UP_FRONT));
                continue;
            }
            let take = self.remaining.min(rest.len());
            self.gather.extend_from_slice(&rest[..take]);
            self.remaining -= take;
            self.received += take;
            pos += take;
            if self.remaining == 0 {
                debug_assert_eq!(self.gather.len(), self.len);
                // The message takes the whole buffer, spare capacity included: a large
                // one grew by doubling, and a tail kept here would hold that allocation
                // for as long as the stream lives, and lend it to the next small message
                // gathered, which would then pin it wherever it is kept.
                self.ready
                    .push_back(std::mem::take(&mut self.gather).freeze());
                self.completed += 1;
                self.received = 0;
            }
        }
        Ok(())
    }

    /// The next message of the body.
    pub(crate) fn poll_message(&mut self, cx: &mut Context<'_>) -> PolledMessage {
        loop {
            if self.held_back.is_none()
                && let Some(message) = self.ready.pop_front()
            {
                return Poll::Ready(Some(Ok(message)));
            }
            if self.pending_error.is_some() {
                return self.take_ready_then_end();
            }
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(need) = self.held_back {
                let small = self.small();
                // Register before trying, so a release in between is not missed.
                let freed = self
                    .freed
                    .get_or_insert_with(|| Box::pin(self.m.budget.freed.clone().notified_owned()));
                freed.as_mut().enable();
                if self.m.budget.try_take(&mut self.charged, need, small) {
                    self.freed = None;
                    self.stop_waiting();
                    self.last_progress = tokio::time::Instant::now();
                    continue;
                }
                if freed.as_mut().poll(cx).is_ready() {
                    self.freed = None;
                    continue;
                }
                return self.poll_stall(cx);
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return self.poll_stall(cx),
                Poll::Ready(None) => {
                    if let Some(fault) = self.cut_short() {
                        return self.fail(fault);
                    }
                    self.finish();
                    return Poll::Ready(self.side.ending(None).map(Err));
                }
                Poll::Ready(Some(Err(status))) => {
                    self.finish();
                    if self.side == Side::Request && status.code() == tonic::Code::Cancelled {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    // Trailers end the body, as they did for tonic's decoder; inside a
                    // message they cut it short, as the body's end does.
                    if let Some(fault) = self.cut_short() {
                        return self.fail(fault);
                    }
                    self.finish();
                    return Poll::Ready(self.side.ending(frame.into_trailers().ok()).map(Err));
                }
            };
            if let Err(f) = self.split(data) {
                return self.fail(f);
            }
            // Whatever the frame completed is released; what it leaves incomplete is
            // charged. A large message keeps no reserve, not even what a small one before
            // it in this frame held.
            let incomplete = self.received;
            let charged = self.charged.total();
            let small = self.small();
            let need = if incomplete >= charged
                && incomplete > 0
                && charged > 0
                && (small || self.charged.reserve == 0)
            {
                incomplete - charged
            } else {
                self.release();
                incomplete
            };
            if incomplete == 0 {
                continue;
            }
            if need == 0 || self.m.budget.try_take(&mut self.charged, need, small) {
                self.last_progress = tokio::time::Instant::now();
                continue;
            }
            self.m.budget.waits.fetch_add(1, Ordering::Relaxed);
            self.m.budget.waiting.fetch_add(1, Ordering::SeqCst);
            // The bytes that wait arrived now: the wait for budget is timed from here, not
            // from the last time an incomplete message got budget (or the stream began).
            self.last_progress = tokio::time::Instant::now();
            self.held_back = Some(need);
        }
    }

    /// What the message in progress holds, from the budget and from the reserve (the
    /// `grpc_framing` fuzz target sums them against the budget's books).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn charged_parts(&self) -> (usize, usize) {
        (self.charged.budget, self.charged.reserve)
    }

    /// The bytes the body waits for budget for, and whether they may come from the
    /// reserve (the `grpc_framing` fuzz target checks that a waiting body whose bytes now
    /// fit was woken).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn waits_for(&self) -> Option<(usize, bool)> {
        self.held_back.map(|need| (need, self.small()))
    }

    /// Messages the body has completed since it began (taken or still queued): what its
    /// reader took from HTTP/2, for the count of what a close loses.
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    /// Moves the messages complete and free to go (not held back for budget) to `out`, in
    /// order: a reader that pauses parks them with its batch.
    pub(crate) fn take_ready(&mut self, out: &mut VecDeque<Bytes>) {
        if self.held_back.is_none() {
            out.extend(self.ready.drain(..));
        }
    }

    /// Whether the incomplete message may use the reserve: announced at most [`SMALL`]
    /// bytes with its prefix, or its prefix not complete yet (at most 4 bytes held).
    fn small(&self) -> bool {
        self.remaining == 0 || self.len + PREFIX <= SMALL
    }

    /// The body ended (by its end or by trailers) inside a message: bad framing.
    fn cut_short(&self) -> Option<Fault> {
        (self.prefix_len > 0 || self.remaining > 0).then(|| {
            Fault::Framing(format!(
                "stream ended inside a message ({} bytes received)",
                self.received
            ))
        })
    }

    /// Leaves the budget's wait; the messages that waited may be taken.
    fn stop_waiting(&mut self) {
        if self.held_back.take().is_some() {
            self.m.budget.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Pending, unless the message in progress has stalled.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> PolledMessage {
        let in_progress = self.held_back.is_some() || self.prefix_len > 0 || self.remaining > 0;
        if !in_progress {
            return Poll::Pending;
        }
        let deadline = self.last_progress + self.m.stall;
        if tokio::time::Instant::now() >= deadline {
            let received = self.received;
            return self.fail(Fault::Stalled { received });
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
                return self.fail(Fault::Stalled { received });
            }
        }
        Poll::Pending
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.release();
        self.stop_waiting();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::task::Waker;

    /// A body handing out the frames given, then ending (or waiting, if not `ended`).
    struct Frames {
        frames: VecDeque<Result<Frame<Bytes>, Status>>,
        ended: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> PolledFrame {
            let this = self.get_mut();
            match this.frames.pop_front() {
                Some(f) => Poll::Ready(Some(f)),
                None if this.ended => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn metering(budget: &Arc<Budget>) -> Metering {
        Metering {
            budget: budget.clone(),
            max_message: 1 << 20,
            max_first_message: 1 << 20,
            stall: Duration::from_secs(10),
        }
    }

    /// A body of these frames, then its end.
    pub(crate) fn reader(
        frames: Vec<Frame<Bytes>>,
        side: Side,
        budget: &Arc<Budget>,
    ) -> MeteredBody {
        let body = Frames {
            frames: frames.into_iter().map(Ok).collect(),
            ended: true,
        };
        MeteredBody::new(body, side, metering(budget), FaultSlot::default())
    }

    /// A request body `body` whose messages, the first included, may be up to 4 MiB.
    fn taking_4_mib(body: Frames, budget: &Arc<Budget>) -> MeteredBody {
        let m = Metering {
            max_message: 4 << 20,
            max_first_message: 4 << 20,
            ..metering(budget)
        };
        MeteredBody::new(body, Side::Request, m, FaultSlot::default())
    }

    /// `len` bytes of `fill` behind a gRPC prefix with this flag.
    fn message(flag: u8, len: usize, fill: u8) -> Vec<u8> {
        let mut m = vec![flag];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.resize(PREFIX + len, fill);
        m
    }

    /// Messages one after the other: (flag, length, fill) each.
    pub(crate) fn wire(messages: &[(u8, usize, u8)]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|&(flag, len, fill)| message(flag, len, fill))
            .collect()
    }

    pub(crate) fn data(bytes: &[u8]) -> Frame<Bytes> {
        Frame::data(Bytes::copy_from_slice(bytes))
    }

    /// Every message until the end: the messages, and the status that ended it (if any).
    fn read_all(r: &mut MeteredBody) -> (Vec<Bytes>, Option<Status>) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            match r.poll_message(&mut cx) {
                Poll::Ready(Some(Ok(m))) => out.push(m),
                Poll::Ready(Some(Err(s))) => return (out, Some(s)),
                Poll::Ready(None) => return (out, None),
                Poll::Pending => panic!("the test body never waits"),
            }
        }
    }

    fn trailers(status: &Status) -> Frame<Bytes> {
        let mut h = http::HeaderMap::new();
        status.add_header(&mut h).expect("a status fits in headers");
        Frame::trailers(h)
    }

    #[test]
    fn many_messages_in_one_frame_are_slices_of_it() {
        let budget = Budget::new(1 << 20);
        let mut wire = Vec::new();
        for i in 0..50u8 {
            wire.extend(message(0, 100 + usize::from(i), i));
        }
        wire.extend(message(0, 0, 0));
        let frame = Bytes::from(wire);
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let mut r = reader(vec![Frame::data(frame.clone())], Side::Request, &budget);
        let (got, end) = read_all(&mut r);
        assert!(end.is_none());
        assert_eq!(got.len(), 51);
        for (i, m) in got.iter().take(50).enumerate() {
            assert_eq!(m.len(), 100 + i);
            assert!(m.iter().all(|b| usize::from(*b) == i));
            // No copy: the message lies inside the frame received.
            assert!(
                range.contains(&(m.as_ptr() as usize)),
                "message {i} was copied"
            );
        }
        assert!(got[50].is_empty());
        assert_eq!(budget.held(), (0, 0));
    }

    #[test]
    fn a_message_split_across_frames_is_gathered_and_charged_meanwhile() {
        let budget = Budget::new(1 << 20);
        let wire = message(0, 3000, 7);
        let mut r = reader(
            vec![
                data(&wire[..1000]),
                data(&wire[1000..2000]),
                data(&wire[2000..]),
            ],
            Side::Request,
            &budget,
        );
        let mut cx = Context::from_waker(Waker::noop());
        let first = r.poll_message(&mut cx);
        let Poll::Ready(Some(Ok(m))) = first else {
            panic!("expected the message, got {first:?}");
        };
        assert_eq!(m.len(), 3000);
        assert!(m.iter().all(|b| *b == 7));
        // While it was incomplete, its 2,000 bytes (prefix included) were held.
        assert_eq!(budget.held(), (0, 2000));
        let (rest, end) = read_all(&mut r);
        assert!(rest.is_empty() && end.is_none());
    }

    #[test]
    fn a_prefix_split_across_frames_is_read() {
        let budget = Budget::new(1 << 20);
        let wire = wire(&[(0, 10, 1), (0, 20, 2), (0, 30, 3)]);
        // Cuts inside the second prefix, then inside the third, then right after it.
        let cuts = [17, 19, 45, 50, wire.len()];
        let mut frames = Vec::new();
        let mut from = 0;
        for to in cuts {
            frames.push(data(&wire[from..to]));
            from = to;
        }
        let mut r = reader(frames, Side::Request, &budget);
        let (got, end) = read_all(&mut r);
        assert!(end.is_none());
        let lens: Vec<usize> = got.iter().map(Bytes::len).collect();
        assert_eq!(lens, [10, 20, 30]);
        for (m, fill) in got.iter().zip(1u8..) {
            assert!(m.iter().all(|b| *b == fill));
        }
        assert_eq!(budget.held().0, 0);
    }

    #[test]
    fn a_stream_ending_inside_a_message_is_bad_framing() {
        let budget = Budget::new(1 << 20);
        let wire = message(0, 100, 1);
        let mut r = reader(vec![data(&wire[..50])], Side::Request, &budget);
        let (got, end) = read_all(&mut r);
        assert!(got.is_empty());
        assert_eq!(end.expect("an error").code(), tonic::Code::Internal);
        assert_eq!(budget.bad_framing.load(Ordering::Relaxed), 1);
        assert_eq!(budget.held().0, 0);
    }

    #[test]
    fn trailers_inside_a_message_are_bad_framing() {
        // Trailers (here an OK status) cut the message short as the body's end does: the
        // same error and count, not a quiet end that loses the message.
        for cut in [3, 50] {
            let budget = Budget::new(1 << 20);
            let wire = message(0, 100, 1);
            let frames = vec![data(&wire[..cut]), trailers(&Status::ok(""))];
            let mut r = reader(frames, Side::Request, &budget);
            let (got, end) = read_all(&mut r);
            assert!(got.is_empty());
            let status = end.expect("an error");
            assert_eq!(status.code(), tonic::Code::Internal, "cut at {cut}");
            assert!(status.message().contains("inside a message"), "{status:?}");
            assert_eq!(budget.bad_framing.load(Ordering::Relaxed), 1);
            assert_eq!(budget.held().0, 0);
        }
    }

    #[test]
    fn a_large_gathered_message_leaves_no_buffer_behind_for_the_next() {
        // A message over the up-front allocation grows its buffer by doubling. The message
        // takes that whole buffer: a small message gathered after it gets one of its own,
        // rather than a slice of the large one's spare capacity that would keep it alive.
        let budget = Budget::new(8 << 20);
        let big = GATHER_UP_FRONT + GATHER_UP_FRONT / 2;
        let mut wire = message(0, big, 9);
        let small_at = wire.len();
        wire.extend(message(0, 100, 4));
        let mut frames = Vec::new();
        let mut from = 0;
        while from < small_at {
            let to = (from + 64 * 1024).min(small_at);
            frames.push(data(&wire[from..to]));
            from = to;
        }
        // The small message spread over two frames, so it is gathered too.
        frames.push(data(&wire[small_at..small_at + 50]));
        frames.push(data(&wire[small_at + 50..]));
        let body = Frames {
            frames: frames.into_iter().map(Ok).collect(),
            ended: true,
        };
        let mut r = taking_4_mib(body, &budget);
        let (got, end) = read_all(&mut r);
        assert!(end.is_none(), "{end:?}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), big);
        assert!(got[1].iter().all(|b| *b == 4) && got[1].len() == 100);
        let large = got[0].as_ptr() as usize..got[0].as_ptr() as usize + 2 * big;
        assert!(
            !large.contains(&(got[1].as_ptr() as usize)),
            "the small message lies in the large one's buffer"
        );
    }

    #[test]
    fn refusals_at_the_prefix() {
        let budget = Budget::new(1 << 20);
        let wire = wire(&[(0, 4, 1), (2, 4, 1)]);
        let mut r = reader(vec![data(&wire)], Side::Request, &budget);
        let (got, end) = read_all(&mut r);
        // The message ahead of the bad flag is delivered, then the refusal (until
        // 2026-12-05 the whole frame was refused, that message in no counter).
        assert_eq!(got.len(), 1);
        assert_eq!(end.expect("an error").code(), tonic::Code::Internal);
        assert!(matches!(take_fault(&r.fault), Some(Fault::Framing(_))));

        let mut r = reader(
            vec![data(&message(0, (1 << 20) + 1, 0)[..9])],
            Side::Request,
            &budget,
        );
        let (_, end) = read_all(&mut r);
        assert_eq!(
            end.expect("an error").code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(take_fault(&r.fault), Some(Fault::Oversized((1 << 20) + 1)));
    }

    #[test]
    fn a_compressed_message_ends_the_stream_after_those_before_it() {
        let budget = Budget::new(1 << 20);
        let wire = wire(&[(0, 4, 1), (1, 4, 1), (0, 4, 1)]);
        let mut r = reader(vec![data(&wire)], Side::Request, &budget);
        let (got, end) = read_all(&mut r);
        assert_eq!(got.len(), 1);
        assert_eq!(end.expect("an error").code(), tonic::Code::Internal);
        // Bytes this node cannot read: bad framing, and the stream's fault (so the sender
        // hears of it).
        assert_eq!(budget.bad_framing.load(Ordering::Relaxed), 1);
        assert!(matches!(take_fault(&r.fault), Some(Fault::Framing(_))));
    }

    #[test]
    fn how_a_response_ends() {
        let budget = Budget::new(1 << 20);
        let ok = http::StatusCode::OK;
        let one = message(0, 4, 9);
        let cases = [
            (Side::Response(ok), Some(Status::ok("")), None),
            (
                Side::Response(ok),
                Some(Status::unavailable("going away")),
                Some(tonic::Code::Unavailable),
            ),
            (Side::Response(ok), None, Some(tonic::Code::Unknown)),
            (
                Side::Response(http::StatusCode::SERVICE_UNAVAILABLE),
                None,
                Some(tonic::Code::Unavailable),
            ),
            (Side::EmptyResponse, None, None),
            (Side::Request, None, None),
        ];
        for (side, status, want) in cases {
            let mut frames = vec![data(&one)];
            frames.extend(status.as_ref().map(trailers));
            let mut r = reader(frames, side, &budget);
            let (got, end) = read_all(&mut r);
            assert_eq!(got.len(), 1, "{side:?} {status:?}");
            assert_eq!(end.map(|s| s.code()), want, "{side:?} {status:?}");
        }
    }

    #[test]
    fn a_cancelled_request_is_a_clean_end_and_a_cancelled_response_is_not() {
        let budget = Budget::new(1 << 20);
        for (side, want) in [
            (Side::Request, None),
            (
                Side::Response(http::StatusCode::OK),
                Some(tonic::Code::Cancelled),
            ),
        ] {
            let body = Frames {
                frames: [Err(Status::cancelled("reset"))].into(),
                ended: true,
            };
            let mut r = MeteredBody::new(body, side, metering(&budget), FaultSlot::default());
            let (_, end) = read_all(&mut r);
            assert_eq!(end.map(|s| s.code()), want);
        }
    }

    #[test]
    fn status_details_that_are_not_base64_do_not_panic() {
        let mut h = http::HeaderMap::new();
        h.insert(Status::GRPC_STATUS, http::HeaderValue::from_static("14"));
        h.insert(
            Status::GRPC_STATUS_DETAILS,
            http::HeaderValue::from_static("!!not base64!!"),
        );
        let status = status_of(&h).expect("a status");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    /// A small message whose first bytes took the budget's last room finishes from the
    /// reserve instead of waiting for the budget, and gives that room back.
    #[test]
    fn a_small_message_begun_on_the_budgets_last_bytes_moves_to_the_reserve() {
        let budget = Budget::new(200_000);
        let mut large = Charge::default();
        assert!(budget.try_take(&mut large, 199_990, true));
        let mut small = Charge::default();
        assert!(
            budget.try_take(&mut small, 8, true),
            "the budget's last bytes"
        );
        assert!(
            budget.try_take(&mut small, 4000, true),
            "the rest of a small message comes from the reserve"
        );
        assert_eq!((small.budget, small.reserve), (0, 4008));
        assert_eq!(budget.held().0, 199_990 + 4008);
        // The room it gave back is the budget's again.
        let mut other = Charge::default();
        assert!(budget.try_take(&mut other, 10, true));
        assert!(!budget.try_take(&mut large, 1, true), "the budget is spent");
        // A message past SMALL never draws on the reserve.
        let mut big = Charge::default();
        assert!(!budget.try_take(&mut big, SMALL + 1, true));
        budget.give_back(&mut small);
        budget.give_back(&mut other);
        budget.give_back(&mut large);
        assert_eq!(budget.held().0, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_waits_for_budget_with_the_messages_it_completes() {
        // 100 bytes of budget; the frame leaves more than the reserve's 64 KiB of a message
        // incomplete, so the reserve cannot take it either.
        let budget = Budget::new(100);
        let big = message(0, SMALL + 1000, 5);
        let mut first = message(0, 3, 1);
        first.extend_from_slice(&big[..PREFIX + SMALL + 1]);
        let body = Frames {
            frames: [Ok(data(&first))].into(),
            ended: false,
        };
        let mut r = MeteredBody::new(body, Side::Request, metering(&budget), FaultSlot::default());
        let mut cx = Context::from_waker(Waker::noop());
        // The frame's incomplete bytes do not fit: the complete message waits with them.
        assert!(r.poll_message(&mut cx).is_pending());
        assert_eq!(budget.waits.load(Ordering::Relaxed), 1);
        // Nothing comes for the stall timeout: the stream ends, releasing what it held,
        // after handing out the message the frame completed.
        tokio::time::advance(Duration::from_secs(11)).await;
        let got = r.poll_message(&mut cx);
        assert!(
            matches!(&got, Poll::Ready(Some(Ok(m))) if m.len() == 3),
            "the complete message comes before the stall: {got:?}"
        );
        assert_eq!(budget.held().0, 0);
        let end = r.poll_message(&mut cx);
        let Poll::Ready(Some(Err(s))) = end else {
            panic!("expected a stall, got {end:?}");
        };
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(budget.stalls.load(Ordering::Relaxed), 1);
        assert_eq!(budget.held().0, 0);
    }

    /// The reserve is for messages announced at most [`SMALL`], so that ordinary traffic
    /// flows while half-sent large messages fill the budget. It used to be judged by the
    /// bytes charged so far: the first frame of any large message took reserve once the
    /// budget was spent and kept it while it waited, and 128 such streams held all of it
    /// (found by a review, 2026-12-05).
    #[tokio::test]
    async fn large_messages_do_not_take_the_small_messages_reserve() {
        let budget = Budget::new(1000);
        let mut spent = Charge::default();
        assert!(
            budget.try_take(&mut spent, 1000, true),
            "half-sent messages hold the budget"
        );
        let mut cx = Context::from_waker(Waker::noop());
        let large = message(0, 1 << 20, 3);
        let mut larges = Vec::new();
        for _ in 0..RESERVE / SMALL {
            let body = Frames {
                frames: [Ok(data(&large[..SMALL]))].into(),
                ended: false,
            };
            let mut r =
                MeteredBody::new(body, Side::Request, metering(&budget), FaultSlot::default());
            assert!(r.poll_message(&mut cx).is_pending());
            larges.push(r);
        }
        let reserve_by_large = budget.reserve_held.load(Ordering::SeqCst);
        let small = message(0, 10_000, 4);
        let body = Frames {
            frames: [Ok(data(&small[..5000])), Ok(data(&small[5000..]))].into(),
            ended: false,
        };
        let mut r = MeteredBody::new(body, Side::Request, metering(&budget), FaultSlot::default());
        let got = r.poll_message(&mut cx);
        assert!(
            matches!(&got, Poll::Ready(Some(Ok(m))) if m.len() == 10_000),
            "a 10 KB message waits for budget ({got:?}): messages announced at 1 MiB hold \
             {reserve_by_large} bytes of the {RESERVE}-byte small-message reserve"
        );
    }

    /// A large message whose start follows, in one frame, the end of a small one that held
    /// reserve does not keep that reserve while it waits for budget.
    #[tokio::test]
    async fn a_large_message_inherits_no_reserve_from_the_small_one_before_it() {
        let budget = Budget::new(10_000);
        let mut spent = Charge::default();
        assert!(budget.try_take(&mut spent, 10_000, true));
        let small = message(0, 2000, 1);
        let large = message(0, 1 << 20, 2);
        let mut second = small[1000..].to_vec();
        second.extend_from_slice(&large[..5000]);
        let body = Frames {
            frames: [Ok(data(&small[..1000])), Ok(data(&second))].into(),
            ended: false,
        };
        let mut r = MeteredBody::new(body, Side::Request, metering(&budget), FaultSlot::default());
        let mut cx = Context::from_waker(Waker::noop());
        // The small message's first frame goes to the reserve; its second completes it and
        // starts the large one, which waits for budget, holding no reserve.
        assert!(r.poll_message(&mut cx).is_pending());
        assert_eq!(budget.waits.load(Ordering::Relaxed), 1);
        assert_eq!(budget.reserve_held.load(Ordering::SeqCst), 0);
        budget.give_back(&mut spent);
        let got = r.poll_message(&mut cx);
        assert!(
            matches!(&got, Poll::Ready(Some(Ok(m))) if m.len() == 2000),
            "{got:?}"
        );
    }

    /// Frames handed in by the test as it goes: `Pending` while none is queued.
    struct Fed(Queue);

    type Queue = Arc<Mutex<VecDeque<Frame<Bytes>>>>;

    /// A request body metered by `budget`, and the queue that feeds it.
    fn fed(budget: &Arc<Budget>) -> (MeteredBody, Queue) {
        let queue = Queue::default();
        let body = MeteredBody::new(
            Fed(queue.clone()),
            Side::Request,
            metering(budget),
            FaultSlot::default(),
        );
        (body, queue)
    }

    /// Feeds `r` one small message in one frame and takes it, leaving the stream between
    /// messages.
    fn deliver_one(r: &mut MeteredBody, queue: &Queue, cx: &mut Context<'_>) {
        queue.lock().unwrap().push_back(data(&message(0, 10, 1)));
        assert!(matches!(r.poll_message(cx), Poll::Ready(Some(Ok(_)))));
        assert!(r.poll_message(cx).is_pending());
    }

    impl Body for Fed {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> PolledFrame {
            match self.0.lock().unwrap().pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None => Poll::Pending,
            }
        }
    }

    /// A wait for budget is timed from the bytes that wait. The stall clock used to move
    /// only when an incomplete message got budget, so a stream whose messages had each
    /// fitted in one frame kept the time it began, and when its next message found the
    /// budget and reserve spent it was reset at once as stalled (found by a review,
    /// 2026-12-05).
    #[tokio::test(start_paused = true)]
    async fn a_wait_for_budget_is_timed_from_the_bytes_that_wait() {
        let budget = Budget::new(100);
        let mut spent = Charge::default();
        assert!(budget.try_take(&mut spent, 100, true));
        // The reserve is spent too (other streams' small messages, or large messages'
        // first frames, see the test above).
        budget.reserve_held.store(RESERVE, Ordering::SeqCst);
        let (mut r, queue) = fed(&budget);
        let mut cx = Context::from_waker(Waker::noop());
        // A healthy stream: a message in one frame, delivered.
        deliver_one(&mut r, &queue, &mut cx);
        // A minute later, the first frame of the next message arrives; no budget for it.
        tokio::time::advance(Duration::from_secs(60)).await;
        queue
            .lock()
            .unwrap()
            .push_back(data(&message(0, 1000, 2)[..500]));
        let got = r.poll_message(&mut cx);
        assert!(
            got.is_pending(),
            "bytes received just now are reported stalled at once: {got:?}"
        );
        assert_eq!(budget.stalls.load(Ordering::Relaxed), 0);
    }

    /// A message spread over frames is given a buffer of its announced size when its first
    /// frame comes, so it is copied once without growing; one announced larger gets only
    /// [`GATHER_UP_FRONT`] (1 MiB) before its bytes arrive, whatever it announced.
    #[tokio::test]
    async fn a_gathered_message_is_allocated_up_front_up_to_1_mib() {
        let budget = Budget::new(8 << 20);
        let mut cx = Context::from_waker(Waker::noop());
        for (len, up_front) in [(3000, 3000), (4 << 20, 1 << 20)] {
            let wire = message(0, len, 1);
            let body = Frames {
                frames: [Ok(data(&wire[..1000]))].into(),
                ended: false,
            };
            let mut r = taking_4_mib(body, &budget);
            assert!(r.poll_message(&mut cx).is_pending());
            assert_eq!(r.gather.len(), 1000 - PREFIX);
            let capacity = r.gather.capacity();
            assert!(
                (up_front..2 * up_front).contains(&capacity),
                "a message of {len} bytes: {capacity} bytes allocated after its first frame"
            );
        }
    }

    /// A flag its waker sets.
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A stream waiting for budget is woken when another stream's message completes and
    /// gives its bytes back, even when that stream then has nothing more to read (so no
    /// later release of nothing, at its next frame or its end, wakes the waiter by chance).
    #[tokio::test(start_paused = true)]
    async fn a_completed_message_wakes_a_stream_waiting_for_budget() {
        let budget = Budget::new(1000);
        // The reserve is spent by other streams: the waiter cannot draw on it.
        budget.reserve_held.store(RESERVE, Ordering::SeqCst);
        let (mut a, queue_a) = fed(&budget);
        let (mut b, queue_b) = fed(&budget);
        let noop = &mut Context::from_waker(Waker::noop());
        let woken = Arc::new(Woken(false.into()));
        let b_waker = Waker::from(woken.clone());
        let b_cx = &mut Context::from_waker(&b_waker);
        // A's first 1,000 bytes take the whole budget.
        let of_a = message(0, 1500, 1);
        queue_a.lock().unwrap().push_back(data(&of_a[..1000]));
        assert!(a.poll_message(noop).is_pending());
        assert_eq!(budget.held().0, RESERVE + 1000);
        // B's first bytes wait for budget.
        let of_b = message(0, 2000, 2);
        queue_b.lock().unwrap().push_back(data(&of_b[..500]));
        assert!(b.poll_message(b_cx).is_pending());
        assert_eq!(budget.waits.load(Ordering::Relaxed), 1);
        assert!(!woken.0.load(Ordering::SeqCst));
        // A's message completes; A reads on and finds nothing more.
        queue_a.lock().unwrap().push_back(data(&of_a[1000..]));
        assert!(matches!(a.poll_message(noop), Poll::Ready(Some(Ok(m))) if m.len() == 1500));
        assert!(a.poll_message(noop).is_pending());
        assert!(
            woken.0.load(Ordering::SeqCst),
            "B waits for budget that A gave back, and nothing woke it"
        );
        assert!(b.poll_message(b_cx).is_pending());
        assert_eq!(budget.held().0, RESERVE + 500, "B's bytes got the budget");
    }

    /// A response without a `grpc-status` ends with the code gRPC maps its HTTP status to.
    #[test]
    fn a_response_without_grpc_status_ends_with_its_http_status_mapped() {
        use http::StatusCode as H;
        use tonic::Code as C;
        let cases = [
            (H::OK, C::Unknown),
            (H::BAD_REQUEST, C::Internal),
            (H::UNAUTHORIZED, C::Unauthenticated),
            (H::FORBIDDEN, C::PermissionDenied),
            (H::NOT_FOUND, C::Unimplemented),
            (H::TOO_MANY_REQUESTS, C::Unavailable),
            (H::BAD_GATEWAY, C::Unavailable),
            (H::SERVICE_UNAVAILABLE, C::Unavailable),
            (H::GATEWAY_TIMEOUT, C::Unavailable),
            (H::INTERNAL_SERVER_ERROR, C::Unknown),
            (H::IM_A_TEAPOT, C::Unknown),
        ];
        for (http_status, want) in cases {
            let status = Side::Response(http_status).ending(None).expect("an error");
            assert_eq!(status.code(), want, "{http_status}");
            // tonic's words for a 200 without a status, so logs read the same.
            assert_eq!(
                status.message().contains("missing grpc-status trailer"),
                http_status == H::OK,
                "{status:?}"
            );
            // With trailers that carry no status, the same.
            let status = Side::Response(http_status)
                .ending(Some(http::HeaderMap::new()))
                .expect("an error");
            assert_eq!(status.code(), want, "{http_status} with empty trailers");
        }
    }

    /// A message begun and not finished stalls when nothing comes for the stall timeout,
    /// whether only part of its prefix came or part of its body; the bytes of a prefix
    /// split across frames are charged meanwhile and counted in what it received. A stream
    /// between messages does not stall, however long it is idle.
    #[tokio::test(start_paused = true)]
    async fn a_message_begun_stalls_and_an_idle_stream_does_not() {
        let wire = message(0, 1000, 3);
        for cuts in [&[3][..], &[3, 105]] {
            let budget = Budget::new(1 << 20);
            let (mut r, queue) = fed(&budget);
            let mut cx = Context::from_waker(Waker::noop());
            deliver_one(&mut r, &queue, &mut cx);
            tokio::time::advance(Duration::from_secs(60)).await;
            let idle = r.poll_message(&mut cx);
            assert!(idle.is_pending(), "an idle stream stalled: {idle:?}");
            let mut from = 0;
            for &to in cuts {
                queue.lock().unwrap().push_back(data(&wire[from..to]));
                assert!(r.poll_message(&mut cx).is_pending());
                assert_eq!(budget.held().0, to, "charged after {to} bytes");
                from = to;
            }
            tokio::time::advance(Duration::from_secs(9)).await;
            assert!(
                r.poll_message(&mut cx).is_pending(),
                "{cuts:?}: not yet stalled"
            );
            tokio::time::advance(Duration::from_secs(2)).await;
            let end = r.poll_message(&mut cx);
            let Poll::Ready(Some(Err(s))) = end else {
                panic!("{cuts:?}: expected a stall, got {end:?}");
            };
            assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
            assert_eq!(
                take_fault(&r.fault),
                Some(Fault::Stalled { received: from }),
                "{cuts:?}"
            );
            assert_eq!(budget.stalls.load(Ordering::Relaxed), 1);
            assert_eq!(budget.held().0, 0);
        }
    }

    /// A message that waits for more budget stays charged for what it already held: its
    /// gathered bytes are still in memory, so giving their budget back while it waits (and
    /// asking for all of it again) would let other streams take budget for bytes this one
    /// holds.
    #[tokio::test(start_paused = true)]
    async fn a_message_waiting_for_more_budget_keeps_what_it_holds() {
        let budget = Budget::new(1000);
        let mut other = Charge::default();
        assert!(budget.try_take(&mut other, 500, false));
        let (mut r, queue) = fed(&budget);
        let mut cx = Context::from_waker(Waker::noop());
        // Over SMALL: the reserve is not for it.
        let large = message(0, SMALL + 1000, 6);
        queue.lock().unwrap().push_back(data(&large[..400]));
        assert!(r.poll_message(&mut cx).is_pending());
        assert_eq!(budget.held().0, 900);
        queue.lock().unwrap().push_back(data(&large[400..800]));
        assert!(r.poll_message(&mut cx).is_pending());
        assert_eq!(budget.waits.load(Ordering::Relaxed), 1);
        assert_eq!(
            budget.held().0,
            900,
            "the waiting message gave back the 400 bytes it holds"
        );
        // The other stream's bytes come back: the message gets the 400 it waited for.
        budget.give_back(&mut other);
        assert!(r.poll_message(&mut cx).is_pending());
        assert_eq!(budget.held().0, 800);
        assert_eq!((r.charged.budget, r.charged.reserve), (800, 0));
    }

    /// `completed` counts every message the body completed, whether it lay in one frame or
    /// was gathered, and whether or not it was taken yet (it is what the driver counts as
    /// read from HTTP/2 when a stream closes).
    #[test]
    fn completed_counts_messages_in_one_frame_and_gathered() {
        let budget = Budget::new(1 << 20);
        let wire = wire(&[(0, 10, 1), (0, 20, 2), (0, 3000, 3)]);
        let frames = vec![data(&wire[..1000]), data(&wire[1000..])];
        let mut r = reader(frames, Side::Request, &budget);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(r.poll_message(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(r.completed(), 2, "two in the first frame, one taken");
        let (got, end) = read_all(&mut r);
        assert!(end.is_none());
        assert_eq!(got.len(), 2);
        assert_eq!(r.completed(), 3, "the third was gathered over both frames");
    }

    /// `take_ready` hands over the messages complete and free to go, in order (a reader
    /// that pauses parks them); none while the frame that completed them waits for budget.
    #[tokio::test(start_paused = true)]
    async fn take_ready_moves_the_messages_not_held_back() {
        let budget = Budget::new(1 << 20);
        let wire = wire(&[(0, 10, 1), (0, 20, 2), (0, 30, 3)]);
        let mut r = reader(vec![data(&wire)], Side::Request, &budget);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(r.poll_message(&mut cx), Poll::Ready(Some(Ok(m))) if m.len() == 10));
        let mut out = VecDeque::new();
        r.take_ready(&mut out);
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(lens, [20, 30]);
        let (rest, end) = read_all(&mut r);
        assert!(rest.is_empty() && end.is_none());

        // 100 bytes of budget: the frame's incomplete message waits, and the complete one
        // with it.
        let budget = Budget::new(100);
        let mut frame = message(0, 3, 1);
        frame.extend_from_slice(&message(0, SMALL + 1000, 5)[..PREFIX + SMALL + 1]);
        let body = Frames {
            frames: [Ok(data(&frame))].into(),
            ended: false,
        };
        let mut r = MeteredBody::new(body, Side::Request, metering(&budget), FaultSlot::default());
        assert!(r.poll_message(&mut cx).is_pending());
        let mut out = VecDeque::new();
        r.take_ready(&mut out);
        assert!(out.is_empty(), "a message held back for budget was taken");
    }
}
