//! A call's store: what it holds ([`CallState`]: WASI context, resources, limits, virtual clock, seeded
//! randomness, the call's files, the handle that lets a composing tool call other tools), how it is made
//! ([`new_store`]), and the one function that gives it a call's limits and identity ([`bind`]).
//!
//! Lifecycle of a store (state changes hands at each arrow; every arrow into "bound" is [`bind`]):
//!
//! ```text
//!  new_store (unbound: no seed, no fuel)
//!     |                         \
//!     | bind(Start)              \ bind(Ahead)  -- crate::ahead: the most any call may have
//!     v                           v
//!  bound to one call        made ahead, instantiated, waiting in its tool's slot
//!     |                           |
//!     |                           | bind(Start)  (refused if the instance did anything the call governs:
//!     |                           |               the store is dropped and a fresh one made instead)
//!     +<--------------------------+
//!     v
//!  run (crate::sandbox::run_call) -> crate::classify::finish -> Outcome
//!     |
//!     +-- stateless call: dropped (`SandboxInner::drop_later` in crate::ahead, off the caller's path)
//!     +-- session: kept in its slot (crate::session); its next call: bind(Continue) -> run ...
//!         released by release_session, idle or LRU eviction, or a trap (the next call starts fresh)
//! ```
//!
//! Binding in one place is what keeps the ways a call can start equal: fuel, the wall-clock backstop, the
//! memory limiter, the file quotas and the stdout cap are set here for a fresh instance, an instance made ahead,
//! a session's next call and a composing tool's child call alike.

use std::sync::Weak;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::clock::{VirtualClock, VirtualClockView};
use crate::engine::epoch_ticks;
use crate::limiter::MemoryLimiter;
use crate::limits::Limits;
use crate::pipe::CappedPipe;
use crate::random::{InsecureSeed, SeededRng, SharedRng};
use crate::sandbox::SandboxInner;
use crate::vfs::{self, Vfs, VfsCtxView};

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
    /// The fuel [`bind`] last gave the store: what it has left tells how much the instance spent since
    /// (instantiating an instance made ahead, which the call that takes it is charged for).
    armed_fuel: u64,
}

impl CallState {
    /// A state nothing has run in: randomness unbound, `limits` the most its instance may use until [`bind`]
    /// gives it a call's.
    fn new(limits: Limits, sandbox: Weak<SandboxInner>) -> Self {
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
            armed_fuel: 0,
        }
    }

    /// Whether the instance did nothing that depends on a call's identity or limits yet (drew randomness, wrote
    /// output, created files, allocated more memory than `limits` allow).
    fn untouched(&self, limits: &Limits) -> bool {
        !self.secure_random.read_unbound()
            && !self.insecure_random.read_unbound()
            && !self.insecure_seed.read_unbound
            && self.stdout.is_untouched()
            && self.stderr.is_untouched()
            && !self.limiter.refused
            && self.vfs.is_pristine()
            && u64::try_from(self.limiter.in_use()).unwrap_or(u64::MAX) <= limits.memory_bytes
    }

    /// The part of [`bind`] every binding shares: the limits the state enforces itself.
    fn set_limits(&mut self, limits: Limits) {
        self.stdout
            .set_capacity(usize::try_from(limits.output_bytes).unwrap_or(usize::MAX));
        self.limiter.set_limit(limits.memory_bytes);
        self.vfs.set_limits(limits.fs);
        self.limits = limits;
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

/// A store nothing has run in, unbound: [`bind`] gives it fuel and a call before anything runs in it.
/// `ceiling` sizes what the state holds before binding (its file quotas, stdout cap, memory limit).
pub(crate) fn new_store(
    engine: &Engine,
    ceiling: Limits,
    sandbox: Weak<SandboxInner>,
) -> Store<CallState> {
    let mut store = Store::new(engine, CallState::new(ceiling, sandbox));
    store.limiter(|s| &mut s.limiter);
    // Filesystem work is charged as fuel each time the guest resumes.
    store.call_hook(vfs::charge_hook);
    store
}

/// A store for one call made at the call: [`new_store`] bound to the call straight away.
pub(crate) fn store_for_call(
    engine: &Engine,
    limits: Limits,
    identity: CallIdentity,
    sandbox: Weak<SandboxInner>,
) -> Store<CallState> {
    let mut store = new_store(engine, limits, sandbox);
    // A store nothing has run in always binds.
    let bound = bind(&mut store, &limits, Binding::Start(identity));
    debug_assert!(bound);
    store
}

/// What [`bind`] binds the store to, besides the limits.
pub(crate) enum Binding {
    /// A store to be instantiated ahead of its call: the ceiling limits only, no identity (randomness stays
    /// unbound, so an instance that draws from it before its call is found out and set aside).
    Ahead,
    /// A call starting on this store's instance (made at the call or ahead of it): the call's identity. The fuel
    /// the instance spent since it was last bound (its instantiation, for one made ahead) is charged to the call,
    /// as a fresh instantiation would be.
    Start(CallIdentity),
    /// A session's next call: the instance keeps its identity and randomness streams, as its state continues.
    Continue,
}

/// Gives `store` a call's `limits` (fuel, wall-clock backstop, memory, file quotas, output cap) and, for a call
/// that starts on it, the call's identity. The one place a store is bound, whichever way the call came (see the
/// module docs).
///
/// Returns false, changing nothing the call could see, when a [`Binding::Start`] store's instance already did
/// something that depended on its call (drew randomness, wrote output, made files, used more memory or fuel
/// than the call may): the caller then makes a fresh instance, so that the outcome is the same as without the
/// head start. Other bindings always bind.
pub(crate) fn bind(store: &mut Store<CallState>, limits: &Limits, binding: Binding) -> bool {
    // Fuel is enabled on every engine of the sandbox, so reading and setting it cannot fail.
    let left = store.get_fuel().unwrap_or(0);
    let state = store.data_mut();
    let fuel = match binding {
        Binding::Ahead => limits.fuel,
        Binding::Start(identity) => {
            let spent = state.armed_fuel.saturating_sub(left);
            if spent > limits.fuel || !state.untouched(limits) {
                return false;
            }
            let stream = |name: &str| SeededRng::new(identity.seed, &identity.call_key, name);
            state.secure_random.bind(stream("secure"));
            state.insecure_random.bind(stream("insecure"));
            state.insecure_seed.bind(identity.seed, &identity.call_key);
            state.identity = identity;
            limits.fuel - spent
        }
        Binding::Continue => limits.fuel,
    };
    state.set_limits(*limits);
    state.armed_fuel = fuel;
    let _ = store.set_fuel(fuel);
    store.set_epoch_deadline(epoch_ticks(limits.wall_ms));
    true
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;
    use wasmtime_wasi::p2::OutputStream;

    use super::*;
    use crate::vfs::FsLimits;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        Engine::new(&config).expect("engine")
    }

    fn identity(call_key: &str) -> CallIdentity {
        CallIdentity {
            seed: 7,
            call_key: call_key.to_string(),
            depth: 0,
        }
    }

    fn limits(scale: u64) -> Limits {
        Limits {
            fuel: 1_000_000 * scale,
            memory_bytes: (1 << 20) * scale,
            output_bytes: 100 * scale,
            wall_ms: 1_000,
            fs: FsLimits {
                max_nodes: 10 * scale,
                ..FsLimits::default()
            },
        }
    }

    /// What a bound store enforces, read back through the same paths the guest and `finish` use.
    fn enforced(store: &mut Store<CallState>) -> (u64, bool, bool, u64, usize, Limits) {
        let fuel = store.get_fuel().unwrap();
        let state = store.data_mut();
        let limit = state.limits;
        let memory = usize::try_from(limit.memory_bytes).unwrap();
        // One byte past the limit is refused, exactly the limit is allowed (the probe is the test's last use of
        // the limiter).
        let past_limit = state.limiter.memory_growing(0, memory + 1, None).unwrap();
        let at_limit = state.limiter.memory_growing(0, memory, None).unwrap();
        let nodes = state.vfs.lock().limits().max_nodes;
        let mut stdout = state.stdout.clone();
        let before = stdout.contents().0.len();
        stdout.write(vec![b'x'; 1 << 16].into()).unwrap();
        let kept = stdout.contents().0.len() - before;
        (fuel, at_limit, past_limit, nodes, kept, limit)
    }

    /// Every way a call starts (a fresh store, a store made ahead, a session's next call) enforces the call's
    /// limits alike: fuel, memory, file quotas and the stdout cap. A session's next call used to skip the stdout
    /// cap (its limits bypassed the binding).
    #[test]
    fn every_binding_enforces_the_calls_limits() {
        let engine = engine();
        let call = limits(1);

        let mut fresh = new_store(&engine, call, Weak::new());
        assert!(bind(&mut fresh, &call, Binding::Start(identity("fresh"))));

        let ceiling = limits(100);
        let mut ahead = new_store(&engine, ceiling, Weak::new());
        bind(&mut ahead, &ceiling, Binding::Ahead);
        // As if instantiating the instance had spent some fuel: the call that takes it is charged for it.
        ahead.set_fuel(ceiling.fuel - 500).unwrap();
        assert!(bind(&mut ahead, &call, Binding::Start(identity("ahead"))));

        let mut session = store_for_call(&engine, limits(50), identity("session"), Weak::new());
        // The session's first call wrote a little output under its larger cap.
        let mut stdout = session.data().stdout.clone();
        stdout.write(vec![b'y'; 10].into()).unwrap();
        assert!(bind(&mut session, &call, Binding::Continue));
        assert_eq!(session.data().identity.call_key, "session");

        let (fuel, at_limit, past_limit, nodes, fresh_kept, bound) = enforced(&mut fresh);
        assert_eq!(fuel, call.fuel);
        assert!(at_limit && !past_limit);
        assert_eq!(nodes, call.fs.max_nodes);
        assert_eq!(fresh_kept, 100);
        assert_eq!(bound, call);

        let (fuel, at_limit, past_limit, nodes, kept, bound) = enforced(&mut ahead);
        assert_eq!(fuel, call.fuel - 500);
        assert!(at_limit && !past_limit);
        assert_eq!((nodes, kept, bound), (call.fs.max_nodes, 100, call));

        let (fuel, at_limit, past_limit, nodes, kept, bound) = enforced(&mut session);
        assert_eq!(fuel, call.fuel);
        assert!(at_limit && !past_limit);
        assert_eq!(nodes, call.fs.max_nodes);
        // What the first call wrote stays; the next call adds only up to its own cap.
        assert_eq!(kept, 90, "a session's next call must bind its output cap");
        assert_eq!(bound, call);
    }

    /// A store made ahead whose instance already did what its call governs is refused, changing nothing.
    #[test]
    fn a_touched_store_made_ahead_is_refused() {
        let engine = engine();
        let call = limits(1);
        let ceiling = limits(100);
        let mut spent_too_much = new_store(&engine, ceiling, Weak::new());
        bind(&mut spent_too_much, &ceiling, Binding::Ahead);
        spent_too_much
            .set_fuel(ceiling.fuel - call.fuel - 1)
            .unwrap();
        assert!(!bind(
            &mut spent_too_much,
            &call,
            Binding::Start(identity("a"))
        ));
        let mut wrote = new_store(&engine, ceiling, Weak::new());
        bind(&mut wrote, &ceiling, Binding::Ahead);
        let mut stdout = wrote.data().stdout.clone();
        stdout.write(vec![b'z'; 1].into()).unwrap();
        assert!(!bind(&mut wrote, &call, Binding::Start(identity("b"))));
        assert_eq!(wrote.data().limits, ceiling);
        assert_eq!(wrote.data().identity.call_key, "");
    }
}
