//! The entry point of the `msp` cargo-fuzz target (`fuzz/`) and of its corpus replay test.
//!
//! What a remote peer presents reaches this crate before anything trusts it: the identity in
//! its `ConnEstablish`, the identities of alive messages and of the certstore's pulls, and
//! the signatures over them. Operators hand it `config.yaml` files and channel blocks fetched
//! from an orderer. [`msp`] feeds any of these, chosen by the input's first byte, to a
//! fixed trust store built from the committed fixtures (the roots, intermediate, CRL and
//! NodeOU configurations that `tests/` checks against Fabric's own verdicts), and checks
//! more than the absence of panics:
//!
//! - **Two implementations agree.** Every identity is judged with certificate chain
//!   signatures checked by AWS-LC and by pure-Rust RustCrypto, through a provider of each
//!   (cached) and through the store alone (not cached); every signature is verified by both
//!   providers. The verdicts must be the same, refusals of the same kind.
//! - **Nothing is accepted that no fixture CA signed.** An accepted identity's certificate
//!   must carry the signed part (TBS) of one of the fixtures' members, and that member, as
//!   issued, must be accepted for the same MSP: the fuzzer can alter the unsigned parts of a
//!   certificate (the signature's encoding, for one), never make a refused member valid.
//! - **A `config.yaml` only restricts.** Its OU identifiers and NodeOU roles can refuse
//!   members, never admit one: any member accepted under a fuzzed configuration is accepted
//!   by the same CAs without one. AWS-LC and RustCrypto agree on the configured store, and
//!   on the store a channel block builds.
//!
//! Verdicts are deterministic: the clock is a fixed instant inside the fixtures' validity.
//! The providers' caches outlive an input, so which inputs hit them depends on the run.

use crate::keys::Arithmetic;
use crate::{MspSecurity, TrustStore, units};
use fabric_gossip_core::{Instant, Security, SecurityError};
use std::path::PathBuf;
use std::sync::OnceLock;

/// 2027-01-01: the fixtures are valid from 2026-01-01 to 2035-12-30.
const NOW: Instant = Instant::from_unix_secs(1_798_761_600);

/// What the first byte of an input asks for.
const IDENTITY: u8 = 0;
const CERTIFICATE: u8 = 1;
const CONFIG_YAML: u8 = 2;
const CHANNEL_BLOCK: u8 = 3;
const SIGNATURE: u8 = 4;
const MODES: u8 = 5;

/// The MSPs of the fixed store; a certificate input's second byte picks one (the last is
/// unknown to the store).
const MSP_IDS: [&str; 5] = ["Org1MSP", "Org2MSP", "Org3MSP", "OwnMSP", "NoSuchMSP"];

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $path
        ))
        .as_slice()
    };
}

const CA: &[u8] = fixture!("node_ous/msps/ica-no-config/cacerts/ca.pem");
const ICA: &[u8] = fixture!("node_ous/msps/ica-no-config/intermediatecerts/ica.pem");
const OTHER_CA: &[u8] = fixture!("node_ous/msps/root-foreign-ca/other-ca.pem");
const ORG2_CA: &[u8] = fixture!("crl/org2-ca.pem");
const ORG2_CRL: &[u8] = fixture!("crl/go-crl-revoking-peer1.pem");
const OWN_CA: &[u8] =
    fixture!("channel/peers/peer0.org1.example.com/msp/cacerts/ca.org1.example.com-cert.pem");
const OWN_CERT: &[u8] =
    fixture!("channel/peers/peer0.org1.example.com/msp/signcerts/peer0.org1.example.com-cert.pem");
const OWN_KEY: &[u8] = fixture!("channel/peers/peer0.org1.example.com/msp/keystore/priv_sk");
const CHANNEL_BLOCK_FIXTURE: &[u8] = fixture!("channel/mychannel.block");

/// Org1MSP's `config.yaml`: OU identifiers on both CAs and the four roles.
const ORG1_CONFIG: &[u8] = fixture!("node_ous/msps/ica-ou-identifier-and-roles/config.yaml");

/// The NodeOU configurations of the fixtures, the seeds of the `config.yaml` inputs.
const CONFIGS: [(&str, &[u8]); 11] = [
    ("ica-ou-identifier-and-roles", ORG1_CONFIG),
    (
        "ica-peer-role-root",
        fixture!("node_ous/msps/ica-peer-role-root/config.yaml"),
    ),
    (
        "ica-roles-intermediate",
        fixture!("node_ous/msps/ica-roles-intermediate/config.yaml"),
    ),
    (
        "ica-roles-root",
        fixture!("node_ous/msps/ica-roles-root/config.yaml"),
    ),
    (
        "ica-shared-unit",
        fixture!("node_ous/msps/ica-shared-unit/config.yaml"),
    ),
    (
        "root-client-peer-only",
        fixture!("node_ous/msps/root-client-peer-only/config.yaml"),
    ),
    (
        "root-cryptogen",
        fixture!("node_ous/msps/root-cryptogen/config.yaml"),
    ),
    (
        "root-disabled",
        fixture!("node_ous/msps/root-disabled/config.yaml"),
    ),
    (
        "root-foreign-ca",
        fixture!("node_ous/msps/root-foreign-ca/config.yaml"),
    ),
    (
        "root-ou-identifier",
        fixture!("node_ous/msps/root-ou-identifier/config.yaml"),
    ),
    (
        "root-roles-any-ca",
        fixture!("node_ous/msps/root-roles-any-ca/config.yaml"),
    ),
];

/// Every certificate the fixtures' CAs signed for a member, with the MSP it belongs to.
const MEMBERS: [(&str, &str, &[u8]); 22] = [
    ("admin", "Org1MSP", fixture!("node_ous/members/admin.pem")),
    (
        "blue-and-peer",
        "Org1MSP",
        fixture!("node_ous/members/blue-and-peer.pem"),
    ),
    ("blue", "Org1MSP", fixture!("node_ous/members/blue.pem")),
    (
        "client-and-peer",
        "Org1MSP",
        fixture!("node_ous/members/client-and-peer.pem"),
    ),
    ("client", "Org1MSP", fixture!("node_ous/members/client.pem")),
    (
        "ica-admin",
        "Org3MSP",
        fixture!("node_ous/members/ica-admin.pem"),
    ),
    (
        "ica-blue-and-peer",
        "Org1MSP",
        fixture!("node_ous/members/ica-blue-and-peer.pem"),
    ),
    (
        "ica-blue",
        "Org3MSP",
        fixture!("node_ous/members/ica-blue.pem"),
    ),
    (
        "ica-client",
        "Org3MSP",
        fixture!("node_ous/members/ica-client.pem"),
    ),
    (
        "ica-none",
        "Org3MSP",
        fixture!("node_ous/members/ica-none.pem"),
    ),
    (
        "ica-peer",
        "Org3MSP",
        fixture!("node_ous/members/ica-peer.pem"),
    ),
    ("none", "Org1MSP", fixture!("node_ous/members/none.pem")),
    (
        "orderer",
        "Org1MSP",
        fixture!("node_ous/members/orderer.pem"),
    ),
    (
        "peer-twice",
        "Org1MSP",
        fixture!("node_ous/members/peer-twice.pem"),
    ),
    ("peer", "Org1MSP", fixture!("node_ous/members/peer.pem")),
    ("org2-peer0", "Org2MSP", fixture!("crl/peer0.pem")),
    ("org2-peer1-revoked", "Org2MSP", fixture!("crl/peer1.pem")),
    ("own", "OwnMSP", OWN_CERT),
    (
        "channel-org1-peer1",
        "OwnMSP",
        fixture!("channel/members/org1-peer1.pem"),
    ),
    (
        "channel-org2-peer0",
        "Org2MSP",
        fixture!("channel/members/org2-peer0.pem"),
    ),
    (
        "channel-org2-guest",
        "Org2MSP",
        fixture!("channel/members/org2-guest.pem"),
    ),
    (
        "channel-orderer",
        "Org1MSP",
        fixture!("channel/members/orderer-peer0.pem"),
    ),
];

/// The fixed world every input is judged in.
struct World {
    store: TrustStore,
    aws_lc: MspSecurity,
    pure_rust: MspSecurity,
    /// Each member's certificate: its DER and its signed part.
    members: Vec<(Vec<u8>, Vec<u8>)>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let store = base_store();
        let provider = || {
            MspSecurity::new("OwnMSP", OWN_CERT, OWN_KEY, store.clone())
                .expect("the fixture's own identity loads")
                .with_deterministic_signatures()
        };
        let members = MEMBERS
            .iter()
            .map(|(_, _, pem)| {
                let der = pem_der(pem).expect("a fixture member is one PEM certificate");
                let tbs = signed_part(&der).expect("a fixture member parses");
                (der, tbs)
            })
            .collect();
        World {
            aws_lc: provider(),
            pure_rust: provider().with_pure_rust_ecdsa(),
            store,
            members,
        }
    })
}

/// Org1MSP: a root and an intermediate with OU identifiers and roles; Org3MSP: the same CAs
/// without a `config.yaml`; Org2MSP: another root with a CRL; OwnMSP: the provider's own.
fn base_store() -> TrustStore {
    let mut store = TrustStore::new();
    let loaded = (|| {
        add_ca_and_intermediate(&mut store, "Org1MSP")?;
        add_ca_and_intermediate(&mut store, "Org3MSP")?;
        let config = parse_config(ORG1_CONFIG)?;
        store.apply_config("Org1MSP", &config, "Org1MSP's config.yaml")?;
        store.add_ca_pem("Org2MSP", ORG2_CA)?;
        store.add_crl_pem("Org2MSP", ORG2_CRL)?;
        store.add_ca_pem("OwnMSP", OWN_CA)
    })();
    loaded.expect("the fixtures load");
    store
}

/// The root and intermediate of the NodeOU fixtures, as `msp_id`'s CAs.
fn add_ca_and_intermediate(store: &mut TrustStore, msp_id: &str) -> Result<(), crate::LoadError> {
    store.add_ca_pem(msp_id, CA)?;
    store.add_intermediate_pem(msp_id, ICA)?;
    Ok(())
}

/// A `config.yaml` whose certificates are looked up among the fixtures' CAs by the paths
/// the fixtures use; any other path is not a file.
fn parse_config(text: &[u8]) -> Result<units::MspConfigFile, crate::LoadError> {
    let mut read_cert = |file: &str| {
        let pem: &[u8] = match file.trim_start_matches('/') {
            "cacerts/ca.pem" => CA,
            "intermediatecerts/ica.pem" => ICA,
            "other-ca.pem" => OTHER_CA,
            "empty.pem" => &[],
            _ => return Ok(None),
        };
        Ok(Some((pem.to_vec(), PathBuf::from(file))))
    };
    let text = String::from_utf8_lossy(text);
    units::parse_config("config.yaml", &text, &mut read_cert)
}

/// The `msp` fuzz target: see the module's documentation.
pub fn msp(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % MODES {
        IDENTITY => judge(rest),
        CERTIFICATE => {
            let Some((&which, der)) = rest.split_first() else {
                return;
            };
            let msp_id = MSP_IDS[usize::from(which) % MSP_IDS.len()];
            judge(&crate::serialize_identity(msp_id, der));
        }
        CONFIG_YAML => config_yaml(rest),
        CHANNEL_BLOCK => channel_block(rest),
        SIGNATURE => signature(rest),
        _ => unreachable!("mode is taken modulo MODES"),
    }
}

/// Judges `identity` three ways, which must agree; an accepted one must be a member's.
fn judge(identity: &[u8]) {
    let w = world();
    let by_store = w.store.validate_identity(identity, NOW);
    let by_aws_lc = w.aws_lc.validate_identity(identity, NOW);
    let by_pure_rust = w.pure_rust.validate_identity(identity, NOW);
    assert_same(&by_store, &by_aws_lc, "the store and the AWS-LC provider");
    assert_same(
        &by_aws_lc,
        &by_pure_rust,
        "the AWS-LC and pure-Rust providers",
    );
    // Asked again, the providers answer from their caches: the same verdict.
    assert_same(
        &by_aws_lc,
        &w.aws_lc.validate_identity(identity, NOW),
        "the AWS-LC provider, cached",
    );
    if by_store.is_ok() {
        accepted_is_a_member(identity);
    }
}

/// An accepted identity must be a fixture member's certificate, the member accepted as
/// issued.
fn accepted_is_a_member(identity: &[u8]) {
    let sid = crate::identity::decode(identity)
        .expect("an accepted identity is an msp.SerializedIdentity");
    let der = pem_der(&sid.id_bytes).expect("an accepted identity holds a PEM certificate");
    let tbs = signed_part(&der).expect("an accepted certificate parses");
    let w = world();
    let member = w
        .members
        .iter()
        .position(|(_, t)| *t == tbs)
        .unwrap_or_else(|| panic!("accepted a certificate no fixture CA signed: {der:02x?}"));
    let original = crate::serialize_identity(&sid.mspid, &w.members[member].0);
    assert!(
        w.store.validate_identity(&original, NOW).is_ok(),
        "accepted an altered {} for {} that is refused as issued",
        MEMBERS[member].0,
        sid.mspid
    );
}

/// `[member][signature length][signature][message]`: a signature over the message by the
/// chosen member (the provider's own identity is the one whose key signed the seeds).
fn signature(rest: &[u8]) {
    let [which, len, rest @ ..] = rest else {
        return;
    };
    let (signature, message) = rest.split_at(usize::from(*len).min(rest.len()));
    let (_, msp_id, pem) = MEMBERS[usize::from(*which) % MEMBERS.len()];
    let identity = crate::serialize_identity_pem(msp_id, pem);
    let w = world();
    let by_aws_lc = w.aws_lc.verify(&identity, signature, message);
    let by_pure_rust = w.pure_rust.verify(&identity, signature, message);
    assert_same(&by_aws_lc, &by_pure_rust, "AWS-LC's and RustCrypto's ECDSA");
}

/// A `config.yaml` for Org1MSP's CAs: every member it accepts, the CAs alone accept, and
/// both implementations agree on it.
fn config_yaml(text: &[u8]) {
    let Ok(config) = parse_config(text) else {
        return;
    };
    let mut plain = TrustStore::new();
    add_ca_and_intermediate(&mut plain, "Org1MSP").expect("fixture");
    let mut configured = plain.clone();
    if configured
        .apply_config("Org1MSP", &config, "config.yaml")
        .is_err()
    {
        return;
    }
    for (name, _, pem) in MEMBERS {
        let identity = crate::serialize_identity_pem("Org1MSP", pem);
        let verdict = both_arithmetics_agree(&configured, &identity);
        if verdict.is_ok() {
            assert!(
                plain.validate_identity(&identity, NOW).is_ok(),
                "a config.yaml admitted {name}, whom its CAs alone refuse"
            );
        }
    }
}

/// A channel configuration block, as trust: both implementations agree on every member.
fn channel_block(block: &[u8]) {
    let mut store = TrustStore::new();
    if store.add_channel_config(block).is_err() {
        return;
    }
    for msp_id in store.msp_ids() {
        for (_, _, pem) in MEMBERS {
            // Any verdict will do: a block may trust anyone; the two must agree on it.
            let _verdict =
                both_arithmetics_agree(&store, &crate::serialize_identity_pem(msp_id, pem));
        }
    }
}

/// `store`'s verdict on `identity` with chain signatures checked by AWS-LC, which must be
/// RustCrypto's too.
fn both_arithmetics_agree(store: &TrustStore, identity: &[u8]) -> Result<(), SecurityError> {
    let judge = |arithmetic| crate::security::parse(identity, store, arithmetic)?.verdict(NOW);
    let by_aws_lc = judge(Arithmetic::AwsLc);
    assert_same(
        &by_aws_lc,
        &judge(Arithmetic::PureRust),
        "AWS-LC and RustCrypto",
    );
    by_aws_lc
}

fn assert_same(a: &Result<(), SecurityError>, b: &Result<(), SecurityError>, who: &str) {
    let kind = |r: &Result<(), SecurityError>| r.as_ref().err().map(std::mem::discriminant);
    assert!(kind(a) == kind(b), "{who} disagree: {a:?} against {b:?}");
    #[cfg(test)]
    tests::CHECKS.with_borrow_mut(|checks| checks.push((who.to_owned(), a.clone())));
}

/// The first CERTIFICATE block of `pem`, as the store reads it.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    crate::cert::pem_blocks(pem)
        .ok()?
        .into_iter()
        .find_map(|(label, der)| (label == "CERTIFICATE").then_some(der))
}

/// The DER of a certificate's TBS, what its issuer signed.
fn signed_part(der: &[u8]) -> Option<Vec<u8>> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate.to_der().ok()
}

/// The committed seeds of the `msp` corpus (`fuzz/corpus/msp/seed-<name>`), one or more of
/// every kind of input.
pub fn msp_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, (name, msp_id, pem)) in MEMBERS.iter().enumerate() {
        let der = pem_der(pem).expect("fixture");
        let which = MSP_IDS.iter().position(|m| m == msp_id).expect("known MSP") as u8;
        seeds.push((
            format!("certificate-{name}"),
            [&[CERTIFICATE, which][..], &der].concat(),
        ));
        if i % 4 == 0 {
            let identity = crate::serialize_identity_pem(msp_id, pem);
            seeds.push((
                format!("identity-{name}"),
                [&[IDENTITY][..], &identity].concat(),
            ));
        }
    }
    for (name, text) in CONFIGS {
        seeds.push((
            format!("config-{name}"),
            [&[CONFIG_YAML][..], text].concat(),
        ));
    }
    seeds.push((
        "channel-block".into(),
        [&[CHANNEL_BLOCK][..], CHANNEL_BLOCK_FIXTURE].concat(),
    ));
    let own = MEMBERS
        .iter()
        .position(|(n, _, _)| *n == "own")
        .expect("own") as u8;
    let message = b"an alive message's payload";
    let signature = world().aws_lc.sign(message).expect("the provider signs");
    let len = u8::try_from(signature.len()).expect("a P-256 DER signature fits");
    seeds.push((
        "signature-own".into(),
        [&[SIGNATURE, own, len][..], &signature, message].concat(),
    ));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// The comparisons [`assert_same`] made on this thread: who agreed, on what
        /// verdict. A check that passes leaves nothing else to see, so tests read this to
        /// know that an input reached the checks it is for (each test runs on its own
        /// thread, so tests running at once do not mix their checks).
        pub(super) static CHECKS: RefCell<Vec<(String, Result<(), SecurityError>)>> =
            const { RefCell::new(Vec::new()) };
    }

    /// Runs `input` through the target; returns the checks it made, in order.
    fn checks_of(input: &[u8]) -> Vec<(String, Result<(), SecurityError>)> {
        CHECKS.with_borrow_mut(Vec::clear);
        msp(input);
        CHECKS.take()
    }

    fn seed(name: &str) -> Vec<u8> {
        msp_seeds()
            .into_iter()
            .find_map(|(n, s)| (n == name).then_some(s))
            .unwrap_or_else(|| panic!("no seed {name}"))
    }

    #[test]
    fn the_world_judges_its_members_as_tests_expect() {
        let w = world();
        let verdict = |name: &str, msp_id: &str| {
            let (_, _, pem) = MEMBERS.iter().find(|(n, _, _)| *n == name).expect(name);
            w.store
                .validate_identity(&crate::serialize_identity_pem(msp_id, pem), NOW)
        };
        // Fabric's verdicts (tests/fixtures): valid and refused members of each MSP.
        let ou = |r| matches!(r, Err(SecurityError::OrganizationalUnit(_)));
        let untrusted = |r| matches!(r, Err(SecurityError::UntrustedCertificate(_)));
        assert!(verdict("ica-blue-and-peer", "Org1MSP").is_ok());
        assert!(ou(verdict("ica-blue", "Org1MSP")));
        assert!(untrusted(verdict("peer", "Org1MSP")));
        assert!(verdict("ica-blue", "Org3MSP").is_ok());
        assert!(untrusted(verdict("peer", "Org3MSP")));
        assert!(verdict("org2-peer0", "Org2MSP").is_ok());
        assert!(matches!(
            verdict("org2-peer1-revoked", "Org2MSP"),
            Err(SecurityError::Revoked(_))
        ));
        assert!(matches!(
            verdict("peer", "NoSuchMSP"),
            Err(SecurityError::UnknownMsp(_))
        ));
        assert!(verdict("own", "OwnMSP").is_ok());
    }

    #[test]
    fn every_seed_passes_and_short_inputs_are_harmless() {
        for (name, seed) in msp_seeds() {
            msp(&seed);
            for cut in [0, 1, 2, 3, seed.len() / 2] {
                msp(&seed[..cut.min(seed.len())]);
            }
            assert!(!name.is_empty());
        }
    }

    #[test]
    fn an_end_line_with_trailing_blanks_is_accepted_and_checked() {
        // The store accepts blanks after the END line, as Go's pem.Decode does; the oracle
        // reads the certificate the same way.
        let (_, _, pem) = MEMBERS
            .iter()
            .find(|(n, _, _)| *n == "ica-peer")
            .expect("member");
        let text = std::str::from_utf8(pem).expect("PEM text");
        let blanks = format!("{} \t\r\n", text.trim_end());
        let identity = crate::serialize_identity_pem("Org3MSP", blanks.as_bytes());
        assert!(world().store.validate_identity(&identity, NOW).is_ok());
        judge(&identity);
    }

    #[test]
    fn the_oracle_catches_an_unsigned_certificate() {
        // A certificate signed by no fixture CA (its own key): the store refuses it, so the
        // oracle is never asked; asked directly, it must fail.
        let unsigned = crate::serialize_identity_pem("Org1MSP", OTHER_CA);
        assert!(std::panic::catch_unwind(|| accepted_is_a_member(&unsigned)).is_err());
    }

    /// The comparison itself: verdicts of different kinds (an acceptance and a refusal,
    /// or two different refusals) fail the target; the same kind of refusal with different
    /// wording does not.
    #[test]
    fn verdicts_of_different_kinds_fail_the_target() {
        let untrusted = |why: &str| Err(SecurityError::UntrustedCertificate(why.into()));
        let revoked = Err(SecurityError::Revoked("serial 1".into()));
        assert_same(&untrusted("a"), &untrusted("b"), "same kind");
        assert_same(&Ok(()), &Ok(()), "both accept");
        for (a, b) in [
            (Ok(()), untrusted("a")),
            (untrusted("a"), Ok(())),
            (untrusted("a"), revoked.clone()),
        ] {
            let outcome = std::panic::catch_unwind(|| assert_same(&a, &b, "the two"));
            assert!(outcome.is_err(), "{a:?} against {b:?} passed");
        }
    }

    /// Each kind of input reaches its own checks, with the MSP or member its bytes pick:
    /// a certificate is judged three ways for the MSP its second byte names (a revoked
    /// member of Org2MSP is refused as revoked, not as a stranger to Org1MSP), an identity
    /// the same (the admin refused: Org1MSP's root issued its intermediate, so it issues no
    /// members), a first byte past the last kind wraps round to the first, a signature is
    /// checked by both implementations against the member its byte picks (the seed's, whose
    /// key signed it: accepted), a `config.yaml` judges every member, and a channel block
    /// every member for each of its MSPs.
    #[test]
    fn each_kind_of_input_reaches_its_checks() {
        let three = [
            "the store and the AWS-LC provider",
            "the AWS-LC and pure-Rust providers",
            "the AWS-LC provider, cached",
        ];
        let names = |checks: &[(String, Result<(), SecurityError>)]| {
            checks
                .iter()
                .map(|(who, _)| who.clone())
                .collect::<Vec<_>>()
        };
        let revoked = checks_of(&seed("certificate-org2-peer1-revoked"));
        assert_eq!(names(&revoked), three);
        assert!(
            revoked
                .iter()
                .all(|(_, v)| matches!(v, Err(SecurityError::Revoked(_)))),
            "{revoked:?}"
        );
        let own = checks_of(&seed("certificate-own"));
        assert_eq!(names(&own), three);
        assert!(own.iter().all(|(_, v)| v.is_ok()), "{own:?}");

        let identity = seed("identity-admin");
        assert_eq!(identity[0], IDENTITY);
        let judged = checks_of(&identity);
        assert_eq!(names(&judged), three);
        assert!(
            judged
                .iter()
                .all(|(_, v)| matches!(v, Err(SecurityError::UntrustedCertificate(_)))),
            "{judged:?}"
        );
        let mut wrapped = identity.clone();
        wrapped[0] = MODES;
        assert_eq!(checks_of(&wrapped), judged);

        let signature = checks_of(&seed("signature-own"));
        assert_eq!(
            signature,
            [("AWS-LC's and RustCrypto's ECDSA".to_owned(), Ok(()))]
        );

        let config = checks_of(&seed("config-ica-ou-identifier-and-roles"));
        assert_eq!(config.len(), MEMBERS.len());
        assert!(config.iter().all(|(who, _)| who == "AWS-LC and RustCrypto"));
        // Org1MSP's own configuration refuses some of its CAs' members by their OUs.
        assert!(
            config
                .iter()
                .any(|(_, v)| matches!(v, Err(SecurityError::OrganizationalUnit(_)))),
            "{config:?}"
        );

        let block = checks_of(&seed("channel-block"));
        assert_eq!(block.len(), 3 * MEMBERS.len(), "three MSPs in the block");
        assert!(block.iter().any(|(_, v)| v.is_ok()), "{block:?}");
    }

    /// A `config.yaml` input names its certificates by the paths the fixtures use: each
    /// is found (the foreign CA too, so a configuration naming it is refused where Fabric
    /// refuses it, when it is applied, and an empty file is read as empty); any other path
    /// is no file, and the configuration is refused as it is read.
    #[test]
    fn a_config_yaml_finds_the_fixtures_cas_by_their_paths() {
        let naming = |file: &str| {
            let text = format!(
                "OrganizationalUnitIdentifiers:\n  - Certificate: {file}\n    \
                 OrganizationalUnitIdentifier: blue\n"
            );
            parse_config(text.as_bytes())
        };
        for (file, pem) in [
            ("cacerts/ca.pem", CA),
            ("/intermediatecerts/ica.pem", ICA),
            ("other-ca.pem", OTHER_CA),
            ("empty.pem", &[][..]),
        ] {
            let config = naming(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            let [(unit, text, path)] = &config.identifiers[..] else {
                panic!("{file}: {:?}", config.identifiers.len());
            };
            assert_eq!((unit.as_str(), text.as_slice()), ("blue", pem), "{file}");
            assert_eq!(path, &PathBuf::from(file));
        }
        assert!(naming("cacerts/other.pem").is_err());
    }
}
