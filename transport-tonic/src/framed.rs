//! The outgoing half of `GossipStream` as an HTTP/2 body this driver frames itself.
//!
//! tonic's streaming encoder copies every message into one buffer per stream that it keeps
//! for the stream's lifetime: at the 64 KiB a burst needs (smaller regrows with copies), a
//! node with 2,000 streams kept about 150 KiB per connection after one burst (README,
//! "Scale"). [`FramedOut`] gathers the Envelopes ready now, then copies them, each behind
//! its 5-byte gRPC prefix, into one chunk allocated at exactly their size (or a written
//! chunk's buffer the node kept, see [`Bodies`]), so that an idle stream holds no buffer at
//! all and a burst never regrows one. An Envelope of
//! [`PASS_THROUGH`] bytes or more is not copied: its prefix ends the chunk before it and the
//! Envelope's own shared `Bytes` (encoded once by the core) follows as the next HTTP/2 frame.
//! Small ones are copied on purpose: h2 writes every frame whose payload it does not copy
//! with its own `writev`, so handing 1 KiB Envelopes through uncopied would cost a system
//! call each instead of one per 60 KiB.
//!
//! hyper lets h2 buffer up to 400 KiB per stream (a server's; 1 MiB a client's) that the
//! socket has not taken yet, and the body's chunks are copies made for that one stream. So a
//! node fanning a burst out to 2,000 slow readers held the burst once per connection in h2
//! (and the allocator kept that memory after it was written). Each chunk therefore carries a
//! token that gives its bytes back when h2 drops it, written: a stream with its share of
//! unwritten bytes in h2 (or within a quarter of it, so that it never builds a sliver of a
//! chunk) takes no more Envelopes, which stay in the core's send buffer,
//! shared by every connection they are for, until the socket drains. The share is
//! [`IN_FLIGHT_MAX`] while the node has few streams, and [`NODE_IN_FLIGHT`] split among them
//! when it has many (never under [`IN_FLIGHT_MIN`]): what a burst makes the node hold in
//! copies, and what the allocator keeps after it, stays bounded however many peers it has.

use crate::codec::RawDecoder;
use crate::driver::OutStream;
use crate::metered::{PREFIX, PolledFrame};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// Bytes gathered into one chunk (one HTTP/2 DATA frame, one `writev` when the stream is
/// busy) before it is handed on: a burst of 1 KiB Envelopes leaves in frames just under the
/// 64 KiB peers of this driver accept (`driver::MAX_FRAME`); h2 splits it for peers that
/// accept less.
const YIELD_THRESHOLD: usize = 60 * 1024;
/// At most this many Envelopes per chunk, which bounds the list gathered for one chunk
/// when Envelopes are tiny.
const MAX_GATHERED: usize = 256;
/// Envelopes at least this large go out as their own frame, uncopied: the `writev` of their
/// own frame costs less than copying them (see the module's documentation).
pub(crate) const PASS_THROUGH: usize = 16 * 1024;
/// Bytes a stream may have handed to h2 that the socket has not taken yet: two full chunks,
/// so that one is built while the other is written.
pub(crate) const IN_FLIGHT_MAX: usize = 2 * 64 * 1024;
/// Unwritten bytes in h2 over all of a node's streams, split evenly when they are many.
pub(crate) const NODE_IN_FLIGHT: usize = 16 << 20;
/// ... but a stream may always have this many. Every chunk costs the writer a wake-up and
/// h2 a `writev`, and the socket's reader a wake-up and a read, whatever its size: with
/// 2,000 streams a floor of 16 KiB made the fan-out hub spend 1.56-1.70 µs of CPU per 1 KiB
/// delivery with mutual TLS, 32 KiB 0.98-1.12 µs (README, "Scale"), for the same memory
/// after the burst. The floor binds only beyond 512 streams (16 MiB / 512 is 32 KiB; 512 is
/// the default `max_inbound_connections`): a node with 2,000 stalled readers holds at most
/// 64 MiB in h2 copies.
pub(crate) const IN_FLIGHT_MIN: usize = 32 * 1024;
/// A gathered list grown past this many slots is released when the stream runs dry.
const KEEP_GATHERED: usize = 16;
/// Written chunks' buffers a node keeps for the chunks to come, at most (see [`Bodies`]).
const SPARE_CHUNKS: usize = 4;
/// ... and only buffers at least this large: smaller chunks come from light traffic, which
/// the allocator serves from its caches without touching the kernel.
const SPARE_MIN: usize = 16 * 1024;

/// Which side of the RPC the body belongs to: a server ends with a status in trailers, a
/// client just ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// The longest message a closing status sends back, in bytes. The reason may quote what
/// the peer sent (a `Security` provider's error naming its identity); ours are shorter.
const MAX_STATUS_MESSAGE: usize = 1024;

/// `why`, cut to [`MAX_STATUS_MESSAGE`] bytes on a character boundary.
fn status_message(mut why: String) -> String {
    if why.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push('…');
    }
    why
}

/// How the stream ended, once it has: sent after what was gathered before.
#[derive(Debug)]
enum Ending {
    /// The stream ended; a server ends the RPC with OK, or with this status (its message
    /// cut to [`MAX_STATUS_MESSAGE`]).
    Closed(Option<Status>),
    /// An Envelope over the size limit: the RPC fails with this status (a client resets the
    /// stream with it, as tonic's encoder does).
    Refused(Status),
}

/// Where a [`FramedOut`] takes its Envelopes from: a stream's queue ([`OutStream`]), or a
/// list in unit tests.
pub(crate) trait Outgoing {
    /// The next Envelope, `Pending` when none is ready, `None` when the stream ended, `Err`
    /// when it ended with this error status.
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>>;
}

impl Outgoing for OutStream {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        OutStream::poll_item(self, cx)
    }
}

/// A stream's outgoing Envelopes as gRPC-framed HTTP/2 body chunks.
pub(crate) struct FramedOut<S = OutStream> {
    out: S,
    role: Role,
    max_message: usize,
    /// Envelopes taken for the next chunk.
    gathered: Vec<Bytes>,
    /// Their size with prefixes.
    gathered_bytes: usize,
    /// An Envelope sent uncopied right after the chunk that carries its prefix.
    whole: Option<Bytes>,
    ending: Option<Ending>,
    finished: bool,
    /// Bytes handed to h2 and not yet written.
    in_flight: Arc<InFlight>,
}

/// What a node's outgoing bodies share: how many are open (they split [`NODE_IN_FLIGHT`]),
/// and the buffers of chunks already written, kept for the next chunks of any stream.
///
/// A busy stream allocated a chunk of about 60 KiB and freed it as soon as it was written,
/// and so, under TLS, did rustls with each 16 KiB record. On a heap with little else on it,
/// glibc then found more than its trim threshold free at the top and handed it back to the
/// kernel, only to take it back and fault its pages in again for the next chunk: 2,440
/// `brk` calls in a short TLS run, and a node on a thread of its own ran at half speed
/// (README, "A node keeps written chunks' buffers"). Keeping [`SPARE_CHUNKS`] buffers per node, not
/// per stream, bounds what is kept however many peers a node has, and an idle node keeps at
/// most that.
#[derive(Debug, Default)]
pub(crate) struct Bodies {
    open: AtomicUsize,
    spares: Mutex<Vec<BytesMut>>,
}

impl Bodies {
    /// A buffer for a chunk of `len` bytes: the smallest kept one that is large enough, else
    /// a new one of exactly that size.
    fn buffer(&self, len: usize) -> BytesMut {
        if len >= SPARE_MIN {
            let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            let fits = spares
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = fits {
                return spares.swap_remove(i);
            }
        }
        BytesMut::with_capacity(len)
    }

    /// A written chunk's buffer, kept if it is large and fewer than [`SPARE_CHUNKS`] are, or
    /// in place of a smaller one: chunks vary in size with their Envelopes, and the largest
    /// buffers fit the most of them.
    fn offer(&self, mut buf: BytesMut) {
        if buf.capacity() < SPARE_MIN {
            return;
        }
        buf.clear();
        let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < SPARE_CHUNKS {
            spares.push(buf);
        } else if let Some(smallest) = spares.iter_mut().min_by_key(|b| b.capacity())
            && smallest.capacity() < buf.capacity()
        {
            *smallest = buf;
        }
    }

    /// Bytes kept in spare buffers.
    #[cfg(test)]
    fn kept(&self) -> usize {
        let spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
        spares.iter().map(BytesMut::capacity).sum()
    }
}

/// A stream's bytes in h2's hands, and the body waiting for them to drop.
#[derive(Debug)]
pub(crate) struct InFlight {
    bytes: AtomicUsize,
    /// Below this many bytes held the stream may start a chunk ([`InFlight::room`]): its
    /// share when it last looked, less a quarter.
    limit: AtomicUsize,
    waker: AtomicWaker,
    /// The node's outgoing bodies, this one counted among them until it drops.
    bodies: Arc<Bodies>,
}

impl<S> Drop for FramedOut<S> {
    /// The body is gone (its chunks may live on in h2 a little longer).
    fn drop(&mut self) {
        self.in_flight.bodies.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What h2 is handed: a chunk of Envelopes copied into a buffer (offered back to the node
/// when written), or one Envelope uncopied.
enum Held {
    Chunk(BytesMut),
    Whole(Bytes),
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        match self {
            Held::Chunk(b) => b,
            Held::Whole(b) => b,
        }
    }
}

/// The owner of a chunk's bytes: returns them to the stream's count when h2 drops the last
/// reference (after writing it, or with the connection), and a chunk's buffer to the node.
struct Token {
    data: Held,
    len: usize,
    in_flight: Arc<InFlight>,
}

impl AsRef<[u8]> for Token {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

impl Drop for Token {
    /// `SeqCst` here and in [`InFlight::room`]: each side writes one of `bytes` / `limit`
    /// and then reads the other, and at least one of them must see the other's write, or
    /// the last written chunk of a waiting stream would wake nobody.
    fn drop(&mut self) {
        let before = self.in_flight.bytes.fetch_sub(self.len, Ordering::SeqCst);
        let limit = self.in_flight.limit.load(Ordering::SeqCst);
        if before >= limit && before - self.len < limit {
            self.in_flight.waker.wake();
        }
        if let Held::Chunk(buf) = std::mem::replace(&mut self.data, Held::Whole(Bytes::new())) {
            self.in_flight.bodies.offer(buf);
        }
    }
}

/// Below how many bytes held a stream with this share may start a chunk: a quarter of the
/// share short of it (see [`InFlight::room`]).
const fn start_below(share: usize) -> usize {
    share - share / 4
}

impl InFlight {
    fn new(bodies: Arc<Bodies>) -> Arc<Self> {
        bodies.open.fetch_add(1, Ordering::AcqRel);
        Arc::new(InFlight {
            bytes: AtomicUsize::new(0),
            limit: AtomicUsize::new(start_below(IN_FLIGHT_MAX)),
            waker: AtomicWaker::new(),
            bodies,
        })
    }

    /// This stream's share of [`NODE_IN_FLIGHT`] now.
    fn share(&self) -> usize {
        let bodies = self.bodies.open.load(Ordering::Acquire).max(1);
        (NODE_IN_FLIGHT / bodies).clamp(IN_FLIGHT_MIN, IN_FLIGHT_MAX)
    }

    /// `data` as `Bytes` counted in flight until dropped.
    fn track(self: &Arc<Self>, data: Held) -> Bytes {
        let len = data.as_ref().len();
        self.bytes.fetch_add(len, Ordering::SeqCst);
        Bytes::from_owner(Token {
            data,
            len,
            in_flight: self.clone(),
        })
    }

    /// How many more bytes the stream may hand on; at 0 the waker is registered first.
    ///
    /// A stream less than a quarter of its share from the top gets no room until a chunk is
    /// written, rather than the sliver that is left: at a share of two 60 KiB chunks, a busy
    /// stream wrote them and then one of 8 KiB, over and over, so a third of its `writev`s
    /// (and of its reader's wake-ups and reads) carried 6 % of its bytes.
    fn room(&self, cx: &mut Context<'_>) -> usize {
        let share = self.share();
        let limit = start_below(share);
        self.limit.store(limit, Ordering::SeqCst);
        let room = || {
            let held = self.bytes.load(Ordering::SeqCst);
            if held < limit { share - held } else { 0 }
        };
        if room() > 0 {
            return room();
        }
        self.waker.register(cx.waker());
        room()
    }

    /// Bytes handed on and not yet dropped.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl<S: Outgoing> FramedOut<S> {
    /// `bodies` are the node's, which share [`NODE_IN_FLIGHT`] and spare chunk buffers.
    pub(crate) fn new(out: S, role: Role, max_message: usize, bodies: Arc<Bodies>) -> Self {
        FramedOut {
            out,
            role,
            // A gRPC prefix cannot announce more.
            max_message: max_message.min(u32::MAX as usize),
            gathered: Vec::new(),
            gathered_bytes: 0,
            whole: None,
            ending: None,
            finished: false,
            in_flight: InFlight::new(bodies),
        }
    }

    /// Takes what the stream has ready, up to one chunk of at most about `room` bytes;
    /// stops at its end.
    fn gather(&mut self, cx: &mut Context<'_>, room: usize) {
        let room = room.min(YIELD_THRESHOLD);
        while self.ending.is_none()
            && self.whole.is_none()
            && self.gathered_bytes < room
            && self.gathered.len() < MAX_GATHERED
        {
            match self.out.poll_item(cx) {
                Poll::Ready(Some(Ok(b))) if b.len() > self.max_message => {
                    self.ending = Some(Ending::Refused(Status::out_of_range(format!(
                        "Envelope of {} bytes over the {}-byte message limit",
                        b.len(),
                        self.max_message
                    ))));
                }
                Poll::Ready(Some(Ok(b))) => {
                    self.gathered_bytes += PREFIX + b.len();
                    if b.len() >= PASS_THROUGH {
                        self.whole = Some(b);
                    } else {
                        self.gathered.push(b);
                    }
                }
                Poll::Ready(Some(Err(why))) => self.ending = Some(Ending::Closed(Some(why))),
                Poll::Ready(None) => self.ending = Some(Ending::Closed(None)),
                Poll::Pending => {
                    if self.gathered.is_empty() && self.gathered.capacity() > KEEP_GATHERED {
                        self.gathered = Vec::new();
                    }
                    break;
                }
            }
        }
    }

    /// One chunk of what was gathered: each Envelope behind its prefix, then the prefix of
    /// the uncopied Envelope that follows, if any.
    fn chunk(&mut self) -> Bytes {
        let head = if self.whole.is_some() {
            self.gathered_bytes - self.whole.as_ref().map_or(0, Bytes::len)
        } else {
            self.gathered_bytes
        };
        let mut chunk = self.in_flight.bodies.buffer(head);
        for b in self.gathered.drain(..) {
            put_prefix(&mut chunk, b.len());
            chunk.put_slice(&b);
        }
        if let Some(w) = &self.whole {
            put_prefix(&mut chunk, w.len());
        }
        self.gathered_bytes = 0;
        self.in_flight.track(Held::Chunk(chunk))
    }

    /// The last frame: a server's status trailers, or nothing (a client's body just ends).
    fn end(&mut self, ending: Ending) -> Option<Result<Frame<Bytes>, Status>> {
        self.finished = true;
        match (self.role, ending) {
            (Role::Client, Ending::Closed(_)) => None,
            (Role::Client, Ending::Refused(status)) => Some(Err(status)),
            (Role::Server, ending) => {
                let status = match ending {
                    Ending::Closed(None) => Status::ok(""),
                    Ending::Closed(Some(status)) => {
                        Status::new(status.code(), status_message(status.message().to_owned()))
                    }
                    Ending::Refused(status) => status,
                };
                let mut trailers = HeaderMap::new();
                Some(
                    status
                        .add_header(&mut trailers)
                        .map(|()| Frame::trailers(trailers)),
                )
            }
        }
    }
}

fn put_prefix(chunk: &mut BytesMut, len: usize) {
    chunk.put_u8(0);
    // `gather` refused anything over `max_message`, which is at most `u32::MAX`.
    chunk.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

impl<S: Outgoing + Unpin> Body for FramedOut<S> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        let this = self.get_mut();
        if let Some(w) = this.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(this.in_flight.track(Held::Whole(w))))));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let room = this.in_flight.room(cx);
        if this.ending.is_none() && room == 0 {
            return Poll::Pending;
        }
        this.gather(cx, room);
        if !this.gathered.is_empty() || this.whole.is_some() {
            return Poll::Ready(Some(Ok(Frame::data(this.chunk()))));
        }
        match this.ending.take() {
            Some(ending) => Poll::Ready(this.end(ending)),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.whole.is_none()
    }
}

/// The codec a dialled stream is opened with: tonic frames nothing on it (the request body
/// is replaced by a [`FramedOut`] on its way to the channel), so its encoder holds no
/// buffer; received messages are decoded as by [`crate::RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceiveCodec;

impl Codec for ReceiveCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = NoEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> NoEncoder {
        NoEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// [`ReceiveCodec`]'s encoder, given no message: an empty stream stands in for the body.
#[derive(Debug)]
pub(crate) struct NoEncoder;

impl Encoder for NoEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, _item: Bytes, _dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        Err(Status::internal(
            "a dialled stream's Envelopes are framed by its own body, not tonic's encoder",
        ))
    }

    /// No buffer: tonic allocates this much for the encoder at once, for nothing.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(0, YIELD_THRESHOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closing_status_message_is_cut_on_a_character_boundary() {
        assert_eq!(status_message("closed".into()), "closed");
        let long = "é".repeat(MAX_STATUS_MESSAGE);
        let cut = status_message(long);
        assert!(
            cut.len() <= MAX_STATUS_MESSAGE + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with("é…"));
    }
    use std::collections::VecDeque;
    use std::task::Waker;

    /// Envelopes handed out in order; `Pending` when `items` is empty and not `ended`.
    #[derive(Default)]
    struct List {
        items: VecDeque<Result<Bytes, Status>>,
        ended: bool,
    }

    impl Outgoing for List {
        fn poll_item(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
            match self.items.pop_front() {
                Some(item) => Poll::Ready(Some(item)),
                None if self.ended => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn body(items: Vec<Result<Bytes, Status>>, ended: bool, role: Role) -> FramedOut<List> {
        let list = List {
            items: items.into(),
            ended,
        };
        FramedOut::new(list, role, 100 << 20, Arc::default())
    }

    fn poll(b: &mut FramedOut<List>) -> PolledFrame {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(b).poll_frame(&mut cx)
    }

    fn data(p: PolledFrame) -> Bytes {
        match p {
            Poll::Ready(Some(Ok(f))) => f.into_data().expect("a data frame"),
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn status_of(p: PolledFrame) -> Status {
        match p {
            Poll::Ready(Some(Ok(f))) => {
                let t = f.into_trailers().expect("trailers");
                Status::from_header_map(&t).expect("a grpc-status")
            }
            other => panic!("expected trailers, got {other:?}"),
        }
    }

    fn env(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    /// The gRPC messages of a chunk: (flag, payload).
    fn messages(mut chunk: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !chunk.is_empty() {
            let len = u32::from_be_bytes(chunk[1..5].try_into().unwrap()) as usize;
            out.push((chunk[0], chunk[5..5 + len].to_vec()));
            chunk = &chunk[5 + len..];
        }
        out
    }

    #[test]
    fn ready_envelopes_leave_in_one_exactly_sized_chunk() {
        let items = vec![Ok(env(1024, 1)), Ok(env(3, 2)), Ok(env(0, 3))];
        let mut b = body(items, false, Role::Server);
        let chunk = data(poll(&mut b));
        assert_eq!(chunk.len(), 3 * PREFIX + 1027);
        assert_eq!(
            messages(&chunk),
            vec![(0, vec![1; 1024]), (0, vec![2; 3]), (0, vec![])]
        );
        assert!(poll(&mut b).is_pending());
        assert!(!b.is_end_stream());
    }

    #[test]
    fn a_burst_is_cut_into_chunks_near_the_threshold() {
        let n = 200;
        let items = (0..n).map(|i| Ok(env(1024, i as u8))).collect();
        let mut b = body(items, false, Role::Client);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = poll(&mut b) {
            let chunk = f.into_data().unwrap();
            sizes.push(chunk.len());
            got.extend(messages(&chunk));
        }
        assert_eq!(got.len(), n);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, m)| m.1 == vec![i as u8; 1024])
        );
        // Every chunk but the last reached the threshold and none grew far past it.
        let (last, full) = sizes.split_last().unwrap();
        assert!(
            full.iter()
                .all(|&s| (YIELD_THRESHOLD..YIELD_THRESHOLD + 1029).contains(&s))
        );
        assert!(*last <= YIELD_THRESHOLD + 1029);
        assert_eq!(sizes.len(), 4);
    }

    #[test]
    fn a_large_envelope_follows_its_prefix_uncopied() {
        let big = env(PASS_THROUGH + 10, 9);
        let items = vec![Ok(env(5, 1)), Ok(big.clone()), Ok(env(6, 2))];
        let mut b = body(items, true, Role::Client);
        let first = data(poll(&mut b));
        // The small one, then the big one's prefix alone.
        assert_eq!(first.len(), PREFIX + 5 + PREFIX);
        assert_eq!(&first[..PREFIX + 5], &[0, 0, 0, 0, 5, 1, 1, 1, 1, 1][..]);
        let len = u32::try_from(big.len()).unwrap().to_be_bytes();
        assert_eq!(
            &first[PREFIX + 5..],
            &[0, len[0], len[1], len[2], len[3]][..]
        );
        let second = data(poll(&mut b));
        assert_eq!(second.as_ptr(), big.as_ptr(), "the Envelope's own bytes");
        assert_eq!(second.len(), big.len());
        assert_eq!(messages(&data(poll(&mut b))), vec![(0, vec![2; 6])]);
        // A client's body just ends.
        assert!(matches!(poll(&mut b), Poll::Ready(None)));
        assert!(b.is_end_stream());
    }

    #[test]
    fn a_server_ends_with_ok_or_the_cores_error_in_trailers() {
        let mut b = body(vec![Ok(env(4, 1))], true, Role::Server);
        assert_eq!(messages(&data(poll(&mut b))), vec![(0, vec![1; 4])]);
        let ok = status_of(poll(&mut b));
        assert_eq!(ok.code(), tonic::Code::Ok);
        assert!(b.is_end_stream());
        assert!(matches!(poll(&mut b), Poll::Ready(None)));

        // The core's error (UNKNOWN, as a Fabric handler's plain error), or a fault the
        // driver found in the stream's bytes with its own code: each keeps its code.
        for ending in [
            Status::unknown("duplicate connection"),
            Status::internal("bad gRPC framing: stream ended inside a message"),
        ] {
            let mut b = body(
                vec![Ok(env(4, 1)), Err(ending.clone())],
                false,
                Role::Server,
            );
            assert_eq!(messages(&data(poll(&mut b))), vec![(0, vec![1; 4])]);
            let err = status_of(poll(&mut b));
            assert_eq!(err.code(), ending.code());
            assert_eq!(err.message(), ending.message());
        }
    }

    #[test]
    fn an_envelope_over_the_limit_fails_the_call() {
        let list = List {
            items: vec![Ok(env(10, 1)), Ok(env(11, 2)), Ok(env(1, 3))].into(),
            ended: false,
        };
        let mut server = FramedOut::new(list, Role::Server, 10, Arc::default());
        assert_eq!(messages(&data(poll(&mut server))), vec![(0, vec![1; 10])]);
        assert_eq!(status_of(poll(&mut server)).code(), tonic::Code::OutOfRange);

        let list = List {
            items: vec![Ok(env(11, 2))].into(),
            ended: false,
        };
        let mut client = FramedOut::new(list, Role::Client, 10, Arc::default());
        match poll(&mut client) {
            Poll::Ready(Some(Err(s))) => assert_eq!(s.code(), tonic::Code::OutOfRange),
            other => panic!("expected an error, got {other:?}"),
        }
        assert!(matches!(poll(&mut client), Poll::Ready(None)));
    }

    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_stream_waits_while_h2_holds_too_much_and_resumes_as_it_writes() {
        let items = (0..400).map(|_| Ok(env(1024, 7))).collect();
        let mut b = body(items, false, Role::Server);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut held = Vec::new();
        while let Poll::Ready(Some(Ok(f))) = Pin::new(&mut b).poll_frame(&mut cx) {
            held.push(f.into_data().unwrap());
        }
        let total: usize = held.iter().map(Bytes::len).sum();
        assert_eq!(b.in_flight.held(), total);
        // Two full chunks, and no sliver of what was left of the share after them.
        assert_eq!(held.len(), 2);
        assert!(held.iter().all(|c| c.len() >= YIELD_THRESHOLD));
        assert!((IN_FLIGHT_MAX * 3 / 4..IN_FLIGHT_MAX + 1029).contains(&total));
        assert!(!b.out.items.is_empty(), "the rest waits in the queue");
        assert!(!flag.0.load(Ordering::SeqCst));
        // h2 writes (drops) the first chunk: the body is woken and takes more.
        held.remove(0);
        assert!(flag.0.load(Ordering::SeqCst));
        assert!(b.in_flight.held() < IN_FLIGHT_MAX);
        held.push(data(poll(&mut b)));
        assert!(held[1].len() >= YIELD_THRESHOLD);
        assert!(poll(&mut b).is_pending(), "no sliver after the full chunk");
        held.clear();
        let mut n = 0;
        while let Poll::Ready(Some(Ok(f))) = poll(&mut b) {
            n += messages(&f.into_data().unwrap()).len();
        }
        assert!(b.out.items.is_empty());
        assert!(n > 0);
        assert_eq!(b.in_flight.held(), 0);
    }

    #[test]
    fn many_streams_share_the_nodes_allowance() {
        let bodies = Arc::new(Bodies::default());
        let mut all: Vec<_> = (0..2000)
            .map(|_| {
                let items = (0..100).map(|_| Ok(env(1024, 1))).collect();
                let list = List {
                    items,
                    ended: false,
                };
                FramedOut::new(list, Role::Server, 1 << 20, bodies.clone())
            })
            .collect();
        assert_eq!(bodies.open.load(Ordering::SeqCst), 2000);
        let mut kept = Vec::new();
        for b in &mut all {
            while let Poll::Ready(Some(Ok(f))) = poll(b) {
                kept.push(f.into_data().unwrap());
            }
        }
        let per_stream = all[0].in_flight.held();
        // 16 MiB / 2,000 is under the floor: each stream stops past 32 KiB.
        assert!((IN_FLIGHT_MIN..IN_FLIGHT_MIN + 1029).contains(&per_stream));
        assert!(all.iter().all(|b| b.in_flight.held() == per_stream));
        // With one stream left, it may have its full share again.
        all.truncate(1);
        assert_eq!(bodies.open.load(Ordering::SeqCst), 1);
        kept.clear();
        assert_eq!(all[0].in_flight.held(), 0);
        let mut b = all.pop().unwrap();
        while let Poll::Ready(Some(Ok(f))) = poll(&mut b) {
            kept.push(f.into_data().unwrap());
        }
        // The ~68 KiB it had left all went out: far more than the floor.
        assert!(b.out.items.is_empty());
        assert!(b.in_flight.held() > 2 * IN_FLIGHT_MIN);
    }

    #[test]
    fn written_chunks_buffers_are_reused_and_a_node_keeps_few() {
        let bodies = Arc::new(Bodies::default());
        let items = (0..400).map(|i| Ok(env(1024, i as u8))).collect();
        let list = List {
            items,
            ended: false,
        };
        let mut b = FramedOut::new(list, Role::Server, 1 << 20, bodies.clone());
        let first = data(poll(&mut b));
        let at = first.as_ptr();
        let n = messages(&first).len();
        assert_eq!(bodies.kept(), 0);
        drop(first);
        assert!(bodies.kept() >= YIELD_THRESHOLD);
        // The next chunk is built in the written one's buffer, and holds only its own
        // messages.
        let second = data(poll(&mut b));
        assert_eq!(second.as_ptr(), at);
        assert_eq!(bodies.kept(), 0);
        let got = messages(&second);
        assert_eq!(got.len(), n);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, m)| m.1 == vec![(n + i) as u8; 1024])
        );
        // However many chunks are written at once, the node keeps at most SPARE_CHUNKS.
        let mut held = vec![second];
        while let Poll::Ready(Some(Ok(f))) = poll(&mut b) {
            held.push(f.into_data().unwrap());
            // Past the stream's share in h2, the body waits: let two chunks drop.
            if held.len() % 2 == 0 {
                held.drain(..).for_each(drop);
            }
        }
        assert!(b.out.items.is_empty());
        let more: Vec<_> = (0..2 * SPARE_CHUNKS)
            .map(|_| Held::Chunk(BytesMut::with_capacity(YIELD_THRESHOLD)))
            .map(|h| b.in_flight.track(h))
            .collect();
        drop(more);
        drop(held);
        let kept = bodies.spares.lock().unwrap().len();
        assert_eq!(kept, SPARE_CHUNKS);
        assert!(bodies.kept() <= SPARE_CHUNKS * (YIELD_THRESHOLD + PASS_THROUGH + 2 * PREFIX));
    }

    #[test]
    fn a_full_node_keeps_its_largest_buffers_and_fits_chunks_to_the_smallest() {
        let bodies = Bodies::default();
        for kib in [20, 30, 40, 50, 60, 70, 25] {
            bodies.offer(BytesMut::with_capacity(kib << 10));
        }
        let mut kept: Vec<usize> = bodies
            .spares
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.capacity() >> 10)
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![40, 50, 60, 70]);
        // A chunk of 45 KiB gets the 50 KiB buffer, not the 70 KiB one; one of 80 KiB a new
        // buffer.
        assert_eq!(bodies.buffer(45 << 10).capacity() >> 10, 50);
        assert_eq!(bodies.buffer(80 << 10).capacity(), 80 << 10);
        assert_eq!(bodies.spares.lock().unwrap().len(), 3);
    }

    #[test]
    fn small_chunks_are_not_kept() {
        let bodies = Arc::new(Bodies::default());
        let list = List {
            items: vec![Ok(env(1024, 1))].into(),
            ended: false,
        };
        let mut b = FramedOut::new(list, Role::Server, 1 << 20, bodies.clone());
        drop(data(poll(&mut b)));
        assert_eq!(bodies.kept(), 0);
        assert!(bodies.spares.lock().unwrap().is_empty());
    }

    #[test]
    fn an_idle_stream_keeps_no_large_list() {
        let items = (0..100).map(|_| Ok(env(8, 0))).collect();
        let mut b = body(items, false, Role::Server);
        assert_eq!(messages(&data(poll(&mut b))).len(), 100);
        assert!(b.gathered.capacity() >= 100);
        assert!(poll(&mut b).is_pending());
        assert!(b.gathered.capacity() <= KEEP_GATHERED);
    }

    /// A reason of exactly [`MAX_STATUS_MESSAGE`] bytes goes whole, with no ellipsis, and a
    /// cut that falls inside a multi-byte character backs off to the character's start (never
    /// past it, which would send more than the limit): the cases the test above, whose cut
    /// falls on a boundary, never reaches.
    #[test]
    fn a_status_message_at_the_limit_goes_whole_and_a_cut_backs_off_a_split_character() {
        let exact = "a".repeat(MAX_STATUS_MESSAGE);
        assert_eq!(status_message(exact.clone()), exact);
        // One byte, then 2-byte characters: byte MAX_STATUS_MESSAGE falls inside one.
        let odd = format!("a{}", "é".repeat(MAX_STATUS_MESSAGE));
        assert!(!odd.is_char_boundary(MAX_STATUS_MESSAGE));
        let cut = status_message(odd);
        assert_eq!(
            cut,
            format!("a{}…", "é".repeat((MAX_STATUS_MESSAGE - 2) / 2))
        );
    }

    /// Envelopes of a few KiB (most gossip messages) are copied into the chunk, up to
    /// 16 KiB: each one handed to h2 uncopied costs its own frame and `writev` (see the
    /// module's documentation). The other tests take their sizes from [`PASS_THROUGH`] and
    /// so would pass with any bound.
    #[test]
    fn envelopes_under_16_kib_are_copied_into_the_chunk() {
        let just_under = (16 << 10) - 1;
        let items = vec![Ok(env(4 << 10, 1)), Ok(env(just_under, 2))];
        let mut b = body(items, false, Role::Client);
        let chunk = data(poll(&mut b));
        assert_eq!(chunk.len(), 2 * PREFIX + (4 << 10) + just_under);
        assert_eq!(
            messages(&chunk),
            vec![(0, vec![1; 4 << 10]), (0, vec![2; just_under])]
        );
        assert!(poll(&mut b).is_pending());
    }

    /// The node keeps written chunks' buffers only from 16 KiB (smaller ones come from
    /// light traffic, which the allocator serves from its caches: keeping them would hold
    /// memory for nothing), and the bound is the same on both sides: a buffer of exactly
    /// [`SPARE_MIN`] is kept, and a chunk of exactly that size takes it, while a smaller
    /// chunk gets a new buffer of its own size.
    #[test]
    fn only_buffers_of_16_kib_or_more_are_kept_and_reused() {
        let bodies = Bodies::default();
        bodies.offer(BytesMut::with_capacity(8 << 10));
        bodies.offer(BytesMut::with_capacity((16 << 10) - 1));
        assert_eq!(bodies.kept(), 0);
        bodies.offer(BytesMut::with_capacity(16 << 10));
        assert_eq!(bodies.kept(), 16 << 10);
        assert_eq!(bodies.buffer((16 << 10) - 1).capacity(), (16 << 10) - 1);
        assert_eq!(bodies.kept(), 16 << 10);
        assert_eq!(bodies.buffer(16 << 10).capacity(), 16 << 10);
        assert_eq!(bodies.kept(), 0);
    }

    /// A written chunk wakes the waiting body exactly when it brings the bytes held under
    /// the limit: not while they stay at or above it (the body would find no room: a
    /// wake-up and a poll for nothing, per chunk h2 writes), and always then, however small
    /// the chunk (a lost wake-up stalls the stream for good: nothing else polls the body).
    /// The body registers its waker when it finds no room even if it never had room before.
    #[test]
    fn a_written_chunk_wakes_the_body_exactly_when_it_makes_room() {
        let mut b = body(vec![Ok(env(8, 1))], false, Role::Server);
        let limit = start_below(IN_FLIGHT_MAX);
        let big = b.in_flight.track(Held::Whole(env(limit - 1, 0)));
        let one = b.in_flight.track(Held::Whole(env(1, 0)));
        let two = b.in_flight.track(Held::Whole(env(1, 0)));
        assert_eq!(b.in_flight.held(), limit + 1);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut b).poll_frame(&mut cx).is_pending());
        // Down to the limit: still no room, so no wake-up.
        drop(two);
        assert!(!flag.0.load(Ordering::SeqCst), "woken with no room");
        // One byte fewer and the body may start a chunk.
        drop(one);
        assert!(flag.0.load(Ordering::SeqCst), "not woken");
        assert_eq!(messages(&data(poll(&mut b))), vec![(0, vec![1; 8])]);
        drop(big);
    }

    /// A stream holding exactly its limit in h2 takes nothing more, and one just under it
    /// takes what is left of its share, not a full chunk: what h2 holds of a stream stays
    /// within its share (plus one Envelope), which is what bounds a node's copies in h2.
    #[test]
    fn a_stream_takes_no_more_than_what_is_left_of_its_share() {
        let items = (0..200).map(|_| Ok(env(1024, 3))).collect();
        let mut b = body(items, false, Role::Server);
        let limit = start_below(IN_FLIGHT_MAX);
        let held = b.in_flight.track(Held::Whole(env(limit, 0)));
        assert!(poll(&mut b).is_pending(), "room at the limit");
        drop(held);
        let _held = b.in_flight.track(Held::Whole(env(limit - 1, 0)));
        let chunk = data(poll(&mut b));
        let left = IN_FLIGHT_MAX - (limit - 1);
        assert!(
            left < YIELD_THRESHOLD,
            "the share, not the threshold, binds"
        );
        assert!(
            (left..left + PREFIX + 1024).contains(&chunk.len()),
            "{} bytes for {left} left",
            chunk.len()
        );
    }

    /// A chunk is handed on as soon as it reaches the threshold (exactly at it when its
    /// Envelopes fill it exactly) and carries at most [`MAX_GATHERED`] Envelopes however
    /// small they are: the bounds the other tests only approach.
    #[test]
    fn a_chunk_ends_at_the_threshold_or_the_envelope_count() {
        // 60 Envelopes of 1 KiB with their prefixes fill the threshold exactly.
        let items = (0..100).map(|_| Ok(env(1024 - PREFIX, 4))).collect();
        let mut b = body(items, false, Role::Client);
        let chunk = data(poll(&mut b));
        assert_eq!(chunk.len(), YIELD_THRESHOLD);
        assert_eq!(messages(&chunk).len(), YIELD_THRESHOLD / 1024);

        let items = (0..2 * MAX_GATHERED).map(|_| Ok(env(0, 0))).collect();
        let mut b = body(items, false, Role::Client);
        assert_eq!(messages(&data(poll(&mut b))).len(), MAX_GATHERED);
    }

    /// A gathered list of exactly [`KEEP_GATHERED`] slots is kept when the stream runs dry
    /// (only larger ones are released): a stream with bursts of a few Envelopes reuses its
    /// list instead of allocating one per burst.
    #[test]
    fn an_idle_stream_keeps_a_list_of_the_kept_size() {
        let items = (0..KEEP_GATHERED).map(|_| Ok(env(8, 0))).collect();
        let mut b = body(items, false, Role::Server);
        assert_eq!(messages(&data(poll(&mut b))).len(), KEEP_GATHERED);
        assert_eq!(
            b.gathered.capacity(),
            KEEP_GATHERED,
            "the list grew to the bound"
        );
        assert!(poll(&mut b).is_pending());
        assert_eq!(b.gathered.capacity(), KEEP_GATHERED);
    }

    /// The chunk that carries an uncopied Envelope's prefix is allocated at exactly its own
    /// size: neither with room for the Envelope that does not go in it (16 KiB or more for
    /// nothing, per large Envelope) nor too small (regrown, with copies, as it is filled).
    /// Its buffer, large enough to be kept, shows its capacity once written.
    #[test]
    fn the_chunk_before_an_uncopied_envelope_is_allocated_at_its_size() {
        let bodies = Arc::new(Bodies::default());
        let mut items: VecDeque<_> = (0..10).map(|_| Ok(env(2048, 1))).collect();
        items.push_back(Ok(env(PASS_THROUGH, 2)));
        let list = List {
            items,
            ended: false,
        };
        let mut b = FramedOut::new(list, Role::Server, 1 << 20, bodies.clone());
        let head = data(poll(&mut b));
        let size = 10 * (PREFIX + 2048) + PREFIX;
        assert_eq!(head.len(), size);
        drop(head);
        assert_eq!(bodies.kept(), size);
        assert_eq!(data(poll(&mut b)).len(), PASS_THROUGH);
    }

    /// tonic allocates a dialled stream's encoder buffer at once, of the size the encoder
    /// asks for: none, since nothing is ever encoded into it (tonic's default is 8 KiB per
    /// dialled stream, for nothing, and this module exists to keep idle streams bufferless).
    #[test]
    fn a_dialled_streams_encoder_asks_for_no_buffer() {
        let settings = format!("{:?}", ReceiveCodec.encoder().buffer_settings());
        assert!(settings.contains("buffer_size: 0,"), "{settings}");
    }
}
