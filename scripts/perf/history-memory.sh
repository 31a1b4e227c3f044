#!/usr/bin/env bash
# Memory of the /api/history buffer (BENCHMARKS.md, "History").
#
#   scripts/perf/history-memory.sh RATE EVENTS [FROM_MIN TO_MIN]
#
# Feeds EVENTS simulated events (rtap-gen --rate RATE, seed 42: event time
# advances by 1/RATE per event, the simulator's incident cycle included)
# through a FIFO into the host with the 11 shipped plugins, twice, side by
# side: with the default history (30m, 256MiB) and with --history 0s. The
# FIFO stays open once the events are written, so the host keeps its state
# and its history; when it has taken every event, the script reads
# /metrics (rtap_history_outputs, rtap_history_bytes,
# process_resident_memory_bytes) and stops it. From the JSONL output it
# prints the metrics and alerts per minute of event time (minutes FROM_MIN
# to TO_MIN of the run, default all whole minutes but the first) and their
# mean JSON length. Build first: cargo build --release -p rtap-host and
# scripts/build-plugins.sh.
source "$(dirname "$0")/../lib.sh"

rate=${1:?RATE}
events=${2:?EVENTS}
from_min=${3:-1}
to_min=${4:-}
td=$(target_dir)
host="$td/release/host"
gen="$td/release/rtap-gen"
start_work

run() { # LABEL HISTORY-ARGS...
    local label=$1
    shift
    local port fifo out
    port=$(free_port)
    fifo="$work/in-$label"
    out="$work/out-$label.jsonl"
    mkfifo "$fifo"
    { "$gen" --events "$events" --rate "$rate" --seed 42; exec sleep 3600; } >"$fifo" &
    pids+=($!)
    "$host" --plugins "$ROOT/plugins" --source "file:$fifo" --sink "jsonl:$out" --no-watch \
        --listen "127.0.0.1:$port" --data-dir "$work/data-$label" "$@" 2>"$work/host-$label.log" &
    local hpid=$!
    pids+=("$hpid")
    local started=$SECONDS
    until curl -sf "localhost:$port/api/pipeline" 2>/dev/null |
        python3 -c "import json,sys; sys.exit(json.load(sys.stdin)['events_in'] < $events)" 2>/dev/null; do
        sleep 1
        kill -0 "$hpid" 2>/dev/null || { tail "$work/host-$label.log"; exit 1; }
    done
    local took=$((SECONDS - started))
    sleep 3
    local metrics
    metrics=$(curl -sf "localhost:$port/metrics")
    kill "$hpid"
    wait "$hpid" 2>/dev/null || true
    printf '%s: %d events in %d s; ' "$label" "$events" "$took"
    awk '/^rtap_history_outputs /{o=$2} /^rtap_history_bytes /{b=$2} /^process_resident_memory_bytes /{r=$2}
         END {printf "history %d outputs, %.1f MiB estimated; RSS %.1f MiB\n", o, b/1048576, r/1048576}' <<<"$metrics"
}

run history-30m
run history-off --history 0s

python3 - "$work/out-history-30m.jsonl" "$from_min" "$to_min" <<'EOF'
import json, sys, statistics
path, lo, hi = sys.argv[1], int(sys.argv[2]), sys.argv[3]
per_min, sizes, by_plugin = {}, {"metric": [], "alert": []}, {}
for line in open(path):
    v = json.loads(line)
    t = v["window_end"] if v["type"] == "metric" else v["time"]
    per_min.setdefault(t // 60000, {"metric": 0, "alert": 0})[v["type"]] += 1
    p = by_plugin.setdefault(v["plugin"], {})
    p[t // 60000] = p.get(t // 60000, 0) + 1
    sizes[v["type"]].append(len(line.rstrip("\n").encode()))
first = min(per_min)
last = max(per_min) - 1  # the last minute is cut short
mins = [m for m in range(first + lo, (first + int(hi) if hi else last) + 1) if m in per_min]
counts = [per_min[m]["metric"] + per_min[m]["alert"] for m in mins]
print(f"minutes {lo}..{mins[-1] - first} of event time: outputs per minute min {min(counts)}, "
      f"median {statistics.median(counts):.0f}, max {max(counts)}, sum {sum(counts)}")
for name, p in sorted(by_plugin.items()):
    print(f"  {name}: median {statistics.median(p.get(m, 0) for m in mins):.0f} per minute")
for k, s in sizes.items():
    if s:
        print(f"{k}: {len(s)} outputs, mean {statistics.mean(s):.0f} bytes of JSON")
EOF
