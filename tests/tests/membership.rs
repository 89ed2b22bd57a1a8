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
