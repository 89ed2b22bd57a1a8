//! `node --config`: a Fabric peer's core.yaml, with `CORE_` variables and flags overriding it;
//! the TLS CAs from a channel block when the file names none; a bad listen address named.

use crate::common::*;
use crate::fixtures::*;
use std::path::{Path, PathBuf};

/// Fabric's sample core.yaml as is claims the sample MSP (`SampleOrg`): the node starts,
/// as a Fabric peer would, but warns that no real network knows that organization, naming
/// the key (an operator's trial started one without a word).
#[test]
fn a_core_yaml_claiming_the_sample_msp_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let a_dir = dir
        .path()
        .join("peerOrganizations/a.example.com/peers/peer0.a.example.com");
    let core = a_dir.join("core.yaml");
    for (msp_id, warned) in [("SampleOrg", true), ("OrgAMSP", false)] {
        std::fs::write(&core, fixture_core_yaml(msp_id)).expect("write core.yaml");
        let out = node_with_config(&core)
            .args(["--listen", "127.0.0.1:0", "--exit-on-eof"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let warning = "peer.localMspId is SampleOrg, the MSP ID of Fabric's sample core.yaml";
        assert_eq!(stderr.contains(warning), warned, "{msp_id}: {stderr}");
    }
}

/// Issue 13: a node run from a Fabric peer's core.yaml (the keygen layout, the file beside
/// the peer's msp/ and tls/ as in a Fabric peer's FABRIC_CFG_PATH), with CORE_ variables
/// overriding it and flags overriding both.
#[test]
fn node_runs_from_a_fabric_core_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let orgs = dir.path().join("peerOrganizations");
    let a_dir = orgs.join("a.example.com/peers/peer0.a.example.com");
    let b_tlsca = orgs.join("b.example.com/msp/tlscacerts/tlsca.b.example.com-cert.pem");
    let core = a_dir.join("core.yaml");
    // Fabric's layout and key names; relative paths are relative to this file; TLS is
    // off here and turned on by CORE_PEER_TLS_ENABLED.
    let yaml = fixture_core_yaml("OrgAMSP")
        .replace("provider: disabled", "provider: prometheus")
        // A file a Fabric peer would not open (clientAuthRequired is false): left out
        // with a warning. The other organization's TLS CA is nowhere in the file.
        .replace(
            "              - tls/ca.crt",
            "              - tls/not-there.crt",
        );
    std::fs::write(&core, yaml).expect("write core.yaml");
    let b_msp = format!("OrgBMSP={}", orgs.join("b.example.com/msp").display());
    let start = |env: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = node_with_config(&core);
        cmd.args(["--trust", &b_msp])
            .args(extra)
            .envs(env.iter().copied());
        cmd
    };
    exits_2_saying(
        &mut start(
            &[("CORE_PEER_GOSSIP_DIALTIMEOUT", "3 s")],
            &["--exit-on-eof"],
        ),
        "peer.gossip.dialTimeout (from CORE_PEER_GOSSIP_DIALTIMEOUT)",
    );
    // A listen address the flag overrides.
    let (guard, first, _lines) = spawn_listening(&mut start(
        &[
            ("CORE_PEER_TLS_ENABLED", "true"),
            ("CORE_PEER_LISTENADDRESS", "not an address"),
        ],
        &["--listen", "127.0.0.1:0", "--auto-ack"],
    ));
    assert_eq!(first["msp_id"], "OrgAMSP", "{first}");
    assert_eq!(first["tls"], true, "{first}");
    let addr = first["addr"].as_str().expect("addr").to_owned();
    let ops = first["operations"].as_str().expect("operations").to_owned();
    assert_eq!(http_get(&ops, "/healthz").0, 200);
    assert_eq!(http_get(&ops, "/metrics").0, 200);
    // A peer of the other organization, from flags, authenticates it over mutual TLS,
    // though its TLS CA is not among the node's: without clientAuthRequired, as on a Fabric
    // peer, TLS checks no client chain (the gossip handshake binds the certificate).
    let b_flags = msp_flags(dir.path(), "peer0", ORG_B, ORG_A);
    let mut b_hs = vec!["handshake", addr.as_str()];
    b_hs.extend(strs(&b_flags));
    let r = run_expect(&b_hs, 0);
    assert!(r.stdout.contains("MSP ID:    OrgAMSP"), "{}", r.all());
    // And a peer of its own organization.
    let a_flags = msp_flags(dir.path(), "peer1", ORG_A, ORG_B);
    let mut a_hs = vec!["handshake", addr.as_str()];
    a_hs.extend(strs(&a_flags));
    let r = run_expect(&a_hs, 0);
    assert!(r.stdout.contains("MSP ID:    OrgAMSP"), "{}", r.all());
    drop(guard);
    // With clientAuthRequired, clients' chains are checked against the rootcert and the
    // client roots: the other organization's peer is refused until its TLS CA is listed,
    // and a peer of the node's own organization chains to the rootcert.
    let b_tlsca = b_tlsca.to_str().expect("utf-8");
    for (client_roots, b_welcome) in [("tls/ca.crt", false), (b_tlsca, true)] {
        let (guard, first, _lines) = spawn_listening(&mut start(
            &[
                ("CORE_PEER_TLS_ENABLED", "true"),
                ("CORE_PEER_TLS_CLIENTAUTHREQUIRED", "true"),
                ("CORE_PEER_TLS_CLIENTROOTCAS_FILES", client_roots),
            ],
            &["--listen", "127.0.0.1:0"],
        ));
        let addr = first["addr"].as_str().expect("addr");
        for (hs, welcome) in [(&b_hs, b_welcome), (&a_hs, true)] {
            let at: Vec<&str> = ["handshake", addr]
                .into_iter()
                .chain(hs[2..].iter().copied())
                .collect();
            run_expect(&at, if welcome { 0 } else { 1 });
        }
        drop(guard);
    }
    // The client roots are read, as by a Fabric peer: the missing one stops the node, named.
    exits_2_saying(
        &mut start(
            &[
                ("CORE_PEER_TLS_ENABLED", "true"),
                ("CORE_PEER_TLS_CLIENTAUTHREQUIRED", "true"),
            ],
            &["--listen", "127.0.0.1:0", "--exit-on-eof"],
        ),
        "not-there.crt",
    );
}

/// `peer.tls.rootcert.file` is optional, as for a Fabric peer, whose channels bring the TLS
/// CAs: a node from a core.yaml without it takes them from `--channel-config`, and a peer
/// of the channel's other organization authenticates it over mutual TLS. Without either,
/// the node says what is missing.
#[test]
fn a_core_yaml_without_rootcert_takes_the_channels_tls_cas() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/channel");
    let peer = fixtures.join("peers/peer0.org1.example.com");
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.yaml");
    let yaml = fixture_core_yaml("Org1MSP")
        .replace("        rootcert:\n            file: tls/ca.crt\n", "")
        .replace("              - tls/ca.crt\n", "");
    assert!(!yaml.contains("rootcert"), "the fixture's layout changed");
    std::fs::write(&core, yaml).expect("write core.yaml");
    let p = |x: PathBuf| x.to_str().expect("utf-8").to_owned();
    let start = |extra: &[String]| {
        let mut cmd = node_with_config(&core);
        cmd.args(extra)
            .env("CORE_PEER_MSPCONFIGPATH", p(peer.join("msp")))
            .env("CORE_PEER_TLS_ENABLED", "true")
            .env("CORE_PEER_TLS_CERT_FILE", p(peer.join("tls/server.crt")))
            .env("CORE_PEER_TLS_KEY_FILE", p(peer.join("tls/server.key")));
        cmd
    };
    exits_2_saying(&mut start(&["--exit-on-eof".into()]), "--channel-config");
    let block = p(fixtures.join("mychannel.block"));
    let (_guard, first, _lines) = spawn_listening(&mut start(&[
        "--channel-config".into(),
        block,
        "--auto-ack".into(),
    ]));
    assert_eq!(first["tls"], true, "{first}");
    let addr = first["addr"].as_str().expect("addr").to_owned();
    let org2 = ChannelPeer {
        block: true,
        tls: true,
    };
    let mut hs = vec!["handshake".to_owned(), addr];
    hs.extend(
        org2.args("peer0.org2.example.com", "Org2MSP", None)
            .into_iter()
            .skip(2),
    );
    let r = run_expect(&strs(&hs), 0);
    assert!(r.stdout.contains("MSP ID:    Org1MSP"), "{}", r.all());
}

/// A `peer.listenAddress` in core.yaml that is no address (a mapping, a bare port number)
/// stops the node with status 2 naming the key and the file, as a variable's is named.
#[test]
fn a_bad_listen_address_in_core_yaml_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core.yaml");
    let core_s = core.to_str().expect("utf-8");
    for (value, why) in [("{a: 1}", "expected a string"), ("7051", "HOST:PORT")] {
        std::fs::write(&core, format!("peer:\n  listenAddress: {value}\n")).expect("write");
        let r = run_expect(&["node", "--config", core_s, "--test-identity"], 2);
        let named = format!("peer.listenAddress (from --config {core_s})");
        assert!(
            r.stderr.contains(&named) && r.stderr.contains(why),
            "{value}: {}",
            r.all()
        );
    }
}
