//! `GET /api/history` over real HTTP against the running host (simulator,
//! the 11 shipped plugins): it answers exactly the metric and alert objects
//! `/ws` sent, oldest first, filtered by `since` and `types`; bad parameters
//! get a 400 naming them; the retention holds; a restart starts empty.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::Value;

/// Every text message of `/ws`, with the instant it arrived, until `stop`.
struct WsRecorder {
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WsRecorder {
    fn connect(port: u16) -> WsRecorder {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (connected_tx, connected) = std::sync::mpsc::channel();
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
                    .await
                    .unwrap();
                connected_tx.send(()).unwrap();
                let (_tx, mut rx) = ws.split();
                while !s.load(Ordering::Relaxed) {
                    let Ok(Some(msg)) =
                        tokio::time::timeout(Duration::from_millis(100), rx.next()).await
                    else {
                        continue;
                    };
                    if let Ok(text) = msg.unwrap().into_text() {
                        l.lock().unwrap().push((Instant::now(), text.to_string()));
                    }
                }
            });
        });
        connected
            .recv_timeout(Duration::from_secs(10))
            .expect("/ws connected");
        WsRecorder {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// The time an output is filed under: a metric's window end, an alert's time.
fn time_of(v: &Value) -> i64 {
    match v["type"].as_str() {
        Some("metric") => v["window_end"].as_i64().unwrap(),
        Some("alert") => v["time"].as_i64().unwrap(),
        other => panic!("the history holds metrics and alerts, not {other:?}: {v}"),
    }
}

/// `GET /api/history<query>`: the array, parsed.
fn history(port: u16, query: &str) -> Vec<Value> {
    let (code, body) = http(port, "GET", &format!("/api/history{query}"), &[], b"").unwrap();
    assert_eq!(code, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: not a JSON array ({e})"))
}

fn assert_oldest_first(items: &[Value]) {
    for w in items.windows(2) {
        assert!(
            time_of(&w[0]) <= time_of(&w[1]),
            "not oldest first: {} then {}",
            w[0],
            w[1]
        );
    }
}

/// The host on the simulator at 2 000 events/s with the shipped plugins
/// (and their folder, removed when dropped).
fn start_host(data: &std::path::Path, port: u16, extra: &[&str]) -> (Running, tempfile::TempDir) {
    let plugins = plugins_dir(&SHIPPED);
    let host = HostCmd::new(plugins.path())
        .rate(2000)
        .no_watch()
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data)
        .args(extra)
        .spawn();
    (host, plugins)
}

#[test]
fn history_answers_what_the_websocket_sent() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = start_host(data.path(), port, &[]);
    wait_ready(port);
    // Connected before the first window can fire (5 s + 2 s of event time).
    let ws = WsRecorder::connect(port);
    std::thread::sleep(Duration::from_secs(20));
    let asked = Instant::now();
    let held = history(port, "?since=0&types=metric,alert");
    std::thread::sleep(Duration::from_secs(1));
    let sent = ws.finish();

    // The same objects, compared parsed (`Value`s print their keys sorted).
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    let outputs: Vec<(Instant, Value)> = sent
        .iter()
        .map(|(at, s)| (*at, parse(s)))
        .filter(|(_, v)| matches!(v["type"].as_str(), Some("metric" | "alert")))
        .collect();
    let mut sent_count: HashMap<String, i64> = HashMap::new();
    for (_, v) in &outputs {
        *sent_count.entry(v.to_string()).or_default() += 1;
    }
    for v in &held {
        let n = sent_count.entry(v.to_string()).or_default();
        *n -= 1;
        assert!(
            *n >= 0,
            "the history has {v}, which /ws did not send (as often)"
        );
    }
    let before: Vec<&Value> = outputs
        .iter()
        .filter(|(at, _)| *at < asked)
        .map(|(_, v)| v)
        .collect();
    let held_text: std::collections::HashSet<String> = held.iter().map(|v| v.to_string()).collect();
    for v in &before {
        assert!(
            held_text.contains(&v.to_string()),
            "/ws sent {v} before the request, the history lacks it"
        );
    }
    assert_oldest_first(&held);
    let kinds = |items: &[Value], ty: &str| items.iter().filter(|v| v["type"] == ty).count();
    assert!(
        kinds(&held, "metric") > 50 && kinds(&held, "alert") > 0,
        "{} metrics, {} alerts held",
        kinds(&held, "metric"),
        kinds(&held, "alert")
    );
    for plugin in [
        "page-views",
        "error-rate",
        "latency-percentiles",
        "active-users",
    ] {
        assert!(
            held.iter().any(|v| v["plugin"] == plugin),
            "nothing of {plugin} in the history"
        );
    }

    // `since` is inclusive and every answer is oldest first; the pipeline
    // goes on meanwhile, so a later answer may hold more.
    let since = time_of(&held[held.len() / 2]);
    let later = history(port, &format!("?since={since}"));
    assert!(later.iter().all(|v| time_of(v) >= since));
    assert_oldest_first(&later);
    let later_text: std::collections::HashSet<String> =
        later.iter().map(|v| v.to_string()).collect();
    for v in held.iter().filter(|v| time_of(v) >= since) {
        assert!(
            later_text.contains(&v.to_string()),
            "since={since} lacks {v}"
        );
    }

    let alerts = history(port, "?types=alert&since=0");
    assert!(!alerts.is_empty() && alerts.iter().all(|v| v["type"] == "alert"));
    let metrics = history(port, "?types=metric");
    assert!(!metrics.is_empty() && metrics.iter().all(|v| v["type"] == "metric"));
    assert!(history(port, &format!("?since={}", i64::MAX)).is_empty());

    let (_, text) = http(port, "GET", "/metrics", &[], b"").unwrap();
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(gauge("rtap_history_outputs") >= held.len() as f64);
    assert!(gauge("rtap_history_bytes") > gauge("rtap_history_outputs") * 100.0);
}

#[test]
fn bad_parameters_get_a_400_that_names_them() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = start_host(data.path(), port, &[]);
    wait_ready(port);
    for (query, names) in [
        ("?since=yesterday", "`since`"),
        ("?since=1.5e12", "`since`"),
        ("?since=", "`since`"),
        ("?types=metric,pipeline", "`types`"),
        ("?types=alerts", "`alerts`"),
        ("?sinse=0", "`sinse`"),
        ("?since=0&since=1", "`since`"),
    ] {
        let (code, body) = http(port, "GET", &format!("/api/history{query}"), &[], b"").unwrap();
        assert_eq!(code, 400, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let error = v["error"].as_str().unwrap();
        assert!(error.contains(names), "{query}: {error}");
    }
    // The host goes on serving.
    assert_eq!(
        http(port, "GET", "/api/history?since=0", &[], b"")
            .unwrap()
            .0,
        200
    );
}

#[test]
fn history_keeps_its_retention_and_a_restart_starts_empty() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut host, _plugins) = start_host(data.path(), port, &["--history", "10s"]);
    wait_ready(port);
    std::thread::sleep(Duration::from_secs(25));
    let before = history(port, "");
    let newest = before.iter().map(time_of).max().unwrap();
    let oldest = before.iter().map(time_of).min().unwrap();
    assert!(
        newest - oldest <= 10_000 && newest - oldest >= 5_000,
        "holds {} ms of outputs with --history 10s",
        newest - oldest
    );

    sigterm(host.0.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the host did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Restored from the checkpoint the stop wrote: the pipeline goes on
    // where it stopped, the history does not (it is memory only).
    let port = free_port();
    let _host = start_host(data.path(), port, &["--history", "10s"]);
    wait_ready(port);
    let old: std::collections::HashSet<String> = before.iter().map(|v| v.to_string()).collect();
    for _ in 0..2 {
        let after = history(port, "");
        let kept: Vec<&Value> = after
            .iter()
            .filter(|v| old.contains(&v.to_string()))
            .collect();
        assert!(kept.is_empty(), "outputs from before the restart: {kept:?}");
        std::thread::sleep(Duration::from_secs(5));
    }
}
