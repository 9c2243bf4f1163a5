#!/usr/bin/env bash
# Training throughput with the metrics exporter scraped at 1 Hz, against no exporter.
# Runs `epochal train` alternately without and with --metrics-port (a bash /dev/tcp
# scraper fetching /metrics every second while it trains), REPEATS times each, and prints
# each run's images/s (history.json, mean over epochs) and the ratio of the means.
#   bash benchmarks/metrics_overhead.sh [BUILD_DIR] [REPEATS] [extra epochal train flags]
# Environment: LIMIT_TRAIN (default 12000), EPOCHS (default 2), PORT (default 19464).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
repeats="${2:-3}"
shift 2 || true
epochal="$build/src/apps/epochal"
port="${PORT:-19464}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

scrape_loop() {  # scrapes 127.0.0.1:$port/metrics every second until killed
  while true; do
    # A subshell per scrape: a refused connection (before the server starts) ends only it.
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 &&
      cat <&3) >/dev/null 2>&1 || true
    sleep 1
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
    --limit-train "${LIMIT_TRAIN:-12000}" --limit-val 1000 --epochs "${EPOCHS:-2}" \
    --no-scan --out "$work/$name" "$@" >"$work/$name.log" 2>&1
  images_per_second "$work/$name"
}

declare -a off on
for i in $(seq "$repeats"); do
  off+=("$(run "off$i" "$@")")
  scrape_loop &
  scraper=$!
  on+=("$(run "on$i" --metrics-port "$port" "$@")")
  kill "$scraper" 2>/dev/null || true
  wait "$scraper" 2>/dev/null || true
  echo "repeat $i: no exporter ${off[-1]} img/s, exporter scraped at 1 Hz ${on[-1]} img/s"
done
printf '%s\n' "${off[@]}" | awk '{s += $1} END {printf "mean without: %.1f img/s\n", s / NR}'
printf '%s\n' "${on[@]}" | awk '{s += $1} END {printf "mean with:    %.1f img/s\n", s / NR}'
paste <(printf '%s\n' "${off[@]}") <(printf '%s\n' "${on[@]}") |
  awk '{a += $1; b += $2} END {printf "slowdown: %.2f%%\n", 100 * (1 - b / a)}'
