//! `demo`: it passes, prints each phase after the events it waited for, and `--json` is one
//! object.

use crate::common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn demo_passes() {
    let r = run(&["demo", "--quiet"], Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "demo failed\n{}", r.all());
    assert!(r.stdout.contains("DEMO PASSED"), "{}", r.all());
    assert!(!r.stdout.contains("FAILED"), "{}", r.all());
    // The table has one row per node, and the stopped node is marked as restarted.
    assert!(r.stdout.contains("node4*"), "{}", r.all());
    assert!(r.stdout.contains("presumed-dead"), "{}", r.all());
    // --quiet keeps the phases and leaves out the per-node events.
    assert!(r.stdout.contains("] == 8. all-to-all again"), "{}", r.all());
    assert!(
        !r.stdout.contains("listening on") && !r.stdout.contains(": connected to"),
        "{}",
        r.all()
    );
}

/// The progress lines of a whole demo without `--quiet`, timestamps cut off.
fn demo_progress(r: &Run) -> Vec<&str> {
    r.stdout
        .lines()
        .filter_map(|l| l.strip_prefix('[').and_then(|l| l.split_once("s] ")))
        .map(|(_, line)| line.trim_start())
        .collect()
}

/// Where `line` is among `lines` (the first one equal to it, or starting with it when it
/// ends in `…`); fails with the whole output if it is missing.
fn line_at(lines: &[&str], line: &str, r: &Run) -> usize {
    let found = match line.strip_suffix('…') {
        Some(prefix) => lines.iter().position(|l| l.starts_with(prefix)),
        None => lines.iter().position(|l| *l == line),
    };
    found.unwrap_or_else(|| panic!("no line {line:?}\n{}", r.all()))
}

/// The milliseconds a line "... in N ms" reports.
fn ms_of(line: &str) -> u64 {
    let n = line.strip_suffix(" ms").and_then(|l| l.rsplit_once(" in "));
    n.and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line:?}"))
}

#[test]
fn demo_prints_each_phase_with_its_counts_after_the_events_it_waited_for() {
    let r = run(&["demo"], Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "demo failed\n{}", r.all());
    let lines = demo_progress(&r);
    let at = |line: &str| line_at(&lines, line, &r);
    // The phases and their checks, in order, with the counts of 5 nodes and 5 messages.
    let phases = [
        "== 1. starting 5 nodes",
        "node0: peer0.org1.example.com of Org1MSP listening on 127.0.0.1:…",
        "node4: peer1.org2.example.com of Org2MSP listening on 127.0.0.1:…",
        "ok: 5 nodes started with MSP identities of Org1MSP and Org2MSP and mutual TLS",
        "== 2. handshakes: each node sends a first message to the nodes after it…",
        "10 connections in …",
        "ok: all 10 pairs connected, each side authenticated by MSP identity and TLS \
         certificate",
        "== 3. all-to-all: every node sends 5 messages to every other node",
        "delivered 100 messages in …",
        "ok: every node received exactly 5 messages from each of the other 4",
        "== 4. stopping node4 (Org2MSP)",
        "ok: every other node saw its connection to node4 close",
        "== 5. the others send 5 messages to each other and to node4, which is down",
        "ok: every other node reported node4 presumed dead after sending to it",
        "ok: the other 4 nodes kept exchanging messages meanwhile",
        "== 6. restarting node4 on 127.0.0.1:…",
        "ok: node4 restarted on the same address and PKI-ID",
        "== 7. the others send to node4 again",
        "delivered 4 messages in …",
        "ok: every other node reconnected to node4",
        "== 8. all-to-all again, node4 included: every node sends 5 messages to every other \
         node",
        "ok: messages flow again: every node received exactly 5 messages from each of the \
         other 4",
        "== 9. membership: the 5 peers start again as members of a gossip network (Fabric's \
         membership layer, a heartbeat every 250 ms): each joins through its organization's \
         first peer, node3 reaches Org1MSP through node0 as an anchor peer",
        "full membership in …",
        "ok: every node but node0 joined through its bootstrap or anchor peer, and every node \
         lists the other 4 alive (of 5 peers: 3 of Org1MSP, 2 of Org2MSP)",
        "== 10. stopping node4's membership node: the others must declare it dead",
        "ok: every other node declared node4 dead",
        "== 11. restarting node4's membership node: it joins again, a new incarnation",
        "ok: node4 is back: every other node lists its new incarnation alive, and every node \
         lists every other",
        "ok: no message corrupted, misattributed or unexpected; every peer had the expected \
         MSP ID; every member listed was a demo peer of its own organization",
    ];
    let places: Vec<usize> = phases.iter().map(|p| at(p)).collect();
    assert!(
        places.windows(2).all(|w| w[0] < w[1]),
        "{places:?}\n{}",
        r.all()
    );
    // A node is shown with the first 6 bytes of its PKI-ID.
    let pki = lines[places[1]].rsplit_once("PKI-ID ").expect("PKI-ID").1;
    assert!(
        pki.len() == 15 && pki.ends_with("...") && pki[..12].bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        r.all()
    );
    // Each check comes after the events it waited for.
    let ok_connected = places[6];
    for (i, j) in [(0, 1), (1, 0), (3, 4), (4, 3)] {
        let (org, way) = (
            if j < 3 { 1 } else { 2 },
            if i < j { "outbound" } else { "inbound" },
        );
        assert!(
            at(&format!(
                "node{i}: connected to node{j} (Org{org}MSP, {way}, mutual TLS)"
            )) < ok_connected,
            "{}",
            r.all()
        );
    }
    for i in 0..4 {
        assert!(
            (places[10]..places[11])
                .contains(&at(&format!("node{i}: connection to node4 closed (…"))),
            "{}",
            r.all()
        );
        assert!(
            (places[12]..places[13]).contains(&at(&format!(
                "node{i}: node4 presumed dead (sending to it failed)"
            ))),
            "{}",
            r.all()
        );
        let reconnected = format!("node{i}: connected to node4 (Org2MSP, outbound, mutual TLS)");
        let reconnected = lines
            .iter()
            .rposition(|l| *l == reconnected)
            .expect("reconnected");
        assert!(
            (places[17]..places[19]).contains(&reconnected),
            "{}",
            r.all()
        );
    }
    // Each membership check comes after the events it waited for: node0 learnt node4
    // (Org2MSP, through the anchor peer), node1 joined through node0, node4 through node3;
    // node0 declared node4 dead, then listed its new incarnation. Looked for between the
    // two lines only: a member may also flap dead and alive earlier on a loaded machine.
    let between = |from: usize, to: usize, line: &str| {
        let span = &lines[places[from]..places[to]];
        let found = match line.strip_suffix('…') {
            Some(prefix) => span.iter().any(|l| l.starts_with(prefix)),
            None => span.contains(&line),
        };
        assert!(found, "no {line:?} between {from} and {to}\n{}", r.all());
    };
    between(22, 24, "node0: node4 alive (Org2MSP at 127.0.0.1:…");
    between(22, 24, "node1: joined through node0 at 127.0.0.1:…");
    between(22, 24, "node4: joined through node3 at 127.0.0.1:…");
    // Only Org2MSP's first peer reaches Org1MSP through node0, as an anchor peer.
    between(22, 24, "node3: joined through node0 at 127.0.0.1:…");
    let anchored: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(": joined through node0 at "))
        .collect();
    assert!(
        anchored.iter().all(|l| !l.starts_with("node4:")),
        "{anchored:?}\n{}",
        r.all()
    );
    between(25, 26, "node0: node4 dead: …");
    between(27, 28, "node0: node4 alive again, incarnation …");
    // Times are whole milliseconds; 10 handshakes, and 4 reconnections, take at least one.
    assert!(ms_of(lines[places[5]]) >= 1, "{}", r.all());
    assert!(ms_of(lines[places[18]]) >= 1, "{}", r.all());
    assert!(
        r.stdout.contains("\nDEMO PASSED: 13 checks in "),
        "{}",
        r.all()
    );
}

#[test]
fn demo_json_is_one_object() {
    let r = run(&["demo", "--json"], Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "demo failed\n{}", r.all());
    let v: Value =
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{}", r.all()));
    assert_eq!(v["result"], "passed", "{v}");
    assert_eq!(v["ok"], true, "{v}");
    let checks = v["checks"].as_array().expect("checks");
    assert!(
        checks.len() == 13 && checks.iter().all(|c| c["ok"] == true),
        "{v}"
    );
    // Each check has a stable name a script can test (the sentence may change), once.
    let ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "started",
            "connected",
            "messages_exchanged",
            "connections_closed",
            "presumed_dead",
            "others_kept_exchanging",
            "restarted",
            "reconnected",
            "messages_flow_again",
            "membership_joined",
            "membership_dead_detected",
            "membership_rejoined",
            "integrity",
        ],
        "{v}"
    );
    let nodes = v["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5, "{v}");
    assert_eq!(nodes[4]["restarted"], true, "{v}");
    assert!(
        nodes.iter().all(|n| n["received"].as_u64() > Some(0)),
        "{v}"
    );
    // Each membership node listed the other four alive at the end (phase 11 waits for it).
    assert!(nodes.iter().all(|n| n["members_alive"] == 4), "{v}");
}
