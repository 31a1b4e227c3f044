//! Rounds from the source's readers.
//!
//! A bounded source (a file's splits) gives a round one batch of every
//! reader that has not ended — waiting for each — so what a round holds
//! never depends on timing, and a restart replays the same rounds. An
//! unbounded source (the simulator, Kafka) gives a round whatever batch is
//! ready, and so does a single reader (stdin, a file of one split).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use crate::event::EventBatch;
use crate::source::{Opened, SourceError, SourceMsg};

pub struct Feed {
    readers: Vec<Reader>,
    bounded: bool,
    /// `--max-events` over several readers: checked at round boundaries.
    limit: Option<u64>,
    taken: u64,
}

struct Reader {
    rx: Receiver<SourceMsg>,
    /// The partition it reads, when it reads one (a file split).
    partition: i32,
    ended: bool,
}

/// What [`Feed::next`] got.
pub enum Next {
    /// The batches of a round, and the partitions that ended before it
    /// (they no longer hold the watermark back).
    Round {
        batches: Vec<EventBatch>,
        ended: Vec<i32>,
    },
    /// Nothing within the timeout.
    Idle,
    /// No more input: `limit` says whether `--max-events` stopped it.
    End {
        limit: bool,
    },
    Failed(SourceError),
    /// A reader thread stopped without saying why.
    Gone,
}

impl Feed {
    /// Start a thread per reader; batches of `batch_size`, `depth` batches
    /// read ahead per reader.
    pub fn spawn(opened: Opened, batch_size: usize, depth: usize, limit: Option<u64>) -> Self {
        let one = opened.readers.len() == 1;
        let partitions = opened.partitions.clone();
        let readers = opened
            .readers
            .into_iter()
            .enumerate()
            .map(|(i, r)| Reader {
                // With one reader, the reader itself stops exactly at the
                // limit.
                rx: crate::source::spawn(r, batch_size, depth, limit.filter(|_| one)),
                partition: partitions.get(i).copied().unwrap_or(0),
                ended: false,
            })
            .collect();
        Feed {
            readers,
            bounded: opened.bounded,
            limit: limit.filter(|_| !one),
            taken: 0,
        }
    }

    pub fn next(&mut self, timeout: Duration) -> Next {
        if self.limit.is_some_and(|l| self.taken >= l) {
            return Next::End { limit: true };
        }
        // One reader (stdin, a one-split file) needs no waiting for the
        // others: what it has is the round, and a quiet pipe is idle, not
        // a reason to block the lifecycle commands and the status.
        let next = if self.bounded && self.readers.len() > 1 {
            self.next_bounded()
        } else {
            self.next_ready(timeout)
        };
        if let Next::Round { batches, .. } = &next {
            self.taken += batches
                .iter()
                .map(|b| (b.events.len() + b.malformed.len()) as u64)
                .sum::<u64>();
        }
        next
    }

    /// One batch of every reader still reading.
    fn next_bounded(&mut self) -> Next {
        let mut batches = Vec::new();
        let mut ended = Vec::new();
        for r in self.readers.iter_mut().filter(|r| !r.ended) {
            match r.rx.recv() {
                Ok(SourceMsg::Batch(b)) => batches.push(b),
                Ok(SourceMsg::End { limit: true }) => return Next::End { limit: true },
                Ok(SourceMsg::End { limit: false }) => {
                    r.ended = true;
                    ended.push(r.partition);
                }
                Ok(SourceMsg::Failed(e)) => return Next::Failed(e),
                Err(_) => return Next::Gone,
            }
        }
        if batches.is_empty() && self.readers.iter().all(|r| r.ended) {
            return Next::End { limit: false };
        }
        Next::Round { batches, ended }
    }

    /// The next batch of the one reader (an unbounded source has one).
    fn next_ready(&mut self, timeout: Duration) -> Next {
        let Some(r) = self.readers.iter_mut().find(|r| !r.ended) else {
            return Next::End { limit: false };
        };
        match r.rx.recv_timeout(timeout) {
            Ok(SourceMsg::Batch(b)) => Next::Round {
                batches: vec![b],
                ended: Vec::new(),
            },
            Ok(SourceMsg::End { limit }) => Next::End { limit },
            Ok(SourceMsg::Failed(e)) => Next::Failed(e),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Gone,
        }
    }
}
