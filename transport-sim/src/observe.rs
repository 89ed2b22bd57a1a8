//! Seeing what nodes' applications see, as it happens.
//!
//! [`Sim::deliveries`] and [`Sim::events`] keep records for inspection after the fact, up
//! to [`SimConfig::record_limit`](crate::SimConfig::record_limit) per node. A layer above
//! the core (a membership protocol, a user's application) needs each new delivery and event
//! when it happens, without scanning those records: set an observer. It is called for every
//! delivery the node's application takes and every event its core emits (`DeliveryReady`
//! excepted: that one drives the simulated reader), kept or not, in the order they happen.
//!
//! The observer runs inside a step and cannot call the simulator. The pattern is to collect
//! in the observer and act between steps:
//!
//! ```
//! use fabric_gossip_sim::*;
//! use fabric_gossip_core::SignedMessage;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! let mut sim = Sim::new(SimConfig::seeded(1));
//! sim.add_nodes(2);
//! let inbox: Arc<Mutex<Vec<(NodeId, u64)>>> = Arc::default();
//! let sink = inbox.clone();
//! sim.set_observer(move |n, seen| {
//!     if let Observation::Delivery(d) = seen {
//!         sink.lock().unwrap().push((n, d.msg.message.nonce));
//!     }
//! });
//! sim.send_to(0, &SignedMessage::noop(data_message(1, "ping")), &[1]).unwrap();
//! let deadline = sim.now() + Duration::from_secs(1);
//! while sim.step_until(deadline) {
//!     // React to what arrived during the step, e.g. answer it.
//!     let new: Vec<_> = inbox.lock().unwrap().drain(..).collect();
//!     for (n, _) in new {
//!         let back = SignedMessage::noop(data_message(2, "pong"));
//!         sim.send_to(n, &back, &[1 - n]).unwrap();
//!     }
//!     if !sim.deliveries(0).is_empty() {
//!         break;
//!     }
//! }
//! assert_eq!(sim.deliveries(0).len(), 1);
//! ```

use crate::config::NodeId;
use crate::layer::LayerEvent;
use crate::node::Delivered;
use crate::sim::Sim;
use fabric_gossip_core::{Event, Instant};

/// One thing a node's application saw.
#[derive(Clone, Copy, Debug)]
pub enum Observation<'a> {
    /// A message the application took from a subscription (the record
    /// [`Sim::deliveries`] keeps).
    Delivery(&'a Delivered),
    /// An event of the node's core (`DeliveryReady` excepted).
    Event {
        /// Virtual time.
        at: Instant,
        /// Which run of the node's process emitted it (0 first, +1 per restart).
        incarnation: u32,
        /// The event.
        event: &'a Event,
    },
    /// An event of the node's hosted layer (see the [`layer`](crate::layer) module).
    Layer {
        /// Virtual time.
        at: Instant,
        /// Which run of the node's process emitted it.
        incarnation: u32,
        /// The event; [`LayerEvent::downcast_ref`] gives the layer's own type.
        event: &'a LayerEvent,
    },
}

/// The callback [`Sim::set_observer`] installs: the node, and what it saw.
pub type Observer = Box<dyn FnMut(NodeId, Observation<'_>) + Send>;

impl Sim {
    /// Calls `f` with every delivery and event of every node from now on, as it happens
    /// (replacing any observer set before). See the [module documentation](crate::observe).
    pub fn set_observer(&mut self, f: impl FnMut(NodeId, Observation<'_>) + Send + 'static) {
        self.observer = Some(Box::new(f));
    }

    /// Removes the observer.
    pub fn clear_observer(&mut self) {
        self.observer = None;
    }

    pub(crate) fn observe(&mut self, n: NodeId, seen: Observation<'_>) {
        if let Some(f) = self.observer.as_mut() {
            f(n, seen);
        }
    }
}
