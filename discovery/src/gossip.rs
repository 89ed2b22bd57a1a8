//! Heartbeats and the epidemic spread of alive messages (Fabric's `periodicalSendAlive`,
//! the direct-alive branch of `handleMsgFromComm`, and `gossipBatch`'s routing).

use crate::alive::{strip_secret, to_signed};
use crate::disclosure::{Disclose, Party, route_alive};
use crate::machine::Discovery;
use crate::validate::parse_alive;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{Comm, Instant, PkiId, ReceivedMessage, RemotePeer, Security};
use rand_core::RngCore;

impl Discovery {
    /// One heartbeat: nothing at all while alone (Fabric signs nothing then); else a new
    /// signed alive message, kept for responses, to `propagate_peer_num` random members.
    pub(crate) fn heartbeat<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        if !self.membership.members.values().any(|m| m.alive) {
            return;
        }
        let Some(me) = self.me.as_mut() else { return };
        let env = match me.sign_next(now, comm.security()) {
            Ok(env) => env,
            Err(_) => {
                self.stats.comm_errors += 1;
                return;
            }
        };
        me.last = Some(env.clone());
        let origin_org = self.my_org.clone();
        let origin_endpoint = self.cfg.external_endpoint.clone();
        let sent = self.spread(
            now,
            comm,
            &env,
            origin_org.as_deref(),
            &origin_endpoint,
            None,
        );
        self.stats.alive_sent += sent;
    }

    /// Sends `env` (an alive message of a member of `origin_org`) to up to
    /// `propagate_peer_num` random alive members the routing rules allow, never back to
    /// `except`; the secret is stripped for other organizations. Returns the sends made.
    pub(crate) fn spread<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        env: &Envelope,
        origin_org: Option<&[u8]>,
        origin_endpoint: &str,
        except: Option<&PkiId>,
    ) -> u64 {
        let my_org = self.my_org.clone();
        let origin = Party {
            org: origin_org,
            endpoint: origin_endpoint,
        };
        let k = self.cfg.propagate_peer_num;
        let route = |m: &crate::store::MemberState| {
            route_alive(
                my_org.as_deref(),
                origin,
                Party {
                    org: m.org.as_deref(),
                    endpoint: &m.endpoint,
                },
            )
        };
        // Large views: draw at random from the alive list and keep the allowed ones, a
        // bounded number of draws; small views, or too few found: scan them all.
        let mut chosen: Vec<(PkiId, String, Disclose)> = Vec::with_capacity(k);
        let n = self.alive_list().len();
        if n > 4 * k {
            for _ in 0..8 * k {
                if chosen.len() == k {
                    break;
                }
                let j = (self.rng.next_u64() % n as u64) as usize;
                let pki = &self.alive_list()[j];
                if Some(pki) == except || chosen.iter().any(|(p, _, _)| p == pki) {
                    continue;
                }
                let pki = pki.clone();
                if let Some(m) = self.membership.members.get(&pki) {
                    let d = route(m);
                    if d != Disclose::No {
                        chosen.push((pki, m.preferred_endpoint().to_owned(), d));
                    }
                }
            }
        }
        if chosen.len() < k.min(n) {
            let candidates: Vec<(PkiId, String, Disclose)> = self
                .membership
                .members
                .iter()
                .filter(|(k, m)| m.alive && Some(*k) != except)
                .filter_map(|(k, m)| match route(m) {
                    Disclose::No => None,
                    d => Some((k.clone(), m.preferred_endpoint().to_owned(), d)),
                })
                .collect();
            chosen = self.pick(candidates, k);
        }
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for (pki, endpoint, d) in chosen {
            let peer = RemotePeer::new(endpoint, pki);
            if d == Disclose::WithSecret {
                with.push(peer);
            } else {
                without.push(peer);
            }
        }
        let mut sent = 0;
        for (peers, strip) in [(with, false), (without, true)] {
            if peers.is_empty() {
                continue;
            }
            let msg = if strip {
                to_signed(&strip_secret(env))
            } else {
                to_signed(env)
            };
            let Some(msg) = msg else { continue };
            match comm.send(now, &msg, &peers) {
                Ok(()) => sent += peers.len() as u64,
                Err(_) => self.stats.comm_errors += 1,
            }
        }
        sent
    }

    /// A gossiped alive message, in Fabric's order: store de-dup, validation, "about
    /// me", store, membership, then forward once.
    pub(crate) fn handle_direct_alive<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
    ) {
        self.stats.alive_received += 1;
        let env = &msg.envelope;
        let parsed = match parse_alive(env) {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_refused(&e);
                return;
            }
        };
        if !self.store.check_valid(&parsed.pki_id, parsed.ts) {
            self.stats.alive_duplicate += 1;
            return;
        }
        let Ok(id) = self.verify(comm, &parsed, env, now) else {
            return;
        };
        if parsed.pki_id == self.pki_id {
            self.stats.alive_about_me += 1;
            return;
        }
        self.store.add(&parsed.pki_id, parsed.ts, now);
        self.learn(comm, &parsed, &id, env, now);
        let origin_org = comm.security().organization_of(&id.identity);
        let sent = self.spread(
            now,
            comm,
            env,
            origin_org.as_deref(),
            &parsed.endpoint,
            Some(msg.sender()),
        );
        self.stats.alive_forwarded += sent;
    }
}
