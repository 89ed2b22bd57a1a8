//! An opt-in warm-up of glibc's allocator for processes that run nodes.
//!
//! A node's received bytes live in HTTP/2 read buffers of 8–128 KiB that h2 allocates on
//! the connection's thread, one after another, and frees once the last message read into
//! one is dropped. glibc gives the top of a heap back to the kernel as soon as more than its
//! trim threshold (128 KiB at start) lies free there, so in a fresh process a busy
//! connection returns those pages and faults new ones in, zeroed by the kernel, for the
//! next buffers: `alloc_count plain` took 70,000–285,000 page faults per 2 M messages and up
//! to twice the system time, `fabric-gossip node` as a sink 46,000–56,000 per 1 M messages,
//! and `bench_report --only plain` 28.6 per 1,000 messages at 0.99 µs of CPU each against
//! under 1 and 0.87 µs once warmed (README, "glibc's heap trimming").
//!
//! glibc stops doing so by itself once a block it mapped for one large allocation is freed:
//! it then serves allocations up to that block's size from its heaps and keeps twice that
//! much free at their tops (`mallopt(3)`, "dynamic mmap threshold"). Whether and when that
//! happens depends on what else the process did first, so the same node measured 15 %
//! apart depending on which benchmark ran before it. [`warm_glibc_malloc`] makes it happen
//! first. A library should not change its host's allocator unasked, so nothing in this
//! crate calls it: the `fabric-gossip` binary (first thing, whatever the command) and this
//! crate's benchmarks do.

/// The block [`warm_glibc_malloc`] allocates and frees: glibc then serves allocations up to
/// this size from its heaps, and keeps up to twice this much freed memory at each heap's
/// top.
pub const WARM_BLOCK: usize = 4 << 20;

/// Allocates and frees one [`WARM_BLOCK`], which raises glibc's allocator thresholds as its
/// dynamic rule does for a process that freed a 4 MiB block: up to 8 MiB of freed memory
/// is then kept at the top of each of its heaps (glibc makes one per thread, up to 8 per
/// core) instead of going back to the kernel and faulting back in for the next receive
/// buffers (see the module's documentation). Call it once, first thing in `main`.
///
/// It changes nothing where glibc is not the allocator, nor where its thresholds were set
/// explicitly (`mallopt`, or `GLIBC_TUNABLES=glibc.malloc.trim_threshold=…`): glibc adjusts
/// them dynamically only while neither was set, so an operator's choice stands.
///
/// ```
/// // First thing in `main`, before the runtime and the nodes allocate anything:
/// fabric_gossip_tonic::malloc::warm_glibc_malloc();
/// let rt = tokio::runtime::Runtime::new().expect("a runtime");
/// // rt.block_on(…): start nodes as usual.
/// # drop(rt);
/// ```
pub fn warm_glibc_malloc() {
    // Kept opaque, so that the compiler cannot leave out an allocation nobody reads.
    drop(std::hint::black_box(vec![0u8; WARM_BLOCK]));
}

#[cfg(test)]
mod tests {
    /// Minor page faults of this thread so far (`/proc/thread-self/stat`, field 10): the
    /// other tests of this binary run beside it.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn minor_faults() -> u64 {
        let stat =
            std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
        // The command name, field 2, is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
        after_name
            .split(' ')
            .nth(7)
            .and_then(|f| f.parse().ok())
            .expect("field 10")
    }

    /// Once warmed, buffers of 64 KiB (under the threshold at which glibc maps a block of
    /// its own) allocated, filled and freed together over and over come from the same heap
    /// memory. A cold glibc gives the 256 KiB freed at the heap's top back to the kernel
    /// each round, and faults 64 pages back in the next.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_warmed_allocator_keeps_freed_buffers() {
        super::warm_glibc_malloc();
        let before = minor_faults();
        for round in 0..200u8 {
            let bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![round; 64 << 10]).collect();
            drop(std::hint::black_box(bufs));
        }
        let faults = minor_faults() - before;
        assert!(faults < 2_000, "{faults} page faults over 200 rounds");
    }
}
