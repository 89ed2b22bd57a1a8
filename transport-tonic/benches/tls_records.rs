//! What TLS costs per byte, without sockets or scheduling: the cipher alone on 16 KiB and
//! 1 KiB records (ring's AES-256-GCM, which our nodes negotiated with each other before, and
//! the AES-128-GCM they negotiate now, from ring and from aws-lc-rs: which of the two is the
//! faster depends on the CPU, `RecordCipher::for_this_cpu`), and 64 KiB written through a
//! rustls client and read out of a rustls server in memory, with the node's provider sealing
//! with each library, and preferring AES-256-GCM. Reported in bytes per second.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fabric_gossip_tonic::rustls::{self, CipherSuite, ClientConnection, ServerConnection};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

const RECORD: usize = 16 * 1024;

/// Benchmarks sealing and opening one `record`-byte record per iteration with `$alg` of the
/// `ring`-shaped AEAD API at `$aead` (ring's and aws-lc-rs's are the same, as types of two
/// crates).
macro_rules! seal_and_open {
    ($group:expr, $name:expr, $record:expr, $aead:path, $alg:ident, $key_len:expr) => {{
        use $aead::{Aad, LessSafeKey, Nonce, UnboundKey, $alg};
        let key = LessSafeKey::new(UnboundKey::new(&$alg, &[7; $key_len]).unwrap());
        let record: usize = $record;
        let mut buf = vec![1u8; record + 16];
        $group.bench_function($name, |b| {
            b.iter(|| {
                let nonce = || Nonce::assume_unique_for_key([3; 12]);
                buf.truncate(record);
                key.seal_in_place_append_tag(nonce(), Aad::from([23u8; 5]), &mut buf)
                    .unwrap();
                let plain = key
                    .open_in_place(nonce(), Aad::from([23u8; 5]), &mut buf)
                    .unwrap();
                black_box(plain.len());
            })
        });
    }};
}

/// Seals and opens one record per iteration, as one side's sender and the other's receiver
/// would: 16 KiB (a busy connection's records) and 1 KiB (a lone small message's).
fn cipher(c: &mut Criterion) {
    for record in [RECORD, 1024] {
        let mut group = c.benchmark_group(format!("aead_seal_and_open_{}KiB", record / 1024));
        group.throughput(Throughput::Bytes(record as u64));
        group.measurement_time(Duration::from_secs(3));
        seal_and_open!(
            group,
            "ring_aes_256_gcm_before",
            record,
            ring::aead,
            AES_256_GCM,
            32
        );
        seal_and_open!(
            group,
            "ring_aes_128_gcm",
            record,
            ring::aead,
            AES_128_GCM,
            16
        );
        seal_and_open!(
            group,
            "aws_lc_rs_aes_128_gcm",
            record,
            aws_lc_rs::aead,
            AES_128_GCM,
            16
        );
        group.finish();
    }
}

/// A client and a server connection, handshaken in memory with `provider`.
fn connected(provider: CryptoProvider) -> (ClientConnection, ServerConnection) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(provider);
    let der = cert.der().clone();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(der.to_vec())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
        .unwrap();
    let mut s = ServerConnection::new(Arc::new(server)).unwrap();
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        feed(&mut s, &wire);
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        feed(&mut c, &wire);
    }
    (c, s)
}

fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut wire: &[u8]) {
    while !wire.is_empty() {
        conn.read_tls(&mut wire).unwrap();
        conn.process_new_packets().unwrap();
    }
}

/// 64 KiB per iteration: written to the client, its records moved to the server, read out.
fn connection(c: &mut Criterion) {
    const CHUNK: usize = 64 * 1024;
    let mut group = c.benchmark_group("rustls_pair_64KiB");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    group.measurement_time(Duration::from_secs(4));
    use fabric_gossip_tonic::{RecordCipher, tls_crypto_provider_with};
    let mut aes_256_first = fabric_gossip_tonic::tls_crypto_provider();
    aes_256_first
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_256_GCM_SHA384);
    for (name, provider) in [
        (
            "aes_128_gcm_sealed_by_aws_lc_rs",
            tls_crypto_provider_with(RecordCipher::AwsLc),
        ),
        (
            "aes_128_gcm_sealed_by_ring",
            tls_crypto_provider_with(RecordCipher::Ring),
        ),
        ("aes_256_gcm_first_for_this_cpu", aes_256_first),
    ] {
        let (mut client, mut server) = connected(provider);
        let chunk = vec![5u8; CHUNK];
        let mut wire = Vec::with_capacity(2 * CHUNK);
        let mut out = vec![0u8; CHUNK];
        group.bench_function(name, |b| {
            b.iter(|| {
                client.writer().write_all(&chunk).unwrap();
                wire.clear();
                while client.wants_write() {
                    client.write_tls(&mut wire).unwrap();
                }
                let mut rest = &wire[..];
                let mut got = 0;
                while !rest.is_empty() {
                    server.read_tls(&mut rest).unwrap();
                    server.process_new_packets().unwrap();
                    while let Ok(n @ 1..) = server.reader().read(&mut out) {
                        got += n;
                    }
                }
                assert_eq!(got, CHUNK);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cipher, connection);
criterion_main!(benches);
