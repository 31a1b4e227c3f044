//! The processing thread: takes batches from the source thread, runs them
//! through the pipeline, hands the outputs to the sinks ([`Outputs`]),
//! applies lifecycle commands between batches, publishes the pipeline's
//! status once a second, and commits and checkpoints at batch boundaries
//! (`crate::checkpoint`).

mod outputs;
mod status;

pub use outputs::Outputs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoints;
use crate::checkpoint::commit::CheckpointError;
use crate::clock::now_ms;
use crate::control::Command;
use crate::event::{EventBatch, Position};
use crate::metrics::metrics;
use crate::pipeline::{Pipeline, StateTransfer, TimeConfig};
use crate::sink::jsonl::SinkError;
use crate::source::{SourceError, SourceMsg};
use crate::status::{Registry, SourceState};
use status::StatusReport;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
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

pub struct Runner {
    pub pipeline: Pipeline,
    pub outputs: Outputs,
    pub checkpoints: Checkpoints,
    pub registry: Arc<Registry>,
    /// The source's name, for the status.
    pub source_name: String,
    /// How often the state is checkpointed (and the store flushed).
    pub interval: Duration,
    /// With the transactional Kafka sink: how often its transaction commits
    /// (each such commit is also a state commit).
    pub commit_interval: Duration,
    /// The position after the last processed batch, per source partition.
    pub positions: BTreeMap<i32, Position>,
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
    /// The last batch processed: recent events for an upload's smoke test
    /// (`crate::control::smoke`). Kept by moving it, not copying.
    pub last_batch: Option<EventBatch>,
}

impl Runner {
    pub fn run(mut self, rx: Receiver<SourceMsg>) -> Result<Exit, RunError> {
        let mut last_cp = Instant::now();
        let mut last_commit = Instant::now();
        let mut report = StatusReport::new(&self.registry);
        if !self.restored {
            self.checkpoint_now()?;
        }
        loop {
            match rx.recv_timeout(IDLE_TICK) {
                Ok(SourceMsg::Batch(batch)) => {
                    let latency = self.process(&batch)?;
                    report.batch(latency);
                    self.last_batch = Some(batch);
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
                    self.registry.stats.source.set(SourceState::Finished);
                    return Ok(Exit::EndOfInput);
                }
                Ok(SourceMsg::Failed(e)) => {
                    self.registry.stats.source.set(SourceState::Failed);
                    return Err(e.into());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(RunError::SourceGone),
            }
            self.apply_commands()?;
            if let Some(status) = report.due(&self) {
                self.outputs.publish(status.to_string());
            }
            if last_cp.elapsed() >= self.interval {
                self.checkpoint()?;
                last_cp = Instant::now();
                last_commit = last_cp;
            } else if let Some(k) = self.checkpoints.committer() {
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

    /// Run one batch through the pipeline and its outputs to the sinks;
    /// returns its latency (s) from being read to its outputs written.
    fn process(&mut self, batch: &EventBatch) -> Result<f64, RunError> {
        self.pipeline.process(batch);
        self.positions.extend(batch.positions());
        self.checkpoints.processed(batch.created);
        self.changed = true;
        self.drain()?;
        // Counted after `drain` has published the batch's watermark:
        // whoever reads `events_in` (Acquire) and then the watermark sees
        // this batch's, never the one before (a test that waited for N
        // events read a watermark one batch behind).
        let stats = &self.registry.stats;
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
        stats.last_batch_at.store(now_ms(), Ordering::Relaxed);
        Ok(latency)
    }

    /// Apply lifecycle commands at this batch boundary: the barrier between
    /// the events of one plugin version and the next.
    fn apply_commands(&mut self) -> Result<(), RunError> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Sample {
                    name,
                    n,
                    events,
                    reply,
                } => {
                    let states = self
                        .pipeline
                        .slot(&name)
                        .map(|s| s.sample_states(n))
                        .unwrap_or_default();
                    let events = self.last_batch.as_ref().map(|b| b.head(events));
                    let _ = reply.send(crate::control::Sample { states, events });
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
                    self.changed = true;
                    // A new state schema is made durable at once: a restart
                    // must not pair the old state with the new code.
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

    /// Hand what the pipeline emitted to the sinks.
    fn drain(&mut self) -> Result<(), RunError> {
        if self
            .outputs
            .write(&mut self.pipeline, self.checkpoints.committer())?
        {
            self.changed = true;
        }
        self.registry
            .stats
            .watermark
            .store(self.pipeline.wm.current(), Ordering::Relaxed);
        Ok(())
    }

    /// A checkpoint: a commit with every file fsynced, then (with Kafka)
    /// the logged commits folded into the per-key state, or the store's
    /// memtables to disk.
    fn checkpoint(&mut self) -> Result<(), RunError> {
        self.commit(true)?;
        Ok(self.checkpoints.checkpoint()?)
    }

    /// A checkpoint that is complete when this returns (before the host
    /// stops, or after a state-schema change).
    fn checkpoint_now(&mut self) -> Result<(), RunError> {
        self.checkpoint()?;
        Ok(self.checkpoints.wait()?)
    }

    /// Commit the state at this batch boundary: the sinks outside the
    /// transaction first, then the state delta with positions and
    /// watermark. `fsync`: make the JSONL files durable too (else they are
    /// flushed to the OS, which is enough for a process crash; without a
    /// Kafka transaction they are always fsynced).
    fn commit(&mut self, fsync: bool) -> Result<(), RunError> {
        let transactional = self.checkpoints.committer().is_some();
        let files = self.outputs.sync(fsync || !transactional)?;
        self.checkpoints
            .commit(&mut self.pipeline, &self.positions, files)?;
        self.changed = false;
        Ok(())
    }
}
