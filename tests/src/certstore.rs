//! The identity pull (Fabric's certstore) as a membership scenario: a member whose
//! identity period ended before a newcomer joined is still learnt alive by the newcomer.
//! Run by [`for_each_membership_scenario`](crate::for_each_membership_scenario) on every
//! harness that hosts the membership layer.

use crate::membership::{MemberMaker, full_membership, member_config};
use crate::{Harness, MemberSpec, Outcome, PASS, Pass, ensure, wait};
use core::time::Duration;
use fabric_gossip_discovery::DiscoveryConfig;

/// [`member_config`] with no identity in alive messages at all: every member is past its
/// `publish_cert_period` from the start, so only handshakes and the pull teach identities.
pub fn no_identity_period(c: DiscoveryConfig) -> DiscoveryConfig {
    let mut c = member_config(c);
    c.publish_cert_period = Duration::ZERO;
    c
}

/// `a` and `b` run with no identity in their alive messages; `c` joins later through
/// `b` only. `a`'s alive messages reach `c` (forwarded, in `b`'s responses) but nothing
/// `c` has met can vouch for `a`'s certificate except the pull: `c` pulls `a`'s signed
/// identity from `b` (which pulled it from `a`), then accepts `a` alive; `a` learns `c`
/// the same way.
pub fn member_past_its_identity_period_learnt_through_the_pull<H: Harness>(
    h: &mut H,
    mk: MemberMaker,
) -> Outcome {
    if !h.supports_membership() {
        return Ok(Pass::Skipped("membership"));
    }
    let spec = |org, i| MemberSpec {
        configure: no_identity_period,
        ..MemberSpec::new(mk(org, i))
    };
    let a = h.add_member(spec(0, 0))?;
    let b = h.add_member(spec(0, 1).bootstrap([a]))?;
    wait(
        h,
        Duration::from_secs(30),
        "a and b joined, b pulled a's identity",
        |h| {
            full_membership(h, &[a, b])
                && h.member_stats(b)
                    .is_some_and(|s| s.certstore.identities_learned >= 1)
        },
    )?;
    let c = h.add_member(spec(0, 2).bootstrap([b]))?;
    wait(
        h,
        Duration::from_secs(30),
        "c and a list each other alive",
        |h| full_membership(h, &[a, b, c]),
    )?;
    let s = h.member_stats(c).ok_or("no stats for c")?;
    ensure!(
        s.alive_unknown_identity > 0,
        "a's alive messages never reached c before its identity, the pull was not needed: {s:?}"
    );
    ensure!(
        s.certstore.identities_learned >= 1,
        "c learnt no identity by pull: {:?}",
        s.certstore
    );
    PASS
}
