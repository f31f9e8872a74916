#!/usr/bin/env bash
# Installs the Debian packages provision-agent needs to build, run and test, when missing.
# Uses sudo only when not already root (as a Pi user runs it). Extra package names may be passed:
# scripts/cross.sh passes its cross compiler and qemu-user, scripts/sanitize.sh clang and
# libclang-rt-14-dev (the sanitizer runtimes, which clang only recommends).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libmosquitto-dev libcrypto++-dev libssl-dev rapidjson-dev libcli11-dev libfmt-dev libsystemd-dev
  libgtest-dev googletest
  mosquitto mosquitto-clients openssl python3 python3-pycryptodome
  faketime  # libfaketime: the key-age tests move the agent's clock (and openssl's for certificates)
  systemd  # journald, journalctl, systemd-cat, systemd-analyze for the service tests
  lintian adduser file  # the package test and the example plugin test
  man-db  # manual_test formats the manual pages as lintian does (man, lexgrog)
  prometheus prometheus-node-exporter curl  # the metrics tests: promtool, a real textfile collector
  rabbitmq-server  # the RabbitMQ test starts its own node on 127.0.0.1 (SPEC 3.6)
  "$@"
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
    missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing: ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
# Debian starts and enables the system's RabbitMQ service on installation (listening on every
# address); the tests run their own node, so a service this script brought in is stopped again.
if printf '%s\n' "${missing[@]}" | grep -qx rabbitmq-server && [ -d /run/systemd/system ]; then
  "${as_root[@]}" systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
fi
