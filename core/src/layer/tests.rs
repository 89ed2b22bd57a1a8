//! The stack's routing, with a small layer on two cores wired back to back.

use super::*;
use crate::comm::RemotePeer;
use crate::message::SignedMessage;
use crate::proto::gossip::GossipMessage;
use crate::{Config, StreamId, TestOnlyHmacSecurity, WriteKind};
use bytes::Bytes;
use core::time::Duration;
use std::collections::VecDeque;

const A: &str = "127.0.0.1:7051";
const B: &str = "127.0.0.1:7052";

fn data(text: &str) -> GossipMessage {
    crate::data_message(1, Bytes::copy_from_slice(text.as_bytes()))
}

fn text(m: &ReceivedMessage) -> String {
    crate::data_payload(m.message())
        .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
        .unwrap_or_default()
}

#[derive(Debug, PartialEq)]
enum Seen {
    Got(String),
    Tick,
}

/// Takes messages that start with "layer:", answers "layer:ping" with "layer:pong",
/// records every core event, and ticks once a second after start.
#[derive(Default)]
struct Echo {
    sub: Option<SubscriptionId>,
    comm_events: Vec<String>,
    deadline: Option<Instant>,
    out: VecDeque<Seen>,
}

impl Layer<TestOnlyHmacSecurity> for Echo {
    type Event = Seen;

    fn start(&mut self, now: Instant, comm: &mut Comm<TestOnlyHmacSecurity>) {
        let sub = comm.subscribe(Box::new(|m| text(m).starts_with("layer:")));
        self.sub = sub.ok();
        self.deadline = Some(now + Duration::from_secs(1));
    }

    fn handle_comm_event(
        &mut self,
        _now: Instant,
        _comm: &mut Comm<TestOnlyHmacSecurity>,
        event: &Event,
    ) {
        self.comm_events.push(format!("{event:?}"));
    }

    fn owns_subscription(&self, sub: SubscriptionId) -> bool {
        self.sub == Some(sub)
    }

    fn handle_message(
        &mut self,
        now: Instant,
        comm: &mut Comm<TestOnlyHmacSecurity>,
        msg: ReceivedMessage,
    ) {
        let t = text(&msg);
        if t == "layer:ping" {
            comm.respond(now, msg.conn, data("layer:pong")).unwrap();
        }
        self.out.push_back(Seen::Got(t));
    }

    fn handle_timeout(&mut self, now: Instant, _comm: &mut Comm<TestOnlyHmacSecurity>) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.out.push_back(Seen::Tick);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn poll_event(&mut self) -> Option<Seen> {
        self.out.pop_front()
    }
}

/// The `Echo` a stack runs, bare or hosted.
trait HoldsEcho: Layer<TestOnlyHmacSecurity, Event = Seen> {
    fn echo(&self) -> &Echo;
}

impl HoldsEcho for Echo {
    fn echo(&self) -> &Echo {
        self
    }
}

impl HoldsEcho for HostedLayer<TestOnlyHmacSecurity, Seen> {
    fn echo(&self) -> &Echo {
        self.get::<Echo>().expect("an Echo is hosted")
    }
}

/// An `Echo` behind the type-erasing host the drivers run layers in.
fn hosted_echo() -> HostedLayer<TestOnlyHmacSecurity, Seen> {
    HostedLayer::new(Echo::default(), |e| e)
}

/// Two stacks and the streams between them; every output is kept per node.
struct Pair<L: Layer<TestOnlyHmacSecurity> = Echo> {
    nodes: [Stack<TestOnlyHmacSecurity, L>; 2],
    links: Vec<((usize, StreamId), (usize, StreamId))>,
    wire: VecDeque<(usize, StreamId, Bytes)>,
    outputs: [Vec<StackOutput<L::Event>>; 2],
    now: Instant,
}

impl Pair {
    fn new() -> Self {
        Pair::with(Echo::default)
    }
}

impl<L: Layer<TestOnlyHmacSecurity>> Pair<L> {
    fn with(layer: fn() -> L) -> Self {
        let now = Instant::from_unix_secs(1_700_000_000);
        let mk = |ep: &str| {
            let comm = Comm::new(Config::default(), TestOnlyHmacSecurity::new(ep), now).unwrap();
            Stack::new(comm, layer())
        };
        Pair {
            nodes: [mk(A), mk(B)],
            links: Vec::new(),
            wire: VecDeque::new(),
            outputs: [Vec::new(), Vec::new()],
            now,
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let out = self.nodes[i].poll_output();
            let now = self.now;
            match &out {
                StackOutput::Action(Action::Dial { dial, .. }) => {
                    let c = self.nodes[i].comm_mut();
                    c.handle_dial_result(now, *dial, Ok(None)).unwrap();
                }
                StackOutput::Action(Action::Ping { dial }) => {
                    let c = self.nodes[i].comm_mut();
                    c.handle_ping_result(now, *dial, Ok(())).unwrap();
                }
                StackOutput::Action(Action::OpenStream { stream, .. }) => {
                    let j = 1 - i;
                    let from = [A, B][i];
                    let remote = self.nodes[j].comm_mut().accept_stream(now, from, None);
                    let remote = remote.unwrap();
                    self.links.push(((i, *stream), (j, remote)));
                    self.links.push(((j, remote), (i, *stream)));
                }
                StackOutput::Action(Action::Write {
                    stream,
                    envelope,
                    kind,
                }) => {
                    if let Some((_, to)) = self.links.iter().find(|(f, _)| *f == (i, *stream)) {
                        self.wire.push_back((to.0, to.1, envelope.clone()));
                    }
                    if *kind == WriteKind::Message {
                        self.nodes[i]
                            .comm_mut()
                            .handle_sent(now, *stream, 1)
                            .unwrap();
                    }
                }
                StackOutput::Timeout(_) => {
                    self.outputs[i].push(out);
                    return;
                }
                _ => {}
            }
            self.outputs[i].push(out);
        }
    }

    /// Drains both and moves what was written until the network is quiet.
    fn run(&mut self) {
        for _ in 0..50 {
            self.drain(0);
            self.drain(1);
            if self.wire.is_empty() {
                return;
            }
            while let Some((j, s, b)) = self.wire.pop_front() {
                let _ = self.nodes[j].comm_mut().handle_envelope(self.now, s, b);
            }
        }
        panic!("the network did not settle");
    }
}

#[test]
fn the_layer_gets_its_messages_and_the_application_the_rest() {
    layer_and_application_share_the_messages(Pair::new());
    layer_and_application_share_the_messages(Pair::with(hosted_echo));
}

fn layer_and_application_share_the_messages<L: HoldsEcho>(mut p: Pair<L>) {
    let app_sub = p.nodes[1].comm_mut().subscribe(Box::new(|_| true)).unwrap();
    let to_b = [RemotePeer::new(B, B)];
    for t in ["layer:ping", "app:hello"] {
        let now = p.now;
        let msg = SignedMessage::noop(data(t));
        p.nodes[0].comm_mut().send(now, &msg, &to_b).unwrap();
    }
    p.run();
    let layer_sub = p.nodes[1].layer().echo().sub.unwrap();
    let b_out = &p.outputs[1];
    assert!(
        b_out
            .iter()
            .any(|o| matches!(o, StackOutput::Layer(Seen::Got(t)) if t == "layer:ping")),
        "B's layer got the ping"
    );
    assert!(
        p.outputs[0]
            .iter()
            .any(|o| matches!(o, StackOutput::Layer(Seen::Got(t)) if t == "layer:pong")),
        "the layer's response reached A's layer"
    );
    assert!(
        !b_out
            .iter()
            .any(|o| matches!(o, StackOutput::Event(Event::DeliveryReady(s)) if *s == layer_sub)),
        "the layer's deliveries are not the application's"
    );
    assert!(
        b_out
            .iter()
            .any(|o| matches!(o, StackOutput::Event(Event::DeliveryReady(s)) if *s == app_sub))
    );
    // The application's subscription takes everything, the layer's messages too.
    let got: Vec<_> = core::iter::from_fn(|| p.nodes[1].poll_delivery(app_sub))
        .map(|m| text(&m))
        .collect();
    assert_eq!(got, vec!["layer:ping", "app:hello"]);
}

#[test]
fn the_layer_sees_every_core_event_before_the_application() {
    layer_sees_the_core_events(Pair::new());
    layer_sees_the_core_events(Pair::with(hosted_echo));
}

fn layer_sees_the_core_events<L: HoldsEcho>(mut p: Pair<L>) {
    let now = p.now;
    let msg = SignedMessage::noop(data("app:x"));
    p.nodes[0]
        .comm_mut()
        .send(now, &msg, &[RemotePeer::new(B, B)])
        .unwrap();
    p.run();
    for i in 0..2 {
        let app: Vec<String> = p.outputs[i]
            .iter()
            .filter_map(|o| match o {
                StackOutput::Event(e) => Some(format!("{e:?}")),
                _ => None,
            })
            .collect();
        assert!(app.iter().any(|e| e.starts_with("Connected")), "node {i}");
        // The layer owns no DeliveryReady here, so it saw exactly what the app saw.
        assert_eq!(p.nodes[i].layer().echo().comm_events, app, "node {i}");
    }
}

/// The empty layer is the core alone: every delivery is the application's, and the
/// only deadlines are the core's.
#[test]
fn the_empty_layer_leaves_every_message_to_the_application_and_sets_no_deadline() {
    let mut p = Pair::with(|| ());
    let app_sub = p.nodes[1].comm_mut().subscribe(Box::new(|_| true)).unwrap();
    let now = p.now;
    let msg = SignedMessage::noop(data("layer:ping"));
    p.nodes[0]
        .comm_mut()
        .send(now, &msg, &[RemotePeer::new(B, B)])
        .unwrap();
    p.run();
    let got: Vec<_> = core::iter::from_fn(|| p.nodes[1].poll_delivery(app_sub))
        .map(|m| text(&m))
        .collect();
    assert_eq!(got, ["layer:ping"]);
    let Some(StackOutput::Timeout(stack)) = p.outputs[1].last() else {
        panic!("a drain ends with the time-out");
    };
    let Output::Timeout(core) = p.nodes[1].comm_mut().poll_output() else {
        panic!("the core has nothing else to say");
    };
    assert_eq!(*stack, core);
}

#[test]
fn the_timeout_is_the_earlier_deadline_and_ends_every_drain() {
    let mut p = Pair::new();
    p.drain(0);
    let start = p.now;
    let layer_deadline = start + Duration::from_secs(1);
    assert!(matches!(
        p.outputs[0].last(),
        Some(StackOutput::Timeout(Some(t))) if *t == layer_deadline
    ));
    // A pending dial has a 3 s deadline; the layer's 1 s one is still the earlier.
    let now = p.now;
    let msg = SignedMessage::noop(data("app:x"));
    p.nodes[0]
        .comm_mut()
        .send(now, &msg, &[RemotePeer::new("nowhere:1", "nowhere:1")])
        .unwrap();
    let out = core::iter::from_fn(|| match p.nodes[0].poll_output() {
        StackOutput::Timeout(t) => {
            assert_eq!(t, Some(layer_deadline));
            None
        }
        other => Some(other),
    })
    .count();
    assert_eq!(out, 1, "the Dial, then the time-out");
    p.nodes[0].handle_timeout(layer_deadline);
    assert!(matches!(
        p.nodes[0].poll_output(),
        StackOutput::Layer(Seen::Tick)
    ));
    match p.nodes[0].poll_output() {
        StackOutput::Timeout(Some(t)) => assert_eq!(t, start + Duration::from_secs(3)),
        other => panic!("expected the dial's deadline, got {other:?}"),
    }
}

/// A driver that stops the core and hands the stack a time-out before it drains (a loop
/// that takes its inputs, then the timers, then drains, as `examples/std_tcp.rs` does):
/// the layer got the time-out and acted on a stopped core. The membership layer then
/// heartbeated into it, each refused call counted in `comm_errors`, and declared members
/// dead after the node's own stop (a third driver's trial, 2026-12-08). Now a stopped
/// core ends the layer's time too, and its deadline no longer wakes the driver.
#[test]
fn a_stopped_core_ends_the_layers_timeouts_and_deadline() {
    let mut p = Pair::new();
    p.drain(0);
    let tick = p.now + Duration::from_secs(1);
    let now = p.now;
    p.nodes[0].comm_mut().stop(now);
    p.outputs[0].clear();
    p.drain(0);
    assert!(
        matches!(p.outputs[0].last(), Some(StackOutput::Timeout(None))),
        "the layer's 1 s deadline still wakes the driver: {:?}",
        p.outputs[0].last()
    );
    assert_eq!(p.nodes[0].poll_timeout(), None);
    p.nodes[0].handle_timeout(tick);
    p.outputs[0].clear();
    p.drain(0);
    assert!(
        !p.outputs[0]
            .iter()
            .any(|o| matches!(o, StackOutput::Layer(Seen::Tick))),
        "{:?}",
        p.outputs[0]
    );
}

#[test]
fn a_hosted_layer_is_the_boxed_layer_with_its_events_erased_and_none_is_the_core() {
    let now = Instant::from_unix_secs(1_700_000_000);
    let comm = || Comm::new(Config::default(), TestOnlyHmacSecurity::new(A), now).unwrap();
    let hosted = HostedLayer::new(Echo::default(), |e: Seen| format!("{e:?}"));
    let mut stack = Stack::new(comm(), hosted);
    assert!(stack.layer().is_some());
    assert!(
        stack.layer().get::<Echo>().unwrap().sub.is_some(),
        "started"
    );
    assert!(stack.layer().get::<()>().is_none(), "not a ()");
    let tick = now + Duration::from_secs(1);
    assert!(matches!(stack.poll_output(), StackOutput::Timeout(Some(t)) if t == tick));
    // The layer's deadline, which the core's own leaves out.
    assert_eq!(stack.poll_timeout(), Some(tick));
    assert_ne!(stack.comm_mut().poll_timeout(), Some(tick));
    stack.handle_timeout(tick);
    assert!(matches!(stack.poll_output(), StackOutput::Layer(e) if e == "Tick"));
    stack.with_layer(|l, _| l.get_mut::<Echo>().unwrap().deadline = None);
    assert!(matches!(stack.poll_output(), StackOutput::Timeout(None)));

    let mut bare: Stack<_, HostedLayer<_, String>> = Stack::new(comm(), HostedLayer::none());
    assert!(!bare.layer().is_some());
    assert_eq!(format!("{:?}", bare.layer()), "HostedLayer(None)");
    assert!(matches!(bare.poll_output(), StackOutput::Timeout(None)));
    stack.layer_mut().clear();
    assert!(stack.layer().get::<Echo>().is_none());
}

/// Sends "layer:alive" to `C` when its deadline comes, as the membership layer gossips
/// to a member that may have left.
struct Gossip {
    due: Option<Instant>,
}

const C: &str = "127.0.0.1:7053";
const D: &str = "127.0.0.1:7054";

impl Layer<TestOnlyHmacSecurity> for Gossip {
    type Event = ();

    fn start(&mut self, now: Instant, _comm: &mut Comm<TestOnlyHmacSecurity>) {
        self.due = Some(now);
    }

    fn handle_comm_event(&mut self, _: Instant, _: &mut Comm<TestOnlyHmacSecurity>, _: &Event) {}

    fn owns_subscription(&self, _sub: SubscriptionId) -> bool {
        false
    }

    fn handle_message(
        &mut self,
        _: Instant,
        _: &mut Comm<TestOnlyHmacSecurity>,
        _: ReceivedMessage,
    ) {
    }

    fn handle_timeout(&mut self, now: Instant, comm: &mut Comm<TestOnlyHmacSecurity>) {
        self.due = None;
        let msg = SignedMessage::noop(data("layer:alive"));
        comm.send(now, &msg, &[RemotePeer::new(C, C)]).unwrap();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

/// What a flush before stopping waits for: the application's messages, wherever they
/// wait, but not the layer's waiting for a connection attempt (which a dial's back-off to
/// a member that left would hold for seconds: a node's stop once took more than 5 s so).
#[test]
fn a_flush_waits_for_the_applications_messages_not_the_layers_waiting_for_a_dial() {
    let now = Instant::from_unix_secs(1_700_000_000);
    let comm = Comm::new(Config::default(), TestOnlyHmacSecurity::new(A), now).unwrap();
    let mut node = Stack::new(comm, Gossip { due: None });
    // The layer's deadline: it sends to C, whose dial is never answered.
    node.handle_timeout(now);
    // ... and an application call into the layer that sends, to D.
    node.with_layer(|_, c| {
        let msg = SignedMessage::noop(data("layer:request"));
        c.send(now, &msg, &[RemotePeer::new(D, D)]).unwrap();
    });
    while !matches!(node.poll_output(), StackOutput::Timeout(_)) {}
    let counts =
        |n: &Stack<TestOnlyHmacSecurity, Gossip>| (n.comm().unsent(), n.comm().unsent_to_flush());
    assert_eq!(counts(&node), (2, 0), "two attempts hold only the layer's");
    // The application sends to C: that attempt now holds one of its messages, and the
    // flush waits for the whole attempt (its messages leave in order).
    let app = SignedMessage::noop(data("app:last words"));
    node.comm_mut()
        .send(now, &app, &[RemotePeer::new(C, C)])
        .unwrap();
    assert_eq!(counts(&node), (3, 2));
    // After the application's call, the core is the application's again.
    node.comm_mut()
        .send(now, &app, &[RemotePeer::new(D, D)])
        .unwrap();
    assert_eq!(counts(&node), (4, 4));
}
