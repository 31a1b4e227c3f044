//! Start-up: every plugin of the plugins folder loaded, registered with the
//! lifecycle service and the API, and put in the pipeline.

use std::sync::Arc;
use std::time::Instant;

use super::{Control, meta_of};
use crate::config::Config;
use crate::output::Output;
use crate::pipeline::{Pipeline, Slot, TimeConfig};
use crate::plugin::{Identity, Instance};
use crate::status::PluginCounters;

impl Control {
    /// Load every plugin of the plugins folder with its config (the
    /// operator's, else its own default), register each, and build the
    /// pipeline that runs them.
    pub fn load_pipeline(&self, config: &Config, time: TimeConfig) -> Result<Pipeline, String> {
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
        let mut slots = Vec::new();
        let mut events = Vec::new();
        for (l, path) in loaded {
            let l = Arc::new(l);
            let d = &l.description;
            let cfg = config
                .plugin_config(&d.name)
                .cloned()
                .unwrap_or_else(|| d.default_config.clone());
            crate::plugin::config::check(d, &cfg)
                .map_err(|e| format!("plugin `{}`: {e}", d.name))?;
            let inst = Instance::new(l.clone(), &cfg).map_err(|e| e.to_string())?;
            let counters = Arc::new(PluginCounters::default());
            let meta = meta_of(&l, cfg.clone(), None);
            self.registry
                .plugins
                .lock()
                .expect("registry lock")
                .push((meta, counters.clone()));
            self.register(l.clone(), cfg, Some(path), counters.clone());
            let identity = Identity {
                description: d.clone(),
                hash: l.hash.clone(),
            };
            let slot = Slot::new(identity, Box::new(inst), counters, time.allowed_lateness);
            events.push(slot.lifecycle("loaded", format!("{} {} loaded", d.name, d.version)));
            slots.push(slot);
        }
        let mut pipeline = Pipeline::new(slots, time);
        pipeline
            .outputs
            .extend(events.into_iter().map(Output::Plugin));
        Ok(pipeline)
    }
}
