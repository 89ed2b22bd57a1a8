//! A real Fabric v2.4.9 peer's alive message (captured on loopback, signed by its MSP
//! identity, `fixtures/fabric_peer_capture.json`) goes through the validation path every
//! received alive message takes, with the peer's certificate and its CA.

use crate::common;

use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{Instant, PkiId};
use fabric_gossip_discovery::AliveError;
use fabric_gossip_discovery::validate::validate_alive_envelope;
use fabric_gossip_msp::dev::{OrgSpec, Validity, generate_in_memory};
use fabric_gossip_msp::{MspSecurity, TrustStore, serialize_identity_pem};
use prost::Message;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

struct Capture {
    alive: Envelope,
    request: Envelope,
    identity: Bytes,
    pki_id: PkiId,
    security: MspSecurity,
}

fn capture() -> Capture {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/fabric_peer_capture.json")).unwrap();
    let record = |name: &str| -> Envelope {
        let bytes = common::vector_hex(
            include_str!("fixtures/fabric_peer_capture.json"),
            name,
            "envelope_hex",
        );
        Envelope::decode(&bytes[..]).unwrap()
    };
    let msp_id = v["msp_id"].as_str().unwrap();
    let cert = v["fabric_peer_signcert_pem"].as_str().unwrap();
    let ca = v["org_ca_cert_pem"].as_str().unwrap();
    // The verifier: a node of a development organization that trusts Fabric's Org1 CA.
    let dev = generate_in_memory(
        &[OrgSpec::new("DevMSP", "dev.example.com", 1)],
        Validity::ten_years_from(Instant::from_unix_secs(1_700_000_000)),
        &mut ChaCha8Rng::seed_from_u64(1),
    )
    .unwrap();
    let mut trust = TrustStore::new();
    trust.add_ca_pem(msp_id, ca.as_bytes()).unwrap();
    dev[0].add_to_trust(&mut trust).unwrap();
    Capture {
        alive: record("alive_message_envelope"),
        request: record("membership_request_envelope"),
        identity: serialize_identity_pem(msp_id, cert.as_bytes()),
        pki_id: PkiId::new(hex::decode(v["fabric_peer_pki_id_hex"].as_str().unwrap()).unwrap()),
        security: dev[0].security(&dev[0].peers[0], trust).unwrap(),
    }
}

/// Within the certificates' validity (2026-11-29 to 2036).
const NOW: Instant = Instant::from_unix_secs(1_800_000_000);

#[test]
fn fabric_alive_message_validates() {
    let c = capture();
    let (parsed, id) =
        validate_alive_envelope(&c.security, &c.alive, Some(&c.identity), NOW).unwrap();
    assert_eq!(parsed.pki_id, c.pki_id);
    assert_eq!(parsed.tag, gossip_message::Tag::Empty as i32);
    assert!(
        parsed.ts.inc > 1_700_000_000_000_000_000,
        "Unix ns: {}",
        parsed.ts.inc
    );
    assert!(parsed.ts.seq >= 1);
    assert!(
        !parsed.internal_endpoint.is_empty(),
        "Fabric attaches its internal endpoint"
    );
    assert!(c.alive.secret_envelope.is_some());
    assert!(id.expires.is_some());
    // If Fabric embedded its identity (first publishCertPeriod), it is the same one and
    // validates on its own, without a known identity.
    if !parsed.identity.is_empty() {
        assert_eq!(parsed.identity, c.identity);
        validate_alive_envelope(&c.security, &c.alive, None, NOW).unwrap();
    } else {
        assert_eq!(
            validate_alive_envelope(&c.security, &c.alive, None, NOW).unwrap_err(),
            AliveError::UnknownIdentity
        );
    }
}

#[test]
fn fabric_membership_request_carries_that_alive_message() {
    let c = capture();
    assert!(c.request.signature.is_empty(), "Fabric noop-signs requests");
    let msg = GossipMessage::decode(c.request.payload.clone()).unwrap();
    assert_eq!(msg.tag, gossip_message::Tag::Empty as i32);
    assert_ne!(msg.nonce, 0, "a bootstrap request has a random nonce");
    let Some(gossip_message::Content::MemReq(req)) = msg.content else {
        panic!("not a membership request")
    };
    assert!(req.known.is_empty());
    let info = req.self_information.unwrap();
    assert_eq!(info, c.alive);
    validate_alive_envelope(&c.security, &info, Some(&c.identity), NOW).unwrap();
}

#[test]
fn tampering_with_fabrics_alive_message_is_caught() {
    let c = capture();
    let mut sig = c.alive.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    let bad = Envelope {
        signature: sig.into(),
        ..c.alive.clone()
    };
    assert!(matches!(
        validate_alive_envelope(&c.security, &bad, Some(&c.identity), NOW),
        Err(AliveError::BadSignature(_))
    ));
    let mut bad_secret = c.alive.clone();
    let s = bad_secret.secret_envelope.as_mut().unwrap();
    s.payload = Bytes::from_static(b"\x0a\x0eevil.host:7051");
    assert!(validate_alive_envelope(&c.security, &bad_secret, Some(&c.identity), NOW).is_err());
    // Without its secret (as sent to another organization) it still verifies.
    let stripped = fabric_gossip_discovery::alive::strip_secret(&c.alive);
    validate_alive_envelope(&c.security, &stripped, Some(&c.identity), NOW).unwrap();
    // An embedded identity is what the signature is checked against (as Fabric does),
    // whatever identity was known before.
    let other = serialize_identity_pem("Org1MSP", b"not a certificate");
    let embedded = fabric_gossip_discovery::validate::parse_alive(&c.alive)
        .unwrap()
        .identity;
    if !embedded.is_empty() {
        validate_alive_envelope(&c.security, &c.alive, Some(&other), NOW).unwrap();
    }
}

#[test]
fn fabrics_identity_is_refused_after_its_certificate_expires() {
    let c = capture();
    let after = NOW + Duration::from_secs(20 * 365 * 24 * 3600);
    let parsed = fabric_gossip_discovery::validate::parse_alive(&c.alive).unwrap();
    let err = fabric_gossip_discovery::validate::check_identity(
        &c.security,
        &parsed.pki_id,
        &c.identity,
        after,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AliveError::BadIdentity(_) | AliveError::IdentityExpired
        ),
        "{err:?}"
    );
}

fn received(c: &Capture, env: &Envelope) -> fabric_gossip_core::ReceivedMessage {
    fabric_gossip_core::ReceivedMessage {
        message: GossipMessage::decode(env.payload.clone()).unwrap(),
        envelope: env.clone(),
        envelope_bytes: env.encode_to_vec().into(),
        conn: fabric_gossip_core::StreamId::from_parts(0, 0),
        info: std::sync::Arc::new(fabric_gossip_core::ConnectionInfo {
            id: c.pki_id.clone(),
            identity: c.identity.clone(),
            endpoint: "127.0.0.1:17051".into(),
            signed_data: Bytes::new(),
            signature: Bytes::new(),
        }),
    }
}

/// The captured messages through the layer itself: the Fabric peer becomes an alive
/// member of organization Org1MSP, with the internal endpoint of its secret; the same
/// message again is a duplicate.
#[test]
fn the_layer_learns_the_fabric_peer_from_its_alive_message() {
    use fabric_gossip_core::{Comm, Config, Layer};
    use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
    let c = capture();
    let alive = received(&c, &c.alive);
    let request = received(&c, &c.request);
    let mut comm = Comm::new(Config::default(), c.security, NOW).unwrap();
    let mut d = Discovery::new(DiscoveryConfig::new("127.0.0.1:7051")).unwrap();
    d.start(NOW, &mut comm);
    d.handle_message(NOW, &mut comm, alive.clone());
    let m = d.member(&c.pki_id).expect("learnt");
    assert!(m.alive);
    assert_eq!(m.org.as_deref(), Some("Org1MSP"));
    assert!(!m.internal_endpoint.is_empty());
    assert_eq!(d.stats().alive_refused(), 0);
    d.handle_message(NOW, &mut comm, alive);
    assert_eq!(d.stats().alive_duplicate, 1);
    // Its membership request, on the connection it authenticated, passes the gate.
    d.handle_message(NOW, &mut comm, request);
    let s = d.stats();
    assert_eq!(
        (s.requests_received, s.requests_spoofed, s.requests_invalid),
        (1, 0, 0)
    );
}
