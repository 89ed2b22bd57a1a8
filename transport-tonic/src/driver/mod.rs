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

use crate::framed::{Bodies, FramedOut, ReceiveCodec, Role};
use crate::inbound::{Admission, DriverLimits, Outcome, Slot};
use crate::layer::HostedCore;
use crate::metered::{Budget, Fault, FaultSlot, MeteredBody, Metering, Side, take_fault};
use crate::tls::{ClientTls, Dialer};
use bytes::Bytes;
use fabric_gossip_core::proto::GOSSIP_STREAM_PATH;
use fabric_gossip_core::proto::gossip::Empty;
use fabric_gossip_core::proto::gossip::gossip_client::GossipClient;
use fabric_gossip_core::{
    Action, CertHash, Comm, ConnectionInfo, DialId, Event, HandshakeError, Instant, OpId, Output,
    PkiId, ProbeError, ReceivedMessage, Security, SendResult, StreamEnd, StreamId, SubscriptionId,
    WriteKind,
};
use futures_util::task::AtomicWaker;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tracing::Instrument;

/// The core as the driver holds it: the security provider is boxed so that `Node` is not
/// generic.
pub(crate) type Core = Comm<Box<dyn Security>>;

/// Envelopes read from a stream and handed to the core under one lock.
const READ_BATCH: usize = 64;
/// ... or fewer, once they add up to this many bytes.
const READ_BATCH_BYTES: usize = 1 << 20;
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

/// One item for a stream's writer.
#[derive(Debug)]
pub(crate) enum Out {
    /// An encoded Envelope, and whether it uses the core's write credit.
    Env(Bytes, WriteKind),
    /// Envelopes the core handed out in one drain, in order ([`Writes`]).
    Batch(Vec<(Bytes, WriteKind)>),
    /// End the stream; for an inbound stream, with this error status: UNKNOWN with the
    /// core's message when the core closed it (as a Fabric handler returning an error),
    /// or the code of a fault the driver found in the stream's bytes (as grpc-go's own).
    End(Option<Status>),
}

/// Read-side control of one stream, shared with its reader task.
#[derive(Debug)]
pub(crate) struct StreamCtl {
    paused: AtomicBool,
    /// The RPC ended (its outgoing half is gone): read to the end regardless of pauses, so
    /// the end and the remote's status reach the core.
    ended: AtomicBool,
    /// The core closed this outbound stream while stopping: its reader reads the
    /// response to its end, discarding it, so the stop knows the remote took everything
    /// written before (see [`Winding`]).
    linger: AtomicBool,
    resume: Notify,
    /// Envelopes the reader took from HTTP/2: the messages its body completed (in its
    /// batch, parked at a pause, or still in the body: the rest of a DATA frame of up to
    /// 256 Envelopes, or those held back for budget). Stored by the reader at every poll.
    taken: AtomicU64,
    /// Of them, those handed to the core (by the reader, or by the drain of a
    /// `ResumeRead`); changed only under the lock. A close loses `taken - fed`, counted
    /// then in [`DriverStats::unread_at_close`].
    fed: AtomicU64,
    /// `taken` as the close found it (`u64::MAX` while open): what the reader took after
    /// (while filling on another worker as the close came) it counts itself.
    counted_to: AtomicU64,
}

impl Default for StreamCtl {
    fn default() -> Self {
        StreamCtl {
            paused: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            linger: AtomicBool::new(false),
            resume: Notify::new(),
            taken: AtomicU64::new(0),
            fed: AtomicU64::new(0),
            counted_to: AtomicU64::new(u64::MAX),
        }
    }
}

impl StreamCtl {
    /// One more envelope handed to the core (under the lock, so a load and a store).
    fn fed_one(&self) {
        let fed = self.fed.load(Ordering::Relaxed);
        self.fed.store(fed + 1, Ordering::Relaxed);
    }
}

/// The node's outbound stream tasks, counted so a stop can wait for them.
///
/// Messages handed to HTTP/2 ([`crate::Node::flush`]) are still in h2's buffers, which its
/// connection task writes. A stop used to abort every stream's task, and a process that
/// exited right after its stop took that task along: a script's last sends, flushed, never
/// reached their peer (seen under load in CI). Stopping now lets each outbound stream end
/// as a gRPC client ends a call: its request ends after what was written, and its task
/// reads the response to its end, which the remote sends once it has read that request to
/// its end. [`crate::Node::stop`] waits for these tasks within its `stop_timeout`, then
/// aborts what is left.
#[derive(Default)]
pub(crate) struct Winding {
    /// Outbound stream tasks alive (spawned and not yet dropped).
    live: AtomicU64,
    /// Woken as each ends.
    ended: Notify,
    /// The tasks of streams closed while stopping, to abort at the stop's deadline.
    lingering: Mutex<Vec<AbortHandle>>,
}

impl Winding {
    /// Waits until no outbound stream task is alive, at most until `deadline`; then
    /// aborts those still reading.
    pub(crate) async fn wait(&self, deadline: tokio::time::Instant) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0
                || tokio::time::timeout_at(deadline, ended).await.is_err()
            {
                break;
            }
        }
        let tasks = std::mem::take(
            &mut *self
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            t.abort();
        }
    }
}

/// One outbound stream task alive, for as long as its future lives (also when aborted
/// before its first poll).
struct WindingGuard(Arc<Inner>);

impl WindingGuard {
    /// Counts a task about to be spawned: before the spawn, so a stop never misses it.
    fn new(inner: &Arc<Inner>) -> Self {
        inner.winding.live.fetch_add(1, Ordering::AcqRel);
        WindingGuard(inner.clone())
    }
}

impl Drop for WindingGuard {
    fn drop(&mut self) {
        self.0.winding.live.fetch_sub(1, Ordering::AcqRel);
        self.0.winding.ended.notify_waiters();
    }
}

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
}

/// The `Write` actions of one stream that follow each other in one drain of the core, put
/// on the stream's queue as one item when something else comes (another stream's write,
/// any other action) and when the drain ends.
///
/// Once its write window is full, a busy stream's writes come in runs: each time its
/// writer reports envelopes written (every half window), the core refills the window with
/// as many. One queue item per envelope cost a channel push, its wake-up check and a
/// lookup of the stream each, and a pop on the writer's side: about 3 % of the CPU of a
/// lossless one-way run. A run of one stays a single [`Out::Env`], so a stream writing
/// one envelope at a time allocates nothing for it.
struct Writes {
    stream: Option<StreamId>,
    items: SmallVec<[(Bytes, WriteKind); 1]>,
    /// Room reserved when a run outgrows one envelope: the write window, the most a run
    /// holds but for a handshake, up to [`MAX_RUN_RESERVE`].
    run_reserve: usize,
}

/// The most room a run reserves at once (10 KiB); a longer one grows as it goes.
const MAX_RUN_RESERVE: usize = 256;

impl Writes {
    fn new(write_window: usize) -> Self {
        Writes {
            stream: None,
            items: SmallVec::new(),
            run_reserve: write_window.min(MAX_RUN_RESERVE),
        }
    }

    /// Adds a write of `stream`; returns the run it ends, if it was another stream's.
    fn push(
        &mut self,
        stream: StreamId,
        envelope: Bytes,
        kind: WriteKind,
    ) -> Option<(StreamId, Out, usize)> {
        let ended = if self.stream == Some(stream) {
            None
        } else {
            let ended = self.take();
            self.stream = Some(stream);
            ended
        };
        if self.items.len() == 1 {
            self.items.reserve(self.run_reserve);
        }
        self.items.push((envelope, kind));
        ended
    }

    /// The run gathered, as one queue item, with its stream and how many envelopes it has.
    fn take(&mut self) -> Option<(StreamId, Out, usize)> {
        let stream = self.stream.take()?;
        let items = std::mem::take(&mut self.items);
        let count = items.len();
        let item = if items.spilled() {
            Out::Batch(items.into_vec())
        } else {
            let (envelope, kind) = items.into_iter().next()?;
            Out::Env(envelope, kind)
        };
        Some((stream, item, count))
    }
}

/// A wake-up that waits for the lock's release: the task it wakes usually takes the lock
/// first thing, and on a multi-thread runtime another worker may start it at once, only to
/// wait for the lock (a futex sleep and wake-up) while the waker still holds it.
enum Later {
    /// A subscription's consumer: deliveries are ready.
    Wake(Waker),
}

impl Later {
    fn fire(self) {
        match self {
            Later::Wake(w) => w.wake(),
        }
    }
}

/// The core's lock, held. Releasing it gives the wake-ups decided under it (see
/// [`Later`]), and hands the results of one SendWithAck to its caller.
///
/// # One caller at a time
///
/// A batch of acks read at once completes many SendWithAck calls. Woken together, their
/// callers would all be ready at the same moment, and a multi-thread runtime wakes a parked
/// worker whenever a worker has more than one task ready: that worker steals half of the
/// callers, they meet the others at the core's lock, and the stream's writer, woken by the
/// first of them, writes what they queued so far while the rest still run. On an idle
/// machine each of those wake-ups is a futex call, a context switch and an idle CPU woken,
/// which cost more than the acks themselves (`docs/performance-log.md`, "One caller at a
/// time"). So the results wait in a chain ([`State::links`]) and each release of the lock
/// hands out one: the caller it wakes sends its next message under the lock, and that
/// release wakes the next caller. Only one task is ready at a time, so no other worker is
/// woken. Meanwhile the node's stream writers are held ([`Gates`]): a Write wakes its
/// writer only when the chain has run out, so what all the callers queued leaves in one
/// chunk. A caller that does not take the lock again would stall the chain, so each
/// handed-out link also leaves a kick for when the worker runs out of tasks ([`Kick`]),
/// which hands out whatever is left.
pub(crate) struct Locked<'a> {
    /// Taken only by `drop`.
    guard: Option<MutexGuard<'a, State>>,
    inner: &'a Inner,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.guard.as_deref().expect("the guard is held until drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard
            .as_deref_mut()
            .expect("the guard is held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut st) = self.guard.take() {
            let later = std::mem::take(&mut st.later);
            let link = st.links.pop_front();
            drop(st);
            for l in later {
                l.fire();
            }
            let gates = &self.inner.gates;
            match link {
                Some((tx, results)) => {
                    gates.hold();
                    let _ = tx.send(results);
                    // Deferred to when this worker has nothing else to run; outside a
                    // runtime, at once.
                    let mut kick = std::pin::pin!(tokio::task::yield_now());
                    let _ = kick
                        .as_mut()
                        .poll(&mut Context::from_waker(&self.inner.kick));
                }
                None => gates.open(),
            }
        }
    }
}

/// Holds a node's stream writers while SendWithAck callers are woken one by one (see
/// [`Locked`]).
#[derive(Default)]
pub(crate) struct Gates {
    /// Writers are held: a chain of callers is running.
    closed: AtomicBool,
    /// The writers woken meanwhile.
    held: Mutex<Vec<Waker>>,
}

impl Gates {
    fn held(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on writers are held.
    fn hold(&self) {
        if !self.closed.load(Ordering::Acquire) {
            let _held = self.held();
            self.closed.store(true, Ordering::Release);
        }
    }

    /// Wakes the writers held, and no longer holds any.
    fn open(&self) {
        if self.closed.load(Ordering::Acquire) {
            let woken = {
                let mut held = self.held();
                self.closed.store(false, Ordering::Release);
                std::mem::take(&mut *held)
            };
            for w in woken {
                w.wake();
            }
        }
    }
}

/// The waker a stream's queue wakes: it wakes the writer's task, or holds the wake-up while
/// the node's [`Gates`] are closed.
struct Gate {
    gates: Arc<Gates>,
    task: AtomicWaker,
}

impl std::task::Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.gates.closed.load(Ordering::Acquire) {
            // Checked again under the list's lock, which `open` takes to clear it.
            let mut held = self.gates.held();
            if self.gates.closed.load(Ordering::Acquire) {
                if let Some(w) = self.task.take() {
                    held.push(w);
                }
                return;
            }
        }
        self.task.wake();
    }
}

/// Hands out every SendWithAck result still chained, and opens the gates, once the worker
/// that handed out the last link has nothing else to run: the chain never waits for a
/// caller that does not take the lock again.
struct Kick(std::sync::Weak<Inner>);

impl std::task::Wake for Kick {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        if !inner.gates.closed.load(Ordering::Acquire) {
            return;
        }
        let links = {
            let mut st = inner.lock();
            std::mem::take(&mut st.links)
            // The release finds no link: it opens the gates and defers nothing.
        };
        for (tx, results) in links {
            let _ = tx.send(results);
        }
    }
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

/// Core time from a monotonic clock: the wall-clock time at start plus the monotonic time
/// elapsed since. Certificate expiry needs wall-clock time; timers need monotonic time.
///
/// The monotonic clock is the coarse one (`CLOCK_MONOTONIC_COARSE` on Linux, through
/// `coarsetime`): every call into the core reads it, a send included, and the precise
/// clock's read (`rdtsc` and the paravirtual clock's arithmetic) measured 2 % of the CPU
/// of a lossless one-way run in a VM, the coarse one a copy of a value the kernel keeps.
/// It trails the precise clock by at most one kernel tick (1–4 ms): the core's deadlines
/// are hundreds of milliseconds and more, and one that fires a tick late, or a timer that
/// wakes a tick early and finds nothing due yet, only sleeps once more.
pub(crate) struct Clock {
    anchor: Instant,
    base: coarsetime::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            anchor: Instant::from_system_time(std::time::SystemTime::now()),
            base: coarsetime::Instant::now_without_cache_update(),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        // Without the cache update: `now()` also stores into a global that every thread
        // writing it would bounce between the cores.
        let elapsed = coarsetime::Instant::now_without_cache_update().duration_since(self.base);
        self.anchor + Duration::from(elapsed)
    }

    /// The tokio deadline for core time `t`, at most a day ahead: far deadlines (identity
    /// expiry) are re-armed after waking, which the core tolerates, and no addition can
    /// overflow.
    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        const HORIZON: Duration = Duration::from_secs(24 * 3600);
        let now = tokio::time::Instant::now();
        let ahead = t.saturating_duration_since(self.now()).min(HORIZON);
        now + ahead
    }
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
                timer_target: None,
                stats: DriverStats::default(),
                later: Vec::new(),
                links: VecDeque::new(),
                backlogs: VecDeque::new(),
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

/// Carries out the core's actions, dispatches its events, and re-arms the timer. Called
/// after every core call, under the lock.
pub(crate) fn drain(inner: &Arc<Inner>, st: &mut State) {
    // The core's one output: actions, then events, and the time-out once nothing is left.
    let next = loop {
        match st.comm.poll_output() {
            Output::Action(action) => execute(inner, st, action),
            Output::Event(ev) => handle_event(inner, st, ev),
            // A write that fails gives the core more to say, and so does a backlog.
            Output::Timeout(_) if flush_writes(inner, st) || feed_backlog(inner, st) => {}
            Output::Timeout(next) => break next,
        }
    };
    let earlier = match (next, st.timer_target) {
        (Some(n), Some(t)) => n < t,
        (Some(_), None) => true,
        _ => false,
    };
    if earlier {
        st.timer_target = next;
        inner.timer.notify_one();
    }
}

/// Only the actions: between two envelopes of a batch, so a `PauseRead` takes effect before
/// the next one is handed in; the batch ends with a full [`drain`].
fn drain_actions(inner: &Arc<Inner>, st: &mut State) {
    loop {
        while let Some(action) = st.comm.poll_action() {
            execute(inner, st, action);
        }
        // A write that fails gives the core more to say, and so does a backlog.
        if !flush_writes(inner, st) && !feed_backlog(inner, st) {
            return;
        }
    }
}

/// Hands the core one envelope of a resumed stream's parked backlog; whether it did (the
/// caller then takes the core's actions, so that a new `PauseRead` stops the rest, which
/// waits for the next `ResumeRead`). One at a time, in order, and always before the
/// stream's reader hands in anything newer: it takes what is left back first.
fn feed_backlog(inner: &Arc<Inner>, st: &mut State) -> bool {
    while let Some(&stream) = st.backlogs.front() {
        let next = st
            .streams
            .get_mut(&stream)
            .filter(|e| !e.ctl.paused.load(Ordering::Acquire))
            .and_then(|e| e.held.pop_front());
        let Some(envelope) = next else {
            st.backlogs.pop_front();
            continue;
        };
        // Refused only if the core closed the stream, whose close counted the rest.
        if st
            .comm
            .handle_envelope(inner.now(), stream, envelope)
            .is_ok()
            && let Some(e) = st.streams.get(&stream)
        {
            e.ctl.fed_one();
        }
        return true;
    }
    false
}

/// Puts the gathered writes ([`Writes`]) on their stream's queue. Returns whether any
/// failed, which the core was told, so that its answer is drained too.
fn flush_writes(inner: &Arc<Inner>, st: &mut State) -> bool {
    match st.writes.take() {
        Some((stream, item, count)) => queue_write(inner, st, stream, item, count),
        None => false,
    }
}

/// Puts `item` (`count` envelopes) on `stream`'s queue; a full queue fails the stream's
/// writes, which the core is told. Returns whether that happened.
fn queue_write(
    inner: &Arc<Inner>,
    st: &mut State,
    stream: StreamId,
    item: Out,
    count: usize,
) -> bool {
    let failed = match st.streams.get(&stream) {
        Some(e) => match e.tx.try_send(item) {
            Ok(()) => false,
            // The RPC already ended (the remote closed it, perhaps refusing us with a
            // status): its reader is about to report how, with the remote's status and
            // message, which a "write failed" here would hide.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                st.stats.writes_after_end += count as u64;
                e.ctl.ended.store(true, Ordering::Release);
                e.ctl.resume.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
        },
        None => false,
    };
    if failed {
        st.stats.write_failures += 1;
        tracing::debug!(%stream, "write found the stream's writer gone");
        let now = inner.now();
        let _ = st
            .comm
            .handle_write_failed(now, stream, "stream is gone".into());
    }
    failed
}

fn execute(inner: &Arc<Inner>, st: &mut State, action: Action) {
    if !matches!(action, Action::Write { .. }) {
        // What comes after a stream's writes (its end above all) keeps its place.
        flush_writes(inner, st);
    }
    match action {
        Action::Dial { dial, endpoint } => {
            let task = inner.rt.spawn(dial_task(inner.clone(), dial, endpoint));
            st.dials.insert(
                dial,
                DialEntry {
                    channel: None,
                    task: Some(task.abort_handle()),
                },
            );
        }
        Action::Ping { dial } => {
            let channel = st.dials.get(&dial).and_then(|d| d.channel.clone());
            match channel {
                Some(channel) => {
                    let task = inner.rt.spawn(ping_task(inner.clone(), dial, channel));
                    if let Some(d) = st.dials.get_mut(&dial) {
                        d.task = Some(task.abort_handle());
                    }
                }
                None => {
                    let now = inner.now();
                    let _ = st
                        .comm
                        .handle_ping_result(now, dial, Err("no channel".into()));
                }
            }
        }
        Action::OpenStream { dial, stream } => {
            let (tx, rx) = mpsc::channel(inner.settings.write_window + 2);
            let ctl = Arc::new(StreamCtl::default());
            let span = tracing::info_span!(
                "gossip_stream", %stream, inbound = false, pki_id = tracing::field::Empty,
                endpoint = tracing::field::Empty
            );
            let channel = st.dials.get(&dial).and_then(|d| d.channel.clone());
            let task = channel.map(|channel| {
                let alive = WindingGuard::new(inner);
                inner
                    .rt
                    .spawn(
                        outbound_task(inner.clone(), channel, stream, rx, ctl.clone(), alive)
                            .instrument(span.clone()),
                    )
                    .abort_handle()
            });
            let missing = task.is_none();
            st.streams.insert(
                stream,
                StreamEntry {
                    tx,
                    ctl,
                    task,
                    conn: None,
                    _auth: None,
                    span,
                    outbound: true,
                    held: VecDeque::new(),
                },
            );
            if missing {
                let now = inner.now();
                let _ = st.comm.handle_stream_closed(
                    now,
                    stream,
                    StreamEnd::Error("no channel".into()),
                );
            }
        }
        Action::Write {
            stream,
            envelope,
            kind,
        } => {
            if let Some((stream, item, count)) = st.writes.push(stream, envelope, kind) {
                // Should the write fail, the core's answer comes out of the same drain.
                queue_write(inner, st, stream, item, count);
            }
        }
        Action::PauseRead { stream } => {
            if let Some(e) = st.streams.get(&stream) {
                e.ctl.paused.store(true, Ordering::Release);
            }
        }
        Action::ResumeRead { stream } => {
            if let Some(e) = st.streams.get(&stream) {
                e.ctl.paused.store(false, Ordering::Release);
                e.ctl.resume.notify_one();
                if !e.held.is_empty() {
                    st.backlogs.push_back(stream);
                }
            }
        }
        Action::CloseStream { stream, error } => {
            if let Some(e) = st.streams.remove(&stream) {
                // What the reader took and the core never got: its batch, what it parked,
                // what its body still holds. The reader hands envelopes in only under the
                // lock, so nothing is between two of them; one filling on another worker
                // right now may take more, and counts that itself (`counted_to`).
                let taken = e.ctl.taken.load(Ordering::Relaxed);
                e.ctl.counted_to.store(taken, Ordering::Relaxed);
                let fed = e.ctl.fed.load(Ordering::Relaxed);
                st.stats.unread_at_close += taken.saturating_sub(fed);
                if let Some(why) = &error {
                    tracing::debug!(parent: &e.span, error = %why, "stream closed with an error status");
                }
                // If the writer is gone or full the sender's drop still ends the stream.
                let _ = e.tx.try_send(Out::End(error.map(Status::unknown)));
                if let Some(t) = e.task {
                    if e.outbound && st.comm.is_stopped() {
                        // Read to its end, so the stop knows the remote took it all.
                        e.ctl.linger.store(true, Ordering::Release);
                        e.ctl.resume.notify_one();
                        inner
                            .winding
                            .lingering
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(t);
                    } else {
                        t.abort();
                    }
                }
                if let Some(auth) = &e._auth {
                    auth.reap_unless_finished(inner, e.ctl.clone());
                }
            }
            inner.wake_room();
        }
        Action::CloseDial { dial } => {
            if let Some(d) = st.dials.remove(&dial)
                && let Some(t) = d.task
            {
                t.abort();
            }
            // A connection attempt that ends without a stream (dial or Ping failed) drops
            // its send queue: senders blocked on it retry (a new attempt takes them).
            inner.wake_room();
        }
    }
}

fn handle_event(inner: &Arc<Inner>, st: &mut State, ev: Event) {
    if let Some(tap) = &inner.settings.event_tap
        && !matches!(ev, Event::DeliveryReady(_))
        && tap.try_send(ev.clone()).is_err()
    {
        st.stats.events_dropped += 1;
    }
    match ev {
        Event::PresumedDead(p) => {
            // A failed connection attempt dropped its queue (see `CloseDial`).
            inner.wake_room();
            tracing::info!(pki_id = %p.pki_id, endpoint = %p.endpoint, "peer presumed dead");
            if let Some(tx) = &st.presumed_dead_tx
                && tx.try_send(p.pki_id).is_err()
            {
                st.stats.presumed_dead_dropped += 1;
            }
        }
        Event::IdentitySwitch(p) => {
            if let Some(tx) = &st.identity_switch_tx
                && tx.try_send(p).is_err()
            {
                st.stats.identity_switch_dropped += 1;
            }
        }
        Event::DeliveryReady(sub) => {
            if let Some(w) = st.subs.get_mut(&sub).and_then(Option::take) {
                st.later.push(Later::Wake(w));
            }
        }
        Event::ProbeDone { op, result } => {
            if let Some(Waiter::Probe(tx)) = st.ops.remove(&op) {
                let _ = tx.send(result);
            }
        }
        Event::HandshakeDone { op, result } => {
            if let Some(Waiter::Handshake(tx)) = st.ops.remove(&op) {
                let _ = tx.send(result);
            }
        }
        Event::SendWithAckDone { op, results } => {
            if let Some(Waiter::Ack(tx)) = st.ops.remove(&op) {
                st.links.push_back((tx, results));
            }
        }
        Event::Stopped => {
            // Subscriptions are gone: wake their consumers so their streams end, and end
            // the notification streams once drained.
            for w in st.subs.values_mut().filter_map(Option::take) {
                w.wake();
            }
            st.presumed_dead_tx = None;
            st.identity_switch_tx = None;
            st.ops.clear();
            inner.room.notify_waiters();
            inner.timer.notify_one();
        }
        Event::Connected {
            conn,
            info,
            inbound,
        } => {
            if let Some(e) = st.streams.get_mut(&conn) {
                e.span.record("pki_id", tracing::field::display(&info.id));
                e.span.record("endpoint", info.endpoint.as_str());
                tracing::info!(
                    parent: &e.span, endpoint = %info.endpoint, inbound, "connected"
                );
                if let Some(slot) = e.conn.take() {
                    e._auth = Some(AuthGuard::new(inner.admission.clone(), slot));
                }
            }
        }
        Event::Disconnected {
            conn,
            pki_id,
            reason,
        } => {
            tracing::info!(stream = %conn, pki_id = %pki_id, reason = %reason, cause = reason.label(), "disconnected");
        }
        Event::HandshakeFailed {
            stream,
            remote,
            inbound,
            error,
        } => {
            // The core logs it at `info` (`fabric_gossip_core::handshake`, at most 20 a
            // second): a second line each would only double what a flood writes.
            tracing::debug!(%stream, remote = %remote, inbound, error = %error, "handshake failed");
        }
        Event::Probed { info, .. } => {
            tracing::info!(pki_id = %info.id, endpoint = %info.endpoint, "probed us");
        }
        Event::IdentitiesRevalidated { refused } => {
            tracing::info!(refused, "identities revalidated");
        }
        Event::IdentityPurged { pki_id, reason } => {
            // The core logs a purge for disuse at `info`; an expiry shows as the
            // connection's `disconnected` line, if it had one.
            tracing::debug!(pki_id = %pki_id, cause = reason.label(), "identity purged");
        }
        // A kind this driver predates: the tap above has passed it to the application.
        other => tracing::debug!(event = ?other, "event"),
    }
}

/// Human-readable text of an error and its sources (tonic's transport errors say little
/// at the top level).
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    let mut next = Some(e);
    // `next`'s text, when the layer above it formatted it already.
    let mut next_text = None;
    while let Some(err) = next {
        let source = err.source();
        // Each layer cut as a remote's status is: a layer may print what the remote sent
        // (h2 prints a GOAWAY's debug data, up to a frame of 64 KiB, escaped to four
        // times that), and a status's source is such a chain. A status within the chain
        // gives its message only: its `Display` prints its code and its whole source
        // chain with `Debug` (`code: 'Unknown error', message: "…", source:
        // hyper::Error(Body, Error { kind: Io(…) })`), which the layers below then
        // repeat; seen when a Fabric peer closed a stream it had replaced.
        if let Some(status) = err.downcast_ref::<Status>() {
            push_remote(&mut s, status.message());
            (next, next_text) = (source, None);
            continue;
        }
        let text = next_text.take().unwrap_or_else(|| err.to_string());
        let source_text = source.map(ToString::to_string);
        // A wrapper that shows its source's text as its own adds nothing, and hides what
        // it wraps from the look above: axum's `Error` around a status, seen when a Fabric
        // peer closed a TLS stream it had replaced (its status's whole `Display` printed).
        if source_text.as_deref() != Some(text.as_str()) {
            push_remote(&mut s, &text);
        }
        (next, next_text) = (source, source_text);
    }
    s
}

/// Appends the `": "`-separated segments of `text` to `s`, leaving out those `s` already
/// has: each layer of tonic, hyper and h2 repeats part of the one below it, which made
/// errors read "transport error: transport error: connection error: …" or "http2 error:
/// transport error: http2 error: …".
fn push_segments(s: &mut String, text: &str) {
    for seg in text.split(": ").filter(|t| !t.is_empty()) {
        if !s.split(": ").any(|have| have == seg) {
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(seg);
        }
    }
}

/// [`push_segments`] of text a remote may have chosen: cut to [`REMOTE_STATUS_CHARS`] and
/// escaped first.
fn push_remote(s: &mut String, text: &str) {
    push_segments(
        s,
        &fabric_gossip_core::shown_up_to(text, REMOTE_STATUS_CHARS),
    );
}

async fn dial_task(inner: Arc<Inner>, dial: DialId, endpoint: String) {
    let result = connect(&inner.settings, &endpoint).await;
    let mut st = inner.lock();
    let now = inner.now();
    let result = match result {
        Ok((channel, hash)) => {
            st.stats.dials_ok += 1;
            if let Some(d) = st.dials.get_mut(&dial) {
                d.channel = Some(channel);
                d.task = None;
            }
            Ok(hash)
        }
        Err(e) => {
            st.stats.dials_failed += 1;
            tracing::info!(%endpoint, error = %e, "dial failed");
            Err(e)
        }
    };
    let _ = st.comm.handle_dial_result(now, dial, result);
    drain(&inner, &mut st);
}

/// Opens a client channel to `endpoint` (`host:port`), returning the hash of the server's
/// leaf certificate when TLS is on.
///
/// No time-out here: the core times the dial (`dial_timeout`) and says `CloseDial` when it
/// gives up, which aborts this task. A second timer here would race the core's, and a slow
/// dial would end as `DialError::Timeout` or as a driver failure depending on which won.
async fn connect(
    settings: &Settings,
    endpoint: &str,
) -> Result<(Channel, Option<CertHash>), String> {
    let ep = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| format!("bad endpoint {endpoint:?}: {}", error_text(&e)))?
        .initial_stream_window_size(flow_window(&settings.limits))
        .initial_connection_window_size(flow_window(&settings.limits))
        .max_frame_size(MAX_FRAME)
        .tcp_nodelay(true);
    let limits = &settings.limits;
    let ep = if limits.keepalive_interval.is_zero() {
        ep
    } else {
        ep.http2_keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout)
            .keep_alive_while_idle(true)
    };
    let dialer = Dialer::new(settings.tls.clone(), settings.resolver.clone());
    let connecting = ep.connect_with_connector(dialer.clone());
    let channel = connecting.await.map_err(|e| error_text(&e))?;
    let hash = dialer.captured();
    if settings.tls.is_some() && hash.is_none() {
        return Err("server presented no TLS certificate".into());
    }
    Ok((channel, hash))
}

/// Calls `Ping` on a new channel. Untimed for the same reason as [`connect`]: the core
/// times the Ping (`conn_timeout`) and aborts this task with `CloseDial`.
async fn ping_task(inner: Arc<Inner>, dial: DialId, channel: Channel) {
    let mut client = GossipClient::new(channel);
    let result = match client.ping(Request::new(Empty {})).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status_text(&status)),
    };
    if let Err(e) = &result {
        tracing::info!(error = %e, "ping failed");
    }
    let mut st = inner.lock();
    let now = inner.now();
    if let Some(d) = st.dials.get_mut(&dial) {
        d.task = None;
    }
    let _ = st.comm.handle_ping_result(now, dial, result);
    drain(&inner, &mut st);
}

/// How many characters of a status the remote chose are kept: a refusing Fabric peer's
/// reason whole, and at most what an inbound stream's refusal sends back. A server the node
/// dials may send up to hyper's 16 KiB of headers as `grpc-message`; it had been echoed
/// whole, control characters and all, into two events and three log lines per attempt
/// (72 KB of output for each refused dial; an attack, 2026-12-05).
const REMOTE_STATUS_CHARS: usize = 1024;

pub(crate) fn status_text(status: &Status) -> String {
    let mut s = format!("{:?}", status.code());
    push_remote(&mut s, status.message());
    if let Some(src) = std::error::Error::source(status) {
        push_segments(&mut s, &error_text(src));
    }
    s
}

async fn outbound_task(
    inner: Arc<Inner>,
    channel: Channel,
    stream: StreamId,
    rx: mpsc::Receiver<Out>,
    ctl: Arc<StreamCtl>,
    _alive: WindingGuard,
) {
    let max = inner.settings.max_message_size;
    let body = FramedOut::new(
        OutStream::new(inner.clone(), stream, rx, ctl.clone()),
        Role::Client,
        max,
        inner.bodies.clone(),
    );
    let fault = FaultSlot::default();
    let received = ResponseSlot::default();
    let metered = MeteredChannel {
        channel,
        metering: Metering {
            budget: inner.budget.clone(),
            max_message: max,
            max_first_message: inner.settings.max_handshake_message_size,
            stall: inner.settings.limits.message_stall_timeout,
        },
        fault: fault.clone(),
        body: Some(tonic::body::Body::new(body)),
        received: received.clone(),
    };
    let mut grpc = tonic::client::Grpc::new(metered)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let opened = match grpc.ready().await {
        Ok(()) => {
            // tonic builds the request (path, headers) and reads the response; the channel
            // swaps the empty body given here for the stream's own.
            grpc.streaming(
                Request::new(tokio_stream::empty::<Bytes>()),
                PathAndQuery::from_static(GOSSIP_STREAM_PATH),
                ReceiveCodec,
            )
            .await
        }
        Err(e) => Err(Status::unavailable(error_text(&e))),
    };
    // tonic read the response's headers (a trailers-only error status is `Err` here); its
    // body is read by the metered body the channel kept, not by tonic's decoder.
    let opened = opened.and_then(|_| {
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| Status::internal("the response body was not kept"))
    });
    match opened {
        Ok(body) => read_loop(inner, stream, body, ctl, Some(fault)).await,
        Err(status) => {
            tracing::info!(status = %status_text(&status), "opening the stream failed");
            let mut st = inner.lock();
            let now = inner.now();
            let _ =
                st.comm
                    .handle_stream_closed(now, stream, StreamEnd::Error(status_text(&status)));
            drain(&inner, &mut st);
        }
    }
}

/// Where a [`MeteredChannel`] leaves the body of the response it received.
type ResponseSlot = Arc<Mutex<Option<MeteredBody>>>;

/// A client channel whose response bodies are metered like inbound request bodies: a peer
/// this node dialled can half-send messages too. It carries one stream's call: its first
/// request goes out with `body`, the stream's [`FramedOut`], in place of tonic's. tonic
/// builds the request and checks the response's headers as for any call, but gets an empty
/// body: the real one, read as a [`MeteredBody`] (which takes the messages out without
/// copying them into a decoder's buffer), is left in `received` for the stream's reader.
struct MeteredChannel {
    channel: Channel,
    metering: Metering,
    fault: FaultSlot,
    body: Option<tonic::body::Body>,
    received: ResponseSlot,
}

type ResponseFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<tonic::body::Body>, tonic::transport::Error>,
            > + Send,
    >,
>;

impl tower_service::Service<http::Request<tonic::body::Body>> for MeteredChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let req = match self.body.take() {
            Some(body) => req.map(|_| body),
            None => req,
        };
        let call = self.channel.call(req);
        let metering = self.metering.clone();
        let fault = self.fault.clone();
        let received = self.received.clone();
        Box::pin(async move {
            let resp = call.await?;
            let side = Side::of_response(&resp);
            let (mut parts, body) = resp.into_parts();
            // tonic panics on binary status details that are not base64 (see
            // `metered::status_of`); nothing reads them.
            parts.headers.remove(Status::GRPC_STATUS_DETAILS);
            *received.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(MeteredBody::new(body, side, metering, fault));
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::empty(),
            ))
        })
    }
}

/// Registers an inbound stream with the core and starts its reader. Returns the stream's
/// outgoing half, or the status to refuse the RPC with.
pub(crate) fn accept_inbound(
    inner: &Arc<Inner>,
    remote_addr: &str,
    remote_cert_hash: Option<CertHash>,
    body: MeteredBody,
    conn: Option<Arc<Slot>>,
    fault: FaultSlot,
) -> Result<FramedOut, Status> {
    let mut st = inner.lock();
    let now = inner.now();
    let stream = st
        .comm
        .accept_stream(now, remote_addr, remote_cert_hash)
        .map_err(|_| Status::unavailable("Shutting down"))?;
    let (tx, rx) = mpsc::channel(inner.settings.write_window + 2);
    let ctl = Arc::new(StreamCtl::default());
    let out_ctl = ctl.clone();
    let span = tracing::info_span!(
        "gossip_stream", %stream, inbound = true, remote = %remote_addr,
        pki_id = tracing::field::Empty, endpoint = tracing::field::Empty
    );
    let task = inner.rt.spawn(
        read_loop(inner.clone(), stream, body, ctl.clone(), Some(fault)).instrument(span.clone()),
    );
    st.streams.insert(
        stream,
        StreamEntry {
            tx,
            ctl,
            task: Some(task.abort_handle()),
            conn,
            _auth: None,
            span,
            outbound: false,
            held: VecDeque::new(),
        },
    );
    drain(inner, &mut st);
    Ok(FramedOut::new(
        OutStream::new(inner.clone(), stream, rx, out_ctl),
        Role::Server,
        inner.settings.max_message_size,
        inner.bodies.clone(),
    ))
}

/// Collects Envelopes that are ready without waiting, up to a batch. `Ready(None)`: a batch
/// is there; `Ready(Some(end))`: the stream ended (after the batch), `Ok` at its end, `Err`
/// with the status that ended it (the remote's, or a fault of its bytes).
fn fill(
    s: &mut MeteredBody,
    batch: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<(), Status>>> {
    let mut bytes = 0;
    while batch.len() < READ_BATCH && bytes < READ_BATCH_BYTES {
        match s.poll_message(cx) {
            Poll::Ready(Some(Ok(b))) => {
                bytes += b.len();
                batch.push_back(b);
            }
            Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
            Poll::Pending => break,
        }
    }
    if batch.is_empty() {
        Poll::Pending
    } else {
        Poll::Ready(None)
    }
}

/// Reads a stream the core closed while stopping to its end, discarding what comes (see
/// [`Winding`]): the remote's messages that were still coming, counted as unread at close
/// by the reader's [`LateCount`] through `taken`.
async fn discard_to_end(body: &mut MeteredBody, ctl: &StreamCtl) {
    let mut batch = VecDeque::new();
    loop {
        batch.clear();
        let end = poll_fn(|cx| {
            let r = fill(body, &mut batch, cx);
            ctl.taken.store(body.completed(), Ordering::Relaxed);
            r
        })
        .await;
        if end.is_some() {
            return;
        }
    }
}

/// Reads a stream into the core, honouring PauseRead: while paused it does not poll the
/// stream, so HTTP/2 flow control pushes back to the sender. Envelopes read before a pause
/// took effect are held here (at most one batch) and handed in on resume, so none is lost.
async fn read_loop(
    inner: Arc<Inner>,
    stream: StreamId,
    mut body: MeteredBody,
    ctl: Arc<StreamCtl>,
    fault: Option<FaultSlot>,
) {
    let _late = LateCount {
        to: &inner.unread_late,
        ctl: &ctl,
    };
    let closed_first = feed_core(&inner, stream, &mut body, &ctl, fault).await;
    if closed_first && ctl.linger.load(Ordering::Acquire) {
        discard_to_end(&mut body, &ctl).await;
    }
}

/// Counts, when a reader's task ends or is aborted, the envelopes it took after the core's
/// close counted what it had taken: a close that lands while the reader, on another
/// worker, is inside a poll that completes messages and then waits (messages held back
/// for budget) reads `taken` before that poll stores it, and the abort that follows ends
/// the task without another look. The reader stores `taken` at every poll, so at the end
/// it is exact; a reader that counted the rest itself moved `counted_to` up to it.
struct LateCount<'a> {
    /// [`Inner::unread_late`].
    to: &'a AtomicU64,
    ctl: &'a StreamCtl,
}

impl Drop for LateCount<'_> {
    fn drop(&mut self) {
        // Nothing while the stream is open: `counted_to` is `u64::MAX` until a close.
        let late = match self.ctl.counted_to.load(Ordering::Relaxed) {
            u64::MAX => 0,
            counted => self
                .ctl
                .taken
                .load(Ordering::Relaxed)
                .saturating_sub(counted),
        };
        if late > 0 {
            self.to.fetch_add(late, Ordering::Relaxed);
        }
    }
}

/// [`read_loop`]'s work until the stream ends or the core closes it: whether the core
/// closed it first.
async fn feed_core(
    inner: &Arc<Inner>,
    stream: StreamId,
    body: &mut MeteredBody,
    ctl: &StreamCtl,
    fault: Option<FaultSlot>,
) -> bool {
    let mut batch: VecDeque<Bytes> = VecDeque::with_capacity(READ_BATCH);
    let mut end: Option<Result<(), Status>> = None;
    // This reader parked a backlog in its stream's entry (see below) and has not looked since.
    let mut parked = false;
    loop {
        let held = |ctl: &StreamCtl| {
            ctl.paused.load(Ordering::Acquire)
                && !ctl.ended.load(Ordering::Acquire)
                && !ctl.linger.load(Ordering::Acquire)
        };
        while held(ctl) {
            let resumed = ctl.resume.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !held(ctl) {
                break;
            }
            resumed.await;
        }
        if batch.is_empty() && end.is_none() {
            // Stored at every poll: a close while the reader waits counts what the body
            // completed meanwhile (messages held back for budget above all).
            end = poll_fn(|cx| {
                let r = fill(body, &mut batch, cx);
                ctl.taken.store(body.completed(), Ordering::Relaxed);
                r
            })
            .await;
        }
        let mut st = inner.lock();
        let now = inner.now();
        // What is left of a backlog parked at a pause (the drain of the ResumeRead hands
        // it in, but a reader that reads to the end regardless of pauses may get here
        // first) goes before anything this reader took since. Only this reader parks, so
        // the stream's entry is looked up only after it did.
        if core::mem::take(&mut parked)
            && let Some(e) = st.streams.get_mut(&stream)
        {
            while let Some(b) = e.held.pop_back() {
                batch.push_front(b);
            }
        }
        while let Some(b) = batch.pop_front() {
            if held(ctl) {
                batch.push_front(b);
                break;
            }
            if st.comm.handle_envelope(now, stream, b).is_err() {
                // The core closed the stream meanwhile. Its close counted what the reader
                // had taken when it came; what the reader took after (filling on another
                // worker as the close came) is counted here. What the envelopes before
                // this one produced (a DeliveryReady above all) must still go out.
                let counted = ctl.counted_to.load(Ordering::Relaxed);
                st.stats.unread_at_close += body.completed().saturating_sub(counted);
                // Counted through here: the reader's `LateCount` adds nothing more.
                ctl.taken.store(body.completed(), Ordering::Relaxed);
                ctl.counted_to.store(body.completed(), Ordering::Relaxed);
                drain(inner, &mut st);
                return true;
            }
            ctl.fed_one();
            drain_actions(inner, &mut st);
        }
        // Paused with a backlog: parked where the ResumeRead's drain finds it, with the
        // rest of what the body completed (a DATA frame carries up to 256 Envelopes). The
        // end of the stream, if it came, waits here behind it.
        if !batch.is_empty()
            && let Some(e) = st.streams.get_mut(&stream)
        {
            e.held.extend(batch.drain(..));
            body.take_ready(&mut e.held);
            parked = true;
        }
        if batch.is_empty()
            && !parked
            && let Some(ended) = end.take()
        {
            let fault = fault.as_ref().and_then(take_fault);
            // The sender of an oversized, stalled or badly framed message learns why on an
            // inbound stream, with the code grpc-go gives such a message (RESOURCE_EXHAUSTED,
            // INTERNAL; DEADLINE_EXCEEDED for a stall, which grpc-go does not time): the
            // writer ends the RPC with the fault's status before the core's close (UNKNOWN,
            // or none for a stream error) reaches it. An outbound stream's request has no
            // status to carry: it ends, and the stream is closed after it.
            if fault.is_some()
                && let Err(status) = &ended
                && let Some(entry) = st.streams.get(&stream)
            {
                let _ = entry.tx.try_send(Out::End(Some(status.clone())));
            }
            let e = match ended {
                Ok(()) => StreamEnd::Finished,
                Err(status) => StreamEnd::Error(status_text(&status)),
            };
            match fault {
                Some(Fault::Oversized(size)) => {
                    tracing::warn!(size, "oversized message refused at its length prefix");
                    let _ = st.comm.handle_oversized(now, stream, size);
                }
                other => {
                    match &other {
                        Some(Fault::Stalled { received }) => {
                            tracing::warn!(received, "stream reset: message in progress stalled");
                        }
                        Some(Fault::Framing(why)) => {
                            tracing::warn!(error = %why, "stream ended: bad gRPC framing");
                        }
                        _ => tracing::debug!(end = ?e, "stream ended"),
                    }
                    let _ = st.comm.handle_stream_closed(now, stream, e);
                }
            }
            drain(inner, &mut st);
            return false;
        }
        drain(inner, &mut st);
    }
}

/// The outgoing half of a stream: Envelopes the core wrote, pulled by its HTTP/2 body
/// ([`FramedOut`]).
///
/// Taking an Envelope out counts as written. Credit goes back to the core in batches: every
/// half write window, and whenever the queue runs dry, so the core can refill it before the
/// encoder is told to wait. The handshake's `ConnEstablish` ([`WriteKind::Handshake`]) is
/// outside the core's write window and is not counted.
///
/// # Coalescing writes
///
/// The body pulls Envelopes until this stream says `Pending`, then hands what it has to
/// HTTP/2 as one DATA frame, which h2 writes with one `writev`. When the stream is woken
/// after running dry, the task that woke it may have woken others that are about to write
/// too, or may itself write more before it pauses (the acker of a batch of messages).
/// tokio runs a task woken this way next (its LIFO slot), ahead of those others, so without
/// a pause each of them got its own frame, `writev` and wake-up of h2's connection task. So
/// the first poll after running dry yields once to the scheduler ([`tokio::task::yield_now`]
/// runs every task ready now first), and the Envelopes they queue meanwhile leave together.
/// The callers of a batch of acks are woken one after the other instead, and the writer
/// only after the last of them (see [`Locked`]): its queue reaches it through a [`Gate`].
/// The yield stays for them too: skipping it when the gate wakes the writer measured
/// slower (5.6 against 5.4 µs of CPU per ack).
pub(crate) struct OutStream {
    inner: Arc<Inner>,
    stream: StreamId,
    rx: mpsc::Receiver<Out>,
    unreported: usize,
    report_every: usize,
    done: bool,
    /// The queue ran dry at the last poll: the next poll starts a burst and yields first.
    dry: bool,
    /// The yield in progress at the start of a burst.
    yielding: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>>,
    /// What the queue wakes: the writer's task, unless the node holds writers.
    gate: Arc<Gate>,
    gate_waker: Waker,
    /// Items taken from `rx` in one batch, last first: one poll of the channel (and one
    /// release of its permits) per batch instead of per Envelope. They are within the
    /// core's write window already, so the batch adds nothing to what a stream may hold;
    /// its allocation is released whenever the queue runs dry.
    batch: Vec<Out>,
    /// The rest of the [`Out::Batch`] being written.
    run: std::vec::IntoIter<(Bytes, WriteKind)>,
    /// The stream's reader's controls: dropping this half (HTTP/2 gives it up when the
    /// connection dies) marks the RPC ended, so a paused reader still reads to its end.
    ctl: Arc<StreamCtl>,
}

impl Drop for OutStream {
    /// A connection that died while its reader was paused (its subscriber not reading, a
    /// full send buffer) would otherwise stay registered in the core with nobody to tell
    /// it: no write comes to find the stream gone, so callers waiting for buffer room (an
    /// ack, a `send_wait`) would wait forever. Seen against `fabric-gossip node
    /// --auto-ack` and a peer that advertised a zero window and hung up.
    fn drop(&mut self) {
        self.ctl.ended.store(true, Ordering::Release);
        self.ctl.resume.notify_one();
    }
}

/// Items [`OutStream`] takes from its queue at once: about one chunk of 1 KiB Envelopes.
const OUT_BATCH: usize = 64;

impl OutStream {
    pub(crate) fn new(
        inner: Arc<Inner>,
        stream: StreamId,
        rx: mpsc::Receiver<Out>,
        ctl: Arc<StreamCtl>,
    ) -> Self {
        let report_every = (inner.settings.write_window / 2).max(1);
        let gate = Arc::new(Gate {
            gates: inner.gates.clone(),
            task: AtomicWaker::new(),
        });
        OutStream {
            gate_waker: Waker::from(gate.clone()),
            gate,
            inner,
            stream,
            rx,
            unreported: 0,
            report_every,
            done: false,
            dry: false,
            yielding: None,
            batch: Vec::new(),
            run: Vec::new().into_iter(),
            ctl,
        }
    }

    /// The next item of the queue, woken through the gate.
    fn poll_queue(&mut self) -> Poll<Option<Out>> {
        let mut cx = Context::from_waker(&self.gate_waker);
        Self::next_out(&mut self.run, &mut self.batch, &mut self.rx, &mut cx)
    }

    /// The next item of the queue `rx`, never an [`Out::Batch`]: from the `run` of the
    /// batch item being handed out, from the `batch` of items taken last, or from a new
    /// batch.
    fn next_out(
        run: &mut std::vec::IntoIter<(Bytes, WriteKind)>,
        batch: &mut Vec<Out>,
        rx: &mut mpsc::Receiver<Out>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Out>> {
        loop {
            if let Some((b, kind)) = run.next() {
                return Poll::Ready(Some(Out::Env(b, kind)));
            }
            let Some(out) = batch.pop() else {
                match rx.poll_recv_many(cx, batch, OUT_BATCH) {
                    Poll::Ready(0) => return Poll::Ready(None),
                    Poll::Ready(_) => batch.reverse(),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            };
            match out {
                Out::Batch(items) => *run = items.into_iter(),
                out => return Poll::Ready(Some(out)),
            }
        }
    }

    fn report(&mut self) {
        let n = std::mem::take(&mut self.unreported);
        let inner = self.inner.clone();
        {
            let mut st = inner.lock();
            let now = inner.now();
            let _ = st.comm.handle_sent(now, self.stream, n);
            drain(&inner, &mut st);
        }
        inner.wake_room();
    }

    /// Counts an Envelope handed on, reporting every `report_every`.
    fn written(&mut self, b: Bytes, kind: WriteKind) -> Bytes {
        if kind == WriteKind::Message {
            self.unreported += 1;
            if self.unreported >= self.report_every {
                self.report();
            }
        }
        b
    }

    /// The next Envelope; `Err` carries the error status the core closed the stream with.
    pub(crate) fn poll_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut self.dry) {
            self.yielding = Some(Box::pin(tokio::task::yield_now()));
        }
        if let Some(y) = self.yielding.as_mut() {
            if y.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = None;
        }
        loop {
            let mut polled = self.poll_queue();
            if polled.is_pending() {
                // The writer's waker goes to the gate only once the queue is empty, not for
                // every Envelope; then the queue is looked at again, so a write in between
                // is either seen here or finds the waker registered.
                self.gate.task.register(cx.waker());
                polled = self.poll_queue();
            }
            match polled {
                Poll::Ready(Some(Out::Env(b, kind))) => {
                    return Poll::Ready(Some(Ok(self.written(b, kind))));
                }
                // `next_out` unpacks batches; one it returned would be unpacked here.
                Poll::Ready(Some(Out::Batch(items))) => self.run = items.into_iter(),
                Poll::Ready(Some(Out::End(error))) => {
                    self.done = true;
                    return Poll::Ready(error.map(Err));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending if self.unreported > 0 => self.report(),
                Poll::Pending => {
                    self.dry = true;
                    // An idle stream holds no batch (a node may have thousands).
                    self.batch = Vec::new();
                    self.run = Vec::new().into_iter();
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The timer: sleeps until the core's next deadline, or until woken because it moved.
pub(crate) async fn timer_task(inner: Arc<Inner>) {
    let _stop_with_me = StopOnDrop(inner.clone());
    loop {
        let woken = inner.timer.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (deadline, stopped) = {
            let mut st = inner.lock();
            let next = st.comm.poll_timeout();
            st.timer_target = next;
            (next, st.comm.is_stopped())
        };
        if stopped && deadline.is_none() {
            return;
        }
        match deadline {
            Some(t) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(inner.clock.to_tokio(t)) => {
                        // The stack's: the core's deadlines, then the layer's.
                        let mut st = inner.lock();
                        st.comm.handle_timeout(inner.now());
                        drain(&inner, &mut st);
                    }
                }
            }
            None => woken.await,
        }
    }
}

/// Stops the node when its timer task ends. The timer runs for the node's whole life, so
/// it ends before the node stops only when its runtime shuts down (which drops every task
/// of the node) or it panics. A node left so would go on taking sends it can never carry
/// out and leave every caller waiting for an ack, a probe or a timeout forever; stopped,
/// it fails them with `Stopped`, as after [`crate::Node::stop`]. Stopping is idempotent,
/// so the normal ends (the node stopped, the task aborted by `stop`) change nothing.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.with_core(|c, now| c.stop(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A close that lands while the reader, on another worker, is inside a poll that
    /// completes messages and then waits (held back for budget) counts what the reader had
    /// taken before that poll; the abort that follows drops the task, and its
    /// `LateCount` counts the rest. Before, those were lost in no counter.
    #[tokio::test]
    async fn an_aborted_reader_counts_what_it_took_after_the_close() {
        let late = Arc::new(AtomicU64::new(0));
        let ctl = Arc::new(StreamCtl::default());
        ctl.taken.store(10, Ordering::Relaxed);
        let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn({
            let (late, ctl) = (late.clone(), ctl.clone());
            async move {
                let _late = LateCount {
                    to: &late,
                    ctl: &ctl,
                };
                // The close, on the other worker, read `taken` as 10 ...
                ctl.counted_to.store(10, Ordering::Relaxed);
                // ... as this poll completed five more, and the reader waits.
                ctl.taken.store(15, Ordering::Relaxed);
                let _ = polled_tx.send(());
                std::future::pending::<()>().await;
            }
        });
        polled_rx.await.unwrap();
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());
        assert_eq!(late.load(Ordering::Relaxed), 5);

        // A reader whose stream is open (its own end came first), or that counted the
        // rest itself under the lock (it moved `counted_to` up to `taken`), adds nothing.
        for counted_to in [u64::MAX, 15] {
            let ctl = StreamCtl::default();
            ctl.taken.store(15, Ordering::Relaxed);
            ctl.counted_to.store(counted_to, Ordering::Relaxed);
            drop(LateCount {
                to: &late,
                ctl: &ctl,
            });
            assert_eq!(late.load(Ordering::Relaxed), 5, "counted_to {counted_to}");
        }
    }

    /// A stream the core closed while stopping is read to its end (so the stop knows the
    /// remote took everything), and the messages still coming are discarded: they were in
    /// no counter (audit, 2026-12-05). The reader's `LateCount` counts them now, past
    /// what the close counted.
    #[tokio::test]
    async fn messages_discarded_while_stopping_are_counted() {
        use crate::metered::tests::{data, reader, wire};
        let budget = Budget::new(1 << 20);
        let three = wire(&[(0, 10, 1), (0, 20, 2), (0, 30, 3)]);
        let mut body = reader(vec![data(&three)], Side::Request, &budget);
        let late = AtomicU64::new(0);
        let ctl = StreamCtl::default();
        // The close found nothing taken and counted nothing; the reader lingers.
        ctl.counted_to.store(0, Ordering::Relaxed);
        {
            let _late = LateCount {
                to: &late,
                ctl: &ctl,
            };
            discard_to_end(&mut body, &ctl).await;
        }
        assert_eq!(late.load(Ordering::Relaxed), 3);
    }

    /// The I/O error under a stream's end when a Fabric peer closed a replaced stream.
    #[derive(Debug)]
    struct Io;
    impl std::fmt::Display for Io {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stream closed because of a broken pipe")
        }
    }
    impl std::error::Error for Io {}

    /// A stream's end as a Fabric peer closing a replaced stream gave it: a status whose
    /// source is a status whose source is hyper's error over an I/O error.
    #[test]
    fn a_status_within_a_status_reads_as_its_message() {
        const MSG: &str = "h2 protocol error: error reading a body from connection";
        let mut inner = Status::unknown(MSG);
        inner.set_source(std::sync::Arc::new(Io));
        let mut outer = Status::unknown(MSG);
        outer.set_source(std::sync::Arc::new(inner));
        assert_eq!(
            status_text(&outer),
            "Unknown: h2 protocol error: error reading a body from connection: stream closed \
             because of a broken pipe"
        );
    }

    /// The same behind a wrapper that shows its source's text as its own (axum's `Error`,
    /// whose `Debug` a live check against Fabric v2.4.9 printed: `Error { inner: Status {
    /// … } }`): the reason read "…: code: 'Unknown error', message: \"h2 protocol error:
    /// …\", source: hyper::Error(Body, …): stream closed because of a broken pipe".
    #[test]
    fn a_status_behind_a_transparent_wrapper_reads_as_its_message() {
        #[derive(Debug)]
        struct Wrapper(Box<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        const MSG: &str = "h2 protocol error: error reading a body from connection";
        let mut inner = Status::unknown(MSG);
        inner.set_source(std::sync::Arc::new(Io));
        let mut outer = Status::unknown(MSG);
        outer.set_source(std::sync::Arc::new(Wrapper(Box::new(inner))));
        assert_eq!(
            status_text(&outer),
            "Unknown: h2 protocol error: error reading a body from connection: stream closed \
             because of a broken pipe"
        );
        // A layer whose text differs from its source's is kept.
        let mut other = Status::unknown("reset");
        other.set_source(std::sync::Arc::new(Wrapper(Box::new(Io))));
        assert_eq!(
            status_text(&other),
            "Unknown: reset: stream closed because of a broken pipe"
        );
    }

    /// Each layer's text appears once: the errors an embedder saw read "Unknown: transport
    /// error: transport error: connection error: received fatal alert: UnknownCA".
    #[test]
    fn error_texts_name_each_layer_once() {
        let mut s = "Unknown".to_owned();
        push_segments(&mut s, "transport error");
        push_segments(
            &mut s,
            "transport error: connection error: received fatal alert: UnknownCA",
        );
        assert_eq!(
            s,
            "Unknown: transport error: connection error: received fatal alert: UnknownCA"
        );
        let mut s = "Internal".to_owned();
        push_segments(&mut s, "h2 protocol error: http2 error");
        push_segments(
            &mut s,
            "transport error: http2 error: connection error detected: frame with invalid size",
        );
        assert_eq!(
            s,
            "Internal: h2 protocol error: http2 error: transport error: connection error \
             detected: frame with invalid size"
        );
    }

    /// A server the node dials chooses its statuses' messages: they reach the events and
    /// logs cut and escaped.
    #[test]
    fn a_remote_status_message_is_cut_and_escaped() {
        let forged = "\u{1b}[31mFORGED\n2026-12-05T00:00:00Z  INFO fake: line\u{202e} ".repeat(250);
        let text = status_text(&Status::permission_denied(forged.clone()));
        assert!(
            text.len() < 1500,
            "{} bytes kept of {}",
            text.len(),
            forged.len()
        );
        assert!(!text.chars().any(fabric_gossip_core::is_unseen), "{text}");
        assert!(
            text.starts_with("PermissionDenied: \\u{1b}[31mFORGED\\n2026"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("… ({} bytes)", forged.len())),
            "{text}"
        );
        // An ordinary refusal reads as it came.
        assert_eq!(
            status_text(&Status::permission_denied(
                "failed classifying identity: unknown MSP"
            )),
            "PermissionDenied: failed classifying identity: unknown MSP"
        );
    }

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

    fn env(i: u32) -> Out {
        Out::Env(Bytes::from(i.to_be_bytes().to_vec()), WriteKind::Message)
    }

    fn index(out: &Out) -> Option<u32> {
        match out {
            Out::Env(b, _) => Some(u32::from_be_bytes(b[..].try_into().ok()?)),
            Out::Batch(_) | Out::End(_) => None,
        }
    }

    /// Batches of up to `OUT_BATCH` hand the queue's items out in the order they were queued,
    /// across batches and items queued between them, and the end of the queue after them.
    #[test]
    fn batches_keep_the_queue_order() {
        let (tx, mut rx) = mpsc::channel(3 * OUT_BATCH);
        let mut batch = Vec::new();
        let mut run = Vec::new().into_iter();
        let mut cx = Context::from_waker(Waker::noop());
        let mut next = |batch: &mut Vec<Out>, rx: &mut mpsc::Receiver<Out>| {
            OutStream::next_out(&mut run, batch, rx, &mut cx)
        };
        for i in 0..(2 * OUT_BATCH + 5) as u32 {
            tx.try_send(env(i)).unwrap();
        }
        let mut got = Vec::new();
        // The first batch is full; more is queued while it is handed out.
        for _ in 0..10 {
            let Poll::Ready(Some(out)) = next(&mut batch, &mut rx) else {
                panic!("an item was queued");
            };
            got.push(index(&out).unwrap());
        }
        assert_eq!(batch.len(), OUT_BATCH - 10, "one batch taken, in full");
        let queued = (2 * OUT_BATCH + 5) as u32;
        for i in queued..queued + 7 {
            tx.try_send(env(i)).unwrap();
        }
        tx.try_send(Out::End(Some(Status::unknown("closed"))))
            .unwrap();
        drop(tx);
        let mut ended = false;
        loop {
            match next(&mut batch, &mut rx) {
                Poll::Ready(Some(Out::End(why))) => {
                    assert_eq!(why.as_ref().map(Status::message), Some("closed"));
                    assert!(!ended, "one end");
                    ended = true;
                }
                Poll::Ready(Some(out)) => {
                    assert!(!ended, "nothing after the end");
                    got.push(index(&out).unwrap());
                }
                Poll::Ready(None) => break,
                Poll::Pending => panic!("the sender is gone: the queue ends, never pends"),
            }
        }
        assert!(ended);
        assert_eq!(got, (0..queued + 7).collect::<Vec<_>>());
    }

    /// The writes of one stream in a row leave as one item, in order; another stream's write
    /// ends the run, and a run of one is a plain envelope.
    #[test]
    fn a_streams_writes_in_a_row_leave_as_one_item() {
        let (a, b) = (StreamId::from_parts(1, 0), StreamId::from_parts(2, 0));
        let mut writes = Writes::new(8);
        assert!(writes.take().is_none(), "nothing gathered");
        for i in 0..3u32 {
            let ended = writes.push(a, Bytes::from(i.to_be_bytes().to_vec()), WriteKind::Message);
            assert!(ended.is_none(), "the same stream's run goes on");
        }
        let Some((stream, Out::Batch(run), 3)) = writes.push(b, Bytes::new(), WriteKind::Message)
        else {
            panic!("another stream's write ends the run as one batch");
        };
        assert_eq!(stream, a);
        let got: Vec<_> = run
            .into_iter()
            .map(|(b, _)| u32::from_be_bytes(b[..].try_into().unwrap()))
            .collect();
        assert_eq!(got, [0, 1, 2]);
        let Some((stream, Out::Env(_, WriteKind::Message), 1)) = writes.take() else {
            panic!("a run of one is a plain envelope");
        };
        assert_eq!(stream, b);
        assert!(writes.take().is_none(), "taken once");
    }

    /// A batch item is handed out envelope by envelope, in its place in the queue.
    #[test]
    fn batches_are_unpacked_in_their_place() {
        let (tx, mut rx) = mpsc::channel(8);
        let (mut batch, mut run) = (Vec::new(), Vec::new().into_iter());
        let mut cx = Context::from_waker(Waker::noop());
        let run_of = |r: std::ops::Range<u32>| {
            let items = r.map(|i| match env(i) {
                Out::Env(b, k) => (b, k),
                _ => unreachable!(),
            });
            Out::Batch(items.collect())
        };
        for item in [env(0), run_of(1..4), env(4), run_of(5..5), run_of(5..6)] {
            tx.try_send(item).unwrap();
        }
        tx.try_send(Out::End(None)).unwrap();
        drop(tx);
        let mut got = Vec::new();
        loop {
            match OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx) {
                Poll::Ready(Some(Out::End(_))) => got.push(u32::MAX),
                Poll::Ready(Some(out)) => got.push(index(&out).expect("an envelope")),
                Poll::Ready(None) => break,
                Poll::Pending => panic!("the sender is gone: the queue ends, never pends"),
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5, u32::MAX]);
    }

    /// An empty queue with its sender alive pends, holding no batch.
    #[test]
    fn an_empty_queue_pends() {
        let (tx, mut rx) = mpsc::channel::<Out>(4);
        let mut batch = Vec::new();
        let mut run = Vec::new().into_iter();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx).is_pending());
        tx.try_send(env(7)).unwrap();
        let Poll::Ready(Some(out)) = OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx)
        else {
            panic!("an item was queued");
        };
        assert_eq!(index(&out), Some(7));
        assert!(batch.is_empty());
        assert!(OutStream::next_out(&mut run, &mut batch, &mut rx, &mut cx).is_pending());
    }

    /// A reader hands the core at most 64 Envelopes under one lock, or fewer once they add
    /// up to 1 MiB: the batch is bounded both ways, and the rest waits in the body for the
    /// next batch, in order.
    #[test]
    fn a_readers_batch_ends_at_64_envelopes_or_at_1_mib() {
        use crate::metered::tests::{data, reader, wire};
        let budget = Budget::new(8 << 20);
        let mut cx = Context::from_waker(Waker::noop());
        let mut batch = VecDeque::new();
        let small = wire(&[(0, 10, 1); 100]);
        let mut body = reader(vec![data(&small)], Side::Request, &budget);
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(batch.len(), 64);
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(Some(Ok(())))
        ));
        assert_eq!(batch.len(), 36);

        // Four of 256 KiB make 1 MiB exactly.
        let large = wire(&[(0, 256 << 10, 2); 6]);
        let mut body = reader(vec![data(&large)], Side::Request, &budget);
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(
            batch.iter().map(Bytes::len).collect::<Vec<_>>(),
            [256 << 10; 4]
        );
        batch.clear();
        assert!(matches!(
            fill(&mut body, &mut batch, &mut cx),
            Poll::Ready(Some(Ok(())))
        ));
        assert_eq!(batch.len(), 2);
    }

    /// Core time is the wall-clock time at start plus the monotonic time elapsed since; a
    /// core deadline becomes a tokio deadline as far ahead, but at most a day ahead (a far
    /// one, an identity's expiry, is re-armed on waking), and one already past is now.
    #[test]
    fn core_time_runs_on_from_the_wall_clock_and_deadlines_are_at_most_a_day_ahead() {
        const SECOND: Duration = Duration::from_secs(1);
        let wall = Instant::from_system_time(std::time::SystemTime::now());
        // A clock started ten seconds ago.
        let clock = Clock {
            anchor: wall,
            base: coarsetime::Instant::now_without_cache_update()
                - coarsetime::Duration::from_secs(10),
        };
        let since = clock.now().saturating_duration_since(wall);
        assert!(
            since > 10 * SECOND - SECOND / 10 && since < 11 * SECOND,
            "{since:?}"
        );
        let ahead = |t: Instant| {
            clock
                .to_tokio(t)
                .saturating_duration_since(tokio::time::Instant::now())
        };
        let soon = ahead(clock.now() + 5 * SECOND);
        assert!(soon > 4 * SECOND && soon <= 5 * SECOND, "{soon:?}");
        let far = ahead(clock.now() + 30 * 24 * 3600 * SECOND);
        let day = 24 * 3600 * SECOND;
        assert!(far > day - SECOND && far <= day, "{far:?}");
        let past = ahead(wall);
        assert!(past < SECOND, "{past:?}");
    }

    /// While a chain of SendWithAck callers runs, the node's stream writers are held: a
    /// wake-up of a writer's queue waits in the gates and is given, once, when they open;
    /// with the gates open it is given at once (see `Locked`).
    #[test]
    fn a_writers_wake_up_waits_while_the_gates_are_held() {
        struct Count(AtomicU64);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicU64::new(0)));
        let woken = || count.0.load(Ordering::Relaxed);
        let writer = Waker::from(count.clone());
        let gates = Arc::new(Gates::default());
        let gate = Arc::new(Gate {
            gates: gates.clone(),
            task: AtomicWaker::new(),
        });
        let queue_waker = Waker::from(gate.clone());

        gate.task.register(&writer);
        queue_waker.wake_by_ref();
        assert_eq!(woken(), 1, "open: at once");

        gate.task.register(&writer);
        gates.hold();
        gates.hold();
        queue_waker.wake_by_ref();
        assert_eq!(woken(), 1, "held");
        gates.open();
        assert_eq!(woken(), 2, "given as the gates open");
        gates.open();
        assert_eq!(woken(), 2, "given once");

        // A queue wakes its waker by value too (`Gate::wake`, not `wake_by_ref`).
        let by_value = queue_waker.clone();
        gate.task.register(&writer);
        gates.hold();
        by_value.wake();
        assert_eq!(woken(), 2, "held");
        gates.open();
        assert_eq!(woken(), 3, "given as the gates open");
    }
}
