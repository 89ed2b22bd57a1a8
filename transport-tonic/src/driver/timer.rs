//! The timer task ([`timer_task`]): sleeps until the core's next deadline, or until woken
//! because it moved, and hands the core its time-out; and [`StopOnDrop`], which stops the
//! node when that task ends. Its own part: the one task that lives as long as the node.

use super::Inner;
use super::drain::drain;
use std::sync::Arc;

/// The timer: sleeps until the core's next deadline, or until woken because it moved.
pub(crate) async fn timer_task(inner: Arc<Inner>) {
    let _stop_with_me = StopOnDrop(inner.clone());
    loop {
        let woken = inner.timer.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (deadline, stopped) = {
            let mut st = inner.lock();
            let next = st.comm.poll_timeout();
            st.timer_target = next;
            (next, st.comm.is_stopped())
        };
        if stopped && deadline.is_none() {
            return;
        }
        match deadline {
            Some(t) => {
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep_until(inner.clock.to_tokio(t)) => {
                        // The stack's: the core's deadlines, then the layer's.
                        let mut st = inner.lock();
                        st.comm.handle_timeout(inner.now());
                        drain(&inner, &mut st);
                    }
                }
            }
            None => woken.await,
        }
    }
}

/// Stops the node when its timer task ends. The timer runs for the node's whole life, so
/// it ends before the node stops only when its runtime shuts down (which drops every task
/// of the node) or it panics. A node left so would go on taking sends it can never carry
/// out and leave every caller waiting for an ack, a probe or a timeout forever; stopped,
/// it fails them with `Stopped`, as after [`crate::Node::stop`]. Stopping is idempotent,
/// so the normal ends (the node stopped, the task aborted by `stop`) change nothing.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.with_core(|c, now| c.stop(now));
    }
}
