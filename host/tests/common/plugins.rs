//! The real plugin components: shipped (`plugins/`) and fixtures
//! (`tests/fixture-plugins/`), built by `scripts/test.sh` into
//! `$RTAP_TEST_PLUGINS`.

use std::path::PathBuf;

/// The folder with every built plugin (shipped and fixtures).
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
