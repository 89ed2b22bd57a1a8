#!/usr/bin/env bash
# Checks that a crate depending on fabric-gossip-core builds and runs under `--cfg fuzzing`,
# which is how `cargo fuzz` (and afl, honggfuzz) compile every crate of a fuzz build. The
# core's own fuzz workspace enables the `fuzzing` feature; a user's does not, so this is
# the only check that sees what users see.
#
#   fuzz/downstream-check.sh
#   DOWNSTREAM_CARGO_FUZZ=1 fuzz/downstream-check.sh   # also cargo fuzz: nightly, minutes
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

# Optionally the real thing: cargo fuzz (nightly, sanitizers) on a fuzz crate of that crate,
# with the two entry points of fuzz/downstream/lib.rs as targets, each run a few seconds.
if [ "${DOWNSTREAM_CARGO_FUZZ:-0}" = 1 ]; then
    unset RUSTFLAGS # cargo fuzz sets its own, --cfg fuzzing among them
    mkdir -p fuzz/fuzz_targets
    cp "$repo/fuzz/Cargo.lock" fuzz/Cargo.lock
    cat >fuzz/Cargo.toml <<TOML
[package]
name = "downstream-fuzz"
version = "0.0.0"
edition = "2024"
publish = false

[package.metadata]
cargo-fuzz = true

[dependencies]
libfuzzer-sys = "0.4"
downstream = { path = ".." }

[[bin]]
name = "raw"
path = "fuzz_targets/raw.rs"
test = false

[[bin]]
name = "message"
path = "fuzz_targets/message.rs"
test = false

[workspace]
TOML
    for t in raw message; do
        printf '#![no_main]\nlibfuzzer_sys::fuzz_target!(|d: &[u8]| downstream::%s(d));\n' "$t" \
            >"fuzz/fuzz_targets/$t.rs"
    done
    fuzz=(cargo +nightly fuzz)
    rustup toolchain list 2>/dev/null | grep -q '^nightly' || fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    "${fuzz[@]}" build --dev --target-dir "$CARGO_TARGET_DIR/cargo-fuzz"
    for t in raw message; do
        if ! "${fuzz[@]}" run --dev --target-dir "$CARGO_TARGET_DIR/cargo-fuzz" "$t" -- \
            -max_total_time="${FUZZ_SECONDS:-10}" >"$scratch/$t.log" 2>&1; then
            tail -n 30 "$scratch/$t.log" >&2
            exit 1
        fi
        echo "$t: $(grep -E '^Done' "$scratch/$t.log")"
    done
    echo "downstream-check: cargo fuzz builds and runs a fuzz crate of it"
fi
