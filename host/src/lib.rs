//! The rtap host: ingest, event-time windows, state, checkpoints and sinks,
//! around sandboxed WebAssembly plugins that do every aggregation and every
//! alert rule.
//!
//! ```text
//! source (simulator | file) ─► decode ─► pipeline: watermark, windows ─► aggregator plugins ─► metrics
//!                                           │                                  │
//!                                           └─► event detector plugins         └─► metric detector plugins
//!                                                        │                                  │
//!                                                        └──────────► alerts ◄──────────────┘
//! outputs ─► JSONL sinks, WebSocket hub (/ws); side outputs: dead letters, late events
//! runner: checkpoints (source position + watermark + plugin states + code hashes)
//! ```

pub mod alloc;
pub mod api;
pub mod app;
pub mod config;
pub mod control;
pub mod event;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod runner;
pub mod sink;
pub mod source;
pub mod state;
pub mod window;
