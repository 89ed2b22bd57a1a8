//! A crate that builds on `fabric-gossip-core` the way a user's crate does. `downstream-check.sh`
//! copies it outside the workspace and compiles it with `--cfg fuzzing`, as `cargo fuzz`
//! compiles every crate of a fuzz build, so a core that only builds inside this repository's
//! own fuzz workspace is caught.
//!
//! It is also the pattern for fuzzing code built on the core: [`Established`] scripts a
//! handshake between two cores in memory, then [`Established::inject`] hands arbitrary bytes
//! to the established connection through `Comm::handle_envelope`, the same call a driver makes
//! for every Envelope it reads.

use arbitrary::{Arbitrary, Unstructured};
use fabric_gossip_core::proto::bytes::Bytes;
use fabric_gossip_core::proto::gossip::GossipMessage;
use fabric_gossip_core::{
    Action, CloseReason, Comm, Config, Event, Instant, RemotePeer, SignedMessage, StreamId,
    SubscriptionId, TestOnlyHmacSecurity,
};

/// True in this build only if `--cfg fuzzing` reached it: the check asserts it, so it cannot
/// pass by compiling the wrong thing.
pub const FUZZING_CFG: bool = cfg!(fuzzing);

const LOCAL: &str = "127.0.0.1:7051";
const REMOTE: &str = "127.0.0.1:7052";

/// Two cores with an authenticated connection between them: `remote` dialled `local`.
pub struct Established {
    pub now: Instant,
    pub local: Comm<TestOnlyHmacSecurity>,
    pub remote: Comm<TestOnlyHmacSecurity>,
    /// `local`'s end of the connection: where injected bytes arrive.
    pub stream: StreamId,
    /// A subscription of `local` to every message.
    pub sub: SubscriptionId,
}

impl Established {
    /// Runs the handshake with the network reduced to moving writes between the two cores.
    pub fn new() -> Self {
        let now = Instant::from_unix_secs(1_700_000_000);
        let mk = |ep: &str| Comm::new(Config::default(), TestOnlyHmacSecurity::new(ep), now);
        let (mut local, mut remote) = (mk(LOCAL).unwrap(), mk(REMOTE).unwrap());
        let sub = local.subscribe(Box::new(|_| true)).unwrap();
        // A message that needs a connection makes `remote` dial.
        let hello = SignedMessage::noop(GossipMessage::default());
        remote
            .send(now, &hello, &[RemotePeer::new(LOCAL, LOCAL)])
            .unwrap();
        let (mut local_end, mut remote_end) = (None, None);
        for _ in 0..10 {
            let mut to_local = Vec::new();
            while let Some(a) = remote.poll_action() {
                match a {
                    Action::Dial { dial, .. } => {
                        remote.handle_dial_result(now, dial, Ok(None)).unwrap()
                    }
                    Action::Ping { dial } => remote.handle_ping_result(now, dial, Ok(())).unwrap(),
                    Action::OpenStream { stream, .. } => {
                        remote_end = Some(stream);
                        local_end = Some(local.accept_stream(now, REMOTE, None).unwrap());
                    }
                    Action::Write { envelope, .. } => to_local.push(envelope),
                    _ => {}
                }
            }
            while let Some(a) = local.poll_action() {
                if let (Action::Write { envelope, .. }, Some(s)) = (a, remote_end) {
                    let _ = remote.handle_envelope(now, s, envelope);
                }
            }
            for envelope in to_local {
                let _ = local.handle_envelope(now, local_end.unwrap(), envelope);
            }
            let mut connected = false;
            while let Some(e) = local.poll_event() {
                connected |= matches!(e, Event::Connected { .. });
            }
            while remote.poll_event().is_some() {}
            if connected {
                let mut e = Established {
                    now,
                    local,
                    remote,
                    stream: local_end.unwrap(),
                    sub,
                };
                let _ = e.settle();
                return e;
            }
        }
        panic!("the scripted handshake did not complete");
    }

    /// Hands `bytes` to the connection as one Envelope read from the wire, then drains every
    /// output. Checks what must hold whatever the bytes: no panic; the Envelope is counted
    /// once (received, or oversized); and it either closes the connection as malformed or
    /// oversized, or is delivered, intercepted as an ack, or dropped as empty, and counted so.
    pub fn inject(&mut self, bytes: &[u8]) {
        let before = self.local.stats().clone();
        let live = self.local.is_live_stream(self.stream);
        let _ = self
            .local
            .handle_envelope(self.now, self.stream, Bytes::copy_from_slice(bytes));
        let (closed, delivered) = self.settle();
        let after = self.local.stats();
        if !live {
            return;
        }
        let rose = |f: fn(&fabric_gossip_core::Stats) -> u64| f(after) - f(&before);
        assert_eq!(
            rose(|s| s.received) + rose(|s| s.oversized),
            1,
            "counted once"
        );
        assert_eq!(closed.is_some(), !self.local.is_live_stream(self.stream));
        match closed {
            Some(reason) => {
                assert!(matches!(reason, CloseReason::Malformed(_)), "{reason:?}");
                assert_eq!(rose(|s| s.malformed) + rose(|s| s.oversized), 1);
            }
            None => {
                let outcome = delivered + rose(|s| s.empty_messages) + rose(|s| s.acks_unmatched);
                assert_eq!(outcome, 1, "delivered, an ack, or empty");
            }
        }
    }

    /// Drains `local`'s outputs (writes go nowhere: the remote is not listening any more);
    /// returns why the connection closed, if it did, and how many messages were delivered.
    fn settle(&mut self) -> (Option<CloseReason>, u64) {
        let (mut closed, mut delivered) = (None, 0);
        loop {
            let mut progress = false;
            while let Some(a) = self.local.poll_action() {
                if let Action::Write { stream, .. } = a {
                    let _ = self.local.handle_sent(self.now, stream, 1);
                }
                progress = true;
            }
            while let Some(e) = self.local.poll_event() {
                if let Event::Disconnected { reason, .. } = e {
                    closed = Some(reason);
                }
                progress = true;
            }
            while self.local.poll_delivery(self.sub).is_some() {
                delivered += 1;
                progress = true;
            }
            if !progress {
                return (closed, delivered);
            }
        }
    }
}

impl Default for Established {
    fn default() -> Self {
        Self::new()
    }
}

/// A fuzz target over raw bytes: `fuzz_target!(|data: &[u8]| downstream::raw(data))`.
pub fn raw(data: &[u8]) {
    Established::new().inject(data);
}

/// A structure-aware fuzz target: draws a well-formed `GossipMessage` (the proto crate's
/// `arbitrary` feature) and injects it, noop-signed, as a peer would send it.
pub fn message(data: &[u8]) {
    let Ok(msg) = GossipMessage::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut e = Established::new();
    let env = SignedMessage::noop(msg.clone());
    e.inject(env.envelope_bytes());
    assert!(
        e.local.is_live_stream(e.stream),
        "a well-formed message never closes"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_compiled_under_cfg_fuzzing() {
        assert!(
            FUZZING_CFG,
            "run through fuzz/downstream-check.sh, which sets --cfg fuzzing"
        );
    }

    #[test]
    fn garbage_closes_and_messages_arrive() {
        let mut e = Established::new();
        let msg = fabric_gossip_core::proto::gossip::GossipMessage {
            channel: "c".into(),
            content: Some(
                fabric_gossip_core::proto::gossip::gossip_message::Content::Empty(
                    Default::default(),
                ),
            ),
            ..Default::default()
        };
        let env = SignedMessage::noop(msg);
        e.local
            .handle_envelope(e.now, e.stream, env.envelope_bytes().clone())
            .unwrap();
        let got = e.local.poll_delivery(e.sub).expect("delivered");
        assert_eq!(got.message.channel, "c");
        e.inject(&[0xff; 7]);
        assert!(!e.local.is_live_stream(e.stream));
        assert_eq!(e.local.stats().malformed, 1);
    }

    #[test]
    fn a_few_hundred_inputs() {
        for n in 0..300u32 {
            let data: Vec<u8> = (0..n)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect();
            raw(&data);
            message(&data);
        }
    }
}
