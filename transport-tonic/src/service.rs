//! The `gossip.Gossip` gRPC service, hand-routed so `GossipStream` can use the raw codec.

use crate::driver::{Inner, accept_inbound};
use crate::inbound::{InboundConn, Slot};
use crate::metered::{FaultSlot, MeteredBody, Metering, Side};
use bytes::Bytes;
use fabric_gossip_core::cert_hash;
use fabric_gossip_core::proto::gossip::Empty;
use fabric_gossip_core::proto::{GOSSIP_STREAM_PATH, PING_PATH, SERVICE_NAME};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::{Body as HttpBody, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TlsConnectInfo;
use tonic::{Request, Response, Status};

/// The header naming the compression of a call's messages.
const GRPC_ENCODING: &str = "grpc-encoding";

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Serves `GossipStream` and `Ping` for one node.
///
/// The generated `GossipServer` would decode every Envelope with prost; this service routes
/// the two paths itself so the stream carries raw Envelope bytes (see [`crate::RawCodec`]) while
/// `Ping` keeps the generated message types.
#[derive(Clone)]
pub(crate) struct GossipService {
    inner: Arc<Inner>,
}

impl GossipService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        GossipService { inner }
    }
}

impl NamedService for GossipService {
    const NAME: &'static str = SERVICE_NAME;
}

/// What the server knows about the connection a request came on.
#[derive(Default)]
struct ConnFacts {
    slot: Option<Arc<Slot>>,
    /// SHA-256 of the leaf certificate the client presented (first of its chain).
    cert_hash: Option<fabric_gossip_core::CertHash>,
}

impl ConnFacts {
    fn of(ext: &http::Extensions) -> Self {
        if let Some(tls) = ext.get::<TlsConnectInfo<InboundConn>>() {
            ConnFacts {
                slot: Some(tls.get_ref().slot.clone()),
                cert_hash: tls
                    .peer_certs()
                    .and_then(|chain| chain.first().map(|c| cert_hash(c.as_ref()))),
            }
        } else if let Some(plain) = ext.get::<InboundConn>() {
            ConnFacts {
                slot: Some(plain.slot.clone()),
                cert_hash: None,
            }
        } else {
            ConnFacts::default()
        }
    }
}

/// Answers a `GossipStream` call: its request body read as raw Envelopes (by a
/// [`MeteredBody`], not tonic's decoder), the response a
/// [`crate::framed::FramedOut`] (tonic's server would frame it with its own encoder, see
/// that module).
fn serve_stream<B>(
    inner: &Arc<Inner>,
    facts: ConnFacts,
    req: http::Request<B>,
    max: usize,
) -> http::Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    // No compression is offered, as with tonic's server built without it.
    if let Some(encoding) = req.headers().get(GRPC_ENCODING)
        && encoding != "identity"
    {
        return Status::unimplemented(format!(
            "messages compressed with {encoding:?}: this server accepts none"
        ))
        .into_http();
    }
    let remote = facts
        .slot
        .as_ref()
        .and_then(|s| s.remote())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let fault = FaultSlot::default();
    let metering = Metering {
        budget: inner.budget.clone(),
        max_message: max,
        max_first_message: inner.settings.max_handshake_message_size,
        stall: inner.settings.limits.message_stall_timeout,
    };
    let body = MeteredBody::new(req.into_body(), Side::Request, metering, fault.clone());
    match accept_inbound(inner, &remote, facts.cert_hash, body, facts.slot, fault) {
        Ok(out) => {
            let mut response = http::Response::new(Body::new(out));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err(status) => status.into_http(),
    }
}

struct PingSvc;

impl UnaryService<Empty> for PingSvc {
    type Response = Empty;
    type Future = std::future::Ready<Result<Response<Empty>, Status>>;

    fn call(&mut self, _request: Request<Empty>) -> Self::Future {
        std::future::ready(Ok(Response::new(Empty {})))
    }
}

impl<B> Service<http::Request<B>> for GossipService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let max = self.inner.settings.max_message_size;
        let facts = ConnFacts::of(req.extensions());
        if let Some(slot) = &facts.slot {
            slot.saw_request();
        }
        match req.uri().path() {
            GOSSIP_STREAM_PATH => Box::pin(std::future::ready(Ok(serve_stream(
                &self.inner,
                facts,
                req,
                max,
            )))),
            PING_PATH if self.inner.settings.hang_ping => Box::pin(async move {
                // Never answers; the caller's time-out cancels the call, dropping this.
                std::future::pending::<()>().await;
                Ok(Status::unavailable("unreachable").into_http())
            }),
            PING_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Empty, Empty>::default())
                    .apply_max_message_size_config(Some(max), Some(max));
                Ok(grpc.unary(PingSvc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}
