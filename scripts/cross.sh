#!/usr/bin/env bash
# Cross-builds provision-agent for a Raspberry Pi, tests it under qemu-user and packages it
# (SPEC sections 1 and 9). Installs what is missing (cross compiler, qemu-user, the target's -dev
# packages beside the native ones), builds in build-ARCH with packaging/toolchains/, runs the unit
# tests and the integration tests with the agent under qemu against the native mosquitto on
# 127.0.0.1, then `cpack -G DEB`, checks the package and prints its path.
#
# Usage: scripts/cross.sh arm64|armhf [--ci] [--sysroot DIR] [--build DIR]
#   --ci           the quick subset: unit tests and two requests served end to end (a key
#                  request, and the out-of-tree hello plugin), then the package
#   --sysroot DIR  the target's libraries from DIR instead of Debian multiarch packages, e.g. a
#                  Raspberry Pi OS root copied from a Pi; for armhf the tests then run on an
#                  emulated ARM1176 (Pi Zero/1) and the binary must be ARMv6 throughout
#   --build DIR    build folder (default build-ARCH)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

usage() { sed -n '8,14s/^# \{0,1\}//p' "$0" >&2; exit 2; }
arch=${1:-}
shift || true
ci=false sysroot='' build=''
while [ $# -gt 0 ]; do
  case $1 in
    --ci) ci=true ;;
    --sysroot) sysroot=$(realpath "$2"); shift ;;
    --build) build=$2; shift ;;
    *) usage ;;
  esac
  shift
done
case $arch in
  arm64) triplet=aarch64-linux-gnu machine=AArch64 ;;
  armhf) triplet=arm-linux-gnueabihf machine=ARM ;;
  *) usage ;;
esac
build=$(realpath -m "${build:-build-$arch}")
toolchain=$PWD/packaging/toolchains/$triplet.cmake
# libfaketime: the key-age integration tests preload the target's build into the emulated agent.
dev_packages=(libmosquitto-dev libcrypto++-dev libssl-dev libfmt-dev libsystemd-dev libgtest-dev
              libfaketime)
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
say() { echo "cross.sh $arch: $*"; }

# Native tools (CMake, Ninja, mosquitto and its clients, openssl, python3, and the CLI11 and
# RapidJSON headers, which are architecture-independent), the cross compiler and qemu-user.
scripts/deps.sh "g++-$triplet" qemu-user file dpkg-dev
gcc_major=$("$triplet-gcc" -dumpversion)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# The target's -dev packages from Debian multiarch, beside the native ones. apt-get can refuse
# (a foreign index that does not match its Release file, or a native library newer than the
# foreign one: multiarch needs the same version of both); then the machine's apt is left as it
# was and a private root folder is unpacked from the same Debian archive instead.
multiarch_install() {
  local package missing=()
  for package in "${dev_packages[@]}"; do
    installed "$package:$arch" || missing+=("$package:$arch")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local added=false
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    "${as_root[@]}" dpkg --add-architecture "$arch"
    added=true
  fi
  say "installing ${missing[*]}"
  if "${as_root[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; then
    return 0
  fi
  if $added; then
    "${as_root[@]}" dpkg --remove-architecture "$arch" || true
    "${as_root[@]}" apt-get update -qq || true
  fi
  return 1
}

# A root folder holding the target's libraries, headers, start-up files and libgcc, unpacked
# from Debian bookworm's $arch packages with apt-get working on its own state (nothing is
# installed into the machine), and a dpkg database of them for dpkg-shlibdeps.
make_sysroot() {
  local root=$1 state=$build/sysroot-apt
  [ -e "$root/var/lib/dpkg/status" ] && return 0
  say "unpacking the $arch libraries into $root"
  rm -rf "$root" "$state"
  mkdir -p "$state/etc/apt/apt.conf.d" "$state/etc/apt/preferences.d" "$state/var/lib/dpkg" \
    "$state/var/lib/apt/lists/partial" "$state/var/cache/apt/archives/partial"
  : >"$state/var/lib/dpkg/status"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf "deb [signed-by=$keyring] http://deb.debian.org/%s main\n" "debian bookworm" \
    "debian bookworm-updates" "debian-security bookworm-security" >"$state/etc/apt/sources.list"
  local apt=(apt-get -q -o Dir="$state" -o Dir::State::status="$state/var/lib/dpkg/status"
             -o APT::Architecture="$arch" -o APT::Architectures::="$arch" -o Debug::NoLocking=1)
  # A suite whose index is mid-sync is skipped; the packages then come from the others.
  if ! "${apt[@]}" update >"$state/update.log" 2>&1; then
    say "apt-get update reported:"
    grep -E '^(E|W):' "$state/update.log" >&2 || true
  fi
  "${apt[@]}" install -y --download-only --no-install-recommends libc6-dev "libgcc-$gcc_major-dev" \
    "libstdc++-$gcc_major-dev" "${dev_packages[@]}" libcli11-dev rapidjson-dev \
    >"$state/install.log" 2>&1 ||
    { cat "$state/install.log" >&2; exit 1; }

  local db=$root/var/lib/dpkg deb control name
  mkdir -p "$db/info" "$db/updates"
  : >"$db/status"
  echo 1 >"$db/info/format"  # the multiarch layout: info/<package>:<arch>.list
  control=$(mktemp -d)
  for deb in "$state"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$root"
    name=$(dpkg-deb -f "$deb" Package)
    [ "$(dpkg-deb -f "$deb" Multi-Arch)" = same ] && name+=":$(dpkg-deb -f "$deb" Architecture)"
    { dpkg-deb -f "$deb" | sed '1a Status: install ok installed'; echo; } >>"$db/status"
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's|^\./|/|' -e 's|/$||' -e 's|^$|/.|' \
      >"$db/info/$name.list"
    rm -rf "${control:?}"/*
    dpkg-deb -e "$deb" "$control"
    for file in shlibs symbols; do
      [ -f "$control/$file" ] && cp "$control/$file" "$db/info/$name.$file"
    done
  done
  rm -rf "$control"
}

# dpkg-shlibdeps maps a library to its package with dpkg-query --search on the path it found,
# which under a root folder carries the root's prefix: a copy of the root's dpkg database with
# its file lists prefixed that way.
shlibdeps_admindir() {
  local root=$1 admindir=$build/shlibdeps-admindir list
  rm -rf "$admindir"
  mkdir -p "$admindir/info" "$admindir/updates"
  cp "$root/var/lib/dpkg/status" "$admindir/status"
  cp "$root/var/lib/dpkg/info/format" "$admindir/info/" 2>/dev/null ||
    echo 1 >"$admindir/info/format"
  for list in "$root"/var/lib/dpkg/info/*.list; do
    sed "s|^|$root|" "$list" >"$admindir/info/$(basename "$list")"
  done
  cp "$root"/var/lib/dpkg/info/*.shlibs "$root"/var/lib/dpkg/info/*.symbols "$admindir/info/" \
    2>/dev/null || true
  echo "$admindir"
}

# A Raspberry Pi OS root has ARMv6 libraries, start-up files and libgcc: test on the Pi Zero/1's
# core, which faults on ARMv7 code (Debian's armhf is ARMv7).
qemu_cpu=
[ "$arch" = armhf ] && [ -n "$sysroot" ] && qemu_cpu=arm1176
if [ -z "$sysroot" ] && [ -e "$build/sysroot/var/lib/dpkg/status" ]; then
  sysroot=$build/sysroot  # unpacked by an earlier run of this build folder (see below)
elif [ -z "$sysroot" ] && ! multiarch_install; then
  say "Debian's $arch multiarch packages cannot be installed beside the native ones here;" \
      "using a root folder unpacked from the same archive"
  sysroot=$build/sysroot
  mkdir -p "$build"
  make_sysroot "$sysroot"
fi

configure=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPA_WERROR=ON
           -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_TOOLCHAIN_FILE="$toolchain")
[ -z "$sysroot" ] || configure+=(-DPA_SYSROOT="$sysroot")
[ -z "$qemu_cpu" ] || configure+=(-DPA_QEMU_CPU="$qemu_cpu")
cmake "${configure[@]}" >/dev/null
cmake --build "$build" -j2
built=$SECONDS

# Tests: the test executables and the agent run under qemu-user (CMAKE_CROSSCOMPILING_EMULATOR);
# mosquitto, openssl and python3 are the native ones.
ctest --test-dir "$build" -L unit -j2 --timeout 600 --output-on-failure
if $ci; then
  end_to_end='AgentFlowTest\.GeneratesStoresAndPublishesRsaKeyWithUserAndInLegacyLayout'
  ctest --test-dir "$build" --timeout 600 --output-on-failure --no-tests=error \
    -R "^($end_to_end|hello_plugin_test)\$"
else
  ctest --test-dir "$build" -L integration -j2 --timeout 600 --output-on-failure
fi
tested=$SECONDS

# The package, its dependencies computed by dpkg-shlibdeps from the target's libraries.
rm -f "$build"/provision-agent_*.deb
if [ -n "$sysroot" ]; then
  DPKG_ADMINDIR=$(shlibdeps_admindir "$sysroot") \
    cpack --config "$build/CPackConfig.cmake" -B "$build" -G DEB \
    -D CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS="$sysroot/usr/lib/$triplet;$sysroot/lib/$triplet" \
    >"$build/cpack.log"
else
  cpack --config "$build/CPackConfig.cmake" -B "$build" -G DEB >"$build/cpack.log"
fi
deb=$(find "$build" -maxdepth 1 -name "provision-agent_*_$arch.deb" | head -n1)
[ -n "$deb" ] || { cat "$build/cpack.log"; say "no provision-agent_*_$arch.deb"; exit 1; }

fail() { say "FAIL: $*" >&2; exit 1; }
dpkg-deb -f "$deb" Package Version Architecture Depends
[ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "Architecture is not $arch"
# cpack goes on without them when dpkg-shlibdeps fails.
dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>=' ||
  fail "no library dependencies (see $build/cpack.log)"
# Every dependency is a package of the target's release, at a version it has.
target_status=/var/lib/dpkg/status qualifier=":$arch"
[ -z "$sysroot" ] || target_status=$sysroot/var/lib/dpkg/status qualifier=
dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//' | while read -r package relation; do
  [ "$package" = adduser ] && continue
  version=$(dpkg-query --admindir="$(dirname "$target_status")" -W -f='${Version}' \
            "$package$qualifier" 2>/dev/null) ||
    fail "depends on $package, not a $arch package here"
  if [ -n "$relation" ]; then
    read -r operator wanted <<<"$(tr -d '()' <<<"$relation")"
    operator=$(sed 's/>=/ge/; s/<=/le/; s/>>/gt/; s/<</lt/; s/^=$/eq/' <<<"$operator")
    dpkg --compare-versions "$version" "$operator" "$wanted" ||
      fail "depends on $package $relation, the target has $version"
  fi
done

unpacked=$build/deb-contents
rm -rf "$unpacked"
dpkg-deb -x "$deb" "$unpacked"
elves=$(find "$unpacked" -type f -exec sh -c 'head -c4 "$1" | grep -q ELF' sh {} \; -print)
[ "$(wc -w <<<"$elves")" -ge 3 ] || fail "the package holds fewer than the agent and two plugins"
for elf in $elves; do
  echo "${elf#"$unpacked"}: $(file -b "$elf" | cut -d, -f1-2)"
  [ "$(readelf -h "$elf" | sed -n 's/^ *Machine: *//p')" = "$machine" ] ||
    fail "${elf#"$unpacked"} is not $machine code"
done

if [ "$arch" = armhf ]; then
  # The project's own code is ARMv6 with VFP, hard-float (every Pi). What the linker adds from the
  # target's libc and libgcc (crt1.o, crti.o, crtbegin.o, libgcc.a) is what the target root holds:
  # ARMv7 in Debian, ARMv6 in Raspberry Pi OS; readelf -A of the binary shows the highest.
  objects=$(find "$build/agent" "$build/keystore" "$build/plugins" -name '*.o')
  for object in $objects; do
    readelf -A "$object" | grep -q 'Tag_CPU_arch: v6' || fail "$object is not ARMv6 code"
    readelf -A "$object" | grep -q 'Tag_ABI_VFP_args: VFP registers' ||
      fail "$object is not hard-float"
  done
  example=$(head -n1 <<<"$objects")
  echo "project objects: $(wc -w <<<"$objects") ARMv6 hard-float, e.g. $(basename "$example"):"
  readelf -A "$example" | grep -E 'Tag_CPU_arch:|Tag_FP_arch|Tag_ABI_VFP_args'
  echo "packaged /usr/bin/provision-agent:"
  readelf -A "$unpacked/usr/bin/provision-agent" |
    grep -E 'Tag_CPU_arch:|Tag_THUMB_ISA_use|Tag_FP_arch|Tag_ABI_VFP_args'
  if [ -n "$qemu_cpu" ]; then
    readelf -A "$unpacked/usr/bin/provision-agent" | grep -q 'Tag_CPU_arch: v6' ||
      fail "the agent links ARMv7 code from $sysroot: not a Raspberry Pi OS root?"
  else
    say "the start-up files and libraries are Debian's (ARMv7): this package is for ARMv7 and" \
        "later Pis; for the Pi Zero/1 build with --sysroot <Raspberry Pi OS root>"
  fi
fi

say "built in $((built - started)) s, tested in $((tested - built)) s," \
    "packaged and checked in $((SECONDS - tested)) s"
echo "$deb"
