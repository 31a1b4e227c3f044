//! The recent outputs, in memory, for `GET /api/history`: a dashboard that
//! opens (or reconnects) loads the last minutes at once instead of waiting
//! for new windows to fire.
//!
//! A sink fed by the WebSocket hub: every line the hub publishes passes
//! through [`History::record`], which keeps the metrics and alerts — the
//! same `Arc<str>` the hub broadcasts, so a line is stored once. Its time is
//! the metric's `window_end` or the alert's `time` (event time, the clock of
//! the query's `since`).
//!
//! Two bounds, both enforced at every insert:
//! - **time**: outputs older than `retention` before the newest output's
//!   time are dropped (`--history`, 30 min by default);
//! - **memory**: past `max_bytes` (`--history-max-bytes`), the oldest output
//!   of the plugin holding the most bytes is dropped, until it fits. At high
//!   rates the per-session metrics outweigh everything else by far, so they
//!   are trimmed first and the few series the charts draw keep their whole
//!   retention.
//!
//! Nothing here is persisted: a restart starts with an empty history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Estimated bytes held per output besides its JSON text: the `Arc`'s
/// counts (16), the B-tree slot of its key and value (40 in nodes about
/// 60 % full when appended in order) and the allocator's rounding of the
/// text. `BENCHMARKS.md` ("History") checks the estimate against the
/// process's resident memory.
pub const ENTRY_OVERHEAD: usize = 96;

/// The output types the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Metric,
    Alert,
}

/// Which types a query asks for (`?types=metric,alert`; default both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Types {
    pub metric: bool,
    pub alert: bool,
}

impl Types {
    pub const ALL: Types = Types {
        metric: true,
        alert: true,
    };

    /// From the comma-separated `types` parameter; `None` or empty: both.
    /// An unknown type is an error naming it.
    pub fn parse(types: Option<&str>) -> Result<Types, String> {
        let mut t = Types {
            metric: false,
            alert: false,
        };
        for name in types.unwrap_or_default().split(',').map(str::trim) {
            match name {
                "" => {}
                "metric" => t.metric = true,
                "alert" => t.alert = true,
                other => {
                    return Err(format!(
                        "unknown output type `{other}`: the history holds `metric` and `alert`"
                    ));
                }
            }
        }
        Ok(if t.metric || t.alert { t } else { Types::ALL })
    }

    fn wants(self, kind: Kind) -> bool {
        match kind {
            Kind::Metric => self.metric,
            Kind::Alert => self.alert,
        }
    }
}

/// The type, plugin and time of an output line as `Output::to_json` writes
/// it: `{"type":"metric","plugin":…,"window_end":…}` or
/// `{"type":"alert","id":…,"plugin":…,"time":…}`; `None` for every other
/// line (pipeline status, plugin lifecycle). The fields before the time are
/// JSON strings, in which a quote is always escaped, so the first
/// `"window_end":` (`"time":`) is the field itself, whatever a key or a
/// message holds.
pub fn head(line: &str) -> Option<(Kind, &str, i64)> {
    let (kind, field) = if line.starts_with(r#"{"type":"metric","#) {
        (Kind::Metric, r#""window_end":"#)
    } else if line.starts_with(r#"{"type":"alert","#) {
        (Kind::Alert, r#""time":"#)
    } else {
        return None;
    };
    let after = |name: &str| line.find(name).map(|i| &line[i + name.len()..]);
    let plugin = after(r#""plugin":""#)?;
    let plugin = &plugin[..plugin.find('"')?];
    let time = after(field)?;
    let end = time
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(time.len(), |(i, _)| i);
    Some((kind, plugin, time[..end].parse().ok()?))
}

/// Key of an output: its time, then the order it arrived in.
type Key = (i64, u64);

#[derive(Default)]
struct PluginOutputs {
    outputs: BTreeMap<Key, (Kind, Arc<str>)>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    plugins: BTreeMap<Box<str>, PluginOutputs>,
    seq: u64,
    newest: Option<i64>,
    outputs: usize,
    bytes: usize,
}

impl Inner {
    fn cutoff(&self, retention_ms: i64) -> Option<i64> {
        self.newest.map(|n| n.saturating_sub(retention_ms))
    }

    fn pop_oldest(&mut self, plugin: &str) {
        if let Some(p) = self.plugins.get_mut(plugin)
            && let Some((_, (_, line))) = p.outputs.pop_first()
        {
            let cost = line.len() + ENTRY_OVERHEAD;
            p.bytes -= cost;
            self.bytes -= cost;
            self.outputs -= 1;
        }
    }

    /// Drop what fell out of the retention, then, while over `max_bytes`,
    /// the oldest of the plugin holding the most.
    fn evict(&mut self, retention_ms: i64, max_bytes: usize) {
        if let Some(cutoff) = self.cutoff(retention_ms) {
            let stale: Vec<Box<str>> = self
                .plugins
                .iter()
                .filter(|(_, p)| {
                    p.outputs
                        .first_key_value()
                        .is_some_and(|(k, _)| k.0 < cutoff)
                })
                .map(|(name, _)| name.clone())
                .collect();
            for name in stale {
                while self.plugins[&name]
                    .outputs
                    .first_key_value()
                    .is_some_and(|(k, _)| k.0 < cutoff)
                {
                    self.pop_oldest(&name);
                }
            }
        }
        while self.bytes > max_bytes {
            let Some(largest) = self
                .plugins
                .iter()
                .max_by_key(|(_, p)| p.bytes)
                .map(|(name, _)| name.clone())
            else {
                break;
            };
            self.pop_oldest(&largest);
        }
        self.plugins.retain(|_, p| !p.outputs.is_empty());
    }
}

/// The bounded store of recent outputs; cheap to clone (shared).
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    retention_ms: i64,
    max_bytes: usize,
}

impl History {
    /// Keep the outputs of the last `retention` (event time), in at most
    /// `max_bytes`. A zero retention keeps nothing.
    pub fn new(retention: Duration, max_bytes: usize) -> History {
        History {
            inner: Arc::default(),
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            max_bytes,
        }
    }

    pub fn from_config(config: &crate::config::Config) -> History {
        History::new(config.history.0, config.history_max_bytes.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every
        // update is a single insert or pop): keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keep `line` if it is a metric or an alert within the retention.
    pub fn record(&self, line: &Arc<str>) {
        if self.retention_ms == 0 {
            return;
        }
        let Some((kind, plugin, time)) = head(line) else {
            return;
        };
        let mut inner = self.lock();
        if inner.cutoff(self.retention_ms).is_some_and(|c| time < c) {
            return;
        }
        inner.newest = Some(inner.newest.map_or(time, |n| n.max(time)));
        inner.seq += 1;
        let key = (time, inner.seq);
        let cost = line.len() + ENTRY_OVERHEAD;
        if !inner.plugins.contains_key(plugin) {
            inner
                .plugins
                .insert(plugin.into(), PluginOutputs::default());
        }
        let p = inner.plugins.get_mut(plugin).expect("inserted above");
        p.outputs.insert(key, (kind, line.clone()));
        p.bytes += cost;
        inner.bytes += cost;
        inner.outputs += 1;
        inner.evict(self.retention_ms, self.max_bytes);
    }

    /// The outputs of `types` whose time is at or after `since`, oldest
    /// first (arrival order among equal times).
    pub fn since(&self, since: i64, types: Types) -> Vec<Arc<str>> {
        let inner = self.lock();
        let mut found: Vec<(Key, Arc<str>)> = Vec::new();
        for p in inner.plugins.values() {
            found.extend(
                p.outputs
                    .range((since, 0)..)
                    .filter(|(_, (kind, _))| types.wants(*kind))
                    .map(|(k, (_, line))| (*k, line.clone())),
            );
        }
        drop(inner);
        found.sort_unstable_by_key(|(k, _)| *k);
        found.into_iter().map(|(_, line)| line).collect()
    }

    /// Outputs held and their estimated bytes (text + [`ENTRY_OVERHEAD`]).
    pub fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.outputs, inner.bytes)
    }
}

/// A JSON array of `lines` (each already a JSON object).
pub fn json_array(lines: &[Arc<str>]) -> String {
    let mut body = String::with_capacity(2 + lines.iter().map(|l| l.len() + 1).sum::<usize>());
    body.push('[');
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(l);
    }
    body.push(']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{AlertOut, MetricOut, Output, ValueField};
    use crate::plugin::io::Severity;

    fn metric(plugin: &str, key: &str, end: i64, value: f64) -> Arc<str> {
        Arc::from(
            Output::Metric(MetricOut {
                kind: "metric",
                plugin: Arc::from(plugin),
                name: "m".into(),
                key: key.into(),
                window_start: end - 5_000,
                window_end: end,
                value: ValueField::Single(value),
            })
            .to_json(),
        )
    }

    fn alert(key: &str, message: &str, time: i64) -> Arc<str> {
        Arc::from(
            Output::Alert(AlertOut {
                kind: "alert",
                id: AlertOut::id_for("bot-burst", "bot-burst", key, time),
                plugin: Arc::from("bot-burst"),
                rule: "bot-burst".into(),
                severity: Severity::Warning,
                key: key.into(),
                message: message.into(),
                time,
                value: None,
            })
            .to_json(),
        )
    }

    #[test]
    fn head_reads_the_fields_whatever_keys_and_messages_hold() {
        let tricky = r#"x","window_end":1,"time":2,"plugin":"evil"#;
        let m = metric("page-views", tricky, 1_764_000_005_000, 3.0);
        assert_eq!(
            head(&m),
            Some((Kind::Metric, "page-views", 1_764_000_005_000))
        );
        let a = alert(tricky, tricky, -42);
        assert_eq!(head(&a), Some((Kind::Alert, "bot-burst", -42)));
        for other in [
            r#"{"type":"pipeline","time":5}"#,
            r#"{"type":"plugin","event":"loaded","plugin":"x","time":5}"#,
            r#"{"type":"metric","plugin":"x"}"#,
            "not json",
        ] {
            assert_eq!(head(other), None, "{other}");
        }
    }

    #[test]
    fn answers_since_oldest_first_by_type() {
        let h = History::new(Duration::from_secs(1800), usize::MAX);
        let lines = [
            metric("page-views", "/a", 10_000, 1.0),
            alert("u1", "burst", 7_000),
            metric("error-rate", "", 5_000, 0.1),
            metric("page-views", "/b", 10_000, 2.0),
            Arc::from(r#"{"type":"pipeline","time":9}"#),
            metric("page-views", "/a", 10_000, 4.0), // a late re-fire
        ];
        for l in &lines {
            h.record(l);
        }
        let all = h.since(0, Types::ALL);
        let want = [&lines[2], &lines[1], &lines[0], &lines[3], &lines[5]];
        assert_eq!(all.len(), want.len());
        assert!(all.iter().zip(want).all(|(a, b)| a == b), "{all:?}");
        assert_eq!(h.since(7_000, Types::ALL).len(), 4);
        assert_eq!(h.since(7_001, Types::ALL).len(), 3);
        let alerts = h.since(0, Types::parse(Some("alert")).unwrap());
        assert_eq!(alerts, vec![lines[1].clone()]);
        assert_eq!(h.held().0, 5);
        let body = json_array(&h.since(10_000, Types::ALL));
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(json_array(&[]), "[]");
    }

    #[test]
    fn keeps_the_retention_of_event_time() {
        let h = History::new(Duration::from_secs(60), usize::MAX);
        for t in (0..=120).map(|s| s * 1_000) {
            h.record(&metric("page-views", "/", t, 1.0));
        }
        let kept = h.since(i64::MIN, Types::ALL);
        assert_eq!(kept.len(), 61, "60 s before the newest (120 s), inclusive");
        assert_eq!(head(&kept[0]).unwrap().2, 60_000);
        // Older than the retention when it arrives: not kept.
        h.record(&metric("page-views", "/", 59_999, 1.0));
        assert_eq!(h.held().0, 61);
        let off = History::new(Duration::ZERO, usize::MAX);
        off.record(&metric("page-views", "/", 1, 1.0));
        assert_eq!(off.held(), (0, 0));
    }

    #[test]
    fn over_its_bytes_the_largest_plugin_loses_its_oldest_first() {
        let sessions = |t: i64| metric("session-duration", &format!("s-{t}"), t, 1.0);
        let cost = |l: &Arc<str>| l.len() + ENTRY_OVERHEAD;
        let views: Vec<_> = (1..=10)
            .map(|i| metric("page-views", "/", i * 5_000, 1.0))
            .collect();
        let budget = views.iter().map(cost).sum::<usize>() + 20 * cost(&sessions(1_045_000));
        let h = History::new(Duration::from_secs(3600), budget);
        for (i, v) in views.iter().enumerate() {
            h.record(v);
            for j in 0..100 {
                h.record(&sessions(i as i64 * 5_000 + 1_000_000 + j));
            }
        }
        let (n, bytes) = h.held();
        assert!(bytes <= budget, "{bytes} > {budget}");
        let kept = h.since(i64::MIN, Types::ALL);
        assert_eq!(n, kept.len());
        let plugin_of = |l: &Arc<str>| head(l).unwrap().1.to_string();
        assert_eq!(
            kept.iter().filter(|l| plugin_of(l) == "page-views").count(),
            10,
            "the small series is whole"
        );
        let s: Vec<i64> = kept
            .iter()
            .filter(|l| plugin_of(l) == "session-duration")
            .map(|l| head(l).unwrap().2)
            .collect();
        assert_eq!(s.len(), 20);
        assert_eq!(s[0], 9 * 5_000 + 1_000_080, "the newest sessions are kept");
    }

    #[test]
    fn types_parse_and_name_what_is_unknown() {
        assert_eq!(Types::parse(None).unwrap(), Types::ALL);
        assert_eq!(Types::parse(Some(" , ")).unwrap(), Types::ALL);
        assert_eq!(
            Types::parse(Some("metric")).unwrap(),
            Types {
                metric: true,
                alert: false
            }
        );
        assert_eq!(Types::parse(Some("alert,metric")).unwrap(), Types::ALL);
        let e = Types::parse(Some("metric,pipeline")).unwrap_err();
        assert!(e.contains("`pipeline`"), "{e}");
    }
}
