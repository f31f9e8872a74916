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

# 2. Build the examples (C, and C++ through plugin.hpp) against the installed headers only.
build_example() {  # folder, build folder
  local configure=(-S "$source_dir/examples/$1" -B "$work/$2"
                   -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix")
  if [ -n "$toolchain" ]; then
    # A cross toolchain searches only the target's folders; name the installed header directly.
    configure+=(-DCMAKE_TOOLCHAIN_FILE="$toolchain" -DPROVISION_INCLUDE_DIR="$prefix/include")
    [ -z "$sysroot" ] || configure+=(-DPA_SYSROOT="$sysroot")
  fi
  cmake "${configure[@]}" >"$work/$2-configure.log" 2>&1 ||
    { cat "$work/$2-configure.log"; fail "configure $1"; }
  cmake --build "$work/$2" >"$work/$2.log" 2>&1 || { cat "$work/$2.log"; fail "build $1"; }
}
build_example hello-plugin hello-build
build_example hello-plugin-cpp hello-cpp-build
file -L "$work/hello-build/hello.so" "$work/hello-cpp-build/hello_cpp.so" "$agent" |
  sed 's/, BuildID.*//'
# Only the entry point is exported.
for so in "$work/hello-build/hello.so" "$work/hello-cpp-build/hello_cpp.so"; do
  exports=$(nm -D --defined-only "$so" | awk '$2 == "T" {print $3}')
  [ "$exports" = pa_plugin_describe ] || fail "$so exports: $exports"
done

# 3. A plugin folder with the installed plugins and the example.
plugins=$work/plugins
mkdir -m 0700 "$plugins"
for plugin in keygen revoke; do
  installed=$(find "$root" -name "$plugin.so" | head -n1)
  [ -n "$installed" ] || fail "the install has no $plugin.so"
  install -m 0644 "$installed" "$plugins/"
done
install -m 0644 "$work/hello-build/hello.so" "$work/hello-cpp-build/hello_cpp.so" "$plugins/"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
client_id=pa-hello-test-$$
mkdir -m 0700 "$work/state"
agent_env=(MQTT_HOST=127.0.0.1 MQTT_PORT="$port" MQTT_CLIENT_ID="$client_id"
           PROVISION_PLUGIN_DIR="$plugins" PROVISION_KEYS_DIR="$work/sensor_keys"
           STATE_DIRECTORY="$work/state" PROVISION_PLUGIN_HELLO_GREETING=greetings)
# exec: in "run_agent run &" the PID in $! is then the agent itself, stopped by the trap.
run_agent() { exec env -i PATH=/usr/bin:/bin "${agent_env[@]}" "${emulator[@]}" "$agent" "$@"; }

# 4. `provision-agent plugins` lists it with its action.
listing=$(run_agent plugins 2>&1) || { echo "$listing"; fail "provision-agent plugins failed"; }
echo "$listing"
grep -q 'loaded  hello 1.0.0.*: hello$' <<<"$listing" || fail "the plugin listing does not show hello"
grep -q 'loaded  hello_cpp 1.0.0.*: hello_cpp$' <<<"$listing" ||
  fail "the plugin listing does not show hello_cpp"
grep -q 'option PROVISION_PLUGIN_HELLO_GREETING=greetings' <<<"$listing" ||
  fail "the listing does not show the hello plugin's option"

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
cpp_ok=$(mosquitto_rr -h 127.0.0.1 -p "$port" -q 1 -t provision/cpp-dev/request \
         -e provision/cpp-dev/response -W 60 -m '{"action":"hello_cpp","request_id":"cpp-1"}' 2>&1) || true
echo "response: $cpp_ok"
cpp_refused=$(mosquitto_rr -h 127.0.0.1 -p "$port" -q 1 -t provision/nobody/request \
              -e provision/nobody/response -W 60 -m '{"action":"hello_cpp","request_id":"cpp-2"}' 2>&1) || true
echo "response: $cpp_refused"
kill -TERM "$agent_pid"
wait "$agent_pid" || true
grep -q '"status":"ok"' <<<"$response" || { cat "$work/agent.log"; fail "no ok response"; }
grep -q '"action":"hello"' <<<"$response" || fail "the response is not for action hello"
grep -q 'greetings, hello-dev' "$work/agent.log" ||
  { cat "$work/agent.log"; fail "the plugin did not log"; }
grep -q '"status":"ok"' <<<"$cpp_ok" || { cat "$work/agent.log"; fail "no ok from hello_cpp"; }
grep -q 'hello, cpp-dev' "$work/agent.log" || fail "the C++ plugin did not log"
# The C++ exception became the response's error at the boundary.
grep -q '"code":"invalid_request","message":"nobody is not greeted"' <<<"$cpp_refused" ||
  fail "the C++ plugin's exception is not the response's error"
echo "hello plugins (C and C++): listed and served requests"
