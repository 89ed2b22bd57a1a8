//! How a stop lets outbound streams wind down ([`Winding`]): their tasks are counted so
//! that [`crate::Node::stop`] waits for each to end its call after what it wrote, then
//! aborts what is left. Its own part: the stop's wait, shared by the drain (which closes
//! streams while stopping) and the dialling side (whose stream tasks it counts). A node
//! stopped because its runtime shut down is the timer's `StopOnDrop`.

use super::Inner;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The node's outbound stream tasks, counted so a stop can wait for them.
///
/// Messages handed to HTTP/2 ([`crate::Node::flush`]) are still in h2's buffers, which its
/// connection task writes. A stop used to abort every stream's task, and a process that
/// exited right after its stop took that task along: a script's last sends, flushed, never
/// reached their peer (seen under load in CI). Stopping now lets each outbound stream end
/// as a gRPC client ends a call: its request ends after what was written, and its task
/// reads the response to its end, which the remote sends once it has read that request to
/// its end. [`crate::Node::stop`] waits for these tasks within its `stop_timeout`, then
/// aborts what is left.
#[derive(Default)]
pub(crate) struct Winding {
    /// Outbound stream tasks alive (spawned and not yet dropped).
    live: AtomicU64,
    /// Woken as each ends.
    ended: Notify,
    /// The tasks of streams closed while stopping, to abort at the stop's deadline.
    pub(super) lingering: Mutex<Vec<AbortHandle>>,
}

impl Winding {
    /// Waits until no outbound stream task is alive, at most until `deadline`; then
    /// aborts those still reading.
    pub(crate) async fn wait(&self, deadline: tokio::time::Instant) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0
                || tokio::time::timeout_at(deadline, ended).await.is_err()
            {
                break;
            }
        }
        let tasks = std::mem::take(
            &mut *self
                .lingering
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            t.abort();
        }
    }
}

/// One outbound stream task alive, for as long as its future lives (also when aborted
/// before its first poll).
pub(super) struct WindingGuard(Arc<Inner>);

impl WindingGuard {
    /// Counts a task about to be spawned: before the spawn, so a stop never misses it.
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        inner.winding.live.fetch_add(1, Ordering::AcqRel);
        WindingGuard(inner.clone())
    }
}

impl Drop for WindingGuard {
    fn drop(&mut self) {
        self.0.winding.live.fetch_sub(1, Ordering::AcqRel);
        self.0.winding.ended.notify_waiters();
    }
}
