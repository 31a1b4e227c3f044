//! Swapping a plugin's code between two batches: the processing-thread half
//! of the hot-swap protocol (the other half, off the hot path, is in
//! `control`). State is moved, never copied; a migration is all or nothing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Health, Pipeline, Slot, TimeConfig};
use crate::operator::OpState;
use crate::plugin::{Identity, PluginCalls};
use crate::status::{PluginCounters, PluginStatus};

/// How a new version takes over a plugin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateTransfer {
    /// Same state schema: keep the state as it is.
    Keep,
    /// Run the new version's `migrate` from this schema on every state.
    Migrate(u32),
    /// Start from empty state.
    Reset,
}

/// What a swap did, for the caller.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwapReport {
    pub plugin: String,
    pub from_version: Option<String>,
    pub to_version: String,
    pub hash: String,
    pub states_migrated: usize,
    pub state_reset: bool,
    /// How long processing stood still for the switch (µs).
    pub stall_us: u64,
}

/// A version installed on this worker but not switched to yet: every
/// worker stages, then all switch, or all go back (one that fails to migrate
/// its shard must not leave the others on the new version).
pub struct Staged {
    /// The slot it replaces (`None`: a new plugin).
    at: Option<usize>,
    fresh: Slot,
    /// The old version's state as it was, to give back if the switch is
    /// called off (moved out for a kept state, copied for a migrated one).
    original: Option<OpState>,
    report: SwapReport,
    started: Instant,
}

impl Pipeline {
    /// Install a plugin version between two batches: every event before this
    /// point was processed by the old version, every event after by the new
    /// one. Migration is all or nothing: on any failure the old version keeps
    /// running with its state untouched.
    pub fn install(
        &mut self,
        identity: Identity,
        calls: Box<dyn PluginCalls>,
        counters: Arc<PluginCounters>,
        transfer: StateTransfer,
        time: &TimeConfig,
    ) -> Result<SwapReport, String> {
        self.stage_install(identity, calls, counters, transfer, time, Arc::default())?;
        Ok(self.switch_staged())
    }

    /// The first half of [`Pipeline::install`]: the new version takes (or
    /// migrates) this worker's state, and waits for
    /// [`Pipeline::switch_staged`] or [`Pipeline::unstage`].
    pub fn stage_install(
        &mut self,
        identity: Identity,
        calls: Box<dyn PluginCalls>,
        counters: Arc<PluginCounters>,
        transfer: StateTransfer,
        time: &TimeConfig,
        health: Arc<Mutex<Health>>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let name = identity.description.name.clone();
        let mut fresh =
            Slot::new(identity, calls, counters, time.allowed_lateness).with_health(health);
        let at = self.live_index(&name);
        let mut report = SwapReport {
            plugin: name,
            from_version: at.map(|i| self.slots[i].identity.description.version.clone()),
            to_version: fresh.identity.description.version.clone(),
            hash: fresh.identity.hash.clone(),
            states_migrated: 0,
            state_reset: at.is_some() && transfer == StateTransfer::Reset,
            stall_us: 0,
        };
        let mut original = None;
        if let Some(i) = at {
            let old = &mut self.slots[i];
            match transfer {
                StateTransfer::Reset => {}
                // Move, never copy: the switch must not cost time
                // proportional to the state.
                StateTransfer::Keep => {
                    fresh.restore(old.take_state())?;
                }
                StateTransfer::Migrate(from) => {
                    let kept = old.take_state();
                    // Migrating costs a call per state; copying them first
                    // is small beside it, and keeps the old ones to go back to.
                    let mut state = copy_state(&kept);
                    match fresh.migrate(&mut state, from) {
                        Ok(n) => {
                            report.states_migrated = n;
                            fresh.restore(state)?;
                            original = Some(kept);
                        }
                        Err(e) => {
                            old.restore(kept)?;
                            return Err(format!("migration from schema {from} failed: {e}"));
                        }
                    }
                }
            }
        }
        self.staged = Some(Staged {
            at,
            fresh,
            original,
            report,
            started,
        });
        Ok(())
    }

    /// Switch to the staged version; the old one is torn down elsewhere.
    pub fn switch_staged(&mut self) -> SwapReport {
        let Staged {
            at,
            fresh,
            original,
            report,
            started,
        } = self.staged.take().expect("a staged version");
        fresh.counters.set_status(PluginStatus::Running);
        let retired = match at {
            Some(i) => Some(std::mem::replace(&mut self.slots[i], fresh)),
            None => {
                self.slots.push(fresh);
                self.sort_slots();
                None
            }
        };
        let stall_us = started.elapsed().as_micros() as u64;
        // Tearing down an instance (its store, its memory) is not the
        // pipeline's business: do it on another thread.
        std::thread::spawn(move || drop((retired, original)));
        SwapReport { stall_us, ..report }
    }

    /// Call the staged version off: the old one keeps its state.
    pub fn unstage(&mut self) {
        let Some(mut staged) = self.staged.take() else {
            return;
        };
        if let Some(i) = staged.at {
            let state = match staged.original.take() {
                Some(s) => s,
                None => staged.fresh.take_state(),
            };
            let _ = self.slots[i].restore(state);
        }
    }

    /// Remove a plugin, and its shadow if it has one (their state is
    /// dropped).
    pub fn remove(&mut self, name: &str) -> bool {
        let live = self.live_index(name).is_some();
        self.slots.retain(|s| *s.name != *name);
        live
    }

    /// The live version of a plugin.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.live_index(name).map(|i| &self.slots[i])
    }

    pub(super) fn live_index(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| *s.name == *name && !s.shadow)
    }
}

/// A copy of an operator state (the old version's, kept while a migrated
/// copy is staged).
fn copy_state(s: &OpState) -> OpState {
    match s {
        OpState::Windows(w) => OpState::Windows(w.clone()),
        OpState::Keyed(k) => OpState::Keyed(k.clone()),
    }
}
