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

use crate::event::EventBatch;

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
