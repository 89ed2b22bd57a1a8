//! `keygen`: the command line it prints for each peer, and its layout accepted by `node`,
//! `ping` and `handshake`.

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
use std::time::Duration;

/// `keygen` prints one command line per peer for the operator to paste: ports counted up
/// from `--base-port` to the last that exists (one more peer is refused), each peer
/// joining those started before it, trusting the other organizations (not its own, which
/// its `--msp-dir` is), paths quoted for the shell where they need it; certificates valid
/// for `--days` from now (from an hour ago); without `--org`, Org1MSP and Org2MSP of two
/// peers each, paths left bare.
#[test]
fn keygen_prints_each_peer_s_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("it's here");
    let out_s = out.to_str().expect("utf-8");
    let orgs = [
        "--org",
        "OrgAMSP:a.example.com:2",
        "--org",
        "OrgBMSP:b.example.com:1",
    ];
    let args =
        |base: &'static str| [&["keygen", "--out", out_s, "--base-port", base][..], &orgs].concat();
    let r = run_expect(&args("65534"), 2);
    assert!(
        r.stderr
            .contains("--base-port 65534: 3 peers do not fit below port 65536"),
        "{}",
        r.all()
    );
    let before = std::time::SystemTime::now();
    let r = run_expect(&[&args("65533")[..], &["--days", "2"]].concat(), 0);
    let after = std::time::SystemTime::now();
    let commands: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("fabric-gossip node "))
        .collect();
    assert_eq!(commands.len(), 3, "{}", r.all());
    let quoted = |path: &str| format!("'{}'", path.replace('\'', "'\\''"));
    let peers = [
        "a.example.com/peers/peer0",
        "a.example.com/peers/peer1",
        "b.example.com/peers/peer0",
    ];
    for (i, (cmd, peer)) in commands.iter().zip(peers).enumerate() {
        let port = 65533 + i;
        let (domain, _) = peer.split_once('/').expect("a domain");
        let msp = format!("{out_s}/peerOrganizations/{peer}.{domain}/msp");
        let listen = format!(
            "fabric-gossip node --listen 127.0.0.1:{port} --msp-dir {} ",
            quoted(&msp)
        );
        assert!(cmd.starts_with(&listen), "{cmd}\nwanted {listen}");
        let joins: Vec<String> = (65533..port)
            .map(|p| format!("--peer 127.0.0.1:{p}"))
            .collect();
        assert_eq!(cmd.matches("--peer ").count(), joins.len(), "{cmd}");
        assert!(joins.iter().all(|j| cmd.contains(j.as_str())), "{cmd}");
        let (own, other) = if domain.starts_with('a') {
            ("OrgAMSP", "OrgBMSP")
        } else {
            ("OrgBMSP", "OrgAMSP")
        };
        assert!(!cmd.contains(&format!("--trust {own}=")), "{cmd}");
        assert_eq!(cmd.matches("--trust ").count(), 1, "{cmd}");
        let other_domain = if other == "OrgAMSP" {
            "a.example.com"
        } else {
            "b.example.com"
        };
        let other_msp = format!("{out_s}/peerOrganizations/{other_domain}/msp");
        let trust = format!("--trust {other}={} ", quoted(&other_msp));
        assert!(cmd.contains(&trust), "{cmd}\nwanted {trust}");
        assert_eq!(cmd.matches("--tls-ca ").count(), 2, "{cmd}");
    }
    let tls = out.join("peerOrganizations/a.example.com/peers/peer0.a.example.com/tls/server.crt");
    let pem = std::fs::read(&tls).expect("the TLS certificate");
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).expect("a PEM certificate");
    let not_after = fabric_gossip_msp::certificate_not_after(&der, "server.crt").expect("parsed");
    let two_days = Duration::from_secs(2 * 86_400);
    // NotAfter holds whole seconds.
    assert!(
        not_after + Duration::from_secs(1) >= before + two_days && not_after <= after + two_days,
        "{not_after:?} not two days after {before:?}"
    );

    let plain = dir.path().join("plain");
    let plain_s = plain.to_str().expect("utf-8");
    let r = run_expect(&["keygen", "--out", plain_s], 0);
    let commands: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("fabric-gossip node "))
        .collect();
    assert_eq!(commands.len(), 4, "{}", r.all());
    let bare = format!(
        "--listen 127.0.0.1:7054 --msp-dir {plain_s}/peerOrganizations/org2.example.com/peers/peer1.org2.example.com/msp --msp-id Org2MSP --trust Org1MSP={plain_s}/"
    );
    assert!(
        commands[3].contains(&bare),
        "{}\nwanted {bare}",
        commands[3]
    );
}

#[test]
fn keygen_layout_is_accepted_by_node_ping_and_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = keygen(dir.path());
    // It says what to run.
    assert!(
        r.stdout
            .contains("fabric-gossip node --listen 127.0.0.1:7051 --msp-dir"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("--trust OrgBMSP="), "{}", r.all());
    // Writing again refuses to overwrite, naming the folder.
    let again = run(
        &[
            "keygen",
            "--out",
            dir.path().to_str().unwrap(),
            "--org",
            "OrgAMSP:a.example.com:1",
        ],
        EVENT,
    );
    assert_eq!(again.code, Some(2), "{}", again.all());
    assert!(
        again.stderr.contains("a.example.com already exists"),
        "{}",
        again.all()
    );

    let a_flags = msp_flags(dir.path(), "peer0", ORG_A, ORG_B);
    let b_flags = msp_flags(dir.path(), "peer0", ORG_B, ORG_A);
    let mut a_args = vec!["--listen", "127.0.0.1:0", "--auto-ack"];
    a_args.extend(strs(&a_flags));
    let mut a = NodeProc::start(&a_args);
    let listening = a.seen[0].clone();
    assert_eq!(listening["msp_id"], "OrgAMSP");
    assert_eq!(listening["tls"], true);
    assert_eq!(
        a.pki.len(),
        64,
        "MSP PKI-IDs are SHA-256, shown in hex: {}",
        a.pki
    );

    let a_addr = a.addr.clone();
    let mut b_args = vec!["--listen", "127.0.0.1:0", "--peer", a_addr.as_str()];
    b_args.extend(strs(&b_flags));
    let mut b = NodeProc::start(&b_args);
    // Each authenticated the other's MSP identity over mutual TLS.
    let c = b.wait("connected", is("connected"));
    assert_eq!(c["peer"], a.pki.as_str());
    assert_eq!(c["msp_id"], "OrgAMSP");
    assert_eq!(c["inbound"], false);
    let c = a.wait("connected", is("connected"));
    assert_eq!(c["peer"], b.pki.as_str());
    assert_eq!(c["msp_id"], "OrgBMSP");
    // A plain line goes to every connected peer.
    b.send_line("hello from B");
    let got = a.wait("received text", |v| {
        v["event"] == "received" && v["content"] == "data_msg"
    });
    assert_eq!(got["text"], "hello from B");
    assert_eq!(got["from"], b.pki.as_str());
    // send_with_ack by PKI-ID in hex; A acks automatically.
    let cmd = format!(
        r#"{{"cmd":"send_with_ack","to":"{}","pki_id":"{}","data":"ack me","seq":7,"timeout_ms":5000}}"#,
        a.addr, a.pki
    );
    b.send_line(&cmd);
    let ack = b.wait("ack_result", is("ack_result"));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["seq"], 7);

    // ping and handshake from B's identity.
    let mut hs = vec![
        "handshake",
        a_addr.as_str(),
        "--expect-pki-id",
        a.pki.as_str(),
    ];
    hs.extend(strs(&b_flags));
    let r = run_expect(&hs, 0);
    assert!(
        r.stdout.contains(&format!("PKI-ID:    {}", a.pki)),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("MSP ID:    OrgAMSP"), "{}", r.all());
    assert!(
        r.stdout.contains("-----BEGIN CERTIFICATE-----"),
        "{}",
        r.all()
    );
    // In JSON, an MSP identity is its MSP ID and certificate, not its bytes as text.
    hs.push("--json");
    let r = run_expect(&hs, 0);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("one JSON object");
    assert_eq!(v["pki_id"], a.pki.as_str(), "{v}");
    assert_eq!(v["msp_id"], "OrgAMSP", "{v}");
    let cert = v["certificate"].as_str().unwrap_or_default();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{v}");
    assert!(v.get("identity").is_none(), "{v}");
    let mut ping = vec!["ping", a_addr.as_str()];
    ping.extend(strs(&b_flags));
    let r = run_expect(&ping, 0);
    assert!(r.stdout.contains("(TLS): answered in"), "{}", r.all());

    // Without trust in OrgAMSP, B's handshake with A fails, and says why.
    let mut untrusting = b_flags.clone();
    let i = untrusting
        .iter()
        .position(|f| f == "--trust")
        .expect("--trust");
    untrusting.drain(i..i + 2);
    let mut hs = vec!["handshake", a_addr.as_str()];
    hs.extend(strs(&untrusting));
    let r = run_expect(&hs, 1);
    assert!(r.stdout.contains("--trust OrgAMSP=DIR"), "{}", r.all());
    // The same refusal is what a wrong --msp-id of our own gives: the hint says so.
    assert!(
        r.stdout
            .contains("if OrgAMSP is our own organization, our --msp-id is wrong"),
        "{}",
        r.all()
    );

    // A third node given two --peer addresses (MSP PKI-IDs unknown) connects to both.
    let c_flags = msp_flags(dir.path(), "peer1", ORG_A, ORG_B);
    let b_addr = b.addr.clone();
    let mut c_args = vec![
        "--listen",
        "127.0.0.1:0",
        "--peer",
        &a_addr,
        "--peer",
        &b_addr,
    ];
    c_args.extend(strs(&c_flags));
    let mut c = NodeProc::start(&c_args);
    let (a_pki, b_pki) = (a.pki.clone(), b.pki.clone());
    c.wait("connected to A", |v| {
        v["event"] == "connected" && v["peer"] == a_pki.as_str()
    });
    c.wait("connected to B", |v| {
        v["event"] == "connected" && v["peer"] == b_pki.as_str()
    });
    // A send without a PKI-ID authenticates the peer first, then reaches it.
    let cmd = format!(r#"{{"cmd":"send","to":"{b_addr}","data":"who are you","seq":11}}"#);
    c.send_line(&cmd);
    let got = b.wait("from C", |v| v["event"] == "received" && v["seq"] == 11);
    assert_eq!(got["from"], c.pki.as_str());
    // A peer that cannot be authenticated is reported presumed dead, with its endpoint.
    c.send_line(r#"{"cmd":"send","to":"127.0.0.1:1","data":"void","seq":12}"#);
    let pd = c.wait("presumed_dead", is("presumed_dead"));
    assert_eq!(pd["endpoint"], "127.0.0.1:1", "{pd}");

    c.stop();
    b.stop();
    a.stop();
}
