//! Messages as they travel: signed for sending, and received with their original bytes.

use crate::error::{Error, HandshakeError};
use crate::ids::{PkiId, StreamId};
use crate::security::Security;
use bytes::Bytes;
use fabric_gossip_proto::gossip::{Envelope, GossipMessage, SecretEnvelope};
use prost::Message;
use std::sync::Arc;

/// A GossipMessage together with the exact Envelope bytes that go on the wire
/// (Fabric's `SignedGossipMessage`).
///
/// The Envelope is encoded once, when the message is made, and the same `Bytes` is handed
/// to every connection the message is sent on: sending to N peers costs N reference-count
/// increments, not N encodings.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedMessage {
    message: GossipMessage,
    envelope: Bytes,
}

impl SignedMessage {
    /// Signs `message` with the node's key: payload = its encoding, signature = Sign(payload).
    pub fn sign(message: GossipMessage, security: &dyn Security) -> Result<Self, Error> {
        let payload = Bytes::from(message.encode_to_vec());
        let signature = security.sign(&payload).map_err(Error::Signing)?;
        Ok(Self::from_parts(message, payload, signature, None))
    }

    /// "Noop-signs" `message`: an Envelope with an empty signature, which is what Fabric
    /// puts on the wire for `Send`, `Respond`, acks and `SendWithAck`.
    ///
    /// The message is encoded once, straight into the Envelope (whose only field is then
    /// the payload), not encoded and then copied into it: a membership response carries
    /// every member's alive envelope, hundreds of kilobytes at a thousand members.
    pub fn noop(message: GossipMessage) -> Self {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let len = message.encoded_len();
        if len == 0 {
            // An empty payload is a default field: the Envelope encodes to nothing.
            return Self::from_parts(message, Bytes::new(), Bytes::new(), None);
        }
        let mut buf = Vec::with_capacity(1 + encoded_len_varint(len as u64) + len);
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(len as u64, &mut buf);
        message.encode_raw(&mut buf);
        SignedMessage {
            message,
            envelope: Bytes::from(buf),
        }
    }

    /// Signs `message` and attaches a signed `SecretEnvelope` carrying `secret` (an encoded
    /// `gossip.Secret`), as Fabric's discovery does for alive messages.
    pub fn sign_with_secret(
        message: GossipMessage,
        secret: Bytes,
        security: &dyn Security,
    ) -> Result<Self, Error> {
        let payload = Bytes::from(message.encode_to_vec());
        let signature = security.sign(&payload).map_err(Error::Signing)?;
        let secret_sig = security.sign(&secret).map_err(Error::Signing)?;
        Ok(Self::from_parts(
            message,
            payload,
            signature,
            Some(SecretEnvelope {
                payload: secret,
                signature: secret_sig,
            }),
        ))
    }

    fn from_parts(
        message: GossipMessage,
        payload: Bytes,
        signature: Bytes,
        secret: Option<SecretEnvelope>,
    ) -> Self {
        let env = Envelope {
            payload,
            signature,
            secret_envelope: secret,
        };
        SignedMessage {
            message,
            envelope: Bytes::from(env.encode_to_vec()),
        }
    }

    /// Wraps Envelope bytes received from the wire, keeping them byte for byte so that
    /// forwarding and verification see exactly what the originator signed.
    pub fn from_envelope_bytes(envelope: Bytes) -> Result<Self, prost::DecodeError> {
        let env = Envelope::decode(envelope.clone())?;
        let message = GossipMessage::decode(env.payload)?;
        Ok(SignedMessage { message, envelope })
    }

    /// The message.
    pub fn message(&self) -> &GossipMessage {
        &self.message
    }

    /// The encoded Envelope as it goes on the wire.
    pub fn envelope_bytes(&self) -> &Bytes {
        &self.envelope
    }

    /// The Envelope's bytes, moved out: sending them uncloned keeps the `Bytes` unshared,
    /// which spares it an allocation.
    pub(crate) fn into_envelope(self) -> Bytes {
        self.envelope
    }

    /// The Envelope `SendWithAck` puts on the wire for this message with nonce `nonce`:
    /// noop-signed, its payload this message's own encoding with the nonce field replaced.
    ///
    /// Only the top-level fields are scanned, and the rest of the payload is copied as
    /// bytes rather than encoded again: a message made once and sent with acks many times
    /// (Fabric's `SendWithAck` takes a `SignedGossipMessage`) costs one copy per send, not
    /// an encoding. For a payload prost encoded the result is byte for byte what encoding
    /// the message with that nonce gives; fields this build does not know are kept, as
    /// Fabric's re-marshal keeps them. A payload that does not scan (never one this type
    /// holds) is encoded from the decoded message instead.
    pub(crate) fn noop_envelope_with_nonce(&self, nonce: u64) -> Bytes {
        match splice_nonce(&self.envelope, nonce) {
            Some(envelope) => envelope,
            None => {
                let mut message = self.message.clone();
                message.nonce = nonce;
                SignedMessage::noop(message).into_envelope()
            }
        }
    }
}

/// The field at the start of `buf`: its number, its wire type and its length in bytes (key
/// included); `None` when it is not well formed, or a group (which no message of Fabric's
/// uses, and the decoder then judges).
fn next_field(buf: &[u8]) -> Option<(u32, prost::encoding::WireType, usize)> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut rest = buf;
    let (tag, wire_type) = decode_key(&mut rest).ok()?;
    let body = match wire_type {
        WireType::Varint => {
            decode_varint(&mut rest).ok()?;
            0
        }
        WireType::LengthDelimited => usize::try_from(decode_varint(&mut rest).ok()?).ok()?,
        WireType::SixtyFourBit => 8,
        WireType::ThirtyTwoBit => 4,
        WireType::StartGroup | WireType::EndGroup => return None,
    };
    let len = (buf.len() - rest.len()).checked_add(body)?;
    (len <= buf.len()).then_some((tag, wire_type, len))
}

/// [`SignedMessage::noop_envelope_with_nonce`]'s work: finds the payload in `envelope` (the
/// last field 1, as a decoder takes it; none is an empty one), leaves out its nonce fields
/// and puts the new nonce first, where prost writes it (and nowhere when it is 0, prost's
/// default). A field 1 of the wrong wire type in either, which a decoder refuses, gives
/// `None`.
fn splice_nonce(envelope: &[u8], nonce: u64) -> Option<Bytes> {
    use prost::encoding::{WireType, decode_varint, encode_key, encode_varint, encoded_len_varint};
    // The payload: the last field 1 of the Envelope.
    let (mut rest, mut payload) = (envelope, None);
    while !rest.is_empty() {
        let (tag, wire_type, len) = next_field(rest)?;
        if tag == 1 {
            if wire_type != WireType::LengthDelimited {
                return None;
            }
            payload = Some(&rest[..len]);
        }
        rest = &rest[len..];
    }
    // No payload field: the payload is empty, prost's default.
    let mut payload = payload.unwrap_or_default();
    if !payload.is_empty() {
        prost::encoding::decode_key(&mut payload).ok()?;
        decode_varint(&mut payload).ok()?;
    }
    // What stays: every field but the nonce (field 1, a varint; another wire type fails
    // to decode, and re-encoding the decoded message says so instead).
    let (mut rest, mut kept, mut nonces) = (payload, 0, 0);
    while !rest.is_empty() {
        let (tag, wire_type, len) = next_field(rest)?;
        match (tag, wire_type) {
            (1, WireType::Varint) => nonces += 1,
            (1, _) => return None,
            _ => kept += len,
        }
        rest = &rest[len..];
    }
    let nonce_len = if nonce == 0 {
        0
    } else {
        1 + encoded_len_varint(nonce)
    };
    let payload_len = nonce_len + kept;
    if payload_len == 0 {
        return Some(Bytes::new());
    }
    let mut out = Vec::with_capacity(1 + encoded_len_varint(payload_len as u64) + payload_len);
    const HEAD: usize = 32;
    let mut head = [0u8; HEAD];
    let mut free = &mut head[..];
    encode_key(1, WireType::LengthDelimited, &mut free);
    encode_varint(payload_len as u64, &mut free);
    if nonce != 0 {
        encode_key(1, WireType::Varint, &mut free);
        encode_varint(nonce, &mut free);
    }
    let written = HEAD - free.len();
    out.extend_from_slice(&head[..written]);
    if nonces == 0 {
        out.extend_from_slice(payload);
    } else {
        let mut rest = payload;
        while !rest.is_empty() {
            let (tag, _, len) = next_field(rest)?;
            if tag != 1 {
                out.extend_from_slice(&rest[..len]);
            }
            rest = &rest[len..];
        }
    }
    debug_assert_eq!(out.len(), out.capacity());
    Some(Bytes::from(out))
}

/// What the core knows about the remote end of an authenticated connection
/// (Fabric's `ConnectionInfo`), shared by every message received on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The PKI-ID the remote proved in its handshake (what other types call `pki_id`).
    #[doc(alias = "pki_id")]
    pub id: PkiId,
    /// The remote's serialized identity.
    pub identity: Bytes,
    /// The remote address as the driver reported it.
    pub endpoint: String,
    /// The signed `ConnEstablish` payload.
    pub signed_data: Bytes,
    /// The signature over `signed_data`.
    pub signature: Bytes,
}

/// A message received on an authenticated connection (Fabric's `ReceivedMessage`).
///
/// Answer it with [`crate::Comm::respond`] using `conn`, or, for a SendWithAck, with
/// [`crate::Comm::ack`] using `conn` and the message's own nonce (`message.nonce`, which
/// the sender's SendWithAck matches the Acknowledgement against).
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The decoded message. Its `bytes` fields share the receive buffer.
    pub message: GossipMessage,
    /// The decoded Envelope.
    pub envelope: Envelope,
    /// The Envelope exactly as received; forward and verify these bytes.
    pub envelope_bytes: Bytes,
    /// The connection it arrived on.
    pub conn: StreamId,
    /// Who sent it.
    pub info: Arc<ConnectionInfo>,
}

impl ReceivedMessage {
    /// The decoded message (the `message` field), by the same accessor as the tonic
    /// driver's `Received::message`: an `accept` filter, which sees a `ReceivedMessage`,
    /// and the code that handles what it accepted then read alike.
    pub fn message(&self) -> &GossipMessage {
        &self.message
    }

    /// The sender's PKI-ID.
    pub fn sender(&self) -> &PkiId {
        &self.info.id
    }

    /// Empties the message for [`Comm::recycle_delivery`](crate::Comm::recycle_delivery):
    /// the received buffer its fields refer to (shared with the messages read with it)
    /// is released now rather than when the allocation is next used; the sender's
    /// `ConnectionInfo`, small, stays until then.
    pub fn clear(&mut self) {
        self.message.clear();
        self.envelope.clear();
        self.envelope_bytes = Bytes::new();
    }

    /// Re-wraps the message for forwarding with its original bytes.
    pub fn to_signed(&self) -> SignedMessage {
        SignedMessage {
            message: self.message.clone(),
            envelope: self.envelope_bytes.clone(),
        }
    }
}

/// A copy of `env` whose bytes live in allocations of their own.
///
/// A received Envelope's fields are slices of the buffer it was read into, which a driver
/// may share with every message of the same read (the tonic driver hands out slices of
/// HTTP/2's read buffer, tens of KiB). Keeping one small Envelope for a long time, as a
/// membership table keeps each member's latest alive message, would keep that whole buffer
/// alive; what is kept long should be detached first. The copy is a few hundred bytes,
/// made only when something is kept.
pub fn detached_envelope(env: &Envelope) -> Envelope {
    Envelope {
        payload: Bytes::copy_from_slice(&env.payload),
        signature: Bytes::copy_from_slice(&env.signature),
        secret_envelope: env.secret_envelope.as_ref().map(|s| SecretEnvelope {
            payload: Bytes::copy_from_slice(&s.payload),
            signature: Bytes::copy_from_slice(&s.signature),
        }),
    }
}

/// Verifies an Envelope against `identity` as Fabric does (`gossip/protoext/signing.go`,
/// `SignedGossipMessage.Verify`): payload and
/// signature must be non-empty, the signature must verify over the payload bytes as
/// received, and a secret envelope, if present, must be complete and verify too.
pub fn verify_envelope(
    security: &dyn Security,
    identity: &[u8],
    envelope: &Envelope,
) -> Result<(), HandshakeError> {
    if envelope.payload.is_empty() || envelope.signature.is_empty() {
        return Err(HandshakeError::Unsigned);
    }
    security
        .verify(identity, &envelope.signature, &envelope.payload)
        .map_err(HandshakeError::BadSignature)?;
    if let Some(secret) = &envelope.secret_envelope {
        if secret.payload.is_empty() || secret.signature.is_empty() {
            return Err(HandshakeError::BadSecretEnvelope);
        }
        security
            .verify(identity, &secret.signature, &secret.payload)
            .map_err(|_| HandshakeError::BadSecretEnvelope)?;
    }
    Ok(())
}

/// The `ConnEstablish` a side writes first on every stream (`gossip/comm/comm_impl.go`,
/// `createConnectionMsg`), unsigned: the core signs its own; tests and fuzzers sign theirs.
pub(crate) fn conn_establish_message(
    pki_id: Bytes,
    identity: Bytes,
    tls_cert_hash: Bytes,
    probe: bool,
) -> GossipMessage {
    use fabric_gossip_proto::gossip::{ConnEstablish, gossip_message};
    GossipMessage {
        nonce: 0,
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::Conn(ConnEstablish {
            pki_id,
            identity,
            tls_cert_hash,
            probe,
        })),
        ..Default::default()
    }
}

/// A `DataMessage` carrying `data` as payload number `seq`, tag EMPTY, no channel: what
/// examples, workloads, benchmarks and tests send over comm (in Fabric, the state transfer
/// layer fills these with blocks; comm never looks inside). The same message as
/// [`GossipMessage::data`](fabric_gossip_proto::gossip::GossipMessage::data), here beside
/// [`data_payload`] for code that reaches the wire types through the core.
///
/// A Fabric peer drops such a message and logs two warnings (its gossip layer takes
/// data messages only with tag `CHAN_AND_ORG` on a channel it is in); for one it would
/// read, set `channel` and `set_tag(Tag::ChanAndOrg)`
/// ([`Tag`](fabric_gossip_proto::gossip::gossip_message::Tag)).
pub fn data_message(seq: u64, data: impl Into<Bytes>) -> GossipMessage {
    GossipMessage::data(seq, data)
}

/// The payload number and data of a `DataMessage` (`None` for any other content).
pub fn data_payload(message: &GossipMessage) -> Option<(u64, &Bytes)> {
    use fabric_gossip_proto::gossip::{DataMessage, gossip_message};
    match &message.content {
        Some(gossip_message::Content::DataMsg(DataMessage { payload: Some(p) })) => {
            Some((p.seq_num, &p.data))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_proto::gossip::{Empty, MembershipResponse, gossip_message::Content};

    /// The Envelope prost itself makes for a noop-signed message.
    fn prost_noop(m: &GossipMessage) -> Vec<u8> {
        Envelope {
            payload: Bytes::from(m.encode_to_vec()),
            ..Envelope::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn noop_encodes_the_envelope_as_prost_does() {
        let big = Envelope {
            payload: Bytes::from(vec![7u8; 300]),
            signature: Bytes::from_static(b"sig"),
            secret_envelope: None,
        };
        let messages = [
            GossipMessage::default(),
            GossipMessage {
                nonce: 5,
                content: Some(Content::Empty(Empty {})),
                ..GossipMessage::default()
            },
            GossipMessage {
                nonce: u64::MAX,
                tag: 1,
                channel: Bytes::from_static(b"ch"),
                content: Some(Content::MemRes(MembershipResponse {
                    alive: vec![big; 600],
                    dead: Vec::new(),
                })),
            },
        ];
        for m in messages {
            let signed = SignedMessage::noop(m.clone());
            assert_eq!(signed.envelope_bytes().as_ref(), prost_noop(&m), "{m:?}");
            assert_eq!(signed.message(), &m);
            let back = SignedMessage::from_envelope_bytes(signed.envelope_bytes().clone());
            assert_eq!(back.expect("decodes").message(), &m);
        }
    }

    /// The Envelope `noop` makes for `m` with nonce `nonce`: what a splice must equal.
    fn encoded_with_nonce(m: &GossipMessage, nonce: u64) -> Bytes {
        let mut m = m.clone();
        m.nonce = nonce;
        SignedMessage::noop(m).into_envelope()
    }

    #[test]
    fn a_spliced_nonce_gives_the_bytes_encoding_gives() {
        let data = GossipMessage::data(3, vec![9u8; 1024]);
        let messages = [
            GossipMessage::default(),
            GossipMessage {
                nonce: 77,
                ..data.clone()
            },
            data.clone(),
            GossipMessage {
                nonce: u64::MAX,
                tag: 1,
                channel: Bytes::from_static(b"ch"),
                content: Some(Content::Empty(Empty {})),
            },
            GossipMessage {
                content: Some(Content::MemRes(MembershipResponse {
                    alive: vec![Envelope::default(); 40],
                    dead: Vec::new(),
                })),
                ..GossipMessage::default()
            },
        ];
        let sec = crate::TestOnlyHmacSecurity::new("p");
        for m in &messages {
            let signed = SignedMessage::sign(m.clone(), &sec).expect("signs");
            for made in [SignedMessage::noop(m.clone()), signed] {
                for nonce in [0, 1, 127, 128, 1 << 35, u64::MAX] {
                    let spliced = made.noop_envelope_with_nonce(nonce);
                    assert_eq!(spliced, encoded_with_nonce(m, nonce), "{m:?} {nonce}");
                    assert_eq!(
                        splice_nonce(made.envelope_bytes(), nonce),
                        Some(spliced),
                        "the splice, not the fallback"
                    );
                }
            }
        }
    }

    #[test]
    fn a_splice_keeps_unknown_fields_and_drops_every_nonce() {
        // A payload as another encoder may write it: the nonce twice, after other fields,
        // and a field (number 99) this build does not know.
        let m = GossipMessage::data(5, vec![1u8; 200]);
        let mut payload = Vec::new();
        prost::encoding::uint64::encode(1, &3, &mut payload);
        payload.extend_from_slice(&m.encode_to_vec());
        prost::encoding::uint64::encode(1, &4, &mut payload);
        prost::encoding::bytes::encode(99, &Bytes::from_static(b"new"), &mut payload);
        let env = Envelope {
            payload: Bytes::from(payload),
            signature: Bytes::from_static(b"sig"),
            secret_envelope: None,
        };
        let received =
            SignedMessage::from_envelope_bytes(Bytes::from(env.encode_to_vec())).expect("decodes");
        assert_eq!(received.message().nonce, 4, "the last nonce counts");
        let out = received.noop_envelope_with_nonce(1000);
        let sent = Envelope::decode(out).expect("decodes");
        assert!(sent.signature.is_empty(), "noop-signed");
        let back = GossipMessage::decode(sent.payload.clone()).expect("decodes");
        assert_eq!(back, GossipMessage { nonce: 1000, ..m });
        let mut unknown = Vec::new();
        prost::encoding::bytes::encode(99, &Bytes::from_static(b"new"), &mut unknown);
        assert!(
            sent.payload.ends_with(&unknown),
            "the unknown field is kept"
        );
        let mut nonce = Vec::new();
        prost::encoding::uint64::encode(1, &1000, &mut nonce);
        assert!(sent.payload.starts_with(&nonce), "the nonce first, once");
    }

    #[test]
    fn a_payload_that_does_not_scan_is_encoded_instead() {
        // A nonce with the wrong wire type, or a group: the splice declines.
        let mut bad = Vec::new();
        prost::encoding::bytes::encode(1, &Bytes::from_static(b"x"), &mut bad);
        let group = [0x0b_u8, 0x0c]; // field 1 start-group, end-group
        for payload in [bad, group.to_vec()] {
            let env = Envelope {
                payload: Bytes::from(payload),
                ..Envelope::default()
            };
            assert_eq!(splice_nonce(&env.encode_to_vec(), 5), None);
        }
        assert_eq!(splice_nonce(&[0x0a, 0x05, 0x08], 5), None, "truncated");
        assert_eq!(
            splice_nonce(&[0x08, 0x05], 5),
            None,
            "a payload as a varint"
        );
    }

    /// Fabric refuses a secret envelope with nothing in it before it asks the provider,
    /// so one whose empty payload a provider would verify (an HMAC over no bytes) is
    /// refused too.
    #[test]
    fn an_empty_secret_envelope_is_refused_whatever_its_signature() {
        use crate::TestOnlyHmacSecurity as Hmac;
        let sec = Hmac::new("a");
        let signed = |payload: &'static [u8], signature: Vec<u8>| Envelope {
            payload: Bytes::from_static(b"payload"),
            signature: Bytes::copy_from_slice(&Hmac::hmac(b"payload")),
            secret_envelope: Some(SecretEnvelope {
                payload: Bytes::from_static(payload),
                signature: Bytes::from(signature),
            }),
        };
        let check = |env: &Envelope| verify_envelope(&sec, b"a", env);
        assert_eq!(check(&signed(b"s", Hmac::hmac(b"s").to_vec())), Ok(()));
        assert_eq!(
            check(&signed(b"", Hmac::hmac(b"").to_vec())),
            Err(HandshakeError::BadSecretEnvelope)
        );
        assert_eq!(
            check(&signed(b"s", Vec::new())),
            Err(HandshakeError::BadSecretEnvelope)
        );
    }

    #[test]
    fn a_detached_envelope_keeps_nothing_of_the_buffer_it_was_read_from() {
        let mut buf = vec![0u8; 64 << 10];
        let env = Envelope {
            payload: Bytes::from_static(b"payload"),
            signature: Bytes::from_static(b"sig"),
            secret_envelope: Some(SecretEnvelope {
                payload: Bytes::from_static(b"secret"),
                signature: Bytes::from_static(b"ssig"),
            }),
        };
        let encoded = env.encode_to_vec();
        buf[100..100 + encoded.len()].copy_from_slice(&encoded);
        let read = Bytes::from(buf);
        let received = Envelope::decode(read.slice(100..100 + encoded.len())).expect("decodes");
        let within = |b: &Bytes| read.as_ptr_range().contains(&b.as_ptr());
        assert!(within(&received.payload), "prost slices the read buffer");
        let kept = detached_envelope(&received);
        assert_eq!(kept, env);
        let secret = kept.secret_envelope.as_ref().expect("kept");
        for b in [
            &kept.payload,
            &kept.signature,
            &secret.payload,
            &secret.signature,
        ] {
            assert!(!within(b));
        }
    }
}
