//! Mutual TLS refusals: a client without a certificate, a certificate from a foreign CA, and
//! a handshake binding a certificate other than the one presented.

use crate::common;

use common::*;
use fabric_gossip_core::proto::gossip::gossip_client::GossipClient;
use fabric_gossip_core::proto::gossip::{ConnEstablish, Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::{SignedMessage, TestOnlyHmacSecurity, cert_hash};
use fabric_gossip_tonic::{Node, OpError, rustls};
use prost::Message;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A dialling node that presents no certificate: by default, as with a Fabric peer, the
/// TLS layer lets it in (Ping works) and the core refuses its stream with Fabric's
/// "No TLS certificate", which the server counts and the client sees as the stream's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused_by_the_handshake() {
    let pki = Pki::new("ca");
    let b = node(config(), Some(pki.tls("b"))).await;
    let c = node(config(), Some(pki.tls("c").without_client_identity())).await;

    within("probe", c.probe(&b.as_peer())).await.unwrap();
    let err = within("handshake", c.handshake(&b.as_peer()))
        .await
        .unwrap_err();
    match err {
        OpError::Failed(e) => assert!(e.to_string().contains("No TLS certificate"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.stats().handshake_failures_for("no_tls_certificate"), 1);
    let mut dead = c.presumed_dead();
    c.send(&data(1, 10), &[b.as_peer()]).unwrap();
    assert_eq!(
        within("presumed dead", dead.next()).await.as_ref(),
        Some(b.pki_id())
    );
    assert_eq!(b.stats().handshake_failures_for("no_tls_certificate"), 2);
    assert_eq!(b.stats().handshakes_ok, 0);
    assert!(b.connections().is_empty());
    within("stop", b.stop()).await;
    within("stop", c.stop()).await;
}

/// With `require_client_certificate`, the same client is turned away in the TLS handshake:
/// even Ping fails, and the server's core never sees a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused_by_tls_when_required() {
    let pki = Pki::new("ca");
    let b = node(
        config(),
        Some(pki.tls("b").require_client_certificate(true)),
    )
    .await;
    let c = node(config(), Some(pki.tls("c").without_client_identity())).await;

    let err = within("probe", c.probe(&b.as_peer())).await.unwrap_err();
    assert!(matches!(err, OpError::Failed(_)), "{err:?}");
    let mut dead = c.presumed_dead();
    c.send(&data(1, 10), &[b.as_peer()]).unwrap();
    assert_eq!(
        within("presumed dead", dead.next()).await.as_ref(),
        Some(b.pki_id())
    );
    assert_eq!(b.stats().handshake_failures_total(), 0);
    assert_eq!(b.stats().handshakes_ok, 0);
    // A client with a certificate is still welcome.
    let a = node(config(), Some(pki.tls("a"))).await;
    within("probe", a.probe(&b.as_peer())).await.unwrap();
    stop_all(&[&a, &b]).await;
    within("stop", c.stop()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    let ours = Pki::new("ours");
    let theirs = Pki::new("theirs");
    let b = node(config(), Some(ours.tls("b"))).await;
    let (cert, key, _) = theirs.leaf("mallory");
    // Mallory trusts our CA (so she accepts b) but holds a certificate we do not trust.
    let m = node(
        config(),
        Some(fabric_gossip_tonic::TlsConfig::new(
            cert,
            key,
            ours.ca_pem(),
        )),
    )
    .await;
    assert!(within("probe", m.probe(&b.as_peer())).await.is_err());
    // Counted by b as a failed TLS handshake (each dial's: the prober may dial again).
    until("b counts the TLS failure", || {
        b.driver_stats().inbound_tls_failures >= 1
    })
    .await;
    // And b refuses to dial a server whose certificate it does not trust.
    assert!(within("probe back", b.probe(&m.as_peer())).await.is_err());
    assert_eq!(b.stats().handshakes_ok, 0);
    within("stop", b.stop()).await;
    within("stop", m.stop()).await;
}

/// Without the chain check (a Fabric peer with `clientAuthRequired: false`), a client
/// certificate from a CA the node does not know is taken by TLS, and the gossip handshake,
/// which binds its hash, authenticates the client; requiring client certificates checks
/// the chain again, as `clientAuthRequired: true` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_bound_by_the_handshake_without_chain_check() {
    let ours = Pki::new("ours");
    let theirs = Pki::new("theirs");
    let b = node(config(), Some(ours.tls("b").verify_client_chain(false))).await;
    let (cert, key, der) = theirs.leaf("carol");
    let c = node(
        config(),
        Some(fabric_gossip_tonic::TlsConfig::new(
            cert.clone(),
            key.clone(),
            ours.ca_pem(),
        )),
    )
    .await;
    within("handshake", c.handshake(&b.as_peer()))
        .await
        .unwrap();
    assert_eq!(b.stats().handshakes_ok, 1);
    assert_eq!(b.driver_stats().inbound_tls_failures, 0);
    // What b bound is the certificate c presented.
    let raw = raw_handshake(&b, &ours.ca_pem(), &cert, &key, cert_hash(&der).to_vec()).await;
    assert!(raw.is_ok(), "{raw:?}");

    let strict = node(
        config(),
        Some(
            ours.tls("strict")
                .verify_client_chain(false)
                .require_client_certificate(true),
        ),
    )
    .await;
    assert!(within("probe", c.probe(&strict.as_peer())).await.is_err());
    until("strict counts the TLS failure", || {
        strict.driver_stats().inbound_tls_failures >= 1
    })
    .await;
    stop_all(&[&b, &c, &strict]).await;
}

/// Without the chain check, TLS still checks that a client holds the key of the
/// certificate it presents: a client presenting b's own certificate with another key is
/// refused in the TLS handshake and counted, so it can never bind a certificate it does not
/// hold into a gossip handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_without_its_key_is_refused_without_chain_check() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    let pki = Pki::new("ca");
    let b = node(config(), Some(pki.tls("b").verify_client_chain(false))).await;
    let (stolen, _, _) = pki.leaf("victim");
    let (_, other_key, _) = pki.leaf("mallory");
    let provider = fabric_gossip_tonic::tls_crypto_provider();
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(other_key.as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(stolen.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let forged = Arc::new(rustls::sign::CertifiedKey::new(chain, signer));
    let mut tls = tls_client_presenting(&b, &pki, provider, Arc::new(Present(forged))).await;
    // TLS 1.3 lets the client finish first; the server's verdict comes as an alert.
    let mut byte = [0u8; 1];
    assert!(within("the alert", tls.read(&mut byte)).await.is_err());
    until("b counts the TLS failure", || {
        b.driver_stats().inbound_tls_failures >= 1
    })
    .await;
    assert_eq!(b.stats().handshakes_ok, 0);
    within("stop", b.stop()).await;
}

/// Without the chain check nobody vouches for a certificate's size: a chain over 16 KiB is
/// refused in the TLS handshake (a 60 KB certificate had held about 440 KB a connection
/// until `setup_timeout`), one of the usual size taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_certificate_is_refused_without_chain_check() {
    let pki = Pki::new("ca");
    let b = node(config(), Some(pki.tls("b").verify_client_chain(false))).await;
    let (big, key) = pki.padded_leaf("big", 20_000);
    let c = node(
        config(),
        Some(fabric_gossip_tonic::TlsConfig::new(big, key, pki.ca_pem())),
    )
    .await;
    assert!(within("probe", c.probe(&b.as_peer())).await.is_err());
    until("b counts the TLS failure", || {
        b.driver_stats().inbound_tls_failures >= 1
    })
    .await;
    let (fine, key) = pki.padded_leaf("fine", 4_000);
    let d = node(
        config(),
        Some(fabric_gossip_tonic::TlsConfig::new(fine, key, pki.ca_pem())),
    )
    .await;
    within("handshake", d.handshake(&b.as_peer()))
        .await
        .unwrap();
    stop_all(&[&b, &c, &d]).await;
}

/// A TCP connection closed before its first byte (a health check, a port scan) is no
/// failed TLS handshake; bytes that are not TLS are one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_that_spoke_counts_as_a_tls_failure() {
    use tokio::io::AsyncWriteExt;
    let pki = Pki::new("ca");
    let b = node(config(), Some(pki.tls("b"))).await;
    drop(
        tokio::net::TcpStream::connect(b.local_addr())
            .await
            .unwrap(),
    );
    until("the silent connection gone", || {
        let s = b.driver_stats();
        s.inbound_accepted == 1 && s.inbound_open == 0
    })
    .await;
    assert_eq!(b.driver_stats().inbound_tls_failures, 0);
    let mut http = tokio::net::TcpStream::connect(b.local_addr())
        .await
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    until("b counts the TLS failure", || {
        b.driver_stats().inbound_tls_failures == 1
    })
    .await;
    within("stop", b.stop()).await;
}

/// A client certificate resolver that presents one certified key, whether or not its key
/// is the certificate's.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Opens a GossipStream to `server` with tonic's own TLS and the generated (prost) client,
/// presenting `cert`, and sends a ConnEstablish that binds `claimed_hash`. Returns how the
/// stream ended after the server's own ConnEstablish: `Ok` if the server kept it open
/// (authenticated), `Err(status message)` if it closed it.
async fn raw_handshake(
    server: &Node,
    ca_pem: &str,
    cert: &str,
    key: &str,
    claimed_hash: Vec<u8>,
) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", server.endpoint()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let me = "raw-client:1";
    let failures_before = server.stats().handshake_failures_total();
    let conn = GossipMessage {
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::Conn(ConnEstablish {
            pki_id: me.as_bytes().to_vec().into(),
            identity: me.as_bytes().to_vec().into(),
            tls_cert_hash: claimed_hash.into(),
            probe: false,
        })),
        ..Default::default()
    };
    let signed = SignedMessage::sign(conn, &TestOnlyHmacSecurity::new(me)).unwrap();
    let envelope = Envelope::decode(signed.envelope_bytes().clone()).unwrap();
    // Keep the request stream open after the handshake, like a real peer.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(envelope).await.unwrap();
    let mut client = GossipClient::new(channel);
    let mut replies = client
        .gossip_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let first = replies
        .next()
        .await
        .expect("server's ConnEstablish")
        .unwrap();
    let msg = GossipMessage::decode(first.payload).unwrap();
    assert!(matches!(
        msg.content,
        Some(gossip_message::Content::Conn(_))
    ));
    // Authenticated: the connection registers and the stream stays open. Refused: it ends.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(1));
    let registered = within("outcome", async {
        loop {
            if server.is_connected(&me.into()) {
                return Ok(());
            }
            if server.stats().handshake_failures_total() > failures_before {
                return Err(());
            }
            tick.tick().await;
        }
    })
    .await;
    drop(tx);
    match registered {
        Ok(()) => Ok(()),
        Err(()) => match replies.next().await {
            Some(Err(status)) => Err(status.message().to_string()),
            other => Err(format!("stream ended: {other:?}")),
        },
    }
}

/// The server binds the leaf certificate the client actually presented: the right hash is
/// accepted, any other is refused with Fabric's check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tls_cert_hash_is_refused() {
    let pki = Pki::new("ca");
    let b = node(config(), Some(pki.tls("b"))).await;
    let (cert, key, der) = pki.leaf("raw");

    let refused = raw_handshake(&b, &pki.ca_pem(), &cert, &key, vec![7; 32])
        .await
        .unwrap_err();
    assert!(refused.contains("TLS"), "{refused}");
    assert_eq!(
        b.stats().handshake_failures_for("tls_cert_hash_mismatch"),
        1
    );
    assert!(b.connections().is_empty());

    raw_handshake(&b, &pki.ca_pem(), &cert, &key, cert_hash(&der).to_vec())
        .await
        .unwrap();
    assert_eq!(b.stats().handshakes_ok, 1);
    within("stop", b.stop()).await;
}

/// Servers whose certificates name hosts, not the addresses they are dialled at (as
/// cryptogen's do): one name per address reaches each, where one override for all reaches
/// only the server it names.
#[tokio::test]
async fn each_address_is_verified_against_the_name_given_for_it() {
    let pki = Pki::new("names-ca");
    let b = node(config(), Some(pki.tls_for("b", "peer0.org1.example.com"))).await;
    let c = node(config(), Some(pki.tls_for("c", "peer2.org1.example.com"))).await;
    let by_address = pki
        .tls("a")
        .with_server_name_override("peer9.org1.example.com")
        .with_server_name_for(b.local_addr().to_string(), "peer0.org1.example.com")
        .with_server_name_for(c.local_addr().to_string(), "peer2.org1.example.com");
    let a = node(config(), Some(by_address)).await;
    for server in [&b, &c] {
        within("handshake", a.handshake(&server.as_peer()))
            .await
            .expect("each address verified against its own name");
    }
    within("stop", a.stop()).await;
    let one_for_all = pki
        .tls("a")
        .with_server_name_override("peer0.org1.example.com");
    let a = node(config(), Some(one_for_all)).await;
    within("handshake", a.handshake(&b.as_peer()))
        .await
        .expect("b has the name");
    let refused = within("handshake", a.handshake(&c.as_peer()))
        .await
        .expect_err("c's certificate does not name peer0");
    assert!(
        format!("{refused}").contains("peer0.org1.example.com"),
        "{refused}"
    );
    for n in [a, b, c] {
        within("stop", n.stop()).await;
    }
}

/// The cipher suite a TLS client whose provider is `provider` ends up with against `server`
/// (a full mutual-TLS handshake, certificates of `pki`).
async fn negotiated_suite(
    server: &Node,
    pki: &Pki,
    provider: rustls::crypto::CryptoProvider,
) -> rustls::CipherSuite {
    let tls = tls_client(server, pki, provider, rustls::DEFAULT_VERSIONS).await;
    tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

/// A TLS client of `server` whose provider is `provider`, offering `versions`, its handshake
/// done.
async fn tls_client(
    server: &Node,
    pki: &Pki,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key, _) = pki.leaf("client");
    let config = tls_client_config(pki, provider, versions)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    tls_connect(server, config).await
}

/// [`tls_client`] presenting what `present` resolves to, in TLS 1.3.
async fn tls_client_presenting(
    server: &Node,
    pki: &Pki,
    provider: rustls::crypto::CryptoProvider,
    present: Arc<dyn rustls::client::ResolvesClientCert>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = tls_client_config(pki, provider, &[&rustls::version::TLS13])
        .with_client_cert_resolver(present);
    tls_connect(server, config).await
}

/// A client configuration trusting `pki`'s CA, up to its client certificate.
fn tls_client_config(
    pki: &Pki,
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
}

/// Dials `server` and completes the client's side of a TLS handshake offering HTTP/2.
async fn tls_connect(
    server: &Node,
    mut config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::ServerName;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    within(
        "the TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .unwrap()
}

/// A node picks the library that seals its TLS records by its CPU
/// ([`fabric_gossip_tonic::RecordCipher`]), so two peers may differ: records sealed by
/// either library open on the other, in TLS 1.3 and in TLS 1.2 (which a Fabric peer's
/// `CipherSuites` list is for). Each client sends HTTP/2's preface and a SETTINGS frame in
/// application records and reads the node's SETTINGS back out of its records.
#[tokio::test]
async fn records_sealed_by_either_library_open_with_the_other() {
    use fabric_gossip_tonic::RecordCipher;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("records-ca");
    let server = node(config(), Some(pki.tls("server"))).await;
    let versions = [
        (
            &rustls::version::TLS13,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &rustls::version::TLS12,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ];
    for (cipher, (version, suite)) in [RecordCipher::AwsLc, RecordCipher::Ring]
        .into_iter()
        .flat_map(|c| versions.map(|v| (c, v)))
    {
        let provider = fabric_gossip_tonic::tls_crypto_provider_with(cipher);
        let mut tls = tls_client(&server, &pki, provider, &[version]).await;
        assert_eq!(
            tls.get_ref().1.negotiated_cipher_suite().unwrap().suite(),
            suite,
            "{cipher:?}"
        );
        // The preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        tls.write_all(&hello).await.unwrap();
        tls.flush().await.unwrap();
        let mut header = [0u8; 9];
        within("the node's SETTINGS frame", tls.read_exact(&mut header))
            .await
            .unwrap_or_else(|e| panic!("{cipher:?}: {e}"));
        assert_eq!(
            header[3], 4,
            "{cipher:?}: the node's first frame is SETTINGS"
        );
    }
    within("stop", server.stop()).await;
}

/// Our nodes offer AES-128-GCM first, as a Fabric peer (Go) does, and a node's TLS server
/// follows the client's order: two of our nodes, like two Fabric peers, talk AES-128-GCM,
/// and a client that prefers another suite the server has gets that one.
#[tokio::test]
async fn our_nodes_offer_aes_128_gcm_first_and_servers_follow_the_client() {
    use rustls::CipherSuite as S;
    let pki = Pki::new("suite-ca");
    let server = node(config(), Some(pki.tls("server"))).await;
    let ours = fabric_gossip_tonic::tls_crypto_provider();
    assert_eq!(
        negotiated_suite(&server, &pki, ours.clone()).await,
        S::TLS13_AES_128_GCM_SHA256
    );
    let mut aes_256_first = ours;
    aes_256_first
        .cipher_suites
        .sort_by_key(|s| s.suite() != S::TLS13_AES_256_GCM_SHA384);
    assert_eq!(
        negotiated_suite(&server, &pki, aes_256_first).await,
        S::TLS13_AES_256_GCM_SHA384
    );
    within("stop", server.stop()).await;
}

/// A TLS server that selects no application protocol never agreed to HTTP/2: the dial
/// fails once the TLS handshake ends, naming ALPN, before a byte of HTTP/2 is sent (as
/// grpc-go 1.67 and later refuse such a server), and counts as a failed dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_selecting_no_http2_is_refused_before_any_http2() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    let pki = Pki::new("alpn-ca");
    let (cert, key, _) = pki.leaf("no-alpn");
    let no_alpn = rustls::ServerConfig::builder_with_provider(Arc::new(
        fabric_gossip_tonic::tls_crypto_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    assert!(no_alpn.alpn_protocols.is_empty());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Completes each TLS handshake, then reports what the client sent over it until it
    // closed: the HTTP/2 preface and more, had the client gone on. (The core retries a
    // failed dial, so there may be more than one.)
    let no_alpn = tokio_rustls::TlsAcceptor::from(Arc::new(no_alpn));
    let (sent_tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (no_alpn, sent_tx) = (no_alpn.clone(), sent_tx.clone());
            tokio::spawn(async move {
                let mut tls = no_alpn.accept(tcp).await.unwrap();
                assert_eq!(tls.get_ref().1.alpn_protocol(), None);
                let mut got = Vec::new();
                let _ = tls.read_to_end(&mut got).await;
                let _ = sent_tx.send(got.len());
            });
        }
    });
    let a = node(config(), Some(pki.tls("a"))).await;
    let (err, _) = failed_probe(&a, addr).await;
    assert!(err.to_string().contains("ALPN \"h2\""), "{err}");
    let dials = a.driver_stats().dials_failed;
    assert!(dials >= 1);
    for _ in 0..dials {
        let bytes = within("a connection's end", sent.recv()).await.unwrap();
        assert_eq!(
            bytes, 0,
            "the client sent HTTP/2 over a connection without it"
        );
    }
    server.abort();
    within("stop", a.stop()).await;
}
