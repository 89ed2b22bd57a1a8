//! `fabric-gossip ping` and `fabric-gossip handshake`: one-shot checks of a gossip endpoint,
//! ours or a real Fabric peer's. `ping` is Fabric's `Probe` (dial and the `Ping` RPC: is
//! something serving gossip there, and is TLS right?); `handshake` is Fabric's `Handshake`
//! (authenticate the peer on a probing stream: who is it?). Neither registers a
//! connection, so neither disturbs the peer beyond one short stream.

use crate::opts::{self, ConfigError, Identity, IdentityArgs, PkiForm, TlsArgs};
use clap::Args;
use fabric_gossip_core::{HandshakeError, PkiId, RemotePeer, SecurityError};
use fabric_gossip_tonic::{Node, OpError};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Margin on top of the core's own time-outs for the outer bound on each operation; the
/// core always answers first unless something is badly wrong.
const MARGIN: Duration = Duration::from_secs(2);

/// Arguments of `fabric-gossip ping`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PingArgs {
    /// The peer's gossip endpoint (a Fabric peer's peer.gossip.endpoint, usually :7051).
    #[arg(value_name = "ADDR", value_parser = opts::parse_endpoint)]
    addr: String,
    /// Probes to send, one after the other; each dials anew.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    count: u32,
    /// Local address of the probing node (it never needs to be reached).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0", value_parser = opts::parse_listen)]
    listen: SocketAddr,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Arguments of `fabric-gossip handshake`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HandshakeArgs {
    /// The peer's gossip endpoint.
    #[arg(value_name = "ADDR", value_parser = opts::parse_endpoint)]
    addr: String,
    /// Fail unless the peer proves this PKI-ID: the endpoint string under --test-identity,
    /// hex (64 digits) with an MSP identity.
    #[arg(long, value_name = "HEX|STRING")]
    expect_pki_id: Option<String>,
    /// Local address of the node (under --test-identity it is also our identity).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0", value_parser = opts::parse_listen)]
    listen: SocketAddr,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// Loads the options and starts a local node to operate from.
fn setup(
    identity: &IdentityArgs,
    identity_required: bool,
    tls: &TlsArgs,
) -> Result<
    (
        Identity,
        Option<fabric_gossip_tonic::TlsConfig>,
        tokio::runtime::Runtime,
    ),
    ConfigError,
> {
    let id = identity.load(identity_required)?;
    let t = tls.load()?;
    Ok((id, t, opts::runtime()?))
}

async fn local_node(
    listen: SocketAddr,
    identity: Identity,
    tls: Option<fabric_gossip_tonic::TlsConfig>,
    tls_args: &TlsArgs,
) -> Result<Node, ConfigError> {
    let mut b = Node::builder(opts::config())
        .listen(listen)
        .stop_timeout(Duration::from_secs(1));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    opts::start(b, identity, &listen.to_string(), tls_args).await
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn mode(tls: &TlsArgs) -> &'static str {
    if tls.enabled() { "TLS" } else { "plaintext" }
}

/// What a round trip covers, for the output.
fn steps(tls: &TlsArgs, handshake: bool) -> &'static str {
    match (tls.enabled(), handshake) {
        (true, true) => "TCP, TLS, Ping, ConnEstablish both ways",
        (false, true) => "TCP, Ping, ConnEstablish both ways",
        (true, false) => "TCP, TLS, Ping",
        (false, false) => "TCP, Ping",
    }
}

/// Runs `fabric-gossip ping`.
pub(crate) fn run_ping(a: &PingArgs) -> ExitCode {
    let (identity, tls, rt) = match setup(&a.identity, false, &a.tls) {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    rt.block_on(async {
        let node = match local_node(a.listen, identity, tls, &a.tls).await {
            Ok(n) => n,
            Err(e) => return opts::config_failure(&e),
        };
        let cfg = opts::config();
        let bound = cfg.dial_timeout + cfg.conn_timeout + MARGIN;
        let peer = RemotePeer::new(a.addr.clone(), PkiId::default());
        let mut rtts = Vec::new();
        let mut failure = None;
        for i in 1..=a.count {
            let t0 = Instant::now();
            let r = tokio::time::timeout(bound, node.probe(&peer)).await;
            let rtt = t0.elapsed();
            let r = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}", ms(bound))),
            };
            let prefix = if a.count > 1 {
                format!("ping {} ({}) {i}/{}", a.addr, mode(&a.tls), a.count)
            } else {
                format!("ping {} ({})", a.addr, mode(&a.tls))
            };
            match r {
                Ok(()) => {
                    println!(
                        "{prefix}: answered in {} ({})",
                        ms(rtt),
                        steps(&a.tls, false)
                    );
                    rtts.push(rtt);
                }
                Err(e) => {
                    let hint = dial_hint(&e);
                    println!("{prefix}: FAILED after {}: {e}{hint}", ms(rtt));
                    failure = Some(e);
                }
            }
        }
        if a.count > 1 && !rtts.is_empty() {
            let min = rtts.iter().min().copied().unwrap_or_default();
            let max = rtts.iter().max().copied().unwrap_or_default();
            let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
            println!(
                "{} of {} answered; round trip min {} avg {} max {}",
                rtts.len(),
                a.count,
                ms(min),
                ms(avg),
                ms(max)
            );
        }
        node.stop().await;
        match failure {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("error: ping {} failed: {e}", a.addr);
                ExitCode::FAILURE
            }
        }
    })
}

/// Advice for the failures people actually hit against real peers.
fn dial_hint(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("notvalidforname") || e.contains("not valid for name") {
        "\n  hint: the peer's TLS certificate is issued to another name; \
         pass --tls-server-name (e.g. peer0.org1.example.com)"
    } else if e.contains("unknownissuer") || e.contains("unknown issuer") {
        "\n  hint: the peer's TLS certificate does not chain to any --tls-ca; \
         pass its organization's tlscacerts/ file"
    } else if e.contains("connection refused") {
        "\n  hint: nothing listens there (check the address and port)"
    } else if e.contains("tls")
        || e.contains("handshake")
        || e.contains("corrupt")
        || e.contains("connection closed")
    {
        "\n  hint: does the peer use TLS? (add or remove --tls-cert/--tls-key/--tls-ca)"
    } else {
        ""
    }
}

fn handshake_hint(e: &HandshakeError) -> String {
    match e {
        HandshakeError::InvalidIdentity(SecurityError::UnknownMsp(m))
        | HandshakeError::UnclassifiableIdentity(SecurityError::UnknownMsp(m)) => format!(
            "\n  hint: the peer is a member of an MSP this node does not trust; pass --trust {m}=DIR \
             with that organization's msp/ folder"
        ),
        HandshakeError::Dial(d) => dial_hint(&d.to_string()).to_owned(),
        HandshakeError::StreamEnded(_) => "\n  hint: the peer refused our handshake; does it \
             trust our MSP (its channel configuration) and our TLS CA?"
            .to_owned(),
        _ => String::new(),
    }
}

/// Runs `fabric-gossip handshake`.
pub(crate) fn run_handshake(a: &HandshakeArgs) -> ExitCode {
    let (identity, tls, rt) = match setup(&a.identity, true, &a.tls) {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let form = identity.pki_form();
    let expected = match &a.expect_pki_id {
        Some(s) => match form.parse(s, "--expect-pki-id") {
            Ok(p) => p,
            Err(e) => return opts::config_failure(&ConfigError(e)),
        },
        None => PkiId::default(),
    };
    rt.block_on(async {
        let node = match local_node(a.listen, identity, tls, &a.tls).await {
            Ok(n) => n,
            Err(e) => return opts::config_failure(&e),
        };
        let bound = opts::config().handshake_timeout + MARGIN;
        let peer = RemotePeer::new(a.addr.clone(), expected);
        let t0 = Instant::now();
        let r = tokio::time::timeout(bound, node.handshake(&peer)).await;
        let rtt = t0.elapsed();
        node.stop().await;
        let failure = match r {
            Ok(Ok(info)) => {
                println!(
                    "handshake with {} ({}): authenticated in {} ({})",
                    a.addr,
                    mode(&a.tls),
                    ms(rtt),
                    steps(&a.tls, true)
                );
                println!("  PKI-ID:    {}", form.show(&info.id));
                match opts::msp_of(&info.identity) {
                    Some((msp, cert)) if form == PkiForm::Hex => {
                        println!("  MSP ID:    {msp}");
                        println!(
                            "  identity:  {} bytes (msp.SerializedIdentity)",
                            info.identity.len()
                        );
                        println!("  certificate:");
                        print!("{}", String::from_utf8_lossy(&cert));
                        if !cert.ends_with(b"\n") {
                            println!();
                        }
                    }
                    _ => println!(
                        "  identity:  {} ({} bytes)",
                        String::from_utf8_lossy(&info.identity),
                        info.identity.len()
                    ),
                }
                return ExitCode::SUCCESS;
            }
            Ok(Err(OpError::Failed(HandshakeError::PkiIdMismatch { expected, actual }))) => {
                format!(
                    "the peer is {}, not the expected {}",
                    form.show(&actual),
                    form.show(&expected)
                )
            }
            Ok(Err(OpError::Failed(e))) => format!("{e}{}", handshake_hint(&e)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no result within {}", ms(bound)),
        };
        println!(
            "handshake with {} ({}): FAILED after {}: {failure}",
            a.addr,
            mode(&a.tls),
            ms(rtt)
        );
        eprintln!("error: handshake with {} failed", a.addr);
        ExitCode::FAILURE
    })
}
