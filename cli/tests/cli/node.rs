//! `node`'s JSON lines and stdin commands: events, the `--payload` forms, `send` and
//! `send_with_ack` (their order, numbering, channel and tag), plain lines, and `stats` with
//! every counter.

use crate::common::*;
use serde_json::Value;
use std::io::Write;

#[test]
fn node_json_lines_and_commands() {
    let mut a = NodeProc::start(&["--listen", "127.0.0.1:0", "--test-identity", "--auto-ack"]);
    let a_addr = a.addr.clone();
    let mut b = NodeProc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--test-identity",
        "--peer",
        &a_addr,
    ]);
    let c = b.wait("connected", is("connected"));
    assert_eq!(c["peer"], a_addr.as_str());
    // --peer opens the connection with an Empty message, which A does not print.
    let e = a.wait("connected", is("connected"));
    assert_eq!(e["peer"], b.addr.as_str());

    let send = format!(
        r#"{{"cmd":"send","to":"{a_addr}","pki_id":"{a_addr}","data":"hi","seq":3,"nonce":9}}"#
    );
    b.send_line(&send);
    let got = a.wait("data", |v| v["event"] == "received" && v["seq"] == 3);
    assert_eq!(got["data_hex"], hex_of("hi"));
    assert_eq!(got["nonce"], 9);
    assert!(
        a.seen
            .iter()
            .all(|v| v["event"] != "received" || v["content"] != "empty"),
        "{:?}",
        a.seen
    );

    // Bad commands are reported on stdout, and the node keeps running.
    b.send_line("{not json");
    let err = b.wait("command_error", is("command_error"));
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("not a JSON command"),
        "{err}"
    );
    b.send_line(r#"{"cmd":"send","to":"nowhere","data":"x","seq":1}"#);
    b.wait("second command_error", |v| {
        v["event"] == "command_error" && v["error"].as_str().unwrap_or("").contains("\"to\"")
    });
    b.send_line(r#"{"cmd":"launch"}"#);
    b.wait("third command_error", |v| {
        v["event"] == "command_error" && v["error"].as_str().unwrap_or("").contains("launch")
    });

    // A peer that is gone is presumed dead when sent to.
    a.stop();
    b.wait("disconnected", is("disconnected"));
    b.send_line(&send);
    let pd = b.wait("presumed_dead", is("presumed_dead"));
    assert_eq!(pd["peer"], a_addr.as_str());
    b.stop();
}

/// `--payload` decides which of `data_hex`, `text` and `len` a `received` line carries; the
/// rest of the line is the same in every form.
#[test]
fn node_payload_forms_print_the_documented_fields() {
    let mut b = NodeProc::start(&["--listen", "127.0.0.1:0", "--test-identity"]);
    // form, fields that must be there, fields that must not.
    let cases: [(&str, &[&str], &[&str]); 4] = [
        ("both", &["data_hex", "text"], &["len"]),
        ("hex", &["data_hex"], &["text", "len"]),
        ("text", &["text"], &["data_hex", "len"]),
        ("none", &["len"], &["data_hex", "text"]),
    ];
    for (i, (form, with, without)) in cases.into_iter().enumerate() {
        let mut a = NodeProc::start(&[
            "--listen",
            "127.0.0.1:0",
            "--test-identity",
            "--payload",
            form,
        ]);
        let seq = 20 + i;
        b.send_line(&format!(
            r#"{{"cmd":"send","to":"{0}","pki_id":"{0}","data":"héllo","seq":{seq},"channel":"ch"}}"#,
            a.addr
        ));
        let got = a.wait("received", |v| v["event"] == "received" && v["seq"] == seq);
        for f in with {
            assert!(got.get(f).is_some(), "--payload {form}: no {f} in {got}");
        }
        for f in without {
            assert!(got.get(f).is_none(), "--payload {form}: {f} in {got}");
        }
        if got.get("data_hex").is_some() {
            assert_eq!(got["data_hex"], hex_of("héllo"), "{got}");
        }
        if got.get("text").is_some() {
            assert_eq!(got["text"], "héllo", "{got}");
        }
        if got.get("len").is_some() {
            assert_eq!(got["len"], "héllo".len(), "{got}");
        }
        assert_eq!(got["from"], b.addr.as_str());
        assert_eq!(got["content"], "data_msg");
        assert_eq!(got["channel"], "ch");
        assert_eq!(got["tag"], "CHAN_AND_ORG");
        a.stop();
    }
    b.stop();
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The field names of a counter struct, from its Debug output (`Name { a: 0, b: [0, 0] }`).
fn debug_fields(debug: &str) -> Vec<String> {
    let body = debug
        .split_once('{')
        .map(|(_, b)| b)
        .unwrap_or_default()
        .trim_end_matches('}');
    let mut depth = 0;
    let mut names = Vec::new();
    let mut cur = String::new();
    for c in body.chars() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                names.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    names.push(cur);
    names
        .iter()
        .filter_map(|f| f.split_once(':').map(|(n, _)| n.trim().to_owned()))
        .filter(|n| !n.is_empty() && n != "..")
        .collect()
}

/// Issue 10: `stats` prints every counter the core and the driver keep (a new counter
/// must be added to the output, or this fails), handshake failures by reason.
#[test]
fn stats_prints_every_counter() {
    let core = debug_fields(&format!("{:?}", fabric_gossip_core::Stats::default()));
    let driver = debug_fields(&format!(
        "{:?}",
        fabric_gossip_tonic::DriverStats::default()
    ));
    assert!(core.len() > 20 && driver.len() > 4, "{core:?} {driver:?}");
    let (mut n, _) = test_daemon(&[]);
    n.send_line(r#"{"cmd":"stats"}"#);
    let st = n.wait("stats", is("stats"));
    for f in &core {
        assert!(
            st.get(f.as_str()).is_some(),
            "core counter {f} missing: {st}"
        );
    }
    for f in &driver {
        let key = format!("driver_{f}");
        assert!(
            st.get(f.as_str()).is_some() || st.get(key.as_str()).is_some(),
            "driver counter {f} missing: {st}"
        );
    }
    let reasons = st["handshake_failures"]
        .as_object()
        .expect("handshake_failures by reason");
    for label in fabric_gossip_core::HandshakeError::LABELS {
        assert!(reasons.contains_key(label), "reason {label}: {st}");
    }
    assert!(st.get("output_dropped").is_some(), "{st}");
}

/// Issue 10: `send_with_ack` lines leave in the order typed (each used to be started by a
/// task of its own, which the runtime ran in any order).
#[test]
fn send_with_ack_lines_leave_in_the_order_typed() {
    let (mut a, a_addr, mut b) = connected_pair(&["--auto-ack"]);
    const N: u64 = 300;
    let mut batch = String::new();
    for seq in 1..=N {
        batch.push_str(&format!(
            r#"{{"cmd":"send_with_ack","to":"{a_addr}","data":"o","seq":{seq},"timeout_ms":10000}}"#
        ));
        batch.push('\n');
    }
    b.stdin
        .as_mut()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("write");
    b.stdin.as_mut().expect("stdin").flush().expect("flush");
    let mut order = Vec::new();
    while order.len() < N as usize {
        let v = a.wait("received", |v| {
            v["event"] == "received" && v["content"] == "data_msg"
        });
        order.push(v["seq"].as_u64().expect("seq"));
        a.seen.clear();
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(order, expected);
}

/// A plain line is a DataMessage to every connected peer, numbered in the node's own
/// sequence, which sends without "seq" share; with no peer connected and no `--peer` to
/// send it to, it is refused, saying so.
#[test]
fn plain_lines_go_to_every_connected_peer_numbered_with_the_sends() {
    let (mut lone, _) = test_daemon(&[]);
    lone.send_line("anyone?");
    let err = lone.wait("command_error", is("command_error"));
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("no connected peer") && e.contains("no --peer was given")),
        "{err}"
    );
    let (mut a, a_addr, mut b) = connected_pair(&[]);
    b.send_line("hello");
    let sent = b.wait("sent", is("sent"));
    assert_eq!(
        sent,
        serde_json::json!({"event": "sent", "seq": 1, "to": [a_addr]})
    );
    b.send_line(&format!(
        r#"{{"cmd":"send","to":"{a_addr}","data":"then"}}"#
    ));
    b.send_line("again");
    for (text, seq) in [("hello", 1), ("then", 2), ("again", 3)] {
        let got = a.wait(text, |v| is("received")(v) && v["text"] == text);
        assert_eq!(got["seq"], seq, "{got}");
    }
}

/// Issue 13: `send` without "seq" (the node numbers it), with "channel" and "tag" (a Fabric
/// peer refuses a channel's DataMessage not tagged CHAN_AND_ORG).
#[test]
fn send_commands_take_channel_and_tag_and_number_themselves() {
    let (mut a, a_addr) = test_daemon(&["--auto-ack"]);
    let (mut b, _) = test_daemon(&[]);
    b.send_line(&format!(
        r#"{{"cmd":"send","to":"{a_addr}","data":"first","channel":"mychannel"}}"#
    ));
    b.send_line(&format!(
        r#"{{"cmd":"send","to":"{a_addr}","data":"second","channel":"mychannel","tag":"chan_only"}}"#
    ));
    b.send_line(&format!(
        r#"{{"cmd":"send_with_ack","to":"{a_addr}","data":"third","timeout_ms":10000}}"#
    ));
    b.send_line(&format!(
        r#"{{"cmd":"send","to":"{a_addr}","data":"x","tag":"LOUD"}}"#
    ));
    let first = a.wait("first", |v| v["text"] == "first");
    assert_eq!(first["channel"], "mychannel", "{first}");
    assert_eq!(first["tag"], "CHAN_AND_ORG", "{first}");
    assert_eq!(first["seq"], 1, "{first}");
    let second = a.wait("second", |v| v["text"] == "second");
    assert_eq!(second["tag"], "CHAN_ONLY", "{second}");
    assert_eq!(second["seq"], 2, "{second}");
    let third = a.wait("third", |v| v["text"] == "third");
    assert!(
        third.get("channel").is_none() && third.get("tag").is_none(),
        "{third}"
    );
    let ack = b.wait("ack_result", is("ack_result"));
    assert_eq!(
        (ack["ok"].clone(), ack["seq"].clone()),
        (Value::Bool(true), 3.into())
    );
    let err = b.wait("command_error", is("command_error"));
    assert!(
        err["error"].as_str().unwrap_or("").contains("LOUD"),
        "{err}"
    );
}

/// README walk-through finding 4: `printf 'hello\n' | node --peer X --exit-on-eof` read the
/// line before the `--peer` connection was up, refused it ("use --peer", which was given)
/// and never sent it. A plain line read while no peer is connected goes to the `--peer`
/// endpoints, queued behind the dial as `{"cmd":"send","to":X}` is; with no `--peer` the
/// refusal says so.
#[test]
fn a_piped_plain_line_waits_for_the_peer_connection() {
    let (mut receiver, addr) = test_daemon(&[]);
    let args = [&TEST_NODE[..], &["--peer", &addr, "--exit-on-eof"]].concat();
    let mut sender = Daemon::start(&args, true, true, None);
    // Written at once, as a pipe would: read before the dial to `addr` is done.
    sender.send_line("hello");
    drop(sender.stdin.take());
    assert_eq!(sender.exit_within(EVENT), Some(0));
    let got = receiver.wait("received hello", |v| {
        is("received")(v) && v["text"] == "hello"
    });
    assert_eq!(got["seq"], 1, "{got}");
    let sent = sender.wait("sent", is("sent"));
    assert_eq!(sent["to"], serde_json::json!([addr]), "{sent}");
    assert!(
        !sender.seen.iter().any(is("command_error")),
        "{:?}",
        sender.seen
    );
    let log = sender.stderr();
    assert!(log.contains("dropped 0"), "{log}");
    receiver.stop_ok();
}
