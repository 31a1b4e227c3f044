#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer on stable rustc: builds the targets
# of fuzz/ (instrumented by scripts/fuzz-rustc.sh) and runs each for
# FUZZ_SECONDS (default 30). Usage: scripts/fuzz.sh [TARGET…] (default: all).
# Inputs libFuzzer finds go to $(target_dir)/fuzz/corpus/TARGET (the
# repository's fuzz/corpus/TARGET is read, never written); a crash stops the
# script with its input in $(target_dir)/fuzz/artifacts/: fix it, then add
# the input to fuzz/regressions/TARGET/ (tests/fuzz_corpus.rs replays it).
source "$(dirname "$0")/lib.sh"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode state_codec plugin_returns api exchange_wire)

log "fuzz: building the targets (libFuzzer, sanitizer coverage on rtap-host)"
RUSTC_WRAPPER="$ROOT/scripts/fuzz-rustc.sh" cargo build --quiet --release \
  --manifest-path "$ROOT/fuzz/Cargo.toml" --bins

out="$(target_dir)/fuzz"
mkdir -p "$out/artifacts"
# state_codec's RocksDB store goes under the temporary directory: ours.
export TMPDIR="$out/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t"
  log "fuzz: $t for ${FUZZ_SECONDS}s"
  # -timeout: one input taking longer is a hang; -rss_limit_mb: a leak.
  if ! "$(target_dir)/release/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t-" \
    "$out/corpus/$t" "$ROOT/fuzz/corpus/$t" "$ROOT/fuzz/regressions/$t" \
    >"$out/$t.log" 2>&1; then
    tail -n 40 "$out/$t.log" >&2
    echo "fuzz target $t failed: the input is in $out/artifacts/ (log: $out/$t.log)" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done ' "$out/$t.log" | sed "s/^/  $t: /" >&2
done
