#!/usr/bin/env bash
# ctest "completion_test": the bash completion installed with the package
# (packaging/bash-completion/provision-agent) completes what an operator types.
# Usage: completion_test.sh COMPLETION_FILE
set -u
# shellcheck source=/dev/null
source "$1" || exit 1
failures=0
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
touch "$work/agent.env" "$work/agent.pem"

# expect "WORDS OF THE LINE" "EXPECTED COMPLETIONS": the last word is the one being completed.
expect() {
  local line=$1 wanted=$2 got
  read -r -a COMP_WORDS <<<"$line"
  [[ $line == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
  COMPREPLY=()
  _provision_agent
  got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
  got=${got% }
  if [ "$got" != "$wanted" ]; then
    echo "FAIL: '$line' completes to '$got', expected '$wanted'"
    failures=$((failures + 1))
  fi
}

expect "provision-agent " "audit check config keys plugins run send"
expect "provision-agent ke" "keys"
expect "provision-agent keys " "due list show verify"
expect "provision-agent audit " "verify"
expect "provision-agent keys show --u" "--user"
expect "provision-agent --mqtt-protocol " "3.1.1 5"
expect "provision-agent --log-level w" "warning"
expect "provision-agent send --mode " "EAX GCM"
expect "provision-agent check --mqtt-use-tls " "false true"
expect "provision-agent --mqtt-host broker.local keys " "due list show verify"
expect "provision-agent send --wait 5 --mqtt-po" "--mqtt-port"
expect "provision-agent --env-file $work/agent.e" "$work/agent.env"
expect "provision-agent send --encrypt $work/agent.p" "$work/agent.pem"
expect "provision-agent --mqtt-user " ""
expect "provision-agent --ver" "--version"

[ $failures -eq 0 ] && echo "ok: bash completion" && exit 0
exit 1
