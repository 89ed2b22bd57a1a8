//! The generated `gossip.Gossip` service (feature `grpc`), exercised in memory without any
//! transport: the server routes the paths this crate exports, and the generated client talks to
//! the generated server.
#![cfg(feature = "grpc")]

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use fabric_gossip_proto::gossip::gossip_client::GossipClient;
use fabric_gossip_proto::gossip::gossip_server::{Gossip, GossipServer};
use fabric_gossip_proto::gossip::{Empty, Envelope};
use fabric_gossip_proto::{GOSSIP_STREAM_PATH, MAX_MESSAGE_SIZE, PING_PATH, SERVICE_NAME};
use prost::Message;
use tonic::codegen::tokio_stream::{self, StreamExt};
use tonic::codegen::{BoxStream, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

/// Answers every Envelope with the same Envelope, signature stripped, so a test can tell the
/// reply from the request.
struct Echo;

#[tonic::async_trait]
impl Gossip for Echo {
    type GossipStreamStream = BoxStream<Envelope>;

    async fn gossip_stream(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::GossipStreamStream>, Status> {
        let replies = request.into_inner().map(|env| {
            env.map(|mut env| {
                env.signature = Bytes::new();
                env
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn ping(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

/// Everything here is in memory and ready at once, so polling with a no-op waker completes;
/// a future that stays pending means something waits for IO it will never get.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("future did not complete in memory");
}

fn server() -> GossipServer<Echo> {
    GossipServer::new(Echo)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// A gRPC request frame: uncompressed flag, big-endian length, message.
fn frame(msg: &impl Message) -> String {
    let body = msg.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    framed.extend_from_slice(&body);
    String::from_utf8(framed).expect("test messages are ASCII")
}

/// Sends one raw HTTP request to the server and returns the `grpc-status` it ends with.
fn grpc_status(path: &str, body: String) -> String {
    let request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .expect("valid request");
    let response = block_on(server().call(request)).expect("infallible");
    assert_eq!(response.status(), http::StatusCode::OK);
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().expect("ascii").to_owned();
    }
    let mut body = pin!(response.into_body());
    loop {
        let frame = block_on(std::future::poll_fn(|cx| {
            tonic::codegen::Body::poll_frame(body.as_mut(), cx)
        }))
        .expect("body ends with trailers")
        .expect("body frame");
        if let Some(trailers) = frame.trailers_ref() {
            let status = trailers.get("grpc-status").expect("grpc-status trailer");
            return status.to_str().expect("ascii").to_owned();
        }
    }
}

#[test]
fn service_name_matches_generated_server() {
    assert_eq!(<GossipServer<Echo> as NamedService>::NAME, SERVICE_NAME);
    assert_eq!(PING_PATH, format!("/{SERVICE_NAME}/Ping"));
    assert_eq!(GOSSIP_STREAM_PATH, format!("/{SERVICE_NAME}/GossipStream"));
}

#[test]
fn server_routes_exported_paths() {
    // 0 = OK, 12 = UNIMPLEMENTED.
    assert_eq!(grpc_status(PING_PATH, frame(&Empty {})), "0");
    let env = Envelope {
        payload: Bytes::from_static(b"payload"),
        signature: Bytes::from_static(b"sig"),
        secret_envelope: None,
    };
    assert_eq!(grpc_status(GOSSIP_STREAM_PATH, frame(&env)), "0");
    assert_eq!(grpc_status("/gossip.Gossip/Nope", String::new()), "12");
}

#[test]
fn generated_client_talks_to_generated_server() {
    let mut client = GossipClient::new(server());

    block_on(client.ping(Empty {})).expect("ping answered");

    let sent: Vec<Envelope> = (0u8..3)
        .map(|i| Envelope {
            payload: Bytes::from(vec![i; 4]),
            signature: Bytes::from_static(b"signed"),
            secret_envelope: None,
        })
        .collect();
    let response =
        block_on(client.gossip_stream(tokio_stream::iter(sent.clone()))).expect("stream opened");
    let received: Vec<Envelope> = block_on(response.into_inner().collect::<Vec<_>>())
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every reply decodes");
    assert_eq!(received.len(), sent.len());
    for (got, sent) in received.iter().zip(&sent) {
        assert_eq!(got.payload, sent.payload);
        assert!(
            got.signature.is_empty(),
            "the reply is the server's, not an echo"
        );
    }
}
