//! The identities the certstore holds (Fabric's identity mapper, for what the pull brings):
//! each with its owner's signed `PeerIdentity` message, which is what we serve to others.
//! Bounded; expired and long-unused entries are purged, our own never.

use super::wire::ValidIdentity;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{Instant, PkiId, detached_envelope};
use std::collections::BTreeMap;

/// One identity.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) cert: Bytes,
    pub(crate) envelope: Envelope,
    pub(crate) org: Option<Bytes>,
    pub(crate) expires: Option<Instant>,
    /// Last time it verified a message (Fabric's `lastAccessTime`).
    pub(crate) last_used: Instant,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// What a purge removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) expired: u64,
    pub(crate) unused: u64,
}

/// PKI-ID → identity, in PKI-ID order (deterministic digests).
#[derive(Debug, Default)]
pub(crate) struct Identities {
    map: BTreeMap<PkiId, Entry>,
    own: PkiId,
}

impl Identities {
    /// Stores our own identity message (never purged).
    pub(crate) fn set_own(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        self.own = id.pki_id.clone();
        self.insert(id, org, now);
    }

    /// Kept for as long as the identity is: its bytes are copied out of the buffer the
    /// message arrived in (see `detached_envelope`).
    fn insert(&mut self, id: ValidIdentity, org: Option<Bytes>, now: Instant) {
        self.map.insert(
            PkiId(Bytes::copy_from_slice(&id.pki_id.0)),
            Entry {
                cert: Bytes::copy_from_slice(&id.cert),
                envelope: detached_envelope(&id.envelope),
                org,
                expires: id.expires,
                last_used: now,
            },
        );
    }

    /// Stores a validated identity unless one is held for its PKI-ID (Fabric keeps the
    /// first). `Ok(true)` if new; `Err(())` when `capacity` is reached.
    pub(crate) fn put(
        &mut self,
        id: ValidIdentity,
        org: Option<Bytes>,
        now: Instant,
        capacity: usize,
    ) -> Result<bool, ()> {
        if let Some(e) = self.map.get(&id.pki_id)
            && !e.expired(now)
        {
            return Ok(false);
        }
        if !self.map.contains_key(&id.pki_id) && self.map.len() >= capacity {
            return Err(());
        }
        self.insert(id, org, now);
        Ok(true)
    }

    /// The unexpired entry of a PKI-ID.
    pub(crate) fn get(&self, pki_id: &PkiId, now: Instant) -> Option<&Entry> {
        self.map.get(pki_id).filter(|e| !e.expired(now))
    }

    /// Whether an unexpired identity is held for `pki_id`.
    pub(crate) fn has(&self, pki_id: &PkiId, now: Instant) -> bool {
        self.get(pki_id, now).is_some()
    }

    /// Marks an identity as just used to verify a message.
    pub(crate) fn touch(&mut self, pki_id: &PkiId, now: Instant) {
        if let Some(e) = self.map.get_mut(pki_id) {
            e.last_used = now;
        }
    }

    /// Unexpired entries, in PKI-ID order.
    pub(crate) fn iter(&self, now: Instant) -> impl Iterator<Item = (&PkiId, &Entry)> {
        self.map.iter().filter(move |(_, e)| !e.expired(now))
    }

    /// Removes expired identities and those unused for `unused_after` (Fabric's
    /// `SuspectPeers` sweep with its one-hour usage threshold), ours excepted.
    pub(crate) fn purge(&mut self, now: Instant, unused_after: Duration) -> Purged {
        let mut purged = Purged::default();
        let own = &self.own;
        self.map.retain(|k, e| {
            if k == own {
                return true;
            }
            if e.expired(now) {
                purged.expired += 1;
                false
            } else if e.last_used + unused_after <= now {
                purged.unused += 1;
                false
            } else {
                true
            }
        });
        purged
    }

    /// Keeps the identities `keep` accepts, ours always; returns how many went.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> u64 {
        let before = self.map.len();
        let own = &self.own;
        self.map.retain(|k, e| k == own || keep(e));
        (before - self.map.len()) as u64
    }

    /// How many are held (ours included).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{SEC, T0};

    fn vid(n: &str, expires: Option<Instant>) -> ValidIdentity {
        ValidIdentity {
            pki_id: PkiId::new(Bytes::copy_from_slice(n.as_bytes())),
            cert: Bytes::copy_from_slice(n.as_bytes()),
            expires,
            envelope: Envelope::default(),
        }
    }

    #[test]
    fn keeps_the_first_bounded_and_purges_expired_and_unused_but_not_ours() {
        let mut s = Identities::default();
        s.set_own(vid("me", Some(T0 + SEC)), None, T0);
        assert_eq!(s.put(vid("a", None), None, T0, 3), Ok(true));
        assert_eq!(s.put(vid("a", None), None, T0, 3), Ok(false));
        assert_eq!(s.put(vid("b", Some(T0 + 5 * SEC)), None, T0, 3), Ok(true));
        assert_eq!(s.put(vid("c", None), None, T0, 3), Err(()));
        assert!(s.has(&vid("b", None).pki_id, T0 + 4 * SEC));
        assert!(!s.has(&vid("b", None).pki_id, T0 + 5 * SEC), "expired");
        s.touch(&vid("a", None).pki_id, T0 + 50 * SEC);
        assert_eq!(
            s.purge(T0 + 60 * SEC, 20 * SEC),
            Purged {
                expired: 1,
                unused: 0
            }
        );
        assert_eq!(
            s.purge(T0 + 70 * SEC, 20 * SEC),
            Purged {
                expired: 0,
                unused: 1
            }
        );
        assert_eq!(s.len(), 1, "ours stays, even expired");
        // Room again.
        assert_eq!(s.put(vid("c", None), None, T0, 3), Ok(true));
    }
}
