//! The entry point of the `grpc_framing` cargo-fuzz target (`fuzz/`) and of its corpus
//! replay test.
//!
//! The driver reads gRPC's length-prefixed messages out of HTTP/2 bodies itself
//! (`MeteredBody`, in place of tonic's decoder), so that bytes of incomplete messages are
//! charged to a node-wide budget: it is the first code of ours that a peer's bytes reach
//! after h2, before any handshake. [`grpc_framing`] builds one or two bodies from the
//! input (DATA frames cut anywhere, trailers with any `grpc-status`, `grpc-message` and
//! `grpc-status-details-bin` values, an error from the transport), reads them, and checks
//! more than the absence of panics:
//!
//! - **The same messages however the bytes are cut.** A reference parser, written from
//!   gRPC's framing rules alone, reads the body's bytes joined; the metered body must hand
//!   out the same messages byte for byte, in order, and end the same way: clean (or with
//!   the status its trailers or HTTP status give), cut short inside a message, a
//!   compression flag other than 0 and 1, a message over its limit (the first message's
//!   limit apart), a compressed message where none was negotiated, or the transport's
//!   error. The fault the reader reports (`Fault`) must name the same cause.
//! - **The budget's books balance.** After every poll, what the node-wide budget holds is
//!   what the live bodies say they hold; a body waiting for budget is counted among the
//!   waiters exactly once, and a body whose frames have all arrived is pending only while
//!   it waits for budget; the budget never holds more than its limit and the reserve; an
//!   ended body holds nothing, and when every body has ended or been dropped neither does
//!   the budget.
//!
//! Two bodies share one budget (as a node's streams do), so one waits for budget that the
//! other holds and is woken when the other's message completes. Time does not pass: a
//! body left waiting with no other to free budget would stall in a node, and is dropped
//! (a stalled stream's release is the same as a dropped one's).

use crate::metered::{Budget, FaultSlot, MeteredBody, Metering, PREFIX, RESERVE, Side};
use crate::metered::{Fault, PolledFrame, take_fault};
use bytes::Bytes;
use http_body::{Body, Frame};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
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

/// The largest message an op may write: past the largest limit an input can set (1 MiB),
/// so that every limit can be passed.
const LARGEST: usize = (1 << 20) + 64;

/// One item a scripted body hands out.
enum Item {
    Data(Bytes),
    Trailers(http::HeaderMap),
    Error(Status),
    /// Nothing yet (pending once), as when the next frame has not arrived: the other
    /// body is read meanwhile.
    Pause,
}

/// A body that hands out its items, then ends. `paused` says whether its last poll was a
/// pause, the one reason it is pending.
struct Script {
    items: VecDeque<Item>,
    paused: Arc<AtomicBool>,
}

impl Body for Script {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        let item = this.items.pop_front();
        this.paused
            .store(matches!(item, Some(Item::Pause)), Ordering::Relaxed);
        match item {
            None => Poll::Ready(None),
            Some(Item::Data(d)) => Poll::Ready(Some(Ok(Frame::data(d)))),
            Some(Item::Trailers(h)) => Poll::Ready(Some(Ok(Frame::trailers(h)))),
            Some(Item::Error(s)) => Poll::Ready(Some(Err(s))),
            Some(Item::Pause) => Poll::Pending,
        }
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
}

fn parse(data: &[u8]) -> Case {
    let mut input = Input(data);
    let mode = input.byte();
    let budget = usize::from(input.u16()) * 8;
    let max_message = usize::from(input.u16()) * 16;
    let max_first_message = usize::from(input.u16()) * 16;
    let two = mode & 1 == 1;
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
                s.frame.extend_from_slice(input.bytes(n));
            }
            MESSAGE => {
                let flag = input.byte();
                let len = (usize::from(input.byte()) << 16 | usize::from(input.u16())) % LARGEST;
                let fill = input.byte();
                s.frame.push(flag);
                s.frame.extend_from_slice(&(len as u32).to_be_bytes());
                s.frame.resize(s.frame.len() + len, fill);
            }
            CUT => s.cut(),
            SWITCH => at = (at + 1) % streams.len(),
            FILL => {
                let n = usize::from(input.u16());
                let fill = input.byte();
                s.frame.resize(s.frame.len() + n, fill);
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
    }
}

/// How the reference parser says a body ends.
#[derive(Debug)]
enum End {
    /// Ended (by its end or by trailers) inside a message.
    CutShort,
    /// A compression flag other than 0 and 1.
    BadFlag,
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
    let mut wire = Vec::new();
    let mut last = End::Clean(None);
    for item in items {
        match item {
            Item::Data(d) => wire.extend_from_slice(d),
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
    let mut messages = Vec::new();
    let mut pos = 0;
    let mut limit = max_first.min(max);
    while pos < wire.len() {
        let rest = &wire[pos..];
        if rest.len() < PREFIX {
            return (messages, cut_short(last));
        }
        let flag = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if flag > 1 {
            return (messages, End::BadFlag);
        }
        if len > limit {
            return (messages, End::Oversized(len));
        }
        limit = max;
        if flag == 1 {
            return (messages, End::Compressed);
        }
        if rest.len() < PREFIX + len {
            return (messages, cut_short(last));
        }
        messages.push(Bytes::copy_from_slice(&rest[PREFIX..PREFIX + len]));
        pos += PREFIX + len;
    }
    (messages, last)
}

/// A body cut short inside a message ends as bad framing, unless the transport's error
/// ended it first.
fn cut_short(last: End) -> End {
    match last {
        End::Transport(s) => End::Transport(s),
        _ => End::CutShort,
    }
}

/// One body being read, beside what the reference says of it.
struct Reader {
    body: MeteredBody,
    paused: Arc<AtomicBool>,
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
    match &r.end {
        End::CutShort | End::BadFlag | End::Compressed => {
            let s = status.expect("a status for bad framing");
            assert_eq!(s.code(), tonic::Code::Internal, "{s:?} for {:?}", r.end);
            assert!(matches!(fault, Some(Fault::Framing(_))), "{fault:?}");
        }
        End::Oversized(n) => {
            let s = status.expect("a status for an oversized message");
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            assert_eq!(fault, Some(Fault::Oversized(*n)));
        }
        End::Clean(trailers) => {
            let expected = r.side.ending(trailers.clone());
            assert_eq!(
                status.as_ref().map(Status::code),
                expected.as_ref().map(Status::code),
                "{status:?} against {expected:?}"
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
fn check_books(budget: &Budget, readers: &[Option<Reader>]) {
    let (held, reserve, waiters) = budget.books();
    let (charged, reserved, waiting) = readers.iter().flatten().fold((0, 0, 0), |acc, r| {
        let (b, res) = r.body.charged_parts();
        (
            acc.0 + b,
            acc.1 + res,
            acc.2 + usize::from(r.body.is_held_back()),
        )
    });
    assert_eq!((held, reserve), (charged, reserved), "the budget's books");
    assert_eq!(waiters, waiting, "waiters");
    assert!(held <= budget.limit(), "{held} over the limit");
    assert!(reserve <= RESERVE, "{reserve} over the reserve");
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
    let mut readers: Vec<Option<Reader>> = case
        .streams
        .into_iter()
        .map(|(items, side)| {
            let (want, end) = reference(&items, case.max_first_message, case.max_message);
            let fault = FaultSlot::default();
            let paused = Arc::new(AtomicBool::new(false));
            let script = Script {
                items: items.into_iter().collect(),
                paused: paused.clone(),
            };
            let body = MeteredBody::new(script, side, metering.clone(), fault.clone());
            Some(Reader {
                body,
                paused,
                fault,
                side,
                want,
                end,
                got: 0,
            })
        })
        .collect();
    // Wakes nothing: every body is polled in turn until none moves.
    let mut cx = Context::from_waker(Waker::noop());
    while readers.iter().any(Option::is_some) {
        let mut moved = false;
        for i in 0..readers.len() {
            let Some(r) = &mut readers[i] else { continue };
            match r.body.poll_message(&mut cx) {
                Poll::Ready(Some(Ok(m))) => {
                    let want = r
                        .want
                        .get(r.got)
                        .expect("no more messages than the reference");
                    assert_eq!(&m, want, "message {}", r.got);
                    r.got += 1;
                    ran.messages += 1;
                    moved = true;
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
                    moved = true;
                }
                Poll::Pending if r.paused.load(Ordering::Relaxed) => moved = true,
                Poll::Pending => {
                    // Its next frame has arrived: only budget can hold it up.
                    assert!(r.body.is_held_back(), "pending without waiting for budget");
                }
            }
            check_books(&budget, &readers);
        }
        if !moved {
            // Every body left waits for budget the others hold: in a node they would
            // stall. Drop the first, as its stream's end would, and go on.
            if let Some(slot) = readers.iter_mut().find(|r| r.is_some()) {
                *slot = None;
                ran.dropped += 1;
            }
            check_books(&budget, &readers);
        }
    }
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
    ];
    seeds.into_iter().map(|(n, w)| (n, w.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(end_of("cut_short").starts_with("CutShort"));
        assert!(end_of("bad_flag").starts_with("BadFlag"));
        assert!(end_of("compressed").starts_with("Compressed"));
        assert!(end_of("first_message_over_its_limit").starts_with("Oversized(100)"));
        assert!(end_of("later_message_over_the_limit").starts_with("Oversized(200)"));
        assert!(end_of("response_trailers").starts_with("Clean(Some"));
        assert!(end_of("transport_error_mid_message").starts_with("Transport"));
        // Two bodies on a budget of 512 bytes: the second waits for the first's large
        // message, is woken when it completes, and both read everything.
        let (_, shared) = grpc_framing_seeds()
            .into_iter()
            .find(|(n, _)| *n == "two_streams_share_a_small_budget")
            .unwrap();
        let ran = run(&shared);
        assert!(ran.waits >= 1, "{ran:?}");
        assert_eq!(ran.dropped, 0, "{ran:?}");
        assert_eq!(ran.messages, 2, "{ran:?}");
    }
}
