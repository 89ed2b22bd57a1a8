//! Tests of the `fabric-gossip` binary as users run it: the demo, errors for bad flags and
//! files, keygen output loaded by `node`, `node`'s JSON lines and commands, and `ping` /
//! `handshake` against a node started here. Every wait has a deadline; a process still
//! running at its deadline is killed and the test fails.
//!
//! One test binary: each module is a file in `tests/cli/`, by topic; `common` (running the
//! binary, reading a node's lines) and `fixtures` (what nodes are started with) hold the
//! helpers the others share. Run one module's tests with
//! `cargo test -p fabric-gossip-cli --test cli <module>::`. This file is `tests/cli/main.rs`,
//! which Cargo builds as the test binary `cli`, so its modules sit beside it.

mod channel;
mod common;
mod config;
mod demo;
mod expiry;
mod fixtures;
mod keygen;
mod lifecycle;
mod logging;
mod lookup;
mod membership;
mod msp;
mod node;
mod ops;
mod ping_handshake;
mod sim;
mod tls;
mod usage;
mod validate;
mod watch;
