//! Hyperledger Fabric's gossip membership protocol (`gossip/discovery`, and the parts of
//! `gossip/gossip` that sign, scope and spread its messages) as a pure, synchronous,
//! deterministic machine on top of the sans-IO comm core.
//!
//! [`Discovery`] implements the core's [`Layer`](fabric_gossip_core::Layer) trait: a driver
//! that hosts layers feeds it time, the core's events, and the alive / membership-request
//! / membership-response messages of the subscription it makes in `start`. It acts by
//! calling the core's API (send, respond, handshake, probe, close a connection) and
//! reports membership through [`DiscoveryEvent`]s. It reads no clock, opens no socket and
//! draws its random choices (fan-out peers, bootstrap nonces) from a generator seeded by
//! [`DiscoveryConfig::seed`], so one seed always gives one trace.
//!
//! # Running it
//!
//! The layer needs a driver that owns the network and the clock. Three are at hand; each
//! takes a configuration made with [`DiscoveryConfig::new`] and changed by its `with_*`
//! methods or by assigning fields (see [`DiscoveryConfig`]):
//!
//! * **Real gRPC**, `fabric-gossip-tonic`:
//!   `NodeBuilder::try_layer(|bound_addr| Discovery::new(..))` hosts it in the node (a
//!   refused configuration is `start`'s error); `Node::layer_events::<DiscoveryEvent>()`
//!   streams its events and `Node::with_layer(|d: &Discovery| d.members())` reads it.
//!   `cargo run -p fabric-gossip-tonic --example membership_tonic` runs two nodes that
//!   learn each other on loopback, then one stops and the other declares it dead.
//! * **The simulator**, `fabric-gossip-sim`:
//!   `NodeSpec::new().subscribe_all(false).layer(|ctx| layer)` makes a layer at every
//!   (re)start of a simulated node, seeded from the run (`ctx.seed`);
//!   `Sim::layer_events(n)` keeps its events with their virtual time and
//!   `sim.layer::<Discovery>(n)` reads it.
//!   `cargo run -p fabric-gossip-sim --example membership_sim` runs three nodes through a
//!   stop and a restart in virtual time.
//! * **A driver of your own**: put the layer on a core in a
//!   [`Stack`](fabric_gossip_core::Stack), which routes core events, the layer's
//!   deliveries and its deadline, and drive the stack as a bare core (the README's
//!   "Writing a driver"); `discovery/tests/stack.rs` runs three nodes so.
//!
//! In every case the layer subscribes to its own messages ([`takes`] says which); an
//! application that also reads the node's messages should accept only what `takes`
//! refuses, or it gets copies of the layer's traffic, and reading them slowly pauses the
//! connections the layer reads too.
//!
//! A stack's first drain, here with Fabric's test identities on a bare core, shows the
//! layer at work at once: it dials its bootstrap peer and reports nothing yet.
//!
//! ```
//! use fabric_gossip_core::{Action, Comm, Config, Instant, Stack, StackOutput, TestOnlyHmacSecurity};
//! use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
//!
//! let now = Instant::from_unix_secs(1_700_000_000);
//! let comm = Comm::new(Config::default(), TestOnlyHmacSecurity::new("10.0.0.1:7051"), now)?;
//! let layer = Discovery::new(
//!     DiscoveryConfig::new("10.0.0.1:7051").with_bootstrap(["10.0.0.2:7051"]),
//! )?;
//! let mut node = Stack::new(comm, layer); // starts it: subscribes, arms timers, bootstraps
//! let mut dialled = Vec::new();
//! let deadline = loop {
//!     match node.poll_output() {
//!         StackOutput::Action(Action::Dial { endpoint, .. }) => dialled.push(endpoint),
//!         StackOutput::Action(_) => {}              // a driver carries each out, in order
//!         StackOutput::Event(_) => {}               // the core's, after the layer saw it
//!         StackOutput::Layer(event) => println!("{event:?}"), // MemberAlive, MemberDead, …
//!         StackOutput::Timeout(t) => break t,        // sleep until then: handle_timeout
//!     }
//! };
//! assert_eq!(dialled, ["10.0.0.2:7051"]);
//! assert!(deadline.is_some());
//! assert!(node.layer().members().is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A driver without `Stack` does the same routing by hand: every core event to
//! `handle_comm_event`, the deliveries of the layer's subscription to `handle_message`,
//! its deadline to `handle_timeout`, then the core's output again.
//!
//! # Rules, by module
//!
//! * [`alive`]: our signed alive message: incarnation (start time in ns),
//!   sequence incremented before every message, identity during `publish_cert_period`,
//!   `SecretEnvelope` with the internal endpoint.
//! * [`validate`]: every received alive message: shape, identity (embedded,
//!   else known), signatures.
//! * `store`: membership (alive/dead, strictly newer timestamps only) and the de-dup store.
//! * [`disclosure`]: what crosses an organization boundary.
//! * `gossip`, `request`, `response`, `bootstrap`, `expiry`: the protocol's paths.
//! * [`certstore`]: the identity pull, which teaches the certificates of members whose
//!   alive messages no longer carry them.
//!
//! # Deliberate differences from Fabric v2.4.9
//!
//! * A member whose certificate expires is purged (Fabric's fix in 2.5.11 / 3.1.0, quirk
//!   Q1); so is one whose connection comm closes for identity expiry.
//! * Long-dead purge: a member **dead** for longer than the store TTL (500 s) since its
//!   last newer alive message is purged, bootstrap peers excepted. Fabric instead purges
//!   any member, even alive, whose last *direct* alive message entered its store 500 s ago,
//!   and never purges members learnt only through requests and responses (quirk Q6).
//! * A bootstrap response arriving during the back-off between two sends still counts.
//! * Fan-out peers are drawn among those the routing rules allow, instead of drawing
//!   first and skipping the forbidden ones.
//! * Identity pull: a digest or an update is accepted only from the peer its nonce was
//!   sent to, during its phase of our current round (Fabric stores the identities of any
//!   valid update, solicited or not); a request is served only if it echoes a hello of
//!   the same sender; a round never starts while the previous one runs.
#![forbid(unsafe_code)]

pub mod alive;
mod bootstrap;
pub mod certstore;
mod config;
pub mod disclosure;
mod endpoint_owners;
mod error;
mod event;
mod expiry;
// The feature alone, not `cfg(fuzzing)`, as for the core's module.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gossip;
mod machine;
mod request;
mod response;
mod stats;
mod store;
pub mod validate;

pub use alive::Timestamp;
pub use bootstrap::{AnchorDial, BOOTSTRAP_TARGET, MAX_BOOTSTRAPS, MEMBERS_TARGET};
pub use certstore::{CertStoreConfig, CertStoreStats};
pub use config::{DiscoveryConfig, PLAUSIBLE_WALL_CLOCK};
pub use endpoint_owners::{MAX_ENDPOINT_OWNERS, MISDIRECTED_DIALS};
pub use error::{AliveError, BootstrapError, ConfigError};
pub use event::{DeadReason, DiscoveryEvent, MemberInfo, PurgeReason};
pub use expiry::MAX_RECONNECT_PROBES;
/// The comm core this layer runs on, so that the types it takes and returns (`Instant`,
/// `PkiId`, `Comm`, ...) can be named without a second dependency kept at the same version.
pub use fabric_gossip_core;
pub use machine::{Discovery, takes};
pub use request::{
    ANSWER_BURST, MIN_ANSWER_INTERVAL, RESPONSE_STALL, membership_request, membership_response,
};
pub use response::MAX_RESPONSE_FAILURES;
pub use stats::DiscoveryStats;
pub use store::STORE_ENTRIES_PER_MEMBER;
#[cfg(test)]
mod tests;
