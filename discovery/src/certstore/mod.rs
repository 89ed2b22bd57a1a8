//! Fabric's certstore (`gossip/gossip/certstore.go`): the identity pull.
//!
//! A Fabric peer puts its identity in its alive messages only during the first
//! `publish_cert_period` (10 s) after it starts. Afterwards a member that never handshook
//! with it can verify its alive messages only if it learnt its certificate some other way:
//! every peer pulls identities from `pull_peer_num` random alive members every
//! `pull_interval`, in rounds of the pull protocol with `PullMsgType::IDENTITY_MSG`
//! (module `pull`: Hello → DataDigest → DataRequest → DataUpdate). The items are the owners'
//! signed `PeerIdentity` messages: each is checked ([`wire::validate_identity_msg`]:
//! PKI-ID = hash of the certificate, MSP accepts it, signed by it, unexpired), stored with
//! its envelope, and served in turn to those who pull from us, so an identity spreads to
//! members its owner never talks to. A later alive message of that member then validates.
//! One item failing a check refuses its whole update, as in Fabric, except an expired one,
//! which is left out alone and not asked for again for a while (Fabric's identity mapper
//! refuses it after the update was taken).
//!
//! What we show whom follows Fabric's `sameOrgOrOurOrgPullFilter`: everything to a peer of
//! our organization; to a peer of another organization only identities of its
//! organization or ours whose owner has an external endpoint.
//!
//! Bounds: at most `max_identities` identities held, holding at most
//! `max_identity_bytes` in all, other organizations three quarters of each, shared out
//! among them as membership is (a newcomer may take the place of an identity of an
//! organization holding more; otherwise it is refused and counted), each pulled identity
//! message within [`wire::IdentityLimits`] (checked before it is decoded), at most as many
//! items asked for per round, at most `max_pending_hellos` hellos answered
//! and pending, `max_pending_hellos_per_peer` of them per peer; identities unused for
//! `identity_usage_threshold` (Fabric: one hour) or expired are purged, and those unused
//! are not pulled again for as long (at most `max_identities` remembered), unless their
//! owner shows it is back. An update may hold
//! only the items we asked of its sender, each once, checked before any signature: at most
//! one verification per item requested.

pub(crate) mod identities;
pub(crate) mod pull;
#[cfg(test)]
mod tests;
pub mod wire;

use crate::machine::Discovery;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::gossip_message::Content;
use fabric_gossip_core::{
    Comm, Instant, PkiId, ReceivedMessage, RemotePeer, Security, SignedMessage,
};
use identities::Identities;
use pull::{Peer, PullEngine, Refusal};
use wire::{IdentityMsgError, ValidIdentity};

/// The identity pull's settings; the waits are Fabric's `peer.gossip.digestWaitTime`,
/// `requestWaitTime` and `responseWaitTime`. The period and the number of peers asked are
/// the membership's [`pull_interval`](crate::DiscoveryConfig::pull_interval) and
/// [`pull_peer_num`](crate::DiscoveryConfig::pull_peer_num), as in Fabric.
///
/// Change it in place, as [`DiscoveryConfig::certstore`](crate::DiscoveryConfig::certstore)
/// (`cfg.certstore.digest_wait = …`), or start from [`CertStoreConfig::default`] (Fabric's
/// values): it is `#[non_exhaustive]` for the same reason as `DiscoveryConfig`, so a
/// setting added later breaks no build.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertStoreConfig {
    /// Runs the identity pull (on by default, always on in Fabric; off only to show what
    /// it is for).
    pub enabled: bool,
    /// How long a round accepts digests after its hellos (1 s).
    pub digest_wait: Duration,
    /// How long a hello we answered keeps its nonce valid for a request (1.5 s).
    pub request_wait: Duration,
    /// How long a round accepts updates after its requests (2 s).
    pub response_wait: Duration,
    /// An identity that verified nothing for this long is purged (Fabric's identity
    /// mapper usage threshold, one hour); the sweep runs every tenth of it.
    pub identity_usage_threshold: Duration,
    /// Upper bound on identities held (100,000 by default); also on distinct items asked
    /// for per round.
    pub max_identities: usize,
    /// Upper bound on what the identities held take in all, in bytes (each its signed
    /// message, certificate and PKI-ID, as the store counts them); beyond it new
    /// identities are refused (`identities_refused_bytes`). Each pulled identity is at most
    /// about 72 KiB ([`wire::IdentityLimits`]), so without it a hostile organization's CA
    /// minting `max_identities` large identities could make every node hold 7 GB. Real
    /// identities take 2–6 KiB here: the default, 64 MiB (as
    /// [`max_membership_bytes`](crate::DiscoveryConfig::max_membership_bytes)), holds
    /// [`max_members`](crate::DiscoveryConfig::max_members) (10,000) of them, and keeps an
    /// update serving all we hold within the default message size limit (100 MiB).
    /// Other organizations' identities may take three quarters of this and of
    /// `max_identities`; the rest is kept for ours. With either bound reached, a newcomer
    /// of an organization holding a smaller share takes the place of the least recently
    /// used identity of the organization holding the largest (`identities_evicted`).
    pub max_identity_bytes: usize,
    /// Upper bound on answered hellos waiting for their request, all peers together (4,096
    /// by default; each is kept `request_wait`). When it is reached, a hello of a peer
    /// holding fewer takes the place of the oldest hello of the peer holding the most (if
    /// that one holds at least two more), so that the table is shared out rather than
    /// first come, first served.
    pub max_pending_hellos: usize,
    /// Upper bound on answered hellos of one peer waiting for their request (2). A peer
    /// sends one hello per round, one round per `pull_interval` (4 s), and each is kept
    /// only `request_wait` (1.5 s): an honest peer has one pending, two if it restarted
    /// with a new round. Without this bound one peer sending hellos faster than they
    /// expire filled `max_pending_hellos` alone, and every other peer's hello was refused.
    pub max_pending_hellos_per_peer: usize,
}

impl Default for CertStoreConfig {
    fn default() -> Self {
        CertStoreConfig {
            enabled: true,
            digest_wait: Duration::from_millis(1000),
            request_wait: Duration::from_millis(1500),
            response_wait: Duration::from_millis(2000),
            identity_usage_threshold: Duration::from_secs(3600),
            max_identities: 100_000,
            max_identity_bytes: 64 << 20,
            max_pending_hellos: 4096,
            max_pending_hellos_per_peer: 2,
        }
    }
}

impl CertStoreConfig {
    /// The durations that must be positive, by name.
    pub(crate) fn durations(&self) -> [(&'static str, Duration); 4] {
        [
            ("certstore.digest_wait", self.digest_wait),
            ("certstore.request_wait", self.request_wait),
            ("certstore.response_wait", self.response_wait),
            (
                "certstore.identity_usage_threshold",
                self.identity_usage_threshold,
            ),
        ]
    }
}

/// Counters of the identity pull. Every refusal has its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertStoreStats {
    /// Hellos we sent (one per peer per round).
    pub hellos_sent: u64,
    /// Hellos we received.
    pub hellos_received: u64,
    /// Hellos refused because `max_pending_hellos` were pending and no peer held at least
    /// two more than the sender (the table is shared out evenly).
    pub hellos_refused_full: u64,
    /// Hellos refused because their sender had `max_pending_hellos_per_peer` pending: a
    /// peer sending hellos faster than one per round (a flood) is refused here, before
    /// it can fill the table shared by all peers. No digest is computed for it.
    pub hellos_refused_peer: u64,
    /// Hellos refused because the same hello of the same peer is still pending: a peer
    /// sends each round's hello once, with a fresh nonce, and a replayed 12-byte hello had
    /// been answered each time with a digest of every identity held (megabytes).
    pub hellos_replayed: u64,
    /// Pending hellos forgotten, with `max_pending_hellos` reached, to make room for a
    /// hello of a peer holding fewer; the evicted hello's request will be refused as
    /// `requests_unsolicited`.
    pub hellos_evicted: u64,
    /// Digests we sent.
    pub digests_sent: u64,
    /// Digests we received.
    pub digests_received: u64,
    /// Digests refused: no round of ours with that nonce, phase over, or another sender.
    pub digests_unsolicited: u64,
    /// Advertised items not asked for because the round's bound was reached, or empty
    /// (naming no identity), or not read at all: only the first `max_identities` items of
    /// a digest are (no peer holds more; 3 million items of one digest had held the
    /// node's lock 1.3 s).
    pub digest_items_dropped: u64,
    /// Requests we sent.
    pub requests_sent: u64,
    /// Requests we received.
    pub requests_received: u64,
    /// Requests refused: they echo no pending hello of the sender's.
    pub requests_unsolicited: u64,
    /// Requests refused because a request echoing the same hello was already served:
    /// each hello's nonce is served once. A requester replaying a 44-byte request used to
    /// get the same update (up to every identity we hold) again for each copy.
    pub requests_replayed: u64,
    /// Items of requests not read: only the first `max_identities` items of a request are
    /// looked up (a request asks only for what our digest, never longer, advertised; 3
    /// million items of one request had held the node's lock 2.8 s).
    pub request_items_dropped: u64,
    /// Updates we sent.
    pub updates_sent: u64,
    /// Updates we received.
    pub updates_received: u64,
    /// Updates refused unread: not an answer to a request of our current round, in time,
    /// from the peer asked; or a second answer to the same request.
    pub updates_unsolicited: u64,
    /// Updates refused whole because one item failed validation (as Fabric does); the
    /// item's reason is counted too (`identity_malformed`, `identity_bad`,
    /// `identity_bad_signature`). Updates refused for what they hold rather than for an
    /// item's validity are `updates_unrequested`, not counted here.
    pub updates_refused: u64,
    /// Updates refused whole, before any certificate or signature check, because they
    /// hold an item we did not ask of their sender in this round, or one item twice. A
    /// peer we pull from could otherwise make us verify thousands of copies of its own
    /// valid identity per update (each an X.509 chain check and an ECDSA verification).
    pub updates_unrequested: u64,
    /// Items refused as malformed (unsigned, undecodable, not a PeerIdentity, empty fields).
    pub identity_malformed: u64,
    /// Items refused as too large ([`wire::IdentityLimits`]): an envelope over the bound
    /// before it is decoded, or a certificate or metadata over theirs; before any
    /// certificate or signature check. A member serving its own identity with 90 MB of
    /// metadata had every node hold and re-serve it.
    pub identity_too_large: u64,
    /// Items whose certificate is refused: PKI-ID mismatch, MSP refusal.
    pub identity_bad: u64,
    /// Items correctly signed by a certificate that has expired: not stored, the rest of
    /// their update kept, and not asked for again for `identity_usage_threshold` (Fabric
    /// asks for such an item once and keeps it in its pull state, while its identity
    /// mapper refuses it).
    pub identity_expired: u64,
    /// Items not signed by the certificate they carry (forgeries).
    pub identity_bad_signature: u64,
    /// New identities learnt by pull.
    pub identities_learned: u64,
    /// New identities refused because `max_identities` are held (or other
    /// organizations' three quarters of it) and none could take another's place.
    pub identities_refused_full: u64,
    /// New identities refused because they would take the bytes held past
    /// `max_identity_bytes` (or other organizations' three quarters of it) and none could
    /// take another's place.
    pub identities_refused_bytes: u64,
    /// Identities dropped, the store full, for a newcomer of an organization holding a
    /// smaller share (or of ours): each the least recently used of the organization
    /// holding the largest share. Other organizations share the store as they share
    /// membership, so that a hostile organization's CA filling it first does not keep a
    /// third organization's newcomers out.
    pub identities_evicted: u64,
    /// Identities purged because their certificate expired.
    pub identities_expired: u64,
    /// Identities purged because they verified nothing for the usage threshold.
    pub identities_unused: u64,
    /// Advertised identities not asked for (one per digest advertising one), or received
    /// and not stored, because we purged them for disuse, or received them expired
    /// (`identity_expired`), less than the usage threshold ago. One purged for disuse is
    /// the identity of a member that has gone, still served by peers that have not purged
    /// it yet: pulled back, it started a new hour of disuse, and with nodes purging at
    /// different times it went round forever. Its owner's alive message or handshake,
    /// verified, ends the period at once, and so does a new alive message of its that we
    /// cannot verify without the identity (`identities_remembered_again`).
    pub identities_skipped_forgotten: u64,
    /// Identities purged for disuse whose period ended early because a new alive message
    /// of their owner came that we could not verify without them: its owner is back, and
    /// the next pull round may bring the identity again.
    pub identities_remembered_again: u64,
    /// Identities purged because the security provider refused them when comm
    /// revalidated (a revoked certificate, an MSP no longer trusted).
    pub identities_refused_later: u64,
}

impl CertStoreStats {
    /// Counts one refused identity message under its reason.
    pub(crate) fn count_refused(&mut self, e: &IdentityMsgError) {
        match e {
            IdentityMsgError::Unsigned
            | IdentityMsgError::Undecodable(_)
            | IdentityMsgError::NotIdentity
            | IdentityMsgError::MissingField(_) => self.identity_malformed += 1,
            IdentityMsgError::IdentityMismatch | IdentityMsgError::BadIdentity(_) => {
                self.identity_bad += 1;
            }
            IdentityMsgError::IdentityExpired => self.identity_expired += 1,
            IdentityMsgError::BadSignature(_) => self.identity_bad_signature += 1,
            IdentityMsgError::TooLarge { .. } => self.identity_too_large += 1,
        }
    }
}

/// The certstore's state inside [`Discovery`].
#[derive(Debug, Default)]
pub(crate) struct CertStore {
    pub(crate) identities: Identities,
    pub(crate) engine: PullEngine,
    /// Next sweep of expired and unused identities.
    sweep: Option<Instant>,
}

impl CertStore {
    /// The next deadline of the pull or the sweep.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.engine.deadline(), self.sweep]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Discovery {
    /// Stores our own signed identity message and arms the first round one pull interval
    /// from now (`newCertStore`).
    pub(crate) fn certstore_start<S: Security>(&mut self, now: Instant, comm: &Comm<S>) {
        if !self.cfg.certstore.enabled {
            return;
        }
        match wire::own_identity_message(comm.security()) {
            Ok(envelope) => {
                let own = ValidIdentity {
                    pki_id: self.pki_id.clone(),
                    cert: comm.identity().clone(),
                    expires: comm.security().expiration(comm.identity()).ok().flatten(),
                    envelope,
                };
                self.certstore
                    .identities
                    .set_own(own, self.my_org.clone(), now);
            }
            Err(error) => self.stats.cannot_sign("identity message", &error),
        }
        self.certstore.engine.arm(now + self.cfg.pull_interval);
        self.certstore.sweep = Some(now + self.cfg.certstore.identity_usage_threshold / 10);
    }

    /// How many identities the certstore holds (ours included): what we can serve.
    pub fn pulled_identities(&self) -> usize {
        self.certstore.identities.len()
    }

    /// An identity the pull brought for `pki_id`, if held and unexpired.
    pub(crate) fn pulled_identity(&self, pki_id: &PkiId, now: Instant) -> Option<&bytes::Bytes> {
        self.certstore.identities.get(pki_id, now).map(|e| &e.cert)
    }

    /// Runs what is due: end of the digest phase (requests), end of the round, a new round
    /// (hellos), the sweep.
    pub(crate) fn certstore_tick<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        if !self.cfg.certstore.enabled {
            return;
        }
        if self.certstore.engine.digests_due(now) {
            let asks = self.certstore.engine.end_digests(
                now,
                self.cfg.certstore.response_wait,
                &mut self.rng,
            );
            for (peer, nonce, items) in asks {
                let msg = SignedMessage::noop(wire::request(nonce, &items));
                if self.send_pull(now, comm, &msg, &peer) {
                    self.stats.certstore.requests_sent += 1;
                }
            }
        }
        self.certstore.engine.end_round_if_due(now);
        if self.certstore.engine.round_due(now) {
            let peers = self.pick_alive(self.cfg.pull_peer_num, None, |_, m| {
                Some(Peer {
                    pki_id: m.pki_id().clone(),
                    endpoint: m.preferred_endpoint().to_owned(),
                })
            });
            let hellos = self.certstore.engine.begin_round(
                now,
                self.cfg.pull_interval,
                self.cfg.certstore.digest_wait,
                peers,
                &mut self.rng,
            );
            for (peer, nonce) in hellos {
                let msg = SignedMessage::noop(wire::hello(nonce));
                if self.send_pull(now, comm, &msg, &peer) {
                    self.stats.certstore.hellos_sent += 1;
                }
            }
        }
        if self.certstore.sweep.is_some_and(|t| t <= now) {
            let threshold = self.cfg.certstore.identity_usage_threshold;
            self.certstore.sweep = Some(now + threshold / 10);
            let purged =
                self.certstore
                    .identities
                    .purge(now, threshold, self.cfg.certstore.max_identities);
            self.stats.certstore.identities_expired += purged.expired;
            self.stats.certstore.identities_unused += purged.unused;
        }
    }

    /// Comm purged `pki_id`'s identity for disuse (`Event::IdentityPurged`): the
    /// certstore forgets it too and does not pull it back for a usage threshold, as
    /// Fabric's `onPurge` removes it from the pull (`certPuller.Remove`). Its own sweep
    /// would find it unused a little later anyway (whatever verified an alive message of
    /// its owner marked both copies used); this keeps the two stores in step. Members are
    /// left alone, as in Fabric: a member whose identity went unused for an hour has sent
    /// no alive message we verified for as long, and membership expires it by itself.
    pub(crate) fn identity_unused(&mut self, now: Instant, pki_id: &PkiId) {
        if !self.cfg.certstore.enabled {
            return;
        }
        let end = now + self.cfg.certstore.identity_usage_threshold;
        let max = self.cfg.certstore.max_identities;
        if self.certstore.identities.forget_unused(pki_id, end, max) {
            self.stats.certstore.identities_unused += 1;
        }
    }

    fn send_pull<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &SignedMessage,
        peer: &Peer,
    ) -> bool {
        let to = RemotePeer::new(peer.endpoint.clone(), peer.pki_id.clone());
        match comm.send(now, msg, &[to]) {
            Ok(()) => true,
            Err(error) => {
                self.stats
                    .comm_refused("send an identity pull message", &error);
                false
            }
        }
    }

    fn respond_pull<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
        answer: fabric_gossip_core::proto::gossip::GossipMessage,
    ) -> bool {
        match comm.respond(now, msg.conn, answer) {
            Ok(()) => true,
            Err(error) => {
                self.stats
                    .comm_refused("answer an identity pull message", &error);
                false
            }
        }
    }

    /// Fabric's `sameOrgOrOurOrgPullFilter`: which of our identities the sender of `msg`
    /// may learn from us. `None`: none (its organization is unknown or empty).
    fn shown_to<S: Security>(
        &self,
        comm: &Comm<S>,
        msg: &ReceivedMessage,
    ) -> Option<impl Fn(&PkiId, Option<&bytes::Bytes>) -> bool + '_> {
        // Fabric takes an empty organization for an unknown one.
        let peer_org = comm
            .security()
            .organization_of(&msg.info.identity)
            .filter(|o| !o.is_empty())?;
        let same_org = self.my_org.as_ref() == Some(&peer_org);
        let my_org = self.my_org.clone();
        let me = self.pki_id.clone();
        let i_am_external = !self.cfg.external_endpoint.is_empty();
        let membership = &self.membership;
        Some(move |item: &PkiId, org: Option<&bytes::Bytes>| {
            if same_org {
                return true;
            }
            let Some(org) = org.filter(|o| !o.is_empty()) else {
                return false;
            };
            let has_external = if *item == me {
                i_am_external
            } else {
                membership.get(item).is_some_and(|m| !m.endpoint.is_empty())
            };
            has_external && (Some(org) == my_org.as_ref() || *org == peer_org)
        })
    }

    /// The identities of `candidates` (all we hold when `None`) that the sender of `msg`
    /// may learn, in PKI-ID order.
    fn visible<S: Security>(
        &self,
        now: Instant,
        comm: &Comm<S>,
        msg: &ReceivedMessage,
        candidates: Option<&[bytes::Bytes]>,
    ) -> Vec<(PkiId, fabric_gossip_core::proto::gossip::Envelope)> {
        let Some(shown) = self.shown_to(comm, msg) else {
            return Vec::new();
        };
        let ids = &self.certstore.identities;
        let pick = |k: &PkiId, e: &identities::Entry| {
            shown(k, e.org.as_ref()).then(|| (k.clone(), e.envelope.clone()))
        };
        match candidates {
            None => ids.iter(now).filter_map(|(k, e)| pick(k, e)).collect(),
            Some(items) => {
                let wanted: std::collections::BTreeSet<PkiId> =
                    items.iter().map(|b| PkiId(b.clone())).collect();
                wanted
                    .iter()
                    .filter_map(|k| pick(k, ids.get(k, now)?))
                    .collect()
            }
        }
    }

    /// A pull message of the identity pull (`certStore.handleMessage`).
    pub(crate) fn handle_pull<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
    ) {
        if !self.cfg.certstore.enabled {
            return;
        }
        let from = msg.sender().clone();
        let cs = &self.cfg.certstore;
        match &msg.message.content {
            Some(Content::Hello(h)) => {
                self.stats.certstore.hellos_received += 1;
                let pending = self.certstore.engine.on_hello(
                    now,
                    &from,
                    h.nonce,
                    cs.request_wait,
                    cs.max_pending_hellos,
                    cs.max_pending_hellos_per_peer,
                );
                match pending {
                    Ok(evicted) => self.stats.certstore.hellos_evicted += u64::from(evicted),
                    Err(Refusal::PeerFull) => {
                        self.stats.certstore.hellos_refused_peer += 1;
                        return;
                    }
                    Err(Refusal::Replayed) => {
                        self.stats.certstore.hellos_replayed += 1;
                        return;
                    }
                    Err(_) => {
                        self.stats.certstore.hellos_refused_full += 1;
                        return;
                    }
                }
                let items: Vec<PkiId> = self
                    .visible(now, comm, msg, None)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                if !items.is_empty()
                    && self.respond_pull(now, comm, msg, wire::digest(h.nonce, &items))
                {
                    self.stats.certstore.digests_sent += 1;
                }
            }
            Some(Content::DataDig(d)) => {
                self.stats.certstore.digests_received += 1;
                let ids = &self.certstore.identities;
                let skipped = core::cell::Cell::new(0u64);
                let (read, unread) = first(&d.digests, cs.max_identities);
                let r = self.certstore.engine.on_digest(
                    now,
                    &from,
                    d.nonce,
                    read.iter().map(|b| PkiId(b.clone())),
                    |k| {
                        ids.has(k, now)
                            || (ids.is_forgotten(k, now) && {
                                skipped.set(skipped.get() + 1);
                                true
                            })
                    },
                    cs.max_identities.saturating_sub(ids.len()),
                );
                self.stats.certstore.identities_skipped_forgotten += skipped.get();
                match r {
                    Ok(dropped) => {
                        self.stats.certstore.digest_items_dropped += (dropped + unread) as u64
                    }
                    Err(_) => self.stats.certstore.digests_unsolicited += 1,
                }
            }
            Some(Content::DataReq(r)) => {
                self.stats.certstore.requests_received += 1;
                match self.certstore.engine.serves_request(now, &from, r.nonce) {
                    Ok(()) => {}
                    Err(Refusal::Replayed) => {
                        self.stats.certstore.requests_replayed += 1;
                        tracing::debug!(sender = %from, "identity request replayed: not served");
                        return;
                    }
                    Err(_) => {
                        self.stats.certstore.requests_unsolicited += 1;
                        return;
                    }
                }
                let (read, unread) = first(&r.digests, cs.max_identities);
                self.stats.certstore.request_items_dropped += unread as u64;
                let data: Vec<_> = self
                    .visible(now, comm, msg, Some(read))
                    .into_iter()
                    .map(|(_, e)| e)
                    .collect();
                if !data.is_empty()
                    && self.respond_pull(now, comm, msg, wire::update(r.nonce, data))
                {
                    self.stats.certstore.updates_sent += 1;
                }
            }
            Some(Content::DataUpdate(u)) => {
                self.stats.certstore.updates_received += 1;
                let Ok(asked) = self.certstore.engine.take_asked(now, &from, u.nonce) else {
                    self.stats.certstore.updates_unsolicited += 1;
                    return;
                };
                self.learn_identities(now, comm, &from, asked, &u.data);
            }
            _ => {}
        }
    }

    /// Screens an update, then validates every item, then stores them; one bad item refuses
    /// the whole update, as Fabric's certstore does.
    ///
    /// The screen runs first and costs no crypto: every item must be within
    /// [`wire::IdentityLimits`] (its envelope checked before it is decoded; else
    /// `updates_refused` under `identity_too_large`) and decode to a
    /// `PeerIdentity` (else `updates_refused` under `identity_malformed`) whose PKI-ID is
    /// one of the `asked` items (those we requested of `from` with this nonce), each at
    /// most once (else `updates_unrequested`). So an update costs at most one certificate
    /// check and one signature verification per item we asked of its sender, however
    /// many items it carries.
    fn learn_identities<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        from: &PkiId,
        mut asked: std::collections::BTreeSet<PkiId>,
        data: &[fabric_gossip_core::proto::gossip::Envelope],
    ) {
        let mut unrequested = data.len() > asked.len();
        let mut parsed = Vec::with_capacity(data.len());
        let limits =
            wire::IdentityLimits::new(comm.config().max_identity_size, self.cfg.max_metadata_size);
        for env in data {
            if unrequested {
                break;
            }
            let checked = limits.check_envelope(env).and_then(|()| {
                let id = wire::parse_identity_msg(env)?;
                limits.check_parsed(&id)?;
                Ok(id)
            });
            match checked {
                Ok(id) => {
                    unrequested = !asked.remove(&PkiId(id.pki_id.clone()));
                    parsed.push((id, env));
                }
                Err(e) => {
                    self.stats.certstore.count_refused(&e);
                    self.stats.certstore.updates_refused += 1;
                    tracing::warn!(sender = %from, error = %e, "identity update refused");
                    return;
                }
            }
        }
        if unrequested {
            self.stats.certstore.updates_unrequested += 1;
            tracing::warn!(
                sender = %from,
                items = data.len(),
                "identity update refused: unrequested items"
            );
            return;
        }
        let mut valid = Vec::with_capacity(parsed.len());
        let mut expired = Vec::new();
        for (id, env) in parsed {
            let pki_id = PkiId(id.pki_id.clone());
            match wire::validate_parsed(comm.security(), id, env, now) {
                Ok(v) => valid.push(v),
                // Fabric's update check leaves expiry to its identity mapper, item by item,
                // after the update is taken: the other items are kept, and the expired one
                // stays in its pull state, never asked for again. Refusing the update
                // instead lost the others' identities, and asking for it again every round
                // (a peer whose clock runs behind ours still serves it) did so forever.
                // Remembered once the whole update is taken.
                Err(IdentityMsgError::IdentityExpired) => expired.push(pki_id),
                Err(e) => {
                    self.stats.certstore.count_refused(&e);
                    self.stats.certstore.updates_refused += 1;
                    // The identity refused, not only who passed it on: a live check read
                    // the sender's PKI-ID alone as the sender refused (2026-12-07).
                    tracing::warn!(
                        sender = %from,
                        identity_of = %pki_id,
                        error = %e,
                        "identity update refused"
                    );
                    return;
                }
            }
        }
        let end = now + self.cfg.certstore.identity_usage_threshold;
        for pki_id in expired {
            self.stats.certstore.identity_expired += 1;
            let max = self.cfg.certstore.max_identities;
            self.certstore.identities.skip_expired(pki_id, end, max);
        }
        let bounds = identities::Bounds {
            count: self.cfg.certstore.max_identities,
            bytes: self.cfg.certstore.max_identity_bytes,
        };
        for v in valid {
            // Asked for before we purged it, in this round.
            if self.certstore.identities.is_forgotten(&v.pki_id, now) {
                self.stats.certstore.identities_skipped_forgotten += 1;
                continue;
            }
            crate::machine::share_identity(comm, now, &v.pki_id, &v.cert);
            let org = comm.security().organization_of(&v.cert);
            match self.certstore.identities.put(v, org, now, bounds) {
                Ok(identities::Stored::New) => self.stats.certstore.identities_learned += 1,
                Ok(identities::Stored::Evicting(n)) => {
                    self.stats.certstore.identities_learned += 1;
                    self.stats.certstore.identities_evicted += n as u64;
                }
                Ok(identities::Stored::Held) => {}
                Err(identities::Full::Count) => self.stats.certstore.identities_refused_full += 1,
                Err(identities::Full::Bytes) => {
                    self.stats.certstore.identities_refused_bytes += 1;
                }
            }
        }
    }
}

/// The first `max` of a pull message's `items`, and how many are left unread: each item
/// read costs a lookup under the node's lock, and a message may hold millions.
fn first(items: &[bytes::Bytes], max: usize) -> (&[bytes::Bytes], usize) {
    let read = items.len().min(max);
    (&items[..read], items.len() - read)
}
