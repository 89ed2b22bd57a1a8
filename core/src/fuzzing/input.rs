//! The byte format of structured inputs, read and written: public, so that the fuzz
//! targets of the layers above the core (`fabric-gossip-discovery`'s `membership`) read and
//! write their seeds in the same format.

use super::*;

/// Reads the fuzz input one byte at a time; missing bytes read as zero, so every input is
/// a valid one and a truncated seed still means what its prefix said.
pub struct Input<'a>(pub(super) Unstructured<'a>);

impl<'a> Input<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Input(Unstructured::new(data))
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        u8::arbitrary(&mut self.0).unwrap_or(0)
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    /// One byte's low bit.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A length ([`Input::u16`]) and at most that many bytes.
    pub fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.0.len());
        self.0.bytes(n).unwrap_or(&[])
    }
    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes seeds in the format [`Input`] reads.
#[derive(Default)]
pub struct Output(pub(super) Vec<u8>);

impl Output {
    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// An op's tag and its one-byte fields, in order.
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// Two bytes, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// A flag as one byte.
    pub fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    /// A length and the bytes (at most `u16::MAX` of them), as [`Input::blob`] reads.
    pub fn blob(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
}
