// What both benchmarks need: a throwaway CA with two leaf certificates, and the 1 KiB
// DataMessage every workload sends.
#![allow(dead_code)]

use fabric_gossip_core::SignedMessage;
use fabric_gossip_tonic::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

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
    SignedMessage::noop(fabric_gossip_core::data_message(1, vec![7u8; 1024]))
}
