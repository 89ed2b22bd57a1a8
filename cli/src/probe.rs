//! `fabric-gossip ping` and `fabric-gossip handshake`: one-shot checks of a gossip endpoint,
//! ours or a real Fabric peer's. `ping` is Fabric's `Probe` (dial and the `Ping` RPC: is
//! something serving gossip there, and is TLS right?); `handshake` is Fabric's `Handshake`
//! (authenticate the peer on a probing stream: who is it?). Neither registers a
//! connection, so neither disturbs the peer beyond one short stream.

use crate::opts::{self, ConfigError, Identity, IdentityArgs, PkiForm, TlsArgs};
use crate::out;
use clap::Args;
use fabric_gossip_core::{DialError, HandshakeError, PkiId, RemotePeer, SecurityError};
use fabric_gossip_tonic::{DialDiagnosis, Node, OpError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Margin on top of the core's own time-outs for the outer bound on each operation; the
/// core always answers first unless something is badly wrong.
const MARGIN: Duration = Duration::from_secs(2);

/// Longest look at what answers on a port that a probe could not talk to ([`sniff`]).
pub(crate) const SNIFF_LIMIT: Duration = Duration::from_secs(1);

/// Arguments of `fabric-gossip ping`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PingArgs {
    /// The peer's gossip endpoint (a Fabric peer's peer.gossip.endpoint, usually :7051).
    #[arg(value_name = "ADDR", value_parser = opts::parse_endpoint)]
    addr: String,
    /// Probes to send, one after the other; each dials anew.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    count: u32,
    /// Bound on each step of a probe, the connection (TCP and TLS) and then the Ping, e.g.
    /// 500ms, 2s; more than zero. Default: Fabric's dial and connection timeouts (3 s, 2 s).
    #[arg(long, value_name = "DURATION", value_parser = crate::membership::parse_duration)]
    timeout: Option<Duration>,
    /// Pause between probes, e.g. 1s; 0s: none.
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
    /// Fail unless the peer proves this PKI-ID: hex (64 digits) with an MSP identity; the
    /// peer's endpoint only under --test-identity (where the endpoint is the PKI-ID).
    #[arg(long, value_name = "HEX|ENDPOINT")]
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
    /// Local address of the probing node: it is bound, so it must be free, but never
    /// needs to be reached (under --test-identity it is also our identity). The default
    /// takes any free port.
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
    opts::start(b, identity, &listen.to_string(), tls_args, None).await
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

/// A failed dial, as `ping` and `handshake` print it: the core's time-out names the bound
/// it hit (`dial_timeout`), so that it reads the same in every probe.
fn dial_failure(e: &DialError, limit: Duration) -> String {
    match e {
        DialError::Timeout => format!("dial failed: no connection within {}", ms(limit)),
        e => format!("dial failed: {e}"),
    }
}

/// A failed Ping, as `ping` and `handshake` print it; the core's time-out ("ping timed
/// out", at `conn_timeout`) names the bound it hit.
fn ping_failure(e: &str, limit: Duration) -> String {
    if e == fabric_gossip_core::PING_TIMED_OUT {
        format!("ping failed: no answer within {}", ms(limit))
    } else {
        format!("ping failed: {e}")
    }
}

/// Runs `fabric-gossip ping`: exit status 0 when every probe was answered, 1 when one was
/// not, 2 for bad flags or files, or a stdout that cannot be written ([`out::WriteError`]).
pub(crate) fn run_ping(a: &PingArgs) -> ExitCode {
    let (identity, tls, rt) = match setup(&a.probe.identity, false, &a.probe.tls) {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let mut cfg = opts::config();
    if let Some(t) = a.timeout {
        // The core bounds each step (the connection, then the Ping) and says which one
        // timed out.
        cfg.dial_timeout = t;
        cfg.conn_timeout = t;
    }
    let (dial_limit, ping_limit) = (cfg.dial_timeout, cfg.conn_timeout);
    // Only if the core does not answer, which is a bug: the core's bounds decide, so that
    // a timeout reads the same (and names its step) in every probe.
    let bound = dial_limit + ping_limit + MARGIN;
    let sniff_limit = a.timeout.map_or(SNIFF_LIMIT, |t| t.min(SNIFF_LIMIT));
    let tls_on = a.probe.tls.enabled();
    opts::run_then_leave(rt, async {
        let node = match local_node(a.probe.listen, identity, tls, &a.probe.tls, cfg).await {
            Ok(n) => n,
            Err(e) => return opts::config_failure(&e),
        };
        let peer = RemotePeer::new(a.addr.clone(), PkiId::default());
        let mut rtts = Vec::new();
        let mut failure = None;
        let mut probes = Vec::new();
        // One look at the port per kind of failure, not one per probe.
        let mut hints: HashMap<String, &'static str> = HashMap::new();
        for i in 1..=a.count {
            if i > 1 && !a.interval.is_zero() {
                tokio::time::sleep(a.interval).await;
            }
            let t0 = Instant::now();
            let r = tokio::time::timeout(bound, node.probe(&peer)).await;
            let rtt = t0.elapsed();
            let r = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(OpError::Failed(fabric_gossip_core::ProbeError::Dial(d)))) => {
                    Err(dial_failure(&d, dial_limit))
                }
                Ok(Err(OpError::Failed(fabric_gossip_core::ProbeError::Ping(p)))) => {
                    Err(ping_failure(&p, ping_limit))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {}", ms(bound))),
            };
            let prefix = if a.count > 1 {
                format!("ping {} ({}) {i}/{}", a.addr, mode(&a.probe.tls), a.count)
            } else {
                format!("ping {} ({})", a.addr, mode(&a.probe.tls))
            };
            let line = match r {
                Ok(()) => {
                    probes.push(json!({"ok": true, "rtt_ms": ms_f(rtt)}));
                    rtts.push(rtt);
                    format!(
                        "{prefix}: answered in {} ({})\n",
                        ms(rtt),
                        steps(&a.probe.tls, false)
                    )
                }
                Err(e) => {
                    let hint = match hints.get(&e) {
                        Some(h) => *h,
                        None => {
                            let h = failure_hint(&a.addr, &e, tls_on, sniff_limit).await;
                            hints.insert(e.clone(), h);
                            h
                        }
                    };
                    probes.push(json!({"ok": false, "rtt_ms": ms_f(rtt), "error": e}));
                    let line = format!("{prefix}: FAILED after {}: {e}{hint}\n", ms(rtt));
                    failure = Some((e, hint));
                    line
                }
            };
            if !a.probe.json
                && let Err(e) = out::print("result", line)
            {
                node.stop().await;
                return e.exit();
            }
        }
        node.stop().await;
        let summary = (!rtts.is_empty()).then(|| {
            let min = rtts.iter().min().copied().unwrap_or_default();
            let max = rtts.iter().max().copied().unwrap_or_default();
            let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
            (min, avg, max)
        });
        let text = if a.probe.json {
            let mut v = json!({
                "command": "ping",
                "addr": a.addr,
                "tls": tls_on,
                "ok": failure.is_none(),
                "count": a.count,
                "answered": rtts.len(),
                "probes": probes,
            });
            if let Some((min, avg, max)) = summary {
                v["rtt_ms"] = json!({"min": ms_f(min), "avg": ms_f(avg), "max": ms_f(max)});
            }
            if let Some((e, hint)) = &failure {
                v["error"] = json!(e);
                add_hint(&mut v, hint);
            }
            format!("{v}\n")
        } else if a.count > 1
            && let Some((min, avg, max)) = summary
        {
            format!(
                "{} of {} answered; round trip min {} avg {} max {}\n",
                rtts.len(),
                a.count,
                ms(min),
                ms(avg),
                ms(max)
            )
        } else {
            String::new()
        };
        if let Err(e) = out::print("result", text) {
            return e.exit();
        }
        match failure {
            None => ExitCode::SUCCESS,
            Some((e, _)) => {
                let e = crate::out::escape_controls(&e.to_string()).into_owned();
                eprintln!("error: ping {} failed: {e}", a.addr);
                ExitCode::FAILURE
            }
        }
    })
}

/// `hint` (as [`dial_hint`] gives it, on a line of its own) as `--json`'s `hint` field.
fn add_hint(v: &mut Value, hint: &str) {
    let hint = hint.trim().trim_start_matches("hint: ");
    if !hint.is_empty() {
        v["hint"] = json!(hint);
    }
}

const TLS_HINT: &str = "\n  hint: the peer seems to serve TLS; pass --tls-cert, --tls-key and \
                        --tls-ca (its organization's tlscacerts/ file)";
const PLAINTEXT_HINT: &str =
    "\n  hint: the peer seems to serve plaintext; leave out the --tls-* flags";
const HTTP1_HINT: &str = "\n  hint: the port answers HTTP/1.x, not gRPC: is it the operations \
                          port? Gossip is served on the peer's peer.gossip.endpoint (usually \
                          :7051)";
const NOTHING_LISTENING_HINT: &str = "\n  hint: nothing listens there (check the address and port)";
const NO_GOSSIP_HINT: &str = "\n  hint: the port serves gRPC, but not Fabric's gossip service \
                              (gossip.Gossip): is it an orderer's or another service's port? \
                              Gossip is served on the peer's peer.listenAddress (usually :7051)";
const SILENT_HINT: &str = "\n  hint: something took the connection but did not answer gRPC's \
                           Ping in time: is it the peer's gossip port (peer.listenAddress, \
                           usually :7051), and is the peer running, not stopped or stuck?";
const SLOW_DIAL_HINT: &str = "\n  hint: the connection (TCP, and TLS if used) was not made in \
                              time: is the address reachable from here, is it the peer's \
                              gossip port, and is --timeout long enough?";
const NOT_GRPC_HINT: &str = "\n  hint: the port answers, but neither gRPC nor TLS: is it the \
                             peer's gossip endpoint (peer.gossip.endpoint, usually :7051)?";

/// Advice for the failures people actually hit against real peers, in this tool's flags;
/// `tls`: whether we dialled with TLS. From the error text alone, as the driver's
/// [`DialDiagnosis`] reads it; [`failure_hint`] also looks at the port when the text cannot
/// tell a TLS server from another service.
pub(crate) fn dial_hint(error: &str, tls: bool) -> &'static str {
    if refused_our_msp_id(error) {
        return MSP_ID_HINT;
    }
    // The time-outs as `ping_failure` and `dial_failure` word them.
    if error.starts_with("ping failed: no answer within") {
        return SILENT_HINT;
    }
    if error.starts_with("dial failed: no connection within") {
        return SLOW_DIAL_HINT;
    }
    // A gRPC server without the gossip service (grpc-go: "unknown service gossip.Gossip")
    // or an HTTP/2 server without the path (404, which gRPC reads as Unimplemented).
    if error.starts_with("ping failed: Unimplemented") {
        return NO_GOSSIP_HINT;
    }
    match DialDiagnosis::of(error, tls) {
        Some(DialDiagnosis::PeerServesTls) => TLS_HINT,
        Some(DialDiagnosis::PeerServesPlaintext) => PLAINTEXT_HINT,
        Some(DialDiagnosis::ServerNameMismatch) => {
            "\n  hint: the peer's TLS certificate is issued to another name than the one \
             dialled (the error lists the names it holds); pass --tls-server-name with one of \
             them (e.g. peer0.org1.example.com)"
        }
        Some(DialDiagnosis::UnknownIssuer) => {
            "\n  hint: the peer's TLS certificate does not chain to any --tls-ca; \
             pass its organization's tlscacerts/ file"
        }
        Some(DialDiagnosis::IssuerKeyMismatch) => {
            "\n  hint: the peer's TLS certificate names a --tls-ca as its issuer, but another \
             key signed it: a CA of the same name from other crypto material (cryptogen or \
             keygen run again?); give both sides the same generation's tlscacerts/"
        }
        Some(DialDiagnosis::ClientCertificateRefused) => {
            "\n  hint: the peer refused our TLS client certificate; --tls-cert (or \
             --tls-client-cert) must be issued by a TLS CA the peer trusts for clients \
             (its peer.tls.clientRootCAs)"
        }
        Some(DialDiagnosis::ClosedUnderTls) => {
            "\n  hint: the peer closed the connection; does it trust the TLS CA of our \
             certificate (its peer.tls.clientRootCAs), and does it serve TLS?"
        }
        Some(DialDiagnosis::NothingListening) => NOTHING_LISTENING_HINT,
        Some(DialDiagnosis::TlsModeMismatch) => {
            "\n  hint: does the peer use TLS? (add or remove --tls-cert/--tls-key/--tls-ca)"
        }
        // `DialDiagnosis` is `#[non_exhaustive]`: a cause the driver learns later has no
        // advice in this tool's words yet.
        Some(_) | None => "",
    }
}

/// The hint for a remote's refusal of our certificate as issued by another MSP's CA than
/// the one our `--msp-id` names: our node starts with any MSP ID (as a Fabric peer would),
/// so a wrong `--msp-id` shows only here.
const MSP_ID_HINT: &str = "\n  hint: the peer says a CA of another MSP issued our certificate; check \
     --msp-id (it must name the MSP whose CA issued --msp-dir's signcerts/)";

/// Whether `error` (a handshake error's text) is the remote refusing our certificate for
/// our MSP ID: its CA belongs to another MSP. The same words without "refused by the
/// remote" are our own verdict on the remote's certificate, for which ours is no fix.
fn refused_our_msp_id(error: &str) -> bool {
    error.contains("refused by the remote") && error.contains("not of the MSP it claims")
}

/// The hint `ping` and `handshake` print for a failed dial or Ping of `addr`: [`dial_hint`],
/// except that when it guesses the wrong TLS mode, a look at the port ([`sniff`]) checks
/// the guess: an HTTP/1.x server (an operations port) fails a plaintext HTTP/2 client
/// exactly as a TLS server does, and a TLS client as a plaintext gRPC server does.
pub(crate) async fn failure_hint(
    addr: &str,
    error: &str,
    tls: bool,
    limit: Duration,
) -> &'static str {
    let hint = dial_hint(error, tls);
    if hint != TLS_HINT && hint != PLAINTEXT_HINT {
        return hint;
    }
    let guessed_tls = hint == TLS_HINT;
    match sniff(addr, limit).await {
        Some(Answer::Http1) => HTTP1_HINT,
        Some(Answer::Other) if guessed_tls => NOT_GRPC_HINT,
        // The port speaks the mode we dialled in: the failure lies elsewhere (a peer at its
        // connection limit, say), and the guess would mislead.
        Some(Answer::Http2) if guessed_tls => "",
        Some(Answer::Tls) if !guessed_tls => "",
        // The guess confirmed, a hang-up (a Go TLS server closes on plaintext without a
        // word), or no answer in time: the guess stands.
        _ => hint,
    }
}

/// Why a peer may have given no answer at all before a short wait ended (`watch
/// --duration`), judged by looking at its port, since a dial to a closed port, or to a port
/// of another kind, takes up to its dial timeout (3 s) to fail: nothing listening, an
/// HTTP/1.x port, or a port in the other TLS mode. `""` when the port took the connection
/// and looks like a gossip server of our mode (or cannot be told): its silence is then the
/// peer's own.
pub(crate) async fn silent_port_hint(addr: &str, tls: bool, limit: Duration) -> &'static str {
    let connect = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await;
    if let Ok(Err(e)) = &connect
        && e.kind() == std::io::ErrorKind::ConnectionRefused
    {
        return NOTHING_LISTENING_HINT;
    }
    match sniff(addr, limit).await {
        Some(Answer::Http1) => HTTP1_HINT,
        Some(Answer::Tls) if !tls => TLS_HINT,
        Some(Answer::Http2) if tls => PLAINTEXT_HINT,
        Some(Answer::Other) => NOT_GRPC_HINT,
        _ => "",
    }
}

/// What a port sends back to a plain HTTP/1.1 request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// An HTTP/1.x response of a plain HTTP service.
    Http1,
    /// A TLS record (an alert or a handshake message), or an HTTP/1.x response saying
    /// that the port wants HTTPS (Go's `net/http`, nginx).
    Tls,
    /// HTTP/2 frames without TLS (a plaintext gRPC server's SETTINGS, then GOAWAY).
    Http2,
    /// The connection closed (or was reset) without a byte.
    HungUp,
    /// Anything else.
    Other,
}

/// Asks `addr` for `/` in HTTP/1.1 on a connection of its own and judges the first bytes
/// of the answer; `None` if it cannot connect or nothing comes within `limit`.
async fn sniff(addr: &str, limit: Duration) -> Option<Answer> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let look = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if s.write_all(request.as_bytes()).await.is_err() {
            return Some(Answer::HungUp);
        }
        // Read until the port hangs up, 512 bytes came, or time is up (what came by then
        // is judged): enough for a status line and a short body.
        let mut answer = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let read_all = async {
            while answer.len() < 512 {
                match s.read(&mut chunk[..512 - answer.len()]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => answer.extend_from_slice(&chunk[..k]),
                }
            }
        };
        let _ = tokio::time::timeout(limit, read_all).await;
        Some(judge(&answer))
    };
    tokio::time::timeout(limit * 2, look).await.ok().flatten()
}

/// Judges what a port answered an HTTP/1.1 request with (its first bytes).
fn judge(answer: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(answer).to_ascii_lowercase();
    match answer {
        [] => Answer::HungUp,
        // "Client sent an HTTP request to an HTTPS server", "The plain HTTP request was
        // sent to HTTPS port".
        _ if text.starts_with("http/") && text.contains("https") => Answer::Tls,
        _ if b"HTTP/".starts_with(&answer[..answer.len().min(5)]) => Answer::Http1,
        // A record header: type alert (21) or handshake (22), version 3.x.
        [21 | 22] | [21 | 22, 3, ..] => Answer::Tls,
        // A frame header: 3 bytes of length, then type SETTINGS (4) or GOAWAY (7).
        [_, _, _, 4 | 7, ..] => Answer::Http2,
        _ => Answer::Other,
    }
}

/// The MSP of a peer refused because this node does not trust it: what `--trust` would
/// name.
pub(crate) fn untrusted_msp(e: &HandshakeError) -> Option<&str> {
    match e {
        HandshakeError::InvalidIdentity(SecurityError::UnknownMsp(m))
        | HandshakeError::UnclassifiableIdentity(SecurityError::UnknownMsp(m)) => Some(m),
        _ => None,
    }
}

/// The hint for a failed handshake, and whether it needs [`failure_hint`]'s look at the
/// port (a failed dial or Ping: the same advice as `ping`'s). `watch` gives the same for
/// a bootstrap peer it could not authenticate.
pub(crate) fn handshake_hint(e: &HandshakeError) -> Option<String> {
    if let Some(m) = untrusted_msp(e) {
        return Some(format!(
            "\n  hint: the peer is a member of an MSP this node does not trust; pass --trust {m}=DIR \
             with that organization's msp/ folder (or, if {m} is our own organization, our \
             --msp-id is wrong: it is the peer's CORE_PEER_LOCALMSPID, e.g. {m})"
        ));
    }
    match e {
        HandshakeError::Dial(_) | HandshakeError::Ping(_) => None,
        HandshakeError::IdentityMismatch => Some(
            "\n  hint: the peer's PKI-ID is not the one its identity gives here; with \
             --test-identity, a peer with MSP identities (a Fabric peer) fails so: pass \
             --msp-dir and --msp-id"
                .to_owned(),
        ),
        HandshakeError::StreamEnded(_) => Some(
            "\n  hint: the peer refused our handshake; does it \
             trust our MSP (its channel configuration) and our TLS CA?"
                .to_owned(),
        ),
        e if refused_our_msp_id(&e.to_string()) => Some(MSP_ID_HINT.to_owned()),
        e if refused_our_msp(e) => Some(
            "\n  hint: the peer does not trust our MSP: a Fabric peer accepts the \
             organizations of its channels (one in no channel, only its own); use an identity \
             of its organization (--msp-dir, --msp-id)"
                .to_owned(),
        ),
        _ => Some(String::new()),
    }
}

/// Whether the remote refused our handshake because it could not place our identity in
/// any MSP it trusts: what a Fabric peer answers (`failed classifying identity: …
/// No MSP found able to do that.`) to a peer of an organization none of its channels
/// names, and, in no channel, to any but its own organization's; or what our node
/// answers (`identity refused: unknown MSP: …`) to one of an MSP it was not given.
pub(crate) fn refused_our_msp(e: &HandshakeError) -> bool {
    matches!(e, HandshakeError::RefusedByRemote { status }
        if ["failed classifying identity", "No MSP found", "identity refused: unknown MSP"]
            .iter()
            .any(|s| status.contains(s)))
}

/// Runs `fabric-gossip handshake`: exit status 0 when the peer authenticated (as the
/// expected PKI-ID), 1 when not, 2 for bad flags or files, or a stdout that cannot be
/// written ([`out::WriteError`]).
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
    let tls_on = a.probe.tls.enabled();
    opts::run_then_leave(rt, async {
        let cfg = opts::config();
        let (dial_limit, ping_limit) = (cfg.dial_timeout, cfg.conn_timeout);
        let bound = cfg.handshake_timeout + MARGIN;
        let node = match local_node(a.probe.listen, identity, tls, &a.probe.tls, cfg).await {
            Ok(n) => n,
            Err(e) => return opts::config_failure(&e),
        };
        let peer = RemotePeer::new(a.addr.clone(), expected);
        let t0 = Instant::now();
        let r = tokio::time::timeout(bound, node.handshake(&peer)).await;
        let rtt = t0.elapsed();
        node.stop().await;
        let (error, hint) = match r {
            Ok(Ok(info)) => {
                let text = if a.probe.json {
                    format!("{}\n", authenticated_json(a, form, &info, rtt))
                } else {
                    authenticated_text(a, form, &info, rtt)
                };
                return match out::print("result", text) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => e.exit(),
                };
            }
            Ok(Err(OpError::Failed(HandshakeError::PkiIdMismatch { expected, actual }))) => (
                format!(
                    "the peer is {}, not the expected {}",
                    form.show(&actual),
                    form.show(&expected)
                ),
                String::new(),
            ),
            Ok(Err(OpError::Failed(e))) => {
                // A failed dial or Ping reads, and is advised, as `ping` has it.
                let error = match &e {
                    HandshakeError::Dial(d) => dial_failure(d, dial_limit),
                    HandshakeError::Ping(p) => ping_failure(p, ping_limit),
                    e => e.to_string(),
                };
                let hint = match handshake_hint(&e) {
                    Some(h) => h,
                    None => failure_hint(&a.addr, &error, tls_on, SNIFF_LIMIT)
                        .await
                        .to_owned(),
                };
                (error, hint)
            }
            Ok(Err(e)) => (e.to_string(), String::new()),
            Err(_) => (format!("no result within {}", ms(bound)), String::new()),
        };
        let text = if a.probe.json {
            let mut v: Value = json!({
                "command": "handshake",
                "addr": a.addr,
                "tls": tls_on,
                "ok": false,
                "rtt_ms": ms_f(rtt),
                "error": error,
            });
            add_hint(&mut v, &hint);
            format!("{v}\n")
        } else {
            format!(
                "handshake with {} ({}): FAILED after {}: {error}{hint}\n",
                a.addr,
                mode(&a.probe.tls),
                ms(rtt)
            )
        };
        if let Err(e) = out::print("result", text) {
            return e.exit();
        }
        // As `ping`'s last line: the reason again, without the hint.
        let error = crate::out::escape_controls(&error.to_string()).into_owned();
        eprintln!("error: handshake with {} failed: {error}", a.addr);
        ExitCode::FAILURE
    })
}

/// What `handshake --json` prints for a peer that authenticated: with an MSP identity, the
/// peer's MSP ID and certificate; with a test identity, the peer's identity as text.
fn authenticated_json(
    a: &HandshakeArgs,
    form: PkiForm,
    info: &fabric_gossip_core::ConnectionInfo,
    rtt: Duration,
) -> Value {
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
    v
}

/// What `handshake` prints (without `--json`) for a peer that authenticated.
fn authenticated_text(
    a: &HandshakeArgs,
    form: PkiForm,
    info: &fabric_gossip_core::ConnectionInfo,
    rtt: Duration,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "handshake with {} ({}): authenticated in {} ({})",
        a.addr,
        mode(&a.probe.tls),
        ms(rtt),
        steps(&a.probe.tls, true)
    );
    let _ = writeln!(t, "  PKI-ID:    {}", form.show(&info.id));
    match opts::msp_of(&info.identity) {
        Some((msp, cert)) if form == PkiForm::Hex => {
            let _ = writeln!(t, "  MSP ID:    {msp}");
            let _ = writeln!(
                t,
                "  identity:  {} bytes (msp.SerializedIdentity)",
                info.identity.len()
            );
            t.push_str("  certificate:\n");
            t.push_str(&String::from_utf8_lossy(&cert));
            if !cert.ends_with(b"\n") {
                t.push('\n');
            }
        }
        _ => {
            let _ = writeln!(
                t,
                "  identity:  {} ({} bytes)",
                String::from_utf8_lossy(&info.identity),
                info.identity.len()
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::{
        Answer, HTTP1_HINT, HandshakeArgs, NOT_GRPC_HINT, PLAINTEXT_HINT, TLS_HINT, add_hint,
        authenticated_json, authenticated_text, dial_failure, dial_hint, failure_hint,
        handshake_hint, judge, mode, ms, ms_f, ping_failure, sniff, steps,
    };
    use crate::opts::PkiForm;
    use clap::Parser;
    use fabric_gossip_core::proto::msp::SerializedIdentity;
    use fabric_gossip_core::proto::prost::Message;
    use fabric_gossip_core::{
        ConnectionInfo, DialError, HandshakeError, PING_TIMED_OUT, PkiId, SecurityError,
    };
    use serde_json::json;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        h: HandshakeArgs,
    }

    /// `handshake`'s arguments as given on the command line after `handshake`.
    fn handshake_args(args: &[&str]) -> HandshakeArgs {
        T::parse_from(std::iter::once("handshake").chain(args.iter().copied())).h
    }

    /// Round trips are printed to the hundredth of a millisecond and given in JSON in
    /// milliseconds to the microsecond.
    #[test]
    fn round_trips_read_in_milliseconds() {
        let rtt = Duration::from_nanos(1_234_567);
        assert_eq!(ms(rtt), "1.23 ms");
        assert_eq!(ms(Duration::from_millis(300)), "300.00 ms");
        assert_eq!(ms_f(rtt), 1.235);
        assert_eq!(ms_f(Duration::from_secs(3)), 3000.0);
        assert_eq!(ms_f(Duration::ZERO), 0.0);
    }

    /// The output says whether TLS was on, and which steps a round trip covered.
    #[test]
    fn the_output_names_tls_and_the_steps_of_a_round_trip() {
        let plain = handshake_args(&["127.0.0.1:7051"]).probe.tls;
        let tls = handshake_args(&[
            "127.0.0.1:7051",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .probe
        .tls;
        assert_eq!((mode(&plain), mode(&tls)), ("plaintext", "TLS"));
        assert_eq!(steps(&plain, false), "TCP, Ping");
        assert_eq!(steps(&tls, false), "TCP, TLS, Ping");
        assert_eq!(steps(&plain, true), "TCP, Ping, ConnEstablish both ways");
        assert_eq!(steps(&tls, true), "TCP, TLS, Ping, ConnEstablish both ways");
    }

    /// An operator's trial: a port that takes the connection and never answers, a dial
    /// cut by --timeout and a test identity against an MSP peer each get a hint.
    #[test]
    fn silent_ports_slow_dials_and_a_test_identity_against_msp_get_hints() {
        let ping = ping_failure(PING_TIMED_OUT, Duration::from_secs(2));
        assert!(dial_hint(&ping, false).contains("did not answer gRPC's Ping"));
        let dial = dial_failure(&DialError::Timeout, Duration::from_millis(500));
        assert!(dial_hint(&dial, true).contains("--timeout long enough"));
        let hint = handshake_hint(&HandshakeError::IdentityMismatch).unwrap();
        assert!(hint.contains("--test-identity"), "{hint}");
    }

    /// A time-out names the bound of the step it cut; any other failure keeps the
    /// transport's words.
    #[test]
    fn a_timed_out_step_names_its_bound_and_other_failures_keep_their_words() {
        let limit = Duration::from_millis(300);
        assert_eq!(
            dial_failure(&DialError::Timeout, limit),
            "dial failed: no connection within 300.00 ms"
        );
        assert_eq!(
            dial_failure(&DialError::Failed("connection refused".into()), limit),
            "dial failed: connection refused"
        );
        assert_eq!(
            ping_failure(PING_TIMED_OUT, Duration::from_secs(2)),
            "ping failed: no answer within 2000.00 ms"
        );
        assert_eq!(
            ping_failure("Unavailable: connection closed", limit),
            "ping failed: Unavailable: connection closed"
        );
    }

    /// `--json`'s `hint` is the hint without its line break and `hint: `; no hint, no field.
    #[test]
    fn a_hint_is_the_json_hint_field_without_its_prefix() {
        let mut v = json!({"ok": false});
        add_hint(&mut v, PLAINTEXT_HINT);
        assert_eq!(
            v,
            json!({"ok": false, "hint": "the peer seems to serve plaintext; leave out the --tls-* flags"})
        );
        let mut v = json!({"ok": false});
        add_hint(&mut v, "");
        assert_eq!(v, json!({"ok": false}));
    }

    /// An identity of an MSP we do not trust gets the `--trust` advice, whether the
    /// provider refused or could not classify it; a failed dial or Ping is left to
    /// [`failure_hint`]; a stream the peer ended gets the advice to check its trust in us;
    /// other failures get no hint.
    #[test]
    fn each_kind_of_handshake_failure_gets_its_own_hint() {
        let unknown = || SecurityError::UnknownMsp("Org3MSP".into());
        for e in [
            HandshakeError::InvalidIdentity(unknown()),
            HandshakeError::UnclassifiableIdentity(unknown()),
        ] {
            let hint = handshake_hint(&e).expect("a hint");
            assert!(hint.starts_with("\n  hint: "), "{hint}");
            assert!(hint.contains("pass --trust Org3MSP=DIR"), "{hint}");
            assert!(hint.contains("e.g. Org3MSP)"), "{hint}");
        }
        assert_eq!(
            handshake_hint(&HandshakeError::Dial(DialError::Timeout)),
            None
        );
        assert_eq!(
            handshake_hint(&HandshakeError::Ping("ping timed out".into())),
            None
        );
        let ended = handshake_hint(&HandshakeError::StreamEnded("EOF".into())).expect("a hint");
        assert!(ended.contains("the peer refused our handshake"), "{ended}");
        let bad = HandshakeError::InvalidIdentity(SecurityError::HighS);
        assert_eq!(handshake_hint(&bad).as_deref(), Some(""));
    }

    /// A serialized MSP identity with `cert` as its certificate.
    fn msp_identity(cert: &str) -> fabric_gossip_core::proto::bytes::Bytes {
        SerializedIdentity {
            mspid: "Org1MSP".into(),
            id_bytes: cert.as_bytes().to_vec().into(),
        }
        .encode_to_vec()
        .into()
    }

    fn info(id: &[u8], identity: fabric_gossip_core::proto::bytes::Bytes) -> ConnectionInfo {
        ConnectionInfo {
            id: PkiId::new(id.to_vec()),
            identity,
            endpoint: "127.0.0.1:7051".into(),
            signed_data: Default::default(),
            signature: Default::default(),
        }
    }

    /// With an MSP identity, an authenticated peer is shown by its PKI-ID in hex, its MSP
    /// ID, the size of its identity and its certificate, ending in a line break whether or
    /// not the certificate had one; with a test identity, by the identity's text.
    #[test]
    fn an_authenticated_peer_is_shown_by_its_msp_and_certificate_or_its_text() {
        let a = handshake_args(&["peer0.org1.example.com:7051"]);
        let rtt = Duration::from_micros(1_500);
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let identity = msp_identity(cert);
        let size = identity.len();
        let head = "handshake with peer0.org1.example.com:7051 (plaintext): authenticated in \
                    1.50 ms (TCP, Ping, ConnEstablish both ways)\n";
        let expected = format!(
            "{head}  PKI-ID:    ab01\n  MSP ID:    Org1MSP\n  identity:  {size} bytes \
             (msp.SerializedIdentity)\n  certificate:\n{cert}\n"
        );
        let shown = authenticated_text(&a, PkiForm::Hex, &info(&[0xab, 1], identity), rtt);
        assert_eq!(shown, expected);
        let with_break = format!("{cert}\n");
        let identity = msp_identity(&with_break);
        let size = identity.len();
        let shown = authenticated_text(&a, PkiForm::Hex, &info(&[0xab, 1], identity), rtt);
        assert_eq!(
            shown,
            format!(
                "{head}  PKI-ID:    ab01\n  MSP ID:    Org1MSP\n  identity:  {size} bytes \
                 (msp.SerializedIdentity)\n  certificate:\n{with_break}"
            )
        );

        let test = &b"127.0.0.1:7051"[..];
        let shown = authenticated_text(&a, PkiForm::Text, &info(test, test.into()), rtt);
        assert_eq!(
            shown,
            format!("{head}  PKI-ID:    127.0.0.1:7051\n  identity:  127.0.0.1:7051 (14 bytes)\n")
        );
        // Under a test identity, even an identity that reads as an MSP one is shown as
        // the text it is.
        let identity = msp_identity(cert);
        let shown = authenticated_text(&a, PkiForm::Text, &info(b"p", identity.clone()), rtt);
        assert!(!shown.contains("MSP ID:"), "{shown}");
        assert!(
            shown.contains(&format!(
                "  identity:  {} ({} bytes)\n",
                String::from_utf8_lossy(&identity),
                identity.len()
            )),
            "{shown}"
        );
    }

    /// In JSON too, an authenticated peer is shown by its MSP ID and certificate with an MSP
    /// identity, and by its identity's text with a test identity, even one that reads as an
    /// MSP identity.
    #[test]
    fn an_authenticated_peer_in_json_has_its_msp_and_certificate_or_its_text() {
        let a = handshake_args(&["peer0.org1.example.com:7051"]);
        let rtt = Duration::from_micros(1_500);
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let identity = msp_identity(cert);
        let v = authenticated_json(&a, PkiForm::Hex, &info(&[0xab, 1], identity.clone()), rtt);
        assert_eq!(
            v,
            json!({
                "command": "handshake",
                "addr": "peer0.org1.example.com:7051",
                "tls": false,
                "ok": true,
                "rtt_ms": 1.5,
                "pki_id": "ab01",
                "identity_bytes": identity.len(),
                "msp_id": "Org1MSP",
                "certificate": cert,
            })
        );
        let v = authenticated_json(&a, PkiForm::Text, &info(b"p", identity.clone()), rtt);
        assert_eq!(v["identity"], String::from_utf8_lossy(&identity).as_ref());
        assert!(
            v.get("msp_id").is_none() && v.get("certificate").is_none(),
            "{v}"
        );
        let test = &b"127.0.0.1:7051"[..];
        let v = authenticated_json(&a, PkiForm::Text, &info(test, test.into()), rtt);
        assert_eq!(
            (&v["pki_id"], &v["identity"]),
            (&json!("127.0.0.1:7051"), &json!("127.0.0.1:7051"))
        );
    }

    /// A loopback port that answers the first bytes of each connection (a request ending
    /// in a blank line) with `reply`, then closes its side (`close`) or holds the
    /// connection until the client closes it; an empty `reply` with `close` hangs up at
    /// once. The address, `HOST:PORT`.
    async fn port_answering(reply: &'static [u8], close: bool) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    if s.write_all(reply).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = s.shutdown().await;
                    }
                    // Until the client closes: a close with unread bytes would reset the
                    // connection and lose the reply.
                    while let Ok(k) = s.read(&mut buf).await {
                        if k == 0 {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Bound on a look at a port that answers and closes: never reached.
    const LOOK: Duration = Duration::from_secs(5);

    /// The dial errors from which the hint guesses each TLS mode.
    const PLAINTEXT_MET_TLS: &str = "ping failed: Unavailable: transport error: connection closed";
    const TLS_MET_PLAINTEXT: &str = "dial failed: received corrupt message of type \
                                     InvalidContentType";

    /// The hint for a plaintext dial that met what looked like TLS, after a look at `addr`.
    async fn guess_tls(addr: &str) -> &'static str {
        failure_hint(addr, PLAINTEXT_MET_TLS, false, LOOK).await
    }

    /// The hint for a TLS dial that met what looked like plaintext, after a look at `addr`.
    async fn guess_plain(addr: &str) -> &'static str {
        failure_hint(addr, TLS_MET_PLAINTEXT, true, LOOK).await
    }

    /// A look at the port corrects a guess of the TLS mode: an HTTP/1.x answer is an
    /// operations port, an answer that is no gRPC nor TLS is no gossip endpoint, and an
    /// answer in the mode we dialled in means the failure lies elsewhere. A port that
    /// hangs up, answers in the guessed mode, or has nothing listening leaves the guess.
    #[tokio::test]
    async fn a_look_at_the_port_checks_the_guess_of_its_tls_mode() {
        let http1 =
            port_answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", true).await;
        let ssh = port_answering(b"SSH-2.0-OpenSSH_9.2\r\n", true).await;
        let h2 = port_answering(
            &[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 7, 0, 0, 0, 0, 0],
            true,
        )
        .await;
        let tls = port_answering(&[21, 3, 3, 0, 2, 2, 10], true).await;
        let hangs_up = port_answering(b"", true).await;
        assert_eq!(dial_hint(PLAINTEXT_MET_TLS, false), TLS_HINT);
        assert_eq!(dial_hint(TLS_MET_PLAINTEXT, true), PLAINTEXT_HINT);

        // Dialled in plaintext, the guess is TLS.
        assert_eq!(guess_tls(&http1).await, HTTP1_HINT);
        assert_eq!(guess_tls(&ssh).await, NOT_GRPC_HINT);
        assert_eq!(guess_tls(&h2).await, "");
        assert_eq!(guess_tls(&tls).await, TLS_HINT);
        assert_eq!(guess_tls(&hangs_up).await, TLS_HINT);
        // Dialled with TLS, the guess is plaintext.
        assert_eq!(guess_plain(&http1).await, HTTP1_HINT);
        assert_eq!(guess_plain(&ssh).await, PLAINTEXT_HINT);
        assert_eq!(guess_plain(&h2).await, PLAINTEXT_HINT);
        assert_eq!(guess_plain(&tls).await, "");
        assert_eq!(guess_plain(&hangs_up).await, PLAINTEXT_HINT);

        // Nothing listens at a port just closed: the guess stands.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert_eq!(guess_tls(&closed).await, TLS_HINT);
        assert_eq!(guess_plain(&closed).await, PLAINTEXT_HINT);

        // A hint that is no guess of the TLS mode is given without a look: an HTTP/1.x
        // port does not change it.
        let refused = "dial failed: transport error: Connection refused (os error 111)";
        let nothing = dial_hint(refused, false);
        assert!(nothing.contains("nothing listens there"), "{nothing}");
        assert_eq!(failure_hint(&http1, refused, false, LOOK).await, nothing);
    }

    /// A port that answers part of a response and then says nothing is judged on that
    /// part once the look's time is up, before the look as a whole is given up.
    #[tokio::test]
    async fn a_port_that_answers_and_then_falls_silent_is_judged_on_what_came() {
        let addr = port_answering(b"HTTP/1.1 200 OK\r\n", false).await;
        assert_eq!(
            sniff(&addr, Duration::from_millis(300)).await,
            Some(Answer::Http1)
        );
    }

    /// A Fabric v2.4.9 peer in no channel refusing an Org2MSP identity (2026-12-04, on
    /// loopback): the status our handshake ended with, word for word.
    #[test]
    fn a_peer_that_cannot_place_our_identity_gets_the_msp_hint() {
        let status = "Unknown: failed classifying identity: Unable to extract msp.Identity \
            from peer Identity: Peer Identity {\"CN\":\"peer0.org2.example.com\",\"MSP\":\
            \"Org2MSP\",\"OU\":[\"peer\"]} cannot be validated. No MSP found able to do that."
            .to_owned();
        let hint = handshake_hint(&HandshakeError::RefusedByRemote { status }).unwrap();
        assert!(hint.contains("does not trust our MSP"), "{hint}");
        let other = HandshakeError::RefusedByRemote {
            status: "Unavailable: shutting down".to_owned(),
        };
        assert_eq!(handshake_hint(&other).as_deref(), Some(""));
    }

    /// An operator's trial: crypto material made again under the same names (a second
    /// `keygen`) fails TLS with a bad signature on one side and a DecryptError alert on the
    /// other; each now gets the hint that names it.
    #[test]
    fn a_ca_of_the_same_name_with_another_key_gets_its_hint() {
        let ours = "dial failed: transport error: invalid peer certificate: BadSignature";
        let hint = dial_hint(ours, true);
        assert!(hint.contains("another key signed it"), "{hint}");
        let theirs = "ping failed: Unknown: transport error: connection error: received fatal \
                      alert: DecryptError";
        let hint = dial_hint(theirs, true);
        assert!(
            hint.contains("refused our TLS client certificate"),
            "{hint}"
        );
    }

    /// README walk-through finding 9: a remote refusing our certificate as issued by a CA
    /// of another MSP than our --msp-id (the status our node answers) gets a hint to check
    /// --msp-id, from `handshake` and in `node`'s handshake_failed; our own refusal of a
    /// remote's certificate in those words does not.
    #[test]
    fn a_certificate_of_another_msp_s_ca_gets_the_msp_id_hint() {
        let status = "Unknown: identity refused: untrusted certificate: issued by a CA of \
                      Org1MSP, not of the MSP it claims (Org2MSP)"
            .to_owned();
        let e = HandshakeError::RefusedByRemote { status };
        let hint = handshake_hint(&e).unwrap();
        assert!(hint.contains("check --msp-id"), "{hint}");
        assert_eq!(dial_hint(&e.to_string(), true), hint);
        let ours = "identity refused: untrusted certificate: issued by a CA of Org1MSP, not \
                    of the MSP it claims (Org2MSP)";
        assert_eq!(dial_hint(ours, true), "");
    }

    /// A dial the other side hangs up on fails in a way that depends on when it hangs up;
    /// each of these came from one. Dialled in plaintext, they came from a `ping` of one
    /// of our TLS nodes: the port serves TLS. Dialled with TLS, the peer refused our
    /// client certificate (under TLS 1.3 it hangs up after our side of the handshake is
    /// over): the last from a `watch` in a CI run where the hint was missing, and the
    /// CLI's test of that case accepts each of them.
    #[test]
    fn a_dial_the_peer_hangs_up_on_gets_its_hint_whenever_it_hangs_up() {
        let closed = "\n  hint: the peer closed the connection";
        for error in [
            "ping failed: Unknown: transport error: stream closed because of a broken pipe",
            "ping failed: Unavailable: transport error: connection closed",
            "ping failed: Cancelled: operation was canceled: transport error: connection was \
             not ready",
        ] {
            assert_eq!(dial_hint(error, false), TLS_HINT, "{error}");
            assert!(dial_hint(error, true).starts_with(closed), "{error}");
        }
        // A plaintext client also reads the TLS server's first answer as an HTTP/2 frame.
        let frame = "ping failed: Unavailable: h2 protocol error: frame with invalid size";
        assert_eq!(dial_hint(frame, false), TLS_HINT);
    }

    /// What answers on a port, from the first bytes of its answer to an HTTP/1.1 request.
    #[test]
    fn a_port_is_judged_by_its_first_bytes() {
        assert_eq!(judge(b""), Answer::HungUp);
        assert_eq!(judge(b"HTTP/1.1 404 Not Found\r\n\r\n"), Answer::Http1);
        assert_eq!(judge(b"HTT"), Answer::Http1);
        // Go's net/http and nginx in front of TLS answer plain HTTP with a 400.
        let go =
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        assert_eq!(judge(go), Answer::Tls);
        assert_eq!(judge(&[21, 3, 3, 0, 2, 2, 10]), Answer::Tls);
        // A plaintext HTTP/2 server: an empty SETTINGS frame, then GOAWAY.
        let h2 = [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 7, 0, 0, 0, 0, 0];
        assert_eq!(judge(&h2), Answer::Http2);
        assert_eq!(judge(b"SSH-2.0-OpenSSH_9.2\r\n"), Answer::Other);
    }
}
