//! Allocator tuning for training loops on glibc.
//!
//! glibc serves every block over 32 MB (a batch-128 activation of 64×32×32 floats) with a fresh
//! `mmap` and returns it with `munmap` when freed, so each training step pays page faults and
//! kernel zeroing for every such buffer — the ops here allocate their outputs and gradients
//! with dfdx's `Vec`s, and this doubles the cost of elementwise ops at those sizes.

/// Keeps large blocks on the heap (`M_MMAP_MAX = 0`) and freed heap memory mapped
/// (`M_TRIM_THRESHOLD = 2³¹ − 1`), so steady-state steps reuse resident memory. Process-wide;
/// call once at start-up. Returns whether the settings were applied (false off glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_large_allocations() -> bool {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    // SAFETY: `mallopt` only changes glibc allocator parameters; both are valid settings.
    unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

/// Keeps large blocks on the heap; a no-op returning false outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_allocations() -> bool {
    false
}

/// The same settings for a child process (glibc reads them from the environment).
pub const KEEP_LARGE_ALLOCATIONS_ENV: [(&str, &str); 2] = [
    ("MALLOC_MMAP_MAX_", "0"),
    ("MALLOC_TRIM_THRESHOLD_", "2147483647"),
];
