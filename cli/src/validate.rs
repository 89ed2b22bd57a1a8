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
    certificate_pem, msp_dir_files, pki_id, read_msp_file, serialize_identity_pem,
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
    /// The MSP the certificates claim to belong to. Default: the only MSP trusted.
    #[arg(long, value_name = "ID")]
    msp_id: Option<String>,
    /// Certificates to judge: PEM files (the first CERTIFICATE block of each), or MSP
    /// folders (every file of their signcerts/).
    #[arg(value_name = "CERT", required = true)]
    certs: Vec<PathBuf>,
}

/// Runs the command: one JSON line per certificate; status 0 when every one is valid, 1
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

fn judge_all(args: &ValidateArgs) -> Result<bool, Failure> {
    let trust = opts::trust_store(&args.trust, &args.channel_config)?;
    let trusted: Vec<&str> = trust.msp_ids().collect();
    let msp_id = match (&args.msp_id, trusted.as_slice()) {
        (Some(id), _) => id.clone(),
        (None, [only]) => (*only).to_owned(),
        (None, _) => {
            return Err(ConfigError(
                "--msp-id: several MSPs are trusted; say which one the certificates claim".into(),
            )
            .into());
        }
    };
    let now = crate::expiry::wall_now();
    let mut all_valid = true;
    for path in &args.certs {
        for file in certificate_files(path)? {
            // As a Fabric MSP presents the certificate (a high-S CA signature folded to
            // low-S), so the PKI-ID is the one its peer has on the network.
            let der = trust.sanitize_certificate(&msp_id, &first_certificate(&file)?);
            let pem = certificate_pem(&der);
            let identity = serialize_identity_pem(&msp_id, pem.as_bytes());
            let verdict = trust.validate_identity(&identity, now);
            all_valid &= verdict.is_ok();
            let mut line = serde_json::json!({
                "event": "identity",
                "file": file.display().to_string(),
                "msp_id": msp_id,
                "pki_id": hex::encode(pki_id(&msp_id, pem.as_bytes()).as_bytes()),
                "valid": verdict.is_ok(),
            });
            // When it stops being valid, so that a renewal is planned before it must be.
            if let Some(at) = crate::expiry::pem_not_after(pem.as_bytes()) {
                line["not_after_unix_ms"] = serde_json::json!(crate::expiry::date_unix_ms(at));
            }
            if let Err(e) = &verdict {
                line["refused"] = serde_json::json!(kind(e));
                line["error"] = serde_json::json!(e.to_string());
            }
            out::print("result", format!("{line}\n")).map_err(Failure::Write)?;
        }
    }
    Ok(all_valid)
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
            "{}: a folder must be an MSP folder with signcerts/",
            path.display()
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
