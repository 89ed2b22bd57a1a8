//! `--auto-ack`: every received message with a nonce acked without the command loop ever
//! waiting, a sender holding at most its share of the slots for acks waiting for room.

use super::MAX_ACKS_PER_SENDER;
use crate::logging::TARGET;
use fabric_gossip_core::PkiId;
use fabric_gossip_tonic::Received;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Acks `r` for `--auto-ack` without waiting: in a task holding a slot and a share of its
/// sender's while it waits for room, when both are free; otherwise at once if its
/// connection has room, else dropped and counted.
pub(super) fn auto_ack(acks: &Arc<Semaphore>, shares: &AckShares, r: Received) {
    if shares.take(r.sender()) {
        match acks.clone().try_acquire_owned() {
            Ok(permit) => return spawn_ack(permit, shares.clone(), r),
            Err(_) => shares.give_back(r.sender()),
        }
    }
    // Sent if the connection has room now; otherwise dropped, counted by the core.
    if let Err(e) = r.try_ack(None) {
        tracing::warn!(target: TARGET, "ack of nonce {}: {e}", r.message().nonce);
    }
}

/// Acks `r` in a task of its own, holding an ack slot and its sender's share until it is
/// written or has failed (the connection closed: the node then says so in a warning).
fn spawn_ack(permit: tokio::sync::OwnedSemaphorePermit, shares: AckShares, r: Received) {
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = r.ack(None).await {
            tracing::warn!(target: TARGET, "ack of nonce {}: {e}", r.message().nonce);
        }
        shares.give_back(r.sender());
    });
}

/// The `--auto-ack` slots each sender holds, so that none holds more than
/// [`MAX_ACKS_PER_SENDER`]. An entry goes when its count reaches zero, so the map holds
/// only senders with acks waiting.
#[derive(Clone, Default)]
pub(super) struct AckShares(Arc<std::sync::Mutex<HashMap<PkiId, usize>>>);

impl AckShares {
    /// Takes one of `who`'s slots; `false` when it holds its whole share.
    fn take(&self, who: &PkiId) -> bool {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = held.entry(who.clone()).or_default();
        if *n >= MAX_ACKS_PER_SENDER {
            return false;
        }
        *n += 1;
        true
    }

    fn give_back(&self, who: &PkiId) {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = held.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                held.remove(who);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_holds_at_most_its_share_of_the_ack_slots() {
        let shares = AckShares::default();
        let (quiet, busy) = (PkiId::from("quiet"), PkiId::from("busy"));
        for _ in 0..MAX_ACKS_PER_SENDER {
            assert!(shares.take(&busy));
        }
        // The busy sender's next acks do not wait; another sender's still may.
        assert!(!shares.take(&busy));
        assert!(shares.take(&quiet));
        shares.give_back(&busy);
        assert!(shares.take(&busy));
        for _ in 0..MAX_ACKS_PER_SENDER {
            shares.give_back(&busy);
        }
        shares.give_back(&quiet);
        let held = shares.0.lock().expect("lock");
        assert!(
            held.is_empty(),
            "senders with nothing waiting stay: {held:?}"
        );
    }
}
