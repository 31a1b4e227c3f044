//! Start-up: every plugin of the plugins folder loaded, registered with the
//! lifecycle service and the API, and put in the pipeline.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::{Control, meta_of};
use crate::config::Config;
use crate::output::Output;
use crate::pipeline::{Health, Pipeline, Slot, TimeConfig};
use crate::plugin::describe::Description;
use crate::plugin::{Identity, Instance, Loaded};
use crate::status::PluginCounters;

impl Control {
    /// Load every plugin of the plugins folder with its config (the
    /// operator's, else its own default), register each, and build the
    /// pipelines that run them: one per worker, each with its own instances
    /// (a plugin's slots share its counters and its health).
    pub fn load_pipelines(
        &self,
        config: &Config,
        time: TimeConfig,
        workers: usize,
    ) -> Result<Vec<Pipeline>, String> {
        let started = Instant::now();
        let loaded =
            crate::plugin::load_dir(&self.runtime, &config.plugins).map_err(|e| e.to_string())?;
        tracing::info!(plugins = loaded.len(), took_ms = started.elapsed().as_millis() as u64, dir = %config.plugins.display(), "plugins compiled");
        for c in &config.plugin_configs {
            if !loaded.iter().any(|(l, _)| l.description.name == c.name) {
                return Err(format!(
                    "--plugin-config names `{}`, which is not a loaded plugin",
                    c.name
                ));
            }
        }
        if loaded.len() > 64 {
            return Err(format!(
                "{} plugins in {}: at most 64 run in one host",
                loaded.len(),
                config.plugins.display()
            ));
        }
        let mut slots: Vec<Vec<Slot>> = (0..workers).map(|_| Vec::new()).collect();
        let mut events = Vec::new();
        for (l, path) in loaded {
            let l = Arc::new(l);
            let d = &l.description;
            let cfg = self.start_config(config, d);
            crate::plugin::config::check(d, &cfg)
                .map_err(|e| format!("plugin `{}`: {e}", d.name))?;
            let counters = Arc::new(PluginCounters::default());
            let previous = self.saved_previous(&l);
            let meta = meta_of(
                &l,
                cfg.clone(),
                previous.as_ref().map(
                    |(p, _)| serde_json::json!({"version": p.description.version, "hash": p.hash}),
                ),
            );
            self.registry
                .plugins
                .lock()
                .expect("registry lock")
                .push((meta, counters.clone()));
            self.register(
                l.clone(),
                cfg.clone(),
                Some(path),
                counters.clone(),
                previous,
            );
            let identity = Identity {
                description: d.clone(),
                hash: l.hash.clone(),
            };
            let health: Arc<Mutex<Health>> = Arc::default();
            for (w, worker) in slots.iter_mut().enumerate() {
                let inst = Instance::new(l.clone(), &cfg).map_err(|e| e.to_string())?;
                let slot = Slot::new(
                    identity.clone(),
                    Box::new(inst),
                    counters.clone(),
                    time.allowed_lateness,
                )
                .with_health(health.clone());
                if w == 0 {
                    events
                        .push(slot.lifecycle("loaded", format!("{} {} loaded", d.name, d.version)));
                }
                worker.push(slot);
            }
        }
        let mut pipelines: Vec<Pipeline> = slots
            .into_iter()
            .enumerate()
            .map(|(w, s)| Pipeline::new(s, time).with_shard(w, workers))
            .collect();
        pipelines[0]
            .outputs
            .extend(events.into_iter().map(Output::Plugin));
        Ok(pipelines)
    }

    /// A plugin's config at start: the operator's (`--plugin-config`), else
    /// the one the API set last (saved in the plugins folder), else the
    /// plugin's default. A saved config the plugin's schema refuses is
    /// logged and dropped.
    fn start_config(&self, config: &Config, d: &Description) -> Value {
        let saved = self.saved.config(&d.name);
        if let Some(c) = config.plugin_config(&d.name) {
            if saved.as_ref().is_some_and(|s| s != c) {
                tracing::info!(plugin = %d.name, "--plugin-config is used, not the config the API set before the restart");
            }
            return c.clone();
        }
        match saved {
            Some(s) => match crate::plugin::config::check(d, &s) {
                Ok(()) => s,
                Err(e) => {
                    tracing::warn!(plugin = %d.name, "the config saved before the restart no longer fits the plugin ({e}): using its default");
                    d.default_config.clone()
                }
            },
            None => d.default_config.clone(),
        }
    }

    /// The version a rollback of `l` went back to before the restart, when
    /// one was saved and still loads.
    fn saved_previous(&self, l: &Loaded) -> Option<(Arc<Loaded>, Value)> {
        let name = &l.description.name;
        let (bytes, config) = self.saved.previous(name)?;
        match self
            .runtime
            .load(&bytes, &format!("the saved previous version of `{name}`"))
        {
            Ok(p) if p.description.name == *name && p.hash != l.hash => Some((Arc::new(p), config)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(plugin = %name, "the saved previous version does not load: {e}");
                None
            }
        }
    }
}
