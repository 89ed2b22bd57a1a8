//! Messages for a peer known by its endpoint alone, waiting for the handshake that learns
//! its PKI-ID.
//!
//! Under MSP identities a peer's PKI-ID is a digest of its certificate, which someone
//! typing `--peer`, or a `send` or `send_with_ack` without `"pki_id"`, does not know, and the
//! node sends by PKI-ID. So a message to such an endpoint waits while a Fabric Handshake with
//! whoever serves it tells the PKI-ID; then it is handed to the node. Everything for one
//! endpoint waits behind the same handshake and is handed over in the order it was given (a
//! script's piped lines arrive in order, and one handshake is paid, not one a line). A
//! message whose handshake fails, or that still waits when the node stops, is dropped and
//! counted (`stats`, `/metrics`, the summary line): none is lost unseen; a `send_with_ack`
//! is told instead, and prints its failed `ack_result`. What may wait at once is bounded;
//! past it a message is refused, and the caller told why.
//!
//! A PKI-ID learnt is kept for its endpoint, and later messages to it go straight to the
//! node: were each to wait for a handshake of its own, those sent once the connection is up
//! (by PKI-ID, as a plain line to the connected peers is) would overtake those still
//! waiting. It is forgotten when the node presumes that peer dead or sees its identity
//! switch, so a peer that came back with another certificate is learnt again. For the same
//! reason a message naming its peer's PKI-ID, and a plain line while a `--peer`'s is being
//! learnt, go behind what waits for that endpoint.

use crate::out::Out;
use fabric_gossip_core::{PkiId, RemotePeer, SignedMessage};
use fabric_gossip_tonic::Node;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Endpoints whose PKI-IDs are being learnt at once; a message to one more is refused.
const MAX_LOOKUPS: usize = 64;
/// Endpoints whose learnt PKI-IDs are kept; past it they are all forgotten (each costs one
/// more handshake, no message).
const MAX_KNOWN: usize = 4096;
/// Messages waiting at once, over every endpoint.
const MAX_WAITING: usize = 4096;
/// Bytes of Envelopes waiting at once, over every endpoint (a line may be 4 MiB). A waiting
/// message holds its data twice, decoded and encoded: about 64 MiB of memory at most.
const MAX_WAITING_BYTES: usize = 32 << 20;

/// Why a message was not taken: nothing of it was queued or sent, and its caller is told
/// (a `command_error`), so none is counted dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The waiting messages' bounds are reached; `named`: by a message that gave its peer's
    /// PKI-ID (and waited only not to overtake others).
    #[error(
        "{messages} messages ({bytes} bytes) already wait for their peers' PKI-IDs; {}",
        if *named {
            "send once the handshakes under way are over"
        } else {
            "give \"pki_id\", or send once the peer is connected"
        }
    )]
    Full {
        messages: usize,
        bytes: usize,
        named: bool,
    },
    /// [`MAX_LOOKUPS`] endpoints are being authenticated already.
    #[error("{MAX_LOOKUPS} peers are already being authenticated; give \"pki_id\"")]
    Busy,
    /// The node refused it (stopped, or the message is not one it sends).
    #[error("send: {0}")]
    Node(#[from] fabric_gossip_core::Error),
}

impl From<Refused> for String {
    /// For the commands' errors, which are text (`command_error`).
    fn from(e: Refused) -> String {
        e.to_string()
    }
}

/// Fabric's Handshake with whoever serves `addr`, for its PKI-ID; Fabric's discovery learns
/// its bootstrap peers' PKI-IDs the same way. Sending with an empty PKI-ID instead would key
/// every such connection attempt alike, so that two unknown peers would share one attempt
/// and only the first would be dialled.
async fn learn_pki(node: &Node, addr: &str) -> Result<PkiId, String> {
    node.handshake(&RemotePeer::new(addr, PkiId::default()))
        .await
        .map(|info| info.id.clone())
        .map_err(|e| format!("could not authenticate {addr}: {e}"))
}

/// Work that needs a peer's PKI-ID (a `send_with_ack`): called with the peer, or with why
/// its PKI-ID could not be learnt, in its turn among the messages to the same endpoint.
pub(crate) type Then = Box<dyn FnOnce(Result<RemotePeer, String>) + Send>;

/// What waits for a PKI-ID.
enum Waiting {
    /// A message for the node's Send (boxed: the other kind is a tenth of its size).
    Send(Box<SignedMessage>),
    /// Work that needs the peer, and the size of the message it holds.
    Then(Then, usize),
    /// A message to a peer its caller named with its PKI-ID, behind those to its endpoint
    /// that wait for the handshake: sent at once, it would overtake them. Sent to the peer
    /// named, whatever the handshake learns.
    SendNamed(Box<(SignedMessage, RemotePeer)>),
    /// Work for a peer its caller named, likewise; the size of its message.
    ThenNamed(Box<(Then, RemotePeer)>, usize),
}

impl Waiting {
    /// The bytes it counts against [`MAX_WAITING_BYTES`].
    fn size(&self) -> usize {
        match self {
            Waiting::Send(m) => m.envelope_bytes().len(),
            Waiting::SendNamed(m) => m.0.envelope_bytes().len(),
            Waiting::Then(_, size) | Waiting::ThenNamed(_, size) => *size,
        }
    }
}

/// What waits, by endpoint, in the order it was given. Pure bookkeeping, so that the limits
/// and the order are tested without a network.
#[derive(Default)]
struct Table {
    by_endpoint: HashMap<String, VecDeque<Waiting>>,
    messages: usize,
    bytes: usize,
    /// PKI-IDs learnt, by endpoint: never for an endpoint with a queue.
    known: HashMap<String, PkiId>,
}

/// What [`Table::admit`] did with a message.
#[derive(Debug, PartialEq, Eq)]
enum Admitted {
    /// Queued behind a handshake already under way.
    Joined,
    /// The first for its endpoint: the caller starts the handshake.
    First,
}

impl Table {
    /// Queues `msg` for `endpoint`; `start` is asked only when no handshake is under way
    /// for it, and says whether one may start.
    fn admit(
        &mut self,
        endpoint: &str,
        msg: Waiting,
        start: impl FnOnce() -> bool,
    ) -> Result<Admitted, Refused> {
        let size = msg.size();
        room(self.messages, self.bytes, size, false)?;
        let admitted = match self.by_endpoint.get_mut(endpoint) {
            Some(queue) => {
                queue.push_back(msg);
                Admitted::Joined
            }
            None if start() => {
                self.by_endpoint
                    .insert(endpoint.to_owned(), VecDeque::from([msg]));
                Admitted::First
            }
            None => return Err(Refused::Busy),
        };
        self.messages += 1;
        self.bytes += size;
        Ok(admitted)
    }

    /// Queues what `wrap` makes of `item` (of `size` bytes) behind the messages to
    /// `endpoint` that wait for its handshake; `item` back when none wait, and nothing
    /// could be overtaken.
    fn join<T>(
        &mut self,
        endpoint: &str,
        item: T,
        size: usize,
        wrap: impl FnOnce(T) -> Waiting,
    ) -> Result<Option<T>, Refused> {
        let Some(queue) = self.by_endpoint.get_mut(endpoint) else {
            return Ok(Some(item));
        };
        room(self.messages, self.bytes, size, true)?;
        queue.push_back(wrap(item));
        self.messages += 1;
        self.bytes += size;
        Ok(None)
    }

    /// The PKI-ID learnt for `endpoint`, when no handshake for it is under way.
    fn known(&self, endpoint: &str) -> Option<PkiId> {
        self.known.get(endpoint).cloned()
    }

    /// The messages `endpoint` has waiting, in order; `None` once none is left, and then
    /// its handshake is over: `learnt`, what it learnt, is kept for the next messages; if
    /// it learnt nothing, the next message starts another.
    fn take(&mut self, endpoint: &str, learnt: Option<&PkiId>) -> Option<VecDeque<Waiting>> {
        let queue = self.by_endpoint.get_mut(endpoint)?;
        if queue.is_empty() {
            self.by_endpoint.remove(endpoint);
            if let Some(pki) = learnt {
                if self.known.len() >= MAX_KNOWN {
                    self.known.clear();
                }
                self.known.insert(endpoint.to_owned(), pki.clone());
            }
            return None;
        }
        let batch = std::mem::take(queue);
        self.messages -= batch.len();
        self.bytes -= batch.iter().map(Waiting::size).sum::<usize>();
        Some(batch)
    }

    /// Forgets `pki`'s endpoints: the next message to one learns its PKI-ID again.
    fn forget(&mut self, pki: &PkiId) {
        self.known.retain(|_, known| known != pki);
    }

    /// Empties the table; what it held.
    fn clear(&mut self) -> Vec<Waiting> {
        let all = std::mem::take(&mut self.by_endpoint);
        *self = Table::default();
        all.into_values().flatten().collect()
    }
}

/// Whether one more message of `size` bytes may wait beside `messages` of `bytes`.
fn room(messages: usize, bytes: usize, size: usize, named: bool) -> Result<(), Refused> {
    if messages >= MAX_WAITING || bytes + size > MAX_WAITING_BYTES {
        return Err(Refused::Full {
            messages,
            bytes,
            named,
        });
    }
    Ok(())
}

/// What became of a message handed over.
enum HandedOver {
    /// Given to the node, or its work to its caller.
    Done,
    /// Dropped: no PKI-ID was learnt for its peer.
    Unauthenticated,
    /// The node refused it.
    Refused(fabric_gossip_core::Error),
}

/// Hands `waiting` to the node with the peer its handshake learnt (or why none was), or to
/// the peer its caller named.
fn hand_over(node: &Node, waiting: Waiting, learnt: &Result<RemotePeer, String>) -> HandedOver {
    let (msg, to) = match (waiting, learnt) {
        (Waiting::Send(msg), Ok(peer)) => (*msg, peer.clone()),
        (Waiting::SendNamed(named), _) => *named,
        (Waiting::Send(_), Err(_)) => return HandedOver::Unauthenticated,
        (Waiting::Then(then, _), learnt) => {
            then(learnt.clone());
            return HandedOver::Done;
        }
        (Waiting::ThenNamed(named, _), _) => {
            let (then, to) = *named;
            then(Ok(to));
            return HandedOver::Done;
        }
    };
    match node.send(&msg, &[to]) {
        Ok(()) => HandedOver::Done,
        Err(e) => HandedOver::Refused(e),
    }
}

/// The losses [`Lookups`] counts, and whether the node is stopping.
#[derive(Debug, Default)]
struct Counters {
    /// The handshake that was to learn the PKI-ID failed.
    unauthenticated: AtomicU64,
    /// The node stopped while the message waited, or refused it once the PKI-ID was learnt.
    awaiting_pki: AtomicU64,
    /// Handshakes that failed to learn a PKI-ID, each reported as a `presumed_dead`: the
    /// CLI's own, added to the core's count wherever that is shown, so that the count
    /// matches the events.
    presumed_dead: AtomicU64,
    /// Set by [`Lookups::abandon`]: a handshake failing from then on failed because the
    /// node stopped, and says nothing of the peer.
    stopping: AtomicBool,
}

/// The handshakes under way that learn PKI-IDs, and what waits for them. Cloned handles
/// share one table.
#[derive(Clone)]
pub(crate) struct Lookups {
    table: Arc<Mutex<Table>>,
    handshakes: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl Default for Lookups {
    fn default() -> Self {
        Lookups {
            table: Arc::default(),
            handshakes: Arc::new(Semaphore::new(MAX_LOOKUPS)),
            counters: Arc::default(),
        }
    }
}

/// Messages dropped while waiting for a PKI-ID, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// The handshake that was to learn the PKI-ID failed.
    pub(crate) unauthenticated: u64,
    /// The node stopped while the message waited, or refused it once the PKI-ID was learnt.
    pub(crate) awaiting_pki: u64,
}

impl Dropped {
    pub(crate) fn total(self) -> u64 {
        self.unauthenticated + self.awaiting_pki
    }
}

impl Lookups {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `msg` for whoever serves `endpoint`, starting the handshake that learns its
    /// PKI-ID unless one is under way. `Err` (nothing queued) past the limits. A failed
    /// handshake is printed as `presumed_dead` (the node's own shape, the peer named by its
    /// endpoint) and its messages counted dropped.
    pub(crate) fn send(
        &self,
        node: &Node,
        out: &Out,
        msg: SignedMessage,
        endpoint: &str,
    ) -> Result<(), Refused> {
        self.wait(node, out, Waiting::Send(Box::new(msg)), endpoint)
    }

    /// Calls `then` with whoever serves `endpoint` once its PKI-ID is learnt (or with why it
    /// was not), in order with the messages to it; `size`, that of the message it will
    /// send. `Err` (`then` dropped uncalled) past the limits.
    pub(crate) fn then(
        &self,
        node: &Node,
        out: &Out,
        endpoint: &str,
        size: usize,
        then: Then,
    ) -> Result<(), Refused> {
        self.wait(node, out, Waiting::Then(then, size), endpoint)
    }

    /// Fabric's Send of `msg` to `peer`, named with its PKI-ID: at once, or, while messages
    /// to its endpoint wait for the handshake that learns a PKI-ID, behind them (and to
    /// `peer` whatever the handshake learns). `Err` (nothing sent) past the limits or when
    /// the node refuses it.
    pub(crate) fn send_named(
        &self,
        node: &Node,
        msg: SignedMessage,
        peer: RemotePeer,
    ) -> Result<(), Refused> {
        let size = msg.envelope_bytes().len();
        let endpoint = peer.endpoint.clone();
        // Its own statement: the lock is let go before the node is called.
        let now = self.table().join(&endpoint, (msg, peer), size, |m| {
            Waiting::SendNamed(Box::new(m))
        })?;
        match now {
            Some((msg, peer)) => Ok(node.send(&msg, &[peer])?),
            None => Ok(()),
        }
    }

    /// Calls `then` with `peer`, named with its PKI-ID: at once, or behind the messages to
    /// its endpoint that wait for a handshake (with why not, should the node stop first).
    /// `size`, that of the message it will send. `Err` (`then` dropped uncalled) past the
    /// limits.
    pub(crate) fn then_named(
        &self,
        peer: RemotePeer,
        size: usize,
        then: Then,
    ) -> Result<(), Refused> {
        let endpoint = peer.endpoint.clone();
        let now = self.table().join(&endpoint, (then, peer), size, |t| {
            Waiting::ThenNamed(Box::new(t), size)
        })?;
        if let Some((then, peer)) = now {
            then(Ok(peer));
        }
        Ok(())
    }

    /// The PKI-ID learnt for `endpoint`, kept once its handshake is over.
    pub(crate) fn known(&self, endpoint: &str) -> Option<PkiId> {
        self.table().known(endpoint)
    }

    /// Whether messages to `endpoint` wait for the handshake that learns its PKI-ID.
    pub(crate) fn waiting(&self, endpoint: &str) -> bool {
        self.table().by_endpoint.contains_key(endpoint)
    }

    fn wait(&self, node: &Node, out: &Out, msg: Waiting, endpoint: &str) -> Result<(), Refused> {
        let mut permit = None;
        let admitted = {
            let mut table = self.table();
            if let Some(pki) = table.known(endpoint) {
                // Straight to the node, as a message to a connected peer goes.
                drop(table);
                let peer = Ok(RemotePeer::new(endpoint, pki));
                return match hand_over(node, msg, &peer) {
                    HandedOver::Refused(e) => Err(e.into()),
                    HandedOver::Done | HandedOver::Unauthenticated => Ok(()),
                };
            }
            table.admit(endpoint, msg, || {
                permit = self.handshakes.clone().try_acquire_owned().ok();
                permit.is_some()
            })?
        };
        if let (Admitted::First, Some(permit)) = (admitted, permit) {
            let (me, node, out) = (self.clone(), node.clone(), out.clone());
            let endpoint = endpoint.to_owned();
            tokio::spawn(async move { me.learn_then_send(node, out, endpoint, permit).await });
        }
        Ok(())
    }

    async fn learn_then_send(
        self,
        node: Node,
        out: Out,
        endpoint: String,
        _permit: OwnedSemaphorePermit,
    ) {
        let learnt = learn_pki(&node, &endpoint).await;
        let peer = learnt
            .clone()
            .map(|pki| RemotePeer::new(endpoint.clone(), pki));
        let mut lost = 0;
        // No await from here on: what is taken is handed over (or counted) before a stop
        // can drop this task, and a message queued meanwhile is in the next batch.
        loop {
            // Its own statement, so the lock is let go before the batch is handed over.
            let batch = self.table().take(&endpoint, learnt.as_ref().ok());
            let Some(batch) = batch else { break };
            for waiting in batch {
                match hand_over(&node, waiting, &peer) {
                    HandedOver::Done => {}
                    HandedOver::Unauthenticated => {
                        lost += 1;
                        self.counters
                            .unauthenticated
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    HandedOver::Refused(e) => {
                        self.counters.awaiting_pki.fetch_add(1, Ordering::Relaxed);
                        out.command_error(format!("send to {endpoint}: {e}"));
                    }
                }
            }
        }
        if let Err(reason) = learnt {
            if lost > 0 {
                tracing::warn!(
                    target: crate::logging::TARGET,
                    "{reason}; messages to it dropped: {lost}"
                );
            }
            // Failed by our own stop, not the peer: nothing to report of it.
            if self.counters.stopping.load(Ordering::Relaxed) {
                return;
            }
            self.counters.presumed_dead.fetch_add(1, Ordering::Relaxed);
            out.emit(&json!({
                "event": "presumed_dead",
                "peer": endpoint,
                "endpoint": endpoint,
                "reason": reason,
            }));
        }
    }

    /// Forgets the endpoints of `pki`, a peer the node presumed dead or whose identity
    /// switched: the next message to one learns its PKI-ID again.
    pub(crate) fn forget(&self, pki: &PkiId) {
        self.table().forget(pki);
    }

    /// Resolves once no handshake is under way: every message that waited was handed over
    /// or counted.
    pub(crate) async fn idle(&self) {
        const ALL: u32 = MAX_LOOKUPS as u32;
        // The semaphore is never closed.
        let _all = self.handshakes.acquire_many(ALL).await;
    }

    /// At stop, before the node stops (which fails the handshakes under way): the messages
    /// still waiting are dropped and counted as such.
    /// A `send_with_ack` still waiting is told, and prints its failed result. How many
    /// messages were dropped.
    pub(crate) fn abandon(&self) -> usize {
        self.counters.stopping.store(true, Ordering::Relaxed);
        // Taken under the lock, told outside it.
        let all = self.table().clear();
        let mut dropped = 0;
        for waiting in all {
            let (then, why) = match waiting {
                Waiting::Send(_) | Waiting::SendNamed(_) => {
                    dropped += 1;
                    continue;
                }
                Waiting::Then(then, _) => (then, "before the peer's PKI-ID was learnt"),
                // Its PKI-ID was given: it waited behind others to the same endpoint.
                Waiting::ThenNamed(named, _) => (
                    named.0,
                    "while the messages before it to that endpoint waited for its handshake",
                ),
            };
            then(Err(format!("the node stopped {why}")));
        }
        self.counters
            .awaiting_pki
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// The peers reported presumed dead because their PKI-IDs could not be learnt.
    pub(crate) fn presumed_dead(&self) -> u64 {
        self.counters.presumed_dead.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped(&self) -> Dropped {
        Dropped {
            unauthenticated: self.counters.unauthenticated.load(Ordering::Relaxed),
            awaiting_pki: self.counters.awaiting_pki.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric_gossip_core::proto::gossip::gossip_message::Content;

    fn msg(seq: u64, len: usize) -> Waiting {
        Waiting::Send(Box::new(SignedMessage::noop(crate::node::data_message(
            seq,
            &vec![7; len],
            0,
        ))))
    }

    fn seqs(batch: &VecDeque<Waiting>) -> Vec<u64> {
        batch
            .iter()
            .map(|w| match w {
                Waiting::Send(m) => match &m.message().content {
                    Some(Content::DataMsg(d)) => d.payload.as_ref().map_or(0, |p| p.seq_num),
                    _ => 0,
                },
                Waiting::SendNamed(m) => match &m.0.message().content {
                    Some(Content::DataMsg(d)) => 2000 + d.payload.as_ref().map_or(0, |p| p.seq_num),
                    _ => 0,
                },
                Waiting::Then(_, size) | Waiting::ThenNamed(_, size) => 1000 + *size as u64,
            })
            .collect()
    }

    #[test]
    fn one_handshake_per_endpoint_and_its_messages_in_order() {
        let mut t = Table::default();
        let started = std::cell::Cell::new(0);
        let start = || {
            started.set(started.get() + 1);
            true
        };
        assert_eq!(
            t.admit("a:1", msg(1, 10), start).ok(),
            Some(Admitted::First)
        );
        assert_eq!(
            t.admit("b:2", msg(2, 10), start).ok(),
            Some(Admitted::First)
        );
        assert_eq!(
            t.admit("a:1", msg(3, 10), start).ok(),
            Some(Admitted::Joined)
        );
        // A send_with_ack's turn, between two sends.
        let ack = Waiting::Then(Box::new(|_| {}), 7);
        assert_eq!(t.admit("a:1", ack, start).ok(), Some(Admitted::Joined));
        assert_eq!(
            t.admit("a:1", msg(4, 10), start).ok(),
            Some(Admitted::Joined)
        );
        assert_eq!(started.get(), 2);
        assert_eq!(t.messages, 5);
        let sizes = msg(1, 10).size() * 4 + 7;
        assert_eq!(t.bytes, sizes);
        let first = t.take("a:1", None).expect("a's messages");
        assert_eq!(seqs(&first), [1, 3, 1007, 4]);
        // Queued while the first batch was being handed over: the same handshake takes it.
        assert_eq!(
            t.admit("a:1", msg(5, 10), start).ok(),
            Some(Admitted::Joined)
        );
        assert_eq!(seqs(&t.take("a:1", None).expect("the late one")), [5]);
        assert!(t.take("a:1", None).is_none(), "a's handshake is over");
        // The next message for `a` starts another.
        assert_eq!(
            t.admit("a:1", msg(6, 10), start).ok(),
            Some(Admitted::First)
        );
        assert_eq!(started.get(), 3);
        assert_eq!((t.messages, t.take("x:9", None).is_none()), (2, true));
        assert_eq!(t.clear().len(), 2);
        assert_eq!((t.messages, t.bytes, t.by_endpoint.len()), (0, 0, 0));
    }

    /// What a handshake learnt is kept for its endpoint once its queue is handed over (the
    /// next messages go straight to the node), until the peer is forgotten; a failed one
    /// keeps nothing.
    #[test]
    fn a_learnt_pki_id_is_kept_until_forgotten_and_bounded() {
        let mut t = Table::default();
        let (p1, p2) = (PkiId::from("p1"), PkiId::from("p2"));
        t.admit("a:1", msg(1, 1), || true).expect("room");
        t.admit("b:2", msg(2, 1), || true).expect("room");
        t.admit("c:3", msg(3, 1), || true).expect("room");
        assert!(t.take("a:1", Some(&p1)).is_some());
        assert_eq!(
            t.known("a:1"),
            None,
            "not while its queue is being handed over"
        );
        assert!(t.take("a:1", Some(&p1)).is_none());
        assert_eq!(t.known("a:1"), Some(p1.clone()));
        assert!(t.take("b:2", None).is_some() && t.take("b:2", None).is_none());
        assert_eq!(t.known("b:2"), None, "a failed handshake keeps nothing");
        assert!(t.take("c:3", Some(&p2)).is_some() && t.take("c:3", Some(&p2)).is_none());
        t.forget(&p1);
        assert_eq!((t.known("a:1"), t.known("c:3")), (None, Some(p2.clone())));
        // Bounded: past MAX_KNOWN every endpoint is forgotten, and the new one kept.
        for i in 0..MAX_KNOWN {
            t.known.insert(format!("h{i}:1"), p1.clone());
        }
        t.admit("d:4", msg(4, 1), || true).expect("room");
        assert!(t.take("d:4", Some(&p2)).is_some() && t.take("d:4", Some(&p2)).is_none());
        assert_eq!(t.known.len(), 1);
        assert_eq!(t.known("d:4"), Some(p2));
    }

    /// A message naming its peer's PKI-ID joins the queue of its endpoint, if any, so as not
    /// to overtake it; with none it is given back, to go at once. It never starts a
    /// handshake, and counts against the limits as the others do.
    #[test]
    fn a_named_message_waits_only_behind_a_queue_of_its_endpoint() {
        let mut t = Table::default();
        let peer = RemotePeer::new("a:1", PkiId::from("p1"));
        let named = |seq| match msg(seq, 10) {
            Waiting::Send(m) => (*m, peer.clone()),
            _ => unreachable!("msg makes sends"),
        };
        let wrap = |m| Waiting::SendNamed(Box::new(m));
        let size = msg(1, 10).size();
        let back = t.join("a:1", named(1), size, wrap).expect("room");
        assert!(back.is_some_and(|(_, p)| p == peer), "no queue: given back");
        assert_eq!((t.messages, t.by_endpoint.len()), (0, 0));
        t.admit("a:1", msg(2, 10), || true).expect("room");
        assert!(t.join("a:1", named(3), size, wrap).expect("room").is_none());
        t.admit("a:1", msg(4, 10), || true).expect("room");
        assert_eq!((t.messages, t.bytes), (3, 3 * size));
        assert_eq!(seqs(&t.take("a:1", None).expect("queue")), [2, 2003, 4]);
        // Full: refused, nothing queued.
        t.admit("b:2", msg(5, 10), || true).expect("room");
        t.messages = MAX_WAITING;
        let e = t.join("b:2", named(6), size, wrap).expect_err("full");
        assert!(e.to_string().contains("already wait"), "{e}");
        assert_eq!(t.by_endpoint["b:2"].len(), 1);
    }

    #[test]
    fn a_new_endpoint_past_the_handshake_limit_is_refused_and_nothing_queued() {
        let mut t = Table::default();
        assert_eq!(
            t.admit("a:1", msg(1, 10), || true).ok(),
            Some(Admitted::First)
        );
        let e = t.admit("b:2", msg(2, 10), || false).expect_err("no permit");
        assert!(e.to_string().contains("already being authenticated"), "{e}");
        // An endpoint with a handshake under way still takes messages.
        assert_eq!(
            t.admit("a:1", msg(3, 10), || false).ok(),
            Some(Admitted::Joined)
        );
        assert_eq!(t.messages, 2);
        assert!(!t.by_endpoint.contains_key("b:2"));
    }

    #[test]
    fn waiting_messages_and_bytes_are_bounded() {
        let mut t = Table::default();
        for i in 0..MAX_WAITING {
            t.admit("a:1", msg(i as u64, 1), || true).expect("room");
        }
        let e = t.admit("a:1", msg(0, 1), || true).expect_err("full");
        assert!(
            e.to_string().contains(&format!("{MAX_WAITING} messages")),
            "{e}"
        );
        assert_eq!(t.take("a:1", None).map(|b| b.len()), Some(MAX_WAITING));
        assert_eq!((t.messages, t.bytes), (0, 0));
        // Bytes: 4 MiB lines fill the budget long before the count.
        let big = || msg(1, 4 << 20);
        let size = big().size();
        let fit = MAX_WAITING_BYTES / size;
        for _ in 0..fit {
            t.admit("a:1", big(), || true).expect("room");
        }
        let e = t.admit("b:2", big(), || true).expect_err("bytes");
        assert!(e.to_string().contains("already wait"), "{e}");
        assert_eq!(t.bytes, fit * size);
        assert!(
            t.admit("b:2", msg(2, 1), || true).is_ok(),
            "a small one fits"
        );
        // The byte budget to the byte: full is allowed, one more is not.
        let mut t = Table::default();
        let sized = |n| Waiting::Then(Box::new(|_| {}), n);
        t.admit("a:1", sized(MAX_WAITING_BYTES - 1), || true)
            .expect("room");
        t.admit("a:1", sized(1), || true).expect("exactly full");
        t.admit("a:1", sized(1), || true)
            .expect_err("one byte over");
        assert_eq!(t.bytes, MAX_WAITING_BYTES);
    }

    /// At a stop, a waiting send is counted dropped; a waiting send_with_ack is told why,
    /// so that it prints its result.
    #[test]
    fn abandoning_counts_the_sends_and_tells_the_acks() {
        let l = Lookups::default();
        let told = Arc::new(Mutex::new(Vec::new()));
        let record = |told: &Arc<Mutex<Vec<Result<RemotePeer, String>>>>| -> Waiting {
            let told = told.clone();
            Waiting::Then(Box::new(move |r| told.lock().expect("lock").push(r)), 5)
        };
        for (endpoint, w) in [
            ("a:1", msg(1, 3)),
            ("a:1", record(&told)),
            ("b:2", msg(2, 3)),
            ("c:3", record(&told)),
        ] {
            l.table().admit(endpoint, w, || true).expect("room");
        }
        // Named ones behind them: the same.
        let peer = RemotePeer::new("a:1", PkiId::from("p1"));
        let Waiting::Send(m) = msg(3, 3) else {
            unreachable!("msg makes sends")
        };
        let named = (*m, peer.clone());
        let queued = l
            .table()
            .join("a:1", named, 3, |m| Waiting::SendNamed(Box::new(m)));
        assert!(queued.expect("room").is_none());
        let Waiting::Then(then, _) = record(&told) else {
            unreachable!("record makes work")
        };
        let queued = l.table().join("a:1", (then, peer), 5, |t| {
            Waiting::ThenNamed(Box::new(t), 5)
        });
        assert!(queued.expect("room").is_none());
        assert_eq!(l.abandon(), 3);
        let told = told.lock().expect("lock");
        assert_eq!(told.len(), 3, "{told:?}");
        assert!(
            told.iter()
                .all(|r| r.as_ref().is_err_and(|e| e.contains("stopped"))),
            "{told:?}"
        );
        assert_eq!(
            l.dropped(),
            Dropped {
                unauthenticated: 0,
                awaiting_pki: 3
            }
        );
        assert_eq!(l.dropped().total(), 3);
        let t = l.table();
        assert_eq!((t.messages, t.bytes), (0, 0));
        drop(t);
        assert_eq!(l.abandon(), 0, "nothing left");
    }

    /// Found by review (2026-12-07): a message naming its peer's PKI-ID, refused because the
    /// waiting messages' bounds are reached, was told to give "pki_id", which it had.
    #[test]
    fn a_refused_named_message_is_not_told_to_give_its_pki_id() {
        let mut t = Table::default();
        t.admit("a:1", msg(1, 10), || true).expect("room");
        t.messages = MAX_WAITING;
        let peer = RemotePeer::new("a:1", PkiId::from("p1"));
        let Waiting::Send(m) = msg(2, 10) else {
            unreachable!("msg makes sends")
        };
        let e = t
            .join("a:1", (*m, peer), 10, |m| Waiting::SendNamed(Box::new(m)))
            .expect_err("full");
        assert!(!e.to_string().contains("give \"pki_id\""), "{e}");
        assert!(e.to_string().contains("once the handshake"), "{e}");
        let e = t.admit("a:1", msg(3, 10), || true).expect_err("full");
        assert!(e.to_string().contains("give \"pki_id\""), "{e}");
    }
}
