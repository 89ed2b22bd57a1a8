//! TLS flags: `--tls-server-name` for every server or one per address, and client
//! certificates from another CA than the server certificates'.

use crate::common::*;
use crate::fixtures::*;

/// `--tls-server-name` names every server or, as `HOST:PORT=NAME`, one; two names for every
/// server are a usage error that says how to name them one at a time.
#[test]
fn tls_server_names_are_one_for_all_or_one_per_address() {
    // The channel's block: its organizations' TLS CAs are trusted.
    let tls = ChannelPeer {
        block: true,
        tls: true,
    };
    let mut args = vec!["node".to_owned()];
    args.extend(tls.args("peer0.org1.example.com", "Org1MSP", None));
    let mut two_for_all = args.clone();
    two_for_all.extend(
        [
            "--tls-server-name",
            "peer0.org1.example.com",
            "--tls-server-name",
            "peer1.org1.example.com",
        ]
        .map(str::to_owned),
    );
    let r = run_expect(&strs(&two_for_all), 2);
    assert!(r.stderr.contains("HOST:PORT=NAME"), "{}", r.all());
    for bad in [
        "=peer0.org1.example.com",
        "127.0.0.1=peer0.org1.example.com",
    ] {
        let mut no_port = args.clone();
        no_port.extend(["--tls-server-name", bad].map(str::to_owned));
        let r = run_expect(&strs(&no_port), 2);
        assert!(r.stderr.contains("HOST:PORT"), "{}", r.all());
    }
    // One for all and two per address: the node starts (and ends at its input's end).
    let mut named = args;
    named.extend(
        [
            "--tls-server-name",
            "peer0.org1.example.com",
            "--tls-server-name",
            "127.0.0.1:7051=peer0.org1.example.com",
            "--tls-server-name",
            "127.0.0.1:7061=peer1.org1.example.com",
            "--exit-on-eof",
        ]
        .map(str::to_owned),
    );
    let r = run_expect(&strs(&named), 0);
    assert!(r.stdout.contains("\"listening\""), "{}", r.all());
}

/// Issue 13 (Fabric issue 3138): server certificates from one CA, client certificates from
/// another. Each node dials with its client certificate, and the handshake binds the
/// certificate presented in each role; a node that does not trust the client CA refuses.
#[test]
fn separate_tls_client_certificates_from_another_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let orgs = dir.path().join("peerOrganizations");
    let tls = |org: &str, peer: &str, f: &str| {
        orgs.join(format!("{org}/peers/{peer}.{org}/tls/{f}"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    let ca = |org: &str| {
        orgs.join(format!("{org}/msp/tlscacerts/tlsca.{org}-cert.pem"))
            .to_str()
            .expect("utf-8")
            .to_owned()
    };
    // Server certificates: a.example.com's TLS CA; client certificates: b.example.com's.
    let flags = |n: &str| -> Vec<String> {
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--test-identity".into(),
            "--tls-cert".into(),
            tls("a.example.com", n, "server.crt"),
            "--tls-key".into(),
            tls("a.example.com", n, "server.key"),
            "--tls-ca".into(),
            ca("a.example.com"),
            "--tls-client-cert".into(),
            tls("b.example.com", "peer0", "server.crt"),
            "--tls-client-key".into(),
            tls("b.example.com", "peer0", "server.key"),
            "--tls-client-ca".into(),
            ca("b.example.com"),
        ]
    };
    let a_flags = flags("peer0");
    let mut a = Daemon::start(&strs(&a_flags), true, true, None);
    let a_addr = a.wait("listening", is("listening"))["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    let mut b_flags = flags("peer1");
    b_flags.extend(["--peer".into(), a_addr.clone()]);
    let mut b = Daemon::start(&strs(&b_flags), true, true, None);
    let c = b.wait("connected", is("connected"));
    assert_eq!(c["peer"], a_addr.as_str());
    a.wait("connected", is("connected"));
    b.send_line("over two CAs");
    let got = a.wait("received", |v| {
        v["event"] == "received" && v["content"] == "data_msg"
    });
    assert_eq!(got["text"], "over two CAs");

    // Without the client CA, clients are checked against the server CA: refused.
    let mut strict = flags("peer1");
    let i = strict
        .iter()
        .position(|f| f == "--tls-client-ca")
        .expect("flag");
    strict.drain(i..i + 2);
    let mut c = Daemon::start(&strs(&strict), true, true, None);
    let c_addr = c.wait("listening", is("listening"))["addr"]
        .as_str()
        .expect("addr")
        .to_owned();
    a.send_line(&format!(
        r#"{{"cmd":"send","to":"{c_addr}","data":"x","seq":1}}"#
    ));
    let pd = a.wait("presumed_dead", is("presumed_dead"));
    assert_eq!(pd["peer"], c_addr.as_str(), "{pd}");
    assert!(c.seen.iter().all(|v| v["event"] != "connected"));
}
