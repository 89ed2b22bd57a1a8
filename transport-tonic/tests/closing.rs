//! A connection the core closes: what it wrote before the close reaches the remote first,
//! and the dialled stream's task ends at once, whatever the remote does with its side.

use crate::common;

use common::*;
use fabric_gossip_core::proto::gossip::gossip_server::{Gossip, GossipServer};
use fabric_gossip_core::proto::gossip::{Empty, Envelope};
use fabric_gossip_core::{PkiId, RemotePeer, TestOnlyHmacSecurity};
use fabric_gossip_tonic::Node;
use prost::Message;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::codec::Streaming;
use tonic::{Request, Response, Status};

/// A layer's step may send to a peer and close its connection in one call: the core
/// puts out the Write and then the CloseStream, and the driver, which gathers a stream's
/// writes in a row into one item, must queue that item before the stream's end. On a
/// stream the node accepted, the end is the last thing its response carries (a dialled
/// stream's task is aborted at a close, and what it had not written is counted as
/// unconfirmed), so the message must arrive. Ten rounds, each on a new connection. With
/// the end let ahead of the gathered write (mutation testing of `execute`, 2026-12-06) the
/// message was dropped as a write to a stream gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_and_a_close_in_one_step_deliver_the_message_before_the_end() {
    let a = node(config(), None).await;
    // The empty layer: hosted only so that `with_layer_mut` hands out the core.
    let b = Node::builder(config())
        .layer(|_| ())
        .stop_timeout(Duration::from_secs(3))
        .start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts");
    let mut a_in = a.accept(|_| true).unwrap();
    let mut b_in = b.accept(|_| true).unwrap();
    for round in 0..10u64 {
        // A new connection, dialled by a, up before the step.
        a.send(&data(1000 + round, 10), &[b.as_peer()]).unwrap();
        let m = within("the connecting message", b_in.recv()).await.unwrap();
        assert_eq!(seq_of(m.message()), Some(1000 + round));
        let stepped = b.with_layer_mut(|_: &mut (), comm| {
            let now = comm.now();
            let sent = comm.send(now, &data(round, 10), &[a.as_peer()]);
            comm.close_conn(now, a.pki_id());
            sent
        });
        assert_eq!(stepped, Some(Ok(())), "round {round}");
        let m = within("the message sent before the close", a_in.recv())
            .await
            .unwrap();
        assert_eq!(seq_of(m.message()), Some(round), "round {round}");
        until("a's side closed", || !a.is_connected(b.pki_id())).await;
    }
    assert_eq!(b.stats().connections_opened, 10);
    stop_all(&[&a, &b]).await;
}

/// A gossip server that sends its ConnEstablish and then holds the call open for good,
/// reading nothing more: it never ends its side. `dropped` learns when the server let go
/// of the call (its response stream dropped, as a client's reset makes it).
struct Holder {
    conn: Envelope,
    dropped: Mutex<Option<oneshot::Sender<()>>>,
}

type Out = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Gossip for Holder {
    type GossipStreamStream = Out;

    async fn gossip_stream(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<Response<Out>, Status> {
        // Both kept in the stream's state: the request so that the server resets nothing,
        // the sender so that its drop tells the test.
        let state = (
            Some(self.conn.clone()),
            req.into_inner(),
            self.dropped.lock().unwrap().take(),
        );
        let out = futures_util::stream::unfold(state, |(conn, inbound, dropped)| async move {
            match conn {
                Some(conn) => Some((Ok(conn), (None, inbound, dropped))),
                None => std::future::pending().await,
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn ping(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

/// A connection the core closes while the node runs ends its dialled stream's task at
/// once (the call is reset), even when the remote never ends its side. Only a stop lets
/// such a task linger, reading to the remote's end so that the stop knows the remote took
/// everything. A task that lingered after every close would keep its call open until the
/// remote ended it (here: never) and pile up until the node stops (mutation testing of
/// `CloseStream`, 2026-12-06).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_dialled_stream_ends_its_call_though_the_remote_holds_it_open() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    // The framed ConnEstablish carries the gRPC prefix; the Envelope is its last part.
    let conn = Envelope::decode(framed_conn_establish(&endpoint).pop().unwrap()).unwrap();
    let (dropped_tx, dropped) = oneshot::channel();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GossipServer::new(Holder {
                conn,
                dropped: Mutex::new(Some(dropped_tx)),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let a = node(config(), None).await;
    let pki = PkiId::from(endpoint.as_str());
    a.send(
        &data(1, 10),
        &[RemotePeer::new(endpoint.clone(), pki.clone())],
    )
    .unwrap();
    until("connected", || a.is_connected(&pki)).await;

    a.close_conn(&pki);
    assert!(
        within("the server's call let go", dropped).await.is_err(),
        "the server's stream sent nothing"
    );
    within("a stops", a.stop()).await;
    server.abort();
}
