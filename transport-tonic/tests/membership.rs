//! The membership layer (`fabric-gossip-discovery`) hosted by real nodes on loopback, with
//! real MSP identities (a development PKI of one organization), plaintext and mutual TLS:
//! three nodes learn each other through one bootstrap peer, and a stopped node is declared
//! dead after a short expiration. Intervals are shortened so the test takes seconds; every
//! wait is bounded by an explicit deadline.

use crate::common;

use common::{until, within};
use fabric_gossip_core::{Config, Instant, PkiId};
use fabric_gossip_discovery::{DeadReason, Discovery, DiscoveryConfig, DiscoveryEvent};
use fabric_gossip_msp::TrustStore;
use fabric_gossip_msp::dev::{DevOrg, OrgSpec, Validity, generate_in_memory, trust_all};
use fabric_gossip_tonic::{LAYER_EVENT_BUFFER, LayerEvents, Node, TlsConfig};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;

/// One organization of three peers, certificates valid from a day ago for ten years.
fn org() -> (DevOrg, TrustStore) {
    let start = Instant::from_system_time(SystemTime::now() - Duration::from_secs(24 * 3600));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut orgs = generate_in_memory(
        &[OrgSpec::new("Org1MSP", "org1.example.com", 3)],
        Validity::ten_years_from(start),
        &mut rng,
    )
    .expect("development PKI");
    let trust = trust_all(&orgs).expect("trust store");
    (orgs.remove(0), trust)
}

/// Fabric's defaults scaled down about tenfold.
fn discovery(addr: std::net::SocketAddr, bootstrap: Option<String>, seed: u64) -> Discovery {
    let mut cfg = DiscoveryConfig::new(addr.to_string()).with_seed(seed);
    if let Some(b) = bootstrap {
        cfg = cfg.with_bootstrap([b]);
    }
    cfg.alive_interval = Duration::from_millis(500);
    cfg.alive_expiration = Duration::from_secs(3);
    cfg.reconnect_interval = Duration::from_secs(1);
    cfg.pull_interval = Duration::from_millis(500);
    cfg.ack_wait = Duration::from_millis(500);
    Discovery::new(cfg).expect("valid configuration")
}

async fn start(
    org: &DevOrg,
    trust: &TrustStore,
    i: usize,
    tls: bool,
    bootstrap: Option<String>,
) -> (Node, LayerEvents<DiscoveryEvent>) {
    start_queueing(org, trust, i, tls, bootstrap, LAYER_EVENT_BUFFER).await
}

/// [`start`] with room for `queued` layer events.
async fn start_queueing(
    org: &DevOrg,
    trust: &TrustStore,
    i: usize,
    tls: bool,
    bootstrap: Option<String>,
    queued: usize,
) -> (Node, LayerEvents<DiscoveryEvent>) {
    let peer = &org.peers[i];
    let security = org.security(peer, trust.clone()).expect("identity loads");
    let mut b = Node::builder(Config::default())
        .stop_timeout(Duration::from_secs(3))
        .layer_event_buffer(queued)
        .layer(move |addr| discovery(addr, bootstrap, i as u64));
    if tls {
        b = b.tls(TlsConfig::new(
            peer.tls.cert_pem(),
            peer.tls.key_pem.clone(),
            org.tls_ca.cert_pem(),
        ));
    }
    let node = b.start(security).await.expect("node starts");
    let events = node
        .layer_events::<DiscoveryEvent>()
        .expect("the layer's events");
    (node, events)
}

/// Reads `events` until the members reported alive (and not dead since) include every
/// PKI-ID of `want`.
async fn until_alive(events: &mut LayerEvents<DiscoveryEvent>, want: &BTreeSet<PkiId>) {
    let mut alive = BTreeSet::new();
    while !want.is_subset(&alive) {
        match events.next().await.expect("the node runs") {
            DiscoveryEvent::MemberAlive { member, .. } => {
                alive.insert(member.pki_id);
            }
            DiscoveryEvent::MemberDead { member, .. } => {
                alive.remove(&member.pki_id);
            }
            _ => {}
        }
    }
}

/// Reads `events` until `pki` is declared dead; returns why.
async fn until_dead(events: &mut LayerEvents<DiscoveryEvent>, pki: &PkiId) -> DeadReason {
    loop {
        if let DiscoveryEvent::MemberDead { member, reason } =
            events.next().await.expect("the node runs")
            && &member.pki_id == pki
        {
            return reason;
        }
    }
}

fn alive_view(node: &Node) -> BTreeSet<PkiId> {
    node.with_layer(|d: &Discovery| d.members().into_iter().map(|m| m.pki_id).collect())
        .expect("the node hosts Discovery")
}

async fn three_learn_each_other_then_one_dies(tls: bool) {
    let (org, trust) = org();
    let (n0, mut e0) = start(&org, &trust, 0, tls, None).await;
    let seed = Some(n0.endpoint());
    let (n1, mut e1) = start(&org, &trust, 1, tls, seed.clone()).await;
    let (n2, mut e2) = start(&org, &trust, 2, tls, seed).await;
    let ids = [
        n0.pki_id().clone(),
        n1.pki_id().clone(),
        n2.pki_id().clone(),
    ];
    let others = |i: usize| -> BTreeSet<PkiId> {
        (0..3).filter(|j| *j != i).map(|j| ids[j].clone()).collect()
    };
    within("node 0 learns 1 and 2", until_alive(&mut e0, &others(0))).await;
    within("node 1 learns 0 and 2", until_alive(&mut e1, &others(1))).await;
    within("node 2 learns 0 and 1", until_alive(&mut e2, &others(2))).await;
    // The layer's own view agrees with what it reported, and knows the MSP of each.
    for (i, n) in [&n0, &n1, &n2].into_iter().enumerate() {
        assert!(alive_view(n).is_superset(&others(i)), "node {i}");
        let orgs: Vec<Option<String>> = n
            .with_layer(|d: &Discovery| d.members().into_iter().map(|m| m.org).collect())
            .unwrap();
        assert!(
            orgs.iter().all(|o| o.as_deref() == Some("Org1MSP")),
            "{orgs:?}"
        );
    }

    n2.stop().await;
    let r0 = within("node 0 declares 2 dead", until_dead(&mut e0, &ids[2])).await;
    let r1 = within("node 1 declares 2 dead", until_dead(&mut e1, &ids[2])).await;
    // A node may briefly list 2 again: the other node, which had not yet expired it, can
    // relay a newer alive message of 2 than the one it died with (Fabric resurrects on it
    // too). Once every node holds 2's last alive message, 2 stays dead everywhere.
    let dead_everywhere = || {
        [&n0, &n1].iter().all(|n| {
            let dead = n
                .with_layer(|d: &Discovery| {
                    d.dead_members()
                        .into_iter()
                        .map(|m| m.pki_id)
                        .collect::<Vec<_>>()
                })
                .unwrap();
            !alive_view(n).contains(&ids[2]) && dead.contains(&ids[2])
        })
    };
    until("2 stays dead on nodes 0 and 1", dead_everywhere).await;
    // Expiry or a failed send; both are the layer's, the driver has no rule of its own.
    assert!(
        [r0, r1]
            .iter()
            .all(|r| matches!(r, DeadReason::Expired | DeadReason::PresumedDead))
    );
    assert_eq!(n0.driver_stats().layer_events_dropped, 0);
    n0.stop().await;
    n1.stop().await;
    // The event streams end once the node stopped and they are drained.
    within("node 0's events end", async {
        while e0.next().await.is_some() {}
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_msp_nodes_learn_each_other_through_one_bootstrap_peer_plaintext() {
    three_learn_each_other_then_one_dies(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_msp_nodes_learn_each_other_through_one_bootstrap_peer_mutual_tls() {
    three_learn_each_other_then_one_dies(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_layer_offers_no_layer_views() {
    let n = common::node(common::config(), None).await;
    assert!(!n.has_layer());
    assert!(n.layer_events::<DiscoveryEvent>().is_none());
    assert!(n.with_layer(|d: &Discovery| d.members()).is_none());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_views_of_another_type_are_refused() {
    let (org, trust) = org();
    let (n, _events) = start(&org, &trust, 0, false, None).await;
    assert!(n.has_layer());
    assert!(n.layer_events::<String>().is_none());
    assert!(n.with_layer(|s: &String| s.len()).is_none());
    assert_eq!(n.with_layer(|d: &Discovery| d.members().len()), Some(0));
    n.stop().await;
}

/// A layer factory that fails (here a membership configuration `validate` refuses) makes
/// `start` return the error, not panic, and the node does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_layer_factory_is_a_start_error() {
    use fabric_gossip_discovery::ConfigError;
    use fabric_gossip_tonic::StartError;
    let started = Node::builder(common::config())
        .try_layer(|addr| {
            Discovery::new(DiscoveryConfig::new(addr.to_string()).with_external_endpoint("x"))
        })
        .start_with(|addr| fabric_gossip_core::TestOnlyHmacSecurity::new(addr.to_string()))
        .await;
    let Err(StartError::Layer(error)) = started else {
        panic!("expected StartError::Layer, got {started:?}");
    };
    assert_eq!(
        error.downcast_ref::<ConfigError>(),
        Some(&ConfigError::BadEndpoint("x".into()))
    );
    // The refusal is told once, in the error's own text, not again behind `source()`.
    let started = StartError::Layer(error);
    assert!(std::error::Error::source(&started).is_none());
    assert!(
        started
            .to_string()
            .ends_with(&ConfigError::BadEndpoint("x".into()).to_string()),
        "{started}"
    );
}

/// An application call into the layer (`connect_anchor`, Fabric's join through an anchor
/// peer) through `with_layer_mut`: the node picks up the deadline the call set and the
/// two nodes learn each other, with no bootstrap configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_into_the_layer_acts_on_the_network() {
    let (org, trust) = org();
    let (n0, mut e0) = start(&org, &trust, 0, false, None).await;
    let (n1, mut e1) = start(&org, &trust, 1, false, None).await;
    let anchor = n0.endpoint();
    n1.with_layer_mut(|d: &mut Discovery, comm| d.connect_anchor(comm.now(), anchor))
        .expect("the node hosts Discovery");
    let want0: BTreeSet<PkiId> = [n1.pki_id().clone()].into();
    let want1: BTreeSet<PkiId> = [n0.pki_id().clone()].into();
    within("node 1 learns the anchor", until_alive(&mut e1, &want1)).await;
    within("node 0 learns node 1", until_alive(&mut e0, &want0)).await;
    n0.stop().await;
    n1.stop().await;
}

/// Layer events the application does not take in time are dropped and counted, and the
/// node goes on: with room for one event, the second member node 1 learns is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_events_beyond_the_queue_are_dropped_and_counted() {
    let (org, trust) = org();
    let (n0, _e0) = start(&org, &trust, 0, false, None).await;
    let seed = Some(n0.endpoint());
    let (n1, mut e1) = start_queueing(&org, &trust, 1, false, seed.clone(), 1).await;
    let (n2, _e2) = start(&org, &trust, 2, false, seed).await;
    let others: BTreeSet<PkiId> = [n0.pki_id().clone(), n2.pki_id().clone()].into();
    until("node 1 learns 0 and 2", || {
        alive_view(&n1).is_superset(&others)
    })
    .await;
    assert!(n1.driver_stats().layer_events_dropped >= 1);
    // The one queued is still there for the application.
    assert!(within("the queued event", e1.next()).await.is_some());
    for n in [n0, n1, n2] {
        n.stop().await;
    }
}
