//! Keeping the allocator's footprint close to what the model really holds.
//!
//! glibc gives each thread that allocates concurrently an arena of its own (up to eight per
//! core) and keeps freed memory inside the arena it came from. Loading converts weights a few
//! megabytes at a time on one thread; inference then allocates its activations on compute-pool
//! threads. Left alone, each side keeps its own high-water mark resident, which on a 2-core
//! board is a hundred megabytes for nothing.

/// Caps the number of malloc arenas at two: one for the loading thread, one shared by the
/// compute threads, whose allocations are few and large, so they hardly contend for it.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tuning value; an unsupported value is ignored.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the heap pages freed so far (the weight-conversion buffers of a load) to the system.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
