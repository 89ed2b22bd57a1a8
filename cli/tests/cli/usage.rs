//! The command line itself: clear errors for bad flags and files (status 2), the help texts,
//! shell completions, and a closed stdout said in one line rather than a panic (from an
//! operator's audit of the one-shot commands).

use crate::common::*;
use crate::fixtures::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Each case: arguments, and what stderr must name. All exit with status 2.
#[test]
fn bad_flags_and_files_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let d = dir.path().to_str().expect("utf-8");
    let peer = format!("{d}/peerOrganizations/a.example.com/peers/peer0.a.example.com");
    let other_key =
        format!("{d}/peerOrganizations/b.example.com/peers/peer0.b.example.com/tls/server.key");
    let not_pem = format!("{d}/not-a-pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    // A PEM block whose bytes are no certificate: read as PEM, refused by TLS at start, and
    // not to be explained as a key that does not match.
    let not_a_cert = format!("{d}/not-a-cert.pem");
    let block = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(&not_a_cert, block).expect("write");
    // Over the 4 MiB that PEM files may hold (sparse), and a FIFO, which would block.
    let big = format!("{d}/big.pem");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((4 << 20) + 1))
        .expect("sparse file");
    let big_trust = format!("OrgBMSP={big}");
    let fifo = format!("{d}/fifo.pem");
    #[cfg(unix)]
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let cert = format!("{peer}/tls/server.crt");
    let key = format!("{peer}/tls/server.key");
    let ca = format!("{peer}/tls/ca.crt");
    let msp = format!("{peer}/msp");
    let listen = ["node", "--listen", "127.0.0.1:0"];
    let trust = |t: &'static str| {
        let msp_flags = [
            "--msp-dir",
            msp.as_str(),
            "--msp-id",
            "OrgAMSP",
            "--trust",
            t,
        ];
        [&listen[..], &msp_flags].concat()
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            listen.to_vec(),
            vec!["no identity", "--test-identity", "--msp-dir"],
        ),
        (
            vec!["node", "--listen", "nowhere", "--test-identity"],
            vec!["--listen", "nowhere"],
        ),
        (vec!["node", "--test-identity"], vec!["--listen"]),
        (
            [&listen[..], &["--test-identity", "--peer", "no-port"]].concat(),
            vec!["--peer", "no-port"],
        ),
        (
            [&listen[..], &["--test-identity", "--tls-cert", &cert]].concat(),
            vec!["--tls-key"],
        ),
        // No CA to check peers' certificates against: neither --tls-ca nor a channel block.
        (
            [
                &listen[..],
                &["--test-identity", "--tls-cert", &cert, "--tls-key", &key],
            ]
            .concat(),
            vec![
                "--tls-cert",
                "needs at least one --tls-ca",
                "--channel-config",
            ],
        ),
        (
            tls_node("/nonexistent.pem", &key, &ca),
            vec!["--tls-cert /nonexistent.pem", "No such file"],
        ),
        (
            tls_node(&not_pem, &key, &ca),
            vec!["--tls-cert", &not_pem, "no CERTIFICATE"],
        ),
        (
            tls_node(&cert, &not_pem, &ca),
            vec!["--tls-key", &not_pem, "private key"],
        ),
        (tls_node(&cert, &key, &not_pem), vec!["--tls-ca", &not_pem]),
        (
            tls_node(&cert, &other_key, &ca),
            vec!["--tls-key", &other_key, "does not match", &cert],
        ),
        (
            tls_node(&cert, &key, &not_a_cert),
            vec!["TLS (", "unusable CA certificate"],
        ),
        (
            tls_node(&big, &key, &ca),
            vec!["--tls-cert", &big, "larger than 4194304 bytes"],
        ),
        (
            [
                &listen[..],
                &[
                    "--test-identity",
                    "--operations",
                    "127.0.0.1:0",
                    "--operations-tls-cert",
                    &cert,
                    "--operations-tls-key",
                    &big,
                ],
            ]
            .concat(),
            vec!["--operations-tls-key", &big, "larger than 4194304 bytes"],
        ),
        (
            [
                &listen[..],
                &[
                    "--msp-dir",
                    &msp,
                    "--msp-id",
                    "OrgAMSP",
                    "--trust",
                    &big_trust,
                ],
            ]
            .concat(),
            vec!["--trust", &big, "larger than 4194304 bytes"],
        ),
        (
            [
                &listen[..],
                &["--msp-dir", "/nonexistent-msp", "--msp-id", "OrgAMSP"],
            ]
            .concat(),
            vec!["--msp-dir /nonexistent-msp"],
        ),
        (
            [&listen[..], &["--msp-dir", d, "--msp-id", "OrgAMSP"]].concat(),
            vec!["--msp-dir", "signcerts"],
        ),
        (
            [&listen[..], &["--msp-dir", &msp]].concat(),
            vec!["--msp-id"],
        ),
        (trust("OrgBMSP"), vec!["--trust", "MSPID=DIR"]),
        (
            trust("OrgBMSP=/nonexistent-b"),
            vec!["--trust OrgBMSP=/nonexistent-b", "/nonexistent-b"],
        ),
        (
            [
                &listen[..],
                &["--test-identity", "--msp-dir", &msp, "--msp-id", "OrgAMSP"],
            ]
            .concat(),
            vec!["--test-identity", "cannot be used with"],
        ),
        (vec!["handshake", "127.0.0.1:7051"], vec!["no identity"]),
        (
            vec![
                "handshake",
                "127.0.0.1:7051",
                "--msp-dir",
                &msp,
                "--msp-id",
                "OrgAMSP",
                "--expect-pki-id",
                "not-hex",
            ],
            vec!["--expect-pki-id", "hex"],
        ),
        (vec!["ping", "no-port"], vec!["no-port", "HOST:PORT"]),
        (
            vec!["keygen", "--out", d, "--org", "OrgX"],
            vec!["--org", "MSPID:DOMAIN:PEERS"],
        ),
        (
            vec!["keygen", "--out", d, "--org", "X:bad_domain:1"],
            vec!["--org", "bad_domain"],
        ),
        (
            vec![
                "keygen",
                "--out",
                d,
                "--org",
                "X:x.com:1",
                "--org",
                "X:y.com:1",
            ],
            vec!["--org", "X given twice"],
        ),
        (vec!["demo", "--nodes", "2"], vec!["--nodes"]),
        // Found by an operator (2026-12-03): a zero probe bound, a sim that would have
        // asked for 29 GB (it aborted with a backtrace), and a layer setting named by its
        // field rather than its flag.
        (
            vec!["ping", "127.0.0.1:1", "--timeout", "0s"],
            vec!["--timeout", "more than zero"],
        ),
        (
            vec!["sim", "--nodes", "100000000"],
            vec!["--nodes", "at most"],
        ),
        (
            vec!["sim", "--msg-size", "999999999999"],
            vec!["--msg-size", "at most"],
        ),
        (
            [
                &listen[..],
                &[
                    "--test-identity",
                    "--membership",
                    "--alive-expiration-check-interval",
                    "30s",
                ],
            ]
            .concat(),
            vec!["--alive-expiration-check-interval 30s must not exceed --alive-expiration 25s"],
        ),
    ];
    #[cfg(unix)]
    let cases = [
        cases,
        vec![(
            tls_node(&cert, &key, &fifo),
            vec!["--tls-ca", &fifo, "not a regular file (a FIFO)"],
        )],
    ]
    .concat();
    for (args, needles) in cases {
        let r = run(&args, EVENT);
        assert_eq!(
            r.code,
            Some(2),
            "{args:?} should fail with status 2\n{}",
            r.all()
        );
        for n in needles {
            assert!(
                r.stderr.contains(n),
                "{args:?}: stderr should mention {n:?}\n{}",
                r.all()
            );
        }
        assert!(
            r.stdout.is_empty(),
            "{args:?}: nothing on stdout\n{}",
            r.all()
        );
    }
}

#[test]
fn node_help_names_the_contract_flags() {
    let r = run_expect(&["node", "--help"], 0);
    for flag in [
        "--test-identity",
        "--tls-cert",
        "--msp-dir",
        "--trust",
        "--auto-ack",
        "--peer",
    ] {
        assert!(
            r.stdout.contains(flag),
            "node --help lacks {flag}\n{}",
            r.all()
        );
    }
}

/// Issue 13: shell completions.
#[test]
fn completions_for_the_usual_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run_expect(&["completions", shell], 0);
        assert!(r.stdout.contains("fabric-gossip"), "{shell}");
        assert!(
            r.stdout.contains("log-spec") && r.stdout.contains("exit-on-eof"),
            "{shell}"
        );
    }
}

/// Runs the binary with `args`, its stdout a pipe whose read end is already closed (a
/// reader gone away before the first byte), killing it at [`EVENT`]; exit code and stderr.
fn run_with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn fabric-gossip {args:?}: {e}"));
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // A demo under CI's load takes a while: the demo tests' own bound.
    let limit = Duration::from_secs(60);
    let status = exit_within(&mut child, limit);
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.is_some(),
        "fabric-gossip {args:?} still running after {limit:?}\n{stderr}"
    );
    (status.and_then(|s| s.code()), stderr)
}

/// Audit finding 1: every one-shot command used to panic (status 101) on a closed stdout
/// (`| (exit 0)`, `| head`); `completions` exited 0. Now each says so in one line and
/// exits 2, as `sim` did.
#[test]
fn one_shot_commands_report_a_closed_stdout_instead_of_panicking() {
    let (_node, addr) = test_daemon(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let org = dir.path().join("peerOrganizations/a.example.com");
    let trust = format!("OrgAMSP={}", org.join("msp").display());
    let peer_msp = org.join("peers/peer0.a.example.com/msp");
    let peer_msp = peer_msp.to_str().expect("utf-8");
    let out = dir.path().join("more");
    let out = out.to_str().expect("utf-8");
    let cases: [&[&str]; 11] = [
        &["ping", &addr],
        &["ping", &addr, "--json", "--count", "2"],
        &["handshake", &addr, "--test-identity"],
        &["handshake", &addr, "--test-identity", "--json"],
        &["validate", "--trust", &trust, peer_msp],
        &["demo", "--quiet", "--nodes", "3", "--messages", "1"],
        &["demo", "--json", "--nodes", "3", "--messages", "1"],
        &["keygen", "--out", out],
        &["completions", "bash"],
        &["sim", "--nodes", "3", "--duration", "1s"],
        &["sim", "--nodes", "3", "--duration", "1s", "--json"],
    ];
    for args in cases {
        let (code, stderr) = run_with_closed_stdout(args);
        assert!(!stderr.contains("panicked"), "{args:?}\n{stderr}");
        assert_eq!(code, Some(2), "{args:?}\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(
            errors.len() == 1
                && errors[0].starts_with("error: writing the ")
                && errors[0].contains("Broken pipe"),
            "{args:?}\n{stderr}"
        );
    }
}

/// README walk-through finding 17: `node --help` lists every event the README documents
/// (with presumed_dead's and handshake_failed's fields), `--tls-cert` names the
/// --channel-config alternative, and `ping --interval` states its default once.
#[test]
fn the_help_lists_every_event_and_states_defaults_once() {
    let node = run_expect(&["node", "--help"], 0).stdout;
    for text in [
        r#"{"event":"identity_switch","peer":PKI,"new_peer":PKI,"endpoint":E}"#,
        r#"{"event":"stats","#,
        r#"{"event":"members","#,
        r#"{"event":"trust_reloaded","by":BY"#,
        r#"{"event":"trust_reload_failed","by":BY"#,
        r#""error":TEXT,"inbound":BOOL}"#,
        r#"{"event":"presumed_dead","peer":PKI,"endpoint":E,"reason":TEXT}"#,
        "Needs --tls-key, and --tls-ca or a --channel-config whose organizations have TLS CAs",
    ] {
        assert!(node.contains(text), "node --help lacks {text}\n{node}");
    }
    let ping = run_expect(&["ping", "--help"], 0).stdout;
    assert!(!ping.contains("default: none"), "{ping}");
    assert!(ping.contains("[default: 0s]"), "{ping}");
    let handshake = run_expect(&["handshake", "--help"], 0).stdout;
    assert!(
        handshake.contains("--expect-pki-id <HEX|ENDPOINT>"),
        "{handshake}"
    );
    assert!(
        handshake.contains("only under --test-identity"),
        "{handshake}"
    );
}
