// Shared helpers for the transport's integration tests: nodes on loopback ports, a test
// certificate authority (rcgen), messages, and deadlines.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{DataMessage, GossipMessage, Payload, gossip_message};
use fabric_gossip_core::{Config, SignedMessage, TestOnlyHmacSecurity};
use fabric_gossip_tonic::{Node, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::future::Future;
use std::time::Duration;

/// Upper bound on anything a test waits for; generous for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than `DEADLINE`.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Short time-outs so failure paths finish quickly.
pub fn config() -> Config {
    Config::default().with_timeouts(
        Duration::from_secs(2),
        Duration::from_secs(2),
        Duration::from_secs(4),
    )
}

/// A test CA issuing certificates valid for 127.0.0.1 and localhost.
pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Pki {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM, certificate DER) of a new leaf.
    pub fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    pub fn tls(&self, cn: &str) -> TlsConfig {
        let (cert, key, _) = self.leaf(cn);
        TlsConfig::new(cert, key, self.ca_pem())
    }
}

/// A node on a free loopback port whose identity (Fabric's test provider) is its endpoint.
pub async fn node(config: Config, tls: Option<TlsConfig>) -> Node {
    let mut b = Node::builder(config).stop_timeout(Duration::from_secs(3));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts")
}

pub fn data_msg(seq: u64, size: usize) -> GossipMessage {
    GossipMessage {
        nonce: 0,
        channel: Bytes::new(),
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::DataMsg(DataMessage {
            payload: Some(Payload {
                seq_num: seq,
                data: Bytes::from(vec![(seq % 251) as u8; size]),
                private_data: vec![],
            }),
        })),
    }
}

pub fn data(seq: u64, size: usize) -> SignedMessage {
    SignedMessage::noop(data_msg(seq, size))
}

/// The sequence number of a DataMessage, if it is one.
pub fn seq_of(m: &GossipMessage) -> Option<u64> {
    match &m.content {
        Some(gossip_message::Content::DataMsg(d)) => d.payload.as_ref().map(|p| p.seq_num),
        _ => None,
    }
}
