//! Shadow versions over real HTTP against the running host (two workers,
//! events through stdin in chunks): identical builds report no difference
//! over ≥ 100 000 events; a build with one deliberate change reports exactly
//! the windows it changes; nothing a shadow computes reaches the outputs;
//! promoting one continues every window without a gap or a duplicate; a
//! discarded one leaves the live version alone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token";
const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer test-admin-token")];

fn call(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (code, text) = http(port, method, path, &AUTH, body).expect("answered");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(test_plugins().join(format!("{name}.wasm"))).unwrap()
}

fn report(port: u16, name: &str) -> Value {
    let (code, r) = call(
        port,
        "GET",
        &format!("/api/plugins/{name}/shadow?limit=1000"),
        b"",
    );
    assert_eq!(code, 200, "shadow report of {name}: {r}");
    r
}

/// A metric's window: (name, key, window start, window end).
type WindowId = (String, String, i64, i64);
/// A plugin's metric outputs by window, their values in the order written.
type Windows = BTreeMap<WindowId, Vec<f64>>;

fn metrics_of(lines: &[Value], plugin: &str) -> Vec<(WindowId, f64)> {
    lines
        .iter()
        .filter(|l| l["type"] == "metric" && l["plugin"] == plugin)
        .map(|l| {
            (
                (
                    l["name"].as_str().unwrap().to_string(),
                    l["key"].as_str().unwrap().to_string(),
                    l["window_start"].as_i64().unwrap(),
                    l["window_end"].as_i64().unwrap(),
                ),
                l["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn windows(ms: &[(WindowId, f64)]) -> Windows {
    let mut w = Windows::new();
    for (k, v) in ms {
        w.entry(k.clone()).or_default().push(*v);
    }
    w
}

/// A plugin's output lines, sorted (for an exact comparison).
fn lines_of(path: &Path, plugin: &str) -> Vec<String> {
    let mut v: Vec<String> = read_lines(path)
        .into_iter()
        .filter(|l| {
            let j: Value = serde_json::from_str(l).unwrap();
            j["plugin"] == plugin && j["type"] != "plugin"
        })
        .collect();
    v.sort();
    v
}

fn wait_events(port: u16, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = call(port, "GET", "/api/pipeline", b"");
        if p["events_in"].as_u64().unwrap() >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {} events",
            p["events_in"]
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Its outputs, in its data dir.
const OUT: &str = "out.jsonl";

/// A host on two workers reading events from the pipe returned, its
/// outputs in `data`/[`OUT`].
fn shadowed_host(plugins: &Path, data: &Path, port: u16) -> (Running, std::process::ChildStdin) {
    HostCmd::new(plugins)
        .no_watch()
        .jsonl_sink(data.join(OUT))
        .listen(port)
        .data_dir(data)
        .admin_token(TOKEN)
        .args(["--workers", "2"])
        .spawn_fed()
}

#[test]
fn shadows_compare_per_window_and_promote_without_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    // 1 000 events per second of event time: 300 s, 60 windows of 5 s.
    write_events(&events, 300_000, 29, 1_000);
    let lines = read_lines(&events);
    let names = ["page-views", "error-rate", "error-rate-spike", "bot-burst"];

    // Reference: no shadow, one worker, the file as one partition.
    let reference = tmp.path().join("reference");
    let plugins = plugins_dir(&names);
    run_file(
        plugins.path(),
        &events,
        &reference,
        &["--workers", "1", "--file-split-size", "1GiB"],
    );
    let ref_out = reference.join("out.jsonl");

    let plugins = plugins_dir(&names);
    let data = tmp.path().join("shadowed");
    let out = data.join(OUT);
    let port = free_port();
    let (mut host, mut stdin) = shadowed_host(plugins.path(), &data, port);
    wait_ready(port);

    // Refusals name what is wrong.
    let (code, r) = call(
        port,
        "PUT",
        "/api/plugins/page-views?mode=sideways",
        &wasm("page-views"),
    );
    assert_eq!(code, 400, "{r}");
    assert!(r["error"].as_str().unwrap().contains("mode"), "{r}");
    let (code, r) = call(port, "GET", "/api/plugins/page-views/shadow", b"");
    assert_eq!(code, 404, "{r}");
    assert!(r["error"].as_str().unwrap().contains("no shadow"), "{r}");
    let (code, r) = call(
        port,
        "PUT",
        "/api/plugins/active-users?mode=shadow",
        &wasm("active-users"),
    );
    assert_eq!(code, 404, "a shadow needs a live version: {r}");
    let (code, r) = call(
        port,
        "PUT",
        "/api/plugins/page-views?mode=shadow",
        &wasm("page-views-v4"),
    );
    assert_eq!(code, 200, "a state it cannot read: starts empty: {r}");
    assert!(r["state"].as_str().unwrap().starts_with("empty"), "{r}");

    // The shadows, before the first event: a deliberately changed
    // page-views (replacing the one above), identical builds of the others.
    let (code, r) = call(
        port,
        "PUT",
        "/api/plugins/page-views?mode=shadow",
        &wasm("page-views-shadow-diff"),
    );
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["shadow"]["version"], "1.2.0-diff");
    assert!(r["state"].as_str().unwrap().contains("copy"), "{r}");
    for n in &names[1..] {
        let (code, r) = call(
            port,
            "PUT",
            &format!("/api/plugins/{n}?mode=shadow"),
            &wasm(n),
        );
        assert_eq!(code, 200, "{n}: {r}");
    }
    let (_, list) = call(port, "GET", "/api/plugins", b"");
    let pv = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page-views")
        .unwrap()
        .clone();
    assert_eq!(pv["version"], "1.1.0", "the live version runs on");
    assert_eq!(pv["shadow"]["version"], "1.2.0-diff", "{pv}");

    let mut fed = 0u64;
    let mut feed = |stdin: &mut std::process::ChildStdin, chunk: &[String]| {
        feed_lines(stdin, chunk);
        fed += chunk.len() as u64;
        wait_events(port, fed);
    };
    feed(&mut stdin, &lines[..200_000]);

    // Identical builds: nothing differs.
    for n in &names[1..] {
        let r = report(port, n);
        assert!(r["events"].as_u64().unwrap() >= 100_000, "{n}: {r}");
        assert_eq!(r["different"], 0, "{n}: {r}");
        assert_eq!(r["equal"], r["compared"], "{n}: {r}");
        assert_eq!(r["failed_inputs"], 0, "{n}: {r}");
    }
    let er = report(port, "error-rate");
    assert!(
        er["compared"].as_u64().unwrap() >= 30,
        "error-rate windows compared: {er}"
    );

    // The changed build: promoted mid-stream. Its report at the barrier is
    // the comparison of everything live emitted until then.
    let (code, promoted) = call(port, "POST", "/api/plugins/page-views/shadow/promote", b"");
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["to_version"], "1.2.0-diff");
    let pr = &promoted["report"];
    assert_eq!(pr["only_live"], 0, "{pr}");
    assert_eq!(pr["only_shadow"], 0, "{pr}");
    let compared = pr["compared"].as_u64().unwrap() as usize;
    assert!(compared >= 200, "page-views windows compared: {pr}");
    let diffs = pr["first_differences"].as_array().unwrap();
    assert_eq!(diffs.len() as u64, pr["different"].as_u64().unwrap());
    for d in diffs {
        assert_eq!(
            d["window_start"].as_i64().unwrap() % 20_000,
            0,
            "only windows starting on a 20 s boundary differ: {d}"
        );
        assert_eq!(
            d["shadow"].as_f64().unwrap(),
            d["live"].as_f64().unwrap() + 1000.0,
            "{d}"
        );
    }
    eprintln!(
        "SHADOW page-views 1.2.0-diff: events={} compared={} different={}; error-rate: compared={} different={}",
        pr["events"], pr["compared"], pr["different"], er["compared"], er["different"]
    );
    let (code, _) = call(port, "GET", "/api/plugins/page-views/shadow", b"");
    assert_eq!(code, 404, "a promoted shadow is no longer a shadow");
    // The same counts on /metrics.
    let (_, text) = http(port, "GET", "/metrics", &[], b"").unwrap();
    let count = |result: &str| -> u64 {
        let prefix =
            format!("rtap_shadow_compared_total{{plugin=\"page-views\",result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
            .parse()
            .unwrap()
    };
    assert_eq!(count("different"), pr["different"].as_u64().unwrap());
    assert_eq!(count("equal"), pr["equal"].as_u64().unwrap());

    feed(&mut stdin, &lines[200_000..250_000]);
    // A discarded shadow's last report, and the live version untouched.
    let (code, d) = call(port, "DELETE", "/api/plugins/error-rate/shadow", b"");
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["report"]["different"], 0, "{d}");
    assert!(d["report"]["events"].as_u64().unwrap() >= 250_000, "{d}");
    feed(&mut stdin, &lines[250_000..]);
    for n in ["error-rate-spike", "bot-burst"] {
        let r = report(port, n);
        eprintln!(
            "SHADOW {n} (identical build): events={} compared={} different={}",
            r["events"], r["compared"], r["different"]
        );
        assert_eq!(r["different"], 0, "{n}: {r}");
        assert!(r["events"].as_u64().unwrap() >= 300_000, "{n}: {r}");
    }
    drop(stdin);
    let status = host.0.wait().unwrap();
    assert!(status.success(), "host exit {status}");

    // Nothing a shadow computed reached the outputs: the plugins whose
    // shadows were identical wrote exactly the reference.
    for n in &names[1..] {
        let got = lines_of(&out, n);
        assert!(!got.is_empty() || *n == "bot-burst", "{n} wrote nothing");
        assert!(
            got == lines_of(&ref_out, n),
            "{n}: outputs differ from the reference"
        );
    }
    // page-views: every window of the reference exactly once (no gap, no
    // duplicate); the live version's values up to the promotion, the
    // promoted version's after.
    let written = metrics_of(&read_json(&out), "page-views");
    let expected = metrics_of(&read_json(&ref_out), "page-views");
    assert_eq!(written.len(), expected.len(), "page-views outputs");
    let want = windows(&expected);
    let got = windows(&written);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same windows"
    );
    let boundary = |k: &WindowId| k.2 % 20_000 == 0;
    // The first `compared` outputs were compared: exactly their boundary
    // windows were reported.
    let changed_before = written[..compared]
        .iter()
        .filter(|(k, _)| boundary(k))
        .count();
    assert!(changed_before > 0);
    assert_eq!(pr["different"].as_u64().unwrap() as usize, changed_before);
    let reference_value: BTreeMap<_, _> = expected.iter().cloned().collect();
    for (i, (k, v)) in written.iter().enumerate() {
        let r = reference_value[k];
        let promoted_yet = i >= compared;
        let want = if promoted_yet && boundary(k) {
            r + 1000.0
        } else {
            r
        };
        assert_eq!(*v, want, "output {i} {k:?} (promoted: {promoted_yet})");
    }
    assert!(
        written[compared..].iter().any(|(k, _)| boundary(k)),
        "the promoted version emitted changed windows"
    );
}

#[test]
fn a_failing_shadow_is_reported_and_touches_nothing_live() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 60_000, 31, 1_000);
    let lines = read_lines(&events);
    let names = ["page-views"];
    let reference = tmp.path().join("reference");
    let plugins = plugins_dir(&names);
    run_file(
        plugins.path(),
        &events,
        &reference,
        &["--workers", "1", "--file-split-size", "1GiB"],
    );

    let plugins = plugins_dir(&names);
    let data = tmp.path().join("shadowed");
    let out = data.join(OUT);
    let port = free_port();
    let (mut host, mut stdin) = shadowed_host(plugins.path(), &data, port);
    wait_ready(port);
    // Before any event, so the smoke test has no recent events to refuse
    // it on: this build panics on every event it is given.
    let (code, r) = call(
        port,
        "PUT",
        "/api/plugins/page-views?mode=shadow",
        &wasm("page-views-trap"),
    );
    assert_eq!(code, 200, "{r}");
    feed_lines(&mut stdin, &lines);
    wait_events(port, lines.len() as u64);
    let r = report(port, "page-views");
    assert!(r["failed_inputs"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["status"], "degraded", "{r}");
    let failure = r["failures"][0]["detail"].as_str().unwrap_or("");
    assert!(failure.contains("cannot count"), "the plugin's panic: {r}");
    assert!(
        r["health"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "degraded"),
        "{r}"
    );
    assert!(r["only_live"].as_u64().unwrap() > 0, "{r}");
    // The live version runs as before.
    let (_, list) = call(port, "GET", "/api/plugins", b"");
    let pv = &list.as_array().unwrap()[0];
    assert_eq!(pv["status"], "running", "{pv}");
    assert_eq!(pv["counters"]["dead_lettered"], 0, "{pv}");
    drop(stdin);
    let status = host.0.wait().unwrap();
    assert!(status.success(), "host exit {status}");
    assert!(
        lines_of(&out, "page-views") == lines_of(&reference.join("out.jsonl"), "page-views"),
        "the live outputs differ from a run without the shadow"
    );
    let dead = read_lines(&data.join("dead-letter.jsonl"));
    assert!(
        dead.is_empty(),
        "the shadow's failures reached the dead letters: {}",
        dead[0]
    );
}
