//! Carrying out what the core asks, under the lock: [`drain`] takes its actions (dials,
//! Pings, streams opened and closed, writes, pauses and resumes) and its events (deliveries
//! ready, operations' results, notifications, logs), gathers a stream's writes in a row
//! into one queue item ([`Writes`]) and hands in a resumed stream's parked backlog. Its
//! own part: the one place where the core's output becomes tasks, queue items and
//! wake-ups.

use super::dial::{dial_task, outbound_task, ping_task};
use super::lock::Later;
use super::read::StreamCtl;
use super::stop::WindingGuard;
use super::write::Out;
use super::{AuthGuard, DialEntry, Inner, State, StreamEntry, Waiter};
use bytes::Bytes;
use fabric_gossip_core::{Action, Event, Output, StreamEnd, StreamId, WriteKind};
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::Instrument;

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
pub(super) struct Writes {
    stream: Option<StreamId>,
    items: SmallVec<[(Bytes, WriteKind); 1]>,
    /// Room reserved when a run outgrows one envelope: the write window, the most a run
    /// holds but for a handshake, up to [`MAX_RUN_RESERVE`].
    run_reserve: usize,
}

/// The most room a run reserves at once (10 KiB); a longer one grows as it goes.
const MAX_RUN_RESERVE: usize = 256;

impl Writes {
    pub(super) fn new(write_window: usize) -> Self {
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
pub(super) fn drain_actions(inner: &Arc<Inner>, st: &mut State) {
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
pub(super) fn feed_backlog(inner: &Arc<Inner>, st: &mut State) -> bool {
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
            // The core logs it at info with its cause (`fabric_gossip_core::store`): at info
            // here too, every presumed-dead peer was in the log twice.
            if let Some(not_logged) = st.conn_log.admit(inner.now()) {
                tracing::debug!(pki_id = %p.pki_id, endpoint = %p.endpoint, not_logged, "peer presumed dead");
            }
            if let Some(tx) = &st.presumed_dead_tx
                && tx.try_send(p.pki_id).is_err()
            {
                st.stats.presumed_dead_dropped += 1;
            }
        }
        Event::IdentitySwitch(p) => {
            if let Some(tx) = &st.identity_switch_tx
                && tx.try_send(p.old).is_err()
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
                if let Some(not_logged) = st.conn_log.admit(inner.now()) {
                    tracing::info!(
                        parent: &e.span, endpoint = %info.endpoint, inbound, not_logged, "connected"
                    );
                }
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
            if let Some(not_logged) = st.conn_log.admit(inner.now()) {
                tracing::info!(stream = %conn, pki_id = %pki_id, reason = %reason, cause = reason.label(), not_logged, "disconnected");
            }
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
            if let Some(not_logged) = st.conn_log.admit(inner.now()) {
                tracing::info!(pki_id = %info.id, endpoint = %info.endpoint, not_logged, "probed us");
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
