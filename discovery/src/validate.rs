//! Validation of every alive message, whatever path it came by (Fabric's
//! `ValidateAliveMsg` and `SignedGossipMessage.Verify`): shape first, then the identity
//! that must have signed it, then the signatures.

use crate::alive::{Timestamp, internal_endpoint_of};
use crate::error::AliveError;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{Instant, PkiId, Security, verify_envelope};
use prost::Message;

/// An alive message whose shape is right (no cryptography checked yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedAlive {
    /// The member it describes.
    pub pki_id: PkiId,
    /// Its timestamp.
    pub ts: Timestamp,
    /// `Member.endpoint`: the external endpoint (may be empty).
    pub endpoint: String,
    /// `Member.metadata`.
    pub metadata: Bytes,
    /// The internal endpoint from the secret envelope, `""` if none.
    pub internal_endpoint: String,
    /// The identity field (field 4), empty when absent.
    pub identity: Bytes,
    /// The outer tag.
    pub tag: i32,
}

/// Decodes an envelope as an alive message and checks that every field Fabric reads is
/// present (quirk Q2: Fabric itself would crash on a missing `membership` or `timestamp`).
pub fn parse_alive(env: &Envelope) -> Result<ParsedAlive, AliveError> {
    if env.payload.is_empty() || env.signature.is_empty() {
        return Err(AliveError::Unsigned);
    }
    let msg = GossipMessage::decode(env.payload.clone())
        .map_err(|e| AliveError::Undecodable(e.to_string()))?;
    let Some(gossip_message::Content::AliveMsg(alive)) = msg.content else {
        return Err(AliveError::NotAlive);
    };
    let member = alive
        .membership
        .ok_or(AliveError::MissingField("membership"))?;
    if member.pki_id.is_empty() {
        return Err(AliveError::MissingField("membership.pki_id"));
    }
    let ts = alive
        .timestamp
        .as_ref()
        .ok_or(AliveError::MissingField("timestamp"))?;
    Ok(ParsedAlive {
        pki_id: PkiId(member.pki_id),
        ts: Timestamp::from(ts),
        endpoint: member.endpoint,
        metadata: member.metadata,
        internal_endpoint: internal_endpoint_of(env),
        identity: alive.identity,
        tag: msg.tag,
    })
}

/// An identity accepted for a PKI-ID, with what the provider says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The serialized identity that signed the message.
    pub identity: Bytes,
    /// When it expires, if ever.
    pub expires: Option<Instant>,
}

/// Checks an embedded identity as Fabric's identity store `Put` does: expiration
/// readable, identity valid, its PKI-ID the claimed one, not already expired.
pub fn check_identity(
    security: &dyn Security,
    pki_id: &PkiId,
    identity: &Bytes,
    now: Instant,
) -> Result<VerifiedIdentity, AliveError> {
    let expires = security
        .expiration(identity)
        .map_err(AliveError::BadIdentity)?;
    security
        .validate_identity(identity, now)
        .map_err(AliveError::BadIdentity)?;
    if security.pki_id_of(identity) != *pki_id {
        return Err(AliveError::IdentityMismatch);
    }
    if expires.is_some_and(|e| e <= now) {
        return Err(AliveError::IdentityExpired);
    }
    Ok(VerifiedIdentity {
        identity: identity.clone(),
        expires,
    })
}

/// Fabric's `ValidateAliveMsg`: the signer is the embedded identity if there is one
/// (checked first), else the identity already `known` for the PKI-ID; the outer
/// signature and the secret envelope's must verify with it.
pub fn verify_alive(
    security: &dyn Security,
    parsed: &ParsedAlive,
    env: &Envelope,
    known: Option<&Bytes>,
    now: Instant,
) -> Result<VerifiedIdentity, AliveError> {
    let id = if !parsed.identity.is_empty() {
        match known {
            // Fabric's store keeps the identity it has; the embedded one must still match.
            Some(k) if *k == parsed.identity => VerifiedIdentity {
                identity: k.clone(),
                expires: security.expiration(k).ok().flatten(),
            },
            _ => check_identity(security, &parsed.pki_id, &parsed.identity, now)?,
        }
    } else {
        let k = known.ok_or(AliveError::UnknownIdentity)?;
        VerifiedIdentity {
            identity: k.clone(),
            expires: security.expiration(k).ok().flatten(),
        }
    };
    verify_envelope(security, &id.identity, env).map_err(AliveError::BadSignature)?;
    Ok(id)
}

/// Parses and verifies in one step: what a tool checking a captured envelope needs.
pub fn validate_alive_envelope(
    security: &dyn Security,
    env: &Envelope,
    known: Option<&Bytes>,
    now: Instant,
) -> Result<(ParsedAlive, VerifiedIdentity), AliveError> {
    let parsed = parse_alive(env)?;
    let id = verify_alive(security, &parsed, env, known, now)?;
    Ok((parsed, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alive::SelfAlive;
    use core::time::Duration;
    use fabric_gossip_core::TestOnlyHmacSecurity;
    use fabric_gossip_core::proto::gossip::{AliveMessage, Member, PeerTime};

    const NOW: Instant = Instant::from_unix_secs(1000);

    fn signed_by(name: &str, publish: bool) -> Envelope {
        let sec = TestOnlyHmacSecurity::new(name);
        let mut s = SelfAlive::new(
            PkiId::new(Bytes::copy_from_slice(name.as_bytes())),
            7,
            String::new(),
            "int:1".into(),
            Bytes::new(),
            NOW,
            if publish {
                Duration::from_secs(10)
            } else {
                Duration::ZERO
            },
        );
        s.sign_next(NOW, &sec).unwrap()
    }

    fn sign(msg: GossipMessage) -> Envelope {
        crate::alive::envelope_of(
            &fabric_gossip_core::SignedMessage::sign(msg, &TestOnlyHmacSecurity::new("x")).unwrap(),
        )
    }

    #[test]
    fn valid_with_embedded_identity() {
        let sec = TestOnlyHmacSecurity::new("verifier");
        let (p, id) = validate_alive_envelope(&sec, &signed_by("a", true), None, NOW).unwrap();
        assert_eq!(p.pki_id, PkiId::new(&b"a"[..]));
        assert_eq!(p.ts, Timestamp { inc: 7, seq: 1 });
        assert_eq!(p.internal_endpoint, "int:1");
        assert_eq!(&id.identity[..], b"a");
    }

    #[test]
    fn without_identity_needs_a_known_one() {
        let sec = TestOnlyHmacSecurity::new("verifier");
        let env = signed_by("a", false);
        assert_eq!(
            validate_alive_envelope(&sec, &env, None, NOW).unwrap_err(),
            AliveError::UnknownIdentity
        );
        let known = Bytes::from_static(b"a");
        assert!(validate_alive_envelope(&sec, &env, Some(&known), NOW).is_ok());
    }

    #[test]
    fn forged_signature_is_refused() {
        let sec = TestOnlyHmacSecurity::new("verifier");
        let mut env = signed_by("a", true);
        let mut sig = env.signature.to_vec();
        sig[0] ^= 1;
        env.signature = sig.into();
        assert!(matches!(
            validate_alive_envelope(&sec, &env, None, NOW),
            Err(AliveError::BadSignature(_))
        ));
    }

    #[test]
    fn bad_secret_signature_rejects_the_whole_message() {
        let sec = TestOnlyHmacSecurity::new("verifier");
        let mut env = signed_by("a", true);
        env.secret_envelope.as_mut().unwrap().signature = Bytes::from_static(b"nope");
        assert!(matches!(
            validate_alive_envelope(&sec, &env, None, NOW),
            Err(AliveError::BadSignature(_))
        ));
        let mut env = signed_by("a", true);
        env.secret_envelope.as_mut().unwrap().signature = Bytes::new();
        assert!(validate_alive_envelope(&sec, &env, None, NOW).is_err());
    }

    #[test]
    fn identity_not_matching_pki_id_is_refused() {
        let msg = GossipMessage {
            tag: gossip_message::Tag::Empty as i32,
            content: Some(gossip_message::Content::AliveMsg(AliveMessage {
                membership: Some(Member {
                    endpoint: String::new(),
                    metadata: Bytes::new(),
                    pki_id: Bytes::from_static(b"claimed"),
                }),
                timestamp: Some(PeerTime {
                    inc_num: 1,
                    seq_num: 1,
                }),
                identity: Bytes::from_static(b"other"),
            })),
            ..Default::default()
        };
        let sec = TestOnlyHmacSecurity::new("verifier");
        assert_eq!(
            validate_alive_envelope(&sec, &sign(msg), None, NOW).unwrap_err(),
            AliveError::IdentityMismatch
        );
    }

    #[test]
    fn refused_or_expired_embedded_identity() {
        let env = signed_by("a", true);
        let sec = TestOnlyHmacSecurity::new("v").rejecting(&b"a"[..]);
        assert!(matches!(
            validate_alive_envelope(&sec, &env, None, NOW),
            Err(AliveError::BadIdentity(_))
        ));
        let sec = TestOnlyHmacSecurity::new("v").expiring(&b"a"[..], NOW);
        assert_eq!(
            validate_alive_envelope(&sec, &env, None, NOW).unwrap_err(),
            AliveError::IdentityExpired
        );
    }

    #[test]
    fn missing_fields_are_refused_not_crashed_on() {
        let base = AliveMessage {
            membership: Some(Member {
                endpoint: String::new(),
                metadata: Bytes::new(),
                pki_id: Bytes::from_static(b"x"),
            }),
            timestamp: Some(PeerTime {
                inc_num: 1,
                seq_num: 1,
            }),
            identity: Bytes::new(),
        };
        let wrap = |a: AliveMessage| GossipMessage {
            content: Some(gossip_message::Content::AliveMsg(a)),
            ..Default::default()
        };
        let mut a = base.clone();
        a.membership = None;
        assert_eq!(
            parse_alive(&sign(wrap(a))),
            Err(AliveError::MissingField("membership"))
        );
        let mut a = base.clone();
        a.timestamp = None;
        assert_eq!(
            parse_alive(&sign(wrap(a))),
            Err(AliveError::MissingField("timestamp"))
        );
        let mut a = base;
        a.membership.as_mut().unwrap().pki_id = Bytes::new();
        assert_eq!(
            parse_alive(&sign(wrap(a))),
            Err(AliveError::MissingField("membership.pki_id"))
        );
        assert_eq!(
            parse_alive(&sign(GossipMessage {
                nonce: 5,
                ..Default::default()
            })),
            Err(AliveError::NotAlive)
        );
        assert_eq!(parse_alive(&Envelope::default()), Err(AliveError::Unsigned));
        let junk = Envelope {
            payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
            signature: Bytes::from_static(b"s"),
            secret_envelope: None,
        };
        assert!(matches!(
            parse_alive(&junk),
            Err(AliveError::Undecodable(_))
        ));
    }
}
