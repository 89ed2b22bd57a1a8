//! X.509 ECDSA MSP security provider for real Fabric identities.
//!
//! [`MspSecurity`] implements the core's [`Security`](fabric_gossip_core::Security) the way
//! a Fabric peer's MSP does (spec section 9): identities are `msp.SerializedIdentity`
//! messages carrying a PEM X.509 certificate, PKI-IDs are SHA-256(mspid ‖ id_bytes),
//! signatures are low-S DER ECDSA over SHA-256, and a [`TrustStore`] decides which
//! certificates each MSP vouches for.
//!
//! Signatures are made and checked with `aws-lc-rs` (AWS-LC's constant-time assembly, the
//! library rustls already uses for TLS, so an application links one C cryptography
//! library): about ten times faster to sign and five times faster to verify than the
//! pure-Rust RustCrypto code. Certificate chains' signatures are checked with `aws-lc-rs`
//! too, so a node meets a new identity about five times faster. RustCrypto still parses
//! certificates, keys and DER signatures (so that AWS-LC's reader never decides what is
//! well formed), and signs when signatures must be reproducible
//! ([`MspSecurity::with_deterministic_signatures`], for simulations) or the key is P-384
//! (AWS-LC signs P-384 only over SHA-384; Fabric hashes with SHA-256).
//!
//! # Pointing a node at a real Fabric network
//!
//! A `cryptogen` output (or the equivalent written by Fabric CA clients) looks like this:
//!
//! ```text
//! crypto-config/peerOrganizations/org1.example.com/
//!   msp/                                   <- the organization's MSP: trust for Org1MSP
//!     cacerts/ca.org1.example.com-cert.pem
//!     tlscacerts/tlsca.org1.example.com-cert.pem
//!   peers/peer0.org1.example.com/
//!     msp/                                 <- this peer's own identity
//!       cacerts/  intermediatecerts/ (Fabric CA only)
//!       signcerts/peer0.org1.example.com-cert.pem
//!       keystore/priv_sk                   (Fabric CA: <ski>_sk)
//!     tls/ca.crt server.crt server.key     <- TLS, for the transport, not for this crate
//! ```
//!
//! * **Own identity**: [`MspSecurity::from_msp_dir`] with the peer's `msp/` folder and the
//!   MSP ID of its organization (`Org1MSP` in Fabric's samples; the ID in `configtx.yaml`,
//!   not the domain). Its `cacerts/`, `intermediatecerts/` and `crls/` are trusted for that
//!   MSP ID. The certificate is presented as Fabric's MSP presents it, a high-S CA
//!   signature folded to low-S ([`TrustStore::sanitize_certificate`]), so the node has the
//!   PKI-ID a Fabric peer given the same folder has.
//! * **Trust**: for every other organization whose peers this node talks to,
//!   [`TrustStore::add_msp_dir`] with that organization's `msp/` folder
//!   (`peerOrganizations/<domain>/msp`) and its MSP ID. That folder holds the same CA
//!   certificates the channel configuration carries. For material that is not laid out as
//!   an MSP folder, [`TrustStore::add_path`] accepts a folder of CA PEM files or one file.
//! * **A channel's trust**: [`TrustStore::add_channel_config`] with the channel's
//!   configuration block (`peer channel fetch config`) trusts every organization of the
//!   channel as the channel configures it, CRLs and NodeOUs included, instead of folders.
//! * **TLS**: the transport uses `tls/server.crt` and `tls/server.key` (cryptogen's peer TLS
//!   certificates are valid for both server and client authentication) and trusts the
//!   organizations' `tlscacerts/`; the core only needs the SHA-256 of the certificates.
//!
//! ```no_run
//! use fabric_gossip_core::{Comm, Config, Instant};
//! use fabric_gossip_msp::{MspSecurity, TrustStore};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let orgs = "crypto-config/peerOrganizations";
//! let mut trust = TrustStore::new();
//! trust.add_msp_dir("Org2MSP", format!("{orgs}/org2.example.com/msp"))?;
//! let security = MspSecurity::from_msp_dir(
//!     format!("{orgs}/org1.example.com/peers/peer0.org1.example.com/msp"),
//!     "Org1MSP",
//!     trust,
//! )?;
//! let now = Instant::from_system_time(std::time::SystemTime::now());
//! let comm = Comm::new(Config::default(), security, now)?;
//! # Ok(()) }
//! ```
//!
//! Development material laid out the same way can be generated with [`dev`] (feature
//! `dev-certs`, on by default), on disk or in memory:
//!
//! ```
//! use fabric_gossip_core::{Comm, Config, Instant, Security};
//! use fabric_gossip_msp::dev::{self, OrgSpec, Validity};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::from_unix_secs(1_700_000_000);
//! let specs = [
//!     OrgSpec::new("Org1MSP", "org1.example.com", 1),
//!     OrgSpec::new("Org2MSP", "org2.example.com", 1),
//! ];
//! let orgs = dev::generate_in_memory(&specs, Validity::ten_years_from(now), &mut dev::OsRng)?;
//! let trust = dev::trust_all(&orgs)?;
//! let org1 = orgs[0].security(&orgs[0].peers[0], trust.clone())?;
//! let org2 = orgs[1].security(&orgs[1].peers[0], trust)?;
//! let sig = org1.sign(b"hello")?;
//! org2.verify(&org1.own_identity(), &sig, b"hello")?;
//! org2.validate_identity(&org1.own_identity(), now)?;
//! let comm = Comm::new(Config::default(), org1, now)?;
//! # Ok(()) }
//! ```
//!
//! # What is checked, and how it differs from Fabric
//!
//! * Chain: each link by issuer name and signature (ECDSA P-256/P-384 with SHA-256, -384 or
//!   -512), ending at a root in `cacerts/` of the MSP the identity names. CA certificates
//!   must be CAs (`basicConstraints`) and valid when the member certificate was issued,
//!   which is Fabric's rule. Certificate signatures may be high-S, as Go accepts them.
//! * Validity: the member certificate must not be past notAfter at `now`. As in Fabric, a
//!   certificate not valid yet is accepted: the chain is checked at the certificate's
//!   notBefore + 1 s, never against the clock, so a peer enrolled by a CA whose clock is
//!   ahead of ours is not refused. (A TLS certificate is another matter: rustls, like Go's
//!   TLS stack, refuses one not valid yet.)
//! * Revocation: the CRLs of an MSP's `crls/` folder (or [`TrustStore::add_crl_pem`]) revoke
//!   by Fabric's rule: the CRL's authorityKeyIdentifier is the issuing CA's
//!   subjectKeyIdentifier, it lists the serial, and that CA signed it. Refused with
//!   `Revoked`. Fabric refuses a CA without a subjectKeyIdentifier, and so does this crate.
//! * Issuer: a member must be issued by a CA that issued no other CA of the MSP (Fabric:
//!   "Parent certificate should be a leaf of the certification tree"): with a root and an
//!   intermediate, members come from the intermediate.
//! * Organizational units: an MSP folder's `config.yaml` is read as Fabric reads it
//!   ([`TrustStore::add_msp_dir`], or [`TrustStore::set_node_ous`] and
//!   [`TrustStore::add_unit_identifier`]). With NodeOUs on (cryptogen and Fabric CA turn
//!   them on), a member must carry exactly one OU of a client, peer, admin or orderer role,
//!   issued through the CA the role names; with OU identifiers, one of those. Refused with
//!   `OrganizationalUnit`. One difference: a NodeOU certificate that cannot be read refuses
//!   the folder here, where Fabric warns and accepts the role from any CA of the MSP.
//! * Not checked (a Fabric channel would): channel reader policies. A member of a trusted
//!   MSP with a valid role is accepted whichever role it is, as Fabric's gossip accepts it.
//! * Not supported, though Fabric's BCCSP would verify them: P-224 and P-521 keys (cryptogen
//!   issues P-256, Fabric CA P-256 or P-384), and a channel MSP configured with the SHA-3
//!   signature hash family (Fabric then hashes messages with SHA3-256; local MSPs and
//!   `configtxgen`'s default use SHA-256). Such identities are refused with `BadKey`, and
//!   such signatures read as bad signatures.
#![forbid(unsafe_code)]

mod cert;
mod channel;
mod crl;
#[cfg(feature = "dev-certs")]
pub mod dev;
mod error;
mod files;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod go_yaml;
mod identity;
mod keys;
mod security;
mod trust;
mod units;

pub use cert::certificate_not_after;
pub use channel::ChannelTrust;
pub use error::LoadError;
pub use files::{
    MAX_BLOCK_BYTES, MAX_FILE_BYTES, msp_dir_files, read_channel_config_file, read_msp_file,
};
pub use identity::{certificate_pem, pki_id, serialize_identity, serialize_identity_pem};
pub use security::{CacheStats, DEFAULT_CACHE_CAPACITY, MspSecurity, TrustHandle, WallClockOffset};
pub use trust::{MAX_CHAIN_DEPTH, TrustStore, UnloadableRoot};
pub use units::{NodeOus, NodeRole};
