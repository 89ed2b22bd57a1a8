//! `node`'s stdout: JSON lines written by a thread of their own from a bounded queue, so
//! that a reader who stops reading never blocks commands, the network or `stop`.
//!
//! Before this, every line was written inside the command loop; once the pipe was full
//! (64 KiB unread), the loop sat in `write` and the node stopped answering, even to
//! `{"cmd":"stop"}`. Now a full queue drops lines and counts them: the count is in the
//! `stats` event and the stop summary, and an `output_dropped` line tells the reader, in
//! the stream itself, how many lines it missed once there is room again.

use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines waiting to be written. A reader that keeps up never has more than a few. The
/// writer holds at most one more batch (up to this many lines) while it writes.
pub(crate) const MAX_LINES: usize = 8192;
/// Bytes waiting to be written. A received message can be large (its data is printed in
/// hex), so lines are also bounded by size; a single line larger than this is still
/// written when the queue is empty, since it was bounded when it was received.
pub(crate) const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Queue {
    lines: VecDeque<String>,
    bytes: usize,
    /// A line is being written (taken off the queue, not yet flushed).
    writing: bool,
    /// Lines dropped since the last `output_dropped` notice was queued.
    unreported: u64,
    /// Lines dropped in all.
    dropped: u64,
}

struct Shared {
    q: Mutex<Queue>,
    /// Signalled when a line is queued (for the writer) and when one was written (for
    /// `drain`).
    cv: Condvar,
}

/// The handle commands and tasks print through. Cheap to clone; never blocks.
#[derive(Clone)]
pub(crate) struct Out {
    s: Arc<Shared>,
}

impl Out {
    /// Starts the writer thread on `sink` (stdout in the binary).
    pub(crate) fn start(sink: impl Write + Send + 'static) -> Out {
        let s = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let w = s.clone();
        // A plain thread rather than a runtime task: it may sit in a blocking write for as
        // long as the reader wishes, and the process must be able to exit meanwhile.
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || writer(&w, sink))
            .map_or_else(
                |e| {
                    tracing::error!("cannot start the stdout writer: {e}; output is lost");
                    // Without a writer every line counts as dropped.
                    Out {
                        s: Arc::new(Shared {
                            q: Mutex::new(Queue::default()),
                            cv: Condvar::new(),
                        }),
                    }
                },
                |_| Out { s },
            )
    }

    /// Queues `v` as one line, or drops and counts it when the queue is full.
    pub(crate) fn emit(&self, v: &Value) {
        self.emit_line(v.to_string());
    }

    /// Queues `line` (one JSON object, without its newline), or drops and counts it when
    /// the queue is full.
    pub(crate) fn emit_line(&self, line: String) {
        let mut q = self.s.q.lock().unwrap_or_else(PoisonError::into_inner);
        if q.unreported > 0 {
            // Tell the reader what it missed before anything else, once there is room.
            let notice = json!({"event": "output_dropped", "lines": q.unreported}).to_string();
            if !fits(&q, notice.len() + line.len(), 2) {
                q.unreported += 1;
                q.dropped += 1;
                return;
            }
            push(&mut q, notice);
            q.unreported = 0;
        }
        if !fits(&q, line.len(), 1) {
            q.unreported += 1;
            q.dropped += 1;
            return;
        }
        push(&mut q, line);
        // The writer only waits when it is not writing: waking it for every line would cost
        // a futex call per line while it is busy writing the previous ones.
        let wake = !q.writing;
        drop(q);
        if wake {
            self.s.cv.notify_all();
        }
    }

    /// A stdin line that could not be run.
    pub(crate) fn command_error(&self, error: impl Into<String>) {
        self.emit(&json!({"event": "command_error", "error": error.into()}));
    }

    /// Lines dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.s
            .q
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped
    }

    /// Waits until every queued line is written, at most `limit`; `false` if some are left
    /// (the reader is not reading).
    pub(crate) fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut q = self.s.q.lock().unwrap_or_else(PoisonError::into_inner);
        while !q.lines.is_empty() || q.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .s
                .cv
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

fn fits(q: &Queue, bytes: usize, lines: usize) -> bool {
    q.lines.len() + lines <= MAX_LINES && (q.bytes + bytes <= MAX_BYTES || q.lines.is_empty())
}

fn push(q: &mut Queue, line: String) {
    q.bytes += line.len();
    q.lines.push_back(line);
}

/// Output buffered between flushes. Lines are written in batches (everything queued when the
/// writer looks) into this buffer and flushed when the queue is empty, so a busy node makes
/// one `write` per 64 KiB instead of one per line, and an idle one still shows each line at
/// once.
const WRITE_BUFFER: usize = 64 << 10;

fn writer(s: &Shared, sink: impl Write) {
    let mut sink = std::io::BufWriter::with_capacity(WRITE_BUFFER, sink);
    let mut batch = Vec::new();
    loop {
        {
            let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
            q.writing = false;
            s.cv.notify_all();
            while q.lines.is_empty() {
                q = s.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
            }
            batch.extend(q.lines.drain(..));
            q.bytes = 0;
            q.writing = true;
        }
        // A closed stdout (reader gone) must not kill the node; there is nobody to tell.
        for line in batch.drain(..) {
            let _ = sink
                .write_all(line.as_bytes())
                .and_then(|()| sink.write_all(b"\n"));
        }
        let _ = sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink that blocks every write until the test lets it go, like a pipe nobody reads.
    struct Gate(mpsc::Receiver<()>, mpsc::Sender<Vec<u8>>);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            let _ = self.1.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_reader_drops_and_counts_instead_of_blocking() {
        let (open, gate) = mpsc::channel();
        let (tx, written) = mpsc::channel();
        let out = Out::start(Gate(gate, tx));
        // At most one batch (up to MAX_LINES lines) is taken by the writer, blocked in
        // write; MAX_LINES more wait; the rest drop.
        for i in 0..2 * MAX_LINES + 10 {
            out.emit(&json!({"event": "n", "i": i}));
        }
        assert!(out.dropped() >= 9, "dropped {}", out.dropped());
        assert!(!out.drain(Duration::from_millis(20)), "nothing was written");
        // Let everything through: the first line after the gap is the notice.
        let dropped = out.dropped();
        for _ in 0..4 * MAX_LINES + 20 {
            let _ = open.send(());
        }
        assert!(out.drain(Duration::from_secs(10)));
        out.emit(&json!({"event": "after"}));
        assert!(out.drain(Duration::from_secs(10)));
        let text: String = written
            .try_iter()
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .collect();
        let notice = format!(r#"{{"event":"output_dropped","lines":{dropped}}}"#);
        assert!(text.contains(&notice), "no notice {notice}");
        assert!(text.trim_end().ends_with(r#"{"event":"after"}"#));
    }
}
