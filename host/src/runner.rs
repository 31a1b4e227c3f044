//! The processing thread: takes batches from the source thread, runs them
//! through the pipeline, writes outputs to the sinks, publishes the pipeline's
//! status once a second, and checkpoints at batch boundaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::control::Command;
use crate::event::Position;
use crate::metrics::metrics;
use crate::pipeline::output::{Output, now_ms};
use crate::pipeline::status::Registry;
use crate::pipeline::{Pipeline, StateTransfer, TimeConfig};
use crate::sink::jsonl::SinkError;
use crate::sink::kafka::Record;
use crate::sink::{Hub, JsonlWriter};
use crate::source::{SourceError, SourceMsg};
use crate::state::{Commit, CommitMeta, PluginChanges, PluginMeta, StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Kafka(String),
    #[error("the source thread stopped unexpectedly")]
    SourceGone,
}

/// How long the processing loop waits for a batch before it looks at
/// lifecycle commands, status and checkpoints anyway.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A bounded input ended; every window was flushed.
    EndOfInput,
    /// `--max-events` reached; state checkpointed for the next run.
    Limit,
    /// Asked to stop (SIGINT/SIGTERM); state checkpointed.
    Shutdown,
}

/// Keeps the last second of batch latencies for the status message.
#[derive(Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn percentiles(&mut self) -> Option<serde_json::Value> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_by(f64::total_cmp);
        let q = |p: f64| self.0[((self.0.len() - 1) as f64 * p).round() as usize];
        let v = serde_json::json!({"p50": q(0.5), "p95": q(0.95), "p99": q(0.99)});
        self.0.clear();
        Some(v)
    }
}

pub struct Runner {
    pub pipeline: Pipeline,
    pub source_name: String,
    pub sinks: Vec<JsonlWriter>,
    pub dead: JsonlWriter,
    pub late: JsonlWriter,
    pub hub: Option<Hub>,
    pub registry: Arc<Registry>,
    pub store: Arc<StateStore>,
    /// How often the state is committed (and the store flushed).
    pub interval: Duration,
    /// With the transactional Kafka sink: how often its transaction commits
    /// (each such commit is also a state commit).
    pub commit_interval: Duration,
    /// The position after the last processed batch, per source partition.
    pub positions: std::collections::BTreeMap<i32, Position>,
    /// The id of the last commit.
    pub commit_id: u64,
    /// Whether anything happened since the last commit.
    pub changed: bool,
    /// Whether the state was restored from a commit (else the run starts
    /// with one, so a crash before the first interval still finds the
    /// length of every output file to cut back to).
    pub restored: bool,
    /// The Kafka partitions whose consumer lag the status reports.
    pub lag_partitions: Vec<i32>,
    pub stop: Arc<AtomicBool>,
    /// Lifecycle commands, applied between batches.
    pub commands: Receiver<Command>,
    pub time: TimeConfig,
    pub influx: Option<crate::sink::influx::InfluxSink>,
    pub kafka: Option<crate::sink::kafka::Committer>,
    /// When each batch processed since the last commit was read.
    pub uncommitted: Vec<Instant>,
    /// Fault injection for the kill tests (`RTAP_FAULT_COMMIT_PAUSE_MS`):
    /// announce each commit phase on stderr and pause in it.
    pub fault_pause: Option<Duration>,
}

impl Runner {
    pub fn run(mut self, rx: Receiver<SourceMsg>) -> Result<Exit, RunError> {
        let mut last_cp = Instant::now();
        let mut last_commit = Instant::now();
        let mut last_status = Instant::now();
        let mut events_at_status = 0u64;
        let mut outputs_at_status = 0u64;
        let mut latencies = Latencies::default();
        let stats = &self.registry.clone().stats;
        if !self.restored {
            self.checkpoint_now()?;
        }
        loop {
            match rx.recv_timeout(IDLE_TICK) {
                Ok(SourceMsg::Batch(batch)) => {
                    self.pipeline.process(&batch);
                    self.positions.extend(batch.positions());
                    self.uncommitted.push(batch.created);
                    self.changed = true;
                    self.drain()?;
                    // Counted after `drain` has published the batch's
                    // watermark: whoever reads `events_in` (Acquire) and
                    // then the watermark sees this batch's, never the one
                    // before (a test that waited for N events read a
                    // watermark one batch behind).
                    stats
                        .malformed
                        .fetch_add(batch.malformed.len() as u64, Ordering::Relaxed);
                    stats
                        .events_in
                        .fetch_add(batch.events.len() as u64, Ordering::Release);
                    for (p, events) in batch.runs() {
                        metrics()
                            .events_in
                            .with_label_values(&[&*batch.origin.source, &p.to_string()])
                            .inc_by(events.len() as u64);
                    }
                    let latency = batch.created.elapsed().as_secs_f64();
                    metrics().e2e_latency.observe(latency);
                    latencies.0.push(latency * 1000.0);
                    stats.last_batch_at.store(now_ms(), Ordering::Relaxed);
                }
                Ok(SourceMsg::End { limit }) => {
                    if limit {
                        self.drain()?;
                        self.checkpoint_now()?;
                        return Ok(Exit::Limit);
                    }
                    self.pipeline.finish();
                    self.drain()?;
                    // Commit the final outputs and keep that commit: a
                    // restart finds the source at its end and has nothing
                    // left to do. (Clearing the store here opened a window
                    // of ~85 ms before the process exited in which a
                    // SIGKILL made the restart a fresh run that appended
                    // every output a second time.) Recomputing a finished
                    // job is `--no-restore`.
                    self.checkpoint_now()?;
                    stats.source_done.store(1, Ordering::Relaxed);
                    return Ok(Exit::EndOfInput);
                }
                Ok(SourceMsg::Failed(e)) => {
                    stats.source_done.store(2, Ordering::Relaxed);
                    return Err(e.into());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(RunError::SourceGone),
            }
            self.apply_commands()?;
            if last_status.elapsed() >= Duration::from_secs(1) {
                let secs = last_status.elapsed().as_secs_f64();
                let events = stats.events_in.load(Ordering::Relaxed);
                let outputs = stats.outputs.load(Ordering::Relaxed);
                let status = serde_json::json!({
                    "type": "pipeline",
                    "time": now_ms(),
                    "source": self.source_name,
                    "events_in": events,
                    "events_per_sec": (events - events_at_status) as f64 / secs,
                    "outputs_per_sec": (outputs - outputs_at_status) as f64 / secs,
                    "watermark": self.pipeline.wm.current().max(0),
                    "max_event_time": self.pipeline.wm.max_event_time(),
                    "late_events": stats.late_events.load(Ordering::Relaxed),
                    "dead_lettered": stats.dead_lettered.load(Ordering::Relaxed),
                    "e2e_latency_ms": latencies.percentiles(),
                    "consumer_lag": self
                        .lag_partitions
                        .iter()
                        .filter_map(|p| {
                            let g = metrics().consumer_lag.get_metric_with_label_values(&[&p.to_string()]).ok()?;
                            Some((p.to_string(), serde_json::json!(g.get())))
                        })
                        .collect::<serde_json::Map<_, _>>(),
                    "last_checkpoint": Some(stats.last_checkpoint.load(Ordering::Relaxed)).filter(|&t| t > 0),
                });
                if let Some(hub) = &self.hub {
                    hub.publish(Arc::from(status.to_string()));
                }
                events_at_status = events;
                outputs_at_status = outputs;
                last_status = Instant::now();
            }
            if last_cp.elapsed() >= self.interval {
                self.checkpoint()?;
                last_cp = Instant::now();
                last_commit = last_cp;
            } else if let Some(k) = &self.kafka {
                k.check().map_err(RunError::Kafka)?;
                // One commit in flight at a time: the interval stretches
                // when the broker is slower than it.
                if self.changed && last_commit.elapsed() >= self.commit_interval && !k.busy() {
                    self.commit(false)?;
                    last_commit = Instant::now();
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                self.checkpoint_now()?;
                return Ok(Exit::Shutdown);
            }
        }
    }

    /// Apply lifecycle commands at this batch boundary: the barrier between
    /// the events of one plugin version and the next.
    fn apply_commands(&mut self) -> Result<(), RunError> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Sample { name, n, reply } => {
                    let v = self
                        .pipeline
                        .slot(&name)
                        .map(|s| s.sample_states(n))
                        .unwrap_or_default();
                    let _ = reply.send(v);
                }
                Command::Install {
                    identity,
                    calls,
                    counters,
                    transfer,
                    reply,
                } => {
                    let res = self
                        .pipeline
                        .install(*identity, calls, counters, transfer, &self.time);
                    // A new state schema is made durable at once: a restart
                    // must not pair the old state with the new code.
                    self.changed = true;
                    if res.is_ok() && transfer != StateTransfer::Keep {
                        self.checkpoint_now()?;
                    }
                    let _ = reply.send(res);
                }
                Command::Remove { name, reply } => {
                    self.changed = true;
                    let _ = reply.send(self.pipeline.remove(&name));
                }
            }
        }
        Ok(())
    }

    /// Write what the pipeline emitted to every sink.
    fn drain(&mut self) -> Result<(), RunError> {
        let stats = &self.registry.stats;
        let outputs = std::mem::take(&mut self.pipeline.outputs);
        if !outputs.is_empty() {
            let mut data_outputs = 0u64;
            let mut points = Vec::new();
            let mut records = Vec::new();
            for out in &outputs {
                if let (Output::Metric(m), Some(_)) = (out, &self.influx)
                    && let Some(line) = crate::sink::influx::line_of(m)
                {
                    points.push(line);
                }
                let line = out.to_json();
                // Lifecycle events go to the log and the dashboard, not to
                // the data sinks.
                if let Output::Plugin(p) = out {
                    tracing::info!(plugin = %p.plugin, event = p.event, version = %p.version, "{}", p.message);
                } else {
                    data_outputs += 1;
                    for s in &mut self.sinks {
                        s.write_line(&line)?;
                    }
                    if self.kafka.is_some() {
                        records.extend(Record::of(out, &line));
                    }
                }
                if let Some(hub) = &self.hub {
                    hub.publish(Arc::from(line));
                }
            }
            if let Some(k) = &self.kafka {
                k.send(records).map_err(RunError::Kafka)?;
            }
            stats.outputs.fetch_add(data_outputs, Ordering::Relaxed);
            self.changed = true;
            if let Some(influx) = &self.influx {
                influx.push(points);
            }
            for s in &mut self.sinks {
                s.flush()?;
            }
        }
        let dead = std::mem::take(&mut self.pipeline.dead);
        if !dead.is_empty() {
            stats
                .dead_lettered
                .fetch_add(dead.len() as u64, Ordering::Relaxed);
            for d in &dead {
                metrics().dead_letters.with_label_values(&[d.reason]).inc();
                self.dead
                    .write_line(&serde_json::to_string(d).expect("dead letters serialize"))?;
            }
            self.dead.flush()?;
        }
        let late = std::mem::take(&mut self.pipeline.late);
        if !late.is_empty() {
            stats
                .late_events
                .fetch_add(late.len() as u64, Ordering::Relaxed);
            metrics().late_events.inc_by(late.len() as u64);
            for l in &late {
                self.late
                    .write_line(&serde_json::to_string(l).expect("late events serialize"))?;
            }
            self.late.flush()?;
        }
        stats
            .watermark
            .store(self.pipeline.wm.current(), Ordering::Relaxed);
        Ok(())
    }

    /// A checkpoint: a commit with every file fsynced; with Kafka, the
    /// committer then folds the logged commits into the per-key state. The
    /// store's memtables go to disk.
    fn checkpoint(&mut self) -> Result<(), RunError> {
        self.commit(true)?;
        match &self.kafka {
            Some(k) => k.checkpoint(self.commit_id).map_err(RunError::Kafka)?,
            None => self.store.flush()?,
        }
        Ok(())
    }

    /// A checkpoint that is complete when this returns (before the host
    /// stops, or after a state-schema change).
    fn checkpoint_now(&mut self) -> Result<(), RunError> {
        self.checkpoint()?;
        if let Some(k) = &self.kafka {
            k.wait().map_err(RunError::Kafka)?;
        }
        Ok(())
    }

    /// Commit the state at this batch boundary (see `crate::state` for the
    /// protocol): sinks outside the transaction first, then the state delta
    /// with positions and watermark — handed to the committer thread when
    /// there is a Kafka transaction, else applied here. `fsync`: make the
    /// JSONL files durable too (else they are flushed to the OS, which is
    /// enough for a process crash).
    fn commit(&mut self, fsync: bool) -> Result<(), RunError> {
        let started = Instant::now();
        // Points emitted before this commit must be written or on disk.
        if let Some(influx) = &self.influx {
            influx.sync();
        }
        let mut files = Vec::new();
        for w in self
            .sinks
            .iter_mut()
            .chain([&mut self.dead, &mut self.late])
        {
            files.extend(w.sync(fsync || self.kafka.is_none())?);
        }
        self.commit_id += 1;
        let mut plugins = Vec::with_capacity(self.pipeline.slots.len());
        let mut changes = Vec::with_capacity(self.pipeline.slots.len());
        for s in &mut self.pipeline.slots {
            let delta = s.state_delta();
            let (c, op_meta) = PluginChanges::new(&s.name, delta);
            let l = &s.identity;
            plugins.push(PluginMeta {
                name: s.name.to_string(),
                hash: l.hash.clone(),
                version: l.description.version.clone(),
                state_schema: l.description.state_schema,
                op_meta,
            });
            changes.push(c);
        }
        let commit = Commit {
            meta: CommitMeta {
                format: crate::state::FORMAT,
                id: self.commit_id,
                taken_at: now_ms(),
                source: self.source_name.clone(),
                positions: self.positions.iter().map(|(p, pos)| (*p, *pos)).collect(),
                watermark: self.pipeline.wm.clone(),
                plugins,
                files,
                transactional: self.kafka.is_some(),
            },
            plugins: changes,
        };
        let (id, taken_at, keys) = (commit.meta.id, commit.meta.taken_at, commit.keys());
        let batches = std::mem::take(&mut self.uncommitted);
        let res = match &self.kafka {
            Some(k) => k.commit(commit, batches).map_err(RunError::Kafka),
            None => {
                crate::state::fault_phase(self.fault_pause, "synced", id);
                let r = self.store.apply(&commit, true).map_err(RunError::from);
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
        self.changed = false;
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
}
