//! Fabric's rules for what crosses an organization boundary (`gossip_impl.go`,
//! `disclosurePolicy`, `peersByOriginOrgPolicy`, `sendAndFilterSecrets`): internal
//! endpoints never leave the organization, a member without an external endpoint is
//! invisible outside it, and a third organization's members are never disclosed.

/// How an envelope may go to a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disclose {
    /// Not at all.
    No,
    /// As is, secret included (same organization as us).
    WithSecret,
    /// Without its `SecretEnvelope` (another organization).
    StripSecret,
}

impl Disclose {
    fn for_recipient(my_org: Option<&[u8]>, recipient_org: &[u8]) -> Self {
        if my_org == Some(recipient_org) {
            Disclose::WithSecret
        } else {
            Disclose::StripSecret
        }
    }
}

/// One side of a disclosure decision: an organization (if it could be resolved) and the
/// external endpoint it advertised.
#[derive(Clone, Copy, Debug)]
pub struct Party<'a> {
    /// MSP ID, `None` when the identity is unknown or its organization unresolvable.
    pub org: Option<&'a [u8]>,
    /// External endpoint, `""` when it has none.
    pub endpoint: &'a str,
}

/// Whether a membership response to `target` may include `member`'s alive message
/// (`disclosurePolicy`, spec §6.1). `my_org` is ours.
pub fn disclose_in_response(
    my_org: Option<&[u8]>,
    target: Party<'_>,
    member: Party<'_>,
) -> Disclose {
    let Some(t_org) = target.org else {
        return Disclose::No;
    };
    let Some(m_org) = member.org else {
        return Disclose::No;
    };
    if m_org != t_org && Some(m_org) != my_org {
        return Disclose::No;
    }
    if m_org != t_org && (member.endpoint.is_empty() || target.endpoint.is_empty()) {
        return Disclose::No;
    }
    Disclose::for_recipient(my_org, t_org)
}

/// Whether a gossiped alive message of `origin` may be sent to `recipient`
/// (spec §6.2: origin policy, org-only messages, foreign alive never to a recipient
/// without external endpoint, secret stripped for other organizations).
pub fn route_alive(my_org: Option<&[u8]>, origin: Party<'_>, recipient: Party<'_>) -> Disclose {
    let (Some(o_org), Some(r_org)) = (origin.org, recipient.org) else {
        return Disclose::No;
    };
    let origin_mine = Some(o_org) == my_org;
    let recipient_mine = Some(r_org) == my_org;
    if origin_mine && origin.endpoint.is_empty() && !recipient_mine {
        return Disclose::No;
    }
    if !origin_mine {
        if !recipient_mine && r_org != o_org {
            return Disclose::No;
        }
        if recipient.endpoint.is_empty() {
            return Disclose::No;
        }
    }
    Disclose::for_recipient(my_org, r_org)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"OrgA";
    const B: &[u8] = b"OrgB";
    const C: &[u8] = b"OrgC";

    type Org = Option<&'static [u8]>;

    /// One case, we being of organization A: the first party (the response's target, or
    /// the alive message's origin) and the second (the member disclosed, or the
    /// recipient), each as (organization, external endpoint), and the verdict.
    type Case = (
        &'static str,
        (Org, &'static str),
        (Org, &'static str),
        Disclose,
    );

    fn check(rule: fn(Option<&[u8]>, Party<'_>, Party<'_>) -> Disclose, cases: &[Case]) {
        for &(why, (o1, e1), (o2, e2), want) in cases {
            let got = rule(
                Some(A),
                Party {
                    org: o1,
                    endpoint: e1,
                },
                Party {
                    org: o2,
                    endpoint: e2,
                },
            );
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn responses_disclose_by_target_and_member() {
        use Disclose::*;
        check(
            disclose_in_response,
            &[
                (
                    "same org sees everything",
                    (Some(A), ""),
                    (Some(A), ""),
                    WithSecret,
                ),
                ("unknown target", (None, "t:1"), (Some(A), "m:1"), No),
                ("unknown member", (Some(A), "t:1"), (None, "m:1"), No),
                (
                    "foreign target, member with endpoint",
                    (Some(B), "t:1"),
                    (Some(A), "m:1"),
                    StripSecret,
                ),
                (
                    "member without endpoint: invisible outside",
                    (Some(B), "t:1"),
                    (Some(A), ""),
                    No,
                ),
                (
                    "target without endpoint gets none of ours",
                    (Some(B), ""),
                    (Some(A), "m:1"),
                    No,
                ),
                (
                    "the target's own org, even without endpoints",
                    (Some(B), ""),
                    (Some(B), ""),
                    StripSecret,
                ),
                (
                    "a third org is never disclosed",
                    (Some(B), "t:1"),
                    (Some(C), "m:1"),
                    No,
                ),
            ],
        );
    }

    #[test]
    fn alive_messages_route_by_origin_and_recipient() {
        use Disclose::*;
        check(
            route_alive,
            &[
                (
                    "ours with endpoint: anyone, stripped outside",
                    (Some(A), "o:1"),
                    (Some(B), ""),
                    StripSecret,
                ),
                (
                    "ours with endpoint, to our org",
                    (Some(A), "o:1"),
                    (Some(A), ""),
                    WithSecret,
                ),
                (
                    "ours without endpoint: not outside",
                    (Some(A), ""),
                    (Some(B), "r:1"),
                    No,
                ),
                (
                    "ours without endpoint: our org",
                    (Some(A), ""),
                    (Some(A), ""),
                    WithSecret,
                ),
                (
                    "foreign, to our org with endpoint",
                    (Some(B), "o:1"),
                    (Some(A), "r:1"),
                    WithSecret,
                ),
                (
                    "foreign, to its org with endpoint",
                    (Some(B), "o:1"),
                    (Some(B), "r:1"),
                    StripSecret,
                ),
                (
                    "foreign, to a recipient without endpoint",
                    (Some(B), "o:1"),
                    (Some(A), ""),
                    No,
                ),
                (
                    "foreign, to a third org",
                    (Some(B), "o:1"),
                    (Some(C), "r:1"),
                    No,
                ),
                (
                    "unknown origin org: nobody",
                    (None, "o:1"),
                    (Some(A), "r:1"),
                    No,
                ),
            ],
        );
    }
}
