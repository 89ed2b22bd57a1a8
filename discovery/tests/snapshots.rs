//! Snapshots of what nodes send: at start (bootstrap, first sync and heartbeat), when
//! answering a membership request, and when a member expires. HMAC identities and the
//! virtual clock make every byte deterministic.

mod common;

use common::{Cluster, dcfg, one_joins_zero};
use core::time::Duration;
use fabric_gossip_core::Instant;
use fabric_gossip_core::testing::ep;

fn rel(start: Instant, t: Instant) -> String {
    format!("+{:.3}s", (t - start).as_secs_f64())
}

fn trace_since(c: &Cluster, start: Instant, until: Instant) -> Vec<String> {
    c.trace
        .iter()
        .filter(|(t, _)| *t >= start && *t < until)
        .map(|(t, l)| format!("{} {l}", rel(start, *t)))
        .collect()
}

#[test]
fn messages_at_start() {
    let mut c = Cluster::hmac(2, one_joins_zero);
    let start = c.now();
    c.run_for(Duration::from_millis(5_100));
    insta::assert_snapshot!(trace_since(&c, start, c.now()).join("\n"));
}

#[test]
fn answer_to_a_membership_request() {
    let mut c = Cluster::hmac(3, one_joins_zero);
    c.run_for(Duration::from_secs(12));
    c.restart_hmac(2, dcfg(2).with_bootstrap([ep(0)]));
    let start = c.now();
    c.run_for(Duration::from_millis(50));
    let lines: Vec<String> = trace_since(&c, start, c.now())
        .into_iter()
        .filter(|l| l.contains("n2 <-") || l.contains("<- n2"))
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn a_member_expires() {
    let mut c = Cluster::hmac(3, |i| {
        if i > 0 {
            dcfg(i).with_bootstrap([ep(0)])
        } else {
            dcfg(0)
        }
    });
    c.run_for(Duration::from_secs(10));
    let start = c.now();
    c.frozen[2] = true;
    let before = c.events[0].len();
    c.net.record = true;
    c.run_until(Duration::from_secs(40), |c| !c.sees_alive(0, 2))
        .unwrap();
    let died = c.now();
    let mut out: Vec<String> = c.events[0][before..]
        .iter()
        .map(|(t, e)| format!("{} n0 {}", rel(start, *t), c.describe_event(e)))
        .collect();
    // Its connection to node 2 is closed.
    out.extend(
        c.net
            .log
            .iter()
            .filter(|l| l.starts_with("n0 CloseStream") || l.starts_with("n0 Disconnected"))
            .cloned(),
    );
    // And what node 0 sent in the seconds after: its messages to the survivor only.
    c.net.record = false;
    let mark = c.now();
    c.run_for(Duration::from_secs(6));
    out.extend(
        trace_since(&c, mark, c.now())
            .into_iter()
            .filter(|l| l.contains("<- n0")),
    );
    out.push(format!("declared dead at {}", rel(start, died)));
    insta::assert_snapshot!(out.join("\n"));
}
