//! The receiving end of the exchange topic: the owner of a range of key
//! groups reads the range's partitions (one per task) with
//! `read_committed`, passes every record through its partition's [`Gate`]
//! and the tasks' committed markers, and hands on what the gates release.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{Applied, ExchangeTopics, Gate, HEADER, Header, MarkerReader, Released};
use super::{Progress, owner_watermark};

/// How the owner of a range failed to read it.
#[derive(Debug, thiserror::Error)]
#[error("exchange owner of key-group range {range}: {what}: {source}")]
pub struct OwnerError {
    pub range: u32,
    pub what: &'static str,
    pub source: KafkaError,
}

/// The owner of key-group range `range`: a consumer on its partitions, a
/// gate per partition (task order).
pub struct Owner {
    range: u32,
    topic: String,
    consumer: BaseConsumer,
    /// The range's partitions, by task.
    partitions: Vec<i32>,
    gates: Vec<Gate>,
    markers: MarkerReader,
    tasks: Vec<u32>,
    /// Records that are not the exchange's (no or a broken `rtap-x`
    /// header, a partition of another task): skipped, counted, warned of.
    pub foreign: u64,
}

impl Owner {
    /// Read range `range` on from `state` — per task, what the owner's
    /// state holds as applied and the exchange offset committed with it —
    /// or, without a state, from each partition's end now (an owner whose
    /// state does not outlive the process: nothing before it is its).
    pub fn open(
        client: &ClientConfig,
        topics: &ExchangeTopics,
        range: u32,
        state: Option<Vec<(BTreeMap<u32, Applied>, i64)>>,
    ) -> Result<Owner, OwnerError> {
        let err = |what| {
            move |source| OwnerError {
                range,
                what,
                source,
            }
        };
        let partitions = topics.of_range(range);
        let consumer: BaseConsumer = client
            .clone()
            .set(
                "group.id",
                format!("{}-owners", topics.transactional_prefix),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // tansu holds every fetch for the whole `fetch.wait.max.ms`
            // (librdkafka's default 500), even with records there: as the
            // Kafka source does (`crate::source::kafka`), 5 ms.
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(err("creating the consumer"))?;
        let state = match state {
            Some(s) => s,
            None => partitions
                .iter()
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topics.topic, *p, Duration::from_secs(10))
                        .map(|(_, high)| (BTreeMap::new(), high))
                })
                .collect::<Result<_, _>>()
                .map_err(err("reading where the partitions end"))?,
        };
        let mut tpl = TopicPartitionList::new();
        for (p, (_, from)) in partitions.iter().zip(&state) {
            tpl.add_partition_offset(&topics.topic, *p, Offset::Offset(*from))
                .map_err(err("the partitions"))?;
        }
        consumer
            .assign(&tpl)
            .map_err(err("assigning the partitions"))?;
        Ok(Owner {
            range,
            topic: topics.topic.clone(),
            consumer,
            partitions,
            gates: state
                .into_iter()
                .map(|(applied, from)| Gate::new(applied, from))
                .collect(),
            markers: MarkerReader::new(client, topics).map_err(err("the markers' reader"))?,
            tasks: (0..topics.tasks).collect(),
            foreign: 0,
        })
    }

    /// Read for up to `wait` (returning early once a poll comes back
    /// empty after something was read), then, with `markers`, the tasks'
    /// committed markers (one broker round trip); release into `out` what
    /// the gates now know committed, in each partition's order.
    pub fn pump(
        &mut self,
        wait: Duration,
        markers: bool,
        out: &mut Vec<Released>,
    ) -> Result<usize, OwnerError> {
        let until = Instant::now() + wait;
        let mut read = 0;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let poll = if read > 0 { Duration::ZERO } else { left };
            let Some(m) = self.consumer.poll(poll) else {
                break;
            };
            let m = m.map_err(|source| OwnerError {
                range: self.range,
                what: "reading",
                source,
            })?;
            read += 1;
            let header = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == HEADER))
                .and_then(|h| h.value)
                .ok_or_else(|| format!("no `{HEADER}` header"))
                .and_then(Header::decode);
            let task = self.partitions.iter().position(|p| *p == m.partition());
            match (header, task) {
                (Ok(h), Some(t)) if h.task as usize == t => {
                    self.gates[t].offer(m.offset(), h, m.payload().unwrap_or_default().to_vec());
                }
                (h, _) => {
                    self.foreign += 1;
                    tracing::warn!(
                        topic = %self.topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        header = ?h,
                        "exchange: a record that is not this partition's task's; skipped"
                    );
                }
            }
            if Instant::now() >= until {
                break;
            }
        }
        if markers {
            let marks = self
                .markers
                .read(&self.tasks)
                .map_err(|source| OwnerError {
                    range: self.range,
                    what: "reading the tasks' markers",
                    source,
                })?;
            for g in &mut self.gates {
                g.markers(&marks);
            }
        }
        for g in &mut self.gates {
            out.extend(g.release());
        }
        Ok(read)
    }

    /// Tasks' committed markers known another way (the owner's host
    /// committed them itself): the gates need not wait for a read.
    pub fn markers(&mut self, marks: &BTreeMap<u32, u64>) {
        for g in &mut self.gates {
            g.markers(marks);
        }
    }

    /// The watermark this owner may fire by: the least of its tasks'
    /// committed seals (idle ones aside); none while a task sealed nothing.
    pub fn watermark(&self) -> Option<i64> {
        owner_watermark(
            self.gates
                .iter()
                .enumerate()
                .map(|(t, g)| g.progress(t as u32)),
        )
    }

    /// Each task's last committed seal here.
    pub fn progress(&self) -> Vec<Option<Progress>> {
        self.gates
            .iter()
            .enumerate()
            .map(|(t, g)| g.progress(t as u32))
            .collect()
    }

    /// What to store with the owner's state, per task: the last record
    /// applied and the exchange offset to read from after a restart.
    pub fn state(&self) -> Vec<(BTreeMap<u32, Applied>, i64)> {
        self.gates
            .iter()
            .map(|g| (g.applied(), g.commit_offset()))
            .collect()
    }

    /// Records read and not decided yet.
    pub fn waiting(&self) -> usize {
        self.gates.iter().map(Gate::waiting).sum()
    }
}
