//! Hosting a protocol layer (Fabric's membership, an application) above the core.
//!
//! The node keeps one core behind its mutex; with a layer, that core sits in the core's
//! [`Stack`], whose single output ([`Stack::poll_output`]) routes core events, the
//! layer's subscriptions and its deadline as the `Layer` contract says. The driver knows
//! no rule of the layer: it drains the stack exactly as it drains a bare core, carries
//! the actions out, and hands the layer's events to the application through a bounded
//! queue (drops counted). Without a layer the stack holds the empty layer, which routes
//! nothing, so a node without one behaves as before.
//!
//! `Node` is not generic (its security provider is boxed), so the layer is boxed too,
//! behind [`ErasedLayer`]; its events travel as `Box<dyn Any + Send>` and the
//! application's typed views ([`crate::Node::layer_events`], [`crate::Node::with_layer`])
//! downcast them to the layer's own types.

use crate::driver::Core;
use fabric_gossip_core::{
    Comm, Event, Instant, Layer, Output, ReceivedMessage, Security, Stack, StackOutput,
    SubscriptionId,
};
use std::any::{Any, TypeId};
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use tokio::sync::mpsc;

/// A layer event on its way to the application, type-erased.
pub(crate) type AnyEvent = Box<dyn Any + Send>;

/// The security provider as the node boxes it; a hosted layer is a `Layer` of this.
pub type NodeSecurity = Box<dyn Security>;

/// An object-safe view of any `Layer<NodeSecurity>` whose events can cross threads.
pub(crate) trait ErasedLayer: Send {
    fn start(&mut self, now: Instant, comm: &mut Core);
    fn handle_comm_event(&mut self, now: Instant, comm: &mut Core, event: &Event);
    fn owns_subscription(&self, sub: SubscriptionId) -> bool;
    fn handle_message(&mut self, now: Instant, comm: &mut Core, msg: ReceivedMessage);
    fn handle_timeout(&mut self, now: Instant, comm: &mut Core);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_event(&mut self) -> Option<AnyEvent>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<L> ErasedLayer for L
where
    L: Layer<NodeSecurity> + Send + 'static,
    L::Event: Send + 'static,
{
    fn start(&mut self, now: Instant, comm: &mut Core) {
        Layer::start(self, now, comm);
    }
    fn handle_comm_event(&mut self, now: Instant, comm: &mut Core, event: &Event) {
        Layer::handle_comm_event(self, now, comm, event);
    }
    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        Layer::owns_subscription(self, sub)
    }
    fn handle_message(&mut self, now: Instant, comm: &mut Core, msg: ReceivedMessage) {
        Layer::handle_message(self, now, comm, msg);
    }
    fn handle_timeout(&mut self, now: Instant, comm: &mut Core) {
        Layer::handle_timeout(self, now, comm);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Layer::poll_timeout(self)
    }
    fn poll_event(&mut self) -> Option<AnyEvent> {
        Layer::poll_event(self).map(|e| Box::new(e) as AnyEvent)
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The layer a node hosts: none (a bare core), or one boxed.
pub(crate) struct Hosted(Option<Box<dyn ErasedLayer>>);

impl Layer<NodeSecurity> for Hosted {
    type Event = AnyEvent;

    fn start(&mut self, now: Instant, comm: &mut Core) {
        if let Some(l) = &mut self.0 {
            l.start(now, comm);
        }
    }
    fn handle_comm_event(&mut self, now: Instant, comm: &mut Core, event: &Event) {
        if let Some(l) = &mut self.0 {
            l.handle_comm_event(now, comm, event);
        }
    }
    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        self.0.as_ref().is_some_and(|l| l.owns_subscription(sub))
    }
    fn handle_message(&mut self, now: Instant, comm: &mut Core, msg: ReceivedMessage) {
        if let Some(l) = &mut self.0 {
            l.handle_message(now, comm, msg);
        }
    }
    fn handle_timeout(&mut self, now: Instant, comm: &mut Core) {
        if let Some(l) = &mut self.0 {
            l.handle_timeout(now, comm);
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|l| l.poll_timeout())
    }
    fn poll_event(&mut self) -> Option<AnyEvent> {
        self.0.as_mut().and_then(|l| l.poll_event())
    }
}

/// Builds the layer once the listen address is known (a membership layer's internal
/// endpoint is the bound address when port 0 was asked for).
pub(crate) struct LayerFactory {
    make: Box<dyn FnOnce(SocketAddr) -> Box<dyn ErasedLayer> + Send>,
    /// The type of the layer's events, so that a typed view can be refused at once.
    pub(crate) event_type: TypeId,
    /// The type of the layer itself.
    pub(crate) layer_type: TypeId,
}

impl fmt::Debug for LayerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerFactory").finish_non_exhaustive()
    }
}

impl LayerFactory {
    pub(crate) fn new<L, F>(make: F) -> Self
    where
        L: Layer<NodeSecurity> + Send + 'static,
        L::Event: Send + 'static,
        F: FnOnce(SocketAddr) -> L + Send + 'static,
    {
        LayerFactory {
            make: Box::new(move |addr| Box::new(make(addr)) as Box<dyn ErasedLayer>),
            event_type: TypeId::of::<L::Event>(),
            layer_type: TypeId::of::<L>(),
        }
    }

    pub(crate) fn build(self, addr: SocketAddr) -> Box<dyn ErasedLayer> {
        (self.make)(addr)
    }
}

/// The node's core inside a [`Stack`], with the queue its layer's events go to. It
/// dereferences to the core, so every driver path that feeds the core network input is
/// unchanged; only the drain ([`HostedCore::poll_output`]) and time
/// ([`HostedCore::handle_timeout`], [`HostedCore::poll_timeout`]) go through the stack.
pub(crate) struct HostedCore {
    stack: Stack<NodeSecurity, Hosted>,
    events: Option<mpsc::Sender<AnyEvent>>,
    events_dropped: u64,
}

impl HostedCore {
    /// Puts `layer` (if any) on `comm` and starts it; its events go to `events`.
    pub(crate) fn new(
        comm: Core,
        layer: Option<Box<dyn ErasedLayer>>,
        events: Option<mpsc::Sender<AnyEvent>>,
    ) -> Self {
        HostedCore {
            stack: Stack::new(comm, Hosted(layer)),
            events,
            events_dropped: 0,
        }
    }

    /// The stack's one output, as the core's [`Output`]; the layer's events are queued for the application here
    /// (or dropped and counted when nobody reads them), so the driver sees only actions,
    /// core events and the time-out. Once the core has stopped and everything is
    /// drained, the queue is closed so that the application's stream ends.
    pub(crate) fn poll_output(&mut self) -> Output {
        loop {
            match self.stack.poll_output() {
                StackOutput::Action(a) => return Output::Action(a),
                StackOutput::Event(e) => return Output::Event(e),
                StackOutput::Layer(e) => {
                    let sent = self
                        .events
                        .as_ref()
                        .is_some_and(|tx| tx.try_send(e).is_ok());
                    if !sent {
                        self.events_dropped += 1;
                    }
                }
                StackOutput::Timeout(t) => {
                    if self.stack.comm().is_stopped() {
                        self.events = None;
                    }
                    return Output::Timeout(t);
                }
            }
        }
    }

    /// The earlier of the core's and the layer's deadlines.
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        let layer = Layer::poll_timeout(self.stack.layer());
        match (self.stack.comm_mut().poll_timeout(), layer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time for both: the core's deadlines, then the layer's if due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.stack.handle_timeout(now);
    }

    /// Layer events dropped because the application's queue was full (or not taken).
    pub(crate) fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Whether a layer is hosted.
    pub(crate) fn has_layer(&self) -> bool {
        self.stack.layer().0.is_some()
    }

    /// Runs `f` with the layer as an `L` and the core, if the hosted layer is an `L`.
    pub(crate) fn with_layer<L: 'static, R>(
        &mut self,
        f: impl FnOnce(&mut L, &mut Core) -> R,
    ) -> Option<R> {
        self.stack.with_layer(|hosted, comm| {
            let layer = hosted.0.as_mut()?.as_any_mut().downcast_mut::<L>()?;
            Some(f(layer, comm))
        })
    }
}

impl Deref for HostedCore {
    type Target = Comm<NodeSecurity>;
    fn deref(&self) -> &Self::Target {
        self.stack.comm()
    }
}

impl DerefMut for HostedCore {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.stack.comm_mut()
    }
}
