//! Shared helpers of the integration tests: the real `host` binary, the real
//! plugin components (built by `scripts/test.sh` into `$RTAP_TEST_PLUGINS`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn host_bin() -> &'static str {
    env!("CARGO_BIN_EXE_host")
}

pub fn gen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rtap-gen")
}

/// The folder with every built plugin (shipped and test ones).
pub fn test_plugins() -> PathBuf {
    let dir = std::env::var_os("RTAP_TEST_PLUGINS").map(PathBuf::from).unwrap_or_else(|| {
        panic!("RTAP_TEST_PLUGINS is not set: run `scripts/test.sh`, or `scripts/build-plugins.sh --tests` and export the folder it prints")
    });
    assert!(
        dir.join("page-views.wasm").is_file(),
        "{} holds no built plugins",
        dir.display()
    );
    dir
}

/// A plugins folder with just these plugins.
pub fn plugins_dir(names: &[&str]) -> tempfile::TempDir {
    let src = test_plugins();
    let dir = tempfile::tempdir().expect("tempdir");
    for n in names {
        std::fs::copy(
            src.join(format!("{n}.wasm")),
            dir.path().join(format!("{n}.wasm")),
        )
        .unwrap_or_else(|e| panic!("copy plugin {n}: {e}"));
    }
    dir
}

pub const SHIPPED: [&str; 11] = [
    "page-views",
    "active-users",
    "conversion-rate",
    "session-duration",
    "latency-percentiles",
    "error-rate",
    "high-latency",
    "error-rate-spike",
    "low-throughput",
    "cart-abandonment",
    "bot-burst",
];

/// Run the host on a file to the end; panics with its stderr if it fails.
pub fn run_file(plugins: &Path, input: &Path, data: &Path, extra: &[&str]) -> Output {
    let out = Command::new(host_bin())
        .arg("--plugins")
        .arg(plugins)
        .arg(format!("--source=file:{}", input.display()))
        .arg(format!("--sink=jsonl:{}", data.join("out.jsonl").display()))
        .arg("--no-server")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .output()
        .expect("run host");
    assert!(
        out.status.success(),
        "host failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

pub fn read_json(p: &Path) -> Vec<serde_json::Value> {
    read_lines(p)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect()
}
