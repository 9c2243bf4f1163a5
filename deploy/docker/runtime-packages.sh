#!/usr/bin/env bash
# Prints, one per line, the Debian packages that provide the shared libraries a binary
# loads (from ldd), so an image's runtime stage installs exactly those and no -dev package.
#
#   bash deploy/docker/runtime-packages.sh build/src/apps/epochal
#
# Fails if a library belongs to no package (a library built here would be missing from the
# runtime image) or if ldd cannot resolve one.
set -euo pipefail

binary="${1:?usage: $0 BINARY}"
[ -x "$binary" ] || { echo "runtime-packages: no executable $binary" >&2; exit 1; }

ldd_out="$(ldd "$binary")"
if grep -q "not found" <<<"$ldd_out"; then
  echo "runtime-packages: unresolved libraries:" >&2
  grep "not found" <<<"$ldd_out" >&2
  exit 1
fi

# Debian 12 merges /lib into /usr/lib, and dpkg knows each file under the path its package
# shipped it: ask for the path as ldd prints it, then with and without the /usr prefix.
owner() {
  local f="$1" p found
  for p in "$f" "/usr$f" "${f#/usr}" "$(readlink -f "$f")"; do
    found="$(dpkg-query -S "$p" 2>/dev/null | head -n 1 | cut -d: -f1 || true)"
    if [ -n "$found" ]; then
      echo "$found"
      return 0
    fi
  done
  return 1
}

packages=()
while read -r lib; do
  [ -n "$lib" ] || continue
  if ! pkg="$(owner "$lib")" || [ -z "$pkg" ]; then
    echo "runtime-packages: $lib belongs to no Debian package" >&2
    exit 1
  fi
  packages+=("$pkg")
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' <<<"$ldd_out")

printf '%s\n' "${packages[@]}" | sort -u
