//! `fabric-gossip watch`: joins a Fabric network as a member (Fabric's membership layer on a
//! real gRPC node) and shows what gossip sees: every member's PKI-ID, MSP ID, endpoints,
//! incarnation, last alive message and state, refreshed in place on a terminal, as plain
//! tables when stdout is not one, or as one JSON object per refresh with `--json`; with
//! `--changes`, the table once and then one line per change, for a log.
//!
//! A bootstrap peer that refuses us (another organization, an untrusted CA, TLS trouble)
//! is reported with the peer's own reason and exit status 1, as `ping` and `handshake`
//! report network failures; a bad flag or file is status 2.

use crate::expiry;
use crate::membership::{self, MembershipArgs};
use crate::node::Signals;
use crate::opts::{self, ConfigError, IdentityArgs, PkiForm, TlsArgs};
use crate::out::escape_controls;
use clap::Args;
use fabric_gossip_core::HandshakeError;
use fabric_gossip_discovery::{BootstrapError, DiscoveryEvent, MemberInfo};
use fabric_gossip_tonic::Node;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `fabric-gossip watch`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = WATCH_HELP)]
pub(crate) struct WatchArgs {
    /// Where this member's gossip server listens: bootstrap and other peers dial it back
    /// (its endpoint, unless --endpoint says otherwise).
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_listen, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// One JSON object per refresh instead of a table.
    #[arg(long)]
    json: bool,
    /// Exit (status 0) after this long, e.g. 30s; default: until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "DURATION", value_parser = membership::parse_duration)]
    duration: Option<Duration>,
    /// How often the table is refreshed.
    #[arg(long, value_name = "DURATION", value_parser = membership::parse_duration, default_value = "1s")]
    interval: Duration,
    /// The table once, then one line per change instead of the table every --interval: a
    /// member that became alive, restarted, died or was purged, a bootstrap peer joined or failed
    /// (with --json, the objects `node` prints for these events); the table again at the
    /// end (of --duration, on Ctrl-C or SIGTERM, or when no bootstrap peer let it in).
    #[arg(long)]
    changes: bool,
    /// Keep trying bootstrap and anchor peers that fail (nothing listening yet, a peer in
    /// a rolling restart, a watch started before its network), as `node` does, instead of
    /// exiting at once when all of them failed: each failure is printed as a warning, with
    /// its hint, and status 1 comes only when the layer gives up on every one (its
    /// --max-connection-attempts) or --duration ends with none joined.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    member: MembershipArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

const WATCH_HELP: &str = "\
A Fabric peer only lists members of organizations it knows (with no channel joined: its own
MSP), so watch with an identity of the bootstrap peer's organization:

  fabric-gossip watch --bootstrap peer0.org1.example.com:7051 \\
      --msp-dir org1/peers/peer1.org1.example.com/msp --msp-id Org1MSP \\
      --tls-cert org1/peers/peer1.org1.example.com/tls/server.crt \\
      --tls-key org1/peers/peer1.org1.example.com/tls/server.key \\
      --tls-ca org1/msp/tlscacerts/tlsca.org1.example.com-cert.pem \\
      --listen 0.0.0.0:7061 --endpoint myhost:7061

The bootstrap peer dials this member back at its endpoint, so --endpoint must be reachable
from it. Watch with an identity no running peer uses (keygen prints a node command for
every peer it makes: make one more, --org MSPID:DOMAIN:N, and leave its command out): a second
process with a running peer's identity and a newer incarnation makes the others list that
peer dead once the watch ends, until they purge the watch's entry. Another organization's
peers are reached through anchor peers: --anchor-peer MSPID=HOST:PORT with
--external-endpoint, or a --channel-config block's.

Exit status: 0 after --duration or on Ctrl-C/SIGTERM, 1 at once when every bootstrap or
anchor peer failed its first attempt (nothing listening, TLS trouble, a refusal: the reason
is printed; with --wait, each failure is a warning and the watch keeps trying until the
layer gives up on all of them) or when, by the end of --duration, none had answered our
membership request, 2 for a usage or file error. Under a supervisor, or started beside
the network it watches, use --wait.";

/// Runs `fabric-gossip watch`.
pub(crate) fn run(args: &WatchArgs) -> ExitCode {
    if args.member.bootstrap.is_empty() && args.member.anchor_peer.is_empty() {
        return opts::config_failure(&ConfigError(
            "--bootstrap HOST:PORT is required: a peer of your organization to join through \
             (or --anchor-peer)"
                .into(),
        ));
    }
    let loaded = args.identity.load(true).and_then(|id| {
        let tls = args.tls.load(&args.identity.channel_tls_cas()?)?;
        Ok((id, tls, opts::runtime()?))
    });
    let (identity, tls, rt) = match loaded {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    opts::run_then_leave(rt, watch(args, identity, tls))
}

/// Says why `ep` let us not in, on stderr: its error (`lead` is `error`, or `warning`
/// while --wait retries it) and the hints that fit, the peer's own reason first.
async fn explain(ep: &str, b: &BootstrapState, tls_on: bool, lead: &str) {
    let e = b.error_text().unwrap_or_default();
    let shown = escape_controls(&e);
    let retrying = if lead == "error" {
        String::new()
    } else {
        format!(" (attempt {}; retrying)", b.attempts)
    };
    let kind = b.kind();
    eprintln!("{lead}: cannot join through {kind} peer {ep}: {shown}{retrying}");
    let hint = crate::probe::failure_hint(ep, &e, tls_on, crate::probe::SNIFF_LIMIT)
        .await
        .trim_start();
    if !hint.is_empty() {
        eprintln!("{hint}");
    }
    // A peer of an MSP we were not given: trusting it would not let it in (it is not of
    // our organization), unless our --msp-id is what is wrong.
    let unknown = match &b.error {
        Some(BootstrapError::Handshake(e)) => crate::probe::untrusted_msp(e),
        _ => None,
    };
    if let Some(m) = unknown {
        eprintln!(
            "hint: the bootstrap peer is of {m}, an MSP this identity does not trust (or, \
             if {m} is our own organization, our --msp-id is wrong: it is the peer's \
             CORE_PEER_LOCALMSPID)"
        );
    } else if let Some(BootstrapError::Handshake(
        e @ (HandshakeError::InvalidIdentity(_) | HandshakeError::UnclassifiableIdentity(_)),
    )) = &b.error
        && let Some(h) = crate::probe::handshake_hint(e)
        && !h.is_empty()
    {
        // Another identity we could not place: the same advice as `handshake` gives.
        eprintln!("{}", h.trim_start());
    }
    let foreign = match &b.error {
        Some(BootstrapError::OtherOrganization(_)) => true,
        Some(BootstrapError::Handshake(e)) => crate::probe::refused_our_msp(e),
        _ => false,
    } || unknown.is_some();
    if foreign {
        eprintln!(
            "hint: bootstrap peers must be of this identity's organization (Fabric's rule); \
             watch with an identity of the bootstrap peer's MSP (--msp-dir, --msp-id)"
        );
    }
}

/// What became of one bootstrap peer.
#[derive(Clone, Debug, Default)]
struct BootstrapState {
    joined: bool,
    error: Option<BootstrapError>,
    /// Attempts that failed so far.
    attempts: u32,
    /// The layer will try it no more.
    gave_up: bool,
    /// Given as an --anchor-peer (and not as a --bootstrap).
    anchor: bool,
}

impl BootstrapState {
    /// What the entry point was given as, for the lines that name it.
    fn kind(&self) -> &'static str {
        if self.anchor { "anchor" } else { "bootstrap" }
    }

    /// Why the last attempt failed, as printed.
    fn error_text(&self) -> Option<String> {
        self.error.as_ref().map(ToString::to_string)
    }
}

async fn watch(
    args: &WatchArgs,
    identity: opts::Identity,
    tls: Option<fabric_gossip_tonic::TlsConfig>,
) -> ExitCode {
    let Some(mut signals) = Signals::new() else {
        return ExitCode::FAILURE;
    };
    let form = identity.pki_form();
    let msp_id = identity.msp_id().unwrap_or("").to_owned();
    // Our own certificate's NotAfter, shown as every member's is: a watcher whose identity
    // has expired is dropped by the peers it watches through.
    let own_expires = identity.enrollment_not_after().and_then(Result::ok);
    let tls_on = tls.is_some();
    let (listener, layer) = match args.member.bind(args.listen) {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let endpoint = layer.config().internal_endpoint.clone();
    // The layer skips a bootstrap peer that is this watcher itself; with no other, and no
    // anchor peer, it would wait out --duration for an answer that cannot come. (Until
    // 2026-12-07 an --anchor-peer alone, with no --bootstrap at all, was refused here.)
    let own = args.member.own_bootstraps(layer.config());
    if own.len() == args.member.bootstrap.len() && args.member.anchor_peer.is_empty() {
        return opts::config_failure(&ConfigError(format!(
            "--bootstrap {}: this watcher's own endpoint ({endpoint}), which is never \
             dialled; name a peer of your organization to join through",
            own.join(", ")
        )));
    }
    let mut builder = Node::builder(opts::config())
        .listener(listener)
        .advertise(endpoint.clone())
        .stop_timeout(Duration::from_millis(300))
        .layer(move |_| layer);
    if let Some(t) = tls {
        builder = builder.tls(t);
    }
    let node = match opts::start(
        builder,
        identity,
        &args.listen.to_string(),
        &args.tls,
        Some(&endpoint),
    )
    .await
    {
        Ok(n) => n,
        Err(e) => return opts::config_failure(&e),
    };
    let Some(mut events) = node.layer_events::<DiscoveryEvent>() else {
        eprintln!("error: the membership layer did not start");
        node.stop().await;
        return ExitCode::FAILURE;
    };
    // Gossip messages nobody reads would only fill the core's buffers: the layer takes
    // its own, the others are not this tool's business.
    let me = json!({
        "pki_id": form.show(node.pki_id()),
        "msp_id": msp_id,
        "endpoint": endpoint,
        "identity_expires_unix_ms": own_expires.map(expiry::date_unix_ms),
    });
    // Anchors first: an endpoint given both ways is named a bootstrap peer (the later
    // entry of the map's collection).
    let mut boot: BTreeMap<String, BootstrapState> = args
        .member
        .anchor_peer
        .iter()
        .map(|a| (&a.endpoint, true))
        .chain(args.member.bootstrap.iter().map(|b| (b, false)))
        .filter(|(b, _)| !own.contains(&b.as_str()))
        .map(|(b, anchor)| {
            let state = BootstrapState {
                anchor,
                ..BootstrapState::default()
            };
            (b.clone(), state)
        })
        .collect();
    membership::connect_anchor_peers(&node, &args.member.anchor_peer, false);
    let view = View {
        form,
        json: args.json,
        tty: redrawn_in_place(args.json, args.changes, std::io::stdout().is_terminal()),
        me,
        own_expires,
    };
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    let mut code = ExitCode::SUCCESS;
    let mut shown_at: Option<std::time::Instant> = None;
    // With --wait, the failure last printed for each entry point.
    let mut shown_failures: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            ev = tokio_stream::StreamExt::next(&mut events) => {
                let Some(ev) = ev else { break };
                // After the first table; a change made just before it may show in both.
                if args.changes && shown_at.is_some() {
                    view.show_change(&ev);
                }
                match ev {
                    DiscoveryEvent::BootstrapJoined { endpoint, .. } => {
                        boot.entry(endpoint).or_default().joined = true;
                    }
                    DiscoveryEvent::BootstrapFailed { endpoint, error, attempt, gave_up } => {
                        let b = boot.entry(endpoint.clone()).or_default();
                        b.attempts = attempt;
                        b.gave_up = gave_up;
                        if !b.joined {
                            b.error = Some(error);
                        }
                        let failed = boot.values().all(|b| !b.joined && b.error.is_some());
                        // No way in: say why (the peer's own reason when it refused us,
                        // or ours when we refused it) and stop, as ping and handshake do;
                        // with --wait only once the layer gave up on every one.
                        if failed && (!args.wait || boot.values().all(|b| b.gave_up)) {
                            // The table's last word is the state it ended in: the one shown
                            // before said "joining..." or, with --wait, "retrying", which a
                            // log or a script reading the last --json object kept.
                            // Without --wait the layer would try again, but the watch ends:
                            // it gave up on every entry point (not "retrying").
                            for b in boot.values_mut() {
                                b.gave_up = true;
                            }
                            if let Some(t) = membership::table(&node) {
                                view.show(&t, &boot);
                            }
                            for (ep, b) in &boot {
                                explain(ep, b, tls_on, "error").await;
                            }
                            code = ExitCode::FAILURE;
                            break;
                        }
                        // Waiting: this one's first failure, and a new reason, are worth
                        // a line; its retries with the same reason are not.
                        if args.wait
                            && let Some(b) = boot.get(&endpoint)
                            && !b.joined
                            && !b.gave_up
                            && shown_failures.get(&endpoint) != b.error_text().as_ref()
                        {
                            explain(&endpoint, b, tls_on, "warning").await;
                            shown_failures.insert(endpoint, b.error_text().unwrap_or_default());
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick(), if !(args.changes && shown_at.is_some()) => {
                if let Some(t) = membership::table(&node) {
                    view.show(&t, &boot);
                    shown_at = Some(std::time::Instant::now());
                }
            }
            () = &mut until => {
                view.show_final(&node, shown_at, &boot);
                // The whole time without a way in: no bootstrap peer answered our
                // membership request, though none refused us either.
                if boot.values().all(|b| !b.joined) {
                    let waited = args.duration.unwrap_or_default();
                    for (ep, b) in &boot {
                        // A --duration shorter than a dial's timeout (3 s) can end before a
                        // dial to a closed port, or to a port of another kind, fails: look
                        // at the port before blaming the peer's membership layer.
                        let hint = match b.error {
                            Some(_) => "",
                            None => {
                                let limit = crate::probe::SNIFF_LIMIT;
                                crate::probe::silent_port_hint(ep, tls_on, limit).await
                            }
                        };
                        let why = b.error_text().unwrap_or_else(|| {
                            let silent = format!(
                                "no answer to our membership request within {waited:?}"
                            );
                            if hint.is_empty() {
                                format!(
                                    "{silent} (a peer without the membership layer never \
                                     answers; a fabric-gossip node runs it only with \
                                     --membership, --bootstrap or --config)"
                                )
                            } else {
                                silent
                            }
                        });
                        let why = escape_controls(&why);
                        let kind = b.kind();
                        eprintln!("error: cannot join through {kind} peer {ep}: {why}");
                        if !hint.is_empty() {
                            eprintln!("{}", hint.trim_start());
                        }
                    }
                    code = ExitCode::FAILURE;
                }
                break;
            }
            name = signals.next() => {
                tracing::info!(target: crate::logging::TARGET, "{name}, stopping");
                // Under a supervisor or `timeout` a signal is the usual end: it closes
                // with the table as the end of --duration does.
                view.show_final(&node, shown_at, &boot);
                break;
            }
        }
    }
    node.stop().await;
    code
}

/// Whether the table is redrawn in place: only a plain table (no `--json`) on a terminal;
/// changes (`--changes`) are appended.
fn redrawn_in_place(json: bool, changes: bool, terminal: bool) -> bool {
    !json && !changes && terminal
}

/// How the table is shown.
struct View {
    form: PkiForm,
    json: bool,
    tty: bool,
    me: Value,
    /// Our own certificate's NotAfter (`None` for a test identity), for the `me:` line.
    own_expires: Option<std::time::SystemTime>,
}

impl View {
    /// One line for a change: the event's JSON object with `--json`, else the time, its
    /// name and fields, e.g. `14:02:07.341Z member_dead pki_id=… msp_id=Org1MSP
    /// endpoint=… reason=expired`.
    fn show_change(&self, ev: &DiscoveryEvent) {
        let text = self.change_line(ev, unix_ms_now());
        let mut out = std::io::stdout().lock();
        // A reader gone away (a closed pipe) is not this tool's failure.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// [`View::show_change`]'s line for `ev` at `ms` (Unix milliseconds), its newline
    /// included.
    fn change_line(&self, ev: &DiscoveryEvent, ms: u128) -> String {
        let mut v = membership::event_json(ev, self.form);
        v["time_unix_ms"] = json!(ms);
        if self.json {
            format!("{v}\n")
        } else {
            // UTC time of day, as a log line starts.
            let mut line = format!(
                "{:02}:{:02}:{:02}.{:03}Z {}",
                ms / 3_600_000 % 24,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000,
                v["event"].as_str().unwrap_or_default()
            );
            const FIELDS: [&str; 11] = [
                "pki_id",
                "msp_id",
                "endpoint",
                "internal_endpoint",
                "inc",
                "previous_inc",
                "resurrected",
                "reason",
                "error",
                "attempt",
                "gave_up",
            ];
            for key in FIELDS {
                match v.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(x)) if x.is_empty() => {}
                    Some(Value::String(x)) => {
                        line.push_str(&format!(" {key}={}", escape_controls(x)));
                    }
                    Some(x) => line.push_str(&format!(" {key}={x}")),
                }
            }
            line.push('\n');
            line
        }
    }

    /// The state at the end (of --duration, or at a signal), unless a refresh just
    /// showed it.
    fn show_final(
        &self,
        node: &Node,
        shown_at: Option<std::time::Instant>,
        boot: &BTreeMap<String, BootstrapState>,
    ) {
        let fresh = shown_at.is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if !fresh && let Some(t) = membership::table(node) {
            self.show(&t, boot);
        }
    }

    fn show(&self, members: &[MemberInfo], boot: &BTreeMap<String, BootstrapState>) {
        let text = if self.json {
            let mut v = membership::membership_json("membership", members, self.form);
            v["self"] = self.me.clone();
            v["bootstrap"] = boot
                .iter()
                .map(|(ep, b)| {
                    json!({
                        "endpoint": ep,
                        "joined": b.joined,
                        "error": b.error_text(),
                        "failed_attempts": b.attempts,
                        "gave_up": b.gave_up,
                    })
                })
                .collect();
            v["time_unix_ms"] = json!(unix_ms_now());
            format!("{v}\n")
        } else {
            self.table(members, boot)
        };
        let mut out = std::io::stdout().lock();
        // A reader gone away (a closed pipe) is not this tool's failure.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    fn table(&self, members: &[MemberInfo], boot: &BTreeMap<String, BootstrapState>) -> String {
        let mut s = String::new();
        if self.tty {
            // Home and clear: the table is redrawn in place.
            s.push_str("\x1b[H\x1b[2J");
        }
        let alive = members.iter().filter(|m| m.alive).count();
        let show = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let own_expiry = self
            .own_expires
            .map(|at| format!("   identity expires {}", membership::until(at)))
            .unwrap_or_default();
        s.push_str(&format!(
            "me: {} {} at {}{own_expiry}   members: {} alive, {} dead\n",
            show(&self.me["pki_id"]),
            show(&self.me["msp_id"]),
            show(&self.me["endpoint"]),
            alive,
            members.len() - alive
        ));
        for (ep, b) in boot {
            let state = match (&b.joined, &b.error) {
                (true, _) => "joined".to_owned(),
                // Given up before any attempt (attempt 0): an anchor of another
                // organization the layer does not dial without our external endpoint.
                (false, Some(e)) if b.attempts == 0 => {
                    format!("not dialled: {}", escape_controls(&e.to_string()))
                }
                (false, Some(e)) => format!(
                    "failed {} time{}{}: {}",
                    b.attempts,
                    if b.attempts == 1 { "" } else { "s" },
                    if b.gave_up { ", gave up" } else { ", retrying" },
                    escape_controls(&e.to_string())
                ),
                (false, None) => "joining...".to_owned(),
            };
            s.push_str(&format!("{} {ep}: {state}\n", b.kind()));
        }
        let rows: Vec<[String; 9]> = members
            .iter()
            .map(|m| {
                [
                    self.form.show(&m.pki_id),
                    m.org.clone().unwrap_or_default(),
                    cell(&m.endpoint),
                    cell(&m.internal_endpoint),
                    m.timestamp.inc.to_string(),
                    m.timestamp.seq.to_string(),
                    format!("{:.1}s ago", membership::age(m.last_seen).as_secs_f64()),
                    membership::expires_in(m),
                    if m.alive { "alive" } else { "dead" }.to_owned(),
                ]
            })
            .collect();
        let head = [
            "PKI-ID",
            "MSP ID",
            "ENDPOINT",
            "INTERNAL ENDPOINT",
            "INCARNATION",
            "SEQ",
            "LAST ALIVE",
            "IDENTITY EXPIRES",
            "STATE",
        ];
        // Widths in characters, and cells padded by hand: `format!`'s width is at most
        // 65,535, and a member's endpoint of 14,000 control characters, escaped, had made
        // `watch` panic on it.
        let chars = |c: &str| c.chars().count();
        let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(chars(c));
            }
        }
        let line = |cells: &[&str]| {
            let mut l = cells
                .iter()
                .zip(&width)
                .map(|(c, w)| {
                    let mut cell = String::with_capacity(c.len() + w);
                    cell.push_str(c);
                    cell.extend(std::iter::repeat_n(' ', w.saturating_sub(chars(c))));
                    cell
                })
                .collect::<Vec<_>>()
                .join("  ");
            l.truncate(l.trim_end().len());
            l.push('\n');
            l
        };
        s.push_str(&line(&head));
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            s.push_str(&line(&cells));
        }
        if !self.tty {
            s.push('\n');
        }
        s
    }
}

/// The widest a member's endpoint is shown in the table, in characters once escaped: a
/// `host:port` takes at most about 260, a usual one under 64. Each column is as wide as its
/// widest cell, so one member announcing a 1 KiB endpoint of control characters (accepted,
/// `MAX_ENDPOINT`), shown escaped as 6 KiB, had widened every row of every refresh to match:
/// with 100 members, 637 KB a refresh (one a second by default) on the terminal or in the
/// log instead of 24 KB; `node --external-endpoint` takes 300 bytes of DEL characters, and
/// one such member made each row of a live watch 1,902 characters instead of 165 (an
/// attack, 2026-12-07). `--json` and `--changes` lines still give it whole.
const ENDPOINT_CELL: usize = 128;

/// A member's endpoint as a table shows it: escaped, and cut to [`ENDPOINT_CELL`]
/// characters with the length of the whole (`… (N bytes)`) when longer.
fn cell(endpoint: &str) -> String {
    let shown = escape_controls(endpoint);
    if shown.chars().nth(ENDPOINT_CELL).is_none() {
        return shown.into_owned();
    }
    // Cut between characters of the endpoint, never inside an escape.
    let (mut cut, mut width) = (String::new(), 0);
    for c in endpoint.chars() {
        let one = escape_controls(c.encode_utf8(&mut [0; 4])).into_owned();
        width += one.chars().count();
        if width > ENDPOINT_CELL {
            break;
        }
        cut.push_str(&one);
    }
    format!("{cut}… ({} bytes)", endpoint.len())
}

fn unix_ms_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_core::{Instant, PkiId};
    use fabric_gossip_discovery::alive::Timestamp;
    use fabric_gossip_discovery::{DeadReason, PurgeReason};

    /// A member the tests show: PKI-ID `peer`, `endpoint`, MSP `org`.
    fn member(endpoint: &str, org: Option<&str>) -> MemberInfo {
        MemberInfo {
            pki_id: PkiId::new(&b"peer"[..]),
            endpoint: endpoint.into(),
            internal_endpoint: "10.0.0.1:7051".into(),
            org: org.map(Into::into),
            timestamp: Timestamp { inc: 7, seq: 9 },
            last_seen: Instant::from_unix_secs(1),
            alive: true,
            identity_expires: None,
        }
    }

    fn view(json: bool, tty: bool) -> View {
        View {
            form: PkiForm::Text,
            json,
            tty,
            me: json!({"pki_id": "me:1", "msp_id": "", "endpoint": "me:1"}),
            own_expires: None,
        }
    }

    /// Only a plain table on a terminal is redrawn in place: JSON objects and changes are
    /// appended, and a table into a pipe or a file is never cleared.
    #[test]
    fn only_a_plain_table_on_a_terminal_is_redrawn_in_place() {
        for json in [false, true] {
            for changes in [false, true] {
                for terminal in [false, true] {
                    // Of the eight cases, one: a plain table (neither flag) on a terminal.
                    assert_eq!(
                        redrawn_in_place(json, changes, terminal),
                        (json, changes, terminal) == (false, false, true),
                        "json {json}, changes {changes}, terminal {terminal}"
                    );
                }
            }
        }
    }

    /// On a terminal the table starts by clearing the screen and ends with its last row;
    /// elsewhere each table ends with a blank line, to tell one from the next.
    #[test]
    fn a_table_on_a_terminal_clears_the_screen_and_elsewhere_ends_in_a_blank_line() {
        let members = [member("p:1", Some("Org1MSP"))];
        let boot = BTreeMap::new();
        let piped = view(false, false).table(&members, &boot);
        assert!(
            piped.starts_with("me: me:1  at me:1   members: 1 alive, 0 dead\n"),
            "{piped}"
        );
        assert!(piped.ends_with("alive\n\n"), "{piped:?}");
        assert!(!piped.contains('\x1b'), "{piped:?}");
        let tty = view(false, true).table(&members, &boot);
        assert_eq!(
            tty,
            format!("\x1b[H\x1b[2J{}", piped.trim_end_matches('\n')) + "\n"
        );
    }

    /// A change, without `--json`, is a line of the UTC time of day, the event's name and
    /// its fields that have a value (escaped); with `--json`, the event's object with the
    /// time.
    #[test]
    fn a_change_is_a_log_line_of_its_event_and_fields_or_its_json_object() {
        // Some day, at 14:02:07.341 UTC.
        let at: u128 = 20_000 * 86_400_000 + 14 * 3_600_000 + 2 * 60_000 + 7_000 + 341;
        let text = view(false, false);
        let dead = DiscoveryEvent::MemberDead {
            member: member("p:1\u{1}", None),
            reason: DeadReason::Expired,
        };
        assert_eq!(
            text.change_line(&dead, at),
            "14:02:07.341Z member_dead pki_id=peer endpoint=p:1\\u{1} \
             internal_endpoint=10.0.0.1:7051 inc=7 reason=expired\n"
        );
        let alive = DiscoveryEvent::MemberAlive {
            member: member("p:1", Some("Org1MSP")),
            resurrected: true,
        };
        assert_eq!(
            text.change_line(&alive, at + 1),
            "14:02:07.342Z member_alive pki_id=peer msp_id=Org1MSP endpoint=p:1 \
             internal_endpoint=10.0.0.1:7051 inc=7 resurrected=true\n"
        );
        // A restart within the alive expiration: no death, no resurrection, but a line
        // with both incarnations (a rolling restart had left a day-2 trial's log empty).
        let restarted = DiscoveryEvent::MemberRestarted {
            member: member("p:1", Some("Org1MSP")),
            previous_incarnation: 5,
        };
        assert_eq!(
            text.change_line(&restarted, at),
            "14:02:07.341Z member_restarted pki_id=peer msp_id=Org1MSP endpoint=p:1 \
             internal_endpoint=10.0.0.1:7051 inc=7 previous_inc=5\n"
        );
        let purged = DiscoveryEvent::MemberPurged {
            member: member("p:1", Some("Org1MSP")),
            reason: PurgeReason::LongDead,
        };
        assert!(text.change_line(&purged, at).ends_with(
            " member_purged pki_id=peer msp_id=Org1MSP endpoint=p:1 \
                            internal_endpoint=10.0.0.1:7051 inc=7 reason=long_dead\n"
        ));
        let failed = DiscoveryEvent::BootstrapFailed {
            endpoint: "b:1".into(),
            error: BootstrapError::NoResponse,
            attempt: 3,
            gave_up: true,
        };
        assert_eq!(
            text.change_line(&failed, at),
            "14:02:07.341Z bootstrap_failed endpoint=b:1 error=no membership response \
             attempt=3 gave_up=true\n"
        );

        let line = view(true, false).change_line(&failed, at);
        assert!(line.ends_with('\n'), "{line:?}");
        let mut expected = membership::event_json(&failed, PkiForm::Text);
        expected["time_unix_ms"] = json!(at);
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("JSON"),
            expected
        );
    }

    /// A bootstrap peer's failure is given in the error's own words, and none before one;
    /// the table says how many attempts failed and whether the layer still tries.
    #[test]
    fn a_bootstrap_peer_s_failure_reads_in_its_own_words() {
        assert_eq!(BootstrapState::default().error_text(), None);
        let mut b = BootstrapState {
            joined: false,
            error: Some(BootstrapError::OtherOrganization("peer0:7051".into())),
            attempts: 1,
            gave_up: false,
            anchor: false,
        };
        assert_eq!(
            b.error_text().as_deref(),
            Some("peer0:7051 isn't in our organization, cannot be a bootstrap peer")
        );
        let line = |b: &BootstrapState| {
            let boot = BTreeMap::from([("peer0:7051".to_owned(), b.clone())]);
            let table = view(false, false).table(&[], &boot);
            let line = table
                .lines()
                .find(|l| l.starts_with("bootstrap ") || l.starts_with("anchor "))
                .map(str::to_owned);
            line.expect("a bootstrap line")
        };
        let why = "peer0:7051 isn't in our organization, cannot be a bootstrap peer";
        assert_eq!(
            line(&b),
            format!("bootstrap peer0:7051: failed 1 time, retrying: {why}")
        );
        (b.attempts, b.gave_up) = (120, true);
        assert_eq!(
            line(&b),
            format!("bootstrap peer0:7051: failed 120 times, gave up: {why}")
        );
        // An --anchor-peer is named so.
        b.anchor = true;
        assert_eq!(
            line(&b),
            format!("anchor peer0:7051: failed 120 times, gave up: {why}")
        );
        // One the layer gave up before dialling (attempt 0) was not tried at all: it had
        // read "failed 0 times, gave up".
        b.error = Some(BootstrapError::AnchorWithoutExternalEndpoint);
        b.attempts = 0;
        assert_eq!(
            line(&b),
            "anchor peer0:7051: not dialled: anchor peer of another organization and no \
             external endpoint"
        );
    }

    /// The time of a change or a table is the system clock's, in Unix milliseconds.
    #[test]
    fn the_time_shown_is_the_system_clock_s_in_milliseconds() {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis()
        };
        let before = ms(std::time::SystemTime::now());
        let now = unix_ms_now();
        let after = ms(std::time::SystemTime::now());
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    /// A member's endpoint of 14,000 control characters, escaped, is 70,000 characters
    /// wide: more than `format!` can pad to, which had made `watch` panic on it. The table
    /// is drawn, its columns aligned by characters, the endpoint cut to its cell.
    #[test]
    fn a_member_with_an_endpoint_wider_than_format_can_pad_is_shown() {
        let view = View {
            form: PkiForm::Text,
            json: false,
            tty: false,
            me: Value::Null,
            own_expires: None,
        };
        let member = |endpoint: String| MemberInfo {
            pki_id: PkiId::new(&b"peer"[..]),
            endpoint,
            internal_endpoint: "é:1".into(),
            org: Some("Org1MSP".into()),
            timestamp: Timestamp { inc: 1, seq: 1 },
            last_seen: Instant::from_unix_secs(1),
            alive: true,
            identity_expires: None,
        };
        let wide = "\u{1}".repeat(14_000);
        let table = view.table(&[member(wide), member("p:1".into())], &BTreeMap::new());
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("peer")).collect();
        assert_eq!(rows.len(), 2);
        // Escaped, cut to the cell's width, with the length of the whole.
        let cut = format!("{}… (14000 bytes)", "\\u{1}".repeat(ENDPOINT_CELL / 5));
        assert!(rows[0].contains(&cut), "{}", rows[0]);
        // The internal endpoint column starts at the same character in both rows.
        let at = |r: &str| r.chars().position(|c| c == 'é').expect("internal endpoint");
        assert_eq!(at(rows[0]), at(rows[1]));
    }

    /// One member's long endpoint does not widen every other row: a 1 KiB endpoint of
    /// DEL characters (the longest an alive message may carry, 6 KiB once escaped) among
    /// 100 members had made each refresh 101 rows of 6,242 characters (637 KB); now 238 at
    /// most (24 KB).
    #[test]
    fn one_members_long_endpoint_does_not_widen_every_row() {
        let mut members: Vec<MemberInfo> = (0..100)
            .map(|i| member(&format!("10.0.0.{i}:7051"), Some("Org1MSP")))
            .collect();
        members.push(member(&"\u{7f}".repeat(1024), Some("Org1MSP")));
        let table = view(false, false).table(&members, &BTreeMap::new());
        let widest = table.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        assert!(widest < 400, "a row of {widest} characters");
        assert!(table.len() < 101 * 400, "a table of {} bytes", table.len());
        assert!(table.contains("… (1024 bytes)"));
        // An ordinary endpoint is shown whole.
        let long_name = format!("{}:7051", "p".repeat(120));
        assert_eq!(cell(&long_name), long_name);
    }
}
