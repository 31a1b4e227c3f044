#!/usr/bin/env bash
# Build the shipped plugins into plugins/NAME.wasm (where `host --plugins
# ./plugins` looks). With --tests, also build the test plugins (golden,
# hostile, swap versions) into TARGET/rtap-test-plugins and print that folder.
source "$(dirname "$0")/lib.sh"
build_plugins_into "$ROOT/plugins" plugins
if [[ "${1:-}" == "--tests" ]]; then
    out="$(target_dir)/rtap-test-plugins"
    rm -rf "$out"
    build_plugins_into "$out" tests/fixture-plugins plugins
    build_variants_into "$out"
    echo "$out"
fi
