//! Mutual TLS: certificates in, rustls configurations and own certificate hashes out; and the
//! dialling side's connector, which captures the certificate the server actually presented.

use crate::readahead::{READ_AHEAD, ReadAhead};
use crate::resolve::Resolver;
use fabric_gossip_core::{CertHash, TlsHashes, cert_hash};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;

/// The node's TLS material, PEM-encoded, as a Fabric peer has it (`peer.tls.*`).
///
/// With TLS on, a node serves gRPC over TLS, asks clients for a certificate (which must
/// chain to one of `ca_pem`, or to [`TlsConfig::with_client_root_cas`]'s, unless
/// [`TlsConfig::verify_client_chain`]`(false)`; a client without one is refused by the
/// gossip handshake, or by TLS with [`TlsConfig::require_client_certificate`]), and dials
/// with its client certificate. Both sides bind the certificate
/// they used into the gossip handshake (`tls_cert_hash`), so the hashes of the certificates
/// here become the core's [`TlsHashes`]. Fabric uses the server certificate as the client
/// certificate unless told otherwise; [`TlsConfig::new`] does the same.
///
/// The CAs we ask clients for are also what a Go client (a Fabric peer) chooses its
/// client certificate by: one that chains to none of them is not sent, so a wrong
/// `ca_pem` (the signing CA's `msp/cacerts` where the TLS CA's `tlscacerts` belongs)
/// shows on our side as the remote's handshake failing with
/// [`NoTlsCertificate`](fabric_gossip_core::HandshakeError::NoTlsCertificate), not as a
/// TLS failure, and on the peer's as "timed out waiting for connection message".
#[derive(Clone)]
pub struct TlsConfig {
    server_cert_pem: Vec<u8>,
    server_key_pem: Vec<u8>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    ca_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    server_name_override: Option<String>,
    /// `host:port` dialled → the name its certificate is verified against.
    server_names: Vec<(String, String)>,
    require_client_certificate: bool,
    verify_client_chain: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("TlsConfig")
            .field("client_certificate", &self.client.is_some())
            .field("separate_client_cas", &self.client_ca_pem.is_some())
            .field("server_name_override", &self.server_name_override)
            .field("server_names", &self.server_names)
            .field(
                "require_client_certificate",
                &self.require_client_certificate,
            )
            .field("verify_client_chain", &self.verify_client_chain)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// One certificate and key for both roles, and the CA certificates (PEM, one or more) that
    /// remote servers' and clients' certificates must chain to.
    pub fn new(
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
        ca_pem: impl Into<Vec<u8>>,
    ) -> Self {
        let cert = cert_pem.into();
        let key = key_pem.into();
        TlsConfig {
            client: Some((cert.clone(), key.clone())),
            server_cert_pem: cert,
            server_key_pem: key,
            ca_pem: ca_pem.into(),
            client_ca_pem: None,
            server_name_override: None,
            server_names: Vec::new(),
            require_client_certificate: false,
            verify_client_chain: true,
        }
    }

    /// A separate certificate for dialling (Fabric's `peer.tls.clientCert`); the handshake
    /// then binds this one on streams the node opens.
    pub fn with_client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// CA certificates (PEM) that clients' certificates must chain to, when they differ from
    /// those of servers (Fabric's `peer.tls.clientRootCAs.files` beside
    /// `peer.tls.rootcert.file`): for organizations whose TLS client certificates come from
    /// another CA than their server certificates. Without this call the CAs given to
    /// [`TlsConfig::new`] verify both. Not read with
    /// [`TlsConfig::verify_client_chain`]`(false)`, which verifies no client chain (nor
    /// does a Fabric peer open its `clientRootCAs` without `clientAuthRequired`).
    pub fn with_client_root_cas(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.client_ca_pem = Some(ca_pem.into());
        self
    }

    /// Dial without any client certificate. Only useful to check that servers refuse such
    /// clients: every gossip server with TLS on, this crate's included, turns them away.
    pub fn without_client_identity(mut self) -> Self {
        self.client = None;
        self
    }

    /// Refuse clients without a certificate already in the TLS handshake, instead of in the
    /// gossip handshake.
    ///
    /// By default, as a Fabric peer with `clientAuthRequired: false`, the TLS layer asks
    /// for a client certificate but lets a client without one finish the TLS handshake
    /// (a certificate that *is* presented must chain to a trusted CA). `Ping` then works,
    /// and a `GossipStream` is refused by the core with Fabric's "No TLS certificate",
    /// which both sides can see and count. Requiring the certificate in TLS turns such
    /// clients away earlier, before any gRPC, at the price of a less precise error (the
    /// client sees its first call fail).
    pub fn require_client_certificate(mut self, required: bool) -> Self {
        self.require_client_certificate = required;
        self
    }

    /// Whether a client's certificate must chain to the client CAs (the default), or TLS
    /// checks only that the client holds the certificate's private key, whoever issued it.
    ///
    /// `false` is a Fabric peer with `clientAuthRequired: false` (Go's `RequestClientCert`).
    /// What authenticates a gossip client is its `ConnEstablish`: signed by its MSP identity,
    /// it carries the hash of the TLS certificate it presented, which the core compares with
    /// the one TLS saw; so a chain check adds nothing a Fabric peer relies on, and without it
    /// the peers of an organization whose TLS CA this node was not given can dial it, as they
    /// can dial a Fabric peer. `Ping`, which has no handshake, is answered either way. No
    /// effect with [`TlsConfig::require_client_certificate`]`(true)`, which always verifies
    /// the chain, as `clientAuthRequired: true` does.
    pub fn verify_client_chain(mut self, verify: bool) -> Self {
        self.verify_client_chain = verify;
        self
    }

    /// Verify servers' certificates against this name instead of the host being dialled
    /// (Fabric's `serverHostOverride`), for certificates issued to a name the address lacks.
    ///
    /// It applies to every server the node dials, which suits a node talking to one peer
    /// (a probe, a test); a member dials many, each with a certificate of its own name:
    /// [`TlsConfig::with_server_name_for`] names them one address at a time.
    pub fn with_server_name_override(mut self, name: impl Into<String>) -> Self {
        self.server_name_override = Some(name.into());
        self
    }

    /// Verify the certificate of the server at `address` (`host:port`, as dialled: the
    /// endpoint a peer advertises or a bootstrap address) against `name`, before any
    /// [`TlsConfig::with_server_name_override`]; for peers reached by an address their
    /// certificates do not name (cryptogen's name the host, not 127.0.0.1). A second name
    /// for the same address replaces the first; a node given an address without a port
    /// does not start.
    pub fn with_server_name_for(
        mut self,
        address: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        let address = address.into();
        self.server_names.retain(|(a, _)| *a != address);
        self.server_names.push((address, name.into()));
        self
    }

    /// The accepting side: our certificate, HTTP/2 by ALPN, and clients' certificates
    /// checked as [`TlsConfig::require_client_certificate`] and
    /// [`TlsConfig::verify_client_chain`] say. `roots`: the CAs of [`TlsConfig::new`].
    fn server_config(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
        roots: &RootCertStore,
    ) -> Result<Arc<ServerConfig>, String> {
        let verifier: Arc<dyn ClientCertVerifier> =
            if self.verify_client_chain || self.require_client_certificate {
                let roots = match &self.client_ca_pem {
                    Some(pem) => {
                        let mut client_roots = RootCertStore::empty();
                        for ca in certs(pem, "client CA certificate")? {
                            client_roots
                                .add(ca)
                                .map_err(|e| format!("unusable client CA certificate: {e}"))?;
                        }
                        client_roots
                    }
                    None => roots.clone(),
                };
                let builder =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let builder = if self.require_client_certificate {
                    builder
                } else {
                    builder.allow_unauthenticated()
                };
                builder.build().map_err(|e| format!("client CAs: {e}"))?
            } else {
                Arc::new(KeyHeldClientCertificate {
                    algorithms: provider.signature_verification_algorithms,
                })
            };
        let chain = certs(&self.server_cert_pem, "server certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.server_key_pem)
            .map_err(|e| format!("server key: {e}"))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("server certificate: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    pub(crate) fn prepare(&self) -> Result<PreparedTls, String> {
        // Both sides take the process's default provider (as tonic's own TLS would).
        // Installing ours makes it the one, and keeps rustls from refusing to pick when
        // another crate in the build enables a second provider. An application that installed its own
        // first keeps it, and the dialling side takes the same, so that both sides of every
        // connection of the process follow one policy.
        let _ = crypto_provider().install_default();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(crypto_provider()));
        // aws-lc-rs seeds its random generator the first time a process asks it for bytes,
        // gathering jitter entropy (about 30 ms of CPU on this project's machines), and
        // every handshake draws from it: asking now keeps that off the first connection.
        provider
            .secure_random
            .fill(&mut [0u8; 1])
            .map_err(|_| "the TLS provider's random generator failed".to_string())?;
        let server_hash = leaf_hash(&self.server_cert_pem, "server certificate")?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&self.ca_pem, "CA certificate")? {
            roots
                .add(ca)
                .map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone());
        let (mut client, client_hash) = match &self.client {
            Some((cert, key)) => {
                let chain = certs(cert, "client certificate")?;
                let hash = leaf_hash(cert, "client certificate")?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate: {e}"))?;
                (config, hash)
            }
            // No client certificate: the hash is never sent, since servers refuse us first.
            None => (builder.with_no_client_auth(), server_hash),
        };
        client.alpn_protocols = vec![b"h2".to_vec()];
        let server = self.server_config(provider, &roots)?;
        let server_name_override = match &self.server_name_override {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("server name override {n:?}: {e}"))?,
            ),
            None => None,
        };
        let server_names = self
            .server_names
            .iter()
            .map(|(address, n)| {
                let has_port = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !has_port {
                    return Err(format!("server name {n:?} for {address:?}: not HOST:PORT"));
                }
                ServerName::try_from(n.clone())
                    .map(|name| (address.clone(), name))
                    .map_err(|e| format!("server name {n:?} for {address}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(PreparedTls {
            hashes: TlsHashes {
                client_cert_hash: client_hash,
                server_cert_hash: server_hash,
            },
            server,
            client: Arc::new(ClientTls {
                config: Arc::new(client),
                server_name_override,
                server_names,
            }),
        })
    }
}

/// The cryptography of every TLS connection the node makes or accepts: rustls's aws-lc-rs
/// provider with the AES-128-GCM suites offered first, their records sealed and opened by
/// whichever library is the faster on this CPU ([`RecordCipher::for_this_cpu`]).
///
/// Why AES-128-GCM first: it is what a Fabric peer offers first (Go's `crypto/tls` on a CPU
/// with AES instructions), so our nodes pick between themselves what Fabric peers pick
/// between themselves, and it is the cheapest suite per byte. Why aws-lc-rs for the rest:
/// its handshakes cost about half the CPU of ring's (the README's "TLS cryptography" has
/// the figures). The rest (versions, key exchange groups, signature schemes) is the
/// provider's default.
///
/// Public so that other TLS endpoints of an application (the CLI's operations service is
/// one) can use the same policy. The negotiated suite is the *client's* choice among the
/// suites the server has: rustls servers follow the client's order.
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    crypto_provider_with(RecordCipher::for_this_cpu())
}

/// [`crypto_provider`] with the records' AES-GCM taken from `cipher`, whatever the CPU: for
/// benchmarks that compare the two on one machine, and for an operator who measured
/// otherwise. Both ends of a connection choose for themselves; the bytes on the wire are
/// the same.
pub fn crypto_provider_with(cipher: RecordCipher) -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if cipher == RecordCipher::Ring {
        for suite in &mut provider.cipher_suites {
            if !is_aes_gcm(suite.suite()) {
                continue;
            }
            // ring has every AES-GCM suite aws-lc-rs has; were one missing, aws-lc-rs's stays.
            if let Some(ring) = rustls::crypto::ring::ALL_CIPHER_SUITES
                .iter()
                .find(|r| r.suite() == suite.suite())
            {
                *suite = *ring;
            }
        }
    }
    // Stable: the suites keep their order otherwise (TLS 1.3 before 1.2, ECDSA before RSA).
    provider
        .cipher_suites
        .sort_by_key(|s| !is_aes_128_gcm(s.suite()));
    provider
}

/// The library that seals and opens TLS records with AES-GCM, a fifth to a quarter of the
/// CPU a node spends per message under TLS.
///
/// The two libraries, both constant-time and both already in the build, are fastest on
/// different CPUs: AWS-LC has an AVX-512 AES-GCM (1.2–1.65× ring's AES-256-GCM on full
/// 16 KiB records where it runs), ring has one on 256-bit VAES with AVX2, which AWS-LC
/// lacks (on such a CPU without AVX-512, an AMD EPYC here, ring's is 1.9× AWS-LC's). Where
/// the CPU has neither, both run the same AES-NI code. The README's "TLS cryptography" has
/// the figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordCipher {
    /// aws-lc-rs, the provider's own.
    AwsLc,
    /// ring's AES-GCM suites, in the same places of the same provider.
    Ring,
}

/// What a CPU offers each library's fastest AES-GCM: the one input of the choice of
/// [`RecordCipher`], kept apart from its detection so that the rule can be tested for
/// every CPU, not only the one the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AesFeatures {
    /// VAES, VPCLMULQDQ and AVX2: ring's 256-bit AES-GCM.
    wide_aes: bool,
    /// AVX-512 F, DQ, BW and VL: what AWS-LC asks of the CPU before it takes its AVX-512
    /// AES-GCM.
    aws_lc_avx512: bool,
}

impl AesFeatures {
    fn of_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            AesFeatures {
                wide_aes: std::arch::is_x86_feature_detected!("vaes")
                    && std::arch::is_x86_feature_detected!("vpclmulqdq")
                    && std::arch::is_x86_feature_detected!("avx2"),
                aws_lc_avx512: std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            AesFeatures {
                wide_aes: false,
                aws_lc_avx512: false,
            }
        }
    }
}

impl RecordCipher {
    /// ring where the CPU has VAES, VPCLMULQDQ and AVX2 but not the AVX-512 that AWS-LC's
    /// wide AES-GCM needs; aws-lc-rs everywhere else.
    pub fn for_this_cpu() -> Self {
        Self::for_cpu_with(AesFeatures::of_this_cpu())
    }

    fn for_cpu_with(cpu: AesFeatures) -> Self {
        if cpu.wide_aes && !cpu.aws_lc_avx512 {
            RecordCipher::Ring
        } else {
            RecordCipher::AwsLc
        }
    }

    /// The library's name as `FromStr` takes it, for reports and logs.
    pub fn name(self) -> &'static str {
        match self {
            RecordCipher::AwsLc => "aws-lc",
            RecordCipher::Ring => "ring",
        }
    }
}

/// `ring`, `aws-lc`, or `auto` ([`RecordCipher::for_this_cpu`]): how a command line names it.
impl std::str::FromStr for RecordCipher {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(RecordCipher::for_this_cpu()),
            "ring" => Ok(RecordCipher::Ring),
            "aws-lc" => Ok(RecordCipher::AwsLc),
            other => Err(format!("{other:?}: auto, ring or aws-lc")),
        }
    }
}

fn is_aes_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    is_aes_128_gcm(suite)
        || matches!(
            suite,
            S::TLS13_AES_256_GCM_SHA384
                | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        )
}

fn is_aes_128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{what}: no certificate in PEM"));
    }
    Ok(chain)
}

/// SHA-256 of the first (leaf) certificate in `pem`.
fn leaf_hash(pem: &[u8], what: &str) -> Result<CertHash, String> {
    certs(pem, what)?
        .first()
        .map(|c| cert_hash(c.as_ref()))
        .ok_or_else(|| format!("{what}: no certificate in PEM"))
}

/// TLS settings ready for use, derived once at start.
pub(crate) struct PreparedTls {
    pub(crate) hashes: TlsHashes,
    /// The accepting side, for [`crate::inbound::TlsIncoming`].
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientTls>,
}

/// What the dialling side needs.
pub(crate) struct ClientTls {
    config: Arc<ClientConfig>,
    server_name_override: Option<ServerName<'static>>,
    server_names: std::collections::HashMap<String, ServerName<'static>>,
}

impl ClientTls {
    /// The name `host:port`'s certificate must carry: the one given for that address, else
    /// the override, else `host`.
    /// `host` as the URI has it (an IPv6 address in brackets, as endpoints write it).
    fn server_name(&self, host: &str, port: u16) -> io::Result<ServerName<'static>> {
        let named = self
            .server_names
            .get(&format!("{host}:{port}"))
            .or(self.server_name_override.as_ref());
        match named {
            Some(n) => Ok(n.clone()),
            None => ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
                .map(|n| n.to_owned())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)),
        }
    }
}

/// Most certificates a client may present without a chain check (its own and the
/// intermediates it sends along): a Fabric peer sends its own and at most a few.
const MAX_UNVERIFIED_CHAIN: usize = 8;

/// Most bytes those certificates may take in all (`MAX_UNVERIFIED_CHAIN` certificates of a
/// generous 2 KiB each).
const MAX_UNVERIFIED_CHAIN_BYTES: usize = 16 * 1024;

/// Client certificates as Go's `RequestClientCert` takes them, for
/// [`TlsConfig::verify_client_chain`]`(false)`: asked for, optional, any issuer; the
/// handshake's signature must still verify with the certificate's key (rustls checks it
/// here, and parses the certificate to find the key), so a client cannot present a
/// certificate it does not hold, and the gossip handshake binds its hash. Beyond Go, a
/// chain of more than [`MAX_UNVERIFIED_CHAIN`] certificates or
/// [`MAX_UNVERIFIED_CHAIN_BYTES`] is refused: nobody vouches for its size.
#[derive(Debug)]
struct KeyHeldClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for KeyHeldClientCertificate {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // No issuer checks them, so their size is the client's choice: a 60 KB
        // certificate held about 440 KB a connection until `setup_timeout` (an attack on
        // loopback, 2026-12-04). A Fabric TLS certificate is about 1 KB.
        let chain = 1 + intermediates.len();
        let bytes = end_entity.len() + intermediates.iter().map(|c| c.len()).sum::<usize>();
        if chain > MAX_UNVERIFIED_CHAIN || bytes > MAX_UNVERIFIED_CHAIN_BYTES {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Anything hyper can run HTTP/2 over: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why a dial over TLS failed when the server did not agree to HTTP/2 (the whole message:
/// a dial's error reaches the caller, the events and the log as text).
pub(crate) const NO_ALPN_H2: &str = "the server's TLS selected no application protocol, not HTTP/2 (ALPN \"h2\"): not a gRPC server";

/// Whether a server's ALPN answer lets gRPC run over the connection. Only `h2` does: we
/// offer nothing else, and a server that selected nothing never agreed to speak HTTP/2
/// (a TLS front of another service, or one made to look like a peer). grpc-go (1.67 and
/// later) refuses such a server too, before a byte of HTTP/2; every Fabric peer selects
/// `h2` (its gRPC server offers it), so no Fabric peer is turned away.
fn selected_http2(alpn: Option<&[u8]>) -> bool {
    alpn == Some(b"h2")
}

/// A tonic connector that opens TCP (and TLS on top when configured) itself.
///
/// Tonic's own TLS keeps the server's certificate to itself, but the core must compare the
/// leaf the server presented with the hash the server claims in its `ConnEstablish`. So the
/// channel is given an `http://` endpoint, and this connector does the TLS handshake and
/// records the SHA-256 of the server's leaf certificate in `captured`.
#[derive(Clone)]
pub(crate) struct Dialer {
    tls: Option<Arc<ClientTls>>,
    resolver: Arc<Resolver>,
    pub(crate) captured: Arc<Mutex<Option<CertHash>>>,
}

impl Dialer {
    pub(crate) fn new(tls: Option<Arc<ClientTls>>, resolver: Arc<Resolver>) -> Self {
        Dialer {
            tls,
            resolver,
            captured: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn captured(&self) -> Option<CertHash> {
        *self.captured.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let resolver = self.resolver.clone();
        let captured = self.captured.clone();
        Box::pin(async move {
            let dialled = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let host = dialled
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port"))?;
            let tcp = resolver.connect(&host, port).await?;
            tcp.set_nodelay(true)?;
            let Some(tls) = tls else {
                return Ok(TokioIo::new(Box::new(tcp) as Box<dyn Io>));
            };
            let name = tls.server_name(dialled, port)?;
            let stream = TlsConnector::from(tls.config.clone())
                .connect(name, ReadAhead::new(tcp, READ_AHEAD))
                .await?;
            if !selected_http2(stream.get_ref().1.alpn_protocol()) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, NO_ALPN_H2));
            }
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| cert_hash(c.as_ref()));
            *captured.lock().unwrap_or_else(PoisonError::into_inner) = leaf;
            Ok(TokioIo::new(Box::new(stream) as Box<dyn Io>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_msp::dev::{self, DevOrg, DevPeer, OrgSpec};

    /// Two organizations, each with its own TLS CA: org1 with two peers, org2 with one.
    fn orgs() -> Vec<DevOrg> {
        dev::seeded_in_memory(
            &[
                OrgSpec::new("Org1MSP", "org1.example.com", 2),
                OrgSpec::new("Org2MSP", "org2.example.com", 1),
            ],
            7,
        )
        .unwrap()
    }

    /// `peer`'s TLS certificate for both roles, trusting the TLS CA of `trusted`.
    fn tls_of(peer: &DevPeer, trusted: &DevOrg) -> TlsConfig {
        TlsConfig::new(
            peer.tls.cert_pem(),
            peer.tls.key_pem.clone(),
            trusted.tls_ca.cert_pem(),
        )
    }

    /// A TLS handshake between `client` and `server` run in memory, the server verified as
    /// `localhost`: the server's side once both are done, or the first error either raised
    /// (under TLS 1.3 a refused client certificate shows only on the server's side).
    fn handshake(
        client: &PreparedTls,
        server: &PreparedTls,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(client.client.config.clone(), name)?;
        let mut server = rustls::ServerConnection::new(server.server.clone())?;
        // Two flights each way complete a TLS 1.3 handshake; the bound only stops a stall.
        for _ in 0..8 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(server);
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            let mut rest = wire.as_slice();
            while !rest.is_empty() {
                server.read_tls(&mut rest).unwrap();
                server.process_new_packets()?;
            }
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            let mut rest = wire.as_slice();
            while !rest.is_empty() {
                client.read_tls(&mut rest).unwrap();
                client.process_new_packets()?;
            }
        }
        panic!("the handshake did not finish");
    }

    /// The hash of the leaf certificate the server's side of a handshake saw, if any.
    fn client_leaf(server: &rustls::ServerConnection) -> Option<CertHash> {
        server
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| cert_hash(c.as_ref()))
    }

    /// What the core binds into its handshakes is the SHA-256 of the leaf each role
    /// presents, the first certificate of its PEM when the chain follows it.
    #[test]
    fn a_node_binds_the_leaf_certificate_it_presents_in_each_role() {
        let orgs = orgs();
        let (org1, p0, p1) = (&orgs[0], &orgs[0].peers[0], &orgs[0].peers[1]);
        let one = tls_of(p0, org1).prepare().unwrap();
        assert_eq!(one.hashes.server_cert_hash, p0.tls.hash());
        assert_eq!(one.hashes.client_cert_hash, p0.tls.hash());
        let two = tls_of(p0, org1)
            .with_client_identity(p1.tls.cert_pem(), p1.tls.key_pem.clone())
            .prepare()
            .unwrap();
        assert_eq!(two.hashes.server_cert_hash, p0.tls.hash());
        assert_eq!(two.hashes.client_cert_hash, p1.tls.hash());
        let chained = TlsConfig::new(
            format!("{}{}", p0.tls.cert_pem(), org1.tls_ca.cert_pem()),
            p0.tls.key_pem.clone(),
            org1.tls_ca.cert_pem(),
        )
        .prepare()
        .unwrap();
        assert_eq!(chained.hashes.server_cert_hash, p0.tls.hash());
        assert_eq!(chained.hashes.client_cert_hash, p0.tls.hash());
    }

    /// Which clients the TLS layer lets in, and with which certificate, for each setting:
    /// one of our CA's, one of another organization's CA, and one without a certificate.
    #[test]
    fn clients_are_taken_by_their_ca_as_the_settings_say() {
        let orgs = orgs();
        let (org1, org2) = (&orgs[0], &orgs[1]);
        let server = |c: TlsConfig| c.prepare().unwrap();
        let ours = tls_of(&org1.peers[1], org1).prepare().unwrap();
        let theirs = tls_of(&org2.peers[0], org1).prepare().unwrap();
        let anonymous = tls_of(&org1.peers[1], org1)
            .without_client_identity()
            .prepare()
            .unwrap();
        let base = || tls_of(&org1.peers[0], org1);
        // (setting, whether ours, theirs and the anonymous client get in)
        let cases = [
            ("default", server(base()), [true, false, true]),
            (
                "client CAs of org2",
                server(base().with_client_root_cas(org2.tls_ca.cert_pem())),
                [false, true, true],
            ),
            (
                "no chain check",
                server(base().verify_client_chain(false)),
                [true, true, true],
            ),
            (
                "certificate required",
                server(base().require_client_certificate(true)),
                [true, false, false],
            ),
            (
                "certificate required, no chain check",
                server(
                    base()
                        .verify_client_chain(false)
                        .require_client_certificate(true),
                ),
                [true, false, false],
            ),
        ];
        for (setting, server, expected) in &cases {
            let clients = [
                (&ours, Some(org1.peers[1].tls.hash())),
                (&theirs, Some(org2.peers[0].tls.hash())),
                (&anonymous, None),
            ];
            for ((client, leaf), taken) in clients.iter().zip(expected) {
                match handshake(client, server) {
                    Ok(conn) => {
                        assert!(taken, "{setting}: {leaf:?} let in");
                        // The gossip handshake compares this with the hash the client binds.
                        assert_eq!(client_leaf(&conn), *leaf, "{setting}");
                    }
                    Err(e) => assert!(!taken, "{setting}: {leaf:?} refused: {e}"),
                }
            }
        }
    }

    /// Without a chain check nobody vouches for a client's chain, so its size is bounded:
    /// eight certificates of a generous 2 KiB each are taken, one more certificate or one
    /// more byte is refused, wherever it is.
    #[test]
    fn an_unverified_chain_is_taken_up_to_eight_certificates_and_16_kib() {
        let verifier = KeyHeldClientCertificate {
            algorithms: crypto_provider().signature_verification_algorithms,
        };
        let now = rustls::pki_types::UnixTime::now();
        let taken = |chain: &[CertificateDer<'static>]| {
            verifier
                .verify_client_cert(&chain[0], &chain[1..], now)
                .is_ok()
        };
        let cert = |len: usize| CertificateDer::from(vec![0x30; len]);
        let usual: Vec<_> = (0..8).map(|_| cert(2048)).collect();
        assert!(taken(&usual));
        assert!(taken(&usual[..1]));
        let nine_small: Vec<_> = (0..9).map(|_| cert(100)).collect();
        assert!(!taken(&nine_small));
        let mut byte_over = usual.clone();
        byte_over[7] = cert(2049);
        assert!(!taken(&byte_over));
        assert!(taken(&[cert(16 * 1024)]));
        assert!(!taken(&[cert(16 * 1024 + 1)]));
    }

    /// Each address dialled is verified against the last name given for it, other addresses
    /// against the override, or else their own host (an IPv6 address without its brackets).
    #[test]
    fn each_address_is_verified_against_the_last_name_given_for_it() {
        let orgs = orgs();
        let named = |n: &str| ServerName::try_from(n.to_string()).unwrap();
        let base = || tls_of(&orgs[0].peers[0], &orgs[0]);
        let per_address = base()
            .with_server_name_for("10.0.0.1:7051", "peer0.org1.example.com")
            .with_server_name_for("10.0.0.2:7051", "peer1.org1.example.com")
            .with_server_name_for("10.0.0.1:7051", "peer2.org1.example.com")
            .prepare()
            .unwrap();
        let name =
            |tls: &PreparedTls, host: &str, port| tls.client.server_name(host, port).unwrap();
        assert_eq!(
            name(&per_address, "10.0.0.1", 7051),
            named("peer2.org1.example.com")
        );
        assert_eq!(
            name(&per_address, "10.0.0.2", 7051),
            named("peer1.org1.example.com")
        );
        assert_eq!(name(&per_address, "10.0.0.1", 7052), named("10.0.0.1"));
        assert_eq!(name(&per_address, "[::1]", 7051), named("::1"));
        let overridden = base()
            .with_server_name_override("peer9.org1.example.com")
            .with_server_name_for("10.0.0.1:7051", "peer0.org1.example.com")
            .prepare()
            .unwrap();
        assert_eq!(
            name(&overridden, "10.0.0.1", 7051),
            named("peer0.org1.example.com")
        );
        assert_eq!(
            name(&overridden, "10.0.0.2", 7051),
            named("peer9.org1.example.com")
        );
    }

    /// A name is given for `host:port` as dialled; an address missing either part could
    /// never match one, so the node does not start with it.
    #[test]
    fn a_name_for_an_address_without_host_or_port_is_refused_at_start() {
        let orgs = orgs();
        let with = |address: &str| {
            tls_of(&orgs[0].peers[0], &orgs[0])
                .with_server_name_for(address, "peer0.org1.example.com")
                .prepare()
        };
        for address in ["peer0.org1.example.com:7051", "[::1]:7051"] {
            assert!(with(address).is_ok(), "{address}");
        }
        for address in [
            "peer0.org1.example.com",
            ":7051",
            "peer0.org1.example.com:x",
            "peer0.org1.example.com:70510",
        ] {
            assert!(with(address).is_err(), "{address}");
        }
    }

    /// Logs show how TLS is set up, never a key.
    #[test]
    fn a_tls_configs_debug_output_shows_its_settings_and_no_key() {
        let orgs = orgs();
        let peer = &orgs[0].peers[0];
        let shown = format!(
            "{:?}",
            tls_of(peer, &orgs[0]).with_server_name_for("10.0.0.1:7051", "peer0")
        );
        assert!(shown.contains("verify_client_chain: true"), "{shown}");
        assert!(shown.contains("10.0.0.1:7051"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(
            !shown.contains(peer.tls.key_pem.lines().nth(1).unwrap()),
            "{shown}"
        );
    }

    #[test]
    fn the_provider_offers_every_default_suite_with_aes_128_gcm_first() {
        let ours: Vec<_> = crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let default: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours.len(), default.len());
        assert!(default.iter().all(|s| ours.contains(s)));
        use rustls::CipherSuite as S;
        assert_eq!(ours[0], S::TLS13_AES_128_GCM_SHA256);
        // TLS 1.2 peers (Fabric's `CipherSuites` list is TLS 1.2 only) also get AES-128-GCM
        // before AES-256-GCM and ChaCha20.
        let pos = |s| ours.iter().position(|&x| x == s).unwrap();
        assert!(
            pos(S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                < pos(S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        );
        assert!(pos(S::TLS13_AES_128_GCM_SHA256) < pos(S::TLS13_AES_256_GCM_SHA384));
    }

    /// ring takes the records only on a CPU with its wide AES and without AWS-LC's AVX-512
    /// one: a CPU with both AVX-512 and VAES, or with neither, stays with aws-lc-rs. Each
    /// of the four kinds of CPU, whichever one runs the test.
    #[test]
    fn records_go_to_ring_only_where_the_cpu_has_wide_aes_and_not_aws_lcs_avx_512() {
        for (wide_aes, aws_lc_avx512, expected) in [
            (false, false, RecordCipher::AwsLc),
            (false, true, RecordCipher::AwsLc),
            (true, true, RecordCipher::AwsLc),
            (true, false, RecordCipher::Ring),
        ] {
            let cpu = AesFeatures {
                wide_aes,
                aws_lc_avx512,
            };
            assert_eq!(RecordCipher::for_cpu_with(cpu), expected, "{cpu:?}");
        }
        assert_eq!(
            RecordCipher::for_this_cpu(),
            RecordCipher::for_cpu_with(AesFeatures::of_this_cpu())
        );
    }

    /// A command line's name for each library reads back as that library.
    #[test]
    fn record_ciphers_are_named_as_they_are_parsed() {
        for c in [RecordCipher::AwsLc, RecordCipher::Ring] {
            assert_eq!(c.name().parse(), Ok(c));
        }
        assert_eq!("auto".parse(), Ok(RecordCipher::for_this_cpu()));
        assert!("boringssl".parse::<RecordCipher>().is_err());
    }

    /// With ring chosen, every AES-GCM suite is ring's and everything else aws-lc-rs's, in
    /// the same order: the offer on the wire does not change with the CPU.
    #[test]
    fn ring_records_change_which_library_seals_and_not_what_is_offered() {
        let aws_lc = crypto_provider_with(RecordCipher::AwsLc);
        let ring = crypto_provider_with(RecordCipher::Ring);
        let suites = |p: &rustls::crypto::CryptoProvider| -> Vec<_> {
            p.cipher_suites.iter().map(|s| s.suite()).collect()
        };
        assert_eq!(suites(&aws_lc), suites(&ring));
        let from = |s: &rustls::SupportedCipherSuite, all: &[rustls::SupportedCipherSuite]| {
            all.iter().any(|a| match (a, s) {
                (
                    rustls::SupportedCipherSuite::Tls13(a),
                    rustls::SupportedCipherSuite::Tls13(s),
                ) => std::ptr::eq(*a, *s),
                (
                    rustls::SupportedCipherSuite::Tls12(a),
                    rustls::SupportedCipherSuite::Tls12(s),
                ) => std::ptr::eq(*a, *s),
                _ => false,
            })
        };
        let ring_all = rustls::crypto::ring::ALL_CIPHER_SUITES;
        let aws_lc_all = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES;
        let mut aes_gcm = 0;
        for suite in &ring.cipher_suites {
            if is_aes_gcm(suite.suite()) {
                aes_gcm += 1;
                assert!(from(suite, ring_all), "{:?} is not ring's", suite.suite());
            } else {
                assert!(
                    from(suite, aws_lc_all),
                    "{:?} is not aws-lc-rs's",
                    suite.suite()
                );
            }
        }
        // TLS 1.3's two and TLS 1.2's four (ECDSA and RSA, 128 and 256).
        assert_eq!(aes_gcm, 6);
        assert!(aws_lc.cipher_suites.iter().all(|s| from(s, aws_lc_all)));
    }
}
