//! A dial tries again within its deadline, as grpc-go's blocking `DialContext` does under
//! Fabric's `dialTimeout` (`Config::dial_backoff`): one core driven by hand, where the
//! instants matter, and the in-memory harness for a peer that comes back.

use crate::common::one_core::*;
use fabric_gossip_core::testing::{Net, drain, ep};
use fabric_gossip_core::*;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn closes(acts: &[Action], dial: DialId) -> bool {
    acts.contains(&Action::CloseDial { dial })
}

fn dead(events: &[Event]) -> Vec<&DeadPeer> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PresumedDead(p) => Some(p),
            _ => None,
        })
        .collect()
}

/// A core with a send to REMOTE under way; returns its dial.
fn sending(config: Config) -> (Comm<TestOnlyHmacSecurity>, DialId) {
    let mut c = core(config);
    let peer = RemotePeer::new(REMOTE, REMOTE);
    c.send(now(), &SignedMessage::noop(data(1)), &[peer])
        .unwrap();
    let (acts, _) = drain(&mut c);
    let (dial, endpoint) = dial_of(&acts).expect("a dial");
    assert_eq!(endpoint, REMOTE);
    (c, dial)
}

/// Refuses `dial` at `at`; returns when the core wants to be woken next.
fn refuse(c: &mut Comm<TestOnlyHmacSecurity>, dial: DialId, at: Instant, why: &str) -> Instant {
    c.handle_dial_result(at, dial, Err(why.into())).unwrap();
    let (acts, events) = drain(c);
    assert!(acts.is_empty(), "{acts:?}");
    assert!(dead(&events).is_empty(), "{events:?}");
    c.poll_timeout().expect("a deadline")
}

/// `dial`, waiting out its back-off, did nothing and said nothing since, still wants to be
/// woken at `retry`, and then tries again.
fn still_waits(c: &mut Comm<TestOnlyHmacSecurity>, dial: DialId, retry: Instant) {
    let (acts, events) = drain(c);
    assert!(acts.is_empty() && events.is_empty(), "{acts:?} {events:?}");
    assert_eq!(c.poll_timeout(), Some(retry), "the back-off is unchanged");
    c.handle_timeout(retry);
    let (acts, _) = drain(c);
    assert_eq!(dial_of(&acts).map(|d| d.0), Some(dial));
}

/// The whole schedule of a refused peer under Fabric's defaults: the first retry 1 s after
/// the refusal, exactly; the second 1.6 s ± 20 % after the next; none after, since the
/// third would start past the 3 s deadline; the dial fails at the deadline, with the last
/// refusal, and each retry names the same handle.
#[test]
fn a_refused_dial_is_tried_again_until_its_deadline() {
    let (mut c, dial) = sending(Config::default());
    let t0 = now();
    let deadline = t0 + Duration::from_secs(3);
    let t1 = t0 + ms(2);
    let first_retry = refuse(&mut c, dial, t1, "refused 1");
    assert_eq!(first_retry, t1 + Duration::from_secs(1));
    c.handle_timeout(first_retry);
    let (acts, _) = drain(&mut c);
    assert_eq!(dial_of(&acts), Some((dial, REMOTE.to_owned())));
    assert_eq!(c.stats().dial_retries, 1);

    let t2 = first_retry + ms(5);
    let second_retry = refuse(&mut c, dial, t2, "refused 2");
    let wait = second_retry - t2;
    assert!(wait >= ms(1280) && wait <= ms(1920), "{wait:?}");
    c.handle_timeout(second_retry);
    let (acts, _) = drain(&mut c);
    assert_eq!(dial_of(&acts), Some((dial, REMOTE.to_owned())));
    assert_eq!(c.stats().dial_retries, 2);

    // The next wait (2.56 s ± 20 %) ends past the deadline: the deadline is next.
    let t3 = second_retry + ms(5);
    assert_eq!(refuse(&mut c, dial, t3, "refused 3"), deadline);
    c.handle_timeout(deadline - ms(1));
    let (acts, events) = drain(&mut c);
    assert!(acts.is_empty() && events.is_empty());
    c.handle_timeout(deadline);
    let (acts, events) = drain(&mut c);
    assert!(closes(&acts, dial), "{acts:?}");
    assert!(dial_of(&acts).is_none());
    let dead = dead(&events);
    assert_eq!(dead.len(), 1, "{events:?}");
    assert_eq!(
        dead[0].cause,
        DeadCause::Connect(HandshakeError::Dial(DialError::Failed("refused 3".into())))
    );
    assert_eq!(c.stats().dial_retries, 2);
    assert_eq!(c.stats().dropped_no_connection, 1);
    assert_eq!(c.live_counts().dials, 0);
}

/// `dial`, just dialled again, connects at `at`: Ping, stream, the peer's hello, and the
/// message the dial carries is written on the stream. Returns the stream.
fn connects_and_writes(c: &mut Comm<TestOnlyHmacSecurity>, dial: DialId, at: Instant) -> StreamId {
    c.handle_dial_result(at, dial, Ok(None)).unwrap();
    let (acts, _) = drain(c);
    assert_eq!(acts, vec![Action::Ping { dial }]);
    c.handle_ping_result(at, dial, Ok(())).unwrap();
    let (acts, _) = drain(c);
    let stream = acts
        .iter()
        .find_map(|a| match a {
            Action::OpenStream { dial: d, stream } if *d == dial => Some(*stream),
            _ => None,
        })
        .expect("a stream");
    c.handle_envelope(at, stream, hello()).unwrap();
    let (acts, events) = drain(c);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Write { stream: s, kind: WriteKind::Message, .. } if *s == stream
        )),
        "{acts:?}"
    );
    assert!(dead(&events).is_empty());
    stream
}

/// A retry that connects carries on as any dial does: Ping, stream, the message written.
#[test]
fn a_retry_that_connects_delivers_the_waiting_message() {
    let (mut c, dial) = sending(Config::default());
    let retry = refuse(&mut c, dial, now(), "refused");
    c.handle_timeout(retry);
    let (acts, _) = drain(&mut c);
    assert_eq!(dial_of(&acts).map(|d| d.0), Some(dial));
    connects_and_writes(&mut c, dial, retry);
    // The dial's deadline no longer applies once a stream carries it.
    c.handle_timeout(now() + Duration::from_secs(5));
    let (acts, events) = drain(&mut c);
    assert!(
        acts.is_empty() && dead(&events).is_empty(),
        "{acts:?} {events:?}"
    );
    assert_eq!(c.connections().len(), 1);
    assert_eq!(c.stats().dial_retries, 1);
}

/// A failure that ends the dial at once, with no retry: with `dial_backoff: None` (one
/// attempt a dial), and with the back-off when the failure is reported at the deadline
/// (no retry is due then).
#[test]
fn a_failure_without_a_back_off_or_at_the_deadline_ends_the_dial() {
    let cases = [
        (Config::default().with_dial_backoff(None), now()),
        (Config::default(), now() + Duration::from_secs(3)),
    ];
    for (config, at) in cases {
        let (mut c, dial) = sending(config);
        c.handle_dial_result(at, dial, Err("refused".into()))
            .unwrap();
        let (acts, events) = drain(&mut c);
        assert!(closes(&acts, dial), "{acts:?}");
        assert_eq!(dead(&events).len(), 1);
        assert_eq!(c.stats().dial_retries, 0);
    }
}

/// A dial that no attempt answered times out as before (`DialError::Timeout`); one whose
/// retry is still under way at the deadline reports the failure it saw last.
#[test]
fn the_deadline_reports_the_last_failure_or_a_time_out() {
    let (mut c, dial) = sending(Config::default());
    c.handle_timeout(now() + Duration::from_secs(3));
    let (acts, events) = drain(&mut c);
    assert!(closes(&acts, dial));
    assert_eq!(
        dead(&events)[0].cause,
        DeadCause::Connect(HandshakeError::Dial(DialError::Timeout))
    );

    let (mut c, dial) = sending(Config::default());
    let retry = refuse(&mut c, dial, now(), "no route to host");
    c.handle_timeout(retry);
    let (acts, _) = drain(&mut c);
    assert!(dial_of(&acts).is_some());
    // That retry hangs.
    c.handle_timeout(now() + Duration::from_secs(3));
    let (acts, events) = drain(&mut c);
    assert!(closes(&acts, dial));
    assert_eq!(
        dead(&events)[0].cause,
        DeadCause::Connect(HandshakeError::Dial(DialError::Failed(
            "no route to host".into()
        )))
    );
}

/// While a dial waits out its back-off, no attempt is under way: a result for it (a
/// driver's duplicate) is ignored, and so is a timer for a retry that no longer waits.
#[test]
fn a_result_while_waiting_to_retry_is_ignored() {
    let (mut c, dial) = sending(Config::default());
    let retry = refuse(&mut c, dial, now(), "refused");
    assert_eq!(c.handle_dial_result(now() + ms(10), dial, Ok(None)), Ok(()));
    assert_eq!(
        c.handle_dial_result(now() + ms(20), dial, Err("again".into())),
        Ok(())
    );
    still_waits(&mut c, dial, retry);
    assert_eq!(c.stats().dial_retries, 1);
}

/// `stop` during a back-off closes the dial like any other, and nothing is dialled after.
#[test]
fn stop_during_the_back_off_closes_the_dial() {
    let (mut c, dial) = sending(Config::default());
    let retry = refuse(&mut c, dial, now(), "refused");
    c.stop(now() + ms(100));
    let (acts, _) = drain(&mut c);
    assert!(closes(&acts, dial), "{acts:?}");
    c.handle_timeout(retry);
    let (acts, _) = drain(&mut c);
    assert!(acts.is_empty(), "{acts:?}");
    assert_eq!(c.live_counts().dials, 0);
}

/// `close_conn` ends connections, not a dial waiting out its back-off (Fabric's
/// `CloseConn` does not touch a `createConnection` in flight either): the dial retries at
/// its instant and the message it carries is still delivered if the peer answers.
#[test]
fn close_conn_leaves_a_dial_in_its_back_off() {
    let (mut c, dial) = sending(Config::default());
    let retry = refuse(&mut c, dial, now(), "refused");
    c.close_conn(now() + ms(100), &PkiId::from(REMOTE));
    still_waits(&mut c, dial, retry);
    assert_eq!(c.live_counts().dials, 1);
    connects_and_writes(&mut c, dial, retry);
    assert_eq!(c.connections().len(), 1);
}

/// The jitter comes from the seed: the same seed retries at the same instants, and
/// different seeds spread their retries over grpc-go's ±20 %.
#[test]
fn the_jitter_is_drawn_from_the_seed() {
    let second_wait = |seed: u64| {
        let (mut c, dial) = sending(Config::default().with_seed(seed));
        let retry = refuse(&mut c, dial, now(), "refused");
        c.handle_timeout(retry);
        let _ = drain(&mut c);
        refuse(&mut c, dial, retry, "refused") - retry
    };
    assert_eq!(second_wait(7), second_wait(7));
    let waits: std::collections::BTreeSet<Duration> = (0..20).map(second_wait).collect();
    assert!(waits.len() > 10, "jitter spreads the retries: {waits:?}");
    assert!(
        waits.iter().all(|w| *w >= ms(1280) && *w <= ms(1920)),
        "{waits:?}"
    );
}

/// `probe` and `handshake` dial as the connection store does (Fabric's `Probe` and
/// `Handshake` are `DialContext` with `WithBlock()` under the dial timeout): a peer that
/// is down at the first attempt and up by a retry answers them.
#[test]
fn probe_and_handshake_retry_too() {
    let mut net = Net::new(2, |_| Config::default());
    net.crash(1);
    let peer = net.peer(1);
    let now = net.now;
    let probe = net.nodes[0].comm.probe(now, &peer).unwrap();
    let handshake = net.nodes[0].comm.handshake(now, &peer).unwrap();
    net.flush(0);
    net.advance(ms(500));
    net.restart(
        1,
        Box::new(TestOnlyHmacSecurity::new(ep(1))),
        Config::default(),
    );
    net.advance(Duration::from_secs(3));
    let done: Vec<_> = net.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::ProbeDone { op, result } => Some((*op, result.is_ok())),
            Event::HandshakeDone { op, result } => Some((*op, result.is_ok())),
            _ => None,
        })
        .collect();
    assert!(done.contains(&(probe, true)), "{done:?}");
    assert!(done.contains(&(handshake, true)), "{done:?}");
    assert_eq!(net.nodes[0].comm.stats().dial_retries, 2);
}

/// Two nodes of the harness: node 1 crashed, node 0 sending to it, and node 1 restarted
/// `down` later (subscribed, nothing delivered yet), node 0's dial still under way.
fn back_after(down: Duration) -> Net {
    let mut net = Net::new(2, |_| Config::default());
    net.crash(1);
    net.send(0, 1, b"while you were out");
    net.advance(down);
    assert!(net.delivered_data(1).is_empty());
    net.restart(
        1,
        Box::new(TestOnlyHmacSecurity::new(ep(1))),
        Config::default(),
    );
    net.subscribe_all(1);
    net
}

/// The harness's whole network: a peer that crashed is dialled, refuses, restarts 1.5 s
/// later, and the retry reaches it: the message is delivered and nobody is presumed dead.
#[test]
fn a_peer_back_within_the_dial_timeout_gets_the_message() {
    let mut net = back_after(ms(1500));
    net.advance(Duration::from_secs(2));
    assert_eq!(net.delivered_data(1), vec![b"while you were out".to_vec()]);
    assert!(dead(&net.nodes[0].events).is_empty());
    assert_eq!(net.nodes[0].comm.stats().dial_retries, 2);
    assert_eq!(net.nodes[0].comm.stats().dropped_no_connection, 0);
}

/// A peer that restarts and connects to us while our dial to it waits to try again: the
/// message that waited goes on its connection, and the dial ends at its retry instead of
/// opening a second connection that would cross the first (grpc-go would try again and
/// Fabric close what it made; the outcome is the same, one connection, with less churn).
#[test]
fn a_peer_that_connects_during_the_back_off_ends_the_dial() {
    let mut net = back_after(ms(300));
    // Back, it dials node 0 first (as a restarting peer dials those it knows).
    net.send(1, 0, b"hello again");
    net.advance(ms(100));
    assert_eq!(net.delivered_data(1), vec![b"while you were out".to_vec()]);
    assert_eq!(net.nodes[0].comm.live_counts().dials, 1, "still waiting");
    // The retry, 1 s after the refusal, is not made: nothing crosses.
    net.advance(Duration::from_secs(3));
    let s = net.nodes[0].comm.stats();
    assert_eq!(s.dial_retries, 0);
    assert_eq!(s.crossings, 0);
    assert_eq!(s.dropped_no_connection, 0);
    assert_eq!(net.nodes[0].comm.live_counts().dials, 0);
    assert!(dead(&net.nodes[0].events).is_empty());
    let conns = net.nodes[0].comm.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].secondary, None);
    assert_eq!(net.delivered_data(1), vec![b"while you were out".to_vec()]);
}
