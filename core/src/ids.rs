//! Identifiers: PKI-IDs from the wire and typed handles the core hands out.

use bytes::Bytes;
use core::fmt;
use core::marker::PhantomData;

/// A peer's PKI-ID: the bytes Fabric derives from its identity (SHA-256 of MSP ID and
/// certificate for real identities; the endpoint string for Fabric's test provider).
///
/// Kept as `Bytes` so the ID taken from a received `ConnEstablish` shares the receive buffer.
/// Ordering is bytewise; the crossing-dial rule relies on it being the same on both sides.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PkiId(pub Bytes);

/// A PKI-ID as a hash-map key, held in place when it fits (Fabric's are 32-byte hashes;
/// the test provider's are short endpoints). A [`PkiId`] shares the receive buffer it was
/// cut from, so a map keyed by `PkiId` follows every stored key to a cold buffer on each
/// lookup; a map keyed by `PkiKey` compares the bytes in the table. It hashes and compares
/// as its bytes (like `PkiId`), so such a map is searched with `pki_id.as_bytes()` and
/// lays out its entries exactly as a map keyed by `PkiId` would.
#[derive(Clone, Debug)]
pub enum PkiKey {
    /// Up to [`PkiKey::INLINE`] bytes, zero-padded.
    Inline {
        /// How many of `bytes` are the PKI-ID.
        len: u8,
        /// The PKI-ID, then zeros.
        bytes: [u8; PkiKey::INLINE],
    },
    /// A longer PKI-ID.
    Heap(Bytes),
}

impl PkiKey {
    /// The longest PKI-ID held in place (a SHA-256 digest).
    pub const INLINE: usize = 32;

    /// The key of `pki_id`'s bytes.
    pub fn of(pki_id: &[u8]) -> PkiKey {
        match u8::try_from(pki_id.len()) {
            Ok(len) if pki_id.len() <= PkiKey::INLINE => {
                let mut bytes = [0; PkiKey::INLINE];
                bytes[..pki_id.len()].copy_from_slice(pki_id);
                PkiKey::Inline { len, bytes }
            }
            _ => PkiKey::Heap(Bytes::copy_from_slice(pki_id)),
        }
    }

    /// The PKI-ID's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            PkiKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            PkiKey::Heap(b) => b,
        }
    }

    /// The PKI-ID again (a copy of the bytes).
    pub fn to_pki_id(&self) -> PkiId {
        PkiId(Bytes::copy_from_slice(self.as_slice()))
    }
}

impl PartialEq for PkiKey {
    fn eq(&self, other: &PkiKey) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for PkiKey {}

impl core::hash::Hash for PkiKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl core::borrow::Borrow<[u8]> for PkiKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<&PkiId> for PkiKey {
    fn from(pki_id: &PkiId) -> PkiKey {
        PkiKey::of(pki_id.as_bytes())
    }
}

impl PkiId {
    /// Wraps bytes as a PKI-ID.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        PkiId(bytes.into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A PKI-ID written in hex, as logs, events and the CLI print an MSP's (Fabric's logs
    /// too): what to pass for one copied from them.
    pub fn from_hex(hex: &str) -> Result<Self, hex::FromHexError> {
        hex::decode(hex.trim()).map(PkiId::from)
    }

    /// `true` for the empty ID, which Fabric uses for "PKI-ID not known yet".
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The text's bytes, as the test provider's IDs (endpoints) are. A PKI-ID copied as hex
/// from a log or the CLI (an MSP's, 32 bytes) is [`PkiId::from_hex`]: through this it
/// would be its 64 characters' bytes, which prints the same and matches nothing.
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

crate::handle_type!(
    /// One gRPC `GossipStream`, inbound or outbound. Once authenticated it is also the
    /// handle of the connection it carries (what `respond`, `ack` and `close_conn` name).
    pub StreamId,
    "s"
);
crate::handle_type!(
    /// One client channel the core asked the driver to dial (Fabric's `grpc.ClientConn`).
    pub DialId,
    "d"
);
crate::handle_type!(
    /// A subscription created by `subscribe` (Fabric's `Accept`).
    pub SubscriptionId,
    "sub"
);
crate::handle_type!(
    /// An asynchronous operation (`probe`, `handshake`, `send_with_ack`) whose result
    /// arrives later as an event.
    pub OpId,
    "op"
);

/// A typed handle into a [`Slab`]: a slot index and the generation it was issued with.
/// The core's handles ([`StreamId`], [`DialId`], [`OpId`], [`SubscriptionId`]) are
/// handles; a driver may define its own with [`handle_type!`](crate::handle_type) to key
/// its own slabs.
pub trait Handle: Copy + Eq {
    /// Builds the handle of slot `index` at `generation`.
    fn from_parts(index: u32, generation: u32) -> Self;
    /// The slot index.
    fn index(self) -> u32;
    /// The slot's generation when the handle was issued.
    fn generation(self) -> u32;
}

/// Defines a typed, generation-checked handle type for a [`Slab`]: `Copy`, ordered,
/// hashable, printed as `<prefix><index>.<generation>`.
#[macro_export]
macro_rules! handle_type {
    ($(#[$doc:meta])* $vis:vis $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name {
            index: u32,
            generation: u32,
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

        impl $crate::Handle for $name {
            fn from_parts(index: u32, generation: u32) -> Self {
                Self { index, generation }
            }
            fn index(self) -> u32 {
                self.index
            }
            fn generation(self) -> u32 {
                self.generation
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, concat!($prefix, "{}.{}"), self.index, self.generation)
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(self, f)
            }
        }
    };
}

/// A slab keyed by typed, generation-checked handles: a handle is never silently reused
/// (a removed slot comes back with the next generation), so a stale handle finds nothing
/// instead of a newer object. Iteration is in slot order, so it is deterministic.
#[derive(Debug)]
pub struct Slab<K: Handle, T> {
    entries: Vec<SlabEntry<T>>,
    free: Vec<u32>,
    len: usize,
    _key: PhantomData<fn() -> K>,
}

#[derive(Debug)]
struct SlabEntry<T> {
    generation: u32,
    value: Option<T>,
}

impl<K: Handle, T> Default for Slab<K, T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
            _key: PhantomData,
        }
    }
}

impl<K: Handle, T> Slab<K, T> {
    /// Stores `value` and returns its new handle.
    pub fn insert(&mut self, value: T) -> K {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let e = &mut self.entries[index as usize];
            e.generation = e.generation.wrapping_add(1);
            e.value = Some(value);
            K::from_parts(index, e.generation)
        } else {
            let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
            self.entries.push(SlabEntry {
                generation: 0,
                value: Some(value),
            });
            K::from_parts(index, 0)
        }
    }

    /// The value of a live handle.
    pub fn get(&self, key: K) -> Option<&T> {
        let e = self.entries.get(key.index() as usize)?;
        if e.generation == key.generation() {
            e.value.as_ref()
        } else {
            None
        }
    }

    /// The value of a live handle, mutably.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        let e = self.entries.get_mut(key.index() as usize)?;
        if e.generation == key.generation() {
            e.value.as_mut()
        } else {
            None
        }
    }

    /// Whether `key` names a live value.
    pub fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Takes the value out; the handle is dead from now on.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let e = self.entries.get_mut(key.index() as usize)?;
        if e.generation != key.generation() {
            return None;
        }
        let v = e.value.take()?;
        self.free.push(key.index());
        self.len -= 1;
        Some(v)
    }

    /// Live values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a handle with this slot was ever issued (to tell "closed" from "never
    /// existed").
    pub fn ever_issued(&self, key: K) -> bool {
        (key.index() as usize) < self.entries.len()
    }

    /// Live entries in slot order (deterministic).
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.entries.iter().enumerate().filter_map(|(i, e)| {
            e.value
                .as_ref()
                .map(|v| (K::from_parts(i as u32, e.generation), v))
        })
    }

    /// Live entries in slot order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut T)> {
        self.entries.iter_mut().enumerate().filter_map(|(i, e)| {
            let generation = e.generation;
            e.value
                .as_mut()
                .map(|v| (K::from_parts(i as u32, generation), v))
        })
    }

    /// Live handles in slot order.
    pub fn keys(&self) -> Vec<K> {
        self.iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PKI-ID copied as hex from a log is the ID it names, not its characters' bytes
    /// (an embedder's `RemotePeer::new(ep, "8ec7…")` matched nothing, and the mismatch
    /// printed the two IDs alike).
    #[test]
    fn a_pki_id_printed_in_hex_parses_back_with_from_hex() {
        let id = PkiId::new((0u8..32).map(|b| b.wrapping_mul(37)).collect::<Vec<_>>());
        let printed = id.to_string();
        assert_eq!(printed.len(), 64);
        assert_eq!(PkiId::from_hex(&printed), Ok(id.clone()));
        assert_eq!(PkiId::from_hex(&format!(" {printed}\n")), Ok(id.clone()));
        assert_ne!(PkiId::from(printed.as_str()), id);
        assert!(PkiId::from_hex("0g").is_err());
        assert!(PkiId::from_hex("abc").is_err());
    }

    #[test]
    fn a_reused_slot_gets_a_new_generation_and_stale_handles_find_nothing() {
        let mut slab: Slab<StreamId, &str> = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        let c = slab.insert("c");
        assert_eq!(c.index(), a.index());
        assert_ne!(c.generation(), a.generation());
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.get(c), Some(&"c"));
        assert!(slab.ever_issued(a));
        assert!(
            !slab.ever_issued(StreamId::from_parts(2, 0)),
            "two slots so far"
        );
        assert!((slab.contains(c), slab.contains(a)) == (true, false));
        assert_eq!(slab.keys(), vec![c, b]);
        assert_eq!(slab.len(), 2);
        for (k, v) in slab.iter_mut() {
            *v = if k == c { "C" } else { "B" };
        }
        assert_eq!(slab.iter().map(|(_, v)| *v).collect::<Vec<_>>(), ["C", "B"]);
        assert!(!slab.is_empty());
        slab.remove(b);
        slab.remove(c);
        assert!(slab.is_empty());
    }

    #[test]
    fn a_pki_key_is_found_by_its_bytes_inline_or_not_and_hashes_like_the_pki_id() {
        use core::hash::BuildHasher;
        let hasher = foldhash::fast::FixedState::with_seed(7);
        let mut map: hashbrown::HashMap<PkiKey, usize, _> =
            hashbrown::HashMap::with_hasher(hasher.clone());
        // Lengths around the inline limit, and IDs that differ only by trailing zeros.
        let ids: Vec<PkiId> = (0..=40)
            .map(|n| PkiId::new(vec![0u8; n]))
            .chain((0..=40).map(|n| PkiId::new((0..n as u8).collect::<Vec<_>>())))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            map.entry(PkiKey::from(id)).or_insert(i);
            assert_eq!(hasher.hash_one(PkiKey::from(id)), hasher.hash_one(id));
        }
        for id in &ids {
            let key = map.get_key_value(id.as_bytes()).expect("found").0;
            assert_eq!(key.as_slice(), id.as_bytes());
            assert_eq!(&key.to_pki_id(), id);
            assert_eq!(
                matches!(key, PkiKey::Inline { .. }),
                id.as_bytes().len() <= PkiKey::INLINE
            );
        }
        assert_eq!(map.len(), 41 + 39, "[] and [0] are in both lists");
    }
}
