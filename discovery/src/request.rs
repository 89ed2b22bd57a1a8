//! Membership requests: sending them (bootstrap, periodic sync, dead reconnect) and
//! answering them with a `MembershipResponse` under the disclosure policy.

use crate::alive::strip_secret;
use crate::disclosure::{Disclose, Party, disclose_in_response};
use crate::machine::Discovery;
use crate::validate::parse_alive;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{
    Envelope, GossipMessage, MembershipRequest, MembershipResponse, gossip_message,
};
use fabric_gossip_core::{
    Comm, Instant, PkiId, ReceivedMessage, RemotePeer, Security, SendOutcome, SignedMessage,
    StreamId,
};
use smallvec::SmallVec;

/// A request carrying our signed alive message `env`, without its secret if `strip`.
fn request_with(env: &Envelope, strip: bool, nonce: u64) -> SignedMessage {
    let env = if strip {
        strip_secret(env)
    } else {
        env.clone()
    };
    SignedMessage::noop(membership_request(env, nonce))
}

/// A MembershipRequest: tag EMPTY, `known` empty (FAB-2570), outer envelope unsigned.
pub fn membership_request(self_information: Envelope, nonce: u64) -> GossipMessage {
    GossipMessage {
        nonce,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::MemReq(MembershipRequest {
            self_information: Some(self_information),
            known: Vec::new(),
        })),
    }
}

impl Discovery {
    /// A fresh signed alive message of ours (`createSignedAliveMessage`): one sequence
    /// step, one signature, with the secret (stripped per target by the callers).
    fn sign_own<S: Security>(&mut self, now: Instant, comm: &Comm<S>) -> Option<Envelope> {
        let me = self.me.as_mut()?;
        match me.sign_next(now, comm.security()) {
            Ok(env) => Some(env),
            Err(error) => {
                self.stats.cannot_sign("alive message", &error);
                None
            }
        }
    }

    /// A request carrying a fresh signed alive message of ours, without its secret if
    /// `strip` (a target of another organization). One per bootstrap, as Fabric's
    /// `Connect` makes one per bootstrap peer.
    pub(crate) fn make_request<S: Security>(
        &mut self,
        now: Instant,
        comm: &Comm<S>,
        strip: bool,
        nonce: u64,
    ) -> Option<SignedMessage> {
        let env = self.sign_own(now, comm)?;
        Some(request_with(&env, strip, nonce))
    }

    /// Whether our secret is stripped from what goes to a member (`SendToPeer` applying
    /// the disclosure policy's filter): when it is known to be of another organization.
    fn strips_for<S: Security>(&self, comm: &Comm<S>, pki_id: &PkiId) -> bool {
        let target_org = self.org_of(comm, pki_id);
        target_org.is_some() && !self.is_ours(target_org.as_ref())
    }

    /// Sends a request with `nonce` and a fresh alive message of ours to a member; its
    /// secret is stripped when the member is known to be of another organization
    /// (`sendMembershipRequest`, one signature per call: a reconnect to a dead member).
    pub(crate) fn send_request<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        pki_id: &PkiId,
        endpoint: &str,
        nonce: u64,
    ) {
        let Some(env) = self.sign_own(now, comm) else {
            return;
        };
        let req = request_with(&env, self.strips_for(comm, pki_id), nonce);
        self.send_made_request(now, comm, &req, pki_id, endpoint);
    }

    fn send_made_request<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        req: &SignedMessage,
        pki_id: &PkiId,
        endpoint: &str,
    ) {
        match comm.send(now, req, &[RemotePeer::new(endpoint, pki_id.clone())]) {
            Ok(()) => self.stats.requests_sent += 1,
            Err(error) => self.stats.comm_refused("send a membership request", &error),
        }
    }

    /// Periodic sync (`InitiateSync`): one request (nonce 0), made with one signed alive
    /// message of ours, to `pull_peer_num` random alive members, without its secret for
    /// those of other organizations. Until 2026-12-04 each target had a request of its own,
    /// signed anew: a sync advanced our sequence by `pull_peer_num` and cost as many
    /// signatures.
    pub(crate) fn sync<S: Security>(&mut self, now: Instant, comm: &mut Comm<S>) {
        let chosen = self.pick_alive(self.cfg.pull_peer_num, None, |_, m| {
            Some((m.pki_id().clone(), m.preferred_endpoint().to_owned()))
        });
        if chosen.is_empty() {
            return;
        }
        let Some(env) = self.sign_own(now, comm) else {
            return;
        };
        let (mut with, mut without) = (None, None);
        for (pki, ep) in chosen {
            let strip = self.strips_for(comm, &pki);
            let slot = if strip { &mut without } else { &mut with };
            let req = slot.get_or_insert_with(|| request_with(&env, strip, 0));
            self.send_made_request(now, comm, req, &pki, &ep);
        }
    }

    /// A request: its `self_information` must be a valid alive message of the very peer
    /// on this connection; the requester is learned (if the message is new) and answered,
    /// unless the disclosure policy says it should not have asked, in which case its
    /// connection is closed.
    pub(crate) fn handle_request<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        msg: &ReceivedMessage,
        req: &MembershipRequest,
    ) {
        let Some(info) = &req.self_information else {
            self.stats.requests_invalid += 1;
            return;
        };
        let limits = self.alive_limits(comm);
        let parsed = match limits
            .check_envelope(info)
            .and_then(|()| parse_alive(info))
            .and_then(|p| limits.check_parsed(p))
        {
            Ok(p) => p,
            Err(e) => {
                self.stats.requests_invalid += 1;
                self.stats.count_refused(&e);
                return;
            }
        };
        if parsed.pki_id != *msg.sender() {
            self.stats.requests_spoofed += 1;
            // Fabric warns "Got membership request with selfInfo that doesn't match the
            // handshake"; one a second (the forgeries' budget).
            if let Some(not_logged) = self.forgery_log.admit(now) {
                self.forgery_lines += 1;
                tracing::warn!(
                    from = %msg.sender(),
                    claims = %parsed.pki_id,
                    not_logged,
                    "membership request refused: its self-information is another member's"
                );
            }
            return;
        }
        let nonce = msg.message.nonce;
        let refill = self.cfg.answer_refill();
        if self
            .answered
            .get(msg.sender())
            .is_some_and(|a| a.refuses(now, nonce, refill))
        {
            self.stats.requests_throttled += 1;
            return;
        }
        let Ok(id) = self.verify(comm, &parsed, info, now) else {
            self.stats.requests_invalid += 1;
            return;
        };
        if parsed.pki_id == self.pki_id {
            self.about_me(now, &parsed);
            return;
        }
        if self.store.check_valid(&parsed.pki_id, parsed.ts) {
            self.learn(comm, &parsed, &id, info, now, false);
        } else {
            self.stats.alive_duplicate += 1;
        }
        let target_org = comm.security().organization_of(&id.identity);
        let target = Party {
            org: target_org.as_deref(),
            endpoint: &parsed.endpoint,
        };
        match self.make_response(now, comm, target, nonce) {
            // Never waiting for room, as Fabric's `SendToPeer`: a requester that does not
            // read loses responses (counted by comm), and holds at most a send buffer's.
            Ok(resp) => {
                let bytes = prost::Message::encoded_len(&resp);
                let asker = Asker {
                    ours: self.is_ours(target_org.as_ref()),
                    org: target_org.unwrap_or_default(),
                };
                if !self.backlog_room(now, comm, bytes, &asker) {
                    self.stats.responses_over_backlog += 1;
                } else {
                    // Fabric's `SendToPeer`: to the requester's PKI-ID, on the connection
                    // the request came on while it is open, else on the one there is
                    // now (a crossing dial replaced it, the requester reconnected), else
                    // by dialling the endpoint the requester's own alive message prefers,
                    // unless a dial of ours found another member there, or our dials of
                    // the requester keep reaching others (see `endpoint_owners`): the
                    // answer is then dropped, as one with no endpoint to dial is, and not
                    // handed to another member.
                    let endpoint = match self.endpoint_owners.refusal(
                        parsed.preferred_endpoint(),
                        &parsed.pki_id,
                        now,
                    ) {
                        Some(_) => "",
                        None => parsed.preferred_endpoint(),
                    };
                    let peer = RemotePeer::new(endpoint.to_owned(), parsed.pki_id.clone());
                    match comm.respond_to_peer_or_drop(now, msg.conn, &peer, resp) {
                        Ok(SendOutcome::Dropped) => self.stats.responses_dropped += 1,
                        Ok(sent) => {
                            self.stats.responses_sent += 1;
                            let on = match sent {
                                SendOutcome::Queued(conn) => Some(conn),
                                _ => None,
                            };
                            if on != Some(msg.conn) {
                                self.stats.responses_rerouted += 1;
                            }
                            self.note_queued(now, comm, on, msg.sender(), bytes, asker);
                        }
                        Err(error) => self
                            .stats
                            .comm_refused("answer a membership request", &error),
                    }
                }
                self.note_answered(now, msg.sender(), nonce);
            }
            Err(NoResponse::Refused) => {
                self.stats.requests_refused += 1;
                // Fabric's `sendMemResponse` warns, in these words; one a second, as any
                // peer of another organization may ask at will.
                if let Some(not_logged) = self.refusal_log.admit(now) {
                    tracing::warn!(
                        from = %msg.sender(),
                        msp_id = %String::from_utf8_lossy(target_org.as_deref().unwrap_or_default()),
                        endpoint = %parsed.endpoint,
                        not_logged,
                        "Got a membership request from a peer that shouldn't have sent one, \
                         closing connection to the peer as a result"
                    );
                }
                comm.close_conn(now, msg.sender());
            }
            // Our failure, not the requester's (counted in `comm_errors`): Fabric's
            // `sendMemResponse` logs it and closes nothing.
            Err(NoResponse::CannotSign) => {}
        }
    }

    /// Whether a response of `bytes` to a requester of `org` fits `max_response_backlog`,
    /// after forgetting the connections that have taken theirs. When it does not, the
    /// connections of requesters that have left theirs untaken for [`RESPONSE_STALL`] are
    /// closed, and what they hold still counts for that long again (what their streams had
    /// been handed stays until their connections go, the tonic driver's `close_grace`):
    /// the room comes to later responses.
    ///
    /// Requesters of other organizations may hold at most three quarters of it between
    /// them, so that however many identities a hostile organization mints, our own
    /// organization's peers (the only ones that may join through us) are still answered.
    /// Those three quarters are shared evenly among the other organizations that asked
    /// within [`RESPONSE_STALL`]: an organization holding nothing may take one response
    /// of any size that fits the rest, and one holding some may not pass its share. So the
    /// room a hostile organization's stalled requesters leave as they are closed goes to
    /// the others that ask too, not back to the hostile organization, which with one
    /// shared bound took back every place (a legitimate reader of its own organization
    /// got 2 answers of 12 in a live attack).
    ///
    /// A connection holds, untaken, what lies between what it has written
    /// ([`SendQueueLen::written`](fabric_gossip_core::SendQueueLen)) and where its latest
    /// response ended in its queue: all of its responses, and whatever else was queued
    /// between them, which errs on the side of the bound.
    pub(crate) fn backlog_room<S: Security>(
        &mut self,
        now: Instant,
        comm: &mut Comm<S>,
        bytes: usize,
        asker: &Asker,
    ) -> bool {
        self.backlog.retain_mut(|q| {
            if let Some(at) = q.closed {
                // Closed, but what its stream had been handed may stay until the
                // connection goes (the driver's grace): still counted meanwhile.
                return now < at + RESPONSE_STALL;
            }
            let conn = match q.conn {
                Some(conn) => conn,
                // Dialled for: counted whole while the attempt holds it, then on the
                // connection it moved to; gone (dropped by comm) if the attempt failed.
                None => match comm.connection(&q.who) {
                    Some(conn) => {
                        let Some(len) = comm.send_queue_len(conn) else {
                            return false;
                        };
                        // Somewhere in what the new connection holds: all of it is
                        // counted, which errs on the side of the bound.
                        q.conn = Some(conn);
                        q.end = len.written + len.bytes as u64;
                        conn
                    }
                    None => return comm.is_connecting(&q.who),
                },
            };
            match comm.send_queue_len(conn) {
                Some(len) if len.written < q.end => {
                    q.held = usize::try_from(q.end - len.written).unwrap_or(usize::MAX);
                    true
                }
                _ => false,
            }
        });
        if !asker.ours {
            self.note_asking(now, &asker.org);
        }
        let cap = self.cfg.max_response_backlog;
        let others_cap = cap - cap / 4;
        let (mut all, mut others, mut org_held) = (0usize, 0usize, 0usize);
        for q in &self.backlog {
            all = all.saturating_add(q.held);
            if !q.asker.ours {
                others = others.saturating_add(q.held);
                if q.asker.org == asker.org {
                    org_held = org_held.saturating_add(q.held);
                }
            }
        }
        let share = others_cap / self.asking.len().max(1);
        if all.saturating_add(bytes) <= cap
            && (asker.ours
                || (others.saturating_add(bytes) <= others_cap
                    && (org_held == 0 || org_held.saturating_add(bytes) <= share)))
        {
            return true;
        }
        // Every requester stalled for RESPONSE_STALL goes; what they hold is counted until
        // their connections have had the time to go too. An answer still held by a
        // connection attempt is not closed (closing leaves attempts be): it is counted
        // until it reaches a connection, which may then go.
        for q in self.backlog.iter_mut() {
            if q.closed.is_none() && q.conn.is_some() && now >= q.at + RESPONSE_STALL {
                q.closed = Some(now);
                self.stats.stalled_requesters_closed += 1;
                tracing::debug!(
                    target: "fabric_gossip_discovery::request",
                    requester = %q.who,
                    bytes = q.held,
                    "closing a requester that has not taken its membership response"
                );
                comm.close_conn(now, &q.who);
            }
        }
        false
    }

    /// Notes a response of `bytes` to `who` just queued on connection `on` (the one it
    /// actually went on, which need not be the request's), or, when `on` is `None`, held
    /// by a connection attempt to `who`: one entry per connection, and one per requester
    /// being connected to, which keeps the time its oldest untaken response was queued
    /// (so that a requester asking again and again without reading still counts as
    /// stalled) and moves its end to this response's. The entries are bounded by the
    /// connections and connection attempts.
    fn note_queued<S: Security>(
        &mut self,
        now: Instant,
        comm: &Comm<S>,
        on: Option<StreamId>,
        who: &PkiId,
        bytes: usize,
        asker: Asker,
    ) {
        let Some(conn) = on else {
            // Held by the attempt: counted whole until it reaches a connection.
            match self
                .backlog
                .iter_mut()
                .find(|q| q.conn.is_none() && q.who == *who)
            {
                Some(q) => q.held = q.held.saturating_add(bytes),
                None => self.backlog.push_back(Queued {
                    conn: None,
                    who: who.clone(),
                    asker,
                    end: 0,
                    held: bytes,
                    at: now,
                    closed: None,
                }),
            }
            return;
        };
        let Some(len) = comm.send_queue_len(conn) else {
            return;
        };
        let end = len.written + len.bytes as u64;
        match self.backlog.iter_mut().find(|q| q.conn == Some(conn)) {
            Some(q) => q.end = end,
            None => self.backlog.push_back(Queued {
                conn: Some(conn),
                who: who.clone(),
                asker,
                end,
                held: len.bytes,
                at: now,
                closed: None,
            }),
        }
    }

    /// Remembers that a requester of `org` (not ours) asked at `now`, forgetting the
    /// organizations that have not asked for [`RESPONSE_STALL`]. Organizations are those
    /// the MSPs know, so few; past [`MAX_ASKING_ORGS`] a new one is not remembered (and
    /// takes no share from the others).
    fn note_asking(&mut self, now: Instant, org: &Bytes) {
        self.asking.retain(|_, &mut at| now < at + RESPONSE_STALL);
        if let Some(at) = self.asking.get_mut(org) {
            *at = now;
        } else if self.asking.len() < MAX_ASKING_ORGS {
            self.asking.insert(org.clone(), now);
        }
    }

    /// Remembers that `who`'s request with `nonce` was answered at `now` (one answer
    /// drawn from its bucket), forgetting the requesters whose bucket is full again and
    /// whose nonces may be answered again once as many are remembered as members may be
    /// known: forgetting them loses nothing, as a requester not remembered starts full.
    /// At twice that many, the one whose bucket refills soonest is forgotten.
    fn note_answered(&mut self, now: Instant, who: &PkiId, nonce: u64) {
        let refill = self.cfg.answer_refill();
        if let Some(a) = self.answered.get_mut(who) {
            a.note(now, nonce, refill);
            return;
        }
        if self.answered.len() >= self.cfg.max_members {
            self.answered.retain(|_, a| !a.is_over(now));
        }
        if self.answered.len() >= self.cfg.max_members.saturating_mul(2) {
            // Twice as many requesters as members mid-bucket: a flood of identities (a
            // hostile organization's CA). Forget the one whose bucket refills soonest,
            // which grants it at most a burst, rather than leave this one unremembered,
            // each of whose requests would then be answered.
            let soonest = self
                .answered
                .iter()
                .min_by_key(|(_, a)| a.full_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                self.answered.remove(&k);
            }
        }
        let mut a = Answered::new(now);
        a.note(now, nonce, refill);
        self.answered.insert(who.clone(), a);
    }

    /// The response for `target` (`createMembershipResponse` + `disclosurePolicy`):
    /// every disclosable alive envelope, ours last, then every disclosable dead one;
    /// [`NoResponse::Refused`] if even our own alive message may not be disclosed to it.
    pub(crate) fn make_response<S: Security>(
        &mut self,
        now: Instant,
        comm: &Comm<S>,
        target: Party<'_>,
        nonce: u64,
    ) -> Result<GossipMessage, NoResponse> {
        let my_org = self.my_org.clone();
        let mine = Party {
            org: my_org.as_deref(),
            endpoint: &self.cfg.external_endpoint,
        };
        let own_rule = disclose_in_response(my_org.as_deref(), target, mine);
        if own_rule == Disclose::No {
            return Err(NoResponse::Refused);
        }
        let me = self.me.as_mut().ok_or(NoResponse::CannotSign)?;
        let own = match &me.last {
            Some(env) => env.clone(),
            None => match me.sign_next(now, comm.security()) {
                Ok(env) => env,
                Err(error) => {
                    self.stats
                        .cannot_sign("alive message of a membership response", &error);
                    return Err(NoResponse::CannotSign);
                }
            },
        };
        let filter = |env: &Envelope, rule: Disclose| match rule {
            Disclose::No => None,
            Disclose::WithSecret => Some(env.clone()),
            Disclose::StripSecret => Some(strip_secret(env)),
        };
        let own = filter(&own, own_rule);
        // What the whole may weigh: comm refuses a message over its limit, so a response
        // listing members whose alive messages add up to more would never leave. Ours is
        // always in; others are listed while they fit.
        let mut room = comm
            .config()
            .max_message_size
            .saturating_sub(RESPONSE_SLACK)
            .saturating_sub(own.as_ref().map_or(0, listed_len));
        let (mut alive, mut dead) = (Vec::new(), Vec::new());
        let mut truncated = false;
        for (_, m) in self.membership.iter() {
            let member = Party {
                org: m.org.as_deref(),
                endpoint: &m.endpoint,
            };
            let rule = disclose_in_response(my_org.as_deref(), target, member);
            if let Some(env) = filter(&m.envelope, rule) {
                let len = listed_len(&env);
                if len > room {
                    truncated = true;
                    continue;
                }
                room -= len;
                if m.alive {
                    alive.push(env)
                } else {
                    dead.push(env)
                }
            }
        }
        if truncated {
            self.stats.responses_truncated += 1;
        }
        alive.extend(own);
        Ok(membership_response(alive, dead, nonce))
    }
}

/// Why a request gets no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoResponse {
    /// The disclosure policy does not let the requester see even our own alive message:
    /// it should not have asked (`requests_refused`, its connection closed).
    Refused,
    /// Our own alive message could not be signed (`comm_errors`).
    CannotSign,
}

/// How soon a peer's membership request with the same nonce is answered again: a repeat
/// in between is dropped unread (`requests_throttled`), whatever its requester's bucket
/// holds (see [`ANSWER_BURST`]). A requester replaying one request without reading had
/// made a node queue a response for each, however large. Beyond Fabric, which answers
/// every request.
pub const MIN_ANSWER_INTERVAL: core::time::Duration = core::time::Duration::from_secs(1);

/// The answers one requester may draw at once: each requester has a bucket of this many,
/// refilled one per [`DiscoveryConfig::answer_refill`](crate::DiscoveryConfig::answer_refill)
/// (2 s with Fabric's defaults), and a request finding it empty is dropped unread
/// (`requests_throttled`). Beyond Fabric, whose peers answer every request.
///
/// Why a bucket: an answer is the whole membership the requester may see, so a request
/// is an amplifier (an insider got 47 bytes for each byte it asked, at 453 members).
/// Until 2026-12-07 a requester was answered up to 4 times a second (a window of
/// [`MIN_ANSWER_INTERVAL`]), which is what that insider drew: 16 times what an honest
/// peer asks. The bucket lets it draw 0.5 answers a second in the long run, 8 times
/// less, and the burst below at once.
///
/// Why 8: what a Fabric peer (v2.4.9) asks one member at once when it starts is its
/// bootstrap request (`Connect`), one request for every channel that names that member
/// an anchor peer (`learnAnchorPeers`), each with a nonce of its own and resent every
/// 30 s until answered, a sync (nonce 0) and a reconnect (nonce 0): 8 covers a bootstrap
/// peer that is the anchor of 5 channels, with a sync and a reconnect besides. A 9th
/// nonce at the same instant is answered at its resend, 30 s later, by when the bucket
/// is full again. Afterwards an honest peer asks a member at most once a sync period
/// (`pull_interval`, 4 s: a sync goes to `pull_peer_num` members, so a member is chosen at
/// most once per sync) or once a reconnect period (25 s, only while the member is dead
/// to it, when no sync goes to it), so its bucket refills twice as fast as it drains.
/// Measured on the simulator (test `honest_traffic_is_never_throttled_even_in_a_mass_restart`
/// of `fabric-gossip-sim`): 120 nodes of two organizations with Fabric's timers,
/// running then restarting all at once, throttled nothing.
pub const ANSWER_BURST: u32 = 8;

/// Recent nonces remembered per requester, at most: twice [`ANSWER_BURST`], more than the
/// bucket lets through in [`MIN_ANSWER_INTERVAL`] unless the refill period is under
/// 125 ms (a sync period under 250 ms), when the oldest is forgotten first.
const MAX_RECENT_NONCES: usize = 2 * ANSWER_BURST as usize;

/// One requester's bucket of answers and the nonces it had answered lately.
///
/// The bucket is kept as the instant it is full again (the generic cell rate
/// algorithm): each answer moves that instant one refill period later (from now, if it
/// was past), and a request is refused while that instant is more than
/// `ANSWER_BURST - 1` refill periods away, when the bucket holds no whole answer. One
/// instant, no fractions, and a requester whose bucket is full holds nothing worth
/// remembering.
#[derive(Debug)]
pub(crate) struct Answered {
    /// When the bucket holds [`ANSWER_BURST`] answers again.
    full_at: Instant,
    /// The nonces answered less than [`MIN_ANSWER_INTERVAL`] ago (as far as is known: the
    /// older ones go at the next answer), with when: at most as many as the bucket lets
    /// through in that interval.
    nonces: SmallVec<[(u64, Instant); 4]>,
}

impl Answered {
    /// A requester with a full bucket and no recent nonce.
    pub(crate) fn new(now: Instant) -> Self {
        Answered {
            full_at: now,
            nonces: SmallVec::new(),
        }
    }

    /// Whether it may be forgotten: its bucket is full again and no nonce of it is
    /// recent, so that remembering it would refuse nothing.
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        now >= self.full_at
            && self
                .nonces
                .iter()
                .all(|&(_, at)| now >= at + MIN_ANSWER_INTERVAL)
    }

    /// Whether a request with `nonce` must be dropped: one with the same nonce was
    /// answered less than [`MIN_ANSWER_INTERVAL`] ago, or the bucket, refilled one answer
    /// per `refill`, holds no whole answer.
    pub(crate) fn refuses(&self, now: Instant, nonce: u64, refill: core::time::Duration) -> bool {
        let repeat = self
            .nonces
            .iter()
            .any(|&(n, at)| n == nonce && now < at + MIN_ANSWER_INTERVAL);
        repeat || self.full_at > now + refill.saturating_mul(ANSWER_BURST - 1)
    }

    /// Draws one answer from the bucket for a request with `nonce` answered at `now`.
    pub(crate) fn note(&mut self, now: Instant, nonce: u64, refill: core::time::Duration) {
        self.full_at = self.full_at.max(now) + refill;
        self.nonces
            .retain(|&mut (n, at)| n != nonce && now < at + MIN_ANSWER_INTERVAL);
        if self.nonces.len() >= MAX_RECENT_NONCES {
            self.nonces.remove(0);
        }
        self.nonces.push((nonce, now));
    }
}

/// How long a requester may leave its membership response untaken before its connection
/// may be closed to make room for others' (see
/// [`DiscoveryConfig::max_response_backlog`](crate::DiscoveryConfig::max_response_backlog)).
/// A peer that reads takes a response of the membership's size in well under a second.
pub const RESPONSE_STALL: core::time::Duration = core::time::Duration::from_secs(10);

/// The organization of a requester, as the backlog shares it out.
#[derive(Debug)]
pub(crate) struct Asker {
    /// Whether it is ours.
    pub(crate) ours: bool,
    /// Its MSP ID (empty when the security provider names none).
    pub(crate) org: Bytes,
}

/// Other organizations remembered as asking at once, at most (see `note_asking`): far
/// above the organizations of any channel.
pub(crate) const MAX_ASKING_ORGS: usize = 1024;

/// A connection whose requester may not have taken its membership responses yet.
#[derive(Debug)]
pub(crate) struct Queued {
    /// The connection its responses went on; `None` while a connection attempt to the
    /// requester holds them (its request's connection had closed, and it had no other).
    pub(crate) conn: Option<StreamId>,
    /// The requester.
    pub(crate) who: PkiId,
    /// The requester's organization.
    pub(crate) asker: Asker,
    /// Where its latest response ends in its connection's queue: all are taken once the
    /// connection has written this many bytes (0 while a connection attempt holds them).
    pub(crate) end: u64,
    /// What the connection held untaken when last looked at.
    pub(crate) held: usize,
    /// When its oldest untaken response was queued.
    pub(crate) at: Instant,
    /// When it was closed for leaving its responses untaken: what it holds is counted
    /// for [`RESPONSE_STALL`] more, the time its connection has to go.
    pub(crate) closed: Option<Instant>,
}

/// Room left in a response for what is not its listed envelopes: the response's own
/// fields and the outer envelope's framing (a few dozen bytes), generously.
pub(crate) const RESPONSE_SLACK: usize = 1024;

/// What one listed envelope adds to an encoded response: itself, its field tag and its
/// length prefix.
fn listed_len(env: &Envelope) -> usize {
    use prost::Message;
    let len = env.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// A MembershipResponse echoing the request's `nonce`: tag EMPTY, outer envelope unsigned
/// (each listed alive message carries its owner's signature).
pub fn membership_response(alive: Vec<Envelope>, dead: Vec<Envelope>, nonce: u64) -> GossipMessage {
    GossipMessage {
        nonce,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::MemRes(MembershipResponse {
            alive,
            dead,
        })),
    }
}
