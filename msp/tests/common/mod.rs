// The core's in-memory harness (its `testing` feature), so the MSP provider is exercised
// through the core's public API; plus the test PKI.
#![allow(unused_imports, unreachable_pub, dead_code)]
pub use fabric_gossip_core::testing::*;

pub mod fabric;
pub mod pki;
