//! `fabric-gossip ping` and `fabric-gossip handshake`: one-shot checks of a gossip endpoint,
//! ours or a real Fabric peer's. `ping` is Fabric's `Probe` (dial and the `Ping` RPC: is
//! something serving gossip there, and is TLS right?); `handshake` is Fabric's `Handshake`
//! (authenticate the peer on a probing stream: who is it?). Neither registers a
//! connection, so neither disturbs the peer beyond one short stream.

use crate::opts::{self, ConfigError, Identity, IdentityArgs, PkiForm, TlsArgs};
use clap::Args;
use fabric_gossip_core::{HandshakeError, PkiId, RemotePeer, SecurityError};
use fabric_gossip_tonic::{Node, OpError};
use serde_json::{Value, json};
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
    /// Bound on each probe (dial, TLS and Ping), e.g. 500ms, 2s. Default: Fabric's dial
    /// and connection timeouts (3 s + 2 s) and a margin.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    timeout: Option<Duration>,
    /// Pause between probes, e.g. 1s (default: none).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "0s")]
    interval: Duration,
    #[command(flatten)]
    probe: ProbeArgs,
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
    #[command(flatten)]
    probe: ProbeArgs,
}

/// What `ping` and `handshake` share: the local probing node and how results are printed.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProbeArgs {
    /// Print one JSON object with the result instead of text.
    #[arg(long)]
    json: bool,
    /// Local address of the probing node; it never needs to be reached (under
    /// --test-identity it is also our identity).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0", value_parser = opts::parse_listen)]
    listen: SocketAddr,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s).map_err(|e| format!("{e} (e.g. 500ms, 2s)"))
}

fn ms_f(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
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
    let t = tls.load(&identity.channel_tls_cas()?)?;
    Ok((id, t, opts::runtime()?))
}

async fn local_node(
    listen: SocketAddr,
    identity: Identity,
    tls: Option<fabric_gossip_tonic::TlsConfig>,
    tls_args: &TlsArgs,
    config: fabric_gossip_core::Config,
) -> Result<Node, ConfigError> {
    let mut b = Node::builder(config)
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
    let (identity, tls, rt) = match setup(&a.probe.identity, false, &a.probe.tls) {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let mut cfg = opts::config();
    let bound = match a.timeout {
        Some(t) => {
            // The core gives up on each step at the bound too, so a probe that cannot
            // finish in time fails with its reason rather than a bare "no answer".
            cfg.dial_timeout = t;
            cfg.conn_timeout = t;
            t
        }
        None => cfg.dial_timeout + cfg.conn_timeout + MARGIN,
    };
    rt.block_on(async {
        let node = match local_node(a.probe.listen, identity, tls, &a.probe.tls, cfg).await {
            Ok(n) => n,
            Err(e) => return opts::config_failure(&e),
        };
        let peer = RemotePeer::new(a.addr.clone(), PkiId::default());
        let mut rtts = Vec::new();
        let mut failure = None;
        let mut probes = Vec::new();
        for i in 1..=a.count {
            if i > 1 && !a.interval.is_zero() {
                tokio::time::sleep(a.interval).await;
            }
            let t0 = Instant::now();
            let r = tokio::time::timeout(bound, node.probe(&peer)).await;
            let rtt = t0.elapsed();
            let r = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}", ms(bound))),
            };
            let prefix = if a.count > 1 {
                format!("ping {} ({}) {i}/{}", a.addr, mode(&a.probe.tls), a.count)
            } else {
                format!("ping {} ({})", a.addr, mode(&a.probe.tls))
            };
            match r {
                Ok(()) => {
                    if !a.probe.json {
                        println!(
                            "{prefix}: answered in {} ({})",
                            ms(rtt),
                            steps(&a.probe.tls, false)
                        );
                    }
                    probes.push(json!({"ok": true, "rtt_ms": ms_f(rtt)}));
                    rtts.push(rtt);
                }
                Err(e) => {
                    let hint = dial_hint(&e, a.probe.tls.enabled());
                    if !a.probe.json {
                        println!("{prefix}: FAILED after {}: {e}{hint}", ms(rtt));
                    }
                    probes.push(json!({"ok": false, "rtt_ms": ms_f(rtt), "error": e}));
                    failure = Some(e);
                }
            }
        }
        let summary = (!rtts.is_empty()).then(|| {
            let min = rtts.iter().min().copied().unwrap_or_default();
            let max = rtts.iter().max().copied().unwrap_or_default();
            let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
            (min, avg, max)
        });
        if a.probe.json {
            let mut v = json!({
                "command": "ping",
                "addr": a.addr,
                "tls": a.probe.tls.enabled(),
                "ok": failure.is_none(),
                "count": a.count,
                "answered": rtts.len(),
                "probes": probes,
            });
            if let Some((min, avg, max)) = summary {
                v["rtt_ms"] = json!({"min": ms_f(min), "avg": ms_f(avg), "max": ms_f(max)});
            }
            if let Some(e) = &failure {
                v["error"] = json!(e);
                let hint = dial_hint(e, a.probe.tls.enabled())
                    .trim()
                    .trim_start_matches("hint: ");
                if !hint.is_empty() {
                    v["hint"] = json!(hint);
                }
            }
            println!("{v}");
        } else if a.count > 1
            && let Some((min, avg, max)) = summary
        {
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

/// Advice for the failures people actually hit against real peers; `tls`: whether we
/// dialled with TLS.
pub(crate) fn dial_hint(error: &str, tls: bool) -> &'static str {
    let e = error.to_ascii_lowercase();
    // A plaintext HTTP/2 client reads the server's TLS alert or handshake as a frame
    // ("h2 frame with invalid size"), or the server hangs up on its preface.
    let plaintext_meets_tls = !tls
        && (e.contains("frame with invalid size")
            || e.contains("frame_size_error")
            || e.contains("broken pipe")
            || e.contains("connection reset")
            || e.contains("invalid http")
            || e.contains("stream closed")
            // the node's own accept loop closes a connection whose TLS handshake failed
            || e.contains("connection closed"));
    let tls_meets_plaintext = tls
        && (e.contains("corrupt")
            || e.contains("invalidcontenttype")
            || e.contains("wrong version")
            || e.contains("invalid message"));
    if plaintext_meets_tls {
        "\n  hint: the peer seems to serve TLS; pass --tls-cert, --tls-key and --tls-ca \
         (its organization's tlscacerts/ file)"
    } else if tls_meets_plaintext {
        "\n  hint: the peer seems to serve plaintext; leave out the --tls-* flags"
    } else if e.contains("notvalidforname") || e.contains("not valid for name") {
        "\n  hint: the peer's TLS certificate is issued to another name; \
         pass --tls-server-name (e.g. peer0.org1.example.com)"
    } else if e.contains("unknownissuer") || e.contains("unknown issuer") {
        "\n  hint: the peer's TLS certificate does not chain to any --tls-ca; \
         pass its organization's tlscacerts/ file"
    } else if tls
        && (e.contains("alert: unknownca")
            || e.contains("alert: badcertificate")
            || e.contains("alert: certificaterequired"))
    {
        "\n  hint: the peer refused our TLS client certificate; --tls-cert (or \
         --tls-client-cert) must be issued by a TLS CA the peer trusts for clients \
         (its peer.tls.clientRootCAs)"
    } else if tls
        && (e.contains("broken pipe")
            || e.contains("connection closed")
            || e.contains("connection reset"))
    {
        // Under TLS 1.3 a server that refuses our client certificate may just hang up
        // after the client's side of the handshake is over.
        "\n  hint: the peer closed the connection; does it trust the TLS CA of our \
         certificate (its peer.tls.clientRootCAs), and does it serve TLS?"
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

fn handshake_hint(e: &HandshakeError, tls: bool) -> String {
    match e {
        HandshakeError::InvalidIdentity(SecurityError::UnknownMsp(m))
        | HandshakeError::UnclassifiableIdentity(SecurityError::UnknownMsp(m)) => format!(
            "\n  hint: the peer is a member of an MSP this node does not trust; pass --trust {m}=DIR \
             with that organization's msp/ folder"
        ),
        HandshakeError::Dial(d) => dial_hint(&d.to_string(), tls).to_owned(),
        HandshakeError::StreamEnded(_) => "\n  hint: the peer refused our handshake; does it \
             trust our MSP (its channel configuration) and our TLS CA?"
            .to_owned(),
        _ => String::new(),
    }
}

/// Runs `fabric-gossip handshake`.
pub(crate) fn run_handshake(a: &HandshakeArgs) -> ExitCode {
    let (identity, tls, rt) = match setup(&a.probe.identity, true, &a.probe.tls) {
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
        let node =
            match local_node(a.probe.listen, identity, tls, &a.probe.tls, opts::config()).await {
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
                if a.probe.json {
                    let mut v = json!({
                        "command": "handshake",
                        "addr": a.addr,
                        "tls": a.probe.tls.enabled(),
                        "ok": true,
                        "rtt_ms": ms_f(rtt),
                        "pki_id": form.show(&info.id),
                        "identity_bytes": info.identity.len(),
                    });
                    match opts::msp_of(&info.identity) {
                        Some((msp, cert)) if form == PkiForm::Hex => {
                            v["msp_id"] = json!(msp);
                            v["certificate"] = json!(String::from_utf8_lossy(&cert));
                        }
                        _ => v["identity"] = json!(String::from_utf8_lossy(&info.identity)),
                    }
                    println!("{v}");
                    return ExitCode::SUCCESS;
                }
                println!(
                    "handshake with {} ({}): authenticated in {} ({})",
                    a.addr,
                    mode(&a.probe.tls),
                    ms(rtt),
                    steps(&a.probe.tls, true)
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
            Ok(Err(OpError::Failed(e))) => {
                format!("{e}{}", handshake_hint(&e, a.probe.tls.enabled()))
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no result within {}", ms(bound)),
        };
        if a.probe.json {
            let (error, hint) = match failure.split_once("\n  hint: ") {
                Some((e, h)) => (e, Some(h)),
                None => (failure.as_str(), None),
            };
            let mut v: Value = json!({
                "command": "handshake",
                "addr": a.addr,
                "tls": a.probe.tls.enabled(),
                "ok": false,
                "rtt_ms": ms_f(rtt),
                "error": error,
            });
            if let Some(h) = hint {
                v["hint"] = json!(h);
            }
            println!("{v}");
        } else {
            println!(
                "handshake with {} ({}): FAILED after {}: {failure}",
                a.addr,
                mode(&a.probe.tls),
                ms(rtt)
            );
        }
        eprintln!("error: handshake with {} failed", a.addr);
        ExitCode::FAILURE
    })
}
