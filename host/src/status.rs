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
    /// Listed by a standby: the group runs it on the active host; this
    /// host runs it once it takes over.
    Standby,
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
            4 => PluginStatus::Standby,
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

/// What this host does for its group, as `/health` and `/api/cluster`
/// report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Loading plugins, opening the source.
    Starting,
    /// Waiting while another host commits for the group (`--standby`).
    Standby,
    /// Restoring the state (from its data dir or the changelog).
    Restoring,
    /// Processing its partitions.
    Active,
}

/// A [`Role`] shared between threads.
#[derive(Debug, Default)]
pub struct RoleStatus(AtomicU8);

impl RoleStatus {
    pub fn get(&self) -> Role {
        match self.0.load(Ordering::Relaxed) {
            0 => Role::Starting,
            1 => Role::Standby,
            2 => Role::Restoring,
            _ => Role::Active,
        }
    }

    pub fn set(&self, r: Role) {
        self.0.store(r as u8, Ordering::Relaxed);
    }
}

/// How this host came to process its partitions: its last rebalance.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Takeover {
    /// Wall-clock ms when it began processing.
    pub at: i64,
    /// Where its state came from: `local` (its data dir), `changelog`
    /// (rebuilt from the group's changelog topic) or `empty`.
    pub state_from: String,
    /// How long the restore took (ms), standby wait excluded.
    pub restore_ms: u64,
    /// Whether it waited as a standby first.
    pub after_standby: bool,
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

/// One processing worker's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Events of its input partitions it took through stage 1.
    pub events: AtomicU64,
    /// Time spent in jobs (ns).
    pub busy_ns: AtomicU64,
    /// Keys held in its key groups, all plugins (at the last commit).
    pub keys: AtomicU64,
    /// Exchange records it applied in stage 2.
    pub exchange_in: AtomicU64,
    /// Exchange records waiting for its stage 2 at the last round.
    pub exchange_queue: AtomicU64,
}

/// How the Kafka clients see the broker, for `/health`: the source's
/// probes (the lag reporter's offset queries) and the transactional sink's
/// waits. Wall-clock ms, 0 when all is well.
#[derive(Debug, Default)]
pub struct KafkaHealth {
    /// Since when the source's probes of the broker fail.
    source_unreachable_since: AtomicI64,
    /// Since when the sink has been inside one commit or waiting for room
    /// in its queue (a commit normally takes milliseconds).
    sink_busy_since: AtomicI64,
    /// The source's last failed probe.
    last_error: Mutex<Option<String>>,
    /// Whether the exchange goes through the exchange topic
    /// (`--exchange kafka`), and since when a round has been crossing it.
    exchange_used: std::sync::atomic::AtomicBool,
    exchange_busy_since: AtomicI64,
}

/// A sink busy for longer than this is waiting for the broker.
pub const KAFKA_SINK_STALLED_MS: i64 = 3_000;

/// Since when a wait on the broker that began at `busy_since` (0: none)
/// has lasted, if for longer than [`KAFKA_SINK_STALLED_MS`] at `now`.
fn stalled(busy_since: &AtomicI64, now: i64) -> Option<i64> {
    let since = busy_since.load(Ordering::Relaxed);
    (since > 0 && now - since > KAFKA_SINK_STALLED_MS).then_some(since)
}

impl KafkaHealth {
    /// A probe of the broker failed at `now` (ms).
    pub fn source_failed(&self, now: i64, error: String) {
        let _ = self.source_unreachable_since.compare_exchange(
            0,
            now.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        *self.last_error.lock().expect("kafka health lock") = Some(error);
    }

    /// A probe of the broker answered.
    pub fn source_reached(&self) {
        self.source_unreachable_since.store(0, Ordering::Relaxed);
    }

    /// The sink starts waiting on the broker (a commit, a full queue) at
    /// `now` (ms).
    pub fn sink_busy(&self, now: i64) {
        self.sink_busy_since.store(now.max(1), Ordering::Relaxed);
    }

    /// The sink's wait is over.
    pub fn sink_done(&self) {
        self.sink_busy_since.store(0, Ordering::Relaxed);
    }

    /// The exchange goes through the exchange topic.
    pub fn exchange_used(&self) {
        self.exchange_used.store(true, Ordering::Relaxed);
    }

    /// A round starts crossing the exchange topic at `now` (ms).
    pub fn exchange_busy(&self, now: i64) {
        self.exchange_busy_since
            .store(now.max(1), Ordering::Relaxed);
    }

    /// The round came back.
    pub fn exchange_done(&self) {
        self.exchange_busy_since.store(0, Ordering::Relaxed);
    }

    /// `None` without the exchange topic; else since when a round has been
    /// crossing it, if for longer than [`KAFKA_SINK_STALLED_MS`] at `now`
    /// (a round normally takes milliseconds).
    pub fn exchange_stalled(&self, now: i64) -> Option<Option<i64>> {
        if !self.exchange_used.load(Ordering::Relaxed) {
            return None;
        }
        Some(stalled(&self.exchange_busy_since, now))
    }

    /// Since when the source cannot reach the broker, and the last error.
    pub fn source_unreachable(&self) -> Option<(i64, Option<String>)> {
        let since = self.source_unreachable_since.load(Ordering::Relaxed);
        (since > 0).then(|| {
            let e = self.last_error.lock().expect("kafka health lock").clone();
            (since, e)
        })
    }

    /// Since when the sink has been waiting for the broker, if for longer
    /// than [`KAFKA_SINK_STALLED_MS`] at `now`.
    pub fn sink_stalled(&self, now: i64) -> Option<i64> {
        stalled(&self.sink_busy_since, now)
    }
}

/// The registry the API reads: plugin metadata and counters by name.
#[derive(Default)]
pub struct Registry {
    pub plugins: Mutex<Vec<(PluginMeta, std::sync::Arc<PluginCounters>)>>,
    pub stats: PipelineStats,
    /// The processing workers, by index.
    pub workers: Mutex<Vec<std::sync::Arc<WorkerCounters>>>,
    /// The per-worker figures of the last status (rates over the last
    /// second), for `/api/pipeline`.
    pub worker_status: Mutex<serde_json::Value>,
    /// The Kafka clients' view of the broker (with `--kafka-brokers`).
    pub kafka: std::sync::Arc<KafkaHealth>,
    /// Standby, restoring or active.
    pub role: RoleStatus,
    /// The source partitions this host processes (empty until active).
    pub partitions: Mutex<Vec<i32>>,
    /// The key groups this host owns, when it shares them with other hosts
    /// (`--share`); none: every key group, once active.
    pub key_groups: Mutex<Option<Vec<u32>>>,
    /// When and how this host began processing.
    pub takeover: Mutex<Option<Takeover>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_health_follows_the_probes_and_the_waits() {
        let h = KafkaHealth::default();
        assert!(h.source_unreachable().is_none());
        h.source_failed(1_000, "timed out".into());
        h.source_failed(2_000, "timed out again".into());
        assert_eq!(
            h.source_unreachable(),
            Some((1_000, Some("timed out again".into())))
        );
        h.source_reached();
        assert!(h.source_unreachable().is_none());
        h.sink_busy(10_000);
        assert_eq!(h.sink_stalled(10_000 + KAFKA_SINK_STALLED_MS), None);
        assert_eq!(h.sink_stalled(10_001 + KAFKA_SINK_STALLED_MS), Some(10_000));
        h.sink_done();
        assert_eq!(h.sink_stalled(100_000), None);
    }
}
