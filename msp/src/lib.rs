//! X.509 ECDSA MSP security provider for real Fabric identities.
