//! Layers above the core: how a protocol built on comm (Fabric's membership layer, an
//! application) plugs into one node so that every driver can host it unchanged.
//!
//! A layer is another pure, deterministic machine in the style of the core (as str0m stacks
//! ICE, DTLS and SCTP inside one `Rtc`): it consumes the core's events and the deliveries of
//! its own subscriptions, calls the core's API (`send`, `handshake`, `close_conn`, …) to act,
//! and reports what it learned through its own events. It never reads a clock, a socket or
//! unseeded randomness; time is the `now` every call carries.
//!
//! The driver does not know a layer's rules. It hosts a [`Stack`]: the core and one layer
//! with a single output, [`Stack::poll_output`], which routes every core [`Event`] to
//! [`Layer::handle_comm_event`] before the application sees it, the deliveries of
//! subscriptions the layer owns ([`Layer::owns_subscription`]) to
//! [`Layer::handle_message`], and the layer's deadline ([`Layer::poll_timeout`]) into the
//! one time-out, so a driver hosts any layer with the same loop it uses for a bare core.
//! (Layers stack: a layer may itself hold another.)

use crate::comm::{Action, Comm, Event, Output};
use crate::ids::SubscriptionId;
use crate::message::ReceivedMessage;
use crate::security::Security;
use crate::time::Instant;

mod hosted;
pub use hosted::HostedLayer;

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

/// What a [`Stack`] hands its driver: the core's [`Output`] plus the layer's events.
#[derive(Debug)]
#[must_use]
pub enum StackOutput<E> {
    /// Network work for the driver, as [`Output::Action`].
    Action(Action),
    /// A core event for the application, after the layer saw it. `DeliveryReady` of a
    /// subscription the layer owns never comes out: the stack delivered it to the layer.
    Event(Event),
    /// An event of the layer for the application.
    Layer(E),
    /// Nothing else is pending: call [`Stack::handle_timeout`] at this instant (`None`: no
    /// deadline, core's or layer's). Always the last output of a drain.
    Timeout(Option<Instant>),
}

/// One node: a [`Comm`] and the [`Layer`] above it, driven as one machine.
///
/// The driver feeds network inputs to [`Stack::comm_mut`] (`accept_stream`,
/// `handle_envelope`, …) and time to [`Stack::handle_timeout`], and after every input,
/// API call or [`Stack::poll_delivery`] drains [`Stack::poll_output`] until it returns
/// [`StackOutput::Timeout`]. Everything a bare core's driver does stays the same; the
/// stack adds the routing to and from the layer.
#[derive(Debug)]
pub struct Stack<S: Security, L: Layer<S>> {
    comm: Comm<S>,
    layer: L,
}

impl<S: Security, L: Layer<S>> Stack<S, L> {
    /// Puts `layer` on `comm` and starts it ([`Layer::start`]) at the core's current
    /// instant.
    pub fn new(mut comm: Comm<S>, mut layer: L) -> Self {
        let now = comm.now();
        comm.as_layer(|c| layer.start(now, c));
        Stack { comm, layer }
    }

    /// The core, for getters.
    pub fn comm(&self) -> &Comm<S> {
        &self.comm
    }

    /// The core, for network inputs and the application's own API calls. Not for time:
    /// `comm_mut().handle_timeout(now)` advances the core alone and the layer never runs
    /// its timers; hand time to [`Stack::handle_timeout`], and wait for
    /// [`Stack::poll_timeout`], not the core's.
    pub fn comm_mut(&mut self) -> &mut Comm<S> {
        &mut self.comm
    }

    /// The layer, for its getters.
    pub fn layer(&self) -> &L {
        &self.layer
    }

    /// The layer, for the application's calls into it; for calls that need the core too,
    /// use [`Stack::with_layer`].
    pub fn layer_mut(&mut self) -> &mut L {
        &mut self.layer
    }

    /// Runs `f` with the layer and the core: an application call into the layer that
    /// acts on the network at once. What the layer sends in it is the layer's (see
    /// [`Comm::unsent_to_flush`]).
    pub fn with_layer<R>(&mut self, f: impl FnOnce(&mut L, &mut Comm<S>) -> R) -> R {
        let layer = &mut self.layer;
        self.comm.as_layer(|c| f(layer, c))
    }

    /// Takes the stack apart.
    pub fn into_parts(self) -> (Comm<S>, L) {
        (self.comm, self.layer)
    }

    /// Advances time for both: the core's deadlines, then the layer's if it is due. Once
    /// the core is stopped ([`Comm::stop`]) the layer gets no more time-outs, and its
    /// deadline no longer counts in [`StackOutput::Timeout`]: everything it would do on a
    /// timer fails in a stopped core (a driver that stops the core and hands the stack a
    /// time-out before draining the core's `Stopped` made the membership layer heartbeat
    /// into it, counted as comm errors, and declare members dead after the stop).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.comm.handle_timeout(now);
        if !self.comm.is_stopped() && self.layer.poll_timeout().is_some_and(|at| at <= now) {
            let layer = &mut self.layer;
            self.comm.as_layer(|c| layer.handle_timeout(now, c));
        }
    }

    /// When the driver must next call [`Stack::handle_timeout`]: the earlier of the core's
    /// and the layer's deadlines (the layer's not once the core is stopped), as the
    /// [`StackOutput::Timeout`] that ends a drain says, for a driver that waits on
    /// something else than the drain's last output (the core's own
    /// [`Comm::poll_timeout`] leaves the layer's timers out).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let core = self.comm.poll_timeout();
        self.with_layer_deadline(core)
    }

    /// The earlier of the core's deadline `core` and the layer's, the layer's not once the
    /// core is stopped.
    fn with_layer_deadline(&self, core: Option<Instant>) -> Option<Instant> {
        let layer = if self.comm.is_stopped() {
            None
        } else {
            self.layer.poll_timeout()
        };
        match (core, layer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A delivery of one of the application's own subscriptions (see
    /// [`Comm::poll_delivery`]); drain [`Stack::poll_output`] afterwards.
    pub fn poll_delivery(&mut self, sub: SubscriptionId) -> Option<ReceivedMessage> {
        self.comm.poll_delivery(sub)
    }

    /// Everything the driver must see, in order: the core's actions (including those the
    /// layer caused), core events (each shown to the layer first), the layer's events, and
    /// last the earlier of the core's and the layer's deadlines.
    pub fn poll_output(&mut self) -> StackOutput<L::Event> {
        loop {
            match self.comm.poll_output() {
                Output::Action(a) => return StackOutput::Action(a),
                Output::Event(e) => {
                    let now = self.comm.now();
                    let layer = &mut self.layer;
                    self.comm.as_layer(|c| layer.handle_comm_event(now, c, &e));
                    if let Event::DeliveryReady(sub) = e
                        && self.layer.owns_subscription(sub)
                    {
                        let layer = &mut self.layer;
                        self.comm.as_layer(|c| {
                            while let Some(m) = c.poll_delivery(sub) {
                                layer.handle_message(now, c, m);
                            }
                        });
                        // What the layer did comes out of the next round.
                        continue;
                    }
                    return StackOutput::Event(e);
                }
                Output::Timeout(core) => {
                    if let Some(e) = self.layer.poll_event() {
                        return StackOutput::Layer(e);
                    }
                    return StackOutput::Timeout(self.with_layer_deadline(core));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
