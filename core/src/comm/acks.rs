//! Acks: `SendWithAck` (`gossip/comm/comm_impl.go`, `commImpl.SendWithAck`;
//! `gossip/comm/ack.go`, `ackSendOperation.send`) and the interception of received acks
//! (`gossip/comm/ack.go`, `interceptAcks`).
//!
//! A SendWithAck gives its message a fresh nonce, sends it to every peer and waits for
//! `Acknowledgement`s carrying that nonce from those peers. Every piece of that lives
//! here: the nonce table, the aggregation of results ([`AckWait`]), interception, and the
//! ends (enough acks, every peer answered, time-out, stop, no connection).

use super::output::{Event, SendResult};
use super::send::Mode;
use super::timers::TimerKey;
use super::{Comm, Map, RemotePeer, new_map};
use crate::error::{AckError, Error, HandshakeError};
use crate::ids::{OpId, PkiId};
use crate::security::Security;
use crate::time::Instant;
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_proto::gossip::{GossipMessage, gossip_message};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

/// Acks awaited, by (nonce, peer): what interception looks up.
#[derive(Debug)]
pub(super) struct Acks {
    pending: Map<(u64, PkiId), OpId>,
}

impl Acks {
    pub(super) fn new(seed: u64) -> Self {
        Acks {
            pending: new_map(seed),
        }
    }

    /// A nonce no pending ack from any of `peers` uses.
    fn fresh_nonce(&self, rng: &mut ChaCha8Rng, peers: &[&RemotePeer]) -> u64 {
        loop {
            let n = rng.next_u64();
            if !peers
                .iter()
                .any(|p| self.pending.contains_key(&(n, p.pki_id.clone())))
            {
                return n;
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }
}

/// One SendWithAck in progress: Fabric's `ackSendOperation` with its per-peer results.
#[derive(Debug)]
pub(super) struct AckWait {
    nonce: u64,
    min_ack: usize,
    pub(super) deadline: Instant,
    /// Each distinct peer, in the order given, with its result once known.
    peers: Vec<(PkiId, Option<Result<(), AckError>>)>,
}

impl AckWait {
    /// Records a peer's first result; `false` if it had one (or is not a target).
    fn record(&mut self, peer: &PkiId, result: Result<(), AckError>) -> bool {
        match self
            .peers
            .iter_mut()
            .find(|(p, r)| p == peer && r.is_none())
        {
            Some(slot) => {
                slot.1 = Some(result);
                true
            }
            None => false,
        }
    }

    /// Done once `min_ack` peers (at least one) acked, or every peer has a result.
    fn done(&self) -> bool {
        let successes = self
            .peers
            .iter()
            .filter(|(_, r)| matches!(r, Some(Ok(()))))
            .count();
        successes >= self.min_ack.max(1) || self.peers.iter().all(|(_, r)| r.is_some())
    }

    /// Every peer without a result gets `err`.
    fn expire(&mut self, err: &AckError) {
        for (_, r) in self.peers.iter_mut() {
            if r.is_none() {
                *r = Some(Err(err.clone()));
            }
        }
    }

    /// The results, and the peers that never answered (whose acks are no longer awaited).
    fn into_results(self) -> (Vec<SendResult>, Vec<PkiId>) {
        let mut results = Vec::with_capacity(self.peers.len());
        let mut unanswered = Vec::new();
        for (peer, r) in self.peers {
            match r {
                Some(result) => results.push(SendResult { peer, result }),
                None => unanswered.push(peer),
            }
        }
        (results, unanswered)
    }
}

impl<S: Security> Comm<S> {
    /// The body of [`Comm::send_with_ack`] and [`Comm::send_with_ack_signed`] once the
    /// operation is admitted: `envelope` makes the Envelope to send for a nonce.
    pub(super) fn start_send_with_ack(
        &mut self,
        now: Instant,
        envelope: impl FnOnce(u64) -> Bytes,
        has_content: bool,
        timeout: Duration,
        min_ack: usize,
        peers: &[RemotePeer],
    ) -> Result<OpId, Error> {
        if peers.is_empty() {
            return Err(Error::NoPeers);
        }
        if !has_content {
            return Err(Error::EmptyMessage);
        }
        let mut unique: Vec<&RemotePeer> = Vec::with_capacity(peers.len());
        for p in peers {
            if !unique.iter().any(|q| q.pki_id == p.pki_id) {
                unique.push(p);
            }
        }
        let nonce = self.acks.fresh_nonce(&mut self.rng, &unique);
        let mut envelope = envelope(nonce);
        self.check_size(envelope.len())?;
        let deadline = now + timeout;
        let op = self.ops.insert(super::ops::Op::SendWithAck(AckWait {
            nonce,
            min_ack,
            deadline,
            peers: unique.iter().map(|p| (p.pki_id.clone(), None)).collect(),
        }));
        self.arm(deadline, TimerKey::Op(op));
        for p in &unique {
            self.acks.pending.insert((nonce, p.pki_id.clone()), op);
        }
        // The last peer takes the Envelope itself, the others a shared copy: a `Bytes` that
        // is never cloned is never made shared (one allocation less per call).
        let n = unique.len();
        for (i, p) in unique.into_iter().enumerate() {
            let bytes = if i + 1 == n {
                core::mem::take(&mut envelope)
            } else {
                envelope.clone()
            };
            if let Err(e) = self.enqueue(p, bytes, Mode::Wait, Some(op)) {
                let err = match e {
                    Error::WouldBlock => AckError::WouldBlock,
                    Error::Stopped => AckError::Stopped,
                    other => AckError::NoConnection(other.to_string()),
                };
                self.ack_result(op, &p.pki_id, Err(err));
            }
        }
        Ok(op)
    }

    /// Takes a received Acknowledgement from `from` to the SendWithAck waiting for it.
    /// Returns whether the message was an ack (which no subscription sees).
    pub(super) fn intercept_ack(&mut self, message: &GossipMessage, from: &PkiId) -> bool {
        let Some(gossip_message::Content::Ack(ack)) = &message.content else {
            return false;
        };
        match self
            .acks
            .pending
            .get(&(message.nonce, from.clone()))
            .copied()
        {
            Some(op) => {
                let result = if ack.error.is_empty() {
                    Ok(())
                } else {
                    Err(AckError::Remote(ack.error.clone()))
                };
                self.ack_result(op, from, result);
            }
            None => {
                tracing::debug!(
                    target: "fabric_gossip_core::acks",
                    pki_id = %from,
                    nonce = message.nonce,
                    "ack matches no pending send_with_ack"
                );
                self.stats.acks_unmatched += 1;
            }
        }
        true
    }

    /// A connection attempt with SendWithAck messages in its queue failed.
    pub(super) fn acks_no_connection(
        &mut self,
        peer: &PkiId,
        ops: impl IntoIterator<Item = OpId>,
        err: &HandshakeError,
    ) {
        for op in ops {
            self.ack_result(op, peer, Err(AckError::NoConnection(err.to_string())));
        }
    }

    /// One peer's result for a SendWithAck; finishes it when that was enough.
    fn ack_result(&mut self, op: OpId, peer: &PkiId, result: Result<(), AckError>) {
        let Some(super::ops::Op::SendWithAck(wait)) = self.ops.get_mut(op) else {
            return;
        };
        if !wait.record(peer, result) {
            return;
        }
        let nonce = wait.nonce;
        let done = wait.done();
        self.acks.pending.remove(&(nonce, peer.clone()));
        if done {
            self.finish_send_with_ack(op);
        }
    }

    /// The deadline passed, or the node stops: every peer without a result gets `err`.
    pub(super) fn expire_send_with_ack(&mut self, op: OpId, err: AckError) {
        if let Some(super::ops::Op::SendWithAck(wait)) = self.ops.get_mut(op) {
            wait.expire(&err);
            self.finish_send_with_ack(op);
        }
    }

    fn finish_send_with_ack(&mut self, op: OpId) {
        let Some(super::ops::Op::SendWithAck(wait)) = self.ops.remove(op) else {
            return;
        };
        let nonce = wait.nonce;
        let (results, unanswered) = wait.into_results();
        for peer in unanswered {
            self.acks.pending.remove(&(nonce, peer));
        }
        self.out.event(Event::SendWithAckDone { op, results });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(min_ack: usize, peers: &[&str]) -> AckWait {
        AckWait {
            nonce: 7,
            min_ack,
            deadline: Instant::from_unix_secs(1),
            peers: peers.iter().map(|p| (PkiId::from(*p), None)).collect(),
        }
    }

    #[test]
    fn min_ack_successes_finish_early() {
        let mut w = wait(2, &["a", "b", "c"]);
        assert!(w.record(&PkiId::from("a"), Ok(())));
        assert!(!w.done());
        assert!(w.record(&PkiId::from("b"), Err(AckError::Remote("no".into()))));
        assert!(!w.done());
        assert!(w.record(&PkiId::from("c"), Ok(())));
        assert!(w.done());
    }

    #[test]
    fn every_peer_answering_finishes_even_without_successes() {
        let mut w = wait(5, &["a"]);
        assert!(w.record(&PkiId::from("a"), Err(AckError::Timeout)));
        assert!(w.done());
    }

    #[test]
    fn a_peer_counts_once_and_strangers_not_at_all() {
        let mut w = wait(1, &["a", "b"]);
        assert!(!w.record(&PkiId::from("z"), Ok(())));
        assert!(w.record(&PkiId::from("a"), Err(AckError::Timeout)));
        assert!(
            !w.record(&PkiId::from("a"), Ok(())),
            "the first result stands"
        );
        assert!(!w.done());
    }

    #[test]
    fn expiry_fills_in_the_rest_and_results_keep_peer_order() {
        let mut w = wait(0, &["a", "b"]);
        w.record(&PkiId::from("b"), Ok(()));
        let (_, unanswered) = wait(0, &["x"]).into_results();
        assert_eq!(unanswered, vec![PkiId::from("x")]);
        w.expire(&AckError::Stopped);
        let (results, unanswered) = w.into_results();
        assert!(unanswered.is_empty());
        assert_eq!(
            results,
            vec![
                SendResult {
                    peer: PkiId::from("a"),
                    result: Err(AckError::Stopped)
                },
                SendResult {
                    peer: PkiId::from("b"),
                    result: Ok(())
                },
            ]
        );
    }
}
