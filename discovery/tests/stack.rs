//! The membership layer hosted by the core's `Stack`: one drain loop per node and no
//! routing code of its own. Three nodes on a tiny in-test network (dials always succeed,
//! streams are reliable and instant) find each other through one bootstrap peer.

use fabric_gossip_core::{
    Action, Comm, Config, DialId, Instant, Stack, StackOutput, StreamEnd, StreamId,
    TestOnlyHmacSecurity,
};
use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

type Node = Stack<TestOnlyHmacSecurity, Discovery>;

fn ep(i: usize) -> String {
    format!("127.0.0.1:{}", 7100 + i)
}

struct Cluster {
    nodes: Vec<Node>,
    /// Where each dial goes: (node, dial) → target node.
    dials: BTreeMap<(usize, DialId), usize>,
    /// (node, stream) → (node, stream) at the other end.
    links: BTreeMap<(usize, StreamId), (usize, StreamId)>,
    /// In flight, in order: an envelope, or `None` for the end of the stream.
    wire: VecDeque<(usize, StreamId, Option<bytes::Bytes>)>,
    /// Members each node's layer reported alive.
    alive: Vec<BTreeSet<String>>,
    now: Instant,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let now = Instant::from_unix_secs(1_700_000_000);
        let nodes = (0..n)
            .map(|i| {
                let security = TestOnlyHmacSecurity::new(ep(i));
                let comm = Comm::new(Config::default(), security, now).unwrap();
                let mut cfg = DiscoveryConfig::new(ep(i)).with_seed(i as u64);
                if i > 0 {
                    cfg = cfg.with_bootstrap([ep(0)]);
                }
                Stack::new(comm, Discovery::new(cfg).unwrap())
            })
            .collect();
        Cluster {
            nodes,
            dials: BTreeMap::new(),
            links: BTreeMap::new(),
            wire: VecDeque::new(),
            alive: vec![BTreeSet::new(); n],
            now,
        }
    }

    /// The one drain loop a driver needs for a stack; returns its time-out.
    fn drain(&mut self, i: usize) -> Option<Instant> {
        loop {
            match self.nodes[i].poll_output() {
                StackOutput::Action(a) => self.act(i, a),
                StackOutput::Layer(DiscoveryEvent::MemberAlive { member, .. }) => {
                    self.alive[i].insert(member.pki_id.to_string());
                }
                StackOutput::Event(_) | StackOutput::Layer(_) => {}
                StackOutput::Timeout(t) => return t,
            }
        }
    }

    fn act(&mut self, i: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Dial { dial, endpoint } => {
                let target = (0..self.nodes.len()).find(|j| ep(*j) == endpoint);
                let result = match target {
                    Some(t) => {
                        self.dials.insert((i, dial), t);
                        Ok(None)
                    }
                    None => Err("no such node".to_string()),
                };
                let _ = self.comm(i).handle_dial_result(now, dial, result);
            }
            Action::Ping { dial } => {
                let _ = self.comm(i).handle_ping_result(now, dial, Ok(()));
            }
            Action::OpenStream { dial, stream } => {
                let target = self.dials[&(i, dial)];
                let remote = self.comm(target).accept_stream(now, &ep(i), None).unwrap();
                self.links.insert((i, stream), (target, remote));
                self.links.insert((target, remote), (i, stream));
            }
            Action::Write {
                stream, envelope, ..
            } => {
                if let Some(&(j, s)) = self.links.get(&(i, stream)) {
                    self.wire.push_back((j, s, Some(envelope)));
                }
                let _ = self.comm(i).handle_sent(now, stream, 1);
            }
            Action::CloseStream { stream, .. } => {
                if let Some((j, s)) = self.links.remove(&(i, stream)) {
                    self.links.remove(&(j, s));
                    // The end arrives after what was written before it.
                    self.wire.push_back((j, s, None));
                }
            }
            Action::PauseRead { .. } | Action::ResumeRead { .. } | Action::CloseDial { .. } => {}
        }
    }

    fn comm(&mut self, n: usize) -> &mut Comm<TestOnlyHmacSecurity> {
        self.nodes[n].comm_mut()
    }

    /// Runs until every node knows every other one alive, or `limit` of virtual time.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            let mut next: Option<Instant> = None;
            for i in 0..self.nodes.len() {
                if let Some(t) = self.drain(i) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
            if !self.wire.is_empty() {
                while let Some((j, s, b)) = self.wire.pop_front() {
                    let now = self.now;
                    let c = self.nodes[j].comm_mut();
                    let _ = match b {
                        Some(b) => c.handle_envelope(now, s, b),
                        None => c.handle_stream_closed(now, s, StreamEnd::Finished),
                    };
                }
                continue;
            }
            let n = self.nodes.len();
            if self.alive.iter().all(|a| a.len() == n - 1) {
                return;
            }
            let Some(t) = next else { return };
            if t > end {
                return;
            }
            self.now = self.now.max(t);
            for i in 0..n {
                let now = self.now;
                self.nodes[i].handle_timeout(now);
            }
        }
    }
}

#[test]
fn three_stacks_discover_each_other_through_one_bootstrap_peer() {
    let mut c = Cluster::new(3);
    c.run(Duration::from_secs(60));
    for i in 0..3 {
        let others: BTreeSet<String> = (0..3).filter(|j| *j != i).map(ep).collect();
        assert_eq!(c.alive[i], others, "node {i} by {:?}", c.now);
    }
}
