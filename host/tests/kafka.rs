//! Kafka ingest and outputs against a real Kafka-protocol broker (tansu on
//! loopback, `common::Broker`): the 12-partition events topic read by one host,
//! metrics and alerts written to their topics with deterministic keys, the
//! consumer group's committed offsets, and a restart that resumes from the
//! checkpoint. The metrics must equal those of the same events through the
//! file source.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

const PLUGINS: [&str; 3] = ["page-views", "error-rate", "bot-burst"];

fn events(n: usize) -> Vec<String> {
    gen_events(n as u64, 9, 200)
}

/// Run the host on the broker until it has taken `n` events, then stop it
/// with SIGTERM; returns its final watermark.
fn run_until(broker: &Broker, plugins: &std::path::Path, data: &std::path::Path, n: u64) -> i64 {
    let (mut host, port) = listening_host(
        broker,
        plugins,
        data,
        &["--out-of-orderness", "60s", "--checkpoint-interval", "1s"],
    );
    let wm = taken(port, n, Duration::from_secs(90))["watermark"]
        .as_i64()
        .unwrap();
    wait_lag_reported(port);
    // Let an interval checkpoint commit the offsets, then stop.
    std::thread::sleep(Duration::from_millis(2500));
    check_latency_metrics(port);
    sigterm(host.0.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the host did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wm
}

/// A host on the broker with its HTTP API on a free port (ready), outputs
/// only to Kafka; `extra` options on top.
fn listening_host(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> (Running, u16) {
    let port = free_port();
    let host = HostCmd::new(plugins)
        .kafka_brokers(&broker.addr())
        .args(extra)
        .no_watch()
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data)
        .spawn();
    wait_ready(port);
    (host, port)
}

/// The host's `/api/pipeline` status once it has taken `n` events.
fn taken(port: u16, n: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
        let p: Value = serde_json::from_str(&body).unwrap();
        if p["events_in"].as_u64().unwrap() >= n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "the host took only {} of {n} events",
            p["events_in"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The latency split the performance test reports: the broker's share per
/// record (from the record's CreateTime, so seconds at most here, whatever
/// the events' own times), rtap's per batch on both paths.
fn check_latency_metrics(port: u16) {
    let (_, text) = http(port, "GET", "/metrics", &[], b"").unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    let records = value("rtap_source_fetch_delay_seconds_count");
    assert!(records > 0.0, "no fetch delay recorded:\n{text}");
    let mean = value("rtap_source_fetch_delay_seconds_sum") / records;
    assert!(
        (0.0..30.0).contains(&mean),
        "mean fetch delay {mean} s: not measured from the record's CreateTime"
    );
    for m in [
        "rtap_e2e_latency_seconds_count",
        "rtap_commit_latency_seconds_count",
    ] {
        assert!(value(m) > 0.0, "{m} is 0:\n{text}");
    }
}

/// The consumer lag the host reports in its `/ws` status (the dashboard's
/// lag panel): every partition of the events topic, down to 0 once all
/// events are read.
fn wait_lag_reported(port: u16) {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
            .await
            .unwrap();
        let (_tx, mut rx) = ws.split();
        let until = Instant::now() + Duration::from_secs(30);
        let mut last = Value::Null;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, rx.next()).await else {
                panic!(
                    "no /ws status with the lag of all 12 partitions at 0 within 30 s; last: {last}"
                );
            };
            let Ok(text) = msg.into_text() else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] != "pipeline" {
                continue;
            }
            last = v["consumer_lag"].clone();
            if let Some(lag) = last.as_object()
                && lag.len() == 12
                && lag.values().all(|l| l == 0)
            {
                return;
            }
        }
    });
}

/// The metrics of the file source over the same events: (plugin|name|key|start|end) → value.
fn reference(lines: &[String], plugins: &std::path::Path) -> BTreeMap<String, (i64, Value)> {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    run_file(plugins, &input, tmp.path(), &["--out-of-orderness", "60s"]);
    read_json(&tmp.path().join("out.jsonl"))
        .into_iter()
        .filter(|m| m["type"] == "metric")
        .map(|m| {
            let key = format!(
                "{}|{}|{}|{}|{}",
                m["plugin"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
                m["key"].as_str().unwrap(),
                m["window_start"],
                m["window_end"]
            );
            (key, (m["window_end"].as_i64().unwrap(), m["value"].clone()))
        })
        .collect()
}

fn check_metrics(broker: &Broker, want: &BTreeMap<String, (i64, Value)>, wm: i64) {
    let got: BTreeMap<String, Value> = broker
        .read_all("processed-metrics", 6)
        .into_iter()
        .map(|(k, v)| {
            let id = format!(
                "{}|{}|{}|{}|{}",
                v["plugin"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
                v["key"].as_str().unwrap(),
                v["window_start"],
                v["window_end"]
            );
            assert_eq!(k, id, "the record key names the window");
            (k, v["value"].clone())
        })
        .collect();
    let fired: Vec<&String> = want
        .iter()
        .filter(|(_, (end, _))| end - 1 <= wm)
        .map(|(k, _)| k)
        .collect();
    assert!(fired.len() > 100, "only {} windows fired", fired.len());
    for k in &fired {
        assert_eq!(got.get(*k), Some(&want[*k].1), "{k}");
    }
    for (k, v) in &got {
        assert_eq!(
            Some(v),
            want.get(k).map(|(_, v)| v),
            "{k} emitted with another value than the file source"
        );
    }
}

#[test]
fn twelve_partitions_in_metrics_and_alerts_out() {
    let broker = Broker::start();
    broker.create_events_topic();
    let lines = events(20_000);
    broker.produce(&lines, 0);
    let plugins = plugins_dir(&PLUGINS);
    let want = reference(&lines, plugins.path());
    let data = tempfile::tempdir().unwrap();
    let wm = run_until(&broker, plugins.path(), data.path(), 20_000);
    check_metrics(&broker, &want, wm);
    let alerts = broker.read_all("cep-alerts", 3);
    assert!(!alerts.is_empty(), "no alerts on cep-alerts");
    assert!(
        alerts.iter().all(|(k, v)| v["id"] == *k.as_str()),
        "alert records are keyed by their id"
    );
    assert_eq!(
        broker.committed("rtap"),
        20_000,
        "the consumer group committed every processed offset"
    );
}

#[test]
fn a_restart_resumes_from_the_checkpoint() {
    let broker = Broker::start();
    broker.create_events_topic();
    let lines = events(20_000);
    let plugins = plugins_dir(&PLUGINS);
    let want = reference(&lines, plugins.path());
    let data = tempfile::tempdir().unwrap();
    broker.produce(&lines[..10_000], 0);
    run_until(&broker, plugins.path(), data.path(), 10_000);
    broker.produce(&lines[10_000..], 10_000);
    let wm = run_until(&broker, plugins.path(), data.path(), 10_000);
    check_metrics(&broker, &want, wm);
}

/// Exactly-once through SIGKILL: 1 200 000 events (out of order by up to
/// 1.5 s, some by 30 s) on 12 partitions; the host is killed 12 times —
/// inside a commit after the state was prepared (its transaction then
/// aborts), inside a commit after the Kafka transaction committed (the
/// prepared state is then rolled forward), at random moments, and inside a
/// checkpoint between its fold and the flush that makes it durable — and
/// restarted on the same data dir. Every output of an uninterrupted run must
/// be on the topics with the same value, and nothing else. tansu does not
/// hide records of aborted transactions from `read_committed` readers, so
/// re-sent outputs of aborted transactions are counted and reported apart.
/// The uninterrupted run has one worker; the killed runs have 3, 1 and 2 in
/// turn (state restored by key group onto another number of workers), the
/// last one 3. The killed runs on 3 and 2 workers cross the exchange topic
/// (`--exchange kafka`).
#[test]
fn kafka_outputs_survive_sigkills_exactly_once() {
    // Enough input that twelve kill rounds cannot consume it all: since the
    // committer stopped spinning (b952162) a round gets further, and
    // 500 000 events were once all consumed before the last kill; a round
    // that waits for a fold takes 150 000-190 000 (735bb8f).
    let n = 1_200_000usize;
    let broker = Broker::start();
    broker.create_events_topic();
    let lines = gen_events(n as u64, 13, 2000);
    broker.produce_keyed(&lines);
    let plugins = plugins_dir(&SHIPPED);

    let ref_data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    run_to_end(
        kafka_host(
            &broker,
            plugins.path(),
            ref_data.path(),
            "reference",
            "ref-",
        )
        .args(["--workers", "1"])
        .watched(),
        &broker,
        "reference",
        n as i64,
    );
    eprintln!("uninterrupted run: {:?}", started.elapsed());
    let (want, want_records) = outputs(&broker, "ref-");
    assert!(want.len() > 10_000, "only {} outputs", want.len());

    let data = tempfile::tempdir().unwrap();
    let mut rng = Rng::from_env();
    let (mut kills, mut rolled, mut discarded) = (0, 0, 0);
    // "folded": between a checkpoint's fold, written without the RocksDB
    // write-ahead log, and the flush that makes it durable.
    let phases = ["prepared", "committed", "random", "folded"];
    for round in 0..12 {
        let phase = phases[round % phases.len()];
        let mut h = kafka_host(&broker, plugins.path(), data.path(), "rtap", "")
            // Folds every second, not every 10 s as in the reference run:
            // the outputs must not depend on when checkpoints happen.
            .checkpoint_interval("1s")
            .fault_commit_pause_ms(if phase == "random" { 1 } else { 100 })
            .args(["--workers", ["3", "1", "2"][round % 3]])
            // Two runs in three send their exchange through the exchange
            // topic: killed mid-round, their tasks' transactions abort and
            // the next run's owners must apply nothing of them.
            .args(["--exchange", ["kafka", "memory", "kafka"][round % 3]])
            .watched();
        let (pat, nth) = match phase {
            "random" => ("committed", 1),
            "folded" => ("folded", 1),
            p => (p, 1 + rng.below(2) as usize),
        };
        assert!(
            h.wait_for(
                &format!("rtap-fault: {pat} commit"),
                nth,
                Duration::from_secs(60)
            ),
            "no commit seen: {}",
            h.log.join("\n")
        );
        if phase == "random" {
            std::thread::sleep(Duration::from_millis(rng.below(300)));
        }
        assert!(
            h.alive(),
            "the host ended before the kill: {}",
            h.log.join("\n")
        );
        let log = h.sigkill();
        kills += 1;
        eprintln!(
            "kill {kills} ({phase}): {} of {n} events committed",
            broker.committed("rtap")
        );
        rolled += log
            .iter()
            .filter(|l| l.contains("rolled a prepared commit forward"))
            .count();
        discarded += log
            .iter()
            .filter(|l| l.contains("discarded a prepared commit"))
            .count();
    }
    assert!(
        broker.committed("rtap") < n as i64,
        "every kill must land before the input is consumed"
    );
    let log = run_to_end(
        kafka_host(&broker, plugins.path(), data.path(), "rtap", "")
            .args(["--workers", "3"])
            .watched(),
        &broker,
        "rtap",
        n as i64,
    );
    rolled += log
        .iter()
        .filter(|l| l.contains("rolled a prepared commit forward"))
        .count();
    discarded += log
        .iter()
        .filter(|l| l.contains("discarded a prepared commit"))
        .count();

    let (got, got_records) = outputs(&broker, "");
    let distinct: usize = got.values().map(|v| v.len()).sum();
    eprintln!(
        "{kills} SIGKILLs; restarts rolled {rolled} prepared commits forward and discarded {discarded}; \
         reference: {} ids in {want_records} records; killed run: {} ids, {distinct} distinct (id, value) pairs \
         in {got_records} records ({} re-sent records of aborted transactions)",
        want.len(),
        got.len(),
        got_records - distinct
    );
    // Each kill after a Kafka commit leaves a prepared commit to roll
    // forward; each kill before it one to discard (random kills add some).
    assert!(
        rolled >= 3,
        "only {rolled} prepared commits were rolled forward"
    );
    assert!(
        discarded >= 3,
        "only {discarded} prepared commits were discarded"
    );
    assert_same_outputs(&want, &got);
}

/// A second host started by mistake in the same consumer group (with its own,
/// empty data dir) while the first commits refuses to start and does not
/// disturb the running one — at once without the changelog, after watching
/// the group's marker move with it; a restart after the events topic was recreated
/// with fewer partitions refuses too. Both name the problem. (A host with an
/// empty data dir whose group is *not* committing restores from the
/// changelog instead: `kafka_changelog.rs`.)
#[test]
fn a_second_member_or_a_recreated_topic_is_refused() {
    let broker = std::sync::Arc::new(Broker::start());
    broker.create_events_topic();
    let lines = gen_events(60_000, 17, 500);
    broker.produce_keyed(&lines);
    let plugins = plugins_dir(&PLUGINS);
    let data = tempfile::tempdir().unwrap();
    let first = kafka_host(&broker, plugins.path(), data.path(), "rtap", "").watched();
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.committed("rtap") == 0 {
        assert!(
            Instant::now() < deadline,
            "the first host committed nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Events keep arriving, so the first host keeps committing while the
    // second one watches the group's marker.
    let feeding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (broker, feeding) = (broker.clone(), feeding.clone());
        std::thread::spawn(move || {
            let more = gen_events(40_000, 18, 500);
            let mut fed = 0;
            for chunk in more.chunks(500) {
                if !feeding.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                broker.produce_keyed(chunk);
                fed += chunk.len();
                std::thread::sleep(Duration::from_millis(100));
            }
            fed
        })
    };
    let other = tempfile::tempdir().unwrap();
    // Without the changelog there is nothing to take over with: refused at
    // once.
    let out = kafka_host(&broker, plugins.path(), other.path(), "rtap", "").output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("consumer group `rtap` last committed transaction"),
        "{err}"
    );
    assert!(err.contains("is empty"), "{err}");
    assert!(err.contains("without --kafka-changelog"), "{err}");
    // With it, the second host watches the group's marker, sees it move,
    // and refuses without fencing.
    let out = kafka_host(&broker, plugins.path(), other.path(), "rtap", "")
        .args(["--kafka-changelog"])
        .output();
    feeding.store(false, std::sync::atomic::Ordering::Relaxed);
    let fed = feeder.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("consumer group `rtap` is committing"), "{err}");
    assert!(err.contains("another host runs this pipeline"), "{err}");
    // The first host was not fenced: it still commits, to the end.
    run_to_end(first, &broker, "rtap", (60_000 + fed) as i64);

    broker.delete_and_recreate_events_topic(6);
    let out = kafka_host(&broker, plugins.path(), data.path(), "rtap", "").output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("which now has 6 partitions"), "{err}");
}

/// A host catching up on a backlog does not read every partition at the
/// same pace: from tansu, some of the 12 partitions got no records for
/// seconds while the others were read. Taken for idle, such a partition let
/// the watermark run past the records it still held, and they were dropped
/// as late (131 651 of these 1 M events before the fix, with a 2 s idle
/// timeout). A partition with records left to read is not idle: the drain
/// drops no more late events than the same events read in order from a
/// file (the generator's own out-of-orderness beyond 2 s: a few hundred).
#[test]
fn a_backlogged_partition_is_not_idle() {
    const N: u64 = 1_000_000;
    let broker = Broker::start();
    broker.create_events_topic();
    let out = gen_command(N, 5, 100_000)
        .args(["--kafka-brokers", &broker.addr()])
        .args(["--unpaced", "--kafka-option", "linger.ms=200"])
        .args(["--kafka-option", "batch.size=1000000"])
        .output()
        .expect("run rtap-gen");
    assert!(
        out.status.success(),
        "rtap-gen failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let plugins = plugins_dir(&SHIPPED);

    let file = tempfile::tempdir().unwrap();
    let input = file.path().join("events.jsonl");
    write_events(&input, N, 5, 100_000);
    run_file(plugins.path(), &input, file.path(), &[]);
    let in_order = read_lines(&file.path().join("late-events.jsonl")).len() as u64;
    assert!(in_order < 5_000, "{in_order} late events from the file");

    let data = tempfile::tempdir().unwrap();
    let (_host, port) = listening_host(
        &broker,
        plugins.path(),
        data.path(),
        &["--idle-timeout", "2s"],
    );
    let late = taken(port, N, Duration::from_secs(120))["late_events"]
        .as_u64()
        .unwrap();
    assert!(
        late <= 2 * in_order,
        "draining the backlog dropped {late} events as late; read in order from a file, {in_order}"
    );
}

/// The other side of the backlog rule: a partition whose last write ended
/// a transaction keeps an offset no consumer receives (the commit marker),
/// so the end offset stays one past the last record read. That partition
/// is caught up, and must still go idle, or one quiet partition would hold
/// event time for the whole topic.
#[test]
fn a_partition_ending_in_a_commit_marker_goes_idle() {
    let broker = Broker::start();
    broker.create_events_topic();
    let lines = events(1_200);
    let p: BaseProducer = broker
        .client()
        .set("transactional.id", "upstream")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(10)).unwrap();
    p.begin_transaction().unwrap();
    for (i, l) in lines.iter().enumerate() {
        let rec = BaseRecord::<(), str>::to(EVENTS)
            .payload(l.as_str())
            .partition((i % 12) as i32);
        p.send(rec).map_err(|(e, _)| e).unwrap();
        p.poll(Duration::ZERO);
    }
    p.commit_transaction(Duration::from_secs(10)).unwrap();
    drop(p);
    let last = max_timestamp(&lines);

    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let (_host, port) = listening_host(
        &broker,
        plugins.path(),
        data.path(),
        &["--idle-timeout", "2s"],
    );
    taken(port, 1_200, Duration::from_secs(60));
    // Past the idle timeout and two lag reports, partition 0 alone moves on
    // by ten minutes of event time.
    std::thread::sleep(Duration::from_secs(5));
    let later = 600_000;
    let p: BaseProducer = broker.client().create().unwrap();
    for l in &lines[..100] {
        let mut v: Value = serde_json::from_str(l).unwrap();
        v["timestamp"] = (v["timestamp"].as_i64().unwrap() + later).into();
        let payload = v.to_string();
        p.send(
            BaseRecord::<(), str>::to(EVENTS)
                .payload(&payload)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let status = taken(port, 1_300, Duration::from_secs(60));
    let wm = status["watermark"].as_i64().unwrap();
    assert!(
        wm > last + later / 2,
        "the watermark stayed at {wm}, held by partitions that were read to their commit marker \
         (their last event at {last})"
    );
}
