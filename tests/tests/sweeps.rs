//! One test binary for the seed sweeps (10,000 seeds each in release): each file beside this one is a module of it,
//! so the crate's tests compile and link once instead of once per file (most of the
//! CI build's time was spent linking and optimising one binary per test file).
//! Run one file's tests with `cargo test -p <crate> --test sweeps <file>::`.

mod membership_sweep;
mod sweep;
