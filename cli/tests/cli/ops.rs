//! The operations service (issue 13) over real HTTP: health, version, metrics that match
//! `stats`, `/logspec`, the request body limit, idle connections evicted for a health check,
//! and TLS from the flags and from a core.yaml.

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Issue 13: the operations service over real HTTP: health, version, and metrics whose
/// figures match the node's own `stats` after traffic.
#[test]
fn operations_service_metrics_match_stats() {
    let (mut a, ops) = operations_daemon(&["--auto-ack"]);
    let a_addr = a.wait("listening", is("listening"))["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    let (code, body) = http_get(&ops, "/healthz");
    assert_eq!(code, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "OK", "{body}");
    // fabric-lib-go's checker always says when it answered (RFC 3339, UTC).
    let at = health["time"].as_str().expect("time");
    assert!(
        at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{at}"
    );
    let (code, body) = http_get(&ops, "/version");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"Version\""), "{body}");
    assert_eq!(http_get(&ops, "/nothing").0, 404);

    let (mut b, _) = test_daemon(&["--peer", &a_addr]);
    b.wait("connected", is("connected"));
    for seq in 1..=20 {
        b.send_line(&format!(
            r#"{{"cmd":"send","to":"{a_addr}","data":"m{seq}","seq":{seq}}}"#
        ));
    }
    for seq in 21..=25 {
        b.send_line(&format!(
            r#"{{"cmd":"send_with_ack","to":"{a_addr}","data":"m{seq}","seq":{seq},"timeout_ms":10000}}"#
        ));
    }
    for seq in 21..=25u64 {
        let r = b.wait("ack_result", |v| {
            v["event"] == "ack_result" && v["seq"] == seq
        });
        assert_eq!(r["ok"], true, "{r}");
    }
    a.wait("the last message", |v| {
        v["event"] == "received" && v["seq"] == 20
    });
    a.send_line(r#"{"cmd":"stats"}"#);
    let st = a.wait("stats", is("stats"));
    let (code, m) = http_get(&ops, "/metrics");
    assert_eq!(code, 200, "{m}");
    // Which build runs, as /version says it.
    let version = body_version(&ops);
    assert!(
        m.contains(&format!(
            "\nfabric_gossip_build_info{{version=\"{version}\"}} 1\n"
        )),
        "{m}"
    );
    assert!(st["received"].as_u64().expect("received") >= 25, "{st}");
    for (metric, key) in [
        ("gossip_comm_messages_received", "received"),
        ("gossip_comm_messages_sent", "sent"),
        ("gossip_comm_overflow_count", "dropped_overflow"),
        ("gossip_comm_connections_open", "connections"),
        ("gossip_comm_handshakes_completed", "handshakes_ok"),
        ("gossip_comm_read_pauses", "read_pauses"),
        ("gossip_comm_retired_closed_unread", "retired_closed_unread"),
        ("gossip_comm_dial_retries", "dial_retries"),
        ("gossip_comm_identities_evicted", "identities_evicted"),
        (
            "gossip_comm_identities_purged_unused",
            "identities_purged_unused",
        ),
        (
            "gossip_comm_messages_dropped{cause=\"no_connection\"}",
            "dropped_no_connection",
        ),
        (
            "gossip_comm_handshake_failures{reason=\"pki_id_mismatch\"}",
            "handshake_failures",
        ),
    ] {
        let want = match &st[key] {
            Value::Object(by) => by["pki_id_mismatch"].as_u64(),
            v => v.as_u64(),
        }
        .unwrap_or_else(|| panic!("{key} in {st}"));
        assert_eq!(sample(&m, metric), want, "{metric} vs stats {key}");
    }
    assert_eq!(sample(&m, "gossip_comm_connections_open"), 1);
    // Fabric's gRPC server pair: b's connection opened, and opened minus closed open now.
    let opened = sample(&m, "grpc_comm_conn_opened");
    assert!(opened >= 1, "{m}");
    assert_eq!(
        opened - sample(&m, "grpc_comm_conn_closed"),
        sample(&m, "gossip_comm_inbound_open"),
        "{m}"
    );
    assert_eq!(sample(&m, "gossip_comm_inbound_open"), 1, "{m}");
    assert_eq!(sample(&m, "gossip_comm_identities_held"), 2, "ours and b's");
    // The classic text format a Fabric peer serves: a counter's samples keep its name.
    assert!(
        m.contains("# TYPE gossip_comm_messages_sent counter\ngossip_comm_messages_sent "),
        "{m}"
    );
    assert!(
        !m.contains("gossip_comm_messages_sent_total") && !m.contains("# EOF"),
        "{m}"
    );
    // The process figures client_golang serves on every peer (generic alerts use them).
    assert!(sample(&m, "process_open_fds") > 0, "{m}");
    assert!(sample(&m, "process_max_fds") > 0, "{m}");
    assert!(
        sample(&m, "process_start_time_seconds") > 1_700_000_000,
        "{m}"
    );
    assert!(sample(&m, "process_resident_memory_bytes") > 0, "{m}");
    // CPU time (to the tick: the unit test `process_cpu_time_is_served_to_the_tick_…`).
    let cpu: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("process_cpu_seconds_total in {m}"));
    assert!((0.0..30.0).contains(&cpu), "{cpu}");
    assert!(
        m.contains("# HELP gossip_comm_messages_sent Number of messages sent"),
        "{m}"
    );
    a.stop_ok();
}

/// Fabric's `/logspec` on the operations service: read the spec, change it at run time.
/// An operator's trial (2026-12-07): `--operations` on the gossip port (`--listen`) failed
/// as "--listen 127.0.0.1:P: cannot listen: Address already in use", naming neither the
/// operations service nor the clash with our own flag. It is refused before anything binds.
#[test]
fn operations_on_the_gossip_port_is_refused_naming_both() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    for ops in [addr.clone(), format!("0.0.0.0:{port}")] {
        let r = run_expect(
            &[
                "node",
                "--listen",
                &addr,
                "--operations",
                &ops,
                "--test-identity",
                "--exit-on-eof",
            ],
            2,
        );
        assert!(
            r.stderr.contains(&format!("--operations {ops}")) && r.stderr.contains("--listen"),
            "{}",
            r.all()
        );
    }
}

#[test]
fn logspec_changes_the_log_filter_at_run_time() {
    let (mut n, ops) = operations_daemon(&["--log-spec", "info"]);
    assert_eq!(
        http_get(&ops, "/logspec"),
        (200, r#"{"spec":"info"}"#.to_owned())
    );
    n.send_line(r#"{"cmd":"stats","n":1}"#);
    n.wait("stats 1", is("stats"));
    let put = |body: &str| {
        let mut s = std::net::TcpStream::connect(ops.as_str()).expect("connect");
        s.set_read_timeout(Some(EVENT)).expect("timeout");
        write!(
            s,
            "PUT /logspec HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("response");
        raw
    };
    let r = put(r#"{"spec":"gossip=loud"}"#);
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("loud"), "{r}");
    let r = put(r#"{"spec":"nodeCmd=debug:info"}"#);
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(
        http_get(&ops, "/logspec"),
        (200, r#"{"spec":"nodeCmd=debug:info"}"#.to_owned())
    );
    n.seen.clear();
    n.send_line(r#"{"cmd":"stats","n":2}"#);
    n.wait("stats 2", is("stats"));
    // A spec without a default level reads back with the one in force; an empty spec is
    // Fabric's default, info (it had read back as "").
    let r = put(r#"{"spec":"gossip=warning"}"#);
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(
        http_get(&ops, "/logspec"),
        (200, r#"{"spec":"gossip=warn:info"}"#.to_owned())
    );
    let r = put(r#"{"spec":""}"#);
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(
        http_get(&ops, "/logspec"),
        (200, r#"{"spec":"info"}"#.to_owned())
    );
    // No spec at all is the empty spec, as Fabric's handler decodes it; a spec that is
    // not a string is refused with Fabric's error object.
    let r = put(r#"{"spec":"gossip=warning"}"#);
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = put("{}");
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    assert_eq!(
        http_get(&ops, "/logspec"),
        (200, r#"{"spec":"info"}"#.to_owned())
    );
    let r = put(r#"{"spec":7}"#);
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains(r#"{"error":"#),
        "{r}"
    );
    n.seen.clear();
    n.send_line(r#"{"cmd":"stats","n":3}"#);
    n.wait("stats 3", is("stats"));
    n.stop_ok();
    let err = n.stderr();
    assert!(err.contains(r#"command: {"cmd":"stats","n":2}"#), "{err}");
    assert!(!err.contains(r#""n":1"#), "{err}");
    assert!(!err.contains(r#""n":3"#), "nodeCmd still at debug: {err}");
}

/// A request whose body is over the operations service's limit (4 KiB) is answered `413
/// Payload Too Large` with `Connection: close`, before its body is read: a client that
/// waits for the answer gets it at once, and one that sends its 10 MB body first has it
/// read and dropped, then gets the answer (it had been cut off mid-body, a broken pipe,
/// with no answer). A chunked body over the limit is answered the same.
#[test]
fn an_oversized_request_body_is_answered_413() {
    let (mut n, ops) = operations_daemon(&[]);
    let head = "PUT /logspec HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    let answer = |s: &mut std::net::TcpStream| {
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("an answer, then the end");
        let head = raw
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.1 413 payload too large")
                && head.contains("connection: close"),
            "{raw}"
        );
        assert!(raw.contains("4096"), "{raw}");
    };
    let connect = || {
        let s = std::net::TcpStream::connect(ops.as_str()).expect("connect");
        s.set_read_timeout(Some(EVENT)).expect("timeout");
        s.set_write_timeout(Some(EVENT)).expect("timeout");
        s
    };
    // The head alone: answered without waiting for the body.
    let mut s = connect();
    s.write_all(head.as_bytes()).expect("head");
    answer(&mut s);
    // The head and the whole body, then the answer is read.
    let mut s = connect();
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![b'x'; 10_000_000])
        .expect("the body is read to its end, not cut off");
    answer(&mut s);
    // Chunked: the limit is found while reading.
    let mut s = connect();
    write!(
        s,
        "PUT /logspec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        5000,
        "x".repeat(5000)
    )
    .expect("request");
    answer(&mut s);
    // A request, written whole, and its answer to the end.
    let exchange = |request: &str| {
        let mut s = connect();
        s.write_all(request.as_bytes()).expect("request");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("an answer, then the end");
        raw
    };
    // A body that cannot be read (bad chunked framing) is a bad request, not one too large.
    let raw =
        exchange("PUT /logspec HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert!(
        raw.starts_with("HTTP/1.1 400 ") && raw.contains(r#"{"error":"cannot read the request: "#),
        "{raw}"
    );
    // The limit itself: a body of 4096 bytes is read, one of 4097 is not.
    for (len, status) in [(4096, "204"), (4097, "413")] {
        let body = format!(r#"{{"spec":"info","pad":"{}"}}"#, "x".repeat(len - 24));
        assert_eq!(body.len(), len);
        let raw = exchange(&format!(
            "PUT /logspec HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n{body}"
        ));
        assert!(
            raw.starts_with(&format!("HTTP/1.1 {status} ")),
            "{len}: {raw}"
        );
    }
    // The service still answers.
    assert_eq!(http_get(&ops, "/healthz").0, 200);
    n.stop_ok();
}

/// A TLS client of the operations service trusting `ca` (a PEM file), presenting the
/// certificate and key files of `client` if given.
fn ops_tls_client(
    ca: &str,
    client: Option<(&str, &str)>,
) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        fabric_gossip_tonic::tls_crypto_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                .expect("cert")
                .map(|c| c.expect("cert"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
    };
    std::sync::Arc::new(config)
}

/// One request (`head`, written as it is) to the operations service at `ops` over a TLS
/// connection of its own: what came back, and how reading ended.
fn ops_tls_request(
    ops: &str,
    config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    head: &str,
) -> (String, std::io::Result<usize>) {
    use tokio_rustls::rustls;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).expect("conn");
    let tcp = std::net::TcpStream::connect(ops).expect("connect");
    tcp.set_read_timeout(Some(EVENT)).expect("timeout");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(head.as_bytes()).expect("write");
    let mut raw = String::new();
    let end = s.read_to_string(&mut raw);
    (raw, end)
}

/// An operations daemon serving HTTPS with peer0's TLS certificate (`f` names its TLS
/// files), and `extra` flags.
fn operations_daemon_over_tls(f: &impl Fn(&str) -> String, extra: &[&str]) -> (Daemon, String) {
    let (cert, key) = (f("server.crt"), f("server.key"));
    let mut args = vec!["--operations-tls-cert", &cert, "--operations-tls-key", &key];
    args.extend_from_slice(extra);
    operations_daemon(&args)
}

/// The operations service over TLS (Fabric's `operations.tls.*`): a TLS client gets its
/// answers; a plaintext request gets none.
#[test]
fn operations_service_over_tls() {
    let (_dir, f) = keygen_with_peer0_tls();
    let (mut n, ops) = operations_daemon_over_tls(&f, &[]);
    // Plaintext HTTP to a TLS port: no HTTP answer.
    let mut plain = std::net::TcpStream::connect(ops.as_str()).expect("connect");
    plain.set_read_timeout(Some(EVENT)).expect("timeout");
    write!(
        plain,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));
    // Over TLS, verified against the TLS CA.
    let config = ops_tls_client(&f("ca.crt"), None);
    let request = |head: &str| ops_tls_request(&ops, &config, head);
    let (raw, _) = request("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains(r#"{"status":"OK","time":""#), "{raw}");
    // Without a client certificate the paths a Fabric peer guards over TLS answer 401,
    // and there are no client CAs here to verify one: scraping and changing the log
    // levels are closed to everyone, as on a Fabric peer so configured.
    for head in [
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /logspec HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "PUT /logspec HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 16\r\n\r\n{\"spec\":\"debug\"}",
    ] {
        let (raw, _) = request(head);
        assert!(raw.starts_with("HTTP/1.1 401"), "{head}: {raw}");
    }
    let (raw, _) = request("GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // A body over the limit is answered 413 over TLS too, the TLS session closed cleanly.
    let (raw, end) =
        request("PUT /logspec HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
    end.expect("an answer, then close_notify");
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    n.stop_ok();
}

/// `--operations-tls-client-ca` requires client certificates: a client without one gets
/// no HTTP answer at all, not even from /healthz; one the CA verifies gets /metrics.
#[test]
fn operations_tls_flags_with_a_client_ca_require_a_client_certificate() {
    let (_dir, f) = keygen_with_peer0_tls();
    let (mut n, ops) =
        operations_daemon_over_tls(&f, &["--operations-tls-client-ca", &f("ca.crt")]);
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let anonymous = ops_tls_client(&f("ca.crt"), None);
    let (raw, end) = ops_tls_request(&ops, &anonymous, healthz);
    assert!(raw.is_empty() && end.is_err(), "{raw:?} {end:?}");
    let verified = ops_tls_client(&f("ca.crt"), Some((&f("server.crt"), &f("server.key"))));
    let metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (raw, _) = ops_tls_request(&ops, &verified, metrics);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    n.stop_ok();
}

/// `--operations-tls-client-cert-optional` with `--operations-tls-client-ca` is the flags'
/// form of a core.yaml's `clientAuthRequired: false` with client CAs: a client without a
/// certificate gets /healthz (a health probe has none) but 401 from /metrics; one the CA
/// verifies gets /metrics. Without the flag TLS itself refused the first (test above), and
/// an open health check with guarded metrics needed a core.yaml.
#[test]
fn operations_tls_client_certificates_can_be_optional_from_the_flags() {
    let (_dir, f) = keygen_with_peer0_tls();
    let (mut n, ops) = operations_daemon_over_tls(
        &f,
        &[
            "--operations-tls-client-ca",
            &f("ca.crt"),
            "--operations-tls-client-cert-optional",
        ],
    );
    let healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let anonymous = ops_tls_client(&f("ca.crt"), None);
    let (raw, _) = ops_tls_request(&ops, &anonymous, healthz);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let (raw, _) = ops_tls_request(&ops, &anonymous, metrics);
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    let verified = ops_tls_client(&f("ca.crt"), Some((&f("server.crt"), &f("server.key"))));
    let (raw, _) = ops_tls_request(&ops, &verified, metrics);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    n.stop_ok();
    // Without a client CA the flag means nothing: refused, naming what it needs.
    let r = run_expect(
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--test-identity",
            "--operations",
            "127.0.0.1:0",
            "--operations-tls-cert",
            &f("server.crt"),
            "--operations-tls-key",
            &f("server.key"),
            "--operations-tls-client-cert-optional",
        ],
        2,
    );
    assert!(
        r.stderr.contains("--operations-tls-client-ca"),
        "{}",
        r.all()
    );
}

/// The operations service over TLS from a core.yaml with `clientAuthRequired: false` and
/// client CAs, as a Fabric peer's: a client without a certificate gets /healthz and
/// /version but 401 from /metrics and /logspec; one with a certificate the CAs verify gets
/// them all. Any client could scrape and change the log levels before.
#[test]
fn operations_over_tls_guard_metrics_and_logspec_as_fabric_does() {
    let (_dir, a_dir) = keygen_peer0();
    let core = a_dir.join("core.yaml");
    std::fs::write(&core, fixture_core_yaml("OrgAMSP")).expect("write core.yaml");
    let tls = |f: &str| {
        a_dir
            .join("tls")
            .join(f)
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let tls_node = || {
        let mut cmd = node_with_config(&core);
        cmd.env("CORE_METRICS_PROVIDER", "prometheus")
            .env("CORE_OPERATIONS_LISTENADDRESS", "127.0.0.1:0")
            .env("CORE_OPERATIONS_TLS_ENABLED", "true")
            .env("CORE_OPERATIONS_TLS_CERT_FILE", tls("server.crt"))
            .env("CORE_OPERATIONS_TLS_KEY_FILE", tls("server.key"));
        cmd
    };
    let (_guard, first, _lines) =
        spawn_listening(tls_node().env("CORE_OPERATIONS_TLS_CLIENTROOTCAS_FILES", tls("ca.crt")));
    let ops = first["operations"].as_str().expect("operations").to_owned();
    let anonymous = ops_tls_client(&tls("ca.crt"), None);
    let verified = ops_tls_client(
        &tls("ca.crt"),
        Some((&tls("server.crt"), &tls("server.key"))),
    );
    let answer = |config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>, head: &str| {
        ops_tls_request(&ops, config, head).0
    };
    let status = |config: &std::sync::Arc<tokio_rustls::rustls::ClientConfig>, head: &str| {
        let raw = answer(config, head);
        raw.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("{head}: {raw:?}"))
    };
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let put = "PUT /logspec HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 15\r\n\r\n{\"spec\":\"info\"}";
    for (config, who, guarded) in [(&anonymous, "anonymous", 401), (&verified, "verified", 200)] {
        assert_eq!(status(config, &get("/healthz")), 200, "{who}");
        assert_eq!(status(config, &get("/version")), 200, "{who}");
        assert_eq!(status(config, &get("/metrics")), guarded, "{who}");
        assert_eq!(status(config, &get("/logspec")), guarded, "{who}");
        let put_status = if guarded == 200 { 204 } else { 401 };
        assert_eq!(status(config, put), put_status, "{who}");
    }
    // The anonymous client's three refusals are counted (and logged at most once a second).
    let m = answer(&verified, &get("/metrics"));
    assert_eq!(
        sample(&m, "fabric_gossip_cli_operations_requests_unauthorized"),
        3,
        "{m}"
    );
    // Without client CAs, clientAuthRequired would let nobody in: the node does not start.
    // Without either, it starts with the guarded paths closed to everyone.
    exits_2_saying(
        tls_node().env("CORE_OPERATIONS_TLS_CLIENTAUTHREQUIRED", "true"),
        "operations.tls.clientAuthRequired needs operations.tls.clientRootCAs.files",
    );
    let (_guard, first, _lines) = spawn_listening(&mut tls_node());
    let ops = first["operations"].as_str().expect("operations");
    let (raw, _) = ops_tls_request(ops, &verified, &get("/metrics"));
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
}

/// GET `path` from `addr` on a new connection, connecting and reading within `limit` in all:
/// (status, body), or what went wrong (a timeout, a closed connection).
fn http_get_within(addr: &str, path: &str, limit: Duration) -> Result<(u16, String), String> {
    let deadline = Instant::now() + limit;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer to GET {path} within {limit:?}"))
    };
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, left()?)
        .map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("request: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("response after {:?}: {e}", limit - left()?)),
        }
    }
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The operations service against connections that never send a complete request (the
/// slow-loris attack: silent sockets, or a request cut before the end of its headers):
/// with every slot taken by them, a health check is still answered at once, as an
/// orchestrator's liveness probe (1 s timeout) needs; they are evicted oldest first,
/// counted on /metrics and logged at most about once a second.
#[test]
fn operations_service_evicts_idle_connections_for_a_health_check() {
    // Allowed for one probe: twice a liveness probe's usual timeout; a slot used to be
    // held 10 s.
    const PROBE: Duration = Duration::from_secs(2);
    const EVICTED: &str = "fabric_gossip_cli_operations_connections_evicted";
    let began = Instant::now();
    let (mut n, ops) = operations_daemon(&["--log-spec", "info"]);
    for idle in [64, 200] {
        let mut held = Vec::new();
        for i in 0..idle {
            let mut s = std::net::TcpStream::connect(ops.as_str()).expect("connect");
            if i % 2 == 1 {
                // Headers begun, never ended.
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .expect("part of a request");
            }
            held.push(s);
        }
        let asked = Instant::now();
        let got = http_get_within(&ops, "/healthz", PROBE);
        let took = asked.elapsed();
        eprintln!("/healthz with {idle} idle connections: {took:?}");
        assert!(
            matches!(&got, Ok((200, body)) if body.starts_with(r#"{"status":"OK","time":""#)),
            "/healthz with {idle} idle connections, after {took:?}: {got:?}"
        );
        let (code, m) = http_get_within(&ops, "/metrics", PROBE).expect("/metrics");
        assert_eq!(code, 200, "{m}");
        assert!(sample(&m, EVICTED) > 0, "{m}");
        drop(held);
    }
    n.stop_ok();
    // Hundreds of evictions, a handful of lines.
    let err = n.stderr();
    let lines = err.lines().filter(|l| l.contains("evicted")).count();
    let secs = began.elapsed().as_secs() as usize;
    assert!(
        lines >= 1 && lines <= secs + 2,
        "{lines} lines in {secs} s:\n{err}"
    );
}

/// The `Version` the operations service's `/version` gives.
fn body_version(ops: &str) -> String {
    let (code, body) = http_get(ops, "/version");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["Version"].as_str().expect("Version").to_owned()
}
