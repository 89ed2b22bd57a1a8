#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fabric_gossip_tonic::fuzzing::grpc_framing(data));
