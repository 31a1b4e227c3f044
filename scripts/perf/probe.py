#!/usr/bin/env python3
"""End-to-end probe of a running rtap host (used by scripts/performance-test.sh).

Latency, precisely: a probe is a burst of `--burst` page views of one fresh
user, produced to the events topic while the load runs; the last event of the
burst is the one that makes bot-burst fire (30 views within 10 s). The clock
starts when that event is handed to the Kafka client (the burst leaves as one
record batch, `--probe-linger-ms` after its first event) and stops when the
alert for that user is received
  * on the WebSocket `/ws` (immediate path), and
  * by a `read_committed` consumer of `cep-alerts` (committed path: visible
    only once the host's transaction committed).
Where the time goes, from the host's histograms over the same steady-state
window (buckets, so the figures are bucket-interpolated):
  * broker: a record's timestamp (the producer's CreateTime) -> the host's
    consumer reading it (`rtap_source_fetch_delay_seconds`, per record);
  * rtap, immediate: first event of a batch read -> the batch's outputs
    written to the sinks, WebSocket included (`rtap_e2e_latency_seconds`,
    per batch);
  * rtap, committed: first event of a batch read -> the transaction holding
    its outputs committed (`rtap_commit_latency_seconds`, per batch).
The probe latencies are also given per 10 s of the run: on tansu's in-memory
storage the broker's own latency grows with the topic.
Throughput and lag come from the broker: produced = sum of the partitions'
end offsets, committed = the consumer group's committed offsets (committed in
the host's transactions), lag = produced - committed, sampled every 2 s.
The backlog is sampled faster (`--backlog-interval`, 500 ms): produced minus
the host's `events_in` (the events it has read; a fresh run reads the topic
from its start). Committed offsets move only with transactions, so only this
finer series shows how the host keeps up between and during checkpoints.
"""
import argparse, json, resource, statistics, threading, time, urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_END
import websocket

ap = argparse.ArgumentParser()
ap.add_argument("--brokers", required=True)
ap.add_argument("--api", required=True, help="http://HOST:PORT of the rtap host")
ap.add_argument("--events-topic", default="website-analytics-events")
ap.add_argument("--alerts-topic", default="cep-alerts")
ap.add_argument("--group", default="rtap")
ap.add_argument("--duration", type=float, default=60)
ap.add_argument("--warmup", type=float, default=10)
ap.add_argument("--probes-per-sec", type=float, default=20)
ap.add_argument("--burst", type=int, default=30)
ap.add_argument("--probe-linger-ms", type=float, default=2)
ap.add_argument("--backlog-interval", type=float, default=0.5)
ap.add_argument("--json", help="write the summary here too (with the backlog series)")
a = ap.parse_args()

run = f"{int(time.time())}"
sent, ws_seen, com_seen = {}, {}, {}
stop = threading.Event()


def ws_reader():
    # Alerts only: every metric as a frame cost this pure-Python client half
    # a core once sessions close (~19 000 outputs/s at 100 000 events/s).
    url = a.api.replace("http://", "ws://") + "/ws?types=alert"
    ws = websocket.create_connection(url, timeout=5)
    ws.settimeout(0.5)
    while not stop.is_set():
        try:
            frame = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        now = time.time()
        for line in frame.splitlines():
            if '"probe-' not in line:
                continue
            m = json.loads(line)
            if m.get("type") == "alert" and m.get("key", "").startswith("probe-"):
                ws_seen.setdefault(m["key"], now)
    ws.close()


def committed_reader():
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": f"probe-{run}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 5})
    md = c.list_topics(a.alerts_topic, timeout=10).topics[a.alerts_topic]
    c.assign([TopicPartition(a.alerts_topic, p, OFFSET_END) for p in md.partitions])
    while not stop.is_set():
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        now = time.time()
        v = m.value()
        if b'"probe-' in v:
            k = json.loads(v).get("key", "")
            if k.startswith("probe-"):
                com_seen.setdefault(k, now)
    c.close()


samples = []
backlog = []  # (t, produced - events_in)


def backlog_sampler():
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": f"backlog-{run}",
                  "enable.auto.commit": False})
    parts = list(c.list_topics(a.events_topic, timeout=10).topics[a.events_topic].partitions)
    tps = [TopicPartition(a.events_topic, p) for p in parts]
    while not stop.is_set():
        t = time.time()
        try:
            # events_in before and after the 12 offset requests (~50 ms):
            # their mean is the count at about the moment `high` is read.
            ev0 = json.load(urllib.request.urlopen(a.api + "/api/pipeline", timeout=5)).get("events_in", 0)
            high = sum(c.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in tps)
            ev1 = json.load(urllib.request.urlopen(a.api + "/api/pipeline", timeout=5)).get("events_in", 0)
            backlog.append((t, high - (ev0 + ev1) // 2))
        except Exception:
            pass
        stop.wait(max(0.0, a.backlog_interval - (time.time() - t)))
    c.close()


def sampler():
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": a.group, "enable.auto.commit": False})
    parts = list(c.list_topics(a.events_topic, timeout=10).topics[a.events_topic].partitions)
    tps = [TopicPartition(a.events_topic, p) for p in parts]
    while not stop.is_set():
        t = time.time()
        high = sum(c.get_watermark_offsets(tp, timeout=5)[1] for tp in tps)
        com = sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=5))
        try:
            p = json.load(urllib.request.urlopen(a.api + "/api/pipeline", timeout=5))
        except Exception:
            p = {}
        samples.append({"t": t, "produced": high, "committed": com,
                        "events_in": p.get("events_in", 0),
                        "dead": p.get("dead_lettered", 0)})
        stop.wait(2.0)
    c.close()


def event(user, ts, i):
    return json.dumps({"event_id": f"probe-{user}-{i}", "event_type": "page_view",
                       "user_id": user, "session_id": f"s-{user}", "page": "/probe",
                       "timestamp": ts, "latency_ms": 50.0, "country": "DE",
                       "device": "desktop", "referrer": "direct"})


HISTOGRAMS = {"broker_fetch_delay": "rtap_source_fetch_delay_seconds",
              "rtap_immediate": "rtap_e2e_latency_seconds",
              "rtap_committed": "rtap_commit_latency_seconds"}


def scrape():
    """Cumulative bucket counts {metric: {le: count}} from /metrics (labels
    other than `le` summed)."""
    text = urllib.request.urlopen(a.api + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        for m in HISTOGRAMS.values():
            if line.startswith(m + "_bucket{"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                le = float("inf") if le == "+Inf" else float(le)
                d = out.setdefault(m, {})
                d[le] = d.get(le, 0) + float(line.rsplit(" ", 1)[1])
    return out


def hist_quantile(buckets, q):
    """Like PromQL's histogram_quantile: linear within the bucket."""
    les = sorted(buckets)
    total = buckets[les[-1]] if les else 0
    if total <= 0:
        return None
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le in les:
        c = buckets[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le * 1000
            return (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)) * 1000
        prev_le, prev_c = le, c
    return prev_le * 1000


threads = [threading.Thread(target=f, daemon=True)
           for f in (ws_reader, committed_reader, sampler, backlog_sampler)]
for t in threads:
    t.start()
time.sleep(2)  # readers positioned
# A burst's 30 events go out as one record batch: with linger.ms=0 each
# could be a batch of its own, and tansu's cost is per batch (20 probes/s
# took tansu from 32 to 51 s of CPU per 100 s). The 30 are handed over
# within a fraction of a millisecond, so the batch leaves at most
# `--probe-linger-ms` after the 30th, and that wait counts in the latency.
prod = Producer({"bootstrap.servers": a.brokers, "linger.ms": a.probe_linger_ms})
t0 = time.time()
i = 0
hist_start = None
while time.time() - t0 < a.duration:
    if hist_start is None and time.time() - t0 >= a.warmup:
        hist_start = scrape()
    user = f"probe-{run}-{i}"
    now_ms = int(time.time() * 1000)
    for j in range(a.burst):
        if j == a.burst - 1:
            sent[user] = time.time()
        prod.produce(a.events_topic, key=user, value=event(user, now_ms - (a.burst - 1 - j), j))
    prod.poll(0)
    i += 1
    time.sleep(max(0.0, t0 + i / a.probes_per_sec - time.time()))
prod.flush(10)
hist_end = scrape()
time.sleep(3)
stop.set()
for t in threads:
    t.join(timeout=10)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


probes = [k for k, t in sent.items() if t - t0 >= a.warmup]
ws = [(ws_seen[k] - sent[k]) * 1000 for k in probes if k in ws_seen]
com = [(com_seen[k] - sent[k]) * 1000 for k in probes if k in com_seen]
steady = [s for s in samples if s["t"] - t0 >= a.warmup]
out = {"probes": len(probes), "ws_missing": len(probes) - len(ws), "committed_missing": len(probes) - len(com)}
for name, xs in (("ws", ws), ("committed", com)):
    out[name] = {q: round(pct(xs, v), 1) for q, v in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}
# The slowest probes on the WebSocket, with when they were sent (seconds
# since the load began, and the wall clock to match against the host's log).
out["ws_slowest"] = [[round(sent[k] - t0, 2), round((ws_seen[k] - sent[k]) * 1000, 1),
                      time.strftime("%H:%M:%S", time.gmtime(sent[k])) + f"{sent[k] % 1:.3f}"[1:]]
                     for k in sorted((k for k in probes if k in ws_seen),
                                     key=lambda k: sent[k] - ws_seen[k])[:8]]
out["per_10s"] = {}
for lo in range(int(a.warmup), int(a.duration), 10):
    ks = [k for k in probes if lo <= sent[k] - t0 < lo + 10]
    w = [(ws_seen[k] - sent[k]) * 1000 for k in ks if k in ws_seen]
    c = [(com_seen[k] - sent[k]) * 1000 for k in ks if k in com_seen]
    out["per_10s"][f"{lo}-{lo + 10}s"] = {
        "ws_p50_p99": [round(pct(w, 50), 1), round(pct(w, 99), 1)],
        "committed_p50_p99": [round(pct(c, 50), 1), round(pct(c, 99), 1)]}
out["host_histograms_ms"] = {}
for name, m in HISTOGRAMS.items():
    end, start = hist_end.get(m, {}), (hist_start or {}).get(m, {})
    d = {le: c - start.get(le, 0) for le, c in end.items()}
    qs = {q: hist_quantile(d, v) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}
    out["host_histograms_ms"][name] = {q: (round(x, 1) if x is not None else None) for q, x in qs.items()}
if len(steady) >= 2:
    f, l = steady[0], steady[-1]
    dt = l["t"] - f["t"]
    lags = [s["produced"] - s["committed"] for s in steady]
    out["produced_per_sec"] = round((l["produced"] - f["produced"]) / dt)
    out["committed_per_sec"] = round((l["committed"] - f["committed"]) / dt)
    out["host_events_per_sec"] = round((l["events_in"] - f["events_in"]) / dt)
    out["lag_first_last_max"] = [lags[0], lags[-1], max(lags)]
    out["lag_slope_per_sec"] = round((lags[-1] - lags[0]) / dt)
    # The endpoint slope rests on two samples, and each swings by up to a
    # commit interval's worth of events (committed offsets move in steps)
    # plus the generator's linger burst: +-10 000 events at 100 000/s, so
    # +-400/s over 50 s. The least-squares slope over every sample and the
    # mean lag of each half of the run are what "flat" is judged on.
    ts = [s["t"] - f["t"] for s in steady]
    mt, ml = sum(ts) / len(ts), sum(lags) / len(lags)
    var = sum((t - mt) ** 2 for t in ts)
    out["lag_fit_slope_per_sec"] = round(sum((t - mt) * (x - ml) for t, x in zip(ts, lags)) / var) if var else None
    half = len(lags) // 2
    out["lag_mean_first_second_half"] = [round(sum(lags[:half]) / max(half, 1)),
                                         round(sum(lags[half:]) / max(len(lags) - half, 1))]
    out["lag_samples"] = lags
steady_backlog = [b for t, b in backlog if t - t0 >= a.warmup]
if steady_backlog:
    out["backlog_p50_p90_max"] = [pct(steady_backlog, 50), pct(steady_backlog, 90), max(steady_backlog)]
    # Seconds of the steady window the backlog spent above one second of
    # input at the target rate (rate estimated from the broker).
    rate = out.get("produced_per_sec") or 0
    over = sum(1 for b in steady_backlog if rate and b > rate)
    out["backlog_seconds_over_1s_of_input"] = round(over * a.backlog_interval, 1)
    ev = l["events_in"] - f["events_in"]
    out["error_rate"] = (l["dead"] - f["dead"]) / ev if ev else None
# The probe shares the 2 cores too (it reads every output on /ws).
ru = resource.getrusage(resource.RUSAGE_SELF)
out["probe_cpu_seconds"] = round(ru.ru_utime + ru.ru_stime, 1)
print(json.dumps(out, indent=1))
if a.json:
    out["backlog_series"] = [[round(t - t0, 2), b] for t, b in backlog]
    with open(a.json, "w") as fh:
        json.dump(out, fh, indent=1)
