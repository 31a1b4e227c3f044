//! What a commit holds, and taking one at a batch boundary: the state delta
//! of every plugin with the positions, the watermark, the code hashes and
//! the output files' lengths — applied to the store at once, or handed to
//! the Kafka committer (see the module docs of `crate::checkpoint`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Committer, fault_phase};
use crate::clock::now_ms;
use crate::event::Position;
use crate::metrics::metrics;
use crate::state::{self, PluginChanges, StateDelta, StateError, StateStore};
use crate::status::Registry;
use crate::window::Watermark;

/// The layout of the meta record and the entries.
/// 4: changed keys travel as one encoded buffer per plugin
/// (`crate::state::Changes`).
/// 5: sliding windows are kept as panes; a window operator's meta holds the
/// watermark of its last firing round.
/// 6: the store's keys are grouped by key group (`crate::state::store`).
/// The meta itself is as in 5, which is still read (the store rewrites
/// its keys when it opens, after marking its meta 6); an older build
/// refuses 6 instead of reading a store whose keys it cannot find as
/// empty.
pub const FORMAT: u32 = 6;

/// The oldest format this build reads.
const READS_FROM: u32 = 5;

/// A plugin as the last commit saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginMeta {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub state_schema: u32,
    /// The operator-wide part of its state.
    pub op_meta: Vec<u8>,
}

/// Everything of a commit except the per-key entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitMeta {
    pub format: u32,
    /// The commit sequence number (the marker committed to Kafka).
    pub id: u64,
    pub taken_at: i64,
    pub source: String,
    /// The next position of every source partition.
    pub positions: Vec<(i32, Position)>,
    pub watermark: Watermark,
    pub plugins: Vec<PluginMeta>,
    /// Every JSONL file with its length at this commit.
    pub files: Vec<(String, u64)>,
    /// Whether the commit went through a Kafka transaction.
    pub transactional: bool,
}

impl state::Meta for CommitMeta {
    fn id(&self) -> u64 {
        self.id
    }

    fn plugins(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| p.name.as_str())
    }

    fn check(&self) -> Result<(), String> {
        if (READS_FROM..=FORMAT).contains(&self.format) {
            Ok(())
        } else {
            Err(format!(
                "format {} (this build reads {READS_FROM} to {FORMAT})",
                self.format
            ))
        }
    }

    fn upgrade(&mut self) {
        self.format = FORMAT;
    }
}

/// A commit of the pipeline's state.
pub type Commit = state::Commit<CommitMeta>;

/// The state store of the pipeline.
pub type Store = StateStore<CommitMeta>;

/// One plugin's state at a commit: who it is and what changed (from every
/// worker's key groups).
pub struct PluginState {
    pub name: String,
    pub hash: String,
    pub version: String,
    pub state_schema: u32,
    pub delta: StateDelta,
}

/// A commit or a checkpoint failed: the host stops.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Kafka(String),
}

/// The processing thread's side of the protocol: it numbers the commits,
/// assembles each from the pipeline, and applies it to the store or hands
/// it to the Kafka committer.
pub struct Checkpoints {
    store: Arc<Store>,
    /// With the transactional Kafka sink: the committer thread.
    kafka: Option<Committer>,
    /// The source the positions belong to.
    source: String,
    /// The id of the last commit.
    id: u64,
    /// When each batch processed since the last commit was read.
    uncommitted: Vec<Instant>,
    registry: Arc<Registry>,
    /// Fault injection for the kill tests (see [`fault_phase`]).
    fault_pause: Option<Duration>,
}

impl Checkpoints {
    /// `id`: the commit the state is at; this run's commits follow it.
    /// The checkpoints of a run: with a Kafka sink, its committer thread
    /// commits outputs, offsets and state in one transaction; without, the
    /// store alone. (`RTAP_FAULT_COMMIT_PAUSE_MS`, for the tests, pauses
    /// every commit.)
    pub fn start(
        store: Arc<Store>,
        kafka: Option<crate::sink::kafka::KafkaSink>,
        source: String,
        id: u64,
        registry: Arc<Registry>,
        changelog: Option<super::changelog::Writer>,
    ) -> Self {
        let pause = super::fault_pause_from_env();
        let committer = kafka.map(|k| Committer::spawn(k, store.clone(), id, pause, changelog));
        Checkpoints::new(store, committer, source, id, registry, pause)
    }

    pub fn new(
        store: Arc<Store>,
        kafka: Option<Committer>,
        source: String,
        id: u64,
        registry: Arc<Registry>,
        fault_pause: Option<Duration>,
    ) -> Self {
        Checkpoints {
            store,
            kafka,
            source,
            id,
            uncommitted: Vec::new(),
            registry,
            fault_pause,
        }
    }

    /// The Kafka committer, when commits go through a transaction.
    pub fn committer(&self) -> Option<&Committer> {
        self.kafka.as_ref()
    }

    /// A batch read at `read_at` was processed: the next commit commits it.
    pub fn processed(&mut self, read_at: Instant) {
        self.uncommitted.push(read_at);
    }

    /// Commit the state at this batch boundary: the caller synced the
    /// sinks outside the transaction first (`files`: each JSONL file with
    /// its length). The commit goes to the committer thread when there is a
    /// Kafka transaction, else it is applied here.
    pub fn commit(
        &mut self,
        plugins: Vec<PluginState>,
        watermark: &Watermark,
        positions: &BTreeMap<i32, Position>,
        files: Vec<(String, u64)>,
    ) -> Result<(), CheckpointError> {
        let started = Instant::now();
        self.id += 1;
        let commit = self.assemble(plugins, watermark, positions, files);
        let (id, taken_at, keys) = (commit.meta.id, commit.meta.taken_at, commit.keys());
        let batches = std::mem::take(&mut self.uncommitted);
        let res = match &self.kafka {
            Some(k) => k.commit(commit, batches).map_err(CheckpointError::Kafka),
            None => {
                fault_phase(self.fault_pause, "synced", id);
                let r = self
                    .store
                    .apply(&commit, true)
                    .map_err(CheckpointError::from);
                if r.is_ok() {
                    metrics().batches_committed(&batches);
                }
                r
            }
        };
        if let Err(e) = res {
            metrics().checkpoints.with_label_values(&["failure"]).inc();
            return Err(e);
        }
        metrics().checkpoints.with_label_values(&["success"]).inc();
        metrics()
            .checkpoint_duration
            .observe(started.elapsed().as_secs_f64());
        self.registry
            .stats
            .last_checkpoint
            .store(taken_at, Ordering::Relaxed);
        tracing::debug!(
            id,
            keys,
            took_ms = started.elapsed().as_millis() as u64,
            "commit"
        );
        Ok(())
    }

    /// The commit of the pipeline's state as it is now.
    fn assemble(
        &self,
        states: Vec<PluginState>,
        watermark: &Watermark,
        positions: &BTreeMap<i32, Position>,
        files: Vec<(String, u64)>,
    ) -> Commit {
        let mut plugins = Vec::with_capacity(states.len());
        let mut changes = Vec::with_capacity(states.len());
        for s in states {
            let (c, op_meta) = PluginChanges::new(&s.name, s.delta);
            plugins.push(PluginMeta {
                name: s.name,
                hash: s.hash,
                version: s.version,
                state_schema: s.state_schema,
                op_meta,
            });
            changes.push(c);
        }
        Commit {
            meta: CommitMeta {
                format: FORMAT,
                id: self.id,
                taken_at: now_ms(),
                source: self.source.clone(),
                positions: positions.iter().map(|(p, pos)| (*p, *pos)).collect(),
                watermark: watermark.clone(),
                plugins,
                files,
                transactional: self.kafka.is_some(),
            },
            plugins: changes,
        }
    }

    /// After a commit: make it a checkpoint — with Kafka, the checkpoint
    /// thread folds the logged commits into the per-key state; without,
    /// the store's memtables go to disk.
    pub fn checkpoint(&self) -> Result<(), CheckpointError> {
        match &self.kafka {
            Some(k) => k.checkpoint(self.id).map_err(CheckpointError::Kafka),
            None => Ok(self.store.flush()?),
        }
    }

    /// Wait until every commit and checkpoint handed over is done (before
    /// the host stops, or after a state-schema change).
    pub fn wait(&self) -> Result<(), CheckpointError> {
        match &self.kafka {
            Some(k) => k.wait().map_err(CheckpointError::Kafka),
            None => Ok(()),
        }
    }
}
