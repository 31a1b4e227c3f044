//! Shadow versions, the comparison: after every round, what each shadow
//! emitted is matched with what its live version emitted in the same round —
//! metrics by (name, key, window), alerts by id, the n-th update of a window
//! with the n-th — and counted equal or different. Both run at the same
//! barrier on the same events under the same watermark, so an identical
//! build fires the same windows in the same round; a window only one side
//! fired is a difference too. The report is read by the API
//! (`GET /api/plugins/{name}/shadow`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::output::{DeadLetter, Output, ValueField};
use crate::status::PluginCounters;

/// Differences kept per shadow (the first ones), and failures.
pub const KEPT_DIFFERENCES: usize = 1000;
const KEPT_FAILURES: usize = 5;

/// What a shadow started with, from the lifecycle service.
#[derive(Debug, Clone)]
pub struct ShadowStart {
    pub plugin: String,
    pub version: String,
    pub hash: String,
    pub live_version: String,
    pub live_hash: String,
    /// How its state began, in words (copied, migrated, empty and why).
    pub state: String,
    pub counters: Arc<PluginCounters>,
}

/// One output one side emitted and the other did not, or emitted
/// otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `metric` or `alert`.
    pub kind: &'static str,
    /// The metric's name, or the alert's rule.
    pub name: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_start: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    /// What the live version emitted (`null`: nothing).
    pub live: Value,
    /// What the shadow emitted (`null`: nothing).
    pub shadow: Value,
}

/// One shadow's comparison so far.
#[derive(Debug)]
pub struct ShadowRun {
    pub start: ShadowStart,
    pub started_at: i64,
    /// Input events since it started.
    pub events: u64,
    pub compared: u64,
    pub equal: u64,
    pub different: u64,
    /// Of `different`: emitted by the live version only, by the shadow only.
    pub only_live: u64,
    pub only_shadow: u64,
    pub differences: Vec<Difference>,
    /// The inputs the shadow failed on (kept out of the dead letters).
    pub failed_inputs: u64,
    pub failures: Vec<Value>,
    /// Its last lifecycle events (degraded, recovered).
    pub events_log: Vec<Value>,
}

impl ShadowRun {
    fn new(start: ShadowStart) -> Self {
        ShadowRun {
            start,
            started_at: now_ms(),
            events: 0,
            compared: 0,
            equal: 0,
            different: 0,
            only_live: 0,
            only_shadow: 0,
            differences: Vec::new(),
            failed_inputs: 0,
            failures: Vec::new(),
            events_log: Vec::new(),
        }
    }

    /// The report, with the first `limit` differences.
    pub fn report(&self, limit: usize) -> Value {
        let s = &self.start;
        json!({
            "plugin": s.plugin,
            "live": {"version": s.live_version, "hash": s.live_hash},
            "shadow": {"version": s.version, "hash": s.hash},
            "started_at": self.started_at,
            "state": s.state,
            "events": self.events,
            "compared": self.compared,
            "equal": self.equal,
            "different": self.different,
            "only_live": self.only_live,
            "only_shadow": self.only_shadow,
            "differences_kept": self.differences.len(),
            "first_differences": self.differences.iter().take(limit).collect::<Vec<_>>(),
            "status": s.counters.status(),
            "counters": s.counters.snapshot(),
            "failed_inputs": self.failed_inputs,
            "failures": self.failures,
            "health": self.events_log,
        })
    }

    /// A short form for the plugin list.
    pub fn summary(&self) -> Value {
        json!({
            "version": self.start.version,
            "hash": self.start.hash,
            "state": self.start.state,
            "status": self.start.counters.status(),
            "events": self.events,
            "compared": self.compared,
            "equal": self.equal,
            "different": self.different,
        })
    }

    fn differ(&mut self, d: Difference) {
        self.different += 1;
        if self.differences.len() < KEPT_DIFFERENCES {
            self.differences.push(d);
        }
    }
}

/// The shadows running, by plugin: shared by the lifecycle service, the
/// runner (which compares) and the API.
#[derive(Debug, Default)]
pub struct ShadowBoard {
    runs: Mutex<BTreeMap<String, ShadowRun>>,
}

/// A comparable output: its identity and what it says.
struct Item {
    id: String,
    diff: Difference,
    value: Value,
}

fn item(o: &Output) -> Option<Item> {
    match o {
        Output::Metric(m) => {
            let value = match &m.value {
                ValueField::Single(x) => json!(x),
                ValueField::Several(v) => serde_json::to_value(v).unwrap_or(Value::Null),
            };
            Some(Item {
                id: format!(
                    "m\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    m.name, m.key, m.window_start, m.window_end
                ),
                diff: Difference {
                    kind: "metric",
                    name: m.name.clone(),
                    key: m.key.clone(),
                    window_start: Some(m.window_start),
                    window_end: Some(m.window_end),
                    id: None,
                    time: None,
                    live: Value::Null,
                    shadow: Value::Null,
                },
                value,
            })
        }
        Output::Alert(a) => Some(Item {
            id: format!("a\u{1f}{}", a.id),
            diff: Difference {
                kind: "alert",
                name: a.rule.clone(),
                key: a.key.clone(),
                window_start: None,
                window_end: None,
                id: Some(a.id.clone()),
                time: Some(a.time),
                live: Value::Null,
                shadow: Value::Null,
            },
            value: json!({"severity": a.severity, "message": a.message, "value": a.value}),
        }),
        Output::Plugin(_) => None,
    }
}

impl ShadowBoard {
    pub fn start(&self, start: ShadowStart) {
        let mut runs = self.lock();
        runs.insert(start.plugin.clone(), ShadowRun::new(start));
    }

    /// Stop comparing for `plugin`; its last report.
    pub fn end(&self, plugin: &str) -> Option<Value> {
        self.lock()
            .remove(plugin)
            .map(|r| r.report(KEPT_DIFFERENCES))
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The plugins with a shadow running.
    pub fn plugins(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The live version of `plugin` changed under its shadow.
    pub fn live_changed(&self, plugin: &str, version: &str, hash: &str) {
        if let Some(r) = self.lock().get_mut(plugin) {
            r.start.live_version = version.to_string();
            r.start.live_hash = hash.to_string();
        }
    }

    pub fn report(&self, plugin: &str, limit: usize) -> Option<Value> {
        self.lock().get(plugin).map(|r| r.report(limit))
    }

    pub fn summary(&self, plugin: &str) -> Option<Value> {
        self.lock().get(plugin).map(ShadowRun::summary)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ShadowRun>> {
        self.runs.lock().expect("shadow board lock")
    }

    /// One round: `events` input events; what the live versions emitted
    /// (`live`, every plugin's), what the shadows emitted, and what they
    /// failed on.
    pub fn compare_round(
        &self,
        events: usize,
        live: &[Output],
        shadow: Vec<Output>,
        shadow_dead: Vec<DeadLetter>,
    ) {
        let mut runs = self.lock();
        if runs.is_empty() {
            return;
        }
        for r in runs.values_mut() {
            r.events += events as u64;
        }
        // The n-th output of an identity on each side pairs with the n-th
        // on the other (a window's late updates share its identity).
        let mut sides: HashMap<&str, (Vec<Item>, Vec<Item>)> = HashMap::new();
        for o in live {
            let plugin = match o {
                Output::Metric(m) => &*m.plugin,
                Output::Alert(a) => &*a.plugin,
                Output::Plugin(_) => continue,
            };
            if let Some(i) = runs.contains_key(plugin).then(|| item(o)).flatten() {
                sides.entry(plugin).or_default().0.push(i);
            }
        }
        for o in &shadow {
            match o {
                Output::Plugin(e) => {
                    if let Some(r) = runs.get_mut(&e.plugin) {
                        if r.events_log.len() == KEPT_FAILURES {
                            r.events_log.remove(0);
                        }
                        r.events_log
                            .push(json!({"event": e.event, "message": e.message, "time": e.time}));
                    }
                }
                Output::Metric(m) if runs.contains_key(&*m.plugin) => {
                    sides.entry(&m.plugin).or_default().1.extend(item(o));
                }
                Output::Alert(a) if runs.contains_key(&*a.plugin) => {
                    sides.entry(&a.plugin).or_default().1.extend(item(o));
                }
                _ => {}
            }
        }
        for d in shadow_dead {
            let Some(r) = d.plugin.as_deref().and_then(|p| runs.get_mut(p)) else {
                continue;
            };
            r.failed_inputs += 1;
            if r.failures.len() < KEPT_FAILURES {
                r.failures.push(json!({"reason": d.reason, "detail": d.detail, "source": d.source, "partition": d.partition, "offset": d.offset}));
            }
        }
        for (plugin, (live, shadow)) in sides {
            let Some(r) = runs.get_mut(plugin) else {
                continue;
            };
            compare_sides(r, live, shadow);
        }
    }
}

fn compare_sides(r: &mut ShadowRun, live: Vec<Item>, shadow: Vec<Item>) {
    let (equal, different) = (r.equal, r.different);
    compare_items(r, live, shadow);
    let m = &crate::metrics::metrics().shadow_compared;
    let plugin = r.start.plugin.as_str();
    m.with_label_values(&[plugin, "equal"])
        .inc_by(r.equal - equal);
    m.with_label_values(&[plugin, "different"])
        .inc_by(r.different - different);
}

fn compare_items(r: &mut ShadowRun, live: Vec<Item>, shadow: Vec<Item>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut shadow_by: HashMap<(String, usize), Item> = HashMap::new();
    let mut shadow_order: Vec<(String, usize)> = Vec::new();
    for i in shadow {
        let n = seen.entry(i.id.clone()).or_default();
        let k = (i.id.clone(), *n);
        *n += 1;
        shadow_order.push(k.clone());
        shadow_by.insert(k, i);
    }
    seen.clear();
    for l in live {
        let n = seen.entry(l.id.clone()).or_default();
        let k = (l.id.clone(), *n);
        *n += 1;
        r.compared += 1;
        match shadow_by.remove(&k) {
            Some(s) if s.value == l.value => r.equal += 1,
            Some(s) => r.differ(Difference {
                live: l.value,
                shadow: s.value,
                ..l.diff
            }),
            None => {
                r.only_live += 1;
                r.differ(Difference {
                    live: l.value,
                    ..l.diff
                });
            }
        }
    }
    for k in shadow_order {
        if let Some(s) = shadow_by.remove(&k) {
            r.compared += 1;
            r.only_shadow += 1;
            r.differ(Difference {
                shadow: s.value,
                ..s.diff
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::MetricOut;

    fn metric(key: &str, end: i64, v: f64) -> Output {
        Output::Metric(MetricOut {
            kind: "metric",
            plugin: Arc::from("p"),
            name: "n".into(),
            key: key.into(),
            window_start: end - 5,
            window_end: end,
            value: ValueField::Single(v),
        })
    }

    fn board() -> ShadowBoard {
        let b = ShadowBoard::default();
        b.start(ShadowStart {
            plugin: "p".into(),
            version: "2".into(),
            hash: "h2".into(),
            live_version: "1".into(),
            live_hash: "h1".into(),
            state: "copied".into(),
            counters: Arc::default(),
        });
        b
    }

    #[test]
    fn windows_pair_by_identity_and_update_order() {
        let b = board();
        let live = vec![
            metric("a", 10, 1.0),
            metric("b", 10, 2.0),
            metric("a", 10, 3.0),
        ];
        let shadow = vec![
            metric("b", 10, 2.0),
            metric("a", 10, 1.0),
            metric("a", 10, 4.0),
            metric("c", 10, 1.0),
        ];
        b.compare_round(7, &live, shadow, Vec::new());
        let r = b.report("p", 10).unwrap();
        assert_eq!(r["events"], 7);
        assert_eq!(r["compared"], 4);
        assert_eq!(r["equal"], 2);
        assert_eq!(r["different"], 2);
        assert_eq!(r["only_shadow"], 1);
        let d = &r["first_differences"];
        assert_eq!(d[0]["key"], "a");
        assert_eq!(d[0]["live"], 3.0);
        assert_eq!(d[0]["shadow"], 4.0);
        assert_eq!(d[1]["key"], "c");
        assert_eq!(d[1]["live"], Value::Null);
    }

    #[test]
    fn other_plugins_are_not_compared() {
        let b = board();
        let mut other = metric("a", 10, 1.0);
        if let Output::Metric(m) = &mut other {
            m.plugin = Arc::from("q");
        }
        b.compare_round(1, &[other], Vec::new(), Vec::new());
        assert_eq!(b.report("p", 10).unwrap()["compared"], 0);
    }
}
