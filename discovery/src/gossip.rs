//! Heartbeats and the epidemic spread of alive messages (Fabric's `periodicalSendAlive`,
//! the direct-alive branch of `handleMsgFromComm`, and `gossipBatch`'s routing).

use crate::alive::{strip_secret, to_signed};
use crate::disclosure::{Disclose, Party, route_alive};
use crate::error::AliveError;
use crate::machine::Discovery;
use crate::validate::{ParsedAlive, alive_key, check_signed, parse_decoded};
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{Comm, Instant, PkiId, ReceivedMessage, Security, SignedMessage};

impl Discovery {
    /// One heartbeat: nothing at all while alone (Fabric signs nothing then); else a new
    /// signed alive message, kept for responses, to `propagate_peer_num` random members.
    pub(crate) fn heartbeat<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        if self.membership.alive().is_empty() {
            return;
        }
        let Some(me) = self.me.as_mut() else { return };
        let env = match me.sign_next(now, comm.security()) {
            Ok(env) => env,
            Err(error) => {
                self.stats.cannot_sign("heartbeat", &error);
                return;
            }
        };
        me.last = Some(env.clone());
        let Some(wire) = to_signed(&env) else {
            return;
        };
        let origin_org = self.my_org.clone();
        let origin_endpoint = self.cfg.external_endpoint.clone();
        let sent = self.spread(
            now,
            comm,
            (&wire, &env),
            origin_org.as_deref(),
            &origin_endpoint,
            None,
        );
        self.stats.alive_sent += sent;
    }

    /// Sends an alive message of a member of `origin_org` (`wire`: as it goes on the
    /// wire, shared by every recipient; `env`: decoded, to strip) to up to
    /// `propagate_peer_num` random alive members the routing rules allow, never back to
    /// `except`, `propagate_iterations` times, each a fresh random choice (Fabric's
    /// emitter); the secret is stripped for other organizations. Returns the sends made.
    pub(crate) fn spread<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        (wire, env): (&SignedMessage, &Envelope),
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
        // The copy without the secret, made once for every iteration that needs it.
        let mut stripped: Option<Option<SignedMessage>> = None;
        let mut sent = 0;
        for _ in 0..self.cfg.propagate_iterations {
            let chosen = self.pick_alive(k, except, |slot, m| {
                let to = Party {
                    org: m.org.as_deref(),
                    endpoint: &m.endpoint,
                };
                match route_alive(my_org.as_deref(), origin, to) {
                    Disclose::No => None,
                    d => Some((slot, d == Disclose::WithSecret)),
                }
            });
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for (slot, secret) in chosen {
                let Some(m) = self.membership.at(slot) else {
                    continue;
                };
                if secret {
                    with.push(&m.peer);
                } else {
                    without.push(&m.peer);
                }
            }
            for (peers, strip) in [(with, false), (without, true)] {
                if peers.is_empty() {
                    continue;
                }
                let msg = if strip {
                    let made = stripped.get_or_insert_with(|| to_signed(&strip_secret(env)));
                    let Some(m) = made.as_ref() else {
                        continue;
                    };
                    m
                } else {
                    wire
                };
                match comm.send_borrowed(now, msg, &peers) {
                    Ok(()) => sent += peers.len() as u64,
                    Err(error) => self.stats.comm_refused("spread an alive message", &error),
                }
            }
        }
        sent
    }

    /// A verified alive message about us (Fabric's `isSentByMe`), dropped: one with
    /// another external endpoint than ours, or another internal endpoint in its secret
    /// (a stripped one says nothing), comes from another node running with our identity,
    /// a configuration error Fabric logs at ERROR. Counted (`alive_impostors`) and logged
    /// at error level at most once a second of `now` (a [`LogBudget`](fabric_gossip_core::LogBudget) of one), each line
    /// with the number not logged before it: an impostor heartbeats every `alive_interval`
    /// through every member that forwards it.
    pub(crate) fn about_me(&mut self, now: Instant, parsed: &ParsedAlive) {
        self.stats.alive_about_me += 1;
        if !self.is_elsewhere(parsed) {
            return;
        }
        let Some(me) = &self.me else { return };
        self.stats.alive_impostors += 1;
        let Some(not_logged) = self.impostor_log.admit(now) else {
            return;
        };
        self.impostor_lines += 1;
        tracing::error!(
            target: "fabric_gossip_discovery::gossip",
            pki_id = %parsed.pki_id,
            endpoint = %parsed.endpoint,
            internal_endpoint = %parsed.internal_endpoint,
            our_endpoint = %me.endpoint,
            our_internal_endpoint = %me.internal_endpoint,
            // The newer incarnation wins in the others' views: with theirs newer, the
            // others send our gossip to it, and list us dead once it stops.
            theirs_newer = parsed.ts.inc > me.inc,
            not_logged_before = not_logged,
            "Bad configuration detected: Received AliveMessage from a peer with the same \
             PKI-ID as myself"
        );
    }

    /// Whether an alive message about us names another external endpoint than ours, or
    /// another internal endpoint in its secret (a stripped one says nothing): sent by
    /// another node with our identity, not ours echoed back.
    pub(crate) fn is_elsewhere(&self, parsed: &ParsedAlive) -> bool {
        self.me.as_ref().is_some_and(|me| {
            parsed.endpoint != me.endpoint
                || (!parsed.internal_endpoint.is_empty()
                    && parsed.internal_endpoint != me.internal_endpoint)
        })
    }

    /// A gossiped alive message, in Fabric's order: store de-dup (on the message comm
    /// already decoded: a duplicate costs one lookup), validation, "about me", membership,
    /// store, then forward once, with the bytes as received. Fabric stores before it
    /// updates membership; we store after, so that the store knows whether the peer is a
    /// member (it bounds the entries of peers that are not), and one of those that finds
    /// no room is neither stored nor forwarded (`alive_store_full`).
    pub(crate) fn handle_direct_alive<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
    ) {
        let env = &msg.envelope;
        if let Some((pki, ts)) = alive_key(&msg.message)
            && !self.store.check_valid(&pki, ts)
        {
            self.stats.alive_duplicate += 1;
            return;
        }
        let limits = self.alive_limits(comm);
        let parsed = match check_signed(env)
            .and_then(|()| limits.check_received(msg.envelope_bytes.len()))
            .and_then(|()| parse_decoded(env, msg.message.clone()))
            .and_then(|p| limits.check_parsed(p))
        {
            Ok(p) => p,
            Err(e) => {
                self.stats.count_refused(&e);
                return;
            }
        };
        let id = match self.verify(comm, &parsed, env, now) {
            Ok(id) => id,
            Err(AliveError::UnknownIdentity) => {
                // A new alive message of a member whose identity we purged for disuse:
                // its owner is back, perhaps never restarted (its messages carry no
                // identity) and never connected to us. Only the pull can bring the
                // identity now; keeping it forgotten for the rest of the period left the
                // member unverifiable here for up to an hour, where Fabric pulls it at
                // its next round. Messages relayed in membership responses do not count:
                // they include a departed member's last ones.
                if self.certstore.identities.remember_again(&parsed.pki_id) {
                    self.stats.certstore.identities_remembered_again += 1;
                }
                return;
            }
            Err(_) => return,
        };
        if parsed.pki_id == self.pki_id {
            self.about_me(now, &parsed);
            return;
        }
        self.learn(comm, &parsed, &id, env, now, false);
        let membership = &self.membership;
        let is_member = || membership.contains(&parsed.pki_id);
        if !self.store.add(&parsed.pki_id, parsed.ts, now, is_member) {
            self.stats.alive_store_full += 1;
            return;
        }
        let origin_org = comm.security().organization_of(&id.identity);
        let sent = self.spread(
            now,
            comm,
            (&msg.to_signed(), env),
            origin_org.as_deref(),
            &parsed.endpoint,
            Some(msg.sender()),
        );
        self.stats.alive_forwarded += sent;
    }
}
