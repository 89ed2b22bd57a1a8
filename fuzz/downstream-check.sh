#!/usr/bin/env bash
# Checks that a crate depending on fabric-gossip-core builds and runs under `--cfg fuzzing`,
# which is how `cargo fuzz` (and afl, honggfuzz) compile every crate of a fuzz build. The
# core's own fuzz workspace enables the `fuzzing` feature; a user's does not, so this is
# the only check that sees what users see.
#
#   fuzz/downstream-check.sh
#
# The crate (fuzz/downstream/lib.rs) is copied to a scratch directory outside the workspace
# and depends on core, proto (with its `arbitrary` feature) and the simulator by path. It
# builds on stable; its tests inject bytes into an established connection. Its own target
# directory (DOWNSTREAM_TARGET_DIR, default target/downstream-check) keeps the `--cfg fuzzing`
# artifacts apart from the main build's, whose flags differ.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/src"
cp "$repo/fuzz/downstream/lib.rs" "$scratch/src/lib.rs"
# The workspace's lock file, so the check uses the versions the project is tested with.
cp "$repo/Cargo.lock" "$scratch/Cargo.lock"
cat >"$scratch/Cargo.toml" <<TOML
[package]
name = "downstream"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
fabric-gossip-core = { path = "$repo/core" }
fabric-gossip-proto = { path = "$repo/proto", features = ["arbitrary"] }
fabric-gossip-sim = { path = "$repo/transport-sim" }
arbitrary = "1"

[lints.rust]
unexpected_cfgs = { level = "warn", check-cfg = ["cfg(fuzzing)"] }

[workspace]
TOML

export CARGO_TARGET_DIR="${DOWNSTREAM_TARGET_DIR:-$repo/target/downstream-check}"
export RUSTFLAGS="--cfg fuzzing"
cd "$scratch"
cargo build --quiet
cargo test --quiet
echo "downstream-check: a crate depending on fabric-gossip-core builds and passes under --cfg fuzzing"
