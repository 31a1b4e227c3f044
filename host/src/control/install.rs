//! Installing a version (a swap, an added plugin, a config change, a
//! rollback): the checks off the hot path, then the switch at a barrier.
//!
//! Before the barrier, in order: the version must consume and key like the
//! running one; how state moves (keep, migrate, reset) and, when it is kept,
//! that the state layout did not change under the same schema (the
//! fingerprint); the config must follow the plugin's JSON Schema; `init`
//! must accept it; the migration dry-run and the smoke test (`smoke`) must
//! pass on a sample of current states and recent events. Any refusal leaves
//! the running version alone.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::smoke::{self, Sample};
use super::{Command, Control, ControlError, Entry, StatePolicy, Version, err};
use crate::clock::now_ms;
use crate::pipeline::{StateTransfer, SwapReport};
use crate::plugin::describe::Description;
use crate::plugin::{Identity, Instance, Loaded, PluginCalls};
use crate::status::{PluginCounters, PluginMeta, PluginStatus};

/// What an install did: the switch, and what the smoke test ran on.
pub(super) struct Installed {
    pub report: SwapReport,
    pub smoke: smoke::SmokeReport,
}

impl Installed {
    /// The API's answer.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.report).expect("report serializes");
        v["smoke"] = serde_json::to_value(self.smoke).expect("smoke report serializes");
        v
    }
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn install(
        &self,
        name: &str,
        loaded: Arc<Loaded>,
        config: Value,
        current: Option<Arc<Loaded>>,
        policy: StatePolicy,
        counters: Arc<PluginCounters>,
        event: &'static str,
    ) -> Result<Installed, ControlError> {
        let new = &loaded.description;
        let transfer = match &current {
            None => StateTransfer::Reset,
            Some(old) => {
                compatible(&old.description, new)?;
                let transfer = transfer(name, &old.description, new, policy)?;
                if transfer == StateTransfer::Keep {
                    same_layout(name, &old.description, new)?;
                }
                transfer
            }
        };
        crate::plugin::config::check(new, &config)
            .map_err(|e| err(422, format!("`{name}` {}: {e}", new.version)))?;
        // Instantiate and init off the hot path.
        let first_call = Instant::now();
        let inst = Instance::new(loaded.clone(), &config).map_err(|e| err(422, e.to_string()))?;
        let ready_us = first_call.elapsed().as_micros() as u64;
        let smoke = self.dry_run(name, &loaded, &config, transfer)?;
        let identity = Identity {
            description: new.clone(),
            hash: loaded.hash.clone(),
        };
        // One instance per worker, every one initialised off the hot path.
        let mut calls: Vec<Box<dyn PluginCalls>> = vec![Box::new(inst)];
        for _ in 1..self.workers {
            let more =
                Instance::new(loaded.clone(), &config).map_err(|e| err(422, e.to_string()))?;
            calls.push(Box::new(more));
        }
        let reset = matches!(transfer, StateTransfer::Reset);
        let ahead = self.share_ahead(name, Some((&loaded, &config)), reset);
        fault_after_share(name);
        counters.set_status(PluginStatus::Swapping);
        let res = self.barrier(|reply| Command::Install {
            identity: Box::new(identity),
            calls,
            counters: counters.clone(),
            transfer,
            reply,
        });
        let swaps = &crate::metrics::metrics().plugin_swaps;
        // Whatever the outcome, the plugin is no longer between versions
        // (a plugin added to the pipeline has no old slot whose status the
        // switch would carry over).
        counters.set_status(PluginStatus::Running);
        let report = match res.and_then(|r| r.map_err(|why| err(422, why))) {
            Ok(r) => r,
            Err(e) => {
                swaps.with_label_values(&[name, "failed"]).inc();
                self.unshare_failed(name);
                return Err(e);
            }
        };
        swaps.with_label_values(&[name, "ok"]).inc();
        fault_after_switch(name);
        self.book(name, &loaded, &config, &counters, ahead);
        let event = if current.is_none() { "loaded" } else { event };
        let msg = match &report.from_version {
            Some(from) => format!(
                "{name} {from} → {} ({}; stall {} µs, ready in {ready_us} µs)",
                report.to_version,
                match transfer {
                    StateTransfer::Keep => "state kept".to_string(),
                    StateTransfer::Migrate(f) =>
                        format!("{} states migrated from schema {f}", report.states_migrated),
                    StateTransfer::Reset => "state reset".to_string(),
                },
                report.stall_us
            ),
            None => format!("{name} {} added", report.to_version),
        };
        self.publish(event, name, &loaded, msg);
        Ok(Installed { report, smoke })
    }

    /// The migration dry-run and the smoke test, on a sample the processing
    /// thread hands over at a barrier, with an instance of their own.
    pub(super) fn dry_run(
        &self,
        name: &str,
        loaded: &Arc<Loaded>,
        config: &Value,
        transfer: StateTransfer,
    ) -> Result<smoke::SmokeReport, ControlError> {
        let sample: Sample = self.barrier(|reply| Command::Sample {
            name: name.to_string(),
            n: smoke::STATES,
            events: smoke::EVENTS,
            reply,
        })?;
        let mut inst =
            Instance::new(loaded.clone(), config).map_err(|e| err(422, e.to_string()))?;
        let states = match transfer {
            StateTransfer::Reset => Vec::new(),
            StateTransfer::Keep => sample.states,
            StateTransfer::Migrate(from) => sample
                .states
                .iter()
                .map(|s| inst.migrate(from, s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    err(
                        422,
                        format!("migration dry-run from schema {from} failed: {e}"),
                    )
                })?,
        };
        smoke::run(
            &mut inst,
            &loaded.description,
            sample.events.as_ref(),
            &states,
        )
        .map_err(|e| err(422, format!("`{name}` {}: {e}", loaded.description.version)))
    }

    /// Book-keeping after a switch: versions, the API's view.
    pub(super) fn book(
        &self,
        name: &str,
        loaded: &Arc<Loaded>,
        config: &Value,
        counters: &Arc<PluginCounters>,
        ahead: bool,
    ) {
        let mut entries = self.entries.lock().expect("entries lock");
        match entries.get_mut(name) {
            Some(e) => {
                let old = std::mem::replace(
                    &mut e.current,
                    Version {
                        loaded: loaded.clone(),
                        config: config.clone(),
                        path: None,
                    },
                );
                if old.loaded.hash != loaded.hash {
                    e.previous = Some(old);
                } else {
                    e.current.path = old.path;
                }
            }
            None => {
                entries.insert(
                    name.to_string(),
                    Entry {
                        current: Version {
                            loaded: loaded.clone(),
                            config: config.clone(),
                            path: None,
                        },
                        previous: None,
                        shadow: None,
                        counters: counters.clone(),
                    },
                );
            }
        }
        let previous = entries.get(name).and_then(|e| e.previous.as_ref());
        let previous_meta = previous
            .map(|p| json!({"version": p.loaded.description.version, "hash": p.loaded.hash}));
        // For the next start: this config, and what a rollback goes back to.
        self.saved.save_config(name, config);
        self.saved.save_previous(
            name,
            previous.and_then(|p| p.loaded.bytes.as_deref().map(|b| (b, &p.config))),
        );
        drop(entries);
        self.shadows
            .live_changed(name, &loaded.description.version, &loaded.hash);
        let meta = meta_of(loaded, config.clone(), previous_meta);
        let mut reg = self.registry.plugins.lock().expect("registry lock");
        match reg.iter_mut().find(|(m, _)| m.name == name) {
            Some(slot) => slot.0 = meta,
            None => reg.push((meta, counters.clone())),
        }
        drop(reg);
        self.shared_after(name, ahead);
    }
}

/// Fault injection for the kill tests (`RTAP_FAULT_SWITCH_PAUSE_MS`): say
/// on stderr that `name` switched at its barrier, and pause before the
/// book-keeping, so that a SIGKILL lands after the switch (the processing
/// thread goes on and commits the new version's state).
fn fault_after_switch(name: &str) {
    if let Some(d) = crate::checkpoint::fault_pause("RTAP_FAULT_SWITCH_PAUSE_MS") {
        eprintln!("rtap-fault: switched `{name}`");
        std::thread::sleep(d);
    }
}

/// Fault injection for the kill tests (`RTAP_FAULT_SHARE_PAUSE_MS`): say
/// on stderr that a change of `name` is shared ahead of its barrier, and
/// pause before the barrier, so that a SIGKILL lands between the two.
fn fault_after_share(name: &str) {
    if let Some(d) = crate::checkpoint::fault_pause("RTAP_FAULT_SHARE_PAUSE_MS") {
        eprintln!("rtap-fault: shared `{name}` ahead");
        std::thread::sleep(d);
    }
}

/// How state moves from the running version to `new`.
pub(super) fn transfer(
    name: &str,
    old: &Description,
    new: &Description,
    policy: StatePolicy,
) -> Result<StateTransfer, ControlError> {
    let (from, to) = (old.state_schema, new.state_schema);
    match policy {
        StatePolicy::Reset => Ok(StateTransfer::Reset),
        StatePolicy::Auto if from == to => Ok(StateTransfer::Keep),
        StatePolicy::Auto if new.migrates_from.contains(&from) => Ok(StateTransfer::Migrate(from)),
        StatePolicy::Auto => Err(err(
            409,
            format!(
                "`{name}` {} keeps state in schema {from}; version {} uses schema {to} and cannot migrate from {from} \
                 (it migrates from {:?}). Upload a version that migrates, or pass ?state=reset to start from empty state",
                old.version, new.version, new.migrates_from
            ),
        )),
    }
}

/// Under one state schema, the state's layout must not change: the new
/// version could not decode the states the running one wrote.
pub(super) fn same_layout(
    name: &str,
    old: &Description,
    new: &Description,
) -> Result<(), ControlError> {
    let (a, b) = (&old.state_fingerprint, &new.state_fingerprint);
    if a.is_empty() || b.is_empty() || a == b {
        return Ok(());
    }
    let s = old.state_schema;
    Err(err(
        409,
        format!(
            "`{name}` {} changes the layout of its state (fingerprint {a} → {b}) but keeps state_schema {s}: \
             the states {} wrote would not decode. Bump it: `.state_schema({})` and `.migrates_from(&[{s}])` \
             with a `migrate` from {s} in describe(), or pass ?state=reset to start from empty state",
            new.version,
            old.version,
            s + 1
        ),
    ))
}

/// A new version must consume and key the same way as the running one.
pub(super) fn compatible(old: &Description, new: &Description) -> Result<(), ControlError> {
    let what = if old.kind != new.kind {
        Some(format!("kind {:?} → {:?}", old.kind, new.kind))
    } else if old.input != new.input {
        Some(format!("input {:?} → {:?}", old.input, new.input))
    } else if old.key_by != new.key_by {
        Some(format!("key `{}` → `{}`", old.key_by_text, new.key_by_text))
    } else if old.window != new.window {
        Some(format!("window {:?} → {:?}", old.window, new.window))
    } else {
        None
    };
    match what {
        Some(w) => Err(err(
            409,
            format!(
                "the new version changes its {w}: the running windows and keys cannot carry over; delete the plugin and add it again"
            ),
        )),
        None => Ok(()),
    }
}

/// The API's view of a plugin version: plain JSON values (field names as a
/// plugin writes them).
pub fn meta_of(l: &Loaded, config: Value, previous: Option<Value>) -> PluginMeta {
    let d = &l.description;
    PluginMeta {
        name: d.name.clone(),
        version: d.version.clone(),
        kind: d.kind,
        input: d.input,
        key_by: d.key_by_text.clone(),
        window: d.window,
        fields: d.fields.iter().map(|f| f.name().to_string()).collect(),
        metrics: d
            .metrics
            .iter()
            .map(|m| format!("{}/{}", m.plugin, m.name))
            .collect(),
        hash: l.hash.clone(),
        size_bytes: l.size,
        state_schema: d.state_schema,
        state_fingerprint: d.state_fingerprint.clone(),
        loaded_at: now_ms(),
        config,
        config_schema: d.config_schema.clone(),
        previous,
    }
}
