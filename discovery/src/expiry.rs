//! Failure detection and forgetting: alive expiry, PresumedDead from comm, reconnect
//! attempts to dead members, and purges (long dead, identity switch, identity expiry).

use crate::event::{DeadReason, DiscoveryEvent, MemberInfo, PurgeReason};
use crate::machine::Discovery;
use crate::store::MemberState;
use fabric_gossip_core::{Comm, Instant, OpId, PkiId, RemotePeer, Security};
use std::collections::BTreeSet;

/// Dead members probed in one reconnect pass at most. Fabric probes every dead member at
/// every pass; members a hostile organization made up by the thousand (each a valid
/// certificate) then made a node dial 20,000 endpoints of the attacker's choosing every
/// 25 s until their purge 500 s later. Beyond this many, the next pass takes up where
/// this one stopped, so each dead member is still probed in turn.
pub const MAX_RECONNECT_PROBES: usize = 128;

impl Discovery {
    /// Every alive member silent for more than `alive_expiration` is declared dead, and
    /// every member whose certificate expired is purged (`periodicalCheckAlive`, plus the
    /// fix of Fabric 2.5.11).
    pub(crate) fn check_alive<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        for pki in self.membership.silent_since(now, self.cfg.alive_expiration) {
            self.stats.members_expired += 1;
            self.declare_dead(now, comm, &pki, DeadReason::Expired);
        }
        for pki in self.membership.identity_expired(now) {
            self.purge(now, comm, &pki, PurgeReason::IdentityExpired);
        }
    }

    /// Comm revalidated its identities (Fabric's `SuspectPeers`, after the provider's trust
    /// changed): every member whose identity the provider now refuses is purged, connected
    /// or not (Fabric's identity mapper drops them all), and the certstore forgets the
    /// identities it refuses, so it no longer serves them.
    pub(crate) fn revalidate_members<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        let security = comm.security();
        let refused = self.membership.select(|m| {
            m.identity
                .as_ref()
                .is_some_and(|id| security.validate_identity(id, now).is_err())
        });
        let dropped = self
            .certstore
            .identities
            .retain(|e| security.validate_identity(&e.cert, now).is_ok());
        self.stats.certstore.identities_refused_later += dropped;
        for pki in refused {
            self.purge(now, comm, &pki, PurgeReason::IdentityRefused);
        }
    }

    /// Comm could not reach the member: if alive, it dies now (Fabric's `handlePresumedDead`).
    pub(crate) fn presumed_dead<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        pki: &PkiId,
    ) {
        if self.membership.get(pki).is_some_and(|m| m.alive) {
            self.stats.members_presumed_dead += 1;
            self.declare_dead(now, comm, pki, DeadReason::PresumedDead);
        }
    }

    fn declare_dead<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        pki: &PkiId,
        reason: DeadReason,
    ) {
        if !self.membership.mark_dead(pki) {
            return;
        }
        if let Some(member) = self.member(pki) {
            self.emit(DiscoveryEvent::MemberDead { member, reason });
        }
        comm.close_conn(now, pki);
    }

    /// Forgets a member entirely and closes its connection. The message store keeps its
    /// last timestamp (a tombstone, for twice the store's TTL from now): another
    /// peer's response still listing it, dead, does not teach it back, while a newer alive
    /// message (the member returning) still does. Without one, a member known only from
    /// responses (whose alive messages never reached the store) came back with every
    /// response: an identity switch purged it again every reconnect interval, and peers
    /// re-taught each other a long-dead one, each resetting its `last_seen`, forever.
    /// Fabric has the same loop: its purge leaves its message store as it was, and
    /// members from responses are never in it.
    pub(crate) fn purge<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        pki: &PkiId,
        reason: PurgeReason,
    ) {
        let Some(state) = self.membership.remove(pki) else {
            return;
        };
        if !self.store.tombstone(pki, state.ts, now) {
            self.stats.tombstones_store_full += 1;
        }
        self.stats.count_purge(reason);
        self.probes.retain(|_, p| p != pki);
        let member = MemberInfo::from_state(pki, &state);
        self.emit(DiscoveryEvent::MemberPurged { member, reason });
        comm.close_conn(now, pki);
    }

    /// Whether a member is one of our bootstrap peers or an anchor peer (`connect_anchor`):
    /// such a member is never purged for being dead or evicted, so that it is probed until
    /// it comes back (Fabric's quirk Q8).
    ///
    /// Fabric goes by the endpoints the member's own alive message claims. An endpoint is
    /// what any member may claim, and an attack (2026-12-02) filled a node's membership
    /// with 10,000 members of a hostile organization, each claiming our bootstrap peer's
    /// endpoint: none could be evicted or purged, and our own organization's newcomers were
    /// refused for good. So a member is one here only if it is who answered our handshake
    /// at a bootstrap or anchor endpoint, or, at a configured bootstrap endpoint, a member
    /// of our organization (a bootstrap peer must be ours) that we reached there
    /// ([`MemberState::reached`]: a bootstrap peer renewed since it answered us): at most
    /// one member per anchor, and none of another organization at a bootstrap peer's
    /// endpoint. Without the last condition, an insider with our organization's CA made up
    /// 298 members claiming our bootstrap peer's endpoint (and an internal one answering
    /// nobody): none was purged, and the node dialled them 1,000 times a minute after the
    /// purge time (an attack, 2026-12-07).
    pub(crate) fn is_bootstrap_or_anchor(&self, m: &MemberState) -> bool {
        let pki = m.pki_id();
        if self
            .bootstraps
            .iter()
            .any(|b| b.identified.as_ref() == Some(pki))
        {
            return true;
        }
        let at = |e: &String| *e == m.endpoint || *e == m.internal_endpoint;
        m.reached && self.is_ours(m.org.as_ref()) && self.cfg.bootstrap.iter().any(at)
    }

    /// The store's periodic scan: forget de-dup entries past twice the TTL, and purge
    /// members dead for longer than the TTL, bootstrap and anchor peers excepted (Fabric
    /// keeps them to ping forever, quirk Q8: its store's expiry skips both).
    pub(crate) fn scan_store<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.store.scan(now);
        let ttl = self.cfg.msg_ttl();
        let long_dead = self
            .membership
            .select(|m| !m.alive && now - m.last_seen >= ttl && !self.is_bootstrap_or_anchor(m));
        for pki in long_dead {
            self.purge(now, comm, &pki, PurgeReason::LongDead);
        }
    }

    /// One reconnect pass (`periodicalReconnectToDead`): probe dead members, at most
    /// [`MAX_RECONNECT_PROBES`] of them, taking up after the last one the previous pass
    /// probed, so that every dead member is probed in turn; those that answer get a
    /// membership request.
    ///
    /// Bootstrap and anchor peers, and members we reached at their endpoint before
    /// ([`MemberState::reached`](crate::store::MemberState)), come first, each pass: a
    /// hostile organization's 3,000 made-up members, alive long enough to take every
    /// heartbeat's three targets, had every honest member declared dead everywhere, and
    /// then held them dead for 3.5 minutes after the attack ended, each waiting its turn
    /// behind the made-up ones, 128 a pass (an attack, 2026-12-07). Fabric probes every
    /// dead member every pass, so it has no such queue.
    pub(crate) fn reconnect_dead<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        let probing: BTreeSet<&PkiId> = self.probes.values().collect();
        // In PKI-ID order, which the cursors follow.
        let (first, rest): (Vec<PkiId>, Vec<PkiId>) = self
            .membership
            .select(|m| !m.alive && !m.preferred_endpoint().is_empty())
            .into_iter()
            .filter(|k| !probing.contains(k))
            .partition(|k| {
                self.membership
                    .get(k)
                    .is_some_and(|m| m.reached || self.is_bootstrap_or_anchor(m))
            });
        let mut chosen = in_turn(
            &first,
            &mut self.reconnect_first_cursor,
            MAX_RECONNECT_PROBES,
        );
        let room = MAX_RECONNECT_PROBES - chosen.len();
        chosen.extend(in_turn(&rest, &mut self.reconnect_cursor, room));
        let deferred = first.len() + rest.len() - chosen.len();
        self.stats.reconnect_deferred += deferred as u64;
        for pki in chosen {
            let Some(endpoint) = self
                .membership
                .get(&pki)
                .map(|m| m.preferred_endpoint().to_owned())
            else {
                continue;
            };
            match comm.probe(now, &RemotePeer::new(endpoint, pki.clone())) {
                Ok(op) => {
                    self.stats.reconnect_probes += 1;
                    self.probes.insert(op, pki);
                }
                Err(error) => self.stats.comm_refused("probe a dead member", &error),
            }
        }
    }

    /// A reconnect probe finished; a dead member that answers is asked for membership,
    /// which resurrects it once its response or request carries a newer alive message.
    pub(crate) fn reconnect_probed<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        op: OpId,
        ok: bool,
    ) {
        let Some(pki) = self.probes.remove(&op) else {
            return;
        };
        if !ok {
            return;
        }
        let Some(endpoint) = self
            .membership
            .get(&pki)
            .filter(|m| !m.alive)
            .map(|m| m.preferred_endpoint().to_owned())
        else {
            return;
        };
        // Not reached yet: a probe is a dial and a Ping, which whoever listens there
        // answers, whatever its identity. The request's connection authenticates the
        // member, and its `Connected` marks it reached (`handle_comm_event`).
        self.send_request(now, comm, &pki, &endpoint, 0);
    }
}

/// Up to `n` of `list` (sorted), starting after `cursor`, wrapping around; `cursor`
/// becomes the last one taken when some were left for a later turn, else `None`.
fn in_turn(list: &[PkiId], cursor: &mut Option<PkiId>, n: usize) -> Vec<PkiId> {
    let start = cursor
        .as_ref()
        .map_or(0, |c| list.partition_point(|k| k <= c));
    let chosen: Vec<PkiId> = list[start..]
        .iter()
        .chain(&list[..start])
        .take(n)
        .cloned()
        .collect();
    *cursor = if chosen.len() < list.len() {
        chosen.last().cloned().or_else(|| cursor.take())
    } else {
        None
    };
    chosen
}
