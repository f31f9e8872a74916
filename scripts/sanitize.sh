#!/usr/bin/env bash
# Builds provision-agent with sanitizers (the top CMakeLists' PA_SANITIZE), with clang, in a build
# folder of its own, and runs every unit and integration test under them, but for the two that
# cannot run this build's binaries meaningfully (below):
#   asan  AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer
#   tsan  ThreadSanitizer: the worker pool's and the replay guard's threads in the unit tests, and
#         in every integration test the agent's (network thread, event loop, workers), under
#         bursts, a full queue, reconnects and the drain on SIGTERM
# A finding fails the stage. A test process with a finding fails its test (UBSan does not
# recover; ASan, LeakSanitizer and TSan end it with a non-zero status), and every report of every
# sanitized process, agents the tests start included, lands in <build>/sanitizer-reports: each is
# printed at the end, and any report fails the stage even when no test looked at that agent's
# exit status.
# Usage: scripts/sanitize.sh asan|tsan [build-folder]   (default: build-asan, build-tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

usage() { sed -n 's/^# Usage: /usage: /p' "$0" >&2; exit 2; }
mode=${1:-}
case $mode in
  asan) sanitize=address,undefined ;;
  tsan) sanitize=thread ;;
  *) usage ;;
esac
build=${2:-build-$mode}
say() { echo "sanitize.sh $mode: $*"; }

# Left out, because nothing of this build runs in them under its sanitizers:
# - package_test configures, builds and installs a package of its own from the sources, without
#   PA_SANITIZE (a sanitized package would not be the one shipped); scripts/test.sh runs it.
# (ServiceExit.OneOnAnotherFatalError runs: in a sanitized build it checks its lock case only, as
# a sanitized agent cannot start under its `ulimit -v` case.)
excluded='^package_test$'

# clang: one runtime per sanitizer, so UBSan's reports follow ASan's into the report folder (gcc's
# separate libubsan writes them to stderr only, where an agent's may never be read), and half of
# gcc's compile time. libclang-rt-14-dev holds the runtimes (clang only recommends it).
scripts/deps.sh clang libclang-rt-14-dev
# Debug (-O0): a quarter of RelWithDebInfo's compile time with the instrumentation, and assert()s
# on; the tests spend their time in waits and in prebuilt libraries (Crypto++, mosquitto).
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPA_WERROR=ON \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DPA_SANITIZE="$sanitize" >/dev/null
reports=$build/sanitizer-reports
# Everything the tests use (the benchmarks are small and built too).
cmake --build "$build" -j"$(nproc)"
built=$SECONDS

rm -rf "$reports"
mkdir -p "$reports"
status=0
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300 -E "$excluded" || status=$?
tested=$SECONDS

found=$(find "$reports" -type f | sort)
if [ -n "$found" ]; then
  for report in $found; do
    echo "==== ${report#"$reports"/}"
    cat "$report"
  done
  say "FAIL: $(wc -l <<<"$found") sanitizer report(s), in $reports"
  status=1
fi
say "built in $((built - started)) s, tested in $((tested - built)) s"
[ $status -eq 0 ] && say "no finding"
exit $status
