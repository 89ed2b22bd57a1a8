//! `fabric-gossip keygen`: development CAs, peer identities and TLS certificates laid out
//! like Fabric's `cryptogen` output, and the `node` command line for each peer, so that a
//! multi-organization network with real identities and mutual TLS is one command away.
//! For development only: CA keys are written next to the certificates.

use crate::opts::{self, ConfigError};
use clap::{Args, ValueEnum};
use fabric_gossip_msp::dev::{self, Curve, OrgSpec, Validity};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Most peers per organization; more is never a development need and each costs two keys.
const MAX_PEERS: usize = 100;

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
    /// First port of the suggested node command lines (one per peer, counting up).
    #[arg(long, default_value_t = 7051)]
    base_port: u16,
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
    if usize::from(a.base_port) + total > usize::from(u16::MAX) + 1 {
        return opts::config_failure(&ConfigError(format!(
            "--base-port {}: {total} peers do not fit below port 65536",
            a.base_port
        )));
    }
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
    // Every TLS CA, so that each node accepts TLS connections from every organization.
    let tls_cas: Vec<PathBuf> = layout
        .orgs
        .iter()
        .map(|o| {
            o.msp_dir
                .join("tlscacerts")
                .join(format!("tlsca.{}-cert.pem", o.domain))
        })
        .collect();
    let endpoints: Vec<String> = (0..total)
        .map(|i| format!("127.0.0.1:{}", usize::from(a.base_port) + i))
        .collect();
    text.push_str(
        "\nStart each peer (each in its own terminal); every one trusts every organization,\n\
         uses mutual TLS and connects to the peers started before it:\n",
    );
    let mut i = 0;
    for org in &layout.orgs {
        for p in &org.peers {
            let mut cmd = format!(
                "fabric-gossip node --listen {} --msp-dir {} --msp-id {}",
                endpoints[i],
                sh(&p.msp_dir),
                org.msp_id
            );
            for other in &layout.orgs {
                if other.msp_id != org.msp_id {
                    cmd.push_str(&format!(" --trust {}={}", other.msp_id, sh(&other.msp_dir)));
                }
            }
            cmd.push_str(&format!(
                " --tls-cert {} --tls-key {}",
                sh(&p.tls_cert),
                sh(&p.tls_key)
            ));
            for ca in &tls_cas {
                cmd.push_str(&format!(" --tls-ca {}", sh(ca)));
            }
            for earlier in &endpoints[..i] {
                cmd.push_str(&format!(" --peer {earlier}"));
            }
            let _ = writeln!(text, "\n# {} ({})\n{cmd}", p.host, org.msp_id);
            i += 1;
        }
    }
    match crate::out::print("instructions", text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_PEERS, parse_org};

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
