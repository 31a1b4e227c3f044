//! Dead letters and late events on Kafka (tansu on loopback,
//! `common::Broker`): malformed records, a poisoned event (the
//! `hostile-trap` fixture traps on page `/trap`) and events older than the
//! watermark, produced into the events topic, appear on `rtap-dead-letters`
//! and `rtap-late-events` exactly once each, for a `read_committed` reader,
//! as the input record's value with headers naming its origin, the plugin
//! and why; and the other plugins' outputs are those of the same input
//! without Kafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `/api/pipeline` once the host has taken `n` events.
fn taken(port: u16, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
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

/// The metrics of `plugins` in JSONL outputs: id → value.
fn metrics_of(outputs: &[Value], plugins: &[&str]) -> BTreeMap<String, Value> {
    outputs
        .iter()
        .filter(|m| m["type"] == "metric" && plugins.contains(&m["plugin"].as_str().unwrap()))
        .map(|m| {
            let id = format!(
                "{}|{}|{}|{}|{}",
                m["plugin"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
                m["key"].as_str().unwrap(),
                m["window_start"],
                m["window_end"]
            );
            (id, m["value"].clone())
        })
        .collect()
}

#[test]
fn dead_letters_and_late_events_go_to_their_topics_exactly_once() {
    let broker = Broker::start();
    broker.create_events_topic();
    let mut lines = gen_events(12_000, 21, 60);
    // The poisoned event: a page the trap plugin refuses.
    let mut poisoned: Value = serde_json::from_str(&lines[6_000]).unwrap();
    poisoned["page"] = "/trap".into();
    lines[6_000] = poisoned.to_string();
    let first_ts = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["timestamp"]
                .as_i64()
                .unwrap()
        })
        .min()
        .unwrap();
    broker.produce(&lines[..6_000], 0);
    // Malformed records between the events, on three partitions.
    let malformed: [&[u8]; 3] = [b"not json at all", b"{\"event_id\":\"x\",", b"[1,2,3]"];
    let bad: Vec<(i32, &[u8])> = malformed
        .iter()
        .enumerate()
        .map(|(i, m)| (i as i32 * 4, *m))
        .collect();
    let bad_offsets = broker.produce_to(&bad);
    broker.produce(&lines[6_000..], 6_000);

    let plugins = plugins_dir(&["page-views", "error-rate", "hostile-trap"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = HostCmd::new(plugins.path())
        .kafka_brokers(&broker.addr())
        .out_of_orderness("60s")
        .no_watch()
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data.path())
        .spawn();
    wait_ready(port);
    taken(port, lines.len() as u64);
    // Late: a day before the first event, once every partition moved the
    // watermark past it.
    let late_lines: Vec<String> = (0..4)
        .map(|i| {
            let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
            v["timestamp"] = (first_ts - 86_400_000 + i as i64).into();
            v["event_id"] = format!("late-{i}").into();
            v.to_string()
        })
        .collect();
    let late_in: Vec<(i32, &[u8])> = late_lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i as i32 * 3, l.as_bytes()))
        .collect();
    let late_offsets = broker.produce_to(&late_in);
    let status = taken(port, (lines.len() + late_lines.len()) as u64);
    // Two commit intervals and a checkpoint for the last records.
    std::thread::sleep(Duration::from_secs(3));
    let status_now: Value =
        serde_json::from_str(&http(port, "GET", "/api/pipeline", &[], b"").unwrap().1).unwrap();
    assert_eq!(status["late_events"], status_now["late_events"]);

    // Dead letters: each (plugin, partition, offset) once.
    let dead = broker.read_records("rtap-dead-letters", 3);
    assert_eq!(
        dead.len() as u64,
        status_now["dead_lettered"].as_u64().unwrap(),
        "every dead letter the host counted, once"
    );
    let mut seen = BTreeSet::new();
    for d in &dead {
        let id = (
            d.header("rtap.plugin").map(str::to_string),
            d.header("rtap.source.partition").unwrap().to_string(),
            d.header("rtap.source.offset").unwrap().to_string(),
        );
        assert!(seen.insert(id.clone()), "dead letter {id:?} twice");
        assert_eq!(d.header("rtap.source.topic"), Some(EVENTS));
        assert_eq!(d.header("rtap.source"), Some(&*format!("kafka:{EVENTS}")));
        assert_eq!(d.key, format!("kafka:{EVENTS}|{}|{}", id.1, id.2));
    }
    for ((p, value), off) in bad.iter().zip(&bad_offsets) {
        let got: Vec<&KafkaRecord> = dead
            .iter()
            .filter(|d| {
                d.header("rtap.source.partition") == Some(&*p.to_string())
                    && d.header("rtap.source.offset") == Some(&*off.to_string())
            })
            .collect();
        assert_eq!(got.len(), 1, "malformed record at {p}/{off}: {got:?}");
        let d = got[0];
        assert_eq!(d.value, *value, "the record's value as received");
        assert_eq!(d.header("rtap.reason"), Some("malformed"));
        assert_eq!(d.header("rtap.plugin"), None);
        assert!(!d.header("rtap.detail").unwrap().is_empty());
    }
    let trapped: Vec<&KafkaRecord> = dead
        .iter()
        .filter(|d| d.value == lines[6_000].as_bytes())
        .collect();
    assert_eq!(trapped.len(), 1, "the poisoned event: {trapped:?}");
    assert_eq!(trapped[0].header("rtap.plugin"), Some("hostile-trap"));
    assert_eq!(trapped[0].header("rtap.reason"), Some("trap"));
    assert!(
        trapped[0]
            .header("rtap.detail")
            .unwrap()
            .contains("refusing event"),
        "{:?}",
        trapped[0].headers
    );
    // Only the trap plugin's call failed: the other plugins dead-letter nothing.
    assert!(
        dead.iter()
            .all(|d| matches!(d.header("rtap.plugin"), None | Some("hostile-trap")))
    );

    // Late events: the planted ones, once each, as produced.
    let late = broker.read_records("rtap-late-events", 3);
    assert_eq!(
        late.len() as u64,
        status_now["late_events"].as_u64().unwrap()
    );
    for ((p, value), off) in late_in.iter().zip(&late_offsets) {
        let got: Vec<&KafkaRecord> = late.iter().filter(|l| l.value == *value).collect();
        assert_eq!(got.len(), 1, "late event at {p}/{off}: {got:?}");
        let l = got[0];
        assert_eq!(l.header("rtap.reason"), Some("late"));
        assert_eq!(l.header("rtap.source.partition"), Some(&*p.to_string()));
        assert_eq!(l.header("rtap.source.offset"), Some(&*off.to_string()));
        let closed: BTreeSet<&str> = l.header("rtap.plugin").unwrap().split(',').collect();
        assert_eq!(
            closed,
            BTreeSet::from(["error-rate", "hostile-trap", "page-views"])
        );
    }

    // The other plugins' outputs: those of the same input through a file.
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("events.jsonl");
    let mut all: Vec<String> = lines.clone();
    all.extend(
        malformed
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned()),
    );
    std::fs::write(&input, all.join("\n") + "\n").unwrap();
    let clean = plugins_dir(&["page-views", "error-rate"]);
    run_file(
        clean.path(),
        &input,
        tmp.path(),
        &["--out-of-orderness", "60s"],
    );
    let want = metrics_of(
        &read_json(&tmp.path().join("out.jsonl")),
        &["page-views", "error-rate"],
    );
    let got_values: Vec<Value> = broker
        .read_records("processed-metrics", 6)
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let got = metrics_of(&got_values, &["page-views", "error-rate"]);
    let wm = status_now["watermark"].as_i64().unwrap();
    let fired: Vec<&String> = want
        .keys()
        .filter(|k| k.rsplit('|').next().unwrap().parse::<i64>().unwrap() - 1 <= wm)
        .collect();
    assert!(
        fired.len() > 50,
        "only {} of {} windows fired at watermark {wm}; {} on the topic",
        fired.len(),
        want.len(),
        got.len()
    );
    for k in fired {
        assert_eq!(got.get(k), Some(&want[k]), "{k}");
    }
    for (k, v) in &got {
        assert_eq!(
            Some(v),
            want.get(k),
            "{k}: another value than without Kafka"
        );
    }
}
