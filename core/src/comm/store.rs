//! The connection store: one connection per PKI-ID (`gossip/comm/conn.go`,
//! `connectionStore`: `getConnection`, `onConnected`, `closeConnByPKIid`), the connection
//! attempt per PKI-ID with the sends that wait for it, crossing dials, and the identity
//! switch of a dialled peer (`comm_impl.go`, `createConnection`, the `identityChanges`
//! channel).
//!
//! # Retiring a connection without losing what it carries
//!
//! Fabric closes a replaced connection at once (`onConnected` calls `conn.close()` on the
//! old one) and so does the side that opened the losing stream of a crossing dial here,
//! after `crossing_grace`. Closing a stream throws away what its driver holds unread; when
//! a subscription has paused reading it, that can be envelopes the remote's core was told
//! were written (its `send_wait` returned, even a SendWithAck meanwhile acked on another
//! stream): a loss nobody counts. So the rule here, which still always replaces as Fabric
//! does (the new stream is registered and carries every new send at once, so a Fabric
//! peer sees the same connection) is:
//!
//! 1. the retired stream carries no new sends from the moment it is retired: its unsent
//!    messages (send buffer and waiting sends) move, in order, behind what the new
//!    connection already holds;
//! 2. it is closed only while reading it is **not paused**: a retired stream that is paused
//!    stays open (unregistered, still delivering) and is looked at again every
//!    `crossing_grace` (at least [`PAUSED_RELOOK_MIN`](crate::PAUSED_RELOOK_MIN)); once a
//!    subscription took enough to resume it and its backlog came in, the next look closes
//!    it. One resumed and not looked at since counts as paused for this (its driver may
//!    not have handed in what it held yet). The remote may end it first (then it goes as
//!    any stream the remote ends). It counts toward `max_connections` while it is open;
//! 3. at most one retired stream per PKI-ID waits so: a further replacement while one
//!    waits closes the older one (a remote that reconnects over and over while we do not
//!    read cannot make us keep streams without bound), and `close_conn`, an expired
//!    identity and `stop` close them as any connection. If reading the older one is still
//!    paused, that close loses what it carries unread: it is counted
//!    (`Stats::retired_closed_unread`) and the stream ends with an error status, not as a
//!    clean close.
//!
//! What Fabric decides with a lock and a `destinationLocks` map is one table here: for
//! each PKI-ID, the registered primary connection and, during a crossing dial, the losing
//! secondary, plus the attempts in progress. Which stream wins when two appear for one
//! PKI-ID is [`registration`], a pure function.

use super::output::{DeadCause, Event, SwitchedPeer};
use super::send::SendQueue;
use super::stream::{Conn, Phase};
use super::timers::TimerKey;
use super::{Comm, ConnectionEntry, Map, new_map};
use crate::error::{CloseReason, HandshakeError};
use crate::ids::{OpId, PkiId, PkiKey, StreamId};
use crate::message::ConnectionInfo;
use crate::security::Security;
use crate::time::Instant;
use smallvec::SmallVec;
use std::sync::Arc;

/// What registering a newly authenticated stream did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// The first connection to that PKI-ID.
    New,
    /// A stream opened by the same side as the registered one (a reconnection): the new
    /// stream replaces the old, as in Fabric.
    Replaced,
    /// A crossing dial the new stream won: it becomes primary, the old one secondary.
    CrossingWinner,
    /// A crossing dial the new stream lost: it stays as the secondary.
    CrossingLoser,
}

/// The rule for a second authenticated stream to one PKI-ID. Streams opened by the same
/// side replace each other (Fabric's `onConnected` closes the old one). Streams opened by
/// different sides are a crossing dial: the stream opened by the **lower PKI-ID** wins on
/// both sides, so both keep the same one (Fabric can close both here; see the crate docs).
///
/// `existing_inbound` is whether the registered primary was opened by the remote, `None`
/// when there is none.
pub(crate) fn registration(
    own: &PkiId,
    remote: &PkiId,
    new_inbound: bool,
    existing_inbound: Option<bool>,
) -> Registration {
    let Some(old_inbound) = existing_inbound else {
        return Registration::New;
    };
    // (A remote claiming our own PKI-ID never gets here: the handshake refuses it.)
    if old_inbound == new_inbound {
        return Registration::Replaced;
    }
    // The new stream was opened by us iff it is outbound; it wins iff we are the lower.
    let we_are_lower = own < remote;
    if we_are_lower != new_inbound {
        Registration::CrossingWinner
    } else {
        Registration::CrossingLoser
    }
}

/// The registered stream(s) of one PKI-ID.
#[derive(Debug, Clone, Copy)]
struct Registered {
    primary: StreamId,
    secondary: Option<StreamId>,
}

/// Messages that wait for a connection attempt, with the same bounds as a send buffer.
#[derive(Debug, Default)]
pub(super) struct Attempt {
    /// The endpoint dialled: names the peer if the attempt fails.
    pub(super) endpoint: String,
    pub(super) queue: SendQueue,
    /// SendWithAck operations with a message in `queue`: told if the attempt fails.
    pub(super) ack_waits: SmallVec<[OpId; 2]>,
    /// Whether a message of the application's (not the hosted layer's) was queued here:
    /// a flush waits for this attempt ([`super::Comm::unsent_to_flush`]).
    pub(super) for_application: bool,
}

/// The table of connections and attempts by PKI-ID.
#[derive(Debug)]
pub(super) struct Store {
    registry: Map<PkiKey, Registered>,
    attempts: Map<PkiId, Attempt>,
    /// Replaced connections kept open while their reading is paused (one per PKI-ID).
    retiring: Map<PkiId, StreamId>,
    /// Registered entries with a secondary, so that counting registered streams (checked
    /// at every registration) does not walk the table.
    secondaries: usize,
}

impl Store {
    pub(super) fn new(seed: u64) -> Self {
        Store {
            registry: new_map(seed),
            attempts: new_map(seed ^ 1),
            retiring: new_map(seed ^ 2),
            secondaries: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.registry.len()
    }

    pub(super) fn primary(&self, pki: &PkiId) -> Option<StreamId> {
        self.registry.get(pki.as_bytes()).map(|r| r.primary)
    }

    pub(super) fn is_registered(&self, pki: &[u8]) -> bool {
        self.registry.contains_key(pki)
    }

    /// Established streams: registered ones, secondaries included, and retired ones still
    /// open. All count toward `max_connections`, or a peer reconnecting while reading is
    /// paused could hold one more stream than the limit per PKI-ID.
    fn stream_count(&self) -> usize {
        debug_assert_eq!(
            self.secondaries,
            self.registry
                .values()
                .filter(|r| r.secondary.is_some())
                .count()
        );
        self.registry.len() + self.secondaries + self.retiring.len()
    }

    /// Registers `primary` (and a crossing `secondary`) for `pki`, replacing what was there.
    fn set(&mut self, pki: PkiId, primary: StreamId, secondary: Option<StreamId>) {
        let old = self
            .registry
            .insert(PkiKey::from(&pki), Registered { primary, secondary });
        self.secondaries -= usize::from(old.is_some_and(|r| r.secondary.is_some()));
        self.secondaries += usize::from(secondary.is_some());
    }

    /// Forgets `pki`'s registered streams.
    fn unregister(&mut self, pki: &PkiId) {
        let old = self.registry.remove(pki.as_bytes());
        self.secondaries -= usize::from(old.is_some_and(|r| r.secondary.is_some()));
    }

    pub(super) fn entries(&self) -> Vec<ConnectionEntry> {
        let mut v: Vec<_> = self
            .registry
            .iter()
            .map(|(k, r)| ConnectionEntry {
                pki_id: k.to_pki_id(),
                primary: r.primary,
                secondary: r.secondary,
            })
            .collect();
        v.sort_by(|a, b| a.pki_id.cmp(&b.pki_id));
        v
    }

    pub(super) fn has_attempt(&self, pki: &PkiId) -> bool {
        self.attempts.contains_key(pki)
    }

    /// Messages held by connection attempts, waiting for their connection.
    pub(super) fn attempts_pending(&self) -> usize {
        self.attempts.values().map(|a| a.queue.pending()).sum()
    }

    /// Messages held by connection attempts that hold a message of the application's.
    pub(super) fn attempts_pending_for_application(&self) -> usize {
        self.attempts
            .values()
            .filter(|a| a.for_application)
            .map(|a| a.queue.pending())
            .sum()
    }

    /// Connections and attempts together: what `max_connections` bounds for new sends.
    pub(super) fn attempts_and_registered(&self) -> usize {
        self.attempts.len() + self.registry.len()
    }

    /// The endpoint an attempt in progress for `pki` dials.
    pub(super) fn attempt_endpoint(&self, pki: &PkiId) -> Option<&str> {
        self.attempts.get(pki).map(|a| a.endpoint.as_str())
    }

    pub(super) fn attempt_entry(&mut self, pki: &PkiId) -> &mut Attempt {
        self.attempts.entry(pki.clone()).or_default()
    }

    /// At stop: every attempt goes; returns the messages they held.
    pub(super) fn clear_attempts(&mut self) -> u64 {
        let leftover = self
            .attempts
            .values()
            .map(|a| a.queue.pending() as u64)
            .sum();
        self.attempts.clear();
        leftover
    }
}

impl<S: Security> Comm<S> {
    /// Registers an authenticated stream (Fabric's `connectionStore.onConnected`) under the
    /// rule of [`registration`]. Returns `None` if the connection was refused
    /// (`max_connections`).
    pub(super) fn register(
        &mut self,
        stream: StreamId,
        info: Arc<ConnectionInfo>,
        inbound: bool,
        now: Instant,
    ) -> Option<Registration> {
        if self.store.stream_count() >= self.config.max_connections {
            let err = HandshakeError::TooManyConnections;
            if let Some(not_logged) = self.conn_log.admit(self.now) {
                tracing::info!(
                    target: "fabric_gossip_core::store",
                    pki_id = %info.id,
                    endpoint = %info.endpoint,
                    stream = %stream,
                    limit = self.config.max_connections,
                    not_logged,
                    "connection refused: too many connections"
                );
            }
            self.stats.handshake_failed(&err);
            let remote = info.endpoint.clone();
            self.drop_stream(stream, inbound.then(|| err.to_string()));
            self.info_event(Event::HandshakeFailed {
                stream,
                remote,
                inbound,
                error: err,
            });
            return None;
        }
        let pki = info.id.clone();
        if let Some(s) = self.streams.get_mut(stream) {
            let mut conn = Conn::new(info.clone());
            if !inbound {
                conn.refusable_until = Some(now + self.config.conn_timeout);
            }
            s.phase = Phase::Established(Box::new(conn));
        }
        self.stats.connections_opened += 1;
        let existing = self.store.registry.get(pki.as_bytes()).copied();
        let existing_inbound =
            existing.map(|reg| self.streams.get(reg.primary).is_some_and(|s| s.inbound));
        let outcome = registration(&self.own_pki, &pki, inbound, existing_inbound);
        if let Some(not_logged) = self.conn_log.admit(self.now) {
            tracing::info!(
                target: "fabric_gossip_core::store",
                pki_id = %pki,
                endpoint = %info.endpoint,
                conn = %stream,
                inbound,
                registration = ?outcome,
                not_logged,
                "connection registered"
            );
        }
        self.info_event(Event::Connected {
            conn: stream,
            info,
            inbound,
        });
        let Some(reg) = existing else {
            self.store.set(pki.clone(), stream, None);
            // Messages waiting for our own attempt to this peer go first on the new
            // connection: later sends take it directly, and must not overtake them.
            if let Some(att) = self.store.attempts.get_mut(&pki) {
                let (buf, waiting) = att.queue.take_pending();
                self.absorb(stream, buf, waiting);
            }
            return Some(outcome);
        };
        if outcome == Registration::Replaced {
            self.store.set(pki.clone(), stream, reg.secondary);
            let (buf, waiting) = self.take_queues(reg.primary);
            self.absorb(stream, buf, waiting);
            self.retire(&pki, reg.primary, CloseReason::Replaced, now);
            return Some(outcome);
        }
        self.stats.crossings += 1;
        let new_wins = outcome == Registration::CrossingWinner;
        let (winner, loser) = if new_wins {
            (stream, reg.primary)
        } else {
            (reg.primary, stream)
        };
        if let Some(old_secondary) = reg.secondary {
            self.store.set(pki.clone(), reg.primary, None);
            self.retire(&pki, old_secondary, CloseReason::Replaced, now);
        }
        self.store.set(pki, winner, Some(loser));
        if new_wins {
            let (buf, waiting) = self.take_queues(loser);
            self.absorb(winner, buf, waiting);
        }
        // The side that opened the losing stream closes it after the grace period; the
        // other side never does.
        let loser_is_ours = self.streams.get(loser).is_some_and(|s| !s.inbound);
        let grace = now + self.config.crossing_grace;
        if let Some(c) = self.streams.get_mut(loser).and_then(|s| s.conn_mut()) {
            c.secondary = true;
            if loser_is_ours {
                c.grace = Some(grace);
            }
        }
        if loser_is_ours {
            self.arm(grace, TimerKey::Grace(loser));
        }
        Some(outcome)
    }

    /// Our dial authenticated someone; check who (an identity switch within the
    /// organization is accepted and reported), then register.
    pub(super) fn attempt_authenticated(
        &mut self,
        stream: StreamId,
        key: PkiId,
        info: Arc<ConnectionInfo>,
        now: Instant,
    ) {
        if !key.is_empty() && key != info.id {
            let new_org = self.security.organization_of(&info.identity);
            // Fabric's `createConnection` reads the old identity through its mapper's
            // `Get`, which counts as a use of it.
            self.identities.mark_used(key.as_bytes(), now);
            let old_org = self
                .identities
                .get(&key)
                .and_then(|s| s.organization.clone());
            if new_org.is_some() && new_org == old_org {
                if let Some(not_logged) = self.conn_log.admit(now) {
                    tracing::info!(
                        target: "fabric_gossip_core::store",
                        old_pki_id = %key,
                        new_pki_id = %info.id,
                        endpoint = %info.endpoint,
                        not_logged,
                        "identity switch"
                    );
                }
                self.stats.identity_switches += 1;
                self.out.event(Event::IdentitySwitch(SwitchedPeer {
                    old: key.clone(),
                    new: info.id.clone(),
                    endpoint: info.endpoint.clone(),
                }));
            } else {
                let err = HandshakeError::UnexpectedPeer {
                    expected: key.clone(),
                    actual: info.id.clone(),
                };
                self.stats.handshake_failed(&err);
                let remote = info.endpoint.clone();
                self.log_handshake_failure(stream, &remote, false, &err);
                self.drop_stream(stream, None);
                self.info_event(Event::HandshakeFailed {
                    stream,
                    remote,
                    inbound: false,
                    error: err.clone(),
                });
                self.attempt_failed(&key, err);
                return;
            }
        }
        let actual = info.id.clone();
        if self.register(stream, info, false, now).is_none() {
            self.attempt_failed(&key, HandshakeError::TooManyConnections);
            return;
        }
        // Messages that waited for the attempt go to whatever connection now serves the peer.
        self.attempt_served(&key, &actual);
    }

    /// The attempt to reach `key` is over with a connection serving the peer, now
    /// registered under `serving` (ours just authenticated, or one the peer opened to us
    /// while our dial waited to try again): the attempt's messages go to it. Its callers
    /// have that connection registered; were it not, the messages would be counted in
    /// `dropped_no_connection` (and their `SendWithAck`s left to their deadlines).
    pub(super) fn attempt_served(&mut self, key: &PkiId, serving: &PkiId) {
        if let Some(mut att) = self.store.attempts.remove(key)
            && !self.hand_over(&mut att, serving)
        {
            self.stats.dropped_no_connection += att.queue.pending() as u64;
        }
    }

    /// Moves what waited for an attempt onto the connection serving `pki`, if one does
    /// (whether one did).
    fn hand_over(&mut self, att: &mut Attempt, pki: &PkiId) -> bool {
        let Some(target) = self.store.primary(pki) else {
            return false;
        };
        let (buf, waiting) = att.queue.take_pending();
        self.absorb(target, buf, waiting);
        true
    }

    /// The attempt to reach `key` failed: its messages go to a connection the peer opened
    /// to us meanwhile, or are dropped and the peer presumed dead.
    pub(super) fn attempt_failed(&mut self, key: &PkiId, err: HandshakeError) {
        let Some(mut att) = self.store.attempts.remove(key) else {
            return;
        };
        // Someone may have connected to us meanwhile under that PKI-ID: use theirs.
        if self.hand_over(&mut att, key) {
            return;
        }
        let dropped = att.queue.pending();
        tracing::debug!(
            target: "fabric_gossip_core::store",
            pki_id = %key,
            error = %err,
            dropped,
            "connection attempt failed; its messages are dropped"
        );
        self.stats.dropped_no_connection += dropped as u64;
        self.acks_no_connection(key, att.ack_waits, &err);
        self.presumed_dead(key.clone(), att.endpoint, DeadCause::Connect(err));
    }

    /// Closes a stream no longer registered for `pki` once reading it is not paused (the
    /// module docs, "Retiring a connection"); at once if it is not paused now and was not
    /// resumed since (a stream resumed at any time before, its flag never cleared by a
    /// look, waits one `crossing_grace`: the price of not knowing whether its driver's
    /// backlog is in).
    fn retire(&mut self, pki: &PkiId, stream: StreamId, reason: CloseReason, now: Instant) {
        let grace = now + self.config.crossing_grace;
        let Some(c) = self
            .streams
            .get_mut(stream)
            .and_then(|s| s.conn_mut())
            // Resumed and not looked at since: the driver may not have handed in what it
            // read ahead yet (see `unblock`); it gets one grace for it.
            .filter(|c| c.paused() || c.resumed)
        else {
            self.close_stream(stream, reason);
            return;
        };
        c.grace = Some(grace);
        c.resumed = false;
        c.closing = Some(reason.clone());
        c.secondary = true;
        tracing::debug!(
            target: "fabric_gossip_core::store",
            pki_id = %pki,
            conn = %stream,
            reason = %reason,
            "connection retired while reading is paused: closed once resumed"
        );
        self.arm(grace, TimerKey::Grace(stream));
        if let Some(older) = self.store.retiring.insert(pki.clone(), stream) {
            self.evict_retired(older, reason);
        }
    }

    /// A second retired stream for one PKI-ID evicts the first (rule 3 of the module docs).
    /// If reading the first is still paused, what it carries unread is lost here: that is
    /// counted (`retired_closed_unread`), and the stream ends with an error status, so
    /// neither the driver nor the remote takes it for a clean end.
    fn evict_retired(&mut self, older: StreamId, reason: CloseReason) {
        let paused = self
            .streams
            .get(older)
            .and_then(|s| s.conn())
            .is_some_and(|c| c.paused());
        if !paused {
            self.close_stream(older, reason);
            return;
        }
        self.stats.retired_closed_unread += 1;
        tracing::debug!(
            target: "fabric_gossip_core::store",
            conn = %older,
            "a retired connection still paused was replaced again: closed with its unread messages"
        );
        let status = "connection replaced twice while reading it was paused: \
                      messages not yet read on it are discarded"
            .to_owned();
        self.close_stream_with(older, reason, Some(status));
    }

    /// The grace of a crossing loser or a retired stream is over: close it, unless reading
    /// it is paused (then look again after another `crossing_grace`, and never at `now`:
    /// a zero grace would re-arm the look inside the `handle_timeout` firing it, forever).
    pub(super) fn grace_over(&mut self, stream: StreamId, now: Instant) {
        let next = now + self.config.crossing_grace.max(crate::PAUSED_RELOOK_MIN);
        let Some(c) = self.streams.get_mut(stream).and_then(|s| s.conn_mut()) else {
            return;
        };
        if c.paused() || core::mem::take(&mut c.resumed) {
            c.grace = Some(next);
            self.arm(next, TimerKey::Grace(stream));
            return;
        }
        let reason = c.closing.clone().unwrap_or(CloseReason::CrossingLoser);
        self.close_stream(stream, reason);
    }

    /// Closes the connection(s) registered for `pki` (Fabric's `connectionStore.closeConnByPKIid`),
    /// and a retired one still open.
    pub(super) fn close_peer(&mut self, pki: &PkiId, reason: CloseReason) {
        if let Some(retired) = self.store.retiring.get(pki).copied() {
            self.close_stream(retired, reason.clone());
        }
        if let Some(reg) = self.store.registry.get(pki.as_bytes()).copied() {
            if let Some(sec) = reg.secondary {
                self.close_stream(sec, reason.clone());
            }
            self.close_stream(reg.primary, reason);
        }
    }

    /// Closes an established connection and unregisters it; promotes a crossing secondary
    /// if the primary goes. A stream still handshaking fails its handshake instead.
    pub(super) fn close_stream(&mut self, stream: StreamId, reason: CloseReason) {
        self.close_stream_with(stream, reason, None);
    }

    /// [`Comm::close_stream`], ending the stream with `status` (an error status for the
    /// remote) when given; otherwise only a malformed stream ends with one.
    fn close_stream_with(&mut self, stream: StreamId, reason: CloseReason, status: Option<String>) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let Phase::Established(c) = &s.phase else {
            // Not established: nothing registered.
            let err = match &reason {
                CloseReason::Stopped => HandshakeError::ShuttingDown,
                _ => HandshakeError::Cancelled,
            };
            self.fail_handshake(stream, err);
            return;
        };
        let pki = c.info.id.clone();
        let c_endpoint = c.info.endpoint.clone();
        let mut leftover = c.queue.pending() as u64;
        // Handed to the driver and not confirmed: written or not, the peer may never see
        // them, and no queue of ours holds them any more (none moves to a secondary).
        let unconfirmed = c.queue.len().in_flight as u64;
        let write_failed = matches!(reason, CloseReason::WriteFailed(_));
        // A stream we dialled that the remote ends with an error right after the
        // handshake: the remote refused us (Fabric's server writes its ConnEstablish,
        // then judges ours and returns the error). Fabric's dialler keeps such a
        // connection and presumes the peer dead at its next send, which fails; ours is
        // gone, so it is presumed dead now, or every send would dial and be refused again
        // unreported.
        let refused = match &reason {
            CloseReason::StreamError(status)
                if c.refusable_until.is_some_and(|t| self.now <= t) =>
            {
                Some(status.clone())
            }
            _ => None,
        };
        let c_blocked = c.paused();
        if self.store.retiring.get(&pki) == Some(&stream) {
            self.store.retiring.remove(&pki);
        }
        if let Some(reg) = self.store.registry.get(pki.as_bytes()).copied() {
            if reg.primary == stream {
                if let Some(sec) = reg.secondary {
                    self.store.set(pki.clone(), sec, None);
                    if let Some(sc) = self.streams.get_mut(sec).and_then(|s| s.conn_mut()) {
                        sc.secondary = false;
                        sc.grace = None;
                    }
                    if !write_failed {
                        let (buf, waiting) = self.take_queues(stream);
                        leftover = 0;
                        self.absorb(sec, buf, waiting);
                    }
                } else {
                    self.store.unregister(&pki);
                }
            } else if reg.secondary == Some(stream) {
                self.store.set(pki.clone(), reg.primary, None);
            }
        }
        if let Some(not_logged) = self.conn_log.admit(self.now) {
            tracing::info!(
                target: "fabric_gossip_core::store",
                pki_id = %pki,
                endpoint = %c_endpoint,
                conn = %stream,
                reason = %reason,
                dropped = leftover,
                unconfirmed,
                not_logged,
                "connection closed"
            );
        }
        self.stats.dropped_on_close += leftover;
        self.stats.unconfirmed_on_close += unconfirmed;
        self.stats.connections_closed += 1;
        if let CloseReason::WriteFailed(e) = &reason {
            self.presumed_dead(pki.clone(), c_endpoint.clone(), DeadCause::Write(e.clone()));
        }
        if let Some(status) = refused {
            let err = HandshakeError::RefusedByRemote { status };
            // A warning, as often as `RefusedLog` allows: it says why others refuse us. (tracing
            // takes a level only as a constant.)
            macro_rules! line {
                ($level:ident $(, $field:ident)?) => {
                    tracing::$level!(
                        target: "fabric_gossip_core::store",
                        pki_id = %pki,
                        endpoint = %c_endpoint,
                        conn = %stream,
                        error = %err,
                        $($field,)?
                        "the remote refused our connection after its handshake"
                    )
                };
            }
            match self.handshakes.refused_log.0.admit(self.now) {
                Some(not_logged) => line!(warn, not_logged),
                None => line!(debug),
            }
            self.stats.handshake_failed(&err);
            self.presumed_dead(pki.clone(), c_endpoint.clone(), DeadCause::Connect(err));
        }
        let error = status.or_else(|| match &reason {
            CloseReason::Malformed(e) => Some(e.clone()),
            _ => None,
        });
        self.drop_stream(stream, error);
        if c_blocked {
            self.demux.forget_stream(stream);
        }
        self.info_event(Event::Disconnected {
            conn: stream,
            pki_id: pki,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PkiId {
        PkiId::from(s)
    }

    #[test]
    fn the_first_stream_is_new() {
        assert_eq!(
            registration(&p("a"), &p("b"), true, None),
            Registration::New
        );
        assert_eq!(
            registration(&p("a"), &p("b"), false, None),
            Registration::New
        );
    }

    #[test]
    fn a_stream_from_the_same_side_replaces() {
        for inbound in [true, false] {
            assert_eq!(
                registration(&p("a"), &p("b"), inbound, Some(inbound)),
                Registration::Replaced
            );
        }
    }

    #[test]
    fn in_a_crossing_the_stream_opened_by_the_lower_pki_id_wins_on_both_sides() {
        // "a" < "b". On a's side, a's own (outbound) stream is the lower's; on b's side,
        // the stream a opened is inbound. (own, remote, new stream inbound, verdict)
        for (own, remote, inbound, verdict) in [
            ("a", "b", false, Registration::CrossingWinner),
            ("a", "b", true, Registration::CrossingLoser),
            ("b", "a", true, Registration::CrossingWinner),
            ("b", "a", false, Registration::CrossingLoser),
        ] {
            assert_eq!(
                registration(&p(own), &p(remote), inbound, Some(!inbound)),
                verdict,
                "{own} registering a stream from {remote}, inbound {inbound}"
            );
        }
    }

    #[test]
    fn both_sides_agree_on_the_winner_whatever_the_arrival_order() {
        let (a, b) = (p("10"), p("9"));
        // Name each stream by who opened it; each side sees one arrive first.
        for a_opened_first in [true, false] {
            // On a's side the stream a opened is outbound.
            let a_side_new_is_a_stream = !a_opened_first;
            let a_outcome = registration(
                &a,
                &b,
                !a_side_new_is_a_stream,
                Some(a_side_new_is_a_stream),
            );
            let a_keeps_a_stream =
                (a_outcome == Registration::CrossingWinner) == a_side_new_is_a_stream;
            for b_sees_a_stream_first in [true, false] {
                let new_is_a_stream = !b_sees_a_stream_first;
                let b_outcome = registration(&b, &a, new_is_a_stream, Some(!new_is_a_stream));
                let b_keeps_a_stream =
                    (b_outcome == Registration::CrossingWinner) == new_is_a_stream;
                assert_eq!(a_keeps_a_stream, b_keeps_a_stream);
                assert!(a_keeps_a_stream, "the lower PKI-ID (a) opened the winner");
            }
        }
    }
}
