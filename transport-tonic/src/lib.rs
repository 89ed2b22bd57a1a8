//! Real gRPC transport (tonic, tokio, mutual TLS) driving the comm core.
