#!/usr/bin/env bash
# Data-parallel throughput on this machine: 1 rank x 2 threads, 2 ranks x 1 thread and
# 4 ranks (oversubscribed, 1 thread each), MiniVGGNet at 32 samples per rank and step on
# real Fashion-MNIST. Prints images/s, the exposed all-reduce wait as a share of the step
# and the share of all-reduce time hidden behind backward (from history.json's
# rank_timings, as the console prints them), then the ratio the targets ask for.
# Usage: bash benchmarks/scaling.sh [samples per run, default 9600] [precision: f32 (default),
#        bf16 or auto, as --precision]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="${EPOCHAL_BIN:-build/src/apps/epochal}"
samples="${1:-9600}"
precision="${2:-f32}"
config=configs/fashion_mnist_minivggnet.textproto
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
common=(train --config "$config" --epochs 1 --limit-train "$samples" --limit-val 500 --batch-size 32
  --precision "$precision")

run() {  # name ranks threads [mpiexec args...]
  local name="$1" ranks="$2" threads="$3"
  shift 3
  local out="$scratch/$name"
  if [ "$ranks" -eq 1 ]; then
    "$bin" "${common[@]}" --threads "$threads" --out "$out" > "$out.log" 2>&1
  else
    mpiexec -n "$ranks" --oversubscribe --bind-to none "$@" \
      "$bin" "${common[@]}" --threads "$threads" --out "$out" > "$out.log" 2>&1
  fi
  local ips timing
  ips=$(grep -oE '[0-9]+ img/s' "$out.log" | tail -1 | cut -d' ' -f1)
  timing=$(grep -E '^  [0-9]+ ranks:' "$out.log" | tail -1 | sed 's/^  //' || true)
  printf '%-28s %6s images/s   %s\n' "$name" "$ips" "${timing:-(single process: no all-reduce)}"
  echo "$ips" > "$out.ips"
}

echo "MiniVGGNet, batch 32 per rank, precision $precision, $samples training samples per run, $(nproc) cores ($(lscpu | sed -n 's/^Model name:[[:space:]]*//p'))"
run "1 rank x 2 threads" 1 2
run "2 ranks x 1 thread" 2 1
run "2 ranks x 1 thread, TCP" 2 1 --mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo
run "4 ranks x 1 thread (over)" 4 1
one=$(cat "$scratch/1 rank x 2 threads.ips")
two=$(cat "$scratch/2 ranks x 1 thread.ips")
echo "2 ranks x 1 thread / 1 rank x 2 threads = $(( 100 * two / one ))% (target >= 90%)"
