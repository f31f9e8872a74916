#!/bin/bash
# The checks of the system test (tests/system/run.sh), run inside a booted Debian 12 root with
# systemd as PID 1 by provision-agent-system-test.service: what only a real systemd shows about
# the packaged service (SPEC sections 8 and 9). Each check runs in a process of its own under a
# time limit and leaves one line in out/results.txt:
#   PASS|FAIL NAME (SECONDS s): what was seen
# then the journal of the boot goes to out/journal.txt and the unit's SuccessAction= powers off.
#
# Usage (inside the root): checks.sh all | checks.sh one NAME
# /root/system-test/params (written by run.sh) gives ARCH, EMULATED (1 under qemu-user), DEB,
# UPGRADE_DEB, UPGRADE_VERSION, SCALE (time limits are multiplied by it), BURST (requests in the
# SIGKILL burst) and EMULATION_DROPIN (the drop-in that turns off what qemu-user cannot do).
set -uo pipefail
dir=/root/system-test
# shellcheck source=/dev/null
. "$dir/params"
out=$dir/out
state=$dir/state
unit=provision-agent.service
env_file=/etc/provision-agent/agent.env
state_dir=/var/lib/provision-agent
keys_dir=$state_dir/sensor_keys
# Drop-ins the checks add for a while live in /run, so a reboot could never keep them.
run_dropins=/run/systemd/system/$unit.d
# systemd's "unit started" journal message (SD_MESSAGE_UNIT_STARTED).
started_message_id=39f53479d3a045ac8e11786248231fbf

# Name and time limit in seconds (multiplied by SCALE), in the order they run.
checks=(
  install:120
  ready_after_subscription:90
  journald_fields:60
  key_group:60
  security:60
  env_file:90
  sigkill_burst:300
  exit_78:90
  broker_down:420
  upgrade:120
  purge:120
)

# ---- helpers for the checks -------------------------------------------------------------------

name=
pass() {
  printf 'PASS %s\n' "$*" >"$state/verdict.$name"
  exit 0
}
fail() {
  printf 'FAIL %s\n' "$*" >"$state/verdict.$name"
  exit 1
}
# What the check is doing, in the log and (for a check that runs out of time) in its result.
step() {
  echo "[$name] $*"
  printf '%s\n' "$*" >"$state/step.$name"
}
prop() { systemctl show -P "$1" "$unit"; }
# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds; SECONDS is multiplied by SCALE.
wait_for() {
  local deadline=$((SECONDS + $1 * SCALE))
  shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}
# Every process a check starts in the background is stopped by its PID when the check ends, and
# every change it made to the system is undone (cleanup commands run in reverse order).
background_pids=()
cleanups=()
on_exit() {
  local pid i
  for pid in "${background_pids[@]}"; do kill "$pid" 2>/dev/null; done
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[$i]}" || true; done
}
trap on_exit EXIT
trap 'exit 124' TERM
# start_monitor FILE TOPIC...: mosquitto_sub -v on the topics into FILE, returning once it is
# subscribed (its own probe message has come back).
start_monitor() {
  local file=$1 topic args=()
  shift
  for topic in "$@"; do args+=(-t "$topic"); done
  : >"$file"
  mosquitto_sub -q 1 -v -t systemtest/probe "${args[@]}" >"$file" 2>"$file.err" &
  background_pids+=($!)
  wait_for 20 probe_came_back "$file" || fail "mosquitto_sub on $* did not subscribe: $(cat "$file.err")"
}
probe_came_back() {
  mosquitto_pub -q 1 -t systemtest/probe -m probe 2>/dev/null
  grep -qx 'systemtest/probe probe' "$1"
}
request() { # DEVICE JSON [TOPIC]: publishes a request, QoS 1
  mosquitto_pub -q 1 -t "provision/$1/${3:-request}" -m "$2"
}
# The first message on TOPIC in a monitor file whose payload holds "request_id":"ID".
response_for() { # FILE DEVICE REQUEST_ID
  grep -F "\"request_id\":\"$3\"" "$1" | grep -m1 "^provision/$2/response "
}
has_response() { [ -n "$(response_for "$@")" ]; }
json_string() { # NAME: the string member NAME of the JSON text on stdin
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n1
}
mode_of() { stat -c '%a %U:%G' "$1" 2>&1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Journal sequence number of an entry, from its export-format cursor (i=<hex>).
seqnum_of_cursor() { printf '%d' "0x$(sed -n 's/.*;i=\([0-9a-f]*\);.*/\1/p' <<<"$1")"; }
agent_running() { [ "$(prop ActiveState)" = active ] && [ "$(prop SubState)" = running ]; }
installed() { [ "$(dpkg-query -W -f='${Status}' provision-agent 2>/dev/null)" = 'install ok installed' ]; }
reload() { systemctl daemon-reload; }
# Puts the service back as installed: test drop-ins gone, broker up, running.
restore_service() {
  rm -rf "$run_dropins"
  reload
  systemctl start mosquitto.service
  systemctl reset-failed "$unit" 2>/dev/null
  systemctl restart "$unit"
}

# ---- the checks ------------------------------------------------------------------------------

# The package installs, creates its user and group, enables and starts the unit, which becomes
# active under Type=notify with the watchdog on.
check_install() {
  step "dpkg -i $DEB"
  local started rc
  started=$(now)
  dpkg -i "$dir/$DEB" >"$state/dpkg-install.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || fail "dpkg -i exit $rc: $(tail -n 4 "$state/dpkg-install.log" | tr '\n' ' ')"
  local took
  took=$(since "$started")
  installed || fail "dpkg-query says: $(dpkg-query -W -f='${Status}' provision-agent 2>&1)"
  dpkg -L provision-agent >"$state/package-files"
  local uid gid
  uid=$(id -u provision-agent) || fail "no user provision-agent"
  gid=$(getent group provision-keys | cut -d: -f3) || fail "no group provision-keys"
  echo "$uid" >"$state/agent-uid"
  step "the unit as systemd shows it"
  [ "$(systemctl is-enabled "$unit")" = enabled ] || fail "unit is $(systemctl is-enabled "$unit")"
  agent_running || fail "after dpkg -i: ActiveState=$(prop ActiveState) SubState=$(prop SubState)" \
    "Result=$(prop Result): $(journalctl -u "$unit" -n 3 --no-pager -o cat | tr '\n' ' ')"
  local type watchdog restarts pid
  type=$(prop Type) watchdog=$(prop WatchdogUSec) restarts=$(prop NRestarts) pid=$(prop MainPID)
  [ "$type" = notify ] || fail "Type=$type"
  [ "$watchdog" = 30s ] || fail "WatchdogUSec=$watchdog"
  [ "$restarts" = 0 ] || fail "NRestarts=$restarts"
  # The process runs as the unit's User= and Group= (real, effective, saved, file system ids).
  local ids
  ids=$(awk '/^Uid:|^Gid:/ { print $1, $2, $3, $4, $5 }' "/proc/$pid/status" | tr '\n' ' ')
  [ "$ids" = "Uid: $uid $uid $uid $uid Gid: $gid $gid $gid $gid " ] ||
    fail "MainPID $pid has $ids, expected uid $uid (provision-agent) and gid $gid (provision-keys)"
  local dropins
  dropins=$(prop DropInPaths)
  if [ "$EMULATED" = 1 ]; then
    [ "$dropins" = "/etc/systemd/system/$unit.d/$EMULATION_DROPIN" ] ||
      fail "expected only the emulation drop-in, DropInPaths=$dropins"
  else
    [ -z "$dropins" ] || fail "drop-ins on a native run: $dropins"
  fi
  pass "dpkg -i exit 0 in $took s, unit enabled and started: ActiveState=active" \
    "SubState=running Type=notify WatchdogUSec=$watchdog NRestarts=0; MainPID $pid runs as" \
    "provision-agent:provision-keys ($uid:$gid)${dropins:+; drop-in $dropins}"
}

# READY=1 comes only once the agent is subscribed: its "subscribed" journal entry comes before
# systemd's "Started" entry of the same invocation, and a request published the moment
# `systemctl start` returns, on a broker session just cleared, is answered.
check_ready_after_subscription() {
  start_monitor "$state/first.mqtt" 'provision/pH01/response' 'keys/pH01/public'
  local client_id
  client_id=$(env -i provision-agent config --env-file "$env_file" |
    sed -n 's/^MQTT_CLIENT_ID=\(.*\) ([a-z-]*)$/\1/p')
  [ -n "$client_id" ] || fail "no MQTT_CLIENT_ID in provision-agent config"
  step "stop, clear the broker session of $client_id, start"
  systemctl stop "$unit" || fail "systemctl stop failed"
  # A clean-session connection with the agent's client id discards its persistent session, so
  # nothing subscribed for the agent before it subscribes again.
  mosquitto_pub -i "$client_id" -q 1 -t systemtest/clear-session -n ||
    fail "could not clear the session of $client_id"
  systemctl start "$unit" || fail "systemctl start failed: $(prop Result)"
  request pH01 '{"request_id":"r1"}'
  local published
  published=$(now)
  step "waiting for the response to r1"
  wait_for 30 has_response "$state/first.mqtt" pH01 r1 ||
    fail "no response to a request published as systemctl start returned (READY before subscribing?)"
  local response took
  took=$(since "$published")
  response=$(response_for "$state/first.mqtt" pH01 r1)
  [ "$(json_string status <<<"$response")" = ok ] || fail "response: $response"
  local fingerprint
  fingerprint=$(json_string fingerprint <<<"$response")
  [ -n "$fingerprint" ] || fail "no fingerprint in: $response"
  echo "$fingerprint" >"$state/fingerprint-pH01"
  step "waiting for the public key"
  wait_for 20 grep -q "^keys/pH01/public .*\"fingerprint\":\"$fingerprint\"" "$state/first.mqtt" ||
    fail "no key with fingerprint $fingerprint on keys/pH01/public"

  step "journal order of this start"
  local pid subscribed started
  pid=$(prop MainPID)
  subscribed=$(journalctl -o export "_SYSTEMD_UNIT=$unit" "_PID=$pid" |
    awk -v RS= '/\nMESSAGE=subscribed to / { print; exit }' | sed -n 's/^__CURSOR=//p')
  # The last "Started" of the unit is this start's.
  started=$(journalctl -o export _PID=1 "MESSAGE_ID=$started_message_id" "UNIT=$unit" |
    sed -n 's/^__CURSOR=//p' | tail -n1)
  [ -n "$subscribed" ] || fail "no 'subscribed to' journal entry of PID $pid"
  [ -n "$started" ] || fail "no 'Started' journal entry of $unit from systemd"
  local subscribed_seq started_seq
  subscribed_seq=$(seqnum_of_cursor "$subscribed") started_seq=$(seqnum_of_cursor "$started")
  [ "$subscribed_seq" -lt "$started_seq" ] ||
    fail "systemd's 'Started' (journal seq $started_seq) came before the agent's 'subscribed'" \
      "(seq $subscribed_seq): READY=1 was sent before the subscription"
  pass "agent's 'subscribed' (journal seq $subscribed_seq) precedes systemd's 'Started' (seq" \
    "$started_seq); r1 published as systemctl start returned, on a cleared session, answered ok" \
    "in $took s, key $fingerprint on keys/pH01/public"
}

# Native journal entries carry the request's fields: journalctl -u provision-agent DEVICE_ID=pH01.
check_journald_fields() {
  start_monitor "$state/journal.mqtt" 'provision/pH02/response'
  step "request r2 for pH02, user alice"
  request pH02 '{"request_id":"r2","user_id":"alice"}'
  wait_for 30 has_response "$state/journal.mqtt" pH02 r2 || fail "no response to r2"
  local entry
  entry=$(journalctl -u "$unit" DEVICE_ID=pH01 -o export |
    awk -v RS= '/\nREQUEST_ID=r1\n/ && /\nACTION=generate_and_publish_key\n/ && /\nOUTCOME=ok\n/ {
      print; exit }')
  [ -n "$entry" ] || fail "journalctl -u $unit DEVICE_ID=pH01 has no entry with REQUEST_ID=r1," \
    "ACTION=generate_and_publish_key, OUTCOME=ok: $(journalctl -u "$unit" DEVICE_ID=pH01 -o export |
      grep -E '^(MESSAGE|REQUEST_ID|ACTION|OUTCOME)=' | tr '\n' ' ')"
  grep -qx '_SYSTEMD_UNIT=provision-agent.service' <<<"$entry" || fail "entry not of the unit: $entry"
  grep -qx 'PRIORITY=6' <<<"$entry" || fail "not PRIORITY=6 (info): $(grep PRIORITY <<<"$entry")"
  local user_entries
  user_entries=$(journalctl -u "$unit" DEVICE_ID=pH02 USER_ID=alice REQUEST_ID=r2 OUTCOME=ok -o cat)
  [ -n "$user_entries" ] || fail "no entry DEVICE_ID=pH02 USER_ID=alice REQUEST_ID=r2 OUTCOME=ok"
  # Secrets and private keys are never logged.
  journalctl -u "$unit" -o export | grep -q 'PRIVATE KEY' && fail "a private key in the journal"
  local fields
  fields=$(grep -E '^(PRIORITY|DEVICE_ID|REQUEST_ID|ACTION|OUTCOME|MESSAGE)=' <<<"$entry" |
    tr '\n' ' ')
  pass "journalctl -u $unit DEVICE_ID=pH01 finds: $fields; DEVICE_ID=pH02 USER_ID=alice" \
    "REQUEST_ID=r2 OUTCOME=ok finds $(wc -l <<<"$user_entries") entr(y/ies); no private key logged"
}

# PROVISION_KEY_GROUP=provision-keys (the package's agent.env): a sensor program's user in the
# group reads its private key; another user cannot, and nobody else reads the state files.
check_key_group() {
  step "users sensor1 (in provision-keys) and other1"
  id sensor1 >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin -G provision-keys sensor1 ||
    fail "useradd sensor1 failed"
  id other1 >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin other1 || fail "useradd other1 failed"
  local private=$keys_dir/pH01/sensor_private.pem public=$keys_dir/pH01/sensor_public.pem
  local expected path seen wrong=()
  step "modes and owners"
  while read -r expected path; do
    seen=$(mode_of "$path")
    [ "$seen" = "${expected/;/ }" ] || wrong+=("$path is $seen, expected ${expected/;/ }")
  done <<EOF
750;provision-agent:provision-keys $state_dir
750;provision-agent:provision-keys $keys_dir
750;provision-agent:provision-keys $keys_dir/pH01
640;provision-agent:provision-keys $private
750;provision-agent:provision-keys $keys_dir/alice
750;provision-agent:provision-keys $keys_dir/alice/pH02
640;provision-agent:provision-keys $keys_dir/alice/pH02/sensor_private.pem
EOF
  seen=$(stat -c '%a' "$public")
  [ "$seen" = 644 ] || wrong+=("$public is $seen, expected 644")
  # The state files themselves (agent key, replay memory, spool, ...) stay 0600.
  while IFS= read -r path; do
    seen=$(stat -c '%a' "$path")
    [ "$seen" = 600 ] || wrong+=("state file $path is $seen, expected 600")
  done < <(find "$state_dir" -maxdepth 1 -type f)
  [ ${#wrong[@]} -eq 0 ] || fail "$(printf '%s; ' "${wrong[@]}")"

  step "sensor1 reads its private key"
  local derived
  derived=$(runuser -u sensor1 -- openssl pkey -in "$private" -pubout 2>&1) ||
    fail "sensor1 (in provision-keys) cannot read $private: $derived"
  [ "$derived" = "$(cat "$public")" ] || fail "the key sensor1 read does not match $public"
  step "what sensor1 and other1 must not do"
  local denied=()
  runuser -u other1 -- cat "$private" >/dev/null 2>&1 && denied+=("other1 read $private")
  runuser -u other1 -- ls "$keys_dir" >/dev/null 2>&1 && denied+=("other1 listed $keys_dir")
  runuser -u other1 -- ls "$state_dir" >/dev/null 2>&1 && denied+=("other1 listed $state_dir")
  runuser -u sensor1 -- cat "$state_dir/agent_private.pem" >/dev/null 2>&1 &&
    denied+=("sensor1 read the agent key")
  runuser -u sensor1 -- touch "$keys_dir/pH01/planted" 2>/dev/null &&
    denied+=("sensor1 wrote into $keys_dir/pH01")
  [ ${#denied[@]} -eq 0 ] || fail "$(printf '%s; ' "${denied[@]}")"
  pass "sensor1 (in provision-keys) read $private (0640 provision-agent:provision-keys, its" \
    "public key matches); other1 could neither read it nor list $keys_dir or $state_dir;" \
    "sensor1 could not read the agent key (0600) nor write into the device folder"
}

# systemd-analyze security: the installed unit file, and the unit systemd has loaded.
check_security() {
  # A copy under another name, so no drop-in for provision-agent.service is counted.
  local copy=$state/security/provision-agent-as-installed.service
  mkdir -p "$(dirname "$copy")"
  cp "/lib/systemd/system/$unit" "$copy"
  step "systemd-analyze security --offline=true (the installed file)"
  local offline online installed_score loaded_score
  offline=$(systemd-analyze security --offline=true --no-pager "$copy" 2>&1)
  installed_score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$offline")
  step "systemd-analyze security $unit (as loaded)"
  online=$(systemd-analyze security --no-pager "$unit" 2>&1)
  loaded_score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$online")
  printf '%s\n' "$online" >"$out/security.txt"
  [ -n "$installed_score" ] || fail "no score for the installed unit: $offline"
  [ -n "$loaded_score" ] || fail "no score for the loaded unit: $online"
  awk -v s="$installed_score" 'BEGIN { exit !(s <= 2.0) }' ||
    fail "the installed unit's exposure is $installed_score, above 2.0:" \
      "$(grep '✗' <<<"$offline" | head -n 8 | tr -s ' ' | tr '\n' ';')"
  # What the kernel shows of the hardening on the running agent: no capabilities, no new
  # privileges, a seccomp filter (mode 2).
  local pid seen
  pid=$(prop MainPID)
  status_of() { sed -n "s/^$1:[[:space:]]*//p" "/proc/$pid/status"; }
  seen="NoNewPrivs $(status_of NoNewPrivs), CapEff $(status_of CapEff), CapBnd $(status_of CapBnd)"
  seen+=", Seccomp $(status_of Seccomp)"
  [ "$(status_of NoNewPrivs)" = 1 ] && [ "$(status_of CapEff)" = 0000000000000000 ] &&
    [ "$(status_of CapBnd)" = 0000000000000000 ] || fail "MainPID $pid has $seen"
  if [ "$EMULATED" = 1 ]; then
    # Under qemu-user the seccomp filters are installed but stop nothing (a service with
    # SystemCallFilter=~chdir still changes directory there): they are proven by a native run.
    pass "installed unit: exposure $installed_score; as loaded here with $EMULATION_DROPIN" \
      "(qemu-user): $loaded_score; MainPID $pid: $seen (seccomp stops nothing under qemu-user)"
  fi
  [ "$(status_of Seccomp)" = 2 ] || fail "MainPID $pid runs without a seccomp filter: $seen"
  awk -v s="$loaded_score" 'BEGIN { exit !(s <= 2.0) }' ||
    fail "the loaded unit's exposure is $loaded_score, above 2.0"
  pass "exposure $installed_score (installed file, offline) and $loaded_score (loaded unit," \
    "online) <= 2.0; MainPID $pid: $seen"
}

# The env file as systemd reads it (the running service's environment) equals what
# `provision-agent config --env-file` reads from it: quotes, escapes, continuations, comments.
check_env_file() {
  cp -p "$env_file" "$state/agent.env.orig"
  cleanups+=("cp -p '$state/agent.env.orig' '$env_file'; systemctl restart '$unit'")
  step "an agent.env with systemd's syntax"
  {
    cat "$state/agent.env.orig"
    cat <<'EOF'

; a comment of the other kind
   # an indented comment
MQTT_CLIENT_ID=system-test\
-agent\ one
LOG_LEVEL='info'
  MQTT_KEYS_TOPIC_BASE  =  keys   
PROVISION_DEVICES="pH*,sensor-*,b*"
PROVISION_KEY_FORMAT="js\
on"
MQTT_PROVISION_TOPIC_BASE="provision"
PROVISION_MAX_SKEW=100
PROVISION_MAX_SKEW="299"
EOF
  } >"$env_file"
  step "restart with it"
  systemctl restart "$unit"
  local pid
  pid=$(prop MainPID)
  agent_running && [ "$pid" != 0 ] ||
    fail "the service did not start with a file systemd read: $(journalctl -u "$unit" -n 2 \
      --no-pager -o cat | tr '\n' ' ')"
  # systemd's reading: the service's environment, limited to the agent's variables (the names
  # `config` lists).
  local names systemd_view config_view config
  names=$(env -i provision-agent config | sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p')
  systemd_view=$(tr '\0' '\n' <"/proc/$pid/environ" | grep -E "^($(paste -sd'|' <<<"$names"))=" |
    LC_ALL=C sort)
  config=$(env -i provision-agent config --env-file "$env_file" 2>&1) ||
    fail "provision-agent config --env-file refused what systemd read: $config | systemd read:" \
      "$(tr '\n' ' ' <<<"$systemd_view")"
  config_view=$(sed -n 's/^\([A-Z_][A-Z0-9_]*=.*\) (env-file)$/\1/p' <<<"$config" | LC_ALL=C sort)
  if [ "$systemd_view" != "$config_view" ]; then
    fail "systemd read: $(tr '\n' ' ' <<<"$systemd_view")| config --env-file read:" \
      "$(tr '\n' ' ' <<<"$config_view")"
  fi
  pass "$(wc -l <<<"$systemd_view") variables read alike by systemd (MainPID $pid's" \
    "environment) and config --env-file: $(tr '\n' ' ' <<<"$systemd_view")"
}

# systemctl kill -s SIGKILL in the middle of a burst: systemd restarts the agent and every request
# of the burst is answered, and every device has a whole key pair.
check_sigkill_burst() {
  start_monitor "$state/burst.mqtt" 'provision/+/response'
  local restarts_before pid_before
  restarts_before=$(prop NRestarts) pid_before=$(prop MainPID)
  step "publishing $BURST requests"
  local i
  (
    for ((i = 1; i <= BURST; i++)); do
      request "$(printf 'b%03d' "$i")" "$(printf '{"request_id":"k%03d"}' "$i")"
    done
  ) &
  local publisher=$!
  background_pids+=("$publisher")
  # Mid-burst: some answered, the rest still to come.
  local threshold=$((BURST / 10 > 0 ? BURST / 10 : 1))
  answered() { grep -c '^provision/b[0-9]*/response .*"request_id":"k[0-9]*"' "$state/burst.mqtt"; }
  enough_answered() { [ "$(answered)" -ge "$threshold" ]; }
  wait_for 120 enough_answered || fail "only $(answered) of $BURST answered before any kill"
  systemctl kill -s SIGKILL "$unit" || fail "systemctl kill failed"
  local at_kill
  at_kill=$(answered)
  step "killed with $at_kill of $BURST answered"
  [ "$at_kill" -lt "$BURST" ] || fail "the burst was over before the kill (raise BURST)"
  restarted() {
    [ "$(prop NRestarts)" -gt "$restarts_before" ] && agent_running &&
      [ "$(prop MainPID)" != "$pid_before" ]
  }
  wait_for 60 restarted || fail "not restarted: NRestarts=$(prop NRestarts)" \
    "ActiveState=$(prop ActiveState) SubState=$(prop SubState)"
  local restarts_after pid_after
  restarts_after=$(prop NRestarts) pid_after=$(prop MainPID)
  wait "$publisher"
  step "waiting for every request to be answered"
  all_answered() {
    local id
    for ((i = 1; i <= BURST; i++)); do
      id=$(printf 'k%03d' "$i")
      grep -q "^provision/b[0-9]*/response .*\"request_id\":\"$id\"" "$state/burst.mqtt" || return 1
    done
  }
  # Until all are answered, or for at most three minutes, or until no answer has come for 30 s
  # (with the agent restarted, one comes at least every key generation).
  local deadline=$((SECONDS + 180 * SCALE)) last_count=-1 last_change=$SECONDS count
  while ! all_answered; do
    count=$(answered)
    if [ "$count" != "$last_count" ]; then last_count=$count last_change=$SECONDS; fi
    [ $((SECONDS - last_change)) -lt $((30 * SCALE)) ] && [ $SECONDS -lt $deadline ] || break
    sleep 1
  done
  if ! all_answered; then
    local missing=()
    for ((i = 1; i <= BURST; i++)); do
      grep -q "\"request_id\":\"$(printf 'k%03d' "$i")\"" "$state/burst.mqtt" ||
        missing+=("$(printf 'k%03d' "$i")")
    done
    fail "restarted (NRestarts $restarts_before -> $restarts_after), but ${#missing[@]} of $BURST" \
      "requests were not answered (none for $((SECONDS - last_change)) s): ${missing[*]:0:20}"
  fi
  step "every answer ok, every device a whole pair"
  local bad
  bad=$(grep '^provision/b[0-9]*/response ' "$state/burst.mqtt" | grep -v '"status":"ok"' | head -n 3)
  [ -z "$bad" ] || fail "answers other than ok: $bad"
  local device broken=()
  for ((i = 1; i <= BURST; i++)); do
    device=$(printf 'b%03d' "$i")
    [ "$(openssl pkey -in "$keys_dir/$device/sensor_private.pem" -pubout 2>&1)" = \
      "$(cat "$keys_dir/$device/sensor_public.pem" 2>&1)" ] || broken+=("$device")
  done
  [ ${#broken[@]} -eq 0 ] || fail "no whole key pair for: ${broken[*]:0:20}"
  pass "SIGKILL with $at_kill of $BURST answered; restarted by systemd (NRestarts" \
    "$restarts_before -> $restarts_after, PID $pid_before -> $pid_after); all $BURST answered ok," \
    "each device has a matching key pair"
}

# A configuration error is exit 78, which RestartPreventExitStatus=78 keeps from restarting.
check_exit_78() {
  cleanups+=("restore_service")
  mkdir -p "$run_dropins"
  printf '[Service]\nEnvironment=MQTT_PORT=not-a-port\n' >"$run_dropins/exit-78.conf"
  reload
  step "restart with MQTT_PORT=not-a-port"
  local since
  since=$(date +%s)
  systemctl restart "$unit" 2>/dev/null && fail "systemctl restart succeeded with MQTT_PORT=not-a-port"
  has_failed() { [ "$(prop ActiveState)" = failed ]; }
  wait_for 30 has_failed ||
    fail "ActiveState=$(prop ActiveState) SubState=$(prop SubState), not failed"
  local status result sub restarts
  status=$(prop ExecMainStatus) result=$(prop Result) sub=$(prop SubState) restarts=$(prop NRestarts)
  [ "$status" = 78 ] || fail "exit status $status, not 78"
  [ "$result" = exit-code ] || fail "Result=$result"
  [ "$sub" = failed ] || fail "SubState=$sub (a restart is scheduled?)"
  local line
  line=$(journalctl -u "$unit" --since "@$since" -o cat --no-pager | grep -m1 'MQTT_PORT')
  [ -n "$line" ] || fail "no journal line names MQTT_PORT: $(journalctl -u "$unit" -n 3 -o cat)"
  # RestartSec=10: a restart would have come by now.
  step "15 s later"
  sleep 15
  [ "$(prop ActiveState)" = failed ] && [ "$(prop NRestarts)" = "$restarts" ] ||
    fail "restarted after exit 78: ActiveState=$(prop ActiveState) NRestarts=$(prop NRestarts)"
  pass "exit status 78, Result=exit-code, SubState=failed, still failed with NRestarts=$restarts" \
    "15 s later (RestartSec=10); journal: $line"
}

# The broker is down at start: READY=1 after the 30 s fallback with STATUS= saying it keeps
# trying, no watchdog kill in two minutes with WatchdogSec=5s, and it serves once the broker
# is up.
check_broker_down() {
  cleanups+=("restore_service")
  mkdir -p "$run_dropins"
  printf '[Service]\nWatchdogSec=5s\n' >"$run_dropins/watchdog.conf"
  reload
  step "stop mosquitto, restart the agent"
  local since
  since=$(date +%s)
  systemctl stop mosquitto.service || fail "cannot stop mosquitto"
  systemctl restart "$unit" ||
    fail "systemctl restart failed with the broker down: Result=$(prop Result)" \
      "$(journalctl -u "$unit" -n 3 -o cat --no-pager | tr '\n' ' ')"
  local exec_start active_enter ready_after
  exec_start=$(prop ExecMainStartTimestampMonotonic)
  active_enter=$(prop ActiveEnterTimestampMonotonic)
  ready_after=$(awk -v a="$exec_start" -v b="$active_enter" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
  agent_running || fail "ActiveState=$(prop ActiveState) SubState=$(prop SubState)"
  local watchdog status_text
  watchdog=$(prop WatchdogUSec) status_text=$(prop StatusText)
  [ "$watchdog" = 5s ] || fail "WatchdogUSec=$watchdog, the drop-in did not apply"
  # READY=1 with the broker down only after the 30 s fallback (not at once, not never).
  awk -v s="$ready_after" 'BEGIN { exit !(s >= 29) }' ||
    fail "READY=1 after $ready_after s with the broker down; the fallback is 30 s"
  grep -qi 'trying' <<<"$status_text" || fail "StatusText does not say it is trying: $status_text"
  local pid restarts
  pid=$(prop MainPID) restarts=$(prop NRestarts)
  step "two minutes with the broker down"
  local deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(prop MainPID)" = "$pid" ] && agent_running ||
      fail "the agent went away with the broker down: MainPID $(prop MainPID), ActiveState" \
        "$(prop ActiveState), Result=$(prop Result), NRestarts=$(prop NRestarts)"
    sleep 2
  done
  [ "$(prop NRestarts)" = "$restarts" ] || fail "NRestarts went from $restarts to $(prop NRestarts)"
  journalctl -u "$unit" --since "@$since" -o cat --no-pager | grep -qi 'watchdog timeout' &&
    fail "a watchdog timeout in the journal"
  local status_later
  status_later=$(prop StatusText)
  step "start mosquitto, request r3"
  systemctl start mosquitto.service || fail "cannot start mosquitto"
  start_monitor "$state/down.mqtt" 'provision/pH03/response'
  local started
  started=$(now)
  request pH03 '{"request_id":"r3"}'
  wait_for 150 has_response "$state/down.mqtt" pH03 r3 ||
    fail "no response to r3 after the broker started; StatusText=$(prop StatusText)"
  local took
  took=$(since "$started")
  [ "$(response_for "$state/down.mqtt" pH03 r3 | json_string status)" = ok ] ||
    fail "r3: $(response_for "$state/down.mqtt" pH03 r3)"
  connected() { ! prop StatusText | grep -qi trying; }
  wait_for 20 connected || fail "StatusText still says trying: $(prop StatusText)"
  pass "READY=1 after $ready_after s with the broker down, StatusText '$status_text';" \
    "WatchdogUSec=5s, same PID $pid and NRestarts=$restarts after 120 s, no watchdog timeout" \
    "(StatusText then '$status_later'); broker started: r3 answered ok in $took s," \
    "StatusText '$(prop StatusText)'"
}

# An upgrade keeps the edited conffile, the keys and the agent key, and restarts the service.
check_upgrade() {
  step "edit agent.env, note the keys"
  printf '\n# edited by the system test\nPROVISION_MAX_SKEW=600\n' >>"$env_file"
  systemctl restart "$unit" || fail "restart after editing agent.env failed"
  local env_sum keys_before pid_before version_before
  env_sum=$(sha256sum <"$env_file")
  keys_before=$(cd "$state_dir" && find . -name '*.pem' -type f -print0 | sort -z |
    xargs -0 sha256sum)
  [ "$(wc -l <<<"$keys_before")" -gt 2 ] || fail "too few keys before the upgrade: $keys_before"
  pid_before=$(prop MainPID)
  version_before=$(dpkg-query -W -f='${Version}' provision-agent)
  step "dpkg -i $UPGRADE_DEB"
  local rc
  dpkg -i "$dir/$UPGRADE_DEB" >"$state/dpkg-upgrade.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || fail "dpkg -i exit $rc: $(tail -n 4 "$state/dpkg-upgrade.log" | tr '\n' ' ')"
  local version
  version=$(dpkg-query -W -f='${Version}' provision-agent)
  [ "$version" = "$UPGRADE_VERSION" ] || fail "version $version after the upgrade"
  [ "$(sha256sum <"$env_file")" = "$env_sum" ] || fail "agent.env changed: $(tail -n 3 "$env_file")"
  local leftovers
  leftovers=$(find /etc/provision-agent -name '*.dpkg-*')
  [ -z "$leftovers" ] || fail "dpkg left $leftovers"
  local keys_after
  keys_after=$(cd "$state_dir" && find . -name '*.pem' -type f -print0 | sort -z |
    xargs -0 sha256sum)
  [ "$keys_after" = "$keys_before" ] || fail "keys changed: $(diff <(echo "$keys_before") \
    <(echo "$keys_after") | head -n 4 | tr '\n' ' ')"
  agent_running || fail "not running after the upgrade: $(prop ActiveState) $(prop SubState)"
  local pid
  pid=$(prop MainPID)
  [ "$pid" != "$pid_before" ] || fail "the service was not restarted by the upgrade"
  tr '\0' '\n' <"/proc/$pid/environ" | grep -qx PROVISION_MAX_SKEW=600 ||
    fail "the restarted agent does not have the edited PROVISION_MAX_SKEW=600"
  step "publish_key for pH01"
  start_monitor "$state/upgrade.mqtt" 'provision/pH01/response'
  request pH01 '{"request_id":"u1","action":"publish_key"}'
  wait_for 30 has_response "$state/upgrade.mqtt" pH01 u1 || fail "no response to publish_key"
  local fingerprint
  fingerprint=$(response_for "$state/upgrade.mqtt" pH01 u1 | json_string fingerprint)
  [ "$fingerprint" = "$(cat "$state/fingerprint-pH01")" ] ||
    fail "pH01's fingerprint is $fingerprint after the upgrade, was $(cat "$state/fingerprint-pH01")"
  pass "$version_before -> $version: edited agent.env kept (PROVISION_MAX_SKEW=600 in the" \
    "restarted agent, PID $pid_before -> $pid), $(wc -l <<<"$keys_after") key files unchanged," \
    "pH01 still $fingerprint"
}

# Purge removes everything the package made: files, configuration, state and keys, the user, the
# group, the unit and its enablement; nothing of the agent runs.
check_purge() {
  local uid
  uid=$(cat "$state/agent-uid")
  step "dpkg --purge"
  local rc
  dpkg --purge provision-agent >"$state/dpkg-purge.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || fail "dpkg --purge exit $rc: $(tail -n 4 "$state/dpkg-purge.log" | tr '\n' ' ')"
  local left=() path
  while IFS= read -r path; do
    [ -d "$path" ] && continue # shared folders such as /usr/bin stay
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
  done <"$state/package-files"
  for path in /etc/provision-agent "$state_dir" /etc/systemd/system/multi-user.target.wants/$unit \
    /var/lib/systemd/deb-systemd-helper-enabled/$unit.dsh-also \
    /var/lib/systemd/deb-systemd-helper-masked/$unit; do
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
  done
  # Only the emulation drop-in of this test may stay in /etc/systemd/system/$unit.d.
  while IFS= read -r path; do
    [ "$path" = "/etc/systemd/system/$unit.d/${EMULATION_DROPIN:-}" ] || left+=("$path")
  done < <(find /etc/systemd/system -path "*$unit*" ! -type d 2>/dev/null)
  getent passwd provision-agent >/dev/null && left+=("user provision-agent")
  getent group provision-keys >/dev/null && left+=("group provision-keys")
  getent group provision-agent >/dev/null && left+=("group provision-agent")
  id -nG sensor1 | grep -qw provision-keys && left+=("sensor1 in provision-keys")
  local processes
  processes=$(ps -o pid=,comm= -u "$uid" 2>/dev/null)
  [ -z "$processes" ] || left+=("processes of uid $uid: $processes")
  local load_state
  load_state=$(prop LoadState)
  [ "$load_state" = not-found ] || left+=("LoadState=$load_state")
  dpkg-query -W provision-agent >/dev/null 2>&1 && left+=("dpkg still lists provision-agent")
  [ ${#left[@]} -eq 0 ] || fail "left after purge: $(printf '%s; ' "${left[@]}")"
  pass "dpkg --purge exit 0: no file of the package, no /etc/provision-agent, no $state_dir," \
    "no user, no group provision-keys (sensor1 out of it), LoadState=not-found, no process of" \
    "uid $uid"
}

# ---- running them ----------------------------------------------------------------------------

run_one() {
  name=$1
  rm -f "$state/verdict.$name" "$state/step.$name"
  if [ "$name" != install ] && ! installed; then fail "not run: provision-agent is not installed"; fi
  "check_$name"
  fail "ended without a verdict"
}

run_all() {
  mkdir -p "$out" "$state"
  : >"$out/results.txt"
  echo "[system-test] $ARCH$([ "$EMULATED" = 1 ] && echo ' under qemu-user'):" \
    "$(systemctl --version | head -n1), $(uname -m), mosquitto $(systemctl is-active mosquitto)"
  local entry name limit started rc verdict line
  for entry in "${checks[@]}"; do
    name=${entry%%:*} limit=$((${entry##*:} * SCALE))
    started=$(now)
    echo "== $name (limit $limit s)" >>"$out/checks.log"
    timeout --kill-after=60 "$limit" "$0" one "$name" >>"$out/checks.log" 2>&1
    rc=$?
    verdict=$(cat "$state/verdict.$name" 2>/dev/null)
    if [ -z "$verdict" ]; then
      if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        verdict="FAIL timed out after $limit s while: $(cat "$state/step.$name" 2>/dev/null)"
      else
        verdict="FAIL exited $rc without a verdict while: $(cat "$state/step.$name" 2>/dev/null)"
      fi
    fi
    line="${verdict%% *} $name ($(since "$started") s): ${verdict#* }"
    echo "$line" >>"$out/results.txt"
    echo "[system-test] $line"
  done
  echo "END ${#checks[@]} checks" >>"$out/results.txt"
  journalctl -b -o short-monotonic --no-pager >"$out/journal.txt" 2>&1
}

case ${1:-} in
  all) run_all ;;
  one) run_one "$2" ;;
  *)
    echo "usage: $0 all | one NAME" >&2
    exit 2
    ;;
esac
