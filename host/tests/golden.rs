//! Golden window-semantics cases: each folder under `tests/golden/` holds an
//! input, the plugins and flags to run, the expected metrics (hand-computed
//! with Flink's semantics, see each case's README) and the expected late
//! events. Each case runs once straight through, then split through a
//! checkpoint/restore of the file source: twice at a random point, and once
//! right before each expected late event, which is late only if the restart
//! resumed the watermark exactly.

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
        let data = tempfile::tempdir().unwrap();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_file(
            plugins.path(),
            &case.join("input.jsonl"),
            data.path(),
            &args,
        );
        check(
            &case,
            "straight",
            read_json(&data.path().join("out.jsonl")),
            late_offsets(data.path()),
        );
    }
}

#[test]
fn golden_cases_through_a_checkpoint() {
    let seed: u64 = std::env::var("RTAP_GOLDEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
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
        let splits: Vec<u64> = (0..2).map(|_| next(lines + 1)).chain(before_late).collect();
        for k in splits {
            let data = tempfile::tempdir().unwrap();
            let mut first = args.clone();
            let limit = format!("--max-events={k}");
            first.push(&limit);
            run_file(plugins.path(), &input, data.path(), &first);
            assert!(
                data.path().join("state").join("CURRENT").is_file(),
                "no state store after --max-events"
            );
            run_file(plugins.path(), &input, data.path(), &args);
            let what = format!("split after line {k}, RTAP_GOLDEN_SEED={seed}");
            check(
                &case,
                &what,
                read_json(&data.path().join("out.jsonl")),
                late_offsets(data.path()),
            );
        }
    }
}
