#!/usr/bin/env bash
# --workers 1 against --workers N on the same file, every shipped plugin,
# interleaved pairs so drift hits both alike: wall time, CPU (user + sys) per
# event, and the processing's events/s. HOST_ARGS go to both runs, so both
# read the same partitions: the file is one partition unless HOST_ARGS split it.
#
#   scripts/perf/workers.sh                    # 1 M events, 3 pairs, 1 vs 2 workers
#   HOST_ARGS="--file-split-size 16MiB" scripts/perf/workers.sh   # 13 partitions
#   EVENTS=2000000 PAIRS=5 WORKERS=4 scripts/perf/workers.sh
#
# Needs the release host, rtap-gen and the plugins:
#   scripts/build-plugins.sh && cargo build --release -p rtap-host
source "$(dirname "$0")/../lib.sh"
EVENTS=${EVENTS:-1000000}
PAIRS=${PAIRS:-3}
WORKERS=${WORKERS:-2}
HOST_ARGS=${HOST_ARGS:-}
bin="$(target_dir)/release"
start_work

events="$work/events.jsonl"
"$bin/rtap-gen" --events "$EVENTS" --seed 11 --rate 20000 >"$events" 2>/dev/null
log "$EVENTS events, $(du -m "$events" | cut -f1) MiB, $(nproc) cores; plugins: $(ls "$ROOT/plugins"/*.wasm | wc -l)"

# shellcheck disable=SC2086
run() { timed_file_run "$ROOT/plugins" "$events" --workers "$1" $HOST_ARGS; } # -> "wall user sys"

declare -A wall cpu
for pair in $(seq 1 "$PAIRS"); do
    for w in 1 "$WORKERS"; do
        read -r e u s < <(run "$w")
        c=$(echo "$u + $s" | bc)
        printf '  pair %d  --workers %d: %6.2f s wall, %6.2f s CPU, %7.0f events/s, %.2f µs CPU/event\n' \
            "$pair" "$w" "$e" "$c" "$(echo "$EVENTS / $e" | bc -l)" "$(echo "$c * 1000000 / $EVENTS" | bc -l)"
        wall[$pair,$w]=$e
        cpu[$pair,$w]=$c
    done
done
for pair in $(seq 1 "$PAIRS"); do
    printf '  pair %d: speedup %.2fx, CPU per event %+.1f %%\n' "$pair" \
        "$(echo "${wall[$pair,1]} / ${wall[$pair,$WORKERS]}" | bc -l)" \
        "$(echo "(${cpu[$pair,$WORKERS]} / ${cpu[$pair,1]} - 1) * 100" | bc -l)"
done
