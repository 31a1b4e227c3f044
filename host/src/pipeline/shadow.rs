//! Shadow versions, the processing-thread half: a second version of a plugin
//! runs in a slot beside the live one — in every stage, on every worker, on
//! the same events from the same barrier — with its own state. What it emits
//! goes to [`Pipeline::shadow_outputs`] for the comparison
//! ([`super::compare`]), never to a sink or a detector, and its state is not
//! checkpointed. Promoting it makes its slot the live one at a barrier: the
//! windows it holds go on, so no window is lost or emitted twice.

use std::sync::Arc;

use std::sync::Mutex;

use super::{Health, Pipeline, Slot, StateTransfer, TimeConfig};
use crate::plugin::{Identity, PluginCalls};
use crate::status::PluginCounters;

impl Pipeline {
    /// Start a shadow of the live plugin `identity` names, with state taken
    /// as `transfer` says: a copy of the live state (`Keep`), a migrated
    /// copy (`Migrate`), or empty (`Reset`). Replaces an earlier shadow.
    /// Returns how many states were copied or migrated.
    pub fn install_shadow(
        &mut self,
        identity: Identity,
        calls: Box<dyn PluginCalls>,
        counters: Arc<PluginCounters>,
        transfer: StateTransfer,
        time: &TimeConfig,
        health: Arc<Mutex<Health>>,
    ) -> Result<usize, String> {
        let name = identity.description.name.clone();
        let live = self
            .live_index(&name)
            .ok_or_else(|| format!("no live plugin `{name}` to shadow"))?;
        self.discard_shadow(&name);
        let mut fresh =
            Slot::new(identity, calls, counters, time.allowed_lateness).with_health(health);
        fresh.shadow = true;
        let mut copied = 0;
        if transfer != StateTransfer::Reset {
            let mut state = self.slots[live].op.copy_state();
            if let StateTransfer::Migrate(from) = transfer {
                copied = fresh
                    .migrate(&mut state, from)
                    .map_err(|e| format!("migration from schema {from} failed: {e}"))?;
            } else {
                copied = state.len();
            }
            fresh.restore(state)?;
        }
        self.slots.push(fresh);
        self.sort_slots();
        Ok(copied)
    }

    /// Drop the shadow of `name`; whether there was one.
    pub fn discard_shadow(&mut self, name: &str) -> bool {
        let before = self.slots.len();
        self.slots.retain(|s| !(s.shadow && *s.name == *name));
        self.slots.len() != before
    }

    /// Make the shadow of `name` the live version: it keeps its state (the
    /// next commit rewrites the plugin's state with it) and takes the live
    /// plugin's counters. Whether there was a shadow.
    pub fn promote_shadow(&mut self, name: &str, counters: Arc<PluginCounters>) -> bool {
        let Some(si) = self.slots.iter().position(|s| s.shadow && *s.name == *name) else {
            return false;
        };
        let mut promoted = self.slots.remove(si);
        let retired = self.live_index(name).map(|i| self.slots.remove(i));
        promoted.shadow = false;
        promoted.counters = counters;
        promoted.op.mark_rewrite();
        self.slots.push(promoted);
        self.sort_slots();
        std::thread::spawn(move || drop(retired));
        true
    }
}
