//! Membership state (Fabric's `id2Member`, alive/dead timestamps and message sets) and the
//! alive-message store that de-duplicates direct gossip (`msgStore`, `aliveInvalidationPolicy`).

use crate::alive::Timestamp;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{Instant, PkiId, RemotePeer, detached_envelope};

/// Everything known about one member.
#[derive(Clone, Debug)]
pub(crate) struct MemberState {
    pub(crate) endpoint: String,
    pub(crate) metadata: Bytes,
    pub(crate) internal_endpoint: String,
    pub(crate) identity: Option<Bytes>,
    pub(crate) org: Option<Bytes>,
    pub(crate) expires: Option<Instant>,
    pub(crate) ts: Timestamp,
    pub(crate) last_seen: Instant,
    pub(crate) alive: bool,
    /// The latest signed alive Envelope, relayed verbatim in responses.
    pub(crate) envelope: Envelope,
    /// Its PKI-ID and preferred endpoint, ready for comm: a fan-out sends to it without
    /// copying either (every forwarded alive message goes to three members).
    pub(crate) peer: RemotePeer,
    /// Its place in [`Membership`]'s alive list while alive.
    alive_at: usize,
    /// We reached it at its preferred endpoint: a connection we dialled there
    /// authenticated its PKI-ID (a reconnect probe alone does not: it is a dial and a
    /// Ping, which whoever listens there answers; until 2026-12-08 it counted, so a
    /// made-up member claiming an honest peer's endpoint was reached by it). Members made
    /// up by a hostile CA, whose endpoints answer nobody or another peer, never are; a
    /// reconnect pass probes these members first
    /// ([`MAX_RECONNECT_PROBES`](crate::MAX_RECONNECT_PROBES)). Cleared when the endpoint
    /// changes.
    pub(crate) reached: bool,
}

/// What a member costs beside its own fields' sizes: the map entry, the slot, the
/// strings' and buffers' headers (a generous round figure).
pub(crate) const MEMBER_OVERHEAD: usize = 512;

impl MemberState {
    /// The bytes this member holds, as [`Membership::bytes`] counts them.
    pub(crate) fn weight(&self) -> usize {
        weight_of(
            &self.envelope,
            self.identity.as_ref().map_or(0, Bytes::len),
            self.metadata.len(),
            [&self.endpoint, &self.internal_endpoint],
            self.pki_id(),
        )
    }

    /// Where to reach it: the internal endpoint if known, else the external one
    /// (Fabric's `PreferredEndpoint`).
    pub(crate) fn preferred_endpoint(&self) -> &str {
        &self.peer.endpoint
    }

    /// Its PKI-ID.
    pub(crate) fn pki_id(&self) -> &PkiId {
        &self.peer.pki_id
    }

    /// Keeps [`MemberState::peer`]'s endpoint the preferred one after an endpoint changed.
    fn prefer_endpoint(&mut self) {
        let preferred = crate::event::preferred(&self.endpoint, &self.internal_endpoint);
        if self.peer.endpoint != preferred {
            self.peer.endpoint.clear();
            self.peer.endpoint.push_str(preferred);
        }
    }
}

/// What an alive message did to membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new member, learnt alive.
    Learned,
    /// A dead member came back.
    Resurrected,
    /// An alive member's data and `last_seen` moved on.
    Refreshed,
    /// An alive member came back with a newer incarnation before it was declared dead:
    /// it restarted within `alive_expiration`.
    Restarted {
        /// The incarnation it had.
        previous_inc: u64,
    },
    /// Not newer than what is known.
    Stale,
}

/// What a validated alive message says, ready to apply.
#[derive(Clone, Debug)]
pub(crate) struct Update<'a> {
    pub(crate) pki_id: &'a PkiId,
    pub(crate) ts: Timestamp,
    pub(crate) endpoint: &'a str,
    pub(crate) metadata: &'a Bytes,
    pub(crate) internal_endpoint: &'a str,
    pub(crate) identity: &'a Bytes,
    pub(crate) org: Option<Bytes>,
    pub(crate) expires: Option<Instant>,
    pub(crate) envelope: &'a Envelope,
}

impl Update<'_> {
    /// What the member would hold once learnt from this update: [`MemberState::weight`]
    /// of the state it makes, without making it.
    pub(crate) fn weight(&self) -> usize {
        weight_of(
            self.envelope,
            self.identity.len(),
            self.metadata.len(),
            [self.endpoint, self.internal_endpoint],
            self.pki_id,
        )
    }
}

/// What a member holds: its alive envelope, the copies of its identity and metadata, its
/// external and internal endpoints (the preferred one twice: it is kept ready for comm
/// too), its PKI-ID and a fixed overhead. One formula for a member and for an update
/// about to become one, so that the count kept in [`Membership`] and the room asked of it
/// agree.
fn weight_of(
    envelope: &Envelope,
    identity: usize,
    metadata: usize,
    [external, internal]: [&str; 2],
    pki_id: &PkiId,
) -> usize {
    use prost::Message;
    let preferred = if internal.is_empty() {
        external
    } else {
        internal
    };
    MEMBER_OVERHEAD
        + envelope.encoded_len()
        + identity
        + metadata
        + external.len()
        + internal.len()
        + preferred.len()
        + pki_id.as_bytes().len()
}

/// A hash map keyed by PKI-ID with a fixed seed: lookups in O(1), and the same
/// operations always give the same layout, so iteration stays deterministic. Only PKI-IDs
/// of verified messages are stored, which the security provider derives from identities
/// (SHA-256 under an MSP): a fixed seed is public, and keys a sender chose freely could be
/// made to collide (a response's unverified member IDs go in an ordered set instead).
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

/// A PKI-ID as a map key, held in place when it fits: the core's [`PkiKey`], so a lookup
/// compares in the table instead of following every stored key to the receive buffer it was
/// cut from; maps keyed by it are searched with a plain `&[u8]`.
///
/// [`PkiKey`]: fabric_gossip_core::PkiKey
pub(crate) use fabric_gossip_core::PkiKey as Key;

/// The seed of every map of the layer (any constant: it only has to be the same on
/// every run).
const MAP_SEED: u64 = 0x6d65_6d62_6572_7321;

pub(crate) fn new_map<K, V>() -> Map<K, V> {
    Map::with_hasher(foldhash::fast::FixedState::with_seed(MAP_SEED))
}

/// The name an organization's share is kept under: members of no known organization
/// share the empty one.
pub(crate) fn org_key(org: Option<&Bytes>) -> &[u8] {
    org.map_or(&[], |o| o.as_ref())
}

/// What one organization holds of membership.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Share {
    /// Its members, alive and dead.
    pub(crate) members: usize,
    /// Their bytes ([`MemberState::weight`]).
    pub(crate) bytes: usize,
}

/// Alive and dead members, with the alive ones also in a dense list so that fan-out
/// draws and syncs pick among them without scanning every member. A member lives in a
/// slot of a dense table; the map only turns a PKI-ID into its slot, so the alive list
/// and fan-out draws reach members without hashing. Iteration follows the map's layout,
/// which depends only on the sequence of operations (Fabric iterates a Go map, in random
/// order; the public views sort).
#[derive(Debug)]
pub(crate) struct Membership {
    index: Map<Key, usize>,
    slots: Vec<Option<MemberState>>,
    /// Slots emptied by purges, reused (last emptied first) before the table grows.
    free: Vec<usize>,
    /// The alive members' slots.
    alive: Vec<usize>,
    /// The members' bytes ([`MemberState::weight`]), kept as they come and go.
    bytes: usize,
    /// Each organization's members and bytes, kept as they come and go; members of no
    /// known organization count under the empty name. What a full membership's shares
    /// are judged by.
    orgs: Map<Bytes, Share>,
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            index: new_map(),
            slots: Vec::new(),
            free: Vec::new(),
            alive: Vec::new(),
            bytes: 0,
            orgs: new_map(),
        }
    }
}

impl Membership {
    /// A member, alive or dead.
    pub(crate) fn get(&self, pki_id: &PkiId) -> Option<&MemberState> {
        self.index.get(pki_id.as_bytes()).and_then(|&i| self.at(i))
    }

    /// The member in slot `slot`.
    pub(crate) fn at(&self, slot: usize) -> Option<&MemberState> {
        self.slots.get(slot)?.as_ref()
    }

    fn at_mut(&mut self, slot: usize) -> Option<&mut MemberState> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Whether the member is known, alive or dead.
    pub(crate) fn contains(&self, pki_id: &PkiId) -> bool {
        self.index.contains_key(pki_id.as_bytes())
    }

    /// How many members are known, alive or dead.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// What the members hold, in bytes (their envelopes, identities, metadata and
    /// endpoints, and a fixed overhead each).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// What `org` holds (`None`: members of no known organization).
    pub(crate) fn org_share(&self, org: Option<&Bytes>) -> Share {
        self.orgs.get(org_key(org)).copied().unwrap_or_default()
    }

    /// What each organization holds (the empty name: members of none), in the map's
    /// (deterministic) order.
    pub(crate) fn org_shares(&self) -> impl Iterator<Item = (&Bytes, Share)> {
        self.orgs.iter().map(|(o, &n)| (o, n))
    }

    fn share_in(&mut self, org: Option<&Bytes>, weight: usize) {
        let share = self
            .orgs
            .entry(org.cloned().unwrap_or_default())
            .or_default();
        share.members += 1;
        share.bytes += weight;
    }

    fn share_out(&mut self, org: Option<&Bytes>, weight: usize) {
        let key = org_key(org);
        if let Some(share) = self.orgs.get_mut(key) {
            share.members -= 1;
            share.bytes -= weight;
            if share.members == 0 {
                self.orgs.remove(key);
            }
        }
    }

    /// Every member, alive or dead, in the map's (deterministic) order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&PkiId, &MemberState)> {
        self.index.values().filter_map(|&i| {
            let m = self.at(i)?;
            Some((m.pki_id(), m))
        })
    }

    /// The alive members' slots, in the order they became alive (shuffled by removals).
    pub(crate) fn alive(&self) -> &[usize] {
        &self.alive
    }

    /// Puts a new member in a free slot (or a new one) and indexes it.
    fn insert(&mut self, pki_id: &PkiId, m: MemberState) -> usize {
        self.bytes += m.weight();
        self.share_in(m.org.as_ref(), m.weight());
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(m);
                i
            }
            None => {
                self.slots.push(Some(m));
                self.slots.len() - 1
            }
        };
        self.index.insert(Key::of(pki_id.as_bytes()), slot);
        slot
    }

    /// Lists the member of `slot` as alive.
    fn list(&mut self, slot: usize) {
        let at = self.alive.len();
        if let Some(m) = self.at_mut(slot) {
            m.alive_at = at;
            self.alive.push(slot);
        }
    }

    /// Fabric's `handleAliveMessage`: learn, resurrect or refresh on a strictly newer
    /// timestamp; anything else changes nothing (not even `last_seen`).
    pub(crate) fn apply_alive(&mut self, u: &Update<'_>, now: Instant) -> Change {
        let Some(&slot) = self.index.get(u.pki_id.as_bytes()) else {
            let slot = self.insert(u.pki_id, Self::fresh(u, now, true));
            self.list(slot);
            return Change::Learned;
        };
        let Some(m) = self.at_mut(slot) else {
            return Change::Stale;
        };
        if m.ts >= u.ts {
            return Change::Stale;
        }
        let was_alive = m.alive;
        let before = m.weight();
        if m.endpoint != u.endpoint {
            m.endpoint = u.endpoint.to_owned();
        }
        m.metadata = Bytes::copy_from_slice(u.metadata);
        if !u.internal_endpoint.is_empty() && m.internal_endpoint != u.internal_endpoint {
            m.internal_endpoint = u.internal_endpoint.to_owned();
        }
        let reached_at = m.reached.then(|| m.preferred_endpoint().to_owned());
        m.prefer_endpoint();
        m.reached = reached_at.is_some_and(|ep| ep == m.preferred_endpoint());
        let mut moved = None;
        if m.identity.is_none() || m.identity.as_ref() != Some(u.identity) {
            m.identity = Some(Bytes::copy_from_slice(u.identity));
            if m.org != u.org {
                moved = Some(core::mem::replace(&mut m.org, u.org.clone()));
            }
            m.expires = u.expires;
        }
        let previous_inc = m.ts.inc;
        m.ts = u.ts;
        m.last_seen = now;
        m.envelope = detached_envelope(u.envelope);
        m.alive = true;
        let after = m.weight();
        let org = m.org.clone();
        self.bytes = self.bytes - before + after;
        match moved {
            Some(old) => {
                self.share_out(old.as_ref(), before);
                self.share_in(org.as_ref(), after);
            }
            None => {
                if let Some(share) = self.orgs.get_mut(org_key(org.as_ref())) {
                    share.bytes = share.bytes - before + after;
                }
            }
        }
        if was_alive {
            return if previous_inc < u.ts.inc {
                Change::Restarted { previous_inc }
            } else {
                Change::Refreshed
            };
        }
        self.list(slot);
        Change::Resurrected
    }

    /// Notes that `pki_id`, if a member, answered at `endpoint` (see
    /// [`MemberState::reached`]); an answer at another endpoint than its preferred one proves
    /// nothing about the one we would probe.
    pub(crate) fn mark_reached(&mut self, pki_id: &PkiId, endpoint: &str) {
        if let Some(&slot) = self.index.get(pki_id.as_bytes())
            && let Some(m) = self.at_mut(slot)
            && m.preferred_endpoint() == endpoint
        {
            m.reached = true;
        }
    }

    /// A member from someone's dead list: learnt dead only if unknown (a known member is
    /// never killed by another peer's view).
    pub(crate) fn learn_dead(&mut self, u: &Update<'_>, now: Instant) -> bool {
        if self.index.contains_key(u.pki_id.as_bytes()) {
            return false;
        }
        self.insert(u.pki_id, Self::fresh(u, now, false));
        true
    }

    fn fresh(u: &Update<'_>, now: Instant, alive: bool) -> MemberState {
        let mut m = MemberState {
            endpoint: u.endpoint.to_owned(),
            metadata: Bytes::copy_from_slice(u.metadata),
            internal_endpoint: u.internal_endpoint.to_owned(),
            identity: Some(Bytes::copy_from_slice(u.identity)),
            org: u.org.clone(),
            expires: u.expires,
            ts: u.ts,
            last_seen: now,
            alive,
            envelope: detached_envelope(u.envelope),
            peer: RemotePeer::new(String::new(), PkiId(Bytes::copy_from_slice(&u.pki_id.0))),
            alive_at: 0,
            reached: false,
        };
        m.prefer_endpoint();
        m
    }

    /// Takes an alive member out of the alive list (in O(1): the last one fills its place).
    fn unlist(&mut self, at: usize) {
        self.alive.swap_remove(at);
        if let Some(&moved) = self.alive.get(at)
            && let Some(m) = self.at_mut(moved)
        {
            m.alive_at = at;
        }
    }

    /// Alive → dead, keeping the last timestamp and envelope. False if not alive.
    pub(crate) fn mark_dead(&mut self, pki_id: &PkiId) -> bool {
        let Some(&slot) = self.index.get(pki_id.as_bytes()) else {
            return false;
        };
        let at = match self.at_mut(slot) {
            Some(m) if m.alive => {
                m.alive = false;
                m.alive_at
            }
            _ => return false,
        };
        self.unlist(at);
        true
    }

    /// Forgets a member, alive or dead.
    pub(crate) fn remove(&mut self, pki_id: &PkiId) -> Option<MemberState> {
        let slot = self.index.remove(pki_id.as_bytes())?;
        let m = self.slots.get_mut(slot)?.take()?;
        self.bytes -= m.weight();
        self.share_out(m.org.as_ref(), m.weight());
        self.free.push(slot);
        if m.alive {
            self.unlist(m.alive_at);
        }
        Some(m)
    }

    /// PKI-IDs of the members for which `pred` holds, sorted so that what the caller does
    /// to each of them happens in one order on every run.
    pub(crate) fn select(&self, pred: impl Fn(&MemberState) -> bool) -> Vec<PkiId> {
        let mut ids: Vec<PkiId> = self
            .iter()
            .filter(|(_, m)| pred(m))
            .map(|(k, _)| k.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Alive members silent for more than `timeout` (strictly), in PKI-ID order.
    pub(crate) fn silent_since(&self, now: Instant, timeout: Duration) -> Vec<PkiId> {
        self.select(|m| m.alive && now - m.last_seen > timeout)
    }

    /// Members whose identity has expired by `now`, in PKI-ID order.
    pub(crate) fn identity_expired(&self, now: Instant) -> Vec<PkiId> {
        self.select(|m| m.expires.is_some_and(|e| e <= now))
    }

    #[cfg(test)]
    pub(crate) fn alive_ids(&self) -> Vec<PkiId> {
        self.select(|m| m.alive)
    }

    #[cfg(test)]
    pub(crate) fn dead_ids(&self) -> Vec<PkiId> {
        self.select(|m| !m.alive)
    }
}

/// The message store's bound, in entries per place in membership (`max_members`): room
/// for every member, a tombstone for each member purged in the last `2 × ttl` twice over,
/// and as many peers that are not members again. Members always find room.
pub const STORE_ENTRIES_PER_MEMBER: usize = 4;

#[derive(Clone, Copy, Debug)]
struct StoreEntry {
    ts: Timestamp,
    added: Instant,
    expired: bool,
    /// A purged member's ([`MsgStore::tombstone`]).
    tombstone: bool,
}

/// De-duplicates direct alive messages: one entry per member, the newest. An entry lives
/// `ttl` and keeps blocking equal or older messages until `2 × ttl` (quirk Q7). A purged
/// member's entry is a tombstone ([`MsgStore::tombstone`]): it keeps that member's
/// entries in other peers' responses from teaching it back.
///
/// It holds at most `cap` entries of peers that are not members: the alive messages of
/// peers that membership refused (it is full) are stored, and forwarded, as Fabric does,
/// only while there is room. Fabric's store has no bound, and a hostile organization's CA
/// minting identities could grow ours by an entry for every valid alive message it sent,
/// kept for `2 × ttl` (1,000 s by default).
#[derive(Debug)]
pub(crate) struct MsgStore {
    entries: Map<Key, StoreEntry>,
    ttl: Duration,
    cap: usize,
}

impl MsgStore {
    pub(crate) fn new(ttl: Duration, cap: usize) -> Self {
        MsgStore {
            entries: new_map(),
            ttl,
            cap,
        }
    }

    /// Whether a message with `ts` would be new: no entry for the member, or an older one.
    pub(crate) fn check_valid(&self, pki_id: &PkiId, ts: Timestamp) -> bool {
        self.entries
            .get(pki_id.as_bytes())
            .is_none_or(|e| e.ts < ts)
    }

    /// Stores a message (call only after `check_valid`), replacing the peer's entry;
    /// whether it did. A peer without one gets none while the store holds `cap` entries,
    /// unless `is_member` says it is a member (members are bounded by membership); it is
    /// asked only then.
    pub(crate) fn add(
        &mut self,
        pki_id: &PkiId,
        ts: Timestamp,
        now: Instant,
        is_member: impl FnOnce() -> bool,
    ) -> bool {
        let key = Key::of(pki_id.as_bytes());
        if self.entries.len() >= self.cap && !self.entries.contains_key(&key) && !is_member() {
            return false;
        }
        self.entries.insert(
            key,
            StoreEntry {
                ts,
                added: now,
                expired: false,
                tombstone: false,
            },
        );
        true
    }

    /// A purged member's tombstone: its newest timestamp (ours or `ts`), blocking equal or
    /// older messages for `2 × ttl` from `now`; whether there was room for it.
    pub(crate) fn tombstone(&mut self, pki_id: &PkiId, ts: Timestamp, now: Instant) -> bool {
        let ts = self
            .entries
            .get(pki_id.as_bytes())
            .map_or(ts, |e| e.ts.max(ts));
        let added = self.add(pki_id, ts, now, || false);
        if let Some(e) = self.entries.get_mut(pki_id.as_bytes()) {
            e.tombstone = added;
        }
        added
    }

    /// Whether `pki_id` was purged within the last `2 × ttl` and has sent nothing newer
    /// since (its tombstone stands).
    pub(crate) fn is_tombstone(&self, pki_id: &PkiId) -> bool {
        self.entries
            .get(pki_id.as_bytes())
            .is_some_and(|e| e.tombstone)
    }

    /// Expires entries older than the TTL (returned once each, for purging) and forgets
    /// those older than twice the TTL.
    pub(crate) fn scan(&mut self, now: Instant) -> Vec<PkiId> {
        let ttl = self.ttl;
        let mut expired = Vec::new();
        self.entries.retain(|k, e| {
            let age = now - e.added;
            if age >= ttl && !e.expired {
                e.expired = true;
                expired.push(PkiId::new(Bytes::copy_from_slice(k.as_slice())));
            }
            age < ttl.saturating_mul(2)
        });
        expired
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(inc: u64, seq: u64) -> Timestamp {
        Timestamp { inc, seq }
    }

    /// A membership that has learnt member "a" at `t`, and that member's PKI-ID.
    fn one_member(t: Timestamp, now: Instant) -> (Membership, PkiId) {
        let mut ms = Membership::default();
        let a = PkiId::new(&b"a"[..]);
        assert_eq!(apply(&mut ms, &a, t, "", now), Change::Learned);
        (ms, a)
    }

    fn apply(ms: &mut Membership, id: &PkiId, t: Timestamp, ie: &str, now: Instant) -> Change {
        let env = Envelope::default();
        let ident = Bytes::from_static(b"id");
        let md = Bytes::new();
        ms.apply_alive(
            &Update {
                pki_id: id,
                ts: t,
                endpoint: "ext:1",
                metadata: &md,
                internal_endpoint: ie,
                identity: &ident,
                org: None,
                expires: None,
                envelope: &env,
            },
            now,
        )
    }

    #[test]
    fn learn_refresh_and_stale() {
        let mut ms = Membership::default();
        let a = PkiId::new(&b"a"[..]);
        let t0 = Instant::from_unix_secs(1);
        assert_eq!(apply(&mut ms, &a, ts(1, 1), "int:1", t0), Change::Learned);
        let t1 = Instant::from_unix_secs(2);
        assert_eq!(apply(&mut ms, &a, ts(1, 1), "", t1), Change::Stale);
        assert_eq!(
            ms.get(&a).unwrap().last_seen,
            t0,
            "a replay must not keep a member alive"
        );
        assert_eq!(apply(&mut ms, &a, ts(1, 0), "", t1), Change::Stale);
        assert_eq!(apply(&mut ms, &a, ts(1, 2), "", t1), Change::Refreshed);
        assert_eq!(ms.get(&a).unwrap().last_seen, t1);
        assert_eq!(
            ms.get(&a).unwrap().internal_endpoint,
            "int:1",
            "no secret keeps the old one"
        );
        assert_eq!(apply(&mut ms, &a, ts(1, 3), "int:2", t1), Change::Refreshed);
        assert_eq!(
            ms.get(&a).unwrap().internal_endpoint,
            "int:2",
            "a new secret wins"
        );
    }

    #[test]
    fn dead_member_resurrects_only_with_newer_timestamp() {
        let t = Instant::from_unix_secs(1);
        let (mut ms, a) = one_member(ts(5, 9), t);
        assert!(ms.mark_dead(&a));
        assert!(!ms.mark_dead(&a));
        assert_eq!(apply(&mut ms, &a, ts(5, 9), "", t), Change::Stale);
        assert_eq!(apply(&mut ms, &a, ts(4, 100), "", t), Change::Stale);
        assert_eq!(apply(&mut ms, &a, ts(6, 1), "", t), Change::Resurrected);
        assert!(ms.get(&a).unwrap().alive);
    }

    #[test]
    fn expiry_is_strictly_after_the_timeout() {
        let t = Instant::from_unix_secs(100);
        let (ms, a) = one_member(ts(1, 1), t);
        let timeout = Duration::from_secs(25);
        assert!(ms.silent_since(t + timeout, timeout).is_empty());
        assert_eq!(
            ms.silent_since(t + timeout + Duration::from_nanos(1), timeout),
            [a]
        );
    }

    #[test]
    fn dead_list_never_kills_a_known_member() {
        let t = Instant::from_unix_secs(1);
        let (mut ms, a) = one_member(ts(1, 1), t);
        let env = Envelope::default();
        let id = Bytes::new();
        let md = Bytes::new();
        let mut u = Update {
            pki_id: &a,
            ts: ts(9, 9),
            endpoint: "",
            metadata: &md,
            internal_endpoint: "",
            identity: &id,
            org: None,
            expires: None,
            envelope: &env,
        };
        assert!(!ms.learn_dead(&u, t));
        assert!(ms.get(&a).unwrap().alive);
        let b = PkiId::new(&b"b"[..]);
        u.pki_id = &b;
        assert!(ms.learn_dead(&u, t));
        assert_eq!(ms.dead_ids(), [b]);
        assert_eq!(ms.alive_ids(), [a]);
    }

    /// The alive list holds exactly the alive members, each at the place it records.
    fn check_alive_list(ms: &Membership) {
        for (i, &slot) in ms.alive().iter().enumerate() {
            let m = ms.at(slot).expect("a listed slot holds a member");
            let pki = m.pki_id();
            assert!(m.alive, "{pki:?} listed but dead");
            assert_eq!(m.alive_at, i, "{pki:?} misplaced");
            assert_eq!(ms.get(pki).map(MemberState::pki_id), Some(pki));
        }
        let mut listed: Vec<PkiId> = ms
            .alive()
            .iter()
            .filter_map(|&s| ms.at(s).map(|m| m.pki_id().clone()))
            .collect();
        listed.sort();
        assert_eq!(listed, ms.alive_ids());
    }

    #[test]
    fn alive_list_follows_learn_death_resurrection_and_purge() {
        let mut ms = Membership::default();
        let t = Instant::from_unix_secs(1);
        let ids: Vec<PkiId> = (0..6u8).map(|i| PkiId::new(vec![i])).collect();
        for id in &ids {
            assert_eq!(apply(&mut ms, id, ts(1, 1), "", t), Change::Learned);
        }
        check_alive_list(&ms);
        assert!(ms.mark_dead(&ids[0]));
        assert!(ms.mark_dead(&ids[3]));
        check_alive_list(&ms);
        assert_eq!(ms.alive().len(), 4);
        assert!(ms.remove(&ids[5]).is_some());
        assert!(ms.remove(&ids[3]).is_some(), "a dead member is removed too");
        check_alive_list(&ms);
        assert_eq!(
            apply(&mut ms, &ids[0], ts(2, 1), "", t),
            Change::Resurrected
        );
        // A newer incarnation of a member still alive: it restarted.
        assert_eq!(
            apply(&mut ms, &ids[1], ts(2, 1), "", t),
            Change::Restarted { previous_inc: 1 }
        );
        assert_eq!(apply(&mut ms, &ids[1], ts(2, 2), "", t), Change::Refreshed);
        check_alive_list(&ms);
        assert_eq!(
            ms.alive_ids(),
            [&ids[0], &ids[1], &ids[2], &ids[4]].map(Clone::clone)
        );
        assert_eq!(ms.dead_ids(), Vec::<PkiId>::new());
        assert!(ms.remove(&ids[3]).is_none());
    }

    #[test]
    fn keys_of_every_length_are_found_by_their_bytes_only() {
        let mut m: Map<Key, usize> = new_map();
        let ids: Vec<Vec<u8>> = [0, 1, 14, 31, 32, 33, 200]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert!(m.insert(Key::of(id), i).is_none(), "{id:?} collided");
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(m.get(id.as_slice()), Some(&i));
            assert_eq!(Key::of(id).as_slice(), id.as_slice());
        }
        assert!(matches!(Key::of(&ids[4]), Key::Inline { len: 32, .. }));
        assert!(matches!(Key::of(&ids[5]), Key::Heap(_)));
        // A shorter ID is not its zero-padded longer neighbour.
        assert_eq!(m.get(&[0u8; 2][..]), None);
        assert_ne!(Key::of(&[1, 0]), Key::of(&[1]));
    }

    #[test]
    fn store_rejects_equal_or_older_and_expires_in_two_steps() {
        let ttl = Duration::from_secs(500);
        let mut s = MsgStore::new(ttl, 10);
        let a = PkiId::new(&b"a"[..]);
        let t0 = Instant::from_unix_secs(1000);
        assert!(s.check_valid(&a, ts(1, 1)));
        assert!(s.add(&a, ts(1, 5), t0, || false));
        assert!(!s.check_valid(&a, ts(1, 5)));
        assert!(!s.check_valid(&a, ts(1, 4)));
        assert!(!s.check_valid(&a, ts(0, 99)));
        assert!(s.check_valid(&a, ts(1, 6)));
        assert!(s.check_valid(&a, ts(2, 0)));
        assert!(s.scan(t0 + ttl - Duration::from_nanos(1)).is_empty());
        assert_eq!(s.scan(t0 + ttl), std::slice::from_ref(&a));
        assert!(
            s.scan(t0 + ttl + Duration::from_secs(1)).is_empty(),
            "reported once"
        );
        assert!(
            !s.check_valid(&a, ts(1, 5)),
            "an expired entry still blocks replays"
        );
        s.scan(t0 + ttl * 2);
        assert_eq!(s.len(), 0);
        assert!(s.check_valid(&a, ts(1, 5)));
    }

    #[test]
    fn a_full_store_takes_no_new_peer_but_members_and_those_it_holds() {
        let mut s = MsgStore::new(Duration::from_secs(500), 2);
        let t0 = Instant::from_unix_secs(1000);
        let id = |n: &str| PkiId::new(Bytes::copy_from_slice(n.as_bytes()));
        assert!(s.add(&id("a"), ts(1, 1), t0, || false));
        assert!(s.add(&id("b"), ts(1, 1), t0, || false));
        assert!(!s.add(&id("c"), ts(1, 1), t0, || false), "full");
        assert!(
            !s.tombstone(&id("d"), ts(1, 1), t0),
            "full for tombstones too"
        );
        assert!(s.check_valid(&id("c"), ts(1, 1)), "nothing stored for c");
        assert!(
            s.add(&id("a"), ts(1, 2), t0, || false),
            "a peer it holds is replaced"
        );
        assert!(!s.check_valid(&id("a"), ts(1, 2)));
        assert!(s.add(&id("m"), ts(1, 1), t0, || true), "a member always is");
        assert_eq!(s.len(), 3);
        // Room again once entries are forgotten.
        s.scan(t0 + Duration::from_secs(1000));
        assert!(s.add(&id("c"), ts(1, 1), t0 + Duration::from_secs(1000), || false));
    }
}
