//! Identifiers: PKI-IDs from the wire and typed handles the core hands out.

use bytes::Bytes;
use core::fmt;

/// A peer's PKI-ID: the bytes Fabric derives from its identity (SHA-256 of MSP ID and
/// certificate for real identities; the endpoint string for Fabric's test provider).
///
/// Kept as `Bytes` so the ID taken from a received `ConnEstablish` shares the receive buffer.
/// Ordering is bytewise; the crossing-dial rule relies on it being the same on both sides.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PkiId(pub Bytes);

impl PkiId {
    /// Wraps bytes as a PKI-ID.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        PkiId(bytes.into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `true` for the empty ID, which Fabric uses for "PKI-ID not known yet".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for PkiId {
    fn from(s: &str) -> Self {
        PkiId(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Vec<u8>> for PkiId {
    fn from(v: Vec<u8>) -> Self {
        PkiId(Bytes::from(v))
    }
}

impl From<&[u8]> for PkiId {
    fn from(v: &[u8]) -> Self {
        PkiId(Bytes::copy_from_slice(v))
    }
}

impl fmt::Debug for PkiId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PkiId {
    /// Printable IDs (the test provider's endpoints) show as text, others as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() && self.0.iter().all(|b| b.is_ascii_graphic()) {
            // All bytes are printable ASCII, so this is valid UTF-8.
            f.write_str(core::str::from_utf8(&self.0).unwrap_or("?"))
        } else {
            for b in self.0.iter() {
                write!(f, "{b:02x}")?;
            }
            Ok(())
        }
    }
}

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name {
            pub(crate) index: u32,
            pub(crate) generation: u32,
        }

        impl $name {
            /// Slot index; unique among live handles of this type, reused after close.
            pub fn index(self) -> u32 {
                self.index
            }

            /// How many times the slot was reused; a stale handle differs here.
            pub fn generation(self) -> u32 {
                self.generation
            }

            /// Rebuilds a handle from its parts (for drivers that store handles as integers).
            pub fn from_parts(index: u32, generation: u32) -> Self {
                Self { index, generation }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}.{}"), self.index, self.generation)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

handle!(
    /// One gRPC `GossipStream`, inbound or outbound. Once authenticated it is also the
    /// handle of the connection it carries (what `respond`, `ack` and `close_conn` name).
    StreamId,
    "s"
);
handle!(
    /// One client channel the core asked the driver to dial (Fabric's `grpc.ClientConn`).
    DialId,
    "d"
);
handle!(
    /// A subscription created by `subscribe` (Fabric's `Accept`).
    SubscriptionId,
    "sub"
);
handle!(
    /// An asynchronous operation (`probe`, `handshake`, `send_with_ack`) whose result
    /// arrives later as an event.
    OpId,
    "op"
);

/// A slab that hands out generation-checked handles and never silently reuses one.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<SlabEntry<T>>,
    free: Vec<u32>,
    len: usize,
}

#[derive(Debug)]
struct SlabEntry<T> {
    generation: u32,
    value: Option<T>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Inserts and returns (index, generation).
    pub(crate) fn insert(&mut self, value: T) -> (u32, u32) {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.generation = e.generation.wrapping_add(1);
            e.value = Some(value);
            (index, e.generation)
        } else {
            let index = self.entries.len() as u32;
            self.entries.push(SlabEntry {
                generation: 0,
                value: Some(value),
            });
            (index, 0)
        }
    }

    pub(crate) fn get(&self, index: u32, generation: u32) -> Option<&T> {
        let e = self.entries.get(index as usize)?;
        if e.generation == generation {
            e.value.as_ref()
        } else {
            None
        }
    }

    pub(crate) fn get_mut(&mut self, index: u32, generation: u32) -> Option<&mut T> {
        let e = self.entries.get_mut(index as usize)?;
        if e.generation == generation {
            e.value.as_mut()
        } else {
            None
        }
    }

    pub(crate) fn remove(&mut self, index: u32, generation: u32) -> Option<T> {
        let e = self.entries.get_mut(index as usize)?;
        if e.generation != generation {
            return None;
        }
        let v = e.value.take()?;
        self.free.push(index);
        self.len -= 1;
        Some(v)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether a handle with this index was ever issued (to tell "closed" from "never existed").
    pub(crate) fn ever_issued(&self, index: u32) -> bool {
        (index as usize) < self.entries.len()
    }

    /// Live entries in slot order (deterministic).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u32, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.value.as_ref().map(|v| (i as u32, e.generation, v)))
    }
}
