//! One plugin in the pipeline: its live instance, its operator, and its
//! health — the record of its recent calls that degrades it when too many
//! fail and brings it back when a probe succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::operator::{Op, OpState};
use crate::output::PluginEvent;
use crate::plugin::{CallError, Identity, PluginCalls};
use crate::state::StateDelta;
use crate::status::{PluginCounters, PluginStatus};

/// Failed calls among the last [`RECENT_CALLS`] before a plugin is degraded.
pub const DEGRADE_AFTER: u32 = 3;
/// How many recent calls the failure count looks at.
pub const RECENT_CALLS: u32 = 10;
/// How long a degraded plugin is skipped before it is tried again.
pub const PROBE_AFTER: Duration = Duration::from_secs(30);

/// One plugin in the pipeline: its live instance and its operator state.
pub struct Slot {
    pub name: Arc<str>,
    pub identity: Identity,
    pub inst: Box<dyn PluginCalls>,
    pub counters: Arc<PluginCounters>,
    pub op: Op,
    /// Shared by the plugin's slots on every worker: the plugin is degraded
    /// or recovers as one.
    pub health: Arc<Mutex<Health>>,
    /// A shadow version (`super::shadow`): it runs beside the live slot of
    /// the same name on the same events, but what it emits is compared, not
    /// emitted, and its state is not checkpointed.
    pub shadow: bool,
}

/// The record of a plugin's recent calls.
#[derive(Debug, Default)]
pub struct Health {
    /// Outcomes of the last calls, one bit each (1 = failed).
    recent: u32,
    degraded_until: Option<Instant>,
}

impl Slot {
    /// `allowed_lateness`: of windows whose plugin does not set one.
    pub fn new(
        identity: Identity,
        inst: Box<dyn PluginCalls>,
        counters: Arc<PluginCounters>,
        allowed_lateness: Duration,
    ) -> Self {
        let d = &identity.description;
        Slot {
            name: Arc::from(d.name.as_str()),
            op: Op::for_plugin(d, allowed_lateness),
            identity,
            inst,
            counters,
            health: Arc::default(),
            shadow: false,
        }
    }

    /// The same plugin's slot on another worker: they share their health.
    pub fn with_health(mut self, health: Arc<Mutex<Health>>) -> Self {
        self.health = health;
        self
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().expect("health lock")
    }

    /// The state changes since the last commit, for the state store.
    pub fn state_delta(&mut self) -> StateDelta {
        self.op.delta()
    }

    /// Rebuild the operator state from the state store.
    pub fn restore_entries<'a>(
        &mut self,
        meta: &[u8],
        entries: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), String> {
        self.op
            .restore_entries(meta, entries)
            .map_err(|e| format!("plugin `{}`: {e}", self.name))
    }

    /// Up to `n` states, for a migration dry-run.
    pub fn sample_states(&self, n: usize) -> Vec<Vec<u8>> {
        self.op.sample_states(n)
    }

    /// Move the operator state out (leaving it empty).
    pub fn take_state(&mut self) -> OpState {
        self.op.take_state()
    }

    pub fn restore(&mut self, s: OpState) -> Result<(), String> {
        if self.op.put_state(s) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{}`: checkpointed state is of another kind",
                self.name
            ))
        }
    }

    /// Run this instance's `migrate` from schema `from` on every state of
    /// `state`: all or nothing (on an error `state` is as it was).
    pub fn migrate(&mut self, state: &mut OpState, from: u32) -> Result<usize, String> {
        let inst = &mut self.inst;
        state.try_map(|b| inst.migrate(from, b).map_err(|e| e.to_string()))
    }

    /// Whether the plugin is degraded and its input skipped for now.
    pub fn skipped(&self) -> bool {
        self.health()
            .degraded_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// A call succeeded; the lifecycle event when that ends a degradation
    /// (a successful probe after the skip period).
    pub fn succeeded(&mut self) -> Option<PluginEvent> {
        {
            let mut h = self.health();
            h.recent = (h.recent << 1) & ((1 << RECENT_CALLS) - 1);
            if h.degraded_until.is_none_or(|t| Instant::now() < t) {
                return None;
            }
            h.degraded_until = None;
            h.recent = 0;
        }
        self.counters.set_status(PluginStatus::Running);
        tracing::info!(plugin = %self.name, "plugin recovered");
        Some(self.lifecycle("recovered", "calls succeed again".into()))
    }

    /// A call failed: counted by cause; the lifecycle event when this
    /// degrades the plugin.
    pub fn failed(&mut self, error: &CallError) -> Option<PluginEvent> {
        let c = &self.counters;
        let m = crate::metrics::metrics();
        // A shadow's failures are its report's, not the live plugin's.
        let live = !self.shadow;
        match error {
            CallError::Trap(_) => {
                PluginCounters::add(&c.traps, 1);
                if live {
                    m.plugin_traps.with_label_values(&[&*self.name]).inc();
                }
            }
            CallError::Timeout => {
                PluginCounters::add(&c.timeouts, 1);
                if live {
                    m.plugin_timeouts.with_label_values(&[&*self.name]).inc();
                }
            }
            CallError::OutOfMemory => PluginCounters::add(&c.out_of_memory, 1),
            CallError::Plugin(_) | CallError::Contract(_) | CallError::TooMany { .. } => {
                PluginCounters::add(&c.errors, 1)
            }
        }
        tracing::warn!(plugin = %self.name, shadow = self.shadow, reason = error.reason(), error = %error, "plugin call failed");
        let (failed, first) = {
            let mut h = self.health();
            h.recent = ((h.recent << 1) | 1) & ((1 << RECENT_CALLS) - 1);
            let failed = h.recent.count_ones();
            if failed < DEGRADE_AFTER {
                return None;
            }
            let first = h.degraded_until.is_none();
            h.degraded_until = Some(Instant::now() + PROBE_AFTER);
            (failed, first)
        };
        self.counters.set_status(PluginStatus::Degraded);
        if !first {
            return None;
        }
        let msg = format!(
            "{failed} of the last {RECENT_CALLS} calls failed (last: {error}); skipped for {PROBE_AFTER:?}"
        );
        tracing::error!(plugin = %self.name, shadow = self.shadow, "plugin degraded: {msg}");
        Some(self.lifecycle("degraded", msg))
    }

    /// A lifecycle event of this plugin's running version.
    pub fn lifecycle(&self, event: &'static str, message: String) -> PluginEvent {
        let l = &self.identity;
        PluginEvent {
            kind: "plugin",
            event,
            plugin: self.name.to_string(),
            version: l.description.version.clone(),
            hash: l.hash.clone(),
            message,
            time: now_ms(),
        }
    }
}
