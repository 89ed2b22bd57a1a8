//! Round trips: the `envelope` and `gossip_message` targets.

use super::*;

/// Decodes an `Envelope`, re-encodes it and compares what must match: the re-encoding
/// decodes to the same value and re-encodes to the same bytes (byte equality with the input
/// only holds for canonical input, since prost drops unknown fields). Also checks that
/// [`SignedMessage::from_envelope_bytes`] keeps the received bytes exactly and that
/// [`verify_envelope`] accepts exactly the envelopes an independent check accepts.
pub fn envelope(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(env) = Envelope::decode(input.clone()) else {
        assert!(SignedMessage::from_envelope_bytes(input).is_err());
        return;
    };
    let first = env.encode_to_vec();
    assert_eq!(first.len(), env.encoded_len());
    assert!(first.len() <= data.len(), "re-encoding never grows");
    let again = Envelope::decode(first.as_slice()).expect("a re-encoding decodes");
    assert_eq!(again, env);
    assert_eq!(again.encode_to_vec(), first);

    // The core's view: a received envelope is kept byte for byte.
    match SignedMessage::from_envelope_bytes(input.clone()) {
        Ok(m) => {
            assert_eq!(m.envelope_bytes(), &input);
            let msg = GossipMessage::decode(env.payload.clone()).expect("decoded once already");
            assert_eq!(m.message(), &msg);
        }
        Err(_) => assert!(GossipMessage::decode(env.payload.clone()).is_err()),
    }

    // Verification with Fabric's test provider, against an independent oracle.
    let sec = TestOnlyHmacSecurity::new("fuzz");
    let verifies = |payload: &[u8], sig: &[u8]| {
        !payload.is_empty() && !sig.is_empty() && sig == TestOnlyHmacSecurity::hmac(payload)
    };
    let expected = match (&env.secret_envelope, verifies(&env.payload, &env.signature)) {
        (_, false) => false,
        (None, true) => true,
        (Some(s), true) => verifies(&s.payload, &s.signature),
    };
    assert_eq!(verify_envelope(&sec, b"fuzz", &env).is_ok(), expected);
    #[cfg(test)]
    checked("verifies", expected);
}

/// Decodes a `GossipMessage` (any content type), re-encodes and compares as [`envelope`]
/// does; then signs and noop-signs it and checks both come back intact, splices nonces
/// into both encodings as `SendWithAck` of an encoded message does, and hands it to an
/// established connection of a core, which must deliver it unchanged, intercept it as an
/// ack, or drop it as empty, and keep the connection either way.
pub fn gossip_message(data: &[u8]) {
    let Ok(msg) = GossipMessage::decode(data) else {
        return;
    };
    let first = msg.encode_to_vec();
    assert_eq!(first.len(), msg.encoded_len());
    let again = GossipMessage::decode(first.as_slice()).expect("a re-encoding decodes");
    assert_eq!(again, msg);
    assert_eq!(again.encode_to_vec(), first);
    assert_eq!(
        msg.content_kind().map(|k| k.as_str()),
        msg.content.as_ref().map(|_| msg.content_name())
    );

    let sec = TestOnlyHmacSecurity::new(PEERS[0]);
    let signed = SignedMessage::sign(msg.clone(), &sec).expect("the test provider signs");
    let back = SignedMessage::from_envelope_bytes(signed.envelope_bytes().clone())
        .expect("our own envelope decodes");
    assert_eq!(back.message(), &msg);
    let env = Envelope::decode(signed.envelope_bytes().clone()).expect("decodes");
    assert_eq!(
        verify_envelope(&sec, PEERS[0].as_bytes(), &env).is_ok(),
        !first.is_empty()
    );
    let noop = SignedMessage::noop(msg.clone());

    // SendWithAck of an encoded message: the nonce spliced into our own encoding gives
    // what encoding the message with that nonce gives, byte for byte; spliced into the
    // input as received (any field order, repeated nonces, unknown fields), it decodes
    // to the message with that nonce.
    let as_received = Envelope {
        payload: Bytes::copy_from_slice(data),
        ..Envelope::default()
    };
    let as_received = SignedMessage::from_envelope_bytes(Bytes::from(as_received.encode_to_vec()))
        .expect("the payload decoded above");
    for nonce in [0, msg.nonce.wrapping_add(1), u64::MAX] {
        let expected = GossipMessage {
            nonce,
            ..msg.clone()
        };
        assert_eq!(
            signed.noop_envelope_with_nonce(nonce),
            SignedMessage::noop(expected.clone()).envelope_bytes()
        );
        let out = Envelope::decode(as_received.noop_envelope_with_nonce(nonce)).expect("decodes");
        assert!(out.signature.is_empty() && out.secret_envelope.is_none());
        assert_eq!(
            GossipMessage::decode(out.payload).expect("decodes"),
            expected
        );
    }

    // Through the core's receive path.
    let cfg = Config {
        max_message_size: usize::MAX,
        ..Config::default()
    };
    let mut d = Driver::new(cfg, 0);
    let sub = d.subscribe(0);
    let s = d.accept(0, 0);
    d.envelope(s, d_hello(0, true, 0));
    assert!(d.conn_pki.contains_key(&s), "the valid handshake registers");
    let before = d.comm.stats().clone();
    d.envelope(s, noop.envelope_bytes().clone());
    let after = d.comm.stats().clone();
    assert_eq!(after.received, before.received + 1);
    assert!(d.comm.is_live_stream(s), "a decodable message never closes");
    #[cfg(test)]
    checked("received", msg.content_kind().map(|k| k.as_str()));
    match &msg.content {
        None => assert_eq!(after.empty_messages, before.empty_messages + 1),
        Some(gossip_message::Content::Ack(_)) => {
            assert_eq!(after.acks_unmatched, before.acks_unmatched + 1);
        }
        Some(_) => {
            let got = d.comm.poll_delivery(sub).expect("delivered");
            d.delivered.polled += 1;
            assert_eq!(got.message, msg);
            assert_eq!(&got.envelope_bytes, noop.envelope_bytes());
            assert_eq!(got.conn, s);
        }
    }
    d.check();
}
