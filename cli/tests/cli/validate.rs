//! `validate`: certificates judged as a node would judge them, the PKI-ID Fabric gives a
//! high-S certificate, the MSP folder entries left out, and the size cap of the files.

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
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
    let (_dir, org, trust) = org_b_trusted();
    let msp = org.join("msp");
    let peer_msp = org.join(format!("peers/peer0.{}/msp", ORG_B.1));
    let args = [
        "validate",
        "--trust",
        &trust,
        peer_msp.to_str().expect("utf-8"),
    ];
    let ok = run_expect(&args, 0);
    let v = lines(&ok);
    assert_eq!(v.len(), 1, "{}", ok.all());
    assert_eq!(v[0]["valid"], true, "{}", ok.all());
    assert_eq!(v[0]["msp_id"], ORG_B.0);
    assert_eq!(v[0]["msp_id_from"], "only_trusted");
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

/// Each JSON line of `validate`'s output.
fn lines(r: &Run) -> Vec<Value> {
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// With several MSPs trusted and no `--msp-id`, one run judges a whole crypto tree: each
/// certificate as a member of the MSP whose CA issued it (`msp_id_from` "issuer"); one no
/// trusted CA issued is refused with no MSP (status 1), the others still judged; one that
/// CAs of two trusted MSPs issue is refused as usage, naming both (status 2). `--msp-id`
/// still decides when given.
#[test]
fn validate_takes_each_certificate_s_msp_from_its_issuer() {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen(dir.path());
    keygen_orgs(dir.path(), &["OrgCMSP:c.example.com:1"]);
    let orgs = dir.path().join("peerOrganizations");
    let org_msp = |domain: &str| orgs.join(domain).join("msp").display().to_string();
    let peer = |n: u32, domain: &str| {
        orgs.join(domain)
            .join(format!("peers/peer{n}.{domain}/msp"))
            .display()
            .to_string()
    };
    let trust_a = format!("{}={}", ORG_A.0, org_msp(ORG_A.1));
    let trust_b = format!("{}={}", ORG_B.0, org_msp(ORG_B.1));
    let (a0, a1, b0) = (peer(0, ORG_A.1), peer(1, ORG_A.1), peer(0, ORG_B.1));
    let both = ["validate", "--trust", &trust_a, "--trust", &trust_b];
    let r = run_expect(&[&both[..], &[&a0, &a1, &b0]].concat(), 0);
    let v = lines(&r);
    assert_eq!(v.len(), 3, "{}", r.all());
    for (line, msp) in v.iter().zip([ORG_A.0, ORG_A.0, ORG_B.0]) {
        assert_eq!(line["valid"], true, "{line}");
        assert_eq!(line["msp_id"], msp, "{line}");
        assert_eq!(line["msp_id_from"], "issuer", "{line}");
    }
    // The PKI-ID is that of the MSP inferred, as with --msp-id.
    let named = run_expect(&[&both[..], &["--msp-id", ORG_B.0, &b0]].concat(), 0);
    let named = lines(&named);
    assert_eq!(named[0]["pki_id"], v[2]["pki_id"], "{}", named[0]);
    assert_eq!(named[0]["msp_id_from"], "flag", "{}", named[0]);

    // --msp-id wins: B's peer then claims OrgAMSP and is refused.
    let r = run_expect(&[&both[..], &["--msp-id", ORG_A.0, &a0, &b0]].concat(), 1);
    let v = lines(&r);
    assert_eq!(v[0]["valid"], true, "{}", r.all());
    assert_eq!(v[1]["valid"], false, "{}", r.all());
    assert_eq!(v[1]["msp_id"], ORG_A.0, "{}", r.all());
    assert_eq!(v[1]["refused"], "untrusted_certificate", "{}", r.all());

    // C's peer: no trusted CA issued it; refused, and B's peer after it still judged.
    let c0 = peer(0, "c.example.com");
    let r = run_expect(&[&both[..], &[&c0, &b0]].concat(), 1);
    let v = lines(&r);
    assert_eq!(v.len(), 2, "{}", r.all());
    assert_eq!(v[0]["valid"], false, "{}", r.all());
    assert_eq!(v[0]["msp_id"], Value::Null, "{}", r.all());
    assert_eq!(v[0]["refused"], "untrusted_certificate", "{}", r.all());
    assert_eq!(
        v[0]["error"],
        "untrusted certificate: not issued by any CA of OrgAMSP, OrgBMSP",
        "{}",
        r.all()
    );
    assert!(v[0].get("hint").is_none(), "{}", r.all());
    assert_eq!(v[1]["valid"], true, "{}", r.all());

    // A's CAs trusted under a second MSP ID too: which MSP A's peer claims is for the
    // operator to say.
    let twice = format!("OrgA2MSP={}", org_msp(ORG_A.1));
    let r = run_expect(&[&both[..], &["--trust", &twice, &a0]].concat(), 2);
    assert!(
        r.stderr.contains(&format!(
            "{a0}/signcerts/peer0.{}-cert.pem: issued by a CA of each of OrgA2MSP, OrgAMSP; \
             --msp-id: say which one it claims",
            ORG_A.1
        )),
        "{}",
        r.all()
    );
}

/// `validate` points at what was meant: a peer folder given for its MSP folder gets the
/// hint `--msp-dir` gives; an organization folder as `--trust` gets its hint without a
/// warning for each sub-folder before it; a TLS certificate, refused as no enrollment CA
/// of the MSP issued it, is named one, with the MSP (or the channel) whose TLS CA issued it.
#[test]
fn validate_hints_at_the_folder_or_the_certificate_meant() {
    let (dir, org, trust) = org_b_trusted();
    let peer_dir = org.join(format!("peers/peer0.{}", ORG_B.1));
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &trust,
            peer_dir.to_str().expect("utf-8"),
        ],
        2,
    );
    let hint = format!(
        "{}: a folder must be an MSP folder with signcerts/\n  hint: did you mean {}?",
        peer_dir.display(),
        peer_dir.join("msp").display()
    );
    assert!(r.stderr.contains(&hint), "{hint}\n{}", r.all());

    let org_folder = format!("{}={}", ORG_B.0, org.display());
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &org_folder,
            peer_dir.join("msp").to_str().expect("utf-8"),
        ],
        2,
    );
    let hint = format!(
        "--trust {org_folder}: {}: no root CA certificate found\n  hint: did you mean {}?",
        org.display(),
        org.join("msp").display()
    );
    assert!(r.stderr.contains(&hint), "{hint}\n{}", r.all());
    assert!(
        !r.stderr.contains("WARN") && !r.stderr.contains("not a regular file"),
        "{}",
        r.all()
    );
    // A folder of CA files beside sub-folders is read as before: its sub-folders warned of.
    std::fs::copy(
        org.join(format!("msp/cacerts/ca.{}-cert.pem", ORG_B.1)),
        org.join("ca.pem"),
    )
    .expect("copy");
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &org_folder,
            peer_dir.join("msp").to_str().expect("utf-8"),
        ],
        0,
    );
    assert!(
        r.stderr.contains(&format!(
            "{}: not a regular file (a directory); skipped",
            org.join("peers").display()
        )),
        "{}",
        r.all()
    );

    let tls_cert = peer_dir.join("tls/server.crt");
    let tls_cert = tls_cert.to_str().expect("utf-8");
    let tls_hint = format!(
        "a TLS certificate: issued by the TLS CA of {} (tlscacerts/); validate judges \
         enrollment certificates, an MSP folder's signcerts/, which peers present as their \
         identity",
        ORG_B.0
    );
    let r = run_expect(&["validate", "--trust", &trust, tls_cert], 1);
    let v = lines(&r);
    assert_eq!(v[0]["refused"], "untrusted_certificate", "{}", r.all());
    assert_eq!(v[0]["hint"], tls_hint.as_str(), "{}", r.all());
    // So with two MSPs trusted, where no MSP is inferred for it.
    let trust_a = format!(
        "{}={}",
        ORG_A.0,
        dir.path()
            .join("peerOrganizations")
            .join(ORG_A.1)
            .join("msp")
            .display()
    );
    let r = run_expect(
        &["validate", "--trust", &trust_a, "--trust", &trust, tls_cert],
        1,
    );
    let v = lines(&r);
    assert_eq!(v[0]["msp_id"], Value::Null, "{}", r.all());
    assert_eq!(v[0]["hint"], tls_hint.as_str(), "{}", r.all());
    // Claiming OrgAMSP (--msp-id), it is refused as issued by no CA of OrgAMSP; the hint
    // names B's TLS CA all the same.
    let r = run_expect(
        &[
            "validate", "--trust", &trust_a, "--trust", &trust, "--msp-id", ORG_A.0, tls_cert,
        ],
        1,
    );
    assert_eq!(lines(&r)[0]["hint"], tls_hint.as_str(), "{}", r.all());
    // With a channel's block as the trust, the hint names the channel.
    let channel = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/channel");
    let r = run_expect(
        &[
            "validate",
            "--channel-config",
            channel.join("mychannel.block").to_str().expect("utf-8"),
            channel
                .join("peers/peer0.org1.example.com/tls/server.crt")
                .to_str()
                .expect("utf-8"),
        ],
        1,
    );
    assert_eq!(
        lines(&r)[0]["hint"],
        "a TLS certificate: issued by the TLS CA of an organization of channel mychannel; \
         validate judges enrollment certificates, an MSP folder's signcerts/, which peers \
         present as their identity",
        "{}",
        r.all()
    );
    // An enrollment certificate refused as untrusted gets no such hint.
    let a_peer = dir
        .path()
        .join("peerOrganizations")
        .join(ORG_A.1)
        .join(format!("peers/peer0.{}/msp", ORG_A.1));
    let r = run_expect(
        &[
            "validate",
            "--trust",
            &trust,
            "--msp-id",
            ORG_B.0,
            a_peer.to_str().expect("utf-8"),
        ],
        1,
    );
    let v = lines(&r);
    assert_eq!(v[0]["refused"], "untrusted_certificate", "{}", r.all());
    assert!(v[0].get("hint").is_none(), "{}", r.all());
}

/// An MSP folder as cryptogen writes an orderer organization's: `cacerts/` holding the
/// CA `ca_file` of `msp/tests/fixtures/high_s/`, `config.yaml` (cryptogen's, NodeOUs on)
/// with `Enable` as given, and peer1's certificate in `signcerts/`.
fn cryptogen_msp(ca_file: &str, node_ous: bool) -> (tempfile::TempDir, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/high_s");
    let dir = tempfile::tempdir().expect("tempdir");
    let msp = dir.path().join("msp");
    for sub in ["cacerts", "signcerts"] {
        std::fs::create_dir_all(msp.join(sub)).expect("mkdir");
    }
    std::fs::copy(
        fixtures.join(ca_file),
        msp.join("cacerts/ca.org1.example.com-cert.pem"),
    )
    .expect("copy");
    std::fs::copy(
        fixtures.join("peer1-signcert.pem"),
        msp.join("signcerts/peer1.pem"),
    )
    .expect("copy");
    let config = std::fs::read_to_string(fixtures.join("config.yaml")).expect("config.yaml");
    let config = if node_ous {
        config
    } else {
        config.replace("Enable: true", "Enable: false")
    };
    std::fs::write(msp.join("config.yaml"), config).expect("write");
    (dir, msp)
}

/// `validate` warns of an MSP Fabric v2.4.9 (built with Go 1.19 or later) cannot set up:
/// a root CA with a high-S
/// self-signature that NodeOUs name (the live check's orderer panicked on it), in a
/// `warning` line before the certificates' naming the MSP, the file, the subject, the
/// roles and what Fabric does; the certificates are judged as before and the status stays
/// 0. With NodeOUs off, and for the low-S CA with NodeOUs on, no warning.
#[test]
fn validate_warns_of_a_high_s_root_fabric_cannot_set_up() {
    let (_dir, msp) = cryptogen_msp("ca-high-s.pem", true);
    let trust = format!("OrdererMSP={}", msp.display());
    let args = ["validate", "--trust", &trust, msp.to_str().expect("utf-8")];
    let r = run_expect(&args, 0);
    let v = lines(&r);
    assert_eq!(v.len(), 2, "{}", r.all());
    let w = &v[0];
    assert_eq!(w["event"], "warning", "{}", r.all());
    assert_eq!(w["kind"], "fabric_cannot_set_up_msp");
    assert_eq!(w["msp_id"], "OrdererMSP");
    let ca = msp.join("cacerts/ca.org1.example.com-cert.pem");
    assert_eq!(w["certificate"], ca.display().to_string());
    let subject = w["subject"].as_str().expect("subject");
    assert!(subject.starts_with("CN=ca.org1.example.com,"), "{subject}");
    assert_eq!(
        w["named_by"].as_array().map(Vec::len),
        Some(4),
        "{}",
        r.all()
    );
    let config = msp.join("config.yaml").display().to_string();
    assert_eq!(
        w["configured_in"],
        serde_json::json!([config]),
        "{}",
        r.all()
    );
    let message = w["message"].as_str().expect("message");
    for part in [
        "OrdererMSP: Fabric v2.4.9 cannot set up this MSP when built with Go 1.19 or later",
        "hyperledger/fabric#3774",
        subject,
        &ca.display().to_string(),
        "high-S self-signature",
        "NodeOUs peer role",
        &format!("in {config};"),
        "certificate signed by unknown authority",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert_eq!(v[1]["event"], "identity");
    assert_eq!(v[1]["valid"], true, "{}", r.all());

    for (ca_file, node_ous) in [("ca-high-s.pem", false), ("ca.pem", true)] {
        let (_dir, msp) = cryptogen_msp(ca_file, node_ous);
        let trust = format!("OrdererMSP={}", msp.display());
        let r = run_expect(
            &["validate", "--trust", &trust, msp.to_str().expect("utf-8")],
            0,
        );
        let v = lines(&r);
        assert_eq!(v.len(), 1, "{ca_file} {node_ous}: {}", r.all());
        assert_eq!(v[0]["event"], "identity", "{}", r.all());
        assert_eq!(v[0]["valid"], true, "{}", r.all());
    }
}

/// A node started with such an MSP folder as its own (`--msp-dir`) starts, and warns on
/// stderr as `validate` does, once.
#[test]
fn a_node_with_a_high_s_root_fabric_cannot_set_up_warns_at_start_and_reload() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/high_s");
    let (_dir, msp) = cryptogen_msp("ca-high-s.pem", true);
    std::fs::create_dir_all(msp.join("keystore")).expect("mkdir");
    std::fs::copy(fixtures.join("peer1-key.pem"), msp.join("keystore/priv_sk")).expect("copy");
    let (mut d, _addr) = daemon_on_a_free_port(&[
        "--msp-dir",
        msp.to_str().expect("utf-8"),
        "--msp-id",
        "OrdererMSP",
    ]);
    // Reading the trust again warns again (the folder may have been fixed meanwhile).
    d.send_line(r#"{"cmd":"reload_trust"}"#);
    d.wait("trust_reloaded", is("trust_reloaded"));
    d.stop_ok();
    let stderr = d.stderr();
    let warned: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Fabric v2.4.9 cannot set up this MSP"))
        .collect();
    assert_eq!(warned.len(), 2, "at start and at the reload: {stderr}");
    for line in warned {
        assert!(line.contains("WARN"), "{stderr}");
        assert!(line.contains("CN=ca.org1.example.com"), "{stderr}");
    }
}
