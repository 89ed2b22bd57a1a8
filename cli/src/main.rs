//! The `fabric-gossip` binary.
fn main() {}
