//! Seed sweeps: run one scenario on many seeds, stop at the first that fails, and say how
//! to rerun it alone.
//!
//! A simulation test that passes on one seed proves little; the same test on ten thousand
//! seeds (each with its own latencies, jitter, core RNG seeds and fault draws) finds the
//! interleavings a hand-written test never thinks of. [`Sweep`] is the loop every such
//! test needs: which seeds (from the environment, so CI and a developer can ask for more
//! or for one), the configuration of each run, the invariant check, a failure message with
//! the `reproduce with: … --seed N` line, and a determinism check that reruns some seeds and
//! compares their trace hashes.
//!
//! ```
//! use fabric_gossip_sim::*;
//! use fabric_gossip_core::SignedMessage;
//! use std::time::Duration;
//!
//! let sweep = Sweep::from_env("SIM_SEED={seed} cargo test --test my_sweep", 20, 1_000);
//! let report = sweep
//!     .run(|cfg| {
//!         let mut sim = Sim::new(cfg);
//!         sim.add_nodes(3);
//!         let msg = SignedMessage::noop(data_message(1, "hi"));
//!         let sent = sim.send_to(0, &msg, &[1, 2]).map_err(|e| e.to_string());
//!         sim.run_until_idle(Duration::from_secs(60));
//!         let checked = sent.and_then(|()| sim.check_quiescent()).and_then(|()| {
//!             match sim.deliveries(1).len() + sim.deliveries(2).len() {
//!                 2 => Ok(()),
//!                 k => Err(format!("{k} of 2 delivered")),
//!             }
//!         });
//!         (sim, checked)
//!     })
//!     .unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.seeds >= 1);
//! ```
//!
//! # Environment
//!
//! Read by [`Sweep::from_env`] (a sweep made by [`Sweep::new`] runs the seeds it is
//! given): `SIM_SEED=N` runs seed `N` alone with the full trace kept, and prints the trace
//! with a failure. `SIM_SEEDS=K` runs seeds `0..K`; without it a sweep runs its default
//! for the build (debug builds are about ten times slower, so their default is smaller).

use crate::config::SimConfig;
use crate::sim::Sim;
use crate::trace::TraceMode;

/// The environment variable naming one seed to run alone.
pub const SEED_VAR: &str = "SIM_SEED";

/// The environment variable giving the number of seeds of a sweep.
pub const SEEDS_VAR: &str = "SIM_SEEDS";

/// A sweep: which seeds, how to rerun one, how often to check determinism.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The seeds, in the order they run.
    pub seeds: Vec<u64>,
    /// How to rerun one seed, `{seed}` standing for it; every run's
    /// [`SimConfig::reproduce`], so it ends every failure message.
    pub reproduce: String,
    /// Every seed divisible by this is run twice more with the trace hashed, and both
    /// hashes must agree (0: never).
    pub determinism_every: u64,
    /// Keep the whole trace and print it with a failure (set when one seed runs alone).
    pub full_trace: bool,
    /// The trace mode of ordinary runs ([`TraceMode::Off`] unless the test reads it).
    pub trace: TraceMode,
}

impl Sweep {
    /// Seeds `0..count`, determinism checked every 500th seed, no trace kept.
    pub fn new(reproduce: impl Into<String>, count: u64) -> Self {
        Sweep {
            seeds: (0..count).collect(),
            reproduce: reproduce.into(),
            determinism_every: 500,
            full_trace: false,
            trace: TraceMode::Off,
        }
    }

    /// Seeds from the environment ([`SEED_VAR`] alone, or `0..`[`SEEDS_VAR`]), else
    /// `0..debug` in a debug build and `0..release` in a release build.
    pub fn from_env(reproduce: impl Into<String>, debug: u64, release: u64) -> Self {
        let var = |name| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
        if let Some(seed) = var(SEED_VAR) {
            let mut s = Self::new(reproduce, 0);
            s.seeds = vec![seed];
            s.full_trace = true;
            return s;
        }
        let default = if cfg!(debug_assertions) {
            debug
        } else {
            release
        };
        Self::new(reproduce, var(SEEDS_VAR).unwrap_or(default))
    }

    /// The settings a run of `seed` starts from: defaults, the seed, the reproduce line
    /// and the trace mode. The run may change anything else (latency, jitter, …) as long
    /// as it derives it from the seed.
    pub fn config(&self, seed: u64) -> SimConfig {
        let mut cfg = SimConfig::seeded(seed);
        cfg.reproduce = self.reproduce.clone();
        cfg.trace = if self.full_trace {
            TraceMode::Full
        } else {
            self.trace
        };
        cfg
    }

    /// Runs every seed: `run` builds a network from the configuration it is given, drives
    /// it, checks what the test expects and returns the network with the verdict. The
    /// network's own invariants ([`Sim::check`]) are checked as well. Stops at the first
    /// failure and returns it as a message that names the seed and ends with the
    /// `reproduce with:` line (with the trace before it when [`Sweep::full_trace`]).
    ///
    /// For the seeds of the determinism check, `run` is called twice more with
    /// [`TraceMode::Hash`]; a closure that counts things across seeds counts those runs too.
    pub fn run(
        &self,
        mut run: impl FnMut(SimConfig) -> (Sim, Result<(), String>),
    ) -> Result<SweepReport, String> {
        let mut report = SweepReport::default();
        for &seed in &self.seeds {
            let (sim, verdict) = run(self.config(seed));
            report.seeds += 1;
            if let Err(why) = verdict.and_then(|()| sim.check()) {
                return Err(self.failure(&sim, &why));
            }
            if self.determinism_every != 0 && seed % self.determinism_every == 0 {
                let mut cfg = self.config(seed);
                cfg.trace = TraceMode::Hash;
                if let Err(why) = same_trace(cfg, &mut run) {
                    return Err(self.failure(&sim, &why));
                }
                report.replays += 2;
            }
        }
        Ok(report)
    }

    /// The failure message for a run: seed, where the run stood (virtual time as the
    /// trace writes it, and steps taken), what went wrong, the trace if kept, the
    /// reproduce line: `seed 3 at +1.250000000 (step 812): why`.
    pub fn failure(&self, sim: &Sim, why: &str) -> String {
        let at = sim.elapsed();
        let mut s = format!(
            "seed {} at +{}.{:09} (step {}): {why}\n",
            sim.seed(),
            at.as_secs(),
            at.subsec_nanos(),
            sim.counters().steps
        );
        if self.full_trace {
            s.push_str("--- trace ---\n");
            s.push_str(&sim.trace().text());
            s.push_str("--- end of trace ---\n");
        }
        let hint = sim.reproduce_hint();
        if !why.contains(&hint) {
            s.push_str(&hint);
        }
        if !self.full_trace {
            s.push_str(&trace_hint());
        }
        s
    }
}

/// How to see a failed seed's whole trace. A sweep made by [`Sweep::from_env`] runs the
/// seed named by [`SEED_VAR`] alone with it; one made by [`Sweep::new`] does not read the
/// variable (a user's trial: `SIM_SEED=0` printed the same message again), and needs
/// [`Sweep::full_trace`].
fn trace_hint() -> String {
    format!(
        "\n(the whole trace: {SEED_VAR}=N runs seed N alone and prints it, in a sweep made by \
         Sweep::from_env; or set Sweep::full_trace)"
    )
}

/// What a sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Seeds run and checked.
    pub seeds: u64,
    /// Extra runs of the determinism check.
    pub replays: u64,
}

/// Runs `run` twice on `cfg` and compares the trace hashes: `Err` when the same seed gave
/// two different runs (something outside the seed, such as a hash map's order or the
/// wall clock, reached the simulation). `cfg.trace` must not be [`TraceMode::Off`], or
/// there is nothing to compare.
pub fn same_trace(
    cfg: SimConfig,
    mut run: impl FnMut(SimConfig) -> (Sim, Result<(), String>),
) -> Result<[u8; 32], String> {
    if cfg.trace == TraceMode::Off {
        return Err("determinism check with the trace off".into());
    }
    let (a, _) = run(cfg.clone());
    let (b, _) = run(cfg);
    let (x, y) = (a.trace().hash(), b.trace().hash());
    if x == y {
        Ok(x)
    } else {
        Err(format!(
            "the same seed gave two different traces ({} lines, then {})",
            a.trace().count(),
            b.trace().count()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Workload;
    use core::time::Duration;

    fn traffic(cfg: SimConfig) -> (Sim, Result<(), String>) {
        let mut sim = Sim::new(cfg);
        sim.add_nodes(2);
        sim.set_workload(Workload {
            stop: Duration::from_millis(50),
            ..Workload::default()
        });
        sim.run_until_idle(Duration::from_secs(60));
        (sim, Ok(()))
    }

    #[test]
    fn a_failing_seed_is_named_with_its_reproduce_line() {
        let sweep = Sweep::new("rerun --seed {seed}", 10);
        let e = sweep
            .run(|cfg| {
                let seed = cfg.seed;
                let (sim, _) = traffic(cfg);
                (
                    sim,
                    if seed == 3 {
                        Err("boom".into())
                    } else {
                        Ok(())
                    },
                )
            })
            .unwrap_err();
        // Where the run stood when the verdict was given, as the trace's times read.
        let (sim, _) = traffic(sweep.config(3));
        let at = sim.elapsed();
        assert!(at > Duration::ZERO && sim.counters().steps > 0);
        let head = format!(
            "seed 3 at +{}.{:09} (step {}): boom\n",
            at.as_secs(),
            at.subsec_nanos(),
            sim.counters().steps
        );
        assert!(e.starts_with(&head), "{e}");
        assert!(e.contains("reproduce with: rerun --seed 3"), "{e}");
    }

    #[test]
    fn passing_sweep_counts_seeds_and_replays() {
        let mut sweep = Sweep::new("x", 3);
        sweep.determinism_every = 2;
        let r = sweep.run(traffic).unwrap();
        assert_eq!(
            r,
            SweepReport {
                seeds: 3,
                replays: 4
            }
        );
    }

    /// The determinism check runs on the seeds that are multiples of `determinism_every`,
    /// wherever they fall in the sweep (0, 3, 6 and 9 of ten seeds here).
    #[test]
    fn the_determinism_check_replays_every_nth_seed() {
        let mut sweep = Sweep::new("x", 10);
        sweep.determinism_every = 3;
        let r = sweep.run(traffic).unwrap();
        assert_eq!(
            r,
            SweepReport {
                seeds: 10,
                replays: 8
            }
        );
    }

    /// A failure with the trace kept shows the trace and no hint; one without it tells how
    /// to get it: the seed variable alone.
    #[test]
    fn a_failure_shows_the_trace_or_says_how_to_get_it() {
        let mut sweep = Sweep::new("rerun --seed {seed}", 1);
        let fail = |cfg| (traffic(cfg).0, Err("boom".to_string()));
        let e = sweep.run(fail).unwrap_err();
        assert!(!e.contains("--- trace ---"), "{e}");
        assert!(e.ends_with(&trace_hint()), "{e}");
        sweep.full_trace = true;
        let e = sweep.run(fail).unwrap_err();
        assert!(e.contains("--- trace ---\n+0.000000000 "), "{e}");
        assert!(e.contains("--- end of trace ---\n"), "{e}");
        assert!(!e.contains(&trace_hint()), "{e}");
    }

    #[test]
    fn determinism_check_catches_a_run_that_depends_on_more_than_the_seed() {
        let mut calls = 0u64;
        let mut cfg = SimConfig::seeded(1);
        cfg.trace = TraceMode::Hash;
        let e = same_trace(cfg, |mut cfg| {
            calls += 1;
            cfg.seed += calls; // state leaking from outside the seed
            traffic(cfg)
        })
        .unwrap_err();
        assert!(e.contains("two different traces"), "{e}");
        let mut off = SimConfig::seeded(1);
        off.trace = TraceMode::Off;
        assert!(same_trace(off, traffic).is_err());
    }
}
