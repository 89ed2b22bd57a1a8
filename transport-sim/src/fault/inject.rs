//! Injecting faults: what each [`Fault`] does to the network and the nodes when it strikes.

use super::{Fault, ReaderMode, ScheduledFault};
use crate::config::START;
use crate::network::{Item, LinkId};
use crate::node::NodeState;
use crate::queue::Ev;
use crate::sim::Sim;
use crate::trace::trace;
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::proto::prost::Message as _;

impl Sim {
    /// Schedules faults at offsets from the start of the run (in the past: now).
    pub fn schedule_faults(&mut self, faults: &[ScheduledFault]) {
        for f in faults {
            let at = (START + f.at).max(self.now);
            self.schedule(at, Ev::Fault(Box::new(f.fault.clone())));
        }
    }

    pub(crate) fn apply_fault(&mut self, fault: Fault) {
        self.counters.faults += 1;
        if fault.nodes().iter().any(|n| *n >= self.nodes.len()) {
            trace!(self, "* {fault} ignored: no such node");
            return;
        }
        trace!(self, "* {fault}");
        match fault {
            Fault::Partition { a, b } => {
                self.blocked.cut_between(&a, &b, true);
                self.arm_keepalives();
            }
            Fault::OneWay { from, to } => {
                self.blocked.cut_between(&from, &to, false);
                self.arm_keepalives();
            }
            Fault::Isolate(n) => {
                let all: Vec<usize> = (0..self.nodes.len()).collect();
                self.blocked.cut_between(&[n], &all, true);
                self.arm_keepalives();
            }
            Fault::Heal => {
                self.blocked.clear();
                self.corrupt.clear();
                let stalled: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.pipes.iter().any(|p| !p.stalled.is_empty()))
                    .map(|(k, _)| k)
                    .collect();
                for link in stalled {
                    for dir in 0..2 {
                        let stalled: Vec<Item> = match self.links.get_mut(link) {
                            Some(l) => l.pipes[dir].stalled.drain(..).collect(),
                            None => continue,
                        };
                        for item in stalled {
                            if let (Item::Env(b), Some(l)) = (&item, self.links.get_mut(link)) {
                                l.pipes[dir].unread = l.pipes[dir].unread.saturating_sub(b.len());
                            }
                            self.transmit(link, dir, item);
                        }
                    }
                }
            }
            Fault::Crash(n) => {
                if self.nodes[n].stack.is_none() {
                    return;
                }
                self.retire(n);
                let node = &mut self.nodes[n];
                node.stack = None;
                node.state = NodeState::Crashed;
                node.streams.clear();
                node.dials.clear();
                node.subs.clear();
                node.wake_at = None;
                self.reset_links_of(n, None, "connection reset");
            }
            Fault::Stop(n) => {
                if self.nodes[n].state != NodeState::Up {
                    return;
                }
                self.input(n, None, |c, now| c.stop(now));
                self.nodes[n].state = NodeState::Stopped;
                // A stopped process runs no application: its layer goes (after it saw
                // the core stop), so its timers no longer wake the node.
                if let Some(s) = self.nodes[n].stack.as_mut() {
                    s.layer_mut().clear();
                }
            }
            Fault::Restart(n) | Fault::RestartNewIdentity(n) => {
                if self.nodes[n].state == NodeState::Up {
                    trace!(self, "n{n}   restart ignored: running");
                    return;
                }
                self.retire(n);
                let new = matches!(fault, Fault::RestartNewIdentity(_));
                if let Err(e) = self.boot(n, new) {
                    trace!(self, "n{n}   restart failed: {e}");
                }
            }
            Fault::Reset(a, b) => self.reset_links_of(a, Some(b), "stream reset"),
            Fault::Corrupt(a, b) => *self.corrupt.entry((a, b)).or_insert(0) += 1,
            Fault::Silent(n, on) => self.nodes[n].spec.silent = on,
            Fault::BadSignature(n, on) => self.nodes[n].spec.bad_signature = on,
            Fault::HangPing(n, on) => self.nodes[n].spec.hang_ping = on,
            Fault::StepClock { node, ahead, by } => {
                let by = i128::try_from(by.as_nanos()).unwrap_or(i128::MAX);
                let n = &mut self.nodes[node];
                n.wall_step = n.wall_step.saturating_add(if ahead { by } else { -by });
                n.wall_stepped = true;
                let wall = n.wall_clock(self.now);
                if let Some(comm) = n.core() {
                    comm.security().wall_clock(self.now, wall);
                }
            }
            Fault::Reader(n, mode) => {
                self.nodes[n].spec.reader = mode;
                match mode {
                    ReaderMode::Eager => {
                        if self.nodes[n].stack.is_some() {
                            // Deliveries may have waited since before the switch.
                            let subs = self.nodes[n].subs.clone();
                            self.nodes[n].ready = subs;
                            self.pump(n);
                        }
                    }
                    ReaderMode::Paused => {}
                    ReaderMode::Every(d) => {
                        if !self.nodes[n].reader_tick && self.has_queued_deliveries(n) {
                            let inc = self.nodes[n].incarnation;
                            self.nodes[n].reader_tick = true;
                            self.schedule(self.now + d, Ev::ReaderTick { node: n, inc });
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn reset_links_of(&mut self, a: usize, b: Option<usize>, reason: &'static str) {
        let latency = self.cfg.latency;
        let hits: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| {
                let (x, y) = Self::link_nodes(l);
                match b {
                    None => x == Some(a) || y == Some(a),
                    Some(b) => (x == Some(a) && y == Some(b)) || (x == Some(b) && y == Some(a)),
                }
            })
            .map(|(k, _)| k)
            .collect();
        for link in hits {
            self.reset_link(link, reason, latency);
        }
    }

    /// Arms the keepalive of every link a partition now cuts (once per link).
    pub(crate) fn arm_keepalives(&mut self) {
        let cut: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| !l.keepalive_armed && self.is_link_cut(l))
            .map(|(k, _)| k)
            .collect();
        let at = self.now + self.cfg.keepalive_timeout;
        for link in cut {
            if let Some(l) = self.links.get_mut(link) {
                l.keepalive_armed = true;
            }
            self.schedule(at, Ev::Keepalive { link });
        }
    }
}

/// Flips a bit of an Envelope's signature (or of its last byte if it does not decode).
pub(crate) fn mangle_signature(bytes: Bytes) -> Bytes {
    match Envelope::decode(bytes.clone()) {
        Ok(mut env) if !env.signature.is_empty() => {
            let mut sig = env.signature.to_vec();
            if let Some(b) = sig.last_mut() {
                *b ^= 0x01;
            }
            env.signature = Bytes::from(sig);
            Bytes::from(env.encode_to_vec())
        }
        _ => {
            let mut v = bytes.to_vec();
            if let Some(b) = v.last_mut() {
                *b ^= 0x01;
            }
            Bytes::from(v)
        }
    }
}
