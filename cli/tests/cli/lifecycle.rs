//! A node operated as a daemon (issues 10 and 13): output that never blocks, signals, the end
//! of stdin, `stop` and the sends it waits for, the open-file limit.

use crate::common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// Issue 10: a reader that stops reading stdout used to freeze the node (the command loop
/// blocked in `write`), so even `stop` went unanswered.
#[test]
fn node_output_never_blocks_commands() {
    let mut n = Daemon::start(
        &["--listen", "127.0.0.1:0", "--test-identity"],
        true,
        false,
        None,
    );
    let mut stdin = n.stdin.take().expect("stdin");
    // Far more than a pipe and the output queue (8,192 lines) hold; written from a
    // thread, since a frozen node would stop reading stdin too.
    let writer = std::thread::spawn(move || {
        for _ in 0..12_000 {
            if writeln!(stdin, r#"{{"cmd":"stats"}}"#).is_err() {
                return;
            }
        }
        let _ = writeln!(stdin, r#"{{"cmd":"stop"}}"#);
        let _ = stdin.flush();
    });
    // A frozen node never exits; a working one ends within seconds, but 12,000 commands,
    // each answered with a stats line, took over 10 s on a loaded 2-core machine (a build
    // running beside the tests).
    assert_eq!(n.exit_within(Duration::from_secs(60)), Some(0));
    let _ = writer.join();
    let err = n.stderr();
    let dropped = err
        .split("output lines dropped ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no drop count in the summary:\n{err}"));
    assert!(dropped > 0, "{err}");
    // The last lines, `stopped` among them, could not be written either; the log says so.
    assert!(err.contains("stdout is not being read"), "{err}");
}

/// Issue 10: SIGTERM (systemd, docker stop) stops like SIGINT: the "stopped" line and the
/// summary, exit status 0.
#[test]
fn node_stops_cleanly_on_sigterm() {
    for sig in ["-TERM", "-INT"] {
        let (mut n, _) = test_daemon(&[]);
        signal(&n.pid(), sig);
        assert_eq!(n.exit_within(EVENT), Some(0), "{sig}");
        n.wait("stopped", is("stopped"));
        let err = n.stderr();
        assert!(err.contains("stopped; sent"), "{sig}: {err}");
        // Its stdout is read: the last lines were written.
        assert!(!err.contains("stdout is not being read"), "{sig}: {err}");
    }
}

/// Issue 10: stop completes within 1 s, also with a connected peer and a connection that
/// never said anything (the server's graceful shutdown waited 2 s for it).
#[test]
fn node_stop_takes_under_a_second() {
    let (mut a, a_addr, mut b) = connected_pair(&[]);
    a.wait("connected", is("connected"));
    let idle = std::net::TcpStream::connect(a_addr.as_str()).expect("connect");
    let t0 = Instant::now();
    a.stop_ok();
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    a.wait("stopped", is("stopped"));
    b.wait("disconnected", is("disconnected"));
    drop(idle);
}

/// Issue 10: a node is a daemon: stdin at end of file (`&` in a script, systemd, a
/// container) does not stop it; `--exit-on-eof` asks for that.
#[test]
fn node_runs_on_after_end_of_stdin_unless_asked() {
    let mut n = Daemon::start(&TEST_NODE, false, true, None);
    let addr = n.wait("listening", is("listening"))["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    // Still serving after its stdin ended.
    run_expect(&["ping", &addr], 0);
    assert!(n.child.try_wait().expect("try_wait").is_none());
    signal(&n.pid(), "-TERM");
    assert_eq!(n.exit_within(EVENT), Some(0));
    n.wait("stopped", is("stopped"));

    let mut n = Daemon::start(
        &[&TEST_NODE[..], &["--exit-on-eof"]].concat(),
        false,
        true,
        None,
    );
    assert_eq!(n.exit_within(EVENT), Some(0));
    n.wait("stopped", is("stopped"));
}

/// `stop` waits for the queued messages at most as long as a send to a peer being dialled
/// may take (the dial timeout and two connection timeouts: 7 s by default), then stops and
/// says so, when a peer that stopped reading keeps them unsent.
#[test]
fn a_stop_waits_for_a_peer_that_stopped_reading_as_long_as_a_dial_may_take() {
    let (a, _, mut b) = connected_pair(&[]);
    signal(&a.pid(), "-STOP");
    // Far more than the connection's flow-control windows and socket buffers hold.
    let line = "x".repeat(1 << 20);
    for _ in 0..32 {
        b.send_line(&line);
    }
    b.send_line(r#"{"cmd":"stop"}"#);
    let code = b.exit_within(EVENT);
    signal(&a.pid(), "-CONT");
    assert_eq!(code, Some(0));
    let log = b.stderr();
    assert!(log.contains("messages still unsent after 7 s"), "{log}");
}

/// A script's last sends go out before `--exit-on-eof` (or `stop`) stops the node, even to
/// a peer it must dial first: before, the node stopped at once and dropped them (3 runs of
/// 3), and its summary said nothing was dropped. A send that cannot go out is counted in
/// the summary.
#[test]
fn the_last_sends_of_a_script_go_out_before_it_stops() {
    // A node with --exit-on-eof given `script` on stdin, then its end: its stderr.
    let run_script = |script: &str| {
        let mut sender = Daemon::start(
            &[&TEST_NODE[..], &["--exit-on-eof"]].concat(),
            true,
            true,
            None,
        );
        sender.wait("listening", is("listening"));
        for line in script.lines() {
            sender.send_line(line);
        }
        drop(sender.stdin.take());
        assert_eq!(sender.exit_within(EVENT), Some(0));
        sender.stderr()
    };
    let (mut receiver, addr) = test_daemon(&[]);
    for stop in ["", "{\"cmd\":\"stop\"}\n"] {
        let log = run_script(&format!(
            "{{\"cmd\":\"send\",\"to\":\"{addr}\",\"data\":\"x\"}}\n\
             {{\"cmd\":\"send\",\"to\":\"{addr}\",\"data\":\"y\"}}\n{stop}"
        ));
        for data in ["x", "y"] {
            receiver.wait(&format!("received {data}"), |v| {
                is("received")(v) && v["text"] == data
            });
        }
        assert!(log.contains("stopped; sent 2, dropped 0"), "{log}");
    }
    // Nobody listens (port 1, privileged and unused: a port freed by this test could be
    // taken by another test's node): the message is dropped, and the summary says so.
    let log = run_script("{\"cmd\":\"send\",\"to\":\"127.0.0.1:1\",\"data\":\"x\"}");
    assert!(log.contains("stopped; sent 0, dropped 1"), "{log}");
    receiver.stop_ok();
}

/// Issue 10: the node raises its soft open-file limit to the hard limit (1,024 is the usual
/// soft default, too few for a peer under a connection flood).
#[cfg(target_os = "linux")]
#[test]
fn node_raises_its_open_file_limit() {
    let mut n = Daemon::start(
        &TEST_NODE,
        true,
        true,
        Some(r#"ulimit -S -n 256 && exec "$@""#),
    );
    n.wait("listening", is("listening"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", n.pid())).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft limit not raised: {line}");
    n.stop_ok();
}
