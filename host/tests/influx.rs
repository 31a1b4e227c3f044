//! The InfluxDB sink against a real time-series database (Debian's
//! victoria-metrics speaks the InfluxDB v2 write API), the Prometheus
//! `/metrics` output checked by `promtool`, and `/health` following a sink
//! outage.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What the JSONL sink says was emitted, as victoria-metrics names it
/// (`measurement_field`), last value per window.
fn expected_points(out: &Path) -> BTreeMap<(String, i64), f64> {
    let mut want = BTreeMap::new();
    for m in read_json(out).into_iter().filter(|m| m["type"] == "metric") {
        let (name, plugin, key) = (
            m["name"].as_str().unwrap(),
            m["plugin"].as_str().unwrap(),
            m["key"].as_str().unwrap(),
        );
        let t = m["window_end"].as_i64().unwrap();
        if let Some(v) = m["value"].as_f64() {
            want.insert((format!("{name}_value|{plugin}|{key}"), t), v);
        } else if let Some(vs) = m["values"].as_object() {
            for (field, v) in vs {
                want.insert(
                    (format!("{name}_{field}|{plugin}|{key}"), t),
                    v.as_f64().unwrap(),
                );
            }
        }
    }
    want
}

fn compare(want: &BTreeMap<(String, i64), f64>, got: &BTreeMap<(String, i64), Vec<f64>>) {
    let twice: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(twice.is_empty(), "points written twice: {twice:?}");
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} points missing, e.g. {missing:?}",
        want.keys().filter(|k| !got.contains_key(*k)).count(),
        want.len()
    );
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .take(5)
        .collect();
    assert!(extra.is_empty(), "points nobody emitted: {extra:?}");
    for (k, v) in want {
        let g = got[k][0];
        assert!(
            (g - v).abs() <= 1e-9 * v.abs().max(1.0),
            "{k:?}: wrote {g}, emitted {v}"
        );
    }
}

#[test]
fn metrics_land_in_the_time_series_database() {
    let tmp = tempfile::tempdir().unwrap();
    let vm = Vm::start(&tmp.path().join("vm"));
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 30_000, 5, 300);
    let plugins = plugins_dir(&[
        "page-views",
        "error-rate",
        "latency-percentiles",
        "conversion-rate",
    ]);
    let data = tmp.path().join("data");
    run_file(plugins.path(), &events, &data, &["--influx-url", &vm.url()]);
    let want = expected_points(&data.join("out.jsonl"));
    assert!(want.len() > 300, "only {} points", want.len());
    compare(&want, &vm.export());
}

#[test]
fn a_minute_long_outage_loses_nothing_and_health_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut vm = Vm::start(&tmp.path().join("vm"));
    let plugins = plugins_dir(&["page-views", "error-rate", "latency-percentiles"]);
    let data = tmp.path().join("data");
    let port = free_port();
    let mut host = HostCmd::new(plugins.path())
        .rate(400)
        .sim_start_ms(1_764_000_000_000)
        .no_watch()
        .checkpoint_interval("2s")
        .jsonl_sink(data.join("out.jsonl"))
        .influx_url(&vm.url())
        .listen(port)
        .data_dir(&data)
        .spawn();
    wait_ready(port);
    let health = |want: u16, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = http(port, "GET", "/health", &[], b"").unwrap();
            if code == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/health stayed {code}, wanted {want}: {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    std::thread::sleep(Duration::from_secs(10));
    health(200, Duration::from_secs(5));

    // /metrics is valid exposition and moves with the stream.
    let scrape = || http(port, "GET", "/metrics", &[], b"").unwrap().1;
    let text = scrape();
    let events_in = |t: &str| -> f64 {
        t.lines()
            .filter(|l| l.starts_with("rtap_events_in_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let first = events_in(&text);
    assert!(first > 0.0, "no rtap_events_in_total in:\n{text}");
    for name in [
        "rtap_e2e_latency_seconds_bucket",
        "rtap_plugin_call_duration_seconds_bucket",
        "rtap_sink_write_duration_seconds_bucket",
        "process_resident_memory_bytes",
        "rtap_checkpoints_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let file = tmp.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (Debian package prometheus)");
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The database goes away for a minute.
    vm.down();
    let down = health(503, Duration::from_secs(10));
    assert!(down.contains("influxdb"), "{down}");
    std::thread::sleep(Duration::from_secs(60));
    vm.up();
    health(200, Duration::from_secs(30));
    assert!(
        events_in(&scrape()) > first,
        "rtap_events_in_total did not move"
    );
    std::thread::sleep(Duration::from_secs(3));

    // Stop the host cleanly: it checkpoints and flushes what is left.
    sigterm(host.0.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "host did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let want = expected_points(&data.join("out.jsonl"));
    assert!(want.len() > 200, "only {} points", want.len());
    compare(&want, &vm.export());
    let spool = data.join("influx-spool");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool not drained"
    );
}
