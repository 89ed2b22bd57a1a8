//! Fabric's identity usage purge (`gossip/identity/identity.go`) end to end, in virtual
//! time: an identity nothing used for `identity_usage_threshold` (one hour) goes, and with
//! it the connection to its peer; a member whose alive messages keep coming is kept.

use fabric_gossip_core::{CloseReason, Event, SignedMessage};
use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
use fabric_gossip_sim::*;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn holds(sim: &Sim, n: NodeId, of: NodeId) -> bool {
    sim.comm(n)
        .is_some_and(|c| c.identity_of(&sim.pki_id(of)).is_some())
}

/// Two cores alone, no layer: they handshake for one message and stay idle. At 65
/// minutes both still hold each other's identity and the connection; by 67 (the sweep
/// after the hour, every tenth of it) both purged it, closed the connection with
/// `IdentityUnused`, reported `IdentityPurged` and counted it. A later send connects
/// again.
#[test]
fn an_idle_peers_identity_is_purged_after_the_threshold_and_its_connection_closed() {
    let mut sim = Sim::new(SimConfig::seeded(11));
    let nodes = sim.add_nodes(2);
    let (a, b) = (nodes[0], nodes[1]);
    let msg = |i| SignedMessage::noop(data_message(i, bytes::Bytes::from_static(b"x")));
    sim.send_to(a, &msg(1), &[b]).unwrap();
    assert!(sim.run_until_idle(Duration::from_secs(10)));
    assert_eq!(sim.connections_between(a, b), 1);
    sim.run_for(65 * MINUTE);
    assert!(holds(&sim, a, b) && holds(&sim, b, a));
    assert_eq!(sim.connections_between(a, b), 1);
    sim.run_for(2 * MINUTE);
    assert_eq!(sim.connections_between(a, b), 0);
    for (n, peer) in [(a, b), (b, a)] {
        assert!(!holds(&sim, n, peer), "n{n} still holds n{peer}'s identity");
        let stats = sim.stats(n).expect("up");
        assert_eq!(stats.identities_purged_unused, 1, "n{n}");
        let who = sim.pki_id(peer);
        assert!(
            sim.events(n).iter().any(|(_, e)| matches!(
                e,
                Event::IdentityPurged { pki_id, reason: CloseReason::IdentityUnused }
                    if *pki_id == who
            )),
            "n{n}: {:?}",
            sim.events(n)
        );
    }
    // The side whose sweep came first closed with `IdentityUnused`.
    assert!(
        sim.events(a)
            .iter()
            .chain(sim.events(b))
            .any(|(_, e)| matches!(
                e,
                Event::Disconnected {
                    reason: CloseReason::IdentityUnused,
                    ..
                }
            ))
    );
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.send_to(a, &msg(2), &[b]).unwrap();
    assert!(sim.run_until_idle(Duration::from_secs(10)));
    assert_eq!(sim.connections_between(a, b), 1);
    assert!(holds(&sim, a, b) && holds(&sim, b, a));
    assert_eq!(sim.deliveries(b).len(), 2);
}

/// Two members running Fabric's membership layer: one handshake at the start, then alive
/// messages every 5 s, verified with the identity membership holds. Each verification is
/// a use of comm's copy (Fabric's mapper `Get`), so after three hours of virtual time
/// nothing was purged, both still hold each other's identity and see each other alive.
/// Without the use, comm purged the other's identity at 66 minutes and closed the
/// connection under a live member.
#[test]
fn a_live_members_identity_is_kept_for_hours() {
    let mut sim = Sim::new(SimConfig::seeded(12));
    let first = "127.0.0.1:7051";
    for _ in 0..2 {
        let spec = NodeSpec::new().subscribe_all(false).try_layer(move |ctx| {
            let cfg = DiscoveryConfig::new(ctx.endpoint.clone())
                .with_bootstrap([first])
                .with_seed(ctx.seed);
            Discovery::new(cfg)
        });
        sim.add_node(spec).expect("a valid configuration");
    }
    let (a, b) = (0, 1);
    sim.run_for(MINUTE);
    assert!(holds(&sim, a, b) && holds(&sim, b, a));
    let opened = sim.stats(a).expect("up").connections_opened;
    sim.run_for(3 * 60 * MINUTE);
    for (n, peer) in [(a, b), (b, a)] {
        assert!(holds(&sim, n, peer), "n{n} lost n{peer}'s identity");
        let stats = sim.stats(n).expect("up");
        assert_eq!(stats.identities_purged_unused, 0, "n{n}");
        let alive = sim
            .layer::<Discovery>(n)
            .expect("running")
            .member(&sim.pki_id(peer))
            .is_some_and(|m| m.alive);
        assert!(alive, "n{n} sees n{peer} alive");
    }
    assert_eq!(
        sim.stats(a).expect("up").connections_opened,
        opened,
        "the connection stayed"
    );
    assert_eq!(sim.connections_between(a, b), 1);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
