//! Membership with real Fabric identities (X.509 / ECDSA P-256 from `fabric-gossip-msp`):
//! organizations, disclosure across them, and certificate expiry and renewal.

use crate::common;

use common::{Cluster, dcfg, one_joins_zero};
use core::time::Duration;
use fabric_gossip_core::testing::ep;
use fabric_gossip_core::{Instant, PkiId, Security};
use fabric_gossip_discovery::{DiscoveryEvent, PurgeReason};
use fabric_gossip_msp::TrustStore;
use fabric_gossip_msp::dev::{DevOrg, OrgSpec, Validity, generate_in_memory, trust_all};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::sync::OnceLock;

/// Org1MSP and Org2MSP, four peers each, valid 2023–2036; everyone trusts both.
struct Pki {
    orgs: Vec<DevOrg>,
    trust: TrustStore,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let validity = Validity::starting(
            Instant::from_unix_secs(1_672_531_200),
            Duration::from_secs(13 * 365 * 24 * 3600),
        );
        let specs = [
            OrgSpec::new("Org1MSP", "org1.example.com", 4),
            OrgSpec::new("Org2MSP", "org2.example.com", 4),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0x646973);
        let orgs = generate_in_memory(&specs, validity, &mut rng).unwrap();
        let trust = trust_all(&orgs).unwrap();
        Pki { orgs, trust }
    })
}

fn security(org: usize, peer: usize) -> Box<dyn Security> {
    let p = pki();
    Box::new(
        p.orgs[org]
            .security(&p.orgs[org].peers[peer], p.trust.clone())
            .unwrap(),
    )
}

const START: Instant = Instant::from_unix_secs(1_700_000_000);

#[test]
fn msp_nodes_join_through_a_bootstrap() {
    let mut c = Cluster::with_security(START, 2, |i| security(0, i), one_joins_zero);
    c.run_until(Duration::from_secs(2), |c| {
        c.sees_alive(0, 1) && c.sees_alive(1, 0)
    })
    .expect("both alive");
    let m = c.layer(0).member(c.net.nodes[1].comm.pki_id()).unwrap();
    assert_eq!(m.org.as_deref(), Some("Org1MSP"));
    assert_eq!(m.internal_endpoint, ep(1));
    c.run_for(Duration::from_secs(60));
    assert!(c.sees_alive(0, 1) && c.sees_alive(1, 0));
    assert_eq!(c.layer(0).stats().alive_refused(), 0);
}

/// The error of node `n`'s first `BootstrapFailed` event.
fn first_bootstrap_failure(
    c: &Cluster,
    n: usize,
) -> Option<fabric_gossip_discovery::BootstrapError> {
    c.events[n].iter().find_map(|(_, e)| match e {
        DiscoveryEvent::BootstrapFailed { error, .. } => Some(error.clone()),
        _ => None,
    })
}

#[test]
fn a_bootstrap_peer_of_another_org_is_refused() {
    let mut c = Cluster::with_security(START, 2, |i| security(i, 0), one_joins_zero);
    c.run_for(Duration::from_secs(1));
    let failed = first_bootstrap_failure(&c, 1).expect("a failure event");
    assert_eq!(
        failed,
        fabric_gossip_discovery::BootstrapError::OtherOrganization(ep(0))
    );
    assert!(failed.to_string().contains("isn't in our organization"));
    assert!(!c.sees_alive(1, 0));
}

/// An anchor peer the channel configuration puts in our organization must prove an
/// identity of ours (Fabric's `learnAnchorPeers`); one it puts in another organization
/// may prove any.
#[test]
fn an_anchor_claimed_by_our_organization_must_be_of_it() {
    // n0: Org2; n1: Org1, told n0 is an anchor of `claimed`.
    let anchored = |claimed: &'static [u8]| {
        let cfg = |i: usize| dcfg(i).with_external_endpoint(ep(i));
        let mut c = Cluster::with_security(START, 2, |i| security(1 - i, 0), cfg);
        let now = c.now();
        c.layers[1]
            .as_mut()
            .unwrap()
            .connect_anchor_of(now, ep(0), claimed);
        c
    };
    let mut c = anchored(b"Org1MSP");
    c.run_for(Duration::from_secs(1));
    assert_eq!(
        first_bootstrap_failure(&c, 1),
        Some(fabric_gossip_discovery::BootstrapError::NotOfClaimedOrganization(ep(0)))
    );
    assert!(!c.sees_alive(1, 0));

    // The same peer listed under its own organization: joined.
    let mut c = anchored(b"Org2MSP");
    c.run_until(Duration::from_secs(5), |c| {
        c.sees_alive(1, 0) && c.sees_alive(0, 1)
    })
    .expect("joined through an anchor of the organization claimed");
}

/// n0: Org1 with an external endpoint; n1: Org1 without one (bootstraps to n0);
/// n2: Org2 with an external endpoint (anchor n0); n3: Org2 without one (bootstraps to n2,
/// and tries anchor n0, which it must skip).
#[test]
fn a_member_of_another_org_without_external_endpoint_is_not_disclosed() {
    let mut c = Cluster::with_security(
        START,
        4,
        |i| security(i / 2, i % 2),
        |i| match i {
            0 => dcfg(0).with_external_endpoint(ep(0)),
            1 => dcfg(1).with_bootstrap([ep(0)]),
            2 => dcfg(2).with_external_endpoint(ep(2)),
            _ => dcfg(3).with_bootstrap([ep(2)]),
        },
    );
    let now = c.now();
    c.layers[2].as_mut().unwrap().connect_anchor(now, ep(0));
    c.layers[3].as_mut().unwrap().connect_anchor(now, ep(0));
    c.run_for(Duration::from_secs(60));
    let view = |c: &Cluster, i: usize| {
        let mut v: Vec<usize> = c
            .alive_view(i)
            .iter()
            .filter_map(|p| c.node_of(p))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(view(&c, 0), [1, 2]);
    assert_eq!(
        view(&c, 1),
        [0],
        "no foreign alive reaches a peer without endpoint"
    );
    assert_eq!(view(&c, 2), [0, 3]);
    assert_eq!(
        view(&c, 3),
        [2],
        "no foreign alive reaches a peer without endpoint"
    );
    // n1 (Org1, no external endpoint) was never disclosed to Org2, alive or dead.
    let pki1 = c.net.nodes[1].comm.pki_id().clone();
    assert!(c.layer(2).member(&pki1).is_none());
    assert!(c.layer(3).member(&pki1).is_none());
    // Nothing that reached Org2 from Org1 carried a secret (an internal endpoint).
    let leaks: Vec<_> = c
        .trace
        .iter()
        .filter(|(_, l)| {
            (l.starts_with("n2 <- n0") || l.starts_with("n3 <- n0")) && l.contains("secret=Some")
        })
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    let n0_at_n2 = c
        .layer(2)
        .member_envelope(c.net.nodes[0].comm.pki_id())
        .unwrap();
    assert!(n0_at_n2.secret_envelope.is_none());
    assert_eq!(
        c.layer(2)
            .member(c.net.nodes[0].comm.pki_id())
            .unwrap()
            .internal_endpoint,
        ""
    );
    // n3 skipped its foreign anchor.
    assert!(
        c.events[3]
            .iter()
            .any(|(_, e)| matches!(e, DiscoveryEvent::BootstrapFailed { gave_up: true, .. }))
    );
}

#[test]
fn a_member_whose_certificate_expired_is_relearnt_with_its_renewed_one() {
    let p = pki();
    let org1 = &p.orgs[0];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let expiring = org1
        .issue_peer(
            "peer1",
            Validity::starting(
                Instant::from_unix_secs(1_672_531_200),
                Duration::from_secs(1_700_000_000 - 1_672_531_200 + 120),
            ),
            &mut rng,
        )
        .unwrap();
    let renewed = org1
        .issue_peer(
            "peer1",
            Validity::ten_years_from(Instant::from_unix_secs(1_672_531_200)),
            &mut rng,
        )
        .unwrap();
    let old_sec = org1.security(&expiring, p.trust.clone()).unwrap();
    let mut first = Some(old_sec);
    let mut c = Cluster::with_security(
        START,
        2,
        |i| {
            if i == 0 {
                security(0, 0)
            } else {
                Box::new(first.take().unwrap())
            }
        },
        |i| {
            if i == 1 {
                dcfg(1).with_bootstrap([ep(0)])
            } else {
                dcfg(0).with_bootstrap([ep(1)])
            }
        },
    );
    c.run_until(Duration::from_secs(2), |c| c.sees_alive(0, 1))
        .unwrap();
    let old: PkiId = c.net.nodes[1].comm.pki_id().clone();

    // The certificate expires 120 s after start: node 0 forgets it entirely (the
    // behaviour of Fabric >= 2.5.11), even though its endpoint is a bootstrap peer.
    c.run_until(Duration::from_secs(130), |c| {
        c.layer(0).member(&old).is_none()
    })
    .expect("purged on expiry");
    assert!(c.now() >= START + Duration::from_secs(120));
    assert!(c.events[0].iter().any(|(_, e)| matches!(
        e,
        DiscoveryEvent::MemberPurged { reason: PurgeReason::IdentityExpired, member } if member.pki_id == old
    )));
    c.run_for(Duration::from_secs(30));
    assert!(
        c.layer(0).member(&old).is_none(),
        "messages signed by the expired identity are refused"
    );

    // It comes back at the same endpoint with a renewed certificate: a new PKI-ID.
    c.crash(1);
    c.run_for(Duration::from_secs(5));
    c.restart(
        1,
        Box::new(org1.security(&renewed, p.trust.clone()).unwrap()),
        dcfg(1).with_bootstrap([ep(0)]),
    );
    let new = c.net.nodes[1].comm.pki_id().clone();
    assert_ne!(new, old);
    c.run_until(Duration::from_secs(5), |c| {
        c.sees_alive(0, 1) && c.sees_alive(1, 0)
    })
    .expect("re-learnt with the renewed identity");
    assert!(c.layer(0).member(&old).is_none());
    assert_eq!(c.layer(0).members().len(), 1);
    assert!(c.layer(0).dead_members().is_empty());
}

/// A member revoked while alive (a CRL reaches node 0's trust store, then node 0
/// revalidates its identities) is purged with `IdentityRefused` and not learnt again, since
/// its handshakes and alive messages are refused from then on: whether node 0 is connected
/// to it (comm closes the connection) or not (the layer's own sweep finds it).
#[test]
fn a_member_revoked_while_alive_is_purged_and_stays_out() {
    for connected in [true, false] {
        let p = pki();
        let own = p.orgs[0]
            .security(&p.orgs[0].peers[0], p.trust.clone())
            .unwrap();
        let handle = own.trust_handle();
        let mut first = Some(own);
        let mut c = Cluster::with_security(
            START,
            2,
            |i| {
                if i == 0 {
                    Box::new(first.take().unwrap())
                } else {
                    security(0, 1)
                }
            },
            one_joins_zero,
        );
        c.run_until(Duration::from_secs(2), |c| {
            c.sees_alive(0, 1) && c.sees_alive(1, 0)
        })
        .expect("both alive");
        let revoked: PkiId = c.net.nodes[1].comm.pki_id().clone();

        // Org1's CA revokes its peer1.
        let ders = [p.orgs[0].peers[1].identity.cert_der.as_slice()];
        let crl = p.orgs[0].ca.revocation_list(&ders, START).unwrap();
        let mut trust = handle.current().as_ref().clone();
        trust.add_crl_pem("Org1MSP", crl.as_bytes()).unwrap();
        handle.replace(trust).unwrap();
        let now = c.now();
        if !connected {
            c.net.nodes[0].comm.close_conn(now, &revoked);
            assert!(c.net.nodes[0].comm.connection(&revoked).is_none());
        }
        assert_eq!(c.net.nodes[0].comm.revalidate_identities(now), 1);
        c.net.flush(0);
        c.run_for(Duration::from_secs(1));
        assert!(
            c.layer(0).member(&revoked).is_none(),
            "connected: {connected}"
        );
        assert!(c.events[0].iter().any(|(_, e)| matches!(
            e,
            DiscoveryEvent::MemberPurged { reason: PurgeReason::IdentityRefused, member } if member.pki_id == revoked
        )));
        c.run_for(Duration::from_secs(30));
        assert!(
            c.layer(0).member(&revoked).is_none(),
            "the revoked member keeps being refused (connected: {connected})"
        );
    }
}

/// A full membership reads a response's newcomers' organizations from their identities
/// without judging them: 200 entries embedding forged Org1 certificates (each a real one
/// with a byte of its signature changed, so that judging it means a parse and a chain
/// check) are refused as Org1 holds its share, and none of them goes through the MSP's
/// identity cache. Judged one by one, a response of 10,000 such entries had held the
/// node's lock 731 ms and emptied the cache of the identities in use.
#[test]
fn a_full_membership_refuses_newcomers_without_judging_their_certificates() {
    use bytes::Bytes;
    use fabric_gossip_core::proto::gossip::Envelope;
    use fabric_gossip_core::proto::msp::SerializedIdentity;
    use fabric_gossip_core::{
        Comm, Config, ConnectionInfo, Layer, ReceivedMessage, SignedMessage, StreamId,
    };
    use fabric_gossip_discovery::alive::{Timestamp, alive_message};
    use fabric_gossip_discovery::{Discovery, membership_response};
    use prost::Message;
    use std::sync::Arc;

    let p = pki();
    let me = p.orgs[0]
        .security(&p.orgs[0].peers[0], p.trust.clone())
        .unwrap();
    let mut comm = Comm::new(Config::default(), me, START).unwrap();
    let mut d = Discovery::new({
        let mut cfg = dcfg(0);
        cfg.max_members = 1;
        cfg
    })
    .unwrap();
    d.start(START, &mut comm);
    let sender = security(0, 1);
    let received = |envelope_bytes: Bytes| {
        let envelope = Envelope::decode(envelope_bytes.clone()).unwrap();
        ReceivedMessage {
            message: Message::decode(envelope.payload.clone()).unwrap(),
            envelope,
            envelope_bytes,
            conn: StreamId::from_parts(0, 0),
            info: Arc::new(ConnectionInfo {
                id: sender.pki_id_of(&sender.own_identity()),
                identity: sender.own_identity(),
                endpoint: ep(1),
                signed_data: Bytes::new(),
                signature: Bytes::new(),
            }),
        }
    };
    let ts = Timestamp {
        inc: START.as_unix_nanos(),
        seq: 1,
    };
    // The one place, taken by an Org1 member.
    let member = alive_message(
        ep(1),
        sender.pki_id_of(&sender.own_identity()).0,
        Bytes::new(),
        ts,
        sender.own_identity(),
    );
    let member = SignedMessage::sign(member, sender.as_ref()).unwrap();
    d.handle_message(START, &mut comm, received(member.envelope_bytes().clone()));
    assert_eq!(d.members().len(), 1);
    // Org1 newcomers with forged certificates.
    let real = SerializedIdentity::decode(sender.own_identity()).unwrap();
    let pem = String::from_utf8(real.id_bytes.to_vec()).unwrap();
    let entries: Vec<Envelope> = (0..200u32)
        .map(|i| {
            // A different base64 character inside the signature, near the PEM's end.
            let mut forged = pem.clone().into_bytes();
            let at = forged.len() - 40 - (i as usize % 20);
            forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
            let id = SerializedIdentity {
                mspid: real.mspid.clone(),
                id_bytes: forged.into(),
            }
            .encode_to_vec();
            let msg = alive_message(
                format!("10.9.0.{i}:7051"),
                Bytes::from(format!("newcomer-{i:04}-{}", "x".repeat(16))),
                Bytes::new(),
                ts,
                Bytes::from(id),
            );
            let signed = SignedMessage::sign(msg, sender.as_ref()).unwrap();
            Envelope::decode(signed.envelope_bytes().clone()).unwrap()
        })
        .collect();
    let before = comm.security().cache_stats();
    let response = membership_response(entries, Vec::new(), 0);
    d.handle_message(
        START,
        &mut comm,
        received(SignedMessage::noop(response).envelope_bytes().clone()),
    );
    let after = comm.security().cache_stats();
    assert_eq!(d.stats().members_refused_full, 200);
    assert_eq!(d.stats().alive_refused(), 0);
    assert_eq!(d.members().len(), 1);
    assert_eq!(
        after.misses, before.misses,
        "no newcomer's certificate was parsed"
    );
}
