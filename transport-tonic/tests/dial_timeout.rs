//! The core alone times dials: a dial that never completes ends with the core's
//! `DialError::Timeout` (never a driver-made failure), and the driver abandons the connection
//! attempt when the core says `CloseDial`. Within that time a refused attempt is made
//! again after the core's back-off (`Config::dial_backoff`, grpc-go's under Fabric's
//! blocking dial), each one a new `Action::Dial` on the same handle.

use crate::common;

use common::*;
use fabric_gossip_core::{Config, DialError, HandshakeError, ProbeError, RemotePeer};
use fabric_gossip_tonic::OpError;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A TLS dial to a peer that accepts TCP and then says nothing never completes (the TLS
/// handshake waits for the server's hello). Each attempt must end with the core's time-out,
/// not before it, and the dialling socket must be closed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_dial_ends_with_the_cores_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let dial_timeout = Duration::from_millis(300);
    let cfg = config().with_timeouts(dial_timeout, Duration::from_secs(2), Duration::from_secs(2));
    let pki = Pki::new("dial-ca");
    let a = node(cfg, Some(pki.tls("a"))).await;
    let peer = RemotePeer::new(addr.clone(), "x");

    for round in 0..4 {
        let started = Instant::now();
        let (held, probe) = tokio::join!(
            async { within("accept", silent.accept()).await.unwrap().0 },
            async {
                if round % 2 == 0 {
                    within("probe", a.probe(&peer))
                        .await
                        .map_err(|e| format!("{e:?}"))
                } else {
                    within("handshake", a.handshake(&peer))
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                }
            }
        );
        let took = started.elapsed();
        let err = probe.unwrap_err();
        let expected = if round % 2 == 0 {
            format!(
                "{:?}",
                OpError::Failed(ProbeError::Dial(DialError::Timeout))
            )
        } else {
            format!(
                "{:?}",
                OpError::<HandshakeError>::Failed(HandshakeError::Dial(DialError::Timeout))
            )
        };
        assert_eq!(err, expected, "round {round}");
        assert!(
            took + CLOCK_TICK >= dial_timeout,
            "failed before the time-out: {took:?}"
        );
        // The driver gave the attempt up: the client side of the held socket closes.
        let mut held = held;
        let mut sink = Vec::new();
        within("dialler closes", held.read_to_end(&mut sink))
            .await
            .unwrap();
    }
    within("stop", a.stop()).await;
}

/// A loopback port held but not listening: a connection to it is refused until
/// `listen()` is called on the socket, and no other test can take the port meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// A peer whose listener opens about a second after the send that dials it (a restart
/// under way) gets the message: the first attempt is refused, the retry a second later
/// is refused too, and the listener opens then; the retry after that, 1.6 s ± 20 % later
/// and still within Fabric's 3 s dial timeout, connects. The listener opens on the
/// driver's count of refused attempts, not on a clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_listening_a_second_late_gets_the_send() {
    let (socket, addr) = closed_port();
    let endpoint = addr.to_string();
    // Fabric's dial timeout and back-off. Seed 1 draws a second wait of 1.31 s: the
    // second retry comes about 2.3 s after the send, 0.7 s before the dial's deadline
    // (the first retry's wait, 1 s, has no jitter).
    let cfg = Config::default().with_seed(1);
    let a = node(cfg.clone(), None).await;
    let started = Instant::now();
    a.send(
        &data(7, 10),
        &[RemotePeer::new(endpoint.clone(), endpoint.as_str())],
    )
    .unwrap();
    until("two attempts refused", || {
        a.driver_stats().dials_failed >= 2
    })
    .await;
    let opened = started.elapsed();
    assert!(
        opened + CLOCK_TICK >= Duration::from_secs(1),
        "the first retry came before the back-off: {opened:?}"
    );
    let listener = socket.listen(64).unwrap().into_std().unwrap();
    let b = fabric_gossip_tonic::Node::builder(cfg)
        .listener(listener)
        .stop_timeout(Duration::from_secs(3))
        .start_with(|addr| fabric_gossip_core::TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts");
    assert_eq!(b.endpoint(), endpoint);
    let mut b_in = b.accept(|_| true).unwrap();
    let got = within("the send arrives", b_in.recv()).await.unwrap();
    assert_eq!(seq_of(got.message()), Some(7));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3) + CLOCK_TICK,
        "delivered after the dial timeout: {took:?}"
    );
    assert_eq!(a.stats().dial_retries, 2);
    assert_eq!(a.driver_stats().dials_failed, 2);
    assert_eq!(a.driver_stats().dials_ok, 1);
    assert_eq!(
        a.stats().presumed_dead,
        0,
        "presumed dead though it was reached"
    );
    stop_all(&[&a, &b]).await;
}

/// A peer that stays down fails the dial when its time is up, with the last refusal,
/// not at the first one: a probe of a closed port takes the whole dial timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_the_dial_at_its_timeout_not_before() {
    let (_held, addr) = closed_port();
    let dial_timeout = Duration::from_millis(1500);
    let cfg = config().with_timeouts(dial_timeout, Duration::from_secs(2), Duration::from_secs(4));
    let a = node(cfg, None).await;
    let (err, took) = failed_probe(&a, addr).await;
    assert!(
        matches!(&err, OpError::Failed(ProbeError::Dial(DialError::Failed(e))) if e.contains("refused")),
        "{err:?}"
    );
    assert!(
        took + CLOCK_TICK >= dial_timeout,
        "failed before the dial timeout: {took:?}"
    );
    // Tried at once and a second after; the next would start past the 1.5 s.
    assert_eq!(a.stats().dial_retries, 1);
    assert_eq!(a.driver_stats().dials_failed, 2);
    stop_all(&[&a]).await;
}

/// A node told to hang Pings (`NodeBuilder::hang_ping`): it accepts connections and never
/// answers a Ping, as a hung peer.
async fn hanging_node() -> fabric_gossip_tonic::Node {
    fabric_gossip_tonic::Node::builder(config())
        .hang_ping(true)
        .stop_timeout(Duration::from_secs(3))
        .start_with(|addr| fabric_gossip_core::TestOnlyHmacSecurity::new(addr.to_string()))
        .await
        .expect("node starts")
}

/// A node told to hang Pings (`NodeBuilder::hang_ping`, for tests of other nodes) answers
/// none: a probe of it fails at the caller's `conn_timeout`, as against a hung peer, while
/// a node that answers is probed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hanging_pings_is_probed_until_the_callers_conn_timeout() {
    let conn_timeout = Duration::from_millis(300);
    let cfg = config().with_timeouts(Duration::from_secs(2), conn_timeout, Duration::from_secs(2));
    let a = node(cfg, None).await;
    let answering = node(config(), None).await;
    within("probe", a.probe(&answering.as_peer()))
        .await
        .unwrap();
    let hanging = hanging_node().await;
    let started = Instant::now();
    let err = within("probe", a.probe(&hanging.as_peer()))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, OpError::Failed(ProbeError::Ping(_))),
        "{err:?}"
    );
    assert!(
        took + CLOCK_TICK >= conn_timeout,
        "failed before the time-out: {took:?}"
    );
    stop_all(&[&a, &answering, &hanging]).await;
}

/// A node's timer sleeps until the core's next deadline: while a probe waits out the
/// caller's `conn_timeout`, the runtime's one worker, which runs both nodes, wakes a few
/// times, not on every millisecond tick of tokio's timer as it would for a deadline
/// already past.
#[test]
fn nodes_waiting_for_a_deadline_leave_their_runtime_parked() {
    let rt = one_worker_runtime();
    rt.block_on(async {
        let conn_timeout = Duration::from_millis(500);
        let cfg =
            config().with_timeouts(Duration::from_secs(2), conn_timeout, Duration::from_secs(2));
        let a = node(cfg, None).await;
        let hanging = hanging_node().await;
        let metrics = tokio::runtime::Handle::current().metrics();
        let parks_before = metrics.worker_park_count(0);
        let started = Instant::now();
        let probe = within("probe", a.probe(&hanging.as_peer())).await;
        let took = started.elapsed();
        let parks = metrics.worker_park_count(0) - parks_before;
        assert!(probe.is_err());
        assert!(
            u128::from(parks) < took.as_millis() / 4,
            "{parks} wake-ups in {took:?}"
        );
        stop_all(&[&a, &hanging]).await;
    });
}
