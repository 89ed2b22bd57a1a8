//! How many alive messages per second one membership layer processes, signature checks
//! included, with real MSP identities (ECDSA P-256 X.509): each message goes through the
//! whole direct-alive path (parse, de-dup store, identity lookup, ECDSA verification of
//! the envelope and of its secret, membership update); and the certstore's check of one
//! pulled identity message.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::proto::gossip::{
    AliveMessage, Envelope, GossipMessage, Member, PeerTime, gossip_message,
};
use fabric_gossip_core::{
    Comm, Config, ConnectionInfo, Instant, Layer, ReceivedMessage, Security, SignedMessage,
    StreamId,
};
use fabric_gossip_discovery::alive::encode_secret;
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
            let msg = GossipMessage {
                tag: gossip_message::Tag::Empty as i32,
                content: Some(gossip_message::Content::AliveMsg(AliveMessage {
                    membership: Some(Member {
                        endpoint: "peer1.org1.example.com:7051".into(),
                        metadata: Bytes::new(),
                        pki_id: sender.pki_id().0.clone(),
                    }),
                    timestamp: Some(PeerTime {
                        inc_num: NOW.as_unix_nanos(),
                        seq_num: seq,
                    }),
                    identity: if seq == 1 {
                        sender.own_identity()
                    } else {
                        Bytes::new()
                    },
                })),
                ..Default::default()
            };
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

criterion_group!(benches, bench);
criterion_main!(benches);
