//! Membership responses (`handleMsgFromComm`, response branch): acknowledge a bootstrap
//! request by nonce, learn alive members, learn unknown members as dead.

use crate::error::AliveError;
use crate::machine::{Discovery, Fate};
use crate::validate::{
    AliveLimits, ParsedAlive, check_signed, decode_payload, parse_decoded, peek_alive_key,
};
use fabric_gossip_core::proto::gossip::{Envelope, MembershipResponse};
use fabric_gossip_core::{Comm, Instant, PkiId, ReceivedMessage, Security};
use std::collections::BTreeSet;

/// One envelope of a response, short of its signatures.
enum Entry {
    /// About us: skipped (`alive_about_me`), as Fabric's `isSentByMe` drops it.
    Me,
    /// Not newer than the message store's entry for the member.
    Duplicate,
    /// Would change nothing in membership, or find no room there (see
    /// `Discovery::would_change`).
    Unchanging(Fate),
    /// To verify and learn; or, about us in the alive list with another endpoint than
    /// ours, to verify and judge: another node runs with our identity (`alive_impostors`,
    /// Fabric's "Bad configuration detected"). A node that meets its impostor only here is
    /// common: once the impostor's newer incarnation wins, the others send their gossip to
    /// its endpoint, and we hear of it only in the responses to our requests.
    Parsed(ParsedAlive),
}

/// Entries of one response that may fail verification (a refused identity or signature)
/// before the rest of it is dropped. A peer relays only alive messages it verified, so a
/// legitimate response fails only where the two trust stores differ (a revocation one has
/// and the other not), a few entries at most; every failure costs a signature or
/// certificate-chain check under the node's lock, and a hostile response of 100 MB held
/// tens of seconds of them.
pub const MAX_RESPONSE_FAILURES: usize = 16;

impl Discovery {
    pub(crate) fn handle_response<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
        res: &MembershipResponse,
    ) {
        // Any response with the nonce acknowledges (quirk Q12: whoever sent it).
        self.bootstrap_acked(msg.message.nonce, msg.sender());
        let limits = self.alive_limits(comm);
        // The members this response named so far: a response lists each member once, so
        // a repeated entry is skipped rather than verified again. At most `max_members`
        // of them, as a legitimate responder holds no more (beyond Fabric, which checks
        // every entry of a response whatever it repeats). Ordered, not hashed: these
        // PKI-IDs are the sender's choice, unverified, and with a hash seeded by a known
        // constant a response of 10,000 IDs chosen to collide took 342 ms instead of 4.4
        // (`cargo bench -p fabric-gossip-discovery -- hostile`).
        let mut seen: BTreeSet<PkiId> = BTreeSet::new();
        let mut failures = 0;
        for (dead, env) in res
            .alive
            .iter()
            .map(|e| (false, e))
            .chain(res.dead.iter().map(|e| (true, e)))
        {
            let parsed = match self.classify(comm, now, env, &limits, dead) {
                Ok(Entry::Parsed(p)) => p,
                Ok(Entry::Me) => {
                    self.stats.alive_about_me += 1;
                    continue;
                }
                Ok(Entry::Duplicate) => {
                    self.stats.alive_duplicate += 1;
                    continue;
                }
                Ok(Entry::Unchanging(Fate::Full)) => {
                    self.stats.members_refused_full += 1;
                    continue;
                }
                Ok(Entry::Unchanging(_)) => {
                    self.stats.alive_stale += 1;
                    continue;
                }
                Err(e) => {
                    self.stats.count_refused(&e);
                    // Fabric abandons the rest of the response at an entry it cannot
                    // decode, and at one of the alive list that is not an alive message
                    // (quirk Q3); a dead list's such entry fails its `ValidateAliveMsg`
                    // and the reading goes on.
                    let abandons = match e {
                        AliveError::Undecodable(_) => true,
                        AliveError::NotAlive => !dead,
                        _ => false,
                    };
                    if abandons {
                        self.stats.responses_aborted += 1;
                        return;
                    }
                    continue;
                }
            };
            if seen.contains(&parsed.pki_id) {
                self.stats.response_entries_repeated += 1;
                continue;
            }
            if seen.len() >= self.cfg.max_members {
                self.stats.responses_aborted += 1;
                return;
            }
            seen.insert(parsed.pki_id.clone());
            let id = match self.verify(comm, &parsed, env, now) {
                Ok(id) => id,
                Err(e) => {
                    let costly = matches!(
                        e,
                        AliveError::BadSignature(_)
                            | AliveError::BadIdentity(_)
                            | AliveError::IdentityMismatch
                    );
                    if costly {
                        failures += 1;
                        if failures >= MAX_RESPONSE_FAILURES {
                            self.stats.responses_aborted += 1;
                            return;
                        }
                    }
                    continue;
                }
            };
            if parsed.pki_id == self.pki_id {
                self.about_me(now, &parsed);
            } else {
                self.learn(comm, &parsed, &id, env, now, dead);
            }
        }
    }

    /// The cheap checks first (about us, the message store: Fabric's `CheckValid` comes
    /// before the signatures too), on the member and timestamp read in place when the
    /// payload allows it: a response mostly lists what we hold, and those entries are
    /// then dropped without being decoded.
    fn classify<S: Security>(
        &self,
        comm: &Comm<S>,
        now: Instant,
        env: &Envelope,
        limits: &AliveLimits,
        dead_list: bool,
    ) -> Result<Entry, AliveError> {
        limits.check_envelope(env)?;
        let parse = || limits.check_parsed(parse_decoded(env, decode_payload(env)?)?);
        // Whether the entry is an alive message at all comes before its signature, as
        // Fabric decodes every entry before it checks anything: an entry with an empty
        // payload (an empty message) or an unsigned one of another type is not alive.
        let (key, parsed) = match peek_alive_key(&env.payload) {
            Some(key) => (key, None),
            None => {
                let p = parse()?;
                ((p.pki_id.clone(), p.ts), Some(p))
            }
        };
        check_signed(env)?;
        if key.0 == self.pki_id {
            // Fabric's `isSentByMe` judges the alive list's entries only (its dead list
            // skips us without a word); ours echoed back is the rule and costs no decoding.
            if dead_list {
                return Ok(Entry::Me);
            }
            let parsed = match parsed {
                Some(p) => p,
                None => parse()?,
            };
            return Ok(if self.is_elsewhere(&parsed) {
                Entry::Parsed(parsed)
            } else {
                Entry::Me
            });
        }
        if !self.store.check_valid(&key.0, key.1) {
            return Ok(Entry::Duplicate);
        }
        let fate = self.would_change(&key.0, key.1, dead_list);
        if fate == Fate::Stale {
            return Ok(Entry::Unchanging(fate));
        }
        let parsed = match parsed {
            Some(p) => p,
            None => parse()?,
        };
        // A newcomer may take a place in a full membership by its organization's share
        // (`Discovery::learn`): its organization, read without any check, decides
        // whether it is worth verifying.
        if fate == Fate::Full
            && (dead_list || !self.may_displace(self.claimed_org(comm, &parsed, now).as_ref()))
        {
            return Ok(Entry::Unchanging(fate));
        }
        Ok(Entry::Parsed(parsed))
    }
}
