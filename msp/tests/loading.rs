//! Loading identities and trust from disk: the cryptogen layout `dev::generate` writes,
//! PEM files, SEC1 keys, and errors that name the file at fault.
use crate::common;
use common::pki::*;
use fabric_gossip_core::{Security, SecurityError};
use fabric_gossip_msp::dev::{self, DevError, Layout, OrgSpec};
use fabric_gossip_msp::{LoadError, MspSecurity, TrustStore};
use std::path::{Path, PathBuf};

/// A scratch directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("fabric-gossip-msp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generate(dir: &Path) -> Layout {
    dev::generate(
        dir,
        &[
            OrgSpec::new(ORG1, "org1.example.com", 2),
            OrgSpec::new(ORG2, "org2.example.com", 1),
        ],
        year(),
        &mut rng(3),
    )
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn cryptogen_layout_is_written_and_loads() {
    let s = Scratch::new("layout");
    let layout = generate(&s.0);
    let org1 = &layout.orgs[0];
    let p0 = &org1.peers[0];
    assert_eq!(org1.msp_id, ORG1);
    assert_eq!(p0.host, "peer0.org1.example.com");
    for f in [
        "peerOrganizations/org1.example.com/msp/cacerts/ca.org1.example.com-cert.pem",
        "peerOrganizations/org1.example.com/msp/tlscacerts/tlsca.org1.example.com-cert.pem",
        "peerOrganizations/org1.example.com/msp/config.yaml",
        "peerOrganizations/org1.example.com/ca/priv_sk",
        "peerOrganizations/org1.example.com/tlsca/priv_sk",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/msp/signcerts/peer0.org1.example.com-cert.pem",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/msp/keystore/priv_sk",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/msp/cacerts/ca.org1.example.com-cert.pem",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/tls/ca.crt",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/tls/server.crt",
        "peerOrganizations/org1.example.com/peers/peer0.org1.example.com/tls/server.key",
        "peerOrganizations/org2.example.com/peers/peer0.org2.example.com/msp/keystore/priv_sk",
    ] {
        assert!(s.0.join(f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p0.msp_dir.join("keystore/priv_sk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
        assert_eq!(p0.tls_key, p0.tls_dir.join("server.key"));
    }

    // Own identity from the peer's MSP folder (its cacerts trusted automatically), and the
    // other organization trusted through its organization MSP folder.
    let mut trust = TrustStore::new();
    trust.add_msp_dir(ORG2, &layout.orgs[1].msp_dir).unwrap();
    let a = MspSecurity::from_msp_dir(&p0.msp_dir, ORG1, trust).unwrap();
    assert!(a.trust().contains(ORG1) && a.trust().contains(ORG2));
    let mut trust = TrustStore::new();
    trust.add_msp_dir(ORG1, &org1.msp_dir).unwrap();
    let b = MspSecurity::from_msp_dir(&layout.orgs[1].peers[0].msp_dir, ORG2, trust).unwrap();
    let sig = a.sign(b"msg").unwrap();
    b.verify(&a.own_identity(), &sig, b"msg").unwrap();
    b.validate_identity(&a.own_identity(), now()).unwrap();
    a.validate_identity(&b.own_identity(), now()).unwrap();
    // The same identity from PEM files.
    let c = MspSecurity::from_pem_files(
        p0.msp_dir.join("signcerts/peer0.org1.example.com-cert.pem"),
        p0.msp_dir.join("keystore/priv_sk"),
        ORG1,
        a.trust().as_ref().clone(),
    )
    .unwrap();
    assert_eq!(c.own_identity(), a.own_identity());
    // The TLS key matches the TLS certificate, which chains to the TLS CA.
    let mut tls_trust = TrustStore::new();
    tls_trust.add_path(ORG1, &p0.tls_ca).unwrap();
    MspSecurity::from_pem_files(&p0.tls_cert, &p0.tls_key, ORG1, tls_trust).unwrap();

    // Generating again into the same place is refused, and nothing is overwritten.
    let before = std::fs::read(p0.msp_dir.join("keystore/priv_sk")).unwrap();
    let again = dev::generate(
        &s.0,
        &[OrgSpec::new(ORG1, "org1.example.com", 1)],
        year(),
        &mut rng(4),
    );
    assert!(matches!(again, Err(DevError::Exists(_))), "{again:?}");
    assert_eq!(
        before,
        std::fs::read(p0.msp_dir.join("keystore/priv_sk")).unwrap()
    );
}

/// A folder that cannot be made is `DevError::Io` naming the path, with the operating
/// system's reason told once: in the text, not again behind `source()`.
#[test]
fn generating_where_no_folder_can_be_made_names_the_path() {
    let s = Scratch::new("dev-io");
    let file = s.0.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let err = dev::generate(
        file.join("out"),
        &[OrgSpec::new(ORG1, "org1.example.com", 1)],
        year(),
        &mut rng(5),
    )
    .expect_err("a folder inside a file");
    let DevError::Io { path, error } = &err else {
        panic!("{err:?}")
    };
    assert!(path.starts_with(&file), "{path:?}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(text.matches(&error.to_string()).count(), 1, "{text}");
    assert!(std::error::Error::source(&err).is_none());
}

#[test]
fn trust_paths_of_every_shape() {
    let s = Scratch::new("paths");
    let layout = generate(&s.0);
    let msp = &layout.orgs[0].msp_dir;
    for (what, path) in [
        ("MSP folder", msp.clone()),
        ("folder of CA files", msp.join("cacerts")),
        (
            "one CA file",
            msp.join("cacerts/ca.org1.example.com-cert.pem"),
        ),
    ] {
        let mut t = TrustStore::new();
        assert_eq!(t.add_path(ORG1, &path).unwrap(), 1, "{what}");
        assert_eq!(t.msp_ids().collect::<Vec<_>>(), vec![ORG1]);
    }
    // A peer folder's tlscacerts is not an identity CA for the organization.
    let mut t = TrustStore::new();
    t.add_path(ORG1, msp.join("tlscacerts")).unwrap();
    let a = MspSecurity::from_msp_dir(&layout.orgs[0].peers[0].msp_dir, ORG1, TrustStore::new())
        .unwrap();
    let checker = MspSecurity::from_msp_dir(&layout.orgs[1].peers[0].msp_dir, ORG2, t).unwrap();
    assert!(matches!(
        checker.validate_identity(&a.own_identity(), now()),
        Err(SecurityError::UntrustedCertificate(_))
    ));
}

/// `add_msp_dir` counts every certificate and CRL it trusts anew, from each of the
/// folder's sub-folders, and nothing when the same folder is added again.
#[test]
fn an_msp_folder_counts_what_it_adds() {
    let s = Scratch::new("counted");
    let mut rng = rng(6);
    let orgs = dev::generate_in_memory(
        &[OrgSpec::new(ORG1, "org1.example.com", 2)],
        year(),
        &mut rng,
    )
    .unwrap();
    let layout = dev::write_orgs(&s.0, &orgs).unwrap();
    let msp = &layout.orgs[0].msp_dir;
    let ica = orgs[0]
        .ca
        .intermediate("ica.org1.example.com", year(), &mut rng);
    for (folder, pem) in [
        ("intermediatecerts", ica.unwrap().cert_pem()),
        (
            "crls",
            crl(&orgs[0].ca, &[&orgs[0].peers[0], &orgs[0].peers[1]]),
        ),
    ] {
        std::fs::create_dir_all(msp.join(folder)).unwrap();
        std::fs::write(msp.join(folder).join("1.pem"), pem).unwrap();
    }
    let mut trust = TrustStore::new();
    assert_eq!(trust.add_msp_dir(ORG1, msp).unwrap(), 3);
    assert_eq!(
        (trust.ca_count(ORG1), trust.crl_count(ORG1)),
        ((1, 1), (1, 2))
    );
    assert_eq!(trust.add_msp_dir(ORG1, msp).unwrap(), 0);
}

fn expect_err(r: Result<MspSecurity, LoadError>) -> LoadError {
    match r {
        Ok(s) => panic!("loaded {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn loading_errors_name_the_file_at_fault() {
    let s = Scratch::new("errors");
    let layout = generate(&s.0);
    let good = &layout.orgs[0].peers[0].msp_dir;
    let other = &layout.orgs[0].peers[1].msp_dir;
    let fresh = |name: &str| {
        let d = s.0.join(name);
        copy_dir(good, &d);
        d
    };

    // Each case spoils a fresh copy of the peer's folder (given it and another peer's
    // folder) and names what loading it must report.
    type Spoil = fn(&Path, &Path);
    type Expect = fn(&LoadError) -> bool;
    let cases: [(&str, Spoil, Expect); 6] = [
        (
            "missing-folder",
            |d, _| std::fs::remove_dir_all(d).unwrap(),
            |e| matches!(e, LoadError::Io { path, .. } if path.ends_with("missing-folder/signcerts")),
        ),
        (
            "empty-keystore",
            |d, _| std::fs::remove_file(d.join("keystore/priv_sk")).unwrap(),
            |e| matches!(e, LoadError::Empty { path, .. } if path.ends_with("keystore")),
        ),
        (
            // A keystore holding only garbage: the error names the garbage file.
            "garbage-key",
            |d, _| std::fs::write(d.join("keystore/priv_sk"), "not a key").unwrap(),
            |e| {
                matches!(e, LoadError::Key { source, .. } if source.ends_with("priv_sk"))
                    && e.to_string().contains("priv_sk")
            },
        ),
        (
            // Another peer's key.
            "wrong-key",
            |d, other| {
                std::fs::copy(other.join("keystore/priv_sk"), d.join("keystore/priv_sk")).unwrap();
            },
            |e| matches!(e, LoadError::KeyMismatch { .. }),
        ),
        (
            // A key where the signing certificate should be.
            "key-as-cert",
            |d, _| {
                let cert = d.join("signcerts/peer0.org1.example.com-cert.pem");
                std::fs::copy(d.join("keystore/priv_sk"), cert).unwrap();
            },
            |e| matches!(e, LoadError::Pem { source, .. } if source.ends_with("-cert.pem")),
        ),
        (
            // No cacerts and nothing in the trust store: the own identity is refused at
            // start-up.
            "no-cacerts",
            |d, _| std::fs::remove_dir_all(d.join("cacerts")).unwrap(),
            |e| {
                matches!(
                    e,
                    LoadError::OwnIdentity {
                        error: SecurityError::UnknownMsp(_),
                        ..
                    }
                )
            },
        ),
    ];
    for (name, spoil, expected) in cases {
        let d = fresh(name);
        spoil(&d, other);
        let e = expect_err(MspSecurity::from_msp_dir(&d, ORG1, TrustStore::new()));
        assert!(expected(&e), "{name}: {e}");
        // The reason is in the text (the I/O error's, the refusal's), not again behind
        // `source()`, where a reporter printing the chain would say it twice.
        assert!(std::error::Error::source(&e).is_none(), "{name}: {e:?}");
    }

    // Junk next to the right key is ignored (Fabric's keystore ignores it too), and so is
    // a Fabric CA style `<ski>_sk` name.
    let d = fresh("junk-beside-key");
    std::fs::rename(d.join("keystore/priv_sk"), d.join("keystore/0123abcd_sk")).unwrap();
    std::fs::write(d.join("keystore/README"), "junk").unwrap();
    MspSecurity::from_msp_dir(&d, ORG1, TrustStore::new()).unwrap();

    // An empty cacerts folder is an error of the trust store, naming the folder.
    let mut t = TrustStore::new();
    let empty = s.0.join("empty-cacerts/cacerts");
    std::fs::create_dir_all(&empty).unwrap();
    let e = t.add_msp_dir(ORG1, s.0.join("empty-cacerts")).unwrap_err();
    assert!(
        matches!(&e, LoadError::Empty { path, .. } if *path == empty),
        "{e}"
    );
}

#[test]
fn sec1_keys_load_and_encrypted_keys_are_refused_clearly() {
    use p256::pkcs8::DecodePrivateKey;
    let pki = two_orgs();
    let peer = &pki.orgs[0].peers[0];
    let key = p256::SecretKey::from_pkcs8_pem(&peer.identity.key_pem).unwrap();
    let sec1 = key.to_sec1_pem(p256::pkcs8::LineEnding::LF).unwrap();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    let s = load(ORG1, &peer.identity, &sec1, pki.trust.clone()).unwrap();
    assert_eq!(s.own_identity(), pki.security(0, 0).own_identity());
    // OpenSSL's output with its "EC PARAMETERS" block first.
    let with_params = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{}",
        sec1.as_str()
    );
    load(ORG1, &peer.identity, &with_params, pki.trust.clone()).unwrap();
    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let e = expect_err(load(ORG1, &peer.identity, encrypted, pki.trust.clone()));
    assert!(
        matches!(&e, LoadError::Key { reason, .. } if reason.contains("encrypted")),
        "{e}"
    );
}

/// Real Fabric MSP material, from a checkout of hyperledger/fabric named by
/// `FABRIC_REPO` (its `sampleconfig/msp` and `msp/testdata`). Not shipped here, so ignored
/// by default: `FABRIC_REPO=/path/to/fabric cargo test -p fabric-gossip-msp --test suite loading:: -- --ignored`.
#[test]
#[ignore = "needs a checkout of hyperledger/fabric in FABRIC_REPO"]
fn fabric_repository_msp_folders_load() {
    let root = PathBuf::from(std::env::var("FABRIC_REPO").expect("FABRIC_REPO"));
    let td = root.join("msp/testdata");
    let mut loaded = Vec::new();
    for (dir, msp) in [
        (root.join("sampleconfig/msp"), "SampleOrg"),
        (td.join("intermediate"), "SampleOrg"),
        (td.join("external"), "SampleOrg"),
        (td.join("mspid"), "SampleOrg"),
        (td.join("nodeous1"), "SampleOrg"),
        (td.join("expired"), "SampleOrg"),
    ] {
        let s = MspSecurity::from_msp_dir(&dir, msp, TrustStore::new())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let id = s.own_identity();
        let sig = s.sign(b"fabric").unwrap();
        s.verify(&id, &sig, b"fabric").unwrap();
        let valid_at =
            s.own_expiration().expect("expires before 2554") - core::time::Duration::from_secs(1);
        s.validate_identity(&id, valid_at).unwrap();
        loaded.push((dir, s));
    }
    // Our identity bytes are the PEM Go's tools wrote, byte for byte, so PKI-IDs agree with
    // Fabric's for the same certificate.
    let (_, sample) = &loaded[0];
    let written = std::fs::read(root.join("sampleconfig/msp/signcerts/peer.pem")).unwrap();
    assert_eq!(
        fabric_gossip_msp::certificate_pem(sample.certificate_der()).as_bytes(),
        written.as_slice()
    );
    // The expired sample is refused now; identities of one sample MSP are untrusted by
    // another's CA.
    let (_, expired) = &loaded[5];
    let now = fabric_gossip_core::Instant::from_system_time(std::time::SystemTime::now());
    assert!(matches!(
        expired.validate_identity(&expired.own_identity(), now),
        Err(SecurityError::Expired(_))
    ));
    let (_, sample) = &loaded[0];
    let (_, inter) = &loaded[1];
    assert!(matches!(
        sample.validate_identity(
            &inter.own_identity(),
            inter.own_expiration().expect("expires before 2554")
                - core::time::Duration::from_secs(1)
        ),
        Err(SecurityError::UntrustedCertificate(_))
    ));
}

/// Runs `f` on this thread and returns what it logged too (tracing's formatter, plain).
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&lines.0.lock().unwrap()).into_owned();
    (r, text)
}

/// Runs `f` on a thread of its own and returns its result, or fails the test if it has
/// not returned within 30 s (a FIFO opened for reading blocks until a writer comes).
fn within_deadline<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: still loading after 30 s (blocked on a FIFO?)"))
}

/// A file of `len` bytes that takes no disk space (sparse).
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Every MSP file is refused past `MAX_FILE_BYTES`, naming the file and the cap, before it
/// is read: a 259 MB `cacerts` PEM had been read whole (972 MB resident). The cap's
/// enforcement while reading (a file that grows) is `files::tests`.
#[test]
fn files_over_the_cap_are_refused_naming_the_file() {
    use fabric_gossip_msp::MAX_FILE_BYTES;
    let s = Scratch::new("oversized");
    let layout = generate(&s.0);
    let good = &layout.orgs[0].peers[0].msp_dir;
    let too_large = |path: &Path, e: &LoadError| {
        matches!(e, LoadError::TooLarge { path: p, limit } if p == path && *limit == MAX_FILE_BYTES)
            && e.to_string().contains(&MAX_FILE_BYTES.to_string())
    };
    // Each MSP file the loader reads, made one byte over the cap in a fresh copy.
    for file in [
        "cacerts/ca.org1.example.com-cert.pem",
        "intermediatecerts/ica.pem",
        "crls/crl.pem",
        "config.yaml",
        "signcerts/peer0.org1.example.com-cert.pem",
        "keystore/priv_sk",
    ] {
        let d = s.0.join(file.replace(['/', '.'], "-"));
        copy_dir(good, &d);
        let path = d.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        sparse(&path, MAX_FILE_BYTES + 1);
        let e = expect_err(MspSecurity::from_msp_dir(&d, ORG1, TrustStore::new()));
        assert!(too_large(&path, &e), "{file}: {e:?}");
    }
    // Files named one by one: a trusted CA file, a certificate and key pair.
    let big = s.0.join("big.pem");
    sparse(&big, MAX_FILE_BYTES + 1);
    let e = TrustStore::new().add_path(ORG1, &big).unwrap_err();
    assert!(too_large(&big, &e), "{e:?}");
    let key = good.join("keystore/priv_sk");
    let e = expect_err(MspSecurity::from_pem_files(
        &big,
        &key,
        ORG1,
        TrustStore::new(),
    ));
    assert!(too_large(&big, &e), "{e:?}");
    // A certificate of a CA bundle's size loads.
    let ca = std::fs::read(good.join("cacerts/ca.org1.example.com-cert.pem")).unwrap();
    let bundle = s.0.join("bundle.pem");
    std::fs::write(&bundle, ca.repeat(200)).unwrap();
    assert_eq!(TrustStore::new().add_path(ORG1, &bundle).unwrap(), 1);
}

/// An MSP folder's entries that are not regular files are left out with a warning naming
/// each and why (a link that leads nowhere, a FIFO, a socket, a sub-folder), and a FIFO is
/// never opened (it would block); links to regular files load, as Kubernetes mounts
/// secrets; hidden entries are skipped silently. A FIFO named as a file is refused.
#[cfg(unix)]
#[test]
fn entries_that_are_not_files_are_left_out_with_a_warning() {
    use std::os::unix::fs::symlink;
    let s = Scratch::new("not-files");
    let layout = generate(&s.0);
    let msp = layout.orgs[0].msp_dir.clone();
    let cacerts = msp.join("cacerts");
    let ca = cacerts.join("ca.org1.example.com-cert.pem");
    // Kubernetes' layout: the files in a hidden timestamped folder, `..data` linking to
    // it, and each name a link through `..data`.
    let stamped = cacerts.join("..2026_12_03_10_00_00.000000001");
    std::fs::create_dir(&stamped).unwrap();
    std::fs::rename(&ca, stamped.join("ca.pem")).unwrap();
    symlink("..2026_12_03_10_00_00.000000001", cacerts.join("..data")).unwrap();
    // Under the name config.yaml gives it.
    symlink("..data/ca.pem", &ca).unwrap();
    std::fs::write(cacerts.join(".hidden.pem"), "not PEM").unwrap();
    let dir = msp.clone();
    let (added, log) = within_deadline("a Kubernetes-style folder", move || {
        logged(|| TrustStore::new().add_msp_dir(ORG1, &dir))
    });
    assert_eq!(added.unwrap(), 1, "{log}");
    assert_eq!(log, "", "nothing to warn about");

    // Now with entries that are no files beside it.
    symlink("/nonexistent/ca.pem", cacerts.join("broken.pem")).unwrap();
    let fifo = cacerts.join("fifo.pem");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _socket = std::os::unix::net::UnixListener::bind(cacerts.join("socket.pem")).unwrap();
    std::fs::create_dir(cacerts.join("old")).unwrap();
    let dir = msp.clone();
    let (added, log) = within_deadline("a folder with a FIFO", move || {
        logged(|| TrustStore::new().add_msp_dir(ORG1, &dir))
    });
    assert_eq!(added.unwrap(), 1, "{log}");
    for (name, why) in [
        ("broken.pem", "failed to stat"),
        ("fifo.pem", "not a regular file (a FIFO)"),
        ("socket.pem", "not a regular file (a socket)"),
        ("old", "not a regular file (a directory)"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{}", cacerts.join(name).display())))
            .unwrap_or_else(|| panic!("{name} not reported:\n{log}"));
        assert!(
            line.contains("WARN") && line.contains(why) && line.contains("skipped"),
            "{line}"
        );
    }
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(!log.contains(".hidden") && !log.contains("..data"), "{log}");

    // A FIFO named as a file is refused without being opened.
    let key = layout.orgs[0].peers[0].msp_dir.join("keystore/priv_sk");
    let e = within_deadline("a FIFO as a CA file", {
        let fifo = fifo.clone();
        move || TrustStore::new().add_path(ORG1, &fifo).unwrap_err()
    });
    assert!(
        matches!(&e, LoadError::NotAFile { path, kind: "a FIFO" } if *path == fifo),
        "{e:?}"
    );
    let e = within_deadline("a FIFO as a certificate", move || {
        expect_err(MspSecurity::from_pem_files(
            &fifo,
            &key,
            ORG1,
            TrustStore::new(),
        ))
    });
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a regular file (a FIFO)",
            cacerts.join("fifo.pem").display()
        )
    );
}
