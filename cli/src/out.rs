//! `node`'s stdout: JSON lines written by a thread of their own from a bounded queue, so
//! that a reader who stops reading never blocks commands, the network or `stop`.
//!
//! Before this, every line was written inside the command loop; once the pipe was full
//! (64 KiB unread), the loop sat in `write` and the node stopped answering, even to
//! `{"cmd":"stop"}`. Now a full queue drops lines and counts them: the count is in the
//! `stats` event and the stop summary, and an `output_dropped` line tells the reader, in
//! the stream itself, how many lines it missed once there is room again.
//!
//! The queue is one byte buffer that lines are measured for and then formatted straight
//! into (see [`MAX_BYTES`]), and the writer swaps it for its own empty one and writes it
//! whole: a busy node (a sink printing hundreds of thousands of messages a second) makes
//! one `write` per batch and allocates nothing per line, and an idle one still shows each
//! line at once.
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
/// Bytes the queue's buffer and the writer's batch take together, counted as capacity: what
/// stdout costs in memory whatever the reader does. A received message prints up to eight
/// times its size (`data_hex`, and `text` of control characters), so a line that does not
/// fit in what is left is dropped as measured, never formatted: a 40 MiB message once made
/// a 335 MB line, and three such with stdout unread held 2.68 GB.
pub(crate) const MAX_BYTES: usize = 64 << 20;
/// Capacity a buffer keeps once written: a burst of large lines does not pin its peak.
const KEPT_CAPACITY: usize = 4 << 20;
/// How long [`Out::drain`] waits for a writer that has not yet taken the lines queued (it is
/// not blocked by the reader, only not run yet: a loaded machine).
const PICKUP_LIMIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Queue {
    /// Lines waiting, each with its newline.
    buf: Vec<u8>,
    /// How many lines `buf` holds.
    lines: usize,
    /// A batch is being written (taken off the queue, not yet flushed).
    writing: bool,
    /// When the writer took the batch it is writing.
    writing_since: Option<Instant>,
    /// Capacity of the writer's batch, written or not: `buf` may grow to `MAX_BYTES` less
    /// this.
    held: usize,
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

    /// Waits until every queued line is written; `false` if some are left because the
    /// reader is not reading: a write has been under way for `limit` (counted from this
    /// call at the earliest). Lines the writer has not taken yet while it is not writing
    /// wait for it up to [`PICKUP_LIMIT`]: on a loaded machine the writer thread may not
    /// run for longer than `limit` though the reader reads, and a node gave up its
    /// `stopped` line so.
    pub(crate) fn drain(&self, limit: Duration) -> bool {
        let called = Instant::now();
        let mut q = self.s.q.lock().unwrap_or_else(PoisonError::into_inner);
        q.draining += 1;
        let done = loop {
            if q.buf.is_empty() && !q.writing {
                break true;
            }
            let deadline = match q.writing_since {
                Some(since) if q.writing => since.max(called) + limit,
                _ => called + limit.max(PICKUP_LIMIT),
            };
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
        // Measured first, as any line, without a buffer; writing a `Value` cannot fail.
        let mut len = Measure(0);
        let _ = serde_json::to_writer(&mut len, v);
        self.line(len.0, |buf| {
            let _ = serde_json::to_writer(buf, v);
        });
    }

    /// Queues the line `write` appends (one JSON object of `len` bytes, without its
    /// newline), or drops and counts it when the queue is full. `write` is only called
    /// once there is room: a line too long for the queue costs neither memory nor the time
    /// to format it.
    pub(crate) fn line(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let q = &mut *self.q;
        let start = q.buf.len();
        let mut digits = itoa::Buffer::new();
        // Tell the reader what it missed before anything else, once there is room.
        let notice = (q.unreported > 0).then(|| digits.format(q.unreported).as_bytes());
        let lines = 1 + usize::from(notice.is_some());
        let need = len
            .saturating_add(1)
            .saturating_add(notice.map_or(0, notice_len));
        let room = MAX_BYTES.saturating_sub(q.held);
        if q.lines + lines > MAX_LINES || need > room.saturating_sub(start) {
            q.unreported += 1;
            q.dropped += 1;
            // The notice alone, if it fits: a node receiving only lines too long for the
            // queue would otherwise tell its reader nothing until a short one came.
            let n = digits.format(q.unreported).as_bytes();
            if q.lines < MAX_LINES && notice_len(n) <= room.saturating_sub(start) {
                q.buf.reserve(notice_len(n));
                push_notice(&mut q.buf, n);
                q.unreported = 0;
                q.lines += 1;
                self.added = true;
            }
            return;
        }
        if q.buf.capacity() - start < need {
            // Doubling as `Vec` would, but never past the bound.
            let grown = q.buf.capacity().saturating_mul(2).clamp(start + need, room);
            q.buf.reserve_exact(grown - start);
        }
        if let Some(n) = notice {
            push_notice(&mut q.buf, n);
        }
        write(&mut q.buf);
        q.buf.push(b'\n');
        debug_assert_eq!(q.buf.len() - start, need, "a line's length was mismeasured");
        if q.buf.len() > room {
            // Mismeasured past the bound (a bug the assertion above is for): the line goes,
            // and so does what `Vec` grew for it.
            q.buf.truncate(start);
            q.buf.shrink_to(room);
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

/// The start of the line that tells the reader how many lines it missed.
const NOTICE: &[u8] = b"{\"event\":\"output_dropped\",\"lines\":";

/// The length of that line, newline included, for the count written as `digits`.
fn notice_len(digits: &[u8]) -> usize {
    NOTICE.len() + digits.len() + 2
}

/// Appends that line for the count written as `digits`.
fn push_notice(buf: &mut Vec<u8>, digits: &[u8]) {
    buf.extend_from_slice(NOTICE);
    buf.extend_from_slice(digits);
    buf.extend_from_slice(b"}\n");
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
            q.writing_since = None;
            q.held = batch.capacity();
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
            // The queue's buffer grew by doubling: the room it had to spare is the queue's
            // again while this is written. Shrinking a large block moves nothing.
            let keep = batch.len().max(KEPT_CAPACITY);
            if batch.capacity() > keep {
                batch.shrink_to(keep);
            }
            q.held = batch.capacity();
            q.lines = 0;
            q.writing = true;
            q.writing_since = Some(Instant::now());
            // A `drain` that waits for the pickup (up to `PICKUP_LIMIT`) now waits for
            // this write only its own limit.
            if q.draining > 0 {
                s.written.notify_all();
            }
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
    let len = json_str_len(v);
    let extra = len - bytes.len() - 2;
    let at = buf.len();
    buf.resize(at + len, b'"');
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

/// How many bytes [`push_json_str`] appends for `v`, quotes included: a received line is
/// measured before it is written. Most text has nothing to escape, which a first pass the
/// compiler vectorizes finds (43 ns for 1 KiB, against 650 ns for the table's sum).
pub(crate) fn json_str_len(v: &str) -> usize {
    let bytes = v.as_bytes();
    let plain = bytes.chunks(64).all(|c| {
        !c.iter()
            .fold(false, |m, &b| m | (b < 0x20) | (b == b'"') | (b == b'\\'))
    });
    if plain {
        return bytes.len() + 2;
    }
    let extra: usize = bytes
        .iter()
        .map(|&b| match ESCAPE[usize::from(b)] {
            0 => 0,
            b'u' => 5,
            _ => 1,
        })
        .sum();
    bytes.len() + extra + 2
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

/// What a line is written into by parts: the queue's buffer, or a [`Measure`] of it, so
/// that one function both measures a line for [`Lines::line`] and writes it.
pub(crate) trait LineBuf {
    fn push_bytes(&mut self, bytes: &[u8]);
    /// See [`push_json_str`].
    fn push_json_str(&mut self, v: &str);
    /// See [`push_hex`].
    fn push_hex(&mut self, data: &[u8]);
    /// See [`push_u64`].
    fn push_u64(&mut self, n: u64);
}

impl LineBuf for Vec<u8> {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn push_json_str(&mut self, v: &str) {
        push_json_str(self, v);
    }
    fn push_hex(&mut self, data: &[u8]) {
        push_hex(self, data);
    }
    fn push_u64(&mut self, n: u64) {
        push_u64(self, n);
    }
}

/// The length of what would be written, and nothing else.
#[derive(Default)]
pub(crate) struct Measure(pub(crate) usize);

impl LineBuf for Measure {
    fn push_bytes(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn push_json_str(&mut self, v: &str) {
        self.0 += json_str_len(v);
    }
    fn push_hex(&mut self, data: &[u8]) {
        self.0 += 2 * data.len();
    }
    fn push_u64(&mut self, n: u64) {
        self.0 += itoa::Buffer::new().format(n).len();
    }
}

impl Write for Measure {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a peer chose, escaped for printing as text (see
/// [`fabric_gossip_core::escape_unseen`]).
pub(crate) use fabric_gossip_core::escape_unseen as escape_controls;

#[cfg(test)]
mod tests {
    use super::*;

    /// Control characters (C0, DEL, C1) and unseen format characters come out escaped;
    /// other text, any script, as it was.
    #[test]
    fn unseen_characters_are_escaped_and_nothing_else() {
        assert!(matches!(
            escape_controls("peer0.org1.example.com:7051 ü"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("a\nb\r\t\u{1b}[31m\u{7f}\u{9b}é"),
            "a\\nb\\r\\t\\u{1b}[31m\\u{7f}\\u{9b}é"
        );
        // What shows as nothing, or turns what follows around: escaped too.
        assert_eq!(
            escape_controls("127.0.0.1:7052\u{200b} \u{202e}2507:1\u{2028}\u{feff}"),
            "127.0.0.1:7052\\u{200b} \\u{202e}2507:1\\u{2028}\\u{feff}"
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
        // A quote or a backslash after another character to escape, last in its chunk.
        samples.extend(["\n\"", "\n\\", "\"\\x"].map(String::from));
        samples.push(samples.concat());
        for s in &samples {
            let mut buf = b"x".to_vec();
            push_json_str(&mut buf, s);
            assert_eq!(
                buf[1..],
                *Value::from(s.as_str()).to_string().as_bytes(),
                "{s:?}"
            );
            assert_eq!(json_str_len(s), buf.len() - 1, "{s:?}");
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

    /// A writer thread run late (a loaded machine: runnable, not run) is no reader that
    /// does not read: `drain` waits for it to take the last lines rather than giving them
    /// up at its limit. A node under load lost its `stopped` line so, its reader reading.
    #[test]
    fn the_last_lines_wait_for_a_writer_run_late() {
        let s = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            written: Condvar::new(),
        });
        let out = Out { s: s.clone() };
        out.emit(&json!({"event": "stopped"}));
        let (open, gate) = mpsc::channel();
        let (tx, written) = mpsc::channel();
        for _ in 0..4 {
            let _ = open.send(());
        }
        // The writer starts well after `drain`'s limit, as a thread the scheduler keeps
        // waiting does; it then writes at once.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            writer(&s, Gate(gate, tx));
        });
        assert!(
            out.drain(Duration::from_millis(20)),
            "the last line given up"
        );
        let text: Vec<u8> = written.try_iter().flatten().collect();
        assert_eq!(text, b"{\"event\":\"stopped\"}\n");
    }

    /// The writer, idle, is woken for the last lines and takes them after `drain` began,
    /// then blocks (a reader that stopped reading, its pipe all but full): the write's own
    /// limit applies, not [`PICKUP_LIMIT`], which is for a writer that has not taken them.
    /// `drain` waited the full 2 s, not being told of the pickup.
    #[test]
    fn a_write_taken_during_drain_is_bounded_by_its_limit() {
        let (out, writes, go) = stuck("first");
        // Let the first write finish; the writer then waits for lines.
        let _ = go.send(());
        while out.s.q.lock().expect("lock").writing {
            std::thread::yield_now();
        }
        out.emit(&json!({"event": "stopped"}));
        let started = Instant::now();
        assert!(!out.drain(Duration::from_millis(20)), "nothing was read");
        let took = started.elapsed();
        let batch = writes.recv_timeout(Duration::from_secs(10)).expect("write");
        assert_eq!(batch, [b"{\"event\":\"stopped\"}\n".to_vec()]);
        assert!(took < Duration::from_secs(1), "drain took {took:?}");
        drop(go);
    }

    /// A sink like a pipe nobody reads: says what each write holds (the start of each of
    /// its lines), then blocks until let go.
    struct Stuck(mpsc::Sender<Vec<Vec<u8>>>, mpsc::Receiver<()>);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let heads = b.split_inclusive(|&c| c == b'\n');
            let _ = self
                .0
                .send(heads.map(|l| l[..l.len().min(48)].to_vec()).collect());
            let _ = self.1.recv();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `Out` on a [`Stuck`] sink, with the first write under way and holding `first`.
    fn stuck(first: &str) -> (Out, mpsc::Receiver<Vec<Vec<u8>>>, mpsc::Sender<()>) {
        let (go, wait) = mpsc::channel();
        let (tx, writes) = mpsc::channel();
        let out = Out::start(Stuck(tx, wait));
        out.emit(&json!({"event": first}));
        let batch = writes.recv_timeout(Duration::from_secs(10)).expect("write");
        assert_eq!(batch, [format!("{{\"event\":\"{first}\"}}\n").into_bytes()]);
        (out, writes, go)
    }

    /// Lets `out`'s writer go, prints `{"event":"after"}`, and returns the start of every
    /// line written after the first batch, `out`'s buffers being back to their kept size.
    fn unstick(
        out: &Out,
        writes: &mpsc::Receiver<Vec<Vec<u8>>>,
        go: &mpsc::Sender<()>,
    ) -> Vec<String> {
        for _ in 0..64 {
            let _ = go.send(());
        }
        assert!(out.drain(Duration::from_secs(10)));
        out.emit(&json!({"event": "after"}));
        assert!(out.drain(Duration::from_secs(10)));
        let q = out.s.q.lock().expect("lock");
        assert!(q.buf.capacity() <= KEPT_CAPACITY, "{}", q.buf.capacity());
        assert!(q.held <= KEPT_CAPACITY, "{}", q.held);
        writes
            .try_iter()
            .flatten()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }

    /// `len` bytes: `{"l":"NAME"` and padding.
    fn pad(buf: &mut Vec<u8>, name: &str, len: usize) {
        let at = buf.len();
        buf.extend_from_slice(format!("{{\"l\":\"{name}\"").as_bytes());
        buf.resize(at + len, b'x');
    }

    /// The batch being written counts: with 40 MiB in the blocked write, another 40 MiB
    /// line is dropped unformatted (it used to be queued, the queue being empty), while
    /// one taking exactly the room left is queued whole.
    #[test]
    fn the_queue_and_the_blocked_batch_hold_max_bytes_together() {
        let (go, wait) = mpsc::channel();
        let (tx, writes) = mpsc::channel();
        let out = Out::start(Stuck(tx, wait));
        let big = 40 << 20;
        out.lines().line(big, |b| pad(b, "A", big));
        let batch = writes.recv_timeout(Duration::from_secs(10)).expect("write");
        assert_eq!(batch.len(), 1);
        out.lines()
            .line(big, |_| panic!("a line that cannot fit was formatted"));
        assert_eq!(out.dropped(), 1);
        {
            let mut lines = out.lines();
            for i in 0..10 {
                lines.value(&json!({"i": i}));
            }
        }
        let room = {
            let q = out.s.q.lock().expect("lock");
            MAX_BYTES - q.held - q.buf.len()
        };
        out.lines().line(room - 1, |b| pad(b, "D", room - 1));
        out.lines()
            .line(2, |_| panic!("a line that cannot fit was formatted"));
        assert_eq!(out.dropped(), 2);
        {
            let q = out.s.q.lock().expect("lock");
            assert!(q.held >= big, "the batch is counted: {}", q.held);
            assert!(
                q.buf.capacity() + q.held <= MAX_BYTES,
                "{} + {} bytes held",
                q.buf.capacity(),
                q.held
            );
        }
        let mut want = vec![r#"{"event":"output_dropped","lines":1}"#.to_string()];
        want.extend((0..10).map(|i| format!("{{\"i\":{i}}}")));
        let mut d = Vec::new();
        pad(&mut d, "D", 48);
        want.push(String::from_utf8(d).expect("UTF-8"));
        want.push(r#"{"event":"output_dropped","lines":1}"#.into());
        want.push(r#"{"event":"after"}"#.into());
        let got = unstick(&out, &writes, &go);
        assert_eq!(got.iter().map(|l| l.trim_end()).collect::<Vec<_>>(), want);
    }

    /// A `Value` too large for the queue is dropped without growing its buffer, and the
    /// reader told: an 11 MiB string of control characters is 66 MiB of JSON, which used to
    /// be queued whole behind an empty queue and leave its capacity behind.
    #[test]
    fn a_line_too_long_for_the_queue_leaves_nothing_behind() {
        let (out, writes, go) = stuck("first");
        let control = "\u{1}".repeat(11 << 20);
        out.emit(&json!({"event": "big", "text": control}));
        out.lines().line(usize::MAX, |_| {
            panic!("a line that cannot fit was formatted")
        });
        assert_eq!(out.dropped(), 2);
        {
            let q = out.s.q.lock().expect("lock");
            assert!(q.buf.capacity() <= KEPT_CAPACITY, "{}", q.buf.capacity());
        }
        // Each drop told at once, the queue having room for the notice, not only once a
        // line that fits comes.
        let got = unstick(&out, &writes, &go);
        assert_eq!(
            got,
            [
                "{\"event\":\"output_dropped\",\"lines\":1}\n",
                "{\"event\":\"output_dropped\",\"lines\":1}\n",
                "{\"event\":\"after\"}\n"
            ]
        );
    }

    /// A stdin line that could not be run is a `command_error` line with the reason.
    #[test]
    fn a_command_error_is_a_line_with_its_reason() {
        let (out, writes, go) = stuck("first");
        out.command_error("bad");
        assert_eq!(
            unstick(&out, &writes, &go),
            [
                "{\"error\":\"bad\",\"event\":\"command_error\"}\n",
                "{\"event\":\"after\"}\n"
            ]
        );
    }

    /// The queue holds `MAX_LINES` lines, the notice of a drop counted among them, and
    /// not one more, behind a blocked write; a notice is given once.
    #[test]
    fn the_queue_holds_max_lines_counting_notices() {
        let (out, writes, go) = stuck("first");
        for i in 0..MAX_LINES - 1 {
            out.emit(&json!({"i": i}));
        }
        assert_eq!(out.dropped(), 0);
        // Too long for the queue: dropped, and its notice takes the last line.
        out.lines().line(usize::MAX, |_| {
            panic!("a line that cannot fit was formatted")
        });
        assert_eq!(out.dropped(), 1);
        out.emit(&json!({"event": "full"}));
        assert_eq!(out.dropped(), 2);
        let got = unstick(&out, &writes, &go);
        let mut want: Vec<String> = (0..MAX_LINES - 1)
            .map(|i| format!("{{\"i\":{i}}}\n"))
            .collect();
        want.push("{\"event\":\"output_dropped\",\"lines\":1}\n".into());
        want.push("{\"event\":\"output_dropped\",\"lines\":1}\n".into());
        want.push("{\"event\":\"after\"}\n".into());
        assert_eq!(got, want);
        // The notice went out with `after`: the next line comes alone.
        out.emit(&json!({"event": "last"}));
        assert!(out.drain(Duration::from_secs(10)));
        let next: Vec<Vec<Vec<u8>>> = writes.try_iter().collect();
        assert_eq!(next, [vec![b"{\"event\":\"last\"}\n".to_vec()]]);
    }

    /// A line longer than what is left of the queue's buffer grows it to the bound at most,
    /// not by doubling past it: 40 MiB queued, then 20 MiB more.
    #[test]
    fn a_growing_queue_stays_within_max_bytes() {
        let (out, writes, go) = stuck("first");
        let (big, half) = (40 << 20, 20 << 20);
        out.lines().line(big, |b| pad(b, "A", big));
        out.lines().line(half, |b| pad(b, "B", half));
        assert_eq!(out.dropped(), 0);
        {
            let q = out.s.q.lock().expect("lock");
            assert!(
                q.buf.capacity() + q.held <= MAX_BYTES,
                "{} + {} bytes held",
                q.buf.capacity(),
                q.held
            );
        }
        let got = unstick(&out, &writes, &go);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].starts_with("{\"l\":\"A\"") && got[1].starts_with("{\"l\":\"B\""));
    }

    /// Once `drain` returns it is no longer counted as waiting: the writer then wakes
    /// nobody after each batch.
    #[test]
    fn drain_leaves_no_waiter_behind() {
        let (out, writes, go) = stuck("first");
        assert!(!out.drain(Duration::from_millis(20)), "nothing was read");
        assert_eq!(out.s.q.lock().expect("lock").draining, 0);
        let _ = unstick(&out, &writes, &go);
        assert_eq!(out.s.q.lock().expect("lock").draining, 0);
    }

    /// `drain` is woken when the writer has written the last lines, not only at its limit.
    #[test]
    fn drain_returns_once_the_lines_are_written() {
        let (out, writes, go) = stuck("first");
        out.emit(&json!({"event": "stopped"}));
        let _ = go.send(());
        let batch = writes.recv_timeout(Duration::from_secs(10)).expect("write");
        assert_eq!(batch, [b"{\"event\":\"stopped\"}\n".to_vec()]);
        // The last write is under way; the reader reads it once `drain` waits.
        let q = out.clone();
        let reader = std::thread::spawn(move || {
            while q.s.q.lock().expect("lock").draining == 0 {
                std::thread::yield_now();
            }
            let _ = go.send(());
        });
        let started = Instant::now();
        assert!(out.drain(Duration::from_secs(30)));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(10), "drain took {took:?}");
        reader.join().expect("reader");
    }

    /// A writer that takes the last lines while `drain` waits for it to (woken late, as on
    /// a loaded machine) tells `drain`, which then waits its own limit for the write, not
    /// [`PICKUP_LIMIT`].
    #[test]
    fn a_pickup_during_drain_is_told_to_drain() {
        let (out, _writes, go) = stuck("first");
        // The first write ends; the writer then waits for lines.
        let _ = go.send(());
        while out.s.q.lock().expect("lock").writing {
            std::thread::yield_now();
        }
        // A line queued without waking the writer; it is woken once `drain` waits, and its
        // write then blocks (the reader stopped reading).
        {
            let mut q = out.s.q.lock().expect("lock");
            q.buf.extend_from_slice(b"{\"event\":\"stopped\"}\n");
            q.lines += 1;
        }
        let s = out.s.clone();
        std::thread::spawn(move || {
            while s.q.lock().expect("lock").draining == 0 {
                std::thread::yield_now();
            }
            s.queued.notify_one();
        });
        let started = Instant::now();
        assert!(!out.drain(Duration::from_millis(20)), "nothing was read");
        let took = started.elapsed();
        assert!(took < PICKUP_LIMIT / 2, "drain took {took:?}");
        drop(go);
    }

    /// A one-shot command's failed write says what it was writing and why, and exits 2.
    #[test]
    fn a_write_error_names_what_was_written_and_exits_2() {
        let e = WriteError::new(
            "result",
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe (os error 32)"),
        );
        assert_eq!(
            e.to_string(),
            "writing the result: Broken pipe (os error 32)"
        );
        assert_eq!(
            format!("{:?}", e.exit()),
            format!("{:?}", std::process::ExitCode::from(2))
        );
    }

    /// A batch taken from a queue grown by doubling gives back the room it does not fill:
    /// 60 MiB in a buffer of about 64 MiB, taken to be written, leaves the queue the
    /// 4 MiB beyond its lines, and a 3 MiB line is queued.
    #[test]
    fn a_batch_taken_gives_its_spare_room_back_to_the_queue() {
        let (out, writes, go) = stuck("first");
        let (big, half) = (40 << 20, 20 << 20);
        out.lines().line(big, |b| pad(b, "A", big));
        out.lines().line(half, |b| pad(b, "B", half));
        assert!(out.s.q.lock().expect("lock").buf.capacity() > big + half + 2);
        let _ = go.send(());
        let batch = writes.recv_timeout(Duration::from_secs(10)).expect("write");
        assert_eq!(batch.len(), 2, "A and B taken together");
        let held = out.s.q.lock().expect("lock").held;
        assert_eq!(
            held,
            big + half + 2,
            "the batch's capacity, its lines' length"
        );
        let three = 3 << 20;
        out.lines().line(three, |b| pad(b, "C", three));
        assert_eq!(out.dropped(), 0);
        let got = unstick(&out, &writes, &go);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("{\"l\":\"C\""), "{got:?}");
    }
}
