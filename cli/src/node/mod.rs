//! `fabric-gossip node`: a long-running gossip comm node driven through stdin and stdout,
//! for people (type a line, see what arrives) and for programs (the interop harness drives
//! it against an independent implementation). The contract is written at the top of
//! `interop/interop_test.py`; this module implements exactly that, plus MSP identities.
//!
//! stdout carries only JSON objects, one per line, flushed at once, in the order things
//! happened; logs go to stderr. stdin takes JSON commands (`send`, `send_with_ack`, `stats`,
//! `stop`), and any other non-empty line is sent as a DataMessage to every connected peer.

mod auto_ack;
mod commands;
mod events;
mod settings;
mod signals;

pub(crate) use commands::data_message;
pub(crate) use settings::NodeArgs;
pub(crate) use signals::Signals;

use self::auto_ack::{AckShares, auto_ack};
use self::commands::{Line, peer_at, read_line};
use self::events::{OpenConnections, SenderName, event_json, received_line};
use self::settings::{Settings, settings};
use crate::logging::TARGET;
use crate::lookup::Lookups;
use crate::membership;
use crate::opts::{self, ConfigError, Identity, PkiForm};
use crate::out::{Measure, Out};
use fabric_gossip_core::proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_core::proto::gossip::{Empty, GossipMessage};
use fabric_gossip_core::{RemotePeer, SignedMessage};
use fabric_gossip_discovery::DiscoveryEvent;
use fabric_gossip_tonic::Node;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Events the transport may queue for printing. Printing is fast, so this only fills when
/// stdout is not read; then copies are dropped and counted (see the `stats` command).
const EVENT_TAP: usize = 4096;
/// Received messages printed per lock of the output queue, at most: the batch is formatted
/// straight into the queue and the writer woken once for it.
const RECEIVE_BATCH: usize = 256;
/// Acks waiting for room at once for `--auto-ack`. Past this, or past a sender's share
/// ([`MAX_ACKS_PER_SENDER`]), an ack goes only if its connection has room now, and is
/// dropped and counted (`dropped_overflow`) otherwise: the node never stops taking
/// messages for acks, so one peer that stopped reading cannot stall the others.
const MAX_ACKS_IN_FLIGHT: usize = 256;
/// Acks one sender may have waiting for room: a peer that reads nothing holds at most
/// this many of the [`MAX_ACKS_IN_FLIGHT`] slots.
const MAX_ACKS_PER_SENDER: usize = 32;
/// `send_with_ack` commands waiting for their acks at once; more are refused.
const MAX_ACKS_PENDING: usize = 1024;
/// Longest stdin line accepted (a DataMessage's text must fit in it).
const MAX_LINE: usize = 4 << 20;
/// Lines read ahead of the command loop.
const LINE_QUEUE: usize = 64;
/// Upper bound on waiting for connections to wind down at stop. The core has closed every
/// gossip stream by then; what is left are HTTP/2 connections, some of which never said
/// anything (a connection flood), so waiting long buys nothing, and the streams this node
/// opened, whose peers end them once they have read what HTTP/2 still held (a loopback
/// round trip or two; a peer that never reads loses it either way). With `OUTPUT_DRAIN` and
/// `RUNTIME_SHUTDOWN` a stop takes well under the 1 s promised.
const STOP_TIMEOUT: Duration = Duration::from_millis(300);
/// Upper bound on writing the last lines (`stopped` among them) to a slow stdout reader.
const OUTPUT_DRAIN: Duration = Duration::from_millis(250);

/// How long `stop` and the end of stdin (`--exit-on-eof`) wait at least for the commands
/// already read to have their messages written before the node stops (longer when the dial
/// and connection timeouts need it: a peer being dialled has its dial timeout, 3 s by
/// default, then the Ping and the handshake).
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Upper bound on tasks finishing once the node has stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

/// Runs `fabric-gossip node`.
pub(crate) fn run(args: &NodeArgs) -> ExitCode {
    let loaded = settings(args).and_then(|set| {
        let id = set.identity.load(true)?;
        let tls = set.tls.load(&set.identity.channel_tls_cas()?)?;
        Ok((set, id, tls, opts::runtime()?))
    });
    let (set, identity, tls, rt) = match loaded {
        Ok(x) => x,
        Err(e) => return opts::config_failure(&e),
    };
    let out = Out::start(std::io::stdout());
    // The command loop runs as a task on the runtime's workers rather than on this thread:
    // a delivery then wakes it on the worker that read the message, instead of waking
    // another thread for every batch.
    let serving = rt.spawn(serve(args.clone(), set, identity, tls, out.clone()));
    let code = rt.block_on(serving).unwrap_or_else(|e| {
        tracing::error!(target: TARGET, "the node's task failed: {e}");
        ExitCode::FAILURE
    });
    if !out.drain(OUTPUT_DRAIN) {
        tracing::warn!(target: TARGET, "stdout is not being read; the last lines are lost");
    }
    // Tasks still running (acks in flight) are cut; stdin is read by a thread of its own,
    // which the process exit ends.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// What the loop does after a command.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

struct State {
    node: Node,
    form: PkiForm,
    out: Out,
    acks_pending: Arc<Semaphore>,
    /// The handshakes that learn unknown PKI-IDs, and the messages waiting for them.
    lookups: Lookups,
    /// Sequence numbers of plain-text lines.
    text_seq: u64,
    /// How to read the trust store again; `None` under the test identity.
    reload: Option<Reload>,
    /// When the `membership` line (the whole table) may be printed after changes.
    tables: membership::TablePacer,
    /// The `--peer` peers: where a plain line goes while no peer is connected yet.
    dials: Vec<RemotePeer>,
}

/// What reloading the trust store needs: the flags it was read from, and the running
/// provider's handle.
struct Reload {
    args: crate::opts::IdentityArgs,
    handle: fabric_gossip_msp::TrustHandle,
}

async fn serve(
    args: NodeArgs,
    set: Settings,
    identity: Identity,
    tls: Option<fabric_gossip_tonic::TlsConfig>,
    out: Out,
) -> ExitCode {
    // Before anything is printed: whoever saw "listening" may send SIGTERM at once.
    let Some(mut signals) = Signals::with_reload() else {
        return ExitCode::FAILURE;
    };
    let form = identity.pki_form();
    let msp_id = identity.msp_id().map(str::to_owned);
    let trust = identity.trust_summary();
    let channels = identity.channels_summary();
    let reload = identity.trust_handle().map(|handle| Reload {
        args: set.identity.clone(),
        handle,
    });
    let health = crate::ops::State::new(set.metrics);
    let operations = match set.operations {
        Some(addr) => {
            match crate::ops::start(addr, health.clone(), set.operations_tls.clone()).await {
                Ok(bound) => Some(bound),
                Err(e) => {
                    eprintln!("error: --operations {addr}: cannot listen: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let (tap_tx, mut tap) = mpsc::channel(EVENT_TAP);
    let mut open = OpenConnections::default();
    let flush_limit = flush_limit(&set.core, form);
    let mut builder = fabric_gossip_tonic::Node::builder(set.core)
        .listen(set.listen)
        .events(tap_tx)
        .limits(set.limits)
        .stop_timeout(STOP_TIMEOUT);
    // The membership layer's endpoint is the bound address unless given: bind first.
    let mut membership_info = None;
    let mut advertised = None;
    if let Some(m) = &set.membership {
        let (listener, layer) = match m.bind(set.listen) {
            Ok(x) => x,
            Err(ConfigError(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let c = layer.config();
        membership_info = Some(json!({
            "endpoint": c.internal_endpoint,
            "external_endpoint": c.external_endpoint,
            "bootstrap": c.bootstrap,
        }));
        // The node is known by the endpoint its alive messages carry (--endpoint,
        // peer.gossip.endpoint or peer.address), not by --listen's 0.0.0.0.
        advertised = Some(c.internal_endpoint.clone());
        builder = builder
            .listener(listener)
            .advertise(c.internal_endpoint.clone())
            .layer(move |_| layer);
    }
    let tls_on = tls.is_some();
    if let Some(t) = tls {
        builder = builder.tls(t);
    }
    let certificates = crate::expiry::OwnCertificates::read(&identity, &set.tls);
    let node = match opts::start(
        builder,
        identity,
        &set.listen.to_string(),
        &set.tls,
        advertised.as_deref(),
    )
    .await
    {
        Ok(n) => n,
        Err(ConfigError(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut listening = json!({
        "event": "listening",
        "addr": node.endpoint(),
        "pki_id": form.show(node.pki_id()),
        "tls": tls_on,
    });
    // The address bound, when others are told another one (`addr`).
    let bound = node.local_addr().to_string();
    if bound != node.endpoint() {
        listening["listen"] = json!(bound);
    }
    if let Some(m) = &msp_id {
        listening["msp_id"] = json!(m);
    }
    if let Some(t) = trust {
        listening["trust"] = t;
    }
    if let Some(c) = channels {
        listening["channels"] = c;
    }
    if let Some(a) = operations {
        listening["operations"] = json!(a.to_string());
    }
    if let Some(m) = membership_info {
        listening["membership"] = m;
    }
    let expires = certificates.json();
    if expires.as_object().is_some_and(|m| !m.is_empty()) {
        listening["certificates_expire_unix_ms"] = expires;
    }
    certificates.track();
    let lookups = Lookups::default();
    health.serving(node.clone(), out.clone(), lookups.clone(), certificates);
    out.emit(&listening);
    let at = if listening.get("listen").is_some() {
        format!("{bound} (advertised as {})", node.endpoint())
    } else {
        bound
    };
    tracing::info!(
        target: TARGET,
        "listening on {} as {} ({}), TLS {}",
        at,
        form.show(node.pki_id()),
        msp_id
            .as_deref()
            .map_or("test identity, TEST ONLY".to_owned(), |m| format!(
                "MSP {m}"
            )),
        if tls_on { "on" } else { "off" },
    );
    // As a Fabric peer joining its channels: the anchor peers of the --channel-config blocks.
    if let (Some(org), Some(r)) = (&msp_id, &reload) {
        membership::connect_anchors(&node, org, r.handle.current().channel_configs(), false);
    }
    // And those given on the command line, with or without a channel block.
    if let Some(m) = &set.membership {
        membership::connect_anchor_peers(&node, &m.anchor_peer, true);
    }

    let mut member_events = node.layer_events::<DiscoveryEvent>();
    let layer_on = member_events.is_some();
    // The membership layer consumes its own messages; the inbox shows the others.
    let mut inbox = match node.accept(move |m| !(layer_on && membership::is_membership_message(m)))
    {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: cannot subscribe to received messages: {e}");
            node.stop().await;
            return ExitCode::FAILURE;
        }
    };
    // The PresumedDead and IdentitySwitch notifications are printed from the event tap,
    // in order with the other events; the API streams are drained so that their bounded
    // buffers never fill and count drops, and tell the PKI-IDs learnt for endpoints which
    // to forget (the peer may come back with another certificate).
    for mut stream in [node.presumed_dead(), node.identity_switch()] {
        let lookups = lookups.clone();
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            while let Some(pki) = stream.next().await {
                lookups.forget(&pki);
            }
        });
    }
    let mut st = State {
        node: node.clone(),
        form,
        out: out.clone(),
        acks_pending: Arc::new(Semaphore::new(MAX_ACKS_PENDING)),
        lookups,
        text_seq: 0,
        reload,
        tables: membership::TablePacer::new(tokio::time::Instant::now()),
        dials: args.peer.iter().map(|p| peer_at(form, p.clone())).collect(),
    };
    for peer in &st.dials {
        let hello = GossipMessage {
            nonce: 0,
            channel: Default::default(),
            tag: Tag::Empty as i32,
            content: Some(Content::Empty(Empty {})),
        };
        if let Err(e) = st.send_to(SignedMessage::noop(hello), peer.clone()) {
            tracing::warn!(target: TARGET, "--peer {}: {e}", peer.endpoint);
        }
    }

    let (line_tx, mut lines) = mpsc::channel::<Line>(LINE_QUEUE);
    // A plain thread: a read from a terminal or pipe blocks for as long as nobody types, and
    // the runtime's blocking pool would make the exit wait for it.
    let reader = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                match read_line(&mut stdin) {
                    Ok(Some(l)) => {
                        if line_tx.blocking_send(l).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(target: TARGET, "stdin: {e}");
                        break;
                    }
                }
            }
        });
    if let Err(e) = reader {
        eprintln!("error: cannot read stdin: {e}");
        // The --peer hellos waiting for PKI-IDs are counted too.
        st.lookups.abandon();
        node.stop().await;
        return ExitCode::FAILURE;
    }
    let mut stdin_open = true;
    let mut flush_first = true;

    // `--auto-ack`: the loop never waits for an ack. Acks waiting for room hold a slot
    // (`acks`, which `flush` waits for) and their sender's share (`shares`); the rest go
    // at once or are dropped and counted, so a peer that stopped reading stalls nothing.
    let acks = Arc::new(Semaphore::new(MAX_ACKS_IN_FLIGHT));
    let shares = AckShares::default();
    let mut received = Vec::with_capacity(RECEIVE_BATCH);
    let mut sender = SenderName::default();
    // A `membership` line after changes, when `st.tables` lets it out (at most twice a
    // second, and within a byte budget however large the table).
    let table_due = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(table_due);
    loop {
        if let Some(due) = st.tables.due()
            && table_due.deadline() != due
        {
            table_due.as_mut().reset(due);
        }
        tokio::select! {
            biased;
            Some(ev) = next_event(&mut member_events) => {
                if matches!(
                    ev,
                    DiscoveryEvent::MemberAlive { .. }
                        | DiscoveryEvent::MemberDead { .. }
                        | DiscoveryEvent::MemberPurged { .. }
                ) {
                    st.tables.changed(tokio::time::Instant::now());
                }
                out.emit(&membership::event_json(&ev, form));
            }
            () = &mut table_due, if st.tables.pending() => st.print_table(),
            ev = tap.recv() => {
                if let Some(v) = ev.as_ref().and_then(|e| event_json(e, form, tls_on, &mut open)) {
                    out.emit(&v);
                }
            }
            n = inbox.recv_many(&mut received, RECEIVE_BATCH) => {
                if n == 0 {
                    break;
                }
                // The connection's events were queued before its first message could be
                // delivered: print them first, so "connected" precedes "received".
                while let Ok(ev) = tap.try_recv() {
                    if let Some(v) = event_json(&ev, form, tls_on, &mut open) {
                        out.emit(&v);
                    }
                }
                {
                    let mut printed = out.lines();
                    for r in &received {
                        // An Empty message carries nothing: it is how a peer (our --peer
                        // among them) opens a connection, since Fabric's comm has no bare
                        // "connect".
                        let opener = r.message().nonce == 0
                            && matches!(r.message().content, Some(Content::Empty(_)));
                        if !opener {
                            let from = sender.of(r.sender(), form);
                            let mut len = Measure::default();
                            received_line(&mut len, r.message(), from, args.payload);
                            printed.line(len.0, |buf| {
                                received_line(buf, r.message(), from, args.payload);
                            });
                        }
                    }
                }
                if args.auto_ack {
                    for r in received.drain(..).filter(|r| r.message().nonce != 0) {
                        auto_ack(&acks, &shares, r);
                    }
                }
                received.clear();
            }
            line = lines.recv(), if stdin_open => match line {
                Some(Line::Text(l)) => {
                    if st.command(&l) == Next::Stop {
                        break;
                    }
                }
                Some(Line::Bad(e)) => out.command_error(e),
                None if args.exit_on_eof => break,
                None => {
                    // A daemon: keeps serving until told to stop.
                    stdin_open = false;
                    tracing::info!(
                        target: TARGET,
                        "end of stdin; running until SIGINT or SIGTERM (--exit-on-eof stops here)"
                    );
                }
            },
            name = signals.next() => {
                if name == "SIGHUP" {
                    st.reload_trust("SIGHUP");
                    continue;
                }
                tracing::info!(target: TARGET, "{name}, stopping");
                // A daemon asked to stop stops at once, as a Fabric peer does; what is
                // still queued is dropped and counted.
                flush_first = false;
                break;
            }
        }
    }
    health.stopping();
    // `stop` or the end of stdin (--exit-on-eof): the script's last sends go out first,
    // unless a signal asks for a stop at once meanwhile.
    if flush_first {
        tokio::select! {
            done = flush(&node, &st, &acks, flush_limit) => if !done {
                tracing::warn!(
                    target: TARGET,
                    "stopping with messages still unsent after {} s; they are dropped and counted",
                    flush_limit.as_secs()
                );
            },
            name = signals.next() => {
                tracing::info!(target: TARGET, "{name} while flushing, stopping at once");
            }
        }
    }
    // Messages whose PKI-ID is still being learnt: counted, not lost unseen. Before the
    // stop, which would fail their handshakes and count them as refused by the peer.
    let abandoned = st.lookups.abandon();
    if abandoned > 0 {
        tracing::warn!(
            target: TARGET,
            "{abandoned} messages dropped at stop: they waited for handshakes learning their \
             peers' PKI-IDs"
        );
    }
    node.stop().await;
    while let Ok(ev) = tap.try_recv() {
        if let Some(v) = event_json(&ev, form, tls_on, &mut open) {
            out.emit(&v);
        }
    }
    if let Some(events) = &mut member_events {
        // The stream ends once the stopped node's last events are taken.
        let rest = async {
            use tokio_stream::StreamExt;
            while let Some(ev) = events.next().await {
                out.emit(&membership::event_json(&ev, form));
            }
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN, rest).await;
    }
    let s = node.stats();
    let d = node.driver_stats();
    out.emit(&json!({"event": "stopped"}));
    tracing::info!(
        target: TARGET,
        "stopped; sent {}, dropped {} (by cause in stats and /metrics), received {}, \
         handshakes ok {} failed {}, presumed dead {}, events not printed {}, \
         output lines dropped {}",
        s.sent,
        s.dropped_overflow
            + s.dropped_on_close
            + s.dropped_no_connection
            + st.lookups.dropped().total(),
        s.received,
        s.handshakes_ok,
        s.handshake_failures_total(),
        s.presumed_dead + st.lookups.presumed_dead(),
        d.events_dropped,
        out.dropped(),
    );
    ExitCode::SUCCESS
}

/// How long a stop waits at most for the messages already given to be written: a message
/// may need a dial, a Ping and a handshake first, and under an MSP identity one to a peer
/// named by its endpoint alone needs two (the handshake that learns its PKI-ID, then the
/// connection's own).
fn flush_limit(core: &fabric_gossip_core::Config, form: PkiForm) -> Duration {
    let connection = core.dial_timeout + core.conn_timeout * 2;
    let connections = match form {
        PkiForm::Text => 1,
        PkiForm::Hex => 2,
    };
    FLUSH_LIMIT.max(connection * connections)
}

/// Waits, at most `limit`, until every command already read has its messages written or
/// dropped: first the commands' own tasks (a send whose PKI-ID is learnt by a handshake
/// first, a `send_with_ack` waiting for its ack, an `--auto-ack` ack waiting for room:
/// their permits all come back), then the node's queues ([`Node::flush`]). Whether it got
/// there.
async fn flush(node: &Node, st: &State, acks: &Semaphore, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let commands = async {
        let all = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        st.lookups.idle().await;
        let _pending = st.acks_pending.acquire_many(all(MAX_ACKS_PENDING)).await;
        let _acks = acks.acquire_many(all(MAX_ACKS_IN_FLIGHT)).await;
    };
    if tokio::time::timeout_at(deadline, commands).await.is_err() {
        return false;
    }
    node.flush(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
}

/// The next membership event; never ready without the layer.
pub(crate) async fn next_event(
    events: &mut Option<fabric_gossip_tonic::LayerEvents<DiscoveryEvent>>,
) -> Option<DiscoveryEvent> {
    use tokio_stream::StreamExt;
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stop waits for a connection's dial, Ping and handshake (Fabric's defaults: 3 s, and
    /// 2 s for each of the other two), and under an MSP identity for two: the handshake
    /// that learns a PKI-ID before the connection's own. Never less than five seconds.
    #[test]
    fn a_stop_waits_long_enough_for_the_connections_a_message_may_need() {
        let mut core = fabric_gossip_core::Config::default();
        assert_eq!(flush_limit(&core, PkiForm::Text), Duration::from_secs(7));
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(14));
        core.dial_timeout = Duration::from_millis(500);
        core.conn_timeout = Duration::from_millis(300);
        assert_eq!(flush_limit(&core, PkiForm::Text), FLUSH_LIMIT);
        core.dial_timeout = Duration::from_secs(2);
        core.conn_timeout = Duration::from_millis(250);
        assert_eq!(flush_limit(&core, PkiForm::Text), FLUSH_LIMIT);
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(5));
        core.conn_timeout = Duration::from_millis(500);
        assert_eq!(flush_limit(&core, PkiForm::Hex), Duration::from_secs(6));
    }
}
