//! How `bytes` fields are drawn for `arbitrary::Arbitrary` (feature `arbitrary`).
//!
//! `bytes::Bytes` has no `Arbitrary` of its own, so `build.rs` points every `bytes` field
//! of the generated messages at one of these, by the field's shape. They draw exactly what
//! a `Vec<u8>` would, so the input format is the one fuzzers already know.

use crate::protos::{application_policy, collection_policy_config};
use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

/// A `bytes` field.
pub(crate) fn single(u: &mut Unstructured<'_>) -> Result<Bytes> {
    Ok(Bytes::from(Vec::<u8>::arbitrary(u)?))
}

/// A `repeated bytes` field.
pub(crate) fn repeated(u: &mut Unstructured<'_>) -> Result<Vec<Bytes>> {
    u.arbitrary_iter::<Vec<u8>>()?
        .map(|v| v.map(Bytes::from))
        .collect()
}

/// An `optional bytes` field (proto3 `optional`).
#[allow(dead_code)] // no such field today; kept so that build.rs covers every shape
pub(crate) fn optional(u: &mut Unstructured<'_>) -> Result<Option<Bytes>> {
    Ok(Option::<Vec<u8>>::arbitrary(u)?.map(Bytes::from))
}

// The oneofs with a `bytes` member (see build.rs): one impl each, drawing a variant, then
// its value. A new such oneof fails to compile with the feature on until it is added here.

impl<'a> Arbitrary<'a> for collection_policy_config::Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Self::SignaturePolicy(single(u)?))
    }
}

impl<'a> Arbitrary<'a> for application_policy::Type {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(if u.arbitrary()? {
            Self::SignaturePolicy(single(u)?)
        } else {
            Self::ChannelConfigPolicyReference(u.arbitrary()?)
        })
    }
}
