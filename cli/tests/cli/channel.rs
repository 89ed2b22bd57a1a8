//! `--channel-config`: a channel configuration block made by `configtxgen` as the trust and
//! the TLS CAs, its size cap, and its anchor peers dialled.

use crate::common::*;
use crate::fixtures::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A `--channel-config` file larger than any message a Fabric peer accepts (a wrong path)
/// is refused with status 2, naming it, before it is read; the real block still loads.
#[test]
fn a_channel_config_file_over_the_block_cap_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 100 MiB and a byte, sparse.
    let big = dir.path().join("mychannel.block");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((100 << 20) + 1))
        .expect("sparse file");
    let cert = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../msp/tests/fixtures/channel/peers/peer0.org1.example.com/msp");
    let cert = cert.to_str().expect("utf-8");
    let r = run_expect(
        &[
            "validate",
            "--channel-config",
            big.to_str().expect("utf-8"),
            cert,
        ],
        2,
    );
    assert!(
        r.stderr.contains(&format!(
            "--channel-config {}: larger than 104857600 bytes",
            big.display()
        )),
        "{}",
        r.all()
    );
    let block =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/channel/mychannel.block");
    run_expect(
        &[
            "validate",
            "--channel-config",
            block.to_str().expect("utf-8"),
            "--msp-id",
            "Org1MSP",
            cert,
        ],
        0,
    );
}

/// `--channel-config` with a channel configuration block made by Fabric's `configtxgen`
/// (`msp/tests/fixtures/channel/`): two peers of the channel's organizations accept each
/// other through it alone, the peer its CRL revokes is refused at the handshake, and a node
/// whose own certificate the channel revokes does not start.
#[test]
fn a_channel_configuration_block_is_the_trust() {
    let with_block = ChannelPeer {
        block: true,
        tls: false,
    };
    let mut a = NodeProc::start(&strs(&with_block.args(
        "peer0.org2.example.com",
        "Org2MSP",
        None,
    )));
    let trust = &a.seen[0]["trust"];
    assert_eq!(trust["Org1MSP"]["revoked"], 1, "{}", a.seen[0]);
    let channel = &a.seen[0]["channels"][0];
    assert_eq!(channel["channel"], "mychannel", "{}", a.seen[0]);
    assert_eq!(channel["sequence"], 0, "{}", a.seen[0]);
    assert_eq!(channel["msps"][2], "OrdererMSP", "{}", a.seen[0]);
    assert_eq!(trust["OrdererMSP"]["roots"], 1, "{}", a.seen[0]);
    assert_eq!(
        trust["Org2MSP"]["node_ous"]["peer"], "peer",
        "{}",
        a.seen[0]
    );
    let a_addr = a.addr.clone();
    let b = with_block.org1_peer_connected_to(&mut a);
    // A reload reads the block again and says which configuration it now trusts.
    a.send_line(r#"{"cmd":"reload_trust"}"#);
    let reloaded = a.wait("trust_reloaded", is("trust_reloaded"));
    assert_eq!(
        reloaded["channels"][0]["channel"], "mychannel",
        "{reloaded}"
    );
    assert_eq!(reloaded["refused"], 0, "{reloaded}");

    // Org1's peer1, revoked by the channel's CRL, is refused by A (it trusts only its own
    // folder, which has no CRL, so it starts).
    let own_folder_only = ChannelPeer {
        block: false,
        tls: false,
    };
    let c = NodeProc::start(&strs(&own_folder_only.args(
        "peer1.org1.example.com",
        "Org1MSP",
        Some(&a_addr),
    )));
    a.handshake_refused("revoked");
    // With the channel's trust, it does not start at all.
    let r = run_expect(
        &[
            &["node"][..],
            &strs(&with_block.args("peer1.org1.example.com", "Org1MSP", None)),
        ]
        .concat(),
        2,
    );
    assert!(r.stderr.contains("revoked"), "{}", r.all());
    for n in [c, b, a] {
        n.stop();
    }
}

/// Just enough protobuf to add a value to an organization of a channel configuration block
/// (the CLI has no protobuf types of a block; `fabric_gossip_msp` reads it with its own).
mod pb {
    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                break;
            }
        }
        v
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field `n` holding `payload`.
    pub(super) fn len_field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, n << 3 | 2);
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    /// A varint field `n`.
    pub(super) fn varint_field(n: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, n << 3);
        put_varint(&mut out, v);
        out
    }

    /// A field: its number, its bytes, and its payload if length-delimited.
    type Field<'a> = (u64, &'a [u8], Option<&'a [u8]>);

    /// Each field of `msg`.
    fn fields(msg: &[u8]) -> Vec<Field<'_>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < msg.len() {
            let start = i;
            let key = varint(msg, &mut i);
            let payload = match key & 7 {
                0 => {
                    varint(msg, &mut i);
                    None
                }
                1 => {
                    i += 8;
                    None
                }
                2 => {
                    let len = varint(msg, &mut i) as usize;
                    i += len;
                    Some(&msg[i - len..i])
                }
                5 => {
                    i += 4;
                    None
                }
                w => panic!("wire type {w}"),
            };
            out.push((key >> 3, &msg[start..i], payload));
        }
        out
    }

    /// The payload of the first length-delimited field `n` of `msg`.
    pub(super) fn get(msg: &[u8], n: u64) -> Option<&[u8]> {
        fields(msg)
            .into_iter()
            .find_map(|(k, _, p)| p.filter(|_| k == n))
    }

    /// `msg` with the payload of its first length-delimited field `n` that `pick` accepts
    /// replaced by `f` of it; the other fields as they were.
    pub(super) fn edit(
        msg: &[u8],
        n: u64,
        pick: impl Fn(&[u8]) -> bool,
        f: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let mut f = Some(f);
        let mut out = Vec::new();
        for (k, raw, payload) in fields(msg) {
            match payload {
                Some(p) if k == n && f.is_some() && pick(p) => {
                    out.extend(len_field(n, &(f.take().expect("once"))(p)));
                }
                _ => out.extend_from_slice(raw),
            }
        }
        assert!(f.is_none(), "no field {n} to edit");
        out
    }
}

/// `block` (a channel configuration block) with an `AnchorPeers` value (`peer.AnchorPeers`:
/// `AnchorPeer { host = 1; port = 2 }` at field 1) in the organization group `group` of its
/// `Application` group: what a channel update setting anchor peers leaves in the next
/// configuration block.
fn with_anchor_peers(block: &[u8], group: &str, anchors: &[(&str, u16)]) -> Vec<u8> {
    use pb::{edit, get, len_field, varint_field};
    let peers: Vec<u8> = anchors
        .iter()
        .flat_map(|(host, port)| {
            let peer = [
                len_field(1, host.as_bytes()),
                varint_field(2, u64::from(*port)),
            ]
            .concat();
            len_field(1, &peer)
        })
        .collect();
    // ConfigGroup.values (3): a map entry, key 1, ConfigValue (value = 2) at 2.
    let entry = [
        len_field(1, b"AnchorPeers"),
        len_field(2, &len_field(2, &peers)),
    ]
    .concat();
    let any = |_: &[u8]| true;
    let keyed = |name: &str| {
        let name = name.as_bytes().to_vec();
        move |e: &[u8]| get(e, 1) == Some(name.as_slice())
    };
    // Block.data (2) .data (1) → Envelope.payload (1) → Payload.data (2) →
    // ConfigEnvelope.config (1) → Config.channel_group (2) → groups (2) ["Application"] →
    // groups (2) [group] → values (3).
    edit(block, 2, any, |data| {
        edit(data, 1, any, |envelope| {
            edit(envelope, 1, any, |payload| {
                edit(payload, 2, any, |config_envelope| {
                    edit(config_envelope, 1, any, |config| {
                        edit(config, 2, any, |root| {
                            edit(root, 2, keyed("Application"), |app_entry| {
                                edit(app_entry, 2, any, |app| {
                                    edit(app, 2, keyed(group), |org_entry| {
                                        edit(org_entry, 2, any, |org| {
                                            [org, &len_field(3, &entry)].concat()
                                        })
                                    })
                                })
                            })
                        })
                    })
                })
            })
        })
    })
}

/// Two free loopback ports, found by binding them at once then letting them go.
fn two_free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    (port(&a), port(&b))
}

/// A membership node of the channel fixtures' `host` and `msp`, with a fast heartbeat and
/// debug logs, listening on `listen`, with `extra` arguments: once listening, with its
/// PKI-ID; `Err` (its stderr) if its address was in use.
fn member(
    host: &str,
    msp: &str,
    listen: &str,
    extra: &[String],
) -> Result<(Daemon, String), String> {
    let peer = ChannelPeer {
        block: false,
        tls: false,
    };
    let mut args = peer.args(host, msp, None);
    args[1] = listen.to_owned();
    args.extend(extra.iter().cloned());
    let fast = [
        "--membership",
        "--alive-interval",
        "500ms",
        "--alive-expiration",
        "5s",
    ];
    args.extend(fast.map(str::to_owned));
    args.extend(["--log-spec".to_owned(), "debug".to_owned()]);
    let mut d = Daemon::start(&strs(&args), true, true, None);
    match next_line(&d.lines, &mut d.seen, EVENT) {
        Some(v) if v["event"] == "listening" => {
            let pki = v["pki_id"].as_str().expect("pki_id").to_owned();
            Ok((d, pki))
        }
        first => {
            let _ = d.child.kill();
            let _ = d.child.wait();
            let err = d.stderr();
            assert!(
                err.contains("Address already in use"),
                "{listen}: {first:?}\n{err}"
            );
            Err(err)
        }
    }
}

/// `--anchor-peer` reaches another organization as a channel block's anchor peer does,
/// with no block: Org1's peer0 dials Org2's peer0 as Org2MSP's anchor, and each lists the
/// other alive; a value with an empty MSP ID is refused as usage.
#[test]
fn a_node_joins_another_organization_through_an_anchor_peer_flag() {
    let r = run_expect(&["node", "--anchor-peer", "=127.0.0.1:7051"], 2);
    assert!(
        r.stderr.contains("an empty MSP ID before '='"),
        "{}",
        r.all()
    );
    let mut attempts = 0;
    let (a_ep, b_ep, mut a, a_pki, mut b, b_pki) = loop {
        attempts += 1;
        let (pa, pb) = two_free_ports();
        let (a_ep, b_ep) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        // No block: each trusts the other's MSP by its folder (a peer's holds its CAs).
        let external = |ep: &str, other: &str, host: &str| {
            let msp = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../msp/tests/fixtures/channel/peers")
                .join(host)
                .join("msp");
            let trust = format!("{other}={}", msp.to_str().expect("utf-8"));
            vec![
                "--external-endpoint".to_owned(),
                ep.to_owned(),
                "--trust".to_owned(),
                trust,
            ]
        };
        let org1 = ("Org1MSP", "peer0.org1.example.com");
        let a_extra = external(&a_ep, org1.0, org1.1);
        let started = member("peer0.org2.example.com", "Org2MSP", &a_ep, &a_extra).and_then(|a| {
            let mut extra = external(&b_ep, "Org2MSP", "peer0.org2.example.com");
            extra.extend(["--anchor-peer".to_owned(), format!("Org2MSP={a_ep}")]);
            let b = member("peer0.org1.example.com", "Org1MSP", &b_ep, &extra)?;
            Ok((a, b))
        });
        match started {
            Ok(((a, a_pki), (b, b_pki))) => break (a_ep, b_ep, a, a_pki, b, b_pki),
            Err(err) => assert!(attempts < 5, "{attempts} attempts, the last: {err}"),
        }
    };
    let alive = |pki: String| move |v: &Value| v["event"] == "member_alive" && v["pki_id"] == pki;
    let seen = b.wait("A alive at B", alive(a_pki.clone()));
    assert_eq!(seen["endpoint"], a_ep.as_str(), "{seen}");
    assert_eq!(seen["msp_id"], "Org2MSP", "{seen}");
    let seen = a.wait("B alive at A", alive(b_pki));
    assert_eq!(seen["endpoint"], b_ep.as_str(), "{seen}");
    let log = stop_for_log(&mut b);
    let dialled = format!("dialling anchor peer {a_ep} of Org2MSP (--anchor-peer)");
    assert_eq!(log.matches(&dialled).count(), 1, "{log}");
    a.stop_ok();
}

/// `--anchor-peer` of another organization, given to a node without an external endpoint,
/// is not dialled (Fabric's rule, the layer's): the node says so through `bootstrap_failed`
/// and never logs that it is dialling it, as it did while the log line came before the
/// layer's rule.
#[test]
fn an_anchor_peer_flag_of_another_organization_without_an_external_endpoint_is_not_dialled() {
    let (port, _) = two_free_ports();
    let anchor = format!("127.0.0.1:{port}");
    let extra = ["--anchor-peer".to_owned(), format!("Org2MSP={anchor}")];
    let (mut d, _) = member("peer0.org1.example.com", "Org1MSP", "127.0.0.1:0", &extra)
        .expect("listening on a port of its choice");
    let failed = d.wait("bootstrap_failed", |v| v["event"] == "bootstrap_failed");
    assert_eq!(failed["endpoint"], anchor.as_str(), "{failed}");
    assert_eq!(failed["attempt"], 0, "{failed}");
    assert_eq!(failed["gave_up"], true, "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("no external endpoint")),
        "{failed}"
    );
    let log = stop_for_log(&mut d);
    assert!(!log.contains("dialling anchor peer"), "{log}");
    let said = format!(
        "WARN fabric_gossip_cli: anchor peer {anchor} of Org2MSP (--anchor-peer) not dialled: \
         it is of another organization and this node has no external endpoint"
    );
    assert_eq!(log.matches(&said).count(), 1, "{log}");
}

/// A channel block given without the membership layer leaves the node comm-only, as
/// documented, but says so at the default level with what to pass (a live check against
/// Fabric gave a block alone and expected a peer of the channel: nothing said otherwise).
#[test]
fn a_channel_block_without_membership_says_its_anchor_peers_are_not_dialled() {
    let peer = ChannelPeer {
        block: true,
        tls: false,
    };
    let args = peer.args("peer0.org1.example.com", "Org1MSP", None);
    let mut d = Daemon::start(&strs(&args), true, true, None);
    d.wait("listening", |v| v["event"] == "listening");
    let log = stop_for_log(&mut d);
    let said = "anchor peer(s) not dialled: the membership layer is off, so no peer lists \
                this node; pass --membership";
    assert_eq!(log.matches(said).count(), 1, "{log}");
}

/// `watch` reaches another organization's member through `--anchor-peer` alone, as `node`
/// does (the flag is the two commands' shared code, but a watch has its own start and exit):
/// Org1's watcher, with no bootstrap peer, lists Org2's peer0 alive and says so at exit.
#[test]
fn watch_joins_another_organization_through_an_anchor_peer_flag() {
    let mut attempts = 0;
    let (a_ep, w_ep, mut a, a_pki) = loop {
        attempts += 1;
        let (pa, pw) = two_free_ports();
        let (a_ep, w_ep) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pw}"));
        let extra = [
            "--external-endpoint".to_owned(),
            a_ep.clone(),
            "--trust".to_owned(),
            format!("Org1MSP={}", fixture_msp("peer1.org1.example.com")),
        ];
        match member("peer0.org2.example.com", "Org2MSP", &a_ep, &extra) {
            Ok((a, a_pki)) => break (a_ep, w_ep, a, a_pki),
            Err(err) => assert!(attempts < 5, "{attempts} attempts, the last: {err}"),
        }
    };
    let peer = ChannelPeer {
        block: false,
        tls: false,
    };
    let mut args = vec!["watch".to_owned()];
    args.extend(peer.args("peer1.org1.example.com", "Org1MSP", None));
    args[2] = w_ep.clone();
    args.extend(
        [
            "--external-endpoint",
            &w_ep,
            "--trust",
            &format!("Org2MSP={}", fixture_msp("peer0.org2.example.com")),
            "--anchor-peer",
            &format!("Org2MSP={a_ep}"),
            "--alive-interval",
            "500ms",
            "--alive-expiration",
            "5s",
            "--json",
            "--duration",
            "4s",
            "--interval",
            "500ms",
        ]
        .map(str::to_owned),
    );
    let r = run(&strs(&args), Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "{}", r.all());
    let last = last_json_line(&r.stdout);
    let listed = last["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["pki_id"] == a_pki.as_str())
        .unwrap_or_else(|| panic!("Org2's peer0 not listed: {last}"));
    assert_eq!(listed["alive"], true, "{last}");
    assert_eq!(listed["msp_id"], "Org2MSP", "{last}");
    assert_eq!(listed["endpoint"], a_ep.as_str(), "{last}");
    a.stop_ok();
    // Named as what it was given as, when it fails.
    let gone = run(&strs(&args), Duration::from_secs(30));
    assert_eq!(gone.code, Some(1), "{}", gone.all());
    let said = format!("error: cannot join through anchor peer {a_ep}:");
    assert!(gone.stderr.contains(&said), "{}", gone.all());
}

/// The MSP folder of fixture peer `host`, as `--trust` takes it.
fn fixture_msp(host: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../msp/tests/fixtures/channel/peers")
        .join(host)
        .join("msp")
        .to_str()
        .expect("utf-8")
        .to_owned()
}

/// The anchor peers of a `--channel-config` block are dialled as a Fabric peer joining the
/// channel dials them: Org1's peer0, with no `--bootstrap` and no `--peer`, joins Org2's
/// peer0 because its block lists that peer as Org2's anchor, and each lists the other
/// alive. Its own endpoint, an empty host and port 0 among Org1's anchors are skipped; a
/// reload leaves out the anchor already a member; without an external endpoint, the
/// anchor of another organization is skipped.
#[test]
fn a_node_joins_through_the_anchor_peers_of_its_channel_block() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../msp/tests/fixtures/channel");
    let channel_block = std::fs::read(fixtures.join("mychannel.block")).expect("block");
    let dir = tempfile::tempdir().expect("tempdir");
    let node = |host: &str, msp: &str, listen: &str, external: bool, block: &str| {
        let mut extra = vec!["--channel-config".to_owned(), block.to_owned()];
        if external {
            extra.extend(["--external-endpoint".to_owned(), listen.to_owned()]);
        }
        member(host, msp, listen, &extra)
    };
    // A: Org2's anchor peer; B: Org1's peer0, knowing of A only from the block. The two
    // ports were free when found, but may be taken before the nodes bind them (by another
    // test's node binding port 0: a loaded machine starts processes slowly): then again
    // with two others.
    let mut attempts = 0;
    let (pa, pb, a_ep, b_ep, block_path, mut a, a_pki, mut b, b_pki) = loop {
        attempts += 1;
        let (pa, pb) = two_free_ports();
        let (a_ep, b_ep) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
        let block = with_anchor_peers(&channel_block, "Org2", &[("127.0.0.1", pa)]);
        let block = with_anchor_peers(&block, "Org1", &[("127.0.0.1", pb), ("", 7051), ("h", 0)]);
        let block_path = dir.path().join(format!("anchors{attempts}.block"));
        std::fs::write(&block_path, &block).expect("write block");
        let block_path = block_path.to_str().expect("utf-8").to_owned();
        let started = node(
            "peer0.org2.example.com",
            "Org2MSP",
            &a_ep,
            true,
            &block_path,
        )
        .and_then(|a| {
            let b = node(
                "peer0.org1.example.com",
                "Org1MSP",
                &b_ep,
                true,
                &block_path,
            )?;
            Ok((a, b))
        });
        match started {
            Ok(((a, a_pki), (b, b_pki))) => {
                break (pa, pb, a_ep, b_ep, block_path, a, a_pki, b, b_pki);
            }
            Err(err) => assert!(attempts < 5, "{attempts} attempts, the last: {err}"),
        }
    };
    let alive = |pki: String| move |v: &Value| v["event"] == "member_alive" && v["pki_id"] == pki;
    let seen = b.wait("A alive at B", alive(a_pki.clone()));
    assert_eq!(seen["endpoint"], a_ep.as_str(), "{seen}");
    assert_eq!(seen["msp_id"], "Org2MSP", "{seen}");
    let seen = a.wait("B alive at A", alive(b_pki.clone()));
    assert_eq!(seen["endpoint"], b_ep.as_str(), "{seen}");
    b.send_line(r#"{"cmd":"reload_trust"}"#);
    b.wait("trust_reloaded", is("trust_reloaded"));
    let log = stop_for_log(&mut b);
    let dialled = format!("channel mychannel: dialling anchor peer {a_ep} of Org2MSP");
    assert_eq!(log.matches(&dialled).count(), 1, "{log}");
    for skipped in [
        format!(
            "anchor peer \"127.0.0.1\":{pb} of Org1MSP skipped: it is this node's own endpoint"
        ),
        "anchor peer \"\":7051 of Org1MSP skipped: its host is empty".to_owned(),
        "anchor peer \"h\":0 of Org1MSP skipped: its port is 0".to_owned(),
        format!("anchor peer {a_ep} of Org2MSP skipped: already an alive member"),
    ] {
        assert!(log.contains(&skipped), "{skipped}\n{log}");
    }
    // Org1's peer0 again, without an external endpoint: Org2's anchor is not dialled.
    let (mut c, _) = node(
        "peer0.org1.example.com",
        "Org1MSP",
        "127.0.0.1:0",
        false,
        &block_path,
    )
    .expect("listening on a port of its choice");
    c.send_line(r#"{"cmd":"stop"}"#);
    assert_eq!(c.exit_within(EVENT), Some(0));
    let log = c.stderr();
    assert!(
        log.contains(&format!(
            "anchor peer \"127.0.0.1\":{pa} of Org2MSP skipped: it is of another organization \
             (Org2MSP) and this node has no external endpoint"
        )),
        "{log}"
    );
    assert!(
        !log.contains(&format!("dialling anchor peer {a_ep}")),
        "{log}"
    );
    a.stop_ok();
}

/// With mutual TLS, `--channel-config` also gives the channel's organizations' TLS CAs:
/// two peers of different organizations connect with no `--tls-ca` at all.
#[test]
fn a_channel_configuration_block_gives_the_tls_cas_too() {
    let peer = ChannelPeer {
        block: true,
        tls: true,
    };
    let mut a = NodeProc::start(&strs(&peer.args("peer0.org2.example.com", "Org2MSP", None)));
    assert_eq!(a.seen[0]["tls"], true, "{}", a.seen[0]);
    let b = peer.org1_peer_connected_to(&mut a);
    for n in [b, a] {
        n.stop();
    }
}
