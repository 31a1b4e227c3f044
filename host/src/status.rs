//! Counters and status shared between the processing thread and the HTTP API.
//! Written with relaxed atomics on the hot path; read by `/api` and `/health`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    Running,
    Degraded,
    Swapping,
    Failed,
}

/// Per-plugin counters.
#[derive(Debug, Default)]
pub struct PluginCounters {
    pub events_in: AtomicU64,
    pub calls: AtomicU64,
    pub outputs: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub out_of_memory: AtomicU64,
    pub errors: AtomicU64,
    pub dead_lettered: AtomicU64,
    status: AtomicU8,
}

impl PluginCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn status(&self) -> PluginStatus {
        match self.status.load(Ordering::Relaxed) {
            1 => PluginStatus::Degraded,
            2 => PluginStatus::Swapping,
            3 => PluginStatus::Failed,
            _ => PluginStatus::Running,
        }
    }

    pub fn set_status(&self, s: PluginStatus) {
        self.status.store(s as u8, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "events_in": g(&self.events_in),
            "calls": g(&self.calls),
            "outputs": g(&self.outputs),
            "traps": g(&self.traps),
            "timeouts": g(&self.timeouts),
            "out_of_memory": g(&self.out_of_memory),
            "errors": g(&self.errors),
            "dead_lettered": g(&self.dead_lettered),
        })
    }
}

/// What the API shows of a plugin (refreshed on lifecycle changes).
#[derive(Debug, Clone, Serialize)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    pub kind: crate::plugin::describe::Kind,
    pub input: crate::plugin::describe::Input,
    pub key_by: String,
    pub window: crate::plugin::describe::WindowSpec,
    pub fields: Vec<String>,
    pub metrics: Vec<String>,
    pub hash: String,
    pub size_bytes: usize,
    pub state_schema: u32,
    /// A hash of the state type's layout (empty: not known).
    pub state_fingerprint: String,
    pub loaded_at: i64,
    pub config: serde_json::Value,
    pub config_schema: serde_json::Value,
    pub previous: Option<serde_json::Value>,
}

/// Where the source stands, as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Running,
    /// A bounded input ended and every window fired.
    Finished,
    Failed,
}

/// A [`SourceState`] shared between threads.
#[derive(Debug, Default)]
pub struct SourceStatus(AtomicU8);

impl SourceStatus {
    pub fn get(&self) -> SourceState {
        match self.0.load(Ordering::Relaxed) {
            0 => SourceState::Running,
            1 => SourceState::Finished,
            _ => SourceState::Failed,
        }
    }

    pub fn set(&self, s: SourceState) {
        self.0.store(s as u8, Ordering::Relaxed);
    }
}

/// Pipeline-wide counters.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub events_in: AtomicU64,
    pub outputs: AtomicU64,
    pub late_events: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub malformed: AtomicU64,
    pub watermark: AtomicI64,
    pub last_checkpoint: AtomicI64,
    /// Whether the source runs, reached its end or failed.
    pub source: SourceStatus,
    /// Wall-clock ms of the last processed batch.
    pub last_batch_at: AtomicI64,
}

/// The registry the API reads: plugin metadata and counters by name.
#[derive(Default)]
pub struct Registry {
    pub plugins: Mutex<Vec<(PluginMeta, std::sync::Arc<PluginCounters>)>>,
    pub stats: PipelineStats,
}
