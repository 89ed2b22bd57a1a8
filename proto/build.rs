//! Compiles the `.proto` files under `protos/` into Rust at build time.
//!
//! The descriptors come from `protox`, a protobuf compiler written in Rust, so neither
//! developers nor CI need a system `protoc`. Code generation is `prost-build`'s, with tonic's
//! service generator added when the `grpc` feature is on.

use std::io;
use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "gossip/message.proto",
    "msp/identities.proto",
    "peer/collection.proto",
];

fn main() -> io::Result<()> {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let proto_dir = root.join("protos");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }

    let fds = protox::compile(PROTO_FILES, [&proto_dir]).map_err(io::Error::other)?;

    let mut config = prost_build::Config::new();
    // Every `bytes` field becomes `bytes::Bytes`: decoding from a `Bytes` buffer then slices
    // that buffer instead of copying, which matters for blocks and private data.
    config.bytes(["."]);

    // Without `grpc`, only messages: the sans-IO core must not see tonic.
    #[cfg(not(feature = "grpc"))]
    config.compile_fds(fds)?;

    // No transport-specific code (`connect`): the client works over any tonic channel, and
    // which transport to use is the driver's choice, not this crate's.
    #[cfg(feature = "grpc")]
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds_with_config(fds, config)?;

    Ok(())
}
