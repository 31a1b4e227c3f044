#!/usr/bin/env bash
# rtap against Apache Flink on the same file: the host with its plugins, and
# the seed pipeline's five window metrics as one Flink SQL job
# (bench/flink/windows.py: PyFlink 2.3, local mini-cluster, blackhole sinks),
# both at parallelism 2, in interleaved pairs so drift hits both alike. For
# each run: wall time, CPU (user + sys), events/s; for Flink both the whole
# process (JVM start, planning, job) and the job alone (execute().wait()).
#
#   scripts/perf/flink-vs-rtap.sh                  # 1 M events, 2 pairs
#   EVENTS=200000 PAIRS=3 scripts/perf/flink-vs-rtap.sh
#   FLINK_PY=/opt/flink-venv/bin/python scripts/perf/flink-vs-rtap.sh
#
# PARALLELISM (2): rtap's --workers and Flink's parallelism.
# RTAP_PLUGINS: all (default, every plugin in plugins/, as workers.sh) or
#   five (only page-views, active-users, error-rate, conversion-rate and
#   session-duration, the five metrics the Flink job computes).
# FLINK_SPLIT (1): give Flink the events as PARALLELISM files in a folder.
#   Flink's file source reads one local file as one split, with one reader;
#   rtap reads the file as one partition too, its stage 1 shared by the
#   workers (RTAP_ARGS="--file-split-size 16MiB" splits it). FLINK_SPLIT=0
#   gives Flink the file.
# RTAP_ARGS: more arguments for the host.
#
# Needs the release host, rtap-gen and the plugins
# (scripts/build-plugins.sh && cargo build --release -p rtap-host), Java 17
# and a Python with apache-flink 2.3 (FLINK_PY, default /work/.venv-flink).
source "$(dirname "$0")/../lib.sh"
EVENTS=${EVENTS:-1000000}
PAIRS=${PAIRS:-2}
PARALLELISM=${PARALLELISM:-2}
RTAP_PLUGINS=${RTAP_PLUGINS:-all}
FLINK_SPLIT=${FLINK_SPLIT:-1}
RTAP_ARGS=${RTAP_ARGS:-}
FLINK_PY=${FLINK_PY:-/work/.venv-flink/bin/python}
bin="$(target_dir)/release"
[[ -x "$FLINK_PY" ]] || { echo "no Python at $FLINK_PY (set FLINK_PY to one with apache-flink 2.3)" >&2; exit 1; }
start_work

events="$work/events.jsonl"
"$bin/rtap-gen" --events "$EVENTS" --seed 11 --rate 20000 >"$events" 2>/dev/null

case $RTAP_PLUGINS in
all) plugins="$ROOT/plugins" ;;
five)
    plugins="$work/plugins"
    mkdir -p "$plugins"
    for p in page-views active-users error-rate conversion-rate session-duration; do
        cp "$ROOT/plugins/$p.wasm" "$plugins/"
    done
    ;;
*) echo "RTAP_PLUGINS is all or five, not $RTAP_PLUGINS" >&2; exit 1 ;;
esac

flink_input=$events
if [[ $FLINK_SPLIT == 1 ]]; then
    flink_input="$work/flink-events"
    mkdir -p "$flink_input"
    split -n "l/$PARALLELISM" -d "$events" "$flink_input/part-"
fi
log "$EVENTS events, $(du -m "$events" | cut -f1) MiB, $(nproc) cores, parallelism $PARALLELISM;" \
    "rtap plugins: $(ls "$plugins"/*.wasm | wc -l); Flink input: $(basename "$flink_input")"

# shellcheck disable=SC2086
rtap() { timed_file_run "$plugins" "$events" --workers "$PARALLELISM" $RTAP_ARGS; } # -> "wall user sys"

# -> "wall user sys job_wall job_cpu jvm_cpu". PyFlink's JVM is a child the
# Python process never waits for, so `time` misses its CPU: windows.py
# reports it (jvm_cpu_s), and it is added to the process's. The JVM's
# shutdown, after the Python process ends, is in neither wall nor CPU.
flink() {
    /usr/bin/time -f "%e %U %S" -o "$work/time" \
        "$FLINK_PY" "$ROOT/bench/flink/windows.py" --events "$flink_input" --parallelism "$PARALLELISM" \
        >"$work/flink.out" 2>"$work/flink.log" ||
        { log "Flink failed: $(grep -m3 -E 'Exception|Error' "$work/flink.log" || tail -3 "$work/flink.log")"; exit 1; }
    local line
    line=$(grep '^FLINK-RESULT ' "$work/flink.out") || { log "Flink printed no FLINK-RESULT"; exit 1; }
    local -A r
    for kv in ${line#FLINK-RESULT }; do r[${kv%%=*}]=${kv#*=}; done
    # the JVM shuts down after the Python process: let it go before the next run
    for _ in $(seq 1 300); do [[ -e /proc/${r[jvm_pid]} ]] || break; sleep 0.1; done
    echo "$(cat "$work/time") ${r[wall_s]} ${r[job_cpu_s]} ${r[jvm_cpu_s]}"
}

declare -A wall cpu jwall jcpu
for pair in $(seq 1 "$PAIRS"); do
    read -r e u s < <(rtap)
    c=$(echo "$u + $s" | bc)
    printf '  pair %d  rtap : %7.2f s wall, %7.2f s CPU, %8.0f events/s, %.2f µs CPU/event\n' \
        "$pair" "$e" "$c" "$(echo "$EVENTS / $e" | bc -l)" "$(echo "$c * 1000000 / $EVENTS" | bc -l)"
    wall[$pair,rtap]=$e
    cpu[$pair,rtap]=$c

    read -r e u s je jc jvm < <(flink)
    c=$(echo "$u + $s + $jvm" | bc)
    printf '  pair %d  Flink: %7.2f s wall, %7.2f s CPU, %8.0f events/s, %.2f µs CPU/event (process)\n' \
        "$pair" "$e" "$c" "$(echo "$EVENTS / $e" | bc -l)" "$(echo "$c * 1000000 / $EVENTS" | bc -l)"
    printf '  pair %d  Flink: %7.2f s wall, %7.2f s CPU, %8.0f events/s, %.2f µs CPU/event (job only)\n' \
        "$pair" "$je" "$jc" "$(echo "$EVENTS / $je" | bc -l)" "$(echo "$jc * 1000000 / $EVENTS" | bc -l)"
    wall[$pair,flink]=$e
    cpu[$pair,flink]=$c
    jwall[$pair]=$je
    jcpu[$pair]=$jc
done
for pair in $(seq 1 "$PAIRS"); do
    # events/s of rtap over Flink's is Flink's wall over rtap's
    printf '  pair %d: events/s rtap/Flink %.2fx (process), %.2fx (job only); CPU per event Flink/rtap %.2fx (process), %.2fx (job only)\n' \
        "$pair" \
        "$(echo "${wall[$pair,flink]} / ${wall[$pair,rtap]}" | bc -l)" \
        "$(echo "${jwall[$pair]} / ${wall[$pair,rtap]}" | bc -l)" \
        "$(echo "${cpu[$pair,flink]} / ${cpu[$pair,rtap]}" | bc -l)" \
        "$(echo "${jcpu[$pair]} / ${cpu[$pair,rtap]}" | bc -l)"
done
