#!/usr/bin/env bash
# Every test: formatting, lints, the Rust workspace (unit, golden, hostile,
# integration tests against the real host), the dashboard (type-check, lint,
# unit tests, build, end-to-end in headless Chromium). CI runs exactly this.
source "$(dirname "$0")/lib.sh"

ensure_free_space 6 "$(target_dir)"
ensure_libclang
ensure_openssl
ensure_apt chromium chromium victoria-metrics victoria-metrics promtool prometheus socat socat
ensure_wasm_target
export TANSU_BIN
TANSU_BIN=$(ensure_tansu)

log "cargo fmt --check"
cargo fmt --all -- --check

log "building plugins (shipped and test)"
build_plugins_into "$ROOT/plugins" plugins
export RTAP_TEST_PLUGINS
RTAP_TEST_PLUGINS="$(target_dir)/rtap-test-plugins"
rm -rf "$RTAP_TEST_PLUGINS"
build_plugins_into "$RTAP_TEST_PLUGINS" tests/fixture-plugins plugins
build_variants_into "$RTAP_TEST_PLUGINS"
export RTAP_PLUGINS_DIR="$ROOT/plugins"

log "cargo clippy"
cargo clippy --quiet --release --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --release --workspace

log "fuzzing: every target for a bounded time (libFuzzer)"
FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash "$ROOT/scripts/fuzz.sh"

log "deploy assets: Prometheus rules (promtool), compose file, Grafana dashboards"
bash deploy/check.sh

log "dashboard: install, type-check, lint, unit tests, build"
(cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run --silent typecheck && npm run --silent lint && npm test && npm run --silent build)

log "dashboard: end-to-end in headless Chromium against the real host"
cargo build --quiet --release -p rtap-host --bin host
RTAP_HOST_BIN="$(target_dir)/release/host" npm --prefix dashboard run --silent e2e

log "all tests passed"
