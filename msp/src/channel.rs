//! A channel's configuration block as the source of trust: the MSPs of every organization
//! of the channel, with their CAs, revocation lists, OU identifiers and NodeOUs, exactly as
//! the channel carries them. A Fabric peer builds its channel MSPs from this block; in a
//! running network, a CRL or a new organization reaches peers as a configuration update,
//! not as a file in an MSP folder, so loading the latest config block (what `peer channel
//! fetch config` writes) gives a node the trust the channel has now.
//!
//! Only the messages and fields this needs are declared, with Fabric's field numbers
//! (`common/common.proto`, `common/configtx.proto`, `msp/msp_config.proto`,
//! `peer/configuration.proto`); protobuf skips the rest.

use crate::error::LoadError;
use crate::trust::TrustStore;
use crate::units::{NodeOus, NodeRole};
use bytes::Bytes;
use prost::Message;
use std::collections::BTreeMap;

#[derive(Clone, PartialEq, Message)]
struct Block {
    #[prost(message, optional, tag = "2")]
    data: Option<BlockData>,
}

#[derive(Clone, PartialEq, Message)]
struct BlockData {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    data: Vec<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct Envelope {
    #[prost(bytes = "bytes", tag = "1")]
    payload: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct Payload {
    #[prost(message, optional, tag = "1")]
    header: Option<Header>,
    #[prost(bytes = "bytes", tag = "2")]
    data: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    channel_header: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct ChannelHeader {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "4")]
    channel_id: String,
}

/// `common.HeaderType.CONFIG`.
const HEADER_TYPE_CONFIG: i32 = 1;

#[derive(Clone, PartialEq, Message)]
struct ConfigEnvelope {
    #[prost(message, optional, tag = "1")]
    config: Option<Config>,
}

#[derive(Clone, PartialEq, Message)]
struct Config {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(message, optional, tag = "2")]
    channel_group: Option<ConfigGroup>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigGroup {
    #[prost(btree_map = "string, message", tag = "2")]
    groups: BTreeMap<String, ConfigGroup>,
    #[prost(btree_map = "string, message", tag = "3")]
    values: BTreeMap<String, ConfigValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ConfigValue {
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct MspConfig {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(bytes = "bytes", tag = "2")]
    config: Bytes,
}

/// `peer.AnchorPeers`, the value of an application organization's `AnchorPeers` key
/// (Fabric's `peer/configuration.proto`: `repeated AnchorPeer anchor_peers = 1`).
#[derive(Clone, PartialEq, Message)]
struct AnchorPeers {
    #[prost(message, repeated, tag = "1")]
    anchor_peers: Vec<AnchorPeer>,
}

/// `peer.AnchorPeer` (`peer/configuration.proto`: `string host = 1; int32 port = 2`).
#[derive(Clone, PartialEq, Message)]
struct AnchorPeer {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(int32, tag = "2")]
    port: i32,
}

/// The configuration value of an application organization naming its anchor peers.
const ANCHOR_PEERS_KEY: &str = "AnchorPeers";

/// `msp.ProviderType.FABRIC`: X.509 MSPs (the other kind, Idemix, identifies clients
/// anonymously and never a peer).
const MSP_TYPE_FABRIC: i32 = 0;

#[derive(Clone, PartialEq, Message)]
struct FabricMspConfig {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    root_certs: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    intermediate_certs: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    revocation_list: Vec<Bytes>,
    #[prost(message, repeated, tag = "7")]
    organizational_unit_identifiers: Vec<FabricOuIdentifier>,
    #[prost(message, optional, tag = "8")]
    crypto_config: Option<FabricCryptoConfig>,
    #[prost(bytes = "bytes", repeated, tag = "9")]
    tls_root_certs: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "10")]
    tls_intermediate_certs: Vec<Bytes>,
    #[prost(message, optional, tag = "11")]
    fabric_node_ous: Option<FabricNodeOus>,
}

#[derive(Clone, PartialEq, Message)]
struct FabricCryptoConfig {
    #[prost(string, tag = "1")]
    signature_hash_family: String,
    #[prost(string, tag = "2")]
    identity_identifier_hash_function: String,
}

#[derive(Clone, PartialEq, Message)]
struct FabricOuIdentifier {
    #[prost(bytes = "bytes", tag = "1")]
    certificate: Bytes,
    #[prost(string, tag = "2")]
    organizational_unit_identifier: String,
}

#[derive(Clone, PartialEq, Message)]
struct FabricNodeOus {
    #[prost(bool, tag = "1")]
    enable: bool,
    #[prost(message, optional, tag = "2")]
    client_ou_identifier: Option<FabricOuIdentifier>,
    #[prost(message, optional, tag = "3")]
    peer_ou_identifier: Option<FabricOuIdentifier>,
    #[prost(message, optional, tag = "4")]
    admin_ou_identifier: Option<FabricOuIdentifier>,
    #[prost(message, optional, tag = "5")]
    orderer_ou_identifier: Option<FabricOuIdentifier>,
}

/// What a channel configuration block gave a trust store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelTrust {
    /// The channel's name.
    pub channel_id: String,
    /// The configuration's sequence number: it grows with every configuration update, so
    /// an operator sees whether the block is the latest.
    pub sequence: u64,
    /// The MSP IDs added, from the channel's application and orderer organizations.
    pub msp_ids: Vec<String>,
    /// Organizations whose MSP cannot identify peers and were left out (Idemix MSPs, which
    /// identify clients only), with why.
    pub skipped: Vec<(String, String)>,
    /// The TLS root and intermediate CA certificates (PEM) of every organization added: what
    /// a Fabric peer of the channel trusts for TLS, for the transport (this store does not
    /// use them).
    pub tls_ca_pems: Vec<Vec<u8>>,
    /// The anchor peers of every application organization added, by MSP ID: each one's
    /// host and port as the configuration writes them (`peer.AnchorPeer`, unchecked: an
    /// empty host or port 0 is kept, for the caller to skip as Fabric does), in the
    /// configuration's order; an organization without any maps to an empty list. A Fabric
    /// peer dials these when it joins the channel and again on every configuration update
    /// (`JoinChan`, `learnAnchorPeers`): they are how the organizations of a channel find
    /// each other, since bootstrap peers are of the peer's own organization only. The
    /// `Orderer` and `Consortiums` groups have none.
    pub anchor_peers: BTreeMap<String, Vec<(String, i32)>>,
}

impl TrustStore {
    /// Trusts the MSP of every organization of a channel, read from its configuration
    /// block (a `common.Block` whose one transaction is a `CONFIG` envelope: a channel's
    /// genesis block, or what `peer channel fetch config` writes): root and intermediate
    /// CAs, revocation lists, OU identifiers and NodeOUs, as Fabric's channel MSP manager
    /// sets them up. Organizations come from the `Application` and `Orderer` groups (and a
    /// system channel's `Consortiums`). The application organizations' anchor peers come
    /// back in [`ChannelTrust::anchor_peers`] (kept in
    /// [`channel_configs`](TrustStore::channel_configs) too), for the caller to dial: this
    /// store does not use them. Refused: a block that is not a configuration block, or an
    /// MSP that hashes with anything but SHA-2 / SHA-256 (see the crate's "What is
    /// checked"), or anchor peers that do not decode.
    pub fn add_channel_config(&mut self, block: &[u8]) -> Result<ChannelTrust, LoadError> {
        let source = "channel configuration block";
        let bad = |reason: String| LoadError::Config {
            source: source.to_owned(),
            reason,
        };
        let decode = |what: &str, e: prost::DecodeError| bad(format!("{what}: {e}"));
        let not_config = |reason: String| LoadError::NotAConfigBlock {
            source: source.to_owned(),
            reason,
        };
        let block =
            Block::decode(block).map_err(|e| not_config(format!("not a common.Block: {e}")))?;
        let first = block
            .data
            .and_then(|d| d.data.into_iter().next())
            .ok_or_else(|| not_config("the block holds no transaction".into()))?;
        let envelope = Envelope::decode(first).map_err(|e| decode("envelope", e))?;
        let payload = Payload::decode(envelope.payload).map_err(|e| decode("payload", e))?;
        let header = payload
            .header
            .ok_or_else(|| bad("the payload has no header".into()))?;
        let channel = ChannelHeader::decode(header.channel_header)
            .map_err(|e| decode("channel header", e))?;
        if channel.r#type != HEADER_TYPE_CONFIG {
            return Err(not_config(format!(
                "header type {}, a configuration is {HEADER_TYPE_CONFIG}; fetch one with \
                 `peer channel fetch config`",
                channel.r#type
            )));
        }
        let config = ConfigEnvelope::decode(payload.data)
            .map_err(|e| decode("config envelope", e))?
            .config
            .ok_or_else(|| bad("the configuration envelope holds no configuration".into()))?;
        let root = config
            .channel_group
            .ok_or_else(|| bad("the configuration has no channel group".into()))?;
        let mut out = ChannelTrust {
            channel_id: channel.channel_id,
            sequence: config.sequence,
            ..ChannelTrust::default()
        };
        // Each organization's group, and whether it is an application organization (the
        // only ones with anchor peers).
        let mut orgs = Vec::new();
        for section in ["Application", "Orderer"] {
            if let Some(g) = root.groups.get(section) {
                orgs.extend(g.groups.iter().map(|o| (o, section == "Application")));
            }
        }
        if let Some(consortiums) = root.groups.get("Consortiums") {
            for consortium in consortiums.groups.values() {
                orgs.extend(consortium.groups.iter().map(|o| (o, false)));
            }
        }
        for ((org, group), application) in orgs {
            let Some(value) = group.values.get("MSP") else {
                continue;
            };
            let msp = MspConfig::decode(value.value.clone())
                .map_err(|e| decode(&format!("{org}'s MSP"), e))?;
            if msp.r#type != MSP_TYPE_FABRIC {
                out.skipped.push((
                    org.clone(),
                    format!(
                        "MSP type {} (Idemix): identifies clients, never peers",
                        msp.r#type
                    ),
                ));
                continue;
            }
            let fabric = FabricMspConfig::decode(msp.config)
                .map_err(|e| decode(&format!("{org}'s MSP configuration"), e))?;
            let id = fabric.name.clone();
            self.add_fabric_msp(&fabric)
                .map_err(|e| bad(format!("organization {org} ({id}): {e}")))?;
            for pem in fabric
                .tls_root_certs
                .iter()
                .chain(&fabric.tls_intermediate_certs)
            {
                if !out.tls_ca_pems.iter().any(|p| p.as_slice() == pem.as_ref()) {
                    out.tls_ca_pems.push(pem.to_vec());
                }
            }
            if application {
                let anchors = match group.values.get(ANCHOR_PEERS_KEY) {
                    Some(v) => {
                        AnchorPeers::decode(v.value.clone())
                            .map_err(|e| decode(&format!("{org}'s anchor peers"), e))?
                            .anchor_peers
                    }
                    None => Vec::new(),
                };
                out.anchor_peers
                    .entry(id.clone())
                    .or_default()
                    .extend(anchors.into_iter().map(|a| (a.host, a.port)));
            }
            if !out.msp_ids.contains(&id) {
                out.msp_ids.push(id);
            }
        }
        if out.msp_ids.is_empty() {
            return Err(bad(format!(
                "channel {} names no X.509 organization",
                out.channel_id
            )));
        }
        self.channels.push(ChannelTrust {
            tls_ca_pems: Vec::new(),
            ..out.clone()
        });
        Ok(out)
    }

    /// One organization's `FabricMSPConfig`, through the same calls as an MSP folder.
    fn add_fabric_msp(&mut self, c: &FabricMspConfig) -> Result<(), LoadError> {
        if c.name.is_empty() {
            return Err(LoadError::Config {
                source: "FabricMSPConfig".into(),
                reason: "no MSP name".into(),
            });
        }
        if let Some(crypto) = &c.crypto_config {
            let family = crypto.signature_hash_family.as_str();
            let hash = crypto.identity_identifier_hash_function.as_str();
            if !matches!(family, "" | "SHA2") || !matches!(hash, "" | "SHA256") {
                return Err(LoadError::Config {
                    source: c.name.clone(),
                    reason: format!(
                        "hash family {family:?} / identity hash {hash:?}: only SHA2 / SHA256 \
                         are supported"
                    ),
                });
            }
        }
        if c.root_certs.is_empty() {
            return Err(LoadError::Config {
                source: c.name.clone(),
                reason: "no root CA".into(),
            });
        }
        for pem in &c.root_certs {
            self.add_ca_pem(&c.name, pem)?;
        }
        for pem in &c.intermediate_certs {
            self.add_intermediate_pem(&c.name, pem)?;
        }
        for pem in &c.revocation_list {
            self.add_crl_pem(&c.name, pem)?;
        }
        for ou in &c.organizational_unit_identifiers {
            self.add_unit_identifier(&c.name, &ou.organizational_unit_identifier, &ou.certificate)?;
        }
        if let Some(n) = c.fabric_node_ous.as_ref().filter(|n| n.enable) {
            let mut roles = NodeOus::new();
            for (role, id) in [
                (NodeRole::Client, &n.client_ou_identifier),
                (NodeRole::Peer, &n.peer_ou_identifier),
                (NodeRole::Admin, &n.admin_ou_identifier),
                (NodeRole::Orderer, &n.orderer_ou_identifier),
            ] {
                if let Some(id) = id {
                    let ca = (!id.certificate.is_empty()).then_some(id.certificate.as_ref());
                    roles = roles.with_role(role, &id.organizational_unit_identifier, ca);
                }
            }
            self.set_node_ous(&c.name, &roles)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `configtxgen`'s `mychannel` genesis block (`tests/fixtures/channel/`), which names no
    /// anchor peers.
    fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/channel/mychannel.block"
        );
        std::fs::read(path).expect("the channel fixture")
    }

    /// The channel group of `block`, handed to `edit`, then the block encoded again (only
    /// the fields declared here are kept: enough for `add_channel_config`).
    fn edit_block(block: &[u8], edit: impl FnOnce(&mut ConfigGroup)) -> Vec<u8> {
        edit_config(block, |c| edit(c.channel_group.as_mut().unwrap()))
    }

    /// [`edit_block`] for the whole configuration (its sequence number too).
    fn edit_config(block: &[u8], edit: impl FnOnce(&mut Config)) -> Vec<u8> {
        let mut block = Block::decode(block).unwrap();
        let data = block.data.as_mut().unwrap();
        let mut envelope = Envelope::decode(data.data[0].clone()).unwrap();
        let mut payload = Payload::decode(envelope.payload.clone()).unwrap();
        let mut config = ConfigEnvelope::decode(payload.data.clone()).unwrap();
        edit(config.config.as_mut().unwrap());
        payload.data = config.encode_to_vec().into();
        envelope.payload = payload.encode_to_vec().into();
        data.data[0] = envelope.encode_to_vec().into();
        block.encode_to_vec()
    }

    /// Sets the `AnchorPeers` value of organization group `org` under `section` (the
    /// fixture's groups are `Org1`, `Org2` and `OrdererOrg`: anchor peers are listed by
    /// the MSP ID inside, not by the group's name).
    fn set_anchors(root: &mut ConfigGroup, section: &str, org: &str, value: Bytes) {
        let group = root.groups.get_mut(section).unwrap();
        let org = group.groups.get_mut(org).expect("the organization's group");
        org.values
            .insert(ANCHOR_PEERS_KEY.into(), ConfigValue { value });
    }

    fn anchors(peers: &[(&str, i32)]) -> Bytes {
        AnchorPeers {
            anchor_peers: peers
                .iter()
                .map(|(host, port)| AnchorPeer {
                    host: (*host).into(),
                    port: *port,
                })
                .collect(),
        }
        .encode_to_vec()
        .into()
    }

    fn owned(peers: &[(&str, i32)]) -> Vec<(String, i32)> {
        peers.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect()
    }

    #[test]
    fn every_application_organization_is_listed_even_without_anchor_peers() {
        let got = TrustStore::new().add_channel_config(&fixture()).unwrap();
        let want: BTreeMap<String, Vec<(String, i32)>> = [
            ("Org1MSP".to_owned(), Vec::new()),
            ("Org2MSP".to_owned(), Vec::new()),
        ]
        .into();
        // OrdererMSP is an orderer organization: no anchor peers.
        assert_eq!(got.anchor_peers, want);
    }

    #[test]
    fn anchor_peers_are_read_per_msp_id_as_written() {
        let org1 = [("peer0.org1.example.com", 7051), ("", 7051), ("h", 0)];
        let org2 = [("peer0.org2.example.com", 9051)];
        let block = edit_block(&fixture(), |root| {
            set_anchors(root, "Application", "Org1", anchors(&org1));
            set_anchors(root, "Application", "Org2", anchors(&org2));
            // An orderer organization's value of that name is not an application's.
            set_anchors(root, "Orderer", "OrdererOrg", anchors(&[("o", 7050)]));
        });
        let mut trust = TrustStore::new();
        let got = trust.add_channel_config(&block).unwrap();
        let want: BTreeMap<String, Vec<(String, i32)>> = [
            ("Org1MSP".to_owned(), owned(&org1)),
            ("Org2MSP".to_owned(), owned(&org2)),
        ]
        .into();
        assert_eq!(got.anchor_peers, want);
        // The MSPs are read as before, and the store keeps the anchors with the channel.
        assert_eq!(got.msp_ids.len(), 3, "{:?}", got.msp_ids);
        assert_eq!(trust.channel_configs()[0].anchor_peers, want);
    }

    /// The `FabricMSPConfig` of application organization `org` in `root`.
    fn org_msp(root: &ConfigGroup, org: &str) -> FabricMspConfig {
        let value = &root.groups["Application"].groups[org].values["MSP"];
        let msp = MspConfig::decode(value.value.clone()).unwrap();
        FabricMspConfig::decode(msp.config).unwrap()
    }

    /// `Org1`'s `FabricMSPConfig` in `root`, handed to `edit`, then encoded again.
    fn edit_org1_msp(root: &mut ConfigGroup, edit: impl FnOnce(&mut FabricMspConfig)) {
        let mut fabric = org_msp(root, "Org1");
        edit(&mut fabric);
        let msp = MspConfig {
            r#type: MSP_TYPE_FABRIC,
            config: fabric.encode_to_vec().into(),
        };
        let org = root.groups.get_mut("Application").unwrap();
        let values = &mut org.groups.get_mut("Org1").unwrap().values;
        values.get_mut("MSP").unwrap().value = msp.encode_to_vec().into();
    }

    /// The configuration's sequence number comes back as the block gives it.
    #[test]
    fn the_sequence_number_is_the_configuration_s() {
        let block = edit_config(&fixture(), |c| c.sequence = 7);
        let mut trust = TrustStore::new();
        assert_eq!(trust.add_channel_config(&block).unwrap().sequence, 7);
        assert_eq!(trust.channel_configs()[0].sequence, 7);
    }

    /// An MSP hashing with anything but SHA-2 / SHA-256 is refused, whichever of the two
    /// it changes.
    #[test]
    fn only_sha2_msps_are_read() {
        for (family, hash) in [("SHA3", "SHA256"), ("SHA2", "SHA3_256")] {
            let block = edit_block(&fixture(), |root| {
                edit_org1_msp(root, |m| {
                    m.crypto_config = Some(FabricCryptoConfig {
                        signature_hash_family: family.into(),
                        identity_identifier_hash_function: hash.into(),
                    });
                });
            });
            let e = TrustStore::new().add_channel_config(&block).unwrap_err();
            assert!(
                e.to_string().contains("only SHA2 / SHA256"),
                "{family} {hash}: {e}"
            );
        }
    }

    /// A NodeOU role's certificate names the CA its members come through: empty, any CA of
    /// the MSP; another MSP's CA, refused as Fabric refuses it.
    #[test]
    fn a_node_ou_role_s_certificate_is_its_ca() {
        let mut org2_ca = Bytes::new();
        edit_block(&fixture(), |root| {
            org2_ca = org_msp(root, "Org2").root_certs[0].clone();
        });
        for (certificate, ok) in [(Bytes::new(), true), (org2_ca, false)] {
            let block = edit_block(&fixture(), |root| {
                edit_org1_msp(root, |m| {
                    let ous = m.fabric_node_ous.as_mut().unwrap();
                    ous.peer_ou_identifier.as_mut().unwrap().certificate = certificate;
                });
            });
            let mut trust = TrustStore::new();
            match trust.add_channel_config(&block) {
                Ok(_) if ok => assert_eq!(trust.node_roles("Org1MSP").len(), 4),
                Err(e) if !ok => {
                    assert!(e.to_string().contains("not a root or intermediate"), "{e}")
                }
                other => panic!("ok {ok}: {other:?}"),
            }
        }
    }

    #[test]
    fn anchor_peers_that_do_not_decode_refuse_the_block() {
        let block = edit_block(&fixture(), |root| {
            // A length-delimited field 1 claiming more bytes than there are.
            set_anchors(
                root,
                "Application",
                "Org2",
                Bytes::from_static(&[0x0a, 0x05]),
            );
        });
        let e = TrustStore::new().add_channel_config(&block).unwrap_err();
        assert!(e.to_string().contains("anchor peers"), "{e}");
    }
}
