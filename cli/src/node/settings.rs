//! `fabric-gossip node`'s flags ([`NodeArgs`], with the `--help` text of its lines and
//! commands) and the settings the node runs with: the flags over `CORE_…` variables over a
//! core.yaml, the operations service's TLS among them.

use crate::logging::TARGET;
use crate::membership::MembershipArgs;
use crate::opts::{self, ConfigError, IdentityArgs, TlsArgs};
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The MSP ID of Fabric's sample core.yaml (`peer.localMspId: SampleOrg`).
const SAMPLE_MSP_ID: &str = "SampleOrg";

/// Arguments of `fabric-gossip node`.
#[derive(Debug, Clone, Args)]
#[command(after_long_help = NODE_HELP)]
pub(crate) struct NodeArgs {
    /// Address of the gossip gRPC server. Port 0 binds a free port; the address actually
    /// bound is printed in the "listening" event (and is the endpoint, identity and PKI-ID
    /// under --test-identity, unless --endpoint names the endpoint, which they then are).
    /// (peer.listenAddress in --config.)
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_listen)]
    listen: Option<SocketAddr>,
    /// A Fabric peer's core.yaml: peer.listenAddress, peer.gossip.* (dialTimeout,
    /// connTimeout, sendBuffSize, recvBuffSize; bootstrap, endpoints and alive intervals are
    /// read and kept for the membership layer), peer.tls.*, peer.mspConfigPath,
    /// peer.localMspId, operations.listenAddress, metrics.provider. CORE_... variables
    /// override it (CORE_PEER_TLS_ENABLED=true), relative paths are relative to the file's
    /// directory, and flags override both (the TLS flags as a set). A directory means its
    /// core.yaml, as FABRIC_CFG_PATH names one; without --config neither FABRIC_CFG_PATH
    /// nor CORE_ variables are read (a warning names those set).
    #[arg(long, value_name = "CORE_YAML")]
    config: Option<std::path::PathBuf>,
    /// At start-up, send an Empty message to this peer, which opens a connection (dial,
    /// Ping, handshake). Repeatable. Its PKI-ID is ADDR under --test-identity; with an MSP
    /// identity it is learnt first with Fabric's Handshake. (A receiving fabric-gossip node
    /// does not print that Empty message.)
    #[arg(long, value_name = "ADDR", value_parser = opts::parse_endpoint)]
    pub(super) peer: Vec<String>,
    /// Acknowledge (with an empty error) every received message whose nonce is non-zero. A
    /// sender whose connection has no room may have 32 acks waiting; past that its acks are
    /// dropped and counted (dropped_overflow), so one peer that stops reading holds up no
    /// other.
    #[arg(long)]
    pub(super) auto_ack: bool,
    /// Stop at the end of stdin, as if {"cmd":"stop"} had been read. Without it a node is a
    /// daemon: it runs until the stop command, SIGINT or SIGTERM, whatever its stdin (a
    /// script's `&`, systemd, a container).
    #[arg(long)]
    pub(super) exit_on_eof: bool,
    /// Serve Fabric's operations endpoints over HTTP on this address (a Fabric peer's
    /// operations.listenAddress, usually :9443): /metrics (Prometheus), /healthz, /version,
    /// /logspec.
    /// Port 0 binds a free port, printed as "operations" in the "listening" event.
    #[arg(long, value_name = "HOST:PORT", value_parser = opts::parse_listen)]
    operations: Option<SocketAddr>,
    /// Serve the operations endpoints over TLS with this certificate (PEM; Fabric's
    /// operations.tls.cert.file).
    #[arg(long, value_name = "PEM_FILE", requires_all = ["operations_tls_key", "operations"])]
    operations_tls_cert: Option<std::path::PathBuf>,
    /// The private key of --operations-tls-cert.
    #[arg(long, value_name = "PEM_FILE", requires = "operations_tls_cert")]
    operations_tls_key: Option<std::path::PathBuf>,
    /// Require clients of the operations service to present a certificate from one of
    /// these CAs (PEM; Fabric's operations.tls.clientAuthRequired and clientRootCAs.files).
    /// Repeatable.
    #[arg(long, value_name = "PEM_FILE", requires = "operations_tls_cert")]
    operations_tls_client_ca: Vec<std::path::PathBuf>,
    /// With --operations-tls-client-ca: let clients without a certificate through TLS, so
    /// that /healthz and /version stay open to them (a health probe has none), while
    /// /metrics and /logspec still answer 401 unless the client presented a certificate
    /// the CAs verify (Fabric's operations.tls.clientAuthRequired: false with clientRootCAs).
    #[arg(long, requires = "operations_tls_client_ca")]
    operations_tls_client_cert_optional: bool,
    /// Run Fabric's membership layer (peer.gossip discovery: alive messages, membership
    /// requests, expiry) even without --bootstrap: the node then answers the requests of
    /// peers that bootstrap through it. Implied by every membership flag and by --config
    /// (a Fabric peer always runs it). With --channel-config it dials the blocks' anchor
    /// peers, at start and on every reload, as a Fabric peer does.
    #[arg(long)]
    membership: bool,
    #[command(flatten)]
    member: MembershipArgs,
    #[command(flatten)]
    limits: crate::limits::LimitArgs,
    /// How a received DataMessage's data is printed: `both` (`data_hex`, and `text` when the
    /// data is UTF-8), `hex` (`data_hex` only), `text` (`text` when UTF-8, else `data_hex`)
    /// or `none` (`len`, the data's size in bytes, only: a sink that counts messages
    /// prints about 150 bytes per message instead of three times the data).
    #[arg(long, value_enum, value_name = "FORM", default_value_t = PayloadForm::Both)]
    pub(super) payload: PayloadForm,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

/// How `received` lines show a DataMessage's data (`--payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PayloadForm {
    /// `data_hex`, and `text` when the data is UTF-8 (the output of earlier versions).
    Both,
    /// `data_hex` only.
    Hex,
    /// `text` when the data is UTF-8, `data_hex` otherwise.
    Text,
    /// `len` (bytes) only.
    None,
}

const NODE_HELP: &str = "\
OUTPUT (stdout, one JSON object per line; PKI = the PKI-ID as text under --test-identity, as hex
with an MSP identity):
  {\"event\":\"listening\",\"addr\":ADDR,\"pki_id\":PKI}           first line (and \"operations\":ADDR
                                                           with --operations; with an MSP
                                                           identity \"msp_id\":ID and \"trust\":
                                                           {MSPID:{\"roots\":N,\"intermediates\":N,
                                                           \"crls\":N,\"revoked\":N}}, and
                                                           \"certificates_expire_unix_ms\":
                                                           {\"enrollment\":MS,\"server_tls\":MS,
                                                           \"client_tls\":MS})
  {\"event\":\"connected\",\"peer\":PKI,\"conn\":C,\"inbound\":BOOL,\"endpoint\":E}
                                                           after a handshake (with an MSP
                                                           identity also \"msp_id\":ID); C is
                                                           the connection's handle
  {\"event\":\"disconnected\",\"peer\":PKI,\"conn\":C,\"reason\":TEXT,\"connections_left\":N}
                                                           N > 0: another connection to the
                                                           peer remains (crossing dials)
  {\"event\":\"handshake_failed\",\"remote\":ADDR,\"error\":TEXT,\"inbound\":BOOL}
                                                           (and \"hint\" for a dial of ours)
  {\"event\":\"presumed_dead\",\"peer\":PKI,\"endpoint\":E,\"reason\":TEXT}
                                                           a send could not get a connection
                                                           (PKI: the endpoint when the PKI-ID
                                                           was never learnt)
  {\"event\":\"identity_switch\",\"peer\":PKI,\"new_peer\":PKI,\"endpoint\":E}
                                                           a peer came back with another
                                                           certificate (a renewal): its old
                                                           identity (peer) is dropped
  {\"event\":\"received\",\"from\":PKI,\"nonce\":N,\"content\":NAME,\"data_hex\":HEX,\"seq\":N}
                                                           (and \"text\" when the data is UTF-8,
                                                           \"channel\" and \"tag\" unless empty;
                                                           --payload hex: no \"text\"; --payload
                                                           text: \"text\", or \"data_hex\" when
                                                           not UTF-8; --payload none: \"len\"
                                                           instead of both;
                                                           Empty messages with nonce 0, which
                                                           only open connections, are not shown)
  {\"event\":\"ack_result\",\"peer\":PKI,\"seq\":N,\"ok\":BOOL,\"error\":TEXT}
  {\"event\":\"command_error\",\"error\":TEXT}                   a stdin line that could not be run
  {\"event\":\"sent\",\"seq\":N,\"to\":[PKI...]}                   a plain line was queued for
                                                           these peers (one that cannot be
                                                           written is dropped and counted):
                                                           the connected ones, and each
                                                           --peer not connected whose
                                                           PKI-ID is known, behind its
                                                           dial;
                                                           read while no peer is connected,
                                                           or while lines wait for a --peer's
                                                           PKI-ID, it goes to the --peer
                                                           endpoints, queued behind their
                                                           dials, and \"to\" names them
  {\"event\":\"stats\",...}                                    the counters ({\"cmd\":\"stats\"})
  {\"event\":\"members\",...}                                  the membership table
                                                           ({\"cmd\":\"members\"})
  {\"event\":\"trust_reloaded\",\"by\":BY,...}, {\"event\":\"trust_reload_failed\",\"by\":BY,...}
                                                           see reload_trust under COMMANDS
  {\"event\":\"probed\",\"peer\":PKI,\"endpoint\":E}               a peer ran Fabric's Handshake on us
  {\"event\":\"identity_purged\",\"peer\":PKI,\"reason\":R}          comm let go of a peer's identity:
                                                           \"identity_unused\" (nothing used it
                                                           for an hour, as Fabric's identity
                                                           mapper) or \"identity_expired\"
  {\"event\":\"output_dropped\",\"lines\":N}                     N lines were dropped because stdout
                                                           was not read fast enough
  {\"event\":\"stopped\"}                                      last line
MEMBERSHIP (with --bootstrap, --membership, any membership flag, or --config):
  {\"event\":\"member_alive\",\"pki_id\":PKI,\"msp_id\":ID,\"endpoint\":ADDR,\"internal_endpoint\":ADDR,
   \"inc\":N,\"seq\":N,\"last_alive_ms_ago\":N,\"alive\":true,\"resurrected\":BOOL,
   \"identity_expires_unix_ms\":N|null}                 (its certificate's NotAfter)
  {\"event\":\"member_dead\",...,\"reason\":\"expired\"|\"presumed_dead\"|\"reported\"}
  {\"event\":\"member_purged\",...,\"reason\":\"long_dead\"|\"identity_switch\"|\"identity_expired\"|\"identity_refused\"|\"evicted\"}
  {\"event\":\"bootstrap_joined\",\"endpoint\":ADDR,\"pki_id\":PKI}
  {\"event\":\"bootstrap_failed\",\"endpoint\":ADDR,\"error\":TEXT,\"attempt\":N,\"gave_up\":BOOL}
                                                           (the error carries the peer's own
                                                           reason when it refused us)
  {\"event\":\"membership\",\"alive\":N,\"dead\":N,\"members\":[MEMBER...]}   after changes (at
                                                           most twice a second, and after a
                                                           table of B bytes not before
                                                           B / 256 KiB/s: a 2.6 MB table of
                                                           10,000 members at most every ~10 s;
                                                           changes meanwhile come out in the
                                                           next one, so the last state always
                                                           does; {\"cmd\":\"members\"} prints it
                                                           at once; \"stats\" counts the lines,
                                                           their bytes and those delayed)

COMMANDS (stdin, one per line):
  {\"cmd\":\"send\",\"to\":ADDR,\"pki_id\":PKI,\"data\":TEXT,\"seq\":N}      optional \"nonce\":N,
                        \"channel\":NAME, \"tag\":NAME (CHAN_AND_ORG when a channel is given,
                        else EMPTY); \"seq\" may be left out (the node numbers it)
                        (\"pki_id\" may be left out: the endpoint under --test-identity;
                        with an MSP identity the peer is authenticated first to learn it,
                        one handshake for all the sends to that ADDR meanwhile, which
                        keep their order; if it fails they are dropped and counted,
                        dropped_unauthenticated in \"stats\", and those still waiting at a
                        stop as dropped_awaiting_pki; the PKI-ID learnt is kept for ADDR
                        until the peer is presumed dead or switches identity; a send
                        naming \"pki_id\" goes behind those still waiting for that ADDR)
  {\"cmd\":\"send_with_ack\",\"to\":ADDR,\"pki_id\":PKI,\"data\":TEXT,\"seq\":N,\"timeout_ms\":N}
                        (\"pki_id\" as for send; they wait in line with the sends, and a
                        failed handshake is its ack_result)
  {\"cmd\":\"stats\"}     print the node's counters as a \"stats\" event
  {\"cmd\":\"reload_trust\"}   read --trust and --msp-dir again (CRLs in their crls/ included),
                     then close the connections of peers now refused; so does SIGHUP.
                     Prints {\"event\":\"trust_reloaded\",\"by\":BY,\"trust\":{...},\"refused\":N}
                     or {\"event\":\"trust_reload_failed\",\"by\":BY,\"error\":TEXT} (the store
                     is kept); BY: \"command\" or \"SIGHUP\"
  {\"cmd\":\"members\"}   print the membership table as a \"members\" event (same shape as
                     \"membership\")
  {\"cmd\":\"stop\"}      stop and exit 0, once the messages already queued are written
                     (at most 7 s with the default timeouts); so does the end of
                     stdin with --exit-on-eof.
                     SIGINT and SIGTERM stop at once (queued messages are dropped,
                     counted)
  any other line        sent as a DataMessage to every connected peer (while none is, to
                        the --peer endpoints, once their dials are done)

EXAMPLE (two terminals):
  fabric-gossip node --listen 127.0.0.1:7051 --test-identity
  fabric-gossip node --listen 127.0.0.1:7052 --test-identity --peer 127.0.0.1:7051
  then type a line in either.

MEMBERSHIP EXAMPLE (a member of Org1MSP joining through a Fabric peer of Org1MSP):
  fabric-gossip node --listen 127.0.0.1:7061 --msp-dir peer1/msp --msp-id Org1MSP \\
      --bootstrap 127.0.0.1:7051 [--external-endpoint peer1.org1.example.com:7061]";

/// The node's settings: flags over `CORE_…` variables over the core.yaml.
pub(super) struct Settings {
    pub(super) listen: SocketAddr,
    pub(super) identity: IdentityArgs,
    pub(super) tls: TlsArgs,
    pub(super) operations: Option<SocketAddr>,
    /// TLS for the operations service.
    pub(super) operations_tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `/metrics` served on the operations service.
    pub(super) metrics: bool,
    pub(super) core: fabric_gossip_core::Config,
    /// The driver's limits: the flags over the file's keepalive over the defaults.
    pub(super) limits: fabric_gossip_tonic::DriverLimits,
    /// The membership layer's settings, when it runs.
    pub(super) membership: Option<MembershipArgs>,
}

/// `--config`'s file: the path given, or `core.yaml` in it when it is a directory, as a
/// Fabric peer reads `core.yaml` from the directory `FABRIC_CFG_PATH` names.
fn core_yaml(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("core.yaml")
    } else {
        path.to_owned()
    }
}

/// Without `--config`, what of a Fabric peer's environment is set and not read: a Fabric
/// container passes `FABRIC_CFG_PATH` and `CORE_` variables and no flag, and the node would
/// otherwise ignore them without a word. `env`: the process's variables, name and value.
/// `None` when none is set.
fn unread_environment(env: &[(String, String)]) -> Option<String> {
    let mut vars: Vec<&str> = env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|n| n.starts_with("CORE_"))
        .collect();
    vars.sort_unstable();
    let more = vars.len().saturating_sub(3);
    let mut vars = vars[..vars.len().min(3)].join(", ");
    if more > 0 {
        vars.push_str(&format!(" and {more} more"));
    }
    let cfg_path = env
        .iter()
        .find(|(name, value)| name == "FABRIC_CFG_PATH" && !value.is_empty());
    match cfg_path.map(|(_, p)| p) {
        Some(p) if vars.is_empty() => Some(format!(
            "FABRIC_CFG_PATH ({p}) is read only with --config: pass --config {p} to read its \
             core.yaml"
        )),
        Some(p) => Some(format!(
            "FABRIC_CFG_PATH ({p}) and CORE_ variables ({vars}) are read only with --config: \
             pass --config {p} to read its core.yaml"
        )),
        None if vars.is_empty() => None,
        None => Some(format!(
            "CORE_ variables ({vars}) are read only with --config (a core.yaml, or its \
             directory): ignored"
        )),
    }
}

pub(super) fn settings(args: &NodeArgs) -> Result<Settings, ConfigError> {
    let mut unread = None;
    let file = match &args.config {
        Some(p) => Some(crate::config::load(&core_yaml(p))?),
        None => {
            let env: Vec<(String, String)> = std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into())))
                .collect();
            unread = unread_environment(&env);
            None
        }
    };
    let listen = match (
        args.listen,
        file.as_ref().and_then(|f| f.listen_address.as_ref()),
    ) {
        (Some(l), _) => l,
        (None, Some(l)) => opts::parse_listen(l).map_err(|e| {
            let key = file.as_ref().map(|f| f.named("peer.listenAddress"));
            ConfigError(format!("{} {l:?}: {e}", key.unwrap_or_default()))
        })?,
        (None, None) => {
            let why = unread.map(|u| format!(" ({u})")).unwrap_or_default();
            return Err(ConfigError(format!(
                "--listen HOST:PORT is required (or peer.listenAddress in --config){why}"
            )));
        }
    };
    // The node starts all the same: say what it leaves unread.
    if let Some(text) = &unread {
        tracing::warn!(target: TARGET, "{text}");
    }
    let operations = match (
        args.operations,
        file.as_ref()
            .and_then(|f| f.operations.listen_address.as_ref()),
    ) {
        (Some(a), _) => Some(a),
        (None, Some(a)) => Some(opts::parse_listen(a).map_err(|e| {
            let key = file.as_ref().map(|f| f.named("operations.listenAddress"));
            ConfigError(format!("{} {a:?}: {e}", key.unwrap_or_default()))
        })?),
        (None, None) => None,
    };
    // The operations service on the gossip port fails to bind, and that failure had named
    // --listen alone ("Address already in use"): say which two settings clash.
    if let Some(o) = operations
        && o.port() != 0
        && o.port() == listen.port()
        && (o.ip() == listen.ip() || o.ip().is_unspecified() || listen.ip().is_unspecified())
    {
        // As the other errors name a setting: the flag, or the key and where it came from.
        let name = |flag: &str, given: bool, key: &str| match (given, &file) {
            (false, Some(f)) => f.named(key),
            _ => flag.to_owned(),
        };
        return Err(ConfigError(format!(
            "{} {o}: the port of {} {listen} too; the operations service needs a port of \
             its own (a Fabric peer's operations.listenAddress, usually :9443)",
            name(
                "--operations",
                args.operations.is_some(),
                "operations.listenAddress"
            ),
            name("--listen", args.listen.is_some(), "peer.listenAddress"),
        )));
    }
    let operations_tls = operations_tls(args, file.as_ref())?;
    let mut identity = args.identity.clone();
    let mut tls = args.tls.clone();
    let mut core = opts::config();
    let mut metrics = true;
    let mut member = args.member.clone();
    if let Some(f) = &file {
        metrics = f.metrics_provider == crate::config::MetricsProvider::Prometheus;
        if !identity.test_identity && identity.msp_dir.is_none() {
            identity.msp_dir.clone_from(&f.msp_config_path);
            identity.msp_id.clone_from(&f.local_msp_id);
            if identity.msp_dir.is_some() != identity.msp_id.is_some() {
                return Err(ConfigError(
                    "peer.mspConfigPath and peer.localMspId go together".into(),
                ));
            }
            // Fabric's sample core.yaml claims the sample MSP: a node started from it as
            // is claims an organization no real network has, and its peers refuse it or
            // place it wrong (an operator's trial started one without a word).
            if identity.msp_id.as_deref() == Some(SAMPLE_MSP_ID) {
                tracing::warn!(
                    target: TARGET,
                    "{} is {SAMPLE_MSP_ID}, the MSP ID of Fabric's sample core.yaml: the node \
                     claims that organization, which peers of a real network do not know; \
                     set it to this identity's organization (CORE_PEER_LOCALMSPID, as the \
                     peer's own is, or --msp-id)",
                    f.named("peer.localMspId")
                );
            }
            // Checked here, where it is known to be used, so that the error names the key
            // and where it came from rather than the flag it stands for.
            if let Some(dir) = identity.msp_dir.as_ref().filter(|d| !d.is_dir()) {
                return Err(ConfigError(format!(
                    "{}: {}: {} (expected an MSP folder with signcerts/ and keystore/)",
                    f.named("peer.mspConfigPath"),
                    dir.display(),
                    crate::opts::not_a_dir(dir)
                )));
            }
        }
        if tls.tls_cert.is_none() && f.tls.enabled {
            let t = &f.tls;
            // Named with where each was set, as the file's other errors are.
            let (Some(cert), Some(key)) = (&t.cert, &t.key) else {
                let missing = if t.cert.is_none() {
                    "peer.tls.cert.file"
                } else {
                    "peer.tls.key.file"
                };
                return Err(ConfigError(format!(
                    "{} needs peer.tls.cert.file and peer.tls.key.file; {missing} is not set",
                    f.named("peer.tls.enabled")
                )));
            };
            if t.client_cert.is_some() != t.client_key.is_some() {
                let (set, unset) = if t.client_cert.is_some() {
                    ("peer.tls.clientCert.file", "peer.tls.clientKey.file")
                } else {
                    ("peer.tls.clientKey.file", "peer.tls.clientCert.file")
                };
                return Err(ConfigError(format!(
                    "{} and {unset} go together; {unset} is not set",
                    f.named(set)
                )));
            }
            // rootcert is optional, as for a peer, whose channels bring the TLS CAs: with
            // none here, --channel-config's (or clientRootCAs) must give some.
            let mut cas: Vec<_> = t.rootcert.iter().cloned().collect();
            for ca in &t.client_root_cas {
                // A Fabric peer opens clientRootCAs only with clientAuthRequired (the
                // test network's peers list a tls/ca.crt they do not have); so a file
                // that is not there is left out with a warning rather than fatal.
                if !t.client_auth_required && !ca.exists() {
                    tracing::warn!(
                        target: TARGET,
                        "{}: {} does not exist; left out (a Fabric peer reads it only with \
                         peer.tls.clientAuthRequired)",
                        f.named("peer.tls.clientRootCAs.files"),
                        ca.display()
                    );
                    continue;
                }
                cas.push(ca.clone());
            }
            tls = TlsArgs {
                tls_cert: Some(cert.clone()),
                tls_key: Some(key.clone()),
                // Servers and clients alike are verified against the peer's own TLS root,
                // every client root and the channels' TLS CAs (`--channel-config`): the
                // set a Fabric peer with clientAuthRequired checks clients against
                // (core/peer: rootcert, clientRootCAs and each channel's TLS roots). Its
                // clients' roots only, as before, turned away the peers of other
                // organizations dialling this node, and those of its own whenever the
                // file listed other organizations' CAs there.
                tls_ca: cas,
                tls_server_name: args.tls.tls_server_name.clone(),
                tls_client_cert: t.client_cert.clone(),
                tls_client_key: t.client_key.clone(),
                tls_client_ca: Vec::new(),
                require_client_certificate: t.client_auth_required,
                from_config: Some(f.tls_names()),
            };
        }
        let g = &f.gossip;
        core.dial_timeout = g.dial_timeout.unwrap_or(core.dial_timeout);
        core.conn_timeout = g.conn_timeout.unwrap_or(core.conn_timeout);
        core.send_buffer_size = g.send_buff_size.unwrap_or(core.send_buffer_size);
        core.recv_buffer_size = g.recv_buff_size.unwrap_or(core.recv_buffer_size);
        core.max_message_size = f.max_message_size();
        member.merge_file(g);
        // A peer advertises its peer.address when no gossip endpoint is set; with
        // --listen this node is not the peer the file describes, and keeps its own.
        if member.endpoint.is_none() && args.listen.is_none() {
            member.endpoint = f.advertised_peer_address()?;
        }
        tracing::info!(
            target: TARGET,
            "configuration from {} (bootstrap {:?})",
            f.path.display(),
            member.bootstrap
        );
    }
    // A Fabric peer always runs its membership layer; so does a node run from its
    // core.yaml. From flags it is asked for.
    let membership = (args.membership || file.is_some() || member.any()).then_some(member);
    // A message limit the file raised must fit the incomplete-message budget, or such a
    // message, spread over frames, never completes (`--max-incomplete-mib` still rules).
    let mut limits = fabric_gossip_tonic::DriverLimits::default().fitting(core.max_message_size);
    if let Some((interval, timeout)) = file.as_ref().map(|f| f.keepalive) {
        limits.keepalive_interval = interval.unwrap_or(limits.keepalive_interval);
        limits.keepalive_timeout = timeout.unwrap_or(limits.keepalive_timeout);
    }
    Ok(Settings {
        listen,
        identity,
        tls,
        operations,
        operations_tls,
        metrics,
        core,
        limits: args.limits.limits_over(limits),
        membership,
    })
}

/// The operations service's TLS from the flags, else from `operations.tls.*`.
fn operations_tls(
    args: &NodeArgs,
    file: Option<&crate::config::PeerConfig>,
) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>, ConfigError> {
    // Each file with the flag or key that named it, for errors.
    // Whether TLS itself refuses a client without a certificate; either way a certificate
    // that is presented must chain to the client CAs.
    let (cert, key, client_cas, client_cert_required) = if let (Some(c), Some(k)) =
        (&args.operations_tls_cert, &args.operations_tls_key)
    {
        (
            ("--operations-tls-cert", c),
            ("--operations-tls-key", k),
            (
                "--operations-tls-client-ca",
                &args.operations_tls_client_ca[..],
            ),
            !args.operations_tls_client_ca.is_empty() && !args.operations_tls_client_cert_optional,
        )
    } else if let Some(t) = file.map(|f| &f.operations.tls).filter(|t| t.enabled) {
        let (Some(c), Some(k)) = (&t.cert, &t.key) else {
            return Err(ConfigError(
                "operations.tls.enabled needs operations.tls.cert.file and \
                 operations.tls.key.file"
                    .into(),
            ));
        };
        if t.client_auth_required && t.client_root_cas.is_empty() {
            return Err(ConfigError(
                "operations.tls.clientAuthRequired needs operations.tls.clientRootCAs.files".into(),
            ));
        }
        // Read whether or not they are required, as Fabric reads them: without
        // clientAuthRequired a certificate is verified if given, and only a verified one
        // opens /metrics and /logspec.
        (
            ("operations.tls.cert.file", c),
            ("operations.tls.key.file", k),
            ("operations.tls.clientRootCAs.files", &t.client_root_cas[..]),
            t.client_auth_required,
        )
    } else {
        return Ok(None);
    };
    if client_cas.1.is_empty() {
        tracing::warn!(
            target: TARGET,
            "operations service over TLS without client CAs ({}): /metrics and /logspec \
             answer 401 to every client, as a Fabric peer's do; /healthz and /version are open",
            client_cas.0
        );
    }
    let mut client_ca_pem = Vec::new();
    for ca in client_cas.1 {
        client_ca_pem.extend(opts::read(client_cas.0, ca)?);
        client_ca_pem.push(b'\n');
    }
    let ops = crate::ops::OpsTls {
        cert_pem: opts::read(cert.0, cert.1)?,
        key_pem: opts::read(key.0, key.1)?,
        client_ca_pem,
        client_cert_required,
    };
    ops.server_config()
        .map(Some)
        .map_err(|e| ConfigError(format!("operations service TLS: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `settings` for `fabric-gossip node` run with `flags`.
    fn settings_of(flags: &[&str]) -> Result<Settings, String> {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            node: NodeArgs,
        }
        let args = T::try_parse_from(std::iter::once("node").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .node;
        settings(&args).map_err(|ConfigError(e)| e)
    }

    /// A core.yaml in a directory of its own (`msp/` there is a folder), holding `yaml`; the
    /// directory and the file's path.
    fn core_yaml(yaml: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("msp")).expect("msp/");
        std::fs::write(dir.path().join("present.crt"), "").expect("present.crt");
        let core = dir.path().join("core.yaml");
        std::fs::write(&core, yaml).expect("write core.yaml");
        let core = core.to_str().expect("UTF-8").to_owned();
        (dir, core)
    }

    /// The file's MSP is the node's unless a flag chose an identity (the test identity or
    /// another MSP folder); its two keys go together, and its folder must be one.
    #[test]
    fn the_core_yaml_s_msp_is_taken_unless_the_flags_choose_an_identity() {
        let yaml = "peer:\n  listenAddress: 127.0.0.1:0\n  mspConfigPath: msp\n  \
                    localMspId: Org1MSP\n";
        let (dir, core) = core_yaml(yaml);
        let from_file = settings_of(&["--config", &core]).expect("settings");
        assert_eq!(from_file.identity.msp_dir, Some(dir.path().join("msp")));
        assert_eq!(from_file.identity.msp_id.as_deref(), Some("Org1MSP"));
        let test = settings_of(&["--config", &core, "--test-identity"]).expect("settings");
        assert!(test.identity.test_identity);
        assert_eq!((test.identity.msp_dir, test.identity.msp_id), (None, None));
        let other = dir.path().join("other");
        let other_s = other.to_str().expect("UTF-8");
        let flags = [
            "--config",
            &core,
            "--msp-dir",
            other_s,
            "--msp-id",
            "Org2MSP",
        ];
        let flagged = settings_of(&flags).expect("settings");
        assert_eq!(flagged.identity.msp_dir, Some(other));
        assert_eq!(flagged.identity.msp_id.as_deref(), Some("Org2MSP"));

        let (_dir, lone) = core_yaml("peer:\n  listenAddress: 127.0.0.1:0\n  mspConfigPath: msp\n");
        let e = settings_of(&["--config", &lone]).err().expect("refused");
        assert!(e.contains("go together"), "{e}");
        let (_dir, file) =
            core_yaml(&yaml.replace("mspConfigPath: msp", "mspConfigPath: core.yaml"));
        let e = settings_of(&["--config", &file]).err().expect("refused");
        assert!(e.contains("core.yaml: not a directory"), "{e}");
    }

    /// The file's peer TLS is taken only when enabled and no TLS flag is given; a client
    /// root that is not there is left out unless clientAuthRequired, when the node's start
    /// reads it (and fails, naming it); a client certificate needs its key.
    #[test]
    fn the_core_yaml_s_tls_is_taken_when_enabled_with_the_client_roots_that_exist() {
        let yaml = |enabled: bool, required: bool, client: &str| {
            format!(
                "peer:\n  listenAddress: 127.0.0.1:0\n  tls:\n    enabled: {enabled}\n    \
                 clientAuthRequired: {required}\n    cert:\n      file: server.crt\n    \
                 key:\n      file: server.key\n    clientRootCAs:\n      files:\n        \
                 - present.crt\n        - absent.crt\n{client}"
            )
        };
        let (_dir, off) = core_yaml(&yaml(false, false, ""));
        let tls = settings_of(&["--config", &off, "--test-identity"])
            .expect("settings")
            .tls;
        assert_eq!(tls.tls_cert, None);
        assert!(tls.from_config.is_none());

        let (dir, on) = core_yaml(&yaml(true, false, ""));
        let tls = settings_of(&["--config", &on, "--test-identity"])
            .expect("settings")
            .tls;
        assert_eq!(tls.tls_cert, Some(dir.path().join("server.crt")));
        assert_eq!(tls.tls_ca, [dir.path().join("present.crt")]);
        assert!(tls.from_config.is_some() && !tls.require_client_certificate);
        // Its files are read when the node starts, and an error names the key and the file
        // that set it, as the file's other errors do (it had named the key alone).
        let Err(ConfigError(e)) = tls.load(b"") else {
            panic!("server.crt is not there")
        };
        assert!(
            e.starts_with(&format!("peer.tls.cert.file (from --config {on}) ")),
            "{e}"
        );

        let (dir, required) = core_yaml(&yaml(true, true, ""));
        let tls = settings_of(&["--config", &required, "--test-identity"])
            .expect("settings")
            .tls;
        assert_eq!(
            tls.tls_ca,
            [
                dir.path().join("present.crt"),
                dir.path().join("absent.crt")
            ]
        );
        assert!(tls.require_client_certificate);

        let (_dir, half) = core_yaml(&yaml(true, false, "    clientCert:\n      file: c.crt\n"));
        let e = settings_of(&["--config", &half, "--test-identity"])
            .err()
            .expect("refused");
        assert_eq!(
            e,
            format!(
                "peer.tls.clientCert.file (from --config {half}) and peer.tls.clientKey.file \
                 go together; peer.tls.clientKey.file is not set"
            )
        );
        let (_dir, keyless) =
            core_yaml(&yaml(true, false, "").replace("    key:\n      file: server.key\n", ""));
        let e = settings_of(&["--config", &keyless, "--test-identity"])
            .err()
            .expect("refused");
        assert_eq!(
            e,
            format!(
                "peer.tls.enabled (from --config {keyless}) needs peer.tls.cert.file and \
                 peer.tls.key.file; peer.tls.key.file is not set"
            )
        );
    }

    /// A peer's `peer.maxRecvMsgSize` above 100 MiB raises the core's message limit, and the
    /// incomplete-message budget with it so that such a message can complete; the flag
    /// `--max-incomplete-mib` still sets the budget.
    #[test]
    fn the_core_yaml_s_message_size_raises_the_limit_and_the_budget() {
        let yaml = "peer:\n  listenAddress: 127.0.0.1:0\n  maxRecvMsgSize: 209715200\n";
        let (_dir, core) = core_yaml(yaml);
        let s = settings_of(&["--config", &core, "--test-identity"]).expect("settings");
        assert_eq!(s.core.max_message_size, 209_715_200);
        assert!(
            s.limits.max_incomplete_bytes > 209_715_200,
            "{:?}",
            s.limits
        );
        let flags = [
            "--config",
            &core,
            "--test-identity",
            "--max-incomplete-mib",
            "64",
        ];
        let s = settings_of(&flags).expect("settings");
        assert_eq!(s.limits.max_incomplete_bytes, 64 << 20);
        let s = settings_of(&["--listen", "127.0.0.1:0", "--test-identity"]).expect("settings");
        assert_eq!(s.core.max_message_size, 104_857_600);
    }

    /// `metrics.provider: prometheus` serves /metrics; any other provider does not; without a
    /// file it is served.
    #[test]
    fn metrics_are_served_as_the_core_yaml_s_provider_says() {
        let metrics = |provider: &str| {
            let yaml =
                format!("peer:\n  listenAddress: 127.0.0.1:0\nmetrics:\n  provider: {provider}\n");
            let (_dir, core) = core_yaml(&yaml);
            settings_of(&["--config", &core, "--test-identity"])
                .expect("settings")
                .metrics
        };
        assert!(metrics("prometheus"));
        assert!(!metrics("disabled"));
        let flags = ["--listen", "127.0.0.1:0", "--test-identity"];
        assert!(settings_of(&flags).expect("settings").metrics);
    }

    /// The membership layer runs when asked, from a core.yaml, or with any of its flags, and
    /// not otherwise; it advertises the file's peer.address only when the file's
    /// listenAddress is what the node binds (no --listen) and no --endpoint is given.
    #[test]
    fn membership_runs_when_asked_and_advertises_the_file_s_address_as_its_peer() {
        let member = |flags: &[&str]| settings_of(flags).expect("settings").membership;
        let plain = ["--listen", "127.0.0.1:0", "--test-identity"];
        assert!(member(&plain).is_none());
        assert!(member(&[&plain[..], &["--membership"]].concat()).is_some());
        let bootstrap = member(&[&plain[..], &["--bootstrap", "127.0.0.1:7051"]].concat());
        assert_eq!(bootstrap.expect("on").bootstrap, ["127.0.0.1:7051"]);

        let (_dir, core) =
            core_yaml("peer:\n  listenAddress: 127.0.0.1:0\n  address: 10.0.0.5:7051\n");
        let file = ["--config", &core, "--test-identity"];
        let endpoint = |flags: &[&str]| member(flags).expect("on").endpoint;
        assert_eq!(endpoint(&file).as_deref(), Some("10.0.0.5:7051"));
        let listen = [&file[..], &["--listen", "127.0.0.1:0"]].concat();
        assert_eq!(endpoint(&listen), None);
        let own = [&file[..], &["--endpoint", "10.0.0.6:7051"]].concat();
        assert_eq!(endpoint(&own).as_deref(), Some("10.0.0.6:7051"));
    }

    /// The operations service is served over TLS from the flags, else from the file's
    /// `operations.tls.*` when enabled; there, client CAs are optional unless
    /// clientAuthRequired.
    #[test]
    fn the_operations_service_s_tls_comes_from_the_flags_or_the_core_yaml() {
        let tls = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../msp/tests/fixtures/channel/peers/peer0.org1.example.com/tls"
        );
        let (cert, key) = (format!("{tls}/server.crt"), format!("{tls}/server.key"));
        let plain = ["--listen", "127.0.0.1:0", "--test-identity"];
        let ops = [&plain[..], &["--operations", "127.0.0.1:0"]].concat();
        assert!(
            settings_of(&ops)
                .expect("settings")
                .operations_tls
                .is_none()
        );
        let flags = [
            &ops[..],
            &["--operations-tls-cert", &cert, "--operations-tls-key", &key],
        ];
        assert!(
            settings_of(&flags.concat())
                .expect("settings")
                .operations_tls
                .is_some()
        );

        let yaml = |required: bool| {
            format!(
                "peer:\n  listenAddress: 127.0.0.1:0\noperations:\n  listenAddress: 127.0.0.1:0\n  \
                 tls:\n    enabled: true\n    clientAuthRequired: {required}\n    cert:\n      \
                 file: {cert}\n    key:\n      file: {key}\n"
            )
        };
        let (_dir, open) = core_yaml(&yaml(false));
        let set = settings_of(&["--config", &open, "--test-identity"]).expect("settings");
        assert!(set.operations.is_some() && set.operations_tls.is_some());
        let (_dir, required) = core_yaml(&yaml(true));
        let e = settings_of(&["--config", &required, "--test-identity"])
            .err()
            .expect("refused");
        assert!(e.contains("clientAuthRequired needs"), "{e}");
    }

    /// An operator's trial: a Fabric container's environment (`FABRIC_CFG_PATH`, `CORE_`
    /// variables, no flag) was ignored without a word. Without --config what is set is
    /// named, up to three variables, and how to have it read.
    #[test]
    fn a_fabric_peers_environment_unread_without_config_is_named() {
        let env = |vars: &[(&str, &str)]| -> Vec<(String, String)> {
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let path = ("PATH", "/bin");
        assert_eq!(unread_environment(&env(&[path])), None);
        let names = [
            ("CORE_PEER_ID", "p"),
            path,
            ("CORE_B", "b"),
            ("CORE_A", "a"),
            ("CORE_PEER_X", "x"),
        ];
        assert_eq!(
            unread_environment(&env(&names[..3])).as_deref(),
            Some(
                "CORE_ variables (CORE_B, CORE_PEER_ID) are read only with --config (a \
                 core.yaml, or its directory): ignored"
            )
        );
        let all = unread_environment(&env(&names)).unwrap();
        assert!(
            all.contains("(CORE_A, CORE_B, CORE_PEER_ID and 1 more)"),
            "{all}"
        );
        let cfg = ("FABRIC_CFG_PATH", "/etc/hyperledger/fabric");
        assert_eq!(
            unread_environment(&env(&[path, cfg])).as_deref(),
            Some(
                "FABRIC_CFG_PATH (/etc/hyperledger/fabric) is read only with --config: pass \
                 --config /etc/hyperledger/fabric to read its core.yaml"
            )
        );
        let mut with_cfg = names.to_vec();
        with_cfg.push(cfg);
        let both = unread_environment(&env(&with_cfg)).unwrap();
        assert!(
            both.starts_with("FABRIC_CFG_PATH (/etc/hyperledger/fabric) and CORE_"),
            "{both}"
        );
        assert_eq!(
            unread_environment(&env(&[path, ("FABRIC_CFG_PATH", "")])),
            None
        );
    }

    /// `--config` takes a directory as `FABRIC_CFG_PATH` names one: its `core.yaml`.
    #[test]
    fn a_config_directory_means_its_core_yaml() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(super::core_yaml(dir.path()), dir.path().join("core.yaml"));
        let file = dir.path().join("peer.yaml");
        std::fs::write(&file, "").expect("write");
        assert_eq!(super::core_yaml(&file), file);
    }
}
