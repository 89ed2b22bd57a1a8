//! NodeOU roles and OU identifiers (an MSP folder's `config.yaml`), and the rule that only a
//! CA that issued no other CA of the MSP may issue members: checked against the verdicts
//! Fabric v2.4.9's MSP gave on the same folders and certificates, then rule by rule.

use crate::common::fabric::fabric_verdicts;
use crate::common::pki::*;
use fabric_gossip_core::{Instant, Security, SecurityError};
use fabric_gossip_msp::{LoadError, NodeOus, NodeRole, TrustStore, serialize_identity_pem};
use std::path::{Path, PathBuf};

/// The MSP ID the fixture folders are loaded under (Fabric's run used Org1MSP; the ID does
/// not enter any verdict).
const FIXTURE_MSP: &str = "OuMSP";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node_ous")
}

/// 2026-06-01: within every fixture certificate's validity.
fn fixture_time() -> Instant {
    Instant::from_unix_secs(1_780_272_000)
}

/// Every line of `fabric-verdicts.txt` (made by Fabric's `msp.New`/`Setup`/`Validate` on
/// `msps/*` and `members/*`; see the README): the same MSP folder loads or is refused, and
/// each member is accepted or refused for the same reason.
#[test]
fn fabric_s_verdicts_on_node_ou_configurations() {
    let pki = two_orgs();
    let verdicts = std::fs::read_to_string(fixtures().join("fabric-verdicts.txt")).unwrap();
    let mut checked = 0;
    for v in fabric_verdicts(&verdicts) {
        let mut trust = pki.trust.clone();
        let loaded = trust.add_msp_dir(FIXTURE_MSP, fixtures().join("msps").join(v.msp));
        if v.verdict == "refused" {
            assert!(
                matches!(loaded, Err(LoadError::Config { .. })),
                "{}: Fabric refused the MSP ({}), we gave {loaded:?}",
                v.msp,
                v.reason
            );
            checked += 1;
            continue;
        }
        loaded.unwrap_or_else(|e| panic!("{}: Fabric set it up, we refused: {e}", v.msp));
        let me = pki.orgs[1]
            .security(&pki.orgs[1].peers[0], trust.clone())
            .unwrap();
        let pem =
            std::fs::read(fixtures().join("members").join(format!("{}.pem", v.member))).unwrap();
        let identity = serialize_identity_pem(FIXTURE_MSP, &pem);
        let ours = me.validate_identity(&identity, fixture_time());
        // The store alone (what `fabric-gossip validate` asks) says the same.
        assert_eq!(trust.validate_identity(&identity, fixture_time()), ours);
        v.assert_agrees(&ours);
        checked += 1;
    }
    // 12 folders Fabric set up, 15 members each, and one it refused.
    assert_eq!(checked, 12 * 15 + 1);
}

fn member(pki: &mut Pki, org: usize, units: &[&str]) -> bytes::Bytes {
    let cert = pki.orgs[org]
        .ca
        .issue_with_units("member.example.com", units, year(), &mut pki.rng)
        .unwrap();
    serialize_identity_pem(
        &pki.orgs[org].spec.msp_id,
        fabric_gossip_msp::certificate_pem(&cert.cert_der).as_bytes(),
    )
}

/// The roles set through the API work as `config.yaml`'s do, and a `NodeOus` without a
/// role turns them off again.
#[test]
fn roles_set_through_the_api() {
    let mut pki = two_orgs();
    let client = member(&mut pki, 0, &["client"]);
    let orderer = member(&mut pki, 0, &["orderer"]);
    let ca = pki.orgs[0].ca.cert_pem();
    let mut trust = pki.trust.clone();
    let roles = NodeOus::new()
        .with_role(NodeRole::Client, "client", Some(ca.as_bytes()))
        .with_role(NodeRole::Peer, "peer", None);
    trust.set_node_ous(ORG1, &roles).unwrap();
    assert_eq!(
        trust.node_roles(ORG1),
        vec![(NodeRole::Client, "client"), (NodeRole::Peer, "peer")]
    );
    let me = pki.orgs[1]
        .security(&pki.orgs[1].peers[0], trust.clone())
        .unwrap();
    let now = now();
    me.validate_identity(&client, now).unwrap();
    match me.validate_identity(&orderer, now) {
        Err(SecurityError::OrganizationalUnit(why)) => {
            assert!(why.contains("name no role of Org1MSP"), "{why}");
            assert!(why.contains("[orderer]"), "{why}");
        }
        other => panic!("orderer is no role here: {other:?}"),
    }
    // The peers generated for the tests carry OU peer: still accepted.
    me.validate_identity(&pki.security(0, 0).own_identity(), now)
        .unwrap();
    trust.set_node_ous(ORG1, &NodeOus::new()).unwrap();
    assert!(trust.node_roles(ORG1).is_empty());
    let me = pki.orgs[1].security(&pki.orgs[1].peers[0], trust).unwrap();
    me.validate_identity(&orderer, now).unwrap();
}

/// A role's CA must be one of the MSP's: Fabric refuses to set up the MSP otherwise.
#[test]
fn a_role_naming_a_ca_of_another_msp_is_refused() {
    let pki = two_orgs();
    let mut trust = pki.trust.clone();
    let other_ca = pki.orgs[1].ca.cert_pem();
    let e = trust
        .set_node_ous(ORG1, &NodeOus::fabric_defaults(Some(other_ca.as_bytes())))
        .unwrap_err();
    assert!(matches!(e, LoadError::Config { .. }), "{e}");
    assert!(
        e.to_string().contains("not a root or intermediate CA"),
        "{e}"
    );
    let e = TrustStore::new()
        .set_node_ous(ORG1, &NodeOus::fabric_defaults(Some(other_ca.as_bytes())))
        .unwrap_err();
    assert!(e.to_string().contains("must be added before"), "{e}");
}

/// OU identifiers added through the API: a member must name one, from the same chain.
#[test]
fn ou_identifiers_through_the_api() {
    let mut pki = two_orgs();
    let blue = member(&mut pki, 0, &["blue"]);
    let red = member(&mut pki, 0, &["red"]);
    let mut trust = pki.trust.clone();
    let ca = pki.orgs[0].ca.cert_pem();
    assert!(
        trust
            .add_unit_identifier(ORG1, "blue", ca.as_bytes())
            .unwrap()
    );
    assert!(
        !trust
            .add_unit_identifier(ORG1, "blue", ca.as_bytes())
            .unwrap()
    );
    assert_eq!(trust.unit_identifier_count(ORG1), 1);
    // Another OU through the same CA is another identifier.
    assert!(
        trust
            .add_unit_identifier(ORG1, "green", ca.as_bytes())
            .unwrap()
    );
    assert_eq!(trust.unit_identifier_count(ORG1), 2);
    let green = member(&mut pki, 0, &["green"]);
    let me = pki.orgs[1].security(&pki.orgs[1].peers[0], trust).unwrap();
    me.validate_identity(&blue, now()).unwrap();
    me.validate_identity(&green, now()).unwrap();
    assert!(matches!(
        me.validate_identity(&red, now()),
        Err(SecurityError::OrganizationalUnit(_))
    ));
}

/// A node whose own certificate has no role its MSP accepts does not start, as a Fabric
/// peer's gossip refuses its own identity at start.
#[test]
fn an_own_identity_without_a_role_does_not_start() {
    let mut pki = two_orgs();
    let cert = pki.orgs[0]
        .ca
        .issue_with_units("nobody.org1.example.com", &["guest"], year(), &mut pki.rng)
        .unwrap();
    let mut trust = pki.trust.clone();
    trust
        .set_node_ous(ORG1, &NodeOus::fabric_defaults(None))
        .unwrap();
    let started = fabric_gossip_msp::MspSecurity::new(
        ORG1,
        fabric_gossip_msp::certificate_pem(&cert.cert_der).as_bytes(),
        cert.key_pem.as_bytes(),
        trust,
    );
    match started {
        Err(LoadError::OwnIdentity {
            error: SecurityError::OrganizationalUnit(_),
            ..
        }) => {}
        other => panic!("expected the own identity to be refused, got {other:?}"),
    }
}

/// The folders `dev::write_orgs` writes (cryptogen's layout, NodeOUs on) load with their
/// roles, and their peers pass them.
#[test]
fn cryptogen_style_folders_enforce_their_roles() {
    let dir = std::env::temp_dir().join(format!("fg-node-ous-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pki = two_orgs();
    let layout = fabric_gossip_msp::dev::write_orgs(&dir, &pki.orgs).unwrap();
    let mut trust = TrustStore::new();
    for org in &layout.orgs {
        trust.add_msp_dir(&org.msp_id, &org.msp_dir).unwrap();
    }
    assert_eq!(trust.node_roles(ORG2).len(), 4);
    let me = pki.orgs[0].security(&pki.orgs[0].peers[0], trust).unwrap();
    me.validate_identity(&pki.security(1, 0).own_identity(), now())
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
