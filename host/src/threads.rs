//! Kernel thread counts, fixed once when the `sod` binary starts, before any other thread exists.
//!
//! candle's CPU backend runs element-wise operations on one process-wide pool of spinning worker threads
//! (`candle_core::utils::barrier_pool`, sized by `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the
//! cores) behind one lock, and each matrix product asks `get_num_threads()` (`RAYON_NUM_THREADS`, else the
//! cores, read from `/proc` on every call) how many pieces to split into. Measured on the demo (2-core VM,
//! docs/demo.md): two jobs side by side in one process with that pool took 4.2 s per on-policy step each;
//! with one kernel thread per job they take about what two single-threaded processes take, 1.6 s each, and
//! one job on both cores is only ~9% faster than on one. So a process that runs several jobs at once (the
//! demo's `--jobs`) computes each on its own thread, and any other command uses the available cores. Variables
//! the user set win.

/// Sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` where unset: to `kernel_threads`, or to the available
/// cores when it is `None`.
///
/// Must run before any other thread exists (it changes the environment).
pub fn configure(kernel_threads: Option<usize>) {
    let n = kernel_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
        .to_string();
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called from `main` before any thread is spawned, so nothing reads the environment
            // concurrently.
            unsafe { std::env::set_var(var, &n) };
        }
    }
}
