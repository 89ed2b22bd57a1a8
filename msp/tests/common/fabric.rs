// The `fabric-verdicts.txt` fixtures: what Fabric v2.4.9's MSP said about identities, one
// line each, and whether a verdict of ours is the same one, for the same reason.
use fabric_gossip_core::SecurityError;

/// One line: `<msp or folder> <member> <valid|invalid|refused> [Fabric's reason]`.
pub struct FabricVerdict<'a> {
    pub msp: &'a str,
    pub member: &'a str,
    pub verdict: &'a str,
    pub reason: &'a str,
}

pub fn fabric_verdicts(text: &str) -> impl Iterator<Item = FabricVerdict<'_>> {
    text.lines().map(|line| {
        let mut parts = line.splitn(4, ' ');
        let mut next = || parts.next().unwrap_or_else(|| panic!("short line: {line}"));
        let (msp, member, verdict) = (next(), next(), next());
        FabricVerdict {
            msp,
            member,
            verdict,
            reason: parts.next().unwrap_or(""),
        }
    })
}

impl FabricVerdict<'_> {
    /// Whether `ours` is Fabric's verdict: valid, or refused with the error kind that
    /// Fabric's reason corresponds to.
    pub fn agrees(&self, ours: &Result<(), SecurityError>) -> bool {
        let r = self.reason;
        match (self.verdict, ours) {
            ("valid", Ok(())) => true,
            ("invalid", Err(SecurityError::Revoked(_))) => r.contains("has been revoked"),
            ("invalid", Err(SecurityError::OrganizationalUnit(_))) => r.contains("identity's OUs"),
            ("invalid", Err(SecurityError::UntrustedCertificate(why))) => {
                r.contains("unknown authority")
                    || (r.contains("should be a leaf")
                        && why.contains("leaf of the certification tree"))
            }
            _ => false,
        }
    }

    /// Fails, naming the identity and both verdicts, unless `ours` agrees.
    pub fn assert_agrees(&self, ours: &Result<(), SecurityError>) {
        assert!(
            self.agrees(ours),
            "{} / {}: Fabric said {} {}; we said {ours:?}",
            self.msp,
            self.member,
            self.verdict,
            self.reason
        );
    }
}
