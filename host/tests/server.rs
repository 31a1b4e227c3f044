//! The running host over real HTTP and WebSocket: metrics and alerts stream
//! on `/ws` (or only the types asked for, `/ws?types=…`), `/api/plugins`
//! lists the plugins with counters, `/health` answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

/// The next WebSocket message as JSON; fails with `what` if none comes
/// before `until`.
async fn next_json<S, E>(rx: &mut S, until: Instant, what: &str) -> serde_json::Value
where
    S: futures::Stream<Item = Result<tokio_tungstenite::tungstenite::Message, E>> + Unpin,
    E: std::fmt::Debug,
{
    let left = until.saturating_duration_since(Instant::now());
    let msg = tokio::time::timeout(left, rx.next())
        .await
        .expect(what)
        .unwrap()
        .unwrap();
    serde_json::from_str(&msg.into_text().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_metrics_and_alerts_over_websocket() {
    let plugins = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = HostCmd::new(plugins.path())
        .rate(4000)
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data.path())
        .spawn();
    wait_ready(port);
    let (code, health) = http(port, "GET", "/health", &[], b"").unwrap();
    assert_eq!(code, 200, "{health}");
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["components"]["plugins"].as_object().unwrap().len(), 11);

    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .unwrap();
    let (_tx, mut rx) = ws.split();
    let mut seen_metric = false;
    let mut seen_alert = false;
    let mut seen_pipeline = false;
    let until = Instant::now() + Duration::from_secs(40);
    while !(seen_metric && seen_alert && seen_pipeline) {
        let v = next_json(&mut rx, until, "no metric, alert and status within 40 s").await;
        match v["type"].as_str().unwrap() {
            "metric" => {
                assert!(v["window_end"].as_i64().unwrap() > v["window_start"].as_i64().unwrap());
                assert!(v.get("value").is_some() || v.get("values").is_some());
                seen_metric = true;
            }
            "alert" => {
                assert!(
                    v["id"].as_str().unwrap().len() == 24
                        && v["rule"].is_string()
                        && v["severity"].is_string()
                );
                seen_alert = true;
            }
            "pipeline" => {
                seen_pipeline = v["events_in"].as_u64().unwrap() > 0;
            }
            _ => {}
        }
    }

    // A client that asks for the status only gets nothing else, while the
    // pipeline emits metrics and alerts meanwhile.
    let outputs = || {
        let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["outputs"]
            .as_u64()
            .unwrap()
    };
    let before = outputs();
    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?types=pipeline"))
            .await
            .unwrap();
    let (_tx, mut rx) = ws.split();
    let mut statuses = 0;
    let until = Instant::now() + Duration::from_secs(30);
    while statuses < 12 {
        let v = next_json(&mut rx, until, "12 status messages within 30 s").await;
        assert_eq!(v["type"], "pipeline", "/ws?types=pipeline sent {v}");
        statuses += 1;
    }
    assert!(
        outputs() > before,
        "outputs were emitted while the filtered client listened"
    );

    let (code, body) = http(port, "GET", "/api/plugins", &[], b"").unwrap();
    assert_eq!(code, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 11);
    let pv = list.iter().find(|p| p["name"] == "page-views").unwrap();
    assert_eq!(pv["kind"], "aggregator");
    assert_eq!(pv["status"], "running");
    assert_eq!(pv["hash"].as_str().unwrap().len(), 64);
    assert!(pv["counters"]["events_in"].as_u64().unwrap() > 0);
    assert_eq!(pv["window"]["type"], "tumbling");
}

/// `--workers 3`: `/api/pipeline`, the `/ws` status and `/metrics` show each
/// worker taking events (the simulator's 12 partitions are spread over all
/// three) and holding keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_shows_in_the_status_the_api_and_the_metrics() {
    let plugins = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = HostCmd::new(plugins.path())
        .rate(4000)
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data.path())
        .checkpoint_interval("1s")
        .args(["--workers", "3"])
        .spawn();
    wait_ready(port);

    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The server answers from start-up on (a standby's while it
        // waits); the workers show from the first status, a second in.
        let w = p["workers"].as_array().cloned().unwrap_or_default();
        assert!(w.len() <= 3, "/api/pipeline workers: {}", p["workers"]);
        let all_busy = w.len() == 3
            && w.iter().all(|w| {
                w["events_per_sec"].as_f64().unwrap() > 0.0
                    && w["keys"].as_u64().unwrap() > 0
                    && w["busy"].as_f64().unwrap() > 0.0
            });
        if all_busy {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "not every worker took events and held keys within 30 s: {}",
            p["workers"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["worker"], i);
        assert!(w["busy"].as_f64().unwrap() <= 1.0, "{w}");
        assert!(w["exchange_queue"].is_u64(), "{w}");
    }

    let (ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?types=pipeline"))
            .await
            .unwrap();
    let (_tx, mut rx) = ws.split();
    let v = next_json(
        &mut rx,
        Instant::now() + Duration::from_secs(5),
        "a status within 5 s",
    )
    .await;
    assert_eq!(v["workers"].as_array().unwrap().len(), 3, "{v}");

    let (code, text) = http(port, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    for w in 0..3 {
        for name in [
            "rtap_worker_events_total",
            "rtap_worker_busy_seconds_total",
            "rtap_worker_keys",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name}{{worker=\"{w}\"}}")))
                .unwrap_or_else(|| panic!("/metrics has no {name} for worker {w}"));
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(value > 0.0, "{line}");
        }
    }
}
