//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the corpus
//! replay test (`core/tests/fuzz_corpus.rs`), so that every input the fuzzers found
//! interesting is also an ordinary test on stable.
//!
//! Each entry point takes raw bytes and must not panic on any of them: a panic is either a
//! bug in the core or a failed `assert!` of an invariant, and both are findings. The
//! structured targets read their input one byte at a time through
//! [`arbitrary::Unstructured`] (missing bytes read as zero), which keeps the format stable
//! and lets [`encode_ops`] and [`encode_handshake`] write meaningful seeds.
//!
//! Compiled with the `fuzzing` feature only (the project's `fuzz/` crate turns it on), so a
//! downstream crate fuzzed with `--cfg fuzzing` still builds without `arbitrary`.

use crate::{
    AckError, Action, CertHash, Comm, Config, DialId, Error, Event, Instant, OpId, PkiId,
    RemotePeer, SignedMessage, Stats, StreamEnd, StreamId, SubscriptionId, TestOnlyHmacSecurity,
    TlsHashes, WriteKind, verify_envelope,
};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_proto::gossip::{
    Acknowledgement, Envelope, GossipMessage, SecretEnvelope, gossip_message,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod cast;
mod driver;
mod handshake;
mod input;
mod messages;
mod ops;

use self::{cast::*, driver::*};
pub use self::{handshake::*, input::*, messages::*, ops::*};

/// Notes, for this module's tests only, that the check `what` ran and what it compared: a
/// check that passes leaves nothing else to see, and one switched off would pass as well.
/// The tests read the notes (`tests::CHECKS`) to know that an input reached the checks it
/// is for. Not compiled into the fuzz targets.
#[cfg(test)]
fn checked(what: &'static str, compared: impl std::fmt::Debug) {
    tests::CHECKS.with_borrow_mut(|checks| checks.push((what, format!("{compared:?}"))));
}

/// Keeps a committed corpus seed in step with the generator that made `bytes`, for the
/// seed tests of every crate: with `UPDATE_FUZZ_CORPUS` set in the environment it writes
/// `bytes` to `path` (making its folder); otherwise it tells whether `path` holds exactly
/// `bytes`, so that a test can list the stale seeds.
pub fn seed_in_step(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::env::var_os("UPDATE_FUZZ_CORPUS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        return Ok(true);
    }
    Ok(std::fs::read(path).ok().as_deref() == Some(bytes))
}

/// Runs every file of a target's corpus folder (`fuzz/corpus/<target>/`: seeds, and the
/// inputs of findings fixed) through `entry`, the target's entry point, for the corpus
/// replay tests of every crate: how many files there are, and those that panicked.
pub fn replay_corpus(
    dir: &std::path::Path,
    entry: fn(&[u8]),
) -> std::io::Result<(usize, Vec<std::path::PathBuf>)> {
    let mut files = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    files.sort();
    let mut failing = Vec::new();
    for path in &files {
        let data = std::fs::read(path)?;
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failing.push(path.clone());
        }
    }
    Ok((files.len(), failing))
}

/// [`seed_in_step`] over a generator's seeds, committed in `dir` as `seed-<name>`: the
/// paths of those that differ (none when `UPDATE_FUZZ_CORPUS` rewrote them).
pub fn stale_seeds<N: std::fmt::Display>(
    dir: &std::path::Path,
    seeds: impl IntoIterator<Item = (N, Vec<u8>)>,
) -> std::io::Result<Vec<String>> {
    let mut stale = Vec::new();
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        if !seed_in_step(&path, &bytes)? {
            stale.push(path.display().to_string());
        }
    }
    Ok(stale)
}

/// The corpus test of a crate's fuzz target: the seeds `seeds` are committed in `dir` as
/// generated (written there first under `UPDATE_FUZZ_CORPUS`), and every file of `dir`
/// passes `entry`. Panics with what to do otherwise; `package` names the crate in the command
/// that rewrites the seeds.
pub fn check_corpus<N: std::fmt::Display>(
    dir: &std::path::Path,
    entry: fn(&[u8]),
    seeds: Vec<(N, Vec<u8>)>,
    package: &str,
) {
    let count = seeds.len();
    let stale = stale_seeds(dir, seeds).expect("the corpus folder");
    assert!(
        stale.is_empty(),
        "seeds differ from the generator; run UPDATE_FUZZ_CORPUS=1 cargo test -p {package} \
         --test suite fuzz_corpus:: and commit: {stale:#?}"
    );
    let (files, failing) = replay_corpus(dir, entry).expect("the corpus folder");
    assert!(failing.is_empty(), "failing corpus inputs: {failing:#?}");
    assert!(files >= count, "{files} corpus files for {count} seeds");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The checks [`checked`] noted on this thread, in order: which, and what it
        /// compared (each test runs on its own thread, so tests running at once do not mix
        /// their notes).
        pub(super) static CHECKS: RefCell<Vec<(&'static str, String)>> =
            const { RefCell::new(Vec::new()) };
    }

    /// Runs `f`; returns the checks it made, in order.
    pub(super) fn checks_of(f: impl FnOnce()) -> Vec<(&'static str, String)> {
        CHECKS.with_borrow_mut(Vec::clear);
        f();
        CHECKS.take()
    }

    /// What the checks named `what` compared, in order.
    pub(super) fn compared(checks: &[(&'static str, String)], what: &str) -> Vec<String> {
        checks
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|(_, c)| c.clone())
            .collect()
    }

    #[test]
    fn empty_inputs_are_harmless() {
        envelope(&[]);
        gossip_message(&[]);
        handshake(&[]);
        core_ops(&[]);
    }

    #[test]
    fn ops_encode_as_they_read() {
        let ops = vec![
            Op::Accept { peer: 1, cert: 0 },
            Op::Garbage {
                stream: 0,
                bytes: vec![1, 2, 3],
            },
            Op::Advance { millis: 1234 },
            Op::Stop,
        ];
        let bytes = encode_ops(&OpsConfig([7; 12]), &ops);
        let mut i = Input(Unstructured::new(&bytes[12..]));
        let back: Vec<Op> = (0..ops.len()).map(|_| Op::read(&mut i)).collect();
        assert_eq!(back, ops);
        assert!(i.is_empty());
    }

    /// One op of every kind, with fields that differ from each other and from zero.
    fn one_of_each() -> Vec<Op> {
        vec![
            Op::Accept { peer: 3, cert: 2 },
            Op::DialResult {
                dial: 4,
                ok: true,
                cert: 5,
            },
            Op::PingResult { dial: 6, ok: true },
            Op::Hello {
                stream: 7,
                peer: 8,
                flaw: 9,
            },
            Op::Data { stream: 10 },
            Op::AckIn {
                stream: 11,
                nonce: 12,
                error: true,
            },
            Op::Garbage {
                stream: 13,
                bytes: vec![14, 15],
            },
            Op::Oversized { stream: 16 },
            Op::Sent {
                stream: 17,
                count: 18,
            },
            Op::WriteFailed { stream: 19 },
            Op::Closed {
                stream: 20,
                error: true,
            },
            Op::Send { peers: 21 },
            Op::SendWait { peer: 22 },
            Op::SendWithAck {
                peers: 23,
                min_ack: 24,
                timeout: 25,
            },
            Op::Probe { peer: 26 },
            Op::Handshake { peer: 27 },
            Op::Subscribe { filter: 28 },
            Op::Unsubscribe { sub: 29 },
            Op::Poll { sub: 30, count: 31 },
            Op::Respond { stream: 32 },
            Op::AckOut {
                stream: 33,
                nonce: 34,
            },
            Op::CloseConn { peer: 35 },
            Op::Stop,
            Op::Advance { millis: 0x2468 },
            Op::AdvanceToDeadline,
            Op::StaleHandle {
                kind: 36,
                index: 37,
                generation: 38,
            },
            Op::Revoke { peer: 39 },
        ]
    }

    #[test]
    fn every_op_kind_encodes_as_it_reads_and_its_tag_is_its_place() {
        let ops = one_of_each();
        assert_eq!(ops.len(), usize::from(OP_KINDS));
        for (tag, op) in ops.iter().enumerate() {
            let mut o = Output::default();
            op.write(&mut o);
            let bytes = o.into_bytes();
            assert_eq!(usize::from(bytes[0]), tag, "{op:?}");
            // A tag past the last kind wraps around to the same op.
            let mut wrapped = bytes.clone();
            wrapped[0] += OP_KINDS;
            for b in [&bytes, &wrapped] {
                let mut i = Input::new(b);
                assert_eq!(&Op::read(&mut i), op);
                assert!(i.is_empty(), "{op:?} read every byte it wrote");
            }
        }
        let bytes = encode_ops(&OpsConfig([9; 12]), &ops);
        assert_eq!(bytes[..12], [9; 12]);
        let mut i = Input::new(&bytes[12..]);
        let back: Vec<Op> = ops.iter().map(|_| Op::read(&mut i)).collect();
        assert_eq!(back, ops);
        assert!(i.is_empty());
    }

    #[test]
    fn an_arbitrary_op_reads_its_bytes_as_the_reader_does() {
        let mut o = Output::default();
        Op::Garbage {
            stream: 1,
            bytes: vec![7; 300],
        }
        .write(&mut o);
        let bytes = o.into_bytes();
        let mut u = Unstructured::new(&bytes);
        assert_eq!(
            Op::arbitrary(&mut u).expect("enough bytes"),
            Op::read(&mut Input::new(&bytes))
        );
        // It takes every byte, up to 64 KiB.
        assert!(u.is_empty());
        let long = vec![0u8; (1 << 16) + 5];
        let mut u = Unstructured::new(&long);
        Op::arbitrary(&mut u).expect("enough bytes");
        assert_eq!(u.len(), 5);
    }

    #[test]
    fn the_configuration_bytes_set_each_bound() {
        let ms = Duration::from_millis;
        let (cfg, tls) = OpsConfig([30, 13, 11, 30, 118, 10, 30, 23, 29, 43, 10, 77]).config();
        assert_eq!(tls, 77);
        assert_eq!(cfg.dial_timeout, ms(600));
        let backoff = cfg.dial_backoff.expect("bits 3-7 of the first byte are 3");
        assert_eq!(backoff.base_delay, ms(60));
        assert_eq!(
            backoff.max_delay,
            crate::DialBackoff::GRPC_DEFAULT.max_delay
        );
        assert_eq!(cfg.conn_timeout, ms(500));
        assert_eq!(cfg.handshake_timeout, ms(750));
        assert_eq!(cfg.send_buffer_size, 2);
        assert_eq!(cfg.max_waiting_sends, 3);
        assert_eq!(cfg.write_window, 1);
        assert_eq!(cfg.send_buffer_bytes, 320);
        assert_eq!(cfg.subscription_buffer, 1);
        assert_eq!(cfg.recv_buffer_size, 2);
        assert_eq!(cfg.presumed_dead_buffer, 1);
        assert_eq!(cfg.max_queued_events, crate::MAX_QUEUED_EVENTS);
        assert_eq!(cfg.max_message_size, 240);
        assert_eq!(cfg.max_identity_size, 64);
        assert_eq!(cfg.max_pending_handshakes, 2);
        assert_eq!(cfg.max_connections, 2);
        assert_eq!(cfg.identity_store_capacity, 5);
        assert_eq!(cfg.identity_usage_threshold, Some(ms(350)));
        assert_eq!(cfg.max_operations, 2);
        assert_eq!(cfg.max_subscriptions, 2);
        assert_eq!(cfg.crossing_grace, ms(300));
        assert!(cfg.tls.is_none());
        assert_eq!(cfg.rng_seed, 10);

        // Zero bits keep the defaults: one attempt a dial, 32 MiB, Fabric's hour.
        let (cfg, tls) = OpsConfig([0; 12]).config();
        assert_eq!(tls, 0);
        assert!(cfg.dial_backoff.is_none());
        assert_eq!(cfg.send_buffer_bytes, crate::SEND_BUFFER_BYTES);
        assert_eq!(
            cfg.identity_usage_threshold,
            Some(crate::IDENTITY_USAGE_THRESHOLD)
        );
        assert_eq!(cfg.max_message_size, 200);
        let mut b = [0; 12];
        b[8] = 1 << 2;
        assert_eq!(OpsConfig(b).config().0.identity_usage_threshold, None);
    }

    #[test]
    fn a_peer_selector_names_each_peer_four_ways() {
        let names: Vec<&str> = PEERS.iter().copied().chain([ME]).collect();
        // The whole byte picks the peer (modulo six), bits 5-6 how it is named.
        for sel in 0..=u8::MAX {
            let k = usize::from(sel) % 6;
            let name = names[k];
            let next = PEERS[(k + 1) % PEERS.len()];
            let after = PEERS[(k + 2) % PEERS.len()];
            let expected = match sel / 32 % 4 {
                0 => RemotePeer::new(name, name),
                1 => RemotePeer::new(name, PkiId::default()),
                2 => RemotePeer::new(name, next),
                _ => RemotePeer::new(after, name),
            };
            assert_eq!(remote_peer(sel), expected, "{sel}");
        }
        assert_eq!(remote_peer(5), RemotePeer::new(ME, ME));
        assert_eq!(remote_peer(6), RemotePeer::new(PEERS[0], PEERS[0]));
        assert_eq!(remote_peer(3 << 5), RemotePeer::new(PEERS[2], PEERS[0]));
        assert_eq!(mask_peers(0), vec![]);
        assert_eq!(
            mask_peers(0b1_0101),
            vec![remote_peer(0), remote_peer(2), remote_peer(4)]
        );
        assert_eq!(mask_peers(0b10 | 2 << 5), vec![remote_peer(1 | 2 << 5)]);
        assert_eq!(pick([5, 6, 7].into_iter(), 4), Some(6));
        assert_eq!(pick([5, 6, 7].into_iter(), 2), Some(7));
        assert_eq!(pick(core::iter::empty::<u8>(), 4), None);
    }

    /// Roomy bounds (buffers 3, window 2, subscription 2 + 2, pending 3, connections 4), as
    /// the corpus's scenarios use; TLS off.
    const ROOMY: OpsConfig = OpsConfig([
        3,
        5,
        7,
        3 | 3 << 2 | 2 << 4,
        2 | 2 << 2 | 2 << 4,
        255,
        3 | 4 << 2,
        5 | 3 << 3,
        2,
        3,
        1,
        0,
    ]);

    /// The peer a stream really leads to (see `Op::Hello`).
    const THEM: u8 = 128;

    /// A catch-all subscription, `a-peer` connecting on stream 0, two messages from it
    /// polled, and one message back confirmed.
    fn exchange() -> Vec<Op> {
        vec![
            Op::Subscribe { filter: 0 },
            Op::Accept { peer: 0, cert: 0 },
            Op::Hello {
                stream: 0,
                peer: THEM,
                flaw: 0,
            },
            Op::Data { stream: 0 },
            Op::Data { stream: 0 },
            Op::Poll { sub: 0, count: 7 },
            Op::Respond { stream: 0 },
            Op::Sent {
                stream: 0,
                count: 3,
            },
        ]
    }

    #[test]
    fn core_ops_checks_the_core_after_every_step_and_once_stopped() {
        let bytes = encode_ops(&ROOMY, &exchange());
        let checks = checks_of(|| core_ops(&bytes));
        let ledgers = compared(&checks, "ledgers");
        assert_eq!(ledgers.len(), exchange().len() + 1, "{ledgers:#?}");
        assert!(ledgers[0].starts_with("Ledgers { stopped: false, promised: 0"));
        let last = ledgers.last().expect("checked");
        assert!(
            last.starts_with(
                "Ledgers { stopped: true, promised: 1, accounted: 1, accepted: 2, polled: 2, \
                 queued: 0, live: (0, 0, 0) }"
            ),
            "{last}"
        );
        let st = core_ops_stats(&bytes);
        assert_eq!((st.received, st.connections_opened), (2, 1));
    }

    #[test]
    fn core_ops_takes_at_most_512_steps_then_stops() {
        let bytes = encode_ops(&ROOMY, &vec![Op::AdvanceToDeadline; 600]);
        let ledgers = compared(&checks_of(|| core_ops(&bytes)), "ledgers");
        assert_eq!(ledgers.len(), 512 + 1);
        assert!(ledgers[512].contains("stopped: true"));
        // A stop among the steps is not repeated at the end.
        let bytes = encode_ops(&ROOMY, &[Op::Stop]);
        let ledgers = compared(&checks_of(|| core_ops(&bytes)), "ledgers");
        assert_eq!(ledgers.len(), 2, "the stop's own check and the step's");
    }

    /// A driver that has taken `ops` as `core_ops` does, checked after each, not stopped.
    fn driven(config: &OpsConfig, ops: &[Op]) -> Driver {
        let (config, tls) = config.config();
        let mut d = Driver::new(config, tls);
        let config = d.comm.config().clone();
        for op in ops {
            step(&mut d, &config, op.clone());
            d.check();
        }
        d
    }

    fn with_tls(mut config: OpsConfig) -> OpsConfig {
        config.0[11] = 1;
        config
    }

    fn hello(stream: u8, peer: u8, flaw: u8) -> Op {
        Op::Hello { stream, peer, flaw }
    }

    #[test]
    fn an_accepted_stream_leads_to_the_peer_its_selector_names() {
        // The selector wraps at the five peers and ourselves.
        let d = driven(
            &ROOMY,
            &[Op::Accept { peer: 7, cert: 0 }, hello(0, THEM, 0)],
        );
        let s = d.stream_order[0];
        assert_eq!(d.streams[&s].link.peer, 1);
        assert!(d.streams[&s].inbound);
        assert_eq!(d.conn_pki[&s], PkiId::from(PEERS[1]));
        // A claim below 128 names the peer claimed, wrapping the same way.
        let d = driven(&ROOMY, &[Op::Accept { peer: 0, cert: 0 }, hello(0, 9, 0)]);
        assert_eq!(d.conn_pki[&d.stream_order[0]], PkiId::from(PEERS[3]));
        // The certificate the remote presents: its own, none, a wrong one (TLS on).
        for (cert, failure) in [
            (3, None),
            (4, Some("no_tls_certificate")),
            (5, Some("tls_cert_hash_mismatch")),
        ] {
            let d = driven(
                &with_tls(ROOMY),
                &[Op::Accept { peer: 2, cert }, hello(0, THEM, 0)],
            );
            let st = d.comm.stats();
            match failure {
                None => assert_eq!(st.connections_opened, 1, "{cert}"),
                Some(label) => assert_eq!(st.handshake_failures_for(label), 1, "{cert}"),
            }
        }
    }

    #[test]
    fn each_flaw_of_a_hello_fails_its_own_check() {
        let outcome = |flaw: u8, tls: bool| {
            let config = if tls { with_tls(ROOMY) } else { ROOMY };
            let d = driven(
                &config,
                &[Op::Accept { peer: 0, cert: 0 }, hello(0, THEM, flaw)],
            );
            let st = d.comm.stats().clone();
            let s = d.stream_order[0];
            (st, d.conn_pki.get(&s).cloned(), d.comm.is_live_stream(s))
        };
        let (st, conn, live) = outcome(0, false);
        assert_eq!((conn, live), (Some(PkiId::from(PEERS[0])), true));
        assert_eq!(st.handshakes_ok, 1);
        // The flaw wraps at six.
        assert_eq!(outcome(6, false).1, Some(PkiId::from(PEERS[0])));
        for (flaw, label) in [
            (1, "bad_signature"),
            (2, "tls_cert_hash_mismatch"),
            (3, "wrong_type"),
            (4, "unsigned"),
            (7, "bad_signature"),
        ] {
            let (st, conn, live) = outcome(flaw, true);
            assert_eq!(st.handshake_failures_for(label), 1, "flaw {flaw}");
            assert_eq!(st.handshake_failures_total(), 1, "flaw {flaw}");
            assert!(conn.is_none() && !live, "flaw {flaw}");
        }
        let (st, conn, live) = outcome(5, false);
        assert_eq!(st.probed, 1);
        assert!(conn.is_none() && !live);
    }

    #[test]
    fn a_dial_result_presents_the_certificate_its_byte_picks() {
        let outcome = |cert: u8| {
            let d = driven(
                &with_tls(ROOMY),
                &[
                    Op::Send { peers: 0b1 },
                    Op::DialResult {
                        dial: 0,
                        ok: true,
                        cert,
                    },
                    Op::PingResult { dial: 0, ok: true },
                    hello(0, THEM, 0),
                ],
            );
            d.comm.stats().clone()
        };
        assert_eq!(outcome(3).connections_opened, 1);
        assert_eq!(outcome(4).handshake_failures_for("no_tls_certificate"), 1);
        assert_eq!(
            outcome(5).handshake_failures_for("tls_cert_hash_mismatch"),
            1
        );
        // Without TLS, no certificate is presented, whatever the byte.
        let d = driven(
            &ROOMY,
            &[
                Op::Send { peers: 0b1 },
                Op::DialResult {
                    dial: 0,
                    ok: true,
                    cert: 2,
                },
                Op::PingResult { dial: 0, ok: true },
                hello(0, THEM, 0),
            ],
        );
        assert_eq!(d.comm.stats().connections_opened, 1);
    }

    #[test]
    fn only_a_failed_attempt_of_a_live_dial_may_be_tried_again() {
        let mut config = ROOMY;
        config.0[0] = 7 | 1 << 3; // A dial timeout of 700 ms, retries from 20 ms.
        let dial = |ok| Op::DialResult {
            dial: 0,
            ok,
            cert: 0,
        };
        let d = driven(&config, &[Op::Send { peers: 0b1 }, dial(false)]);
        assert_eq!(d.dial_failed.len(), 1, "the failed attempt may be retried");
        let d = driven(&config, &[Op::Send { peers: 0b1 }, dial(true)]);
        assert!(
            d.dial_failed.is_empty(),
            "a connected attempt is not a failure"
        );
        // Nor a result for a dial the core closed.
        let d = driven(
            &config,
            &[
                Op::Send { peers: 0b1 },
                Op::Advance { millis: 800 },
                dial(false),
            ],
        );
        assert!(d.dials[&d.dial_order[0]].closed);
        assert!(d.dial_failed.is_empty());
    }

    #[test]
    fn handshake_cases_encode_field_by_field() {
        let case = HandshakeCase {
            role: 2,
            tls: true,
            cert: 1,
            expect: 2,
            late: true,
            first: HandshakeMessage::Raw(vec![7, 8]),
            later: vec![
                Later::Envelope(HandshakeMessage::crafted([1, 2, 3, 1, 4, 5, 6])),
                Later::Wait(0x1234),
                Later::End,
            ],
        };
        assert_eq!(
            encode_handshake(&case),
            [
                &[2, 1, 1, 2, 1][..],
                &[0, 2, 0, 7, 8],
                &[0, 1, 1, 2, 3, 1, 4, 5, 6],
                &[1, 0x34, 0x12],
                &[2],
            ]
            .concat()
        );
        for m in [
            HandshakeMessage::Raw(vec![9; 3]),
            HandshakeMessage::crafted([1, 2, 3, 1, 4, 5, 6]),
        ] {
            let mut o = Output::default();
            write_message(&mut o, &m);
            let bytes = o.into_bytes();
            let mut i = Input::new(&bytes);
            assert_eq!(read_message(&mut i), m);
            assert!(i.is_empty());
        }
        // Any odd first byte is a crafted message, any even one raw bytes.
        assert_eq!(
            read_message(&mut Input::new(&[3, 1, 2, 3, 1, 4, 5, 6])),
            HandshakeMessage::crafted([1, 2, 3, 1, 4, 5, 6])
        );
        assert_eq!(
            read_message(&mut Input::new(&[4, 1, 0, 9])),
            HandshakeMessage::Raw(vec![9])
        );
    }

    /// The Envelope and the ConnEstablish a crafted message builds, as the remote sends it
    /// to an accepting core (`inbound`) or to a dialling one.
    fn built(v: [u8; 7], inbound: bool) -> (Envelope, GossipMessage) {
        let env = Envelope::decode(build_message(&HandshakeMessage::crafted(v), inbound))
            .expect("an Envelope");
        let msg = GossipMessage::decode(env.payload.clone()).expect("a GossipMessage");
        (env, msg)
    }

    fn conn_of(msg: &GossipMessage) -> fabric_gossip_proto::gossip::ConnEstablish {
        match &msg.content {
            Some(gossip_message::Content::Conn(c)) => c.clone(),
            other => panic!("not a ConnEstablish: {other:?}"),
        }
    }

    #[test]
    fn a_crafted_hello_carries_each_choice() {
        let (env, msg) = built([0; 7], true);
        let c = conn_of(&msg);
        assert_eq!(c.pki_id.as_ref(), PEERS[0].as_bytes());
        assert_eq!(c.identity, c.pki_id);
        assert_eq!(c.tls_cert_hash.as_ref(), cert(0, true));
        assert!(!c.probe);
        assert_eq!(
            env.signature.as_ref(),
            TestOnlyHmacSecurity::hmac(&env.payload)
        );
        assert!(env.secret_envelope.is_none());
        assert_eq!(
            build_message(&HandshakeMessage::Raw(vec![1, 2]), true).as_ref(),
            [1, 2]
        );

        // Who it claims to be (the same for the identity), wrapping at seven.
        let names: [&[u8]; 6] = [
            PEERS[0].as_bytes(),
            PEERS[3].as_bytes(),
            ME.as_bytes(),
            b"",
            REJECTED.as_bytes(),
            EXPIRED.as_bytes(),
        ];
        for (k, name) in names.iter().enumerate() {
            let k = k as u8;
            assert_eq!(
                conn_of(&built([k, 0, 0, 0, 0, 0, 0], true).1)
                    .pki_id
                    .as_ref(),
                *name
            );
            assert_eq!(
                conn_of(&built([0, k, 0, 0, 0, 0, 0], true).1)
                    .identity
                    .as_ref(),
                *name
            );
            assert_eq!(
                conn_of(&built([k + 7, 0, 0, 0, 0, 0, 0], true).1)
                    .pki_id
                    .as_ref(),
                *name
            );
        }
        let large = conn_of(&built([6, 6, 0, 0, 0, 0, 0], true).1);
        assert_eq!(large.identity.as_ref(), vec![b'i'; MAX_IDENTITY + 1]);

        // The certificate hash: the claimed peer's for the role, a wrong one, none.
        let hash = |k: u8, inbound| conn_of(&built([1, 1, k, 0, 0, 0, 0], inbound).1).tls_cert_hash;
        assert_eq!(hash(0, true).as_ref(), cert(3, true));
        assert_eq!(hash(0, false).as_ref(), cert(3, false));
        assert_eq!(hash(1, true).as_ref(), WRONG_CERT);
        assert!(hash(2, true).is_empty());
        assert_eq!(hash(3, false).as_ref(), cert(3, false));
        assert!(conn_of(&built([0, 0, 0, 1, 0, 0, 0], true).1).probe);

        // The content: a ConnEstablish, a data message, nothing; wrapping at three.
        assert_eq!(built([0, 0, 0, 0, 1, 0, 0], true).1, data_message(1));
        assert_eq!(
            built([0, 0, 0, 0, 2, 0, 0], true).1,
            GossipMessage::default()
        );
        conn_of(&built([0, 0, 0, 0, 3, 0, 0], true).1);

        // The signature: good, none, one bit off, of other bytes; wrapping at four.
        let sig = |k: u8| {
            let (env, _) = built([0, 0, 0, 0, 0, k, 0], true);
            (
                env.signature.to_vec(),
                TestOnlyHmacSecurity::hmac(&env.payload).to_vec(),
            )
        };
        let (s, good) = sig(0);
        assert_eq!(s, good);
        assert!(sig(1).0.is_empty());
        // One bit off, whichever the bit was: over the seven claims, at least one good
        // signature starts with an odd byte.
        let mut odd = 0;
        for k in 0..7 {
            let (env, _) = built([k, 0, 0, 0, 0, 2, 0], true);
            let good = TestOnlyHmacSecurity::hmac(&env.payload);
            assert_eq!(env.signature[0], good[0] ^ 1, "{k}");
            assert_eq!(env.signature[1..], good[1..], "{k}");
            odd += good[0] & 1;
        }
        assert!(odd > 0);
        assert_eq!(sig(3).0, TestOnlyHmacSecurity::hmac(b"other"));
        assert_eq!(sig(4), sig(0));

        // The secret envelope: none, signed, unsigned; wrapping at three.
        let secret = |k: u8| built([0, 0, 0, 0, 0, 0, k], true).0.secret_envelope;
        let signed = secret(1).expect("a secret envelope");
        assert_eq!(signed.payload.as_ref(), b"secret");
        assert_eq!(
            signed.signature.as_ref(),
            TestOnlyHmacSecurity::hmac(b"secret")
        );
        let unsigned = secret(2).expect("a secret envelope");
        assert_eq!(unsigned.payload.as_ref(), b"secret");
        assert!(unsigned.signature.is_empty());
        assert!(secret(3).is_none());
    }

    #[test]
    fn the_oracle_names_each_check_a_crafted_hello_fails() {
        let cfg = Config {
            max_message_size: 4096,
            max_identity_size: MAX_IDENTITY,
            ..Config::default()
        }
        .with_tls(own_tls());
        let presented = Some(cert(3, true));
        let verdict = |v: [u8; 7]| {
            oracle(
                &build_message(&HandshakeMessage::crafted(v), true),
                &cfg,
                presented,
            )
        };
        let z = PkiId::from(PEERS[3]);
        assert_eq!(verdict([1, 1, 0, 0, 0, 0, 0]), Ok((z.clone(), false)));
        assert_eq!(verdict([1, 1, 0, 1, 0, 0, 0]), Ok((z.clone(), true)));
        assert_eq!(verdict([1, 1, 0, 0, 0, 0, 1]), Ok((z, false)));
        for (v, label) in [
            ([1, 1, 0, 0, 1, 0, 0], "wrong_type"),
            ([1, 1, 0, 0, 2, 0, 0], "wrong_type"),
            ([3, 1, 0, 0, 0, 0, 0], "no_pki_id"),
            ([2, 2, 0, 0, 0, 0, 0], "own_pki_id"),
            ([1, 6, 0, 0, 0, 0, 0], "identity_too_large"),
            ([1, 3, 0, 0, 0, 0, 0], "no_identity"),
            ([4, 4, 0, 0, 0, 0, 0], "invalid_identity"),
            ([1, 0, 0, 0, 0, 0, 0], "identity_mismatch"),
            ([5, 5, 0, 0, 0, 0, 0], "identity_expired"),
            ([1, 1, 1, 0, 0, 0, 0], "tls_cert_hash_mismatch"),
            ([1, 1, 2, 0, 0, 0, 0], "tls_cert_hash_mismatch"),
            ([1, 1, 0, 0, 0, 1, 0], "unsigned"),
            ([1, 1, 0, 0, 0, 2, 0], "bad_signature"),
            ([1, 1, 0, 0, 0, 3, 0], "bad_signature"),
            ([1, 1, 0, 0, 0, 0, 2], "bad_secret_envelope"),
        ] {
            assert_eq!(verdict(v), Err(label), "{v:?}");
        }
        // Without TLS the certificate hash is not looked at; nor is a missing one.
        let no_tls = Config {
            tls: None,
            ..cfg.clone()
        };
        let wrong_hash = build_message(&HandshakeMessage::crafted([1, 1, 1, 0, 0, 0, 0]), true);
        assert!(oracle(&wrong_hash, &no_tls, None).is_ok());
        assert_eq!(
            oracle(&wrong_hash, &cfg, None),
            Err("tls_cert_hash_mismatch")
        );
        let right_hash = build_message(&HandshakeMessage::crafted([1, 1, 0, 0, 0, 0, 0]), true);
        assert_eq!(
            oracle(&right_hash, &cfg, None),
            Err("tls_cert_hash_mismatch")
        );
        assert_eq!(oracle(&[0xff], &cfg, presented), Err("malformed"));
        // A payload that is no GossipMessage.
        let not_a_message = crate::scripted::envelope(vec![0xff], vec![1], None);
        assert_eq!(oracle(&not_a_message, &cfg, presented), Err("malformed"));
    }

    /// A valid hello of `z-peer` grown to exactly `len` bytes by an unknown field, which
    /// decoding skips.
    fn hello_of_length(len: usize) -> Vec<u8> {
        let mut bytes =
            build_message(&HandshakeMessage::crafted([1, 1, 0, 0, 0, 0, 0]), true).to_vec();
        // Field 15, length-delimited, with a three-byte length.
        let pad = len - bytes.len() - 4;
        let pad32 = u32::try_from(pad).expect("small");
        bytes.extend_from_slice(&[
            15 << 3 | 2,
            (pad32 & 0x7f) as u8 | 0x80,
            ((pad32 >> 7) & 0x7f) as u8 | 0x80,
            (pad32 >> 14) as u8,
        ]);
        bytes.resize(len, 0);
        assert_eq!(bytes.len(), len);
        bytes
    }

    #[test]
    fn the_oracle_refuses_a_first_message_one_byte_past_either_bound() {
        let cfg = |max_message_size| Config {
            max_message_size,
            max_identity_size: MAX_IDENTITY,
            ..Config::default()
        };
        let ok = Ok((PkiId::from(PEERS[3]), false));
        // The message limit.
        assert_eq!(oracle(&hello_of_length(4096), &cfg(4096), None), ok);
        assert_eq!(
            oracle(&hello_of_length(4097), &cfg(4096), None),
            Err("malformed")
        );
        // The identity limit and 64 KiB, when the message limit is higher.
        let bound = MAX_IDENTITY + 64 * 1024;
        assert_eq!(oracle(&hello_of_length(bound), &cfg(usize::MAX), None), ok);
        assert_eq!(
            oracle(&hello_of_length(bound + 1), &cfg(usize::MAX), None),
            Err("malformed")
        );
    }

    /// A `handshake` case with a data message and a wait after the first message.
    fn case(role: u8, tls: bool, cert: u8, expect: u8, first: [u8; 7]) -> HandshakeCase {
        HandshakeCase {
            role,
            tls,
            cert,
            expect,
            late: false,
            first: HandshakeMessage::crafted(first),
            later: vec![
                Later::Envelope(HandshakeMessage::Raw(
                    SignedMessage::noop(data_message(5))
                        .envelope_bytes()
                        .to_vec(),
                )),
                Later::Wait(10),
            ],
        }
    }

    /// What the `handshake` target's checks compared for `case`: the oracle's verdict by
    /// role, and for each later Envelope on an established stream the ways it went.
    fn handshake_checks(case: &HandshakeCase) -> (Vec<String>, Vec<String>) {
        let checks = checks_of(|| handshake(&encode_handshake(case)));
        (
            compared(&checks, "handshake"),
            compared(&checks, "established"),
        )
    }

    #[test]
    fn each_role_of_the_handshake_target_checks_the_oracles_verdict() {
        let z = "(0, Ok((z-peer:7051, false)))";
        assert_eq!(
            handshake_checks(&case(0, false, 0, 0, [1, 1, 0, 0, 0, 0, 0])),
            (vec![z.to_owned()], vec!["1".to_owned()])
        );
        // Dialling a-peer and finding z-peer: checked, and no connection to send on.
        for (role, expect) in [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)] {
            let (verdicts, established) =
                handshake_checks(&case(role, false, 0, expect, [1, 1, 0, 0, 0, 0, 0]));
            assert_eq!(
                verdicts,
                vec![format!("({role}, Ok((z-peer:7051, false)))")],
                "{role} {expect}"
            );
            let connected = role == 1 && expect != 0;
            assert_eq!(established.len(), usize::from(connected), "{role} {expect}");
        }
        // The probe flag: a prober let go on a stream it opened, a failure on ours.
        assert_eq!(
            handshake_checks(&case(0, false, 0, 0, [1, 1, 0, 1, 0, 0, 0])),
            (vec!["(0, Ok((z-peer:7051, true)))".to_owned()], vec![])
        );
        for (role, expect) in [(1, 0), (1, 1), (2, 0), (2, 2)] {
            assert_eq!(
                handshake_checks(&case(role, false, 0, expect, [1, 1, 0, 1, 0, 0, 0])),
                (vec![format!(r#"({role}, Err("probe_answer"))"#)], vec![]),
                "{role} {expect}"
            );
        }
        // Every role reads the first message wrapping at three.
        assert_eq!(
            handshake_checks(&case(3, false, 0, 0, [1, 1, 0, 0, 0, 0, 0])).0,
            vec![z.to_owned()]
        );
        assert_eq!(
            handshake_checks(&case(0, false, 0, 0, [1, 1, 0, 0, 0, 2, 0])),
            (vec![r#"(0, Err("bad_signature"))"#.to_owned()], vec![])
        );
        // TLS: the certificate the remote presents, wrapping at three.
        let a = "(0, Ok((a-peer:7051, false)))";
        for (cert, verdict) in [(0, a), (2, r#"(0, Err("tls_cert_hash_mismatch"))"#), (3, a)] {
            assert_eq!(
                handshake_checks(&case(0, true, cert, 0, [0; 7])).0,
                vec![verdict.to_owned()],
                "{cert}"
            );
        }
        // No certificate, or a first message after the deadline: nothing left to check.
        assert_eq!(
            handshake_checks(&case(0, true, 1, 0, [1, 1, 0, 0, 0, 0, 0])),
            (vec![], vec![])
        );
        let late = HandshakeCase {
            late: true,
            ..case(0, false, 0, 0, [1, 1, 0, 0, 0, 0, 0])
        };
        assert_eq!(handshake_checks(&late), (vec![], vec![]));
    }

    #[test]
    fn later_envelopes_on_an_established_stream_are_each_accounted_for() {
        let mut c = case(0, false, 0, 0, [1, 1, 0, 0, 0, 0, 0]);
        let ack = GossipMessage {
            nonce: 9,
            content: Some(gossip_message::Content::Ack(Acknowledgement::default())),
            ..GossipMessage::default()
        };
        let ack = SignedMessage::noop(ack).envelope_bytes().to_vec();
        c.later = vec![
            Later::Envelope(HandshakeMessage::Raw(vec![])),
            Later::Envelope(HandshakeMessage::crafted([1, 1, 0, 0, 1, 0, 0])),
            Later::Wait(100),
            Later::Envelope(HandshakeMessage::Raw(ack)),
            Later::Envelope(HandshakeMessage::crafted([1, 1, 0, 0, 1, 0, 0])),
            Later::Envelope(HandshakeMessage::Raw(vec![0x0a, 2, 0xff, 0xff])),
            Later::End,
            Later::Envelope(HandshakeMessage::crafted([1, 1, 0, 0, 1, 0, 0])),
        ];
        // Empty, delivered, an unmatched ack, delivered, malformed (which ends the
        // stream); none after that.
        assert_eq!(handshake_checks(&c).1, ["1"; 5]);
        // The later inputs are read wrapping at three: 3 is another Envelope.
        let mut bytes = encode_handshake(&case(0, false, 0, 0, [1, 1, 0, 0, 0, 0, 0]));
        bytes.truncate(
            encode_handshake(&HandshakeCase {
                later: vec![],
                ..case(0, false, 0, 0, [1, 1, 0, 0, 0, 0, 0])
            })
            .len(),
        );
        bytes.extend_from_slice(&[3, 0, 3, 0, 0xff, 0xff, 0xff]);
        let checks = checks_of(|| handshake(&bytes));
        assert_eq!(compared(&checks, "established"), ["1"]);
    }

    #[test]
    fn the_envelope_target_checks_verification_against_its_oracle() {
        let sec = TestOnlyHmacSecurity::new("fuzz");
        let payload = data_message(1).encode_to_vec();
        let sign = |p: &[u8]| TestOnlyHmacSecurity::hmac(p).to_vec();
        let secret = |sig: Vec<u8>| {
            Some(SecretEnvelope {
                payload: Bytes::from_static(b"secret"),
                signature: sig.into(),
            })
        };
        let verdict = |bytes: Bytes| compared(&checks_of(|| envelope(&bytes)), "verifies");
        for (bytes, expected) in [
            (
                crate::scripted::envelope(payload.clone(), sign(&payload), None),
                "true",
            ),
            (
                crate::scripted::envelope(payload.clone(), vec![], None),
                "false",
            ),
            (
                crate::scripted::envelope(payload.clone(), vec![1; 32], None),
                "false",
            ),
            (crate::scripted::envelope(vec![], sign(&[]), None), "false"),
            (
                crate::scripted::envelope(payload.clone(), sign(&payload), secret(sign(b"secret"))),
                "true",
            ),
            (
                crate::scripted::envelope(payload.clone(), sign(&payload), secret(vec![])),
                "false",
            ),
            (
                crate::scripted::envelope(payload.clone(), sign(&payload), secret(vec![2; 32])),
                "false",
            ),
            (
                crate::scripted::envelope(payload.clone(), vec![], secret(sign(b"secret"))),
                "false",
            ),
        ] {
            let env = Envelope::decode(bytes.clone()).expect("an Envelope");
            assert_eq!(
                verify_envelope(&sec, b"fuzz", &env).is_ok().to_string(),
                expected
            );
            assert_eq!(verdict(bytes), [expected]);
        }
        // What does not decode has no verdict to check.
        assert_eq!(verdict(Bytes::from_static(&[0xff])), Vec::<String>::new());
        // A signed Envelope whose payload is no GossipMessage is still verified.
        let junk = [0x0a, 1, 0xff];
        let bytes = crate::scripted::envelope(junk.to_vec(), sign(&junk), None);
        assert_eq!(verdict(bytes), ["true"]);
    }

    #[test]
    fn the_gossip_message_target_feeds_each_message_to_an_established_connection() {
        let received = |msg: &GossipMessage| {
            let bytes = msg.encode_to_vec();
            compared(&checks_of(|| gossip_message(&bytes)), "received")
        };
        assert_eq!(received(&data_message(3)), ["Some(\"data_msg\")"]);
        assert_eq!(received(&GossipMessage::default()), ["None"]);
        let ack = GossipMessage {
            nonce: 4,
            content: Some(gossip_message::Content::Ack(Acknowledgement::default())),
            ..GossipMessage::default()
        };
        assert_eq!(received(&ack), ["Some(\"ack\")"]);
        assert_eq!(
            compared(&checks_of(|| gossip_message(&[0xff])), "received"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_cast_gives_every_peer_and_role_its_own_certificate() {
        let mut all = BTreeSet::new();
        for k in 0..=PEERS.len() {
            for client in [true, false] {
                assert!(all.insert(cert(k, client)), "{k} {client}");
            }
        }
        assert!(!all.contains(&WRONG_CERT));
        assert_eq!(cert(1, true), [0x11; 32]);
        assert_eq!(cert(2, false), [0x82; 32]);
        assert_eq!(
            (own_tls().client_cert_hash, own_tls().server_cert_hash),
            (cert(PEERS.len(), true), cert(PEERS.len(), false))
        );
        for k in 0..=PEERS.len() {
            let name = PEERS.get(k).copied().unwrap_or(ME);
            assert_eq!(Driver::peer_of_endpoint(name), k);
        }
        assert_eq!(Driver::peer_of_endpoint("elsewhere:1"), PEERS.len());
    }

    #[test]
    fn the_casts_hellos_carry_the_certificate_hash_asked_for() {
        let hash = |k, inbound, kind| {
            let env = Envelope::decode(d_hello(k, inbound, kind)).expect("an Envelope");
            let msg = GossipMessage::decode(env.payload).expect("a GossipMessage");
            conn_of(&msg).tls_cert_hash.to_vec()
        };
        assert_eq!(hash(2, true, 0), cert(2, true));
        assert_eq!(hash(2, false, 0), cert(2, false));
        assert_eq!(hash(9, false, 0), cert(PEERS.len(), false));
        assert_eq!(hash(2, true, 1), WRONG_CERT);
        assert!(hash(2, true, 2).is_empty());
        assert_eq!(hash(2, true, 3), cert(2, true));
        assert!(is_conn_establish(&d_hello(0, true, 0)));
        let data = SignedMessage::noop(data_message(2))
            .envelope_bytes()
            .clone();
        assert!(!is_conn_establish(&data));
        assert!(!is_conn_establish(&Bytes::from_static(&[0xff])));
        assert_eq!(data_seq(&data_message(7)), Some(7));
        assert_eq!(
            data_seq(&crate::data_message(7, Bytes::from_static(b"other"))),
            None
        );
        let st = Stats {
            sent: 3,
            ..Stats::default()
        };
        let mut st = st;
        st.handshake_failures[1] = 5;
        let c = counters(&st);
        assert_eq!(c.len(), st.counters().len() + st.handshake_failures.len());
        assert_eq!(c[0], 3);
        assert_eq!(c[st.counters().len() + 1], 5);
    }

    #[test]
    fn the_casts_provider_refuses_revoked_and_expired_identities() {
        let sec = security();
        let ok =
            |id: &str, at: Instant| crate::Security::validate_identity(&sec, id.as_bytes(), at);
        let expiry = |id: &str| crate::Security::expiration(&sec, id.as_bytes()).expect("known");
        assert!(ok(PEERS[0], t0()).is_ok());
        assert_eq!(expiry(PEERS[0]), None);
        assert_eq!(expiry(EXPIRED), Some(t0() - Duration::from_secs(1)));
        assert_eq!(expiry(PEERS[4]), Some(t0() + Duration::from_secs(3)));
        assert!(ok(REJECTED, t0()).is_err());
        sec.revoked
            .lock()
            .expect("not poisoned")
            .insert(PEERS[0].as_bytes().to_vec());
        assert!(matches!(
            ok(PEERS[0], t0()),
            Err(crate::SecurityError::Revoked(_))
        ));
        assert!(ok(PEERS[1], t0()).is_ok());
        assert_eq!(t0(), Instant::from_unix_secs(1_700_000_000));
        // It signs as Fabric's test provider does (what the core's hello carries).
        let sig = crate::Security::sign(&sec, b"hello").expect("signs");
        assert_eq!(sig.as_ref(), TestOnlyHmacSecurity::hmac(b"hello"));
        assert!(crate::Security::verify(&sec, ME.as_bytes(), &sig, b"hello").is_ok());
        assert_eq!(crate::Security::own_identity(&sec).as_ref(), ME.as_bytes());
        // Organizations as the test provider has them (the cast names none: empty).
        let plain = TestOnlyHmacSecurity::new(ME);
        for id in [PEERS[0], PEERS[4], ME] {
            let org = crate::Security::organization_of(&sec, id.as_bytes());
            assert!(org.is_some(), "{id}");
            assert_eq!(org, crate::Security::organization_of(&plain, id.as_bytes()));
            let claimed = crate::Security::claimed_organization(&sec, id.as_bytes());
            assert!(claimed.is_some(), "{id}");
            assert_eq!(
                claimed,
                crate::Security::claimed_organization(&plain, id.as_bytes())
            );
        }
    }

    #[test]
    fn subscriptions_take_all_even_or_odd_sequence_numbers() {
        let data = vec![Op::Data { stream: 0 }; 4];
        let ops = [
            vec![
                Op::Subscribe { filter: 0 },
                Op::Subscribe { filter: 1 },
                Op::Subscribe { filter: 2 },
                Op::Subscribe { filter: 3 },
                Op::Accept { peer: 0, cert: 0 },
                hello(0, THEM, 0),
            ],
            data,
        ]
        .concat();
        let (cfg, _) = ROOMY.config();
        let cfg = Config {
            max_subscriptions: 4,
            subscription_buffer: 4,
            ..cfg
        };
        let mut d = Driver::new(cfg, 0);
        let cfg = d.comm.config().clone();
        for op in ops {
            step(&mut d, &cfg, op);
            d.check();
        }
        let hits: Vec<u64> = d
            .sub_order
            .iter()
            .map(|s| d.subs[s].load(Ordering::Relaxed))
            .collect();
        assert_eq!(hits, [4, 2, 2, 4]);
        let seqs = |d: &mut Driver, k: usize| {
            let sub = d.sub_order[k];
            let mut v = Vec::new();
            while let Some(m) = d.comm.poll_delivery(sub) {
                v.push(data_seq(&m.message).expect("ours"));
            }
            v
        };
        assert_eq!(seqs(&mut d, 1), [2, 4]);
        assert_eq!(seqs(&mut d, 2), [1, 3]);
    }

    /// A driver with `a-peer` connected on stream 0, room for 32 messages and operations
    /// and for 8 deliveries a subscription.
    fn roomy_connection() -> (Driver, Config) {
        let (cfg, _) = ROOMY.config();
        let cfg = Config {
            send_buffer_size: 32,
            write_window: 32,
            max_operations: 32,
            subscription_buffer: 8,
            ..cfg
        };
        let mut d = Driver::new(cfg, 0);
        let cfg = d.comm.config().clone();
        for op in [Op::Accept { peer: 0, cert: 0 }, hello(0, THEM, 0)] {
            step(&mut d, &cfg, op);
        }
        (d, cfg)
    }

    #[test]
    fn the_driver_notes_the_last_sixteen_nonces_it_sees_written() {
        let (mut d, cfg) = roomy_connection();
        let ack = Op::SendWithAck {
            peers: 0b1,
            min_ack: 1,
            timeout: 10,
        };
        for _ in 0..20 {
            step(&mut d, &cfg, ack.clone());
            d.check();
        }
        assert_eq!(d.sent.data_writes, 20);
        assert_eq!(d.nonces.len(), 16);
        assert!(d.nonces.iter().all(|n| *n != 0));
        let distinct: BTreeSet<_> = d.nonces.iter().collect();
        assert_eq!(distinct.len(), 16);
        // An ack for the first nonce noted completes its operation.
        let first = d.nonces[0];
        assert_eq!(d.ops.len(), 20);
        step(
            &mut d,
            &cfg,
            Op::AckIn {
                stream: 0,
                nonce: 0,
                error: false,
            },
        );
        d.check();
        assert_eq!(d.ops.len(), 19);
        assert_eq!(d.comm.stats().acks_unmatched, 0);
        // A made-up nonce (none noted) matches nothing.
        let mut d = roomy_connection().0;
        step(
            &mut d,
            &cfg,
            Op::AckIn {
                stream: 0,
                nonce: 7,
                error: true,
            },
        );
        assert_eq!(d.comm.stats().acks_unmatched, 1);
        assert_ne!(first, 7);
    }

    #[test]
    fn sends_refused_at_once_are_not_promised() {
        let ack = |peers| Op::SendWithAck {
            peers,
            min_ack: 1,
            timeout: 10,
        };
        // No room to queue for a-peer, no connection slot for b-peer: both refused at once.
        let (cfg, _) = ROOMY.config();
        let cfg = Config {
            max_connections: 0,
            send_buffer_size: 0,
            max_waiting_sends: 0,
            ..cfg
        };
        let mut d = Driver::new(cfg, 0);
        let cfg = d.comm.config().clone();
        step(&mut d, &cfg, ack(0b11));
        d.stop();
        assert_eq!((d.sent.units, d.sent.wouldblock), (2, 2));
        // A second peer of unknown PKI-ID while the first one's dial is in progress.
        let (cfg, _) = ROOMY.config();
        let mut d = Driver::new(cfg.clone(), 0);
        let checks = checks_of(|| {
            step(&mut d, &cfg, ack(0b1 | 1 << 5));
            step(&mut d, &cfg, ack(0b10 | 1 << 5));
            d.stop();
        });
        assert_eq!((d.sent.units, d.sent.wouldblock), (2, 1), "{checks:?}");
        // The last check holds the promised message to what became of it.
        assert!(
            compared(&checks, "ledgers")
                .last()
                .is_some_and(|l| l.contains("stopped: true, promised: 1, accounted: 1")),
            "{checks:?}"
        );
    }

    #[test]
    fn time_advances_by_what_the_driver_asks() {
        let (mut d, _) = roomy_connection();
        d.advance(Duration::from_millis(1500));
        assert_eq!(d.now, t0() + Duration::from_millis(1500));
        d.advance(Duration::from_millis(500));
        assert_eq!(d.now, t0() + Duration::from_secs(2));
    }

    #[test]
    fn input_reads_missing_bytes_as_zero_and_output_writes_what_it_reads() {
        let mut i = Input::new(&[7, 0x34, 0x12, 3, 2, 3, 0, 1, 2]);
        assert_eq!(i.u8(), 7);
        assert_eq!(i.u16(), 0x1234);
        assert!(i.bool());
        assert!(!i.bool());
        // A blob longer than what is left takes what is left.
        assert_eq!(i.blob(), [1, 2]);
        assert!(i.is_empty());
        assert_eq!((i.u8(), i.u16(), i.bool()), (0, 0, false));
        assert_eq!(i.blob(), [0u8; 0]);
        assert!(!Input::new(&[1]).is_empty());

        let mut o = Output::default();
        o.u8(7);
        o.u16(0x1234);
        o.bool(true);
        o.bool(false);
        o.bytes(&[5, 6]);
        o.blob(&[1, 2]);
        assert_eq!(o.into_bytes(), [7, 0x34, 0x12, 1, 0, 5, 6, 2, 0, 1, 2]);
        // A blob is cut at the largest length it can say.
        let mut o = Output::default();
        o.blob(&vec![9; usize::from(u16::MAX) + 3]);
        let bytes = o.into_bytes();
        assert_eq!(bytes.len(), 2 + usize::from(u16::MAX));
        assert_eq!(bytes[..2], [0xff, 0xff]);
        let mut i = Input::new(&bytes);
        assert_eq!(i.blob().len(), usize::from(u16::MAX));
        assert!(i.is_empty());
    }

    /// A fresh folder of the test's own under the system's temporary folder.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fabric-gossip-core-fuzzing-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        dir
    }

    fn panics_on_x(data: &[u8]) {
        assert!(!data.contains(&b'x'), "a finding");
    }

    #[test]
    fn corpus_files_are_replayed_and_their_seeds_compared() {
        if std::env::var_os("UPDATE_FUZZ_CORPUS").is_some() {
            return; // The seeds would be rewritten, not compared.
        }
        let dir = scratch("corpus");
        std::fs::write(dir.join("seed-a"), b"aaa").expect("written");
        std::fs::write(dir.join("seed-b"), b"bxb").expect("written");
        std::fs::write(dir.join("crash-c"), b"ccc").expect("written");
        assert!(seed_in_step(&dir.join("seed-a"), b"aaa").expect("read"));
        assert!(!seed_in_step(&dir.join("seed-a"), b"aab").expect("read"));
        assert!(!seed_in_step(&dir.join("seed-none"), b"").expect("read"));

        let (files, failing) = replay_corpus(&dir, panics_on_x).expect("replayed");
        assert_eq!(files, 3);
        assert_eq!(failing, [dir.join("seed-b")]);

        let stale =
            stale_seeds(&dir, [("a", b"aaa".to_vec()), ("b", b"bbb".to_vec())]).expect("compared");
        assert_eq!(stale, [dir.join("seed-b").display().to_string()]);

        let check = |seeds: Vec<(&str, Vec<u8>)>| {
            std::panic::catch_unwind(|| check_corpus(&dir, panics_on_x, seeds, "p"))
                .err()
                .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
        };
        let stale = check(vec![("a", b"aab".to_vec())]).expect("stale");
        assert!(
            stale.contains("seeds differ") && stale.contains("-p p "),
            "{stale}"
        );
        let failing = check(vec![("a", b"aaa".to_vec())]).expect("a failing file");
        assert!(failing.contains("failing corpus inputs"), "{failing}");
        std::fs::write(dir.join("seed-b"), b"bbb").expect("written");
        assert_eq!(
            check(vec![("a", b"aaa".to_vec()), ("b", b"bbb".to_vec())]),
            None
        );
        let fewer = check(vec![
            ("a", b"aaa".to_vec()),
            ("b", b"bbb".to_vec()),
            ("c", b"ccc".to_vec()),
            ("d", b"ddd".to_vec()),
        ]);
        assert!(fewer.is_some(), "a seed missing from the folder is stale");
        // As many files as seeds.
        std::fs::remove_file(dir.join("crash-c")).expect("removed");
        assert_eq!(
            check(vec![("a", b"aaa".to_vec()), ("b", b"bbb".to_vec())]),
            None
        );
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn every_op_that_makes_a_message_numbers_it_anew() {
        let (mut d, cfg) = roomy_connection();
        let ops = [
            Op::Send { peers: 0b1 },
            Op::SendWait { peer: 0 },
            Op::SendWithAck {
                peers: 0b1,
                min_ack: 1,
                timeout: 10,
            },
            Op::Respond { stream: 0 },
            Op::Data { stream: 0 },
        ];
        for (n, op) in ops.into_iter().enumerate() {
            step(&mut d, &cfg, op.clone());
            d.check();
            assert_eq!(d.seq, n as u64 + 1, "{op:?}");
        }
        assert_eq!(d.sent.units, 4);
        assert_eq!(d.sent.data_writes, 4);
    }

    #[test]
    fn sent_confirms_up_to_three_writes() {
        let in_flight = |count: u8| {
            let (mut d, cfg) = roomy_connection();
            for _ in 0..4 {
                step(&mut d, &cfg, Op::Send { peers: 0b1 });
            }
            step(&mut d, &cfg, Op::Sent { stream: 0, count });
            d.check();
            let s = d.stream_order[0];
            d.comm.send_queue_len(s).expect("live").in_flight
        };
        // Four data writes in flight (a handshake's write is never confirmed).
        assert_eq!(in_flight(0), 4);
        assert_eq!(in_flight(2), 2);
        assert_eq!(in_flight(6), 2);
        assert_eq!(in_flight(3), 1);
    }

    #[test]
    fn send_with_ack_takes_its_time_out_and_quorum_from_its_bytes() {
        // Two peers connected and a SendWithAck to both: 18 is 200 ms (in 100 ms, modulo
        // 16); 6 is two acks (modulo 4).
        let awaiting_acks = || {
            let (mut d, cfg) = roomy_connection();
            for op in [Op::Accept { peer: 1, cert: 0 }, hello(1, THEM, 0)] {
                step(&mut d, &cfg, op);
            }
            let send = Op::SendWithAck {
                peers: 0b11,
                min_ack: 6,
                timeout: 18,
            };
            step(&mut d, &cfg, send);
            (d, cfg)
        };
        let ack = |stream, k| Op::AckIn {
            stream,
            nonce: k,
            error: false,
        };
        let (mut d, cfg) = awaiting_acks();
        step(&mut d, &cfg, ack(0, 0));
        assert_eq!(d.ops.len(), 1, "one ack of the two asked for");
        d.advance(Duration::from_millis(150));
        assert_eq!(d.ops.len(), 1, "not yet timed out");
        d.advance(Duration::from_millis(100));
        assert!(d.ops.is_empty(), "timed out at 200 ms");
        d.check();

        let (mut d, cfg) = awaiting_acks();
        step(&mut d, &cfg, ack(0, 0));
        step(&mut d, &cfg, ack(1, 0));
        assert!(d.ops.is_empty(), "both acks in");
        d.check();

        // Of three peers, two acks are enough.
        let (mut d, cfg) = roomy_connection();
        for op in [
            Op::Accept { peer: 1, cert: 0 },
            hello(1, THEM, 0),
            Op::Accept { peer: 2, cert: 0 },
            hello(2, THEM, 0),
            Op::SendWithAck {
                peers: 0b111,
                min_ack: 6,
                timeout: 18,
            },
            ack(0, 0),
        ] {
            step(&mut d, &cfg, op);
        }
        assert_eq!(d.ops.len(), 1);
        step(&mut d, &cfg, ack(1, 0));
        assert!(d.ops.is_empty(), "two acks of three are enough");
        d.check();
    }

    #[test]
    fn a_handle_made_up_from_parts_is_checked_as_live_exactly_when_it_is() {
        let (mut d, cfg) = roomy_connection();
        step(&mut d, &cfg, Op::Send { peers: 0b100 });
        let sub = d.subscribe(0);
        let (s, x) = (d.stream_order[0], d.dial_order[0]);
        let part = |v: u32, wrap: u32| u8::try_from(v + wrap).expect("small");
        let stale = |kind, index, generation| Op::StaleHandle {
            kind,
            index,
            generation,
        };
        // Each part wraps: kind at three, index at eight, generation at four.
        let ops = [
            stale(3, part(s.index(), 8), part(s.generation(), 4)),
            stale(4, part(x.index(), 8), part(x.generation(), 4)),
            stale(5, part(sub.index(), 8), part(sub.generation(), 4)),
            stale(0, part(s.index(), 1), part(s.generation(), 0)),
            stale(1, part(x.index(), 0), part(x.generation(), 1)),
            stale(2, part(sub.index(), 1), part(sub.generation(), 0)),
        ];
        let checks = checks_of(|| {
            for op in ops {
                step(&mut d, &cfg, op);
            }
        });
        let other = |v: u32| (v + 1) % 8;
        assert_eq!(
            compared(&checks, "stale stream"),
            [
                format!("({s:?}, true)"),
                format!("({:?}, false)", StreamId::from_parts(other(s.index()), 0)),
            ]
        );
        assert_eq!(
            compared(&checks, "stale dial"),
            [
                format!("({x:?}, true)"),
                format!("({:?}, false)", DialId::from_parts(x.index(), 1)),
            ]
        );
        // A live subscription is not checked as stale; another one is.
        assert_eq!(
            compared(&checks, "stale subscription"),
            [format!(
                "{:?}",
                SubscriptionId::from_parts(other(sub.index()), 0)
            )]
        );
        assert!(d.dial_failed.contains(&x));
    }

    #[test]
    fn a_poll_takes_its_count_modulo_eight_plus_one() {
        let (mut d, cfg) = roomy_connection();
        d.subscribe(0);
        for _ in 0..6 {
            step(&mut d, &cfg, Op::Data { stream: 0 });
        }
        step(&mut d, &cfg, Op::Poll { sub: 0, count: 10 });
        d.check();
        assert_eq!(d.delivered.polled, 3);
    }

    #[test]
    fn an_ack_out_acks_and_numbers_no_message() {
        let (mut d, cfg) = roomy_connection();
        let writes = d.sent.data_writes;
        step(
            &mut d,
            &cfg,
            Op::AckOut {
                stream: 0,
                nonce: 5,
            },
        );
        d.check();
        assert_eq!(d.seq, 0, "an ack is no new message");
        assert_eq!(d.sent.data_writes, writes + 1);
    }

    #[test]
    fn a_revocation_disconnects_the_peer_its_byte_names() {
        let (mut d, cfg) = roomy_connection();
        for op in [
            Op::Accept { peer: 1, cert: 0 },
            hello(1, THEM, 0),
            Op::Accept { peer: 2, cert: 0 },
            hello(2, THEM, 0),
        ] {
            step(&mut d, &cfg, op);
        }
        assert_eq!(d.comm.connections().len(), 3);
        // 7 is y-peer (modulo five).
        step(&mut d, &cfg, Op::Revoke { peer: 7 });
        d.check();
        assert!(d.comm.connection(&PkiId::from(PEERS[2])).is_none());
        assert!(d.comm.connection(&PkiId::from(PEERS[1])).is_some());
        assert!(d.comm.connection(&PkiId::from(PEERS[0])).is_some());
    }

    #[test]
    fn messages_waiting_in_a_queue_are_accounted_for_while_they_wait() {
        // One write in flight (a window of 0 counts as 1), one in the buffer, two waiting.
        let (cfg, _) = ROOMY.config();
        let cfg = Config {
            write_window: 0,
            send_buffer_size: 1,
            max_waiting_sends: 2,
            ..cfg
        };
        let mut d = Driver::new(cfg, 0);
        let cfg = d.comm.config().clone();
        for op in [Op::Accept { peer: 0, cert: 0 }, hello(0, THEM, 0)] {
            step(&mut d, &cfg, op);
        }
        let ops = [
            Op::Send { peers: 0b1 },
            Op::SendWait { peer: 0 },
            Op::SendWait { peer: 0 },
            Op::SendWait { peer: 0 },
        ];
        let checks = checks_of(|| {
            for op in ops {
                step(&mut d, &cfg, op);
                d.check();
            }
        });
        let q = d.comm.send_queue_len(d.stream_order[0]).expect("live");
        assert_eq!((q.buffered, q.waiting, q.in_flight), (1, 2, 1));
        let ledgers = compared(&checks, "ledgers");
        assert_eq!(ledgers.len(), 4);
        for (n, l) in ledgers.iter().enumerate() {
            let n = n + 1;
            assert!(
                l.contains(&format!("promised: {n}, accounted: {n},")),
                "{l}"
            );
        }
    }

    #[test]
    fn the_handshake_target_checks_its_bounds_expectations_and_deadline() {
        let verdicts = |c: &HandshakeCase| handshake_checks(c).0;
        // The message and identity limits it sets: 4,096 bytes, 300.
        let mut c = case(0, false, 0, 0, [0; 7]);
        c.first = HandshakeMessage::Raw(hello_of_length(4097));
        assert_eq!(verdicts(&c), [r#"(0, Err("malformed"))"#]);
        assert_eq!(
            verdicts(&case(0, false, 0, 0, [6, 6, 0, 0, 0, 0, 0])),
            [r#"(0, Err("identity_too_large"))"#]
        );
        // Expecting no PKI-ID in particular, a dialling core takes a-peer too.
        assert_eq!(
            handshake_checks(&case(1, false, 0, 1, [0; 7])).1.len(),
            1,
            "connected"
        );
        // A handshake() finding another peer than expected is checked as a mismatch.
        let mismatch = |expect| {
            let checks =
                checks_of(|| handshake(&encode_handshake(&case(2, false, 0, expect, [0; 7]))));
            compared(&checks, "pki_id_mismatch")
        };
        assert_eq!(mismatch(2), ["(z-peer:7051, a-peer:7051)"]);
        assert_eq!(mismatch(0), Vec::<String>::new());
        assert_eq!(mismatch(1), Vec::<String>::new());
        // A dialled server presenting no certificate with TLS on: refused before reading.
        assert_eq!(
            handshake_checks(&case(1, true, 1, 1, [0; 7])),
            (vec![], vec![])
        );
        // Every role's deadline, checked as a time-out unless refused before it.
        for (role, tls, cert, timed_out) in [
            (0, false, 0, true),
            (0, false, 1, true),
            (1, false, 1, true),
            (0, true, 1, false),
        ] {
            let late = HandshakeCase {
                late: true,
                ..case(role, tls, cert, 0, [0; 7])
            };
            let checks = checks_of(|| handshake(&encode_handshake(&late)));
            assert_eq!(
                compared(&checks, "timed out"),
                if timed_out {
                    vec![role.to_string()]
                } else {
                    vec![]
                },
                "{role} {tls} {cert}"
            );
        }
    }

    #[test]
    fn the_oracle_takes_an_identity_exactly_at_its_bound_and_no_empty_secret() {
        let cfg = Config {
            max_message_size: 4096,
            max_identity_size: MAX_IDENTITY,
            ..Config::default()
        };
        let at_bound = vec![b'i'; MAX_IDENTITY];
        let bytes = crate::scripted::conn_establish(&at_bound, &at_bound, &[], false, true);
        assert_eq!(
            oracle(&bytes, &cfg, None),
            Ok((PkiId::from(at_bound), false))
        );
        // A secret envelope with an empty payload, signed as such, is refused.
        let env = Envelope::decode(build_message(
            &HandshakeMessage::crafted([1, 1, 0, 0, 0, 0, 0]),
            true,
        ))
        .expect("an Envelope");
        let env = Envelope {
            secret_envelope: Some(SecretEnvelope {
                payload: Bytes::new(),
                signature: Bytes::copy_from_slice(&TestOnlyHmacSecurity::hmac(b"")),
            }),
            ..env
        };
        assert_eq!(
            oracle(&env.encode_to_vec(), &cfg, None),
            Err("bad_secret_envelope")
        );
    }
}
