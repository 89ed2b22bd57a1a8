//! Our own alive message (Fabric's `aliveMsgAndInternalEndpoint` and the signing adapter
//! of `gossip_impl.go`), and the envelope helpers every path shares.

use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{
    AliveMessage, Envelope, GossipMessage, Member, PeerTime, Secret, gossip_message, secret,
};
use fabric_gossip_core::{Error, Instant, PkiId, Security, SignedMessage};
use prost::Message;

/// A member's logical clock: incarnation (start time in ns), then sequence. Ordered
/// lexicographically, as Fabric compares them (`compareTimestamps`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Incarnation: Unix nanoseconds when the member started.
    pub inc: u64,
    /// Sequence: incremented before every alive message the member makes.
    pub seq: u64,
}

impl From<&PeerTime> for Timestamp {
    fn from(t: &PeerTime) -> Self {
        Timestamp {
            inc: t.inc_num,
            seq: t.seq_num,
        }
    }
}

/// An alive message as Fabric's `createSignedAliveMessage` makes it (tag EMPTY, nonce 0, no
/// channel): member `endpoint`/`pki_id`/`metadata` at `ts`, with `identity` (empty once
/// the member stops publishing it). One constructor for our own messages and for tests and
/// benchmarks that forge other members', so all of them are the message a peer sends.
pub fn alive_message(
    endpoint: String,
    pki_id: Bytes,
    metadata: Bytes,
    ts: Timestamp,
    identity: Bytes,
) -> GossipMessage {
    GossipMessage {
        nonce: 0,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::AliveMsg(AliveMessage {
            membership: Some(Member {
                endpoint,
                metadata,
                pki_id,
            }),
            timestamp: Some(PeerTime {
                inc_num: ts.inc,
                seq_num: ts.seq,
            }),
            identity,
        })),
    }
}

/// Encodes `Secret{internalEndpoint}`: the payload of a `SecretEnvelope`.
pub fn encode_secret(internal_endpoint: &str) -> Bytes {
    Secret {
        content: Some(secret::Content::InternalEndpoint(
            internal_endpoint.to_owned(),
        )),
    }
    .encode_to_vec()
    .into()
}

/// The internal endpoint an envelope's secret carries; `""` when there is none or it does
/// not decode (Fabric's `InternalEndpoint` never fails).
pub fn internal_endpoint_of(env: &Envelope) -> String {
    env.secret_envelope
        .as_ref()
        .and_then(|s| Secret::decode(s.payload.clone()).ok())
        .and_then(|s| s.content)
        .map(|secret::Content::InternalEndpoint(e)| e)
        .unwrap_or_default()
}

/// The same envelope without its secret: the signed payload is untouched, so the outer
/// signature still verifies. What goes to another organization.
pub fn strip_secret(env: &Envelope) -> Envelope {
    Envelope {
        payload: env.payload.clone(),
        signature: env.signature.clone(),
        secret_envelope: None,
    }
}

/// Wraps an envelope for sending, byte for byte (payload and signatures are not touched).
pub(crate) fn to_signed(env: &Envelope) -> Option<SignedMessage> {
    SignedMessage::from_envelope_bytes(env.encode_to_vec().into()).ok()
}

/// Decodes the Envelope of a message we signed ourselves.
pub(crate) fn envelope_of(msg: &SignedMessage) -> Envelope {
    Envelope::decode(msg.envelope_bytes().clone()).unwrap_or_default()
}

/// Our side of membership: the incarnation, the sequence and the last heartbeat.
#[derive(Debug)]
pub(crate) struct SelfAlive {
    pub(crate) pki_id: PkiId,
    pub(crate) inc: u64,
    pub(crate) seq: u64,
    pub(crate) endpoint: String,
    pub(crate) internal_endpoint: String,
    pub(crate) metadata: Bytes,
    /// Until when alive messages carry our identity (`publishCertPeriod` after start).
    pub(crate) publish_identity_until: Instant,
    /// The last heartbeat (Fabric's `selfAliveMessage`), what responses disclose.
    pub(crate) last: Option<Envelope>,
}

impl SelfAlive {
    pub(crate) fn new(
        pki_id: PkiId,
        inc: u64,
        endpoint: String,
        internal_endpoint: String,
        metadata: Bytes,
        start: Instant,
        publish_cert_period: Duration,
    ) -> Self {
        SelfAlive {
            pki_id,
            inc,
            seq: 0,
            endpoint,
            internal_endpoint,
            metadata,
            publish_identity_until: start + publish_cert_period,
            last: None,
        }
    }

    /// The GossipMessage of a new alive message: sequence incremented first (so the first
    /// is 1), tag EMPTY, nonce 0, identity only during the publish period.
    pub(crate) fn next_message(&mut self, now: Instant, identity: &Bytes) -> GossipMessage {
        self.seq += 1;
        let identity = if now < self.publish_identity_until {
            identity.clone()
        } else {
            Bytes::new()
        };
        let ts = Timestamp {
            inc: self.inc,
            seq: self.seq,
        };
        alive_message(
            self.endpoint.clone(),
            self.pki_id.0.clone(),
            self.metadata.clone(),
            ts,
            identity,
        )
    }

    /// A new signed alive message with the secret envelope carrying our internal endpoint.
    pub(crate) fn sign_next(
        &mut self,
        now: Instant,
        security: &dyn Security,
    ) -> Result<Envelope, Error> {
        let msg = self.next_message(now, &security.own_identity());
        let signed = if self.internal_endpoint.is_empty() {
            SignedMessage::sign(msg, security)?
        } else {
            SignedMessage::sign_with_secret(msg, encode_secret(&self.internal_endpoint), security)?
        };
        Ok(envelope_of(&signed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_core::{TestOnlyHmacSecurity, verify_envelope};

    fn me() -> SelfAlive {
        SelfAlive::new(
            PkiId::new(&b"me"[..]),
            42,
            "pub:1".into(),
            "int:1".into(),
            Bytes::new(),
            Instant::from_unix_secs(100),
            Duration::from_secs(10),
        )
    }

    fn alive(env: &Envelope) -> AliveMessage {
        match GossipMessage::decode(env.payload.clone()).unwrap().content {
            Some(gossip_message::Content::AliveMsg(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn timestamps_order_incarnation_first() {
        let t = |inc, seq| Timestamp { inc, seq };
        assert!(t(1, 9) < t(2, 0));
        assert!(t(2, 1) < t(2, 2));
        assert_eq!(t(3, 3), t(3, 3));
    }

    #[test]
    fn sequence_increments_before_every_message_and_starts_at_one() {
        let sec = TestOnlyHmacSecurity::new("me");
        let mut s = me();
        let now = Instant::from_unix_secs(100);
        let seqs: Vec<u64> = (0..3)
            .map(|_| {
                alive(&s.sign_next(now, &sec).unwrap())
                    .timestamp
                    .unwrap()
                    .seq_num
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn own_alive_is_signed_with_a_signed_secret_and_tag_empty() {
        let sec = TestOnlyHmacSecurity::new("me");
        let mut s = me();
        let env = s.sign_next(Instant::from_unix_secs(100), &sec).unwrap();
        verify_envelope(&sec, b"me", &env).unwrap();
        assert_eq!(internal_endpoint_of(&env), "int:1");
        let msg = GossipMessage::decode(env.payload.clone()).unwrap();
        assert_eq!(msg.tag, gossip_message::Tag::Empty as i32);
        assert_eq!(msg.nonce, 0);
        let a = alive(&env);
        assert_eq!(a.membership.unwrap().endpoint, "pub:1");
        assert_eq!(a.timestamp.unwrap().inc_num, 42);
    }

    #[test]
    fn identity_only_during_publish_cert_period() {
        let sec = TestOnlyHmacSecurity::new("me");
        let mut s = me();
        let early = s.sign_next(Instant::from_unix_secs(109), &sec).unwrap();
        let late = s.sign_next(Instant::from_unix_secs(110), &sec).unwrap();
        assert_eq!(&alive(&early).identity[..], b"me");
        assert!(alive(&late).identity.is_empty());
    }

    #[test]
    fn stripping_the_secret_keeps_the_signature_valid() {
        let sec = TestOnlyHmacSecurity::new("me");
        let env = me().sign_next(Instant::from_unix_secs(100), &sec).unwrap();
        let stripped = strip_secret(&env);
        assert!(stripped.secret_envelope.is_none());
        assert_eq!(internal_endpoint_of(&stripped), "");
        verify_envelope(&sec, b"me", &stripped).unwrap();
    }

    #[test]
    fn undecodable_secret_reads_as_no_endpoint() {
        let mut env = me()
            .sign_next(
                Instant::from_unix_secs(100),
                &TestOnlyHmacSecurity::new("me"),
            )
            .unwrap();
        env.secret_envelope.as_mut().unwrap().payload = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(internal_endpoint_of(&env), "");
    }
}
