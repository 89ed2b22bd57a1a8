//! One test binary for the membership layer's integration tests: each file beside this one is a module of it,
//! so the crate's tests compile and link once instead of once per file (most of the
//! CI build's time was spent linking and optimising one binary per test file).
//! Run one file's tests with `cargo test -p <crate> --test suite <file>::`.

mod certstore;
mod common;
mod fabric_vector;
mod fuzz_corpus;
mod membership;
mod msp;
mod stack;
mod sweep;
