//! When the node's own certificates expire, tracked as a Fabric peer tracks them.
//!
//! A peer whose enrollment certificate expires is dropped by every other peer, and one whose
//! TLS certificate expires cannot connect: the usual way a Fabric network breaks a year after
//! it was set up. A Fabric peer logs its enrollment and server TLS certificates' expiry at
//! start and warns a week before (`common/crypto/expiration.go`, `TrackExpiration`, logger
//! `certmonitor`); `node` does the same with Fabric's messages, logger name and date format,
//! so that the same log alerts match. It also tracks a separate client TLS certificate
//! (which a Fabric peer hands over in a form its tracker cannot read, so never reports),
//! prints the dates in its `listening` line, and serves the time left as a metric.

use crate::opts::{Identity, TlsArgs};
use fabric_gossip_core::Instant;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

const ONE_WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The tracing target of these messages: Fabric's `certmonitor` logger
/// (`FABRIC_LOGGING_SPEC=certmonitor=warn`).
pub(crate) const CERTMONITOR: &str = "fabric_gossip_cli::certmonitor";

/// Now, by the wall clock, in core time.
pub(crate) fn wall_now() -> Instant {
    Instant::from_system_time(SystemTime::now())
}

/// Where the wall clock is from the running node's time, which its driver keeps up to date
/// (`MspSecurity::wall_clock_offset`); unset (zero) for a test identity. One node runs per
/// process.
static WALL_OFFSET: std::sync::OnceLock<fabric_gossip_msp::WallClockOffset> =
    std::sync::OnceLock::new();

/// Follows the node's wall clock offset from now on (the first call wins).
pub(crate) fn follow_wall_clock(offset: fabric_gossip_msp::WallClockOffset) {
    let _ = WALL_OFFSET.set(offset);
}

/// The followed node's offset, or none (zero) for a test identity.
fn wall_offset() -> fabric_gossip_msp::WallClockOffset {
    WALL_OFFSET.get().cloned().unwrap_or_default()
}

/// Now on the node's time, the scale of the times its layer reports (a member's last alive
/// message, its identity's expiry): the wall clock unless it was stepped since start.
pub(crate) fn node_now() -> Instant {
    wall_offset().to_node(wall_now())
}

/// A time the node reports (its scale) on the wall clock, for dates shown to people.
pub(crate) fn on_wall_clock(at: Instant) -> Instant {
    wall_offset().to_wall(at)
}

/// Unix milliseconds of `at`, for JSON.
pub(crate) fn unix_ms(at: Instant) -> u64 {
    at.as_unix_nanos() / 1_000_000
}

/// Unix milliseconds of a certificate date, for JSON (0 before 1970).
pub(crate) fn date_unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The NotAfter of a certificate from the first instant at which it is expired, the form
/// providers give (`Security::expiration`: Go's `now.After(NotAfter)` is then true).
pub(crate) fn not_after(expired_from: Instant) -> Instant {
    Instant::from_unix_nanos(expired_from.as_unix_nanos().saturating_sub(1))
}

/// Unix milliseconds, for JSON, of the NotAfter of a certificate the node holds as the
/// first instant it is expired on its own time (a member's `identity_expires`): on the
/// wall clock, to the whole second. A certificate's dates are whole seconds (RFC 5280),
/// and the node's time stands a few milliseconds off the wall clock, differently at each
/// reading (its coarse monotonic clock ticks every few milliseconds, and the offset is
/// read again every tick), so an expiry taken at one reading and shown at another came out
/// up to 4 ms either side of the date: a live check (2026-12-08) printed one NotAfter as
/// eight values, ...996 to ...003, across members and lines of the same member.
pub(crate) fn not_after_unix_ms(expired_from: Instant) -> u64 {
    let ms = unix_ms(not_after(on_wall_clock(expired_from)));
    ms.saturating_add(500) / 1000 * 1000
}

/// The NotAfter of the first certificate of a PEM file, read as leniently as the TLS
/// transport reads it; `None` if there is none that parses. A date, not an `Instant`, so
/// that 9999 (RFC 5280's "no expiration") is shown as such rather than as 2554.
pub(crate) fn pem_not_after(pem: &[u8]) -> Option<SystemTime> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    fabric_gossip_msp::certificate_not_after(&der, "").ok()
}

/// The node's certificates, each with its NotAfter: `enrollment` (the MSP identity),
/// `server TLS` and, when separate, `client TLS`, as Fabric names them.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnCertificates(Vec<(&'static str, SystemTime)>);

impl OwnCertificates {
    /// Reads them from the loaded identity (none for a test identity) and the TLS files. A
    /// file whose certificate cannot be read here (the transport has accepted it already) is
    /// left out with a warning, as Fabric's tracker leaves it out: a log line must not stop
    /// the node.
    pub(crate) fn read(identity: &Identity, tls: &TlsArgs) -> Self {
        let mut certs = Vec::new();
        match identity.enrollment_not_after() {
            Some(Ok(at)) => certs.push(("enrollment", at)),
            Some(Err(e)) => tracing::warn!(target: CERTMONITOR, "{e}; not tracked"),
            None => {}
        }
        let files = [
            ("server TLS", &tls.tls_cert),
            ("client TLS", &tls.tls_client_cert),
        ];
        for (role, path) in files {
            let Some(path) = path else { continue };
            // Read as every certificate file is: capped, regular files only.
            match fabric_gossip_msp::read_msp_file(path)
                .ok()
                .as_deref()
                .and_then(pem_not_after)
            {
                Some(at) => certs.push((role, at)),
                None => tracing::warn!(
                    target: CERTMONITOR,
                    "cannot read when the {role} certificate {} expires; not tracked",
                    path.display()
                ),
            }
        }
        OwnCertificates(certs)
    }

    /// `{"enrollment": MS, "server_tls": MS, "client_tls": MS}`: each NotAfter in Unix
    /// milliseconds, for the `listening` line.
    pub(crate) fn json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(role, at)| (key(role), json!(date_unix_ms(*at))))
            .collect();
        Value::Object(map)
    }

    /// Seconds left until each expires (0 once expired), labelled `enrollment`,
    /// `server_tls`, `client_tls`, for the metric.
    pub(crate) fn seconds_left(&self, now: SystemTime) -> Vec<(String, u64)> {
        self.0
            .iter()
            .map(|(role, at)| (key(role), left(*at, now).as_secs()))
            .collect()
    }

    /// Logs each certificate's expiry as a Fabric peer does at start, then warns one week
    /// before each expires, and says so when it expires (beyond Fabric, whose node goes on
    /// without a word while its peers refuse it: a day-2 trial found only their
    /// `refused_by_remote` lines), for as long as the runtime runs.
    pub(crate) fn track(&self) {
        let now = SystemTime::now();
        for &(role, at) in &self.0 {
            let warn_in = log_at_start(role, at, now);
            if at < now {
                continue;
            }
            // NotAfter is the last valid second.
            let expires_in = left(at, now) + Duration::from_secs(1);
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                if let Some(warn_in) = warn_in {
                    sleep_until(start + warn_in).await;
                    tracing::warn!(target: CERTMONITOR, "The {role} certificate will expire within one week");
                }
                sleep_until(start + expires_in).await;
                tracing::error!(
                    target: CERTMONITOR,
                    "The {role} certificate has expired: peers refuse this node from now on; \
                     renew it and restart the node"
                );
            });
        }
    }
}

/// Sleeps until `wake`, a day at a time, so that far deadlines stay within any timer's
/// range.
async fn sleep_until(wake: tokio::time::Instant) {
    while tokio::time::Instant::now() < wake {
        let step = wake.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(step.min(Duration::from_secs(24 * 3600))).await;
    }
}

/// A role as a JSON key and metric label: `server TLS` → `server_tls`.
fn key(role: &str) -> String {
    role.to_ascii_lowercase().replace(' ', "_")
}

/// Fabric's messages at start for certificate `role` expiring at `at` (its NotAfter, which
/// is still valid); when it expires more than a week from `now`, how long until the warning
/// a week before.
fn log_at_start(role: &str, at: SystemTime, now: SystemTime) -> Option<Duration> {
    if at < now {
        tracing::warn!(target: CERTMONITOR, "The {role} certificate has expired");
        return None;
    }
    let left = left(at, now);
    tracing::info!(target: CERTMONITOR, "The {role} certificate will expire on {}", go_date(at));
    if left < ONE_WEEK {
        let hours = left.as_secs() / 3600;
        // Fabric's words, then the minutes when they say "0 days and 0 hours".
        let minutes = if hours == 0 {
            format!(" ({} min)", left.as_secs() / 60)
        } else {
            String::new()
        };
        tracing::warn!(
            target: CERTMONITOR,
            "The {role} certificate expires within {} days and {} hours{minutes}",
            hours / 24,
            hours % 24
        );
        return None;
    }
    Some(left - ONE_WEEK)
}

/// Time from `now` until `at`, zero once it has passed.
fn left(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

/// `at` as Go prints a UTC `time.Time`, `2036-11-28 10:12:00 +0000 UTC`, as in Fabric's line.
fn go_date(at: SystemTime) -> String {
    let secs = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] +0000 UTC"
    );
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::{Buf, logged, plain_log};

    fn unix(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_warning_comes_a_week_before_and_at_once_within_the_week() {
        let now = unix(1_000_000_000);
        let in_days = |d: u64| now + Duration::from_secs(d * 24 * 3600);
        assert_eq!(
            log_at_start("enrollment", in_days(30), now),
            Some(Duration::from_secs(23 * 24 * 3600))
        );
        assert_eq!(log_at_start("server TLS", in_days(3), now), None);
        // A week exactly is not within the week: no warning at start, the week-before one at once.
        assert_eq!(
            log_at_start("server TLS", in_days(7), now),
            Some(Duration::ZERO)
        );
        // Expiring this very second is not yet expired (NotAfter is inclusive).
        assert_eq!(log_at_start("enrollment", now, now), None);
        assert_eq!(log_at_start("client TLS", unix(1), now), None);
    }

    #[test]
    fn tls_files_are_read_as_leniently_as_the_transport_reads_them() {
        let pem = include_str!("../../msp/tests/fixtures/node_ous/members/peer.pem");
        // Lines of 76 characters, as some tools write them: rustls reads them, so must this.
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let wrapped: Vec<&str> = body
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).expect("base64"))
            .collect();
        let rewrapped = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            wrapped.join("\n")
        );
        let expected = Some(unix(2_082_585_600));
        assert_eq!(pem_not_after(pem.as_bytes()), expected);
        assert_eq!(pem_not_after(rewrapped.as_bytes()), expected);
        assert_eq!(pem_not_after(b"no certificate here"), None);
    }

    #[test]
    fn dates_read_as_go_prints_them() {
        assert_eq!(
            go_date(unix(2_111_479_920)),
            "2036-11-28 10:12:00 +0000 UTC"
        );
        // RFC 5280's "no well-defined expiration date", past what the core's Instant holds.
        assert_eq!(
            go_date(unix(253_402_300_799)),
            "9999-12-31 23:59:59 +0000 UTC"
        );
    }

    #[test]
    fn dates_and_time_left_by_role() {
        let now = unix(1_000_000_000);
        let certs = OwnCertificates(vec![
            ("enrollment", unix(1_000_086_400)),
            ("server TLS", unix(999_000_000)),
        ]);
        assert_eq!(
            certs.json(),
            json!({"enrollment": 1_000_086_400_000u64, "server_tls": 999_000_000_000u64})
        );
        assert_eq!(
            certs.seconds_left(now),
            vec![
                ("enrollment".to_owned(), 86_400),
                ("server_tls".to_owned(), 0)
            ]
        );
    }

    /// Unix milliseconds are an instant's nanoseconds rounded down to the millisecond, and
    /// a NotAfter is the last nanosecond before the first expired one (none before 1970).
    #[test]
    fn milliseconds_and_not_after_of_core_instants() {
        let at = Instant::from_unix_nanos(2_082_585_600_999_999_999);
        assert_eq!(unix_ms(at), 2_082_585_600_999);
        assert_eq!(not_after(at).as_unix_nanos(), 2_082_585_600_999_999_998);
        assert_eq!(not_after(Instant::from_unix_nanos(0)).as_unix_nanos(), 0);
    }

    /// With no node followed, both scales are the wall clock.
    #[test]
    fn times_move_between_the_node_s_scale_and_the_wall_clock() {
        let at = Instant::from_unix_secs(1_700_000_000);
        assert_eq!(on_wall_clock(at), at);
    }

    /// The wall clock in core time is the system clock's reading.
    #[test]
    fn wall_now_reads_the_system_clock() {
        let before = Instant::from_system_time(SystemTime::now());
        let now = wall_now();
        let after = Instant::from_system_time(SystemTime::now());
        assert!(
            before <= now && now <= after,
            "{} not in [{}, {}]",
            now.as_unix_nanos(),
            before.as_unix_nanos(),
            after.as_unix_nanos()
        );
    }

    /// The node's own TLS certificates are read from their files, each under its role; a
    /// file that cannot be read is left out, and a test identity has no enrollment
    /// certificate.
    #[test]
    fn own_certificates_are_read_from_the_tls_files() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            tls: TlsArgs,
        }
        let pem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../msp/tests/fixtures/node_ous/members/peer.pem"
        );
        let tls = T::parse_from([
            "t",
            "--tls-cert",
            pem,
            "--tls-key",
            "unused.key",
            "--tls-client-cert",
            "/nonexistent/client.pem",
            "--tls-client-key",
            "unused.key",
        ])
        .tls;
        let certs = OwnCertificates::read(&Identity::Test, &tls);
        assert_eq!(certs.json(), json!({"server_tls": 2_082_585_600_000u64}));
    }

    /// Fabric's messages at start: an expired certificate is said to be; one expiring this
    /// very second, or within the week, has its date and the whole days and hours left.
    #[test]
    fn the_start_messages_say_expired_or_the_days_and_hours_left() {
        let now = unix(1_000_000_000);
        let log = logged(|| {
            log_at_start("enrollment", unix(999_999_999), now);
            log_at_start("client TLS", now, now);
            let soon = now + Duration::from_secs((2 * 24 + 5) * 3600 + 59);
            log_at_start("server TLS", soon, now);
        });
        let lines: Vec<&str> = log.lines().collect();
        let expected = [
            "The enrollment certificate has expired",
            "The client TLS certificate will expire on 2001-09-09 01:46:40 +0000 UTC",
            "The client TLS certificate expires within 0 days and 0 hours (0 min)",
            "The server TLS certificate will expire on 2001-09-11 06:47:39 +0000 UTC",
            "The server TLS certificate expires within 2 days and 5 hours",
        ];
        assert_eq!(lines.len(), expected.len(), "{log}");
        for (line, end) in lines.iter().zip(expected) {
            assert!(line.ends_with(end), "{line:?} does not end with {end:?}");
        }
    }

    /// The week-before warning comes when a week is left, not before, however far off the
    /// expiry (the wait is slept a day at a time).
    #[tokio::test(start_paused = true)]
    async fn the_week_before_warning_comes_when_a_week_is_left() {
        let buf = Buf::default();
        // This runtime runs the spawned wait on this thread, under this subscriber.
        let _logging = tracing::subscriber::set_default(plain_log(&buf));
        let warned = || {
            buf.text()
                .contains("The enrollment certificate will expire within one week")
        };
        let three_days = Duration::from_secs(3 * 24 * 3600);
        OwnCertificates(vec![(
            "enrollment",
            SystemTime::now() + ONE_WEEK + three_days,
        )])
        .track();
        tokio::time::sleep(three_days - Duration::from_secs(60)).await;
        assert!(!warned(), "warned before a week was left");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(warned(), "no warning once a week was left");
        // And a line when it expires, not before.
        let expired = || {
            buf.text()
                .contains("The enrollment certificate has expired: peers refuse this node")
        };
        tokio::time::sleep(ONE_WEEK - Duration::from_secs(120)).await;
        assert!(!expired(), "said expired before it was");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(expired(), "nothing said at expiry");
    }
}
