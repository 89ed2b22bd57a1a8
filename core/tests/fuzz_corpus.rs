//! The fuzz corpus as ordinary tests on stable: every file under `fuzz/corpus/<target>/`
//! (seeds, and the inputs of crashes found and fixed) runs through the same entry point the
//! cargo-fuzz target calls, so `cargo test` keeps every finding fixed.
//!
//! The seeds themselves are generated here, from Fabric's wire vectors
//! (`proto/tests/fixtures/`) and from hand-written scenarios, and checked against the
//! committed files so the two cannot drift apart. After changing a seed or an input format:
//! `UPDATE_FUZZ_CORPUS=1 cargo test -p fabric-gossip-core --test suite fuzz_corpus::`.

use fabric_gossip_core::fuzzing::{
    self, HandshakeCase, HandshakeMessage, Later, Op, OpsConfig, encode_handshake, encode_ops,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 4] = [
    ("envelope", fuzzing::envelope),
    ("gossip_message", fuzzing::gossip_message),
    ("handshake", fuzzing::handshake),
    ("core_ops", fuzzing::core_ops),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_corpus_file_passes_its_target() {
    let mut failures = Vec::new();
    let mut total = 0;
    for (target, entry) in TARGETS {
        let dir = corpus_dir().join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("readable directory").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target}: empty corpus");
        for path in files {
            let data = std::fs::read(&path).expect("readable corpus file");
            total += 1;
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "failing corpus inputs: {failures:#?}");
    assert!(total >= 40, "only {total} corpus files");
}

#[test]
fn seeds_are_committed_as_generated() {
    let mut stale = Vec::new();
    let mut failing = Vec::new();
    for (target, name, bytes) in seeds() {
        // Every seed passes its target, or it would not be a seed.
        let entry = TARGETS
            .iter()
            .find(|t| t.0 == target)
            .expect("known target")
            .1;
        if std::panic::catch_unwind(|| entry(&bytes)).is_err() {
            failing.push(format!("{target}/{name}"));
            continue;
        }
        let path = corpus_dir().join(target).join(format!("seed-{name}"));
        if !fuzzing::seed_in_step(&path, &bytes).expect("write seed") {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        failing.is_empty(),
        "seeds that fail their target: {failing:#?}"
    );
    assert!(
        stale.is_empty(),
        "seeds differ from the generator; run UPDATE_FUZZ_CORPUS=1 cargo test -p \
         fabric-gossip-core --test suite fuzz_corpus:: and commit: {stale:#?}"
    );
}

// ------------------------------------------------------------------------ the seeds

fn fixture(name: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proto/tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    v["records"].as_array().expect("records").clone()
}

fn hex_of(record: &Value, key: &str) -> Vec<u8> {
    hex::decode(record[key].as_str().expect("hex field")).expect("valid hex")
}

fn name_of(record: &Value) -> String {
    record["name"].as_str().expect("name").to_owned()
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let messages = fixture("gossip_messages.json");
    let conns = fixture("conn_establish.json");
    let secret = fixture("secret_envelope.json");

    // Round trips: every content type, as a GossipMessage and as a signed Envelope.
    for r in &messages {
        out.push(("gossip_message", name_of(r), hex_of(r, "bytes_hex")));
        out.push(("envelope", name_of(r), hex_of(r, "signed_envelope_hex")));
    }
    for r in conns.iter().chain(&secret) {
        out.push(("envelope", name_of(r), hex_of(r, "envelope_hex")));
        out.push(("gossip_message", name_of(r), hex_of(r, "payload_hex")));
    }

    // Handshakes: Fabric's own ConnEstablish vectors, first to an accepting core and to a
    // dialling one, then each check's failure crafted in turn.
    let data_env = hex_of(&messages[3], "noop_envelope_hex");
    for (k, r) in conns.iter().enumerate() {
        let case = HandshakeCase {
            role: (k % 3) as u8,
            tls: r["tls_cert_hash_hex"].as_str() != Some(""),
            cert: 0,
            expect: 1,
            late: false,
            first: HandshakeMessage::Raw(hex_of(r, "envelope_hex")),
            later: vec![Later::Envelope(HandshakeMessage::Raw(data_env.clone()))],
        };
        out.push(("handshake", name_of(r), encode_handshake(&case)));
    }
    // A crafted ConnEstablish from its seven choices, in the order of the fields of
    // `HandshakeMessage::Crafted`; all zero is a valid one.
    let with = |f: &dyn Fn(&mut [u8; 7])| {
        let mut v = [0u8; 7];
        f(&mut v);
        HandshakeMessage::crafted(v)
    };
    let valid = with(&|_| {});
    // A remote claiming PKI-ID and identity choice `n` (see `Crafted::pki`).
    let as_peer = |n: u8| {
        with(&|v| {
            v[0] = n;
            v[1] = n;
        })
    };
    let case = |role: u8, tls: bool, cert: u8, expect: u8, first: HandshakeMessage| HandshakeCase {
        role,
        tls,
        cert,
        expect,
        late: false,
        first,
        later: vec![
            Later::Envelope(HandshakeMessage::Raw(data_env.clone())),
            Later::Envelope(HandshakeMessage::Raw(vec![0xff; 4])),
            Later::Wait(3000),
            Later::End,
        ],
    };
    let crafted: Vec<(&str, HandshakeCase)> = vec![
        ("accept_valid", case(0, false, 0, 0, valid.clone())),
        ("accept_probe", case(0, false, 0, 0, with(&|v| v[3] = 1))),
        ("accept_tls", case(0, true, 0, 0, valid.clone())),
        ("accept_tls_wrong_cert", case(0, true, 2, 0, valid.clone())),
        ("accept_tls_no_cert", case(0, true, 1, 0, valid.clone())),
        ("dial_valid", case(1, false, 0, 0, valid.clone())),
        ("dial_unexpected_peer", case(1, false, 0, 2, valid.clone())),
        ("dial_tls", case(1, true, 0, 1, valid.clone())),
        ("op_valid", case(2, false, 0, 0, valid.clone())),
        ("op_mismatch", case(2, false, 0, 2, valid.clone())),
        ("no_pki_id", case(0, false, 0, 0, with(&|v| v[0] = 3))),
        (
            "identity_too_large",
            case(0, false, 0, 0, with(&|v| v[0] = 6)),
        ),
        (
            "identity_mismatch",
            case(0, false, 0, 0, with(&|v| v[1] = 1)),
        ),
        ("identity_rejected", case(0, false, 0, 0, as_peer(4))),
        ("identity_expired", case(1, false, 0, 1, as_peer(5))),
        ("wrong_type", case(0, false, 0, 0, with(&|v| v[4] = 1))),
        ("no_content", case(2, false, 0, 0, with(&|v| v[4] = 2))),
        ("unsigned", case(0, false, 0, 0, with(&|v| v[5] = 1))),
        ("bad_signature", case(1, false, 0, 0, with(&|v| v[5] = 2))),
        ("bad_secret", case(0, false, 0, 0, with(&|v| v[6] = 2))),
        ("good_secret", case(0, false, 0, 0, with(&|v| v[6] = 1))),
        ("claims_our_pki", case(0, false, 0, 0, as_peer(2))),
        (
            "late",
            HandshakeCase {
                late: true,
                ..case(0, false, 0, 0, valid.clone())
            },
        ),
    ];
    for (name, c) in crafted {
        out.push(("handshake", name.to_owned(), encode_handshake(&c)));
    }

    // core_ops: scenarios a driver goes through, each ending in stop.
    for (name, cfg, ops) in scenarios() {
        out.push(("core_ops", name.to_owned(), encode_ops(&cfg, &ops)));
    }
    out
}

/// Roomy bounds (buffers 3, window 2, subscription 2 + 2, pending 3, connections 4), TLS
/// on or off. See `OpsConfig` for the bit layout.
fn roomy(tls: bool) -> OpsConfig {
    OpsConfig([
        3,
        5,
        7,
        3 | 3 << 2 | 2 << 4,
        2 | 2 << 2 | 2 << 4,
        255,
        3 | 4 << 2,
        5 | 3 << 3,
        2,
        3,
        1,
        u8::from(tls),
    ])
}

/// Every bound at its smallest.
fn tight() -> OpsConfig {
    OpsConfig([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0])
}

/// The peer a stream really leads to (see `Op::Hello`).
const THEM: u8 = 128;

fn scenarios() -> Vec<(&'static str, OpsConfig, Vec<Op>)> {
    use Op::*;
    let hello = |stream| Hello {
        stream,
        peer: THEM,
        flaw: 0,
    };
    // A catch-all subscription, then `peer` connects to us (stream 0).
    let subscribed_and_accepted =
        |peer| vec![Subscribe { filter: 0 }, Accept { peer, cert: 0 }, hello(0)];
    // The first `n` dials connect and their Pings are answered, in order.
    let dialed = |n: u8| -> Vec<Op> {
        (0..n)
            .flat_map(|dial| {
                [
                    DialResult {
                        dial,
                        ok: true,
                        cert: 0,
                    },
                    PingResult { dial, ok: true },
                ]
            })
            .collect()
    };
    let mut v = Vec::new();
    v.push((
        "inbound_exchange",
        roomy(false),
        [
            subscribed_and_accepted(0),
            vec![Data { stream: 0 }; 3],
            vec![
                Poll { sub: 0, count: 7 },
                Respond { stream: 0 },
                AckOut {
                    stream: 0,
                    nonce: 0,
                },
                Sent {
                    stream: 0,
                    count: 3,
                },
                Closed {
                    stream: 0,
                    error: false,
                },
                Respond { stream: 0 },
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "outbound_send",
        roomy(false),
        [
            vec![Subscribe { filter: 1 }, Send { peers: 0b1 }],
            dialed(1),
            vec![
                hello(0),
                Sent {
                    stream: 0,
                    count: 3,
                },
                Data { stream: 0 },
                Data { stream: 0 },
                Poll { sub: 0, count: 3 },
                Advance { millis: 1000 },
                WriteFailed { stream: 0 },
                Send { peers: 0b1 },
                Stop,
            ],
        ]
        .concat(),
    ));
    for (name, peer) in [("crossing_higher_peer", 3u8), ("crossing_lower_peer", 0)] {
        v.push((
            name,
            roomy(false),
            [
                vec![Send { peers: 1 << peer }, Accept { peer, cert: 0 }],
                dialed(1),
                vec![
                    hello(1),
                    hello(0),
                    Sent {
                        stream: 1,
                        count: 2,
                    },
                    Send { peers: 1 << peer },
                    AdvanceToDeadline,
                    Send { peers: 1 << peer },
                    Closed {
                        stream: 0,
                        error: true,
                    },
                    Send { peers: 1 << peer },
                    Stop,
                ],
            ]
            .concat(),
        ));
    }
    v.push((
        "send_with_ack",
        roomy(false),
        [
            vec![SendWithAck {
                peers: 0b11,
                min_ack: 2,
                timeout: 10,
            }],
            dialed(2),
            vec![
                hello(0),
                hello(1),
                Sent {
                    stream: 0,
                    count: 3,
                },
                Sent {
                    stream: 1,
                    count: 3,
                },
                AckIn {
                    stream: 0,
                    nonce: 0,
                    error: false,
                },
                AckIn {
                    stream: 1,
                    nonce: 0,
                    error: true,
                },
                SendWithAck {
                    peers: 0b111,
                    min_ack: 1,
                    timeout: 3,
                },
                AdvanceToDeadline,
                AdvanceToDeadline,
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "flood",
        roomy(false),
        [
            vec![
                Subscribe { filter: 0 },
                Subscribe { filter: 2 },
                Accept { peer: 1, cert: 0 },
                hello(0),
            ],
            vec![Data { stream: 0 }; 12],
            vec![Poll { sub: 0, count: 7 }, Unsubscribe { sub: 1 }],
            vec![Data { stream: 0 }; 3],
            vec![Stop],
        ]
        .concat(),
    ));
    v.push((
        "never_reads",
        roomy(false),
        [
            vec![Accept { peer: 1, cert: 0 }, hello(0)],
            vec![Send { peers: 0b10 }; 8],
            vec![SendWait { peer: 1 }; 5],
            vec![Respond { stream: 0 }; 3],
            vec![
                Sent {
                    stream: 0,
                    count: 1,
                },
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "reconnect",
        roomy(false),
        vec![
            Subscribe { filter: 0 },
            Accept { peer: 2, cert: 0 },
            hello(0),
            Send { peers: 0b100 },
            Accept { peer: 2, cert: 0 },
            hello(1),
            Accept { peer: 2, cert: 0 },
            hello(2),
            Data { stream: 2 },
            Data { stream: 0 },
            Poll { sub: 0, count: 3 },
            Stop,
        ],
    ));
    // A reconnection while we do not read, with a zero crossing grace: the retired stream
    // stays open while paused, and its next look must not be armed at the instant it fires
    // (a CI fuzz run timed out there).
    let mut zero_grace = roomy(false);
    zero_grace.0[9] = 0;
    v.push((
        "paused_retired_zero_grace",
        zero_grace,
        [
            subscribed_and_accepted(2),
            vec![Data { stream: 0 }; 5],
            vec![
                Accept { peer: 2, cert: 0 },
                hello(1),
                AdvanceToDeadline,
                AdvanceToDeadline,
                Poll { sub: 0, count: 7 },
                AdvanceToDeadline,
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "hostile_streams",
        roomy(false),
        vec![
            Accept { peer: 0, cert: 0 },
            Garbage {
                stream: 0,
                bytes: vec![0xff, 0xff, 0xff],
            },
            Accept { peer: 1, cert: 0 },
            Hello {
                stream: 1,
                peer: THEM,
                flaw: 1,
            },
            Accept { peer: 2, cert: 0 },
            Oversized { stream: 2 },
            Accept { peer: 3, cert: 0 },
            Hello {
                stream: 3,
                peer: 0,
                flaw: 5,
            },
            Accept { peer: 0, cert: 0 },
            Accept { peer: 1, cert: 0 },
            Accept { peer: 2, cert: 0 },
            Accept { peer: 3, cert: 0 },
            Advance { millis: 2000 },
            StaleHandle {
                kind: 0,
                index: 1,
                generation: 0,
            },
            StaleHandle {
                kind: 1,
                index: 0,
                generation: 0,
            },
            Stop,
        ],
    ));
    v.push((
        "probe_and_handshake_ops",
        roomy(false),
        [
            vec![
                Probe { peer: 0 },
                Handshake { peer: 1 },
                Handshake { peer: 2 | 2 << 5 },
            ],
            dialed(3),
            vec![
                hello(0),
                hello(1),
                // Each remote accepts us: the verdict that completes a handshake().
                Closed {
                    stream: 0,
                    error: false,
                },
                Closed {
                    stream: 1,
                    error: false,
                },
                AdvanceToDeadline,
                AdvanceToDeadline,
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "tls",
        roomy(true),
        [
            vec![
                Accept { peer: 0, cert: 0 },
                hello(0),
                Accept { peer: 1, cert: 1 },
                Accept { peer: 2, cert: 2 },
                hello(2),
                Send { peers: 0b1000 },
            ],
            dialed(1),
            vec![
                hello(3),
                Sent {
                    stream: 3,
                    count: 1,
                },
                Stop,
            ],
        ]
        .concat(),
    ));
    v.push((
        "identity_expires",
        roomy(false),
        vec![
            Subscribe { filter: 0 },
            Accept { peer: 4, cert: 0 },
            hello(0),
            Data { stream: 0 },
            Advance { millis: 4000 },
            Data { stream: 0 },
            Poll { sub: 0, count: 2 },
            Stop,
        ],
    ));
    v.push((
        "identity_revoked",
        roomy(false),
        [
            subscribed_and_accepted(0),
            vec![
                Data { stream: 0 },
                Revoke { peer: 0 },
                Data { stream: 0 },
                Accept { peer: 0, cert: 0 },
                hello(1),
                Poll { sub: 0, count: 2 },
                Stop,
                Revoke { peer: 1 },
            ],
        ]
        .concat(),
    ));
    v.push((
        "identity_switch",
        roomy(false),
        [
            vec![Send {
                peers: 0b1 | 3 << 5,
            }],
            dialed(1),
            vec![hello(0), Send { peers: 0b1 }, Stop],
        ]
        .concat(),
    ));
    v.push((
        "calls_after_stop",
        roomy(false),
        vec![
            Subscribe { filter: 0 },
            Accept { peer: 0, cert: 0 },
            hello(0),
            Data { stream: 0 },
            Stop,
            Send { peers: 0b1 },
            SendWait { peer: 0 },
            Respond { stream: 0 },
            Subscribe { filter: 0 },
            Poll { sub: 0, count: 1 },
            Unsubscribe { sub: 0 },
            Accept { peer: 0, cert: 0 },
            Probe { peer: 0 },
            Advance { millis: 60_000 },
            Stop,
        ],
    ));
    v.push((
        "tight_bounds",
        tight(),
        [
            vec![Subscribe { filter: 0 }, Subscribe { filter: 0 }],
            vec![
                Accept { peer: 0, cert: 0 },
                Accept { peer: 1, cert: 0 },
                hello(1),
            ],
            vec![Send { peers: 0b11 }, SendWait { peer: 2 }],
            dialed(1),
            vec![Data { stream: 1 }; 3],
            vec![
                Probe { peer: 3 },
                Probe { peer: 3 },
                AdvanceToDeadline,
                AdvanceToDeadline,
            ],
        ]
        .concat(),
    ));
    v
}

#[test]
fn scenario_seeds_reach_their_states() {
    for (name, cfg, ops) in scenarios() {
        let st = fuzzing::core_ops_stats(&encode_ops(&cfg, &ops));
        println!("{name}: {st:?}");
        let reached = match name {
            "inbound_exchange" => st.connections_opened == 1 && st.received == 3 && st.sent >= 2,
            "outbound_send" => st.sent >= 1 && st.presumed_dead >= 1 && st.received == 2,
            "crossing_higher_peer" | "crossing_lower_peer" => st.crossings == 1,
            "send_with_ack" => st.connections_opened == 2 && st.acks_unmatched == 0,
            "flood" => st.read_pauses >= 1 && st.dropped_subscription_overflow >= 1,
            "never_reads" => st.dropped_overflow >= 1,
            "reconnect" => st.connections_opened == 3 && st.connections_closed == 3,
            "paused_retired_zero_grace" => {
                st.read_pauses >= 1 && st.connections_opened == 2 && st.connections_closed == 2
            }
            "hostile_streams" => {
                st.oversized == 1
                    && st.handshake_failures_for("malformed") == 2
                    && st.handshake_failures_for("bad_signature") == 1
                    && st.handshake_failures_for("evicted") >= 1
                    && st.probed == 1
            }
            "probe_and_handshake_ops" => st.handshakes_ok == 2,
            "tls" => {
                st.handshake_failures_for("no_tls_certificate") == 1
                    && st.handshake_failures_for("tls_cert_hash_mismatch") == 1
                    && st.connections_opened == 2
            }
            "identity_expires" => st.received == 1 && st.connections_closed == 1,
            "identity_revoked" => {
                st.received == 1
                    && st.connections_closed == 1
                    && st.handshake_failures_for("invalid_identity") == 1
            }
            "identity_switch" => st.handshake_failures_for("unexpected_peer") == 1,
            "calls_after_stop" => st.dropped_on_stop == 1,
            "tight_bounds" => st.dropped_no_connection >= 1 && st.dropped_overflow >= 1,
            other => panic!("no expectation for scenario {other}"),
        };
        assert!(reached, "scenario {name} does not reach its state: {st:?}");
    }
}
