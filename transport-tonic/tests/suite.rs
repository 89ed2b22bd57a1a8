//! One test binary for the tonic driver's loopback tests: each file beside this one is a module of it,
//! so the crate's tests compile and link once instead of once per file (most of the
//! CI build's time was spent linking and optimising one binary per test file).
//! Run one file's tests with `cargo test -p <crate> --test suite <file>::`.

mod acks;
mod advertise;
mod backpressure;
mod basic;
mod closing;
mod common;
mod crossing;
mod dial_timeout;
mod fuzz_corpus;
mod hostile;
mod membership;
mod ops;
mod refusal;
mod tls;
