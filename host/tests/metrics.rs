//! What the shipped metrics mean, end to end: the real host runs the real
//! plugins over generated events (the simulator's mix of event types, out of
//! order and late ones included), and each metric is compared with a count
//! made here from the input alone.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// `page_views` of a page and a 5 s window is the number of `page_view`
/// events of that page in that window: no click, cart, purchase, error or
/// session event counts.
#[test]
fn page_views_count_page_view_events_per_page_and_window() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("events.jsonl");
    write_events(&input, 200_000, 26, 200);

    // The count made here: page_view events per (page, window start); and,
    // to show that the input tells the two meanings apart, every event.
    let mut views: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut all: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let (mut max_ts, mut out_of_order) = (i64::MIN, 0u64);
    for line in read_lines(&input) {
        let e: Value = serde_json::from_str(&line).unwrap();
        let page = e["page"].as_str().unwrap_or("").to_string();
        let ts = e["timestamp"].as_i64().expect("ms timestamps");
        let ty = e["event_type"].as_str().unwrap_or("").to_string();
        out_of_order += u64::from(ts < max_ts);
        max_ts = max_ts.max(ts);
        let window = ts.div_euclid(5_000) * 5_000;
        *all.entry((page.clone(), window)).or_default() += 1.0;
        if ty == "page_view" {
            *views.entry((page, window)).or_default() += 1.0;
        }
        *types.entry(ty).or_default() += 1;
    }
    for ty in [
        "page_view",
        "click",
        "add_to_cart",
        "purchase",
        "error",
        "session_start",
        "session_end",
    ] {
        assert!(types.get(ty).is_some_and(|&n| n > 100), "{types:?}");
    }
    assert!(out_of_order > 1_000, "{out_of_order} events out of order");

    // The simulator delays a few events by up to 30 s: a minute of allowed
    // lateness lets every one of them count, re-firing its window.
    let plugins = plugins_dir(&["page-views"]);
    let data = tmp.path().join("data");
    run_file(
        plugins.path(),
        &input,
        &data,
        &["--allowed-lateness", "1m", "--no-watch"],
    );
    assert!(
        read_lines(&data.join("late-events.jsonl")).is_empty(),
        "no event should be later than a minute"
    );
    // The last output of a window is its final count.
    let mut got: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut refired = 0;
    for m in read_json(&data.join("out.jsonl")) {
        assert_eq!(
            (m["plugin"].as_str(), m["name"].as_str()),
            (Some("page-views"), Some("page_views")),
            "{m}"
        );
        let start = m["window_start"].as_i64().unwrap();
        assert_eq!(m["window_end"].as_i64().unwrap(), start + 5_000);
        let key = (m["key"].as_str().unwrap().to_string(), start);
        refired += usize::from(got.contains_key(&key));
        got.insert(key, m["value"].as_f64().unwrap());
    }
    assert!(refired > 0, "no late event re-fired a window");

    let wrong: Vec<_> = views
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty() && got.len() == views.len(),
        "{} of {} windows differ from the count of page_view events (first: {wrong:?}); {} windows emitted",
        views.iter().filter(|(k, v)| got.get(*k) != Some(v)).count(),
        views.len(),
        got.len()
    );
    let differs = views.iter().filter(|(k, v)| all[*k] != **v).count();
    assert!(
        views.len() > 2_000 && differs * 10 > views.len() * 9,
        "{} windows, {differs} where counting every event would differ",
        views.len()
    );
}

/// The input of a test: generated events, parsed, and the host's final
/// metrics (the last output of each plugin/name/key/window) over them, with
/// a minute of allowed lateness so that every event counts.
struct Run {
    events: Vec<Value>,
    metrics: BTreeMap<(String, String, String, i64, i64), Value>,
}

fn run(plugins: &[&str], n: u64, seed: u64, rate: u32) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("events.jsonl");
    write_events(&input, n, seed, rate);
    let events = read_json(&input);
    let dir = plugins_dir(plugins);
    let data = tmp.path().join("data");
    run_file(
        dir.path(),
        &input,
        &data,
        &["--allowed-lateness", "1m", "--no-watch"],
    );
    assert!(read_lines(&data.join("late-events.jsonl")).is_empty());
    let mut metrics = BTreeMap::new();
    for m in read_json(&data.join("out.jsonl")) {
        let s = |f: &str| m[f].as_str().unwrap().to_string();
        let key = (
            s("plugin"),
            s("name"),
            s("key"),
            m["window_start"].as_i64().unwrap(),
            m["window_end"].as_i64().unwrap(),
        );
        metrics.insert(key, m);
    }
    Run { events, metrics }
}

fn value(run: &Run, plugin: &str, name: &str, start: i64, end: i64) -> f64 {
    let k = (plugin.into(), name.into(), String::new(), start, end);
    run.metrics
        .get(&k)
        .unwrap_or_else(|| panic!("no {plugin}/{name} for [{start}, {end})"))["value"]
        .as_f64()
        .unwrap()
}

/// `error_rate` of a 5 s window is its `error` events over all its events;
/// `events` and `errors` are those counts (the throughput the
/// low-throughput rule reads is `events`).
#[test]
fn error_rate_is_error_events_over_all_events() {
    let run = run(&["error-rate"], 150_000, 7, 200);
    let mut counts: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for e in &run.events {
        let w = e["timestamp"].as_i64().unwrap().div_euclid(5_000) * 5_000;
        let c = counts.entry(w).or_default();
        c.0 += 1.0;
        c.1 += f64::from(u8::from(e["event_type"] == "error"));
    }
    let mut with_errors = 0;
    for (&w, &(events, errors)) in &counts {
        assert_eq!(value(&run, "error-rate", "events", w, w + 5_000), events);
        assert_eq!(value(&run, "error-rate", "errors", w, w + 5_000), errors);
        // serde_json reads floats back to within an ulp, not exactly.
        let rate = value(&run, "error-rate", "error_rate", w, w + 5_000);
        assert!(
            (rate - errors / events).abs() <= 1e-15,
            "{rate} in window {w}"
        );
        with_errors += usize::from(errors > 0.0);
    }
    assert_eq!(run.metrics.len(), counts.len() * 3);
    assert!(
        with_errors > counts.len() / 2,
        "{with_errors} of {} windows with errors",
        counts.len()
    );
}

/// `conversion_rate` of a minute is its `purchase` events over the distinct
/// sessions with an event in it: purchases exact, sessions a HyperLogLog
/// estimate (1.6 % standard error).
#[test]
fn conversion_rate_is_purchases_over_distinct_sessions_per_minute() {
    let run = run(&["conversion-rate"], 150_000, 8, 200);
    let mut minutes: BTreeMap<i64, (f64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for e in &run.events {
        let w = e["timestamp"].as_i64().unwrap().div_euclid(60_000) * 60_000;
        let m = minutes.entry(w).or_default();
        m.0 += f64::from(u8::from(e["event_type"] == "purchase"));
        if let Some(s) = e["session_id"].as_str() {
            m.1.insert(s.to_string());
        }
    }
    for (&w, (purchases, sessions)) in &minutes {
        let (start, end) = (w, w + 60_000);
        assert_eq!(
            value(&run, "conversion-rate", "purchases", start, end),
            *purchases
        );
        let estimate = value(&run, "conversion-rate", "sessions", start, end);
        let exact = sessions.len() as f64;
        assert!(
            (estimate - exact).abs() <= 0.05 * exact,
            "minute {w}: {estimate} sessions, {exact} exact"
        );
        let rate = value(&run, "conversion-rate", "conversion_rate", start, end);
        assert!((rate - purchases / estimate).abs() < 1e-12, "minute {w}");
    }
    assert!(minutes.len() > 10);
}

/// A session is the run of one `session_id`'s events without a gap of more
/// than 60 s (Flink session windows, which merge when they touch):
/// `session_duration_ms` is its last event time minus its first,
/// `pages_per_session` its `page_view` events, and the window is
/// `[first, last + 60 s)`.
#[test]
fn sessions_are_runs_of_a_session_id_without_a_60_s_gap() {
    let run = run(&["session-duration"], 100_000, 9, 200);
    let mut by_session: BTreeMap<String, Vec<(i64, bool)>> = BTreeMap::new();
    for e in &run.events {
        let id = e["session_id"].as_str().unwrap_or("").to_string();
        let t = e["timestamp"].as_i64().unwrap();
        by_session
            .entry(id)
            .or_default()
            .push((t, e["event_type"] == "page_view"));
    }
    let mut want = BTreeMap::new();
    for (id, mut events) in by_session {
        events.sort();
        let mut i = 0;
        while i < events.len() {
            let first = events[i].0;
            let (mut last, mut views) = (first, 0.0);
            while i < events.len() && events[i].0 - last <= 60_000 {
                last = events[i].0;
                views += f64::from(u8::from(events[i].1));
                i += 1;
            }
            let w = (id.clone(), first, last + 60_000);
            want.insert((w.clone(), "session_duration_ms"), (last - first) as f64);
            want.insert((w, "pages_per_session"), views);
        }
    }
    let got: BTreeMap<_, _> = run
        .metrics
        .iter()
        .map(|((_, name, key, start, end), m)| {
            let name = if name == "session_duration_ms" {
                "session_duration_ms"
            } else {
                "pages_per_session"
            };
            (
                ((key.clone(), *start, *end), name),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let differ = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
    assert!(
        differ == 0 && got.len() == want.len(),
        "{differ} of {} session metrics differ ({} emitted); first: {:?}",
        want.len(),
        got.len(),
        want.iter().find(|(k, v)| got.get(*k) != Some(v))
    );
    assert!(want.len() > 5_000, "{} session metrics", want.len());
}

/// `active_users` of a window is the number of distinct `user_id`s with an
/// event in its minute, every 5 s (a HyperLogLog estimate: 1.6 % standard
/// error, asserted within 5 %).
#[test]
fn active_users_are_distinct_users_per_sliding_minute() {
    let run = run(&["active-users"], 60_000, 10, 200);
    let mut slides: BTreeMap<i64, std::collections::BTreeSet<String>> = BTreeMap::new();
    for e in &run.events {
        let t = e["timestamp"].as_i64().unwrap();
        if let Some(u) = e["user_id"].as_str() {
            slides
                .entry(t.div_euclid(5_000) * 5_000)
                .or_default()
                .insert(u.to_string());
        }
    }
    let mut checked = 0;
    for ((_, _, _, start, end), m) in &run.metrics {
        assert_eq!(end - start, 60_000);
        let exact: std::collections::BTreeSet<&String> = slides
            .range(*start..*end)
            .flat_map(|(_, users)| users)
            .collect();
        let estimate = m["value"].as_f64().unwrap();
        let n = exact.len() as f64;
        assert!(
            (estimate - n).abs() <= 0.05 * n.max(20.0),
            "[{start}, {end}): {estimate}, exact {n}"
        );
        checked += 1;
    }
    assert!(checked > 50, "{checked} windows");
}

/// `latency_ms` of a 5 s window holds the p50, p95 and p99 of its events'
/// `latency_ms` (the sample of rank ⌊q·(n−1)⌋), each within 1 % (DDSketch).
#[test]
fn latency_percentiles_are_those_of_the_windows_events() {
    let run = run(&["latency-percentiles"], 100_000, 11, 200);
    let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for e in &run.events {
        let t = e["timestamp"].as_i64().unwrap();
        if let Some(l) = e["latency_ms"].as_f64() {
            windows
                .entry(t.div_euclid(5_000) * 5_000)
                .or_default()
                .push(l);
        }
    }
    for (w, mut lat) in windows {
        lat.sort_by(f64::total_cmp);
        let k = (
            "latency-percentiles".to_string(),
            "latency_ms".to_string(),
            String::new(),
            w,
            w + 5_000,
        );
        let m = &run.metrics[&k];
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            let exact = lat[(q * (lat.len() - 1) as f64).floor() as usize];
            let got = m["values"][name].as_f64().unwrap();
            assert!(
                (got - exact).abs() <= 0.01 * exact,
                "{name} of [{w}, +5 s): {got}, exact {exact}"
            );
        }
        assert_eq!(
            value(&run, "latency-percentiles", "latency_samples", w, w + 5_000),
            lat.len() as f64
        );
    }
}

/// The alert rules over 11 minutes of the simulator's incident cycle
/// (latency ×8 from 1:00 to 4:00, 4 % errors from 1:30 to 4:30, 100
/// events/s from 2:00 to 8:00, a bot every 30 s, abandoned carts), each
/// evaluated here from the events alone:
/// - high-latency: the p95 of a 5 s window's latencies above 500 ms for
///   2 min (from the first breaching window's start to the latest one's
///   end), once per breach, at the end of the window that completes it;
/// - error-rate-spike: errors over events above 1 % for 2 min, the same way;
/// - low-throughput: events per minute (a window's events × 12) below
///   8 000 for 5 min;
/// - cart-abandonment: a session's first `add_to_cart` at `a` with no
///   `purchase` in `[a, a + 2 min)`, at `a + 2 min`;
/// - bot-burst: a user with 30 page views within 10 s, and only such users.
///
/// Events the watermark would drop as late (more than 1.5 s behind the
/// newest) are left out of the input, so that every window fires once.
#[test]
fn alert_rules_fire_as_their_definitions_say() {
    let tmp = tempfile::tempdir().unwrap();
    let mut newest = i64::MIN;
    let mut kept = Vec::new();
    for line in gen_events(175_000, 12, 500) {
        let e: Value = serde_json::from_str(&line).unwrap();
        let t = e["timestamp"].as_i64().unwrap();
        if t >= newest.saturating_sub(1_500) {
            newest = newest.max(t);
            kept.push((line, e));
        }
    }
    let input = tmp.path().join("events.jsonl");
    std::fs::write(
        &input,
        kept.iter()
            .map(|(l, _)| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let events: Vec<Value> = kept.into_iter().map(|(_, e)| e).collect();
    let plugins = plugins_dir(&[
        "latency-percentiles",
        "error-rate",
        "high-latency",
        "error-rate-spike",
        "low-throughput",
        "cart-abandonment",
        "bot-burst",
    ]);
    let data = tmp.path().join("data");
    run_file(plugins.path(), &input, &data, &["--no-watch"]);
    assert!(read_lines(&data.join("late-events.jsonl")).is_empty());
    let mut alerts: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for a in read_json(&data.join("out.jsonl")) {
        if a["type"] == "alert" {
            let rule = a["rule"].as_str().unwrap().to_string();
            let key = a["key"].as_str().unwrap().to_string();
            alerts
                .entry(rule)
                .or_default()
                .push((key, a["time"].as_i64().unwrap()));
        }
    }
    for list in alerts.values_mut() {
        list.sort();
    }

    // Per 5 s window: latencies, events, errors.
    #[derive(Default)]
    struct Window {
        latencies: Vec<f64>,
        events: f64,
        errors: f64,
    }
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    for e in &events {
        let w = windows
            .entry(e["timestamp"].as_i64().unwrap().div_euclid(5_000) * 5_000)
            .or_default();
        w.latencies.push(e["latency_ms"].as_f64().unwrap());
        w.events += 1.0;
        w.errors += f64::from(u8::from(e["event_type"] == "error"));
    }
    let sustained = |holds: &dyn Fn(&Window) -> bool, for_ms: i64| {
        let (mut since, mut fired, mut out) = (None::<i64>, false, Vec::new());
        for (&start, w) in &windows {
            if !holds(w) {
                (since, fired) = (None, false);
                continue;
            }
            let s = *since.get_or_insert(start);
            if !fired && start + 5_000 - s >= for_ms {
                fired = true;
                out.push((String::new(), start + 5_000));
            }
        }
        out
    };
    let p95 = |w: &Window| {
        let mut l = w.latencies.clone();
        l.sort_by(f64::total_cmp);
        l[(0.95 * (l.len() - 1) as f64).floor() as usize]
    };
    let got = |rule: &str| alerts.get(rule).cloned().unwrap_or_default();
    let want = sustained(&|w| p95(w) > 500.0, 120_000);
    assert!(!want.is_empty());
    assert_eq!(got("high-latency"), want, "high-latency");
    let want = sustained(&|w| w.errors / w.events > 0.01, 120_000);
    assert!(!want.is_empty());
    assert_eq!(got("error-rate-spike"), want, "error-rate-spike");
    let want = sustained(&|w| w.events * 12.0 < 8_000.0, 300_000);
    assert!(!want.is_empty());
    assert_eq!(got("low-throughput"), want, "low-throughput");

    // Carts: per session, the first add_to_cart and its purchases.
    let mut sessions: BTreeMap<String, (Option<i64>, Vec<i64>)> = BTreeMap::new();
    for e in &events {
        let s = sessions
            .entry(e["session_id"].as_str().unwrap().to_string())
            .or_default();
        let t = e["timestamp"].as_i64().unwrap();
        match e["event_type"].as_str() {
            Some("add_to_cart") => s.0 = Some(s.0.map_or(t, |a| a.min(t))),
            Some("purchase") => s.1.push(t),
            _ => {}
        }
    }
    let mut want: Vec<(String, i64)> = sessions
        .into_iter()
        .filter_map(|(id, (added, bought))| {
            let a = added?;
            (!bought.iter().any(|&p| a <= p && p < a + 120_000)).then_some((id, a + 120_000))
        })
        .collect();
    want.sort();
    assert!(want.len() > 100);
    assert_eq!(got("cart-abandonment"), want, "cart-abandonment");

    // Bots: users with 30 page views within 10 s.
    let mut views: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event_type"] == "page_view") {
        views
            .entry(e["user_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["timestamp"].as_i64().unwrap());
    }
    let bursting: std::collections::BTreeSet<String> = views
        .into_iter()
        .filter_map(|(user, mut t)| {
            t.sort();
            t.windows(30)
                .any(|w| w[29] - w[0] <= 10_000)
                .then_some(user)
        })
        .collect();
    let alerted: std::collections::BTreeSet<String> =
        got("bot-burst").into_iter().map(|(user, _)| user).collect();
    assert!(bursting.len() >= 15, "{} bursting users", bursting.len());
    assert_eq!(alerted, bursting, "bot-burst");
}
