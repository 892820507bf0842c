//! Per-call resource limits.

use serde::{Deserialize, Serialize};

use crate::vfs::FsLimits;

/// Limits of one call. Fuel is the deterministic time limit: it counts executed wasm instructions,
/// so the same call ends the same way on any machine and under any load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Fuel units the call may consume (roughly one per wasm instruction).
    pub fuel: u64,
    /// Bytes of linear memory (summed over the tool's memories) the call may use.
    pub memory_bytes: u64,
    /// Bytes of output kept; past it the outcome is `output_truncated`.
    pub output_bytes: u64,
    /// Wall-clock backstop in milliseconds. Exceeding it is an `infra_fault`, never a model error:
    /// fuel is the real limit, this only protects the host from a sandbox bug or a stalled machine.
    pub wall_ms: u64,
    /// The call's file quotas (bytes, files and directories, names, open handles); its files live in host
    /// memory, apart from `memory_bytes`. Left out of the serialised form while at their defaults.
    #[serde(skip_serializing_if = "FsLimits::is_default")]
    pub fs: FsLimits,
}

impl Limits {
    /// Fuel per second of compute for CPython-on-wasm on a 2-core x86_64 machine of 2026 (measured).
    /// Used only to translate user-facing seconds into fuel at a fixed, documented rate.
    pub const FUEL_PER_SECOND: u64 = 5_000_000_000;

    /// Fuel equivalent to `seconds` of compute at the fixed rate [`Limits::FUEL_PER_SECOND`].
    pub fn fuel_for_seconds(seconds: f64) -> u64 {
        if !seconds.is_finite() || seconds <= 0.0 {
            return 0;
        }
        let fuel = seconds * Self::FUEL_PER_SECOND as f64;
        if fuel >= u64::MAX as f64 {
            u64::MAX
        } else {
            fuel as u64
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            memory_bytes: 512 << 20,
            output_bytes: 64 << 10,
            wall_ms: 60_000,
            fs: FsLimits::default(),
        }
    }
}
