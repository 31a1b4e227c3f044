//! A live plugin instance: one `Store` with its bindings, the config it was
//! initialised with, and the typed calls. A trap poisons a component instance,
//! so after any failure the next call re-instantiates from the `PluginPre`
//! (microseconds with the pooling allocator) and re-runs `init`.

use std::sync::Arc;

use wasmtime::Store;

use super::bindings::{Plugin, types as t};
use super::io::{
    ColumnData, Columns, MetricIn, MetricValue, Packed, RawAlert, RawMetric, Severity, Step,
};
use super::runtime::{Loaded, PluginCtx, root};
use super::{CallError, PluginCalls, PluginError};

pub struct Instance {
    call_duration: prometheus::Histogram,
    batch_size: prometheus::Histogram,
    loaded: Arc<Loaded>,
    config: String,
    store: Store<PluginCtx>,
    bindings: Plugin,
    poisoned: bool,
}

impl Instance {
    /// Instantiate and `init` with `config` (a JSON object).
    pub fn new(loaded: Arc<Loaded>, config: &serde_json::Value) -> Result<Self, PluginError> {
        let config = config.to_string();
        let (store, bindings) = Self::fresh(&loaded, &config).map_err(|e| match e {
            CallError::Plugin(why) => PluginError::BadConfig {
                plugin: loaded.description.name.clone(),
                why,
            },
            other => PluginError::InitFailed {
                plugin: loaded.description.name.clone(),
                why: other.to_string(),
            },
        })?;
        let name = loaded.description.name.as_str();
        let m = crate::metrics::metrics();
        Ok(Instance {
            call_duration: m.plugin_call_duration.with_label_values(&[name]),
            batch_size: m.plugin_batch_size.with_label_values(&[name]),
            loaded,
            config,
            store,
            bindings,
            poisoned: false,
        })
    }

    fn fresh(loaded: &Loaded, config: &str) -> Result<(Store<PluginCtx>, Plugin), CallError> {
        let mut store = loaded.new_store();
        store.set_epoch_deadline(loaded.deadline_ticks());
        let bindings = loaded
            .pre
            .instantiate(&mut store)
            .map_err(|e| CallError::Trap(root(&e)))?;
        match bindings.rtap_plugin_meta().call_init(&mut store, config) {
            Ok(Ok(())) => Ok((store, bindings)),
            Ok(Err(why)) => Err(CallError::Plugin(why)),
            Err(e) => Err(classify(&e, &store)),
        }
    }

    pub fn loaded(&self) -> &Arc<Loaded> {
        &self.loaded
    }

    /// Run one export under the deadline; a trap poisons the instance.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Plugin, &mut Store<PluginCtx>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallError> {
        if self.poisoned {
            let (store, bindings) = Self::fresh(&self.loaded, &self.config)?;
            self.store = store;
            self.bindings = bindings;
            self.poisoned = false;
        }
        self.store.set_epoch_deadline(self.loaded.deadline_ticks());
        let started = std::time::Instant::now();
        let res = f(&self.bindings, &mut self.store);
        self.call_duration.observe(started.elapsed().as_secs_f64());
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(msg)) => Err(CallError::Plugin(msg)),
            Err(e) => {
                self.poisoned = true;
                Err(classify(&e, &self.store))
            }
        }
    }
}

impl PluginCalls for Instance {
    fn config(&self) -> &str {
        &self.config
    }

    fn add(
        &mut self,
        group_lens: &[u32],
        states: &Packed,
        batch: Columns,
    ) -> Result<Packed, CallError> {
        self.batch_size.observe(batch.len as f64);
        let batch = columns_to_wit(batch);
        let states = packed_to_wit(states);
        let out = self.call(|b, s| {
            b.rtap_plugin_aggregator()
                .call_add(s, group_lens, &states, &batch)
        })?;
        packed_checked(out, group_lens.len())
    }

    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(|bi, s| bi.rtap_plugin_aggregator().call_merge(s, a, b))
    }

    fn finish(
        &mut self,
        windows: &[(i64, i64)],
        states: &Packed,
    ) -> Result<Vec<RawMetric>, CallError> {
        let ws: Vec<t::Window> = windows
            .iter()
            .map(|&(start, end)| t::Window { start, end })
            .collect();
        let states = packed_to_wit(states);
        let out = self.call(|b, s| b.rtap_plugin_aggregator().call_finish(s, &ws, &states))?;
        metrics_from_wit(out, windows.len(), self.loaded.limits.max_outputs_per_call)
    }

    fn on_events(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &Packed,
        batch: Columns,
        watermark: i64,
    ) -> Result<Step, CallError> {
        self.batch_size.observe(batch.len as f64);
        let batch = columns_to_wit(batch);
        let states = packed_to_wit(states);
        let out = self.call(|b, s| {
            b.rtap_plugin_detector()
                .call_on_events(s, keys, group_lens, &states, &batch, watermark)
        })?;
        step_from_wit(out, keys.len(), self.loaded.limits.max_outputs_per_call)
    }

    fn on_metrics(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &Packed,
        metrics: &[MetricIn],
    ) -> Result<Step, CallError> {
        let ms: Vec<t::MetricIn> = metrics
            .iter()
            .map(|m| t::MetricIn {
                plugin: m.plugin.clone(),
                name: m.name.clone(),
                key: m.key.clone(),
                window: t::Window {
                    start: m.start,
                    end: m.end,
                },
                value: value_to_wit(&m.value),
            })
            .collect();
        let states = packed_to_wit(states);
        let out = self.call(|b, s| {
            b.rtap_plugin_detector()
                .call_on_metrics(s, keys, group_lens, &states, &ms)
        })?;
        step_from_wit(out, keys.len(), self.loaded.limits.max_outputs_per_call)
    }

    fn on_timers(
        &mut self,
        keys: &[String],
        group_lens: &[u32],
        states: &Packed,
        times: &[i64],
    ) -> Result<Step, CallError> {
        let states = packed_to_wit(states);
        let out = self.call(|b, s| {
            b.rtap_plugin_detector()
                .call_on_timers(s, keys, group_lens, &states, times)
        })?;
        step_from_wit(out, keys.len(), self.loaded.limits.max_outputs_per_call)
    }

    fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, CallError> {
        self.call(|b, s| b.rtap_plugin_meta().call_migrate(s, from, state))
    }
}

/// Name the failure: deadline, memory cap, or another trap (with what the
/// plugin wrote to stderr, e.g. a panic message).
fn classify(e: &wasmtime::Error, store: &Store<PluginCtx>) -> CallError {
    let trap = e.downcast_ref::<wasmtime::Trap>().copied();
    if trap == Some(wasmtime::Trap::Interrupt) {
        return CallError::Timeout;
    }
    // The trap code says what happened; the full message carries a wasm
    // backtrace, which belongs in debug logs, not in every dead letter.
    let msg = match trap {
        Some(t) => t.to_string(),
        None => root(e),
    };
    tracing::debug!(error = ?e, "plugin trap");
    let stderr = store.data().stderr.tail();
    if msg.contains("growing memory")
        || msg.contains("memory minimum size")
        || stderr.contains("memory allocation of")
    {
        return CallError::OutOfMemory;
    }
    // A Rust panic prints "thread '…' panicked at FILE:LINE:COL:" then the
    // message; keep the last such report.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .collect();
    let said = match lines.iter().rposition(|l| l.contains("panicked at")) {
        Some(i) => Some(lines[i..].join(" ")),
        None => lines.last().map(|l| l.to_string()),
    };
    match said {
        Some(text) => CallError::Trap(format!(
            "{msg}; plugin said: {}",
            truncate(text.trim(), 400)
        )),
        None => CallError::Trap(msg),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn packed_to_wit(p: &Packed) -> t::Packed {
    t::Packed {
        data: p.data.clone(),
        ends: p.ends.clone(),
    }
}

fn packed_from_wit(p: t::Packed) -> Packed {
    Packed {
        data: p.data,
        ends: p.ends,
    }
}

fn columns_to_wit(c: Columns) -> t::EventBatch {
    t::EventBatch {
        len: c.len,
        columns: c
            .columns
            .into_iter()
            .map(|c| match c {
                ColumnData::Int(v) => t::Column::Int(v),
                ColumnData::Float(v) => t::Column::Float(v),
                ColumnData::Text(v) => t::Column::Text(v),
            })
            .collect(),
        dict_data: c.dict_data,
        dict_ends: c.dict_ends,
    }
}

/// The states `add` returned, checked: one per group, offsets in order and
/// inside the data.
pub(crate) fn packed_checked(p: t::Packed, groups: usize) -> Result<Packed, CallError> {
    let p = packed_from_wit(p);
    p.validate(groups).map_err(CallError::Contract)?;
    Ok(p)
}

/// The metrics `finish` returned for `windows` windows, checked: at most
/// `max`, each naming one of the windows.
pub(crate) fn metrics_from_wit(
    out: Vec<t::Metric>,
    windows: usize,
    max: usize,
) -> Result<Vec<RawMetric>, CallError> {
    if out.len() > max {
        return Err(CallError::TooMany {
            what: "metrics",
            got: out.len(),
            max,
        });
    }
    out.into_iter()
        .map(|m| {
            if m.group as usize >= windows {
                return Err(CallError::Contract(format!(
                    "metric `{}` names window {} of {windows}",
                    m.name, m.group
                )));
            }
            Ok(RawMetric {
                group: m.group,
                name: m.name,
                value: value_from_wit(m.value),
            })
        })
        .collect()
}

fn value_from_wit(v: t::MetricValue) -> MetricValue {
    match v {
        t::MetricValue::Single(x) => MetricValue::Single(x),
        t::MetricValue::Several(xs) => MetricValue::Several(xs),
    }
}

fn value_to_wit(v: &MetricValue) -> t::MetricValue {
    match v {
        MetricValue::Single(x) => t::MetricValue::Single(*x),
        MetricValue::Several(xs) => t::MetricValue::Several(xs.clone()),
    }
}

/// What a detector call returned for `keys` keys, checked: states as
/// [`packed_checked`], at most `max` alerts and timers, each naming a key.
pub(crate) fn step_from_wit(s: t::Step, keys: usize, max: usize) -> Result<Step, CallError> {
    for (what, got) in [("alerts", s.alerts.len()), ("timers", s.timers.len())] {
        if got > max {
            return Err(CallError::TooMany { what, got, max });
        }
    }
    let states = packed_from_wit(s.states);
    states.validate(keys).map_err(CallError::Contract)?;
    let mut alerts = Vec::with_capacity(s.alerts.len());
    for a in s.alerts {
        if a.group as usize >= keys {
            return Err(CallError::Contract(format!(
                "alert `{}` names key {} of {keys}",
                a.rule, a.group
            )));
        }
        alerts.push(RawAlert {
            group: a.group,
            rule: a.rule,
            severity: match a.severity {
                t::Severity::Info => Severity::Info,
                t::Severity::Warning => Severity::Warning,
                t::Severity::Critical => Severity::Critical,
            },
            message: a.message,
            time: a.time,
            value: a.value,
        });
    }
    let mut timers = Vec::with_capacity(s.timers.len());
    for tm in s.timers {
        if tm.group as usize >= keys {
            return Err(CallError::Contract(format!(
                "timer names key {} of {keys}",
                tm.group
            )));
        }
        timers.push((tm.group, tm.at));
    }
    Ok(Step {
        states,
        alerts,
        timers,
    })
}
