//! One test binary for the core's integration tests: each file beside this one is a module of it,
//! so the crate's tests compile and link once instead of once per file (most of the
//! CI build's time was spent linking and optimising one binary per test file).
//! Run one file's tests with `cargo test -p <crate> --test suite <file>::`.
//!
//! `tracing.rs` is a binary of its own: see there why.

mod common;
mod crossing_queues;
mod dial_retry;
mod fuzz_corpus;
mod handshake;
mod hostile;
mod pauses;
mod properties;
mod smoke;
mod store;
