//! The security provider the core delegates all cryptography to, and Fabric's test provider.

use crate::ids::PkiId;
use crate::time::Instant;
use bytes::Bytes;

/// Why a security operation failed. Each variant names a distinct failure so that a caller
/// (and a test) can tell a tampered signature from an untrusted certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// The signature does not verify over the message with the identity's key.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// The signature is not well-formed (bad DER, wrong length).
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    /// The signature is well-formed and would verify, but is not in canonical low-S form.
    #[error("signature is not low-S")]
    HighS,
    /// The identity bytes cannot be parsed (not a SerializedIdentity, not a certificate).
    #[error("malformed identity: {0}")]
    MalformedIdentity(String),
    /// The identity names an MSP this provider does not know.
    #[error("unknown MSP: {0}")]
    UnknownMsp(String),
    /// The certificate does not chain to a CA of the MSP it names.
    #[error("untrusted certificate: {0}")]
    UntrustedCertificate(String),
    /// The certificate is outside its validity period (expired or not yet valid).
    #[error("certificate not valid now: {0}")]
    Expired(String),
    /// A revocation list of the MSP, signed by the CA that issued the certificate, lists
    /// it (Fabric: "The certificate has been revoked"). Kept apart from
    /// [`SecurityError::UntrustedCertificate`] because an operator acts on it differently:
    /// the peer was trusted and has been cut off on purpose.
    #[error("certificate revoked: {0}")]
    Revoked(String),
    /// The certificate chains to its MSP, but the MSP does not accept its organizational
    /// units: Fabric's NodeOUs (exactly one client, peer, admin or orderer OU, issued
    /// through the CA the role names) or OU identifiers. Kept apart because the fix is in
    /// how the certificate was issued or how the MSP is configured, not in trust.
    #[error("organizational units not accepted: {0}")]
    OrganizationalUnit(String),
    /// The public key is unusable (unsupported curve, not on the curve).
    #[error("unusable public key: {0}")]
    BadKey(String),
    /// Producing a signature failed.
    #[error("signing failed: {0}")]
    SigningFailed(String),
    /// Anything else, with the provider's explanation.
    #[error("{0}")]
    Other(String),
}

/// What the core needs from an identity and crypto provider: Fabric's
/// `MessageCryptoService` plus `SecurityAdvisor` and the node's own signer, in one trait.
///
/// Identity bytes are opaque to the core; only the provider interprets them (a serialized
/// `msp.SerializedIdentity` for real Fabric, an endpoint string for the test provider).
/// Methods that depend on the current time receive it, so the core stays clock-free.
/// Implementations must be deterministic for deterministic simulation.
pub trait Security: Send {
    /// The node's own serialized identity, sent in every `ConnEstablish`.
    fn own_identity(&self) -> Bytes;

    /// Signs `msg` with the node's own key.
    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError>;

    /// Verifies `signature` over `message` with the key of `identity`.
    fn verify(
        &self,
        identity: &[u8],
        signature: &[u8],
        message: &[u8],
    ) -> Result<(), SecurityError>;

    /// Checks that `identity` is acceptable at `now` (chains to a trusted CA, in validity).
    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError>;

    /// When `identity` stops being valid, if it ever does. An error means the identity
    /// cannot be classified at all (Fabric: "failed classifying identity").
    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError>;

    /// The PKI-ID that `identity` maps to. Make it a collision-resistant hash of the
    /// identity, as Fabric's MSP does (SHA-256 of MSP ID and certificate): the core and
    /// the membership layer key hash maps with fixed seeds by PKI-ID, which is safe only
    /// while no remote side can choose the IDs it gets.
    fn pki_id_of(&self, identity: &[u8]) -> PkiId;

    /// The organization `identity` belongs to (Fabric `OrgByPeerIdentity`), used to decide
    /// whether a peer that answers with an unexpected PKI-ID has switched identity within
    /// its organization. `None` when the provider cannot tell.
    fn organization_of(&self, identity: &[u8]) -> Option<Bytes>;

    /// The organization `identity` names, read without judging it (no certificate parsed,
    /// no chain checked), if it is one the provider trusts: a full membership asks it of
    /// every unverified newcomer in a response to decide whether verifying it could make a
    /// difference, so it must cost next to nothing whatever the identity holds. For a
    /// valid identity it must agree with [`organization_of`](Security::organization_of):
    /// `None` or another organization there makes a full membership refuse that newcomer
    /// unverified. Its answer is never trusted beyond that choice: a wrong organization
    /// for an invalid identity costs one verification (at most 16 a response). By default
    /// it is `organization_of` (providers whose check is cheap need nothing more).
    fn claimed_organization(&self, identity: &[u8]) -> Option<Bytes> {
        self.organization_of(identity)
    }

    /// The driver's report that the wall clock read `wall` when the node's time was `now`.
    /// A driver whose time is the wall clock at start plus a monotonic clock (the tonic
    /// driver's, so that timers never jump) reports it every second: a clock stepped after
    /// start (NTP correcting a wrong clock, a resume from suspend) moves the wall clock
    /// away from the node's time, and Fabric judges certificate expiry by the wall clock.
    /// A provider that judges dates may then judge them at `wall`'s distance from `now`
    /// (`fabric_gossip_msp::MspSecurity` does), staying deterministic for a given sequence
    /// of calls. The simulator calls it only when a test steps a node's clock
    /// (`fabric_gossip_sim::Fault::StepClock`), at the step and at each later start of
    /// the node. By default it is ignored.
    fn wall_clock(&self, now: Instant, wall: Instant) {
        let _ = (now, wall);
    }
}

/// How an error shows text the remote side chose (an MSP ID, an organizational unit):
/// its first [`SHOWN_CHARS`] characters, escaped by [`escape_unseen`], and its length in
/// bytes when it is cut. A handshake error goes to the log, to the node's events and back
/// to the peer in the gRPC status: an identity naming a 64 KB MSP ID of control characters
/// was echoed whole into each (about 390 KB of output and 120 KB sent back per handshake).
pub fn shown(text: &str) -> String {
    shown_up_to(text, SHOWN_CHARS)
}

/// [`shown`] keeping up to `chars` characters: for text whose length carries meaning, as a
/// status a refusing Fabric peer sends (`failed classifying identity: … cannot be
/// validated. No MSP found able to do that.`), kept whole up to 1,024 characters by the
/// tonic driver.
pub fn shown_up_to(text: &str, chars: usize) -> String {
    let kept = text
        .char_indices()
        .nth(chars)
        .map_or(text.len(), |(at, _)| at);
    let mut out = escape_unseen(&text[..kept]).into_owned();
    if kept < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

/// `text` with every [unseen](is_unseen) character escaped, borrowed when it has none:
/// control characters as Rust escapes them (`\n`, `\u{1b}`), the others as `\u{202e}`;
/// everything else, quotes included, as it is (a name with a quote still reads as itself).
/// For text a remote side chose, shown as text rather than JSON: a newline would forge a
/// line of its own, a terminal escape reach the operator's terminal, and a right-to-left
/// override show an endpoint as another.
pub fn escape_unseen(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unseen) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if is_unseen(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// How many characters of a remote side's text [`shown`] keeps.
pub const SHOWN_CHARS: usize = 64;

/// Whether `c` must be escaped where text a remote side chose is shown: control characters
/// (which forge lines and colour terminals) and the format characters and separators that
/// show as nothing or reorder what follows (zero-width spaces, bidirectional overrides and
/// isolates, the byte-order mark, U+2028 and U+2029): with them an endpoint
/// `127.0.0.1:7052` followed by a zero-width space, or written backwards behind a
/// right-to-left override, reads as another peer's.
pub fn is_unseen(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

impl<S: Security + ?Sized> Security for Box<S> {
    fn own_identity(&self) -> Bytes {
        (**self).own_identity()
    }
    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
        (**self).sign(msg)
    }
    fn verify(&self, id: &[u8], sig: &[u8], msg: &[u8]) -> Result<(), SecurityError> {
        (**self).verify(id, sig, msg)
    }
    fn validate_identity(&self, identity: &[u8], now: Instant) -> Result<(), SecurityError> {
        (**self).validate_identity(identity, now)
    }
    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
        (**self).expiration(identity)
    }
    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        (**self).pki_id_of(identity)
    }
    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        (**self).organization_of(identity)
    }
    fn claimed_organization(&self, identity: &[u8]) -> Option<Bytes> {
        (**self).claimed_organization(identity)
    }
    fn wall_clock(&self, now: Instant, wall: Instant) {
        (**self).wall_clock(now, wall);
    }
}

/// **Test only, no security at all.** Fabric's unit-test provider (`gossip/comm` tests),
/// reproduced so that this crate interoperates with Fabric's own test peers and vectors.
///
/// Identity = PKI-ID = the endpoint string (e.g. `127.0.0.1:7051`); signatures are
/// HMAC-SHA256 with the fixed, public key `[0, 0, 0]`, so anyone can forge them;
/// every identity validates. Never use it where authentication matters.
///
/// For negative tests it can be told to refuse identities or to produce bad signatures.
#[derive(Clone, Debug)]
pub struct TestOnlyHmacSecurity {
    identity: Bytes,
    organizations: Vec<(Bytes, Bytes)>,
    corrupt_signatures: bool,
    reject: Vec<Bytes>,
    expirations: Vec<(Bytes, Instant)>,
}

/// The HMAC key of Fabric's unit-test provider.
pub const TEST_HMAC_KEY: [u8; 3] = [0, 0, 0];

impl TestOnlyHmacSecurity {
    /// A provider whose own identity and PKI-ID are `endpoint`. Any string will do, not
    /// only an endpoint: a node restarted at the same endpoint with another string is a
    /// peer with a new identity, which its peers take as an identity switch
    /// ([`Event::IdentitySwitch`](crate::Event::IdentitySwitch), and the membership
    /// layer's `MemberPurged` with reason `IdentitySwitch`), as they take a Fabric peer
    /// restarted with a renewed certificate.
    ///
    /// ```
    /// use fabric_gossip_core::{Security, TestOnlyHmacSecurity};
    ///
    /// let before = TestOnlyHmacSecurity::new("127.0.0.1:7051");
    /// let after = TestOnlyHmacSecurity::new("127.0.0.1:7051#2"); // same endpoint, new identity
    /// assert_ne!(
    ///     before.pki_id_of(&before.own_identity()),
    ///     after.pki_id_of(&after.own_identity())
    /// );
    /// ```
    pub fn new(endpoint: impl AsRef<str>) -> Self {
        TestOnlyHmacSecurity {
            identity: Bytes::copy_from_slice(endpoint.as_ref().as_bytes()),
            organizations: Vec::new(),
            corrupt_signatures: false,
            reject: Vec::new(),
            expirations: Vec::new(),
        }
    }

    /// Report `org` as the organization of `identity` (tests of identity switch).
    /// Identities without an entry share one empty organization, as in Fabric's tests.
    pub fn with_organization(mut self, identity: impl Into<Bytes>, org: impl Into<Bytes>) -> Self {
        self.organizations.push((identity.into(), org.into()));
        self
    }

    /// Produce signatures that never verify (a peer that "sends a bad signature").
    pub fn with_corrupt_signatures(mut self) -> Self {
        self.corrupt_signatures = true;
        self
    }

    /// Refuse `identity` in `validate_identity`.
    pub fn rejecting(mut self, identity: impl Into<Bytes>) -> Self {
        self.reject.push(identity.into());
        self
    }

    /// Report that `identity` expires at `at`.
    pub fn expiring(mut self, identity: impl Into<Bytes>, at: Instant) -> Self {
        self.expirations.push((identity.into(), at));
        self
    }

    /// HMAC-SHA256 of `msg` with the test key; what Fabric's test provider signs with.
    pub fn hmac(msg: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = keyed_hmac();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }
}

/// An HMAC-SHA256 already keyed with [`TEST_HMAC_KEY`]: keying hashes two blocks, done
/// once here instead of at every signature (the simulator verifies millions of them).
fn keyed_hmac() -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    static KEYED: std::sync::LazyLock<hmac::Hmac<sha2::Sha256>> = std::sync::LazyLock::new(|| {
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&TEST_HMAC_KEY)
            .expect("HMAC accepts keys of any length")
    });
    KEYED.clone()
}

impl Security for TestOnlyHmacSecurity {
    fn own_identity(&self) -> Bytes {
        self.identity.clone()
    }

    fn sign(&self, msg: &[u8]) -> Result<Bytes, SecurityError> {
        let mut sig = Self::hmac(msg);
        if self.corrupt_signatures {
            sig[0] ^= 0xff;
        }
        Ok(Bytes::copy_from_slice(&sig))
    }

    fn verify(
        &self,
        _identity: &[u8],
        signature: &[u8],
        message: &[u8],
    ) -> Result<(), SecurityError> {
        use hmac::Mac;
        let mut mac = keyed_hmac();
        mac.update(message);
        mac.verify_slice(signature)
            .map_err(|_| SecurityError::BadSignature("HMAC mismatch".into()))
    }

    fn validate_identity(&self, identity: &[u8], _now: Instant) -> Result<(), SecurityError> {
        if self.reject.iter().any(|r| r.as_ref() == identity) {
            return Err(SecurityError::UntrustedCertificate(
                "identity refused by test provider".into(),
            ));
        }
        Ok(())
    }

    fn expiration(&self, identity: &[u8]) -> Result<Option<Instant>, SecurityError> {
        Ok(self
            .expirations
            .iter()
            .find(|(id, _)| id.as_ref() == identity)
            .map(|(_, at)| *at))
    }

    fn pki_id_of(&self, identity: &[u8]) -> PkiId {
        PkiId(Bytes::copy_from_slice(identity))
    }

    fn organization_of(&self, identity: &[u8]) -> Option<Bytes> {
        Some(
            self.organizations
                .iter()
                .find(|(id, _)| id.as_ref() == identity)
                .map(|(_, org)| org.clone())
                .unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod shown_tests {
    use super::{SHOWN_CHARS, shown};

    #[test]
    fn a_remote_sides_text_is_shown_short_and_printable() {
        assert_eq!(shown("Org1MSP"), "Org1MSP");
        assert_eq!(shown("a\u{1}b\n"), "a\\u{1}b\\n");
        assert_eq!(
            shown("1.0.0.1:7\u{202e}\u{200b}"),
            "1.0.0.1:7\\u{202e}\\u{200b}"
        );
        assert_eq!(shown("Org's \"MSP\""), "Org's \"MSP\"");
        let long = "\u{1}".repeat(64_500);
        let s = shown(&long);
        assert!(s.ends_with("… (64500 bytes)"), "{s}");
        assert_eq!(s.matches("\\u{1}").count(), SHOWN_CHARS);
        // Cut by characters, never inside one.
        assert!(shown(&"é".repeat(100)).starts_with(&"é".repeat(SHOWN_CHARS)));
    }
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    /// The simulator and the drivers hold their provider boxed: a box answers as the
    /// provider it holds, refusals and claims included.
    #[test]
    fn a_boxed_provider_answers_as_the_provider_it_holds() {
        let at = Instant::from_unix_secs(9);
        let inner = TestOnlyHmacSecurity::new("a")
            .with_organization("b", "OrgB")
            .expiring("b", at);
        let boxed: Box<dyn Security> = Box::new(inner);
        let org = Some(Bytes::from_static(b"OrgB"));
        assert_eq!(boxed.claimed_organization(b"b"), org);
        assert_eq!(boxed.organization_of(b"b"), org);
        assert_eq!(boxed.expiration(b"b"), Ok(Some(at)));
        let sig = boxed.sign(b"m").unwrap();
        assert_eq!(boxed.verify(b"b", &sig, b"m"), Ok(()));
        assert!(boxed.verify(b"b", &sig, b"n").is_err());
    }

    /// A provider told to sign badly makes signatures no provider verifies, whatever
    /// the message (Fabric's tests of a peer that sends a bad signature).
    #[test]
    fn corrupt_signatures_never_verify() {
        let bad = TestOnlyHmacSecurity::new("a").with_corrupt_signatures();
        let good = TestOnlyHmacSecurity::new("a");
        // One whose good signature starts with 0xff, as 1 in 256 do.
        let ff = (0u32..)
            .map(u32::to_le_bytes)
            .find(|m| TestOnlyHmacSecurity::hmac(m)[0] == 0xff)
            .unwrap();
        for m in [&b"m"[..], b"", b"another message", &ff] {
            let sig = bad.sign(m).unwrap();
            assert!(good.verify(b"a", &sig, m).is_err());
        }
    }
}
