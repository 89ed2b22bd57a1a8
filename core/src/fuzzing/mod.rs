//! Fuzzing entry points, shared by the cargo-fuzz targets in `fuzz/` and by the corpus
//! replay test (`core/tests/fuzz_corpus.rs`), so that every input the fuzzers found
//! interesting is also an ordinary test on stable.
//!
//! Each entry point takes raw bytes and must not panic on any of them: a panic is either a
//! bug in the core or a failed `assert!` of an invariant, and both are findings. The
//! structured targets read their input one byte at a time through
//! [`arbitrary::Unstructured`] (missing bytes read as zero), which keeps the format stable
//! and lets [`encode_ops`] and [`encode_handshake`] write meaningful seeds.
//!
//! Compiled with the `fuzzing` feature only (the project's `fuzz/` crate turns it on), so a
//! downstream crate fuzzed with `--cfg fuzzing` still builds without `arbitrary`.

use crate::{
    AckError, Action, CertHash, Comm, Config, DialId, Error, Event, Instant, OpId, PkiId,
    RemotePeer, SignedMessage, Stats, StreamEnd, StreamId, SubscriptionId, TestOnlyHmacSecurity,
    TlsHashes, WriteKind, verify_envelope,
};
use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use core::time::Duration;
use fabric_gossip_proto::gossip::{
    Acknowledgement, Envelope, GossipMessage, SecretEnvelope, gossip_message,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod cast;
mod driver;
mod handshake;
mod input;
mod messages;
mod ops;

use self::{cast::*, driver::*};
pub use self::{handshake::*, input::*, messages::*, ops::*};

/// Keeps a committed corpus seed in step with the generator that made `bytes`, for the
/// seed tests of every crate: with `UPDATE_FUZZ_CORPUS` set in the environment it writes
/// `bytes` to `path` (making its folder); otherwise it tells whether `path` holds exactly
/// `bytes`, so that a test can list the stale seeds.
pub fn seed_in_step(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::env::var_os("UPDATE_FUZZ_CORPUS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        return Ok(true);
    }
    Ok(std::fs::read(path).ok().as_deref() == Some(bytes))
}

/// Runs every file of a target's corpus folder (`fuzz/corpus/<target>/`: seeds, and the
/// inputs of findings fixed) through `entry`, the target's entry point, for the corpus
/// replay tests of every crate: how many files there are, and those that panicked.
pub fn replay_corpus(
    dir: &std::path::Path,
    entry: fn(&[u8]),
) -> std::io::Result<(usize, Vec<std::path::PathBuf>)> {
    let mut files = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    files.sort();
    let mut failing = Vec::new();
    for path in &files {
        let data = std::fs::read(path)?;
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failing.push(path.clone());
        }
    }
    Ok((files.len(), failing))
}

/// [`seed_in_step`] over a generator's seeds, committed in `dir` as `seed-<name>`: the
/// paths of those that differ (none when `UPDATE_FUZZ_CORPUS` rewrote them).
pub fn stale_seeds<N: std::fmt::Display>(
    dir: &std::path::Path,
    seeds: impl IntoIterator<Item = (N, Vec<u8>)>,
) -> std::io::Result<Vec<String>> {
    let mut stale = Vec::new();
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        if !seed_in_step(&path, &bytes)? {
            stale.push(path.display().to_string());
        }
    }
    Ok(stale)
}

/// The corpus test of a crate's fuzz target: the seeds `seeds` are committed in `dir` as
/// generated (written there first under `UPDATE_FUZZ_CORPUS`), and every file of `dir`
/// passes `entry`. Panics with what to do otherwise; `package` names the crate in the command
/// that rewrites the seeds.
pub fn check_corpus<N: std::fmt::Display>(
    dir: &std::path::Path,
    entry: fn(&[u8]),
    seeds: Vec<(N, Vec<u8>)>,
    package: &str,
) {
    let count = seeds.len();
    let stale = stale_seeds(dir, seeds).expect("the corpus folder");
    assert!(
        stale.is_empty(),
        "seeds differ from the generator; run UPDATE_FUZZ_CORPUS=1 cargo test -p {package} \
         --test suite fuzz_corpus:: and commit: {stale:#?}"
    );
    let (files, failing) = replay_corpus(dir, entry).expect("the corpus folder");
    assert!(failing.is_empty(), "failing corpus inputs: {failing:#?}");
    assert!(files >= count, "{files} corpus files for {count} seeds");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_inputs_are_harmless() {
        envelope(&[]);
        gossip_message(&[]);
        handshake(&[]);
        core_ops(&[]);
    }

    #[test]
    fn ops_encode_as_they_read() {
        let ops = vec![
            Op::Accept { peer: 1, cert: 0 },
            Op::Garbage {
                stream: 0,
                bytes: vec![1, 2, 3],
            },
            Op::Advance { millis: 1234 },
            Op::Stop,
        ];
        let bytes = encode_ops(&OpsConfig([7; 12]), &ops);
        let mut i = Input(Unstructured::new(&bytes[12..]));
        let back: Vec<Op> = (0..ops.len()).map(|_| Op::read(&mut i)).collect();
        assert_eq!(back, ops);
        assert!(i.is_empty());
    }
}
