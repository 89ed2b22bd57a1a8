//! The handshake: the signed `ConnEstablish` exchange that authenticates a stream
//! (`gossip/comm/comm_impl.go`, `authenticateRemotePeer`; the checks of the identity
//! store in `gossip/identity/identity.go`, `identityMapperImpl.Put`).
//!
//! Both sides write their own `ConnEstablish` first, then wait `conn_timeout` for the
//! remote's, and check it in Fabric's order: decodable, of the right type, a PKI-ID, an
//! identity the provider accepts and that matches the PKI-ID, the TLS certificate hash of
//! the stream, and the signature.
//!
//! The remote's `probe` flag: on a stream it opened, it asks to be authenticated and let
//! go; on a stream we opened, where only we may probe, it fails the handshake once the
//! message has passed every other check ([`HandshakeError::ProbeAnswer`], "probe", as
//! Fabric's dialler and `Handshake` fail). No Fabric peer sends one there.

use super::output::{Action, Event, WriteKind};
use super::stream::{Phase, Purpose, Stream};
use super::timers::TimerKey;
use super::{Comm, StreamEnd};
use crate::config::CertHash;
use crate::error::{Error, HandshakeError};
use crate::ids::{PkiId, StreamId};
use crate::message::{
    ConnectionInfo, SignedMessage, conn_establish_message, detached_envelope, verify_envelope,
};
use crate::security::{Security, SecurityError};
use crate::time::Instant;
use bytes::Bytes;
use fabric_gossip_proto::gossip::{Envelope, GossipMessage, gossip_message};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// What all handshakes share.
#[derive(Debug, Default)]
pub(super) struct Handshakes {
    /// Inbound streams still handshaking, oldest first, with their remote address.
    pending_inbound: VecDeque<(StreamId, Arc<str>)>,
    /// How many of them each remote address holds. Ordered, not hashed: the addresses,
    /// ports included, are the remote side's choice, and the core's hash maps are for keys
    /// it cannot choose.
    pending_per_addr: BTreeMap<Arc<str>, u32>,
    /// Our own `ConnEstablish`, signed once per (role, probe) and reused.
    conn_establish: [Option<Bytes>; 4],
    /// How many "handshake failed" lines may still be logged this second.
    log: crate::time::LogBudget,
    /// The warnings that a remote refused us after its handshake: one a second.
    pub(super) refused_log: RefusedLog,
}

/// One warning a second that a remote refused our connection: a node whose identity was
/// revoked or expired is refused by every peer it meets, again and again while gossip
/// makes them alive to it (a day-2 trial counted 84 refusals in 23 s, all at `info`, no
/// warning); the first says why, the rest go to `debug`.
#[derive(Debug)]
pub(super) struct RefusedLog(pub(super) crate::time::LogBudget);

impl Default for RefusedLog {
    fn default() -> Self {
        RefusedLog(crate::time::LogBudget::per_second(1))
    }
}

impl Handshakes {
    /// The slot of our `ConnEstablish` for a role.
    fn slot(inbound: bool, probe: bool) -> usize {
        usize::from(inbound) * 2 + usize::from(probe)
    }

    /// Notes a new pending inbound stream from `addr`.
    fn pending(&mut self, stream: StreamId, addr: &str) {
        let addr: Arc<str> = Arc::from(addr);
        *self.pending_per_addr.entry(addr.clone()).or_insert(0) += 1;
        self.pending_inbound.push_back((stream, addr));
    }

    /// Forgets a pending inbound stream (authenticated or failed).
    pub(super) fn settled(&mut self, stream: StreamId) {
        if let Some(i) = self.pending_inbound.iter().position(|(p, _)| *p == stream) {
            self.remove(i);
        }
    }

    fn remove(&mut self, i: usize) -> Option<StreamId> {
        let (stream, addr) = self.pending_inbound.remove(i)?;
        if let Some(n) = self.pending_per_addr.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.pending_per_addr.remove(&addr);
            }
        }
        Some(stream)
    }

    /// If `max` are pending, the one to refuse: the oldest of a remote address (a
    /// connection) holding more than one, else the oldest. A connection may carry several
    /// streams; one that keeps opening streams it never authenticates (an authenticated
    /// connection is not pending in the driver, so the driver's caps do not hold it back)
    /// would otherwise push out other peers' handshakes, oldest first: a loopback attack
    /// with 400 connections of 15 such streams each made legitimate handshakes fail. With
    /// the driver's caps (512 connections) single streams cannot fill the default cap.
    fn evict(&mut self, max: usize) -> Option<StreamId> {
        if self.pending_inbound.len() < max {
            return None;
        }
        let i = self
            .pending_inbound
            .iter()
            .position(|(_, a)| self.pending_per_addr.get(a).is_some_and(|n| *n > 1))
            .unwrap_or(0);
        self.remove(i)
    }
}

impl<S: Security> Comm<S> {
    /// A remote opened a stream: make room among the pending handshakes (oldest refused
    /// first) and start ours.
    pub(super) fn accept(
        &mut self,
        now: Instant,
        remote_addr: &str,
        remote_cert_hash: Option<CertHash>,
    ) -> StreamId {
        while let Some(oldest) = self.handshakes.evict(self.config.max_pending_handshakes) {
            tracing::debug!(
                target: "fabric_gossip_core::handshake",
                stream = %oldest,
                limit = self.config.max_pending_handshakes,
                "too many pending handshakes: the oldest is refused"
            );
            self.fail_handshake(oldest, HandshakeError::Evicted);
        }
        let deadline = now + self.config.conn_timeout;
        let stream = self.streams.insert(Stream {
            inbound: true,
            dial: None,
            remote_addr: remote_addr.to_owned(),
            remote_cert_hash,
            phase: Phase::Handshaking {
                deadline,
                purpose: Purpose::Inbound,
            },
        });
        self.handshakes.pending(stream, remote_addr);
        self.start_handshake(stream, false, deadline);
        stream
    }

    /// Refuses a TLS peer without a certificate, else sends our signed `ConnEstablish` and
    /// waits for the remote's until `deadline`.
    pub(super) fn start_handshake(&mut self, stream: StreamId, probe: bool, deadline: Instant) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let inbound = s.inbound;
        if self.config.tls.is_some() && s.remote_cert_hash.is_none() {
            self.fail_handshake(stream, HandshakeError::NoTlsCertificate);
            return;
        }
        match self.conn_establish(inbound, probe) {
            Ok(envelope) => {
                self.out.write(stream, envelope, WriteKind::Handshake);
                self.arm(deadline, TimerKey::Stream(stream));
            }
            Err(e) => self.fail_handshake(stream, HandshakeError::LocalSigning(e)),
        }
    }

    /// Our signed `ConnEstablish` for a role (`comm_impl.go`, `createConnectionMsg`); the
    /// certificate bound is the one this side presents in that role.
    fn conn_establish(&mut self, inbound: bool, probe: bool) -> Result<Bytes, SecurityError> {
        let slot = Handshakes::slot(inbound, probe);
        if let Some(b) = &self.handshakes.conn_establish[slot] {
            return Ok(b.clone());
        }
        let tls_cert_hash = match &self.config.tls {
            Some(t) if inbound => Bytes::copy_from_slice(&t.server_cert_hash),
            Some(t) => Bytes::copy_from_slice(&t.client_cert_hash),
            None => Bytes::new(),
        };
        let msg = conn_establish_message(
            self.own_pki.0.clone(),
            self.own_identity.clone(),
            tls_cert_hash,
            probe,
        );
        let signed = SignedMessage::sign(msg, &self.security).map_err(|e| match e {
            Error::Signing(s) => s,
            other => SecurityError::SigningFailed(other.to_string()),
        })?;
        let bytes = signed.envelope_bytes().clone();
        self.handshakes.conn_establish[slot] = Some(bytes.clone());
        Ok(bytes)
    }

    /// The checks of `authenticateRemotePeer`, in Fabric's order. Returns who the remote
    /// proved to be (at `remote_addr`, moved into the result rather than copied again)
    /// and whether it only probes.
    fn authenticate(
        &mut self,
        bytes: Bytes,
        remote_cert_hash: Option<CertHash>,
        remote_addr: String,
        now: Instant,
    ) -> Result<(ConnectionInfo, bool), HandshakeError> {
        let env = Envelope::decode(bytes).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let msg = GossipMessage::decode(env.payload.clone())
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let Some(gossip_message::Content::Conn(conn)) = msg.content else {
            return Err(HandshakeError::WrongType);
        };
        if conn.pki_id.is_empty() {
            return Err(HandshakeError::NoPkiId);
        }
        if conn.pki_id == self.own_pki.0 {
            return Err(HandshakeError::OwnPkiId);
        }
        if conn.identity.len() > self.config.max_identity_size {
            return Err(HandshakeError::IdentityTooLarge {
                size: conn.identity.len(),
                limit: self.config.max_identity_size,
            });
        }
        // What a connection keeps for its lifetime is copied out of the receive buffer,
        // which may be the driver's and shared with other messages (see
        // `detached_envelope`).
        let pki = PkiId(Bytes::copy_from_slice(&conn.pki_id));
        let identity = Bytes::copy_from_slice(&conn.identity);
        self.put_identity(&pki, &identity, now)?;
        if self.config.tls.is_some() {
            let presented = remote_cert_hash.ok_or(HandshakeError::NoTlsCertificate)?;
            if conn.tls_cert_hash.as_ref() != presented.as_slice() {
                return Err(HandshakeError::TlsCertHashMismatch);
            }
        }
        verify_envelope(&self.security, &identity, &env)?;
        // Fabric verifies the `ConnEstablish` through its identity mapper (`Verify`, then
        // `Get`): every handshake that gets this far is a use of the remote's identity.
        self.identities.mark_used(pki.as_bytes(), now);
        let env = detached_envelope(&env);
        Ok((
            ConnectionInfo {
                id: pki,
                identity,
                endpoint: remote_addr,
                signed_data: env.payload,
                signature: env.signature,
            },
            conn.probe,
        ))
    }

    /// The remote's first Envelope on a handshaking stream.
    pub(super) fn on_handshake_envelope(&mut self, stream: StreamId, bytes: Bytes, now: Instant) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        if let Phase::Handshaking {
            purpose: Purpose::Verdict { .. },
            ..
        } = s.phase
        {
            // The remote owes us the end of the stream, not a message: ignored.
            tracing::debug!(
                target: "fabric_gossip_core::handshake",
                stream = %stream,
                "envelope while waiting for the remote's verdict: ignored"
            );
            return;
        }
        let remote_cert_hash = s.remote_cert_hash;
        let remote_addr = s.remote_addr.clone();
        let inbound = s.inbound;
        let (info, remote_probe) =
            match self.authenticate(bytes, remote_cert_hash, remote_addr, now) {
                Err(e) => return self.fail_handshake(stream, e),
                Ok(x) => x,
            };
        if remote_probe && !inbound {
            // Fabric's `authenticateRemotePeer` returns `errProbe` after its checks, which
            // its `createConnection` and `Handshake` take as a failure: before any PKI-ID
            // comparison, so it is this failure whoever the remote proved to be.
            return self.fail_handshake(stream, HandshakeError::ProbeAnswer);
        }
        tracing::debug!(
            target: "fabric_gossip_core::handshake",
            stream = %stream,
            remote = %info.endpoint,
            inbound,
            pki_id = %info.id,
            probe = remote_probe,
            "handshake authenticated"
        );
        self.handshakes.settled(stream);
        let info = Arc::new(info);
        let purpose = match self.streams.get_mut(stream).map(|s| &mut s.phase) {
            Some(Phase::Handshaking { purpose, .. }) => {
                if let Purpose::HandshakeOp(op) = *purpose {
                    // Authenticated; the remote's verdict on us is still to come.
                    *purpose = Purpose::Verdict {
                        op,
                        info: info.clone(),
                    };
                    return;
                }
                core::mem::replace(purpose, Purpose::Detached)
            }
            _ => return,
        };
        self.stats.handshakes_ok += 1;
        match purpose {
            Purpose::Inbound if remote_probe => {
                // A probing remote (`comm_impl.go`, `GossipStream` with `probe: true`) is
                // authenticated, then let go: the stream ends with OK, our verdict.
                self.stats.probed += 1;
                self.drop_stream(stream, None);
                self.info_event(Event::Probed { stream, info });
            }
            Purpose::Inbound => {
                self.register(stream, info, inbound, now);
            }
            Purpose::HandshakeOp(_) | Purpose::Verdict { .. } => {}
            Purpose::Connect { key } => self.attempt_authenticated(stream, key, info, now),
            Purpose::Detached => self.drop_stream(stream, None),
        }
    }

    /// The handshake failed: close the stream (an inbound RPC ends with the error as its
    /// status), report it, and tell whatever the stream was for.
    pub(super) fn fail_handshake(&mut self, stream: StreamId, err: HandshakeError) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let Phase::Handshaking { purpose, .. } = &s.phase else {
            return;
        };
        let purpose = purpose.clone();
        let remote = s.remote_addr.clone();
        let inbound = s.inbound;
        self.log_handshake_failure(stream, &remote, inbound, &err);
        self.stats.handshake_failed(&err);
        self.handshakes.settled(stream);
        let status = inbound.then(|| err.to_string());
        self.drop_stream(stream, status);
        self.info_event(Event::HandshakeFailed {
            stream,
            remote,
            inbound,
            error: err.clone(),
        });
        match purpose {
            Purpose::Inbound | Purpose::Detached => {}
            Purpose::Connect { key } => self.attempt_failed(&key, err),
            Purpose::HandshakeOp(op) | Purpose::Verdict { op, .. } => {
                self.finish_handshake_op(op, Err(err));
            }
        }
    }

    /// The "handshake failed" line, at most 20 a second (hostile input can fail handshakes
    /// as fast as it opens streams). A warning for what the operator must mend: an identity
    /// refused (a live check, 2026-12-07: a forgotten --trust refused a Fabric peer five
    /// times in 20 s, all at info), or a dialled endpoint answered by another peer than the
    /// one expected there, which Fabric's `createConnection` warns of ("Remote endpoint
    /// claims to be a different peer"). `info` otherwise: a dial that failed, a stream that
    /// ended, a member gone.
    pub(super) fn log_handshake_failure(
        &mut self,
        stream: StreamId,
        remote: &str,
        inbound: bool,
        err: &HandshakeError,
    ) {
        let Some(not_logged) = self.handshakes.log.admit(self.now) else {
            return;
        };
        // tracing takes a level only as a constant.
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "fabric_gossip_core::handshake",
                    stream = %stream,
                    remote = %remote,
                    inbound,
                    kind = %err.kind(),
                    error = %err,
                    not_logged,
                    "handshake failed"
                )
            };
        }
        let warn = err.kind().is_identity_refusal()
            || matches!(err, HandshakeError::UnexpectedPeer { .. });
        if warn {
            line!(warn);
        } else {
            line!(info);
        }
    }

    /// A handshaking stream ended. For a `handshake()` that authenticated the remote, this
    /// is the remote's verdict on us: OK completes it, an error status is a refusal. For
    /// any other, the handshake failed.
    pub(super) fn handshake_stream_ended(&mut self, stream: StreamId, end: StreamEnd) {
        let verdict = match self.streams.get(stream).map(|s| &s.phase) {
            Some(Phase::Handshaking {
                purpose: Purpose::Verdict { op, info },
                ..
            }) => Some((*op, info.clone())),
            _ => None,
        };
        match (verdict, end) {
            (Some((op, info)), StreamEnd::Finished) => {
                tracing::debug!(
                    target: "fabric_gossip_core::handshake",
                    stream = %stream,
                    pki_id = %info.id,
                    "the remote accepted our handshake"
                );
                self.stats.handshakes_ok += 1;
                if let Some(Phase::Handshaking { purpose, .. }) =
                    self.streams.get_mut(stream).map(|s| &mut s.phase)
                {
                    *purpose = Purpose::Detached;
                }
                self.drop_stream(stream, None);
                self.finish_handshake_op(op, Ok(info));
            }
            (Some(_), StreamEnd::Error(status)) => {
                self.fail_handshake(stream, HandshakeError::RefusedByRemote { status });
            }
            (None, end) => {
                let why = match end {
                    StreamEnd::Finished => "closed by remote".to_owned(),
                    StreamEnd::Error(e) => e,
                };
                self.fail_handshake(stream, HandshakeError::StreamEnded(why));
            }
        }
    }

    /// Removes a stream that holds no connection state (handshaking, or just authenticated
    /// and not registered): close it and its channel.
    pub(super) fn drop_stream(&mut self, stream: StreamId, error: Option<String>) {
        let Some(s) = self.streams.remove(stream) else {
            return;
        };
        self.out.action(Action::CloseStream { stream, error });
        if let Some(dial) = s.dial
            && self.dials.remove(dial).is_some()
        {
            self.out.action(Action::CloseDial { dial });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_its_own_conn_establish_slot() {
        let slots: Vec<_> = [(false, false), (false, true), (true, false), (true, true)]
            .into_iter()
            .map(|(i, p)| Handshakes::slot(i, p))
            .collect();
        assert_eq!(slots, vec![0, 1, 2, 3]);
    }

    #[test]
    fn the_oldest_pending_inbound_stream_is_evicted_first() {
        let mut h = Handshakes::default();
        let s = |i| StreamId::from_parts(i, 0);
        for i in 0..3 {
            h.pending(s(i), &format!("10.0.0.{i}:1"));
        }
        assert_eq!(h.evict(4), None);
        h.settled(s(0));
        assert_eq!(h.evict(2), Some(s(1)));
        assert_eq!(h.evict(2), None);
    }

    /// A connection holding several pending handshakes loses its oldest before another
    /// connection's single one goes, however old.
    #[test]
    fn a_connection_with_many_pending_handshakes_is_refused_first() {
        let mut h = Handshakes::default();
        let s = |i| StreamId::from_parts(i, 0);
        h.pending(s(0), "10.0.0.1:1");
        for i in 1..4 {
            h.pending(s(i), "10.0.0.9:9");
        }
        h.pending(s(4), "10.0.0.2:1");
        assert_eq!(h.evict(5), Some(s(1)));
        assert_eq!(h.evict(4), Some(s(2)));
        // One left each: the oldest goes.
        h.settled(s(4));
        assert_eq!(h.evict(2), Some(s(0)));
        assert_eq!(h.pending_per_addr.len(), 1);
        assert_eq!(h.evict(1), Some(s(3)));
        assert!(h.pending_per_addr.is_empty());
    }
}
