#!/usr/bin/env bash
# How many records the exchange carries per event: the built-in simulator at
# RATE events/s through every shipped plugin for SECONDS, with --workers 1
# and 2, then the host's own counters from /metrics. Between hosts every
# record for a key group owned elsewhere would cross the exchange topic
# (BENCHMARKS.md, "The exchange topic").
#
#   scripts/perf/exchange-volume.sh
#   RATE=50000 SECONDS_RUN=30 scripts/perf/exchange-volume.sh
#
# Needs the release host and the plugins:
#   scripts/build-plugins.sh && cargo build --release -p rtap-host
source "$(dirname "$0")/../lib.sh"
RATE=${RATE:-100000}
SECONDS_RUN=${SECONDS_RUN:-25}
bin="$(target_dir)/release"
start_work

for w in 1 2; do
    port=$(free_port)
    "$bin/host" --plugins "$ROOT/plugins" --rate "$RATE" --workers "$w" --sink jsonl:/dev/null \
        --data-dir "$work/data-$w" --listen "127.0.0.1:$port" --no-watch >"$work/host-$w.log" 2>&1 &
    pid=$!
    sleep "$SECONDS_RUN"
    metrics=$(curl -s "http://127.0.0.1:$port/metrics") || { tail -5 "$work/host-$w.log"; exit 1; }
    kill -TERM "$pid"
    wait "$pid" || true
    events=$(grep '^rtap_events_in_total' <<<"$metrics" | awk '{s += $2} END {print s}')
    records=$(grep '^rtap_worker_exchange_records_total' <<<"$metrics" | awk '{s += $2} END {print s}')
    printf '  --workers %d: %d events, %d exchange records, %.2f records per event\n' \
        "$w" "$events" "$records" "$(echo "$records / $events" | bc -l)"
done
