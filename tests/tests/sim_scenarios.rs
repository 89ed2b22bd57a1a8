//! Every scenario of the suite on the simulator, each on several seeds (different latency
//! jitter, core RNG seeds), each followed by the quiescent invariant checks.
//!
//! `SIM_SEED=N` runs one seed only (to reproduce a failure); `SIM_SCENARIO_SEEDS=K` runs
//! seeds 1..=K (default 3).

use fabric_gossip_tests::{SimHarness, run_on_sim_seeds, scenarios};

macro_rules! sim_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            run_on_sim_seeds(stringify!($name), 3, scenarios::$name::<SimHarness>);
        }
    };
}

fabric_gossip_tests::for_each_scenario!(sim_test);
