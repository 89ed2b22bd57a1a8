//! The core alone times dials: a dial that never completes ends with the core's
//! `DialError::Timeout` (never a driver-made failure), and the driver abandons the connection
//! attempt when the core says `CloseDial`.

use crate::common;

use common::*;
use fabric_gossip_core::{DialError, HandshakeError, ProbeError, RemotePeer};
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
