//! One test binary for the MSP provider's tests: each file beside this one is a module of it,
//! so the crate's tests compile and link once instead of once per file (most of the
//! CI build's time was spent linking and optimising one binary per test file).
//! Run one file's tests with `cargo test -p <crate> --test suite <file>::`.

mod channel;
mod common;
mod fabric_capture;
mod fuzz_corpus;
mod handshake;
mod high_s;
mod high_s_root;
mod loading;
mod node_ous;
mod provider;
mod revocation;
