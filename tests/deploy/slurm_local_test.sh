#!/usr/bin/env bash
# deploy/slurm/epochal.sbatch on a real single-node Slurm (scripts/slurm-local.sh): a 2-rank
# short job must complete with replicas that agree and write endpoints.env into its run dir.
#
# Opt-in, since it installs nothing but starts daemons (munged, slurmctld, slurmd) and edits
# /etc/hosts: runs only with EPOCHAL_TEST_SLURM=1, as root, with Debian's slurm-wlm and munge
# installed (apt-get install -y slurm-wlm munge); otherwise exits 77 saying why. Stops the
# daemons it started.
#
# usage: slurm_local_test.sh SOURCE_DIR EPOCHAL_BINARY
set -euo pipefail

source_dir="${1:?usage: $0 SOURCE_DIR EPOCHAL_BINARY}"
binary="${2:?usage: $0 SOURCE_DIR EPOCHAL_BINARY}"
skip() {
  echo "SKIP: $*"
  exit 77
}
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ "${EPOCHAL_TEST_SLURM:-0}" = 1 ] || skip "set EPOCHAL_TEST_SLURM=1 to start a local Slurm and run the batch script"
[ "$(id -u)" -eq 0 ] || skip "a local Slurm needs root"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  skip "slurm-wlm and munge are not installed (apt-get install -y slurm-wlm munge)"
fi

export SLURM_LOCAL_DIR
SLURM_LOCAL_DIR="$(mktemp -d "${TMPDIR:-/tmp}/epochal_slurm.XXXXXX")"
work="$SLURM_LOCAL_DIR/work"
mkdir -p "$work"
started=0
cleanup() {
  if [ "$started" = 1 ]; then
    if [ -n "${job:-}" ]; then scancel "$job" 2>/dev/null || true; fi
    bash "$source_dir/scripts/slurm-local.sh" stop || true
  fi
  if [ "${KEEP_DIR:-0}" = 1 ]; then echo "kept $SLURM_LOCAL_DIR"; else rm -rf "$SLURM_LOCAL_DIR"; fi
}
trap cleanup EXIT

started=1
bash "$source_dir/scripts/slurm-local.sh" start
export SLURM_CONF="$SLURM_LOCAL_DIR/slurm.conf"

# 2 ranks x 1 CPU, a short workload passed as arguments to `epochal train`.
cd "$work"
# sbatch passes this environment on to the job (--export=ALL is its default).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export EPOCHAL_BIN="$binary" EPOCHAL_RUN_DIR="$work/run"
export EPOCHAL_CONFIG="$source_dir/configs/fashion_mnist_minivggnet.textproto"
job="$(sbatch --parsable --ntasks=2 --cpus-per-task=1 --time=00:10:00 \
  "$source_dir/deploy/slurm/epochal.sbatch" \
  --epochs 2 --batch-size 16 --limit-train 256 --limit-val 200 --no-scan)"
echo "submitted job $job"

state=""
for _ in $(seq 1 480); do
  state="$(sacct -n -X -j "$job" -o State 2>/dev/null | tr -d ' ' | head -n 1 || true)"
  [ -n "$state" ] || state="$(scontrol show job "$job" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
  case "$state" in
    COMPLETED | FAILED | CANCELLED* | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE) break ;;
  esac
  sleep 0.5
done
echo "job $job: ${state:-unknown}"
tail -n 30 "$work/epochal-$job.out" 2>/dev/null || true
[ "$state" = COMPLETED ] || fail "job $job ended as '${state:-still running after 240 s}'"

[ -f "$work/run/endpoints.env" ] || fail "no endpoints.env in the run dir"
grep -q "EPOCHAL_RANKS=2" "$work/run/endpoints.env" || fail "endpoints.env does not say 2 ranks"
[ -f "$work/run/history.json" ] || fail "no history.json"
hashes="$(tr -d ' \n' <"$work/run/history.json" | grep -o '"replica_hashes":\[[^]]*\]')"
[ "$(wc -l <<<"$hashes")" = 2 ] || fail "expected 2 epochs of replica hashes: $hashes"
while read -r line; do
  [ "$(grep -o '"[0-9a-f]\{16\}"' <<<"$line" | wc -l)" = 2 ] || fail "not 2 hashes: $line"
  [ "$(grep -o '"[0-9a-f]\{16\}"' <<<"$line" | sort -u | wc -l)" = 1 ] || fail "replicas differ: $line"
done <<<"$hashes"
cat "$work/run/endpoints.env"
echo "PASS: epochal.sbatch ran 2 ranks under Slurm; replicas agree"
