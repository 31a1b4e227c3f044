//! The shipped plugins compiled natively, behind the host's `PluginCalls`:
//! the SDK's own glue (the code the Wasm exports run) called directly, with
//! the same conversions of batches and states the Wasm boundary does.

use std::sync::Arc;
use std::time::Duration;

use rtap_host::pipeline::{Slot, TimeConfig};
use rtap_host::plugin::describe::{Description, Input, Kind, RawDescription, RawWindow};
use rtap_host::plugin::io::{self, ColumnData, Columns};
use rtap_host::plugin::{CallError, Identity, PluginCalls};
use rtap_host::status::PluginCounters;
use rtap_sdk::glue::{self, StepOut};
use rtap_sdk::{Aggregator, Config, Detector};

pub const ALL: [&str; 11] = [
    "page-views",
    "active-users",
    "conversion-rate",
    "session-duration",
    "latency-percentiles",
    "error-rate",
    "high-latency",
    "error-rate-spike",
    "low-throughput",
    "cart-abandonment",
    "bot-burst",
];

fn raw(d: rtap_sdk::Description) -> RawDescription {
    RawDescription {
        name: d.name,
        version: d.version,
        kind: match d.kind {
            rtap_sdk::Kind::Aggregator => Kind::Aggregator,
            rtap_sdk::Kind::Detector => Kind::Detector,
        },
        input: match d.input {
            rtap_sdk::InputKind::Events => Input::Events,
            rtap_sdk::InputKind::Metrics => Input::Metrics,
        },
        key_by: d.key_by,
        window: match d.window {
            rtap_sdk::WindowSpec::None => RawWindow::None,
            rtap_sdk::WindowSpec::Tumbling { size_ms } => RawWindow::Tumbling(size_ms),
            rtap_sdk::WindowSpec::Sliding { size_ms, slide_ms } => {
                RawWindow::Sliding { size_ms, slide_ms }
            }
            rtap_sdk::WindowSpec::Session { gap_ms } => RawWindow::Session(gap_ms),
        },
        allowed_lateness_ms: d.allowed_lateness_ms,
        fields: d.fields,
        metrics: d.metrics,
        state_schema: d.state_schema,
        migrates_from: d.migrates_from,
        state_fingerprint: String::new(),
        config_schema: d.config_schema,
        default_config: d.default_config,
        capabilities: d.capabilities,
    }
}

fn batch(c: Columns, fields: &[String]) -> rtap_sdk::Batch {
    rtap_sdk::Batch {
        len: c.len as usize,
        fields: fields.to_vec(),
        columns: c
            .columns
            .into_iter()
            .map(|c| match c {
                ColumnData::Int(v) => rtap_sdk::ColumnData::Int(v),
                ColumnData::Float(v) => rtap_sdk::ColumnData::Float(v),
                ColumnData::Text(v) => rtap_sdk::ColumnData::Text(v),
            })
            .collect(),
        dict_data: c.dict_data,
        dict_ends: c.dict_ends,
    }
}

/// States cross by copy, as they do into Wasm linear memory.
fn packed(p: &io::Packed) -> rtap_sdk::Packed {
    rtap_sdk::Packed {
        data: p.data.clone(),
        ends: p.ends.clone(),
    }
}

fn value(v: rtap_sdk::MetricValue) -> io::MetricValue {
    match v {
        rtap_sdk::MetricValue::Single(x) => io::MetricValue::Single(x),
        rtap_sdk::MetricValue::Several(xs) => io::MetricValue::Several(xs),
    }
}

fn step(s: StepOut) -> io::Step {
    io::Step {
        states: io::Packed {
            data: s.states.data,
            ends: s.states.ends,
        },
        alerts: s
            .alerts
            .into_iter()
            .map(|(group, a)| io::RawAlert {
                group,
                rule: a.rule,
                severity: match a.severity {
                    rtap_sdk::Severity::Info => io::Severity::Info,
                    rtap_sdk::Severity::Warning => io::Severity::Warning,
                    rtap_sdk::Severity::Critical => io::Severity::Critical,
                },
                message: a.message,
                time: a.time,
                value: a.value,
            })
            .collect(),
        timers: s.timers,
    }
}

fn unsupported<T>() -> Result<T, CallError> {
    Err(CallError::Plugin(
        "not supported by this plugin kind".into(),
    ))
}

struct NativeAgg<T> {
    plugin: T,
    fields: Vec<String>,
}

impl<T: Aggregator + Send> PluginCalls for NativeAgg<T> {
    fn add(
        &mut self,
        lens: &[u32],
        states: &io::Packed,
        cols: Columns,
    ) -> Result<io::Packed, CallError> {
        let out = glue::aggregator_add_on(
            &self.plugin,
            lens,
            &packed(states),
            &batch(cols, &self.fields),
        )
        .map_err(CallError::Plugin)?;
        Ok(io::Packed {
            data: out.data,
            ends: out.ends,
        })
    }
    fn merge(&mut self, a: &[u8], b: &[u8]) -> Result<Vec<u8>, CallError> {
        glue::aggregator_merge_on(&self.plugin, a, b).map_err(CallError::Plugin)
    }
    fn finish(
        &mut self,
        windows: &[(i64, i64)],
        states: &io::Packed,
    ) -> Result<Vec<io::RawMetric>, CallError> {
        let ws: Vec<rtap_sdk::Window> = windows
            .iter()
            .map(|&(start, end)| rtap_sdk::Window { start, end })
            .collect();
        let out = glue::aggregator_finish_on(&self.plugin, &ws, &packed(states))
            .map_err(CallError::Plugin)?;
        Ok(out
            .into_iter()
            .map(|(group, name, v)| io::RawMetric {
                group,
                name,
                value: value(v),
            })
            .collect())
    }
    fn on_events(
        &mut self,
        _: &[String],
        _: &[u32],
        _: &io::Packed,
        _: Columns,
        _: i64,
    ) -> Result<io::Step, CallError> {
        unsupported()
    }
    fn on_metrics(
        &mut self,
        _: &[String],
        _: &[u32],
        _: &io::Packed,
        _: &[io::MetricIn],
    ) -> Result<io::Step, CallError> {
        unsupported()
    }
    fn on_timers(
        &mut self,
        _: &[String],
        _: &[u32],
        _: &io::Packed,
        _: &[i64],
    ) -> Result<io::Step, CallError> {
        unsupported()
    }
    fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, CallError> {
        glue::aggregator_migrate::<T>(from, state).map_err(CallError::Plugin)
    }
}

struct NativeDet<T> {
    plugin: T,
    fields: Vec<String>,
}

impl<T: Detector + Send> PluginCalls for NativeDet<T> {
    fn add(&mut self, _: &[u32], _: &io::Packed, _: Columns) -> Result<io::Packed, CallError> {
        unsupported()
    }
    fn merge(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, CallError> {
        unsupported()
    }
    fn finish(
        &mut self,
        _: &[(i64, i64)],
        _: &io::Packed,
    ) -> Result<Vec<io::RawMetric>, CallError> {
        unsupported()
    }
    fn on_events(
        &mut self,
        keys: &[String],
        lens: &[u32],
        states: &io::Packed,
        cols: Columns,
        wm: i64,
    ) -> Result<io::Step, CallError> {
        glue::detector_on_events_on(
            &self.plugin,
            keys,
            lens,
            &packed(states),
            &batch(cols, &self.fields),
            wm,
        )
        .map(step)
        .map_err(CallError::Plugin)
    }
    fn on_metrics(
        &mut self,
        keys: &[String],
        lens: &[u32],
        states: &io::Packed,
        ms: &[io::MetricIn],
    ) -> Result<io::Step, CallError> {
        let ms: Vec<rtap_sdk::MetricIn> = ms
            .iter()
            .map(|m| rtap_sdk::MetricIn {
                plugin: m.plugin.clone(),
                name: m.name.clone(),
                key: m.key.clone(),
                window: rtap_sdk::Window {
                    start: m.start,
                    end: m.end,
                },
                value: match &m.value {
                    io::MetricValue::Single(x) => rtap_sdk::MetricValue::Single(*x),
                    io::MetricValue::Several(xs) => rtap_sdk::MetricValue::Several(xs.clone()),
                },
            })
            .collect();
        glue::detector_on_metrics_on(&self.plugin, keys, lens, &packed(states), &ms)
            .map(step)
            .map_err(CallError::Plugin)
    }
    fn on_timers(
        &mut self,
        keys: &[String],
        lens: &[u32],
        states: &io::Packed,
        times: &[i64],
    ) -> Result<io::Step, CallError> {
        glue::detector_on_timers_on(&self.plugin, keys, lens, &packed(states), times)
            .map(step)
            .map_err(CallError::Plugin)
    }
    fn migrate(&mut self, from: u32, state: &[u8]) -> Result<Vec<u8>, CallError> {
        glue::detector_migrate::<T>(from, state).map_err(CallError::Plugin)
    }
}

fn agg<T: Aggregator + Send>() -> anyhow::Result<(Description, Box<dyn PluginCalls>)> {
    let d = T::describe();
    let mut plugin = T::default();
    plugin
        .configure(&Config::from_json(&d.default_config).map_err(anyhow::Error::msg)?)
        .map_err(anyhow::Error::msg)?;
    let fields = d.fields.clone();
    Ok((
        Description::validate(raw(d)).map_err(anyhow::Error::msg)?,
        Box::new(NativeAgg { plugin, fields }),
    ))
}

fn det<T: Detector + Send>() -> anyhow::Result<(Description, Box<dyn PluginCalls>)> {
    let d = T::describe();
    let mut plugin = T::default();
    plugin
        .configure(&Config::from_json(&d.default_config).map_err(anyhow::Error::msg)?)
        .map_err(anyhow::Error::msg)?;
    let fields = d.fields.clone();
    Ok((
        Description::validate(raw(d)).map_err(anyhow::Error::msg)?,
        Box::new(NativeDet { plugin, fields }),
    ))
}

pub fn slots(names: &[String]) -> anyhow::Result<Vec<Slot>> {
    let time = TimeConfig {
        out_of_orderness: Duration::from_secs(2),
        allowed_lateness: Duration::ZERO,
        idle_timeout: Duration::from_secs(10),
    };
    names
        .iter()
        .map(|n| {
            let (description, calls) = match n.as_str() {
                "page-views" => agg::<page_views::PageViews>()?,
                "active-users" => agg::<active_users::ActiveUsers>()?,
                "conversion-rate" => agg::<conversion_rate::ConversionRate>()?,
                "session-duration" => agg::<session_duration::SessionDuration>()?,
                "latency-percentiles" => agg::<latency_percentiles::LatencyPercentiles>()?,
                "error-rate" => agg::<error_rate::ErrorRate>()?,
                "high-latency" => det::<high_latency::HighLatency>()?,
                "error-rate-spike" => det::<error_rate_spike::ErrorRateSpike>()?,
                "low-throughput" => det::<low_throughput::LowThroughput>()?,
                "cart-abandonment" => det::<cart_abandonment::CartAbandonment>()?,
                "bot-burst" => det::<bot_burst::BotBurst>()?,
                other => anyhow::bail!("no native build of `{other}`"),
            };
            let identity = Identity {
                description,
                hash: "native".into(),
            };
            Ok(Slot::new(
                identity,
                calls,
                Arc::new(PluginCounters::default()),
                time.allowed_lateness,
            ))
        })
        .collect()
}
