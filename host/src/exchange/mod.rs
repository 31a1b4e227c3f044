//! The exchange topic between hosts (`<group>-exchange`): how the stage 1
//! of one host hands records to the stage 2 of another, each applied
//! exactly once — on a broker that hides the records of aborted
//! transactions from `read_committed` readers (Kafka) and on one that
//! shows them (tansu). (Within one host the exchange is in memory:
//! `crate::pipeline::exchange`.) This is step 4 of
//! `docs/kafka-exactly-once-plan.md`: the transport and its guarantee.
//! One host's pipeline runs on it with `--exchange kafka`
//! (`crate::runner`'s `Crossing`: each worker a task and an owner); hosts
//! do not share input partitions yet.
//!
//! **Senders** are *tasks* (an input partition's stage 1), each with its
//! own transactional producer ([`TaskProducer`]): opening one fences the
//! task's previous producer, wherever it runs (tansu does not fence by
//! consumer-group metadata, `host/tests/kafka_broker.rs`).
//! - An *incarnation* of a task (a producer) begins by committing a
//!   **claim**: it reads the task's committed marker *m* (the last committed
//!   id), takes `start = max(m + 2, now in µs)` and commits a claim record
//!   to each of its partitions with the marker set to `start`, before it
//!   sends anything else. Its transactions then have the ids `start + 1`,
//!   `start + 2`, …. Each record carries its incarnation's start and the
//!   marker it found (**prev**).
//! - So ids are never reused, whatever the hosts' clocks say: an
//!   incarnation that sent records had its claim committed, the next one
//!   finds a marker at least that claim and at most one id above it is
//!   still open (aborted), and begins two above. (The clock only spreads
//!   the starts out.) A claim that itself aborted leaves claim records and
//!   nothing else.
//! - A transaction writes records for any ranges, numbered per partition,
//!   then a **seal** to each of its partitions: every owner hears of every
//!   transaction, and of the task's [`Progress`] after it (its watermark,
//!   or that its input is idle). An owner fires by the least watermark of
//!   its tasks' committed seals ([`owner_watermark`]): watermarks travel as
//!   records, and one of an aborted transaction never counts.
//! - It commits the task's **marker** (its id) as the offset of the task's
//!   partition of the marker topic in the marker group: a transactional
//!   offset commit is what tansu applies atomically with the transaction.
//! - The topic has a partition per task and range of key groups
//!   ([`ExchangeTopics`]): each partition has one writer, and the owner of a
//!   range reads one partition per task. (tansu defers a transaction's
//!   offsets while another transaction that wrote to the same partitions
//!   is open; with shared partitions the tasks' markers lagged by seconds,
//!   and the marker a new incarnation reads must be current.)
//!
//! The **receiver** of an exchange partition (the owner of its key groups)
//! passes what it reads through a [`Gate`], which orders a task's
//! incarnations by where each first shows in the partition (an incarnation
//! writes only after it fenced the ones before it: the order does not
//! depend on clocks) and releases a record once it knows its transaction
//! committed:
//! - a later incarnation has shown itself: the record committed if its id
//!   is at most the next incarnation's *prev*, and was aborted otherwise
//!   (that incarnation fenced this one, then read the marker);
//! - or the task's committed marker is at least the record's id, and the
//!   partition has shown a record of the same incarnation with an id at
//!   least the marker's (so the marker is that incarnation's).
//!
//! The receiver stores, with its state, the last record applied per task
//! (id, then number), and commits as its exchange offset the first record
//! it has not decided yet: after a restart it reads from there again, and
//! the gate skips what it applied before. So a record re-sent after a crash
//! (a new id), one of an aborted transaction, and one read twice are each
//! applied once.

mod gate;
mod membership;
mod owner;
mod task;

pub use gate::{Applied, Gate, Released, owner_watermark};
pub use membership::{Change, Membership};
pub use owner::{Owner, OwnerError};
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
    pub kind: Kind,
}

/// What an exchange record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// For the owner to apply.
    Data,
    /// A transaction's last record in the partition: the task's
    /// [`Progress`].
    Seal,
    /// An incarnation's first transaction (no payload): never released.
    Claim,
}

/// The header's name.
pub const HEADER: &str = "rtap-x";

/// What a seal says of its task's input after the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The task's watermark (event time, ms).
    pub watermark: i64,
    /// Its input has had nothing for the idle timeout: it does not hold
    /// the owners' watermark back.
    pub idle: bool,
}

impl Progress {
    /// A seal's payload: the watermark (8 bytes, big-endian), then 1 when
    /// idle.
    pub fn encode(&self) -> [u8; 9] {
        let mut b = [0u8; 9];
        b[..8].copy_from_slice(&self.watermark.to_be_bytes());
        b[8] = u8::from(self.idle);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Progress, String> {
        match b {
            [w @ .., idle @ (0 | 1)] if w.len() == 8 => Ok(Progress {
                watermark: i64::from_be_bytes(w.try_into().expect("8 bytes")),
                idle: *idle == 1,
            }),
            _ => Err(format!("a seal of {} bytes that is not one", b.len())),
        }
    }
}

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
        b[32] = match self.kind {
            Kind::Data => 0,
            Kind::Seal => 1,
            Kind::Claim => 2,
        };
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
            kind: match b[32] {
                0 => Kind::Data,
                1 => Kind::Seal,
                _ => Kind::Claim,
            },
        };
        if b[32] > 2 || h.id < h.start || h.prev >= h.start || h.id > i64::MAX as u64 {
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
            kind: Kind::Seal,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        assert!(Header::decode(&h.encode()[..32]).is_err());
        let mut bad = h.encode();
        bad[32] = 3;
        assert!(Header::decode(&bad).is_err());
        let before_start = Header { id: 3, ..h };
        assert!(Header::decode(&before_start.encode()).is_err());
        let p = Progress {
            watermark: -5,
            idle: true,
        };
        assert_eq!(Progress::decode(&p.encode()), Ok(p));
        assert!(Progress::decode(&p.encode()[..8]).is_err());
        assert!(Progress::decode(&[0; 9][..]).is_ok());
        assert!(Progress::decode(&[[0; 8].as_slice(), &[2]].concat()).is_err());
    }
}
