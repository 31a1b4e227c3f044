//! The self-description every plugin returns from `describe`.

use crate::Settings;

/// Aggregator or detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Aggregator,
    Detector,
}

/// What the plugin consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Events,
    Metrics,
}

/// Event-time window (ms), Flink semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    None,
    Tumbling { size_ms: u64 },
    Sliding { size_ms: u64, slide_ms: u64 },
    Session { gap_ms: u64 },
}

/// The config schema of a plugin that takes no options: only `{}`.
pub const NO_CONFIG_SCHEMA: &str = r#"{"type":"object","additionalProperties":false}"#;

/// A plugin's description: everything the host needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub input: InputKind,
    pub key_by: String,
    pub window: WindowSpec,
    pub allowed_lateness_ms: Option<u64>,
    pub fields: Vec<String>,
    pub metrics: Vec<String>,
    pub state_schema: u32,
    pub migrates_from: Vec<u32>,
    pub config_schema: String,
    pub default_config: String,
    pub capabilities: Vec<String>,
}

impl Description {
    fn new(name: &str, version: &str, kind: Kind) -> Self {
        Description {
            name: name.into(),
            version: version.into(),
            kind,
            input: InputKind::Events,
            key_by: String::new(),
            window: WindowSpec::None,
            allowed_lateness_ms: None,
            fields: Vec::new(),
            metrics: Vec::new(),
            state_schema: 1,
            migrates_from: Vec::new(),
            config_schema: NO_CONFIG_SCHEMA.into(),
            default_config: "{}".into(),
            capabilities: Vec::new(),
        }
    }

    /// An aggregator over events.
    pub fn aggregator(name: &str, version: &str) -> Self {
        Self::new(name, version, Kind::Aggregator)
    }

    /// A detector over events (call [`Description::on_metrics`] for metric input).
    pub fn detector(name: &str, version: &str) -> Self {
        Self::new(name, version, Kind::Detector)
    }

    /// Key the state by this field (`""`: one global key).
    pub fn key_by(mut self, field: &str) -> Self {
        self.key_by = field.into();
        self
    }

    pub fn tumbling(mut self, size_ms: u64) -> Self {
        self.window = WindowSpec::Tumbling { size_ms };
        self
    }

    pub fn sliding(mut self, size_ms: u64, slide_ms: u64) -> Self {
        self.window = WindowSpec::Sliding { size_ms, slide_ms };
        self
    }

    pub fn session(mut self, gap_ms: u64) -> Self {
        self.window = WindowSpec::Session { gap_ms };
        self
    }

    pub fn allowed_lateness(mut self, ms: u64) -> Self {
        self.allowed_lateness_ms = Some(ms);
        self
    }

    /// The event fields this plugin reads (its batch columns, in this order).
    pub fn fields(mut self, fields: &[&str]) -> Self {
        self.fields = fields.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Consume metrics matching these `plugin/name` patterns instead of events.
    pub fn on_metrics(mut self, patterns: &[&str]) -> Self {
        self.input = InputKind::Metrics;
        self.metrics = patterns.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn state_schema(mut self, version: u32) -> Self {
        self.state_schema = version;
        self
    }

    pub fn migrates_from(mut self, versions: &[u32]) -> Self {
        self.migrates_from = versions.to_vec();
        self
    }

    /// The options of settings struct `T` (see [`crate::settings`]): its
    /// JSON Schema as the config schema, every option at its default as the
    /// default config. Read them in `configure` with [`crate::Config::settings`].
    pub fn settings<T: Settings>(mut self) -> Self {
        self.config_schema = crate::settings::schema::<T>();
        self.default_config = crate::settings::defaults::<T>();
        self
    }

    /// JSON Schema of the config and the default config (both JSON text),
    /// written by hand; [`Description::settings`] derives both from a
    /// settings struct.
    pub fn config(mut self, schema: &str, default: &str) -> Self {
        self.config_schema = schema.into();
        self.default_config = default.into();
        self
    }

    pub fn capabilities(mut self, caps: &[&str]) -> Self {
        self.capabilities = caps.iter().map(|s| s.to_string()).collect();
        self
    }
}
