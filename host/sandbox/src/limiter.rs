//! Memory limits that the guest can see: a refused `memory.grow` returns -1 to the guest (so CPython
//! raises `MemoryError`) instead of trapping, and the host remembers the refusal to report `memory_limit`.

use wasmtime::ResourceLimiter;

/// Caps the total linear memory of one store and records whether a grow was refused.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit_bytes: usize,
    /// Bytes currently allocated across all memories of the store.
    in_use: usize,
    /// Set once a grow was refused: the call's outcome becomes `memory_limit`.
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit_bytes: u64) -> Self {
        MemoryLimiter {
            limit_bytes: usize::try_from(limit_bytes).unwrap_or(usize::MAX),
            in_use: 0,
            refused: false,
        }
    }

    /// Bytes allocated so far across the store's memories.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }

    pub(crate) fn set_limit(&mut self, limit_bytes: u64) {
        self.limit_bytes = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let within_max = maximum.is_none_or(|max| desired <= max);
        if within_max && self.in_use.saturating_add(growth) <= self.limit_bytes {
            self.in_use += growth;
            Ok(true)
        } else {
            self.refused = true;
            Ok(false)
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real tool.
        Ok(desired <= 1_000_000 && maximum.is_none_or(|max| desired <= max))
    }
}
