//! `keygen`: the command line it prints for each peer, and its layout accepted by `node`,
//! `ping` and `handshake`.

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
use std::time::Duration;

/// The `fabric-gossip node` commands in `keygen`'s output, each as the words a shell
/// makes of it: a line ending in a backslash continued on the next, single-quoted words
/// unquoted.
fn printed_commands(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .replace("\\\n", "")
        .lines()
        .filter(|l| l.starts_with("fabric-gossip node "))
        .map(shell_words)
        .collect()
}

/// `line` split into words as `sh` splits it, for the quoting `keygen` uses: whitespace
/// between words, '…' quoting, and \x for x outside quotes.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word, mut quoted) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => (quoted, in_word) = (!quoted, true),
            '\\' if !quoted => {
                word.extend(chars.next());
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "an unterminated quote in {line}");
    if in_word {
        words.push(word);
    }
    words
}

/// The values of flag `flag` in the words of a command, in order.
fn values<'a>(words: &'a [String], flag: &str) -> Vec<&'a str> {
    words
        .windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

/// `keygen` prints one command per peer for the operator to paste, a flag group a line:
/// gossip ports counted up from `--base-port` to the last that exists (one more peer is
/// refused), operations ports from `--operations-base-port` (default --base-port + 1000,
/// refused when they do not fit or overlap the gossip ports); each peer its own external
/// endpoint, trusting the other organizations (not its own, which its `--msp-dir` is) and
/// every TLS CA, each organization's first peer `--membership`, its others bootstrapping
/// through it, every peer given the other organizations' first peers as anchor peers;
/// paths quoted for the shell where they need it; certificates valid for `--days` from now
/// (from an hour ago); without `--org`, Org1MSP and Org2MSP of two peers each, paths left
/// bare.
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
    let args = |base: &'static str, ops: &[&'static str]| {
        [
            &["keygen", "--out", out_s, "--base-port", base][..],
            ops,
            &orgs,
        ]
        .concat()
    };
    for (base, ops, error) in [
        (
            "65534",
            &["--operations-base-port", "7051"][..],
            "--base-port 65534: 3 peers do not fit below port 65536",
        ),
        (
            "65533",
            &[],
            "--base-port 65533: the operations ports of 3 peers do not fit below port 65536 \
             (they start at --base-port + 1000); pass --operations-base-port",
        ),
        (
            "65533",
            &["--operations-base-port", "65531"],
            "--operations-base-port 65531: the operations ports 65531 to 65533 overlap the \
             gossip ports 65533 to 65535",
        ),
    ] {
        let r = run_expect(&args(base, ops), 2);
        assert!(r.stderr.contains(error), "{error}\n{}", r.all());
    }
    let before = std::time::SystemTime::now();
    let r = run_expect(
        &[
            &args("65533", &["--operations-base-port", "65530"])[..],
            &["--days", "2"],
        ]
        .concat(),
        0,
    );
    let after = std::time::SystemTime::now();
    let commands = printed_commands(&r.stdout);
    assert_eq!(commands.len(), 3, "{}", r.all());
    let quoted = |path: &str| format!("'{}'", path.replace('\'', "'\\''"));
    let peers = [
        "a.example.com/peers/peer0",
        "a.example.com/peers/peer1",
        "b.example.com/peers/peer0",
    ];
    let org_msp = |domain: &str| format!("{out_s}/peerOrganizations/{domain}/msp");
    for (i, (cmd, peer)) in commands.iter().zip(peers).enumerate() {
        let ep = format!("127.0.0.1:{}", 65533 + i);
        let (domain, _) = peer.split_once('/').expect("a domain");
        let msp = format!("{out_s}/peerOrganizations/{peer}.{domain}/msp");
        assert_eq!(cmd[..2], ["fabric-gossip", "node"], "{cmd:?}");
        let one = |flag: &str| match values(cmd, flag)[..] {
            [v] => v.to_owned(),
            ref other => panic!("{flag}: {other:?} in {cmd:?}"),
        };
        assert_eq!(one("--listen"), ep);
        assert_eq!(one("--external-endpoint"), ep);
        assert_eq!(one("--operations"), format!("127.0.0.1:{}", 65530 + i));
        assert_eq!(one("--msp-dir"), msp);
        assert!(r.stdout.contains(&quoted(&msp)), "{}", r.all());
        let (own, other, other_domain, other_first) = if domain.starts_with('a') {
            ("OrgAMSP", "OrgBMSP", "b.example.com", "127.0.0.1:65535")
        } else {
            ("OrgBMSP", "OrgAMSP", "a.example.com", "127.0.0.1:65533")
        };
        assert_eq!(one("--msp-id"), own);
        assert_eq!(
            values(cmd, "--trust"),
            [format!("{other}={}", org_msp(other_domain))]
        );
        assert_eq!(values(cmd, "--tls-ca").len(), 2, "{cmd:?}");
        assert_eq!(
            values(cmd, "--anchor-peer"),
            [format!("{other}={other_first}")]
        );
        let membership = cmd.iter().any(|w| w == "--membership");
        if peer.ends_with("peer0") {
            assert!(membership, "{cmd:?}");
            assert!(values(cmd, "--bootstrap").is_empty(), "{cmd:?}");
        } else {
            assert!(!membership, "{cmd:?}");
            assert_eq!(values(cmd, "--bootstrap"), ["127.0.0.1:65533"]);
        }
        // Every word a flag and its value, but --membership.
        assert_eq!((cmd.len() - usize::from(membership)) % 2, 0, "{cmd:?}");
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
    assert_eq!(printed_commands(&r.stdout).len(), 4, "{}", r.all());
    let orgs = format!("{plain_s}/peerOrganizations");
    let peer1 = format!("{orgs}/org2.example.com/peers/peer1.org2.example.com");
    let printed = format!(
        "\n# peer1.org2.example.com (Org2MSP)\n\
         fabric-gossip node --listen 127.0.0.1:7054 --external-endpoint 127.0.0.1:7054 \
         --operations 127.0.0.1:8054 \\\n    \
         --msp-dir {peer1}/msp --msp-id Org2MSP \\\n    \
         --trust Org1MSP={orgs}/org1.example.com/msp \\\n    \
         --tls-cert {peer1}/tls/server.crt \\\n    \
         --tls-key {peer1}/tls/server.key \\\n    \
         --tls-ca {orgs}/org1.example.com/msp/tlscacerts/tlsca.org1.example.com-cert.pem \\\n    \
         --tls-ca {orgs}/org2.example.com/msp/tlscacerts/tlsca.org2.example.com-cert.pem \\\n    \
         --bootstrap 127.0.0.1:7053 --anchor-peer Org1MSP=127.0.0.1:7051\n"
    );
    assert!(
        r.stdout.ends_with(&printed),
        "{}\nwanted {printed}",
        r.all()
    );
}

/// A first port `p` such that `p` to `p + n - 1`, and the `n` ports 1000 above them
/// (keygen's default operations ports), were all free: bound at once, then let go.
fn free_port_runs(n: u16) -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = first.local_addr().expect("addr").port();
        if usize::from(p) + 1000 + usize::from(n) > 65536 {
            continue;
        }
        let mut held = vec![first];
        let rest = (1..n).map(|k| p + k).chain((0..n).map(|k| p + 1000 + k));
        let all = rest
            .map(|q| std::net::TcpListener::bind(("127.0.0.1", q)))
            .all(|l| l.map(|l| held.push(l)).is_ok());
        if all {
            return p;
        }
    }
    panic!("no run of {n} free ports (and 1000 above) in 100 tries");
}

/// `keygen`'s commands, run as printed (with the membership tests' fast heartbeat), make
/// one membership network of two organizations of two peers: each organization's peer1
/// joins through its peer0, the organizations through their anchor peers, and within the
/// deadline every node lists the three others alive, each under its MSP and at its
/// external endpoint; every node serves its operations port.
#[test]
fn keygen_s_commands_run_as_printed_make_one_network_of_two_organizations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut attempts = 0;
    let (commands, mut nodes) = 'found: loop {
        attempts += 1;
        let base = free_port_runs(4).to_string();
        let out = dir.path().join(format!("crypto{attempts}"));
        let r = run_expect(
            &[
                "keygen",
                "--out",
                out.to_str().expect("utf-8"),
                "--org",
                "Org1MSP:org1.example.com:2",
                "--org",
                "Org2MSP:org2.example.com:2",
                "--base-port",
                &base,
            ],
            0,
        );
        let commands = printed_commands(&r.stdout);
        assert_eq!(commands.len(), 4, "{}", r.all());
        let mut nodes = Vec::new();
        for cmd in &commands {
            let fast = ["--alive-interval", "500ms", "--alive-expiration", "5s"];
            let args: Vec<&str> = cmd[2..].iter().map(String::as_str).chain(fast).collect();
            let mut d = Daemon::start(&args, true, true, None);
            match next_line(&d.lines, &mut d.seen, EVENT) {
                Some(v) if v["event"] == "listening" => nodes.push((d, v)),
                first => {
                    let _ = d.child.kill();
                    let _ = d.child.wait();
                    let err = d.stderr();
                    // A port found free was taken before the node bound it: again, with
                    // others.
                    assert!(
                        err.contains("Address already in use") && attempts < 5,
                        "attempt {attempts}: {cmd:?}: {first:?}\n{err}"
                    );
                    continue 'found;
                }
            }
        }
        break (commands, nodes);
    };
    let pkis: Vec<String> = nodes
        .iter()
        .map(|(_, l)| l["pki_id"].as_str().expect("pki_id").to_owned())
        .collect();
    let msps = ["Org1MSP", "Org1MSP", "Org2MSP", "Org2MSP"];
    for (i, (d, listening)) in nodes.iter_mut().enumerate() {
        let ops = values(&commands[i], "--operations")[0];
        assert_eq!(listening["operations"], ops, "{listening}");
        assert_eq!(http_get(ops, "/healthz").0, 200, "{ops}");
        for j in (0..4).filter(|&j| j != i) {
            let pki = pkis[j].clone();
            d.wait(&format!("node {j} alive at node {i}"), move |v| {
                v["event"] == "member_alive" && v["pki_id"] == pki.as_str()
            });
        }
        d.send_line(r#"{"cmd":"members"}"#);
        let table = d.wait("members", is("members"));
        for j in (0..4).filter(|&j| j != i) {
            let m = table["members"]
                .as_array()
                .expect("members")
                .iter()
                .find(|m| m["pki_id"] == pkis[j].as_str())
                .unwrap_or_else(|| panic!("node {j} not listed by node {i}: {table}"));
            assert_eq!(m["alive"], true, "node {j} at node {i}: {table}");
            assert_eq!(m["msp_id"], msps[j], "{m}");
            let external = values(&commands[j], "--external-endpoint")[0];
            assert_eq!(m["endpoint"], external, "{m}");
        }
    }
    for (d, _) in &mut nodes {
        d.stop_ok();
    }
}

#[test]
fn keygen_layout_is_accepted_by_node_ping_and_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = keygen(dir.path());
    // It says what to run.
    assert!(
        r.stdout
            .contains("fabric-gossip node --listen 127.0.0.1:7051 --external-endpoint"),
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
