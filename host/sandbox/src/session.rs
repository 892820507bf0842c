//! Sessions (`CallOptions::session`): one live instance per (tool, session id), kept across calls so that the
//! tool's state, its files included, carries over; calls on one session run one at a time.
//!
//! What changes hands: a session's first call makes a store ([`Binding::Start`]) and, if its instance does not
//! trap, leaves it in the session's slot; each later call takes it out, binds the call's limits with
//! [`Binding::Continue`] (identity and randomness streams continue), runs, and puts it back. A trap ends the
//! session (a trapped instance cannot be entered again): the next call starts fresh. Sessions are released by
//! `Sandbox::release_session`, after `SandboxConfig::session_idle` untouched, or, least recently used first,
//! past `SandboxConfig::max_sessions`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::bindings::CompositeTool;
use crate::classify::finish;
use crate::outcome::Outcome;
use crate::registry::Tool;
use crate::sandbox::{Call, SandboxInner, run_call};
use crate::store::{Binding, CallIdentity, CallState, bind, store_for_call};

/// A live instance kept for a session.
struct Session {
    store: Store<CallState>,
    instance: CompositeTool,
    last_used: Instant,
}

/// A session's instance behind an async mutex: calls on one session run one at a time, and the guard may
/// be held across the call's await points.
type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// The live sessions of a sandbox, by (tool name, session id).
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<(String, String), SessionSlot>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SessionSlot>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of a session, made empty if new; evicts idle sessions and, past `max`, the least recently used.
    fn slot(&self, tool: &str, session: &str, idle: Duration, max: usize) -> SessionSlot {
        let mut sessions = self.lock();
        evict(&mut sessions, idle, max);
        sessions
            .entry((tool.to_string(), session.to_string()))
            .or_default()
            .clone()
    }

    /// Releases a session's instance. Returns whether it existed.
    pub(crate) fn release(&self, tool: &str, session: &str) -> bool {
        self.lock()
            .remove(&(tool.to_string(), session.to_string()))
            .is_some()
    }

    /// Number of live sessions.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Drops idle sessions and, past the session bound, the least recently used ones.
fn evict(sessions: &mut HashMap<(String, String), SessionSlot>, idle: Duration, max: usize) {
    let mut ages: Vec<((String, String), Instant)> = Vec::new();
    sessions.retain(|key, slot| match slot.try_lock() {
        Ok(guard) => match guard.as_ref() {
            Some(session) if session.last_used.elapsed() > idle => false,
            Some(session) => {
                ages.push((key.clone(), session.last_used));
                true
            }
            None => true,
        },
        // In use right now: certainly not idle.
        Err(_) => true,
    });
    if sessions.len() >= max {
        ages.sort_by_key(|(_, used)| *used);
        let excess = sessions.len() + 1 - max;
        for (key, _) in ages.into_iter().take(excess) {
            sessions.remove(&key);
        }
    }
}

impl SandboxInner {
    /// Runs a call in session `session_id` of `tool`, starting the session if it is new.
    pub(crate) async fn call_in_session(
        self: &Arc<Self>,
        tool: &Tool,
        call: &Call<'_>,
        identity: CallIdentity,
        session_id: &str,
    ) -> Outcome {
        let limits = call.limits;
        let slot = self.sessions.slot(
            tool.name(),
            session_id,
            self.config.session_idle,
            self.config.max_sessions,
        );
        let mut guard = slot.lock().await;
        let mut session = match guard.take() {
            Some(mut session) => {
                bind(&mut session.store, &limits, Binding::Continue);
                session
            }
            None => {
                let mut store =
                    store_for_call(&self.engine, limits, identity, Arc::downgrade(self));
                match tool.inner.pre.instantiate_async(&mut store).await {
                    Ok(instance) => Session {
                        store,
                        instance,
                        last_used: Instant::now(),
                    },
                    Err(err) => {
                        drop(guard);
                        self.sessions.release(tool.name(), session_id);
                        return finish(tool, &mut store, call, Err(err));
                    }
                }
            }
        };
        let result = run_call(&session.instance, &mut session.store, call).await;
        let trapped = result.is_err();
        let mut outcome = finish(tool, &mut session.store, call, result);
        if trapped {
            // A trapped instance cannot be entered again: end the session; the next call starts fresh.
            drop(guard);
            self.sessions.release(tool.name(), session_id);
            let note = "the session ended; the next call starts a fresh interpreter";
            outcome.message = Some(match outcome.message.take() {
                Some(message) => format!("{message} ({note})"),
                None => note.to_string(),
            });
        } else {
            session.last_used = Instant::now();
            *guard = Some(session);
        }
        outcome
    }
}
