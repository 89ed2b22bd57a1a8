//! The `handshake` target: an independent oracle predicts each handshake's outcome.

use super::*;

/// The first (or a later) Envelope of the `handshake` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeMessage {
    /// These bytes, as they are.
    Raw(Vec<u8>),
    /// A ConnEstablish built from choices, each able to be right or wrong.
    Crafted {
        /// Claimed PKI-ID: 0 `a-peer`, 1 `z-peer`, 2 ourselves, 3 empty, 4 rejected,
        /// 5 expired, 6 an identity larger than the limit.
        pki: u8,
        /// The identity, chosen like `pki`.
        identity: u8,
        /// 0 the right certificate hash for the role, 1 wrong, 2 empty.
        cert: u8,
        /// The `probe` flag.
        probe: bool,
        /// 0 a ConnEstablish, 1 a data message, 2 no content.
        content: u8,
        /// 0 signed, 1 unsigned, 2 corrupted signature, 3 signature of other bytes.
        signature: u8,
        /// 0 no secret envelope, 1 a valid one, 2 an unsigned one.
        secret: u8,
    },
}

impl HandshakeMessage {
    /// A crafted ConnEstablish from its seven choices in the order of
    /// [`HandshakeMessage::Crafted`]'s fields (`probe` when its byte is 1): tests and seeds
    /// name a case in one line, and all zero is a valid ConnEstablish of `a-peer`.
    pub fn crafted(v: [u8; 7]) -> Self {
        HandshakeMessage::Crafted {
            pki: v[0],
            identity: v[1],
            cert: v[2],
            probe: v[3] == 1,
            content: v[4],
            signature: v[5],
            secret: v[6],
        }
    }
}

/// One input of the `handshake` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeCase {
    /// 0: the core accepts the stream; 1: it dials to send; 2: a `handshake()` operation.
    pub role: u8,
    /// TLS on.
    pub tls: bool,
    /// The certificate the remote presents: 0 its own, 1 none, 2 a wrong one.
    pub cert: u8,
    /// For the dialling roles, the PKI-ID expected: 0 `a-peer`, 1 unknown, 2 `z-peer`.
    pub expect: u8,
    /// Let the handshake deadline pass before the first message.
    pub late: bool,
    /// The first Envelope.
    pub first: HandshakeMessage,
    /// Later inputs on the stream: an Envelope, time passing (ms), or the stream ending.
    pub later: Vec<Later>,
}

/// What happens after the first Envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Later {
    /// Another Envelope arrives.
    Envelope(HandshakeMessage),
    /// Time passes (milliseconds).
    Wait(u16),
    /// The remote ends the stream.
    End,
}

pub(super) fn read_message(i: &mut Input<'_>) -> HandshakeMessage {
    if i.u8().is_multiple_of(2) {
        HandshakeMessage::Raw(i.blob().to_vec())
    } else {
        HandshakeMessage::Crafted {
            pki: i.u8(),
            identity: i.u8(),
            cert: i.u8(),
            probe: i.bool(),
            content: i.u8(),
            signature: i.u8(),
            secret: i.u8(),
        }
    }
}

pub(super) fn write_message(o: &mut Output, m: &HandshakeMessage) {
    match m {
        HandshakeMessage::Raw(b) => {
            o.u8(0);
            o.blob(b);
        }
        HandshakeMessage::Crafted {
            pki,
            identity,
            cert,
            probe,
            content,
            signature,
            secret,
        } => {
            o.u8(1);
            for b in [*pki, *identity, *cert] {
                o.u8(b);
            }
            o.bool(*probe);
            for b in [*content, *signature, *secret] {
                o.u8(b);
            }
        }
    }
}

/// Encodes a [`HandshakeCase`] as input for [`handshake`] (for seeds).
pub fn encode_handshake(case: &HandshakeCase) -> Vec<u8> {
    let mut o = Output::default();
    o.u8(case.role);
    o.bool(case.tls);
    o.u8(case.cert);
    o.u8(case.expect);
    o.bool(case.late);
    write_message(&mut o, &case.first);
    for l in &case.later {
        match l {
            Later::Envelope(m) => {
                o.u8(0);
                write_message(&mut o, m);
            }
            Later::Wait(ms) => {
                o.u8(1);
                o.u16(*ms);
            }
            Later::End => o.u8(2),
        }
    }
    o.0
}

pub(super) const MAX_IDENTITY: usize = 300;

pub(super) fn build_message(m: &HandshakeMessage, inbound: bool) -> Bytes {
    let (pki, identity, cert_kind, probe, content, signature, secret) = match m {
        HandshakeMessage::Raw(b) => return Bytes::copy_from_slice(b),
        HandshakeMessage::Crafted {
            pki,
            identity,
            cert: c,
            probe,
            content,
            signature,
            secret,
        } => (*pki, *identity, *c, *probe, *content, *signature, *secret),
    };
    let name = |k: u8| -> Vec<u8> {
        match k % 7 {
            0 => PEERS[0].into(),
            1 => PEERS[3].into(),
            2 => ME.into(),
            3 => Vec::new(),
            4 => REJECTED.into(),
            5 => EXPIRED.into(),
            _ => vec![b'i'; MAX_IDENTITY + 1],
        }
    };
    let pki = name(pki);
    let hash = match cert_kind % 3 {
        0 => cert(
            Driver::peer_of_endpoint(&String::from_utf8_lossy(&pki)),
            inbound,
        )
        .to_vec(),
        1 => WRONG_CERT.to_vec(),
        _ => Vec::new(),
    };
    let msg = match content % 3 {
        0 => conn_message(&pki, &name(identity), &hash, probe),
        1 => data_message(1),
        _ => GossipMessage::default(),
    };
    let payload = msg.encode_to_vec();
    let good = TestOnlyHmacSecurity::hmac(&payload).to_vec();
    let sig = match signature % 4 {
        0 => good,
        1 => Vec::new(),
        2 => {
            let mut s = good;
            s[0] ^= 1;
            s
        }
        _ => TestOnlyHmacSecurity::hmac(b"other").to_vec(),
    };
    let secret = match secret % 3 {
        0 => None,
        1 => Some(SecretEnvelope {
            payload: Bytes::from_static(b"secret"),
            signature: Bytes::copy_from_slice(&TestOnlyHmacSecurity::hmac(b"secret")),
        }),
        _ => Some(SecretEnvelope {
            payload: Bytes::from_static(b"secret"),
            signature: Bytes::new(),
        }),
    };
    crate::scripted::envelope(payload, sig, secret)
}

/// What an independent reading of Fabric's checks (`gossip/comm/comm_impl.go`,
/// `authenticateRemotePeer`, in Fabric's order) says the handshake
/// must end in: the proved PKI-ID and probe flag, or the label of the error.
pub(super) fn oracle(
    bytes: &[u8],
    cfg: &Config,
    presented: Option<CertHash>,
) -> Result<(PkiId, bool), &'static str> {
    // Fabric reads up to its message limit; this node refuses a first message that cannot
    // be a ConnEstablish within its identity limit before decoding it.
    if bytes.len() > cfg.max_message_size.min(cfg.max_identity_size + 64 * 1024) {
        return Err("malformed");
    }
    let env = Envelope::decode(bytes).map_err(|_| "malformed")?;
    let msg = GossipMessage::decode(env.payload.clone()).map_err(|_| "malformed")?;
    let Some(gossip_message::Content::Conn(c)) = msg.content else {
        return Err("wrong_type");
    };
    if c.pki_id.is_empty() {
        return Err("no_pki_id");
    }
    if c.pki_id.as_ref() == ME.as_bytes() {
        return Err("own_pki_id");
    }
    if c.identity.len() > cfg.max_identity_size {
        return Err("identity_too_large");
    }
    if c.identity.is_empty() {
        return Err("no_identity");
    }
    if c.identity.as_ref() == REJECTED.as_bytes() {
        return Err("invalid_identity");
    }
    if c.identity != c.pki_id {
        return Err("identity_mismatch");
    }
    if c.identity.as_ref() == EXPIRED.as_bytes() {
        return Err("identity_expired");
    }
    if cfg.tls.is_some() && Some(c.tls_cert_hash.as_ref()) != presented.as_ref().map(|h| &h[..]) {
        return Err("tls_cert_hash_mismatch");
    }
    let ok = |p: &[u8], s: &[u8]| s == TestOnlyHmacSecurity::hmac(p);
    if env.payload.is_empty() || env.signature.is_empty() {
        return Err("unsigned");
    }
    if !ok(&env.payload, &env.signature) {
        return Err("bad_signature");
    }
    if let Some(s) = &env.secret_envelope
        && (s.payload.is_empty() || s.signature.is_empty() || !ok(&s.payload, &s.signature))
    {
        return Err("bad_secret_envelope");
    }
    Ok((PkiId(c.pki_id), c.probe))
}

/// Arbitrary first and later Envelopes to an accepting core and to a dialling core (for a
/// connection, or a `handshake()` operation). The outcome must be exactly what an
/// independent reading of Fabric's checks predicts, reported by the right event and
/// counted; later Envelopes must find the stream live exactly when the handshake
/// registered it.
pub fn handshake(data: &[u8]) {
    let mut i = Input(Unstructured::new(data));
    let role = i.u8() % 3;
    let tls = i.bool();
    let cert_kind = i.u8() % 3;
    let expect = match i.u8() % 3 {
        0 => PkiId::from(PEERS[0]),
        1 => PkiId::default(),
        _ => PkiId::from(PEERS[3]),
    };
    let late = i.bool();
    let first = read_message(&mut i);

    let cfg = Config {
        max_message_size: 4096,
        max_identity_size: MAX_IDENTITY,
        ..Config::default()
    };
    let mut d = Driver::new(cfg, u8::from(tls));
    let cfg = d.comm.config().clone();
    let sub = d.subscribe(0);
    let remote = PEERS[0];
    let presented = match cert_kind {
        0 => Some(cert(0, role == 0)),
        1 => None,
        _ => Some(WRONG_CERT),
    };
    let peer = RemotePeer::new(remote, expect.clone());
    let mut op = None;
    let s = if role == 0 {
        d.accept(0, cert_kind)
    } else {
        if role == 1 {
            let m = SignedMessage::noop(data_message(9));
            assert_eq!(d.comm.send(d.now, &m, core::slice::from_ref(&peer)), Ok(()));
            d.sent.units += 1;
        } else {
            let id = d
                .comm
                .handshake(d.now, &peer)
                .expect("a running core starts it");
            d.ops.insert(id, 1);
            op = Some(id);
        }
        d.drain();
        let (&dial, _) = d.dials.iter().next().expect("the core dials");
        d.input(|c, now| c.handle_dial_result(now, dial, Ok(presented)));
        d.input(|c, now| c.handle_ping_result(now, dial, Ok(())));
        *d.streams.keys().next().expect("the core opens a stream")
    };
    d.check();
    let failures = d.comm.stats().handshake_failures_total();
    if tls && presented.is_none() {
        // Refused before anything is read.
        assert!(!d.comm.is_live_stream(s));
        assert_eq!(
            d.comm.stats().handshake_failures_for("no_tls_certificate"),
            1
        );
    }
    if late {
        // Every role waits conn_timeout for the remote's ConnEstablish.
        d.advance(cfg.conn_timeout);
        assert!(
            !d.comm.is_live_stream(s),
            "no stream outlives its handshake deadline"
        );
        if !(tls && presented.is_none()) {
            assert_eq!(d.comm.stats().handshake_failures_for("timeout"), 1);
            #[cfg(test)]
            checked("timed out", role);
        }
    }
    let live_before = d.comm.is_live_stream(s);
    let first_bytes = build_message(&first, role == 0);
    let r = d.feed(s, first_bytes.clone());
    assert_eq!(r.is_ok(), live_before, "{r:?}");
    d.drain();
    d.check();
    if let Some(id) = op
        && d.comm.is_live_stream(s)
    {
        // A handshake() that authenticated the remote waits for its verdict on us: the
        // remote (a Fabric peer or this core) ends the stream with OK.
        assert!(d.ops.contains_key(&id), "no result before the verdict");
        d.input(|c, now| c.handle_stream_closed(now, s, StreamEnd::Finished));
        d.drain();
        d.check();
    }
    if live_before {
        let predicted = match oracle(&first_bytes, &cfg, presented) {
            // Only the side that opens a stream may probe: Fabric's dialler and its
            // `Handshake` fail with errProbe once every other check has passed.
            Ok((_, true)) if role != 0 => Err("probe_answer"),
            other => other,
        };
        #[cfg(test)]
        checked("handshake", (role, &predicted));
        let stats = d.comm.stats().clone();
        let connected = d.conn_pki.get(&s).cloned();
        match (role, predicted) {
            (_, Err(label)) => {
                assert_eq!(stats.handshake_failures_for(label), 1, "{label}");
                if role == 1 {
                    assert_eq!(stats.dropped_no_connection, 1, "the waiting message");
                }
                assert_eq!(stats.handshake_failures_total(), failures + 1);
                assert!(connected.is_none());
                assert!(!d.comm.is_live_stream(s));
            }
            (0, Ok((_, true))) => {
                assert_eq!(stats.probed, 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
            }
            (0, Ok((pki, false))) => {
                assert_eq!(connected.as_ref(), Some(&pki));
                assert_eq!(
                    d.comm.connections(),
                    vec![crate::ConnectionEntry {
                        pki_id: pki,
                        primary: s,
                        secondary: None
                    }]
                );
            }
            (1, Ok((pki, _))) if !expect.is_empty() && expect != pki => {
                assert_eq!(stats.handshake_failures_for("unexpected_peer"), 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
                assert_eq!(stats.dropped_no_connection, 1);
            }
            (1, Ok((pki, _))) => {
                assert_eq!(connected.as_ref(), Some(&pki));
                assert_eq!(d.sent.data_writes, 1, "the waiting message goes out");
            }
            (_, Ok((pki, _))) if !expect.is_empty() && expect != pki => {
                assert_eq!(stats.handshake_failures_for("pki_id_mismatch"), 1);
                assert!(!d.comm.is_live_stream(s) && d.ops.is_empty());
                #[cfg(test)]
                checked("pki_id_mismatch", (&expect, &pki));
            }
            (_, Ok(_)) => {
                assert_eq!(stats.handshakes_ok, 1);
                assert!(connected.is_none() && !d.comm.is_live_stream(s));
                assert!(d.ops.is_empty(), "the operation reported");
            }
        }
    }
    if op.is_some() {
        // A handshake() operation reports once its stream is gone.
        assert!(d.ops.is_empty());
    }

    while !i.is_empty() {
        match i.u8() % 3 {
            0 => {
                let m = build_message(&read_message(&mut i), role == 0);
                let live = d.comm.is_live_stream(s);
                let before = d.comm.stats().clone();
                let r = d.feed(s, m.clone());
                assert_eq!(r.is_ok(), live, "{r:?}");
                d.drain();
                let after = d.comm.stats().clone();
                if live && d.conn_pki.contains_key(&s) {
                    // Established: counted exactly once, one way or another.
                    let moved = |f: fn(&Stats) -> u64| f(&after) - f(&before);
                    let ways = moved(|s| s.oversized)
                        + moved(|s| s.malformed)
                        + moved(|s| s.empty_messages)
                        + moved(|s| s.acks_unmatched)
                        + moved(|s| s.unrouted)
                        + u64::from(d.comm.delivery_queue_len(sub) > 0);
                    assert!(ways >= 1, "the envelope went somewhere");
                    #[cfg(test)]
                    checked("established", ways);
                    d.poll(sub, usize::MAX);
                }
            }
            1 => {
                let ms = i.u16();
                d.advance(Duration::from_millis(u64::from(ms)));
            }
            _ => {
                d.input(|c, now| c.handle_stream_closed(now, s, StreamEnd::Finished));
                assert!(!d.comm.is_live_stream(s));
            }
        }
        d.check();
    }
    d.stop();
}
