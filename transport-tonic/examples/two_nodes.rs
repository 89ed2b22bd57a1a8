//! Two nodes over mutual TLS with real X.509 identities, as an application embeds this
//! crate: each node gets its MSP identity, a trust store and its TLS certificate, then they
//! exchange a message, a SendWithAck and a probe.
//!
//! ```text
//! cargo run -p fabric-gossip-tonic --example two_nodes
//! ```
//!
//! The identities come from a development PKI made in memory (`fabric_gossip_msp::dev`),
//! two organizations of one peer each. Against a real network, load the peer's own MSP
//! folder and its channel's MSPs instead (`MspSecurity::from_msp_dir`,
//! `TrustStore::add_msp_dir`) and its TLS files; the node is built the same way.

use fabric_gossip_msp::dev::{self, OrgSpec};
use fabric_gossip_tonic::fabric_gossip_core::{
    Config, RemotePeer, SignedMessage, data_message, data_payload,
};
use fabric_gossip_tonic::{Node, TlsConfig};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // On glibc: keep h2's freed read buffers instead of handing them back to the kernel
    // (README, "Things to know"); before the nodes allocate anything.
    fabric_gossip_tonic::malloc::warm_glibc_malloc();
    // Seeded, so the same certificates on every run.
    let orgs = dev::seeded_in_memory(
        &[
            OrgSpec::new("Org1MSP", "org1.example.com", 1),
            OrgSpec::new("Org2MSP", "org2.example.com", 1),
        ],
        7,
    )?;
    // Each node accepts identities issued by either organization's CA...
    let trust = dev::trust_all(&orgs)?;
    // ...and TLS certificates issued by either organization's TLS CA.
    let tls_cas: String = orgs.iter().map(|o| o.tls_ca.cert_pem()).collect();
    let mut nodes = Vec::new();
    for org in &orgs {
        let peer = &org.peers[0];
        let tls = TlsConfig::new(
            peer.tls.cert_pem(),
            peer.tls.key_pem.clone(),
            tls_cas.clone(),
        );
        let security = org.security(peer, trust.clone())?;
        // Each node its own seed: `Config::default()` gives every node the same nonces.
        let config = Config::default().with_seed(fabric_gossip_tonic::random_seed());
        let node = Node::builder(config).tls(tls).start(security).await?;
        println!(
            "{} listening on {} as {}",
            org.spec.msp_id,
            node.endpoint(),
            node.pki_id()
        );
        nodes.push(node);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let to_b = RemotePeer::new(b.endpoint(), b.pki_id().clone());

    // One message: the first send dials, runs the TLS and gossip handshakes (each side
    // checks the other's identity and that it signed its own TLS certificate's hash), and
    // writes it once the connection is up.
    let mut inbox = b.accept(|_| true)?;
    let msg = SignedMessage::noop(data_message(1, b"hello from Org1".to_vec()));
    a.send_wait(&msg, &to_b).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await?
        .ok_or("B stopped")?;
    let (seq, data) = data_payload(got.message()).ok_or("not a DataMessage")?;
    println!(
        "B received #{seq} {:?} from {} (identity of {} bytes)",
        String::from_utf8_lossy(data),
        got.sender(),
        got.info().identity.len()
    );

    // SendWithAck: B acks, A waits for one ack at most a second.
    let peers = [to_b.clone()];
    let (acks, acked) = tokio::join!(
        a.send_with_ack(msg.message().clone(), Duration::from_secs(1), 1, &peers),
        async {
            let m = inbox.recv().await.ok_or("B stopped")?;
            m.ack(None).await.map_err(|e| e.to_string())
        },
    );
    acked?;
    for r in acks? {
        println!("ack from {}: {:?}", r.peer, r.result);
    }

    // A probe: a Ping, answered without a handshake.
    a.probe(&to_b).await?;
    println!(
        "probe answered; A holds {} connection(s)",
        a.connections().len()
    );

    for n in &nodes {
        n.stop().await;
    }
    Ok(())
}
