#!/usr/bin/env bash
# `bash -n` (syntax) on every shell script of the project, the Slurm batch script included,
# and shellcheck at warning level where it is installed (Debian package shellcheck).
#
# usage: check_shell_scripts.sh SOURCE_DIR
set -euo pipefail

source_dir="${1:?usage: $0 SOURCE_DIR}"
cd "$source_dir"
mapfile -t scripts < <(find . \( -name '.git' -o -name 'build*' -o -name runs \) -prune -o \
  -type f \( -name '*.sh' -o -name '*.sbatch' \) -print | sed 's|^\./||' | sort)
[ "${#scripts[@]}" -gt 0 ] || { echo "FAIL: no scripts found under $source_dir"; exit 1; }
grep -qx deploy/slurm/epochal.sbatch < <(printf '%s\n' "${scripts[@]}") ||
  { echo "FAIL: deploy/slurm/epochal.sbatch not found"; exit 1; }

failures=0
for s in "${scripts[@]}"; do
  if ! bash -n "$s"; then
    echo "FAIL: bash -n $s"
    failures=$((failures + 1))
  fi
done
echo "bash -n: ${#scripts[@]} scripts checked"
if command -v shellcheck >/dev/null; then
  if shellcheck -S warning -s bash "${scripts[@]}"; then
    echo "shellcheck -S warning: clean"
  else
    failures=$((failures + 1))
  fi
else
  echo "note: shellcheck not installed; syntax checked with bash -n only"
fi
[ "$failures" = 0 ] || exit 1
echo "PASS: ${scripts[*]}"
