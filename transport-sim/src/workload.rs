//! A steady stream of messages from every node to random peers, drawn from the run's RNG,
//! for random runs, sweeps and benchmarks.

use crate::config::START;
use crate::node::{NodeState, payload};
use crate::queue::Ev;
use crate::sim::Sim;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{RemotePeer, SignedMessage};

/// A steady stream of messages from every node to random peers, for random runs and
/// benchmarks.
#[derive(Clone, Debug)]
pub struct Workload {
    /// When sending starts, from the start of the run.
    pub start: Duration,
    /// When sending stops, from the start of the run.
    pub stop: Duration,
    /// Mean time between two sends of one node (each gap is drawn from 0.5..1.5 of it).
    pub interval: Duration,
    /// Payload bytes per message.
    pub size: usize,
    /// Peers per send.
    pub fanout: usize,
    /// Sends that use `send_with_ack` instead of `send`, per mille.
    pub ack_per_mille: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            start: Duration::ZERO,
            stop: Duration::from_secs(10),
            interval: Duration::from_millis(10),
            size: 1024,
            fanout: 1,
            ack_per_mille: 0,
        }
    }
}

impl Sim {
    /// Sets a workload: from `w.start` to `w.stop` every running node sends messages to
    /// random peers.
    pub fn set_workload(&mut self, mut w: Workload) {
        // A zero interval would send forever without time passing.
        w.interval = w.interval.max(Duration::from_micros(1));
        let data = payload(w.size);
        for n in 0..self.nodes.len() {
            let at = START + w.start + self.rng.duration(Duration::ZERO, w.interval);
            self.schedule(at, Ev::Work { node: n });
        }
        self.workload = Some((w, data));
    }

    pub(crate) fn work(&mut self, n: usize) {
        let Some((w, data)) = self.workload.clone() else {
            return;
        };
        if self.now >= START + w.stop {
            return;
        }
        let gap = self.rng.duration(w.interval / 2, w.interval * 3 / 2);
        self.schedule(self.now + gap, Ev::Work { node: n });
        if self.nodes[n].state != NodeState::Up || self.nodes.len() < 2 {
            return;
        }
        let others = self.nodes.len() - 1;
        let mut targets: Vec<usize> = Vec::with_capacity(w.fanout.min(others));
        while targets.len() < w.fanout.min(others) {
            let mut t = self.rng.index(others);
            if t >= n {
                t += 1;
            }
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        let peers: Vec<RemotePeer> = targets
            .iter()
            .map(|t| {
                // Half the time address a peer by the identity it first had, as a node that
                // has not heard of a restart would: this is what exercises IdentitySwitch.
                let pki = if self.rng.chance(500) {
                    self.first_pki_id(*t)
                } else {
                    self.pki_id(*t)
                };
                let pki = if pki.is_empty() {
                    self.first_pki_id(*t)
                } else {
                    pki
                };
                RemotePeer::new(self.endpoint(*t), pki)
            })
            .collect();
        self.nodes[n].workload_seq += 1;
        let msg = data_message(self.nodes[n].workload_seq, data);
        self.counters.workload_sends += 1;
        if self.rng.chance(w.ack_per_mille) {
            let min_ack = peers.len();
            let _ = self.send_with_ack(n, msg, Duration::from_secs(2), min_ack, &peers);
        } else {
            let _ = self.send(n, &SignedMessage::noop(msg), &peers);
        }
    }
}

/// A data message as workloads and benchmarks send it.
pub fn data_message(seq: u64, data: Bytes) -> GossipMessage {
    fabric_gossip_core::data_message(seq, data)
}
