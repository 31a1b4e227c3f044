//! A plugin that logs on every call (the `log` import, stdout, stderr) and
//! on every event keeps running over a million events: logging is rate
//! limited and never blocks or fails a call (before, `eprintln!` filled a
//! per-instance buffer after ~7 000 lines and the plugin trapped).

mod common;

use common::*;

#[test]
fn a_plugin_logging_on_every_call_keeps_running_for_a_million_events() {
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    write_events(&events, 1_000_000, 5, 20_000);
    let plugins = plugins_dir(&["chatty"]);
    let data = tmp.path().join("data");
    let out = HostCmd::file_job(plugins.path(), &events, &data)
        .args(["--batch-size", "256"])
        .env("RUST_LOG", "info")
        .run();
    let counted: f64 = read_json(&data.join("out.jsonl"))
        .iter()
        .filter(|m| m["plugin"] == "chatty")
        .map(|m| m["value"].as_f64().unwrap())
        .sum();
    let late = read_lines(&data.join("late-events.jsonl")).len() as f64;
    assert_eq!(
        counted + late,
        1_000_000.0,
        "every event counted once (or late)"
    );
    assert!(late < 10_000.0, "{late} late events");
    let dead = read_lines(&data.join("dead-letter.jsonl"));
    assert!(
        dead.is_empty(),
        "dead letters: {:?}",
        &dead[..dead.len().min(3)]
    );
    let log = String::from_utf8_lossy(&out.stderr);
    for line in [" events on top of ", "stdout: add ", "stderr: add "] {
        assert!(log.contains(line), "no `{line}` in the host's log");
    }
    let plugin_lines = log
        .lines()
        .filter(|l| l.contains("\"chatty\"") && l.contains("stream"))
        .count();
    assert!(
        plugin_lines < 100_000,
        "{plugin_lines} plugin lines: the rate limit did not hold"
    );
}
