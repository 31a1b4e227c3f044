//! Typed configuration: command-line flags with environment-variable
//! fallbacks (`RTAP_*`, and the seed's `EVENT_RATE_PER_SECOND`) and
//! defaults that run the whole pipeline locally with no other input.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// A duration written with a unit: `500ms`, `10s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration (try 500ms, 10s, 2m)"))?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            "" => return Err(format!("`{s}` needs a unit: ms, s, m or h")),
            other => return Err(format!("unknown duration unit `{other}` in `{s}`")),
        };
        Ok(HumanDuration(Duration::from_secs_f64(secs)))
    }
}

/// A size in bytes: `64MiB`, `512KiB`, `1GiB`, or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (try 64MiB)"))?;
        let mul = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` (use KiB, MiB, GiB)")),
        };
        Ok(ByteSize(n * mul))
    }
}

/// A secret from the command line or the environment: never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Secret(s.to_string()))
    }
}

/// Where events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Simulator,
    /// A JSONL file, or stdin for `-`.
    File(String),
    /// The events topic of `--kafka-brokers`.
    Kafka,
}

impl FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "simulator" => Ok(SourceSpec::Simulator),
            _ if s == "kafka" => Ok(SourceSpec::Kafka),
            Some(("file", path)) if !path.is_empty() => Ok(SourceSpec::File(path.to_string())),
            _ => Err(format!(
                "unknown source `{s}`: use `simulator`, `kafka`, `file:PATH` or `file:-`"
            )),
        }
    }
}

/// How the exchange between one host's workers carries its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExchangeMode {
    /// The records themselves, moved between threads.
    #[default]
    Memory,
    /// Encoded as for a stage 2 on another host and decoded at their owner
    /// (`crate::pipeline::wire`): the outputs are the same, at the cost of
    /// the encoding, which this measures.
    Wire,
    /// Encoded, and carried through the exchange topic
    /// (`<group>-exchange-w<workers>`, needs `--kafka-brokers`): each
    /// worker's stage 1 is a task with its own transactional producer,
    /// each worker's stage 2 the owner of a range, reading through the
    /// gates (`crate::exchange`) — what crossing hosts costs, on one host.
    Kafka,
}

impl FromStr for ExchangeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(ExchangeMode::Memory),
            "wire" => Ok(ExchangeMode::Wire),
            "kafka" => Ok(ExchangeMode::Kafka),
            _ => Err(format!(
                "unknown exchange `{s}`: use `memory`, `wire` or `kafka`"
            )),
        }
    }
}

/// Where outputs go (besides the WebSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// JSONL to a file, or stdout for `-`.
    Jsonl(String),
}

impl FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("jsonl", path)) if !path.is_empty() => Ok(SinkSpec::Jsonl(path.to_string())),
            _ => Err(format!("unknown sink `{s}`: use `jsonl:PATH` or `jsonl:-`")),
        }
    }
}

/// `KEY=VALUE`: a librdkafka option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOption(pub String, pub String);

impl FromStr for KafkaOption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
        Ok(KafkaOption(k.trim().to_string(), v.to_string()))
    }
}

/// `NAME=JSON`: a plugin's config.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub name: String,
    pub config: serde_json::Value,
}

impl FromStr for PluginConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, json) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME={{json}}"))?;
        let config: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| format!("config of `{name}` is not valid JSON: {e}"))?;
        if !config.is_object() {
            return Err(format!("config of `{name}` must be a JSON object"));
        }
        Ok(PluginConfig {
            name: name.to_string(),
            config,
        })
    }
}

/// rtap host: a real-time analytics pipeline whose aggregations and alert
/// rules are sandboxed WebAssembly plugins.
#[derive(Debug, Clone, Parser)]
#[command(name = "host", version, about)]
pub struct Config {
    /// Folder of plugin components (`*.wasm`); every one is loaded.
    #[arg(long, env = "RTAP_PLUGINS", default_value = "./plugins")]
    pub plugins: PathBuf,

    /// Event source: `simulator`, `kafka`, `file:PATH`, `file:-` (stdin).
    /// Default: `kafka` with `--kafka-brokers`, else `simulator`.
    #[arg(long, env = "RTAP_SOURCE")]
    pub source: Option<SourceSpec>,

    /// Kafka bootstrap servers: read events from Kafka and write metrics and
    /// alerts back to it.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Kafka consumer group.
    #[arg(long, env = "KAFKA_GROUP", default_value = "rtap")]
    pub kafka_group: String,

    /// Topic of the raw events (12 partitions when created).
    #[arg(long, default_value = "website-analytics-events")]
    pub kafka_events_topic: String,

    /// Topic of the metrics (6 partitions, compacted, when created).
    #[arg(long, default_value = "processed-metrics")]
    pub kafka_metrics_topic: String,

    /// Topic of the alerts (3 partitions when created).
    #[arg(long, default_value = "cep-alerts")]
    pub kafka_alerts_topic: String,

    /// Topic of the dead letters (3 partitions when created): each record
    /// is the input as received, with headers naming its origin, the
    /// plugin that failed, the reason and the detail; in the transaction
    /// with the outputs.
    #[arg(long, default_value = "rtap-dead-letters")]
    pub kafka_dead_letter_topic: String,

    /// Topic of the events later than the allowed lateness (3 partitions
    /// when created): as received, with headers like the dead letters'.
    #[arg(long, default_value = "rtap-late-events")]
    pub kafka_late_topic: String,

    /// One-partition topic whose consumer-group offset marks the last
    /// committed transaction (created when missing).
    #[arg(long, default_value = "rtap-commit-marker")]
    pub kafka_marker_topic: String,

    /// Write each commit's state changes to `<group>-changelog` (one
    /// partition per key group, in the commit's transaction), so that a host
    /// whose data dir is lost or stale, or a standby, restores the state
    /// from Kafka; without it such a host refuses to start. `--standby`
    /// turns it on. It costs broker and host CPU: see BENCHMARKS.md.
    #[arg(long, env = "RTAP_KAFKA_CHANGELOG")]
    pub kafka_changelog: bool,

    /// The Kafka producer's transactional id (default `rtap-<group>`). Two
    /// hosts with the same id fence each other: the older one stops.
    #[arg(long, env = "KAFKA_TRANSACTIONAL_ID")]
    pub kafka_transactional_id: Option<String>,

    /// Wait while another host commits for the Kafka group, and take the
    /// group over — restoring the state from the changelog — once it has
    /// stopped committing for `--takeover-after` (a hot standby). Without
    /// it, a host whose data dir does not fit the group's last commit
    /// refuses to start while the group commits.
    #[arg(long)]
    pub standby: bool,

    /// Share the work with every host started with `--share` and the same
    /// `--kafka-group`: the input partitions and the key-group ranges are
    /// divided among them by Kafka's consumer-group protocol, each range's
    /// state lives in `<group>-changelog`, and the ranges and partitions
    /// of a host that stops or dies move to the others (README, "Many
    /// hosts"). In this mode the host runs the plugins of its folder
    /// (every host must have the same; the API refuses plugin changes),
    /// and its API serves `/health`, `GET /api/cluster` and the read API;
    /// the metric detectors, dead letters and late events do not run in
    /// it yet.
    #[arg(long, env = "RTAP_SHARE", conflicts_with = "standby")]
    pub share: bool,

    /// With `--share`: the ranges the 128 key groups are cut into, each
    /// with its own transactional producer, state and partition of the
    /// output topics (which need at least that many partitions). The most
    /// hosts that run stage 2; fixed for the group's lifetime.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub key_group_ranges: u32,

    /// With `--share`: how often each input partition and each key-group
    /// range commits its own transaction (12 partitions and 3 ranges at
    /// 1 s: 15 transactions a second for the group). A committed output
    /// waits for up to two of them (its input partition's, then its
    /// range's). At 100 ms the broker's CPU per event doubled and the
    /// throughput halved on a 2-core machine (BENCHMARKS.md, "Many hosts").
    #[arg(long, default_value = "1s")]
    pub share_commit_interval: HumanDuration,

    /// How long the group's commit marker must stand still before a host
    /// whose data dir does not fit it takes the group over (a host on Kafka
    /// commits at least once a second, events or not).
    #[arg(long, default_value = "3s")]
    pub takeover_after: HumanDuration,

    /// How often the Kafka transaction commits (outputs, input offsets and
    /// the state delta together); bounds the latency of committed outputs.
    #[arg(long, default_value = "100ms")]
    pub commit_interval: HumanDuration,

    /// Any librdkafka option for the consumer, producer and admin clients,
    /// `KEY=VALUE` (repeatable).
    #[arg(long = "kafka-option")]
    pub kafka_options: Vec<KafkaOption>,

    /// A librdkafka option for the output producer only, `KEY=VALUE`
    /// (repeatable; wins over `--kafka-option`), so the consumers do not warn
    /// about producer properties. E.g. larger output batches, `linger.ms=25`
    /// and `batch.size=262144`, for many outputs a second (see
    /// BENCHMARKS.md).
    #[arg(long = "kafka-producer-option")]
    pub kafka_producer_options: Vec<KafkaOption>,

    /// Simulator: events per second.
    #[arg(long, env = "EVENT_RATE_PER_SECOND", default_value_t = 500.0)]
    pub rate: f64,

    /// Simulator: random seed (the stream is reproducible).
    #[arg(long, env = "RTAP_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Simulator: event time of the first event, ms since the epoch (default: now).
    #[arg(long)]
    pub sim_start_ms: Option<i64>,

    /// Simulator: generate as fast as possible instead of in real time.
    #[arg(long)]
    pub unpaced: bool,

    /// Stop after this many events: checkpoint and exit without flushing the
    /// windows (the next run resumes from there).
    #[arg(long)]
    pub max_events: Option<u64>,

    /// Output sinks (repeatable): `jsonl:PATH`, `jsonl:-` (stdout).
    #[arg(long = "sink", default_value = "jsonl:-")]
    pub sinks: Vec<SinkSpec>,

    /// State, checkpoints, dead letters and late events live here.
    #[arg(long, env = "RTAP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Do not keep compiled plugins in `DATA_DIR/compiled` (each start then
    /// compiles every plugin again: ~2 s for the 11 shipped ones here).
    #[arg(long)]
    pub no_compile_cache: bool,

    /// Dead-letter output (JSONL); default `DATA_DIR/dead-letter.jsonl`.
    #[arg(long)]
    pub dead_letter: Option<String>,

    /// Late-event output (JSONL); default `DATA_DIR/late-events.jsonl`.
    #[arg(long)]
    pub late_output: Option<String>,

    /// Checkpoint interval.
    #[arg(long, env = "RTAP_CHECKPOINT_INTERVAL", default_value = "10s")]
    pub checkpoint_interval: HumanDuration,

    /// RocksDB memtable size of the state store. With the Kafka sink it
    /// should hold a checkpoint interval of commit log (~96 MB per 10 s at
    /// 100 000 events/s with the shipped plugins), so a checkpoint deletes
    /// the log before it is ever flushed to disk. Memory is taken as the
    /// memtable fills.
    #[arg(long, env = "RTAP_STATE_WRITE_BUFFER", default_value = "256MiB")]
    pub state_write_buffer: ByteSize,

    /// Start fresh: ignore (and replace) an existing checkpoint.
    #[arg(long)]
    pub no_restore: bool,

    /// Address of the dashboard, `/ws`, `/api` and `/health`.
    #[arg(long, env = "RTAP_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,

    /// Do not start the HTTP server.
    #[arg(long)]
    pub no_server: bool,

    /// This host's id in its group's `GET /api/cluster` (default
    /// `<hostname>:<port of --listen>`); unique per host of a group.
    #[arg(long, env = "RTAP_HOST_ID")]
    pub host_id: Option<String>,

    /// Where the other hosts of the group (and their users) reach this
    /// host's API and dashboard (default `http://<hostname>:<port>`).
    #[arg(long, env = "RTAP_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Built dashboard assets served at `/`.
    #[arg(long, env = "RTAP_DASHBOARD_DIR", default_value = "./dashboard/dist")]
    pub dashboard_dir: PathBuf,

    /// How far back `GET /api/history` reaches: the metrics and alerts
    /// whose time (window end, alert time: event time) is within this of the
    /// newest output's, kept in memory (`0s`: none). A restart starts empty.
    #[arg(long, env = "RTAP_HISTORY", default_value = "30m")]
    pub history: HumanDuration,

    /// Memory cap of the history (output text plus ~96 bytes each). Past it,
    /// the plugin holding the most loses its oldest outputs first: at high
    /// rates the per-session metrics, while the charts' series stay whole.
    #[arg(long, env = "RTAP_HISTORY_MAX_BYTES", default_value = "256MiB")]
    pub history_max_bytes: ByteSize,

    /// Watermark: bounded out-of-orderness of event time.
    #[arg(long, env = "RTAP_OUT_OF_ORDERNESS", default_value = "2s")]
    pub out_of_orderness: HumanDuration,

    /// Allowed lateness of windows (plugins may set their own).
    #[arg(long, env = "RTAP_ALLOWED_LATENESS", default_value = "0s")]
    pub allowed_lateness: HumanDuration,

    /// A source partition without events for this long stops holding the
    /// watermark back.
    #[arg(long, env = "RTAP_IDLE_TIMEOUT", default_value = "10s")]
    pub idle_timeout: HumanDuration,

    /// Events per batch (per plugin call).
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,

    /// Processing threads. Each runs stage 1 for some input partitions and
    /// stage 2 for a share of the key groups. Default: the cores available.
    #[arg(long, env = "RTAP_WORKERS")]
    pub workers: Option<usize>,

    /// How records cross between workers: `memory`, `wire` (encoded as
    /// for a stage 2 on another host, and decoded at their owner; the same
    /// outputs, to test and measure the encoding: BENCHMARKS.md), or
    /// `kafka` (encoded and through the exchange topic, every round; needs
    /// --kafka-brokers).
    #[arg(long, env = "RTAP_EXCHANGE", default_value = "memory")]
    pub exchange: ExchangeMode,

    /// Read a file source as line-aligned splits of about this size, each an
    /// input partition read in parallel (the same splits whatever
    /// `--workers` is). Default: the file is one partition. Splits reorder a
    /// key's events across split boundaries, which event detectors see (see
    /// the README's "Workers and partitions").
    #[arg(long, env = "RTAP_FILE_SPLIT_SIZE")]
    pub file_split_size: Option<ByteSize>,

    /// Simulator: input partitions (each user's events go to one).
    #[arg(long, env = "RTAP_SIM_PARTITIONS", default_value_t = 12)]
    pub sim_partitions: u32,

    /// Deadline of one plugin call (a call is stopped within 20 ms after it:
    /// the epoch ticks every 10 ms).
    #[arg(long, env = "RTAP_PLUGIN_TIMEOUT", default_value = "500ms")]
    pub plugin_timeout: HumanDuration,

    /// Linear-memory cap of one plugin instance.
    #[arg(long, env = "RTAP_PLUGIN_MEMORY", default_value = "64MiB")]
    pub plugin_memory: ByteSize,

    /// Capabilities granted to plugins that ask for them: `clock`, `random`.
    #[arg(long = "allow-capability")]
    pub allow_capabilities: Vec<String>,

    /// A plugin's config, `NAME={json}` (repeatable); default: its own.
    #[arg(long = "plugin-config")]
    pub plugin_configs: Vec<PluginConfig>,

    /// InfluxDB v2 URL: write every metric there too (e.g. http://localhost:8086).
    #[arg(long, env = "INFLUX_URL")]
    pub influx_url: Option<String>,

    /// InfluxDB organisation.
    #[arg(long, env = "INFLUX_ORG", default_value = "rtap")]
    pub influx_org: String,

    /// InfluxDB bucket.
    #[arg(long, env = "INFLUX_BUCKET", default_value = "analytics")]
    pub influx_bucket: String,

    /// InfluxDB API token (from the environment; never logged).
    #[arg(
        long,
        env = "INFLUX_TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub influx_token: Secret,

    /// Do not watch the plugins folder for added, replaced or removed `.wasm`.
    #[arg(long)]
    pub no_watch: bool,

    /// How often the plugins folder is polled.
    #[arg(long, default_value = "500ms")]
    pub watch_interval: HumanDuration,

    /// Bearer token of the mutating plugin API (default: generated and
    /// printed once at start).
    #[arg(long, env = "RTAP_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Bearer token that reading needs when set: `/ws` (or its
    /// `?access_token=`), every `GET /api/…` and `/metrics`; the dashboard
    /// asks for it. `/health` and `/ready` stay open; the admin token reads
    /// too. Unset: reading is open.
    #[arg(long, env = "RTAP_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<Secret>,

    /// Serve HTTPS (and `wss://`) with this certificate chain (PEM);
    /// needs `--tls-key`.
    #[arg(long, env = "RTAP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, RSA or SEC1).
    #[arg(long, env = "RTAP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log format on stderr: `text` or `json`.
    #[arg(long, env = "RTAP_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    /// Processing threads: `--workers`, else the cores available.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The source: `--source`, else Kafka with `--kafka-brokers`, else the
    /// simulator.
    pub fn source_spec(&self) -> SourceSpec {
        self.source
            .clone()
            .unwrap_or(if self.kafka_brokers.is_some() {
                SourceSpec::Kafka
            } else {
                SourceSpec::Simulator
            })
    }

    pub fn dead_letter_path(&self) -> String {
        self.dead_letter.clone().unwrap_or_else(|| {
            self.data_dir
                .join("dead-letter.jsonl")
                .display()
                .to_string()
        })
    }

    pub fn late_path(&self) -> String {
        self.late_output.clone().unwrap_or_else(|| {
            self.data_dir
                .join("late-events.jsonl")
                .display()
                .to_string()
        })
    }

    pub fn plugin_config(&self, name: &str) -> Option<&serde_json::Value> {
        self.plugin_configs
            .iter()
            .rev()
            .find(|c| c.name == name)
            .map(|c| &c.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_specs() {
        assert_eq!(
            "500ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("10".parse::<HumanDuration>().unwrap_err().contains("unit"));
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!(
            "file:-".parse::<SourceSpec>().unwrap(),
            SourceSpec::File("-".into())
        );
        assert!("kafka:topic".parse::<SourceSpec>().is_err());
        assert_eq!("kafka".parse::<SourceSpec>().unwrap(), SourceSpec::Kafka);
        assert!("bot-burst=[1]".parse::<PluginConfig>().is_err());
        let c =
            Config::try_parse_from(["host", "--source", "file:x.jsonl", "--rate", "10"]).unwrap();
        assert_eq!(c.source, Some(SourceSpec::File("x.jsonl".into())));
        assert_eq!(c.history.0, Duration::from_secs(1800));
        assert_eq!(c.history_max_bytes.0, 256 << 20);
        let c = Config::try_parse_from(["host", "--history", "5m"]).unwrap();
        assert_eq!(c.history.0, Duration::from_secs(300));
        let e = Config::try_parse_from(["host", "--history", "5"]).unwrap_err();
        assert!(e.to_string().contains("--history"), "{e}");
    }
}
