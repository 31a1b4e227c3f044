//! Kafka source (`--kafka-brokers`): the seed's `website-analytics-events`.
//!
//! One host reads every partition of the topic (manual assignment inside the
//! consumer group `--kafka-group`, whose committed offsets show the lag). It
//! resumes from the positions of the last checkpoint — the offsets that
//! belong to the restored state — and falls back to the group's committed
//! offsets, then to the earliest, when there is no checkpoint. A batch holds
//! the records of every partition a poll brought, in runs by partition (see
//! `EventBatch::parts`): the plugins are called once per batch, and the
//! pipeline still keeps a watermark per partition. Each batch also names
//! the partitions with records left to read (`EventBatch::backlog`, from the
//! lag reporter): those are never taken for idle.
//!
//! Offsets are committed to the group only inside the Kafka sink's
//! transaction, together with the outputs and the commit marker (see
//! `crate::checkpoint`); the source itself never commits. Scaling past one host
//! needs the repartition step described in `docs/kafka-exactly-once-plan.md`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Position, Source, SourceError, decode};
use crate::event::{EventBatch, Malformed, Origin};
use crate::kafka::KafkaConfig;
use crate::metrics::metrics;
use crate::status::KafkaHealth;

fn kafka_err(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> SourceError + '_ {
    move |e| SourceError::Io {
        what: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// How long a batch may collect events before it is handed on.
const MAX_LINGER: Duration = Duration::from_millis(20);

/// How many records share one reading of the clocks (a few hundred
/// microseconds of decoding; the linger and the fetch delay are in ms).
const CLOCK_EVERY: usize = 64;

pub struct KafkaSource {
    name: String,
    topic: String,
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    /// The batch being filled: every partition's records, in runs.
    pending: Option<EventBatch>,
    /// The next offset of each partition in `pending`.
    ends: BTreeMap<i32, Position>,
    /// The next offset per partition, shared with the lag reporter.
    next: Arc<Mutex<BTreeMap<i32, i64>>>,
    /// The partitions with records left to read, from the lag reporter.
    backlog: Arc<Mutex<Vec<i32>>>,
    /// Record timestamp → read, per record; flushed per batch.
    fetch_delay: prometheus::local::LocalHistogram,
}

impl KafkaSource {
    /// `idle_timeout`: the watermark's; the lag reports come often enough
    /// for it (see [`lag_period`]).
    pub fn open(cfg: &KafkaConfig, idle_timeout: Duration) -> Result<Self, SourceError> {
        let consumer: BaseConsumer = cfg
            .client(&[
                ("group.id", cfg.group.as_str()),
                ("enable.auto.commit", "false"),
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "6000"),
                // Fewer, fuller fetches: measured on tansu, 1-byte fetches
                // at 100 K events/s cost the broker 1.6 cores. tansu holds
                // every fetch for the whole `fetch.wait.max.ms` (its fetch
                // loop sleeps out the wait even when data is there), so the
                // wait is added to every record's latency. Measured (60 s,
                // all plugins): WebSocket P99 at 1 000/s 61-64 ms with 10,
                // 43-53 ms with 5, 220-324 ms with 2 (the broker, fetched
                // back to back, falls behind); at 10 000/s 61-72 vs 43-48 ms;
                // throughput at 100 000/s unchanged.
                ("fetch.min.bytes", "131072"),
                ("fetch.wait.max.ms", "5"),
            ])
            .create()
            .map_err(kafka_err("Kafka consumer"))?;
        let md = consumer
            .fetch_metadata(Some(&cfg.events_topic), Duration::from_secs(10))
            .map_err(kafka_err(&cfg.events_topic))?;
        let mut partitions: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(SourceError::Io {
                what: format!("Kafka topic {}", cfg.events_topic),
                source: std::io::Error::other("the topic has no partitions"),
            });
        }
        let mut s = KafkaSource {
            name: format!("kafka:{}", cfg.events_topic),
            topic: cfg.events_topic.clone(),
            consumer,
            partitions,
            pending: None,
            ends: BTreeMap::new(),
            next: Arc::new(Mutex::new(BTreeMap::new())),
            backlog: Arc::new(Mutex::new(Vec::new())),
            fetch_delay: metrics()
                .fetch_delay
                .with_label_values(&[&format!("kafka:{}", cfg.events_topic)])
                .local(),
        };
        s.assign(&[])?;
        spawn_lag_reporter(
            cfg,
            s.topic.clone(),
            s.partitions.clone(),
            &s.next,
            &s.backlog,
            lag_period(idle_timeout),
        )?;
        Ok(s)
    }

    /// Every partition from the given positions, else the group's committed
    /// offsets (else the earliest).
    fn assign(&mut self, positions: &[(i32, Position)]) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        // Where each partition starts, for the lag reporter: the checkpoint's
        // position, else the group's committed offset; neither: the earliest
        // (the reporter takes the log's start).
        let mut start = BTreeMap::new();
        let mut stored = TopicPartitionList::new();
        for &p in &self.partitions {
            let off = match positions.iter().find(|(q, _)| *q == p) {
                Some((_, pos)) => {
                    start.insert(p, pos.offset as i64);
                    Offset::Offset(pos.offset as i64)
                }
                None => {
                    stored.add_partition(&self.topic, p);
                    Offset::Stored
                }
            };
            tpl.add_partition_offset(&self.topic, p, off)
                .map_err(kafka_err(&self.topic))?;
        }
        if stored.count() > 0 {
            let committed = self
                .consumer
                .committed_offsets(stored, Duration::from_secs(10))
                .map_err(kafka_err(&self.topic))?;
            for e in committed.elements() {
                if let Offset::Offset(o) = e.offset() {
                    start.insert(e.partition(), o);
                }
            }
        }
        *self.next.lock().expect("lag lock") = start;
        self.consumer.assign(&tpl).map_err(kafka_err(&self.topic))
    }

    /// The partitions this source reads.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Hand on the pending batch. Its latency clock (`created`) started
    /// when its first event was read, so the time it waited here counts as
    /// rtap's.
    fn take(&mut self) -> Option<EventBatch> {
        let mut b = self.pending.take()?;
        b.ends = std::mem::take(&mut self.ends).into_iter().collect();
        let mut next = self.next.lock().expect("lag lock");
        for &(p, pos) in &b.ends {
            next.insert(p, pos.offset as i64);
        }
        // librdkafka's position also steps over the offsets no consumer
        // receives: a transaction's commit marker, aborted records. Without
        // it a partition whose last write ended a transaction would keep a
        // lag of 1 and never go idle. (Every record polled so far is in
        // this batch, so the position is never behind its ends.)
        if let Ok(positions) = self.consumer.position() {
            for e in positions.elements() {
                if let Offset::Offset(o) = e.offset() {
                    let n = next.entry(e.partition()).or_insert(o);
                    *n = (*n).max(o);
                }
            }
        }
        drop(next);
        b.backlog
            .clone_from(&self.backlog.lock().expect("backlog lock"));
        self.fetch_delay.flush();
        Some(b)
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    /// One batch of every partition's records (in runs by partition): one
    /// set of plugin calls however many partitions a fetch brought, instead
    /// of one per partition. Measured at 80 000 events/s: 3 times fewer
    /// calls, 12–13 % less time in them (each call copies its keys' states
    /// in and out and groups its events).
    fn next_batch(&mut self, max: usize) -> Result<Option<EventBatch>, SourceError> {
        let started = Instant::now();
        let mut taken = 0usize;
        // The clocks, read at the first record and every CLOCK_EVERY after
        // it: records polled back to back arrived together, and two clock
        // reads per record (fetch delay, linger) were 1.8 % of the host's
        // CPU at 80 000 events/s, more than half the decoding.
        let (mut now, mut wall_ms) = (started, 0);
        loop {
            let timeout = if taken == 0 {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(timeout) {
                Some(Ok(msg)) => {
                    if taken.is_multiple_of(CLOCK_EVERY) {
                        now = Instant::now();
                        wall_ms = crate::clock::now_ms();
                    }
                    if let Some(ts) = msg.timestamp().to_millis() {
                        let delay = wall_ms - ts;
                        self.fetch_delay.observe(delay.max(0) as f64 / 1000.0);
                    }
                    let p = msg.partition();
                    let off = msg.offset();
                    let batch = self.pending.get_or_insert_with(|| {
                        EventBatch::new(Origin {
                            source: Arc::from(self.name.as_str()),
                            partition: p,
                        })
                    });
                    batch.enter_partition(p);
                    let payload = msg.payload().unwrap_or_default();
                    if let Err(e) = decode::decode_into(payload, off as u64, batch) {
                        batch.malformed.push(Malformed {
                            offset: off as u64,
                            reason: e.to_string(),
                            raw: String::from_utf8_lossy(payload).into_owned(),
                        });
                    }
                    // The batch's positions are `ends`, set in `take`.
                    self.ends.insert(
                        p,
                        Position {
                            offset: off as u64 + 1,
                            seq: off as u64 + 1,
                        },
                    );
                    taken += 1;
                    let full = batch.events.len() + batch.malformed.len() >= max;
                    // A batch waits at most MAX_LINGER for more events: with
                    // a backlog the local queue is never empty.
                    if full || now - started >= MAX_LINGER {
                        return Ok(self.take());
                    }
                }
                Some(Err(e)) => tracing::warn!(topic = %self.topic, "Kafka consumer: {e}"),
                None => {
                    if self.pending.is_some() {
                        return Ok(self.take());
                    }
                }
            }
        }
    }

    fn seek(&mut self, positions: &[(i32, Position)]) -> Result<(), SourceError> {
        self.pending = None;
        self.ends.clear();
        self.assign(positions)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Dropping a consumer that still holds prefetched messages can hang in
        // rd_kafka_destroy: unassign first.
        let _ = self.consumer.unassign();
    }
}

/// How often the lag is reported: every 2 s, or a quarter of the idle
/// timeout when that is shorter (not under 100 ms). A partition reported
/// caught up counts as idle once it has sent nothing for the idle timeout;
/// if the consumer falls behind on it meanwhile, only the next report says
/// so, and with a report period longer than the timeout the watermark
/// could pass the partition's unread records first.
pub fn lag_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// Consumer lag per partition (end offset − the position, see `take`), every
/// [`lag_period`], from a thread of its own: querying the broker's end
/// offsets takes a round trip per partition, which must not stall the
/// source. Stops with the source.
///
/// The partitions with a lag go to `backlog`, which every batch carries:
/// such a partition is not idle, however long since its last record. A
/// consumer catching up on a backlog does not read every partition at the
/// same pace — draining 3 M events from tansu, some partitions got no
/// records for more than the 10 s idle timeout — and a partition taken for
/// idle lets the watermark run past the records it still holds: 30 % of
/// those 3 M events were dropped as late (364 with the partitions held).
fn spawn_lag_reporter(
    cfg: &KafkaConfig,
    topic: String,
    partitions: Vec<i32>,
    next: &Arc<Mutex<BTreeMap<i32, i64>>>,
    backlog: &Arc<Mutex<Vec<i32>>>,
    period: Duration,
) -> Result<(), SourceError> {
    let client: BaseConsumer = cfg
        .client(&[])
        .create()
        .map_err(kafka_err("Kafka lag client"))?;
    // The first report before the source reads: until a backlogged
    // partition is reported, an idle timeout shorter than the report
    // period could pass it (seen with a 2 s timeout: 6 765 late events).
    let health = cfg.health.clone();
    report_lag(&client, &topic, &partitions, next, backlog, &health);
    let next = Arc::downgrade(next);
    let backlog = Arc::downgrade(backlog);
    std::thread::Builder::new()
        .name("rtap-kafka-lag".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let (Some(next), Some(backlog)) = (next.upgrade(), backlog.upgrade()) else {
                    return;
                };
                report_lag(&client, &topic, &partitions, &next, &backlog, &health);
            }
        })
        .map_err(|e| SourceError::Io {
            what: "Kafka lag reporter".into(),
            source: e,
        })?;
    Ok(())
}

/// One round of [`spawn_lag_reporter`]: each partition's lag into the
/// metrics, the partitions with a lag into `backlog`. The round is also
/// the source's probe of the broker (`health`): a query that fails marks
/// it unreachable, every partition counts as behind (none may go idle
/// while the broker is away), and the rest of the round is skipped (each
/// query would wait out its timeout); one that answers marks it reached.
fn report_lag(
    client: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    next: &Mutex<BTreeMap<i32, i64>>,
    backlog: &Mutex<Vec<i32>>,
    health: &KafkaHealth,
) {
    let mut behind = Vec::new();
    for &p in partitions {
        let (low, high) = match client.fetch_watermarks(topic, p, Duration::from_secs(1)) {
            Ok(w) => {
                health.source_reached();
                w
            }
            Err(e) => {
                health.source_failed(
                    crate::clock::now_ms(),
                    format!("querying the offsets of {topic} partition {p}: {e}"),
                );
                // Unknown: every partition may have records the broker
                // holds back — none is idle until the broker answers
                // again (after an outage longer than the idle timeout,
                // the first partition back must not pass the others).
                behind = partitions.to_vec();
                break;
            }
        };
        // Not read from, with no start known: from the earliest.
        let pos = next
            .lock()
            .expect("lag lock")
            .get(&p)
            .copied()
            .unwrap_or(low);
        let lag = (high - pos).max(0);
        metrics()
            .consumer_lag
            .with_label_values(&[&p.to_string()])
            .set(lag);
        if lag > 0 {
            behind.push(p);
        }
    }
    *backlog.lock().expect("backlog lock") = behind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_options_win_and_stay_out_of_other_clients() {
        let opt = |k: &str, v: &str| (k.to_string(), v.to_string());
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            group: "g".into(),
            events_topic: "e".into(),
            metrics_topic: "m".into(),
            alerts_topic: "a".into(),
            dead_letter_topic: "d".into(),
            late_topic: "l".into(),
            marker_topic: "c".into(),
            changelog_topic: "g-changelog".into(),
            changelog: true,
            cluster_topic: "g-cluster".into(),
            control_topic: "g-control".into(),
            transactional_id: "t".into(),
            options: vec![opt("linger.ms", "10"), opt("client.id", "x")],
            producer_options: vec![opt("linger.ms", "25"), opt("batch.size", "262144")],
            health: Default::default(),
        };
        let defaults = [("linger.ms", "5"), ("batch.size", "16384")];
        let p = cfg.producer(&defaults);
        assert_eq!(p.get("linger.ms"), Some("25"));
        assert_eq!(p.get("batch.size"), Some("262144"));
        assert_eq!(p.get("client.id"), Some("x"));
        let c = cfg.client(&defaults);
        assert_eq!(c.get("linger.ms"), Some("10"));
        assert_eq!(c.get("batch.size"), Some("16384"));
        assert_eq!(cfg.client(&[]).get("batch.size"), None);
    }

    #[test]
    fn lag_reports_come_within_the_idle_timeout() {
        let ms = Duration::from_millis;
        // The default 10 s timeout: every 2 s.
        assert_eq!(lag_period(Duration::from_secs(10)), Duration::from_secs(2));
        assert_eq!(lag_period(Duration::from_secs(600)), Duration::from_secs(2));
        // Shorter timeouts: four reports per timeout.
        assert_eq!(lag_period(Duration::from_secs(2)), ms(500));
        assert_eq!(lag_period(ms(1_000)), ms(250));
        // Not a broker round trip per partition every few milliseconds.
        assert_eq!(lag_period(ms(200)), ms(100));
        assert_eq!(lag_period(Duration::ZERO), ms(100));
    }
}
