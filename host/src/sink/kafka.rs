//! Kafka outputs: metrics to `processed-metrics` keyed by
//! `plugin|name|key|window_start|window_end` (so compaction keeps the latest
//! value of a window), alerts to `cep-alerts` keyed by their deterministic id.
//! Producer defaults are the seed's (snappy, `linger.ms=5`,
//! `batch.size=16384`) plus idempotence; any librdkafka option can override
//! them. Before every checkpoint the runner flushes the producer, so a
//! checkpoint never covers an output that was not acknowledged (at-least-once;
//! the transactional protocol is in `docs/kafka-exactly-once-plan.md`).

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::metrics::metrics;
use crate::pipeline::output::Output;
use crate::source::kafka::KafkaConfig;

pub struct KafkaSink {
    producer: BaseProducer,
    metrics_topic: String,
    alerts_topic: String,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, String> {
        let producer: BaseProducer = cfg
            .client(&[
                ("compression.type", "snappy"),
                ("linger.ms", "5"),
                ("batch.size", "16384"),
                ("enable.idempotence", "true"),
            ])
            .create()
            .map_err(|e| format!("Kafka producer: {e}"))?;
        Ok(KafkaSink {
            producer,
            metrics_topic: cfg.metrics_topic.clone(),
            alerts_topic: cfg.alerts_topic.clone(),
        })
    }

    /// Queue one output (its JSON line) for its topic.
    pub fn send(&self, out: &Output, line: &str) {
        let (topic, key) = match out {
            Output::Metric(m) => (
                &self.metrics_topic,
                format!(
                    "{}|{}|{}|{}|{}",
                    m.plugin, m.name, m.key, m.window_start, m.window_end
                ),
            ),
            Output::Alert(a) => (&self.alerts_topic, a.id.clone()),
            Output::Plugin(_) => return,
        };
        let mut record = BaseRecord::to(topic).key(&key).payload(line);
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    // Back-pressure: wait for the broker to take some.
                    self.producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => {
                    metrics().sink_errors.with_label_values(&["kafka"]).inc();
                    tracing::error!(topic, "cannot queue an output for Kafka: {e}");
                    return;
                }
            }
        }
    }

    /// Serve delivery reports.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Wait until every queued output is acknowledged.
    pub fn flush(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let res = self
            .producer
            .flush(Duration::from_secs(30))
            .map_err(|e| format!("Kafka flush: {e}"));
        metrics()
            .sink_write_duration
            .with_label_values(&["kafka"])
            .observe(started.elapsed().as_secs_f64());
        if res.is_err() {
            metrics().sink_errors.with_label_values(&["kafka"]).inc();
        }
        res
    }
}
