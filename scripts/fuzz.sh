#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (tests/fuzz, libFuzzer with ASan and
# UBSan, Debian's clang 14). Builds the targets in their own folder, runs each over its corpus and
# then for a bounded time, and prints per target the executions, coverage (cov/ft) and corpus size.
# Exits non-zero when any target crashes, leaks, times out or breaks an invariant; the input is
# kept in BUILD/fuzz-artifacts/TARGET/.
#
#   scripts/fuzz.sh --ci          CI: 20 s per target, as many targets at once as there are cores
#   scripts/fuzz.sh [SECONDS]     SECONDS per target (default 600), one libFuzzer worker per core
#                                 (-fork), going on after a finding
#   scripts/fuzz.sh --crashes     replays the open findings in tests/fuzz/TARGET/crashes/
# Options: --build DIR (default build-fuzz), --only TARGET (repeatable; one of tests/fuzz/corpus/).
# New inputs go to BUILD/fuzz-corpus/TARGET/ (kept between long runs), never into the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Every folder of tests/fuzz/corpus/ names a target, fuzz_NAME (tests/fuzz/NAME/).
targets=()
for corpus in tests/fuzz/corpus/*/; do targets+=("$(basename "$corpus")"); done
mode=long
seconds=600
build=build-fuzz
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) mode=ci seconds=20 ;;
    --crashes) mode=crashes ;;
    --build) build=$2 && shift ;;
    --only) only+=("$2") && shift ;;
    -h | --help) sed -n '2,14p' "$0" && exit 0 ;;
    *)
      [[ "$1" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: unknown argument: $1" >&2 && exit 2; }
      seconds=$1
      ;;
  esac
  shift
done
[ ${#only[@]} -eq 0 ] || targets=("${only[@]}")
case "$build" in /*) ;; *) build="$root/$build" ;; esac
cores=$(nproc)

# Inputs longer than this are not tried; the ledger's bounds assume at most 8 KiB
# (ledger_fuzz.cpp). The json target makes its megabyte inputs from short recipes.
max_len() {
  case "$1" in
    identifiers) echo 512 ;;
    pem | ledger | spool | broker_config) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

# clang, its sanitizer and libFuzzer runtimes, and llvm-symbolizer for readable stacks.
scripts/deps.sh clang-14 libclang-rt-14-dev llvm-14
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
  -DCMAKE_CXX_COMPILER=clang++-14 -DPA_FUZZ=ON -DPA_BUILD_TESTS=OFF -DPA_WERROR=ON >/dev/null
nice cmake --build "$build" --target pa_fuzz_all -j"$cores"
echo "built in ${SECONDS} s"

export ASAN_SYMBOLIZER_PATH=/usr/bin/llvm-symbolizer-14
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
# The ledger and spool targets write their state folders here: tmpfs when there is one, so fsync
# is free.
scratch=$(mktemp -d /dev/shm/pa-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch

# Replays one input and prints what went wrong and the first frame in the project's own code
# (-fork's log only says that a worker died).
what_happens() {
  local name=$1 input=$2
  "$build/fuzz/fuzz_$name" "$input" >"$scratch/replay.log" 2>&1 && {
    echo "      does not fail when replayed alone"
    return
  }
  {
    grep -m1 -A1 'INVARIANT BROKEN' "$scratch/replay.log" || true
    grep -m1 -E 'runtime error|ERROR: (Address|Leak)Sanitizer|ERROR: libFuzzer: (timeout|out-of-memory)' \
      "$scratch/replay.log" || true
    grep -m1 -E "^ +#[0-9]+ .* $root/(agent|keystore)/" "$scratch/replay.log" || true
  } | sed 's/^ */      /'
}

if [ "$mode" = crashes ]; then
  failed=0
  for name in "${targets[@]}"; do
    for input in tests/fuzz/"$name"/crashes/*; do
      [ -f "$input" ] || continue
      if "$build/fuzz/fuzz_$name" "$input" >/dev/null 2>&1; then
        echo "fixed:   $input (move it to tests/fuzz/corpus/$name/ and add its unit test)"
      else
        echo "fails:   $input"
        what_happens "$name" "$input"
        failed=1
      fi
    done
  done
  exit $failed
fi

# Seeds that need keys (envelopes sealed to the test key, fresh key pairs), made per run.
rm -rf "$build/fuzz-seeds"
"$build/fuzz/pa_fuzz_seeds" "$build/fuzz-seeds"
logs="$build/fuzz-logs"
rm -rf "$logs"
mkdir -p "$logs"

# One target: its corpus (new inputs first, then the tree's seeds and the generated ones), then
# fuzzing until `seconds` have passed. CI stops at the first finding; a long run forks one
# libFuzzer worker per core and goes on after a finding, so one bug does not hide the next.
run_target() {
  local name=$1
  local work="$build/fuzz-corpus/$name" artifacts="$build/fuzz-artifacts/$name/"
  [ "$mode" = long ] || rm -rf "$work"
  rm -rf "$artifacts"
  mkdir -p "$work" "$artifacts" "$logs/$name"
  local corpora=("$work" "$root/tests/fuzz/corpus/$name")
  [ -d "$build/fuzz-seeds/$name" ] && corpora+=("$build/fuzz-seeds/$name")
  local options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
    -max_len="$(max_len "$name")" -artifact_prefix="$artifacts" -print_funcs=0)
  [ ! -f "tests/fuzz/$name/$name.dict" ] || options+=(-dict="$root/tests/fuzz/$name/$name.dict")
  [ "$mode" = ci ] || options+=(-fork="$cores" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  local status=0
  (cd "$logs/$name" && nice -n 10 "$build/fuzz/fuzz_$name" "${options[@]}" "${corpora[@]}") \
    >"$logs/$name/fuzz.log" 2>&1 || status=$?
  # A finding leaves its input in `artifacts` even where libFuzzer's exit status is 0 (-fork).
  [ -z "$(ls -A "$artifacts")" ] || [ "$status" != 0 ] || status=1
  echo "$status" >"$logs/$name/status"
}

# One line per target: executions, coverage and corpus from libFuzzer's last status line
# ("#N ... cov: C ft: F corp: U[/SIZE] ..."); for a failure, what happened and where the input is.
report() {
  local name=$1 status last execs cov ft corp
  status=$(cat "$logs/$name/status")
  last=$(sed -n 's|^#\([0-9]\+\)[: \t].* cov: \([0-9]\+\) ft: \([0-9]\+\) corp: \([^ ]\+\).*|\1 \2 \3 \4|p' \
    "$logs/$name/fuzz.log" | sort -n | tail -1)
  read -r execs cov ft corp <<<"${last:-- - - -}"
  printf '%-14s %-6s execs %-10s cov %-6s ft %-6s corpus %s\n' "$name" \
    "$([ "$status" = 0 ] && echo ok || echo FAILED)" "$execs" "$cov" "$ft" "$corp"
  [ "$status" = 0 ] && return
  local inputs=("$build/fuzz-artifacts/$name"/*) input
  for input in "${inputs[@]:0:5}"; do
    [ -f "$input" ] || continue
    echo "    input: $input"
    what_happens "$name" "$input"
  done
  [ ${#inputs[@]} -le 5 ] || echo "    ... and $((${#inputs[@]} - 5)) more inputs in the same folder"
  echo "    log: $logs/$name/fuzz.log - reproduce: $build/fuzz/fuzz_$name INPUT"
}


if [ "$mode" = ci ]; then
  # CI: one worker per target, `cores` targets at once.
  for name in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$cores" ]; do wait -n || true; done
    run_target "$name" &
  done
  wait
else
  echo "fuzzing ${#targets[@]} targets for $seconds s each with $cores workers"
  for name in "${targets[@]}"; do run_target "$name"; done
fi

echo "done in ${SECONDS} s (build included)"
failed=0
for name in "${targets[@]}"; do
  report "$name"
  [ "$(cat "$logs/$name/status")" = 0 ] || failed=1
done
exit $failed
