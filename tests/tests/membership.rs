//! The membership scenarios (Fabric's discovery layer above the core) on the simulator,
//! with the test HMAC identities and with real X.509 / ECDSA identities of two
//! organizations, each on a few seeds and followed by the simulator's quiescent checks.
//!
//! `SIM_SEED=N` runs one seed only; `SIM_SCENARIO_SEEDS=K` runs seeds 1..=K (default 2).

use fabric_gossip_tests::membership::{self, MemberMaker, hmac_member};
use fabric_gossip_tests::msp_scenarios::msp_member;
use fabric_gossip_tests::{Harness, Outcome, Pass, SimHarness};
use std::time::Duration;

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let k = std::env::var("SIM_SCENARIO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2u64);
    (1..=k).collect()
}

fn run(name: &str, scenario: fn(&mut SimHarness, MemberMaker) -> Outcome, mk: MemberMaker) {
    for seed in seeds() {
        let mut h = SimHarness::new(seed);
        let result = scenario(&mut h, mk).and_then(|pass| {
            // Membership never goes idle (heartbeats): stop every node, then check.
            for n in 0..h.sim().node_count() {
                h.stop_node(n);
            }
            let _ = h.run_until(Duration::from_secs(5), &mut |_| false);
            h.finish().map(|()| pass)
        });
        match result {
            Ok(Pass::Done) => {}
            Ok(Pass::Skipped(what)) => panic!("{name}: the simulator must support {what}"),
            Err(e) => panic!(
                "{name} failed on {}:\n{e}\n--- last trace lines ---\n{}\n{}",
                h.name(),
                h.trace_tail(60),
                h.sim().reproduce_hint()
            ),
        }
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
        }
    };
}

fabric_gossip_tests::for_each_membership_scenario!(membership_test);

#[test]
fn member_certificate_expired_then_renewed() {
    for seed in seeds() {
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
