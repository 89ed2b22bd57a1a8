//! Membership responses (`handleMsgFromComm`, response branch): acknowledge a bootstrap
//! request by nonce, learn alive members, learn unknown members as dead.

use crate::error::AliveError;
use crate::machine::Discovery;
use crate::validate::parse_alive;
use fabric_gossip_core::proto::gossip::gossip_message;
use fabric_gossip_core::{Comm, Instant, ReceivedMessage, Security};

impl Discovery {
    pub(crate) fn handle_response<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
    ) {
        self.stats.responses_received += 1;
        let Some(gossip_message::Content::MemRes(res)) = &msg.message.content else {
            return;
        };
        // Any response with the nonce acknowledges (quirk Q12: whoever sent it).
        self.bootstrap_acked(msg.message.nonce, msg.sender());
        for (dead, env) in res
            .alive
            .iter()
            .map(|e| (false, e))
            .chain(res.dead.iter().map(|e| (true, e)))
        {
            let parsed = match parse_alive(env) {
                Ok(p) => p,
                Err(e @ (AliveError::Undecodable(_) | AliveError::NotAlive)) => {
                    // Fabric abandons the rest of the response (quirk Q3).
                    self.stats.count_refused(&e);
                    self.stats.responses_aborted += 1;
                    return;
                }
                Err(e) => {
                    self.stats.count_refused(&e);
                    continue;
                }
            };
            if parsed.pki_id == self.pki_id {
                continue;
            }
            if !self.store.check_valid(&parsed.pki_id, parsed.ts) {
                self.stats.alive_duplicate += 1;
                continue;
            }
            let Ok(id) = self.verify(comm, &parsed, env, now) else {
                continue;
            };
            if dead {
                self.learn_dead(comm, &parsed, &id, env, now);
            } else {
                self.learn(comm, &parsed, &id, env, now);
            }
        }
    }
}
