#!/bin/sh
# ctest "systemd_unit": systemd/provision-agent.service has what SPEC section 8 asks, passes
# `systemd-analyze verify`, and `systemd-analyze security` rates its exposure 2.0 or lower; so do
# provision-agent-keys-due.service and .timer (SPEC section 5: `keys due` daily, shipped disabled),
# the service with the agent's hardening;
# systemd/agent.env lists every configuration variable, its defaults are values the agent
# accepts, and what it sets (the key group) the agent reads. Usage: systemd_unit_test.sh SOURCE_DIR
# AGENT_BINARY
set -u
src=$1
agent=$2
unit=$src/systemd/provision-agent.service
env_file=$src/systemd/agent.env
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# The unit's contract, line by line.
for line in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30' \
  'ExecStart=/usr/bin/provision-agent run' 'EnvironmentFile=-/etc/provision-agent/agent.env' \
  'StateDirectory=provision-agent' 'StateDirectoryMode=0750' 'User=provision-agent' \
  'Group=provision-keys' 'LimitCORE=0' 'Restart=always' 'RestartSec=10' 'RestartPreventExitStatus=78' \
  'After=network-online.target time-sync.target' 'Wants=network-online.target' \
  'WantedBy=multi-user.target' 'ProtectSystem=strict' 'UMask=0077' \
  'SystemCallFilter=@chown'; do
  grep -qxF "$line" "$unit" || fail "$unit lacks the line: $line"
done

# verify needs the ExecStart binary to exist: a copy that runs the build tree's agent.
sed "s|^ExecStart=/usr/bin/provision-agent run\$|ExecStart=$agent run|" "$unit" \
  >"$work/provision-agent.service"
verify=$(systemd-analyze verify "$work/provision-agent.service" 2>&1)
status=$?
if [ $status -ne 0 ] || [ -n "$verify" ]; then
  fail "systemd-analyze verify (exit $status): $verify"
else
  echo "ok: systemd-analyze verify is clean"
fi

# --threshold counts tenths: 20 is an exposure of 2.0.
security=$(systemd-analyze security --offline=true --threshold=20 --no-pager \
  "$work/provision-agent.service" 2>&1)
status=$?
score=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security --offline=true: exposure ${score:-unknown}"
if [ $status -ne 0 ] || [ -z "$score" ]; then
  printf '%s\n' "$security" | grep '✗'
  fail "exposure ${score:-unknown} is above 2.0 (systemd-analyze exit $status)"
fi

# provision-agent-keys-due.timer starts provision-agent-keys-due.service daily (SPEC section 5).
due_service=$src/systemd/provision-agent-keys-due.service
due_timer=$src/systemd/provision-agent-keys-due.timer
for line in 'Type=oneshot' \
  'ExecStart=/usr/bin/provision-agent keys due --env-file /etc/provision-agent/agent.env' \
  'User=provision-agent' 'Group=provision-keys' 'StateDirectory=provision-agent'; do
  grep -qxF "$line" "$due_service" || fail "$due_service lacks the line: $line"
done
# Started by the timer only: nothing to enable.
! grep -q '^\[Install\]' "$due_service" || fail "$due_service has an [Install] section"
for line in 'OnCalendar=daily' 'RandomizedDelaySec=1h' 'Persistent=true' 'WantedBy=timers.target'; do
  grep -qxF "$line" "$due_timer" || fail "$due_timer lacks the line: $line"
done
# The agent unit's hardening, but for what `keys due` does not do: reach the broker, chown keys,
# schedule the key pool's thread at idle priority.
sed -n '/^# Hardening/,/^\[Install\]/p' "$unit" | grep '^[A-Z]' |
  grep -vxF -e 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' -e 'SystemCallFilter=@chown' \
    -e 'SystemCallFilter=sched_setscheduler' \
  >"$work/hardening"
[ -s "$work/hardening" ] || fail "no hardening section found in $unit"
printf 'UMask=0077\nLimitCORE=0\n' >>"$work/hardening"
while IFS= read -r line; do
  grep -qxF -- "$line" "$due_service" || fail "$due_service lacks the agent's hardening: $line"
done <"$work/hardening"
grep -qxF 'RestrictAddressFamilies=AF_UNIX' "$due_service" ||
  fail "$due_service may open network sockets"
sed "s|^ExecStart=/usr/bin/provision-agent keys due |ExecStart=$agent keys due |" "$due_service" \
  >"$work/provision-agent-keys-due.service"
cp "$due_timer" "$work/provision-agent-keys-due.timer"
verify=$(systemd-analyze verify "$work/provision-agent-keys-due.timer" \
  "$work/provision-agent-keys-due.service" 2>&1)
status=$?
if [ $status -ne 0 ] || [ -n "$verify" ]; then
  fail "systemd-analyze verify of the keys-due timer and service (exit $status): $verify"
else
  echo "ok: systemd-analyze verify of the keys-due timer and service is clean"
fi
security=$(systemd-analyze security --offline=true --threshold=20 --no-pager \
  "$work/provision-agent-keys-due.service" 2>&1)
status=$?
score=$(printf '%s\n' "$security" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security --offline=true (keys due): exposure ${score:-unknown}"
[ $status -eq 0 ] && [ -n "$score" ] ||
  fail "keys-due exposure ${score:-unknown} is above 2.0 (systemd-analyze exit $status)"

# agent.env: every variable `provision-agent config` knows, each as a commented default or, for
# what the package sets (PROVISION_KEY_GROUP), as a setting.
env -i PATH="$PATH" "$agent" config >"$work/config.txt" 2>&1 ||
  fail "provision-agent config failed: $(cat "$work/config.txt")"
sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$work/config.txt" | sort >"$work/known"
sed -n 's/^#\{0,1\}\([A-Z_][A-Z0-9_]*\)=.*/\1/p' "$env_file" | sort >"$work/listed.all"
uniq "$work/listed.all" >"$work/listed"
twice=$(uniq -d "$work/listed.all")
[ -z "$twice" ] || fail "agent.env lists more than once: $twice"
[ "$(sed -n 's/^\([A-Z_][A-Z0-9_]*=.*\)/\1/p' "$env_file")" = 'PROVISION_KEY_GROUP=provision-keys' ] ||
  fail "agent.env sets other than PROVISION_KEY_GROUP=provision-keys: $(grep '^[A-Z]' "$env_file")"
[ -s "$work/known" ] || fail "provision-agent config printed no variables"
missing=$(comm -23 "$work/known" "$work/listed")
extra=$(comm -13 "$work/known" "$work/listed")
[ -z "$missing" ] || fail "agent.env does not list: $missing"
[ -z "$extra" ] || fail "agent.env lists unknown variables: $extra"

# Every value shown commented out is the built-in default, and uncommenting them all (beside what
# the file sets) gives a configuration the agent accepts and reads from the file.
sed -n 's/^#\([A-Z_][A-Z0-9_]*=..*\)$/\1/p' "$env_file" >"$work/defaults"
while IFS='=' read -r name value; do
  grep -qxF "$name=$value (default)" "$work/config.txt" ||
    fail "agent.env shows $name=$value, the agent's default is: $(grep "^$name=" "$work/config.txt")"
done <"$work/defaults"
# The agent may check that the key group exists: where the package (which creates provision-keys)
# is not installed, the file is read with this user's own group in its place.
key_group=provision-keys
getent group "$key_group" >/dev/null || key_group=$(id -gn)
{
  cat "$work/defaults"
  sed -n 's/^\([A-Z_][A-Z0-9_]*=.*\)$/\1/p' "$env_file" |
    sed "s/^PROVISION_KEY_GROUP=provision-keys\$/PROVISION_KEY_GROUP=$key_group/"
} >"$work/agent.env"
if env -i PATH="$PATH" "$agent" config --env-file "$work/agent.env" >"$work/defaults.txt" 2>&1
then
  while IFS='=' read -r name value; do
    grep -qxF "$name=$value (env-file)" "$work/defaults.txt" ||
      fail "agent.env's $name=$value was not read from the file: $(grep "^$name=" "$work/defaults.txt")"
  done <"$work/agent.env"
else
  fail "the defaults in agent.env are refused: $(cat "$work/defaults.txt")"
fi

[ $failures -eq 0 ] && echo "ok: unit and agent.env" && exit 0
exit 1
