//! A socket read in large pieces under TLS.
//!
//! rustls asks its transport for at most about 4 KiB at a time (it reads record by record
//! into a buffer of its own), so a TLS stream receiving 1 GB/s made 250,000 `recvfrom`
//! calls a second, each dear on this project's virtual machines. [`ReadAhead`] sits between
//! the socket and rustls: a small read is served from one large read of [`READ_AHEAD`]
//! bytes, a large one goes to the socket directly. Writes pass through untouched.
//!
//! It reads ahead only while the socket is busy: a read goes straight into the reader's
//! buffer until one fills it (the socket may hold more); from then on reads go through a
//! buffer of [`READ_AHEAD`] bytes, until a read finds less than that (the socket is
//! drained) and the buffer, once emptied, is freed. So a connection with little traffic
//! (a node may hold thousands) neither holds nor allocates read-ahead memory.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes asked of the socket at once when a reader wants fewer: four TLS records, so that a
/// busy stream makes one system call where rustls alone would make 16.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// `io` whose reads are gathered into reads of `cap` bytes (none when `cap` is 0).
#[derive(Debug)]
pub(crate) struct ReadAhead<T> {
    io: T,
    cap: usize,
    /// Read from `io` and not yet handed on.
    buf: BytesMut,
    /// The last read from `io` filled what it was given: the socket may hold more, so the
    /// next read goes through `buf`.
    full: bool,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(io: T, cap: usize) -> Self {
        ReadAhead {
            io,
            cap,
            buf: BytesMut::new(),
            full: false,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &T {
        &self.io
    }

    /// Bytes read ahead and not yet handed on.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Hands on what is buffered; frees the buffer once empty unless the socket may hold
    /// more (an emptied buffer is reused whole by the next `reserve`).
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
        if self.buf.is_empty() && !self.full {
            self.buf = BytesMut::new();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        if !this.full || out.remaining() >= this.cap {
            let room = out.remaining();
            let before = out.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, out))?;
            this.full = this.cap > 0 && room > 0 && out.filled().len() - before == room;
            return Poll::Ready(Ok(()));
        }
        this.buf.reserve(this.cap);
        let room = this.buf.capacity();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut this.io),
            cx,
            &mut this.buf
        ))?;
        this.full = n == room;
        // Served even when empty (the end of the stream): `serve` then frees the buffer.
        this.serve(out);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A reader that hands out its bytes in reads of at most `step`, counting them.
    struct Source {
        data: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = (self.data.len() - self.at).min(out.remaining());
            let at = self.at;
            out.put_slice(&self.data[at..at + n]);
            self.at += n;
            self.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    fn source(len: usize) -> Source {
        Source {
            data: (0..len).map(|i| (i * 7 + i / 251) as u8).collect(),
            at: 0,
            reads: 0,
        }
    }

    #[tokio::test]
    async fn small_reads_come_from_one_large_read_in_order() {
        let len = 3 * READ_AHEAD + 1234;
        let mut r = ReadAhead::new(source(len), READ_AHEAD);
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = r.read(&mut piece).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, r.get_ref().data);
        // One straight into `piece` (it filled it), 3 fills of the buffer (the last one
        // short), and one straight read that found the end.
        assert_eq!(r.get_ref().reads, 5);
        assert_eq!(r.buffered(), 0);
        assert_eq!(
            r.buf.capacity(),
            0,
            "a drained, short-filled buffer is freed"
        );
    }

    #[tokio::test]
    async fn large_reads_and_no_cap_go_straight_to_the_socket() {
        let mut r = ReadAhead::new(source(200_000), READ_AHEAD);
        let mut big = vec![0u8; READ_AHEAD];
        let n = r.read(&mut big).await.expect("read");
        assert_eq!(n, READ_AHEAD);
        assert_eq!(r.buf.capacity(), 0, "nothing was buffered");

        let mut r = ReadAhead::new(source(10_000), 0);
        let mut small = [0u8; 100];
        r.read_exact(&mut small).await.expect("read");
        assert_eq!(r.get_ref().at, 100, "without a cap nothing is read ahead");
    }

    #[tokio::test]
    async fn only_a_busy_socket_is_read_ahead_and_its_buffer_is_reused() {
        // Little traffic: reads go straight to the socket, nothing is allocated.
        let mut idle = ReadAhead::new(source(500), READ_AHEAD);
        let mut small = [0u8; 1000];
        assert_eq!(idle.read(&mut small).await.expect("read"), 500);
        assert_eq!(idle.buf.capacity(), 0);

        // A read that fills the reader's buffer turns read-ahead on; a full fill keeps the
        // buffer for the next one, which reuses it.
        let mut busy = ReadAhead::new(source(2 * READ_AHEAD + 100), READ_AHEAD);
        busy.read_exact(&mut small).await.expect("read");
        assert_eq!((busy.get_ref().reads, busy.buf.capacity()), (1, 0));
        busy.read_exact(&mut small).await.expect("read");
        assert_eq!(busy.get_ref().reads, 2);
        let first = busy.buf.as_ptr() as usize - small.len();
        let mut rest = vec![0u8; READ_AHEAD - small.len()];
        busy.read_exact(&mut rest).await.expect("read");
        assert_eq!(busy.buffered(), 0);
        busy.read_exact(&mut small).await.expect("read");
        assert_eq!(busy.get_ref().reads, 3);
        assert_eq!(
            busy.buf.as_ptr() as usize - small.len(),
            first,
            "the next fill reuses the buffer"
        );

        // A short fill (the socket drained): once emptied, the buffer is freed.
        let mut all = vec![0u8; 10_000];
        let mut left = 2 * READ_AHEAD + 100 - 3 * small.len() - rest.len();
        while left > 0 {
            left -= busy.read(&mut all[..left.min(4096)]).await.expect("read");
        }
        assert_eq!(busy.get_ref().reads, 3, "the third fill took the rest");
        assert_eq!(busy.buf.capacity(), 0, "a short fill drained: freed");
        assert_eq!(busy.read(&mut small).await.expect("read"), 0);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = ReadAhead::new(a, READ_AHEAD);
        w.write_all(b"hello").await.expect("write");
        w.flush().await.expect("flush");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
    }

    /// A writer recording what is asked of it.
    #[derive(Default)]
    struct Recorder {
        vectored: bool,
        written: Vec<u8>,
        flushes: usize,
        shut: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let before = this.written.len();
            for b in bufs {
                this.written.extend_from_slice(b);
            }
            Poll::Ready(Ok(this.written.len() - before))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    /// Vectored writes, flushes and the shutdown reach the socket, which says whether it
    /// takes vectored writes.
    #[tokio::test]
    async fn vectored_writes_flushes_and_shutdown_pass_through() {
        for vectored in [false, true] {
            let mut w = ReadAhead::new(
                Recorder {
                    vectored,
                    ..Recorder::default()
                },
                READ_AHEAD,
            );
            assert_eq!(w.is_write_vectored(), vectored);
            let bufs = [io::IoSlice::new(b"hel"), io::IoSlice::new(b"lo")];
            assert_eq!(w.write_vectored(&bufs).await.expect("write"), 5);
            w.flush().await.expect("flush");
            assert_eq!(w.get_ref().flushes, 1);
            assert!(!w.get_ref().shut);
            w.shutdown().await.expect("shutdown");
            assert!(w.get_ref().shut);
            assert_eq!(w.get_ref().written, b"hello");
        }
    }

    /// A read that the socket does not fill (it held less), or one with no room at all,
    /// leaves read-ahead off: the next small read goes straight to the socket too.
    #[tokio::test]
    async fn a_short_or_empty_read_leaves_read_ahead_off() {
        for first_room in [1000, 0] {
            let (a, mut b) = tokio::io::duplex(1 << 16);
            let mut r = ReadAhead::new(a, READ_AHEAD);
            b.write_all(&[7; 500]).await.expect("write");
            let mut first = vec![0u8; first_room];
            let n = r.read(&mut first).await.expect("read");
            assert_eq!(n, first_room.min(500));
            b.write_all(&[8; 500]).await.expect("write");
            let mut small = [0u8; 100];
            r.read_exact(&mut small).await.expect("read");
            assert_eq!(
                (r.buffered(), r.buf.capacity()),
                (0, 0),
                "after a read of {n} into {first_room}, a small read was read ahead"
            );
        }
    }

    /// A read that fills the rest of a reader's buffer already partly filled found the
    /// socket holding at least that much: read-ahead turns on.
    #[test]
    fn filling_the_rest_of_a_partly_filled_buffer_turns_read_ahead_on() {
        let mut r = ReadAhead::new(source(10 * READ_AHEAD), READ_AHEAD);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut mem = [0u8; 1000];
        let mut out = ReadBuf::new(&mut mem);
        out.put_slice(&[0; 100]);
        assert!(Pin::new(&mut r).poll_read(&mut cx, &mut out).is_ready());
        assert_eq!((out.filled().len(), r.get_ref().at), (1000, 900));
        let mut small = [0u8; 100];
        let mut out = ReadBuf::new(&mut small);
        assert!(Pin::new(&mut r).poll_read(&mut cx, &mut out).is_ready());
        assert_eq!(out.filled(), &r.get_ref().data[900..1000]);
        assert_eq!(
            r.buffered(),
            READ_AHEAD - 100,
            "the next small read was not read ahead"
        );
    }
}
