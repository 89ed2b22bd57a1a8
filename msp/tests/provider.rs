//! The provider on its own: signing, verification, validation and each refusal's error.
use crate::common;
use bytes::Bytes;
use common::pki::*;
use core::time::Duration;
use fabric_gossip_core::proto::msp::SerializedIdentity;
use fabric_gossip_core::{Instant, PkiId, Security, SecurityError};
use fabric_gossip_msp::dev::{self, Curve, OrgSpec, Usage, Validity};
use fabric_gossip_msp::{MspSecurity, TrustStore, pki_id, serialize_identity};
use prost::Message;
use sha2::Digest;

const MSG: &[u8] = b"ConnEstablish payload bytes";

/// Org1's peer0 (`a`) and Org2's peer0 (`b`) of [`two_orgs`], and `a`'s signature of
/// [`MSG`]: where the signature tests start.
fn a_signs_b_checks() -> (MspSecurity, MspSecurity, Bytes) {
    let pki = two_orgs();
    let (a, b) = (pki.security(0, 0), pki.security(1, 0));
    let sig = a.sign(MSG).unwrap();
    (a, b, sig)
}

#[test]
fn sign_verify_validate_across_orgs() {
    let (a, b, sig) = a_signs_b_checks();
    b.verify(&a.own_identity(), &sig, MSG).unwrap();
    a.verify(&a.own_identity(), &sig, MSG).unwrap();
    b.validate_identity(&a.own_identity(), now()).unwrap();
    a.validate_identity(&b.own_identity(), now()).unwrap();
    // Signatures are low-S and DER: their high-S twin differs.
    assert_ne!(high_s_twin(&sig), sig.to_vec());
}

#[test]
fn aws_lc_signs_randomly_and_deterministic_mode_replays() {
    let pki = two_orgs();
    let b = pki.security(1, 0);
    // AWS-LC's nonces are random: the same message signs differently, and both verify.
    let fast = pki.security(0, 0);
    assert!(!fast.signs_deterministically());
    let (s1, s2) = (fast.sign(MSG).unwrap(), fast.sign(MSG).unwrap());
    assert_ne!(s1, s2);
    b.verify(&fast.own_identity(), &s1, MSG).unwrap();
    b.verify(&fast.own_identity(), &s2, MSG).unwrap();
    // RFC 6979, so a seeded simulation replays exactly; the pure-Rust mode signs the same.
    let det = pki.security(0, 0).with_deterministic_signatures();
    let pure = pki.security(0, 0).with_pure_rust_ecdsa();
    assert!(det.signs_deterministically() && pure.signs_deterministically());
    let sig = det.sign(MSG).unwrap();
    assert_eq!(sig, det.sign(MSG).unwrap());
    assert_eq!(sig, pure.sign(MSG).unwrap());
    // And everyone verifies everyone, whatever mode signed or verifies.
    let verifiers = [
        pki.security(1, 0),
        pki.security(1, 0).with_deterministic_signatures(),
        pki.security(1, 0).with_pure_rust_ecdsa(),
    ];
    for v in &verifiers {
        for s in [&s1, &s2, &sig] {
            v.verify(&fast.own_identity(), s, MSG).unwrap();
        }
    }
}

/// Each refusal comes out the same whichever implementation verifies.
#[test]
fn every_ecdsa_mode_refuses_alike() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let other = pki.security(1, 0);
    let id = a.own_identity();
    let sig = a.sign(MSG).unwrap().to_vec();
    let by_other = other.sign(MSG).unwrap().to_vec();
    let cases: [(&str, Vec<u8>, &[u8]); 6] = [
        ("genuine", sig.clone(), MSG),
        ("tampered", tamper(&sig), MSG),
        ("high-S", high_s_twin(&sig), MSG),
        ("forged high-S", high_s_twin(&tamper(&sig)), MSG),
        ("other key", by_other, MSG),
        ("truncated", sig[..sig.len() - 2].to_vec(), MSG),
    ];
    let modes = [
        pki.security(1, 0),
        pki.security(1, 0).with_deterministic_signatures(),
        pki.security(1, 0).with_pure_rust_ecdsa(),
    ];
    for (what, s, m) in &cases {
        let got: Vec<String> = modes
            .iter()
            .map(|v| match v.verify(&id, s, m) {
                Ok(()) => "Ok".to_owned(),
                Err(e) => format!("{e:?}").split('(').next().unwrap_or("").to_owned(),
            })
            .collect();
        let want = match *what {
            "genuine" => "Ok",
            "high-S" => "HighS",
            "truncated" => "MalformedSignature",
            _ => "BadSignature",
        };
        assert!(got.iter().all(|g| g == want), "{what}: {got:?}");
    }
}

#[test]
fn pki_id_is_sha256_of_mspid_and_id_bytes() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let sid = SerializedIdentity::decode(a.own_identity()).unwrap();
    assert_eq!(sid.mspid, ORG1);
    assert!(sid.id_bytes.starts_with(b"-----BEGIN CERTIFICATE-----\n"));
    assert!(sid.id_bytes.ends_with(b"-----END CERTIFICATE-----\n"));
    let mut h = sha2::Sha256::new();
    h.update(ORG1.as_bytes());
    h.update(&sid.id_bytes);
    let expected = PkiId::from(h.finalize().to_vec());
    assert_eq!(a.pki_id_of(&a.own_identity()), expected);
    assert_eq!(*a.pki_id(), expected);
    assert_eq!(pki_id(ORG1, &sid.id_bytes), expected);
    // Another provider computes the same ID for it.
    assert_eq!(pki.security(1, 0).pki_id_of(&a.own_identity()), expected);
    // Garbage maps to the empty ID, which never matches a claimed one.
    assert!(a.pki_id_of(b"\xff\xff garbage").is_empty());
}

#[test]
fn organization_is_the_msp_id_of_trusted_msps_only() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let b = pki.security(1, 0);
    assert_eq!(
        a.organization_of(&b.own_identity()),
        Some(Bytes::from(ORG2))
    );
    assert_eq!(
        a.organization_of(&a.own_identity()),
        Some(Bytes::from(ORG1))
    );
    // A provider that trusts only Org1 cannot classify Org2's peer.
    let mut only1 = TrustStore::new();
    pki.orgs[0].add_to_trust(&mut only1).unwrap();
    let a1 = pki.orgs[0].security(&pki.orgs[0].peers[0], only1).unwrap();
    assert_eq!(a1.organization_of(&b.own_identity()), None);
    assert_eq!(a1.organization_of(b"garbage"), None);
}

/// An identity naming an MSP of 64,500 control characters: the refusal names it cut and
/// escaped (the error goes to the log, the node's events and the status sent back; it had
/// echoed the whole ID, about 390 KB of output a handshake).
#[test]
fn an_unknown_msp_is_named_briefly_in_the_refusal() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let real = SerializedIdentity::decode(pki.security(1, 0).own_identity()).unwrap();
    let forged = SerializedIdentity {
        mspid: "\u{1}".repeat(64_500),
        id_bytes: real.id_bytes,
    }
    .encode_to_vec();
    let err = a
        .validate_identity(
            &forged,
            fabric_gossip_core::Instant::from_unix_secs(1_700_000_000),
        )
        .unwrap_err();
    assert!(matches!(err, SecurityError::UnknownMsp(_)), "{err}");
    let text = err.to_string();
    assert!(text.len() < 500, "{} bytes", text.len());
    assert!(text.contains("(64500 bytes)"), "{text}");
    assert!(!text.contains('\u{1}'));
}

#[test]
fn the_claimed_organization_is_read_without_judging_the_identity() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let b = pki.security(1, 0);
    // Agrees with `organization_of` on valid identities.
    for id in [a.own_identity(), b.own_identity()] {
        assert_eq!(a.claimed_organization(&id), a.organization_of(&id));
    }
    // Org2's name on a certificate that is no certificate at all: claimed, not judged, and
    // nothing parsed (the cache neither consulted nor filled).
    let forged = SerializedIdentity {
        mspid: ORG2.into(),
        id_bytes: b"-----BEGIN CERTIFICATE-----\nforged\n-----END CERTIFICATE-----\n"[..].into(),
    }
    .encode_to_vec();
    let before = a.cache_stats();
    assert_eq!(a.claimed_organization(&forged), Some(Bytes::from(ORG2)));
    let after = a.cache_stats();
    assert_eq!((after.hits, after.misses), (before.hits, before.misses));
    assert_eq!(a.organization_of(&forged), None);
    // An MSP we do not trust, or bytes that are no identity: none.
    let mut only1 = TrustStore::new();
    pki.orgs[0].add_to_trust(&mut only1).unwrap();
    let a1 = pki.orgs[0].security(&pki.orgs[0].peers[0], only1).unwrap();
    assert_eq!(a1.claimed_organization(&b.own_identity()), None);
    assert_eq!(a.claimed_organization(b"\xff\xff garbage"), None);
}

#[test]
fn tampered_signature_is_bad_signature() {
    let (a, b, sig) = a_signs_b_checks();
    assert!(matches!(
        b.verify(&a.own_identity(), &tamper(&sig), MSG),
        Err(SecurityError::BadSignature(_))
    ));
    // A genuine signature over another message, or by another key, is refused the same way.
    assert!(matches!(
        b.verify(&a.own_identity(), &sig, b"other message"),
        Err(SecurityError::BadSignature(_))
    ));
    let by_b = b.sign(MSG).unwrap();
    assert!(matches!(
        b.verify(&a.own_identity(), &by_b, MSG),
        Err(SecurityError::BadSignature(_))
    ));
}

#[test]
fn high_s_signature_is_refused_as_high_s() {
    let (a, b, sig) = a_signs_b_checks();
    let high = high_s_twin(&sig);
    // The twin is a mathematically valid signature...
    let vk = p256_key_of(&a);
    use ecdsa::signature::hazmat::PrehashVerifier;
    let digest = sha2::Sha256::digest(MSG);
    let parsed = p256::ecdsa::Signature::from_der(&high).unwrap();
    vk.verify_prehash(&digest, &parsed).unwrap();
    // ...that Fabric's rule refuses.
    assert_eq!(
        b.verify(&a.own_identity(), &high, MSG),
        Err(SecurityError::HighS)
    );
    // A forged high-S signature is a bad signature, not "high-S".
    assert!(matches!(
        b.verify(&a.own_identity(), &high_s_twin(&tamper(&sig)), MSG),
        Err(SecurityError::BadSignature(_))
    ));
}

fn p256_key_of(s: &MspSecurity) -> p256::ecdsa::VerifyingKey {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(s.certificate_der()).unwrap();
    let point = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap()
}

#[test]
fn malformed_signatures_are_malformed() {
    let (a, b, sig) = a_signs_b_checks();
    let sig = sig.to_vec();
    let id = a.own_identity();
    let mut trailing = sig.clone();
    trailing.push(0);
    let mut bad_len = sig.clone();
    bad_len[1] = bad_len[1].wrapping_add(1);
    let raw: Vec<u8> = p256::ecdsa::Signature::from_der(&sig)
        .unwrap()
        .to_bytes()
        .to_vec();
    let zero_r = [0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01];
    for (what, bad) in [
        ("empty", vec![]),
        ("truncated", sig[..sig.len() - 1].to_vec()),
        ("trailing byte", trailing),
        ("wrong length", bad_len),
        ("raw r||s instead of DER", raw),
        ("r = 0", zero_r.to_vec()),
    ] {
        assert!(
            matches!(
                b.verify(&id, &bad, MSG),
                Err(SecurityError::MalformedSignature(_))
            ),
            "{what}: {:?}",
            b.verify(&id, &bad, MSG)
        );
    }
}

#[test]
fn certificate_from_another_msps_ca_is_untrusted() {
    let pki = two_orgs();
    let b = pki.security(1, 0);
    // Org2's peer certificate, claimed as a member of Org1.
    let claim = serialize_identity(ORG1, &pki.orgs[1].peers[0].identity.cert_der);
    match b.validate_identity(&claim, now()) {
        Err(SecurityError::UntrustedCertificate(why)) => {
            assert!(why.contains(ORG2), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Verification refuses it as well, even with a genuine signature by that key.
    let sig = b.sign(MSG).unwrap();
    assert!(matches!(
        pki.security(0, 0).verify(&claim, &sig, MSG),
        Err(SecurityError::UntrustedCertificate(_))
    ));
    // A certificate from a CA nobody trusts, though it has the name of Org2's CA.
    let mut rng = rng(99);
    let rogue_ca = root_ca("org2.example.com", &mut rng);
    let cert = rogue_ca
        .issue(
            "peer0.org1.example.com",
            Usage::Identity,
            &[],
            year(),
            &mut rng,
        )
        .unwrap();
    // Org2's CA did not sign it: no other MSP is named for it.
    match b.validate_identity(&serialize_identity(ORG1, &cert.cert_der), now()) {
        Err(SecurityError::UntrustedCertificate(why)) => {
            assert!(why.contains("not issued by any CA of Org1MSP"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A CA's own certificate is not a member identity.
    assert!(matches!(
        b.validate_identity(&serialize_identity(ORG1, pki.orgs[0].ca.cert_der()), now()),
        Err(SecurityError::UntrustedCertificate(_))
    ));
}

#[test]
fn unknown_msp_is_unknown() {
    let pki = two_orgs();
    let b = pki.security(1, 0);
    let claim = serialize_identity("Org3MSP", &pki.orgs[0].peers[0].identity.cert_der);
    assert_eq!(
        b.validate_identity(&claim, now()),
        Err(SecurityError::UnknownMsp("Org3MSP".into()))
    );
}

#[test]
fn expired_certificates_are_expired_and_not_yet_valid_ones_accepted() {
    let mut pki = two_orgs();
    let b = pki.security(1, 0);
    let old = pki.issue_until(0, "old", Instant::from_unix_secs(1_699_999_000));
    let id = serialize_identity(ORG1, &old.identity.cert_der);
    let r = b.validate_identity(&id, now());
    assert!(matches!(r, Err(SecurityError::Expired(_))), "{r:?}");
    // Its text gives the date, as an operator reads a certificate's, and how long ago.
    let r = b.validate_identity(&id, Instant::from_unix_secs(1_699_999_000 + 150));
    assert_eq!(
        r.unwrap_err().to_string(),
        "certificate not valid now: expired on 2023-11-14T21:56:40Z, 2 min ago"
    );
    // It was fine while it lasted, and its expiration is just after notAfter.
    b.validate_identity(&id, Instant::from_unix_secs(1_699_999_000))
        .unwrap();
    assert_eq!(
        b.expiration(&id).unwrap(),
        Some(Instant::from_unix_secs(1_699_999_000) + Duration::from_nanos(1))
    );
    // Fabric accepts a certificate before its notBefore (its MSP checks the chain at
    // notBefore + 1 s, its identity mapper only notAfter): a peer enrolled by a CA whose
    // clock runs ahead of ours is still a member, and its signatures verify.
    let future = pki.issue(0, "future", Validity::starting(now() + DAY, DAY));
    let id = serialize_identity(ORG1, &future.identity.cert_der);
    b.validate_identity(&id, now()).unwrap();
    let early = pki.security_for(0, &future);
    let sig = early.sign(MSG).unwrap();
    b.verify(&early.own_identity(), &sig, MSG).unwrap();
}

/// With the wall clock moved from the node's time (`WallClockOffset`, which the tonic
/// driver's host keeps), validity is judged at the wall clock's time and an expiry is
/// given in the node's time, as far from `NotAfter` as the clock moved: a node started
/// with its clock two days ahead, then corrected, no longer refuses a certificate valid
/// for another day, and one started behind no longer takes an expired one. A certificate
/// that never expires still never does.
#[test]
fn validity_is_judged_by_the_wall_clock_once_the_offset_is_set() {
    let mut pki = two_orgs();
    let b = pki.security(1, 0);
    let wall = b.wall_clock_offset();
    let not_after = now() + DAY;
    let peer = pki.issue_until(0, "peer", not_after);
    let id = serialize_identity(ORG1, &peer.identity.cert_der);
    let expiry = not_after + Duration::from_nanos(1);
    // The node's time runs two days ahead of the wall clock (started ahead, corrected).
    let node_now = now() + 2 * DAY;
    let r = b.validate_identity(&id, node_now);
    assert!(matches!(r, Err(SecurityError::Expired(_))), "{r:?}");
    // What a driver reports through the trait (the tonic driver, every second).
    b.wall_clock(node_now, now());
    assert_eq!(wall.nanos(), -2 * 86_400 * 1_000_000_000);
    b.validate_identity(&id, node_now).unwrap();
    assert_eq!(b.expiration(&id).unwrap(), Some(expiry + 2 * DAY));
    // The node's time two days behind (started behind, the clock stepped forward).
    let node_now = now() - DAY;
    wall.set(node_now, now() + DAY + Duration::from_secs(60));
    let r = b.validate_identity(&id, node_now);
    assert_eq!(
        r.unwrap_err().to_string(),
        "certificate not valid now: expired on 2023-11-15T22:13:20Z, 1 min ago"
    );
    assert_eq!(
        b.expiration(&id).unwrap(),
        Some(expiry - 2 * DAY - Duration::from_secs(60))
    );
    // Never stays never.
    let forever = pki.issue_until(0, "forever", Instant::MAX);
    let id = serialize_identity(ORG1, &forever.identity.cert_der);
    assert_eq!(b.expiration(&id).unwrap(), None);
    b.validate_identity(&id, node_now).unwrap();
    // The node's own certificate's date stays its wall-clock date.
    assert_eq!(b.own_expiration(), pki.security(1, 0).own_expiration());
}

/// A time moves between the node's scale and the wall clock by the signed offset,
/// saturating at both ends; never stays never.
#[test]
fn times_move_between_the_node_s_scale_and_the_wall_clock() {
    let o = fabric_gossip_msp::WallClockOffset::default();
    let t = Instant::from_unix_secs(1_000);
    // The wall clock 2 s ahead of the node's time.
    o.set(t, t + Duration::from_secs(2));
    assert_eq!(o.to_wall(t), Instant::from_unix_secs(1_002));
    assert_eq!(o.to_node(t), Instant::from_unix_secs(998));
    // 2,000 s ahead: the node's time saturates at the epoch.
    o.set(t, t + Duration::from_secs(2_000));
    assert_eq!(o.to_node(t), Instant::EPOCH);
    assert_eq!(o.to_node(Instant::MAX), Instant::MAX);
    // 5 ns ahead at the end of the scale: saturates at never.
    o.set(t, t + Duration::from_nanos(5));
    assert_eq!(
        o.to_wall(Instant::from_unix_nanos(u64::MAX - 1)),
        Instant::MAX
    );
}

/// RFC 5280's "no well-defined expiration date", 99991231235959Z, lies past what the core's
/// `Instant` holds (2554): such an identity never expires, rather than expiring in 2554, and
/// tools read its true date.
#[test]
fn certificate_without_expiration_never_expires() {
    let mut pki = two_orgs();
    let b = pki.security(1, 0);
    let forever = pki.issue_until(0, "forever", Instant::MAX);
    let id = serialize_identity(ORG1, &forever.identity.cert_der);
    b.validate_identity(&id, now()).unwrap();
    b.validate_identity(&id, Instant::MAX).unwrap();
    assert_eq!(b.expiration(&id).unwrap(), None);
    assert_eq!(pki.security_for(0, &forever).own_expiration(), None);
    assert_eq!(
        fabric_gossip_msp::certificate_not_after(&forever.identity.cert_der, "forever").unwrap(),
        std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
    );
    // A certificate expiring in 2554 expires like any other.
    let late = Instant::from_unix_secs(18_446_744_000);
    let last = pki.issue_until(0, "last", late);
    let id = serialize_identity(ORG1, &last.identity.cert_der);
    assert_eq!(
        b.expiration(&id).unwrap(),
        Some(late + Duration::from_nanos(1))
    );
    assert_eq!(
        pki.security_for(0, &last).own_expiration(),
        Some(late + Duration::from_nanos(1))
    );
    assert!(matches!(
        b.validate_identity(&id, Instant::MAX),
        Err(SecurityError::Expired(_))
    ));
}

#[test]
fn certificate_issued_before_its_ca_was_valid_is_untrusted() {
    // Fabric judges CA validity at the member's notBefore + 1 s.
    let mut pki = two_orgs();
    let b = pki.security(1, 0);
    let early = pki.issue(
        0,
        "early",
        Validity {
            not_before: Instant::from_unix_secs(1_600_000_000),
            not_after: now() + DAY,
        },
    );
    let r = b.validate_identity(&serialize_identity(ORG1, &early.identity.cert_der), now());
    assert!(
        matches!(&r, Err(SecurityError::UntrustedCertificate(why))
            if why.contains("root CA of Org1MSP that issued the chain was not valid")),
        "{r:?}"
    );
}

/// Fabric's instant for the CA's validity is the member's notBefore + 1 s exactly, and Go's
/// bounds are inclusive: a second either way at either end of the CA's validity decides
/// whether a member issued near the CA's start or renewal is let in.
#[test]
fn a_ca_is_judged_one_second_after_its_member_s_not_before_bounds_included() {
    let mut pki = two_orgs();
    let b = pki.security(1, 0);
    let (ca, second) = (year(), Duration::from_secs(1));
    for (not_before, trusted) in [
        (ca.not_before - second, true),
        (ca.not_before - 2 * second, false),
        (ca.not_after - second, true),
        (ca.not_after, false),
    ] {
        let validity = Validity {
            not_before,
            not_after: ca.not_after + DAY,
        };
        let member = pki.issue(0, "edge", validity);
        let r = b.validate_identity(&serialize_identity(ORG1, &member.identity.cert_der), now());
        assert_eq!(r.is_ok(), trusted, "notBefore {not_before}: {r:?}");
    }
}

/// An Org1 identity whose certificate, genuinely signed by Org1's CA, carries `point` as
/// its public key bytes, whatever they are.
fn org1_identity_with_point(pki: &Pki, host: &str, point: Vec<u8>, seed: u64) -> Bytes {
    let cert = pki.orgs[0]
        .ca
        .certify_raw_public_key(
            &format!("{host}.org1.example.com"),
            point,
            year(),
            &mut rng(seed),
        )
        .unwrap();
    serialize_identity(ORG1, &cert)
}

#[test]
fn key_not_on_the_curve_is_a_bad_key() {
    let pki = two_orgs();
    let b = pki.security(1, 0);
    // A genuine P-256 point with its y coordinate changed is not on the curve.
    let mut point = p256_key_of(&pki.security(0, 0))
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let last = point.len() - 1;
    point[last] ^= 0x01;
    assert!(p256::PublicKey::from_sec1_bytes(&point).is_err());
    let id = org1_identity_with_point(&pki, "offcurve", point, 5);
    assert!(matches!(
        b.validate_identity(&id, now()),
        Err(SecurityError::BadKey(_))
    ));
    assert!(matches!(b.expiration(&id), Err(SecurityError::BadKey(_))));
}

#[test]
fn key_in_compressed_form_is_a_bad_key() {
    // Fabric reads certificates with Go's x509, which takes only uncompressed points
    // ("x509: failed to unmarshal elliptic curve point"); the same key compressed is a
    // point RustCrypto would read, so the refusal is the provider's own.
    let pki = two_orgs();
    let b = pki.security(1, 0);
    let point = p256_key_of(&pki.security(0, 0))
        .to_encoded_point(true)
        .as_bytes()
        .to_vec();
    assert!(p256::PublicKey::from_sec1_bytes(&point).is_ok());
    let id = org1_identity_with_point(&pki, "compressed", point, 6);
    let r = b.validate_identity(&id, now());
    assert!(
        matches!(&r, Err(SecurityError::BadKey(e)) if e.contains("uncompressed")),
        "{r:?}"
    );
    assert!(matches!(
        b.verify(&id, b"sig", MSG),
        Err(SecurityError::BadKey(_))
    ));
}

#[test]
fn malformed_identities_are_malformed() {
    let pki = two_orgs();
    let b = pki.security(1, 0);
    let pem = pki.orgs[0].peers[0].identity.cert_pem();
    let two = format!("{pem}{pem}");
    let trailing = format!("{pem}\n");
    let leading = format!("junk\n{pem}");
    let key_block = pki.orgs[0].peers[0].identity.key_pem.clone();
    let cases: Vec<(&str, Bytes)> = vec![
        ("not protobuf", Bytes::from_static(b"\xff\xff\xff")),
        (
            "empty mspid",
            fabric_gossip_msp::serialize_identity_pem("", pem.as_bytes()),
        ),
        (
            "not PEM",
            fabric_gossip_msp::serialize_identity_pem(ORG1, b"hello"),
        ),
        (
            "a second newline after the block",
            fabric_gossip_msp::serialize_identity_pem(ORG1, trailing.as_bytes()),
        ),
        (
            "text before the block",
            fabric_gossip_msp::serialize_identity_pem(ORG1, leading.as_bytes()),
        ),
        (
            "two certificates",
            fabric_gossip_msp::serialize_identity_pem(ORG1, two.as_bytes()),
        ),
        (
            "a key, not a certificate",
            fabric_gossip_msp::serialize_identity_pem(ORG1, key_block.as_bytes()),
        ),
        (
            "PEM of garbage",
            fabric_gossip_msp::serialize_identity_pem(
                ORG1,
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
        ),
    ];
    for (what, id) in cases {
        let r = b.validate_identity(&id, now());
        assert!(
            matches!(r, Err(SecurityError::MalformedIdentity(_))),
            "{what}: {r:?}"
        );
        let e = b.expiration(&id);
        assert!(
            matches!(e, Err(SecurityError::MalformedIdentity(_))),
            "{what}: {e:?}"
        );
    }
}

#[test]
fn p384_organization_interoperates() {
    let mut rng = rng(11);
    let orgs = dev::generate_in_memory(
        &[
            OrgSpec::new(ORG1, "org1.example.com", 1),
            OrgSpec::new("Org384MSP", "org384.example.com", 1).with_curve(Curve::P384),
        ],
        year(),
        &mut rng,
    )
    .unwrap();
    let trust = dev::trust_all(&orgs).unwrap();
    let a = orgs[0].security(&orgs[0].peers[0], trust.clone()).unwrap();
    let c = orgs[1].security(&orgs[1].peers[0], trust).unwrap();
    let sig = c.sign(MSG).unwrap();
    a.validate_identity(&c.own_identity(), now()).unwrap();
    a.verify(&c.own_identity(), &sig, MSG).unwrap();
    assert!(matches!(
        a.verify(&c.own_identity(), &tamper(&sig), MSG),
        Err(SecurityError::BadSignature(_))
    ));
    assert_eq!(
        a.verify(&c.own_identity(), &high_s_twin(&sig), MSG),
        Err(SecurityError::HighS)
    );
    c.verify(&a.own_identity(), &a.sign(MSG).unwrap(), MSG)
        .unwrap();
}

#[test]
fn intermediate_ca_chains_only_when_trusted() {
    let (root, ica, peer) = intermediate_chain("org9.example.com", &mut rng(21));
    let mut root_only = TrustStore::new();
    root_only
        .add_ca_pem("Org9MSP", root.cert_pem().as_bytes())
        .unwrap();
    let mut full = root_only.clone();
    full.add_intermediate_pem("Org9MSP", ica.cert_pem().as_bytes())
        .unwrap();
    assert_eq!(full.ca_count("Org9MSP"), (1, 1));
    // Without the intermediate the chain cannot be built; with it, it is accepted.
    assert!(matches!(
        load("Org9MSP", &peer, &peer.key_pem, root_only),
        Err(fabric_gossip_msp::LoadError::OwnIdentity { .. })
    ));
    let s = load("Org9MSP", &peer, &peer.key_pem, full).unwrap();
    s.validate_identity(&s.own_identity(), now()).unwrap();
    // An intermediate alone, without its root, is no trust anchor.
    let mut ica_only = TrustStore::new();
    ica_only
        .add_intermediate_pem("Org9MSP", ica.cert_pem().as_bytes())
        .unwrap();
    let pki = two_orgs();
    let mut t = pki.trust.clone();
    t.add_intermediate_pem("Org9MSP", ica.cert_pem().as_bytes())
        .unwrap();
    let checker = pki.orgs[0].security(&pki.orgs[0].peers[0], t).unwrap();
    assert!(matches!(
        checker.validate_identity(&s.own_identity(), now()),
        Err(SecurityError::UntrustedCertificate(_))
    ));
}

/// The verdict on a member `issuer` issues, given a store trusting `root` and
/// `intermediates` as Org9MSP's.
fn through_intermediates(
    root: &dev::DevCa,
    intermediates: &[&dev::DevCa],
    issuer: &dev::DevCa,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<(), SecurityError> {
    let mut trust = TrustStore::new();
    trust
        .add_ca_pem("Org9MSP", root.cert_pem().as_bytes())
        .unwrap();
    for ca in intermediates {
        trust
            .add_intermediate_pem("Org9MSP", ca.cert_pem().as_bytes())
            .unwrap();
    }
    let leaf = issuer
        .issue("peer0.org9.example.com", Usage::Identity, &[], year(), rng)
        .unwrap();
    trust.validate_identity(&serialize_identity("Org9MSP", &leaf.cert_der), now())
}

/// A trusted intermediate CA is a link for a member only if it has the name of the
/// member's issuer, its key signed the member, and it was valid when the member was
/// issued: a CA with its name and another key, one with its key and another name, and one
/// that had expired by then each leave the member without a chain. A CA sharing the key of
/// the member's issuer under another name is no child of that issuer either.
#[test]
fn an_intermediate_links_only_by_name_signature_and_validity() {
    let mut rng = rng(23);
    let root = root_ca("org9.example.com", &mut rng);
    let draws = rng.clone();
    let ica = root
        .intermediate("ica.org9.example.com", year(), &mut rng)
        .unwrap();
    through_intermediates(&root, &[&ica], &ica, &mut rng).unwrap();
    // The same random draws give the same key: `ica`'s key under another name.
    let twin = root
        .intermediate("twin.org9.example.com", year(), &mut draws.clone())
        .unwrap();
    // Issued under `twin`'s name, so signed with `ica`'s key too.
    let below_twin = twin
        .intermediate("ica2.org9.example.com", year(), &mut rng)
        .unwrap();
    through_intermediates(&root, &[&ica, &twin, &below_twin], &ica, &mut rng).unwrap();
    // `ica`'s name (and its root's) with other keys.
    let impostor = root_ca("org9.example.com", &mut rng)
        .intermediate("ica.org9.example.com", year(), &mut rng)
        .unwrap();
    let expired = root
        .intermediate(
            "ica.org9.example.com",
            Validity {
                not_before: year().not_before - 10 * DAY,
                not_after: year().not_before - DAY,
            },
            &mut rng,
        )
        .unwrap();
    for (what, trusted, issuer) in [
        ("another key", &ica, &impostor),
        ("another name", &twin, &ica),
        ("expired", &expired, &expired),
    ] {
        match through_intermediates(&root, &[trusted], issuer, &mut rng) {
            Err(SecurityError::UntrustedCertificate(why)) => {
                assert!(
                    why.contains("not issued by any CA of Org9MSP"),
                    "{what}: {why}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn non_ca_certificate_is_refused_as_trust_anchor() {
    let pki = two_orgs();
    let mut t = TrustStore::new();
    let err = t
        .add_ca_pem(ORG1, pki.orgs[0].peers[0].identity.cert_pem().as_bytes())
        .unwrap_err();
    assert!(
        matches!(err, fabric_gossip_msp::LoadError::NotACa { .. }),
        "{err}"
    );
}

#[test]
fn own_key_must_match_certificate() {
    let pki = two_orgs();
    let p0 = &pki.orgs[0].peers[0];
    let p1 = &pki.orgs[0].peers[1];
    let err = load(ORG1, &p0.identity, &p1.identity.key_pem, pki.trust.clone()).unwrap_err();
    assert!(
        matches!(err, fabric_gossip_msp::LoadError::KeyMismatch { .. }),
        "{err}"
    );
    // And a key that claims another MSP's certificate is refused at start-up.
    let err = load(ORG2, &p0.identity, &p0.identity.key_pem, pki.trust.clone()).unwrap_err();
    assert!(
        matches!(
            &err,
            fabric_gossip_msp::LoadError::OwnIdentity {
                error: SecurityError::UntrustedCertificate(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn repeated_verification_parses_once_and_cache_is_bounded() {
    let mut pki = two_orgs();
    let a = pki.security(0, 0);
    let b = pki.security(1, 0).with_cache_capacity(4);
    let sig = a.sign(MSG).unwrap();
    for _ in 0..100 {
        b.verify(&a.own_identity(), &sig, MSG).unwrap();
    }
    let st = b.cache_stats();
    assert_eq!(st.misses, 1, "{st:?}");
    assert_eq!(st.hits, 99, "{st:?}");
    // Refusals are cached too.
    for _ in 0..10 {
        let _ = b.validate_identity(b"garbage", now());
    }
    assert_eq!(b.cache_stats().misses, 2);
    // Many distinct identities never grow the cache past its capacity, and a hot entry
    // survives the churn (CLOCK gives it a second chance).
    for i in 0..12 {
        let p = pki.issue(0, &format!("churn{i}"), year());
        b.validate_identity(&serialize_identity(ORG1, &p.identity.cert_der), now())
            .unwrap();
        b.verify(&a.own_identity(), &sig, MSG).unwrap();
        assert!(b.cache_stats().len <= 4);
    }
    let before = b.cache_stats().misses;
    b.verify(&a.own_identity(), &sig, MSG).unwrap();
    assert_eq!(b.cache_stats().misses, before, "hot identity was evicted");
    // Capacity 0 disables caching, and results do not change.
    let c = pki.security(1, 0).with_cache_capacity(0);
    c.verify(&a.own_identity(), &sig, MSG).unwrap();
    c.verify(&a.own_identity(), &sig, MSG).unwrap();
    assert_eq!(c.cache_stats().len, 0);
    assert_eq!(c.cache_stats().misses, 2);
}

/// CLOCK eviction: a full cache evicts the oldest identity not used since it was last
/// passed over, so an identity in use outlives an older one seen once; a cache below its
/// capacity evicts nothing.
#[test]
fn a_full_cache_evicts_an_identity_seen_once_before_one_in_use() {
    let mut pki = two_orgs();
    let b = pki.security(1, 0).with_cache_capacity(2);
    let ids: Vec<Bytes> = (0..3)
        .map(|i| {
            let p = pki.issue(0, &format!("cached{i}"), year());
            serialize_identity(ORG1, &p.identity.cert_der)
        })
        .collect();
    let see = |i: usize| b.validate_identity(&ids[i], now()).unwrap();
    see(0);
    see(0);
    see(1);
    assert_eq!((b.cache_stats().len, b.cache_stats().misses), (2, 2));
    // Full: 0 is in use, so 1 makes way for 2.
    see(2);
    see(0);
    assert_eq!((b.cache_stats().len, b.cache_stats().misses), (2, 3));
    see(1);
    assert_eq!(b.cache_stats().misses, 4);
}

/// What a provider and its trust handle show of themselves: the MSP, the trusted MSPs and
/// the kind of key (not the key).
#[test]
fn debug_output_names_the_msp() {
    let pki = two_orgs();
    let a = pki.security(0, 0);
    assert_eq!(a.msp_id(), ORG1);
    let shown = format!("{a:?}");
    for part in [ORG1, ORG2, "PrivateKey(P-256)"] {
        assert!(shown.contains(part), "{part} not in {shown}");
    }
    let handle = format!("{:?}", a.trust_handle());
    assert!(
        handle.starts_with("TrustHandle") && handle.contains(ORG1),
        "{handle}"
    );
}

#[test]
fn generation_is_deterministic_for_a_seed() {
    let make = |seed| {
        dev::generate_in_memory(
            &[OrgSpec::new(ORG1, "org1.example.com", 1)],
            year(),
            &mut rng(seed),
        )
        .unwrap()
    };
    let (x, y, z) = (make(1), make(1), make(2));
    assert_eq!(
        x[0].peers[0].identity.cert_der,
        y[0].peers[0].identity.cert_der
    );
    assert_eq!(
        x[0].peers[0].identity.key_pem,
        y[0].peers[0].identity.key_pem
    );
    assert_ne!(
        x[0].peers[0].identity.cert_der,
        z[0].peers[0].identity.cert_der
    );
}

/// Extension `T` of `cert`, which must carry it.
fn extension<'a, T>(cert: &'a x509_cert::Certificate) -> T
where
    T: x509_cert::der::Decode<'a> + x509_cert::der::oid::AssociatedOid,
{
    let found = cert.tbs_certificate.get::<T>().unwrap();
    found.expect("the extension is present").1
}

#[test]
fn generated_certificates_have_fabric_shape() {
    use x509_cert::der::Decode;
    let pki = two_orgs();
    let peer = &pki.orgs[0].peers[0];
    let cert = x509_cert::Certificate::from_der(&peer.identity.cert_der).unwrap();
    let subject = cert.tbs_certificate.subject.to_string();
    assert!(subject.contains("CN=peer0.org1.example.com"), "{subject}");
    assert!(subject.contains("OU=peer"), "{subject}");
    assert!(subject.contains("O=org1.example.com"), "{subject}");
    // Issued low-S, as Fabric's tools sign.
    let sig = p256::ecdsa::Signature::from_der(cert.signature.raw_bytes()).unwrap();
    assert!(sig.normalize_s().is_none());
    let tls = x509_cert::Certificate::from_der(&peer.tls.cert_der).unwrap();
    let bc: x509_cert::ext::pkix::BasicConstraints = extension(&tls);
    assert!(!bc.ca);
    let san: x509_cert::ext::pkix::SubjectAltName = extension(&tls);
    assert_eq!(san.0.len(), 4, "{san:?}");
    // The TLS certificate chains to the TLS CA, not the identity CA.
    let mut tls_trust = TrustStore::new();
    tls_trust
        .add_ca_pem(ORG1, pki.orgs[0].tls_ca.cert_pem().as_bytes())
        .unwrap();
    let tls_sec = load(ORG1, &peer.tls, &peer.tls.key_pem, tls_trust);
    assert!(tls_sec.is_ok());
}

#[test]
fn mutated_identities_and_signatures_never_panic() {
    // Every single-byte corruption of a real identity and signature goes through every
    // provider method; each must return (usually an error), never panic.
    let pki = two_orgs();
    let a = pki.security(0, 0);
    let b = pki.security(1, 0).with_cache_capacity(16);
    let id = a.own_identity().to_vec();
    let sig = a.sign(MSG).unwrap().to_vec();
    let mut accepted = 0;
    for i in (0..id.len()).step_by(3) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut m = id.clone();
            m[i] ^= flip;
            let _ = b.pki_id_of(&m);
            let _ = b.organization_of(&m);
            let _ = b.expiration(&m);
            if b.validate_identity(&m, now()).is_ok() && b.verify(&m, &sig, MSG).is_ok() {
                accepted += 1;
            }
        }
        let _ = b.validate_identity(&id[..i], now());
    }
    for i in 0..sig.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut m = sig.clone();
            m[i] ^= flip;
            assert!(
                b.verify(&id, &m, MSG).is_err(),
                "corrupted signature byte {i} accepted"
            );
        }
        assert!(b.verify(&id, &sig[..i], MSG).is_err());
    }
    // A corrupted identity that still validates and verifies can only differ in bytes
    // neither the certificate nor its signature covers (e.g. PEM line breaks). None here.
    assert_eq!(accepted, 0);
}

#[test]
fn provider_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MspSecurity>();
    check::<TrustStore>();
}
