#!/usr/bin/env bash
# A third-party plugin as someone outside the project builds it (SPEC section 6): the project is
# installed into a temporary root, examples/hello-plugin is built out of tree against the
# installed <provision/plugin.h>, put beside the installed keygen.so and revoke.so, and the
# installed agent must list it and serve a request with action "hello" through a real mosquitto
# on 127.0.0.1. In a cross build the example is built with the same toolchain and the agent runs
# under the emulator.
# Usage: hello_plugin_test.sh SOURCE_DIR BUILD_DIR WORK_DIR [TOOLCHAIN_FILE SYSROOT [EMULATOR...]]
set -euo pipefail
source_dir=$1 build_dir=$2 work=$3 toolchain=${4:-} sysroot=${5:-}
shift $(($# < 5 ? $# : 5))
emulator=("$@")

fail() { echo "FAIL: $*" >&2; exit 1; }
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

rm -rf "$work"
mkdir -p "$(dirname "$work")"
mkdir -m 0700 "$work"

# 1. Install as a package would (DESTDIR keeps /etc and /lib/systemd inside the temporary root).
root=$work/root
DESTDIR=$root cmake --install "$build_dir" >/dev/null
header=$(find "$root" -path '*/include/provision/plugin.h' | head -n1)
[ -n "$header" ] || fail "the install has no include/provision/plugin.h"
prefix=${header%/include/provision/plugin.h}
agent=$prefix/bin/provision-agent

# 2. Build the example against the installed header only.
configure=(-S "$source_dir/examples/hello-plugin" -B "$work/hello-build"
           -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix")
if [ -n "$toolchain" ]; then
  # A cross toolchain searches only the target's folders; name the installed header directly.
  configure+=(-DCMAKE_TOOLCHAIN_FILE="$toolchain" -DPROVISION_INCLUDE_DIR="$prefix/include")
  [ -z "$sysroot" ] || configure+=(-DPA_SYSROOT="$sysroot")
fi
cmake "${configure[@]}" >"$work/hello-configure.log" 2>&1 ||
  { cat "$work/hello-configure.log"; fail "configure"; }
cmake --build "$work/hello-build" >"$work/hello-build.log" 2>&1 ||
  { cat "$work/hello-build.log"; fail "build"; }
file -L "$work/hello-build/hello.so" "$agent" | sed 's/, BuildID.*//'

# 3. A plugin folder with the installed plugins and the example.
plugins=$work/plugins
mkdir -m 0700 "$plugins"
for plugin in keygen revoke; do
  installed=$(find "$root" -name "$plugin.so" | head -n1)
  [ -n "$installed" ] || fail "the install has no $plugin.so"
  install -m 0644 "$installed" "$plugins/"
done
install -m 0644 "$work/hello-build/hello.so" "$plugins/"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
client_id=pa-hello-test-$$
mkdir -m 0700 "$work/state"
agent_env=(MQTT_HOST=127.0.0.1 MQTT_PORT="$port" MQTT_CLIENT_ID="$client_id"
           PROVISION_PLUGIN_DIR="$plugins" PROVISION_KEYS_DIR="$work/sensor_keys"
           STATE_DIRECTORY="$work/state" HELLO_GREETING=greetings)
# exec: in "run_agent run &" the PID in $! is then the agent itself, stopped by the trap.
run_agent() { exec env -i PATH=/usr/bin:/bin "${agent_env[@]}" "${emulator[@]}" "$agent" "$@"; }

# 4. `provision-agent plugins` lists it with its action.
listing=$(run_agent plugins 2>&1) || { echo "$listing"; fail "provision-agent plugins failed"; }
echo "$listing"
grep -q 'hello' <<<"$listing" || fail "the plugin listing does not show hello"

# 5. A request with action "hello" is answered ok through a real broker.
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$work/mosquitto.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$work/mosquitto.conf" \
  >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  mosquitto_pub -h 127.0.0.1 -p "$port" -t pa-test/ping -m ping 2>/dev/null && break
  sleep 0.1
done

run_agent run >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=("$agent_pid")
status=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t "provision/agents/$client_id/status" -C 1 -W 120 \
         2>&1) || true
grep -q '"online"' <<<"$status" || { cat "$work/agent.log"; fail "the agent never came online"; }

# mosquitto_rr subscribes to the response topic before it publishes the request.
response=$(mosquitto_rr -h 127.0.0.1 -p "$port" -q 1 -t provision/hello-dev/request \
           -e provision/hello-dev/response -W 60 \
           -m '{"action":"hello","request_id":"hello-1"}' 2>&1) || true
echo "response: $response"
kill -TERM "$agent_pid"
wait "$agent_pid" || true
grep -q '"status":"ok"' <<<"$response" || { cat "$work/agent.log"; fail "no ok response"; }
grep -q '"action":"hello"' <<<"$response" || fail "the response is not for action hello"
grep -q 'greetings, hello-dev' "$work/agent.log" ||
  { cat "$work/agent.log"; fail "the plugin did not log"; }
echo "hello plugin: listed and served a request"
