//! Issue 10, finding 4 (driver side): a Fabric peer sends its ConnEstablish before it checks
//! ours and, refusing us, ends the RPC with a non-OK status and a message ("failed
//! classifying identity: ..."). The remote's status code and message must reach the core as
//! the stream's end, not be hidden by a write that found the RPC gone ("stream is gone").

use crate::common;

use common::*;
use fabric_gossip_core::proto::gossip::gossip_server::{Gossip, GossipServer};
use fabric_gossip_core::proto::gossip::{Empty, Envelope};
use fabric_gossip_core::{CloseReason, Event, RemotePeer, TestOnlyHmacSecurity};
use prost::Message;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::codec::Streaming;
use tonic::{Request, Response, Status};

const REFUSAL: &str = "failed classifying identity: test refusal";

/// A gossip server that answers Ping, and on GossipStream sends its own ConnEstablish, reads
/// the client's, then refuses it with `PermissionDenied` and [`REFUSAL`], as Fabric does.
struct Refuser {
    conn: Envelope,
}

type Out = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Gossip for Refuser {
    type GossipStreamStream = Out;

    async fn gossip_stream(
        &self,
        req: Request<Streaming<Envelope>>,
    ) -> Result<Response<Out>, Status> {
        let inbound = req.into_inner();
        let out = futures_util::stream::unfold(
            (0u8, inbound, self.conn.clone()),
            |(step, mut inbound, conn)| async move {
                match step {
                    0 => Some((Ok(conn.clone()), (1, inbound, conn))),
                    1 => {
                        let _ = inbound.message().await;
                        Some((Err(Status::permission_denied(REFUSAL)), (2, inbound, conn)))
                    }
                    _ => None,
                }
            },
        );
        Ok(Response::new(Box::pin(out)))
    }

    async fn ping(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_refusal_reaches_the_core_with_its_status_and_message() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    // The framed ConnEstablish carries the gRPC prefix; the Envelope is its last part.
    let conn = Envelope::decode(framed_conn_establish(&endpoint).pop().unwrap()).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GossipServer::new(Refuser { conn }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let (tap, mut events) = tokio::sync::mpsc::channel(1024);
    let a = fabric_gossip_tonic::Node::builder(config())
        .events(tap)
        .start_with(|x| TestOnlyHmacSecurity::new(x.to_string()))
        .await
        .unwrap();
    let peer = RemotePeer::new(endpoint.clone(), endpoint.as_str());
    let mut dead = a.presumed_dead();
    // Each round connects, is refused, and must report the remote's reason, and the peer
    // is presumed dead (as Fabric's dialler finds at its next send).
    for round in 0..20 {
        a.send(&data(round, 10), std::slice::from_ref(&peer))
            .unwrap();
        let reason = within("disconnected", async {
            loop {
                match events.recv().await.expect("event tap open") {
                    Event::Disconnected { reason, .. } => return reason,
                    Event::HandshakeFailed { error, .. } => {
                        panic!("round {round}: handshake failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await;
        match &reason {
            CloseReason::StreamError(why) => {
                assert!(why.contains(REFUSAL), "round {round}: {why}");
                assert!(why.contains("PermissionDenied"), "round {round}: {why}");
            }
            other => panic!("round {round}: closed as {other:?}, not with the remote's status"),
        }
        assert_eq!(
            within("presumed dead", dead.next()).await,
            Some(fabric_gossip_core::PkiId::from(endpoint.as_str())),
            "round {round}"
        );
    }
    assert_eq!(a.stats().handshake_failures_for("refused_by_remote"), 20);
    within("stop", a.stop()).await;
    server.abort();
}
