//! The scenario suite, written once and run on every transport.
//!
//! Each scenario of Fabric's own comm suite (spec section 10) is a plain function generic
//! over [`Harness`], a small synchronous interface to "a network of nodes running the comm
//! layer". [`SimHarness`] implements it on the deterministic simulator; a real-network
//! harness (tonic over loopback) implements the same trait, and the same functions then
//! test the real transport.
//!
//! # Why synchronous
//!
//! Scenarios read like Fabric's tests: do something, wait until something is observed or
//! a deadline passes, check. A simulator steps virtual time inside
//! [`Harness::run_until`]; a tokio harness blocks on its runtime there with a real
//! deadline. Either way a scenario never sleeps and never waits without a bound, and
//! the trait stays small enough for both.
//!
//! # Writing a scenario
//!
//! ```
//! use fabric_gossip_tests::*;
//! use std::time::Duration;
//!
//! fn hello<H: Harness>(h: &mut H) -> Outcome {
//!     let a = h.add_node(node())?;
//!     let b = h.add_node(node())?;
//!     let peer = h.peer(b);
//!     h.send(a, &data(1, "hello"), &[peer]).map_err(|e| e.to_string())?;
//!     wait(h, Duration::from_secs(5), "b receives", |h| h.delivery_count(b) == 1)?;
//!     ensure!(payload(&h.deliveries(b)[0].msg) == b"hello", "wrong payload");
//!     PASS
//! }
//!
//! let mut h = SimHarness::new(1); // the seed: same seed, same trace
//! assert_eq!(hello(&mut h), PASS);
//! h.finish().unwrap(); // runs to idle, then checks every invariant
//! // The same scenario on real gRPC, every node with mutual TLS.
//! assert_eq!(hello(&mut TonicHarness::mutual_tls()), PASS);
//! ```
#![forbid(unsafe_code)]

use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::{GossipMessage, gossip_message};
use fabric_gossip_core::{
    Acceptor, AckError, CertHash, Config, ConnectionInfo, Error, Event, HandshakeError, PkiId,
    ProbeError, ReceivedMessage, RemotePeer, SendResult, SignedMessage, Stats, StreamEnd,
};
use std::sync::Arc;

pub use fabric_gossip_core::proto::gossip::Envelope;
pub use fabric_gossip_discovery::{DiscoveryConfig, DiscoveryEvent, DiscoveryStats, MemberInfo};
pub use membership::MemberSpec;

pub mod certstore;
pub mod membership;
pub mod msp_scenarios;
pub mod scenarios;
mod security;
mod sim_harness;
mod tonic_harness;

pub use security::{AliasPki, AliasPkiSecurity, IdentityMap, OrgPrefix, OrgSecurity, Remapped};
pub use sim_harness::{SimHarness, member_node, run_on_sim_seeds, scenario_seeds};
pub use tonic_harness::TonicHarness;

/// Index of a node in a harness, in the order nodes were added.
pub type NodeId = usize;

/// A subscription of a node: `SubRef(k)` is the k-th subscription made in the node's
/// current process (with [`NodeSpec::subscribe_all`], the automatic one is 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubRef(pub usize);

/// An asynchronous operation (probe, handshake, send with ack), minted by the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpRef(pub u64);

/// A raw stream opened by [`Harness::raw_open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawRef(pub usize);

/// How a scenario starts a node: the simulator's node specification, which every harness
/// reads. A real-network harness honours what a real node can do (configuration, provider
/// factory, TLS mode, `subscribe_all`, `hang_ping`) and refuses a node that asks for more
/// (a reader mode other than eager, a silent or lying node).
pub use fabric_gossip_sim::{Fault, NodeSpec, ReaderMode, SecurityFactory, TlsMode};

/// A node as scenarios start one by default: [`scenario_config`], Fabric's test provider
/// (identity = endpoint), no TLS, subscribed to everything (as `SubRef(0)`).
pub fn node() -> NodeSpec {
    NodeSpec::new().config(scenario_config())
}

/// Fabric's defaults with the time-outs shortened (dial 1 s, connection 1 s, handshake
/// 2 s), so that scenarios waiting for a time-out stay quick on a real network too.
pub fn scenario_config() -> Config {
    Config::default().with_timeouts(
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(2),
    )
}

/// A message a node's application took from a subscription.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Which subscription.
    pub sub: SubRef,
    /// The message and its connection info.
    pub msg: ReceivedMessage,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum OpOutcome {
    /// `probe`.
    Probe(Result<(), ProbeError>),
    /// `handshake`: what the remote proved.
    Handshake(Result<Arc<ConnectionInfo>, HandshakeError>),
    /// `send_with_ack`: one result per peer that answered.
    SendWithAck(Vec<SendResult>),
}

/// An asynchronous operation a scenario starts on a node: Fabric's `Probe`, `Handshake`
/// and `SendWithAck`. Each harness starts all three through [`Harness::start_op`], and its
/// outcome is the [`OpOutcome`] of the same kind.
#[derive(Clone, Debug)]
pub enum OpRequest {
    /// Dial and Ping `to`, no handshake.
    Probe(RemotePeer),
    /// Dial `to` and authenticate it, registering nothing.
    Handshake(RemotePeer),
    /// Send `msg` to every peer of `to` and wait for `min_ack` acks, at most `timeout`.
    SendWithAck {
        /// The message; the core gives it a fresh nonce.
        msg: GossipMessage,
        /// How long to wait for the acks.
        timeout: Duration,
        /// How many successful acks end the operation early.
        min_ack: usize,
        /// The peers.
        to: Vec<RemotePeer>,
    },
}

/// A network of nodes running the comm layer, as a scenario drives it.
///
/// Calls take effect at the harness's current time and return at once; results that take
/// network round trips are observed after [`Harness::run_until`]. Inspection methods
/// (`deliveries`, `events`, `op_result`, …) see everything observed so far.
pub trait Harness {
    /// Which transport this is, for messages ("sim", "tonic").
    fn name(&self) -> String;

    /// Starts a node.
    fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, String>;

    /// Node `n` as a send target: its endpoint and current PKI-ID.
    fn peer(&self, n: NodeId) -> RemotePeer;

    /// Fabric's `Accept` on node `n`.
    fn subscribe(&mut self, n: NodeId, acceptor: Acceptor) -> Result<SubRef, Error>;

    /// Fabric's `Send` from node `n`.
    fn send(&mut self, n: NodeId, msg: &SignedMessage, to: &[RemotePeer]) -> Result<(), Error>;

    /// Starts operation `op` on node `n`: `Err` when the node refuses it at once, otherwise
    /// its outcome comes later ([`Harness::op_result`]).
    fn start_op(&mut self, n: NodeId, op: OpRequest) -> Result<OpRef, Error>;

    /// Fabric's `SendWithAck` from node `n`.
    fn send_with_ack(
        &mut self,
        n: NodeId,
        msg: GossipMessage,
        timeout: Duration,
        min_ack: usize,
        to: &[RemotePeer],
    ) -> Result<OpRef, Error> {
        let to = to.to_vec();
        self.start_op(
            n,
            OpRequest::SendWithAck {
                msg,
                timeout,
                min_ack,
                to,
            },
        )
    }

    /// Fabric's `Probe` from node `n`.
    fn probe(&mut self, n: NodeId, to: &RemotePeer) -> Result<OpRef, Error> {
        self.start_op(n, OpRequest::Probe(to.clone()))
    }

    /// Fabric's `Handshake` from node `n`.
    fn handshake(&mut self, n: NodeId, to: &RemotePeer) -> Result<OpRef, Error> {
        self.start_op(n, OpRequest::Handshake(to.clone()))
    }

    /// `Respond` to node `n`'s `delivery`-th delivery (index into [`Harness::deliveries`]).
    fn respond(&mut self, n: NodeId, delivery: usize, msg: GossipMessage) -> Result<(), Error>;

    /// `Ack` node `n`'s `delivery`-th delivery.
    fn ack(&mut self, n: NodeId, delivery: usize, error: Option<&str>) -> Result<(), Error>;

    /// Fabric's `CloseConn` on node `n`.
    fn close_conn(&mut self, n: NodeId, pki: &PkiId);

    /// Fabric's `SuspectPeers` on node `n` (`revalidate_identities`), after its provider's
    /// trust changed; returns how many identities were refused.
    fn revalidate_identities(&mut self, n: NodeId) -> usize;

    /// Fabric's `Stop` on node `n`; its listener closes too.
    fn stop_node(&mut self, n: NodeId);

    /// Starts node `n` again at the same endpoint (stopping it first if it runs), with the
    /// same identity or the next identity generation of its provider factory.
    fn restart_node(&mut self, n: NodeId, new_identity: bool) -> Result<(), String>;

    /// Injects `fault` now. `Err` when this harness cannot (a real network can stop and
    /// restart nodes, not partition them); scenarios that need it are then skipped.
    fn inject(&mut self, fault: Fault) -> Result<(), String> {
        Err(format!("{} cannot inject {fault}", self.name()))
    }

    /// Lets the network run until `cond` holds or `within` has passed; returns whether
    /// `cond` held. `cond` is checked often (a simulator: after every step).
    fn run_until(&mut self, within: Duration, cond: &mut dyn FnMut(&Self) -> bool) -> bool;

    /// Time since the harness started (virtual or real).
    fn elapsed(&self) -> Duration;

    /// How much earlier than its time-out, by `elapsed`, a node may end an operation. Zero
    /// where nodes read the harness's own clock (the simulator's virtual time); on a real
    /// network the driver gives the core the coarse monotonic clock, which trails the
    /// precise one `elapsed` reads by up to a kernel tick, so a time-out begun a tick late
    /// by the precise clock ends up to a tick early by it (once seen in CI: a 1 s `Probe`
    /// time-out after 997.8 ms).
    fn clock_slack(&self) -> Duration {
        Duration::ZERO
    }

    /// Everything node `n`'s application received, all processes, oldest first.
    fn deliveries(&self, n: NodeId) -> Vec<Delivery>;

    /// `deliveries(n).len()`, cheaply.
    fn delivery_count(&self, n: NodeId) -> usize;

    /// The events node `n`'s core emitted (`DeliveryReady` excepted), all processes.
    fn events(&self, n: NodeId) -> Vec<Event>;

    /// How operation `op` ended, once it has.
    fn op_result(&self, op: OpRef) -> Option<OpOutcome>;

    /// Node `n`'s counters (current process).
    fn stats(&self, n: NodeId) -> Stats;

    /// Node `n`'s registered connections: (PKI-ID, primary, crossing secondary).
    fn connections(&self, n: NodeId) -> Vec<fabric_gossip_core::ConnectionEntry>;

    /// Whether this harness hosts Fabric's membership layer ([`Harness::add_member`] and
    /// the getters below). Membership scenarios return `Pass::Skipped("membership")` on a
    /// harness that does not.
    fn supports_membership(&self) -> bool {
        false
    }
    /// Starts a node running Fabric's membership layer above its core.
    fn add_member(&mut self, _spec: MemberSpec) -> Result<NodeId, String> {
        Err(format!(
            "{} does not host the membership layer",
            self.name()
        ))
    }
    /// Node `n`'s alive view (its current process); empty without membership.
    fn members(&self, _n: NodeId) -> Vec<MemberInfo> {
        Vec::new()
    }
    /// Node `n`'s dead members (its current process).
    fn dead_members(&self, _n: NodeId) -> Vec<MemberInfo> {
        Vec::new()
    }
    /// The membership events node `n` emitted, all processes, oldest first.
    fn member_events(&self, _n: NodeId) -> Vec<DiscoveryEvent> {
        Vec::new()
    }
    /// Node `n`'s membership counters (current process).
    fn member_stats(&self, _n: NodeId) -> Option<DiscoveryStats> {
        None
    }
    /// The alive envelope node `n` keeps for member `pki` (to replay or forge it).
    fn member_envelope(&self, _n: NodeId, _pki: &PkiId) -> Option<Envelope> {
        None
    }
    /// Makes node `n` join through node `to` as an anchor peer (any organization); an error
    /// when the layer does not dial it ([`anchor_dialled`]).
    fn connect_anchor(&mut self, _n: NodeId, _to: NodeId) -> Result<(), String> {
        Err(format!(
            "{} does not host the membership layer",
            self.name()
        ))
    }
    /// Opens a `GossipStream` to node `n` from a client the scenario controls byte by byte,
    /// presenting `client_cert` (a certificate hash) under TLS. `None`: this harness cannot
    /// (scenarios needing it are skipped).
    fn raw_open(&mut self, _n: NodeId, _client_cert: Option<CertHash>) -> Option<RawRef> {
        None
    }

    /// Writes one envelope's bytes on a raw stream.
    fn raw_send(&mut self, _raw: RawRef, _bytes: Bytes) {}

    /// Envelopes a raw stream received.
    fn raw_received(&self, _raw: RawRef) -> Vec<Bytes> {
        Vec::new()
    }

    /// How a raw stream ended, once it has.
    fn raw_ended(&self, _raw: RawRef) -> Option<StreamEnd> {
        None
    }
}

/// How a scenario ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Every check held.
    Done,
    /// The harness lacks a capability the scenario needs (e.g. raw streams).
    Skipped(&'static str),
}

/// A scenario's result: `Err` carries what went wrong.
pub type Outcome = Result<Pass, String>;

/// The successful [`Outcome`].
pub const PASS: Outcome = Ok(Pass::Done);

/// Fails the scenario with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($arg)+)));
        }
    };
}

/// Runs until `cond` holds, failing the scenario with `what` if `within` passes first.
pub fn wait<H: Harness>(
    h: &mut H,
    within: Duration,
    what: &str,
    mut cond: impl FnMut(&H) -> bool,
) -> Result<(), String> {
    if h.run_until(within, &mut cond) {
        Ok(())
    } else {
        Err(format!(
            "{}: timed out after {:?} waiting until {what} (at {:?})",
            h.name(),
            within,
            h.elapsed()
        ))
    }
}

/// Runs until operation `op` has ended and returns how (failing the scenario with `what`
/// after [`wait`]'s bound of ten seconds).
pub fn wait_op<H: Harness>(h: &mut H, op: OpRef, what: &str) -> Result<OpOutcome, String> {
    wait(h, Duration::from_secs(10), what, |h| {
        h.op_result(op).is_some()
    })?;
    h.op_result(op)
        .ok_or_else(|| format!("{}: {what}: no result after it ended", h.name()))
}

/// A noop-signed data message with sequence number `seq` and `text` as payload.
pub fn data(seq: u64, text: impl AsRef<[u8]>) -> SignedMessage {
    SignedMessage::noop(data_msg(seq, text))
}

/// The unsigned data message [`data`] wraps.
pub fn data_msg(seq: u64, text: impl AsRef<[u8]>) -> GossipMessage {
    fabric_gossip_sim::data_message(seq, Bytes::copy_from_slice(text.as_ref()))
}

/// The payload bytes of a data message (empty for anything else).
pub fn payload(m: &ReceivedMessage) -> Vec<u8> {
    match &m.message.content {
        Some(gossip_message::Content::DataMsg(d)) => d
            .payload
            .as_ref()
            .map(|p| p.data.to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The sequence number of a data message.
pub fn seq_of(m: &ReceivedMessage) -> Option<u64> {
    match &m.message.content {
        Some(gossip_message::Content::DataMsg(d)) => d.payload.as_ref().map(|p| p.seq_num),
        _ => None,
    }
}

/// Whether node `n` saw a `HandshakeFailed` whose error satisfies `pred` (scenarios pass
/// an exact `==` or a `matches!` on the variant).
pub fn saw_handshake_failure<H: Harness>(
    h: &H,
    n: NodeId,
    pred: impl Fn(&HandshakeError) -> bool,
) -> bool {
    h.events(n)
        .iter()
        .any(|e| matches!(e, Event::HandshakeFailed { error, .. } if pred(error)))
}

/// What a harness's `connect_anchor` makes of the layer's answer: `Ok` once an attempt
/// starts or goes on, an error saying why when the layer does not dial the anchor, so that
/// a scenario waiting for a join fails at the call rather than at its deadline.
pub fn anchor_dialled(outcome: fabric_gossip_discovery::AnchorDial) -> Result<(), String> {
    use fabric_gossip_discovery::AnchorDial::{Dialling, InProgress};
    match outcome {
        Dialling | InProgress => Ok(()),
        other => Err(format!(
            "the membership layer did not dial the anchor: {other:?}"
        )),
    }
}

/// Whether node `n` presumed `pki` dead.
pub fn saw_presumed_dead<H: Harness>(h: &H, n: NodeId, pki: &PkiId) -> bool {
    h.events(n)
        .iter()
        .any(|e| matches!(e, Event::PresumedDead(p) if p.pki_id == *pki))
}

/// Successful acks in a `send_with_ack` outcome.
pub fn acked(o: &OpOutcome) -> usize {
    match o {
        OpOutcome::SendWithAck(r) => r.iter().filter(|r| r.result.is_ok()).count(),
        _ => 0,
    }
}

/// The errors of a `send_with_ack` outcome.
pub fn ack_errors(o: &OpOutcome) -> Vec<AckError> {
    match o {
        OpOutcome::SendWithAck(r) => r.iter().filter_map(|r| r.result.clone().err()).collect(),
        _ => Vec::new(),
    }
}
