//! The rtap host: ingest, event-time windows, state, checkpoints and sinks,
//! around sandboxed WebAssembly plugins that do every aggregation and every
//! alert rule.
//!
//! ```text
//! source (simulator | file | Kafka) ─► decode ─► pipeline: watermark, windows ─► aggregator plugins ─► metrics
//!                                                  │                                   │
//!                                                  └─► event detector plugins          └─► metric detector plugins
//!                                                               │                                   │
//!                                                               └───────────► alerts ◄──────────────┘
//! runner ─► outputs ─► JSONL files, WebSocket hub (/ws), InfluxDB, Kafka topics (in the transaction)
//!                      side outputs: dead letters, late events
//! checkpoint: commits (source positions + watermark + plugin states + code hashes),
//!             through a Kafka transaction when the Kafka sink is on; restore at start
//! ```
//!
//! The modules from the bottom layer up: each may import only the ones
//! listed before it (the order of the `mod` lines below is the same):
//!
//! | module       | what it holds                                                        |
//! |--------------|----------------------------------------------------------------------|
//! | `alloc`      | the allocator's tuning                                               |
//! | `clock`      | wall-clock ms                                                        |
//! | `config`     | the command line, typed                                              |
//! | `datadir`    | the data directory: the writability check, full-disk advice          |
//! | `metrics`    | the Prometheus metrics, named once                                   |
//! | `event`      | events and batches as the host holds them                            |
//! | `plugin`     | the Wasm runtime: loading, instances, limits; the one `bindgen!`     |
//! | `output`     | what the pipeline emits: metrics, alerts, lifecycle, dead letters    |
//! | `status`     | counters and states the API reads                                    |
//! | `window`     | window and watermark arithmetic                                      |
//! | `state`      | keyed state, its encoding, the RocksDB store                         |
//! | `operator`   | the window and detector operators that call plugins                  |
//! | `pipeline`   | the DAG of plugins: one batch at a time, in event-time order; swaps  |
//! | `kafka`      | the Kafka settings and producer helpers shared by every Kafka client |
//! | `exchange`   | the exchange topic between hosts: task producers, the receiver's gate|
//! | `source`     | simulator, file, Kafka; decoding                                     |
//! | `sink`       | JSONL, WebSocket hub, InfluxDB, the transactional Kafka producer     |
//! | `checkpoint` | the commit protocol: commits, the Kafka committer, folds, restore    |
//! | `control`    | the plugin lifecycle: upload, config, rollback, removal, folder watch|
//! | `cluster`    | the group's hosts: each one's record on `<group>-cluster`            |
//! | `api`        | the HTTP server: dashboard, `/ws`, `/api`, `/health`, `/metrics`     |
//! | `runner`     | the processing thread and the fan-out to every sink                  |
//! | `app`        | start-up: every component built from the config, then the runner    |
//! | `fuzz`       | the fuzz harnesses: what the host reads from outside, with oracles   |
//!
//! `tests/layers.rs` checks it: no module imports one listed after it, so
//! the modules' imports have no cycle.

pub mod alloc;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod metrics;

pub mod event;
pub mod plugin;

pub mod output;
pub mod status;

pub mod window;

pub mod state;

pub mod operator;
pub mod pipeline;

// Its own group: rustfmt sorts the modules of a group by name, and
// `exchange` uses `kafka`'s report helpers.
pub mod kafka;

pub mod exchange;
pub mod sink;
pub mod source;

pub mod checkpoint;
pub mod control;

pub mod cluster;

pub mod api;
pub mod runner;

pub mod app;

pub mod fuzz;
