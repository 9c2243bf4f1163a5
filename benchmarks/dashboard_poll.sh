#!/usr/bin/env bash
# Training throughput with the live page polled at 10 Hz, against the page unpolled and
# against no page. Runs `epochal train` REPEATS times in each of the three ways, in turn;
# the poller fetches the whole /api/run document (no ?since=, the heaviest request) every
# 0.1 s while it trains. Prints each run's images/s (history.json, mean over epochs) and
# the ratios of the means. A benchmark, not a test: on a shared machine the noise between
# runs is several percent.
#   bash benchmarks/dashboard_poll.sh [BUILD_DIR] [REPEATS] [extra epochal train flags]
# Environment: LIMIT_TRAIN (default 6000), EPOCHS (default 2), PORT (default 19465).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
repeats="${2:-3}"
shift 2 || true
epochal="$build/src/apps/epochal"
port="${PORT:-19465}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

poll_loop() {  # fetches 127.0.0.1:$port/api/run every 0.1 s until killed; counts replies
  local ok=0
  while true; do
    # A subshell per request: a refused connection (before the server starts) ends only it.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /api/run HTTP/1.0\r\n\r\n' >&3 &&
      cat <&3) 2>/dev/null | grep -q '"format":"epochal.run.v1"'; then
      ok=$((ok + 1))
      echo "$ok" >"$work/polls"
    fi
    sleep 0.1
  done
}

images_per_second() {  # mean of the epochs' images_per_second in history.json
  grep -o '"images_per_second": *[0-9.e+-]*' "$1/history.json" |
    awk -F: '{s += $2; n++} END {printf "%.1f", s / n}'
}

run() {  # run NAME [flags...]
  local name="$1"
  shift
  "$epochal" train --config "$here/configs/fashion_mnist_minivggnet.textproto" \
    --limit-train "${LIMIT_TRAIN:-6000}" --limit-val 1000 --epochs "${EPOCHS:-2}" \
    --no-scan --out "$work/$name" "$@" >"$work/$name.log" 2>&1
  images_per_second "$work/$name"
}

declare -a none idle polled
for i in $(seq "$repeats"); do
  none+=("$(run "none$i" "$@")")
  idle+=("$(run "idle$i" --dashboard-port "$port" "$@")")
  echo 0 >"$work/polls"
  poll_loop &
  poller=$!
  polled+=("$(run "polled$i" --dashboard-port "$port" "$@")")
  kill "$poller" 2>/dev/null || true
  wait "$poller" 2>/dev/null || true
  echo "repeat $i: no page ${none[-1]} img/s, page unpolled ${idle[-1]} img/s," \
    "page polled at 10 Hz ${polled[-1]} img/s ($(cat "$work/polls") full documents served)"
done
mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.1f", s / NR}'; }
echo "mean: no page $(mean "${none[@]}"), unpolled $(mean "${idle[@]}"), polled $(mean "${polled[@]}") img/s"
awk -v a="$(mean "${idle[@]}")" -v b="$(mean "${polled[@]}")" -v c="$(mean "${none[@]}")" \
  'BEGIN {printf "10 Hz poller vs unpolled page: %+.2f%%; unpolled page vs no page: %+.2f%%\n",
          100 * (b / a - 1), 100 * (a / c - 1)}'
