//! Certificate revocation lists: Fabric's rule (a CRL of the MSP, naming the issuing CA by
//! its key identifier, listing the serial, signed by that CA), each way a CRL fails to
//! apply, what loading refuses, and the `crls/` folder of an MSP.
use crate::common;
use common::pki::*;
use der::{Decode, Encode};
use fabric_gossip_core::{Security, SecurityError};
use fabric_gossip_msp::dev::{self, DevPeer, OrgSpec};
use fabric_gossip_msp::{LoadError, MspSecurity, TrustStore, serialize_identity};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;

fn identity_of(msp_id: &str, peer: &DevPeer) -> bytes::Bytes {
    serialize_identity(msp_id, &peer.identity.cert_der)
}

/// Org1's peer0 validating `identity` of Org2 with `trust`.
fn org1_verdict(pki: &Pki, trust: TrustStore, identity: &[u8]) -> Result<(), SecurityError> {
    let org1 = pki.orgs[0].security(&pki.orgs[0].peers[0], trust).unwrap();
    org1.validate_identity(identity, now())
}

#[test]
fn a_listed_member_is_refused_and_the_others_are_not() {
    let mut pki = two_orgs();
    let other = pki.issue(1, "peer1", year());
    let revoked = pki.orgs[1].peers[0].clone();
    let mut trust = pki.trust.clone();
    let pem = crl(&pki.orgs[1].ca, &[&revoked]);
    assert_eq!(trust.add_crl_pem(ORG2, pem.as_bytes()).unwrap(), 1);
    assert_eq!(trust.crl_count(ORG2), (1, 1));
    let org1 = pki.orgs[0].security(&pki.orgs[0].peers[0], trust).unwrap();
    let id = identity_of(ORG2, &revoked);
    match org1.validate_identity(&id, now()) {
        Err(SecurityError::Revoked(why)) => assert!(why.contains(ORG2), "{why}"),
        other => panic!("expected Revoked, got {other:?}"),
    }
    // Verify validates the identity first, as Fabric's does.
    let sig = pki.security(1, 0).sign(b"m").unwrap();
    assert!(matches!(
        org1.verify(&id, &sig, b"m"),
        Err(SecurityError::Revoked(_))
    ));
    // A member the CRL does not list, and a member of another MSP, are unaffected.
    org1.validate_identity(&identity_of(ORG2, &other), now())
        .unwrap();
    org1.validate_identity(&pki.security(0, 1).own_identity(), now())
        .unwrap();
}

#[test]
fn a_crl_applies_only_to_the_msp_it_is_given_for() {
    let pki = two_orgs();
    let revoked = pki.orgs[1].peers[0].clone();
    // Org2's CA revokes Org2's peer, but the CRL is configured for Org1: Fabric keeps CRLs
    // per MSP and looks only at those of the MSP validating the identity.
    let trust = revoking(&pki.trust, ORG1, &pki.orgs[1].ca, &[&revoked]);
    org1_verdict(&pki, trust, &identity_of(ORG2, &revoked)).unwrap();
}

#[test]
fn a_crl_whose_signature_does_not_verify_is_skipped_as_fabric_skips_it() {
    let pki = two_orgs();
    let revoked = pki.orgs[1].peers[0].clone();
    // Org1's CA signs a CRL that names Org2's CA (its key identifier) as issuer.
    let ders = [revoked.identity.cert_der.as_slice()];
    let forged = pki.orgs[0]
        .ca
        .revocation_list_naming(&pki.orgs[1].ca, &ders, now())
        .unwrap();
    let mut trust = pki.trust.clone();
    trust.add_crl_pem(ORG2, forged.as_bytes()).unwrap();
    org1_verdict(&pki, trust.clone(), &identity_of(ORG2, &revoked)).unwrap();
    // A CRL from the right CA, added beside the forged one, still revokes.
    let trust = revoking(&trust, ORG2, &pki.orgs[1].ca, &[&revoked]);
    assert!(matches!(
        org1_verdict(&pki, trust, &identity_of(ORG2, &revoked)),
        Err(SecurityError::Revoked(_))
    ));
}

#[test]
fn a_crl_of_another_ca_of_the_msp_does_not_revoke_its_serials() {
    let mut pki = two_orgs();
    let revoked = pki.orgs[1].peers[0].clone();
    // A second root of Org2 whose CRL lists the same serial: it names its own CA, not the
    // one that issued the certificate, so Fabric does not apply it.
    let second = root_ca("second.org2.example.com", &mut pki.rng);
    let mut trust = pki.trust.clone();
    trust
        .add_ca_pem(ORG2, second.cert_pem().as_bytes())
        .unwrap();
    let trust = revoking(&trust, ORG2, &second, &[&revoked]);
    org1_verdict(&pki, trust, &identity_of(ORG2, &revoked)).unwrap();
}

#[test]
fn a_revoked_intermediate_refuses_what_it_issued() {
    let (root, inter, leaf) = intermediate_chain("org3.example.com", &mut rng(11));
    let mut trust = TrustStore::new();
    trust
        .add_ca_pem("Org3MSP", root.cert_pem().as_bytes())
        .unwrap();
    trust
        .add_intermediate_pem("Org3MSP", inter.cert_pem().as_bytes())
        .unwrap();
    let pki = two_orgs();
    let own = &pki.orgs[0];
    let org1 = |t: TrustStore| {
        let mut t = t;
        own.add_to_trust(&mut t).unwrap();
        own.security(&own.peers[0], t).unwrap()
    };
    let id = serialize_identity("Org3MSP", &leaf.cert_der);
    org1(trust.clone()).validate_identity(&id, now()).unwrap();

    // The intermediate's own CRL revokes the member.
    let mut by_inter = trust.clone();
    let pem = inter.revocation_list(&[&leaf.cert_der], now()).unwrap();
    by_inter.add_crl_pem("Org3MSP", pem.as_bytes()).unwrap();
    match org1(by_inter).validate_identity(&id, now()) {
        Err(SecurityError::Revoked(why)) => assert!(!why.contains("intermediate"), "{why}"),
        other => panic!("expected Revoked, got {other:?}"),
    }

    // The root's CRL revokes the intermediate, and with it every member it issued.
    let mut by_root = trust;
    let pem = root.revocation_list(&[inter.cert_der()], now()).unwrap();
    by_root.add_crl_pem("Org3MSP", pem.as_bytes()).unwrap();
    match org1(by_root).validate_identity(&id, now()) {
        Err(SecurityError::Revoked(why)) => assert!(why.contains("intermediate"), "{why}"),
        other => panic!("expected Revoked, got {other:?}"),
    }
}

#[test]
fn a_revoked_own_identity_stops_the_node_at_start() {
    let pki = two_orgs();
    let me = pki.orgs[1].peers[0].clone();
    let trust = revoking(&pki.trust, ORG2, &pki.orgs[1].ca, &[&me]);
    match pki.orgs[1].security(&me, trust) {
        Err(LoadError::OwnIdentity {
            error: SecurityError::Revoked(_),
            ..
        }) => {}
        other => panic!("expected OwnIdentity(Revoked), got {other:?}"),
    }
}

/// `pem`'s one CRL, changed by `edit` and encoded again (its signature no longer matches,
/// which loading does not get as far as checking).
fn edited_crl(pem: &str, edit: impl FnOnce(&mut CertificateList)) -> String {
    let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
    let mut crl = CertificateList::from_der(&der).unwrap();
    edit(&mut crl);
    pem_rfc7468::encode_string(
        "X509 CRL",
        pem_rfc7468::LineEnding::LF,
        &crl.to_der().unwrap(),
    )
    .unwrap()
}

fn crl_refusal(pem: &str) -> String {
    match TrustStore::new().add_crl_pem(ORG2, pem.as_bytes()) {
        Err(e @ LoadError::Crl { .. }) => e.to_string(),
        other => panic!("expected a CRL error, got {other:?}"),
    }
}

#[test]
fn loading_refuses_crls_that_could_never_revoke() {
    let pki = two_orgs();
    let good = crl(&pki.orgs[1].ca, &[&pki.orgs[1].peers[0]]);
    let no_aki = edited_crl(&good, |c| c.tbs_cert_list.crl_extensions = None);
    let refusal = crl_refusal(&no_aki);
    assert!(refusal.contains("no authorityKeyIdentifier"), "{refusal}");
    // openssl's CRLs lack one unless asked: the refusal says how (a day-2 trial).
    assert!(
        refusal.contains("crl_extensions = authorityKeyIdentifier=keyid:always"),
        "{refusal}"
    );
    let rsa = edited_crl(&good, |c| {
        c.signature_algorithm.oid = der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    });
    assert!(crl_refusal(&rsa).contains("1.2.840.113549.1.1.11"));
    let bad_sig = edited_crl(&good, |c| {
        c.signature = der::asn1::BitString::from_bytes(&[0x30, 0x03, 0x02, 0x01, 0x00]).unwrap();
    });
    assert!(crl_refusal(&bad_sig).contains("signature"));
    // Either of r and s zero (Fabric cannot re-encode such a signature).
    for sig in [
        [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01],
        [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00],
    ] {
        let zero = edited_crl(&good, |c| {
            c.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
        });
        assert!(crl_refusal(&zero).contains("zero r or s"), "{sig:02x?}");
    }
    let garbage = pem_rfc7468::encode_string(
        "X509 CRL",
        pem_rfc7468::LineEnding::LF,
        b"\x30\x03\x02\x01\x01",
    )
    .unwrap();
    assert!(crl_refusal(&garbage).contains("not a version 2 X.509 CRL"));
    // A certificate where a CRL belongs is named, not skipped.
    let cert = pki.orgs[1].ca.cert_pem();
    match TrustStore::new().add_crl_pem(ORG2, cert.as_bytes()) {
        Err(e @ LoadError::Pem { .. }) => assert!(e.to_string().contains("CERTIFICATE"), "{e}"),
        other => panic!("expected a PEM error, got {other:?}"),
    }
}

#[test]
fn a_ca_without_a_subject_key_identifier_is_refused_as_fabric_refuses_it() {
    let pki = two_orgs();
    let mut cert = Certificate::from_der(pki.orgs[1].ca.cert_der()).unwrap();
    let ski = der::oid::ObjectIdentifier::new_unwrap("2.5.29.14");
    if let Some(exts) = cert.tbs_certificate.extensions.as_mut() {
        exts.retain(|e| e.extn_id != ski);
    }
    let pem = fabric_gossip_msp::certificate_pem(&cert.to_der().unwrap());
    match TrustStore::new().add_ca_pem(ORG2, pem.as_bytes()) {
        Err(e @ LoadError::Certificate { .. }) => {
            assert!(e.to_string().contains("subjectKeyIdentifier"), "{e}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

/// A scratch directory removed when the test ends.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_msp_folder_brings_its_crls() {
    let dir = std::env::temp_dir().join(format!("fabric-gossip-msp-{}-crls", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Scratch(dir);
    let mut rng = rng(5);
    let specs = [
        OrgSpec::new(ORG1, "org1.example.com", 1),
        OrgSpec::new(ORG2, "org2.example.com", 2),
    ];
    let orgs = dev::generate_in_memory(&specs, year(), &mut rng).unwrap();
    let layout = dev::write_orgs(&s.0, &orgs).unwrap();
    let org2 = &layout.orgs[1];
    let crls = org2.msp_dir.join("crls");
    std::fs::create_dir_all(&crls).unwrap();
    std::fs::write(crls.join("crl.pem"), crl(&orgs[1].ca, &[&orgs[1].peers[0]])).unwrap();

    let mut trust = TrustStore::new();
    trust.add_msp_dir(ORG2, &org2.msp_dir).unwrap();
    assert_eq!(trust.crl_count(ORG2), (1, 1));
    let org1 = MspSecurity::from_msp_dir(&layout.orgs[0].peers[0].msp_dir, ORG1, trust).unwrap();
    let id = |p: usize| serialize_identity(ORG2, &orgs[1].peers[p].identity.cert_der);
    assert!(matches!(
        org1.validate_identity(&id(0), now()),
        Err(SecurityError::Revoked(_))
    ));
    org1.validate_identity(&id(1), now()).unwrap();

    // The revoked peer's own MSP folder does not hold the CRL; given it, the peer cannot
    // start.
    let own = &org2.peers[0].msp_dir;
    let mut with_crl = TrustStore::new();
    with_crl.add_msp_dir(ORG2, &org2.msp_dir).unwrap();
    assert!(matches!(
        MspSecurity::from_msp_dir(own, ORG2, with_crl),
        Err(LoadError::OwnIdentity {
            error: SecurityError::Revoked(_),
            ..
        })
    ));
}

/// The CRLs of `fixtures/crl/` (one made by Go's x509, one by rcgen) give the verdicts
/// Fabric v2.4.9's MSP gave on them (see the README there).
#[test]
fn fabric_s_verdicts_on_crls_made_by_go_and_by_rcgen() {
    let fixture = |name: &str| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/crl/");
        std::fs::read(format!("{path}{name}")).unwrap()
    };
    // 2026-06-01: within the certificates' validity.
    let at = fabric_gossip_core::Instant::from_unix_secs(1_780_272_000);
    let pki = two_orgs();
    let peer = |name: &str| fabric_gossip_msp::serialize_identity_pem(ORG2, &fixture(name));
    for (crl, revoked, valid) in [
        ("go-crl-revoking-peer1.pem", "peer1.pem", "peer0.pem"),
        ("rcgen-crl-revoking-peer0.pem", "peer0.pem", "peer1.pem"),
    ] {
        let mut trust = pki.trust.clone();
        trust
            .add_ca_pem("Org2MSP", &fixture("org2-ca.pem"))
            .unwrap();
        trust.add_crl_pem("Org2MSP", &fixture(crl)).unwrap();
        let org1 = pki.orgs[0].security(&pki.orgs[0].peers[0], trust).unwrap();
        // The refusal names the serial number as `openssl x509 -serial` shows it.
        let serial = match revoked {
            "peer0.pem" => "49fbb00866f41834a0da8888138772f0",
            _ => "43265d6b0f736ae6660dad6d8b63bd9a",
        };
        match org1.validate_identity(&peer(revoked), at) {
            Err(SecurityError::Revoked(why)) => assert!(why.contains(serial), "{why}"),
            other => panic!("{crl} revokes {revoked}, got {other:?}"),
        }
        org1.validate_identity(&peer(valid), at)
            .unwrap_or_else(|e| panic!("{crl} leaves {valid} valid: {e}"));
    }
}
