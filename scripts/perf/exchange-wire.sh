#!/usr/bin/env bash
# The exchange's records encoded as for another host (--exchange wire)
# against the in-memory exchange, same file, same --workers, every shipped
# plugin, interleaved pairs so drift hits both alike: wall time, CPU (user +
# sys) per event, and the encoded bytes and records per event (the host's
# "exchange on the wire" log line). What the encoding costs each event that
# crosses hosts, before any broker.
#
#   scripts/perf/exchange-wire.sh               # 1 M events, 3 pairs, 2 workers
#   EVENTS=2000000 PAIRS=5 WORKERS=1 scripts/perf/exchange-wire.sh
#
# Needs the release host, rtap-gen and the plugins:
#   scripts/build-plugins.sh && cargo build --release -p rtap-host
source "$(dirname "$0")/../lib.sh"
EVENTS=${EVENTS:-1000000}
PAIRS=${PAIRS:-3}
WORKERS=${WORKERS:-2}
bin="$(target_dir)/release"
start_work

events="$work/events.jsonl"
"$bin/rtap-gen" --events "$EVENTS" --seed 11 --rate 20000 >"$events" 2>/dev/null
log "$EVENTS events, $(du -m "$events" | cut -f1) MiB, $(nproc) cores, --workers $WORKERS; plugins: $(ls "$ROOT/plugins"/*.wasm | wc -l)"

run() { timed_file_run "$ROOT/plugins" "$events" --workers "$WORKERS" --exchange "$1" --log-format json; } # -> "wall user sys"

declare -A wall cpu
for pair in $(seq 1 "$PAIRS"); do
    for mode in memory wire; do
        read -r e u s < <(run "$mode")
        c=$(echo "$u + $s" | bc)
        extra=""
        if [ "$mode" = wire ]; then
            line=$(grep 'exchange on the wire' "$work/host.log" | tail -1)
            records=$(sed -n 's/.*"records":\([0-9]*\).*/\1/p' <<<"$line")
            bytes=$(sed -n 's/.*"bytes":\([0-9]*\).*/\1/p' <<<"$line")
            extra=$(printf ', %.2f records and %.0f bytes per event (%.0f B per record)' \
                "$(echo "$records / $EVENTS" | bc -l)" "$(echo "$bytes / $EVENTS" | bc -l)" \
                "$(echo "$bytes / $records" | bc -l)")
        fi
        printf '  pair %d  %-6s: %6.2f s wall, %6.2f s CPU, %7.0f events/s, %.2f µs CPU/event%s\n' \
            "$pair" "$mode" "$e" "$c" "$(echo "$EVENTS / $e" | bc -l)" "$(echo "$c * 1000000 / $EVENTS" | bc -l)" "$extra"
        wall[$pair,$mode]=$e
        cpu[$pair,$mode]=$c
    done
done
for pair in $(seq 1 "$PAIRS"); do
    printf '  pair %d: wire/memory wall %.3f, CPU per event %+.2f µs (%+.1f %%)\n' "$pair" \
        "$(echo "${wall[$pair,wire]} / ${wall[$pair,memory]}" | bc -l)" \
        "$(echo "(${cpu[$pair,wire]} - ${cpu[$pair,memory]}) * 1000000 / $EVENTS" | bc -l)" \
        "$(echo "(${cpu[$pair,wire]} / ${cpu[$pair,memory]} - 1) * 100" | bc -l)"
done
