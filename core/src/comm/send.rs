//! Sending: send buffers, the write window and waiting sends (Fabric's
//! `gossip/comm/conn.go`, `connection.send` and `writeToStream`; the `sendBuffSize`
//! channel `outBuff`).
//!
//! Fabric's `send` either drops a message when `outBuff` is full (non-blocking `Send`) or
//! parks its goroutine until there is room (`SendWithAck`, `Respond`). Here both are one
//! FIFO per connection: a send buffer of `send_buffer_size`, then a bounded wait queue for
//! blocking sends, then at most `write_window` envelopes handed to the driver at once.

use super::output::WriteKind;
use super::stream::Phase;
use super::{Comm, RemotePeer, SendOutcome, SendQueueLen};
use crate::error::Error;
use crate::ids::{OpId, StreamId};
use crate::security::Security;
use bytes::Bytes;
use std::collections::VecDeque;

/// What a sender does when the send buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Fabric's non-blocking `Send`: drop when the buffer is full.
    Drop,
    /// Fabric's blocking sends: wait for room (bounded by `max_waiting_sends`).
    Wait,
}

/// The bounds of one connection's queues, from [`crate::Config`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    /// `send_buffer_size`: messages in the send buffer.
    pub(super) cap: usize,
    /// `max_waiting_sends`: blocking sends waiting beyond it.
    pub(super) max_wait: usize,
    /// `send_buffer_bytes`: bytes held in all three stages together.
    pub(super) max_bytes: usize,
}

/// The queues of one connection (or of one connection attempt, which never writes).
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    buf: VecDeque<Bytes>,
    waiting: VecDeque<Bytes>,
    /// Sizes of the envelopes handed to the driver and not yet confirmed, in write order:
    /// the driver confirms in that order, so the bytes it releases are known.
    in_flight: VecDeque<usize>,
    /// Bytes in `buf`, `waiting` and `in_flight` together.
    bytes: usize,
    /// Bytes confirmed written so far.
    written: u64,
}

impl SendQueue {
    /// The send-buffer rule: room in the buffer (and nobody waiting ahead) takes the
    /// message; otherwise a blocking send waits if the wait queue has room, and everything
    /// else is `Err(WouldBlock)`, which the caller counts or reports. Both need room in
    /// the byte bound too, except on a queue holding nothing, so that one message of any
    /// size the node accepts can always go.
    pub(super) fn push(&mut self, bytes: Bytes, mode: Mode, b: Bounds) -> Result<(), Error> {
        let fits = self.bytes == 0 || self.bytes.saturating_add(bytes.len()) <= b.max_bytes;
        if fits && self.buf.len() < b.cap && self.waiting.is_empty() {
            self.bytes += bytes.len();
            self.buf.push_back(bytes);
            return Ok(());
        }
        match mode {
            Mode::Wait if fits && self.waiting.len() < b.max_wait => {
                self.bytes += bytes.len();
                self.waiting.push_back(bytes);
                Ok(())
            }
            Mode::Drop | Mode::Wait => Err(Error::WouldBlock),
        }
    }

    /// The next envelope to hand to the driver, if the write window has room. Refills the
    /// send buffer from the wait queue first, so waiting sends keep their place.
    pub(super) fn next_write(&mut self, window: usize, cap: usize) -> Option<Bytes> {
        while self.buf.len() < cap.max(1) {
            match self.waiting.pop_front() {
                Some(b) => self.buf.push_back(b),
                None => break,
            }
        }
        if self.in_flight.len() >= window {
            return None;
        }
        let envelope = self.buf.pop_front()?;
        self.in_flight.push_back(envelope.len());
        Some(envelope)
    }

    /// The driver confirmed `count` writes; returns how many were really in flight.
    pub(super) fn confirm(&mut self, count: usize) -> usize {
        let n = count.min(self.in_flight.len());
        let released: usize = self.in_flight.drain(..n).sum();
        self.bytes -= released;
        self.written += released as u64;
        n
    }

    /// Messages not yet handed to the driver, taken out (for a merge or a close).
    pub(super) fn take_pending(&mut self) -> (VecDeque<Bytes>, VecDeque<Bytes>) {
        self.bytes = self.in_flight.iter().sum();
        (
            core::mem::take(&mut self.buf),
            core::mem::take(&mut self.waiting),
        )
    }

    /// Messages not yet handed to the driver.
    pub(super) fn pending(&self) -> usize {
        self.buf.len() + self.waiting.len()
    }

    /// Appends another queue's messages after the ones held: into the send buffer while it
    /// has room and nothing waits, the rest to the wait queue. None is dropped: a send
    /// buffer also holds blocking sends that found room, which must not be lost because
    /// two queues merged (a crossing dial, a reconnection). The merged queues were each
    /// bounded, so the result is too: at most twice the bounds.
    pub(super) fn absorb(&mut self, buf: VecDeque<Bytes>, waiting: VecDeque<Bytes>, cap: usize) {
        for b in buf {
            self.bytes += b.len();
            if self.buf.len() < cap && self.waiting.is_empty() {
                self.buf.push_back(b);
            } else {
                self.waiting.push_back(b);
            }
        }
        self.bytes += waiting.iter().map(Bytes::len).sum::<usize>();
        self.waiting.extend(waiting);
    }

    pub(super) fn len(&self) -> SendQueueLen {
        SendQueueLen {
            buffered: self.buf.len(),
            waiting: self.waiting.len(),
            in_flight: self.in_flight.len(),
            bytes: self.bytes,
            written: self.written,
        }
    }
}

/// A message that will not be sent, to whom and why.
pub(super) fn dropped(to: &dyn core::fmt::Display, cause: &'static str) {
    tracing::debug!(target: "fabric_gossip_core::send", %to, cause, "message dropped");
}

impl<S: Security> Comm<S> {
    /// Refuses a send once stopped, to `no_peers`, or of an oversized envelope.
    pub(super) fn check_outgoing(&self, envelope: &Bytes, no_peers: bool) -> Result<(), Error> {
        if self.stopped {
            return Err(Error::Stopped);
        }
        if no_peers {
            return Err(Error::NoPeers);
        }
        self.check_size(envelope.len())
    }

    fn send_bounds(&self) -> Bounds {
        Bounds {
            cap: self.config.send_buffer_size,
            max_wait: self.config.max_waiting_sends,
            max_bytes: self.config.send_buffer_bytes,
        }
    }

    pub(super) fn check_size(&self, size: usize) -> Result<(), Error> {
        if size > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                size,
                limit: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// Puts a message on the way to a peer: its connection, the attempt in progress, or a
    /// new attempt (Fabric's `connectionStore.getConnection` followed by `send`). Says
    /// where it went; a non-blocking message that went nowhere is `Dropped`, counted.
    pub(super) fn enqueue(
        &mut self,
        peer: &RemotePeer,
        bytes: Bytes,
        mode: Mode,
        ack_op: Option<OpId>,
    ) -> Result<SendOutcome, Error> {
        if let Some(primary) = self.store.primary(&peer.pki_id) {
            return self.enqueue_on(primary, bytes, mode).map(|queued| {
                if queued {
                    SendOutcome::Queued(primary)
                } else {
                    SendOutcome::Dropped
                }
            });
        }
        // Fabric dials each endpoint of unknown PKI-ID apart; here attempts are keyed by
        // PKI-ID, and joining the one in progress would hand this message to its peer.
        if peer.pki_id.is_empty()
            && let Some(pending) = self.store.attempt_endpoint(&peer.pki_id)
            && pending != peer.endpoint
        {
            if mode == Mode::Drop {
                dropped(&peer.pki_id, "an attempt to another peer of unknown PKI-ID");
                self.stats.dropped_no_connection += 1;
                return Ok(SendOutcome::Dropped);
            }
            return Err(Error::UnknownPkiIdBusy {
                pending: pending.to_owned(),
            });
        }
        let bounds = self.send_bounds();
        let new_attempt = !self.store.has_attempt(&peer.pki_id);
        if new_attempt && self.store.attempts_and_registered() >= self.config.max_connections {
            // No room for another connection: refuse rather than grow without bound. Only a
            // non-blocking send is a counted drop; a blocking one tells its caller instead.
            if mode == Mode::Drop {
                dropped(&peer.pki_id, "max_connections reached");
                self.stats.dropped_no_connection += 1;
                return Ok(SendOutcome::Dropped);
            }
            return Err(Error::LimitReached("connections"));
        }
        let for_application = !self.for_layer;
        let att = self.store.attempt_entry(&peer.pki_id);
        if new_attempt {
            att.endpoint.clone_from(&peer.endpoint);
        }
        let res = att.queue.push(bytes, mode, bounds);
        if res.is_ok() {
            att.for_application |= for_application;
            if let Some(op) = ack_op {
                att.ack_waits.push(op);
            }
        }
        if res.is_err() && mode == Mode::Drop {
            dropped(&peer.pki_id, "send buffer of the connection attempt full");
            self.stats.dropped_overflow += 1;
        }
        if new_attempt {
            self.start_connect(peer);
        }
        match res {
            Ok(()) => Ok(SendOutcome::Connecting),
            Err(_) if mode == Mode::Drop => Ok(SendOutcome::Dropped),
            Err(e) => Err(e),
        }
    }

    /// Puts a message on one connection's queue: `Ok(false)` when a non-blocking one was
    /// dropped (and counted) for a full buffer.
    pub(super) fn enqueue_on(
        &mut self,
        stream: StreamId,
        bytes: Bytes,
        mode: Mode,
    ) -> Result<bool, Error> {
        let bounds = self.send_bounds();
        let Some(s) = self.streams.get_mut(stream) else {
            return Err(if self.streams.ever_issued(stream) {
                Error::ConnectionClosed
            } else {
                Error::UnknownHandle
            });
        };
        let Phase::Established(c) = &mut s.phase else {
            return Err(Error::ConnectionClosed);
        };
        let res = c.queue.push(bytes, mode, bounds);
        if res.is_err() && mode == Mode::Drop {
            dropped(&stream, "send buffer full");
            self.stats.dropped_overflow += 1;
        }
        self.pump(stream);
        match res {
            Ok(()) => Ok(true),
            Err(_) if mode == Mode::Drop => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands the driver as many queued envelopes as the write window allows.
    pub(super) fn pump(&mut self, stream: StreamId) {
        let window = self.config.write_window;
        let cap = self.config.send_buffer_size;
        let Some(c) = self.streams.get_mut(stream).and_then(|s| s.conn_mut()) else {
            return;
        };
        while let Some(envelope) = c.queue.next_write(window, cap) {
            self.out.write(stream, envelope, WriteKind::Message);
        }
    }

    /// The driver confirmed writes: count them and refill the window.
    pub(super) fn confirm_sent(&mut self, stream: StreamId, count: usize) {
        if let Some(c) = self.streams.get_mut(stream).and_then(|s| s.conn_mut()) {
            let n = c.queue.confirm(count);
            self.stats.sent += n as u64;
            self.pump(stream);
        }
    }

    /// A connection's unsent messages, taken out.
    pub(super) fn take_queues(&mut self, stream: StreamId) -> (VecDeque<Bytes>, VecDeque<Bytes>) {
        match self.streams.get_mut(stream).and_then(|s| s.conn_mut()) {
            Some(c) => c.queue.take_pending(),
            None => (VecDeque::new(), VecDeque::new()),
        }
    }

    /// Appends queued messages to a connection (see [`SendQueue::absorb`]) and writes what
    /// the window allows; if the connection is gone they are counted as overflow.
    pub(super) fn absorb(
        &mut self,
        stream: StreamId,
        buf: VecDeque<Bytes>,
        waiting: VecDeque<Bytes>,
    ) {
        if buf.is_empty() && waiting.is_empty() {
            return;
        }
        let cap = self.config.send_buffer_size;
        match self.streams.get_mut(stream).and_then(|s| s.conn_mut()) {
            Some(c) => c.queue.absorb(buf, waiting, cap),
            None => self.stats.dropped_overflow += (buf.len() + waiting.len()) as u64,
        }
        self.pump(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn bounds(cap: usize, max_wait: usize, max_bytes: usize) -> Bounds {
        Bounds {
            cap,
            max_wait,
            max_bytes,
        }
    }

    /// Bounds in messages alone (no byte bound that a test's messages could reach).
    fn n(cap: usize, max_wait: usize) -> Bounds {
        bounds(cap, max_wait, usize::MAX)
    }

    fn sized(len: usize) -> Bytes {
        Bytes::from(vec![7; len])
    }

    #[test]
    fn non_blocking_sends_drop_when_the_buffer_is_full() {
        let mut q = SendQueue::default();
        assert!(q.push(b(1), Mode::Drop, n(2, 5)).is_ok());
        assert!(q.push(b(2), Mode::Drop, n(2, 5)).is_ok());
        assert_eq!(q.push(b(3), Mode::Drop, n(2, 5)), Err(Error::WouldBlock));
        assert_eq!(q.len().buffered, 2);
        assert_eq!(q.len().waiting, 0);
    }

    #[test]
    fn blocking_sends_wait_up_to_their_bound_and_keep_their_place() {
        let mut q = SendQueue::default();
        q.push(b(1), Mode::Wait, n(1, 1)).unwrap();
        q.push(b(2), Mode::Wait, n(1, 1)).unwrap();
        assert_eq!(q.push(b(3), Mode::Wait, n(1, 1)), Err(Error::WouldBlock));
        // Someone waits, so even a non-blocking send with buffer room may not overtake.
        assert_eq!(q.next_write(8, 1), Some(b(1)));
        assert_eq!(q.next_write(8, 1), Some(b(2)));
        assert_eq!(q.next_write(8, 1), None);
        assert_eq!(q.len().in_flight, 2);
    }

    #[test]
    fn the_write_window_holds_writes_back_until_confirmed() {
        let mut q = SendQueue::default();
        for i in 0..4 {
            q.push(b(i), Mode::Drop, n(10, 0)).unwrap();
        }
        assert_eq!(q.next_write(2, 10), Some(b(0)));
        assert_eq!(q.next_write(2, 10), Some(b(1)));
        assert_eq!(q.next_write(2, 10), None);
        assert_eq!(q.confirm(5), 2, "only what was in flight is confirmed");
        assert_eq!(q.next_write(2, 10), Some(b(2)));
    }

    #[test]
    fn absorbing_keeps_order_and_drops_nothing() {
        let mut q = SendQueue::default();
        q.push(b(1), Mode::Drop, n(2, 0)).unwrap();
        let other: VecDeque<Bytes> = [b(2), b(3)].into();
        let other_waiting: VecDeque<Bytes> = [b(4)].into();
        q.absorb(other, other_waiting, 2);
        assert_eq!(q.pending(), 4);
        let got: Vec<_> = core::iter::from_fn(|| q.next_write(10, 2)).collect();
        assert_eq!(got, vec![b(1), b(2), b(3), b(4)]);
    }

    #[test]
    fn the_byte_bound_refuses_what_the_message_bound_would_take() {
        let bounds = bounds(20, 20, 1000);
        let mut q = SendQueue::default();
        q.push(sized(600), Mode::Drop, bounds).unwrap();
        q.push(sized(400), Mode::Drop, bounds).unwrap();
        // 1,000 bytes held: neither a non-blocking nor a blocking send of one byte more.
        assert_eq!(q.push(sized(1), Mode::Drop, bounds), Err(Error::WouldBlock));
        assert_eq!(q.push(sized(1), Mode::Wait, bounds), Err(Error::WouldBlock));
        assert_eq!(q.len().bytes, 1000);
        // Handed to the driver, the bytes still count until confirmed.
        assert_eq!(q.next_write(8, 20).map(|e| e.len()), Some(600));
        assert_eq!(q.push(sized(1), Mode::Drop, bounds), Err(Error::WouldBlock));
        assert_eq!(q.confirm(1), 1);
        assert_eq!(q.len().bytes, 400);
        q.push(sized(600), Mode::Drop, bounds).unwrap();
        assert_eq!(q.len().bytes, 1000);
    }

    #[test]
    fn an_empty_queue_takes_one_message_larger_than_the_byte_bound() {
        let bounds = bounds(20, 20, 1000);
        let mut q = SendQueue::default();
        q.push(sized(5000), Mode::Drop, bounds).unwrap();
        assert_eq!(q.push(sized(1), Mode::Drop, bounds), Err(Error::WouldBlock));
        assert_eq!(q.next_write(8, 20).map(|e| e.len()), Some(5000));
        assert_eq!(q.push(sized(1), Mode::Wait, bounds), Err(Error::WouldBlock));
        q.confirm(1);
        assert_eq!(q.len().bytes, 0);
        q.push(sized(5000), Mode::Wait, bounds).unwrap();
    }

    #[test]
    fn taking_and_absorbing_keep_the_byte_count() {
        let bounds = bounds(1, 4, 10_000);
        let mut q = SendQueue::default();
        q.push(sized(100), Mode::Wait, bounds).unwrap();
        q.push(sized(200), Mode::Wait, bounds).unwrap();
        q.push(sized(300), Mode::Wait, bounds).unwrap();
        assert_eq!(q.next_write(8, 1).map(|e| e.len()), Some(100));
        let (buf, waiting) = q.take_pending();
        assert_eq!(q.len().bytes, 100, "what is in flight stays counted");
        let mut other = SendQueue::default();
        other.push(sized(50), Mode::Drop, bounds).unwrap();
        other.absorb(buf, waiting, 1);
        assert_eq!(other.len().bytes, 550);
        let got: Vec<_> = core::iter::from_fn(|| other.next_write(10, 1))
            .map(|e| e.len())
            .collect();
        assert_eq!(got, vec![50, 200, 300]);
        assert_eq!(other.confirm(3), 3);
        assert_eq!(other.len().bytes, 0);
        assert_eq!(q.confirm(1), 1);
        assert_eq!(q.len().bytes, 0);
    }
}
