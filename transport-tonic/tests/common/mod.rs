// Shared helpers for the transport's integration tests: nodes on loopback ports, a test
// certificate authority (rcgen), messages, and deadlines.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::{GossipMessage, gossip_message};
use fabric_gossip_core::{Config, SignedMessage, TestOnlyHmacSecurity};
use fabric_gossip_tonic::{Incoming, Node, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::future::Future;
use std::time::Duration;

/// Upper bound on anything a test waits for; generous for a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How early, by the precise clock, a core time-out may end: the driver gives the core the
/// coarse monotonic clock, which trails the precise one by up to a kernel tick (1–4 ms),
/// so an operation the core started a tick late by the precise clock ends that much early
/// by it (once seen: a 300 ms dial time-out after 297 ms). 10 ms: a tick on kernels built
/// for 100 Hz, 4 ms at the common 250 Hz.
#[allow(dead_code)] // not every test binary that includes this module times the core
pub const CLOCK_TICK: Duration = Duration::from_millis(10);

/// A multi-thread runtime with one worker and tokio's drivers: for tests that count a
/// worker's wake-ups or CPU time, or that keep one node on a runtime of its own.
pub fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Awaits `f`, failing the test if it takes longer than `DEADLINE`.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A probe of `addr` (expecting anyone) that must fail, within [`DEADLINE`]: its error
/// and how long it took.
pub async fn failed_probe(
    node: &Node,
    addr: std::net::SocketAddr,
) -> (
    fabric_gossip_tonic::OpError<fabric_gossip_core::ProbeError>,
    Duration,
) {
    let started = std::time::Instant::now();
    let peer = fabric_gossip_core::RemotePeer::new(addr.to_string(), "x");
    let err = within("probe", node.probe(&peer)).await.unwrap_err();
    (err, started.elapsed())
}

/// Polls `cond` every millisecond until it holds, failing the test at `DEADLINE`.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    within(what, async {
        while !cond() {
            tick.tick().await;
        }
    })
    .await;
}

/// Short time-outs so failure paths finish quickly.
/// A peer that accepts TCP and never says a word (no HTTP/2, so a Ping hangs until the
/// connection time-out): its address, and the task holding its sockets (abort it to let
/// them go).
pub async fn silent_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    (addr, holder)
}

pub fn config() -> Config {
    Config::default().with_timeouts(
        Duration::from_secs(2),
        Duration::from_secs(2),
        Duration::from_secs(4),
    )
}

/// A test CA issuing certificates valid for 127.0.0.1 and localhost.
pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Pki {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM, certificate DER) of a new leaf.
    pub fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        self.leaf_for(cn, &["localhost", "127.0.0.1"])
    }

    /// [`Pki::leaf`] valid for `names` only.
    pub fn leaf_for(&self, cn: &str, names: &[&str]) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// [`Pki::leaf`] padded with an extension of `padding` bytes: a certificate as large
    /// as a client likes when nobody checks its issuer.
    #[allow(dead_code)] // only the TLS tests use it
    pub fn padded_leaf(&self, cn: &str, padding: usize) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 99999, 1],
                vec![0x04; padding],
            ));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn tls(&self, cn: &str) -> TlsConfig {
        let (cert, key, _) = self.leaf(cn);
        TlsConfig::new(cert, key, self.ca_pem())
    }

    /// [`Pki::tls`] with a certificate valid for `name` only (not the address it is
    /// dialled at), as cryptogen's are.
    pub fn tls_for(&self, cn: &str, name: &str) -> TlsConfig {
        let (cert, key, _) = self.leaf_for(cn, &[name]);
        TlsConfig::new(cert, key, self.ca_pem())
    }
}

/// A node on a free loopback port whose identity (Fabric's test provider) is its endpoint.
pub async fn node(config: Config, tls: Option<TlsConfig>) -> Node {
    let mut b = Node::builder(config).stop_timeout(Duration::from_secs(3));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts")
}

/// [`node`] in plaintext with the driver's `limits`.
pub async fn node_with(config: Config, limits: fabric_gossip_tonic::DriverLimits) -> Node {
    Node::builder(config)
        .limits(limits)
        .stop_timeout(Duration::from_secs(3))
        .start_with(|addr| TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts")
}

/// Two nodes with [`config`], in plaintext or with mutual TLS (certificates of one new
/// CA): the start of most two-node tests.
pub async fn pair(tls: bool) -> (Node, Node) {
    if tls {
        let pki = Pki::new("test-ca");
        (
            node(config(), Some(pki.tls("a"))).await,
            node(config(), Some(pki.tls("b"))).await,
        )
    } else {
        (node(config(), None).await, node(config(), None).await)
    }
}

/// Subscribes `b` to every message and has `a` send it one, received: the connection is
/// up. Returns `b`'s subscription.
pub async fn connect(a: &Node, b: &Node) -> Incoming {
    let mut b_in = b.accept(|_| true).unwrap();
    a.send(&data(1, 10), &[b.as_peer()]).unwrap();
    within("first delivery", b_in.recv()).await.unwrap();
    b_in
}

/// Stops every node, each within [`DEADLINE`]: the end of most tests.
pub async fn stop_all(nodes: &[&Node]) {
    for n in nodes {
        within(&format!("{} stops", n.endpoint()), n.stop()).await;
    }
}

/// A DataMessage of `size` bytes numbered `seq`, its bytes derived from `seq` so that a
/// message mixed up with another shows.
pub fn data_msg(seq: u64, size: usize) -> GossipMessage {
    GossipMessage::data(seq, vec![(seq % 251) as u8; size])
}

pub fn data(seq: u64, size: usize) -> SignedMessage {
    SignedMessage::noop(data_msg(seq, size))
}

/// The sequence number of a DataMessage, if it is one.
pub fn seq_of(m: &GossipMessage) -> Option<u64> {
    match &m.content {
        Some(gossip_message::Content::DataMsg(d)) => d.payload.as_ref().map(|p| p.seq_num),
        _ => None,
    }
}

/// A request body that sends `chunks` in order, then ends, or, with `stall`, never ends and
/// never sends again: a peer that stopped in the middle of a message.
pub struct ChunkBody {
    chunks: std::collections::VecDeque<Bytes>,
    stall: bool,
}

impl ChunkBody {
    pub fn new(chunks: Vec<Bytes>, stall: bool) -> Self {
        ChunkBody {
            chunks: chunks.into(),
            stall,
        }
    }
}

impl http_body::Body for ChunkBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        match self.chunks.pop_front() {
            Some(c) => std::task::Poll::Ready(Some(Ok(http_body::Frame::data(c)))),
            // Stalling: nothing will ever wake this; the stream's reset drops it.
            None if self.stall => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }
}

/// A gRPC length prefix: no compression, `len` bytes follow.
pub fn grpc_prefix(len: usize) -> Bytes {
    let mut p = vec![0u8];
    p.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
    Bytes::from(p)
}

/// The framed, signed ConnEstablish of a raw client calling itself `me` (Fabric's test
/// provider: the PKI-ID and identity are `me`), for plaintext servers.
pub fn framed_conn_establish(me: &str) -> Vec<Bytes> {
    use fabric_gossip_core::proto::gossip::ConnEstablish;
    let conn = GossipMessage {
        tag: gossip_message::Tag::Empty as i32,
        content: Some(gossip_message::Content::Conn(ConnEstablish {
            pki_id: me.as_bytes().to_vec().into(),
            identity: me.as_bytes().to_vec().into(),
            tls_cert_hash: Bytes::new(),
            probe: false,
        })),
        ..Default::default()
    };
    let signed = SignedMessage::sign(conn, &TestOnlyHmacSecurity::new(me)).unwrap();
    let env = signed.envelope_bytes().clone();
    vec![grpc_prefix(env.len()), env]
}

/// Calls `GossipStream` on a plaintext server with `body` as the raw request bytes and
/// returns the gRPC status the server ended the call with: `(code, message)`, or `Err` if
/// the call failed below gRPC (connection or stream reset before any status).
pub async fn raw_stream(addr: &str, body: ChunkBody) -> Result<(tonic::Code, String), String> {
    raw_stream_with(addr, body, &[]).await
}

/// [`raw_stream`] with `headers` added to the call's.
pub async fn raw_stream_with(
    addr: &str,
    body: ChunkBody,
    headers: &[(&'static str, &'static str)],
) -> Result<(tonic::Code, String), String> {
    use http_body::Body as _;
    use tower_service::Service;
    let mut ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}{}",
            fabric_gossip_core::proto::GOSSIP_STREAM_PATH
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(tonic::body::Body::new(body)).unwrap();
    std::future::poll_fn(|cx| ch.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    let resp = ch.call(req).await.map_err(|e| e.to_string())?;
    if let Some(s) = tonic::Status::from_header_map(resp.headers()) {
        return Ok((s.code(), s.message().to_string()));
    }
    let mut body = std::pin::pin!(resp.into_body());
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(f)) => {
                if let Some(t) = f.trailers_ref() {
                    return match tonic::Status::from_header_map(t) {
                        Some(s) => Ok((s.code(), s.message().to_string())),
                        None => Ok((tonic::Code::Ok, String::new())),
                    };
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("response ended without a status".into()),
        }
    }
}
