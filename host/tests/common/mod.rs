//! Shared helpers of the integration tests, one file per concern:
//!
//! - `host`: the real `host` binary: [`HostCmd`] builds every command line
//!   the tests start it with; running hosts ([`Running`], [`Watched`]).
//! - `plugins`: the real plugin components (built by `scripts/test.sh` into
//!   `$RTAP_TEST_PLUGINS`) and per-test plugins folders.
//! - `events`: simulated events from the real `rtap-gen`.
//! - `http`: plain HTTP/1.1 requests to a running host, free ports.
//! - `broker`: a Kafka-protocol broker (tansu) on loopback; `kafka_hosts`:
//!   hosts on it, each with its own group and topics, and their outputs.
//! - `victoria`: a time-series database (victoria-metrics) on loopback.
//!
//! Every test crate includes all of it (`mod common;`) and uses a part:
//! hence no warnings for what one crate leaves unused.
#![allow(dead_code, unused_imports)]

mod broker;
mod events;
mod host;
mod http;
mod kafka_hosts;
mod plugins;
mod victoria;

pub use broker::*;
pub use events::*;
pub use host::*;
pub use http::*;
pub use kafka_hosts::*;
pub use plugins::*;
pub use victoria::*;

use std::path::Path;

/// The lines of an output file (none if it does not exist).
pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The lines of a JSONL output file, parsed.
pub fn read_json(p: &Path) -> Vec<serde_json::Value> {
    read_lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}

/// A small deterministic generator for drawn test cases (xorshift64*); the
/// seed comes from an environment variable or the clock and is printed, so
/// a failing case can be replayed.
pub struct Rng {
    state: u64,
    /// The seed, for failure messages.
    pub seed: u64,
}

impl Rng {
    /// Kill schedules: the seed from `RTAP_KILL_SEED`.
    pub fn from_env() -> Rng {
        Rng::from_var("RTAP_KILL_SEED")
    }

    /// The seed from the variable `var`, or the clock.
    pub fn from_var(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("drawn with {var}={seed}");
        Rng {
            state: seed | 1,
            seed,
        }
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
