//! A deterministic network simulator for Fabric's gossip comm layer.
//!
//! N nodes each run the unmodified sans-IO core ([`fabric_gossip_core::Comm`]); the
//! simulator is their driver. It models what gRPC gives a gossip peer: a dial that
//! succeeds, is refused or hangs until the dial timeout; a Ping that answers or hangs;
//! streams that are reliable and ordered, with latency, jitter and HTTP/2-style flow
//! control (a slow reader fills the sender's buffer); streams that are reset. Faults
//! ([`Fault`]) are data: partitions (symmetric or one-way), isolation, crash and restart
//! (same identity, or a new identity at the same endpoint), stream resets, corrupted
//! bytes, silent peers, bad signatures, hanging pings, slow readers. They can be written
//! by hand, parsed from text (`partition@1s:0+1/2,heal@3s`: [`parse_schedule`], and
//! [`fmt_schedule`] back) or drawn at random ([`random_schedule`]); a schedule, times
//! counted from the start of the run, goes to [`Sim::schedule_faults`], one fault now to
//! [`Sim::apply`].
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `sim` | [`Sim`]: building a network, reading it, API calls on its nodes |
//! | `config` | [`SimConfig`], the network's [`Counters`], [`Violation`] |
//! | `queue` | the delivery queue and the run loop (`step`, `run_until`, …) |
//! | `timeline` | the queue's order: a radix heap on virtual time, ties by sequence number |
//! | `host` | a core per node: boot and restart, one input at a time, its outputs carried out |
//! | `network` | links, streams, dials and Pings; `network/flow`: HTTP/2-style flow control |
//! | `raw` | raw streams, a client that speaks bytes to play a misbehaving peer |
//! | `fault` | [`Fault`] as data (text form, random schedules); `fault/inject`: what each does |
//! | `invariants` | per-step and quiescent checks |
//! | `trace` | [`Trace`], its hash and the format of its lines |
//! | `workload` | [`Workload`], random traffic |
//! | `layer` | a layer above the core per node ([`SimLayer`], [`NodeSpec::layer`]), hosted through the core's `Stack` |
//! | `observe` | an observer that sees each node's deliveries and events as they happen |
//! | `sweep` | [`Sweep`]: one scenario on many seeds, reproduce lines, determinism checks |
//! | `node` | [`NodeSpec`] (how to start a node), [`Delivered`] |
//!
//! # Determinism
//!
//! Virtual time starts at [`START`] and only moves when the queue says so. One delivery
//! queue, ordered by (time, sequence number), holds everything that will happen; ties
//! break by the order things were scheduled, which is itself deterministic. One RNG
//! ([`SimRng`], ChaCha8 seeded from [`SimConfig::seed`]) draws every delay, fault and
//! workload choice and every core's RNG seed. No hash map's iteration order reaches the
//! output. So a seed gives a byte-identical [`Trace`]; compare [`Trace::hash`] of two runs.
//!
//! # Invariants
//!
//! With [`SimConfig::check_invariants`], after every step: every `PresumedDead` follows an
//! input that can cause one (a failed dial, Ping, handshake or write, a stream ending, a
//! time-out); no delivery happens on a stopped or crashed node; no core writes to a stream
//! it does not have; every queue the step touched is within its configured bound (the
//! send queues of the streams it acted on, and every queue of every node once per as many
//! steps as there are stream ends and nodes, so the check stays cheap at 1,000 nodes).
//! [`Sim::check_quiescent`] adds what only holds once the network is idle: at most one
//! connection per pair of PKI-IDs, no crossing secondary left, both ends agreeing.
//! Whatever the settings, no message a node's API accepted may be lost without a count
//! ([`SimConfig::check_silent_loss`], explained in the `invariants` module).
//! [`Sim::check`] reports violations with a `reproduce with: …` line made from
//! [`SimConfig::reproduce`] (set it to the command that reruns your test; the default only
//! names the seed); a [`Sweep`] runs a test on many seeds, sets that line, and checks that
//! a seed reproduces its trace.
//!
//! # A test
//!
//! ```
//! use fabric_gossip_sim::*;
//! use fabric_gossip_core::SignedMessage;
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(SimConfig::seeded(7));
//! let a = sim.add_node(NodeSpec::new()).unwrap();
//! let b = sim.add_node(NodeSpec::new()).unwrap();
//! let msg = SignedMessage::noop(data_message(1, "hello"));
//! sim.send_to(a, &msg, &[b]).unwrap();
//! let deadline = sim.now() + Duration::from_secs(1);
//! assert!(sim.run_until(deadline, |s| !s.deliveries(b).is_empty()));
//! assert_eq!(sim.deliveries(b)[0].msg.sender(), &sim.pki_id(a));
//! sim.run_until_idle(Duration::from_secs(60));
//! sim.check_quiescent().unwrap();
//! ```
#![forbid(unsafe_code)]

mod config;
mod fault;
// The feature, as in the core: cargo fuzz sets `cfg(fuzzing)` for every crate of a fuzz
// build, and a user's fuzz build should get this module only by asking for it.
#[cfg(any(feature = "fuzzing", test))]
pub mod fuzzing;
mod host;
mod invariants;
pub mod layer;
mod network;
mod node;
pub mod observe;
mod queue;
mod raw;
mod rng;
mod sim;
pub mod sweep;
mod timeline;
mod trace;
mod workload;

pub use config::{
    Counters, LIVELOCK_STEPS, MAX_VIOLATIONS, NodeId, RawId, START, SimConfig, Violation,
};
/// The comm core the simulated nodes run, so that the types the simulator takes and returns
/// (`Instant` for `Sim::now` and `START`, `Config` for `NodeSpec::config`, `PkiId`, ...) can
/// be named without a second dependency kept at the same version.
pub use fabric_gossip_core;
/// The core's own (not a second function of the same name), so that code importing both
/// crates' items by glob sees one `data_message`.
pub use fabric_gossip_core::data_message;
pub use fault::{
    Fault, ReaderMode, ScheduledFault, fmt_duration, fmt_schedule, parse_duration, parse_schedule,
    random_schedule,
};
pub use layer::{
    HostedLayer, LayerContext, LayerError, LayerEvent, LayerFactory, LayerRecord, SimLayer,
    SimStack, StartError,
};
pub use node::{Delivered, NodeSpec, NodeState, SecurityFactory, SimComm, TlsMode};
pub use observe::{Observation, Observer};
pub use raw::RAW_RECEIVE_LIMIT;
pub use rng::SimRng;
pub use sim::Sim;
pub use sweep::{Sweep, SweepReport};
pub use trace::{Trace, TraceMode};
pub use workload::Workload;
