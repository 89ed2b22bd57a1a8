//! The real network for the gossip comm core: gRPC with tonic on tokio, plaintext or mutual
//! TLS, speaking Fabric's `gossip.Gossip` service (`GossipStream`, `Ping`).
//!
//! A [`Node`] runs one unmodified [`fabric_gossip_core::Comm`]: it serves the service on a
//! TCP listener, dials other peers with tonic clients, and offers Fabric's `Comm` interface
//! as async methods: [`Node::send`], [`Node::send_with_ack`] (or
//! [`Node::send_with_ack_signed`] for a message already encoded), [`Node::probe`],
//! [`Node::handshake`], [`Node::accept`] (a `Stream` of [`Received`] messages, each able to
//! [`Received::respond`] and [`Received::ack`]), [`Node::presumed_dead`],
//! [`Node::identity_switch`], [`Node::close_conn`], [`Node::revalidate_identities`] (Fabric's
//! `SuspectPeers`), [`Node::stop`] and counters. Beyond
//! Fabric, [`Node::send_wait`] waits for buffer room instead of dropping.
//!
//! # Getting started
//!
//! Two nodes on loopback: one message, then a SendWithAck answered with an ack. The core's
//! types are re-exported as [`fabric_gossip_core`], so this crate is the one dependency.
//!
//! ```
//! use fabric_gossip_tonic::Node;
//! use fabric_gossip_tonic::fabric_gossip_core::{
//!     Config, RemotePeer, SignedMessage, TestOnlyHmacSecurity, data_message,
//! };
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // Fabric's test identities are the endpoint, so build security once the port is known.
//! let start = |addr: std::net::SocketAddr| TestOnlyHmacSecurity::new(addr.to_string());
//! // Each node its own seed for its nonces (`Config::default()` gives every node 0).
//! let config = || Config::default().with_seed(fabric_gossip_tonic::random_seed());
//! let a = Node::builder(config()).start_with(start).await?;
//! let b = Node::builder(config()).start_with(start).await?;
//! let mut inbox = b.accept(|_| true)?;
//! let to_b = RemotePeer::new(b.endpoint(), b.pki_id().clone());
//!
//! // A DataMessage (sequence 1) in an Envelope, unsigned as the test provider leaves it.
//! let msg = SignedMessage::noop(data_message(1, b"hello".to_vec()));
//! a.send_wait(&msg, &to_b).await?;
//! let got = inbox.recv().await.expect("delivered");
//! assert_eq!(got.message(), msg.message());
//!
//! // SendWithAck: B answers with `ack`; A waits for one ack, at most a second. The message
//! // goes out with a fresh nonce put into its encoding (`send_with_ack` takes a
//! // `GossipMessage` and encodes it).
//! let peers = [to_b];
//! let (acks, answered) = tokio::join!(
//!     a.send_with_ack_signed(&msg, Duration::from_secs(1), 1, &peers),
//!     async { inbox.recv().await.expect("delivered").ack(None).await },
//! );
//! answered?;
//! assert!(acks?[0].result.is_ok());
//! a.stop().await;
//! b.stop().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! With real identities and mutual TLS the calls are the same: the builder takes a
//! [`TlsConfig`] and `start` an `MspSecurity` from `fabric-gossip-msp` (the README's
//! "Embedding the crates", and `examples/two_nodes.rs`).
//!
//! # When a dial fails
//!
//! A dial retries a failed connection attempt within its `dial_timeout` (3 s), as Fabric's
//! gRPC dials do ([`Config::dial_backoff`](fabric_gossip_core::Config::dial_backoff),
//! counted in `Stats::dial_retries` and [`DriverStats::dials_failed`]): a peer back within
//! it gets the send, one that stays down is presumed dead after it. What failed is the
//! transport's own text ([`OpError::Failed`], `DialError::Failed`, a Ping's status, a
//! `PresumedDead` event's `DeadCause` from [`NodeBuilder::events`]); [`DialDiagnosis::of`]
//! reads it and names the usual cause (nothing listening, the port serves TLS or
//! plaintext, the certificate names another host or has an untrusted CA, our client
//! certificate refused) with what to change:
//!
//! ```no_run
//! # use fabric_gossip_tonic::{Node, fabric_gossip_core::RemotePeer};
//! # async fn f(node: &Node, peer: &RemotePeer) {
//! use fabric_gossip_tonic::DialDiagnosis;
//! if let Err(e) = node.probe(peer).await {
//!     let tls = false; // whether this node was built with `.tls(..)`
//!     match DialDiagnosis::of(&e.to_string(), tls) {
//!         Some(cause) => eprintln!("probe failed: {e} (most likely: {cause})"),
//!         None => eprintln!("probe failed: {e}"),
//!     }
//! }
//! # }
//! ```
//!
//! # Hosting a layer
//!
//! A protocol built on comm, such as Fabric's membership layer
//! (`fabric_gossip_discovery::Discovery`), runs inside the node through
//! [`NodeBuilder::layer`] (or [`NodeBuilder::try_layer`], for a layer whose constructor
//! can fail): the core and the layer sit in the core's `Stack` behind the
//! node's one mutex, the stack's single output is drained after every input as a bare
//! core's is, the layer's deadline shares the node's timer, and the driver holds none of
//! its rules. The application reads the layer's events from [`Node::layer_events`] (a
//! bounded queue; what it does not take in time is dropped and counted in
//! [`DriverStats::layer_events_dropped`]) and its state with [`Node::with_layer`].
//!
//! Two nodes with Fabric's test identities: B listens on a port bound beforehand, so A
//! can be built with B as its bootstrap peer; A prints its membership events until it
//! has learnt B. A real network changes only the identities, `.tls(..)` and the
//! endpoints; `examples/membership_tonic.rs` runs the whole story (dev MSP identities,
//! both directions, a stop).
//!
//! ```
//! use fabric_gossip_discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
//! use fabric_gossip_tonic::fabric_gossip_core::{Config, TestOnlyHmacSecurity};
//! use fabric_gossip_tonic::Node;
//! use std::net::{SocketAddr, TcpListener};
//! use tokio_stream::StreamExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // The layer is made once the listen address is known: it is our internal endpoint,
//! // what peers dial, so listen on an address they can reach (not 0.0.0.0).
//! // `try_layer`: a configuration Discovery::new refuses is start's error, not a panic.
//! let member = |bootstrap: Vec<String>| {
//!     let seed = fabric_gossip_tonic::random_seed;
//!     Node::builder(Config::default().with_seed(seed())).try_layer(move |addr| {
//!         let cfg = DiscoveryConfig::new(addr.to_string()).with_bootstrap(bootstrap);
//!         Discovery::new(cfg.with_seed(seed()))
//!     })
//! };
//! // Fabric's test identity is the endpoint itself, known once the port is bound.
//! let test_identity = |addr: SocketAddr| TestOnlyHmacSecurity::new(addr.to_string());
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let b_addr = listener.local_addr()?.to_string();
//! let b = member(vec![]).listener(listener).start_with(test_identity).await?;
//! let a = member(vec![b_addr]).start_with(test_identity).await?;
//!
//! let mut events = a.layer_events::<DiscoveryEvent>().expect("hosts Discovery");
//! while let Some(event) = events.next().await {
//!     let alive = a.with_layer(|d: &Discovery| d.members().len());
//!     println!("{event:?}: {alive:?} alive");
//!     if let DiscoveryEvent::MemberAlive { member, .. } = &event {
//!         if &member.pki_id == b.pki_id() {
//!             break;
//!         }
//!     }
//! }
//! a.stop().await;
//! b.stop().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! A node built without a layer hosts the empty one and behaves exactly as a bare core.
//!
//! # Design
//!
//! The core sits behind one mutex (see the `driver` module for why that beats an actor
//! task and why it cannot deadlock). Each stream has a reader task and a writer that tonic
//! polls; envelopes cross the gRPC boundary as raw bytes through a pass-through codec, so
//! received bytes reach the core exactly as sent. Flow control is the core's: its write
//! window bounds what is queued per stream, PauseRead stops the reader from polling (HTTP/2
//! then pushes back to the sender), and [`Incoming`] takes deliveries out of the core only
//! as its consumer asks for them.
//!
//! With TLS on, each side gives the core the SHA-256 of the leaf certificate the remote
//! presented on that very connection: the server from the TLS session, the dialling side
//! from its own connector, which tonic does not offer. A client without a certificate is
//! refused by the core ("No TLS certificate"), as a Fabric peer does, or already in the
//! TLS handshake with [`TlsConfig::require_client_certificate`]. A certificate that is
//! presented must chain to the client CAs, unless [`TlsConfig::verify_client_chain`]`(false)`
//! leaves its issuer to the gossip handshake, as a Fabric peer without `clientAuthRequired`
//! does; the node then runs the TLS handshakes itself, since tonic's cannot be told to, and
//! counts those that fail ([`DriverStats::inbound_tls_failures`]). The cryptography is rustls
//! on aws-lc-rs with AES-128-GCM offered first, what a Fabric peer offers first, its
//! records sealed by ring or aws-lc-rs, whichever is the faster on the CPU
//! ([`tls_crypto_provider`], [`RecordCipher`]); the node installs it as the process's
//! default rustls provider unless the application installed one before, and both its
//! server and its dialling side use the process's default.
//!
//! # Runtimes
//!
//! A node runs its tasks (server, connections, readers, timer) on the tokio runtime it was
//! started in ([`NodeBuilder::start`] takes the current one), and both kinds are supported.
//! On a multi-thread runtime a node's work spreads over the workers; an exchange of small
//! messages such as SendWithAck then wakes a parked worker for many of its hand-offs, and
//! on an idle machine those wake-ups (futex calls, context switches, h2's stream lock
//! passing between workers) cost more than the work itself. A node started inside a
//! current-thread runtime driven by a thread of its own runs every hand-off of one
//! exchange on that thread, one after the other: the callers woken by a batch of acks all
//! queue their next message before the stream's writer runs, so each round trip is one
//! write and one read per node, and the thread sleeps only in `epoll_wait`. On a
//! multi-thread runtime the driver gets most of that too: it hands the results of a batch of
//! acks to their callers one at a time and holds the node's stream writers until the last
//! caller has queued (so no parked worker is woken to steal callers, and a round trip still
//! leaves in one write). What is left is the machine's price for waking a thread, which
//! varies: in one run on a 2-core virtual machine (README, "Performance") two nodes on one
//! two-worker runtime spent 9.39 µs of CPU per ack, a runtime per node 6.04 and both nodes
//! on one thread 4.51. So the choice is the application's: SendWithAck-heavy work gains
//! from a current-thread runtime, bulk one-way traffic from the second worker. The
//! application's own tasks may share the node's runtime or call it from another (the
//! node's methods take its lock, never block on a task). `bench_report -- --only acks`
//! measures every layout on the machine at hand.
//!
//! A node lives no longer than the runtime it was started in: when that runtime shuts
//! down (a `#[tokio::test]` ending, say, while the node is kept for another), the node
//! stops as if [`Node::stop`] had been called, and its methods fail with `Stopped` instead
//! of waiting for tasks that are gone.
//!
//! # Bounds
//!
//! No channel is unbounded: per stream, the writer queue holds `write_window + 2` items and
//! the reader holds at most one batch of 64 Envelopes; each [`Incoming`] holds at most one
//! batch of [`DELIVERY_BATCH`] messages (or the limit given to [`Incoming::recv_many`])
//! beyond the core's subscription queue;
//! PresumedDead and IdentitySwitch notifications are buffered up to
//! `presumed_dead_buffer` each, then dropped and counted in [`DriverStats`]; so are event
//! copies beyond the capacity of the tap given to [`NodeBuilder::events`]. The HTTP/2
//! window (`DriverLimits::flow_control_window`, 1 MiB per stream and per connection)
//! bounds what a paused stream can have in flight.
//!
//! # Hostile remotes
//!
//! [`DriverLimits`] ([`NodeBuilder::limits`]) bounds what remotes can make a node hold:
//!
//! - **Connections**: an inbound connection without an authenticated gossip stream is
//!   *pending*; it is closed after `setup_timeout` (10 s), at most `max_pending_connections`
//!   (128) are held and `max_inbound_connections` (512) in all. A new connection over a cap
//!   evicts a pending one (from the address holding the most, the one that got least far,
//!   oldest first) or is refused. `accept` failures such as `EMFILE` back off (5 ms doubling
//!   to 1 s) and evict a pending connection instead of spinning.
//! - **Incomplete messages**: the gRPC length prefix of every message is read before its
//!   body is buffered: a message over `max_message_size` is refused there (the core's
//!   `Malformed`, counted `oversized`; an inbound sender gets an error status). Bytes of
//!   messages begun and not finished count against `max_incomplete_bytes` (128 MiB) node-wide,
//!   inbound and outbound streams alike; a stream that would pass it waits (flow control
//!   pushes back), and a message that makes no progress for `message_stall_timeout` (10 s)
//!   resets its stream. Bad framing (an unknown compression flag, a stream ending inside a
//!   message) is counted apart, in [`DriverStats::bad_framing`].
//!
//! **Memory ceiling** with the defaults: `max_incomplete_bytes` (128 MiB) and its 8 MiB
//! reserve, plus what HTTP/2 lets each connection have unread (at most
//! `flow_control_window`, 1 MiB; only streams the driver is not reading leave data
//! unread), plus the node's working set. Remotes that have not authenticated hold at most
//! `max_pending_connections` (128) such connections, 128 MiB: 264 MiB in all, plus the
//! working set (see `examples/hostile_memory.rs`, which runs 100 of them at once: 244 MiB).
//! Authenticated peers add up to a window each while the node is not reading them, and the
//! core's subscription queues count messages, not bytes, so many of them sending
//! maximum-size messages to a slow subscriber can hold `subscription_buffer` such messages
//! each.
//!
//! # Logs
//!
//! The driver emits [`tracing`] events and never prints: a `gossip_stream` span per stream
//! (stream handle, direction, remote address, and the PKI-ID once authenticated) with
//! `connected`, `disconnected` (reason and cause label), `handshake failed`; dial and Ping
//! failures; inbound connections evicted, refused or timed out; `accept` errors with their
//! back-off; oversized, stalled and badly framed messages.
#![forbid(unsafe_code)]

mod codec;
mod diagnose;
mod driver;
mod framed;
// The feature alone, not `cfg(fuzzing)`: cargo fuzz sets that cfg for every crate it builds.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod inbound;
mod layer;
pub mod malloc;
mod metered;
mod node;
mod readahead;
mod resolve;
mod service;
mod tls;

pub use codec::{RawCodec, RawDecoder, RawEncoder};
pub use diagnose::DialDiagnosis;
pub use driver::DriverStats;
/// The comm core this driver runs, so that the types its methods take and return
/// (`Config`, `SignedMessage`, `RemotePeer`, `PkiId`, `Error`, ...) can be named without a
/// second dependency kept at the same version.
pub use fabric_gossip_core;
pub use inbound::DriverLimits;
pub use layer::NodeSecurity;
pub use node::{
    DELIVERY_BATCH, Incoming, LAYER_EVENT_BUFFER, LayerEvents, Node, NodeBuilder,
    NotificationStream, OpError, Received, StartError,
};
pub use tls::{
    RecordCipher, TlsConfig, crypto_provider as tls_crypto_provider,
    crypto_provider_with as tls_crypto_provider_with,
};

/// A seed for one node's randomness (`Config::with_seed`, and a layer's, such as
/// `DiscoveryConfig::with_seed`), drawn from the operating system's randomness.
///
/// Why it exists: the core and its layers are deterministic so that the simulator can
/// replay a run from its seed, which means they cannot draw a seed themselves, and
/// `Config::default()` gives every node the same one (0), so two nodes would draw the same
/// SendWithAck nonces. A node on the real network takes its seed from here. Each call
/// gives another value (std's `RandomState`, keyed from the OS once per thread); it seeds
/// nonces, not keys, so it is not meant for cryptography.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The rustls this crate builds its TLS with, so that [`tls_crypto_provider`]'s type can be named
/// (and other endpoints configured alike) without a second, possibly different, rustls.
pub use tokio_rustls::rustls;

#[cfg(test)]
mod tests {
    #[test]
    fn each_node_gets_a_seed_of_its_own() {
        let seeds: std::collections::HashSet<u64> = (0..64).map(|_| super::random_seed()).collect();
        assert_eq!(seeds.len(), 64, "random_seed repeated itself");
        assert!(!seeds.contains(&0), "0 is Config::default()'s seed");
    }
}
