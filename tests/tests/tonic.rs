//! Every scenario of the suite over real loopback gRPC (the tonic transport), in plaintext
//! and with mutual TLS. Under mutual TLS every node uses TLS; scenarios that need raw
//! streams are skipped there (a raw client cannot present a certificate by hash); scenarios
//! that inject network faults (partitions) are skipped on both; nothing else is.

use fabric_gossip_tests::{Harness, Outcome, Pass, TonicHarness, scenarios};

fn run(name: &str, scenario: fn(&mut TonicHarness) -> Outcome, mut h: TonicHarness) {
    match scenario(&mut h) {
        Ok(Pass::Done) => {}
        Ok(Pass::Skipped(what)) => {
            assert!(
                (h.name().contains("TLS") && what == "raw streams") || what == "fault injection",
                "{name}: {} must support {what}",
                h.name()
            );
            println!("{name}: skipped on {} (needs {what})", h.name());
        }
        Err(e) => panic!("{name} failed on {}:\n{e}\n{}", h.name(), h.dump()),
    }
}

macro_rules! tonic_test {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[test]
            fn plaintext() {
                run(
                    stringify!($name),
                    scenarios::$name::<TonicHarness>,
                    TonicHarness::plaintext(),
                );
            }

            #[test]
            fn mutual_tls() {
                run(
                    stringify!($name),
                    scenarios::$name::<TonicHarness>,
                    TonicHarness::mutual_tls(),
                );
            }
        }
    };
}

fabric_gossip_tests::for_each_scenario!(tonic_test);
