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
//! `Node` is not generic (its security provider is boxed), so the layer is boxed too, in
//! the core's [`HostedLayer`]; its events travel as `Box<dyn Any + Send>` and the
//! application's typed views ([`crate::Node::layer_events`], [`crate::Node::with_layer`])
//! downcast them to the layer's own types.

use crate::driver::Core;
use fabric_gossip_core::{Comm, HostedLayer, Instant, Layer, Output, Security, Stack, StackOutput};
use std::any::{Any, TypeId};
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use tokio::sync::mpsc;

/// A layer event on its way to the application, type-erased.
pub(crate) type AnyEvent = Box<dyn Any + Send>;

/// The security provider as the node boxes it; a hosted layer is a `Layer` of this.
pub type NodeSecurity = Box<dyn Security>;

/// The layer a node hosts: none (a bare core), or one boxed with its events erased.
pub(crate) type Hosted = HostedLayer<NodeSecurity, AnyEvent>;

fn erase<E: Send + 'static>(event: E) -> AnyEvent {
    Box::new(event)
}

/// Builds the layer once the listen address is known (a membership layer's internal
/// endpoint is the bound address when port 0 was asked for).
pub(crate) struct LayerFactory {
    make: Box<dyn FnOnce(SocketAddr) -> Result<Hosted, LayerError> + Send>,
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

/// Why a fallible layer factory refused to make its layer (`NodeBuilder::try_layer`).
pub(crate) type LayerError = Box<dyn std::error::Error + Send + Sync>;

impl LayerFactory {
    pub(crate) fn new<L, E, F>(make: F) -> Self
    where
        L: Layer<NodeSecurity> + Send + 'static,
        L::Event: Send + 'static,
        E: Into<LayerError>,
        F: FnOnce(SocketAddr) -> Result<L, E> + Send + 'static,
    {
        LayerFactory {
            make: Box::new(move |addr| {
                let layer = make(addr).map_err(Into::into)?;
                Ok(HostedLayer::new(layer, erase::<L::Event>))
            }),
            event_type: TypeId::of::<L::Event>(),
            layer_type: TypeId::of::<L>(),
        }
    }

    pub(crate) fn build(self, addr: SocketAddr) -> Result<Hosted, LayerError> {
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
    /// Puts `layer` on `comm` and starts it; its events go to `events`.
    pub(crate) fn new(comm: Core, layer: Hosted, events: Option<mpsc::Sender<AnyEvent>>) -> Self {
        HostedCore {
            stack: Stack::new(comm, layer),
            events,
            events_dropped: 0,
        }
    }

    /// The stack's one output, as the core's [`Output`]; the layer's events are queued for the application here
    /// (or dropped and counted when nobody reads them), so the driver sees only actions,
    /// core events and the time-out. Once the core has stopped and everything is
    /// drained, the queue is closed so that the application's stream ends.
    pub(crate) fn poll_output(&mut self) -> Output {
        if !self.has_layer() {
            // Without a layer the stack routes nothing: the core's own output, without
            // moving each one through the stack's enum and back (about 500 instructions
            // per SendWithAck round of a caller, callgrind).
            return self.stack.comm_mut().poll_output();
        }
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

    /// The earlier of the core's and the layer's deadlines ([`Stack::poll_timeout`]).
    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.stack.poll_timeout()
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
        self.stack.layer().is_some()
    }

    /// Runs `f` with the layer as an `L` and the core, if the hosted layer is an `L`.
    pub(crate) fn with_layer<L: 'static, R>(
        &mut self,
        f: impl FnOnce(&mut L, &mut Core) -> R,
    ) -> Option<R> {
        self.stack
            .with_layer(|hosted, comm| hosted.get_mut::<L>().map(|layer| f(layer, comm)))
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
