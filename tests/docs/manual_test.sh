#!/bin/sh
# ctest "manual_test": every manual page formats without a warning from man, as lintian checks it
# (manpage-has-errors-from-man), and names itself in its NAME section as lexgrog reads it.
# Usage: manual_test.sh FOLDER (packaging/man)
set -u
failures=0
count=0
for page in "$1"/*.1; do
  count=$((count + 1))
  warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
  if [ -n "$warnings" ]; then
    echo "FAIL: $page: $warnings"
    failures=$((failures + 1))
  fi
  name=$(basename "$page" .1)
  whatis=$(lexgrog "$page" 2>&1)
  case $whatis in
    *": \"$name - "*) ;;
    *)
      echo "FAIL: $page: lexgrog reads $whatis"
      failures=$((failures + 1))
      ;;
  esac
done
[ $count -gt 0 ] || { echo "FAIL: no manual pages in $1"; exit 1; }
[ $failures -eq 0 ] && echo "ok: $count manual pages" && exit 0
exit 1
