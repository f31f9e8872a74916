#!/usr/bin/env bash
# The agent's main job on a local default: installs what is missing, builds, starts a mosquitto on
# loopback and the agent, sends one provisioning request, shows the key files on disk and the key
# and response on the wire, then stops everything. Usage: scripts/demo.sh [build-folder]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}

scripts/deps.sh
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPA_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target provision-agent keygen revoke

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
broker_pid= agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker_pid=$!
python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); break
    except OSError:
        time.sleep(0.05)
PY

echo "== agent: broker 127.0.0.1:$port, key store $work/sensor_keys"
MQTT_HOST=127.0.0.1 MQTT_PORT=$port MQTT_CLIENT_ID=provision-agent-demo \
  PROVISION_KEYS_DIR="$work/sensor_keys" PROVISION_PLUGIN_DIR="$build/plugins" \
  "$build/provision-agent" &
agent_pid=$!
# The retained online status says the agent is subscribed.
mosquitto_sub -h 127.0.0.1 -p "$port" -t provision/agents/provision-agent-demo/status -C 1 -W 15 >/dev/null

mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -v -t keys/pH01/public -t provision/pH01/response -C 2 -W 20 \
  >"$work/wire.txt" &
sub_pid=$!
sleep 0.5
request='{"device_id":"pH01","action":"generate_and_publish_key","user_id":"5","request_id":"demo-1"}'
echo "== request on provision/pH01/request: $request"
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t provision/pH01/request -m "$request"
wait "$sub_pid"

echo "== on the wire"
cat "$work/wire.txt"
echo "== on disk"
ls -lR "$work/sensor_keys"
openssl pkey -in "$work/sensor_keys/5/pH01/sensor_private.pem" -check -noout
echo "== stopping"
