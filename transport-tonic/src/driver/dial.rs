//! Dialling and outbound streams: a connection attempt ([`dial_task`], [`connect`]), its
//! `Ping` ([`ping_task`]), and the task of a stream this node opened ([`outbound_task`]),
//! whose channel meters the response as an inbound request is metered
//! ([`MeteredChannel`]). Its own part: the client side of gRPC, started by the drain and
//! reporting back to the core.

use super::drain::drain;
use super::errors::{error_text, status_text};
use super::read::{StreamCtl, read_loop};
use super::stop::WindingGuard;
use super::write::{Out, OutStream};
use super::{Inner, MAX_FRAME, Settings, flow_window};
use crate::framed::{FramedOut, ReceiveCodec, Role};
use crate::metered::{FaultSlot, MeteredBody, Metering, Side};
use crate::tls::Dialer;
use bytes::Bytes;
use fabric_gossip_core::proto::GOSSIP_STREAM_PATH;
use fabric_gossip_core::proto::gossip::Empty;
use fabric_gossip_core::proto::gossip::gossip_client::GossipClient;
use fabric_gossip_core::{CertHash, DialId, StreamEnd, StreamId};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

pub(super) async fn dial_task(inner: Arc<Inner>, dial: DialId, endpoint: String) {
    let result = connect(&inner.settings, &endpoint).await;
    let mut st = inner.lock();
    let now = inner.now();
    let result = match result {
        Ok((channel, hash)) => {
            st.stats.dials_ok += 1;
            if let Some(failed) = st.unreachable.answered(&endpoint) {
                tracing::info!(%endpoint, failed, "dial succeeded after failed dials");
            }
            if let Some(d) = st.dials.get_mut(&dial) {
                d.channel = Some(channel);
                d.task = None;
            }
            Ok(hash)
        }
        Err(e) => {
            st.stats.dials_failed += 1;
            // A member that left is dialled again and again until it is purged (the
            // core's retries, membership's reconnect rounds): its first failure is news,
            // the rest noise (an operator's trial: a line every second or two). Under the
            // connection lines' budget: 3,000 made-up members' endpoints, more than the
            // tracker holds, wrote 31,550 such lines in 110 s (an attack, 2026-12-07).
            if st.unreachable.failed(&endpoint)
                && let Some(not_logged) = st.conn_log.admit(now)
            {
                tracing::info!(
                    %endpoint, error = %e, not_logged,
                    "dial failed (its next failures at debug, until a dial to it succeeds)"
                );
            } else {
                tracing::debug!(%endpoint, error = %e, "dial failed");
            }
            Err(e)
        }
    };
    let _ = st.comm.handle_dial_result(now, dial, result);
    drain(&inner, &mut st);
}

/// Endpoints whose dials fail, with how many failed since one last succeeded: what
/// decides whether a failed dial is logged at info (the first) or debug (the rest).
#[derive(Default)]
pub(super) struct Unreachable(super::Map<String, u64>);

impl Unreachable {
    /// Endpoints tracked at most: dialled endpoints come from members' alive messages,
    /// and past this many the failures of endpoints not tracked are all logged at info
    /// rather than the map growing.
    const MAX: usize = 1024;

    /// Records a failed dial to `endpoint`: whether it is the first since a dial to it last
    /// succeeded (or since it was tracked at all).
    fn failed(&mut self, endpoint: &str) -> bool {
        if let Some(n) = self.0.get_mut(endpoint) {
            *n += 1;
            return false;
        }
        if self.0.len() < Self::MAX {
            self.0.insert(endpoint.to_owned(), 1);
        }
        true
    }

    /// Records a dial to `endpoint` that succeeded: how many failed before it, if any.
    fn answered(&mut self, endpoint: &str) -> Option<u64> {
        self.0.remove(endpoint)
    }
}

/// Opens a client channel to `endpoint` (`host:port`), returning the hash of the server's
/// leaf certificate when TLS is on.
///
/// No time-out here: the core times the dial (`dial_timeout`) and says `CloseDial` when it
/// gives up, which aborts this task. A second timer here would race the core's, and a slow
/// dial would end as `DialError::Timeout` or as a driver failure depending on which won.
async fn connect(
    settings: &Settings,
    endpoint: &str,
) -> Result<(Channel, Option<CertHash>), String> {
    let ep = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| format!("bad endpoint {endpoint:?}: {}", error_text(&e)))?
        .initial_stream_window_size(flow_window(&settings.limits))
        .initial_connection_window_size(flow_window(&settings.limits))
        .max_frame_size(MAX_FRAME)
        .tcp_nodelay(true);
    let limits = &settings.limits;
    let ep = if limits.keepalive_interval.is_zero() {
        ep
    } else {
        ep.http2_keep_alive_interval(limits.keepalive_interval)
            .keep_alive_timeout(limits.keepalive_timeout)
            .keep_alive_while_idle(true)
    };
    let dialer = Dialer::new(settings.tls.clone(), settings.resolver.clone());
    let connecting = ep.connect_with_connector(dialer.clone());
    let channel = connecting.await.map_err(|e| error_text(&e))?;
    let hash = dialer.captured();
    if settings.tls.is_some() && hash.is_none() {
        return Err("server presented no TLS certificate".into());
    }
    Ok((channel, hash))
}

/// Calls `Ping` on a new channel. Untimed for the same reason as [`connect`]: the core
/// times the Ping (`conn_timeout`) and aborts this task with `CloseDial`.
pub(super) async fn ping_task(inner: Arc<Inner>, dial: DialId, channel: Channel) {
    let mut client = GossipClient::new(channel);
    let result = match client.ping(Request::new(Empty {})).await {
        Ok(_) => Ok(()),
        Err(status) => Err(status_text(&status)),
    };
    if let Err(e) = &result {
        tracing::info!(error = %e, "ping failed");
    }
    let mut st = inner.lock();
    let now = inner.now();
    if let Some(d) = st.dials.get_mut(&dial) {
        d.task = None;
    }
    let _ = st.comm.handle_ping_result(now, dial, result);
    drain(&inner, &mut st);
}

pub(super) async fn outbound_task(
    inner: Arc<Inner>,
    channel: Channel,
    stream: StreamId,
    rx: mpsc::Receiver<Out>,
    ctl: Arc<StreamCtl>,
    _alive: WindingGuard,
) {
    let max = inner.settings.max_message_size;
    let body = FramedOut::new(
        OutStream::new(inner.clone(), stream, rx, ctl.clone()),
        Role::Client,
        max,
        inner.bodies.clone(),
    );
    let fault = FaultSlot::default();
    let received = ResponseSlot::default();
    let metered = MeteredChannel {
        channel,
        metering: Metering {
            budget: inner.budget.clone(),
            max_message: max,
            max_first_message: inner.settings.max_handshake_message_size,
            stall: inner.settings.limits.message_stall_timeout,
        },
        fault: fault.clone(),
        body: Some(tonic::body::Body::new(body)),
        received: received.clone(),
    };
    let mut grpc = tonic::client::Grpc::new(metered)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let opened = match grpc.ready().await {
        Ok(()) => {
            // tonic builds the request (path, headers) and reads the response; the channel
            // swaps the empty body given here for the stream's own.
            grpc.streaming(
                Request::new(tokio_stream::empty::<Bytes>()),
                PathAndQuery::from_static(GOSSIP_STREAM_PATH),
                ReceiveCodec,
            )
            .await
        }
        Err(e) => Err(Status::unavailable(error_text(&e))),
    };
    // tonic read the response's headers (a trailers-only error status is `Err` here); its
    // body is read by the metered body the channel kept, not by tonic's decoder.
    let opened = opened.and_then(|_| {
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| Status::internal("the response body was not kept"))
    });
    match opened {
        Ok(body) => read_loop(inner, stream, body, ctl, Some(fault)).await,
        Err(status) => {
            tracing::info!(status = %status_text(&status), "opening the stream failed");
            let mut st = inner.lock();
            let now = inner.now();
            let _ =
                st.comm
                    .handle_stream_closed(now, stream, StreamEnd::Error(status_text(&status)));
            drain(&inner, &mut st);
        }
    }
}

/// Where a [`MeteredChannel`] leaves the body of the response it received.
type ResponseSlot = Arc<Mutex<Option<MeteredBody>>>;

/// A client channel whose response bodies are metered like inbound request bodies: a peer
/// this node dialled can half-send messages too. It carries one stream's call: its first
/// request goes out with `body`, the stream's [`FramedOut`], in place of tonic's. tonic
/// builds the request and checks the response's headers as for any call, but gets an empty
/// body: the real one, read as a [`MeteredBody`] (which takes the messages out without
/// copying them into a decoder's buffer), is left in `received` for the stream's reader.
struct MeteredChannel {
    channel: Channel,
    metering: Metering,
    fault: FaultSlot,
    body: Option<tonic::body::Body>,
    received: ResponseSlot,
}

type ResponseFuture = Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<tonic::body::Body>, tonic::transport::Error>,
            > + Send,
    >,
>;

impl tower_service::Service<http::Request<tonic::body::Body>> for MeteredChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let req = match self.body.take() {
            Some(body) => req.map(|_| body),
            None => req,
        };
        let call = self.channel.call(req);
        let metering = self.metering.clone();
        let fault = self.fault.clone();
        let received = self.received.clone();
        Box::pin(async move {
            let resp = call.await?;
            let side = Side::of_response(&resp);
            let (mut parts, body) = resp.into_parts();
            // tonic panics on binary status details that are not base64 (see
            // `metered::status_of`); nothing reads them.
            parts.headers.remove(Status::GRPC_STATUS_DETAILS);
            *received.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(MeteredBody::new(body, side, metering, fault));
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::empty(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Unreachable;

    /// An endpoint's first failure is news, the next are not until a dial to it succeeds,
    /// which says how many failed; a success with none before it says nothing.
    #[test]
    fn an_endpoint_s_first_failure_is_news_until_it_answers() {
        let mut u = Unreachable::default();
        assert_eq!(u.answered("a:1"), None);
        assert!(u.failed("a:1"));
        assert!(!u.failed("a:1"));
        assert!(!u.failed("a:1"));
        assert!(u.failed("b:1"), "each endpoint on its own");
        assert_eq!(u.answered("a:1"), Some(3));
        assert_eq!(u.answered("a:1"), None);
        assert!(u.failed("a:1"), "news again after it answered");
    }

    /// Past `MAX` endpoints tracked, failures of others are all news (logged at info) and
    /// the map does not grow.
    #[test]
    fn at_most_max_endpoints_are_tracked() {
        let mut u = Unreachable::default();
        for i in 0..Unreachable::MAX {
            assert!(u.failed(&format!("e{i}:1")));
        }
        assert_eq!(u.0.len(), Unreachable::MAX);
        assert!(u.failed("late:1"));
        assert!(u.failed("late:1"), "not tracked: every failure is news");
        assert_eq!(u.0.len(), Unreachable::MAX);
        assert!(!u.failed("e0:1"), "those tracked stay tracked");
    }
}
