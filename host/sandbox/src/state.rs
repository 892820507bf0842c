//! What a store holds during a call: WASI context, resources, limits, virtual clock, the call's files, and the
//! handle that lets a composing tool call other tools.

use std::sync::Weak;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::clock::{VirtualClock, VirtualClockView};
use crate::limiter::MemoryLimiter;
use crate::limits::Limits;
use crate::pipe::CappedPipe;
use crate::random::{InsecureSeed, SeededRng, SharedRng};
use crate::sandbox::SandboxInner;
use crate::vfs::{Vfs, VfsCtxView};

/// Bytes of guest stderr kept for diagnostics (the tail of a panic message, a traceback).
const STDERR_CAPTURE_BYTES: usize = 16 << 10;

/// Identity of a call, for seeding and for deriving child calls' keys.
#[derive(Debug, Clone)]
pub(crate) struct CallIdentity {
    pub(crate) seed: u64,
    pub(crate) call_key: String,
    /// How deep this call is in a chain of tools calling tools (0 for a top-level call).
    pub(crate) depth: u32,
}

/// The data of one store.
pub(crate) struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) clock: VirtualClock,
    pub(crate) stderr: CappedPipe,
    stdout: CappedPipe,
    secure_random: SharedRng,
    insecure_random: SharedRng,
    /// `wasi:random/insecure-seed` (served by the sandbox, see [`InsecureSeed`]).
    pub(crate) insecure_seed: InsecureSeed,
    pub(crate) limits: Limits,
    pub(crate) identity: CallIdentity,
    /// Number of child calls made so far; part of each child's call key.
    pub(crate) child_calls: u64,
    /// The sandbox, for `sod:tool/sandbox.call-tool`. Weak: a store must not keep its sandbox alive.
    pub(crate) sandbox: Weak<SandboxInner>,
    /// The call's (or session's) files, served as `wasi:filesystem` with `/` as the one preopen.
    pub(crate) vfs: Vfs,
}

impl CallState {
    /// The state of a call made at once: [`CallState::ahead`] bound to the call straight away, so that both ways
    /// derive a call's randomness and limits in one place ([`CallState::bind`]).
    pub(crate) fn new(limits: Limits, identity: CallIdentity, sandbox: Weak<SandboxInner>) -> Self {
        let mut state = Self::ahead(limits, sandbox);
        // A state nothing has run in yet always binds.
        let bound = state.bind(limits, identity);
        debug_assert!(bound);
        state
    }

    /// A state for an instance made ahead of its call: randomness unbound, `limits` the most any call may have
    /// until [`CallState::bind`] gives it the call's.
    pub(crate) fn ahead(limits: Limits, sandbox: Weak<SandboxInner>) -> Self {
        let identity = CallIdentity {
            seed: 0,
            call_key: String::new(),
            depth: 0,
        };
        let (secure_random, insecure_random) = (SharedRng::unbound(), SharedRng::unbound());
        let clock = VirtualClock::default();
        let vfs = Vfs::new(limits.fs, clock.clone());
        // Guest stdout is diagnostics only (a tool's result is its return value): keep a bounded prefix.
        let stdout = CappedPipe::new(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        let stderr = CappedPipe::new(STDERR_CAPTURE_BYTES);
        let mut builder = WasiCtxBuilder::new();
        // Capabilities: captured stdio, virtual time, seeded randomness, and files in memory (served by
        // `crate::vfs`, not by a preopened host directory: the builder gets none). No environment, no
        // arguments, empty stdin, no network (the builder's default denies every address; TCP, UDP and name
        // lookup are switched off explicitly as well).
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .secure_random(secure_random.clone())
            .insecure_random(insecure_random.clone())
            .max_random_size(1 << 20)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        CallState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            clock,
            stderr,
            stdout,
            secure_random,
            insecure_random,
            insecure_seed: InsecureSeed::default(),
            limits,
            identity,
            child_calls: 0,
            sandbox,
            vfs,
        }
    }

    /// Gives a state made [`CallState::ahead`] its call's identity and limits. Returns false, changing
    /// nothing the call could see, if the instance already did something that depended on them (drew
    /// randomness, wrote output, allocated more memory than the call may use): the caller then makes a fresh
    /// instance, so that the outcome is the same as without the head start.
    pub(crate) fn bind(&mut self, limits: Limits, identity: CallIdentity) -> bool {
        let untouched = !self.secure_random.read_unbound()
            && !self.insecure_random.read_unbound()
            && !self.insecure_seed.read_unbound
            && self.stdout.is_untouched()
            && self.stderr.is_untouched()
            && !self.limiter.refused
            && self.vfs.is_pristine()
            && u64::try_from(self.limiter.in_use()).unwrap_or(u64::MAX) <= limits.memory_bytes;
        if !untouched {
            return false;
        }
        let stream = |name: &str| SeededRng::new(identity.seed, &identity.call_key, name);
        self.secure_random.bind(stream("secure"));
        self.insecure_random.bind(stream("insecure"));
        self.insecure_seed.bind(identity.seed, &identity.call_key);
        self.stdout
            .set_capacity(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        self.limiter.set_limit(limits.memory_bytes);
        self.vfs.set_limits(limits.fs);
        self.limits = limits;
        self.identity = identity;
        true
    }

    /// Gives a session's state its next call's limits.
    pub(crate) fn rearm(&mut self, limits: Limits) {
        self.limits = limits;
        self.limiter.set_limit(limits.memory_bytes);
        self.vfs.set_limits(limits.fs);
    }

    pub(crate) fn vfs_view(&mut self) -> VfsCtxView<'_> {
        VfsCtxView {
            vfs: &self.vfs,
            table: &mut self.table,
        }
    }

    pub(crate) fn clock_view(&mut self) -> VirtualClockView<'_> {
        VirtualClockView {
            clock: &self.clock,
            table: &mut self.table,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
