//! The MSP provider's costs: ECDSA P-256 signatures and verifications per second (with
//! the identity cached, and with X.509 parsing and chain validation every time), and
//! complete handshakes per second between two cores with real identities (no I/O: the
//! network is reduced to moving outputs into inputs).
//!
//! Each figure is measured for AWS-LC (the default, `aws_lc`) and, in the same run, for the
//! pure-Rust RustCrypto code the crate began with (`pure_rust`, reached through
//! `MspSecurity::with_pure_rust_ecdsa`, which is that code unchanged), so the ratio between
//! the two does not depend on how loaded the machine was. `deterministic` is the RFC 6979
//! signing a simulation uses (`with_deterministic_signatures`), verifying with AWS-LC.
//! `aws_lc_alone` and `ring_alone` sign or verify with the bare libraries on the same key
//! and message: what the provider adds around AWS-LC, and how AWS-LC compares with ring,
//! which this crate used before (ring is a dev-dependency for this comparison only).
//! The load average is printed before and after, since the machine is usually shared.

#![allow(missing_docs)] // criterion_group! generates undocumented items
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_core::*;
use fabric_gossip_msp::dev::{self, OrgSpec, Validity};
use fabric_gossip_msp::{MspSecurity, NodeOus};
use rand_core::SeedableRng;
use std::hint::black_box;
use std::time::Duration;

fn now() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

/// Which ECDSA implementation a provider uses.
#[derive(Clone, Copy)]
enum Mode {
    AwsLc,
    Deterministic,
    PureRust,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::AwsLc => "aws_lc",
            Mode::Deterministic => "deterministic",
            Mode::PureRust => "pure_rust",
        }
    }

    fn apply(self, s: MspSecurity) -> MspSecurity {
        match self {
            Mode::AwsLc => s,
            Mode::Deterministic => s.with_deterministic_signatures(),
            Mode::PureRust => s.with_pure_rust_ecdsa(),
        }
    }
}

/// Two peers of two organizations, `(a, b, b without an identity cache)`.
/// The two organizations every provider here comes from (seeded: the same each call).
fn orgs() -> Vec<dev::DevOrg> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let validity = Validity::starting(
        Instant::from_unix_secs(1_699_000_000),
        Duration::from_secs(365 * 24 * 3600),
    );
    dev::generate_in_memory(
        &[
            OrgSpec::new("Org1MSP", "org1.example.com", 1),
            OrgSpec::new("Org2MSP", "org2.example.com", 1),
        ],
        validity,
        &mut rng,
    )
    .unwrap()
}

fn providers(mode: Mode) -> (MspSecurity, MspSecurity, MspSecurity) {
    let orgs = orgs();
    let trust = dev::trust_all(&orgs).unwrap();
    let a = orgs[0].security(&orgs[0].peers[0], trust.clone()).unwrap();
    let b = orgs[1].security(&orgs[1].peers[0], trust.clone()).unwrap();
    let b_uncached = orgs[1]
        .security(&orgs[1].peers[0], trust)
        .unwrap()
        .with_cache_capacity(0);
    (mode.apply(a), mode.apply(b), mode.apply(b_uncached))
}

/// The uncompressed public point of a P-256 certificate (the last 65 bytes of its
/// SubjectPublicKeyInfo), found by its DER prefix.
fn p256_point(cert_der: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { id-ecPublicKey, prime256v1 }, then BIT STRING (66 bytes, 0 unused).
    const PREFIX: &[u8] = &[
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let at = cert_der
        .windows(PREFIX.len())
        .position(|w| w == PREFIX)
        .expect("a P-256 key");
    cert_der[at + PREFIX.len()..at + PREFIX.len() + 65].to_vec()
}

fn print_load(when: &str) {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        eprintln!("load average {when}: {}", load.trim());
    }
}

/// Runs one `handshake()` operation from `a` to `b` to completion; returns the remote's
/// PKI-ID as `a` authenticated it.
///
/// The network is reduced to what the cores ask for: dials and pings succeed at once, the
/// one stream links the two cores, and each side's writes and close go straight to the
/// other. Both sides are drained until neither has anything left, so no output of one
/// handshake spills into the next.
fn handshake_once(
    a: &mut Comm<MspSecurity>,
    b: &mut Comm<MspSecurity>,
    peer: &RemotePeer,
) -> PkiId {
    const ENDPOINTS: [&str; 2] = ["127.0.0.1:7051", "127.0.0.1:7052"];
    let now = now();
    a.handshake(now, peer).unwrap();
    // Each side's end of the stream, once open.
    let mut ends: [Option<StreamId>; 2] = [None, None];
    let mut authenticated = None;
    loop {
        let mut progressed = false;
        for side in 0..2 {
            let (this, other) = if side == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            loop {
                let act = match this.poll_output() {
                    Output::Timeout(_) => break,
                    Output::Event(Event::HandshakeDone { result, .. }) => {
                        let info = result.expect("handshake with real identities");
                        authenticated = Some(info.id.clone());
                        continue;
                    }
                    Output::Event(_) => continue,
                    Output::Action(act) => act,
                };
                progressed = true;
                match act {
                    Action::Dial { dial, .. } => {
                        this.handle_dial_result(now, dial, Ok(None)).unwrap()
                    }
                    Action::Ping { dial } => this.handle_ping_result(now, dial, Ok(())).unwrap(),
                    Action::OpenStream { stream, .. } => {
                        ends[side] = Some(stream);
                        ends[1 - side] =
                            Some(other.accept_stream(now, ENDPOINTS[side], None).unwrap());
                    }
                    Action::Write {
                        stream, envelope, ..
                    } => {
                        let _ = this.handle_sent(now, stream, 1);
                        if let Some(s) = ends[1 - side] {
                            let _ = other.handle_envelope(now, s, envelope);
                        }
                    }
                    Action::CloseStream { .. } => {
                        if let Some(s) = ends[1 - side].take() {
                            let _ = other.handle_stream_closed(now, s, StreamEnd::Finished);
                        }
                    }
                    _ => {}
                }
            }
        }
        if !progressed {
            return authenticated.expect("handshake stalled");
        }
    }
}

fn bench(c: &mut Criterion) {
    print_load("before");
    let msg = vec![0x5au8; 512];
    let modes = [Mode::AwsLc, Mode::Deterministic, Mode::PureRust];

    let mut g = c.benchmark_group("sign_p256_512B");
    g.throughput(Throughput::Elements(1));
    for mode in modes {
        let (a, _, _) = providers(mode);
        g.bench_function(mode.name(), |bch| {
            bch.iter(|| black_box(a.sign(black_box(&msg)).unwrap()))
        });
    }
    // The bare libraries with one P-256 key (no DER, no low-S folding).
    let lc_rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &lc_rng,
    )
    .unwrap();
    let lc = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
    )
    .unwrap();
    g.bench_function("aws_lc_alone", |bch| {
        bch.iter(|| black_box(lc.sign(&lc_rng, black_box(&msg)).unwrap()))
    });
    let ring_rng = ring::rand::SystemRandom::new();
    let rk = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &ring_rng,
    )
    .unwrap();
    g.bench_function("ring_alone", |bch| {
        bch.iter(|| black_box(rk.sign(&ring_rng, black_box(&msg)).unwrap()))
    });
    g.finish();

    // Verification is the same code in the AWS-LC and deterministic modes: only AWS-LC and
    // the pure-Rust reference are measured.
    for (group, uncached) in [
        ("verify_p256_cached_identity", false),
        ("verify_p256_with_identity_parse", true),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for mode in [Mode::AwsLc, Mode::PureRust] {
            let (a, b, b_uncached) = providers(mode);
            let v = if uncached { b_uncached } else { b };
            let sig = a.sign(&msg).unwrap();
            let id: Bytes = a.own_identity();
            v.verify(&id, &sig, &msg).unwrap();
            g.bench_function(mode.name(), |bch| {
                bch.iter(|| {
                    v.verify(black_box(&id), black_box(&sig), black_box(&msg))
                        .unwrap()
                })
            });
        }
        if !uncached {
            // The bare libraries on the same key and signature: what the provider adds
            // around AWS-LC (identity lookup, reading the DER) is the difference, and ring
            // is what the provider used before.
            let (a, _, _) = providers(Mode::AwsLc);
            let sig = a.sign(&msg).unwrap();
            let fixed = p256::ecdsa::Signature::from_der(&sig).unwrap().to_bytes();
            let point = p256_point(a.certificate_der());
            let lc = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                point.clone(),
            )
            .parse()
            .unwrap();
            lc.verify_sig(&msg, &fixed).unwrap();
            g.bench_function("aws_lc_alone", |bch| {
                bch.iter(|| lc.verify_sig(black_box(&msg), black_box(&fixed)).unwrap())
            });
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            );
            key.verify(&msg, &fixed).unwrap();
            g.bench_function("ring_alone", |bch| {
                bch.iter(|| key.verify(black_box(&msg), black_box(&fixed)).unwrap())
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("msp");
    g.throughput(Throughput::Elements(1));
    let (a, b, _) = providers(Mode::AwsLc);
    let id: Bytes = a.own_identity();
    b.validate_identity(&id, now()).unwrap();
    g.bench_function("validate_identity_cached", |bch| {
        bch.iter(|| b.validate_identity(black_box(&id), now()).unwrap())
    });
    g.finish();

    // An identity judged from scratch by the trust store (parse, chain, revocation, OU
    // rules; no cache), with Org1MSP's NodeOUs off and on (cryptogen's config.yaml): what
    // the roles add to meeting a new peer.
    let mut g = c.benchmark_group("validate_new_identity");
    g.throughput(Throughput::Elements(1));
    let plain = b.trust();
    let mut roles = plain.as_ref().clone();
    let ca = orgs()[0].ca.cert_pem();
    roles
        .set_node_ous("Org1MSP", &NodeOus::fabric_defaults(Some(ca.as_bytes())))
        .unwrap();
    for (name, store) in [
        ("node_ous_off", plain.as_ref().clone()),
        ("node_ous_on", roles),
    ] {
        store.validate_identity(&id, now()).unwrap();
        g.bench_function(name, |bch| {
            bch.iter(|| store.validate_identity(black_box(&id), now()).unwrap())
        });
    }
    g.finish();

    // Complete handshakes (dial, ping, stream, both ConnEstablish signed and verified),
    // core only.
    let mut g = c.benchmark_group("handshake_real_identities");
    g.throughput(Throughput::Elements(1));
    for mode in modes {
        let (a, b, _) = providers(mode);
        let mut ca = Comm::new(Config::default(), a, now()).unwrap();
        let mut cb = Comm::new(Config::default(), b, now()).unwrap();
        let peer = RemotePeer::new("127.0.0.1:7052", cb.pki_id().clone());
        assert_eq!(handshake_once(&mut ca, &mut cb, &peer), *cb.pki_id());
        g.bench_function(mode.name(), |bch| {
            bch.iter(|| black_box(handshake_once(&mut ca, &mut cb, &peer)))
        });
    }
    g.finish();
    print_load("after");
}

criterion_group!(benches, bench);
criterion_main!(benches);
