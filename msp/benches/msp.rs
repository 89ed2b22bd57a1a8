//! The MSP provider's costs: ECDSA P-256 signatures and verifications per second (with
//! the identity cached, and with X.509 parsing and chain validation every time), and
//! complete handshakes per second between two cores with real identities (no I/O: the
//! network is reduced to moving outputs into inputs).

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::*;
use fabric_gossip_msp::MspSecurity;
use fabric_gossip_msp::dev::{self, OrgSpec, Validity};
use rand_core::SeedableRng;
use std::hint::black_box;
use std::time::Duration;

fn now() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

fn providers() -> (MspSecurity, MspSecurity, MspSecurity) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let validity = Validity::starting(
        Instant::from_unix_secs(1_699_000_000),
        Duration::from_secs(365 * 24 * 3600),
    );
    let orgs = dev::generate_in_memory(
        &[
            OrgSpec::new("Org1MSP", "org1.example.com", 1),
            OrgSpec::new("Org2MSP", "org2.example.com", 1),
        ],
        validity,
        &mut rng,
    )
    .unwrap();
    let trust = dev::trust_all(&orgs).unwrap();
    let a = orgs[0].security(&orgs[0].peers[0], trust.clone()).unwrap();
    let b = orgs[1].security(&orgs[1].peers[0], trust.clone()).unwrap();
    let b_uncached = orgs[1]
        .security(&orgs[1].peers[0], trust)
        .unwrap()
        .with_cache_capacity(0);
    (a, b, b_uncached)
}

/// Runs one `handshake()` operation from `a` to `b` to completion; returns the remote's
/// PKI-ID as `a` authenticated it.
fn handshake_once(
    a: &mut Comm<MspSecurity>,
    b: &mut Comm<MspSecurity>,
    peer: &RemotePeer,
) -> PkiId {
    let now = now();
    a.handshake(now, peer).unwrap();
    let (mut sa, mut sb) = (None, None);
    loop {
        let mut progressed = false;
        while let Some(act) = a.poll_action() {
            progressed = true;
            match act {
                Action::Dial { dial, .. } => a.handle_dial_result(now, dial, Ok(None)).unwrap(),
                Action::Ping { dial } => a.handle_ping_result(now, dial, Ok(())).unwrap(),
                Action::OpenStream { stream, .. } => {
                    sa = Some(stream);
                    sb = Some(b.accept_stream(now, "127.0.0.1:7051", None).unwrap());
                }
                Action::Write { stream, envelope } => {
                    let _ = a.handle_sent(now, stream, 1);
                    if let Some(s) = sb {
                        let _ = b.handle_envelope(now, s, envelope);
                    }
                }
                Action::CloseStream { .. } => {
                    if let Some(s) = sb.take() {
                        let _ = b.handle_stream_closed(now, s, StreamEnd::Finished);
                    }
                }
                _ => {}
            }
        }
        while let Some(act) = b.poll_action() {
            progressed = true;
            match act {
                Action::Write { stream, envelope } => {
                    let _ = b.handle_sent(now, stream, 1);
                    if let Some(s) = sa {
                        let _ = a.handle_envelope(now, s, envelope);
                    }
                }
                Action::CloseStream { .. } => {
                    if let Some(s) = sa.take() {
                        let _ = a.handle_stream_closed(now, s, StreamEnd::Finished);
                    }
                }
                _ => {}
            }
        }
        while b.poll_event().is_some() {}
        while let Some(ev) = a.poll_event() {
            if let Event::HandshakeDone { result, .. } = ev {
                return result.expect("handshake with real identities").id.clone();
            }
        }
        assert!(progressed, "handshake stalled");
    }
}

fn bench(c: &mut Criterion) {
    let (a, b, b_uncached) = providers();
    let msg = vec![0x5au8; 512];
    let sig = a.sign(&msg).unwrap();
    let id: Bytes = a.own_identity();

    let mut g = c.benchmark_group("msp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_p256_512B", |bch| {
        bch.iter(|| black_box(a.sign(black_box(&msg)).unwrap()))
    });
    b.verify(&id, &sig, &msg).unwrap();
    g.bench_function("verify_p256_cached_identity", |bch| {
        bch.iter(|| {
            b.verify(black_box(&id), black_box(&sig), black_box(&msg))
                .unwrap()
        })
    });
    g.bench_function("verify_p256_with_identity_parse", |bch| {
        bch.iter(|| {
            b_uncached
                .verify(black_box(&id), black_box(&sig), black_box(&msg))
                .unwrap()
        })
    });
    g.bench_function("validate_identity_cached", |bch| {
        bch.iter(|| b.validate_identity(black_box(&id), now()).unwrap())
    });
    g.finish();

    // Complete handshakes (dial, ping, stream, both ConnEstablish verified), core only.
    let mut g = c.benchmark_group("core_with_real_identities");
    g.throughput(Throughput::Elements(1));
    let (a, b, _) = providers();
    let mut ca = Comm::new(Config::default(), a, now()).unwrap();
    let mut cb = Comm::new(Config::default(), b, now()).unwrap();
    let peer = RemotePeer::new("127.0.0.1:7052", cb.pki_id().clone());
    assert_eq!(handshake_once(&mut ca, &mut cb, &peer), *cb.pki_id());
    g.bench_function("handshake_op", |bch| {
        bch.iter(|| black_box(handshake_once(&mut ca, &mut cb, &peer)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
