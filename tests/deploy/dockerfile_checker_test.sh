#!/usr/bin/env bash
# The Dockerfile checker must reject what it claims to reject: each mutation of the real
# deploy/docker/Dockerfile below breaks one invariant, and check_dockerfile.sh must fail on it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
checker="$here/tests/deploy/check_dockerfile.sh"
original="$here/deploy/docker/Dockerfile"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/epochal_dockerfile.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

bash "$checker" "$original" >/dev/null || { echo "FAIL: the real Dockerfile does not pass"; exit 1; }

failures=0
expect_rejected() {
  local name="$1" sed_expr="$2"
  local mutant="$scratch/$name.Dockerfile"
  sed -e "$sed_expr" "$original" >"$mutant"
  if cmp -s "$mutant" "$original"; then
    echo "FAIL: mutation '$name' changed nothing (the Dockerfile changed; update this test)"
    failures=$((failures + 1))
  elif bash "$checker" "$mutant" >/dev/null 2>&1; then
    echo "FAIL: the checker accepted mutation '$name'"
    failures=$((failures + 1))
  else
    echo "ok: rejected $name"
  fi
}

expect_rejected not-debian-12 's/^ARG DEBIAN_IMAGE=debian:12$/ARG DEBIAN_IMAGE=ubuntu:22.04/'
expect_rejected latest-tag 's/^ARG DEBIAN_IMAGE=debian:12$/ARG DEBIAN_IMAGE=debian:latest/'
expect_rejected no-bootstrap 's/bash scripts\/bootstrap.sh build/cmake -S . -B build \&\& cmake --build build/'
expect_rejected dev-in-runtime 's/openmpi-bin openssh-client/openmpi-bin libopenmpi-dev openssh-client/'
expect_rejected recommends 's/apt-get install -y --no-install-recommends \\$/apt-get install -y \\/'
expect_rejected apt-lists-kept 's/rm -rf \/var\/lib\/apt\/lists\/\* \/tmp\/runtime-packages.txt/rm -f \/tmp\/runtime-packages.txt/'
expect_rejected runs-as-root 's/^USER mpiuser$/USER root/'
expect_rejected shell-form 's/^ENTRYPOINT \[.*\]$/ENTRYPOINT \/usr\/local\/bin\/epochal/'
expect_rejected context-copy 's/^COPY --from=build \/src\/configs/COPY configs/'
expect_rejected add 's/^COPY --from=build \/runtime-packages.txt/ADD --from=build \/runtime-packages.txt/'
# shellcheck disable=SC2016  # a literal ${DEBIAN_IMAGE} in the Dockerfile
expect_rejected single-stage '/^FROM ${DEBIAN_IMAGE} AS runtime$/d'

[ "$failures" = 0 ] || exit 1
echo "PASS: the Dockerfile checker rejects every mutation"
