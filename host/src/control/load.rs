//! Start-up: every plugin of the plugins folder loaded, registered with the
//! lifecycle service and the API, and put in the pipeline.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::group::{self, GroupPlugins, Shared};
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
    ///
    /// `group`: the group's plugins as its control topic holds them
    /// (`super::group`, with the changelog): the folder is brought in line
    /// with them first.
    pub fn load_pipelines(
        &self,
        config: &Config,
        time: TimeConfig,
        workers: usize,
        group: Option<&GroupPlugins>,
    ) -> Result<Vec<Pipeline>, String> {
        let started = Instant::now();
        // A host may join a group with an empty folder: the group's
        // plugins fill it.
        let mut loaded = group::load_folder(&self.runtime, &config.plugins, group)?;
        if let Some(g) = group {
            loaded = self.adopt(loaded, g, &config.plugins)?;
        }
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

    /// Bring the folder's plugins (`loaded`) in line with the group's (see
    /// `super::group` for which version wins); returns what to run. A
    /// group's version that cannot be written or loaded here: the folder's
    /// runs, not shared; without one in the folder, an error.
    fn adopt(
        &self,
        mut loaded: Vec<(Loaded, PathBuf)>,
        g: &GroupPlugins,
        dir: &Path,
    ) -> Result<Vec<(Loaded, PathBuf)>, String> {
        for (name, shared) in &g.plugins {
            let at = loaded.iter().position(|(l, _)| l.description.name == *name);
            let newer = at.is_some_and(|i| group::modified_ms(&loaded[i].1) > shared.at);
            let Some(current) = &shared.current else {
                if let Some(i) = at {
                    if newer {
                        tracing::info!(plugin = %name, file = %loaded[i].1.display(), "the group removed this plugin, but its file is newer: it runs, and is shared");
                    } else {
                        let (_, path) = loaded.remove(i);
                        let _ = std::fs::remove_file(&path);
                        self.saved.forget(name);
                        tracing::info!(plugin = %name, file = %path.display(), by = %shared.host, "removed: the group removed it");
                    }
                }
                continue;
            };
            if at.is_some_and(|i| loaded[i].0.hash != current.hash) && newer {
                let i = at.expect("checked");
                tracing::info!(plugin = %name, file = %loaded[i].1.display(), group = %current.hash, "the folder's version is newer than the group's: it runs, and is shared");
                continue;
            }
            if at.is_none_or(|i| loaded[i].0.hash != current.hash) {
                let path =
                    group::path_for(dir, name, at.map(|i| loaded[i].1.as_path()), &current.hash);
                match self.fetch(g, name, &current.hash, &path) {
                    Ok(l) => {
                        tracing::info!(plugin = %name, version = %l.description.version, hash = %l.hash, by = %shared.host, file = %path.display(), "loaded the group's version");
                        match at {
                            Some(i) => loaded[i] = (l, path),
                            None => loaded.push((l, path)),
                        }
                    }
                    // Without it this host would drop the plugin and its
                    // committed state: refused.
                    Err(e) if at.is_none() => {
                        return Err(format!(
                            "plugin `{name}`: the group runs version {} (changed by {}), which this host cannot run: {e}; \
                             refusing to start without it rather than drop its state",
                            current.hash, shared.host
                        ));
                    }
                    // The folder's version runs here, and is not shared over
                    // the group's newer one.
                    Err(e) => {
                        tracing::warn!(plugin = %name, "cannot run the group's version, running the folder's (not shared): {e}");
                        self.held_back
                            .lock()
                            .expect("held back lock")
                            .insert(name.clone());
                        continue;
                    }
                }
            }
            self.adopt_saved(g, shared);
        }
        Ok(loaded)
    }

    /// The group's version `hash` of `name`, written at `path` and loaded.
    fn fetch(
        &self,
        g: &GroupPlugins,
        name: &str,
        hash: &str,
        path: &Path,
    ) -> Result<Loaded, String> {
        let bytes = g.component(hash)?;
        let l = self
            .runtime
            .load(&bytes, &format!("the group's version of `{name}`"))
            .map_err(|e| e.to_string())?;
        if l.description.name != name {
            return Err(format!(
                "the component describes itself as `{}`",
                l.description.name
            ));
        }
        super::write_atomically(path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(l)
    }

    /// The group's config and rollback target of a plugin, saved as the
    /// API would have saved them here.
    fn adopt_saved(&self, g: &GroupPlugins, shared: &Shared) {
        let name = &shared.name;
        if let Some(c) = &shared.current {
            self.saved.save_config(name, &c.config);
        }
        match &shared.previous {
            Some(p) => match g.component(&p.hash) {
                Ok(bytes) => self.saved.save_previous(name, Some((&bytes, &p.config))),
                Err(e) => {
                    tracing::warn!(plugin = %name, "the group's rollback target is not available: {e}")
                }
            },
            None => self.saved.save_previous(name, None),
        }
    }
}
