#!/usr/bin/env bash
# How the test broker's (tansu's) and the generator's CPU grow over a run, per 10 s, with the
# generator alone, with a plain consumer beside it, or with the rtap host:
#
#   scripts/perf/broker-growth.sh gen        # rtap-gen alone
#   scripts/perf/broker-growth.sh consumer   # + one confluent-kafka consumer (no transactions)
#   scripts/perf/broker-growth.sh host      # + the host, every shipped plugin, Kafka sink
#   RATE=10000 SECONDS_=60 HOST_ARGS="--commit-interval 1s" scripts/perf/broker-growth.sh host
#   GEN_ARGS="--kafka-option linger.ms=200 --kafka-option batch.size=1000000" scripts/perf/broker-growth.sh consumer
#   RATE=100000 SECONDS_=20 GEN_BIN=/tmp/rtap-gen-old scripts/perf/broker-growth.sh gen  # another generator
#
# Needs what scripts/performance-test.sh installs and builds (tansu, the
# probe's Python packages, the host, rtap-gen and the plugins).
source "$(dirname "$0")/../lib.sh"
MODE=${1:-host}
RATE=${RATE:-10000}
SECONDS_=${SECONDS_:-60}
HOST_ARGS=${HOST_ARGS:-}
# The generator's batching of scripts/performance-test.sh's published runs.
GEN_ARGS=${GEN_ARGS:---kafka-option linger.ms=50 --kafka-option batch.size=1000000}
case "$MODE" in gen | consumer | host) ;; *)
    echo "usage: $0 gen|consumer|host" >&2
    exit 2
    ;;
esac
py=$PERF_PY
bin="$(target_dir)/release"
start_work

kport=$(free_port)
start_tansu "$kport" "$work/tansu.log"
broker=$TANSU_PID
pids+=("$broker")
if [[ "$MODE" == host ]]; then
    hport=$(free_port)
    # shellcheck disable=SC2086
    "$bin/host" --plugins "$ROOT/plugins" --kafka-brokers "127.0.0.1:$kport" --no-watch \
        --listen "127.0.0.1:$hport" --sink jsonl:/dev/null --data-dir "$work/data" $HOST_ARGS 2>"$work/host.log" &
    pids+=($!)
    until curl -s "http://127.0.0.1:$hport/health" >/dev/null 2>&1; do
        kill -0 "${pids[-1]}" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
        sleep 0.2
    done
fi
# shellcheck disable=SC2086
"${GEN_BIN:-$bin/rtap-gen}" --kafka-brokers "127.0.0.1:$kport" --rate "$RATE" --events 0 --seed 5 $GEN_ARGS >/dev/null 2>&1 &
gen=$!
pids+=("$gen")
if [[ "$MODE" == consumer ]]; then
    # The host's consumer settings, without its transactions.
    PYTHONPATH="$py" python3 - "127.0.0.1:$kport" <<'PY' &
import sys
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "plain", "auto.offset.reset": "earliest",
              "fetch.wait.max.ms": 5, "fetch.min.bytes": 131072, "session.timeout.ms": 6000})
c.subscribe(["website-analytics-events"])
while True:
    c.consume(10000, 0.1)
PY
    pids+=($!)
fi
log "tansu CPU per 10 s, $MODE, $RATE events/s"
tick=$(getconf CLK_TCK)
prev=0
gprev=0
for ((t = 10; t <= SECONDS_; t += 10)); do
    sleep 10
    now=$(stat_ticks "/proc/$broker/stat")
    gnow=$(stat_ticks "/proc/$gen/stat")
    echo "$((t - 10))–$t s: tansu $(((now - prev) * 100 / tick / 10)) % of a core, rtap-gen $(((gnow - gprev) * 100 / tick / 10)) %"
    prev=$now
    gprev=$gnow
done
