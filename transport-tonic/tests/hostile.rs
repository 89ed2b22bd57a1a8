//! Hostile remotes against the real gRPC driver (issue 10, findings 3 and 5): oversized
//! messages refused at their length prefix, bad gRPC framing, and half-sent messages held
//! under a node-wide bound and reset at the stall deadline. Bounded loopback tests.

use crate::common;

use bytes::Bytes;
use common::*;
use fabric_gossip_tonic::{DriverLimits, Node};
use std::time::{Duration, Instant};

/// The headers of a `GossipStream` call on `b`, for a raw HTTP/2 client.
fn gossip_stream_request(b: &Node) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}{}",
            b.endpoint(),
            fabric_gossip_core::proto::GOSSIP_STREAM_PATH
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// An Envelope over the size limit is the core's `Malformed` with the `oversized` counter,
/// refused at its length prefix (before its bytes are held), and the sender's call ends with
/// RESOURCE_EXHAUSTED, as grpc-go (a Fabric peer) ends it, in the handshake and on an
/// established stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_envelope_is_malformed_and_the_sender_sees_an_error_status() {
    let mut cfg = config();
    cfg.max_message_size = 1 << 20;
    let b = node_with(cfg, DriverLimits::default()).await;
    let two_mib = 2 << 20;
    // As the first message: only the prefix and 64 KiB of it are ever sent.
    let body = ChunkBody::new(
        vec![grpc_prefix(two_mib), Bytes::from(vec![0; 64 << 10])],
        true,
    );
    let (code, msg) = within("first message refused", raw_stream(&b.endpoint(), body))
        .await
        .expect("a gRPC status");
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("exceeds the limit"), "{msg}");
    assert_eq!(b.stats().oversized, 1);
    assert_eq!(b.stats().handshake_failures_for("malformed"), 1);

    // After a handshake: the connection closes Malformed.
    let mut chunks = framed_conn_establish("raw-client:1");
    chunks.push(grpc_prefix(two_mib));
    let (code, msg) = within(
        "established message refused",
        raw_stream(&b.endpoint(), ChunkBody::new(chunks, true)),
    )
    .await
    .expect("a gRPC status");
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("exceeds the limit"), "{msg}");
    assert_eq!(b.stats().oversized, 2);
    assert_eq!(b.stats().handshakes_ok, 1);
    assert_eq!(b.stats().connections_closed, 1);
    assert_eq!(b.driver_stats().incomplete_bytes, 0);
    within("stop", b.stop()).await;
}

/// Bytes that are not gRPC messages have their own counter, apart from malformed Envelopes,
/// and end the call with INTERNAL, as grpc-go (a Fabric peer) ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grpc_framing_has_its_own_counter() {
    let b = node_with(config(), DriverLimits::default()).await;
    // A compression flag that does not exist.
    let body = ChunkBody::new(vec![Bytes::from_static(&[7, 0, 0, 0, 3, 1, 2, 3])], true);
    let (code, msg) = within("bad flag", raw_stream(&b.endpoint(), body))
        .await
        .expect("a gRPC status");
    assert_eq!(code, tonic::Code::Internal, "{msg}");
    assert!(msg.contains("bad gRPC framing"), "{msg}");
    // A stream that ends inside a message.
    let body = ChunkBody::new(vec![grpc_prefix(100), Bytes::from(vec![0; 10])], false);
    let (code, msg) = within("truncated", raw_stream(&b.endpoint(), body))
        .await
        .expect("a gRPC status");
    assert_eq!(code, tonic::Code::Internal, "{msg}");
    assert!(msg.contains("bad gRPC framing"), "{msg}");
    assert_eq!(b.driver_stats().bad_framing, 2);
    // A compressed message after a handshake (no compression is negotiated): the call
    // ends with INTERNAL, as grpc-go ends it, not OK (a loopback attack saw OK), and is
    // counted.
    let mut chunks = framed_conn_establish("raw-client:compressed");
    chunks.push(Bytes::from_static(&[1, 0, 0, 0, 3, 1, 2, 3]));
    let (code, msg) = within(
        "compressed",
        raw_stream(&b.endpoint(), ChunkBody::new(chunks, true)),
    )
    .await
    .expect("a gRPC status");
    assert_eq!(code, tonic::Code::Internal, "{msg}");
    assert!(msg.contains("compressed-flag"), "{msg}");
    assert_eq!(b.driver_stats().bad_framing, 3);
    assert_eq!(b.stats().malformed, 0, "not counted as malformed Envelopes");
    within("stop", b.stop()).await;
}

/// Finding 3: 8 peers each send 95 MiB of a 99 MiB message after their handshake, then
/// stall. The node holds at most its incomplete-message budget, resets every stream at the
/// stall deadline, releases everything, and still serves a legitimate peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_messages_are_bounded_and_reset_at_the_stall_deadline() {
    const BUDGET: usize = 32 << 20;
    /// The reserve small messages may use beyond the budget (`metered::RESERVE`).
    const RESERVE: usize = 8 << 20;
    const STALL: Duration = Duration::from_secs(3);
    const ATTACKERS: usize = 8;
    let mut limits = DriverLimits::default();
    limits.max_incomplete_bytes = BUDGET;
    limits.message_stall_timeout = STALL;
    let b = node_with(config(), limits).await;
    let mib = Bytes::from(vec![0u8; 1 << 20]);
    let started = Instant::now();
    let mut peers = Vec::new();
    for i in 0..ATTACKERS {
        let mut chunks = framed_conn_establish(&format!("raw-client:{i}"));
        chunks.push(grpc_prefix(99 << 20));
        chunks.extend(std::iter::repeat_n(mib.clone(), 95));
        let addr = b.endpoint();
        peers.push(tokio::spawn(async move {
            raw_stream(&addr, ChunkBody::new(chunks, true)).await
        }));
    }
    // Once the half-sent messages fill the budget, a legitimate peer's ordinary messages
    // still flow, well before the stall deadline frees anything.
    until("the budget is spent", || {
        b.driver_stats().incomplete_bytes as usize >= BUDGET - (1 << 20)
    })
    .await;
    let spent_at = Instant::now();
    let mut inbox = b.accept(|_| true).expect("subscribe");
    let a = node(config(), None).await;
    for seq in 0..100 {
        // 40 KiB: many of them straddle an HTTP/2 frame boundary.
        within("send", a.send_wait(&data(seq, 40 << 10), &b.as_peer()))
            .await
            .expect("send");
    }
    for seq in 0..100 {
        let got = within("receive", inbox.recv()).await.expect("delivered");
        assert_eq!(seq_of(got.message()), Some(seq));
    }
    assert!(
        spent_at.elapsed() < STALL,
        "ordinary messages waited for the stall deadline ({:?})",
        spent_at.elapsed()
    );
    assert_eq!(b.driver_stats().stalled_messages, 0);

    let mut peak_seen = 0;
    // The stalled messages take turns: each reset frees budget that lets the others take
    // a little more, which is progress and restarts their clocks, so the last of them may
    // be reset only after one stall timeout per attacker (README, "Hostile input").
    let all_reset = STALL * (ATTACKERS as u32 + 2);
    let outcomes = tokio::time::timeout(all_reset, async {
        let mut out = Vec::new();
        for p in peers {
            out.push(p.await.unwrap());
            peak_seen = peak_seen.max(b.driver_stats().incomplete_bytes);
        }
        out
    })
    .await
    .unwrap_or_else(|_| panic!("not every stalled stream was reset within {all_reset:?}"));
    let took = started.elapsed();
    for o in &outcomes {
        let (code, msg) = o.as_ref().expect("a gRPC status");
        assert_eq!(*code, tonic::Code::DeadlineExceeded, "{msg}");
    }
    let ds = b.driver_stats();
    assert!(
        ds.incomplete_bytes_peak as usize <= BUDGET + RESERVE,
        "held {} bytes, budget {BUDGET} + reserve {RESERVE}",
        ds.incomplete_bytes_peak
    );
    assert!(ds.incomplete_bytes_peak > 0);
    assert_eq!(ds.stalled_messages, ATTACKERS as u64, "{ds:?}");
    assert!(
        ds.incomplete_budget_waits > 0,
        "the budget was reached: {ds:?}"
    );
    assert!(
        took >= STALL,
        "reset only after the stall deadline ({took:?})"
    );
    assert_eq!(b.stats().handshakes_ok, 9);
    until("everything released", || {
        b.driver_stats().incomplete_bytes == 0
    })
    .await;
    // A legitimate peer is still served.
    within("handshake after the attack", a.handshake(&b.as_peer()))
        .await
        .expect("handshake");
    stop_all(&[&a, &b]).await;
}

/// A message that keeps arriving, however slowly, is not cut by the stall deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_message_is_not_reset() {
    let mut limits = DriverLimits::default();
    limits.message_stall_timeout = Duration::from_millis(300);
    let b = node_with(config(), limits).await;
    let mut inbox = b.accept(|_| true).expect("subscribe");
    let a = node(config(), None).await;
    // 3 MiB through one stream: it spans many HTTP/2 frames and windows.
    let msg = data(1, 3 << 20);
    within("send", a.send_wait(&msg, &b.as_peer()))
        .await
        .expect("send");
    let got = within("receive", inbox.recv()).await.expect("delivered");
    assert_eq!(seq_of(got.message()), Some(1));
    assert_eq!(b.driver_stats().stalled_messages, 0);
    assert!(b.driver_stats().incomplete_bytes_peak > 0);
    stop_all(&[&a, &b]).await;
}

/// The metered body takes messages out of HTTP/2 DATA frames cut anywhere: a prefix split
/// across frames, an Envelope spread over several, many Envelopes in one. Every Envelope
/// arrives whole, in order, and nothing stays charged to the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_cut_across_data_frames_arrive_whole_and_in_order() {
    let b = node_with(config(), DriverLimits::default()).await;
    let mut incoming = b.accept(|_| true).unwrap();
    let n = 60u64;
    let mut wire = Vec::new();
    for seq in 0..n {
        let env = data(seq, 50 + 97 * seq as usize).envelope_bytes().clone();
        wire.extend_from_slice(&grpc_prefix(env.len()));
        wire.extend_from_slice(&env);
    }
    // Frame sizes cycle through cuts inside prefixes (1–4 bytes), inside one Envelope, and
    // across many (up to 20 KiB).
    let sizes = [1, 2, 3, 4, 7, 300, 2_000, 5, 20_000, 3, 900];
    let mut chunks = framed_conn_establish("raw-client:1");
    let mut pos = 0;
    for size in sizes.iter().cycle() {
        if pos == wire.len() {
            break;
        }
        let end = (pos + size).min(wire.len());
        chunks.push(Bytes::copy_from_slice(&wire[pos..end]));
        pos = end;
    }
    let endpoint = b.endpoint();
    let client =
        tokio::spawn(async move { raw_stream(&endpoint, ChunkBody::new(chunks, true)).await });
    for seq in 0..n {
        let got = within("delivery", incoming.recv())
            .await
            .expect("a message");
        assert_eq!(seq_of(got.message()), Some(seq));
        assert_eq!(got.message(), &data_msg(seq, 50 + 97 * seq as usize));
    }
    assert_eq!(b.stats().malformed, 0);
    assert_eq!(b.driver_stats().bad_framing, 0);
    assert_eq!(b.driver_stats().incomplete_bytes, 0);
    client.abort();
    within("stop", b.stop()).await;
}

/// A connection the node is not reading holds at most `flow_control_window` unread: a remote
/// half-sending a large message after its handshake gets the node to read up to the
/// budget, and past that HTTP/2 grants it one window and no more. (At the 4 MiB windows
/// the driver once had, 100 such remotes made a node hold 527 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_connection_holds_at_most_the_flow_control_window() {
    const BUDGET: usize = 1 << 20;
    const WINDOW: usize = 128 << 10;
    let mut limits = DriverLimits::default();
    limits.max_incomplete_bytes = BUDGET;
    limits.flow_control_window = WINDOW as u32;
    let b = node_with(config(), limits).await;

    let tcp = within("connect", tokio::net::TcpStream::connect(b.local_addr()))
        .await
        .expect("connect");
    let (client, conn) = within("HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let mut client = within("ready", client.ready()).await.expect("ready");
    let req = gossip_stream_request(&b);
    let (_response, mut send) = client.send_request(req, false).expect("request");
    for chunk in framed_conn_establish("raw-client:unread") {
        send.send_data(chunk, false).expect("handshake bytes");
    }
    // A 99 MiB message, of which the remote sends what HTTP/2 lets it.
    send.send_data(grpc_prefix(99 << 20), false)
        .expect("prefix");
    let mut granted = 0usize;
    let cap = 8 * (BUDGET + WINDOW);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        send.reserve_capacity(64 << 10);
        // Once the node stops reading, no capacity comes: a second without any ends it,
        // once the node has reached its budget (before that, a loaded machine may let the
        // node read nothing for a second), or at the deadline.
        let next = tokio::time::timeout(
            Duration::from_secs(1),
            std::future::poll_fn(|cx| send.poll_capacity(cx)),
        )
        .await;
        let budget_reached = b.driver_stats().incomplete_budget_waits > 0;
        match next {
            Err(_) if !budget_reached && tokio::time::Instant::now() < deadline => continue,
            Ok(Some(Ok(0))) => continue,
            Ok(Some(Ok(n))) => {
                send.send_data(Bytes::from(vec![0u8; n]), false)
                    .expect("data");
                granted += n;
                if granted > cap {
                    break;
                }
            }
            Ok(Some(Err(e))) => panic!("stream failed after {granted} bytes: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let ds = b.driver_stats();
    assert!(
        ds.incomplete_bytes as usize <= BUDGET && ds.incomplete_bytes as usize >= BUDGET / 2,
        "the node read {} bytes of the message, budget {BUDGET}",
        ds.incomplete_bytes
    );
    assert!(ds.incomplete_budget_waits > 0, "{ds:?}");
    // What the node read, plus one window, plus a frame of slack.
    assert!(
        granted <= BUDGET + WINDOW + (64 << 10),
        "the remote could send {granted} bytes: budget {BUDGET} + window {WINDOW}"
    );
    assert!(granted >= ds.incomplete_bytes as usize, "granted {granted}");
    stop_all(&[&b]).await;
}

/// A remote may open only `DriverLimits::max_concurrent_streams` calls at once on one
/// connection. Without a cap, one connection opened 372,700 `GossipStream`s in 8 s (each a
/// pending handshake of the core: 1.3 GB, and legitimate handshakes refused as the oldest of
/// too many pending), or grew the node by 200 MB/s with `Ping`s it never read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_may_open_only_a_few_streams_at_once() {
    for cap in [DriverLimits::default().max_concurrent_streams, 2] {
        let mut limits = DriverLimits::default();
        limits.max_concurrent_streams = cap;
        let b = node_with(config(), limits).await;
        let tcp = within("connect", tokio::net::TcpStream::connect(b.local_addr()))
            .await
            .expect("connect");
        let (_client, mut conn) = within("HTTP/2 handshake", h2::client::handshake(tcp))
            .await
            .expect("HTTP/2 handshake");
        // Drive the connection until the node's SETTINGS arrive (until then HTTP/2 allows
        // any number).
        let advertised = within("the node's SETTINGS", async {
            std::future::poll_fn(|cx| {
                if let std::task::Poll::Ready(r) = std::pin::Pin::new(&mut conn).poll(cx) {
                    panic!("the connection ended: {r:?}");
                }
                match conn.max_concurrent_send_streams() {
                    usize::MAX => std::task::Poll::Pending,
                    n => std::task::Poll::Ready(n),
                }
            })
            .await
        })
        .await;
        assert_eq!(advertised, cap as usize);
        drop(conn);
        stop_all(&[&b]).await;
    }
    assert_eq!(DriverLimits::default().max_concurrent_streams, 16);
}

/// A peer that reads nothing (it grants no HTTP/2 window) and then hangs up while the node
/// has stopped reading it (its subscriber is behind): the node must still learn that the
/// connection is gone, close it, and fail the acks waiting for room on it. Found against
/// `fabric-gossip node --auto-ack`, which then served nothing, not even `stop`: no write
/// came to find the stream gone, and the paused reader never looked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_up_while_unread_and_unreading_is_closed() {
    let mut cfg = config();
    cfg.send_buffer_size = 4;
    cfg.write_window = 2;
    cfg.subscription_buffer = 4;
    let b = node_with(cfg, DriverLimits::default()).await;
    let mut inbox = b.accept(|_| true).expect("subscribe");

    let (client, mut send, conn_task) = shut_window_stream(&b, "raw-client:hangs-up").await;
    // More messages than the node's subscription buffer holds: its reader pauses.
    for seq in 1..=128 {
        let env = data(seq, 100).envelope_bytes().clone();
        send.send_data(grpc_prefix(env.len()), false)
            .expect("prefix");
        send.send_data(env, false).expect("message");
    }
    // The application acks what it took: nothing of them can be written.
    let mut acks = Vec::new();
    for _ in 0..8 {
        let m = within("a message", inbox.recv()).await.expect("delivered");
        acks.push(tokio::spawn(async move { m.ack(None).await }));
    }
    // Whether the acks wait for room or were queued depends on timing (blocking sends may
    // wait in the core's queue); either way they must end once the connection is gone.
    until("the reader paused", || b.stats().read_pauses > 0).await;
    assert_eq!(b.connections().len(), 1);

    // The peer hangs up.
    drop(send);
    drop(client);
    conn_task.abort();
    let _ = conn_task.await;

    until("the connection is closed", || b.connections().is_empty()).await;
    for a in acks {
        let r = within("a waiting ack ends", a).await.expect("ack task");
        assert!(
            matches!(r, Ok(()) | Err(fabric_gossip_core::Error::ConnectionClosed)),
            "{r:?}"
        );
    }
    stop_all(&[&b]).await;
}

/// A stream the core closed cannot keep what had been handed to it while its remote takes
/// nothing (a shut flow-control window): the connection goes `close_grace` later. A live
/// re-attack held 645-662 MB of membership responses so with 64 requesters. A remote that
/// reads what is left is never cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_whose_remote_takes_nothing_takes_its_connection_along() {
    let mut limits = DriverLimits::default();
    // Long enough for a reading peer to end its stream on a loaded machine (300 ms is
    // one scheduling stall of the test's runtime), short enough to cut the shut one soon.
    limits.close_grace = Duration::from_secs(2);
    let b = node_with(config(), limits).await;
    // A peer that reads: its stream closed by b finishes, and nothing is cut.
    let a = node_with(config(), DriverLimits::default()).await;
    let _a_in = connect(&a, &b).await;
    b.close_conn(a.pki_id());
    until("a's stream finished", || b.connections().is_empty()).await;

    let (_client, _send, conn_task) = shut_window_stream(&b, "raw-client:shut").await;
    until("registered", || b.connections().len() == 1).await;
    // b's own ConnEstablish waits for a window that never opens; b closes the stream.
    b.close_conn(&b.connections()[0].pki_id);
    until("the connection is closed", || {
        b.driver_stats().unfinished_closes == 1
    })
    .await;
    let ended = within("the peer's connection ends", conn_task).await;
    assert!(matches!(ended, Ok(Err(_)) | Ok(Ok(()))), "{ended:?}");
    assert_eq!(
        b.driver_stats().unfinished_closes,
        1,
        "a's stream was not cut"
    );
    stop_all(&[&a, &b]).await;
}

/// A connection is pending again as soon as the core closed its last authenticated
/// stream: a client keeping it open with nothing on it then meets `setup_timeout` and the
/// eviction of pending connections, as one that never authenticated does. Nothing checked
/// it (mutation testing of the driver's `AuthGuard`, 2026-12-06).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_stream_the_node_closed_is_pending_again() {
    let b = node(config(), None).await;
    let (client, send, conn_task) = shut_window_stream(&b, "raw-client:pending").await;
    until("registered", || b.connections().len() == 1).await;
    assert_eq!(b.driver_stats().inbound_pending, 0, "authenticated");
    b.close_conn(&b.connections()[0].pki_id);
    let stats = b.driver_stats();
    assert_eq!(
        (stats.inbound_open, stats.inbound_pending),
        (1, 1),
        "{stats:?}"
    );
    // The client hangs up, so that the stop need not wait for it.
    conn_task.abort();
    drop((client, send));
    stop_all(&[&b]).await;
}

/// A raw HTTP/2 client that opens `GossipStream` on `b` with no flow-control window (so
/// the node can write nothing to it) and sends its `ConnEstablish` as `name`: the client,
/// the stream's sending half and the connection's task.
async fn shut_window_stream(
    b: &Node,
    name: &str,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::SendStream<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = within("connect", tokio::net::TcpStream::connect(b.local_addr()))
        .await
        .expect("connect");
    let (client, conn) = within(
        "HTTP/2 handshake",
        h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp),
    )
    .await
    .expect("HTTP/2 handshake");
    let mut conn = conn;
    let mut ping = conn.ping_pong().expect("a ping handle");
    let conn_task = tokio::spawn(conn);
    // Until the node has read our SETTINGS it may write as HTTP/2's default window allows
    // (65,535 bytes): a ping answered means it has.
    within("ping", ping.ping(h2::Ping::opaque()))
        .await
        .expect("pong");
    let mut client = within("ready", client.ready()).await.expect("ready");
    let (_response, mut send) = client
        .send_request(gossip_stream_request(b), false)
        .expect("request");
    for chunk in framed_conn_establish(name) {
        send.send_data(chunk, false).expect("handshake bytes");
    }
    (client, send, conn_task)
}

/// A server the node dials answers the HTTP/2 preface with a GOAWAY carrying 16,000 bytes
/// of debug data, control characters and ": " separators. The failure's text is kept
/// short, as a status message is (1,024 characters): the data came back whole through the
/// status's source (h2's error prints it), escaped four bytes to one, into the probe's
/// error, the events and the logs of every attempt (review, 2026-12-05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_servers_goaway_debug_data_is_cut() {
    use fabric_gossip_core::RemotePeer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The client's preface and first frames.
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let mut out = vec![0, 0, 0, 4, 0, 0, 0, 0, 0]; // SETTINGS, empty
                let mut debug = Vec::new();
                let mut i = 0u32;
                while debug.len() < 16_000 {
                    debug.extend_from_slice(format!("\u{1b}[31m{i}: ").as_bytes());
                    i += 1;
                }
                let len = (8 + debug.len()) as u32;
                out.extend_from_slice(&len.to_be_bytes()[1..]);
                out.extend_from_slice(&[7, 0, 0, 0, 0, 0]); // GOAWAY on stream 0
                out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]); // last stream 0, INTERNAL_ERROR
                out.extend_from_slice(&debug);
                let _ = s.write_all(&out).await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    let a = node(config(), None).await;
    let err = within("probe", a.probe(&RemotePeer::new(addr.to_string(), "x")))
        .await
        .unwrap_err();
    let text = format!("{err}");
    assert!(
        text.len() < 3000,
        "a probe's error of {} bytes: {}…",
        text.len(),
        &text[..300.min(text.len())]
    );
    server.abort();
    within("stop", a.stop()).await;
}

/// The node decompresses nothing: a call declaring its messages compressed is refused as
/// unimplemented, and one declaring them uncompressed (`identity`) is served as one that
/// declares nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_compressed_messages_is_refused_and_one_declared_uncompressed_is_served() {
    let b = node_with(config(), DriverLimits::default()).await;
    let gzip = ChunkBody::new(framed_conn_establish("raw-client:1"), false);
    let (code, msg) = within(
        "the compressed call's status",
        raw_stream_with(&b.endpoint(), gzip, &[("grpc-encoding", "gzip")]),
    )
    .await
    .expect("a gRPC status");
    assert_eq!(code, tonic::Code::Unimplemented, "{msg}");
    assert_eq!(b.stats().handshakes_ok, 0);
    // Held open (the body stalls) so that the connection stays up to be counted.
    let identity = ChunkBody::new(framed_conn_establish("raw-client:1"), true);
    let endpoint = b.endpoint();
    let call = tokio::spawn(async move {
        raw_stream_with(&endpoint, identity, &[("grpc-encoding", "identity")]).await
    });
    until("the uncompressed call's handshake", || {
        b.stats().handshakes_ok == 1
    })
    .await;
    call.abort();
    within("stop", b.stop()).await;
}
