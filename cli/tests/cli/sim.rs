//! `sim --json`: one object, and a trace file it cannot write refused before anything runs.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn sim_json_is_one_object() {
    let r = run(
        &[
            "sim",
            "--nodes",
            "3",
            "--seed",
            "7",
            "--duration",
            "1s",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{}", r.all());
    let v: Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", r.all()));
    assert_eq!(v["result"], "held", "{v}");
    // `ok`, as ping, handshake and demo have it: true exactly when the status is 0.
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["seed"], 7, "{v}");
    assert!(v["messages"]["delivered"].as_u64() > Some(0), "{v}");
    assert_eq!(v["trace"]["sha256"].as_str().map(str::len), Some(64), "{v}");
    // The trace cannot be written: status 2 before anything runs, the file named, nothing
    // on stdout (as for every bad file).
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("no/such/folder/trace");
    let args = [
        "sim",
        "--nodes",
        "3",
        "--duration",
        "1s",
        "--json",
        "--trace",
        bad.to_str().expect("utf-8"),
    ];
    let r = run_expect(&args, 2);
    assert!(r.stdout.is_empty(), "{}", r.all());
    assert!(r.stderr.contains("no/such/folder/trace"), "{}", r.all());
}

/// The simulated nodes' warnings (a bootstrap attempt failed, under faults) are not printed
/// by default: with the wall clock's time they read as real dials (an operator's trial).
/// Asked for, they come.
#[test]
fn sim_keeps_the_simulated_nodes_warnings_to_itself_unless_asked() {
    let args = [
        "sim",
        "--scenario",
        "membership",
        "--nodes",
        "20",
        "--seed",
        "7",
    ];
    let r = run(&args, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(
        !r.stderr.contains("bootstrap attempt failed"),
        "{}",
        r.all()
    );
    let loud = [&args[..], &["--log-spec", "warning"]].concat();
    let r = run(&loud, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{}", r.all());
    assert!(r.stderr.contains("bootstrap attempt failed"), "{}", r.all());
}
