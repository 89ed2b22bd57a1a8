//! The core reports what it does through `tracing` events, with targets that name the
//! part (`fabric_gossip_core::handshake`, `…::store`, …) and typed reasons as fields.
//!
//! A test binary of its own, in which every thread that reaches the core's events has set
//! a capturing subscriber first. `tracing` caches, per callsite, whether any subscriber
//! wants its events; in a binary shared with other tests, one of them could reach a
//! callsite (with no subscriber: "never") at the very moment a test here set its
//! subscriber, and `tracing`'s recomputation of every callsite's interest then missed the
//! callsite still being registered: its events were skipped for the rest of the run, and
//! "connection registered" was seen 0 times instead of 2 (a CI run on 2026-12-04).

use fabric_gossip_core::testing::captured_logs;
use fabric_gossip_core::*;

fn now() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

/// The `ConnEstablish` a comm writes first on a stream it accepted.
fn hello(c: &mut Comm<TestOnlyHmacSecurity>) -> bytes::Bytes {
    loop {
        match c.poll_output() {
            Output::Action(Action::Write { envelope, .. }) => return envelope,
            Output::Timeout(_) => panic!("no ConnEstablish written"),
            _ => {}
        }
    }
}

#[test]
fn handshake_failures_and_connections_are_traced_with_their_part_and_reason() {
    let ((), events) = captured_logs(|| {
        let mut a = Comm::new(Config::default(), TestOnlyHmacSecurity::new("a:1"), now()).unwrap();
        let mut b = Comm::new(Config::default(), TestOnlyHmacSecurity::new("b:1"), now()).unwrap();
        // A stream whose first message is garbage fails its handshake.
        let s = b.accept_stream(now(), "x:1", None).unwrap();
        b.handle_envelope(now(), s, bytes::Bytes::from_static(b"\xff\xff"))
            .unwrap();
        // A real handshake registers a connection on both sides; closing it is traced.
        let sa = a.accept_stream(now(), "b:1", None).unwrap();
        let sb = b.accept_stream(now(), "a:1", None).unwrap();
        let (ha, hb) = (hello(&mut a), hello(&mut b));
        a.handle_envelope(now(), sa, hb).unwrap();
        b.handle_envelope(now(), sb, ha).unwrap();
        a.close_conn(now(), &PkiId::from("b:1"));
    });
    let failed = events
        .iter()
        .find(|e| e.field("message") == Some("handshake failed"))
        .expect("a handshake failure event");
    assert_eq!(failed.target, "fabric_gossip_core::handshake");
    assert_eq!(failed.level, tracing::Level::INFO);
    assert_eq!(failed.field("kind"), Some("malformed"));
    assert_eq!(failed.field("remote"), Some("x:1"));
    let registered: Vec<_> = events
        .iter()
        .filter(|e| e.field("message") == Some("connection registered"))
        .collect();
    assert_eq!(registered.len(), 2);
    assert!(
        registered
            .iter()
            .all(|e| e.target == "fabric_gossip_core::store")
    );
    assert!(registered.iter().any(|e| e.field("pki_id") == Some("b:1")));
    let closed = events
        .iter()
        .find(|e| e.field("message") == Some("connection closed"))
        .expect("a close event");
    assert_eq!(closed.field("pki_id"), Some("b:1"));
    assert_eq!(
        closed.field("reason"),
        Some(CloseReason::Local.to_string().as_str())
    );
}

/// A handshake refused for the peer's identity is a warning, for the operator to mend (a
/// live check against Fabric: a forgotten `--trust` refused a Fabric peer five times in
/// 20 s, each at `info`); a malformed one stays at `info` (the test above).
#[test]
fn a_refused_identity_is_a_warning() {
    let ((), events) = captured_logs(|| {
        let mut a = Comm::new(Config::default(), TestOnlyHmacSecurity::new("a:1"), now()).unwrap();
        let b_sec = TestOnlyHmacSecurity::new("b:1").rejecting(&b"a:1"[..]);
        let mut b = Comm::new(Config::default(), b_sec, now()).unwrap();
        let sa = a.accept_stream(now(), "b:1", None).unwrap();
        let sb = b.accept_stream(now(), "a:1", None).unwrap();
        let (ha, hb) = (hello(&mut a), hello(&mut b));
        let _ = a.handle_envelope(now(), sa, hb);
        let _ = b.handle_envelope(now(), sb, ha);
    });
    let failed = events
        .iter()
        .find(|e| e.field("message") == Some("handshake failed"))
        .expect("a handshake failure event");
    assert_eq!(failed.field("kind"), Some("invalid_identity"), "{failed:?}");
    assert_eq!(failed.level, tracing::Level::WARN);
    assert_eq!(failed.field("remote"), Some("a:1"));
}

/// Every kind an operator must act on, and none of those a member's going explains.
#[test]
fn identity_refusals_are_the_identity_and_tls_binding_kinds() {
    let refusals: Vec<_> = HandshakeFailure::ALL
        .iter()
        .filter(|k| k.is_identity_refusal())
        .map(|k| k.label())
        .collect();
    assert_eq!(
        refusals,
        [
            "no_tls_certificate",
            "unclassifiable_identity",
            "invalid_identity",
            "identity_mismatch",
            "identity_expired",
            "tls_cert_hash_mismatch",
            "bad_signature",
        ]
    );
}

/// Connection lines are logged at most 20 a second, the first of the next second saying how
/// many were not; the counters hold every connection. (One insider's alive messages naming
/// a live member's endpoint made every other node connect and switch identity again and
/// again, about 7 unbounded lines a message: an attack, 2026-12-07.)
#[test]
fn connection_lines_are_logged_at_most_twenty_a_second() {
    let (b, events) = captured_logs(|| {
        let mut b = Comm::new(Config::default(), TestOnlyHmacSecurity::new("b:1"), now()).unwrap();
        let connect = |b: &mut Comm<TestOnlyHmacSecurity>, i: usize, at: Instant| {
            let name = format!("a{i}:1");
            let mut a = Comm::new(Config::default(), TestOnlyHmacSecurity::new(&name), at).unwrap();
            let sa = a.accept_stream(at, "b:1", None).unwrap();
            let sb = b.accept_stream(at, &name, None).unwrap();
            let (ha, hb) = (hello(&mut a), hello(b));
            a.handle_envelope(at, sa, hb).unwrap();
            b.handle_envelope(at, sb, ha).unwrap();
        };
        for i in 0..30 {
            connect(&mut b, i, now());
        }
        connect(&mut b, 30, now() + std::time::Duration::from_secs(1));
        b
    });
    let logged: Vec<_> = events
        .iter()
        .filter(|e| e.field("message") == Some("connection registered"))
        // b's lines (each `a` logs its one connection, to b, too).
        .filter(|e| e.field("pki_id") != Some("b:1"))
        .collect();
    assert_eq!(logged.len(), 21);
    assert_eq!(logged[20].field("not_logged"), Some("10"));
    assert_eq!(b.stats().connections_opened, 31);
}

/// A flood of failing handshakes logs at most 20 lines a second; the first line of the next
/// second says how many were not logged, and the counters hold every one.
#[test]
fn handshake_failures_are_logged_at_most_twenty_a_second() {
    let garbage = || bytes::Bytes::from_static(b"\xff\xff");
    // Everything the core does here runs under the subscriber (see the module's comment).
    let (c, events) = captured_logs(|| {
        let mut c = Comm::new(Config::default(), TestOnlyHmacSecurity::new("a:1"), now()).unwrap();
        for i in 0..100 {
            let s = c.accept_stream(now(), &format!("x:{i}"), None).unwrap();
            c.handle_envelope(now(), s, garbage()).unwrap();
        }
        let later = now() + std::time::Duration::from_secs(1);
        let s = c.accept_stream(later, "y:1", None).unwrap();
        c.handle_envelope(later, s, garbage()).unwrap();
        c
    });
    let logged: Vec<_> = events
        .iter()
        .filter(|e| e.field("message") == Some("handshake failed"))
        .collect();
    assert_eq!(logged.len(), 21);
    assert!(
        logged[..20]
            .iter()
            .all(|e| e.field("not_logged") == Some("0"))
    );
    assert_eq!(logged[20].field("not_logged"), Some("80"));
    assert_eq!(logged[20].field("remote"), Some("y:1"));
    assert_eq!(c.stats().handshake_failures_for("malformed"), 101);
}

/// A remote that refuses us after its handshake (our identity revoked or expired there)
/// is a warning that says why, one a second: a revoked node meets the refusal again and
/// again while gossip makes its peers alive to it, and a day-2 trial found 84 of them in
/// 23 s, all at `info` and none a warning. The rest of the second's are at `debug`, and
/// every one is counted.
#[test]
fn refusals_by_a_remote_are_warnings_one_a_second() {
    use fabric_gossip_core::testing::{Net, ep};
    let (net, events) = captured_logs(|| {
        let mut net = Net::with_security(
            2,
            |_| Config::default(),
            |i| -> Box<dyn Security> {
                let s = TestOnlyHmacSecurity::new(ep(i));
                Box::new(if i == 1 { s.rejecting(ep(0)) } else { s })
            },
        );
        net.subscribe_all(1);
        for _ in 0..3 {
            net.send(0, 1, b"x");
            net.settle();
        }
        net.advance(std::time::Duration::from_secs(1));
        net.send(0, 1, b"x");
        net.settle();
        net
    });
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| {
            e.field("message") == Some("the remote refused our connection after its handshake")
        })
        .collect();
    let warned: Vec<_> = refusals
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    let counted = net.nodes[0]
        .comm
        .stats()
        .handshake_failures_for("refused_by_remote");
    assert_eq!(refusals.len() as u64, counted, "{refusals:?}");
    assert!(counted >= 4, "{counted}");
    assert_eq!(warned.len(), 2, "{refusals:?}");
    assert!(
        warned[0]
            .field("error")
            .is_some_and(|e| e.contains("refused")),
        "{:?}",
        warned[0]
    );
    assert_eq!(
        warned[1].field("not_logged"),
        Some(&*(counted - 2).to_string())
    );
    assert_eq!(warned[0].target, "fabric_gossip_core::store");
}

/// A dialled endpoint answered by another peer than the one expected there, of another
/// organization (or of one whose identity comm never held), is refused with a warning, as
/// Fabric's `createConnection` warns "Remote endpoint claims to be a different peer,
/// expected … but got …": an endpoint now served by someone else is the operator's to look
/// into. Until 2026-12-07 the refusal wrote no line of its own (only the `info` line of
/// the peer presumed dead), so a node run at `warning` said nothing of it (a conformance
/// review beside Fabric's `gossip/comm`).
#[test]
fn a_dial_answered_by_another_peer_is_a_warning() {
    use fabric_gossip_core::testing::{Net, ep};
    let (net, events) = captured_logs(|| {
        let mut net = Net::new(2, |_| Config::default());
        net.subscribe_all(1);
        net.send_expecting(0, 1, &PkiId::from("someone-else"), b"x");
        net.settle();
        net
    });
    assert_eq!(
        net.nodes[0]
            .comm
            .stats()
            .handshake_failures_for("unexpected_peer"),
        1
    );
    let warned: Vec<_> = events
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .filter(|e| e.field("kind") == Some("unexpected_peer"))
        .collect();
    assert_eq!(warned.len(), 1, "{events:#?}");
    let w = warned[0];
    assert_eq!(w.target, "fabric_gossip_core::handshake");
    assert_eq!(w.field("message"), Some("handshake failed"));
    assert_eq!(w.field("remote"), Some(ep(1).as_str()));
    assert!(
        w.field("error")
            .is_some_and(|e| e.contains("someone-else") && e.contains(&ep(1))),
        "{w:?}"
    );
}

/// An authenticated peer's message that does not decode ends its connection with a
/// warning, as Fabric's `readFromStream` warns "Got error, aborting"; it was a `debug`
/// line (and the `info` line of the closed connection), nothing at `warning`.
#[test]
fn an_undecodable_message_on_a_connection_is_a_warning() {
    let (b, events) = captured_logs(|| {
        let mut a = Comm::new(Config::default(), TestOnlyHmacSecurity::new("a:1"), now()).unwrap();
        let mut b = Comm::new(Config::default(), TestOnlyHmacSecurity::new("b:1"), now()).unwrap();
        let sa = a.accept_stream(now(), "b:1", None).unwrap();
        let sb = b.accept_stream(now(), "a:1", None).unwrap();
        let (ha, hb) = (hello(&mut a), hello(&mut b));
        a.handle_envelope(now(), sa, hb).unwrap();
        b.handle_envelope(now(), sb, ha).unwrap();
        assert!(b.connection(&PkiId::from("a:1")).is_some());
        b.handle_envelope(now(), sb, bytes::Bytes::from_static(b"\xff\xff"))
            .unwrap();
        b
    });
    assert_eq!(b.stats().malformed, 1);
    assert!(b.connection(&PkiId::from("a:1")).is_none());
    let warned: Vec<_> = events
        .iter()
        .filter(|e| e.level == tracing::Level::WARN)
        .collect();
    assert_eq!(warned.len(), 1, "{events:#?}");
    assert_eq!(warned[0].target, "fabric_gossip_core::demux");
    assert_eq!(warned[0].field("pki_id"), Some("a:1"));
    assert!(warned[0].field("error").is_some(), "{:?}", warned[0]);
}
