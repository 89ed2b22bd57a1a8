//! A steady stream of messages from every node to random peers, drawn from the run's RNG,
//! for random runs, sweeps and benchmarks.

use crate::config::{NodeId, START};
use crate::node::{NodeState, payload};
use crate::queue::Ev;
use crate::sim::Sim;
use core::time::Duration;

use fabric_gossip_core::{RemotePeer, SignedMessage, data_message};
use smallvec::SmallVec;

/// The targets of one send: a few, so kept inline (a send allocates no list).
type Targets<T> = SmallVec<[T; 4]>;

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
    /// Peers each node ever sends to, drawn once per node when the workload is set, as a
    /// Fabric peer gossips within its membership view: connections are made once, then
    /// carry traffic. `0`: every send picks among all other nodes, so at 1,000 nodes
    /// nearly every message opens a new connection (the worst case for the handshake
    /// path).
    pub view: usize,
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
            view: 0,
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
        // Drawn after the start times, and only with a view, so runs without one draw
        // exactly what they drew before views existed.
        self.views = if w.view == 0 {
            Vec::new()
        } else {
            (0..self.nodes.len())
                .map(|n| self.pick_peers(n, w.view).into_vec())
                .collect()
        };
        self.workload = Some((w, data));
    }

    /// The peers node `n` sends to under the workload's view ([`Workload::view`]); empty
    /// without a view, or for a node added after the workload was set.
    pub fn view(&self, n: NodeId) -> &[NodeId] {
        self.views.get(n).map_or(&[], Vec::as_slice)
    }

    /// `count` distinct random nodes other than `n` (all of them if there are fewer).
    fn pick_peers(&mut self, n: usize, count: usize) -> Targets<usize> {
        let others = self.nodes.len().saturating_sub(1);
        let mut targets = Targets::with_capacity(count.min(others));
        while targets.len() < count.min(others) {
            let mut t = self.rng.index(others);
            if t >= n {
                t += 1;
            }
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        targets
    }

    /// `count` distinct random peers of `n`'s view (all of it if it is smaller).
    fn pick_in_view(&mut self, n: usize, count: usize) -> Targets<usize> {
        let size = self.views[n].len();
        let mut targets = Targets::with_capacity(count.min(size));
        while targets.len() < count.min(size) {
            let t = self.views[n][self.rng.index(size)];
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
        targets
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
        // A node added after the workload was set has no view: it sends to anyone.
        let targets = if n < self.views.len() {
            self.pick_in_view(n, w.fanout)
        } else {
            self.pick_peers(n, w.fanout)
        };
        let mut peers = core::mem::take(&mut self.workload_peers);
        peers.truncate(targets.len());
        for (i, t) in targets.iter().enumerate() {
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
            match peers.get_mut(i) {
                Some(p) => {
                    p.endpoint.clone_from(&self.nodes[*t].endpoint);
                    p.pki_id = pki;
                }
                None => peers.push(RemotePeer::new(self.endpoint(*t), pki)),
            }
        }
        self.nodes[n].workload_seq += 1;
        let msg = data_message(self.nodes[n].workload_seq, data);
        self.counters.workload_sends += 1;
        if self.rng.chance(w.ack_per_mille) {
            let min_ack = peers.len();
            let _ = self.send_with_ack(n, msg, Duration::from_secs(2), min_ack, &peers);
        } else {
            let _ = self.send(n, &SignedMessage::noop(msg), &peers);
        }
        self.workload_peers = peers;
    }
}
