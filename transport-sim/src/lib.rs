//! Deterministic in-memory network simulator driving the unmodified comm core.
