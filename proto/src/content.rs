//! Which content a [`GossipMessage`] carries, without its data.

use core::fmt;

use crate::gossip::gossip_message::{self, Content};
use crate::gossip::{DataMessage, GossipMessage, Payload};
use bytes::Bytes;

/// The kind of content of a [`GossipMessage`], as a small `Copy` value.
///
/// Counters, logs and dispatch want to know what a message is without borrowing or matching on
/// its payload; [`ContentKind::index`] gives a dense index for per-kind counter arrays and
/// [`ContentKind::as_str`] the name Fabric uses for the field, so logs read like Fabric's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentKind {
    /// `alive_msg` (field 5)
    AliveMsg,
    /// `mem_req` (field 6)
    MemReq,
    /// `mem_res` (field 7)
    MemRes,
    /// `data_msg` (field 8)
    DataMsg,
    /// `hello` (field 9)
    Hello,
    /// `data_dig` (field 10)
    DataDig,
    /// `data_req` (field 11)
    DataReq,
    /// `data_update` (field 12)
    DataUpdate,
    /// `empty` (field 13)
    Empty,
    /// `conn` (field 14)
    Conn,
    /// `state_info` (field 15)
    StateInfo,
    /// `state_snapshot` (field 16)
    StateSnapshot,
    /// `state_info_pull_req` (field 17)
    StateInfoPullReq,
    /// `state_request` (field 18)
    StateRequest,
    /// `state_response` (field 19)
    StateResponse,
    /// `leadership_msg` (field 20)
    LeadershipMsg,
    /// `peer_identity` (field 21)
    PeerIdentity,
    /// `ack` (field 22)
    Ack,
    /// `privateReq` (field 23)
    PrivateReq,
    /// `privateRes` (field 24)
    PrivateRes,
    /// `private_data` (field 25)
    PrivateData,
}

impl ContentKind {
    /// Number of kinds; the length of a per-kind counter array.
    pub const COUNT: usize = 21;

    /// Every kind in field-number order, so that `ALL[k.index()] == k`; lets reports iterate
    /// over counter arrays with their labels.
    pub const ALL: [ContentKind; Self::COUNT] = [
        Self::AliveMsg,
        Self::MemReq,
        Self::MemRes,
        Self::DataMsg,
        Self::Hello,
        Self::DataDig,
        Self::DataReq,
        Self::DataUpdate,
        Self::Empty,
        Self::Conn,
        Self::StateInfo,
        Self::StateSnapshot,
        Self::StateInfoPullReq,
        Self::StateRequest,
        Self::StateResponse,
        Self::LeadershipMsg,
        Self::PeerIdentity,
        Self::Ack,
        Self::PrivateReq,
        Self::PrivateRes,
        Self::PrivateData,
    ];

    /// Dense index in `0..COUNT`, so per-kind counters can be a plain array.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Fabric's name for the content field (`"alive_msg"`, `"privateReq"`, ...), so that logs
    /// and metrics use the names Fabric operators know.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AliveMsg => "alive_msg",
            Self::MemReq => "mem_req",
            Self::MemRes => "mem_res",
            Self::DataMsg => "data_msg",
            Self::Hello => "hello",
            Self::DataDig => "data_dig",
            Self::DataReq => "data_req",
            Self::DataUpdate => "data_update",
            Self::Empty => "empty",
            Self::Conn => "conn",
            Self::StateInfo => "state_info",
            Self::StateSnapshot => "state_snapshot",
            Self::StateInfoPullReq => "state_info_pull_req",
            Self::StateRequest => "state_request",
            Self::StateResponse => "state_response",
            Self::LeadershipMsg => "leadership_msg",
            Self::PeerIdentity => "peer_identity",
            Self::Ack => "ack",
            Self::PrivateReq => "privateReq",
            Self::PrivateRes => "privateRes",
            Self::PrivateData => "private_data",
        }
    }
}

impl From<&Content> for ContentKind {
    fn from(content: &Content) -> Self {
        match content {
            Content::AliveMsg(_) => Self::AliveMsg,
            Content::MemReq(_) => Self::MemReq,
            Content::MemRes(_) => Self::MemRes,
            Content::DataMsg(_) => Self::DataMsg,
            Content::Hello(_) => Self::Hello,
            Content::DataDig(_) => Self::DataDig,
            Content::DataReq(_) => Self::DataReq,
            Content::DataUpdate(_) => Self::DataUpdate,
            Content::Empty(_) => Self::Empty,
            Content::Conn(_) => Self::Conn,
            Content::StateInfo(_) => Self::StateInfo,
            Content::StateSnapshot(_) => Self::StateSnapshot,
            Content::StateInfoPullReq(_) => Self::StateInfoPullReq,
            Content::StateRequest(_) => Self::StateRequest,
            Content::StateResponse(_) => Self::StateResponse,
            Content::LeadershipMsg(_) => Self::LeadershipMsg,
            Content::PeerIdentity(_) => Self::PeerIdentity,
            Content::Ack(_) => Self::Ack,
            Content::PrivateReq(_) => Self::PrivateReq,
            Content::PrivateRes(_) => Self::PrivateRes,
            Content::PrivateData(_) => Self::PrivateData,
        }
    }
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GossipMessage {
    /// A `DataMessage` carrying `data` as block number `seq_num`: nonce 0, no channel, tag
    /// `EMPTY`, no private data. The comm layer never looks inside a data message, so this
    /// is what tests, benchmarks and demos of it send; a peer disseminating real blocks
    /// also names the channel (tag `CHAN_AND_ORG`).
    #[must_use]
    pub fn data(seq_num: u64, data: impl Into<Bytes>) -> GossipMessage {
        GossipMessage {
            nonce: 0,
            channel: Bytes::new(),
            tag: gossip_message::Tag::Empty as i32,
            content: Some(Content::DataMsg(DataMessage {
                payload: Some(Payload {
                    seq_num,
                    data: data.into(),
                    private_data: Vec::new(),
                }),
            })),
        }
    }

    /// The kind of content, or `None` for a message without one (which Fabric treats as
    /// malformed); cheap enough to call on every received message for counting and dispatch.
    #[must_use]
    pub fn content_kind(&self) -> Option<ContentKind> {
        self.content.as_ref().map(ContentKind::from)
    }

    /// Fabric's name for the content field, `"none"` when there is no content; for log lines.
    #[must_use]
    pub fn content_name(&self) -> &'static str {
        self.content_kind().map_or("none", ContentKind::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_index() {
        for (i, kind) in ContentKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind}");
        }
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = ContentKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ContentKind::COUNT);
    }

    #[test]
    fn data_message_carries_its_number_and_bytes() {
        let msg = GossipMessage::data(7, &b"block"[..]);
        assert_eq!(msg.content_kind(), Some(ContentKind::DataMsg));
        let Some(Content::DataMsg(d)) = &msg.content else {
            unreachable!("checked above")
        };
        let payload = d.payload.as_ref().expect("a payload");
        assert_eq!((payload.seq_num, &payload.data[..]), (7, &b"block"[..]));
        assert_eq!(msg.tag, gossip_message::Tag::Empty as i32);
    }

    /// Logs show Fabric's field name, the same as `as_str` and `content_name`.
    #[test]
    fn display_is_fabrics_field_name() {
        assert_eq!(ContentKind::PrivateReq.to_string(), "privateReq");
        let msg = GossipMessage::data(1, Bytes::new());
        assert_eq!(msg.content_name(), "data_msg");
    }

    #[test]
    fn message_without_content_is_none() {
        let msg = GossipMessage::default();
        assert_eq!(msg.content_kind(), None);
        assert_eq!(msg.content_name(), "none");
    }
}
