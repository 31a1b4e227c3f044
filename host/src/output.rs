//! What the pipeline emits: metrics, alerts and plugin lifecycle events (the
//! JSONL and WebSocket objects), and the side outputs: dead letters and late
//! events. The vocabulary every layer shares: operators produce these, sinks
//! write them, the API and the lifecycle service publish them.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::plugin::io::{MetricValue, Severity};

/// `{"type":"metric", …}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub plugin: Arc<str>,
    pub name: String,
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    #[serde(flatten)]
    pub value: ValueField,
}

/// `"value": x` or `"values": {…}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub enum ValueField {
    #[serde(rename = "value")]
    Single(f64),
    #[serde(rename = "values")]
    Several(MetricValue),
}

impl From<MetricValue> for ValueField {
    fn from(v: MetricValue) -> Self {
        match v {
            MetricValue::Single(x) => ValueField::Single(x),
            several => ValueField::Several(several),
        }
    }
}

/// `{"type":"alert", …}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertOut {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Deterministic: the same alert after a replay has the same id.
    pub id: String,
    pub plugin: Arc<str>,
    pub rule: String,
    pub severity: Severity,
    pub key: String,
    pub message: String,
    pub time: i64,
    pub value: Option<f64>,
}

impl AlertOut {
    pub fn id_for(plugin: &str, rule: &str, key: &str, time: i64) -> String {
        let mut h = Sha256::new();
        for part in [
            plugin.as_bytes(),
            rule.as_bytes(),
            key.as_bytes(),
            &time.to_be_bytes(),
        ] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        hex::encode(&h.finalize()[..12])
    }
}

/// `{"type":"plugin", …}`: a lifecycle event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// loaded, swapped, rolled_back, config_changed, failed, degraded, recovered, removed.
    pub event: &'static str,
    pub plugin: String,
    pub version: String,
    pub hash: String,
    pub message: String,
    pub time: i64,
}

#[derive(Debug, Clone)]
pub enum Output {
    Metric(MetricOut),
    Alert(AlertOut),
    Plugin(PluginEvent),
}

impl Output {
    pub fn to_json(&self) -> String {
        match self {
            Output::Metric(m) => serde_json::to_string(m),
            Output::Alert(a) => serde_json::to_string(a),
            Output::Plugin(p) => serde_json::to_string(p),
        }
        .expect("outputs serialize")
    }
}

/// An input that could not be processed, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub time: i64,
    /// The plugin that failed; absent for undecodable input.
    pub plugin: Option<String>,
    /// malformed, trap, timeout, out_of_memory, plugin_error, contract_violation, degraded, window_lost.
    pub reason: &'static str,
    pub detail: String,
    pub source: String,
    pub partition: i32,
    /// Line number (file), offset (Kafka), sequence number (simulator).
    pub offset: Option<u64>,
    /// The event as received (or the metric/window that was lost).
    pub event: String,
}

/// An event later than the allowed lateness of some plugin's windows.
#[derive(Debug, Clone, Serialize)]
pub struct LateEvent {
    pub plugins: Vec<String>,
    pub watermark: i64,
    pub source: String,
    pub partition: i32,
    pub offset: u64,
    pub event: String,
}
