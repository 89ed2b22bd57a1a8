//! When identities expire: the node's own certificates (Fabric's certmonitor log lines, the
//! `listening` line, `/metrics`), and members' identities (the node's JSON, `watch`'s table,
//! the soonest-expiry metric).

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
use std::process::Stdio;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// Members carry when their identity expires (the layer purges them then): in the node's
/// JSON as the certificate's NotAfter, in `watch`'s table as the time left.
#[test]
fn members_show_when_their_identity_expires() {
    // The channel fixture's Org1 peers, trusting their own folder: NotAfter 2035-12-30.
    const NOT_AFTER_MS: u64 = 2_082_585_600_000;
    let own_folder = ChannelPeer {
        block: false,
        tls: false,
    };
    let fast = ["--alive-interval", "500ms", "--alive-expiration", "3s"];
    let mut a_args = own_folder.args("peer0.org1.example.com", "Org1MSP", None);
    a_args.extend(["--membership", "--operations", "127.0.0.1:0"].map(str::to_owned));
    a_args.extend(fast.map(str::to_owned));
    let mut a = NodeProc::start(&strs(&a_args));
    let ops = a.seen[0]["operations"]
        .as_str()
        .expect("operations")
        .to_owned();
    let mut w_args = vec!["watch".to_owned(), "--bootstrap".to_owned(), a.addr.clone()];
    w_args.extend(own_folder.args("peer1.org1.example.com", "Org1MSP", None));
    w_args.extend(["--interval", "500ms"].map(str::to_owned));
    w_args.extend(fast.map(str::to_owned));
    // The watch runs until the metric has been read: the metric counts alive members
    // only, and once the watch is gone A may presume it dead at its next failed send,
    // well before the 3 s expiry (a loaded machine read no sample after the watch's end).
    let mut w = KillOnDrop(spawn(&strs(&w_args), Stdio::null(), Stdio::null()));
    let lines = read_lines(w.0.stdout.take().expect("stdout"), 65536);
    let mut out = String::new();
    let deadline = Instant::now() + EVENT;
    while !out.lines().any(|l| l.starts_with(a.pki.as_str())) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => out.extend([line.as_str(), "\n"]),
            Err(_) => panic!("no row for A in the watch's tables within {EVENT:?}:\n{out}"),
        }
    }
    let seen = a.wait("member_alive", is("member_alive"));
    assert_eq!(seen["identity_expires_unix_ms"], NOT_AFTER_MS, "{seen}");
    let left = (NOT_AFTER_MS / 1000).saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs(),
    );
    // The metric to alert on, while the watch is a member.
    const SOONEST: &str = "fabric_gossip_cli_membership_identity_expiry_soonest_seconds";
    let deadline = Instant::now() + EVENT;
    let soonest = loop {
        let (code, metrics) = http_get(&ops, "/metrics");
        assert_eq!(code, 200);
        if metrics
            .lines()
            .any(|l| l.starts_with(&format!("{SOONEST} ")))
        {
            break sample(&metrics, SOONEST);
        }
        assert!(
            Instant::now() < deadline,
            "no {SOONEST} within {EVENT:?} while the watch runs:\n{metrics}"
        );
        // Polling the metrics, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(soonest.abs_diff(left) <= 60, "{soonest} against {left}");
    // A signal ends the watch as --duration would: with its table.
    signal(&w.0.id().to_string(), "-TERM");
    let status = exit_within(&mut w.0, EVENT).expect("watch exits on SIGTERM");
    assert!(status.success(), "watch exited with {status}");
    let deadline = Instant::now() + EVENT;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => out.extend([line.as_str(), "\n"]),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the watch's stdout still open:\n{out}"),
        }
    }
    // The watch's last table: A's row, with the days left until NotAfter.
    let days = left / 86_400;
    let table = &out[out.rfind("PKI-ID").expect("a table")..];
    assert!(table.contains("IDENTITY EXPIRES"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(a.pki.as_str()))
        .unwrap_or_else(|| panic!("no row for A: {table}"));
    // The day may turn between the watch's table and this line.
    let shows_days = |line: &str| {
        line.contains(&format!("in {days} days")) || line.contains(&format!("in {} days", days + 1))
    };
    assert!(shows_days(row), "{row}");
    // The watcher's own identity (the same CA's, same NotAfter) on its "me:" line.
    let me = out[..out.rfind("PKI-ID").expect("a table")]
        .lines()
        .rfind(|l| l.starts_with("me: "))
        .unwrap_or_else(|| panic!("no me: line: {}", out));
    assert!(me.contains("identity expires in "), "{me}");
    assert!(shows_days(me), "{me}");
    a.stop();
}

/// The node's `/metrics` (its `listening` line names the service) gives the seconds left
/// until its enrollment certificate's NotAfter, `not_after` in Unix seconds, within a minute.
fn assert_enrollment_seconds_left(listening: &Value, not_after: u64) {
    let ops = listening["operations"].as_str().expect("operations");
    let (code, metrics) = http_get(ops, "/metrics");
    assert_eq!(code, 200);
    let left = sample(
        &metrics,
        "fabric_gossip_cli_certificate_expiry_seconds{certificate=\"enrollment\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(left.abs_diff(not_after - now) <= 60, "{left}\n{metrics}");
}

/// The node's own certificates' expiry, as a Fabric peer tracks it: Fabric's log lines at
/// start, the dates in `listening`, the time left in `/metrics`.
#[test]
fn a_node_tracks_when_its_own_certificates_expire() {
    let peer = ChannelPeer {
        block: true,
        tls: true,
    };
    let mut args = peer.args("peer0.org1.example.com", "Org1MSP", None);
    args.extend(["--operations", "127.0.0.1:0", "--log-spec", "info"].map(str::to_owned));
    let mut d = Daemon::start(&strs(&args), true, true, None);
    let listening = d.wait("listening", is("listening"));
    // The fixture's certificates: NotAfter 2035-12-30 for both.
    let expires = &listening["certificates_expire_unix_ms"];
    assert_eq!(expires["enrollment"], 2_082_585_600_000u64, "{listening}");
    assert_eq!(expires["server_tls"], 2_082_585_600_000u64, "{listening}");
    assert!(expires.get("client_tls").is_none(), "{listening}");
    assert_enrollment_seconds_left(&listening, 2_082_585_600);
    let log = stop_for_log(&mut d);
    for role in ["enrollment", "server TLS"] {
        assert!(
            log.contains(&format!(
                "The {role} certificate will expire on 2035-12-30 00:00:00 +0000 UTC"
            )),
            "{log}"
        );
    }
    // Fabric's logger name selects them: warnings only, the rest at info.
    let mut args = peer.args("peer0.org1.example.com", "Org1MSP", None);
    args.extend(["--log-spec", "certmonitor=warn:info"].map(str::to_owned));
    let mut d = Daemon::start(&strs(&args), true, true, None);
    d.wait("listening", is("listening"));
    d.send_line(r#"{"cmd":"stop"}"#);
    assert_eq!(d.exit_within(Duration::from_secs(10)), Some(0));
    let log = d.stderr();
    assert!(log.contains("listening on"), "{log}");
    assert!(!log.contains("certificate will expire on"), "{log}");
}

/// A certificate valid until RFC 5280's "no well-defined expiration date", 9999-12-31
/// 23:59:59, keeps that date in `validate`'s line, in the node's `listening` line, metric and
/// certmonitor log, rather than 2554, where the core's clock ends.
#[test]
fn a_certificate_without_expiration_keeps_its_date() {
    use fabric_gossip_msp::dev::{OrgSpec, Validity, generate};
    use rand_core::SeedableRng;
    const NO_EXPIRATION_MS: u64 = 253_402_300_799_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let validity = Validity {
        not_before: fabric_gossip_core::Instant::from_unix_secs(1_672_531_200),
        not_after: fabric_gossip_core::Instant::MAX,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9999);
    let layout = generate(
        dir.path(),
        &[OrgSpec::new("Org1MSP", "org1.example.com", 1)],
        validity,
        &mut rng,
    )
    .expect("PKI");
    let org = &layout.orgs[0];
    let peer_msp = org.peers[0].msp_dir.to_str().expect("utf-8");
    let trust = format!("Org1MSP={}", org.msp_dir.display());
    let r = run_expect(&["validate", "--trust", &trust, peer_msp], 0);
    let line: Value = serde_json::from_str(r.stdout.trim()).expect("a JSON line");
    assert_eq!(line["valid"], true, "{}", r.all());
    assert_eq!(line["not_after_unix_ms"], NO_EXPIRATION_MS, "{}", r.all());

    let args = [
        "--listen",
        "127.0.0.1:0",
        "--msp-dir",
        peer_msp,
        "--msp-id",
        "Org1MSP",
        "--operations",
        "127.0.0.1:0",
        "--log-spec",
        "info",
    ];
    let mut d = Daemon::start(&args, true, true, None);
    let listening = d.wait("listening", is("listening"));
    assert_eq!(
        listening["certificates_expire_unix_ms"]["enrollment"], NO_EXPIRATION_MS,
        "{listening}"
    );
    assert_enrollment_seconds_left(&listening, NO_EXPIRATION_MS / 1000);
    let log = stop_for_log(&mut d);
    assert!(
        log.contains("The enrollment certificate will expire on 9999-12-31 23:59:59 +0000 UTC"),
        "{log}"
    );
}
