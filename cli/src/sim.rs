//! `fabric-gossip sim`: runs a random or named scenario on the deterministic simulator and
//! prints what happened. The same arguments always give the same run; the summary ends
//! with the trace hash that proves it, and a failing run prints the command that
//! reproduces it.

use clap::{Args, ValueEnum};
use fabric_gossip_core::{PkiId, SignedMessage, Stats};
use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use fabric_gossip_sim::{
    Fault, NodeSpec, Observation, ScheduledFault, Sim, SimConfig, SimRng, TraceMode, Workload,
    data_message, fmt_duration, fmt_schedule, parse_duration, parse_schedule, random_schedule,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `fabric-gossip sim`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SimArgs {
    /// Number of nodes, 1 to 10,000.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seed of the run; a new one is drawn (and printed) when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// `random`, `random:K` (K faults, at most 1,000,000), `none`, or a schedule such as
    /// `partition@1s:0+1/2,heal@3s,crash@4s:2,restart@6s:2`.
    #[arg(long, default_value = "random")]
    faults: String,
    /// Virtual time the workload and faults span, e.g. `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Write the full trace to this file.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// What the nodes do.
    #[arg(long, value_enum, default_value_t = Scenario::Traffic)]
    scenario: Scenario,
    /// Payload bytes per message, at most 100 MiB (the largest message a node takes).
    #[arg(long, default_value_t = 1024)]
    msg_size: usize,
    /// Mean time between two sends of one node (more than zero).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    interval: Duration,
    /// Peers per send, at least 1.
    #[arg(long, default_value_t = 1)]
    fanout: usize,
    /// Sends that use SendWithAck, per mille (0 to 1000).
    #[arg(long, default_value_t = 100)]
    ack_per_mille: u32,
    /// Peers each node ever sends to, drawn once (a membership view: connections made
    /// once, then traffic; more than the other nodes means all of them); 0: a random peer
    /// per send, nearly always a new connection in a large network.
    #[arg(long, default_value_t = 0)]
    view: usize,
    /// One-way link latency.
    #[arg(long, default_value = "200us", value_parser = parse_duration)]
    latency: Duration,
    /// Extra random one-way delay, at most.
    #[arg(long, default_value = "50us", value_parser = parse_duration)]
    jitter: Duration,
    /// Skip the per-step invariant checks and the trace hash, several times faster
    /// (the checks once the network is quiet still run). Ignored with --trace.
    #[arg(long)]
    fast: bool,
    /// Membership scenario: stop once membership is full (skips the dead-member phase and
    /// the run to quiet), so timing the 1,000-node figure does not take minutes.
    #[arg(long)]
    stop_at_full: bool,
    /// Print one JSON object with the result (settings, fault summary, counters, trace
    /// hash, invariants) instead of the header and the table.
    #[arg(long)]
    json: bool,
}

/// Named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every node sends to random peers throughout the run.
    Traffic,
    /// Every node sends to every other at once: dials cross, then one connection per pair.
    Crossing,
    /// Traffic plus a crash/restart of every node in turn, half with new identities.
    Churn,
    /// Every node runs Fabric's membership layer and joins through the first three
    /// (seeds) under the faults; after they heal: time to full membership, then one
    /// member stops and the time until every other declares it dead.
    Membership,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Traffic => "traffic",
            Scenario::Crossing => "crossing",
            Scenario::Churn => "churn",
            Scenario::Membership => "membership",
        }
    }
}

fn default_seed() -> u64 {
    // Only the choice of seed reads the clock; the run itself never does.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn reproduce_command(a: &SimArgs, seed: u64) -> String {
    let view = if a.view == 0 {
        String::new()
    } else {
        format!(" --view {}", a.view)
    };
    format!(
        "fabric-gossip sim --nodes {} --seed {seed} --scenario {} --faults '{}' --duration {} \
         --msg-size {} --interval {} --fanout {} --ack-per-mille {}{view} --latency {} --jitter {}",
        a.nodes,
        a.scenario.name(),
        a.faults,
        fmt_duration(a.duration),
        a.msg_size,
        fmt_duration(a.interval),
        a.fanout,
        a.ack_per_mille,
        fmt_duration(a.latency),
        fmt_duration(a.jitter),
    )
}

fn faults_for(a: &SimArgs, rng: &mut SimRng) -> Result<Vec<ScheduledFault>, String> {
    let spec = a.faults.trim();
    let mut faults = if spec == "none" || spec.is_empty() {
        Vec::new()
    } else if spec == "random" || spec.starts_with("random:") {
        let count = match spec.strip_prefix("random:") {
            Some(k) => match k.parse::<usize>() {
                Ok(k) if k <= MAX_RANDOM_FAULTS => k,
                Ok(_) => {
                    return Err(format!(
                        "--faults random:{k}: at most {MAX_RANDOM_FAULTS} faults"
                    ));
                }
                Err(_) => return Err(format!("random:K needs a number, got {k:?}")),
            },
            None => a.nodes * 3,
        };
        random_schedule(rng, a.nodes, a.duration, count)
    } else {
        let s = parse_schedule(spec)?;
        if let Some(bad) = s
            .iter()
            .find(|f| f.fault.nodes().iter().any(|n| *n >= a.nodes))
        {
            return Err(format!(
                "fault {bad} names a node beyond --nodes {}",
                a.nodes
            ));
        }
        // Its nodes run the test provider, which judges no certificate dates: a step of
        // their clock would change nothing, though the header counted it as a fault.
        if let Some(step) = s
            .iter()
            .find(|f| matches!(f.fault, Fault::StepClock { .. }))
        {
            return Err(format!(
                "fault {step}: the CLI's nodes use the test provider, which judges no \
                 certificate dates, so a clock step would change nothing (step a clock in a \
                 simulator test whose nodes use MspSecurity)"
            ));
        }
        s
    };
    if a.scenario == Scenario::Churn && a.nodes > 0 {
        let step = a.duration / (a.nodes as u32 + 1);
        for n in 0..a.nodes {
            let at = step * (n as u32 + 1);
            faults.push(ScheduledFault {
                at,
                fault: Fault::Crash(n),
            });
            let fault = if n % 2 == 0 {
                Fault::Restart(n)
            } else {
                Fault::RestartNewIdentity(n)
            };
            faults.push(ScheduledFault {
                at: at + step / 2,
                fault,
            });
        }
        faults.sort_by_key(|f| f.at);
    }
    Ok(faults)
}

/// Runs `fabric-gossip sim`: exit status 0 when every invariant held, 1 when one broke
/// (the reproduce line is printed), 2 for bad arguments or I/O errors, a closed stdout
/// among them (the rule of every one-shot command: `out::WriteError`).
pub(crate) fn run(a: &SimArgs) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match simulate(a, &mut out) {
        Ok(Verdict::Held) => ExitCode::SUCCESS,
        Ok(Verdict::Violated(e)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// How a simulation ended.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every invariant held.
    Held,
    /// Some broke; the violations and the reproduce line.
    Violated(String),
}

/// The most nodes `sim` runs: ten times the largest network its benchmarks and the README
/// measure; beyond it a run would take hours, and a typo such as `--nodes 100000000` asked
/// for 29 GB before anything ran.
const MAX_NODES: usize = 10_000;

/// The most faults `random:K` draws (each a few dozen bytes).
const MAX_RANDOM_FAULTS: usize = 1_000_000;

/// Refuses settings no run can use, before anything is allocated or run: each error names
/// its flag, and the command exits 2.
fn check_args(a: &SimArgs) -> Result<(), String> {
    if a.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    if a.nodes > MAX_NODES {
        return Err(format!("--nodes {}: at most {MAX_NODES}", a.nodes));
    }
    let max_size = fabric_gossip_core::proto::MAX_MESSAGE_SIZE;
    if a.msg_size > max_size {
        return Err(format!(
            "--msg-size {}: at most {max_size} bytes (the largest message a node takes)",
            a.msg_size
        ));
    }
    if a.ack_per_mille > 1000 {
        return Err(format!(
            "--ack-per-mille {}: at most 1000 (every send)",
            a.ack_per_mille
        ));
    }
    if a.fanout == 0 {
        return Err("--fanout must be at least 1".into());
    }
    if a.interval.is_zero() {
        return Err("--interval must be more than zero".into());
    }
    if a.stop_at_full && a.scenario != Scenario::Membership {
        return Err(format!(
            "--stop-at-full applies to --scenario membership, not {}",
            a.scenario.name()
        ));
    }
    Ok(())
}

/// The simulator's settings for a run of `a` with `seed`: `--fast` turns the per-step
/// checks and the trace hash off, unless a trace file is asked for.
fn sim_config(a: &SimArgs, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::seeded(seed);
    cfg.latency = a.latency;
    cfg.jitter = a.jitter;
    cfg.auto_ack = true;
    let fast = a.fast && a.trace.is_none();
    cfg.check_invariants = !fast;
    cfg.record_limit = 0;
    cfg.trace = if a.trace.is_some() {
        TraceMode::Full
    } else if fast {
        TraceMode::Off
    } else {
        TraceMode::Hash
    };
    cfg.trace_limit = 50_000_000;
    cfg.reproduce = reproduce_command(a, seed).replace(&format!("--seed {seed}"), "--seed {seed}");
    cfg
}

/// Runs the simulation described by `a`, writing the header and summary to `out`.
fn simulate(a: &SimArgs, out: &mut dyn Write) -> Result<Verdict, String> {
    check_args(a)?;
    let seed = a.seed.unwrap_or_else(default_seed);
    let mut sim = Sim::new(sim_config(a, seed));
    // Fault schedules come from their own stream, so changing the scenario does not
    // change the faults drawn for a seed.
    let mut fault_rng = SimRng::new(seed ^ 0xfa17_5eed);
    let faults = faults_for(a, &mut fault_rng)?;
    // A trace file that cannot be written fails now, not after the whole run.
    let mut trace_file = a
        .trace
        .as_ref()
        .map(|path| {
            std::fs::File::create(path).map_err(|e| format!("writing {}: {e}", path.display()))
        })
        .transpose()?;
    let tracker = if a.scenario == Scenario::Membership {
        Some(add_members(&mut sim, a.nodes)?)
    } else {
        sim.add_nodes(a.nodes);
        None
    };
    // Data messages the scenario sent itself, beside the workload's (`Counters::
    // workload_sends`): the summary's "sent" counts both, as API calls.
    let mut scenario_sends = 0;
    match a.scenario {
        Scenario::Membership => {}
        Scenario::Traffic | Scenario::Churn => sim.set_workload(Workload {
            start: Duration::ZERO,
            stop: a.duration,
            interval: a.interval,
            size: a.msg_size,
            fanout: a.fanout,
            ack_per_mille: a.ack_per_mille,
            view: a.view,
        }),
        Scenario::Crossing => {
            let data = bytes_of(a.msg_size);
            for from in 0..a.nodes {
                let to: Vec<usize> = (0..a.nodes).filter(|t| *t != from).collect();
                let msg = SignedMessage::noop(data_message(from as u64, data.clone()));
                if sim.send_to(from, &msg, &to).is_ok() {
                    scenario_sends += 1;
                }
            }
        }
    }
    sim.schedule_faults(&faults);

    let io = |e: std::io::Error| format!("writing the summary: {e}");
    if !a.json {
        writeln!(
            out,
            "fabric-gossip sim: seed {seed}, {} nodes, scenario {}, {} fault(s), duration {}",
            a.nodes,
            a.scenario.name(),
            faults.len(),
            fmt_duration(a.duration)
        )
        .map_err(io)?;
        if !faults.is_empty() {
            writeln!(out, "  faults: {}", fault_summary(&faults)).map_err(io)?;
        }
    }

    let wall = std::time::Instant::now();
    // Without faults, membership is timed from the start.
    let heal = if faults.is_empty() {
        Duration::ZERO
    } else {
        a.duration
    };
    let membership = tracker.map(|t| membership_phases(&mut sim, heal, &t, a.stop_at_full));
    let tty = std::io::stderr().is_terminal();
    let mut last_print = wall;
    // Run past the workload so that time-outs fire and the network goes quiet.
    let limit = if a.stop_at_full && membership.is_some() {
        sim.elapsed()
    } else {
        sim.elapsed().max(a.duration) + Duration::from_secs(120)
    };
    let slice = Duration::from_millis(50);
    let mut idle = false;
    // Idle as `Sim::run_until_idle` has it: nothing left to do before the end of the run
    // but timers armed past it (each core's identity-usage sweep, an hour ahead, keeps the
    // queue from ever emptying once nodes have talked).
    let end = sim.now() + (limit - sim.elapsed());
    while sim.elapsed() < limit {
        let deadline = sim.now() + slice;
        sim.run_until(deadline, |_| false);
        if sim.is_idle_until(end) {
            idle = true;
            break;
        }
        if last_print.elapsed() >= Duration::from_millis(if tty { 200 } else { 2000 }) {
            last_print = std::time::Instant::now();
            let secs = wall.elapsed().as_secs_f64().max(1e-9);
            let line = format!(
                "virtual {} / {}  deliveries {}  steps {}  {:.0} deliveries/s",
                fmt_secs(sim.elapsed()),
                fmt_secs(a.duration),
                sim.counters().delivered,
                sim.counters().steps,
                sim.counters().delivered as f64 / secs
            );
            if tty {
                eprint!("\r{line}   ");
            } else {
                eprintln!("{line}");
            }
        }
    }
    let wall_time = wall.elapsed();
    if tty {
        eprint!("\r{:80}\r", "");
    }
    let quiescent = if idle {
        sim.check_quiescent()
    } else {
        sim.check()
    };
    let quiescent = match (&membership, quiescent) {
        (Some(m), Ok(())) if m.full_at.is_none() => Err(format!(
            "membership: not full {} after the faults healed\n{}",
            fmt_secs(MEMBERSHIP_LIMIT),
            sim.reproduce_hint()
        )),
        (_, q) => q,
    };

    // The trace file is written before the summary, so that `--json`'s `ok` is exactly
    // "exit status 0".
    let trace = a.trace.as_ref().zip(trace_file.as_mut()).map(|(path, f)| {
        let text = sim.trace().text();
        f.write_all(text.as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))
    });
    if a.json {
        let mut v = summary_json(&sim, wall_time, idle, scenario_sends);
        v["seed"] = json!(seed);
        v["nodes"] = json!(a.nodes);
        v["scenario"] = json!(a.scenario.name());
        v["duration_s"] = json!(a.duration.as_secs_f64());
        v["faults"] = faults_json(&faults);
        if let Some(m) = &membership {
            v["membership"] = m.json();
        }
        v["result"] = json!(if quiescent.is_ok() {
            "held"
        } else {
            "violated"
        });
        if let Err(e) = &quiescent {
            v["violations"] = json!(e.lines().collect::<Vec<_>>());
            v["reproduce"] = json!(sim.reproduce_hint());
        }
        // The exit status in one field, as `ping`, `handshake` and `demo` have it.
        v["ok"] = json!(quiescent.is_ok() && !matches!(trace, Some(Err(_))));
        if let Some(Err(e)) = &trace {
            v["error"] = json!(e);
        }
        writeln!(out, "{v}").map_err(io)?;
    } else {
        print_summary(out, &sim, wall_time, idle, scenario_sends).map_err(io)?;
        if let Some(m) = &membership {
            m.print(out).map_err(io)?;
        }
    }
    if let (Some(path), Some(written)) = (&a.trace, trace) {
        written?;
        if !a.json {
            writeln!(
                out,
                "  trace written to {} ({} lines)",
                path.display(),
                sim.trace().lines().len()
            )
            .map_err(io)?;
        }
    }
    Ok(match quiescent {
        Ok(()) => Verdict::Held,
        Err(e) => Verdict::Violated(e),
    })
}

// ---------------------------------------------------------------- membership

/// How long after the faults heal membership may take to become full, and a stopped
/// member to be declared dead everywhere, before the run counts as failed.
const MEMBERSHIP_LIMIT: Duration = Duration::from_secs(120);

/// Nodes that bootstrap the others.
const MEMBERSHIP_SEEDS: usize = 3;

/// What the observer learns from the membership layers' events: each node's alive view
/// (for the current process) and who declared the stopped member dead.
#[derive(Default)]
struct Tracker {
    incarnation: Vec<u32>,
    alive: Vec<BTreeSet<PkiId>>,
    victim: Option<PkiId>,
    declared_dead: BTreeSet<usize>,
}

impl Tracker {
    /// Every node lists as many members as there are other nodes (checked exactly, by
    /// PKI-ID, with [`exact_full`] before it is believed).
    fn looks_full(&self) -> bool {
        let n = self.alive.len();
        self.alive.iter().all(|v| v.len() + 1 == n)
    }
}

/// Every node's alive view is exactly every other node's current PKI-ID.
fn exact_full(sim: &Sim) -> bool {
    let n = sim.node_count();
    let pkis: Vec<PkiId> = (0..n).map(|i| sim.pki_id(i)).collect();
    (0..n).all(|a| {
        sim.layer::<Discovery>(a).is_some_and(|d| {
            let view: BTreeSet<PkiId> = d.members().into_iter().map(|m| m.pki_id).collect();
            view.len() + 1 == n && (0..n).filter(|b| *b != a).all(|b| view.contains(&pkis[b]))
        })
    })
}

/// Adds `n` nodes running the membership layer with Fabric's defaults, each bootstrapping
/// from the first [`MEMBERSHIP_SEEDS`] nodes (but itself), and an observer that tracks
/// their views.
fn add_members(sim: &mut Sim, n: usize) -> Result<Arc<Mutex<Tracker>>, String> {
    let seeds: Vec<String> = (0..n.min(MEMBERSHIP_SEEDS))
        .map(|i| format!("127.0.0.1:{}", 7051 + i))
        .collect();
    for i in 0..n {
        let boot: Vec<String> = seeds
            .iter()
            .filter(|e| **e != format!("127.0.0.1:{}", 7051 + i))
            .cloned()
            .collect();
        let spec = NodeSpec::new().subscribe_all(false).try_layer(move |ctx| {
            let cfg = DiscoveryConfig::new(ctx.endpoint.clone())
                .with_external_endpoint(ctx.endpoint.clone())
                .with_bootstrap(boot.clone())
                .with_seed(ctx.seed);
            Discovery::new(cfg)
        });
        sim.add_node(spec).map_err(|e| format!("node {i}: {e}"))?;
        if sim.endpoint(i) != format!("127.0.0.1:{}", 7051 + i) {
            return Err(format!("node {i} is at {}", sim.endpoint(i)));
        }
    }
    let tracker = Arc::new(Mutex::new(Tracker {
        incarnation: vec![0; n],
        alive: vec![BTreeSet::new(); n],
        ..Tracker::default()
    }));
    // Events of the processes started above were emitted before the observer existed:
    // their layers only subscribed and dialled, nothing was learnt yet.
    let sink = tracker.clone();
    sim.set_observer(move |node, seen| {
        let Observation::Layer {
            incarnation, event, ..
        } = seen
        else {
            return;
        };
        let Some(e) = event.downcast_ref::<DiscoveryEvent>() else {
            return;
        };
        let mut t = sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.incarnation[node] != incarnation {
            // A new process: a new layer that knows nobody yet.
            t.incarnation[node] = incarnation;
            t.alive[node].clear();
        }
        match e {
            DiscoveryEvent::MemberAlive { member, .. } => {
                t.alive[node].insert(member.pki_id.clone());
            }
            DiscoveryEvent::MemberDead { member, .. } => {
                t.alive[node].remove(&member.pki_id);
                if t.victim.as_ref() == Some(&member.pki_id) {
                    t.declared_dead.insert(node);
                }
            }
            DiscoveryEvent::MemberPurged { member, .. } => {
                t.alive[node].remove(&member.pki_id);
            }
            _ => {}
        }
    });
    Ok(tracker)
}

/// The membership figures of a run.
#[derive(Debug, Default)]
struct MembershipFigures {
    /// Virtual time (from the start) at which every node first listed exactly every other
    /// after the faults healed.
    full_at: Option<Duration>,
    /// When the faults healed.
    healed_at: Duration,
    /// From stopping one member to the last other node declaring it dead.
    dead_detected_in: Option<Duration>,
    /// Wall time of the membership phases.
    wall: Duration,
    /// Wall time, and CPU time of this thread where the system tells it, from the start
    /// of the membership phases to full membership: the figure of the "1,000 nodes in
    /// under a minute" goal.
    full_wall: Option<(Duration, Option<Duration>)>,
}

impl MembershipFigures {
    fn json(&self) -> Value {
        json!({
            "time_to_full_membership_s": self.full_at.map(|d| d.as_secs_f64()),
            "faults_healed_at_s": self.healed_at.as_secs_f64(),
            "time_to_detect_dead_member_s": self.dead_detected_in.map(|d| d.as_secs_f64()),
            "wall_time_s": self.wall.as_secs_f64(),
            "wall_time_to_full_membership_s": self.full_wall.map(|(w, _)| w.as_secs_f64()),
            "cpu_time_to_full_membership_s":
                self.full_wall.and_then(|(_, c)| c).map(|c| c.as_secs_f64()),
        })
    }

    fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let full = self.full_at.map_or_else(
            || {
                format!(
                    "not reached {} after the faults healed",
                    fmt_secs(MEMBERSHIP_LIMIT)
                )
            },
            |t| {
                format!(
                    "{} virtual (faults healed at {})",
                    fmt_secs(t),
                    fmt_secs(self.healed_at)
                )
            },
        );
        writeln!(out, "  full membership       {full}")?;
        if let Some((wall, cpu)) = self.full_wall {
            let cpu = cpu.map_or_else(String::new, |c| format!(" (CPU {})", fmt_secs(c)));
            writeln!(out, "  full after wall time  {}{cpu}", fmt_secs(wall))?;
        }
        let dead = self.dead_detected_in.map_or_else(
            || "not measured".to_string(),
            |t| format!("{} after its stop", fmt_secs(t)),
        );
        writeln!(out, "  dead member detected  {dead}")?;
        writeln!(out, "  membership wall time  {}", fmt_secs(self.wall))
    }
}

/// Runs until the faults have healed and membership is full, then stops the last node
/// and runs until every other declared it dead; finally stops every node so the network
/// can go quiet for the usual checks. With `stop_at_full`, stops every node as soon as
/// membership is full.
fn membership_phases(
    sim: &mut Sim,
    healed: Duration,
    t: &Mutex<Tracker>,
    stop_at_full: bool,
) -> MembershipFigures {
    let wall = std::time::Instant::now();
    let cpu = thread_cpu_time();
    let lock = |t: &Mutex<Tracker>| {
        t.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .looks_full()
    };
    let slice = Duration::from_millis(10);
    let mut fig = MembershipFigures {
        healed_at: healed,
        ..MembershipFigures::default()
    };
    let start = sim.now();
    sim.run_until(start + healed, |_| false);
    let limit = sim.now() + MEMBERSHIP_LIMIT;
    while sim.now() < limit {
        if lock(t) && exact_full(sim) {
            fig.full_at = Some(sim.elapsed());
            let spent = thread_cpu_time().zip(cpu).map(|(now, start)| now - start);
            fig.full_wall = Some((wall.elapsed(), spent));
            break;
        }
        let next = sim.now() + slice;
        sim.run_until(next, |_| false);
    }
    let n = sim.node_count();
    if fig.full_at.is_some() && n >= 2 && !stop_at_full {
        let victim = n - 1;
        {
            let mut g = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            g.victim = Some(sim.pki_id(victim));
        }
        sim.stop_node(victim);
        let stopped = sim.now();
        let limit = stopped + MEMBERSHIP_LIMIT;
        while sim.now() < limit {
            let done = t
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .declared_dead
                .len()
                + 1
                >= n;
            if done {
                fig.dead_detected_in = Some(sim.now() - stopped);
                break;
            }
            let next = sim.now() + slice;
            sim.run_until(next, |_| false);
        }
    }
    for i in 0..n {
        sim.stop_node(i);
    }
    fig.wall = wall.elapsed();
    fig
}

/// CPU time this thread has run (Linux's `/proc/thread-self/schedstat`, nanoseconds on
/// the CPU); `None` elsewhere. On a machine shared with other work it is the fairer figure.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Faults listed one by one in the summary; a random schedule has hundreds at 100 nodes,
/// so the rest are only counted by kind (the seed reproduces them all).
const FAULTS_LISTED: usize = 5;

/// A fault's kind, as its text form starts (`crash`, `partition`, `reader`, …).
fn fault_kind(f: &Fault) -> String {
    let text = f.to_string();
    text.split([':', '='])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// How many faults of each kind, by kind name.
fn fault_counts(faults: &[ScheduledFault]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for f in faults {
        *counts.entry(fault_kind(&f.fault)).or_insert(0) += 1;
    }
    counts
}

/// The schedule in one short line: all of it when short, else counts by kind and the
/// first few.
fn fault_summary(faults: &[ScheduledFault]) -> String {
    if faults.len() <= FAULTS_LISTED {
        return fmt_schedule(faults);
    }
    let kinds: Vec<String> = fault_counts(faults)
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} ({}); first {FAULTS_LISTED}: {}",
        faults.len(),
        kinds.join(", "),
        fmt_schedule(&faults[..FAULTS_LISTED])
    )
}

fn faults_json(faults: &[ScheduledFault]) -> Value {
    let first: Vec<String> = faults
        .iter()
        .take(FAULTS_LISTED)
        .map(ToString::to_string)
        .collect();
    json!({"count": faults.len(), "by_kind": fault_counts(faults), "first": first})
}

/// Failed handshakes by reason label, the reasons that happened only, in counter order.
fn failures_by_label(t: &Stats) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    t.handshake_failures_by_kind()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.label(), n))
}

/// Connections registered at the end, counted at each end (running nodes only).
fn open_connections(sim: &Sim) -> usize {
    (0..sim.node_count())
        .filter_map(|n| sim.comm(n))
        .filter(|c| !c.is_stopped())
        .map(|c| c.connections().len())
        .sum()
}

/// The summary as one JSON object, for `--json`; `scenario_sends`: data messages the
/// scenario sent itself, counted in `sent` with the workload's.
fn summary_json(sim: &Sim, wall: Duration, idle: bool, scenario_sends: u64) -> Value {
    let t = sim.totals();
    let c = sim.counters();
    let sent = c.workload_sends + scenario_sends;
    let open = open_connections(sim);
    let failures: BTreeMap<&str, u64> = failures_by_label(&t).collect();
    let wall_s = wall.as_secs_f64().max(1e-9);
    json!({
        "connections": {
            "opened": t.connections_opened,
            "closed": t.connections_closed,
            "open_at_end": open,
            "crossings": t.crossings,
        },
        "handshakes": {
            "ok": t.handshakes_ok,
            "failed": t.handshake_failures_total(),
            "failures": failures,
        },
        "messages": {
            "sent": sent,
            "written": t.sent,
            "delivered": c.delivered,
            "dropped": {
                "buffer_full": t.dropped_overflow,
                "on_close": t.dropped_on_close,
                "no_connection": t.dropped_no_connection,
                "subscription_full": t.dropped_subscription_overflow,
                "on_stop": t.dropped_on_stop,
            },
        },
        "network": {
            "dials_ok": c.dials_ok,
            "dials_refused": c.dials_refused,
            "dials_hung": c.dials_hung,
            "pings_hung": c.pings_hung,
            "streams": c.streams_opened,
            "streams_reset": c.streams_reset,
            "envelopes_lost": c.envelopes_lost,
            "envelopes_discarded_unread": c.envelopes_discarded_unread,
            "envelopes_corrupted": c.envelopes_corrupted,
        },
        "malformed": t.malformed + t.oversized,
        "presumed_dead": t.presumed_dead,
        "identity_switches": t.identity_switches,
        "virtual_time_s": sim.elapsed().as_secs_f64(),
        "idle": idle,
        "wall_time_s": wall.as_secs_f64(),
        "deliveries_per_wall_s": (c.delivered as f64 / wall_s).round(),
        "steps": c.steps,
        "trace": if sim.trace().mode() == TraceMode::Off {
            Value::Null
        } else {
            json!({"lines": sim.trace().count(), "sha256": sim.trace().hash_hex()})
        },
        "invariants_ok": sim.violations().is_empty(),
    })
}

fn bytes_of(n: usize) -> fabric_gossip_core::proto::bytes::Bytes {
    vec![0x5a; n].into()
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn print_summary(
    out: &mut dyn Write,
    sim: &Sim,
    wall: Duration,
    idle: bool,
    scenario_sends: u64,
) -> std::io::Result<()> {
    let t = sim.totals();
    let c = sim.counters();
    let sent = c.workload_sends + scenario_sends;
    let open = open_connections(sim);
    let failures: Vec<String> = failures_by_label(&t)
        .map(|(l, n)| format!("{l} {n}"))
        .collect();
    let dropped = t.dropped_overflow
        + t.dropped_on_close
        + t.dropped_no_connection
        + t.dropped_subscription_overflow
        + t.dropped_on_stop;
    let wall_s = wall.as_secs_f64().max(1e-9);
    let rows: Vec<(&str, String)> = vec![
        (
            "connections",
            format!(
                "opened {}  closed {}  open at end {}  crossings {}",
                t.connections_opened, t.connections_closed, open, t.crossings
            ),
        ),
        (
            "handshakes",
            format!(
                "ok {}  failed {}{}",
                t.handshakes_ok,
                t.handshake_failures_total(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failures.join(", "))
                }
            ),
        ),
        (
            "messages",
            format!(
                "sent {}  written {}  delivered {}  dropped {}{}",
                sent,
                t.sent,
                c.delivered,
                dropped,
                // Read as a failure by an operator's trial (the membership scenario).
                if sent == 0 {
                    "  (no data messages in this run: written counts the membership layer's)"
                } else {
                    ""
                }
            ),
        ),
        (
            "  dropped",
            format!(
                "buffer full {}  on close {}  no connection {}  subscription full {}  on stop {}",
                t.dropped_overflow,
                t.dropped_on_close,
                t.dropped_no_connection,
                t.dropped_subscription_overflow,
                t.dropped_on_stop
            ),
        ),
        (
            "network",
            format!(
                "dials ok {} refused {} hung {}  pings hung {}  streams {} reset {}  lost {}  \
                 discarded unread {}  corrupted {}",
                c.dials_ok,
                c.dials_refused,
                c.dials_hung,
                c.pings_hung,
                c.streams_opened,
                c.streams_reset,
                c.envelopes_lost,
                c.envelopes_discarded_unread,
                c.envelopes_corrupted
            ),
        ),
        (
            "malformed",
            format!(
                "{} envelope(s) closed their connection",
                t.malformed + t.oversized
            ),
        ),
        ("presumed dead", t.presumed_dead.to_string()),
        (
            "identity switches",
            if t.identity_switches == 0 {
                "0".to_owned()
            } else {
                // Read as churn by an operator's trial: say where they come from.
                format!(
                    "{}  (sends to a restarted node's first identity: the workload addresses \
                     a node so half the time, as a peer that missed the restart would)",
                    t.identity_switches
                )
            },
        ),
        (
            "virtual time",
            format!(
                "{}{}",
                fmt_secs(sim.elapsed()),
                if idle {
                    " (idle: the run goes on past --duration until nothing is left to do)"
                } else {
                    ""
                }
            ),
        ),
        ("wall time", fmt_secs(wall)),
        (
            "deliveries/wall s",
            if sent == 0 {
                "- (no data messages)".to_owned()
            } else {
                format!("{:.0}", c.delivered as f64 / wall_s)
            },
        ),
        ("steps", c.steps.to_string()),
        (
            "trace",
            if sim.trace().mode() == TraceMode::Off {
                "off (--fast)".to_string()
            } else {
                format!(
                    "{} lines, sha256 {}",
                    sim.trace().count(),
                    sim.trace().hash_hex()
                )
            },
        ),
        (
            "invariants",
            if sim.violations().is_empty() && idle {
                "ok".to_string()
            } else if sim.violations().is_empty() {
                // The checks of a quiet network (one connection per pair, ...) need one.
                // A --stop-at-full run ends on purpose before it is quiet: not a network
                // that would not go quiet.
                "ok after every step; not checked quiet (the run ended before the network \
                 went quiet)"
                    .to_string()
            } else {
                format!("{} VIOLATED", sim.violations().len())
            },
        ),
    ];
    for (k, v) in rows {
        writeln!(out, "  {k:<18} {v}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }

    fn sim(args: &[&str]) -> (Result<Verdict, String>, String) {
        let a = parsed(args);
        let mut out = Vec::new();
        let r = simulate(&a, &mut out);
        (r, String::from_utf8(out).expect("utf-8"))
    }

    fn row<'a>(out: &'a str, key: &str) -> &'a str {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} row in\n{out}"))
    }

    #[test]
    fn crossing_summary_counts_one_connection_per_pair() {
        let (r, out) = sim(&[
            "--nodes",
            "4",
            "--seed",
            "1",
            "--scenario",
            "crossing",
            "--faults",
            "none",
        ]);
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        assert!(row(&out, "connections").contains("open at end 12"), "{out}");
        assert!(row(&out, "messages").contains("delivered 12"), "{out}");
        assert!(row(&out, "invariants").ends_with("ok"), "{out}");
        assert!(row(&out, "deliveries/wall s").len() > 20, "{out}");
    }

    /// The crossing scenario's messages are data messages: counted as sent, with a rate,
    /// not taken for the membership layer's. (It printed "sent 0 ... (no data messages in
    /// this run: written counts the membership layer's)" and no rate.)
    #[test]
    fn crossing_summary_counts_its_data_messages_as_sent() {
        let args = "--nodes 4 --seed 1 --scenario crossing --faults none";
        let (r, out) = sim(&args.split(' ').collect::<Vec<_>>());
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        let messages = row(&out, "messages");
        assert!(messages.contains(" sent 4 "), "{out}");
        assert!(!messages.contains("no data messages"), "{out}");
        let rate = row(&out, "deliveries/wall s");
        assert!(!rate.contains("no data messages"), "{out}");
        let (_, json) = sim(&format!("{args} --json").split(' ').collect::<Vec<_>>());
        let v: Value = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(v["messages"]["sent"], 4, "{v}");
    }

    /// A run whose network went quiet is idle, and so checked as quiet (one connection per
    /// pair, no crossing secondary left), although every core keeps its identity-usage
    /// sweep armed an hour ahead. Before, the CLI waited for an empty queue, which never
    /// came: every run went on 120 s past --duration, `idle` was false and the quiescent
    /// checks never ran, while the table said "invariants ok".
    #[test]
    fn a_run_that_went_quiet_is_idle_and_checked_as_quiet() {
        for args in [
            "--nodes 3 --seed 1 --faults none --duration 1s",
            "--nodes 6 --seed 1 --faults random --duration 10s",
            "--nodes 4 --seed 2 --scenario crossing --faults none",
        ] {
            let (r, json) = sim(&format!("{args} --json").split(' ').collect::<Vec<_>>());
            assert_eq!(r, Ok(Verdict::Held), "{args}: {json}");
            let v: Value = serde_json::from_str(&json).expect("one JSON object");
            assert_eq!(v["idle"], true, "{args}: {v}");
            let end = v["virtual_time_s"].as_f64().expect("a time");
            assert!(end < 60.0, "{args}: not 120 s past --duration: {v}");
            let (_, out) = sim(&args.split(' ').collect::<Vec<_>>());
            assert!(row(&out, "virtual time").contains("(idle"), "{args}: {out}");
            assert!(row(&out, "invariants").ends_with(" ok"), "{args}: {out}");
        }
    }

    #[test]
    fn same_seed_same_trace_and_trace_file_written() {
        let path =
            std::env::temp_dir().join(format!("fabric-gossip-sim-{}.trace", std::process::id()));
        let p = path.to_str().expect("utf-8 temp path");
        let args = [
            "--nodes",
            "3",
            "--seed",
            "42",
            "--duration",
            "1s",
            "--trace",
            p,
        ];
        let (r1, out1) = sim(&args);
        let text = std::fs::read_to_string(&path).expect("trace file");
        let (r2, out2) = sim(&args);
        let _ = std::fs::remove_file(&path);
        assert_eq!(r1, Ok(Verdict::Held), "{out1}");
        assert_eq!(r2, Ok(Verdict::Held), "{out2}");
        assert_eq!(
            row(&out1, "trace"),
            row(&out2, "trace"),
            "the trace hash is the seed's"
        );
        assert!(
            text.lines().count() > 100 && text.contains(" > Dial "),
            "{text}"
        );
        assert!(
            out1.contains("faults: "),
            "random faults by default: {out1}"
        );
        let lines = text.lines().count();
        assert!(
            out1.ends_with(&format!("  trace written to {p} ({lines} lines)\n")),
            "{out1}"
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(sim(&["--nodes", "0"]).0.is_err());
        assert!(sim(&["--nodes", "2", "--faults", "crash@1s:5"]).0.is_err());
        assert!(
            sim(&["--nodes", "2", "--faults", "explode@1s:0"])
                .0
                .is_err()
        );
        assert!(sim(&["--nodes", "2", "--faults", "random:x"]).0.is_err());
        assert!(Wrap::try_parse_from(["sim", "--duration", "soon"]).is_err());
    }

    /// Found by an operator: sizes that would have asked for gigabytes (an allocation
    /// failure, an abort and a backtrace) and settings no run can use are refused, naming
    /// the flag, before anything runs; a trace file that cannot be written is refused
    /// before the run rather than after it.
    #[test]
    fn settings_no_run_can_use_are_refused_first() {
        let refused = |args: &[&str], flag: &str| {
            let (r, out) = sim(args);
            let e = r.expect_err(flag);
            assert!(e.contains(flag), "{e}");
            assert!(out.is_empty(), "{out}");
        };
        refused(&["--nodes", "100000000"], "--nodes");
        refused(&["--faults", "random:1000000000"], "random:");
        refused(&["--msg-size", "999999999999"], "--msg-size");
        refused(&["--ack-per-mille", "2000"], "--ack-per-mille");
        refused(&["--fanout", "0"], "--fanout");
        refused(&["--interval", "0s"], "--interval");
        refused(&["--stop-at-full"], "--stop-at-full");
        // A clock step, which the CLI's nodes (the test provider) would ignore.
        refused(&["--faults", "clock@1s:0=-48h"], "clock@1s:0=-172800s");
        let dir = std::env::temp_dir().join(format!("no-such-dir-{}", std::process::id()));
        let path = dir.join("t.txt");
        refused(&["--trace", path.to_str().unwrap()], "no-such-dir");
        // The largest allowed still start (a short run of each edge).
        let (r, _) = sim(&[
            "--nodes",
            "2",
            "--duration",
            "50ms",
            "--ack-per-mille",
            "1000",
        ]);
        assert_eq!(r, Ok(Verdict::Held));
        assert_eq!(
            fabric_gossip_sim::parse_duration("2h"),
            Ok(Duration::from_secs(7200))
        );
        assert!(
            fabric_gossip_sim::parse_duration("99999999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn churn_restarts_every_node_and_switches_identities() {
        let (r, out) = sim(&[
            "--nodes",
            "3",
            "--seed",
            "3",
            "--scenario",
            "churn",
            "--faults",
            "none",
            "--duration",
            "3s",
        ]);
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        assert!(out.contains("restart-new@"), "{out}");
        assert!(!row(&out, "identity switches").ends_with(" 0"), "{out}");
    }

    #[test]
    fn membership_reports_time_to_full_membership_and_to_detect_a_dead_member() {
        let args = [
            "--scenario",
            "membership",
            "--nodes",
            "6",
            "--seed",
            "5",
            "--faults",
            "random:6",
            "--duration",
            "3s",
        ];
        let (r, table) = sim(&args);
        assert_eq!(r, Ok(Verdict::Held), "{table}");
        assert!(
            row(&table, "full membership").contains("virtual"),
            "{table}"
        );
        assert!(
            row(&table, "dead member detected").contains("after its stop"),
            "{table}"
        );
        // No data messages: said so, not "delivered 0" and "0 deliveries a second" alone,
        // which an operator's trial read as a failure.
        assert!(
            row(&table, "messages")
                .ends_with("(no data messages in this run: written counts the membership layer's)"),
            "{table}"
        );
        assert_eq!(
            row(&table, "deliveries/wall s").trim(),
            "deliveries/wall s  - (no data messages)"
        );
        let (r, out) = sim(&[&args[..], &["--json"]].concat());
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        let v: Value = serde_json::from_str(&out).expect("one JSON object");
        let m = &v["membership"];
        let full = m["time_to_full_membership_s"].as_f64().expect("a time");
        assert!(full >= 3.0, "full membership before the faults healed: {m}");
        let dead = m["time_to_detect_dead_member_s"].as_f64().expect("a time");
        // Fabric's expiry (25 s) plus one check (2.5 s) and one heartbeat (5 s) at most.
        assert!(dead <= 32.5, "{m}");
        // Same seed, same run.
        let (_, again) = sim(&[&args[..], &["--json"]].concat());
        let w: Value = serde_json::from_str(&again).expect("one JSON object");
        assert_eq!(v["trace"], w["trace"]);
        assert_eq!(
            v["membership"]["time_to_full_membership_s"],
            w["membership"]["time_to_full_membership_s"]
        );
    }

    #[test]
    fn stop_at_full_ends_the_membership_run_at_full_membership() {
        let args: Vec<&str> = "--scenario membership --nodes 5 --seed 3 --faults none --json"
            .split(' ')
            .collect();
        let (r, full_run) = sim(&args);
        assert_eq!(r, Ok(Verdict::Held), "{full_run}");
        let (r, out) = sim(&[&args[..], &["--stop-at-full"]].concat());
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        let (v, w): (Value, Value) = (
            serde_json::from_str(&full_run).expect("one JSON object"),
            serde_json::from_str(&out).expect("one JSON object"),
        );
        let full = w["membership"]["time_to_full_membership_s"].as_f64();
        assert!(full.is_some(), "{w}");
        assert_eq!(full, v["membership"]["time_to_full_membership_s"].as_f64());
        if cfg!(target_os = "linux") {
            assert!(w["membership"]["cpu_time_to_full_membership_s"].is_number());
        }
        assert!(
            w["membership"]["time_to_detect_dead_member_s"].is_null(),
            "{w}"
        );
        assert!(
            v["membership"]["time_to_detect_dead_member_s"].is_number(),
            "{v}"
        );
        // The run ends when membership is full, not 120 s later: not one slice more, and
        // without the run to quiet; the whole run goes on until the network is idle.
        let end = w["virtual_time_s"].as_f64().expect("a time");
        assert_eq!(Some(end), full, "{w}");
        assert!(v["virtual_time_s"].as_f64() > Some(end + 3.0), "{v}");
        assert_eq!(
            (&w["idle"], &v["idle"]),
            (&json!(false), &json!(true)),
            "{w}\n{v}"
        );
        // The table says the quiet checks did not run, for a run that ended before the
        // network went quiet, not that the network would not go quiet.
        let table: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
        let (_, out) = sim(&[&table[..], &["--stop-at-full"]].concat());
        assert!(
            row(&out, "invariants").ends_with(
                " ok after every step; not checked quiet (the run ended before the network \
                 went quiet)"
            ),
            "{out}"
        );
    }

    #[test]
    fn json_is_one_object_with_the_same_result_as_the_table() {
        let args = ["--nodes", "3", "--seed", "42", "--duration", "1s"];
        let (r, table) = sim(&args);
        assert_eq!(r, Ok(Verdict::Held), "{table}");
        let (r, out) = sim(&[&args[..], &["--json"]].concat());
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let v: Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(v["result"], "held", "{v}");
        assert_eq!(v["seed"], 42);
        let hash = v["trace"]["sha256"].as_str().expect("a trace hash");
        assert!(row(&table, "trace").ends_with(hash), "{table}\n{v}");
        let delivered = v["messages"]["delivered"].as_u64().expect("delivered");
        assert!(
            row(&table, "messages").contains(&format!("delivered {delivered} ")),
            "{table}\n{v}"
        );
        let count = v["faults"]["count"].as_u64().expect("fault count");
        assert!(
            table.contains(&format!("scenario traffic, {count} fault(s)")),
            "{table}\n{v}"
        );
        let by_kind: u64 = v["faults"]["by_kind"]
            .as_object()
            .expect("counts by kind")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(by_kind, count, "{v}");
    }

    #[test]
    fn a_long_fault_schedule_is_summarized_by_kind() {
        let (r, out) = sim(&[
            "--nodes",
            "6",
            "--seed",
            "5",
            "--duration",
            "1s",
            "--faults",
            "random:300",
        ]);
        assert!(r.is_ok(), "{out}");
        let line = row(&out, "faults:");
        assert!(line.len() < 400, "{line}");
        assert!(line.contains("first 5: "), "{line}");
        // Counts by kind add up to the whole schedule (plus its recovery).
        let counts: usize = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(kinds, _)| kinds)
            .expect("counts by kind")
            .split(", ")
            .map(|k| {
                k.rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .expect("count")
            })
            .sum();
        let total: usize = line
            .trim_start()
            .strip_prefix("faults: ")
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("total");
        assert!(total >= 300, "{line}");
        assert_eq!(counts, total, "{line}");
        // A short schedule is printed whole, so it can be copied into --faults.
        let (_, out) = sim(&[
            "--nodes",
            "2",
            "--seed",
            "1",
            "--duration",
            "1s",
            "--faults",
            "crash@1ms:1",
        ]);
        assert!(
            row(&out, "faults:").ends_with("faults: crash@1ms:1"),
            "{out}"
        );
    }

    fn parsed(args: &[&str]) -> SimArgs {
        Wrap::try_parse_from(std::iter::once("sim").chain(args.iter().copied()))
            .expect("arguments parse")
            .args
    }

    /// A failing run prints this line for the user to paste: it must name every setting
    /// that shapes the run (`--view` only when set), and read back as the same settings.
    #[test]
    fn the_reproduce_line_reads_back_as_the_same_run() {
        let a = parsed(&[
            "--nodes",
            "7",
            "--scenario",
            "churn",
            "--faults",
            "crash@1s:0",
            "--duration",
            "1500ms",
            "--msg-size",
            "10",
            "--interval",
            "20ms",
            "--fanout",
            "2",
            "--ack-per-mille",
            "0",
            "--view",
            "3",
            "--latency",
            "1ms",
            "--jitter",
            "0s",
        ]);
        let line = reproduce_command(&a, 7);
        assert_eq!(
            line,
            "fabric-gossip sim --nodes 7 --seed 7 --scenario churn --faults 'crash@1s:0' \
             --duration 1500ms --msg-size 10 --interval 20ms --fanout 2 --ack-per-mille 0 \
             --view 3 --latency 1ms --jitter 0s"
        );
        let words: Vec<&str> = line
            .strip_prefix("fabric-gossip sim ")
            .expect("the command")
            .split(' ')
            .map(|w| w.trim_matches('\''))
            .collect();
        assert_eq!(reproduce_command(&parsed(&words), 7), line);
        // Without --view (a random peer per send) the line has none.
        let line = reproduce_command(&parsed(&[]), 1);
        assert!(!line.contains("--view"), "{line}");
        assert!(line.contains("--faults 'random' --duration 10s"), "{line}");
    }

    /// Without --seed the seed is drawn from the clock, so that two runs differ; a constant
    /// would make every unseeded run the same one.
    #[test]
    fn an_omitted_seed_is_drawn_from_the_clock() {
        let nanos = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos() as u64
        };
        let before = nanos();
        let seed = default_seed();
        let after = nanos();
        assert!(before <= seed && seed <= after, "{before} {seed} {after}");
    }

    /// The churn scenario crashes every node in turn at even steps of the duration and
    /// restarts it half a step later, every other one with a new identity, merged in time
    /// order with the faults given; other scenarios add nothing.
    #[test]
    fn churn_crashes_and_restarts_every_node_in_turn() {
        let mut rng = SimRng::new(1);
        let churn = |faults: &str| {
            parsed(&[
                "--nodes",
                "3",
                "--scenario",
                "churn",
                "--duration",
                "4s",
                "--faults",
                faults,
            ])
        };
        let f = faults_for(&churn("none"), &mut rng).expect("a schedule");
        assert_eq!(
            fmt_schedule(&f),
            "crash@1s:0,restart@1500ms:0,crash@2s:1,restart-new@2500ms:1,crash@3s:2,\
             restart@3500ms:2"
        );
        let f = faults_for(&churn("heal@2200ms"), &mut rng).expect("a schedule");
        assert_eq!(
            fmt_schedule(&f),
            "crash@1s:0,restart@1500ms:0,crash@2s:1,heal@2200ms,restart-new@2500ms:1,\
             crash@3s:2,restart@3500ms:2"
        );
        for scenario in ["traffic", "crossing", "membership"] {
            let a = parsed(&["--nodes", "3", "--scenario", scenario, "--faults", "none"]);
            assert_eq!(faults_for(&a, &mut rng), Ok(Vec::new()), "{scenario}");
        }
    }

    /// `random` draws three faults per node from the run's fault stream, `random:K`
    /// exactly K (each plus the recovery), `none` or nothing none at all.
    #[test]
    fn random_faults_are_drawn_three_per_node_or_as_many_as_asked() {
        let draw = |faults: &str| {
            faults_for(
                &parsed(&["--nodes", "4", "--duration", "2s", "--faults", faults]),
                &mut SimRng::new(9),
            )
        };
        let want = |count| random_schedule(&mut SimRng::new(9), 4, Duration::from_secs(2), count);
        assert_eq!(draw("random"), Ok(want(12)));
        assert_ne!(want(12), want(11));
        assert_eq!(draw(" random:5 "), Ok(want(5)));
        assert_eq!(
            draw("random:1000000").map(|f| f.len() >= 1_000_000),
            Ok(true)
        );
        assert_eq!(draw("none"), Ok(Vec::new()));
        assert_eq!(draw(""), Ok(Vec::new()));
    }

    /// The largest settings allowed pass the checks (only one more is refused): the limits
    /// are bounds, not off by one.
    #[test]
    fn the_largest_settings_allowed_pass_the_checks() {
        let max_size = fabric_gossip_core::proto::MAX_MESSAGE_SIZE;
        let (size, over) = (max_size.to_string(), (max_size + 1).to_string());
        for (ok, args) in [
            (true, vec!["--nodes", "10000"]),
            (false, vec!["--nodes", "10001"]),
            (true, vec!["--msg-size", &size]),
            (false, vec!["--msg-size", &over]),
            (true, vec!["--ack-per-mille", "1000"]),
            (false, vec!["--ack-per-mille", "1001"]),
            (true, vec!["--scenario", "membership", "--stop-at-full"]),
        ] {
            assert_eq!(check_args(&parsed(&args)).is_ok(), ok, "{args:?}");
        }
    }

    /// The summary names each kind of fault with its count, sorted by name, then lists
    /// the first few as they would be written to --faults.
    #[test]
    fn a_schedule_summary_counts_each_kind_by_name() {
        let s = parse_schedule(
            "crash@1s:0,restart@2s:0,crash@3s:1,partition@4s:0/1,heal@5s,reader@6s:1=paused,\
             badsig@7s:0=off",
        )
        .expect("a schedule");
        assert_eq!(
            fault_summary(&s),
            "7 (badsig 1, crash 2, heal 1, partition 1, reader 1, restart 1); first 5: \
             crash@1s:0,restart@2s:0,crash@3s:1,partition@4s:0/1,heal@5s"
        );
        let v = faults_json(&s);
        assert_eq!(v["by_kind"]["crash"], 2, "{v}");
        assert_eq!(v["first"][4], "heal@5s", "{v}");
    }

    /// A seed's fault schedule is part of what "the same arguments always give the same
    /// run" promises: a reproduce line printed by an earlier build must draw the same
    /// faults. The schedule comes from its own stream, so the scenario does not change it.
    #[test]
    fn a_seed_draws_the_same_faults_in_every_scenario() {
        for scenario in ["traffic", "crossing"] {
            let (r, out) = sim(&[
                "--nodes",
                "3",
                "--seed",
                "42",
                "--duration",
                "1s",
                "--faults",
                "random:4",
                "--scenario",
                scenario,
                "--json",
            ]);
            assert_eq!(r, Ok(Verdict::Held), "{out}");
            let v: Value = serde_json::from_str(&out).expect("one JSON object");
            assert_eq!(
                v["faults"]["first"],
                json!([
                    "partition@180ms:2/0+1",
                    "isolate@184ms:0",
                    "isolate@913ms:1",
                    "corrupt@942ms:0/1",
                    "heal@1s"
                ]),
                "{scenario}: {v}"
            );
        }
    }

    /// The arguments of a membership run of four nodes (seed 3) for `duration`, with
    /// `faults`.
    fn membership_of_four<'a>(duration: &'a str, faults: &'a str) -> [&'a str; 10] {
        [
            "--scenario",
            "membership",
            "--nodes",
            "4",
            "--seed",
            "3",
            "--duration",
            duration,
            "--faults",
            faults,
        ]
    }

    /// Membership that never becomes full (a node isolated for good) fails the run, says
    /// so in the table, and the table still reports what it measured.
    #[test]
    fn membership_that_never_becomes_full_fails_the_run() {
        let args = membership_of_four("1s", "isolate@0s:0");
        let (r, out) = sim(&args);
        let e = match r {
            Ok(Verdict::Violated(e)) => e,
            other => panic!("{other:?}\n{out}"),
        };
        assert!(
            e.starts_with("membership: not full 120.000s after the faults healed\n"),
            "{e}"
        );
        assert!(e.contains("--faults 'isolate@0s:0'"), "{e}");
        assert!(
            row(&out, "full membership").ends_with("not reached 120.000s after the faults healed"),
            "{out}"
        );
        assert!(
            row(&out, "dead member detected").ends_with("not measured"),
            "{out}"
        );
        assert!(!out.contains("full after wall time"), "{out}");
        let (r, out) = sim(&[&args[..], &["--json"]].concat());
        assert!(matches!(r, Ok(Verdict::Violated(_))), "{out}");
        let v: Value = serde_json::from_str(&out).expect("one JSON object");
        assert_eq!(
            (&v["result"], &v["ok"]),
            (&json!("violated"), &json!(false)),
            "{v}"
        );
        assert!(
            v["membership"]["time_to_full_membership_s"].is_null(),
            "{v}"
        );
        assert_eq!(v["membership"]["faults_healed_at_s"], 1.0, "{v}");
    }

    /// Handshakes that fail are broken down by reason, only the reasons that happened,
    /// adding up to the failures; dropped messages likewise by cause.
    #[test]
    fn failures_and_drops_are_broken_down_by_cause() {
        let (r, out) = sim(&[
            "--nodes",
            "2",
            "--seed",
            "1",
            "--duration",
            "1s",
            "--faults",
            "badsig@0s:1,badsig@500ms:1=off",
        ]);
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        assert!(
            row(&out, "handshakes")
                .ends_with("failed 145 (bad_signature 98, refused_by_remote 47)"),
            "{out}"
        );
        // Seed 1 drops for four of the five causes.
        let (r, out) = sim(&[
            "--nodes",
            "5",
            "--seed",
            "1",
            "--duration",
            "2s",
            "--faults",
            "random:200",
            "--interval",
            "1ms",
            "--msg-size",
            "20000",
            "--fanout",
            "2",
            "--fast",
        ]);
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        assert!(row(&out, "messages").ends_with("dropped 8739"), "{out}");
        assert_eq!(
            row(&out, "dropped").trim(),
            "dropped          buffer full 7353  on close 355  no connection 1021  \
             subscription full 0  on stop 10"
        );
        assert!(row(&out, "trace").ends_with("off (--fast)"), "{out}");
    }

    /// Times in the table are seconds with milliseconds, rounded.
    #[test]
    fn times_are_seconds_with_milliseconds() {
        assert_eq!(fmt_secs(Duration::from_micros(1_234_567)), "1.235s");
        assert_eq!(fmt_secs(Duration::ZERO), "0.000s");
    }

    /// `--fast` skips the per-step invariant checks and the trace hash; a trace file
    /// asked for overrides it (a trace worth writing is one of a checked run).
    #[test]
    fn fast_skips_the_per_step_checks_unless_a_trace_is_written() {
        for (args, checks, trace) in [
            (&[][..], true, TraceMode::Hash),
            (&["--fast"][..], false, TraceMode::Off),
            (&["--fast", "--trace", "t.txt"][..], true, TraceMode::Full),
            (&["--trace", "t.txt"][..], true, TraceMode::Full),
        ] {
            let cfg = sim_config(&parsed(args), 3);
            assert_eq!(
                (cfg.check_invariants, cfg.trace),
                (checks, trace),
                "{args:?}"
            );
            assert!(
                cfg.reproduce.contains(" --seed {seed} "),
                "{}",
                cfg.reproduce
            );
        }
    }

    /// Membership is timed from the moment the faults heal: a network that was full long
    /// before (the only fault a heal) is full at that moment, not earlier.
    #[test]
    fn membership_is_timed_from_when_the_faults_heal() {
        let (r, out) = sim(&[&membership_of_four("2s", "heal@2s")[..], &["--json"]].concat());
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        let v: Value = serde_json::from_str(&out).expect("one JSON object");
        let m = &v["membership"];
        assert_eq!(m["faults_healed_at_s"], 2.0, "{m}");
        assert_eq!(m["time_to_full_membership_s"], 2.0, "{m}");
    }

    /// The crossing scenario's messages carry --msg-size payload bytes: the trace shows
    /// each envelope's size.
    #[test]
    fn crossing_messages_carry_the_payload_size_asked_for() {
        let path = std::env::temp_dir().join(format!(
            "fabric-gossip-sim-crossing-{}.trace",
            std::process::id()
        ));
        let p = path.to_str().expect("utf-8 temp path");
        let (r, out) = sim(&[
            "--nodes",
            "2",
            "--seed",
            "1",
            "--scenario",
            "crossing",
            "--faults",
            "none",
            "--msg-size",
            "5000",
            "--trace",
            p,
        ]);
        let text = std::fs::read_to_string(&path).expect("trace file");
        let _ = std::fs::remove_file(&path);
        assert_eq!(r, Ok(Verdict::Held), "{out}");
        let largest = text
            .split_whitespace()
            .filter_map(|w| w.strip_suffix('B')?.parse::<usize>().ok())
            .max();
        assert!(
            largest.is_some_and(|n| (5000..5200).contains(&n)),
            "{largest:?}"
        );
    }
}
