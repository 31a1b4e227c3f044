//! The exchange between the workers of a round: stage 1's records for
//! each stage-2 owner, moved in memory or, with `--exchange wire`, encoded
//! as for another host (`crate::pipeline::wire`) and decoded at the owner.

use crate::pipeline::Pipeline;
use crate::pipeline::exchange::{LateFound, Record, Round};
use crate::pipeline::wire::{Encoder, Inbox as WireInbox, WireError};

/// What one worker's stage 1 sends each stage-2 owner.
pub(super) enum Sent {
    Memory(Vec<Record>),
    /// A payload of `crate::pipeline::wire`, with its record count.
    Wire(Vec<u8>, u64),
}

impl Sent {
    /// Stage 1's records of `round` for each owner, encoded with `wire`.
    pub(super) fn of(
        p: &Pipeline,
        round: &Round,
        records: Vec<Vec<Record>>,
        wire: bool,
    ) -> Vec<Sent> {
        if !wire {
            return records.into_iter().map(Sent::Memory).collect();
        }
        let encoder = Encoder::new(&p.slot_ids());
        records
            .into_iter()
            .map(|r| {
                let mut buf = Vec::new();
                if !r.is_empty() {
                    encoder.encode(round, &r, &mut buf);
                }
                Sent::Wire(buf, r.len() as u64)
            })
            .collect()
    }
}

/// What a stage-2 owner received in a round.
#[derive(Default)]
pub(super) struct Inbox {
    memory: Vec<Record>,
    payloads: Vec<Vec<u8>>,
    /// The records received (for the workers' counters).
    pub(super) records: u64,
}

impl Inbox {
    pub(super) fn take(&mut self, s: Sent) {
        match s {
            Sent::Memory(mut r) => {
                self.records += r.len() as u64;
                self.memory.append(&mut r);
            }
            Sent::Wire(b, n) => {
                self.records += n;
                if !b.is_empty() {
                    self.payloads.push(b);
                }
            }
        }
    }

    /// Stage 2 on `p` (worker `p.shard.worker`) with what it received:
    /// the payloads decoded into a round of its own, else `round`. The late
    /// marks of a decoded round come back resolved against it, as an owner
    /// on another host will report them; the others stay in `p`.
    pub(super) fn stage2(
        self,
        p: &mut Pipeline,
        round: &Round,
    ) -> Result<Vec<LateFound>, WireError> {
        if self.payloads.is_empty() {
            p.stage2(round, self.memory);
            return Ok(Vec::new());
        }
        let mut wire = WireInbox::new(&p.slot_ids());
        for b in &self.payloads {
            wire.add(b)?;
        }
        crate::metrics::metrics()
            .worker_exchange_bytes
            .with_label_values(&[&p.shard.worker.to_string()])
            .inc_by(wire.bytes);
        let (own, records) = wire.finish(round.end_wm);
        p.stage2(&own, records);
        Ok(std::mem::take(&mut p.late_marks)
            .iter()
            .map(|m| m.resolve(&own))
            .collect())
    }
}

/// `--exchange kafka`: every round's payloads through the exchange topic.
/// Worker *w*'s stage 1 is task *w* (its own transactional producer) and
/// its stage 2 the owner of range *w*; a round's payloads are one
/// transaction per task, sealed with the round's watermark, and each
/// owner reads until every task's transaction of the round is released
/// by its gates. The state still commits as one host's (the records of a
/// round are all applied within the round), so after a restart the owners
/// read on from the topic's end.
pub struct Crossing {
    health: std::sync::Arc<crate::status::KafkaHealth>,
    client: rdkafka::ClientConfig,
    topics: crate::exchange::ExchangeTopics,
    producers: Vec<crate::exchange::TaskProducer>,
    owners: Vec<crate::exchange::Owner>,
    /// Records through the topic, and their bytes.
    pub records: u64,
    pub bytes: u64,
}

/// Task `t`'s producer: a new incarnation, fencing the one before, its
/// claim on the clock now.
fn open_task(
    client: &rdkafka::ClientConfig,
    topics: &crate::exchange::ExchangeTopics,
    t: u32,
) -> Result<crate::exchange::TaskProducer, crate::exchange::ExchangeError> {
    let now_us = crate::clock::now_ms().max(0) as u64 * 1000;
    crate::exchange::TaskProducer::open(client, topics, t, now_us)
}

/// How long a round waits for its own records to come back before the
/// run ends with an error (a broker away for longer is waited out by the
/// restart's checkpoint instead); it warns every [`CROSSING_WARN`].
const CROSSING_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
const CROSSING_WARN: std::time::Duration = std::time::Duration::from_secs(10);

impl Crossing {
    /// The topics for `workers` workers under `group`, created if missing;
    /// the tasks' producers first (fencing a previous run's), then the
    /// owners from the partitions' ends.
    pub fn open(k: &crate::kafka::KafkaConfig, workers: usize) -> Result<Self, String> {
        let w = workers as u32;
        let topics = crate::exchange::ExchangeTopics {
            topic: format!("{}-exchange-w{workers}", k.group),
            tasks: w,
            ranges: w,
            marker_topic: format!("{}-exchange-w{workers}-tasks", k.group),
            marker_group: format!("{}-exchange-w{workers}-tasks", k.group),
            transactional_prefix: format!("{}-x{workers}", k.transactional_id),
        };
        crate::kafka::ensure_exchange_topics(
            k,
            &topics.topic,
            topics.partitions(),
            &topics.marker_topic,
            topics.tasks as i32,
        )
        .map_err(|e| e.to_string())?;
        // lz4: a payload is mostly events' JSON (5.1× smaller here), and
        // the broker's CPU per byte fell by 2.5× with it (BENCHMARKS.md).
        let client = k.client(&[("compression.type", "lz4")]);
        let producers = (0..w)
            .map(|t| open_task(&client, &topics, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let owners = (0..w)
            .map(|r| crate::exchange::Owner::open(&client, &topics, r, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        k.health.exchange_used();
        Ok(Crossing {
            health: k.health.clone(),
            client,
            topics,
            producers,
            owners,
            records: 0,
            bytes: 0,
        })
    }

    /// Task `t`'s payloads of a round, sent and committed with `seal`:
    /// the committed id.
    fn send_round(
        &mut self,
        t: usize,
        to: &[Sent],
        seal: crate::exchange::Progress,
    ) -> Result<u64, crate::exchange::ExchangeError> {
        let p = &mut self.producers[t];
        for (r, s) in to.iter().enumerate() {
            if let Sent::Wire(b, _) = s
                && !b.is_empty()
            {
                p.send(r as u32, b)?;
            }
        }
        p.commit(seal, &[])
    }

    /// Each worker's `sent` (one per owner, of one round) through the
    /// topic, sealed with the round's watermark `wm`: what each owner
    /// received, in task order.
    pub(super) fn cross(&mut self, sent: Vec<Vec<Sent>>, wm: i64) -> Result<Vec<Inbox>, String> {
        // `/health` shows the exchange degraded while a round waits on it.
        self.health.exchange_busy(crate::clock::now_ms());
        let r = self.cross_round(&sent, wm);
        self.health.exchange_done();
        r
    }

    fn cross_round(&mut self, sent: &[Vec<Sent>], wm: i64) -> Result<Vec<Inbox>, String> {
        let until = std::time::Instant::now() + CROSSING_WAIT;
        let mut ids = Vec::with_capacity(sent.len());
        // Records per task and owner, for the owners' counters.
        let mut counts = vec![vec![0u64; self.owners.len()]; sent.len()];
        for (t, to) in sent.iter().enumerate() {
            for (r, s) in to.iter().enumerate() {
                let Sent::Wire(b, n) = s else {
                    unreachable!("the kafka exchange sends payloads")
                };
                if !b.is_empty() {
                    counts[t][r] = *n;
                    self.records += n;
                    self.bytes += b.len() as u64;
                }
            }
            let seal = crate::exchange::Progress {
                watermark: wm,
                idle: false,
            };
            // A failure (the broker away, a commit whose outcome is not
            // known) leaves the task's producer broken: a new incarnation
            // fences it and sends the round again under a new id. Only
            // records of the id that committed are taken below, so a
            // transaction of the broken one that did commit is not applied.
            let mut tries = 0u32;
            let id = loop {
                let r = self.send_round(t, to, seal);
                match r {
                    Ok(id) => break id,
                    Err(e) if std::time::Instant::now() < until => {
                        tries += 1;
                        tracing::warn!(
                            task = t,
                            tries,
                            "exchange topic: the round's transaction failed, sending it again from a new producer: {e}"
                        );
                        std::thread::sleep(std::time::Duration::from_millis(
                            (100 << tries.min(5)) as u64,
                        ));
                        match open_task(&self.client, &self.topics, t as u32) {
                            Ok(p) => self.producers[t] = p,
                            Err(e) => {
                                tracing::warn!(task = t, "exchange topic: reopening the task: {e}")
                            }
                        }
                    }
                    Err(e) => return Err(format!("the exchange topic, task {t}: {e}")),
                }
            };
            ids.push(id);
        }
        // Each task's marker is the id it just committed: no owner needs
        // to read it from the broker.
        let marks: std::collections::BTreeMap<u32, u64> = ids
            .iter()
            .enumerate()
            .map(|(t, id)| (t as u32, *id))
            .collect();
        let mut inboxes = Vec::with_capacity(self.owners.len());
        for (r_at, o) in self.owners.iter_mut().enumerate() {
            o.markers(&marks);
            let mut inbox = Inbox::default();
            let mut sealed = vec![false; ids.len()];
            let mut released = Vec::new();
            let mut warn_at = std::time::Instant::now() + CROSSING_WARN;
            while sealed.contains(&false) {
                let now = std::time::Instant::now();
                if now > until {
                    return Err(format!(
                        "the exchange topic did not bring back the round's records in {CROSSING_WAIT:?} (owner {r_at}, tasks sealed: {sealed:?})"
                    ));
                }
                if now > warn_at {
                    warn_at = now + CROSSING_WARN;
                    tracing::warn!(
                        owner = r_at,
                        ?sealed,
                        "exchange topic: still waiting for the round's records"
                    );
                }
                // A failed read (the broker away) is tried again: the
                // consumer keeps its position.
                if let Err(e) = o.pump(std::time::Duration::from_millis(5), false, &mut released) {
                    tracing::debug!(owner = r_at, "exchange topic: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                for r in released.drain(..) {
                    let t = r.header.task as usize;
                    if r.header.id != ids[t] {
                        continue; // a claim's, or of a run before this one
                    }
                    match r.header.kind {
                        crate::exchange::Kind::Data => {
                            inbox.records += counts[t][r_at];
                            inbox.payloads.push(r.payload);
                        }
                        crate::exchange::Kind::Seal => sealed[t] = true,
                        crate::exchange::Kind::Claim => {}
                    }
                }
            }
            inboxes.push(inbox);
        }
        Ok(inboxes)
    }
}
