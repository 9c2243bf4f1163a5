#!/usr/bin/env bash
# epochal against PyTorch on this machine, in one run: MiniVGGNet, batch 32, the same
# thread count, f32 and bf16 (epochal --precision bf16; PyTorch's bf16 autocast) where
# oneDNN dispatches native bf16. Prints each images/s (best of --repeats runs, since
# other processes share the cores) and the ratios.
# PyTorch is a benchmark-only dependency: apt-get install python3-torch.
# Usage: bash benchmarks/peer_compare.sh [threads, default 2] [repeats, default 3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench="${EPOCHAL_BENCH:-build/benchmarks/epochal_bench}"
threads="${1:-2}"
repeats="${2:-3}"
steps="${STEPS:-150}"
# Debian's interpreter, which python3-torch installs into (a pyenv python3 first on
# PATH would not see it).
python="${PYTHON:-/usr/bin/python3}"
"$python" -c 'import torch' 2> /dev/null || {
  echo "peer_compare: PyTorch is not installed (apt-get install python3-torch)" >&2
  exit 2
}
[ -x "$bench" ] || { echo "peer_compare: $bench not built" >&2; exit 2; }

best() {  # command...: the best images/s over $repeats runs
  local b=0 v
  for _ in $(seq "$repeats"); do
    v=$("$@" | grep -oE '^(training: )?[0-9.]+ images/s|^images/s [0-9.]+' | grep -oE '[0-9.]+' | head -1)
    b=$(awk -v a="$b" -v c="$v" 'BEGIN { print (c > a ? c : a) }')
  done
  echo "$b"
}
epochal() {  # precision
  OMP_NUM_THREADS="$threads" "$bench" --threads "$threads" --steps "$steps" --no-per-layer \
    --no-sgemm --precision "$1"
}
torch_run() {  # [--bf16]
  "$python" benchmarks/peer_torch.py --threads "$threads" --steps "$steps" "$@"
}

# Whether oneDNN dispatches native bf16 here: --precision bf16 is an error where it does
# not. (Not --precision auto, which also times both precisions and may pick f32.)
have_bf16=0
if probe=$(OMP_NUM_THREADS=1 "$bench" --threads 1 --steps 1 --warmup 0 --no-per-layer \
  --no-sgemm --precision bf16 2>&1); then
  have_bf16=1
elif ! grep -q 'bf16 needs a CPU' <<< "$probe"; then
  # Any other failure is a broken build or run, not a CPU without bf16.
  echo "peer_compare: $bench --precision bf16 failed:" >&2
  echo "$probe" >&2
  exit 1
fi
echo "peer_compare: MiniVGGNet, batch 32, $threads threads, best of $repeats runs of $steps steps"
e32=$(best epochal f32)
t32=$(best torch_run)
printf '  %-28s %10s images/s\n' "epochal f32" "$e32" "PyTorch f32" "$t32"
printf '  %-28s %10.2fx\n' "epochal f32 / PyTorch f32" "$(awk -v a="$e32" -v b="$t32" 'BEGIN{print a/b}')"
if [ "$have_bf16" -ge 1 ]; then
  e16=$(best epochal bf16)
  t16=$(best torch_run --bf16)
  printf '  %-28s %10s images/s\n' "epochal bf16" "$e16" "PyTorch bf16 autocast" "$t16"
  printf '  %-28s %10.2fx\n' "epochal bf16 / PyTorch bf16" \
    "$(awk -v a="$e16" -v b="$t16" 'BEGIN{print a/b}')" \
    "epochal bf16 / epochal f32" "$(awk -v a="$e16" -v b="$e32" 'BEGIN{print a/b}')"
  # Each side at its faster precision on this machine: what a user of either gets.
  printf '  %-28s %10.2fx\n' "epochal best / PyTorch best" \
    "$(awk -v a="$e32" -v b="$e16" -v c="$t32" -v d="$t16" \
      'BEGIN{ e = a > b ? a : b; t = c > d ? c : d; print e / t }')"
else
  echo "  bf16: skipped, oneDNN dispatches no native bf16 on this CPU"
fi
