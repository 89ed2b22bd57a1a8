//! The lines the node prints for what happens: the core's events ([`event_json`], with the
//! connections each peer has open) and received messages ([`received_line`], written straight
//! into the output buffer, with the sender's name kept for a run of its messages).

use super::settings::PayloadForm;
use crate::opts::{self, PkiForm};
use crate::out::{LineBuf, push_json_str};
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::proto::gossip::gossip_message::{Content, Tag};
use fabric_gossip_core::{Event, PkiId, StreamId};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The connections each peer has open, as the `connected` and `disconnected` events tell
/// them. A peer has two for a moment when both sides dial at once (one each way) and one of
/// them then closes, the stream its remote opened being the one a Fabric peer keeps: the
/// `disconnected` line says how many are left, so that the end of one is not read as the
/// peer's going. A peer's entry goes with its last connection.
#[derive(Debug, Default)]
pub(super) struct OpenConnections(HashMap<PkiId, Vec<StreamId>>);

impl OpenConnections {
    /// Notes a connection opened; for a closed one, how many the peer has left.
    fn note(&mut self, ev: &Event) -> Option<usize> {
        match ev {
            Event::Connected { conn, info, .. } => {
                self.0.entry(info.id.clone()).or_default().push(*conn);
                None
            }
            Event::Disconnected { conn, pki_id, .. } => {
                let left = self.0.get_mut(pki_id).map_or(0, |open| {
                    open.retain(|c| c != conn);
                    open.len()
                });
                if left == 0 {
                    self.0.remove(pki_id);
                }
                Some(left)
            }
            _ => None,
        }
    }
}

/// The JSON line for a core event, `None` for events that are not printed (operation
/// results are printed by the command that started them).
pub(super) fn event_json(
    ev: &Event,
    form: PkiForm,
    tls: bool,
    open: &mut OpenConnections,
) -> Option<Value> {
    let left = open.note(ev);
    Some(match ev {
        Event::Connected {
            conn,
            info,
            inbound,
        } => {
            let mut v = json!({
                "event": "connected",
                "peer": form.show(&info.id),
                "conn": conn.to_string(),
                "inbound": inbound,
                "endpoint": info.endpoint,
            });
            if form == PkiForm::Hex
                && let Some((msp, _)) = opts::msp_of(&info.identity)
            {
                v["msp_id"] = json!(msp);
            }
            v
        }
        Event::Probed { info, .. } => json!({
            "event": "probed",
            "peer": form.show(&info.id),
            "endpoint": info.endpoint,
        }),
        Event::Disconnected {
            conn,
            pki_id,
            reason,
        } => json!({
            "event": "disconnected",
            "peer": form.show(pki_id),
            "conn": conn.to_string(),
            "reason": reason.to_string(),
            "connections_left": left.unwrap_or_default(),
        }),
        Event::HandshakeFailed {
            remote,
            inbound,
            error,
            ..
        } => {
            // A peer of an MSP not trusted, either way: a forgotten --trust (a live check
            // against Fabric: a peer dialling us was refused five times, with no word of
            // what to do).
            let msp_hint = crate::probe::untrusted_msp(error)
                .and_then(|_| crate::probe::handshake_hint(error));
            let error = error.to_string();
            let mut v = json!({
                "event": "handshake_failed",
                "remote": remote,
                "error": error,
                "inbound": inbound,
            });
            // Dialling with the wrong TLS setting is the usual mistake; say so.
            let hint = match msp_hint {
                Some(h) => h,
                None if *inbound => String::new(),
                None => crate::probe::dial_hint(&error, tls).to_owned(),
            };
            if !hint.is_empty() {
                v["hint"] = json!(hint.trim().trim_start_matches("hint: "));
            }
            v
        }
        Event::PresumedDead(p) => {
            // A peer dialled without a PKI-ID is named by its endpoint.
            let peer = if p.pki_id.is_empty() {
                p.endpoint.clone()
            } else {
                form.show(&p.pki_id)
            };
            json!({"event": "presumed_dead", "peer": peer, "endpoint": p.endpoint,
                   "reason": p.cause.to_string()})
        }
        // `peer` is the old PKI-ID, as Fabric's notification names it.
        Event::IdentitySwitch(p) => json!({"event": "identity_switch", "peer": form.show(&p.old),
                                           "new_peer": form.show(&p.new), "endpoint": p.endpoint}),
        Event::IdentityPurged { pki_id, reason } => json!({
            "event": "identity_purged",
            "peer": form.show(pki_id),
            "reason": reason.to_string(),
        }),
        _ => return None,
    })
}

/// The `received` line for `m` from `from` (already a JSON string), written straight into
/// the output buffer rather than through a `serde_json::Value`: a sink prints hundreds of
/// thousands of these a second, and the map and its strings cost more than the rest of the
/// path. Keys are in the order `Value`'s `to_string` gives them (sorted), so the bytes are
/// those of earlier versions. Run on a [`Measure`] first: a large message prints up to
/// eight times its size, and a line the output queue cannot take is not formatted.
///
/// [`Measure`]: crate::out::Measure
pub(super) fn received_line(
    buf: &mut impl LineBuf,
    m: &GossipMessage,
    from: &[u8],
    payload: PayloadForm,
) {
    let data = match &m.content {
        Some(Content::DataMsg(d)) => Some(
            d.payload
                .as_ref()
                .map_or((0, &[][..]), |p| (p.seq_num, &p.data[..])),
        ),
        _ => None,
    };
    let text = match (payload, data) {
        (PayloadForm::Both | PayloadForm::Text, Some((_, d))) => std::str::from_utf8(d).ok(),
        _ => None,
    };
    let hex = match payload {
        PayloadForm::Both | PayloadForm::Hex => true,
        PayloadForm::Text => text.is_none(),
        PayloadForm::None => false,
    };
    buf.push_bytes(b"{");
    if !m.channel.is_empty() {
        buf.push_bytes(b"\"channel\":");
        buf.push_json_str(&String::from_utf8_lossy(&m.channel));
        buf.push_bytes(b",");
    }
    buf.push_bytes(b"\"content\":");
    buf.push_json_str(m.content_name());
    if let (Some((_, d)), true) = (data, hex) {
        buf.push_bytes(b",\"data_hex\":\"");
        buf.push_hex(d);
        buf.push_bytes(b"\"");
    }
    buf.push_bytes(b",\"event\":\"received\",\"from\":");
    buf.push_bytes(from);
    if let (Some((_, d)), PayloadForm::None) = (data, payload) {
        buf.push_bytes(b",\"len\":");
        buf.push_u64(d.len() as u64);
    }
    buf.push_bytes(b",\"nonce\":");
    buf.push_u64(m.nonce);
    if let Some((seq, _)) = data {
        buf.push_bytes(b",\"seq\":");
        buf.push_u64(seq);
    }
    if m.tag != Tag::Empty as i32 {
        buf.push_bytes(b",\"tag\":");
        match Tag::try_from(m.tag) {
            Ok(t) => buf.push_json_str(t.as_str_name()),
            Err(_) => buf.push_json_str(itoa::Buffer::new().format(m.tag)),
        }
    }
    if let Some(t) = text {
        buf.push_bytes(b",\"text\":");
        buf.push_json_str(t);
    }
    buf.push_bytes(b"}");
}

/// The last sender's PKI-ID as a JSON string: messages come in runs from one sender, and
/// showing a PKI-ID allocates.
#[derive(Default)]
pub(super) struct SenderName {
    last: Option<(PkiId, Vec<u8>)>,
}

impl SenderName {
    pub(super) fn of(&mut self, id: &PkiId, form: PkiForm) -> &[u8] {
        if self.last.as_ref().is_none_or(|(last, _)| last != id) {
            let mut shown = Vec::new();
            push_json_str(&mut shown, &form.show(id));
            self.last = Some((id.clone(), shown));
        }
        self.last.as_ref().map_or(&[][..], |(_, shown)| shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::data_message;
    use crate::out::Measure;
    use fabric_gossip_core::HandshakeError;
    use fabric_gossip_core::proto::gossip::Empty;
    use std::sync::Arc;

    /// The `received` line of `m` from `from`, as text.
    fn line(m: &GossipMessage, from: &str, payload: PayloadForm) -> String {
        let (mut buf, mut shown) = (Vec::new(), Vec::new());
        push_json_str(&mut shown, from);
        received_line(&mut buf, m, &shown, payload);
        let mut len = Measure::default();
        received_line(&mut len, m, &shown, payload);
        assert_eq!(len.0, buf.len(), "measured as written");
        String::from_utf8(buf).expect("UTF-8")
    }

    fn msg(data: &[u8], channel: &[u8], tag: Tag) -> GossipMessage {
        let mut m = data_message(7, data, 9);
        m.channel = channel.to_vec().into();
        m.tag = tag as i32;
        m
    }

    /// Dials that cross leave a peer two connections for a moment; the end of one is
    /// printed with the one left, and the peer's entry goes with its last.
    #[test]
    fn a_closed_connection_says_how_many_the_peer_has_left() {
        use fabric_gossip_core::{CloseReason, ConnectionInfo};
        let info = Arc::new(ConnectionInfo {
            id: PkiId::from("peer0"),
            identity: Default::default(),
            endpoint: "127.0.0.1:7051".into(),
            signed_data: Default::default(),
            signature: Default::default(),
        });
        let (ours, theirs) = (StreamId::from_parts(0, 0), StreamId::from_parts(1, 0));
        let mut open = OpenConnections::default();
        let connected = |conn, inbound| Event::Connected {
            conn,
            info: info.clone(),
            inbound,
        };
        let gone = |conn| Event::Disconnected {
            conn,
            pki_id: info.id.clone(),
            reason: CloseReason::Replaced,
        };
        let show = |ev: &Event, open: &mut OpenConnections| {
            event_json(ev, PkiForm::Text, false, open).expect("printed")
        };
        let up = show(&connected(ours, false), &mut open);
        assert_eq!(up["conn"], ours.to_string(), "{up}");
        show(&connected(theirs, true), &mut open);
        let first = show(&gone(ours), &mut open);
        assert_eq!(first["conn"], ours.to_string(), "{first}");
        assert_eq!(first["connections_left"], 1, "{first}");
        let last = show(&gone(theirs), &mut open);
        assert_eq!(last["connections_left"], 0, "{last}");
        assert!(open.0.is_empty(), "{open:?}");
        // A close whose opening was not seen (the event tap was full) leaves nothing behind.
        let stray = show(&gone(ours), &mut open);
        assert_eq!(stray["connections_left"], 0, "{stray}");
        assert!(open.0.is_empty(), "{open:?}");
        // Three: each close takes its own away, and the peer stays until the last.
        let three: Vec<StreamId> = (0..3).map(|i| StreamId::from_parts(i, 1)).collect();
        for &c in &three {
            show(&connected(c, true), &mut open);
        }
        for (&c, left) in three.iter().zip([2, 1, 0]) {
            let v = show(&gone(c), &mut open);
            assert_eq!(v["connections_left"], left, "{v}");
        }
    }

    /// Comm letting go of an identity (Fabric's identity mapper purging it for disuse or at
    /// its expiry) is a line an operator can grep, with the reason as a label.
    #[test]
    fn a_purged_identity_is_a_line_with_its_reason() {
        use fabric_gossip_core::CloseReason;
        let mut open = OpenConnections::default();
        for (reason, label) in [
            (CloseReason::IdentityUnused, "identity_unused"),
            (CloseReason::IdentityExpired, "identity_expired"),
        ] {
            let ev = Event::IdentityPurged {
                pki_id: PkiId::from("peer0"),
                reason,
            };
            let v = event_json(&ev, PkiForm::Text, false, &mut open).expect("printed");
            assert_eq!(
                v,
                json!({"event": "identity_purged", "peer": "peer0", "reason": label})
            );
        }
    }

    /// The default form is byte for byte what the `serde_json::Value` of earlier versions
    /// printed (keys sorted, strings escaped alike), whatever the bytes and the tag.
    #[test]
    fn the_default_line_is_the_earlier_json() {
        let ascii: Vec<u8> = (0..0x80).collect();
        let unicode = "é\u{7f}\u{2028}😀 \\/".as_bytes();
        for (data, channel, tag) in [
            (&b"he said \"hi\"\n"[..], &b"ch"[..], Tag::ChanAndOrg as i32),
            (&[0xff, 0x00][..], &b""[..], Tag::Empty as i32),
            (&ascii[..], &b"c\x01h\xff"[..], 99),
            (unicode, &b""[..], -3),
            (&[][..], &b"x"[..], Tag::OrgOnly as i32),
        ] {
            let mut m = msg(data, channel, Tag::Empty);
            m.tag = tag;
            let mut v = json!({
                "event": "received", "from": "p\"1\u{1}", "nonce": 9, "content": "data_msg",
                "data_hex": hex::encode(data), "seq": 7,
            });
            if !channel.is_empty() {
                v["channel"] = json!(String::from_utf8_lossy(channel));
            }
            if tag != Tag::Empty as i32 {
                v["tag"] =
                    Tag::try_from(tag).map_or(json!(tag.to_string()), |t| json!(t.as_str_name()));
            }
            if let Ok(t) = std::str::from_utf8(data) {
                v["text"] = json!(t);
            }
            assert_eq!(line(&m, "p\"1\u{1}", PayloadForm::Both), v.to_string());
        }
    }

    /// The sender's name is kept for a run of its messages and made anew for the next sender.
    #[test]
    fn a_sender_s_name_is_shown_anew_when_the_sender_changes() {
        let mut names = SenderName::default();
        let (a, b) = (PkiId::from("a"), PkiId::from("b"));
        assert_eq!(names.of(&a, PkiForm::Text), b"\"a\"");
        assert_eq!(names.of(&b, PkiForm::Text), b"\"b\"");
        assert_eq!(names.of(&a, PkiForm::Hex), b"\"61\"");
    }

    /// Each event of the core that is printed is a line of its own kind; an outbound
    /// handshake's failure carries a hint when its error suggests one, an MSP peer's
    /// connection its MSP ID, a dead peer dialled without a PKI-ID its endpoint as its name.
    #[test]
    fn each_printed_event_is_a_line_of_its_kind() {
        use fabric_gossip_core::proto::msp::SerializedIdentity;
        use fabric_gossip_core::proto::prost::Message;
        use fabric_gossip_core::{ConnectionInfo, DeadCause, DeadPeer, SubscriptionId};
        let identity = SerializedIdentity {
            mspid: "Org1MSP".into(),
            id_bytes: b"-----BEGIN CERTIFICATE-----\n".to_vec().into(),
        };
        let info = Arc::new(ConnectionInfo {
            id: PkiId::from("p0"),
            identity: identity.encode_to_vec().into(),
            endpoint: "127.0.0.1:7051".into(),
            signed_data: Default::default(),
            signature: Default::default(),
        });
        let show = |ev: Event, form: PkiForm| {
            event_json(&ev, form, false, &mut OpenConnections::default())
        };
        let conn = StreamId::from_parts(0, 0);
        let connected = || Event::Connected {
            conn,
            info: info.clone(),
            inbound: true,
        };
        let hex = show(connected(), PkiForm::Hex).expect("printed");
        assert_eq!(
            (&hex["peer"], &hex["msp_id"]),
            (&json!("7030"), &json!("Org1MSP"))
        );
        let text = show(connected(), PkiForm::Text).expect("printed");
        assert!(text.get("msp_id").is_none(), "{text}");
        let probed = Event::Probed {
            stream: conn,
            info: info.clone(),
        };
        assert_eq!(
            show(probed, PkiForm::Text),
            Some(json!({"event": "probed", "peer": "p0", "endpoint": "127.0.0.1:7051"}))
        );
        let failed = |inbound, error| Event::HandshakeFailed {
            stream: conn,
            remote: "127.0.0.1:7051".into(),
            inbound,
            error,
        };
        let broken = || HandshakeError::StreamEnded("broken pipe".into());
        let out = show(failed(false, broken()), PkiForm::Text).expect("printed");
        assert_eq!(
            out,
            json!({"event": "handshake_failed", "remote": "127.0.0.1:7051", "inbound": false,
                   "error": "stream ended during handshake: broken pipe",
                   "hint": "the peer seems to serve TLS; pass --tls-cert, --tls-key and \
                            --tls-ca (its organization's tlscacerts/ file)"})
        );
        for (inbound, error) in [(true, broken()), (false, HandshakeError::WrongType)] {
            let v = show(failed(inbound, error), PkiForm::Text).expect("printed");
            assert!(v.get("hint").is_none(), "{v}");
        }
        // A peer of an MSP not trusted, dialling us or dialled: what to pass.
        for inbound in [true, false] {
            let unknown = HandshakeError::InvalidIdentity(
                fabric_gossip_core::SecurityError::UnknownMsp("Org2MSP".into()),
            );
            let v = show(failed(inbound, unknown), PkiForm::Text).expect("printed");
            let hint = v["hint"].as_str().unwrap_or_default();
            assert!(
                hint.starts_with("the peer is a member of an MSP this node does not trust")
                    && hint.contains("--trust Org2MSP=DIR"),
                "{v}"
            );
        }
        let dead = |pki_id: &str| {
            Event::PresumedDead(DeadPeer {
                pki_id: PkiId::from(pki_id),
                endpoint: "peer1:7051".into(),
                cause: DeadCause::Write("reset".into()),
            })
        };
        let want = |peer: &str| {
            json!({"event": "presumed_dead", "peer": peer, "endpoint": "peer1:7051",
                   "reason": "write failed: reset"})
        };
        assert_eq!(show(dead("p1"), PkiForm::Text), Some(want("p1")));
        assert_eq!(show(dead(""), PkiForm::Text), Some(want("peer1:7051")));
        assert_eq!(
            show(
                Event::IdentitySwitch(fabric_gossip_core::SwitchedPeer {
                    old: PkiId::from("p1"),
                    new: PkiId::from("p2"),
                    endpoint: "peer1:7051".into(),
                }),
                PkiForm::Hex
            ),
            Some(
                json!({"event": "identity_switch", "peer": "7031", "new_peer": "7032",
                        "endpoint": "peer1:7051"})
            )
        );
        let unprinted = Event::DeliveryReady(SubscriptionId::from_parts(0, 0));
        assert_eq!(show(unprinted, PkiForm::Text), None);
    }

    #[test]
    fn text_falls_back_to_hex_and_none_gives_the_length() {
        let bin = msg(&[0xff, 0x01], b"", Tag::Empty);
        let v: Value = serde_json::from_str(&line(&bin, "p", PayloadForm::Text)).unwrap();
        assert_eq!(v["data_hex"], "ff01");
        assert!(v.get("text").is_none());
        let v: Value = serde_json::from_str(&line(&bin, "p", PayloadForm::None)).unwrap();
        assert_eq!(v["len"], 2);
        assert!(v.get("data_hex").is_none() && v.get("text").is_none());
        // Messages without data carry none of the three.
        let empty = GossipMessage {
            nonce: 1,
            tag: Tag::Empty as i32,
            content: Some(Content::Empty(Empty {})),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&line(&empty, "p", PayloadForm::None)).unwrap();
        assert_eq!(
            v,
            json!({"event": "received", "from": "p", "nonce": 1, "content": "empty"})
        );
    }
}
