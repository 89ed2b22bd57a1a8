//! The delivery queue and the run loop. One queue ordered by (virtual time, sequence
//! number), a radix heap ([`crate::timeline`]), holds everything that will happen; each step takes the earliest entry and hands it to
//! the part of the network or the node it concerns. Ties break by the order things were
//! scheduled, which is itself deterministic.

use crate::config::LIVELOCK_STEPS;
use crate::fault::{Fault, ReaderMode};
use crate::network::Item;
use crate::network::LinkId;
use crate::sim::Sim;
use crate::timeline::Entry;
use crate::trace::{Res, trace};
use core::time::Duration;
use fabric_gossip_core::{CertHash, DialId, Instant, StreamId};

pub(crate) enum Ev {
    /// The answer to a dial or a Ping, a round trip after it was asked.
    DialAnswer {
        node: usize,
        inc: u32,
        dial: DialId,
        answer: Answer,
    },
    Arrive {
        link: LinkId,
        dir: u8,
        item: Item,
    },
    Reset(StreamReset),
    Wake {
        node: usize,
        inc: u32,
    },
    ReaderTick {
        node: usize,
        inc: u32,
    },
    Keepalive {
        link: LinkId,
    },
    Fault(Box<Fault>),
    Work {
        node: usize,
    },
    /// A reader resumed `resume_lag` ago hands in what it held (`SimConfig::resume_lag`).
    Feed {
        link: LinkId,
        dir: u8,
    },
    /// A write made `confirm_lag` ago is confirmed to its core (`SimConfig::confirm_lag`).
    Confirm {
        node: usize,
        inc: u32,
        stream: StreamId,
    },
}

/// A stream reset reaching one of its ends: the node, which process of it, the stream and
/// why; `write_pending` when a write of that end was waiting for window credit (the core
/// then learns it as a failed write).
pub(crate) struct StreamReset {
    pub(crate) node: usize,
    pub(crate) inc: u32,
    pub(crate) link: LinkId,
    pub(crate) stream: StreamId,
    pub(crate) reason: &'static str,
    pub(crate) write_pending: bool,
}

/// What a dial or a Ping comes back with (the dial's result boxed: it is the larger).
pub(crate) enum Answer {
    Dial(Box<Result<Option<CertHash>, String>>),
    Ping(Result<(), String>),
}

impl Sim {
    pub(crate) fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at: at.max(self.now).as_unix_nanos(),
            seq: self.seq,
            ev,
        });
    }

    /// Processes the earliest queued entry; `false` when nothing is queued.
    pub fn step(&mut self) -> bool {
        let Some(q) = self.queue.pop() else {
            return false;
        };
        self.run_entry(q);
        true
    }

    /// Processes one entry taken from the queue.
    fn run_entry(&mut self, q: Entry<Ev>) {
        let at = Instant::from_unix_nanos(q.at);
        if at > self.now {
            self.now = at;
            self.instant_steps = 0;
        }
        self.instant_steps += 1;
        self.counters.steps += 1;
        self.process(at, q.ev);
        self.drain_work();
        if self.cfg.check_invariants {
            self.check_touched();
        }
        self.touched.clear();
    }

    /// Runs until `cond` holds (checked before every step) or nothing is queued before
    /// `deadline`; virtual time then stands at `deadline` unless `cond` held earlier.
    /// Returns whether `cond` held.
    pub fn run_until(&mut self, deadline: Instant, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            if !self.step_until(deadline) {
                return cond(self);
            }
        }
    }

    /// Processes the earliest queued entry if it is due at or before `deadline` and returns
    /// `true`; otherwise moves virtual time to `deadline` and returns `false`. The building
    /// block of drivers that check their own conditions between steps (`false` also when
    /// the run is livelocked).
    pub fn step_until(&mut self, deadline: Instant) -> bool {
        if self.instant_steps > LIVELOCK_STEPS {
            self.violation(format!(
                "livelock: more than {LIVELOCK_STEPS} steps at one virtual instant"
            ));
            return false;
        }
        match self.queue.pop_due(deadline.as_unix_nanos()) {
            Some(q) => {
                self.run_entry(q);
                true
            }
            None => {
                if deadline > self.now {
                    self.now = deadline;
                    self.instant_steps = 0;
                }
                false
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline, |_| false);
    }

    /// Runs until nothing is queued, or `limit` of virtual time has passed; returns whether
    /// the network went idle. Virtual time stays where the last thing happened.
    ///
    /// Core deadlines beyond `limit` with nothing else queued count as idle: a certificate
    /// that expires in years arms a timer, but nothing is in flight until then.
    pub fn run_until_idle(&mut self, limit: Duration) -> bool {
        let deadline = self.now + limit;
        while !self.queue.is_empty() {
            if self.instant_steps > LIVELOCK_STEPS {
                return false;
            }
            let Some(q) = self.queue.pop_due(deadline.as_unix_nanos()) else {
                return self.queue.iter().all(|ev| matches!(ev, Ev::Wake { .. }));
            };
            self.run_entry(q);
        }
        true
    }

    /// Whether nothing will happen before `deadline` but a node's time-out: nothing is
    /// queued except node wake-ups, and none of them is due by then. What
    /// [`Sim::run_until_idle`] calls idle, asked without running anything: a driver that
    /// runs the network in slices (to print progress, say) stops on it.
    ///
    /// [`Sim::is_idle`] wants an empty queue, which a network rarely reaches once its nodes
    /// have talked: every core that holds a peer's identity keeps its identity-usage sweep
    /// armed (every 6 minutes with the default hour), and a certificate's expiry arms a
    /// timer years ahead.
    pub fn is_idle_until(&self, deadline: Instant) -> bool {
        self.queue.iter().all(|ev| matches!(ev, Ev::Wake { .. }))
            && self
                .nodes
                .iter()
                .all(|n| n.wake_at.is_none_or(|t| t > deadline))
    }

    pub(crate) fn process(&mut self, at: Instant, ev: Ev) {
        match ev {
            Ev::DialAnswer {
                node,
                inc,
                dial,
                answer,
            } => {
                if !self.dial_live(node, inc, dial) {
                    return;
                }
                match &answer {
                    Answer::Dial(r) => trace!(self, "n{node} < dial {dial} {}", Res(&**r)),
                    Answer::Ping(r) => trace!(self, "n{node} < ping {dial} {}", Res(r)),
                }
                let cause = match &answer {
                    Answer::Dial(r) => r.is_err().then_some("dial failed"),
                    Answer::Ping(r) => r.is_err().then_some("ping failed"),
                };
                self.input(node, cause, |c, now| {
                    let _ = match answer {
                        Answer::Dial(r) => c.handle_dial_result(now, dial, *r),
                        Answer::Ping(r) => c.handle_ping_result(now, dial, r),
                    };
                });
            }
            Ev::Arrive { link, dir, item } => self.arrive(link, usize::from(dir), item),
            Ev::Reset(r) => self.stream_reset(r),
            Ev::Wake { node, inc } => {
                if !self.node_live(node, inc) {
                    return;
                }
                if self.nodes[node].wake_at == Some(at) {
                    self.nodes[node].wake_at = None;
                }
                let due = self.nodes[node].deadline().is_some_and(|t| t <= self.now);
                if due {
                    trace!(self, "n{node} < timeout");
                    // The stack's time-out: the core's deadlines, then the layer's if due.
                    self.cause = Some("timeout");
                    let now = self.now;
                    if let Some(s) = self.nodes[node].stack.as_mut() {
                        s.handle_timeout(now);
                    }
                    self.pump(node);
                    self.cause = None;
                } else {
                    self.reschedule_wake(node);
                }
            }
            Ev::ReaderTick { node, inc } => {
                if !self.node_live(node, inc) {
                    return;
                }
                self.nodes[node].reader_tick = false;
                if let ReaderMode::Every(d) = self.nodes[node].spec.reader {
                    self.take_one_each(node);
                    self.pump(node);
                    if self.has_queued_deliveries(node) {
                        self.nodes[node].reader_tick = true;
                        self.schedule(self.now + d, Ev::ReaderTick { node, inc });
                    }
                }
            }
            Ev::Keepalive { link } => {
                let Some(l) = self.links.get_mut(link) else {
                    return;
                };
                l.keepalive_armed = false;
                if self.link_cut(link) {
                    self.reset_link(link, "keepalive: connection lost", Duration::ZERO);
                }
            }
            Ev::Fault(f) => self.apply_fault(*f),
            Ev::Work { node } => self.work(node),
            Ev::Feed { link, dir } => self.feed_held(link, usize::from(dir)),
            Ev::Confirm { node, inc, stream } => {
                if self.node_live(node, inc) {
                    self.confirm(node, stream);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    /// `step` takes one entry, counts it and says so, and says `false` once nothing is
    /// queued. Steps at one virtual instant are counted (a step at a later one starts the
    /// count again, a deadline reached with nothing due does not), and once there were more
    /// than [`LIVELOCK_STEPS`] the run loop stops with a livelock violation instead of
    /// taking more. The count is set near the limit here: reaching it for real takes five
    /// million steps.
    #[test]
    fn steps_at_one_instant_are_counted_until_the_run_is_declared_livelocked() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        sim.add_nodes(1);
        let now = sim.now;
        let later = now + Duration::from_micros(1);
        // `Work` without a workload does nothing.
        sim.schedule(later, Ev::Work { node: 0 });
        sim.instant_steps = LIVELOCK_STEPS;
        let steps = sim.counters.steps;
        assert!(!sim.step_until(now), "nothing due yet");
        assert_eq!((sim.now, sim.instant_steps), (now, LIVELOCK_STEPS));
        for _ in 0..2 {
            sim.schedule(now, Ev::Work { node: 0 });
        }
        assert!(
            sim.step_until(later),
            "the last step allowed at one instant"
        );
        assert_eq!(sim.instant_steps, LIVELOCK_STEPS + 1);
        assert!(!sim.step_until(later), "livelocked: nothing more is taken");
        assert_eq!(sim.queue.len(), 2);
        assert!(
            sim.violations()
                .iter()
                .any(|v| v.what.starts_with("livelock")),
            "{:?}",
            sim.violations()
        );
        assert!(sim.step(), "`step` itself has no livelock guard");
        assert_eq!(sim.instant_steps, LIVELOCK_STEPS + 2);
        assert!(sim.step());
        assert_eq!((sim.now, sim.instant_steps), (later, 1), "a later instant");
        assert!(!sim.step(), "nothing queued");
        assert_eq!(sim.now, later);
        assert_eq!(sim.counters.steps, steps + 3, "each step counted");
    }

    /// After one message the cores keep their identity-usage sweep armed an hour ahead:
    /// the queue is never empty again, but nothing is due before that sweep, which is
    /// what `is_idle_until` says and what `run_until_idle` stops on.
    #[test]
    fn a_network_quiet_but_for_far_timers_is_idle_until_them() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        sim.add_nodes(2);
        let msg = fabric_gossip_core::SignedMessage::noop(crate::data_message(1, "x"));
        sim.send_to(0, &msg, &[1]).unwrap();
        let end = sim.now() + Duration::from_secs(120);
        assert!(!sim.is_idle_until(end), "the message is in flight");
        assert!(!sim.is_idle_until(sim.now()), "and due now");
        sim.run_until(end, |_| false);
        assert_eq!(sim.deliveries(1).len(), 1);
        assert!(!sim.is_idle(), "the sweep is queued");
        assert!(sim.is_idle_until(end));
        assert!(!sim.is_idle_until(end + Duration::from_secs(3600)));
        // A pending wake-up due before the deadline is not idle: a SendWithAck's time-out.
        sim.send_with_ack_to(
            0,
            crate::data_message(2, "y"),
            Duration::from_secs(5),
            1,
            &[1],
        )
        .unwrap();
        let soon = sim.now() + Duration::from_secs(60);
        assert!(!sim.is_idle_until(soon));
        sim.run_until(sim.now() + Duration::from_millis(100), |_| false);
        assert!(
            sim.queue.iter().all(|ev| matches!(ev, Ev::Wake { .. })),
            "only the time-out is left"
        );
        assert!(!sim.is_idle_until(soon), "the time-out is due before");
        sim.run_until(soon, |_| false);
        assert!(sim.is_idle_until(soon + Duration::from_secs(60)));
    }

    /// `run_until_idle` takes steps at one instant up to [`LIVELOCK_STEPS`] and then
    /// stops, not idle, leaving the rest queued.
    #[test]
    fn running_until_idle_stops_at_a_livelock() {
        let mut sim = Sim::new(SimConfig::seeded(1));
        sim.add_nodes(1);
        let now = sim.now;
        for _ in 0..2 {
            sim.schedule(now, Ev::Work { node: 0 });
        }
        sim.instant_steps = LIVELOCK_STEPS;
        assert!(!sim.run_until_idle(Duration::from_secs(1)));
        assert_eq!(sim.queue.len(), 1, "one step was still allowed");
        assert_eq!(sim.instant_steps, LIVELOCK_STEPS + 1);
    }
}
