//! A Fabric peer's `core.yaml`, read the way the peer reads it: the keys this node uses,
//! each overridable by its `CORE_…` environment variable (`peer.gossip.bootstrap` ←
//! `CORE_PEER_GOSSIP_BOOTSTRAP`), key names matched without regard to case (viper's rule),
//! relative paths taken relative to the directory of the file (Fabric's `TranslatePath`),
//! every other key ignored. A value of the wrong kind is an error naming its key and where
//! it came from: the variable, or the file. Command-line flags override all of it; that merge is
//! done by `node`.

use crate::opts::ConfigError;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

/// `peer.gossip.*`. Only the timeouts and buffer sizes act today; the rest is kept for
/// the membership layer (bootstrap peers, alive messages, reconnection).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct GossipConfig {
    /// `endpoint`: the address peers of this organization reach this node at.
    pub(crate) endpoint: Option<String>,
    /// `externalEndpoint`: the address other organizations reach it at.
    pub(crate) external_endpoint: Option<String>,
    /// `bootstrap`: peers to learn membership from at start.
    pub(crate) bootstrap: Vec<String>,
    /// Where `bootstrap` came from (the key and the file or variable), for messages about
    /// its values.
    pub(crate) bootstrap_from: String,
    /// `dialTimeout`: bound on opening a connection.
    pub(crate) dial_timeout: Option<Duration>,
    /// `connTimeout`: bound on the Ping and each handshake step.
    pub(crate) conn_timeout: Option<Duration>,
    /// `recvBuffSize`: received messages buffered per subscription.
    pub(crate) recv_buff_size: Option<usize>,
    /// `sendBuffSize`: messages buffered per connection.
    pub(crate) send_buff_size: Option<usize>,
    /// `aliveTimeInterval`: period of alive messages (membership).
    pub(crate) alive_time_interval: Option<Duration>,
    /// `aliveExpirationTimeout`: silence after which a peer is presumed dead (membership).
    pub(crate) alive_expiration_timeout: Option<Duration>,
    /// `reconnectInterval`: period of reconnection attempts to dead peers (membership).
    pub(crate) reconnect_interval: Option<Duration>,
    /// `maxConnectionAttempts`: identification attempts of a bootstrap peer.
    pub(crate) max_connection_attempts: Option<u32>,
    /// `msgExpirationFactor`: how many `aliveExpirationTimeout`s a dead member is kept.
    pub(crate) msg_expiration_factor: Option<u32>,
    /// `publishCertPeriod`: how long after start alive messages carry the certificate.
    pub(crate) publish_cert_period: Option<Duration>,
    /// `propagatePeerNum`: members each alive message is forwarded to.
    pub(crate) propagate_peer_num: Option<u16>,
    /// `propagateIterations`: times each alive message is sent, each to a fresh choice.
    pub(crate) propagate_iterations: Option<u16>,
    /// `pullInterval`: period of membership syncs and identity pulls.
    pub(crate) pull_interval: Option<Duration>,
    /// `pullPeerNum`: members asked at each sync and identity pull.
    pub(crate) pull_peer_num: Option<u16>,
    /// `digestWaitTime`, `requestWaitTime`, `responseWaitTime`: the identity pull's waits.
    pub(crate) digest_wait_time: Option<Duration>,
    pub(crate) request_wait_time: Option<Duration>,
    pub(crate) response_wait_time: Option<Duration>,
}

/// `peer.tls.*` or `operations.tls.*`, paths resolved. Only the peer's section has
/// `rootcert`, `clientCert` and `clientKey` (`None` for the operations service).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct TlsFileConfig {
    pub(crate) enabled: bool,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) rootcert: Option<PathBuf>,
    pub(crate) client_auth_required: bool,
    pub(crate) client_root_cas: Vec<PathBuf>,
    pub(crate) client_cert: Option<PathBuf>,
    pub(crate) client_key: Option<PathBuf>,
}

/// `metrics.provider`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricsProvider {
    /// No `/metrics` (Fabric's default).
    #[default]
    Disabled,
    /// `/metrics` on the operations service.
    Prometheus,
}

/// The operations service (`operations.*`): health, `/logspec` and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct OperationsConfig {
    /// `operations.listenAddress`: none, no operations service (unless `--operations`).
    pub(crate) listen_address: Option<String>,
    /// `operations.tls.*`.
    pub(crate) tls: TlsFileConfig,
}

/// What this node takes from a `core.yaml` and the environment.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct PeerConfig {
    /// The file read.
    pub(crate) path: PathBuf,
    /// `peer.listenAddress`.
    pub(crate) listen_address: Option<String>,
    pub(crate) gossip: GossipConfig,
    pub(crate) tls: TlsFileConfig,
    /// `peer.address`, unless `peer.addressAutoDetect` (see
    /// [`PeerConfig::advertised_peer_address`]).
    peer_address: Option<String>,
    /// `peer.mspConfigPath`, resolved.
    pub(crate) msp_config_path: Option<PathBuf>,
    /// How errors name the keys of [`NAMED_LATER`]: the key, and the variable or file that
    /// set it ([`PeerConfig::named`]).
    names: KeyNames,
    /// `peer.localMspId`.
    pub(crate) local_msp_id: Option<String>,
    /// `operations.*`.
    pub(crate) operations: OperationsConfig,
    /// `metrics.provider`.
    pub(crate) metrics_provider: MetricsProvider,
    /// `peer.keepalive.client.interval` and `.timeout`: the HTTP/2 pings of connections
    /// the node dials.
    pub(crate) keepalive: (Option<Duration>, Option<Duration>),
    /// `peer.maxRecvMsgSize` and `peer.maxSendMsgSize`: the largest gRPC message a Fabric
    /// peer takes and sends (100 MiB by default, read as Go's `int32`).
    pub(crate) max_msg_size: (Option<usize>, Option<usize>),
}

impl PeerConfig {
    /// The core's single `max_message_size` for the file's two limits: the larger of the
    /// two, each 100 MiB when unset, so that the node never refuses a message a peer
    /// configured so would take or send (one above 100 MiB from such a peer had closed
    /// the connection).
    pub(crate) fn max_message_size(&self) -> usize {
        let default = fabric_gossip_core::proto::MAX_MESSAGE_SIZE;
        let (recv, send) = self.max_msg_size;
        recv.unwrap_or(default).max(send.unwrap_or(default))
    }
}

/// Where a value came from, for error messages.
enum Raw<'a> {
    File(&'a Yaml),
    Env(String, String),
}

struct Source<'a> {
    root: &'a Yaml,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The file read, as `--config` named it.
    file: &'a Path,
    dir: PathBuf,
}

/// `peer.gossip.dialTimeout` → `CORE_PEER_GOSSIP_DIALTIMEOUT`.
pub(crate) fn env_name(key: &str) -> String {
    format!("CORE_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn lookup<'a>(root: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    let mut node = root;
    for seg in key.split('.') {
        let Yaml::Hash(h) = node else { return None };
        node = h
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(seg)))
            .map(|(_, v)| v)?;
    }
    Some(node)
}

/// Keys of a core.yaml as errors name them, each with the variable or file that set it
/// (`peer.tls.cert.file (from CORE_PEER_TLS_CERT_FILE)`), for values checked where they
/// are used rather than as the file is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyNames(Vec<(&'static str, String)>);

impl KeyNames {
    /// `key` as errors name it; the key alone when it is not one of these.
    pub(crate) fn named(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(|| key.to_owned(), |(_, n)| n.clone())
    }

    /// The keys, in order.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<&'static str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Keys whose values are checked only where they are used, since a flag may override
/// them: their errors name them as the others' do, with the variable or file that set them.
const NAMED_LATER: [&str; 11] = [
    "peer.listenAddress",
    "operations.listenAddress",
    "peer.mspConfigPath",
    "peer.address",
    "peer.tls.cert.file",
    "peer.tls.key.file",
    "peer.tls.rootcert.file",
    "peer.tls.clientRootCAs.files",
    "peer.tls.clientCert.file",
    "peer.tls.clientKey.file",
    "peer.tls.enabled",
];

impl PeerConfig {
    /// `key` as errors name it: with the variable or file that set it.
    pub(crate) fn named(&self, key: &str) -> String {
        self.names.named(key)
    }

    /// The `peer.tls` files' keys as errors name them (`peer.tls.cert.file (from
    /// CORE_PEER_TLS_CERT_FILE)`), for [`TlsArgs`](crate::opts::TlsArgs), which reads the
    /// files later.
    pub(crate) fn tls_names(&self) -> KeyNames {
        KeyNames(
            self.names
                .0
                .iter()
                .filter(|(k, _)| k.starts_with("peer.tls."))
                .cloned()
                .collect(),
        )
    }

    /// The endpoint gossip advertises when `peer.gossip.endpoint` is not set, as a Fabric
    /// peer picks it (`internal/peer/node/start.go`): `peer.address`. A Fabric peer
    /// advertises the IP it detects for the host instead when that address is on `0.0.0.0`
    /// or `::`, or with `peer.addressAutoDetect`; this tool detects none, so `None` then (the
    /// address it bound is advertised). For the node to use only when the file's
    /// `peer.listenAddress` is what it binds: with `--listen` it is not that peer.
    pub(crate) fn advertised_peer_address(&self) -> Result<Option<String>, ConfigError> {
        let Some(address) = &self.peer_address else {
            return Ok(None);
        };
        let host = match address.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => {
                host.trim_start_matches('[').trim_end_matches(']')
            }
            _ => {
                return Err(ConfigError(format!(
                    "{}: {address:?} is not in host:port form",
                    self.named("peer.address")
                )));
            }
        };
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        Ok((!unspecified).then(|| address.clone()))
    }
}

impl Source<'_> {
    /// The raw value of `key`: its variable when set to something, else the file's, else
    /// `None`; a null or empty value counts as absent. An empty variable (`CORE_X=`, what
    /// a template writes for a value it was not given) leaves the file's value, as viper
    /// reads the environment only for a value other than "".
    fn raw(&self, key: &str) -> Option<Raw<'_>> {
        let name = env_name(key);
        if let Some(v) = (self.env)(&name).filter(|v| !v.is_empty()) {
            return Some(Raw::Env(name, v));
        }
        match lookup(self.root, key)? {
            Yaml::Null | Yaml::BadValue => None,
            Yaml::String(s) if s.trim().is_empty() => None,
            y => Some(Raw::File(y)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let s = match &raw {
            Raw::Env(_, v) => v.trim().to_owned(),
            Raw::File(Yaml::String(s)) => s.trim().to_owned(),
            Raw::File(Yaml::Integer(i)) => i.to_string(),
            Raw::File(Yaml::Real(r)) => r.clone(),
            Raw::File(_) => {
                return Err(ConfigError(format!(
                    "{}: expected a string",
                    self.what(key, &raw)
                )));
            }
        };
        Ok((!s.is_empty()).then_some(s))
    }

    /// A `HOST:PORT` as the flags take one (`--endpoint`): members carry it in their
    /// signed alive messages and logs show it, so a newline or a space in it is refused
    /// here as there.
    fn endpoint(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.string(key)?
            .map(|e| self.checked_endpoint(key, e))
            .transpose()
    }

    fn checked_endpoint(&self, key: &str, e: String) -> Result<String, ConfigError> {
        crate::opts::parse_endpoint(&e)
            .map_err(|why| ConfigError(format!("{}: {why}", self.named(key))))
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.string(key)?.map(|p| self.resolve(&p)))
    }

    /// `key`, and the variable or file it came from: how errors name a value.
    fn named(&self, key: &str) -> String {
        self.raw(key)
            .map_or_else(|| key.to_owned(), |r| self.what(key, &r))
    }

    /// `key` with where `raw` came from, the variable or the file, so that an operator
    /// with several core.yaml files and a container's environment knows what to edit.
    fn what(&self, key: &str, raw: &Raw<'_>) -> String {
        match raw {
            Raw::File(_) => format!("{key} (from --config {})", self.file.display()),
            Raw::Env(name, _) => format!("{key} (from {name})"),
        }
    }

    /// Fabric's `TranslatePath`: relative to the configuration file's directory.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir.join(p)
        }
    }

    fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(Vec::new());
        };
        // A string holds items separated by spaces, as viper reads `CORE_…` lists.
        let split = |s: &str| -> Vec<String> {
            s.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match &raw {
            Raw::Env(_, v) => Ok(split(v)),
            Raw::File(Yaml::String(s)) => Ok(split(s)),
            Raw::File(Yaml::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Yaml::String(s) => Ok(s.trim().to_owned()),
                    Yaml::Integer(n) => Ok(n.to_string()),
                    _ => Err(ConfigError(format!(
                        "{}: expected a list of strings",
                        self.what(key, &raw)
                    ))),
                })
                .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
                .collect(),
            Raw::File(_) => Err(ConfigError(format!(
                "{}: expected a list of strings",
                self.what(key, &raw)
            ))),
        }
    }

    fn paths(&self, key: &str) -> Result<Vec<PathBuf>, ConfigError> {
        Ok(self.list(key)?.iter().map(|p| self.resolve(p)).collect())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let text = match &raw {
            Raw::File(Yaml::Boolean(b)) => return Ok(Some(*b)),
            // Go's yaml.v2 gives viper a number, whose `GetBool` is "not zero".
            Raw::File(Yaml::Integer(n)) => return Ok(Some(*n != 0)),
            // YAML 1.1's words, which yaml.v2 reads as booleans where this YAML 1.2 reader
            // sees strings (in a quoted string viper's `GetBool` reads false for them: this
            // reader cannot tell quoted from plain, and takes the plain reading).
            Raw::File(Yaml::String(s)) => match s.trim() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Ok(Some(true)),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Ok(Some(false)),
                other => other.to_ascii_lowercase(),
            },
            Raw::Env(_, s) => s.trim().to_ascii_lowercase(),
            Raw::File(_) => String::new(),
        };
        match text.as_str() {
            "true" | "1" | "t" => Ok(Some(true)),
            "false" | "0" | "f" => Ok(Some(false)),
            // The accepted words, as Go's ParseBool names them for a variable (any case
            // is read here); a file also takes YAML 1.1's words, as yaml.v2 does.
            _ => Err(ConfigError(match &raw {
                Raw::Env(..) => format!(
                    "{}: expected one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, \
                     False (Go's ParseBool)",
                    self.what(key, &raw)
                ),
                Raw::File(_) => format!(
                    "{}: expected true or false (or 1, 0, t, f, yes, no, y, n, on, off)",
                    self.what(key, &raw)
                ),
            })),
        }
    }

    /// A TLS section (`peer.tls`, `operations.tls`); `peer`: it also names a root
    /// certificate and a client certificate and key.
    fn tls(&self, section: &str, peer: bool) -> Result<TlsFileConfig, ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        let peer_path = |k: &str| match peer {
            true => self.path(&key(k)),
            false => Ok(None),
        };
        Ok(TlsFileConfig {
            enabled: self.bool(&key("enabled"))?.unwrap_or(false),
            cert: self.path(&key("cert.file"))?,
            key: self.path(&key("key.file"))?,
            rootcert: peer_path("rootcert.file")?,
            client_auth_required: self.bool(&key("clientAuthRequired"))?.unwrap_or(false),
            client_root_cas: self.paths(&key("clientRootCAs.files"))?,
            client_cert: peer_path("clientCert.file")?,
            client_key: peer_path("clientKey.file")?,
        })
    }

    /// A gossip duration as Fabric reads it (`util.GetDurationOrDefault`): zero means the
    /// default, as if the key were absent.
    fn interval(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        Ok(self.duration(key)?.filter(|d| !d.is_zero()))
    }

    /// A gossip count as Fabric reads it (`util.GetIntOrDefault`): zero means the default.
    fn count(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let n = match &raw {
            Raw::File(Yaml::Integer(i)) => usize::try_from(*i).ok(),
            Raw::File(Yaml::String(s)) | Raw::Env(_, s) => s.trim().parse().ok(),
            Raw::File(_) => None,
        };
        match n {
            Some(0) => Ok(None),
            Some(n) => Ok(Some(n)),
            None => Err(ConfigError(format!(
                "{}: expected a positive whole number",
                self.what(key, &raw)
            ))),
        }
    }

    /// [`Source::count`] for a value that must fit in `T`.
    fn count_in<T: TryFrom<usize>>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.count(key)?
            .map(|n| {
                T::try_from(n)
                    .map_err(|_| ConfigError(format!("{}: {n} is too large", self.named(key))))
            })
            .transpose()
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(raw) = self.raw(key) else {
            return Ok(None);
        };
        let text = match &raw {
            Raw::File(Yaml::String(s)) | Raw::Env(_, s) => s.trim().to_owned(),
            Raw::File(Yaml::Integer(i)) => i.to_string(),
            Raw::File(_) => String::new(),
        };
        parse_duration(&text).map(Some).map_err(|e| {
            ConfigError(format!(
                "{}: {text:?} is not a duration ({e}; e.g. 3s, 500ms, 1m30s)",
                self.what(key, &raw)
            ))
        })
    }
}

/// Go's `time.ParseDuration` format, as Fabric writes durations: one or more decimal
/// numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1m30s`, `2.5s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("expected a number at {rest:?}"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad number {:?}", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err("a unit is missing".into()),
            u => return Err(format!("unknown unit {u:?}")),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    // Go's durations are nanoseconds in an int64: about 2,562,047 h at most. Past that Go
    // refuses the text, and a larger value here overflowed the node's own arithmetic on
    // its time-outs (a panic where status 2 and the key's name were due).
    if total > MAX_GO_DURATION_SECS {
        return Err("out of range (Go's durations end at 2562047h47m16.854775807s)".into());
    }
    Duration::try_from_secs_f64(total).map_err(|e| e.to_string())
}

/// The longest duration Go's `time.Duration` holds, in seconds.
const MAX_GO_DURATION_SECS: f64 = i64::MAX as f64 / 1e9;

/// The largest core.yaml read: Fabric's sample is about 30 KiB.
const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The most values a core.yaml may hold once its aliases are expanded: the YAML loader
/// expands an alias by copying the node it names, so 600 bytes of nested aliases (a
/// "billion laughs") had taken a node past 4 GB and aborted it. Go's YAML decoder, which
/// Fabric reads core.yaml with, refuses excessive aliasing too.
const MAX_CONFIG_NODES: u64 = 1_000_000;

/// `path`'s text, refused past [`MAX_CONFIG_BYTES`] (before it is read whole).
fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |e: &dyn std::fmt::Display| ConfigError(format!("--config {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(&e))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(&format_args!(
            "larger than {MAX_CONFIG_BYTES} bytes; a peer's core.yaml is a few dozen KiB"
        )));
    }
    Ok(text)
}

/// How many values (scalars, sequences, mappings) `text` holds once every alias is
/// expanded as the loader expands it, counted from the parser's events without expanding
/// anything.
fn expanded_nodes(text: &str) -> Result<u64, yaml_rust2::ScanError> {
    use yaml_rust2::parser::{Event, EventReceiver, Parser};
    #[derive(Default)]
    struct Count {
        /// Open collections: their anchor and the values counted in them so far.
        open: Vec<(usize, u64)>,
        /// Anchor → the values of the node it names.
        anchors: std::collections::HashMap<usize, u64>,
        total: u64,
    }
    impl Count {
        fn add(&mut self, n: u64) {
            match self.open.last_mut() {
                Some((_, c)) => *c = c.saturating_add(n),
                None => self.total = self.total.saturating_add(n),
            }
        }
        fn close(&mut self, anchor: usize, n: u64) {
            if anchor > 0 {
                self.anchors.insert(anchor, n);
            }
            self.add(n);
        }
    }
    impl EventReceiver for Count {
        fn on_event(&mut self, ev: Event) {
            match ev {
                Event::Scalar(_, _, anchor, _) => self.close(anchor, 1),
                Event::Alias(id) => {
                    let n = self.anchors.get(&id).copied().unwrap_or(1);
                    self.add(n);
                }
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    self.open.push((anchor, 1));
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some((anchor, n)) = self.open.pop() {
                        self.close(anchor, n);
                    }
                }
                _ => {}
            }
        }
    }
    let mut count = Count::default();
    Parser::new_from_str(text).load(&mut count, true)?;
    Ok(count.total)
}

/// Reads `path` with the process environment.
pub(crate) fn load(path: &Path) -> Result<PeerConfig, ConfigError> {
    load_with(path, &|name| std::env::var(name).ok())
}

/// Reads `path`, taking `CORE_…` variables from `env`.
pub(crate) fn load_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PeerConfig, ConfigError> {
    let text = read_bounded(path)?;
    let nodes = expanded_nodes(&text)
        .map_err(|e| ConfigError(format!("--config {}: not YAML: {e}", path.display())))?;
    if nodes > MAX_CONFIG_NODES {
        return Err(ConfigError(format!(
            "--config {}: its aliases would expand it to more than {MAX_CONFIG_NODES} values \
             (a \"billion laughs\"); a peer's core.yaml holds a few hundred",
            path.display()
        )));
    }
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| ConfigError(format!("--config {}: not YAML: {e}", path.display())))?;
    let root = docs.into_iter().next().unwrap_or(Yaml::Null);
    if !matches!(root, Yaml::Hash(_) | Yaml::Null) {
        return Err(ConfigError(format!(
            "--config {}: expected a mapping of keys (peer:, operations:, ...)",
            path.display()
        )));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let src = Source {
        root: &root,
        env,
        file: path,
        dir,
    };
    let metrics_provider = match src
        .string("metrics.provider")?
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("disabled") => MetricsProvider::Disabled,
        Some("prometheus") => MetricsProvider::Prometheus,
        Some(other) => {
            return Err(ConfigError(format!(
                "{}: {other:?} is not supported here (prometheus or disabled)",
                src.named("metrics.provider")
            )));
        }
    };
    Ok(PeerConfig {
        path: path.to_owned(),
        listen_address: src.string("peer.listenAddress")?,
        gossip: GossipConfig {
            endpoint: src.endpoint("peer.gossip.endpoint")?,
            external_endpoint: src.endpoint("peer.gossip.externalEndpoint")?,
            bootstrap: src
                .list("peer.gossip.bootstrap")?
                .into_iter()
                .map(|b| src.checked_endpoint("peer.gossip.bootstrap", b))
                .collect::<Result<_, _>>()?,
            bootstrap_from: src.named("peer.gossip.bootstrap"),
            dial_timeout: src.interval("peer.gossip.dialTimeout")?,
            conn_timeout: src.interval("peer.gossip.connTimeout")?,
            recv_buff_size: src.count("peer.gossip.recvBuffSize")?,
            send_buff_size: src.count("peer.gossip.sendBuffSize")?,
            alive_time_interval: src.interval("peer.gossip.aliveTimeInterval")?,
            alive_expiration_timeout: src.interval("peer.gossip.aliveExpirationTimeout")?,
            reconnect_interval: src.interval("peer.gossip.reconnectInterval")?,
            max_connection_attempts: src.count_in("peer.gossip.maxConnectionAttempts")?,
            msg_expiration_factor: src.count_in("peer.gossip.msgExpirationFactor")?,
            publish_cert_period: src.interval("peer.gossip.publishCertPeriod")?,
            propagate_peer_num: src.count_in("peer.gossip.propagatePeerNum")?,
            propagate_iterations: src.count_in("peer.gossip.propagateIterations")?,
            pull_interval: src.interval("peer.gossip.pullInterval")?,
            pull_peer_num: src.count_in("peer.gossip.pullPeerNum")?,
            digest_wait_time: src.interval("peer.gossip.digestWaitTime")?,
            request_wait_time: src.interval("peer.gossip.requestWaitTime")?,
            response_wait_time: src.interval("peer.gossip.responseWaitTime")?,
        },
        tls: src.tls("peer.tls", true)?,
        peer_address: match src.bool("peer.addressAutoDetect")? {
            Some(true) => None,
            _ => src.string("peer.address")?,
        },
        msp_config_path: src.path("peer.mspConfigPath")?,
        names: KeyNames(NAMED_LATER.iter().map(|&k| (k, src.named(k))).collect()),
        local_msp_id: src.string("peer.localMspId")?,
        operations: OperationsConfig {
            listen_address: src.string("operations.listenAddress")?,
            tls: src.tls("operations.tls", false)?,
        },
        metrics_provider,
        keepalive: (
            src.interval("peer.keepalive.client.interval")?,
            src.interval("peer.keepalive.client.timeout")?,
        ),
        max_msg_size: (
            src.count_in::<i32>("peer.maxRecvMsgSize")?
                .map(|n| n as usize),
            src.count_in::<i32>("peer.maxSendMsgSize")?
                .map(|n| n as usize),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A file in the layout of Fabric's sampleconfig/core.yaml (own text), with keys this
    /// node ignores around the ones it reads.
    const CORE_YAML: &str = include_str!("../tests/fixtures/core.yaml");

    /// `peer.keepalive.client.*` are read (the sample file sets only the server's, which
    /// this node does not use: its server answers pings as HTTP/2 does).
    #[test]
    fn the_client_keepalive_is_read() {
        let c = with(&[]).expect("loads");
        assert_eq!(c.keepalive, (None, None));
        let c = with(&[
            ("CORE_PEER_KEEPALIVE_CLIENT_INTERVAL", "90s"),
            ("CORE_PEER_KEEPALIVE_CLIENT_TIMEOUT", "5s"),
        ])
        .expect("loads");
        assert_eq!(
            c.keepalive,
            (Some(Duration::from_secs(90)), Some(Duration::from_secs(5)))
        );
    }

    fn with(env: &[(&str, &str)]) -> Result<PeerConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        std::fs::write(&path, CORE_YAML).expect("write");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let r = load_with(&path, &|n| env.get(n).cloned());
        // Paths are reported relative to the temporary directory, for comparison.
        r.map(|mut c| {
            let strip = |p: &mut PathBuf| {
                if let Ok(s) = p.strip_prefix(dir.path()) {
                    *p = Path::new("$DIR").join(s);
                }
            };
            for p in [
                &mut c.tls.cert,
                &mut c.tls.key,
                &mut c.tls.rootcert,
                &mut c.tls.client_cert,
                &mut c.tls.client_key,
                &mut c.msp_config_path,
                &mut c.operations.tls.cert,
            ]
            .into_iter()
            .flatten()
            {
                strip(p);
            }
            c.tls.client_root_cas.iter_mut().for_each(strip);
            c.path = PathBuf::new();
            c
        })
    }

    /// Fabric advertises `peer.gossip.endpoint`, else `peer.address` unless that names no
    /// host (the sample's `0.0.0.0:7051`) or auto-detection is asked for.
    /// The core's one message limit is the larger of the peer's two, each 100 MiB when
    /// unset: a peer configured to take or send larger messages gets them through.
    #[test]
    fn the_message_limit_is_the_larger_of_the_peer_s_two() {
        let limit = |env: &[(&str, &str)]| with(env).expect("loads").max_message_size();
        assert_eq!(limit(&[]), 104_857_600);
        assert_eq!(
            limit(&[("CORE_PEER_MAXRECVMSGSIZE", "1048576")]),
            104_857_600
        );
        assert_eq!(
            limit(&[("CORE_PEER_MAXRECVMSGSIZE", "209715200")]),
            209_715_200
        );
        assert_eq!(
            limit(&[("CORE_PEER_MAXSENDMSGSIZE", "157286400")]),
            157_286_400
        );
        assert_eq!(PeerConfig::default().max_message_size(), 104_857_600);
    }

    #[test]
    fn the_gossip_endpoint_falls_back_to_the_peer_address() {
        let address = |env: &[(&str, &str)]| {
            with(env)
                .expect("loads")
                .advertised_peer_address()
                .map_err(|e| e.0)
        };
        let addr = ("CORE_PEER_ADDRESS", "peer0.org1.example.com:7051");
        assert_eq!(address(&[]), Ok(None));
        assert_eq!(
            address(&[addr]),
            Ok(Some("peer0.org1.example.com:7051".to_owned()))
        );
        let c = with(&[addr, ("CORE_PEER_GOSSIP_ENDPOINT", "10.0.0.5:7051")]).expect("loads");
        assert_eq!(c.gossip.endpoint.as_deref(), Some("10.0.0.5:7051"));
        assert_eq!(
            address(&[addr, ("CORE_PEER_ADDRESSAUTODETECT", "true")]),
            Ok(None)
        );
        assert_eq!(address(&[("CORE_PEER_ADDRESS", "[::]:7051")]), Ok(None));
        // A malformed one loads (a flag may stand in for it) and is refused where used.
        let e = address(&[("CORE_PEER_ADDRESS", "peer0")]).expect_err("no port");
        assert!(e.contains("peer.address (from CORE_PEER_ADDRESS)"), "{e}");
    }

    #[test]
    fn reads_the_keys_of_a_sample_core_yaml() {
        let c = with(&[]).expect("loads");
        assert_eq!(c.listen_address.as_deref(), Some("0.0.0.0:7051"));
        assert_eq!(c.gossip.endpoint, None);
        assert_eq!(c.gossip.bootstrap, vec!["127.0.0.1:7051".to_owned()]);
        assert_eq!(c.gossip.recv_buff_size, Some(20));
        assert_eq!(c.gossip.send_buff_size, Some(200));
        assert_eq!(c.gossip.pull_peer_num, Some(3));
        assert_eq!(c.gossip.propagate_peer_num, Some(3));
        assert_eq!(c.gossip.propagate_iterations, Some(1));
        assert_eq!(c.gossip.max_connection_attempts, Some(120));
        assert_eq!(c.gossip.msg_expiration_factor, Some(20));
        let g = &c.gossip;
        for (key, read, ms) in [
            ("dialTimeout", g.dial_timeout, 3_000),
            ("connTimeout", g.conn_timeout, 2_000),
            ("aliveTimeInterval", g.alive_time_interval, 5_000),
            ("aliveExpirationTimeout", g.alive_expiration_timeout, 25_000),
            ("reconnectInterval", g.reconnect_interval, 25_000),
            ("pullInterval", g.pull_interval, 4_000),
            ("publishCertPeriod", g.publish_cert_period, 10_000),
            ("digestWaitTime", g.digest_wait_time, 1_000),
            ("requestWaitTime", g.request_wait_time, 1_500),
            ("responseWaitTime", g.response_wait_time, 2_000),
        ] {
            assert_eq!(read, Some(Duration::from_millis(ms)), "{key}");
        }
        assert_eq!(c.max_msg_size, (Some(104_857_600), Some(104_857_600)));
        assert!(!c.tls.enabled);
        assert!(!c.tls.client_auth_required);
        // Relative paths are relative to the file's directory, as Fabric resolves them.
        assert_eq!(c.tls.cert, Some(PathBuf::from("$DIR/tls/server.crt")));
        assert_eq!(c.tls.rootcert, Some(PathBuf::from("$DIR/tls/ca.crt")));
        assert_eq!(c.tls.client_cert, None);
        assert_eq!(
            c.tls.client_root_cas,
            vec![PathBuf::from("$DIR/tls/ca.crt")]
        );
        assert_eq!(c.msp_config_path, Some(PathBuf::from("$DIR/msp")));
        assert_eq!(c.local_msp_id.as_deref(), Some("SampleOrg"));
        assert_eq!(
            c.operations.listen_address.as_deref(),
            Some("127.0.0.1:9443")
        );
        assert_eq!(c.metrics_provider, MetricsProvider::Disabled);
        assert!(!c.operations.tls.enabled);
    }

    #[test]
    fn core_variables_override_the_file() {
        let c = with(&[
            ("CORE_PEER_GOSSIP_BOOTSTRAP", "p1:7051 p2:8051"),
            ("CORE_PEER_TLS_ENABLED", "true"),
            ("CORE_PEER_TLS_CLIENTCERT_FILE", "/abs/client.crt"),
            ("CORE_PEER_TLS_CLIENTKEY_FILE", "rel/client.key"),
            ("CORE_PEER_GOSSIP_DIALTIMEOUT", "1500ms"),
            ("CORE_PEER_LOCALMSPID", "Org1MSP"),
            ("CORE_METRICS_PROVIDER", "prometheus"),
            ("CORE_OPERATIONS_LISTENADDRESS", "0.0.0.0:9444"),
            ("CORE_OPERATIONS_TLS_ENABLED", "true"),
            ("CORE_OPERATIONS_TLS_CERT_FILE", "ops/tls.crt"),
            (
                "CORE_PEER_GOSSIP_EXTERNALENDPOINT",
                "peer0.org1.example.com:7051",
            ),
        ])
        .expect("loads");
        assert_eq!(c.gossip.bootstrap, vec!["p1:7051", "p2:8051"]);
        assert!(c.tls.enabled);
        assert_eq!(c.tls.client_cert, Some(PathBuf::from("/abs/client.crt")));
        assert_eq!(c.tls.client_key, Some(PathBuf::from("$DIR/rel/client.key")));
        assert_eq!(c.gossip.dial_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(c.local_msp_id.as_deref(), Some("Org1MSP"));
        assert_eq!(c.metrics_provider, MetricsProvider::Prometheus);
        assert_eq!(c.operations.listen_address.as_deref(), Some("0.0.0.0:9444"));
        assert!(c.operations.tls.enabled);
        assert_eq!(
            c.operations.tls.cert,
            Some(PathBuf::from("$DIR/ops/tls.crt"))
        );
        assert_eq!(
            c.gossip.external_endpoint.as_deref(),
            Some("peer0.org1.example.com:7051")
        );
        // The TLS files are read later, and their errors name where each was set.
        let names = c.tls_names();
        assert_eq!(
            names.named("peer.tls.clientCert.file"),
            "peer.tls.clientCert.file (from CORE_PEER_TLS_CLIENTCERT_FILE)"
        );
        let cert = names.named("peer.tls.cert.file");
        assert!(
            cert.starts_with("peer.tls.cert.file (from --config ") && cert.ends_with("core.yaml)"),
            "{cert}"
        );
        assert_eq!(names.keys(), NAMED_LATER[4..]);
    }

    #[test]
    fn wrong_values_are_named_with_their_key() {
        let e = with(&[("CORE_PEER_GOSSIP_CONNTIMEOUT", "2 seconds")]).unwrap_err();
        assert!(
            e.0.contains("peer.gossip.connTimeout (from CORE_PEER_GOSSIP_CONNTIMEOUT)"),
            "{e}"
        );
        let e = with(&[("CORE_PEER_TLS_ENABLED", "yes please")]).unwrap_err();
        assert!(e.0.contains("peer.tls.enabled"), "{e}");
        let e = with(&[("CORE_PEER_GOSSIP_SENDBUFFSIZE", "-3")]).unwrap_err();
        assert!(e.0.contains("peer.gossip.sendBuffSize"), "{e}");
        // Checked where used (a flag may override them), named as the others.
        let c = with(&[("CORE_PEER_MSPCONFIGPATH", "/nonexistent")]).expect("loads");
        assert_eq!(
            c.named("peer.mspConfigPath"),
            "peer.mspConfigPath (from CORE_PEER_MSPCONFIGPATH)"
        );
        let named = c.named("peer.listenAddress");
        assert!(
            named.starts_with("peer.listenAddress (from --config ")
                && named.ends_with("core.yaml)"),
            "{named}"
        );
        let e = with(&[("CORE_METRICS_PROVIDER", "statsd")]).unwrap_err();
        assert!(
            e.0.contains("metrics.provider") && e.0.contains("statsd"),
            "{e}"
        );
    }

    /// Aliases work as in Go's YAML; a file whose aliases would expand past
    /// `MAX_CONFIG_NODES` values, or a file past `MAX_CONFIG_BYTES`, is refused before it is
    /// loaded, naming the file.
    #[test]
    fn billion_laughs_and_huge_files_are_refused_before_loading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        std::fs::write(
            &path,
            "addr: &a 127.0.0.1:1\npeer:\n  listenAddress: *a\n  gossip: &g {dialTimeout: 7s}\nx: *g\n",
        )
        .expect("write");
        let c = load_with(&path, &|_| None).expect("loads");
        assert_eq!(c.listen_address.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(c.gossip.dial_timeout, Some(Duration::from_secs(7)));
        // Ten times ten, nine levels deep: 10^9 values from 600 bytes.
        let mut laughs = String::from("a0: &a0 [l, l, l, l, l, l, l, l, l, l]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        std::fs::write(&path, &laughs).expect("write");
        let e = load_with(&path, &|_| None).unwrap_err();
        assert!(
            e.0.contains("billion laughs") && e.0.contains("core.yaml"),
            "{e}"
        );
        // Five levels (a0 to a4, about 123,000 values) load; six (1.2 million) do not.
        let levels =
            |n: usize| -> String { laughs.lines().take(n).map(|l| format!("{l}\n")).collect() };
        std::fs::write(&path, levels(5)).expect("write");
        load_with(&path, &|_| None).expect("five levels load");
        std::fs::write(&path, levels(6)).expect("write");
        assert!(load_with(&path, &|_| None).is_err());
        let huge = format!("# {}\npeer: {{}}\n", "x".repeat(MAX_CONFIG_BYTES as usize));
        std::fs::write(&path, huge).expect("write");
        let e = load_with(&path, &|_| None).unwrap_err();
        assert!(
            e.0.contains("larger than") && e.0.contains("core.yaml"),
            "{e}"
        );
    }

    /// `key: value` as YAML, the key's dotted segments nested.
    fn nested(key: &str, value: &str) -> String {
        let mut text = String::new();
        let segments: Vec<&str> = key.split('.').collect();
        for (depth, seg) in segments.iter().enumerate() {
            let indent = "  ".repeat(depth);
            if depth + 1 == segments.len() {
                text.push_str(&format!("{indent}{seg}: {value}\n"));
            } else {
                text.push_str(&format!("{indent}{seg}:\n"));
            }
        }
        text
    }

    /// A wrong value from the file names the key and the file, as one from a variable
    /// names the variable: each key this node reads, given a value of the wrong kind (a
    /// mapping, a number where text is wanted) or out of range. `peer.listenAddress` as a
    /// mapping had said only `peer.listenAddress: expected a string`.
    #[test]
    fn wrong_values_from_the_file_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        let mapping = "{a: 1}";
        let mut cases: Vec<(&str, &str)> = [
            "peer.listenAddress",
            "peer.address",
            "peer.addressAutoDetect",
            "peer.mspConfigPath",
            "peer.localMspId",
            "peer.gossip.endpoint",
            "peer.gossip.externalEndpoint",
            "peer.gossip.bootstrap",
            "peer.gossip.dialTimeout",
            "peer.gossip.connTimeout",
            "peer.gossip.recvBuffSize",
            "peer.gossip.sendBuffSize",
            "peer.gossip.aliveTimeInterval",
            "peer.gossip.aliveExpirationTimeout",
            "peer.gossip.reconnectInterval",
            "peer.gossip.maxConnectionAttempts",
            "peer.gossip.msgExpirationFactor",
            "peer.gossip.publishCertPeriod",
            "peer.gossip.propagatePeerNum",
            "peer.gossip.propagateIterations",
            "peer.gossip.pullInterval",
            "peer.gossip.pullPeerNum",
            "peer.gossip.digestWaitTime",
            "peer.gossip.requestWaitTime",
            "peer.gossip.responseWaitTime",
            "peer.tls.enabled",
            "peer.tls.cert.file",
            "peer.tls.key.file",
            "peer.tls.rootcert.file",
            "peer.tls.clientAuthRequired",
            "peer.tls.clientRootCAs.files",
            "peer.tls.clientCert.file",
            "peer.tls.clientKey.file",
            "operations.listenAddress",
            "operations.tls.enabled",
            "operations.tls.cert.file",
            "operations.tls.key.file",
            "operations.tls.clientAuthRequired",
            "operations.tls.clientRootCAs.files",
            "metrics.provider",
            "peer.maxRecvMsgSize",
            "peer.maxSendMsgSize",
        ]
        .into_iter()
        .map(|key| (key, mapping))
        .collect();
        cases.extend([
            ("metrics.provider", "statsd"),
            ("peer.gossip.pullPeerNum", "70000"),
            ("peer.gossip.sendBuffSize", "-1"),
            ("peer.gossip.maxConnectionAttempts", "5000000000"),
            ("peer.maxRecvMsgSize", "2147483648"),
            ("peer.gossip.dialTimeout", "3"),
            ("peer.gossip.endpoint", "\"evil\\n:7051\""),
            ("peer.gossip.externalEndpoint", "nohost"),
            ("peer.gossip.bootstrap", "[\"a b:7051\"]"),
            ("peer.tls.enabled", "maybe"),
            ("peer.gossip.bootstrap", "[[a]]"),
        ]);
        let named = format!("(from --config {})", path.display());
        for (key, value) in cases {
            std::fs::write(&path, nested(key, value)).expect("write");
            let e = load_with(&path, &|_| None).unwrap_err();
            assert!(
                e.0.starts_with(&format!("{key} {named}")),
                "{key}: {value}: {e}"
            );
        }
        // Keys checked where they are used (a flag may override them) are named the same.
        for key in NAMED_LATER {
            let value = if key.ends_with(".files") {
                "[ca.crt]"
            } else {
                "7051"
            };
            std::fs::write(&path, nested(key, value)).expect("write");
            let c = load_with(&path, &|_| None).expect("loads");
            assert_eq!(c.named(key), format!("{key} {named}"));
        }
    }

    /// viper reads a variable only when it is not "": `CORE_X=` (what a template writes
    /// for a value it was not given) leaves the file's value, of every kind.
    #[test]
    fn an_empty_variable_leaves_the_files_value() {
        let c = with(&[
            ("CORE_PEER_GOSSIP_BOOTSTRAP", ""),
            ("CORE_PEER_TLS_ENABLED", ""),
            ("CORE_PEER_GOSSIP_DIALTIMEOUT", ""),
            ("CORE_PEER_GOSSIP_SENDBUFFSIZE", ""),
            ("CORE_PEER_LOCALMSPID", ""),
        ])
        .expect("loads");
        assert_eq!(c.gossip.bootstrap, vec!["127.0.0.1:7051".to_owned()]);
        assert!(!c.tls.enabled);
        assert_eq!(c.gossip.dial_timeout, Some(Duration::from_secs(3)));
        assert_eq!(c.gossip.send_buff_size, Some(200));
        assert_eq!(c.local_msp_id.as_deref(), Some("SampleOrg"));
    }

    /// Fabric reads every gossip duration and count with a default for zero
    /// (`util.GetDurationOrDefault`, `GetIntOrDefault`): `dialTimeout: 0s` is 3 s there, and
    /// was a dial that timed out at once here.
    #[test]
    fn zero_gossip_durations_and_counts_mean_the_default() {
        let c = with(&[
            ("CORE_PEER_GOSSIP_DIALTIMEOUT", "0s"),
            ("CORE_PEER_GOSSIP_CONNTIMEOUT", "0"),
            ("CORE_PEER_GOSSIP_ALIVETIMEINTERVAL", "0s"),
            ("CORE_PEER_GOSSIP_SENDBUFFSIZE", "0"),
            ("CORE_PEER_GOSSIP_PULLPEERNUM", "0"),
            ("CORE_PEER_GOSSIP_MAXCONNECTIONATTEMPTS", "0"),
            ("CORE_PEER_GOSSIP_PROPAGATEITERATIONS", "0"),
        ])
        .expect("loads");
        let g = &c.gossip;
        assert_eq!(
            (g.dial_timeout, g.conn_timeout, g.alive_time_interval),
            (None, None, None)
        );
        assert_eq!(
            (g.send_buff_size, g.pull_peer_num, g.max_connection_attempts),
            (None, None, None)
        );
        assert_eq!(g.propagate_iterations, None, "GetIntOrDefault: 0 is 1");
    }

    /// The gossip keys of a sample core.yaml that set the membership layer beyond the
    /// intervals: read, from the file or a variable.
    #[test]
    fn connection_attempts_expiration_factor_cert_period_and_fan_out_are_read() {
        let c = with(&[
            ("CORE_PEER_GOSSIP_MAXCONNECTIONATTEMPTS", "5"),
            ("CORE_PEER_GOSSIP_MSGEXPIRATIONFACTOR", "4"),
            ("CORE_PEER_GOSSIP_PUBLISHCERTPERIOD", "30s"),
            ("CORE_PEER_GOSSIP_PROPAGATEPEERNUM", "6"),
            ("CORE_PEER_GOSSIP_PROPAGATEITERATIONS", "2"),
        ])
        .expect("loads");
        let g = &c.gossip;
        assert_eq!(g.max_connection_attempts, Some(5));
        assert_eq!(g.msg_expiration_factor, Some(4));
        assert_eq!(g.publish_cert_period, Some(Duration::from_secs(30)));
        assert_eq!(g.propagate_peer_num, Some(6));
        assert_eq!(g.propagate_iterations, Some(2));
    }

    /// A number out of range names the variable that set it, as other values' errors do.
    #[test]
    fn an_out_of_range_pull_peer_count_names_its_variable() {
        let e = with(&[("CORE_PEER_GOSSIP_PULLPEERNUM", "4294967296")]).unwrap_err();
        assert!(
            e.0.contains("peer.gossip.pullPeerNum (from CORE_PEER_GOSSIP_PULLPEERNUM)"),
            "{e}"
        );
    }

    #[test]
    fn keys_match_without_case_and_unknown_keys_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        std::fs::write(
            &path,
            "peer:\n  LISTENADDRESS: 127.0.0.1:1\n  whatever: [1, 2]\n  gossip:\n    dialtimeout: 7s\nvm: {}\n",
        )
        .expect("write");
        let c = load_with(&path, &|_| None).expect("loads");
        assert_eq!(c.listen_address.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(c.gossip.dial_timeout, Some(Duration::from_secs(7)));
        std::fs::write(&path, "peer: [unclosed\n").expect("write");
        assert!(
            load_with(&path, &|_| None)
                .unwrap_err()
                .0
                .contains("not YAML")
        );
        std::fs::write(&path, "peer:\n  gossip:\n    dialTimeout: [3]\n").expect("write");
        assert!(
            load_with(&path, &|_| None)
                .unwrap_err()
                .0
                .contains("peer.gossip.dialTimeout")
        );
    }

    /// A key written with nothing after it, or blanks only, counts as absent, whatever
    /// its kind: no error for a boolean, a count or a duration left empty, and the
    /// defaults stand.
    #[test]
    fn a_blank_value_in_the_file_counts_as_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        for key in [
            "peer.tls.enabled",
            "peer.gossip.sendBuffSize",
            "peer.gossip.dialTimeout",
            "peer.localMspId",
        ] {
            for blank in ["\"\"", "\"   \""] {
                std::fs::write(&path, nested(key, blank)).expect("write");
                let c = load_with(&path, &|_| None).unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(
                    (
                        c.tls.enabled,
                        c.gossip.send_buff_size,
                        c.gossip.dial_timeout,
                        c.local_msp_id
                    ),
                    (false, None, None, None),
                    "{key}: {blank}"
                );
            }
        }
    }

    /// A list's items are strings as viper reads them: a number is its text, and an empty
    /// item is left out.
    #[test]
    fn list_items_written_as_numbers_are_their_text_and_empty_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        std::fs::write(
            &path,
            nested(
                "peer.tls.clientRootCAs.files",
                "[\"\", 7051, \" \", ca.crt]",
            ),
        )
        .expect("write");
        let c = load_with(&path, &|_| None).expect("loads");
        assert_eq!(
            c.tls.client_root_cas,
            vec![dir.path().join("7051"), dir.path().join("ca.crt")]
        );
    }

    /// A boolean from a variable takes Go's `strconv.ParseBool` words: `false`, `0` and
    /// `f` turn off what the file turned on, as `true`, `1` and `t` turn it on.
    #[test]
    fn a_boolean_variable_overrides_the_file_both_ways() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        for (file, words, read) in [
            (true, ["false", "0", "f", "FALSE"], false),
            (false, ["true", "1", "t", "TRUE"], true),
        ] {
            std::fs::write(&path, nested("peer.tls.enabled", &file.to_string())).expect("write");
            for word in words {
                let env = |name: &str| (name == "CORE_PEER_TLS_ENABLED").then(|| word.to_owned());
                let c = load_with(&path, &env).unwrap_or_else(|e| panic!("{word}: {e}"));
                assert_eq!(c.tls.enabled, read, "{word} over {file}");
            }
        }
    }

    /// A boolean in the file takes what Go's yaml.v2 reads as one, YAML 1.1's words (`yes`,
    /// `on`, `y` ...) and numbers (not zero) among them: a Fabric peer runs with TLS on from
    /// `enabled: yes`, which this reader, YAML 1.2's, sees as a string and refused.
    #[test]
    fn a_boolean_in_the_file_takes_yaml_1_1_words_and_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        let no_env = |_: &str| None;
        for (words, read) in [
            (
                &[
                    "yes", "Yes", "YES", "on", "On", "ON", "y", "Y", "1", "2", "True",
                ][..],
                true,
            ),
            (
                &[
                    "no", "No", "NO", "off", "Off", "OFF", "n", "N", "0", "false",
                ][..],
                false,
            ),
        ] {
            for word in words {
                std::fs::write(&path, nested("peer.tls.enabled", word)).expect("write");
                let c = load_with(&path, &no_env).unwrap_or_else(|e| panic!("{word}: {e}"));
                assert_eq!(c.tls.enabled, read, "{word}");
            }
        }
        std::fs::write(&path, nested("peer.tls.enabled", "maybe")).expect("write");
        let e = load_with(&path, &no_env).expect_err("not a boolean").0;
        assert!(
            e.contains("peer.tls.enabled") && e.contains("expected true or false"),
            "{e}"
        );
        // A variable keeps Go's strconv.ParseBool words: `yes` there is no boolean.
        std::fs::write(&path, nested("peer.tls.enabled", "false")).expect("write");
        let env = |name: &str| (name == "CORE_PEER_TLS_ENABLED").then(|| "yes".to_owned());
        // README walk-through finding 13: the error lists the words a variable takes.
        assert_eq!(
            load_with(&path, &env).expect_err("yes").0,
            "peer.tls.enabled (from CORE_PEER_TLS_ENABLED): expected one of 1, t, T, TRUE, \
             true, True, 0, f, F, FALSE, false, False (Go's ParseBool)"
        );
    }

    /// `peer.address` must end in a port number: a name after the last colon is no port.
    #[test]
    fn a_peer_address_whose_port_is_no_number_is_refused_where_used() {
        let c = with(&[("CORE_PEER_ADDRESS", "peer0.org1.example.com:grpc")]).expect("loads");
        let e = c.advertised_peer_address().expect_err("no port").0;
        assert_eq!(
            e,
            "peer.address (from CORE_PEER_ADDRESS): \"peer0.org1.example.com:grpc\" is not in \
             host:port form"
        );
        let c = with(&[("CORE_PEER_ADDRESS", "[::1]:65535")]).expect("loads");
        assert_eq!(
            c.advertised_peer_address().map_err(|e| e.0),
            Ok(Some("[::1]:65535".to_owned()))
        );
        let c = with(&[("CORE_PEER_ADDRESS", "peer0:65536")]).expect("loads");
        assert!(c.advertised_peer_address().is_err(), "65536 is no port");
    }

    /// The size bound is the most a core.yaml may hold: a file of exactly
    /// `MAX_CONFIG_BYTES` is read, one byte more is refused.
    #[test]
    fn a_core_yaml_of_exactly_the_size_bound_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        let head = "peer:\n  localMspId: Org1MSP\n# ";
        let at_bound = format!(
            "{head}{}\n",
            "x".repeat(MAX_CONFIG_BYTES as usize - head.len() - 1)
        );
        assert_eq!(at_bound.len() as u64, MAX_CONFIG_BYTES);
        std::fs::write(&path, &at_bound).expect("write");
        let c = load_with(&path, &|_| None).expect("at the bound");
        assert_eq!(c.local_msp_id.as_deref(), Some("Org1MSP"));
        std::fs::write(&path, format!("{at_bound}\n")).expect("write");
        let e = load_with(&path, &|_| None).unwrap_err();
        assert!(e.0.contains("larger than 4194304 bytes"), "{e}");
    }

    /// The alias bound counts values once expanded, a sequence or mapping itself among
    /// them: a file of exactly `MAX_CONFIG_NODES` loads, one more value is refused.
    #[test]
    fn a_core_yaml_of_exactly_the_value_bound_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("core.yaml");
        // The root mapping (1); the key `l` and its sequence of 999 scalars (1 + 1,000);
        // `m` and a mapping of one pair (1 + 3); `r` and its sequence (1 + 1), which holds
        // aliases, 1,000 per `*l` and 3 per `*m`, then scalars up to the bound.
        let mut nodes: u64 = 1 + 1_001 + 4 + 2;
        let mut refs = Vec::new();
        while nodes + 1_000 <= MAX_CONFIG_NODES - 3 {
            refs.push("*l");
            nodes += 1_000;
        }
        while nodes + 3 <= MAX_CONFIG_NODES {
            refs.push("*m");
            nodes += 3;
        }
        let fill = MAX_CONFIG_NODES - nodes;
        let text = format!(
            "l: &l [{}]\nm: &m {{k: v}}\nr: [{}{}]\n",
            vec!["x"; 999].join(", "),
            refs.join(", "),
            ", y".repeat(usize::try_from(fill).expect("small"))
        );
        std::fs::write(&path, &text).expect("write");
        assert_eq!(expanded_nodes(&text).expect("YAML"), MAX_CONFIG_NODES);
        load_with(&path, &|_| None).expect("at the bound");
        let over = text.replacen("r: [", "r: [z, ", 1);
        std::fs::write(&path, &over).expect("write");
        let e = load_with(&path, &|_| None).unwrap_err();
        assert!(e.0.contains("more than 1000000 values"), "{e}");
    }

    /// Go's longest duration, written out to the nanosecond, is read: the range's end is
    /// in it, and a second more is not.
    #[test]
    fn go_s_longest_duration_is_read_and_a_second_more_is_not() {
        let longest = parse_duration("2562047h47m16.854775807s").expect("Go reads it");
        assert_eq!(longest.as_secs(), 9_223_372_036);
        assert!(
            parse_duration("2562047h47m17.854775807s")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn go_durations() {
        for (s, d) in [
            ("3s", Duration::from_secs(3)),
            ("500ms", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("2.5s", Duration::from_millis(2500)),
            ("1h", Duration::from_secs(3600)),
            ("0", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
        ] {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
        for bad in ["", "3", "s", "3x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Go's range: `4000000000000000h` had panicked the node on its own time-out sums.
        assert_eq!(
            parse_duration("2562047h"),
            Ok(Duration::from_secs(2_562_047 * 3600))
        );
        for huge in ["2562048h", "4000000000000000h"] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.contains("out of range"), "{huge}: {e}");
        }
    }
}
