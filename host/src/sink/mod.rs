//! Sinks: where outputs go. Each output is serialised to JSON once and the
//! same line goes to every sink.
//!
//! Delivery guarantees: JSONL files are written and flushed after every batch;
//! after a crash, outputs emitted since the last checkpoint are emitted again
//! on restore (at-least-once; metric and alert objects are deterministic, so a
//! consumer can deduplicate by (plugin, name, key, window) or alert `id`). The
//! WebSocket stream is best-effort, at-most-once per connected client: a
//! client that falls behind the hub's buffer is told how many messages it
//! missed.

pub mod influx;
pub mod jsonl;
pub mod kafka;
pub mod websocket;

pub use jsonl::JsonlWriter;
pub use websocket::Hub;
