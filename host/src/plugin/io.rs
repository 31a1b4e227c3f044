//! The host's own types for what crosses the plugin boundary. The pipeline
//! builds and reads these; `instance.rs` moves them into and out of the
//! generated bindings.

use serde::Serialize;

/// States of several groups as one blob (see the WIT `packed`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packed {
    pub data: Vec<u8>,
    pub ends: Vec<u32>,
}

impl Packed {
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Check the layout a plugin returned before trusting it.
    pub fn validate(&self, expected: usize) -> Result<(), String> {
        if self.ends.len() != expected {
            return Err(format!(
                "returned {} states for {expected} groups",
                self.ends.len()
            ));
        }
        let mut prev = 0;
        for &e in &self.ends {
            if e < prev || e as usize > self.data.len() {
                return Err("returned malformed state offsets".into());
            }
            prev = e;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<u32>),
}

/// A columnar event batch (see the WIT `event-batch`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    pub len: u32,
    pub columns: Vec<ColumnData>,
    pub dict_data: Vec<u8>,
    pub dict_ends: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetricValue {
    Single(f64),
    Several(#[serde(serialize_with = "several_as_map")] Vec<(String, f64)>),
}

fn several_as_map<S: serde::Serializer>(v: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, x) in v {
        m.serialize_entry(k, x)?;
    }
    m.end()
}

impl MetricValue {
    pub fn is_finite(&self) -> bool {
        match self {
            MetricValue::Single(v) => v.is_finite(),
            MetricValue::Several(vs) => vs.iter().all(|(_, v)| v.is_finite()),
        }
    }
}

/// A metric as `finish` returned it.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMetric {
    pub group: u32,
    pub name: String,
    pub value: MetricValue,
}

/// A metric delivered to a metric-input detector.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricIn {
    pub plugin: String,
    pub name: String,
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub value: MetricValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawAlert {
    pub group: u32,
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    pub time: i64,
    pub value: Option<f64>,
}

/// What a detector call returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub states: Packed,
    pub alerts: Vec<RawAlert>,
    pub timers: Vec<(u32, i64)>,
}
