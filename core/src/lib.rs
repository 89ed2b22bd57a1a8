//! The sans-IO core of Hyperledger Fabric's gossip comm layer (`gossip/comm`).
//!
//! One [`Comm`] is one node's communication layer: the signed `ConnEstablish` handshake
//! with TLS-certificate binding, the connection store (one connection per PKI-ID), send
//! buffers, the demultiplexer of received messages to subscriptions, acks, probes and
//! handshakes. It does no I/O, reads no clock and draws no unseeded randomness: a driver
//! feeds it inputs and carries out its outputs. The same core runs under the tonic driver
//! (`fabric-gossip-tonic`) against real Fabric peers, and under the deterministic simulator
//! (`fabric-gossip-sim`), where one seed always gives the same trace.
//!
//! # Shape of the API
//!
//! * **Getters**: [`Comm::pki_id`], [`Comm::stats`], [`Comm::connections`], …
//! * **Driver inputs** (`handle_*`, [`Comm::accept_stream`]): what happened on the network,
//!   each carrying the current [`Instant`].
//! * **API calls** (Fabric's `Comm` interface): [`Comm::send`], [`Comm::send_wait`],
//!   [`Comm::send_with_ack`] (or [`Comm::send_with_ack_signed`]), [`Comm::probe`],
//!   [`Comm::handshake`], [`Comm::subscribe`] (Fabric's `Accept`), [`Comm::respond`],
//!   [`Comm::ack`], [`Comm::close_conn`], [`Comm::stop`].
//! * **Outputs**, polled: [`Comm::poll_output`] yields every [`Action`] (network work:
//!   dial, ping, open a stream, write, pause/resume reading, close), then every [`Event`]
//!   (PresumedDead, IdentitySwitch, operation results, connection changes), and ends with
//!   [`Output::Timeout`], the next deadline. Received messages are pulled per
//!   subscription with [`Comm::poll_delivery`], so a slow consumer pushes back.
//!
//! # Call order
//!
//! After **every** input, API call and `poll_delivery`, call `poll_output` until it
//! returns `Output::Timeout`: carry actions out in the order given (per stream), hand
//! events to the application, poll the deliveries of subscriptions that reported
//! [`Event::DeliveryReady`] as far as their consumers have room (then drain `poll_output`
//! again: taking deliveries may resume a paused stream), and call
//! [`Comm::handle_timeout`] when the time-out's instant comes. Calling `handle_timeout`
//! early, or twice, is harmless. (`poll_action`, `poll_event` and `poll_timeout` remain
//! for drivers written against them; a loop built on them must drain actions again after
//! polling deliveries.)
//!
//! A protocol above comm (Fabric's membership layer, an application) is a [`Layer`];
//! [`Stack`] hosts one on a core behind the same single output, [`Stack::poll_output`].
//!
//! Handles ([`StreamId`], [`DialId`], [`OpId`], [`SubscriptionId`]) carry a generation:
//! once the core closes one (`Action::CloseStream`, `Action::CloseDial`) it never names it
//! again, and an input naming a dead handle returns [`Error::UnknownHandle`], which a
//! driver racing a close may ignore. Until then a [`DialId`] may be named by more than one
//! `Action::Dial`: after a failed attempt the core asks for another on the same handle
//! ([`Config::dial_backoff`], as grpc-go retries within Fabric's dial timeout).
//!
//! # Flow control
//!
//! * **Writes**: each stream starts with one `Action::Write` of [`WriteKind::Handshake`]
//!   (our `ConnEstablish`, never confirmed); then the core hands out at most
//!   `write_window` writes of [`WriteKind::Message`] per stream before the driver
//!   confirms them with [`Comm::handle_sent`]; the rest wait in the
//!   connection's send buffer (`send_buffer_size`, Fabric's `sendBuffSize`). [`Comm::send`]
//!   drops and counts when that buffer is full, as Fabric does; `respond`, `ack`,
//!   `send_with_ack` and [`Comm::send_wait`] wait in a bounded wait queue instead. The
//!   three stages together also hold at most `send_buffer_bytes`, beyond Fabric (a
//!   connection holding nothing always takes one message).
//! * **Reads**: each subscription queues `subscription_buffer` deliveries; when one fills,
//!   the core emits `Action::PauseRead` for the streams feeding it and `ResumeRead` once the
//!   consumer catches up, so a slow subscriber pushes back to the sender through gRPC flow
//!   control, where Fabric would block its reader goroutine. A driver that keeps feeding a
//!   paused stream gets `recv_buffer_size` more, then drops counted in
//!   [`Stats::dropped_subscription_overflow`].
//!
//! Every queue is bounded (see [`Config`] for each bound); nothing grows with input alone.
//!
//! # Beyond Fabric
//!
//! * **Order**: Fabric sends each message from its own goroutine, so messages to one peer
//!   can overtake each other. Here every message to a peer goes through one FIFO: they
//!   leave in the order they were sent.
//! * **Crossing dials**: when two nodes dial each other at once, Fabric can close both
//!   connections. Here, when a second authenticated stream appears for a PKI-ID and the two
//!   were opened by different sides, the stream opened by the **lower PKI-ID** becomes the
//!   primary on both sides; the other is a secondary that carries no new sends. The side
//!   that opened the secondary closes it after `crossing_grace`; the other side never
//!   closes it. A Fabric peer always keeps the stream its remote opened and closes its own,
//!   so against Fabric the secondary is promoted when Fabric closes the primary, and
//!   exactly one connection remains either way. Streams from the same side replace each
//!   other, as in Fabric (a reconnecting peer).
//! * **Fast failure**: a `send_with_ack` peer to which no connection can be had fails at
//!   once with [`AckError::NoConnection`] instead of waiting for the time-out.
//!
//! # Errors and panics
//!
//! Three outcomes are kept apart: misuse of the API returns an [`Error`]; a misbehaving or
//! failing remote closes its stream and shows up as an event ([`Event::HandshakeFailed`],
//! [`Event::Disconnected`] with a [`CloseReason`]) and a counter in [`Stats`]; a broken
//! internal invariant would be a bug. No input, however malformed or ill-timed, panics.
//!
//! # A driver loop
//!
//! Two cores wired back to back, with the network reduced to moving outputs into inputs:
//!
//! ```
//! use fabric_gossip_core::{
//!     Action, Comm, Config, Instant, Output, RemotePeer, SignedMessage, TestOnlyHmacSecurity,
//!     WriteKind, data_message,
//! };
//! use std::collections::VecDeque;
//!
//! let now = Instant::from_unix_secs(1_700_000_000);
//! let mk = |ep: &str| Comm::new(Config::default(), TestOnlyHmacSecurity::new(ep), now).unwrap();
//! let (mut a, mut b) = (mk("127.0.0.1:7051"), mk("127.0.0.1:7052"));
//! let sub = b.subscribe(Box::new(|_| true)).unwrap();
//!
//! let msg = data_message(1, "hi");
//! a.send(now, &SignedMessage::noop(msg), &[RemotePeer::new("127.0.0.1:7052", "127.0.0.1:7052")])
//!     .unwrap();
//!
//! // The "network": a's stream to b, and b's stream from a, once accepted.
//! let (mut a_stream, mut b_stream) = (None, None);
//! let mut to_b: VecDeque<fabric_gossip_core::proto::bytes::Bytes> = VecDeque::new();
//! let mut to_a: VecDeque<fabric_gossip_core::proto::bytes::Bytes> = VecDeque::new();
//! let mut got = None;
//! for _ in 0..10 {
//!     loop {
//!         match a.poll_output() {
//!             Output::Action(Action::Dial { dial, .. }) => {
//!                 a.handle_dial_result(now, dial, Ok(None)).unwrap()
//!             }
//!             Output::Action(Action::Ping { dial }) => a.handle_ping_result(now, dial, Ok(())).unwrap(),
//!             Output::Action(Action::OpenStream { stream, .. }) => {
//!                 a_stream = Some(stream);
//!                 b_stream = Some(b.accept_stream(now, "127.0.0.1:7051", None).unwrap());
//!             }
//!             Output::Action(Action::Write { stream, envelope, kind }) => {
//!                 to_b.push_back(envelope);
//!                 if kind == WriteKind::Message {
//!                     a.handle_sent(now, stream, 1).unwrap();
//!                 }
//!             }
//!             Output::Timeout(_) => break,
//!             _ => {}
//!         }
//!     }
//!     loop {
//!         match b.poll_output() {
//!             Output::Action(Action::Write { stream, envelope, kind }) => {
//!                 to_a.push_back(envelope);
//!                 if kind == WriteKind::Message {
//!                     b.handle_sent(now, stream, 1).unwrap();
//!                 }
//!             }
//!             Output::Timeout(_) => break,
//!             _ => {}
//!         }
//!     }
//!     while let Some(env) = to_b.pop_front() {
//!         b.handle_envelope(now, b_stream.unwrap(), env).unwrap();
//!     }
//!     while let Some(env) = to_a.pop_front() {
//!         a.handle_envelope(now, a_stream.unwrap(), env).unwrap();
//!     }
//!     if let Some(m) = b.poll_delivery(sub) {
//!         got = Some(m);
//!         break;
//!     }
//! }
//! let m = got.expect("delivered");
//! assert_eq!(m.sender(), a.pki_id());
//! ```
#![forbid(unsafe_code)]

mod comm;
mod config;
mod error;
// The feature alone, not `cfg(fuzzing)`: cargo fuzz sets that cfg for every crate of a
// fuzz build, including users' builds that depend on the core without the feature (and so
// without the `arbitrary` dependency this module needs). `fuzz/` enables the feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod identity;
mod ids;
mod layer;
mod message;
#[cfg(any(feature = "testing", feature = "fuzzing"))]
mod scripted;
mod security;
mod stats;
mod time;

#[cfg(feature = "testing")]
pub mod testing;

pub use comm::{
    Acceptor, Action, Comm, ConnectionEntry, DeadCause, DeadPeer, Event, LiveCounts, Output,
    RemotePeer, SendOutcome, SendQueueLen, SendResult, StreamEnd, SwitchedPeer, WriteKind,
};
pub use config::{CertHash, Config, DialBackoff, TlsHashes};
pub use config::{
    DIAL_RETRY_MIN, IDENTITY_SWEEP_MIN, IDENTITY_USAGE_THRESHOLD, MAX_QUEUED_EVENTS,
    PAUSED_RELOOK_MIN, SEND_BUFFER_BYTES,
};
pub use error::{
    AckError, CloseReason, DialError, Error, HandshakeError, HandshakeFailure, PING_TIMED_OUT,
    ProbeError,
};
pub use fabric_gossip_proto as proto;
pub use identity::{IdentityRefusal, check_identity_claim};
pub use ids::{DialId, Handle, OpId, PkiId, PkiKey, Slab, StreamId, SubscriptionId};
pub use layer::{HostedLayer, Layer, Stack, StackOutput};
pub use message::{
    ConnectionInfo, ReceivedMessage, SignedMessage, data_message, data_payload, detached_envelope,
    verify_envelope,
};
pub use security::{
    SHOWN_CHARS, Security, SecurityError, TEST_HMAC_KEY, TestOnlyHmacSecurity, escape_unseen,
    is_unseen, shown, shown_up_to,
};
pub use stats::Stats;
pub use time::{Instant, LogBudget, StdClock};

/// SHA-256 of a DER certificate: what `ConnEstablish.tls_cert_hash` carries and what
/// drivers report for the certificate a remote presented.
pub fn cert_hash(der: &[u8]) -> CertHash {
    use sha2::Digest;
    sha2::Sha256::digest(der).into()
}
