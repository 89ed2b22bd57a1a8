//! `node`'s flags for the tonic driver's protections against hostile remotes
//! (`fabric_gossip_tonic::DriverLimits`): how long and how many inbound connections may stay
//! unauthenticated, and how much memory half-sent messages and unread connections may hold.

use crate::membership::parse_duration;
use clap::Args;
use fabric_gossip_tonic::DriverLimits;
use std::time::Duration;

/// The driver's limits; each left out keeps `DriverLimits::default()`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct LimitArgs {
    /// Close an inbound connection that has no authenticated gossip stream after this long
    /// (TLS, HTTP/2 preface, GossipStream and handshake must all happen within it). Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    setup_timeout: Option<Duration>,
    /// Inbound connections held at once without an authenticated stream; one more evicts the
    /// least advanced of the address holding the most. Default 128.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_pending_connections: Option<u32>,
    /// Inbound connections held at once in all. Default 512.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_inbound_connections: Option<u32>,
    /// MiB held node-wide for messages that began to arrive and are not complete; further
    /// chunks wait (HTTP/2 flow control). Default 128.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_incomplete_mib: Option<u32>,
    /// Reset the stream of a message in progress that receives nothing for this long.
    /// Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    message_stall_timeout: Option<Duration>,
    /// KiB a remote may send on a connection before the node reads them (the HTTP/2
    /// flow-control window): what each connection the node is not reading may hold.
    /// Default 1024; raise it for links with long round trips.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(64..=2_097_151))]
    flow_control_window_kib: Option<u32>,
    /// gRPC calls a remote may have open at once on one connection (HTTP/2's
    /// SETTINGS_MAX_CONCURRENT_STREAMS). A Fabric peer opens one at a time. Default 16.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrent_streams: Option<u32>,
    /// How often a connection the node dialled pings its peer (HTTP/2 PING), busy or idle,
    /// so that a peer gone without a word is noticed; 0 turns it off. Default 60s, as a
    /// Fabric peer's `peer.keepalive.client.interval` (which refuses pings more often than
    /// once a minute).
    #[arg(long, value_name = "DURATION", value_parser = duration_or_off)]
    keepalive_interval: Option<Duration>,
    /// How long such a ping may go unanswered before the connection is closed. Default 20s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keepalive_timeout: Option<Duration>,
}

/// A duration, where 0 turns the feature off.
fn duration_or_off(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .map_err(|e| format!("expected a duration such as 60s, or 0 for none: {e}"))
}

impl LimitArgs {
    /// `base` (the defaults with what a core.yaml set) with these flags applied over it.
    pub(crate) fn limits_over(&self, base: DriverLimits) -> DriverLimits {
        let mut l = base;
        if let Some(d) = self.keepalive_interval {
            l.keepalive_interval = d;
        }
        if let Some(d) = self.keepalive_timeout {
            l.keepalive_timeout = d;
        }
        if let Some(d) = self.setup_timeout {
            l.setup_timeout = d;
        }
        if let Some(n) = self.max_pending_connections {
            l.max_pending_connections = n as usize;
        }
        if let Some(n) = self.max_inbound_connections {
            l.max_inbound_connections = n as usize;
        }
        if let Some(mib) = self.max_incomplete_mib {
            l.max_incomplete_bytes = mib as usize * 1024 * 1024;
        }
        if let Some(d) = self.message_stall_timeout {
            l.message_stall_timeout = d;
        }
        if let Some(kib) = self.flow_control_window_kib {
            l.flow_control_window = kib * 1024;
        }
        if let Some(n) = self.max_concurrent_streams {
            l.max_concurrent_streams = n;
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::LimitArgs;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        l: LimitArgs,
    }

    #[test]
    fn defaults_unless_given() {
        let d = fabric_gossip_tonic::DriverLimits::default();
        let none = T::parse_from(["t"]).l.limits_over(d.clone());
        assert_eq!(none.setup_timeout, d.setup_timeout);
        assert_eq!(none.max_incomplete_bytes, d.max_incomplete_bytes);
        assert_eq!(none.flow_control_window, d.flow_control_window);
        assert_eq!(none.max_concurrent_streams, d.max_concurrent_streams);
        assert_eq!(none.keepalive_interval, Duration::from_secs(60));
        assert_eq!(none.keepalive_timeout, Duration::from_secs(20));
        let l = T::parse_from([
            "t",
            "--setup-timeout",
            "3s",
            "--max-pending-connections",
            "7",
            "--max-inbound-connections",
            "9",
            "--max-incomplete-mib",
            "2",
            "--message-stall-timeout",
            "500ms",
            "--flow-control-window-kib",
            "2048",
            "--max-concurrent-streams",
            "3",
            "--keepalive-interval",
            "0",
            "--keepalive-timeout",
            "5s",
        ])
        .l
        .limits_over(d);
        assert_eq!(l.setup_timeout, Duration::from_secs(3));
        assert_eq!(l.max_pending_connections, 7);
        assert_eq!(l.max_inbound_connections, 9);
        assert_eq!(l.max_incomplete_bytes, 2 << 20);
        assert_eq!(l.message_stall_timeout, Duration::from_millis(500));
        assert_eq!(l.flow_control_window, 2 << 20);
        assert_eq!(l.max_concurrent_streams, 3);
        assert_eq!(
            l.keepalive_interval,
            Duration::ZERO,
            "0 turns keepalive off"
        );
        assert_eq!(l.keepalive_timeout, Duration::from_secs(5));
        assert!(T::try_parse_from(["t", "--keepalive-timeout", "0"]).is_err());
        assert!(T::try_parse_from(["t", "--max-pending-connections", "0"]).is_err());
        assert!(T::try_parse_from(["t", "--setup-timeout", "0"]).is_err());
        assert!(T::try_parse_from(["t", "--flow-control-window-kib", "63"]).is_err());
        assert!(T::try_parse_from(["t", "--max-concurrent-streams", "0"]).is_err());
    }

    /// `--keepalive-interval` is read as a duration, 0 turning keepalive off, and a value
    /// that is no duration is refused with what is expected.
    #[test]
    fn a_keepalive_interval_is_a_duration_or_zero_for_off() {
        let d = fabric_gossip_tonic::DriverLimits::default();
        let l = T::parse_from(["t", "--keepalive-interval", "90s"])
            .l
            .limits_over(d);
        assert_eq!(l.keepalive_interval, Duration::from_secs(90));
        let e = T::try_parse_from(["t", "--keepalive-interval", "soon"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("expected a duration such as 60s, or 0 for none"),
            "{e}"
        );
    }
}
