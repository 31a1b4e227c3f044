//! Kafka outputs, exactly once: metrics to `processed-metrics` keyed by
//! `plugin|name|key|window_start|window_end` (so compaction keeps the latest
//! value of a window), alerts to `cep-alerts` keyed by their deterministic
//! id, dead letters to `rtap-dead-letters` and late events to
//! `rtap-late-events` (each the input record's value as received, with
//! [`headers`] naming its origin and why) — all inside a producer
//! transaction that also commits the input offsets and the commit marker to
//! the consumer group (`send_offsets_to_transaction`). This module is the transactional
//! producer; the commit protocol that drives it, and why a crash at any
//! point is safe, is `crate::checkpoint`'s.
//!
//! Producer defaults are the seed's (snappy, `linger.ms=5`,
//! `batch.size=16384`); the transactional id is `rtap-<group>` unless set.
//! Any librdkafka option can override them (`--kafka-option`, or
//! `--kafka-producer-option` for this producer alone).
//!
//! Consumers of the output topics must read with
//! `isolation.level=read_committed` to see only committed outputs (the
//! librdkafka and Java default is `read_uncommitted`).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::event::Position;
use crate::kafka::KafkaConfig;
use crate::metrics::metrics;
use crate::output::{DeadLetter, LateEvent, Output};
use crate::status::KafkaHealth;

/// The header of a changelog record holding its commit id (decimal); see
/// `crate::checkpoint::changelog`.
pub const CHANGELOG_ID_HEADER: &str = "rtap-commit";

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// The producer's `transaction.timeout.ms`: librdkafka fails a record not
/// acknowledged within it (its `message.timeout.ms` is capped to it), and
/// the transaction must then abort — the host stops, and its restart
/// replays the interval exactly once. A broker outage shorter than this is
/// waited out.
const TXN_TIMEOUT_MS: &str = "60000";
/// How long a commit keeps retrying the broker's transaction calls
/// (`send_offsets_to_transaction`, `commit_transaction`) while they fail
/// with errors librdkafka calls retriable (a broker that does not answer).
const TXN_RETRY_FOR: Duration = Duration::from_secs(300);

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
    dead_letter_topic: String,
    late_topic: String,
    marker_topic: String,
    /// Where each commit's state changes go (`crate::checkpoint::changelog`).
    changelog_topic: String,
    /// The input topic whose offsets go into the transaction (Kafka source).
    input_topic: Option<String>,
    in_txn: bool,
    /// Where waits on the broker are reported (`/health`).
    health: std::sync::Arc<KafkaHealth>,
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
                ("transaction.timeout.ms", TXN_TIMEOUT_MS),
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
            dead_letter_topic: cfg.dead_letter_topic.clone(),
            late_topic: cfg.late_topic.clone(),
            marker_topic: cfg.marker_topic.clone(),
            changelog_topic: cfg.changelog_topic.clone(),
            input_topic,
            in_txn: false,
            health: cfg.health.clone(),
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
    pub fn send(&mut self, rec: &Record) -> Result<(), KafkaSinkError> {
        self.ensure_txn()?;
        let topic = match rec.topic {
            Topic::Metrics => &self.metrics_topic,
            Topic::Alerts => &self.alerts_topic,
            Topic::DeadLetters => &self.dead_letter_topic,
            Topic::Late => &self.late_topic,
        };
        let mut record = BaseRecord::to(topic).key(&rec.key).payload(&rec.value);
        if !rec.headers.is_empty() {
            let headers = rec.headers.iter().fold(
                OwnedHeaders::new_with_capacity(rec.headers.len()),
                |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value.as_bytes()),
                    })
                },
            );
            record = record.headers(headers);
        }
        self.produce(record, "queueing an output")
    }

    /// Abort the open transaction (its records stay on a broker that shows
    /// aborted records, as tansu does).
    pub fn abort(&mut self) -> Result<(), KafkaSinkError> {
        if self.in_txn {
            self.in_txn = false;
            // librdkafka aborts only once every queued record is reported.
            self.flush_fast()?;
            self.producer
                .abort_transaction(TXN_TIMEOUT)
                .map_err(err("abort_transaction"))?;
        }
        Ok(())
    }

    /// Queue one changelog record of commit `id` (see
    /// `crate::checkpoint::changelog`): `value` `None` is a tombstone.
    pub fn changelog(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        id: u64,
    ) -> Result<(), KafkaSinkError> {
        self.ensure_txn()?;
        let id = id.to_string();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: CHANGELOG_ID_HEADER,
            value: Some(id.as_bytes()),
        });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.changelog_topic)
            .partition(partition)
            .key(key)
            .headers(headers);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.produce(record, "queueing a changelog record")
    }

    /// Queue a record in the open transaction; a full queue waits for the
    /// broker (back-pressure).
    fn produce<K, P>(
        &self,
        mut record: BaseRecord<'_, K, P>,
        what: &'static str,
    ) -> Result<(), KafkaSinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let mut waited = false;
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    if waited {
                        self.health.sink_done();
                    }
                    return Ok(());
                }
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    // A full queue: the broker is slow or away. Said on
                    // `/health` once it lasts (see `KafkaHealth`); the
                    // next commit clears it.
                    if self.producer.in_flight_count() > 0 && !waited {
                        self.health.sink_busy(crate::clock::now_ms());
                        waited = true;
                    }
                    self.serve_reports();
                    std::thread::sleep(crate::kafka::REPORT_WAIT);
                    record = r;
                }
                Err((e, _)) => {
                    metrics().sink_errors.with_label_values(&["kafka"]).inc();
                    return Err(KafkaSinkError { what, source: e });
                }
            }
        }
    }

    /// Serve every delivery report that is ready, without waiting
    /// ([`crate::kafka::serve_reports`]).
    pub fn serve_reports(&self) {
        crate::kafka::serve_reports(&self.producer);
    }

    /// Wait until every queued record is acknowledged
    /// ([`crate::kafka::flush_fast`]).
    fn flush_fast(&self) -> Result<(), KafkaSinkError> {
        // librdkafka fails what it cannot deliver within the transaction
        // timeout; this bound is only a backstop behind it.
        let within = 2 * Duration::from_millis(TXN_TIMEOUT_MS.parse().unwrap_or(60_000));
        crate::kafka::flush_fast(&self.producer, within).map_err(|source| KafkaSinkError {
            what: "flushing the transaction's records",
            source,
        })
    }

    /// Commit the transaction: every output sent since the last commit, the
    /// input `positions` (next offsets) and the commit marker `id`, at once.
    pub fn commit(&mut self, positions: &[(i32, Position)], id: u64) -> Result<(), KafkaSinkError> {
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
        self.health.sink_busy(crate::clock::now_ms());
        let res = self
            .flush_fast()
            .and_then(|()| {
                retrying("send_offsets_to_transaction", || {
                    self.producer
                        .send_offsets_to_transaction(&tpl, &self.group_meta, TXN_TIMEOUT)
                })
            })
            .and_then(|()| {
                let t1 = Instant::now();
                let r = retrying("commit_transaction", || {
                    self.producer.commit_transaction(TXN_TIMEOUT)
                });
                tracing::debug!(
                    flush_and_offsets_ms = (t1 - t0).as_secs_f64() * 1e3,
                    commit_ms = t1.elapsed().as_secs_f64() * 1e3,
                    "transaction"
                );
                r
            });
        self.in_txn = false;
        self.health.sink_done();
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

/// Call a transaction operation again while it fails with an error
/// librdkafka calls retriable — the broker did not answer in time (down,
/// paused, partitioned away) — for up to [`TXN_RETRY_FOR`]. librdkafka
/// keeps the operation's state between calls: the retry resumes it.
fn retrying(
    what: &'static str,
    mut op: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaSinkError> {
    let deadline = Instant::now() + TXN_RETRY_FOR;
    loop {
        match op() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                tracing::warn!(
                    "Kafka sink: {what}: {e}; retrying while the broker does not answer"
                );
            }
            r => return r.map_err(err(what)),
        }
    }
}

/// The topic a [`Record`] goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Metrics,
    Alerts,
    DeadLetters,
    Late,
}

/// The headers of a dead-letter or late-event record: the value is the
/// input as received, these say where it came from and why it is there.
pub mod headers {
    /// The source, as the JSONL side outputs name it: `kafka:TOPIC`,
    /// `file:PATH`, `simulator`, `pipeline` (a window or metric lost).
    pub const SOURCE: &str = "rtap.source";
    /// The input topic (Kafka source only).
    pub const SOURCE_TOPIC: &str = "rtap.source.topic";
    pub const SOURCE_PARTITION: &str = "rtap.source.partition";
    /// The input record's offset (the line number for files); absent
    /// when there is none (a lost window).
    pub const SOURCE_OFFSET: &str = "rtap.source.offset";
    /// The plugin that failed (dead letters), or the plugins whose
    /// windows had closed, comma-separated (late events); absent for
    /// undecodable input.
    pub const PLUGIN: &str = "rtap.plugin";
    /// `malformed`, `trap`, `timeout`, … (dead letters); `late`.
    pub const REASON: &str = "rtap.reason";
    pub const DETAIL: &str = "rtap.detail";
}

/// One output record for the open transaction: its topic, key, value and
/// headers.
pub struct Record {
    topic: Topic,
    key: String,
    value: String,
    headers: Vec<(&'static str, String)>,
}

impl Record {
    /// The record of an output (`line`: its JSON); none for lifecycle
    /// events, which are not data.
    pub fn of(out: &Output, line: &str) -> Option<Record> {
        let (topic, key) = match out {
            Output::Metric(m) => (
                Topic::Metrics,
                format!(
                    "{}|{}|{}|{}|{}",
                    m.plugin, m.name, m.key, m.window_start, m.window_end
                ),
            ),
            Output::Alert(a) => (Topic::Alerts, a.id.clone()),
            Output::Plugin(_) => return None,
        };
        Some(Record {
            topic,
            key,
            value: line.to_string(),
            headers: Vec::new(),
        })
    }

    /// The record's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A dead letter: the input as received, keyed by its origin
    /// (`source|partition|offset`, so the dead letters of one input record
    /// share a partition).
    pub fn dead_letter(d: &DeadLetter) -> Record {
        let mut headers = origin_headers(&d.source, d.partition, d.offset);
        if let Some(p) = &d.plugin {
            headers.push((headers::PLUGIN, p.clone()));
        }
        headers.push((headers::REASON, d.reason.to_string()));
        headers.push((headers::DETAIL, d.detail.clone()));
        Record {
            topic: Topic::DeadLetters,
            key: origin_key(&d.source, d.partition, d.offset),
            value: d.event.clone(),
            headers,
        }
    }

    /// A late event: the input as received, keyed by its origin.
    pub fn late(l: &LateEvent) -> Record {
        let mut headers = origin_headers(&l.source, l.partition, Some(l.offset));
        headers.push((headers::PLUGIN, l.plugins.join(",")));
        headers.push((headers::REASON, "late".to_string()));
        headers.push((
            headers::DETAIL,
            format!(
                "later than the allowed lateness at watermark {}",
                l.watermark
            ),
        ));
        Record {
            topic: Topic::Late,
            key: origin_key(&l.source, l.partition, Some(l.offset)),
            value: l.event.clone(),
            headers,
        }
    }

    /// Where this record goes.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Its headers, in order.
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }
}

fn origin_key(source: &str, partition: i32, offset: Option<u64>) -> String {
    match offset {
        Some(o) => format!("{source}|{partition}|{o}"),
        None => format!("{source}|{partition}"),
    }
}

fn origin_headers(
    source: &str,
    partition: i32,
    offset: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut h = vec![(headers::SOURCE, source.to_string())];
    if let Some(topic) = source.strip_prefix("kafka:") {
        h.push((headers::SOURCE_TOPIC, topic.to_string()));
    }
    h.push((headers::SOURCE_PARTITION, partition.to_string()));
    if let Some(o) = offset {
        h.push((headers::SOURCE_OFFSET, o.to_string()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_keeps_the_input_and_says_why_in_headers() {
        let d = DeadLetter {
            time: 1,
            plugin: Some("hostile-trap".into()),
            reason: "trap",
            detail: "wasm trap".into(),
            source: "kafka:events".into(),
            partition: 7,
            offset: Some(42),
            event: "{\"page\":\"/trap\"}".into(),
        };
        let r = Record::dead_letter(&d);
        assert_eq!(r.topic(), Topic::DeadLetters);
        assert_eq!(r.value, d.event);
        assert_eq!(r.key, "kafka:events|7|42");
        let h: Vec<(&str, &str)> = r.headers().iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            h,
            [
                (headers::SOURCE, "kafka:events"),
                (headers::SOURCE_TOPIC, "events"),
                (headers::SOURCE_PARTITION, "7"),
                (headers::SOURCE_OFFSET, "42"),
                (headers::PLUGIN, "hostile-trap"),
                (headers::REASON, "trap"),
                (headers::DETAIL, "wasm trap"),
            ]
        );
        // Undecodable input from a file: no topic, no plugin.
        let m = DeadLetter {
            plugin: None,
            reason: "malformed",
            source: "file:in.jsonl".into(),
            partition: 0,
            ..d
        };
        let names: Vec<&str> = Record::dead_letter(&m)
            .headers()
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(
            names,
            [
                headers::SOURCE,
                headers::SOURCE_PARTITION,
                headers::SOURCE_OFFSET,
                headers::REASON,
                headers::DETAIL
            ]
        );
    }

    #[test]
    fn a_late_event_names_the_closed_plugins() {
        let l = LateEvent {
            plugins: vec!["page-views".into(), "error-rate".into()],
            watermark: 1000,
            source: "kafka:events".into(),
            partition: 2,
            offset: 9,
            event: "{}".into(),
        };
        let r = Record::late(&l);
        assert_eq!(r.topic(), Topic::Late);
        assert!(
            r.headers()
                .contains(&(headers::PLUGIN, "page-views,error-rate".into()))
        );
        assert!(r.headers().contains(&(headers::REASON, "late".into())));
    }
}
