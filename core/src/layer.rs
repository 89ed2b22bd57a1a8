//! Layers above the core: how a protocol built on comm (Fabric's membership layer, an
//! application) plugs into one node so that every driver can host it unchanged.
//!
//! A layer is another pure, deterministic machine in the style of the core (as str0m stacks
//! ICE, DTLS and SCTP inside one `Rtc`): it consumes the core's events and the deliveries of
//! its own subscriptions, calls the core's API (`send`, `handshake`, `close_conn`, …) to act,
//! and reports what it learned through its own events. It never reads a clock, a socket or
//! unseeded randomness; time is the `now` every call carries.
//!
//! The driver does not know a layer's rules. It feeds the core as usual and routes:
//! every core [`Event`] to [`Layer::handle_comm_event`] before the application sees it, the
//! deliveries of subscriptions the layer owns ([`Layer::owns_subscription`]) to
//! [`Layer::handle_message`], and the layer's deadline ([`Layer::poll_timeout`]) to
//! [`Layer::handle_timeout`]. After each of those calls the core has new actions to drain.

use crate::comm::{Comm, Event};
use crate::ids::SubscriptionId;
use crate::message::ReceivedMessage;
use crate::security::Security;
use crate::time::Instant;

/// A deterministic protocol machine stacked on one node's [`Comm`].
///
/// Inputs come with the node's `Comm` so the layer can act at once (send, dial, close);
/// outputs for the application come out of [`Layer::poll_event`].
pub trait Layer<S: Security> {
    /// What the layer tells the application (for membership: a member became alive or
    /// dead).
    type Event;

    /// Called once, before any other input, right after the core is created: subscribe to
    /// the messages the layer consumes and start its own timers.
    fn start(&mut self, now: Instant, comm: &mut Comm<S>);

    /// Every core event, in the order the core produced it, before the application sees
    /// it. The layer may call the core in reaction (a `PresumedDead` may close a
    /// connection, a `Connected` may trigger a message).
    fn handle_comm_event(&mut self, now: Instant, comm: &mut Comm<S>, event: &Event);

    /// Whether deliveries of `sub` belong to this layer rather than to the application.
    fn owns_subscription(&self, sub: SubscriptionId) -> bool;

    /// One message delivered on a subscription the layer owns.
    fn handle_message(&mut self, now: Instant, comm: &mut Comm<S>, msg: ReceivedMessage);

    /// The layer's deadline passed (or a spare call: it must be harmless).
    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<S>);

    /// The layer's next deadline, if it has one.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event for the application, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
}

/// The empty layer: a node that is only comm.
impl<S: Security> Layer<S> for () {
    type Event = core::convert::Infallible;

    fn start(&mut self, _now: Instant, _comm: &mut Comm<S>) {}

    fn handle_comm_event(&mut self, _now: Instant, _comm: &mut Comm<S>, _event: &Event) {}

    fn owns_subscription(&self, _sub: SubscriptionId) -> bool {
        false
    }

    fn handle_message(&mut self, _now: Instant, _comm: &mut Comm<S>, _msg: ReceivedMessage) {}

    fn handle_timeout(&mut self, _now: Instant, _comm: &mut Comm<S>) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }
}
