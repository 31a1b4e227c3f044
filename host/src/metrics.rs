//! Every Prometheus metric of the host, defined once: names follow the
//! Prometheus conventions (`rtap_` prefix, base units, `_total` counters,
//! `_seconds` durations). The rest of the host records through [`metrics()`];
//! `GET /metrics` renders [`render`].

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub events_in: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub late_events: IntCounter,
    pub e2e_latency: Histogram,
    pub fetch_delay: HistogramVec,
    pub commit_latency: Histogram,
    pub plugin_call_duration: HistogramVec,
    pub plugin_batch_size: HistogramVec,
    pub plugin_traps: IntCounterVec,
    pub plugin_timeouts: IntCounterVec,
    pub plugin_swaps: IntCounterVec,
    pub shadow_compared: IntCounterVec,
    pub checkpoint_duration: Histogram,
    pub checkpoints: IntCounterVec,
    pub checkpoint_age: prometheus::Gauge,
    pub consumer_lag: IntGaugeVec,
    pub watermark_lag: prometheus::Gauge,
    pub sink_write_duration: HistogramVec,
    pub sink_errors: IntCounterVec,
    pub sink_buffered: IntGaugeVec,
    pub websocket_clients: IntGauge,
    pub history_outputs: IntGauge,
    pub history_bytes: IntGauge,
    pub worker_events: IntCounterVec,
    pub worker_busy: prometheus::CounterVec,
    pub worker_keys: IntGaugeVec,
    pub worker_exchange_records: IntCounterVec,
    pub worker_exchange_bytes: IntCounterVec,
    pub worker_exchange_queue: IntGaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    reg(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("valid metric"),
    )
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    reg(
        r,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("valid metric"),
    )
}

const SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Latencies the end-to-end targets are stated in (tens of ms), fine
/// enough to read a P99 off the buckets.
const LATENCY: [f64; 19] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
    1.5, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        Metrics {
            events_in: counter_vec(
                &r,
                "rtap_events_in_total",
                "Events decoded from a source.",
                &["source", "partition"],
            ),
            dead_letters: counter_vec(
                &r,
                "rtap_dead_letters_total",
                "Inputs sent to the dead-letter output, by reason.",
                &["reason"],
            ),
            late_events: reg(
                &r,
                IntCounter::new(
                    "rtap_late_events_total",
                    "Events later than the allowed lateness.",
                )
                .expect("valid"),
            ),
            e2e_latency: histogram(
                &r,
                "rtap_e2e_latency_seconds",
                "From a source reading the first event of a batch to the batch's outputs being \
                 written to the sinks: rtap's own share of the immediate path.",
                LATENCY.to_vec(),
            ),
            commit_latency: histogram(
                &r,
                "rtap_commit_latency_seconds",
                "From a source reading the first event of a batch to the commit that makes the \
                 batch's outputs durable (with Kafka: visible to read_committed consumers).",
                LATENCY.to_vec(),
            ),
            fetch_delay: histogram_vec(
                &r,
                "rtap_source_fetch_delay_seconds",
                "From a Kafka record's timestamp (the producer's CreateTime) to the source \
                 reading it: the broker's and the client's share, before rtap's.",
                &["source"],
                LATENCY.to_vec(),
            ),
            plugin_call_duration: histogram_vec(
                &r,
                "rtap_plugin_call_duration_seconds",
                "Duration of one call into a plugin.",
                &["plugin"],
                SECONDS.to_vec(),
            ),
            plugin_batch_size: histogram_vec(
                &r,
                "rtap_plugin_batch_size",
                "Events (or metrics) per plugin call.",
                &["plugin"],
                vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0],
            ),
            plugin_traps: counter_vec(
                &r,
                "rtap_plugin_traps_total",
                "Plugin calls that trapped.",
                &["plugin"],
            ),
            plugin_timeouts: counter_vec(
                &r,
                "rtap_plugin_timeouts_total",
                "Plugin calls stopped at their deadline.",
                &["plugin"],
            ),
            plugin_swaps: counter_vec(
                &r,
                "rtap_plugin_swaps_total",
                "Plugin version changes, by result.",
                &["plugin", "result"],
            ),
            shadow_compared: counter_vec(
                &r,
                "rtap_shadow_compared_total",
                "Outputs (windows, alerts) of a shadow version compared with its live version's, by result (equal, different).",
                &["plugin", "result"],
            ),
            checkpoint_duration: histogram(
                &r,
                "rtap_checkpoint_duration_seconds",
                "Time to write a checkpoint.",
                SECONDS.to_vec(),
            ),
            checkpoints: counter_vec(
                &r,
                "rtap_checkpoints_total",
                "Checkpoints, by result.",
                &["result"],
            ),
            checkpoint_age: reg(
                &r,
                prometheus::Gauge::new(
                    "rtap_checkpoint_age_seconds",
                    "Age of the last successful checkpoint.",
                )
                .expect("valid"),
            ),
            consumer_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rtap_consumer_lag",
                        "Messages behind the end of each source partition.",
                    ),
                    &["partition"],
                )
                .expect("valid"),
            ),
            watermark_lag: reg(
                &r,
                prometheus::Gauge::new(
                    "rtap_watermark_lag_seconds",
                    "Wall clock minus the event-time watermark.",
                )
                .expect("valid"),
            ),
            sink_write_duration: histogram_vec(
                &r,
                "rtap_sink_write_duration_seconds",
                "Duration of one write to a sink.",
                &["sink"],
                SECONDS.to_vec(),
            ),
            sink_errors: counter_vec(
                &r,
                "rtap_sink_errors_total",
                "Failed writes to a sink.",
                &["sink"],
            ),
            sink_buffered: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "rtap_sink_buffered_points",
                        "Points waiting to be written (memory and disk).",
                    ),
                    &["sink"],
                )
                .expect("valid"),
            ),
            websocket_clients: reg(
                &r,
                IntGauge::new("rtap_websocket_clients", "Connected WebSocket clients.")
                    .expect("valid"),
            ),
            history_outputs: reg(
                &r,
                IntGauge::new(
                    "rtap_history_outputs",
                    "Metrics and alerts held for /api/history.",
                )
                .expect("valid"),
            ),
            history_bytes: reg(
                &r,
                IntGauge::new(
                    "rtap_history_bytes",
                    "Estimated memory of the history: output text plus a fixed cost per output.",
                )
                .expect("valid"),
            ),
            worker_events: counter_vec(
                &r,
                "rtap_worker_events_total",
                "Events each processing worker took through stage 1 (its input partitions).",
                &["worker"],
            ),
            worker_busy: reg(
                &r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "rtap_worker_busy_seconds_total",
                        "Time each processing worker spent working (stage 1, stage 2, commits).",
                    ),
                    &["worker"],
                )
                .expect("valid"),
            ),
            worker_keys: gauge_vec(
                &r,
                "rtap_worker_keys",
                "Keys held in each worker's key groups, all plugins, at the last commit.",
                &["worker"],
            ),
            worker_exchange_records: counter_vec(
                &r,
                "rtap_worker_exchange_records_total",
                "Exchange records (partial states, routed events) each worker's stage 2 applied.",
                &["worker"],
            ),
            worker_exchange_bytes: counter_vec(
                &r,
                "rtap_worker_exchange_bytes_total",
                "Encoded exchange bytes each worker's stage 2 decoded (`--exchange wire`; 0 with the in-memory exchange).",
                &["worker"],
            ),
            worker_exchange_queue: gauge_vec(
                &r,
                "rtap_worker_exchange_queue",
                "Exchange records waiting for each worker's stage 2 at the last round.",
                &["worker"],
            ),
            registry: r,
        }
    }

    /// A commit made these batches' outputs durable: one commit-latency
    /// sample per batch, from when it was read.
    pub fn batches_committed(&self, read_at: &[std::time::Instant]) {
        for b in read_at {
            self.commit_latency.observe(b.elapsed().as_secs_f64());
        }
    }
}

/// The host's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&metrics().registry.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).expect("UTF-8 exposition")
}
