#!/usr/bin/env bash
# The RUSTC_WRAPPER of scripts/fuzz.sh: cargo calls it as `fuzz-rustc.sh
# rustc ARGS…`. It adds libFuzzer's coverage instrumentation (what cargo-fuzz
# adds on nightly, with stable flags: the `sancov-module` LLVM pass and its
# options) and debug assertions to rtap-host and the fuzz targets only.
# Every other crate compiles as the release build compiles it, so cargo
# reuses what the workspace already built (a wrapper is not part of cargo's
# fingerprint); rtap-host is built apart because the fuzz crate turns on
# its `fuzzing` feature, which gives it its own artifact.
rustc=$1
shift
crate=
prev=
for a in "$@"; do
  [ "$prev" = --crate-name ] && crate=$a
  prev=$a
done
case "$crate" in
  rtap_host | decode | state_codec | plugin_returns | api)
    exec "$rustc" "$@" \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      -Cdebug-assertions \
      -Coverflow-checks
    ;;
esac
exec "$rustc" "$@"
