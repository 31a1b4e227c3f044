#!/usr/bin/env python3
"""Static checks of the deploy assets (run by deploy/check.sh).

Checks what Docker would only reveal at `docker compose up`: the services,
ports, volumes and tokens of docker-compose.yml, the Kafka topics that
kafka-init creates, the Dockerfile and .dockerignore, the Prometheus scrape
target, and that every Grafana panel uses a provisioned data source and only
metrics the host exposes. Prints one line per failed check and exits 1 if any.

    python3 deploy/check_assets.py [--promql-out FILE]

--promql-out writes the dashboards' PromQL expressions as a rules file, for
`promtool check rules` to parse.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The host's Prometheus metrics (the names the host exposes; see the README).
COUNTERS = {
    "rtap_events_in_total", "rtap_dead_letters_total", "rtap_late_events_total",
    "rtap_plugin_traps_total", "rtap_plugin_timeouts_total", "rtap_plugin_swaps_total",
    "rtap_checkpoints_total", "rtap_sink_errors_total", "rtap_shadow_compared_total",
}
HISTOGRAMS = {
    "rtap_e2e_latency_seconds", "rtap_plugin_call_duration_seconds", "rtap_plugin_batch_size",
    "rtap_checkpoint_duration_seconds", "rtap_sink_write_duration_seconds",
    "rtap_commit_latency_seconds", "rtap_source_fetch_delay_seconds",
}
GAUGES = {
    "rtap_checkpoint_age_seconds", "rtap_consumer_lag", "rtap_watermark_lag_seconds",
    "rtap_sink_buffered_points", "rtap_websocket_clients",
}
HOST_METRICS = (COUNTERS | GAUGES
                | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")})
# The measurements the host writes to InfluxDB (one per plugin metric name).
MEASUREMENTS = {
    "page_views", "active_users", "conversion_rate", "session_duration_ms",
    "pages_per_session", "latency_ms", "error_rate", "events", "errors",
}

SEED_TOPICS = {  # name: (partitions, compacted)
    "website-analytics-events": (12, False),
    "processed-metrics": (6, True),
    "cep-alerts": (3, False),
}
BROKERS = ["kafka-1", "kafka-2", "kafka-3"]
BOOTSTRAP = "kafka-1:29092,kafka-2:29092,kafka-3:29092"
PUBLISHED = {  # host port: (service, container port)
    3000: ("host", 3000), 3002: ("host-standby", 3000), 3003: ("host-standby-2", 3000), 8080: ("kafka-ui", 8080), 8086: ("influxdb", 8086),
    3001: ("grafana", 3000), 9090: ("prometheus", 9090),
    9092: ("kafka-1", 9092), 9093: ("kafka-2", 9093), 9094: ("kafka-3", 9094),
}
DATA_VOLUMES = {  # service: container path that must be a named volume
    "kafka-1": "/var/lib/kafka/data", "kafka-2": "/var/lib/kafka/data",
    "kafka-3": "/var/lib/kafka/data", "influxdb": "/var/lib/influxdb2",
    "prometheus": "/prometheus", "grafana": "/var/lib/grafana", "host": "/data",
}

# The Compose specification's keys (compose-spec.json), to catch misspellings
# where no `docker compose config` is available.
COMPOSE_TOP = {"version", "name", "include", "services", "models", "networks", "volumes", "secrets", "configs"}
COMPOSE_SERVICE = set("""
    develop deploy annotations attach build blkio_config cap_add cap_drop cgroup cgroup_parent command
    configs container_name cpu_count cpu_percent cpu_shares cpu_quota cpu_period cpu_rt_period
    cpu_rt_runtime cpus cpuset credential_spec depends_on device_cgroup_rules devices dns dns_opt
    dns_search domainname entrypoint env_file label_file environment expose extends provider
    external_links extra_hosts gpus group_add healthcheck hostname image init ipc isolation labels
    links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode
    models networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop
    privileged profiles pull_policy pull_refresh_after read_only restart runtime scale security_opt
    shm_size secrets sysctls stdin_open stop_grace_period stop_signal storage_opt tmpfs tty ulimits
    use_api_socket user uts userns_mode volumes volumes_from working_dir""".split())
COMPOSE_HEALTHCHECK = {"disable", "interval", "retries", "test", "timeout", "start_period", "start_interval"}
COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)
        print(f"  FAIL: {what}")
    return ok


def load_yaml(rel):
    try:
        return yaml.safe_load((ROOT / rel).read_text())
    except Exception as e:  # noqa: BLE001 - report any parse error as a failure
        check(False, f"{rel}: does not parse: {e}")
        return None


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def ports_of(svc):
    """[(host port, container port)] from short or long syntax."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((int(p.get("published", 0) or 0), int(p["target"])))
            continue
        parts = str(p).split("/")[0].split(":")
        if len(parts) == 1:
            out.append((0, int(parts[0])))
        else:
            out.append((int(parts[-2]), int(parts[-1])))
    return out


def volumes_of(svc):
    """[(source, target)] from short or long syntax."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((v.get("source", ""), v["target"]))
        else:
            parts = str(v).split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
    return out


def command_text(svc, key="command"):
    c = svc.get(key)
    if c is None:
        return ""
    return c if isinstance(c, str) else "\n".join(str(x) for x in c)


def args_of(svc):
    c = svc.get("command") or []
    return shlex.split(c) if isinstance(c, str) else [str(x) for x in c]


def flag(args, name):
    """Value of --name VALUE or --name=VALUE."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def default_of(value):
    """`${VAR:-default}` -> (VAR, default); anything else -> (None, value)."""
    m = re.fullmatch(r"\$\{(\w+)(?::?-(.*))?\}", value or "")
    return (m.group(1), m.group(2)) if m else (None, value)


# ---------------------------------------------------------------------------
def check_compose():
    print("docker-compose.yml")
    text = (ROOT / "docker-compose.yml").read_text()
    c = load_yaml("docker-compose.yml")
    if not isinstance(c, dict):
        return None
    check("version" not in c, "docker-compose.yml: drop the obsolete top-level `version:` (Compose spec)")
    services = c.get("services") or {}
    for key in c:
        check(key in COMPOSE_TOP or key.startswith("x-"), f"docker-compose.yml: unknown top-level key `{key}`")
    for name, svc in services.items():
        for key in svc:
            check(key in COMPOSE_SERVICE or key.startswith("x-"), f"docker-compose.yml: {name}: unknown key `{key}`")
        for key in svc.get("healthcheck") or {}:
            check(key in COMPOSE_HEALTHCHECK, f"docker-compose.yml: {name}: unknown healthcheck key `{key}`")
        deps = svc.get("depends_on") or {}
        for dep, spec in (deps.items() if isinstance(deps, dict) else []):
            check(dep in services, f"docker-compose.yml: {name} depends on unknown service `{dep}`")
            check((spec or {}).get("condition") in COMPOSE_CONDITIONS,
                  f"docker-compose.yml: {name}: depends_on {dep}: condition must be one of {sorted(COMPOSE_CONDITIONS)}")
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            for k, v in env.items():
                check(v is None or isinstance(v, (str, int, float, bool)),
                      f"docker-compose.yml: {name}: environment {k} must be a scalar")
        for key in ("command", "entrypoint"):
            v = svc.get(key)
            check(v is None or isinstance(v, str) or all(isinstance(x, str) for x in v),
                  f"docker-compose.yml: {name}: every item of {key} must be a string (quote numbers)")
        if "healthcheck" in svc and "test" in svc["healthcheck"]:
            t = svc["healthcheck"]["test"]
            check(isinstance(t, str) or (t and t[0] in ("CMD", "CMD-SHELL", "NONE")),
                  f"docker-compose.yml: {name}: healthcheck test must start with CMD, CMD-SHELL or NONE")
    required = BROKERS + ["kafka-init", "kafka-ui", "influxdb", "host", "prometheus", "grafana"]
    for name in required:
        check(name in services, f"docker-compose.yml: service `{name}` is missing")
    if not all(n in services for n in required):
        return c

    # Every ${VAR} has a default, so that `docker compose up` needs no .env.
    for m in re.finditer(r"(?<!\$)\$\{(\w+)([^}]*)\}", text):
        check(m.group(2).startswith((":-", "-")),
              f"docker-compose.yml: ${{{m.group(1)}}} has no default (use ${{{m.group(1)}:-...}})")
    for m in re.finditer(r"(?<!\$)\$(\w+)", text):
        check(False, f"docker-compose.yml: bare ${m.group(1)} is interpolated by Compose (write $${m.group(1)})")

    # Published ports: each once, on the right service.
    seen = {}
    for name, svc in services.items():
        for host_port, container_port in ports_of(svc):
            if host_port:
                check(host_port not in seen,
                      f"docker-compose.yml: host port {host_port} published by {seen.get(host_port)} and {name}")
                seen[host_port] = (name, container_port)
    for port, (name, target) in PUBLISHED.items():
        check(seen.get(port) == (name, target),
              f"docker-compose.yml: port {port} must map to {name}:{target} (found {seen.get(port)})")

    # Named volumes for all data, declared, and bind mounts that exist.
    declared = set((c.get("volumes") or {}).keys())
    used = set()
    for name, svc in services.items():
        for src, target in volumes_of(svc):
            if src.startswith((".", "/")):
                check((ROOT / src).exists(), f"docker-compose.yml: {name} mounts {src}, which does not exist")
            elif src:
                used.add(src)
                check(src in declared, f"docker-compose.yml: volume `{src}` of {name} is not declared")
    for name, path in DATA_VOLUMES.items():
        named = [s for s, t in volumes_of(services[name]) if t == path and s and not s.startswith((".", "/"))]
        check(bool(named), f"docker-compose.yml: {name} needs a named volume at {path}")
    check(declared <= used, f"docker-compose.yml: declared but unused volumes: {sorted(declared - used)}")

    # Kafka: three combined KRaft nodes, one cluster id, RF 3, min ISR 2.
    envs = {b: env_of(services[b]) for b in BROKERS}
    voters = envs["kafka-1"].get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")
    check(len({e.get("CLUSTER_ID") for e in envs.values()}) == 1 and envs["kafka-1"].get("CLUSTER_ID"),
          "kafka: the 3 brokers need one fixed CLUSTER_ID")
    for i, b in enumerate(BROKERS, 1):
        e, svc = envs[b], services[b]
        check(svc.get("image") == "apache/kafka:3.9.0", f"{b}: image must be apache/kafka:3.9.0")
        check(set(e.get("KAFKA_PROCESS_ROLES", "").split(",")) == {"broker", "controller"},
              f"{b}: KAFKA_PROCESS_ROLES must be broker,controller")
        check(e.get("KAFKA_NODE_ID") == str(i), f"{b}: KAFKA_NODE_ID must be {i}")
        check(e.get("KAFKA_CONTROLLER_QUORUM_VOTERS") == voters and f"{i}@{b}:" in voters,
              f"{b}: KAFKA_CONTROLLER_QUORUM_VOTERS must list {i}@{b} and be the same on all brokers")
        check(e.get("KAFKA_DEFAULT_REPLICATION_FACTOR") == "3", f"{b}: default replication factor must be 3")
        check(e.get("KAFKA_MIN_INSYNC_REPLICAS") == "2", f"{b}: min.insync.replicas must be 2")
        check(e.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR") == "3", f"{b}: offsets topic RF must be 3")
        ext = 9091 + i
        check(f"://:29092" in e.get("KAFKA_LISTENERS", "") and f"://:{ext}" in e.get("KAFKA_LISTENERS", ""),
              f"{b}: KAFKA_LISTENERS must listen on 29092 (internal) and {ext} (host)")
        check(f"//{b}:29092" in e.get("KAFKA_ADVERTISED_LISTENERS", "")
              and f"//localhost:{ext}" in e.get("KAFKA_ADVERTISED_LISTENERS", ""),
              f"{b}: KAFKA_ADVERTISED_LISTENERS must advertise {b}:29092 and localhost:{ext}")
        check(bool(svc.get("healthcheck", {}).get("test")), f"{b}: needs a healthcheck")

    # kafka-init: the seed topics with their partitions, RF 3, snappy, compaction.
    init = services["kafka-init"]
    check(all((init.get("depends_on") or {}).get(b, {}).get("condition") == "service_healthy" for b in BROKERS),
          "kafka-init: must depend on the 3 brokers being healthy")
    script = command_text(init)
    lines = script.replace("\\\n", " ").splitlines()
    for topic, (partitions, compacted) in SEED_TOPICS.items():
        creates = [ln for ln in lines if "kafka-topics.sh" in ln and "--create" in ln
                   and re.search(rf"--topic[ =]{re.escape(topic)}(\s|$)", ln)]
        if not check(len(creates) == 1, f"kafka-init: one `kafka-topics.sh --create` of {topic} expected"):
            continue
        ln = creates[0]
        check("--if-not-exists" in ln, f"kafka-init: {topic}: --if-not-exists missing")
        check(re.search(rf"--partitions[ =]{partitions}(\s|$)", ln) is not None,
              f"kafka-init: {topic}: must have {partitions} partitions")
        check(re.search(r"--replication-factor[ =]3(\s|$)", ln) is not None,
              f"kafka-init: {topic}: replication factor must be 3")
        check("compression.type=snappy" in ln, f"kafka-init: {topic}: compression.type=snappy missing")
        check(("cleanup.policy=compact" in ln) == compacted,
              f"kafka-init: {topic}: cleanup.policy=compact {'missing' if compacted else 'unexpected'}")
    check(BOOTSTRAP in script.replace("$$", "$"), f"kafka-init: must bootstrap from {BOOTSTRAP}")
    entry = init.get("entrypoint") or []
    if isinstance(entry, list) and entry[:1] == ["/bin/bash"]:
        shell = script.replace("$$", "$")
        r = subprocess.run(["bash", "-n"], input=shell, text=True, capture_output=True)
        check(r.returncode == 0, f"kafka-init: the script is not valid bash: {r.stderr.strip()}")

    # Kafka UI on the three brokers.
    check(env_of(services["kafka-ui"]).get("KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS") == BOOTSTRAP,
          f"kafka-ui: KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS must be {BOOTSTRAP}")

    # InfluxDB 2 set up with org rtap, bucket analytics, 30 days.
    ie = env_of(services["influxdb"])
    check(str(services["influxdb"].get("image", "")).startswith("influxdb:2"), "influxdb: image must be influxdb:2.x")
    for k, v in {"DOCKER_INFLUXDB_INIT_MODE": "setup", "DOCKER_INFLUXDB_INIT_ORG": "rtap",
                 "DOCKER_INFLUXDB_INIT_BUCKET": "analytics", "DOCKER_INFLUXDB_INIT_RETENTION": "30d"}.items():
        check(ie.get(k) == v, f"influxdb: {k} must be {v}")
    check(bool(services["influxdb"].get("healthcheck", {}).get("test")), "influxdb: needs a healthcheck")
    _, pw = default_of(ie.get("DOCKER_INFLUXDB_INIT_PASSWORD", ""))
    check(len(pw or "") >= 8, "influxdb: the default admin password needs 8+ characters (InfluxDB refuses shorter)")

    # One InfluxDB token for InfluxDB's setup, the host and Grafana.
    tokens = {
        "influxdb": default_of(ie.get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", "")),
        "host": default_of(env_of(services["host"]).get("INFLUX_TOKEN", "")),
        "grafana": default_of(env_of(services["grafana"]).get("INFLUX_TOKEN", "")),
    }
    check(all(v[0] == "INFLUX_TOKEN" for v in tokens.values()) and len(set(tokens.values())) == 1,
          f"InfluxDB token: influxdb, host and grafana must all use ${{INFLUX_TOKEN:-<same default>}} ({tokens})")

    # The host.
    h = services["host"]
    build = h.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    check(context in (".", "./"), "host: must be built from the repository root (build.context .)")
    dockerfile = "Dockerfile" if isinstance(build, str) else (build or {}).get("dockerfile", "Dockerfile")
    check((ROOT / dockerfile).is_file(), f"host: {dockerfile} does not exist")
    deps = h.get("depends_on") or {}
    check(deps.get("kafka-init", {}).get("condition") == "service_completed_successfully",
          "host: must depend on kafka-init completing successfully")
    check(deps.get("influxdb", {}).get("condition") == "service_healthy",
          "host: must depend on influxdb being healthy")
    args = args_of(h)
    for name, want in {"--plugins": "/app/plugins", "--listen": "0.0.0.0:3000", "--data-dir": "/data",
                       "--dashboard-dir": "/app/dashboard/dist", "--kafka-brokers": BOOTSTRAP,
                       "--influx-url": "http://influxdb:8086", "--influx-org": "rtap",
                       "--influx-bucket": "analytics"}.items():
        check(flag(args, name) == want, f"host: {name} must be {want} (found {flag(args, name)})")
    he = env_of(h)
    check("RTAP_ADMIN_TOKEN" in he and "${RTAP_ADMIN_TOKEN" in he["RTAP_ADMIN_TOKEN"],
          "host: RTAP_ADMIN_TOKEN must come from the environment")
    check("/health" in json.dumps(h.get("healthcheck", {})), "host: the healthcheck must use /health")
    mem = (((h.get("deploy") or {}).get("resources") or {}).get("limits") or {}).get("memory")
    check(str(mem).upper() in ("4G", "4GB", "4096M", "4096MB"),
          f"host: memory limit must be 4G, the RtapHighMemory alert's limit (found {mem})")

    # Prometheus and Grafana mount the checked-in configuration.
    pv = dict((t, s) for s, t in volumes_of(services["prometheus"]))
    check(pv.get("/etc/prometheus") in ("./deploy/prometheus", "deploy/prometheus"),
          "prometheus: must mount ./deploy/prometheus at /etc/prometheus")
    gv = dict((t, s) for s, t in volumes_of(services["grafana"]))
    for sub in ("datasources", "dashboards"):
        check(gv.get(f"/etc/grafana/provisioning/{sub}") == f"./deploy/grafana/provisioning/{sub}",
              f"grafana: must mount ./deploy/grafana/provisioning/{sub}")
    return c


# ---------------------------------------------------------------------------
def check_prometheus(compose):
    print("deploy/prometheus")
    cfg = load_yaml("deploy/prometheus/prometheus.yml")
    if not cfg:
        return
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    rtap = jobs.get("rtap")
    if not check(rtap is not None, "prometheus.yml: scrape job `rtap` is missing (the alerts select job=\"rtap\")"):
        return
    targets = [t for sc in rtap.get("static_configs", []) for t in sc.get("targets", [])]
    check(targets == ["host:3000"], f"prometheus.yml: job rtap must scrape host:3000 (found {targets})")
    check(rtap.get("metrics_path", "/metrics") == "/metrics", "prometheus.yml: job rtap must scrape /metrics")
    check(rtap.get("scrape_interval") == "5s", "prometheus.yml: job rtap must be scraped every 5s")
    if compose:
        check("host" in (compose.get("services") or {}), "prometheus.yml: scrape target `host` is no service")
    rules = sorted((ROOT / "deploy/prometheus").glob("rules/*.yml"))
    check(bool(rules) and "rules/*.yml" in cfg.get("rule_files", []),
          "prometheus.yml: rule_files must load rules/*.yml")


# ---------------------------------------------------------------------------
def check_grafana(promql_out):
    print("deploy/grafana")
    ds_file = load_yaml("deploy/grafana/provisioning/datasources/datasources.yml") or {}
    datasources = {d.get("uid"): d for d in ds_file.get("datasources", [])}
    check(None not in datasources, "datasources.yml: every data source needs a uid")
    prom = [d for d in datasources.values() if d.get("type") == "prometheus"]
    influx = [d for d in datasources.values() if d.get("type") == "influxdb"]
    check(len(prom) == 1 and prom[0].get("url") == "http://prometheus:9090",
          "datasources.yml: one Prometheus data source at http://prometheus:9090")
    if check(len(influx) == 1, "datasources.yml: one InfluxDB data source"):
        i = influx[0]
        jd = i.get("jsonData") or {}
        check(i.get("url") == "http://influxdb:8086", "datasources.yml: InfluxDB at http://influxdb:8086")
        check(jd.get("version") == "Flux" and jd.get("organization") == "rtap"
              and jd.get("defaultBucket") == "analytics",
              "datasources.yml: InfluxDB must use Flux, organization rtap, bucket analytics")
        check("INFLUX_TOKEN" in str((i.get("secureJsonData") or {}).get("token", "")),
              "datasources.yml: the InfluxDB token must come from $INFLUX_TOKEN")

    prov = load_yaml("deploy/grafana/provisioning/dashboards/dashboards.yml") or {}
    paths = [p.get("options", {}).get("path") for p in prov.get("providers", [])]
    check(paths == ["/etc/grafana/dashboards"],
          f"dashboards.yml: one provider reading /etc/grafana/dashboards (found {paths})")

    recorded = set()
    for f in (ROOT / "deploy/prometheus/rules").glob("*.yml"):
        for g in (yaml.safe_load(f.read_text()) or {}).get("groups", []):
            recorded |= {r["record"] for r in g.get("rules", []) if "record" in r}

    exprs = []
    files = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    check(len(files) >= 2, "deploy/grafana/dashboards: rtap-pipeline.json and rtap-business.json expected")
    uids = set()
    for f in files:
        rel = f.relative_to(ROOT)
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            check(False, f"{rel}: invalid JSON: {e}")
            continue
        check(bool(d.get("uid")) and d["uid"] not in uids, f"{rel}: needs a unique uid")
        uids.add(d.get("uid"))
        check(bool(d.get("title")), f"{rel}: needs a title")
        check(isinstance(d.get("schemaVersion"), int) and 36 <= d["schemaVersion"] <= 41,
              f"{rel}: schemaVersion should be about 39")
        for a in d.get("annotations", {}).get("list", []):
            uid = (a.get("datasource") or {}).get("uid")
            check(uid == "-- Grafana --" or uid in datasources, f"{rel}: annotation data source {uid} unknown")
        panels = list(d.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))  # panels of collapsed rows
        ids = [p.get("id") for p in panels]
        check(len(ids) == len(set(ids)) and None not in ids, f"{rel}: panel ids must be set and unique")
        for p in panels:
            where = f"{rel}: panel {p.get('id')} `{p.get('title')}`"
            g = p.get("gridPos") or {}
            check(g.get("x", -1) >= 0 and g.get("w", 0) > 0 and g.get("x", 0) + g.get("w", 0) <= 24,
                  f"{where}: gridPos outside the 24 columns")
            if p.get("type") == "row":
                continue
            ds = p.get("datasource") or {}
            if not check(ds.get("uid") in datasources, f"{where}: data source uid {ds.get('uid')} is not provisioned"):
                continue
            kind = datasources[ds["uid"]]["type"]
            check(ds.get("type") == kind, f"{where}: data source type {ds.get('type')} != {kind}")
            targets = p.get("targets") or []
            check(bool(targets), f"{where}: no queries")
            for t in targets:
                tds = (t.get("datasource") or ds).get("uid")
                check(tds in datasources, f"{where}: query {t.get('refId')}: data source uid {tds} is not provisioned")
                if kind == "prometheus":
                    expr = t.get("expr", "")
                    if check(bool(expr), f"{where}: query {t.get('refId')} has no expr"):
                        exprs.append((f"{rel}#{p.get('id')}{t.get('refId')}", expr))
                    for name in set(re.findall(r"\b(rtap_[a-z0-9_]+)", expr)):
                        check(name in HOST_METRICS, f"{where}: {name} is not a metric of the host")
                    for name in set(re.findall(r"\b(rtap:[a-z0-9_:]+)", expr)):
                        check(name in recorded, f"{where}: {name} is not a recording rule")
                else:
                    q = t.get("query", "")
                    check('from(bucket: "analytics")' in q, f"{where}: Flux query must read bucket analytics")
                    check("v.timeRangeStart" in q, f"{where}: Flux query must use the dashboard's time range")
                    for m in re.findall(r'r\._measurement == "([^"]+)"', q):
                        check(m in MEASUREMENTS, f"{where}: measurement {m} is not written by the host")

    # The rules may only use the host's metrics (their texts also name histograms).
    for f in (ROOT / "deploy/prometheus/rules").glob("*.yml"):
        for name in set(re.findall(r"\b(rtap_[a-z0-9_]+)", f.read_text())):
            check(name in HOST_METRICS | HISTOGRAMS, f"{f.relative_to(ROOT)}: {name} is not a metric of the host")

    if promql_out:
        rules = [{"record": f"dashboard_expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
        Path(promql_out).write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
        print(f"  {len(exprs)} PromQL expressions written to {promql_out}")


# ---------------------------------------------------------------------------
def dockerignore_excludes(patterns, path):
    """Whether .dockerignore excludes `path` (Go filepath.Match plus `**`)."""
    def rx(p):
        out, i = "", 0
        while i < len(p):
            if p.startswith("**", i):
                out += ".*"
                i += 2
                if p.startswith("/", i):
                    out += "/?"
                    i += 1
            elif p[i] == "*":
                out += "[^/]*"
                i += 1
            elif p[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(p[i])
                i += 1
        return re.compile(out + "$")

    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        r = rx(pat)
        if any(r.match(pre) for pre in prefixes):
            excluded = not neg
    return excluded


def check_docker():
    print("Dockerfile, .dockerignore")
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    rust_version = re.search(r'rust-version\s*=\s*"([\d.]+)"', (ROOT / "Cargo.toml").read_text())
    want = f"rust:{rust_version.group(1)}-bookworm" if rust_version else None
    check(froms[:1] == [want], f"Dockerfile: first stage must be {want}, the workspace's rust-version (found {froms[:1]})")
    check("node:20-bookworm-slim" in froms, "Dockerfile: the dashboard stage must use node:20-bookworm-slim")
    check(froms[-1:] == ["debian:bookworm-slim"], "Dockerfile: the final stage must be debian:bookworm-slim")
    for needle, what in [
        ("libclang-dev", "installs libclang-dev"), ("cmake", "installs cmake"),
        ("rustup target add wasm32-wasip2", "adds the wasm32-wasip2 target"),
        ("bash scripts/build-plugins.sh", "builds the plugins with scripts/build-plugins.sh"),
        ("cargo build --release", "builds the host in release mode"),
        ("-p rtap-host --bin host", "builds the `host` binary of rtap-host"),
        ("npm ci", "installs the dashboard with npm ci"), ("npm run build", "builds the dashboard"),
        ("ca-certificates", "installs ca-certificates"), ("EXPOSE 3000", "exposes 3000"),
        ('ENTRYPOINT ["/app/host"]', 'has ENTRYPOINT ["/app/host"]'),
    ]:
        check(needle in text, f"Dockerfile: {what}")
    check(re.search(r"^HEALTHCHECK .*(\n\s+.*)*?/health", text, re.M) is not None,
          "Dockerfile: HEALTHCHECK must use /health")
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    check(bool(user) and not user[-1].split(":")[0] in ("root", "0"), "Dockerfile: must run as a non-root USER")
    cmd = re.search(r"^CMD\s+(\[.*?\])\s*$", text, re.M | re.S)
    try:
        cmd_args = json.loads(cmd.group(1).replace("\\\n", "")) if cmd else []
    except json.JSONDecodeError:
        cmd_args = []
    for name, want_v in {"--plugins": "/app/plugins", "--listen": "0.0.0.0:3000", "--data-dir": "/data",
                         "--dashboard-dir": "/app/dashboard/dist"}.items():
        check(flag(cmd_args, name) == want_v, f"Dockerfile: CMD must pass {name} {want_v}")
    # The scripts and crates the build needs exist.
    for rel in ("scripts/build-plugins.sh", "Cargo.lock", "dashboard/package-lock.json", "host/Cargo.toml"):
        check((ROOT / rel).is_file(), f"Dockerfile: needs {rel}, which does not exist")

    pats = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    for path in ("target/release/host", "host/target/x", "dashboard/node_modules/vite/package.json",
                 "dashboard/dist/index.html", "plugins/page-views.wasm", "data/state.bin", ".git/HEAD"):
        check(dockerignore_excludes(pats, path), f".dockerignore: should exclude {path}")
    keep = ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "scripts/build-plugins.sh", "scripts/lib.sh",
            "wit/plugin.wit", "sdk/Cargo.toml", "host/Cargo.toml", "host/src/main.rs",
            "dashboard/package.json", "dashboard/package-lock.json", "dashboard/index.html"]
    # Every workspace member (cargo refuses a workspace with a member missing).
    members = tomllib.loads((ROOT / "Cargo.toml").read_text()).get("workspace", {}).get("members", [])
    for m in members:
        keep += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob(f"{m}/Cargo.toml"))]
    keep += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("plugins/*/src/*.rs"))]
    keep += [str(p.relative_to(ROOT)) for p in sorted(ROOT.glob("dashboard/src/*"))][:5]
    for path in keep:
        check(not dockerignore_excludes(pats, path), f".dockerignore: must not exclude {path} (a build input)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--promql-out")
    a = ap.parse_args()
    compose = check_compose()
    check_prometheus(compose)
    check_grafana(a.promql_out)
    check_docker()
    print(f"assets: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
