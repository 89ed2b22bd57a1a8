//! A root CA whose self-signature is high-S, named by an MSP's NodeOUs or OU identifiers:
//! Fabric v2.4.9 built with Go 1.19 or later cannot set that MSP up (v2.5.0 fixed it; the
//! live check's orderer, built with Go 1.19.8, panicked at start with "sanitizeCert
//! failed ... certificate signed by unknown authority", `docs/live-checks.md`), where this
//! crate accepts it. `TrustStore::fabric_unloadable_roots` finds exactly those roots, so
//! the CLI can warn; these tests pin which ones (a high-S root named by NodeOUs or an OU
//! identifier) and which not (NodeOUs off, a low-S root, a high-S intermediate).

use crate::common::pki::{intermediate_chain, rng, root_ca};
use fabric_gossip_msp::{NodeOus, NodeRole, TrustStore, certificate_pem, serialize_identity_pem};
use std::path::{Path, PathBuf};

const MSP: &str = "Org1MSP";
const CA_FILE: &str = "ca.org1.example.com-cert.pem";

/// A file of `fixtures/high_s/`.
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/high_s");
    std::fs::read(path.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The DER of the one certificate in a PEM text.
fn der(pem: &[u8]) -> Vec<u8> {
    pem_rfc7468::decode_vec(pem).expect("one PEM block").1
}

/// `der` with its ECDSA P-256 signature's `s` replaced by `n - s` and re-encoded: the
/// signature still verifies (ECDSA accepts both), only its form changes, as between the
/// two halves of cryptogen's CAs.
fn flip_s(der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut cert = x509_cert::Certificate::from_der(der).expect("a certificate");
    let sig = p256::ecdsa::Signature::from_der(cert.signature.raw_bytes()).expect("ECDSA");
    let (r, s) = sig.split_scalars();
    let flipped = p256::ecdsa::Signature::from_scalars(r, -s).expect("a signature");
    cert.signature = der::asn1::BitString::from_bytes(flipped.to_der().as_bytes()).expect("bits");
    cert.to_der().expect("DER")
}

/// An MSP folder as cryptogen lays it out: `cacerts/` holding `ca_pem`, `config.yaml` if
/// given, and peer1's certificate (which the fixture CA issued) in `signcerts/`.
fn msp_folder(ca_pem: &[u8], config: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let msp = dir.path().join("msp");
    for sub in ["cacerts", "signcerts"] {
        std::fs::create_dir_all(msp.join(sub)).expect("mkdir");
    }
    std::fs::write(msp.join("cacerts").join(CA_FILE), ca_pem).expect("write");
    std::fs::write(
        msp.join("signcerts/peer1.pem"),
        fixture("peer1-signcert.pem"),
    )
    .expect("write");
    if let Some(text) = config {
        std::fs::write(msp.join("config.yaml"), text).expect("write");
    }
    (dir, msp)
}

/// The fixture's `config.yaml` (cryptogen's: NodeOUs on, every role naming the CA).
fn nodeous_on() -> String {
    String::from_utf8(fixture("config.yaml")).expect("UTF-8")
}

/// The committed high-S root is the cryptogen CA with only its signature's form changed:
/// the low-S re-encoding Fabric makes of it (`sanitizeCert`) is the cryptogen file byte
/// for byte, and it differs from that file.
#[test]
fn the_high_s_fixture_is_the_cryptogen_ca_with_s_folded_up() {
    let low = der(&fixture("ca.pem"));
    let high = der(&fixture("ca-high-s.pem"));
    assert_ne!(low, high);
    assert_eq!(flip_s(&low), high);
    let mut trust = TrustStore::new();
    trust.add_ca_pem(MSP, &fixture("ca.pem")).expect("the CA");
    assert_eq!(trust.sanitize_certificate(MSP, &high), low);
}

/// cryptogen's MSP with NodeOUs on and its CA high-S: found, named by its file, subject
/// and the four roles that name it; the member it issued is still accepted here (this is
/// a warning of what Fabric does, not a refusal).
#[test]
fn a_high_s_root_named_by_node_ous_is_one_fabric_cannot_set_up() {
    let (_dir, msp) = msp_folder(&fixture("ca-high-s.pem"), Some(&nodeous_on()));
    let mut trust = TrustStore::new();
    trust.add_msp_dir(MSP, &msp).expect("the folder loads here");
    let found = trust.fabric_unloadable_roots();
    assert_eq!(found.len(), 1, "{found:?}");
    let root = &found[0];
    assert_eq!(root.msp_id, MSP);
    assert_eq!(
        root.source,
        msp.join("cacerts").join(CA_FILE).display().to_string()
    );
    assert!(
        root.subject.starts_with("CN=ca.org1.example.com,"),
        "{}",
        root.subject
    );
    assert!(
        root.subject.contains("O=org1.example.com"),
        "{}",
        root.subject
    );
    assert_eq!(root.named_by.len(), 4, "{:?}", root.named_by);
    let roles: Vec<String> = NodeRole::ALL
        .iter()
        .map(|r| format!("NodeOUs {r} role"))
        .collect();
    assert_eq!(root.named_by, roles);
    assert_eq!(
        root.configured_in,
        [msp.join("config.yaml").display().to_string()]
    );
    let identity = serialize_identity_pem(MSP, &fixture("peer1-signcert.pem"));
    // 2027-01-01, inside the fixture's validity.
    let at = fabric_gossip_core::Instant::from_unix_secs(1_798_761_600);
    assert_eq!(trust.validate_identity(&identity, at), Ok(()));
}

/// The same folder with NodeOUs off (`Enable: false`, or no `config.yaml`): Fabric's
/// folder reader then reads no role, nothing names the root, and Fabric sets it up.
#[test]
fn with_node_ous_off_a_high_s_root_is_not_reported() {
    let off = nodeous_on().replace("Enable: true", "Enable: false");
    for config in [Some(off.as_str()), None] {
        let (_dir, msp) = msp_folder(&fixture("ca-high-s.pem"), config);
        let mut trust = TrustStore::new();
        trust.add_msp_dir(MSP, &msp).expect("loads");
        assert_eq!(trust.fabric_unloadable_roots(), vec![], "{config:?}");
    }
}

/// The control: cryptogen's low-S CA (the same key and subject) with NodeOUs on, as the
/// three trees of eight that Fabric set up.
#[test]
fn a_low_s_root_named_by_node_ous_is_not_reported() {
    let (_dir, msp) = msp_folder(&fixture("ca.pem"), Some(&nodeous_on()));
    let mut trust = TrustStore::new();
    trust.add_msp_dir(MSP, &msp).expect("loads");
    assert_eq!(trust.fabric_unloadable_roots(), vec![]);
}

/// `OrganizationalUnitIdentifiers` name their CA the same way (Fabric's `setupOUs` calls
/// `getCertifiersIdentifier` too), NodeOUs or not.
#[test]
fn a_high_s_root_named_by_an_ou_identifier_is_reported() {
    let config = "OrganizationalUnitIdentifiers:\n  - Certificate: cacerts/ca.org1.example.com-cert.pem\n    OrganizationalUnitIdentifier: peer\n";
    let (_dir, msp) = msp_folder(&fixture("ca-high-s.pem"), Some(config));
    let mut trust = TrustStore::new();
    trust.add_msp_dir(MSP, &msp).expect("loads");
    let found = trust.fabric_unloadable_roots();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].named_by.len(), 1, "{:?}", found[0].named_by);
    assert_eq!(found[0].named_by, ["OrganizationalUnitIdentifiers peer"]);
    assert_eq!(
        found[0].configured_in,
        [msp.join("config.yaml").display().to_string()]
    );
}

/// Through the API: a root made by this crate's own generator, its self-signature folded
/// up, named by `set_node_ous`, is reported; NodeOUs turned off again, it is not; the
/// same root unflipped never is.
#[test]
fn roles_set_in_code_are_judged_and_replaced() {
    let ca = root_ca("org9.example.com", &mut rng(41));
    let high = certificate_pem(&flip_s(ca.cert_der()));
    let mut trust = TrustStore::new();
    trust.add_ca_pem(MSP, high.as_bytes()).expect("the root");
    trust
        .set_node_ous(MSP, &NodeOus::fabric_defaults(Some(high.as_bytes())))
        .expect("roles");
    let found = trust.fabric_unloadable_roots();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].subject.split(',').next(),
        Some("CN=ca.org9.example.com")
    );
    trust.set_node_ous(MSP, &NodeOus::new()).expect("off");
    assert_eq!(trust.fabric_unloadable_roots(), vec![]);

    let low = ca.cert_pem();
    let mut trust = TrustStore::new();
    trust.add_ca_pem(MSP, low.as_bytes()).expect("the root");
    trust
        .set_node_ous(MSP, &NodeOus::fabric_defaults(Some(low.as_bytes())))
        .expect("roles");
    assert_eq!(trust.fabric_unloadable_roots(), vec![]);
}

/// An intermediate CA named by NodeOUs, high-S or not, is not reported: Go verifies it
/// against the root above it, which has another subject, so Fabric sanitizes and finds it.
/// Nor is the root above it, high-S too, which nothing names directly (Fabric sanitizes
/// it when it loads `cacerts/`, and trusts that form, which is all the chain needs).
#[test]
fn a_high_s_intermediate_is_not_reported() {
    let mut r = rng(42);
    let (root, ica, _leaf) = intermediate_chain("org8.example.com", &mut r);
    let ica_high = certificate_pem(&flip_s(ica.cert_der()));
    let root_high = certificate_pem(&flip_s(root.cert_der()));
    let mut trust = TrustStore::new();
    trust.add_ca_pem(MSP, root_high.as_bytes()).expect("root");
    trust
        .add_intermediate_pem(MSP, ica_high.as_bytes())
        .expect("intermediate");
    trust
        .set_node_ous(
            MSP,
            &NodeOus::new().with_role(NodeRole::Peer, "peer", Some(ica_high.as_bytes())),
        )
        .expect("roles");
    assert_eq!(trust.fabric_unloadable_roots(), vec![]);
}

/// Two MSPs, one of each: only the high-S one is reported, under its own MSP ID.
#[test]
fn only_the_msp_with_the_high_s_root_is_reported() {
    let (_d1, high) = msp_folder(&fixture("ca-high-s.pem"), Some(&nodeous_on()));
    let (_d2, low) = msp_folder(&fixture("ca.pem"), Some(&nodeous_on()));
    let mut trust = TrustStore::new();
    trust.add_msp_dir("OrdererMSP", &high).expect("loads");
    trust.add_msp_dir(MSP, &low).expect("loads");
    let found = trust.fabric_unloadable_roots();
    assert_eq!(
        found.iter().map(|f| f.msp_id.as_str()).collect::<Vec<_>>(),
        ["OrdererMSP"]
    );
}
