//! MSP identities and trust: a CRL and NodeOUs in a trusted MSP folder enforced on reload
//! (`reload_trust`, SIGHUP), MSP folder mistakes named as they are, and a wrong `--msp-id`
//! hinted at.

use crate::common::*;
use crate::fixtures::*;
use std::path::Path;
use std::process::Command;

/// Two organizations written by `dev::write_orgs` in a new folder; node A (OrgA's peer0,
/// trusting OrgB's MSP folder) and node B (OrgB's peer0, trusting OrgA's) started, B dialling
/// A, and A seen connected. The trust tests change OrgB's folder, then reload A.
struct TwoMspNodes {
    dir: tempfile::TempDir,
    now: fabric_gossip_core::Instant,
    orgs: Vec<fabric_gossip_msp::dev::DevOrg>,
    layout: fabric_gossip_msp::dev::Layout,
    a: NodeProc,
    b: NodeProc,
}

impl TwoMspNodes {
    fn start() -> TwoMspNodes {
        use fabric_gossip_msp::dev::{self, OrgSpec, Validity};
        let dir = tempfile::tempdir().expect("tempdir");
        let now = fabric_gossip_core::Instant::from_system_time(std::time::SystemTime::now());
        let specs = [
            OrgSpec::new(ORG_A.0, ORG_A.1, 1),
            OrgSpec::new(ORG_B.0, ORG_B.1, 1),
        ];
        let validity = Validity::ten_years_from(now - core::time::Duration::from_secs(3600));
        let orgs = dev::generate_in_memory(&specs, validity, &mut dev::OsRng).expect("orgs");
        let layout = dev::write_orgs(dir.path(), &orgs).expect("layout");
        let mut a = NodeProc::start(&strs(&Self::args(dir.path(), ORG_A, None)));
        let b = NodeProc::start(&strs(&Self::args(dir.path(), ORG_B, Some(&a.addr))));
        a.wait("connected", is("connected"));
        TwoMspNodes {
            dir,
            now,
            orgs,
            layout,
            a,
            b,
        }
    }

    /// The `node` arguments of `org`'s peer0 (the other organization trusted), dialling
    /// `peer` if given.
    fn args(root: &Path, org: (&str, &str), peer: Option<&str>) -> Vec<String> {
        let other = if org == ORG_A { ORG_B } else { ORG_A };
        let mut args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        if let Some(p) = peer {
            args.extend(["--peer".to_owned(), p.to_owned()]);
        }
        args.extend(msp_flags(root, "peer0", org, other));
        args
    }

    /// The arguments of another node as `org`'s peer0, dialling A.
    fn restart_args(&self, org: (&str, &str)) -> Vec<String> {
        Self::args(self.dir.path(), org, Some(&self.a.addr))
    }
}

/// A CRL placed in the crls/ folder of a trusted organization's MSP while the node runs:
/// `reload_trust` (and SIGHUP) read it, the revoked peer's connection closes, its next
/// handshake is refused naming why, and a node started afterwards counts the CRL at once.
#[test]
fn a_crl_in_a_trusted_msp_folder_cuts_the_revoked_peer_off_on_reload() {
    let TwoMspNodes {
        dir,
        now,
        orgs,
        layout,
        mut a,
        b,
    } = TwoMspNodes::start();
    assert_eq!(a.seen[0]["trust"]["OrgBMSP"]["crls"], 0, "{}", a.seen[0]);

    // Org B's CA revokes B's certificate; A is told to read its trust again.
    let crls = layout.orgs[1].msp_dir.join("crls");
    std::fs::create_dir_all(&crls).expect("crls/");
    let revoked = orgs[1].peers[0].identity.cert_der.as_slice();
    let crl = orgs[1].ca.revocation_list(&[revoked], now).expect("crl");
    std::fs::write(crls.join("crl.pem"), crl).expect("write crl");
    a.send_line(r#"{"cmd":"reload_trust"}"#);
    let reloaded = a.wait("trust_reloaded", is("trust_reloaded"));
    assert_eq!(reloaded["refused"], 1, "{reloaded}");
    assert_eq!(reloaded["trust"]["OrgBMSP"]["revoked"], 1, "{reloaded}");
    let gone = a.wait("disconnected", is("disconnected"));
    assert_eq!(gone["peer"], b.pki.as_str(), "{gone}");
    assert!(
        gone["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{gone}"
    );

    // SIGHUP reloads too (nothing left to refuse), and the node keeps running.
    let hup = Command::new("kill")
        .args(["-HUP", &a.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let again = a.wait("trust_reloaded by SIGHUP", |v| {
        v["event"] == "trust_reloaded" && v["by"] == "SIGHUP"
    });
    assert_eq!(again["refused"], 0, "{again}");

    // B dials again: refused at the handshake, naming the revocation.
    let b2 = NodeProc::start(&strs(&TwoMspNodes::args(dir.path(), ORG_B, Some(&a.addr))));
    a.handshake_refused("revoked");

    // A node started now reads the CRL at once.
    let a2 = NodeProc::start(&strs(&TwoMspNodes::args(dir.path(), ORG_A, None)));
    assert_eq!(a2.seen[0]["trust"]["OrgBMSP"]["crls"], 1, "{}", a2.seen[0]);
    for n in [a2, b2, b, a] {
        n.stop();
    }
}

/// A trusted organization's `config.yaml` (NodeOUs, as cryptogen writes it) is read and
/// shown at start; when the organization changes the OU its peers must carry and the node
/// reloads, the connected peer, whose certificate carries the old OU, is cut off and its
/// next handshake refused naming its organizational units.
#[test]
fn a_trusted_msp_s_node_ous_are_enforced_and_reloaded() {
    let nodes = TwoMspNodes::start();
    let shown = &nodes.a.seen[0]["trust"]["OrgBMSP"];
    assert_eq!(shown["node_ous"]["peer"], "peer", "{}", nodes.a.seen[0]);
    assert_eq!(
        shown["node_ous"]["orderer"], "orderer",
        "{}",
        nodes.a.seen[0]
    );
    let b2_would_be = nodes.restart_args(ORG_B);
    let TwoMspNodes {
        layout, mut a, b, ..
    } = nodes;

    // Org B's peers must now carry OU "node"; B's certificate says "peer".
    let config = layout.orgs[1].msp_dir.join("config.yaml");
    let text = std::fs::read_to_string(&config).expect("config.yaml");
    let changed = text.replace(
        "OrganizationalUnitIdentifier: peer",
        "OrganizationalUnitIdentifier: node",
    );
    assert_ne!(text, changed);
    std::fs::write(&config, changed).expect("write config.yaml");
    a.send_line(r#"{"cmd":"reload_trust"}"#);
    let reloaded = a.wait("trust_reloaded", is("trust_reloaded"));
    assert_eq!(reloaded["refused"], 1, "{reloaded}");
    assert_eq!(
        reloaded["trust"]["OrgBMSP"]["node_ous"]["peer"], "node",
        "{reloaded}"
    );
    let gone = a.wait("disconnected", is("disconnected"));
    assert_eq!(gone["peer"], b.pki.as_str(), "{gone}");

    let b2 = NodeProc::start(&strs(&b2_would_be));
    a.handshake_refused("organizational units");
    for n in [b2, b, a] {
        n.stop();
    }
}

/// README walk-through findings 10, 11 and 18 through the binary: a missing `--msp-dir`
/// is said not to exist, a peer folder given for its MSP folder gets a hint naming
/// DIR/msp, and an endpoint given to `--expect-pki-id` with an MSP identity is told apart
/// from hex without the hex crate's "Odd number of digits".
#[test]
fn msp_folder_mistakes_are_named_as_they_are() {
    let (dir, peer) = keygen_peer0();
    let p = |x: &Path| x.to_str().expect("utf-8").to_owned();
    let missing = p(&dir.path().join("nope/msp"));
    let identity = |msp: &str| {
        [
            "--listen",
            "127.0.0.1:0",
            "--msp-dir",
            msp,
            "--msp-id",
            ORG_A.0,
        ]
        .map(str::to_owned)
    };
    let r = run_expect(
        &strs(&[&["node".to_owned()][..], &identity(&missing)].concat()),
        2,
    );
    assert!(
        r.stderr
            .contains(&format!("--msp-dir {missing}: does not exist (expected")),
        "{}",
        r.all()
    );
    let r = run_expect(
        &strs(&[&["node".to_owned()][..], &identity(&p(&peer))].concat()),
        2,
    );
    let hint = format!("hint: did you mean {}?", p(&peer.join("msp")));
    assert!(r.stderr.contains(&hint), "{}", r.all());
    let org = dir.path().join("peerOrganizations/b.example.com");
    let trust = format!("{}={}", ORG_B.0, p(&org));
    let mut args = identity(&p(&peer.join("msp"))).to_vec();
    args.extend(["--trust".to_owned(), trust]);
    let r = run_expect(&strs(&[&["node".to_owned()][..], &args].concat()), 2);
    let hint = format!("hint: did you mean {}?", p(&org.join("msp")));
    assert!(r.stderr.contains(&hint), "{}", r.all());
    let r = run_expect(
        &[
            "handshake",
            "127.0.0.1:1",
            "--msp-dir",
            &p(&peer.join("msp")),
            "--msp-id",
            ORG_A.0,
            "--expect-pki-id",
            "127.0.0.1:27052",
        ],
        2,
    );
    assert!(!r.stderr.contains("Odd number"), "{}", r.all());
    assert!(
        r.stderr
            .contains("an endpoint stands for the PKI-ID only under --test-identity"),
        "{}",
        r.all()
    );
}

/// README walk-through finding 9: a node started with the --msp-id of another organization
/// than the CA of its certificate starts (as a Fabric peer would); the peer it shakes hands
/// with refuses it ("issued by a CA of X, not of the MSP it claims (Y)"), and the hint
/// now points at --msp-id.
#[test]
fn a_wrong_msp_id_refused_by_the_remote_gets_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let (mut node, addr) = msp_daemon(dir.path(), "peer0", (ORG_A, ORG_B), &[]);
    let peer1 = dir
        .path()
        .join("peerOrganizations/a.example.com/peers/peer1.a.example.com");
    let msp = peer1.join("msp").to_str().expect("utf-8").to_owned();
    let org_a = dir.path().join("peerOrganizations/a.example.com/msp");
    let trust = format!("{}={}", ORG_A.0, org_a.to_str().expect("utf-8"));
    let mut args = vec![
        "handshake",
        &addr,
        "--msp-dir",
        &msp,
        "--msp-id",
        ORG_B.0,
        "--trust",
        &trust,
    ];
    let tls = tls_flags(&peer1, &peer1);
    args.extend(strs(&tls));
    let r = run_expect(&args, 1);
    assert!(
        r.stdout.contains("not of the MSP it claims")
            || r.stderr.contains("not of the MSP it claims"),
        "{}",
        r.all()
    );
    assert!(
        r.all()
            .contains("hint: the peer says a CA of another MSP issued our certificate"),
        "{}",
        r.all()
    );
    node.stop_ok();
}
