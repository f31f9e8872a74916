#!/usr/bin/env bash
# The Debian package end to end (SPEC section 9): build it with cpack in a build folder of its own
# configured with -DCMAKE_INSTALL_PREFIX=/usr, lintian it, install it with dpkg -i on this machine,
# check the files, modes, conffile, system user, key group and unit enablement, run the installed
# agent, reinstall it (the upgrade path), remove it, purge it, and check that nothing is left
# behind; then once more with a provision-keys group made by the administrator, which purge keeps.
# Usage: package_test.sh SOURCE_DIR BUILD_DIR. Needs root (dpkg -i), as the CI runs it.
set -euo pipefail

source_dir=$(cd "$1" && pwd)
build_dir=$2
package=provision-agent

fail() {
  echo "package_test: FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

# dpkg -i needs root: another user runs this script again through sudo -n (as scripts/deps.sh
# gets root for apt-get), and gets the build folder back afterwards.
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null ||
    fail "must run as root or with sudo -n (without a password): it installs the package with dpkg -i"
  mkdir -p "$build_dir"
  status=0
  sudo -n "$0" "$source_dir" "$build_dir" || status=$?
  sudo -n chown -R "$(id -u):$(id -g)" "$build_dir"
  exit $status
fi
if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'installed\|config-files'; then
  fail "$package is already installed here; the test installs and purges its own build" \
    "(dpkg --purge $package first)"
fi
getent passwd "$package" >/dev/null && fail "a user $package exists before the install"
getent group provision-keys >/dev/null && fail "a group provision-keys exists before the install"

# Whatever happens below, the machine is left without the package and the group.
purge_on_exit() {
  if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'installed\|config-files'; then
    dpkg --purge "$package" >/dev/null 2>&1 || true
  fi
  if getent group provision-keys >/dev/null; then groupdel provision-keys || true; fi
}
trap purge_on_exit EXIT

version=$(sed -n 's/^project(provision-agent VERSION \([0-9.]*\).*/\1/p' "$source_dir/CMakeLists.txt")
[ -n "$version" ] || fail "no version in $source_dir/CMakeLists.txt"
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
plugin_dir=/usr/lib/$multiarch/provision-agent/plugins

step "build with the Debian build flags (hardening) and cpack -G DEB"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cppflags=$(dpkg-buildflags --get CPPFLAGS)
CFLAGS="$(dpkg-buildflags --get CFLAGS) $cppflags"
CXXFLAGS="$(dpkg-buildflags --get CXXFLAGS) $cppflags"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
export CFLAGS CXXFLAGS LDFLAGS
rm -rf "$build_dir"
mkdir -p "$build_dir"
log=$build_dir/package_build.log
quietly() {  # runs a build step, showing its output only when it fails
  "$@" >>"$log" 2>&1 || {
    tail -n 60 "$log"
    fail "$* failed (whole log: $log)"
  }
}
quietly cmake -S "$source_dir" -B "$build_dir" -G Ninja -DCMAKE_INSTALL_PREFIX=/usr \
  -DCMAKE_BUILD_TYPE=None -DPA_BUILD_TESTS=OFF
quietly cmake --build "$build_dir" -j2
quietly cpack -G DEB --config "$build_dir/CPackConfig.cmake" -B "$build_dir"
deb=$build_dir/${package}_${version}_${arch}.deb
[ -f "$deb" ] || fail "cpack did not make $deb: $(ls "$build_dir"/*.deb 2>/dev/null)"

step "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "$package" ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version)"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = net ] || fail "Section: $(field Section)"
[ "$(field Priority)" = optional ] || fail "Priority: $(field Priority)"
[ -n "$(field Maintainer)" ] || fail "no Maintainer"
for dependency in adduser libc6 libmosquitto1 libcrypto++8 libfmt9 libsystemd0; do
  field Depends | grep -q "\\b$dependency\\b" || fail "Depends lacks $dependency: $(field Depends)"
done

step "lintian"
lintian_output=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
printf '%s\n' "$lintian_output"
if printf '%s\n' "$lintian_output" | grep -q '^E: '; then fail "lintian reports errors"; fi
if printf '%s\n' "$lintian_output" | grep -q 'no-manual-page'; then fail "lintian misses a manual page"; fi

step "dpkg -i"
dpkg -i "$deb"
files=$(dpkg -L "$package")
expect_installed() {  # path mode owner:group
  printf '%s\n' "$files" | grep -qx "$1" || fail "dpkg -L does not list $1"
  local actual
  actual=$(stat -c '%a %U:%G' "$1") || fail "$1 is not there"
  [ "$actual" = "$2 $3" ] || fail "$1 is $actual, expected $2 $3"
}
expect_installed /usr/bin/provision-agent 755 root:root
expect_installed "$plugin_dir/keygen.so" 644 root:root
expect_installed "$plugin_dir/revoke.so" 644 root:root
expect_installed /lib/systemd/system/provision-agent.service 644 root:root
expect_installed /lib/systemd/system/provision-agent-keys-due.service 644 root:root
expect_installed /lib/systemd/system/provision-agent-keys-due.timer 644 root:root
expect_installed /etc/provision-agent/agent.env 600 root:root
expect_installed /usr/include/provision/plugin.h 644 root:root
expect_installed /usr/share/doc/provision-agent/copyright 644 root:root
expect_installed /usr/share/doc/provision-agent/changelog.gz 644 root:root
expect_installed /usr/share/man/man1/provision-agent.1.gz 644 root:root
expect_installed /usr/share/man/man1/provision-agent-check.1.gz 644 root:root
expect_installed /usr/share/bash-completion/completions/provision-agent 644 root:root
dpkg-query -W -f='${Conffiles}\n' "$package" | grep -q '^ /etc/provision-agent/agent.env ' ||
  fail "agent.env is not a conffile"
cmp -s /etc/provision-agent/agent.env "$source_dir/systemd/agent.env" || fail "agent.env differs"

step "system user, key group, state folder, unit enabled"
entry=$(getent passwd "$package") || fail "no user $package"
IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
[ "$uid" -lt 1000 ] || fail "$package is not a system user (uid $uid)"
[ "$home" = /var/lib/provision-agent ] || fail "home is $home"
case "$shell" in */nologin | */false) ;; *) fail "login shell $shell" ;; esac
group_entry=$(getent group provision-keys) || fail "no group provision-keys"
IFS=: read -r _ _ keys_gid _ <<<"$group_entry"
[ "$keys_gid" -lt 1000 ] || fail "provision-keys is not a system group (gid $keys_gid)"
[ "$gid" = "$keys_gid" ] || fail "the primary group of $package is $gid, not provision-keys"
[ "$(stat -c '%a %U:%G' /var/lib/provision-agent)" = "750 $package:provision-keys" ] ||
  fail "/var/lib/provision-agent is $(stat -c '%a %U:%G' /var/lib/provision-agent)"
grep -qx 'PROVISION_KEY_GROUP=provision-keys' /etc/provision-agent/agent.env ||
  fail "agent.env does not set PROVISION_KEY_GROUP=provision-keys"
[ "$(readlink /etc/systemd/system/multi-user.target.wants/provision-agent.service)" = \
  /lib/systemd/system/provision-agent.service ] || fail "the unit is not enabled"
# The daily keys-due check is shipped disabled (the operator enables it).
[ ! -e /etc/systemd/system/timers.target.wants/provision-agent-keys-due.timer ] ||
  fail "the keys-due timer is enabled"

step "the installed agent"
run() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
[ "$(run /usr/bin/provision-agent --version)" = "provision-agent $version" ] ||
  fail "--version says $(run /usr/bin/provision-agent --version)"
config=$(cd /tmp && run provision-agent config --env-file /etc/provision-agent/agent.env) ||
  fail "provision-agent config failed: $config"
printf '%s\n' "$config" | grep -qx "PROVISION_PLUGIN_DIR=$plugin_dir (default)" ||
  fail "the compiled-in plugin folder is not $plugin_dir: $config"
# As the service user, from the installed plugin folder.
plugins=$(cd /tmp && run runuser -u "$package" -- provision-agent plugins) ||
  fail "provision-agent plugins failed: $plugins"
printf '%s\n' "$plugins" | grep -q "^loaded  keygen .*($plugin_dir/keygen.so): generate_and_publish_key" ||
  fail "keygen does not load: $plugins"
printf '%s\n' "$plugins" | grep -q "^loaded  revoke .*($plugin_dir/revoke.so): delete" ||
  fail "revoke does not load: $plugins"
verify=$(run runuser -u "$package" -- env STATE_DIRECTORY=/var/lib/provision-agent \
  provision-agent keys verify) || fail "keys verify as the service user failed: $verify"

step "reinstall (the upgrade path of the maintainer scripts)"
dpkg -i "$deb"
getent passwd "$package" >/dev/null || fail "the user went away on reinstall"

step "dpkg -r keeps the configuration and the user"
dpkg -r "$package"
[ ! -e /usr/bin/provision-agent ] || fail "/usr/bin/provision-agent is left after remove"
[ -f /etc/provision-agent/agent.env ] || fail "remove took the conffile"
getent passwd "$package" >/dev/null || fail "remove took the user"
getent group provision-keys >/dev/null || fail "remove took the group provision-keys"

step "dpkg --purge leaves nothing behind"
dpkg --purge "$package"
while IFS= read -r path; do
  [ -d "$path" ] && continue # shared folders such as /usr/bin stay
  if [ -e "$path" ] || [ -L "$path" ]; then fail "$path is left after purge"; fi
done <<<"$files"
for path in /etc/provision-agent /var/lib/provision-agent "${plugin_dir%/plugins}" \
  /usr/include/provision /usr/share/doc/provision-agent \
  /etc/systemd/system/multi-user.target.wants/provision-agent.service \
  /var/lib/systemd/deb-systemd-helper-enabled/provision-agent.service.dsh-also \
  /var/lib/systemd/deb-systemd-helper-masked/provision-agent.service \
  /var/lib/systemd/deb-systemd-helper-masked/provision-agent-keys-due.timer; do
  if [ -e "$path" ] || [ -L "$path" ]; then fail "$path is left after purge"; fi
done
! getent passwd "$package" >/dev/null || fail "the user $package is left after purge"
! getent group "$package" >/dev/null || fail "a group $package is left after purge"
! getent group provision-keys >/dev/null || fail "the group provision-keys is left after purge"
! dpkg-query -W "$package" >/dev/null 2>&1 || fail "dpkg still knows $package"

step "a provision-keys group made before the install stays after purge"
groupadd --system provision-keys
dpkg -i "$deb" >/dev/null
[ "$(id -gn "$package")" = provision-keys ] || fail "the user's group is $(id -gn "$package")"
dpkg --purge "$package" >/dev/null
getent group provision-keys >/dev/null || fail "purge removed a group the package did not create"
! getent passwd "$package" >/dev/null || fail "the user $package is left after purge"
groupdel provision-keys

echo "package_test: OK ($deb)"
