//! What the shipped metrics mean, end to end: the real host runs the real
//! plugin over generated events (the simulator's mix of event types, out of
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
