//! Seeded randomness: every call's random bytes are a function of (run seed, call key).

use std::convert::Infallible;

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
}
