//! The entry point of the `grpc_framing` cargo-fuzz target (`fuzz/`) and of its corpus
//! replay test.
//!
//! The driver reads gRPC's length-prefixed messages out of HTTP/2 bodies itself
//! (`MeteredBody`, in place of tonic's decoder), so that bytes of incomplete messages are
//! charged to a node-wide budget: it is the first code of ours that a peer's bytes reach
//! after h2, before any handshake. [`grpc_framing`] builds one or two bodies from the
//! input (DATA frames cut anywhere, pauses between frames, trailers with any
//! `grpc-status`, `grpc-message` and `grpc-status-details-bin` values, an error from the
//! transport; at most [`CAP`] bytes in all), optionally beside other streams' stalled
//! half-sent messages that fill the budget and all but a chosen part of the reserve, reads
//! them, and checks more than the absence of panics:
//!
//! - **The same messages however the bytes are cut.** A reference parser, written from
//!   gRPC's framing rules alone, reads the body's bytes joined; the metered body must hand
//!   out the same messages byte for byte, in order, and end the same way: clean, cut short
//!   inside a message, a compression flag other than 0 and 1, a message over its limit
//!   (the first message's limit apart), a compressed message where none was negotiated, or
//!   the transport's error.
//! - **The same status code.** A clean end of a response gives the code its trailers'
//!   `grpc-status` gives (OK is no error; a `grpc-message` that is not percent-encoded
//!   UTF-8 makes it UNKNOWN, as in tonic), or lacking one, the status gRPC maps its HTTP
//!   status to (200 without `grpc-status` is UNKNOWN); both are written here from the gRPC
//!   spec, not taken from the driver. A request's end, and a trailers-only response's, is
//!   clean. A transport error gives its own code (a request cancelled by it ends clean);
//!   bad framing gives INTERNAL, a message over its limit RESOURCE_EXHAUSTED.
//! - **The fault names the same cause.** The reader's reported fault (`Fault`) is
//!   `Oversized` with the announced length, or `Framing` naming the cause: the bad flag's
//!   value, the compressed flag, or a message cut short with how many of its bytes
//!   (prefix included) arrived; a clean end and the transport's error leave no fault.
//! - **The budget's books balance.** After every poll, what the node-wide budget holds is
//!   what the live bodies say they hold; a body waiting for budget is counted among the
//!   waiters exactly once; the budget never holds more than its limit and the reserve; an
//!   ended body holds nothing, and when every body has ended or been dropped neither does
//!   the budget.
//! - **Wake-ups.** Each body is polled as a task: with a waker of its own, and again only
//!   when that waker was woken (or its last poll handed out a message). A body is pending
//!   only at a pause or while it waits for budget. A pause's frame arrives the way h2 hands
//!   one over: by waking the waker the body's last poll of its stream gave. A body waiting
//!   for budget must be woken by whatever frees budget (another body's message completing
//!   or failing, a body dropped): when no body can move, no waiting body's bytes may fit in
//!   what the budget (or, for a message of at most 64 KiB, the reserve) has free.
//!
//! Two bodies share one budget (as a node's streams do), so one waits for budget that the
//! other holds and is woken when the other's message completes. Time does not pass: when
//! no body can move, a node's streams would stall, and one is dropped (a stalled stream's
//! release is the same as a dropped one's): the other streams' stalled messages first,
//! the last taken first, then the first body.

use crate::metered::{Budget, FaultSlot, MeteredBody, Metering, PREFIX, RESERVE, Side};
use crate::metered::{Fault, PolledFrame, take_fault};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use tonic::Status;

/// What an op byte of the input asks for (the byte modulo their number).
const RAW: u8 = 0;
const MESSAGE: u8 = 1;
const CUT: u8 = 2;
const SWITCH: u8 = 3;
const TRAILERS: u8 = 4;
const ERROR: u8 = 5;
const FILL: u8 = 6;
const PAUSE: u8 = 7;
const OPS: u8 = 8;

/// The largest message an op may announce: past the largest limit an input can set
/// (1 MiB), so that every limit can be passed.
const LARGEST: usize = (1 << 20) + 64;

/// The most bytes an input's bodies may carry, over all its ops: an op that would pass it
/// is skipped (its input bytes still read). A message announced over every limit the
/// input set carries its prefix alone, which is all a reader sees of it, so a few bytes of
/// input cannot make a megabyte of body unless it is read.
pub const CAP: usize = 4 << 20;

/// A message of at most this many bytes, prefix included, may draw on the reserve when the
/// budget is spent (the driver's documented rule, written here apart).
const SMALL: usize = 64 << 10;

/// The mode bit that puts other streams' stalled half-sent messages beside the bodies;
/// a u16 after the header says how many bytes of the reserve they leave free.
const BALLAST: u8 = 1 << 5;

/// One item a scripted body hands out.
enum Item {
    Data(Bytes),
    Trailers(http::HeaderMap),
    Error(Status),
    /// Nothing yet (pending once), as when the next frame has not arrived: the other
    /// body is read meanwhile.
    Pause,
}

/// Where a body paused leaves the waker of the poll that found the pause, as h2 keeps the
/// waker of the task that polled a stream: the frame's arrival wakes it.
type Arrival = Arc<Mutex<Option<Waker>>>;

/// A body that hands out its items, then ends. At a pause it is pending, and `arrival`
/// holds the waker to wake when its next frame arrives.
struct Script {
    items: VecDeque<Item>,
    arrival: Arrival,
}

impl Body for Script {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        let item = this.items.pop_front();
        *lock(&this.arrival) = matches!(item, Some(Item::Pause)).then(|| cx.waker().clone());
        match item {
            None => Poll::Ready(None),
            Some(Item::Data(d)) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Some(Item::Trailers(h)) => Poll::Ready(Some(Ok(Frame::trailers(h)))),
            Some(Item::Error(s)) => Poll::Ready(Some(Err(s))),
            Some(Item::Pause) => Poll::Pending,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Another stream's half-sent message, stalled: its first frame, then nothing.
struct Stalled(Option<Bytes>);

impl Body for Stalled {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> PolledFrame {
        match self.get_mut().0.take() {
            Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
            None => Poll::Pending,
        }
    }
}

/// A message of 65,531 bytes (with its prefix, 64 KiB: small enough for the reserve),
/// whose first bytes a stalled stream sends.
fn stalled_message() -> &'static Bytes {
    static M: OnceLock<Bytes> = OnceLock::new();
    M.get_or_init(|| {
        let mut m = vec![0u8; SMALL];
        m[1..PREFIX].copy_from_slice(&((SMALL - PREFIX) as u32).to_be_bytes());
        Bytes::from(m)
    })
}

/// A task's waker: it only notes that it was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Reads input bytes front to back; past the end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// One body to read: its items, and the side of the call it is read at.
struct Stream {
    items: Vec<Item>,
    frame: Vec<u8>,
    side: Side,
}

impl Stream {
    fn new(side: Side) -> Self {
        Stream {
            items: Vec::new(),
            frame: Vec::new(),
            side,
        }
    }

    /// Ends the DATA frame being written (an empty one too: h2 hands those out).
    fn cut(&mut self) {
        let frame = std::mem::take(&mut self.frame);
        self.items.push(Item::Data(Bytes::from(frame)));
    }

    fn finish(mut self) -> (Vec<Item>, Side) {
        if !self.frame.is_empty() {
            self.cut();
        }
        (self.items, self.side)
    }
}

fn side_of(bits: u8, code: u16) -> Side {
    match bits & 3 {
        0 => Side::Request,
        1 => Side::Response(http::StatusCode::OK),
        2 => Side::Response(http::StatusCode::from_u16(100 + code % 500).unwrap_or_default()),
        _ => Side::EmptyResponse,
    }
}

/// A header value from the input's bytes, if HTTP allows them (h2 refuses the others
/// before a body sees them).
fn value(input: &mut Input<'_>) -> Option<http::HeaderValue> {
    let n = usize::from(input.byte() % 64);
    http::HeaderValue::from_bytes(input.bytes(n)).ok()
}

/// The input's bodies and their settings.
struct Case {
    streams: Vec<(Vec<Item>, Side)>,
    budget: usize,
    max_message: usize,
    max_first_message: usize,
    /// Bytes of the reserve other streams' stalled messages leave free, if there are any.
    ballast: Option<usize>,
}

fn parse(data: &[u8]) -> Case {
    let mut input = Input(data);
    let mode = input.byte();
    let budget = usize::from(input.u16()) * 8;
    let max_message = usize::from(input.u16()) * 16;
    let max_first_message = usize::from(input.u16()) * 16;
    let ballast = (mode & BALLAST != 0).then(|| usize::from(input.u16()));
    let two = mode & 1 == 1;
    // Bytes the bodies may still carry: an op that would pass `CAP` is skipped.
    let mut room = CAP;
    let mut fits = |n: usize| {
        let ok = n <= room;
        if ok {
            room -= n;
        }
        ok
    };
    let mut streams = vec![Stream::new(side_of(mode >> 1, u16::from(mode)))];
    if two {
        streams.push(Stream::new(side_of(mode >> 3, u16::from(mode) * 7)));
    }
    let mut at = 0;
    while !input.0.is_empty() {
        let s = &mut streams[at];
        match input.byte() % OPS {
            RAW => {
                let n = usize::from(input.byte());
                let bytes = input.bytes(n);
                if fits(bytes.len()) {
                    s.frame.extend_from_slice(bytes);
                }
            }
            MESSAGE => {
                let flag = input.byte();
                let len = (usize::from(input.byte()) << 16 | usize::from(input.u16())) % LARGEST;
                let fill = input.byte();
                // Over every limit, the prefix is refused and nothing after it is read.
                let body = if len > max_message { 0 } else { len };
                if fits(PREFIX + body) {
                    s.frame.push(flag);
                    s.frame.extend_from_slice(&(len as u32).to_be_bytes());
                    s.frame.resize(s.frame.len() + body, fill);
                }
            }
            CUT => s.cut(),
            SWITCH => at = (at + 1) % streams.len(),
            FILL => {
                let n = usize::from(input.u16());
                let fill = input.byte();
                if fits(n) {
                    s.frame.resize(s.frame.len() + n, fill);
                }
            }
            PAUSE => {
                if !s.frame.is_empty() {
                    s.cut();
                }
                s.items.push(Item::Pause);
            }
            TRAILERS => {
                if !s.frame.is_empty() {
                    s.cut();
                }
                let mut h = http::HeaderMap::new();
                for name in [
                    Status::GRPC_STATUS,
                    Status::GRPC_MESSAGE,
                    Status::GRPC_STATUS_DETAILS,
                ] {
                    if let Some(v) = value(&mut input) {
                        h.insert(name, v);
                    }
                }
                s.items.push(Item::Trailers(h));
            }
            _ => {
                if !s.frame.is_empty() {
                    s.cut();
                }
                let code = tonic::Code::from(i32::from(input.byte() % 17));
                s.items
                    .push(Item::Error(Status::new(code, "transport error")));
            }
        }
    }
    Case {
        streams: streams.into_iter().map(Stream::finish).collect(),
        budget,
        max_message,
        max_first_message,
        ballast,
    }
}

/// How the reference parser says a body ends.
#[derive(Debug)]
enum End {
    /// Ended (by its end or by trailers) inside a message, this many of its bytes
    /// (prefix included) received.
    CutShort(usize),
    /// This compression flag, other than 0 and 1.
    BadFlag(u8),
    /// A message announced over its limit.
    Oversized(usize),
    /// A message with the compression flag, none negotiated.
    Compressed,
    /// The body's end, with these trailers if any.
    Clean(Option<http::HeaderMap>),
    /// The transport's error.
    Transport(Status),
}

/// gRPC's framing read from the body's bytes joined: the messages, and how it ends.
/// Nothing after the first trailers or error is read.
fn reference(items: &[Item], max_first: usize, max: usize) -> (Vec<Bytes>, End) {
    let mut joined = Vec::new();
    let mut last = End::Clean(None);
    for item in items {
        match item {
            Item::Data(d) => joined.extend_from_slice(d),
            Item::Pause => {}
            Item::Trailers(h) => {
                last = End::Clean(Some(h.clone()));
                break;
            }
            Item::Error(s) => {
                last = End::Transport(s.clone());
                break;
            }
        }
    }
    let wire = Bytes::from(joined);
    let mut messages = Vec::new();
    let mut pos = 0;
    let mut limit = max_first.min(max);
    while pos < wire.len() {
        let rest = &wire[pos..];
        if rest.len() < PREFIX {
            return (messages, cut_short(last, rest.len()));
        }
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if flag > 1 {
            return (messages, End::BadFlag(flag));
        }
        if len > limit {
            return (messages, End::Oversized(len));
        }
        limit = max;
        if flag == 1 {
            return (messages, End::Compressed);
        }
        if rest.len() < PREFIX + len {
            return (messages, cut_short(last, rest.len()));
        }
        messages.push(wire.slice(pos + PREFIX..pos + PREFIX + len));
        pos += PREFIX + len;
    }
    (messages, last)
}

/// A body cut short inside a message ends as bad framing, unless the transport's error
/// ended it first.
fn cut_short(last: End, received: usize) -> End {
    match last {
        End::Transport(s) => End::Transport(s),
        _ => End::CutShort(received),
    }
}

/// The status a response's clean end gives the call (`None`: OK), read as gRPC reads it
/// ("PROTOCOL-HTTP2.md" and "http-grpc-status-mapping.md" in grpc/grpc): the trailers'
/// `grpc-status` if they carry one, else the HTTP status mapped. A request's end says
/// nothing (the server's handler decides), nor does a trailers-only response's (its
/// status, OK, came with the headers).
fn expected_ending(side: Side, trailers: Option<&http::HeaderMap>) -> Option<tonic::Code> {
    use tonic::Code;
    let Side::Response(http_status) = side else {
        return None;
    };
    if let Some(t) = trailers
        && let Some(v) = t.get("grpc-status")
    {
        // `grpc-status` is a code's decimal number, 0 to 16; anything else is UNKNOWN.
        let s = v.as_bytes();
        let number =
            (!s.is_empty() && s.iter().all(u8::is_ascii_digit) && (s == b"0" || s[0] != b'0'))
                .then(|| std::str::from_utf8(s).ok()?.parse::<u8>().ok())
                .flatten()
                .filter(|n| *n <= 16);
        let mut code = number.map_or(Code::Unknown, |n| Code::from(i32::from(n)));
        // `grpc-message` is percent-encoded UTF-8; tonic makes a status whose message is
        // not UNKNOWN, whatever its code.
        if let Some(m) = t.get("grpc-message")
            && std::str::from_utf8(&percent_decoded(m.as_bytes())).is_err()
        {
            code = Code::Unknown;
        }
        return (code != Code::Ok).then_some(code);
    }
    // No grpc-status: gRPC's mapping of HTTP statuses; a 200 that ends without one is a
    // protocol error, UNKNOWN (as in tonic and grpc-go).
    Some(match http_status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    })
}

/// Percent-decoding as gRPC's `grpc-message` uses it: `%` and two hex digits is a byte,
/// anything else stands for itself.
fn percent_decoded(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|b| hex(*b)),
                s.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// One body being read, beside what the reference says of it.
struct Reader {
    body: MeteredBody,
    /// Set when the body's task is woken (or goes on after handing out a message).
    woken: Arc<Flag>,
    waker: Waker,
    /// The waker its pause left, until its next frame arrives.
    arrival: Arrival,
    fault: FaultSlot,
    side: Side,
    want: Vec<Bytes>,
    end: End,
    got: usize,
}

/// Checks a body's end against the reference's.
fn check_end(r: &Reader, status: Option<Status>) {
    assert_eq!(r.got, r.want.len(), "messages before the end ({:?})", r.end);
    let fault = take_fault(&r.fault);
    #[cfg(test)]
    tests::CHECKS.with_borrow_mut(|checks| {
        let code = status.as_ref().map(Status::code);
        checks.push(format!("end {:?}: {code:?}", r.end));
    });
    match &r.end {
        End::CutShort(_) | End::BadFlag(_) | End::Compressed => {
            let s = status.expect("a status for bad framing");
            assert_eq!(s.code(), tonic::Code::Internal, "{s:?} for {:?}", r.end);
            let Some(Fault::Framing(why)) = &fault else {
                panic!("{fault:?} for {:?}", r.end);
            };
            let names = match &r.end {
                End::CutShort(n) => {
                    why.contains("inside a message") && why.contains(&format!("({n} bytes"))
                }
                End::BadFlag(flag) => why.contains(&format!("compression flag {flag} ")),
                _ => why.contains("compressed-flag"),
            };
            assert!(names, "fault {why:?} for {:?}", r.end);
        }
        End::Oversized(n) => {
            let s = status.expect("a status for an oversized message");
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert_eq!(fault, Some(Fault::Oversized(*n)));
        }
        End::Clean(trailers) => {
            let expected = expected_ending(r.side, trailers.as_ref());
            assert_eq!(
                status.as_ref().map(Status::code),
                expected,
                "{:?} ending with {trailers:?}",
                r.side
            );
            assert_eq!(fault, None);
        }
        End::Transport(s) => {
            let cancelled = r.side == Side::Request && s.code() == tonic::Code::Cancelled;
            let expected = (!cancelled).then(|| s.code());
            assert_eq!(status.as_ref().map(Status::code), expected, "{status:?}");
            assert_eq!(fault, None);
        }
    }
}

/// A runtime for the stall timer a waiting body arms (never fired: time does not pass).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The budget's books: what it holds is what the live readers hold, each waiting reader
/// is counted once, and it holds no more than its limit and the reserve.
fn check_books(budget: &Budget, readers: &[Option<Reader>], stalled: &[MeteredBody]) {
    let (held, reserve, waiters) = budget.books();
    let bodies = readers.iter().flatten().map(|r| &r.body).chain(stalled);
    let (charged, reserved, waiting) = bodies.fold((0, 0, 0), |acc, body| {
        let (b, res) = body.charged_parts();
        (
            acc.0 + b,
            acc.1 + res,
            acc.2 + usize::from(body.waits_for().is_some()),
        )
    });
    assert_eq!((held, reserve), (charged, reserved), "the budget's books");
    assert_eq!(waiters, waiting, "waiters");
    assert!(held <= budget.limit(), "{held} over the limit");
    assert!(reserve <= RESERVE, "{reserve} over the reserve");
}

/// Whether the bytes a body waits for would fit now: in the budget, or for a message of at
/// most [`SMALL`] bytes, in the reserve (the whole message's charge moves there).
fn would_fit(budget: &Budget, body: &MeteredBody, need: usize, small: bool) -> bool {
    let (held, reserve, _) = budget.books();
    let (b, res) = body.charged_parts();
    held + need <= budget.limit()
        || (small && b + res + need <= SMALL && reserve + b + need <= RESERVE)
}

/// Other streams' stalled half-sent messages: they fill the budget, then the reserve but
/// for `free` bytes. Each holds at most 64 KiB (a small message's first frame).
fn stall_others(budget: &Budget, metering: &Metering, free: usize) -> Vec<MeteredBody> {
    // Other streams: past their first message, and not bound by this input's limits.
    let metering = Metering {
        max_message: SMALL,
        max_first_message: SMALL,
        ..metering.clone()
    };
    let mut stalled = Vec::new();
    loop {
        let (held, reserve, _) = budget.books();
        let n = if held < budget.limit() {
            budget.limit() - held
        } else {
            RESERVE.saturating_sub(reserve + free)
        }
        .min(SMALL - 1);
        if n == 0 {
            return stalled;
        }
        let first = Stalled(Some(stalled_message().slice(..n)));
        let mut body =
            MeteredBody::new(first, Side::Request, metering.clone(), FaultSlot::default());
        let polled = body.poll_message(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "a stalled message: {polled:?}");
        let (b, res) = body.charged_parts();
        assert_eq!(
            (b + res, body.waits_for()),
            (n, None),
            "a stalled message's charge"
        );
        stalled.push(body);
    }
}

/// The `grpc_framing` fuzz target: see the module documentation.
pub fn grpc_framing(data: &[u8]) {
    run(data);
}

/// What reading an input came to, for the seeds' test.
#[derive(Debug, Default)]
struct Ran {
    /// Messages handed out, over every body.
    messages: usize,
    /// Times a body had to wait for budget.
    waits: u64,
    /// Bodies dropped while they waited for budget no other body would free.
    dropped: usize,
    /// Times a waiting body was woken.
    wakes: usize,
}

fn run(data: &[u8]) -> Ran {
    let case = parse(data);
    let mut ran = Ran::default();
    let _time = runtime().enter();
    let budget = Budget::new(case.budget);
    let metering = Metering {
        budget: budget.clone(),
        max_message: case.max_message,
        max_first_message: case.max_first_message,
        stall: Duration::from_secs(3600),
    };
    let mut stalled = case
        .ballast
        .map_or_else(Vec::new, |free| stall_others(&budget, &metering, free));
    let mut readers: Vec<Option<Reader>> = case
        .streams
        .into_iter()
        .map(|(items, side)| {
            let (want, end) = reference(&items, case.max_first_message, case.max_message);
            let fault = FaultSlot::default();
            let arrival = Arrival::default();
            let script = Script {
                items: items.into_iter().collect(),
                arrival: arrival.clone(),
            };
            let body = MeteredBody::new(script, side, metering.clone(), fault.clone());
            // A task polls its body first without being woken.
            let woken = Arc::new(Flag(AtomicBool::new(true)));
            Some(Reader {
                body,
                waker: Waker::from(woken.clone()),
                woken,
                arrival,
                fault,
                side,
                want,
                end,
                got: 0,
            })
        })
        .collect();
    check_books(&budget, &readers, &stalled);
    while readers.iter().any(Option::is_some) {
        // Each body woken is polled once, in turn.
        let mut polled = false;
        for i in 0..readers.len() {
            let Some(r) = &mut readers[i] else { continue };
            if !r.woken.0.swap(false, Ordering::SeqCst) {
                continue;
            }
            polled = true;
            if r.body.waits_for().is_some() {
                ran.wakes += 1;
            }
            match r.body.poll_message(&mut Context::from_waker(&r.waker)) {
                Poll::Ready(Some(Ok(m))) => {
                    let want = r
                        .want
                        .get(r.got)
                        .expect("no more messages than the reference");
                    assert_eq!(&m, want, "message {}", r.got);
                    r.got += 1;
                    ran.messages += 1;
                    // Its task goes on to the next message.
                    r.woken.0.store(true, Ordering::SeqCst);
                }
                Poll::Ready(end) => {
                    let status = end.map(|e| e.expect_err("the end"));
                    check_end(r, status);
                    assert_eq!(
                        r.body.charged_parts(),
                        (0, 0),
                        "an ended body holds nothing"
                    );
                    readers[i] = None;
                }
                Poll::Pending => {
                    let paused = lock(&r.arrival).is_some();
                    assert!(
                        paused || r.body.waits_for().is_some(),
                        "pending without a pause or a wait for budget"
                    );
                }
            }
            check_books(&budget, &readers, &stalled);
        }
        // The frames after the pauses arrive, waking the tasks that polled for them.
        let mut arrived = false;
        for r in readers.iter().flatten() {
            if let Some(waker) = lock(&r.arrival).take() {
                waker.wake();
                arrived = true;
            }
        }
        if polled || arrived {
            continue;
        }
        // No body can move: each waits for budget (a paused one was woken by its frame),
        // and no other body freed any it can use since, or it would have been woken.
        for r in readers.iter().flatten() {
            #[cfg(test)]
            tests::CHECKS.with_borrow_mut(|checks| {
                checks.push(format!("stuck {:?}", r.body.waits_for()));
            });
            let Some((need, small)) = r.body.waits_for() else {
                panic!(
                    "a body not woken after its next frame arrived ({:?})",
                    r.end
                );
            };
            assert!(
                !would_fit(&budget, &r.body, need, small),
                "a lost wake-up: a body waits for {need} bytes (small: {small}) that fit now \
                 (budget {:?} of {})",
                budget.books(),
                budget.limit()
            );
        }
        // In a node they would stall: drop a stalled stream, or else the first body, as
        // its stream's end would, and go on.
        if stalled.pop().is_none()
            && let Some(slot) = readers.iter_mut().find(|r| r.is_some())
        {
            *slot = None;
            ran.dropped += 1;
        }
        check_books(&budget, &readers, &stalled);
    }
    drop(stalled);
    assert_eq!(budget.books(), (0, 0, 0), "everything given back");
    ran.waits = budget.waits.load(std::sync::atomic::Ordering::Relaxed);
    ran
}

/// Writes inputs for [`grpc_framing`], for the seeds.
struct Writer(Vec<u8>);

impl Writer {
    fn new(two: bool, sides: u8, budget: u16, max: u16, max_first: u16) -> Self {
        let mut w = vec![u8::from(two) | sides << 1];
        w.extend_from_slice(&budget.to_be_bytes());
        w.extend_from_slice(&max.to_be_bytes());
        w.extend_from_slice(&max_first.to_be_bytes());
        Writer(w)
    }

    /// Other streams' stalled messages beside the bodies, leaving `free` bytes of the
    /// reserve (right after [`Writer::new`]).
    fn ballast(mut self, free: u16) -> Self {
        self.0[0] |= BALLAST;
        self.0.extend_from_slice(&free.to_be_bytes());
        self
    }

    fn message(mut self, flag: u8, len: u32, fill: u8) -> Self {
        let l = len.to_be_bytes();
        self.0
            .extend_from_slice(&[MESSAGE, flag, l[1], l[2], l[3], fill]);
        self
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(&[RAW, bytes.len() as u8]);
        self.0.extend_from_slice(bytes);
        self
    }

    fn fill(mut self, n: u16, fill: u8) -> Self {
        let n = n.to_be_bytes();
        self.0.extend_from_slice(&[FILL, n[0], n[1], fill]);
        self
    }

    fn op(mut self, op: u8) -> Self {
        self.0.push(op);
        self
    }

    /// Input bytes as they are, for what the other methods do not write.
    #[cfg(test)]
    fn extend(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn trailers(mut self, status: &[u8], message: &[u8], details: &[u8]) -> Self {
        self.0.push(TRAILERS);
        for v in [status, message, details] {
            self.0.push(v.len() as u8);
            self.0.extend_from_slice(v);
        }
        self
    }
}

/// The committed seeds of the `grpc_framing` target (`fuzz/corpus/grpc_framing/seed-*`):
/// each reaches one way a body is read or ends.
pub fn grpc_framing_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let kib = |n: u16| n * 64; // limits are in units of 16 bytes
    let large = kib(128);
    // A message of 70,000 bytes: over the 64 KiB that may draw on the reserve.
    let large_prefix = [0, 0, 1, 0x11, 0x70];
    let seeds = [
        (
            "messages_in_one_frame",
            Writer::new(false, 0, 1024, kib(64), kib(16))
                .message(0, 10, 1)
                .message(0, 0, 0)
                .message(0, 300, 2),
        ),
        (
            "a_message_across_frames",
            Writer::new(false, 0, 8192, kib(64), kib(16))
                .message(0, 2000, 3)
                .raw(&[0, 0, 0])
                .op(CUT)
                .raw(&[0, 4, 5])
                .op(CUT)
                .message(0, 5, 6),
        ),
        (
            "cut_short",
            Writer::new(false, 0, 1024, kib(64), kib(16))
                .message(0, 4, 1)
                .raw(&[0, 0, 0, 0, 9, 1, 2]),
        ),
        (
            "bad_flag",
            Writer::new(false, 0, 1024, kib(64), kib(16))
                .message(0, 4, 1)
                .message(7, 4, 1),
        ),
        (
            "compressed",
            Writer::new(false, 0, 1024, kib(64), kib(16))
                .message(0, 4, 1)
                .message(1, 4, 1)
                .message(0, 4, 2),
        ),
        (
            "first_message_over_its_limit",
            Writer::new(false, 0, 1024, kib(64), 4).message(0, 100, 1),
        ),
        (
            "later_message_over_the_limit",
            Writer::new(false, 0, 1024, 8, 8)
                .message(0, 100, 1)
                .message(0, 200, 1),
        ),
        (
            "response_trailers",
            Writer::new(false, 1, 1024, kib(64), kib(16))
                .message(0, 8, 1)
                .trailers(b"14", b"unavailable%20now", b"AAEC"),
        ),
        (
            "response_without_status",
            Writer::new(false, 2, 1024, kib(64), kib(16)).message(0, 8, 1),
        ),
        (
            "transport_error_mid_message",
            Writer::new(false, 0, 1024, kib(64), kib(16))
                .message(0, 8, 1)
                .raw(&[0, 0, 0, 1, 0, 1])
                .op(ERROR)
                .op(1),
        ),
        (
            // 8 KiB of budget: each body's large message takes 5,005 bytes of it before
            // its body pauses, so the second waits until the first completes.
            "two_streams_share_a_small_budget",
            Writer::new(true, 0, 1024, large, large)
                .raw(&large_prefix)
                .fill(5000, 1)
                .op(PAUSE)
                .op(SWITCH)
                .raw(&large_prefix)
                .fill(5000, 2)
                .op(PAUSE)
                .op(SWITCH)
                .fill(65_000, 1)
                .op(SWITCH)
                .fill(65_000, 2),
        ),
        (
            // No budget, and other streams' stalled messages leave 1,000 bytes of the
            // reserve: the first body's small message takes 905 of them, the second's
            // waits for its 505 until the first completes and gives back what it held, all
            // from the reserve.
            "a_small_message_waits_for_the_reserve",
            Writer::new(true, 0, 0, kib(64), kib(64))
                .ballast(1000)
                .raw(&[0, 0, 0, 0x0b, 0xb8])
                .fill(900, 1)
                .op(PAUSE)
                .op(SWITCH)
                .raw(&[0, 0, 0, 0x02, 0x58])
                .fill(500, 2)
                .op(PAUSE)
                .op(SWITCH)
                .fill(2100, 1)
                .op(SWITCH)
                .fill(100, 2),
        ),
    ];
    seeds.into_iter().map(|(n, w)| (n, w.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tonic::Code;

    thread_local! {
        /// The checks [`run`] made on this thread that leave nothing to see when they pass:
        /// each body's end judged (`end <reference's end>: <status code>`), and each body
        /// found unable to move (`stuck <what it waits for>`). Tests read this to know that
        /// an input reached the checks it is for (each test runs on its own thread).
        pub(super) static CHECKS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `input` through the target; returns what it ran and the checks it made.
    fn checks_of(input: &[u8]) -> (Ran, Vec<String>) {
        CHECKS.with_borrow_mut(Vec::clear);
        let ran = run(input);
        (ran, CHECKS.take())
    }

    fn panics(f: impl FnOnce()) -> bool {
        catch_unwind(AssertUnwindSafe(f)).is_err()
    }

    fn seed(name: &str) -> Vec<u8> {
        grpc_framing_seeds()
            .into_iter()
            .find_map(|(n, s)| (n == name).then_some(s))
            .unwrap_or_else(|| panic!("no seed {name}"))
    }

    /// Each seed's bodies reach the check of their end, with the status the reference
    /// expects; none is found stuck.
    #[test]
    fn each_seeds_bodies_reach_the_check_of_their_end() {
        let ends = [
            ("messages_in_one_frame", "end Clean(None): None"),
            // Its second message's prefix is cut across frames as [0, 0, 0] and [0, 4, 5]:
            // a message of 4 bytes, after which the third's prefix is read from inside it.
            (
                "a_message_across_frames",
                "end Oversized(84280838): Some(ResourceExhausted)",
            ),
            ("cut_short", "end CutShort(7): Some(Internal)"),
            ("bad_flag", "end BadFlag(7): Some(Internal)"),
            ("compressed", "end Compressed: Some(Internal)"),
            (
                "first_message_over_its_limit",
                "end Oversized(100): Some(ResourceExhausted)",
            ),
            (
                "later_message_over_the_limit",
                "end Oversized(200): Some(ResourceExhausted)",
            ),
            ("response_without_status", "end Clean(None): Some(Unknown)"),
        ];
        for (name, end) in ends {
            let (_, checks) = checks_of(&seed(name));
            assert_eq!(checks, [end], "{name}");
        }
        let (_, trailers) = checks_of(&seed("response_trailers"));
        assert_eq!(trailers.len(), 1);
        assert!(trailers[0].starts_with("end Clean(Some("), "{trailers:?}");
        assert!(trailers[0].ends_with(": Some(Unavailable)"), "{trailers:?}");
        let (_, error) = checks_of(&seed("transport_error_mid_message"));
        assert_eq!(error.len(), 1);
        assert!(error[0].starts_with("end Transport("), "{error:?}");
        // A request cancelled by the transport ends clean.
        assert!(error[0].ends_with(": None"), "{error:?}");
        for name in [
            "two_streams_share_a_small_budget",
            "a_small_message_waits_for_the_reserve",
        ] {
            let (_, checks) = checks_of(&seed(name));
            assert_eq!(checks, ["end Clean(None): None"; 2], "{name}");
        }
    }

    /// A body whose message needs more budget than there is, with no other body to free
    /// any, is found stuck, checked, and dropped; so is one that waits for the reserve
    /// that other streams' stalled messages hold.
    #[test]
    fn a_body_waiting_for_budget_nobody_frees_is_checked_then_dropped() {
        // 80 bytes of budget; a message of 70,000 bytes (over what the reserve takes).
        let w = Writer::new(false, 0, 10, 0xffff, 0xffff)
            .raw(&[0, 0, 1, 0x11, 0x70])
            .fill(100, 1);
        let (ran, checks) = checks_of(&w.0);
        assert_eq!((ran.dropped, ran.messages), (1, 0), "{ran:?}");
        assert_eq!(checks.len(), 1, "{checks:?}");
        assert!(checks[0].starts_with("stuck Some(("), "{checks:?}");
        assert!(checks[0].ends_with(", false))"), "{checks:?}");
        // No budget, the reserve all but 100 bytes held: a small message of 300, whose
        // first 205 bytes arrive before a pause, waits; the stalled streams are dropped
        // until it fits, and it completes.
        let w = Writer::new(false, 0, 0, 0xffff, 0xffff)
            .ballast(100)
            .raw(&[0, 0, 0, 1, 0x2c])
            .fill(200, 1)
            .op(PAUSE)
            .fill(100, 1);
        let (ran, checks) = checks_of(&w.0);
        assert_eq!((ran.dropped, ran.messages), (0, 1), "{ran:?}");
        assert!(ran.waits >= 1 && ran.wakes >= 1, "{ran:?}");
        assert!(
            !checks.is_empty() && checks[0].starts_with("stuck Some(("),
            "{checks:?}"
        );
        assert!(checks[0].ends_with(", true))"), "{checks:?}");
        assert_eq!(
            checks.last().map(String::as_str),
            Some("end Clean(None): None")
        );
    }

    #[test]
    fn percent_decoding_takes_a_percent_and_two_hex_digits_as_a_byte() {
        let cases: [(&[u8], &[u8]); 8] = [
            (b"a%20b", b"a b"),
            (b"%4a%4A", b"JJ"),
            (b"%1f%ff", &[0x1f, 0xff]),
            (b"%", b"%"),
            (b"100%", b"100%"),
            (b"%2", b"%2"),
            (b"%zz%2g", b"%zz%2g"),
            (b"", b""),
        ];
        for (s, want) in cases {
            assert_eq!(percent_decoded(s), want, "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn the_mode_bits_pick_each_bodys_side() {
        let status = |n| Side::Response(http::StatusCode::from_u16(n).unwrap());
        assert_eq!(side_of(0, 9), Side::Request);
        assert_eq!(side_of(4, 9), Side::Request);
        assert_eq!(side_of(1, 9), Side::Response(http::StatusCode::OK));
        assert_eq!(side_of(2, 303), status(403));
        assert_eq!(side_of(6, 999), status(599));
        assert_eq!(side_of(2, 500), status(100));
        assert_eq!(side_of(3, 9), Side::EmptyResponse);
        assert_eq!(side_of(7, 9), Side::EmptyResponse);
    }

    #[test]
    fn a_header_value_takes_its_length_modulo_64() {
        let mut input = Input(&[67, b'a', b'b', b'c', 1, b'\n', 2, b'o', b'k']);
        assert_eq!(
            value(&mut input),
            Some(http::HeaderValue::from_static("abc"))
        );
        assert_eq!(value(&mut input), None, "a newline is no header value");
        assert_eq!(
            value(&mut input),
            Some(http::HeaderValue::from_static("ok"))
        );
        assert_eq!(input.0, &[] as &[u8]);
        let mut input = Input(&[0x12, 0x34]);
        assert_eq!(input.u16(), 0x1234);
        assert_eq!((input.byte(), input.u16()), (0, 0), "zeros past the end");
    }

    /// What each item of a body is, for comparisons.
    fn items_of(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Data(d) => format!("data {:?}", d.as_ref()),
                Item::Pause => "pause".to_owned(),
                Item::Trailers(h) => format!("trailers {h:?}"),
                Item::Error(s) => format!("error {:?}", s.code()),
            })
            .collect()
    }

    /// The header's limits in their units (8 and 16 bytes), the mode's bits (two bodies,
    /// sides, other streams' stalled messages), and each op making the items its doc says.
    #[test]
    fn an_input_makes_the_bodies_its_bytes_say() {
        let case = parse(&Writer::new(false, 1, 3, 5, 7).0);
        assert_eq!(
            (case.budget, case.max_message, case.max_first_message),
            (24, 80, 112)
        );
        assert_eq!(case.ballast, None);
        assert_eq!(case.streams.len(), 1);
        assert_eq!(case.streams[0].1, Side::Response(http::StatusCode::OK));
        assert!(case.streams[0].0.is_empty());
        // Mode 0b1010_1: two bodies, the first's side from bits 1-2 and the mode, the
        // second's from bits 3-4 and seven times the mode.
        let case = parse(&Writer::new(true, 0b1010, 1, 1, 1).ballast(300).0);
        assert_eq!(case.ballast, Some(300));
        let sides: Vec<Side> = case.streams.iter().map(|(_, s)| *s).collect();
        let status = |n| Side::Response(http::StatusCode::from_u16(n).unwrap());
        // 100 + 53 and 100 + 371 % 500.
        assert_eq!(sides, [status(153), status(471)]);

        let w = Writer::new(true, 0, 1, 1, 1)
            .message(0, 3, 9)
            .raw(&[1, 2])
            .op(CUT)
            .fill(2, 7)
            .op(PAUSE)
            .op(PAUSE)
            .message(0, 17, 4) // over the limit of 16: its prefix alone
            .op(SWITCH + OPS)
            .op(MESSAGE + OPS)
            .extend(&[1, 0x10, 0x00, 0x42, 5]) // (LARGEST + 2) % LARGEST = 2 bytes of 5
            .trailers(b"0", b"", b"x")
            .op(ERROR)
            .op(18)
            .op(SWITCH)
            .raw(&[3])
            .op(TRAILERS)
            .extend(&[64, 65, 1, 0x7f]);
        let case = parse(&w.0);
        let first = items_of(&case.streams[0].0);
        assert_eq!(
            first,
            [
                "data [0, 0, 0, 0, 3, 9, 9, 9, 1, 2]",
                "data [7, 7]",
                "pause",
                "pause",
                "data [0, 0, 0, 0, 17, 3]",
                "trailers {\"grpc-status\": \"\", \"grpc-status-details-bin\": \"\"}",
            ],
            "{first:#?}"
        );
        let second = items_of(&case.streams[1].0);
        assert_eq!(second.len(), 3, "{second:#?}");
        assert_eq!(second[0], "data [1, 0, 0, 0, 2, 5, 5]");
        assert_eq!(
            second[1],
            "trailers {\"grpc-status\": \"0\", \"grpc-message\": \"\", \"grpc-status-details-bin\": \"x\"}"
        );
        assert_eq!(second[2], "error Cancelled");
    }

    /// The reference at the edges of gRPC's framing: a message exactly at its limit is
    /// read and one byte over is not, the first message's limit is the smaller of the two,
    /// the size is checked before the compressed flag, a bare prefix is an empty message.
    #[test]
    fn the_reference_reads_grpc_framing_at_its_edges() {
        let body = |bytes: &[u8]| vec![Item::Data(Bytes::copy_from_slice(bytes))];
        let read = |bytes: &[u8], first, max| {
            let (messages, end) = reference(&body(bytes), first, max);
            let lens: Vec<usize> = messages.iter().map(Bytes::len).collect();
            (lens, format!("{end:?}"))
        };
        let msg = |flag: u8, len: u8| {
            let mut m = vec![flag, 0, 0, 0, len];
            m.resize(PREFIX + usize::from(len), len);
            m
        };
        let two = [msg(0, 3), msg(0, 4)].concat();
        assert_eq!(read(&two, 3, 4), (vec![3, 4], "Clean(None)".into()));
        assert_eq!(read(&two, 2, 4), (vec![], "Oversized(3)".into()));
        assert_eq!(read(&two, 9, 2), (vec![], "Oversized(3)".into()), "min");
        assert_eq!(read(&two, 3, 3), (vec![3], "Oversized(4)".into()));
        assert_eq!(read(&msg(0, 0), 0, 0), (vec![0], "Clean(None)".into()));
        assert_eq!(read(&msg(1, 4), 3, 3), (vec![], "Oversized(4)".into()));
        assert_eq!(read(&msg(1, 4), 4, 4), (vec![], "Compressed".into()));
        assert_eq!(read(&msg(2, 4), 0, 0), (vec![], "BadFlag(2)".into()));
        assert_eq!(read(&msg(0, 4)[..4], 9, 9), (vec![], "CutShort(4)".into()));
        assert_eq!(read(&msg(0, 4)[..5], 9, 9), (vec![], "CutShort(5)".into()));
        assert_eq!(read(&msg(0, 4)[..8], 9, 9), (vec![], "CutShort(8)".into()));
        let cut = [msg(0, 1), msg(0, 4)[..7].to_vec()].concat();
        assert_eq!(read(&cut, 9, 9), (vec![1], "CutShort(7)".into()));
        // What comes after trailers or an error is not read; an error inside a message
        // ends the body as the transport's error.
        let mut items = body(&msg(0, 2));
        items.push(Item::Trailers(http::HeaderMap::new()));
        items.extend(body(&msg(0, 1)));
        let (messages, end) = reference(&items, 9, 9);
        assert_eq!(
            (messages.len(), format!("{end:?}")),
            (1, "Clean(Some({}))".into())
        );
        let mut items = body(&msg(0, 4)[..6]);
        items.push(Item::Pause);
        items.push(Item::Error(Status::unavailable("gone")));
        items.extend(body(&msg(0, 4)[6..]));
        let (messages, end) = reference(&items, 9, 9);
        assert!(messages.is_empty());
        assert!(matches!(end, End::Transport(s) if s.code() == Code::Unavailable));
    }

    /// A reader at its end, as `run` holds it: `got` messages of `want` read.
    fn ended(side: Side, end: End, want: usize, got: usize, fault: Option<Fault>) -> Reader {
        let m = Metering {
            budget: Budget::new(0),
            max_message: 0,
            max_first_message: 0,
            stall: Duration::from_secs(1),
        };
        let script = Script {
            items: VecDeque::new(),
            arrival: Arrival::default(),
        };
        let slot = FaultSlot::default();
        *lock(&slot) = fault;
        let woken = Arc::new(Flag::default());
        Reader {
            body: MeteredBody::new(script, side, m, slot.clone()),
            waker: Waker::from(woken.clone()),
            woken,
            arrival: Arrival::default(),
            fault: slot,
            side,
            want: vec![Bytes::new(); want],
            end,
            got,
        }
    }

    /// The end's check fails whenever the body ends otherwise than the reference says:
    /// messages missing, another status, another fault, or a fault naming another cause.
    #[test]
    fn the_end_check_fails_on_any_other_end() {
        let _time = runtime().enter();
        let req = Side::Request;
        let ok = Side::Response(http::StatusCode::OK);
        let framing = |why: &str| Some(Fault::Framing(why.to_owned()));
        let internal = || Some(Status::internal("bad framing"));
        let passes = |r: Reader, status: Option<Status>| !panics(|| check_end(&r, status));
        let cut = "stream ended inside a message (7 bytes received)";
        assert!(passes(
            ended(req, End::CutShort(7), 1, 1, framing(cut)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::CutShort(7), 2, 1, framing(cut)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::CutShort(6), 0, 0, framing(cut)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::CutShort(7), 0, 0, None),
            internal()
        ));
        assert!(!passes(
            ended(req, End::CutShort(7), 0, 0, framing(cut)),
            None
        ));
        let unknown = || Some(Status::unknown("x"));
        assert!(!passes(
            ended(req, End::CutShort(7), 0, 0, framing(cut)),
            unknown()
        ));
        let flag = "compression flag 7 (only 0 and 1 exist)";
        assert!(passes(
            ended(req, End::BadFlag(7), 0, 0, framing(flag)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::BadFlag(7), 0, 0, framing(cut)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::CutShort(7), 0, 0, framing(flag)),
            internal()
        ));
        let compressed = "received message with compressed-flag but no grpc-encoding";
        assert!(passes(
            ended(req, End::Compressed, 0, 0, framing(compressed)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::Compressed, 0, 0, framing(flag)),
            internal()
        ));
        assert!(!passes(
            ended(req, End::BadFlag(7), 0, 0, framing(compressed)),
            internal()
        ));

        let exhausted = || Some(Status::resource_exhausted("too large"));
        let over = |n| Some(Fault::Oversized(n));
        assert!(passes(
            ended(req, End::Oversized(9), 0, 0, over(9)),
            exhausted()
        ));
        assert!(!passes(
            ended(req, End::Oversized(9), 0, 0, over(8)),
            exhausted()
        ));
        assert!(!passes(
            ended(req, End::Oversized(9), 0, 0, over(9)),
            internal()
        ));

        assert!(passes(ended(req, End::Clean(None), 0, 0, None), None));
        assert!(!passes(
            ended(req, End::Clean(None), 0, 0, None),
            internal()
        ));
        assert!(!passes(ended(req, End::Clean(None), 0, 0, over(1)), None));
        assert!(passes(ended(ok, End::Clean(None), 0, 0, None), unknown()));
        assert!(!passes(ended(ok, End::Clean(None), 0, 0, None), None));

        let transport = |c| End::Transport(Status::new(c, "transport error"));
        let status = |c| Some(Status::new(c, "transport error"));
        let cancelled = Code::Cancelled;
        assert!(passes(ended(req, transport(cancelled), 0, 0, None), None));
        assert!(!passes(
            ended(req, transport(cancelled), 0, 0, None),
            status(cancelled)
        ));
        assert!(passes(
            ended(ok, transport(cancelled), 0, 0, None),
            status(cancelled)
        ));
        assert!(!passes(ended(ok, transport(cancelled), 0, 0, None), None));
        let lost = Code::Unavailable;
        assert!(passes(
            ended(req, transport(lost), 0, 0, None),
            status(lost)
        ));
        assert!(!passes(ended(req, transport(lost), 0, 0, None), None));
        assert!(!passes(
            ended(req, transport(lost), 0, 0, over(1)),
            status(lost)
        ));
    }

    /// Other streams' stalled messages fill the budget, then the reserve but for what is
    /// left free; the books' check holds with all of them counted and fails with one
    /// missing; what fits is judged at its exact edges.
    #[test]
    fn stalled_streams_fill_the_budget_and_the_books_and_fit_are_exact() {
        let _time = runtime().enter();
        let budget = Budget::new(100_000);
        let m = Metering {
            budget: budget.clone(),
            max_message: 10,
            max_first_message: 10,
            stall: Duration::from_secs(3600),
        };
        let mut stalled = stall_others(&budget, &m, 1000);
        let (held, reserve, waiters) = budget.books();
        assert_eq!((held, reserve, waiters), (100_000, RESERVE - 1000, 0));
        assert!(stalled.iter().all(|b| {
            let (b, r) = b.charged_parts();
            b + r < SMALL
        }));
        check_books(&budget, &[], &stalled);
        let last = stalled.pop().expect("a stalled body");
        assert!(panics(|| check_books(&budget, &[], &stalled)));
        stalled.push(last);

        let fresh = ended(Side::Request, End::Clean(None), 0, 0, None).body;
        assert!(would_fit(&budget, &fresh, 1000, true));
        assert!(!would_fit(&budget, &fresh, 1001, true));
        assert!(!would_fit(&budget, &fresh, 1000, false));
        // A body holding 500 of the reserve may take up to SMALL - 500 more there.
        let free = Budget::new(0);
        let m = Metering {
            budget: free.clone(),
            ..m
        };
        let holding = stall_others(&free, &m, RESERVE - 500);
        assert_eq!(holding.len(), 1);
        assert_eq!(holding[0].charged_parts(), (0, 500));
        assert!(would_fit(&free, &holding[0], SMALL - 500, true));
        assert!(!would_fit(&free, &holding[0], SMALL - 499, true));
        let open = Budget::new(600);
        assert!(would_fit(&open, &fresh, 600, false));
        assert!(!would_fit(&open, &fresh, 601, false));
        // A body holding 1,000 of the budget, which is spent: its whole charge would move to
        // the reserve, so 1,500 free there leave room for 500 more, not 501.
        let full = Budget::new(1000);
        let m = Metering {
            budget: full.clone(),
            ..m
        };
        let spent = stall_others(&full, &m, 1500);
        assert_eq!(spent[0].charged_parts(), (1000, 0));
        assert_eq!(full.books().1, RESERVE - 1500);
        assert!(would_fit(&full, &spent[0], 500, true));
        assert!(!would_fit(&full, &spent[0], 501, true));
        drop((stalled, holding, spent));
        assert_eq!(budget.books(), (0, 0, 0));
        assert_eq!(full.books(), (0, 0, 0));
    }

    /// The fuzz target's entry point runs its input through the checks (the corpus replay
    /// calls it, and sees nothing of them when they pass).
    #[test]
    fn the_entry_point_runs_the_checks() {
        CHECKS.with_borrow_mut(Vec::clear);
        grpc_framing(&seed("cut_short"));
        assert_eq!(CHECKS.take(), ["end CutShort(7): Some(Internal)"]);
    }

    #[test]
    fn empty_and_short_inputs_are_harmless() {
        for n in 0..10 {
            grpc_framing(&vec![1; n]);
        }
    }

    /// The seeds reach what they are named for (so the corpus starts from every way a
    /// body ends).
    #[test]
    fn the_seeds_end_as_named() {
        let ends: Vec<(&str, String)> = grpc_framing_seeds()
            .into_iter()
            .map(|(name, input)| {
                let case = parse(&input);
                let (items, _) = &case.streams[0];
                let (_, end) = reference(items, case.max_first_message, case.max_message);
                (name, format!("{end:?}"))
            })
            .collect();
        let end_of = |name: &str| &ends.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(end_of("cut_short").starts_with("CutShort(7)"));
        assert!(end_of("bad_flag").starts_with("BadFlag(7)"));
        assert!(end_of("compressed").starts_with("Compressed"));
        assert!(end_of("first_message_over_its_limit").starts_with("Oversized(100)"));
        assert!(end_of("later_message_over_the_limit").starts_with("Oversized(200)"));
        assert!(end_of("response_trailers").starts_with("Clean(Some"));
        assert!(end_of("transport_error_mid_message").starts_with("Transport"));
        // Two bodies on a budget of 8 KiB: the second waits for the first's large
        // message, is woken when it completes, and both read everything. Then two small
        // messages with the reserve all but spent: one waits for the other's.
        for name in [
            "two_streams_share_a_small_budget",
            "a_small_message_waits_for_the_reserve",
        ] {
            let (_, input) = grpc_framing_seeds()
                .into_iter()
                .find(|(n, _)| *n == name)
                .unwrap();
            let ran = run(&input);
            assert!(ran.waits >= 1 && ran.wakes >= 1, "{name}: {ran:?}");
            assert_eq!(ran.dropped, 0, "{name}: {ran:?}");
            assert_eq!(ran.messages, 2, "{name}: {ran:?}");
        }
    }

    /// An input cannot make more than `CAP` bytes of body: a message announced over every
    /// limit carries only its prefix, and ops past the cap are skipped.
    #[test]
    fn bodies_are_capped() {
        let mut w = Writer::new(true, 0, 1024, 0xffff, 0xffff);
        for _ in 0..40 {
            w = w.message(0, (1 << 20) - 16, 1).op(SWITCH);
        }
        let over = Writer::new(false, 0, 1024, 1, 1).message(0, 1 << 20, 1);
        let size = |input: &[u8]| -> usize {
            let case = parse(input);
            let items = case.streams.iter().flat_map(|(items, _)| items);
            items
                .map(|i| match i {
                    Item::Data(d) => d.len(),
                    _ => 0,
                })
                .sum()
        };
        assert!(size(&w.0) <= CAP, "{}", size(&w.0));
        assert!(size(&w.0) > CAP - (1 << 20) - 64, "{}", size(&w.0));
        assert_eq!(size(&over.0), PREFIX);
        grpc_framing(&over.0);
    }

    /// The reference's statuses for a response's end, from the gRPC spec.
    #[test]
    fn expected_endings() {
        use tonic::Code;
        let ok = Side::Response(http::StatusCode::OK);
        let with = |status: &'static str, message: Option<&'static str>| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-status", http::HeaderValue::from_static(status));
            if let Some(m) = message {
                h.insert("grpc-message", http::HeaderValue::from_static(m));
            }
            h
        };
        let cases = [
            (ok, Some(with("0", None)), None),
            (
                ok,
                Some(with("14", Some("going%20away"))),
                Some(Code::Unavailable),
            ),
            (ok, Some(with("16", None)), Some(Code::Unauthenticated)),
            (ok, Some(with("17", None)), Some(Code::Unknown)),
            (ok, Some(with("014", None)), Some(Code::Unknown)),
            (ok, Some(with("+1", None)), Some(Code::Unknown)),
            (ok, Some(with("0", Some("%C3%28"))), Some(Code::Unknown)),
            (ok, Some(with("0", Some("100%"))), None),
            (ok, None, Some(Code::Unknown)),
            (ok, Some(http::HeaderMap::new()), Some(Code::Unknown)),
            (
                Side::Response(http::StatusCode::SERVICE_UNAVAILABLE),
                None,
                Some(Code::Unavailable),
            ),
            (
                Side::Response(http::StatusCode::NOT_FOUND),
                None,
                Some(Code::Unimplemented),
            ),
            // The rest of gRPC's table of HTTP statuses, each on its own.
            (
                Side::Response(http::StatusCode::BAD_REQUEST),
                None,
                Some(Code::Internal),
            ),
            (
                Side::Response(http::StatusCode::UNAUTHORIZED),
                None,
                Some(Code::Unauthenticated),
            ),
            (
                Side::Response(http::StatusCode::FORBIDDEN),
                None,
                Some(Code::PermissionDenied),
            ),
            (
                Side::Response(http::StatusCode::TOO_MANY_REQUESTS),
                None,
                Some(Code::Unavailable),
            ),
            (
                Side::Response(http::StatusCode::BAD_GATEWAY),
                None,
                Some(Code::Unavailable),
            ),
            (
                Side::Response(http::StatusCode::GATEWAY_TIMEOUT),
                None,
                Some(Code::Unavailable),
            ),
            (
                Side::Response(http::StatusCode::INTERNAL_SERVER_ERROR),
                None,
                Some(Code::Unknown),
            ),
            (Side::Request, Some(with("13", None)), None),
            (Side::EmptyResponse, None, None),
        ];
        for (side, trailers, want) in cases {
            assert_eq!(
                expected_ending(side, trailers.as_ref()),
                want,
                "{side:?} {trailers:?}"
            );
        }
    }
}
