#!/usr/bin/env bash
# Validate the deploy assets without Docker:
#   - Prometheus: the rules and the config parse (promtool check), and the
#     alert rules' unit tests pass (promtool test rules);
#   - docker-compose.yml, the Dockerfile, .dockerignore, the Prometheus scrape
#     target and the Grafana provisioning and dashboards (deploy/check_assets.py);
#   - the dashboards' PromQL parses (promtool check rules on it);
#   - `docker compose config -q`, where a Compose v2 CLI is installed.
# Installs promtool (Debian's `prometheus` package) and PyYAML when missing.
# Exits non-zero if any check failed, naming it.
#
#   bash deploy/check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ -t 1 ]]; then bold=$'\033[1;34m' red=$'\033[1;31m' off=$'\033[0m'; else bold='' red='' off=''; fi
log() { printf '%s==>%s %s\n' "$bold" "$off" "$*"; }

# run NAME COMMAND...: run one check, indent its output, record the result.
run() {
    local name=$1
    shift
    log "$name"
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    [[ -n "$out" ]] && printf '%s\n' "$out" | sed 's/^/    /'
    if ((rc == 0)); then
        passed=$((passed + 1))
    else
        failed+=("$name")
        printf '    %sFAILED%s: %s (exit %d)\n' "$red" "$off" "$name" "$rc"
    fi
}

as_root() { [[ $(id -u) == 0 ]]; }

ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    if as_root && command -v apt-get >/dev/null 2>&1; then
        log "installing promtool (Debian package prometheus)"
        # RUNLEVEL=1: install the package without starting its daemon.
        apt-get update -qq >/dev/null &&
            RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
    command -v promtool >/dev/null 2>&1
}

ensure_pyyaml() {
    python3 -c 'import yaml' 2>/dev/null && return 0
    log "installing PyYAML"
    python3 -m pip install --quiet pyyaml >/dev/null 2>&1 ||
        { as_root && command -v apt-get >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null; }
    python3 -c 'import yaml' 2>/dev/null
}

# --- tools ----------------------------------------------------------------------
have_promtool=1
if ! ensure_promtool; then
    have_promtool=0
    failed+=("promtool is missing (install Debian's prometheus package)")
    echo "promtool is missing and could not be installed" >&2
fi
have_yaml=1
if ! ensure_pyyaml; then
    have_yaml=0
    failed+=("PyYAML is missing (pip install pyyaml)")
    echo "PyYAML is missing and could not be installed" >&2
fi
((have_promtool)) && log "$(promtool --version 2>&1 | head -n 1)"

# --- Prometheus -------------------------------------------------------------------
if ((have_promtool)); then
    run "promtool check rules deploy/prometheus/rules/*.yml" \
        promtool check rules deploy/prometheus/rules/*.yml
    run "promtool check config deploy/prometheus/prometheus.yml" \
        promtool check config deploy/prometheus/prometheus.yml
    run "promtool test rules deploy/prometheus/tests/*.test.yml" \
        promtool test rules deploy/prometheus/tests/*.test.yml
fi

# --- Compose, Dockerfile, Grafana -------------------------------------------------
if ((have_yaml)); then
    run "deploy/check_assets.py: compose, Dockerfile, .dockerignore, Prometheus target, Grafana" \
        python3 deploy/check_assets.py --promql-out "$tmp/dashboard-promql.yml"
    if ((have_promtool)) && [[ -s "$tmp/dashboard-promql.yml" ]]; then
        run "promtool check rules: the dashboards' PromQL parses" \
            promtool check rules "$tmp/dashboard-promql.yml"
    fi
fi

# --- docker compose config (optional) ------------------------------------------------
compose=()
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 &&
    docker-compose version --short 2>/dev/null | grep -Eq '^v?[2-9]'; then
    compose=(docker-compose)
fi
if ((${#compose[@]})); then
    log "${compose[*]} config -q"
    if out=$("${compose[@]}" -f docker-compose.yml config -q 2>&1); then
        passed=$((passed + 1))
    elif grep -qiE 'cannot connect to the docker daemon|docker daemon is not running|error during connect' <<<"$out"; then
        printf '    skipped: no Docker engine here\n%s\n' "$out" | sed '2,$s/^/    /'
    else
        printf '%s\n' "$out" | sed 's/^/    /'
        failed+=("${compose[*]} config -q")
    fi
else
    log "docker compose config: skipped (no Docker Compose v2 CLI here)"
fi

# --- summary -------------------------------------------------------------------------
echo
if ((${#failed[@]})); then
    echo "failed checks:"
    printf '  - %s\n' "${failed[@]}"
fi
echo "deploy-check: ${passed} passed, ${#failed[@]} failed"
((${#failed[@]} == 0))
