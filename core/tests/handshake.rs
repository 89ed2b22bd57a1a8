//! Handshake rules (`gossip/comm/comm_impl.go`, `authenticateRemotePeer`), driven directly through the core's API: a fake remote
//! writes crafted Envelopes into an accepting or dialling core. Each negative path is
//! checked by its exact error, in Fabric's order, and by its counter.

use crate::common::one_core::{ME, REMOTE, core, dial_of, now};
use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::testing::{conn_establish, drain, open_outbound};
use fabric_gossip_core::*;
use prost::Message;
use std::time::Duration;

fn tls() -> TlsHashes {
    TlsHashes {
        client_cert_hash: [1; 32],
        server_cert_hash: [2; 32],
    }
}

/// A ConnEstablish envelope as a remote would send it.
fn conn_env(pki: &str, identity: &str, hash: &[u8], probe: bool, sign: bool) -> Bytes {
    conn_establish(pki.as_bytes(), identity.as_bytes(), hash, probe, sign)
}

fn failed_with(events: &[Event]) -> Option<HandshakeError> {
    events.iter().find_map(|e| match e {
        Event::HandshakeFailed { error, .. } => Some(error.clone()),
        _ => None,
    })
}

/// Accepts a stream, feeds `first`, returns the handshake error if it failed.
fn inbound_with(
    config: Config,
    cert: Option<CertHash>,
    first: Bytes,
) -> (Comm<TestOnlyHmacSecurity>, Option<HandshakeError>) {
    let mut c = core(config);
    let s = c.accept_stream(now(), REMOTE, cert).unwrap();
    let _ = drain(&mut c);
    c.handle_envelope(now(), s, first).unwrap();
    let (_, ev) = drain(&mut c);
    let err = failed_with(&ev);
    (c, err)
}

#[test]
fn responder_sends_its_conn_establish_first_and_registers() {
    let mut c = core(Config::default());
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    let (acts, _) = drain(&mut c);
    let Action::Write {
        stream,
        envelope,
        kind,
    } = &acts[0]
    else {
        panic!("first action must be our ConnEstablish, got {acts:?}");
    };
    assert_eq!(*stream, s);
    assert_eq!(*kind, WriteKind::Handshake, "outside the write window");
    let m = SignedMessage::from_envelope_bytes(envelope.clone()).unwrap();
    let Some(gossip_message::Content::Conn(conn)) = &m.message().content else {
        panic!("not a ConnEstablish");
    };
    assert_eq!(conn.pki_id.as_ref(), ME.as_bytes());
    assert_eq!(conn.identity.as_ref(), ME.as_bytes());
    assert!(conn.tls_cert_hash.is_empty());
    assert!(!conn.probe);
    assert_eq!(m.message().tag, gossip_message::Tag::Empty as i32);
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let (_, ev) = drain(&mut c);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Connected { conn, inbound: true, .. } if *conn == s))
    );
    assert_eq!(c.connection(&PkiId::from(REMOTE)), Some(s));
    assert_eq!(c.stats().handshakes_ok, 1);
}

#[test]
fn our_conn_establish_matches_fabric_vector_bytes() {
    // conn_establish_notls from Fabric v2.4.9: the test provider for 127.0.0.1:7051.
    let mut c = Comm::new(
        Config::default(),
        TestOnlyHmacSecurity::new("127.0.0.1:7051"),
        now(),
    )
    .unwrap();
    let _ = c.accept_stream(now(), REMOTE, None).unwrap();
    let (acts, _) = drain(&mut c);
    let Action::Write { envelope, .. } = &acts[0] else {
        panic!()
    };
    assert_eq!(
        hex::encode(envelope),
        "0a24180172200a0e3132372e302e302e313a37303531120e3132372e302e302e313a373035311220bb1b5663b921b10f03a82113351c05f95bf2e51160efb745bbd200644aacda55"
    );
}

#[test]
fn tls_binds_the_role_certificate_hash() {
    let mut c = core(Config::default().with_tls(tls()));
    let _ = c.accept_stream(now(), REMOTE, Some([9; 32])).unwrap();
    let (acts, _) = drain(&mut c);
    let Action::Write { envelope, .. } = &acts[0] else {
        panic!()
    };
    let m = SignedMessage::from_envelope_bytes(envelope.clone()).unwrap();
    let Some(gossip_message::Content::Conn(conn)) = &m.message().content else {
        panic!()
    };
    assert_eq!(
        conn.tls_cert_hash.as_ref(),
        &[2; 32],
        "server role uses the server certificate"
    );

    // Dialling side uses the client certificate.
    let mut c = core(Config::default().with_tls(tls()));
    let op = c
        .handshake(now(), &RemotePeer::new(REMOTE, REMOTE))
        .unwrap();
    let _ = op;
    let (acts, _) = drain(&mut c);
    let Action::Dial { dial, .. } = acts[0].clone() else {
        panic!()
    };
    c.handle_dial_result(now(), dial, Ok(Some([7; 32])))
        .unwrap();
    c.handle_ping_result(now(), dial, Ok(())).unwrap();
    let (acts, _) = drain(&mut c);
    let env = acts.iter().find_map(|a| match a {
        Action::Write { envelope, .. } => Some(envelope.clone()),
        _ => None,
    });
    let m = SignedMessage::from_envelope_bytes(env.unwrap()).unwrap();
    let Some(gossip_message::Content::Conn(conn)) = &m.message().content else {
        panic!()
    };
    assert_eq!(conn.tls_cert_hash.as_ref(), &[1; 32]);
    assert!(conn.probe, "handshake() announces a probe");
}

#[test]
fn no_tls_certificate_fails_at_once() {
    let mut c = core(Config::default().with_tls(tls()));
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    let (acts, ev) = drain(&mut c);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Write { .. })),
        "nothing is sent"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::CloseStream { stream, error: Some(_) } if *stream == s))
    );
    assert_eq!(failed_with(&ev), Some(HandshakeError::NoTlsCertificate));
    assert_eq!(c.stats().handshake_failures_for("no_tls_certificate"), 1);
}

#[test]
fn negative_paths_each_have_their_error() {
    let cases: Vec<(&str, Config, Option<CertHash>, Bytes, HandshakeError)> = vec![
        (
            "wrong type",
            Config::default(),
            None,
            SignedMessage::noop(GossipMessage {
                content: Some(gossip_message::Content::Empty(Default::default())),
                ..Default::default()
            })
            .envelope_bytes()
            .clone(),
            HandshakeError::WrongType,
        ),
        (
            "no pki id",
            Config::default(),
            None,
            conn_env("", REMOTE, b"", false, true),
            HandshakeError::NoPkiId,
        ),
        (
            "no identity",
            Config::default(),
            None,
            conn_env(REMOTE, "", b"", false, true),
            HandshakeError::NoIdentity,
        ),
        (
            "pki id does not match identity",
            Config::default(),
            None,
            conn_env("127.0.0.1:9999", REMOTE, b"", false, true),
            HandshakeError::IdentityMismatch,
        ),
        (
            "wrong tls cert hash",
            Config::default().with_tls(tls()),
            Some([5; 32]),
            conn_env(REMOTE, REMOTE, &[6; 32], false, true),
            HandshakeError::TlsCertHashMismatch,
        ),
        (
            "unsigned",
            Config::default(),
            None,
            conn_env(REMOTE, REMOTE, b"", false, false),
            HandshakeError::Unsigned,
        ),
        (
            "not protobuf",
            Config::default(),
            None,
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]),
            HandshakeError::Malformed(String::new()),
        ),
    ];
    for (name, cfg, cert, first, want) in cases {
        let (c, got) = inbound_with(cfg, cert, first);
        let got = got.unwrap_or_else(|| panic!("{name}: handshake did not fail"));
        match (&want, &got) {
            (HandshakeError::Malformed(_), HandshakeError::Malformed(_)) => {}
            _ => assert_eq!(got, want, "{name}"),
        }
        assert_eq!(c.stats().handshake_failures_for(got.label()), 1, "{name}");
        assert!(c.connections().is_empty(), "{name}: nothing registered");
    }
}

#[test]
fn bad_signature_is_refused() {
    let mut env = Envelope::decode(conn_env(REMOTE, REMOTE, b"", false, true)).unwrap();
    let mut sig = env.signature.to_vec();
    sig[0] ^= 1;
    env.signature = sig.into();
    let (_, err) = inbound_with(Config::default(), None, Bytes::from(env.encode_to_vec()));
    assert!(
        matches!(
            err,
            Some(HandshakeError::BadSignature(SecurityError::BadSignature(_)))
        ),
        "{err:?}"
    );
}

#[test]
fn checks_run_in_fabric_order() {
    // Wrong hash AND bad signature AND pki mismatch: the identity check comes first.
    let (_, err) = inbound_with(
        Config::default().with_tls(tls()),
        Some([5; 32]),
        conn_env("127.0.0.1:9999", REMOTE, &[6; 32], false, false),
    );
    assert_eq!(err, Some(HandshakeError::IdentityMismatch));
    // Wrong hash AND unsigned: the hash check comes before the signature.
    let (_, err) = inbound_with(
        Config::default().with_tls(tls()),
        Some([5; 32]),
        conn_env(REMOTE, REMOTE, &[6; 32], false, false),
    );
    assert_eq!(err, Some(HandshakeError::TlsCertHashMismatch));
}

#[test]
fn invalid_and_expired_identities_are_refused() {
    let sec = TestOnlyHmacSecurity::new(ME).rejecting(Bytes::from_static(REMOTE.as_bytes()));
    let mut c = Comm::new(Config::default(), sec, now()).unwrap();
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let (_, ev) = drain(&mut c);
    assert!(matches!(
        failed_with(&ev),
        Some(HandshakeError::InvalidIdentity(_))
    ));

    let sec = TestOnlyHmacSecurity::new(ME).expiring(Bytes::from_static(REMOTE.as_bytes()), now());
    let mut c = Comm::new(Config::default(), sec, now()).unwrap();
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let (_, ev) = drain(&mut c);
    assert_eq!(failed_with(&ev), Some(HandshakeError::IdentityExpired));
}

#[test]
fn identity_expiring_while_connected_closes_the_connection() {
    let expiry = now() + Duration::from_secs(60);
    let sec = TestOnlyHmacSecurity::new(ME).expiring(Bytes::from_static(REMOTE.as_bytes()), expiry);
    let mut c = Comm::new(Config::default(), sec, now()).unwrap();
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let _ = drain(&mut c);
    assert_eq!(c.connection(&PkiId::from(REMOTE)), Some(s));
    assert_eq!(c.poll_timeout(), Some(expiry));
    c.handle_timeout(expiry);
    let (acts, ev) = drain(&mut c);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::CloseStream { stream, .. } if *stream == s))
    );
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: CloseReason::IdentityExpired,
            ..
        }
    )));
    // Fabric's `onPurge` at expiry also tells the certstore: so does the event here,
    // after the connection's.
    let purged = ev.iter().position(|e| {
        matches!(e, Event::IdentityPurged { pki_id, reason: CloseReason::IdentityExpired }
            if *pki_id == PkiId::from(REMOTE))
    });
    let closed = ev
        .iter()
        .position(|e| matches!(e, Event::Disconnected { .. }));
    assert!(purged.is_some() && closed < purged, "{ev:?}");
    assert!(c.identity_of(&PkiId::from(REMOTE)).is_none());
    assert!(c.connections().is_empty());
}

#[test]
fn inbound_probe_is_authenticated_then_released() {
    let mut c = core(Config::default());
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    let _ = drain(&mut c);
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", true, true))
        .unwrap();
    let (acts, ev) = drain(&mut c);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::CloseStream { stream, error: None } if *stream == s))
    );
    assert!(!ev.iter().any(|e| matches!(e, Event::Connected { .. })));
    assert!(c.connections().is_empty());
    assert_eq!(c.stats().probed, 1);
    // Issue 10 finding 4: an inbound probe is an event, naming the remote.
    assert!(
        ev.iter().any(|e| matches!(e, Event::Probed { stream, info }
            if *stream == s && info.id == PkiId::from(REMOTE))),
        "{ev:?}"
    );
}

#[test]
fn accept_after_stop_is_refused() {
    let mut c = core(Config::default());
    c.stop(now());
    assert_eq!(c.accept_stream(now(), REMOTE, None), Err(Error::Stopped));
}

/// A `handshake()` to REMOTE up to the remote's `ConnEstablish` (valid); returns the core,
/// the operation and the stream, and the outputs of that last step.
fn handshake_authenticated() -> (Comm<TestOnlyHmacSecurity>, OpId, StreamId, Vec<Event>) {
    let mut c = core(Config::default());
    let op = c
        .handshake(now(), &RemotePeer::new(REMOTE, REMOTE))
        .unwrap();
    let stream = open_outbound(&mut c, now());
    c.handle_envelope(now(), stream, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let (_, ev) = drain(&mut c);
    (c, op, stream, ev)
}

fn done(ev: &[Event], op: OpId) -> Option<Result<PkiId, HandshakeError>> {
    ev.iter().find_map(|e| match e {
        Event::HandshakeDone { op: o, result } if *o == op => {
            Some(result.as_ref().map(|i| i.id.clone()).map_err(Clone::clone))
        }
        _ => None,
    })
}

/// Issue 10 finding 4: a Fabric peer sends its `ConnEstablish` before it checks ours, so
/// authenticating the remote is not the end: a `handshake()` completes when the remote
/// ends the stream with OK (Fabric's `GossipStream` returns nil after a probe).
#[test]
fn a_handshake_completes_only_when_the_remote_accepts() {
    let (mut c, op, s, ev) = handshake_authenticated();
    assert_eq!(done(&ev, op), None, "no verdict yet: {ev:?}");
    assert_eq!(c.stats().handshakes_ok, 0, "not a successful handshake yet");
    c.handle_stream_closed(now(), s, StreamEnd::Finished)
        .unwrap();
    let (_, ev) = drain(&mut c);
    assert_eq!(done(&ev, op), Some(Ok(PkiId::from(REMOTE))));
    assert_eq!(c.stats().handshakes_ok, 1);
    assert_eq!(c.stats().handshake_failures_total(), 0);
}

/// Issue 10 finding 4, as seen live: the remote refuses us with a non-OK status ("failed
/// classifying identity: …"). The failure carries the remote's status and message, is
/// counted as `refused_by_remote`, and is not a successful handshake.
#[test]
fn a_handshake_the_remote_refuses_reports_its_status() {
    let (mut c, op, s, _) = handshake_authenticated();
    let status = "status: Unknown, message: \"failed classifying identity: \
                  no MSP for Org9MSP\""
        .to_owned();
    c.handle_stream_closed(now(), s, StreamEnd::Error(status.clone()))
        .unwrap();
    let (_, ev) = drain(&mut c);
    let expected = HandshakeError::RefusedByRemote {
        status: status.clone(),
    };
    assert_eq!(done(&ev, op), Some(Err(expected.clone())));
    assert_eq!(failed_with(&ev), Some(expected.clone()));
    assert!(expected.to_string().contains("failed classifying identity"));
    let st = c.stats();
    assert_eq!(st.handshakes_ok, 0);
    assert_eq!(
        st.handshake_failures_of(HandshakeFailure::RefusedByRemote),
        1
    );
    assert_eq!(
        HandshakeFailure::RefusedByRemote.label(),
        "refused_by_remote"
    );
}

/// A remote that never gives its verdict: the handshake times out, it does not succeed,
/// and the error says what was missing: the verdict, not the `ConnEstablish` that came
/// (until 2026-12-05 it read "timed out waiting for connection message"). Counted as a
/// timeout all the same.
#[test]
fn a_handshake_without_the_remotes_verdict_times_out() {
    let (mut c, op, _, _) = handshake_authenticated();
    c.handle_timeout(now() + Duration::from_secs(60));
    let (_, ev) = drain(&mut c);
    assert!(matches!(done(&ev, op), Some(Err(_))), "{ev:?}");
    assert_eq!(c.stats().handshakes_ok, 0);
    let failed = ev.iter().find_map(|e| match e {
        Event::HandshakeFailed { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(failed, Some(HandshakeError::VerdictTimeout), "{ev:?}");
    assert!(
        HandshakeError::VerdictTimeout
            .to_string()
            .contains("verdict"),
        "{}",
        HandshakeError::VerdictTimeout
    );
    assert_eq!(
        c.stats().handshake_failures_of(HandshakeFailure::Timeout),
        1
    );
}

/// Issue 10 finding 4: a regular connection the remote refuses right after our
/// ConnEstablish (registered, as Fabric does) ends with the remote's reason on the
/// `Disconnected` event.
#[test]
fn a_connection_the_remote_refuses_carries_its_reason() {
    let mut c = core(Config::default());
    let m = SignedMessage::noop(fabric_gossip_core::testing::data_msg(b"x"));
    c.send(now(), &m, &[RemotePeer::new(REMOTE, REMOTE)])
        .unwrap();
    let s = open_outbound(&mut c, now());
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let _ = drain(&mut c);
    let status = "status: Unknown, message: \"failed classifying identity: x\"".to_owned();
    c.handle_stream_closed(now(), s, StreamEnd::Error(status.clone()))
        .unwrap();
    let (_, ev) = drain(&mut c);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Disconnected { conn, reason, .. }
            if *conn == s && *reason == CloseReason::StreamError(status.clone())
                && reason.to_string().contains("failed classifying identity"))),
        "{ev:?}"
    );
}

/// Issue 10 finding 5: a remote claiming our own PKI-ID is refused with its own error and
/// counter (it used to be registered as a connection to ourselves).
#[test]
fn a_remote_claiming_our_own_pki_id_is_refused() {
    let (c, err) = inbound_with(Config::default(), None, conn_env(ME, ME, b"", false, true));
    assert_eq!(err, Some(HandshakeError::OwnPkiId));
    assert!(c.connections().is_empty());
    assert_eq!(
        c.stats().handshake_failures_of(HandshakeFailure::OwnPkiId),
        1
    );
    assert_eq!(HandshakeFailure::OwnPkiId.label(), "own_pki_id");
}

/// A driver tells the handshake's write from the messages by the action alone: the
/// `ConnEstablish` is outside the write window (confirming it early returns no credit),
/// and each message inside it waits for `handle_sent`.
#[test]
fn a_write_says_whether_it_is_the_handshake_or_uses_the_window() {
    let mut c = core(Config::default().with_write_window(1));
    let s = c.accept_stream(now(), REMOTE, None).unwrap();
    let kinds = |acts: &[Action]| -> Vec<WriteKind> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Write { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    };
    let (acts, _) = drain(&mut c);
    assert_eq!(kinds(&acts), [WriteKind::Handshake]);
    c.handle_sent(now(), s, 1).unwrap();
    c.handle_envelope(now(), s, conn_env(REMOTE, REMOTE, b"", false, true))
        .unwrap();
    let peer = RemotePeer::new(REMOTE, REMOTE);
    for seq in 0..3 {
        let m = SignedMessage::noop(data_message(seq, "x"));
        c.send(now(), &m, std::slice::from_ref(&peer)).unwrap();
    }
    let (acts, _) = drain(&mut c);
    assert_eq!(kinds(&acts), [WriteKind::Message], "a window of one");
    c.handle_sent(now(), s, 1).unwrap();
    let (acts, _) = drain(&mut c);
    assert_eq!(kinds(&acts), [WriteKind::Message]);
}

/// A full identity store makes room by evicting the oldest identity of a peer with no
/// connection, never one whose connection is open: `identity_store_capacity` bounds it.
#[test]
fn a_full_identity_store_evicts_the_oldest_identity_not_in_use() {
    let mut cfg = Config::default();
    cfg.identity_store_capacity = 3;
    let mut c = core(cfg);
    let connect = |c: &mut Comm<TestOnlyHmacSecurity>, addr: &str| {
        let s = c.accept_stream(now(), addr, None).unwrap();
        c.handle_envelope(now(), s, conn_env(addr, addr, b"", false, true))
            .unwrap();
        let _ = drain(c);
        assert_eq!(c.connection(&PkiId::from(addr)), Some(s));
    };
    let (kept, gone, new) = ("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003");
    connect(&mut c, kept);
    connect(&mut c, gone);
    c.close_conn(now(), &PkiId::from(gone));
    let _ = drain(&mut c);
    assert_eq!(c.identity_count(), 3, "ours and both remotes'");
    assert_eq!(c.stats().identities_evicted, 0);
    connect(&mut c, new);
    assert_eq!(c.identity_count(), 3);
    assert_eq!(c.stats().identities_evicted, 1);
    assert!(c.identity_of(&PkiId::from(kept)).is_some(), "in use: kept");
    assert!(c.identity_of(&PkiId::from(gone)).is_none());
    assert!(c.identity_of(&PkiId::from(new)).is_some());
}

/// A `handshake()` that times out before its dial came up tears the dial down at once
/// (`CloseDial`), rather than leaving it to its own, later deadline.
#[test]
fn a_handshake_op_that_times_out_closes_its_dial() {
    let mut cfg = Config::default();
    cfg.handshake_timeout = Duration::from_secs(1);
    cfg.dial_timeout = Duration::from_secs(30);
    let mut c = core(cfg);
    let op = c
        .handshake(now(), &RemotePeer::new(REMOTE, REMOTE))
        .unwrap();
    let (acts, _) = drain(&mut c);
    let (dial, _) = dial_of(&acts).expect("a dial");
    c.handle_timeout(now() + Duration::from_secs(1));
    let (acts, ev) = drain(&mut c);
    assert_eq!(done(&ev, op), Some(Err(HandshakeError::OperationTimeout)));
    assert!(acts.contains(&Action::CloseDial { dial }), "{acts:?}");
    assert_eq!(c.live_counts(), LiveCounts::default());
}

/// A dial that brings no result within `dial_timeout` fails as timed out (Fabric dials
/// under `dialTimeout`): a probe reports `DialError::Timeout` and the dial is closed.
#[test]
fn a_dial_with_no_result_by_dial_timeout_fails_as_timed_out() {
    let cfg = Config::default();
    let deadline = now() + cfg.dial_timeout;
    let mut c = core(cfg);
    let op = c.probe(now(), &RemotePeer::new(REMOTE, REMOTE)).unwrap();
    let (acts, _) = drain(&mut c);
    let (dial, _) = dial_of(&acts).expect("a dial");
    assert_eq!(c.poll_timeout(), Some(deadline));
    c.handle_timeout(deadline);
    let (acts, ev) = drain(&mut c);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::ProbeDone { op: o, result }
            if *o == op && *result == Err(ProbeError::Dial(DialError::Timeout)))),
        "{ev:?}"
    );
    assert!(acts.contains(&Action::CloseDial { dial }), "{acts:?}");
    assert_eq!(c.live_counts(), LiveCounts::default());
}
