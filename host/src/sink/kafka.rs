//! Kafka outputs, exactly once: metrics to `processed-metrics` keyed by
//! `plugin|name|key|window_start|window_end` (so compaction keeps the latest
//! value of a window), alerts to `cep-alerts` keyed by their deterministic
//! id — all inside a producer transaction that also commits the input
//! offsets and the commit marker to the consumer group
//! (`send_offsets_to_transaction`). The protocol, and why a crash at any
//! point is safe, is in `crate::state`.
//!
//! Producer defaults are the seed's (snappy, `linger.ms=5`,
//! `batch.size=16384`); the transactional id is `rtap-<group>` unless set.
//! Any librdkafka option can override them (`--kafka-option`, or
//! `--kafka-producer-option` for this producer alone).
//!
//! Consumers of the output topics must read with
//! `isolation.level=read_committed` to see only committed outputs (the
//! librdkafka and Java default is `read_uncommitted`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::event::Position;
use crate::metrics::metrics;
use crate::pipeline::output::Output;
use crate::source::kafka::KafkaConfig;
use crate::state::{Commit, Fold, StateError, StateStore, fault_phase};

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the committer sleeps between rounds of delivery reports while
/// it waits for a transaction's records (see `KafkaSink::serve_reports`).
const REPORT_WAIT: Duration = Duration::from_micros(250);
/// The longest sleep between rounds while a commit waits for its records'
/// acknowledgements: the sleep doubles from [`REPORT_WAIT`] up to this.
/// (A fixed 250 µs made ~160 wake-ups per commit: the committer's CPU was
/// nearly all context switches.)
const REPORT_WAIT_MAX: Duration = Duration::from_millis(2);

/// A Kafka sink failure; `fenced` when another producer with our
/// transactional id took over.
#[derive(Debug, thiserror::Error)]
#[error("Kafka sink: {what}: {source}{}", if self.fenced() { " (another producer with this transactional id took over: a second host runs this pipeline; this one stops without committing)" } else { "" })]
pub struct KafkaSinkError {
    pub what: &'static str,
    pub source: KafkaError,
}

impl KafkaSinkError {
    pub fn fenced(&self) -> bool {
        matches!(&self.source, KafkaError::Transaction(e) if e.code() == rdkafka::types::RDKafkaErrorCode::Fenced)
            || self.source.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fenced)
    }
}

fn err(what: &'static str) -> impl Fn(KafkaError) -> KafkaSinkError {
    move |source| KafkaSinkError { what, source }
}

pub struct KafkaSink {
    producer: BaseProducer,
    /// A member-less consumer of the group: its metadata for
    /// `send_offsets_to_transaction` and the committed marker at start.
    group: BaseConsumer,
    group_meta: ConsumerGroupMetadata,
    metrics_topic: String,
    alerts_topic: String,
    marker_topic: String,
    /// The input topic whose offsets go into the transaction (Kafka source).
    input_topic: Option<String>,
    in_txn: bool,
}

impl KafkaSink {
    /// Create the transactional producer (not yet fenced: see [`Self::fence`]).
    pub fn new(cfg: &KafkaConfig, input_topic: Option<String>) -> Result<Self, KafkaSinkError> {
        let producer: BaseProducer = cfg
            .producer(&[
                ("compression.type", "snappy"),
                ("linger.ms", "5"),
                ("batch.size", "16384"),
                ("transactional.id", cfg.transactional_id.as_str()),
                ("transaction.timeout.ms", "60000"),
            ])
            .create()
            .map_err(err("creating the producer"))?;
        let group: BaseConsumer = cfg
            .client(&[
                ("group.id", cfg.group.as_str()),
                ("enable.auto.commit", "false"),
            ])
            .create()
            .map_err(err("creating the group client"))?;
        let group_meta = group.group_metadata().ok_or_else(|| KafkaSinkError {
            what: "consumer group metadata",
            source: KafkaError::Subscription(format!("group {}", cfg.group)),
        })?;
        Ok(KafkaSink {
            producer,
            group,
            group_meta,
            metrics_topic: cfg.metrics_topic.clone(),
            alerts_topic: cfg.alerts_topic.clone(),
            marker_topic: cfg.marker_topic.clone(),
            input_topic,
            in_txn: false,
        })
    }

    /// Take over the transactional id: an older producer with it is fenced
    /// and its open transaction aborted (or completed, if it was committing).
    pub fn fence(&self) -> Result<(), KafkaSinkError> {
        self.producer
            .init_transactions(TXN_TIMEOUT)
            .map_err(err("init_transactions"))
    }

    /// The id of the last committed transaction (the group's offset on the
    /// marker topic), if any.
    pub fn committed_marker(&self) -> Result<Option<u64>, KafkaSinkError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.marker_topic, 0);
        let got = self
            .group
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(err("reading the commit marker"))?;
        Ok(got.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }))
    }

    fn ensure_txn(&mut self) -> Result<(), KafkaSinkError> {
        if !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(err("begin_transaction"))?;
            self.in_txn = true;
        }
        Ok(())
    }

    /// Queue one output record (its key and JSON line) for its topic, in
    /// the open transaction. A full queue waits for the broker
    /// (back-pressure).
    fn send_keyed(&mut self, alert: bool, key: &str, line: &str) -> Result<(), KafkaSinkError> {
        self.ensure_txn()?;
        let topic = if alert {
            &self.alerts_topic
        } else {
            &self.metrics_topic
        };
        let mut record = BaseRecord::to(topic).key(key).payload(line);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    self.serve_reports();
                    std::thread::sleep(REPORT_WAIT);
                    record = r;
                }
                Err((e, _)) => {
                    metrics().sink_errors.with_label_values(&["kafka"]).inc();
                    return Err(KafkaSinkError {
                        what: "queueing an output",
                        source: e,
                    });
                }
            }
        }
    }

    /// Serve every delivery report that is ready, without waiting.
    ///
    /// rdkafka's `poll(timeout)` serves at most one event per pass and
    /// loops until the whole timeout has passed, handing librdkafka the
    /// remaining time rounded down to whole milliseconds: a 1 ms poll spins
    /// on the clock for that millisecond. Measured at 100 000 events/s, the
    /// committer thread spent most of its CPU in `clock_gettime` that way.
    /// So: zero-timeout polls while they serve something, and the caller
    /// sleeps between rounds.
    fn serve_reports(&self) {
        let mut left = self.producer.in_flight_count();
        while left > 0 {
            self.producer.poll(Duration::ZERO);
            let now = self.producer.in_flight_count();
            if now >= left {
                break;
            }
            left = now;
        }
    }

    /// Wait until every queued record is acknowledged, serving delivery
    /// reports every [`REPORT_WAIT`], backing off to [`REPORT_WAIT_MAX`]
    /// while none arrive. (rdkafka's own flush, which
    /// `commit_transaction` calls, polls in 100 ms steps: measured, every
    /// commit took ≥ 100 ms with it.)
    fn flush_fast(&self) -> Result<(), KafkaSinkError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        let mut wait = REPORT_WAIT;
        let mut left = self.producer.in_flight_count();
        loop {
            self.serve_reports();
            let now = self.producer.in_flight_count();
            if now == 0 {
                return Ok(());
            }
            // Acknowledgements come a produce request at a time: after one,
            // the next may be close behind.
            wait = if now < left {
                REPORT_WAIT
            } else {
                (wait * 2).min(REPORT_WAIT_MAX)
            };
            left = now;
            if Instant::now() > deadline {
                return Err(KafkaSinkError {
                    what: "flushing the transaction's records",
                    source: KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut),
                });
            }
            std::thread::sleep(wait);
        }
    }

    /// Commit the transaction: every output sent since the last commit, the
    /// input `positions` (next offsets) and the commit marker `id`, at once.
    fn commit(&mut self, positions: &[(i32, Position)], id: u64) -> Result<(), KafkaSinkError> {
        let started = Instant::now();
        self.ensure_txn()?;
        // One record per transaction on the (compacted) marker topic. Kafka
        // needs none, but tansu drops the offsets of a transaction that
        // produced nothing (measured: an offsets-only commit is not applied).
        let id_text = id.to_string();
        let marker = BaseRecord::to(&self.marker_topic)
            .partition(0)
            .key("commit")
            .payload(&id_text);
        self.producer
            .send(marker)
            .map_err(|(e, _)| err("queueing the commit marker")(e))?;
        let mut tpl = TopicPartitionList::new();
        if let Some(topic) = &self.input_topic {
            for (p, pos) in positions {
                tpl.add_partition_offset(topic, *p, Offset::Offset(pos.offset as i64))
                    .map_err(err("offsets"))?;
            }
        }
        tpl.add_partition_offset(&self.marker_topic, 0, Offset::Offset(id as i64))
            .map_err(err("offsets"))?;
        let t0 = Instant::now();
        let res = self
            .flush_fast()
            .and_then(|()| {
                self.producer
                    .send_offsets_to_transaction(&tpl, &self.group_meta, TXN_TIMEOUT)
                    .map_err(err("send_offsets_to_transaction"))
            })
            .and_then(|()| {
                let t1 = Instant::now();
                let r = self
                    .producer
                    .commit_transaction(TXN_TIMEOUT)
                    .map_err(err("commit_transaction"));
                tracing::debug!(
                    flush_and_offsets_ms = (t1 - t0).as_secs_f64() * 1e3,
                    commit_ms = t1.elapsed().as_secs_f64() * 1e3,
                    "transaction"
                );
                r
            });
        self.in_txn = false;
        metrics()
            .sink_write_duration
            .with_label_values(&["kafka"])
            .observe(started.elapsed().as_secs_f64());
        if res.is_err() {
            metrics().sink_errors.with_label_values(&["kafka"]).inc();
            // Best effort: the broker aborts it anyway when we are gone.
            let _ = self.producer.abort_transaction(Duration::from_secs(5));
        }
        res
    }
}

/// Keep the first failure of the committer and the checkpoint thread: the
/// host stops on it, and a later error (often a consequence) must not hide
/// the cause.
fn record_failure(slot: &Mutex<Option<String>>, e: String) {
    let mut slot = slot.lock().expect("committer lock");
    if slot.is_none() {
        *slot = Some(e);
    } else {
        tracing::warn!("after the first failure: {e}");
    }
}

/// One output record for the open transaction: its topic (alerts or
/// metrics), key and JSON line.
pub struct Record {
    alert: bool,
    key: String,
    line: String,
}

impl Record {
    /// The record of an output (`line`: its JSON); none for lifecycle
    /// events, which are not data.
    pub fn of(out: &Output, line: &str) -> Option<Record> {
        let (alert, key) = match out {
            Output::Metric(m) => (
                false,
                format!(
                    "{}|{}|{}|{}|{}",
                    m.plugin, m.name, m.key, m.window_start, m.window_end
                ),
            ),
            Output::Alert(a) => (true, a.id.clone()),
            Output::Plugin(_) => return None,
        };
        Some(Record {
            alert,
            key,
            line: line.to_string(),
        })
    }
}

/// Messages queued for the committer at most (back-pressure: a slow
/// broker slows the processing thread). A message carries the records of
/// one batch, so this is a bound in batches, not in records.
const QUEUED_MESSAGES: usize = 1024;

/// What the processing thread hands to the committer, in order.
enum Msg {
    /// The output records of one batch, for the open transaction (one
    /// channel operation per batch instead of one per record).
    Records(Vec<Record>),
    /// Close the transaction: log the state delta, commit to Kafka.
    /// With the read times of the batches it commits (for the latency metric).
    Commit(Box<Commit>, Vec<Instant>),
    /// Fold the logged commits up to this id into the per-key state.
    Checkpoint(u64),
    /// Reply once everything before has been done.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// The committer thread: it owns the transactional producer and runs the
/// commit protocol of `crate::state` — log, Kafka commit — for one commit
/// after another, while the processing thread goes on. Records sent after a
/// commit request belong to the next transaction (the channel keeps their
/// order). The channel is bounded: a slow broker slows the pipeline
/// (back-pressure). Checkpoints (folding the logged commits into the
/// per-key state) run on a thread of their own, so transactions keep
/// committing every interval meanwhile — a fold takes seconds under load
/// and used to hold them back (committed-latency P95 of 2.3 s at 50 000
/// events/s). The first failure stops it and is reported to the processing
/// thread, which then stops the host.
pub struct Committer {
    tx: Option<std::sync::mpsc::SyncSender<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    folds: Arc<Folds>,
    folder: Option<std::thread::JoinHandle<()>>,
    /// Commits requested and not yet applied.
    in_flight: Arc<AtomicU64>,
    failed: Arc<Mutex<Option<String>>>,
}

/// The hand-off between the committer and the checkpoint thread.
#[derive(Default)]
struct Folds {
    state: Mutex<FoldState>,
    changed: Condvar,
}

#[derive(Default)]
struct FoldState {
    /// The highest commit id to fold next (only committed ids get here).
    pending: Option<u64>,
    /// The commits logged and committed since the last fold, in order:
    /// what the next fold reads instead of decoding them from the log.
    logged: Vec<Commit>,
    /// The id the last fold reached (at start: the commit the state is at).
    folded: u64,
    busy: bool,
    stop: bool,
}

impl Folds {
    fn lock(&self) -> std::sync::MutexGuard<'_, FoldState> {
        self.state.lock().expect("fold lock")
    }

    /// Keep a commit, logged and committed to Kafka, for the next fold.
    fn logged(&self, c: Commit) {
        self.lock().logged.push(c);
    }

    /// Ask for a fold up to `id` (a newer request replaces an older one).
    fn request(&self, id: u64) {
        let mut s = self.lock();
        s.pending = Some(s.pending.map_or(id, |p| p.max(id)));
        self.changed.notify_all();
    }

    /// Wait until no fold is pending or running (or the thread stopped).
    fn idle(&self) {
        let mut s = self.lock();
        while (s.pending.is_some() || s.busy) && !s.stop {
            s = self.changed.wait(s).expect("fold lock");
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The checkpoint thread: fold what is requested, one fold at a time.
    /// `pause`: the kill tests' fault injection (see `fault_phase`).
    fn run(&self, store: &StateStore, fail: &Mutex<Option<String>>, pause: Option<Duration>) {
        loop {
            let (id, commits, after) = {
                let mut s = self.lock();
                loop {
                    if s.stop {
                        return;
                    }
                    if let Some(id) = s.pending.take() {
                        s.busy = true;
                        let n = s.logged.partition_point(|c| c.meta.id <= id);
                        let commits: Vec<Commit> = s.logged.drain(..n).collect();
                        break (id, commits, s.folded);
                    }
                    s = self.changed.wait(s).expect("fold lock");
                }
            };
            let started = Instant::now();
            let r = fold(store, id, commits, after).and_then(|f| {
                fault_phase(pause, "folded", id);
                let flushing = Instant::now();
                store.flush()?;
                Ok((f, flushing.elapsed()))
            });
            let failed = r.is_err();
            match r {
                Ok((f, flush)) => tracing::debug!(
                    id,
                    commits = f.commits,
                    changes = f.changes,
                    keys = f.keys,
                    read_ms = f.read.as_millis() as u64,
                    load_ms = f.load.as_millis() as u64,
                    write_ms = f.write.as_millis() as u64,
                    flush_ms = flush.as_millis() as u64,
                    took_ms = started.elapsed().as_millis() as u64,
                    "checkpoint: logged commits folded"
                ),
                Err(e) => {
                    // The logged commits stay; a restart folds them.
                    record_failure(fail, format!("checkpoint fold: {e}"));
                }
            }
            let mut s = self.lock();
            s.busy = false;
            s.stop |= failed;
            s.folded = id;
            self.changed.notify_all();
        }
    }
}

/// Fold the logged commits up to `id`: from memory when `commits` are all
/// of them — every id after `after` (the last fold's, or the commit the run
/// started at) up to `id`, without a gap — else, which would be a bug, from
/// the commit log, which is always right.
fn fold(store: &StateStore, id: u64, commits: Vec<Commit>, after: u64) -> Result<Fold, StateError> {
    if commits.is_empty() && id <= after {
        return Ok(Fold::default());
    }
    let first = commits.first().map(|c| c.meta.id);
    let whole = commits.last().is_some_and(|c| c.meta.id == id)
        && first == Some(after + 1)
        && commits.windows(2).all(|w| w[1].meta.id == w[0].meta.id + 1);
    if !whole {
        tracing::warn!(
            id,
            after,
            first,
            kept = commits.len(),
            "checkpoint: the commits kept in memory are not all those logged; folding from the commit log"
        );
        return store.compact(id);
    }
    let newest_first: Vec<&Commit> = commits.iter().rev().collect();
    store.fold(&newest_first, id)
}

impl Committer {
    /// `after`: the id of the commit the state is at; the commits of this
    /// run follow it.
    pub fn spawn(
        mut sink: KafkaSink,
        store: Arc<StateStore>,
        after: u64,
        pause: Option<Duration>,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(QUEUED_MESSAGES);
        let in_flight = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(None));
        let folds = Arc::new(Folds::default());
        folds.lock().folded = after;
        let folder = {
            let (folds, store, fail) = (folds.clone(), store.clone(), failed.clone());
            std::thread::Builder::new()
                .name("rtap-checkpoint".into())
                .spawn(move || folds.run(&store, &fail, pause))
                .expect("spawn the checkpoint thread")
        };
        let (inf, fail, fl) = (in_flight.clone(), failed.clone(), folds.clone());
        let thread = std::thread::Builder::new()
            .name("rtap-committer".into())
            .spawn(move || {
                let phase = |name: &str, id: u64| fault_phase(pause, name, id);
                let mut idle_since = Instant::now();
                loop {
                    let msg = match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(m) => m,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if idle_since.elapsed() > Duration::from_millis(50) {
                                sink.serve_reports();
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    };
                    idle_since = Instant::now();
                    let res: Result<(), String> = match msg {
                        Msg::Records(records) => records
                            .iter()
                            .try_for_each(|r| sink.send_keyed(r.alert, &r.key, &r.line))
                            .map_err(|e| e.to_string()),
                        Msg::Commit(c, batches) => {
                            let id = c.meta.id;
                            let logging = Instant::now();
                            let r = store
                                .log_commit(&c)
                                .map_err(|e| e.to_string())
                                .and_then(|()| {
                                    tracing::debug!(
                                        id,
                                        log_ms = logging.elapsed().as_secs_f64() * 1e3,
                                        "commit logged"
                                    );
                                    phase("prepared", id);
                                    sink.commit(&c.meta.positions, id)
                                        .map_err(|e| e.to_string())
                                })
                                .map(|()| phase("committed", id));
                            if r.is_ok() {
                                metrics().batches_committed(&batches);
                                fl.logged(*c);
                            }
                            inf.fetch_sub(1, Ordering::AcqRel);
                            r
                        }
                        Msg::Checkpoint(id) => {
                            // Every commit up to `id` is in Kafka by now
                            // (they came first on this channel).
                            fl.request(id);
                            Ok(())
                        }
                        Msg::Barrier(ack) => {
                            fl.idle();
                            let _ = ack.send(());
                            Ok(())
                        }
                    };
                    if let Err(e) = res {
                        record_failure(&fail, e);
                        // Nothing more may be committed: drop the rest, and
                        // release whoever waits at a barrier.
                        drop(rx);
                        return;
                    }
                }
            })
            .expect("spawn the committer thread");
        Committer {
            tx: Some(tx),
            thread: Some(thread),
            folds,
            folder: Some(folder),
            in_flight,
            failed,
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().expect("committer lock").clone()
    }

    fn put(&self, m: Msg) -> Result<(), String> {
        let tx = self.tx.as_ref().expect("committer open");
        tx.send(m).map_err(|_| {
            self.failure()
                .unwrap_or_else(|| "the committer stopped".into())
        })
    }

    /// Queue a batch's output records for the open transaction.
    pub fn send(&self, records: Vec<Record>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        self.put(Msg::Records(records))
    }

    /// Request a commit (returns at once); `batches`: when each batch it
    /// commits was read.
    pub fn commit(&self, c: Commit, batches: Vec<Instant>) -> Result<(), String> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.put(Msg::Commit(Box::new(c), batches))
    }

    /// Fold the logged commits up to `id` (after they are committed).
    pub fn checkpoint(&self, id: u64) -> Result<(), String> {
        self.put(Msg::Checkpoint(id))
    }

    /// Whether a requested commit has not been applied yet.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// The committer's failure, if it stopped.
    pub fn check(&self) -> Result<(), String> {
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until everything queued so far is done.
    pub fn wait(&self) -> Result<(), String> {
        let (ack, done) = std::sync::mpsc::channel();
        self.put(Msg::Barrier(ack))?;
        done.recv().map_err(|_| {
            self.failure()
                .unwrap_or_else(|| "the committer stopped".into())
        })?;
        self.check()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // A fold that has not started is left to the next start.
        self.folds.stop();
        if let Some(t) = self.folder.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StoreConfig;

    /// Commits of plugin `a` with the ids in `ids`, each setting `k` to
    /// `<id><tag>` (commit 1 also sets `j`).
    fn commits(ids: std::ops::RangeInclusive<u64>, tag: &str) -> Vec<Commit> {
        use crate::state::tests::{change, meta};
        ids.map(|id| {
            let v = format!("{id}{tag}");
            let mut kv = vec![("k", Some(v.as_str()))];
            if id == 1 {
                kv.push(("j", Some("j")));
            }
            Commit {
                meta: meta(id, &["a"]),
                plugins: vec![change("a", false, &kv)],
            }
        })
        .collect()
    }

    #[test]
    fn a_fold_takes_the_kept_commits_only_when_they_are_all_the_logged_ones() {
        use crate::state::tests::keys;
        let fresh = || {
            let dir = tempfile::tempdir().unwrap();
            let s = StateStore::open(dir.path(), &StoreConfig::default()).unwrap();
            for c in commits(1..=3, "") {
                s.log_commit(&c).unwrap();
            }
            (dir, s)
        };
        // Kept commits 1..=3 after commit 0: folded from memory (the kept
        // copies are marked `m` to tell them from the logged ones).
        let (_d, s) = fresh();
        let f = fold(&s, 3, commits(1..=3, "m"), 0).unwrap();
        assert_eq!((f.commits, f.keys), (3, 2));
        assert_eq!(
            keys(&s, "a"),
            vec![("j".into(), "j".into()), ("k".into(), "3m".into())]
        );
        assert!(s.delta_ids().unwrap().is_empty(), "the log is folded");
        assert_eq!(s.last().unwrap().unwrap().id, 3);
        assert_eq!(fold(&s, 3, vec![], 3).unwrap().commits, 0, "nothing new");

        // A gap (commit 1 is not kept), or a last commit short of the id:
        // the log is the truth.
        for (kept, id) in [(commits(2..=3, "m"), 3), (commits(1..=2, "m"), 3)] {
            let (_d, s) = fresh();
            assert_eq!(fold(&s, id, kept, 0).unwrap().commits, 3);
            assert_eq!(
                keys(&s, "a"),
                vec![("j".into(), "j".into()), ("k".into(), "3".into())]
            );
            assert!(s.delta_ids().unwrap().is_empty());
        }
    }

    #[test]
    fn the_first_failure_is_kept() {
        let slot = Mutex::new(None);
        record_failure(&slot, "checkpoint fold: disk full".into());
        record_failure(&slot, "commit_transaction: fenced".into());
        assert_eq!(
            slot.lock().unwrap().as_deref(),
            Some("checkpoint fold: disk full")
        );
    }
}
