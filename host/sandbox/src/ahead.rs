//! Instances made ahead (`SandboxConfig::instances_ahead`): while a stateless call runs, a background thread
//! makes the next fresh instance of its tool, and drops finished stores (resetting their memories) off the
//! caller's path.
//!
//! What changes hands: the background thread instantiates a store bound with [`Binding::Ahead`] (ceiling limits,
//! no identity) and puts it in its tool's [`AheadSlot`]; the next stateless call of that tool takes it out and
//! binds it with [`Binding::Start`]. Binding refuses an instance that did anything its call governs before the
//! call came (drew randomness, wrote output, made files, used more fuel or memory than the call may): the call
//! then runs on a fresh instance as if there had been none, so outcomes are the same either way. A finished
//! store goes back to the thread to be dropped ([`SandboxInner::drop_later`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::Store;

use crate::bindings::CompositeTool;
use crate::classify::finish;
use crate::limits::Limits;
use crate::outcome::Outcome;
use crate::registry::Tool;
use crate::sandbox::{Call, SandboxInner, run_call};
use crate::store::{Binding, CallIdentity, CallState, bind, new_store};

/// Fuel an instance made ahead may spend on instantiation (a call's limit is applied when it takes it).
const AHEAD_FUEL: u64 = u64::MAX >> 2;

/// Most finished stores waiting for the background thread.
const MAX_PENDING_DROPS: usize = 2;

/// A fresh instance made ahead of its call, with its store not yet bound to a call.
pub(crate) struct Ahead {
    store: Store<CallState>,
    instance: CompositeTool,
}

/// A tool's instance made ahead, if one is waiting. Only the background thread fills it; calls empty it.
#[derive(Default)]
pub(crate) struct AheadSlot(Mutex<Option<Ahead>>);

impl AheadSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Ahead>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Work for the background thread.
enum AheadJob {
    /// Make an instance of the tool unless one is waiting already.
    Make(Tool),
    /// Drop a finished call's store (resetting its memories) off the caller's path.
    Drop(Box<Store<CallState>>),
}

/// The background thread's queue and what it did, per sandbox.
#[derive(Default)]
pub(crate) struct AheadPool {
    /// The background thread's queue, started on first use.
    jobs: Mutex<Option<Sender<AheadJob>>>,
    /// Stores queued for dropping and not dropped yet: past [`MAX_PENDING_DROPS`] callers drop their own, so
    /// that finished instances never pile up in the instance pool.
    pending_drops: Arc<AtomicUsize>,
    /// Calls that ran on an instance made ahead.
    used: AtomicU64,
    /// Instances made ahead that a call could not use (it got a fresh one).
    set_aside: AtomicU64,
}

impl AheadPool {
    /// Calls that ran on an instance made ahead, and instances made ahead that a call could not use.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.used.load(Ordering::Relaxed),
            self.set_aside.load(Ordering::Relaxed),
        )
    }
}

impl SandboxInner {
    /// Runs a stateless call on `tool`'s instance made ahead if one is waiting and can serve it exactly as a fresh
    /// one would, and asks for the next call's instance. `None`: the caller makes a fresh instance.
    pub(crate) async fn call_on_ahead(
        self: &Arc<Self>,
        tool: &Tool,
        call: &Call<'_>,
        identity: &CallIdentity,
    ) -> Option<Outcome> {
        let ahead = tool.inner.ahead.lock().take();
        // Make the next call's instance while this one runs.
        self.queue_ahead(AheadJob::Make(tool.clone()));
        let Ahead {
            mut store,
            instance,
        } = ahead?;
        if !bind(&mut store, &call.limits, Binding::Start(identity.clone())) {
            self.ahead.set_aside.fetch_add(1, Ordering::Relaxed);
            self.drop_later(store);
            return None;
        }
        let result = run_call(&instance, &mut store, call).await;
        let outcome = finish(tool, &mut store, call, result);
        self.drop_later(store);
        self.ahead.used.fetch_add(1, Ordering::Relaxed);
        Some(outcome)
    }

    /// Makes an instance of `tool` ahead of its call.
    async fn make_ahead(self: &Arc<Self>, tool: &Tool) -> Option<Ahead> {
        let ceiling = Limits {
            fuel: AHEAD_FUEL,
            memory_bytes: self.config.max_memory_bytes,
            ..self.config.default_limits
        };
        let mut store = new_store(&self.engine, ceiling, Arc::downgrade(self));
        bind(&mut store, &ceiling, Binding::Ahead);
        let instance = tool.inner.pre.instantiate_async(&mut store).await.ok()?;
        Some(Ahead { store, instance })
    }

    /// Drops a finished store on the background thread when there is one (its memories are reset then).
    pub(crate) fn drop_later(self: &Arc<Self>, store: Store<CallState>) {
        if !self.config.instances_ahead
            || self.ahead.pending_drops.load(Ordering::Relaxed) >= MAX_PENDING_DROPS
        {
            return;
        }
        self.ahead.pending_drops.fetch_add(1, Ordering::Relaxed);
        self.queue_ahead(AheadJob::Drop(Box::new(store)));
    }

    /// Hands `job` to the background thread, starting it on first use. If the thread cannot be started the
    /// job is done here (a drop) or skipped (an instance made ahead is an optimisation only).
    fn queue_ahead(self: &Arc<Self>, job: AheadJob) {
        let mut jobs = self.ahead.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs.is_none() {
            let (sender, receiver) = std::sync::mpsc::channel();
            let sandbox = Arc::downgrade(self);
            let pending_drops = self.ahead.pending_drops.clone();
            let spawned = std::thread::Builder::new()
                .name("sod-ahead".to_string())
                .spawn(move || ahead_worker(sandbox, receiver, &pending_drops));
            if spawned.is_ok() {
                *jobs = Some(sender);
            }
        }
        if let Some(sender) = jobs.as_ref() {
            // A send fails only if the thread ended; the job (and the store it may hold) is dropped here then.
            let _ = sender.send(job);
        }
    }
}

/// The background thread: makes instances ahead and drops finished stores, in the order asked. Ends when the
/// sandbox is gone.
fn ahead_worker(
    sandbox: Weak<SandboxInner>,
    jobs: Receiver<AheadJob>,
    pending_drops: &AtomicUsize,
) {
    for job in jobs {
        match job {
            AheadJob::Drop(store) => {
                drop(store);
                pending_drops.fetch_sub(1, Ordering::Relaxed);
            }
            AheadJob::Make(tool) => {
                let Some(sandbox) = sandbox.upgrade() else {
                    break;
                };
                if tool.inner.ahead.lock().is_some() {
                    continue;
                }
                if let Some(ahead) = wasmtime_wasi::runtime::in_tokio(sandbox.make_ahead(&tool)) {
                    // Only this thread fills the slot: it is still empty or was emptied by a call meanwhile.
                    *tool.inner.ahead.lock() = Some(ahead);
                }
            }
        }
    }
}
