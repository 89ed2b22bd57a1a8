//! Faults as data: what can go wrong, when, written so that a schedule can be printed,
//! parsed back, and drawn at random from the run's RNG.

pub(crate) mod inject;

use crate::rng::SimRng;
use core::fmt;
use core::time::Duration;
use std::collections::BTreeSet;

/// How a node's application consumes its subscriptions. A slow consumer is what makes a
/// core pause reading, gRPC flow control push back, and the sender's buffer overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReaderMode {
    /// Every delivery is taken as soon as it is ready.
    #[default]
    Eager,
    /// Nothing is taken until the mode changes.
    Paused,
    /// One delivery per subscription is taken every interval.
    Every(Duration),
}

/// One thing that can go wrong on the simulated network. Node arguments are indices into
/// the network's nodes; a fault naming a node that does not exist is ignored (and traced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nodes of `a` and nodes of `b` cannot reach each other, either way.
    Partition {
        /// One side.
        a: Vec<usize>,
        /// The other side.
        b: Vec<usize>,
    },
    /// Packets from `from` to `to` are held back; the other direction still works (an
    /// asymmetric partition: dials and pings still hang, since they need both ways). As
    /// under a [`Fault::Partition`], stream data stalls rather than vanishes: [`Fault::Heal`]
    /// lets it flow, unless the stream was reset first (no Ping answered within
    /// `keepalive_timeout`), which loses what it carried and counts it
    /// ([`crate::Counters::envelopes_lost`]).
    OneWay {
        /// Senders whose packets are held back.
        from: Vec<usize>,
        /// Receivers that never see them.
        to: Vec<usize>,
    },
    /// Every partition is removed and stalled stream data flows again; corruptions not
    /// yet applied are dropped. The network is clean afterwards.
    Heal,
    /// The node can reach nobody and nobody can reach it.
    Isolate(usize),
    /// The process dies: no `stop`, its streams reset at the remote ends, dials are refused.
    Crash(usize),
    /// A crashed or stopped node comes back with the same identity and endpoint.
    Restart(usize),
    /// A crashed or stopped node comes back at the same endpoint with a new identity
    /// (what makes its peers see an IdentitySwitch).
    RestartNewIdentity(usize),
    /// The node's comm is stopped gracefully and its listener closed.
    Stop(usize),
    /// Every stream between the two nodes is reset (RST_STREAM both ways).
    Reset(usize, usize),
    /// The next envelope written from the first node to the second arrives with bytes
    /// flipped.
    Corrupt(usize, usize),
    /// The node writes nothing on its streams (never sends its `ConnEstablish`) while on.
    Silent(usize, bool),
    /// The node's `ConnEstablish` signatures arrive mangled while on.
    BadSignature(usize, bool),
    /// The node's gRPC server accepts connections but never answers Ping while on.
    HangPing(usize, bool),
    /// The node's application reads its subscriptions this way from now on.
    Reader(usize, ReaderMode),
    /// The node's wall clock is stepped (NTP correcting a wrong clock, a resume from
    /// suspend): its time, the simulator's virtual clock, runs on, and its security
    /// provider is told that the wall clock now reads `ahead` (or behind) of it by the sum
    /// of the node's steps so far (`Security::wall_clock`), as the tonic driver tells it.
    /// A provider that judges certificate dates then judges them at the stepped clock
    /// (`fabric_gossip_msp::MspSecurity` does); the test provider ignores it. The steps
    /// stay with the node's machine: a restarted process is told at start.
    StepClock {
        /// The node whose clock moves.
        node: usize,
        /// Forward (`true`) or back.
        ahead: bool,
        /// How far.
        by: Duration,
    },
}

/// A fault and the virtual time, since the start of the run, at which it strikes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledFault {
    /// Offset from the start of the run.
    pub at: Duration,
    /// What happens.
    pub fault: Fault,
}

impl Fault {
    /// Every node the fault names, for validating a schedule against a network.
    pub fn nodes(&self) -> Vec<usize> {
        match self {
            Fault::Partition { a, b } => a.iter().chain(b).copied().collect(),
            Fault::OneWay { from, to } => from.iter().chain(to).copied().collect(),
            Fault::Heal => Vec::new(),
            Fault::Isolate(n)
            | Fault::Crash(n)
            | Fault::Restart(n)
            | Fault::RestartNewIdentity(n)
            | Fault::Stop(n)
            | Fault::Silent(n, _)
            | Fault::BadSignature(n, _)
            | Fault::HangPing(n, _)
            | Fault::Reader(n, _)
            | Fault::StepClock { node: n, .. } => vec![*n],
            Fault::Reset(a, b) | Fault::Corrupt(a, b) => vec![*a, *b],
        }
    }
}

fn fmt_set(f: &mut fmt::Formatter<'_>, v: &[usize]) -> fmt::Result {
    for (i, n) in v.iter().enumerate() {
        if i > 0 {
            f.write_str("+")?;
        }
        write!(f, "{n}")?;
    }
    Ok(())
}

fn on_off(on: bool) -> &'static str {
    if on { "" } else { "=off" }
}

/// Formats a duration so that [`parse_duration`] reads it back exactly.
pub fn fmt_duration(d: Duration) -> String {
    let n = d.as_nanos();
    if n == 0 {
        "0s".into()
    } else if n.is_multiple_of(1_000_000_000) {
        format!("{}s", n / 1_000_000_000)
    } else if n.is_multiple_of(1_000_000) {
        format!("{}ms", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}us", n / 1_000)
    } else {
        format!("{n}ns")
    }
}

/// Parses `1.5s`, `200ms`, `30us`, `10ns`, `2m` (minutes) or `1h`. A bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit_nanos) = if let Some(x) = s.strip_suffix("ns") {
        (x, 1.0)
    } else if let Some(x) = s.strip_suffix("us") {
        (x, 1e3)
    } else if let Some(x) = s.strip_suffix("ms") {
        (x, 1e6)
    } else if let Some(x) = s.strip_suffix('s') {
        (x, 1e9)
    } else if let Some(x) = s.strip_suffix('m') {
        (x, 60e9)
    } else if let Some(x) = s.strip_suffix('h') {
        (x, 3600e9)
    } else {
        (s, 1e9)
    };
    if let Ok(whole) = num.parse::<u64>() {
        let nanos = (whole as u128) * (unit_nanos as u128);
        return u64::try_from(nanos)
            .map(Duration::from_nanos)
            .map_err(|_| format!("duration too large: {s:?}"));
    }
    let x: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 1.5s, 200ms, 30us)"))?;
    // `u64::MAX as f64` rounds up to 2^64, one past the largest: that bound is out too.
    if !x.is_finite() || x < 0.0 || x * unit_nanos >= u64::MAX as f64 {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_nanos((x * unit_nanos).round() as u64))
}

impl fmt::Display for ReaderMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReaderMode::Eager => f.write_str("eager"),
            ReaderMode::Paused => f.write_str("paused"),
            ReaderMode::Every(d) => f.write_str(&fmt_duration(*d)),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_at(f, None)
    }
}

impl Fault {
    fn fmt_at(&self, f: &mut fmt::Formatter<'_>, at: Option<Duration>) -> fmt::Result {
        let name = match self {
            Fault::Partition { .. } => "partition",
            Fault::OneWay { .. } => "oneway",
            Fault::Heal => "heal",
            Fault::Isolate(_) => "isolate",
            Fault::Crash(_) => "crash",
            Fault::Restart(_) => "restart",
            Fault::RestartNewIdentity(_) => "restart-new",
            Fault::Stop(_) => "stop",
            Fault::Reset(..) => "reset",
            Fault::Corrupt(..) => "corrupt",
            Fault::Silent(..) => "silent",
            Fault::BadSignature(..) => "badsig",
            Fault::HangPing(..) => "hangping",
            Fault::Reader(..) => "reader",
            Fault::StepClock { .. } => "clock",
        };
        f.write_str(name)?;
        if let Some(at) = at {
            write!(f, "@{}", fmt_duration(at))?;
        }
        match self {
            Fault::Heal => Ok(()),
            Fault::Partition { a, b } => {
                f.write_str(":")?;
                fmt_set(f, a)?;
                f.write_str("/")?;
                fmt_set(f, b)
            }
            Fault::OneWay { from, to } => {
                f.write_str(":")?;
                fmt_set(f, from)?;
                f.write_str("/")?;
                fmt_set(f, to)
            }
            Fault::Isolate(n)
            | Fault::Crash(n)
            | Fault::Restart(n)
            | Fault::RestartNewIdentity(n)
            | Fault::Stop(n) => write!(f, ":{n}"),
            Fault::Reset(a, b) | Fault::Corrupt(a, b) => write!(f, ":{a}/{b}"),
            Fault::Silent(n, on) | Fault::BadSignature(n, on) | Fault::HangPing(n, on) => {
                write!(f, ":{n}{}", on_off(*on))
            }
            Fault::Reader(n, m) => write!(f, ":{n}={m}"),
            Fault::StepClock { node, ahead, by } => {
                let sign = if *ahead { '+' } else { '-' };
                write!(f, ":{node}={sign}{}", fmt_duration(*by))
            }
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fault.fmt_at(f, Some(self.at))
    }
}

fn parse_node(s: &str) -> Result<usize, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("not a node index: {s:?}"))
}

fn parse_set(s: &str) -> Result<Vec<usize>, String> {
    s.split('+').map(parse_node).collect()
}

fn parse_pair(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once('/')
        .ok_or_else(|| format!("expected A/B, got {s:?}"))?;
    Ok((parse_node(a)?, parse_node(b)?))
}

fn parse_toggle(s: &str) -> Result<(usize, bool), String> {
    match s.split_once('=') {
        None => Ok((parse_node(s)?, true)),
        Some((n, "on")) => Ok((parse_node(n)?, true)),
        Some((n, "off")) => Ok((parse_node(n)?, false)),
        Some((_, v)) => Err(format!("expected =on or =off, got ={v}")),
    }
}

/// Parses `A/B`, two sets of nodes (`0+1/2`) that share none (a node cut off from itself
/// would be a no-op the schedule's reader takes for a fault); `usage` is the error
/// otherwise.
fn parse_sets(s: &str, usage: &str) -> Result<(Vec<usize>, Vec<usize>), String> {
    let (a, b) = s.split_once('/').ok_or(usage)?;
    let (a, b) = (parse_set(a)?, parse_set(b)?);
    match a.iter().find(|n| b.contains(n)) {
        Some(n) => Err(format!("node {n} is on both sides of {s:?}: {usage}")),
        None => Ok((a, b)),
    }
}

impl core::str::FromStr for ScheduledFault {
    type Err = String;

    /// Parses `kind@time[:args]`, e.g. `partition@2s:0+1/2+3`, `crash@1500ms:2`,
    /// `reader@1s:3=10ms`, `hangping@0s:1=off`. The time defaults to 0.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (head, args) = match s.split_once(':') {
            Some((h, a)) => (h, Some(a)),
            None => (s, None),
        };
        let (name, at) = match head.split_once('@') {
            Some((n, t)) => (n, parse_duration(t)?),
            None => (head, Duration::ZERO),
        };
        let need = || args.ok_or_else(|| format!("{name} needs arguments, e.g. {name}@1s:0"));
        let fault = match name {
            "heal" => Fault::Heal,
            "partition" => {
                let (a, b) = parse_sets(need()?, "partition needs A/B, e.g. 0+1/2")?;
                Fault::Partition { a, b }
            }
            "oneway" => {
                let (from, to) = parse_sets(need()?, "oneway needs FROM/TO, e.g. 0/1")?;
                Fault::OneWay { from, to }
            }
            "isolate" => Fault::Isolate(parse_node(need()?)?),
            "crash" => Fault::Crash(parse_node(need()?)?),
            "restart" => Fault::Restart(parse_node(need()?)?),
            "restart-new" => Fault::RestartNewIdentity(parse_node(need()?)?),
            "stop" => Fault::Stop(parse_node(need()?)?),
            "reset" | "corrupt" => {
                let (a, b) = parse_pair(need()?)?;
                let make = if name == "reset" {
                    Fault::Reset
                } else {
                    Fault::Corrupt
                };
                make(a, b)
            }
            "silent" | "badsig" | "hangping" => {
                let (n, on) = parse_toggle(need()?)?;
                let make = match name {
                    "silent" => Fault::Silent,
                    "badsig" => Fault::BadSignature,
                    _ => Fault::HangPing,
                };
                make(n, on)
            }
            "reader" => {
                let usage = "reader needs N=eager|paused|INTERVAL, e.g. reader@1s:0=10ms";
                let (n, m) = need()?.split_once('=').ok_or(usage)?;
                let mode = match m {
                    "eager" => ReaderMode::Eager,
                    "paused" => ReaderMode::Paused,
                    d => ReaderMode::Every(parse_duration(d).map_err(|e| format!("{e}; {usage}"))?),
                };
                Fault::Reader(parse_node(n)?, mode)
            }
            "clock" => {
                let usage = "clock needs N=+STEP or N=-STEP, e.g. clock@1s:0=-48h";
                let (n, step) = need()?.split_once('=').ok_or(usage)?;
                let (ahead, by) = match (step.strip_prefix('+'), step.strip_prefix('-')) {
                    (Some(by), _) => (true, by),
                    (_, Some(by)) => (false, by),
                    _ => return Err(usage.into()),
                };
                Fault::StepClock {
                    node: parse_node(n)?,
                    ahead,
                    by: parse_duration(by)?,
                }
            }
            other => {
                return Err(format!(
                    "unknown fault {other:?}; known: partition oneway heal isolate crash \
                     restart restart-new stop reset corrupt silent badsig hangping reader \
                     clock"
                ));
            }
        };
        Ok(ScheduledFault { at, fault })
    }
}

/// Parses a comma-separated schedule such as `partition@1s:0/1,heal@3s,crash@4s:2`.
pub fn parse_schedule(s: &str) -> Result<Vec<ScheduledFault>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Formats a schedule so that [`parse_schedule`] reads it back.
pub fn fmt_schedule(faults: &[ScheduledFault]) -> String {
    faults
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Draws `count` faults for `nodes` nodes at random whole-millisecond times within `span`,
/// then appends a recovery at `span` (heal, restart whatever is down, undo every toggle
/// that was set) so that a run can end quiescent and be checked. Every choice comes from
/// `rng`. Clock steps ([`Fault::StepClock`]) are never drawn: only a provider that judges
/// certificate dates reacts to one, and what it should then do depends on the dates the
/// test gave its certificates, which a random schedule cannot know.
pub fn random_schedule(
    rng: &mut SimRng,
    nodes: usize,
    span: Duration,
    count: usize,
) -> Vec<ScheduledFault> {
    let mut out = Vec::with_capacity(count + nodes + 2);
    if nodes == 0 {
        return out;
    }
    let mut down = BTreeSet::new();
    let mut toggled = BTreeSet::new();
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    let mut times: Vec<Duration> = (0..count)
        .map(|_| Duration::from_millis(rng.below(span_ms.saturating_add(1))))
        .collect();
    times.sort();
    for at in times {
        let n = rng.index(nodes);
        let other = (n + 1 + rng.index(nodes.saturating_sub(1).max(1))) % nodes;
        let fault = match rng.below(13) {
            0 | 1 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for i in 0..nodes {
                    if rng.chance(500) {
                        a.push(i)
                    } else {
                        b.push(i)
                    }
                }
                if a.is_empty() || b.is_empty() {
                    Fault::Isolate(n)
                } else {
                    Fault::Partition { a, b }
                }
            }
            2 => Fault::OneWay {
                from: vec![n],
                to: vec![other],
            },
            3 | 4 => Fault::Heal,
            5 => Fault::Isolate(n),
            6 if !down.contains(&n) => {
                down.insert(n);
                if rng.chance(200) {
                    Fault::Stop(n)
                } else {
                    Fault::Crash(n)
                }
            }
            6 | 7 if down.contains(&n) => {
                down.remove(&n);
                if rng.chance(300) {
                    Fault::RestartNewIdentity(n)
                } else {
                    Fault::Restart(n)
                }
            }
            7 | 8 => Fault::Reset(n, other),
            9 => Fault::Corrupt(n, other),
            10 => {
                let mode = match rng.below(3) {
                    0 => ReaderMode::Paused,
                    1 => ReaderMode::Every(
                        rng.duration(Duration::from_micros(100), Duration::from_millis(20)),
                    ),
                    _ => ReaderMode::Eager,
                };
                Fault::Reader(n, mode)
            }
            11 => Fault::HangPing(n, rng.chance(500)),
            _ => match rng.below(2) {
                0 => Fault::Silent(n, rng.chance(500)),
                _ => Fault::BadSignature(n, rng.chance(500)),
            },
        };
        match &fault {
            Fault::Reader(n, ReaderMode::Eager) => {
                toggled.remove(&(0, *n));
            }
            Fault::Reader(n, _) => {
                toggled.insert((0, *n));
            }
            Fault::HangPing(n, on) | Fault::Silent(n, on) | Fault::BadSignature(n, on) => {
                let kind = match fault {
                    Fault::HangPing(..) => 1,
                    Fault::Silent(..) => 2,
                    _ => 3,
                };
                if *on {
                    toggled.insert((kind, *n));
                } else {
                    toggled.remove(&(kind, *n));
                }
            }
            _ => {}
        }
        out.push(ScheduledFault { at, fault });
    }
    out.push(ScheduledFault {
        at: span,
        fault: Fault::Heal,
    });
    for (kind, n) in toggled {
        let fault = match kind {
            0 => Fault::Reader(n, ReaderMode::Eager),
            1 => Fault::HangPing(n, false),
            2 => Fault::Silent(n, false),
            _ => Fault::BadSignature(n, false),
        };
        out.push(ScheduledFault { at: span, fault });
    }
    for n in 0..nodes {
        if down.contains(&n) {
            out.push(ScheduledFault {
                at: span,
                fault: Fault::Restart(n),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_round_trip_through_text() {
        let text = "partition@1s:0+1/2,oneway@1500ms:0/1,heal@2s,isolate@3s:1,crash@3s:2,\
                    restart@4s:2,restart-new@5s:2,stop@6s:0,reset@7us:0/1,corrupt@8ns:1/0,\
                    silent@9s:1,badsig@9s:1=off,hangping@0s:2,reader@1s:0=paused,\
                    reader@1s:0=10ms,reader@2s:0=eager,clock@3s:1=-172800s,clock@4s:0=+1500ms";
        let s = parse_schedule(text).unwrap();
        assert_eq!(s.len(), 18);
        assert_eq!(
            s[16].fault,
            Fault::StepClock {
                node: 1,
                ahead: false,
                by: Duration::from_secs(48 * 3600)
            }
        );
        assert_eq!(parse_schedule("clock@3s:1=-48h").unwrap()[..], s[16..17]);
        assert_eq!(fmt_schedule(&s), text);
        assert_eq!(parse_schedule(&fmt_schedule(&s)).unwrap(), s);
        assert_eq!(s[1].at, Duration::from_millis(1500));
    }

    #[test]
    fn bad_schedules_are_errors_not_panics() {
        for bad in [
            "nope@1s:0",
            "crash@1s",
            "crash@xs:1",
            "partition@1s:0",
            "reset@1s:0",
            "reader@1s:0",
            "silent@1s:0=maybe",
            "crash@-1s:0",
            "crash@1e30s:0",
            "clock@1s:0",
            "clock@1s:0=48h",
            "clock@1s:0=+",
            "clock@1s:x=+1s",
            "partition@1s:0/0",
            "oneway@1s:0+1/1",
            "reader@1s:0=fast",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        let e = parse_schedule("partition@1s:0+1/1").unwrap_err();
        assert!(e.starts_with("node 1 is on both sides of \"0+1/1\""), "{e}");
        let e = parse_schedule("reader@1s:0=fast").unwrap_err();
        assert!(e.contains("eager|paused"), "{e}");
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    }

    #[test]
    fn random_schedules_are_reproducible_and_end_recovered() {
        let a = random_schedule(&mut SimRng::new(3), 5, Duration::from_secs(10), 30);
        let b = random_schedule(&mut SimRng::new(3), 5, Duration::from_secs(10), 30);
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(
            a.iter()
                .any(|f| f.fault == Fault::Heal && f.at == Duration::from_secs(10))
        );
        assert!(a.iter().all(|f| f.fault.nodes().iter().all(|n| *n < 5)));
    }

    /// A float duration of zero is zero, not out of range; one whose nanoseconds (the
    /// number times its unit) pass `u64::MAX` is out of range, not clamped.
    #[test]
    fn float_durations_at_the_ends_of_the_range() {
        assert_eq!(parse_duration("0.0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.0ms"), Ok(Duration::ZERO));
        // 2e19 ns: past u64::MAX (about 1.8e19) only once the unit multiplies.
        assert!(parse_duration("2e10s").is_err());
        assert_eq!(
            parse_duration("1.5e10s"),
            Ok(Duration::from_nanos(15_000_000_000_000_000_000))
        );
    }

    /// 2^64 ns, one past `u64::MAX`, is out of range. The float path compared with `>`
    /// against `u64::MAX as f64`, which is 2^64 itself (the cast rounds up), so 2^64 passed
    /// and the saturating cast clamped it to `u64::MAX` ns: a duration other than the one
    /// written, without an error.
    #[test]
    fn a_duration_one_past_the_largest_is_refused_not_clamped() {
        assert!(parse_duration("18446744073709551616ns").is_err());
        assert!(parse_duration("1.8446744073709551616e19ns").is_err());
        assert_eq!(
            parse_duration("18446744073709551615ns"),
            Ok(Duration::from_nanos(u64::MAX)),
            "the largest, whole, is exact"
        );
        assert_eq!(
            parse_duration("1.8e19ns"),
            Ok(Duration::from_nanos(18_000_000_000_000_000_000))
        );
    }

    /// A fault prints as its schedule entry without the time, which parses back to it
    /// (the simulator's trace prints faults this way).
    #[test]
    fn a_fault_prints_as_its_schedule_entry_without_the_time() {
        for text in [
            "partition:0+1/2",
            "oneway:1/0+2",
            "heal",
            "crash:2",
            "restart-new:1",
            "reset:0/1",
            "badsig:1=off",
            "hangping:3",
            "reader:0=10ms",
            "reader:2=paused",
        ] {
            let parsed = parse_schedule(text).unwrap();
            assert_eq!(parsed[0].at, Duration::ZERO);
            assert_eq!(parsed[0].fault.to_string(), text);
        }
    }

    /// What a random schedule draws, read back: every kind of fault (each reader mode
    /// included) turns up; a crash or stop names a node that is up and a restart one that
    /// is down; and the recovery appended at `span` is exactly a heal, then the undoing of
    /// each toggle still set (in the order of kind, then node), then a restart of each node
    /// still down.
    #[test]
    fn a_random_schedule_draws_every_kind_and_recovers_exactly_what_is_left() {
        let (nodes, span, count) = (4, Duration::from_secs(10), 60);
        let mut kinds = BTreeSet::new();
        for seed in 0..30 {
            let s = random_schedule(&mut SimRng::new(seed), nodes, span, count);
            let (drawn, recovery) = s.split_at(count);
            let mut down = BTreeSet::new();
            // (kind, node): 0 reader, 1 hangping, 2 silent, 3 badsig; present while set.
            let mut set = BTreeSet::new();
            for f in drawn {
                let text = f.fault.to_string();
                let kind = match &f.fault {
                    Fault::Reader(_, ReaderMode::Every(_)) => "reader=every".to_owned(),
                    Fault::Reader(_, m) => format!("reader={m}"),
                    _ => text[..text.find(':').unwrap_or(text.len())].to_owned(),
                };
                kinds.insert(kind);
                match f.fault {
                    Fault::Crash(n) | Fault::Stop(n) => {
                        assert!(down.insert(n), "seed {seed}: {text} of a node down")
                    }
                    Fault::Restart(n) | Fault::RestartNewIdentity(n) => {
                        assert!(down.remove(&n), "seed {seed}: {text} of a node up")
                    }
                    Fault::Reader(n, m) => {
                        if m == ReaderMode::Eager {
                            set.remove(&(0, n));
                        } else {
                            set.insert((0, n));
                        }
                    }
                    Fault::HangPing(n, on) | Fault::Silent(n, on) | Fault::BadSignature(n, on) => {
                        let kind = match f.fault {
                            Fault::HangPing(..) => 1,
                            Fault::Silent(..) => 2,
                            _ => 3,
                        };
                        if on {
                            set.insert((kind, n));
                        } else {
                            set.remove(&(kind, n));
                        }
                    }
                    _ => {}
                }
            }
            let mut want = vec![Fault::Heal];
            want.extend(set.iter().map(|&(kind, n)| match kind {
                0 => Fault::Reader(n, ReaderMode::Eager),
                1 => Fault::HangPing(n, false),
                2 => Fault::Silent(n, false),
                _ => Fault::BadSignature(n, false),
            }));
            want.extend(down.iter().map(|&n| Fault::Restart(n)));
            let got: Vec<Fault> = recovery.iter().map(|f| f.fault.clone()).collect();
            assert_eq!(got, want, "seed {seed}");
            assert!(recovery.iter().all(|f| f.at == span), "seed {seed}");
        }
        let all = [
            "partition",
            "oneway",
            "heal",
            "isolate",
            "crash",
            "stop",
            "restart",
            "restart-new",
            "reset",
            "corrupt",
            "reader=paused",
            "reader=every",
            "reader=eager",
            "hangping",
            "silent",
            "badsig",
        ];
        let missing: Vec<&str> = all
            .iter()
            .copied()
            .filter(|k| !kinds.contains(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "never drawn: {missing:?} (drawn: {kinds:?})"
        );
    }
}
