//! What plugins produce: metrics and alerts, and the detector call context.

/// A window instance `[start, end)` in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// A metric's value: one number or several named ones.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Single(f64),
    Several(Vec<(String, f64)>),
}

impl MetricValue {
    /// The single value, or the named one.
    pub fn get(&self, name: &str) -> Option<f64> {
        match self {
            MetricValue::Single(v) => Some(*v),
            MetricValue::Several(vs) => vs.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
        }
    }
}

/// Collects the metrics of fired windows.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) group: u32,
    pub(crate) out: Vec<(u32, String, MetricValue)>,
}

impl Metrics {
    /// Emit one metric.
    pub fn single(&mut self, name: &str, value: f64) {
        self.out
            .push((self.group, name.into(), MetricValue::Single(value)));
    }

    /// Emit one metric with several named values.
    pub fn several(&mut self, name: &str, values: &[(&str, f64)]) {
        let vs = values.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        self.out
            .push((self.group, name.into(), MetricValue::Several(vs)));
    }

    /// All emitted metrics as (window index, name, value).
    pub fn into_inner(self) -> Vec<(u32, String, MetricValue)> {
        self.out
    }

    #[doc(hidden)]
    pub fn set_group(&mut self, group: u32) {
        self.group = group;
    }
}

/// A metric delivered to a metric-input detector.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricIn {
    pub plugin: String,
    pub name: String,
    pub key: String,
    pub window: Window,
    pub value: MetricValue,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// An alert; the host adds the plugin and the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    pub time: i64,
    pub value: Option<f64>,
}

impl Alert {
    pub fn new(rule: &str, severity: Severity, time: i64, message: impl Into<String>) -> Self {
        Alert {
            rule: rule.into(),
            severity,
            message: message.into(),
            time,
            value: None,
        }
    }

    pub fn critical(rule: &str, time: i64, message: impl Into<String>) -> Self {
        Self::new(rule, Severity::Critical, time, message)
    }

    pub fn warning(rule: &str, time: i64, message: impl Into<String>) -> Self {
        Self::new(rule, Severity::Warning, time, message)
    }

    pub fn with_value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }
}

/// What a detector call can see and do besides its state.
pub struct Ctx<'a> {
    pub(crate) key: &'a str,
    pub(crate) watermark: i64,
    pub(crate) alerts: Vec<Alert>,
    pub(crate) timers: Vec<i64>,
}

impl<'a> Ctx<'a> {
    pub fn new(key: &'a str, watermark: i64) -> Self {
        Ctx {
            key,
            watermark,
            alerts: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// The key this call is about.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The pipeline's event-time watermark (for timers: the timer's time).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Raise an alert.
    pub fn alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
    }

    /// Be called back through `on_timer` once the watermark passes `at`.
    pub fn set_timer(&mut self, at: i64) {
        self.timers.push(at);
    }

    /// The alerts raised so far in this call.
    pub fn alerts(&self) -> &[Alert] {
        &self.alerts
    }

    /// The timers set so far in this call.
    pub fn timers(&self) -> &[i64] {
        &self.timers
    }

    /// Take the alerts and timers out.
    pub fn into_parts(self) -> (Vec<Alert>, Vec<i64>) {
        (self.alerts, self.timers)
    }
}
