//! What nodes are started with: `keygen` layouts (organizations [`ORG_A`] and [`ORG_B`])
//! and their peers' MSP and TLS flags, the channel fixture's peers
//! (`msp/tests/fixtures/channel/`, [`ChannelPeer`]), and `tests/fixtures/core.yaml`.

use crate::common::*;
use std::path::{Path, PathBuf};

/// Writes development material for organizations A (two peers) and B (one peer).
pub(crate) fn keygen(dir: &Path) -> Run {
    keygen_orgs(dir, &["OrgAMSP:a.example.com:2", "OrgBMSP:b.example.com:1"])
}

/// `keygen --out DIR` of these organizations (`MSPID:DOMAIN:PEERS`), expected to succeed.
pub(crate) fn keygen_orgs(dir: &Path, orgs: &[&str]) -> Run {
    let out = dir.to_str().expect("utf-8 temp path");
    let mut args = vec!["keygen", "--out", out];
    for org in orgs {
        args.extend(["--org", org]);
    }
    let r = run(&args, EVENT);
    assert_eq!(r.code, Some(0), "keygen failed\n{}", r.all());
    r
}

/// The two organizations `keygen` writes: MSP ID and domain.
pub(crate) const ORG_A: (&str, &str) = ("OrgAMSP", "a.example.com");

pub(crate) const ORG_B: (&str, &str) = ("OrgBMSP", "b.example.com");

/// The flags of peer `peer` of organization `org` in the keygen layout, trusting the
/// `other` organization.
pub(crate) fn msp_flags(
    root: &Path,
    peer: &str,
    org: (&str, &str),
    other: (&str, &str),
) -> Vec<String> {
    let ((msp, domain), (other_msp, other)) = (org, other);
    let orgs = root.join("peerOrganizations");
    let peer = orgs
        .join(domain)
        .join("peers")
        .join(format!("{peer}.{domain}"));
    let p = |x: PathBuf| x.to_str().expect("utf-8").to_owned();
    let mut flags = vec![
        "--msp-dir".into(),
        p(peer.join("msp")),
        "--msp-id".into(),
        msp.into(),
        "--trust".into(),
        format!("{other_msp}={}", p(orgs.join(other).join("msp"))),
    ];
    flags.extend(tls_flags(&peer, &peer));
    flags.extend([
        "--tls-ca".into(),
        p(orgs
            .join(other)
            .join(format!("msp/tlscacerts/tlsca.{other}-cert.pem"))),
    ]);
    flags
}

/// `--tls-cert` and `--tls-key` from the keygen peer folder `own`, `--tls-ca` from the
/// peer folder `ca_of` (its organization's TLS CA).
pub(crate) fn tls_flags(own: &Path, ca_of: &Path) -> Vec<String> {
    let p = |x: PathBuf| x.to_str().expect("utf-8").to_owned();
    vec![
        "--tls-cert".into(),
        p(own.join("tls/server.crt")),
        "--tls-key".into(),
        p(own.join("tls/server.key")),
        "--tls-ca".into(),
        p(ca_of.join("tls/ca.crt")),
    ]
}

/// A keygen layout in a new folder, and peer0.a.example.com's folder in it. The folder
/// lives as long as the first.
pub(crate) fn keygen_peer0() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let peer0 = dir
        .path()
        .join("peerOrganizations/a.example.com/peers/peer0.a.example.com");
    (dir, peer0)
}

/// A keygen layout in a new folder, and the path of a file in peer0.a.example.com's TLS
/// folder (`server.crt`, `server.key`, `ca.crt`). The folder lives as long as the first.
pub(crate) fn keygen_with_peer0_tls() -> (tempfile::TempDir, impl Fn(&str) -> String) {
    let (dir, peer0) = keygen_peer0();
    let tls = peer0.join("tls");
    (dir, move |n: &str| {
        tls.join(n).to_str().expect("utf-8").to_owned()
    })
}

/// How a peer of `msp/tests/fixtures/channel/peers/` is started: with the channel's
/// block as its trust (else its own MSP folder only), with its TLS certificate.
pub(crate) struct ChannelPeer {
    pub(crate) block: bool,
    pub(crate) tls: bool,
}

impl ChannelPeer {
    /// The `node` arguments of fixture peer `host` of `msp_id`, dialling `peer` if given.
    pub(crate) fn args(&self, host: &str, msp_id: &str, peer: Option<&str>) -> Vec<String> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/channel");
        let dir = fixtures.join("peers").join(host);
        let p = |x: PathBuf| x.to_str().expect("utf-8").to_owned();
        let mut v = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--msp-dir".into(),
            p(dir.join("msp")),
            "--msp-id".into(),
            msp_id.into(),
        ];
        if self.block {
            v.extend([
                "--channel-config".into(),
                p(fixtures.join("mychannel.block")),
            ]);
        }
        if self.tls {
            v.extend([
                "--tls-cert".into(),
                p(dir.join("tls/server.crt")),
                "--tls-key".into(),
                p(dir.join("tls/server.key")),
            ]);
        }
        if let Some(peer) = peer {
            v.extend(["--peer".into(), peer.into()]);
        }
        v
    }

    /// Starts Org1's peer0 dialling `a`, once `a` has reported it connected.
    pub(crate) fn org1_peer_connected_to(&self, a: &mut NodeProc) -> NodeProc {
        let b = NodeProc::start(&strs(&self.args(
            "peer0.org1.example.com",
            "Org1MSP",
            Some(&a.addr),
        )));
        let up = a.wait("connected", is("connected"));
        assert_eq!(up["peer"], b.pki.as_str(), "{up}");
        b
    }
}

/// `node` with a test identity on a free port, with TLS from these files.
pub(crate) fn tls_node<'a>(cert: &'a str, key: &'a str, ca: &'a str) -> Vec<&'a str> {
    let tls = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca];
    [&["node"][..], &TEST_NODE, &tls].concat()
}

/// A node on a free port with `peer`'s MSP identity of organization `org` from `keygen`'s
/// PKI in `root` (trusting `other`), `extra` flags (stdin a pipe, stdout read), and its
/// address once it is listening.
pub(crate) fn msp_daemon(
    root: &Path,
    peer: &str,
    (org, other): ((&str, &str), (&str, &str)),
    extra: &[&str],
) -> (Daemon, String) {
    let flags = msp_flags(root, peer, org, other);
    daemon_on_a_free_port(&[&strs(&flags), extra].concat())
}

/// `tests/fixtures/core.yaml` for a node of `msp_id` listening on a free loopback port.
pub(crate) fn fixture_core_yaml(msp_id: &str) -> String {
    // Ports the system chooses: a Fabric peer running on the same machine holds 7051 and
    // its operations service 9443 (which failed a CI run here once).
    std::fs::read_to_string("tests/fixtures/core.yaml")
        .expect("fixture")
        .replace("listenAddress: 0.0.0.0:7051", "listenAddress: 127.0.0.1:0")
        .replace(
            "listenAddress: 127.0.0.1:9443",
            "listenAddress: 127.0.0.1:0",
        )
        .replace("localMspId: SampleOrg", &format!("localMspId: {msp_id}"))
}
