//! Tunes glibc's allocator for a long-running server with a few busy threads.
//!
//! glibc keeps one heap arena per thread that ever allocated (up to 8 per core),
//! and raises its mmap threshold each time a large block is freed, after which big
//! buffers (uploads, decoded photos, marked copies) come from those arenas and stay
//! there as fragmentation. Measured over the 183-photo service bench: about 70 MiB
//! of peak RSS went to that, and neither mimalloc nor the arena cap alone cost
//! throughput (docs/operations.md, memory tuning).

/// Arenas to keep: one per worker thread doing real work on a small machine.
const ARENA_MAX: i32 = 2;
/// Blocks at least this large are mapped on their own and returned at free.
const MMAP_THRESHOLD: i32 = 1 << 20;

/// Applies the settings unless the user chose them through glibc's own variables.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let chosen = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only changes allocator parameters; it is called before
        // any other thread exists, so no allocation races with the change.
        unsafe {
            if !chosen("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
            }
            if !chosen("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}
