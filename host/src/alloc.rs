//! Allocator tuning for tensor work, applied once when the `sod` binary starts.
//!
//! candle allocates a fresh buffer for every intermediate tensor. With glibc's defaults, buffers above the
//! (dynamic) mmap threshold are mapped and unmapped on every operation, and the heap top is trimmed back to the
//! kernel whenever 128 KiB are free: a training step then spends as much time in page faults and `munmap` as in
//! arithmetic (measured: 2.0 s per demo SFT step with the defaults, 1.27 s with the settings below, same losses;
//! see docs/benchmarks.md). Keeping freed memory in the process trades resident size for speed, which is the
//! right trade for a trainer. Other platforms keep their allocator's defaults.

/// Buffers up to this size come from the heap, not from fresh mappings (glibc's upper bound for the setting).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory at the heap top kept before trimming.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;
/// Extra memory requested each time the heap grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;

/// Applies the settings above (glibc only; elsewhere nothing). Environment variables (`MALLOC_*_`) set by the
/// user win: a setting they name is left alone.
pub fn tune_for_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (env, param, value) in [
        (
            "MALLOC_MMAP_THRESHOLD_",
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
        ),
        (
            "MALLOC_TRIM_THRESHOLD_",
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
        ),
        ("MALLOC_TOP_PAD_", libc::M_TOP_PAD, TOP_PAD),
    ] {
        if std::env::var_os(env).is_none() {
            // SAFETY: mallopt only changes allocator parameters; it is called before any other thread exists.
            unsafe {
                libc::mallopt(param, value);
            }
        }
    }
}
