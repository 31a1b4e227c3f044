//! The pipeline's stages 1 and 2 across hosts (`rtap_host::cluster::stages`)
//! against the real broker: the seed's window aggregators and event
//! detectors, run by hosts that share the input's 12 partitions and four
//! key-group ranges through the consumer groups, the exchange topic and
//! the changelog, give the metrics and alerts one `rtap-host` process
//! gives on the same input (`read_committed`, every distinct payload per
//! record key).
//!
//! The metric detectors (stage 3) do not run across hosts yet, so neither
//! run loads them. Each partition ends with an event a day later than the
//! rest, so that both runs' watermarks pass every window and timer of the
//! simulated traffic; what that event itself opens is left out of the
//! comparison.
//!
//! Threads stand in for hosts: each joins the groups with its own Kafka
//! clients and its own plugin instances.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rtap_host::checkpoint::range::RangeTopics;
use rtap_host::cluster::ranges::Ranges;
use rtap_host::cluster::stages::{PipelineStage1, PipelineStage2, Plugins, Sidelined};
use rtap_host::cluster::tasks::{InputGroup, Tasks};
use rtap_host::exchange::ExchangeTopics;
use rtap_host::pipeline::TimeConfig;
use serde_json::Value;

/// The shipped plugins but the metric detectors (stage 3).
const PLUGINS: [&str; 8] = [
    "page-views",
    "active-users",
    "conversion-rate",
    "error-rate",
    "latency-percentiles",
    "session-duration",
    "bot-burst",
    "cart-abandonment",
];
const PARTITIONS: u32 = 12;
const RANGES: u32 = 4;
const EVENTS_N: u64 = 20_000;
/// The simulated traffic's first event time (`rtap-gen`).
const T0: i64 = 1_764_000_000_000;
/// The last event of every partition: a day later.
const FLUSH_AT: i64 = T0 + 86_400_000;

/// `kafka_host`'s event-time settings.
fn time() -> TimeConfig {
    TimeConfig {
        out_of_orderness: Duration::from_secs(60),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
    }
}

/// The topics of the hosts' group `g`.
fn topics(broker: &Broker, g: &str) -> RangeTopics {
    let exchange = ExchangeTopics {
        topic: format!("{g}-exchange"),
        tasks: PARTITIONS,
        ranges: RANGES,
        marker_topic: format!("{g}-exchange-tasks"),
        marker_group: format!("{g}-exchange-tasks"),
        transactional_prefix: g.into(),
    };
    broker.create_topic(&exchange.topic, exchange.partitions());
    broker.create_topic(&exchange.marker_topic, PARTITIONS as i32);
    let t = RangeTopics {
        ranges: RANGES,
        changelog: format!("{g}-changelog"),
        marker_topic: format!("{g}-ranges"),
        marker_group: format!("{g}-ranges"),
        exchange,
        owners_group: format!("{g}-owners"),
        transactional_prefix: g.into(),
    };
    broker.create_topic(&t.changelog, 128);
    broker.create_topic(&t.marker_topic, RANGES as i32);
    for (topic, partitions) in [
        ("exchange-ranges", RANGES),
        ("input-tasks", PARTITIONS),
        ("processed-metrics", RANGES),
        ("cep-alerts", RANGES),
    ] {
        broker.create_topic(&format!("{g}-{topic}"), partitions as i32);
    }
    t
}

/// How a host's run ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still running.
    Run,
    /// It commits what it runs and leaves the groups.
    Leave,
    /// It stops dead: no last commit, its transactions left open, its
    /// members gone without a word (as a SIGKILL leaves them).
    Die,
}

/// A host of group `g` running both stages until `end` says otherwise;
/// what its stages could not hand on across hosts, and the keys it
/// restored from the changelog.
fn run_host(
    broker: &Broker,
    (g, topics): (&str, &RangeTopics),
    plugins: Arc<Plugins>,
    name: &str,
    end: &Mutex<End>,
) -> (Sidelined, Sidelined, u64) {
    let cfg = kafka_config(broker, g);
    let stage1 = PipelineStage1::new(&plugins, RANGES, EVENTS).unwrap();
    let mut tasks = Tasks::join(
        &cfg,
        topics.exchange.clone(),
        &InputGroup {
            topic: EVENTS.into(),
            group: format!("{g}-tasks-members"),
            tasks_topic: format!("{g}-input-tasks"),
            offsets_group: format!("{g}-input"),
        },
        name,
        Duration::from_millis(200),
        stage1,
    )
    .unwrap();
    let stage2 = PipelineStage2::new(
        plugins,
        RANGES,
        &format!("{g}-processed-metrics"),
        &format!("{g}-cep-alerts"),
    );
    let mut ranges = Ranges::join(
        &cfg,
        topics.clone(),
        &format!("{g}-ranges"),
        &format!("{g}-exchange-ranges"),
        name,
        Duration::from_millis(200),
        stage2,
    )
    .unwrap();
    let mut said = Instant::now();
    loop {
        if said.elapsed() > Duration::from_secs(10) {
            said = Instant::now();
            for p in ranges.progress() {
                println!("{name}: {p:?}");
            }
        }
        let how = *end.lock().unwrap();
        if how != End::Run {
            let sidelined = (
                tasks.stage1().sidelined,
                ranges.stage2().sidelined,
                ranges.stage2().restored,
            );
            if how == End::Leave {
                let step = tasks.leave();
                assert!(step.failed.is_empty(), "{name}: {:?}", step.failed);
                let step = ranges.leave();
                assert!(step.failed.is_empty(), "{name}: {:?}", step.failed);
            } else {
                println!(
                    "{name} dies with input partitions {:?} and ranges {:?}",
                    tasks.running(),
                    ranges.running()
                );
            }
            return sidelined;
        }
        for (what, step) in [
            ("input partitions", tasks.step(Duration::from_millis(10))),
            ("ranges", ranges.step(Duration::from_millis(10))),
        ] {
            if !step.gained.is_empty() || !step.lost.is_empty() || !step.failed.is_empty() {
                println!(
                    "{name}: {what} gained {:?}, lost {:?}, failed {:?}",
                    step.gained, step.lost, step.failed
                );
            }
        }
    }
}

/// Every distinct payload per record key of the metrics and alerts topics
/// (`prefix`), without what the day-later events opened.
fn outputs_of(
    broker: &Broker,
    prefix: &str,
    partitions: (i32, i32),
) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (topic, parts) in [
        ("processed-metrics", partitions.0),
        ("cep-alerts", partitions.1),
    ] {
        for (k, v) in broker.read_all(&format!("{prefix}{topic}"), parts) {
            let at = v["window_end"]
                .as_i64()
                .or_else(|| v["time"].as_i64())
                .unwrap_or_else(|| panic!("{topic}: no time in {v}"));
            if at < FLUSH_AT - 3_600_000 {
                by_key.entry(k).or_default().insert(v.to_string());
            }
        }
    }
    by_key
}

/// The first differences of two runs' outputs, for a failure message.
fn differences(
    want: &BTreeMap<String, BTreeSet<String>>,
    got: &BTreeMap<String, BTreeSet<String>>,
) -> Option<String> {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, v)| (k, v, &got[k]))
        .collect();
    (!missing.is_empty() || !extra.is_empty() || !differ.is_empty()).then(|| {
        format!(
            "{} outputs wanted, {} got: {} missing (first {:?}), {} extra (first {:?}), {} differ (first {:?})",
            want.len(),
            got.len(),
            missing.len(),
            missing.iter().take(3).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(3).collect::<Vec<_>>(),
            differ.len(),
            differ.first()
        )
    })
}

/// The differences of the outputs (`prefix`) from `want`, if any, said
/// with how far the input is committed (`at`: since when, committed, of).
fn compare(
    broker: &Broker,
    prefix: &str,
    partitions: (i32, i32),
    want: &BTreeMap<String, BTreeSet<String>>,
    (started, committed, total): (Instant, i64, i64),
) -> Option<String> {
    let diff = differences(want, &outputs_of(broker, prefix, partitions));
    println!(
        "at {:.1?}: {committed} of {total} input records committed; {}",
        started.elapsed(),
        diff.as_deref().unwrap_or("the outputs are equal")
    );
    diff
}

/// Hosts of group `g` run the input until their outputs equal `want`:
/// a, b and c join 2 s apart; with `kill`, a dies once a third of the
/// input is committed and d joins 4 s later. Nothing is late or
/// dead-lettered on the way, and the input group committed every record.
fn run_group(
    broker: &Arc<Broker>,
    g: &str,
    plugins: &Arc<Plugins>,
    want: &BTreeMap<String, BTreeSet<String>>,
    total: i64,
    kill: bool,
) {
    let topics = topics(broker, g);
    let started = Instant::now();
    let spawn = |name: &'static str| {
        let (broker, topics, plugins) = (broker.clone(), topics.clone(), plugins.clone());
        let end = Arc::new(Mutex::new(End::Run));
        let g = g.to_string();
        let e = end.clone();
        let h = std::thread::spawn(move || run_host(&broker, (&g, &topics), plugins, name, &e));
        (name, end, h)
    };
    let mut hosts = Vec::new();
    for name in ["a", "b", "c"] {
        hosts.push(spawn(name));
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut killed = !kill;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let committed = broker.committed(&format!("{g}-input"));
        if !killed && committed >= total / 3 {
            killed = true;
            println!(
                "at {:.1?}: a dies, {committed} input records committed",
                started.elapsed()
            );
            *hosts[0].1.lock().unwrap() = End::Die;
            std::thread::sleep(Duration::from_secs(4));
            hosts.push(spawn("d"));
            continue;
        }
        let at = (started, committed, total);
        let diff = compare(
            broker,
            &format!("{g}-"),
            (RANGES as i32, RANGES as i32),
            want,
            at,
        );
        if killed && committed == total && diff.is_none() {
            break;
        }
        if Instant::now() > deadline {
            for (_, end, _) in &hosts {
                *end.lock().unwrap() = End::Die;
            }
            panic!(
                "after {:.1?}: {committed} of {total} input records committed; {}",
                started.elapsed(),
                diff.unwrap_or_default()
            );
        }
    }
    println!("{g}: the outputs equal after {:.1?}", started.elapsed());
    for (_, end, _) in &hosts {
        let mut e = end.lock().unwrap();
        if *e == End::Run {
            *e = End::Leave;
        }
    }
    let mut restored = 0;
    for (name, _, h) in hosts {
        let (s1, s2, r) = h.join().unwrap();
        assert_eq!(s1, Sidelined::default(), "{name}: stage 1 set aside input");
        let s2 = Sidelined { metrics: 0, ..s2 };
        assert_eq!(s2, Sidelined::default(), "{name}: stage 2 set aside input");
        if name != "a" {
            restored += r;
        }
    }
    println!("{g}: {restored} keys restored from the changelog by b, c and d");
    if kill {
        assert!(
            restored > 0,
            "the dead host's ranges were not restored from the changelog"
        );
    }
}

/// 12 input partitions: three hosts (threads, four key-group ranges) give
/// the outputs of one `rtap-host` process, and so do three of which one
/// dies a third of the way through and a fourth joins, its ranges' state
/// restored from the changelog by the hosts that take them over; and so
/// do three `rtap-host --share` processes (three ranges), one SIGKILLed
/// and started again.
#[test]
fn hosts_running_both_stages_give_one_hosts_outputs_through_deaths_and_joins() {
    let broker = Arc::new(Broker::start());
    broker.create_events_topic();
    let lines = gen_events(EVENTS_N, 7, 50);
    broker.produce_keyed(&lines);
    let last_ts = max_timestamp(&lines);
    assert!(
        last_ts < FLUSH_AT - 3_600_000,
        "the traffic spans {last_ts}"
    );
    let flush: Vec<String> = (0..PARTITIONS)
        .map(|p| {
            format!(
                r#"{{"event_id":"flush-{p}","event_type":"page_view","user_id":"flush-{p}","session_id":"flush-{p}","page":"/","timestamp":{FLUSH_AT},"latency_ms":1.0,"country":"BR","device":"desktop","referrer":"direct"}}"#
            )
        })
        .collect();
    let records: Vec<(i32, &[u8])> = flush
        .iter()
        .enumerate()
        .map(|(p, l)| (p as i32, l.as_bytes()))
        .collect();
    broker.produce_to(&records);
    let total = EVENTS_N as i64 + PARTITIONS as i64;

    let plugins = plugins_dir(&PLUGINS);
    let solo = tempfile::tempdir().unwrap();
    let started = Instant::now();
    run_to_end(
        kafka_host(&broker, plugins.path(), solo.path(), "solo", "solo-").watched(),
        &broker,
        "solo",
        total,
    );
    let want = outputs_of(&broker, "solo-", (6, 3));
    println!(
        "one host: {} outputs in {:.1?}",
        want.len(),
        started.elapsed()
    );
    assert!(want.len() > 1_000, "only {} outputs", want.len());

    let runtime = rtap_host::plugin::Runtime::new(Default::default()).unwrap();
    let compiled = Arc::new(Plugins::load(&runtime, plugins.path(), time()).unwrap());
    run_group(&broker, "c", &compiled, &want, total, false);
    run_group(&broker, "k", &compiled, &want, total, true);
    run_processes(&broker, plugins.path(), &want, total);
}

fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let (code, body) = http(port, "GET", path, &[], b"")?;
    Some((code, serde_json::from_str(&body).ok()?))
}

/// Wait until `GET /api/cluster` on `port` lists `n` live hosts that
/// share the 12 input partitions and the 128 key groups, each once.
fn cluster_shared_by(port: u16, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some((200, v)) = get(port, "/api/cluster") {
            let live: Vec<&Value> = v["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["status"] == "live")
                .collect();
            let all = |field: &str| -> Vec<u64> {
                let mut all: Vec<u64> = live
                    .iter()
                    .flat_map(|h| h[field].as_array().cloned().unwrap_or_default())
                    .filter_map(|x| x.as_u64())
                    .collect();
                all.sort_unstable();
                all
            };
            if live.len() == n
                && all("partitions") == (0..12).collect::<Vec<u64>>()
                && all("key_groups") == (0..128).collect::<Vec<u64>>()
            {
                return v;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("GET /api/cluster on :{port}: not {n} hosts sharing the work after 60 s: {last:#}");
}

/// `rtap-host --share` processes of group `p`, each with its own data
/// dir: three start 2 s apart; once a third of the input is committed the
/// first is SIGKILLed and started again 3 s later. The outputs equal
/// `want`, and each host stops cleanly on SIGTERM.
fn run_processes(
    broker: &Broker,
    plugins: &std::path::Path,
    want: &BTreeMap<String, BTreeSet<String>>,
    total: i64,
) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let host = |i: usize| {
        kafka_host_api(broker, plugins, dirs[i].path(), ("p", "p-"), ports[i], "t")
            .args(["--share", "--host-id", &format!("host-{i}")])
            .env(
                "RUST_LOG",
                "rtap_host=info,rtap_host::cluster::shared=debug",
            )
            .watched()
    };
    let started = Instant::now();
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(host(i));
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for h in &mut hosts {
            h.wait_for("\u{0}", 1, Duration::from_millis(300));
            assert!(h.alive(), "a host stopped: {}", h.log.join("\n"));
        }
        let committed = broker.committed("p");
        if !killed && committed >= total / 3 {
            killed = true;
            let log = hosts.remove(0).sigkill();
            println!(
                "at {:.1?}: host 0 SIGKILLed, {committed} input records committed ({} log lines)",
                started.elapsed(),
                log.len()
            );
            std::thread::sleep(Duration::from_secs(3));
            hosts.push(host(0));
            continue;
        }
        let diff = compare(broker, "p-", (6, 3), want, (started, committed, total));
        if killed && committed == total && diff.is_none() {
            break;
        }
        if Instant::now() >= deadline {
            for (i, h) in hosts.iter().enumerate() {
                let ranges: Vec<&String> = h
                    .log
                    .iter()
                    .filter(|l| l.contains("key-group range") || l.contains("taken up"))
                    .collect();
                println!(
                    "host {i}:\n{}",
                    ranges
                        .iter()
                        .rev()
                        .take(12)
                        .rev()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            panic!(
                "after {:.1?}: {committed} of {total} input records committed; {}",
                started.elapsed(),
                diff.unwrap_or_default(),
            );
        }
    }
    println!(
        "processes: the outputs equal after {:.1?}",
        started.elapsed()
    );
    for port in &ports {
        let (code, health) = get(*port, "/health").expect("/health answers");
        assert_eq!(code, 200, "{health}");
        assert_eq!(health["role"], "active", "{health}");
        cluster_shared_by(*port, 3);
    }
    // Plugin changes do not reach --share hosts yet: refused.
    let wasm = std::fs::read(plugins.join("page-views.wasm")).unwrap();
    let (code, body) = http(
        ports[0],
        "PUT",
        "/api/plugins/page-views",
        &[("Authorization", "Bearer t")],
        &wasm,
    )
    .expect("the API answers");
    assert!(
        code >= 400,
        "a plugin change on a --share host: {code} {body}"
    );
    println!("a plugin upload to a --share host: {code} {body}");
    for h in hosts {
        sigterm(h.child.id());
        let (st, log) = h.finish(Duration::from_secs(60));
        assert!(st.success(), "a host failed to stop: {}", log.join("\n"));
    }
}

/// A benchmark variable, or its default.
fn bench_var(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap())
}

/// `rtap-host --share` of group `g` (outputs `<g>-…`); the benchmarks
/// add `BENCH_SHARE_ARGS`.
fn share_host(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    g: &str,
) -> Watched {
    let extra = std::env::var("BENCH_SHARE_ARGS").unwrap_or_default();
    kafka_host(broker, plugins, data, g, &format!("{g}-"))
        .args(["--share"])
        .args(extra.split_whitespace())
        .env("RUST_LOG", "rtap_host=info")
        .watched()
}

/// What one host and one or two `--share` hosts cost per event (CPU of
/// the hosts and of tansu) until the input group committed the whole
/// input: `BENCH_EVENTS` (300 000) simulated events on 12 partitions, the
/// eight stage-1/2 plugins, `BENCH_ROUNDS` (2) rounds of the three
/// set-ups interleaved, each with its own group. (BENCHMARKS.md, "Many
/// hosts".)
#[test]
#[ignore = "a benchmark: cargo test --release -p rtap-host --test kafka_stages share_cpu -- --ignored --nocapture"]
fn share_cpu_per_event() {
    let n = bench_var("BENCH_EVENTS", 300_000);
    let broker = Broker::start();
    broker.create_events_topic();
    broker.produce_keyed(&gen_events(n, 23, 2000));
    let plugins = plugins_dir(&PLUGINS);
    let broker_pid = broker.pid().to_string();
    for round in 0..bench_var("BENCH_ROUNDS", 2) {
        // 0: one host; -1: one host with the changelog; n > 0: n hosts
        // with --share.
        for hosts in [0i32, -1, 1, 2] {
            let g = format!("b{round}h{}", hosts + 1);
            let dirs: Vec<_> = (0..hosts.max(1))
                .map(|_| tempfile::tempdir().unwrap())
                .collect();
            let broker0 = cpu_seconds(&broker_pid);
            let started = Instant::now();
            let mut running: Vec<Watched> = if hosts <= 0 {
                vec![
                    kafka_host(
                        &broker,
                        plugins.path(),
                        dirs[0].path(),
                        &g,
                        &format!("{g}-"),
                    )
                    .args(["--workers", "2"])
                    .args((hosts < 0).then_some("--kafka-changelog"))
                    .watched(),
                ]
            } else {
                dirs.iter()
                    .map(|d| share_host(&broker, plugins.path(), d.path(), &g))
                    .collect()
            };
            let cpu_now = |running: &[Watched]| -> f64 {
                running
                    .iter()
                    .map(|h| cpu_seconds(&h.child.id().to_string()))
                    .sum()
            };
            // From the first committed input on: the hosts' start (the
            // plugins' compile, joining the groups) aside.
            let mut first: Option<(Instant, i64, f64, f64)> = None;
            loop {
                let committed = broker.committed(&g);
                if first.is_none() && committed > 0 {
                    first = Some((
                        Instant::now(),
                        committed,
                        cpu_now(&running),
                        cpu_seconds(&broker_pid),
                    ));
                }
                if committed >= n as i64 {
                    break;
                }
                for h in &mut running {
                    assert!(h.alive(), "a host stopped: {}", h.log.join("\n"));
                    h.wait_for("\u{0}", 1, Duration::from_millis(50));
                }
                assert!(started.elapsed() < Duration::from_secs(900), "too slow");
            }
            let wall = started.elapsed().as_secs_f64();
            let cpu = cpu_now(&running);
            let there = cpu_seconds(&broker_pid) - broker0;
            let (t1, c1, cpu1, broker1) = first.expect("committed");
            let m = (n as i64 - c1) as f64;
            let steady = (
                t1.elapsed().as_secs_f64(),
                (cpu - cpu1) * 1e6 / m,
                (cpu_seconds(&broker_pid) - broker1) * 1e6 / m,
            );
            for h in running {
                sigterm(h.child.id());
                let _ = h.finish(Duration::from_secs(60));
            }
            let what = match hosts {
                0 => "one host, --workers 2".to_string(),
                -1 => "the same, the changelog".to_string(),
                h => format!("{h} x --share"),
            };
            println!(
                "{what:>22}, {n} events: {wall:.1} s, CPU per event {:.2} µs in the hosts, {:.2} µs in the broker; from the first commit: {:.1} s, {:.0} events/s, {:.2} µs, {:.2} µs",
                cpu * 1e6 / n as f64,
                there * 1e6 / n as f64,
                steady.0,
                m / steady.0,
                steady.1,
                steady.2
            );
        }
    }
}

/// Each input partition's (or marker topic partition's) offset committed
/// by `group` on `topic` (`partitions` of them; -1 when none).
fn committed_offsets(broker: &Broker, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = broker.client().set("group.id", group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// Failover between `--share` processes: three hosts run group `f` on a
/// steady input (~2 000 events/s); `BENCH_KILLS` (3) times, one is
/// SIGKILLed and started again 20 s later. For each kill: how long until
/// every input partition's committed offset moved again (the dead host's
/// partitions processed by another), and every range's marker (its
/// ranges committed by another). (BENCHMARKS.md, "Many hosts".)
#[test]
#[ignore = "a benchmark: cargo test --release -p rtap-host --test kafka_stages share_failover -- --ignored --nocapture"]
fn share_failover() {
    let kills = bench_var("BENCH_KILLS", 3);
    let broker = Arc::new(Broker::start());
    broker.create_events_topic();
    let plugins = plugins_dir(&PLUGINS);
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (broker, stop) = (broker.clone(), stop.clone());
        std::thread::spawn(move || {
            let lines = gen_events(400_000, 31, 2000);
            for chunk in lines.chunks(1000) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                broker.produce_keyed(chunk);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hosts: Vec<Option<Watched>> = Vec::new();
    for d in &dirs {
        hosts.push(Some(share_host(&broker, plugins.path(), d.path(), "f")));
        std::thread::sleep(Duration::from_secs(2));
    }
    let drain = |hosts: &mut Vec<Option<Watched>>| {
        for h in hosts.iter_mut().flatten() {
            h.wait_for("\u{0}", 1, Duration::from_millis(10));
            assert!(h.alive(), "a host stopped: {}", h.log.join("\n"));
        }
    };
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(25) {
        drain(&mut hosts);
    }
    let ranges = 3;
    for k in 0..kills as usize {
        let victim = k % 3;
        hosts[victim].take().unwrap().sigkill();
        let killed = Instant::now();
        // What was committed once a commit the host had under way landed:
        // its partitions and ranges stand still from here until another
        // host takes them over.
        std::thread::sleep(Duration::from_millis(500));
        let inputs0 = committed_offsets(&broker, "f", EVENTS, 12);
        let ranges0 = committed_offsets(&broker, "f-ranges", "f-ranges", ranges);
        let (mut input_moved, mut range_moved) = (vec![None; 12], vec![None; ranges as usize]);
        while input_moved.iter().chain(&range_moved).any(Option::is_none) {
            assert!(
                killed.elapsed() < Duration::from_secs(120),
                "no failover: {input_moved:?} {range_moved:?}"
            );
            drain(&mut hosts);
            let now = committed_offsets(&broker, "f", EVENTS, 12);
            for (p, o) in now.iter().enumerate() {
                if input_moved[p].is_none() && *o > inputs0[p] {
                    input_moved[p] = Some(killed.elapsed());
                }
            }
            let now = committed_offsets(&broker, "f-ranges", "f-ranges", ranges);
            for (r, o) in now.iter().enumerate() {
                if range_moved[r].is_none() && *o > ranges0[r] {
                    range_moved[r] = Some(killed.elapsed());
                }
            }
        }
        let last = |v: &[Option<Duration>]| v.iter().flatten().max().copied().unwrap();
        println!(
            "kill {}: every input partition committed again after {:.1?}, every range after {:.1?} (partitions {:?}, ranges {:?})",
            k + 1,
            last(&input_moved),
            last(&range_moved),
            input_moved
                .iter()
                .flatten()
                .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            range_moved
                .iter()
                .flatten()
                .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
        );
        let again = Instant::now();
        while again.elapsed() < Duration::from_secs(20) {
            drain(&mut hosts);
        }
        hosts[victim] = Some(share_host(
            &broker,
            plugins.path(),
            dirs[victim].path(),
            "f",
        ));
        let again = Instant::now();
        while again.elapsed() < Duration::from_secs(20) {
            drain(&mut hosts);
        }
    }
    stop.store(true, Ordering::SeqCst);
    producing.join().unwrap();
    for h in hosts.into_iter().flatten() {
        sigterm(h.child.id());
        let _ = h.finish(Duration::from_secs(60));
    }
}
