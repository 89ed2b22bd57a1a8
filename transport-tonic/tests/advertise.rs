//! Listening on one address, advertising another (Fabric's `peer.listenAddress` against
//! `peer.address`): what `endpoint()` and `as_peer()` hand out, and that peers reach it.

use crate::common;

use common::*;
use fabric_gossip_core::TestOnlyHmacSecurity;
use fabric_gossip_tonic::{Node, StartError, TlsConfig};
use std::time::Duration;

/// A node bound to every interface on an ephemeral port, advertising `localhost:<port>`.
async fn listening_everywhere(tls: Option<TlsConfig>) -> Node {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("bind 0.0.0.0:0");
    let port = listener.local_addr().unwrap().port();
    let mut b = Node::builder(config())
        .listener(listener)
        .advertise(format!("localhost:{port}"))
        .stop_timeout(Duration::from_secs(3));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts")
}

async fn reached_at_its_advertised_endpoint(tls: bool) {
    let pki = Pki::new("test-ca");
    let a = listening_everywhere(tls.then(|| pki.tls("a"))).await;
    let b = node(config(), tls.then(|| pki.tls("b"))).await;
    let port = a.local_addr().port();
    assert!(a.local_addr().ip().is_unspecified(), "{:?}", a.local_addr());
    // Not "0.0.0.0:<port>", which no peer can dial.
    assert_eq!(a.endpoint(), format!("localhost:{port}"));
    assert_eq!(a.as_peer().endpoint, a.endpoint());
    assert_eq!(&a.as_peer().pki_id, a.pki_id());

    let mut a_in = a.accept(|_| true).unwrap();
    b.send(&data(1, 10), &[a.as_peer()]).unwrap();
    let got = within("a receives at its advertised endpoint", a_in.recv())
        .await
        .expect("message");
    assert_eq!(got.sender(), b.pki_id());
    stop_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_everywhere_is_reached_at_its_advertised_endpoint() {
    reached_at_its_advertised_endpoint(false).await;
}

/// The same over mutual TLS: the dialler checks the certificate against the advertised
/// host name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_host_name_is_the_tls_server_name() {
    reached_at_its_advertised_endpoint(true).await;
}

/// Without `advertise`, the endpoint is the address bound (port 0 resolved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_address_is_advertised_by_default() {
    let a = node(config(), None).await;
    assert_eq!(a.endpoint(), a.local_addr().to_string());
    assert_ne!(a.local_addr().port(), 0);
    stop_all(&[&a]).await;
}

/// An advertised endpoint that is not `host:port` is a typed error of `start`, before
/// anything is bound or served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_endpoint_that_is_not_host_port_is_refused() {
    for bad in [
        "peer0.org1.example.com",
        ":7051",
        "peer0:70510",
        "peer0:port",
    ] {
        let r = Node::builder(config())
            .advertise(bad)
            .start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
            .await;
        match r {
            Err(StartError::Advertise(e)) => assert_eq!(e, bad),
            other => panic!("{bad}: {other:?}"),
        }
    }
}
