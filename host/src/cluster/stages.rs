//! The pipeline's stages 1 and 2 on the runners of this folder (issue
//! #28, step 5 of `docs/kafka-exactly-once-plan.md`): [`PipelineStage1`]
//! runs stage 1 of every plugin on the input partitions a host's
//! [`super::tasks::Tasks`] is given, [`PipelineStage2`] runs stage 2 on
//! the key-group ranges its [`super::ranges::Ranges`] is given, so the
//! seed's window metrics and event detectors run on hosts that share one
//! consumer group, each event's records applied once at their range's
//! owner whichever host read it.
//!
//! - **Stage 1, per input partition** (a task): the partition's records
//!   are decoded into a batch, planned into a round against the task's
//!   own watermark (one partition, so exactly Flink's bounded
//!   out-of-orderness), pre-aggregated and routed as on one host, and each
//!   range's records go to it as one `crate::pipeline::wire` payload in
//!   the task's transaction; the seal carries the task's watermark, or
//!   says it is idle once nothing came for `--idle-timeout`.
//! - **Stage 2, per range**: a pipeline of every plugin owning the
//!   range's key groups, restored from the range's changelog
//!   (`RangeState::entries`, `<plugin>\0<key>`, and the plugins' meta in
//!   the range's meta record). Each released payload is decoded into a
//!   round of its own and applied in its task's order; every record's
//!   watermark is held to the range's watermark (the least of its tasks'
//!   committed seals, each task's kept with the range's state) as it was
//!   before the payloads were released, and windows and timers fire by
//!   the watermark after them. So a window
//!   fires only once every task has sealed past its end and every record
//!   of those seals' transactions is applied: on inputs
//!   without late events, the outputs equal one host's
//!   (`host/tests/kafka_stages.rs`). Outputs go to partition *r* of the
//!   output topics and the changed keys to the changelog, in the range's
//!   transaction.
//!
//! Not across hosts yet, and counted in [`Sidelined`] instead: stage 3
//! (the metric detectors, which take the fired metrics of every range),
//! dead letters and late events (the plan routes them through range
//! `p mod R`), and shadow versions' comparisons.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::ranges::Stage2;
use super::tasks::Stage1;
use crate::checkpoint::commit::PluginMeta;
use crate::checkpoint::range::{RangeError, RangeProducer, RangeState};
use crate::clock::now_ms;
use crate::event::{EventBatch, Malformed, Origin, Position};
use crate::exchange::{ExchangeError, Kind, Progress, Released, TaskProducer, owner_watermark};
use crate::output::Output;
use crate::pipeline::exchange::{Record, Round};
use crate::pipeline::wire::{Encoder, Inbox, SlotId};
use crate::pipeline::{Pipeline, Slot, Stage1Out, TimeConfig};
use crate::plugin::{Identity, Instance, Loaded, Runtime};
use crate::sink::kafka::Record as KafkaRecord;
use crate::state::keygroup::key_group;
use crate::status::PluginCounters;
use crate::window::Watermark;

/// The plugins both stages run: compiled once, instantiated for the
/// stage-1 pipeline and for every range's.
pub struct Plugins {
    loaded: Vec<(Arc<Loaded>, serde_json::Value, Arc<PluginCounters>)>,
    time: TimeConfig,
}

impl Plugins {
    /// Every plugin of `dir` with its default config.
    pub fn load(runtime: &Runtime, dir: &Path, time: TimeConfig) -> Result<Plugins, String> {
        let loaded = crate::plugin::load_dir(runtime, dir).map_err(|e| e.to_string())?;
        let loaded = loaded
            .into_iter()
            .map(|(l, _)| {
                let cfg = l.description.default_config.clone();
                (Arc::new(l), cfg, Arc::default())
            })
            .collect();
        Ok(Plugins { loaded, time })
    }

    /// A pipeline of every plugin with instances of its own, owning the
    /// key groups of range `range` of `ranges`.
    pub fn pipeline(&self, range: u32, ranges: u32) -> Result<Pipeline, String> {
        let mut slots = Vec::with_capacity(self.loaded.len());
        for (l, cfg, counters) in &self.loaded {
            let inst = Instance::new(l.clone(), cfg).map_err(|e| e.to_string())?;
            let identity = Identity {
                description: l.description.clone(),
                hash: l.hash.clone(),
            };
            slots.push(Slot::new(
                identity,
                Box::new(inst),
                counters.clone(),
                self.time.allowed_lateness,
            ));
        }
        Ok(Pipeline::new(slots, self.time).with_shard(range as usize, ranges as usize))
    }
}

/// What the stages made that does not cross hosts yet (see the module),
/// counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sidelined {
    /// Malformed input records and plugin failures' dead letters.
    pub dead_letters: u64,
    /// Events late for some plugin (at stage 1 or 2).
    pub late: u64,
    /// Fired metrics that one host hands its metric detectors (stage 3).
    pub metrics: u64,
    /// Exchange payloads that could not be decoded (logged with their task
    /// and offset).
    pub refused: u64,
}

/// A task's own event time.
struct TaskTime {
    wm: Watermark,
    last_record: Instant,
}

/// Stage 1 of every plugin, for the input partitions a host runs.
pub struct PipelineStage1 {
    pipeline: Pipeline,
    encoder: Encoder,
    ranges: u32,
    source: Arc<str>,
    time: TimeConfig,
    tasks: BTreeMap<u32, TaskTime>,
    buf: Vec<u8>,
    pub sidelined: Sidelined,
}

impl PipelineStage1 {
    /// Stage 1 of `plugins` for `ranges` ranges, reading `topic`.
    pub fn new(plugins: &Plugins, ranges: u32, topic: &str) -> Result<Self, String> {
        let pipeline = plugins.pipeline(0, ranges)?;
        Ok(PipelineStage1 {
            encoder: Encoder::new(&pipeline.slot_ids()),
            pipeline,
            ranges,
            source: Arc::from(format!("kafka:{topic}")),
            time: plugins.time,
            tasks: BTreeMap::new(),
            buf: Vec::new(),
            sidelined: Sidelined::default(),
        })
    }

    fn task_time(&self) -> TaskTime {
        TaskTime {
            wm: Watermark::new(
                self.time.out_of_orderness.as_millis() as i64,
                self.time.idle_timeout.as_millis() as i64,
            ),
            last_record: Instant::now(),
        }
    }
}

impl Stage1 for PipelineStage1 {
    fn gained(&mut self, task: u32) {
        let t = self.task_time();
        self.tasks.insert(task, t);
    }

    fn apply(
        &mut self,
        task: u32,
        records: &[(i64, &[u8])],
        out: &mut TaskProducer,
    ) -> Result<Progress, ExchangeError> {
        if !self.tasks.contains_key(&task) {
            self.gained(task);
        }
        let t = self.tasks.get_mut(&task).expect("gained");
        let Some(&(last, _)) = records.last() else {
            return Ok(Progress {
                watermark: t.wm.current(),
                idle: t.last_record.elapsed() >= self.time.idle_timeout,
            });
        };
        t.last_record = Instant::now();
        let mut batch = EventBatch::new(Origin {
            source: self.source.clone(),
            partition: task as i32,
        });
        for (offset, payload) in records {
            if let Err(e) = crate::source::decode::decode_into(payload, *offset as u64, &mut batch)
            {
                batch.malformed.push(Malformed {
                    offset: *offset as u64,
                    reason: e.to_string(),
                    raw: String::from_utf8_lossy(payload).into_owned(),
                });
            }
        }
        let end = last as u64 + 1;
        batch.end = Position {
            offset: end,
            seq: end,
        };
        let round = Round::plan(&mut t.wm, vec![Arc::new(batch)], now_ms(), 1);
        for d in crate::pipeline::malformed(&round) {
            tracing::warn!(
                source = %d.source,
                partition = d.partition,
                offset = ?d.offset,
                "input record is not an event: {}",
                d.detail
            );
            self.sidelined.dead_letters += 1;
        }
        let mut s1 = Stage1Out::new(self.ranges as usize);
        let runs: Vec<usize> = (0..round.runs.len()).collect();
        self.pipeline.stage1(&round, &runs, &mut s1);
        self.sidelined.late += s1.late.len() as u64;
        for (r, recs) in s1.records.iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            self.buf.clear();
            self.encoder.encode(&round, recs, &mut self.buf);
            out.send(r as u32, &self.buf)?;
        }
        Ok(Progress {
            watermark: round.end_wm,
            idle: false,
        })
    }

    fn lost(&mut self, task: u32) {
        self.tasks.remove(&task);
    }
}

/// The plugins' part of a range's meta record: what each plugin's state
/// was written by, and its operator-wide state.
#[derive(Serialize, Deserialize)]
struct RangeMeta {
    plugins: Vec<PluginMeta>,
    /// Each task's last committed seal as the range knew it.
    progress: Vec<Option<Progress>>,
}

/// A range this host runs: its pipeline.
struct RangeRun {
    pipeline: Pipeline,
    slots: Vec<SlotId>,
    /// Each task's progress here: its latest seal, with the highest
    /// watermark any of its seals said (restored with the range, so that
    /// an owner that reads on from the restored position, or a task's new
    /// incarnation that starts its watermark afresh, does not take the
    /// range's watermark back).
    progress: Vec<Option<Progress>>,
}

/// `seen`, merged into `known`: the later seal, with the higher
/// watermark.
fn merge(known: &mut [Option<Progress>], seen: &[Option<Progress>]) {
    for (k, s) in known.iter_mut().zip(seen) {
        if let Some(s) = s {
            *k = Some(Progress {
                watermark: s.watermark.max(k.map_or(i64::MIN, |k| k.watermark)),
                idle: s.idle,
            });
        }
    }
}

/// Stage 2 of every plugin, for the key-group ranges a host runs.
pub struct PipelineStage2 {
    plugins: Arc<Plugins>,
    ranges: u32,
    metrics_topic: String,
    alerts_topic: String,
    running: BTreeMap<u32, RangeRun>,
    key: Vec<u8>,
    pub sidelined: Sidelined,
    /// Keys restored from the changelog, over every range taken up.
    pub restored: u64,
}

impl PipelineStage2 {
    /// Stage 2 of `plugins` for ranges of `ranges`, writing metrics to
    /// `metrics_topic` and alerts to `alerts_topic` (each with a partition
    /// per range).
    pub fn new(
        plugins: Arc<Plugins>,
        ranges: u32,
        metrics_topic: &str,
        alerts_topic: &str,
    ) -> Self {
        PipelineStage2 {
            plugins,
            ranges,
            metrics_topic: metrics_topic.into(),
            alerts_topic: alerts_topic.into(),
            running: BTreeMap::new(),
            key: Vec::new(),
            sidelined: Sidelined::default(),
            restored: 0,
        }
    }

    /// The ranges whose pipelines run here.
    pub fn ranges(&self) -> Vec<u32> {
        self.running.keys().copied().collect()
    }

    /// Write the range's outputs through `out`; count what does not cross
    /// hosts yet.
    fn drain(&mut self, range: u32, out: &mut RangeProducer) -> Result<usize, RangeError> {
        let run = self.running.get_mut(&range).expect("a running range");
        let p = &mut run.pipeline;
        let s = &mut self.sidelined;
        s.metrics += p.metrics.len() as u64;
        s.dead_letters += p.dead.len() as u64;
        s.late += (p.late.len() + p.late_marks.len()) as u64;
        for d in p.dead.drain(..) {
            tracing::warn!(range, plugin = ?d.plugin, reason = d.reason, source = %d.source, partition = d.partition, offset = ?d.offset, "dead letter: {}", d.detail);
        }
        p.metrics.clear();
        p.late.clear();
        p.late_marks.clear();
        p.shadow_outputs.clear();
        p.shadow_dead.clear();
        let outputs = std::mem::take(&mut p.outputs);
        let mut wrote = 0;
        for o in &outputs {
            let topic = match o {
                Output::Metric(_) => &self.metrics_topic,
                Output::Alert(_) => &self.alerts_topic,
                Output::Plugin(_) => continue,
            };
            let line = o.to_json();
            let rec = KafkaRecord::of(o, &line).expect("a metric or an alert");
            out.output(topic, rec.key().as_bytes(), line.as_bytes())?;
            wrote += 1;
        }
        Ok(wrote)
    }
}

/// Hold a record's watermarks to `wm`: the range may fire only by what
/// every task has sealed.
fn hold(r: &mut Record, wm: i64) {
    match r {
        Record::Partial(p) => {
            p.wm = p.wm.min(wm);
            p.wm_after = p.wm_after.min(wm);
        }
        Record::Event(e) => {
            e.wm = e.wm.min(wm);
            e.wm_after = e.wm_after.min(wm);
        }
    }
}

impl Stage2 for PipelineStage2 {
    fn gained(&mut self, range: u32, state: &RangeState) -> Result<(), String> {
        let mut pipeline = self.plugins.pipeline(range, self.ranges)?;
        self.restored += state.entries.len() as u64;
        let mut progress = vec![None; state.exchange.len()];
        if !state.meta.is_empty() {
            let meta: RangeMeta = postcard::from_bytes(&state.meta)
                .map_err(|e| format!("range {range}: its meta record: {e}"))?;
            merge(&mut progress, &meta.progress);
            for pm in &meta.plugins {
                let Some(slot) = pipeline
                    .slots
                    .iter_mut()
                    .find(|s| !s.shadow && *s.name == pm.name)
                else {
                    tracing::warn!(range, plugin = %pm.name, "committed plugin is not loaded; its state is dropped");
                    continue;
                };
                let d = &slot.identity.description;
                if d.state_schema != pm.state_schema {
                    return Err(format!(
                        "range {range}: plugin `{}`: the changelog holds state schema {} (version {}), the loaded version {} has schema {}",
                        pm.name, pm.state_schema, pm.version, d.version, d.state_schema
                    ));
                }
                let mut prefix = pm.name.as_bytes().to_vec();
                prefix.push(0);
                let entries = state
                    .entries
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter_map(|(k, v)| {
                        std::str::from_utf8(&k[prefix.len()..])
                            .ok()
                            .map(|k| (k, v.as_slice()))
                    });
                slot.restore_entries(&pm.op_meta, entries)?;
            }
        }
        let slots = pipeline.slot_ids();
        self.running.insert(
            range,
            RangeRun {
                pipeline,
                slots,
                progress,
            },
        );
        Ok(())
    }

    fn apply(
        &mut self,
        range: u32,
        released: &[Released],
        progress: &[Option<Progress>],
        out: &mut RangeProducer,
    ) -> Result<usize, RangeError> {
        let run = self.running.get_mut(&range).expect("a running range");
        // While these records are applied nothing fires past the
        // watermark before them (every record under it was applied):
        // another task's records for the same windows may come later in
        // `released`. Then it fires by the watermark after them.
        let before = owner_watermark(run.progress.iter().copied());
        merge(&mut run.progress, progress);
        let watermark = owner_watermark(run.progress.iter().copied());
        let held = before.unwrap_or(i64::MIN);
        let wm = watermark.unwrap_or(i64::MIN);
        let mut applied = 0;
        for rel in released.iter().filter(|r| r.header.kind == Kind::Data) {
            let mut inbox = Inbox::new(&run.slots);
            if let Err(e) = inbox.add(&rel.payload) {
                tracing::error!(
                    range,
                    task = rel.header.task,
                    offset = rel.offset,
                    "exchange payload refused: {e}"
                );
                self.sidelined.refused += 1;
                continue;
            }
            let (round, mut records) = inbox.finish(held);
            for r in &mut records {
                hold(r, held);
            }
            run.pipeline.stage2(&round, records);
            applied += 1;
        }
        if applied > 0 || before != watermark {
            run.pipeline.advance(wm);
        }
        let wrote = self.drain(range, out)?;
        Ok(applied + wrote)
    }

    fn commit(&mut self, range: u32, out: &mut RangeProducer) -> Result<Vec<u8>, RangeError> {
        let run = self.running.get_mut(&range).expect("a running range");
        let live: Vec<Identity> = run
            .pipeline
            .live_slots()
            .map(|s| s.identity.clone())
            .collect();
        let deltas = run.pipeline.deltas();
        let mut plugins = Vec::with_capacity(live.len());
        for (id, d) in live.into_iter().zip(deltas) {
            let name = &id.description.name;
            if d.rewrite {
                out.clear(name)?;
            }
            for change in d.changes.iter() {
                let (k, v) = change.map_err(|why| RangeError::Refused {
                    range,
                    why: format!("plugin `{name}`'s changes: {why}"),
                })?;
                self.key.clear();
                self.key.extend_from_slice(name.as_bytes());
                self.key.push(0);
                self.key.extend_from_slice(k.as_bytes());
                out.change(key_group(k), &self.key, v)?;
            }
            plugins.push(PluginMeta {
                name: name.clone(),
                hash: id.hash.clone(),
                version: id.description.version.clone(),
                state_schema: id.description.state_schema,
                op_meta: d.meta,
            });
        }
        let meta = RangeMeta {
            plugins,
            progress: run.progress.clone(),
        };
        Ok(postcard::to_allocvec(&meta).expect("a range meta serializes"))
    }

    fn lost(&mut self, range: u32) {
        self.running.remove(&range);
    }
}
