//! Fabric's pull engine (`gossip/gossip/algo/pull.go`) as a deterministic state machine:
//! the nonces and phases of one round we initiate, and the hellos we answered.
//!
//! ```text
//!   other peer                                   initiator
//!       <------- Hello(nonce) ---------------------   round start (every pull_interval)
//!       -------- Digest(nonce, [ids]) ----------->   accepted for digest_wait
//!       <------- Request(nonce, [ids we lack]) ----   each id asked of one random owner
//!       -------- Update(nonce, [signed items]) --->   accepted for response_wait, then the round ends
//! ```
//!
//! The engine knows nothing of identities or the network: the caller asks it what to send
//! and tells it what arrived. Random choices (nonces, which owner to ask) come from the
//! caller's seeded generator.

use core::time::Duration;
use fabric_gossip_core::{Instant, PkiId};
use rand_core::RngCore;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A member we pull from: where to reach it and who it must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) pki_id: PkiId,
    pub(crate) endpoint: String,
}

/// Why the engine refused a pull message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A digest or update whose nonce is not of our current round, arriving outside its
    /// phase, or from another peer than the one the nonce was sent to.
    Unsolicited,
    /// A bounded table is full.
    Full,
    /// The sender already has as many hellos pending as one peer may.
    PeerFull,
    /// A hello already pending, or a request echoing a hello whose request was already
    /// served: each hello's nonce buys one digest and one update.
    Replayed,
}

/// Where our round is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Hellos sent; digests accepted until the deadline.
    Digests(Instant),
    /// Requests sent; updates accepted until the deadline.
    Responses(Instant),
}

/// One round we initiated.
#[derive(Debug)]
struct Round {
    phase: Phase,
    /// Outgoing nonce → the peer it was sent to.
    peers: BTreeMap<u64, Peer>,
    /// Item → the nonces of the peers that advertised it (digest phase).
    owners: BTreeMap<PkiId, Vec<u64>>,
    /// Outgoing nonce → the items we asked of its peer (response phase), until its update
    /// arrives. Each item is asked of one peer only, so these hold at most the round's
    /// bound on distinct items in all.
    asked: BTreeMap<u64, BTreeSet<PkiId>>,
}

/// The pull engine's state.
#[derive(Debug, Default)]
pub(crate) struct PullEngine {
    next_round: Option<Instant>,
    round: Option<Round>,
    /// Hellos we answered, until their request-wait ends: only a request echoing one of
    /// them is served.
    hellos: PendingHellos,
}

/// The hellos we answered and their senders, bounded overall and per sender. When the
/// table is full, a sender holding fewer hellos takes the place of the oldest hello of the
/// sender holding the most, so that one peer (or a few) cannot keep the others' hellos
/// out. Each hello costs a few small entries; each sender one more.
#[derive(Debug, Default)]
struct PendingHellos {
    /// Sender → its pending hellos `(expiry, nonce, served)`, oldest first (at most the
    /// per-peer bound). A served hello stays until it expires, so that it still counts
    /// against its sender's bound and a replay of its request is told from a stranger's.
    by_sender: BTreeMap<PkiId, VecDeque<(Instant, u64, bool)>>,
    /// Every pending hello, by expiry: they expire in this order.
    by_expiry: BTreeSet<(Instant, PkiId, u64)>,
    /// `(hellos pending, sender)` for every sender holding one: the most loaded last.
    by_load: BTreeSet<(usize, PkiId)>,
}

impl PendingHellos {
    fn len(&self) -> usize {
        self.by_expiry.len()
    }

    fn held(&self, from: &PkiId) -> usize {
        self.by_sender.get(from).map_or(0, VecDeque::len)
    }

    fn contains(&self, from: &PkiId, nonce: u64) -> bool {
        self.by_sender
            .get(from)
            .is_some_and(|q| q.iter().any(|&(_, n, _)| n == nonce))
    }

    /// Marks the pending hello `nonce` of `from` served: `Ok` the first time,
    /// [`Refusal::Replayed`] after, [`Refusal::Unsolicited`] if there is none.
    fn serve(&mut self, from: &PkiId, nonce: u64) -> Result<(), Refusal> {
        let hello = self
            .by_sender
            .get_mut(from)
            .and_then(|q| q.iter_mut().find(|(_, n, _)| *n == nonce))
            .ok_or(Refusal::Unsolicited)?;
        if core::mem::replace(&mut hello.2, true) {
            return Err(Refusal::Replayed);
        }
        Ok(())
    }

    /// Moves `from` in `by_load` from `old` to `new` pending hellos.
    fn set_load(&mut self, from: &PkiId, old: usize, new: usize) {
        if old > 0 {
            self.by_load.remove(&(old, from.clone()));
        }
        if new > 0 {
            self.by_load.insert((new, from.clone()));
        }
    }

    fn insert(&mut self, from: &PkiId, nonce: u64, expiry: Instant) {
        let q = self.by_sender.entry(from.clone()).or_default();
        q.push_back((expiry, nonce, false));
        let held = q.len();
        self.by_expiry.insert((expiry, from.clone(), nonce));
        self.set_load(from, held - 1, held);
    }

    /// Forgets one hello of `from`.
    fn remove(&mut self, from: &PkiId, expiry: Instant, nonce: u64) {
        self.by_expiry.remove(&(expiry, from.clone(), nonce));
        let Some(q) = self.by_sender.get_mut(from) else {
            return;
        };
        let old = q.len();
        q.retain(|&(t, n, _)| (t, n) != (expiry, nonce));
        let new = q.len();
        if new == 0 {
            self.by_sender.remove(from);
        }
        self.set_load(from, old, new);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.by_expiry.first()
            && *t <= now
        {
            if let Some((t, from, nonce)) = self.by_expiry.pop_first() {
                self.remove(&from, t, nonce);
            }
        }
    }

    /// Makes room for a hello of a sender holding `held`: forgets the oldest hello of the
    /// sender holding the most, if that one holds at least two more (so the two never
    /// just trade places). Whether room was made.
    fn evict_for(&mut self, held: usize) -> bool {
        let Some((most, from)) = self.by_load.last().cloned() else {
            return false;
        };
        if most <= held + 1 {
            return false;
        }
        let Some(&(expiry, nonce, _)) = self.by_sender.get(&from).and_then(VecDeque::front) else {
            return false;
        };
        self.remove(&from, expiry, nonce);
        true
    }
}

impl PullEngine {
    /// Arms the first round at `at` (Fabric's loop sleeps one interval first).
    pub(crate) fn arm(&mut self, at: Instant) {
        self.next_round = Some(at);
    }

    /// The engine's next deadline: the end of the current phase, else the next round.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.round {
            Some(r) => match r.phase {
                Phase::Digests(t) | Phase::Responses(t) => Some(t),
            },
            None => self.next_round,
        }
    }

    /// Whether a new round is due at `now`. A round never starts while another runs: with
    /// a pull interval shorter than the two waits (Fabric requires it longer, and breaks
    /// otherwise), rounds run back to back instead.
    pub(crate) fn round_due(&self, now: Instant) -> bool {
        self.round.is_none() && self.next_round.is_some_and(|t| t <= now)
    }

    /// Starts a round with `peers` (drawn by the caller); returns the hellos to send.
    /// With no peers there is no round, only the next one armed.
    pub(crate) fn begin_round(
        &mut self,
        now: Instant,
        interval: Duration,
        digest_wait: Duration,
        peers: Vec<Peer>,
        rng: &mut impl RngCore,
    ) -> Vec<(Peer, u64)> {
        self.next_round = Some(now + interval);
        self.round = None;
        if peers.is_empty() {
            return Vec::new();
        }
        let mut round = Round {
            phase: Phase::Digests(now + digest_wait),
            peers: BTreeMap::new(),
            owners: BTreeMap::new(),
            asked: BTreeMap::new(),
        };
        let mut hellos = Vec::with_capacity(peers.len());
        for peer in peers {
            let nonce = loop {
                let n = rng.next_u64();
                if !round.peers.contains_key(&n) {
                    break n;
                }
            };
            round.peers.insert(nonce, peer.clone());
            hellos.push((peer, nonce));
        }
        self.round = Some(round);
        hellos
    }

    /// A digest from `from` echoing `nonce`: records who holds which of the `items` we
    /// lack (`have` says which we hold), up to `max_items` distinct items per round.
    /// Returns how many items were dropped: for the bound, or empty (no PKI-ID names no
    /// identity, so there is nothing to ask for).
    pub(crate) fn on_digest(
        &mut self,
        now: Instant,
        from: &PkiId,
        nonce: u64,
        items: impl IntoIterator<Item = PkiId>,
        have: impl Fn(&PkiId) -> bool,
        max_items: usize,
    ) -> Result<usize, Refusal> {
        let round = self.round.as_mut().ok_or(Refusal::Unsolicited)?;
        let open = matches!(round.phase, Phase::Digests(t) if now < t);
        if !open || round.peers.get(&nonce).is_none_or(|p| p.pki_id != *from) {
            return Err(Refusal::Unsolicited);
        }
        let mut dropped = 0;
        for item in items {
            if item.is_empty() {
                dropped += 1;
                continue;
            }
            if have(&item) {
                continue;
            }
            if let Some(owners) = round.owners.get_mut(&item) {
                if !owners.contains(&nonce) {
                    owners.push(nonce);
                }
            } else if round.owners.len() < max_items {
                round.owners.insert(item, vec![nonce]);
            } else {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Whether the digest phase ended at `now`.
    pub(crate) fn digests_due(&self, now: Instant) -> bool {
        self.round
            .as_ref()
            .is_some_and(|r| matches!(r.phase, Phase::Digests(t) if t <= now))
    }

    /// Ends the digest phase (`processIncomingDigests`): each advertised item is asked of
    /// one of its owners at random; returns the requests to send, per peer, in nonce
    /// order, and opens the response phase for `response_wait`. What is asked of whom is
    /// kept, for [`PullEngine::take_asked`].
    pub(crate) fn end_digests(
        &mut self,
        now: Instant,
        response_wait: Duration,
        rng: &mut impl RngCore,
    ) -> Vec<(Peer, u64, Vec<PkiId>)> {
        let Some(round) = self.round.as_mut() else {
            return Vec::new();
        };
        let mut asks: BTreeMap<u64, Vec<PkiId>> = BTreeMap::new();
        for (item, owners) in core::mem::take(&mut round.owners) {
            let pick = owners[(rng.next_u64() % owners.len() as u64) as usize];
            asks.entry(pick).or_default().push(item);
        }
        round.phase = Phase::Responses(now + response_wait);
        let mut requests = Vec::with_capacity(asks.len());
        for (nonce, items) in asks {
            if let Some(peer) = round.peers.get(&nonce) {
                round.asked.insert(nonce, items.iter().cloned().collect());
                requests.push((peer.clone(), nonce, items));
            }
        }
        requests
    }

    /// An update from `from` echoing `nonce`: if it answers the request of our current
    /// round we sent that peer, in time, returns the items we asked of it, which an update
    /// may hold (each at most once; the caller checks, before any signature). They are
    /// taken: a peer answers a request with one update (Fabric's `SendRes`), so a second
    /// or replayed one is unsolicited and costs no verification.
    ///
    /// Fabric v2.4.9 is laxer: its `OnRes` checks only that the nonce is one of the
    /// round's and that responses are accepted, then adds every item of the update, and
    /// its certstore checks the certificate and signature of every item first; so a peer
    /// answering with thousands of copies of an item costs thousands of verifications.
    /// Here only what we requested of that peer, once, gets that far.
    pub(crate) fn take_asked(
        &mut self,
        now: Instant,
        from: &PkiId,
        nonce: u64,
    ) -> Result<BTreeSet<PkiId>, Refusal> {
        let round = self.round.as_mut().ok_or(Refusal::Unsolicited)?;
        let open = matches!(round.phase, Phase::Responses(t) if now < t);
        if !open || round.peers.get(&nonce).is_none_or(|p| p.pki_id != *from) {
            return Err(Refusal::Unsolicited);
        }
        round.asked.remove(&nonce).ok_or(Refusal::Unsolicited)
    }

    /// Ends the round if its response phase is over (`endPull`).
    pub(crate) fn end_round_if_due(&mut self, now: Instant) {
        if self
            .round
            .as_ref()
            .is_some_and(|r| matches!(r.phase, Phase::Responses(t) if t <= now))
        {
            self.round = None;
        }
    }

    /// A hello from `from`: remembers its nonce for `request_wait` so that the request
    /// that follows is served. Refused ([`Refusal::PeerFull`]) when `from` already has
    /// `per_peer` hellos pending. When `max` hellos are pending, the oldest hello of the
    /// sender holding the most makes room if that sender holds at least two more than
    /// `from`; otherwise refused ([`Refusal::Full`]). `Ok(true)` when a hello was evicted
    /// so. A hello already pending is refused ([`Refusal::Replayed`]): a peer starts each
    /// round with a fresh nonce (Fabric's `Hello`), and answering a replayed hello again
    /// sent a digest of everything we hold (up to megabytes) for each copy of a small
    /// message, past the per-peer bound.
    pub(crate) fn on_hello(
        &mut self,
        now: Instant,
        from: &PkiId,
        nonce: u64,
        request_wait: Duration,
        max: usize,
        per_peer: usize,
    ) -> Result<bool, Refusal> {
        self.hellos.expire(now);
        if self.hellos.contains(from, nonce) {
            return Err(Refusal::Replayed);
        }
        let held = self.hellos.held(from);
        if held >= per_peer {
            return Err(Refusal::PeerFull);
        }
        let evicted = self.hellos.len() >= max;
        if evicted && !self.hellos.evict_for(held) {
            return Err(Refusal::Full);
        }
        self.hellos.insert(from, nonce, now + request_wait);
        Ok(evicted)
    }

    /// Whether a request from `from` is to be served: it must echo a hello of its own we
    /// answered, still pending ([`Refusal::Unsolicited`] otherwise), whose request was not
    /// served yet ([`Refusal::Replayed`]). The hello's nonce is consumed: a peer sends one
    /// request per hello (Fabric's `SendReq`), so a replay within `request_wait` would only
    /// make us send the same update again, however large.
    ///
    /// Fabric v2.4.9's `OnReq` only checks that the nonce is among the hellos it received
    /// in the last `requestWaitTime` (from anyone), and answers every request echoing it.
    pub(crate) fn serves_request(
        &mut self,
        now: Instant,
        from: &PkiId,
        nonce: u64,
    ) -> Result<(), Refusal> {
        self.hellos.expire(now);
        self.hellos.serve(from, nonce)
    }

    /// The nonces of the current round, with their peers (for tests).
    #[cfg(test)]
    pub(crate) fn round_nonces(&self) -> Vec<(PkiId, u64)> {
        self.round.as_ref().map_or_else(Vec::new, |r| {
            r.peers
                .iter()
                .map(|(n, p)| (p.pki_id.clone(), *n))
                .collect()
        })
    }

    /// Hellos pending (for tests and bounds).
    #[cfg(test)]
    pub(crate) fn pending_hellos(&self) -> usize {
        self.hellos.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{SEC, T0};
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    fn peer(n: &str) -> Peer {
        Peer {
            pki_id: PkiId::new(Bytes::copy_from_slice(n.as_bytes())),
            endpoint: format!("{n}:7051"),
        }
    }

    fn id(n: &str) -> PkiId {
        peer(n).pki_id
    }

    use bytes::Bytes;

    fn started(peers: &[&str]) -> (PullEngine, Vec<(Peer, u64)>, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut e = PullEngine::default();
        e.arm(T0);
        assert!(e.round_due(T0));
        let hellos = e.begin_round(
            T0,
            4 * SEC,
            SEC,
            peers.iter().map(|p| peer(p)).collect(),
            &mut rng,
        );
        (e, hellos, rng)
    }

    #[test]
    fn a_round_goes_hello_digest_request_update_end() {
        let (mut e, hellos, mut rng) = started(&["a", "b"]);
        assert_eq!(hellos.len(), 2);
        assert_eq!(e.deadline(), Some(T0 + SEC));
        let (na, nb) = (hellos[0].1, hellos[1].1);
        assert_eq!(
            e.on_digest(T0, &id("a"), na, [id("x"), id("y")], |_| false, 10),
            Ok(0)
        );
        assert_eq!(
            e.on_digest(T0, &id("b"), nb, [id("y"), id("z")], |p| *p == id("z"), 10),
            Ok(0)
        );
        assert!(!e.digests_due(T0));
        assert!(e.digests_due(T0 + SEC));
        let reqs = e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        let mut asked: Vec<PkiId> = reqs.iter().flat_map(|r| r.2.clone()).collect();
        asked.sort();
        // x only from a; y from either; z we hold.
        assert_eq!(asked, vec![id("x"), id("y")]);
        let to_a = reqs.iter().find(|r| r.0 == peer("a")).unwrap();
        assert!(to_a.2.contains(&id("x")) && to_a.1 == na);
        let unsolicited = Err(Refusal::Unsolicited);
        assert_eq!(
            e.take_asked(T0 + SEC, &id("b"), na),
            unsolicited,
            "wrong sender"
        );
        assert_eq!(
            e.take_asked(T0 + 3 * SEC, &id("a"), na),
            unsolicited,
            "too late"
        );
        let asked_a: BTreeSet<PkiId> = to_a.2.iter().cloned().collect();
        assert_eq!(e.take_asked(T0 + SEC, &id("a"), na), Ok(asked_a));
        assert_eq!(
            e.take_asked(T0 + SEC, &id("a"), na),
            unsolicited,
            "answered"
        );
        e.end_round_if_due(T0 + 3 * SEC);
        assert_eq!(e.deadline(), Some(T0 + 4 * SEC));
        assert_eq!(
            e.take_asked(T0 + SEC, &id("b"), nb),
            unsolicited,
            "round over"
        );
    }

    #[test]
    fn digests_are_refused_out_of_round_phase_or_sender() {
        let mut e = PullEngine::default();
        assert_eq!(
            e.on_digest(T0, &id("a"), 1, [id("x")], |_| false, 10),
            Err(Refusal::Unsolicited)
        );
        let (mut e, hellos, mut rng) = started(&["a"]);
        let n = hellos[0].1;
        assert_eq!(
            e.on_digest(T0, &id("a"), n.wrapping_add(1), [id("x")], |_| false, 10),
            Err(Refusal::Unsolicited)
        );
        assert_eq!(
            e.on_digest(T0, &id("b"), n, [id("x")], |_| false, 10),
            Err(Refusal::Unsolicited)
        );
        assert_eq!(
            e.on_digest(T0 + SEC, &id("a"), n, [id("x")], |_| false, 10),
            Err(Refusal::Unsolicited),
            "digest phase over"
        );
        e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        assert_eq!(
            e.on_digest(T0 + SEC, &id("a"), n, [id("x")], |_| false, 10),
            Err(Refusal::Unsolicited)
        );
    }

    #[test]
    fn digest_items_are_bounded_per_round() {
        let (mut e, hellos, mut rng) = started(&["a"]);
        let items: Vec<PkiId> = (0..10).map(|i| id(&format!("i{i}"))).collect();
        assert_eq!(
            e.on_digest(T0, &id("a"), hellos[0].1, items, |_| false, 4),
            Ok(6)
        );
        let reqs = e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        assert_eq!(reqs[0].2.len(), 4);
    }

    /// An empty item names no identity: never asked for, and dropped where it is counted,
    /// beside the bound's drops.
    #[test]
    fn empty_digest_items_are_dropped_and_counted() {
        let (mut e, hellos, mut rng) = started(&["a"]);
        let items = [id(""), id("x"), id("")];
        assert_eq!(
            e.on_digest(T0, &id("a"), hellos[0].1, items, |_| false, 10),
            Ok(2)
        );
        let reqs = e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        assert_eq!(reqs[0].2, vec![id("x")]);
    }

    #[test]
    fn a_round_due_while_another_runs_waits_for_its_end() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut e = PullEngine::default();
        e.arm(T0);
        // Interval 1 s, waits 1 s + 2 s.
        e.begin_round(T0, SEC, SEC, vec![peer("a")], &mut rng);
        assert!(!e.round_due(T0 + SEC));
        assert_eq!(
            e.deadline(),
            Some(T0 + SEC),
            "the digest phase's end, not the past"
        );
        e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        assert!(!e.round_due(T0 + 2 * SEC));
        assert_eq!(e.deadline(), Some(T0 + 3 * SEC));
        e.end_round_if_due(T0 + 3 * SEC);
        assert!(e.round_due(T0 + 3 * SEC));
    }

    #[test]
    fn no_peers_no_round() {
        let (e, hellos, _) = started(&[]);
        assert!(hellos.is_empty());
        assert_eq!(e.deadline(), Some(T0 + 4 * SEC));
        assert!(!e.digests_due(T0 + 10 * SEC));
    }

    #[test]
    fn hellos_are_served_for_request_wait_and_bounded() {
        let mut e = PullEngine::default();
        let w = Duration::from_millis(1500);
        assert_eq!(e.on_hello(T0, &id("a"), 5, w, 2, 2), Ok(false));
        assert_eq!(
            e.serves_request(T0 + SEC, &id("b"), 5),
            Err(Refusal::Unsolicited),
            "another peer's nonce"
        );
        assert_eq!(e.serves_request(T0 + SEC, &id("a"), 5), Ok(()));
        assert_eq!(
            e.serves_request(T0 + SEC, &id("a"), 5),
            Err(Refusal::Replayed),
            "served once"
        );
        assert_eq!(
            e.serves_request(T0 + SEC, &id("a"), 6),
            Err(Refusal::Unsolicited)
        );
        assert_eq!(e.on_hello(T0, &id("b"), 5, w, 2, 2), Ok(false));
        assert_eq!(e.on_hello(T0, &id("c"), 5, w, 2, 2), Err(Refusal::Full));
        assert_eq!(
            e.serves_request(T0 + w, &id("a"), 5),
            Err(Refusal::Unsolicited),
            "expired"
        );
        assert_eq!(e.pending_hellos(), 0);
        assert_eq!(e.on_hello(T0 + w, &id("c"), 5, w, 2, 2), Ok(false));
    }

    #[test]
    fn hellos_are_bounded_per_sender_and_the_most_loaded_makes_room() {
        let mut e = PullEngine::default();
        let w = Duration::from_millis(1500);
        let hello = |e: &mut PullEngine, t, who, n| e.on_hello(t, &id(who), n, w, 4, 2);
        assert_eq!(hello(&mut e, T0, "a", 1), Ok(false));
        assert_eq!(
            hello(&mut e, T0, "a", 1),
            Err(Refusal::Replayed),
            "already pending"
        );
        assert_eq!(hello(&mut e, T0 + SEC, "a", 2), Ok(false));
        assert_eq!(hello(&mut e, T0 + SEC, "a", 3), Err(Refusal::PeerFull));
        assert_eq!(hello(&mut e, T0 + SEC, "b", 1), Ok(false));
        assert_eq!(hello(&mut e, T0 + SEC, "c", 1), Ok(false));
        assert_eq!(e.pending_hellos(), 4);
        // b holds one, a (the most) two: b would only trade places with a.
        assert_eq!(hello(&mut e, T0 + SEC, "b", 2), Err(Refusal::Full));
        // d holds none: a's oldest hello makes room.
        assert_eq!(hello(&mut e, T0 + SEC, "d", 1), Ok(true));
        assert_eq!(e.pending_hellos(), 4);
        assert_eq!(
            e.serves_request(T0 + SEC, &id("a"), 1),
            Err(Refusal::Unsolicited),
            "evicted"
        );
        assert_eq!(e.serves_request(T0 + SEC, &id("a"), 2), Ok(()));
        // Everyone holds one: a newcomer is refused.
        assert_eq!(hello(&mut e, T0 + SEC, "f", 1), Err(Refusal::Full));
        // Expiry forgets every table's entries: a's hello 2 expires last.
        assert_eq!(
            e.serves_request(T0 + SEC + w - SEC / 2, &id("a"), 2),
            Err(Refusal::Replayed),
            "a served hello stays pending, consumed"
        );
        assert_eq!(e.pending_hellos(), 4);
        assert_eq!(
            e.serves_request(T0 + SEC + w, &id("a"), 2),
            Err(Refusal::Unsolicited)
        );
        assert_eq!(e.pending_hellos(), 0);
        assert!(e.hellos.by_sender.is_empty() && e.hellos.by_load.is_empty());
        assert_eq!(hello(&mut e, T0 + SEC + w, "a", 3), Ok(false));
    }

    #[test]
    fn only_a_peer_asked_something_may_answer_and_only_once() {
        let (mut e, hellos, mut rng) = started(&["a", "b"]);
        let (na, nb) = (hellos[0].1, hellos[1].1);
        e.on_digest(T0, &id("a"), na, [id("x")], |_| false, 10)
            .unwrap();
        e.on_digest(T0, &id("b"), nb, [id("y")], |p| *p == id("y"), 10)
            .unwrap();
        e.end_digests(T0 + SEC, 2 * SEC, &mut rng);
        assert_eq!(
            e.take_asked(T0 + SEC, &id("b"), nb),
            Err(Refusal::Unsolicited),
            "b was asked nothing"
        );
        assert_eq!(
            e.take_asked(T0 + SEC, &id("a"), na),
            Ok([id("x")].into_iter().collect())
        );
        assert_eq!(
            e.take_asked(T0 + SEC, &id("a"), na),
            Err(Refusal::Unsolicited)
        );
    }

    /// An item advertised by several peers keeps each of them as an owner, once, so that
    /// its request goes to one of them at random (Fabric's `processIncomingDigests`), not
    /// always to the first that advertised it; a peer listing it twice counts once.
    #[test]
    fn an_item_advertised_by_several_peers_keeps_each_owner_once() {
        let (mut e, hellos, _) = started(&["a", "b"]);
        let (na, nb) = (hellos[0].1, hellos[1].1);
        let twice = [id("y"), id("y")];
        assert_eq!(e.on_digest(T0, &id("a"), na, twice, |_| false, 10), Ok(0));
        assert_eq!(
            e.on_digest(T0, &id("b"), nb, [id("y")], |_| false, 10),
            Ok(0)
        );
        let owners = &e.round.as_ref().unwrap().owners;
        assert_eq!(owners.get(&id("y")), Some(&vec![na, nb]));
    }
}
