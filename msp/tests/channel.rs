//! Trust from a channel's configuration block (`TrustStore::add_channel_config`), checked
//! against the verdicts Fabric's channel MSP manager gave on a block made by `configtxgen`.

use crate::common::fabric::fabric_verdicts;
use fabric_gossip_core::Instant;
use fabric_gossip_msp::{LoadError, NodeRole, TrustStore, serialize_identity_pem};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/channel")
}

fn block() -> Vec<u8> {
    std::fs::read(fixtures().join("mychannel.block")).unwrap()
}

/// 2026-06-01: within every fixture certificate's validity.
fn fixture_time() -> Instant {
    Instant::from_unix_secs(1_780_272_000)
}

/// The block's organizations, CAs, CRL and NodeOUs are all read.
#[test]
fn a_configtxgen_block_gives_every_organization_of_the_channel() {
    let mut trust = TrustStore::new();
    let got = trust.add_channel_config(&block()).unwrap();
    assert_eq!(got.channel_id, "mychannel");
    assert_eq!(got.sequence, 0);
    assert_eq!(got.msp_ids, ["Org1MSP", "Org2MSP", "OrdererMSP"]);
    assert!(got.skipped.is_empty());
    // One TLS root CA per organization, for the transport.
    assert_eq!(got.tls_ca_pems.len(), 3);
    // The store remembers what it was built from, without the TLS CAs.
    let kept = trust.channel_configs();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].channel_id, "mychannel");
    assert_eq!(kept[0].msp_ids, got.msp_ids);
    assert!(kept[0].tls_ca_pems.is_empty());
    assert_eq!(trust.ca_count("Org1MSP"), (1, 0));
    assert_eq!(trust.crl_count("Org1MSP"), (1, 1));
    assert_eq!(trust.crl_count("Org2MSP"), (0, 0));
    for msp in ["Org1MSP", "Org2MSP", "OrdererMSP"] {
        let roles: Vec<_> = trust.node_roles(msp).into_iter().map(|(r, _)| r).collect();
        assert_eq!(roles, NodeRole::ALL, "{msp}");
    }
}

/// Every line of `fabric-verdicts.txt`: the same verdict, for the same reason.
#[test]
fn fabric_s_verdicts_on_a_channel_block() {
    let mut trust = TrustStore::new();
    trust.add_channel_config(&block()).unwrap();
    let verdicts = std::fs::read_to_string(fixtures().join("fabric-verdicts.txt")).unwrap();
    for v in fabric_verdicts(&verdicts) {
        let pem =
            std::fs::read(fixtures().join("members").join(format!("{}.pem", v.member))).unwrap();
        let ours = trust.validate_identity(&serialize_identity_pem(v.msp, &pem), fixture_time());
        v.assert_agrees(&ours);
    }
}

/// What is not a configuration block is refused, saying why (not as a bad MSP
/// configuration: README walk-through finding 21); nothing is added.
#[test]
fn other_blocks_and_garbage_are_refused() {
    let mut trust = TrustStore::new();
    for (bytes, why) in [
        (vec![0xff, 0xff, 0xff], "not a common.Block"),
        (Vec::new(), "no transaction"),
    ] {
        match trust.add_channel_config(&bytes) {
            Err(e @ LoadError::NotAConfigBlock { .. }) => {
                let text = e.to_string();
                assert!(text.contains(why), "{text}");
                assert!(!text.contains("bad MSP configuration"), "{text}");
                assert!(
                    text.starts_with("channel configuration block: not a configuration block ("),
                    "{text}"
                );
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    // The same block with its channel header's type changed from CONFIG (1) to
    // ENDORSER_TRANSACTION (3): the header starts `08 01 10 01` (type 1, version 1).
    let mut b = block();
    let at = b
        .windows(5)
        .position(|w| w == [0x08, 0x01, 0x10, 0x01, 0x1a])
        .expect("the channel header's type field");
    b[at + 1] = 3;
    match trust.add_channel_config(&b) {
        Err(e @ LoadError::NotAConfigBlock { .. }) => {
            assert!(e.to_string().contains("not a configuration block"), "{e}")
        }
        other => panic!("an endorser transaction: {other:?}"),
    }
    assert_eq!(trust.msp_ids().count(), 0);
}
