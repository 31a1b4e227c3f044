//! Sources: where events come from.
//!
//! A source yields [`EventBatch`]es in arrival order; it runs on its own thread
//! and hands batches to the pipeline through a bounded channel, so a slow
//! pipeline slows the source down (back-pressure) and memory stays bounded.
//! Every source can report and resume from a position, which checkpoints
//! record.

pub mod decode;
pub mod file;
pub mod kafka;
pub mod simulator;

use std::sync::mpsc;
use std::thread;

use crate::config::{Config, SourceSpec};
use crate::event::EventBatch;
use crate::kafka::KafkaConfig;

pub use crate::event::Position;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} cannot resume from a position")]
    NotSeekable(String),
    #[error("{0}")]
    Config(String),
}

pub trait Source: Send + 'static {
    /// `simulator`, `file:PATH`, `file:-`.
    fn name(&self) -> &str;
    /// The next batch of at most `max` events; `None` at the end of a bounded
    /// input. Blocks (a paced simulator) until events are due.
    fn next_batch(&mut self, max: usize) -> Result<Option<EventBatch>, SourceError>;
    /// Resume after these positions (from a checkpoint), one per partition.
    fn seek(&mut self, positions: &[(i32, Position)]) -> Result<(), SourceError>;
}

/// An opened source: one reader or several (a file's splits), each read
/// on its own thread.
pub struct Opened {
    /// The name the state's positions belong to (`file:PATH`, …).
    pub name: String,
    pub readers: Vec<Box<dyn Source>>,
    /// Every input partition.
    pub partitions: Vec<i32>,
    /// A file: it ends, and rounds take a batch of every reader (so the
    /// outputs do not depend on timing).
    pub bounded: bool,
    /// Reading the Kafka events topic (its partitions are `partitions`).
    pub kafka: bool,
}

impl Opened {
    fn one(source: Box<dyn Source>, partitions: Vec<i32>, bounded: bool, kafka: bool) -> Self {
        Opened {
            name: source.name().to_string(),
            readers: vec![source],
            partitions,
            bounded,
            kafka,
        }
    }
}

impl SourceSpec {
    /// The source the command line asks for (`kafka`: with `kafka`'s
    /// settings).
    pub fn open(
        &self,
        config: &Config,
        kafka: Option<&KafkaConfig>,
    ) -> Result<Opened, SourceError> {
        match self {
            SourceSpec::Kafka => {
                let k = kafka.ok_or_else(|| {
                    SourceError::Config("--source kafka needs --kafka-brokers".into())
                })?;
                let s = kafka::KafkaSource::open(k, config.idle_timeout.0)?;
                let partitions = s.partitions().to_vec();
                Ok(Opened::one(Box::new(s), partitions, false, true))
            }
            SourceSpec::Simulator => {
                if config.rate.is_nan() || config.rate <= 0.0 {
                    return Err(SourceError::Config(format!(
                        "--rate must be positive, got {}",
                        config.rate
                    )));
                }
                let partitions = config.sim_partitions.max(1);
                let sim = simulator::Simulator::new(simulator::SimConfig {
                    rate: config.rate,
                    seed: config.seed,
                    start_ms: config.sim_start_ms,
                    unpaced: config.unpaced,
                    limit: None,
                    partitions,
                });
                Ok(Opened::one(
                    Box::new(sim),
                    (0..partitions as i32).collect(),
                    false,
                    false,
                ))
            }
            SourceSpec::File(path) if path == "-" => Ok(Opened::one(
                Box::new(file::FileSource::open(path)?),
                vec![0],
                true,
                false,
            )),
            SourceSpec::File(path) => {
                let splits = file::splits(
                    path,
                    config.file_split_size.map_or(u64::MAX, |b| b.0 as u64),
                )?;
                let readers = splits
                    .iter()
                    .enumerate()
                    .map(|(p, split)| {
                        file::FileSource::open_split(path, p as i32, split)
                            .map(|s| Box::new(s) as Box<dyn Source>)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Opened {
                    name: format!("file:{path}"),
                    partitions: (0..readers.len() as i32).collect(),
                    readers,
                    bounded: true,
                    kafka: false,
                })
            }
        }
    }
}

/// What the source thread sends.
pub enum SourceMsg {
    Batch(EventBatch),
    /// No more input: `limit` says whether `--max-events` stopped it.
    End {
        limit: bool,
    },
    Failed(SourceError),
}

/// Run a source on its own thread; at most `depth` batches wait in the
/// channel. With `limit`, stop after that many input lines/events.
pub fn spawn(
    mut source: Box<dyn Source>,
    batch_size: usize,
    depth: usize,
    limit: Option<u64>,
) -> mpsc::Receiver<SourceMsg> {
    let (tx, rx) = mpsc::sync_channel(depth);
    thread::Builder::new()
        .name("source".into())
        .spawn(move || {
            let mut sent = 0u64;
            loop {
                let max = match limit {
                    Some(l) if sent >= l => {
                        let _ = tx.send(SourceMsg::End { limit: true });
                        return;
                    }
                    Some(l) => batch_size.min((l - sent) as usize),
                    None => batch_size,
                };
                let msg = match source.next_batch(max) {
                    Ok(Some(b)) => {
                        sent += (b.events.len() + b.malformed.len()) as u64;
                        SourceMsg::Batch(b)
                    }
                    Ok(None) => SourceMsg::End { limit: false },
                    Err(e) => SourceMsg::Failed(e),
                };
                let last = !matches!(msg, SourceMsg::Batch(_));
                if tx.send(msg).is_err() || last {
                    return;
                }
            }
        })
        .expect("spawn source thread");
    rx
}
