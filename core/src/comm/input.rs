//! Driver inputs: what happened on the network. Each carries the current instant and is
//! followed by a drain of [`Comm::poll_output`].

use super::{Comm, StreamEnd};
use crate::config::CertHash;
use crate::error::{CloseReason, Error, HandshakeError};
use crate::ids::{DialId, StreamId};
use crate::security::Security;
use crate::time::Instant;
use bytes::Bytes;

impl<S: Security> Comm<S> {
    /// Advances time: fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.fire_due(now);
    }

    /// A remote opened a `GossipStream` to us. Returns the stream's handle; the handshake's
    /// first write (or, with TLS and no client certificate, a `CloseStream`) is queued.
    /// `Err(Stopped)` means: refuse the RPC ("Shutting down").
    pub fn accept_stream(
        &mut self,
        now: Instant,
        remote_addr: &str,
        remote_cert_hash: Option<CertHash>,
    ) -> Result<StreamId, Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        Ok(self.accept(now, remote_addr, remote_cert_hash))
    }

    /// The outcome of an `Action::Dial`. On success, pass the SHA-256 of the leaf
    /// certificate the server presented (with TLS), or `None`. An error (refused,
    /// unreachable, a failed TLS handshake) does not end the dial while it has time left:
    /// with [`Config::dial_backoff`](crate::Config::dial_backoff) set the core asks for
    /// another attempt after the back-off, and the dial fails with the last error only at
    /// its `dial_timeout`. A result for a dial not waiting for one is ignored.
    pub fn handle_dial_result(
        &mut self,
        now: Instant,
        dial: DialId,
        result: Result<Option<CertHash>, String>,
    ) -> Result<(), Error> {
        self.tick(now);
        self.dial_result(now, dial, result)
    }

    /// The outcome of an `Action::Ping`.
    pub fn handle_ping_result(
        &mut self,
        now: Instant,
        dial: DialId,
        result: Result<(), String>,
    ) -> Result<(), Error> {
        self.tick(now);
        let d = self.dials.get(dial).ok_or(Error::UnknownHandle)?;
        if d.state != super::dial::DialState::Pinging {
            return Ok(());
        }
        match result {
            Ok(()) => self.ping_ok(dial, now),
            Err(reason) => self.ping_failed(dial, reason),
        }
        Ok(())
    }

    /// One Envelope read from a stream, as received (its bytes are kept for forwarding).
    /// Malformed input closes the stream and is reported as an event, never as `Err`;
    /// `Err` only means the handle is dead.
    pub fn handle_envelope(
        &mut self,
        now: Instant,
        stream: StreamId,
        bytes: Bytes,
    ) -> Result<(), Error> {
        if bytes.len() > self.config.max_message_size {
            return self.handle_oversized(now, stream, bytes.len());
        }
        self.tick(now);
        if self.handshaking(stream)? {
            // Decoding is where an unauthenticated remote could make us allocate far more
            // than it sent (millions of empty repeated fields); a ConnEstablish is small.
            let limit = self.config.max_handshake_message_size();
            if bytes.len() > limit {
                self.refuse_oversized(stream, true, bytes.len(), limit);
            } else {
                self.on_handshake_envelope(stream, bytes, now);
            }
        } else {
            self.on_established_envelope(stream, bytes);
        }
        Ok(())
    }

    /// The driver saw a message of `size` bytes announced on this stream (a gRPC length
    /// prefix) that exceeds `max_message_size` (the stream's first message:
    /// [`crate::Config::max_handshake_message_size`]), and refused to read it: the same outcome as
    /// [`Comm::handle_envelope`] with that many bytes (`oversized` counted, the handshake
    /// fails or the connection closes `Malformed`), without the driver having to hold them.
    /// `Err` only means the handle is dead.
    pub fn handle_oversized(
        &mut self,
        now: Instant,
        stream: StreamId,
        size: usize,
    ) -> Result<(), Error> {
        self.tick(now);
        let handshaking = self.handshaking(stream)?;
        let limit = if handshaking {
            self.config.max_handshake_message_size()
        } else {
            self.config.max_message_size
        };
        self.refuse_oversized(stream, handshaking, size, limit);
        Ok(())
    }

    fn refuse_oversized(&mut self, stream: StreamId, handshaking: bool, size: usize, limit: usize) {
        self.stats.oversized += 1;
        let why = format!("envelope of {size} bytes exceeds the limit of {limit}");
        if handshaking {
            self.fail_handshake(stream, HandshakeError::Malformed(why));
        } else {
            self.close_stream(stream, CloseReason::Malformed(why));
        }
    }

    /// The driver finished writing `count` envelopes of this stream (credit comes back).
    pub fn handle_sent(
        &mut self,
        now: Instant,
        stream: StreamId,
        count: usize,
    ) -> Result<(), Error> {
        self.tick(now);
        self.handshaking(stream)?;
        self.confirm_sent(stream, count);
        Ok(())
    }

    /// A write to the stream failed: the peer is presumed dead and the connection closed
    /// (Fabric's `disconnect`).
    pub fn handle_write_failed(
        &mut self,
        now: Instant,
        stream: StreamId,
        reason: String,
    ) -> Result<(), Error> {
        self.tick(now);
        if self.handshaking(stream)? {
            self.fail_handshake(stream, HandshakeError::StreamEnded(reason));
        } else {
            self.close_stream(stream, CloseReason::WriteFailed(reason));
        }
        Ok(())
    }

    /// The stream ended (read side saw end or error). The handle is dead afterwards.
    pub fn handle_stream_closed(
        &mut self,
        now: Instant,
        stream: StreamId,
        end: StreamEnd,
    ) -> Result<(), Error> {
        self.tick(now);
        if self.handshaking(stream)? {
            self.handshake_stream_ended(stream, end);
        } else {
            let reason = match end {
                StreamEnd::Finished => CloseReason::RemoteClosed,
                StreamEnd::Error(e) => CloseReason::StreamError(e),
            };
            self.close_stream(stream, reason);
        }
        Ok(())
    }

    /// Whether a live stream is still handshaking; `Err(UnknownHandle)` if it is dead.
    fn handshaking(&self, stream: StreamId) -> Result<bool, Error> {
        self.streams
            .get(stream)
            .map(|s| s.is_handshaking())
            .ok_or(Error::UnknownHandle)
    }
}
