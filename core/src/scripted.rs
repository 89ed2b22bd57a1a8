//! The Envelopes a scripted remote writes, built once for the two users that play a remote
//! against one core: the `testing` harness and the `fuzzing` targets.

use crate::security::TestOnlyHmacSecurity;
use bytes::Bytes;
use fabric_gossip_proto::gossip::{Envelope, SecretEnvelope};
use prost::Message;

/// An Envelope with these exact bytes as payload and signature.
pub(crate) fn envelope(
    payload: impl Into<Bytes>,
    signature: impl Into<Bytes>,
    secret_envelope: Option<SecretEnvelope>,
) -> Bytes {
    Bytes::from(
        Envelope {
            payload: payload.into(),
            signature: signature.into(),
            secret_envelope,
        }
        .encode_to_vec(),
    )
}

/// A `ConnEstablish` as a remote would write it: for `pki` with `identity`, binding
/// `tls_cert_hash` (empty without TLS), signed with the test provider's key when `sign`.
/// Public through the `testing` module.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub fn conn_establish(
    pki: &[u8],
    identity: &[u8],
    tls_cert_hash: &[u8],
    probe: bool,
    sign: bool,
) -> Bytes {
    let msg = crate::message::conn_establish_message(
        Bytes::copy_from_slice(pki),
        Bytes::copy_from_slice(identity),
        Bytes::copy_from_slice(tls_cert_hash),
        probe,
    );
    let payload = msg.encode_to_vec();
    let signature = if sign {
        TestOnlyHmacSecurity::hmac(&payload).to_vec()
    } else {
        Vec::new()
    };
    envelope(payload, signature, None)
}
