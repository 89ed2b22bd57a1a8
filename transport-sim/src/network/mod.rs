//! The network between the cores: what gRPC over TCP gives a gossip peer. A dial succeeds,
//! is refused or hangs; a Ping answers or hangs; a stream is a [`Link`] of two ends and two
//! ordered pipes with latency and jitter, which a partition stalls, a reset or a crash
//! ends, and a keepalive times out. Flow control of each pipe is in [`flow`].

mod cuts;
mod flow;

pub(crate) use cuts::Cuts;

fabric_gossip_core::handle_type!(
    /// A link (one stream between two ends) in the network's slab: a stale event that
    /// names a closed link finds nothing, even once its slot holds a new one.
    pub(crate) LinkId,
    "link"
);

use crate::node::{NodeState, TlsMode};
use crate::queue::{Answer, Ev, StreamReset};
use crate::raw::RAW_RECEIVE_LIMIT;
use crate::sim::Sim;
use crate::trace::{Cert, Digest8, EndFmt, trace};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::{CertHash, DialId, Instant, StreamEnd, StreamId};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Core { node: usize, inc: u32 },
    Raw(usize),
}

#[derive(Debug)]
pub(crate) struct End {
    pub(crate) owner: Owner,
    pub(crate) stream: Option<StreamId>,
    pub(crate) open: bool,
    pub(crate) paused: bool,
    pub(crate) writes: u64,
}

/// What travels on a pipe. Kept small (the rare `Open` is boxed) because queue entries
/// are moved on every heap operation.
#[derive(Debug)]
pub(crate) enum Item {
    Open(Box<(Option<CertHash>, String)>),
    Env(Bytes),
    End(StreamEnd),
}

#[derive(Debug, Default)]
pub(crate) struct Pipe {
    /// Bytes written into the pipe and not yet consumed by the reader.
    pub(crate) unread: usize,
    /// Writes waiting for window credit (not yet confirmed to the writer). The writer's
    /// core hands out at most `write_window` unconfirmed writes, which bounds this.
    pub(crate) blocked: VecDeque<Bytes>,
    /// Envelopes arrived while the reader was paused (counted in `unread`, so bounded by
    /// the window plus one envelope).
    pub(crate) held: VecDeque<Bytes>,
    /// Items cut off by a partition, sent on when it heals (counted in `unread` as well).
    pub(crate) stalled: VecDeque<Item>,
    pub(crate) last_arrival: Instant,
}

#[derive(Debug)]
pub(crate) struct Link {
    /// 0: the side that opened the stream, 1: the side that accepted it.
    pub(crate) ends: [End; 2],
    /// `pipes[d]` carries from `ends[d]` to `ends[1 - d]`.
    pub(crate) pipes: [Pipe; 2],
    pub(crate) keepalive_armed: bool,
}

impl Link {
    /// A stream just opened by `opener` (with its stream handle, if a core's) towards
    /// `acceptor`, both ends open, nothing in flight.
    pub(crate) fn new(opener: (Owner, Option<StreamId>), acceptor: Owner) -> Self {
        let end = |owner, stream| End {
            owner,
            stream,
            open: true,
            paused: false,
            writes: 0,
        };
        Link {
            ends: [end(opener.0, opener.1), end(acceptor, None)],
            pipes: [Pipe::default(), Pipe::default()],
            keepalive_armed: false,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamSlot {
    pub(crate) generation: u32,
    pub(crate) link: LinkId,
    pub(crate) side: usize,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct DialSlot {
    pub(crate) generation: u32,
    pub(crate) target: Option<usize>,
    pub(crate) target_inc: u32,
}

impl Sim {
    pub(crate) fn cut(&self, from: usize, to: usize) -> bool {
        self.blocked.is_cut(from, to)
    }

    pub(crate) fn jitter(&mut self) -> Duration {
        if self.cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            self.rng.duration(Duration::ZERO, self.cfg.jitter)
        }
    }

    pub(crate) fn rtt(&mut self) -> Duration {
        self.cfg.latency * 2 + self.jitter()
    }

    pub(crate) fn slot(&self, n: usize, stream: StreamId) -> Option<StreamSlot> {
        self.nodes[n]
            .streams
            .get(stream.index() as usize)
            .copied()
            .flatten()
            .filter(|s| s.generation == stream.generation())
    }

    pub(crate) fn map_stream(&mut self, n: usize, stream: StreamId, link: LinkId, side: usize) {
        let slot = StreamSlot {
            generation: stream.generation(),
            link,
            side,
        };
        put(&mut self.nodes[n].streams, stream.index(), slot);
    }

    pub(crate) fn unmap_stream(&mut self, n: usize, stream: StreamId) {
        if let Some(s) = self.nodes[n].streams.get_mut(stream.index() as usize)
            && s.is_some_and(|x| x.generation == stream.generation())
        {
            *s = None;
        }
    }

    pub(crate) fn dial(&mut self, n: usize, dial: DialId, endpoint: &str) {
        let target = self.endpoints.get(endpoint).copied();
        let target_inc = target.map_or(0, |t| self.nodes[t].incarnation);
        let slot = DialSlot {
            generation: dial.generation(),
            target,
            target_inc,
        };
        put(&mut self.nodes[n].dials, dial.index(), slot);
        let result = match target {
            None => Some(Err("connection refused: no such host".to_string())),
            Some(t) if self.nodes[t].state != NodeState::Up => {
                Some(Err("connection refused".to_string()))
            }
            Some(t) if self.cut(n, t) || self.cut(t, n) => None,
            Some(t) => Some(Ok(self.nodes[t].certs.as_ref().map(|c| c.server_cert_hash))),
        };
        let inc = self.nodes[n].incarnation;
        match result {
            None => self.counters.dials_hung += 1,
            Some(Ok(_)) => self.counters.dials_ok += 1,
            Some(Err(_)) => self.counters.dials_refused += 1,
        }
        if let Some(result) = result {
            self.answer(n, inc, dial, Answer::Dial(Box::new(result)));
        }
    }

    /// Node `n` (incarnation `inc`) gets `answer` to its dial or Ping a round trip from now.
    pub(crate) fn answer(&mut self, n: usize, inc: u32, dial: DialId, answer: Answer) {
        let at = self.now + self.rtt();
        let ev = Ev::DialAnswer {
            node: n,
            inc,
            dial,
            answer,
        };
        self.schedule(at, ev);
    }

    /// Node `n`'s record of dial `dial` (by index: a Ping or a stream follows its dial).
    pub(crate) fn dial_slot(&self, n: usize, dial: DialId) -> Option<DialSlot> {
        self.nodes[n]
            .dials
            .get(dial.index() as usize)
            .copied()
            .flatten()
    }

    pub(crate) fn ping(&mut self, n: usize, dial: DialId) {
        let Some(d) = self.dial_slot(n, dial) else {
            return;
        };
        let result = match d.target {
            Some(t)
                if self.nodes[t].state != NodeState::Up
                    || self.nodes[t].incarnation != d.target_inc =>
            {
                Some(Err("unavailable: connection closed".to_string()))
            }
            Some(t) if self.cut(n, t) || self.cut(t, n) || self.nodes[t].spec.hang_ping => None,
            Some(_) => Some(Ok(())),
            None => Some(Err("unavailable".to_string())),
        };
        match result {
            None => self.counters.pings_hung += 1,
            Some(Ok(())) => self.counters.pings_ok += 1,
            Some(Err(_)) => self.counters.pings_failed += 1,
        }
        let inc = self.nodes[n].incarnation;
        if let Some(result) = result {
            self.answer(n, inc, dial, Answer::Ping(result));
        }
    }

    pub(crate) fn open_stream(&mut self, n: usize, dial: DialId, stream: StreamId) {
        let Some(d) = self.dial_slot(n, dial) else {
            self.violation(format!("n{n}: OpenStream {stream} on unknown dial {dial}"));
            return;
        };
        let Some(t) = d.target else { return };
        let inc = self.nodes[n].incarnation;
        let link = self.links.insert(Link::new(
            (Owner::Core { node: n, inc }, Some(stream)),
            Owner::Core {
                node: t,
                inc: d.target_inc,
            },
        ));
        self.map_stream(n, stream, link, 0);
        self.counters.streams_opened += 1;
        let node = &self.nodes[n];
        let cert = match node.spec.tls {
            TlsMode::MutualNoClientCert | TlsMode::Off => None,
            _ => node.certs.as_ref().map(|c| c.client_cert_hash),
        };
        let addr = node.endpoint.clone();
        self.transmit(link, 0, Item::Open(Box::new((cert, addr))));
    }

    pub(crate) fn owner_node(o: Owner) -> Option<usize> {
        match o {
            Owner::Core { node, .. } => Some(node),
            Owner::Raw(_) => None,
        }
    }

    /// Puts an item on pipe `dir` of `link`: scheduled for arrival after the latency (never
    /// before an earlier item of the same pipe), or stalled if a partition cuts it.
    pub(crate) fn transmit(&mut self, link: LinkId, dir: usize, item: Item) {
        let jitter = self.jitter();
        let Some(l) = self.links.get(link) else {
            return;
        };
        let from = Self::owner_node(l.ends[dir].owner);
        let to = Self::owner_node(l.ends[1 - dir].owner);
        let mut item = item;
        if let Item::Env(b) = &mut item {
            self.counters.envelopes += 1;
            if let (Some(f), Some(t)) = (from, to)
                && let Some(k) = self.corrupt.get_mut(&(f, t))
                && *k > 0
            {
                *k -= 1;
                let flips = 1 + self.rng.index(3);
                let mut v = b.to_vec();
                for _ in 0..flips {
                    if !v.is_empty() {
                        let i = self.rng.index(v.len());
                        v[i] ^= 1 << self.rng.below(8);
                    }
                }
                *b = Bytes::from(v);
                self.counters.envelopes_corrupted += 1;
                trace!(self, "n{f}   corrupted on the way to n{t} {}", Digest8(b));
            }
        }
        let cut = matches!((from, to), (Some(f), Some(t)) if self.cut(f, t));
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let pipe = &mut l.pipes[dir];
        if let Item::Env(b) = &item {
            pipe.unread += b.len();
        }
        if cut {
            pipe.stalled.push_back(item);
            if !l.keepalive_armed {
                l.keepalive_armed = true;
                let at = self.now + self.cfg.keepalive_timeout;
                self.schedule(at, Ev::Keepalive { link });
            }
            return;
        }
        let at = (self.now + self.cfg.latency + jitter).max(pipe.last_arrival);
        pipe.last_arrival = at;
        let dir = u8::from(dir == 1);
        self.schedule(at, Ev::Arrive { link, dir, item });
    }

    pub(crate) fn arrive(&mut self, link: LinkId, dir: usize, item: Item) {
        let Some(l) = self.links.get(link) else {
            if matches!(item, Item::Env(_)) {
                self.counters.envelopes_lost += 1;
            }
            return;
        };
        let end = &l.ends[1 - dir];
        // A reader resumed but not yet fed (`SimConfig::resume_lag`) keeps what arrives
        // behind what it holds, so order holds.
        let backlog = !l.pipes[dir].held.is_empty();
        let (owner, mut open, paused, stream) = (end.owner, end.open, end.paused, end.stream);
        if let Owner::Core { node, inc } = owner
            && !matches!(item, Item::Open(_))
            && !self.node_live(node, inc)
        {
            // The process this end belonged to is gone; only the link's bookkeeping remains.
            open = false;
        }
        match item {
            Item::Open(hello) => {
                let (cert, addr) = *hello;
                let Owner::Core { node, inc } = owner else {
                    return;
                };
                if !open {
                    return;
                }
                let up =
                    self.nodes[node].state == NodeState::Up && self.nodes[node].incarnation == inc;
                if !up {
                    trace!(self, "n{node} < refused stream from {addr}: not listening");
                    self.close_end(link, 1 - dir, StreamEnd::Error("connection refused".into()));
                    return;
                }
                trace!(
                    self,
                    "n{node} < accept from {addr} cert={}",
                    Cert(cert.as_ref())
                );
                let now = self.now;
                let Some(comm) = self.nodes[node].core_mut() else {
                    return;
                };
                match comm.accept_stream(now, &addr, cert) {
                    Ok(sid) => {
                        if let Some(l) = self.links.get_mut(link) {
                            l.ends[1 - dir].stream = Some(sid);
                        }
                        self.map_stream(node, sid, link, 1 - dir);
                        trace!(self, "n{node}   accepted as {sid}");
                        self.pump(node);
                    }
                    Err(e) => {
                        trace!(self, "n{node}   refused: {e}");
                        self.close_end(link, 1 - dir, StreamEnd::Error("Shutting down".into()));
                    }
                }
            }
            Item::Env(bytes) => {
                if !open {
                    self.counters.envelopes_lost += 1;
                    self.consumed(link, dir, bytes.len());
                    return;
                }
                match owner {
                    Owner::Raw(r) => {
                        self.consumed(link, dir, bytes.len());
                        trace!(self, "raw{r} < {}B {}", bytes.len(), Digest8(&bytes));
                        if let Some(raw) = self.raws.get_mut(r) {
                            raw.received_total += 1;
                            if raw.received.len() < RAW_RECEIVE_LIMIT {
                                raw.received.push(bytes);
                            }
                        }
                    }
                    Owner::Core { .. } if paused || backlog => {
                        if let Some(l) = self.links.get_mut(link) {
                            l.pipes[dir].held.push_back(bytes);
                        }
                    }
                    Owner::Core { node, .. } => {
                        if let Some(sid) = stream {
                            self.consume(link, dir, node, sid, bytes);
                        }
                    }
                }
            }
            Item::End(how) => {
                if open && !paused && backlog {
                    // A reader reads what it held before the end (it is resumed, only
                    // late: `SimConfig::resume_lag`).
                    self.feed_held(link, dir);
                    return self.arrive(link, dir, Item::End(how));
                }
                if !open {
                    self.drop_if_closed(link);
                    return;
                }
                if let Some(l) = self.links.get_mut(link) {
                    let e = &mut l.ends[1 - dir];
                    e.open = false;
                    e.paused = false;
                    l.pipes[1 - dir].blocked.clear();
                    // What waits for a paused reader goes with the stream. The network counts
                    // it lost: the writer's end, not the reader's core, threw it away. (HTTP/2
                    // would hand a reader the data before the end; the simulator does not
                    // model a reader draining a stream that already ended.)
                    let held = core::mem::take(&mut l.pipes[dir].held);
                    self.counters.envelopes_lost += held.len() as u64;
                }
                match owner {
                    Owner::Raw(r) => {
                        trace!(self, "raw{r} < end {}", EndFmt(&how));
                        if let Some(raw) = self.raws.get_mut(r) {
                            raw.ended = Some(how);
                        }
                    }
                    Owner::Core { node, inc } => {
                        if let Some(sid) = stream
                            && self.node_live(node, inc)
                        {
                            self.unmap_stream(node, sid);
                            trace!(self, "n{node} < closed {sid} {}", EndFmt(&how));
                            self.input(node, Some("stream ended"), |c, now| {
                                let _ = c.handle_stream_closed(now, sid, how);
                            });
                        }
                    }
                }
                self.drop_if_closed(link);
            }
        }
    }

    /// Closes side `side` of `link` from its own end: `how` travels to the other end after
    /// whatever that side already wrote.
    pub(crate) fn close_end(&mut self, link: LinkId, side: usize, how: StreamEnd) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if !l.ends[side].open {
            return;
        }
        l.ends[side].open = false;
        l.ends[side].paused = false;
        l.pipes[side].blocked.clear();
        let ends = (
            l.ends[1 - side].owner,
            l.ends[side].owner,
            l.ends[side].stream,
        );
        let aborted = matches!(how, StreamEnd::Error(_));
        let unread = core::mem::take(&mut l.pipes[1 - side].held);
        let held: usize = unread.iter().map(Bytes::len).sum();
        l.pipes[1 - side].unread = l.pipes[1 - side].unread.saturating_sub(held);
        if l.ends[1 - side].open {
            self.transmit(link, side, Item::End(how));
        } else {
            self.links.remove(link);
        }
        self.discarded_unread(ends, unread, aborted);
    }

    pub(crate) fn drop_if_closed(&mut self, link: LinkId) {
        if self
            .links
            .get(link)
            .is_some_and(|l| !l.ends[0].open && !l.ends[1].open)
        {
            self.links.remove(link);
        }
    }

    /// Resets a stream: both open ends learn after `delay`; whatever was in flight is lost.
    pub(crate) fn reset_link(&mut self, link: LinkId, reason: &'static str, delay: Duration) {
        let Some(l) = self.links.remove(link) else {
            return;
        };
        self.counters.streams_reset += 1;
        // Stalled by a partition or held for a paused reader: the reset loses both, and
        // the network counts them (a fault, not a silent loss). Only envelopes count: a
        // stalled stream opening or end is no message.
        let lost: u64 = l
            .pipes
            .iter()
            .map(|p| {
                let stalled = p.stalled.iter().filter(|i| matches!(i, Item::Env(_)));
                (stalled.count() + p.held.len()) as u64
            })
            .sum();
        self.counters.envelopes_lost += lost;
        for side in 0..2 {
            let e = &l.ends[side];
            if !e.open {
                continue;
            }
            match e.owner {
                Owner::Raw(r) => {
                    if let Some(raw) = self.raws.get_mut(r) {
                        raw.ended = Some(StreamEnd::Error(reason.into()));
                    }
                }
                Owner::Core { node, inc } => {
                    let Some(stream) = e.stream else { continue };
                    if !self.node_live(node, inc) || self.nodes[node].state != NodeState::Up {
                        continue;
                    }
                    let reset = StreamReset {
                        node,
                        inc,
                        link,
                        stream,
                        reason,
                        write_pending: !l.pipes[side].blocked.is_empty(),
                    };
                    self.schedule(self.now + delay, Ev::Reset(reset));
                }
            }
        }
    }

    /// A reset reaches node `r.node`'s end: the core learns it as a failed write if one
    /// was waiting for credit, else as the stream closing with an error.
    pub(crate) fn stream_reset(&mut self, r: StreamReset) {
        let StreamReset {
            node,
            stream,
            reason,
            ..
        } = r;
        if !self.node_live(node, r.inc) || self.slot(node, stream).is_none_or(|s| s.link != r.link)
        {
            return;
        }
        self.unmap_stream(node, stream);
        if r.write_pending {
            trace!(self, "n{node} < write failed {stream}: {reason}");
            self.input(node, Some("write failed"), |c, now| {
                let _ = c.handle_write_failed(now, stream, reason.into());
            });
        } else {
            trace!(self, "n{node} < closed {stream} error: {reason}");
            self.input(node, Some("stream reset"), |c, now| {
                let _ = c.handle_stream_closed(now, stream, StreamEnd::Error(reason.into()));
            });
        }
    }

    pub(crate) fn link_nodes(l: &Link) -> (Option<usize>, Option<usize>) {
        (
            Self::owner_node(l.ends[0].owner),
            Self::owner_node(l.ends[1].owner),
        )
    }

    pub(crate) fn link_cut(&self, link: LinkId) -> bool {
        self.links.get(link).is_some_and(|l| self.is_link_cut(l))
    }

    /// Whether a partition cuts `l` in either direction.
    pub(crate) fn is_link_cut(&self, l: &Link) -> bool {
        match Self::link_nodes(l) {
            (Some(a), Some(b)) => self.cut(a, b) || self.cut(b, a),
            _ => false,
        }
    }

    pub(crate) fn established_end(&self, e: &End) -> Option<usize> {
        let (Owner::Core { node, inc }, Some(sid), true) = (e.owner, e.stream, e.open) else {
            return None;
        };
        if !self.node_live(node, inc) {
            return None;
        }
        let comm = self.nodes[node].core()?;
        comm.connection_info(sid)?;
        Some(node)
    }
}

/// Sets entry `index` of a table indexed by a core handle's index, growing it as needed
/// (the core reuses indices, so a table stays as long as the most handles ever live).
fn put<T: Copy>(table: &mut Vec<Option<T>>, index: u32, value: T) {
    let i = index as usize;
    if table.len() <= i {
        table.resize(i + 1, None);
    }
    table[i] = Some(value);
}
