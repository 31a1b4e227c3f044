//! Checkpoints and recovery: the protocol that makes a crash at any moment
//! safe, documented here once.
//!
//! The pipeline's state is written by atomic commits into the state store
//! (`crate::state::StateStore`, RocksDB under `--data-dir/state`); each is a
//! consistent cut at a batch boundary: every changed key of every plugin's
//! operator state (window contents, detector states, timers) and a
//! [`CommitMeta`] — the source positions, the watermark, each plugin's
//! content hash and state schema, and the length of every JSONL file.
//!
//! - [`commit`]: what a commit holds and how the processing thread takes one
//!   ([`Checkpoints`]);
//! - [`committer`]: the thread that runs the Kafka transactions;
//! - [`folder`]: the thread that folds logged commits into the state;
//! - [`restore`]: start-up — the Kafka marker check, the fold or discard of
//!   logged commits, the state and positions to resume from;
//! - [`alive`]: the active host's heartbeat, which a standby watches;
//! - [`changelog`]: every commit's changes on `<group>-changelog`, in the
//!   transaction, so a lost or stale data dir is restored from Kafka;
//! - [`range`]: stage 2's unit of commit when hosts share the work — a
//!   range of key groups with its own transactional producer, its outputs,
//!   changelog, meta and marker, restored by whichever host takes it over
//!   (`crate::cluster::ranges` runs a host's share of them).
//!
//! Operators track the keys they change, so a commit holds only those (a
//! swapped-in plugin with a new or migrated state rewrites its prefix). Keys
//! are also what the scale-out plan repartitions by (see
//! `docs/kafka-exactly-once-plan.md`).
//!
//! ## Without Kafka (simulator or file source, JSONL/InfluxDB sinks)
//!
//! Every `--checkpoint-interval` (10 s) the processing thread syncs the
//! sinks — InfluxDB points written or spooled to disk, JSONL files flushed
//! and fsynced — then applies the commit to `s/` and `m/commit` in one synced
//! `WriteBatch`. On restart the source resumes from the committed positions
//! and every JSONL file is cut back to its committed length, so the files end
//! up exactly as after an uninterrupted run.
//!
//! ## With the Kafka sink: commits in the transaction, checkpoints apart
//!
//! Every `--commit-interval` (100 ms) while events arrive, and at least once
//! a second without (so the group's marker shows the host alive), the
//! processing thread hands a commit to
//! the committer thread ([`Committer`]) and goes on. The
//! committer, one commit after the other:
//!
//! 1. **logs** it: one synced put of `d/<id>`;
//! 2. **commits the Kafka transaction** that holds every output of the
//!    interval, the input offsets and the commit marker — offset `id` of
//!    partition 0 of the marker topic — for the consumer group
//!    (`send_offsets_to_transaction`).
//!
//! Every `--checkpoint-interval` a checkpoint thread **folds** the logged
//! commits — up to the last one the committer has committed to Kafka — into
//! `s/` (one `WriteBatch`, made durable by flushing the memtables rather
//! than through the write-ahead log; a key changed by a hundred commits is
//! written once), while the committer
//! goes on committing (a fold takes seconds under load). A commit costs one
//! sequential write; the per-key work happens once per checkpoint. A fold
//! and later logged commits touch disjoint keys (`d/` ids above the fold's).
//! The running host folds the commits it logged from the copies it kept in
//! memory, so the log is only read back at start-up, after a crash.
//!
//! The group's committed marker is the single point of truth: outputs,
//! input offsets and marker commit atomically in Kafka. On restart the host
//! calls `init_transactions` (which aborts a transaction the crashed process
//! left open and fences it), reads the marker `g`, folds the logged commits
//! up to `g` and discards those after it (their transactions aborted, so
//! their outputs and offsets never became visible). A crash at any point is
//! safe: before step 2 completes the interval is replayed from the previous
//! commit's positions; after it, its logged commit is folded in at restart.
//! When the store and the marker disagree in any other way — another host
//! committed for this group, the data dir was lost or restored from an old
//! copy — the host watches the marker for a few seconds before fencing
//! anyone: if it moves, another host is committing and the start is
//! refused (with `--standby`: it waits, and watches again); else the store
//! is rebuilt from the changelog ([`changelog`]),
//! which every transaction also writes: each changed key, and the meta,
//! tagged with the commit id — with `--kafka-changelog` or `--standby`;
//! without, the host refuses. A store that fits the marker is watched the
//! same way when the group's heartbeat ([`alive`]) is younger than
//! `--takeover-after`: a host that has just taken over has not moved the
//! marker yet, and must not be fenced by the one it replaced.
//! Commit ids are never reused across restarts, so a changelog record of a
//! transaction that aborted — which tansu shows to `read_committed`
//! readers — is told apart by its id alone.
//!
//! The WebSocket stream is not part of the transaction: it shows outputs at
//! once (at-most-once per connection; after a crash, outputs of an aborted
//! interval are shown again when they are recomputed). JSONL files are
//! flushed at every commit and fsynced at every checkpoint; InfluxDB writes
//! are idempotent (series + timestamp).

pub mod alive;
pub mod changelog;
pub mod commit;
pub mod committer;
pub mod folder;
pub mod range;
pub mod restore;

pub use commit::{Checkpoints, Commit, CommitMeta, FORMAT, PluginMeta, Store};
pub use committer::Committer;

use std::time::Duration;

/// Fault injection for the kill tests (`RTAP_FAULT_COMMIT_PAUSE_MS`): name
/// the commit phase on stderr and pause in it, so a SIGKILL lands there.
pub fn fault_phase(pause: Option<Duration>, phase: &str, id: u64) {
    if let Some(d) = pause {
        eprintln!("rtap-fault: {phase} commit {id}");
        std::thread::sleep(d);
    }
}

/// The pause of [`fault_phase`], from `RTAP_FAULT_COMMIT_PAUSE_MS`.
pub fn fault_pause_from_env() -> Option<Duration> {
    fault_pause("RTAP_FAULT_COMMIT_PAUSE_MS")
}

/// A fault-injection pause of the kill tests: `var` in milliseconds, if
/// it is set.
pub fn fault_pause(var: &str) -> Option<Duration> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}
