//! The trust store: for each MSP ID, the root and intermediate CAs that vouch for its members.

use crate::cert::{CertInfo, pem_blocks};
use crate::crl::Crl;
use crate::error::LoadError;
use crate::files::{msp_dir_files, required_pem_files};
use crate::keys::Arithmetic;
use crate::units::{self, NodeOus, NodeRole, UnitRules, chain_identifier};
use core::time::Duration;
use fabric_gossip_core::SecurityError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Longest CA chain walked from a member certificate to a root. Real MSPs have one or two
/// levels; the bound only stops a crafted set of intermediates from making validation loop.
pub const MAX_CHAIN_DEPTH: usize = 8;

/// Which MSPs this node recognizes and which CAs vouch for each: the part of a Fabric
/// channel configuration (or a local MSP folder) that identity validation needs.
///
/// An identity is accepted only if its certificate chains, by name and by signature, to a
/// root CA of the very MSP its `mspid` names, so a member of one organization cannot pose
/// as a member of another even when both CAs are trusted; if no revocation list of that
/// MSP revokes it or an intermediate CA of its chain (see [`TrustStore::add_crl_pem`]); if
/// the CA that issued it issued no other CA of the MSP (Fabric's rule); and if the MSP
/// accepts its organizational units (see [`TrustStore::set_node_ous`]).
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    msps: BTreeMap<String, MspCas>,
    /// The channel configuration blocks read into this store, in order (without their TLS
    /// CAs), so that an operator sees which configuration a node trusts.
    pub(crate) channels: Vec<crate::ChannelTrust>,
}

#[derive(Clone, Debug, Default)]
struct MspCas {
    roots: Vec<Arc<CertInfo>>,
    /// Where each of `roots` came from (its file, or what named the PEM in memory), in the
    /// same order: warnings about a root name it.
    root_sources: Vec<String>,
    intermediates: Vec<Arc<CertInfo>>,
    crls: Vec<Arc<Crl>>,
    /// NodeOU roles and OU identifiers (`config.yaml`).
    units: UnitRules,
    /// The roots the NodeOU roles name as their CA, replaced with the roles.
    node_ou_roots: Vec<NamedRoot>,
    /// The roots the OU identifiers name as their CA; they add up.
    identifier_roots: Vec<NamedRoot>,
}

/// A root CA named as a certifier by an MSP's configuration: what names it (a NodeOU role
/// or an OU identifier), where that is configured, and the root.
#[derive(Clone, Debug)]
struct NamedRoot {
    what: String,
    configured_in: String,
    root: Arc<CertInfo>,
}

/// A root CA certificate that Fabric v2.4.9 built with Go 1.19 or later cannot set up its
/// MSP with, found by [`TrustStore::fabric_unloadable_roots`]: self-signed with a high-S
/// ECDSA signature, and named as a certifier by the MSP's configuration (a NodeOU role's or
/// an OU identifier's `Certificate`). This crate accepts such an MSP; no such Fabric peer
/// or orderer with it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnloadableRoot {
    /// The MSP whose configuration names the root.
    pub msp_id: String,
    /// Where the root came from: its file in `cacerts/`, or what named the PEM.
    pub source: String,
    /// The root's subject, as RFC 4514 text (most specific attribute first).
    pub subject: String,
    /// What names it, each as `NodeOUs {role} role` or `OrganizationalUnitIdentifiers
    /// {OU}`.
    pub named_by: Vec<String>,
    /// Where those are configured: the `config.yaml` files, or what named the
    /// configuration given in code, each once.
    pub configured_in: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    Intermediate,
}

impl TrustStore {
    /// An empty store: every identity is refused with `UnknownMsp` until MSPs are added.
    pub fn new() -> Self {
        TrustStore::default()
    }

    /// Trusts the root CA certificate in `pem` (its first `CERTIFICATE` block; the file or
    /// channel configuration entry it came from holds one for Fabric, whose MSP reads the
    /// first and no more: later ones are left out, with a warning) for `msp_id`. Returns
    /// how many were new (0 or 1). Use for CA material that is not on disk.
    pub fn add_ca_pem(&mut self, msp_id: &str, pem: &[u8]) -> Result<usize, LoadError> {
        let source = format!("root CA PEM for {msp_id}");
        self.add_pem(
            msp_id,
            Pem {
                text: pem,
                source: &source,
            },
            Role::Root,
        )
    }

    /// Adds the intermediate CA certificate in `pem` (its first block, as for
    /// [`TrustStore::add_ca_pem`]) for `msp_id`. It is trusted only as a link: a chain
    /// through it must still end at a root of the same MSP.
    pub fn add_intermediate_pem(&mut self, msp_id: &str, pem: &[u8]) -> Result<usize, LoadError> {
        let source = format!("intermediate CA PEM for {msp_id}");
        self.add_pem(
            msp_id,
            Pem {
                text: pem,
                source: &source,
            },
            Role::Intermediate,
        )
    }

    /// Revokes, for `msp_id`, the certificates listed by the CRL in `pem` (its first
    /// `X509 CRL` block, as Fabric's `x509.ParseCRL` reads one; later ones are left out,
    /// with a warning), as a Fabric MSP's `crls/` folder does. Returns how many CRLs were
    /// new.
    ///
    /// A CRL revokes a certificate when its authorityKeyIdentifier is the
    /// subjectKeyIdentifier of the CA that issued the certificate, it lists the
    /// certificate's serial number, and that CA's key verifies its signature: Fabric's rule,
    /// so the same CRLs cut off the same peers. Revocation and update dates are not read
    /// (Fabric revokes from the moment the CRL is configured). A listed member is refused
    /// with [`SecurityError::Revoked`]. A listed intermediate CA refuses every identity it
    /// issued; Fabric refuses to load an MSP with a revoked intermediate at all, so such a
    /// configuration does not work on Fabric peers either.
    ///
    /// CRLs are kept apart from the CAs and matched when an identity is validated, so they
    /// may be added before or after the CAs they belong to. Refused: a CRL without an
    /// authorityKeyIdentifier (without one, Fabric refuses every identity of the MSP), or
    /// one not signed with ECDSA. To revoke while a node runs, hand the new store to the
    /// provider's [`TrustHandle`](crate::TrustHandle) and have the node revalidate the
    /// identities it holds.
    pub fn add_crl_pem(&mut self, msp_id: &str, pem: &[u8]) -> Result<usize, LoadError> {
        let source = format!("CRL PEM for {msp_id}");
        self.add_crls(
            msp_id,
            Pem {
                text: pem,
                source: &source,
            },
        )
    }

    /// Trusts a Fabric MSP folder for `msp_id`: every file in `cacerts/` as a root (at least
    /// one is required), every file in `intermediatecerts/` (optional) as an intermediate,
    /// every CRL in `crls/` (optional; see [`TrustStore::add_crl_pem`]), and `config.yaml`
    /// (optional): its `NodeOUs` (see [`TrustStore::set_node_ous`]) and
    /// `OrganizationalUnitIdentifiers` (see [`TrustStore::add_unit_identifier`]), their
    /// certificate paths relative to the folder, as Fabric reads them (a later folder for
    /// the same MSP ID with NodeOUs on replaces the roles; OU identifiers add up). Other
    /// sub-folders (`signcerts/`, `keystore/`, `tlscacerts/`, `admincerts/`) are not used
    /// for gossip identity validation. Returns how many certificates and CRLs were new.
    pub fn add_msp_dir(&mut self, msp_id: &str, dir: impl AsRef<Path>) -> Result<usize, LoadError> {
        let dir = dir.as_ref();
        let roots = required_pem_files(&dir.join("cacerts"), "root CA certificate")?;
        let mut added = 0;
        for path in roots {
            added += self.add_file(msp_id, &path, Role::Root)?;
        }
        let inter = dir.join("intermediatecerts");
        if inter.is_dir() {
            for path in msp_dir_files(&inter)? {
                added += self.add_file(msp_id, &path, Role::Intermediate)?;
            }
        }
        let crls = dir.join("crls");
        if crls.is_dir() {
            for path in msp_dir_files(&crls)? {
                added += Pem::read(&path, |pem| self.add_crls(msp_id, pem))?;
            }
        }
        if let Some(config) = units::read_config(dir)? {
            let source = dir.join("config.yaml").display().to_string();
            self.apply_config(msp_id, &config, &source)?;
        }
        Ok(added)
    }

    /// Adds what an MSP folder's `config.yaml` (read from `source`) configures for
    /// `msp_id`: its OU identifiers, then its NodeOUs.
    pub(crate) fn apply_config(
        &mut self,
        msp_id: &str,
        config: &units::MspConfigFile,
        source: &str,
    ) -> Result<(), LoadError> {
        for (unit, pem, path) in &config.identifiers {
            let cert_source = path.display().to_string();
            self.add_identifier(
                msp_id,
                unit,
                Pem {
                    text: pem,
                    source: &cert_source,
                },
                source,
            )?;
        }
        if let Some(node_ous) = &config.node_ous {
            self.put_node_ous(msp_id, node_ous, source)?;
        }
        Ok(())
    }

    /// Enforces Fabric's NodeOUs for `msp_id`, as `NodeOUs: {Enable: true}` in an MSP
    /// folder's `config.yaml` does (read by [`TrustStore::add_msp_dir`]): a member is then
    /// accepted only if exactly one of its certificate's organizational units is the OU of
    /// a configured role, issued through the CA the role names if it names one. Replaces
    /// the MSP's roles; a `NodeOus` without roles turns them off. A CA named must already
    /// be a root or intermediate of `msp_id`; refused with [`LoadError::Config`] otherwise,
    /// as Fabric refuses to set up such an MSP. A member refused is refused with
    /// [`SecurityError::OrganizationalUnit`].
    pub fn set_node_ous(&mut self, msp_id: &str, node_ous: &NodeOus) -> Result<(), LoadError> {
        self.put_node_ous(msp_id, node_ous, &format!("NodeOUs of {msp_id}"))
    }

    /// Adds one of Fabric's OU identifiers (`OrganizationalUnitIdentifiers` in
    /// `config.yaml`) for `msp_id`: once an MSP has any, a member is accepted only if its
    /// certificate names one of them as an organizational unit and was issued through the
    /// CA given with it (`ca_pem`, a root or intermediate of `msp_id`). Returns whether it
    /// was new.
    pub fn add_unit_identifier(
        &mut self,
        msp_id: &str,
        unit: &str,
        ca_pem: &[u8],
    ) -> Result<bool, LoadError> {
        let source = format!("OU identifier {unit} of {msp_id}");
        self.add_identifier(
            msp_id,
            unit,
            Pem {
                text: ca_pem,
                source: &source,
            },
            &source,
        )
    }

    /// The NodeOU roles `msp_id` enforces and each one's OU, in Fabric's order; empty when
    /// NodeOUs are off.
    pub fn node_roles(&self, msp_id: &str) -> Vec<(NodeRole, &str)> {
        self.msps.get(msp_id).map_or_else(Vec::new, |m| {
            m.units
                .roles
                .iter()
                .map(|(r, u, _)| (*r, u.as_str()))
                .collect()
        })
    }

    /// How many OU identifiers `msp_id` has.
    pub fn unit_identifier_count(&self, msp_id: &str) -> usize {
        self.msps
            .get(msp_id)
            .map_or(0, |m| m.units.identifiers.len())
    }

    /// Adds an OU identifier whose CA is `ca`, configured in `configured_in`.
    fn add_identifier(
        &mut self,
        msp_id: &str,
        unit: &str,
        ca: Pem<'_>,
        configured_in: &str,
    ) -> Result<bool, LoadError> {
        let (id, root) = self.certifiers(msp_id, ca)?;
        let cas = self.msps.entry(msp_id.to_owned()).or_default();
        if let Some(root) = root {
            let named = NamedRoot {
                what: format!("OrganizationalUnitIdentifiers {unit}"),
                configured_in: configured_in.to_owned(),
                root,
            };
            if !cas.identifier_roots.iter().any(|n| {
                n.what == named.what
                    && n.configured_in == named.configured_in
                    && n.root.der == named.root.der
            }) {
                cas.identifier_roots.push(named);
            }
        }
        let rules = &mut cas.units;
        if rules.identifiers.iter().any(|(u, i)| u == unit && *i == id) {
            return Ok(false);
        }
        rules.identifiers.push((unit.to_owned(), id));
        Ok(true)
    }

    fn put_node_ous(
        &mut self,
        msp_id: &str,
        node_ous: &NodeOus,
        source: &str,
    ) -> Result<(), LoadError> {
        let mut roles = Vec::with_capacity(node_ous.roles.len());
        let mut named_roots = Vec::new();
        for (role, unit, ca) in &node_ous.roles {
            let certifiers = match ca {
                Some(text) => {
                    let ca_source = format!("{source}: the {role} role's CA");
                    let (id, root) = self.certifiers(
                        msp_id,
                        Pem {
                            text,
                            source: &ca_source,
                        },
                    )?;
                    if let Some(root) = root {
                        named_roots.push(NamedRoot {
                            what: format!("NodeOUs {role} role"),
                            configured_in: source.to_owned(),
                            root,
                        });
                    }
                    Some(id)
                }
                None => None,
            };
            roles.push((*role, unit.clone(), certifiers));
        }
        let cas = self.msps.entry(msp_id.to_owned()).or_default();
        cas.units.roles = roles;
        cas.node_ou_roots = named_roots;
        Ok(())
    }

    /// Fabric's certifiers identifier of a CA named by an MSP's configuration: the chain
    /// identifier of the CA and every CA above it, which a member's CAs must match. The CA
    /// must be a root or an intermediate of `msp_id` that chains to one of its roots. With
    /// it, the root when the CA is one (for [`TrustStore::fabric_unloadable_roots`]).
    fn certifiers(
        &self,
        msp_id: &str,
        ca: Pem<'_>,
    ) -> Result<([u8; 32], Option<Arc<CertInfo>>), LoadError> {
        // Fabric reads the first PEM block as a certificate, whatever follows it.
        let cert = ca.first_block_certificate()?;
        let refuse = |reason: String| LoadError::Config {
            source: ca.source.to_owned(),
            reason,
        };
        let cas = self.msps.get(msp_id).ok_or_else(|| {
            refuse(format!(
                "{msp_id} has no CA: its CAs must be added before its configuration"
            ))
        })?;
        if let Some(root) = cas.roots.iter().find(|c| c.der == cert.der) {
            return Ok((chain_identifier([cert.der.as_slice()]), Some(root.clone())));
        }
        let Some(ca) = cas.intermediates.iter().find(|c| c.der == cert.der) else {
            return Err(refuse(format!(
                "the certificate is not a root or intermediate CA of {msp_id}"
            )));
        };
        if cas.issued_a_ca(ca, Arithmetic::AwsLc) {
            return Err(refuse(format!(
                "the intermediate CA issued another CA of {msp_id}; Fabric accepts only one \
                 that issued none"
            )));
        }
        let above = self
            .walk(msp_id, cas, ca, Arithmetic::AwsLc)
            .map_err(|e| refuse(format!("the intermediate CA does not chain to a root: {e}")))?;
        Ok((
            chain_identifier(
                core::iter::once(ca.der.as_slice()).chain(above.iter().map(|c| c.der.as_slice())),
            ),
            None,
        ))
    }

    /// What a node's own MSP folder adds to the trust store, as a Fabric peer trusts its own
    /// MSP: its `cacerts/`, `intermediatecerts/` and `crls/` (see
    /// [`TrustStore::add_msp_dir`]) when it has `cacerts/`, else nothing (a folder of
    /// signing material only, its CAs given some other way). Returns how many were new.
    pub fn add_own_msp_dir(
        &mut self,
        msp_id: &str,
        dir: impl AsRef<Path>,
    ) -> Result<usize, LoadError> {
        let dir = dir.as_ref();
        if dir.join("cacerts").is_dir() {
            self.add_msp_dir(msp_id, dir)
        } else {
            Ok(0)
        }
    }

    /// Checks the node's own certificate as it will be checked by peers sharing this
    /// store, so that a node this store refuses does not start (or take the store).
    /// `source` names the certificate in the error.
    pub(crate) fn validate_own(
        &self,
        msp_id: &str,
        cert: &CertInfo,
        source: &str,
    ) -> Result<(), LoadError> {
        self.validate_chain(msp_id, cert, Arithmetic::AwsLc)
            .map_err(|error| LoadError::OwnIdentity {
                certificate: source.to_owned(),
                error,
            })
    }

    /// Trusts whatever `path` is, for command lines that take one path per MSP: an MSP
    /// folder (has `cacerts/`), a folder of root CA PEM files, or one root CA PEM file.
    pub fn add_path(&mut self, msp_id: &str, path: impl AsRef<Path>) -> Result<usize, LoadError> {
        let path = path.as_ref();
        if path.join("cacerts").is_dir() {
            return self.add_msp_dir(msp_id, path);
        }
        if path.is_dir() {
            let files = msp_dir_files(path)?;
            if files.is_empty() {
                return Err(LoadError::Empty {
                    path: path.to_owned(),
                    expected: "root CA certificate",
                });
            }
            let mut added = 0;
            for f in files {
                added += self.add_file(msp_id, &f, Role::Root)?;
            }
            return Ok(added);
        }
        self.add_file(msp_id, path, Role::Root)
    }

    /// Judges `identity` (an `msp.SerializedIdentity`, as a peer presents it in its
    /// handshake) at `now` exactly as an [`MspSecurity`](crate::MspSecurity) trusting this
    /// store would, without an identity of one's own: for tools that answer "why is this
    /// peer refused?" before a node is started.
    pub fn validate_identity(
        &self,
        identity: &[u8],
        now: fabric_gossip_core::Instant,
    ) -> Result<(), SecurityError> {
        crate::security::parse(identity, self, Arithmetic::AwsLc)?.verdict(now)
    }

    /// The certificate a Fabric MSP trusting this store makes of `der` before using it as an
    /// identity (`sanitizeCert`): Go's x509 accepts a CA's signature with a high `s`, and
    /// Fabric folds it to low-S with the issuer's key and re-encodes the certificate. A
    /// Fabric peer whose signing certificate is high-S therefore presents the re-encoded
    /// one, and its PKI-ID is the hash of that (`cryptogen extend` signs with the bare key:
    /// about half the certificates it renews are high-S). `der` as it is when its signature
    /// is low-S already, when it does not parse, or when no CA of `msp_id` issued it.
    pub fn sanitize_certificate(&self, msp_id: &str, der: &[u8]) -> Vec<u8> {
        let sanitized = || {
            let cas = self.msps.get(msp_id)?;
            let cert = CertInfo::from_der(der).ok()?;
            let issuer =
                cas.roots.iter().chain(&cas.intermediates).find(|ca| {
                    ca.subject == cert.issuer && cert.is_signed_by(ca, Arithmetic::AwsLc)
                })?;
            let low = issuer.key.low_s_form(&cert.signature)?;
            crate::cert::with_signature(der, &low).ok()
        };
        sanitized().unwrap_or_else(|| der.to_vec())
    }

    /// The roots that Fabric v2.4.9 built with Go 1.19 or later cannot set up their MSP
    /// with, though this store accepts them: a self-signed root CA whose ECDSA self-signature is high-S, named as the CA of
    /// a NodeOU role or an OU identifier (`config.yaml`'s `Certificate`, or the same in a
    /// channel configuration). Nothing here refuses them; this is for warnings, since no
    /// Fabric peer or orderer with such an MSP starts (Fabric's orderer panics at start).
    ///
    /// Why (read in Fabric v2.4.9's `msp/` and Go's `crypto/x509`): setting up an MSP,
    /// Fabric replaces each root of `cacerts/` by its low-S re-encoding (`setupCAs`, whose
    /// identities go through `sanitizeCert`) and then trusts only that form. A NodeOU role
    /// or OU identifier names its CA by file, which Fabric reads as the file's bytes and
    /// passes to `sanitizeCert` again (`getCertifiersIdentifier`), which must first verify
    /// it. The file's form is not among the trusted roots (Go matches a root by its bytes),
    /// and the re-encoded root, the one certificate that could vouch for it, has its
    /// subject and key, so Go's chain builder skips it as already in the chain
    /// (`alreadyInChain`): "x509: certificate signed by unknown authority", and the MSP is
    /// not set up. A low-S root re-encodes to itself and is found; an intermediate CA,
    /// high-S or not, is verified by the root above it; with NodeOUs off in `config.yaml`
    /// (Fabric's MSP folder reader then reads no role) and no OU identifier, nothing names
    /// the root. cryptogen signs its CAs with the bare key, so about half of them are
    /// high-S. Not seen here: a channel configuration's NodeOU roles when its NodeOUs are
    /// off (Fabric still checks their certificates; this store does not read them).
    ///
    /// Which Fabric: Go 1.18's chain builder compared whole certificates and so found the
    /// re-encoded root; Go 1.19 compares subject and key (`alreadyInChain`), which is what
    /// fails (golang/go#54549). Fabric v2.5.0 and v2.2.11 sanitize a self-signed root before
    /// verifying it (hyperledger/fabric#3774) and set such an MSP up; v2.4.9's Makefile
    /// names Go 1.18.10, the live check built it with Go 1.19.8. No Fabric build can be
    /// told from here, so the warning names the condition.
    pub fn fabric_unloadable_roots(&self) -> Vec<UnloadableRoot> {
        let mut found = Vec::new();
        for (msp_id, cas) in &self.msps {
            for (i, root) in cas.roots.iter().enumerate() {
                let named: Vec<&NamedRoot> = cas
                    .node_ou_roots
                    .iter()
                    .chain(&cas.identifier_roots)
                    .filter(|n| n.root.der == root.der)
                    .collect();
                if named.is_empty() || !root.is_high_s_self_signed() {
                    continue;
                }
                let mut configured_in: Vec<String> = Vec::new();
                for n in &named {
                    if !configured_in.contains(&n.configured_in) {
                        configured_in.push(n.configured_in.clone());
                    }
                }
                found.push(UnloadableRoot {
                    msp_id: msp_id.clone(),
                    source: cas.root_sources.get(i).cloned().unwrap_or_default(),
                    subject: root.subject_text(),
                    named_by: named.iter().map(|n| n.what.clone()).collect(),
                    configured_in,
                });
            }
        }
        found
    }

    /// The MSPs one of whose root or intermediate CAs issued `der` (by issuer name and
    /// signature; whether the chain above that CA holds is left to
    /// [`TrustStore::validate_identity`]), in order; none when `der` does not parse. A peer
    /// never needs it, since an identity names its MSP, but a tool judging a folder of
    /// certificates from several organizations does, to know which MSP each one belongs
    /// to: more than one means the same CA is trusted under several MSP IDs.
    pub fn issuing_msps(&self, der: &[u8]) -> Vec<&str> {
        let Ok(cert) = CertInfo::from_der(der) else {
            return Vec::new();
        };
        self.msps
            .iter()
            .filter(|(_, cas)| {
                cas.roots
                    .iter()
                    .chain(&cas.intermediates)
                    .any(|ca| ca.subject == cert.issuer && cert.is_signed_by(ca, Arithmetic::AwsLc))
            })
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// The channel configuration blocks read into this store
    /// ([`TrustStore::add_channel_config`]), in the order read: each one's channel, its
    /// configuration sequence (which grows with every update, so a reload shows whether the
    /// block was the newest) and its MSPs. Their `tls_ca_pems` are left out.
    pub fn channel_configs(&self) -> &[crate::ChannelTrust] {
        &self.channels
    }

    /// The MSP IDs this store recognizes, in order.
    pub fn msp_ids(&self) -> impl Iterator<Item = &str> {
        self.msps.keys().map(String::as_str)
    }

    /// Whether identities claiming `msp_id` can be validated at all.
    pub fn contains(&self, msp_id: &str) -> bool {
        self.msps.contains_key(msp_id)
    }

    /// How many root and intermediate certificates `msp_id` has.
    pub fn ca_count(&self, msp_id: &str) -> (usize, usize) {
        self.msps
            .get(msp_id)
            .map_or((0, 0), |m| (m.roots.len(), m.intermediates.len()))
    }

    /// How many CRLs `msp_id` has, and how many serial numbers they list in all.
    pub fn crl_count(&self, msp_id: &str) -> (usize, usize) {
        self.msps.get(msp_id).map_or((0, 0), |m| {
            (m.crls.len(), m.crls.iter().map(|c| c.len()).sum())
        })
    }

    fn add_crls(&mut self, msp_id: &str, pem: Pem<'_>) -> Result<usize, LoadError> {
        let crls = pem.first_only(pem.crls()?, "revocation list");
        let entry = self.msps.entry(msp_id.to_owned()).or_default();
        let mut added = 0;
        for crl in crls {
            if !entry.crls.iter().any(|c| c.der == crl.der) {
                entry.crls.push(Arc::new(crl));
                added += 1;
            }
        }
        Ok(added)
    }

    fn add_file(&mut self, msp_id: &str, path: &Path, role: Role) -> Result<usize, LoadError> {
        Pem::read(path, |pem| self.add_pem(msp_id, pem, role))
    }

    fn add_pem(&mut self, msp_id: &str, pem: Pem<'_>, role: Role) -> Result<usize, LoadError> {
        let certs = pem.first_only(pem.certificates()?, "certificate");
        let entry = self.msps.entry(msp_id.to_owned()).or_default();
        let mut added = 0;
        for cert in certs {
            if !cert.is_ca {
                return Err(LoadError::NotACa {
                    source: pem.source.to_owned(),
                });
            }
            if cert.ski.is_none() {
                return Err(LoadError::Certificate {
                    source: pem.source.to_owned(),
                    reason: "a CA certificate without a subjectKeyIdentifier (Fabric's MSP \
                             refuses such a CA: revocation lists name CAs by it)"
                        .into(),
                });
            }
            let list = match role {
                Role::Root => &mut entry.roots,
                Role::Intermediate => &mut entry.intermediates,
            };
            if !list.iter().any(|c| c.der == cert.der) {
                list.push(Arc::new(cert));
                if role == Role::Root {
                    entry.root_sources.push(pem.source.to_owned());
                }
                added += 1;
            }
        }
        Ok(added)
    }

    /// Checks that `leaf` chains to a root of `msp_id`, as Fabric's MSP does: each link by
    /// issuer name and signature, through the MSP's intermediates, no link revoked; then
    /// that the MSP accepts the certificate's organizational units (NodeOUs, OU
    /// identifiers). CA validity is judged at the leaf's notBefore + 1 s (Fabric's rule, so
    /// that renewing a CA does not invalidate members already issued); the leaf's own
    /// validity against the clock is the caller's. `arithmetic` checks each link's
    /// signature.
    pub(crate) fn validate_chain(
        &self,
        msp_id: &str,
        leaf: &CertInfo,
        arithmetic: Arithmetic,
    ) -> Result<(), SecurityError> {
        let cas = self
            .msps
            .get(msp_id)
            .ok_or_else(|| SecurityError::UnknownMsp(fabric_gossip_core::shown(msp_id)))?;
        if cas
            .roots
            .iter()
            .chain(&cas.intermediates)
            .any(|c| c.der == leaf.der)
        {
            return Err(SecurityError::UntrustedCertificate(format!(
                "the certificate is a CA of {msp_id}, not a member identity"
            )));
        }
        if leaf.is_ca {
            return Err(SecurityError::UntrustedCertificate(
                "a CA certificate (basicConstraints cA true) cannot be a member identity \
                 (Fabric's MSP refuses it)"
                    .into(),
            ));
        }
        let issuers = self.walk(msp_id, cas, leaf, arithmetic)?;
        go_chain_rules(leaf, &issuers)?;
        if cas.issued_a_ca(issuers[0], arithmetic) {
            return Err(SecurityError::UntrustedCertificate(format!(
                "issued by a CA of {msp_id} that issued another of its CAs; {msp_id} accepts \
                 members only from CAs that issued none (Fabric: \"Parent certificate should \
                 be a leaf of the certification tree\")"
            )));
        }
        if cas.units.is_empty() {
            return Ok(());
        }
        let chain_id = chain_identifier(issuers.iter().map(|c| c.der.as_slice()));
        cas.units
            .check(msp_id, &leaf.units, &chain_id)
            .map_err(SecurityError::OrganizationalUnit)
    }

    /// The CAs of `cas` above `leaf`, its issuer first and a root last: each link by issuer
    /// name and signature, valid when `leaf` was issued, and not revoked.
    fn walk<'a>(
        &self,
        msp_id: &str,
        cas: &'a MspCas,
        leaf: &CertInfo,
        arithmetic: Arithmetic,
    ) -> Result<Vec<&'a CertInfo>, SecurityError> {
        let at = leaf.not_before + Duration::from_secs(1);
        let mut issuers: Vec<&'a CertInfo> = Vec::new();
        let mut current: &CertInfo = leaf;
        for _ in 0..MAX_CHAIN_DEPTH {
            let mut expired_root = false;
            for root in &cas.roots {
                if root.subject == current.issuer && current.is_signed_by(root, arithmetic) {
                    if root.valid_at(at) {
                        cas.not_revoked(msp_id, leaf, current, root, arithmetic)?;
                        issuers.push(root);
                        return Ok(issuers);
                    }
                    expired_root = true;
                }
            }
            let next = cas.intermediates.iter().find(|ca| {
                ca.subject == current.issuer
                    && ca.der != current.der
                    && ca.valid_at(at)
                    && current.is_signed_by(ca, arithmetic)
            });
            match next {
                Some(ca) => {
                    cas.not_revoked(msp_id, leaf, current, ca, arithmetic)?;
                    issuers.push(ca);
                    current = ca;
                }
                None if expired_root => {
                    return Err(SecurityError::UntrustedCertificate(format!(
                        "the root CA of {msp_id} that issued the chain was not valid when the \
                         certificate was issued"
                    )));
                }
                None => return Err(self.no_issuer(msp_id, current, arithmetic)),
            }
        }
        Err(SecurityError::UntrustedCertificate(format!(
            "no chain to a root of {msp_id} within {MAX_CHAIN_DEPTH} certificates"
        )))
    }

    fn no_issuer(&self, msp_id: &str, cert: &CertInfo, arithmetic: Arithmetic) -> SecurityError {
        let other = self.msps.iter().find(|(id, cas)| {
            id.as_str() != msp_id
                && cas
                    .roots
                    .iter()
                    .chain(&cas.intermediates)
                    .any(|ca| ca.subject == cert.issuer && cert.is_signed_by(ca, arithmetic))
        });
        match other {
            Some((id, _)) => SecurityError::UntrustedCertificate(format!(
                "issued by a CA of {id}, not of the MSP it claims ({msp_id})"
            )),
            None => {
                SecurityError::UntrustedCertificate(format!("not issued by any CA of {msp_id}"))
            }
        }
    }
}

impl MspCas {
    /// Whether `ca` issued one of the MSP's intermediate CAs: an inner node of its
    /// certification tree, which Fabric does not accept as the issuer of a member (nor as a
    /// NodeOU or OU identifier CA, when an intermediate).
    fn issued_a_ca(&self, ca: &CertInfo, arithmetic: Arithmetic) -> bool {
        self.intermediates
            .iter()
            .any(|i| i.issuer == ca.subject && i.der != ca.der && i.is_signed_by(ca, arithmetic))
    }

    /// Fails with [`SecurityError::Revoked`] if a CRL of this MSP made by `issuer` revokes
    /// `cert`, a link of `leaf`'s chain (`leaf` itself or an intermediate CA above it).
    fn not_revoked(
        &self,
        msp_id: &str,
        leaf: &CertInfo,
        cert: &CertInfo,
        issuer: &CertInfo,
        arithmetic: Arithmetic,
    ) -> Result<(), SecurityError> {
        if !self
            .crls
            .iter()
            .any(|crl| crl.revokes(cert, issuer, arithmetic))
        {
            return Ok(());
        }
        let serial = hex(&cert.serial);
        Err(SecurityError::Revoked(if core::ptr::eq(cert, leaf) {
            format!("a CRL of {msp_id} lists serial number {serial}")
        } else {
            format!(
                "a CRL of {msp_id} lists the intermediate CA (serial number {serial}) that \
                 issued the chain"
            )
        }))
    }
}

/// A serial number's DER content octets in hex, without the 00 that DER puts before a
/// positive number whose top bit is set (`openssl x509 -serial` shows it so).
fn hex(bytes: &[u8]) -> String {
    let shown = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    shown.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM text together with the name a [`LoadError`] gives it (a file's path, or what the
/// caller passed in memory): the two always travel together, so that every error about
/// the text says where it came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pem<'a> {
    pub(crate) text: &'a [u8],
    pub(crate) source: &'a str,
}

impl Pem<'_> {
    /// Reads the file at `path` and hands it to `f`, named by its path.
    fn read<R>(
        path: &Path,
        f: impl FnOnce(Pem<'_>) -> Result<R, LoadError>,
    ) -> Result<R, LoadError> {
        let text = crate::files::read_msp_file(path)?;
        let source = path.display().to_string();
        f(Pem {
            text: &text,
            source: &source,
        })
    }

    /// Parses every `CERTIFICATE` block; at least one is required and other blocks are
    /// refused, so that a key file passed by mistake is reported rather than skipped.
    pub(crate) fn certificates(self) -> Result<Vec<CertInfo>, LoadError> {
        self.blocks("CERTIFICATE", |der| self.certificate(der))
    }

    /// Parses every `X509 CRL` block (the label OpenSSL, Go and Fabric CA write); at least
    /// one is required and other blocks are refused, as for certificates.
    pub(crate) fn crls(self) -> Result<Vec<Crl>, LoadError> {
        self.blocks("X509 CRL", |der| {
            Crl::from_der(der).map_err(|reason| LoadError::Crl {
                source: self.source.to_owned(),
                reason,
            })
        })
    }

    /// Every block, each labelled `label` and read by `parse`.
    fn blocks<T>(
        self,
        label: &str,
        parse: impl Fn(&[u8]) -> Result<T, LoadError>,
    ) -> Result<Vec<T>, LoadError> {
        let blocks = pem_blocks(self.text).map_err(|reason| self.error(reason))?;
        if blocks.is_empty() {
            return Err(self.error("no PEM block".into()));
        }
        blocks
            .into_iter()
            .map(|(found, der)| {
                if found != label {
                    return Err(self.error(format!("expected {label} blocks, found {found}")));
                }
                parse(&der)
            })
            .collect()
    }

    /// The first of `items` read from this text: Fabric's MSP reads one certificate or
    /// revocation list from each file of its folders and each entry of a channel's
    /// configuration (Go's `pem.Decode`, once), so a CA or CRL after the first is trusted by
    /// no Fabric peer, and must not be here either. The others are named in a warning.
    fn first_only<T>(self, mut items: Vec<T>, what: &str) -> Vec<T> {
        if items.len() > 1 {
            tracing::warn!(
                "{}: only its first {what} is read, as Fabric's MSP reads it; {} more left out",
                self.source,
                items.len() - 1
            );
            items.truncate(1);
        }
        items
    }

    /// The certificate in the first `CERTIFICATE` block (a signcerts file may carry its
    /// chain after it, as some CA clients write).
    pub(crate) fn leaf_certificate(self) -> Result<CertInfo, LoadError> {
        self.certificates()?
            .into_iter()
            .next()
            .ok_or_else(|| self.error("no certificate".into()))
    }

    /// The first PEM block, whatever its label, read as a certificate; later blocks are
    /// not looked at (Go's `pem.Decode` then `x509.ParseCertificate`, as Fabric reads a
    /// certificate named by an MSP's configuration).
    fn first_block_certificate(self) -> Result<CertInfo, LoadError> {
        let blocks = pem_blocks(self.text).map_err(|reason| self.error(reason))?;
        let (_, der) = blocks
            .first()
            .ok_or_else(|| self.error("no PEM block".into()))?;
        self.certificate(der)
    }

    /// One block's DER read as a certificate, a failure named by this text's source.
    fn certificate(self, der: &[u8]) -> Result<CertInfo, LoadError> {
        CertInfo::from_der(der).map_err(|e| LoadError::Certificate {
            source: self.source.to_owned(),
            reason: match e {
                crate::cert::CertError::Malformed(s) | crate::cert::CertError::Key(s) => s,
            },
        })
    }

    /// The text is not the PEM expected, for `reason`.
    fn error(self, reason: String) -> LoadError {
        LoadError::Pem {
            source: self.source.to_owned(),
            reason,
        }
    }
}

/// The rules Go's `x509.Verify` applies to a chain, beyond its links, with the options
/// Fabric's MSP gives it (no key usage named, so serverAuth is asked): every certificate
/// has no extended key usage or one allowing serverAuth, none holds a critical extension
/// Go does not handle, and no CA has more intermediates below it than its
/// pathLenConstraint allows. Fabric refuses a member whose chain breaks one, so a node
/// that accepted it would take in a peer every Fabric peer refuses.
fn go_chain_rules(leaf: &CertInfo, issuers: &[&CertInfo]) -> Result<(), SecurityError> {
    let refuse = |why: String| Err(SecurityError::UntrustedCertificate(why));
    for (i, cert) in core::iter::once(leaf)
        .chain(issuers.iter().copied())
        .enumerate()
    {
        // Named only when refused: this runs for every certificate of every new identity.
        let which = || {
            if i == 0 {
                "the certificate".to_owned()
            } else {
                format!("its CA at depth {i}")
            }
        };
        if !cert.server_auth {
            return refuse(format!(
                "{} has an extended key usage without serverAuth or any (Go's \
                 x509.Verify, which Fabric's MSP uses, refuses it: \"incompatible key usage\")",
                which()
            ));
        }
        if let Some(oid) = &cert.unhandled_critical {
            return refuse(format!(
                "{} has a critical extension Go's x509 does not handle ({oid})",
                which()
            ));
        }
        // Below the CA at depth i lie i - 1 intermediates and the leaf.
        if let Some(n) = cert.max_path_len
            && i > 0
            && i - 1 > usize::from(n)
        {
            return refuse(format!(
                "{} allows {n} intermediate CAs below it (pathLenConstraint); the chain \
                 has {}",
                which(),
                i - 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TrustStore;
    use crate::dev::{Curve, DevCa, Validity};
    use crate::serialize_identity;
    use core::time::Duration;
    use fabric_gossip_core::{Instant, SecurityError};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use rcgen::{BasicConstraints, CustomExtension, ExtendedKeyUsagePurpose, IsCa};

    const MSP: &str = "Org1MSP";

    /// `der`'s CA signature with `s` replaced by `n - s`: what a signer that does not fold
    /// `s` makes half the time (`cryptogen extend`). Both forms verify.
    fn high_s_twin(der: &[u8]) -> Vec<u8> {
        let cert = crate::cert::CertInfo::from_der(der).unwrap();
        let high = crate::keys::tests::twin(&cert.signature);
        crate::cert::with_signature(der, &high).unwrap()
    }

    /// Fabric's `sanitizeCert`: a certificate whose CA signature has a high `s` is what
    /// `cryptogen extend` makes half the time; a Fabric MSP presents it re-encoded with the
    /// low-S form of the same signature, so its PKI-ID is that form's. Both forms are valid
    /// identities; each sanitizes to the low-S one, whether a root or an intermediate CA
    /// issued it, on either curve. (Checked against Fabric's own bytes in
    /// `tests/high_s.rs`.)
    #[test]
    fn a_high_s_certificate_sanitizes_to_its_low_s_form() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let v = Validity::ten_years_from(start());
        let now = start() + Duration::from_secs(3600);
        for curve in [Curve::P256, Curve::P384] {
            let root = DevCa::root("ca.org1", "org1", curve, v, &mut rng).unwrap();
            let ica = root.intermediate("ica.org1", v, &mut rng).unwrap();
            for (issuer, via) in [(&root, "root"), (&ica, "intermediate")] {
                let low = issuer
                    .issue("peer1.org1", crate::dev::Usage::Identity, &[], v, &mut rng)
                    .unwrap()
                    .cert_der;
                let cert = crate::cert::CertInfo::from_der(&low).unwrap();
                let issuer_info = crate::cert::CertInfo::from_der(issuer.cert_der()).unwrap();
                assert!(
                    issuer_info.key.low_s_form(&cert.signature).is_none(),
                    "dev CAs sign low-S"
                );
                let high = high_s_twin(&low);
                assert_ne!(high, low, "{curve:?} {via}");
                assert_eq!(
                    crate::cert::with_signature(&low, &cert.signature).unwrap(),
                    low,
                    "the same signature re-encodes to the same bytes"
                );
                let mut trust = TrustStore::new();
                trust.add_ca_pem(MSP, root.cert_pem().as_bytes()).unwrap();
                // Trusted only where it issued the member: a root above an intermediate
                // issues no members (Fabric's rule).
                if via == "intermediate" {
                    trust
                        .add_intermediate_pem(MSP, ica.cert_pem().as_bytes())
                        .unwrap();
                }
                for form in [&high, &low] {
                    let verdict = trust.validate_identity(&serialize_identity(MSP, form), now);
                    assert_eq!(verdict, Ok(()), "{curve:?} {via}: Go's x509 accepts both");
                }
                assert_eq!(
                    trust.sanitize_certificate(MSP, &high),
                    low,
                    "{curve:?} {via}"
                );
                assert_eq!(
                    trust.sanitize_certificate(MSP, &low),
                    low,
                    "{curve:?} {via}"
                );
                assert_eq!(
                    trust.sanitize_certificate("Org2MSP", &high),
                    high,
                    "no CA: kept"
                );
            }
        }
    }

    /// Fabric sanitizes only with the CA that signed the certificate: a CA merely named as
    /// its issuer (an impostor's root with the trusted root's name) sanitizes nothing, so
    /// a certificate the MSP cannot chain keeps its bytes and its PKI-ID.
    #[test]
    fn a_certificate_signed_by_an_impostor_of_a_trusted_ca_is_not_sanitized() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let v = Validity::ten_years_from(start());
        let root = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let impostor = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let issued = |ca: &DevCa, rng: &mut ChaCha20Rng| {
            ca.issue("peer1.org1", crate::dev::Usage::Identity, &[], v, rng)
                .unwrap()
                .cert_der
        };
        let mut trust = TrustStore::new();
        trust.add_ca_pem(MSP, root.cert_pem().as_bytes()).unwrap();
        let forged = high_s_twin(&issued(&impostor, &mut rng));
        let cert = crate::cert::CertInfo::from_der(&forged).unwrap();
        let root_info = crate::cert::CertInfo::from_der(root.cert_der()).unwrap();
        assert_eq!(
            cert.issuer, root_info.subject,
            "the impostor names the root"
        );
        assert_eq!(trust.sanitize_certificate(MSP, &forged), forged);
        // The same high-S form from the genuine root is sanitized.
        let genuine = high_s_twin(&issued(&root, &mut rng));
        assert_ne!(trust.sanitize_certificate(MSP, &genuine), genuine);
    }

    /// The MSPs whose CA issued a certificate are those with a root or intermediate that
    /// signed it under the name it gives as issuer: a root of one MSP and an intermediate of
    /// another each name their own; an impostor CA with a trusted CA's name names none, as
    /// does a certificate that does not parse; a CA trusted under two MSP IDs names both.
    #[test]
    fn the_msps_that_issued_a_certificate_are_those_whose_ca_signed_it() {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let v = Validity::ten_years_from(start());
        let org1 = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let org2 = DevCa::root("ca.org2", "org2", Curve::P384, v, &mut rng).unwrap();
        let ica2 = org2.intermediate("ica.org2", v, &mut rng).unwrap();
        let impostor = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let issued = |ca: &DevCa, rng: &mut ChaCha20Rng| {
            ca.issue("peer0", crate::dev::Usage::Identity, &[], v, rng)
                .unwrap()
                .cert_der
        };
        let mut trust = TrustStore::new();
        trust.add_ca_pem(MSP, org1.cert_pem().as_bytes()).unwrap();
        trust
            .add_ca_pem("Org2MSP", org2.cert_pem().as_bytes())
            .unwrap();
        trust
            .add_intermediate_pem("Org2MSP", ica2.cert_pem().as_bytes())
            .unwrap();
        assert_eq!(trust.issuing_msps(&issued(&org1, &mut rng)), [MSP]);
        assert_eq!(trust.issuing_msps(&issued(&org2, &mut rng)), ["Org2MSP"]);
        assert_eq!(trust.issuing_msps(&issued(&ica2, &mut rng)), ["Org2MSP"]);
        assert!(trust.issuing_msps(&issued(&impostor, &mut rng)).is_empty());
        assert!(trust.issuing_msps(b"not DER").is_empty());
        trust
            .add_ca_pem("Org1bisMSP", org1.cert_pem().as_bytes())
            .unwrap();
        assert_eq!(
            trust.issuing_msps(&issued(&org1, &mut rng)),
            [MSP, "Org1bisMSP"]
        );
    }

    fn start() -> Instant {
        Instant::from_unix_secs(1_700_000_000)
    }

    /// The verdict on an identity `root` (trusted as Org1MSP's) signed.
    fn verdict(root: &DevCa, leaf_der: &[u8]) -> Result<(), SecurityError> {
        let mut trust = TrustStore::new();
        trust.add_ca_pem(MSP, root.cert_pem().as_bytes()).unwrap();
        let now = start() + Duration::from_secs(3600);
        trust.validate_identity(&serialize_identity(MSP, leaf_der), now)
    }

    fn refused_for(r: Result<(), SecurityError>, words: &str) {
        match r {
            Err(SecurityError::UntrustedCertificate(why)) if why.contains(words) => {}
            other => panic!("want a refusal naming {words:?}, got {other:?}"),
        }
    }

    /// What Go's `x509.Verify` refuses with the options Fabric's MSP gives it, and what it
    /// lets through: an extended key usage without serverAuth (Fabric names no usage, so Go
    /// asks serverAuth of every certificate of the chain), a CA as an identity, a critical
    /// extension Go does not know, a chain longer than a CA's pathLenConstraint.
    #[test]
    fn identities_go_refuses_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let v = Validity::ten_years_from(start());
        let root = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let issue = |rng: &mut ChaCha20Rng, tweak: &dyn Fn(&mut rcgen::CertificateParams)| {
            root.issue_with("peer0.org1", v, rng, tweak).unwrap()
        };
        assert!(verdict(&root, &issue(&mut rng, &|_| {}).cert_der).is_ok());
        for (usages, ok) in [
            (vec![ExtendedKeyUsagePurpose::ClientAuth], false),
            (vec![ExtendedKeyUsagePurpose::CodeSigning], false),
            (
                vec![
                    ExtendedKeyUsagePurpose::ClientAuth,
                    ExtendedKeyUsagePurpose::ServerAuth,
                ],
                true,
            ),
            (vec![ExtendedKeyUsagePurpose::Any], true),
        ] {
            let leaf = issue(&mut rng, &|p| p.extended_key_usages = usages.clone());
            let r = verdict(&root, &leaf.cert_der);
            if ok {
                assert!(r.is_ok(), "{usages:?}: {r:?}");
            } else {
                refused_for(
                    r,
                    "the certificate has an extended key usage without serverAuth",
                );
            }
        }
        let ca = issue(&mut rng, &|p| {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
        });
        refused_for(verdict(&root, &ca.cert_der), "cannot be a member identity");
        let critical = issue(&mut rng, &|p| {
            let mut e = CustomExtension::from_oid_content(&[1, 2, 3, 4, 5], vec![5, 0]);
            e.set_criticality(true);
            p.custom_extensions = vec![e];
        });
        refused_for(verdict(&root, &critical.cert_der), "critical extension");
        // The same extension, not critical, is no reason to refuse.
        let known = issue(&mut rng, &|p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[1, 2, 3, 4, 5],
                vec![5, 0],
            )];
        });
        assert!(verdict(&root, &known.cert_der).is_ok());
    }

    /// Fabric's MSP reads one certificate from each file (`pem.Decode`, once): a second CA
    /// in a `cacerts/` file is trusted by no Fabric peer, so its members are refused here.
    #[test]
    fn only_the_first_ca_of_a_file_is_trusted() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let v = Validity::ten_years_from(start());
        let first = DevCa::root("ca1.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let second = DevCa::root("ca2.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let bundle = format!("{}{}", first.cert_pem(), second.cert_pem());
        let mut trust = TrustStore::new();
        assert_eq!(trust.add_ca_pem(MSP, bundle.as_bytes()).unwrap(), 1);
        assert_eq!(trust.ca_count(MSP), (1, 0));
        let now = start() + Duration::from_secs(3600);
        let judge = |ca: &DevCa, rng: &mut ChaCha20Rng| {
            let leaf = ca.issue_with("peer0.org1", v, rng, |_| {}).unwrap();
            trust.validate_identity(&serialize_identity(MSP, &leaf.cert_der), now)
        };
        assert!(judge(&first, &mut rng).is_ok());
        refused_for(judge(&second, &mut rng), "not issued by any CA");
    }

    #[test]
    fn a_chain_longer_than_a_path_length_constraint_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let v = Validity::ten_years_from(start());
        for (path_len, ok) in [(0, false), (1, true)] {
            let root = DevCa::root_with("ca.org1", "org1", Curve::P256, v, &mut rng, |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
            })
            .unwrap();
            let mid = root.intermediate("ica.org1", v, &mut rng).unwrap();
            let leaf = mid.issue_with("peer0.org1", v, &mut rng, |_| {}).unwrap();
            let mut trust = TrustStore::new();
            trust.add_ca_pem(MSP, root.cert_pem().as_bytes()).unwrap();
            trust
                .add_intermediate_pem(MSP, mid.cert_pem().as_bytes())
                .unwrap();
            let now = start() + Duration::from_secs(3600);
            let r = trust.validate_identity(&serialize_identity(MSP, &leaf.cert_der), now);
            if ok {
                assert!(r.is_ok(), "pathLen {path_len}: {r:?}");
            } else {
                refused_for(r, "its CA at depth 2 allows 0 intermediate CAs");
            }
        }
    }

    /// A pathLenConstraint binds CAs only: a member certificate carrying one (with cA
    /// false, as RFC 5280 forbids but DER allows) is not judged by it, as Go ignores it.
    #[test]
    fn a_member_s_own_path_length_constraint_is_ignored() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let v = Validity::ten_years_from(start());
        let root = DevCa::root("ca.org1", "org1", Curve::P256, v, &mut rng).unwrap();
        let leaf = root
            .issue_with("peer0.org1", v, &mut rng, |p| {
                // basicConstraints: SEQUENCE { pathLenConstraint INTEGER 0 } (cA false).
                p.is_ca = IsCa::NoCa;
                p.custom_extensions = vec![CustomExtension::from_oid_content(
                    &[2, 5, 29, 19],
                    vec![0x30, 0x03, 0x02, 0x01, 0x00],
                )];
            })
            .unwrap();
        assert_eq!(verdict(&root, &leaf.cert_der), Ok(()));
    }

    /// Serial numbers read as `openssl x509 -serial` prints them.
    #[test]
    fn serials_are_shown_without_the_der_sign_octet() {
        assert_eq!(super::hex(&[0x00, 0xc4, 0x23]), "c423");
        assert_eq!(super::hex(&[0x43, 0x26]), "4326");
        assert_eq!(super::hex(&[0x00]), "00");
    }
}
