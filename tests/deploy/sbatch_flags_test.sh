#!/usr/bin/env bash
# deploy/slurm/epochal.sbatch outside Slurm, with a stand-in for the epochal binary that
# records its arguments: the script must pass one rank per task, --threads from
# SLURM_CPUS_PER_TASK, the run directory, the user's arguments, and the metrics, control and
# resume flags exactly when the binary's `train --help` lists them; and it must write
# endpoints.env (and prometheus-target.json when metrics are on) in the run directory.
#
# usage: sbatch_flags_test.sh SOURCE_DIR MPIEXEC
set -euo pipefail

source_dir="$(cd "${1:?usage: $0 SOURCE_DIR MPIEXEC}" && pwd)"
mpiexec="${2:?usage: $0 SOURCE_DIR MPIEXEC}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/epochal_sbatch.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# fake_binary DIR WITH_NEW_FLAGS: an `epochal` whose help lists the newer flags or not, and
# which appends "rank <r>: <args>" to DIR/calls.
fake_binary() {
  local dir="$1" extra=""
  mkdir -p "$dir"
  if [ "$2" = 1 ]; then
    extra='  --metrics-port P          Prometheus port on rank 0\n  --metrics-bind ADDR       address\n  --control-port P          gRPC port\n  --control-bind ADDR       address\n  --resume auto|PATH        resume\n'
  fi
  cat >"$dir/epochal" <<EOF
#!/bin/sh
if [ "\$2" = "--help" ]; then
  printf 'usage: epochal train [flags]\n\nflags:\n  --config FILE            config\n  --threads T              threads\n  --out DIR                output\n$extra'
  exit 0
fi
echo "rank \${OMPI_COMM_WORLD_RANK:-?} OMP_NUM_THREADS=\$OMP_NUM_THREADS: \$*" >>"$dir/calls"
EOF
  chmod +x "$dir/epochal"
}

# run_script DIR: the batch script as Slurm would run it for job 77 with 2 tasks x 3 CPUs.
run_script() {
  local dir="$1"
  mkdir -p "$dir/bin"
  ln -sf "$mpiexec" "$dir/bin/mpirun"
  (
    cd "$dir"
    PATH="$dir/bin:$PATH" SLURM_JOB_ID=77 SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=3 \
      SLURM_SUBMIT_DIR="$dir" EPOCHAL_BIN="$dir/epochal" EPOCHAL_LAUNCHER=mpirun \
      EPOCHAL_CONFIG="$source_dir/configs/fashion_mnist_minivggnet.textproto" \
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
      timeout 120 bash "$source_dir/deploy/slurm/epochal.sbatch" --epochs 1 --limit-train 64
  ) >"$dir/out.log" 2>&1 || { cat "$dir/out.log" >&2; fail "the batch script failed in $dir"; }
}

# With the newer flags.
new="$scratch/new"
fake_binary "$new" 1
run_script "$new"
[ "$(grep -c '^rank [01] ' "$new/calls")" = 2 ] || fail "expected ranks 0 and 1: $(cat "$new/calls")"
line="$(grep '^rank 0 ' "$new/calls")"
for want in "OMP_NUM_THREADS=3:" "train --config $source_dir/configs/fashion_mnist_minivggnet.textproto" \
  "--out $new/runs/slurm-77" "--threads 3" "--metrics-bind 0.0.0.0" "--control-bind 127.0.0.1" \
  "--resume auto" "--epochs 1 --limit-train 64"; do
  grep -qF -- "$want" <<<"$line" || fail "rank 0 was not given '$want': $line"
done
metrics_port="$(grep -o -- '--metrics-port [0-9]*' <<<"$line" | cut -d' ' -f2)"
control_port="$(grep -o -- '--control-port [0-9]*' <<<"$line" | cut -d' ' -f2)"
if [ -z "$metrics_port" ] || [ -z "$control_port" ]; then fail "no ports passed: $line"; fi
env_file="$new/runs/slurm-77/endpoints.env"
[ -f "$env_file" ] || fail "no $env_file"
grep -q "^EPOCHAL_METRICS_URL=http://.*:$metrics_port/metrics$" "$env_file" || fail "metrics URL: $(cat "$env_file")"
grep -q "^EPOCHAL_CONTROL_ADDR='127.0.0.1:$control_port " "$env_file" || fail "control address: $(cat "$env_file")"
grep -q "^EPOCHAL_RANKS=2$" "$env_file" || fail "ranks: $(cat "$env_file")"
grep -q "\"targets\": \[\".*:$metrics_port\"\]" "$new/runs/slurm-77/prometheus-target.json" ||
  fail "prometheus-target.json: $(cat "$new/runs/slurm-77/prometheus-target.json")"
echo "with the newer flags: $line"

# Without them: none passed, each named once in the output, no Prometheus target.
old="$scratch/old"
fake_binary "$old" 0
run_script "$old"
line="$(grep '^rank 0 ' "$old/calls")"
for flag in --metrics-port --metrics-bind --control-port --control-bind --resume; do
  if grep -qF -- "$flag" <<<"$line"; then fail "passed $flag to a binary without it: $line"; fi
done
grep -q "has no --resume; a requeued job starts over" "$old/out.log" || fail "no note about --resume"
[ ! -e "$old/runs/slurm-77/prometheus-target.json" ] || fail "a Prometheus target without metrics"
grep -q "^EPOCHAL_METRICS_URL=$" "$old/runs/slurm-77/endpoints.env" || fail "metrics URL without metrics"
echo "without them:        $line"
echo "PASS: epochal.sbatch passes what the binary offers and writes the endpoints"
