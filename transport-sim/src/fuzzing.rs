//! Fuzzing entry point for the simulator: an arbitrary fault schedule over a small network
//! with traffic, checked against the network invariants. Called by the cargo-fuzz target
//! `sim_schedule` (`fuzz/`), and its corpus (`fuzz/corpus/sim_schedule/`) is replayed by
//! this module's tests, so `cargo test` keeps every finding fixed.
//!
//! Compiled with the feature `fuzzing` (which `fuzz/` enables) and in this crate's own
//! tests.

use crate::{Fault, ReaderMode, ScheduledFault, Sim, SimConfig, Workload, data_message};
use core::time::Duration;
use fabric_gossip_core::SignedMessage;

/// Runs the schedule encoded in `data` (see [`encode_schedule`]): a workload of 2–4 nodes,
/// the faults, then a recovery (heal, restart, every toggle off). Checks, and panics on a
/// finding: the network goes idle; the quiescent invariants hold (one connection per pair,
/// both ends agreeing, queues within bounds, no violation recorded on the way); after
/// recovery every node can reach every other; and the same input gives the same trace.
pub fn sim_schedule(data: &[u8]) {
    let case = Case::read(data);
    let first = case.run();
    let second = case.run();
    assert_eq!(first, second, "same schedule, same seed, same trace");
}

/// A decoded input.
#[derive(Clone, Debug)]
struct Case {
    nodes: usize,
    seed: u64,
    workload: Workload,
    auto_ack: bool,
    faults: Vec<ScheduledFault>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
}

const MAX_FAULTS: usize = 24;

/// Header bytes: nodes, seed, workload length, interval, size, fanout, acks, flags.
const HEADER: usize = 8;

impl Case {
    fn read(data: &[u8]) -> Case {
        let mut r = Reader(data);
        let nodes = 2 + usize::from(r.u8() % 3);
        let seed = u64::from(r.u8());
        let stop = Duration::from_millis(500 + 500 * u64::from(r.u8() % 4));
        let workload = Workload {
            start: Duration::ZERO,
            stop,
            interval: Duration::from_millis(10 + u64::from(r.u8() % 40)),
            size: 16 + usize::from(r.u8() % 64),
            fanout: 1 + usize::from(r.u8()) % (nodes - 1),
            ack_per_mille: 100 * u32::from(r.u8() % 4),
            view: 0,
        };
        let auto_ack = r.u8() & 1 == 1;
        let span = u16::try_from(stop.as_millis()).unwrap_or(u16::MAX);
        let node = |b: u8| usize::from(b) % (nodes + 1); // `nodes` itself: no such node
        let set = |b: u8| {
            (0..=nodes)
                .filter(|i| b & (1 << i) != 0)
                .collect::<Vec<_>>()
        };
        let mut faults = Vec::new();
        while !r.0.is_empty() && faults.len() < MAX_FAULTS {
            let at = r.u16() % (span + 1);
            let (kind, a, b) = (r.u8(), r.u8(), r.u8());
            let fault = match kind % 14 {
                0 => Fault::Partition {
                    a: set(a),
                    b: set(b),
                },
                1 => Fault::OneWay {
                    from: set(a),
                    to: set(b),
                },
                2 => Fault::Heal,
                3 => Fault::Isolate(node(a)),
                4 => Fault::Crash(node(a)),
                5 => Fault::Restart(node(a)),
                6 => Fault::RestartNewIdentity(node(a)),
                7 => Fault::Stop(node(a)),
                8 => Fault::Reset(node(a), node(b)),
                9 => Fault::Corrupt(node(a), node(b)),
                10 => Fault::Silent(node(a), b & 1 == 1),
                11 => Fault::BadSignature(node(a), b & 1 == 1),
                12 => Fault::HangPing(node(a), b & 1 == 1),
                _ => Fault::Reader(
                    node(a),
                    match b {
                        0 => ReaderMode::Eager,
                        1 => ReaderMode::Paused,
                        ms => ReaderMode::Every(Duration::from_millis(u64::from(ms))),
                    },
                ),
            };
            faults.push(ScheduledFault {
                at: Duration::from_millis(u64::from(at)),
                fault,
            });
        }
        faults.sort_by_key(|f| f.at);
        // Recovery, so the run can end quiescent: everything undone just after the span.
        let end = stop + Duration::from_millis(1);
        faults.push(ScheduledFault {
            at: end,
            fault: Fault::Heal,
        });
        for n in 0..nodes {
            for fault in [
                Fault::Reader(n, ReaderMode::Eager),
                Fault::HangPing(n, false),
                Fault::Silent(n, false),
                Fault::BadSignature(n, false),
                Fault::Restart(n),
            ] {
                faults.push(ScheduledFault { at: end, fault });
            }
        }
        Case {
            nodes,
            seed,
            workload,
            auto_ack,
            faults,
        }
    }

    /// Runs the case; returns the trace hash and length, for the determinism check.
    fn run(&self) -> ([u8; 32], u64) {
        let mut cfg = SimConfig::seeded(self.seed);
        cfg.auto_ack = self.auto_ack;
        cfg.reproduce = "the sim_schedule fuzz input".into();
        let mut sim = Sim::new(cfg);
        sim.add_nodes(self.nodes);
        sim.set_workload(self.workload.clone());
        sim.schedule_faults(&self.faults);
        let limit = Duration::from_secs(600);
        assert!(sim.run_until_idle(limit), "the network never goes idle");
        sim.check_quiescent().unwrap_or_else(|e| panic!("{e}"));

        // After recovery every node reaches every other. A pending `Corrupt` either way may
        // cost a message (it closes the connection or fails the handshake as malformed),
        // so a sender retries once per corruption scheduled between the pair.
        let corrupt = |a: usize, b: usize| {
            self.faults
                .iter()
                .filter(|f| f.fault == Fault::Corrupt(a, b))
                .count()
        };
        let mut seq = 1_000_000;
        for a in 0..self.nodes {
            for b in (0..self.nodes).filter(|b| *b != a) {
                let before = sim.delivered_total(b);
                let mut delivered = false;
                for _ in 0..=corrupt(a, b) + corrupt(b, a) {
                    seq += 1;
                    let msg = data_message(seq, bytes::Bytes::from_static(b"after recovery"));
                    sim.send_to(a, &SignedMessage::noop(msg), &[b])
                        .unwrap_or_else(|e| panic!("n{a} cannot send after recovery: {e}"));
                    assert!(sim.run_until_idle(limit), "never idle after recovery");
                    if sim.delivered_total(b) > before {
                        delivered = true;
                        break;
                    }
                }
                assert!(delivered, "n{a} cannot reach n{b} after recovery");
            }
        }
        sim.check_quiescent().unwrap_or_else(|e| panic!("{e}"));
        (sim.trace().hash(), sim.trace().count())
    }
}

/// Encodes a network and a fault schedule as input for [`sim_schedule`] (for seeds):
/// `header` is nodes, seed, workload length, interval, size, fanout, acks, flags (see
/// `Case::read`); each fault at or before the workload's end is kept, but clock steps,
/// which the target never draws (its nodes' test provider ignores them).
pub fn encode_schedule(header: [u8; HEADER], faults: &[ScheduledFault]) -> Vec<u8> {
    let nodes = 2 + usize::from(header[0] % 3);
    let mut out = header.to_vec();
    let node = |n: usize| n.min(nodes) as u8;
    let set = |v: &[usize]| v.iter().fold(0u8, |m, n| m | 1 << node(*n));
    for f in faults {
        let (kind, a, b) = match &f.fault {
            Fault::StepClock { .. } => continue,
            Fault::Partition { a, b } => (0, set(a), set(b)),
            Fault::OneWay { from, to } => (1, set(from), set(to)),
            Fault::Heal => (2, 0, 0),
            Fault::Isolate(n) => (3, node(*n), 0),
            Fault::Crash(n) => (4, node(*n), 0),
            Fault::Restart(n) => (5, node(*n), 0),
            Fault::RestartNewIdentity(n) => (6, node(*n), 0),
            Fault::Stop(n) => (7, node(*n), 0),
            Fault::Reset(x, y) => (8, node(*x), node(*y)),
            Fault::Corrupt(x, y) => (9, node(*x), node(*y)),
            Fault::Silent(n, on) => (10, node(*n), u8::from(*on)),
            Fault::BadSignature(n, on) => (11, node(*n), u8::from(*on)),
            Fault::HangPing(n, on) => (12, node(*n), u8::from(*on)),
            Fault::Reader(n, mode) => (
                13,
                node(*n),
                match mode {
                    ReaderMode::Eager => 0,
                    ReaderMode::Paused => 1,
                    ReaderMode::Every(d) => d.as_millis().clamp(2, 255) as u8,
                },
            ),
        };
        let at = u16::try_from(f.at.as_millis()).unwrap_or(u16::MAX);
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&[kind, a, b]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimRng, parse_schedule, random_schedule};
    use fabric_gossip_core::fuzzing::seed_in_step;
    use std::path::{Path, PathBuf};

    fn corpus() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/sim_schedule")
    }

    /// Seeds: the schedules the simulator's own docs and tests write by hand, and a few
    /// drawn by `random_schedule`.
    fn seeds() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let hand = [
            (
                "partition_heal",
                [1, 1, 2, 10, 32, 1, 0, 0],
                "partition@300ms:0/1+2,heal@900ms",
            ),
            (
                "crash_restart_new_identity",
                [2, 2, 3, 20, 16, 2, 1, 1],
                "crash@200ms:1,restart-new@700ms:1,reset@1s:0/2,corrupt@1200ms:2/0",
            ),
            (
                "toggles",
                [0, 3, 1, 15, 64, 0, 2, 1],
                "silent@0s:1,badsig@100ms:0,hangping@200ms:1,reader@300ms:0=paused,\
                 silent@600ms:1=off,reader@700ms:0=5ms",
            ),
            (
                "one_way_stop",
                [1, 4, 2, 30, 48, 1, 0, 0],
                "oneway@100ms:0/1,isolate@400ms:2,stop@800ms:1,restart@1200ms:1",
            ),
        ];
        for (name, header, text) in hand {
            let faults = parse_schedule(text).expect("valid schedule");
            out.push((name.to_owned(), encode_schedule(header, &faults)));
        }
        for seed in 0..4u8 {
            let nodes = 2 + usize::from(seed % 3);
            let mut rng = SimRng::new(u64::from(seed));
            let faults = random_schedule(&mut rng, nodes, Duration::from_millis(1000), 10);
            let header = [seed % 3, seed, 1, 20, 32, 1, 1, 1];
            out.push((format!("random_{seed}"), encode_schedule(header, &faults)));
        }
        out
    }

    #[test]
    fn seeds_are_committed_as_generated() {
        let mut stale = Vec::new();
        for (name, bytes) in seeds() {
            let path = corpus().join(format!("seed-{name}"));
            if !seed_in_step(&path, &bytes).expect("write seed") {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "run UPDATE_FUZZ_CORPUS=1 cargo test -p fabric-gossip-sim fuzzing and commit: {stale:#?}"
        );
    }

    #[test]
    fn every_corpus_file_passes() {
        let mut files: Vec<_> = std::fs::read_dir(corpus())
            .expect("fuzz/corpus/sim_schedule exists")
            .map(|e| e.expect("readable").path())
            .collect();
        files.sort();
        assert!(files.len() >= 8, "only {} corpus files", files.len());
        let mut failing = Vec::new();
        for path in files {
            let data = std::fs::read(&path).expect("readable corpus file");
            if std::panic::catch_unwind(|| sim_schedule(&data)).is_err() {
                failing.push(path.display().to_string());
            }
        }
        assert!(failing.is_empty(), "failing corpus inputs: {failing:#?}");
    }

    #[test]
    fn encoding_reads_back() {
        let faults =
            parse_schedule("partition@300ms:0/1+2,reader@400ms:1=7ms,crash@1s:2").expect("valid");
        let case = Case::read(&encode_schedule([1, 0, 1, 0, 0, 0, 0, 0], &faults));
        assert_eq!(case.nodes, 3);
        assert_eq!(case.faults[..3], faults[..]);
    }

    fn at(ms: u64, fault: Fault) -> ScheduledFault {
        ScheduledFault {
            at: Duration::from_millis(ms),
            fault,
        }
    }

    /// The recovery `Case::read` appends for `nodes` nodes after a workload ending at
    /// `stop_ms`: heal, then every toggle off and a restart per node, a millisecond later.
    fn recovery(nodes: usize, stop_ms: u64) -> Vec<ScheduledFault> {
        let mut out = vec![at(stop_ms + 1, Fault::Heal)];
        for n in 0..nodes {
            out.extend(
                [
                    Fault::Reader(n, ReaderMode::Eager),
                    Fault::HangPing(n, false),
                    Fault::Silent(n, false),
                    Fault::BadSignature(n, false),
                    Fault::Restart(n),
                ]
                .map(|f| at(stop_ms + 1, f)),
            );
        }
        out
    }

    /// Each header byte is read into its own setting, within its range, whatever its value.
    #[test]
    fn the_header_gives_the_network_and_its_workload() {
        let read = |bytes: &[u8]| {
            let c = Case::read(bytes);
            let w = &c.workload;
            assert_eq!((w.start, w.view), (Duration::ZERO, 0));
            assert_eq!(c.faults, recovery(c.nodes, w.stop.as_millis() as u64));
            format!(
                "{} nodes, seed {}, stop {:?}, every {:?}, {} B, fanout {}, ack {}, auto-ack {}",
                c.nodes, c.seed, w.stop, w.interval, w.size, w.fanout, w.ack_per_mille, c.auto_ack
            )
        };
        let three =
            "3 nodes, seed 7, stop 1.5s, every 15ms, 22 B, fanout 2, ack 300, auto-ack true";
        assert_eq!(read(&[7, 7, 6, 45, 70, 3, 7, 3]), three);
        let four =
            "4 nodes, seed 200, stop 2s, every 49ms, 79 B, fanout 3, ack 200, auto-ack false";
        assert_eq!(read(&[5, 200, 3, 39, 63, 5, 2, 2]), four);
        // Missing bytes read as zeros: the smallest network and workload.
        let empty =
            "2 nodes, seed 0, stop 500ms, every 10ms, 16 B, fanout 1, ack 0, auto-ack false";
        assert_eq!(read(&[]), empty);
    }

    /// After the header, five bytes a fault: its time (little-endian, modulo the workload's
    /// length and one), its kind (modulo 14), and two arguments: a node (modulo the nodes
    /// and one, the one past the last naming no node), a set of nodes (a bit each), a
    /// toggle (the low bit) or a reader mode. The faults come sorted by time, then the
    /// recovery.
    #[test]
    fn each_fault_is_read_from_its_five_bytes() {
        // Three nodes, a workload of 1500 ms.
        let mut data = vec![7, 7, 6, 45, 70, 3, 7, 3];
        let mut put = |at: u16, kind: u8, a: u8, b: u8| {
            data.extend_from_slice(&at.to_le_bytes());
            data.extend_from_slice(&[kind, a, b]);
        };
        put(300, 0, 0b0101, 0b1_1010);
        put(1500, 1, 0xff, 0b0010);
        put(u16::MAX, 2, 9, 9);
        put(1501, 3, 6, 0);
        put(258, 4, 3, 0);
        put(259, 5, 1, 0);
        put(260, 6, 2, 0);
        put(261, 7, 4, 0);
        put(262, 8, 5, 7);
        put(263, 9, 2, 1);
        put(264, 10, 0, 3);
        put(265, 11, 1, 3);
        put(266, 12, 2, 3);
        put(267, 13, 0, 0);
        put(268, 27, 1, 1);
        put(269, 13 + 14 * 2, 2, 7);
        put(270, 10, 0, 2);
        put(271, 11 + 14, 0, 4);
        put(272, 12, 1, 0);
        let case = Case::read(&data);
        let mut want = vec![
            at(0, Fault::Isolate(2)),
            at(258, Fault::Crash(3)),
            at(259, Fault::Restart(1)),
            at(260, Fault::RestartNewIdentity(2)),
            at(261, Fault::Stop(0)),
            at(262, Fault::Reset(1, 3)),
            at(263, Fault::Corrupt(2, 1)),
            at(264, Fault::Silent(0, true)),
            at(265, Fault::BadSignature(1, true)),
            at(266, Fault::HangPing(2, true)),
            at(267, Fault::Reader(0, ReaderMode::Eager)),
            at(268, Fault::Reader(1, ReaderMode::Paused)),
            at(
                269,
                Fault::Reader(2, ReaderMode::Every(Duration::from_millis(7))),
            ),
            at(270, Fault::Silent(0, false)),
            at(271, Fault::BadSignature(0, false)),
            at(272, Fault::HangPing(1, false)),
            at(
                300,
                Fault::Partition {
                    a: vec![0, 2],
                    b: vec![1, 3],
                },
            ),
            // u16::MAX % 1501
            at(992, Fault::Heal),
            at(
                1500,
                Fault::OneWay {
                    from: vec![0, 1, 2, 3],
                    to: vec![1],
                },
            ),
        ];
        want.extend(recovery(3, 1500));
        assert_eq!(case.faults, want);
    }

    /// At most `MAX_FAULTS` faults are read, and no more than the input holds.
    #[test]
    fn at_most_max_faults_are_read_and_only_those_given() {
        let header = [0, 0, 0, 0, 0, 0, 0, 0];
        let crash = |n: usize| encode_schedule(header, &vec![at(100, Fault::Crash(1)); n]);
        assert_eq!(
            Case::read(&crash(1)).faults[..2],
            [at(100, Fault::Crash(1)), at(501, Fault::Heal)]
        );
        for n in [MAX_FAULTS, MAX_FAULTS + 1] {
            let case = Case::read(&crash(n));
            let read = case.faults.iter().filter(|f| f.fault == Fault::Crash(1));
            assert_eq!(read.count(), MAX_FAULTS, "{n} given");
            assert_eq!(case.faults.len(), MAX_FAULTS + recovery(2, 500).len());
        }
    }

    /// A run gives its trace's hash and length, which tell schedules apart.
    #[test]
    fn a_run_gives_its_trace() {
        let header = [0, 1, 0, 0, 0, 0, 0, 0];
        let quiet = Case::read(&header).run();
        let faults = parse_schedule("crash@100ms:1,restart@300ms:1").expect("valid");
        let crashing = Case::read(&encode_schedule(header, &faults)).run();
        assert!(quiet.1 > 0, "an empty trace");
        assert_ne!(quiet, crashing);
    }

    /// A node past the network's last is written as the one "no such node" index, in a
    /// fault's node and in its sets (a bit set once however many such nodes it names).
    #[test]
    fn nodes_past_the_network_are_encoded_as_no_node() {
        let faults = [
            at(100, Fault::Crash(9)),
            at(
                200,
                Fault::Partition {
                    a: vec![0, 7, 9],
                    b: vec![1, 1],
                },
            ),
        ];
        let case = Case::read(&encode_schedule([1, 0, 0, 0, 0, 0, 0, 0], &faults));
        assert_eq!(case.nodes, 3);
        assert_eq!(
            case.faults[..2],
            [
                at(100, Fault::Crash(3)),
                at(
                    200,
                    Fault::Partition {
                        a: vec![0, 3],
                        b: vec![1],
                    }
                ),
            ]
        );
    }

    /// A case built by hand: `nodes` nodes without traffic, `faults` and nothing more (no
    /// recovery).
    fn quiet(nodes: usize, faults: Vec<ScheduledFault>) -> Case {
        Case {
            nodes,
            seed: 5,
            workload: Workload {
                start: Duration::ZERO,
                stop: Duration::ZERO,
                interval: Duration::from_millis(10),
                size: 16,
                fanout: 1,
                ack_per_mille: 0,
                view: 0,
            },
            auto_ack: false,
            faults,
        }
    }

    /// The message of a run's panic.
    fn finding(case: &Case) -> Option<String> {
        let e = std::panic::catch_unwind(|| case.run()).err()?;
        Some(match e.downcast::<String>() {
            Ok(s) => *s,
            Err(e) => e.downcast_ref::<&str>().map_or("?".into(), |s| (*s).into()),
        })
    }

    /// The reachability check after recovery sees a node that never came back.
    #[test]
    fn a_node_left_down_is_found_unreachable() {
        let case = quiet(2, vec![at(0, Fault::Crash(1))]);
        assert_eq!(
            finding(&case).as_deref(),
            Some("n0 cannot reach n1 after recovery")
        );
    }

    /// A corruption still pending when the run is over costs the first message after it,
    /// and the check sends it again rather than report the pair unreachable.
    #[test]
    fn a_corruption_pending_at_the_end_costs_one_message_sent_again() {
        for pair in [(0, 1), (1, 0)] {
            let case = quiet(2, vec![at(0, Fault::Corrupt(pair.0, pair.1))]);
            assert_eq!(finding(&case), None, "{pair:?}");
        }
    }
}
