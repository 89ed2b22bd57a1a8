//! `node`'s stdout: JSON lines written by a thread of their own from a bounded queue, so
//! that a reader who stops reading never blocks commands, the network or `stop`.
//!
//! Before this, every line was written inside the command loop; once the pipe was full
//! (64 KiB unread), the loop sat in `write` and the node stopped answering, even to
//! `{"cmd":"stop"}`. Now a full queue drops lines and counts them: the count is in the
//! `stats` event and the stop summary, and an `output_dropped` line tells the reader, in
//! the stream itself, how many lines it missed once there is room again.
//!
//! The queue is one byte buffer that lines are formatted straight into, and the writer
//! swaps it for its own empty one and writes it whole: a busy node (a sink printing
//! hundreds of thousands of messages a second) makes one `write` per batch and allocates
//! nothing per line, and an idle one still shows each line at once.
//!
//! The one-shot commands print through [`print()`] instead; see [`WriteError`] for what
//! each kind of command does when its reader goes away.

use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Lines waiting to be written. A reader that keeps up never has more than a few. The
/// writer holds at most one more batch (up to this many lines) while it writes.
pub(crate) const MAX_LINES: usize = 8192;
/// Bytes waiting to be written. A received message can be large (its data is printed in
/// hex), so lines are also bounded by size; a single line larger than this is still
/// written when the queue is empty, since it was bounded when it was received.
pub(crate) const MAX_BYTES: usize = 64 << 20;
/// Capacity a buffer keeps once written: a burst of large lines does not pin its peak.
const KEPT_CAPACITY: usize = 4 << 20;

#[derive(Default)]
struct Queue {
    /// Lines waiting, each with its newline.
    buf: Vec<u8>,
    /// How many lines `buf` holds.
    lines: usize,
    /// A batch is being written (taken off the queue, not yet flushed).
    writing: bool,
    /// Callers of `drain` waiting for the writer.
    draining: usize,
    /// Lines dropped since the last `output_dropped` notice was queued.
    unreported: u64,
    /// Lines dropped in all.
    dropped: u64,
}

struct Shared {
    q: Mutex<Queue>,
    /// Signalled when lines are queued while the writer waits.
    queued: Condvar,
    /// Signalled when a batch was written while `drain` waits.
    written: Condvar,
}

/// The handle commands and tasks print through. Cheap to clone; never blocks.
#[derive(Clone)]
pub(crate) struct Out {
    s: Arc<Shared>,
}

/// Lines being queued under one lock (see [`Out::lines`]); the writer is woken once, when
/// this is dropped.
pub(crate) struct Lines<'a> {
    q: MutexGuard<'a, Queue>,
    s: &'a Shared,
    added: bool,
}

impl Out {
    /// Starts the writer thread on `sink` (stdout in the binary).
    pub(crate) fn start(sink: impl Write + Send + 'static) -> Out {
        let new = || {
            Arc::new(Shared {
                q: Mutex::new(Queue::default()),
                queued: Condvar::new(),
                written: Condvar::new(),
            })
        };
        let s = new();
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
                    Out { s: new() }
                },
                |_| Out { s },
            )
    }

    /// Queues `v` as one line, or drops and counts it when the queue is full.
    pub(crate) fn emit(&self, v: &Value) {
        self.lines().value(v);
    }

    /// Takes the queue for several lines at once: one lock and at most one wake-up of the
    /// writer for the lot.
    pub(crate) fn lines(&self) -> Lines<'_> {
        Lines {
            q: self.s.q.lock().unwrap_or_else(PoisonError::into_inner),
            s: &self.s,
            added: false,
        }
    }

    /// A stdin line that could not be run.
    pub(crate) fn command_error(&self, error: impl Into<String>) {
        self.emit(&serde_json::json!({"event": "command_error", "error": error.into()}));
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
        q.draining += 1;
        let done = loop {
            if q.buf.is_empty() && !q.writing {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            q = self
                .s
                .written
                .wait_timeout(q, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        q.draining -= 1;
        done
    }
}

impl Lines<'_> {
    /// Queues `v` as one line, or drops and counts it when the queue is full.
    pub(crate) fn value(&mut self, v: &Value) {
        // Writing a `Value` into a `Vec` cannot fail.
        self.line(|buf| {
            let _ = serde_json::to_writer(buf, v);
        });
    }

    /// Queues the line `write` appends (one JSON object, without its newline), or drops and
    /// counts it when the queue is full.
    pub(crate) fn line(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let q = &mut *self.q;
        let start = q.buf.len();
        let mut lines = 1;
        if q.unreported > 0 {
            // Tell the reader what it missed before anything else, once there is room.
            q.buf
                .extend_from_slice(b"{\"event\":\"output_dropped\",\"lines\":");
            push_u64(&mut q.buf, q.unreported);
            q.buf.extend_from_slice(b"}\n");
            lines = 2;
        }
        write(&mut q.buf);
        q.buf.push(b'\n');
        if q.lines + lines > MAX_LINES || (q.buf.len() > MAX_BYTES && start > 0) {
            q.buf.truncate(start);
            q.unreported += 1;
            q.dropped += 1;
            return;
        }
        if lines == 2 {
            q.unreported = 0;
        }
        q.lines += lines;
        self.added = true;
    }
}

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        // The writer only waits when it is not writing: waking it for every line would cost
        // a futex call per line while it is busy writing the previous ones.
        if self.added && !self.q.writing {
            self.s.queued.notify_one();
        }
    }
}

fn writer(s: &Shared, mut sink: impl Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
            q.writing = false;
            if q.draining > 0 {
                s.written.notify_all();
            }
            if q.buf.is_empty() {
                while q.buf.is_empty() {
                    q = s.queued.wait(q).unwrap_or_else(PoisonError::into_inner);
                }
                // Woken by the first lines of a burst: let the node add the rest before
                // taking them, for fewer and larger writes.
                drop(q);
                std::thread::yield_now();
                q = s.q.lock().unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut q.buf, &mut batch);
            q.lines = 0;
            q.writing = true;
        }
        // A closed stdout (reader gone) must not kill the node; there is nobody to tell.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        if batch.capacity() > KEPT_CAPACITY {
            batch.shrink_to(KEPT_CAPACITY);
        }
    }
}

/// stdout could not be written by a one-shot command: what was being written, and why.
///
/// The rule, for every command: the output of a one-shot command (`ping`, `handshake`,
/// `validate`, `demo`, `keygen`, `sim`, `completions`) is its result. When it cannot be
/// written, most often because the reader went away (a closed pipe: `| head -1`, `| (exit
/// 0)`), the command stops, says so in one line on stderr (`error: writing the result:
/// Broken pipe (os error 32)`) and exits with status 2, that of any other I/O error, as
/// `sim` always did: a script never takes a cut-off result for a whole one, and
/// `println!`'s panic (status 101, a backtrace) is never reached. The long-running `node`
/// and `watch` go on instead (see [`writer`] and `watch`'s table): their output is a feed,
/// not a result, and a reader gone away is not their failure.
#[derive(Debug)]
pub(crate) struct WriteError {
    what: &'static str,
    error: std::io::Error,
}

impl WriteError {
    /// `error`, met while writing `what` ("result", "summary", …).
    pub(crate) fn new(what: &'static str, error: std::io::Error) -> WriteError {
        WriteError { what, error }
    }

    /// Says so on stderr, in one line; exit status 2.
    pub(crate) fn exit(&self) -> std::process::ExitCode {
        eprintln!("error: {self}");
        std::process::ExitCode::from(2)
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing the {}: {}", self.what, self.error)
    }
}

impl std::error::Error for WriteError {}

/// Writes `text` to stdout and flushes it: how the one-shot commands print, never with
/// `println!`. `what` names the text for the error ([`WriteError`]).
pub(crate) fn print(what: &'static str, text: impl AsRef<[u8]>) -> Result<(), WriteError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .map_err(|e| WriteError::new(what, e))
}

/// How serde_json escapes each byte of a string: 0, as itself; `u`, as `\u00XX`; any
/// other, as a backslash and that character.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `v` as a JSON string, quoted and escaped byte for byte as serde_json does
/// (`"`, `\` and control characters; `\b \f \n \r \t` short, the others as `\u00XX`),
/// without building a `Value`: a sink escapes every received text. The escaped length is
/// counted first, so the buffer grows once and plain text is one copy.
pub(crate) fn push_json_str(buf: &mut Vec<u8>, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = v.as_bytes();
    let extra: usize = bytes
        .iter()
        .map(|&b| match ESCAPE[usize::from(b)] {
            0 => 0,
            b'u' => 5,
            _ => 1,
        })
        .sum();
    let at = buf.len();
    buf.resize(at + bytes.len() + extra + 2, b'"');
    let out = &mut buf[at + 1..];
    if extra == 0 {
        out[..bytes.len()].copy_from_slice(bytes);
        return;
    }
    let mut j = 0;
    for &b in bytes {
        match ESCAPE[usize::from(b)] {
            0 => {
                out[j] = b;
                j += 1;
            }
            b'u' => {
                let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]);
                out[j..j + 6].copy_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
                j += 6;
            }
            short => {
                out[j..j + 2].copy_from_slice(&[b'\\', short]);
                j += 2;
            }
        }
    }
}

/// Appends `data` in lowercase hex, with SIMD where the processor has it: a sink printing
/// 1 KiB messages in hex spent a quarter of its time here with the `hex` crate.
pub(crate) fn push_hex(buf: &mut Vec<u8>, data: &[u8]) {
    let at = buf.len();
    buf.resize(at + 2 * data.len(), 0);
    // The buffer was just sized for exactly this: it cannot fail.
    let _ = faster_hex::hex_encode(data, &mut buf[at..]);
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `s` with every control character escaped as Rust escapes it (`\n`, `\u{1b}`),
/// borrowed when it has none: for text a peer chose (a member's endpoints, a remote's
/// error) printed as text rather than JSON, where a newline would forge a line of its own
/// and a terminal escape would reach the operator's terminal.
pub(crate) fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control characters (C0, DEL, C1) come out escaped; other text, any script, as it was.
    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert!(matches!(
            escape_controls("peer0.org1.example.com:7051 ü"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\nb\r\t\u{1b}[31m\u{7f}\u{9b}é"),
            "a\\nb\\r\\t\\u{1b}[31m\\u{7f}\\u{9b}é"
        );
    }
    use serde_json::json;
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

    /// Escaping is serde_json's for every ASCII character and a few others; hex is the
    /// `hex` crate's for every byte.
    #[test]
    fn strings_and_hex_are_written_as_serde_json_and_hex_write_them() {
        let mut samples: Vec<String> = (0..0x80u8).map(|b| char::from(b).to_string()).collect();
        samples.extend(["", "plain", "é\u{2028}😀", "a\"b\\c\n\u{0}d\u{1f}"].map(String::from));
        samples.push(samples.concat());
        for s in &samples {
            let mut buf = b"x".to_vec();
            push_json_str(&mut buf, s);
            assert_eq!(
                buf[1..],
                *Value::from(s.as_str()).to_string().as_bytes(),
                "{s:?}"
            );
        }
        let bytes: Vec<u8> = (0..=255).collect();
        let mut buf = b"x".to_vec();
        push_hex(&mut buf, &bytes);
        assert_eq!(buf[1..], *hex::encode(&bytes).as_bytes());
        for n in [0, 7, 10, 12_345, u64::MAX] {
            let mut buf = Vec::new();
            push_u64(&mut buf, n);
            assert_eq!(buf, n.to_string().into_bytes());
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
