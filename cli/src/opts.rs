//! Options shared by the commands that run a gossip node (`node`, `ping`, `handshake`): who
//! the node is (identity) and how it talks (TLS), loaded with errors that name the flag and
//! the file at fault, since the usual mistake is a wrong path.

use clap::Args;
use fabric_gossip_core::proto::bytes::Bytes;
use fabric_gossip_core::proto::msp::SerializedIdentity;
use fabric_gossip_core::proto::prost::Message;
use fabric_gossip_core::{Config, PkiId, TestOnlyHmacSecurity};
use fabric_gossip_msp::{MspSecurity, TrustHandle, TrustStore};
use fabric_gossip_tonic::{Node, NodeBuilder, StartError, TlsConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// A configuration error: bad flag, unreadable or malformed file. Reported with exit
/// status 2, like clap's own usage errors, so scripts can tell "you asked wrongly" from
/// "the network failed" (status 1).
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prints `error: ...` to stderr and returns status 2.
pub(crate) fn config_failure(e: &ConfigError) -> std::process::ExitCode {
    eprintln!("error: {e}");
    std::process::ExitCode::from(2)
}

/// The node's own identity.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdentityArgs {
    /// Fabric's unit-test security provider, TEST ONLY (no security at all): identity =
    /// PKI-ID = the listen endpoint string (e.g. 127.0.0.1:7051), signatures are HMAC-SHA256
    /// with the public key 00 00 00. Interoperates with Fabric's own comm test peers.
    #[arg(long, conflicts_with_all = ["msp_dir", "msp_id", "trust", "channel_config"])]
    pub(crate) test_identity: bool,
    /// The node's own MSP folder (signcerts/, keystore/, cacerts/), e.g.
    /// crypto-config/peerOrganizations/org1.example.com/peers/peer0.org1.example.com/msp.
    /// Its cacerts/ and intermediatecerts/ are trusted for --msp-id, and the CRLs in its
    /// crls/ revoke, as a Fabric peer's local MSP does.
    #[arg(long, value_name = "DIR", requires = "msp_id")]
    pub(crate) msp_dir: Option<PathBuf>,
    /// The MSP ID of the node's organization, as in configtx.yaml (e.g. Org1MSP).
    #[arg(long, value_name = "ID", requires = "msp_dir")]
    pub(crate) msp_id: Option<String>,
    /// Also accept members of MSP MSPID: DIR is that organization's MSP folder (with
    /// cacerts/; its intermediatecerts/ and crls/ are read too, so a CRL placed there
    /// revokes), a folder of root CA PEM files, or one PEM file. Repeatable.
    #[arg(long, value_name = "MSPID=DIR", value_parser = parse_trust)]
    pub(crate) trust: Vec<(String, PathBuf)>,
    /// Also accept members of every organization of a channel: BLOCK is the channel's
    /// configuration block (what `peer channel fetch config` writes, or its genesis block),
    /// whose MSPs carry the CAs, CRLs and NodeOUs the channel has now. A running `node`
    /// reads it again on SIGHUP or `reload_trust`, so fetching a newer block and reloading
    /// applies a configuration update. With the membership layer, the node dials the
    /// block's anchor peers (see --membership). Repeatable.
    #[arg(long, value_name = "BLOCK")]
    pub(crate) channel_config: Vec<PathBuf>,
}

/// The trust store `--trust MSPID=DIR` flags and `--channel-config` blocks describe, read
/// from disk now; errors name the flag and the file.
pub(crate) fn trust_store(
    trust: &[(String, PathBuf)],
    blocks: &[PathBuf],
) -> Result<TrustStore, ConfigError> {
    let mut store = TrustStore::new();
    for (msp, path) in trust {
        let hint = msp_subfolder_hint(path);
        // Read as a folder of root CA files, an organization or peer folder would warn of
        // each of its sub-folders before the error, burying the hint that tells the fix.
        let added = if !hint.is_empty() && only_folders(path) {
            Err(fabric_gossip_msp::LoadError::Empty {
                path: path.clone(),
                expected: "root CA certificate",
            })
        } else {
            store.add_path(msp, path)
        };
        added.map_err(|e| ConfigError(format!("--trust {msp}={}: {e}{hint}", path.display())))?;
    }
    add_channel_configs(&mut store, blocks)?;
    Ok(store)
}

/// Warns, once per root, of the MSPs in `trust` that Fabric v2.4.9 cannot set up (see
/// [`crate::validate::unloadable_root_message`]): this node accepts them, and without the
/// warning nothing here hints why a Fabric node of that organization will not start.
fn warn_unloadable_roots(trust: &TrustStore) {
    for root in trust.fabric_unloadable_roots() {
        tracing::warn!(
            target: crate::logging::TARGET,
            "{}",
            crate::validate::unloadable_root_message(&root)
        );
    }
}

/// A hint when `dir` is an organization or peer folder (one holding its MSP folder as
/// `msp/`, as cryptogen and keygen lay them out) instead of the MSP folder itself, the
/// usual slip: its errors name a missing signcerts/ or root CA, not the folder meant.
pub(crate) fn msp_subfolder_hint(dir: &Path) -> String {
    let msp = dir.join("msp");
    let is_msp_dir = ["cacerts", "signcerts"]
        .iter()
        .any(|d| dir.join(d).is_dir());
    if msp.is_dir() && !is_msp_dir {
        format!("\n  hint: did you mean {}?", msp.display())
    } else {
        String::new()
    }
}

/// Whether every entry of `dir` that a node would list (not hidden) is a folder: nothing
/// in it can be a CA file.
fn only_folders(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .all(|e| e.file_name().to_string_lossy().starts_with('.') || e.path().is_dir())
}

/// Why `dir`, which is no directory, cannot be an MSP folder: a missing path and a file
/// call for different fixes.
pub(crate) fn not_a_dir(dir: &Path) -> &'static str {
    if dir.exists() {
        "not a directory"
    } else {
        "does not exist"
    }
}

/// Adds the MSPs of every channel configuration block in `blocks` to `trust`; returns the
/// blocks' TLS CA certificates (PEM, concatenated), for the transport. Errors name the file.
pub(crate) fn add_channel_configs(
    trust: &mut TrustStore,
    blocks: &[PathBuf],
) -> Result<Vec<u8>, ConfigError> {
    let mut tls_cas = Vec::new();
    for path in blocks {
        // The error names the file already.
        let bytes = fabric_gossip_msp::read_channel_config_file(path)
            .map_err(|e| ConfigError(format!("--channel-config {e}")))?;
        let channel = trust
            .add_channel_config(&bytes)
            .map_err(|e| ConfigError(format!("--channel-config {}: {e}", path.display())))?;
        for pem in channel.tls_ca_pems {
            tls_cas.extend_from_slice(&pem);
            if !pem.ends_with(b"\n") {
                tls_cas.push(b'\n');
            }
        }
    }
    Ok(tls_cas)
}

pub(crate) fn parse_trust(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((id, dir)) if !id.trim().is_empty() && !dir.is_empty() => {
            Ok((id.trim().to_owned(), PathBuf::from(dir)))
        }
        _ => Err(
            "expected MSPID=DIR, e.g. Org2MSP=crypto/peerOrganizations/org2.example.com/msp".into(),
        ),
    }
}

/// The identity a node runs with, loaded.
pub(crate) enum Identity {
    /// Fabric's unit-test provider: the PKI-ID is the endpoint, known once bound.
    Test,
    /// An X.509 MSP identity.
    Msp(Box<MspSecurity>),
}

/// How PKI-IDs are written on the command line and in output. Test identities are endpoint
/// strings, so they are shown as text; MSP PKI-IDs are SHA-256 digests, shown as hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PkiForm {
    /// UTF-8 text (test identities).
    Text,
    /// Lowercase hex (MSP identities).
    Hex,
}

impl PkiForm {
    /// The PKI-ID in this form.
    pub(crate) fn show(self, id: &PkiId) -> String {
        match self {
            PkiForm::Text => String::from_utf8_lossy(id.as_bytes()).into_owned(),
            PkiForm::Hex => hex::encode(id.as_bytes()),
        }
    }

    /// Reads a PKI-ID written in this form; `what` names the flag or field for errors.
    pub(crate) fn parse(self, s: &str, what: &str) -> Result<PkiId, String> {
        match self {
            PkiForm::Text => Ok(PkiId::from(s)),
            // The reason in words a user can act on (the hex crate's "Odd number of
            // digits" for an endpoint typed here said nothing useful).
            PkiForm::Hex => hex::decode(s).map(PkiId::from).map_err(|_| {
                let why = match s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
                    Some((i, c)) => format!(
                        "{c:?} (character {}) is not a hex digit",
                        s[..i].chars().count() + 1
                    ),
                    None => format!("it has {} digits, an odd number", s.len()),
                };
                let endpoint = if s.contains(':') {
                    "; an endpoint stands for the PKI-ID only under --test-identity"
                } else {
                    ""
                };
                format!("{what} {s:?}: MSP PKI-IDs are written in hex (64 digits): {why}{endpoint}")
            }),
        }
    }
}

impl Identity {
    /// How this node's PKI-IDs (its own and its peers') are written.
    pub(crate) fn pki_form(&self) -> PkiForm {
        match self {
            Identity::Test => PkiForm::Text,
            Identity::Msp(_) => PkiForm::Hex,
        }
    }

    /// What the node trusts, for an MSP identity (see [`trust_summary`]).
    pub(crate) fn trust_summary(&self) -> Option<serde_json::Value> {
        let Identity::Msp(s) = self else { return None };
        Some(trust_summary(&s.trust()))
    }

    /// The channel configuration blocks the node trusts, for an MSP identity given
    /// `--channel-config` (see [`channels_summary`]).
    pub(crate) fn channels_summary(&self) -> Option<serde_json::Value> {
        let Identity::Msp(s) = self else { return None };
        channels_summary(&s.trust())
    }

    /// The handle that replaces the running node's trust store, for an MSP identity.
    pub(crate) fn trust_handle(&self) -> Option<TrustHandle> {
        match self {
            Identity::Test => None,
            Identity::Msp(s) => Some(s.trust_handle()),
        }
    }

    /// The enrollment certificate's NotAfter, for an MSP identity: `Err` only if the loaded
    /// certificate cannot be read again, which loading it rules out.
    pub(crate) fn enrollment_not_after(
        &self,
    ) -> Option<Result<std::time::SystemTime, fabric_gossip_msp::LoadError>> {
        let Identity::Msp(s) = self else { return None };
        Some(fabric_gossip_msp::certificate_not_after(
            s.certificate_der(),
            "enrollment",
        ))
    }

    /// The MSP ID, for an MSP identity.
    pub(crate) fn msp_id(&self) -> Option<&str> {
        match self {
            Identity::Test => None,
            Identity::Msp(s) => Some(s.msp_id()),
        }
    }
}

impl IdentityArgs {
    /// The trust store the `--trust` and `--channel-config` flags describe, read from disk
    /// now.
    fn trust_from_flags(&self) -> Result<TrustStore, ConfigError> {
        trust_store(&self.trust, &self.channel_config)
    }

    /// The TLS CA certificates (PEM) of the `--channel-config` blocks' organizations, which
    /// the transport trusts besides `--tls-ca`, as a Fabric peer trusts its channels' TLS
    /// CAs. Read once, at start: a reload changes the MSPs, not the TLS configuration.
    pub(crate) fn channel_tls_cas(&self) -> Result<Vec<u8>, ConfigError> {
        add_channel_configs(&mut TrustStore::new(), &self.channel_config)
    }

    /// Reads the trust store again, as at start (the `--trust` folders and the node's own
    /// MSP folder, CRLs included), and hands it to the running provider through `handle`.
    /// Returns the new store.
    pub(crate) fn reload_trust(
        &self,
        handle: &TrustHandle,
    ) -> Result<std::sync::Arc<TrustStore>, ConfigError> {
        let (Some(dir), Some(id)) = (&self.msp_dir, &self.msp_id) else {
            return Err(ConfigError("no MSP identity: nothing to reload".into()));
        };
        let mut trust = self.trust_from_flags()?;
        trust
            .add_own_msp_dir(id, dir)
            .map_err(|e| ConfigError(format!("--msp-dir {}: {e}", dir.display())))?;
        handle
            .replace(trust)
            .map_err(|e| ConfigError(format!("the new trust store is not taken: {e}")))?;
        let current = handle.current();
        warn_unloadable_roots(&current);
        Ok(current)
    }

    /// Loads the identity. `required`: fail when none is given (else the test identity is
    /// used, for commands where the identity is never sent, like `ping`).
    pub(crate) fn load(&self, required: bool) -> Result<Identity, ConfigError> {
        if self.test_identity {
            return Ok(Identity::Test);
        }
        let (Some(dir), Some(id)) = (&self.msp_dir, &self.msp_id) else {
            if !self.trust.is_empty() || !self.channel_config.is_empty() {
                return Err(ConfigError(
                    "--trust and --channel-config need an MSP identity (--msp-dir and \
                     --msp-id, or peer.mspConfigPath and peer.localMspId in --config)"
                        .into(),
                ));
            }
            if required {
                return Err(ConfigError(
                    "no identity: pass --test-identity (Fabric's unit-test provider, TEST ONLY), \
                     or --msp-dir DIR --msp-id ID [--trust MSPID=DIR]..."
                        .into(),
                ));
            }
            return Ok(Identity::Test);
        };
        if id.trim().is_empty() {
            return Err(ConfigError("--msp-id: the MSP ID is empty".into()));
        }
        let trust = self.trust_from_flags()?;
        if !dir.is_dir() {
            return Err(ConfigError(format!(
                "--msp-dir {}: {} (expected an MSP folder with signcerts/ and keystore/)",
                dir.display(),
                not_a_dir(dir)
            )));
        }
        let security = MspSecurity::from_msp_dir(dir, id, trust).map_err(|e| {
            ConfigError(format!(
                "--msp-dir {} (--msp-id {id}): {e}{}",
                dir.display(),
                msp_subfolder_hint(dir)
            ))
        })?;
        warn_unloadable_roots(&security.trust_handle().current());
        crate::expiry::follow_wall_clock(security.wall_clock_offset());
        Ok(Identity::Msp(Box::new(security)))
    }
}

/// Mutual TLS material, as a Fabric peer has it (`peer.tls.*`).
#[derive(Debug, Clone, Args)]
pub(crate) struct TlsArgs {
    /// Mutual TLS: this node's certificate (PEM), used as server and client certificate;
    /// its SHA-256 is bound into the handshake. Needs --tls-key, and --tls-ca or a
    /// --channel-config whose organizations have TLS CAs.
    #[arg(long, value_name = "PEM_FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PKCS#8, SEC1 or PKCS#1 PEM).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that peers' TLS certificates must chain to. Repeatable: give
    /// the TLS CA of every organization this node talks to (with --channel-config, the
    /// channel's organizations' TLS CAs are trusted too).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    pub(crate) tls_ca: Vec<PathBuf>,
    /// Verify servers' certificates against this host name instead of the host dialled
    /// (Fabric's serverHostOverride), e.g. peer0.org1.example.com when dialling an IP.
    /// NAME applies to every server, HOST:PORT=NAME to the one dialled at HOST:PORT only:
    /// repeat it to name each peer a member dials (cryptogen's certificates name the host,
    /// not 127.0.0.1).
    #[arg(long, value_name = "[HOST:PORT=]NAME", requires = "tls_cert")]
    pub(crate) tls_server_name: Vec<String>,
    /// A separate certificate (PEM) to present when dialling (Fabric's
    /// peer.tls.clientCert.file); its SHA-256 is what the handshake binds on streams this
    /// node opens. Default: --tls-cert.
    #[arg(long, value_name = "PEM_FILE", requires_all = ["tls_client_key", "tls_cert"])]
    pub(crate) tls_client_cert: Option<PathBuf>,
    /// The private key of --tls-client-cert (Fabric's peer.tls.clientKey.file).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_client_cert")]
    pub(crate) tls_client_key: Option<PathBuf>,
    /// CA certificates (PEM) that clients' certificates must chain to, when they are not
    /// those of --tls-ca (Fabric's peer.tls.clientRootCAs.files). Repeatable.
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    pub(crate) tls_client_ca: Vec<PathBuf>,
    /// Whether the TLS handshake itself refuses clients without a certificate (always so
    /// from flags; peer.tls.clientAuthRequired from a core.yaml).
    #[arg(skip = true)]
    pub(crate) require_client_certificate: bool,
    /// The values came from a core.yaml: errors name its keys instead of the flags, each
    /// with the variable or file that set it where known (`peer.tls.cert.file (from
    /// CORE_PEER_TLS_CERT_FILE)`), as `PeerConfig::named` gives them.
    #[arg(skip)]
    pub(crate) from_config: Option<crate::config::KeyNames>,
}

impl TlsArgs {
    /// How a setting is named in errors: its flag, or its core.yaml key and where that was
    /// set.
    fn name(&self, flag: &'static str) -> String {
        let Some(names) = &self.from_config else {
            return flag.to_owned();
        };
        let named = |key: &str| names.named(key);
        match flag {
            "--tls-cert" => named("peer.tls.cert.file"),
            "--tls-key" => named("peer.tls.key.file"),
            "--tls-ca" => format!(
                "{}/{}",
                named("peer.tls.rootcert.file"),
                named("peer.tls.clientRootCAs.files").trim_start_matches("peer.tls.")
            ),
            "--tls-client-cert" => named("peer.tls.clientCert.file"),
            "--tls-client-key" => named("peer.tls.clientKey.file"),
            "--tls-client-ca" => named("peer.tls.clientRootCAs.files"),
            other => other.to_owned(),
        }
    }

    /// Whether TLS is on.
    pub(crate) fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Reads and checks the files; `None` without TLS. `channel_cas`: TLS CA certificates
    /// (PEM) from `--channel-config` blocks, trusted besides `--tls-ca`.
    pub(crate) fn load(&self, channel_cas: &[u8]) -> Result<Option<TlsConfig>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        if self.tls_ca.is_empty() && channel_cas.is_empty() {
            return Err(ConfigError(format!(
                "{} needs at least one {} (or a --channel-config whose organizations have TLS CAs)",
                self.name("--tls-cert"),
                self.name("--tls-ca")
            )));
        }
        let cert_pem = read_certs(&self.name("--tls-cert"), cert)?;
        let key_pem = read_key(&self.name("--tls-key"), key)?;
        let mut ca_pem = read_all_certs(&self.name("--tls-ca"), &self.tls_ca)?;
        ca_pem.extend_from_slice(channel_cas);
        // Mutual TLS as the contract states it: a client without a certificate, or with one
        // no CA here issued, is turned away in the TLS handshake, before any RPC. From a
        // core.yaml with clientAuthRequired: false, as on that Fabric peer, TLS asks for a
        // certificate and checks only that the client holds its key: the gossip handshake
        // binds it to the client's MSP identity, and refuses a stream without one.
        let mut tls = TlsConfig::new(cert_pem, key_pem, ca_pem)
            .require_client_certificate(self.require_client_certificate)
            .verify_client_chain(self.require_client_certificate);
        if let (Some(c), Some(k)) = (&self.tls_client_cert, &self.tls_client_key) {
            tls = tls.with_client_identity(
                read_certs(&self.name("--tls-client-cert"), c)?,
                read_key(&self.name("--tls-client-key"), k)?,
            );
        }
        if !self.tls_client_ca.is_empty() {
            // The channels' TLS CAs verify clients too, as they do for a Fabric peer.
            let mut client_cas =
                read_all_certs(&self.name("--tls-client-ca"), &self.tls_client_ca)?;
            client_cas.extend_from_slice(channel_cas);
            tls = tls.with_client_root_cas(client_cas);
        }
        let mut for_all: Option<&String> = None;
        for given in &self.tls_server_name {
            match given.split_once('=') {
                // The node checks the address (HOST:PORT) when it starts.
                Some((address, name)) => tls = tls.with_server_name_for(address, name),
                None => {
                    if let Some(first) = for_all.replace(given) {
                        return Err(ConfigError(format!(
                            "--tls-server-name {first} and {given}: one name for every server \
                             at most; name servers one address at a time with \
                             --tls-server-name HOST:PORT=NAME"
                        )));
                    }
                    tls = tls.with_server_name_override(given.clone());
                }
            }
        }
        Ok(Some(tls))
    }

    /// The files, for error messages about the TLS material as a whole (key not matching
    /// the certificate, for instance).
    pub(crate) fn describe(&self) -> String {
        let show =
            |p: &Option<PathBuf>| p.as_deref().map_or("-".into(), |p| p.display().to_string());
        let cas: Vec<String> = self
            .tls_ca
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "{} {} {} {} {} {}",
            self.name("--tls-cert"),
            show(&self.tls_cert),
            self.name("--tls-key"),
            show(&self.tls_key),
            self.name("--tls-ca"),
            cas.join(",")
        )
    }
}

/// Reads a PEM file that must hold a private key.
fn read_key(flag: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        ConfigError(format!(
            "{flag} {}: no usable private key in PEM: {e}",
            path.display()
        ))
    })?;
    Ok(pem)
}

/// Reads and concatenates PEM files of certificates.
fn read_all_certs(flag: &str, paths: &[PathBuf]) -> Result<Vec<u8>, ConfigError> {
    let mut all = Vec::new();
    for p in paths {
        all.extend_from_slice(&read_certs(flag, p)?);
        all.push(b'\n');
    }
    Ok(all)
}

/// Reads a PEM file named by `flag` (or a core.yaml key) as MSP files are read: a file
/// over [`fabric_gossip_msp::MAX_FILE_BYTES`] or that is no file (a FIFO would block the
/// start) is refused, naming it, as are MSP files.
pub(crate) fn read(flag: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    fabric_gossip_msp::read_msp_file(path).map_err(|e| ConfigError(format!("{flag} {e}")))
}

/// Reads a PEM file that must hold at least one certificate.
fn read_certs(flag: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("{flag} {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "{flag} {}: no CERTIFICATE block in the file",
            path.display()
        )));
    }
    Ok(pem)
}

/// Parses HOST:PORT for `--listen`, resolving a host name (e.g. `localhost:7051`).
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT, e.g. 127.0.0.1:7051 ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

/// The longest endpoint taken: a DNS name (253) and a port, with room to spare. A `send`
/// line may hold megabytes, and an endpoint is kept as a key while its PKI-ID is learnt.
const MAX_ENDPOINT: usize = 300;

/// Checks an endpoint to dial, HOST:PORT (not resolved: the transport does that).
pub(crate) fn parse_endpoint(s: &str) -> Result<String, String> {
    if s.len() > MAX_ENDPOINT {
        return Err(format!(
            "an endpoint of {} bytes; at most {MAX_ENDPOINT} (HOST:PORT)",
            s.len()
        ));
    }
    let bad = || format!("expected HOST:PORT, e.g. 127.0.0.1:7051, got {s:?}");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    port.parse::<u16>().map_err(|_| bad())?;
    Ok(s.to_owned())
}

/// Fabric's timeouts (dial 3 s, connection 2 s, handshake 10 s) and send buffer, with the
/// core's RNG (SendWithAck nonces) seeded at random: the core is deterministic for the
/// simulator's sake, and with a fixed seed every process would draw the same nonces.
pub(crate) fn config() -> Config {
    Config::default().with_seed(fabric_gossip_tonic::random_seed())
}

/// Starts `builder` with `identity`, explaining failures in terms of the flags.
/// `advertised`: the endpoint the node gives as its own when it is not the address bound
/// (`--endpoint`, `peer.gossip.endpoint`), which a test identity then is, as Fabric's
/// test peers are the endpoint others dial (a node bound to 0.0.0.0 had been `0.0.0.0:P`,
/// and `--peer` at its endpoint failed its handshake).
pub(crate) async fn start(
    builder: NodeBuilder,
    identity: Identity,
    listen: &str,
    tls: &TlsArgs,
    advertised: Option<&str>,
) -> Result<Node, ConfigError> {
    let r = match identity {
        Identity::Test => {
            builder
                .start_with(|a| {
                    TestOnlyHmacSecurity::new(
                        advertised.map_or_else(|| a.to_string(), str::to_owned),
                    )
                })
                .await
        }
        Identity::Msp(s) => builder.start(*s).await,
    };
    r.map_err(|e| match e {
        StartError::Bind { error, .. } => {
            ConfigError(format!("--listen {listen}: cannot listen: {error}"))
        }
        StartError::Tls(e) if e.contains("KeyMismatch") || e.contains("not be consistent") => {
            let show = |p: &Option<PathBuf>| p.as_deref().map(Path::display).map(|d| d.to_string());
            ConfigError(format!(
                "{} {}: the private key does not match the certificate in {} {} \
                 (or {} does not match {})",
                tls.name("--tls-key"),
                show(&tls.tls_key).unwrap_or_default(),
                tls.name("--tls-cert"),
                show(&tls.tls_cert).unwrap_or_default(),
                tls.name("--tls-client-key"),
                tls.name("--tls-client-cert"),
            ))
        }
        StartError::Tls(e) => ConfigError(format!("TLS ({}): {e}", tls.describe())),
        other => ConfigError(other.to_string()),
    })
}

/// The MSP ID inside a serialized identity, if it is one (`msp.SerializedIdentity` with a
/// PEM certificate); `None` for anything else, such as a test identity.
pub(crate) fn msp_of(identity: &[u8]) -> Option<(String, Bytes)> {
    let si = SerializedIdentity::decode(identity).ok()?;
    if si.mspid.is_empty() || !si.id_bytes.starts_with(b"-----BEGIN") {
        return None;
    }
    Some((si.mspid, si.id_bytes))
}

/// A multi-threaded runtime for one command. Two workers: the CLI never needs more, and the
/// machines it runs on are often shared.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ConfigError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ConfigError(format!("cannot start the async runtime: {e}")))
}

/// Runs a short command's future on `rt`, then lets the runtime go without waiting for what
/// its blocking pool still runs, as dropping it would (a name lookup there had kept `ping
/// --timeout 500ms` alive for 10 s).
pub(crate) fn run_then_leave<F: std::future::Future>(
    rt: tokio::runtime::Runtime,
    f: F,
) -> F::Output {
    let out = rt.block_on(f);
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    out
}

/// The channel configuration blocks a trust store was built from: each one's channel,
/// configuration sequence and MSP IDs, so an operator sees after a reload that the newer
/// block was read. `None` when there were none.
pub(crate) fn channels_summary(trust: &TrustStore) -> Option<serde_json::Value> {
    let channels = trust.channel_configs();
    (!channels.is_empty()).then(|| {
        channels
            .iter()
            .map(|c| {
                serde_json::json!({
                    "channel": c.channel_id,
                    "sequence": c.sequence,
                    "msps": c.msp_ids,
                })
            })
            .collect()
    })
}

/// Per MSP ID, the CA certificates, revocation lists and OU rules a trust store holds:
/// printed when a node starts and when it reloads, so an operator sees that a CRL or a
/// `config.yaml` was read.
pub(crate) fn trust_summary(trust: &TrustStore) -> serde_json::Value {
    let msps = trust.msp_ids().map(|id| {
        let ((roots, intermediates), (crls, revoked)) = (trust.ca_count(id), trust.crl_count(id));
        let roles = trust.node_roles(id);
        // NodeOUs: each enforced role and its OU; null when off (any role accepted).
        let node_ous = (!roles.is_empty()).then(|| {
            roles
                .iter()
                .map(|(role, unit)| (role.as_str().to_owned(), serde_json::json!(unit)))
                .collect::<serde_json::Map<_, _>>()
        });
        let v = serde_json::json!({
            "roots": roots,
            "intermediates": intermediates,
            "crls": crls,
            "revoked": revoked,
            "node_ous": node_ous,
            "ou_identifiers": trust.unit_identifier_count(id),
        });
        (id.to_owned(), v)
    });
    serde_json::Value::Object(msps.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_msp::dev::{self, OrgSpec, Validity};

    fn tls_args(cert: Option<&Path>, key: Option<&Path>, ca: &[&Path]) -> TlsArgs {
        TlsArgs {
            tls_cert: cert.map(Path::to_path_buf),
            tls_key: key.map(Path::to_path_buf),
            tls_ca: ca.iter().map(|p| p.to_path_buf()).collect(),
            tls_server_name: Vec::new(),
            tls_client_cert: None,
            tls_client_key: None,
            tls_client_ca: Vec::new(),
            require_client_certificate: true,
            from_config: None,
        }
    }

    /// A development PKI of one organization, Org1MSP with one peer, valid from an hour ago.
    fn org1_pki() -> Vec<dev::DevOrg> {
        let now = fabric_gossip_core::Instant::from_system_time(std::time::SystemTime::now());
        let validity = Validity::ten_years_from(now - std::time::Duration::from_secs(3600));
        dev::generate_in_memory(
            &[OrgSpec::new("Org1MSP", "org1.example.com", 1)],
            validity,
            &mut dev::OsRng,
        )
        .expect("a test PKI")
    }

    fn no_identity() -> IdentityArgs {
        IdentityArgs {
            test_identity: false,
            msp_dir: None,
            msp_id: None,
            trust: Vec::new(),
            channel_config: Vec::new(),
        }
    }

    /// `--trust MSPID=DIR` needs both halves; the MSP ID is trimmed, the path kept as given.
    #[test]
    fn a_trust_flag_needs_an_msp_id_and_a_folder() {
        assert_eq!(
            parse_trust(" Org2MSP =crypto/org2 msp"),
            Ok(("Org2MSP".to_owned(), PathBuf::from("crypto/org2 msp")))
        );
        for bad in ["Org2MSP", "=dir", "  =dir", "Org2MSP="] {
            assert!(parse_trust(bad).unwrap_err().contains("MSPID=DIR"), "{bad}");
        }
    }

    /// An endpoint to dial is HOST:PORT with a host and a port number, kept as written
    /// (the transport resolves it); a listen address resolves now.
    #[test]
    fn endpoints_are_host_and_port() {
        for good in [
            "127.0.0.1:7051",
            "peer0.org1.example.com:7051",
            "[::1]:7051",
        ] {
            assert_eq!(parse_endpoint(good).as_deref(), Ok(good));
        }
        let longest = format!("{}:7051", "a".repeat(MAX_ENDPOINT - 5));
        assert_eq!(parse_endpoint(&longest).as_deref(), Ok(longest.as_str()));
        for bad in [
            ":7051",
            "peer 0:7051",
            " :7051",
            "peer0",
            "peer0:port",
            "peer0:70510",
            &format!("{}:7051", "a".repeat(MAX_ENDPOINT - 4)),
        ] {
            assert!(
                parse_endpoint(bad).unwrap_err().contains("HOST:PORT"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_listen("127.0.0.1:7051"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 7051)))
        );
        assert!(parse_listen("127.0.0.1").is_err());
    }

    /// Test PKI-IDs are shown as their endpoint text, MSP ones in hex; hex that does not
    /// parse is refused naming the flag.
    #[test]
    fn pki_ids_are_written_as_text_or_hex() {
        let id = PkiId::from("127.0.0.1:7051");
        assert_eq!(PkiForm::Text.show(&id), "127.0.0.1:7051");
        assert_eq!(PkiForm::Hex.show(&PkiId::from(&[0xab, 0x01][..])), "ab01");
        assert_eq!(PkiForm::Text.parse("127.0.0.1:7051", "--peer"), Ok(id));
        assert_eq!(
            PkiForm::Hex.parse("ab01", "--peer"),
            Ok(PkiId::from(&[0xab, 0x01][..]))
        );
        let e = PkiForm::Hex.parse("xyz", "--peer").unwrap_err();
        assert!(
            e.starts_with("--peer \"xyz\": MSP PKI-IDs are written in hex"),
            "{e}"
        );
        // README walk-through finding 18: no "Odd number of digits" for an endpoint.
        assert_eq!(
            PkiForm::Hex.parse("127.0.0.1:27052", "--expect-pki-id"),
            Err(
                "--expect-pki-id \"127.0.0.1:27052\": MSP PKI-IDs are written in hex (64 \
                 digits): '.' (character 4) is not a hex digit; an endpoint stands for the \
                 PKI-ID only under --test-identity"
                    .to_owned()
            )
        );
        assert_eq!(
            PkiForm::Hex.parse("abc", "--expect-pki-id"),
            Err(
                "--expect-pki-id \"abc\": MSP PKI-IDs are written in hex (64 digits): it \
                 has 3 digits, an odd number"
                    .to_owned()
            )
        );
        let test = Identity::Test;
        assert_eq!(test.pki_form(), PkiForm::Text);
        assert!(test.msp_id().is_none() && test.trust_summary().is_none());
        assert!(test.channels_summary().is_none() && test.trust_handle().is_none());
        assert!(test.enrollment_not_after().is_none());
    }

    /// Which identity the flags ask for, and the errors when they ask wrongly: each names
    /// the flags to give.
    #[test]
    fn identity_flags_are_checked_before_anything_is_read() {
        let mut a = no_identity();
        assert!(matches!(a.load(false), Ok(Identity::Test)));
        let e = a.load(true).err().expect("an identity is required");
        assert!(e.0.starts_with("no identity: pass --test-identity"), "{e}");
        a.test_identity = true;
        assert!(matches!(a.load(true), Ok(Identity::Test)));
        let mut a = no_identity();
        a.trust = vec![("Org2MSP".into(), PathBuf::from("/nonexistent"))];
        let e = a.load(false).err().expect("--trust needs an MSP identity");
        assert!(
            e.0.starts_with("--trust and --channel-config need an MSP identity"),
            "{e}"
        );
        let mut a = no_identity();
        a.channel_config = vec![PathBuf::from("/nonexistent.block")];
        let e = a
            .load(false)
            .err()
            .expect("--channel-config needs an MSP identity");
        assert!(e.0.starts_with("--trust and --channel-config"), "{e}");
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut a = no_identity();
        a.msp_dir = Some(dir.path().join("msp"));
        a.msp_id = Some(" ".into());
        let e = a.load(true).err().expect("an empty MSP ID");
        assert_eq!(e.0, "--msp-id: the MSP ID is empty");
        a.msp_id = Some("Org1MSP".into());
        // README walk-through finding 11: a missing path is not called "not a directory".
        let e = a.load(true).err().expect("no such folder");
        assert!(
            e.0.starts_with("--msp-dir ") && e.0.contains("msp: does not exist (expected"),
            "{e}"
        );
        let file = dir.path().join("file");
        std::fs::write(&file, "x").expect("write");
        a.msp_dir = Some(file);
        let e = a.load(true).err().expect("a file");
        assert!(e.0.contains("file: not a directory (expected"), "{e}");
        a.msp_dir = Some(dir.path().to_path_buf());
        let e = a.load(true).err().expect("an empty folder");
        assert!(e.0.contains("(--msp-id Org1MSP): "), "{e}");
        assert!(!e.0.contains("hint"), "{e}");
        // README walk-through finding 10: an organization or peer folder (with msp/ in it)
        // given for its MSP folder gets a hint naming the MSP folder.
        std::fs::create_dir(dir.path().join("msp")).expect("mkdir");
        let hint = format!(
            "\n  hint: did you mean {}?",
            dir.path().join("msp").display()
        );
        let e = a.load(true).err().expect("a peer folder");
        assert!(e.0.ends_with(&hint), "{e}");
        a.msp_dir = Some(dir.path().join("msp"));
        a.trust = vec![("Org2MSP".into(), dir.path().to_path_buf())];
        let e = a
            .load(true)
            .err()
            .expect("an organization folder as --trust");
        assert!(
            e.0.starts_with("--trust Org2MSP=") && e.0.ends_with(&hint),
            "{e}"
        );
        a.trust = vec![("Org2MSP".into(), dir.path().join("nowhere"))];
        let e = a.load(true).err().expect("a missing --trust folder");
        assert!(e.0.starts_with("--trust Org2MSP="), "{e}");
        assert!(!e.0.contains("hint"), "{e}");
    }

    /// TLS errors name the flag and the file, or the core.yaml key when the settings came
    /// from one; without --tls-cert there is no TLS.
    #[test]
    fn tls_files_are_checked_naming_the_flag_and_the_file() {
        let orgs = org1_pki();
        let dir = tempfile::tempdir().expect("a temp dir");
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p
        };
        let peer = &orgs[0].peers[0].tls;
        let cert = file("cert.pem", &peer.cert_pem());
        let key = file("key.pem", &peer.key_pem);
        let ca = file("ca.pem", &orgs[0].tls_ca.cert_pem());
        let junk = file("junk.pem", "not PEM at all\n");
        let missing = dir.path().join("missing.pem");

        let off = tls_args(None, None, &[]);
        assert!(!off.enabled());
        assert!(matches!(off.load(b""), Ok(None)));
        let on = tls_args(Some(&cert), Some(&key), &[&ca]);
        assert!(on.enabled());
        assert!(matches!(on.load(b""), Ok(Some(_))));
        // The channels' TLS CAs stand in for --tls-ca.
        let no_ca = tls_args(Some(&cert), Some(&key), &[]);
        assert!(matches!(
            no_ca.load(orgs[0].tls_ca.cert_pem().as_bytes()),
            Ok(Some(_))
        ));

        let error = |a: &TlsArgs| a.load(b"").expect_err("an error").0;
        let e = error(&no_ca);
        assert!(
            e.starts_with("--tls-cert needs at least one --tls-ca"),
            "{e}"
        );
        let mut from_config = no_ca.clone();
        from_config.from_config = Some(Default::default());
        let e = error(&from_config);
        assert!(
            e.starts_with("peer.tls.cert.file needs at least one peer.tls.rootcert.file"),
            "{e}"
        );
        let e = error(&tls_args(Some(&missing), Some(&key), &[&ca]));
        assert!(
            e.starts_with("--tls-cert ") && e.contains("missing.pem"),
            "{e}"
        );
        let e = error(&tls_args(Some(&junk), Some(&key), &[&ca]));
        assert!(
            e.starts_with("--tls-cert ") && e.ends_with("no CERTIFICATE block in the file"),
            "{e}"
        );
        let e = error(&tls_args(Some(&cert), Some(&cert), &[&ca]));
        assert!(
            e.starts_with("--tls-key ") && e.contains("no usable private key"),
            "{e}"
        );
        let e = error(&tls_args(Some(&cert), Some(&key), &[&ca, &junk]));
        assert!(e.starts_with("--tls-ca ") && e.contains("junk.pem"), "{e}");
        let mut client = on.clone();
        client.tls_client_ca = vec![junk.clone()];
        let e = error(&client);
        assert!(e.starts_with("--tls-client-ca "), "{e}");
        client.from_config = Some(Default::default());
        let e = error(&client);
        assert!(e.starts_with("peer.tls.clientRootCAs.files "), "{e}");
        let mut client = on.clone();
        client.tls_client_cert = Some(junk.clone());
        client.tls_client_key = Some(key.clone());
        assert!(error(&client).starts_with("--tls-client-cert "));
        client.tls_client_cert = Some(cert.clone());
        client.tls_client_key = Some(junk.clone());
        assert!(error(&client).starts_with("--tls-client-key "));
        client.from_config = Some(Default::default());
        assert!(error(&client).starts_with("peer.tls.clientKey.file "));
        let mut names = on.clone();
        names.tls_server_name = vec!["a.example.com".into(), "1.2.3.4:7051=b.example.com".into()];
        assert!(matches!(names.load(b""), Ok(Some(_))));
        names.tls_server_name.push("c.example.com".into());
        let e = error(&names);
        assert!(
            e.starts_with("--tls-server-name a.example.com and c.example.com: "),
            "{e}"
        );

        assert_eq!(
            on.describe(),
            format!(
                "--tls-cert {} --tls-key {} --tls-ca {}",
                cert.display(),
                key.display(),
                ca.display()
            )
        );
        assert_eq!(
            from_config.describe(),
            format!(
                "peer.tls.cert.file {} peer.tls.key.file {} peer.tls.rootcert.file/clientRootCAs.files ",
                cert.display(),
                key.display()
            )
        );
        assert_eq!(off.describe(), "--tls-cert - --tls-key - --tls-ca ");
    }

    /// A serialized identity names its MSP only when it is one with a PEM certificate.
    #[test]
    fn the_msp_of_a_serialized_identity() {
        let si = |mspid: &str, id: &[u8]| {
            SerializedIdentity {
                mspid: mspid.into(),
                id_bytes: Bytes::copy_from_slice(id),
            }
            .encode_to_vec()
        };
        let pem = b"-----BEGIN CERTIFICATE-----\n";
        assert_eq!(
            msp_of(&si("Org1MSP", pem)),
            Some(("Org1MSP".into(), Bytes::from_static(pem)))
        );
        assert_eq!(msp_of(&si("", pem)), None);
        assert_eq!(msp_of(&si("Org1MSP", b"127.0.0.1:7051")), None);
        assert_eq!(msp_of(b"127.0.0.1:7051"), None);
    }

    /// An empty trust store has no channels and no MSPs to show; channel blocks that
    /// cannot be read are refused naming the flag.
    #[test]
    fn summaries_of_what_is_trusted() {
        let empty = TrustStore::new();
        assert_eq!(channels_summary(&empty), None);
        assert_eq!(trust_summary(&empty), serde_json::json!({}));
        assert_eq!(
            add_channel_configs(&mut TrustStore::new(), &[]).ok(),
            Some(Vec::new())
        );
        let e =
            trust_store(&[], &[PathBuf::from("/nonexistent.block")]).expect_err("no such block");
        assert!(
            e.0.starts_with("--channel-config ") && e.0.contains("nonexistent.block"),
            "{e}"
        );
    }

    /// An MSP identity shows its PKI-IDs in hex and has an MSP ID, a trust store to
    /// summarize and replace, and an enrollment certificate whose expiry is known; a
    /// configuration error prints as its text.
    #[test]
    fn an_msp_identity_tells_what_it_trusts() {
        let orgs = org1_pki();
        let trust = dev::trust_all(&orgs).expect("a trust store");
        let security = orgs[0]
            .security(&orgs[0].peers[0], trust)
            .expect("an MSP identity");
        let id = Identity::Msp(Box::new(security));
        assert_eq!(id.pki_form(), PkiForm::Hex);
        assert_eq!(id.msp_id(), Some("Org1MSP"));
        let summary = id.trust_summary().expect("a trust summary");
        assert_eq!(summary["Org1MSP"]["roots"], 1, "{summary}");
        assert!(id.channels_summary().is_none(), "no --channel-config");
        assert!(id.trust_handle().is_some());
        let not_after = id
            .enrollment_not_after()
            .expect("an enrollment certificate")
            .expect("readable");
        assert!(not_after > std::time::SystemTime::now());
        assert_eq!(
            ConfigError("--tls-cert x: no".into()).to_string(),
            "--tls-cert x: no"
        );
    }

    /// Every node the CLI starts seeds its core's RNG anew: `Config::default()`'s fixed
    /// seed would make every process draw the same SendWithAck nonces, so two nodes' acks
    /// could be taken for each other's.
    #[test]
    fn each_node_s_core_draws_its_own_seed() {
        let seeds: Vec<u64> = (0..4).map(|_| config().rng_seed).collect();
        assert!(
            seeds.iter().all(|s| *s != Config::default().rng_seed),
            "{seeds:?}"
        );
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seeds.len(), "{seeds:?}");
    }
}
