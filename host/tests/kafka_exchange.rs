//! The exchange topic between hosts (`rtap_host::exchange`) against the
//! real broker: three tasks send batches of records in transactions, and
//! their producers "crash" now and then — abandoned with a transaction open
//! whose records tansu shows to `read_committed` readers — and send the
//! batch again from a new producer (a new incarnation), as a host that takes a
//! partition over replays it. A receiver reads every exchange partition
//! through a gate and restarts midway from what it would have committed.
//! Every batch's records must come through exactly once, in each task's
//! order, and none of the abandoned transactions'.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rtap_host::exchange::{
    Applied, ExchangeTopics, Gate, HEADER, Header, Kind, MarkerReader, Progress, TaskProducer,
    owner_watermark,
};

const TASKS: u32 = 3;
/// Ranges of key groups: each has its own owner.
const RANGES: u32 = 2;
const BATCHES: u32 = 40;

/// Task `task`'s watermark after batch `batch`.
fn progress(task: u32, batch: u32) -> Progress {
    Progress {
        watermark: i64::from(batch) * 1_000 + i64::from(task),
        idle: false,
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A small deterministic generator (xorshift), per task.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The exchange topic and its marker topic for `tasks` tasks and `ranges`
/// ranges, created on `broker`, their names and ids from `prefix`.
fn exchange_topics(broker: &Broker, prefix: &str, tasks: u32, ranges: u32) -> ExchangeTopics {
    let topics = ExchangeTopics {
        topic: format!("{prefix}-exchange"),
        tasks,
        ranges,
        marker_topic: format!("{prefix}-exchange-tasks"),
        marker_group: format!("{prefix}-exchange-tasks"),
        transactional_prefix: prefix.into(),
    };
    broker.create_topic(&topics.topic, topics.partitions());
    broker.create_topic(&topics.marker_topic, tasks as i32);
    topics
}

/// Task `task`: every batch's records (`<task>:<batch>:<k>` for a range
/// each); one attempt in five is abandoned and the batch sent again by a
/// new producer. Returns the records the committed attempts carried.
fn run_task(broker: &Broker, topics: &ExchangeTopics, task: u32) -> Vec<(u32, String)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(task + 1));
    // Each incarnation runs on a "host" whose clock is up to 5 s behind or
    // ahead: ids must not depend on it.
    let open = |rng: &mut Rng| {
        let skew = rng.next(10_000_000) as i64 - 5_000_000;
        let now = (now_us() as i64 + skew) as u64;
        TaskProducer::open(&broker.client(), topics, task, now).unwrap()
    };
    let mut producer = open(&mut rng);
    let mut committed = Vec::new();
    let mut abandoned = 0;
    let mut last_committed = producer.start();
    for batch in 0..BATCHES {
        let parts: Vec<(u32, u32)> = (0..1 + rng.next(5))
            .map(|k| (rng.next(RANGES as u64) as u32, k as u32))
            .collect();
        let mut attempt = 0;
        loop {
            // The attempt is in the payload: an aborted copy applied in
            // place of the committed one shows.
            let records: Vec<(u32, String)> = parts
                .iter()
                .map(|(r, k)| (*r, format!("{task}:{batch}:{k}:{attempt}")))
                .collect();
            for (r, v) in &records {
                producer.send(*r, v.as_bytes()).unwrap();
            }
            if rng.next(5) == 0 {
                // A crash with the transaction open: its records reach the
                // broker, the producer is never heard from again.
                producer.flush().unwrap();
                abandoned += 1;
                attempt += 1;
                let old = std::mem::replace(&mut producer, open(&mut rng));
                // The new incarnation found the last commit (tansu applied
                // its offsets at once: no other writer on its partitions)
                // and began two above it at least.
                assert_eq!(
                    producer.prev(),
                    last_committed,
                    "task {task}: the marker a new incarnation read is not the last commit"
                );
                assert!(producer.start() >= last_committed + 2);
                last_committed = producer.start();
                std::mem::forget(old);
                continue;
            }
            let id = producer.commit(progress(task, batch), &[]).unwrap();
            last_committed = id;
            committed.extend(records);
            break;
        }
    }
    println!("task {task}: {BATCHES} batches, {abandoned} attempts abandoned");
    assert!(abandoned > 0, "the test abandoned no transaction");
    committed
}

/// The owner of a range of key groups: a consumer on the range's exchange
/// partitions (one per task), a gate per partition.
struct Receiver {
    range: u32,
    consumer: BaseConsumer,
    partitions: Vec<i32>,
    gates: Vec<Gate>,
    markers: MarkerReader,
}

impl Receiver {
    fn start(
        broker: &Broker,
        topics: &ExchangeTopics,
        range: u32,
        state: &[(BTreeMap<u32, Applied>, i64)],
    ) -> Receiver {
        let partitions = topics.of_range(range);
        let consumer: BaseConsumer = broker
            .client()
            .set("group.id", "exchange-owner")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for (p, (_, from)) in partitions.iter().zip(state) {
            tpl.add_partition_offset(&topics.topic, *p, Offset::Offset(*from))
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Receiver {
            range,
            partitions,
            consumer,
            gates: state
                .iter()
                .map(|(applied, from)| Gate::new(applied.clone(), *from))
                .collect(),
            markers: MarkerReader::new(&broker.client(), topics).unwrap(),
        }
    }

    /// Read for `for_`, releasing into `out` (range, header, payload);
    /// returns how many records were read.
    fn pump(&mut self, for_: Duration, out: &mut Vec<(u32, Header, String)>) -> usize {
        let tasks: Vec<u32> = (0..TASKS).collect();
        let end = Instant::now() + for_;
        let mut read = 0;
        let mut last_markers = Instant::now() - Duration::from_secs(1);
        while Instant::now() < end {
            if let Some(m) = self.consumer.poll(Duration::from_millis(20)) {
                let m = m.unwrap();
                let raw = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == HEADER))
                    .and_then(|h| h.value)
                    .unwrap();
                let h = Header::decode(raw).unwrap();
                let gate = self
                    .partitions
                    .iter()
                    .position(|p| *p == m.partition())
                    .unwrap();
                assert_eq!(
                    h.task as usize, gate,
                    "a record of another task's partition"
                );
                self.gates[gate].offer(m.offset(), h, m.payload().unwrap_or_default().to_vec());
                read += 1;
            }
            if last_markers.elapsed() >= Duration::from_millis(50) {
                let marks = self.markers.read(&tasks).unwrap();
                for g in &mut self.gates {
                    g.markers(&marks);
                }
                last_markers = Instant::now();
            }
            for g in &mut self.gates {
                for r in g.release() {
                    if r.header.kind == Kind::Data {
                        out.push((self.range, r.header, String::from_utf8(r.payload).unwrap()));
                    }
                }
            }
        }
        read
    }

    /// What the owner would commit with its state.
    fn state(&self) -> Vec<(BTreeMap<u32, Applied>, i64)> {
        self.gates
            .iter()
            .map(|g| (g.applied(), g.commit_offset()))
            .collect()
    }

    fn waiting(&self) -> usize {
        self.gates.iter().map(Gate::waiting).sum()
    }
}

#[test]
fn every_committed_record_comes_through_once_and_no_aborted_one() {
    let broker = Arc::new(Broker::start());
    let topics = exchange_topics(&broker, "x", TASKS, RANGES);

    let senders: Vec<_> = (0..TASKS)
        .map(|t| {
            let (broker, topics) = (broker.clone(), topics.clone());
            std::thread::spawn(move || run_task(&broker, &topics, t))
        })
        .collect();

    let fresh = vec![(BTreeMap::new(), 0); TASKS as usize];
    let mut owners: Vec<Receiver> = (0..RANGES)
        .map(|r| Receiver::start(&broker, &topics, r, &fresh))
        .collect();
    let mut released = Vec::new();
    let mut read = 0;
    let mut restarted = false;
    let started = Instant::now();
    while senders.iter().any(|s| !s.is_finished()) {
        for o in &mut owners {
            read += o.pump(Duration::from_millis(100), &mut released);
        }
        if !restarted && released.len() > 60 {
            // Range 0's owner restarts from its last commit.
            let state = owners[0].state();
            println!(
                "the owner of range 0 restarts after {} records, from offsets {:?}",
                released.len(),
                state.iter().map(|s| s.1).collect::<Vec<_>>()
            );
            owners[0] = Receiver::start(&broker, &topics, 0, &state);
            restarted = true;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the senders hang"
        );
    }
    let mut committed: Vec<(u32, String)> = Vec::new();
    for s in senders {
        committed.extend(s.join().unwrap());
    }
    // Drain: until every gate decided everything and nothing new came.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut n = 0;
        for o in &mut owners {
            n += o.pump(Duration::from_millis(300), &mut released);
        }
        read += n;
        let waiting: usize = owners.iter().map(Receiver::waiting).sum();
        if n == 0 && waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} records still undecided"
        );
    }
    assert!(restarted, "no owner restarted");

    let got: Vec<(u32, String)> = released.iter().map(|(r, _, v)| (*r, v.clone())).collect();
    let unique: BTreeSet<&(u32, String)> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a record came through twice");
    let want: BTreeSet<&(u32, String)> = committed.iter().collect();
    let missing: Vec<_> = want.difference(&unique).collect();
    let extra: Vec<_> = unique.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the records through the gates are not the committed ones: missing {missing:?}, not committed {extra:?}"
    );
    // Each task's records for each range in batch order.
    for r in 0..RANGES {
        for t in 0..TASKS {
            let batches: Vec<u32> = got
                .iter()
                .filter(|(q, v)| *q == r && v.starts_with(&format!("{t}:")))
                .map(|(_, v)| v.split(':').nth(1).unwrap().parse().unwrap())
                .collect();
            assert!(
                batches.windows(2).all(|w| w[0] <= w[1]),
                "task {t} for range {r} out of order: {batches:?}"
            );
        }
    }
    // Each owner's watermark comes from the tasks' last committed seals.
    for o in &owners {
        for t in 0..TASKS {
            assert_eq!(
                o.gates[t as usize].progress(t),
                Some(progress(t, BATCHES - 1)),
                "range {}, task {t}",
                o.range
            );
        }
        assert_eq!(
            owner_watermark((0..TASKS).map(|t| o.gates[t as usize].progress(t))),
            Some(i64::from(BATCHES - 1) * 1_000)
        );
    }
    let (aborted, claims): (u64, u64) = owners
        .iter()
        .flat_map(|o| o.gates.iter().map(Gate::dropped))
        .fold((0, 0), |(a, c), (x, y)| (a + x, c + y));
    println!(
        "{read} records read (a restart reads some again), {} committed records through the gates, \
         {aborted} records of aborted transactions dropped, {claims} claims",
        got.len()
    );
    // tansu shows the abandoned transactions' records: the gates had to
    // drop them (with a broker that hides them this would not hold).
    assert!(
        aborted > 0,
        "no aborted record was dropped: the test did not exercise the gate"
    );
}

/// A task whose producer died with a transaction open, and which no one
/// opens again (its input partition went away): its open transaction
/// holds every owner's partition of it back. `TaskProducer::close`
/// fences it with one last claim; then each owner drops the aborted
/// records, nothing of the task waits, and its committed offset moves past
/// them.
#[test]
fn a_closed_task_holds_no_owner_back() {
    let broker = Broker::start();
    let topics = exchange_topics(&broker, "c", TASKS, RANGES);
    let mut p = TaskProducer::open(&broker.client(), &topics, 0, now_us()).unwrap();
    for r in 0..RANGES {
        p.send(r, format!("committed {r}").as_bytes()).unwrap();
    }
    p.commit(progress(0, 0), &[]).unwrap();
    for r in 0..RANGES {
        p.send(r, format!("abandoned {r}").as_bytes()).unwrap();
    }
    p.flush().unwrap();
    std::mem::forget(p);

    let fresh = vec![(BTreeMap::new(), 0); TASKS as usize];
    let mut owners: Vec<Receiver> = (0..RANGES)
        .map(|r| Receiver::start(&broker, &topics, r, &fresh))
        .collect();
    let mut released = Vec::new();
    type Out = (u32, Header, String);
    let pump_until = |owners: &mut Vec<Receiver>,
                      released: &mut Vec<Out>,
                      what: &str,
                      done: &dyn Fn(&[Receiver], &[Out]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(owners, released) {
            for o in owners.iter_mut() {
                o.pump(Duration::from_millis(100), released);
            }
            assert!(Instant::now() < deadline, "{what}: {released:?}");
        }
    };
    pump_until(
        &mut owners,
        &mut released,
        "the committed records",
        &|_, r| r.len() == RANGES as usize,
    );
    let before: Vec<i64> = owners.iter().map(|o| o.gates[0].commit_offset()).collect();

    TaskProducer::close(&broker.client(), &topics, 0, now_us()).unwrap();
    pump_until(
        &mut owners,
        &mut released,
        "the aborted records dropped after the close",
        &|os, _| {
            os.iter().all(|o| {
                o.gates[0].dropped().0 == 1 && o.gates[0].dropped().1 >= 2 && o.waiting() == 0
            })
        },
    );
    for (o, before) in owners.iter().zip(before) {
        let after = o.gates[0].commit_offset();
        assert!(
            after > before,
            "range {}: the committed offset stayed at {before} (now {after})",
            o.range
        );
    }
    let got: BTreeSet<String> = released.iter().map(|(_, _, v)| v.clone()).collect();
    let want: BTreeSet<String> = (0..RANGES).map(|r| format!("committed {r}")).collect();
    assert_eq!(got, want, "only the committed records, once each");
    assert_eq!(released.len(), RANGES as usize);
}

/// What the exchange topic costs per record: one task sends
/// `BENCH_RECORDS` records (400 000) of `BENCH_BYTES` bytes (220: an event
/// as JSON is ~215) to two ranges in transactions of `BENCH_PER_TXN`
/// (5 000: about what a host commits per interval at 100 000 events/s),
/// two owners read them through their gates, in this process; prints
/// records/s, MB/s and the CPU per record here (both ends) and in the
/// broker. BENCHMARKS.md, "The exchange topic". Run with
/// `cargo test --release -p rtap-host --test kafka_exchange -- --ignored --nocapture`
/// (`BENCH_RECORDS=1500 BENCH_BYTES=131072 BENCH_PER_TXN=16` for payloads
/// of a round's records, `pipeline::wire`; `BENCH_PAYLOAD_FROM=events.jsonl`
/// for payloads of real events instead of `x`s, `BENCH_COMPRESSION=lz4` to
/// compress them).
#[test]
#[ignore = "a benchmark"]
fn exchange_throughput() {
    let var = |name, default| std::env::var(name).map_or(default, |v| v.parse::<u64>().unwrap());
    let records = var("BENCH_RECORDS", 400_000);
    let bytes = var("BENCH_BYTES", 220) as usize;
    let per_txn = var("BENCH_PER_TXN", 5_000);
    // What a payload holds: `BENCH_PAYLOAD_FROM` (a file, e.g. rtap-gen's
    // events: an exchange payload is mostly its events' JSON), cut into
    // payloads of `bytes` in turn; else `x` repeated. `BENCH_COMPRESSION`:
    // the producer's `compression.type` (none).
    let payloads: Vec<Vec<u8>> = match std::env::var("BENCH_PAYLOAD_FROM") {
        Ok(path) => std::fs::read(&path)
            .unwrap()
            .chunks_exact(bytes)
            .take(1000)
            .map(<[u8]>::to_vec)
            .collect(),
        Err(_) => vec![vec![b'x'; bytes]],
    };
    assert!(
        !payloads.is_empty(),
        "BENCH_PAYLOAD_FROM holds less than one payload"
    );
    let compression = std::env::var("BENCH_COMPRESSION").unwrap_or_else(|_| "none".into());
    let broker = Arc::new(Broker::start());
    let topics = exchange_topics(&broker, "bench", 1, 2);
    let (cpu0, broker0) = (cpu_seconds("self"), cpu_seconds(&broker.pid().to_string()));
    let started = Instant::now();
    let sender = {
        let (broker, topics, compression) = (broker.clone(), topics.clone(), compression.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut client = broker.client();
            client.set("compression.type", &compression);
            // `BENCH_CLIENT`: more client settings, `key=value,…`.
            for kv in std::env::var("BENCH_CLIENT").unwrap_or_default().split(',') {
                if let Some((k, v)) = kv.split_once('=') {
                    client.set(k, v);
                }
            }
            let mut p = TaskProducer::open(&client, &topics, 0, now_us()).unwrap();
            for i in 0..records {
                let payload = &payloads[i as usize % payloads.len()];
                p.send((i % 2) as u32, payload).unwrap();
                if (i + 1) % per_txn == 0 || i + 1 == records {
                    p.commit(progress(0, i as u32), &[]).unwrap();
                    if std::env::var("BENCH_DEBUG").is_ok() {
                        eprintln!("committed {} at {:?}", i + 1, started.elapsed());
                    }
                }
            }
        })
    };
    let fresh = vec![(BTreeMap::new(), 0); 1];
    let mut owners: Vec<Receiver> = (0..2)
        .map(|r| Receiver::start(&broker, &topics, r, &fresh))
        .collect();
    let mut released = Vec::new();
    while (released.len() as u64) < records {
        for o in &mut owners {
            o.pump(Duration::from_millis(50), &mut released);
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {records}",
            released.len()
        );
    }
    sender.join().unwrap();
    let wall = started.elapsed().as_secs_f64();
    let here = cpu_seconds("self") - cpu0;
    let there = cpu_seconds(&broker.pid().to_string()) - broker0;
    println!(
        "{records} records of {bytes} B in transactions of {per_txn}, compression {compression}: \
         {:.0} records/s, {:.1} MB/s; \
         CPU per record: {:.2} µs here (sender and owners), {:.2} µs in the broker",
        records as f64 / wall,
        (records * bytes as u64) as f64 / wall / 1e6,
        here * 1e6 / records as f64,
        there * 1e6 / records as f64
    );
}

/// The pipeline's own records through the topic (`--exchange kafka`): one
/// host on 3 workers, each worker's stage 1 a task sending every round's
/// records for each owner in a transaction, each worker's stage 2 an owner
/// reading them back through its gates. The outputs on the topics equal
/// those of the in-memory exchange, and the host tells how many bytes
/// crossed.
#[test]
fn a_hosts_records_through_the_exchange_topic_give_the_same_outputs() {
    // 200 events per second of event time: 1 000 s, windows enough to
    // close before the input ends.
    let n = 200_000usize;
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(n as u64, 23, 200));
    let plugins = plugins_dir(&SHIPPED);
    let run = |group: &str, prefix: &str, exchange: &str| {
        let data = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let log = run_to_end(
            kafka_host(&broker, plugins.path(), data.path(), group, prefix)
                .args(["--workers", "3", "--exchange", exchange])
                .watched(),
            &broker,
            group,
            n as i64,
        );
        println!("--exchange {exchange}: {:?}", started.elapsed());
        log
    };
    run("reference", "ref-", "memory");
    let (want, _) = outputs(&broker, "ref-");
    assert!(want.len() > 1_000, "only {} outputs", want.len());
    let log = run("crossing", "x-", "kafka");
    let (got, _) = outputs(&broker, "x-");
    assert_same_outputs(&want, &got);
    let line = log
        .iter()
        .find(|l| l.contains("exchange on the wire"))
        .unwrap_or_else(|| panic!("no exchange summary: {}", log.join("\n")));
    let bytes = log_number(line, "bytes").unwrap_or_else(|| panic!("no bytes in: {line}"));
    println!("{bytes} bytes crossed the exchange topic");
    assert!(bytes > 100 * n as u64, "{bytes} bytes crossed: {line}");
}

/// What the exchange topic costs the pipeline: one host on `BENCH_WORKERS`
/// (2) workers through `BENCH_EVENTS` (300 000) events from the broker,
/// `--exchange memory`, `wire` and `kafka` interleaved for `BENCH_PAIRS`
/// (2) rounds, each with its own group: the host's CPU per event, the
/// broker's, and the wall time. With `kafka` every record between two
/// workers crosses the topic, as between hosts. BENCHMARKS.md, "The
/// exchange topic in the pipeline". Run with
/// `cargo test --release -p rtap-host --test kafka_exchange exchange_in_the_pipeline -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark"]
fn exchange_in_the_pipeline() {
    let var = |name, default| std::env::var(name).map_or(default, |v| v.parse::<u64>().unwrap());
    let n = var("BENCH_EVENTS", 300_000);
    let workers = var("BENCH_WORKERS", 2).to_string();
    let pairs = var("BENCH_PAIRS", 2);
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(n, 23, 2000));
    let plugins = plugins_dir(&SHIPPED);
    let broker_pid = broker.pid().to_string();
    for pair in 0..pairs {
        for exchange in ["memory", "wire", "kafka"] {
            let group = format!("{exchange}-{pair}");
            let data = tempfile::tempdir().unwrap();
            let broker0 = cpu_seconds(&broker_pid);
            let started = Instant::now();
            let mut h = kafka_host(
                &broker,
                plugins.path(),
                data.path(),
                &group,
                &format!("{group}-"),
            )
            .args(["--workers", &workers, "--exchange", exchange])
            .watched();
            while broker.committed(&group) < n as i64 {
                assert!(h.alive(), "the host stopped: {}", h.log.join("\n"));
                assert!(started.elapsed() < Duration::from_secs(600), "too slow");
                h.wait_for("\u{0}", 1, Duration::from_millis(100));
            }
            let wall = started.elapsed().as_secs_f64();
            let host = cpu_seconds(&h.child.id().to_string());
            let there = cpu_seconds(&broker_pid) - broker0;
            sigterm(h.child.id());
            let _ = h.finish(Duration::from_secs(60));
            println!(
                "{exchange:>6}, {workers} workers, {n} events: {wall:.1} s, CPU per event {:.2} µs in the host, {:.2} µs in the broker",
                host * 1e6 / n as f64,
                there * 1e6 / n as f64
            );
        }
    }
}
