//! Swapping a plugin's code between two batches: the processing-thread half
//! of the hot-swap protocol (the other half, off the hot path, is in
//! `control`). State is moved, never copied; a migration is all or nothing.

use std::sync::Arc;
use std::time::Instant;

use super::{Pipeline, Slot, TimeConfig};
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
        let started = Instant::now();
        let name = identity.description.name.clone();
        let mut fresh = Slot::new(identity, calls, counters, time.allowed_lateness);
        let Some(i) = self.slots.iter().position(|s| *s.name == *name) else {
            let to_version = fresh.identity.description.version.clone();
            let hash = fresh.identity.hash.clone();
            self.slots.push(fresh);
            self.slots.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(SwapReport {
                plugin: name,
                from_version: None,
                to_version,
                hash,
                states_migrated: 0,
                state_reset: false,
                stall_us: started.elapsed().as_micros() as u64,
            });
        };
        let old = &mut self.slots[i];
        let mut migrated = 0;
        match transfer {
            StateTransfer::Reset => {}
            // Move, never copy: the switch must not cost time proportional
            // to the state.
            StateTransfer::Keep => fresh.restore(old.take_state())?,
            StateTransfer::Migrate(from) => {
                let mut state = old.take_state();
                match fresh.migrate(&mut state, from) {
                    Ok(n) => {
                        migrated = n;
                        fresh.restore(state)?;
                    }
                    Err(e) => {
                        old.restore(state)?;
                        return Err(format!("migration from schema {from} failed: {e}"));
                    }
                }
            }
        }
        let from_version = Some(old.identity.description.version.clone());
        fresh.counters.set_status(PluginStatus::Running);
        let report = SwapReport {
            plugin: name.clone(),
            from_version,
            to_version: fresh.identity.description.version.clone(),
            hash: fresh.identity.hash.clone(),
            states_migrated: migrated,
            state_reset: transfer == StateTransfer::Reset,
            stall_us: 0,
        };
        let retired = std::mem::replace(&mut self.slots[i], fresh);
        let stall_us = started.elapsed().as_micros() as u64;
        // Tearing down an instance (its store, its memory) is not the
        // pipeline's business: do it on another thread.
        std::thread::spawn(move || drop(retired));
        Ok(SwapReport { stall_us, ..report })
    }

    /// Remove a plugin (its state is dropped).
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.slots.len();
        self.slots.retain(|s| *s.name != *name);
        self.slots.len() != before
    }

    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| *s.name == *name)
    }
}
