//! Stage 2's unit of commit across hosts (`rtap_host::checkpoint::range`)
//! against the real broker. Three exchange tasks send "add n to key k"
//! records; the owner of each of two key-group ranges applies them to a
//! running total per key and commits, per transaction, the totals it
//! changed (output topic and changelog), its meta and its exchange
//! position. Now and then an owner "crashes" — dropped with a transaction
//! open and flushed (tansu shows its records to `read_committed`
//! readers) — and the range is taken over by a new incarnation on a clock
//! up to 5 s off, which has only Kafka to restore from: no local state.
//! Once, a new incarnation takes a range over while the old one still
//! runs (a zombie), whose commit must then be refused.
//!
//! Every record must be applied once: the totals in the output topic and
//! in each range's restored state equal the sums sent, and the meta counts
//! every record once. A last crash writes wrong totals in an open
//! transaction; the range restored after it must not show them.
//!
//! Threads stand in for hosts: each incarnation opens its own Kafka
//! clients and keeps nothing but what it restores.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rtap_host::checkpoint::range::{RangeProducer, RangeState, RangeTopics};
use rtap_host::exchange::{ExchangeTopics, Kind, Owner, Progress, TaskProducer};
use rtap_host::state::keygroup::key_group;

const TASKS: u32 = 3;
const RANGES: u32 = 2;
const BATCHES: u32 = 30;
const KEYS: u64 = 40;
/// The output topic: a partition per range.
const TOTALS: &str = "r-totals";
/// The plugin name the totals are stored under.
const PLUGIN: &str = "count";

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A small deterministic generator (xorshift).
struct Xs(u64);
impl Xs {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
    /// A clock up to 5 s behind or ahead.
    fn clock(&mut self) -> u64 {
        now_us() + self.next(10_000_000) - 5_000_000
    }
}

fn topics(broker: &Broker) -> RangeTopics {
    let exchange = ExchangeTopics {
        topic: "r-exchange".into(),
        tasks: TASKS,
        ranges: RANGES,
        marker_topic: "r-exchange-tasks".into(),
        marker_group: "r-exchange-tasks".into(),
        transactional_prefix: "r".into(),
    };
    broker.create_topic(&exchange.topic, exchange.partitions());
    broker.create_topic(&exchange.marker_topic, TASKS as i32);
    let t = RangeTopics {
        ranges: RANGES,
        changelog: "r-changelog".into(),
        marker_topic: "r-ranges".into(),
        marker_group: "r-ranges".into(),
        exchange,
        owners_group: "r-owners".into(),
        transactional_prefix: "r".into(),
    };
    broker.create_topic(&t.changelog, 128);
    broker.create_topic(&t.marker_topic, RANGES as i32);
    broker.create_topic(TOTALS, RANGES as i32);
    t
}

fn key(k: u64) -> String {
    format!("k{k}")
}

/// The changelog key of `key`'s total.
fn state_key(key: &str) -> Vec<u8> {
    format!("{PLUGIN}\0{key}").into_bytes()
}

/// What a task sent: the sum per key, and the lines per range.
type Sent = (BTreeMap<String, u64>, Vec<u64>);

/// Task `task`: every batch as one transaction, a payload per range of
/// `key:n` lines.
fn run_task(broker: &Broker, topics: &RangeTopics, task: u32) -> Sent {
    let mut rng = Xs(0x9e37_79b9_7f4a_7c15 ^ u64::from(task + 1));
    let mut p = TaskProducer::open(&broker.client(), &topics.exchange, task, now_us()).unwrap();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = vec![0; RANGES as usize];
    for batch in 0..BATCHES {
        let mut payloads = vec![String::new(); RANGES as usize];
        for _ in 0..20 {
            let k = key(rng.next(KEYS));
            let n = 1 + rng.next(9);
            *sent.entry(k.clone()).or_default() += n;
            let r = topics.range_of(key_group(&k));
            payloads[r as usize].push_str(&format!("{k}:{n}\n"));
            lines[r as usize] += 1;
        }
        for (r, payload) in payloads.iter().enumerate() {
            if !payload.is_empty() {
                p.send(r as u32, payload.as_bytes()).unwrap();
            }
        }
        let progress = Progress {
            watermark: i64::from(batch),
            idle: false,
        };
        p.commit(progress, &[]).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    (sent, lines)
}

/// An incarnation of a range's owner: its producer, its exchange reader,
/// the totals and the count of lines applied (its meta).
struct Incarnation {
    producer: RangeProducer,
    owner: Owner,
    totals: BTreeMap<String, u64>,
    lines: u64,
}

impl Incarnation {
    fn open(broker: &Broker, topics: &RangeTopics, range: u32, clock: u64) -> (Self, RangeState) {
        let (producer, state) =
            RangeProducer::open(&broker.client(), topics, range, clock).unwrap();
        let totals = totals_of(topics, range, &state);
        let lines = match state.meta.as_slice() {
            [] => 0,
            m => u64::from_le_bytes(m.try_into().expect("8 bytes of meta")),
        };
        let owner = Owner::open(
            &broker.client(),
            &topics.exchange,
            range,
            Some(
                state
                    .exchange
                    .clone()
                    .unwrap_or_else(|| vec![(BTreeMap::new(), 0); TASKS as usize]),
            ),
        )
        .unwrap();
        let me = Incarnation {
            producer,
            owner,
            totals,
            lines,
        };
        (me, state)
    }

    /// Read and apply what the gates release; returns the lines applied.
    fn step(&mut self) -> u64 {
        let mut released = Vec::new();
        self.owner
            .pump(Duration::from_millis(100), true, &mut released)
            .unwrap();
        let mut n = 0;
        for rec in released.iter().filter(|r| r.header.kind == Kind::Data) {
            for line in std::str::from_utf8(&rec.payload).unwrap().lines() {
                let (k, v) = line.split_once(':').unwrap();
                let total = self.totals.entry(k.to_string()).or_default();
                *total += v.parse::<u64>().unwrap();
                let value = total.to_string();
                self.producer
                    .change(key_group(k), &state_key(k), Some(value.as_bytes()))
                    .unwrap();
                self.producer
                    .output(TOTALS, k.as_bytes(), value.as_bytes())
                    .unwrap();
                n += 1;
            }
        }
        self.lines += n;
        n
    }

    fn commit(&mut self) -> u64 {
        self.producer
            .commit(&self.owner.state(), &self.lines.to_le_bytes())
            .unwrap()
    }
}

/// The totals a restored state holds; every key must be of the range.
fn totals_of(topics: &RangeTopics, range: u32, state: &RangeState) -> BTreeMap<String, u64> {
    state
        .entries
        .iter()
        .map(|(k, v)| {
            let k = String::from_utf8(k.clone()).unwrap();
            let key = k.strip_prefix(&format!("{PLUGIN}\0")).unwrap().to_string();
            assert_eq!(
                topics.range_of(key_group(&key)),
                range,
                "range {range} restored `{key}` of another range"
            );
            let total = std::str::from_utf8(v).unwrap().parse().unwrap();
            (key, total)
        })
        .collect()
}

/// What one range's owner did.
#[derive(Debug, Default)]
struct Report {
    crashes: u32,
    zombie_refused: bool,
    restores: Vec<(usize, Duration)>,
}

/// Range `range`'s owner: applies until it has applied the `sent` lines
/// (0 while the tasks send), crashing after every `crash_every` lines
/// applied in an incarnation (range 0 once as a zombie instead).
fn run_range(broker: &Broker, topics: &RangeTopics, range: u32, sent: &AtomicU64) -> Report {
    let mut rng = Xs(0x51_7cc1_b727_220a ^ u64::from(range + 7));
    let mut report = Report::default();
    let crash_every = 60 + 20 * u64::from(range);
    let (mut inc, _) = Incarnation::open(broker, topics, range, rng.clock());
    let mut since_crash = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        assert!(Instant::now() < deadline, "range {range} hangs");
        let n = inc.step();
        since_crash += n;
        if since_crash >= crash_every && report.crashes < 4 {
            since_crash = 0;
            // The open transaction's records reach the broker; then the
            // range is taken over.
            inc.producer.flush().unwrap();
            if range == 0 && report.crashes == 1 {
                let (next, state) = Incarnation::open(broker, topics, range, rng.clock());
                report.restores.push((state.records, state.took));
                let zombie = inc.producer.commit(&inc.owner.state(), b"");
                assert!(zombie.is_err(), "a fenced incarnation committed");
                println!("range 0's zombie: {}", zombie.unwrap_err());
                report.zombie_refused = true;
                inc = next;
            } else {
                drop(inc);
                let (next, state) = Incarnation::open(broker, topics, range, rng.clock());
                report.restores.push((state.records, state.took));
                inc = next;
            }
            report.crashes += 1;
            continue;
        }
        if n > 0 || rng.next(4) == 0 {
            inc.commit();
        }
        let want = sent.load(Ordering::SeqCst);
        if want > 0 && inc.lines >= want {
            inc.commit();
            return report;
        }
    }
}

#[test]
fn a_range_moves_through_crashes_and_a_zombie_and_applies_every_record_once() {
    let broker = Arc::new(Broker::start());
    let topics = topics(&broker);
    let started = Instant::now();
    let sent: Vec<Arc<AtomicU64>> = (0..RANGES).map(|_| Arc::default()).collect();
    let owners: Vec<_> = (0..RANGES)
        .map(|r| {
            let (broker, topics, sent) = (broker.clone(), topics.clone(), sent[r as usize].clone());
            std::thread::spawn(move || run_range(&broker, &topics, r, &sent))
        })
        .collect();
    let senders: Vec<_> = (0..TASKS)
        .map(|t| {
            let (broker, topics) = (broker.clone(), topics.clone());
            std::thread::spawn(move || run_task(&broker, &topics, t))
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines_per_range = vec![0; RANGES as usize];
    for s in senders {
        let (sums, lines) = s.join().unwrap();
        for (k, n) in sums {
            *want.entry(k).or_default() += n;
        }
        for (r, n) in lines.into_iter().enumerate() {
            lines_per_range[r] += n;
        }
    }
    for (r, n) in lines_per_range.iter().enumerate() {
        sent[r].store(*n, Ordering::SeqCst);
    }
    let reports: Vec<Report> = owners.into_iter().map(|o| o.join().unwrap()).collect();
    println!("sent and applied in {:.1?}: {reports:?}", started.elapsed());
    assert!(reports.iter().all(|r| r.crashes == 4), "{reports:?}");
    assert!(reports[0].zombie_refused);

    // The output topic: the last total of each key is its sum.
    let mut records = broker.read_records(TOTALS, RANGES as i32);
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        assert_eq!(
            r.partition as u32,
            topics.range_of(key_group(&r.key)),
            "`{}` in another range's partition",
            r.key
        );
        last.insert(
            r.key.clone(),
            std::str::from_utf8(&r.value).unwrap().parse().unwrap(),
        );
    }
    assert_eq!(last, want, "the output topic's last totals");

    // A host that gains each range now restores the sums and the count of
    // lines from the changelog, and the owners' group shows where the
    // range reads on.
    let owners_group: BaseConsumer = broker
        .client()
        .set("group.id", &topics.owners_group)
        .create()
        .unwrap();
    let mut restored = BTreeMap::new();
    for r in 0..RANGES {
        let (inc, state) = Incarnation::open(&broker, &topics, r, now_us());
        println!(
            "range {r} restored at #{}: {} changelog records in {:.1?} (the meta's partition {:.1?})",
            state.marker, state.records, state.took, state.meta_took
        );
        assert_eq!(
            inc.lines, lines_per_range[r as usize],
            "range {r}: lines applied, by the restored meta"
        );
        restored.extend(inc.totals.clone());
        let mut tpl = TopicPartitionList::new();
        for p in topics.exchange.of_range(r) {
            tpl.add_partition(&topics.exchange.topic, p);
        }
        let committed: Vec<i64> = owners_group
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap()
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                o => panic!("range {r}: no exchange offset committed ({o:?})"),
            })
            .collect();
        let in_meta: Vec<i64> = state.exchange.unwrap().iter().map(|s| s.1).collect();
        assert_eq!(committed, in_meta, "range {r}'s exchange offsets");
    }
    assert_eq!(restored, want, "the totals restored from the changelog");

    // A last incarnation writes wrong totals in a transaction it never
    // commits; the next one must not restore them.
    let (mut bad, _) = Incarnation::open(&broker, &topics, 1, now_us());
    for k in want.keys().filter(|k| topics.range_of(key_group(k)) == 1) {
        bad.producer
            .change(key_group(k), &state_key(k), Some(b"999999"))
            .unwrap();
    }
    bad.producer.clear(PLUGIN).unwrap();
    bad.producer.flush().unwrap();
    drop(bad);
    let (after, state) = Incarnation::open(&broker, &topics, 1, now_us());
    let want_1: BTreeMap<String, u64> = want
        .iter()
        .filter(|(k, _)| topics.range_of(key_group(k)) == 1)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        after.totals, want_1,
        "an aborted transaction's changelog records counted"
    );
    println!(
        "after an aborted transaction: {} records read, {:.1?}",
        state.records, state.took
    );
    // Each key group of another range is refused.
    let mut after = after;
    let other = topics.key_groups(0).start;
    assert!(
        after
            .producer
            .change(other, b"count\0x", Some(b"1"))
            .is_err()
    );
}
