//! Smoke test: two cores handshake and exchange a message over the in-memory harness.
use crate::common;
use common::*;
use fabric_gossip_core::*;

#[test]
fn two_nodes_handshake_and_exchange() {
    let mut net = Net::connected_pair(|_| Config::default(), b"hello");
    net.subscribe_all(0);
    net.send(1, 0, b"back");
    net.settle();
    assert_eq!(net.delivered_data(1), vec![b"hello".to_vec()]);
    assert_eq!(net.delivered_data(0), vec![b"back".to_vec()]);
    assert_eq!(net.nodes[0].comm.connections().len(), 1);
    assert_eq!(net.nodes[1].comm.connections().len(), 1);
}
