#!/usr/bin/env bash
# The control plane under load: trains the same short job twice on 2 ranks, once with the
# control plane on but idle (baseline) and once with 64 clients polling GetStatus at 10 Hz
# plus 8 WatchEvents subscribers (1 stalled), and prints both throughputs, the drop, and
# the GetStatus latency percentiles.
# usage: bash benchmarks/control_load.sh [BUILD_DIR] [extra epochal train flags...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
shift || true
epochal="$build/src/apps/epochal"
load="$build/benchmarks/epochal_control_load"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=(--config "$here/configs/fashion_mnist_minivggnet.textproto" --no-scan --threads 1
      --limit-train 4000 --limit-val 500 --batch-size 32 --epochs 2 --control-port 0 "$@")

run() {  # run NAME WITH_LOAD
  local out="$work/$1"
  mpiexec --oversubscribe --bind-to none -n 2 "$epochal" train "${args[@]}" --out "$out" \
    > "$work/$1.log" 2>&1 &
  local job=$!
  local addr=""
  for _ in $(seq 600); do
    addr="$(grep -o 'control: [0-9.:]*' "$work/$1.log" | head -1 | cut -d' ' -f2 || true)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$work/$1.log"; exit 1; }
  if [ "$2" = 1 ]; then
    "$load" --target "$addr" --pollers 64 --hz 10 --watchers 8 --stalled 1 --seconds 3600 \
      > "$work/$1.load" 2>&1 &
    local loader=$!
  fi
  wait "$job"
  if [ "$2" = 1 ]; then kill -INT "$loader" 2>/dev/null || true; wait "$loader" || true; fi
  /usr/bin/python3 -c "import json,sys; h=json.load(open(sys.argv[1])); \
print(sum(e['images_per_second'] for e in h['epochs'])/len(h['epochs']))" "$out/history.json"
}
base=$(run baseline 0)
loaded=$(run loaded 1)
cat "$work/loaded.load"
echo "throughput, images/s: baseline $base, with load $loaded"
/usr/bin/python3 -c "import sys; b,l=map(float,sys.argv[1:]); print('drop: %.2f%%' % (100*(b-l)/b))" "$base" "$loaded"
