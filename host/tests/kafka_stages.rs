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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rtap_host::checkpoint::range::RangeTopics;
use rtap_host::cluster::ranges::Ranges;
use rtap_host::cluster::stages::{PipelineStage1, PipelineStage2, Plugins, Sidelined};
use rtap_host::cluster::tasks::{InputGroup, Tasks};
use rtap_host::exchange::ExchangeTopics;
use rtap_host::pipeline::TimeConfig;

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
    loop {
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
    let host = |i: usize| {
        kafka_host(broker, plugins, dirs[i].path(), "p", "p-")
            .args(["--share"])
            .env("RUST_LOG", "rtap_host=info")
            .watched()
    };
    let started = Instant::now();
    let mut hosts = Vec::new();
    for i in 0..3 {
        hosts.push(host(i));
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(300);
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
        assert!(
            Instant::now() < deadline,
            "after {:.1?}: {committed} of {total} input records committed; {}\nthe first host's log:\n{}",
            started.elapsed(),
            diff.unwrap_or_default(),
            hosts[0].log.join("\n")
        );
    }
    println!(
        "processes: the outputs equal after {:.1?}",
        started.elapsed()
    );
    for h in hosts {
        sigterm(h.child.id());
        let (st, log) = h.finish(Duration::from_secs(60));
        assert!(st.success(), "a host failed to stop: {}", log.join("\n"));
    }
}
