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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use rtap_host::checkpoint::range::{RangeError, RangeProducer, RangeState, RangeTopics};
use rtap_host::cluster::ranges::{Ranges, Stage2};
use rtap_host::cluster::tasks::{InputGroup, Stage1, Tasks};
use rtap_host::exchange::{
    ExchangeError, ExchangeTopics, Kind, Owner, Progress, Released, TaskProducer,
};
use rtap_host::state::keygroup::key_group;

const TASKS: u32 = 3;
const RANGES: u32 = 2;
const BATCHES: u32 = 30;
const KEYS: u64 = 40;
/// The output topic: a partition per range.
const TOTALS: &str = "r-totals";
/// The tests run one at a time: three brokers and a dozen hosts' clients
/// at once on two cores made the group protocol's rebalances on tansu take
/// minutes (heartbeats late, members dropped and joining again).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets `stop` when dropped: a test that fails stops its hosts instead of
/// leaving them running beside the next test.
struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The input topic of the two-stage test.
const INPUT: &str = "r-input";
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

/// The topics of `ranges` ranges.
fn topics(broker: &Broker, tasks: u32, ranges: u32) -> RangeTopics {
    let exchange = ExchangeTopics {
        topic: "r-exchange".into(),
        tasks,
        ranges,
        marker_topic: "r-exchange-tasks".into(),
        marker_group: "r-exchange-tasks".into(),
        transactional_prefix: "r".into(),
    };
    broker.create_topic(&exchange.topic, exchange.partitions());
    broker.create_topic(&exchange.marker_topic, tasks as i32);
    let t = RangeTopics {
        ranges,
        changelog: "r-changelog".into(),
        marker_topic: "r-ranges".into(),
        marker_group: "r-ranges".into(),
        exchange,
        owners_group: "r-owners".into(),
        transactional_prefix: "r".into(),
    };
    broker.create_topic(&t.changelog, 128);
    broker.create_topic(&t.marker_topic, ranges as i32);
    broker.create_topic(TOTALS, ranges as i32);
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

/// Task `task`: `batches` batches, each one transaction with a payload per
/// range of `key:n` lines, `pause` apart.
fn run_task(
    broker: &Broker,
    topics: &RangeTopics,
    task: u32,
    batches: u32,
    pause: Duration,
) -> Sent {
    let mut rng = Xs(0x9e37_79b9_7f4a_7c15 ^ u64::from(task + 1));
    let mut p = TaskProducer::open(&broker.client(), &topics.exchange, task, now_us()).unwrap();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = vec![0; topics.ranges as usize];
    for batch in 0..batches {
        let mut payloads = vec![String::new(); topics.ranges as usize];
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
        std::thread::sleep(pause);
    }
    (sent, lines)
}

/// Every task sends `batches` batches `pause` apart (a thread each):
/// the sums per key, and the lines per range.
fn send_all(
    broker: &Arc<Broker>,
    topics: &RangeTopics,
    batches: u32,
    pause: Duration,
) -> (BTreeMap<String, u64>, Vec<u64>) {
    let senders: Vec<_> = (0..TASKS)
        .map(|t| {
            let (broker, topics) = (broker.clone(), topics.clone());
            std::thread::spawn(move || run_task(&broker, &topics, t, batches, pause))
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines_per_range = vec![0; topics.ranges as usize];
    for s in senders {
        let (sums, lines) = s.join().unwrap();
        for (k, n) in sums {
            *want.entry(k).or_default() += n;
        }
        for (r, n) in lines.into_iter().enumerate() {
            lines_per_range[r] += n;
        }
    }
    (want, lines_per_range)
}

/// Apply the data records of `released` to `totals`: each changed total
/// to the changelog and the output topic through `out`. Returns the
/// lines applied.
fn apply(
    totals: &mut BTreeMap<String, u64>,
    released: &[Released],
    out: &mut RangeProducer,
) -> Result<u64, RangeError> {
    let mut n = 0;
    for rec in released.iter().filter(|r| r.header.kind == Kind::Data) {
        for line in std::str::from_utf8(&rec.payload).unwrap().lines() {
            let (k, v) = line.split_once(':').unwrap();
            let total = totals.entry(k.to_string()).or_default();
            *total += v.parse::<u64>().unwrap();
            let value = total.to_string();
            out.change(key_group(k), &state_key(k), Some(value.as_bytes()))?;
            out.output(TOTALS, k.as_bytes(), value.as_bytes())?;
            n += 1;
        }
    }
    Ok(n)
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
            Some(state.exchange.clone()),
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
        let n = apply(&mut self.totals, &released, &mut self.producer).unwrap();
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
    let _serial = one_at_a_time();
    let broker = Arc::new(Broker::start());
    let topics = topics(&broker, TASKS, RANGES);
    let started = Instant::now();
    let sent: Vec<Arc<AtomicU64>> = (0..RANGES).map(|_| Arc::default()).collect();
    let owners: Vec<_> = (0..RANGES)
        .map(|r| {
            let (broker, topics, sent) = (broker.clone(), topics.clone(), sent[r as usize].clone());
            std::thread::spawn(move || run_range(&broker, &topics, r, &sent))
        })
        .collect();
    let (want, lines_per_range) = send_all(&broker, &topics, BATCHES, Duration::from_millis(40));
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
        let in_meta: Vec<i64> = state.exchange.iter().map(|s| s.1).collect();
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

/// A host's stage 2 in the test below: the totals of the ranges it runs,
/// and the lines applied to each (its meta).
struct Totals {
    topics: RangeTopics,
    ranges: BTreeMap<u32, (BTreeMap<String, u64>, u64)>,
}

impl Stage2 for Totals {
    fn gained(&mut self, range: u32, state: &RangeState) -> Result<(), String> {
        let lines = match state.meta.as_slice() {
            [] => 0,
            m => u64::from_le_bytes(m.try_into().expect("8 bytes of meta")),
        };
        let totals = totals_of(&self.topics, range, state);
        self.ranges.insert(range, (totals, lines));
        Ok(())
    }

    fn apply(
        &mut self,
        range: u32,
        released: &[Released],
        _: &[Option<Progress>],
        out: &mut RangeProducer,
    ) -> Result<usize, RangeError> {
        let (totals, lines) = self.ranges.get_mut(&range).expect("a gained range");
        *lines += apply(totals, released, out)?;
        Ok(released.len())
    }

    fn commit(&mut self, range: u32, _: &mut RangeProducer) -> Result<Vec<u8>, RangeError> {
        Ok(self.ranges[&range].1.to_le_bytes().to_vec())
    }

    fn lost(&mut self, range: u32) {
        self.ranges.remove(&range);
    }
}

/// A range's commit: when, by which host, which range, the lines applied
/// and the sum of its totals by then.
#[derive(Clone)]
struct Committed {
    at: Instant,
    host: String,
    range: u32,
    lines: u64,
    sum: u64,
}

/// What the hosts did, for the checks: each range's commit, and when a
/// host stalled with which ranges.
#[derive(Default)]
struct Log {
    commits: Vec<Committed>,
    stalled: Option<(Instant, Vec<u32>)>,
    gained: BTreeMap<String, usize>,
}

/// A host running its share of the ranges until `stop`. Once `stall` is
/// set it stops polling for good (with `hang`), as a host that hangs or
/// dies with its Kafka clients' threads still heartbeating, or (without)
/// commits and leaves the groups, as a host scaled in.
#[allow(clippy::too_many_arguments)]
fn run_host(
    broker: &Broker,
    topics: &RangeTopics,
    name: &str,
    input: bool,
    hang: bool,
    stall: &AtomicBool,
    stop: &AtomicBool,
    log: &Mutex<Log>,
) {
    let cfg = kafka_config(broker, "r");
    // With `input`, stage 1 too: the input topic's partitions, shared.
    let mut tasks = input.then(|| {
        let stage1 = PreSum {
            topics: topics.clone(),
            last: BTreeMap::new(),
        };
        Tasks::join(
            &cfg,
            topics.exchange.clone(),
            &InputGroup {
                topic: INPUT.into(),
                group: "r-tasks-members".into(),
                tasks_topic: "r-input-tasks".into(),
                offsets_group: "r-input".into(),
            },
            name,
            Duration::from_millis(200),
            stage1,
        )
        .unwrap()
    });
    let totals = Totals {
        topics: topics.clone(),
        ranges: BTreeMap::new(),
    };
    let mut ranges = Ranges::join(
        &cfg,
        topics.clone(),
        "r-ranges",
        "r-exchange-ranges",
        name,
        Duration::from_millis(200),
        totals,
    )
    .unwrap();
    let (began, mut last_said) = (Instant::now(), Instant::now());
    while !stop.load(Ordering::SeqCst) {
        if stall.load(Ordering::SeqCst) {
            let mut l = log.lock().unwrap();
            if l.stalled.is_none() {
                l.stalled = Some((Instant::now(), ranges.running()));
                let how = if hang { "hangs" } else { "leaves" };
                println!("{name} {how} with ranges {:?}", ranges.running());
            }
            drop(l);
            if !hang {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if last_said.elapsed() > Duration::from_secs(5) {
            last_said = Instant::now();
            println!(
                "{name} at {:.1?}: ranges {:?}, input partitions {:?}",
                began.elapsed(),
                ranges.running(),
                tasks.as_ref().map(Tasks::running)
            );
        }
        if let Some(t) = &mut tasks {
            let step = t.step(Duration::from_millis(10));
            if !step.gained.is_empty() || !step.lost.is_empty() || !step.failed.is_empty() {
                println!(
                    "{name} at {:.1?}: input partitions gained {:?}, lost {:?}, failed {:?}; runs {:?}",
                    began.elapsed(),
                    step.gained,
                    step.lost,
                    step.failed,
                    t.running()
                );
            }
        }
        let step = ranges.step(Duration::from_millis(10));
        let mut l = log.lock().unwrap();
        for (r, _) in &step.committed {
            if let Some((totals, lines)) = ranges.stage2().ranges.get(r) {
                l.commits.push(Committed {
                    at: Instant::now(),
                    host: name.to_string(),
                    range: *r,
                    lines: *lines,
                    sum: totals.values().sum(),
                });
            }
        }
        *l.gained.entry(name.to_string()).or_default() += step.gained.len();
        if !step.gained.is_empty() || !step.lost.is_empty() || !step.failed.is_empty() {
            println!(
                "{name}: gained {:?}, lost {:?}, failed {:?}; runs {:?}",
                step.gained,
                step.lost,
                step.failed,
                ranges.running()
            );
        }
    }
    if !(hang && stall.load(Ordering::SeqCst)) {
        if let Some(t) = tasks {
            let step = t.leave();
            assert!(
                step.failed.is_empty(),
                "{name}'s last input commits: {:?}",
                step.failed
            );
        }
        let step = ranges.leave();
        assert!(
            step.failed.is_empty(),
            "{name}'s last commits: {:?}",
            step.failed
        );
    }
}

#[test]
fn ranges_move_between_hosts_that_join_stall_and_leave_and_every_record_counts_once() {
    let _serial = one_at_a_time();
    const R: u32 = 4;
    let broker = Arc::new(Broker::start());
    let topics = topics(&broker, TASKS, R);
    broker.create_topic("r-exchange-ranges", R as i32);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_hosts = StopOnDrop(stop.clone());
    let log = Arc::new(Mutex::new(Log::default()));
    let sending = {
        let (broker, topics) = (broker.clone(), topics.clone());
        std::thread::spawn(move || send_all(&broker, &topics, 100, Duration::from_millis(150)))
    };
    let hosts = join_stall_join(&broker, &topics, false, true, &stop, &log);
    let (want, lines_per_range) = sending.join().unwrap();
    println!(
        "the tasks sent {lines_per_range:?} lines per range in {:.1?}",
        started.elapsed()
    );
    wait_for_commits(&log, R, "line", |r, c| {
        c.lines == lines_per_range[r as usize]
    });
    stop.store(true, Ordering::SeqCst);
    for t in hosts {
        t.join().unwrap();
    }
    println!("every line committed after {:.1?}", started.elapsed());

    let l = log.lock().unwrap();
    report_taken_over(&l, "stalled");
    assert!(
        l.gained.get("d").is_some_and(|n| *n > 0),
        "the late host got no range: {:?}",
        l.gained
    );
    println!("ranges gained per host: {:?}", l.gained);
    drop(l);
    check_totals(&broker, &topics, R, &want, Some(&lines_per_range));
}

/// The hosts of the cross-host tests, each running [`run_host`] (stage 1
/// too with `input`) until `stop`: a, b and c join 2 s apart, a stalls 6 s
/// after c joined (it hangs with `hang`, else leaves), d joins 4 s later.
/// Returns their threads.
fn join_stall_join(
    broker: &Arc<Broker>,
    topics: &RangeTopics,
    input: bool,
    hang: bool,
    stop: &Arc<AtomicBool>,
    log: &Arc<Mutex<Log>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let host = |name: &'static str, stall: &Arc<AtomicBool>| {
        let (broker, topics, stall, stop, log) = (
            broker.clone(),
            topics.clone(),
            stall.clone(),
            stop.clone(),
            log.clone(),
        );
        std::thread::spawn(move || {
            run_host(&broker, &topics, name, input, hang, &stall, &stop, &log)
        })
    };
    let a_stalls = Arc::new(AtomicBool::new(false));
    let never = Arc::new(AtomicBool::new(false));
    let mut hosts = vec![host("a", &a_stalls)];
    std::thread::sleep(Duration::from_secs(2));
    hosts.push(host("b", &never));
    std::thread::sleep(Duration::from_secs(2));
    hosts.push(host("c", &never));
    std::thread::sleep(Duration::from_secs(6));
    a_stalls.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    hosts.push(host("d", &never));
    hosts
}

/// Wait until every one of `ranges` ranges' last commit is `done`: every
/// `what` committed. (Through tansu's rebalances: BENCHMARKS.md,
/// "Membership".)
fn wait_for_commits(
    log: &Mutex<Log>,
    ranges: u32,
    what: &str,
    done: impl Fn(u32, &Committed) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = log.lock().unwrap();
        let all = (0..ranges).all(|r| {
            l.commits
                .iter()
                .rev()
                .find(|c| c.range == r)
                .is_some_and(|c| done(r, c))
        });
        drop(l);
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "not every {what} committed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each range the `how` host ran was committed by another host later:
/// who, and how long after.
fn report_taken_over(log: &Log, how: &str) {
    let (at, ranges) = log.stalled.clone().expect("a host that stalled or left");
    assert!(!ranges.is_empty(), "the {how} host ran no range");
    for r in &ranges {
        let by = log
            .commits
            .iter()
            .find(|c| c.at > at && c.range == *r && c.host != "a")
            .unwrap_or_else(|| panic!("range {r} of the {how} host was never taken over"));
        println!(
            "range {r} of the {how} host committed by {} {:.1?} after",
            by.host,
            by.at - at
        );
    }
}

/// The output topic's last totals, and the totals of each range as a host
/// that gains it now restores it, equal `want`; with `lines`, each range
/// restores that many lines applied.
fn check_totals(
    broker: &Broker,
    topics: &RangeTopics,
    ranges: u32,
    want: &BTreeMap<String, u64>,
    lines: Option<&[u64]>,
) {
    let mut records = broker.read_records(TOTALS, ranges as i32);
    records.sort_by_key(|r| (r.partition, r.offset));
    let last: BTreeMap<String, u64> = records
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                std::str::from_utf8(&r.value).unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(&last, want, "the output topic's last totals");
    let mut restored = BTreeMap::new();
    for r in 0..ranges {
        let (inc, state) = Incarnation::open(broker, topics, r, now_us());
        if let Some(lines) = lines {
            assert_eq!(inc.lines, lines[r as usize], "range {r}'s lines");
        }
        println!(
            "range {r}: {} changelog records restored in {:.1?}",
            state.records, state.took
        );
        restored.extend(inc.totals);
    }
    assert_eq!(&restored, want, "the totals restored from the changelog");
}

/// Stage 1 in the test below: a batch's `k:n` lines summed per key, one
/// payload of partial sums per range (as the pipeline's stage 1
/// pre-aggregates before the exchange).
struct PreSum {
    topics: RangeTopics,
    /// Per task, the last offset handed on: its watermark.
    last: BTreeMap<u32, i64>,
}

impl Stage1 for PreSum {
    fn gained(&mut self, _: u32) {}

    fn apply(
        &mut self,
        task: u32,
        records: &[(i64, &[u8])],
        out: &mut TaskProducer,
    ) -> Result<Progress, ExchangeError> {
        let mut partial: Vec<BTreeMap<&str, u64>> =
            vec![BTreeMap::new(); self.topics.ranges as usize];
        for (offset, line) in records {
            let (k, n) = std::str::from_utf8(line).unwrap().split_once(':').unwrap();
            let r = self.topics.range_of(key_group(k)) as usize;
            *partial[r].entry(k).or_default() += n.parse::<u64>().unwrap();
            self.last.insert(task, *offset);
        }
        for (r, sums) in partial.iter().enumerate() {
            if !sums.is_empty() {
                let payload: String = sums.iter().map(|(k, n)| format!("{k}:{n}\n")).collect();
                out.send(r as u32, payload.as_bytes())?;
            }
        }
        Ok(Progress {
            watermark: self.last.get(&task).copied().unwrap_or(i64::MIN),
            idle: records.is_empty(),
        })
    }

    fn lost(&mut self, task: u32) {
        self.last.remove(&task);
    }
}

/// `rounds` rounds `pause` apart of 5 `k:n` lines to each of the input's
/// `partitions`, not transactional; the sums per key and the records per
/// partition.
fn produce_input(
    broker: &Broker,
    partitions: u32,
    rounds: u32,
    pause: Duration,
) -> (BTreeMap<String, u64>, Vec<i64>) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = broker.client().create().unwrap();
    let mut rng = Xs(0x2545_f491_4f6c_dd1d);
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = vec![0; partitions as usize];
    for _ in 0..rounds {
        for p in 0..partitions {
            for _ in 0..5 {
                let k = key(rng.next(KEYS));
                let n = 1 + rng.next(9);
                *sums.entry(k.clone()).or_default() += n;
                let line = format!("{k}:{n}");
                producer
                    .send(
                        BaseRecord::<(), str>::to(INPUT)
                            .partition(p as i32)
                            .payload(&line),
                    )
                    .unwrap();
                count[p as usize] += 1;
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(pause);
    }
    (sums, count)
}

/// Both stages across hosts: six input partitions shared through the
/// input group, stage 1 summing each batch per key and sending partial
/// sums to four key-group ranges shared through the ranges' group; hosts
/// a, b and c join, a leaves (scaled in), d joins. The totals equal the input's sums,
/// and every input record is consumed once: the input group's committed
/// offsets are each partition's end.
#[test]
fn both_stages_across_hosts_that_join_and_leave_count_every_input_record_once() {
    let _serial = one_at_a_time();
    const R: u32 = 4;
    const PARTITIONS: u32 = 6;
    let broker = Arc::new(Broker::start());
    let topics = topics(&broker, PARTITIONS, R);
    broker.create_topic("r-exchange-ranges", R as i32);
    broker.create_topic(INPUT, PARTITIONS as i32);
    broker.create_topic("r-input-tasks", PARTITIONS as i32);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_hosts = StopOnDrop(stop.clone());
    let log = Arc::new(Mutex::new(Log::default()));
    let producing = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            produce_input(&broker, PARTITIONS, 100, Duration::from_millis(150))
        })
    };
    let hosts = join_stall_join(&broker, &topics, true, false, &stop, &log);
    let (want, count) = producing.join().unwrap();
    println!(
        "{count:?} input records per partition in {:.1?}",
        started.elapsed()
    );
    let want_sum: Vec<u64> = (0..R)
        .map(|r| {
            want.iter()
                .filter(|(k, _)| topics.range_of(key_group(k)) == r)
                .map(|(_, n)| n)
                .sum()
        })
        .collect();
    wait_for_commits(&log, R, "input record", |r, c| {
        c.sum >= want_sum[r as usize]
    });
    stop.store(true, Ordering::SeqCst);
    for t in hosts {
        t.join().unwrap();
    }
    println!(
        "every input record committed after {:.1?}",
        started.elapsed()
    );
    report_taken_over(&log.lock().unwrap(), "left");
    check_totals(&broker, &topics, R, &want, None);
    let group: BaseConsumer = broker.client().set("group.id", "r-input").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(INPUT, p as i32);
    }
    let committed: Vec<i64> = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect();
    assert_eq!(committed, count, "the input group's committed offsets");
}
