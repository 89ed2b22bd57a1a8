//! Dialling: client channels, as Fabric's connFactory makes them
//! (`gossip/comm/comm_impl.go`, `createConnection`: dial within `dialTimeout`, then a
//! `Ping` within `connTimeout`, then open a `GossipStream` and hand it to the handshake).
//!
//! A dial serves one purpose: a connection attempt (the connection store's), a `probe()`
//! (dial and Ping only) or a `handshake()` operation. All three dial as Fabric's
//! `createConnection`, `Probe` and `Handshake` do: `grpc.DialContext` with `WithBlock()`
//! under a `dialTimeout` context.
//!
//! # Retrying within the dial timeout
//!
//! Such a dial does not end at its first failed connection. grpc-go v1.31.0 (vendored by
//! Fabric v2.4.9) gives the channel an `addrConn` whose `resetTransport` loop
//! (`clientconn.go`) tries to connect, and on any failure (refused, unreachable, a failed
//! TLS handshake, the connection closing before the server's HTTP/2 preface) waits out
//! its back-off and tries again; `DialContext` with `WithBlock()` returns only when the
//! channel is ready or its context ends, since without `FailOnNonTempDialError` it never
//! gives up on a failure. So a Fabric send to a restarting peer gets through if the peer
//! is back within the dial timeout, and one to a dead peer fails after the whole dial
//! timeout.
//!
//! Here a dial does the same: a failed attempt (`handle_dial_result` with an error) puts
//! it in [`DialState::Backoff`] for [`DialBackoff::delay`](crate::DialBackoff::delay),
//! its jitter drawn from the core's seeded generator; then the core asks the driver for
//! another attempt with a new `Action::Dial` naming the same [`DialId`] (the handle is
//! the channel, grpc-go's `ClientConn`, which lives across its attempts). The dial's
//! deadline stays `dial_timeout` after it began; when it passes with no attempt
//! succeeded, the dial fails with the last attempt's error (`DialError::Timeout` if none
//! had failed yet: a connection that hung). grpc-go's own bound on one attempt,
//! `minConnectTimeout` (20 s, or the back-off if longer), is not modelled: under any
//! `dial_timeout` below 20 s the dial's deadline comes first, as it does in Fabric.

use super::output::Action;
use super::stream::{Purpose, Stream};
use super::timers::TimerKey;
use super::{Comm, RemotePeer};
use crate::config::CertHash;
use crate::error::{DialError, HandshakeError, ProbeError};
use crate::ids::{DialId, OpId, PkiId, StreamId};
use crate::security::Security;
use crate::time::Instant;
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Where a dial is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialState {
    /// Waiting for `handle_dial_result`.
    Dialing,
    /// The last connection attempt failed; the next starts at `retry_at` (if that is
    /// before the dial's deadline).
    Backoff { retry_at: Instant },
    /// Waiting for `handle_ping_result`.
    Pinging,
    /// Carrying this stream; the stream's deadline applies now.
    Streaming(StreamId),
}

/// What a dial is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DialPurpose {
    /// The connection store's attempt to reach the peer expected under `key`.
    Connect { key: PkiId },
    /// A `probe()`: dial and Ping, nothing more.
    Probe(OpId),
    /// A `handshake()` operation.
    Handshake(OpId),
}

impl DialPurpose {
    /// The purpose of the stream a successful Ping opens, or `None` when the Ping was all
    /// that was asked (a probe).
    fn stream_purpose(&self) -> Option<Purpose> {
        match self {
            DialPurpose::Probe(_) => None,
            DialPurpose::Connect { key } => Some(Purpose::Connect { key: key.clone() }),
            DialPurpose::Handshake(op) => Some(Purpose::HandshakeOp(*op)),
        }
    }
}

/// One client channel (Fabric's `grpc.ClientConn`).
#[derive(Debug)]
pub(super) struct Dial {
    pub(super) endpoint: String,
    pub(super) purpose: DialPurpose,
    pub(super) state: DialState,
    /// The deadline of the current step; `None` once a stream carries it.
    pub(super) deadline: Option<Instant>,
    /// What the server presented (with TLS), for the handshake's certificate binding.
    pub(super) remote_cert_hash: Option<CertHash>,
    /// Connection attempts that failed so far.
    pub(super) failures: u32,
    /// The last failed attempt's error: what the dial reports if its deadline passes.
    pub(super) last_error: Option<String>,
}

impl Dial {
    fn new(endpoint: &str, purpose: DialPurpose, deadline: Instant) -> Self {
        Dial {
            endpoint: endpoint.to_owned(),
            purpose,
            state: DialState::Dialing,
            deadline: Some(deadline),
            remote_cert_hash: None,
            failures: 0,
            last_error: None,
        }
    }

    /// An attempt failed with `error`; the next starts at `retry_at`.
    fn attempt_failed(&mut self, error: String, retry_at: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error);
        self.state = DialState::Backoff { retry_at };
    }

    /// What the dial fails with when its deadline passes before a connection.
    pub(super) fn deadline_error(&mut self) -> DialError {
        self.last_error
            .take()
            .map_or(DialError::Timeout, DialError::Failed)
    }

    /// The channel is up: Ping next, until `deadline`.
    fn dialled(&mut self, cert_hash: Option<CertHash>, deadline: Instant) {
        self.remote_cert_hash = cert_hash;
        self.state = DialState::Pinging;
        self.deadline = Some(deadline);
    }
}

/// A draw evenly from [0, 1), with the 53 bits an `f64` holds.
fn unit_draw(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl<S: Security> Comm<S> {
    pub(super) fn start_dial(&mut self, endpoint: &str, purpose: DialPurpose) -> DialId {
        let deadline = self.now + self.config.dial_timeout;
        let dial = self.dials.insert(Dial::new(endpoint, purpose, deadline));
        self.out.action(Action::Dial {
            dial,
            endpoint: endpoint.to_owned(),
        });
        self.arm(deadline, TimerKey::Dial(dial));
        dial
    }

    /// The connection store's attempt to reach `peer` starts with a dial.
    pub(super) fn start_connect(&mut self, peer: &RemotePeer) {
        self.start_dial(
            &peer.endpoint,
            DialPurpose::Connect {
                key: peer.pki_id.clone(),
            },
        );
    }

    pub(super) fn dial_result(
        &mut self,
        now: Instant,
        dial: DialId,
        result: Result<Option<CertHash>, String>,
    ) -> Result<(), crate::Error> {
        let conn_timeout = self.config.conn_timeout;
        let d = self
            .dials
            .get_mut(dial)
            .ok_or(crate::Error::UnknownHandle)?;
        if d.state != DialState::Dialing {
            return Ok(());
        }
        match result {
            Ok(hash) => {
                let deadline = now + conn_timeout;
                d.dialled(hash, deadline);
                self.out.action(Action::Ping { dial });
                self.arm(deadline, TimerKey::Dial(dial));
            }
            Err(reason) => {
                let due = d.deadline.is_some_and(|at| at <= now);
                match self.config.dial_backoff {
                    Some(backoff) if !due => {
                        let unit = unit_draw(&mut self.dial_rng);
                        let wait = backoff.delay(d.failures.saturating_add(1), unit);
                        let retry_at = now + wait;
                        tracing::debug!(target: "fabric_gossip_core::dial", dial = %dial, endpoint = %d.endpoint, error = %reason, failures = d.failures.saturating_add(1), wait_ms = wait.as_millis() as u64, "connection attempt failed; trying again after the back-off");
                        let deadline = d.deadline;
                        d.attempt_failed(reason, retry_at);
                        // One that would start after the deadline is never made: the
                        // deadline ends the dial, as the context ends grpc-go's.
                        if deadline.is_some_and(|at| retry_at < at) {
                            self.arm(retry_at, TimerKey::DialRetry(dial));
                        }
                    }
                    _ => self.dial_failed(dial, DialError::Failed(reason)),
                }
            }
        }
        Ok(())
    }

    /// The back-off after a failed attempt is over: the driver makes another, on the same
    /// handle. Unless the dial was the connection store's and the peer has connected to
    /// us meanwhile (a peer restarting dials those it knows): then the dial ends there and
    /// what waited for it goes to that connection. grpc-go would try again, and Fabric,
    /// finding the connection there once its own came up, close its own; this spares the
    /// peer a second connection and the crossing of the two.
    pub(super) fn retry_dial(&mut self, dial: DialId) {
        let Some(d) = self.dials.get_mut(dial) else {
            return;
        };
        if !matches!(d.state, DialState::Backoff { .. }) {
            return;
        }
        if let DialPurpose::Connect { key } = &d.purpose
            && self.store.primary(key).is_some()
        {
            let key = key.clone();
            self.dials.remove(dial);
            self.out.action(Action::CloseDial { dial });
            tracing::debug!(target: "fabric_gossip_core::dial", dial = %dial, pki_id = %key, "the peer connected while the dial waited to try again: not tried again");
            self.attempt_served(&key, &key);
            return;
        }
        let Some(d) = self.dials.get_mut(dial) else {
            return;
        };
        d.state = DialState::Dialing;
        self.stats.dial_retries += 1;
        self.out.action(Action::Dial {
            dial,
            endpoint: d.endpoint.clone(),
        });
    }

    /// Removes a failed dial and closes its channel.
    fn remove_failed(
        &mut self,
        dial: DialId,
        what: &str,
        error: &dyn core::fmt::Display,
    ) -> Option<Dial> {
        let d = self.dials.remove(dial)?;
        self.out.action(Action::CloseDial { dial });
        tracing::debug!(target: "fabric_gossip_core::dial", dial = %dial, endpoint = %d.endpoint, %error, "{what} failed");
        Some(d)
    }

    pub(super) fn dial_failed(&mut self, dial: DialId, err: DialError) {
        let Some(d) = self.remove_failed(dial, "dial", &err) else {
            return;
        };
        if let DialState::Streaming(stream) = d.state {
            // The channel is going away; so is its stream.
            if let Some(s) = self.streams.get_mut(stream) {
                s.dial = None;
                if s.is_handshaking() {
                    self.fail_handshake(stream, HandshakeError::Dial(err));
                } else {
                    self.close_stream(stream, crate::CloseReason::StreamError(err.to_string()));
                }
            }
            return;
        }
        let probe_err = ProbeError::Dial(err.clone());
        self.dial_purpose_failed(d.purpose, HandshakeError::Dial(err), probe_err);
    }

    pub(super) fn ping_failed(&mut self, dial: DialId, reason: String) {
        let Some(d) = self.remove_failed(dial, "ping", &reason) else {
            return;
        };
        let probe_err = ProbeError::Ping(reason.clone());
        self.dial_purpose_failed(d.purpose, HandshakeError::Ping(reason), probe_err);
    }

    /// Reports a dial or Ping failure to whatever the dial was for.
    fn dial_purpose_failed(
        &mut self,
        purpose: DialPurpose,
        err: HandshakeError,
        probe_err: ProbeError,
    ) {
        match purpose {
            DialPurpose::Connect { key } => self.attempt_failed(&key, err),
            DialPurpose::Probe(op) => self.finish_probe(op, Err(probe_err)),
            DialPurpose::Handshake(op) => self.finish_handshake_op(op, Err(err)),
        }
    }

    /// The Ping answered: a probe is done; anything else opens a stream and starts the
    /// handshake on it.
    pub(super) fn ping_ok(&mut self, dial: DialId, now: Instant) {
        let Some(d) = self.dials.get_mut(dial) else {
            return;
        };
        let Some(purpose) = d.purpose.stream_purpose() else {
            if let DialPurpose::Probe(op) = d.purpose {
                self.dials.remove(dial);
                self.out.action(Action::CloseDial { dial });
                self.finish_probe(op, Ok(()));
            }
            return;
        };
        let probe = matches!(purpose, Purpose::HandshakeOp(_));
        let deadline = now + self.config.conn_timeout;
        let remote_addr = d.endpoint.clone();
        let remote_cert_hash = d.remote_cert_hash;
        d.deadline = None;
        let stream = self.streams.insert(Stream {
            inbound: false,
            dial: Some(dial),
            remote_addr,
            remote_cert_hash,
            phase: super::stream::Phase::Handshaking { deadline, purpose },
        });
        if let Some(d) = self.dials.get_mut(dial) {
            d.state = DialState::Streaming(stream);
        }
        self.out.action(Action::OpenStream { dial, stream });
        self.start_handshake(stream, probe, deadline);
    }

    /// Tears down a dial and whatever stream it carries, without reporting through the
    /// dial's purpose (the caller reports).
    pub(super) fn abort_dial(&mut self, dial: DialId) {
        let Some(d) = self.dials.get_mut(dial) else {
            return;
        };
        if let DialState::Streaming(stream) = d.state {
            if let Some(s) = self.streams.get_mut(stream)
                && let super::stream::Phase::Handshaking { purpose, .. } = &mut s.phase
            {
                *purpose = Purpose::Detached;
            }
            self.drop_stream(stream, None);
        }
        if self.dials.remove(dial).is_some() {
            self.out.action(Action::CloseDial { dial });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_moves_from_dialing_to_pinging_with_a_new_deadline() {
        let t0 = Instant::from_unix_secs(1);
        let t1 = Instant::from_unix_secs(2);
        let mut d = Dial::new("a:1", DialPurpose::Probe(OpId::from_parts(0, 0)), t0);
        assert_eq!(d.state, DialState::Dialing);
        assert_eq!(d.deadline, Some(t0));
        d.dialled(Some([7; 32]), t1);
        assert_eq!(d.state, DialState::Pinging);
        assert_eq!(d.deadline, Some(t1));
        assert_eq!(d.remote_cert_hash, Some([7; 32]));
    }

    #[test]
    fn only_a_probe_stops_at_the_ping() {
        let op = OpId::from_parts(3, 1);
        assert_eq!(DialPurpose::Probe(op).stream_purpose(), None);
        assert_eq!(
            DialPurpose::Handshake(op).stream_purpose(),
            Some(Purpose::HandshakeOp(op))
        );
        let key = PkiId::from("p");
        assert_eq!(
            DialPurpose::Connect { key: key.clone() }.stream_purpose(),
            Some(Purpose::Connect { key })
        );
    }
}
