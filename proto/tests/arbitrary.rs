//! The `arbitrary` feature: every message drawn from arbitrary bytes encodes and decodes
//! back to itself, and the draws reach every kind of content, so a fuzzer built on them
//! explores the whole protocol rather than empty messages.
#![cfg(feature = "arbitrary")]

use arbitrary::{Arbitrary, Unstructured};
use fabric_gossip_proto::ContentKind;
use fabric_gossip_proto::gossip::{Envelope, GossipMessage};
use fabric_gossip_proto::msp::SerializedIdentity;
use fabric_gossip_proto::protos::{CollectionConfigPackage, application_policy};
use prost::Message;
use std::collections::BTreeSet;

/// Draws per type; each from its own pseudo-random buffer of 0 to 4 KiB.
const DRAWS: u64 = 2_000;

/// Deterministic input buffers (splitmix64), so a failure names a reproducible draw.
fn buffer(draw: u64) -> Vec<u8> {
    let mut state = draw.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let len = (next() % 4097) as usize;
    (0..len).map(|_| next() as u8).collect()
}

/// Draws `DRAWS` values of `T`, checks each round trip and returns them for further checks.
fn round_trips<T>() -> Vec<T>
where
    T: for<'a> Arbitrary<'a> + Message + Default + PartialEq,
{
    let mut drawn = Vec::new();
    for draw in 0..DRAWS {
        let data = buffer(draw);
        let Ok(value) = T::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        let encoded = value.encode_to_vec();
        assert_eq!(encoded.len(), value.encoded_len(), "draw {draw}");
        let decoded = T::decode(encoded.as_slice()).unwrap_or_else(|e| panic!("draw {draw}: {e}"));
        assert!(
            decoded == value,
            "draw {draw}: the round trip changed the value"
        );
        assert_eq!(
            decoded.encode_to_vec(),
            encoded,
            "draw {draw}: unstable encoding"
        );
        drawn.push(value);
    }
    assert!(
        drawn.len() as u64 > DRAWS / 2,
        "only {} of {DRAWS} draws gave a value",
        drawn.len()
    );
    drawn
}

/// Fails unless some drawn value is `what` (`pred` holds for it): a generator that never
/// reaches a shape leaves it unexplored by every fuzzer built on it.
fn some_drawn<T>(drawn: &[T], what: &str, pred: impl Fn(&T) -> bool) {
    assert!(drawn.iter().any(pred), "no draw {what}");
}

#[test]
fn gossip_messages_round_trip_and_cover_every_content() {
    let drawn = round_trips::<GossipMessage>();
    let kinds: BTreeSet<usize> = drawn
        .iter()
        .filter_map(|m| m.content_kind())
        .map(ContentKind::index)
        .collect();
    let missing: Vec<&str> = ContentKind::ALL
        .iter()
        .filter(|k| !kinds.contains(&k.index()))
        .map(|k| k.as_str())
        .collect();
    assert!(missing.is_empty(), "never drawn: {missing:?}");
    some_drawn(&drawn, "with a nonce and a channel", |m| {
        m.nonce != 0 && !m.channel.is_empty()
    });
}

#[test]
fn envelopes_round_trip() {
    let drawn = round_trips::<Envelope>();
    some_drawn(&drawn, "with a secret envelope", |e| {
        e.secret_envelope.is_some()
    });
    some_drawn(&drawn, "with a payload and a signature", |e| {
        !e.payload.is_empty() && !e.signature.is_empty()
    });
}

#[test]
fn identities_round_trip() {
    let drawn = round_trips::<SerializedIdentity>();
    some_drawn(&drawn, "with an MSP ID and identity bytes", |i| {
        !i.mspid.is_empty() && !i.id_bytes.is_empty()
    });
}

/// Also the oneofs whose `Arbitrary` is written by hand (they hold `bytes`).
#[test]
fn collection_configs_round_trip_with_both_policy_kinds() {
    let drawn = round_trips::<CollectionConfigPackage>();
    let policies: Vec<&application_policy::Type> = drawn
        .iter()
        .flat_map(|p| &p.config)
        .filter_map(|c| match &c.payload {
            Some(
                fabric_gossip_proto::protos::collection_config::Payload::StaticCollectionConfig(s),
            ) => s.endorsement_policy.as_ref()?.r#type.as_ref(),
            None => None,
        })
        .collect();
    some_drawn(
        &policies,
        "with a signature policy",
        |t| matches!(t, application_policy::Type::SignaturePolicy(b) if !b.is_empty()),
    );
    some_drawn(&policies, "with a channel config policy reference", |t| {
        matches!(t, application_policy::Type::ChannelConfigPolicyReference(_))
    });
}
