//! The driver: the core behind one mutex, and the tasks that carry out its actions.
//!
//! # Why a mutex and not an actor task
//!
//! Every core call is short and never waits, so the tasks that have input for the core (a
//! stream's reader, a writer returning credit, the timer, API callers) take the lock, call
//! the core, carry out its actions and release. Compared with an actor task that owns the
//! core, this saves a channel hop and a task wake-up per input, which is most of the cost of
//! a small message. It cannot deadlock: nothing awaits or blocks while holding the lock
//! (a `std::sync::MutexGuard` cannot be held across an `.await` in a `Send` future), and
//! what runs under it only does non-blocking things: `try_send` into bounded channels,
//! waking wakers, spawning tasks, aborting tasks (which never runs their destructors
//! inline). Nothing that itself takes the lock is ever dropped under it, nor woken: the one
//! waker that takes it (a [`Kick`]) is woken by the runtime when a worker runs out of tasks,
//! or, outside a runtime, right after the lock is released.

mod clock;
mod dial;
mod drain;
mod errors;
mod lock;
mod read;
mod stop;
mod timer;
mod write;

use crate::framed::Bodies;
use crate::inbound::{Admission, DriverLimits, Outcome, Slot};
use crate::layer::HostedCore;
use crate::metered::Budget;
use crate::tls::ClientTls;
use bytes::Bytes;
use fabric_gossip_core::{
    Comm, ConnectionInfo, DialId, Event, HandshakeError, Instant, OpId, PkiId, ProbeError,
    ReceivedMessage, Security, SendResult, StreamId, SubscriptionId,
};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

pub(crate) use clock::Clock;
pub(crate) use drain::drain;
pub(crate) use read::accept_inbound;
pub(crate) use timer::timer_task;
pub(crate) use write::OutStream;

use drain::Writes;
use lock::{Gates, Kick, Later, Locked};
use read::StreamCtl;
use stop::Winding;
use write::Out;

/// The core as the driver holds it: the security provider is boxed so that `Node` is not
/// generic.
pub(crate) type Core = Comm<Box<dyn Security>>;

/// The HTTP/2 flow-control window this node advertises, per stream and per connection
/// alike (a gossip connection carries one stream that matters): `DriverLimits::
/// flow_control_window` within what HTTP/2 allows.
pub(crate) fn flow_window(limits: &DriverLimits) -> u32 {
    limits.flow_control_window.clamp(65_535, (1 << 31) - 1)
}

/// Largest HTTP/2 frame this node accepts (its `SETTINGS_MAX_FRAME_SIZE`; the protocol default
/// is 16 KiB). h2 writes one DATA frame per syscall, so at 16 KiB a stream of 1 KiB Envelopes
/// costs a `writev` per 12 of them; at 64 KiB, just above the chunks the encoder yields
/// (`codec::YIELD_THRESHOLD`), a quarter of that: about 20 % less CPU per message and 30 % more
/// one-way throughput on loopback (`bench_report`). It only lets peers send bigger frames;
/// what this node sends is bounded by what each peer advertises (16 KiB for Go gRPC), so
/// interop is unchanged. Memory is bounded by the flow-control window ([`flow_window`]), not
/// by this.
pub(crate) const MAX_FRAME: u32 = 64 << 10;

struct StreamEntry {
    /// Capacity `write_window + 2`: the core never has more than `write_window` Envelopes in
    /// flight on an established stream, plus its one `ConnEstablish` and the end marker.
    tx: mpsc::Sender<Out>,
    ctl: Arc<StreamCtl>,
    task: Option<AbortHandle>,
    /// The inbound connection it came on, until the core authenticated it.
    conn: Option<Arc<Slot>>,
    /// Held while the stream is authenticated: its connection is not pending meanwhile.
    _auth: Option<AuthGuard>,
    /// The stream's span (its PKI-ID is recorded once known).
    span: tracing::Span,
    /// This node opened it (an outbound stream's task is the client's call).
    outbound: bool,
    /// What the reader had taken from HTTP/2 when a `PauseRead` stopped it (its backlog),
    /// parked here so that the drain that executes the `ResumeRead` hands it in under the
    /// same lock ([`feed_backlog`]), not the reader task some time later: the core may
    /// close a retired stream at its next look, and a reader starved past it lost the
    /// backlog (counted, but lost).
    ///
    /// [`feed_backlog`]: drain::feed_backlog
    held: VecDeque<Bytes>,
}

/// Marks an inbound connection as carrying an authenticated stream for as long as it lives.
struct AuthGuard {
    admission: Arc<Admission>,
    slot: Arc<Slot>,
}

impl AuthGuard {
    fn new(admission: Arc<Admission>, slot: Arc<Slot>) -> Self {
        admission.authenticated(&slot);
        AuthGuard { admission, slot }
    }
}

impl AuthGuard {
    /// Closes the connection `close_grace` after its stream closed, if that stream has
    /// not finished by then (see [`DriverLimits::close_grace`]).
    fn reap_unless_finished(&self, inner: &Arc<Inner>, ctl: Arc<StreamCtl>) {
        if ctl.ended.load(Ordering::Acquire) {
            // Finished already (the remote ended it, or the connection died): no timer.
            return;
        }
        let slot = self.slot.clone();
        let weak = Arc::downgrade(inner);
        let grace = inner.settings.limits.close_grace;
        inner.rt.spawn(async move {
            tokio::time::sleep(grace).await;
            if ctl.ended.load(Ordering::Acquire) {
                return;
            }
            tracing::debug!(
                remote = ?slot.remote(),
                "inbound connection closed: a closed stream was not taken"
            );
            slot.kill();
            if let Some(inner) = weak.upgrade() {
                inner.lock().stats.unfinished_closes += 1;
            }
        });
    }
}

impl Drop for AuthGuard {
    fn drop(&mut self) {
        self.admission.unauthenticated(&self.slot);
    }
}

struct DialEntry {
    channel: Option<Channel>,
    task: Option<AbortHandle>,
}

/// Who is waiting for an operation's result.
pub(crate) enum Waiter {
    Probe(oneshot::Sender<Result<(), ProbeError>>),
    Handshake(oneshot::Sender<Result<Arc<ConnectionInfo>, HandshakeError>>),
    Ack(oneshot::Sender<Vec<SendResult>>),
}

/// Counters of the driver itself (the core counts everything else).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// PresumedDead notifications dropped because nobody drained `presumed_dead()` and its
    /// buffer (`presumed_dead_buffer`) was full.
    pub presumed_dead_dropped: u64,
    /// IdentitySwitch notifications dropped for the same reason.
    pub identity_switch_dropped: u64,
    /// Writes that found their stream's writer gone (connection already broken); each
    /// closed the connection as a failed write.
    pub write_failures: u64,
    /// Outbound connections (TCP, and TLS when on) established.
    pub dials_ok: u64,
    /// Outbound connection attempts that failed. Each attempt counts: the core tries a
    /// dial again after a failure until its `dial_timeout` (`Stats::dial_retries`), so a
    /// peer that is down for a whole dial counts about three here.
    pub dials_failed: u64,
    /// Event copies not delivered to the event tap because it was full or closed.
    pub events_dropped: u64,
    /// Writes that found their RPC already ended by the remote; the stream's end (with the
    /// remote's status) is reported by its reader instead of as a failed write.
    pub writes_after_end: u64,
    /// Inbound connections accepted (admitted by the connection limits).
    pub inbound_accepted: u64,
    /// Inbound connections open now.
    pub inbound_open: u64,
    /// Of those, pending: without an authenticated gossip stream.
    pub inbound_pending: u64,
    /// Inbound connections refused at once: the inbound cap was reached and none was pending.
    pub inbound_refused: u64,
    /// Pending inbound connections closed to make room (caps, or out of file descriptors).
    pub inbound_evicted: u64,
    /// Pending inbound connections closed at `setup_timeout`.
    pub inbound_setup_timeouts: u64,
    /// `accept` failures other than a vanished connection (`EMFILE`...), each followed by a
    /// back-off.
    pub accept_errors: u64,
    /// Inbound TLS handshakes that failed (a client certificate not trusted, a client not
    /// speaking TLS or not offering HTTP/2), not counting those the connection limits cut.
    pub inbound_tls_failures: u64,
    /// Bytes held now for incomplete messages, over all streams.
    pub incomplete_bytes: u64,
    /// The most ever held for incomplete messages.
    pub incomplete_bytes_peak: u64,
    /// Times a stream waited because the incomplete-message budget was spent.
    pub incomplete_budget_waits: u64,
    /// Streams reset because a message in progress stalled.
    pub stalled_messages: u64,
    /// Inbound connections closed because a stream the core had closed was still not
    /// finished `close_grace` later ([`DriverLimits::close_grace`]): its remote was not
    /// taking what was left of it.
    pub unfinished_closes: u64,
    /// Streams ended because their bytes were not gRPC messages (bad compression flag,
    /// stream ended inside a message); malformed Envelopes are the core's `malformed`.
    pub bad_framing: u64,
    /// Envelopes read from a stream and not yet handed to the core when the core closed it
    /// (replaced, retired, `close_conn`, presumed dead, stopping): lost, as Fabric loses
    /// what a closed connection had read and not yet dispatched, but counted. Mostly a
    /// paused stream's backlog, and the rest of a DATA frame (up to 256 Envelopes) past
    /// the reader's batch; also what a stream closed while stopping still brought before
    /// its remote ended it (read to its end and discarded, so the stop knows the remote
    /// took everything). Not what HTTP/2 itself still buffered, which was never read.
    pub unread_at_close: u64,
    /// Events of the hosted layer dropped because the application did not take them
    /// (its `layer_events` queue was full, or nobody asked for it).
    pub layer_events_dropped: u64,
    /// Deliveries an [`crate::Incoming`] had taken from the core and not handed out when
    /// it was dropped: discarded with it (those still queued in the core's subscription
    /// are the core's `Stats::dropped_on_unsubscribe`).
    pub dropped_with_incoming: u64,
}

/// The driver's tables, keyed by the core's handles (never by anything a remote chooses):
/// every operation, delivery and stream event looks one up under the lock, so they use a
/// fast hash instead of std's SipHash.
type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// Everything behind the lock.
pub(crate) struct State {
    /// The core, inside the stack that hosts the node's layer (if any); it dereferences
    /// to the core.
    pub(crate) comm: HostedCore,
    streams: Map<StreamId, StreamEntry>,
    dials: Map<DialId, DialEntry>,
    pub(crate) ops: Map<OpId, Waiter>,
    pub(crate) subs: Map<SubscriptionId, Option<Waker>>,
    presumed_dead_tx: Option<mpsc::Sender<PkiId>>,
    identity_switch_tx: Option<mpsc::Sender<PkiId>>,
    /// The driver's connection lines (connected, disconnected, presumed dead, probed us):
    /// 20 a second, as the core's own (an attack made each of an insider's messages a
    /// connection and an identity switch on every other node, 2026-12-07).
    pub(crate) conn_log: fabric_gossip_core::LogBudget,
    timer_target: Option<Instant>,
    pub(crate) stats: DriverStats,
    /// Wake-ups decided under the lock and given once it is released (see [`Locked`]).
    later: Vec<Later>,
    /// SendWithAck results whose callers are not woken yet: one per release of the lock
    /// (see [`Locked`]).
    links: VecDeque<(oneshot::Sender<Vec<SendResult>>, Vec<SendResult>)>,
    /// Writes of one stream gathered during a drain, not yet on its writer's queue.
    writes: Writes,
    /// Streams resumed with a parked backlog ([`StreamEntry::held`]) that the drain under
    /// way hands in before it lets go of the lock.
    backlogs: VecDeque<StreamId>,
    /// Endpoints whose dials fail (how loudly the next failure is logged).
    unreachable: dial::Unreachable,
}

/// Settings the tasks need, fixed at start.
pub(crate) struct Settings {
    pub(crate) max_message_size: usize,
    /// The core's limit on a stream's first message (its handshake), refused at the
    /// length prefix as the core would refuse it, so an unauthenticated remote cannot make
    /// the node buffer more.
    pub(crate) max_handshake_message_size: usize,
    pub(crate) write_window: usize,
    pub(crate) tls: Option<Arc<ClientTls>>,
    /// Where copies of the core's events go, if anyone asked (see `NodeBuilder::events`).
    pub(crate) event_tap: Option<mpsc::Sender<Event>>,
    /// Leave `Ping` calls unanswered (see `NodeBuilder::hang_ping`).
    pub(crate) hang_ping: bool,
    pub(crate) limits: DriverLimits,
    /// Resolves the names this node dials (made at the first).
    pub(crate) resolver: Arc<crate::resolve::Resolver>,
}

/// Shared by every task and handle of one node.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Woken whenever send buffers make progress or connections close: blocked senders
    /// (`send_wait`, `respond`, `ack`) retry.
    pub(crate) room: Notify,
    /// Woken when the core's next deadline moved earlier.
    timer: Notify,
    pub(crate) clock: Clock,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) settings: Settings,
    pub(crate) presumed_dead: Arc<tokio::sync::Mutex<mpsc::Receiver<PkiId>>>,
    pub(crate) identity_switch: Arc<tokio::sync::Mutex<mpsc::Receiver<PkiId>>>,
    /// Receivers currently waiting in `room` (to skip waking nobody).
    pub(crate) room_waiters: AtomicU64,
    /// Inbound connections and their limits.
    pub(crate) admission: Arc<Admission>,
    /// Bytes held for incomplete messages.
    pub(crate) budget: Arc<Budget>,
    /// Envelopes a reader took after the core's close of its stream had counted what it
    /// had taken, counted when the reader's task ends or is aborted ([`LateCount`]): part
    /// of [`DriverStats::unread_at_close`], outside the lock because an aborted task's
    /// future is dropped wherever the runtime cancels it.
    ///
    /// [`LateCount`]: read::LateCount
    unread_late: AtomicU64,
    /// Streams' outgoing bodies: they share what h2 may hold unwritten
    /// (`framed::NODE_IN_FLIGHT`) and written chunks' buffers.
    pub(crate) bodies: Arc<Bodies>,
    /// Whether stream writers are held (see [`Locked`]).
    gates: Arc<Gates>,
    /// Wakes a [`Kick`].
    kick: Waker,
    /// Deliveries the application dropped, on their way back to the core
    /// ([`Inner::recycle_delivery`]; boxed: the allocations are what is kept).
    #[allow(clippy::vec_box)]
    spare_deliveries: Mutex<Vec<Box<ReceivedMessage>>>,
    /// How many `spare_deliveries` holds at most: what the core keeps
    /// ([`Comm::spare_deliveries`]); beyond it they are freed.
    max_spare_deliveries: usize,
    /// Outbound stream tasks, for the stop to wait for.
    pub(crate) winding: Winding,
}

impl Inner {
    pub(crate) fn new(
        comm: HostedCore,
        settings: Settings,
        clock: Clock,
        rt: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let cap = comm.config().presumed_dead_buffer.max(1);
        let max_spare_deliveries = comm.spare_deliveries();
        // Inbound TLS sockets are read ahead (rustls alone reads 4 KiB at a time).
        let read_ahead = if settings.tls.is_some() {
            crate::readahead::READ_AHEAD
        } else {
            0
        };
        let admission = Admission::new(settings.limits.clone(), read_ahead);
        let budget = Budget::new(settings.limits.max_incomplete_bytes);
        let (dead_tx, dead_rx) = mpsc::channel(cap);
        let (switch_tx, switch_rx) = mpsc::channel(cap);
        Arc::new_cyclic(|weak| Inner {
            state: Mutex::new(State {
                comm,
                streams: Map::default(),
                dials: Map::default(),
                ops: Map::default(),
                subs: Map::default(),
                presumed_dead_tx: Some(dead_tx),
                identity_switch_tx: Some(switch_tx),
                conn_log: fabric_gossip_core::LogBudget::default(),
                timer_target: None,
                stats: DriverStats::default(),
                later: Vec::new(),
                links: VecDeque::new(),
                backlogs: VecDeque::new(),
                unreachable: dial::Unreachable::default(),
                writes: Writes::new(settings.write_window),
            }),
            room: Notify::new(),
            timer: Notify::new(),
            clock,
            rt,
            settings,
            presumed_dead: Arc::new(tokio::sync::Mutex::new(dead_rx)),
            identity_switch: Arc::new(tokio::sync::Mutex::new(switch_rx)),
            room_waiters: AtomicU64::new(0),
            admission,
            budget,
            unread_late: AtomicU64::new(0),
            bodies: Arc::default(),
            gates: Arc::default(),
            kick: Waker::from(Arc::new(Kick(weak.clone()))),
            spare_deliveries: Mutex::new(Vec::new()),
            max_spare_deliveries,
            winding: Winding::default(),
        })
    }

    /// The driver's counters, with the connection table's and the budget's.
    pub(crate) fn driver_stats(&self) -> DriverStats {
        let mut s = self.lock().stats.clone();
        let c = &self.admission.counters;
        let (open, pending) = self.admission.open();
        s.inbound_accepted = c.get(Outcome::Accepted);
        s.inbound_open = open as u64;
        s.inbound_pending = pending as u64;
        s.inbound_refused = c.get(Outcome::Refused);
        s.inbound_evicted = c.get(Outcome::Evicted);
        s.inbound_setup_timeouts = c.get(Outcome::SetupTimeout);
        s.accept_errors = c.get(Outcome::AcceptError);
        s.inbound_tls_failures = c.get(Outcome::TlsFailed);
        let (held, peak) = self.budget.held();
        s.incomplete_bytes = held as u64;
        s.incomplete_bytes_peak = peak as u64;
        s.incomplete_budget_waits = self.budget.waits.load(Ordering::Relaxed);
        s.stalled_messages = self.budget.stalls.load(Ordering::Relaxed);
        s.bad_framing = self.budget.bad_framing.load(Ordering::Relaxed);
        s.unread_at_close += self.unread_late.load(Ordering::Relaxed);
        s
    }

    pub(crate) fn lock(&self) -> Locked<'_> {
        // A panic under the lock would be a bug; the state is still the best there is.
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Locked {
            guard: Some(guard),
            inner: self,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Keeps the allocation of a delivery the application dropped (emptied only when
    /// large: `Received`'s `drop`), for the core to decode a later message into
    /// ([`Inner::return_deliveries`]). A lock of its own: the consumer drops messages
    /// without taking the core's.
    pub(crate) fn recycle_delivery(&self, msg: Box<ReceivedMessage>) {
        let mut spare = self
            .spare_deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() < self.max_spare_deliveries {
            spare.push(msg);
        }
    }

    /// Hands the deliveries kept by [`Inner::recycle_delivery`] to the core.
    pub(crate) fn return_deliveries(&self, st: &mut State) {
        let mut spare = self
            .spare_deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for msg in spare.drain(..) {
            st.comm.recycle_delivery(msg);
        }
    }

    fn wake_room(&self) {
        if self.room_waiters.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Runs `f` on the core, then carries out everything it asked for.
    pub(crate) fn with_core<R>(self: &Arc<Self>, f: impl FnOnce(&mut Core, Instant) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st.comm, self.now());
        drain(self, &mut st);
        r
    }

    /// Runs `attempt`; while it answers `WouldBlock`, waits until something may have freed
    /// room in a send buffer and runs it again. The first try registers no waiter (the
    /// common case costs one lock); a retry registers before trying, so no wake-up is lost.
    pub(crate) async fn retry_blocked<R>(
        self: &Arc<Self>,
        mut attempt: impl FnMut(&mut Core, Instant) -> Result<R, fabric_gossip_core::Error>,
    ) -> Result<R, fabric_gossip_core::Error> {
        match self.with_core(&mut attempt) {
            Err(fabric_gossip_core::Error::WouldBlock) => {}
            other => return other,
        }
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _registered = RoomWaiter::new(&self.room_waiters);
            match self.with_core(&mut attempt) {
                Err(fabric_gossip_core::Error::WouldBlock) => notified.await,
                other => return other,
            }
        }
    }
}

impl Inner {
    /// Waits until the core holds nothing left to flush ([`Comm::unsent_to_flush`]: the
    /// hosted layer's messages waiting for a dial are not waited for), at most `limit`;
    /// whether it got there. Written messages wake it as they wake blocked senders; the
    /// outcomes that do not (a connection attempt failing, a stream registering) are seen
    /// at the next check, at most every `FLUSH_CHECK`.
    ///
    /// [`Comm::unsent_to_flush`]: fabric_gossip_core::Comm::unsent_to_flush
    pub(crate) async fn flush(&self, limit: Duration) -> bool {
        const FLUSH_CHECK: Duration = Duration::from_millis(20);
        // A limit past what the clock holds waits without one.
        let deadline = tokio::time::Instant::now().checked_add(limit);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _registered = RoomWaiter::new(&self.room_waiters);
            if self.lock().comm.unsent_to_flush() == 0 {
                return true;
            }
            let now = tokio::time::Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let next = deadline.map_or(now + FLUSH_CHECK, |d| d.min(now + FLUSH_CHECK));
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }
}

/// Counts a sender waiting for room for as long as it lives (also when its future is
/// dropped mid-wait), so progress wakes it.
struct RoomWaiter<'a>(&'a AtomicU64);

impl<'a> RoomWaiter<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        RoomWaiter(count)
    }
}

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HTTP/2 allows windows from its default, 65,535, to 2^31 − 1: a limit outside is
    /// brought inside rather than handed to h2, which asserts on it.
    #[test]
    fn the_flow_control_window_stays_within_http2s_range() {
        let mut l = DriverLimits::default();
        assert_eq!(flow_window(&l), 1 << 20);
        l.flow_control_window = 0;
        assert_eq!(flow_window(&l), 65_535);
        l.flow_control_window = u32::MAX;
        assert_eq!(flow_window(&l), (1 << 31) - 1);
    }
}
