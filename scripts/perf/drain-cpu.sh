#!/usr/bin/env bash
# The host's CPU per thread for draining a fixed backlog: N events preloaded
# into one tansu, then each given host binary reads all of them (each with a
# consumer group of its own, one after the other). Fixed work, so two
# binaries compare without the generator's and the probe's noise. With
# N >= 6 000 000 the drain reaches the output phase (sessions closing); the
# rate per 5 s shows it.
#
#   scripts/perf/drain-cpu.sh 2000000 /tmp/host-old /tmp/host-new /tmp/host-old /tmp/host-new
#
# Needs what scripts/performance-test.sh installs and builds (tansu, the
# probe's Python packages, rtap-gen and the plugins).
source "$(dirname "$0")/../lib.sh"
N=${1:?usage: $0 EVENTS HOST_BIN...}
shift
(($#)) || { echo "usage: $0 EVENTS HOST_BIN..." >&2; exit 2; }
py=$PERF_PY
bin="$(target_dir)/release"
start_work

kport=$(free_port)
start_tansu "$kport" "$work/tansu.log"
pids+=("$TANSU_PID")
PYTHONPATH="$py" python3 - "127.0.0.1:$kport" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in a.create_topics([NewTopic("website-analytics-events", 12, 1)]).values():
    f.result()
PY
log "preloading $N events"
"$bin/rtap-gen" --kafka-brokers "127.0.0.1:$kport" --rate 100000 --unpaced --events "$N" --seed 5 \
    --kafka-option linger.ms=200 --kafka-option batch.size=1000000 >/dev/null 2>&1
tick=$(getconf CLK_TCK)
i=0
for host in "$@"; do
    i=$((i + 1))
    hport=$(free_port)
    "$host" --plugins "$ROOT/plugins" --kafka-brokers "127.0.0.1:$kport" --kafka-group "drain-$i" --no-watch \
        --listen "127.0.0.1:$hport" --sink jsonl:/dev/null --data-dir "$work/data-$i" 2>"$work/host-$i.log" &
    hp=$!
    pids+=("$hp")
    start=$(date +%s.%N)
    # Events read per 5 s: the rate falls once sessions close (from 60 s of
    # event time, the 6 000 000th event at the simulator's 100 000/s).
    rates=() last_n=0 last_t=$SECONDS
    while :; do
        n=$(curl -s "http://127.0.0.1:$hport/api/pipeline" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_in"])' 2>/dev/null || echo 0)
        ((n >= N)) && break
        kill -0 "$hp" 2>/dev/null || { cat "$work/host-$i.log" >&2; exit 1; }
        if ((SECONDS - last_t >= 5)); then
            rates+=("$(((n - last_n) / (SECONDS - last_t)))")
            last_n=$n last_t=$SECONDS
        fi
        sleep 0.2
    done
    took=$(echo "$(date +%s.%N) - $start" | bc)
    # Events behind the watermark (dropped by the windows, written to the
    # late-event file) and dead letters: a drain must have none of either.
    curl -s "http://127.0.0.1:$hport/api/pipeline" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("  late events", s["late_events"], "dead letters", s["dead_lettered"])'
    # CPU seconds per thread (digits in thread names folded to #), >= 0.3 s.
    thread_cpu "$hp" | awk -v host="$host" -v took="$took" -v tick="$tick" '
        { n = $1; $1 = ""; cpu[substr($0, 2)] += n }
        END {
            printf "%s: %s events in %.1f s (start-up included);", host, "'"$N"'", took
            for (k in cpu) if (cpu[k] / tick >= 0.3) printf " %s %.2f s", k, cpu[k] / tick
            print ""
        }'
    echo "  events/s per 5 s: ${rates[*]}"
    kill "$hp"
    wait "$hp" 2>/dev/null || true
done
