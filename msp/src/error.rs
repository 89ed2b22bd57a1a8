//! Errors from loading MSP material. Each names the file or input at fault, because the
//! usual cause is a wrong path or a file from the wrong organization, and the operator
//! needs to know which one.

use core::fmt;
use fabric_gossip_core::SecurityError;
use std::path::PathBuf;

/// Why MSP material (certificates, keys, MSP folders) could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// A file or directory could not be read.
    Io {
        /// What was being read.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES): no certificate,
    /// key, CRL or `config.yaml` is, and reading it whole could take the memory (a 259 MB
    /// `cacerts` PEM was read whole, 972 MB resident). Judged before the file is read.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound it exceeds, in bytes.
        limit: u64,
    },
    /// A channel configuration block file is larger than
    /// [`MAX_BLOCK_BYTES`](crate::MAX_BLOCK_BYTES), more than any Fabric peer accepts in one
    /// gRPC message: not the block meant. Judged before the file is read.
    BlockTooLarge {
        /// The file.
        path: PathBuf,
        /// The bound it exceeds, in bytes.
        limit: u64,
    },
    /// A path named as a file is a directory, a FIFO, a socket or a device: not opened,
    /// since reading a FIFO blocks until someone writes to it, and a device may never end.
    NotAFile {
        /// The path (a symbolic link is followed: this is what it leads to).
        path: PathBuf,
        /// What it is instead (`a FIFO`, `a directory`, ...).
        kind: &'static str,
    },
    /// A directory that must hold at least one file holds none (e.g. an empty `cacerts/`).
    Empty {
        /// The directory.
        path: PathBuf,
        /// What was expected in it.
        expected: &'static str,
    },
    /// The input is not PEM, or holds no block of the expected kind.
    Pem {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate could not be parsed or uses an unsupported key or curve.
    Certificate {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A certificate given as a CA lacks `basicConstraints: CA:TRUE` (Fabric refuses such
    /// an MSP too).
    NotACa {
        /// The file (or a description of an in-memory input).
        source: String,
    },
    /// A certificate revocation list could not be parsed, or could never revoke anything
    /// (see [`TrustStore::add_crl_pem`](crate::TrustStore::add_crl_pem)).
    Crl {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// An MSP's configuration (its folder's `config.yaml`: NodeOUs, OU identifiers) could
    /// not be read, or names a CA that is not a root or intermediate of the MSP (Fabric
    /// refuses to set up such an MSP too).
    Config {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A file given as a channel configuration block is not one: not a `common.Block`, an
    /// empty block, or a block of another kind (transactions). Apart from
    /// [`Config`](Self::Config), whose "bad MSP configuration" would send the user looking
    /// at MSPs when the wrong file was given.
    NotAConfigBlock {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What it is instead, or why it does not decode.
        reason: String,
    },
    /// A private key could not be parsed or uses an unsupported curve.
    Key {
        /// The file (or a description of an in-memory input).
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// No private key among those given matches the signing certificate.
    KeyMismatch {
        /// The signing certificate.
        certificate: String,
        /// Where keys were looked for.
        keys: String,
    },
    /// The own identity does not chain to a CA of its MSP in the trust store.
    OwnIdentity {
        /// The signing certificate.
        certificate: String,
        /// Why the trust store refuses it.
        error: SecurityError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            LoadError::TooLarge { path, limit } => write!(
                f,
                "{}: larger than {limit} bytes, the most an MSP file may hold (certificates, \
                 keys, CRLs and config.yaml take a few KiB)",
                path.display()
            ),
            LoadError::BlockTooLarge { path, limit } => write!(
                f,
                "{}: larger than {limit} bytes, the most a Fabric peer accepts in one message; \
                 not a channel configuration block",
                path.display()
            ),
            LoadError::NotAFile { path, kind } => {
                write!(f, "{}: not a regular file ({kind})", path.display())
            }
            LoadError::Empty { path, expected } => {
                write!(f, "{}: no {expected} found", path.display())
            }
            LoadError::Pem { source, reason } => write!(f, "{source}: {reason}"),
            LoadError::Certificate { source, reason } => {
                write!(f, "{source}: bad certificate: {reason}")
            }
            LoadError::NotACa { source } => write!(
                f,
                "{source}: not a CA certificate (basicConstraints CA:TRUE is missing)"
            ),
            LoadError::Crl { source, reason } => write!(f, "{source}: bad CRL: {reason}"),
            LoadError::Config { source, reason } => {
                write!(f, "{source}: bad MSP configuration: {reason}")
            }
            LoadError::NotAConfigBlock { source, reason } => {
                write!(f, "{source}: not a configuration block ({reason})")
            }
            LoadError::Key { source, reason } => write!(f, "{source}: bad private key: {reason}"),
            LoadError::KeyMismatch { certificate, keys } => write!(
                f,
                "no private key in {keys} matches the public key of {certificate}"
            ),
            LoadError::OwnIdentity { certificate, error } => {
                write!(f, "{certificate}: own identity refused: {error}")
            }
        }
    }
}

/// No `source()`: the text above is whole (an I/O error's or a refusal's own included), so
/// a reporter that prints the chain (`anyhow`'s `{:#}`) says the reason once. The
/// underlying error stays readable in the variant's `error` field.
impl std::error::Error for LoadError {}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LoadError {
    let path = path.into();
    move |error| LoadError::Io { path, error }
}
