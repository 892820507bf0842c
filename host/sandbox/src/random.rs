//! Seeded randomness: every call's random bytes are a function of (run seed, call key).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use rand_core::TryRng;
use sha2::{Digest, Sha256};

/// xoshiro256** seeded from SHA-256 of its inputs. Not cryptographic, on purpose: a sandboxed tool's
/// randomness must be reproducible, and nothing in a tool call guards a secret.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: [u64; 4],
}

impl SeededRng {
    /// A generator for `stream` (e.g. "secure", "insecure") of the call identified by `seed` and `call_key`.
    pub fn new(seed: u64, call_key: &str, stream: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"sod-sandbox-rng-v1\0");
        hasher.update(seed.to_le_bytes());
        hasher.update((call_key.len() as u64).to_le_bytes());
        hasher.update(call_key.as_bytes());
        hasher.update(stream.as_bytes());
        let digest = hasher.finalize();
        let mut state = [0u64; 4];
        for (word, chunk) in state.iter_mut().zip(digest.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_le_bytes(bytes);
        }
        if state == [0; 4] {
            // xoshiro's one forbidden state; unreachable in practice but cheap to rule out.
            state[0] = 1;
        }
        SeededRng { state }
    }

    /// A 128-bit value for `wasi:random/insecure-seed`.
    pub fn seed128(seed: u64, call_key: &str) -> u128 {
        let mut rng = SeededRng::new(seed, call_key, "insecure-seed");
        (u128::from(rng.step()) << 64) | u128::from(rng.step())
    }

    fn step(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.step() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.step())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.step().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// A [`SeededRng`] behind a shared handle, so that a store built ahead of its call gets the call's stream once
/// the call is known ([`SharedRng::bind`]). Until then it yields a fixed placeholder stream and records that it
/// was read: an instance that read randomness before its call is never used for one.
#[derive(Debug, Clone)]
pub struct SharedRng {
    slot: Arc<Mutex<RngSlot>>,
}

#[derive(Debug)]
struct RngSlot {
    rng: SeededRng,
    bound: bool,
    read_unbound: bool,
}

impl SharedRng {
    /// A handle waiting for its call's stream.
    pub fn unbound() -> Self {
        SharedRng {
            slot: Arc::new(Mutex::new(RngSlot {
                rng: SeededRng::new(0, "", "unbound"),
                bound: false,
                read_unbound: false,
            })),
        }
    }

    /// Gives the handle its call's stream.
    pub fn bind(&self, rng: SeededRng) {
        let mut slot = self.lock();
        slot.rng = rng;
        slot.bound = true;
    }

    /// Whether anything was drawn before [`SharedRng::bind`].
    pub fn read_unbound(&self) -> bool {
        self.lock().read_unbound
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RngSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, draw: impl FnOnce(&mut SeededRng) -> R) -> R {
        let mut slot = self.lock();
        if !slot.bound {
            slot.read_unbound = true;
        }
        draw(&mut slot.rng)
    }
}

impl TryRng for SharedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.with(|rng| rng.try_next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.with(|rng| rng.try_next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.with(|rng| rng.try_fill_bytes(dst))
    }
}

/// The value of `wasi:random/insecure-seed` for one store, bound like [`SharedRng`]. The sandbox serves that
/// interface itself (shadowing wasmtime-wasi's, whose seed is fixed when the context is built).
#[derive(Debug, Clone, Default)]
pub(crate) struct InsecureSeed {
    value: u128,
    bound: bool,
    pub(crate) read_unbound: bool,
}

impl InsecureSeed {
    /// Gives the store its call's seed.
    pub(crate) fn bind(&mut self, seed: u64, call_key: &str) {
        self.value = SeededRng::seed128(seed, call_key);
        self.bound = true;
    }
}

/// Serves `wasi:random/insecure-seed` from the store's [`InsecureSeed`], shadowing wasmtime-wasi's (the linker
/// must allow shadowing).
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<crate::store::CallState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<
        crate::store::CallState,
        InsecureSeedHost,
    >(linker, |state| &mut state.insecure_seed)
}

/// Marker for [`wasmtime::component::HasData`]: the sandbox's `wasi:random/insecure-seed`.
struct InsecureSeedHost;

impl wasmtime::component::HasData for InsecureSeedHost {
    type Data<'a> = &'a mut InsecureSeed;
}

impl wasmtime_wasi::p2::bindings::random::insecure_seed::Host for InsecureSeed {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        if !self.bound {
            self.read_unbound = true;
        }
        // The same split as wasmtime-wasi's: low word first.
        Ok((self.value as u64, (self.value >> 64) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream_and_different_keys_differ() {
        let mut a = SeededRng::new(7, "call-1", "secure");
        let mut b = SeededRng::new(7, "call-1", "secure");
        let mut c = SeededRng::new(7, "call-2", "secure");
        let xs: Vec<u64> = (0..8).map(|_| a.step()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.step()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.step()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn a_shared_handle_bound_late_gives_the_call_stream_and_reports_early_reads() {
        let mut direct = SeededRng::new(7, "call-1", "secure");
        let mut late = SharedRng::unbound();
        late.bind(SeededRng::new(7, "call-1", "secure"));
        assert!(!late.read_unbound());
        let a: Vec<u64> = (0..4).map(|_| direct.step()).collect();
        let b: Vec<u64> = (0..4).map(|_| late.try_next_u64().unwrap()).collect();
        assert_eq!(a, b);
        let mut early = SharedRng::unbound();
        let _ = early.try_next_u32();
        assert!(early.read_unbound());
    }
}
