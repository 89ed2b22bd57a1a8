//! Logs on stderr, filtered the way a Fabric peer's are: a `FABRIC_LOGGING_SPEC`
//! (`gossip.comm=debug:info`) given with `--log-spec` or in that variable, or a `RUST_LOG`
//! directive list for those who think in crates.
//!
//! A Fabric spec is `[LOGGERS=]LEVEL` terms joined by `:`, LOGGERS a comma-separated list;
//! the term without `=` is the default level. Fabric's logger names are hierarchical
//! (`gossip` covers `gossip.comm`); each is mapped to the tracing targets of the crates that
//! do that logger's work here (see [`LOGGERS`]). A name that looks like a crate
//! (`fabric_gossip_core`) is taken as a target as it is (module paths need `RUST_LOG`, since
//! `:` separates terms); other Fabric loggers (`ledger`, `chaincode`) have nothing here and
//! are accepted and ignored, as Fabric accepts any name.

use std::sync::{Mutex, OnceLock, PoisonError};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The tracing target of the CLI's own events (the binary's crate is `fabric_gossip`, a
/// prefix of every library's target, so the CLI names itself explicitly).
pub(crate) const TARGET: &str = "fabric_gossip_cli";

/// `watch`'s default spec: warnings, but not the membership layer's for a failed
/// bootstrap attempt or a member found dead, which `watch` reports in its own words (an
/// operator's trial: each was said twice).
pub(crate) const WATCH_SPEC: &str =
    "gossip.discovery.bootstrap,gossip.discovery.members=error:warning";

/// `demo`'s default spec: warnings, but not a member found dead, which the demo causes
/// and reports itself.
pub(crate) const DEMO_SPEC: &str = "gossip.discovery.members=error:warning";

/// Fabric's logger names and the targets that do their work here.
pub(crate) const LOGGERS: &[(&str, &[&str])] = &[
    (
        "gossip.comm",
        &["fabric_gossip_core", "fabric_gossip_tonic"],
    ),
    ("gossip.discovery", &["fabric_gossip_discovery"]),
    // A failed bootstrap attempt's warning, which `watch` explains in its own words.
    (
        "gossip.discovery.bootstrap",
        &[fabric_gossip_discovery::BOOTSTRAP_TARGET],
    ),
    // The member lines (alive, restarted, dead, purged), which `watch` reports itself.
    (
        "gossip.discovery.members",
        &[fabric_gossip_discovery::MEMBERS_TARGET],
    ),
    ("gossip.sim", &["fabric_gossip_sim"]),
    ("msp", &["fabric_gossip_msp"]),
    ("grpc", &["tonic", "h2", "hyper", "rustls"]),
    ("nodeCmd", &[TARGET]),
    ("certmonitor", &[crate::expiry::CERTMONITOR]),
    ("peer", &[TARGET]),
    ("operations", &[TARGET]),
];

/// A spec that could not be read, with the part at fault.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SpecError(pub(crate) String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Fabric level name: the name Fabric's `Spec()` writes it under (zap's) and the tracing
/// level it selects here. Fabric's `panic`, `dpanic` and `fatal` are errors that also stop
/// the process there, here they select errors; `notice` and `critical` are Fabric's aliases
/// of `info` and `error`, `payload` its level below `debug` (tracing's `trace`).
fn level(s: &str) -> Result<(&'static str, &'static str), SpecError> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "payload" => ("payload", "trace"),
        "debug" => ("debug", "debug"),
        "info" | "notice" => ("info", "info"),
        "warn" | "warning" => ("warn", "warn"),
        "error" | "critical" => ("error", "error"),
        "dpanic" => ("dpanic", "error"),
        "panic" => ("panic", "error"),
        "fatal" => ("fatal", "error"),
        // Not Fabric's, but tracing has them and people type them.
        "trace" => ("trace", "trace"),
        "off" => ("off", "off"),
        // Every name accepted above, so that the list is the whole choice.
        other => {
            return Err(SpecError(format!(
                "unknown level {other:?} (payload, debug, info, notice, warn, warning, \
                 error, critical, dpanic, panic, fatal, trace, off)"
            )));
        }
    })
}

/// Fabric's rule for a logger name in a spec: dot-separated parts of ASCII letters, digits,
/// `_`, `#`, `-` (Go's `[[:alnum:]]` is ASCII), a trailing dot ("this logger exactly")
/// allowed.
fn valid_logger(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '#' | '-'))
        })
}

/// The targets a Fabric logger name covers: every mapped logger equal to it or below it
/// (`gossip` covers `gossip.comm` and `gossip.discovery`), or the name itself when it is a
/// Rust target. A name ending in `.` means that logger exactly, as in Fabric (`gossip.`
/// covers no logger here, there being none named `gossip`).
fn targets(logger: &str) -> Vec<&str> {
    let (logger, exact) = match logger.strip_suffix('.') {
        Some(l) => (l, true),
        None => (logger, false),
    };
    let covered = LOGGERS.iter().filter(|(name, _)| {
        *name == logger
            || !exact
                && name
                    .strip_prefix(logger)
                    .is_some_and(|rest| rest.starts_with('.'))
    });
    // A more specific Fabric name than any of ours (`gossip.comm.conn`) still means the
    // most specific logger of ours it is inside.
    let inside = LOGGERS
        .iter()
        .filter(|(name, _)| {
            !exact
                && logger
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(name, _)| name.len());
    let mut out: Vec<&str> = Vec::new();
    let mut chosen: Vec<_> = covered.collect();
    if chosen.is_empty() {
        chosen.extend(inside);
    }
    for (_, ts) in chosen {
        for t in *ts {
            if !out.contains(t) {
                out.push(t);
            }
        }
    }
    // A target inside another one listed (`gossip` covers the discovery crate and its
    // bootstrap target) takes the same level from it: one directive says it.
    let listed = out.clone();
    out.retain(|t| {
        !listed
            .iter()
            .any(|p| t.strip_prefix(p).is_some_and(|rest| rest.starts_with("::")))
    });
    if out.is_empty() && logger.contains('_') {
        out.push(logger);
    }
    out
}

/// A Fabric spec as its `ActivateSpec` reads it: `[LOGGERS=]LEVEL` terms joined by `:`;
/// the last term without `=` is the default level (an empty term too: it means `info`);
/// a logger named twice takes its last level.
struct Spec {
    /// The default level: (Fabric's name, tracing's).
    default: (&'static str, &'static str),
    /// Each logger named, with its level.
    loggers: std::collections::BTreeMap<String, (&'static str, &'static str)>,
}

fn parse(spec: &str) -> Result<Spec, SpecError> {
    let mut out = Spec {
        default: ("info", "info"),
        loggers: std::collections::BTreeMap::new(),
    };
    for term in spec.split(':') {
        let term = term.trim();
        let mut parts = term.split('=');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(""), None, _) => out.default = ("info", "info"),
            (Some(lvl), None, _) => out.default = level(lvl)?,
            (Some(loggers), Some(lvl), None) => {
                if loggers.trim().is_empty() {
                    return Err(SpecError(format!("{term:?}: empty logger name")));
                }
                let lvl = level(lvl)?;
                for logger in loggers.split(',') {
                    let logger = logger.trim();
                    if !valid_logger(logger) {
                        return Err(SpecError(format!("{term:?}: bad logger name {logger:?}")));
                    }
                    out.loggers.insert(logger.to_owned(), lvl);
                }
            }
            _ => return Err(SpecError(format!("{term:?}: more than one '='"))),
        }
    }
    Ok(out)
}

/// Translates a Fabric logging spec into `tracing` filter directives (`info,
/// fabric_gossip_core=debug, ...`). Where several loggers cover one target the most
/// specific wins, as Fabric takes a logger's level from the longest name in the spec that
/// is a prefix of it (`gossip.comm=debug:gossip=warn` leaves comm at debug); a Rust target
/// named as it is beats any Fabric name covering it. Two Fabric names of one depth that
/// cover the same target (`peer` and `nodeCmd`) resolve in name order, the later winning.
pub(crate) fn directives(spec: &str) -> Result<String, SpecError> {
    let spec = parse(spec)?;
    let mut named: Vec<(&String, &(&str, &str))> = spec.loggers.iter().collect();
    named.sort_by_cached_key(|(logger, _)| {
        // A Rust target is the name `targets` maps to itself.
        let is_target = targets(logger) == [logger.trim_end_matches('.')];
        // A name ending in `.` is the logger exactly, which Fabric looks up first: it
        // beats any name merely covering the logger, even a deeper one mapped onto it.
        let exact = logger.ends_with('.');
        (
            is_target,
            exact,
            logger.trim_end_matches('.').split('.').count(),
        )
    });
    let mut levels: Vec<(&str, &str)> = Vec::new();
    for (logger, (_, lvl)) in named {
        for t in targets(logger) {
            match levels.iter_mut().find(|(target, _)| *target == t) {
                Some(slot) => slot.1 = lvl,
                None => levels.push((t, lvl)),
            }
        }
    }
    let mut all = vec![spec.default.1.to_owned()];
    all.extend(levels.iter().map(|(t, l)| format!("{t}={l}")));
    Ok(all.join(","))
}

/// A valid Fabric spec as it is in force, for `/logspec` to read back as a Fabric peer
/// writes it (`LoggerLevels.Spec()`): the `logger=level` terms one logger each, sorted,
/// levels under their zap names (`WARNING` is `warn`), the default level last. `""` reads
/// back as `info`; `WARNING:msp,gossip=DEBUG` as `gossip=debug:msp=debug:warn`. Read back
/// as typed, a spec drifted from what a peer says, and tools comparing the two never
/// agreed.
fn in_force(spec: &str) -> String {
    match parse(spec) {
        Ok(p) => {
            let mut terms: Vec<String> = p
                .loggers
                .iter()
                .map(|(logger, (name, _))| format!("{logger}={name}"))
                .collect();
            terms.sort();
            terms.push(p.default.0.to_owned());
            terms.join(":")
        }
        Err(_) => spec.trim().to_owned(),
    }
}

/// A filter and the spec it was made from.
pub(crate) struct Filter {
    pub(crate) filter: EnvFilter,
    /// Where it came from, for the first log line.
    pub(crate) source: String,
    /// The spec in force, for `/logspec`: a Fabric spec as [`in_force`] shows it, or
    /// RUST_LOG's directives as given.
    pub(crate) spec: String,
}

/// The installed filter, replaceable at run time (the operations service's `/logspec`,
/// as on a Fabric peer).
static ACTIVE: OnceLock<(reload::Handle<EnvFilter, Registry>, Mutex<String>)> = OnceLock::new();

/// The spec in force.
pub(crate) fn current_spec() -> Option<String> {
    ACTIVE
        .get()
        .map(|(_, s)| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
}

/// Replaces the filter with a Fabric spec's.
pub(crate) fn set_spec(spec: &str) -> Result<(), SpecError> {
    let (handle, current) = ACTIVE
        .get()
        .ok_or_else(|| SpecError("no logger is installed".into()))?;
    let d = directives(spec)?;
    let filter = EnvFilter::builder()
        .parse(&d)
        .map_err(|e| SpecError(e.to_string()))?;
    handle
        .reload(filter)
        .map_err(|e| SpecError(e.to_string()))?;
    let spec = in_force(spec);
    tracing::info!(target: TARGET, "log spec changed to {spec:?}");
    *current.lock().unwrap_or_else(PoisonError::into_inner) = spec;
    Ok(())
}

/// The filter to use: `--log-spec`, else `FABRIC_LOGGING_SPEC`, else `RUST_LOG`, else
/// `default` (a Fabric level).
pub(crate) fn filter(flag: Option<&str>, default: &str) -> Result<Filter, SpecError> {
    let fabric = |spec: &str, what: &str| -> Result<Filter, SpecError> {
        let d = directives(spec).map_err(|e| SpecError(format!("{what} {spec:?}: {e}")))?;
        let filter = EnvFilter::builder()
            .parse(&d)
            .map_err(|e| SpecError(format!("{what} {spec:?}: {e}")))?;
        Ok(Filter {
            filter,
            source: format!("{what} {spec:?}"),
            spec: in_force(spec),
        })
    };
    if let Some(spec) = flag {
        return fabric(spec, "--log-spec");
    }
    if let Ok(spec) = std::env::var("FABRIC_LOGGING_SPEC")
        && !spec.trim().is_empty()
    {
        return fabric(&spec, "FABRIC_LOGGING_SPEC");
    }
    if let Ok(rust) = std::env::var("RUST_LOG")
        && !rust.trim().is_empty()
    {
        let filter = EnvFilter::builder()
            .parse(&rust)
            .map_err(|e| SpecError(format!("RUST_LOG {rust:?}: {e}")))?;
        return Ok(Filter {
            filter,
            source: format!("RUST_LOG {rust:?}"),
            spec: rust.trim().to_owned(),
        });
    }
    fabric(default, "the default level")
}

/// Writes each field of a log line as tracing's own formatter does (the message, then
/// `name=value`, space-separated), but with control characters escaped as Rust escapes
/// them (`\n`, `\u{1b}`): peers choose some of what is logged (a member's endpoints,
/// the error text a remote sends), and tracing writes `%` fields raw. An attack
/// (2026-12-02) put a newline and a terminal escape in a member's endpoint and forged a
/// whole log line, coloured.
pub(crate) fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(|w, field, value| {
        let name = field.name();
        if name.starts_with("log.") {
            return Ok(());
        }
        let text = format!("{value:?}");
        let text = crate::out::escape_controls(&text);
        match name {
            "message" => write!(w, "{text}"),
            _ => write!(w, "{}={text}", name.trim_start_matches("r#")),
        }
    })
    .delimited(" ")
}

/// How lines are written (`FABRIC_LOGGING_FORMAT`): tracing's text, or one of Fabric's two
/// structured encodings, for pipelines that parse a peer's logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// tracing's text format (Fabric's console layout is not reproduced).
    Text,
    /// Fabric's `json`: zap's production encoder, one object a line.
    Json,
    /// Fabric's `logfmt`: `key=value` pairs.
    Logfmt,
}

impl Format {
    /// `FABRIC_LOGGING_FORMAT` as a Fabric peer reads it: `json`, `logfmt`, else a console
    /// layout (returned as `Err` with the text, which this tool does not reproduce).
    pub(crate) fn from_env() -> Result<Format, String> {
        match std::env::var("FABRIC_LOGGING_FORMAT").as_deref() {
            Err(_) | Ok("") => Ok(Format::Text),
            Ok("json") => Ok(Format::Json),
            Ok("logfmt") => Ok(Format::Logfmt),
            Ok(other) => Err(other.to_owned()),
        }
    }
}

/// The Fabric logger a tracing target logs for: the [`LOGGERS`] entry with the longest
/// target that is it or its parent (`fabric_gossip_cli::certmonitor` is `certmonitor`,
/// `fabric_gossip_discovery::machine` is `gossip.discovery`), else the target itself.
fn fabric_logger(target: &str) -> &str {
    let mut best: Option<(&str, usize)> = None;
    for (name, ts) in LOGGERS {
        for t in *ts {
            let hit = target == *t
                || target
                    .strip_prefix(t)
                    .is_some_and(|rest| rest.starts_with("::"));
            if hit && best.is_none_or(|(_, len)| t.len() > len) {
                best = Some((name, t.len()));
            }
        }
    }
    best.map_or(target, |(name, _)| name)
}

/// An event's fields: the message, and the others as JSON values (numbers and booleans
/// as such, the rest as text).
#[derive(Default)]
struct EventFields {
    message: String,
    fields: Vec<(String, serde_json::Value)>,
}

impl tracing::field::Visit for EventFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, serde_json::Value::from(value));
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, serde_json::Value::from(value));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, serde_json::Value::from(value));
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, serde_json::Value::from(value));
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.put(field, serde_json::Value::from(format!("{value:?}")));
    }
}

impl EventFields {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        let name = field.name();
        if name == "message" {
            self.message = match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
        } else if !name.starts_with("log.") {
            self.fields
                .push((name.trim_start_matches("r#").to_owned(), value));
        }
    }
}

/// Writes each event as Fabric's `json` or `logfmt` encoding does (zap's production
/// encoder with Fabric's `name` key): `level` (lower case; tracing's `trace` is `debug`),
/// `ts` (seconds since the epoch), `name` (the Fabric logger, see [`fabric_logger`]),
/// `caller` (`dir/file.rs:line`), `msg`, then the event's own fields and, under `span`,
/// the spans it is in (`gossip_stream{stream=s0.1 ...}`), which carry the peer a
/// connection's lines are about.
struct FabricEncoding {
    json: bool,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for FabricEncoding
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing::Level;
        let meta = event.metadata();
        let mut ev = EventFields::default();
        event.record(&mut ev);
        let level = match *meta.level() {
            Level::TRACE | Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let caller = meta.file().map(|file| {
            // zap's short caller: the file and its directory.
            let mut parts = file.rsplitn(3, '/');
            let (f, dir) = (parts.next().unwrap_or(file), parts.next());
            let short = dir.map_or_else(|| f.to_owned(), |d| format!("{d}/{f}"));
            format!("{short}:{}", meta.line().unwrap_or(0))
        });
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                match ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    Some(f) if !f.is_empty() => spans.push(format!("{}{{{f}}}", span.name())),
                    _ => spans.push(span.name().to_owned()),
                }
            }
        }
        let mut pairs: Vec<(String, serde_json::Value)> = vec![
            ("level".into(), level.into()),
            ("ts".into(), ts.into()),
            ("name".into(), fabric_logger(meta.target()).into()),
        ];
        if let Some(c) = caller {
            pairs.push(("caller".into(), c.into()));
        }
        pairs.push(("msg".into(), ev.message.into()));
        pairs.extend(ev.fields);
        if !spans.is_empty() {
            pairs.push(("span".into(), spans.join(":").into()));
        }
        if self.json {
            // In zap's order (level, ts, name, caller, msg, fields), which a map would sort.
            writer.write_char('{')?;
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    writer.write_char(',')?;
                }
                write!(writer, "{}:{}", json_text(k), json_value(v))?;
            }
            writeln!(writer, "}}")
        } else {
            let mut first = true;
            for (k, v) in pairs {
                if !std::mem::take(&mut first) {
                    writer.write_char(' ')?;
                }
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                write!(writer, "{k}={}", logfmt_value(&text))?;
            }
            writeln!(writer)
        }
    }
}

/// A logfmt value: as it is when it has no space, `=`, quote or control character, else
/// quoted with those escaped (JSON's escapes, as zaplogfmt writes them).
fn logfmt_value(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = !s.is_empty()
        && !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '=' | '"' | '\\') || breaks(c)
        });
    if plain {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(json_text(s))
    }
}

/// Characters JSON leaves as they are but terminals, line splitters and readers do not:
/// DEL, the C1 controls (U+009B starts a terminal escape on its own), the Unicode line and
/// paragraph separators, and the format characters that show as nothing or reorder what
/// follows ([`fabric_gossip_core::is_unseen`]). Escaped in structured lines, as the text
/// format escapes them.
fn breaks(c: char) -> bool {
    fabric_gossip_core::is_unseen(c)
}

/// `s` as a JSON string, [`breaks`] characters escaped too.
fn json_text(s: &str) -> String {
    let quoted = serde_json::Value::from(s).to_string();
    if !quoted.chars().any(breaks) {
        return quoted;
    }
    let mut out = String::with_capacity(quoted.len() + 8);
    for c in quoted.chars() {
        if breaks(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON value, its strings as [`json_text`] writes them.
fn json_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => json_text(s),
        other => other.to_string(),
    }
}

/// Installs the stderr logger. Colours only on a terminal, so that files and journald get
/// plain text; Fabric's `json` or `logfmt` encoding with `FABRIC_LOGGING_FORMAT`.
pub(crate) fn init(f: Filter) {
    use std::io::IsTerminal;
    let (filter, handle) = reload::Layer::new(f.filter);
    let format = Format::from_env();
    let structured = match format {
        Ok(Format::Json) => Some(true),
        Ok(Format::Logfmt) => Some(false),
        _ => None,
    };
    let text = structured.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .fmt_fields(escaped_fields())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let fabric = structured.map(|json| {
        tracing_subscriber::fmt::layer()
            .event_format(FabricEncoding { json })
            .fmt_fields(escaped_fields())
            .with_writer(std::io::stderr)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(fabric)
        .try_init();
    if installed.is_ok() {
        let _ = ACTIVE.set((handle, Mutex::new(f.spec)));
    }
    if let Err(layout) = format {
        tracing::warn!(
            target: TARGET,
            "FABRIC_LOGGING_FORMAT {layout:?}: a console layout is not reproduced here; \
             lines are tracing's text (json and logfmt are Fabric's encodings)"
        );
    }
    tracing::debug!(target: TARGET, "log filter from {}", f.source);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::sync::Arc;

    /// A log writer the test reads back (the other modules' log tests use it too).
    #[derive(Clone, Default)]
    pub(crate) struct Buf(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Buf {
        /// What was written, as text.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("buffer").clone()).expect("UTF-8")
        }
    }

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A subscriber writing each event as a line without colours into `buf`.
    pub(crate) fn plain_log(buf: &Buf) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// What `f` logs, one line an event, without colours.
    pub(crate) fn logged(f: impl FnOnce()) -> String {
        let buf = Buf::default();
        tracing::subscriber::with_default(plain_log(&buf), f);
        buf.text()
    }

    /// A peer's newline or terminal escape in a logged field cannot start a line of its own
    /// or reach the terminal; plain text is as tracing writes it.
    #[test]
    fn control_characters_in_logged_fields_are_escaped() {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let forged = "evil:1\n2026-12-02T00:00:00Z  INFO member purged \x1b[31mForged\x1b[0m";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(endpoint = %forged, seq = 7, "member alive: {}", "a\u{9b}b");
            tracing::info!(endpoint = %"peer0:7051", "plain");
        });
        let out = String::from_utf8(buf.0.lock().expect("buffer").clone()).expect("UTF-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\u{9b}'), "{out:?}");
        assert!(
            lines[0].ends_with(
                "member alive: a\\u{9b}b endpoint=evil:1\\n2026-12-02T00:00:00Z  INFO \
                 member purged \\u{1b}[31mForged\\u{1b}[0m seq=7"
            ),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("plain endpoint=peer0:7051"),
            "{}",
            lines[1]
        );
        assert!(
            !out.contains("message="),
            "the message is written bare: {out}"
        );
    }

    /// `FABRIC_LOGGING_FORMAT=json`: one JSON object a line with zap's production keys and
    /// Fabric's logger name, so pipelines parsing a peer's logs parse these; `logfmt` the
    /// same pairs. A peer's newline in a field cannot start a line of its own in either.
    /// What `log` writes in Fabric's `json` (or `logfmt`) encoding.
    fn encoded(json: bool, log: impl FnOnce()) -> String {
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(FabricEncoding { json })
            .fmt_fields(escaped_fields())
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        buf.text()
    }

    #[test]
    fn fabrics_json_and_logfmt_encodings() {
        let run = |json: bool| {
            encoded(json, || {
                let span = tracing::info_span!("gossip_stream", stream = %"s0.1");
                let _in = span.enter();
                tracing::warn!(
                    target: "fabric_gossip_discovery::machine",
                    endpoint = %"evil:1\nforged line\u{9b}\u{2028}\u{202e}",
                    seq = 7u64,
                    "member alive"
                );
                tracing::info!(target: crate::expiry::CERTMONITOR, "expires soon");
            })
        };
        let out = run(true);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON object a line"))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        let v = &lines[0];
        assert_eq!(v["level"], "warn");
        assert_eq!(v["name"], "gossip.discovery");
        assert_eq!(v["msg"], "member alive");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["endpoint"], "evil:1\nforged line\u{9b}\u{2028}\u{202e}");
        assert!(v["ts"].as_f64().is_some_and(|t| t > 1.7e9), "{v}");
        assert!(
            v["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("src/logging.rs:")),
            "{v}"
        );
        assert_eq!(v["span"], "gossip_stream{stream=s0.1}");
        assert_eq!(lines[1]["name"], "certmonitor");
        // zap's key order, and the characters JSON leaves raw escaped.
        let first = out.lines().next().expect("a line");
        assert!(first.starts_with(r#"{"level":"warn","ts":"#), "{first}");
        assert!(
            first.find(r#""name":"#) < first.find(r#""caller":"#)
                && first.find(r#""caller":"#) < first.find(r#""msg":"#),
            "{first}"
        );
        assert!(first.contains(r"\u009b\u2028\u202e"), "{first}");
        assert!(
            !first.contains('\u{9b}') && !first.contains('\u{2028}') && !first.contains('\u{202e}'),
            "{first}"
        );
        let out = run(false);
        let first = out.lines().next().expect("a line");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(first.starts_with("level=warn ts="), "{first}");
        assert!(
            first.contains(" name=gossip.discovery ")
                && first.contains(r#" msg="member alive" "#)
                && first.contains(r#" endpoint="evil:1\nforged line\u009b\u2028\u202e" "#)
                && first.contains(" seq=7 "),
            "{first}"
        );
    }

    /// Text, negative numbers and booleans keep their JSON types; a span without
    /// fields is its bare name; the CLI's own lines are `nodeCmd`'s (the first of the three
    /// loggers mapped onto its target). In logfmt a value is quoted whenever it holds what
    /// would split or end it: `=`, a quote, a backslash, a control character, or nothing.
    #[test]
    fn fields_keep_their_types_and_logfmt_quotes_what_would_split_a_value() {
        let log = || {
            let node = tracing::info_span!("node");
            let _node = node.enter();
            let stream = tracing::info_span!("gossip_stream", stream = %"s0.1");
            let _stream = stream.enter();
            tracing::info!(
                target: TARGET,
                text = "plain",
                eq = "a=b",
                quote = "\"hi\"",
                backslash = "C:\\x",
                control = "a\u{1}b",
                empty = "",
                signed = -3i64,
                flag = true,
                "sent"
            );
        };
        let out = encoded(true, log);
        let v: Value = serde_json::from_str(out.trim_end()).expect("one JSON object");
        assert_eq!(v["name"], "nodeCmd", "{v}");
        assert_eq!(v["span"], "node:gossip_stream{stream=s0.1}", "{v}");
        assert_eq!(
            (&v["text"], &v["eq"], &v["signed"], &v["flag"]),
            (&json!("plain"), &json!("a=b"), &json!(-3), &json!(true)),
            "{v}"
        );
        let out = encoded(false, log);
        let want = r#" msg=sent text=plain eq="a=b" quote="\"hi\"" backslash="C:\\x" control="a\u0001b" empty="" signed=-3 flag=true span="node:gossip_stream{stream=s0.1}""#;
        assert!(out.trim_end().ends_with(want), "{out}");
        assert!(out.contains(" name=nodeCmd "), "{out}");
    }

    #[test]
    fn a_target_logs_for_the_most_specific_fabric_logger() {
        for (target, name) in [
            ("fabric_gossip_discovery::machine", "gossip.discovery"),
            (
                fabric_gossip_discovery::BOOTSTRAP_TARGET,
                "gossip.discovery.bootstrap",
            ),
            (
                fabric_gossip_discovery::MEMBERS_TARGET,
                "gossip.discovery.members",
            ),
            (crate::expiry::CERTMONITOR, "certmonitor"),
            ("fabric_gossip_cli", "nodeCmd"),
            ("somebody_else", "somebody_else"),
        ] {
            assert_eq!(fabric_logger(target), name, "{target}");
        }
    }

    #[test]
    fn fabric_specs_become_target_directives() {
        for (spec, want) in [
            ("info", "info"),
            ("", "info"),
            (
                "gossip.comm=debug:info",
                "info,fabric_gossip_core=debug,fabric_gossip_tonic=debug",
            ),
            // A parent name covers its children; order of terms does not matter.
            (
                "warning:gossip=debug",
                "warn,fabric_gossip_core=debug,fabric_gossip_tonic=debug,\
                 fabric_gossip_discovery=debug,fabric_gossip_sim=debug",
            ),
            // `watch`'s default: the failed bootstrap attempts and the member lines alone
            // quieter.
            (
                WATCH_SPEC,
                "warn,fabric_gossip_discovery::bootstrap=error,\
                 fabric_gossip_discovery::members=error",
            ),
            // `demo`'s default: the member lines alone quieter.
            (DEMO_SPEC, "warn,fabric_gossip_discovery::members=error"),
            // A name below two of ours means the more specific one.
            (
                "gossip.discovery.bootstrap.dial=debug:info",
                "info,fabric_gossip_discovery::bootstrap=debug",
            ),
            (
                "gossip.discovery,msp=error:debug",
                "debug,fabric_gossip_msp=error,fabric_gossip_discovery=error",
            ),
            // The most specific logger wins, whatever the order of the terms.
            (
                "gossip.comm=debug:gossip=warn",
                "info,fabric_gossip_core=debug,fabric_gossip_tonic=debug,\
                 fabric_gossip_discovery=warn,fabric_gossip_sim=warn",
            ),
            // The last default wins; an empty term is `info`; Fabric's aliases.
            ("info:debug", "debug"),
            ("debug:", "info"),
            ("gossip.sim=notice:critical", "error,fabric_gossip_sim=info"),
            ("gossip.sim=payload", "info,fabric_gossip_sim=trace"),
            // A deeper Fabric name than ours means our logger.
            (
                "gossip.comm.conn=WARN",
                "info,fabric_gossip_core=warn,fabric_gossip_tonic=warn",
            ),
            ("nodeCmd=debug", "info,fabric_gossip_cli=debug"),
            // Rust targets are taken as they are; loggers with nothing here are ignored.
            (
                "fabric_gossip_msp=debug:ledger=debug:fatal",
                "error,fabric_gossip_msp=debug",
            ),
        ] {
            assert_eq!(directives(spec).unwrap(), want, "{spec:?}");
        }
    }

    /// What `/logspec` reads back is the spec in force: an empty spec (or one of empty
    /// terms) is Fabric's default level, `info`, and a spec without a default level has
    /// `info` as its default.
    #[test]
    fn specs_read_back_as_they_are_in_force() {
        for (spec, back) in [
            ("", "info"),
            ("  ", "info"),
            (":", "info"),
            ("info", "info"),
            (" warning ", "warn"),
            ("INFO", "info"),
            ("gossip=debug", "gossip=debug:info"),
            ("gossip=warning", "gossip=warn:info"),
            ("nodeCmd=debug:info", "nodeCmd=debug:info"),
            // Fabric's `Spec()`: one logger a term, sorted, the default last; an empty
            // term resets the default to info.
            ("WARNING:msp,gossip=DEBUG", "gossip=debug:msp=debug:warn"),
            ("error: msp=debug :", "msp=debug:info"),
            (
                "msp=debug:gossip.comm=error:msp=warn",
                "gossip.comm=error:msp=warn:info",
            ),
            ("info:debug", "debug"),
        ] {
            assert_eq!(in_force(spec), back, "{spec:?}");
            assert_eq!(
                filter(Some(spec), "warning").unwrap().spec,
                back,
                "{spec:?}"
            );
        }
    }

    #[test]
    fn bad_specs_name_the_part_at_fault() {
        assert!(directives("verbose").unwrap_err().0.contains("\"verbose\""));
        assert!(
            directives("gossip=loud")
                .unwrap_err()
                .0
                .contains("unknown level \"loud\"")
        );
        assert!(directives("=debug").unwrap_err().0.contains("empty logger"));
        assert!(
            directives("a=b=debug")
                .unwrap_err()
                .0
                .contains("more than one")
        );
        for bad in [
            "gossip..comm=debug",
            ".gossip=debug",
            "go ssip=debug",
            "a[0]=debug",
        ] {
            assert!(
                directives(bad).unwrap_err().0.contains("bad logger name"),
                "{bad}"
            );
        }
        // A trailing dot is Fabric's "exactly this logger": `gossip.` is none of ours.
        assert_eq!(directives("gossip.=debug").unwrap(), "info");
        // The exact name beats a deeper one mapped onto the same logger, as in Fabric.
        assert_eq!(
            directives("gossip.comm.=warn:gossip.comm.conn=debug").unwrap(),
            "info,fabric_gossip_core=warn,fabric_gossip_tonic=warn"
        );
        assert!(directives("ö=debug").is_err(), "Go's [[:alnum:]] is ASCII");
        assert_eq!(
            directives("gossip.comm.=debug").unwrap(),
            "info,fabric_gossip_core=debug,fabric_gossip_tonic=debug"
        );
        // A Rust target named as it is beats a Fabric name covering it.
        assert_eq!(
            directives("fabric_gossip_core=debug:gossip=warn").unwrap(),
            "info,fabric_gossip_core=debug,fabric_gossip_tonic=warn,\
             fabric_gossip_discovery=warn,fabric_gossip_sim=warn"
        );
        assert_eq!(
            filter(Some("gossip=nope"), "info")
                .err()
                .map(|e| e.to_string()),
            Some(
                "--log-spec \"gossip=nope\": unknown level \"nope\" (payload, debug, info, \
                 notice, warn, warning, error, critical, dpanic, panic, fatal, trace, off)"
                    .to_owned()
            )
        );
    }

    /// README walk-through finding 8: the error listed six levels of the thirteen
    /// accepted. Every name it lists is accepted, and every accepted one is listed.
    #[test]
    fn the_unknown_level_error_lists_every_accepted_level() {
        let e = level("loud").unwrap_err().0;
        let (_, list) = e.split_once('(').expect("a list");
        let names: Vec<&str> = list.trim_end_matches(')').split(", ").collect();
        for name in &names {
            assert!(level(name).is_ok(), "{name} listed but refused");
        }
        for name in [
            "payload", "debug", "info", "notice", "warn", "warning", "error", "critical", "dpanic",
            "panic", "fatal", "trace", "off",
        ] {
            assert!(level(name).is_ok() && names.contains(&name), "{name}: {e}");
        }
    }

    #[test]
    fn every_mapped_directive_is_a_valid_filter() {
        for (name, _) in LOGGERS {
            let d = directives(&format!("{name}=debug:info")).unwrap();
            EnvFilter::builder().parse(&d).unwrap();
        }
    }
}
