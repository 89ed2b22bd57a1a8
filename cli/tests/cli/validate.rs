//! `validate`: certificates judged as a node would judge them, the PKI-ID Fabric gives a
//! high-S certificate, the MSP folder entries left out, and the size cap of the files.

use crate::common::*;
use crate::fixtures::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the `validate` tests start from: a temporary directory with `keygen`'s
/// organizations, Org B's folder in it, and the `--trust` argument for Org B's MSP.
fn org_b_trusted() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    let org = dir.path().join("peerOrganizations").join(ORG_B.1);
    let trust = format!("{}={}", ORG_B.0, org.join("msp").display());
    (dir, org, trust)
}

/// `validate` judges certificates as a node would: a peer of the trusted organization is
/// valid (status 0); after its organization's `config.yaml` renames the peer OU, or a CRL
/// lists it, the same certificate is refused with the kind and the reason (status 1);
/// wrong arguments are status 2.
#[test]
fn validate_judges_certificates_as_a_node_would() {
    let (dir, org, trust) = org_b_trusted();
    let msp = org.join("msp");
    let peer_msp = org.join(format!("peers/peer0.{}/msp", ORG_B.1));
    let args = [
        "validate",
        "--trust",
        &trust,
        peer_msp.to_str().expect("utf-8"),
    ];
    let lines = |r: &Run| -> Vec<serde_json::Value> {
        r.stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let ok = run_expect(&args, 0);
    let v = lines(&ok);
    assert_eq!(v.len(), 1, "{}", ok.all());
    assert_eq!(v[0]["valid"], true, "{}", ok.all());
    assert_eq!(v[0]["msp_id"], ORG_B.0);
    assert_eq!(v[0]["pki_id"].as_str().map(str::len), Some(64));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let not_after = v[0]["not_after_unix_ms"]
        .as_u64()
        .expect("not_after_unix_ms");
    assert!(u128::from(not_after) > now_ms, "{}", ok.all());

    let config = msp.join("config.yaml");
    let text = std::fs::read_to_string(&config).expect("config.yaml");
    std::fs::write(
        &config,
        text.replace(
            "OrganizationalUnitIdentifier: peer",
            "OrganizationalUnitIdentifier: node",
        ),
    )
    .expect("write config.yaml");
    let refused = run_expect(&args, 1);
    let v = lines(&refused);
    assert_eq!(v[0]["valid"], false, "{}", refused.all());
    assert_eq!(v[0]["refused"], "organizational_unit", "{}", refused.all());
    assert!(
        v[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("[peer]"),
        "{}",
        refused.all()
    );

    // Two trusted MSPs and no --msp-id: which one the certificates claim is ambiguous.
    let other = format!(
        "{}={}",
        ORG_A.0,
        dir.path()
            .join("peerOrganizations")
            .join(ORG_A.1)
            .join("msp")
            .display()
    );
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &trust,
            "--trust",
            &other,
            peer_msp.to_str().expect("utf-8"),
        ],
        2,
    );
    assert!(r.stderr.contains("--msp-id"), "{}", r.all());
    let r = run_expect(&["validate", "--trust", &trust, "/nonexistent.pem"], 2);
    assert!(r.stderr.contains("/nonexistent.pem"), "{}", r.all());
}

/// `validate` prints the PKI-ID a Fabric peer holding the certificate has on the network:
/// for a certificate `cryptogen extend` made with a high-S CA signature, that of the
/// certificate re-encoded low-S, as Fabric v2.4.9's MSP computed it
/// (`msp/tests/fixtures/high_s/`), whether given the file cryptogen wrote or Fabric's form.
#[test]
fn validate_gives_the_pki_id_fabric_gives_a_high_s_certificate() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/high_s");
    let oracle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("oracle.json")).expect("oracle"),
    )
    .expect("JSON");
    let dir = tempfile::tempdir().expect("tempdir");
    let cacerts = dir.path().join("cacerts");
    std::fs::create_dir_all(&cacerts).expect("mkdir");
    std::fs::copy(
        fixtures.join("ca.pem"),
        cacerts.join("ca.org1.example.com-cert.pem"),
    )
    .expect("copy");
    std::fs::copy(fixtures.join("config.yaml"), dir.path().join("config.yaml")).expect("copy");
    let trust = format!("Org1MSP={}", dir.path().display());
    for (file, peer) in [
        ("peer2-signcert.pem", "peer2"),
        ("peer2-fabric-identity.pem", "peer2"),
        ("peer1-signcert.pem", "peer1"),
    ] {
        let path = fixtures.join(file);
        let r = run_expect(
            &["validate", "--trust", &trust, path.to_str().expect("utf-8")],
            0,
        );
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("a JSON line");
        assert_eq!(v["valid"], true, "{file}: {}", r.all());
        assert_eq!(
            v["pki_id"],
            oracle["peers"][format!("{peer}.org1.example.com")]["pki_id"],
            "{file}: {}",
            r.all()
        );
    }
}

/// `validate` lists an MSP folder's `signcerts/` as a node does: an entry that is not a
/// file (a link leading nowhere, a FIFO) is left out with a warning on stderr naming it,
/// and a FIFO is never opened.
#[cfg(unix)]
#[test]
fn validate_reports_the_entries_it_leaves_out() {
    let (_dir, org, trust) = org_b_trusted();
    let peer_msp = org.join(format!("peers/peer0.{}/msp", ORG_B.1));
    let signcerts = peer_msp.join("signcerts");
    std::os::unix::fs::symlink("/nonexistent/cert.pem", signcerts.join("gone.pem"))
        .expect("symlink");
    let fifo = signcerts.join("fifo.pem");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &trust,
            peer_msp.to_str().expect("utf-8"),
        ],
        0,
    );
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.all());
    for (name, why) in [("gone.pem", "failed to stat"), ("fifo.pem", "a FIFO")] {
        let path = signcerts.join(name).display().to_string();
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains(&path) && l.contains(why)),
            "{name}: {}",
            r.all()
        );
    }
}

/// `validate` refuses a certificate file over the MSP files' cap with status 2, naming the
/// file and the cap, before reading it.
#[test]
fn validate_refuses_a_file_over_the_cap() {
    let (dir, _org, trust) = org_b_trusted();
    // 4 MiB and a byte, sparse.
    let big = dir.path().join("big.pem");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((4 << 20) + 1))
        .expect("sparse file");
    let r = run_expect(
        &["validate", "--trust", &trust, big.to_str().expect("utf-8")],
        2,
    );
    assert!(
        r.stderr
            .contains(&format!("{}: larger than 4194304 bytes", big.display())),
        "{}",
        r.all()
    );
}
