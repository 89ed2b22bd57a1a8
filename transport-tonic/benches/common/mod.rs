// What both benchmarks need: a runtime of two workers, two nodes (plaintext or mutual TLS
// with a throwaway CA), and the 1 KiB DataMessage every workload sends.
#![allow(dead_code)]

use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{Config, SignedMessage, TestOnlyHmacSecurity};
use fabric_gossip_tonic::{Node, StartError, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::time::Duration;

/// Mutual-TLS material for two nodes signed by one fresh CA.
pub(crate) fn tls_pair() -> (TlsConfig, TlsConfig) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = || {
        let p = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        TlsConfig::new(cert.pem(), key.serialize_pem(), issuer.pem())
    };
    (leaf(), leaf())
}

/// A noop-signed 1 KiB DataMessage, as Fabric's `Send` puts it on the wire.
pub(crate) fn message() -> SignedMessage {
    SignedMessage::noop(GossipMessage::data(1, vec![7u8; 1024]))
}

/// Each workload runs over both: `(name, mutual TLS?)`.
pub(crate) const TRANSPORTS: [(&str, bool); 2] = [("plaintext", false), ("mutual_tls", true)];

/// The runtime every benchmark runs on: two workers, as the machine the goals are set for
/// has 2 cores.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One node with `config`, with mutual TLS if given, started on the caller's runtime.
pub(crate) async fn start_node(tls: Option<TlsConfig>, config: Config) -> Result<Node, StartError> {
    let mut b = Node::builder(config).stop_timeout(Duration::from_secs(2));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.start_with(|a| TestOnlyHmacSecurity::new(a.to_string()))
        .await
}

/// Two nodes with `config`, in plaintext or with mutual TLS, started on the caller's
/// runtime: the benchmarks block on it, the report example awaits it inside its workloads.
pub(crate) async fn start_pair(tls: bool, config: Config) -> Result<(Node, Node), StartError> {
    let (ta, tb) = if tls {
        let (x, y) = tls_pair();
        (Some(x), Some(y))
    } else {
        (None, None)
    };
    Ok((
        start_node(ta, config.clone()).await?,
        start_node(tb, config).await?,
    ))
}

/// Two nodes with `config`, in plaintext or with mutual TLS.
pub(crate) fn pair(rt: &tokio::runtime::Runtime, tls: bool, config: Config) -> (Node, Node) {
    rt.block_on(start_pair(tls, config)).unwrap()
}

/// Stops both nodes of a [`pair`].
pub(crate) fn stop_pair(rt: &tokio::runtime::Runtime, a: &Node, b: &Node) {
    rt.block_on(async {
        a.stop().await;
        b.stop().await;
    });
}
