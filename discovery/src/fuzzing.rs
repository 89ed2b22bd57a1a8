//! The `membership` fuzz target: what authenticated but hostile peers can make of our
//! membership.
//!
//! Node 0 of an in-memory network ([`Net`], the core's harness) runs the membership layer;
//! nodes 1 to 3 are bare cores the input plays as peers. They send node 0 alive messages
//! (valid, forged, unsigned, with a stolen identity, undecodable), membership requests and
//! responses, identity-pull messages echoing the nonces node 0 sent them, and arbitrary
//! GossipMessages; connections close, dials fail and Pings hang, peers restart, as
//! themselves or with another member's identity (or ours); virtual time passes, through
//! expiry and the long-dead purge. Seven identities in three organizations exist, three of
//! which never connect (members known only from others' word).
//!
//! After every step it checks what must hold whatever the peers send:
//! * membership never holds more than `max_members`, nor ourselves;
//! * every member's timestamp is one its owner signed: no forged, stolen or altered alive
//!   message ever changes membership;
//! * a member's timestamp never goes back while it stays known (only a purge forgets it);
//! * one step never leaves more than `max_events` events queued (the rest are counted);
//! * the pulled identities stay within `certstore.max_identities`, and what they hold
//!   within `certstore.max_identity_bytes`, and the totals and per-organization shares
//!   the store keeps for its bounds are those of what it holds.
//!
//! and, once the input is played, that a second run of it gives the same events, members
//! and counters (one seed, one trace).
//!
//! Compiled with the `fuzzing` feature only; `fuzz/fuzz_targets/membership.rs` calls
//! [`membership`], and `tests/fuzz_corpus.rs` replays the committed corpus on stable.

use crate::alive::{Timestamp, alive_message, encode_secret, envelope_of};
use crate::certstore::wire;
use crate::{Discovery, DiscoveryConfig, DiscoveryEvent};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::fuzzing::{Input, Output};
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::testing::{Net, ep};
use fabric_gossip_core::{Config, Event, Layer, PkiId, SignedMessage, TestOnlyHmacSecurity};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

/// Node 0 plus the three peers the input plays.
const NODES: usize = 4;
/// Identities `ep(0)` to `ep(6)`; those from `NODES` on never connect.
const POOL: usize = 7;
/// Each identity's organization: ours (node 0's) is `A`.
const ORGS: [&str; POOL] = ["A", "A", "A", "B", "B", "C", "A"];
/// Largest step of virtual time between two routings of node 0 (besides its own
/// deadlines): what the cores do meanwhile reaches its layer at most this late, which the
/// protocol's timers (seconds) tolerate, and fewer steps make more runs per second.
const STEP: Duration = Duration::from_secs(1);
/// Most entries of a response list, and items of a pull message.
const MAX_LIST: usize = 8;

/// The test provider of identity `i`, knowing every identity's organization.
fn security(i: usize) -> TestOnlyHmacSecurity {
    (0..POOL).fold(TestOnlyHmacSecurity::new(ep(i)), |s, k| {
        s.with_organization(ep(k), ORGS[k])
    })
}

fn pki(i: usize) -> PkiId {
    PkiId::from(ep(i).as_str())
}

/// The first bytes of an input: node 0's membership configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// `max_members`: 2, 3, 5 or the default, by the low two bits.
    pub max_members: u8,
    /// `max_events`: 1, 4 or the default, by value modulo 3.
    pub max_events: u8,
    /// Bit 0: node 1 is a bootstrap peer; bit 1: the identity pull is off; bit 2: it holds
    /// at most 2 identities (ours and one).
    pub flags: u8,
}

impl MembershipConfig {
    fn discovery(&self) -> DiscoveryConfig {
        let mut cfg = DiscoveryConfig::new(ep(0)).with_seed(7);
        if self.flags & 1 == 1 {
            cfg = cfg.with_bootstrap([ep(1)]);
        }
        cfg.certstore.enabled = self.flags & 2 == 0;
        if self.flags & 4 == 4 {
            cfg.certstore.max_identities = 2;
            // Room for ours and about one more.
            cfg.certstore.max_identity_bytes = 1024;
        }
        cfg.max_members = [2, 3, 5, cfg.max_members][usize::from(self.max_members & 3)];
        cfg.max_events = [1, 4, cfg.max_events][usize::from(self.max_events % 3)];
        cfg
    }
}

/// One alive message as a peer sends it: about identity `who % 7` at timestamp
/// `(inc % 4 + 1, seq)`, with a flaw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Alive {
    /// Whose (an identity of the pool; 0 is node 0 itself).
    pub who: u8,
    /// Incarnation, 1 to 4.
    pub inc: u8,
    /// Sequence.
    pub seq: u8,
    /// 0 valid; 1 altered after signing (the payload says `seq + 1`); 2 embeds another
    /// identity; 3 unsigned; 4 undecodable; 5 valid without its identity (it must be known);
    /// 6 a signature that does not verify.
    pub flaw: u8,
}

/// One step of the `membership` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipOp {
    /// Peer `from` sends an alive message.
    Alive {
        /// Which peer (1 to 3).
        from: u8,
        /// The message.
        alive: Alive,
    },
    /// Peer `from` sends a membership request carrying `alive` as its self-information.
    Request {
        /// Which peer.
        from: u8,
        /// Its self-information (honest only when about `from` itself).
        alive: Alive,
    },
    /// Peer `from` sends a membership response.
    Response {
        /// Which peer.
        from: u8,
        /// Which of node 0's membership requests to this peer it answers: the `nonce % n`-th
        /// most recent, or 255 for a made-up nonce.
        nonce: u8,
        /// The alive list.
        alive: Vec<Alive>,
        /// The dead list.
        dead: Vec<Alive>,
    },
    /// Peer `from` sends an identity-pull message.
    Pull {
        /// Which peer.
        from: u8,
        /// 0 hello, 1 digest, 2 request, 3 update.
        kind: u8,
        /// Which of node 0's messages to this peer it answers (a digest our hello, a request
        /// our digest, an update our request), as for `Response`; a hello answers nothing.
        nonce: u8,
        /// The identities named (digest, request) or carried (update), by pool index;
        /// from 128, a made-up one.
        items: Vec<u8>,
    },
    /// Peer `from` sends these bytes decoded as a GossipMessage, if they decode.
    Raw {
        /// Which peer.
        from: u8,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Node 0 closes its connection to peer `from`.
    Close {
        /// Which peer.
        from: u8,
    },
    /// Peer `from` crashes and restarts, with its own identity or another's: node 0 then
    /// finds a new PKI-ID at a known endpoint (an identity switch within an organization,
    /// a stranger from another, or its own PKI-ID).
    Bounce {
        /// Which peer.
        from: u8,
        /// 0: its own identity; otherwise that of pool member `identity % 7`.
        identity: u8,
    },
    /// Node 0's dials to peer `from` start failing, or succeeding again (`what` even), or
    /// its Pings start hanging, or answering again (`what` odd): the paths of an
    /// unreachable member (presumed dead, reconnection probes, bootstrap retries).
    Toggle {
        /// Which peer.
        from: u8,
        /// Dials or Pings.
        what: u8,
    },
    /// Virtual time passes: `quarters` × 250 ms (at most about a minute).
    Advance {
        /// How many quarter seconds.
        quarters: u8,
    },
}

impl Alive {
    fn read(i: &mut Input<'_>) -> Self {
        Alive {
            who: i.u8(),
            inc: i.u8(),
            seq: i.u8(),
            flaw: i.u8(),
        }
    }

    fn write(&self, o: &mut Output) {
        o.bytes(&[self.who, self.inc, self.seq, self.flaw]);
    }
}

fn read_list(i: &mut Input<'_>) -> Vec<Alive> {
    let n = usize::from(i.u8()) % (MAX_LIST + 1);
    (0..n).map(|_| Alive::read(i)).collect()
}

fn write_list(o: &mut Output, list: &[Alive]) {
    o.u8(list.len() as u8);
    for a in list {
        a.write(o);
    }
}

impl MembershipOp {
    fn read(i: &mut Input<'_>) -> Self {
        match i.u8() % 9 {
            0 => MembershipOp::Alive {
                from: i.u8(),
                alive: Alive::read(i),
            },
            1 => MembershipOp::Request {
                from: i.u8(),
                alive: Alive::read(i),
            },
            2 => MembershipOp::Response {
                from: i.u8(),
                nonce: i.u8(),
                alive: read_list(i),
                dead: read_list(i),
            },
            3 => {
                let (from, kind, nonce) = (i.u8(), i.u8(), i.u8());
                let n = usize::from(i.u8()) % (MAX_LIST + 1);
                MembershipOp::Pull {
                    from,
                    kind,
                    nonce,
                    items: (0..n).map(|_| i.u8()).collect(),
                }
            }
            4 => MembershipOp::Raw {
                from: i.u8(),
                bytes: i.blob().to_vec(),
            },
            5 => MembershipOp::Close { from: i.u8() },
            6 => MembershipOp::Bounce {
                from: i.u8(),
                identity: i.u8(),
            },
            7 => MembershipOp::Advance { quarters: i.u8() },
            _ => MembershipOp::Toggle {
                from: i.u8(),
                what: i.u8(),
            },
        }
    }

    fn write(&self, o: &mut Output) {
        match self {
            MembershipOp::Alive { from, alive } => {
                o.bytes(&[0, *from]);
                alive.write(o);
            }
            MembershipOp::Request { from, alive } => {
                o.bytes(&[1, *from]);
                alive.write(o);
            }
            MembershipOp::Response {
                from,
                nonce,
                alive,
                dead,
            } => {
                o.bytes(&[2, *from, *nonce]);
                write_list(o, alive);
                write_list(o, dead);
            }
            MembershipOp::Pull {
                from,
                kind,
                nonce,
                items,
            } => {
                o.bytes(&[3, *from, *kind, *nonce, items.len() as u8]);
                o.bytes(items);
            }
            MembershipOp::Raw { from, bytes } => {
                o.bytes(&[4, *from]);
                o.blob(bytes);
            }
            MembershipOp::Close { from } => o.bytes(&[5, *from]),
            MembershipOp::Bounce { from, identity } => o.bytes(&[6, *from, *identity]),
            MembershipOp::Advance { quarters } => o.bytes(&[7, *quarters]),
            MembershipOp::Toggle { from, what } => o.bytes(&[8, *from, *what]),
        }
    }
}

/// The bytes [`membership`] reads as `cfg` and then `ops`: how seeds are written.
pub fn encode_membership(cfg: MembershipConfig, ops: &[MembershipOp]) -> Vec<u8> {
    let mut o = Output::default();
    o.bytes(&[cfg.max_members, cfg.max_events, cfg.flags]);
    for op in ops {
        op.write(&mut o);
    }
    o.into_bytes()
}

/// At most this many steps are played from one input, so that every input runs quickly.
const MAX_OPS: usize = 256;

/// The entry point: plays `data` twice and checks the invariants of the module docs.
/// Panics on a broken invariant (a finding), never on the input itself.
pub fn membership(data: &[u8]) {
    let first = Run::play(data);
    let second = Run::play(data);
    assert_eq!(first, second, "one input, two different runs");
}

/// A run of the network under one input.
struct Run {
    net: Net,
    layer: Discovery,
    /// Node 0's core events already routed to the layer.
    seen: usize,
    cfg: DiscoveryConfig,
    /// The provider of each pool identity, built once: every alive message is signed.
    providers: Vec<TestOnlyHmacSecurity>,
    /// Every `(identity, timestamp)` the input signed validly.
    signed: BTreeSet<(usize, Timestamp)>,
    /// Each member's last timestamp seen, while it stays known.
    last: BTreeMap<PkiId, Timestamp>,
    /// Everything the layer reported, in order (compared across the two runs).
    trace: Vec<String>,
}

impl Run {
    /// Plays `data`; returns the trace, the final members and the counters.
    fn play(data: &[u8]) -> String {
        let mut i = Input::new(data);
        let mut run = Run::start(&mut i);
        for _ in 0..MAX_OPS {
            if i.is_empty() {
                break;
            }
            let op = MembershipOp::read(&mut i);
            run.step(&op);
            run.settle();
        }
        // Let the run end the way it would go on: timers, expiry, retries.
        run.advance(Duration::from_secs(10));
        let mut members = run.layer.members();
        members.extend(run.layer.dead_members());
        format!("{:#?}\n{members:#?}\n{:#?}", run.trace, run.layer.stats())
    }

    /// The network and node 0's started layer, configured by the input's first bytes, once
    /// settled (checked).
    fn start(i: &mut Input<'_>) -> Run {
        let mc = MembershipConfig {
            max_members: i.u8(),
            max_events: i.u8(),
            flags: i.u8(),
        };
        let cfg = mc.discovery();
        let mut net = Net::with_security(NODES, |_| Config::default(), |n| Box::new(security(n)));
        for peer in 1..NODES {
            net.subscribe_all(peer);
        }
        let mut layer = match Discovery::new(cfg.clone()) {
            Ok(l) => l,
            Err(e) => panic!("the harness's configuration is refused: {e}"),
        };
        let now = net.now;
        layer.start(now, &mut net.nodes[0].comm);
        if let Some(sub) = layer.subscription() {
            net.nodes[0].subs.push(sub);
        }
        net.flush(0);
        let mut run = Run {
            net,
            layer,
            seen: 0,
            cfg,
            providers: (0..POOL).map(security).collect(),
            signed: BTreeSet::new(),
            last: BTreeMap::new(),
            trace: Vec::new(),
        };
        run.settle();
        run
    }

    fn step(&mut self, op: &MembershipOp) {
        let peer = |from: &u8| 1 + usize::from(*from) % (NODES - 1);
        match op {
            MembershipOp::Alive { from, alive } => {
                let env = self.alive(alive);
                // An undecodable payload cannot be sent as a message; it still can inside a
                // response or a request.
                if let Ok(msg) = SignedMessage::from_envelope_bytes(env.encode_to_vec().into()) {
                    self.send_from(peer(from), msg);
                }
            }
            MembershipOp::Request { from, alive } => {
                let info = self.alive(alive);
                self.send_noop(peer(from), crate::membership_request(info, 0));
            }
            MembershipOp::Response {
                from,
                nonce,
                alive,
                dead,
            } => {
                let from = peer(from);
                let nonce = self.nonce(from, *nonce, Answers::MembershipRequest);
                let alive = alive.iter().map(|a| self.alive(a)).collect();
                let dead = dead.iter().map(|a| self.alive(a)).collect();
                self.send_noop(from, crate::membership_response(alive, dead, nonce));
            }
            MembershipOp::Pull {
                from,
                kind,
                nonce,
                items,
            } => {
                let from = peer(from);
                let answers = match kind % 4 {
                    1 => Answers::Hello,
                    2 => Answers::Digest,
                    3 => Answers::PullRequest,
                    _ => Answers::Nothing,
                };
                let nonce = self.nonce(from, *nonce, answers);
                let ids: Vec<PkiId> = items.iter().map(|&x| item_pki(x)).collect();
                let msg = match kind % 4 {
                    0 => wire::hello(nonce),
                    1 => wire::digest(nonce, &ids),
                    2 => wire::request(nonce, &ids),
                    _ => {
                        let data = items
                            .iter()
                            .filter_map(|&x| {
                                let who = usize::from(x) % POOL;
                                wire::own_identity_message(&self.providers[who]).ok()
                            })
                            .collect();
                        wire::update(nonce, data)
                    }
                };
                self.send_noop(from, msg);
            }
            MembershipOp::Raw { from, bytes } => {
                if let Ok(msg) = GossipMessage::decode(bytes.as_slice()) {
                    self.send_noop(peer(from), msg);
                }
            }
            MembershipOp::Close { from } => {
                self.net.close_conn(0, peer(from));
                self.net.flush(0);
            }
            MembershipOp::Bounce { from, identity } => {
                let from = peer(from);
                let who = match identity {
                    0 => from,
                    k => usize::from(*k) % POOL,
                };
                self.net.crash(from);
                self.net.restart(
                    from,
                    Box::new(self.providers[who].clone()),
                    Config::default(),
                );
                self.net.subscribe_all(from);
            }
            MembershipOp::Toggle { from, what } => {
                let set = if what % 2 == 0 {
                    &mut self.net.refuse_dials
                } else {
                    &mut self.net.hang_pings
                };
                let from = peer(from);
                if !set.remove(&from) {
                    set.insert(from);
                }
            }
            MembershipOp::Advance { quarters } => {
                self.advance(Duration::from_millis(250) * u32::from(*quarters));
            }
        }
    }

    /// The Envelope of `a`, recording its timestamp if it is validly signed.
    fn alive(&mut self, a: &Alive) -> Envelope {
        let who = usize::from(a.who) % POOL;
        let ts = Timestamp {
            inc: u64::from(a.inc % 4) + 1,
            seq: u64::from(a.seq),
        };
        let flaw = a.flaw % 7;
        if flaw == 4 {
            return Envelope {
                payload: Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]),
                signature: Bytes::from_static(b"x"),
                secret_envelope: None,
            };
        }
        let other = (who + 1) % POOL;
        let identity = match flaw {
            2 => Bytes::from(ep(other)),
            5 => Bytes::new(),
            _ => Bytes::from(ep(who)),
        };
        let msg = alive_message(ep(who), Bytes::from(ep(who)), Bytes::new(), ts, identity);
        // What flaw 1 puts under the signature of `msg`: the same, one sequence later.
        let altered = (flaw == 1).then(|| {
            let mut altered = msg.clone();
            if let Some(gossip_message::Content::AliveMsg(am)) = &mut altered.content
                && let Some(t) = &mut am.timestamp
            {
                t.seq_num += 1;
            }
            Bytes::from(altered.encode_to_vec())
        });
        let secret = encode_secret(&ep(who));
        let signed = if flaw == 6 {
            let corrupt = self.providers[who].clone().with_corrupt_signatures();
            SignedMessage::sign_with_secret(msg, secret, &corrupt)
        } else {
            SignedMessage::sign_with_secret(msg, secret, &self.providers[who])
        };
        let mut env = match signed {
            Ok(s) => envelope_of(&s),
            Err(e) => panic!("the test provider cannot sign: {e}"),
        };
        if let Some(payload) = altered {
            env.payload = payload;
        }
        if flaw == 3 {
            env.signature = Bytes::new();
        }
        if flaw == 0 || flaw == 5 {
            self.signed.insert((who, ts));
        }
        env
    }

    /// A nonce echoing what node 0 sent peer `from`: of its messages that `answers` names,
    /// the `pick % n`-th most recent (255, or nothing to answer: a made-up nonce).
    fn nonce(&self, from: usize, pick: u8, answers: Answers) -> u64 {
        if pick == 255 {
            return 0x5eed_0000_0000_0000 | from as u64;
        }
        let sent: Vec<u64> = self.net.nodes[from]
            .delivered
            .values()
            .flatten()
            .filter_map(|m| answers.nonce_of(&m.message))
            .collect();
        match sent.len() {
            0 => u64::from(pick),
            n => sent[n - 1 - usize::from(pick) % n],
        }
    }

    fn send_noop(&mut self, from: usize, msg: GossipMessage) {
        self.send_from(from, SignedMessage::noop(msg));
    }

    fn send_from(&mut self, from: usize, msg: SignedMessage) {
        let now = self.net.now;
        let to = self.net.peer(0);
        // Refusals (stopped, limits) are the sending core's business, not the layer's.
        let _ = self.net.nodes[from].comm.send(now, &msg, &[to]);
        self.net.flush(from);
    }

    /// Runs the network and node 0's layer until nothing is left to do now.
    fn settle(&mut self) {
        loop {
            self.net.settle();
            if !self.route() {
                break;
            }
        }
        self.check();
    }

    /// Lets `d` of virtual time pass, routing node 0 at least every [`STEP`] and at each
    /// of its layer's deadlines.
    fn advance(&mut self, d: Duration) {
        let end = self.net.now + d;
        while self.net.now < end {
            let mut step_end = (self.net.now + STEP).min(end);
            if let Some(t) = self.layer.poll_timeout() {
                step_end = step_end.min(t.max(self.net.now));
            }
            // A deadline already due makes a step of zero: `settle` then handles it (a
            // layer that kept asking for now without progress would loop here, which the
            // fuzzer reports as a time-out).
            self.net.advance(step_end - self.net.now);
            self.settle();
        }
    }

    /// Routes node 0's new events, its layer's deliveries and due deadline to the layer, as
    /// a driver must; returns whether anything was routed.
    fn route(&mut self) -> bool {
        let now = self.net.now;
        let mut any = false;
        loop {
            let mut progressed = false;
            while self.seen < self.net.nodes[0].events.len() {
                let ev: Event = self.net.nodes[0].events[self.seen].clone();
                self.seen += 1;
                progressed = true;
                self.layer
                    .handle_comm_event(now, &mut self.net.nodes[0].comm, &ev);
                self.net.flush(0);
            }
            if let Some(sub) = self.layer.subscription() {
                self.net.drain_deliveries(0);
                let queued = self.net.nodes[0].delivered.remove(&sub).unwrap_or_default();
                for m in queued {
                    progressed = true;
                    self.layer
                        .handle_message(now, &mut self.net.nodes[0].comm, m);
                    self.net.flush(0);
                }
            }
            if self.layer.poll_timeout().is_some_and(|t| t <= now) {
                progressed = true;
                self.layer.handle_timeout(now, &mut self.net.nodes[0].comm);
                self.net.flush(0);
            }
            if !progressed {
                return any;
            }
            any = true;
        }
    }

    /// The invariants of the module docs, after a step.
    fn check(&mut self) {
        let mut events = 0;
        while let Some(e) = self.layer.poll_event() {
            events += 1;
            if let DiscoveryEvent::MemberPurged { member, .. } = &e {
                self.last.remove(&member.pki_id);
            }
            self.trace.push(format!("{} {e:?}", self.net.now));
        }
        assert!(
            events <= self.cfg.max_events,
            "{events} events queued, over max_events {}",
            self.cfg.max_events
        );
        let mut members = self.layer.members();
        members.extend(self.layer.dead_members());
        assert!(
            members.len() <= self.cfg.max_members,
            "{} members over max_members {}",
            members.len(),
            self.cfg.max_members
        );
        let held: usize = self.layer.membership.iter().map(|(_, m)| m.weight()).sum();
        assert_eq!(
            self.layer.membership.bytes(),
            held,
            "membership's byte count drifted from its members'"
        );
        assert!(held <= self.cfg.max_membership_bytes, "{held} bytes held");
        let mut orgs = std::collections::BTreeMap::<&[u8], (usize, usize)>::new();
        for (_, m) in self.layer.membership.iter() {
            let share = orgs
                .entry(crate::store::org_key(m.org.as_ref()))
                .or_default();
            share.0 += 1;
            share.1 += m.weight();
        }
        let counted: std::collections::BTreeMap<&[u8], (usize, usize)> = self
            .layer
            .membership
            .org_shares()
            .map(|(o, s)| (o.as_ref(), (s.members, s.bytes)))
            .collect();
        assert_eq!(counted, orgs, "membership's organization shares drifted");
        let dropped = self.layer.stats().events_dropped > 0;
        for m in &members {
            assert_ne!(m.pki_id, pki(0), "we are a member of our own membership");
            let who = (1..POOL).find(|&k| pki(k) == m.pki_id);
            let Some(who) = who else {
                panic!("a member nobody signed for: {:?}", m.pki_id);
            };
            assert!(
                self.signed.contains(&(who, m.timestamp)),
                "member {who} at {:?}, a timestamp it never signed",
                m.timestamp
            );
            // A purge whose event was dropped may be followed by an older incarnation.
            if let Some(before) = self.last.insert(m.pki_id.clone(), m.timestamp) {
                assert!(
                    dropped || before <= m.timestamp,
                    "member {who} went back from {before:?} to {:?}",
                    m.timestamp
                );
            }
        }
        assert!(self.layer.pulled_identities() <= self.cfg.certstore.max_identities);
        let bytes = self.layer.certstore.identities.bytes();
        assert!(
            bytes <= self.cfg.certstore.max_identity_bytes,
            "{bytes} bytes held"
        );
        self.layer.certstore.identities.check_accounts();
        #[cfg(test)]
        tests::CHECKS.with_borrow_mut(|checks| {
            checks.push(tests::Checked {
                events,
                members: members.iter().map(|m| m.pki_id.clone()).collect(),
                pulled: self.layer.pulled_identities(),
            });
        });
    }
}

/// Which of node 0's messages a peer's message answers, echoing its nonce: a response our
/// membership request, a digest our hello, a pull request our digest (to the hello it sent),
/// an update our pull request. A peer's hello answers nothing.
#[derive(Clone, Copy)]
enum Answers {
    MembershipRequest,
    Hello,
    Digest,
    PullRequest,
    Nothing,
}

impl Answers {
    /// The nonce `m` asks to be echoed, if it is of the kind answered.
    fn nonce_of(self, m: &GossipMessage) -> Option<u64> {
        use gossip_message::Content;
        match (self, m.content.as_ref()?) {
            (Answers::MembershipRequest, Content::MemReq(_)) => Some(m.nonce),
            (Answers::Hello, Content::Hello(h)) => Some(h.nonce),
            (Answers::Digest, Content::DataDig(d)) => Some(d.nonce),
            (Answers::PullRequest, Content::DataReq(r)) => Some(r.nonce),
            _ => None,
        }
    }
}

/// A pull item: an identity of the pool, or from 128 a made-up PKI-ID.
fn item_pki(x: u8) -> PkiId {
    if x >= 128 {
        PkiId::new(Bytes::from(vec![x; 3]))
    } else {
        pki(usize::from(x) % POOL)
    }
}

/// The committed seeds of the `membership` target, by file name: each reaches a part of
/// the protocol a random input would take long to find.
pub fn membership_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use MembershipOp as Op;
    let valid = |who, seq| Alive {
        who,
        inc: 0,
        seq,
        flaw: 0,
    };
    let flawed = |who, flaw| Alive {
        who,
        inc: 0,
        seq: 9,
        flaw,
    };
    let plain = MembershipConfig {
        max_members: 3,
        max_events: 2,
        flags: 0,
    };
    let learn: Vec<Op> = (1..4)
        .map(|p| Op::Alive {
            from: p - 1,
            alive: valid(p, 1),
        })
        .collect();
    let mut expiry = learn.clone();
    expiry.extend([
        Op::Toggle { from: 2, what: 0 },
        Op::Toggle { from: 1, what: 1 },
        Op::Advance { quarters: 255 },
        Op::Advance { quarters: 255 },
        Op::Toggle { from: 2, what: 0 },
        Op::Bounce {
            from: 1,
            identity: 0,
        },
        Op::Alive {
            from: 1,
            alive: valid(2, 2),
        },
    ]);
    expiry.extend((0..10).map(|_| Op::Advance { quarters: 255 }));
    let mut gossip = learn.clone();
    gossip.extend([
        Op::Request {
            from: 0,
            alive: valid(1, 2),
        },
        Op::Request {
            from: 1,
            alive: valid(1, 3),
        },
        Op::Response {
            from: 2,
            nonce: 0,
            alive: vec![valid(4, 1), valid(5, 1), flawed(6, 2)],
            dead: vec![valid(6, 1), valid(1, 1)],
        },
        Op::Advance { quarters: 40 },
        Op::Bounce {
            from: 1,
            identity: 6,
        },
        Op::Bounce {
            from: 2,
            identity: 1,
        },
        Op::Advance { quarters: 40 },
        Op::Response {
            from: 0,
            nonce: 255,
            alive: vec![flawed(4, 5), valid(2, 7)],
            dead: vec![],
        },
    ]);
    let forgeries: Vec<Op> = (0..7)
        .map(|flaw| Op::Alive {
            from: flaw % 3,
            alive: flawed(flaw + 1, flaw),
        })
        .chain([Op::Raw {
            from: 0,
            bytes: vec![0x0a, 0x02, 0x08, 0x01],
        }])
        .collect();
    // Our hello answered by a digest, our request by an update; then a peer's hello, our
    // digest, its request and our update. Room for one identity beside ours: of the
    // digest's items only the first, 4, is asked for, and the update brings just it (an
    // update holding an item not asked for is refused whole).
    let mut pull = learn;
    pull.extend([
        Op::Advance { quarters: 18 },
        Op::Pull {
            from: 0,
            kind: 1,
            nonce: 0,
            items: vec![4, 1, 200],
        },
        Op::Advance { quarters: 5 },
        Op::Pull {
            from: 0,
            kind: 3,
            nonce: 0,
            items: vec![4],
        },
        Op::Pull {
            from: 1,
            kind: 0,
            nonce: 255,
            items: vec![],
        },
        Op::Pull {
            from: 1,
            kind: 2,
            nonce: 0,
            items: vec![0, 4, 3],
        },
        Op::Close { from: 2 },
        Op::Advance { quarters: 40 },
    ]);
    vec![
        ("expiry-and-purge", encode_membership(plain, &expiry)),
        (
            "requests-and-responses",
            // Room for 5 members of the 6 it hears of.
            encode_membership(
                MembershipConfig {
                    max_members: 2,
                    ..plain
                },
                &gossip,
            ),
        ),
        (
            "forgeries",
            encode_membership(
                MembershipConfig {
                    max_members: 0,
                    max_events: 0,
                    flags: 1,
                },
                &forgeries,
            ),
        ),
        (
            "identity-pull",
            encode_membership(
                MembershipConfig {
                    max_members: 3,
                    max_events: 2,
                    flags: 5,
                },
                &pull,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// What one pass of [`Run::check`] looked at.
    #[derive(Debug)]
    pub(super) struct Checked {
        /// The events it polled.
        pub events: usize,
        /// The members (alive and dead) it judged.
        pub members: Vec<PkiId>,
        /// The pulled identities it bounded.
        pub pulled: usize,
    }

    thread_local! {
        /// The checks [`Run::check`] made on this thread, in order. A check that passes
        /// leaves nothing else to see, so tests read this to know that an input reached the
        /// checks it is for (each test runs on its own thread).
        pub(super) static CHECKS: RefCell<Vec<Checked>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `input` through the target; returns the checks it made, in order.
    fn checks_of(input: &[u8]) -> Vec<Checked> {
        CHECKS.with_borrow_mut(Vec::clear);
        membership(input);
        CHECKS.take()
    }

    fn seed(name: &str) -> Vec<u8> {
        membership_seeds()
            .into_iter()
            .find_map(|(n, s)| (n == name).then_some(s))
            .unwrap_or_else(|| panic!("no seed {name}"))
    }

    const PLAIN: MembershipConfig = MembershipConfig {
        max_members: 3,
        max_events: 2,
        flags: 0,
    };

    /// A started run configured by `cfg`.
    fn run(cfg: MembershipConfig) -> Run {
        Run::start(&mut Input::new(&[
            cfg.max_members,
            cfg.max_events,
            cfg.flags,
        ]))
    }

    fn play(run: &mut Run, ops: &[MembershipOp]) {
        for op in ops {
            run.step(op);
            run.settle();
        }
    }

    fn valid(who: u8, seq: u8) -> Alive {
        Alive {
            who,
            inc: 0,
            seq,
            flaw: 0,
        }
    }

    fn ts(inc: u64, seq: u64) -> Timestamp {
        Timestamp { inc, seq }
    }

    fn member_ids(run: &Run) -> Vec<PkiId> {
        let mut members = run.layer.members();
        members.extend(run.layer.dead_members());
        members.into_iter().map(|m| m.pki_id).collect()
    }

    /// Peers 1 to 3, each sending its own valid alive message: node 0 connects to all three
    /// and knows them at `(1, 1)`.
    fn learn() -> Vec<MembershipOp> {
        (1..4)
            .map(|p| MembershipOp::Alive {
                from: p - 1,
                alive: valid(p, 1),
            })
            .collect()
    }

    fn panics(f: impl FnOnce()) -> bool {
        catch_unwind(AssertUnwindSafe(f)).is_err()
    }

    /// Which messages of a kind node 0 delivered to `peer`, by content.
    fn delivered_to(run: &Run, peer: usize) -> Vec<GossipMessage> {
        run.net.nodes[peer]
            .delivered
            .values()
            .flatten()
            .map(|m| m.message.clone())
            .collect()
    }

    #[test]
    fn the_first_bytes_configure_the_layer_as_their_docs_say() {
        let default = DiscoveryConfig::new(ep(0));
        let cfg = |max_members, max_events, flags| {
            MembershipConfig {
                max_members,
                max_events,
                flags,
            }
            .discovery()
        };
        for (byte, want) in [(0, 2), (1, 3), (2, 5), (3, default.max_members), (4, 2)] {
            assert_eq!(cfg(byte, 0, 0).max_members, want, "max_members byte {byte}");
        }
        for (byte, want) in [(0, 1), (1, 4), (2, default.max_events), (3, 1), (7, 4)] {
            assert_eq!(cfg(0, byte, 0).max_events, want, "max_events byte {byte}");
        }
        for flags in 0..8u8 {
            let c = cfg(0, 0, flags);
            let bootstrap: &[String] = if flags & 1 == 1 { &[ep(1)] } else { &[] };
            assert_eq!(c.bootstrap, bootstrap, "flags {flags}");
            assert_eq!(c.certstore.enabled, flags & 2 == 0, "flags {flags}");
            let (ids, bytes) = if flags & 4 == 4 {
                (2, 1024)
            } else {
                (
                    default.certstore.max_identities,
                    default.certstore.max_identity_bytes,
                )
            };
            assert_eq!(c.certstore.max_identities, ids, "flags {flags}");
            assert_eq!(c.certstore.max_identity_bytes, bytes, "flags {flags}");
            assert_eq!(c.internal_endpoint, ep(0));
        }
    }

    /// Each flaw makes the Envelope its doc describes, about identity `who % 7` at
    /// `(inc % 4 + 1, seq)`, and only the validly signed ones are recorded as signed.
    #[test]
    fn each_flaw_of_an_alive_message_makes_the_envelope_its_doc_says() {
        let mut r = run(PLAIN);
        // Identity 9 % 7 = 2 at incarnation 6 % 4 + 1 = 3.
        let envelope = |r: &mut Run, flaw| {
            r.alive(&Alive {
                who: 9,
                inc: 6,
                seq: 3,
                flaw,
            })
        };
        let envs: Vec<Envelope> = (0..7).map(|flaw| envelope(&mut r, flaw)).collect();
        for flaw in 0..7 {
            assert_eq!(
                envelope(&mut r, flaw + 7),
                envs[usize::from(flaw)],
                "flaw {flaw} wraps"
            );
        }
        let alive = |env: &Envelope| match GossipMessage::decode(env.payload.clone())
            .ok()
            .and_then(|m| m.content)
        {
            Some(gossip_message::Content::AliveMsg(am)) => am,
            other => panic!("not an alive message: {other:?}"),
        };
        let stamp = |env: &Envelope| {
            let t = alive(env).timestamp.expect("a timestamp");
            ts(t.inc_num, t.seq_num)
        };
        let valid = &envs[0];
        let member = alive(valid).membership.expect("a member");
        assert_eq!(member.pki_id, Bytes::from(ep(2)));
        assert_eq!(member.endpoint, ep(2));
        assert_eq!(alive(valid).identity, Bytes::from(ep(2)));
        assert_eq!(stamp(valid), ts(3, 3));
        assert!(!valid.signature.is_empty());
        assert!(valid.secret_envelope.is_some());
        // 1: altered after signing, under the valid signature.
        assert_eq!(stamp(&envs[1]), ts(3, 4));
        assert_eq!(envs[1].signature, valid.signature);
        // 2: another identity embedded, signed.
        assert_eq!(alive(&envs[2]).identity, Bytes::from(ep(3)));
        assert_eq!(stamp(&envs[2]), ts(3, 3));
        // 3: unsigned.
        assert!(envs[3].signature.is_empty());
        assert_eq!(envs[3].payload, valid.payload);
        // 4: undecodable.
        assert!(GossipMessage::decode(envs[4].payload.clone()).is_err());
        // 5: no identity, otherwise valid.
        assert!(alive(&envs[5]).identity.is_empty());
        assert_eq!(stamp(&envs[5]), ts(3, 3));
        // 6: the same message under a signature that does not verify.
        assert_eq!(envs[6].payload, valid.payload);
        assert_ne!(envs[6].signature, valid.signature);
        assert!(!envs[6].signature.is_empty());
        assert_eq!(r.signed, BTreeSet::from([(2, ts(3, 3))]));
        r.signed.clear();
        envelope(&mut r, 5);
        assert_eq!(
            r.signed,
            BTreeSet::from([(2, ts(3, 3))]),
            "flaw 5 is signed"
        );
    }

    /// What reaches the layer through the harness: only a validly signed alive message
    /// makes a member (about identity 4, which never connects), and one without its
    /// identity only once the identity is known (a peer's, from its handshake).
    #[test]
    fn only_validly_signed_alive_messages_make_members() {
        for flaw in 0..7 {
            let mut r = run(PLAIN);
            play(
                &mut r,
                &[MembershipOp::Alive {
                    from: 0,
                    alive: Alive {
                        flaw,
                        ..valid(4, 1)
                    },
                }],
            );
            let want = if flaw == 0 { vec![pki(4)] } else { vec![] };
            assert_eq!(member_ids(&r), want, "flaw {flaw}");
        }
        let mut r = run(PLAIN);
        play(&mut r, &learn());
        assert_eq!(member_ids(&r), [pki(1), pki(2), pki(3)]);
        play(
            &mut r,
            &[MembershipOp::Alive {
                from: 0,
                alive: Alive {
                    flaw: 5,
                    ..valid(1, 2)
                },
            }],
        );
        let one = r.layer.members().into_iter().find(|m| m.pki_id == pki(1));
        assert_eq!(one.map(|m| m.timestamp), Some(ts(1, 2)));
    }

    /// A step's `from` names peer `1 + from % 3`: closing the connection to the peer it
    /// names and no other, and toggling that peer's dials (even `what`) or Pings (odd).
    #[test]
    fn a_steps_from_names_one_of_the_three_peers() {
        let mut r = run(PLAIN);
        play(&mut r, &learn());
        for p in 1..4 {
            assert!(r.net.conn(0, p).is_some(), "peer {p}");
        }
        play(&mut r, &[MembershipOp::Close { from: 4 }]);
        assert_eq!(r.net.conn(0, 2), None);
        assert!(r.net.conn(0, 1).is_some());
        assert!(r.net.conn(0, 3).is_some());
        play(&mut r, &[MembershipOp::Close { from: 3 }]);
        assert_eq!(r.net.conn(0, 1), None);
        assert!(r.net.conn(0, 3).is_some());

        let toggle = |from, what| MembershipOp::Toggle { from, what };
        play(&mut r, &[toggle(5, 2)]);
        assert_eq!(r.net.refuse_dials, BTreeSet::from([3]));
        assert!(r.net.hang_pings.is_empty());
        play(&mut r, &[toggle(0, 3), toggle(1, 1)]);
        assert_eq!(r.net.hang_pings, BTreeSet::from([1, 2]));
        play(&mut r, &[toggle(2, 0), toggle(3, 1)]);
        assert!(r.net.refuse_dials.is_empty());
        assert_eq!(r.net.hang_pings, BTreeSet::from([2]));
    }

    /// A bounced peer comes back with its own identity (0) or pool member `identity % 7`.
    #[test]
    fn a_bounced_peer_restarts_as_the_identity_it_names() {
        let mut r = run(PLAIN);
        play(&mut r, &learn());
        let bounce = |from, identity| MembershipOp::Bounce { from, identity };
        play(&mut r, &[bounce(1, 0), bounce(2, 11), bounce(3, 6)]);
        assert_eq!(r.net.nodes[2].comm.pki_id(), &pki(2));
        assert_eq!(r.net.nodes[3].comm.pki_id(), &pki(4));
        assert_eq!(r.net.nodes[1].comm.pki_id(), &pki(6));
        assert!(r.net.nodes.iter().all(|n| n.up));
    }

    /// `Advance` lets exactly its quarters pass; the run's end lets ten seconds more.
    #[test]
    fn time_passes_by_quarter_seconds() {
        let mut r = run(PLAIN);
        let before = r.net.now;
        play(&mut r, &[MembershipOp::Advance { quarters: 6 }]);
        assert_eq!(r.net.now, before + Duration::from_millis(1500));
        play(&mut r, &[MembershipOp::Advance { quarters: 0 }]);
        assert_eq!(r.net.now, before + Duration::from_millis(1500));
    }

    /// A request is answered to the peer that sent it, at once, and its valid
    /// self-information makes that peer a member.
    #[test]
    fn a_request_is_answered_to_its_peer_and_its_sender_learned() {
        let mut r = run(PLAIN);
        play(
            &mut r,
            &[MembershipOp::Request {
                from: 4,
                alive: valid(2, 1),
            }],
        );
        assert_eq!(member_ids(&r), [pki(2)]);
        let answered = |r: &Run, p| {
            delivered_to(r, p)
                .iter()
                .any(|m| matches!(m.content, Some(gossip_message::Content::MemRes(_))))
        };
        assert!(answered(&r, 2));
        assert!(!answered(&r, 1) && !answered(&r, 3));
    }

    /// A response's valid alive entries become members, its dead ones dead members, its
    /// forged ones nothing.
    #[test]
    fn a_responses_valid_entries_are_taken() {
        let mut r = run(PLAIN);
        play(
            &mut r,
            &[MembershipOp::Response {
                from: 0,
                nonce: 0,
                alive: vec![
                    valid(4, 1),
                    Alive {
                        flaw: 6,
                        ..valid(6, 1)
                    },
                ],
                dead: vec![valid(5, 1)],
            }],
        );
        let alive: Vec<PkiId> = r.layer.members().into_iter().map(|m| m.pki_id).collect();
        let dead: Vec<PkiId> = r
            .layer
            .dead_members()
            .into_iter()
            .map(|m| m.pki_id)
            .collect();
        assert_eq!((alive, dead), (vec![pki(4)], vec![pki(5)]));
    }

    /// The nonce a peer echoes: that of the `pick % n`-th most recent of node 0's messages
    /// of the kind answered, `pick` itself when there is none, and a made-up one for 255.
    #[test]
    fn a_nonce_echoes_the_message_it_picks() {
        let mut r = run(PLAIN);
        // Node 0's hellos to its members, one per pull interval.
        play(&mut r, &learn());
        play(&mut r, &[MembershipOp::Advance { quarters: 60 }]);
        let hellos: Vec<u64> = delivered_to(&r, 1)
            .iter()
            .filter_map(|m| match &m.content {
                Some(gossip_message::Content::Hello(h)) => Some(h.nonce),
                _ => None,
            })
            .collect();
        assert!(hellos.len() >= 3, "{hellos:?}");
        let n = hellos.len();
        assert_eq!(r.nonce(1, 0, Answers::Hello), hellos[n - 1]);
        assert_eq!(r.nonce(1, 1, Answers::Hello), hellos[n - 2]);
        assert_eq!(r.nonce(1, 2, Answers::Hello), hellos[n - 3]);
        assert_eq!(r.nonce(1, n as u8, Answers::Hello), hellos[n - 1]);
        assert_eq!(r.nonce(1, 255, Answers::Hello), 0x5eed_0000_0000_0001);
        assert_eq!(r.nonce(3, 255, Answers::Hello), 0x5eed_0000_0000_0003);
        assert_eq!(
            run(PLAIN).nonce(2, 7, Answers::Hello),
            7,
            "nothing sent yet"
        );
        assert_eq!(
            r.nonce(1, 7, Answers::PullRequest),
            7,
            "no pull request sent"
        );
    }

    /// A peer's pull messages reach the layer as their kinds say: its hello is answered
    /// with our digest, and its request echoing that digest with our update (our own
    /// identity, which it named).
    #[test]
    fn a_peers_hello_and_request_are_answered_with_a_digest_and_an_update() {
        let mut r = run(PLAIN);
        play(&mut r, &learn());
        let kinds = |r: &Run| {
            delivered_to(r, 2)
                .iter()
                .filter_map(|m| match &m.content {
                    Some(gossip_message::Content::DataDig(_)) => Some("digest"),
                    Some(gossip_message::Content::DataUpdate(_)) => Some("update"),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&r), Vec::<&str>::new());
        let pull = |kind, nonce, items| MembershipOp::Pull {
            from: 1,
            kind,
            nonce,
            items,
        };
        play(&mut r, &[pull(4, 255, vec![])]);
        assert_eq!(kinds(&r), ["digest"]);
        play(&mut r, &[pull(2, 0, vec![0, 7])]);
        assert_eq!(kinds(&r), ["digest", "update"]);
    }

    /// The identity-pull seed's round: our hello answered by a digest naming identity 4
    /// first, our request for it answered by an update carrying it; identity 4 is pulled,
    /// and no other.
    #[test]
    fn the_pull_seeds_update_brings_the_identity_node_0_asked_for() {
        let mut r = run(MembershipConfig { flags: 5, ..PLAIN });
        play(&mut r, &ops_of(&seed("identity-pull")));
        let now = r.net.now;
        let held: Vec<PkiId> = (1..POOL)
            .map(pki)
            .filter(|p| r.layer.pulled_identity(p, now).is_some())
            .collect();
        assert_eq!(held, [pki(4)]);
    }

    #[test]
    fn each_answer_takes_the_nonce_of_its_own_kind_only() {
        let mut req = crate::membership_request(Envelope::default(), 0);
        req.nonce = 11;
        let msgs = [
            (req, Answers::MembershipRequest),
            (wire::hello(12), Answers::Hello),
            (wire::digest(13, &[]), Answers::Digest),
            (wire::request(14, &[]), Answers::PullRequest),
        ];
        let kinds = [
            Answers::MembershipRequest,
            Answers::Hello,
            Answers::Digest,
            Answers::PullRequest,
            Answers::Nothing,
        ];
        for (i, (m, _)) in msgs.iter().enumerate() {
            for (k, kind) in kinds.iter().enumerate() {
                let want = (i == k).then_some(11 + i as u64);
                assert_eq!(kind.nonce_of(m), want, "message {i}, kind {k}");
            }
        }
        let update = wire::update(15, vec![]);
        assert!(kinds.iter().all(|k| k.nonce_of(&update).is_none()));
    }

    #[test]
    fn pull_items_name_pool_members_below_128_and_made_up_ids_from_it() {
        assert_eq!(item_pki(9), pki(2));
        assert_eq!(item_pki(127), pki(1));
        assert_eq!(item_pki(128), PkiId::new(Bytes::from(vec![128; 3])));
        assert_eq!(item_pki(255), PkiId::new(Bytes::from(vec![255; 3])));
    }

    /// Lists hold at most 8 entries (a length byte of 9 is 0), and step kinds wrap at 9.
    #[test]
    fn list_lengths_and_step_kinds_wrap() {
        let alive = [1, 0, 5, 0];
        let mut bytes = vec![2, 0, 0, 8];
        bytes.extend(alive.repeat(8));
        bytes.push(9);
        let MembershipOp::Response { alive: a, dead, .. } =
            MembershipOp::read(&mut Input::new(&bytes))
        else {
            panic!("not a response");
        };
        assert_eq!((a.len(), dead.len()), (8, 0));
        let pull = |n| {
            let mut bytes = vec![3, 0, 1, 0, n];
            bytes.extend([4; 9]);
            match MembershipOp::read(&mut Input::new(&bytes)) {
                MembershipOp::Pull { items, .. } => items.len(),
                other => panic!("not a pull: {other:?}"),
            }
        };
        assert_eq!((pull(8), pull(9), pull(17)), (8, 0, 8));
        assert_eq!(
            MembershipOp::read(&mut Input::new(&[9, 2, 1, 0, 5, 0])),
            MembershipOp::Alive {
                from: 2,
                alive: Alive {
                    who: 1,
                    inc: 0,
                    seq: 5,
                    flaw: 0
                }
            }
        );
    }

    /// The checks fail when what they guard is broken: a member's timestamp nobody signed,
    /// a member over the bound, events over theirs, a member going back, pulled
    /// identities over their count or bytes.
    #[test]
    fn the_checks_fail_on_what_they_guard() {
        let learned = || {
            let mut r = run(PLAIN);
            play(&mut r, &learn());
            r
        };
        learned().check();
        let mut r = learned();
        r.signed.remove(&(2, ts(1, 1)));
        assert!(panics(|| r.check()), "an unsigned timestamp");
        let mut r = learned();
        r.cfg.max_members = 2;
        assert!(panics(|| r.check()), "over max_members");
        let mut r = learned();
        r.last.insert(pki(3), ts(1, 2));
        assert!(panics(|| r.check()), "a member going back");
        let mut r = learned();
        r.cfg.max_events = 0;
        r.step(&MembershipOp::Alive {
            from: 0,
            alive: valid(4, 1),
        });
        assert!(panics(|| r.settle()), "over max_events");

        let mut r = run(MembershipConfig { flags: 5, ..PLAIN });
        play(&mut r, &ops_of(&seed("identity-pull")));
        assert!(r.layer.pulled_identities() > 0);
        r.check();
        r.cfg.certstore.max_identities = 0;
        assert!(panics(|| r.check()), "over max_identities");
        r.cfg.certstore.max_identities = 2;
        r.check();
        r.cfg.certstore.max_identity_bytes = 1;
        assert!(panics(|| r.check()), "over max_identity_bytes");
    }

    /// Once an event was dropped, a purge may go unseen, and a member may come back older:
    /// the check allows it then.
    #[test]
    fn a_member_may_go_back_after_a_dropped_event() {
        let mut r = run(MembershipConfig {
            max_events: 0,
            ..PLAIN
        });
        play(
            &mut r,
            &[MembershipOp::Response {
                from: 0,
                nonce: 0,
                alive: vec![valid(4, 1), valid(5, 1)],
                dead: vec![],
            }],
        );
        assert!(r.layer.stats().events_dropped > 0);
        r.last.insert(pki(5), ts(1, 2));
        r.check();
    }

    fn ops_of(input: &[u8]) -> Vec<MembershipOp> {
        let mut i = Input::new(&input[3..]);
        let mut ops = Vec::new();
        while !i.is_empty() {
            ops.push(MembershipOp::read(&mut i));
        }
        ops
    }

    /// Each seed reaches the checks it is for, in both runs of the entry point: the
    /// expiry seed knows its three peers and ends with them gone, the gossip seed fills
    /// membership, forgeries make no member but the valid one, and the pull seed pulls
    /// identities.
    #[test]
    fn each_seed_reaches_its_checks() {
        for (name, input) in membership_seeds() {
            let checks = checks_of(&input);
            let steps = ops_of(&input).len();
            // Per run: the start, each step, and the end's steps of at most a second.
            assert!(
                checks.len() >= 2 * (steps + 1 + 10),
                "{name}: {}",
                checks.len()
            );
            let (first, second) = checks.split_at(checks.len() / 2);
            let same = |a: &[Checked], b: &[Checked]| {
                a.iter().zip(b).all(|(x, y)| {
                    (x.events, &x.members, x.pulled) == (y.events, &y.members, y.pulled)
                })
            };
            assert!(same(first, second), "{name}: two runs checked differently");
            let most = first.iter().map(|c| c.members.len()).max().unwrap_or(0);
            let pulled = first.iter().map(|c| c.pulled).max().unwrap_or(0);
            let last = first.last().map_or(0, |c| c.members.len());
            match name {
                "expiry-and-purge" => {
                    assert_eq!(most, 3, "{name}");
                    assert!(last < 3, "{name}: {last} members at the end");
                }
                "requests-and-responses" => assert_eq!(most, 5, "{name}"),
                "forgeries" => {
                    assert_eq!(most, 1, "{name}");
                    assert!(first.iter().all(|c| c.members.iter().all(|m| *m == pki(1))));
                }
                // Ours and the one pulled.
                "identity-pull" => assert_eq!(pulled, 2, "{name}"),
                _ => panic!("a seed no test looks at: {name}"),
            }
            assert!(
                first.iter().any(|c| c.events > 0),
                "{name}: no event checked"
            );
        }
    }

    /// Node 0's core events reach its layer: a bootstrap peer's Handshake ends in an event
    /// (`HandshakeDone`), and only on it does the layer send the peer its membership
    /// request. A harness that withheld the core's events would leave the layer blind to
    /// connections, identity switches and presumed deaths without any check failing.
    #[test]
    fn the_cores_events_reach_the_layer() {
        let mut with_bootstrap = run(MembershipConfig { flags: 1, ..PLAIN });
        with_bootstrap.advance(Duration::from_secs(1));
        assert_eq!(with_bootstrap.layer.stats().requests_sent, 1);
        assert_eq!(with_bootstrap.layer.stats().bootstrap_failures, 0);
        let mut without = run(PLAIN);
        without.advance(Duration::from_secs(1));
        assert_eq!(without.layer.stats().requests_sent, 0);
    }

    /// The entry point's output: the run's events, members and counters.
    #[test]
    fn a_run_reports_its_events_members_and_counters() {
        let out = Run::play(&seed("requests-and-responses"));
        assert!(out.contains("MemberAlive"), "{out}");
        assert!(out.contains("pki_id"), "{out}");
        assert!(out.contains("events_dropped"), "{out}");
    }

    #[test]
    fn ops_encode_as_they_read() {
        for (_, bytes) in membership_seeds() {
            let mut i = Input::new(&bytes[3..]);
            let mut again = Output::default();
            again.bytes(&bytes[..3]);
            while !i.is_empty() {
                MembershipOp::read(&mut i).write(&mut again);
            }
            assert_eq!(again.into_bytes(), bytes);
        }
    }
}
