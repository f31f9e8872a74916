#!/usr/bin/env bash
# System test (SPEC sections 8 and 9): the .deb in a Debian 12 root booted with systemd-nspawn,
# systemd as PID 1, checked from inside by tests/system/checks.sh (READY only after the
# subscription, the broker down at boot under a short watchdog, SIGKILL mid-burst, exit 78,
# journald fields, the env file as systemd reads it, systemd-analyze security, the key group,
# upgrade and purge). Prints one PASS/FAIL line per check and exits non-zero on any FAIL.
#
# Usage: tests/system/run.sh [amd64|arm64] [--deb FILE] [--out DIR] [--keep]
#   amd64|arm64  the root's architecture (default this machine's); a foreign one boots under
#                qemu-user through binfmt_misc, with tests/system/qemu-user.conf as a drop-in
#                turning off what qemu-user cannot do
#   --deb FILE   test this package instead of building one (native: cpack in build-system-ARCH;
#                foreign: scripts/cross.sh ARCH --ci --build build-system-ARCH)
#   --out DIR    results.txt, checks.log, journal.txt, boot.log (default build-system-ARCH/results)
#   --keep       keep the booted root afterwards and print where it is
# debootstrap and systemd-nspawn need root: they run with sudo when this is not run as root.
# The base root (debootstrap --variant=minbase of bookworm with systemd, mosquitto and the
# package's dependencies) is cached as a tar file in ${XDG_CACHE_HOME:-~/.cache}/provision-agent/,
# named by the hash of its package list, and unpacked afresh for every run.
set -euo pipefail
cd "$(dirname "$0")/../.."
source_dir=$PWD
started=$SECONDS

usage() {
  sed -n '8,16s/^# \{0,1\}//p' "$0" >&2
  exit 2
}
native_arch=$(dpkg --print-architecture)
arch=$native_arch deb='' out='' keep=false
while [ $# -gt 0 ]; do
  case $1 in
    amd64 | arm64) arch=$1 ;;
    --deb) deb=$(realpath "$2"); shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --keep) keep=true ;;
    *) usage ;;
  esac
  shift
done
say() { echo "system test $arch: $*"; }
die() {
  say "FAIL: $*" >&2
  exit 1
}
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)

emulated=0
[ "$arch" = "$native_arch" ] || emulated=1
case $arch in
  amd64) qemu='qemu-x86_64' ;;
  arm64) qemu='qemu-aarch64' ;;
esac
build=$source_dir/build-system-$arch
out=${out:-$build/results}
suite=bookworm
# Time limits inside the root are multiplied by this; qemu-user runs everything, systemd and
# journald included, several times slower. Requests in the SIGKILL burst: enough that a good part
# is still waiting at the kill.
scale=1 burst=200
if [ "$emulated" = 1 ]; then scale=4 burst=40; fi

# ---- tools and the package -------------------------------------------------------------------

extra=(debootstrap systemd-container)
[ "$emulated" = 0 ] || extra+=(qemu-user-static)
scripts/deps.sh "${extra[@]}"

if [ -z "$deb" ]; then
  if [ "$emulated" = 0 ]; then
    say "building the package in $build"
    # As Debian builds packages (and tests/integration/package_test.sh): its flags, hardening on
    # (read when the build folder is first configured).
    export DEB_BUILD_MAINT_OPTIONS=hardening=+all
    cppflags=$(dpkg-buildflags --get CPPFLAGS)
    CFLAGS="$(dpkg-buildflags --get CFLAGS) $cppflags"
    CXXFLAGS="$(dpkg-buildflags --get CXXFLAGS) $cppflags"
    LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
    export CFLAGS CXXFLAGS LDFLAGS
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_INSTALL_PREFIX=/usr \
      -DPA_BUILD_TESTS=OFF >/dev/null
    cmake --build "$build" -j"$(nproc)" >/dev/null
    rm -f "$build"/provision-agent_*.deb
    cpack -G DEB --config "$build/CPackConfig.cmake" -B "$build" >"$build/cpack.log" 2>&1
    deb=$(find "$build" -maxdepth 1 -name "provision-agent_*_$arch.deb" | head -n1)
  else
    say "cross-building the package: scripts/cross.sh $arch --ci --build $build"
    mkdir -p "$build"
    scripts/cross.sh "$arch" --ci --build "$build" | tee "$build/cross.log"
    deb=$(tail -n1 "$build/cross.log")
  fi
fi
[ -f "$deb" ] || die "no package: '$deb'"
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] ||
  die "$deb is for $(dpkg-deb -f "$deb" Architecture), not $arch"
built=$SECONDS

# The upgrade: the same package under a higher version.
scratch=$(mktemp -d)
work=''
cleanup() {
  rm -rf "$scratch"
  if [ -n "$work" ] && ! $keep; then "${as_root[@]}" rm -rf --one-file-system "$work"; fi
}
trap cleanup EXIT
version=$(dpkg-deb -f "$deb" Version)
upgrade_version=$version+systemtest1
dpkg-deb -R "$deb" "$scratch/upgrade"
sed -i "s/^Version: .*/Version: $upgrade_version/" "$scratch/upgrade/DEBIAN/control"
upgrade_deb=$scratch/provision-agent_${upgrade_version}_$arch.deb
dpkg-deb --root-owner-group -b "$scratch/upgrade" "$upgrade_deb" >/dev/null

# ---- qemu-user for a foreign root ------------------------------------------------------------

if [ "$emulated" = 1 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    "${as_root[@]}" mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if ! grep -qx enabled "/proc/sys/fs/binfmt_misc/$qemu" 2>/dev/null; then
    "${as_root[@]}" /lib/systemd/systemd-binfmt "/usr/lib/binfmt.d/$qemu.conf"
  fi
  # F: the kernel opened the interpreter at registration, so it runs inside the root too.
  grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/$qemu" ||
    die "$qemu is registered in binfmt_misc without the F flag: $(cat "/proc/sys/fs/binfmt_misc/$qemu")"
fi

# ---- the base root, cached -------------------------------------------------------------------

# systemd, its D-Bus, mosquitto and its clients, openssl and ps for the checks, and whatever the
# package depends on (names only: the root has bookworm's versions).
packages=$( {
  printf '%s\n' systemd systemd-sysv dbus mosquitto mosquitto-clients openssl procps
  dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:.*//; s/[[:space:]]//g'
} | grep . | LC_ALL=C sort -u | paste -sd, -)
# The package list is the cache key, with the suite, the architecture and this preparation.
prepare_version=1
key=$(printf '%s\n' "$suite" "$arch" "$packages" "$prepare_version" | sha256sum | cut -c1-16)
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/provision-agent/system-roots
cached=$cache_dir/$suite-$arch-$key.tar
mkdir -p "$cache_dir"
# The Debian mirror this machine's apt uses.
mirror=${PA_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
  'Created-By: Packages' 2>/dev/null | awk -v s="$suite" '$2 == s { print $1; exit }')}
mirror=${mirror:-http://deb.debian.org/debian}

base_seconds=cached
if [ ! -f "$cached" ]; then
  say "making the base root ($suite $arch from $mirror): $packages"
  base_started=$SECONDS
  base=$("${as_root[@]}" mktemp -d "/var/tmp/provision-agent-base-$arch.XXXXXX")
  if ! "${as_root[@]}" debootstrap --arch="$arch" --variant=minbase --include="$packages" \
    "$suite" "$base/root" "$mirror" >"$scratch/debootstrap.log" 2>&1; then
    tail -n 20 "$scratch/debootstrap.log" >&2
    "${as_root[@]}" rm -rf --one-file-system "$base"
    die "debootstrap failed"
  fi
  # What an installed Debian has and debootstrap leaves out: localhost in /etc/hosts (the
  # agent's default broker). Smaller without the downloaded packages and indexes; the machine id
  # is made at each boot.
  "${as_root[@]}" sh -c "printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    >'$base/root/etc/hosts'; rm -rf '$base/root'/var/cache/apt/archives/*.deb \
    '$base/root'/var/lib/apt/lists/*; : >'$base/root/etc/machine-id'"
  # Written by this user (the redirection), so the cache is the user's to delete.
  "${as_root[@]}" tar -C "$base/root" --numeric-owner --xattrs --xattrs-include='*' -cf - . \
    >"$cached.partial"
  mv "$cached.partial" "$cached"
  "${as_root[@]}" rm -rf --one-file-system "$base"
  printf '%s\n' "$packages" | tr ',' '\n' >"${cached%.tar}.packages"
  # Roots of earlier package lists for this architecture are not needed any more.
  find "$cache_dir" -maxdepth 1 -name "$suite-$arch-*" ! -name "$suite-$arch-$key.*" -delete
  base_seconds=$((SECONDS - base_started))
  say "base root made in $base_seconds s, cached as $cached"
fi

# ---- this run's root -------------------------------------------------------------------------

unpack_started=$SECONDS
work=$("${as_root[@]}" mktemp -d "/var/tmp/provision-agent-system-$arch.XXXXXX")
root=$work/root
"${as_root[@]}" mkdir "$root"
"${as_root[@]}" tar -C "$root" --numeric-owner --xattrs --xattrs-include='*' -xpf - <"$cached"
unpack_seconds=$((SECONDS - unpack_started))

test_dir=$root/root/system-test
test_unit=provision-agent-system-test.service
# The checks' time limits (checks.sh), summed, bound the test unit and the boot.
limits=$(($(sed -n 's/^  [a-z0-9_]*:\([0-9]*\)$/\1/p' tests/system/checks.sh | paste -sd+ -)))
unit_limit=$((limits * scale + 300))
boot_limit=$((unit_limit + 180))
"${as_root[@]}" install -d -m 0700 "$test_dir"
"${as_root[@]}" install -m 0755 tests/system/checks.sh "$test_dir/checks.sh"
"${as_root[@]}" install -m 0644 "$deb" "$test_dir/$(basename "$deb")"
"${as_root[@]}" install -m 0644 "$upgrade_deb" "$test_dir/$(basename "$upgrade_deb")"
dropin=''
if [ "$emulated" = 1 ]; then
  dropin='qemu-user.conf'
  "${as_root[@]}" install -D -m 0644 tests/system/qemu-user.conf \
    "$root/etc/systemd/system/provision-agent.service.d/$dropin"
fi
"${as_root[@]}" tee "$test_dir/params" >/dev/null <<EOF
ARCH=$arch
EMULATED=$emulated
DEB=$(basename "$deb")
UPGRADE_DEB=$(basename "$upgrade_deb")
UPGRADE_VERSION=$upgrade_version
SCALE=$scale
BURST=$burst
EMULATION_DROPIN=$dropin
EOF
# The checks run once the system is up and power it off when done, whatever the outcome.
"${as_root[@]}" tee "$root/etc/systemd/system/$test_unit" >/dev/null <<EOF
[Unit]
Description=provision-agent system test (tests/system/checks.sh)
Wants=mosquitto.service
After=multi-user.target mosquitto.service
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/root/system-test/checks.sh all
TimeoutStartSec=$unit_limit
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
"${as_root[@]}" ln -s "/etc/systemd/system/$test_unit" \
  "$root/etc/systemd/system/multi-user.target.wants/$test_unit"

# ---- boot ------------------------------------------------------------------------------------

mkdir -p "$out"
rm -f "$out"/{results.txt,checks.log,journal.txt,security.txt,boot.log}
say "booting $(basename "$deb") in $root (limit $boot_limit s)"
boot_started=$SECONDS
# Its own network namespace (loopback only): the root's mosquitto on 1883 is its own.
set +e
"${as_root[@]}" timeout --kill-after=30 "$boot_limit" systemd-nspawn --quiet --register=no \
  --keep-unit --private-network --console=read-only --machine="pa-system-$arch" \
  --directory="$root" --boot 2>&1 | tee "$out/boot.log" |
  sed -un 's/^.*\[system-test\] /  /p'
boot_status=${PIPESTATUS[0]}
set -e
boot_seconds=$((SECONDS - boot_started))

for file in results.txt checks.log journal.txt security.txt; do
  if "${as_root[@]}" test -f "$test_dir/out/$file"; then
    "${as_root[@]}" cat "$test_dir/out/$file" >"$out/$file"
  fi
done

# ---- verdict ---------------------------------------------------------------------------------

{
  echo "package: $(basename "$deb")"
  if [ "$base_seconds" = cached ]; then
    echo "base root: cached ($cached), unpacked in $unpack_seconds s"
  else
    echo "base root: made in $base_seconds s ($cached), unpacked in $unpack_seconds s"
  fi
  echo "package built in $((built - started)) s; boot, checks and power-off in $boot_seconds s" \
    "(systemd-nspawn exit $boot_status); total $((SECONDS - started)) s"
} >"$out/summary.txt"
cat "$out/summary.txt"
$keep && say "the root is kept in $root"

[ -s "$out/results.txt" ] || die "no results (see $out/boot.log)"
grep -q '^END ' "$out/results.txt" || die "the checks did not finish (see $out/boot.log)"
passed=$(grep -c '^PASS ' "$out/results.txt" || true)
failed=$(grep -c '^FAIL ' "$out/results.txt" || true)
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
