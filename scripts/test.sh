#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors and runs every test (unit and
# integration against a real mosquitto on 127.0.0.1). Usage: scripts/test.sh [build-folder]
# As a user other than root it needs sudo without a password (sudo -n) for what needs root, as
# apt-get and the package test's dpkg -i do. The same suite under sanitizers:
# scripts/sanitize.sh asan|tsan, which CI runs after this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

scripts/deps.sh
# The broker the tests start is their own; the packaged service is not needed.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPA_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
