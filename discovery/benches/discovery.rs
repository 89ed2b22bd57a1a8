//! How many alive messages per second one membership layer processes, signature checks
//! included, with real MSP identities (ECDSA P-256 X.509): each message goes through the
//! whole direct-alive path (parse, de-dup store, identity lookup, ECDSA verification of
//! the envelope and of its secret, membership update); and the certstore's check of one
//! pulled identity message.
//!
//! And what a member of a 1,000-member view does most (test HMAC identities, so that
//! the bookkeeping is not hidden behind ECDSA): learn and forward a new alive message,
//! drop a duplicate one, go through a membership response whose 1,000 envelopes it
//! already holds (the steady state of every sync), and answer a sync request with them.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::proto::gossip::MembershipRequest;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{
    Comm, Config, ConnectionInfo, Instant, Layer, PkiId, ReceivedMessage, Security, SignedMessage,
    StreamId, TestOnlyHmacSecurity,
};
use fabric_gossip_discovery::alive::{Timestamp, alive_message, encode_secret};
use fabric_gossip_discovery::validate::validate_alive_envelope;
use fabric_gossip_discovery::{Discovery, DiscoveryConfig};
use fabric_gossip_msp::MspSecurity;
use fabric_gossip_msp::dev::{OrgSpec, Validity, generate_in_memory, trust_all};
use prost::Message;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const BATCH: usize = 2048;
const NOW: Instant = Instant::from_unix_secs(1_700_000_000);

/// A factory of the two peers' providers (receiver 0, sender 1) of one organization.
fn identities() -> impl Fn(usize) -> MspSecurity {
    let orgs = generate_in_memory(
        &[OrgSpec::new("Org1MSP", "org1.example.com", 2)],
        Validity::ten_years_from(Instant::from_unix_secs(1_672_531_200)),
        &mut ChaCha8Rng::seed_from_u64(3),
    )
    .unwrap();
    let trust = trust_all(&orgs).unwrap();
    move |i| orgs[0].security(&orgs[0].peers[i], trust.clone()).unwrap()
}

/// `BATCH` alive messages of `sender`, sequence 1.., the first one with its identity.
fn alive_messages(sender: &MspSecurity) -> Vec<(GossipMessage, Envelope, Bytes)> {
    (1..=BATCH as u64)
        .map(|seq| {
            let identity = if seq == 1 {
                sender.own_identity()
            } else {
                Bytes::new()
            };
            let ts = Timestamp {
                inc: NOW.as_unix_nanos(),
                seq,
            };
            let msg = alive_message(
                "peer1.org1.example.com:7051".into(),
                sender.pki_id().0.clone(),
                Bytes::new(),
                ts,
                identity,
            );
            let signed = SignedMessage::sign_with_secret(
                msg.clone(),
                encode_secret("10.0.0.2:7051"),
                sender,
            )
            .unwrap();
            let bytes = signed.envelope_bytes().clone();
            (msg, Envelope::decode(bytes.clone()).unwrap(), bytes)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let make = identities();
    let (receiver, sender) = (make(0), make(1));
    let msgs = alive_messages(&sender);
    let sender_identity = sender.own_identity();
    let info = Arc::new(ConnectionInfo {
        id: sender.pki_id().clone(),
        identity: sender_identity.clone(),
        endpoint: "10.0.0.2:7051".into(),
        signed_data: Bytes::new(),
        signature: Bytes::new(),
    });
    let received: Vec<ReceivedMessage> = msgs
        .iter()
        .map(|(m, e, b)| ReceivedMessage {
            message: m.clone(),
            envelope: e.clone(),
            envelope_bytes: b.clone(),
            conn: StreamId::from_parts(0, 0),
            info: info.clone(),
        })
        .collect();

    let mut g = c.benchmark_group("alive");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_ecdsa_p256", |b| {
        let mut i = 0;
        b.iter(|| {
            let (_, env, _) = &msgs[i % BATCH];
            i += 1;
            black_box(
                validate_alive_envelope(&receiver, env, Some(&sender_identity), NOW).unwrap(),
            );
        })
    });
    g.bench_function("direct_alive_path_ecdsa_p256", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let mut comm = Comm::new(Config::default(), make(0), NOW).unwrap();
                let mut disc = Discovery::new(DiscoveryConfig::new("10.0.0.1:7051")).unwrap();
                disc.start(NOW, &mut comm);
                let n = ((iters - done) as usize).min(BATCH);
                let start = std::time::Instant::now();
                for m in &received[..n] {
                    disc.handle_message(NOW, &mut comm, m.clone());
                }
                total += start.elapsed();
                assert_eq!(disc.stats().alive_refused(), 0);
                done += n as u64;
            }
            total
        })
    });
    g.finish();

    // The certstore's check of one pulled identity message (the sender's own, signed):
    // PKI-ID, MSP validation (cached), expiry, one ECDSA verification.
    let identity_msg =
        fabric_gossip_discovery::certstore::wire::own_identity_message(&sender).unwrap();
    let mut g = c.benchmark_group("certstore");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate_identity_msg_ecdsa_p256", |b| {
        b.iter(|| {
            black_box(
                fabric_gossip_discovery::certstore::wire::validate_identity_msg(
                    &receiver,
                    &identity_msg,
                    NOW,
                )
                .unwrap(),
            );
        })
    });
    g.finish();
}

/// Members of the 1,000-member view.
const VIEW: usize = 1000;

/// What arrives from `from` carrying `msg`, signed as `envelope_bytes`.
fn received(from: &dyn Security, envelope_bytes: Bytes) -> ReceivedMessage {
    let envelope = Envelope::decode(envelope_bytes.clone()).unwrap();
    let message = GossipMessage::decode(envelope.payload.clone()).unwrap();
    ReceivedMessage {
        message,
        envelope,
        envelope_bytes,
        conn: StreamId::from_parts(0, 0),
        info: Arc::new(ConnectionInfo {
            id: from.pki_id_of(&from.own_identity()),
            identity: from.own_identity(),
            endpoint: String::from_utf8_lossy(&from.own_identity()).into_owned(),
            signed_data: Bytes::new(),
            signature: Bytes::new(),
        }),
    }
}

/// Member `i`'s alive message with sequence `seq`, its identity embedded, as received.
fn hmac_alive(i: usize, seq: u64) -> ReceivedMessage {
    let endpoint = format!("10.1.{}.{}:7051", i / 256, i % 256);
    let sec = TestOnlyHmacSecurity::new(&endpoint);
    let ts = Timestamp {
        inc: NOW.as_unix_nanos(),
        seq,
    };
    let msg = alive_message(
        endpoint.clone(),
        sec.pki_id_of(&sec.own_identity()).0,
        Bytes::new(),
        ts,
        sec.own_identity(),
    );
    let signed = SignedMessage::sign_with_secret(msg, encode_secret(&endpoint), &sec).unwrap();
    received(&sec, signed.envelope_bytes().clone())
}

/// Drops what the core asks the driver to do (no network here).
fn drain(comm: &mut Comm<TestOnlyHmacSecurity>) {
    while !matches!(comm.poll_output(), fabric_gossip_core::Output::Timeout(_)) {}
}

/// A started layer on a fresh core that has learnt every message of `alive`.
fn hmac_member(alive: &[ReceivedMessage]) -> (Comm<TestOnlyHmacSecurity>, Discovery) {
    let mut comm = Comm::new(
        Config::default(),
        TestOnlyHmacSecurity::new("10.0.0.1:7051"),
        NOW,
    )
    .unwrap();
    let mut disc = Discovery::new(DiscoveryConfig::new("10.0.0.1:7051")).unwrap();
    disc.start(NOW, &mut comm);
    for m in alive {
        disc.handle_message(NOW, &mut comm, m.clone());
    }
    (comm, disc)
}

fn bench_view(c: &mut Criterion) {
    let alive: Vec<ReceivedMessage> = (0..VIEW).map(|i| hmac_alive(i, 1)).collect();
    let mut g = c.benchmark_group("view_1000_hmac");
    g.throughput(Throughput::Elements(1));
    // A new alive message: verification, membership, and forwarding to three members.
    g.bench_function("direct_alive_new", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let (mut comm, mut disc) = hmac_member(&alive);
                let n = ((iters - done) as usize).min(VIEW);
                let next: Vec<ReceivedMessage> = (0..n).map(|i| hmac_alive(i, 2)).collect();
                let start = std::time::Instant::now();
                for m in next {
                    disc.handle_message(NOW, &mut comm, m);
                }
                total += start.elapsed();
                assert_eq!(disc.stats().members_learned, VIEW as u64);
                assert_eq!(disc.stats().alive_duplicate, 0);
                done += n as u64;
                drain(&mut comm);
            }
            total
        })
    });
    let (mut comm, mut disc) = hmac_member(&alive);
    drain(&mut comm);
    // A copy of a message already stored (two of every three gossip deliveries).
    // The checks after each benchmark sit inside its closure: a filtered run (`cargo
    // bench -- NAME`) skips the closures it does not select.
    g.bench_function("direct_alive_duplicate", |b| {
        let mut i = 0;
        b.iter(|| {
            disc.handle_message(NOW, &mut comm, alive[i % VIEW].clone());
            i += 1;
        });
        assert_eq!(disc.stats().members_learned, VIEW as u64);
        assert_eq!(disc.stats().alive_refused(), 0);
    });
    // A sync's response listing the 1,000 members we already hold.
    let response = fabric_gossip_discovery::membership_response(
        alive.iter().map(|m| m.envelope.clone()).collect(),
        Vec::new(),
        0,
    );
    let from = TestOnlyHmacSecurity::new("10.1.0.0:7051");
    let response = received(
        &from,
        SignedMessage::noop(response).envelope_bytes().clone(),
    );
    g.throughput(Throughput::Elements(VIEW as u64));
    g.bench_function("response_of_1000_known", |b| {
        b.iter(|| disc.handle_message(NOW, &mut comm, response.clone()));
        assert!(disc.stats().alive_duplicate >= VIEW as u64);
        assert_eq!(disc.stats().alive_refused(), 0);
    });
    assert_eq!(disc.members().len(), VIEW);
    assert!(disc.member(&PkiId::new(&b"10.1.0.0:7051"[..])).is_some());
    // A member's sync request: checked, then answered with every member's envelope (the
    // response is built and noop-encoded; here no connection takes it, so comm refuses it
    // and the layer counts a comm error).
    let request = GossipMessage {
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::MemReq(MembershipRequest {
            self_information: Some(alive[0].envelope.clone()),
            known: Vec::new(),
        })),
        ..Default::default()
    };
    let request = received(&from, SignedMessage::noop(request).envelope_bytes().clone());
    g.bench_function("request_answered_with_1000", |b| {
        let answered = disc.stats().requests_received;
        let errors = disc.stats().comm_errors;
        b.iter(|| disc.handle_message(NOW, &mut comm, request.clone()));
        assert!(disc.stats().requests_received > answered);
        assert_eq!(disc.stats().requests_invalid, 0);
        assert_eq!(
            disc.stats().comm_errors - errors,
            disc.stats().requests_received - answered,
            "every request got as far as the answer"
        );
    });
    g.finish();
}

/// A response of 10,000 alive messages of members no one vouched for (no identity known,
/// so each is refused cheaply), sent unsolicited by a connected member: with 16-byte IDs
/// ending in `tail`.
fn unknown_members_response(tail: u64) -> ReceivedMessage {
    let sec = TestOnlyHmacSecurity::new("10.1.0.0:7051");
    let entries = (0..10_000u64)
        .map(|i| {
            let mut id = i.to_le_bytes().to_vec();
            id.extend_from_slice(&tail.to_ne_bytes());
            let ts = Timestamp { inc: 1, seq: 1 };
            let msg = alive_message(
                "x:1".into(),
                Bytes::from(id),
                Bytes::new(),
                ts,
                Bytes::new(),
            );
            let signed = SignedMessage::sign(msg, &sec).unwrap();
            Envelope::decode(signed.envelope_bytes().clone()).unwrap()
        })
        .collect();
    let response = fabric_gossip_discovery::membership_response(entries, Vec::new(), 0);
    received(&sec, SignedMessage::noop(response).envelope_bytes().clone())
}

/// What a hostile member's response costs the node (under its lock), with IDs that spread
/// and with IDs chosen to collide: the last 8 bytes of each are foldhash's published fixed
/// seed word, which made every such ID hash alike in a fixed-seed foldhash set (342 ms
/// against 4.4 for such a response before the set of a response's members became ordered).
fn bench_hostile(c: &mut Criterion) {
    let mut g = c.benchmark_group("hostile_response");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    for (name, tail) in [
        ("10000_unknown_members", 0x0123_4567_89ab_cdef),
        ("10000_unknown_members_colliding_ids", 0x3f84_d5b5_b547_0917),
    ] {
        let response = unknown_members_response(tail);
        let (mut comm, mut disc) = hmac_member(&[]);
        drain(&mut comm);
        g.bench_function(name, |b| {
            b.iter(|| disc.handle_message(NOW, &mut comm, response.clone()));
            assert!(disc.stats().alive_unknown_identity >= 10_000);
            assert_eq!(disc.stats().responses_aborted, 0);
            assert!(disc.members().is_empty());
        });
    }
    g.finish();
}

/// One newcomer of our organization in a membership of 10,000 members full by bytes: one
/// holding 100 KB, for which 270 of them go (915 ms when each victim was searched for
/// among all members), and one of a member's size, for which one goes (the common case).
fn bench_evict(c: &mut Criterion) {
    let mut g = c.benchmark_group("evict");
    g.sample_size(10);
    let mut cfg = DiscoveryConfig::new("10.0.0.1:7051");
    cfg.max_members = 20_000;
    cfg.max_metadata_size = 200_000;
    let members: Vec<ReceivedMessage> = (0..10_000).map(|i| hmac_alive(i, 1)).collect();
    let newcomer = |metadata: usize| {
        let sec = TestOnlyHmacSecurity::new("10.0.0.1:7052");
        let ts = Timestamp {
            inc: NOW.as_unix_nanos(),
            seq: 1,
        };
        let msg = alive_message(
            "10.0.0.1:7052".into(),
            sec.pki_id_of(&sec.own_identity()).0,
            vec![1; metadata].into(),
            ts,
            sec.own_identity(),
        );
        let signed = SignedMessage::sign(msg, &sec).unwrap();
        received(&sec, signed.envelope_bytes().clone())
    };
    let fill = |cfg: &DiscoveryConfig| {
        // We and the newcomer are of organization A, the members of none known.
        let sec = TestOnlyHmacSecurity::new("10.0.0.1:7051")
            .with_organization(&b"10.0.0.1:7051"[..], &b"A"[..])
            .with_organization(&b"10.0.0.1:7052"[..], &b"A"[..]);
        let mut comm = Comm::new(Config::default(), sec, NOW).unwrap();
        let mut disc = Discovery::new(cfg.clone()).unwrap();
        disc.start(NOW, &mut comm);
        for m in &members {
            disc.handle_message(NOW, &mut comm, m.clone());
        }
        drain(&mut comm);
        (comm, disc)
    };
    // Bounded by what the 10,000 hold: full by bytes.
    cfg.max_membership_bytes = fill(&cfg).1.membership_bytes();
    for (name, metadata, evicted) in [
        ("270_of_10000_for_one_newcomer", 100_000, 270),
        ("1_of_10000_for_one_newcomer", 0, 1),
    ] {
        let newcomer = newcomer(metadata);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut comm, mut disc) = fill(&cfg);
                    assert_eq!(disc.members().len(), 10_000);
                    let start = std::time::Instant::now();
                    disc.handle_message(NOW, &mut comm, newcomer.clone());
                    total += start.elapsed();
                    assert_eq!(disc.stats().members_evicted, evicted);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench_view, bench_hostile, bench_evict);
criterion_main!(benches);
