//! A certificate whose CA signature has a high `s`, as `cryptogen extend` makes about half
//! of its certificates, against what Fabric v2.4.9's own MSP made of it
//! (`fixtures/high_s/`): the node presents the certificate Fabric's MSP presents (the
//! signature folded to low-S, `sanitizeCert`), so it has the PKI-ID a Fabric peer with the
//! same folder has; a peer's identity as received is never re-encoded, and both forms
//! validate.

use fabric_gossip_core::{Instant, Security};
use fabric_gossip_msp::{MspSecurity, TrustStore, serialize_identity_pem};
use serde_json::Value;
use std::path::Path;

const MSP: &str = "Org1MSP";
const CA: &str = include_str!("fixtures/high_s/ca.pem");
const ORACLE: &str = include_str!("fixtures/high_s/oracle.json");

/// 2027-01-01: inside the fixtures' validity (2026-12-05 to 2036).
fn now() -> Instant {
    Instant::from_unix_secs(1_798_761_600)
}

/// A fixture file's bytes.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/high_s");
    std::fs::read(path.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What Fabric said of peer `n` (1: low-S, 2: high-S).
fn oracle(n: u8) -> Value {
    let all: Value = serde_json::from_str(ORACLE).expect("oracle.json is JSON");
    all["peers"][format!("peer{n}.org1.example.com")].clone()
}

fn oracle_text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

fn trust() -> TrustStore {
    let mut trust = TrustStore::new();
    trust.add_ca_pem(MSP, CA.as_bytes()).expect("the CA");
    trust
}

/// The DER of the one certificate in a PEM file.
fn der(pem: &[u8]) -> Vec<u8> {
    let (label, der) = pem_rfc7468::decode_vec(pem).expect("one PEM block");
    assert_eq!(label, "CERTIFICATE");
    der
}

/// Loaded from the files cryptogen wrote, each peer presents what Fabric's MSP serialized
/// for it: peer1 (low-S) its file, peer2 (high-S) the re-encoded certificate, and each has
/// the PKI-ID Fabric computed.
#[test]
fn a_node_presents_its_certificate_as_fabric_s_msp_does() {
    for n in [1, 2] {
        let v = oracle(n);
        let signcert = fixture(&format!("peer{n}-signcert.pem"));
        let fabric = fixture(&format!("peer{n}-fabric-identity.pem"));
        assert_eq!(oracle_text(&v, "id_bytes").as_bytes(), fabric, "peer{n}");
        let key = fixture(&format!("peer{n}-key.pem"));
        let me = MspSecurity::new(MSP, &signcert, &key, trust()).expect("loads");
        assert_eq!(
            me.own_identity(),
            serialize_identity_pem(MSP, &fabric),
            "peer{n}"
        );
        assert_eq!(me.certificate_der(), der(&fabric), "peer{n}");
        assert_eq!(
            me.pki_id().to_string(),
            oracle_text(&v, "pki_id"),
            "peer{n}"
        );
        assert_eq!(
            signcert == fabric,
            n == 1,
            "peer{n}: only the high-S one changes"
        );
        // What it signs verifies with what it presents.
        let sig = me.sign(b"alive").expect("signs");
        trust_only_peer()
            .verify(&me.own_identity(), &sig, b"alive")
            .expect("verifies");
    }
}

/// A provider of the same MSP, to judge remote identities.
fn trust_only_peer() -> MspSecurity {
    let signcert = fixture("peer1-signcert.pem");
    let key = fixture("peer1-key.pem");
    MspSecurity::new(MSP, &signcert, &key, trust()).expect("loads")
}

/// A peer's identity as received is never re-encoded: the file's high-S form has the
/// PKI-ID of its own bytes (the one Fabric's `GetPKIidOfCert` gives it), and both forms
/// validate, as Fabric's MSP validates both.
#[test]
fn a_received_identity_keeps_its_bytes_and_both_forms_validate() {
    let judge = trust_only_peer();
    let v = oracle(2);
    for (file, pki_key) in [
        ("peer2-signcert.pem", "pki_id_if_disk_pem_used"),
        ("peer2-fabric-identity.pem", "pki_id"),
    ] {
        let identity = serialize_identity_pem(MSP, &fixture(file));
        judge.validate_identity(&identity, now()).expect(file);
        assert_eq!(
            judge.pki_id_of(&identity).to_string(),
            oracle_text(&v, pki_key),
            "{file}"
        );
    }
}

/// `TrustStore::sanitize_certificate` gives Fabric's form byte for byte; a certificate no
/// trusted CA issued is given back as it is.
#[test]
fn sanitizing_gives_fabric_s_bytes() {
    let trust = trust();
    for n in [1, 2] {
        let disk = der(&fixture(&format!("peer{n}-signcert.pem")));
        let fabric = der(&fixture(&format!("peer{n}-fabric-identity.pem")));
        assert_eq!(trust.sanitize_certificate(MSP, &disk), fabric, "peer{n}");
        assert_eq!(trust.sanitize_certificate(MSP, &fabric), fabric, "peer{n}");
        assert_eq!(
            TrustStore::new().sanitize_certificate(MSP, &disk),
            disk,
            "peer{n}: no CA"
        );
    }
}

/// Loaded from an MSP folder laid out as cryptogen lays it out (with its NodeOUs), the
/// high-S peer has Fabric's PKI-ID too.
#[test]
fn an_msp_folder_gives_fabric_s_pki_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msp = dir.path();
    for (folder, name, file) in [
        (
            "signcerts",
            "peer2.org1.example.com-cert.pem",
            "peer2-signcert.pem",
        ),
        ("keystore", "priv_sk", "peer2-key.pem"),
        ("cacerts", "ca.org1.example.com-cert.pem", "ca.pem"),
        ("", "config.yaml", "config.yaml"),
    ] {
        std::fs::create_dir_all(msp.join(folder)).expect("mkdir");
        std::fs::write(msp.join(folder).join(name), fixture(file)).expect("write");
    }
    let me = MspSecurity::from_msp_dir(msp, MSP, TrustStore::new()).expect("loads");
    assert_eq!(me.pki_id().to_string(), oracle_text(&oracle(2), "pki_id"));
    me.validate_identity(&me.own_identity(), now())
        .expect("its own identity is valid to itself");
}
