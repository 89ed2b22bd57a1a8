//! Tests of the `fabric-gossip` binary as users run it: the demo, errors for bad flags and
//! files, keygen output loaded by `node`, `node`'s JSON lines and commands, and `ping` /
//! `handshake` against a node started here. Every wait has a deadline; a process still
//! running at its deadline is killed and the test fails.
//!
//! One test binary: each module is a file in `tests/cli/`, by topic; `common` (running the
//! binary, reading a node's lines) and `fixtures` (what nodes are started with) hold the
//! helpers the others share. Run one module's tests with
//! `cargo test -p fabric-gossip-cli --test cli <module>::`. Their files are given by
//! `#[path]`: a crate root's `mod` looks beside it, in `tests/`, where each file would be a
//! test binary of its own.

#[path = "cli/channel.rs"]
mod channel;
#[path = "cli/common.rs"]
mod common;
#[path = "cli/config.rs"]
mod config;
#[path = "cli/demo.rs"]
mod demo;
#[path = "cli/expiry.rs"]
mod expiry;
#[path = "cli/fixtures.rs"]
mod fixtures;
#[path = "cli/keygen.rs"]
mod keygen;
#[path = "cli/lifecycle.rs"]
mod lifecycle;
#[path = "cli/logging.rs"]
mod logging;
#[path = "cli/lookup.rs"]
mod lookup;
#[path = "cli/membership.rs"]
mod membership;
#[path = "cli/msp.rs"]
mod msp;
#[path = "cli/node.rs"]
mod node;
#[path = "cli/ops.rs"]
mod ops;
#[path = "cli/ping_handshake.rs"]
mod ping_handshake;
#[path = "cli/sim.rs"]
mod sim;
#[path = "cli/tls.rs"]
mod tls;
#[path = "cli/usage.rs"]
mod usage;
#[path = "cli/validate.rs"]
mod validate;
#[path = "cli/watch.rs"]
mod watch;
