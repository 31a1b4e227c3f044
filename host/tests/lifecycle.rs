//! The live plugin lifecycle over real HTTP against the running host: auth,
//! limits, upload, list, config change, rollback, delete, refused versions,
//! state migration; a swap under load that must not change a single output;
//! and the plugins-folder watch.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token";

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(test_plugins().join(format!("{name}.wasm"))).unwrap()
}

fn auth() -> [(&'static str, &'static str); 1] {
    [("Authorization", "Bearer test-admin-token")]
}

fn put(port: u16, name: &str, query: &str, body: &[u8]) -> (u16, Value) {
    let (code, text) = http(
        port,
        "PUT",
        &format!("/api/plugins/{name}{query}"),
        &auth(),
        body,
    )
    .expect("PUT answered");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn list(port: u16) -> Vec<Value> {
    let (code, body) = http(port, "GET", "/api/plugins", &[], b"").unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn plugin(port: u16, name: &str) -> Option<Value> {
    list(port).into_iter().find(|p| p["name"] == name)
}

fn start_host(plugins: &Path, data: &Path, port: u16, extra: &[&str]) -> Running {
    HostCmd::new(plugins)
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data)
        .args(extra)
        .admin_token(TOKEN)
        .spawn()
}

#[test]
fn plugin_api_end_to_end() {
    let plugins = plugins_dir(&["page-views", "bot-burst", "error-rate"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = start_host(
        plugins.path(),
        data.path(),
        port,
        &["--rate", "3000", "--no-watch"],
    );
    wait_ready(port);
    let v2 = wasm("page-views-v2");

    // Auth, limits, garbage.
    let (code, _) = http(port, "PUT", "/api/plugins/page-views", &[], &v2).unwrap();
    assert_eq!(code, 401);
    let (code, _) = http(
        port,
        "PUT",
        "/api/plugins/page-views",
        &[("Authorization", "Bearer nope")],
        &v2,
    )
    .unwrap();
    assert_eq!(code, 403);
    let (code, _) = http(
        port,
        "PUT",
        "/api/plugins/page-views",
        &auth(),
        &vec![0u8; 17 << 20],
    )
    .unwrap();
    assert_eq!(code, 413);
    let (code, body) = put(port, "page-views", "", b"garbage, not wasm");
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly file"),
        "{body}"
    );
    let (code, body) = put(port, "page-views", "", b"\0asm\x01\0\0\0");
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("core Wasm module"),
        "{body}"
    );
    let (code, body) = put(port, "bot-burst", "", &v2);
    assert_eq!(
        code, 400,
        "a component must be uploaded under its own name: {body}"
    );

    // Upload a new build: swapped, listed, previous kept.
    let (code, body) = put(port, "page-views", "", &v2);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["from_version"], "1.1.0");
    assert_eq!(body["to_version"], "1.1.1");
    assert_eq!(body["state_reset"], false);
    let pv = plugin(port, "page-views").unwrap();
    assert_eq!(pv["version"], "1.1.1");
    assert_eq!(pv["previous"]["version"], "1.1.0");
    assert_eq!(pv["status"], "running");
    assert_eq!(
        std::fs::read(plugins.path().join("page-views.wasm")).unwrap(),
        v2,
        "the folder holds what runs"
    );

    // Refused versions leave the running one alone.
    let (code, body) = put(port, "page-views", "", &wasm("page-views-bad-init"));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("init always traps"),
        "{body}"
    );
    let (code, body) = put(port, "page-views", "", &wasm("page-views-slow-migrate"));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    let (code, body) = put(port, "page-views", "", &wasm("page-views-v4"));
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("state=reset"),
        "{body}"
    );
    assert_eq!(plugin(port, "page-views").unwrap()["version"], "1.1.1");

    // Rollback, then a version that migrates its state.
    let (code, body) = http(
        port,
        "POST",
        "/api/plugins/page-views/rollback",
        &auth(),
        b"",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(plugin(port, "page-views").unwrap()["version"], "1.1.0");
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = put(port, "page-views", "", &wasm("page-views-v3"));
    assert_eq!(code, 200, "{body}");
    assert!(body["states_migrated"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(plugin(port, "page-views").unwrap()["state_schema"], 2);
    // No migration from schema 2: refused, then accepted with a reset.
    let (code, _) = put(port, "page-views", "", &wasm("page-views-v4"));
    assert_eq!(code, 409);
    let (code, body) = put(port, "page-views", "?state=reset", &wasm("page-views-v4"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state_reset"], true);

    // Config change keeps code and state.
    let (code, body) = http(
        port,
        "PATCH",
        "/api/plugins/bot-burst/config",
        &auth(),
        br#"{"min_page_views": 5, "within_ms": 10000}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        plugin(port, "bot-burst").unwrap()["config"]["min_page_views"],
        5
    );
    // A config change keeps the code: nothing to roll back to, and the list says so.
    assert!(plugin(port, "bot-burst").unwrap()["previous"].is_null());
    let (code, body) = http(
        port,
        "PATCH",
        "/api/plugins/bot-burst/config",
        &auth(),
        br#"{"min_page_views": "lots"}"#,
    )
    .unwrap();
    assert_eq!(code, 422, "{body}");
    let (code, _) = http(
        port,
        "PATCH",
        "/api/plugins/bot-burst/config",
        &auth(),
        b"{not json",
    )
    .unwrap();
    assert_eq!(code, 400);

    // Add a brand-new plugin, delete one.
    let (code, body) = put(port, "golden-tumbling", "", &wasm("golden-tumbling"));
    assert_eq!(code, 200, "{body}");
    assert!(plugin(port, "golden-tumbling").is_some());
    let (code, _) = http(port, "DELETE", "/api/plugins/error-rate", &auth(), b"").unwrap();
    assert_eq!(code, 200);
    assert!(plugin(port, "error-rate").is_none());
    assert!(!plugins.path().join("error-rate.wasm").exists());
    let (code, _) = http(port, "DELETE", "/api/plugins/error-rate", &auth(), b"").unwrap();
    assert_eq!(code, 404);
    let (code, _) = http(
        port,
        "POST",
        "/api/plugins/golden-tumbling/rollback",
        &auth(),
        b"",
    )
    .unwrap();
    assert_eq!(code, 409, "nothing to roll back to");

    // The pipeline kept running throughout.
    let (code, health) = http(port, "GET", "/health", &[], b"").unwrap();
    assert_eq!(code, 200, "{health}");
    let before = plugin(port, "page-views").unwrap()["counters"]["events_in"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let after = plugin(port, "page-views").unwrap()["counters"]["events_in"]
        .as_u64()
        .unwrap();
    assert!(
        after > before,
        "page-views stopped counting ({before} → {after})"
    );
}

/// Sorted output lines of these plugins.
fn outputs_of(path: &Path, plugins: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = read_lines(path)
        .into_iter()
        .filter(|l| {
            let j: Value = serde_json::from_str(l).unwrap();
            plugins.contains(&j["plugin"].as_str().unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn swap_under_load_changes_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 1_000_000, 11, 20_000);
    let lines = read_lines(&events);
    assert_eq!(lines.len(), 1_000_000);
    let names = ["page-views", "bot-burst"];

    // Reference: no swap, one worker, the file as one partition (as stdin
    // is: the watermark, and so which events are late, follows one
    // partition's events).
    let reference = tmp.path().join("reference");
    let plugins = plugins_dir(&names);
    let one = ["--workers", "1", "--file-split-size", "1GiB"];
    run_file(plugins.path(), &events, &reference, &one);
    let expected = outputs_of(&reference.join("out.jsonl"), &names);
    assert!(expected.len() > 100, "{} reference outputs", expected.len());

    // Same input through stdin in 10 chunks, swapping both plugins between
    // two builds after every chunk (20 swaps under a steady stream), with
    // two workers: each swap is a barrier on both.
    let plugins = plugins_dir(&names);
    let data = tmp.path().join("swapped");
    let port = free_port();
    let (mut host, mut stdin) = HostCmd::new(plugins.path())
        .no_watch()
        .jsonl_sink(data.join("out.jsonl"))
        .listen(port)
        .data_dir(&data)
        .admin_token(TOKEN)
        .args(["--workers", "2"])
        .spawn_fed();
    wait_ready(port);
    let builds = [
        ("page-views", ["page-views-v2", "page-views"]),
        ("bot-burst", ["bot-burst-v2", "bot-burst"]),
    ];
    let mut stalls = Vec::new();
    let mut compiles = Vec::new();
    let mut switches = Vec::new();
    for (chunk_no, chunk) in lines.chunks(100_000).enumerate() {
        feed_lines(&mut stdin, chunk);
        // Wait until the pipeline has taken the whole chunk: the swap then
        // lands on a known event boundary.
        let want = (chunk_no as u64 + 1) * 100_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = http(port, "GET", "/api/pipeline", &[], b"").unwrap();
            let p: Value = serde_json::from_str(&body).unwrap();
            if p["events_in"].as_u64().unwrap() >= want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stuck at {} events",
                p["events_in"]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, pair) in &builds {
            let (code, body) = put(port, name, "", &wasm(pair[chunk_no % 2]));
            assert_eq!(code, 200, "swap {chunk_no} of {name}: {body}");
            assert_eq!(body["state_reset"], false);
            stalls.push(body["stall_us"].as_u64().unwrap());
            compiles.push(body["compile_ms"].as_f64().unwrap());
            switches.push(body["load_to_switch_ms"].as_f64().unwrap());
        }
    }
    drop(stdin);
    let status = host.0.wait().unwrap();
    assert!(status.success(), "host exit {status}");
    let got = outputs_of(&data.join("out.jsonl"), &names);
    assert_eq!(
        got.len(),
        expected.len(),
        "output count differs after 20 swaps"
    );
    assert!(got == expected, "outputs differ after swaps");

    stalls.sort_unstable();
    compiles.sort_by(f64::total_cmp);
    switches.sort_by(f64::total_cmp);
    eprintln!(
        "SWAP-BENCH swaps={} stall_us median={} worst={} compile_ms median={:.1} worst={:.1} load_to_switch_ms median={:.1} worst={:.1}",
        stalls.len(),
        stalls[stalls.len() / 2],
        stalls[stalls.len() - 1],
        compiles[compiles.len() / 2],
        compiles[compiles.len() - 1],
        switches[switches.len() / 2],
        switches[switches.len() - 1]
    );
}

#[test]
fn the_api_s_changes_survive_a_restart() {
    let plugins = plugins_dir(&["page-views", "bot-burst"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut host = start_host(
        plugins.path(),
        data.path(),
        port,
        &["--rate", "2000", "--no-watch"],
    );
    wait_ready(port);
    let (code, body) = http(
        port,
        "PATCH",
        "/api/plugins/bot-burst/config",
        &auth(),
        br#"{"min_page_views": 7, "within_ms": 10000}"#,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = put(port, "page-views", "", &wasm("page-views-v2"));
    assert_eq!(code, 200, "{body}");
    sigterm(host.0.id());
    assert!(host.0.wait().unwrap().success());

    // The same folders again: the config the API set, the swapped-in
    // version, and the version a rollback goes back to.
    let port = free_port();
    let _host = start_host(
        plugins.path(),
        data.path(),
        port,
        &["--rate", "2000", "--no-watch"],
    );
    wait_ready(port);
    let bb = plugin(port, "bot-burst").unwrap();
    assert_eq!(bb["config"]["min_page_views"], 7, "{bb}");
    let pv = plugin(port, "page-views").unwrap();
    assert_eq!(pv["version"], "1.1.1", "{pv}");
    assert_eq!(pv["previous"]["version"], "1.1.0", "{pv}");
    let (code, body) = http(
        port,
        "POST",
        "/api/plugins/page-views/rollback",
        &auth(),
        b"",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let pv = plugin(port, "page-views").unwrap();
    assert_eq!(pv["version"], "1.1.0", "{pv}");
    assert_eq!(pv["previous"]["version"], "1.1.1", "{pv}");

    // A removed plugin leaves nothing behind in the plugins folder.
    let (code, _) = http(port, "DELETE", "/api/plugins/page-views", &auth(), b"").unwrap();
    assert_eq!(code, 200);
    let left: Vec<String> = std::fs::read_dir(plugins.path().join(".rtap"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.iter().all(|f| f.starts_with("bot-burst.")), "{left:?}");
}

#[test]
fn folder_watch_picks_up_a_new_build_once() {
    let plugins = plugins_dir(&["page-views", "error-rate"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = data.path().join("host.log");
    let _host = Running(
        HostCmd::new(plugins.path())
            .jsonl_sink("/dev/null")
            .rate(2000)
            .watch_interval("100ms")
            .listen(port)
            .data_dir(data.path())
            .admin_token(TOKEN)
            .env("RUST_LOG", "info")
            .command()
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ready(port);
    // Copy a new build over the old file (not atomically, like `cp`).
    std::fs::copy(
        test_plugins().join("page-views-v2.wasm"),
        plugins.path().join("page-views.wasm"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while plugin(port, "page-views").unwrap()["version"] != "1.1.1" {
        assert!(Instant::now() < deadline, "the new build was not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A removed file removes its plugin.
    std::fs::remove_file(plugins.path().join("error-rate.wasm")).unwrap();
    while plugin(port, "error-rate").is_some() {
        assert!(
            Instant::now() < deadline,
            "the removed plugin is still running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("plugins folder: change applied").count(),
        1,
        "picked up more than once:\n{text}"
    );
    assert_eq!(
        plugin(port, "page-views").unwrap()["previous"]["version"],
        "1.1.0"
    );
}
