//! The byte format of structured inputs, read and written.

use super::*;

/// Reads the fuzz input one byte at a time; missing bytes read as zero.
pub(super) struct Input<'a>(pub(super) Unstructured<'a>);

impl<'a> Input<'a> {
    pub(super) fn u8(&mut self) -> u8 {
        u8::arbitrary(&mut self.0).unwrap_or(0)
    }
    pub(super) fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    pub(super) fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    pub(super) fn blob(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.0.len());
        self.0.bytes(n).unwrap_or(&[])
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes seeds in the format [`Input`] reads.
#[derive(Default)]
pub(super) struct Output(pub(super) Vec<u8>);

impl Output {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// An op's tag and its one-byte fields, in order.
    pub(super) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    pub(super) fn blob(&mut self, b: &[u8]) {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        self.u16(b.len() as u16);
        self.0.extend_from_slice(b);
    }
}
