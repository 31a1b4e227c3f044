//! The host's view of a plugin's self-description, validated.

use std::time::Duration;

use serde::Serialize;

use crate::event::TextField;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Aggregator,
    Detector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Input {
    Events,
    Metrics,
}

/// Event-time window, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WindowSpec {
    None,
    Tumbling { size_ms: i64 },
    Sliding { size_ms: i64, slide_ms: i64 },
    Session { gap_ms: i64 },
}

/// A column a plugin reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Timestamp,
    LatencyMs,
    Value,
    Text(TextField),
    /// Any other top-level field of the event's JSON, as text.
    Extra(String),
}

impl Field {
    /// The field's name, as a plugin writes it in `describe`.
    pub fn name(&self) -> &str {
        match self {
            Field::Timestamp => "timestamp",
            Field::LatencyMs => "latency_ms",
            Field::Value => "value",
            Field::Text(t) => t.name(),
            Field::Extra(name) => name,
        }
    }

    pub fn parse(name: &str) -> Field {
        match name {
            "timestamp" => Field::Timestamp,
            "latency_ms" => Field::LatencyMs,
            "value" => Field::Value,
            other => TextField::from_name(other)
                .map(Field::Text)
                .unwrap_or_else(|| Field::Extra(other.to_string())),
        }
    }
}

/// What the state is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyBy {
    /// One key for everything.
    Global,
    /// An event field (event input).
    Field(Field),
    /// A part of the metric (metric input).
    MetricKey,
    MetricName,
    MetricPlugin,
}

/// A `plugin/name` pattern with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricPattern {
    pub plugin: String,
    pub name: String,
}

impl MetricPattern {
    pub fn matches(&self, plugin: &str, name: &str) -> bool {
        (self.plugin == "*" || self.plugin == plugin) && (self.name == "*" || self.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub input: Input,
    pub key_by: KeyBy,
    #[serde(rename = "key_by_field")]
    pub key_by_text: String,
    pub window: WindowSpec,
    #[serde(skip)]
    pub allowed_lateness: Option<Duration>,
    pub fields: Vec<Field>,
    pub metrics: Vec<MetricPattern>,
    pub state_schema: u32,
    pub migrates_from: Vec<u32>,
    /// A hash of the state type's layout (empty: not known).
    pub state_fingerprint: String,
    pub config_schema: serde_json::Value,
    pub default_config: serde_json::Value,
    pub capabilities: Vec<String>,
}

/// Capabilities a plugin may ask for.
pub const CAPABILITIES: [&str; 2] = ["clock", "random"];

/// A description as a plugin states it, before validation (the WIT record,
/// in host types; also how natively compiled plugins describe themselves).
#[derive(Debug, Clone)]
pub struct RawDescription {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub input: Input,
    pub key_by: String,
    pub window: RawWindow,
    pub allowed_lateness_ms: Option<u64>,
    pub fields: Vec<String>,
    pub metrics: Vec<String>,
    pub state_schema: u32,
    pub migrates_from: Vec<u32>,
    pub state_fingerprint: String,
    pub config_schema: String,
    pub default_config: String,
    pub capabilities: Vec<String>,
}

/// A window as stated (unsigned ms, unchecked).
#[derive(Debug, Clone, Copy)]
pub enum RawWindow {
    None,
    Tumbling(u64),
    Sliding { size_ms: u64, slide_ms: u64 },
    Session(u64),
}

impl Description {
    /// Validate and convert what `describe` returned.
    pub fn from_wit(d: super::bindings::types::Description) -> Result<Self, String> {
        use super::bindings::types as t;
        Self::validate(RawDescription {
            name: d.name,
            version: d.version,
            kind: match d.kind {
                t::PluginKind::Aggregator => Kind::Aggregator,
                t::PluginKind::Detector => Kind::Detector,
            },
            input: match d.input {
                t::InputKind::Events => Input::Events,
                t::InputKind::Metrics => Input::Metrics,
            },
            key_by: d.key_by,
            window: match d.window {
                t::WindowSpec::None => RawWindow::None,
                t::WindowSpec::Tumbling(s) => RawWindow::Tumbling(s),
                t::WindowSpec::Sliding(s) => RawWindow::Sliding {
                    size_ms: s.size_ms,
                    slide_ms: s.slide_ms,
                },
                t::WindowSpec::Session(g) => RawWindow::Session(g),
            },
            allowed_lateness_ms: d.allowed_lateness_ms,
            fields: d.fields,
            metrics: d.metrics,
            state_schema: d.state_schema,
            migrates_from: d.migrates_from,
            state_fingerprint: d.state_fingerprint,
            config_schema: d.config_schema,
            default_config: d.default_config,
            capabilities: d.capabilities,
        })
    }

    /// Check a stated description.
    pub fn validate(d: RawDescription) -> Result<Self, String> {
        if d.name.is_empty()
            || !d
                .name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            return Err(format!("plugin name `{}` must match [a-z0-9-]+", d.name));
        }
        let (kind, input) = (d.kind, d.input);
        let pos = |v: u64, what: &str| -> Result<i64, String> {
            if v == 0 || v > (1 << 40) {
                Err(format!("{what} must be between 1 ms and 2^40 ms, got {v}"))
            } else {
                Ok(v as i64)
            }
        };
        let window = match d.window {
            RawWindow::None => WindowSpec::None,
            RawWindow::Tumbling(s) => WindowSpec::Tumbling {
                size_ms: pos(s, "tumbling size")?,
            },
            RawWindow::Sliding { size_ms, slide_ms } => {
                let (size_ms, slide_ms) = (
                    pos(size_ms, "sliding size")?,
                    pos(slide_ms, "sliding slide")?,
                );
                if slide_ms > size_ms {
                    return Err(format!(
                        "sliding window: slide {slide_ms} ms is larger than size {size_ms} ms"
                    ));
                }
                if size_ms / slide_ms > 1000 {
                    return Err("sliding window: more than 1000 windows per event".into());
                }
                WindowSpec::Sliding { size_ms, slide_ms }
            }
            RawWindow::Session(g) => WindowSpec::Session {
                gap_ms: pos(g, "session gap")?,
            },
        };
        match (kind, window, input) {
            (Kind::Aggregator, WindowSpec::None, _) => {
                return Err("an aggregator needs a window".into());
            }
            (Kind::Aggregator, _, Input::Metrics) => {
                return Err("aggregators consume events".into());
            }
            (Kind::Detector, w, _) if w != WindowSpec::None => {
                return Err("a detector takes no window".into());
            }
            _ => {}
        }
        let key_by = match (input, d.key_by.as_str()) {
            (_, "") => KeyBy::Global,
            (Input::Events, f) => KeyBy::Field(Field::parse(f)),
            (Input::Metrics, "key") => KeyBy::MetricKey,
            (Input::Metrics, "name") => KeyBy::MetricName,
            (Input::Metrics, "plugin") => KeyBy::MetricPlugin,
            (Input::Metrics, other) => {
                return Err(format!(
                    "metric input can be keyed by key, name or plugin, not `{other}`"
                ));
            }
        };
        let metrics = d
            .metrics
            .iter()
            .map(|p| match p.split_once('/') {
                Some((plugin, name)) if !plugin.is_empty() && !name.is_empty() => {
                    Ok(MetricPattern {
                        plugin: plugin.into(),
                        name: name.into(),
                    })
                }
                _ => Err(format!("metric pattern `{p}` must be `plugin/name`")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if input == Input::Metrics && metrics.is_empty() {
            return Err("a metric-input plugin must name the metrics it consumes".into());
        }
        if d.fields.len() > 64 {
            return Err("at most 64 fields".into());
        }
        let config_schema: serde_json::Value = serde_json::from_str(&d.config_schema)
            .map_err(|e| format!("config-schema is not JSON: {e}"))?;
        let default_config: serde_json::Value = serde_json::from_str(&d.default_config)
            .map_err(|e| format!("default-config is not JSON: {e}"))?;
        if !default_config.is_object() {
            return Err("default-config must be a JSON object".into());
        }
        let schema = super::config::Schema::compile(&config_schema)
            .map_err(|e| format!("config-schema is not a valid JSON Schema: {e}"))?;
        schema
            .check(&default_config)
            .map_err(|e| format!("default-config does not follow config-schema: {e}"))?;
        if let Some(c) = d
            .capabilities
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            return Err(format!(
                "unknown capability `{c}` (known: {CAPABILITIES:?})"
            ));
        }
        Ok(Description {
            version: d.version,
            kind,
            input,
            key_by_text: d.key_by,
            key_by,
            window,
            allowed_lateness: d.allowed_lateness_ms.map(Duration::from_millis),
            fields: d.fields.iter().map(|f| Field::parse(f)).collect(),
            metrics,
            state_schema: d.state_schema,
            migrates_from: d.migrates_from,
            state_fingerprint: d.state_fingerprint,
            config_schema,
            default_config,
            capabilities: d.capabilities,
            name: d.name,
        })
    }
}
