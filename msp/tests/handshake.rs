//! Cores with real X.509 identities, through the core's public API on the in-memory
//! network: handshakes, each refusal's error, identity switch, and expiry while connected.
use crate::common;
use common::pki::*;
use common::*;
use core::time::Duration;
use fabric_gossip_core::*;
use fabric_gossip_msp::dev::DevPeer;
use fabric_gossip_msp::serialize_identity;

fn boxed(s: impl Security + 'static) -> Box<dyn Security> {
    Box::new(s)
}

/// Node 0 is Org1's peer0; node 1 is whatever `second` builds.
fn pair(pki: &Pki, config: Config, second: Box<dyn Security>) -> Net {
    let mut second = Some(second);
    let first = pki.security(0, 0);
    let mut first = Some(first);
    Net::at(
        now(),
        2,
        |_| config.clone(),
        move |i| {
            if i == 0 {
                boxed(first.take().unwrap())
            } else {
                second.take().unwrap()
            }
        },
    )
}

fn handshake_failures(node: &Node) -> Vec<HandshakeError> {
    node.events
        .iter()
        .filter_map(|e| match e {
            Event::HandshakeFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_orgs_handshake_and_exchange_with_real_identities() {
    let pki = two_orgs();
    let mut net = pair(&pki, Config::default(), boxed(pki.security(1, 0)));
    net.subscribe_all(0);
    net.subscribe_all(1);
    net.send(0, 1, b"hello org2");
    net.settle();
    net.send(1, 0, b"hello org1");
    net.settle();
    assert_eq!(net.delivered_data(1), vec![b"hello org2".to_vec()]);
    assert_eq!(net.delivered_data(0), vec![b"hello org1".to_vec()]);
    let (p0, p1) = (
        net.nodes[0].comm.pki_id().clone(),
        net.nodes[1].comm.pki_id().clone(),
    );
    assert_eq!(p0, *pki.security(0, 0).pki_id());
    assert_eq!(net.nodes[0].comm.connections().len(), 1);
    assert_eq!(net.nodes[0].comm.connections()[0].pki_id, p1);
    // The connection carries the remote's real serialized identity.
    let msg = &net.nodes[1].delivered.values().next().unwrap()[0];
    assert_eq!(msg.sender(), &p0);
    assert_eq!(
        net.nodes[1].comm.identity_of(&p0).unwrap(),
        &pki.security(0, 0).own_identity()
    );
    assert_eq!(net.nodes[0].comm.stats().handshakes_ok, 1);
    assert_eq!(net.nodes[1].comm.stats().handshakes_ok, 1);
}

#[test]
fn handshake_with_mutual_tls_binding() {
    let pki = two_orgs();
    let tls = |org: usize| {
        let h = pki.orgs[org].peers[0].tls.hash();
        TlsHashes {
            client_cert_hash: h,
            server_cert_hash: h,
        }
    };
    let (t0, t1) = (tls(0), tls(1));
    let mut second = Some(boxed(pki.security(1, 0)));
    let mut first = Some(boxed(pki.security(0, 0)));
    let mut net = Net::at(
        now(),
        2,
        |i| Config::default().with_tls(if i == 0 { t0.clone() } else { t1.clone() }),
        move |i| {
            if i == 0 {
                first.take().unwrap()
            } else {
                second.take().unwrap()
            }
        },
    );
    net.subscribe_all(1);
    net.send(0, 1, b"over tls");
    net.settle();
    assert_eq!(net.delivered_data(1), vec![b"over tls".to_vec()]);
}

/// Asserts that node 0 refused exactly one handshake, with an error matching `$pat`.
macro_rules! assert_refused_with {
    ($errs:expr, $pat:pat) => {{
        let errs: Vec<HandshakeError> = $errs;
        assert!(matches!(errs.as_slice(), [$pat]), "{errs:?}");
    }};
}

/// Node 0 of the PKI and the rogue as node 1, with Fabric's defaults: the rogue sends to
/// node 0, which must deliver nothing and register no connection; returns node 0's
/// refusals.
fn refusals_of(pki: &Pki, rogue: impl Security + 'static) -> Vec<HandshakeError> {
    let mut net = pair(pki, Config::default(), boxed(rogue));
    net.subscribe_all(0);
    net.send(1, 0, b"let me in");
    net.settle();
    assert!(
        net.delivered_data(0).is_empty(),
        "node 0 accepted a bad peer"
    );
    assert!(net.nodes[0].comm.connections().is_empty());
    handshake_failures(&net.nodes[0])
}

/// [`refusals_of`] for Org2's peer behaving as `how` towards Org1's.
fn refusals_of_misbehaving(how: Misbehave) -> Vec<HandshakeError> {
    let pki = two_orgs();
    let rogue = Rogue::new(pki.security(1, 0), how);
    refusals_of(&pki, rogue)
}

#[test]
fn tampered_signature_is_refused() {
    assert_refused_with!(
        refusals_of_misbehaving(Misbehave::TamperedSignature),
        HandshakeError::BadSignature(SecurityError::BadSignature(_))
    );
}

#[test]
fn high_s_signature_is_refused() {
    assert_refused_with!(
        refusals_of_misbehaving(Misbehave::HighS),
        HandshakeError::BadSignature(SecurityError::HighS)
    );
}

#[test]
fn pki_id_not_matching_the_identity_is_refused() {
    assert_eq!(
        refusals_of_misbehaving(Misbehave::WrongPkiId),
        vec![HandshakeError::IdentityMismatch]
    );
}

#[test]
fn certificate_from_another_msps_ca_is_refused() {
    let pki = two_orgs();
    // Org2's peer presents its own certificate but claims to be a member of Org1.
    let claim = serialize_identity(ORG1, &pki.orgs[1].peers[0].identity.cert_der);
    let rogue = Rogue::new(pki.security(1, 0), Misbehave::ForeignIdentity).presenting(claim);
    assert_refused_with!(
        refusals_of(&pki, rogue),
        HandshakeError::InvalidIdentity(SecurityError::UntrustedCertificate(_))
    );
}

/// Two organizations, and a certificate for peer0 of organization `org` that expired
/// `ago`.
fn with_expired_peer0(org: usize, ago: Duration) -> (Pki, DevPeer) {
    let mut pki = two_orgs();
    let old = pki.issue_until(org, "peer0", now() - ago);
    (pki, old)
}

#[test]
fn expired_certificate_is_refused() {
    let (pki, old) = with_expired_peer0(1, Duration::from_secs(60));
    // The expired peer's own provider (its core would refuse to start with it otherwise).
    let inner = pki.security_for(1, &old);
    let rogue = Rogue::new(inner, Misbehave::ForeignIdentity);
    assert_refused_with!(
        refusals_of(&pki, rogue),
        HandshakeError::InvalidIdentity(SecurityError::Expired(_))
    );
}

#[test]
fn expired_own_identity_stops_the_core_from_starting() {
    let (pki, old) = with_expired_peer0(0, Duration::from_secs(1));
    let err = Comm::new(Config::default(), pki.security_for(0, &old), now()).unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::InvalidIdentity(SecurityError::Expired(_))
        ),
        "{err:?}"
    );
}

/// Node 1 restarts with `new_identity`; node 0 then sends to it under its old PKI-ID.
fn restart_under_new_identity(pki: &mut Pki, new_org: usize) -> (Net, PkiId, PkiId) {
    let mut net = pair(pki, Config::default(), boxed(pki.security(0, 1)));
    net.subscribe_all(1);
    net.send(0, 1, b"first");
    net.settle();
    assert_eq!(net.delivered_data(1), vec![b"first".to_vec()]);
    let old = net.nodes[1].comm.pki_id().clone();
    net.crash(1);
    net.settle();
    let renewed = pki.issue(new_org, "peer1", year());
    let security = pki.security_for(new_org, &renewed);
    net.restart(1, boxed(security), Config::default());
    net.subscribe_all(1);
    let new = net.nodes[1].comm.pki_id().clone();
    assert_ne!(old, new);
    net.nodes[0].events.clear();
    net.send_expecting(0, 1, &old, b"second");
    net.settle();
    (net, old, new)
}

#[test]
fn identity_switch_within_the_organization_is_accepted_and_reported() {
    let mut pki = two_orgs();
    let (net, old, new) = restart_under_new_identity(&mut pki, 0);
    assert_eq!(net.delivered_data(1), vec![b"second".to_vec()]);
    let switches: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IdentitySwitch(p) => Some((p.old.clone(), p.new.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(switches, vec![(old, new.clone())]);
    assert_eq!(net.nodes[0].comm.connections()[0].pki_id, new);
    assert_eq!(net.nodes[0].comm.stats().identity_switches, 1);
}

#[test]
fn peer_answering_with_another_organizations_identity_is_refused() {
    let mut pki = two_orgs();
    let (net, old, new) = restart_under_new_identity(&mut pki, 1);
    assert!(net.delivered_data(1).is_empty());
    assert!(
        !net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::IdentitySwitch(_)))
    );
    let errs = handshake_failures(&net.nodes[0]);
    assert!(
        errs.iter().any(|e| *e
            == HandshakeError::UnexpectedPeer {
                expected: old.clone(),
                actual: new.clone(),
            }),
        "{errs:?}"
    );
    assert!(net.nodes[0].comm.connection(&new).is_none());
}

#[test]
fn identity_expiring_while_connected_is_dropped_and_its_connection_closed() {
    let mut pki = two_orgs();
    let short = pki.issue_until(1, "peer0", now() + Duration::from_secs(60));
    // Node 1 itself does not police its own expiry here; node 0 must.
    let rogue = Rogue::new(pki.security_for(1, &short), Misbehave::ForeignIdentity);
    let mut net = pair(&pki, Config::default(), boxed(rogue));
    net.subscribe_all(0);
    net.send(1, 0, b"while valid");
    net.settle();
    assert_eq!(net.delivered_data(0), vec![b"while valid".to_vec()]);
    let p1 = net.nodes[1].comm.pki_id().clone();
    assert!(net.nodes[0].comm.connection(&p1).is_some());
    assert!(net.nodes[0].comm.identity_of(&p1).is_some());

    // Just before notAfter (inclusive) nothing happens.
    let until_expiry = (now() + Duration::from_secs(60)).saturating_duration_since(net.now);
    net.advance(until_expiry);
    assert!(net.nodes[0].comm.connection(&p1).is_some());

    // One second later the identity is gone and the connection closed for that reason.
    net.advance(Duration::from_secs(1));
    assert!(net.nodes[0].comm.identity_of(&p1).is_none());
    assert!(net.nodes[0].comm.connection(&p1).is_none());
    assert!(
        net.nodes[0].events.iter().any(|e| matches!(
            e,
            Event::Disconnected { pki_id, reason: CloseReason::IdentityExpired, .. } if *pki_id == p1
        )),
        "{:?}",
        net.nodes[0].events
    );
    // And the same identity is refused from then on.
    net.nodes[0].events.clear();
    net.send(1, 0, b"after expiry");
    net.settle();
    assert_eq!(net.delivered_data(0), vec![b"while valid".to_vec()]);
    let errs = handshake_failures(&net.nodes[0]);
    assert!(
        matches!(
            errs.as_slice(),
            [HandshakeError::InvalidIdentity(SecurityError::Expired(_))]
        ),
        "{errs:?}"
    );
}

#[test]
fn a_revoked_peer_is_refused_at_the_handshake() {
    let mut pki = two_orgs();
    // Org2's peer starts with the trust it had before its certificate was revoked.
    let revoked = pki.security(1, 0);
    pki.trust = revoking(&pki.trust, ORG2, &pki.orgs[1].ca, &[&pki.orgs[1].peers[0]]);
    assert_refused_with!(
        refusals_of(&pki, revoked),
        HandshakeError::InvalidIdentity(SecurityError::Revoked(_))
    );
}

/// Fabric's `SuspectPeers` after a CRL arrives while connected: the trust store is replaced
/// through the provider's handle, the node revalidates, the revoked peer's connection
/// closes with the provider's reason, and its next handshake is refused; a peer the CRL
/// does not list keeps its connection.
#[test]
fn a_crl_added_while_connected_cuts_the_revoked_peer_off() {
    let pki = two_orgs();
    let first = pki.security(0, 0);
    let handle = first.trust_handle();
    // Node 1: Org2's peer0 (to be revoked); node 2: Org1's peer1.
    let mut slots = [first, pki.security(1, 0), pki.security(0, 1)].map(|s| Some(boxed(s)));
    let mut net = Net::at(
        now(),
        3,
        |_| Config::default(),
        move |i| slots[i].take().unwrap(),
    );
    net.subscribe_all(0);
    net.send(1, 0, b"before");
    net.send(2, 0, b"before");
    net.settle();
    let (p1, p2) = (
        net.nodes[1].comm.pki_id().clone(),
        net.nodes[2].comm.pki_id().clone(),
    );
    assert!(net.nodes[0].comm.connection(&p1).is_some());

    // A revocation list for Org2's peer0, and a store Node 0's own identity must pass.
    let store = revoking(
        &handle.current(),
        ORG2,
        &pki.orgs[1].ca,
        &[&pki.orgs[1].peers[0]],
    );
    handle.replace(store).unwrap();
    // Replacing alone touches no connection; revalidating does.
    assert!(net.nodes[0].comm.connection(&p1).is_some());
    let t = net.now;
    assert_eq!(net.nodes[0].comm.revalidate_identities(t), 1);
    net.flush(0);
    net.settle();
    assert!(net.nodes[0].comm.connection(&p1).is_none());
    assert!(net.nodes[0].comm.identity_of(&p1).is_none());
    assert!(
        net.nodes[0].comm.connection(&p2).is_some(),
        "Org1's peer1 is not revoked"
    );
    // Layers hear of it, after the connections it closed.
    let last_close = net.nodes[0]
        .events
        .iter()
        .rposition(|e| matches!(e, Event::Disconnected { .. }));
    let told = net.nodes[0]
        .events
        .iter()
        .position(|e| matches!(e, Event::IdentitiesRevalidated { refused: 1 }));
    assert!(
        told.is_some() && told > last_close,
        "{:?}",
        net.nodes[0].events
    );
    assert!(
        net.nodes[0].events.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                pki_id,
                reason: CloseReason::IdentityRefused(SecurityError::Revoked(_)),
                ..
            } if *pki_id == p1
        )),
        "{:?}",
        net.nodes[0].events
    );
    net.nodes[0].events.clear();
    net.send(1, 0, b"after");
    net.settle();
    assert_refused_with!(
        handshake_failures(&net.nodes[0]),
        HandshakeError::InvalidIdentity(SecurityError::Revoked(_))
    );
    assert!(!net.delivered_data(0).contains(&b"after".to_vec()));
}

#[test]
fn a_trust_store_refusing_the_node_itself_is_not_taken() {
    let pki = two_orgs();
    let own = pki.security(0, 0);
    let handle = own.trust_handle();
    let store = revoking(
        &handle.current(),
        ORG1,
        &pki.orgs[0].ca,
        &[&pki.orgs[0].peers[0]],
    );
    assert!(matches!(
        handle.replace(store),
        Err(fabric_gossip_msp::LoadError::OwnIdentity {
            error: SecurityError::Revoked(_),
            ..
        })
    ));
    // The provider kept its store: an Org2 identity still validates, and no CRL is held.
    assert_eq!(own.trust().crl_count(ORG1), (0, 0));
    own.validate_identity(&pki.security(1, 0).own_identity(), now())
        .unwrap();
}
