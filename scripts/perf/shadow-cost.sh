#!/usr/bin/env bash
# What shadow versions cost: the same events through stdin, once with every
# shipped plugin alone and once with an identical build of each running as
# its shadow (compared, not emitted), in interleaved pairs: the wall time and
# the host's CPU (user + sys, from /proc) from the first event written to the
# last one processed — start-up and the shadows' compilation excluded — and
# what the shadows reported (every one must report 0 differences).
#
#   scripts/perf/shadow-cost.sh                 # 1 M events, 2 pairs, 2 workers
#   EVENTS=2000000 PAIRS=3 WORKERS=1 scripts/perf/shadow-cost.sh
#
# Needs the release host, rtap-gen and the plugins:
#   scripts/build-plugins.sh && cargo build --release -p rtap-host
source "$(dirname "$0")/../lib.sh"
EVENTS=${EVENTS:-1000000}
RATE=${RATE:-2000} # events per second of event time: 1 M events span 500 s
PAIRS=${PAIRS:-2}
WORKERS=${WORKERS:-2}
PORT=${PORT:-3917}
TOKEN=shadow-cost
bin="$(target_dir)/release"
start_work

events="$work/events.jsonl"
"$bin/rtap-gen" --events "$EVENTS" --seed 11 --rate "$RATE" >"$events" 2>/dev/null
plugins=$(ls "$ROOT/plugins"/*.wasm)
log "$EVENTS events, $(nproc) cores, --workers $WORKERS; plugins: $(echo "$plugins" | wc -l)"

cpu_s() { # PID -> user + sys seconds
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

run() { # shadows|alone -> "wall cpu"
    rm -rf "$work/data" "$work/in"
    mkfifo "$work/in"
    RTAP_ADMIN_TOKEN=$TOKEN "$bin/host" --plugins "$ROOT/plugins" --source file:- --sink jsonl:/dev/null \
        --data-dir "$work/data" --listen "127.0.0.1:$PORT" --no-watch --workers "$WORKERS" \
        <"$work/in" 2>"$work/host.log" &
    local host=$!
    exec 3>"$work/in" # holds the fifo open while the shadows start
    until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.1; done
    if [[ $1 == shadows ]]; then
        for p in $plugins; do
            local name
            name=$(basename "$p" .wasm)
            curl -sf -X PUT -H "Authorization: Bearer $TOKEN" --data-binary "@$p" \
                "http://127.0.0.1:$PORT/api/plugins/$name?mode=shadow" >/dev/null ||
                { log "shadow of $name refused"; exit 1; }
        done
    fi
    local t0 c0 t1 c1
    t0=$(date +%s.%N)
    c0=$(cpu_s "$host")
    cat "$events" >&3 &
    until [[ $(curl -sf "http://127.0.0.1:$PORT/api/pipeline" | jq .events_in) -ge $EVENTS ]]; do sleep 0.05; done
    t1=$(date +%s.%N)
    c1=$(cpu_s "$host")
    if [[ $1 == shadows ]]; then
        # The reports, once every event is in (before the end of input
        # fires the last windows and the host exits).
        for p in $plugins; do
            curl -sf "http://127.0.0.1:$PORT/api/plugins/$(basename "$p" .wasm)/shadow" |
                jq -r '"    \(.plugin): \(.compared) compared, \(.different) different"' >>"$work/reports"
        done
    fi
    exec 3>&-
    wait "$host" || { log "host failed: $(tail -3 "$work/host.log")"; exit 1; }
    echo "$(echo "$t1 - $t0" | bc -l) $(echo "$c1 - $c0" | bc -l)"
}

declare -A wall cpu
for pair in $(seq 1 "$PAIRS"); do
    for mode in alone shadows; do
        : >"$work/reports"
        read -r e c < <(run "$mode")
        printf '  pair %d  %-7s: %6.2f s wall, %6.2f s CPU, %7.0f events/s, %.2f µs CPU/event\n' \
            "$pair" "$mode" "$e" "$c" "$(echo "$EVENTS / $e" | bc -l)" "$(echo "$c * 1000000 / $EVENTS" | bc -l)"
        [[ $mode == shadows ]] && cat "$work/reports"
        wall[$pair,$mode]=$e
        cpu[$pair,$mode]=$c
    done
done
for pair in $(seq 1 "$PAIRS"); do
    printf '  pair %d: with a shadow of every plugin: wall %.2fx, CPU %.2fx\n' "$pair" \
        "$(echo "${wall[$pair,shadows]} / ${wall[$pair,alone]}" | bc -l)" \
        "$(echo "${cpu[$pair,shadows]} / ${cpu[$pair,alone]}" | bc -l)"
done
