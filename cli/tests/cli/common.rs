//! What every module uses to run the binary: one-shot runs ([`run`], [`run_expect`]), nodes
//! whose JSON lines are read on a bounded channel ([`NodeProc`]; [`Daemon`], which also
//! collects stderr and may leave stdout unread), nodes started from a core.yaml
//! ([`spawn_listening`]), signals, and plain HTTP to the operations service. Every wait has a
//! deadline: [`EVENT`] unless given.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_fabric-gossip");

/// Bound on anything a node should do "now" (connect, deliver), generous for loaded CI.
pub(crate) const EVENT: Duration = Duration::from_secs(15);

/// Output of a finished run.
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn all(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Starts the binary with `args`, its stdout piped, stdin and stderr as given.
pub(crate) fn spawn(args: &[&str], stdin: Stdio, stderr: Stdio) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn fabric-gossip {args:?}: {e}"))
}

/// The child's exit status, or `None` once `limit` passed (it is then killed).
pub(crate) fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        // Polling a child's exit; the deadline above bounds it.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary with `args` and no stdin, killing it at `limit`.
pub(crate) fn run(args: &[&str], limit: Duration) -> Run {
    let mut child = spawn(args, Stdio::null(), Stdio::piped());
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr")));
    let status = exit_within(&mut child, limit);
    let r = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "fabric-gossip {args:?} still running after {limit:?}\n{}",
        r.all()
    );
    r
}

/// [`run`] within [`EVENT`], checking the exit status: a wrong one fails with everything
/// the command wrote.
pub(crate) fn run_expect(args: &[&str], code: i32) -> Run {
    let r = run(args, EVENT);
    assert_eq!(r.code, Some(code), "fabric-gossip {args:?}\n{}", r.all());
    r
}

/// A running `fabric-gossip node`: its JSON lines arrive on a bounded channel.
pub(crate) struct NodeProc {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: Receiver<String>,
    pub(crate) seen: Vec<Value>,
    pub(crate) addr: String,
    pub(crate) pki: String,
}

impl NodeProc {
    /// Waits for a `handshake_failed` event whose error names `why`.
    pub(crate) fn handshake_refused(&mut self, why: &str) -> serde_json::Value {
        let failed = self.wait("handshake_failed", is("handshake_failed"));
        assert!(
            failed["error"].as_str().unwrap_or_default().contains(why),
            "expected a handshake refused for {why:?}: {failed}"
        );
        failed
    }

    pub(crate) fn start(args: &[&str]) -> NodeProc {
        let mut child = spawn(&[&["node"], args].concat(), Stdio::piped(), Stdio::null());
        let stdout = child.stdout.take().expect("stdout");
        let mut n = NodeProc {
            stdin: child.stdin.take(),
            lines: read_lines(stdout, 4096),
            child,
            seen: Vec::new(),
            addr: String::new(),
            pki: String::new(),
        };
        let first = n.next(EVENT).expect("a first line");
        assert_eq!(first["event"], "listening", "first line: {first}");
        n.addr = first["addr"].as_str().expect("addr").to_owned();
        n.pki = first["pki_id"].as_str().expect("pki_id").to_owned();
        n
    }

    /// The next JSON line.
    pub(crate) fn next(&mut self, limit: Duration) -> Option<Value> {
        next_line(&self.lines, &mut self.seen, limit)
    }

    /// Waits for an event matching `pred`.
    pub(crate) fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_line(&self.lines, &mut self.seen, what, pred)
    }

    pub(crate) fn send_line(&mut self, line: &str) {
        write_line(self.stdin.as_mut(), line);
    }

    /// Sends stop and expects exit status 0 within 5 s (the contract), then the "stopped"
    /// line.
    pub(crate) fn stop(self) {
        self.stop_within(Duration::from_secs(5));
    }

    /// Sends stop and expects exit status 0 within `limit`, then the "stopped" line.
    pub(crate) fn stop_within(mut self, limit: Duration) {
        self.send_line(r#"{"cmd":"stop"}"#);
        drop(self.stdin.take());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                assert!(st.success(), "node exited with {st}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit within {limit:?} of stop"
            );
            // Polling the child's exit, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
        self.wait("stopped", |v| v["event"] == "stopped");
    }
}

/// Writes `line` to a node's stdin, which must be open.
fn write_line(stdin: Option<&mut ChildStdin>, line: &str) {
    let stdin = stdin.expect("stdin open");
    writeln!(stdin, "{line}").expect("write to node");
    stdin.flush().expect("flush");
}

/// A node's stdout, line by line, on a channel of `capacity` lines.
pub(crate) fn read_lines(stdout: std::process::ChildStdout, capacity: usize) -> Receiver<String> {
    let (tx, rx): (SyncSender<String>, Receiver<String>) = sync_channel(capacity);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `lines` within `limit`, kept in `seen`; every stdout line must be a
/// JSON object with "event".
pub(crate) fn next_line(
    lines: &Receiver<String>,
    seen: &mut Vec<Value>,
    limit: Duration,
) -> Option<Value> {
    match lines.recv_timeout(limit) {
        Ok(line) => {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-JSON line on stdout: {line:?}: {e}"));
            assert!(v.get("event").is_some(), "line without event: {line}");
            seen.push(v.clone());
            Some(v)
        }
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
    }
}

/// The first line matching `pred`, among those `seen` or within `EVENT`.
pub(crate) fn wait_line(
    lines: &Receiver<String>,
    seen: &mut Vec<Value>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(v) = seen.iter().find(|v| pred(v)) {
        return v.clone();
    }
    let deadline = Instant::now() + EVENT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_line(lines, seen, left) {
            Some(v) if pred(&v) => return v,
            Some(_) => {}
            None => panic!("no {what} within {EVENT:?}; events: {seen:?}"),
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == kind
}

pub(crate) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Stops a daemon with the `stop` command (exit status 0) and returns its stderr.
pub(crate) fn stop_for_log(d: &mut Daemon) -> String {
    d.stop_ok();
    d.stderr()
}

/// A node whose stdout and stderr are collected on threads; stdin as the test wants it.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: Receiver<String>,
    pub(crate) stderr: Option<std::thread::JoinHandle<String>>,
    pub(crate) seen: Vec<Value>,
}

impl Daemon {
    /// Starts `fabric-gossip node ARGS` (or, with `shell`, `sh -c SHELL "$@"`); `stdin_open`:
    /// a pipe the test writes, else /dev/null (end of file at once); `read_stdout`: collect
    /// stdout, else leave it unread.
    pub(crate) fn start(
        args: &[&str],
        stdin_open: bool,
        read_stdout: bool,
        shell: Option<&str>,
    ) -> Daemon {
        let mut cmd = match shell {
            Some(script) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script).arg("sh").arg(BIN).arg("node");
                c
            }
            None => {
                let mut c = Command::new(BIN);
                c.arg("node");
                c
            }
        };
        let mut child = cmd
            .args(args)
            .stdin(if stdin_open {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("stdout");
        let lines = if read_stdout {
            read_lines(stdout, 65536)
        } else {
            // Kept open and never read, as by a consumer that went to sleep.
            std::mem::forget(stdout);
            sync_channel(1).1
        };
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Daemon {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    pub(crate) fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_line(&self.lines, &mut self.seen, what, pred)
    }

    pub(crate) fn send_line(&mut self, line: &str) {
        write_line(self.stdin.as_mut(), line);
    }

    /// Sends the `stop` command and expects exit status 0 within [`EVENT`].
    pub(crate) fn stop_ok(&mut self) {
        self.send_line(r#"{"cmd":"stop"}"#);
        assert_eq!(self.exit_within(EVENT), Some(0));
    }

    pub(crate) fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Waits for the exit at most `limit`; the status code (None: killed by a signal).
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "node still running after {limit:?}"
            );
            // Polling the child's exit, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// stderr, once the process has exited.
    pub(crate) fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags of a plaintext node with a test identity on a free port.
pub(crate) const TEST_NODE: [&str; 3] = ["--listen", "127.0.0.1:0", "--test-identity"];

/// A test-identity node with `extra` flags (stdin a pipe, stdout read) and its address,
/// once it is listening.
pub(crate) fn test_daemon(extra: &[&str]) -> (Daemon, String) {
    let args: Vec<&str> = TEST_NODE.iter().chain(extra).copied().collect();
    listening_daemon(&args)
}

/// A node with `args` (stdin a pipe, stdout read) and its address, once it is listening.
pub(crate) fn listening_daemon(args: &[&str]) -> (Daemon, String) {
    let mut d = Daemon::start(args, true, true, None);
    let addr = d.wait("listening", is("listening"))["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    (d, addr)
}

/// A node on a free port with `flags` (stdin a pipe, stdout read) and its address, once it
/// is listening.
pub(crate) fn daemon_on_a_free_port(flags: &[&str]) -> (Daemon, String) {
    listening_daemon(&[&["--listen", "127.0.0.1:0"], flags].concat())
}

/// A test-identity node serving the operations service, with `extra` flags, and the
/// service's address.
pub(crate) fn operations_daemon(extra: &[&str]) -> (Daemon, String) {
    let (mut d, _) = test_daemon(&[&["--operations", "127.0.0.1:0"][..], extra].concat());
    let ops = d.wait("listening", is("listening"))["operations"]
        .as_str()
        .expect("operations")
        .to_owned();
    (d, ops)
}

/// Node A with `a_extra` flags, its address, and node B connected to it.
pub(crate) fn connected_pair(a_extra: &[&str]) -> (Daemon, String, Daemon) {
    let (a, a_addr) = test_daemon(a_extra);
    let (mut b, _) = test_daemon(&["--peer", &a_addr]);
    b.wait("connected", is("connected"));
    (a, a_addr, b)
}

pub(crate) fn signal(pid: &str, sig: &str) {
    let st = Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {sig} {pid}");
}

/// GET `path` from `addr` over HTTP/1.1: (status, body).
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the operations service");
    s.set_read_timeout(Some(EVENT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// The value of the sample `name` (with its labels, if any) in a metrics exposition.
pub(crate) fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `fabric-gossip node --config core`, with the caller's log settings left out.
pub(crate) fn node_with_config(core: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["node", "--config", core.to_str().expect("utf-8")])
        .env_remove("FABRIC_LOGGING_SPEC")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `cmd` (a `node` that must not start) to its end: status 2, and `what` on stderr.
pub(crate) fn exits_2_saying(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(what), "{err}");
}

/// Its stdout, line by line.
pub(crate) type StdoutLines = std::io::Lines<BufReader<std::process::ChildStdout>>;

/// Spawns `cmd` (a `node` run), stdin and stdout piped, and reads its first line, which
/// must be the `listening` event: the process (killed when dropped), that event, and the
/// rest of its stdout (kept open so that the node can go on writing).
pub(crate) fn spawn_listening(cmd: &mut Command) -> (KillOnDrop, Value, StdoutLines) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let guard = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let first: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON");
    assert_eq!(first["event"], "listening", "{first}");
    (guard, first, lines)
}

/// The last JSON object `watch --json` printed.
pub(crate) fn last_json_line(out: &str) -> Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {out:?}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// An address nothing listens on (a port bound and released): a peer that is not there,
/// whose dials are refused.
pub(crate) fn closed_addr() -> String {
    silent_listener().1
}

/// A port free a moment ago (bound on loopback and released), for a node to bind.
pub(crate) fn free_port() -> u16 {
    silent_listener().0.local_addr().expect("addr").port()
}

/// A listener that takes connections (the kernel completes them into its backlog) and
/// never answers, and its address: a peer whose every handshake or probe hangs.
pub(crate) fn silent_listener() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}
