//! Signatures made by a real Fabric v2.4.9 peer (Go's crypto/ecdsa through its MSP, P-256),
//! captured on the wire (`fixtures/fabric_peer_capture.json`, a copy of the project's shared
//! vector): every one must verify with AWS-LC and with the pure-Rust reference, the peer's
//! certificate must chain to its CA for `Org1MSP`, its PKI-ID must be the one Fabric
//! computed, and any damage to a signature must be refused.

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::gossip_message::Content;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage};
use fabric_gossip_core::{Instant, Security, SecurityError};
use fabric_gossip_msp::dev::{self, OrgSpec, Validity};
use fabric_gossip_msp::{MspSecurity, TrustStore};
use prost::Message;
use rand_core::SeedableRng;
use serde_json::Value;

const CAPTURE: &str = include_str!("fixtures/fabric_peer_capture.json");

fn capture() -> Value {
    serde_json::from_str(CAPTURE).expect("the capture is JSON")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no string {key}"))
}

/// 2027-01-01: inside the captured certificate's validity (2026-11-29 to 2036).
fn now() -> Instant {
    Instant::from_unix_secs(1_798_761_600)
}

/// A provider of another organization that trusts the captured peer's CA for its MSP, in
/// each of the three ECDSA modes.
fn verifiers(cap: &Value) -> Vec<(&'static str, MspSecurity)> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let orgs = dev::generate_in_memory(
        &[OrgSpec::new("Org2MSP", "org2.example.com", 1)],
        Validity::ten_years_from(now()),
        &mut rng,
    )
    .unwrap();
    let mut trust: TrustStore = dev::trust_all(&orgs).unwrap();
    trust
        .add_ca_pem(text(cap, "msp_id"), text(cap, "org_ca_cert_pem").as_bytes())
        .unwrap();
    let make = || orgs[0].security(&orgs[0].peers[0], trust.clone()).unwrap();
    vec![
        ("aws-lc", make()),
        ("deterministic", make().with_deterministic_signatures()),
        ("pure Rust", make().with_pure_rust_ecdsa()),
    ]
}

/// `(what, identity, signature, payload)` for every signature in the capture: each signed
/// envelope, its SecretEnvelope, and the envelopes nested in a MembershipRequest.
fn signatures(cap: &Value) -> Vec<(String, Bytes, Bytes, Bytes)> {
    let peer_identity = fabric_gossip_msp::serialize_identity_pem(
        text(cap, "msp_id"),
        text(cap, "fabric_peer_signcert_pem").as_bytes(),
    );
    let mut out = Vec::new();
    let mut envelopes = Vec::new();
    for record in cap["records"].as_array().unwrap() {
        let wire = hex::decode(text(record, "envelope_hex")).unwrap();
        let env = Envelope::decode(wire.as_slice()).unwrap();
        envelopes.push((text(record, "name").to_owned(), env));
    }
    while let Some((name, env)) = envelopes.pop() {
        let msg = GossipMessage::decode(env.payload.clone()).unwrap();
        // Fabric signs with the identity it presents in ConnEstablish and alive messages.
        let identity = match &msg.content {
            Some(Content::Conn(c)) => c.identity.clone(),
            Some(Content::AliveMsg(a)) if !a.identity.is_empty() => a.identity.clone(),
            _ => peer_identity.clone(),
        };
        if let Some(Content::MemReq(req)) = &msg.content
            && let Some(inner) = &req.self_information
        {
            envelopes.push((format!("{name}/self_information"), inner.clone()));
        }
        if !env.signature.is_empty() {
            out.push((
                name.clone(),
                identity.clone(),
                env.signature.clone(),
                env.payload.clone(),
            ));
        }
        if let Some(secret) = &env.secret_envelope {
            out.push((
                format!("{name}/secret"),
                identity,
                secret.signature.clone(),
                secret.payload.clone(),
            ));
        }
    }
    out
}

#[test]
fn fabric_peer_signatures_verify_with_aws_lc_and_the_reference() {
    let cap = capture();
    let sigs = signatures(&cap);
    // Both ConnEstablish, and the alive message with its SecretEnvelope twice: as its own
    // record and inside the MembershipRequest that carried it.
    assert_eq!(
        sigs.len(),
        6,
        "{:?}",
        sigs.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let want_pki = hex::decode(text(&cap, "fabric_peer_pki_id_hex")).unwrap();
    for (mode, v) in verifiers(&cap) {
        for (what, identity, sig, payload) in &sigs {
            v.validate_identity(identity, now())
                .unwrap_or_else(|e| panic!("{mode}: {what}: identity refused: {e}"));
            assert_eq!(v.pki_id_of(identity).as_bytes(), want_pki, "{what}");
            v.verify(identity, sig, payload)
                .unwrap_or_else(|e| panic!("{mode}: {what}: Fabric's signature refused: {e}"));
        }
    }
}

/// Which refusal a damaged signature must get.
type Expect = fn(&SecurityError) -> bool;

#[test]
fn damaged_fabric_signatures_are_refused_alike() {
    let cap = capture();
    for (what, identity, sig, payload) in signatures(&cap) {
        let mut flipped = sig.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut other_payload = payload.to_vec();
        other_payload.push(0);
        let cases: [(&str, &[u8], &[u8], Expect); 3] = [
            ("bit flipped in s", &flipped, &payload, |e| {
                matches!(e, SecurityError::BadSignature(_))
            }),
            ("other payload", &sig, &other_payload, |e| {
                matches!(e, SecurityError::BadSignature(_))
            }),
            ("truncated", &sig[..sig.len() - 1], &payload, |e| {
                matches!(e, SecurityError::MalformedSignature(_))
            }),
        ];
        for (mode, v) in verifiers(&cap) {
            for (damage, s, m, expected) in &cases {
                match v.verify(&identity, s, m) {
                    Err(e) if expected(&e) => {}
                    other => panic!("{mode}: {what}: {damage}: {other:?}"),
                }
            }
        }
    }
}
