//! Kafka ingest and outputs against a real Kafka-protocol broker (tansu,
//! started here on loopback): the 12-partition events topic read by one host,
//! metrics and alerts written to their topics with deterministic keys, the
//! consumer group's committed offsets, and a restart that resumes from the
//! checkpoint. The metrics must equal those of the same events through the
//! file source.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const EVENTS: &str = "website-analytics-events";
const PLUGINS: [&str; 3] = ["page-views", "error-rate", "bot-burst"];

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let bin = std::env::var("TANSU_BIN")
            .unwrap_or_else(|_| panic!("TANSU_BIN is not set: scripts/test.sh installs tansu"));
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.addr());
        c
    }

    fn create_events_topic(&self) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let t = NewTopic::new(EVENTS, 12, TopicReplication::Fixed(1));
        rt.block_on(admin.create_topics([&t], &AdminOptions::new()))
            .unwrap();
    }

    /// Round-robin over the 12 partitions, in order.
    fn produce(&self, lines: &[String], first: usize) {
        let p: BaseProducer = self.client().create().unwrap();
        for (i, l) in lines.iter().enumerate() {
            let mut rec = BaseRecord::<(), str>::to(EVENTS)
                .payload(l.as_str())
                .partition(((first + i) % 12) as i32);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// Every record of a topic: (key, JSON payload).
    fn read_all(&self, topic: &str, partitions: i32) -> Vec<(String, Value)> {
        let c: BaseConsumer = self
            .client()
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
                quiet = Instant::now();
            }
        }
        let _ = c.unassign();
        out
    }

    fn committed(&self, group: &str) -> i64 {
        let c: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..12 {
            tpl.add_partition(EVENTS, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.elements()
            .iter()
            .map(|e| {
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    0
                }
            })
            .sum()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events(n: usize) -> Vec<String> {
    let out = Command::new(gen_bin())
        .args(["--events", &n.to_string(), "--seed", "9", "--rate", "200"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Run the host on the broker until it has taken `n` events, then stop it
/// with SIGTERM; returns its final watermark.
fn run_until(broker: &Broker, plugins: &std::path::Path, data: &std::path::Path, n: u64) -> i64 {
    let port = free_port();
    let mut host = Running(
        Command::new(host_bin())
            .arg("--plugins")
            .arg(plugins)
            .args([
                "--kafka-brokers",
                &broker.addr(),
                "--out-of-orderness",
                "60s",
                "--checkpoint-interval",
                "1s",
            ])
            .args(["--no-watch", "--sink", "jsonl:/dev/null", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(port);
    let deadline = Instant::now() + Duration::from_secs(90);
    let wm = loop {
        let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
        let p: Value = serde_json::from_str(&body).unwrap();
        if p["events_in"].as_u64().unwrap() >= n {
            break p["watermark"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the host took only {} of {n} events",
            p["events_in"]
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let an interval checkpoint commit the offsets, then stop.
    std::thread::sleep(Duration::from_millis(2500));
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
