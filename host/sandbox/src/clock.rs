//! Virtual time: wall and monotonic clocks that only move when the guest reads or sleeps.
//!
//! A guest's `sleep` must neither block a host thread nor escape the fuel limit, and its idea of "now"
//! must not depend on the machine. Both clocks start at a fixed instant; every read advances time by one
//! tick (so time is strictly increasing and timing loops terminate), and a sleep advances it by the
//! requested duration and returns at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Nanoseconds each clock read advances virtual time.
pub const TICK_NANOS: u64 = 1_000;

/// Unix time (seconds) at which the virtual wall clock starts: 2024-01-01T00:00:00Z.
pub const EPOCH_UNIX_SECONDS: u64 = 1_704_067_200;

/// Shared virtual time of one call (or one session), in nanoseconds since its start.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    nanos: Arc<AtomicU64>,
}

impl VirtualClock {
    /// Reads the clock, advancing it by one tick.
    pub fn read(&self) -> u64 {
        self.nanos.fetch_add(TICK_NANOS, Ordering::Relaxed) + TICK_NANOS
    }

    /// Advances virtual time by `nanos` (a sleep).
    pub fn advance(&self, nanos: u64) {
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(nanos))
            });
    }

    /// The current virtual time without advancing it.
    pub fn peek(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        TICK_NANOS
    }

    fn now(&self) -> u64 {
        self.read()
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(TICK_NANOS)
    }

    fn now(&self) -> Duration {
        Duration::from_secs(EPOCH_UNIX_SECONDS) + Duration::from_nanos(self.read())
    }
}

/// Serves `wasi:clocks/monotonic-clock` from the store's virtual clock, shadowing wasmtime-wasi's (the linker must
/// allow shadowing).
pub(crate) fn add_to_linker(linker: &mut Linker<crate::store::CallState>) -> wasmtime::Result<()> {
    monotonic_clock::add_to_linker::<crate::store::CallState, VirtualMonotonicClock>(
        linker,
        crate::store::CallState::clock_view,
    )
}

/// Marker for [`HasData`]: the shadowing implementation of `wasi:clocks/monotonic-clock`.
struct VirtualMonotonicClock;

impl HasData for VirtualMonotonicClock {
    type Data<'a> = VirtualClockView<'a>;
}

/// What the shadowing implementation needs from the store: the clock and the resource table.
pub(crate) struct VirtualClockView<'a> {
    pub(crate) clock: &'a VirtualClock,
    pub(crate) table: &'a mut ResourceTable,
}

/// A pollable that is ready at once: sleeping has already advanced virtual time.
struct Elapsed;

#[wasmtime_wasi::async_trait]
impl Pollable for Elapsed {
    async fn ready(&mut self) {}
}

impl VirtualClockView<'_> {
    fn sleep(&mut self, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.clock.advance(nanos);
        let elapsed = self.table.push(Elapsed)?;
        subscribe(self.table, elapsed)
    }
}

impl monotonic_clock::Host for VirtualClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.read())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(TICK_NANOS)
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.clock.peek();
        self.sleep(when.saturating_sub(now))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.sleep(duration)
    }
}
