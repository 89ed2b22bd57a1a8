//! One core driven directly through its API, with a fake remote writing crafted Envelopes
//! into it: what the tests of hostile input and of pausing share.

// Test binaries that include `common` without these tests use none of it.
#![allow(dead_code)]

use bytes::Bytes;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::testing::conn_establish;
use fabric_gossip_core::*;

pub const ME: &str = "127.0.0.1:7050";
pub const REMOTE: &str = "127.0.0.1:7051";

pub fn now() -> Instant {
    Instant::from_unix_secs(1_700_000_000)
}

pub fn core(config: Config) -> Comm<TestOnlyHmacSecurity> {
    Comm::new(config, TestOnlyHmacSecurity::new(ME), now()).unwrap()
}

/// REMOTE's ConnEstablish, signed.
pub fn hello() -> Bytes {
    conn_establish(REMOTE.as_bytes(), REMOTE.as_bytes(), b"", false, true)
}

/// The dial the core asks for in `acts`, if any.
pub fn dial_of(acts: &[Action]) -> Option<(DialId, String)> {
    acts.iter().find_map(|a| match a {
        Action::Dial { dial, endpoint } => Some((*dial, endpoint.clone())),
        _ => None,
    })
}

pub fn data(seq: u64) -> GossipMessage {
    data_message(seq, Bytes::from_static(b"block"))
}

pub fn data_env(seq: u64) -> Bytes {
    SignedMessage::noop(data(seq)).envelope_bytes().clone()
}
