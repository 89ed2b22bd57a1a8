#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fabric_gossip_sim::fuzzing::sim_schedule(data));
