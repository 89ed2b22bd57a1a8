//! Operations whose result comes later as an event: `probe()` and `handshake()`
//! (`gossip/comm/comm_impl.go`, `Probe` and `Handshake`), and the SendWithAck of
//! [`super::acks`]. None of them registers a connection.

use super::acks::AckWait;
use super::dial::DialPurpose;
use super::output::Event;
use super::timers::TimerKey;
use super::{Comm, RemotePeer};
use crate::error::{AckError, Error, HandshakeError, ProbeError};
use crate::ids::{DialId, OpId, PkiId};
use crate::message::ConnectionInfo;
use crate::security::Security;
use crate::time::Instant;
use std::sync::Arc;

/// One pending operation.
#[derive(Debug)]
pub(super) enum Op {
    /// Dial and Ping; `dial` is set right after the operation is created.
    Probe { dial: Option<DialId> },
    /// Dial, Ping and authenticate with `probe: true`, within `deadline`.
    Handshake {
        dial: Option<DialId>,
        expected: PkiId,
        deadline: Instant,
    },
    /// Send and wait for acks.
    SendWithAck(AckWait),
}

impl Op {
    /// The operation's own deadline (a probe has only its dial's).
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Op::Probe { .. } => None,
            Op::Handshake { deadline, .. } => Some(*deadline),
            Op::SendWithAck(w) => Some(w.deadline),
        }
    }
}

/// A handshake operation's result, checked against the PKI-ID the caller expected.
fn check_expected(
    expected: PkiId,
    result: Result<Arc<ConnectionInfo>, HandshakeError>,
) -> Result<Arc<ConnectionInfo>, HandshakeError> {
    match result {
        Ok(info) if !expected.is_empty() && info.id != expected => {
            Err(HandshakeError::PkiIdMismatch {
                expected,
                actual: info.id.clone(),
            })
        }
        other => other,
    }
}

impl<S: Security> Comm<S> {
    /// Whether a new operation may start: not stopped, and under `max_operations`.
    pub(super) fn admit_op(&mut self, now: Instant) -> Result<(), Error> {
        self.tick(now);
        if self.stopped {
            return Err(Error::Stopped);
        }
        if self.ops.len() >= self.config.max_operations {
            return Err(Error::LimitReached("operations"));
        }
        Ok(())
    }

    pub(super) fn start_probe(&mut self, peer: &RemotePeer) -> OpId {
        let op = self.ops.insert(Op::Probe { dial: None });
        let dial = self.start_dial(&peer.endpoint, DialPurpose::Probe(op));
        if let Some(Op::Probe { dial: d }) = self.ops.get_mut(op) {
            *d = Some(dial);
        }
        op
    }

    pub(super) fn start_handshake_op(&mut self, now: Instant, peer: &RemotePeer) -> OpId {
        let deadline = now + self.config.handshake_timeout;
        let op = self.ops.insert(Op::Handshake {
            dial: None,
            expected: peer.pki_id.clone(),
            deadline,
        });
        self.arm(deadline, TimerKey::Op(op));
        let dial = self.start_dial(&peer.endpoint, DialPurpose::Handshake(op));
        if let Some(Op::Handshake { dial: d, .. }) = self.ops.get_mut(op) {
            *d = Some(dial);
        }
        op
    }

    pub(super) fn op_deadline(&mut self, op: OpId) {
        match self.ops.get(op) {
            Some(Op::SendWithAck(_)) => self.expire_send_with_ack(op, AckError::Timeout),
            Some(Op::Handshake { dial, .. }) => {
                if let Some(dial) = *dial {
                    self.abort_dial(dial);
                }
                self.finish_handshake_op(op, Err(HandshakeError::OperationTimeout));
            }
            _ => {}
        }
    }

    /// At stop: the operation ends with its kind's "stopped" result.
    pub(super) fn fail_op(&mut self, op: OpId) {
        match self.ops.get(op) {
            Some(Op::Probe { .. }) => self.finish_probe(op, Err(ProbeError::Stopped)),
            Some(Op::Handshake { .. }) => {
                self.finish_handshake_op(op, Err(HandshakeError::ShuttingDown));
            }
            Some(Op::SendWithAck(_)) => self.expire_send_with_ack(op, AckError::Stopped),
            None => {}
        }
    }

    pub(super) fn finish_probe(&mut self, op: OpId, result: Result<(), ProbeError>) {
        if self.ops.remove(op).is_some() {
            self.out.event(Event::ProbeDone { op, result });
        }
    }

    pub(super) fn finish_handshake_op(
        &mut self,
        op: OpId,
        result: Result<Arc<ConnectionInfo>, HandshakeError>,
    ) {
        let Some(Op::Handshake { expected, dial, .. }) = self.ops.remove(op) else {
            return;
        };
        if let Some(dial) = dial {
            self.abort_dial(dial);
        }
        let was_ok = result.is_ok();
        let result = check_expected(expected, result);
        if was_ok && let Err(err) = &result {
            self.stats.handshake_failed(err);
        }
        self.out.event(Event::HandshakeDone { op, result });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn info(id: &str) -> Arc<ConnectionInfo> {
        Arc::new(ConnectionInfo {
            id: PkiId::from(id),
            identity: Bytes::new(),
            endpoint: String::new(),
            signed_data: Bytes::new(),
            signature: Bytes::new(),
        })
    }

    #[test]
    fn a_handshake_to_someone_else_is_a_mismatch() {
        let got = check_expected(PkiId::from("a"), Ok(info("b")));
        assert_eq!(
            got.unwrap_err(),
            HandshakeError::PkiIdMismatch {
                expected: PkiId::from("a"),
                actual: PkiId::from("b")
            }
        );
        assert!(check_expected(PkiId::from("a"), Ok(info("a"))).is_ok());
        assert!(
            check_expected(PkiId::default(), Ok(info("b"))).is_ok(),
            "empty accepts anyone"
        );
        assert_eq!(
            check_expected(PkiId::from("a"), Err(HandshakeError::Timeout)).unwrap_err(),
            HandshakeError::Timeout
        );
    }

    #[test]
    fn only_probes_have_no_deadline_of_their_own() {
        let t = Instant::from_unix_secs(3);
        assert_eq!(Op::Probe { dial: None }.deadline(), None);
        let h = Op::Handshake {
            dial: None,
            expected: PkiId::default(),
            deadline: t,
        };
        assert_eq!(h.deadline(), Some(t));
    }
}
