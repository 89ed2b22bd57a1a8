//! The wire vectors produced by Fabric v2.4.9's own Go code (`tests/fixtures/`): every record
//! must decode, re-encode to the same bytes, and carry signatures that verify with Fabric's
//! unit-test signer (HMAC-SHA256, key `[0, 0, 0]`, over the payload bytes).

use bytes::Bytes;
use fabric_gossip_proto::ContentKind;
use fabric_gossip_proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_proto::gossip::{Envelope, GossipMessage, PullMsgType, Secret, secret};
use fabric_gossip_proto::protos::collection_config;
use hmac::{Hmac, Mac};
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};

const GOSSIP_MESSAGES: &str = include_str!("fixtures/gossip_messages.json");
const CONN_ESTABLISH: &str = include_str!("fixtures/conn_establish.json");
const SECRET_ENVELOPE: &str = include_str!("fixtures/secret_envelope.json");

/// Fabric's unit-test signing key (test-only; never a real credential).
const HMAC_KEY: [u8; 3] = [0, 0, 0];

fn records(json: &str) -> Vec<Value> {
    let file: Value = serde_json::from_str(json).expect("fixture is JSON");
    assert_eq!(
        file["meta"]["hmac_key_hex"], "000000",
        "fixture signed with another key"
    );
    let records = file["records"].as_array().expect("records array").clone();
    assert!(!records.is_empty());
    records
}

fn field<'a>(record: &'a Value, key: &str) -> &'a str {
    record[key]
        .as_str()
        .unwrap_or_else(|| panic!("record {} lacks string field {key}", record["name"]))
}

fn hex_field(record: &Value, key: &str) -> Bytes {
    Bytes::from(hex::decode(field(record, key)).expect("valid hex"))
}

fn hmac_verifies(payload: &[u8], signature: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(&HMAC_KEY).expect("HMAC takes any key length");
    mac.update(payload);
    mac.verify_slice(signature).is_ok()
}

/// Decodes `wire` as `M` from a `Bytes` buffer and checks that it re-encodes to the same bytes.
fn decode_exact<M: Message + Default>(wire: &Bytes, what: &str) -> M {
    let msg = M::decode(wire.clone()).unwrap_or_else(|e| panic!("{what}: decode failed: {e}"));
    assert_eq!(
        hex::encode(msg.encode_to_vec()),
        hex::encode(wire),
        "{what}: re-encoding differs"
    );
    assert_eq!(msg.encoded_len(), wire.len(), "{what}: encoded_len differs");
    msg
}

/// Checks a signed Envelope the way Fabric verifies one (spec section 3) and recurses into the
/// GossipMessage it carries; returns how many signatures were verified.
fn verify_signed_envelope(env: &Envelope, what: &str) -> usize {
    assert!(!env.payload.is_empty(), "{what}: empty payload");
    assert!(!env.signature.is_empty(), "{what}: empty signature");
    assert!(
        hmac_verifies(&env.payload, &env.signature),
        "{what}: signature does not verify"
    );
    let mut verified = 1;
    if let Some(secret_env) = &env.secret_envelope {
        assert!(
            !secret_env.payload.is_empty(),
            "{what}: empty secret payload"
        );
        assert!(
            hmac_verifies(&secret_env.payload, &secret_env.signature),
            "{what}: secret signature does not verify"
        );
        let secret: Secret = decode_exact(&secret_env.payload, &format!("{what}/secret"));
        assert!(secret.content.is_some(), "{what}: secret without content");
        verified += 1;
    }
    let inner: GossipMessage = decode_exact(&env.payload, &format!("{what}/payload"));
    verified + verify_nested_envelopes(&inner, what)
}

/// Every Envelope a GossipMessage embeds is itself signed; checks them all.
fn verify_nested_envelopes(msg: &GossipMessage, what: &str) -> usize {
    let nested: Vec<&Envelope> = match &msg.content {
        Some(Content::MemReq(req)) => req.self_information.iter().collect(),
        Some(Content::MemRes(res)) => res.alive.iter().chain(&res.dead).collect(),
        Some(Content::DataUpdate(update)) => update.data.iter().collect(),
        Some(Content::StateSnapshot(snapshot)) => snapshot.elements.iter().collect(),
        _ => Vec::new(),
    };
    nested
        .into_iter()
        .enumerate()
        .map(|(i, env)| verify_signed_envelope(env, &format!("{what}/nested[{i}]")))
        .sum()
}

/// The top-level `nonce`, `channel` and `tag` lines of Go's text form.
fn go_text_header(go_text: &str) -> (u64, String, String) {
    let mut nonce = 0;
    let mut channel = String::new();
    let mut tag = "UNDEFINED".to_owned();
    for line in go_text.lines() {
        if let Some(v) = line.strip_prefix("nonce: ") {
            nonce = v.parse().expect("nonce is a u64");
        } else if let Some(v) = line.strip_prefix("channel: ") {
            channel = v.trim_matches('"').to_owned();
        } else if let Some(v) = line.strip_prefix("tag: ") {
            tag = v.to_owned();
        }
    }
    (nonce, channel, tag)
}

fn expected_kind(record_name: &str) -> ContentKind {
    match record_name {
        "ack_no_error" => ContentKind::Ack,
        "harness_data_msg_nonce3_seq1_16B" => ContentKind::DataMsg,
        name => *ContentKind::ALL
            .iter()
            .find(|k| k.as_str() == name)
            .unwrap_or_else(|| panic!("record {name} names no content kind")),
    }
}

#[test]
fn gossip_messages_round_trip_and_verify() {
    let records = records(GOSSIP_MESSAGES);
    let mut kinds_seen = Vec::new();
    let mut signatures = 0;
    for record in &records {
        let name = field(record, "name");
        let wire = hex_field(record, "bytes_hex");
        let msg: GossipMessage = decode_exact(&wire, name);

        let kind = expected_kind(name);
        assert_eq!(msg.content_kind(), Some(kind), "{name}");
        kinds_seen.push(kind);

        let (nonce, channel, tag) = go_text_header(field(record, "go_text"));
        assert_eq!(msg.nonce, nonce, "{name}: nonce");
        assert_eq!(msg.channel, channel.as_bytes(), "{name}: channel");
        assert_eq!(msg.tag().as_str_name(), tag, "{name}: tag");

        let signed: Envelope = decode_exact(&hex_field(record, "signed_envelope_hex"), name);
        assert_eq!(
            signed.payload, wire,
            "{name}: signed payload is not the message"
        );
        assert_eq!(
            signed.signature,
            hex_field(record, "signature_hex"),
            "{name}"
        );
        assert_eq!(signed.secret_envelope, None, "{name}");
        signatures += verify_signed_envelope(&signed, name);

        let noop: Envelope = decode_exact(&hex_field(record, "noop_envelope_hex"), name);
        assert_eq!(
            noop.payload, wire,
            "{name}: noop payload is not the message"
        );
        assert!(noop.signature.is_empty(), "{name}: noop envelope is signed");
        assert_eq!(noop.secret_envelope, None, "{name}");
    }
    kinds_seen.sort();
    kinds_seen.dedup();
    assert_eq!(kinds_seen, ContentKind::ALL, "a content kind has no vector");
    // 23 top-level signatures plus those of the envelopes nested in mem_req (1 + secret),
    // mem_res (3 + secret), data_update (1) and state_snapshot (1).
    assert_eq!(signatures, 23 + 2 + 4 + 1 + 1);
}

fn message(name: &str) -> GossipMessage {
    let record = records(GOSSIP_MESSAGES)
        .into_iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no record {name}"));
    GossipMessage::decode(hex_field(&record, "bytes_hex")).expect("decodes")
}

#[test]
fn gossip_messages_field_values_match_go_text() {
    match message("alive_msg").content {
        Some(Content::AliveMsg(alive)) => {
            let member = alive.membership.expect("membership");
            assert_eq!(member.endpoint, "127.0.0.1:7051");
            assert_eq!(member.metadata, "alive-metadata");
            assert_eq!(member.pki_id, "127.0.0.1:7051");
            let ts = alive.timestamp.expect("timestamp");
            assert_eq!((ts.inc_num, ts.seq_num), (1_700_000_000_123_456_789, 42));
            assert_eq!(alive.identity, "127.0.0.1:7051");
        }
        other => panic!("alive_msg: {other:?}"),
    }
    match message("mem_req").content {
        Some(Content::MemReq(req)) => {
            let known: Vec<&[u8]> = req.known.iter().map(|k| &k[..]).collect();
            assert_eq!(known, [&b"127.0.0.1:7052"[..], b"127.0.0.1:7053"]);
            let secret = req
                .self_information
                .expect("self")
                .secret_envelope
                .expect("secret");
            assert_eq!(&secret.payload[2..], b"peer0.org1.internal:7051");
        }
        other => panic!("mem_req: {other:?}"),
    }
    match message("data_msg").content {
        Some(Content::DataMsg(data)) => {
            let payload = data.payload.expect("payload");
            assert_eq!(payload.seq_num, 7);
            assert_eq!(payload.data, "block-7-bytes");
            assert_eq!(payload.private_data, ["pvt-a", "pvt-b"]);
        }
        other => panic!("data_msg: {other:?}"),
    }
    match message("hello").content {
        Some(Content::Hello(hello)) => {
            assert_eq!(
                (hello.nonce, hello.msg_type()),
                (555, PullMsgType::BlockMsg)
            );
            assert_eq!(hello.metadata, "hello-metadata");
        }
        other => panic!("hello: {other:?}"),
    }
    match message("data_req").content {
        Some(Content::DataReq(req)) => {
            assert_eq!((req.nonce, req.msg_type()), (557, PullMsgType::IdentityMsg));
            assert_eq!(req.digests, ["127.0.0.1:7051", "127.0.0.1:7052"]);
        }
        other => panic!("data_req: {other:?}"),
    }
    match message("conn").content {
        Some(Content::Conn(conn)) => {
            assert_eq!(conn.pki_id, "127.0.0.1:7051");
            assert_eq!(conn.identity, "127.0.0.1:7051");
            assert_eq!(conn.tls_cert_hash.len(), 32);
            assert_eq!(conn.tls_cert_hash[..2], [b'\t', 0o264]);
            assert!(conn.probe);
        }
        other => panic!("conn: {other:?}"),
    }
    match message("state_info").content {
        Some(Content::StateInfo(info)) => {
            assert_eq!(
                info.timestamp.expect("ts").inc_num,
                1_700_000_000_000_000_001
            );
            assert_eq!(info.channel_mac.len(), 32);
            let props = info.properties.expect("properties");
            assert_eq!((props.ledger_height, props.left_channel), (100, true));
            assert_eq!(props.chaincodes[0].name, "mycc");
            assert_eq!(props.chaincodes[0].version, "1.0");
            assert_eq!(props.chaincodes[0].metadata, "cc-metadata");
        }
        other => panic!("state_info: {other:?}"),
    }
    match message("state_request").content {
        Some(Content::StateRequest(req)) => {
            assert_eq!((req.start_seq_num, req.end_seq_num), (10, 20));
        }
        other => panic!("state_request: {other:?}"),
    }
    match message("leadership_msg").content {
        Some(Content::LeadershipMsg(lead)) => {
            assert!(lead.is_declaration);
            assert_eq!(lead.timestamp.expect("ts").seq_num, 77);
        }
        other => panic!("leadership_msg: {other:?}"),
    }
    match message("ack").content {
        Some(Content::Ack(ack)) => assert_eq!(ack.error, "ack-error-text"),
        other => panic!("ack: {other:?}"),
    }
    match message("ack_no_error") {
        GossipMessage {
            nonce: 4098,
            content: Some(Content::Ack(ack)),
            ..
        } => assert_eq!(ack.error, ""),
        other => panic!("ack_no_error: {other:?}"),
    }
    match message("privateRes").content {
        Some(Content::PrivateRes(res)) => {
            let element = &res.elements[0];
            let digest = element.digest.as_ref().expect("digest");
            assert_eq!(digest.tx_id, "tx-0001");
            assert_eq!(digest.namespace, "mycc");
            assert_eq!(digest.collection, "col1");
            assert_eq!((digest.block_seq, digest.seq_in_block), (12, 3));
            assert_eq!(element.payload, ["kvrwset-1", "kvrwset-2"]);
        }
        other => panic!("privateRes: {other:?}"),
    }
    match message("private_data").content {
        Some(Content::PrivateData(data)) => {
            let payload = data.payload.expect("payload");
            assert_eq!(payload.collection_name, "col1");
            assert_eq!(payload.private_rwset, "private-rwset");
            assert_eq!(payload.private_sim_height, 99);
            let package = payload.collection_configs.expect("collection_configs");
            match &package.config[..] {
                [config] => match &config.payload {
                    Some(collection_config::Payload::StaticCollectionConfig(c)) => {
                        assert_eq!(c.name, "col1");
                        assert_eq!((c.required_peer_count, c.maximum_peer_count), (1, 2));
                        assert_eq!(c.block_to_live, 1000);
                        assert!(c.member_only_read && !c.member_only_write);
                        assert_eq!(c.member_orgs_policy, None);
                    }
                    other => panic!("collection config: {other:?}"),
                },
                other => panic!("collection configs: {other:?}"),
            }
        }
        other => panic!("private_data: {other:?}"),
    }
    match message("harness_data_msg_nonce3_seq1_16B") {
        GossipMessage {
            nonce: 3,
            content: Some(Content::DataMsg(data)),
            ..
        } => {
            let payload = data.payload.expect("payload");
            assert_eq!(payload.seq_num, 1);
            assert_eq!(payload.data, (1..=16).collect::<Vec<u8>>());
        }
        other => panic!("harness: {other:?}"),
    }
}

#[test]
fn conn_establish_round_trips_and_verifies() {
    let records = records(CONN_ESTABLISH);
    assert_eq!(records.len(), 4);
    for record in &records {
        let name = field(record, "name");
        let env: Envelope = decode_exact(&hex_field(record, "envelope_hex"), name);
        assert_eq!(env.payload, hex_field(record, "payload_hex"), "{name}");
        assert_eq!(env.signature, hex_field(record, "signature_hex"), "{name}");
        assert_eq!(verify_signed_envelope(&env, name), 1);

        let msg: GossipMessage = decode_exact(&env.payload, name);
        assert_eq!((msg.nonce, msg.tag()), (0, Tag::Empty), "{name}");
        assert!(msg.channel.is_empty(), "{name}");
        let Some(Content::Conn(conn)) = msg.content else {
            panic!("{name}: not a ConnEstablish");
        };
        assert_eq!(conn.pki_id, field(record, "pki_id_string"), "{name}");
        assert_eq!(conn.identity, field(record, "identity_string"), "{name}");
        assert_eq!(conn.tls_cert_hash, hex_field(record, "tls_cert_hash_hex"));
        assert_eq!(Some(conn.probe), record["probe"].as_bool(), "{name}");
        if let Some(preimage) = record["tls_cert_hash_preimage"].as_str() {
            assert_eq!(
                conn.tls_cert_hash[..],
                Sha256::digest(preimage)[..],
                "{name}"
            );
        } else {
            assert!(conn.tls_cert_hash.is_empty(), "{name}");
        }
    }
}

#[test]
fn secret_envelope_round_trips_and_verifies() {
    let records = records(SECRET_ENVELOPE);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    let env: Envelope = decode_exact(&hex_field(record, "envelope_hex"), "secret");
    assert_eq!(env.payload, hex_field(record, "payload_hex"));
    assert_eq!(env.signature, hex_field(record, "signature_hex"));
    assert_eq!(verify_signed_envelope(&env, "secret"), 2);

    let secret_env = env.secret_envelope.expect("secret envelope present");
    assert_eq!(
        secret_env.encode_to_vec(),
        hex_field(record, "secret_envelope_hex")
    );
    assert_eq!(secret_env.payload, hex_field(record, "secret_payload_hex"));
    assert_eq!(
        secret_env.signature,
        hex_field(record, "secret_signature_hex")
    );
    let secret: Secret = decode_exact(&secret_env.payload, "secret payload");
    assert_eq!(
        secret.content,
        Some(secret::Content::InternalEndpoint(
            field(record, "internal_endpoint").to_owned()
        ))
    );

    let msg = GossipMessage::decode(env.payload).expect("decodes");
    assert_eq!(msg.content_kind(), Some(ContentKind::AliveMsg));
    assert_eq!(msg.tag(), Tag::Empty);
}

#[test]
fn tampered_payload_fails_verification() {
    let record = &records(CONN_ESTABLISH)[0];
    let env = Envelope::decode(hex_field(record, "envelope_hex")).expect("decodes");
    assert!(hmac_verifies(&env.payload, &env.signature));
    let mut tampered = env.payload.to_vec();
    tampered[5] ^= 1;
    assert!(!hmac_verifies(&tampered, &env.signature));
    assert!(!hmac_verifies(&env.payload, &env.signature[1..]));
}

#[test]
fn truncated_vectors_fail_to_decode() {
    for record in &records(GOSSIP_MESSAGES) {
        let wire = hex_field(record, "signed_envelope_hex");
        let truncated = wire.slice(..wire.len() - 1);
        assert!(
            Envelope::decode(truncated).is_err(),
            "{}: truncated envelope decoded",
            record["name"]
        );
    }
}

fn within(inner: &[u8], outer: &Bytes) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}

#[test]
fn decoding_from_bytes_shares_the_buffer() {
    let record = records(GOSSIP_MESSAGES)
        .into_iter()
        .find(|r| r["name"] == "data_msg")
        .expect("data_msg record");
    let wire = hex_field(&record, "signed_envelope_hex");

    let env = Envelope::decode(wire.clone()).expect("decodes");
    assert!(within(&env.payload, &wire), "envelope payload was copied");
    assert!(within(&env.signature, &wire), "signature was copied");

    // A message decoded from the payload slice still points into the original frame, down to
    // the nested block data.
    let msg = GossipMessage::decode(env.payload.clone()).expect("decodes");
    let Some(Content::DataMsg(data)) = &msg.content else {
        panic!("not a data message");
    };
    let block = &data.payload.as_ref().expect("payload").data;
    assert_eq!(block, "block-7-bytes");
    assert!(within(block, &wire), "block data was copied");
    assert!(within(&msg.channel, &wire), "channel was copied");

    // Decoding from a plain slice copies, which is what makes the check above meaningful.
    let copied = Envelope::decode(&wire[..]).expect("decodes");
    assert!(!within(&copied.payload, &wire));
}
