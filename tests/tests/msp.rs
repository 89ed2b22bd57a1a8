//! The real-identity scenarios (X.509 + ECDSA, two organizations) on the simulator and
//! over tonic, plaintext and mutual TLS.

use fabric_gossip_tests::{Harness, Outcome, Pass, SimHarness, TonicHarness, msp_scenarios};

fn check<H: Harness>(name: &str, h: &H, result: Outcome) {
    match result {
        Ok(Pass::Done) => {}
        Ok(Pass::Skipped(what)) => panic!("{name}: {} must support {what}", h.name()),
        Err(e) => panic!("{name} failed on {}:\n{e}", h.name()),
    }
}

macro_rules! msp_test {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn sim() {
                for seed in 1..=3 {
                    let mut h = SimHarness::new(seed);
                    let r = msp_scenarios::$name(&mut h).and_then(|p| h.finish().map(|()| p));
                    check(stringify!($name), &h, r);
                }
            }

            #[test]
            fn tonic_plaintext() {
                let mut h = TonicHarness::plaintext();
                let r = msp_scenarios::$name(&mut h);
                check(stringify!($name), &h, r);
            }

            #[test]
            fn tonic_mutual_tls() {
                let mut h = TonicHarness::mutual_tls();
                let r = msp_scenarios::$name(&mut h);
                check(stringify!($name), &h, r);
            }
        }
    };
}

fabric_gossip_tests::for_each_msp_scenario!(msp_test);

/// Simulator only: a real network's wall clock cannot be stepped by a test (the tonic
/// driver's own report of a step is tested in `fabric-gossip-tonic`).
#[test]
fn msp_certificate_judged_by_a_stepped_wall_clock() {
    for seed in 1..=3 {
        let mut h = SimHarness::new(seed);
        let now = h.sim().now();
        let r = msp_scenarios::msp_certificate_judged_by_a_stepped_wall_clock(
            &mut h,
            now,
            std::time::Duration::from_secs(3600),
        )
        .and_then(|p| h.finish().map(|()| p));
        if r.is_err() {
            eprintln!("{}\n{}", h.trace_tail(40), h.sim().reproduce_hint());
        }
        check("msp_certificate_judged_by_a_stepped_wall_clock", &h, r);
    }
}
