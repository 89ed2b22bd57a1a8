//! Hosting a layer above the core on simulated nodes (Fabric's membership protocol, a
//! user's own protocol): the same [`Layer`] contract every driver hosts, through the core's
//! [`Stack`] and its one drain loop ([`Stack::poll_output`]).
//!
//! `examples/membership_sim.rs` (`cargo run -p fabric-gossip-sim --example
//! membership_sim`) hosts Fabric's membership layer on three nodes and prints each view
//! change with its virtual time; the example below hosts a layer of its own.
//!
//! # How a non-generic `Sim` carries any layer
//!
//! Every node of one network may run a different layer, or none, so [`Sim`] is not generic
//! over a layer type. A node's [`NodeSpec::layer`](crate::NodeSpec::layer) holds a
//! [`LayerFactory`]: the simulator calls it when the node's process starts and again at
//! every restart (a restarted process is a new process: a new layer, so for membership a
//! new incarnation). The factory returns any [`Layer`] on [`SimComm`]'s security type whose
//! event is `Debug` (a [`SimLayer`]), or, given to
//! [`NodeSpec::try_layer`](crate::NodeSpec::try_layer), a `Result` whose error the
//! simulator returns as [`StartError::Layer`] (a refused configuration is then the
//! caller's error to handle, not a panic in the run); the simulator boxes it in the core's
//! hosted layer ([`HostedLayer`]), which erases the event type into a [`LayerEvent`]. Each
//! event the layer emits is
//!
//! * written to the trace as `n3 L <event as Debug>` (so a seed reproduces layer behaviour
//!   too, and the trace hash covers it),
//! * handed to the observer as [`Observation::Layer`](crate::Observation::Layer),
//! * kept in [`Sim::layer_events`] (up to `record_limit` per node).
//!
//! The application gets its own events back by type with [`LayerEvent::downcast_ref`], and
//! its layer's getters with [`Sim::layer`] (`sim.layer::<Discovery>(n)`); it calls into the
//! layer with the core at hand through [`Sim::with_layer`].
//!
//! A node without a factory hosts the empty layer: its stack's output is its core's, so
//! its trace and every trace hash are what they were before layers existed. A stopped
//! node's layer is dropped with the stop (a stopped process runs no application), so its
//! timers no longer wake the node.
//!
//! ```
//! use fabric_gossip_sim::*;
//! use fabric_gossip_core::{Comm, Event, Instant, Layer, ReceivedMessage, Security, SubscriptionId};
//!
//! /// Counts the connections its node registers.
//! #[derive(Default)]
//! struct Counter(u32, Vec<u32>);
//!
//! impl<S: Security> Layer<S> for Counter {
//!     type Event = u32;
//!     fn start(&mut self, _: Instant, _: &mut Comm<S>) {}
//!     fn handle_comm_event(&mut self, _: Instant, _: &mut Comm<S>, e: &Event) {
//!         if matches!(e, Event::Connected { .. }) {
//!             self.0 += 1;
//!             self.1.push(self.0);
//!         }
//!     }
//!     fn owns_subscription(&self, _: SubscriptionId) -> bool { false }
//!     fn handle_message(&mut self, _: Instant, _: &mut Comm<S>, _: ReceivedMessage) {}
//!     fn handle_timeout(&mut self, _: Instant, _: &mut Comm<S>) {}
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn poll_event(&mut self) -> Option<u32> { self.1.pop() }
//! }
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! let a = sim.add_node(NodeSpec::new().layer(|_ctx| Counter::default())).unwrap();
//! let b = sim.add_node(NodeSpec::new()).unwrap();
//! let msg = fabric_gossip_core::SignedMessage::noop(data_message(1, "hi"));
//! sim.send_to(a, &msg, &[b]).unwrap();
//! sim.run_until_idle(std::time::Duration::from_secs(10));
//! assert_eq!(sim.layer::<Counter>(a).map(|c| c.0), Some(1));
//! let seen: Vec<u32> = sim.layer_events(a).iter().filter_map(|r| r.event.downcast_ref().copied()).collect();
//! assert_eq!(seen, [1]);
//! ```

use crate::config::NodeId;
use crate::node::SimComm;
use crate::sim::Sim;
use core::any::Any;
use core::fmt;
use fabric_gossip_core::{HandshakeError, Instant, Layer, Security, Stack};
use std::sync::Arc;

/// The stack a simulated node runs: its core and its (possibly empty) hosted layer.
pub type SimStack = Stack<Box<dyn Security>, HostedLayer>;

/// What a [`LayerFactory`] learns about the process it makes a layer for.
#[derive(Clone, Debug)]
pub struct LayerContext {
    /// The node.
    pub node: NodeId,
    /// Its endpoint (the same across restarts).
    pub endpoint: String,
    /// Which run of its process this is (0 first, +1 per restart).
    pub incarnation: u32,
    /// A seed drawn from the run's RNG for this process: every random choice of the layer
    /// should come from it, so the seed of the run reproduces the layer too.
    pub seed: u64,
    /// Virtual time at the start.
    pub now: Instant,
}

/// Makes a node's layer at every start of its process, or says why it cannot: the error
/// of a factory given to [`NodeSpec::try_layer`](crate::NodeSpec::try_layer) (an
/// infallible one, [`NodeSpec::layer`](crate::NodeSpec::layer), never fails).
pub type LayerFactory = Arc<dyn Fn(&LayerContext) -> Result<HostedLayer, LayerError> + Send + Sync>;

/// Why a layer factory refused to make its layer (for the membership layer, the
/// `ConfigError` of `Discovery::new`: downcast it to read it). Carried by
/// [`StartError::Layer`].
pub type LayerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a node's process could not start ([`Sim::add_node`], [`Sim::restart`]). The node
/// is then not running: an added node is not added, a restarted one stays down.
///
/// Its text is whole (the refusal's own included) and it has no `source()`, so a reporter
/// that prints the chain (`anyhow`'s `{:#}`) says the reason once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The node's security provider refused its own identity.
    /// (A refusal's text without the `identity refused: ` it has as a remote's: the
    /// message says whose already.)
    #[error("own identity refused: {}", match .0 {
        HandshakeError::InvalidIdentity(e) => e.to_string(),
        e => e.to_string(),
    })]
    Identity(HandshakeError),
    /// Its layer factory ([`NodeSpec::try_layer`](crate::NodeSpec::try_layer)) returned
    /// this error (downcast it to read it); the process's core was dropped unstarted,
    /// nothing was sent.
    #[error("layer: {0}")]
    Layer(LayerError),
    /// No node has this id ([`Sim::restart`] of a node never added).
    #[error("no node n{0}")]
    NoSuchNode(NodeId),
    /// The node's security provider signed the same message twice and gave two different
    /// signatures (ECDSA with random nonces), which would make the run differ from its
    /// seed's trace on every replay. Sign deterministically (for
    /// `fabric_gossip_msp::MspSecurity`, `with_deterministic_signatures()`), or allow it with
    /// [`NodeSpec::random_signatures`](crate::NodeSpec::random_signatures).
    #[error(
        "the security provider of {endpoint} signs the same message differently each time, so \
         the run would not replay from its seed: sign deterministically (MspSecurity::\
         with_deterministic_signatures()), or allow it with NodeSpec::random_signatures(true)"
    )]
    RandomSignatures {
        /// The node's endpoint.
        endpoint: String,
    },
}

/// One event of a hosted layer, its type erased. Read it back with
/// [`LayerEvent::downcast_ref`]; its `Debug` form is the layer event's.
pub struct LayerEvent(Box<dyn ErasedEvent>);

trait ErasedEvent: fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: fmt::Debug + Send + Sync + 'static> ErasedEvent for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl LayerEvent {
    /// Wraps a layer's event.
    pub fn new<T: fmt::Debug + Send + Sync + 'static>(event: T) -> Self {
        LayerEvent(Box::new(event))
    }

    /// The event as the layer's own type, if it is one.
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        (*self.0).as_any().downcast_ref()
    }
}

impl fmt::Debug for LayerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (*self.0).fmt(f)
    }
}

/// A kept layer event ([`Sim::layer_events`]).
#[derive(Debug)]
pub struct LayerRecord {
    /// Virtual time, as an instant like the core's (since the Unix epoch): the time into
    /// the run is `at.saturating_duration_since(START)`, the clock [`Sim::elapsed`]
    /// reads.
    ///
    /// [`START`]: crate::START
    pub at: Instant,
    /// Which run of the node's process emitted it.
    pub incarnation: u32,
    /// The event.
    pub event: LayerEvent,
}

impl LayerRecord {
    /// Time into the run when it was emitted, as the trace writes it and [`Sim::elapsed`]
    /// reads it (`at` is an epoch instant, which every reader had to subtract
    /// [`START`](crate::START) from: a simulation user's trial).
    pub fn elapsed(&self) -> core::time::Duration {
        self.at.saturating_duration_since(crate::START)
    }
}

/// A [`Layer`] the simulator can host: any `Layer<Box<dyn Security>>` whose event is
/// `Debug + Send + Sync`, so that its events can be traced and kept as a [`LayerEvent`].
/// [`NodeSpec::layer`](crate::NodeSpec::layer) takes it.
pub trait SimLayer:
    Layer<Box<dyn Security>, Event: fmt::Debug + Send + Sync + 'static> + Send + 'static
{
}

impl<L> SimLayer for L
where
    L: Layer<Box<dyn Security>> + Send + 'static,
    L::Event: fmt::Debug + Send + Sync + 'static,
{
}

/// The layer a simulated node's [`Stack`] holds: the one its factory made, or none (then
/// the stack is exactly its core), its events erased into [`LayerEvent`]s. Dropped when
/// the process stops.
pub type HostedLayer = fabric_gossip_core::HostedLayer<Box<dyn Security>, LayerEvent>;

impl Sim {
    /// Node `n`'s layer as its own type `T`, if its current process runs one of that type.
    pub fn layer<T: 'static>(&self, n: NodeId) -> Option<&T> {
        self.nodes.get(n)?.stack.as_ref()?.layer().get()
    }

    /// Runs `f` with node `n`'s layer (as `T`) and core, then carries out what it caused:
    /// an application call into the layer. `None` if the node runs no layer of type `T`.
    ///
    /// Unlike [`Sim::with_comm`], `f` is not handed the time, and the core's
    /// `comm.now()` is the time of the node's last input, which may be seconds behind
    /// [`Sim::now`] on a quiet node. A call that takes the time gets `sim.now()`, read
    /// before: `let now = sim.now(); sim.with_layer::<Discovery, _>(n, |d, _comm|
    /// d.connect_anchor(now, endpoint))`.
    pub fn with_layer<T: 'static, R>(
        &mut self,
        n: NodeId,
        f: impl FnOnce(&mut T, &mut SimComm) -> R,
    ) -> Option<R> {
        let stack = self.nodes.get_mut(n)?.stack.as_mut()?;
        let r = stack.with_layer(|layer, comm| layer.get_mut::<T>().map(|l| f(l, comm)))?;
        self.pump(n);
        self.drain_work();
        Some(r)
    }

    /// Events node `n`'s layers emitted, all processes, oldest first (up to
    /// `record_limit`; the observer sees every one).
    pub fn layer_events(&self, n: NodeId) -> &[LayerRecord] {
        self.nodes.get(n).map_or(&[], |x| &x.layer_events)
    }

    /// Node `id`'s layer for its process `incarnation`, from its spec's factory (none
    /// without one).
    pub(crate) fn make_layer(
        &mut self,
        id: usize,
        incarnation: u32,
    ) -> Result<HostedLayer, LayerError> {
        let Some(factory) = self.nodes[id].spec.layer.clone() else {
            return Ok(HostedLayer::none());
        };
        // Drawn only for nodes with a layer, so runs without layers replay as before.
        let seed = self.rng.u64();
        let ctx = LayerContext {
            node: id,
            endpoint: self.nodes[id].endpoint.clone(),
            incarnation,
            seed,
            now: self.now,
        };
        factory(&ctx)
    }
}
