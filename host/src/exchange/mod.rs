//! The exchange topic between hosts (`<group>-exchange`): how the stage 1
//! of one host hands records to the stage 2 of another, each applied
//! exactly once — on a broker that hides the records of aborted
//! transactions from `read_committed` readers (Kafka) and on one that
//! shows them (tansu). (Within one host the exchange is in memory:
//! `crate::pipeline::exchange`.) This is step 4 of
//! `docs/kafka-exactly-once-plan.md`: the transport and its guarantee; the
//! pipeline does not use it yet.
//!
//! **Senders** are *tasks* (an input partition's stage 1), each with its
//! own transactional producer ([`TaskProducer`]): opening one fences the
//! task's previous producer, wherever it runs (tansu does not fence by
//! consumer-group metadata, `host/tests/kafka_broker.rs`).
//! - Every transaction has an **id**, never reused: a producer (an
//!   *incarnation* of the task) starts at `max(marker + 1, now in µs)`,
//!   where the marker is the task's last committed id, and counts up by one
//!   per transaction. Each record carries its incarnation's **start** and
//!   the marker it found (**prev**). As with the changelog's commit ids
//!   (`crate::checkpoint::changelog`), this takes a clock that does not
//!   step back across a restart and fewer than a transaction per µs.
//! - The topic has a partition per task and range of key groups
//!   ([`ExchangeTopics`]): each partition has one writer, and the owner of a
//!   range reads one partition per task. (tansu defers a transaction's
//!   offsets while another transaction that wrote to the same partitions
//!   is open; with shared partitions the tasks' markers lagged by seconds,
//!   and the marker a new incarnation reads must be current.)
//! - A transaction writes records for any ranges, numbered per partition,
//!   then a **seal** to each of its partitions: every owner hears of every
//!   transaction (and, later, of the task's watermark).
//! - It commits the task's **marker** (its id) as the offset of the task's
//!   partition of the marker topic in the marker group: a transactional
//!   offset commit is what tansu applies atomically with the transaction.
//!
//! The **receiver** of an exchange partition (the owner of its key groups)
//! passes what it reads through a [`Gate`], which releases a record once it
//! knows its transaction committed:
//! - a later incarnation of the task has shown itself in the partition: the
//!   record committed if its id is at most that incarnation's *prev*, and
//!   was aborted otherwise (an incarnation fenced every earlier one before
//!   it read the marker);
//! - or the task's committed marker is at least the record's id, and the
//!   partition has shown a record of the same incarnation with an id at
//!   least the marker's (so the marker is that incarnation's: ids of
//!   incarnations do not overlap).
//!
//! The receiver stores, with its state, the last record applied per task
//! (id, then number), and commits as its exchange offset the first record
//! it has not decided yet: after a restart it reads from there again, and
//! the gate skips what it applied before. So a record re-sent after a crash
//! (a new id), one of an aborted transaction, and one read twice are each
//! applied once.

mod gate;
mod task;

pub use gate::{Applied, Gate, Released};
pub use task::{ExchangeError, ExchangeTopics, MarkerReader, TaskProducer};

/// What every exchange record carries (the `rtap-x` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub task: u32,
    /// The first id of the sender's incarnation.
    pub start: u64,
    /// The task's committed marker when the incarnation began (0: none).
    pub prev: u64,
    /// The transaction.
    pub id: u64,
    /// The record's number among the transaction's records in its
    /// partition; the seal is the last.
    pub n: u32,
    /// Whether it is the seal (no payload).
    pub seal: bool,
}

/// The header's name.
pub const HEADER: &str = "rtap-x";

/// The header's length.
const HEADER_LEN: usize = 33;

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.task.to_be_bytes());
        b[4..12].copy_from_slice(&self.start.to_be_bytes());
        b[12..20].copy_from_slice(&self.prev.to_be_bytes());
        b[20..28].copy_from_slice(&self.id.to_be_bytes());
        b[28..32].copy_from_slice(&self.n.to_be_bytes());
        b[32] = u8::from(self.seal);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, String> {
        if b.len() != HEADER_LEN {
            return Err(format!(
                "an `{HEADER}` header of {} bytes (expected {HEADER_LEN})",
                b.len()
            ));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let h = Header {
            task: u32_at(0),
            start: u64_at(4),
            prev: u64_at(12),
            id: u64_at(20),
            n: u32_at(28),
            seal: b[32] == 1,
        };
        if b[32] > 1 || h.id < h.start || h.prev >= h.start || h.id > i64::MAX as u64 {
            return Err(format!("an `{HEADER}` header that is not one: {h:?}"));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_nonsense_is_refused() {
        let h = Header {
            task: 11,
            start: 1_700_000_000_000_000,
            prev: 40,
            id: 1_700_000_000_000_007,
            n: 7,
            seal: true,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        assert!(Header::decode(&h.encode()[..32]).is_err());
        let mut bad = h.encode();
        bad[32] = 2;
        assert!(Header::decode(&bad).is_err());
        let before_start = Header { id: 3, ..h };
        assert!(Header::decode(&before_start.encode()).is_err());
    }
}
