#!/usr/bin/env bash
# Benchmarks (SPEC section 10): builds a RelWithDebInfo tree and prints every figure.
#
#   bench/run.sh [build-folder]          default build-bench; e.g. bench/run.sh | tee bench.txt
#
# Installs what is missing (scripts/deps.sh), builds the agent, every bundled plugin and pa_bench
# with at most 2 parallel jobs (PA_BENCH_JOBS overrides), then runs the modes of pa_bench:
# decrypt, keygen (against openssl genpkey), agent (a real mosquitto and the built agent on
# 127.0.0.1), spool (the agent with and without its intake spool, its state on disk and on
# tmpfs) and speed (the key pool warm and off, key store size, bursts). When an armhf build of the
# agent and plugins exists in build-armhf (scripts/cross.sh armhf makes one; PA_BENCH_ARM_BUILD
# names another folder), speed also runs it under qemu-arm and reports the ratios. With
# PA_BENCH_FLEET=1 also fleet (200 agent processes through a broker restart, and two agents on one
# client id; about 5 minutes). Figures depend on the machine and on whatever else runs on it: the
# load average is printed before and after each mode, and figures taken while it is high are not
# comparable.
# The agent's key store lives under $TMPDIR (default /tmp): TMPDIR=/dev/shm bench/run.sh puts it
# on tmpfs, which takes the disk's fsync latency out of the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-bench}
jobs=${PA_BENCH_JOBS:-2}

scripts/deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPA_BUILD_TESTS=ON >/dev/null
plugins=()
for folder in plugins/*/; do plugins+=("$(basename "$folder")"); done  # one MODULE per folder
cmake --build "$build" -j"$jobs" --target provision-agent "${plugins[@]}" pa_bench

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
  "$(uname -sm); tree $(git describe --always --dirty 2>/dev/null || echo '?'); $build"
echo "== uptime before: $(uptime)"
"$build/bench/pa_bench" decrypt
"$build/bench/pa_bench" keygen
"$build/bench/pa_bench" agent --agent "$build/provision-agent" --plugins "$build/plugins"
# The spool's cost on disk (/var/tmp, never tmpfs on Debian) and on tmpfs (/dev/shm).
"$build/bench/pa_bench" spool --agent "$build/provision-agent" --plugins "$build/plugins"
arm_build=${PA_BENCH_ARM_BUILD:-build-armhf}
arm=()
if [ -x "$arm_build/provision-agent" ] && [ -d "$arm_build/plugins" ]; then
  arm=(--arm-agent "$arm_build/provision-agent" --arm-plugins "$arm_build/plugins")
fi
"$build/bench/pa_bench" speed --agent "$build/provision-agent" --plugins "$build/plugins" "${arm[@]}"
# The simulated fleet (SPEC 3.6): 200 agent processes, several minutes; PA_BENCH_FLEET=1 runs it.
if [ "${PA_BENCH_FLEET:-0}" = 1 ]; then
  "$build/bench/pa_bench" fleet --agent "$build/provision-agent" --plugins "$build/plugins"
fi
echo "== uptime after: $(uptime)"
