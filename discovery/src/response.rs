//! Membership responses (`handleMsgFromComm`, response branch): acknowledge a bootstrap
//! request by nonce, learn alive members, learn unknown members as dead.

use crate::error::AliveError;
use crate::machine::Discovery;
use crate::validate::{ParsedAlive, check_signed, decode_payload, parse_decoded, peek_alive_key};
use fabric_gossip_core::proto::gossip::{Envelope, MembershipResponse};
use fabric_gossip_core::{Comm, Instant, ReceivedMessage, Security};

/// One envelope of a response, short of its signatures.
enum Entry {
    /// About us: skipped.
    Me,
    /// Not newer than the message store's entry for the member.
    Duplicate,
    /// To verify and learn.
    Parsed(ParsedAlive),
}

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
        for (dead, env) in res
            .alive
            .iter()
            .map(|e| (false, e))
            .chain(res.dead.iter().map(|e| (true, e)))
        {
            let parsed = match self.classify(env) {
                Ok(Entry::Parsed(p)) => p,
                Ok(Entry::Me) => continue,
                Ok(Entry::Duplicate) => {
                    self.stats.alive_duplicate += 1;
                    continue;
                }
                Err(e) => {
                    self.stats.count_refused(&e);
                    if matches!(e, AliveError::Undecodable(_) | AliveError::NotAlive) {
                        // Fabric abandons the rest of the response (quirk Q3).
                        self.stats.responses_aborted += 1;
                        return;
                    }
                    continue;
                }
            };
            let Ok(id) = self.verify(comm, &parsed, env, now) else {
                continue;
            };
            self.learn(comm, &parsed, &id, env, now, dead);
        }
    }

    /// The cheap checks first (about us, the message store: Fabric's `CheckValid` comes
    /// before the signatures too), on the member and timestamp read in place when the
    /// payload allows it: a response mostly lists what we hold, and those entries are
    /// then dropped without being decoded.
    fn classify(&self, env: &Envelope) -> Result<Entry, AliveError> {
        check_signed(env)?;
        let parse = || parse_decoded(env, decode_payload(env)?);
        let (key, parsed) = match peek_alive_key(&env.payload) {
            Some(key) => (key, None),
            None => {
                let p = parse()?;
                ((p.pki_id.clone(), p.ts), Some(p))
            }
        };
        if key.0 == self.pki_id {
            return Ok(Entry::Me);
        }
        if !self.store.check_valid(&key.0, key.1) {
            return Ok(Entry::Duplicate);
        }
        let parsed = match parsed {
            Some(p) => p,
            None => parse()?,
        };
        Ok(Entry::Parsed(parsed))
    }
}
