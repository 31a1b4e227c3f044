//! # rtap-sdk: write rtap plugins in a few lines of Rust
//!
//! An rtap plugin is a WebAssembly component that the rtap host runs in a
//! sandbox. It is either an [`Aggregator`] (fold the events of one key and one
//! event-time window into a state, emit metrics when the window fires) or a
//! [`Detector`] (a keyed state machine over events or metrics that raises
//! alerts). The host owns every state: the SDK decodes it before each call and
//! encodes it after (with `postcard`), so your code only sees typed values.
//!
//! ```no_run
//! use rtap_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct PageViews;
//!
//! impl Aggregator for PageViews {
//!     type State = u64;
//!     fn describe() -> Description {
//!         Description::aggregator("page-views", "1.1.0").key_by("page").tumbling(5_000).fields(&["event_type"])
//!     }
//!     fn add(&self, count: &mut u64, events: &Events) { *count += events.text("event_type").count("page_view") as u64 }
//!     fn merge(&self, count: &mut u64, other: u64) { *count += other }
//!     fn finish(&self, count: u64, _w: Window, out: &mut Metrics) { out.single("page_views", count as f64) }
//! }
//! rtap_sdk::export_aggregator!(PageViews);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; test the logic
//! natively with plain `cargo test` and the helpers in [`testing`]: the Wasm
//! glue is only compiled for `wasm32`.

mod batch;
pub mod check;
mod config;
mod describe;
pub mod layout;
pub mod log;
mod output;
pub mod pattern;
pub mod settings;
pub mod sketch;
mod state;
pub mod testing;
pub mod time;

#[doc(hidden)]
pub mod glue;
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod wit;

pub use batch::{Batch, ColumnData, Events, TextColumn};
pub use config::Config;
pub use describe::{Description, InputKind, Kind, WindowSpec};
pub use output::{Alert, Ctx, MetricIn, MetricValue, Metrics, Severity, Window};
pub use settings::Settings;
pub use state::{Packed, decode_state, encode_state};

// `#[derive(Settings)]` names this crate `::rtap_sdk`, here too.
extern crate self as rtap_sdk;

/// The crates a plugin uses through the SDK, so that its `Cargo.toml` needs
/// `rtap-sdk` alone: `rtap_sdk::serde`, `rtap_sdk::serde_json` (the prelude's
/// `Serialize` and `Deserialize` derives go through this `serde`).
pub use serde;
pub use serde_json;

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::pattern::{CountWithin, Sequence, Sustained};
    pub use crate::sketch::{DdSketch, HyperLogLog};
    pub use crate::{
        Aggregator, Alert, Config, Ctx, Description, Detector, Events, MetricIn, MetricValue,
        Metrics, Settings, Severity, Window, check,
    };
    pub use crate::{debug, error, info, trace, warn};
    /// serde's traits, and derives of the SDK's own that implement them
    /// through `rtap_sdk::serde`: a plugin needs no `serde` dependency.
    pub use rtap_sdk_derive::{Deserialize, Serialize};
    pub use serde::de::Deserialize;
    pub use serde::ser::Serialize;
}

use serde::{Serialize, de::DeserializeOwned};

/// An aggregation over event-time windows (Flink's `AggregateFunction`).
///
/// For every key and window the host keeps one `State`; [`Aggregator::add`]
/// folds a slice of events into it, [`Aggregator::merge`] combines two states
/// (session windows that touch), and [`Aggregator::finish`] turns the state of
/// a fired window into metrics.
pub trait Aggregator: Default + 'static {
    /// The accumulator. Encoded with `postcard` between calls.
    type State: Default + Serialize + DeserializeOwned;

    /// What the plugin is: name, window, key, fields read, config schema.
    fn describe() -> Description;

    /// Apply the operator's config (a JSON object). Called once per instance.
    /// The default accepts only `{}` (see [`Config::ensure_empty`]).
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.ensure_empty()
    }

    /// Fold events of one key and one window into the state.
    fn add(&self, state: &mut Self::State, events: &Events<'_>);

    /// Merge `other` into `state`: the result must be what adding
    /// `state`'s events, then `other`'s, to one state would give. The host
    /// merges session windows that touch, and fires sliding windows from
    /// their merged slide-sized panes (`run_aggregator` checks those).
    fn merge(&self, state: &mut Self::State, other: Self::State);

    /// The window fired: emit its metrics.
    fn finish(&self, state: Self::State, window: Window, out: &mut Metrics);

    /// Convert a state written under an older `state_schema` (listed in
    /// [`Description::migrates_from`]).
    fn migrate(from: u32, state: &[u8]) -> Result<Self::State, String> {
        let _ = state;
        Err(format!("no migration from state schema {from}"))
    }
}

/// A keyed state machine over events or metrics (complex-event processing).
///
/// A state equal to `State::default()` after a call is deleted by the host, so
/// idle keys cost nothing.
pub trait Detector: Default + 'static {
    /// Per-key state. Encoded with `postcard` between calls.
    type State: Default + Serialize + DeserializeOwned;

    /// What the plugin is: name, input, key, fields read, config schema.
    fn describe() -> Description;

    /// Apply the operator's config (a JSON object). Called once per instance.
    /// The default accepts only `{}` (see [`Config::ensure_empty`]).
    fn configure(&mut self, config: &Config) -> Result<(), String> {
        config.ensure_empty()
    }

    /// Events of one key, in arrival order (event-input detectors).
    fn on_events(&self, ctx: &mut Ctx<'_>, state: &mut Self::State, events: &Events<'_>) {
        let _ = (ctx, state, events);
    }

    /// Metrics of one key (metric-input detectors).
    fn on_metrics(&self, ctx: &mut Ctx<'_>, state: &mut Self::State, metrics: &[MetricIn]) {
        let _ = (ctx, state, metrics);
    }

    /// A timer set with [`Ctx::set_timer`] fired: the watermark passed `time`.
    fn on_timer(&self, ctx: &mut Ctx<'_>, state: &mut Self::State, time: i64) {
        let _ = (ctx, state, time);
    }

    /// Convert a state written under an older `state_schema`.
    fn migrate(from: u32, state: &[u8]) -> Result<Self::State, String> {
        let _ = state;
        Err(format!("no migration from state schema {from}"))
    }
}

/// Export an [`Aggregator`] as the plugin of this crate (one per crate).
#[macro_export]
macro_rules! export_aggregator {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RtapExport;
            impl $crate::wit::exports::rtap::plugin::meta::Guest for __RtapExport {
                fn describe() -> $crate::wit::exports::rtap::plugin::meta::Description {
                    $crate::wit::convert::description(
                        <$ty as $crate::Aggregator>::describe(),
                        $crate::layout::fingerprint::<<$ty as $crate::Aggregator>::State>(),
                    )
                }
                fn init(config: String) -> Result<(), String> {
                    $crate::glue::aggregator_init::<$ty>(&config)
                }
                fn migrate(from: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
                    $crate::glue::aggregator_migrate::<$ty>(from, &state)
                }
            }
            impl $crate::wit::exports::rtap::plugin::aggregator::Guest for __RtapExport {
                fn add(
                    group_lens: Vec<u32>,
                    states: $crate::wit::Packed,
                    batch: $crate::wit::EventBatch,
                ) -> Result<$crate::wit::Packed, String> {
                    $crate::wit::convert::add::<$ty>(group_lens, states, batch)
                }
                fn merge(a: Vec<u8>, b: Vec<u8>) -> Result<Vec<u8>, String> {
                    $crate::glue::aggregator_merge::<$ty>(&a, &b)
                }
                fn finish(
                    windows: Vec<$crate::wit::WitWindow>,
                    states: $crate::wit::Packed,
                ) -> Result<Vec<$crate::wit::WitMetric>, String> {
                    $crate::wit::convert::finish::<$ty>(windows, states)
                }
            }
            $crate::__rtap_unsupported_detector!(__RtapExport);
    $crate::wit::export!(__RtapExport with_types_in $crate::wit);
        };
    };
}

/// Export a [`Detector`] as the plugin of this crate (one per crate).
#[macro_export]
macro_rules! export_detector {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __RtapExport;
            impl $crate::wit::exports::rtap::plugin::meta::Guest for __RtapExport {
                fn describe() -> $crate::wit::exports::rtap::plugin::meta::Description {
                    $crate::wit::convert::description(
                        <$ty as $crate::Detector>::describe(),
                        $crate::layout::fingerprint::<<$ty as $crate::Detector>::State>(),
                    )
                }
                fn init(config: String) -> Result<(), String> {
                    $crate::glue::detector_init::<$ty>(&config)
                }
                fn migrate(from: u32, state: Vec<u8>) -> Result<Vec<u8>, String> {
                    $crate::glue::detector_migrate::<$ty>(from, &state)
                }
            }
            impl $crate::wit::exports::rtap::plugin::detector::Guest for __RtapExport {
                fn on_events(
                    keys: Vec<String>,
                    group_lens: Vec<u32>,
                    states: $crate::wit::Packed,
                    batch: $crate::wit::EventBatch,
                    watermark: i64,
                ) -> Result<$crate::wit::Step, String> {
                    $crate::wit::convert::on_events::<$ty>(
                        keys, group_lens, states, batch, watermark,
                    )
                }
                fn on_metrics(
                    keys: Vec<String>,
                    group_lens: Vec<u32>,
                    states: $crate::wit::Packed,
                    metrics: Vec<$crate::wit::WitMetricIn>,
                ) -> Result<$crate::wit::Step, String> {
                    $crate::wit::convert::on_metrics::<$ty>(keys, group_lens, states, metrics)
                }
                fn on_timers(
                    keys: Vec<String>,
                    group_lens: Vec<u32>,
                    states: $crate::wit::Packed,
                    times: Vec<i64>,
                ) -> Result<$crate::wit::Step, String> {
                    $crate::wit::convert::on_timers::<$ty>(keys, group_lens, states, times)
                }
            }
            $crate::__rtap_unsupported_aggregator!(__RtapExport);
    $crate::wit::export!(__RtapExport with_types_in $crate::wit);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rtap_unsupported_detector {
    ($t:ident) => {
        impl $crate::wit::exports::rtap::plugin::detector::Guest for $t {
            fn on_events(
                _: Vec<String>,
                _: Vec<u32>,
                _: $crate::wit::Packed,
                _: $crate::wit::EventBatch,
                _: i64,
            ) -> Result<$crate::wit::Step, String> {
                Err("this plugin is an aggregator".into())
            }
            fn on_metrics(
                _: Vec<String>,
                _: Vec<u32>,
                _: $crate::wit::Packed,
                _: Vec<$crate::wit::WitMetricIn>,
            ) -> Result<$crate::wit::Step, String> {
                Err("this plugin is an aggregator".into())
            }
            fn on_timers(
                _: Vec<String>,
                _: Vec<u32>,
                _: $crate::wit::Packed,
                _: Vec<i64>,
            ) -> Result<$crate::wit::Step, String> {
                Err("this plugin is an aggregator".into())
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rtap_unsupported_aggregator {
    ($t:ident) => {
        impl $crate::wit::exports::rtap::plugin::aggregator::Guest for $t {
            fn add(
                _: Vec<u32>,
                _: $crate::wit::Packed,
                _: $crate::wit::EventBatch,
            ) -> Result<$crate::wit::Packed, String> {
                Err("this plugin is a detector".into())
            }
            fn merge(_: Vec<u8>, _: Vec<u8>) -> Result<Vec<u8>, String> {
                Err("this plugin is a detector".into())
            }
            fn finish(
                _: Vec<$crate::wit::WitWindow>,
                _: $crate::wit::Packed,
            ) -> Result<Vec<$crate::wit::WitMetric>, String> {
                Err("this plugin is a detector".into())
            }
        }
    };
}
