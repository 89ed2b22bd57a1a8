//! `fabric-gossip keygen`: development CAs, peer identities and TLS certificates laid out
//! like Fabric's `cryptogen` output, and the `node` command line for each peer, so that a
//! multi-organization membership network with real identities and mutual TLS is one
//! command away. For development only: CA keys are written next to the certificates.

use crate::opts::{self, ConfigError};
use clap::{Args, ValueEnum};
use fabric_gossip_msp::dev::{self, Curve, OrgSpec, Validity};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Most peers per organization; more is never a development need and each costs two keys.
const MAX_PEERS: usize = 100;

/// How far above the gossip ports the operations ports start by default: 7051 and 8051,
/// clear of each other for up to a thousand peers.
const OPERATIONS_OFFSET: usize = 1000;

/// Arguments of `fabric-gossip keygen`.
#[derive(Debug, Clone, Args)]
pub(crate) struct KeygenArgs {
    /// Output directory; peerOrganizations/DOMAIN/ is written under it. An existing
    /// organization folder is never overwritten.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// An organization: its MSP ID, domain and number of peers. Repeatable. Default: two
    /// organizations, Org1MSP:org1.example.com:2 and Org2MSP:org2.example.com:2.
    #[arg(long = "org", value_name = "MSPID:DOMAIN:PEERS", value_parser = parse_org)]
    orgs: Vec<OrgSpec>,
    /// Key curve (cryptogen uses P-256).
    #[arg(long, value_enum, default_value_t = CurveArg::P256)]
    curve: CurveArg,
    /// Validity of every certificate, in days from now, 1 to 36,500 (cryptogen: 10 years).
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    days: u32,
    /// First gossip port of the suggested node command lines (one per peer, counting up).
    #[arg(long, default_value_t = 7051, value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,
    /// First port of the peers' operations services (--operations; one per peer, counting
    /// up). Default: --base-port + 1000.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    operations_base_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CurveArg {
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
}

fn parse_org(s: &str) -> Result<OrgSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [msp, domain, peers] = parts.as_slice() else {
        return Err("expected MSPID:DOMAIN:PEERS, e.g. Org1MSP:org1.example.com:2".into());
    };
    if msp.is_empty() || msp.contains(|c: char| c.is_whitespace() || c == '=') {
        return Err(format!(
            "MSP ID {msp:?} must be non-empty, without spaces or '='"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 200 || !domain.split('.').all(label_ok) {
        return Err(format!(
            "domain {domain:?} is not a DNS name (letters, digits, '-' and '.')"
        ));
    }
    let n: usize = peers
        .parse()
        .map_err(|_| format!("PEERS {peers:?} is not a number"))?;
    if n == 0 || n > MAX_PEERS {
        return Err(format!("PEERS must be 1 to {MAX_PEERS}, got {n}"));
    }
    Ok(OrgSpec::new(*msp, *domain, n))
}

fn default_orgs() -> Vec<OrgSpec> {
    vec![
        OrgSpec::new("Org1MSP", "org1.example.com", 2),
        OrgSpec::new("Org2MSP", "org2.example.com", 2),
    ]
}

fn check_unique(orgs: &[OrgSpec]) -> Result<(), ConfigError> {
    for (i, a) in orgs.iter().enumerate() {
        for b in &orgs[..i] {
            if a.msp_id == b.msp_id {
                return Err(ConfigError(format!(
                    "--org: MSP ID {} given twice",
                    a.msp_id
                )));
            }
            if a.domain == b.domain {
                return Err(ConfigError(format!(
                    "--org: domain {} given twice",
                    a.domain
                )));
            }
        }
    }
    Ok(())
}

/// Quotes a path for a shell command line when it needs it.
fn sh(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The first gossip port and the first operations port of `total` peers: each range must
/// fit below 65536 and the two must not overlap, or a printed command would fail to bind
/// only when the operator runs it.
fn port_ranges(
    base: u16,
    operations: Option<u16>,
    total: usize,
) -> Result<(u16, u16), ConfigError> {
    let end = |first: usize| first + total;
    let limit = usize::from(u16::MAX) + 1;
    if end(usize::from(base)) > limit {
        return Err(ConfigError(format!(
            "--base-port {base}: {total} peers do not fit below port 65536"
        )));
    }
    let ops = operations.map_or(usize::from(base) + OPERATIONS_OFFSET, usize::from);
    let why = if end(ops) > limit {
        format!("the operations ports of {total} peers do not fit below port 65536")
    } else if ops < end(usize::from(base)) && usize::from(base) < end(ops) {
        format!(
            "the operations ports {ops} to {} overlap the gossip ports {base} to {}",
            end(ops) - 1,
            end(usize::from(base)) - 1
        )
    } else {
        // Both fit below 65536.
        return Ok((base, u16::try_from(ops).unwrap_or(u16::MAX)));
    };
    Err(ConfigError(match operations {
        Some(p) => format!("--operations-base-port {p}: {why}"),
        None => format!(
            "--base-port {base}: {why} (they start at --base-port + {OPERATIONS_OFFSET}); pass \
             --operations-base-port"
        ),
    }))
}

/// Each peer's `node` command, one flag group a line so that the operator reads what the
/// line does before pasting it: every peer trusts every organization and its TLS CA, and
/// joins one membership network whatever the order they start in (bootstrap and anchor
/// peers are retried), as peers of one channel would: each organization's first peer is
/// its peers' bootstrap peer and the others' anchor peer (keygen writes no channel block to
/// list anchors), and every peer has an external endpoint, without which other
/// organizations never learn of it.
fn node_commands(layout: &dev::Layout, gossip: u16, operations: u16) -> String {
    let tls_cas: Vec<PathBuf> = layout
        .orgs
        .iter()
        .map(|o| {
            o.msp_dir
                .join("tlscacerts")
                .join(format!("tlsca.{}-cert.pem", o.domain))
        })
        .collect();
    let port = |first: u16, i: usize| format!("127.0.0.1:{}", usize::from(first) + i);
    // Each organization's first peer's endpoint, by the index of its organization.
    let mut firsts = Vec::new();
    let mut i = 0;
    for org in &layout.orgs {
        firsts.push(port(gossip, i));
        i += org.peers.len();
    }
    let mut text = String::from(
        "\nStart each peer, in its own terminal, in any order. Every one trusts every\n\
         organization and uses mutual TLS; each organization's peer0 is its other peers'\n\
         --bootstrap and the other organizations' --anchor-peer; each peer's\n\
         --external-endpoint lets the other organizations see it; /metrics and /healthz\n\
         are on its --operations port:\n",
    );
    let mut i = 0;
    for (o, org) in layout.orgs.iter().enumerate() {
        for (n, p) in org.peers.iter().enumerate() {
            let endpoint = port(gossip, i);
            let mut lines = vec![
                format!(
                    "fabric-gossip node --listen {endpoint} --external-endpoint {endpoint} \
                     --operations {}",
                    port(operations, i)
                ),
                format!("--msp-dir {} --msp-id {}", sh(&p.msp_dir), org.msp_id),
            ];
            for other in layout.orgs.iter().filter(|x| x.msp_id != org.msp_id) {
                lines.push(format!("--trust {}={}", other.msp_id, sh(&other.msp_dir)));
            }
            lines.push(format!("--tls-cert {}", sh(&p.tls_cert)));
            lines.push(format!("--tls-key {}", sh(&p.tls_key)));
            for ca in &tls_cas {
                lines.push(format!("--tls-ca {}", sh(ca)));
            }
            let mut member = if n == 0 {
                vec!["--membership".to_owned()]
            } else {
                vec![format!("--bootstrap {}", firsts[o])]
            };
            for (k, other) in layout.orgs.iter().enumerate() {
                if k != o {
                    member.push(format!("--anchor-peer {}={}", other.msp_id, firsts[k]));
                }
            }
            lines.push(member.join(" "));
            let _ = writeln!(
                text,
                "\n# {} ({})\n{}",
                p.host,
                org.msp_id,
                lines.join(" \\\n    ")
            );
            i += 1;
        }
    }
    text
}

/// Runs `fabric-gossip keygen`.
pub(crate) fn run(a: &KeygenArgs) -> ExitCode {
    let curve = match a.curve {
        CurveArg::P256 => Curve::P256,
        CurveArg::P384 => Curve::P384,
    };
    let specs: Vec<OrgSpec> = if a.orgs.is_empty() {
        default_orgs()
    } else {
        a.orgs.clone()
    }
    .into_iter()
    .map(|s| s.with_curve(curve))
    .collect();
    if let Err(e) = check_unique(&specs) {
        return opts::config_failure(&e);
    }
    let total: usize = specs.iter().map(|s| s.peers.len()).sum();
    let (gossip, operations) = match port_ranges(a.base_port, a.operations_base_port, total) {
        Ok(r) => r,
        Err(e) => return opts::config_failure(&e),
    };
    // Valid from an hour ago, so that peers whose clocks lag a little accept the material.
    let now = fabric_gossip_core::Instant::from_system_time(std::time::SystemTime::now());
    let start = now - Duration::from_secs(3600);
    let validity = Validity::starting(
        start,
        Duration::from_secs(u64::from(a.days) * 86_400 + 3600),
    );
    let layout = match dev::generate(&a.out, &specs, validity, &mut dev::OsRng) {
        Ok(l) => l,
        Err(e) => {
            return opts::config_failure(&ConfigError(format!("--out {}: {e}", a.out.display())));
        }
    };
    // Written to a string, then printed once (see `out::WriteError` for a closed stdout).
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Wrote development material (TEST ONLY: CA keys are next to the certificates) under {}:",
        layout.root.display()
    );
    for org in &layout.orgs {
        let _ = writeln!(text, "  {} ({})", org.msp_id, org.domain);
        let _ = writeln!(
            text,
            "    organization MSP (what others trust): {}",
            org.msp_dir.display()
        );
        for p in &org.peers {
            let _ = writeln!(
                text,
                "    peer {}: identity {}, TLS {}",
                p.host,
                p.msp_dir.display(),
                p.tls_dir.display()
            );
        }
    }
    text.push_str(&node_commands(&layout, gossip, operations));
    match crate::out::print("instructions", text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_PEERS, parse_org, port_ranges};

    /// The operations ports start --base-port + 1000 up unless given; each range fits
    /// below 65536, to its last port, and the two never overlap (what the operator pastes
    /// would bind a port twice), each refusal naming the flag to change.
    #[test]
    fn the_operations_ports_fit_below_65536_clear_of_the_gossip_ports() {
        let ranges = |base, ops, n| port_ranges(base, ops, n).map_err(|e| e.0);
        assert_eq!(ranges(7051, None, 4), Ok((7051, 8051)));
        assert_eq!(ranges(7051, Some(9443), 4), Ok((7051, 9443)));
        assert_eq!(ranges(64532, None, 4), Ok((64532, 65532)));
        assert_eq!(
            ranges(64533, None, 4),
            Err(
                "--base-port 64533: the operations ports of 4 peers do not fit below port \
                 65536 (they start at --base-port + 1000); pass --operations-base-port"
                    .into()
            )
        );
        assert_eq!(ranges(65532, Some(7051), 4), Ok((65532, 7051)));
        assert_eq!(
            ranges(65533, Some(7051), 4),
            Err("--base-port 65533: 4 peers do not fit below port 65536".into())
        );
        assert_eq!(ranges(7051, Some(65532), 4), Ok((7051, 65532)));
        assert_eq!(
            ranges(7051, Some(65533), 4),
            Err(
                "--operations-base-port 65533: the operations ports of 4 peers do not fit \
                 below port 65536"
                    .into()
            )
        );
        for overlapping in [7048, 7051, 7054] {
            let e = ranges(7051, Some(overlapping), 4).expect_err("overlapping");
            assert_eq!(
                e,
                format!(
                    "--operations-base-port {overlapping}: the operations ports {overlapping} \
                     to {} overlap the gossip ports 7051 to 7054",
                    overlapping + 3
                )
            );
        }
        assert_eq!(ranges(7051, Some(7047), 4), Ok((7051, 7047)));
        assert_eq!(ranges(7051, Some(7055), 4), Ok((7051, 7055)));
        // More than a thousand peers run into the default operations ports.
        assert_eq!(ranges(1000, None, 1000), Ok((1000, 2000)));
        let e = ranges(1000, None, 1001).expect_err("overlapping");
        assert!(
            e.starts_with("--base-port 1000: the operations ports 2000 to 3000 overlap")
                && e.ends_with("pass --operations-base-port"),
            "{e}"
        );
    }

    /// `--org MSPID:DOMAIN:PEERS`: an MSP ID without spaces or '='; a DNS name of labels of 1
    /// to 63 letters, digits and inner '-', 200 characters at most; 1 to 100 peers.
    #[test]
    fn an_org_is_an_msp_id_a_dns_name_and_one_to_a_hundred_peers() {
        let ok = |s: &str| parse_org(s).map(|o| (o.msp_id, o.domain, o.peers.len()));
        let label = |n: usize| "a".repeat(n);
        let long = format!("{}.{}.{}.{}", label(63), label(63), label(63), label(8));
        assert_eq!(long.len(), 200);
        assert_eq!(
            ok(&format!("O:{long}:1")),
            Ok(("O".into(), long.clone(), 1))
        );
        assert_eq!(
            ok(&format!("O:x-1.{}:{MAX_PEERS}", label(63))).map(|o| o.2),
            Ok(MAX_PEERS)
        );
        for bad in [
            "O:x:0".to_owned(),
            format!("O:x:{}", MAX_PEERS + 1),
            format!("O:{long}a:1"),
            format!("O:{}:1", label(64)),
            "O::1".into(),
            "O:a..b:1".into(),
            "O:-a:1".into(),
            "O:a-:1".into(),
            "O:a_b:1".into(),
            ":x:1".into(),
            "O 1:x:1".into(),
            "O=1:x:1".into(),
            "O:x".into(),
        ] {
            assert!(parse_org(&bad).is_err(), "{bad}");
        }
    }
}
