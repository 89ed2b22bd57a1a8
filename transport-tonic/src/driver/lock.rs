//! The core's lock held ([`Locked`]) and what its release does: the wake-ups decided under
//! it ([`Later`]), the chain that hands SendWithAck results to their callers one at a time,
//! and the gates that hold the node's stream writers meanwhile ([`Gates`], [`Gate`],
//! [`Kick`]). Its own part: every path that takes the lock ends here, and what a release
//! does, in which order, is one design (`Locked`'s "One caller at a time").

use super::{Inner, State};
use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Waker};

/// A wake-up that waits for the lock's release: the task it wakes usually takes the lock
/// first thing, and on a multi-thread runtime another worker may start it at once, only to
/// wait for the lock (a futex sleep and wake-up) while the waker still holds it.
pub(super) enum Later {
    /// A subscription's consumer: deliveries are ready.
    Wake(Waker),
}

impl Later {
    fn fire(self) {
        match self {
            Later::Wake(w) => w.wake(),
        }
    }
}

/// The core's lock, held. Releasing it gives the wake-ups decided under it (see
/// [`Later`]), and hands the results of one SendWithAck to its caller.
///
/// # One caller at a time
///
/// A batch of acks read at once completes many SendWithAck calls. Woken together, their
/// callers would all be ready at the same moment, and a multi-thread runtime wakes a parked
/// worker whenever a worker has more than one task ready: that worker steals half of the
/// callers, they meet the others at the core's lock, and the stream's writer, woken by the
/// first of them, writes what they queued so far while the rest still run. On an idle
/// machine each of those wake-ups is a futex call, a context switch and an idle CPU woken,
/// which cost more than the acks themselves (`docs/performance-log.md`, "One caller at a
/// time"). So the results wait in a chain ([`State::links`]) and each release of the lock
/// hands out one: the caller it wakes sends its next message under the lock, and that
/// release wakes the next caller. Only one task is ready at a time, so no other worker is
/// woken. Meanwhile the node's stream writers are held ([`Gates`]): a Write wakes its
/// writer only when the chain has run out, so what all the callers queued leaves in one
/// chunk. A caller that does not take the lock again would stall the chain, so each
/// handed-out link also leaves a kick for when the worker runs out of tasks ([`Kick`]),
/// which hands out whatever is left.
pub(crate) struct Locked<'a> {
    /// Taken only by `drop`.
    pub(super) guard: Option<MutexGuard<'a, State>>,
    pub(super) inner: &'a Inner,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;

    fn deref(&self) -> &State {
        self.guard.as_deref().expect("the guard is held until drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.guard
            .as_deref_mut()
            .expect("the guard is held until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut st) = self.guard.take() {
            let later = std::mem::take(&mut st.later);
            let link = st.links.pop_front();
            drop(st);
            for l in later {
                l.fire();
            }
            let gates = &self.inner.gates;
            match link {
                Some((tx, results)) => {
                    gates.hold();
                    let _ = tx.send(results);
                    // Deferred to when this worker has nothing else to run; outside a
                    // runtime, at once.
                    let mut kick = std::pin::pin!(tokio::task::yield_now());
                    let _ = kick
                        .as_mut()
                        .poll(&mut Context::from_waker(&self.inner.kick));
                }
                None => gates.open(),
            }
        }
    }
}

/// Holds a node's stream writers while SendWithAck callers are woken one by one (see
/// [`Locked`]).
#[derive(Default)]
pub(crate) struct Gates {
    /// Writers are held: a chain of callers is running.
    closed: AtomicBool,
    /// The writers woken meanwhile.
    held: Mutex<Vec<Waker>>,
}

impl Gates {
    fn held(&self) -> MutexGuard<'_, Vec<Waker>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on writers are held.
    fn hold(&self) {
        if !self.closed.load(Ordering::Acquire) {
            let _held = self.held();
            self.closed.store(true, Ordering::Release);
        }
    }

    /// Wakes the writers held, and no longer holds any.
    fn open(&self) {
        if self.closed.load(Ordering::Acquire) {
            let woken = {
                let mut held = self.held();
                self.closed.store(false, Ordering::Release);
                std::mem::take(&mut *held)
            };
            for w in woken {
                w.wake();
            }
        }
    }
}

/// The waker a stream's queue wakes: it wakes the writer's task, or holds the wake-up while
/// the node's [`Gates`] are closed.
pub(super) struct Gate {
    pub(super) gates: Arc<Gates>,
    pub(super) task: AtomicWaker,
}

impl std::task::Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.gates.closed.load(Ordering::Acquire) {
            // Checked again under the list's lock, which `open` takes to clear it.
            let mut held = self.gates.held();
            if self.gates.closed.load(Ordering::Acquire) {
                if let Some(w) = self.task.take() {
                    held.push(w);
                }
                return;
            }
        }
        self.task.wake();
    }
}

/// Hands out every SendWithAck result still chained, and opens the gates, once the worker
/// that handed out the last link has nothing else to run: the chain never waits for a
/// caller that does not take the lock again.
pub(super) struct Kick(pub(super) std::sync::Weak<Inner>);

impl std::task::Wake for Kick {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        if !inner.gates.closed.load(Ordering::Acquire) {
            return;
        }
        let links = {
            let mut st = inner.lock();
            std::mem::take(&mut st.links)
            // The release finds no link: it opens the gates and defers nothing.
        };
        for (tx, results) in links {
            let _ = tx.send(results);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// While a chain of SendWithAck callers runs, the node's stream writers are held: a
    /// wake-up of a writer's queue waits in the gates and is given, once, when they open;
    /// with the gates open it is given at once (see `Locked`).
    #[test]
    fn a_writers_wake_up_waits_while_the_gates_are_held() {
        struct Count(AtomicU64);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicU64::new(0)));
        let woken = || count.0.load(Ordering::Relaxed);
        let writer = Waker::from(count.clone());
        let gates = Arc::new(Gates::default());
        let gate = Arc::new(Gate {
            gates: gates.clone(),
            task: AtomicWaker::new(),
        });
        let queue_waker = Waker::from(gate.clone());

        gate.task.register(&writer);
        queue_waker.wake_by_ref();
        assert_eq!(woken(), 1, "open: at once");

        gate.task.register(&writer);
        gates.hold();
        gates.hold();
        queue_waker.wake_by_ref();
        assert_eq!(woken(), 1, "held");
        gates.open();
        assert_eq!(woken(), 2, "given as the gates open");
        gates.open();
        assert_eq!(woken(), 2, "given once");

        // A queue wakes its waker by value too (`Gate::wake`, not `wake_by_ref`).
        let by_value = queue_waker.clone();
        gate.task.register(&writer);
        gates.hold();
        by_value.wake();
        assert_eq!(woken(), 2, "held");
        gates.open();
        assert_eq!(woken(), 3, "given as the gates open");
    }
}
