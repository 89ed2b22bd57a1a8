//! The core driven by the standard library alone: two nodes, each on its own thread, talk
//! over real loopback TCP, one TCP connection per stream, each Envelope framed by a 4-byte
//! big-endian length. No tokio, no gRPC: everything a driver owes the core is below.
//!
//! The run: A's first message makes A dial B (handshake); once connected both send 1,000
//! messages, which must arrive in order; A then asks B for an ack (SendWithAck), B acks only
//! if it has all 1,000, and A closes the connection and both stop. The consumer is slow on
//! purpose (a few deliveries per turn), so reading pauses and the backlog pattern is
//! exercised. Any failed check exits non-zero with the reason; an overall deadline keeps a
//! bug from hanging CI.
//!
//! Run with `cargo run -p fabric-gossip-core --example std_tcp`.

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::GossipMessage;
// No glob import: the core's `Instant` would be shadowed by (or clash with) std's.
use fabric_gossip_core::{
    Action, CloseReason, Comm, Config, DialId, Error, Event, OpId, Output, RemotePeer,
    SignedMessage, StdClock, StreamEnd, StreamId, SubscriptionId, TestOnlyHmacSecurity, WriteKind,
    data_message, data_payload,
};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

const MESSAGES: u64 = 1_000;
/// The whole run must finish within this, or the example fails (it takes well under 1 s).
const DEADLINE: Duration = Duration::from_secs(30);
/// Deliveries the application takes per turn: slower than the network, so that reading pauses.
const CONSUME_PER_TURN: usize = 4;
/// Inputs waiting for a node's loop. Bounded, so a fast remote blocks its reader thread
/// (and then TCP) instead of growing memory.
const INPUT_QUEUE: usize = 64;
/// How long a closed stream's reader waits for the remote to end its side.
const LINGER: Duration = Duration::from_secs(2);

// ------------------------------------------------------------------------------- time

// ---------------------------------------------------------------------------- framing

/// Writes one frame: the length, then the encoded Envelope, in one `write_all`.
fn write_frame(w: &mut impl Write, envelope: &[u8]) -> io::Result<()> {
    let len = u32::try_from(envelope.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "envelope over 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + envelope.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(envelope);
    w.write_all(&buf)
}

/// Reads one frame; `None` when the remote closed cleanly between frames. A length over
/// `max` is refused before allocating, and the buffer only grows with bytes that arrive.
fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Bytes>> {
    let mut len = [0u8; 4];
    loop {
        match r.read(&mut len[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    r.read_exact(&mut len[1..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = Vec::new();
    r.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(Bytes::from(buf)))
}

// ------------------------------------------------------------------- the I/O threads

/// What the I/O threads tell a node's loop. The loop is the only place the core is touched.
enum Input {
    Accepted(TcpStream),
    Dialed(DialId, io::Result<TcpStream>),
    Frame(StreamId, Bytes),
    Ended(StreamId, StreamEnd),
    Sent(StreamId),
    WriteFailed(StreamId, String),
}

/// Lets the loop stop a reader thread between frames (`PauseRead`) or for good (close).
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (paused, closed)
    cv: Condvar,
}

impl Gate {
    fn set(&self, paused: bool, closed: bool) {
        *self.state.lock().unwrap() = (paused, closed);
        self.cv.notify_all();
    }
    /// Waits while paused; false once closed.
    fn wait_open(&self) -> bool {
        let mut s = self.state.lock().unwrap();
        while s.0 && !s.1 {
            s = self.cv.wait(s).unwrap();
        }
        !s.1
    }
}

/// Reads frames until the remote ends the stream; stops reading while the gate is paused,
/// which is what makes TCP push back on a sender we cannot keep up with.
fn reader(id: StreamId, sock: TcpStream, gate: Arc<Gate>, max: usize, tx: SyncSender<Input>) {
    let mut r = io::BufReader::new(sock);
    while gate.wait_open() {
        let input = match read_frame(&mut r, max) {
            Ok(Some(frame)) => Input::Frame(id, frame),
            Ok(None) => Input::Ended(id, StreamEnd::Finished),
            Err(e) => Input::Ended(id, StreamEnd::Error(e.to_string())),
        };
        let last = !matches!(input, Input::Frame(..));
        if tx.send(input).is_err() || last {
            return;
        }
    }
    // Closed by the loop: read to the remote's end (or LINGER's time-out) so that the
    // socket closes with nothing unread, a FIN and not a reset.
    let _ = io::copy(&mut r, &mut io::sink());
}

/// Writes what the core handed out, in order, and confirms each message written so the core
/// can hand out more (its write window). Ends the stream (FIN) when the loop drops its sender.
fn writer(
    id: StreamId,
    mut sock: TcpStream,
    rx: Receiver<(Bytes, WriteKind)>,
    tx: SyncSender<Input>,
) {
    for (envelope, kind) in rx {
        // The handshake's ConnEstablish is outside the write window: confirming it would
        // return credit the core never lent.
        let report = match write_frame(&mut sock, &envelope) {
            Ok(()) if kind == WriteKind::Handshake => None,
            Ok(()) => Some(Input::Sent(id)),
            Err(e) => Some(Input::WriteFailed(id, e.to_string())),
        };
        let failed = matches!(report, Some(Input::WriteFailed(..)));
        if report.is_some_and(|r| tx.send(r).is_err()) || failed {
            return;
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------------- the node

/// One stream as the driver sees it: a TCP connection with its two threads.
struct Conn {
    sock: TcpStream,
    to_writer: Sender<(Bytes, WriteKind)>,
    gate: Arc<Gate>,
    paused: bool,
    /// Frames read but not yet handed to the core, oldest first (see `feed_backlog`).
    backlog: VecDeque<Bytes>,
    /// How the stream ended, held until the frames read before the end are fed.
    end: Option<StreamEnd>,
    reader_stopped: bool,
}

impl Conn {
    /// The reader may read on only while the core wants frames AND the backlog is empty:
    /// resuming it while frames still wait here would let the backlog grow without bound.
    fn sync_gate(&mut self) {
        let stop = self.paused || !self.backlog.is_empty();
        if stop != self.reader_stopped {
            self.reader_stopped = stop;
            self.gate.set(stop, false);
        }
    }
}

struct Node {
    name: &'static str,
    comm: Comm<TestOnlyHmacSecurity>,
    clock: StdClock,
    tx: SyncSender<Input>,
    /// Sockets of dials that have not opened their stream yet.
    dials: HashMap<DialId, TcpStream>,
    conns: HashMap<StreamId, Conn>,
    max_backlog: usize,
}

impl Node {
    /// Carries out one action. Everything the core wants done on the network comes here.
    fn execute(&mut self, action: Action) {
        let now = self.clock.now();
        match action {
            // A dial may take seconds: never block the loop on it. The core's own timer
            // decides when it has taken too long (and then says `CloseDial`); the socket's
            // timeout is longer, only so that the thread ends, so no race decides the error.
            Action::Dial { dial, endpoint } => {
                let (tx, timeout) = (self.tx.clone(), 2 * self.comm.config().dial_timeout);
                thread::spawn(move || {
                    let sock = endpoint
                        .to_socket_addrs()
                        .and_then(|mut a| a.next().ok_or(io::ErrorKind::NotFound.into()))
                        .and_then(|addr| TcpStream::connect_timeout(&addr, timeout));
                    let _ = tx.send(Input::Dialed(dial, sock));
                });
            }
            // gRPC's Ping asks "is a gossip server listening there?": a connected TCP
            // socket already answered that, so the ping succeeds at once.
            Action::Ping { dial } => {
                let _ = self.comm.handle_ping_result(now, dial, Ok(()));
            }
            // One stream per dial: the dial's socket becomes the stream.
            Action::OpenStream { dial, stream } => {
                let sock = self.dials.remove(&dial).ok_or("dial is gone");
                self.start_stream(stream, sock);
            }
            Action::Write {
                stream,
                envelope,
                kind,
            } => {
                if let Some(c) = self.conns.get(&stream)
                    && c.to_writer.send((envelope, kind)).is_err()
                {
                    let _ = self
                        .comm
                        .handle_write_failed(now, stream, "writer gone".into());
                }
            }
            Action::PauseRead { stream } | Action::ResumeRead { stream } => {
                if let Some(c) = self.conns.get_mut(&stream) {
                    c.paused = matches!(action, Action::PauseRead { .. });
                    c.sync_gate();
                }
            }
            // Dropping the writer's sender flushes what is queued, then sends FIN; the
            // reader, told by its gate, reads on and discards until the remote's FIN (see
            // `reader`), for at most LINGER. Shutting our read side down instead would close
            // the socket with bytes unread, which makes the kernel reset the connection: the
            // remote would see an error where we ended cleanly (a third driver's trial saw
            // it warn that we had refused it). (This framing has no way to carry `error` to
            // the remote; gRPC would end the RPC with it as the status.)
            Action::CloseStream { stream, error: _ } => {
                if let Some(c) = self.conns.remove(&stream) {
                    c.gate.set(false, true);
                    let _ = c.sock.set_read_timeout(Some(LINGER));
                }
            }
            Action::CloseDial { dial } => {
                self.dials.remove(&dial);
            }
        }
    }

    /// Makes `sock` the stream `id`, with a reader and a writer thread; without a socket
    /// (or one that cannot be shared by the two threads) the stream ends at once, saying why.
    fn start_stream(&mut self, id: StreamId, sock: Result<TcpStream, &str>) {
        let threads = sock.and_then(|s| match (s.try_clone(), s.try_clone()) {
            (Ok(r), Ok(w)) => Ok((s, r, w)),
            _ => Err("cannot clone socket"),
        });
        let (sock, r, w) = match threads {
            Ok(t) => t,
            Err(why) => {
                let end = StreamEnd::Error(why.into());
                let _ = self.comm.handle_stream_closed(self.clock.now(), id, end);
                return;
            }
        };
        let _ = sock.set_nodelay(true); // small frames must not wait for Nagle
        let gate = Arc::new(Gate::default());
        let (to_writer, from_loop) = mpsc::channel(); // bounded by the core's write window
        let max = self.comm.config().max_message_size;
        let (g, tx) = (gate.clone(), self.tx.clone());
        thread::spawn(move || reader(id, r, g, max, tx));
        let tx = self.tx.clone();
        thread::spawn(move || writer(id, w, from_loop, tx));
        let conn = Conn {
            sock,
            to_writer,
            gate,
            paused: false,
            backlog: VecDeque::new(),
            end: None,
            reader_stopped: false,
        };
        self.conns.insert(id, conn);
    }

    /// Hands one input to the core. `Err(UnknownHandle)` only means the core closed that
    /// handle meanwhile (a race with a close), so it is ignored.
    fn handle(&mut self, input: Input) {
        let now = self.clock.now();
        match input {
            // A connection is a stream at once. Fine here, where nobody probes: a remote's
            // probe (dial, Ping, hang up) would count as a failed handshake. A driver whose
            // peers probe accepts the stream when its first frame arrives instead.
            Input::Accepted(sock) => {
                let addr = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                if let Ok(id) = self.comm.accept_stream(now, &addr, None) {
                    self.start_stream(id, Ok(sock));
                }
            }
            Input::Dialed(dial, Ok(sock)) => {
                if self.comm.handle_dial_result(now, dial, Ok(None)).is_ok() {
                    self.dials.insert(dial, sock);
                }
            }
            Input::Dialed(dial, Err(e)) => {
                let _ = self.comm.handle_dial_result(now, dial, Err(e.to_string()));
            }
            // Frames queue behind any backlog, so they reach the core in the order read.
            Input::Frame(id, frame) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.backlog.push_back(frame);
                    self.max_backlog = self.max_backlog.max(c.backlog.len());
                }
            }
            // The end, too, goes behind the frames read before it.
            Input::Ended(id, end) => match self.conns.get_mut(&id) {
                Some(c) if !c.backlog.is_empty() => c.end = Some(end),
                _ => {
                    let _ = self.comm.handle_stream_closed(now, id, end);
                }
            },
            Input::Sent(id) => {
                let _ = self.comm.handle_sent(now, id, 1);
            }
            Input::WriteFailed(id, why) => {
                let _ = self.comm.handle_write_failed(now, id, why);
            }
        }
    }

    /// The pause/backlog pattern: while a stream is paused its frames wait here. Feed ONE,
    /// then carry out the actions it caused (a `PauseRead` among them) before the next, so
    /// a paused stream is never fed. Feeding a whole backlog at once would overflow the
    /// subscription: past `recv_buffer_size` the core drops and only counts.
    fn feed_backlog(&mut self) -> bool {
        let mut fed = false;
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            while let Some(c) = self.conns.get_mut(&id)
                && !c.paused
                && let Some(frame) = c.backlog.pop_front()
            {
                let _ = self.comm.handle_envelope(self.clock.now(), id, frame);
                fed = true;
                while let Some(a) = self.comm.poll_action() {
                    self.execute(a);
                }
            }
            if let Some(c) = self.conns.get_mut(&id) {
                c.sync_gate();
                if c.backlog.is_empty()
                    && let Some(end) = c.end.take()
                {
                    let _ = self.comm.handle_stream_closed(self.clock.now(), id, end);
                    fed = true;
                }
            }
        }
        fed
    }
}

// ------------------------------------------------------------------ the application

/// What each node's application does and checks.
struct App {
    peer: RemotePeer,
    /// A opens the connection, asks for the ack and closes; B answers.
    initiator: bool,
    connected: bool,
    next_send: u64,
    next_expected: u64,
    /// An ack the core could not queue yet (its wait queue was full): retried each turn.
    pending_ack: Option<(StreamId, u64, Option<String>)>,
    ack_op: Option<OpId>,
    acked: bool,
    closed: bool,
    stopped: bool,
}

fn data(seq: u64) -> GossipMessage {
    data_message(seq, format!("message {seq}"))
}

impl App {
    /// One turn of application work: send what the core takes, consume a few deliveries.
    fn turn(&mut self, n: &mut Node, sub: SubscriptionId) -> Result<(), String> {
        let now = n.clock.now();
        // `send_wait` never drops: WouldBlock means "full, try again next turn".
        while (self.initiator || self.connected) && self.next_send <= MESSAGES {
            let msg = SignedMessage::noop(data(self.next_send));
            match n.comm.send_wait(now, &msg, &self.peer) {
                Ok(()) => self.next_send += 1,
                Err(Error::WouldBlock) => break,
                Err(e) => return Err(format!("{}: send_wait failed: {e}", n.name)),
            }
        }
        for _ in 0..CONSUME_PER_TURN {
            let Some(m) = n.comm.poll_delivery(sub) else {
                break;
            };
            let seq = data_payload(&m.message).map(|(seq, _)| seq);
            if m.message.nonce != 0 {
                // An ack request: succeed only if everything before it arrived.
                let err = (self.next_expected != MESSAGES + 1)
                    .then(|| format!("got {} of {MESSAGES}", self.next_expected - 1));
                self.pending_ack = Some((m.conn, m.message.nonce, err));
            } else if seq != Some(self.next_expected) {
                return Err(format!(
                    "{}: got {seq:?} where {} was expected",
                    n.name, self.next_expected
                ));
            } else {
                self.next_expected += 1;
            }
        }
        if let Some((conn, nonce, err)) = self.pending_ack.take() {
            match n.comm.ack(now, conn, nonce, err.as_deref()) {
                Ok(()) => {}
                Err(Error::WouldBlock) => {
                    self.pending_ack = Some((conn, nonce, err));
                }
                Err(e) => return Err(format!("{}: ack failed: {e}", n.name)),
            }
        }
        // A asks for the ack once all its messages are queued and its wait queue is empty
        // (`send_with_ack` waits for room too, and would fail with WouldBlock).
        let waiting = n
            .comm
            .connection(&self.peer.pki_id)
            .and_then(|c| n.comm.send_queue_len(c))
            .map(|q| q.waiting);
        if self.initiator
            && self.ack_op.is_none()
            && self.next_send > MESSAGES
            && waiting == Some(0)
        {
            let (msg, timeout) = (data(MESSAGES + 1), Duration::from_secs(5));
            let peers = std::slice::from_ref(&self.peer);
            let op = n.comm.send_with_ack(now, msg, timeout, 1, peers);
            self.ack_op = Some(op.map_err(|e| format!("send_with_ack failed: {e}"))?);
        }
        // A closes once the ack came back and everything from B arrived.
        if self.initiator && self.acked && self.next_expected > MESSAGES && !self.closed {
            self.closed = true;
            n.comm.close_conn(now, &self.peer.pki_id);
        }
        Ok(())
    }

    fn on_event(&mut self, n: &mut Node, event: Event) -> Result<(), String> {
        let name = n.name;
        match event {
            Event::Connected { info, inbound, .. } => {
                println!("{name}: connected to {} (inbound: {inbound})", info.id);
                self.connected = true;
            }
            Event::SendWithAckDone { op, results } if Some(op) == self.ack_op => {
                match results.as_slice() {
                    [r] if r.result.is_ok() => self.acked = true,
                    other => return Err(format!("{name}: SendWithAck failed: {other:?}")),
                }
                println!("{name}: SendWithAck acked by {}", self.peer.pki_id);
            }
            Event::Disconnected { reason, .. } => {
                let expected = if self.initiator {
                    CloseReason::Local
                } else {
                    CloseReason::RemoteClosed
                };
                if reason != expected || self.next_expected <= MESSAGES {
                    return Err(format!("{name}: early or odd disconnect: {reason:?}"));
                }
                println!("{name}: disconnected ({reason:?}); stopping");
                n.comm.stop(n.clock.now());
            }
            Event::Stopped => self.stopped = true,
            Event::DeliveryReady(_) => {} // the application polls every turn anyway
            other => return Err(format!("{name}: unexpected event {other:?}")),
        }
        Ok(())
    }
}

// --------------------------------------------------------------------- the loop

/// The loop's one rule, after every input: drain the core (actions, events, backlog) until
/// a whole pass produced nothing, because each of them can queue new work for the others
/// (polling a delivery can queue a `ResumeRead`). Returns whether an event came, which may
/// give the application work (connected: start sending; acked: close).
fn drain(n: &mut Node, app: &mut App) -> Result<bool, String> {
    let mut events = false;
    loop {
        let mut progress = false;
        // The core's one output: actions and events in order, then the next deadline.
        loop {
            match n.comm.poll_output() {
                Output::Action(a) => {
                    n.execute(a);
                    progress = true;
                }
                Output::Event(e) => {
                    app.on_event(n, e)?;
                    (progress, events) = (true, true);
                }
                Output::Timeout(_) => break,
            }
        }
        progress |= n.feed_backlog();
        if !progress {
            return Ok(events);
        }
    }
}

/// One node's life: the application's turn, a drain, a wait for the next input or
/// deadline, then every input that came, each drained before the next.
fn run(
    mut n: Node,
    mut app: App,
    rx: Receiver<Input>,
    end: std::time::Instant,
) -> Result<String, String> {
    let sub = n
        .comm
        .subscribe(Box::new(|_| true))
        .map_err(|e| e.to_string())?;
    while !app.stopped {
        app.turn(&mut n, sub)?;
        // An event may give the application work (connected: start sending; acked: close).
        let events = drain(&mut n, &mut app)?;
        if app.stopped {
            break;
        }
        // Wait for the next input or the core's next deadline; not at all if the application
        // has work (deliveries waiting, an ack to retry, an event to act on).
        let due = n
            .comm
            .poll_timeout()
            .map(|t| n.clock.to_std(t))
            .unwrap_or(end)
            .min(end);
        let busy = events || n.comm.delivery_queue_len(sub) > 0 || app.pending_ack.is_some();
        let wait = if busy {
            Duration::ZERO
        } else {
            due.saturating_duration_since(std::time::Instant::now())
        };
        match rx.recv_timeout(wait) {
            Ok(input) => n.handle(input),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("input channel closed".into()),
        }
        // Take what else has arrived too, at most one queue's worth (a reader that keeps
        // producing must not keep us here while the backlog grows), each after draining
        // what the one before caused, then the timers.
        for _ in 0..INPUT_QUEUE {
            match rx.try_recv() {
                Ok(input) => {
                    drain(&mut n, &mut app)?;
                    n.handle(input);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        drain(&mut n, &mut app)?;
        if n.comm.poll_timeout().is_some_and(|t| t <= n.clock.now()) {
            n.comm.handle_timeout(n.clock.now());
        }
        if std::time::Instant::now() >= end {
            let streams: Vec<String> = n
                .conns
                .iter()
                .map(|(id, c)| {
                    let q = n.comm.send_queue_len(*id);
                    format!(
                        "{id}: paused {} backlog {} queues {q:?}",
                        c.paused,
                        c.backlog.len()
                    )
                })
                .collect();
            return Err(format!(
                "{}: deadline passed; sent up to {}, received up to {}, ack op {:?} acked {}, streams {streams:?}, {:?}",
                n.name,
                app.next_send - 1,
                app.next_expected - 1,
                app.ack_op,
                app.acked,
                n.comm.stats()
            ));
        }
    }
    let s = n.comm.stats();
    if s.dropped_subscription_overflow + s.dropped_overflow > 0 {
        return Err(format!("{}: messages dropped: {s:?}", n.name));
    }
    Ok(format!(
        "{}: sent {} received {} in order, read pauses {}, largest backlog {}",
        n.name,
        s.sent,
        app.next_expected - 1,
        s.read_pauses,
        n.max_backlog
    ))
}

fn main() {
    let started = std::time::Instant::now();
    let end = started + DEADLINE;
    let clock = StdClock::start();
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    // Fabric's test-only provider: PKI-ID = identity = endpoint, which we learn from the OS.
    let endpoints: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let (done_tx, done_rx) = mpsc::channel();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = mpsc::sync_channel(INPUT_QUEUE);
        let acceptor = tx.clone();
        // Not joined: it blocks in accept until the process exits.
        thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                if acceptor.send(Input::Accepted(sock)).is_err() {
                    return;
                }
            }
        });
        let me = endpoints[i].clone();
        let other = endpoints[1 - i].clone();
        let done = done_tx.clone();
        thread::spawn(move || {
            let security = TestOnlyHmacSecurity::new(me.as_str());
            let comm =
                Comm::new(Config::default(), security, clock.now()).expect("a valid identity");
            let name = ["A", "B"][i];
            let node = Node {
                name,
                comm,
                clock,
                tx,
                dials: HashMap::new(),
                conns: HashMap::new(),
                max_backlog: 0,
            };
            let app = App {
                peer: RemotePeer::new(other.clone(), other.as_str()),
                initiator: i == 0,
                connected: false,
                next_send: 1,
                next_expected: 1,
                pending_ack: None,
                ack_op: None,
                acked: false,
                closed: false,
                stopped: false,
            };
            let _ = done.send(run(node, app, rx, end));
        });
    }
    // Both nodes must report success before the deadline; a hang is a failure too.
    let mut failures = Vec::new();
    for _ in 0..2 {
        // (A second of grace past the deadline, for a stuck node's own report of its state.)
        let grace =
            (end + Duration::from_secs(1)).saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(grace) {
            Ok(Ok(summary)) => println!("{summary}"),
            Ok(Err(why)) => failures.push(why),
            Err(_) => failures.push(format!("a node did not finish within {DEADLINE:?}")),
        }
    }
    if !failures.is_empty() {
        eprintln!("std_tcp FAILED:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    println!(
        "ok: handshake, {MESSAGES} messages each way in order, SendWithAck, close and stop in {:?}",
        started.elapsed()
    );
}
