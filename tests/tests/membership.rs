//! The membership scenarios (Fabric's discovery layer above the core) on the simulator,
//! with the test HMAC identities and with real X.509 / ECDSA identities of two
//! organizations, each on a few seeds and followed by the simulator's quiescent checks;
//! and the same scenarios over real loopback gRPC (tonic), plaintext and mutual TLS, with
//! both kinds of identity.
//!
//! `SIM_SEED=N` runs one seed only; `SIM_SCENARIO_SEEDS=K` runs seeds 1..=K (default 2).
//!
//! Over tonic the scenarios wait on the wall clock (an expiry takes seconds), so the four
//! runs of one scenario (plaintext and mutual TLS, HMAC and MSP identities) run at once,
//! each on its own harness and threads: the binary then takes about as long as its
//! slowest scenarios, not their sum.

use fabric_gossip_core::Instant;
use fabric_gossip_tests::membership::{self, MemberMaker, hmac_member};
use fabric_gossip_tests::msp_scenarios::{self, msp_member};
use fabric_gossip_tests::{
    Harness, Outcome, Pass, SimHarness, TonicHarness, run_on_sim_seeds, scenario_seeds,
};
use std::time::{Duration, SystemTime};

/// Runs a scenario on the simulator on each seed; membership never goes idle (heartbeats),
/// so every node is stopped before the quiescent checks.
fn run(name: &str, scenario: fn(&mut SimHarness, MemberMaker) -> Outcome, mk: MemberMaker) {
    run_on_sim_seeds(name, 2, |h| {
        let pass = scenario(h, mk)?;
        for n in 0..h.sim().node_count() {
            h.stop_node(n);
        }
        let _ = h.run_until(Duration::from_secs(5), &mut |_| false);
        Ok(pass)
    });
}

/// Runs a scenario over tonic with every identity maker, in plaintext and in mutual TLS,
/// all four at once; fails with every failure (and the failing harness's state).
fn run_tonic(name: &str, scenario: impl Fn(&mut TonicHarness, MemberMaker) -> Outcome + Sync) {
    let makers: [(&str, MemberMaker); 2] = [("hmac", hmac_member), ("msp", msp_member)];
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = makers
            .iter()
            .flat_map(|&(id, mk)| {
                [false, true].map(|tls| {
                    let scenario = &scenario;
                    s.spawn(move || {
                        let mut h = if tls {
                            TonicHarness::mutual_tls()
                        } else {
                            TonicHarness::plaintext()
                        };
                        let r = scenario(&mut h, mk);
                        tonic_verdict(name, id, &mut h, r)
                    })
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| {
                r.join()
                    .unwrap_or_else(|_| Some(format!("{name}: panicked")))
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Stops every node of `h`, then judges `result`: `None` when it passed.
fn tonic_verdict(name: &str, id: &str, h: &mut TonicHarness, result: Outcome) -> Option<String> {
    let dump = h.dump();
    for n in 0..h.node_count() {
        h.stop_node(n);
    }
    match result {
        Ok(Pass::Done) => None,
        Ok(Pass::Skipped(what)) => Some(format!("{name} ({id}): {} must support {what}", h.name())),
        Err(e) => Some(format!(
            "{name} ({id}) failed on {}:\n{e}\n{dump}",
            h.name()
        )),
    }
}

macro_rules! membership_test {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn hmac() {
                run(
                    stringify!($name),
                    membership::$name::<SimHarness>,
                    hmac_member,
                );
            }

            #[test]
            fn msp() {
                run(
                    stringify!($name),
                    membership::$name::<SimHarness>,
                    msp_member,
                );
            }

            #[test]
            fn tonic() {
                run_tonic(stringify!($name), |h, mk| {
                    membership::$name::<TonicHarness>(h, mk)
                });
            }
        }
    };
}

fabric_gossip_tests::for_each_membership_scenario!(membership_test);

#[test]
fn member_certificate_expired_then_renewed() {
    for seed in scenario_seeds(2) {
        let mut h = SimHarness::new(seed);
        let now = h.sim().now();
        let r = fabric_gossip_tests::msp_scenarios::member_certificate_expired_then_renewed(
            &mut h,
            now,
            Duration::from_secs(60),
        );
        match r {
            Ok(Pass::Done) => {}
            other => panic!(
                "seed {seed}: {other:?}\n{}\n{}",
                h.trace_tail(40),
                h.sim().reproduce_hint()
            ),
        }
    }
}

/// Over tonic the certificate's expiry is on the wall clock: it expires 10 s after the
/// test starts (long enough to join under load, short enough for the suite), in
/// plaintext and in mutual TLS at once.
#[test]
fn member_certificate_expired_then_renewed_tonic() {
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [false, true]
            .map(|tls| {
                s.spawn(move || {
                    let mut h = if tls {
                        TonicHarness::mutual_tls()
                    } else {
                        TonicHarness::plaintext()
                    };
                    let now = Instant::from_system_time(SystemTime::now());
                    let r = msp_scenarios::member_certificate_expired_then_renewed(
                        &mut h,
                        now,
                        Duration::from_secs(10),
                    );
                    tonic_verdict("member_certificate_expired_then_renewed", "msp", &mut h, r)
                })
            })
            .into_iter()
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().unwrap_or_else(|_| Some("panicked".into())))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A member that restarts with a new identity just after joining, before its alive
/// messages reached every store: its old PKI-ID, purged on the identity switch, used to come
/// back with every membership response that still listed it dead (purged again every
/// reconnect interval, 27 times in 11 minutes, and never gone). Each purge now leaves a
/// tombstone in the message store: the node that saw the switch purges the old PKI-ID a
/// few times at most and, once the others' dead entries age out (the message TTL, twice at
/// most), nobody lists it.
#[test]
fn an_early_identity_switch_leaves_no_ghost() {
    use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, PurgeReason};
    use fabric_gossip_sim::{NodeSpec, Sim, SimConfig};
    let spec = || {
        NodeSpec::new().subscribe_all(false).layer(|ctx| {
            let boot = if ctx.node == 0 {
                "127.0.0.1:7052"
            } else {
                "127.0.0.1:7051"
            };
            Discovery::new(
                DiscoveryConfig::new(ctx.endpoint.clone())
                    .with_external_endpoint(ctx.endpoint.clone())
                    .with_bootstrap([boot])
                    .with_seed(ctx.seed),
            )
            .expect("a valid endpoint")
        })
    };
    for seed in [9, 1, 2] {
        let mut sim = Sim::new(SimConfig::seeded(seed));
        for _ in 0..5 {
            sim.add_node(spec()).expect("node");
        }
        let deadline = sim.now() + Duration::from_secs(30);
        let joined = |s: &Sim| {
            (0..5).all(|i| {
                s.layer::<Discovery>(i)
                    .is_some_and(|d| d.members().len() == 4)
            })
        };
        assert!(sim.run_until(deadline, joined), "seed {seed}: no full view");
        let old = sim.pki_id(3);
        let switched_at = sim.now();
        sim.restart(3, true).expect("restart with a new identity");
        let ttl = DiscoveryConfig::new("127.0.0.1:1").msg_ttl();
        sim.run_for(ttl * 2 + Duration::from_secs(60));
        for i in [0, 1, 2, 4] {
            let d = sim.layer::<Discovery>(i).expect("layer");
            assert!(
                d.member(&old).is_none(),
                "seed {seed}: node {i} still lists {old}: {:?}",
                d.member(&old)
            );
        }
        let purges = sim
            .layer_events(0)
            .iter()
            .filter(|r| r.at >= switched_at)
            .filter(|r| {
                matches!(
                    r.event.downcast_ref::<DiscoveryEvent>(),
                    Some(DiscoveryEvent::MemberPurged { member, reason: PurgeReason::IdentitySwitch })
                        if member.pki_id == old
                )
            })
            .count();
        // Once, or once more for each newer alive message of the old identity that was
        // still travelling (a tombstone holds back only what it has seen): a few, not one
        // per reconnect interval.
        assert!(
            (1..=3).contains(&purges),
            "seed {seed}: {old} purged {purges} times on node 0"
        );
    }
}
