//! When the watermark jumps (a traffic drop, an idle partition, the end of
//! the input), every key's timers and windows come due at once, and the host
//! must deliver them without breaking a plugin's per-call limits (100 000
//! alerts, timers or metrics per call) or losing anything.

mod common;

use common::*;

const USERS: u64 = 120_000;
const T0: u64 = 1_700_000_000_000;

/// Run `plugins` over `lines` (JSONL) to the end; panics if anything was
/// dead-lettered or a plugin call failed. Returns the data folder.
fn run_clean(plugins: &[&str], lines: impl Iterator<Item = String>) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let input = data.path().join("in.jsonl");
    let text: String = lines.map(|l| l + "\n").collect();
    std::fs::write(&input, text).unwrap();
    let plugins = plugins_dir(plugins);
    let out = run_file(plugins.path(), &input, data.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dead = read_lines(&data.path().join("dead-letter.jsonl"));
    assert!(
        dead.is_empty(),
        "{} dead letters, the first: {}\n{stderr}",
        dead.len(),
        dead[0]
    );
    assert!(
        !stderr.contains("plugin call failed") && !stderr.contains("degraded"),
        "{stderr}"
    );
    data
}

/// One event per user `u0`, `u1`, … (with the `extra` fields) in T0's first
/// 100 ms, then one of user `last` 10 s later: the watermark (2 s out of
/// orderness) jumps 8 s, past every user's 1 s window, 3 s session gap and
/// 1 s timer.
fn users_then_jump(n: u64, extra: &'static str) -> impl Iterator<Item = String> {
    (0..n)
        .map(|u| (format!("u{u}"), T0 + u % 100))
        .chain([("last".to_string(), T0 + 10_000)])
        .map(move |(user, ts)| format!("{{\"user_id\":\"{user}\"{extra},\"timestamp\":{ts}}}"))
}

/// The users of [`users_then_jump`], sorted.
fn every_user(n: u64) -> Vec<String> {
    let mut all: Vec<String> = (0..n).map(|u| format!("u{u}")).collect();
    all.push("last".into());
    all.sort();
    all
}

/// 120 000 users view a page twice, 5 s apart; `bot-burst` sets each user a
/// timer 10 s after the first view, which evicts it and re-arms for the
/// second. Then the event time jumps 11 s, so all 120 000 timers are due at
/// one watermark and each sets a new one. Delivered in one call, that was
/// 120 000 timers returned, a contract violation: the plugin was marked
/// failed and every timer dead-lettered. Now they go in calls of at most
/// 4 096 keys, and nothing is lost.
#[test]
fn a_watermark_jump_fires_every_keys_timer_within_the_per_call_limits() {
    let views = [0, 5_000].into_iter().flat_map(|second| {
        (0..USERS).map(move |u| {
            let ts = T0 + second + u % 100;
            format!("{{\"user_id\":\"u{u}\",\"event_type\":\"page_view\",\"timestamp\":{ts}}}")
        })
    });
    // Watermark (2 s out of orderness) 13 s after T0: every first view's
    // timer (T0 + ≤ 99 + 10 001) is due, no second view's (T0 + 15 001…).
    let jump = format!(
        "{{\"user_id\":\"late\",\"event_type\":\"click\",\"timestamp\":{}}}",
        T0 + 15_000
    );
    run_clean(&["bot-burst"], views.chain([jump]));
}

/// The same jump for a metric detector keyed by metric key: 120 000 users'
/// sessions (`golden-session`, 3 s gap) close at one watermark, and
/// `session-watch` raises an alert for each user's session metric. Grouping
/// them compared every key with every other (quadratic), and the one call
/// returned 120 000 alerts, past the limit; now every alert arrives once.
#[test]
fn a_metric_detector_takes_a_metric_per_key_of_a_large_aggregate() {
    let data = run_clean(
        &["golden-session", "session-watch"],
        users_then_jump(USERS, ",\"latency_ms\":1.5"),
    );
    let mut keys: Vec<String> = read_json(&data.path().join("out.jsonl"))
        .into_iter()
        .filter(|o| o["type"] == "alert")
        .map(|a| {
            assert_eq!(a["plugin"], "session-watch");
            a["key"].as_str().unwrap().to_string()
        })
        .collect();
    keys.sort();
    let want = every_user(USERS);
    assert_eq!(keys.len(), want.len(), "one alert per user's session");
    assert_eq!(keys, want);
}

/// 6 000 users' 1 s windows close at one watermark, and `many-metrics`
/// returns 30 metrics per window: the first `finish` call, over 4 096
/// windows, returned 122 880 metrics, past the limit, and those windows were
/// dead-lettered. A call over too many windows is now split; every metric
/// arrives.
#[test]
fn a_finish_call_over_too_many_windows_is_split() {
    const N: u64 = 6_000;
    let data = run_clean(&["many-metrics"], users_then_jump(N, ""));
    let metrics = read_json(&data.path().join("out.jsonl"));
    assert_eq!(metrics.len() as u64, (N + 1) * 30, "30 metrics per window");
    let mut seen = std::collections::HashSet::new();
    for m in &metrics {
        assert_eq!(m["value"], 1.0, "{m}");
        assert!(
            seen.insert((m["key"].to_string(), m["name"].to_string())),
            "twice: {m}"
        );
    }
}

/// 6 000 users' first timers fire at one watermark, and `many-timers` sets
/// 30 more for each: the first `on_timers` call, over 4 096 keys, returned
/// 122 880 timers, past the limit. It is now asked again in halves; every
/// user's 30 timers fire and raise its one alert.
#[test]
fn a_timer_call_that_returns_too_many_timers_is_split() {
    const N: u64 = 6_000;
    let data = run_clean(&["many-timers"], users_then_jump(N, ""));
    let mut keys: Vec<String> = read_json(&data.path().join("out.jsonl"))
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        every_user(N),
        "one alert per user: all 30 timers fired"
    );
}
