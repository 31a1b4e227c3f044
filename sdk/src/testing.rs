//! Run plugins natively, without Wasm, in plain `cargo test`.
//!
//! The helpers build columnar batches the way the host does and drive the
//! same [`glue`] code the Wasm exports call, so states really
//! are encoded and decoded between calls: a state that does not survive
//! `postcard` fails here, not in production. Windows follow Flink's
//! event-time semantics; everything fires at the end of the input, as if the
//! watermark jumped to +infinity.
//!
//! ```no_run
//! # use rtap_sdk::prelude::*;
//! # #[derive(Default)] struct PageViews;
//! # impl Aggregator for PageViews {
//! #     type State = u64;
//! #     fn describe() -> Description { Description::aggregator("page-views", "1.0.0").key_by("page").tumbling(5_000) }
//! #     fn add(&self, n: &mut u64, e: &Events) { *n += e.len() as u64 }
//! #     fn merge(&self, n: &mut u64, o: u64) { *n += o }
//! #     fn finish(&self, n: u64, _: Window, out: &mut Metrics) { out.single("page_views", n as f64) }
//! # }
//! use rtap_sdk::testing::run_aggregator;
//! use serde_json::json;
//!
//! let out = run_aggregator::<PageViews>("{}", &[
//!     json!({"page": "/", "timestamp": 1_000}),
//!     json!({"page": "/", "timestamp": "1970-01-01T00:00:02Z"}),
//! ]).unwrap();
//! assert_eq!(out[0].value, MetricValue::Single(2.0));
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::marker::PhantomData;

use serde_json::Value;

use crate::batch::MISSING;
use crate::describe::{InputKind, Kind, WindowSpec};
use crate::glue::{self, StepOut};
pub use crate::time::parse_rfc3339;
/// `json!` for test events: a plugin's tests need no `serde_json` dependency.
pub use serde_json::json;

/// The lines this thread's plugin code logged (`info!` …), oldest first;
/// taking them clears them.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_logs() -> Vec<(crate::log::Level, String)> {
    crate::log::native::take()
}
use crate::{
    Aggregator, Alert, Batch, ColumnData, Description, Detector, MetricIn, MetricValue, Packed,
    Window,
};

/// Safety net against detectors that keep setting due timers.
const MAX_TIMER_CALLS: usize = 1_000_000;

/// Build a batch of `events` with the columns `fields`, exactly as the host
/// does: `timestamp` is an int column (integer ms or an RFC 3339 string; 0
/// when missing or invalid, which the host would have rejected),
/// `latency_ms` and `value` are float columns (NaN when missing or not a
/// number), every other field is a text column over the batch's dictionary
/// (equal strings share an id, a missing or `null` value is `u32::MAX`,
/// numbers and booleans are their JSON text).
pub fn batch<S: AsRef<str>>(fields: &[S], events: &[Value]) -> Batch {
    let mut dict: HashMap<String, u32> = HashMap::new();
    let mut dict_data = Vec::new();
    let mut dict_ends = Vec::new();
    let columns = fields
        .iter()
        .map(|f| {
            let f = f.as_ref();
            let values = events.iter().map(|e| e.get(f));
            match f {
                "timestamp" => ColumnData::Int(
                    values
                        .map(|v| v.and_then(timestamp_ms).unwrap_or(0))
                        .collect(),
                ),
                "latency_ms" | "value" => ColumnData::Float(
                    values
                        .map(|v| v.and_then(Value::as_f64).unwrap_or(f64::NAN))
                        .collect(),
                ),
                _ => ColumnData::Text(
                    values
                        .map(|v| match v.and_then(text) {
                            None => MISSING,
                            Some(s) => *dict.entry(s).or_insert_with_key(|s| {
                                dict_data.extend_from_slice(s.as_bytes());
                                dict_ends.push(dict_data.len() as u32);
                                dict_ends.len() as u32 - 1
                            }),
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    Batch {
        len: events.len(),
        fields: fields.iter().map(|f| f.as_ref().to_string()).collect(),
        columns,
        dict_data,
        dict_ends,
    }
}

/// A field value as the text the host puts in the dictionary.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// An event's time in ms: an integer (ms since the epoch) or an RFC 3339
/// string such as `2024-05-01T12:00:00.250Z` or `...+02:00`.
pub fn timestamp_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

fn key_of(event: &Value, key_by: &str) -> String {
    if key_by.is_empty() {
        return String::new();
    }
    event.get(key_by).and_then(text).unwrap_or_default()
}

fn event_time(i: usize, event: &Value) -> Result<i64, String> {
    event
        .get("timestamp")
        .and_then(timestamp_ms)
        .ok_or_else(|| format!("event {i} has no valid `timestamp`"))
}

/// A metric emitted by [`run_aggregator`], with the key and window the host
/// would add.
#[derive(Debug, Clone, PartialEq)]
pub struct TestMetric {
    pub key: String,
    pub window: Window,
    pub name: String,
    pub value: MetricValue,
}

/// Configure aggregator `T` with `config` (JSON; `""` takes the default
/// config), feed it `events` and fire every window.
///
/// Events are keyed by `describe().key_by` (a missing field is the key `""`)
/// and windowed like Flink: tumbling and sliding windows aligned to the epoch,
/// session windows `[ts, ts + gap)` merged (with [`Aggregator::merge`]) when
/// they overlap or touch. Tumbling and sliding groups are fed in two `add`
/// calls, the first event of every group then the rest, so `add` sees fresh
/// and existing states, one and several events, several groups per call;
/// session events are added one by one. The metrics come sorted by
/// (window end, window start, key, name).
///
/// Errors: the config is refused, `T` is not a windowed aggregator, an event
/// has no valid `timestamp`, or a glue call fails (e.g. a state that does not
/// decode).
pub fn run_aggregator<T: Aggregator>(
    config: &str,
    events: &[Value],
) -> Result<Vec<TestMetric>, String> {
    glue::aggregator_init::<T>(config)?;
    let d = T::describe();
    if d.kind != Kind::Aggregator || d.input != InputKind::Events {
        return Err(format!("`{}` is not an event aggregator", d.name));
    }
    let groups = match d.window {
        WindowSpec::Tumbling { size_ms } => {
            let size = window_len(size_ms)?;
            assign::<T>(&d, events, |ts| vec![align(ts, size, size)])?
        }
        WindowSpec::Sliding { size_ms, slide_ms } => {
            let (size, slide) = (window_len(size_ms)?, window_len(slide_ms)?);
            assign::<T>(&d, events, |ts| {
                let mut ws = Vec::new();
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    ws.push(Window {
                        start,
                        end: start + size,
                    });
                    start -= slide;
                }
                ws
            })?
        }
        WindowSpec::Session { gap_ms } => sessions::<T>(&d, events, window_len(gap_ms)?)?,
        WindowSpec::None => return Err(format!("aggregator `{}` declares no window", d.name)),
    };
    let mut groups = groups;
    groups.sort_by(|a, b| (a.1.end, a.1.start, &a.0).cmp(&(b.1.end, b.1.start, &b.0)));
    let windows: Vec<Window> = groups.iter().map(|g| g.1).collect();
    let mut states = Packed::default();
    for g in &groups {
        states.push(&g.2);
    }
    let finished = glue::aggregator_finish::<T>(&windows, &states)?;
    if let WindowSpec::Sliding { size_ms, slide_ms } = d.window
        && size_ms > slide_ms
        && size_ms % slide_ms == 0
    {
        check_panes::<T>(&d, events, &groups, &finished, window_len(slide_ms)?)?;
    }
    let mut out: Vec<TestMetric> = finished
        .into_iter()
        .map(|(i, name, value)| {
            let (key, window, _) = &groups[i as usize];
            TestMetric {
                key: key.clone(),
                window: *window,
                name,
                value,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.window.end, a.window.start, &a.key, &a.name).cmp(&(
            b.window.end,
            b.window.start,
            &b.key,
            &b.name,
        ))
    });
    Ok(out)
}

/// The host keeps sliding windows whose size is a multiple of the slide as
/// slide-sized panes and fires a window with its panes' states merged,
/// earliest first. Check that this gives what adding each window's events
/// to one state gave (`finished`, for `groups`): `merge` must be exact.
/// Numbers may differ in the last bits (a float sum added in another
/// order).
fn check_panes<T: Aggregator>(
    d: &Description,
    events: &[Value],
    groups: &[Group],
    finished: &[(u32, String, MetricValue)],
    slide: i64,
) -> Result<(), String> {
    let panes = assign::<T>(d, events, |ts| vec![align(ts, slide, slide)])?;
    let mut by_key: BTreeMap<&str, Vec<(i64, &[u8])>> = BTreeMap::new();
    for (k, w, st) in &panes {
        by_key.entry(k).or_default().push((w.start, st));
    }
    let mut states = Packed::default();
    for (k, w, _) in groups {
        let mut merged: Option<Vec<u8>> = None;
        let mut inside: Vec<(i64, &[u8])> = by_key[k.as_str()]
            .iter()
            .filter(|(p, _)| *p >= w.start && *p < w.end)
            .copied()
            .collect();
        inside.sort_by_key(|(p, _)| *p);
        for (_, st) in inside {
            merged = Some(match merged {
                None => st.to_vec(),
                Some(acc) => glue::aggregator_merge::<T>(&acc, st)?,
            });
        }
        states.push(&merged.unwrap_or_default());
    }
    let windows: Vec<Window> = groups.iter().map(|g| g.1).collect();
    let from_panes = glue::aggregator_finish::<T>(&windows, &states)?;
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    let same = |a: &MetricValue, b: &MetricValue| match (a, b) {
        (MetricValue::Single(x), MetricValue::Single(y)) => close(*x, *y),
        (MetricValue::Several(x), MetricValue::Several(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((n, a), (m, b))| n == m && close(*a, *b))
        }
        _ => false,
    };
    let per_group = |out: &[(u32, String, MetricValue)], g: usize| -> Vec<(String, MetricValue)> {
        out.iter()
            .filter(|m| m.0 as usize == g)
            .map(|m| (m.1.clone(), m.2.clone()))
            .collect()
    };
    for (g, (k, w, _)) in groups.iter().enumerate() {
        let (direct, merged) = (per_group(finished, g), per_group(&from_panes, g));
        let agree = direct.len() == merged.len()
            && direct
                .iter()
                .zip(&merged)
                .all(|(a, b)| a.0 == b.0 && same(&a.1, &b.1));
        if !agree {
            return Err(format!(
                "`{}`: sliding window [{}, {}) of key `{k}`: its events added to one state give \
                 {direct:?}, its {} ms panes merged give {merged:?}; the host fires sliding \
                 windows from merged panes, so `merge` must combine two states exactly as \
                 adding both states' events to one",
                d.name, w.start, w.end, slide
            ));
        }
    }
    Ok(())
}

fn window_len(ms: u64) -> Result<i64, String> {
    i64::try_from(ms)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("invalid window length {ms} ms"))
}

fn align(ts: i64, size: i64, slide: i64) -> Window {
    let start = ts - ts.rem_euclid(slide);
    Window {
        start,
        end: start + size,
    }
}

type Group = (String, Window, Vec<u8>);

/// Tumbling and sliding windows: group events by (key, window), then add.
fn assign<T: Aggregator>(
    d: &Description,
    events: &[Value],
    windows: impl Fn(i64) -> Vec<Window>,
) -> Result<Vec<Group>, String> {
    let mut index: HashMap<(String, Window), usize> = HashMap::new();
    let mut members: Vec<(String, Window, Vec<usize>)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let ts = event_time(i, e)?;
        let key = key_of(e, &d.key_by);
        for w in windows(ts) {
            let g = *index.entry((key.clone(), w)).or_insert_with(|| {
                members.push((key.clone(), w, Vec::new()));
                members.len() - 1
            });
            members[g].2.push(i);
        }
    }
    let mut states = vec![Vec::new(); members.len()];
    for first in [true, false] {
        let mut lens = Vec::new();
        let mut picked = Vec::new();
        let mut packed = Packed::default();
        for (g, m) in members.iter().enumerate() {
            let part = if first { &m.2[..1] } else { &m.2[1..] };
            lens.push(part.len() as u32);
            picked.extend(part.iter().map(|&i| events[i].clone()));
            packed.push(&states[g]);
        }
        let b = batch(&d.fields, &picked);
        let out = glue::aggregator_add::<T>(&lens, &packed, &b)?;
        for (g, s) in states.iter_mut().enumerate() {
            *s = out.get(g).to_vec();
        }
    }
    Ok(members
        .into_iter()
        .zip(states)
        .map(|((k, w, _), s)| (k, w, s))
        .collect())
}

/// Session windows, merged as events arrive (Flink's merging assigner).
fn sessions<T: Aggregator>(
    d: &Description,
    events: &[Value],
    gap: i64,
) -> Result<Vec<Group>, String> {
    let mut by_key: BTreeMap<String, Vec<(Window, Vec<u8>)>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let ts = event_time(i, e)?;
        let open = by_key.entry(key_of(e, &d.key_by)).or_default();
        let mut window = Window {
            start: ts,
            end: ts + gap,
        };
        let mut state: Option<Vec<u8>> = None;
        let mut k = 0;
        while k < open.len() {
            let w = open[k].0;
            if w.start <= window.end && w.end >= window.start {
                let (w, s) = open.remove(k);
                window = Window {
                    start: window.start.min(w.start),
                    end: window.end.max(w.end),
                };
                state = Some(match state {
                    None => s,
                    Some(acc) => glue::aggregator_merge::<T>(&acc, &s)?,
                });
            } else {
                k += 1;
            }
        }
        let mut packed = Packed::default();
        packed.push(&state.unwrap_or_default());
        let out =
            glue::aggregator_add::<T>(&[1], &packed, &batch(&d.fields, std::slice::from_ref(e)))?;
        open.push((window, out.get(0).to_vec()));
    }
    Ok(by_key
        .into_iter()
        .flat_map(|(k, ws)| ws.into_iter().map(move |(w, s)| (k.clone(), w, s)))
        .collect())
}

/// An alert raised by a detector, with the key the host would add.
#[derive(Debug, Clone, PartialEq)]
pub struct TestAlert {
    pub key: String,
    pub alert: Alert,
}

/// Drive detector `T` step by step, like the host: per-key states kept as
/// bytes between calls (an empty returned state deletes the key), timers kept
/// per key (deduplicated) and fired once the watermark reaches them.
///
/// The watermark is the largest event time (or metric window end) seen so
/// far. A timer at `t` fires as soon as the watermark is `>= t`, right after
/// the call that moved the watermark; timers of the same time fire in one
/// call, in key order.
pub struct DetectorHarness<T: Detector> {
    config: String,
    desc: Description,
    states: BTreeMap<String, Vec<u8>>,
    timers: BTreeSet<(i64, String)>,
    watermark: i64,
    _plugin: PhantomData<T>,
}

impl<T: Detector> DetectorHarness<T> {
    /// Configure `T` (`""` takes the default config).
    pub fn new(config: &str) -> Result<Self, String> {
        glue::detector_init::<T>(config)?;
        let desc = T::describe();
        if desc.kind != Kind::Detector {
            return Err(format!("`{}` is not a detector", desc.name));
        }
        Ok(DetectorHarness {
            config: config.to_string(),
            desc,
            states: BTreeMap::new(),
            timers: BTreeSet::new(),
            watermark: i64::MIN,
            _plugin: PhantomData,
        })
    }

    /// Feed events in the given order, one call each for its key, with the
    /// watermark as it was before the event.
    pub fn events(&mut self, events: &[Value]) -> Result<Vec<TestAlert>, String> {
        if self.desc.input != InputKind::Events {
            return Err(format!("`{}` reads metrics, not events", self.desc.name));
        }
        let mut alerts = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let ts = event_time(i, e)?;
            let key = key_of(e, &self.desc.key_by);
            let b = batch(&self.desc.fields, std::slice::from_ref(e));
            let states = self.packed(std::slice::from_ref(&key));
            self.reinit()?;
            let out = glue::detector_on_events::<T>(
                std::slice::from_ref(&key),
                &[1],
                &states,
                &b,
                self.watermark,
            )?;
            self.apply(std::slice::from_ref(&key), out, &mut alerts);
            alerts.extend(self.advance(ts)?);
        }
        Ok(alerts)
    }

    /// Feed metrics in the given order, one call each. Metrics that match
    /// none of `describe().metrics` (`plugin/name`, `*` for any part) are
    /// skipped, as the host would not route them.
    pub fn metrics(&mut self, metrics: &[MetricIn]) -> Result<Vec<TestAlert>, String> {
        if self.desc.input != InputKind::Metrics {
            return Err(format!("`{}` reads events, not metrics", self.desc.name));
        }
        let mut alerts = Vec::new();
        for m in metrics {
            if !self.desc.metrics.iter().any(|p| metric_matches(p, m)) {
                continue;
            }
            let key = match self.desc.key_by.as_str() {
                "" => String::new(),
                "key" => m.key.clone(),
                "name" => m.name.clone(),
                "plugin" => m.plugin.clone(),
                other => {
                    return Err(format!(
                        "metric detectors key by key, name, plugin or \"\", not `{other}`"
                    ));
                }
            };
            let states = self.packed(std::slice::from_ref(&key));
            self.reinit()?;
            let out = glue::detector_on_metrics::<T>(
                std::slice::from_ref(&key),
                &[1],
                &states,
                std::slice::from_ref(m),
            )?;
            self.apply(std::slice::from_ref(&key), out, &mut alerts);
            alerts.extend(self.advance(m.window.end)?);
        }
        Ok(alerts)
    }

    /// Move the watermark to `watermark` (if later) and fire the due timers.
    pub fn advance(&mut self, watermark: i64) -> Result<Vec<TestAlert>, String> {
        self.watermark = self.watermark.max(watermark);
        let mut alerts = Vec::new();
        for _ in 0..MAX_TIMER_CALLS {
            let Some(&(at, _)) = self.timers.first() else {
                return Ok(alerts);
            };
            if at > self.watermark {
                return Ok(alerts);
            }
            let mut keys = Vec::new();
            while let Some((_, key)) = self.timers.first().filter(|t| t.0 == at).cloned() {
                self.timers.pop_first();
                keys.push(key);
            }
            let states = self.packed(&keys);
            let lens = vec![1; keys.len()];
            self.reinit()?;
            let out = glue::detector_on_timers::<T>(&keys, &lens, &states, &vec![at; keys.len()])?;
            self.apply(&keys, out, &mut alerts);
        }
        Err(format!(
            "more than {MAX_TIMER_CALLS} timer calls: does the detector keep setting due timers?"
        ))
    }

    /// Fire every remaining timer, in time order (the watermark goes to +inf).
    pub fn finish(&mut self) -> Result<Vec<TestAlert>, String> {
        self.advance(i64::MAX)
    }

    /// The decoded state of `key` (`None` if the host would hold none).
    pub fn state(&self, key: &str) -> Option<T::State> {
        self.states
            .get(key)
            .map(|b| crate::decode_state(b).expect("states decoded by the glue"))
    }

    /// The keys that hold a state.
    pub fn keys(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }

    /// Pending timers as (key, time), in time order.
    pub fn timers(&self) -> Vec<(String, i64)> {
        self.timers.iter().map(|(t, k)| (k.clone(), *t)).collect()
    }

    /// The current watermark (`i64::MIN` before any input).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Another harness may have configured a different plugin on this thread.
    fn reinit(&self) -> Result<(), String> {
        glue::detector_init::<T>(&self.config)
    }

    fn packed(&self, keys: &[String]) -> Packed {
        let mut p = Packed::default();
        for k in keys {
            p.push(self.states.get(k).map_or(&[][..], |s| s));
        }
        p
    }

    fn apply(&mut self, keys: &[String], out: StepOut, alerts: &mut Vec<TestAlert>) {
        for (i, key) in keys.iter().enumerate() {
            let s = out.states.get(i);
            if s.is_empty() {
                self.states.remove(key);
            } else {
                self.states.insert(key.clone(), s.to_vec());
            }
        }
        for (g, at) in out.timers {
            self.timers.insert((at, keys[g as usize].clone()));
        }
        alerts.extend(out.alerts.into_iter().map(|(g, alert)| TestAlert {
            key: keys[g as usize].clone(),
            alert,
        }));
    }
}

fn metric_matches(pattern: &str, m: &MetricIn) -> bool {
    let (p, n) = pattern.split_once('/').unwrap_or((pattern, "*"));
    (p == "*" || p == m.plugin) && (n == "*" || n == m.name)
}

/// Run event-input detector `T` over `events` (in the given order, one call
/// each, see [`DetectorHarness`]), then fire all remaining timers. Returns
/// the alerts in the order raised.
///
/// Errors: the config is refused, `T` reads metrics, an event has no valid
/// `timestamp`, a glue call fails, or timers never stop firing.
pub fn run_detector<T: Detector>(config: &str, events: &[Value]) -> Result<Vec<TestAlert>, String> {
    let mut h = DetectorHarness::<T>::new(config)?;
    let mut alerts = h.events(events)?;
    alerts.extend(h.finish()?);
    Ok(alerts)
}

/// Run metric-input detector `T` over `metrics` (keyed by
/// `describe().key_by`: `key`, `name`, `plugin` or `""`; the watermark is the
/// largest window end seen), then fire all remaining timers.
///
/// Errors: as [`run_detector`], or an unsupported `key_by`.
pub fn run_metric_detector<T: Detector>(
    config: &str,
    metrics: &[MetricIn],
) -> Result<Vec<TestAlert>, String> {
    let mut h = DetectorHarness::<T>::new(config)?;
    let mut alerts = h.metrics(metrics)?;
    alerts.extend(h.finish()?);
    Ok(alerts)
}

/// A metric as an aggregator plugin `plugin` would deliver it.
pub fn metric(
    plugin: &str,
    name: &str,
    key: &str,
    start: i64,
    end: i64,
    value: MetricValue,
) -> MetricIn {
    MetricIn {
        plugin: plugin.into(),
        name: name.into(),
        key: key.into(),
        window: Window { start, end },
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use serde_json::json;

    #[derive(Default)]
    struct Counter;

    #[derive(Default, Serialize, Deserialize)]
    struct Count {
        n: u64,
        first: Option<i64>,
    }

    thread_local! {
        static SPEC: std::cell::Cell<(u8, &'static str)> = const { std::cell::Cell::new((0, "page")) };
        /// `merge` keeps the larger count instead of adding (not exact).
        static BAD_MERGE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    impl Aggregator for Counter {
        type State = Count;
        fn describe() -> Description {
            let (w, by) = SPEC.with(|s| s.get());
            let d = Description::aggregator("counter", "0.1.0")
                .key_by(by)
                .fields(&["timestamp", "page"]);
            match w {
                0 => d.tumbling(10),
                1 => d.sliding(10, 5),
                _ => d.session(10),
            }
        }
        fn configure(&mut self, config: &Config) -> Result<(), String> {
            match config.json().get("fail") {
                Some(_) => Err("refused".into()),
                None => Ok(()),
            }
        }
        fn add(&self, s: &mut Count, events: &Events) {
            s.n += events.len() as u64;
            let first = events.timestamps().iter().min().copied();
            s.first = s.first.into_iter().chain(first).min();
        }
        fn merge(&self, s: &mut Count, o: Count) {
            s.n = if BAD_MERGE.with(|b| b.get()) {
                s.n.max(o.n)
            } else {
                s.n + o.n
            };
            s.first = s.first.into_iter().chain(o.first).min();
        }
        fn finish(&self, s: Count, _: Window, out: &mut Metrics) {
            out.single("count", s.n as f64);
            out.single("first", s.first.unwrap_or(-1) as f64);
        }
    }

    fn counts(window: u8, by: &'static str, events: &[Value]) -> Vec<(String, i64, i64, f64)> {
        SPEC.with(|s| s.set((window, by)));
        run_aggregator::<Counter>("{}", events)
            .unwrap()
            .into_iter()
            .filter(|m| m.name == "count")
            .map(|m| {
                (
                    m.key,
                    m.window.start,
                    m.window.end,
                    m.value.get("").unwrap(),
                )
            })
            .collect()
    }

    fn ev(page: &str, ts: i64) -> Value {
        json!({"page": page, "timestamp": ts})
    }

    #[test]
    fn batch_columns_and_dictionary() {
        let events = [
            json!({"timestamp": 5, "page": "/a", "latency_ms": 12.5, "country": 7}),
            json!({"timestamp": "1970-01-01T00:00:01.5Z", "page": "/b", "latency_ms": "slow"}),
            json!({"page": "/a", "country": null, "value": 3}),
        ];
        let b = batch(
            &["timestamp", "page", "latency_ms", "country", "value"],
            &events,
        );
        assert_eq!(b.len, 3);
        assert_eq!(b.columns[0], ColumnData::Int(vec![5, 1500, 0]));
        assert_eq!(b.columns[1], ColumnData::Text(vec![0, 1, 0]));
        assert_eq!(b.columns[3], ColumnData::Text(vec![2, MISSING, MISSING]));
        let ColumnData::Float(lat) = &b.columns[2] else {
            panic!()
        };
        assert_eq!(lat[0], 12.5);
        assert!(lat[1].is_nan() && lat[2].is_nan());
        let ColumnData::Float(val) = &b.columns[4] else {
            panic!()
        };
        assert_eq!(val[2], 3.0);
        assert_eq!(b.dict_str(1), Some("/b"));
        assert_eq!(b.dict_str(2), Some("7"));
        let e = b.events();
        assert!(e.text("page").is(2, "/a"));
        assert!(!e.text("page").is(1, "/a") && !e.text("page").is(2, "/"));
        assert!(
            !e.text("country").is(1, ""),
            "a missing value equals nothing"
        );
        assert_eq!(e.text("country").get(1), None);
    }

    #[test]
    fn count_of_a_text_value() {
        let types = ["click", "page_view", "error", "page_view", "", "page_views"];
        let mut events: Vec<Value> = types
            .iter()
            .map(|t| json!({"event_type": t, "page": "/a"}))
            .collect();
        events.insert(2, json!({"page": "/b"}));
        events.push(json!({"event_type": "page_view", "page": "/b"}));
        let b = batch(&["page", "event_type"], &events);
        let all = b.events().text("event_type");
        assert_eq!(all.count("page_view"), 3);
        assert_eq!(all.count(""), 1, "the empty string is a value");
        assert_eq!(all.count("purchase"), 0);
        assert_eq!(all.count("/a"), 0, "another column's value");
        // A slice counts its own events only; the match may come late.
        assert_eq!(b.slice(0, 3).text("event_type").count("page_view"), 1);
        assert_eq!(b.slice(4, 4).text("event_type").count("page_view"), 2);
        assert_eq!(b.slice(2, 1).text("event_type").count("page_view"), 0);
        assert_eq!(b.slice(0, 0).text("event_type").count("page_view"), 0);
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_ms(&json!(1_700_000_000_123i64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(timestamp_ms(&json!(true)), None);
    }

    #[test]
    fn tumbling_groups_by_key_and_window() {
        let events = [
            ev("/a", 1),
            ev("/b", 3),
            ev("/a", 9),
            ev("/a", 10),
            ev("/a", -1),
            ev("/b", 4),
            ev("/b", 5),
        ];
        assert_eq!(
            counts(0, "page", &events),
            vec![
                ("/a".into(), -10, 0, 1.0),
                ("/a".into(), 0, 10, 2.0),
                ("/b".into(), 0, 10, 3.0),
                ("/a".into(), 10, 20, 1.0),
            ]
        );
        assert_eq!(
            counts(0, "", &events[..3]),
            vec![(String::new(), 0, 10, 3.0)]
        );
        assert_eq!(
            counts(0, "missing", &events[..1]),
            vec![(String::new(), 0, 10, 1.0)]
        );
    }

    #[test]
    fn sliding_windows_overlap() {
        assert_eq!(
            counts(1, "", &[ev("/", 7), ev("/", 12)]),
            vec![
                (String::new(), 0, 10, 1.0),
                (String::new(), 5, 15, 2.0),
                (String::new(), 10, 20, 1.0)
            ]
        );
    }

    #[test]
    fn a_sliding_aggregator_whose_merge_is_not_exact_is_refused() {
        SPEC.with(|s| s.set((1, "")));
        BAD_MERGE.with(|b| b.set(true));
        let out = run_aggregator::<Counter>("{}", &[ev("/", 7), ev("/", 12)]);
        BAD_MERGE.with(|b| b.set(false));
        let e = out.unwrap_err();
        assert!(e.contains("sliding window [5, 15) of key ``"), "{e}");
        assert!(e.contains("`merge` must combine two states exactly"), "{e}");
        // Tumbling windows never merge: the same plugin passes.
        SPEC.with(|s| s.set((0, "")));
        BAD_MERGE.with(|b| b.set(true));
        let out = run_aggregator::<Counter>("{}", &[ev("/", 7), ev("/", 12)]);
        BAD_MERGE.with(|b| b.set(false));
        assert!(out.is_ok());
    }

    #[test]
    fn sessions_merge_when_they_touch() {
        let events = [
            ev("/a", 0),
            ev("/a", 30),
            ev("/a", 20),
            ev("/b", 5),
            ev("/a", 10),
            ev("/a", 100),
        ];
        assert_eq!(
            counts(2, "page", &events),
            vec![
                ("/b".into(), 5, 15, 1.0),
                ("/a".into(), 0, 40, 4.0),
                ("/a".into(), 100, 110, 1.0)
            ]
        );
        SPEC.with(|s| s.set((2, "page")));
        let out = run_aggregator::<Counter>("", &events).unwrap();
        let first = out
            .iter()
            .find(|m| m.name == "first" && m.window.start == 0)
            .unwrap();
        assert_eq!(first.value, MetricValue::Single(0.0));
    }

    #[test]
    fn aggregator_errors() {
        SPEC.with(|s| s.set((0, "page")));
        assert_eq!(
            run_aggregator::<Counter>(r#"{"fail":1}"#, &[]).unwrap_err(),
            "refused"
        );
        assert!(run_aggregator::<Counter>("[1]", &[]).is_err());
        let err = run_aggregator::<Counter>("{}", &[json!({"page": "/"})]).unwrap_err();
        assert!(err.contains("event 0"), "{err}");
        assert_eq!(run_aggregator::<Counter>("{}", &[]).unwrap(), vec![]);
    }

    /// Alerts on `x` events; `arm` sets a timer 10 ms later that alerts if
    /// no `disarm` came first.
    #[derive(Default)]
    struct Watch;

    impl Detector for Watch {
        type State = Option<i64>;
        fn describe() -> Description {
            Description::detector("watch", "0.1.0")
                .key_by("user_id")
                .fields(&["event_type", "timestamp"])
        }
        fn on_events(&self, ctx: &mut Ctx<'_>, armed: &mut Option<i64>, events: &Events<'_>) {
            let ts = events.timestamps();
            for (i, t) in events.text("event_type").iter().enumerate() {
                match t {
                    Some("x") => {
                        ctx.alert(Alert::warning("x", ts[i], format!("x by {}", ctx.key())))
                    }
                    Some("arm") => {
                        *armed = Some(ts[i]);
                        ctx.set_timer(ts[i] + 10);
                        ctx.set_timer(ts[i] + 10);
                    }
                    Some("disarm") => *armed = None,
                    _ => {}
                }
            }
        }
        fn on_timer(&self, ctx: &mut Ctx<'_>, armed: &mut Option<i64>, time: i64) {
            if let Some(t) = armed.take() {
                ctx.alert(
                    Alert::critical("timeout", time, format!("armed at {t}"))
                        .with_value(ctx.watermark() as f64),
                );
            }
        }
    }

    fn u(user: &str, event_type: &str, ts: i64) -> Value {
        json!({"user_id": user, "event_type": event_type, "timestamp": ts})
    }

    #[test]
    fn detector_events_and_timers() {
        let events = [
            u("a", "arm", 0),
            u("b", "x", 1),
            u("b", "arm", 5),
            u("a", "view", 10),
            u("b", "disarm", 12),
        ];
        let alerts = run_detector::<Watch>("{}", &events).unwrap();
        let got: Vec<(&str, &str, i64)> = alerts
            .iter()
            .map(|a| (a.key.as_str(), a.alert.rule.as_str(), a.alert.time))
            .collect();
        assert_eq!(got, vec![("b", "x", 1), ("a", "timeout", 10)]);
        assert_eq!(alerts[0].alert.message, "x by b");
        assert_eq!(alerts[1].alert.severity, Severity::Critical);
        assert_eq!(alerts[1].alert.value, Some(10.0));
    }

    #[test]
    fn harness_keeps_and_deletes_states() {
        let mut h = DetectorHarness::<Watch>::new("").unwrap();
        assert!(
            h.events(&[u("a", "arm", 100), u("b", "arm", 100)])
                .unwrap()
                .is_empty()
        );
        assert_eq!(h.keys(), vec!["a", "b"]);
        assert_eq!(h.state("a"), Some(Some(100)));
        assert_eq!(h.timers(), vec![("a".into(), 110), ("b".into(), 110)]);
        assert!(h.events(&[u("a", "disarm", 105)]).unwrap().is_empty());
        assert_eq!(h.keys(), vec!["b"], "a default state is deleted");
        assert_eq!(h.watermark(), 105);
        let fired = h.advance(110).unwrap();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].key, "b");
        assert!(h.keys().is_empty() && h.timers().is_empty());
        assert!(h.finish().unwrap().is_empty());
        let err = DetectorHarness::<Watch>::new(r#"{"x": 1}"#).err().unwrap();
        assert!(err.contains("takes no options"), "{err}");
        let err = h.metrics(&[]).unwrap_err();
        assert!(err.contains("events"), "{err}");
    }

    /// Options of [`Nth`].
    #[derive(Debug, Clone, PartialEq, Deserialize, Settings)]
    #[serde(deny_unknown_fields, default)]
    struct NthSettings {
        /// Alert at this many `x` events of one user
        #[setting(min = 1, max = 10)]
        at: u32,
    }

    impl Default for NthSettings {
        fn default() -> Self {
            NthSettings { at: 3 }
        }
    }

    /// Alerts at a user's `at`-th `x` event: options from a settings struct.
    #[derive(Default)]
    struct Nth {
        at: u32,
    }

    impl Detector for Nth {
        type State = u32;
        fn describe() -> Description {
            Description::detector("nth", "0.1.0")
                .key_by("user_id")
                .fields(&["event_type", "timestamp"])
                .settings::<NthSettings>()
        }
        fn configure(&mut self, config: &Config) -> Result<(), String> {
            self.at = config.settings::<NthSettings>()?.at;
            Ok(())
        }
        fn on_events(&self, ctx: &mut Ctx<'_>, seen: &mut u32, events: &Events<'_>) {
            let ts = events.timestamps();
            for (i, t) in events.text("event_type").iter().enumerate() {
                if t == Some("x") {
                    *seen += 1;
                    if *seen == self.at {
                        ctx.alert(Alert::warning("nth", ts[i], ctx.key().to_string()));
                    }
                }
            }
        }
    }

    #[test]
    fn harness_configures_a_settings_struct() {
        let events: Vec<Value> = (0..5).map(|i| u("a", "x", i)).collect();
        let times = |config: &str| -> Result<Vec<i64>, String> {
            let alerts = run_detector::<Nth>(config, &events)?;
            Ok(alerts.iter().map(|a| a.alert.time).collect())
        };
        assert_eq!(times(""), Ok(vec![2]), "the default config: at 3");
        assert_eq!(times("{}"), Ok(vec![2]));
        assert_eq!(times(r#"{"at": 5}"#), Ok(vec![4]));
        assert_eq!(
            times(r#"{"at": 0}"#),
            Err("invalid config: at must be within 1..=10, got 0".into())
        );
        let err = DetectorHarness::<Nth>::new(r#"{"after": 1}"#)
            .err()
            .unwrap();
        assert!(err.contains("unknown field `after`"), "{err}");
        assert_eq!(Nth::describe().default_config, r#"{"at":3}"#);
    }

    /// Alerts when a metric's value exceeds 1, keyed by the metric's key.
    #[derive(Default)]
    struct Over;

    impl Detector for Over {
        type State = u32;
        fn describe() -> Description {
            Description::detector("over", "0.1.0")
                .key_by("key")
                .on_metrics(&["agg/*"])
        }
        fn on_metrics(&self, ctx: &mut Ctx<'_>, seen: &mut u32, metrics: &[MetricIn]) {
            for m in metrics {
                *seen += 1;
                if m.value.get("p95").unwrap_or(0.0) > 1.0 {
                    ctx.alert(Alert::warning(
                        "over",
                        m.window.end,
                        format!("{} #{seen}", m.name),
                    ));
                }
            }
        }
    }

    #[test]
    fn metric_detector_keys_and_filters() {
        let several = |v| MetricValue::Several(vec![("p95".into(), v)]);
        let metrics = [
            metric("agg", "lat", "k1", 0, 5, MetricValue::Single(2.0)),
            metric("other", "lat", "k1", 0, 5, MetricValue::Single(5.0)),
            metric("agg", "lat", "k2", 0, 5, several(0.5)),
            metric("agg", "lat", "k1", 5, 10, several(0.5)),
            metric("agg", "lat", "k2", 5, 10, several(1.5)),
        ];
        let alerts = run_metric_detector::<Over>("{}", &metrics).unwrap();
        let got: Vec<(&str, &str, i64)> = alerts
            .iter()
            .map(|a| (a.key.as_str(), a.alert.message.as_str(), a.alert.time))
            .collect();
        assert_eq!(got, vec![("k1", "lat #1", 5), ("k2", "lat #2", 10)]);
        assert!(run_metric_detector::<Watch>("{}", &metrics).is_err());
    }
}
