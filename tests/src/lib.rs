//! Scenario suite written once and run on every transport.
