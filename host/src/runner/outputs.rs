//! Every output, once serialised, to every sink: the JSONL files, the
//! WebSocket hub, InfluxDB, the Kafka transaction; dead letters and late
//! events to their own files and, with Kafka, to their topics in the same
//! transaction. The runner hands over what the pipeline
//! emitted after each batch and asks for a sync before each commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::checkpoint::Committer;
use crate::config::{Config, SinkSpec};
use crate::metrics::metrics;
use crate::output::{DeadLetter, LateEvent, Output};
use crate::sink::influx::{InfluxConfig, InfluxSink, InfluxStatus};
use crate::sink::jsonl::SinkError;
use crate::sink::kafka::Record;
use crate::sink::{Hub, JsonlWriter};
use crate::status::Registry;

use super::RunError;

/// The sinks of a run.
pub struct Outputs {
    sinks: Vec<JsonlWriter>,
    dead: JsonlWriter,
    late: JsonlWriter,
    hub: Option<Hub>,
    influx: Option<InfluxSink>,
    registry: Arc<Registry>,
}

impl Outputs {
    /// Open every sink the config names (`hub`: the WebSocket hub, when the
    /// server runs).
    pub fn open(
        config: &Config,
        hub: Option<Hub>,
        registry: Arc<Registry>,
    ) -> Result<Self, String> {
        let open = |p: &str| JsonlWriter::open(p).map_err(|e| e.to_string());
        let sinks = config
            .sinks
            .iter()
            .map(|s| match s {
                SinkSpec::Jsonl(p) => open(p),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dead = open(&config.dead_letter_path())?;
        let late = open(&config.late_path())?;
        let influx = match InfluxConfig::from_config(config) {
            Some(cfg) => Some(InfluxSink::start(cfg).map_err(|e| {
                format!(
                    "InfluxDB sink: cannot create its spool under {}: {e}",
                    config.data_dir.display()
                )
            })?),
            None => None,
        };
        Ok(Outputs {
            sinks,
            dead,
            late,
            hub,
            influx,
            registry,
        })
    }

    /// The InfluxDB sink's status, for `/health`.
    pub fn influx_status(&self) -> Option<Arc<InfluxStatus>> {
        self.influx.as_ref().map(|i| i.status.clone())
    }

    /// Show a line on the WebSocket only (the pipeline status).
    pub fn publish(&self, line: String) {
        if let Some(hub) = &self.hub {
            hub.publish(Arc::from(line));
        }
    }

    /// Write a round's outputs (with their JSON lines), dead letters and
    /// late events to every sink (the Kafka records into `kafka`'s open
    /// transaction).
    pub fn write(
        &mut self,
        outputs: Vec<Output>,
        lines: Vec<String>,
        dead: Vec<DeadLetter>,
        late: Vec<LateEvent>,
        kafka: Option<&Committer>,
    ) -> Result<(), RunError> {
        if !outputs.is_empty() {
            self.write_outputs(&outputs, lines, kafka)?;
        }
        self.write_dead_letters(dead, kafka)?;
        self.write_late_events(late, kafka)
    }

    fn write_outputs(
        &mut self,
        outputs: &[Output],
        lines: Vec<String>,
        kafka: Option<&Committer>,
    ) -> Result<(), RunError> {
        let mut data_outputs = 0u64;
        let mut points = Vec::new();
        let mut records = Vec::new();
        for (out, line) in outputs.iter().zip(lines) {
            if let (Output::Metric(m), Some(_)) = (out, &self.influx)
                && let Some(line) = crate::sink::influx::line_of(m)
            {
                points.push(line);
            }
            // Lifecycle events go to the log and the dashboard, not to
            // the data sinks.
            if let Output::Plugin(p) = out {
                tracing::info!(plugin = %p.plugin, event = p.event, version = %p.version, "{}", p.message);
            } else {
                data_outputs += 1;
                for s in &mut self.sinks {
                    s.write_line(&line)?;
                }
                if kafka.is_some() {
                    records.extend(Record::of(out, &line));
                }
            }
            if let Some(hub) = &self.hub {
                hub.publish(Arc::from(line));
            }
        }
        if let Some(k) = kafka {
            k.send(records).map_err(RunError::Kafka)?;
        }
        self.registry
            .stats
            .outputs
            .fetch_add(data_outputs, Ordering::Relaxed);
        if let Some(influx) = &self.influx {
            influx.push(points);
        }
        for s in &mut self.sinks {
            s.flush()?;
        }
        Ok(())
    }

    fn write_dead_letters(
        &mut self,
        dead: Vec<DeadLetter>,
        kafka: Option<&Committer>,
    ) -> Result<(), RunError> {
        if dead.is_empty() {
            return Ok(());
        }
        self.registry
            .stats
            .dead_lettered
            .fetch_add(dead.len() as u64, Ordering::Relaxed);
        for d in &dead {
            metrics().dead_letters.with_label_values(&[d.reason]).inc();
            self.dead
                .write_line(&serde_json::to_string(d).expect("dead letters serialize"))?;
        }
        self.dead.flush()?;
        if let Some(k) = kafka {
            k.send(dead.iter().map(Record::dead_letter).collect())
                .map_err(RunError::Kafka)?;
        }
        Ok(())
    }

    fn write_late_events(
        &mut self,
        late: Vec<LateEvent>,
        kafka: Option<&Committer>,
    ) -> Result<(), RunError> {
        if late.is_empty() {
            return Ok(());
        }
        self.registry
            .stats
            .late_events
            .fetch_add(late.len() as u64, Ordering::Relaxed);
        metrics().late_events.inc_by(late.len() as u64);
        for l in &late {
            self.late
                .write_line(&serde_json::to_string(l).expect("late events serialize"))?;
        }
        self.late.flush()?;
        if let Some(k) = kafka {
            k.send(late.iter().map(Record::late).collect())
                .map_err(RunError::Kafka)?;
        }
        Ok(())
    }

    /// Before a commit: what was emitted must be written or on disk —
    /// InfluxDB points written or spooled, JSONL files flushed (`fsync`:
    /// and fsynced). Returns each JSONL file with its length.
    pub fn sync(&mut self, fsync: bool) -> Result<Vec<(String, u64)>, SinkError> {
        if let Some(influx) = &self.influx {
            influx.sync();
        }
        let mut files = Vec::new();
        for w in self
            .sinks
            .iter_mut()
            .chain([&mut self.dead, &mut self.late])
        {
            files.extend(w.sync(fsync)?);
        }
        Ok(files)
    }
}
