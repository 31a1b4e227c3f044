//! The Wasm plugin runtime: loading components, the sandbox, and typed calls.
//!
//! * `bindings.rs` — the one `bindgen!` of the host;
//! * `runtime.rs` — engine, pooling allocator, epoch deadlines, capability-less WASI;
//! * `describe.rs` — a plugin's validated self-description;
//! * `instance.rs` — a live instance and its calls (re-instantiated after a trap);
//! * `io.rs` — the host-side types of what crosses the boundary;
//! * `log.rs` — the plugins' logs (the `log` import, stdout, stderr);
//! * `config.rs` — a config checked against the plugin's JSON Schema.

pub(crate) mod bindings;
pub mod config;
pub mod describe;
pub mod instance;
pub mod io;
pub mod log;
pub mod runtime;

use std::path::{Path, PathBuf};

pub use describe::Description;
pub use instance::Instance;
pub use runtime::{Limits, Loaded, Runtime};

/// Loading or configuring a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {origin}: {why}")]
    Refused { origin: String, why: String },
    #[error("plugin `{plugin}`: config refused: {why}")]
    BadConfig { plugin: String, why: String },
    #[error("plugin `{plugin}`: init failed: {why}")]
    InitFailed { plugin: String, why: String },
    #[error("plugins folder {path}: {why}")]
    Folder { path: PathBuf, why: String },
    #[error("two plugins are named `{name}`: {first} and {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("Wasm runtime: {0}")]
    Runtime(String),
}

/// One call into a plugin failed. The caller dead-letters the call's input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("trap: {0}")]
    Trap(String),
    #[error("timeout: the call exceeded its deadline")]
    Timeout,
    #[error("out of memory: the plugin hit its memory cap")]
    OutOfMemory,
    #[error("plugin error: {0}")]
    Plugin(String),
    #[error("contract violation: {0}")]
    Contract(String),
    /// More outputs than a call may return (`Limits::max_outputs_per_call`):
    /// a contract violation too, told apart so that a call over many
    /// windows can be split.
    #[error("contract violation: returned {got} {what}, the limit is {max} per call")]
    TooMany {
        what: &'static str,
        got: usize,
        max: usize,
    },
}

impl CallError {
    /// Short machine-readable reason (dead-letter `reason`, metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout => "timeout",
            CallError::OutOfMemory => "out_of_memory",
            CallError::Plugin(_) => "plugin_error",
            CallError::Contract(_) | CallError::TooMany { .. } => "contract_violation",
        }
    }

    /// Whether a call over `parts` windows or keys that failed this way is
    /// worth asking again in halves: it returned too many outputs, but not
    /// more than the limit per part on average, so the number of parts made
    /// it too big, not one part's flood (which splitting would only repeat).
    pub fn split_helps(&self, parts: usize) -> bool {
        matches!(self, CallError::TooMany { got, max, .. } if parts > 1 && got / parts <= *max)
    }
}

/// The calls of a plugin, whatever runs it: a sandboxed Wasm [`Instance`], or
/// (benchmarks, tests) the same plugin compiled natively.
pub trait PluginCalls: Send {
    fn add(
        &mut self,
        group_lens: &[u32],
        states: &io::Packed,
        batch: io::Columns,
    ) -> Result<io::Packed, CallError>;
    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, CallError>;
    fn finish(
        &mut self,
        windows: &[(i64, i64)],
        states: &io::Packed,
    ) -> Result<Vec<io::RawMetric>, CallError>;
    fn on_events(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &io::Packed,
        batch: io::Columns,
        watermark: i64,
    ) -> Result<io::Step, CallError>;
    fn on_metrics(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &io::Packed,
        metrics: &[io::MetricIn],
    ) -> Result<io::Step, CallError>;
    fn on_timers(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &io::Packed,
        times: &[i64],
    ) -> Result<io::Step, CallError>;
    fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, CallError>;
    /// The config it was started with, as JSON ("" where it has none).
    fn config(&self) -> &str {
        ""
    }
}

/// Who a plugin is: its description and the hash of its code.
#[derive(Debug, Clone)]
pub struct Identity {
    pub description: Description,
    pub hash: String,
}

/// The `.wasm` files of a plugins folder, sorted by name.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    let folder = |why: String| PluginError::Folder {
        path: dir.to_path_buf(),
        why,
    };
    if !dir.is_dir() {
        return Err(folder("does not exist or is not a folder".into()));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| folder(e.to_string()))? {
        let path = entry.map_err(|e| folder(e.to_string()))?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Load every `.wasm` in `dir`; any bad file is an error naming it.
pub fn load_dir(runtime: &Runtime, dir: &Path) -> Result<Vec<(Loaded, PathBuf)>, PluginError> {
    let files = wasm_files(dir)?;
    if files.is_empty() {
        return Err(PluginError::Folder {
            path: dir.to_path_buf(),
            why: "contains no .wasm plugins (build them with scripts/build-plugins.sh)".into(),
        });
    }
    let mut out: Vec<(Loaded, String, PathBuf)> = Vec::new();
    for path in files {
        let origin = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(|e| PluginError::Refused {
            origin: origin.clone(),
            why: e.to_string(),
        })?;
        let loaded = runtime.load(&bytes, &origin)?;
        if let Some((_, first, _)) = out
            .iter()
            .find(|(l, _, _)| l.description.name == loaded.description.name)
        {
            return Err(PluginError::Duplicate {
                name: loaded.description.name.clone(),
                first: first.clone(),
                second: origin,
            });
        }
        out.push((loaded, origin, path));
    }
    Ok(out.into_iter().map(|(l, _, p)| (l, p)).collect())
}
