//! Every scenario of the suite on the simulator, each on several seeds (different latency
//! jitter, core RNG seeds), each followed by the quiescent invariant checks.
//!
//! `SIM_SEED=N` runs one seed only (to reproduce a failure); `SIM_SCENARIO_SEEDS=K` runs
//! seeds 1..=K (default 3).

use fabric_gossip_tests::{Harness, Outcome, Pass, SimHarness, scenarios};

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let k = std::env::var("SIM_SCENARIO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64);
    (1..=k).collect()
}

fn run(name: &str, scenario: fn(&mut SimHarness) -> Outcome) {
    for seed in seeds() {
        let mut h = SimHarness::new(seed);
        let result = scenario(&mut h).and_then(|pass| h.finish().map(|()| pass));
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

macro_rules! sim_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            run(stringify!($name), scenarios::$name::<SimHarness>);
        }
    };
}

fabric_gossip_tests::for_each_scenario!(sim_test);
