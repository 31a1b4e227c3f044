//! Golden window-semantics cases: each folder under `tests/golden/` holds an
//! input, the plugins and flags to run, the expected metrics (hand-computed
//! with Flink's semantics, see each case's README) and the expected late
//! events. Each case runs once straight through, then split through a
//! checkpoint/restore of the file source: twice at a random point, and once
//! right before each expected late event, which is late only if the restart
//! resumed the watermark exactly.
//!
//! One worker must give the expected outputs in their order. Several
//! workers emit the outputs of different key groups side by side, so there
//! the order across windows is free, but each window's outputs (its firing,
//! then its late updates) and each alert must come in the expected order.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    assert!(v.len() >= 6, "golden cases missing");
    v
}

fn words(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn late_offsets(data: &Path) -> Vec<u64> {
    read_json(&data.join("late-events.jsonl"))
        .iter()
        .map(|v| v["offset"].as_u64().unwrap())
        .collect()
}

fn expected(case: &Path) -> (Vec<serde_json::Value>, Vec<u64>) {
    let late = std::fs::read_to_string(case.join("expected-late.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect();
    (read_json(&case.join("expected.jsonl")), late)
}

/// Each output's identity: a window (plugin, name, key, bounds) or an
/// alert's id.
fn identity(v: &serde_json::Value) -> String {
    match v["type"].as_str() {
        Some("alert") => format!("alert {}", v["id"]),
        _ => format!(
            "{} {} {} {} {}",
            v["plugin"], v["name"], v["key"], v["window_start"], v["window_end"]
        ),
    }
}

/// The outputs grouped by identity, each group in order.
fn per_window(v: &[serde_json::Value]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for x in v {
        m.entry(identity(x)).or_default().push(x.to_string());
    }
    m
}

/// Several workers: the same outputs, in the same order per window.
fn check_per_window(case: &Path, what: &str, got: Vec<serde_json::Value>, late: Vec<u64>) {
    let (want, want_late) = expected(case);
    let name = case.file_name().unwrap().to_string_lossy();
    assert_eq!(got.len(), want.len(), "{name} ({what}): number of outputs");
    assert_eq!(
        per_window(&got),
        per_window(&want),
        "{name} ({what}): outputs differ (per window)"
    );
    assert_eq!(
        late, want_late,
        "{name} ({what}): late events (line numbers) differ"
    );
}

fn check(case: &Path, what: &str, got: Vec<serde_json::Value>, late: Vec<u64>) {
    let (want, want_late) = expected(case);
    let name = case.file_name().unwrap().to_string_lossy();
    if got != want {
        let show = |v: &[serde_json::Value]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{name} ({what}): outputs differ\n--- expected\n{}\n--- got\n{}",
            show(&want),
            show(&got)
        );
    }
    assert_eq!(
        late, want_late,
        "{name} ({what}): late events (line numbers) differ"
    );
}

#[test]
fn golden_cases_straight_through() {
    for case in cases() {
        let names = words(&case.join("plugins"));
        let plugins = plugins_dir(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let args = words(&case.join("args"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The exchange on the wire: every record between the workers
        // encoded as for another host (`pipeline::wire`), the same outputs.
        for (workers, exchange) in [("1", "memory"), ("3", "memory"), ("3", "wire")] {
            let data = tempfile::tempdir().unwrap();
            let mut with = args.clone();
            with.extend(["--workers", workers, "--exchange", exchange]);
            run_file(
                plugins.path(),
                &case.join("input.jsonl"),
                data.path(),
                &with,
            );
            let got = read_json(&data.path().join("out.jsonl"));
            let late = late_offsets(data.path());
            if workers == "1" {
                check(&case, "straight, 1 worker", got, late);
            } else {
                let what = format!("straight, 3 workers, exchange in {exchange}");
                check_per_window(&case, &what, got, late);
            }
        }
    }
}

#[test]
fn golden_cases_through_a_checkpoint() {
    let mut rng = Rng::from_var("RTAP_GOLDEN_SEED");
    let seed = rng.seed;
    for case in cases() {
        let names = words(&case.join("plugins"));
        let plugins = plugins_dir(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let args = words(&case.join("args"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let input = case.join("input.jsonl");
        let lines = read_lines(&input).len() as u64;
        // Late events are numbered by line from 1: split after the line
        // before each.
        let before_late = expected(&case).1.into_iter().map(|line| line - 1);
        let splits: Vec<u64> = (0..2)
            .map(|_| rng.below(lines + 1))
            .chain(before_late)
            .collect();
        for (n, k) in splits.into_iter().enumerate() {
            // One worker, then three: the restart may use another number.
            let (before, after) = if n % 2 == 0 { ("1", "3") } else { ("3", "1") };
            let data = tempfile::tempdir().unwrap();
            let mut first = args.clone();
            let limit = format!("--max-events={k}");
            first.push(&limit);
            first.extend(["--workers", before]);
            run_file(plugins.path(), &input, data.path(), &first);
            assert!(
                data.path().join("state").join("CURRENT").is_file(),
                "no state store after --max-events"
            );
            let mut second = args.clone();
            second.extend(["--workers", after]);
            run_file(plugins.path(), &input, data.path(), &second);
            let what = format!(
                "split after line {k}, {before} then {after} workers, RTAP_GOLDEN_SEED={seed}"
            );
            check_per_window(
                &case,
                &what,
                read_json(&data.path().join("out.jsonl")),
                late_offsets(data.path()),
            );
        }
    }
}
