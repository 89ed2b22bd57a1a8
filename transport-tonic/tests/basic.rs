//! Two nodes on loopback: handshakes, sending both ways, responding and acking, in
//! plaintext and with mutual TLS.

use crate::common;

use common::*;
use fabric_gossip_core::proto::gossip::Envelope;
use fabric_gossip_core::{AckError, SendResult};
use prost::Message;
use std::time::Duration;

/// Runs `async fn $name(tls: bool)` as two tests, `$name::plaintext` and
/// `$name::mutual_tls`.
macro_rules! in_plaintext_and_mutual_tls {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn plaintext() {
                super::$name(false).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mutual_tls() {
                super::$name(true).await;
            }
        }
    };
}

async fn send_both_ways(tls: bool) {
    let (a, b) = pair(tls).await;
    let mut a_in = a.accept(|_| true).unwrap();
    let mut b_in = b.accept(|_| true).unwrap();

    a.send(&data(1, 100), &[b.as_peer()]).unwrap();
    let got = within("b receives", b_in.recv()).await.expect("message");
    assert_eq!(seq_of(got.message()), Some(1));
    assert_eq!(got.sender(), a.pki_id());
    assert_eq!(got.info().identity.as_ref(), a.endpoint().as_bytes());
    // The bytes handed over are the Envelope exactly as sent.
    assert_eq!(got.envelope_bytes(), data(1, 100).envelope_bytes());
    // And the decoded Envelope is theirs (nothing read `envelope()` before: mutation
    // testing, 2026-12-06).
    assert_eq!(
        Some(got.envelope()),
        Envelope::decode(got.envelope_bytes().clone()).ok().as_ref()
    );
    // Debug output shows what tells them apart: the node's address, the subscription's
    // backlog, the message itself.
    assert!(format!("{a:?}").contains(&a.endpoint()), "{a:?}");
    assert!(format!("{b_in:?}").contains("buffered: 0"), "{b_in:?}");
    assert!(format!("{got:?}").contains("seq_num: 1"), "{got:?}");

    b.send(&data(2, 100), &[a.as_peer()]).unwrap();
    let got = within("a receives", a_in.recv()).await.expect("message");
    assert_eq!(seq_of(got.message()), Some(2));
    assert_eq!(got.sender(), b.pki_id());

    // One connection serves both directions (or a crossing pair resolves to one).
    assert!(a.is_connected(b.pki_id()));
    assert!(b.is_connected(a.pki_id()));
    assert_eq!(a.stats().handshake_failures_total(), 0);
    assert_eq!(b.stats().handshake_failures_total(), 0);

    stop_all(&[&a, &b]).await;
}

in_plaintext_and_mutual_tls!(send_both_ways);

async fn respond_and_ack(tls: bool) {
    let (a, b) = pair(tls).await;
    let mut a_in = a.accept(|_| true).unwrap();
    let mut b_in = b.accept(|_| true).unwrap();

    // Respond: b answers on the connection a's message came in on.
    a.send(&data(1, 10), &[b.as_peer()]).unwrap();
    let req = within("request", b_in.recv()).await.unwrap();
    within("respond", req.respond(data_msg(99, 10)))
        .await
        .unwrap();
    let resp = within("response", a_in.recv()).await.unwrap();
    assert_eq!(seq_of(resp.message()), Some(99));
    assert_eq!(resp.sender(), b.pki_id());

    // SendWithAck: success, then an ack carrying an error.
    let b2 = b.clone();
    let acker = tokio::spawn(async move {
        let m = b_in.recv().await.unwrap();
        m.ack(None).await.unwrap();
        let m = b_in.recv().await.unwrap();
        m.ack(Some("no thanks")).await.unwrap();
        // An encoded message: sent with a fresh nonce, noop-signed.
        let m = b_in.recv().await.unwrap();
        assert_eq!(seq_of(m.message()), Some(4));
        assert_ne!(m.message().nonce, 0);
        assert!(m.envelope().signature.is_empty());
        m.ack(None).await.unwrap();
        drop(b2);
    });
    let peers = [b.as_peer()];
    let ok = within(
        "ack",
        a.send_with_ack(data_msg(2, 10), Duration::from_secs(5), 1, &peers),
    )
    .await
    .unwrap();
    assert_eq!(
        ok,
        vec![SendResult {
            peer: b.pki_id().clone(),
            result: Ok(())
        }]
    );
    let err = within(
        "nack",
        a.send_with_ack(data_msg(3, 10), Duration::from_secs(5), 1, &peers),
    )
    .await
    .unwrap();
    assert_eq!(err[0].result, Err(AckError::Remote("no thanks".into())));
    let encoded = within(
        "ack of an encoded message",
        a.send_with_ack_signed(&data(4, 10), Duration::from_secs(5), 1, &peers),
    )
    .await
    .unwrap();
    assert_eq!(encoded[0].result, Ok(()));
    within("acker", acker).await.unwrap();
    // Acks are intercepted, never delivered.
    assert_eq!(a.stats().acks_unmatched, 0);

    stop_all(&[&a, &b]).await;
}

in_plaintext_and_mutual_tls!(respond_and_ack);

/// `Received::try_ack` queues the ack at once when the connection has room, and says so:
/// the sender's SendWithAck gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_ack_queues_the_ack_when_there_is_room() {
    let (a, b) = pair(false).await;
    let mut b_in = b.accept(|_| true).unwrap();
    let acker = tokio::spawn(async move {
        let m = b_in.recv().await.unwrap();
        assert_eq!(m.try_ack(Some("seen")), Ok(true));
        b_in
    });
    let r = within(
        "ack",
        a.send_with_ack(data_msg(1, 10), Duration::from_secs(5), 1, &[b.as_peer()]),
    )
    .await
    .unwrap();
    assert_eq!(r[0].result, Err(AckError::Remote("seen".into())));
    within("acker", acker).await.unwrap();
    stop_all(&[&a, &b]).await;
}

/// A node refuses Envelopes over its `max_message_size` (at their gRPC length prefix, before
/// their bytes are held): the connection carrying one is closed, nothing is delivered, and a
/// later message within the limit gets through on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_envelope_closes_the_connection() {
    let mut small = config();
    small.max_message_size = 64 * 1024;
    let a = node(config(), None).await;
    let b = node(small, None).await;
    let mut b_in = connect(&a, &b).await;

    a.send(&data(2, 100 * 1024), &[b.as_peer()]).unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    within("b drops the connection", async {
        while b.is_connected(a.pki_id()) {
            tick.tick().await;
        }
    })
    .await;
    // Retry until a has noticed the old connection is gone and reconnects.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let m = within("small one after", async {
        loop {
            tokio::select! {
                m = b_in.recv() => break m.unwrap(),
                _ = tick.tick() => a.send(&data(3, 10), &[b.as_peer()]).unwrap(),
            }
        }
    })
    .await;
    assert_eq!(seq_of(m.message()), Some(3));
    // Refused at its length prefix and counted, never decoded or delivered (the retries
    // above may deliver more than one copy of message 3).
    assert_eq!(b.stats().oversized, 1);
    assert!(b.stats().received >= 2);
    // Sending something larger than one's own limit is refused at once.
    assert!(matches!(
        b.send(&data(4, 100 * 1024), &[a.as_peer()]),
        Err(fabric_gossip_core::Error::MessageTooLarge { .. })
    ));
    stop_all(&[&a, &b]).await;
}

/// A node whose provider refuses its own identity does not start, and says why once (it
/// had read "own identity refused: identity refused: …", an operator's trial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_own_identity_is_said_once() {
    let started = fabric_gossip_tonic::Node::builder(config())
        .start_with(|a| {
            fabric_gossip_core::TestOnlyHmacSecurity::new(a.to_string()).rejecting(a.to_string())
        })
        .await;
    let Err(e) = started else {
        panic!("a node started with a refused identity")
    };
    assert!(
        matches!(e, fabric_gossip_tonic::StartError::Identity(_)),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "own identity refused: untrusted certificate: identity refused by test provider"
    );
}

/// A node that cannot bind its address says which: among several nodes of one process (a
/// test harness, a lightweight peer with an operations port) "address in use" alone does
/// not tell which of them failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_address_in_use_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let started = fabric_gossip_tonic::Node::builder(config())
        .listen(addr)
        .start_with(|a| fabric_gossip_core::TestOnlyHmacSecurity::new(a.to_string()))
        .await;
    let Err(e) = started else {
        panic!("a second node bound {addr}")
    };
    let reason = match &e {
        fabric_gossip_tonic::StartError::Bind { addr: named, error } => {
            assert_eq!(*named, addr);
            assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
            error.to_string()
        }
        other => panic!("{other:?}"),
    };
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    // An error reporter that prints the chain (anyhow's `{:#}`) says the reason once.
    let chain: Vec<String> =
        std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
    let told = chain
        .iter()
        .map(|t| t.matches(&reason).count())
        .sum::<usize>();
    assert_eq!(told, 1, "{chain:?}");
}

/// A client speaking `GossipStream` byte for byte with [`fabric_gossip_tonic::RawCodec`], as
/// its documentation says: the Envelope it sends is the node's handshake, and the first
/// Envelope it reads back is the node's `ConnEstablish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_codec_client_handshakes_with_a_node() {
    use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
    use prost::Message;
    let b = node(config(), None).await;
    let me = "raw-client:1";
    let envelope = framed_conn_establish(me).pop().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", b.endpoint()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    within("ready", grpc.ready()).await.unwrap();
    // Held open after the handshake, as a peer's stream is.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(envelope).await.unwrap();
    let mut replies = within(
        "the call",
        grpc.streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                fabric_gossip_core::proto::GOSSIP_STREAM_PATH,
            ),
            fabric_gossip_tonic::RawCodec,
        ),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within("the node's first Envelope", replies.message())
        .await
        .unwrap()
        .expect("an Envelope");
    let payload = Envelope::decode(first).unwrap().payload;
    let msg = GossipMessage::decode(payload).unwrap();
    assert!(
        matches!(msg.content, Some(gossip_message::Content::Conn(_))),
        "{msg:?}"
    );
    until("the node registers the client", || {
        b.is_connected(&me.into())
    })
    .await;
    drop(tx);
    within("stop", b.stop()).await;
}
