#!/usr/bin/env bash
# deploy/slurm/epochal.sbatch on a real single-node Slurm (scripts/slurm-local.sh): a 2-rank
# short training must complete with replicas that agree and write endpoints.env, with the
# srun launcher (when Slurm has PMIx) and with mpirun; and with srun, a SIGTERM to the job's
# steps (what --signal=TERM@120 sends) must reach every rank and let it finish (a stand-in
# binary that takes 2 s to "checkpoint"), the job ending COMPLETED.
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

cd "$work"
# sbatch passes this environment on to the job (--export=ALL is its default).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export EPOCHAL_CONFIG="$source_dir/configs/fashion_mnist_minivggnet.textproto"

# wait_job ID: waits (at most 240 s) for the job to end; prints its last state.
wait_job() {
  local state=""
  for _ in $(seq 1 480); do
    state="$(scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true)"
    case "$state" in
      COMPLETED | FAILED | CANCELLED* | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE) break ;;
    esac
    sleep 0.5
  done
  echo "$state"
}

# check_run DIR: 2 epochs, 2 ranks, equal replica hashes, endpoints.env.
check_run() {
  local dir="$1" hashes line
  [ -f "$dir/endpoints.env" ] || fail "no endpoints.env in $dir"
  grep -q "EPOCHAL_RANKS=2" "$dir/endpoints.env" || fail "endpoints.env does not say 2 ranks"
  [ -f "$dir/history.json" ] || fail "no history.json in $dir"
  hashes="$(tr -d ' \n' <"$dir/history.json" | grep -o '"replica_hashes":\[[^]]*\]')"
  [ "$(wc -l <<<"$hashes")" = 2 ] || fail "expected 2 epochs of replica hashes: $hashes"
  while read -r line; do
    [ "$(grep -o '"[0-9a-f]\{16\}"' <<<"$line" | wc -l)" = 2 ] || fail "not 2 hashes: $line"
    [ "$(grep -o '"[0-9a-f]\{16\}"' <<<"$line" | sort -u | wc -l)" = 1 ] || fail "replicas differ: $line"
  done <<<"$hashes"
}

# 1. A real 2-rank short training with each launcher (2 tasks x 1 CPU; the workload is
#    passed as arguments to `epochal train`).
for launcher in srun mpirun; do
  if [ "$launcher" = srun ] && ! srun --mpi=list 2>&1 | grep -qw pmix; then
    echo "note: this Slurm has no PMIx plugin; srun launcher not tried"
    continue
  fi
  job="$(EPOCHAL_LAUNCHER=$launcher EPOCHAL_BIN="$binary" EPOCHAL_RUN_DIR="$work/run-$launcher" \
    sbatch --parsable --ntasks=2 --cpus-per-task=1 --time=00:10:00 \
    "$source_dir/deploy/slurm/epochal.sbatch" \
    --epochs 2 --batch-size 16 --limit-train 256 --limit-val 200 --no-scan)"
  state="$(wait_job "$job")"
  echo "job $job ($launcher): ${state:-unknown}"
  grep -v "ETA:" "$work/epochal-$job.out" | grep -E "^epochal.sbatch|ranks:" || true
  [ "$state" = COMPLETED ] || { tail -n 30 "$work/epochal-$job.out"; fail "job $job ended as '${state:-still running after 240 s}'"; }
  check_run "$work/run-$launcher"
done

# 2. The time-limit signal path with srun: `scancel -s TERM` signals the job's steps, as
#    --signal=TERM@120 does. A stand-in binary (rank: trap TERM, take 2 s to "checkpoint",
#    exit 0) shows every rank gets the signal, has time to finish, and the job completes.
if srun --mpi=list 2>&1 | grep -qw pmix; then
  stand_in="$work/stand-in-epochal"
  cat >"$stand_in" <<EOF
#!/bin/sh
if [ "\$2" = "--help" ]; then printf 'flags:\n  --config FILE  c\n  --resume auto|PATH  r\n'; exit 0; fi
trap 'sleep 2; touch "$work/checkpointed.\$SLURM_PROCID"; exit 0' TERM
touch "$work/started.\$SLURM_PROCID"
while true; do sleep 0.2; done
EOF
  chmod +x "$stand_in"
  job="$(EPOCHAL_LAUNCHER=srun EPOCHAL_BIN="$stand_in" EPOCHAL_RUN_DIR="$work/run-signal" \
    sbatch --parsable --ntasks=2 --cpus-per-task=1 --time=00:10:00 "$source_dir/deploy/slurm/epochal.sbatch")"
  for _ in $(seq 1 120); do
    [ -e "$work/started.0" ] && [ -e "$work/started.1" ] && break
    sleep 0.5
  done
  scancel -s TERM "$job"
  state="$(wait_job "$job")"
  echo "job $job (SIGTERM to the steps): ${state:-unknown}"
  if [ ! -e "$work/checkpointed.0" ] || [ ! -e "$work/checkpointed.1" ]; then
    fail "not every rank finished its SIGTERM handling: $(ls "$work")"
  fi
  [ "$state" = COMPLETED ] || fail "job $job ended as '$state' after SIGTERM, not COMPLETED"
  grep -q -- "--resume auto" "$work/epochal-$job.out" || fail "--resume auto was not passed"
fi
echo "PASS: epochal.sbatch ran 2 ranks under Slurm; replicas agree; SIGTERM reaches every rank"
