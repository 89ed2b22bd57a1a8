//! Organizational units: which members of an MSP it accepts by the OUs their certificates
//! name. Fabric has two rules, both configured in an MSP folder's `config.yaml`:
//!
//! * **OU identifiers** (`OrganizationalUnitIdentifiers`): when an MSP lists any, a member
//!   must carry one of them, issued through the CA the entry names.
//! * **NodeOUs** (`NodeOUs`, `Enable: true`): a member must carry exactly one of the OUs
//!   that mark a client, a peer, an admin or an orderer, issued through the CA the role
//!   names if it names one. cryptogen and Fabric CA enable them in every MSP they write.
//!
//! "Issued through a CA" compares certification chains, as Fabric does: the SHA-256 of the
//! DER of every CA above the member up to its root (Fabric's certifiers identifier) must
//! equal that of the configured CA and every CA above it.

use crate::error::LoadError;
use crate::files::read_msp_file;
use crate::go_yaml::{self, Node};
use std::fmt;
use std::path::{Path, PathBuf};

/// The four roles Fabric's NodeOUs tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// An application or a tool (`ClientOUIdentifier`).
    Client,
    /// A peer (`PeerOUIdentifier`).
    Peer,
    /// An administrator (`AdminOUIdentifier`).
    Admin,
    /// An ordering node (`OrdererOUIdentifier`).
    Orderer,
}

impl NodeRole {
    /// Every role, in the order Fabric reads them (a later role wins when two name the
    /// same OU).
    pub const ALL: [NodeRole; 4] = [
        NodeRole::Client,
        NodeRole::Peer,
        NodeRole::Admin,
        NodeRole::Orderer,
    ];

    /// The role's name, lower case, as operators write it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Client => "client",
            NodeRole::Peer => "peer",
            NodeRole::Admin => "admin",
            NodeRole::Orderer => "orderer",
        }
    }

    /// The key of `config.yaml`'s `NodeOUs` section that configures the role.
    fn yaml_key(self) -> &'static str {
        match self {
            NodeRole::Client => "ClientOUIdentifier",
            NodeRole::Peer => "PeerOUIdentifier",
            NodeRole::Admin => "AdminOUIdentifier",
            NodeRole::Orderer => "OrdererOUIdentifier",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MSP's NodeOU roles, for [`TrustStore::set_node_ous`](crate::TrustStore::set_node_ous):
/// each role's OU and, optionally, the CA (PEM, a root or intermediate of the MSP) that must
/// have issued its members. With no role, NodeOUs are off, as in Fabric.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOus {
    pub(crate) roles: Vec<(NodeRole, String, Option<Vec<u8>>)>,
}

impl NodeOus {
    /// No role yet: NodeOUs off.
    pub fn new() -> Self {
        NodeOus::default()
    }

    /// Marks members whose certificate carries the OU `unit` as `role`; with
    /// `ca_pem`, only members issued through that CA. Replaces what `role` had. An empty
    /// `unit` leaves the role out, as Fabric leaves it out.
    pub fn with_role(mut self, role: NodeRole, unit: &str, ca_pem: Option<&[u8]>) -> Self {
        self.roles.retain(|(r, _, _)| *r != role);
        if !unit.is_empty() {
            self.roles
                .push((role, unit.to_owned(), ca_pem.map(<[u8]>::to_vec)));
            self.roles.sort_by_key(|(r, _, _)| *r);
        }
        self
    }

    /// The cryptogen and Fabric CA configuration: OUs `client`, `peer`, `admin` and
    /// `orderer`, each issued through `ca_pem` when given.
    pub fn fabric_defaults(ca_pem: Option<&[u8]>) -> Self {
        NodeRole::ALL
            .into_iter()
            .fold(NodeOus::new(), |n, r| n.with_role(r, r.as_str(), ca_pem))
    }

    /// Whether any role is configured (NodeOUs enforced).
    pub fn is_enabled(&self) -> bool {
        !self.roles.is_empty()
    }
}

/// What `config.yaml` configures, with certificate paths resolved against the MSP folder
/// and the certificates read.
#[derive(Debug, Default)]
pub(crate) struct MspConfigFile {
    /// `OrganizationalUnitIdentifiers`: OU and CA certificate (PEM) with its path.
    pub(crate) identifiers: Vec<(String, Vec<u8>, PathBuf)>,
    /// `NodeOUs`, when enabled.
    pub(crate) node_ous: Option<NodeOus>,
}

/// Reads `dir/config.yaml` the way Fabric's MSP config builder does (its values as Go's
/// YAML decodes them, see [`go_yaml`]); `None` when there is none. Differs from Fabric in
/// one place: a NodeOU certificate that cannot be read is an error here, where Fabric logs
/// a warning and then accepts the role from any CA of the MSP.
pub(crate) fn read_config(dir: &Path) -> Result<Option<MspConfigFile>, LoadError> {
    let path = dir.join("config.yaml");
    if !path.exists() {
        return Ok(None);
    }
    let source = path.display().to_string();
    let text = String::from_utf8(read_msp_file(&path)?).map_err(|e| LoadError::Config {
        source: source.clone(),
        reason: format!("not UTF-8 text: {e}"),
    })?;
    let mut read_cert = |file: &str| -> Result<Option<(Vec<u8>, PathBuf)>, LoadError> {
        // Go's filepath.Join: an absolute path is still taken inside the folder.
        let at = dir.join(file.trim_start_matches('/'));
        if !at.is_file() {
            return Ok(None);
        }
        let pem = read_msp_file(&at)?;
        Ok(Some((pem, at)))
    };
    parse_config(&source, &text, &mut read_cert).map(Some)
}

/// Reads a certificate named in `config.yaml` (a path relative to the MSP folder): its PEM
/// and where it was found, `None` when there is no such file.
pub(crate) type CertReader<'a> =
    dyn FnMut(&str) -> Result<Option<(Vec<u8>, PathBuf)>, LoadError> + 'a;

/// The text of a `config.yaml` (named `source` in errors) as Fabric's MSP config builder
/// reads it, the certificates it names read by `read_cert`.
pub(crate) fn parse_config(
    source: &str,
    text: &str,
    read_cert: &mut CertReader<'_>,
) -> Result<MspConfigFile, LoadError> {
    let bad = |reason: String| LoadError::Config {
        source: source.to_owned(),
        reason,
    };
    // A byte-order mark (an editor's) is not part of the first key; Go's YAML skips it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = MspConfigFile::default();
    let root = match go_yaml::parse(text).map_err(|e| bad(format!("not YAML: {e}")))? {
        None => return Ok(out),
        Some(root) if root.is_null() => return Ok(out),
        Some(root @ Node::Map(_)) => root,
        Some(_) => return Err(bad("not a mapping".into())),
    };
    let mut read_cert = |section: &str, file: &str| -> Result<(Vec<u8>, PathBuf), LoadError> {
        match (file.is_empty(), read_cert(file)?) {
            (false, Some(found)) => Ok(found),
            _ => Err(bad(format!("{section}: certificate {file} is not a file"))),
        }
    };
    match root.get("OrganizationalUnitIdentifiers") {
        None => {}
        Some(n) if n.is_null() => {}
        Some(Node::Seq(list)) => {
            for (i, entry) in list.iter().enumerate() {
                let section = format!("OrganizationalUnitIdentifiers[{i}]");
                let (unit, file) = identifier(entry).map_err(|r| bad(format!("{section}: {r}")))?;
                let (pem, at) = read_cert(&section, &file)?;
                out.identifiers.push((unit, pem, at));
            }
        }
        Some(_) => return Err(bad("OrganizationalUnitIdentifiers is not a list".into())),
    }
    match root.get("NodeOUs") {
        None => {}
        Some(n) if n.is_null() => {}
        Some(node @ Node::Map(_)) => {
            let enable = node.get("Enable").map_or(Ok(false), Node::as_bool);
            if enable.map_err(|r| bad(format!("NodeOUs.Enable: {r}")))? {
                let mut ous = NodeOus::new();
                for role in NodeRole::ALL {
                    let section = format!("NodeOUs.{}", role.yaml_key());
                    let Some(entry) = node.get(role.yaml_key()).filter(|e| !e.is_null()) else {
                        continue;
                    };
                    let (unit, file) =
                        identifier(entry).map_err(|r| bad(format!("{section}: {r}")))?;
                    if unit.is_empty() {
                        continue;
                    }
                    // No certificate, or an empty file (Fabric: `len(Certificate) == 0`):
                    // the role is taken from any CA of the MSP.
                    let pem = if file.is_empty() {
                        None
                    } else {
                        Some(read_cert(&section, &file)?.0).filter(|pem| !pem.is_empty())
                    };
                    ous = ous.with_role(role, &unit, pem.as_deref());
                }
                out.node_ous = Some(ous);
            }
        }
        Some(_) => return Err(bad("NodeOUs is not a mapping".into())),
    }
    Ok(out)
}

/// An `{Certificate, OrganizationalUnitIdentifier}` entry: the OU and the certificate's
/// path, each empty when absent or null.
fn identifier(entry: &Node) -> Result<(String, String), String> {
    if !matches!(entry, Node::Map(_)) {
        return Err("not a mapping".into());
    }
    let text = |key: &str| {
        entry
            .get(key)
            .map_or(Ok(String::new()), Node::as_string)
            .map_err(|e| format!("{key}: {e}"))
    };
    Ok((text("OrganizationalUnitIdentifier")?, text("Certificate")?))
}

/// The certifiers identifier of a chain of CAs (the member's issuer first, its root last):
/// SHA-256 over their DER, one after the other.
pub(crate) fn chain_identifier<'a>(cas: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for der in cas {
        h.update(der);
    }
    h.finalize().into()
}

/// An MSP's OU rules, with each configured CA reduced to its certifiers identifier.
#[derive(Clone, Debug, Default)]
pub(crate) struct UnitRules {
    /// OU identifiers: (OU, certifiers identifier), duplicates dropped.
    pub(crate) identifiers: Vec<(String, [u8; 32])>,
    /// NodeOU roles in Fabric's order: role, OU, certifiers identifier if one is required.
    pub(crate) roles: Vec<(NodeRole, String, Option<[u8; 32]>)>,
}

impl UnitRules {
    /// Whether any rule applies (else the chain identifier need not be computed).
    pub(crate) fn is_empty(&self) -> bool {
        self.identifiers.is_empty() && self.roles.is_empty()
    }

    /// Fabric's `validateIdentityOUsV142`: `units` are the member's OUs, `chain_id` the
    /// certifiers identifier of the CAs above it.
    pub(crate) fn check(
        &self,
        msp_id: &str,
        units: &[Vec<u8>],
        chain_id: &[u8; 32],
    ) -> Result<(), String> {
        let listed = || {
            // The certificate's own text, shown bounded (it goes into logs and the status
            // sent back): at most 8 units, each cut by `shown`.
            let shown: Vec<_> = units
                .iter()
                .take(8)
                .map(|u| fabric_gossip_core::shown(&String::from_utf8_lossy(u)))
                .collect();
            let more = match units.len() {
                n if n > 8 => format!(", … ({n} in all)"),
                _ => String::new(),
            };
            format!("[{}{more}]", shown.join(", "))
        };
        if !self.identifiers.is_empty()
            && !units.iter().any(|u| {
                self.identifiers
                    .iter()
                    .any(|(unit, id)| unit.as_bytes() == u.as_slice() && id == chain_id)
            })
        {
            return Err(if units.is_empty() {
                format!(
                    "the certificate names no organizational unit, and {msp_id} accepts only \
                     members of its OU identifiers"
                )
            } else {
                format!(
                    "none of the certificate's organizational units {} is an OU identifier of \
                     {msp_id} issued through the same CAs",
                    listed()
                )
            });
        }
        if self.roles.is_empty() {
            return Ok(());
        }
        let mut roles = Vec::new();
        for unit in units {
            // Fabric keeps the roles in a map by OU: when two roles name the same OU, the
            // later one is the one that counts.
            let Some((role, _, certifiers)) = self
                .roles
                .iter()
                .rev()
                .find(|(_, u, _)| u.as_bytes() == unit.as_slice())
            else {
                continue;
            };
            if certifiers.is_some_and(|c| &c != chain_id) {
                let unit = fabric_gossip_core::shown(&String::from_utf8_lossy(unit));
                return Err(format!(
                    "the organizational unit {unit} ({role} role of {msp_id}) was not issued \
                     through the CA that {msp_id}'s NodeOUs name for it (units {})",
                    listed()
                ));
            }
            roles.push(*role);
            if roles.len() > 1 {
                break;
            }
        }
        match roles.len() {
            1 => Ok(()),
            0 => Err(format!(
                "the certificate's organizational units {} name no role of {msp_id} ({})",
                listed(),
                self.roles
                    .iter()
                    .map(|(r, u, _)| format!("{r}: {u}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "the certificate's organizational units {} name more than one role of {msp_id} \
                 ({} and {}); a member must have exactly one",
                listed(),
                roles[0],
                roles[1]
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MspConfigFile, LoadError> {
        parse_config("config.yaml", text, &mut |_| Ok(None))
    }

    #[test]
    fn node_ous_off_unless_enabled() {
        let cfg = parse("NodeOUs:\n  Enable: false\n  PeerOUIdentifier:\n    OrganizationalUnitIdentifier: peer\n").unwrap();
        assert!(cfg.node_ous.is_none());
        assert!(parse("").unwrap().node_ous.is_none());
        assert!(parse("Other: 1\n").unwrap().node_ous.is_none());
    }

    /// A null document, or a null section, is no section, as Go's YAML decodes it to
    /// the zero value.
    #[test]
    fn null_sections_are_absent() {
        for text in [
            "~\n",
            "null\n",
            "OrganizationalUnitIdentifiers:\nNodeOUs:\n",
            "OrganizationalUnitIdentifiers: ~\nNodeOUs: null\n",
        ] {
            let cfg = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(
                cfg.identifiers.is_empty() && cfg.node_ous.is_none(),
                "{text:?}"
            );
        }
    }

    /// cryptogen's roles: each role's OU is its name.
    #[test]
    fn fabric_defaults_name_each_role_s_unit_after_it() {
        let ous = NodeOus::fabric_defaults(None);
        assert!(ous.is_enabled() && !NodeOus::new().is_enabled());
        let units: Vec<_> = ous.roles.iter().map(|(r, u, _)| (*r, u.as_str())).collect();
        assert_eq!(
            units,
            [
                (NodeRole::Client, "client"),
                (NodeRole::Peer, "peer"),
                (NodeRole::Admin, "admin"),
                (NodeRole::Orderer, "orderer")
            ]
        );
        assert_eq!(NodeRole::Orderer.to_string(), "orderer");
    }

    #[test]
    fn roles_without_certificate_and_empty_units() {
        let cfg = parse(
            "NodeOUs:\n  Enable: yes\n  ClientOUIdentifier:\n    OrganizationalUnitIdentifier: client\n  \
             PeerOUIdentifier:\n    OrganizationalUnitIdentifier: \"\"\n  AdminOUIdentifier:\n    \
             OrganizationalUnitIdentifier: admin\n    Certificate: \"\"\n",
        )
        .unwrap();
        let ous = cfg.node_ous.unwrap();
        assert_eq!(
            ous.roles,
            vec![
                (NodeRole::Client, "client".to_owned(), None),
                (NodeRole::Admin, "admin".to_owned(), None)
            ]
        );
    }

    /// Values as Go's YAML gives them: an OU written `007` stays `007`, a null OU leaves
    /// the role out, a quoted `"yes"` is no boolean, and a key given twice counts once,
    /// its last value.
    #[test]
    fn values_are_read_as_go_reads_them() {
        let cfg = parse(
            "NodeOUs:\n  Enable: true\n  ClientOUIdentifier:\n    OrganizationalUnitIdentifier: 007\n  \
             PeerOUIdentifier:\n    OrganizationalUnitIdentifier: NULL\n  AdminOUIdentifier:\n    \
             OrganizationalUnitIdentifier: a\n  AdminOUIdentifier:\n    OrganizationalUnitIdentifier: b\n",
        )
        .unwrap();
        assert_eq!(
            cfg.node_ous.unwrap().roles,
            vec![
                (NodeRole::Client, "007".to_owned(), None),
                (NodeRole::Admin, "b".to_owned(), None)
            ]
        );
        let e = parse("NodeOUs:\n  Enable: \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("NodeOUs.Enable") && e.contains("quoted"), "{e}");
    }

    #[test]
    fn bad_files_are_refused_with_their_section() {
        for (text, expect) in [
            ("NodeOUs: [1]\n", "NodeOUs is not a mapping"),
            ("NodeOUs:\n  Enable: maybe\n", "NodeOUs.Enable"),
            ("- a\n", "not a mapping"),
            ("OrganizationalUnitIdentifiers: 3\n", "not a list"),
            (
                "OrganizationalUnitIdentifiers:\n  - OrganizationalUnitIdentifier: x\n",
                "OrganizationalUnitIdentifiers[0]: certificate",
            ),
            (
                "NodeOUs:\n  Enable: true\n  PeerOUIdentifier:\n    OrganizationalUnitIdentifier: peer\n    Certificate: cacerts/missing.pem\n",
                "NodeOUs.PeerOUIdentifier: certificate",
            ),
            ("a: [\n", "not YAML"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
    }

    /// An editor's byte-order mark does not hide the first key; a certificate path
    /// written as absolute is still taken inside the folder (Go's `filepath.Join`), and an
    /// empty NodeOU certificate file names no CA.
    #[test]
    fn bom_absolute_paths_and_empty_certificates() {
        let dir = std::env::temp_dir().join(format!("fg-units-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cacerts")).unwrap();
        std::fs::write(dir.join("cacerts/empty.pem"), "").unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            "\u{feff}NodeOUs:\n  Enable: true\n  PeerOUIdentifier:\n    \
             OrganizationalUnitIdentifier: peer\n    Certificate: /cacerts/empty.pem\n",
        )
        .unwrap();
        let cfg = read_config(&dir).unwrap().unwrap();
        assert_eq!(
            cfg.node_ous.unwrap().roles,
            vec![(NodeRole::Peer, "peer".to_owned(), None)]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn rules() -> UnitRules {
        UnitRules {
            identifiers: vec![],
            roles: vec![
                (NodeRole::Client, "client".into(), None),
                (NodeRole::Peer, "peer".into(), Some([1; 32])),
            ],
        }
    }

    #[test]
    fn exactly_one_role() {
        let r = rules();
        let u = |s: &[&str]| s.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert!(r.check("M", &u(&["peer"]), &[1; 32]).is_ok());
        assert!(r.check("M", &u(&["x", "client"]), &[9; 32]).is_ok());
        let e = r.check("M", &u(&["peer"]), &[2; 32]).unwrap_err();
        assert!(e.contains("not issued through"), "{e}");
        let e = r.check("M", &u(&["x"]), &[1; 32]).unwrap_err();
        assert!(e.contains("name no role"), "{e}");
        let e = r.check("M", &u(&["client", "peer"]), &[1; 32]).unwrap_err();
        assert!(e.contains("more than one role"), "{e}");
        // The same role twice is two roles for Fabric.
        let e = r
            .check("M", &u(&["client", "client"]), &[1; 32])
            .unwrap_err();
        assert!(e.contains("more than one role"), "{e}");
        // Fabric stops at the second role: a unit after it is not looked at.
        let e = r
            .check("M", &u(&["client", "client", "peer"]), &[2; 32])
            .unwrap_err();
        assert!(e.contains("more than one role"), "{e}");
    }

    /// A refusal lists at most 8 of the certificate's units, and says how many it has
    /// when there are more.
    #[test]
    fn refusals_list_at_most_eight_units() {
        let r = rules();
        let units = |n: usize| {
            (0..n)
                .map(|i| format!("u{i}").into_bytes())
                .collect::<Vec<_>>()
        };
        let e = r.check("M", &units(8), &[1; 32]).unwrap_err();
        assert!(e.contains("u7]") && !e.contains("in all"), "{e}");
        let e = r.check("M", &units(9), &[1; 32]).unwrap_err();
        assert!(e.contains("u7, … (9 in all)]") && !e.contains("u8"), "{e}");
    }

    #[test]
    fn the_later_role_wins_a_shared_unit() {
        let r = UnitRules {
            identifiers: vec![],
            roles: vec![
                (NodeRole::Client, "member".into(), None),
                (NodeRole::Peer, "member".into(), Some([1; 32])),
            ],
        };
        let u = vec![b"member".to_vec()];
        assert!(r.check("M", &u, &[2; 32]).is_err());
        assert!(r.check("M", &u, &[1; 32]).is_ok());
    }

    #[test]
    fn identifiers_need_a_listed_unit_from_the_same_chain() {
        let r = UnitRules {
            identifiers: vec![("blue".into(), [1; 32])],
            roles: vec![],
        };
        assert!(r.check("M", &[b"blue".to_vec()], &[1; 32]).is_ok());
        assert!(r.check("M", &[b"blue".to_vec()], &[2; 32]).is_err());
        let e = r.check("M", &[], &[1; 32]).unwrap_err();
        assert!(e.contains("no organizational unit"), "{e}");
    }
}
