//! Fabric's membership layer on three simulated nodes, in virtual time: they discover each
//! other, one stops (the others declare it dead), it restarts (they see it alive again, a
//! new incarnation). Every change of a node's view is printed with the virtual time.
//!
//! ```text
//! cargo run -p fabric-gossip-sim --example membership_sim
//! ```
//!
//! The run takes milliseconds of wall time for a minute of virtual time, and the seed
//! decides everything: run it twice and the output is the same. It panics if a view is
//! not what it should be.

use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, MemberInfo};
use fabric_gossip_sim::{NodeId, NodeSpec, Sim, SimConfig};
use std::time::Duration;

fn endpoints(members: Vec<MemberInfo>) -> Vec<String> {
    members
        .iter()
        .map(|m| m.preferred_endpoint().to_owned())
        .collect()
}

/// A node's alive and dead members, as its membership layer has them.
fn view(sim: &Sim, n: NodeId) -> String {
    match sim.layer::<Discovery>(n) {
        // A stopped process runs no application, so no layer either.
        None => "not running".into(),
        Some(d) => format!(
            "alive {:?}, dead {:?}",
            endpoints(d.members()),
            endpoints(d.dead_members())
        ),
    }
}

/// Runs the network for `d` of virtual time, printing each membership event as it
/// happens and the view of the node it happened on.
fn run(sim: &mut Sim, seen: &mut [usize], d: Duration) {
    let deadline = sim.now() + d;
    // step_until moves one event at a time, so views are read between steps, never from
    // inside the simulator (an observer could only collect).
    while sim.step_until(deadline) {
        for (n, seen) in seen.iter_mut().enumerate() {
            let records = sim.layer_events(n);
            if records.len() == *seen {
                continue;
            }
            for record in &records[*seen..] {
                // The time into the run, as the trace writes it.
                let at = record.elapsed().as_secs_f64();
                match record.event.downcast_ref::<DiscoveryEvent>() {
                    Some(DiscoveryEvent::MemberAlive {
                        member,
                        resurrected,
                    }) => println!(
                        "{at:7.3}s n{n}: {} alive{}",
                        member.preferred_endpoint(),
                        if *resurrected { " again" } else { "" }
                    ),
                    Some(DiscoveryEvent::MemberDead { member, reason }) => println!(
                        "{at:7.3}s n{n}: {} dead ({reason:?})",
                        member.preferred_endpoint()
                    ),
                    Some(other) => println!("{at:7.3}s n{n}: {other:?}"),
                    None => {}
                }
            }
            *seen = records.len();
            println!("          n{n} view: {}", view(sim, n));
        }
    }
}

fn main() {
    let mut sim = Sim::new(SimConfig::seeded(7));
    // Nodes get 127.0.0.1:7051, :7052, … in the order they are added, and each starts at
    // once: a bootstrap peer added later is not there yet (its first attempt fails and is
    // retried a reconnect interval later), so every node joins through the first.
    let first = "127.0.0.1:7051";
    for _ in 0..3 {
        // The factory runs at every start of the node's process, restarts included.
        let spec = NodeSpec::new()
            // The layer takes its own messages; an application subscription to every
            // message would get copies of them too.
            .subscribe_all(false)
            // `try_layer`: a configuration Discovery::new refuses is add_node's error.
            .try_layer(move |ctx| {
                let cfg = DiscoveryConfig::new(ctx.endpoint.clone())
                    .with_bootstrap([first])
                    // the run's RNG, so the seed replays the layer too
                    .with_seed(ctx.seed)
                    // Fabric's timers shortened five-fold, to keep the virtual minute
                    // short: expiry and reconnect follow the heartbeat, as in Fabric.
                    .with_alive_interval(Duration::from_secs(1));
                Discovery::new(cfg)
            });
        sim.add_node(spec)
            .expect("the test provider accepts its own identity, Discovery its configuration");
    }
    let mut seen = vec![0; 3];

    println!("-- three nodes join through {first}");
    run(&mut sim, &mut seen, Duration::from_secs(10));
    let full = (0..3).all(|n| {
        sim.layer::<Discovery>(n)
            .is_some_and(|d| d.members().len() == 2)
    });
    assert!(full, "every node lists the two others");

    println!("-- n2 stops");
    sim.stop_node(2);
    run(&mut sim, &mut seen, Duration::from_secs(20));
    for n in 0..2 {
        let dead = sim.layer::<Discovery>(n).map(|d| d.dead_members().len());
        assert_eq!(dead, Some(1), "n{n} lists n2 dead");
    }

    println!("-- n2 restarts (a new process: a new incarnation)");
    sim.restart(2, false).expect("same identity");
    run(&mut sim, &mut seen, Duration::from_secs(20));
    let full = (0..3).all(|n| {
        sim.layer::<Discovery>(n)
            .is_some_and(|d| d.members().len() == 2)
    });
    assert!(full, "n2 is alive again everywhere");
    println!(
        "-- done at {:.3}s of virtual time",
        sim.elapsed().as_secs_f64()
    );
}
