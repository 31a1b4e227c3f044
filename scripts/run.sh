#!/usr/bin/env bash
# Build everything and run the main job: the built-in simulator, local state
# under ./data, the dashboard on http://localhost:3000. Extra arguments go to
# the host (e.g. --rate 5000).
source "$(dirname "$0")/lib.sh"
ensure_libclang
ensure_openssl
build_plugins_into "$ROOT/plugins" plugins
if [[ ! -f dashboard/dist/index.html || -n "$(find dashboard/src -newer dashboard/dist/index.html 2>/dev/null | head -1)" ]]; then
    log "building the dashboard"
    # Build logs go to stderr: stdout is the host's JSONL output.
    (cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build) >&2
fi
log "building the host"
cargo build --quiet --release -p rtap-host --bin host
exec "$(target_dir)/release/host" --plugins ./plugins "$@"
