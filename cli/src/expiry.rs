//! When the node's own certificates expire, tracked as a Fabric peer tracks them.
//!
//! A peer whose enrollment certificate expires is dropped by every other peer, and one whose
//! TLS certificate expires cannot connect: the usual way a Fabric network breaks a year after
//! it was set up. A Fabric peer logs each certificate's expiry at start and warns a week
//! before (`common/crypto/expiration.go`, `TrackExpiration`); `node` does the same, with
//! Fabric's messages so that the same log alerts match, prints the dates in its `listening`
//! line, and serves the time left as a metric.

use crate::logging::TARGET;
use crate::opts::{ConfigError, Identity, TlsArgs};
use fabric_gossip_core::Instant;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

const ONE_WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The node's certificates, each with its NotAfter: `enrollment` (the MSP identity),
/// `server TLS` and, when separate, `client TLS`, as Fabric names them.
#[derive(Clone, Debug, Default)]
pub(crate) struct OwnCertificates(Vec<(&'static str, Instant)>);

impl OwnCertificates {
    /// Reads them from the loaded identity (none for a test identity) and the TLS files.
    pub(crate) fn read(identity: &Identity, tls: &TlsArgs) -> Result<Self, ConfigError> {
        let mut certs = Vec::new();
        if let Identity::Msp(s) = identity {
            let not_after = s.own_expiration().as_unix_nanos().saturating_sub(1);
            certs.push(("enrollment", Instant::from_unix_nanos(not_after)));
        }
        let files = [
            ("server TLS", &tls.tls_cert),
            ("client TLS", &tls.tls_client_cert),
        ];
        for (role, path) in files {
            let Some(path) = path else { continue };
            let pem =
                std::fs::read(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let at = fabric_gossip_msp::certificate_not_after(&pem, &path.display().to_string())
                .map_err(|e| ConfigError(e.to_string()))?;
            certs.push((role, at));
        }
        Ok(OwnCertificates(certs))
    }

    /// `{"enrollment": MS, "server_tls": MS, "client_tls": MS}`: each NotAfter in Unix
    /// milliseconds, for the `listening` line.
    pub(crate) fn json(&self) -> Value {
        let map: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(role, at)| (key(role), json!(at.as_unix_nanos() / 1_000_000)))
            .collect();
        Value::Object(map)
    }

    /// Seconds left until each expires (0 once expired), labelled `enrollment`,
    /// `server_tls`, `client_tls`, for the metric.
    pub(crate) fn seconds_left(&self, now: Instant) -> Vec<(String, u64)> {
        self.0
            .iter()
            .map(|(role, at)| {
                let left = at.saturating_duration_since(now).as_secs();
                (key(role), left)
            })
            .collect()
    }

    /// Logs each certificate's expiry as a Fabric peer does at start, then warns one week
    /// before each expires, for as long as the runtime runs.
    pub(crate) fn track(&self) {
        let now = Instant::from_system_time(SystemTime::now());
        for &(role, at) in &self.0 {
            if let Some(warn_in) = log_at_start(role, at, now) {
                tokio::spawn(async move {
                    // Far deadlines are reached a day at a time, within any timer's range.
                    let wake = tokio::time::Instant::now() + warn_in;
                    while tokio::time::Instant::now() < wake {
                        let step = wake.saturating_duration_since(tokio::time::Instant::now());
                        tokio::time::sleep(step.min(Duration::from_secs(24 * 3600))).await;
                    }
                    tracing::warn!(target: TARGET, "The {role} certificate will expire within one week");
                });
            }
        }
    }
}

/// A role as a JSON key and metric label: `server TLS` → `server_tls`.
fn key(role: &str) -> String {
    role.to_ascii_lowercase().replace(' ', "_")
}

/// Fabric's messages at start for certificate `role` expiring at `at`; when it expires more
/// than a week from `now`, how long until the warning a week before.
fn log_at_start(role: &str, at: Instant, now: Instant) -> Option<Duration> {
    let Some(left) = (at > now).then(|| at - now) else {
        tracing::warn!(target: TARGET, "The {role} certificate has expired");
        return None;
    };
    tracing::info!(target: TARGET, "The {role} certificate will expire on {}", utc(at));
    if left < ONE_WEEK {
        let hours = left.as_secs() / 3600;
        tracing::warn!(
            target: TARGET,
            "The {role} certificate expires within {} days and {} hours",
            hours / 24,
            hours % 24
        );
        return None;
    }
    Some(left - ONE_WEEK)
}

/// `at` as an RFC 3339 UTC date, `2036-11-28T10:12:00Z`.
fn utc(at: Instant) -> String {
    let secs = i64::try_from(at.as_unix_nanos() / 1_000_000_000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_comes_a_week_before_and_at_once_within_the_week() {
        let now = Instant::from_unix_secs(1_000_000_000);
        let in_days = |d: u64| now + Duration::from_secs(d * 24 * 3600);
        assert_eq!(
            log_at_start("enrollment", in_days(30), now),
            Some(Duration::from_secs(23 * 24 * 3600))
        );
        assert_eq!(log_at_start("server TLS", in_days(3), now), None);
        assert_eq!(
            log_at_start("client TLS", Instant::from_unix_secs(1), now),
            None
        );
    }

    #[test]
    fn dates_read_as_rfc_3339() {
        assert_eq!(
            utc(Instant::from_unix_secs(2_111_479_920)),
            "2036-11-28T10:12:00Z"
        );
    }

    #[test]
    fn dates_and_time_left_by_role() {
        let now = Instant::from_unix_secs(1_000_000_000);
        let certs = OwnCertificates(vec![
            ("enrollment", Instant::from_unix_secs(1_000_086_400)),
            ("server TLS", Instant::from_unix_secs(999_000_000)),
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
}
