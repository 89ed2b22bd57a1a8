//! Seed sweep: random topologies (each node bootstraps to a random earlier node), a crash
//! and a restart; after the fault heals every node sees every other alive. And the time
//! to full membership of larger clusters (ignored by default: run with `--ignored`).

use crate::common;

use common::{Cluster, dcfg};
use core::time::Duration;
use fabric_gossip_core::testing::ep;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

fn full_view(c: &Cluster, n: usize) -> bool {
    (0..n).all(|i| (0..n).all(|j| i == j || c.sees_alive(i, j)))
}

fn topology(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            if i == 0 {
                0
            } else {
                (rng.next_u64() % i as u64) as usize
            }
        })
        .collect()
}

#[test]
fn random_topologies_with_a_crash_and_a_restart_reach_full_membership() {
    for seed in 0..12u64 {
        let n = 2 + (seed as usize % 7);
        let boot = topology(seed, n);
        let cfg = |i: usize| {
            let c = dcfg(i).with_seed(seed * 100 + i as u64);
            if i == 0 {
                c
            } else {
                c.with_bootstrap([ep(boot[i])])
            }
        };
        let mut c = Cluster::hmac(n, cfg);
        c.run_until(Duration::from_secs(30), |c| full_view(c, n))
            .unwrap_or_else(|| panic!("seed {seed}: no full membership before the fault"));
        let victim = 1 + (seed as usize % (n - 1));
        c.crash(victim);
        c.run_for(Duration::from_secs(35));
        for i in (0..n).filter(|i| *i != victim) {
            assert!(
                !c.sees_alive(i, victim),
                "seed {seed}: node {i} still sees {victim}"
            );
        }
        c.restart_hmac(victim, cfg(victim));
        c.run_until(Duration::from_secs(60), |c| full_view(c, n))
            .unwrap_or_else(|| panic!("seed {seed}: no full membership after the restart"));
    }
}

fn time_to_full_membership(n: usize) {
    // Nodes 1 and 2 join through node 0; every other node through one of the three.
    let mut c = Cluster::hmac(n, |i| match i {
        0 => dcfg(0),
        1 | 2 => dcfg(i).with_bootstrap([ep(0)]),
        _ => dcfg(i).with_bootstrap([ep(i % 3)]),
    });
    let wall = std::time::Instant::now();
    let took = c
        .run_until(Duration::from_secs(120), |c| full_view(c, n))
        .expect("full membership");
    eprintln!(
        "{n} nodes (bootstrap to nodes 0-2): full membership after {took:?} of virtual time, {:?} wall",
        wall.elapsed()
    );
}

#[test]
#[ignore = "a figure, not a check: run with --ignored --nocapture"]
fn time_to_full_membership_50() {
    time_to_full_membership(50);
}

#[test]
#[ignore = "a figure, not a check: run with --ignored --nocapture"]
fn time_to_full_membership_100() {
    time_to_full_membership(100);
}
