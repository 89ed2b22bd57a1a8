// The in-memory harness lives in the core (`testing` feature) so every crate's tests share it.
#![allow(unused_imports, unreachable_pub)]
pub use fabric_gossip_core::testing::*;

pub mod one_core;
