//! The membership layer (issue 11): `node --bootstrap` and `--endpoint`, `member_alive` and
//! `member_dead`, `{"cmd":"members"}`, the `membership` line and its pacing, Fabric's metric,
//! settings refused, and a stop while the layer dials a member that left.

use crate::common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The PKI-IDs of the alive (`alive = true`) or dead members of a membership object.
fn member_ids(v: &Value, alive: bool) -> Vec<String> {
    v["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members in {v}"))
        .iter()
        .filter(|m| m["alive"] == alive)
        .map(|m| m["pki_id"].as_str().expect("pki_id").to_owned())
        .collect()
}

/// A test-identity node bound to every interface on a free port P (`--listen 0.0.0.0:P`)
/// and known as `--endpoint localhost:P`; with the two addresses.
fn listening_everywhere_as_localhost() -> (NodeProc, String, String) {
    let port = free_port();
    let (listen, endpoint) = (format!("0.0.0.0:{port}"), format!("localhost:{port}"));
    let a = NodeProc::start(&[
        "--listen",
        &listen,
        "--endpoint",
        &endpoint,
        "--test-identity",
    ]);
    (a, listen, endpoint)
}

/// A node bound to every interface (`--listen 0.0.0.0:P`) is known by its `--endpoint`
/// (Fabric's `peer.listenAddress` against `peer.gossip.endpoint`): its listening line's
/// `addr` is that endpoint, the one its membership carries, with the address bound beside
/// it, and a peer joins through it there.
#[test]
fn a_node_listening_everywhere_is_known_by_its_endpoint() {
    let (a, listen, endpoint) = listening_everywhere_as_localhost();
    let listening = a.seen[0].clone();
    assert_eq!(a.addr, endpoint, "{listening}");
    assert_eq!(listening["listen"], listen.as_str(), "{listening}");
    assert_eq!(
        listening["membership"]["endpoint"],
        endpoint.as_str(),
        "{listening}"
    );
    let mut b = NodeProc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--bootstrap",
        &a.addr,
    ]);
    let joined = b.wait("bootstrap_joined", is("bootstrap_joined"));
    assert_eq!(joined["pki_id"], a.pki.as_str(), "{joined}");
    a.stop();
    b.stop();
}

/// An operator's trial (2026-12-07): under `--test-identity`, whose identity and PKI-ID are
/// the endpoint (Fabric's comm test peers), a node given `--endpoint` took the address it
/// bound as its identity: `--listen 0.0.0.0:P --endpoint localhost:P` was `0.0.0.0:P`, and
/// a peer dialling `--peer localhost:P` failed its handshake ("expected localhost:P, remote
/// is 0.0.0.0:P"). Its identity is now the endpoint it gives as its own.
#[test]
fn a_test_identity_node_given_an_endpoint_is_that_endpoint() {
    let (a, _, endpoint) = listening_everywhere_as_localhost();
    assert_eq!(a.pki, endpoint, "{}", a.seen[0]);
    let mut b = NodeProc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--peer",
        &endpoint,
    ]);
    let connected = b.wait("connected or handshake_failed", |v| {
        v["event"] == "connected" || v["event"] == "handshake_failed"
    });
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["peer"], endpoint.as_str(), "{connected}");
    a.stop();
    b.stop();
}

#[test]
fn two_nodes_and_a_watch_see_each_other() {
    let fast = [
        "--alive-interval",
        "500ms",
        "--alive-expiration",
        "3s",
        "--reconnect-interval",
        "1s",
    ];
    let mut a_args = vec![
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--membership",
        "--operations",
        "127.0.0.1:0",
    ];
    a_args.extend(fast);
    let mut a = NodeProc::start(&a_args);
    let listening = a.seen[0].clone();
    assert_eq!(
        listening["membership"]["endpoint"], a.addr,
        "the endpoint defaults to the bound address: {listening}"
    );
    let ops = listening["operations"]
        .as_str()
        .expect("operations")
        .to_owned();
    let mut b_args = vec![
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--bootstrap",
        a.addr.as_str(),
    ];
    b_args.extend(fast);
    let mut b = NodeProc::start(&b_args);
    let (a_pki, b_pki) = (a.pki.clone(), b.pki.clone());
    let joined = b.wait("bootstrap_joined", is("bootstrap_joined"));
    assert_eq!(joined["endpoint"], a.addr.as_str(), "{joined}");
    assert_eq!(joined["pki_id"], a_pki.as_str(), "{joined}");
    b.wait("member_alive A", |v| {
        v["event"] == "member_alive" && v["pki_id"] == a_pki.as_str()
    });
    let seen_b = a.wait("member_alive B", |v| {
        v["event"] == "member_alive" && v["pki_id"] == b_pki.as_str()
    });
    assert_eq!(seen_b["internal_endpoint"], b.addr.as_str(), "{seen_b}");
    // The layer takes its own messages; the application's still reach the node's output.
    b.send_line("hello beside membership");
    let got = a.wait("received text", |v| {
        v["event"] == "received" && v["content"] == "data_msg"
    });
    assert_eq!(got["text"], "hello beside membership", "{got}");
    a.wait("membership", |v| {
        v["event"] == "membership" && member_ids(v, true).contains(&b_pki)
    });

    // A watch joins through A and lists both nodes alive.
    let mut w_args = vec![
        "watch",
        "--bootstrap",
        a.addr.as_str(),
        "--test-identity",
        "--json",
        "--duration",
        "4s",
        "--interval",
        "500ms",
    ];
    w_args.extend(fast);
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    };
    let before = unix_ms();
    let r = run(&w_args, Duration::from_secs(30));
    let after = unix_ms();
    assert_eq!(r.code, Some(0), "{}", r.all());
    let last = last_json_line(&r.stdout);
    // Each table says when it was taken.
    let at = last["time_unix_ms"].as_u64().expect("time_unix_ms");
    assert!((before..=after).contains(&at), "{before} {at} {after}");
    let alive = member_ids(&last, true);
    assert!(
        alive.contains(&a_pki) && alive.contains(&b_pki),
        "watch lists {alive:?}: {last}"
    );
    assert_eq!(last["bootstrap"][0]["joined"], true, "{last}");
    let watcher = last["self"]["pki_id"].as_str().expect("self").to_owned();
    // A test identity has no certificate, so no expiry.
    assert!(last["self"]["identity_expires_unix_ms"].is_null(), "{last}");
    // ... and A saw the watch as a member.
    a.wait("member_alive watch", |v| {
        v["event"] == "member_alive" && v["pki_id"] == watcher.as_str()
    });

    // The table on demand, and Fabric's metric.
    a.send_line(r#"{"cmd":"members"}"#);
    let table = a.wait("members", is("members"));
    assert!(member_ids(&table, true).contains(&b_pki), "{table}");
    let (code, metrics) = http_get(&ops, "/metrics");
    assert_eq!(code, 200);
    assert!(
        sample(&metrics, "gossip_membership_total_peers_known") >= 1,
        "{metrics}"
    );
    // Every counter of the `stats` command's membership object is a metric too.
    assert!(
        sample(&metrics, "fabric_gossip_membership_alive_received") >= 1,
        "{metrics}"
    );
    a.send_line(r#"{"cmd":"stats"}"#);
    let st = a.wait("stats", is("stats"));
    let counters = st["membership"].as_object().expect("membership stats");
    let certstore = counters["certstore"].as_object().expect("certstore stats");
    let names = counters
        .keys()
        // Not counters of the layer: its gauges, and the tool's own table printing.
        .filter(|k| !matches!(k.as_str(), "members_alive" | "members_dead" | "certstore"))
        .filter(|k| !k.starts_with("membership_line"))
        .map(|k| format!("fabric_gossip_membership_{k} "))
        .chain(
            certstore
                .keys()
                .map(|k| format!("fabric_gossip_membership_certstore_{k} ")),
        );
    for name in names {
        assert!(
            metrics.contains(&format!("\n{name}")),
            "{name} in {metrics}"
        );
    }
    // Every metric the README's alert table names is served: a renamed counter would
    // silently disarm an operator's rule. (The certificate-expiry gauge needs a node with a
    // certificate: cli/tests/cli/expiry.rs.)
    let alerted = alert_table_metrics();
    assert!(alerted.len() >= 10, "{alerted:?}");
    for name in alerted
        .iter()
        .filter(|n| *n != "fabric_gossip_cli_certificate_expiry_seconds")
    {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "the alert table's {name} is not served: {metrics}"
        );
    }
    // Test identities never expire: no expiry to report.
    assert!(
        !metrics.contains("identity_expiry_soonest_seconds"),
        "{metrics}"
    );
    assert!(
        table["members"][0]["identity_expires_unix_ms"].is_null(),
        "{table}"
    );

    // B stops: A declares it dead.
    b.stop();
    let dead = a.wait("member_dead B", |v| {
        v["event"] == "member_dead" && v["pki_id"] == b_pki.as_str()
    });
    assert!(
        dead["reason"] == "expired" || dead["reason"] == "presumed_dead",
        "{dead}"
    );
    a.stop();
}

/// A node stops at once while its membership layer dials a member that has just left.
/// The layer's alive messages to that member wait in a connection attempt that retries
/// with back-off until the dial timeout (10 s here), and a stop's flush, which waits for
/// the messages of the commands already read, used to wait for those too: in CI a stop
/// took more than 5 s so (`two_nodes_and_a_watch_see_each_other`, whose watch had left).
#[test]
fn a_node_stops_at_once_while_its_layer_dials_a_member_that_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.yaml");
    std::fs::write(&core, "peer:\n  gossip:\n    dialTimeout: 10s\n").expect("write core.yaml");
    let core = core.to_str().expect("utf-8 path");
    // B stays alive in A's table long after it is gone, so A keeps gossiping to it.
    let fast = ["--alive-interval", "200ms", "--alive-expiration", "60s"];
    let a_args = [&TEST_NODE[..], &["--config", core], &fast].concat();
    let mut a = NodeProc::start(&a_args);
    let b_args = [&TEST_NODE[..], &["--bootstrap", a.addr.as_str()], &fast].concat();
    let mut b = NodeProc::start(&b_args);
    let b_pki = b.pki.clone();
    a.wait("member_alive B", |v| {
        v["event"] == "member_alive" && v["pki_id"] == b_pki.as_str()
    });
    let _ = b.child.kill();
    let _ = b.child.wait();
    // Until one of A's dials to B has failed: the attempt then waits out its back-off,
    // holding the alive messages A sends B meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        a.send_line(r#"{"cmd":"stats"}"#);
        let st = loop {
            let v = a.next(EVENT).expect("a stats line");
            if v["event"] == "stats" {
                break v;
            }
        };
        if st["dials_failed"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "A never dialled B: {st}");
        // Polling A's counters, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stop takes about 0.3 s; waiting for the attempt would take until its 10 s end.
    a.stop_within(Duration::from_secs(3));
}

/// The `membership` line is paced by its bytes (the pacing itself is tested with a virtual
/// clock in `src/membership.rs`): `stats` counts the lines printed and their bytes, which are
/// those the reader got, and a small table is never held back by the byte budget.
#[test]
fn stats_count_the_membership_lines_and_their_bytes() {
    let fast = ["--alive-interval", "500ms", "--alive-expiration", "3s"];
    let a_args = [&TEST_NODE[..], &["--membership"], &fast].concat();
    let mut a = NodeProc::start(&a_args);
    let b_args = [&TEST_NODE[..], &["--bootstrap", a.addr.as_str()], &fast].concat();
    let b = NodeProc::start(&b_args);
    a.wait("membership with B", |v| {
        v["event"] == "membership" && member_ids(v, true).contains(&b.pki)
    });
    a.send_line(r#"{"cmd":"stats"}"#);
    let st = a.wait("stats", is("stats"));
    let tables: Vec<&Value> = a.seen.iter().filter(|v| is("membership")(v)).collect();
    // Each line as printed: compact JSON and its newline.
    let bytes: usize = tables.iter().map(|v| v.to_string().len() + 1).sum();
    let m = &st["membership"];
    assert_eq!(m["membership_lines"], tables.len(), "{st}");
    assert_eq!(m["membership_line_bytes"], bytes, "{st}");
    assert_eq!(m["membership_lines_delayed"], 0, "{st}");
    b.stop();
    a.stop();
}

/// The `membership` line (the whole table) comes out at once for the first change, then at
/// most twice a second however fast members join: the changes meanwhile are folded into the
/// next line.
#[test]
fn membership_lines_come_at_most_twice_a_second_however_fast_members_join() {
    let fast = ["--alive-interval", "500ms", "--alive-expiration", "3s"];
    let t0 = Instant::now();
    let a_args = [&TEST_NODE[..], &["--membership"], &fast].concat();
    let mut a = NodeProc::start(&a_args);
    let b_args = [&TEST_NODE[..], &["--bootstrap", a.addr.as_str()], &fast].concat();
    let joiners: Vec<NodeProc> = (0..12).map(|_| NodeProc::start(&b_args)).collect();
    a.wait("membership with every joiner", |v| {
        is("membership")(v) && {
            let alive = member_ids(v, true);
            joiners.iter().all(|j| alive.contains(&j.pki))
        }
    });
    // Measured from before A started, so never shorter than A's own time.
    let elapsed = t0.elapsed();
    let lines = a.seen.iter().filter(|v| is("membership")(v)).count();
    let most = 1 + usize::try_from(elapsed.as_millis() / 500).expect("small");
    assert!(lines <= most, "{lines} membership lines in {elapsed:?}");
}

/// Membership settings the layer could never work with are refused at once with status 2,
/// naming the flag: a bootstrap peer that is not HOST:PORT (it was retried every
/// reconnect interval, failing each time), an expiry not longer than the heartbeat
/// (every member would flap dead between its heartbeats), and a `propagateIterations` that
/// is no count (or a flag of 0, which would spread nothing).
#[test]
fn membership_settings_that_cannot_work_are_refused_naming_the_flag() {
    // The flag's own parser refuses "peer0", and so does the reading of a core.yaml entry,
    // naming the key and the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.yaml");
    std::fs::write(&core, "peer:\n  gossip:\n    bootstrap: peer0\n").expect("write core.yaml");
    let core = core.to_str().expect("utf-8 path");
    let iterations = dir.path().join("iterations.yaml");
    std::fs::write(
        &iterations,
        "peer:\n  gossip:\n    propagateIterations: many\n",
    )
    .expect("write core.yaml");
    let iterations = iterations.to_str().expect("utf-8 path");
    for (args, expected) in [
        (
            &["--config", core][..],
            r#"expected HOST:PORT, e.g. 127.0.0.1:7051, got "peer0""#,
        ),
        (
            &["--config", iterations][..],
            "peer.gossip.propagateIterations (from --config",
        ),
        (
            &["--propagate-iterations", "0"][..],
            "--propagate-iterations",
        ),
        (
            &[
                "--bootstrap",
                "127.0.0.1:7",
                "--alive-interval",
                "5s",
                "--alive-expiration",
                "5s",
            ][..],
            "--alive-expiration 5s (peer.gossip.aliveExpirationTimeout) must be longer than --alive-interval 5s",
        ),
    ] {
        let all = [
            &["node", "--listen", "127.0.0.1:0", "--test-identity"][..],
            args,
        ]
        .concat();
        let r = run(&all, Duration::from_secs(20));
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.all());
        assert!(r.stderr.contains(expected), "{args:?}: {}", r.all());
    }
}

/// A bootstrap peer nobody answers at: `bootstrap_failed` with the dial's reason, retried.
#[test]
fn node_reports_a_bootstrap_peer_it_cannot_reach() {
    // A port that was free a moment ago: nothing listens there.
    let free = closed_addr();
    let mut n = NodeProc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--bootstrap",
        free.as_str(),
    ]);
    assert_eq!(n.seen[0]["membership"]["bootstrap"][0], free.as_str());
    let failed = n.wait("bootstrap_failed", is("bootstrap_failed"));
    assert_eq!(failed["endpoint"], free.as_str(), "{failed}");
    assert_eq!(failed["attempt"], 1, "{failed}");
    assert_eq!(failed["gave_up"], false, "{failed}");
    assert!(
        !failed["error"].as_str().unwrap_or_default().is_empty(),
        "{failed}"
    );
    n.send_line(r#"{"cmd":"members"}"#);
    let table = n.wait("members", is("members"));
    assert_eq!(table["alive"], 0, "{table}");
    n.stop();
}

/// `--propagate-iterations` is a membership flag (Fabric's emitter sends each alive message
/// that many times; its wrong values are refused above), and `stats` counts alive messages
/// of another node with our PKI-ID under `alive_impostors`.
#[test]
fn propagate_iterations_runs_and_stats_count_impostors() {
    let args = [&TEST_NODE[..], &["--propagate-iterations", "2"]].concat();
    let mut a = NodeProc::start(&args);
    assert!(a.seen[0]["membership"].is_object(), "{}", a.seen[0]);
    a.send_line(r#"{"cmd":"stats"}"#);
    let st = a.wait("stats", is("stats"));
    assert_eq!(st["membership"]["alive_impostors"], 0, "{st}");
    a.stop();
}

/// The metric names in the README's "What to alert on first" table (its rows, up to the
/// blank line that ends it).
fn alert_table_metrics() -> Vec<String> {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    let table = readme
        .split_once("What to alert on first")
        .expect("the README's alert table")
        .1
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    let mut names: Vec<String> = table
        .flat_map(|row| row.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("gossip_") || w.starts_with("fabric_gossip_"))
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}
