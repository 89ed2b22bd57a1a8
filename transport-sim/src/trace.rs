//! The trace: every input and output of every node, with its virtual time.

use bytes::Bytes;
use core::fmt::{self, Write as _};
use fabric_gossip_core::{Action, CertHash, Event, RemotePeer, SignedMessage, StreamEnd};
use sha2::{Digest, Sha256};

/// How much of the trace a run keeps. Formatting lines costs far more than simulating, so a
/// benchmark turns the trace off, a sweep only hashes it, and a test that reads or snapshots
/// it keeps the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TraceMode {
    /// Nothing is formatted or kept; [`Trace::hash`] stays the hash of nothing.
    Off,
    /// Every line is formatted and hashed, none kept: determinism checks at low cost.
    #[default]
    Hash,
    /// Every line is hashed and kept (up to the limit) for reading, files and snapshots.
    Full,
}

/// The record of a run. Lines look like `+0.000400000 n0 < dial d0.0 ok`: virtual time
/// since the start of the run, the node, a direction marker (`<` input, `>` action,
/// `!` event, `@` delivery, `*` fault, `api` a call) and the details.
///
/// The SHA-256 over all lines is the run's fingerprint: the same seed must give the same
/// hash, byte for byte. Kept lines are bounded by `limit`; lines past it are still hashed
/// and counted in [`Trace::dropped`].
#[derive(Clone, Debug)]
pub struct Trace {
    mode: TraceMode,
    hasher: Sha256,
    lines: Vec<String>,
    limit: usize,
    count: u64,
    dropped: u64,
    buf: String,
}

impl Trace {
    /// A trace in `mode` keeping at most `limit` lines.
    pub fn new(mode: TraceMode, limit: usize) -> Self {
        Trace {
            mode,
            hasher: Sha256::new(),
            lines: Vec::new(),
            limit,
            count: 0,
            dropped: 0,
            buf: String::new(),
        }
    }

    /// Whether lines are being formatted at all (callers skip work when not).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// The mode in force.
    pub fn mode(&self) -> TraceMode {
        self.mode
    }

    /// Adds one line at `elapsed_nanos` of virtual time.
    pub fn record(&mut self, elapsed_nanos: u64, args: fmt::Arguments<'_>) {
        if self.mode == TraceMode::Off {
            return;
        }
        self.buf.clear();
        let secs = elapsed_nanos / 1_000_000_000;
        let nanos = elapsed_nanos % 1_000_000_000;
        // Writing to a String cannot fail.
        let _ = write!(self.buf, "+{secs}.{nanos:09} ");
        let _ = self.buf.write_fmt(args);
        self.hasher.update(self.buf.as_bytes());
        self.hasher.update(b"\n");
        self.count += 1;
        if self.mode == TraceMode::Full {
            if self.lines.len() < self.limit {
                self.lines.push(self.buf.clone());
            } else {
                self.dropped += 1;
            }
        }
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The kept lines joined with newlines, for files and snapshots.
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(self.lines.iter().map(|l| l.len() + 1).sum());
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// SHA-256 over every line recorded so far (kept or not).
    pub fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }

    /// The hash as lowercase hex.
    pub fn hash_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.hash() {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Lines recorded (kept or not).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Lines hashed but not kept because the limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Short fingerprint of a byte string for trace lines: the first 4 bytes of its SHA-256,
/// so a trace shows when message bytes change without printing them.
pub(crate) struct Digest8<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Digest8<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = Sha256::digest(self.0);
        write!(f, "#{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
    }
}

/// Records a trace line for the simulator `$sim` at its current virtual time, formatting
/// nothing when the trace is off.
macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace.is_on() {
            let elapsed = ($sim.now - $crate::config::START).as_nanos() as u64;
            $sim.trace.record(elapsed, format_args!($($arg)*));
        }
    };
}
pub(crate) use trace;

// Display adapters for trace lines: each shows one core type the way the trace reads.

pub(crate) struct Peers<'a>(pub(crate) &'a [RemotePeer]);
impl fmt::Display for Peers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if p.pki_id.as_bytes() == p.endpoint.as_bytes() {
                write!(f, "{}", p.endpoint)?;
            } else {
                write!(f, "{}={}", p.endpoint, p.pki_id)?;
            }
        }
        f.write_str("]")
    }
}

pub(crate) struct Cert<'a>(pub(crate) Option<&'a CertHash>);
impl fmt::Display for Cert<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(h) => Digest8(h).fmt(f),
        }
    }
}

pub(crate) struct Res<'a, T>(pub(crate) &'a Result<T, String>);
impl<T> fmt::Display for Res<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(_) => f.write_str("ok"),
            Err(e) => write!(f, "error: {e}"),
        }
    }
}

pub(crate) struct EndFmt<'a>(pub(crate) &'a StreamEnd);
impl fmt::Display for EndFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StreamEnd::Finished => f.write_str("finished"),
            StreamEnd::Error(e) => write!(f, "error: {e}"),
        }
    }
}

pub(crate) struct EnvFmt<'a>(pub(crate) &'a Bytes);
impl fmt::Display for EnvFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = SignedMessage::from_envelope_bytes(self.0.clone())
            .map_or("undecodable", |m| m.message().content_name());
        write!(f, "{kind} {}B {}", self.0.len(), Digest8(self.0))
    }
}

pub(crate) struct ActionFmt<'a>(pub(crate) &'a Action);
impl fmt::Display for ActionFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::Dial { dial, endpoint } => write!(f, "Dial {dial} {endpoint}"),
            Action::Ping { dial } => write!(f, "Ping {dial}"),
            Action::OpenStream { dial, stream } => write!(f, "OpenStream {dial} {stream}"),
            Action::Write {
                stream, envelope, ..
            } => write!(f, "Write {stream} {}", EnvFmt(envelope)),
            Action::PauseRead { stream } => write!(f, "PauseRead {stream}"),
            Action::ResumeRead { stream } => write!(f, "ResumeRead {stream}"),
            Action::CloseStream { stream, error } => match error {
                None => write!(f, "CloseStream {stream}"),
                Some(e) => write!(f, "CloseStream {stream} error: {e}"),
            },
            Action::CloseDial { dial } => write!(f, "CloseDial {dial}"),
        }
    }
}

pub(crate) struct EventFmt<'a>(pub(crate) &'a Event);
impl fmt::Display for EventFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::PresumedDead(p) => write!(f, "PresumedDead {p}"),
            Event::IdentitySwitch(p) => write!(f, "IdentitySwitch {p}"),
            Event::DeliveryReady(s) => write!(f, "DeliveryReady {s}"),
            Event::ProbeDone { op, result } => match result {
                Ok(()) => write!(f, "ProbeDone {op} ok"),
                Err(e) => write!(f, "ProbeDone {op} error: {e}"),
            },
            Event::HandshakeDone { op, result } => match result {
                Ok(info) => write!(f, "HandshakeDone {op} ok {}", info.id),
                Err(e) => write!(f, "HandshakeDone {op} {}: {e}", e.label()),
            },
            Event::SendWithAckDone { op, results } => {
                write!(f, "SendWithAckDone {op} [")?;
                for (i, r) in results.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match &r.result {
                        Ok(()) => write!(f, "{} ok", r.peer)?,
                        Err(e) => write!(f, "{} error: {e}", r.peer)?,
                    }
                }
                f.write_str("]")
            }
            Event::Connected {
                conn,
                info,
                inbound,
            } => write!(
                f,
                "Connected {conn} {} {}",
                info.id,
                if *inbound { "inbound" } else { "outbound" }
            ),
            Event::Disconnected {
                conn,
                pki_id,
                reason,
            } => write!(f, "Disconnected {conn} {pki_id} {reason}"),
            Event::HandshakeFailed {
                stream,
                remote,
                inbound,
                error,
            } => write!(
                f,
                "HandshakeFailed {stream} {remote} {} {}: {error}",
                if *inbound { "inbound" } else { "outbound" },
                error.label()
            ),
            Event::Probed { stream, info } => write!(f, "Probed {stream} {}", info.id),
            Event::IdentitiesRevalidated { refused } => {
                write!(f, "IdentitiesRevalidated refused={refused}")
            }
            Event::IdentityPurged { pki_id, reason } => {
                write!(f, "IdentityPurged {pki_id} {reason}")
            }
            Event::Stopped => f.write_str("Stopped"),
            // A kind this trace predates still counts in the hash, by its debug form.
            other => write!(f, "{other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_hash_alike_and_full_keeps_lines() {
        let mut h = Trace::new(TraceMode::Hash, 10);
        let mut f = Trace::new(TraceMode::Full, 1);
        let mut o = Trace::new(TraceMode::Off, 10);
        for t in [&mut h, &mut f, &mut o] {
            t.record(1_500_000_000, format_args!("n0 > {}", "x"));
            t.record(2_000_000_000, format_args!("n1 < {}", 2));
        }
        assert_eq!(h.hash(), f.hash());
        assert_ne!(h.hash(), o.hash());
        assert_eq!(f.lines(), &["+1.500000000 n0 > x".to_string()]);
        assert_eq!(f.dropped(), 1);
        assert_eq!(h.count(), 2);
        assert!(h.lines().is_empty());
    }

    /// What a run's output is made of: the kept lines as text, the fingerprint as the hex
    /// of the hash (the CLI prints it and runs are compared by it), the lines past the limit
    /// counted, and a trace that is off saying so.
    #[test]
    fn a_trace_reads_back_as_text_hex_and_counts() {
        let mut f = Trace::new(TraceMode::Full, 2);
        for i in 0..5u64 {
            f.record(i * 1_000, format_args!("n{i} ! x"));
        }
        assert_eq!(f.text(), "+0.000000000 n0 ! x\n+0.000001000 n1 ! x\n");
        assert_eq!((f.count(), f.dropped()), (5, 3));
        let hex = f.hash_hex();
        let want: String = f.hash().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
        assert_eq!(hex.len(), 64);
        assert_ne!(hex, Trace::new(TraceMode::Full, 2).hash_hex());
        assert_eq!(f.mode(), TraceMode::Full);
        assert!(f.is_on());
        let off = Trace::new(TraceMode::Off, 2);
        assert_eq!(off.mode(), TraceMode::Off);
        assert!(!off.is_on());
        assert!(Trace::new(TraceMode::Hash, 2).is_on());
    }

    /// The adapters with more than one item: peers and ack results are separated, and a
    /// peer whose PKI-ID is its endpoint (the test provider's) is shown once.
    #[test]
    fn lists_in_trace_lines_show_each_item_once_and_separated() {
        use fabric_gossip_core::{AckError, OpId, PkiId, SendResult};
        let peer = |endpoint: &str, pki: &str| RemotePeer {
            endpoint: endpoint.into(),
            pki_id: PkiId::new(pki.as_bytes().to_vec()),
        };
        let peers = [peer("a:1", "a:1"), peer("b:2", "pb"), peer("c:3", "c:3")];
        assert_eq!(Peers(&peers).to_string(), "[a:1 b:2=pb c:3]");
        assert_eq!(Peers(&peers[..1]).to_string(), "[a:1]");
        assert_eq!(Peers(&[]).to_string(), "[]");
        let acks = Event::SendWithAckDone {
            op: OpId::from_parts(3, 1),
            results: vec![
                SendResult {
                    peer: PkiId::new(&b"a:1"[..]),
                    result: Ok(()),
                },
                SendResult {
                    peer: PkiId::new(&b"b:2"[..]),
                    result: Err(AckError::Timeout),
                },
            ],
        };
        assert_eq!(
            EventFmt(&acks).to_string(),
            "SendWithAckDone op3.1 [a:1 ok, b:2 error: timed out]"
        );
        let digest = Sha256::digest(b"abc");
        assert_eq!(
            Digest8(b"abc").to_string(),
            format!(
                "#{:02x}{:02x}{:02x}{:02x}",
                digest[0], digest[1], digest[2], digest[3]
            )
        );
        assert_eq!(Digest8(b"abc").to_string(), "#ba7816bf");
    }
}
