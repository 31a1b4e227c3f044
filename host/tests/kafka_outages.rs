//! Broker outages (tansu on loopback, `common::Broker`): the broker paused
//! with SIGSTOP for 30 s while the host works through a backlog, then
//! resumed. The host waits — `/health` says the source and the Kafka sink
//! are degraded meanwhile, never `ok` — and then goes on: its outputs on
//! the topics equal those of an uninterrupted run of the same events, none
//! lost, none twice. Also with the exchange through the exchange topic
//! (`--exchange kafka`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PLUGINS: [&str; 3] = ["page-views", "error-rate", "bot-burst"];
const ADMIN: &str = "outage-admin-token";

/// A host on the broker with its own group and output topics (`prefix`).
fn kafka_host(
    broker: &Broker,
    plugins: &std::path::Path,
    data: &std::path::Path,
    group: &str,
    prefix: &str,
) -> HostCmd {
    HostCmd::new(plugins)
        .kafka_brokers(&broker.addr())
        .kafka_group(group)
        .kafka_metrics_topic(&format!("{prefix}processed-metrics"))
        .kafka_alerts_topic(&format!("{prefix}cep-alerts"))
        .kafka_marker_topic(&format!("{prefix}commit-marker"))
        .args([
            "--kafka-dead-letter-topic",
            &format!("{prefix}dead-letters"),
        ])
        .args(["--kafka-late-topic", &format!("{prefix}late-events")])
        .out_of_orderness("60s")
        .no_watch()
        .jsonl_sink("/dev/null")
        .data_dir(data)
}

/// Wait until the group committed `n` input offsets.
fn wait_committed(broker: &Broker, h: &mut Watched, group: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while broker.committed(group) < n {
        assert!(h.alive(), "the host stopped: {}", h.log.join("\n"));
        assert!(
            Instant::now() < deadline,
            "the group committed only {} of {n}",
            broker.committed(group)
        );
        h.wait_for("\u{0}", 1, Duration::from_millis(300));
    }
}

/// Every output record of the run with `prefix`: id → payloads, in order
/// of reading (a duplicate shows as a second payload).
fn outputs(broker: &Broker, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (topic, parts) in [("processed-metrics", 6), ("cep-alerts", 3)] {
        for r in broker.read_records(&format!("{prefix}{topic}"), parts) {
            by_id
                .entry(r.key)
                .or_default()
                .push(String::from_utf8(r.value).unwrap());
        }
    }
    by_id
}

/// Produce `lines` keyed by user, `per_sec` a second, from a thread: the
/// producer waits out the pause with its records queued.
fn produce_paced(broker: &Broker, lines: Vec<String>, per_sec: u64) -> std::thread::JoinHandle<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = broker.client().set("linger.ms", "5").create().unwrap();
    std::thread::spawn(move || {
        let started = Instant::now();
        for (i, l) in lines.iter().enumerate() {
            let due = started + Duration::from_micros(i as u64 * 1_000_000 / per_sec);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let v: Value = serde_json::from_str(l).unwrap();
            let key = v["user_id"].as_str().unwrap_or("").to_string();
            let mut rec = BaseRecord::to(EVENTS).key(&key).payload(l.as_str());
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(120)).unwrap();
    })
}

fn health(port: u16) -> (u16, Value) {
    let (code, body) =
        http(port, "GET", "/health", &[], b"").expect("/health answers while the broker is away");
    (code, serde_json::from_str(&body).unwrap())
}

#[test]
fn a_paused_broker_is_waited_out_without_loss_or_duplicates() {
    paused_broker(&[]);
}

/// The same with the exchange through the exchange topic: a round caught
/// by the pause is sent again from new task producers once the broker is
/// back, and applied once. The processing thread waits inside that round,
/// so a plugin removal made meanwhile does not reach its barrier: the API
/// answers 503 after 30 s, and the removal is never made (bot-burst goes
/// on once the broker is back: its outputs equal the reference run's).
#[test]
fn a_paused_broker_is_waited_out_through_the_exchange_topic() {
    paused_broker(&["--workers", "2", "--exchange", "kafka"]);
}

fn paused_broker(args: &[&str]) {
    let through_topic = args.contains(&"kafka");
    const N: i64 = 90_000;
    let broker = Broker::start();
    broker.create_events_topic();
    let plugins = plugins_dir(&PLUGINS);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut h = kafka_host(&broker, plugins.path(), data.path(), "rtap", "")
        .listen(port)
        .admin_token(ADMIN)
        .args(args)
        .watched();
    wait_ready(port);
    // 180 s of event time, produced over 30 s while the host runs.
    let lines = gen_events(N as u64, 31, 500);
    let producer = produce_paced(&broker, lines, 3_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.committed("rtap") < N / 5 {
        assert!(
            h.alive() && Instant::now() < deadline,
            "no progress: {}",
            h.log.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health(port).1["status"], "ok");
    broker.pause();
    let paused = Instant::now();
    // Longer than the API's 30 s wait for a barrier, with the removal.
    let pause = Duration::from_secs(if through_topic { 40 } else { 30 });
    let removal = through_topic.then(|| {
        std::thread::spawn(move || {
            let auth = format!("Bearer {ADMIN}");
            let asked = Instant::now();
            let answer = http(
                port,
                "DELETE",
                "/api/plugins/bot-burst",
                &[("Authorization", &auth)],
                b"",
            );
            (answer, asked.elapsed())
        })
    });
    let (mut source_degraded, mut sink_degraded, mut exchange_degraded) = (false, false, false);
    while paused.elapsed() < pause {
        let (code, h) = health(port);
        assert_eq!(code, 200, "{h}");
        if paused.elapsed() > Duration::from_secs(8) {
            assert_eq!(h["status"], "degraded", "the broker is away: {h}");
        }
        source_degraded |= h["components"]["source"]["status"] == "degraded";
        sink_degraded |= h["components"]["sinks"]["kafka"]["status"] == "degraded";
        exchange_degraded |= h["components"]["exchange"]["status"] == "degraded";
        std::thread::sleep(Duration::from_millis(500));
    }
    let removal = removal.map(|r| r.join().unwrap());
    broker.resume();
    if let Some((answer, took)) = removal {
        let (code, body) = answer.expect("the DELETE answered");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("the change was not made"), "{body}");
        eprintln!("the removal during the pause: 503 after {took:.1?}");
    }
    assert!(source_degraded, "/health never showed the source degraded");
    if through_topic {
        // The round waits on the exchange topic, before the sink's commit.
        assert!(
            exchange_degraded,
            "/health never showed the exchange degraded"
        );
    } else {
        assert!(
            sink_degraded,
            "/health never showed the Kafka sink degraded"
        );
    }
    producer.join().expect("the producer delivered every event");
    wait_committed(&broker, &mut h, "rtap", N);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(port).1["status"] != "ok" {
        assert!(
            Instant::now() < deadline,
            "/health stays {}",
            health(port).1
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(h.alive(), "{}", h.log.join("\n"));
    if through_topic {
        let again = h
            .log
            .iter()
            .filter(|l| l.contains("sending it again"))
            .count();
        let waited = h.log.iter().filter(|l| l.contains("still waiting")).count();
        eprintln!("the exchange: {again} rounds sent again, {waited} waits of 10 s reported");
    }
    drop(h);

    // The same records, read by an uninterrupted run.
    let ref_data = tempfile::tempdir().unwrap();
    let mut reference = kafka_host(
        &broker,
        plugins.path(),
        ref_data.path(),
        "reference",
        "ref-",
    )
    .no_server()
    .watched();
    wait_committed(&broker, &mut reference, "reference", N);
    drop(reference);
    let want = outputs(&broker, "ref-");
    assert!(want.len() > 1_000, "only {} outputs", want.len());

    let got = outputs(&broker, "");
    let twice: Vec<(&String, &Vec<String>)> =
        got.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(twice.is_empty(), "outputs written twice: {twice:?}");
    let missing: Vec<&String> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "outputs lost: {missing:?}");
    let extra: Vec<&String> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "outputs the uninterrupted run does not have: {extra:?}"
    );
    for (k, v) in &want {
        assert_eq!(&got[k], v, "{k}");
    }
}
