//! Fabric's membership layer on two real gRPC nodes in one process, on loopback: B starts,
//! A bootstraps through B, each prints when it learns the other; then B stops and A
//! declares it dead. It exits non-zero if any of that does not happen.
//!
//! ```text
//! cargo run -p fabric-gossip-tonic --example membership_tonic
//! ```
//!
//! The identities are two peers of one organization from a development PKI made in memory
//! (`fabric_gossip_msp::dev`): a bootstrap peer must be of our own organization, as in
//! Fabric. Against a real network, load the peer's MSP folder instead
//! (`MspSecurity::from_msp_dir`) and add `.tls(..)` to the builder, as
//! `examples/two_nodes.rs` does; the membership layer is hosted the same way. With Fabric's
//! test identities (`TestOnlyHmacSecurity`, identity = endpoint), start the nodes with
//! `start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))` instead.

use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use fabric_gossip_msp::dev::{self, OrgSpec};
use fabric_gossip_tonic::fabric_gossip_core::{Config, PkiId};
use fabric_gossip_tonic::{Node, NodeBuilder};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// A node builder hosting the membership layer, joining through `bootstrap` if given.
fn member(bootstrap: Option<SocketAddr>) -> NodeBuilder {
    // The layer is made once the listen address is known (port 0 is resolved by binding).
    // That address is our internal endpoint, what peers of our organization dial: it must
    // be one they can reach, so a node listening on 0.0.0.0 names its endpoint itself.
    // try_layer: a configuration Discovery::new refuses comes back as start's error.
    // Each node's core and layer get seeds of their own (a simulation would take the
    // run's seed instead, so that it replays).
    let core = Config::default().with_seed(fabric_gossip_tonic::random_seed());
    Node::builder(core).try_layer(move |addr| {
        let cfg = DiscoveryConfig::new(addr.to_string())
            .with_bootstrap(bootstrap.map(|b| b.to_string()))
            .with_seed(fabric_gossip_tonic::random_seed());
        Discovery::new(cfg)
    })
}

/// Prints `name`'s membership events until it has seen `other` alive and then dead.
async fn watch(name: &'static str, node: Node, other: PkiId, t0: Instant) -> bool {
    // The layer's events wait in a bounded queue from the start, so none is missed
    // between starting the node and taking the stream.
    let Some(mut events) = node.layer_events::<DiscoveryEvent>() else {
        return false;
    };
    let mut learnt = false;
    while let Some(event) = events.next().await {
        let at = t0.elapsed().as_secs_f64();
        match event {
            DiscoveryEvent::MemberAlive { member, .. } if member.pki_id == other => {
                let alive = node.with_layer(|d: &Discovery| d.members().len());
                println!(
                    "{at:6.3}s {name} learnt the other: {} of {:?} ({alive:?} alive)",
                    member.preferred_endpoint(),
                    member.org.as_deref().unwrap_or("?"),
                );
                learnt = true;
            }
            DiscoveryEvent::MemberDead { member, reason } if member.pki_id == other => {
                println!("{at:6.3}s {name} declared the other dead ({reason:?})");
                return learnt;
            }
            other => println!("{at:6.3}s {name} {other:?}"),
        }
    }
    // The stream ends when the node stops.
    learnt
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    // Seeded, so the same certificates on every run; one organization, two peers.
    let orgs = dev::seeded_in_memory(&[OrgSpec::new("Org1MSP", "org1.example.com", 2)], 7)?;
    let trust = dev::trust_all(&orgs)?;
    let org = &orgs[0];

    // Binding B's listener first tells A's bootstrap address before either node starts.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let b_addr = listener.local_addr()?;
    let b = member(None)
        .listener(listener)
        .start(org.security(&org.peers[1], trust.clone())?)
        .await?;
    let a = member(Some(b_addr))
        .start(org.security(&org.peers[0], trust)?)
        .await?;
    println!("A on {} as {}", a.endpoint(), a.pki_id());
    println!("B on {} as {}", b.endpoint(), b.pki_id());

    let watch_a = tokio::spawn(watch("A", a.clone(), b.pki_id().clone(), t0));
    let watch_b = tokio::spawn(watch("B", b.clone(), a.pki_id().clone(), t0));

    // Wait until each lists the other alive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(knows(&a, b.pki_id()) && knows(&b, a.pki_id())) {
        if tokio::time::Instant::now() > deadline {
            return Err("the nodes did not learn each other within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // B stops. A presumes it dead as soon as a message to it fails: its next sync or
    // heartbeat, within 5 s, rather than after alive_expiration's 25 s of silence.
    println!("{:6.3}s B stops", t0.elapsed().as_secs_f64());
    b.stop().await;
    let a_saw = tokio::time::timeout(Duration::from_secs(40), watch_a).await??;
    let b_saw = watch_b.await?;
    a.stop().await;
    if !(a_saw && b_saw) {
        return Err("a node missed the other".into());
    }
    println!("{:6.3}s done", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Whether `node`'s alive view lists `pki_id`.
fn knows(node: &Node, pki_id: &PkiId) -> bool {
    node.with_layer(|d: &Discovery| d.member(pki_id).is_some_and(|m| m.alive))
        .unwrap_or(false)
}
