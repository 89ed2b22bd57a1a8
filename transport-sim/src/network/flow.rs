//! HTTP/2-style flow control of a stream direction: a write enters the pipe while the bytes
//! the reader has not consumed fit in [`SimConfig::stream_window`](crate::SimConfig)
//! (any write enters an empty window), otherwise it waits unconfirmed, so the writing
//! core's `write_window` is what bounds the wait. A paused reader leaves what arrives in
//! the pipe, which keeps the window full and pushes back on the writer.

use super::LinkId;
use super::{Item, Owner};
use crate::fault::inject::mangle_signature;
use crate::queue::Ev;
use crate::sim::Sim;
use crate::trace::{Digest8, EnvFmt, trace};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::{StreamId, WriteKind};

impl Sim {
    /// Node `n` writes `bytes` on `stream`. A [`WriteKind::Message`] is confirmed to the core
    /// once written (at once or up to `confirm_lag` later); a [`WriteKind::Handshake`] never
    /// is, as the core asks: its confirmation, if late, would land after the handshake and
    /// be taken as credit for a message.
    pub(crate) fn write(&mut self, n: usize, stream: StreamId, mut bytes: Bytes, kind: WriteKind) {
        let counted = kind == WriteKind::Message;
        let Some(s) = self.slot(n, stream) else {
            self.violation(format!(
                "n{n}: Write on {stream}, which it never opened or closed"
            ));
            return;
        };
        // Whatever happens to the bytes, the local write succeeds at once unless flow
        // control holds it: a real Send returns before the remote reads.
        let Some(l) = self.links.get_mut(s.link) else {
            // The stream was reset under the writer; it learns when the reset arrives.
            self.counters.envelopes_lost += 1;
            if counted {
                self.confirm_now(n, stream);
            }
            return;
        };
        l.ends[s.side].writes += 1;
        let first = l.ends[s.side].writes == 1;
        let remote_open = l.ends[1 - s.side].open;
        let (silent, bad_signature) = {
            let spec = &self.nodes[n].spec;
            (spec.silent, spec.bad_signature)
        };
        if silent {
            self.counters.envelopes_swallowed += 1;
            trace!(self, "n{n}   swallowed (silent)");
            if counted {
                self.confirm_now(n, stream);
            }
            return;
        }
        if bad_signature && first {
            bytes = mangle_signature(bytes);
            trace!(self, "n{n}   signature mangled {}", Digest8(&bytes));
        }
        if !remote_open {
            self.counters.envelopes_lost += 1;
            if counted {
                self.confirm_now(n, stream);
            }
            return;
        }
        let window = self.cfg.stream_window;
        let Some(l) = self.links.get_mut(s.link) else {
            return;
        };
        let pipe = &mut l.pipes[s.side];
        if pipe.blocked.is_empty() && (pipe.unread == 0 || pipe.unread + bytes.len() <= window) {
            self.transmit(s.link, s.side, Item::Env(bytes));
            if counted {
                if self.cfg.confirm_lag.is_zero() {
                    self.confirm_now(n, stream);
                } else {
                    self.confirm_later(n, stream);
                }
            }
        } else {
            // Never a handshake write: it is its stream's first, into an empty pipe, and a
            // released write is confirmed (`consumed`).
            pipe.blocked.push_back(bytes);
            let limit = self.nodes[n]
                .core()
                .map_or(usize::MAX, |c| c.config().write_window);
            let held = pipe.blocked.len();
            if held > limit {
                self.violation(format!(
                    "n{n}: {held} writes blocked on {stream}, more than write_window {limit}"
                ));
            }
        }
    }

    /// Confirms a write of node `n` while its actions are being drained (the core allows
    /// it: a confirmation only returns credit, and whatever it releases joins the actions
    /// being drained), which saves a separate input per message.
    pub(crate) fn confirm_now(&mut self, n: usize, stream: StreamId) {
        let now = self.now;
        if let Some(c) = self.nodes[n].core_mut() {
            let _ = c.handle_sent(now, stream, 1);
        }
    }

    /// Confirms a write of node `n` up to `confirm_lag` from now (`SimConfig::confirm_lag`).
    pub(crate) fn confirm_later(&mut self, n: usize, stream: StreamId) {
        let lag = self.rng.duration(Duration::ZERO, self.cfg.confirm_lag);
        let inc = self.nodes[n].incarnation;
        self.schedule(
            self.now + lag,
            Ev::Confirm {
                node: n,
                inc,
                stream,
            },
        );
    }

    /// Hands one envelope to the reading core, then lets blocked writes into the window.
    pub(crate) fn consume(
        &mut self,
        link: LinkId,
        dir: usize,
        node: usize,
        sid: StreamId,
        bytes: Bytes,
    ) {
        let len = bytes.len();
        let handshaking = self.nodes[node]
            .core()
            .is_some_and(|c| c.connection_info(sid).is_none());
        let cause = handshaking.then_some("handshake message");
        if self.trace.is_on() {
            trace!(self, "n{node} < envelope {sid} {}", EnvFmt(&bytes));
        }
        self.input(node, cause, |c, now| {
            let _ = c.handle_envelope(now, sid, bytes);
        });
        self.touch_stream(node, sid);
        self.consumed(link, dir, len);
    }

    /// `len` bytes of pipe `dir` were read: return the credit and let blocked writes go.
    pub(crate) fn consumed(&mut self, link: LinkId, dir: usize, len: usize) {
        let window = self.cfg.stream_window;
        let mut released = Vec::new();
        if let Some(l) = self.links.get_mut(link) {
            let pipe = &mut l.pipes[dir];
            pipe.unread = pipe.unread.saturating_sub(len);
            let mut projected = pipe.unread;
            while let Some(front) = pipe.blocked.front() {
                if projected != 0 && projected + front.len() > window {
                    break;
                }
                projected += front.len();
                if let Some(b) = pipe.blocked.pop_front() {
                    released.push(b);
                }
            }
        }
        if released.is_empty() {
            return;
        }
        let Some(l) = self.links.get(link) else {
            return;
        };
        let writer = (l.ends[dir].owner, l.ends[dir].stream);
        let lagged = !self.cfg.confirm_lag.is_zero();
        for b in released {
            self.transmit(link, dir, Item::Env(b));
            if let (Owner::Core { node, .. }, Some(sid)) = writer {
                if lagged {
                    self.confirm_later(node, sid);
                } else {
                    self.sent.push((node, sid));
                }
            }
        }
    }

    pub(crate) fn feed_held(&mut self, link: LinkId, dir: usize) {
        loop {
            let Some(l) = self.links.get_mut(link) else {
                return;
            };
            let end = &l.ends[1 - dir];
            let (owner, stream) = (end.owner, end.stream);
            if end.paused || !end.open {
                return;
            }
            let Some(bytes) = l.pipes[dir].held.pop_front() else {
                return;
            };
            if let (Owner::Core { node, .. }, Some(sid)) = (owner, stream) {
                self.consume(link, dir, node, sid, bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Link, Owner};
    use crate::{Sim, SimConfig};
    use bytes::Bytes;

    /// How many of `blocked` 1 KiB writes waiting behind `unread` bytes of a 4 KiB window
    /// a read of `read` bytes lets go.
    fn released(unread: usize, read: usize, blocked: usize) -> usize {
        let mut cfg = SimConfig::seeded(1);
        cfg.stream_window = 4096;
        let mut sim = Sim::new(cfg);
        let link = sim
            .links
            .insert(Link::new((Owner::Raw(0), None), Owner::Raw(1)));
        let pipe = &mut sim.links.get_mut(link).unwrap().pipes[0];
        pipe.unread = unread;
        pipe.blocked
            .extend((0..blocked).map(|_| Bytes::from(vec![0u8; 1024])));
        sim.consumed(link, 0, read);
        blocked - sim.links.get(link).unwrap().pipes[0].blocked.len()
    }

    #[test]
    fn a_read_lets_blocked_writes_into_the_window_while_they_fit() {
        assert_eq!(released(0, 0, 5), 4, "an empty window takes 4 KiB, no more");
        assert_eq!(
            released(4096, 1024, 3),
            1,
            "a full window takes what was read"
        );
        assert_eq!(released(4096, 0, 3), 0, "nothing read, nothing let go");
    }
}
