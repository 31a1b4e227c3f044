#!/usr/bin/env bash
# The seed's ./scripts/performance-test.sh for rtap: a real Kafka-protocol
# broker (tansu, on loopback), the host reading it with every shipped plugin
# and the transactional Kafka sink, `rtap-gen` producing at RATE events/s, and
# scripts/perf/probe.py measuring event→alert latency (WebSocket and
# read_committed cep-alerts), throughput, consumer lag and the error rate.
#
#   scripts/performance-test.sh                  # 100 000 ev/s for 60 s
#   RATE=50000 DURATION=120 scripts/performance-test.sh
#   PLUGINS="page-views bot-burst" scripts/performance-test.sh
#   PROBES_PER_SEC=5 scripts/performance-test.sh   # fewer probes (the default before 5325c9f)
#   HOST_ARGS="--commit-interval 50ms" scripts/performance-test.sh
#   HOST_ARGS="--kafka-producer-option linger.ms=25 --kafka-producer-option batch.size=262144" \
#       scripts/performance-test.sh   # larger output batches, fewer produce requests
#       once sessions close (BENCHMARKS.md, "Output batching")
#   HOST_LOG=info,rtap_host::sink::kafka=debug scripts/performance-test.sh
#   KEEP_LOG=/tmp/host.log scripts/performance-test.sh   # keep the host's log
#   KEEP_SUMMARY=/tmp/s.json scripts/performance-test.sh # keep the probe's summary
#       (with the 500 ms backlog series)
#   HOST_BIN=/tmp/host-old scripts/performance-test.sh   # another host binary (A/B runs)
#   GEN_BIN=/tmp/rtap-gen-old scripts/performance-test.sh # another load generator
#   PLUGIN_DIR=/tmp/plugins-old scripts/performance-test.sh # other plugin builds (A/B of the SDK)
#   BROKER_CPUS=1 scripts/performance-test.sh    # broker, generator and probe on CPU 1 only
#   HARNESS_NICE=10 scripts/performance-test.sh  # broker and generator at nice 10: the
#       host's threads get a core first, the harness takes what is left
#   PRELOAD=2000000 scripts/performance-test.sh   # drain a backlog: the host's
#       Kafka-path throughput without the generator competing for the cores
#   GEN_ARGS="--kafka-option linger.ms=200 --kafka-option batch.size=1000000" \
#       scripts/performance-test.sh   # the load generator's settings. Default:
#       --stagger-ms 200 --kafka-option linger.ms=5 --kafka-option batch.size=1000000,
#       each partition's events handed to the producer once per 200 ms, the
#       12 partitions' turns spread over the period. tansu's fetch cost grows
#       with the record batches it stores (scripts/perf/broker-growth.sh), so
#       the batches must be large; staggered, they reach the host one
#       partition at a time instead of all together (docs/performance-notes.md).
#   GEN_ARGS= scripts/performance-test.sh   # the seed's producer settings (snappy,
#       linger.ms=5, batch.size=16384): tansu saturates, the generator falls short
source "$(dirname "$0")/lib.sh"
RATE=${RATE:-100000}
DURATION=${DURATION:-60}
# Probes (bursts of 30 events of a fresh user) per second: P99 is taken over
# (DURATION - 10 s warm-up) x this many (1 800 in a 100 s run).
PROBES_PER_SEC=${PROBES_PER_SEC:-20}
PLUGINS=${PLUGINS:-}
HOST_ARGS=${HOST_ARGS:-}
PRELOAD=${PRELOAD:-}
# A preload is produced before the host creates the topic and unpaced, so
# staggering means nothing to it: unless GEN_ARGS is given, it keeps the
# seed's settings.
PRELOAD_GEN_ARGS=${GEN_ARGS-}
GEN_ARGS=${GEN_ARGS---stagger-ms 200 --kafka-option linger.ms=5 --kafka-option batch.size=1000000}
PLUGIN_DIR=${PLUGIN_DIR:-$ROOT/plugins}
# BROKER_CPUS=1: run the broker, the generator and the probe on those CPUs
# only (taskset), as if they were on other machines' cores.
BROKER_CPUS=${BROKER_CPUS:-}
# HARNESS_NICE=10: run the broker and the generator at that nice level (the
# probe stays at the host's, so its clock reads promptly).
HARNESS_NICE=${HARNESS_NICE:-}
unset RUST_LOG # HOST_LOG sets the host's

ensure_libclang
ensure_openssl
ensure_tansu >/dev/null
py=$PERF_PY
if [[ ! -d "$py/confluent_kafka" || ! -d "$py/websocket" ]]; then
    log "installing the probe's Python packages into $py"
    python3 -m pip install --quiet --target "$py" confluent-kafka==2.6.1 websocket-client==1.8.0 >&2
fi
build_plugins_into "$ROOT/plugins" plugins
log "building the host and rtap-gen"
cargo build --quiet --release -p rtap-host --bin host --bin rtap-gen
bin="$(target_dir)/release"

keep_files() {
    if [[ -n "${KEEP_LOG:-}" && -f "$work/host.log" ]]; then cp "$work/host.log" "$KEEP_LOG"; fi
    if [[ -n "${KEEP_SUMMARY:-}" && -f "$work/summary.json" ]]; then cp "$work/summary.json" "$KEEP_SUMMARY"; fi
}
start_work

kport=$(free_port)
pin=()
if [[ -n "$BROKER_CPUS" ]]; then pin=(taskset -c "$BROKER_CPUS"); fi
niced=("${pin[@]}")
if [[ -n "$HARNESS_NICE" ]]; then niced=(nice -n "$HARNESS_NICE" "${pin[@]}"); fi
start_tansu "$kport" "$work/tansu.log" "${niced[@]}"
pids+=("$TANSU_PID")

if [[ -n "$PRELOAD" ]]; then
    log "preloading $PRELOAD events"
    # shellcheck disable=SC2086
    "$bin/rtap-gen" --kafka-brokers "127.0.0.1:$kport" --rate "$RATE" --unpaced --events "$PRELOAD" --seed 5 $PRELOAD_GEN_ARGS >"$work/gen.log" 2>&1
fi
mkdir -p "$work/plugins"
if [[ -n "$PLUGINS" ]]; then
    for p in $PLUGINS; do cp "$PLUGIN_DIR/$p.wasm" "$work/plugins/"; done
else
    cp "$PLUGIN_DIR"/*.wasm "$work/plugins/"
fi
hport=$(free_port)
# shellcheck disable=SC2086
RUST_LOG="${HOST_LOG:-info}" "${HOST_BIN:-$bin/host}" --plugins "$work/plugins" --kafka-brokers "127.0.0.1:$kport" --no-watch \
    --listen "127.0.0.1:$hport" --sink jsonl:/dev/null --data-dir "$work/data" $HOST_ARGS \
    2>"$work/host.log" &
pids+=($!)
until curl -sf "http://127.0.0.1:$hport/health" >/dev/null 2>&1 || curl -s "http://127.0.0.1:$hport/health" 2>/dev/null | grep -q status; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
    sleep 0.2
done
if [[ -n "$PRELOAD" ]]; then
    PYTHONPATH="$py" python3 - "127.0.0.1:$kport" "$PRELOAD" <<'PY'
import sys, time
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "rtap", "enable.auto.commit": False})
tps = [TopicPartition("website-analytics-events", p) for p in range(12)]
n, t0, first = int(sys.argv[2]), None, 0
while True:
    done = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=5))
    now = time.time()
    if t0 is None and done > 0:
        t0, first = now, done
    if done >= n:
        break
    time.sleep(0.2)
print(f"backlog of {n} events drained (committed) at {(done - first) / (now - t0):.0f} events/s")
PY
    exit 0
fi
log "load: $RATE events/s for ${DURATION}s into tansu :$kport; host :$hport ($(ls "$work/plugins" | wc -l) plugins)"
# shellcheck disable=SC2086
"${niced[@]}" "${GEN_BIN:-$bin/rtap-gen}" --kafka-brokers "127.0.0.1:$kport" --rate "$RATE" --events 0 --seed 5 $GEN_ARGS >"$work/gen.log" 2>&1 &
pids+=($!)
# Who used the cores, per 10 s of the load (printed at the end).
"${pin[@]}" python3 "$ROOT/scripts/perf/cpu-timeline.py" --proc "tansu=${pids[0]}" --proc "host=${pids[1]}" \
    --proc "rtap-gen=${pids[2]}" --thread "host=${pids[1]}" >"$work/timeline.md" &
timeline=$!
PYTHONPATH="$py" "${pin[@]}" python3 "$ROOT/scripts/perf/probe.py" --brokers "127.0.0.1:$kport" \
    --api "http://127.0.0.1:$hport" --duration "$DURATION" --probes-per-sec "$PROBES_PER_SEC" \
    --json "$work/summary.json"
kill -TERM "$timeline" 2>/dev/null || true
wait "$timeline" 2>/dev/null || true
curl -s "http://127.0.0.1:$hport/metrics" | awk '
    /^rtap_checkpoint_duration_seconds_(sum|count)/ { c[$1] = $2 }
    /^rtap_sink_write_duration_seconds_(sum|count)\{sink="kafka"\}/ { k[$1] = $2 }
    /^rtap_plugin_call_duration_seconds_sum/ { wasm += $2 }
    /^rtap_plugin_batch_size_sum\{plugin="page-views"\}/ { bs = $2 }
    /^rtap_plugin_batch_size_count\{plugin="page-views"\}/ { bn = $2 }
    /^rtap_plugin_(traps|timeouts)_total|^rtap_dead_letters_total/ { if ($2 > 0) bad = bad "\n  " $0 }
    END {
        if (bad != "") printf "host: plugin failures and dead letters:%s\n", bad
        for (x in c) if (x ~ /count/) n = c[x]; else s = c[x]
        for (x in k) if (x ~ /count/) kn = k[x]; else ks = k[x]
        if (n > 0) printf "host: %d commits, %.1f ms each on average (Kafka transaction %.1f ms); %.1f s in plugin calls\n", n, 1000 * s / n, 1000 * ks / kn, wasm
        if (bn > 0) printf "host: %d page-views calls, %.0f events each on average\n", bn, bs / bn
    }' >&2
# Who used the two cores: CPU seconds per process since it started, and
# the host's per thread (digits in thread names folded to #).
cpu_report() {
    local tick line=""
    tick=$(getconf CLK_TCK)
    for named in "tansu:${pids[0]}" "host:${pids[1]}" "rtap-gen:${pids[2]}"; do
        line+=" ${named%%:*} $(thread_cpu "${named#*:}" | awk -v t="$tick" '{ s += $1 } END { printf "%.1f", s / t }')"
    done
    echo "CPU seconds since start:$line" >&2
    thread_cpu "${pids[1]}" | awk -v t="$tick" '{ n = $1; $1 = ""; c[$0] += n }
        END { for (x in c) if (c[x] >= t / 2) printf "  host thread%s: %.1f s\n", x, c[x] / t }' |
        sort -t: -k2 -rn >&2
}
cpu_report
echo "Share of one core per 10 s of load (the host thread is the processing thread; waited = runnable but no core free):" >&2
cat "$work/timeline.md" >&2
log "host: $(grep -c . "$work/host.log") log lines, $(grep -cE ' (WARN|ERROR) ' "$work/host.log") warnings or errors"
grep -E ' (WARN|ERROR) ' "$work/host.log" | head -20 >&2 || true
