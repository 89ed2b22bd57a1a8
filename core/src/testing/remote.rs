//! A scripted remote for tests that drive one core directly: the messages a remote peer
//! writes, built once here instead of in every test file, and one drain of the core's
//! output.

use super::*;
use crate::proto::gossip::Envelope;
use prost::Message;

/// An Envelope with these exact bytes as payload and signature (no secret envelope).
pub fn envelope_of(payload: impl Into<Bytes>, signature: impl Into<Bytes>) -> Bytes {
    Bytes::from(
        Envelope {
            payload: payload.into(),
            signature: signature.into(),
            secret_envelope: None,
        }
        .encode_to_vec(),
    )
}

/// A `ConnEstablish` as a remote would write it: for `pki` with `identity`, binding
/// `tls_cert_hash` (empty without TLS), signed with the test provider's key when `sign`.
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
    envelope_of(payload, signature)
}

/// One drain of [`Comm::poll_output`], split into the actions and the events (the
/// time-out that ends it is dropped).
pub fn drain<S: Security>(c: &mut Comm<S>) -> (Vec<Action>, Vec<Event>) {
    let (mut actions, mut events) = (Vec::new(), Vec::new());
    loop {
        match c.poll_output() {
            Output::Action(a) => actions.push(a),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => return (actions, events),
        }
    }
}
