//! Scenarios with real Fabric identities: X.509 certificates and ECDSA P-256 signatures of
//! two organizations from the `fabric-gossip-msp` provider, instead of the test HMAC. They
//! run, like every scenario, on the simulator and over tonic (plaintext and mutual TLS).
//!
//! The development PKI is generated once per process from a fixed seed, so the simulator
//! stays deterministic. Certificates are valid from 2023 to 2036: the simulator's virtual
//! clock starts in November 2023, a real harness uses the wall clock.

use crate::scenarios::IdentitySwitch;
use crate::{
    Harness, NodeSpec, Outcome, PASS, data, ensure, node, payload, saw_handshake_failure, wait,
};
use core::time::Duration;
use fabric_gossip_core::proto::msp::SerializedIdentity;
use fabric_gossip_core::{CloseReason, Event, HandshakeError, Instant, SecurityError};
use fabric_gossip_msp::dev::{DevCert, DevOrg, OrgSpec, Validity, seeded_in_memory, trust_all};
use fabric_gossip_msp::{MspSecurity, NodeOus, TrustHandle, TrustStore};
use prost::Message;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex, OnceLock};

/// Calls `$m!(name)` for every real-identity scenario.
#[macro_export]
macro_rules! for_each_msp_scenario {
    ($m:ident) => {
        $m!(msp_handshake_and_exchange);
        $m!(msp_identity_switch_same_org);
        $m!(msp_identity_switch_other_org_refused);
        $m!(msp_untrusted_organization_refused);
        $m!(msp_revoked_while_connected_is_cut_off);
        $m!(msp_member_without_a_role_refused);
    };
}

const SOON: Duration = Duration::from_secs(10);

/// Two trusted organizations (Org1MSP, Org2MSP) and one nobody trusts (Org3MSP), four
/// peers each.
struct Pki {
    orgs: Vec<DevOrg>,
    /// What members of Org1MSP and Org2MSP trust: each other.
    trust: TrustStore,
    /// What the stranger of Org3MSP trusts: everyone, itself included.
    stranger_trust: TrustStore,
    /// `trust` with NodeOUs on for both organizations, as cryptogen configures them.
    role_trust: TrustStore,
    /// A member of Org2MSP whose certificate's only OU, `guest`, is no NodeOU role.
    guest: DevCert,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let specs = [
            OrgSpec::new("Org1MSP", "org1.example.com", 4),
            OrgSpec::new("Org2MSP", "org2.example.com", 4),
            OrgSpec::new("Org3MSP", "org3.example.com", 1),
        ];
        let orgs = seeded_in_memory(&specs, 0x6d7370).expect("development PKI");
        let trust = trust_all(&orgs[..2]).expect("trust store");
        let stranger_trust = trust_all(&orgs).expect("trust store");
        let mut role_trust = trust.clone();
        for o in &orgs[..2] {
            let ca = o.ca.cert_pem();
            role_trust
                .set_node_ous(
                    &o.spec.msp_id,
                    &NodeOus::fabric_defaults(Some(ca.as_bytes())),
                )
                .expect("NodeOUs");
        }
        let guest = orgs[1]
            .ca
            .issue_with_units(
                "guest.org2.example.com",
                &["guest"],
                // seeded_in_memory's: 2023-01-01 for 13 years
                Validity::starting(
                    Instant::from_unix_secs(1_672_531_200),
                    Duration::from_secs(13 * 365 * 24 * 3600),
                ),
                &mut ChaCha8Rng::seed_from_u64(0x6775657374),
            )
            .expect("guest identity");
        Pki {
            orgs,
            trust,
            stranger_trust,
            role_trust,
            guest,
        }
    })
}

/// A node whose identity generation `g` is peer `who(g) = (org, peer)` of the PKI.
fn msp_node(who: fn(u32) -> (usize, usize)) -> NodeSpec {
    node().security(move |_endpoint, g| {
        let (org, peer) = who(g);
        let pki = pki();
        let o = &pki.orgs[org];
        let trust = if org == 2 {
            pki.stranger_trust.clone()
        } else {
            pki.trust.clone()
        };
        // RFC 6979 signatures: the same bytes on every run, so simulations replay.
        Box::new(
            o.security(&o.peers[peer], trust)
                .expect("a generated identity loads")
                .with_deterministic_signatures(),
        )
    })
}

fn err(e: impl core::fmt::Display) -> String {
    e.to_string()
}

/// Nodes of two organizations handshake with real certificates and exchange messages both
/// ways; the identity each side learns is the other's `SerializedIdentity`, and its PKI-ID
/// is SHA-256(mspid ‖ id_bytes), as Fabric computes it.
pub fn msp_handshake_and_exchange<H: Harness>(h: &mut H) -> Outcome {
    let a = h.add_node(msp_node(|_| (0, 0)))?;
    let b = h.add_node(msp_node(|_| (1, 0)))?;
    let (pa, pb) = (h.peer(a), h.peer(b));
    h.send(a, &data(1, "from org1"), std::slice::from_ref(&pb))
        .map_err(err)?;
    h.send(b, &data(2, "from org2"), std::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "both receive", |h| {
        h.delivery_count(a) >= 1 && h.delivery_count(b) >= 1
    })?;
    let got = &h.deliveries(b)[0].msg;
    ensure!(payload(got) == b"from org1", "wrong payload at B");
    ensure!(got.info.id == pa.pki_id, "B sees another PKI-ID");
    let sid = SerializedIdentity::decode(got.info.identity.clone()).map_err(err)?;
    ensure!(sid.mspid == "Org1MSP", "B sees MSP {}", sid.mspid);
    let mut hasher = Sha256::new();
    hasher.update(sid.mspid.as_bytes());
    hasher.update(&sid.id_bytes);
    ensure!(
        hasher.finalize()[..] == *got.info.id.as_bytes(),
        "PKI-ID is not SHA-256(mspid || id_bytes)"
    );
    ensure!(
        payload(&h.deliveries(a)[0].msg) == b"from org2",
        "wrong payload at A"
    );
    ensure!(
        h.stats(a).handshake_failures_total() == 0 && h.stats(b).handshake_failures_total() == 0,
        "a handshake failed"
    );
    PASS
}

/// A peer renews its certificate (same organization) and comes back at the same endpoint:
/// the dialler, still addressing the old PKI-ID, reports IdentitySwitch and delivers.
pub fn msp_identity_switch_same_org<H: Harness>(h: &mut H) -> Outcome {
    let nodes = IdentitySwitch {
        a: msp_node(|_| (0, 1)),
        b: msp_node(|g| (1, 1 + (g as usize).min(1))),
    };
    nodes.same_org(h)
}

/// The peer comes back with a certificate of another organization: refused
/// ("authentication failure"), nothing delivered.
pub fn msp_identity_switch_other_org_refused<H: Harness>(h: &mut H) -> Outcome {
    let nodes = IdentitySwitch {
        a: msp_node(|_| (0, 2)),
        b: msp_node(|g| if g == 0 { (0, 3) } else { (1, 3) }),
    };
    nodes.other_org_refused(h)
}

/// A node of an organization nobody trusts is refused by `ValidateIdentity`.
pub fn msp_untrusted_organization_refused<H: Harness>(h: &mut H) -> Outcome {
    let a = h.add_node(msp_node(|_| (0, 0)))?;
    let stranger = h.add_node(msp_node(|_| (2, 0)))?;
    let pa = h.peer(a);
    h.send(stranger, &data(1, "let me in"), &[pa])
        .map_err(err)?;
    wait(h, SOON, "A refuses the untrusted identity", |h| {
        saw_handshake_failure(h, a, |e| {
            matches!(
                e,
                HandshakeError::InvalidIdentity(SecurityError::UnknownMsp(_))
            )
        })
    })?;
    ensure!(
        h.delivery_count(a) == 0,
        "A delivered from an untrusted peer"
    );
    PASS
}

/// A CRL revoking a connected peer reaches the other's trust store while both run (through
/// the provider's `TrustHandle`), and it revalidates (Fabric's `SuspectPeers`): the
/// connection closes with the provider's reason, the peer's next handshake is refused as
/// revoked, and nothing more from it is delivered.
pub fn msp_revoked_while_connected_is_cut_off<H: Harness>(h: &mut H) -> Outcome {
    let handle: Arc<Mutex<Option<TrustHandle>>> = Arc::default();
    let slot = handle.clone();
    let a = h.add_node(node().security(move |_endpoint, _g| {
        let o = &pki().orgs[0];
        let sec = o
            .security(&o.peers[3], pki().trust.clone())
            .expect("a generated identity loads")
            .with_deterministic_signatures();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sec.trust_handle());
        Box::new(sec)
    }))?;
    let b = h.add_node(msp_node(|_| (1, 3)))?;
    let (pa, pb) = (h.peer(a), h.peer(b));
    h.send(b, &data(1, "before"), std::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "A receives", |h| h.delivery_count(a) >= 1)?;

    let org2 = &pki().orgs[1];
    let crl = org2
        .ca
        .revocation_list(
            &[&org2.peers[3].identity.cert_der],
            Instant::from_unix_secs(0),
        )
        .map_err(err)?;
    let handle = handle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or("A's provider was not built")?;
    let mut trust = handle.current().as_ref().clone();
    trust.add_crl_pem("Org2MSP", crl.as_bytes()).map_err(err)?;
    handle.replace(trust).map_err(err)?;
    ensure!(
        h.revalidate_identities(a) == 1,
        "A should refuse exactly B's identity"
    );
    wait(h, SOON, "A closes B's connection as revoked", |h| {
        h.events(a).iter().any(|e| {
            matches!(e, Event::Disconnected { pki_id, reason: CloseReason::IdentityRefused(SecurityError::Revoked(_)), .. } if *pki_id == pb.pki_id)
        })
    })?;
    // B learns of the close when its stream ends; its next send then dials again.
    wait(h, SOON, "B sees its connection to A closed", |h| {
        h.connections(b).iter().all(|c| c.pki_id != pa.pki_id)
    })?;
    h.send(b, &data(2, "after"), std::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "A refuses B's next handshake as revoked", |h| {
        saw_handshake_failure(h, a, |e| {
            matches!(
                e,
                HandshakeError::InvalidIdentity(SecurityError::Revoked(_))
            )
        })
    })?;
    ensure!(h.delivery_count(a) == 1, "A delivered from a revoked peer");
    PASS
}

/// With NodeOUs on (cryptogen's `config.yaml`), a member of a trusted organization whose
/// certificate carries no role's OU is refused at the handshake with the provider's
/// reason, while a peer of the same organization with the peer OU is accepted.
pub fn msp_member_without_a_role_refused<H: Harness>(h: &mut H) -> Outcome {
    let a = h.add_node(node().security(|_endpoint, _g| {
        let o = &pki().orgs[0];
        Box::new(
            o.security(&o.peers[0], pki().role_trust.clone())
                .expect("a generated identity loads")
                .with_deterministic_signatures(),
        )
    }))?;
    let guest = h.add_node(node().security(|_endpoint, _g| {
        let g = &pki().guest;
        Box::new(
            MspSecurity::new(
                "Org2MSP",
                g.cert_pem().as_bytes(),
                g.key_pem.as_bytes(),
                pki().trust.clone(),
            )
            .expect("the guest loads where roles are off")
            .with_deterministic_signatures(),
        )
    }))?;
    let peer = h.add_node(msp_node(|_| (1, 0)))?;
    let pa = h.peer(a);
    h.send(guest, &data(1, "no role"), std::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "A refuses the member without a role", |h| {
        saw_handshake_failure(h, a, |e| {
            matches!(
                e,
                HandshakeError::InvalidIdentity(SecurityError::OrganizationalUnit(_))
            )
        })
    })?;
    h.send(peer, &data(2, "a peer"), std::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "A receives from the peer", |h| {
        h.delivery_count(a) >= 1
    })?;
    ensure!(
        h.delivery_count(a) == 1,
        "A delivered from a member without a role"
    );
    PASS
}

/// Member `i` (of 4) of organization `org` (0: Org1MSP, 1: Org2MSP) with its real X.509
/// identity and deterministic ECDSA signatures, for the membership scenarios
/// ([`crate::membership`]); its application subscribes to nothing.
pub fn msp_member(org: usize, i: usize) -> NodeSpec {
    let org = org.min(1);
    node().subscribe_all(false).security(move |_endpoint, _g| {
        let pki = pki();
        let o = &pki.orgs[org];
        Box::new(
            o.security(&o.peers[i % o.peers.len()], pki.trust.clone())
                .expect("a generated identity loads")
                .with_deterministic_signatures(),
        )
    })
}

/// The expired-then-renewed certificate case (Fabric fixed it only in 2.5.11): member b's
/// certificate expires `life` after `now` (the harness's clock: pass the simulator's
/// virtual time or the wall clock); a forgets b's PKI-ID entirely (alive or dead), and
/// when b comes back at the same endpoint with a renewed certificate (a new PKI-ID) a
/// learns it anew and keeps no trace of the old one.
pub fn member_certificate_expired_then_renewed<H: Harness>(
    h: &mut H,
    now: Instant,
    life: Duration,
) -> Outcome {
    use crate::membership::{MemberSpec, full_membership, info_of};
    use fabric_gossip_discovery::{DiscoveryEvent, PurgeReason};
    if !h.supports_membership() {
        return Ok(crate::Pass::Skipped("membership"));
    }
    let p = pki();
    let org1 = &p.orgs[0];
    let mut rng = ChaCha8Rng::seed_from_u64(0x0e7a);
    let start = Instant::from_unix_secs(1_672_531_200);
    let expiring = org1
        .issue_peer(
            "peer1",
            Validity::starting(start, (now + life) - start),
            &mut rng,
        )
        .map_err(|e| e.to_string())?;
    let renewed = org1
        .issue_peer("peer1", Validity::ten_years_from(start), &mut rng)
        .map_err(|e| e.to_string())?;
    let trust = p.trust.clone();
    // Generation 0: the expiring certificate; a restart with a new identity: the renewed one.
    let b_node = node().subscribe_all(false).security(move |_ep, g| {
        let peer = if g == 0 { &expiring } else { &renewed };
        Box::new(
            org1.security(peer, trust.clone())
                .expect("a generated identity loads")
                .with_deterministic_signatures(),
        )
    });
    let a = h.add_member(MemberSpec::new(msp_member(0, 0)))?;
    let b = h.add_member(MemberSpec::new(b_node).bootstrap([a]))?;
    wait(h, SOON * 3, "a and b joined", |h| {
        full_membership(h, &[a, b])
    })?;
    let old = h.peer(b).pki_id;
    wait(h, life + SOON * 3, "a forgets b's expired identity", |h| {
        info_of(h, a, b).is_none()
    })?;
    ensure!(
        h.member_events(a).iter().any(|e| matches!(
            e,
            DiscoveryEvent::MemberPurged { member, reason: PurgeReason::IdentityExpired }
                if member.pki_id == old
        )),
        "a did not purge b for its expired identity: {:?}",
        h.member_events(a)
    );
    h.restart_node(b, true)?;
    let new = h.peer(b).pki_id;
    ensure!(new != old, "the renewed certificate kept the PKI-ID");
    wait(h, SOON * 3, "b re-learnt with its renewed identity", |h| {
        full_membership(h, &[a, b])
    })?;
    let knows_old = h
        .members(a)
        .iter()
        .chain(h.dead_members(a).iter())
        .any(|m| m.pki_id == old);
    ensure!(!knows_old, "a still keeps b's expired PKI-ID");
    PASS
}

/// A certificate judged by a wall clock stepped after start (simulator only: it injects
/// [`Fault::StepClock`](fabric_gossip_sim::Fault::StepClock)). Member b's certificate
/// expires `life` after `now` (the simulator's virtual time). Node a's clock is stepped
/// ahead past that: a refuses b's handshake as expired, and so does a's next process after
/// a restart (the step is the machine's); stepped back, a takes b's messages again, as
/// Fabric does, which judges expiry by the wall clock it reads at each handshake.
pub fn msp_certificate_judged_by_a_stepped_wall_clock<H: Harness>(
    h: &mut H,
    now: Instant,
    life: Duration,
) -> Outcome {
    use fabric_gossip_sim::Fault;
    let org1 = &pki().orgs[0];
    let start = Instant::from_unix_secs(1_672_531_200);
    let expiring = org1
        .issue_peer(
            "peer2",
            Validity::starting(start, (now + life) - start),
            &mut ChaCha8Rng::seed_from_u64(0x5732),
        )
        .map_err(err)?;
    let a = h.add_node(msp_node(|_| (0, 0)))?;
    let b = h.add_node(node().security(move |_ep, _g| {
        Box::new(
            org1.security(&expiring, pki().trust.clone())
                .expect("a generated identity loads")
                .with_deterministic_signatures(),
        )
    }))?;
    let pa = h.peer(a);
    let step = life + SOON;
    let ahead = Fault::StepClock {
        node: a,
        ahead: true,
        by: step,
    };
    if h.inject(ahead).is_err() {
        return Ok(crate::Pass::Skipped("fault injection"));
    }
    let expired = |h: &H| {
        h.events(a)
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::HandshakeFailed {
                        error: HandshakeError::InvalidIdentity(SecurityError::Expired(_)),
                        ..
                    }
                )
            })
            .count()
    };
    h.send(b, &data(1, "stepped ahead"), core::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "a refuses b's certificate as expired", |h| {
        expired(h) == 1
    })?;
    // b learns of the refusal when its stream ends; only then does its next send dial.
    let closed = |h: &H, times: usize| {
        let dead = h
            .events(b)
            .into_iter()
            .filter(|e| matches!(e, Event::PresumedDead(p) if p.pki_id == pa.pki_id));
        dead.count() == times
    };
    wait(h, SOON, "b sees its connection to a closed", |h| {
        closed(h, 1)
    })?;
    h.restart_node(a, false)?;
    h.send(b, &data(2, "after a's restart"), core::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "a's next process refuses it too", |h| {
        expired(h) == 2
    })?;
    ensure!(h.delivery_count(a) == 0, "a delivered from an expired peer");
    wait(h, SOON, "b sees that connection closed too", |h| {
        closed(h, 2)
    })?;
    h.inject(Fault::StepClock {
        node: a,
        ahead: false,
        by: step,
    })?;
    h.send(b, &data(3, "stepped back"), core::slice::from_ref(&pa))
        .map_err(err)?;
    wait(h, SOON, "a takes b's message", |h| h.delivery_count(a) == 1)?;
    ensure!(expired(h) == 2, "a refused b after its clock came back");
    PASS
}
