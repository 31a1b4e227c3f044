#!/usr/bin/env python3
"""The five window metrics of rtap's seed pipeline as one Apache Flink SQL job.

A baseline for scripts/perf/flink-vs-rtap.sh: PyFlink's Table API (Flink 2.3)
in streaming mode, event time with a 5 s bounded-out-of-orderness watermark,
the windowing table-valued functions, and every result into a `blackhole`
sink, so what is measured is reading, parsing and windowing, not output.
The five INSERTs go into one StatementSet: one job, one read of the file,
the planner sharing the source between them.

  page views       page_view events per page, tumbling 5 s      (page-views)
  active users     COUNT(DISTINCT user_id), HOP 1 min by 5 s    (active-users)
  error rate       events and error events, tumbling 5 s        (error-rate)
  conversion       purchases, COUNT(DISTINCT session_id), 1 min (conversion-rate)
  sessions         per session_id, 60 s gap: events, page views,
                   last - first timestamp                       (session-duration)

rtap's plugins estimate distinct counts with a HyperLogLog; Flink counts them
exactly. Events older than the watermark (more than 5 s behind the newest
seen) are dropped by Flink's window operators as late.

  python bench/flink/windows.py --events ev.jsonl [--parallelism 2] [--check]

--events is a JSON-lines file or a folder of them (the filesystem source
reads a file with one reader: give a folder of N parts to read with N).
--check prints the results (the `print` connector, on this process's stdout)
instead of discarding them: for checking on a small input.

Last line: FLINK-RESULT events=<n> wall_s=<job seconds> events_per_s=<n/wall>
job_cpu_s=<s> jvm_cpu_s=<s> jvm_pid=<pid>, where the job seconds are measured around
execute().wait() only (the JVM's start and the planning before it are not in
them), job_cpu_s is the JVM's user + system CPU over that same span and
jvm_cpu_s the JVM's CPU from its start to the job's end. The JVM is PyFlink's
gateway process, a child this process never waits for, so `time` on this
script does not count its CPU: add jvm_cpu_s. It also outlives this process
by its shutdown (a second or so): wait for jvm_pid to go before the next run.
"""
import argparse
import os
import sys
import time

PAGE_VIEWS = """
INSERT INTO {sink}page_views
SELECT window_start, window_end, page, COUNT(*) AS view_count
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))
WHERE event_type = 'page_view'
GROUP BY window_start, window_end, page
"""

ACTIVE_USERS = """
INSERT INTO {sink}active_users
SELECT window_start, window_end, COUNT(DISTINCT user_id) AS user_count
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""

ERROR_RATE = """
INSERT INTO {sink}error_rate
SELECT window_start, window_end,
       COUNT(*) AS event_count,
       COUNT(*) FILTER (WHERE event_type = 'error') AS error_count,
       CAST(COUNT(*) FILTER (WHERE event_type = 'error') AS DOUBLE) / COUNT(*) AS error_rate
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND))
GROUP BY window_start, window_end
"""

CONVERSION = """
INSERT INTO {sink}conversion
SELECT window_start, window_end,
       COUNT(*) FILTER (WHERE event_type = 'purchase') AS purchase_count,
       COUNT(DISTINCT session_id) AS session_count,
       CAST(COUNT(*) FILTER (WHERE event_type = 'purchase') AS DOUBLE)
           / COUNT(DISTINCT session_id) AS conversion_rate
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end
"""

# The session TVF with PARTITION BY (Flink >= 1.19); the partition key must be
# among the GROUP BY keys. window_end is last event + gap, as in rtap.
SESSIONS = """
INSERT INTO {sink}sessions
SELECT window_start, window_end, session_id,
       COUNT(*) AS event_count,
       COUNT(*) FILTER (WHERE event_type = 'page_view') AS page_view_count,
       MAX(`timestamp`) - MIN(`timestamp`) AS duration_ms
FROM TABLE(SESSION(TABLE events PARTITION BY session_id, DESCRIPTOR(ts), INTERVAL '60' SECOND))
GROUP BY window_start, window_end, session_id
"""

SINKS = {
    "page_views": "window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), page STRING, view_count BIGINT",
    "active_users": "window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), user_count BIGINT",
    "error_rate": "window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), event_count BIGINT, "
    "error_count BIGINT, error_rate DOUBLE",
    "conversion": "window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), purchase_count BIGINT, "
    "session_count BIGINT, conversion_rate DOUBLE",
    "sessions": "window_start TIMESTAMP_LTZ(3), window_end TIMESTAMP_LTZ(3), session_id STRING, "
    "event_count BIGINT, page_view_count BIGINT, duration_ms BIGINT",
}


def count_events(path):
    files = [path] if os.path.isfile(path) else [
        os.path.join(path, f) for f in sorted(os.listdir(path)) if not f.startswith((".", "_"))
    ]
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n += chunk.count(b"\n")
    return n


def jvm_cpu(pid):
    """User + system CPU seconds of a process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", required=True, help="JSON-lines file, or a folder of them")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="print the results instead of discarding them")
    ap.add_argument("--managed-memory", default="256m", help="taskmanager.memory.managed.size")
    args = ap.parse_args()

    path = os.path.abspath(args.events)
    if not os.path.exists(path):
        sys.exit(f"no such file or folder: {path}")
    n = count_events(path)

    # The local mini-cluster runs inside the gateway JVM that PyFlink starts,
    # so that JVM's heap is the task manager's heap; JVM_ARGS reaches it.
    os.environ.setdefault("JVM_ARGS", "-Xms1g -Xmx2g")

    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conf = Configuration()
    conf.set_string("parallelism.default", str(args.parallelism))
    conf.set_string("taskmanager.numberOfTaskSlots", str(args.parallelism))
    # process.size is what a standalone task manager would get; the local
    # executor sizes itself from the JVM and takes managed/network sizes only.
    conf.set_string("taskmanager.memory.process.size", "3g")
    conf.set_string("taskmanager.memory.managed.size", args.managed_memory)
    conf.set_string("taskmanager.memory.network.min", "64m")
    conf.set_string("taskmanager.memory.network.max", "64m")
    conf.set_string("table.local-time-zone", "UTC")
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    t_env = TableEnvironment.create(settings)

    t_env.execute_sql(f"""
        CREATE TABLE events (
            event_id STRING,
            event_type STRING,
            user_id STRING,
            session_id STRING,
            page STRING,
            `timestamp` BIGINT,
            latency_ms DOUBLE,
            country STRING,
            device STRING,
            referrer STRING,
            ts AS TO_TIMESTAMP_LTZ(`timestamp`, 3),
            WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{path}',
            'format' = 'json',
            'json.ignore-parse-errors' = 'true',
            'json.fail-on-missing-field' = 'false'
        )""")

    for name, schema in SINKS.items():
        if args.check:
            t_env.execute_sql(f"CREATE TABLE print_{name} ({schema}) WITH "
                              f"('connector' = 'print', 'print-identifier' = '{name}')")
        else:
            t_env.execute_sql(f"CREATE TABLE sink_{name} ({schema}) WITH ('connector' = 'blackhole')")

    sink = "print_" if args.check else "sink_"
    stmts = t_env.create_statement_set()
    for q in (PAGE_VIEWS, ACTIVE_USERS, ERROR_RATE, CONVERSION, SESSIONS):
        stmts.add_insert_sql(q.format(sink=sink))

    from pyflink.java_gateway import get_gateway
    jvm_pid = get_gateway().jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getPid()

    cpu0 = jvm_cpu(jvm_pid)
    start = time.monotonic()
    stmts.execute().wait()
    wall = time.monotonic() - start
    cpu1 = jvm_cpu(jvm_pid)
    sys.stdout.flush()
    print(f"FLINK-RESULT events={n} wall_s={wall:.3f} events_per_s={n / wall:.0f} "
          f"job_cpu_s={cpu1 - cpu0:.2f} jvm_cpu_s={cpu1:.2f} jvm_pid={jvm_pid}", flush=True)


if __name__ == "__main__":
    main()
