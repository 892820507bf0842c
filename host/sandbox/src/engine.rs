//! The engine and the linker: how wasmtime is configured for deterministic, bounded calls, which capabilities a
//! tool is linked against, and the thread that drives the wall-clock backstop.
//!
//! Each capability lives in its own module with its own `add_to_linker` (as in wasmtime's crates/wasi);
//! [`new_linker`] only decides the order and which of wasmtime-wasi's implementations are shadowed:
//!
//! | interface | served by |
//! |---|---|
//! | `wasi:cli`, `wasi:io`, `wasi:random/{random,insecure}`, `wasi:clocks/wall-clock`, `wasi:sockets` (denied) | wasmtime-wasi, over the store's [`crate::store::CallState`] |
//! | `wasi:clocks/monotonic-clock` | [`crate::clock`] (sleeps advance virtual time) |
//! | `wasi:random/insecure-seed` | [`crate::random`] (bound when the call comes, not when the context is built) |
//! | `wasi:filesystem/{types,preopens}` | [`crate::vfs`] (the call's files in memory) |
//! | `sod:tool/sandbox` | [`crate::compose`] (calling other tools) |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::error::SandboxError;
use crate::sandbox::SandboxConfig;
use crate::store::CallState;

/// How often the wall-clock backstop's epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine for `config`. Where `pagemap_keep_resident` is set and the kernel lacks `PAGEMAP_SCAN`, falls back
/// to the plain keep-resident setting.
pub(crate) fn new_engine(config: &SandboxConfig) -> Result<Engine, SandboxError> {
    let plain = || Engine::new(&engine_config(config, None));
    match config.pagemap_keep_resident {
        // A large keep-resident without the scan would memset every memory in full: fall back to the
        // plain setting where the kernel lacks the scan.
        Some(bytes) => Engine::new(&engine_config(config, Some(bytes))).or_else(|_| plain()),
        None => plain(),
    }
    .map_err(|e| SandboxError::Engine(format!("{e:#}")))
}

/// The engine's configuration; `pagemap_keep_resident` is `Some` to require `PAGEMAP_SCAN` (building the
/// engine then fails where the kernel lacks it).
fn engine_config(config: &SandboxConfig, pagemap_keep_resident: Option<usize>) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        // Fuel is the deterministic time limit; epochs are only the wall-clock backstop.
        .consume_fuel(true)
        .epoch_interruption(true)
        // Same bits on every machine: canonical NaNs and deterministic relaxed SIMD.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        .wasm_backtrace_max_frames(None)
        .memory_init_cow(true)
        .parallel_compilation(true);
    let keep_resident = pagemap_keep_resident.unwrap_or(config.memory_keep_resident);
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_instances.max(1);
    pool.total_component_instances(instances)
        // componentize-py components hold dozens of core instances.
        .max_core_instances_per_component(128)
        .total_core_instances(instances.saturating_mul(64))
        .max_memories_per_component(16)
        .total_memories(instances.saturating_mul(4))
        .max_tables_per_component(64)
        .total_tables(instances.saturating_mul(32))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .linear_memory_keep_resident(keep_resident)
        .table_keep_resident(keep_resident)
        .pagemap_scan(if pagemap_keep_resident.is_some() {
            Enabled::Yes
        } else {
            Enabled::No
        });
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm
}

/// The linker every tool is instantiated with (see the module docs for who serves what).
pub(crate) fn new_linker(engine: &Engine) -> Result<Linker<CallState>, SandboxError> {
    let link = || -> wasmtime::Result<Linker<CallState>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        linker.allow_shadowing(true);
        // Sleeps advance virtual time instead of blocking a host thread.
        crate::clock::add_to_linker(&mut linker)?;
        // A call's files live in memory, not in a host directory.
        crate::vfs::add_to_linker(&mut linker)?;
        // wasmtime-wasi fixes the insecure seed when the context is built, and an instance made ahead of its
        // call learns its seed later.
        crate::random::add_to_linker(&mut linker)?;
        linker.allow_shadowing(false);
        crate::compose::add_to_linker(&mut linker)?;
        Ok(linker)
    };
    link().map_err(|e| SandboxError::Engine(format!("{e:#}")))
}

/// Epoch ticks of a wall-clock backstop of `wall_ms` (at least one).
pub(crate) fn epoch_ticks(wall_ms: u64) -> u64 {
    wall_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1)
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until `stop` is set or the engine is gone.
pub(crate) fn spawn_epoch_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("sod-epoch".to_string())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(err) = spawned {
        // Without the ticker the backstop never fires; fuel still bounds every call.
        tracing::warn!("cannot start the wall-clock backstop thread: {err}");
    }
}
