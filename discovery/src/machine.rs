//! The `Discovery` machine: its state, its public API and the `Layer` contract by which a
//! driver hosts it above the core.

use crate::alive::{SelfAlive, Timestamp};
use crate::bootstrap::{Bootstrap, MEMBERS_TARGET};
use crate::certstore::CertStore;
use crate::config::DiscoveryConfig;
use crate::endpoint_owners::EndpointOwners;
use crate::error::{AliveError, ConfigError};
use crate::event::{DeadReason, DiscoveryEvent, MemberInfo};
use crate::request::{Answered, Queued};
use crate::stats::DiscoveryStats;
use crate::store::{
    Change, MemberState, Membership, MsgStore, STORE_ENTRIES_PER_MEMBER, Share, Update, org_key,
};
use crate::validate::{AliveLimits, ParsedAlive, VerifiedIdentity, verify_alive};
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{
    Comm, Event, HandshakeError, Instant, Layer, LogBudget, OpId, PkiId, ReceivedMessage, Security,
    SubscriptionId,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

/// A member that may make room for a newcomer, ordered so that the greatest goes first:
/// dead before alive, then heard from least recently, then by PKI-ID; and its weight.
type Candidate<'a> = core::cmp::Reverse<(bool, Instant, &'a PkiId, usize)>;

/// The deadlines of the periodic tasks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Timers {
    pub(crate) heartbeat: Option<Instant>,
    pub(crate) sync: Option<Instant>,
    pub(crate) check: Option<Instant>,
    pub(crate) reconnect: Option<Instant>,
    pub(crate) scan: Option<Instant>,
}

/// Fabric's gossip membership protocol (`gossip/discovery`) as a pure, deterministic
/// machine stacked on one node's [`Comm`] through the [`Layer`] trait.
///
/// It sends and spreads the node's signed alive messages, joins through bootstrap peers,
/// answers and sends membership requests, validates every alive message it receives,
/// declares silent members dead, reconnects to them, and purges the long dead. It reads
/// no clock and draws no unseeded randomness: give it the same inputs and the same seed
/// and it makes the same calls into comm.
#[derive(Debug)]
pub struct Discovery {
    pub(crate) cfg: DiscoveryConfig,
    pub(crate) pki_id: PkiId,
    pub(crate) my_org: Option<Bytes>,
    pub(crate) me: Option<SelfAlive>,
    pub(crate) sub: Option<SubscriptionId>,
    pub(crate) membership: Membership,
    pub(crate) store: MsgStore,
    pub(crate) stats: DiscoveryStats,
    pub(crate) events: VecDeque<DiscoveryEvent>,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) bootstraps: Vec<Bootstrap>,
    /// Reconnect probes in flight: operation → dead member.
    pub(crate) probes: BTreeMap<OpId, PkiId>,
    /// The last dead member the previous reconnect pass probed, when it left some for the
    /// next (see `MAX_RECONNECT_PROBES`).
    pub(crate) reconnect_cursor: Option<PkiId>,
    /// The same, among the dead members probed first (bootstrap and anchor peers, members
    /// reached before).
    pub(crate) reconnect_first_cursor: Option<PkiId>,
    /// Each recent requester's bucket of answers and its nonces answered lately (see
    /// `ANSWER_BURST` and `MIN_ANSWER_INTERVAL`).
    pub(crate) answered: BTreeMap<PkiId, Answered>,
    /// Responses queued for requesters that may not have taken them yet, oldest first
    /// (see `max_response_backlog`).
    pub(crate) backlog: VecDeque<Queued>,
    /// Organizations other than ours whose requesters asked within [`RESPONSE_STALL`],
    /// with when they last did: they share what the backlog leaves other organizations
    /// (see `max_response_backlog`).
    ///
    /// [`RESPONSE_STALL`]: crate::RESPONSE_STALL
    pub(crate) asking: BTreeMap<Bytes, Instant>,
    pub(crate) timers: Timers,
    pub(crate) stopped: bool,
    /// The identity pull (Fabric's certstore).
    pub(crate) certstore: CertStore,
    /// The lines about alive messages of another node with our PKI-ID: one a second
    /// (see `Discovery::about_me`), and how many were logged.
    pub(crate) impostor_log: LogBudget,
    pub(crate) impostor_lines: u64,
    /// Warnings of forged messages (a bad signature, an identity that fails its checks, a
    /// membership request carrying another member's alive message): one a second.
    pub(crate) forgery_log: LogBudget,
    pub(crate) forgery_lines: u64,
    /// Warnings of membership requests the disclosure policy refuses (Fabric's "Got a
    /// membership request from a peer that shouldn't have sent one"): one a second.
    pub(crate) refusal_log: LogBudget,
    /// The member lines (alive, restarted, dead, purged): 20 a second, each saying how
    /// many before it were not logged. A hostile organization's 3,000 made-up members,
    /// learnt, presumed dead and resurrected over and over, wrote 100,600 lines (26 MB) in
    /// 110 s (an attack, 2026-12-07). Every event is still counted and delivered.
    pub(crate) member_log: LogBudget,
    pub(crate) member_lines: u64,
    /// Endpoints where a dial of ours reached another member than the one it was for:
    /// no other member's alive message claiming them is taken for a while.
    pub(crate) endpoint_owners: EndpointOwners,
    /// Warnings of such claims refused: one a second, and how many were logged.
    pub(crate) claim_log: LogBudget,
    pub(crate) claim_lines: u64,
    /// The time of the latest call into the layer, for the budgets of lines written
    /// where no time is at hand.
    pub(crate) seen_now: Option<Instant>,
}

/// What an alive message would do to membership, judged before it is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It may change membership: verify it.
    Changes,
    /// Membership holds the member at that timestamp or newer (or it is a dead-list
    /// entry for a known member): nothing would change.
    Stale,
    /// A new member, and membership has no room.
    Full,
}

impl Discovery {
    /// A membership layer with `cfg`; it starts when the driver calls [`Layer::start`].
    /// Refuses what [`DiscoveryConfig::validate`] refuses. On tonic, host it with
    /// `NodeBuilder::try_layer`, and this error is what `start` returns. The simulator's
    /// factory (`NodeSpec::layer`, called at every restart too) cannot return it, so it
    /// ends up calling `expect`: validate the configuration beforehand (with a stand-in
    /// endpoint if the real one is the node's), and the `expect` cannot fire.
    pub fn new(cfg: DiscoveryConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Discovery {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            store: MsgStore::new(
                cfg.msg_ttl(),
                cfg.max_members.saturating_mul(STORE_ENTRIES_PER_MEMBER),
            ),
            cfg,
            pki_id: PkiId::default(),
            my_org: None,
            me: None,
            sub: None,
            membership: Membership::default(),
            stats: DiscoveryStats::default(),
            events: VecDeque::new(),
            bootstraps: Vec::new(),
            probes: BTreeMap::new(),
            reconnect_cursor: None,
            reconnect_first_cursor: None,
            answered: BTreeMap::new(),
            backlog: VecDeque::new(),
            asking: BTreeMap::new(),
            timers: Timers::default(),
            stopped: false,
            certstore: CertStore::default(),
            impostor_log: LogBudget::per_second(1),
            impostor_lines: 0,
            forgery_log: LogBudget::per_second(1),
            forgery_lines: 0,
            refusal_log: LogBudget::per_second(1),
            member_log: LogBudget::default(),
            member_lines: 0,
            endpoint_owners: EndpointOwners::default(),
            claim_log: LogBudget::per_second(1),
            claim_lines: 0,
            seen_now: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> &DiscoveryStats {
        &self.stats
    }

    /// The subscription the layer made in `start` (its messages belong to it).
    pub fn subscription(&self) -> Option<SubscriptionId> {
        self.sub
    }

    /// Our own incarnation and the sequence of the last alive message we made.
    pub fn self_timestamp(&self) -> Option<Timestamp> {
        self.me.as_ref().map(|m| Timestamp {
            inc: m.inc,
            seq: m.seq,
        })
    }

    /// The alive view (Fabric's `GetMembership`), in PKI-ID order; ourselves excluded, as
    /// in Fabric.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.member_infos(true)
    }

    /// What known members, alive and dead, hold in bytes as `max_membership_bytes`
    /// counts it: how near membership is to that bound.
    pub fn membership_bytes(&self) -> usize {
        self.membership.bytes()
    }

    /// Dead members still remembered (reconnect targets), in PKI-ID order.
    pub fn dead_members(&self) -> Vec<MemberInfo> {
        self.member_infos(false)
    }

    /// The alive or the dead members, in PKI-ID order.
    fn member_infos(&self, alive: bool) -> Vec<MemberInfo> {
        let mut v: Vec<MemberInfo> = self
            .membership
            .iter()
            .filter(|(_, m)| m.alive == alive)
            .map(|(k, m)| MemberInfo::from_state(k, m))
            .collect();
        v.sort_unstable_by(|a, b| a.pki_id.cmp(&b.pki_id));
        v
    }

    /// One member, alive or dead.
    pub fn member(&self, pki_id: &PkiId) -> Option<MemberInfo> {
        self.membership
            .get(pki_id)
            .map(|m| MemberInfo::from_state(pki_id, m))
    }

    /// The latest signed alive envelope we hold for a member (what responses disclose).
    pub fn member_envelope(&self, pki_id: &PkiId) -> Option<&Envelope> {
        self.membership.get(pki_id).map(|m| &m.envelope)
    }

    /// The next event for the application (also [`Layer::poll_event`]).
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }

    pub(crate) fn emit(&mut self, ev: DiscoveryEvent) {
        let bootstrap = matches!(
            ev,
            DiscoveryEvent::BootstrapJoined { .. } | DiscoveryEvent::BootstrapFailed { .. }
        );
        let logged = match self.seen_now {
            Some(now) if !bootstrap => self.member_log.admit(now),
            _ => Some(0),
        };
        if let Some(not_logged) = logged {
            self.member_lines += u64::from(!bootstrap);
            trace_event(&ev, not_logged);
        }
        if self.events.len() >= self.cfg.max_events {
            self.stats.events_dropped += 1;
        } else {
            self.events.push_back(ev);
        }
    }

    /// The identity to verify a member's messages with: the one membership holds (unless
    /// expired), else the one the identity pull brought, else the one comm learnt in a
    /// handshake.
    pub(crate) fn known_identity<S: Security>(
        &self,
        comm: &Comm<S>,
        pki_id: &PkiId,
        now: Instant,
    ) -> Option<Bytes> {
        if let Some(m) = self.membership.get(pki_id)
            && let Some(id) = &m.identity
            && m.expires.is_none_or(|e| e > now)
        {
            return Some(id.clone());
        }
        if let Some(id) = self.pulled_identity(pki_id, now) {
            return Some(id.clone());
        }
        comm.identity_of(pki_id).cloned()
    }

    /// The organization of a PKI-ID: from membership, else from comm's identity store.
    pub(crate) fn org_of<S: Security>(&self, comm: &Comm<S>, pki_id: &PkiId) -> Option<Bytes> {
        if let Some(m) = self.membership.get(pki_id)
            && m.org.is_some()
        {
            return m.org.clone();
        }
        comm.identity_of(pki_id)
            .and_then(|id| comm.security().organization_of(id))
    }

    /// The size limits of alive messages for this node (see [`AliveLimits`]).
    pub(crate) fn alive_limits<S: Security>(&self, comm: &Comm<S>) -> AliveLimits {
        AliveLimits::new(comm.config().max_identity_size, self.cfg.max_metadata_size)
    }

    /// Validates an alive message's signatures against the right identity, and shares an
    /// identity checked anew with comm.
    pub(crate) fn verify<S: Security>(
        &mut self,
        comm: &mut Comm<S>,
        parsed: &ParsedAlive,
        env: &Envelope,
        now: Instant,
    ) -> Result<VerifiedIdentity, AliveError> {
        let known = self.known_identity(comm, &parsed.pki_id, now);
        let r = verify_alive(comm.security(), parsed, env, known.as_ref(), now);
        match &r {
            Ok(id) => {
                self.certstore.identities.touch(&parsed.pki_id, now);
                // Fabric verifies through the identity mapper it shares with comm, so a
                // verified alive message is a use of comm's copy too: without it comm
                // purged a live member's identity an hour after its last handshake.
                let _ = comm.use_identity(now, &parsed.pki_id);
                // An identity membership, the pull or comm already held was shared when it
                // was learnt: only one checked now is new to comm.
                if known.as_ref() != Some(&id.identity) {
                    share_identity(comm, now, &parsed.pki_id, &id.identity);
                }
            }
            Err(e) => {
                self.stats.count_refused(e);
                // A forgery is for the operator to see, as Fabric warns "Failed
                // verifying"; an attack (2026-12-07) forged alive messages counted in the
                // metrics and logged nothing at the default level. One a second.
                if matches!(
                    e,
                    AliveError::BadSignature(_)
                        | AliveError::BadIdentity(_)
                        | AliveError::IdentityMismatch
                ) && let Some(not_logged) = self.forgery_log.admit(now)
                {
                    self.forgery_lines += 1;
                    tracing::warn!(
                        about = %parsed.pki_id,
                        endpoint = %parsed.endpoint,
                        error = %e,
                        not_logged,
                        "alive message refused: forged, or its identity fails its checks"
                    );
                }
            }
        }
        r
    }

    /// Whether membership may take one more member holding `bytes`
    /// (`max_members`, `max_membership_bytes`).
    pub(crate) fn has_room(&self, bytes: usize) -> bool {
        self.room_in(self.membership.len(), self.membership.bytes(), bytes)
    }

    /// Whether a membership of `members` members holding `held` bytes may take one more
    /// holding `bytes`.
    pub(crate) fn room_in(&self, members: usize, held: usize, bytes: usize) -> bool {
        members < self.cfg.max_members
            && held.saturating_add(bytes) <= self.cfg.max_membership_bytes
    }

    /// Whether `org` is our own organization (an unknown one never is).
    pub(crate) fn is_ours(&self, org: Option<&Bytes>) -> bool {
        org.is_some() && org == self.my_org.as_ref()
    }

    /// Whether an alive message about `pki_id` at `ts` would change membership, read
    /// before anything of it is verified: a response's entries that would change nothing
    /// (a member known at that timestamp or newer, a dead-list entry for a known member,
    /// a new member when there is no room for any) are skipped unverified, as they would
    /// be dropped after. Fabric verifies them all, and 10,000 such entries resent held
    /// the node's lock 1.2 s a time.
    ///
    /// A dead-list entry for a member we purged (its tombstone stands) changes nothing
    /// either, however new its timestamp: it says nothing of the member being alive, and
    /// two nodes that saw different last rounds of a hostile organization's made-up
    /// members taught each other 3,000 of them back after each purge, for 25 minutes (an
    /// attack, 2026-12-07). A newer alive message (the member returning) still teaches it.
    pub(crate) fn would_change(&self, pki_id: &PkiId, ts: Timestamp, dead_list: bool) -> Fate {
        match self.membership.get(pki_id) {
            Some(_) if dead_list => Fate::Stale,
            None if dead_list && self.store.is_tombstone(pki_id) => Fate::Stale,
            Some(m) if m.ts >= ts => Fate::Stale,
            Some(_) => Fate::Changes,
            None if self.has_room(0) => Fate::Changes,
            None => Fate::Full,
        }
    }

    /// Applies a validated alive message to membership (`handleAliveMessage`) and reports
    /// what changed; one from a response's dead list (`from_dead_list`) only teaches an
    /// unknown member, as dead. One claiming an endpoint noted as another member's changes
    /// nothing (see `endpoint_owners`).
    pub(crate) fn learn<S: Security>(
        &mut self,
        comm: &mut Comm<S>,
        parsed: &ParsedAlive,
        id: &VerifiedIdentity,
        env: &Envelope,
        now: Instant,
        from_dead_list: bool,
    ) -> Change {
        if self.endpoint_taken(now, parsed) {
            return Change::Stale;
        }
        let update = alive_update(comm, parsed, id, env);
        if !self.membership.contains(&parsed.pki_id) {
            let weight = update.weight();
            if !self.has_room(weight) {
                if from_dead_list || !self.make_room(now, comm, update.org.as_ref(), weight) {
                    self.stats.members_refused_full += 1;
                    return Change::Stale;
                }
                return self.apply(&update, parsed, now);
            }
        }
        if from_dead_list {
            if self.membership.learn_dead(&update, now) {
                self.stats.members_learned += 1;
                let member = self.member(&parsed.pki_id).expect("just inserted as dead");
                self.emit(DiscoveryEvent::MemberDead {
                    member,
                    reason: DeadReason::Reported,
                });
                return Change::Learned;
            }
            return Change::Stale;
        }
        self.apply(&update, parsed, now)
    }

    /// The organization an alive message claims, read without any check (no certificate
    /// parsed: a response may carry thousands of newcomers' identities): of its embedded
    /// identity, else of the one we know for its PKI-ID.
    pub(crate) fn claimed_org<S: Security>(
        &self,
        comm: &Comm<S>,
        parsed: &ParsedAlive,
        now: Instant,
    ) -> Option<Bytes> {
        let identity = if parsed.identity.is_empty() {
            self.known_identity(comm, &parsed.pki_id, now)?
        } else {
            parsed.identity.clone()
        };
        comm.security().claimed_organization(&identity)
    }

    /// How much of membership `share` takes, as one number comparable between
    /// organizations: the larger of its fraction of `max_members` and its fraction of
    /// `max_membership_bytes` (its dominant share), scaled by both bounds so that no
    /// division is needed.
    pub(crate) fn usage(&self, share: Share) -> u128 {
        let members = self.cfg.max_members.max(1) as u128;
        let bytes = self.cfg.max_membership_bytes.max(1) as u128;
        (share.members as u128 * bytes).max(share.bytes as u128 * members)
    }

    /// Whether a newcomer of `org`, which would hold `newcomer` with it, may take the place
    /// of a member of the organization `victims` (its name and share) in a full membership. One of our own
    /// organization may take any other's; one of another organization that of an
    /// organization whose share is larger than its own would be with the newcomer, so
    /// that no organization ends up with a smaller share than the one it displaced. Shares
    /// are dominant shares ([`Discovery::usage`]): a hostile organization whose members
    /// are few but large (a CA can mint 64 KiB certificates) fills the byte bound as fast
    /// as many small ones fill the count. A newcomer of no known organization may take no
    /// place, and members of no known organization count as one organization (the empty
    /// name). Beyond Fabric, which has no bound on membership: without shares, a hostile
    /// organization able to mint valid certificates could fill membership and keep every
    /// newcomer of the others out.
    pub(crate) fn may_take(&self, org: &Bytes, newcomer: Share, victims: (&Bytes, Share)) -> bool {
        let (name, share) = victims;
        if name == org || self.is_ours(Some(name)) || share.members == 0 {
            return false;
        }
        self.is_ours(Some(org)) || self.usage(share) > self.usage(newcomer)
    }

    /// What `org` would hold with a newcomer holding `weight` bytes.
    pub(crate) fn with_newcomer(&self, org: &Bytes, weight: usize) -> Share {
        let share = self.membership.org_share(Some(org));
        Share {
            members: share.members + 1,
            bytes: share.bytes + weight,
        }
    }

    /// Whether a newcomer of `org` could take a place in a full membership, judged by
    /// the organizations' shares alone and the newcomer's size unknown (cheap enough to
    /// ask of every unverified entry of a response).
    pub(crate) fn may_displace(&self, org: Option<&Bytes>) -> bool {
        let Some(org) = org else {
            return false;
        };
        let newcomer = self.with_newcomer(org, 0);
        self.membership
            .org_shares()
            .any(|victims| self.may_take(org, newcomer, victims))
    }

    /// The members a newcomer of `org` holding `weight` bytes would leave room for, all
    /// chosen before any goes: each in turn of the organization with the largest share it
    /// may take, as that organization's share would be with the ones already chosen gone,
    /// and of that organization the member dead longest, else the one heard from least
    /// recently; never a bootstrap or anchor peer. `None` if they cannot make room (then
    /// nobody is evicted).
    pub(crate) fn eviction_victims(
        &self,
        org: Option<&Bytes>,
        weight: usize,
    ) -> Option<Vec<PkiId>> {
        let org = org?;
        let newcomer = self.with_newcomer(org, weight);
        let (mut members, mut held) = (self.membership.len(), self.membership.bytes());
        if self.room_in(members, held, weight) {
            return Some(Vec::new());
        }
        // The organizations it may take now: only these can give victims, as shares only
        // shrink while victims are chosen (so `may_take` can only turn false).
        let mut orgs: Vec<(&Bytes, Share, Vec<Candidate>)> = self
            .membership
            .org_shares()
            .filter(|&(o, share)| self.may_take(org, newcomer, (o, share)))
            .map(|(o, share)| (o, share, Vec::new()))
            .collect();
        if orgs.is_empty() {
            return None;
        }
        for (k, m) in self.membership.iter() {
            if self.is_bootstrap_or_anchor(m) {
                continue;
            }
            let name = org_key(m.org.as_ref());
            if let Some((_, _, c)) = orgs.iter_mut().find(|(o, _, _)| o.as_ref() == name) {
                c.push(core::cmp::Reverse((m.alive, m.last_seen, k, m.weight())));
            }
        }
        // Each organization's candidates in a heap whose top goes next: dead before alive,
        // then heard from least recently, then by PKI-ID. Built in linear time, so one
        // victim costs one pass over the members, as a search did; searching all of them
        // for each victim took 915 ms to choose 270 of 10,000 (`cargo bench -p
        // fabric-gossip-discovery -- evict`).
        let mut orgs: Vec<(&Bytes, Share, BinaryHeap<Candidate>)> = orgs
            .into_iter()
            .map(|(o, share, c)| (o, share, BinaryHeap::from(c)))
            .collect();
        let mut chosen: Vec<PkiId> = Vec::new();
        while !self.room_in(members, held, weight) {
            // Of the organizations it may take, the one with the largest share (as it
            // would be with the ones already chosen gone), ties to the first candidate.
            let (_, i) = orgs
                .iter()
                .enumerate()
                .filter(|(_, (o, share, _))| self.may_take(org, newcomer, (o, *share)))
                .filter_map(|(i, (_, share, c))| {
                    let &core::cmp::Reverse((alive, last_seen, k, _)) = c.peek()?;
                    Some((
                        (core::cmp::Reverse(self.usage(*share)), alive, last_seen, k),
                        i,
                    ))
                })
                .min()?;
            let (_, share, c) = &mut orgs[i];
            let core::cmp::Reverse((_, _, victim, w)) = c.pop()?;
            share.members -= 1;
            share.bytes -= w;
            members -= 1;
            held -= w;
            chosen.push(victim.clone());
        }
        Some(chosen)
    }

    /// Makes room for a newcomer of `org` holding `bytes` by purging members of the
    /// organizations it may displace (`PurgeReason::Evicted`), or purges nobody if that
    /// cannot make room. Whether there is room now.
    fn make_room<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        org: Option<&Bytes>,
        bytes: usize,
    ) -> bool {
        let Some(victims) = self.eviction_victims(org, bytes) else {
            return false;
        };
        for victim in &victims {
            self.purge(now, comm, victim, crate::event::PurgeReason::Evicted);
        }
        self.has_room(bytes)
    }

    /// [`Membership::apply_alive`], with its counters and event.
    fn apply(&mut self, update: &Update<'_>, parsed: &ParsedAlive, now: Instant) -> Change {
        let change = self.membership.apply_alive(update, now);
        match change {
            Change::Learned | Change::Resurrected => {
                let resurrected = change == Change::Resurrected;
                if resurrected {
                    self.stats.members_resurrected += 1;
                } else {
                    self.stats.members_learned += 1;
                }
                let member = self
                    .member(&parsed.pki_id)
                    .expect("just inserted or updated");
                self.emit(DiscoveryEvent::MemberAlive {
                    member,
                    resurrected,
                });
            }
            Change::Restarted { previous_inc } => {
                let member = self.member(&parsed.pki_id).expect("just updated");
                self.emit(DiscoveryEvent::MemberRestarted {
                    member,
                    previous_incarnation: previous_inc,
                });
            }
            Change::Refreshed => {}
            Change::Stale => self.stats.alive_stale += 1,
        }
        change
    }

    /// Up to `k` distinct random alive members, never `except`, each mapped through
    /// `keep` (given the member's slot and state; `None`: not eligible). A large view is sampled by a bounded number of
    /// random draws from the alive list; a small one, or one where too few draws were
    /// eligible, is shuffled whole (a partial Fisher–Yates on the seeded generator), so
    /// the cost does not grow with the view unless most members are ineligible.
    pub(crate) fn pick_alive<T>(
        &mut self,
        k: usize,
        except: Option<&PkiId>,
        keep: impl Fn(usize, &MemberState) -> Option<T>,
    ) -> Vec<T> {
        let alive = self.membership.alive();
        let n = alive.len();
        let eligible = |i: usize| {
            let slot = alive[i];
            let m = self.membership.at(slot)?;
            if Some(m.pki_id()) == except {
                return None;
            }
            keep(slot, m)
        };
        if n > 4 * k {
            let mut drawn: Vec<usize> = Vec::with_capacity(k);
            let mut chosen = Vec::with_capacity(k);
            for _ in 0..8 * k {
                if chosen.len() == k {
                    return chosen;
                }
                let i = (self.rng.next_u64() % n as u64) as usize;
                if drawn.contains(&i) {
                    continue;
                }
                drawn.push(i);
                chosen.extend(eligible(i));
            }
            if chosen.len() == k {
                return chosen;
            }
        }
        let mut candidates: Vec<T> = (0..n).filter_map(eligible).collect();
        let k = k.min(candidates.len());
        for i in 0..k {
            let span = (candidates.len() - i) as u64;
            let j = i + (self.rng.next_u64() % span) as usize;
            candidates.swap(i, j);
        }
        candidates.truncate(k);
        candidates
    }

    /// The next deadline (also [`Layer::poll_timeout`]; inherent so that callers need
    /// not name the security type).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let t = &self.timers;
        [t.heartbeat, t.sync, t.check, t.reconnect, t.scan]
            .into_iter()
            .flatten()
            .chain(self.bootstraps.iter().filter_map(Bootstrap::deadline))
            .chain(self.certstore.deadline())
            .min()
    }
}

impl<S: Security> Layer<S> for Discovery {
    type Event = DiscoveryEvent;

    fn start(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.seen_now = Some(now);
        if self.me.is_some() {
            return;
        }
        self.pki_id = comm.pki_id().clone();
        self.my_org = comm.security().organization_of(comm.identity());
        self.me = Some(SelfAlive::new(
            self.pki_id.clone(),
            self.cfg.incarnation.unwrap_or(now.as_unix_nanos()),
            self.cfg.external_endpoint.clone(),
            self.cfg.internal_endpoint.clone(),
            self.cfg.metadata.clone(),
            now,
            self.cfg.publish_cert_period,
        ));
        // An incarnation from a clock that is not the wall clock (ticks since the process
        // started) is no newer after a restart: the peers that knew us refuse every alive
        // message of ours as stale, and nothing else says why (a third driver's trial).
        if self.cfg.incarnation.is_none() && now < crate::PLAUSIBLE_WALL_CLOCK {
            tracing::warn!(
                %now,
                "the driver's clock is not the wall clock (an instant before 2017): our \
                 incarnation, the instant we start, will be no newer after a restart, and \
                 peers that knew us will refuse our alive messages as stale"
            );
        }
        // Fabric's `New` warns of it once, in these words.
        if self.cfg.external_endpoint.is_empty() {
            tracing::warn!(
                internal_endpoint = %self.cfg.internal_endpoint,
                "External endpoint is empty, peer will not be accessible outside of its \
                 organization"
            );
        }
        let pull = self.cfg.certstore.enabled;
        let accept = move |m: &ReceivedMessage| takes(&m.message, pull);
        match comm.subscribe(Box::new(accept)) {
            Ok(sub) => self.sub = Some(sub),
            Err(error) => {
                self.stats.comm_refused("subscribe", &error);
                self.stopped = true;
                return;
            }
        }
        self.bootstraps = self
            .cfg
            .bootstrap
            .iter()
            .filter(|ep| !self.cfg.is_my_own_endpoint(ep))
            .map(|ep| Bootstrap::new(ep.clone(), now))
            .collect();
        self.timers = Timers {
            heartbeat: Some(now + self.cfg.alive_interval),
            sync: Some(now),
            check: Some(now + self.cfg.expiration_check_interval()),
            reconnect: Some(now),
            scan: Some(now + self.cfg.msg_ttl() / 100),
        };
        self.certstore_start(now, comm);
        self.handle_timeout(now, comm);
    }

    fn handle_comm_event(&mut self, now: Instant, comm: &mut Comm<S>, event: &Event) {
        self.seen_now = Some(now);
        if self.stopped || self.me.is_none() {
            return;
        }
        match event {
            Event::PresumedDead(dead) => {
                // Our dial for a member reached ourselves: its endpoint is ours (a member
                // naming it: an insider, or our own identity before a renewal), noted as
                // another member's is, or the member is dialled again for each of its
                // alive messages.
                if let fabric_gossip_core::DeadCause::Connect(HandshakeError::OwnPkiId) =
                    &dead.cause
                    && !dead.pki_id.is_empty()
                {
                    let me = comm.pki_id().clone();
                    self.note_endpoint_owner(now, &dead.endpoint, &me, &dead.pki_id);
                    // A member of our organization there is who we were: we restarted at
                    // this endpoint with another identity. Fabric, which lets a dial reach
                    // itself, sees a PKI-ID change within the organization and purges the
                    // old one (`createConnection`'s `identityChanges`); kept presumed dead,
                    // it was probed (a dial of ourselves) each reconnect pass until the
                    // long-dead purge, and passed on in our dead list.
                    let org = self.org_of(comm, &dead.pki_id);
                    if self.is_ours(org.as_ref()) {
                        return self.purge(
                            now,
                            comm,
                            &dead.pki_id,
                            crate::event::PurgeReason::IdentitySwitch,
                        );
                    }
                }
                self.presumed_dead(now, comm, &dead.pki_id)
            }
            Event::IdentitySwitch(switched) => {
                self.note_endpoint_owner(now, &switched.endpoint, &switched.new, &switched.old);
                self.purge(
                    now,
                    comm,
                    &switched.old,
                    crate::event::PurgeReason::IdentitySwitch,
                )
            }
            // Another peer answered where we expected this member, and comm refused it (of
            // another organization than the member's, or the member's identity unknown to
            // comm), as Fabric does: the member stays, to be dialled there again.
            Event::HandshakeFailed {
                remote,
                inbound: false,
                error: HandshakeError::UnexpectedPeer { expected, actual },
                ..
            } => self.note_endpoint_owner(now, remote, actual, expected),
            Event::Disconnected {
                pki_id,
                reason: fabric_gossip_core::CloseReason::IdentityExpired,
                ..
            } => self.purge(
                now,
                comm,
                pki_id,
                crate::event::PurgeReason::IdentityExpired,
            ),
            Event::Disconnected {
                pki_id,
                reason: fabric_gossip_core::CloseReason::IdentityRefused(_),
                ..
            } => self.purge(
                now,
                comm,
                pki_id,
                crate::event::PurgeReason::IdentityRefused,
            ),
            Event::IdentitiesRevalidated { .. } => self.revalidate_members(now, comm),
            Event::IdentityPurged {
                pki_id,
                reason: fabric_gossip_core::CloseReason::IdentityUnused,
            } => self.identity_unused(now, pki_id),
            Event::HandshakeDone { op, result } => {
                self.bootstrap_identified(now, comm, *op, result)
            }
            Event::ProbeDone { op, result } => {
                self.reconnect_probed(now, comm, *op, result.is_ok())
            }
            // A member we dialled answered where we would probe it (see `reconnect_dead`).
            Event::Connected {
                info,
                inbound: false,
                ..
            } => {
                self.membership.mark_reached(&info.id, &info.endpoint);
                let until = now + self.cfg.alive_expiration;
                self.endpoint_owners
                    .reached(&info.endpoint, &info.id, until);
            }
            Event::Stopped => self.stopped = true,
            _ => {}
        }
    }

    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        self.sub == Some(sub)
    }

    fn handle_message(&mut self, now: Instant, comm: &mut Comm<S>, msg: ReceivedMessage) {
        self.seen_now = Some(now);
        if self.stopped || self.me.is_none() {
            return;
        }
        if msg.message.tag != gossip_message::Tag::Empty as i32 {
            self.stats.illegal_tag += 1;
            return;
        }
        // Each kind is counted here, then handled with its content already matched; each
        // is a `debug` line, which an operator turning on `gossip.discovery=debug` looks
        // for (a day-2 trial found none: only member events, at info).
        match &msg.message.content {
            Some(gossip_message::Content::AliveMsg(a)) => {
                self.stats.alive_received += 1;
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let about = a.membership.as_ref().map(|m| PkiId::new(m.pki_id.clone()));
                    tracing::debug!(from = %msg.sender(), about = ?about, "alive message received");
                }
                self.handle_direct_alive(now, comm, &msg);
            }
            Some(gossip_message::Content::MemReq(req)) => {
                self.stats.requests_received += 1;
                tracing::debug!(from = %msg.sender(), "membership request received");
                self.handle_request(now, comm, &msg, req);
            }
            Some(gossip_message::Content::MemRes(res)) => {
                self.stats.responses_received += 1;
                tracing::debug!(
                    from = %msg.sender(),
                    alive = res.alive.len(),
                    dead = res.dead.len(),
                    "membership response received"
                );
                self.handle_response(now, comm, &msg, res);
            }
            Some(_) => self.handle_pull(now, comm, &msg),
            None => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<S>) {
        self.seen_now = Some(now);
        if self.stopped || self.me.is_none() {
            return;
        }
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.timers.sync) {
            self.timers.sync = Some(now + self.cfg.pull_interval);
            self.sync(now, comm);
        }
        if due(self.timers.reconnect) {
            self.timers.reconnect = Some(now + self.cfg.reconnect_interval);
            self.reconnect_dead(now, comm);
        }
        if due(self.timers.check) {
            self.timers.check = Some(now + self.cfg.expiration_check_interval());
            self.check_alive(now, comm);
        }
        if due(self.timers.scan) {
            self.timers.scan = Some(now + (self.cfg.msg_ttl() / 100).max(self.cfg.alive_interval));
            self.scan_store(now, comm);
        }
        if due(self.timers.heartbeat) {
            self.timers.heartbeat = Some(now + self.cfg.alive_interval);
            self.heartbeat(now, comm);
        }
        self.bootstrap_tick(now, comm);
        self.certstore_tick(now, comm);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Discovery::poll_timeout(self)
    }

    fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        Discovery::poll_event(self)
    }
}

/// Logs a membership change (target [`MEMBERS_TARGET`], inside Fabric's `gossip.discovery`):
/// what an operator greps a peer's log for, at the levels Fabric uses for the same news: a
/// member found dead is a warning there ("Haven't heard from …", "Closing connection to
/// …"), so that a peer run at `warning` still says when members go.
fn trace_event(ev: &DiscoveryEvent, not_logged: u64) {
    /// One member line at `$level`, with every field an operator needs to find it: the
    /// external endpoint and the MSP too, since another organization's member has no
    /// internal endpoint here (its secret is stripped), and a line with none named nothing
    /// an operator could find (a day-2 trial).
    macro_rules! member_line {
        ($level:ident, $member:expr, $msg:literal $(, $($field:tt)+)?) => {
            tracing::$level!(
                target: MEMBERS_TARGET,
                pki_id = %$member.pki_id,
                msp_id = $member.org.as_deref().unwrap_or(""),
                endpoint = %$member.endpoint,
                internal_endpoint = %$member.internal_endpoint,
                $($($field)+,)?
                not_logged,
                $msg
            )
        };
    }
    match ev {
        DiscoveryEvent::MemberAlive {
            member,
            resurrected,
        } => member_line!(info, member, "member alive", resurrected = *resurrected),
        DiscoveryEvent::MemberRestarted {
            member,
            previous_incarnation,
        } => member_line!(
            info,
            member,
            "member restarted",
            inc = member.timestamp.inc,
            previous_inc = *previous_incarnation
        ),
        // Fabric learns a member reported dead by a peer silently (its debug level).
        DiscoveryEvent::MemberDead {
            member,
            reason: DeadReason::Reported,
        } => member_line!(info, member, "member dead", reason = ?DeadReason::Reported),
        DiscoveryEvent::MemberDead { member, reason } => {
            member_line!(warn, member, "member dead", reason = ?reason)
        }
        DiscoveryEvent::MemberPurged { member, reason } => {
            member_line!(info, member, "member purged", reason = ?reason)
        }
        DiscoveryEvent::BootstrapJoined { endpoint, pki_id } => {
            tracing::info!(%endpoint, %pki_id, "joined through bootstrap peer")
        }
        // Fabric's `learnAnchorPeers` skips such an anchor at info, in these words, at each
        // channel configuration update: an embedder that passes every anchor of its blocks
        // gets one line per other organization's anchor per update, not a warning. A caller
        // that named the anchor itself knows it was skipped from `AnchorDial` and may warn.
        DiscoveryEvent::BootstrapFailed {
            endpoint,
            error: crate::BootstrapError::AnchorWithoutExternalEndpoint,
            ..
        } => tracing::info!(
            target: crate::BOOTSTRAP_TARGET,
            %endpoint,
            "anchor peer isn't in our organization and we have no external endpoint, skipping"
        ),
        DiscoveryEvent::BootstrapFailed {
            endpoint,
            error,
            attempt,
            gave_up,
        } => tracing::warn!(
            target: crate::BOOTSTRAP_TARGET,
            %endpoint,
            %error,
            attempt,
            gave_up,
            "bootstrap attempt failed"
        ),
    }
}

/// Gives comm an identity membership accepted (Fabric's `ValidateAliveMsg` and its
/// certstore put it in the one identity mapper comm also reads): comm's store is what
/// tells a peer's renewed certificate (an identity switch) from an impostor, and a member
/// known from membership alone was otherwise refused when it came back with a new one.
/// Comm keeps an identity it holds; what it refuses, it refuses as a handshake would, and
/// the alive message or identity stays valid to membership (the same provider accepted it).
pub(crate) fn share_identity<S: Security>(
    comm: &mut Comm<S>,
    now: Instant,
    pki_id: &PkiId,
    identity: &Bytes,
) {
    if let Err(error) = comm.learn_identity(now, pki_id, identity) {
        tracing::debug!(%pki_id, %error, "identity not shared with comm");
    }
}

/// What the membership store needs of a verified alive message: one place for the alive
/// path and the dead list of a response.
fn alive_update<'a, S: Security>(
    comm: &Comm<S>,
    parsed: &'a ParsedAlive,
    id: &'a VerifiedIdentity,
    env: &'a Envelope,
) -> Update<'a> {
    Update {
        pki_id: &parsed.pki_id,
        ts: parsed.ts,
        endpoint: &parsed.endpoint,
        metadata: &parsed.metadata,
        internal_endpoint: &parsed.internal_endpoint,
        identity: &id.identity,
        org: comm.security().organization_of(&id.identity),
        expires: id.expires,
        envelope: env,
    }
}

/// Whether the membership layer takes `message` for itself: alive messages, membership
/// requests and responses, and (when `identity_pull` is on, as [`CertStoreConfig::enabled`]
/// says) the identity pull's hello, digest, request and update. The layer subscribes with
/// exactly this predicate, so an application that reads the same core's messages can leave
/// out what the layer consumes without keeping its own list of content types.
///
/// [`CertStoreConfig::enabled`]: crate::CertStoreConfig::enabled
pub fn takes(message: &GossipMessage, identity_pull: bool) -> bool {
    matches!(
        message.content,
        Some(
            gossip_message::Content::AliveMsg(_)
                | gossip_message::Content::MemReq(_)
                | gossip_message::Content::MemRes(_)
        )
    ) || (identity_pull && crate::certstore::wire::is_identity_pull(message))
}
