//! Property tests: any message, with every content variant and nested Envelopes, survives an
//! encode/decode round trip, and its encoding is stable (decoding then re-encoding gives the
//! same bytes). The Fabric vectors pin the encoding to Fabric's; these cover the values the
//! vectors do not.

use bytes::Bytes;
use fabric_gossip_proto::ContentKind;
use fabric_gossip_proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_proto::gossip::*;
use fabric_gossip_proto::protos::{
    ApplicationPolicy, CollectionConfig, CollectionConfigPackage, CollectionPolicyConfig,
    StaticCollectionConfig, application_policy, collection_config, collection_policy_config,
};
use prost::Message;
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// How deep Envelopes may nest inside generated messages (an Envelope's payload is itself a
/// generated GossipMessage).
const MAX_DEPTH: u32 = 2;

fn bytes(g: &mut Gen) -> Bytes {
    Bytes::from(Vec::<u8>::arbitrary(g))
}

fn string(g: &mut Gen) -> String {
    String::arbitrary(g)
}

/// A short list: long lists add nothing to these properties but time.
fn list<T>(g: &mut Gen, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
    let len = *g.choose(&[0, 1, 2, 3]).expect("non-empty");
    (0..len).map(|_| item(g)).collect()
}

fn maybe<T>(g: &mut Gen, item: impl FnOnce(&mut Gen) -> T) -> Option<T> {
    bool::arbitrary(g).then(|| item(g))
}

/// Mostly declared enum values, sometimes any `i32`: proto3 enums are open, so unknown values
/// must survive too.
fn enum_value(g: &mut Gen, max_declared: i32) -> i32 {
    if u8::arbitrary(g) % 4 == 0 {
        i32::arbitrary(g)
    } else {
        i32::from(u8::arbitrary(g)) % (max_declared + 1)
    }
}

fn peer_time(g: &mut Gen) -> PeerTime {
    PeerTime {
        inc_num: u64::arbitrary(g),
        seq_num: u64::arbitrary(g),
    }
}

fn payload(g: &mut Gen) -> Payload {
    Payload {
        seq_num: u64::arbitrary(g),
        data: bytes(g),
        private_data: list(g, bytes),
    }
}

fn pvt_data_digest(g: &mut Gen) -> PvtDataDigest {
    PvtDataDigest {
        tx_id: string(g),
        namespace: string(g),
        collection: string(g),
        block_seq: u64::arbitrary(g),
        seq_in_block: u64::arbitrary(g),
    }
}

fn collection_configs(g: &mut Gen) -> CollectionConfigPackage {
    let config = |g: &mut Gen| CollectionConfig {
        payload: maybe(g, |g| {
            collection_config::Payload::StaticCollectionConfig(StaticCollectionConfig {
                name: string(g),
                member_orgs_policy: maybe(g, |g| CollectionPolicyConfig {
                    payload: maybe(g, |g| {
                        collection_policy_config::Payload::SignaturePolicy(bytes(g))
                    }),
                }),
                required_peer_count: i32::arbitrary(g),
                maximum_peer_count: i32::arbitrary(g),
                block_to_live: u64::arbitrary(g),
                member_only_read: bool::arbitrary(g),
                member_only_write: bool::arbitrary(g),
                endorsement_policy: maybe(g, |g| ApplicationPolicy {
                    r#type: maybe(g, |g| {
                        if bool::arbitrary(g) {
                            application_policy::Type::SignaturePolicy(bytes(g))
                        } else {
                            application_policy::Type::ChannelConfigPolicyReference(string(g))
                        }
                    }),
                }),
            })
        }),
    };
    CollectionConfigPackage {
        config: list(g, config),
    }
}

/// An Envelope whose payload is a generated GossipMessage (or, at the depth limit, arbitrary
/// bytes), optionally with a SecretEnvelope carrying a generated Secret.
fn envelope(g: &mut Gen, depth: u32) -> Envelope {
    let payload = if depth < MAX_DEPTH {
        Bytes::from(gossip_message(g, depth + 1).encode_to_vec())
    } else {
        bytes(g)
    };
    Envelope {
        payload,
        signature: bytes(g),
        secret_envelope: maybe(g, secret_envelope),
    }
}

fn secret_envelope(g: &mut Gen) -> SecretEnvelope {
    let secret = Secret {
        content: maybe(g, |g| secret::Content::InternalEndpoint(string(g))),
    };
    SecretEnvelope {
        payload: Bytes::from(secret.encode_to_vec()),
        signature: bytes(g),
    }
}

fn content(g: &mut Gen, kind: ContentKind, depth: u32) -> Content {
    match kind {
        ContentKind::AliveMsg => Content::AliveMsg(AliveMessage {
            membership: maybe(g, |g| Member {
                endpoint: string(g),
                metadata: bytes(g),
                pki_id: bytes(g),
            }),
            timestamp: maybe(g, peer_time),
            identity: bytes(g),
        }),
        ContentKind::MemReq => Content::MemReq(MembershipRequest {
            self_information: maybe(g, |g| envelope(g, depth)),
            known: list(g, bytes),
        }),
        ContentKind::MemRes => Content::MemRes(MembershipResponse {
            alive: list(g, |g| envelope(g, depth)),
            dead: list(g, |g| envelope(g, depth)),
        }),
        ContentKind::DataMsg => Content::DataMsg(DataMessage {
            payload: maybe(g, payload),
        }),
        ContentKind::Hello => Content::Hello(GossipHello {
            nonce: u64::arbitrary(g),
            metadata: bytes(g),
            msg_type: enum_value(g, 2),
        }),
        ContentKind::DataDig => Content::DataDig(DataDigest {
            nonce: u64::arbitrary(g),
            digests: list(g, bytes),
            msg_type: enum_value(g, 2),
        }),
        ContentKind::DataReq => Content::DataReq(DataRequest {
            nonce: u64::arbitrary(g),
            digests: list(g, bytes),
            msg_type: enum_value(g, 2),
        }),
        ContentKind::DataUpdate => Content::DataUpdate(DataUpdate {
            nonce: u64::arbitrary(g),
            data: list(g, |g| envelope(g, depth)),
            msg_type: enum_value(g, 2),
        }),
        ContentKind::Empty => Content::Empty(Empty {}),
        ContentKind::Conn => Content::Conn(ConnEstablish {
            pki_id: bytes(g),
            identity: bytes(g),
            tls_cert_hash: bytes(g),
            probe: bool::arbitrary(g),
        }),
        ContentKind::StateInfo => Content::StateInfo(StateInfo {
            timestamp: maybe(g, peer_time),
            pki_id: bytes(g),
            channel_mac: bytes(g),
            properties: maybe(g, |g| Properties {
                ledger_height: u64::arbitrary(g),
                left_channel: bool::arbitrary(g),
                chaincodes: list(g, |g| Chaincode {
                    name: string(g),
                    version: string(g),
                    metadata: bytes(g),
                }),
            }),
        }),
        ContentKind::StateSnapshot => Content::StateSnapshot(StateInfoSnapshot {
            elements: list(g, |g| envelope(g, depth)),
        }),
        ContentKind::StateInfoPullReq => Content::StateInfoPullReq(StateInfoPullRequest {
            channel_mac: bytes(g),
        }),
        ContentKind::StateRequest => Content::StateRequest(RemoteStateRequest {
            start_seq_num: u64::arbitrary(g),
            end_seq_num: u64::arbitrary(g),
        }),
        ContentKind::StateResponse => Content::StateResponse(RemoteStateResponse {
            payloads: list(g, payload),
        }),
        ContentKind::LeadershipMsg => Content::LeadershipMsg(LeadershipMessage {
            pki_id: bytes(g),
            timestamp: maybe(g, peer_time),
            is_declaration: bool::arbitrary(g),
        }),
        ContentKind::PeerIdentity => Content::PeerIdentity(PeerIdentity {
            pki_id: bytes(g),
            cert: bytes(g),
            metadata: bytes(g),
        }),
        ContentKind::Ack => Content::Ack(Acknowledgement { error: string(g) }),
        ContentKind::PrivateReq => Content::PrivateReq(RemotePvtDataRequest {
            digests: list(g, pvt_data_digest),
        }),
        ContentKind::PrivateRes => Content::PrivateRes(RemotePvtDataResponse {
            elements: list(g, |g| PvtDataElement {
                digest: maybe(g, pvt_data_digest),
                payload: list(g, bytes),
            }),
        }),
        ContentKind::PrivateData => Content::PrivateData(PrivateDataMessage {
            payload: maybe(g, |g| PrivatePayload {
                collection_name: string(g),
                namespace: string(g),
                tx_id: string(g),
                private_rwset: bytes(g),
                private_sim_height: u64::arbitrary(g),
                collection_configs: maybe(g, collection_configs),
            }),
        }),
    }
}

fn gossip_message(g: &mut Gen, depth: u32) -> GossipMessage {
    // One in 22 messages has no content at all; it must round-trip as well.
    let kind = if u8::arbitrary(g) % 22 == 0 {
        None
    } else {
        g.choose(&ContentKind::ALL).copied()
    };
    GossipMessage {
        nonce: u64::arbitrary(g),
        channel: bytes(g),
        tag: enum_value(g, 5),
        content: kind.map(|kind| content(g, kind, depth)),
    }
}

#[derive(Debug, Clone)]
struct ArbMessage(GossipMessage);

impl Arbitrary for ArbMessage {
    fn arbitrary(g: &mut Gen) -> Self {
        Self(gossip_message(g, 0))
    }
}

/// A signed Envelope around a generated message, without a SecretEnvelope.
#[derive(Debug, Clone)]
struct ArbPlainEnvelope(Envelope, GossipMessage);

impl Arbitrary for ArbPlainEnvelope {
    fn arbitrary(g: &mut Gen) -> Self {
        let msg = gossip_message(g, 0);
        let env = Envelope {
            payload: Bytes::from(msg.encode_to_vec()),
            signature: bytes(g),
            secret_envelope: None,
        };
        Self(env, msg)
    }
}

/// A signed Envelope around a generated message, with a SecretEnvelope.
#[derive(Debug, Clone)]
struct ArbSecretEnvelope(Envelope, GossipMessage);

impl Arbitrary for ArbSecretEnvelope {
    fn arbitrary(g: &mut Gen) -> Self {
        let ArbPlainEnvelope(mut env, msg) = ArbPlainEnvelope::arbitrary(g);
        env.secret_envelope = Some(secret_envelope(g));
        Self(env, msg)
    }
}

/// `decode(encode(m)) == m` and `encode(decode(encode(m))) == encode(m)`, decoding from a
/// `Bytes` buffer as the transport does.
fn round_trips<M: Message + Default + PartialEq>(msg: &M) -> bool {
    let wire = Bytes::from(msg.encode_to_vec());
    if wire.len() != msg.encoded_len() {
        return false;
    }
    match M::decode(wire.clone()) {
        Ok(decoded) => decoded == *msg && decoded.encode_to_vec() == wire,
        Err(_) => false,
    }
}

/// `env` decoded from its encoding, if `env` round trips and its payload decodes to `msg`.
fn carries(env: &Envelope, msg: &GossipMessage) -> Option<Envelope> {
    let decoded = Envelope::decode(Bytes::from(env.encode_to_vec())).ok()?;
    let payload_is_msg = GossipMessage::decode(decoded.payload.clone()).is_ok_and(|m| m == *msg);
    (round_trips(env) && payload_is_msg).then_some(decoded)
}

/// 500 cases per property unless `QUICKCHECK_TESTS` asks for another number (for long runs).
fn quickcheck() -> QuickCheck {
    let qc = QuickCheck::new();
    if std::env::var_os("QUICKCHECK_TESTS").is_some() {
        qc
    } else {
        qc.tests(500)
    }
}

#[test]
fn gossip_message_round_trips() {
    fn prop(ArbMessage(msg): ArbMessage) -> bool {
        round_trips(&msg)
    }
    quickcheck().quickcheck(prop as fn(ArbMessage) -> bool);
}

#[test]
fn envelope_without_secret_round_trips() {
    fn prop(ArbPlainEnvelope(env, msg): ArbPlainEnvelope) -> bool {
        carries(&env, &msg).is_some_and(|decoded| decoded.secret_envelope.is_none())
    }
    quickcheck().quickcheck(prop as fn(ArbPlainEnvelope) -> bool);
}

#[test]
fn envelope_with_secret_round_trips() {
    fn prop(ArbSecretEnvelope(env, msg): ArbSecretEnvelope) -> bool {
        carries(&env, &msg).is_some_and(|decoded| {
            decoded
                .secret_envelope
                .is_some_and(|secret| Secret::decode(secret.payload).is_ok())
        })
    }
    quickcheck().quickcheck(prop as fn(ArbSecretEnvelope) -> bool);
}

/// The generators must reach every content kind and nest Envelopes, or the properties above
/// would prove less than they claim.
#[test]
fn generator_covers_every_content_kind() {
    let mut g = Gen::new(50);
    let mut seen = [0usize; ContentKind::COUNT];
    let mut none = 0;
    let mut nested = 0;
    for _ in 0..2000 {
        let msg = gossip_message(&mut g, 0);
        match msg.content_kind() {
            Some(kind) => seen[kind.index()] += 1,
            None => none += 1,
        }
        if let Some(Content::MemRes(res)) = &msg.content {
            nested += res
                .alive
                .iter()
                .filter(|e| {
                    GossipMessage::decode(e.payload.clone()).is_ok_and(|m| m.content.is_some())
                })
                .count();
        }
    }
    for kind in ContentKind::ALL {
        assert!(seen[kind.index()] > 0, "{kind} never generated");
    }
    assert!(none > 0, "a message without content never generated");
    assert!(
        nested > 0,
        "no nested Envelope carrying a message generated"
    );
}

/// Why received Envelopes must be kept as received (spec, section 3): a field this crate does
/// not know is skipped on decoding and lost on re-encoding, so a re-encoded payload would no
/// longer match its signature.
#[test]
fn unknown_fields_are_dropped_on_reencode() {
    let msg = GossipMessage {
        nonce: 7,
        tag: Tag::Empty as i32,
        content: Some(Content::Empty(Empty {})),
        ..Default::default()
    };
    assert!(round_trips(&msg));
    let mut wire = msg.encode_to_vec();
    // Field 4 of GossipMessage is unused; Fabric's own encoder never writes it.
    wire.extend_from_slice(&[0x20, 0x01]);
    let decoded = GossipMessage::decode(&wire[..]).expect("unknown fields are skipped");
    assert_eq!(decoded, msg);
    assert_ne!(decoded.encode_to_vec(), wire);
}
