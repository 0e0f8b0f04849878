//! Handing freed heap memory back to the system after a large structured
//! weight (issue 19: peak RSS ≤ largest tensor + 64 MiB on external data).
//!
//! glibc's malloc keeps what a structured weight's work freed — bands of `G`,
//! Householder matrices, sparse columns, faer's scratch — resident: after the
//! first large free its mmap threshold rises (up to 32 MiB), so later buffers
//! come from the per-thread arenas, whose free chunks are returned only when
//! they sit at the top of a heap. `malloc_trim(0)` walks every arena and
//! releases the whole free pages anywhere in it. Once per large weight, it
//! costs a walk of the free lists and the page faults of memory touched again;
//! a fixed low mmap threshold (`MALLOC_MMAP_THRESHOLD_`) instead makes every
//! buffer, faer's per-call scratch included, a fresh mapping (2.7× the wall
//! time on gpt_ext's orthogonal rewrite).

/// Below this many values a weight's work buffers are too small to matter.
pub(crate) const TRIM_MIN_VALUES: usize = 1 << 20;

/// Returns the heap's free pages to the system (glibc only; elsewhere the
/// allocator's own policy stands).
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes the arenas' locks and advises free
    // pages away; it touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
