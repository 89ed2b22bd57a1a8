//! Raw streams: a test-controlled client that speaks bytes, not protocol, so that a test
//! can play a peer that misbehaves on the wire.

use crate::config::{NodeId, RawId};
use crate::network::LinkId;
use crate::network::{Item, Link, Owner};
use crate::sim::Sim;
use crate::trace::{Digest8, trace};
use bytes::Bytes;
use fabric_gossip_core::{CertHash, StreamEnd};

pub(crate) struct RawPeer {
    /// `None` for a stream refused before it existed (no such node).
    pub(crate) link: Option<LinkId>,
    pub(crate) addr: String,
    pub(crate) received: Vec<Bytes>,
    pub(crate) received_total: u64,
    pub(crate) ended: Option<StreamEnd>,
}

/// Envelopes a raw stream keeps of what it received; the rest are counted.
pub const RAW_RECEIVE_LIMIT: usize = 4096;

impl Sim {
    // -------------------------------------------------------------- raw streams

    /// Opens a raw `GossipStream` to node `n` from a test-controlled client at a made-up
    /// address, presenting `cert` as its TLS client certificate hash. Nothing is sent
    /// until [`Sim::raw_send`]: this is how a test plays a peer that misbehaves. A stream
    /// to a node that does not exist is refused at once. Each call keeps a small record
    /// for inspection, so tests open raw streams by the handful, not by the million.
    pub fn raw_connect(&mut self, n: NodeId, cert: Option<CertHash>) -> RawId {
        let id = self.raws.len();
        if n >= self.nodes.len() {
            self.raws.push(RawPeer {
                link: None,
                addr: String::new(),
                received: Vec::new(),
                received_total: 0,
                ended: Some(StreamEnd::Error("connection refused: no such node".into())),
            });
            return id;
        }
        let addr = format!("127.0.0.1:{}", 40000 + id);
        let inc = self.incarnation(n);
        let link = self.links.insert(Link::new(
            (Owner::Raw(id), None),
            Owner::Core { node: n, inc },
        ));
        self.raws.push(RawPeer {
            link: Some(link),
            addr: addr.clone(),
            received: Vec::new(),
            received_total: 0,
            ended: None,
        });
        trace!(self, "raw{id} * connect n{n} from {addr}");
        self.counters.streams_opened += 1;
        self.transmit(link, 0, Item::Open(Box::new((cert, addr))));
        id
    }

    /// Writes raw bytes as one envelope on raw stream `raw` (ignored once it ended).
    pub fn raw_send(&mut self, raw: RawId, bytes: Bytes) {
        let Some(r) = self.raws.get(raw) else { return };
        let link = r.link;
        trace!(self, "raw{raw} > {}B {}", bytes.len(), Digest8(&bytes));
        if let Some(link) = link
            && self.links.get(link).is_some_and(|l| l.ends[0].open)
        {
            self.transmit(link, 0, Item::Env(bytes));
        }
    }

    /// Ends raw stream `raw` cleanly from the client side.
    pub fn raw_close(&mut self, raw: RawId) {
        let Some(r) = self.raws.get(raw) else { return };
        let link = r.link;
        trace!(self, "raw{raw} > close");
        if let Some(link) = link {
            self.close_end(link, 0, StreamEnd::Finished);
        }
        if let Some(r) = self.raws.get_mut(raw)
            && r.ended.is_none()
        {
            r.ended = Some(StreamEnd::Finished);
        }
    }

    /// Envelopes raw stream `raw` received (the first [`RAW_RECEIVE_LIMIT`]).
    pub fn raw_received(&self, raw: RawId) -> &[Bytes] {
        self.raws.get(raw).map_or(&[], |r| &r.received)
    }

    /// How many envelopes raw stream `raw` received, including those past the
    /// [`RAW_RECEIVE_LIMIT`] that [`Sim::raw_received`] no longer keeps.
    pub fn raw_received_total(&self, raw: RawId) -> u64 {
        self.raws.get(raw).map_or(0, |r| r.received_total)
    }

    /// How raw stream `raw` ended, once it has.
    pub fn raw_ended(&self, raw: RawId) -> Option<&StreamEnd> {
        self.raws.get(raw).and_then(|r| r.ended.as_ref())
    }

    /// The address the node sees raw stream `raw` coming from.
    pub fn raw_addr(&self, raw: RawId) -> &str {
        self.raws.get(raw).map_or("", |r| r.addr.as_str())
    }
}
