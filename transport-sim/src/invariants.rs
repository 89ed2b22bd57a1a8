//! The invariants the simulator checks: after every step (queue bounds of the nodes the
//! step touched; every PresumedDead has a cause; no delivery to a stopped node; no write
//! on an unknown stream) and once the network is quiescent (at most one connection per
//! pair of PKI-IDs, no crossing secondary left, both ends agreeing).
//!
//! # No silent loss
//!
//! Every message a node's API accepted must be delivered, still queued, or counted as
//! dropped by somebody: the sending core (buffer overflow, closed, no connection, stopped),
//! the network (an envelope lost to a reset, a crash or a closed end, swallowed by a silent
//! node) or the receiving core (subscription overflow, unrouted, malformed). The one place a
//! message can vanish without any of them knowing is the reader's end of a stream: envelopes
//! the writer's core was told were written, that reached the reader and wait there unread
//! (its core paused reading), when the reader's own core closes the stream gracefully. (A
//! reader that aborts a stream with an error, for malformed input or a failed handshake,
//! and a node that stops lose what waits at their door as a crashing one does; the network
//! counts that in `envelopes_lost`.) The simulator
//! checks that place: every such envelope carrying a message (not the handshake) is a
//! violation
//! ([`Counters::envelopes_discarded_unread`](crate::Counters::envelopes_discarded_unread)
//! counts them too).

use crate::config::{MAX_VIOLATIONS, Violation};
use crate::network::Owner;
use crate::node::NodeState;
use crate::sim::Sim;
use crate::trace::trace;
use bytes::Bytes;
use fabric_gossip_core::PkiId;
use fabric_gossip_core::proto::gossip::gossip_message;
use fabric_gossip_core::{SignedMessage, StreamId};
use std::collections::BTreeMap;
use std::collections::VecDeque;

impl Sim {
    /// The command line that reruns this seed, from [`SimConfig::reproduce`](crate::SimConfig::reproduce).
    pub fn reproduce_hint(&self) -> String {
        format!(
            "reproduce with: {}",
            self.cfg
                .reproduce
                .replace("{seed}", &self.cfg.seed.to_string())
        )
    }

    /// `Err` with every violation and the reproduce line, if any invariant broke.
    pub fn check(&self) -> Result<(), String> {
        if self.violations.is_empty() {
            return Ok(());
        }
        let mut s = format!(
            "{} invariant violation(s) in seed {}:\n",
            self.violations_total, self.cfg.seed
        );
        for v in &self.violations {
            s.push_str(&format!("  {v}\n"));
        }
        s.push_str(&self.reproduce_hint());
        Err(s)
    }

    pub(crate) fn violation(&mut self, what: String) {
        trace!(self, "VIOLATION {what}");
        self.violations_total += 1;
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                at: self.elapsed(),
                what,
            });
        }
    }

    /// Envelopes that reached a reader's end of a stream and wait there unread are being
    /// thrown away because the reader's core closed the stream (`aborted`: with an error).
    /// `ends` are the writer, the reader and the reader's stream. What the writer's core wrote and was confirmed
    /// written is then lost without a count, unless it was the handshake: a violation.
    pub(crate) fn discarded_unread(
        &mut self,
        ends: (Owner, Owner, Option<StreamId>),
        unread: VecDeque<Bytes>,
        aborted: bool,
    ) {
        let (Owner::Core { node: from, .. }, Owner::Core { node: to, .. }, stream) = ends else {
            return;
        };
        let messages = unread
            .iter()
            .filter(|b| {
                SignedMessage::from_envelope_bytes((*b).clone()).is_ok_and(|m| {
                    !matches!(m.message().content, Some(gossip_message::Content::Conn(_)))
                })
            })
            .count();
        if messages == 0 {
            return;
        }
        if aborted || self.nodes[to].core().is_some_and(|c| c.is_stopped()) {
            // A reader that aborts a stream (malformed input, a failed handshake) discards
            // what follows, as any gRPC reader does, and its core counted the cause. A node
            // that stops leaves what waits at its door, as a crash does (its core counts only
            // its own queues, `dropped_on_stop`). Either way the network counts the rest lost.
            self.counters.envelopes_lost += unread.len() as u64;
            return;
        }
        self.counters.envelopes_discarded_unread += messages as u64;
        if !self.cfg.check_silent_loss {
            return;
        }
        let stream = stream.map_or_else(|| "an unaccepted stream".to_string(), |s| s.to_string());
        self.violation(format!(
            "n{to}: {messages} message(s) from n{from} discarded unread on {stream} when the reader closed it gracefully: \
             written and confirmed at n{from}, never delivered, counted by nobody"
        ));
    }

    /// Queue bounds of what the last step touched: each node's subscriptions and live
    /// counts, and the send queues of the streams it acted on or was fed. A send queue
    /// only changes through its own stream (a write, a confirmation, an envelope read)
    /// or a send naming its peer (recorded too), so the queues not touched kept the
    /// verdict they had. Sends a layer makes inside its node, and whatever a call through
    /// [`Sim::with_comm`] queued, are not seen one by one: a sweep looks at every queue of
    /// every node again once the network has taken as many steps as it has streams, which
    /// costs one look per step at most; it is skipped when no layer runs and no such call
    /// was made since the last one (then every change was seen).
    pub(crate) fn check_touched(&mut self) {
        let touched = core::mem::take(&mut self.touched);
        let streams = core::mem::take(&mut self.touched_streams);
        for &n in &touched {
            if let Some(v) = self.node_bounds(n) {
                self.violation(v);
            }
        }
        for &(n, s) in &streams {
            if let Some(v) = self.stream_bounds(n, s) {
                self.violation(v);
            }
        }
        self.touched = touched;
        self.touched_streams = streams;
        self.touched_streams.clear();
        self.steps_since_sweep += 1;
        if self.steps_since_sweep >= 2 * self.links.len() + self.nodes.len() {
            self.steps_since_sweep = 0;
            if !(self.unseen_sends || self.hosts_layers) {
                return;
            }
            self.unseen_sends = false;
            for n in 0..self.nodes.len() {
                if let Some(v) = self.queue_bounds(n) {
                    self.violation(v);
                }
            }
        }
    }

    /// Records that the current step acted on node `n`'s stream `s` (its send queue is
    /// checked after the step).
    pub(crate) fn touch_stream(&mut self, n: usize, s: StreamId) {
        if self.cfg.check_invariants {
            self.touched_streams.push((n, s));
        }
    }

    /// Every queue bound of node `n`: each stream's send queue, its subscriptions and its
    /// live counts.
    pub(crate) fn queue_bounds(&self, n: usize) -> Option<String> {
        let node = &self.nodes[n];
        node.streams
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let slot = slot.as_ref()?;
                Some(StreamId::from_parts(i as u32, slot.generation))
            })
            .find_map(|s| self.stream_bounds(n, s))
            .or_else(|| self.node_bounds(n))
    }

    /// Whether node `n`'s connection `s` holds more than its send buffer, wait queue and
    /// write window allow (`None` for a stream that is not an established connection).
    pub(crate) fn stream_bounds(&self, n: usize, s: StreamId) -> Option<String> {
        let c = self.nodes[n].core()?;
        let cfg = c.config();
        let fabric_gossip_core::SendQueueLen {
            buffered: buf,
            waiting,
            in_flight,
            ..
        } = c.send_queue_len(s)?;
        if buf <= cfg.send_buffer_size.max(1)
            && waiting <= cfg.max_waiting_sends
            && in_flight <= cfg.write_window
        {
            return None;
        }
        let pki = c
            .connection_info(s)
            .map(|i| i.id.clone())
            .unwrap_or_default();
        Some(format!(
            "n{n}: connection {s} to {pki} holds buffer {buf}/{}, waiting \
             {waiting}/{}, in flight {in_flight}/{}",
            cfg.send_buffer_size, cfg.max_waiting_sends, cfg.write_window
        ))
    }

    /// Node `n`'s subscription queues and live streams, dials and operations.
    pub(crate) fn node_bounds(&self, n: usize) -> Option<String> {
        let node = &self.nodes[n];
        let c = node.core()?;
        let cfg = c.config();
        for sub in &node.subs {
            let q = c.delivery_queue_len(*sub);
            if q > cfg.subscription_buffer + cfg.recv_buffer_size {
                return Some(format!(
                    "n{n}: subscription {sub} queues {q}, more than {} + {}",
                    cfg.subscription_buffer, cfg.recv_buffer_size
                ));
            }
        }
        let fabric_gossip_core::LiveCounts {
            streams,
            dials,
            ops,
        } = c.live_counts();
        if streams > 2 * cfg.max_connections + cfg.max_pending_handshakes + cfg.max_operations
            || dials > streams + cfg.max_operations + cfg.max_connections
            || ops > cfg.max_operations
        {
            return Some(format!(
                "n{n}: live streams {streams}, dials {dials}, operations {ops} exceed bounds"
            ));
        }
        None
    }

    /// Checks what must hold once the network is quiescent: at most one connection per
    /// pair of PKI-IDs, no crossing secondary left over, both ends agreeing on each
    /// connection, and every node's queues within bounds. Records violations and returns
    /// them as an `Err` with the reproduce line.
    ///
    /// These are the comm layer's invariants, and they mean what they say only once the
    /// network is idle ([`Sim::run_until_idle`] returned `true`). A network whose layer never
    /// idles (membership's heartbeats) stops its nodes first and runs the rest out; a layer's
    /// own properties (every member seen alive) are the test's to check.
    pub fn check_quiescent(&mut self) -> Result<(), String> {
        let mut pairs: BTreeMap<(PkiId, PkiId), usize> = BTreeMap::new();
        let mut found = Vec::new();
        for link in self.links.keys() {
            let Some(l) = self.links.get(link) else {
                continue;
            };
            let (Some(a), Some(b)) = (
                self.established_end(&l.ends[0]),
                self.established_end(&l.ends[1]),
            ) else {
                continue;
            };
            let (pa, pb) = (self.pki_id(a), self.pki_id(b));
            let key = if pa <= pb { (pa, pb) } else { (pb, pa) };
            *pairs.entry(key).or_insert(0) += 1;
        }
        for ((x, y), count) in &pairs {
            if *count > 1 {
                found.push(format!("{count} connections between {x} and {y}"));
            }
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].state != NodeState::Up {
                continue;
            }
            let Some(c) = self.nodes[n].core() else {
                continue;
            };
            for fabric_gossip_core::ConnectionEntry {
                pki_id: pki,
                primary,
                secondary,
            } in c.connections()
            {
                if let Some(s) = secondary {
                    found.push(format!(
                        "n{n}: crossing secondary {s} to {pki} still open when quiescent"
                    ));
                }
                // The remote end of our primary must be open and registered there too.
                let Some(slot) = self.slot(n, primary) else {
                    found.push(format!("n{n}: connection {primary} to {pki} has no stream"));
                    continue;
                };
                let remote_ok = self.links.get(slot.link).is_some_and(|l| {
                    let e = &l.ends[1 - slot.side];
                    match e.owner {
                        Owner::Raw(_) => e.open,
                        Owner::Core { .. } => self.established_end(e).is_some(),
                    }
                });
                if !remote_ok {
                    found.push(format!(
                        "n{n}: connection {primary} to {pki} is not established at the other end"
                    ));
                }
            }
            if let Some(v) = self.queue_bounds(n) {
                found.push(v);
            }
        }
        for f in found {
            self.violation(format!("quiescent: {f}"));
        }
        self.check()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Fault, MAX_VIOLATIONS, NodeSpec, ReaderMode, Sim, SimConfig};
    use core::time::Duration;
    use fabric_gossip_core::SignedMessage;

    /// A change no step follows (made through `with_comm`: here a send buffer shrunk
    /// under a connection holding 20) is found by the sweep once the network has taken
    /// as many steps as it has links twice and nodes once, not one step before; after
    /// it, the steps that touch the connection look at it again, and the sweep waits for
    /// the next unseen change.
    #[test]
    fn the_sweep_finds_an_unseen_change_at_its_period() {
        let mut cfg = SimConfig::seeded(50);
        cfg.stream_window = 4 * 1024;
        let mut sim = Sim::new(cfg);
        let mut paused = NodeSpec::new().reader(ReaderMode::Paused);
        paused.config.subscription_buffer = 1;
        paused.config.recv_buffer_size = 0;
        sim.add_node(NodeSpec::new()).unwrap();
        sim.add_node(paused).unwrap();
        for n in 2..5 {
            sim.add_node(NodeSpec::new()).unwrap();
            let small = SignedMessage::noop(crate::data_message(1, vec![1u8; 8]));
            sim.send_to(n, &small, &[0]).unwrap();
        }
        let big = SignedMessage::noop(crate::data_message(2, vec![9u8; 1024]));
        for _ in 0..40 {
            sim.send_to(0, &big, &[1]).unwrap();
            sim.run_for(Duration::from_millis(1));
        }
        sim.run_for(Duration::from_secs(5));
        sim.check().unwrap();
        let period = 2 * sim.links.len() + sim.nodes.len();
        assert_eq!((sim.links.len(), sim.nodes.len()), (4, 5));
        sim.with_comm(0, |c, _| c.config_mut_for_tests().send_buffer_size = 10)
            .unwrap();
        for _ in sim.steps_since_sweep + 1..period {
            assert!(sim.step());
        }
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        assert!(sim.step());
        assert_eq!(sim.violations_total, 1, "{:?}", sim.violations());
        assert!(
            sim.violations()[0].what.contains("n0: connection")
                && sim.violations()[0].what.contains("holds buffer 20/10"),
            "{:?}",
            sim.violations()
        );
        assert_eq!(sim.steps_since_sweep, 0);
        sim.apply(Fault::Reader(1, ReaderMode::Eager));
        sim.run_for(Duration::from_millis(10));
        assert!(sim.violations_total > 1, "{:?}", sim.violations());
    }

    /// Every violation is counted, the first [`MAX_VIOLATIONS`] are kept, and `check`
    /// reports the count.
    #[test]
    fn violations_past_the_kept_ones_are_counted() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        for i in 0..=MAX_VIOLATIONS {
            sim.violation(format!("made up {i}"));
        }
        assert_eq!(sim.violations().len(), MAX_VIOLATIONS);
        assert_eq!(
            sim.violations()[MAX_VIOLATIONS - 1].what,
            format!("made up {}", MAX_VIOLATIONS - 1)
        );
        assert_eq!(sim.violations_total, MAX_VIOLATIONS as u64 + 1);
        let err = sim.check().unwrap_err();
        assert!(
            err.starts_with(&format!("{} invariant violation(s)", MAX_VIOLATIONS + 1)),
            "{err}"
        );
    }
}
