//! What a run is given (its settings) and what it reports besides the cores' own counters
//! (network counters, invariant violations).

use crate::fault::fmt_duration;
use crate::trace::TraceMode;
use core::fmt;
use core::time::Duration;
use fabric_gossip_core::Instant;

/// Where virtual time starts: a fixed instant (2023-11-14), so traces never depend on the
/// wall clock and certificate validity checks see a plausible date.
pub const START: Instant = Instant::from_unix_secs(1_700_000_000);

/// Index of a node in the network, in the order nodes were added.
pub type NodeId = usize;

/// Handle of a raw stream: a test-controlled client that speaks bytes, not protocol.
pub type RawId = usize;

/// Violations kept per run; a broken invariant tends to repeat, and the first few say it.
pub const MAX_VIOLATIONS: usize = 64;

/// Steps at one virtual instant after which the run is declared livelocked.
pub const LIVELOCK_STEPS: u64 = 5_000_000;

/// Settings of a run. Everything that varies between runs of the same code is here or
/// drawn from the RNG seeded by `seed`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of the run's only RNG. Default 0 ([`SimConfig::seeded`] sets it).
    pub seed: u64,
    /// One-way latency of every link; a dial or a Ping costs a round trip. Default 200 µs,
    /// a loopback or LAN hop.
    pub latency: Duration,
    /// Extra one-way delay drawn uniformly from `0..=jitter` per packet. Streams stay
    /// ordered: a packet never overtakes an earlier one of the same stream. Default 50 µs.
    pub jitter: Duration,
    /// Bytes a stream direction holds unread (in flight or waiting for a paused reader)
    /// before writes block, as HTTP/2 flow control does; a write of any size is let into an
    /// empty window. Default 64 KiB, HTTP/2's initial stream window.
    pub stream_window: usize,
    /// How long a stream survives a partition that cuts it before both ends see it reset
    /// (gRPC keepalive). Default 10 s.
    pub keepalive_timeout: Duration,
    /// How much of the trace to keep. Default [`TraceMode::Hash`]: only the hash, enough
    /// to tell two runs apart.
    pub trace: TraceMode,
    /// Trace lines kept in [`TraceMode::Full`]. Default 1,000,000.
    pub trace_limit: usize,
    /// Deliveries and events kept per node for inspection; past it they are only counted.
    /// Default 100,000.
    pub record_limit: usize,
    /// Check invariants after every step (a few per cent of run time). On by default.
    pub check_invariants: bool,
    /// Treat a message lost without a count (see the `invariants` module) as a violation;
    /// off, such losses are only counted in
    /// [`Counters::envelopes_discarded_unread`]. On by default; a sweep turns it off only
    /// while a known bug makes it fail (issue 10, finding 1).
    pub check_silent_loss: bool,
    /// Acknowledge every delivered message that carries a nonce (a `send_with_ack`), as an
    /// application would; workloads use it to exercise acks. Off by default: a test
    /// answers with [`crate::Sim::ack`], as a tonic application does.
    pub auto_ack: bool,
    /// How to rerun this seed, with `{seed}` standing for it; printed with failures
    /// ([`Sim::reproduce_hint`](crate::Sim::reproduce_hint)). Set it to the command that
    /// reruns your test (a [`Sweep`](crate::Sweep) sets its own). The default names the
    /// seed and says so, `seed {seed} (SimConfig::seeded({seed}); ...)`: it used to be
    /// `fabric-gossip sim --seed {seed}`, which reruns the CLI's random workload, not the
    /// test that failed.
    pub reproduce: String,
    /// How late, at most, a reader hands in what it held while paused after its core
    /// said `ResumeRead` (drawn per resume from `0..=resume_lag`), as a driver whose reader
    /// task hands it in does: the `ResumeRead` wakes it, it takes the core's lock some
    /// time later, and other tasks (the timer above all) may take it first. Zero (the
    /// default): the held envelopes are handed in within the same step, before anything
    /// else happens, as the tonic driver does since 2026-12-05.
    pub resume_lag: Duration,
    /// How late, at most, a node's timer fires after its core's deadline (drawn per
    /// wake-up from `0..=timer_lag`): a real timer task wakes late (a coarse clock, a busy
    /// worker, the core's lock held by a reader), and inputs stamped after the deadline may
    /// reach the core before its `handle_timeout`. Zero (the default): exactly on time,
    /// before anything scheduled later.
    pub timer_lag: Duration,
    /// How late, at most, a write the window let through is confirmed to its core (drawn
    /// per write from `0..=confirm_lag`): a real driver confirms a write when its writer
    /// task hands it to the transport, some time after the core's `Write`, so the core's
    /// write window fills and its send buffer with it, and sends past both are dropped
    /// (counted) or wait (`send_wait`). Zero (the default): confirmed as it is made, within
    /// the same step, so a burst of non-blocking sends to a connected peer loses nothing.
    pub confirm_lag: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(50),
            stream_window: 64 * 1024,
            keepalive_timeout: Duration::from_secs(10),
            trace: TraceMode::Hash,
            trace_limit: 1_000_000,
            record_limit: 100_000,
            check_invariants: true,
            check_silent_loss: true,
            auto_ack: false,
            reproduce: "seed {seed} (SimConfig::seeded({seed}); set SimConfig::reproduce to \
                        the command that reruns this test)"
                .into(),
            resume_lag: Duration::ZERO,
            timer_lag: Duration::ZERO,
            confirm_lag: Duration::ZERO,
        }
    }
}

impl SimConfig {
    /// The default settings (each field's documentation gives its default) with this
    /// seed.
    pub fn seeded(seed: u64) -> Self {
        SimConfig {
            seed,
            ..Self::default()
        }
    }
}

/// A broken invariant, with the virtual time it was seen at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// What was wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at +{}: {}", fmt_duration(self.at), self.what)
    }
}

/// What the simulated network itself did, beyond the cores' counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Queue entries processed.
    pub steps: u64,
    /// Connection attempts (`Action::Dial`s) answered with success.
    pub dials_ok: u64,
    /// Connection attempts refused. Each attempt counts: a core tries a refused dial
    /// again within its dial timeout (`Stats::dial_retries`).
    pub dials_refused: u64,
    /// Connection attempts left hanging (partition).
    pub dials_hung: u64,
    /// Pings answered.
    pub pings_ok: u64,
    /// Pings failed.
    pub pings_failed: u64,
    /// Pings left hanging.
    pub pings_hung: u64,
    /// Streams opened.
    pub streams_opened: u64,
    /// Streams reset (fault, crash, keepalive).
    pub streams_reset: u64,
    /// Envelopes put on a link.
    pub envelopes: u64,
    /// Envelopes lost: arrived at a closed end, in flight or held for a paused reader on
    /// a reset stream, or held for a paused reader when the writer ended the stream, the
    /// reader aborted it with an error or the reader stopped.
    pub envelopes_lost: u64,
    /// Envelopes carrying a message that reached a reader's end and were thrown away
    /// unread when the reader's core closed the stream gracefully: lost without a count anywhere
    /// else, so each is also an invariant violation (see the `invariants` module).
    pub envelopes_discarded_unread: u64,
    /// Envelopes written by a silent node and swallowed.
    pub envelopes_swallowed: u64,
    /// Envelopes corrupted by a fault.
    pub envelopes_corrupted: u64,
    /// Messages taken from subscriptions by the applications.
    pub delivered: u64,
    /// Faults applied.
    pub faults: u64,
    /// Messages the workload sent (`send` and `send_with_ack` calls).
    pub workload_sends: u64,
}
