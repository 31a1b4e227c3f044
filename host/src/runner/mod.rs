//! The coordinator: takes rounds of batches from the source's readers
//! ([`feed`]), plans each event's watermark, runs the round's three stages
//! on the workers ([`workers`]) — stage 1 where the runs were read, the
//! exchange, stage 2 at the key groups' owners, stage 3 for the metric
//! detectors — hands the outputs to the sinks ([`Outputs`]), applies
//! lifecycle commands between rounds (a barrier across all workers), and
//! commits and checkpoints between rounds: every cut is consistent across
//! workers (`crate::checkpoint`). Publishes the status once a second.

mod emitted;
mod exchange;
mod feed;
mod outputs;
mod status;
mod workers;

pub use feed::Feed;
pub use outputs::Outputs;
pub use workers::Workers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoints;
use crate::checkpoint::commit::{CheckpointError, PluginState};
use crate::clock::now_ms;
use crate::config::ExchangeMode;
use crate::control::Command;
use crate::event::{EventBatch, Position};
use crate::metrics::metrics;
use crate::operator::aggregate::combine_meta;
use crate::pipeline::exchange::{LateFound, Round};
use crate::pipeline::{
    FINISH_ROUNDS, Health, MetricRouter, ShadowBoard, Stage1Out, StateTransfer, SwapReport,
    TimeConfig, late_found, malformed,
};
use crate::sink::jsonl::SinkError;
use crate::source::SourceError;
use crate::state::StateDelta;
use crate::status::{Registry, SourceState};
use crate::window::Watermark;
use emitted::Emitted;
pub use exchange::Crossing;
use exchange::{Inbox, Sent};
use feed::Next;
use status::StatusReport;
use workers::{WorkerGone, count};

/// With Kafka, a commit at least this often, events or not (see the
/// commit condition in `Runner::run`).
const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Worker(#[from] WorkerGone),
    #[error("{0}")]
    Kafka(String),
    #[error("the source thread stopped unexpectedly")]
    SourceGone,
    #[error("worker {worker}'s stage 2: {error}")]
    Exchange {
        worker: usize,
        error: crate::pipeline::wire::WireError,
    },
}

/// How long the coordinator waits for a batch before it looks at
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
    pub workers: Workers,
    /// The watermark over every input partition.
    pub wm: Watermark,
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
    /// Lifecycle commands, applied between rounds.
    pub commands: Receiver<crate::control::Queued>,
    pub time: TimeConfig,
    /// The plugins' names by slot, and the metric detectors' routing: the
    /// same on every worker (refreshed after every lifecycle change).
    pub names: Vec<Arc<str>>,
    pub router: MetricRouter,
    /// The last batch processed: recent events for an upload's smoke test
    /// (`crate::control::smoke`). Shared with its round, not copied.
    pub last_batch: Option<Arc<EventBatch>>,
    /// The shadow versions' comparisons (shared with the lifecycle service
    /// and the API).
    pub shadows: Arc<ShadowBoard>,
    /// How records cross between workers (`--exchange`).
    pub exchange: ExchangeMode,
    /// With `--exchange kafka`: the exchange topic's tasks and owners.
    pub crossing: Option<Crossing>,
}

impl Runner {
    pub fn run(mut self, mut feed: Feed) -> Result<Exit, RunError> {
        let mut last_cp = Instant::now();
        let mut last_commit = Instant::now();
        let mut report = StatusReport::new(&self.registry);
        if !self.restored {
            self.checkpoint_now()?;
        }
        loop {
            match feed.next(IDLE_TICK) {
                Next::Round { batches, ended } => {
                    for p in ended {
                        self.wm.retire(p);
                    }
                    if !batches.is_empty() {
                        let latency = self.process(batches)?;
                        report.batch(latency);
                    }
                }
                Next::End { limit: true } => {
                    self.checkpoint_now()?;
                    return Ok(Exit::Limit);
                }
                Next::End { limit: false } => {
                    self.finish()?;
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
                Next::Failed(e) => {
                    self.registry.stats.source.set(SourceState::Failed);
                    return Err(e.into());
                }
                Next::Idle => {}
                Next::Gone => return Err(RunError::SourceGone),
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
                // And at least once a second without events: a host whose
                // data dir does not fit the group (a standby) tells a live
                // host from a dead one by the group's marker moving.
                let due = self.changed || last_commit.elapsed() >= HEARTBEAT;
                if due && last_commit.elapsed() >= self.commit_interval && !k.busy() {
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

    /// One round through the three stages on the workers, and its outputs
    /// to the sinks; returns the latency (s) of its oldest batch, from
    /// being read to its outputs written.
    fn process(&mut self, batches: Vec<EventBatch>) -> Result<f64, RunError> {
        let read_at = batches.iter().map(|b| b.created).min().expect("a batch");
        for b in &batches {
            self.positions.extend(b.positions());
            self.checkpoints.processed(b.created);
        }
        let events: usize = batches.iter().map(|b| b.events.len()).sum();
        let malformed_n: usize = batches.iter().map(|b| b.malformed.len()).sum();
        let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
        for b in &batches {
            for (p, r) in b.runs() {
                *per_partition.entry(p).or_default() += r.len() as u64;
            }
        }
        let source = batches[0].origin.source.clone();
        let batches = batches.into_iter().map(Arc::new).collect();
        let round = Arc::new(Round::plan(
            &mut self.wm,
            batches,
            now_ms(),
            self.workers.len(),
        ));
        self.last_batch = round.batches.last().cloned();
        self.changed = true;
        self.run_round(&round)?;
        self.registry
            .stats
            .watermark
            .store(self.wm.current(), Ordering::Relaxed);
        // Counted after the round's outputs and watermark are out: whoever
        // reads `events_in` (Acquire) and then the watermark sees this
        // round's, never the one before (a test that waited for N events
        // read a watermark one batch behind).
        let stats = &self.registry.stats;
        stats
            .malformed
            .fetch_add(malformed_n as u64, Ordering::Relaxed);
        stats.events_in.fetch_add(events as u64, Ordering::Release);
        for (p, n) in per_partition {
            metrics()
                .events_in
                .with_label_values(&[&*source, &p.to_string()])
                .inc_by(n);
        }
        let latency = read_at.elapsed().as_secs_f64();
        metrics().e2e_latency.observe(latency);
        stats.last_batch_at.store(now_ms(), Ordering::Relaxed);
        Ok(latency)
    }

    /// The three stages of a round, its late events and dead letters, and
    /// the outputs to the sinks.
    fn run_round(&mut self, round: &Arc<Round>) -> Result<(), RunError> {
        let n = self.workers.len();
        let mut emitted = Emitted {
            dead: malformed(round),
            ..Emitted::default()
        };
        // Stage 1: each worker an equal share of the round's events, as
        // consecutive runs.
        let mut runs: Vec<Vec<usize>> = vec![Vec::new(); n];
        let total: u64 = round
            .runs
            .iter()
            .map(|r| u64::from(r.events.end - r.events.start))
            .sum();
        let mut before = 0u64;
        for (ri, r) in round.runs.iter().enumerate() {
            let w = (before * n as u64)
                .checked_div(total)
                .map_or(ri % n, |w| (w as usize).min(n - 1));
            before += u64::from(r.events.end - r.events.start);
            count(
                &self.workers.counters(w).events,
                u64::from(r.events.end - r.events.start),
            );
            runs[w].push(ri);
        }
        let inputs = runs.into_iter().map(|r| (round.clone(), r)).collect();
        let wire = self.exchange != ExchangeMode::Memory;
        let stage1 =
            self.workers
                .each(inputs, move |p, (round, runs): (Arc<Round>, Vec<usize>)| {
                    let mut out = Stage1Out::new(p.shard.workers);
                    p.stage1(&round, &runs, &mut out);
                    let sent = Sent::of(p, &round, std::mem::take(&mut out.records), wire);
                    (sent, out.late, Emitted::take(p))
                })?;
        // The exchange.
        let mut inbox: Vec<Inbox> = (0..n).map(|_| Inbox::default()).collect();
        let mut to_cross = Vec::new();
        for (sent, late, e) in stage1 {
            if self.crossing.is_some() {
                to_cross.push(sent);
            } else {
                for (w, s) in sent.into_iter().enumerate() {
                    inbox[w].take(s);
                }
            }
            emitted.late.extend(late);
            emitted.append(e);
        }
        if let Some(c) = &mut self.crossing {
            inbox = c.cross(to_cross, round.end_wm).map_err(RunError::Kafka)?;
        }
        for (w, i) in inbox.iter().enumerate() {
            let c = self.workers.counters(w);
            c.exchange_queue.store(i.records, Ordering::Relaxed);
            count(&c.exchange_in, i.records);
        }
        self.stages_2_and_3(round, inbox, &mut emitted)?;
        let mut found: Vec<LateFound> = emitted.late.iter().map(|m| m.resolve(round)).collect();
        found.append(&mut emitted.found);
        let late = late_found(found, &self.names);
        let events = round
            .runs
            .iter()
            .map(|r| (r.events.end - r.events.start) as usize)
            .sum();
        self.write(emitted, late, events)
    }

    /// Stage 2 (the records at their owners, then everything due at the
    /// round's watermark fires) and stage 3 (the metrics to the metric
    /// detectors).
    fn stages_2_and_3(
        &mut self,
        round: &Arc<Round>,
        inbox: Vec<Inbox>,
        emitted: &mut Emitted,
    ) -> Result<(), RunError> {
        let inputs = inbox.into_iter().map(|r| (round.clone(), r)).collect();
        let stage2 = self
            .workers
            .each(inputs, |p, (round, inbox): (Arc<Round>, Inbox)| {
                let found = inbox.stage2(p, &round)?;
                Ok(Emitted {
                    found,
                    ..Emitted::take(p)
                })
            })?;
        let mut metrics = Vec::with_capacity(stage2.len());
        for (w, r) in stage2.into_iter().enumerate() {
            let mut e = r.map_err(|error| RunError::Exchange { worker: w, error })?;
            metrics.push(std::mem::take(&mut e.metrics));
            emitted.append(e);
        }
        let deliveries = self.router.routes(&metrics, self.workers.len());
        let wm = round.end_wm;
        let stage3 = self.workers.each(deliveries, move |p, d| {
            p.stage3(d, wm);
            Emitted::take(p)
        })?;
        for e in stage3 {
            emitted.append(e);
        }
        Ok(())
    }

    /// A round's outputs to the sinks (`events`: its input events), after
    /// the shadows' comparison.
    fn write(
        &mut self,
        mut e: Emitted,
        late: Vec<crate::output::LateEvent>,
        events: usize,
    ) -> Result<(), RunError> {
        if !self.shadows.is_empty() {
            let (shadow, dead) = (
                std::mem::take(&mut e.shadow),
                std::mem::take(&mut e.shadow_dead),
            );
            self.shadows.compare_round(events, &e.outputs, shadow, dead);
        }
        let had = !e.outputs.is_empty();
        self.outputs.write(
            e.outputs,
            e.lines,
            e.dead,
            late,
            self.checkpoints.committer(),
        )?;
        self.changed |= had;
        Ok(())
    }

    /// End of a bounded input: the watermark goes to +∞ and everything
    /// fires. Timers set while the last ones fire are due at once too (a
    /// timer that re-arms, a chain of reminders), as in the SDK's test
    /// harness and in Flink: fire round after round until none is left — at
    /// most FINISH_ROUNDS, with a warning naming a plugin that re-arms for
    /// ever.
    fn finish(&mut self) -> Result<(), RunError> {
        let last = Arc::new(Round {
            end_wm: i64::MAX,
            ..Round::default()
        });
        for _ in 0..FINISH_ROUNDS {
            let mut emitted = Emitted::default();
            let inbox = (0..self.workers.len()).map(|_| Inbox::default()).collect();
            self.stages_2_and_3(&last, inbox, &mut emitted)?;
            self.write(emitted, Vec::new(), 0)?;
            if !self.workers.all(|p| p.timers_pending())?.contains(&true) {
                return Ok(());
            }
        }
        self.workers.all(|p| p.warn_timers_left())?;
        Ok(())
    }

    /// Apply lifecycle commands at this round boundary: the barrier, on
    /// every worker, between the events of one plugin version and the next.
    fn apply_commands(&mut self) -> Result<(), RunError> {
        while let Ok(queued) = self.commands.try_recv() {
            // Its caller gave up waiting, and was told it was not made.
            if !queued.ticket.take() {
                continue;
            }
            match queued.command {
                Command::Sample {
                    name,
                    n,
                    events,
                    reply,
                } => {
                    let samples = self.workers.all(move |p| {
                        p.slot(&name)
                            .map(|s| s.sample_states(n))
                            .unwrap_or_default()
                    })?;
                    let mut states: Vec<Vec<u8>> = samples.into_iter().flatten().collect();
                    states.truncate(n);
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
                    let res = self.install(*identity, calls, counters, transfer)?;
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
                    let n = name.clone();
                    let removed = self.workers.all(move |p| p.remove(&n))?;
                    self.shadows.end(&name);
                    self.refresh_plugins()?;
                    let _ = reply.send(removed.contains(&true));
                }
                Command::InstallShadow {
                    identity,
                    calls,
                    start,
                    transfer,
                    reply,
                } => {
                    let res = self.install_shadow(*identity, calls, *start, transfer)?;
                    let _ = reply.send(res);
                }
                Command::PromoteShadow {
                    name,
                    counters,
                    reply,
                } => {
                    let n = name.clone();
                    let promoted = self
                        .workers
                        .all(move |p| p.promote_shadow(&n, counters.clone()))?;
                    let report = self.shadows.end(&name);
                    self.refresh_plugins()?;
                    if promoted.contains(&true) {
                        // The promoted state replaces the plugin's at once:
                        // a restart must not pair it with the old code.
                        self.changed = true;
                        self.checkpoint_now()?;
                    }
                    let _ = reply.send(report.filter(|_| promoted.contains(&true)));
                }
                Command::DiscardShadow { name, reply } => {
                    let n = name.clone();
                    let discarded = self.workers.all(move |p| p.discard_shadow(&n))?;
                    let report = self.shadows.end(&name);
                    self.refresh_plugins()?;
                    let _ = reply.send(report.filter(|_| discarded.contains(&true)));
                }
            }
        }
        Ok(())
    }

    /// Install a version on every worker, each with its own instance: all
    /// stage it (taking or migrating their shard's state), then all switch;
    /// if one fails, all go back.
    fn install(
        &mut self,
        identity: crate::plugin::Identity,
        calls: Vec<Box<dyn crate::plugin::PluginCalls>>,
        counters: Arc<crate::status::PluginCounters>,
        transfer: StateTransfer,
    ) -> Result<Result<SwapReport, String>, RunError> {
        let health: Arc<Mutex<Health>> = Arc::default();
        let time = self.time;
        let inputs = calls
            .into_iter()
            .map(|c| (identity.clone(), c, counters.clone(), health.clone()))
            .collect();
        let staged = self.workers.each(inputs, move |p, (id, c, cnt, h)| {
            p.stage_install(id, c, cnt, transfer, &time, h)
        })?;
        if let Some(e) = staged.iter().find_map(|r| r.as_ref().err()) {
            let e = e.clone();
            self.workers.all(|p| p.unstage())?;
            return Ok(Err(e));
        }
        let reports = self.workers.all(|p| p.switch_staged())?;
        self.refresh_plugins()?;
        let mut report = reports[0].clone();
        report.states_migrated = reports.iter().map(|r| r.states_migrated).sum();
        report.stall_us = reports.iter().map(|r| r.stall_us).max().unwrap_or(0);
        Ok(Ok(report))
    }

    /// Start a shadow version on every worker, each with its own instance
    /// and a copy (or migrated copy) of its shard's live state; if one
    /// fails, none keeps it. Returns the states copied or migrated.
    fn install_shadow(
        &mut self,
        identity: crate::plugin::Identity,
        calls: Vec<Box<dyn crate::plugin::PluginCalls>>,
        start: crate::pipeline::ShadowStart,
        transfer: StateTransfer,
    ) -> Result<Result<usize, String>, RunError> {
        let health: Arc<Mutex<Health>> = Arc::default();
        let time = self.time;
        let counters = start.counters.clone();
        let inputs = calls
            .into_iter()
            .map(|c| (identity.clone(), c, counters.clone(), health.clone()))
            .collect();
        let done = self.workers.each(inputs, move |p, (id, c, cnt, h)| {
            p.install_shadow(id, c, cnt, transfer, &time, h)
        })?;
        let name = start.plugin.clone();
        if let Some(e) = done.iter().find_map(|r| r.as_ref().err()) {
            let e = e.clone();
            self.workers.all(move |p| p.discard_shadow(&name))?;
            self.shadows.end(&start.plugin);
            self.refresh_plugins()?;
            return Ok(Err(e));
        }
        let copied: usize = done.into_iter().map(|r| r.unwrap_or(0)).sum();
        let mut start = start;
        start.state = start.state.replace("{states}", &copied.to_string());
        self.shadows.start(start);
        self.refresh_plugins()?;
        Ok(Ok(copied))
    }

    /// After a lifecycle change: the names and the metric routing again.
    fn refresh_plugins(&mut self) -> Result<(), RunError> {
        let mut got = self.workers.all(|p| (p.names(), p.router()))?;
        let (names, router) = got.swap_remove(0);
        self.names = names;
        self.router = router;
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

    /// Commit the state at this round boundary — one cut across every
    /// worker: the sinks outside the transaction first, then every worker's
    /// state changes with the positions and the watermark. `fsync`: make the
    /// JSONL files durable too (else they are flushed to the OS, which is
    /// enough for a process crash; without a Kafka transaction they are
    /// always fsynced).
    fn commit(&mut self, fsync: bool) -> Result<(), RunError> {
        let transactional = self.checkpoints.committer().is_some();
        let files = self.outputs.sync(fsync || !transactional)?;
        let shards = self.workers.all(|p| {
            let keys: usize = p.slots.iter().map(|s| s.op.keys()).sum();
            let plugins: Vec<(String, String, String, u32)> = p
                .live_slots()
                .map(|s| {
                    let d = &s.identity.description;
                    (
                        s.name.to_string(),
                        s.identity.hash.clone(),
                        d.version.clone(),
                        d.state_schema,
                    )
                })
                .collect();
            (plugins, p.deltas(), keys)
        })?;
        let mut plugins: Vec<PluginState> = Vec::new();
        let mut deltas: Vec<Vec<StateDelta>> = Vec::new();
        for (w, (names, d, keys)) in shards.into_iter().enumerate() {
            self.workers
                .counters(w)
                .keys
                .store(keys as u64, Ordering::Relaxed);
            if plugins.is_empty() {
                plugins = names
                    .into_iter()
                    .map(|(name, hash, version, state_schema)| PluginState {
                        name,
                        hash,
                        version,
                        state_schema,
                        delta: StateDelta::default(),
                    })
                    .collect();
            }
            deltas.push(d);
        }
        for (si, plugin) in plugins.iter_mut().enumerate() {
            let parts: Vec<StateDelta> = deltas
                .iter_mut()
                .map(|d| std::mem::take(&mut d[si]))
                .collect();
            plugin.delta = merge_deltas(parts);
        }
        self.checkpoints
            .commit(plugins, &self.wm, &self.positions, files)?;
        self.changed = false;
        Ok(())
    }
}

/// One plugin's changes from every worker's key groups: their changed keys
/// together (disjoint), a rewrite if any rewrites (all do: a new state
/// reaches every worker at once), the operator-wide parts combined.
fn merge_deltas(parts: Vec<StateDelta>) -> StateDelta {
    let rewrite = parts.iter().any(|d| d.rewrite);
    let metas: Vec<Vec<u8>> = parts.iter().map(|d| d.meta.clone()).collect();
    let mut changes = crate::state::Changes::default();
    for d in parts {
        changes.append(d.changes);
    }
    StateDelta {
        rewrite,
        meta: combine_meta(&metas),
        changes,
    }
}
