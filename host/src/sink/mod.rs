//! Sinks: where outputs go. Each output is serialised to JSON once and the
//! same line goes to every sink (the fan-out is the runner's `Outputs`).
//!
//! Delivery guarantees across a crash (the protocol is in
//! `crate::checkpoint`):
//! Kafka topics exactly-once for `read_committed` readers (one transaction
//! per commit, with the input offsets); JSONL files exactly-once (cut back to
//! the last commit's length on restart; stdout cannot be, so at-least-once);
//! InfluxDB effectively once (spooled before every commit, idempotent
//! writes). The WebSocket stream is immediate and best-effort, at-most-once
//! per connected client: a client that falls behind the hub's buffer is told
//! how many messages it missed. The history behind `/api/history` keeps
//! what the hub published, in memory only.

pub mod history;
pub mod influx;
pub mod jsonl;
pub mod kafka;
pub mod websocket;

pub use history::History;
pub use jsonl::JsonlWriter;
pub use websocket::Hub;
