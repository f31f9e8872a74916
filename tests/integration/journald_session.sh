#!/bin/sh
# Runs provision-agent under a real, private systemd-journald, as systemd runs a service: stderr
# on journald's stream socket and JOURNAL_STREAM naming it. Called by service_test.cpp as
#   unshare [--user --map-root-user] --mount --fork --kill-child=SIGTERM \
#     sh journald_session.sh WORK_DIR AGENT_COMMAND...
# (AGENT_COMMAND: the binary, after the emulator's words in a cross build; --user for a caller
# who is not root, or the whole through `sudo -n env ...` where user namespaces are not allowed)
# so the tmpfs mounted on /run (where journald puts its sockets and the runtime journal) is seen
# by nothing outside. The agent gets this script's environment (broker on 127.0.0.1, key store);
# when PA_AGENT_UID and PA_AGENT_GID are set (under sudo), it runs as that user and group.
#
# Steps: start journald; start the agent; wait (bounded) until WORK_DIR/stop exists; SIGTERM the
# agent and write its exit status to WORK_DIR/agent.exit; export the journal as JSON to
# WORK_DIR/journal.json (everything) and WORK_DIR/device.json (journalctl DEVICE_ID=$PA_DEVICE);
# stop journald. Every process started here is stopped by its PID, also on SIGTERM.
set -u
work=$1
shift
journald_pid=
agent_pid=

stop_pid() {  # SIGTERM, a bounded wait, then SIGKILL
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  i=0
  while kill -0 "$1" 2>/dev/null && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  kill -KILL "$1" 2>/dev/null
  return 0
}
trap 'stop_pid "$agent_pid"; stop_pid "$journald_pid"; exit 1' TERM INT HUP

mount -t tmpfs -o mode=0755 tmpfs /run || { echo "cannot mount a tmpfs on /run" >&2; exit 2; }
mkdir -p /run/systemd/journal
/lib/systemd/systemd-journald >"$work/journald.log" 2>&1 &
journald_pid=$!
i=0
while [ ! -S /run/systemd/journal/stdout ] || [ ! -S /run/systemd/journal/socket ]; do
  if [ $i -ge 100 ]; then
    echo "systemd-journald did not create its sockets" >&2
    stop_pid "$journald_pid"
    exit 2
  fi
  sleep 0.1
  i=$((i + 1))
done

as_user=
if [ -n "${PA_AGENT_UID:-}" ]; then
  as_user="setpriv --reuid=$PA_AGENT_UID --regid=${PA_AGENT_GID:?} --clear-groups"
fi

# systemd-cat connects stdout and stderr to journald's stream socket and execs the command; the
# shell then sets JOURNAL_STREAM to that socket's device:inode, as systemd does for a service,
# and execs the agent, so $! is the agent's PID.
# shellcheck disable=SC2016,SC2086
systemd-cat --identifier=provision-agent $as_user sh -c \
  'export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"; exec "$@" run' sh "$@" &
agent_pid=$!
echo "$agent_pid" >"$work/agent.pid"

i=0
while [ ! -e "$work/stop" ] && [ $i -lt 1200 ] && kill -0 "$agent_pid" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
done
stop_pid "$agent_pid"
wait "$agent_pid"
echo $? >"$work/agent.exit"
agent_pid=

journalctl --sync >/dev/null 2>&1 || sleep 1
journalctl -D /run/log/journal --no-pager -o json >"$work/journal.json" 2>"$work/journalctl.log"
journalctl -D /run/log/journal --no-pager -o json "DEVICE_ID=${PA_DEVICE:-}" \
  >"$work/device.json" 2>>"$work/journalctl.log"
stop_pid "$journald_pid"
wait "$journald_pid" 2>/dev/null
exit 0
