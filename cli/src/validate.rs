//! `fabric-gossip validate`: judges certificates the way a node trusting the given MSP
//! folders judges a peer's identity at its handshake (chain, revocation, NodeOU roles, OU
//! identifiers, validity period), without starting a node. An operator asks it why a
//! peer is refused, or whether a new `config.yaml` or CRL would cut someone off, before
//! reloading a running node.

use crate::opts::{self, ConfigError};
use crate::out::{self, WriteError};
use clap::Args;
use fabric_gossip_core::SecurityError;
use fabric_gossip_msp::{
    UnloadableRoot, certificate_pem, msp_dir_files, pki_id, read_msp_file, serialize_identity_pem,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `fabric-gossip validate`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ValidateArgs {
    /// A trusted MSP: DIR is that organization's MSP folder (cacerts/, intermediatecerts/,
    /// crls/, config.yaml), a folder of root CA PEM files, or one PEM file, exactly as for
    /// `node --trust`. Repeatable; at least one.
    #[arg(long, value_name = "MSPID=DIR", value_parser = opts::parse_trust,
          required_unless_present = "channel_config")]
    trust: Vec<(String, PathBuf)>,
    /// Trust every organization of a channel, from its configuration block, exactly as
    /// for `node --channel-config`. Repeatable.
    #[arg(long, value_name = "BLOCK")]
    channel_config: Vec<PathBuf>,
    /// The MSP the certificates claim to belong to. Default: the only MSP trusted or, with
    /// several, each certificate's: the one whose CA issued it.
    #[arg(long, value_name = "ID")]
    msp_id: Option<String>,
    /// Certificates to judge: PEM files (the first CERTIFICATE block of each), or MSP
    /// folders (every file of their signcerts/).
    #[arg(value_name = "CERT", required = true)]
    certs: Vec<PathBuf>,
}

/// Runs the command: one JSON line per certificate, after one `warning` line per root CA
/// that Fabric cannot set its MSP up with (which leaves the status alone: the
/// certificates are judged as this node judges them); status 0 when every one is valid, 1
/// when any is refused, 2 when the arguments or files are wrong or stdout cannot be
/// written (see [`WriteError`]).
pub(crate) fn run(args: &ValidateArgs) -> ExitCode {
    match judge_all(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Config(e)) => opts::config_failure(&e),
        Err(Failure::Write(e)) => e.exit(),
    }
}

/// Why the command could not judge every certificate.
enum Failure {
    Config(ConfigError),
    Write(WriteError),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Failure {
        Failure::Config(e)
    }
}

/// Where a certificate's MSP ID came from, as the `msp_id_from` field says it.
#[derive(Clone, Copy)]
enum Claim {
    /// `--msp-id`.
    Flag,
    /// The one MSP trusted.
    OnlyTrusted,
    /// The MSP whose CA issued the certificate.
    Issuer,
}

impl Claim {
    fn name(self) -> &'static str {
        match self {
            Claim::Flag => "flag",
            Claim::OnlyTrusted => "only_trusted",
            Claim::Issuer => "issuer",
        }
    }
}

fn judge_all(args: &ValidateArgs) -> Result<bool, Failure> {
    let trust = opts::trust_store(&args.trust, &args.channel_config)?;
    let trusted: Vec<&str> = trust.msp_ids().collect();
    // With several MSPs trusted and no --msp-id, each certificate is judged as a member of
    // the MSP whose CA issued it, so that one run checks a whole crypto tree.
    let claimed = match (&args.msp_id, trusted.as_slice()) {
        (Some(id), _) => Some((id.as_str(), Claim::Flag)),
        (None, [only]) => Some((*only, Claim::OnlyTrusted)),
        (None, _) => None,
    };
    for root in trust.fabric_unloadable_roots() {
        let line = serde_json::json!({
            "event": "warning",
            "kind": "fabric_cannot_set_up_msp",
            "msp_id": root.msp_id,
            "certificate": root.source,
            "subject": root.subject,
            "named_by": root.named_by,
            "configured_in": root.configured_in,
            "message": unloadable_root_message(&root),
        });
        out::print("result", format!("{line}\n")).map_err(Failure::Write)?;
    }
    let mut tls = TlsCas::default();
    let now = crate::expiry::wall_now();
    let mut all_valid = true;
    for path in &args.certs {
        for file in certificate_files(path)? {
            let raw = first_certificate(&file)?;
            let (msp_id, from) = match claimed {
                Some(c) => c,
                None => match trust.issuing_msps(&raw).as_slice() {
                    [one] => (*one, Claim::Issuer),
                    [] => {
                        all_valid = false;
                        let line = unclaimed(&file, &raw, &trusted, tls.hint(args, &raw));
                        out::print("result", format!("{line}\n")).map_err(Failure::Write)?;
                        continue;
                    }
                    several => {
                        return Err(ConfigError(format!(
                            "{}: issued by a CA of each of {}; --msp-id: say which one it \
                             claims",
                            file.display(),
                            several.join(", ")
                        ))
                        .into());
                    }
                },
            };
            // As a Fabric MSP presents the certificate (a high-S CA signature folded to
            // low-S), so the PKI-ID is the one its peer has on the network.
            let der = trust.sanitize_certificate(msp_id, &raw);
            let pem = certificate_pem(&der);
            let identity = serialize_identity_pem(msp_id, pem.as_bytes());
            let verdict = trust.validate_identity(&identity, now);
            all_valid &= verdict.is_ok();
            let mut line = serde_json::json!({
                "event": "identity",
                "file": file.display().to_string(),
                "msp_id": msp_id,
                "msp_id_from": from.name(),
                "pki_id": hex::encode(pki_id(msp_id, pem.as_bytes()).as_bytes()),
                "valid": verdict.is_ok(),
            });
            // When it stops being valid, so that a renewal is planned before it must be.
            if let Some(at) = crate::expiry::pem_not_after(pem.as_bytes()) {
                line["not_after_unix_ms"] = serde_json::json!(crate::expiry::date_unix_ms(at));
            }
            if let Err(e) = &verdict {
                line["refused"] = serde_json::json!(kind(e));
                line["error"] = serde_json::json!(e.to_string());
                if matches!(e, SecurityError::UntrustedCertificate(_))
                    && let Some(hint) = tls.hint(args, &raw)
                {
                    line["hint"] = serde_json::json!(hint);
                }
            }
            out::print("result", format!("{line}\n")).map_err(Failure::Write)?;
        }
    }
    Ok(all_valid)
}

/// What to tell an operator of a root Fabric cannot set its MSP up with
/// ([`TrustStore::fabric_unloadable_roots`](fabric_gossip_msp::TrustStore::fabric_unloadable_roots)):
/// this node and `validate` accept the MSP, so without a word the first sign is a Fabric
/// peer or orderer of that organization stopping at start, with an error that names no
/// file. Only Fabric before v2.5.0 built with Go 1.19 or later fails (Go 1.18 built the
/// chain; Fabric v2.5.0 and v2.2.11 sanitize a root before verifying it), which is how the
/// live check's v2.4.9 was built: the text says so, since this tool cannot tell which
/// build the network runs. Shared by `validate`'s warning line and the node's start.
pub(crate) fn unloadable_root_message(root: &UnloadableRoot) -> String {
    format!(
        "{msp}: Fabric v2.4.9 cannot set up this MSP when built with Go 1.19 or later (as \
         in our live check; Fabric v2.5.0 and v2.2.11 fixed it, hyperledger/fabric#3774): \
         its root CA {subject} ({file}) has a high-S self-signature and is named by {named} \
         in {configured_in}; such a Fabric trusts the root only in its low-S re-encoding, \
         then cannot verify the file's form against it (\"sanitizeCert failed the supplied \
         identity is not valid: x509: certificate signed by unknown authority\"), so its \
         peers and orderers with this MSP stop at start; fabric-gossip accepts it. Fix: \
         re-issue the CA until its self-signature is low-S (cryptogen: generate the \
         organization again), or name no certificate for it in config.yaml",
        msp = root.msp_id,
        subject = root.subject,
        file = root.source,
        named = root.named_by.join(", "),
        configured_in = root.configured_in.join(", "),
    )
}

/// The line of a certificate no trusted MSP's CA issued, when none was named to judge it
/// against: refused as a node trusting these MSPs refuses it, whichever it claimed.
fn unclaimed(file: &Path, der: &[u8], trusted: &[&str], hint: Option<String>) -> serde_json::Value {
    let mut line = serde_json::json!({
        "event": "identity",
        "file": file.display().to_string(),
        "msp_id": null,
        "msp_id_from": null,
        "valid": false,
        "refused": "untrusted_certificate",
        "error": SecurityError::UntrustedCertificate(format!(
            "not issued by any CA of {}",
            trusted.join(", ")
        ))
        .to_string(),
    });
    let pem = certificate_pem(der);
    if let Some(at) = crate::expiry::pem_not_after(pem.as_bytes()) {
        line["not_after_unix_ms"] = serde_json::json!(crate::expiry::date_unix_ms(at));
    }
    if let Some(hint) = hint {
        line["hint"] = serde_json::json!(hint);
    }
    line
}

/// The TLS CAs of the `--trust` MSP folders (their `tlscacerts/` and
/// `tlsintermediatecerts/`) and of the `--channel-config` blocks, read when a certificate
/// is first refused as untrusted: a TLS certificate given by mistake is refused as issued
/// by no CA of the MSP, which reads as a wrong MSP or a forged certificate rather than the
/// wrong file. Each is kept under the words the hint names it by.
#[derive(Default)]
struct TlsCas(Option<fabric_gossip_msp::TrustStore>);

impl TlsCas {
    /// The hint for a refused certificate `der` that one of these TLS CAs issued.
    fn hint(&mut self, args: &ValidateArgs, der: &[u8]) -> Option<String> {
        // Only to name the issuer: what does not load names none (the trust store read
        // the same folders and blocks without error already).
        let store = self.0.get_or_insert_with(|| {
            let mut store = fabric_gossip_msp::TrustStore::new();
            for (msp, dir) in &args.trust {
                for sub in ["tlscacerts", "tlsintermediatecerts"] {
                    if dir.join(sub).is_dir() {
                        let _ = store.add_path(&format!("{msp} (tlscacerts/)"), dir.join(sub));
                    }
                }
            }
            for block in &args.channel_config {
                let Ok(bytes) = fabric_gossip_msp::read_channel_config_file(block) else {
                    continue;
                };
                let Ok(channel) = fabric_gossip_msp::TrustStore::new().add_channel_config(&bytes)
                else {
                    continue;
                };
                let named = format!("an organization of channel {}", channel.channel_id);
                for pem in &channel.tls_ca_pems {
                    let _ = store.add_ca_pem(&named, pem);
                }
            }
            store
        });
        let issuers = store.issuing_msps(der);
        if issuers.is_empty() {
            return None;
        }
        Some(format!(
            "a TLS certificate: issued by the TLS CA of {}; validate judges enrollment \
             certificates, an MSP folder's signcerts/, which peers present as their identity",
            issuers.join(", ")
        ))
    }
}

/// `path` itself, or the files of its `signcerts/` when it is an MSP folder, listed as a
/// node lists them (entries that are not files left out with a warning).
fn certificate_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let signcerts = path.join("signcerts");
    if !signcerts.is_dir() {
        return Err(ConfigError(format!(
            "{}: a folder must be an MSP folder with signcerts/{}",
            path.display(),
            opts::msp_subfolder_hint(path)
        )));
    }
    let files = msp_dir_files(&signcerts).map_err(|e| ConfigError(e.to_string()))?;
    if files.is_empty() {
        return Err(ConfigError(format!("{}: empty", signcerts.display())));
    }
    Ok(files)
}

/// The first `CERTIFICATE` block of a PEM file, as the single block a peer would send;
/// the file read as a node reads its own (a FIFO or a file over the MSP cap refused).
fn first_certificate(file: &Path) -> Result<Vec<u8>, ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |e: String| ConfigError(format!("{}: {e}", file.display()));
    let text = read_msp_file(file).map_err(|e| ConfigError(e.to_string()))?;
    let der = CertificateDer::pem_slice_iter(&text)
        .next()
        .ok_or_else(|| bad("no CERTIFICATE block".into()))?
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    Ok(der.to_vec())
}

/// The refusal's kind, in the words the node's own events use.
fn kind(e: &SecurityError) -> &'static str {
    match e {
        SecurityError::MalformedIdentity(_) => "malformed_identity",
        SecurityError::UnknownMsp(_) => "unknown_msp",
        SecurityError::UntrustedCertificate(_) => "untrusted_certificate",
        SecurityError::Expired(_) => "expired",
        SecurityError::Revoked(_) => "revoked",
        SecurityError::OrganizationalUnit(_) => "organizational_unit",
        SecurityError::BadKey(_) => "bad_key",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal a trust store gives is named by its own kind in the `refused` field;
    /// the signing and signature errors, which judging a certificate never gives, are
    /// `other`.
    #[test]
    fn each_refusal_is_named_by_its_kind() {
        let e = |f: fn(String) -> SecurityError| f("why".into());
        for (error, want) in [
            (e(SecurityError::MalformedIdentity), "malformed_identity"),
            (e(SecurityError::UnknownMsp), "unknown_msp"),
            (
                e(SecurityError::UntrustedCertificate),
                "untrusted_certificate",
            ),
            (e(SecurityError::Expired), "expired"),
            (e(SecurityError::Revoked), "revoked"),
            (e(SecurityError::OrganizationalUnit), "organizational_unit"),
            (e(SecurityError::BadKey), "bad_key"),
            (e(SecurityError::BadSignature), "other"),
            (SecurityError::HighS, "other"),
            (e(SecurityError::Other), "other"),
        ] {
            assert_eq!(kind(&error), want, "{error:?}");
        }
    }
}
