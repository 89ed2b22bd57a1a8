//! `fabric-gossip sim`: runs a random or named scenario on the deterministic simulator and
//! prints what happened. The same arguments always give the same run; the summary ends
//! with the trace hash that proves it, and a failing run prints the command that
//! reproduces it.

use clap::{Args, ValueEnum};
use fabric_gossip_core::SignedMessage;
use fabric_gossip_sim::{
    Fault, ScheduledFault, Sim, SimConfig, SimRng, TraceMode, Workload, data_message, fmt_duration,
    fmt_schedule, parse_duration, parse_schedule, random_schedule,
};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `fabric-gossip sim`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seed of the run; a new one is drawn (and printed) when omitted.
    #[arg(long)]
    seed: Option<u64>,
    /// `random`, `random:K` (K faults), `none`, or a schedule such as
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
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    msg_size: usize,
    /// Mean time between two sends of one node.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    interval: Duration,
    /// Peers per send.
    #[arg(long, default_value_t = 1)]
    fanout: usize,
    /// Sends that use SendWithAck, per mille.
    #[arg(long, default_value_t = 100)]
    ack_per_mille: u32,
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
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Traffic => "traffic",
            Scenario::Crossing => "crossing",
            Scenario::Churn => "churn",
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
    format!(
        "fabric-gossip sim --nodes {} --seed {seed} --scenario {} --faults '{}' --duration {} \
         --msg-size {} --interval {} --fanout {} --ack-per-mille {} --latency {} --jitter {}",
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
            Some(k) => k
                .parse()
                .map_err(|_| format!("random:K needs a number, got {k:?}"))?,
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
/// (the reproduce line is printed), 2 for bad arguments or I/O errors.
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

/// Runs the simulation described by `a`, writing the header and summary to `out`.
fn simulate(a: &SimArgs, out: &mut dyn Write) -> Result<Verdict, String> {
    if a.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    let seed = a.seed.unwrap_or_else(default_seed);
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
    let mut sim = Sim::new(cfg);
    // Fault schedules come from their own stream, so changing the scenario does not
    // change the faults drawn for a seed.
    let mut fault_rng = SimRng::new(seed ^ 0xfa17_5eed);
    let faults = faults_for(a, &mut fault_rng)?;
    sim.add_nodes(a.nodes);
    match a.scenario {
        Scenario::Traffic | Scenario::Churn => sim.set_workload(Workload {
            start: Duration::ZERO,
            stop: a.duration,
            interval: a.interval,
            size: a.msg_size,
            fanout: a.fanout,
            ack_per_mille: a.ack_per_mille,
        }),
        Scenario::Crossing => {
            let data = bytes_of(a.msg_size);
            for from in 0..a.nodes {
                let to: Vec<usize> = (0..a.nodes).filter(|t| *t != from).collect();
                let msg = SignedMessage::noop(data_message(from as u64, data.clone()));
                let _ = sim.send_to(from, &msg, &to);
            }
        }
    }
    sim.schedule_faults(&faults);

    let io = |e: std::io::Error| format!("writing the summary: {e}");
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
        writeln!(out, "  faults: {}", fmt_schedule(&faults)).map_err(io)?;
    }

    let wall = std::time::Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_print = wall;
    // Run past the workload so that time-outs fire and the network goes quiet.
    let limit = a.duration + Duration::from_secs(120);
    let slice = Duration::from_millis(50);
    let mut idle = false;
    while sim.elapsed() < limit {
        let deadline = sim.now() + slice;
        sim.run_until(deadline, |_| false);
        if sim.is_idle() {
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

    print_summary(out, &sim, wall_time, idle).map_err(io)?;
    if let Some(path) = &a.trace {
        let text = sim.trace().text();
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        writeln!(
            out,
            "  trace written to {} ({} lines)",
            path.display(),
            sim.trace().lines().len()
        )
        .map_err(io)?;
    }
    Ok(match quiescent {
        Ok(()) => Verdict::Held,
        Err(e) => Verdict::Violated(e),
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
) -> std::io::Result<()> {
    let t = sim.totals();
    let c = sim.counters();
    let open: usize = (0..sim.node_count())
        .filter_map(|n| sim.comm(n))
        .filter(|c| !c.is_stopped())
        .map(|c| c.connections().len())
        .sum();
    let failures: Vec<String> = t
        .handshake_failures_by_label()
        .iter()
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
                "sent {}  written {}  delivered {}  dropped {}",
                c.workload_sends, t.sent, c.delivered, dropped
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
                "dials ok {} refused {} hung {}  pings hung {}  streams {} reset {}  lost {}  corrupted {}",
                c.dials_ok,
                c.dials_refused,
                c.dials_hung,
                c.pings_hung,
                c.streams_opened,
                c.streams_reset,
                c.envelopes_lost,
                c.envelopes_corrupted
            ),
        ),
        (
            "malformed",
            format!("{} envelope(s) closed their connection", t.malformed),
        ),
        ("presumed dead", t.presumed_dead.to_string()),
        ("identity switches", t.identity_switches.to_string()),
        (
            "virtual time",
            format!(
                "{}{}",
                fmt_secs(sim.elapsed()),
                if idle { " (idle)" } else { "" }
            ),
        ),
        ("wall time", fmt_secs(wall)),
        (
            "deliveries/wall s",
            format!("{:.0}", c.delivered as f64 / wall_s),
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
            if sim.violations().is_empty() {
                "ok".to_string()
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
        let a = Wrap::try_parse_from(std::iter::once("sim").chain(args.iter().copied()))
            .expect("arguments parse")
            .args;
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
}
