//! Validation of every alive message, whatever path it came by (Fabric's
//! `ValidateAliveMsg` and `SignedGossipMessage.Verify`): shape first, then the identity
//! that must have signed it, then the signatures.

use crate::alive::{Timestamp, internal_endpoint_of};
use crate::error::AliveError;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{Instant, PkiId, Security, check_identity_claim, verify_envelope};
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

impl ParsedAlive {
    /// Where the member's own message says to reach it (Fabric's `PreferredEndpoint`): the
    /// internal endpoint its secret names, if any, else its external endpoint, both signed by
    /// the member.
    pub fn preferred_endpoint(&self) -> &str {
        crate::event::preferred(&self.endpoint, &self.internal_endpoint)
    }
}

/// Decodes an envelope as an alive message and checks that every field Fabric reads is
/// present (quirk Q2: Fabric itself would crash on a missing `membership` or `timestamp`).
pub fn parse_alive(env: &Envelope) -> Result<ParsedAlive, AliveError> {
    check_signed(env)?;
    parse_decoded(env, decode_payload(env)?)
}

/// Room in an alive envelope beyond its identity and metadata: the endpoints, PKI-ID and
/// timestamp, two signatures and the framing, with plenty to spare (a stock peer's alive
/// message without its identity is about 300 bytes).
pub const ALIVE_OVERHEAD: usize = 4096;

/// The longest endpoint, external or internal, an alive message may name: a `host:port`
/// takes at most about 260 bytes (a DNS name is at most 253). Beyond Fabric, which bounds
/// none: one member's alive messages with 30 KB endpoints of control characters made every
/// other member print and log 38 times what it sent (each message a `member_alive`, a
/// failed dial and a `member_dead` line, the endpoint escaped six times over in each).
pub const MAX_ENDPOINT: usize = 1024;

/// How large an alive message may be: what any member needs, so that one member cannot
/// make every node hold, forward and answer with megabytes (Fabric bounds neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliveLimits {
    /// The whole envelope, encoded: the largest identity comm accepts
    /// (`Config::max_identity_size`), the metadata bound and [`ALIVE_OVERHEAD`].
    pub envelope: usize,
    /// `Member.metadata` ([`crate::DiscoveryConfig::max_metadata_size`]).
    pub metadata: usize,
}

impl AliveLimits {
    /// The limits for an identity bound and a metadata bound.
    pub fn new(max_identity_size: usize, max_metadata_size: usize) -> Self {
        AliveLimits {
            envelope: max_identity_size
                .saturating_add(max_metadata_size)
                .saturating_add(ALIVE_OVERHEAD),
            metadata: max_metadata_size,
        }
    }

    /// Refuses an envelope over the bound before anything of it is decoded.
    pub fn check_envelope(&self, env: &Envelope) -> Result<(), AliveError> {
        self.check_size("alive envelope", env.encoded_len())
    }

    /// Refuses an alive message whose bytes *as received* are over the bound: what a
    /// node forwards to members of its organization is those bytes, which may hold what
    /// the decoded envelope lost (unknown fields, earlier copies of a field given twice),
    /// so a member padding its own signed message with 100 MiB no decoder keeps had every
    /// node of the organization carry it on. They are never fewer than the decoded
    /// envelope's encoding, so this check covers [`AliveLimits::check_envelope`] too.
    pub fn check_received(&self, received: usize) -> Result<(), AliveError> {
        self.check_size("alive envelope as received", received)
    }

    fn check_size(&self, what: &'static str, size: usize) -> Result<(), AliveError> {
        if size > self.envelope {
            return Err(AliveError::TooLarge {
                what,
                size,
                max: self.envelope,
            });
        }
        Ok(())
    }

    /// Refuses a parsed alive message whose metadata or either endpoint is over its bound.
    pub fn check_parsed(&self, p: ParsedAlive) -> Result<ParsedAlive, AliveError> {
        if p.metadata.len() > self.metadata {
            return Err(AliveError::TooLarge {
                what: "metadata",
                size: p.metadata.len(),
                max: self.metadata,
            });
        }
        for (what, endpoint) in [
            ("endpoint", &p.endpoint),
            ("internal endpoint", &p.internal_endpoint),
        ] {
            if endpoint.len() > MAX_ENDPOINT {
                return Err(AliveError::TooLarge {
                    what,
                    size: endpoint.len(),
                    max: MAX_ENDPOINT,
                });
            }
        }
        Ok(p)
    }
}

/// An envelope without payload or signature is refused before anything is decoded.
pub(crate) fn check_signed(env: &Envelope) -> Result<(), AliveError> {
    if env.payload.is_empty() || env.signature.is_empty() {
        return Err(AliveError::Unsigned);
    }
    Ok(())
}

/// The envelope's payload as a gossip message.
pub(crate) fn decode_payload(env: &Envelope) -> Result<GossipMessage, AliveError> {
    GossipMessage::decode(env.payload.clone()).map_err(|e| AliveError::Undecodable(e.to_string()))
}

/// The member and timestamp of an alive message, if it has both: all the message store
/// needs to drop a duplicate before anything else is decoded or checked (Fabric's
/// `CheckValid` comes first too).
pub(crate) fn alive_key(msg: &GossipMessage) -> Option<(PkiId, Timestamp)> {
    let Some(gossip_message::Content::AliveMsg(alive)) = &msg.content else {
        return None;
    };
    let member = alive.membership.as_ref()?;
    let ts = alive.timestamp.as_ref()?;
    Some((PkiId(member.pki_id.clone()), Timestamp::from(ts)))
}

/// The member and timestamp of an *encoded* alive message, read in place: what the
/// message store needs to drop a duplicate from a membership response without decoding
/// it. `None` whenever the payload is anything but a plain alive message (a field
/// repeated, an unknown field, a wire type out of place): then the full decode decides,
/// so a `Some` is always what [`parse_alive`] would find.
pub(crate) fn peek_alive_key(payload: &Bytes) -> Option<(PkiId, Timestamp)> {
    let mut alive = None;
    each_field(payload, |field| match field {
        // nonce, channel, tag
        (1 | 3, Field::Varint(_)) | (2, Field::Bytes(_)) => Some(()),
        (5, Field::Bytes(a)) => set_once(&mut alive, a),
        _ => None,
    })?;
    let (mut member, mut ts) = (None, None);
    each_field(alive?, |field| match field {
        (1, Field::Bytes(m)) => set_once(&mut member, m),
        (2, Field::Bytes(t)) => set_once(&mut ts, t),
        (4, Field::Bytes(_)) => Some(()),
        _ => None,
    })?;
    let mut pki_id = None;
    each_field(member?, |field| match field {
        // the endpoint is a string: the full decode refuses one that is not UTF-8
        (1, Field::Bytes(e)) => core::str::from_utf8(e).ok().map(drop),
        (2, Field::Bytes(_)) => Some(()),
        (3, Field::Bytes(p)) => set_once(&mut pki_id, p),
        _ => None,
    })?;
    let (mut inc, mut seq) = (None, None);
    each_field(ts?, |field| match field {
        (1, Field::Varint(v)) => set_once(&mut inc, v),
        (2, Field::Varint(v)) => set_once(&mut seq, v),
        _ => None,
    })?;
    let pki_id = pki_id.filter(|p| !p.is_empty())?;
    Some((
        PkiId(payload.slice_ref(pki_id)),
        Timestamp {
            inc: inc.unwrap_or(0),
            seq: seq.unwrap_or(0),
        },
    ))
}

/// Calls `visit` on every field of `buf`; `None` as soon as a field does not read or
/// `visit` refuses it.
fn each_field<'a>(
    mut buf: &'a [u8],
    mut visit: impl FnMut((u32, Field<'a>)) -> Option<()>,
) -> Option<()> {
    while !buf.is_empty() {
        visit(read_field(&mut buf)?)?;
    }
    Some(())
}

/// Fills `slot` with a field's value; `None` if the field came before (protobuf would
/// merge the two, which the peek leaves to the full decode).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// One protobuf field's value, as far as [`peek_alive_key`] reads it.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Reads one field (number and value) off `buf`; `None` for wire types an alive message
/// does not use, or a truncated field.
fn read_field<'a>(buf: &mut &'a [u8]) -> Option<(u32, Field<'a>)> {
    let (number, wire_type) = prost::encoding::decode_key(buf).ok()?;
    match wire_type {
        prost::encoding::WireType::Varint => {
            let v = prost::encoding::decode_varint(buf).ok()?;
            Some((number, Field::Varint(v)))
        }
        prost::encoding::WireType::LengthDelimited => {
            let len = usize::try_from(prost::encoding::decode_varint(buf).ok()?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (value, rest) = buf.split_at(len);
            *buf = rest;
            Some((number, Field::Bytes(value)))
        }
        _ => None,
    }
}

/// [`parse_alive`] of an envelope whose payload is already decoded as `msg`.
pub(crate) fn parse_decoded(env: &Envelope, msg: GossipMessage) -> Result<ParsedAlive, AliveError> {
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
    let expires = check_identity_claim(security, pki_id, identity, now)?;
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
    // A known identity is one a store holds until its expiry; one read at its expiry, before
    // the store's timer purged it, is as expired as the store would have it a moment later.
    let known_id = |k: &Bytes| {
        let expires = security.expiration(k).ok().flatten();
        if expires.is_some_and(|e| e <= now) {
            return Err(AliveError::IdentityExpired);
        }
        Ok(VerifiedIdentity {
            identity: k.clone(),
            expires,
        })
    };
    let id = if !parsed.identity.is_empty() {
        match known {
            // Fabric's store keeps the identity it has; the embedded one must still match.
            Some(k) if *k == parsed.identity => known_id(k)?,
            _ => check_identity(security, &parsed.pki_id, &parsed.identity, now)?,
        }
    } else {
        known_id(known.ok_or(AliveError::UnknownIdentity)?)?
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
    use crate::alive::{SelfAlive, Timestamp, alive_message};
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
        let msg = alive_message(
            String::new(),
            Bytes::from_static(b"claimed"),
            Bytes::new(),
            Timestamp { inc: 1, seq: 1 },
            Bytes::from_static(b"other"),
        );
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
    fn peeked_key_is_what_the_full_decode_finds_or_nothing() {
        let env = signed_by("a", true);
        let parsed = parse_alive(&env).unwrap();
        let decoded = decode_payload(&env).unwrap();
        assert_eq!(
            peek_alive_key(&env.payload),
            Some((parsed.pki_id.clone(), parsed.ts))
        );
        assert_eq!(alive_key(&decoded), Some((parsed.pki_id, parsed.ts)));
        // Anything unusual is left to the full decode.
        let mut twice = env.payload.to_vec();
        twice.extend_from_slice(&env.payload);
        assert_eq!(
            peek_alive_key(&Bytes::from(twice)),
            None,
            "a repeated field"
        );
        let mut unknown = env.payload.to_vec();
        unknown.extend_from_slice(&[0x38, 0x01]); // field 7, varint
        assert_eq!(peek_alive_key(&Bytes::from(unknown)), None, "another field");
        let cut = env.payload.slice(..env.payload.len() - 1);
        assert_eq!(peek_alive_key(&cut), None, "truncated");
        assert_eq!(peek_alive_key(&Bytes::new()), None, "empty");
        let request = GossipMessage {
            content: Some(gossip_message::Content::MemReq(Default::default())),
            ..Default::default()
        };
        assert_eq!(
            peek_alive_key(&request.encode_to_vec().into()),
            None,
            "not alive"
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

    /// The limit is the largest alive envelope taken, not the first refused.
    #[test]
    fn an_alive_envelope_of_exactly_the_limit_is_taken() {
        let limits = AliveLimits::new(
            fabric_gossip_core::Config::default().max_identity_size,
            crate::DiscoveryConfig::new("me.int:7051").max_metadata_size,
        );
        assert_eq!(limits.check_received(limits.envelope), Ok(()));
        assert_eq!(
            limits.check_received(limits.envelope + 1),
            Err(AliveError::TooLarge {
                what: "alive envelope as received",
                size: limits.envelope + 1,
                max: limits.envelope
            })
        );
    }

    /// An envelope lacking either its payload or its signature is refused as unsigned
    /// before anything is decoded: one of the two is not enough.
    #[test]
    fn an_envelope_lacking_its_payload_or_its_signature_is_unsigned() {
        let env = signed_by("a", true);
        let unsigned = Envelope {
            signature: Bytes::new(),
            ..env.clone()
        };
        assert_eq!(parse_alive(&unsigned), Err(AliveError::Unsigned));
        let empty = Envelope {
            payload: Bytes::new(),
            ..env
        };
        assert_eq!(parse_alive(&empty), Err(AliveError::Unsigned));
    }

    /// The peek reads an alive message as members send it, with an endpoint and metadata
    /// (the messages of the other tests have neither, and protobuf leaves empty fields
    /// out): were it to give up on them, every duplicate alive message in a membership
    /// response would be decoded in full after all.
    #[test]
    fn the_peek_reads_an_alive_message_with_an_endpoint_and_metadata() {
        let msg = alive_message(
            "peer0.org1:7051".into(),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"metadata"),
            Timestamp { inc: 7, seq: 3 },
            Bytes::new(),
        );
        let env = sign(msg);
        let parsed = parse_alive(&env).unwrap();
        assert!(!parsed.endpoint.is_empty() && !parsed.metadata.is_empty());
        assert_eq!(
            peek_alive_key(&env.payload),
            Some((parsed.pki_id, parsed.ts))
        );
    }
}
