//! The generated bindings (wasm32 only) and the moves between generated types
//! and the SDK's own. Nothing else in the SDK names a generated type.

wit_bindgen::generate!({
    world: "plugin",
    path: "wit",
    pub_export_macro: true,
    default_bindings_module: "rtap_sdk::wit",
});

pub type Packed = rtap::plugin::types::Packed;
pub type EventBatch = rtap::plugin::types::EventBatch;
pub type WitWindow = rtap::plugin::types::Window;
pub type WitMetric = rtap::plugin::types::Metric;
pub type WitMetricIn = rtap::plugin::types::MetricIn;
pub type Step = rtap::plugin::types::Step;

/// One log line through the contract's `log` import.
pub fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level;
    use rtap::plugin::log as l;
    let level = match level {
        Level::Trace => l::Level::Trace,
        Level::Debug => l::Level::Debug,
        Level::Info => l::Level::Info,
        Level::Warn => l::Level::Warn,
        Level::Error => l::Level::Error,
    };
    l::log(level, message);
}

pub mod convert {
    use super::rtap::plugin::types as t;
    use crate::{
        Aggregator, Batch, ColumnData, Description, Detector, InputKind, Kind, MetricValue,
        WindowSpec, glue,
    };

    pub fn description(d: Description, state_fingerprint: String) -> t::Description {
        t::Description {
            state_fingerprint,
            name: d.name,
            version: d.version,
            kind: match d.kind {
                Kind::Aggregator => t::PluginKind::Aggregator,
                Kind::Detector => t::PluginKind::Detector,
            },
            input: match d.input {
                InputKind::Events => t::InputKind::Events,
                InputKind::Metrics => t::InputKind::Metrics,
            },
            key_by: d.key_by,
            window: match d.window {
                WindowSpec::None => t::WindowSpec::None,
                WindowSpec::Tumbling { size_ms } => t::WindowSpec::Tumbling(size_ms),
                WindowSpec::Sliding { size_ms, slide_ms } => {
                    t::WindowSpec::Sliding(t::Sliding { size_ms, slide_ms })
                }
                WindowSpec::Session { gap_ms } => t::WindowSpec::Session(gap_ms),
            },
            allowed_lateness_ms: d.allowed_lateness_ms,
            fields: d.fields,
            metrics: d.metrics,
            state_schema: d.state_schema,
            migrates_from: d.migrates_from,
            config_schema: d.config_schema,
            default_config: d.default_config,
            capabilities: d.capabilities,
        }
    }

    fn batch(b: t::EventBatch, fields: impl FnOnce() -> Vec<String>) -> Batch {
        let mut out = Batch {
            len: b.len as usize,
            fields: Vec::new(),
            columns: b
                .columns
                .into_iter()
                .map(|c| match c {
                    t::Column::Int(v) => ColumnData::Int(v),
                    t::Column::Float(v) => ColumnData::Float(v),
                    t::Column::Text(v) => ColumnData::Text(v),
                })
                .collect(),
            dict_data: b.dict_data,
            dict_ends: b.dict_ends,
        };
        glue::name_columns(&mut out, fields);
        out
    }

    fn packed_in(p: t::Packed) -> crate::Packed {
        crate::Packed {
            data: p.data,
            ends: p.ends,
        }
    }

    fn packed_out(p: crate::Packed) -> t::Packed {
        t::Packed {
            data: p.data,
            ends: p.ends,
        }
    }

    fn value_out(v: MetricValue) -> t::MetricValue {
        match v {
            MetricValue::Single(x) => t::MetricValue::Single(x),
            MetricValue::Several(xs) => t::MetricValue::Several(xs),
        }
    }

    fn value_in(v: t::MetricValue) -> MetricValue {
        match v {
            t::MetricValue::Single(x) => MetricValue::Single(x),
            t::MetricValue::Several(xs) => MetricValue::Several(xs),
        }
    }

    pub fn add<T: Aggregator>(
        group_lens: Vec<u32>,
        states: t::Packed,
        b: t::EventBatch,
    ) -> Result<t::Packed, String> {
        let batch = batch(b, || T::describe().fields);
        glue::aggregator_add::<T>(&group_lens, &packed_in(states), &batch).map(packed_out)
    }

    pub fn finish<T: Aggregator>(
        windows: Vec<t::Window>,
        states: t::Packed,
    ) -> Result<Vec<t::Metric>, String> {
        let ws: Vec<crate::Window> = windows
            .iter()
            .map(|w| crate::Window {
                start: w.start,
                end: w.end,
            })
            .collect();
        let out = glue::aggregator_finish::<T>(&ws, &packed_in(states))?;
        Ok(out
            .into_iter()
            .map(|(group, name, v)| t::Metric {
                group,
                name,
                value: value_out(v),
            })
            .collect())
    }

    fn step_out(s: glue::StepOut) -> t::Step {
        t::Step {
            states: packed_out(s.states),
            alerts: s
                .alerts
                .into_iter()
                .map(|(group, a)| t::Alert {
                    group,
                    rule: a.rule,
                    severity: match a.severity {
                        crate::Severity::Info => t::Severity::Info,
                        crate::Severity::Warning => t::Severity::Warning,
                        crate::Severity::Critical => t::Severity::Critical,
                    },
                    message: a.message,
                    time: a.time,
                    value: a.value,
                })
                .collect(),
            timers: s
                .timers
                .into_iter()
                .map(|(group, at)| t::Timer { group, at })
                .collect(),
        }
    }

    pub fn on_events<T: Detector>(
        keys: Vec<String>,
        group_lens: Vec<u32>,
        states: t::Packed,
        b: t::EventBatch,
        watermark: i64,
    ) -> Result<t::Step, String> {
        let batch = batch(b, || T::describe().fields);
        glue::detector_on_events::<T>(&keys, &group_lens, &packed_in(states), &batch, watermark)
            .map(step_out)
    }

    pub fn on_metrics<T: Detector>(
        keys: Vec<String>,
        group_lens: Vec<u32>,
        states: t::Packed,
        metrics: Vec<t::MetricIn>,
    ) -> Result<t::Step, String> {
        let ms: Vec<crate::MetricIn> = metrics
            .into_iter()
            .map(|m| crate::MetricIn {
                plugin: m.plugin,
                name: m.name,
                key: m.key,
                window: crate::Window {
                    start: m.window.start,
                    end: m.window.end,
                },
                value: value_in(m.value),
            })
            .collect();
        glue::detector_on_metrics::<T>(&keys, &group_lens, &packed_in(states), &ms).map(step_out)
    }

    pub fn on_timers<T: Detector>(
        keys: Vec<String>,
        group_lens: Vec<u32>,
        states: t::Packed,
        times: Vec<i64>,
    ) -> Result<t::Step, String> {
        glue::detector_on_timers::<T>(&keys, &group_lens, &packed_in(states), &times).map(step_out)
    }
}
