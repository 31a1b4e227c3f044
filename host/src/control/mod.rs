//! The plugin lifecycle: upload, config change, rollback, removal — from the
//! HTTP API or the plugins-folder watch, through one path.
//!
//! Swap protocol:
//! 1. **Off the hot path** (the caller's thread): compile the component, read
//!    its description, check it against the running version (same name; same
//!    kind, input, key and window — a re-key or re-window is refused), choose
//!    how state moves (same schema → keep; the new version migrates from the
//!    old schema → migrate; otherwise refused unless `state=reset`),
//!    instantiate it and run `init` with the config, and dry-run the migration
//!    on a sample of the current states.
//! 2. **At a barrier** (the processing thread, between two batches): migrate
//!    every state (all or nothing), switch the slot, so each event is
//!    processed by exactly one version; the next checkpoint records the new
//!    content hash with the state it produced (a schema change checkpoints at
//!    once).
//! 3. The `.wasm` is written into the plugins folder so a restart runs the
//!    same code; the previous version is kept for a one-call rollback.
//!
//! Any failure leaves the old version running and says why, with the HTTP
//! status to answer.

pub mod group;
mod install;
mod load;
mod saved;
mod shadow;
mod share;
pub mod smoke;
pub mod watch;

pub use install::meta_of;
pub use smoke::Sample;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::output::PluginEvent;
use crate::pipeline::{ShadowBoard, ShadowStart, StateTransfer, SwapReport};
use crate::plugin::{Identity, Loaded, PluginCalls, Runtime};
use crate::sink::Hub;
use crate::status::{PluginCounters, Registry};

/// A refused lifecycle request: an HTTP status and a precise reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    pub status: u16,
    pub message: String,
}

fn err(status: u16, message: impl Into<String>) -> ControlError {
    ControlError {
        status,
        message: message.into(),
    }
}

/// Work for the processing thread, done at the next batch boundary.
pub enum Command {
    /// Up to `n` current states of a plugin and up to `events` recent
    /// events (the migration dry-run, the smoke test).
    Sample {
        name: String,
        n: usize,
        events: usize,
        reply: mpsc::Sender<Sample>,
    },
    /// Install a version (swap, add, config change, rollback), with an
    /// instance for each worker.
    Install {
        identity: Box<Identity>,
        calls: Vec<Box<dyn PluginCalls>>,
        counters: Arc<PluginCounters>,
        transfer: StateTransfer,
        reply: mpsc::Sender<Result<SwapReport, String>>,
    },
    /// Remove a plugin (and its shadow).
    Remove {
        name: String,
        reply: mpsc::Sender<bool>,
    },
    /// Start a shadow version beside the live one, with an instance for
    /// each worker; the reply: the states copied or migrated.
    InstallShadow {
        identity: Box<Identity>,
        calls: Vec<Box<dyn PluginCalls>>,
        start: Box<ShadowStart>,
        transfer: StateTransfer,
        reply: mpsc::Sender<Result<usize, String>>,
    },
    /// Make the shadow the live version (it takes `counters`, the live
    /// plugin's); the reply: its last comparison report (`None`: no shadow).
    PromoteShadow {
        name: String,
        counters: Arc<PluginCounters>,
        reply: mpsc::Sender<Option<Value>>,
    },
    /// Drop the shadow; the reply: its last comparison report.
    DiscardShadow {
        name: String,
        reply: mpsc::Sender<Option<Value>>,
    },
}

/// A [`Command`] on its way to the processing thread, with the claim that
/// decides whether it is applied.
pub struct Queued {
    pub ticket: Ticket,
    pub command: Command,
}

/// Who has a queued command: the processing thread [`Ticket::take`]s it
/// before it applies it; a caller that stops waiting abandons it. The
/// first one decides, so a change whose caller was told it failed (the
/// barrier was not reached in time) is never applied afterwards, and one
/// the processing thread has begun is waited for.
#[derive(Clone, Default)]
pub struct Ticket(Arc<std::sync::atomic::AtomicU8>);

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Ticket {
    /// For the processing thread: whether to apply the command (false: its
    /// caller gave up on it).
    pub fn take(&self) -> bool {
        self.claim(TAKEN)
    }

    /// For the caller: whether the command is now never applied (false:
    /// the processing thread has it).
    fn abandon(&self) -> bool {
        self.claim(ABANDONED)
    }

    fn claim(&self, to: u8) -> bool {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        self.0
            .compare_exchange(PENDING, to, AcqRel, Acquire)
            .is_ok()
    }
}

/// How the caller wants state handled when schemas differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePolicy {
    /// Keep or migrate; refuse if neither is possible.
    Auto,
    /// Start from empty state.
    Reset,
}

struct Version {
    loaded: Arc<Loaded>,
    config: Value,
    path: Option<PathBuf>,
}

struct Entry {
    current: Version,
    previous: Option<Version>,
    /// A shadow version running beside `current`.
    shadow: Option<Version>,
    counters: Arc<PluginCounters>,
}

/// The lifecycle service shared by the API and the folder watch.
pub struct Control {
    runtime: Arc<Runtime>,
    commands: mpsc::Sender<Queued>,
    registry: Arc<Registry>,
    hub: Hub,
    plugins_dir: PathBuf,
    entries: Mutex<std::collections::BTreeMap<String, Entry>>,
    /// One lifecycle operation at a time.
    busy: Mutex<()>,
    /// Processing workers: each runs its own instance of every plugin.
    workers: usize,
    /// The shadow versions' comparisons.
    shadows: Arc<ShadowBoard>,
    /// Configs and rollback targets kept for the next start.
    saved: saved::Saved,
    /// With the changelog, once the host is active: shares every change
    /// with the group's other hosts (`group`).
    group: std::sync::OnceLock<group::Publisher>,
    /// Plugins whose group version could not run here at start: their
    /// folder version runs, and is not shared over the group's.
    held_back: Mutex<std::collections::BTreeSet<String>>,
    /// Plugins whose last change the broker did not take within
    /// [`SHARE_WAIT`]: shared again until it does
    /// ([`Control::share_again`]).
    unshared: Mutex<std::collections::BTreeSet<String>>,
}

/// How often a change that could not be shared is tried again.
pub const SHARE_AGAIN: Duration = Duration::from_secs(3);

/// How long a lifecycle call waits for the broker to take its change
/// before it answers (the change already runs here; one not taken yet is
/// shared again every [`SHARE_AGAIN`]). It was `message.timeout.ms`
/// (10 s): a PUT with the broker away took 10.2 s to answer.
const SHARE_WAIT: Duration = Duration::from_secs(2);

/// How long a caller waits for the processing thread to reach a barrier.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(30);
/// The answer when it did not: the change was abandoned, and is not
/// applied.
const BARRIER_LATE: &str =
    "the pipeline did not reach a batch boundary in time; the change was not made";

impl Control {
    pub fn new(
        runtime: Arc<Runtime>,
        commands: mpsc::Sender<Queued>,
        registry: Arc<Registry>,
        hub: Hub,
        plugins_dir: PathBuf,
        workers: usize,
    ) -> Self {
        // Plugin log lines go to the dashboard and `/ws` as
        // `{"type":"log",…}` (and to the host's log: `crate::plugin::log`).
        let logs_hub = hub.clone();
        runtime.logs().spawn_publisher(move |line| {
            let mut v = serde_json::to_value(line).expect("log lines serialize");
            v["type"] = json!("log");
            logs_hub.publish(Arc::from(v.to_string()));
        });
        Control {
            workers: workers.max(1),
            runtime,
            commands,
            registry,
            hub,
            plugins_dir: plugins_dir.clone(),
            entries: Mutex::new(Default::default()),
            busy: Mutex::new(()),
            shadows: Arc::default(),
            saved: saved::Saved::new(&plugins_dir),
            group: std::sync::OnceLock::new(),
            held_back: Mutex::default(),
            unshared: Mutex::default(),
        }
    }

    /// The shadow versions' comparisons (the runner fills them).
    pub fn shadows(&self) -> Arc<ShadowBoard> {
        self.shadows.clone()
    }

    /// Register a plugin loaded at start (with the version a rollback goes
    /// back to, when one was saved).
    pub fn register(
        &self,
        loaded: Arc<Loaded>,
        config: Value,
        path: Option<PathBuf>,
        counters: Arc<PluginCounters>,
        previous: Option<(Arc<Loaded>, Value)>,
    ) {
        let name = loaded.description.name.clone();
        self.entries.lock().expect("entries lock").insert(
            name,
            Entry {
                current: Version {
                    loaded,
                    config,
                    path,
                },
                previous: previous.map(|(loaded, config)| Version {
                    loaded,
                    config,
                    path: None,
                }),
                shadow: None,
                counters,
            },
        );
    }

    /// The plugins' logs.
    pub fn logs(&self) -> &Arc<crate::plugin::log::Logs> {
        self.runtime.logs()
    }

    /// The content hash of the running version of `name`.
    pub fn running_hash(&self, name: &str) -> Option<String> {
        self.entries
            .lock()
            .expect("entries lock")
            .get(name)
            .map(|e| e.current.loaded.hash.clone())
    }

    /// The files the running plugins were loaded from.
    pub fn loaded_paths(&self) -> Vec<PathBuf> {
        let entries = self.entries.lock().expect("entries lock");
        entries
            .values()
            .filter_map(|e| e.current.path.clone())
            .collect()
    }

    /// Which running plugin was loaded from `path`.
    pub fn plugin_at(&self, path: &std::path::Path) -> Option<String> {
        let entries = self.entries.lock().expect("entries lock");
        entries
            .iter()
            .find(|(_, e)| e.current.path.as_deref() == Some(path))
            .map(|(n, _)| n.clone())
    }

    /// Have the processing thread run a command at its next barrier, and
    /// its reply. Not reached within [`BARRIER_TIMEOUT`]: abandoned, never
    /// applied ([`BARRIER_LATE`]); begun by then: waited for to the end.
    fn barrier<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, ControlError> {
        let (tx, rx) = mpsc::channel();
        let ticket = Ticket::default();
        self.commands
            .send(Queued {
                ticket: ticket.clone(),
                command: make(tx),
            })
            .map_err(|_| err(503, "the pipeline is not running"))?;
        let stopped = || err(503, "the pipeline stopped before it answered");
        match rx.recv_timeout(BARRIER_TIMEOUT) {
            Ok(v) => Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) if ticket.abandon() => Err(err(503, BARRIER_LATE)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "a lifecycle command has taken the processing thread over {BARRIER_TIMEOUT:?}; waiting for it to finish"
                );
                rx.recv().map_err(|_| stopped())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }

    fn publish(&self, event: &'static str, plugin: &str, loaded: &Loaded, message: String) {
        tracing::info!(plugin, event, version = %loaded.description.version, hash = %loaded.hash, "{message}");
        let e = PluginEvent {
            kind: "plugin",
            event,
            plugin: plugin.to_string(),
            version: loaded.description.version.clone(),
            hash: loaded.hash.clone(),
            message,
            time: now_ms(),
        };
        self.hub.publish(Arc::from(
            serde_json::to_string(&e).expect("event serializes"),
        ));
    }

    fn failed(&self, plugin: &str, e: ControlError) -> ControlError {
        tracing::warn!(
            plugin,
            status = e.status,
            "plugin change refused: {}",
            e.message
        );
        let ev = json!({"type": "plugin", "event": "failed", "plugin": plugin, "version": "", "hash": "", "message": e.message, "time": now_ms()});
        self.hub.publish(Arc::from(ev.to_string()));
        e
    }

    /// Upload a version of `name` (a new plugin if unknown).
    pub fn put(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Value>,
        policy: StatePolicy,
        origin: &str,
    ) -> Result<Value, ControlError> {
        self.put_inner(name, bytes, config, policy, origin)
            .map_err(|e| self.failed(name, e))
    }

    /// A `.wasm` appeared or changed in the plugins folder.
    pub fn put_file(&self, path: &std::path::Path, bytes: &[u8]) -> Result<Value, ControlError> {
        let origin = path.display().to_string();
        let compile = Instant::now();
        let loaded = self
            .runtime
            .load(bytes, &origin)
            .map_err(|e| self.failed("", err(400, e.to_string())))?;
        let name = loaded.description.name.clone();
        let ms = compile.elapsed().as_secs_f64() * 1000.0;
        self.put_loaded(
            &name,
            loaded,
            ms,
            bytes,
            None,
            StatePolicy::Auto,
            Some(path.to_path_buf()),
        )
        .map_err(|e| self.failed(&name, e))
    }

    fn put_inner(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Value>,
        policy: StatePolicy,
        origin: &str,
    ) -> Result<Value, ControlError> {
        let compile = Instant::now();
        let loaded = self
            .runtime
            .load(bytes, origin)
            .map_err(|e| err(400, e.to_string()))?;
        let ms = compile.elapsed().as_secs_f64() * 1000.0;
        self.put_loaded(name, loaded, ms, bytes, config, policy, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn put_loaded(
        &self,
        name: &str,
        loaded: Loaded,
        compile_ms: f64,
        bytes: &[u8],
        config: Option<Value>,
        policy: StatePolicy,
        from_path: Option<PathBuf>,
    ) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        let took = Instant::now();
        let d = &loaded.description;
        if d.name != name {
            return Err(err(
                400,
                format!(
                    "the component describes itself as `{}`, not `{name}`",
                    d.name
                ),
            ));
        }
        let (current, counters) = {
            let entries = self.entries.lock().expect("entries lock");
            match entries.get(name) {
                Some(e) => (
                    Some((e.current.loaded.clone(), e.current.config.clone())),
                    e.counters.clone(),
                ),
                None => (None, Arc::new(PluginCounters::default())),
            }
        };
        if current.as_ref().is_some_and(|(l, _)| l.hash == loaded.hash) && config.is_none() {
            return Ok(json!({"plugin": name, "unchanged": true, "hash": loaded.hash}));
        }
        let config = config
            .or_else(|| current.as_ref().map(|(_, c)| c.clone()))
            .unwrap_or_else(|| d.default_config.clone());
        let path = self
            .entries
            .lock()
            .expect("entries lock")
            .get(name)
            .and_then(|e| e.current.path.clone())
            .or(from_path.clone())
            .unwrap_or_else(|| self.plugins_dir.join(format!("{name}.wasm")));
        let report = self.install(
            name,
            Arc::new(loaded),
            config.clone(),
            current.map(|(l, _)| l),
            policy,
            counters,
            "swapped",
        )?;
        // A file the folder watch read is already there.
        let write = (from_path.as_deref() != Some(path.as_path())).then_some(bytes);
        self.keep_running_file(name, path, write, "swapped")?;
        let mut v = report.to_json();
        v["compile_ms"] = json!(compile_ms);
        // From the upload being compiled to the new version taking over
        // (its first call is the next batch).
        v["load_to_switch_ms"] = json!(compile_ms + took.elapsed().as_secs_f64() * 1000.0);
        Ok(v)
    }

    /// Change the config of the running version, keeping its state.
    pub fn patch_config(&self, name: &str, config: Value) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        let (loaded, counters) = {
            let entries = self.entries.lock().expect("entries lock");
            let e = entries
                .get(name)
                .ok_or_else(|| err(404, format!("no plugin `{name}`")))?;
            (e.current.loaded.clone(), e.counters.clone())
        };
        if !config.is_object() {
            return Err(err(400, "the config must be a JSON object"));
        }
        let report = self
            .install(
                name,
                loaded.clone(),
                config,
                Some(loaded),
                StatePolicy::Auto,
                counters,
                "config_changed",
            )
            .map_err(|e| self.failed(name, e))?;
        Ok(report.to_json())
    }

    /// Go back to the previous version (with its config).
    pub fn rollback(&self, name: &str, policy: StatePolicy) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        // The previous version, at the path the running one has.
        let (prev, current, counters) = {
            let entries = self.entries.lock().expect("entries lock");
            let e = entries
                .get(name)
                .ok_or_else(|| err(404, format!("no plugin `{name}`")))?;
            let p = e.previous.as_ref().ok_or_else(|| {
                err(
                    409,
                    format!("`{name}` has no previous version to roll back to"),
                )
            })?;
            let prev = Version {
                loaded: p.loaded.clone(),
                config: p.config.clone(),
                path: e.current.path.clone(),
            };
            (prev, e.current.loaded.clone(), e.counters.clone())
        };
        let report = self
            .install(
                name,
                prev.loaded.clone(),
                prev.config,
                Some(current),
                policy,
                counters,
                "rolled_back",
            )
            .map_err(|e| self.failed(name, e))?;
        let path = prev
            .path
            .unwrap_or_else(|| self.plugins_dir.join(format!("{name}.wasm")));
        self.keep_running_file(name, path, prev.loaded.bytes.as_deref(), "rolled back")?;
        Ok(report.to_json())
    }

    /// `name` is a plugin here, or a 404 that says it is not.
    fn known(&self, name: &str) -> Result<(), ControlError> {
        if self
            .entries
            .lock()
            .expect("entries lock")
            .contains_key(name)
        {
            Ok(())
        } else {
            Err(err(404, format!("no plugin `{name}`")))
        }
    }

    /// Remove a plugin and its state; its file leaves the plugins folder.
    pub fn delete(&self, name: &str) -> Result<Value, ControlError> {
        let _busy = self.busy.lock().expect("busy lock");
        self.known(name)?;
        let ahead = self.share_ahead(name, None, false);
        let removed = self
            .barrier(|reply| Command::Remove {
                name: name.to_string(),
                reply,
            })
            .inspect_err(|_| self.unshare_failed(name))?;
        let entry = self
            .entries
            .lock()
            .expect("entries lock")
            .remove(name)
            .ok_or_else(|| err(404, format!("no plugin `{name}`")))?;
        if !removed {
            // Known here but not in the pipeline: gone from both now, as
            // the group was told.
            self.shared_after(name, ahead);
            return Err(err(404, format!("no plugin `{name}` in the pipeline")));
        }
        self.registry
            .plugins
            .lock()
            .expect("registry lock")
            .retain(|(m, _)| m.name != name);
        if let Some(p) = &entry.current.path {
            let _ = std::fs::remove_file(p);
        }
        self.saved.forget(name);
        self.shared_after(name, ahead);
        self.publish(
            "removed",
            name,
            &entry.current.loaded,
            format!("{name} removed"),
        );
        Ok(json!({"plugin": name, "removed": true}))
    }
}

impl Control {
    /// The plugins folder holds what runs, so a restart runs the same code:
    /// write the running version of `name` (`bytes`; `None`: the file is
    /// already there) at `path` and remember it as the plugin's file. `done`
    /// names the change, which has happened even when the write fails.
    fn keep_running_file(
        &self,
        name: &str,
        path: PathBuf,
        bytes: Option<&[u8]>,
        done: &str,
    ) -> Result<(), ControlError> {
        if let Some(bytes) = bytes {
            write_atomically(&path, bytes).map_err(|e| {
                err(
                    500,
                    format!("{done}, but cannot write {}: {e}", path.display()),
                )
            })?;
        }
        if let Some(e) = self.entries.lock().expect("entries lock").get_mut(name) {
            e.current.path = Some(path);
        }
        Ok(())
    }
}

/// Write via a temporary file and a rename, so the folder never shows a
/// half-written plugin.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::Ticket;

    /// The first claim decides: a command the processing thread took cannot
    /// be abandoned, and one abandoned is never taken.
    #[test]
    fn the_first_claim_on_a_ticket_decides() {
        let t = Ticket::default();
        assert!(t.clone().take());
        assert!(!t.abandon());
        assert!(!t.take());
        let t = Ticket::default();
        assert!(t.abandon());
        assert!(!t.clone().take());
    }
}
