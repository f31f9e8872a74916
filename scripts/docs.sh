#!/usr/bin/env bash
# The documentation generated from the agent's configuration and command tables
# (`provision-agent docs list` names it): systemd/agent.env, README.md's tables between their
# <!-- name --> and <!-- /name --> markers, packaging/man/*.1 and
# packaging/bash-completion/provision-agent. Without --check it rewrites them in the source tree;
# with --check (the ctest docs_test) it changes nothing and fails, showing the difference, when a
# committed file is not what the agent generates.
# Usage: scripts/docs.sh [--check] [COMMAND...]
#   COMMAND runs the agent: build/provision-agent by default; a cross build passes its emulator
#   first (qemu-aarch64 -L /usr/aarch64-linux-gnu build-arm64/provision-agent).
set -euo pipefail

check=false
if [ "${1:-}" = --check ]; then
  check=true
  shift
fi
source_dir=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -gt 0 ]; then agent=("$@"); else agent=("$source_dir/build/provision-agent"); fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "docs: $*" >&2
  exit 1
}

# The expected tree: every generated file, README.md with its parts replaced.
list=$("${agent[@]}" docs list) || fail "${agent[*]} docs list failed"
expected=$work/expected
mkdir -p "$expected"
declare -A written=()
while read -r kind argument path; do
  [ "$argument" = - ] && argument=
  "${agent[@]}" docs "$kind" $argument >"$work/part" ||
    fail "${agent[*]} docs $kind $argument failed"
  mkdir -p "$(dirname "$expected/$path")"
  case $kind in
    config-table | commands-table)
      [ -n "${written[$path]:-}" ] || cp "$source_dir/$path" "$expected/$path"
      awk -v start="<!-- $kind -->" -v end="<!-- /$kind -->" -v part="$work/part" '
        $0 == start { print; while ((getline line < part) > 0) print line; skip = 1; found++; next }
        $0 == end { skip = 0; ended++ }
        !skip { print }
        END { if (found != 1 || ended != 1) exit 3 }' "$expected/$path" >"$work/spliced" ||
        fail "$path needs exactly one '<!-- $kind -->' ... '<!-- /$kind -->' pair of lines"
      mv "$work/spliced" "$expected/$path"
      ;;
    *) mv "$work/part" "$expected/$path" ;;
  esac
  written[$path]=1
done <<<"$list"

# Manual pages of subcommands that are gone.
stale=()
for page in "$source_dir"/packaging/man/*.1; do
  [ -e "$page" ] || continue
  [ -n "${written[packaging/man/$(basename "$page")]:-}" ] || stale+=("packaging/man/$(basename "$page")")
done

if $check; then
  status=0
  for path in "${!written[@]}"; do
    if ! diff -u "$source_dir/$path" "$expected/$path" >"$work/diff" 2>&1; then
      echo "docs: $path is not what the agent generates; run scripts/docs.sh:"
      cat "$work/diff"
      status=1
    fi
  done
  for path in "${stale[@]}"; do
    echo "docs: $path belongs to no subcommand; run scripts/docs.sh"
    status=1
  done
  [ $status -eq 0 ] && echo "docs: ${#written[@]} generated files are up to date"
  exit $status
fi

for path in "${!written[@]}"; do
  mkdir -p "$(dirname "$source_dir/$path")"
  if ! cmp -s "$expected/$path" "$source_dir/$path"; then
    cp "$expected/$path" "$source_dir/$path"
    echo "docs: wrote $path"
  fi
done
for path in "${stale[@]}"; do
  rm "$source_dir/$path"
  echo "docs: removed $path"
done
