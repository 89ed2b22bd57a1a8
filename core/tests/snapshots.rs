//! insta snapshots of the core's output sequences, so any change in protocol behaviour
//! shows up in review: the handshake as initiator and responder, with TLS hashes, each
//! negative path, and crossing dials.

mod common;
use bytes::Bytes;
use common::*;
use fabric_gossip_core::proto::gossip::{Envelope, GossipMessage, gossip_message};
use fabric_gossip_core::*;
use prost::Message;
use std::time::Duration;

fn tls(i: u8) -> TlsHashes {
    TlsHashes {
        client_cert_hash: [i; 32],
        server_cert_hash: [i + 100; 32],
    }
}

fn describe_write(envelope: &Bytes) -> String {
    match SignedMessage::from_envelope_bytes(envelope.clone()) {
        Ok(m) => match &m.message().content {
            Some(gossip_message::Content::Conn(c)) => format!(
                "conn{{pki={} hash={} probe={}}} signed={}",
                PkiId(c.pki_id.clone()),
                if c.tls_cert_hash.is_empty() {
                    "-".to_string()
                } else {
                    hex::encode(&c.tls_cert_hash[..4])
                },
                c.probe,
                !Envelope::decode(envelope.clone())
                    .unwrap()
                    .signature
                    .is_empty()
            ),
            _ => m.message().content_name().to_string(),
        },
        Err(_) => "undecodable".into(),
    }
}

fn line(a: &Action) -> String {
    match a {
        Action::Write {
            stream, envelope, ..
        } => {
            format!("Write {stream} {}", describe_write(envelope))
        }
        other => format!("{other:?}"),
    }
}

fn net_log(net: &Net) -> String {
    net.log.join("\n")
}

/// The log of node 0's first message to node 1: dial, handshake both ways, delivery.
fn first_message(config: impl Fn(usize) -> Config) -> String {
    let mut net = Net::new(2, config);
    net.subscribe_all(1);
    net.record = true;
    net.send(0, 1, b"hello");
    net.settle();
    net_log(&net)
}

#[test]
fn handshake_initiator_and_responder() {
    insta::assert_snapshot!(first_message(|_| Config::default()));
}

#[test]
fn handshake_with_tls_hashes() {
    insta::assert_snapshot!(first_message(
        |i| Config::default().with_tls(tls(i as u8 + 1))
    ));
}

#[test]
fn crossing_dials() {
    let mut net = Net::new(2, |_| Config::default());
    net.subscribe_all(0);
    net.subscribe_all(1);
    net.record = true;
    net.send(0, 1, b"a");
    net.send(1, 0, b"b");
    net.settle();
    net.log.push("-- grace period --".into());
    net.advance(Duration::from_secs(3));
    insta::assert_snapshot!(net_log(&net));
}

fn conn_env(pki: &str, identity: &str, hash: &[u8], sign: bool) -> Bytes {
    conn_establish(pki.as_bytes(), identity.as_bytes(), hash, false, sign)
}

#[test]
fn negative_paths() {
    let now = Instant::from_unix_secs(1_700_000_000);
    let remote = "127.0.0.1:7051";
    let mut out = Vec::new();
    let cases: Vec<(&str, Config, Option<CertHash>, Option<Bytes>)> = vec![
        (
            "no TLS certificate",
            Config::default().with_tls(tls(1)),
            None,
            None,
        ),
        (
            "wrong type",
            Config::default(),
            None,
            Some(
                SignedMessage::noop(GossipMessage {
                    content: Some(gossip_message::Content::Empty(Default::default())),
                    ..Default::default()
                })
                .envelope_bytes()
                .clone(),
            ),
        ),
        (
            "no PKI-ID",
            Config::default(),
            None,
            Some(conn_env("", remote, b"", true)),
        ),
        (
            "identity mismatch",
            Config::default(),
            None,
            Some(conn_env("127.0.0.1:9", remote, b"", true)),
        ),
        (
            "wrong TLS hash",
            Config::default().with_tls(tls(1)),
            Some([3; 32]),
            Some(conn_env(remote, remote, &[4; 32], true)),
        ),
        (
            "unsigned",
            Config::default(),
            None,
            Some(conn_env(remote, remote, b"", false)),
        ),
        (
            "not protobuf",
            Config::default(),
            None,
            Some(Bytes::from_static(b"\xff\xff")),
        ),
        ("timeout", Config::default(), None, None),
    ];
    for (name, cfg, cert, first) in cases {
        out.push(format!("## {name}"));
        let mut c = Comm::new(cfg, TestOnlyHmacSecurity::new("127.0.0.1:7050"), now).unwrap();
        let s = c.accept_stream(now, remote, cert).unwrap();
        if let Some(b) = first {
            c.handle_envelope(now, s, b).unwrap();
        } else if let Some(t) = c.poll_timeout() {
            c.handle_timeout(t);
        }
        let (actions, events) = drain(&mut c);
        out.extend(actions.iter().map(line));
        out.extend(events.iter().map(fmt_event));
    }
    insta::assert_snapshot!(out.join("\n"));
}
