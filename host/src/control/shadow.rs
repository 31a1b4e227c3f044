//! Shadow versions, the lifecycle half: `PUT /api/plugins/{name}?mode=shadow`
//! checks a version as an upload is checked (same kind, input, key and
//! window as the live one; config against its schema; `init`; the smoke
//! test on recent events and states) and starts it at a barrier beside the
//! live version; `promote` makes it live at a barrier, `discard` drops it.
//! The comparison itself is `crate::pipeline::compare`; the slots,
//! `crate::pipeline` (shadow.rs). A shadow is not checkpointed: a restart
//! runs the live version only.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::install::{compatible, same_layout, transfer};
use super::{Command, Control, ControlError, StatePolicy, Version, err};
use crate::pipeline::{ShadowStart, StateTransfer};
use crate::plugin::{Identity, Instance, PluginCalls};
use crate::status::PluginCounters;

impl Control {
    /// Start `bytes` as the shadow of the live plugin `name` (replacing an
    /// earlier shadow). `config`: the shadow's (default: the live one's).
    pub fn put_shadow(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Value>,
        policy: StatePolicy,
        origin: &str,
    ) -> Result<Value, ControlError> {
        self.put_shadow_inner(name, bytes, config, policy, origin)
            .map_err(|e| self.failed(name, e))
    }

    fn put_shadow_inner(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Value>,
        policy: StatePolicy,
        origin: &str,
    ) -> Result<Value, ControlError> {
        let compile = Instant::now();
        let loaded = Arc::new(
            self.runtime
                .load(bytes, origin)
                .map_err(|e| err(400, e.to_string()))?,
        );
        let compile_ms = compile.elapsed().as_secs_f64() * 1000.0;
        let _busy = self.busy.lock().expect("busy lock");
        let new = &loaded.description;
        if new.name != name {
            return Err(err(
                400,
                format!(
                    "the component describes itself as `{}`, not `{name}`",
                    new.name
                ),
            ));
        }
        let (live, live_config, replaced) = {
            let entries = self.entries.lock().expect("entries lock");
            let e = entries.get(name).ok_or_else(|| {
                err(
                    404,
                    format!("no plugin `{name}` to shadow: a shadow runs beside the live version; upload `{name}` first"),
                )
            })?;
            let replaced = e
                .shadow
                .as_ref()
                .map(|s| json!({"version": s.loaded.description.version, "hash": s.loaded.hash}));
            (e.current.loaded.clone(), e.current.config.clone(), replaced)
        };
        let old = &live.description;
        // Promoting must be a swap the running windows and keys survive.
        compatible(old, new)?;
        let (transfer, state) = match policy {
            StatePolicy::Reset => (
                StateTransfer::Reset,
                "empty (asked for with ?state=reset)".to_string(),
            ),
            StatePolicy::Auto => match transfer(name, old, new, policy) {
                Ok(StateTransfer::Keep) => match same_layout(name, old, new) {
                    Ok(()) => (
                        StateTransfer::Keep,
                        "a copy of the live state ({states} keys)".to_string(),
                    ),
                    Err(_) => (
                        StateTransfer::Reset,
                        format!(
                            "empty: the layout of its state differs from {}'s under the same state schema {}, so it could not read a copy",
                            old.version, old.state_schema
                        ),
                    ),
                },
                Ok(StateTransfer::Migrate(from)) => (
                    StateTransfer::Migrate(from),
                    format!("the live state migrated from schema {from} ({{states}} keys)"),
                ),
                Ok(StateTransfer::Reset) => (StateTransfer::Reset, "empty".to_string()),
                Err(_) => (
                    StateTransfer::Reset,
                    format!(
                        "empty: {} keeps its state in schema {}, this version uses schema {} and does not migrate from {}",
                        old.version, old.state_schema, new.state_schema, old.state_schema
                    ),
                ),
            },
        };
        let config = config.unwrap_or(live_config);
        crate::plugin::config::check(new, &config)
            .map_err(|e| err(422, format!("`{name}` {}: {e}", new.version)))?;
        let smoke = self.dry_run(name, &loaded, &config, transfer)?;
        let mut calls: Vec<Box<dyn PluginCalls>> = Vec::new();
        for _ in 0..self.workers {
            let inst =
                Instance::new(loaded.clone(), &config).map_err(|e| err(422, e.to_string()))?;
            calls.push(Box::new(inst));
        }
        let start = ShadowStart {
            plugin: name.to_string(),
            version: new.version.clone(),
            hash: loaded.hash.clone(),
            live_version: old.version.clone(),
            live_hash: live.hash.clone(),
            state,
            counters: Arc::new(PluginCounters::default()),
        };
        let identity = Identity {
            description: new.clone(),
            hash: loaded.hash.clone(),
        };
        let copied = self
            .barrier(|reply| Command::InstallShadow {
                identity: Box::new(identity),
                calls,
                start: Box::new(start),
                transfer,
                reply,
            })?
            .map_err(|why| err(422, format!("`{name}` {}: {why}", new.version)))?;
        if let Some(e) = self.entries.lock().expect("entries lock").get_mut(name) {
            e.shadow = Some(Version {
                loaded: loaded.clone(),
                config: config.clone(),
                path: None,
            });
        }
        let report = self.shadows.summary(name).unwrap_or(Value::Null);
        self.publish(
            "shadow_started",
            name,
            &loaded,
            format!(
                "{name} {} runs as a shadow of {} (state: {})",
                new.version,
                old.version,
                report["state"].as_str().unwrap_or("")
            ),
        );
        Ok(json!({
            "plugin": name,
            "mode": "shadow",
            "live": {"version": old.version, "hash": live.hash},
            "shadow": {"version": new.version, "hash": loaded.hash},
            "state": report["state"],
            "states_copied": copied,
            "replaced": replaced,
            "smoke": smoke,
            "compile_ms": compile_ms,
        }))
    }

    /// The comparison of `name`'s shadow, with its first `limit`
    /// differences.
    pub fn shadow_report(&self, name: &str, limit: usize) -> Result<Value, ControlError> {
        self.known(name)?;
        self.shadows
            .report(name, limit)
            .ok_or_else(|| no_shadow(name))
    }

    /// A plugin's shadow in brief, for the plugin list.
    pub fn shadow_summary(&self, name: &str) -> Option<Value> {
        self.shadows.summary(name)
    }

    /// Make the shadow of `name` its live version, at a barrier: every
    /// event before it was processed by the old version, every one after by
    /// the promoted one, which goes on with the state it built.
    pub fn promote_shadow(&self, name: &str) -> Result<Value, ControlError> {
        self.promote_inner(name).map_err(|e| self.failed(name, e))
    }

    fn promote_inner(&self, name: &str) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        let (shadow, counters, from, path) = {
            let entries = self.entries.lock().expect("entries lock");
            let e = entries
                .get(name)
                .ok_or_else(|| err(404, format!("no plugin `{name}`")))?;
            let s = e.shadow.as_ref().ok_or_else(|| no_shadow(name))?;
            (
                Version {
                    loaded: s.loaded.clone(),
                    config: s.config.clone(),
                    path: None,
                },
                e.counters.clone(),
                e.current.loaded.description.version.clone(),
                e.current.path.clone(),
            )
        };
        let ahead = self.share_ahead(name, Some((&shadow.loaded, &shadow.config)), false);
        let report = self
            .barrier(|reply| Command::PromoteShadow {
                name: name.to_string(),
                counters: counters.clone(),
                reply,
            })
            .and_then(|r| r.ok_or_else(|| no_shadow(name)))
            .inspect_err(|_| self.unshare_failed(name))?;
        crate::metrics::metrics()
            .plugin_swaps
            .with_label_values(&[name, "ok"])
            .inc();
        self.book(name, &shadow.loaded, &shadow.config, &counters, ahead);
        if let Some(e) = self.entries.lock().expect("entries lock").get_mut(name) {
            e.shadow = None;
        }
        let path = path.unwrap_or_else(|| self.plugins_dir.join(format!("{name}.wasm")));
        self.keep_running_file(name, path, shadow.loaded.bytes.as_deref(), "promoted")?;
        let to = shadow.loaded.description.version.clone();
        self.publish(
            "promoted",
            name,
            &shadow.loaded,
            format!(
                "{name} {from} → {to}: the shadow is live ({} compared, {} different)",
                report["compared"], report["different"]
            ),
        );
        Ok(json!({
            "plugin": name,
            "promoted": true,
            "from_version": from,
            "to_version": to,
            "hash": shadow.loaded.hash,
            "report": report,
        }))
    }

    /// Drop the shadow of `name`; the live version runs on untouched.
    pub fn discard_shadow(&self, name: &str) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        let shadow = {
            let entries = self.entries.lock().expect("entries lock");
            let e = entries
                .get(name)
                .ok_or_else(|| err(404, format!("no plugin `{name}`")))?;
            e.shadow
                .as_ref()
                .map(|s| s.loaded.clone())
                .ok_or_else(|| no_shadow(name))?
        };
        let report = self
            .barrier(|reply| Command::DiscardShadow {
                name: name.to_string(),
                reply,
            })?
            .ok_or_else(|| no_shadow(name))?;
        if let Some(e) = self.entries.lock().expect("entries lock").get_mut(name) {
            e.shadow = None;
        }
        self.publish(
            "shadow_discarded",
            name,
            &shadow,
            format!(
                "{name}: the shadow {} is discarded ({} compared, {} different)",
                shadow.description.version, report["compared"], report["different"]
            ),
        );
        Ok(json!({"plugin": name, "discarded": true, "report": report}))
    }
}

fn no_shadow(name: &str) -> ControlError {
    err(
        404,
        format!(
            "`{name}` has no shadow version (start one with `rtap deploy COMPONENT.wasm --shadow`, or PUT /api/plugins/{name}?mode=shadow)"
        ),
    )
}
