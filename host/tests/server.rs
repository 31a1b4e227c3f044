//! The running host over real HTTP and WebSocket: metrics and alerts stream
//! on `/ws`, `/api/plugins` lists the plugins with counters, `/health` answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n")?.1.to_string();
    // Small bodies may come chunked: strip the chunk framing.
    let body = if buf
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body
    };
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_metrics_and_alerts_over_websocket() {
    let plugins = plugins_dir(&SHIPPED);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = Host(
        Command::new(host_bin())
            .arg("--plugins")
            .arg(plugins.path())
            .args(["--rate", "4000", "--sink", "jsonl:/dev/null", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, health) = loop {
        if let Some(r) = get(port, "/health") {
            break r;
        }
        assert!(Instant::now() < deadline, "the host did not answer /health");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
        let left = until.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, rx.next())
            .await
            .expect("no metric, alert and status within 40 s")
            .unwrap()
            .unwrap();
        let text = msg.into_text().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
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

    let (code, body) = get(port, "/api/plugins").unwrap();
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
