//! The invariants the simulator checks: after every step (queue bounds of the nodes the
//! step touched; every PresumedDead has a cause; no delivery to a stopped node; no write
//! on an unknown stream) and once the network is quiescent (at most one connection per
//! pair of PKI-IDs, no crossing secondary left, both ends agreeing).

use crate::config::{MAX_VIOLATIONS, Violation};
use crate::network::Owner;
use crate::node::NodeState;
use crate::sim::Sim;
use crate::trace::trace;
use fabric_gossip_core::PkiId;
use std::collections::BTreeMap;

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

    /// Queue bounds of the nodes the last step touched.
    pub(crate) fn check_touched(&mut self) {
        let touched = core::mem::take(&mut self.touched);
        for &n in &touched {
            if let Some(v) = self.queue_bounds(n) {
                self.violation(v);
            }
        }
        self.touched = touched;
    }

    pub(crate) fn queue_bounds(&self, n: usize) -> Option<String> {
        let node = &self.nodes[n];
        let c = node.comm.as_ref()?;
        let cfg = c.config();
        for (pki, primary, secondary) in c.connections() {
            for s in [Some(primary), secondary].into_iter().flatten() {
                if let Some((buf, waiting, in_flight)) = c.send_queue_len(s)
                    && (buf > cfg.send_buffer_size.max(1)
                        || waiting > cfg.max_waiting_sends
                        || in_flight > cfg.write_window)
                {
                    return Some(format!(
                        "n{n}: connection {s} to {pki} holds buffer {buf}/{}, waiting \
                         {waiting}/{}, in flight {in_flight}/{}",
                        cfg.send_buffer_size, cfg.max_waiting_sends, cfg.write_window
                    ));
                }
            }
        }
        for sub in &node.subs {
            let q = c.delivery_queue_len(*sub);
            if q > cfg.subscription_buffer + cfg.recv_buffer_size {
                return Some(format!(
                    "n{n}: subscription {sub} queues {q}, more than {} + {}",
                    cfg.subscription_buffer, cfg.recv_buffer_size
                ));
            }
        }
        let (streams, dials, ops) = c.live_counts();
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
            let Some(c) = self.nodes[n].comm.as_ref() else {
                continue;
            };
            for (pki, primary, secondary) in c.connections() {
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
