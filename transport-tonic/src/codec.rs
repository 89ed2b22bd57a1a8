//! A pass-through gRPC codec for `GossipStream`: frames travel as raw Envelope bytes.

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Bytes gathered into one HTTP/2 write before the encoder yields: large enough that a burst
/// of 1 KiB Envelopes leaves in one DATA frame (peers accept 64 KiB, `driver::MAX_FRAME`),
/// small enough to keep latency low. It stays a few KiB under [`ENCODE_BUFFER`] so that a
/// chunk of small Envelopes fits the buffer it started in.
const YIELD_THRESHOLD: usize = 60 * 1024;
/// Capacity of the encoder's buffer. After each chunk is split off, `bytes` allocates the next
/// buffer at this first capacity (it remembers up to 64 KiB): with tonic's 8 KiB default, every
/// 64 KiB chunk regrew 8 → 16 → 32 → 64 → 128 KiB, copying what it held each time, about 9 % of
/// the CPU per message in one-way runs (`bench_report`). An idle stream keeps at most one such
/// buffer, less than the 128 KiB the regrowth left behind.
const ENCODE_BUFFER: usize = 64 * 1024;

/// Moves Envelope bytes through gRPC framing untouched.
///
/// The core wants the bytes exactly as they arrived (signatures are checked over them and
/// forwarding must not re-encode, spec section 3), and it hands out already-encoded
/// Envelopes for writing. A prost codec would decode into a struct only for the core to
/// decode again, and re-encode on the way out; this codec does neither. Decoding splits the
/// frame off the receive buffer without copying.
///
/// Public for tools and tests that speak `GossipStream` byte for byte (a client sending
/// malformed Envelopes, an interop probe): use it with `tonic::client::Grpc::streaming` on
/// [`fabric_gossip_core::proto::GOSSIP_STREAM_PATH`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// [`RawCodec`]'s encoder: copies the bytes into the gRPC frame.
#[derive(Debug)]
pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER, YIELD_THRESHOLD)
    }
}

/// [`RawCodec`]'s decoder: splits the frame off the receive buffer.
#[derive(Debug)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(buffer_size, yield_threshold)` of `settings`, read from its `Debug` (the fields are
    /// private).
    fn sizes(settings: BufferSettings) -> (usize, usize) {
        let shown = format!("{settings:?}");
        let field = |name: &str| -> usize {
            let at = shown.find(name).unwrap_or_else(|| panic!("{shown}")) + name.len();
            shown[at..]
                .trim_start_matches([':', ' '])
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{shown}"))
        };
        (field("buffer_size"), field("yield_threshold"))
    }

    /// The encoder gathers more than tonic's default before it yields, into one write a
    /// peer takes as one HTTP/2 frame, and the chunk of 1 KiB Envelopes (each behind its
    /// 5-byte gRPC prefix) that crosses the threshold still fits the buffer it started in.
    #[test]
    fn a_chunk_of_small_envelopes_fits_the_encoders_buffer_and_a_peers_frame() {
        let (buffer, threshold) = sizes(RawEncoder.buffer_settings());
        let (_, tonic_default) = sizes(BufferSettings::default());
        assert!(threshold > tonic_default, "{threshold}");
        let crossing = threshold + 1024 + 5;
        assert!(crossing <= buffer, "{crossing} > {buffer}");
        assert!(crossing <= crate::driver::MAX_FRAME as usize, "{crossing}");
    }
}
