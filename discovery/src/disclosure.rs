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

    fn p(org: Option<&'static [u8]>, endpoint: &'static str) -> Party<'static> {
        Party { org, endpoint }
    }

    #[test]
    fn same_org_sees_everything_with_secrets() {
        let d = disclose_in_response(Some(A), p(Some(A), ""), p(Some(A), ""));
        assert_eq!(d, Disclose::WithSecret);
    }

    #[test]
    fn unknown_target_or_member_sees_nothing() {
        assert_eq!(
            disclose_in_response(Some(A), p(None, "t:1"), p(Some(A), "m:1")),
            Disclose::No
        );
        assert_eq!(
            disclose_in_response(Some(A), p(Some(A), "t:1"), p(None, "m:1")),
            Disclose::No
        );
    }

    #[test]
    fn foreign_target_sees_only_members_with_external_endpoints_and_no_secret() {
        // Our member with an endpoint, to a foreign target with an endpoint.
        assert_eq!(
            disclose_in_response(Some(A), p(Some(B), "t:1"), p(Some(A), "m:1")),
            Disclose::StripSecret
        );
        // Member without an external endpoint: invisible outside.
        assert_eq!(
            disclose_in_response(Some(A), p(Some(B), "t:1"), p(Some(A), "")),
            Disclose::No
        );
        // Target without an external endpoint: gets none of our members.
        assert_eq!(
            disclose_in_response(Some(A), p(Some(B), ""), p(Some(A), "m:1")),
            Disclose::No
        );
        // The target's own org members are disclosed to it even without endpoints.
        assert_eq!(
            disclose_in_response(Some(A), p(Some(B), ""), p(Some(B), "")),
            Disclose::StripSecret
        );
    }

    #[test]
    fn third_org_is_never_disclosed() {
        assert_eq!(
            disclose_in_response(Some(A), p(Some(B), "t:1"), p(Some(C), "m:1")),
            Disclose::No
        );
    }

    #[test]
    fn routing_of_our_orgs_alive() {
        // With an endpoint: anyone, secret stripped outside.
        assert_eq!(
            route_alive(Some(A), p(Some(A), "o:1"), p(Some(B), "")),
            Disclose::StripSecret
        );
        assert_eq!(
            route_alive(Some(A), p(Some(A), "o:1"), p(Some(A), "")),
            Disclose::WithSecret
        );
        // Without: only our org.
        assert_eq!(
            route_alive(Some(A), p(Some(A), ""), p(Some(B), "r:1")),
            Disclose::No
        );
        assert_eq!(
            route_alive(Some(A), p(Some(A), ""), p(Some(A), "")),
            Disclose::WithSecret
        );
    }

    #[test]
    fn routing_of_foreign_alive() {
        // To its own org or ours, only recipients with an external endpoint.
        assert_eq!(
            route_alive(Some(A), p(Some(B), "o:1"), p(Some(A), "r:1")),
            Disclose::WithSecret
        );
        assert_eq!(
            route_alive(Some(A), p(Some(B), "o:1"), p(Some(B), "r:1")),
            Disclose::StripSecret
        );
        assert_eq!(
            route_alive(Some(A), p(Some(B), "o:1"), p(Some(A), "")),
            Disclose::No
        );
        assert_eq!(
            route_alive(Some(A), p(Some(B), "o:1"), p(Some(C), "r:1")),
            Disclose::No
        );
        // Unknown origin org: nobody.
        assert_eq!(
            route_alive(Some(A), p(None, "o:1"), p(Some(A), "r:1")),
            Disclose::No
        );
    }
}
