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
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("wire_schema.rs"), wire_schema(&fds))?;

    let mut config = prost_build::Config::new();
    // Every `bytes` field becomes `bytes::Bytes`: decoding from a `Bytes` buffer then slices
    // that buffer instead of copying, which matters for blocks and private data.
    config.bytes(["."]);
    arbitrary_attributes(&mut config, &fds);

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

/// `arbitrary::Arbitrary` for every message, enum and oneof, behind the crate's `arbitrary`
/// feature. The attributes are written whether or not the feature is on (`cfg_attr`), so the
/// generated code does not depend on it.
///
/// `Bytes` has no `Arbitrary` of its own: each `bytes` field names a function of
/// `src/arbitrary_impls.rs` for its shape. A oneof member cannot carry such an attribute (prost
/// gives it no place), so a oneof with a `bytes` member gets no derive here and is
/// implemented by hand in `src/arbitrary_impls.rs` instead.
fn arbitrary_attributes(config: &mut prost_build::Config, fds: &prost_types::FileDescriptorSet) {
    use prost_types::field_descriptor_proto::{Label, Type};
    const DERIVE: &str = "#[cfg_attr(feature = \"arbitrary\", derive(arbitrary::Arbitrary))]";
    // Structs only: a type attribute on a message would also reach its oneofs.
    config.message_attribute(".", DERIVE);

    fn walk(config: &mut prost_build::Config, scope: &str, msg: &prost_types::DescriptorProto) {
        let name = format!("{scope}.{}", msg.name());
        let mut oneof_has_bytes = vec![false; msg.oneof_decl.len()];
        for f in &msg.field {
            if f.r#type() != Type::Bytes {
                continue;
            }
            // (A proto3 `optional` field is a synthetic oneof of its own: a plain field here.)
            if let Some(i) = f.oneof_index.filter(|_| !f.proto3_optional()) {
                oneof_has_bytes[i as usize] = true;
                continue;
            }
            let with = if f.label() == Label::Repeated {
                "repeated"
            } else if f.proto3_optional() {
                "optional"
            } else {
                "single"
            };
            config.field_attribute(
                format!("{name}.{}", f.name()),
                format!(
                    "#[cfg_attr(feature = \"arbitrary\", arbitrary(with = crate::arbitrary_impls::{with}))]"
                ),
            );
        }
        for (oneof, has_bytes) in msg.oneof_decl.iter().zip(oneof_has_bytes) {
            if !has_bytes {
                config.enum_attribute(format!("{name}.{}", oneof.name()), DERIVE);
            }
        }
        for e in &msg.enum_type {
            config.enum_attribute(format!("{name}.{}", e.name()), DERIVE);
        }
        for nested in &msg.nested_type {
            walk(config, &name, nested);
        }
    }
    for file in &fds.file {
        let scope = format!(".{}", file.package());
        for e in &file.enum_type {
            config.enum_attribute(format!("{scope}.{}", e.name()), DERIVE);
        }
        for msg in &file.message_type {
            walk(config, &scope, msg);
        }
    }
}

/// The shape of every message, as `src/decode_cost.rs` walks it: for each message (in the
/// order of `MESSAGES`), its fields' numbers, whether each is repeated, and whether it is a
/// message (which one), `bytes`/`string`, or a scalar.
fn wire_schema(fds: &prost_types::FileDescriptorSet) -> String {
    use prost_types::field_descriptor_proto::{Label, Type};
    use std::fmt::Write as _;
    fn collect<'a>(
        scope: &str,
        msg: &'a prost_types::DescriptorProto,
        out: &mut Vec<(String, &'a prost_types::DescriptorProto)>,
    ) {
        let name = format!("{scope}.{}", msg.name());
        out.push((name.clone(), msg));
        for nested in &msg.nested_type {
            collect(&name, nested, out);
        }
    }
    let mut msgs = Vec::new();
    for file in &fds.file {
        let scope = format!(".{}", file.package());
        for msg in &file.message_type {
            collect(&scope, msg, &mut msgs);
        }
    }
    let index: std::collections::HashMap<&str, usize> = msgs
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let mut s = String::from(
        "/// Generated by build.rs from the `.proto` files.\npub(crate) static MESSAGES: &[&[Field]] = &[\n",
    );
    for (name, msg) in &msgs {
        let _ = writeln!(s, "    // {name}");
        s.push_str("    &[\n");
        for f in &msg.field {
            let kind = match f.r#type() {
                Type::Message => format!("Kind::Message({})", index[f.type_name()]),
                Type::String => "Kind::String".to_owned(),
                Type::Bytes => "Kind::Bytes".to_owned(),
                _ => "Kind::Scalar".to_owned(),
            };
            let _ = writeln!(
                s,
                "        Field {{ number: {}, repeated: {}, kind: {kind} }},",
                f.number(),
                f.label() == Label::Repeated
            );
        }
        s.push_str("    ],\n");
    }
    s.push_str("];\n");
    let _ = writeln!(
        s,
        "/// `.gossip.GossipMessage` in `MESSAGES`.\npub(crate) const GOSSIP_MESSAGE: usize = {};",
        index[".gossip.GossipMessage"]
    );
    s
}
