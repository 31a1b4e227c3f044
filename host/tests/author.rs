//! The plugin author's loop through the `rtap` command line, as an author
//! runs it: `rtap new` (a crate outside this repository) → `rtap test` →
//! `rtap build` → `rtap run` over the crate's sample → `rtap deploy` into a
//! running host → the new metric on `/ws` → `rtap logs` shows the plugin's
//! log line. Prints the time from `rtap new` to the live metric.
//!
//! The plugin crates build into one target folder kept under Cargo's
//! (`CARGO_TARGET_TMPDIR`), as `rtap` shares one per machine: the SDK's
//! dependencies compile once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "author-token";

fn rtap(args: &[&str]) -> Output {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rtap-plugins");
    Command::new(env!("CARGO_BIN_EXE_rtap"))
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .env("RTAP_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run rtap")
}

fn ok(args: &[&str]) -> String {
    let out = rtap(args);
    assert!(
        out.status.success(),
        "rtap {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The first `/ws` message of type `kind` from `plugin`, within `timeout`.
fn ws_first(port: u16, kind: &str, plugin: &str, timeout: Duration) -> Value {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?types={kind}"))
                .await
                .unwrap();
        let (_tx, mut rx) = ws.split();
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, rx.next()).await else {
                panic!("no {kind} of {plugin} on /ws within {timeout:?}");
            };
            let Ok(text) = msg.into_text() else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == kind && v["plugin"] == plugin {
                return v;
            }
        }
    })
}

#[test]
fn an_author_goes_from_rtap_new_to_a_live_metric() {
    let work = tempfile::tempdir().unwrap();
    let crate_dir = work.path().join("tick-count");
    let started = Instant::now();

    ok(&[
        "new",
        "tick-count",
        "--kind",
        "aggregator",
        "--path",
        path(work.path()),
    ]);
    assert!(crate_dir.join("sample/events.jsonl").is_file());
    assert!(crate_dir.join("README.md").is_file());
    let cargo_toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(!cargo_toml.contains("workspace = true"), "{cargo_toml}");

    let tests = ok(&["test", path(&crate_dir)]);
    assert!(tests.contains("2 passed"), "{tests}");

    let built = ok(&["build", path(&crate_dir)]);
    let wasm = built.lines().last().unwrap().to_string();
    assert!(
        wasm.ends_with("tick_count.wasm") && Path::new(&wasm).is_file(),
        "{built}"
    );
    assert!(built.contains("tick-count 0.1.0"), "{built}");
    assert!(built.contains("smoke test: 60 events"), "{built}");

    // The plugin alone over the sample: metrics, the same every time.
    let sample = crate_dir.join("sample/events.jsonl");
    let run = ok(&["run", &wasm, "--input", path(&sample)]);
    let metrics: Vec<Value> = run
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        metrics
            .iter()
            .any(|m| m["type"] == "metric" && m["plugin"] == "tick-count" && m["name"] == "events"),
        "{run}"
    );
    let total: f64 = metrics
        .iter()
        .filter(|m| m["name"] == "events")
        .map(|m| m["value"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 60.0, "every sample event counted once:\n{run}");
    assert_eq!(
        ok(&["run", &wasm, "--input", path(&sample)]),
        run,
        "a replay"
    );

    // Deploy into a running host, see the metric live, read its log.
    let plugins = plugins_dir(&["page-views"]);
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _host = HostCmd::new(plugins.path())
        .jsonl_sink("/dev/null")
        .listen(port)
        .data_dir(data.path())
        .rate(2000)
        .no_watch()
        .admin_token(TOKEN)
        .spawn();
    wait_ready(port);
    let url = format!("http://127.0.0.1:{port}");
    let deployed = ok(&["deploy", &wasm, "--url", &url]);
    assert!(deployed.contains("tick-count: new plugin"), "{deployed}");
    assert!(deployed.contains("smoke test:"), "{deployed}");
    let m = ws_first(port, "metric", "tick-count", Duration::from_secs(30));
    let live = started.elapsed();
    assert!(m["name"] == "events" || m["name"] == "value_sum", "{m}");
    eprintln!(
        "AUTHOR-LOOP rtap new → live metric on /ws: {:.1} s",
        live.as_secs_f64()
    );

    // Its log lines are on `/ws` too, as `{"type":"log",…}`.
    let line = ws_first(port, "log", "tick-count", Duration::from_secs(30));
    assert_eq!(line["stream"], "log", "{line}");
    assert_eq!(line["level"], "info", "{line}");
    assert!(
        line["message"].as_str().unwrap().contains(" events"),
        "{line}"
    );

    let listed = ok(&["plugins", "--url", &url]);
    assert!(listed.contains("tick-count"), "{listed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = ok(&["logs", "tick-count", "--url", &url]);
        if logs.contains("window ") && logs.contains("events") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of tick-count: {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A config the plugin refuses, through the command line.
    let out = rtap(&["config", "tick-count", r#"{"x": 1}"#, "--url", &url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{out:?}"
    );

    // A second opinion before a change: a build as a shadow, compared with
    // the live version window by window, then promoted.
    let shadowed = ok(&["deploy", &wasm, "--shadow", "--url", &url]);
    assert!(shadowed.contains("runs as a shadow of"), "{shadowed}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = ok(&["shadow", "tick-count", "--url", &url]);
        assert!(report.contains(" 0 different"), "{report}");
        if !report.contains(" 0 compared") {
            break;
        }
        assert!(Instant::now() < deadline, "nothing compared: {report}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let promoted = ok(&["shadow", "tick-count", "--promote", "--url", &url]);
    assert!(promoted.contains("is live"), "{promoted}");
    let out = rtap(&["shadow", "tick-count", "--url", &url]);
    assert!(!out.status.success(), "no shadow after the promotion");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no shadow version"),
        "{out:?}"
    );

    // The next version: what changes, the swap, and back.
    let lib = crate_dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&lib).unwrap();
    assert!(code.contains("\"0.1.0\""), "the scaffold's version");
    std::fs::write(&lib, code.replace("\"0.1.0\"", "\"0.2.0\"")).unwrap();
    let built = ok(&["build", path(&crate_dir)]);
    let v2 = built.lines().last().unwrap().to_string();
    let deployed = ok(&["deploy", &v2, "--url", &url]);
    assert!(deployed.contains("→ version: 0.1.0 → 0.2.0"), "{deployed}");
    assert!(
        deployed.contains("state schema: 1 (unchanged)"),
        "{deployed}"
    );
    assert!(deployed.contains("state kept"), "{deployed}");
    let back = ok(&["rollback", "tick-count", "--url", &url]);
    assert!(
        back.contains("tick-count: 0.2.0 → 0.1.0 (state kept)"),
        "{back}"
    );

    // `rtap logs --follow` prints what is kept, then the lines that come.
    let kept = ok(&["logs", "tick-count", "--url", &url]).lines().count();
    let mut follow = Command::new(env!("CARGO_BIN_EXE_rtap"))
        .args(["logs", "tick-count", "--follow", "--url", &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            if tx.send(l.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut seen = 0;
    while seen < kept + 2 {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("rtap logs --follow: {seen} lines, {kept} were kept before")
            });
        assert!(l.contains(" events"), "{l}");
        seen += 1;
    }
    assert!(
        follow.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    follow.kill().unwrap();
    let _ = follow.wait();
}

#[test]
fn rtap_build_names_the_fix_for_a_crate_that_builds_no_component() {
    let work = tempfile::tempdir().unwrap();
    ok(&[
        "new",
        "my-rule",
        "--kind",
        "detector",
        "--path",
        path(work.path()),
    ]);
    let dir = work.path().join("my-rule");
    let tests = ok(&["test", path(&dir)]);
    assert!(tests.contains("2 passed"), "{tests}");
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            r#"crate-type = ["cdylib", "rlib"]"#,
            r#"crate-type = ["rlib"]"#,
        ),
    )
    .unwrap();
    let out = rtap(&["build", path(&dir)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"crate-type = ["cdylib", "rlib"]"#), "{err}");
    // A core module (what wasm32-wasip1 builds) is named as such.
    let core = work.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = rtap(&["run", path(&core), "--input", "-"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("core Wasm module") && err.contains("wasm32-wasip2"),
        "{err}"
    );
}
