//! The simulator's priority queue: a radix heap on virtual time in chunks of 65.5 µs
//! ([`CHUNK_BITS`]), over a small binary heap on (time, sequence number) for the chunk
//! being run.
//!
//! A binary heap over all waiting entries costs a dozen dependent, cache-missing compares
//! per pop once thousands wait (1,000 nodes). The run loop never schedules before the
//! time it last took (`Sim::schedule` clamps to `now`), so the keys it pops never
//! decrease: the case radix heaps are made for. Entries of later chunks wait in buckets
//! by the highest bit in which their chunk differs from the current one; once the current
//! chunk is used up, the lowest non-empty bucket moves down around its smallest chunk,
//! which becomes current. An entry moves at most once per bit of the spread of waiting
//! chunks (a few, not one per bit of nanoseconds), and the scans are over contiguous
//! vectors. The entries of the current chunk, a few dozen at most in a busy network, wait
//! in a binary heap, which orders them exactly.
//!
//! The order is exactly a binary heap's over every entry: the smallest time first, and
//! among equal times the smallest sequence number. Every entry of a later chunk has a
//! later time than every entry of the current one, and within the current one the heap
//! orders by (time, sequence). A seed therefore gives the same trace as it did with one
//! binary heap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One waiting entry: its time in nanoseconds, its sequence number and the event itself
/// (held here rather than in a side table, so that the step taking it reads memory the
/// queue has just touched instead of a slot written long before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry<T> {
    pub(crate) at: u64,
    pub(crate) seq: u64,
    pub(crate) ev: T,
}

/// An entry of the current chunk in the heap: its key and where its event waits (the
/// heap moves these 24 bytes, not the event), ordered (by time, then sequence, alone) so
/// that the max-heap pops the earliest first.
#[derive(Clone, Copy, Debug)]
struct Due {
    at: u64,
    seq: u64,
    slot: u32,
}

impl Due {
    fn key(&self) -> (u64, u64) {
        (self.at, self.seq)
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Due {}

/// Bits of a time below its chunk: chunks of 2^16 ns (65.5 µs), short beside a link's
/// latency, so the current chunk holds few entries (a few dozen at 1,000 nodes) and each
/// later one moves down a few buckets at most.
const CHUNK_BITS: u32 = 16;

/// Buckets: 0 for the current chunk (kept in the heap instead), `i` for chunks whose
/// highest bit differing from it is bit `i - 1` (a chunk has `64 - CHUNK_BITS` bits).
const BUCKETS: usize = 65 - CHUNK_BITS as usize;

/// A monotone priority queue of [`Entry`] ordered by (`at`, `seq`).
pub(crate) struct Timeline<T> {
    /// The time of the last entry popped: no push may be earlier.
    last: u64,
    /// The chunk (`at >> CHUNK_BITS`) whose entries wait in `current`.
    chunk: u64,
    /// Entries of the current chunk, by key.
    current: BinaryHeap<Due>,
    /// The events of the current chunk's entries, by slot: written when an entry joins
    /// the chunk, read when it leaves, a few microseconds of virtual time apart, so the
    /// slots are warm (free slots are reused last-freed first).
    slots: Vec<Option<T>>,
    /// Slots of `slots` free for reuse.
    free: Vec<u32>,
    /// Buckets 1.. (index 0 unused: `current` is bucket 0).
    buckets: Vec<Vec<Entry<T>>>,
    /// Bit `i` set when `buckets[i]` holds something.
    occupied: u64,
    len: usize,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline {
            last: 0,
            chunk: 0,
            current: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: 0,
            len: 0,
        }
    }
}

impl<T> Timeline<T> {
    fn bucket_of(&self, at: u64) -> usize {
        (u64::BITS - ((at >> CHUNK_BITS) ^ self.chunk).leading_zeros()) as usize
    }

    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every waiting event, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots
            .iter()
            .flatten()
            .chain(self.buckets.iter().flatten().map(|e| &e.ev))
    }

    /// Queues `e`. Its time must not be before the last popped (the caller clamps) and its
    /// sequence number must be larger than any pushed before; an earlier time is taken as
    /// the last popped, which keeps the queue consistent.
    pub(crate) fn push(&mut self, mut e: Entry<T>) {
        debug_assert!(
            e.at >= self.last,
            "a radix heap only takes times from the last on"
        );
        e.at = e.at.max(self.last);
        self.len += 1;
        self.place(e);
    }

    /// Puts `e` in the bucket its chunk gives it relative to the current chunk.
    fn place(&mut self, e: Entry<T>) {
        let b = self.bucket_of(e.at);
        if b == 0 {
            let slot = match self.free.pop() {
                Some(slot) => {
                    self.slots[slot as usize] = Some(e.ev);
                    slot
                }
                None => {
                    self.slots.push(Some(e.ev));
                    u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                }
            };
            self.current.push(Due {
                at: e.at,
                seq: e.seq,
                slot,
            });
        } else {
            self.buckets[b].push(e);
            self.occupied |= 1 << b;
        }
    }

    /// Takes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<Entry<T>> {
        self.pop_due(u64::MAX)
    }

    /// Takes the earliest entry if its time is at or before `deadline`. An entry not due
    /// stays where it is and the last time popped does not move, so entries may still be
    /// pushed at any time from it on (the run loop's clock may stop short of the next
    /// entry, at a deadline, and schedule from there).
    pub(crate) fn pop_due(&mut self, deadline: u64) -> Option<Entry<T>> {
        if self.current.is_empty() {
            if self.occupied == 0 {
                return None;
            }
            let b = self.occupied.trailing_zeros() as usize;
            let min = self.buckets[b].iter().map(|e| e.at).min()?;
            if min > deadline {
                return None;
            }
            self.refill(b, min >> CHUNK_BITS);
        }
        if self.current.peek()?.at > deadline {
            return None;
        }
        let due = self.current.pop()?;
        let ev = self.slots.get_mut(due.slot as usize)?.take()?;
        self.free.push(due.slot);
        self.last = due.at;
        self.len -= 1;
        Some(Entry {
            at: due.at,
            seq: due.seq,
            ev,
        })
    }

    /// Moves bucket `b`, whose smallest chunk is `chunk`, down around it: `chunk` becomes
    /// the current one and its entries fill the heap. Only called with an entry of that
    /// chunk due, which is popped next, so no push can come before the chunk.
    fn refill(&mut self, b: usize, chunk: u64) {
        let mut moving = core::mem::take(&mut self.buckets[b]);
        self.occupied &= !(1 << b);
        self.chunk = chunk;
        for e in moving.drain(..) {
            // Every entry of bucket `b` agrees with `chunk` above bit `b - 1`: it goes to
            // a lower bucket, never back to `b` (taken out meanwhile).
            self.place(e);
        }
        // Keep the emptied vector's room for the next entries of that bucket.
        self.buckets[b] = moving;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    fn entry(at: u64, seq: u64) -> Entry<u32> {
        Entry {
            at,
            seq,
            ev: u32::try_from(seq % 1000).unwrap_or(0),
        }
    }

    /// Random pushes (never before the last pop, often at the same time, sometimes far
    /// ahead) and pops, against a binary heap on (time, sequence).
    #[test]
    fn pops_in_the_order_of_a_binary_heap_on_time_then_sequence() {
        for seed in 0..50 {
            let mut rng = SimRng::new(seed);
            let mut t = Timeline::default();
            let mut heap = BinaryHeap::new();
            let (mut now, mut seq) = (1_700_000_000_000_000_000u64, 0u64);
            for _ in 0..5_000 {
                if rng.below(10) == 0 {
                    // The clock stops at a deadline short of the next entry, and something
                    // is scheduled from there.
                    let next = heap.peek().map_or(now + 10, |Reverse((at, _))| *at);
                    if next > now {
                        now += rng.below(next - now);
                        assert_eq!(t.pop_due(now), None, "seed {seed}: nothing is due yet");
                    }
                }
                if rng.below(3) > 0 {
                    seq += 1;
                    let at = match rng.below(4) {
                        0 => now,
                        1 => now + rng.below(1_000),
                        2 => now + rng.below(50_000_000),
                        _ => now + rng.below(u64::from(u32::MAX)) * 1_000,
                    };
                    t.push(entry(at, seq));
                    heap.push(Reverse((at, seq)));
                } else {
                    let want = heap.peek().map(|Reverse(k)| *k);
                    // A deadline just short of the earliest leaves it (and `last`) alone.
                    if let Some((at, _)) = want
                        && at > now
                    {
                        assert_eq!(t.pop_due(at - 1), None, "seed {seed}");
                    }
                    let want = heap.pop().map(|Reverse(k)| k);
                    let got = t.pop().map(|e| (e.at, e.seq));
                    assert_eq!(got, want, "seed {seed}");
                    if let Some((at, _)) = got {
                        now = at;
                    }
                }
                assert_eq!(t.len(), heap.len());
            }
            while let Some(Reverse(k)) = heap.pop() {
                assert_eq!(t.pop().map(|e| (e.at, e.seq)), Some(k), "seed {seed}");
            }
            assert!(t.is_empty() && t.pop().is_none());
        }
    }

    #[test]
    fn equal_times_come_out_in_sequence_order_even_after_moving_buckets() {
        let mut t = Timeline::default();
        // Pushed while `last` is 0: all land in one high bucket, out of sequence order
        // relative to a smaller time pushed last.
        for (at, seq) in [(100, 1), (100, 2), (7, 3), (100, 4)] {
            t.push(entry(at, seq));
        }
        assert_eq!(t.pop().map(|e| (e.at, e.seq)), Some((7, 3)));
        t.push(entry(100, 5));
        let order: Vec<_> = core::iter::from_fn(|| t.pop().map(|e| e.seq)).collect();
        assert_eq!(order, vec![1, 2, 4, 5]);
    }

    /// Two entries of the heap are equal when their keys are (time and sequence), wherever
    /// their events wait, as their order says (`Ord` and `Eq` must agree).
    #[test]
    fn heap_entries_are_equal_by_key_alone() {
        let due = |at, seq, slot| Due { at, seq, slot };
        assert_eq!(due(5, 1, 0), due(5, 1, 7));
        assert_eq!(due(5, 1, 0).cmp(&due(5, 1, 7)), Ordering::Equal);
        assert_ne!(due(5, 1, 0), due(5, 2, 0));
        assert_ne!(due(5, 1, 0), due(6, 1, 0));
    }

    /// An entry of the current chunk joins the heap; one of a later chunk waits in the
    /// bucket of the highest bit in which its chunk differs from the current one.
    #[test]
    fn later_chunks_wait_in_buckets_by_their_highest_differing_bit() {
        let mut t = Timeline::default();
        for (i, chunk) in [0u64, 1, 5, 4].into_iter().enumerate() {
            t.push(entry((chunk << CHUNK_BITS) + 3, i as u64 + 1));
        }
        assert_eq!(t.current.len(), 1, "chunk 0 is the current one");
        assert_eq!(t.buckets[1].len(), 1, "chunk 1: bit 0");
        assert_eq!(t.buckets[3].len(), 2, "chunks 5 and 4: bit 2");
        assert_eq!(t.occupied, 0b1010);
        assert_eq!(t.iter().count(), 4, "each waiting event is seen");
        let order: Vec<u64> = core::iter::from_fn(|| t.pop().map(|e| e.at >> CHUNK_BITS)).collect();
        assert_eq!(order, [0, 1, 4, 5]);
    }
}
