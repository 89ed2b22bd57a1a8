//! Hyperledger Fabric's gossip wire protocol: the protobuf messages and, optionally, the
//! `gossip.Gossip` gRPC service.
//!
//! Every other crate of the project speaks to Fabric peers through these types, so they must
//! encode exactly as Fabric does. The `.proto` files under `protos/` were written from the
//! project's wire contract (field numbers and names as Fabric has them) and are compiled at
//! build time with `protox` and `prost-build`; no system `protoc` is involved. The vectors in
//! `tests/fixtures/`, produced by Fabric's own Go code, check that every message decodes and
//! re-encodes to the same bytes.
//!
//! # Modules
//!
//! - [`gossip`]: the gossip messages ([`gossip::Envelope`], [`gossip::GossipMessage`] and its
//!   contents) and, with the `grpc` feature, the service.
//! - [`msp`]: [`msp::SerializedIdentity`], the form a real Fabric identity takes on the wire.
//! - [`protos`]: the private data collection configuration that
//!   [`gossip::PrivatePayload::collection_configs`] carries. Policies in it are kept as opaque
//!   encoded bytes, which round-trip exactly.
//!
//! # Zero-copy decoding
//!
//! Every protobuf `bytes` field is a [`bytes::Bytes`]. Decoding from a `Bytes` buffer (for
//! example `Envelope::decode(frame)` where `frame: Bytes`) makes those fields slices of the
//! input that share its allocation instead of copies, so a block received once can be kept,
//! verified and forwarded to many peers without copying it. Decoding from a `&[u8]` copies.
//!
//! Note that re-encoding a decoded message is not guaranteed to reproduce the received bytes
//! (unknown fields are dropped, for one). Signatures are verified over the Envelope payload as
//! received, and forwarding sends the received Envelope; see the spec, section 3.
//!
//! # Features
//!
//! - `grpc` (off by default): generates the tonic client and server for `gossip.Gossip`:
//!   `gossip::gossip_client::GossipClient`, and `gossip::gossip_server::GossipServer` serving
//!   an implementation of the `gossip::gossip_server::Gossip` trait. The generated code is independent of tonic's
//!   transport: pick one (for instance tonic's `transport` feature) in the crate that does IO.
//!   Without this feature the crate depends on neither tonic nor tokio, which lets the sans-IO
//!   core use it.
//! - `arbitrary` (off by default): `arbitrary::Arbitrary` for every message, enum and oneof,
//!   so that fuzzers and property tests of code built on these types can draw well-formed
//!   messages instead of hoping random bytes decode. Every value drawn encodes and decodes
//!   back to itself (`tests/arbitrary.rs`).

mod decode_cost;
pub use decode_cost::gossip_message_decode_bound;

/// Re-exported so that users encode and decode with the same `bytes` this crate was built with.
pub use bytes;
/// Re-exported so that users encode and decode with the same `prost` this crate was built with.
pub use prost;

/// The `gossip` protobuf package: what travels on a gossip stream.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod gossip {
    include!(concat!(env!("OUT_DIR"), "/gossip.rs"));
}

/// The `msp` protobuf package: the serialized identity of a Fabric member.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod msp {
    include!(concat!(env!("OUT_DIR"), "/msp.rs"));
}

/// The part of Fabric's `protos` package that gossip carries: private data collection
/// configurations.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod protos {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}

#[cfg(feature = "arbitrary")]
mod arbitrary_impls;
mod content;

pub use content::ContentKind;

/// Largest message a Fabric peer accepts or sends on its gRPC server by default (peer
/// `maxRecvMsgSize` / `maxSendMsgSize`, 100 MiB). Configure transports with it so that a peer
/// that interoperates with Fabric neither refuses what Fabric may send nor sends what Fabric
/// would refuse.
pub const MAX_MESSAGE_SIZE: usize = 100 * 1024 * 1024;

/// Fully qualified name of the gossip gRPC service, as it appears in request paths.
pub const SERVICE_NAME: &str = "gossip.Gossip";

/// gRPC path of the bidirectional stream carrying Envelopes; needed by code that routes or
/// inspects requests without the generated service (for instance a hand-written transport).
pub const GOSSIP_STREAM_PATH: &str = "/gossip.Gossip/GossipStream";

/// gRPC path of the unary liveness probe that precedes every stream.
pub const PING_PATH: &str = "/gossip.Gossip/Ping";

#[cfg(test)]
mod tests {
    /// The limit is Fabric's, not a round number of ours: a peer's default receive and send
    /// sizes are 100 MiB (104,857,600 bytes), and other crates' refusals name that figure.
    #[test]
    fn the_message_limit_is_fabrics_default_of_100_mib() {
        assert_eq!(super::MAX_MESSAGE_SIZE, 104_857_600);
    }
}
