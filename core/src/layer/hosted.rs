//! A layer chosen at run time: what a driver whose nodes are not generic over a layer type
//! (the simulator's `Sim`, the tonic `Node`) keeps in its [`Stack`].
//!
//! Each node may run a different layer, or none, so the driver boxes it and turns its
//! events into one type of the driver's choosing (the simulator's `Debug`-able record, the
//! tonic node's `Box<dyn Any + Send>` for the application's typed view). The application
//! gets its own layer back by type with [`HostedLayer::get`] and [`HostedLayer::get_mut`].
//! Without a layer, [`HostedLayer`] routes nothing, so the stack's output is its core's.

use super::Layer;
use crate::comm::{Comm, Event};
use crate::ids::SubscriptionId;
use crate::message::ReceivedMessage;
use crate::security::Security;
use crate::time::Instant;
use core::any::Any;
use core::fmt;

/// One boxed layer with its event type turned into `E`; `None` is the empty layer.
pub struct HostedLayer<S: Security, E>(Option<Box<dyn Erased<S, E>>>);

/// A boxed [`Layer`] whose events are `E`, that can be found again by its own type.
trait Erased<S: Security, E>: Layer<S, Event = E> + Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A layer and the function that turns its events into `E`: itself a layer, of events `E`.
struct Erase<S: Security, L: Layer<S>, E> {
    layer: L,
    erase: fn(L::Event) -> E,
}

impl<S: Security, L: Layer<S>, E> Layer<S> for Erase<S, L, E> {
    type Event = E;

    fn start(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.layer.start(now, comm);
    }
    fn handle_comm_event(&mut self, now: Instant, comm: &mut Comm<S>, event: &Event) {
        self.layer.handle_comm_event(now, comm, event);
    }
    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        self.layer.owns_subscription(sub)
    }
    fn handle_message(&mut self, now: Instant, comm: &mut Comm<S>, msg: ReceivedMessage) {
        self.layer.handle_message(now, comm, msg);
    }
    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.layer.handle_timeout(now, comm);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.layer.poll_timeout()
    }
    fn poll_event(&mut self) -> Option<E> {
        self.layer.poll_event().map(self.erase)
    }
}

impl<S, L, E> Erased<S, E> for Erase<S, L, E>
where
    S: Security,
    L: Layer<S> + Send + 'static,
{
    fn as_any(&self) -> &dyn Any {
        &self.layer
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        &mut self.layer
    }
}

impl<S: Security, E> HostedLayer<S, E> {
    /// No layer: the stack is exactly its core.
    pub fn none() -> Self {
        HostedLayer(None)
    }

    /// Hosts `layer`, whose events `erase` turns into the driver's event type.
    pub fn new<L>(layer: L, erase: fn(L::Event) -> E) -> Self
    where
        S: 'static,
        E: 'static,
        L: Layer<S> + Send + 'static,
    {
        HostedLayer(Some(Box::new(Erase { layer, erase })))
    }

    /// Whether a layer runs.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The layer as its own type, if it is a `T`.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.as_ref().and_then(|l| l.as_any().downcast_ref())
    }

    /// The layer as its own type, if it is a `T`, for the application's calls into it.
    pub fn get_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.0.as_mut().and_then(|l| l.as_any_mut().downcast_mut())
    }

    /// Drops the layer (its process stopped): from now on the empty layer.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl<S: Security, E> Default for HostedLayer<S, E> {
    fn default() -> Self {
        HostedLayer::none()
    }
}

impl<S: Security, E> fmt::Debug for HostedLayer<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "HostedLayer(Some)"
        } else {
            "HostedLayer(None)"
        })
    }
}

impl<S: Security, E> Layer<S> for HostedLayer<S, E> {
    type Event = E;

    fn start(&mut self, now: Instant, comm: &mut Comm<S>) {
        if let Some(l) = &mut self.0 {
            l.start(now, comm);
        }
    }

    fn handle_comm_event(&mut self, now: Instant, comm: &mut Comm<S>, event: &Event) {
        if let Some(l) = &mut self.0 {
            l.handle_comm_event(now, comm, event);
        }
    }

    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        self.0.as_ref().is_some_and(|l| l.owns_subscription(sub))
    }

    fn handle_message(&mut self, now: Instant, comm: &mut Comm<S>, msg: ReceivedMessage) {
        if let Some(l) = &mut self.0 {
            l.handle_message(now, comm, msg);
        }
    }

    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<S>) {
        if let Some(l) = &mut self.0 {
            l.handle_timeout(now, comm);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|l| l.poll_timeout())
    }

    fn poll_event(&mut self) -> Option<E> {
        self.0.as_mut().and_then(|l| l.poll_event())
    }
}
