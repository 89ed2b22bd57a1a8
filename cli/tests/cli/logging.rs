//! Logs on stderr: a Fabric logging spec (`--log-spec`, `FABRIC_LOGGING_SPEC`), `RUST_LOG`,
//! and `FABRIC_LOGGING_FORMAT`.

use crate::common::*;
use serde_json::Value;
use std::process::{Command, Stdio};

/// Runs the binary with `args`, no stdin and no logging variables but `env`: its exit code
/// and stderr.
fn run_env(args: &[&str], env: Option<(&str, &str)>) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("FABRIC_LOGGING_SPEC")
        .env_remove("FABRIC_LOGGING_FORMAT");
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node that stops at once (its stdin is empty).
const EOF_NODE: [&str; 5] = [
    "node",
    "--listen",
    "127.0.0.1:0",
    "--test-identity",
    "--exit-on-eof",
];

/// Logs go to stderr, filtered by a Fabric logging spec (`--log-spec` or
/// `FABRIC_LOGGING_SPEC`); a bad spec is a usage error naming it.
#[test]
fn logs_are_filtered_by_a_fabric_logging_spec() {
    let node = EOF_NODE;
    // Default: info, so the listening line and the summary, no debug.
    let (code, err) = run_env(&node, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("INFO") && err.contains("listening on"),
        "{err}"
    );
    assert!(!err.contains("DEBUG"), "{err}");
    // The node's own logger at debug, everything else at error: a debug line of the CLI.
    let (code, err) = run_env(&node, Some(("FABRIC_LOGGING_SPEC", "nodeCmd=debug:error")));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("DEBUG") && err.contains("open-file limit"),
        "{err}"
    );
    // The flag wins over the variable; warning hides the info lines.
    let mut quiet = node.to_vec();
    quiet.extend(["--log-spec", "warning"]);
    let (code, err) = run_env(&quiet, Some(("FABRIC_LOGGING_SPEC", "debug")));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    let mut bad = node.to_vec();
    bad.extend(["--log-spec", "gossip.comm=loud"]);
    let (code, err) = run_env(&bad, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--log-spec") && err.contains("loud"), "{err}");
}

/// Without a Fabric spec, `RUST_LOG` filters (an empty one is no filter: the default
/// holds); `FABRIC_LOGGING_FORMAT` picks Fabric's `json` or `logfmt` encoding of the lines.
#[test]
fn rust_log_filters_and_the_fabric_logging_format_encodes_the_lines() {
    let (code, err) = run_env(&EOF_NODE, Some(("RUST_LOG", "fabric_gossip_cli=debug")));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("DEBUG") && err.contains("log filter from RUST_LOG"),
        "{err}"
    );
    let (code, err) = run_env(&EOF_NODE, Some(("RUST_LOG", " ")));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("listening on") && !err.contains("DEBUG"),
        "{err}"
    );
    let (code, err) = run_env(&EOF_NODE, Some(("FABRIC_LOGGING_FORMAT", "json")));
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["name"] == "nodeCmd"
            && v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on"))),
        "{err}"
    );
    let (code, err) = run_env(&EOF_NODE, Some(("FABRIC_LOGGING_FORMAT", "logfmt")));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("level=")) && err.contains(r#" msg="listening on "#),
        "{err}"
    );
}

/// `gossip.discovery=debug`, as an operator turns it on to see membership at work, shows
/// the membership messages received (a day-2 trial found not one line: only member events,
/// at info).
#[test]
fn discovery_at_debug_shows_the_membership_messages() {
    let node = |extra: &[&str]| {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--test-identity",
            "--log-spec",
            "gossip.discovery=debug:warning",
            "--alive-interval",
            "300ms",
        ];
        args.extend(extra);
        listening_daemon(&args)
    };
    let (mut a, a_addr) = node(&["--membership"]);
    let (mut b, _) = node(&["--bootstrap", a_addr.as_str()]);
    b.wait("joined", |v| v["event"] == "bootstrap_joined");
    let (a_log, b_log) = (stop_for_log(&mut a), stop_for_log(&mut b));
    for (log, line) in [
        (&a_log, "membership request received"),
        (&b_log, "membership response received"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("DEBUG") && l.contains(line)),
            "{line:?} in\n{log}"
        );
    }
}
