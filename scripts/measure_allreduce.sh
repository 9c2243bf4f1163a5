#!/usr/bin/env bash
# Measures MPI_Allreduce over loopback TCP with epochal_allreduce_bench and fits the
# latency-bandwidth model of docs/scaling.md to the 2-rank data.
#
#   scripts/measure_allreduce.sh [--ranks "2 4"] [--repeats 3] [--algos "default ring"]
#                                [--out DIR] [--fit-max-bytes N] [-- extra benchmark flags]
#   scripts/measure_allreduce.sh --refit DIR [--fit-max-bytes N]   # summary and fit only
#
# Uses $EPOCHAL_ALLREDUCE_BENCH, else build/benchmarks/epochal_allreduce_bench when it
# exists, else compiles benchmarks/allreduce_bench.cc with mpicxx into a scratch directory.
# Every rank count and algorithm runs --repeats times over 4 KiB..64 MiB plus one run at
# MiniVGGNet's gradient size (6,710,696 bytes); the summary takes, per size, the median of
# the runs' medians and the minimum of their minima. "default" is Open MPI's own choice of
# all-reduce algorithm, "ring" forces coll/tuned's ring (the algorithm the model describes).
# The fit uses the 2-rank sizes up to --fit-max-bytes (default: all) and prints the
# residuals of every size, fitted or not.
#
# Loopback on one machine measures memory copies, the kernel's TCP stack and process
# scheduling, not a network. On a shared machine the figures are noisy: read the load
# averages printed with them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ranks_list="2 4"
repeats=3
algos="default ring"
out=""
refit=""
fit_max=0  # 0: every size
extra=()
grad_bytes=6710696  # 1,677,674 float32 trainable parameters of MiniVGGNet

while (($#)); do
  case "$1" in
    --ranks) ranks_list="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --algos) algos="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --refit) refit="$2"; shift 2 ;;
    --fit-max-bytes) fit_max="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "measure_allreduce.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "measure_allreduce.sh: bad --repeats" >&2; exit 2; }
for a in $algos; do
  [[ "$a" == default || "$a" == ring ]] || { echo "measure_allreduce.sh: algos are default, ring" >&2; exit 2; }
done
case "$fit_max" in
  *[kK]) fit_max=$((${fit_max%?} * 1024)) ;;
  *[mM]) fit_max=$((${fit_max%?} * 1048576)) ;;
esac
[[ "$fit_max" =~ ^[0-9]+$ ]] || { echo "measure_allreduce.sh: bad --fit-max-bytes" >&2; exit 2; }

if [[ -n "$refit" ]]; then
  out="$refit"
  [[ -d "$out" ]] || { echo "measure_allreduce.sh: no directory $out" >&2; exit 1; }
  # Take the rank counts and algorithms from the files that are there.
  ranks_list="$(find "$out" -name 'n*_r*_sweep.json' -printf '%f\n' | sed 's/^n\([0-9]*\)_.*/\1/' | sort -nu | tr '\n' ' ')"
  algos="$(find "$out" -name 'n*_r*_sweep.json' -printf '%f\n' | sed 's/^n[0-9]*_\([a-z]*\)_.*/\1/' | sort -u | tr '\n' ' ')"
  [[ -n "$ranks_list" ]] || { echo "measure_allreduce.sh: no results in $out" >&2; exit 1; }
  cat "$out/environment.txt" 2>/dev/null || true
else
# --- the benchmark binary ---------------------------------------------------------------
src="$root/benchmarks/allreduce_bench.cc"
if [[ -n "${EPOCHAL_ALLREDUCE_BENCH:-}" ]]; then
  bench="$EPOCHAL_ALLREDUCE_BENCH"
elif [[ -x "$root/build/benchmarks/epochal_allreduce_bench" ]]; then
  bench="$root/build/benchmarks/epochal_allreduce_bench"
else
  scratch="${TMPDIR:-/tmp}/epochal-allreduce-bench"
  bench="$scratch/epochal_allreduce_bench"
  if [[ ! -x "$bench" || "$src" -nt "$bench" ]]; then
    mkdir -p "$scratch"
    echo "building $bench" >&2
    mpicxx -O2 -std=c++20 -Wall -Wextra "$src" -o "$bench"
  fi
fi
[[ -x "$bench" ]] || { echo "measure_allreduce.sh: no benchmark at $bench" >&2; exit 1; }

out="${out:-${TMPDIR:-/tmp}/epochal-allreduce-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"

# Open MPI refuses to start as root unless told twice; only this script's runs are told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# Loopback TCP only: no shared-memory transport, the lo interface, no core binding.
# shellcheck disable=SC2054  # the commas belong to the MCA value
mpi_args=(--oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo --bind-to none)

load() { cut -d' ' -f1-3 /proc/loadavg; }

{
  echo "# date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "# host: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
  echo "# mpi: $(mpirun --version 2>&1 | head -1)"
  echo "# benchmark: $bench"
  echo "# launch: mpiexec -n N ${mpi_args[*]}"
  echo "# repeats: $repeats, load average at start: $(load)"
} | tee "$out/environment.txt"

# --- runs -------------------------------------------------------------------------------
for n in $ranks_list; do
  for algo in $algos; do
    algo_args=()
    if [[ "$algo" == ring ]]; then
      algo_args=(--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4)
    fi
    for ((r = 1; r <= repeats; r++)); do
      echo
      echo "## ranks=$n algorithm=$algo repeat=$r/$repeats load=$(load)"
      mpiexec -n "$n" "${mpi_args[@]}" "${algo_args[@]}" "$bench" \
        --json="$out/n${n}_${algo}_r${r}_sweep.json" "${extra[@]}"
      mpiexec -n "$n" "${mpi_args[@]}" "${algo_args[@]}" "$bench" "${extra[@]}" \
        --min-bytes "$grad_bytes" --max-bytes "$grad_bytes" \
        --json="$out/n${n}_${algo}_r${r}_grad.json" | tail -n 1
    done
  done
done
echo
echo "# load average at end: $(load)" | tee -a "$out/environment.txt"
fi  # not --refit

# --- summary: median of medians, min of minima -------------------------------------------
# The JSON has one result object per line, so awk reads it without a JSON parser.
rows() {  # rows N ALGO -> "bytes median_us min_us" per result line, over all repeats
  cat "$out/n$1_$2_r"*.json |
    awk -F'[:,]' '/"bytes"/ { for (i = 1; i < NF; i++) { k = $i; gsub(/[ {"]/, "", k);
                     v[k] = $(i + 1) + 0 } print v["bytes"], v["median_us"], v["min_us"] }'
}

summary() {  # summary N ALGO -> "n bytes median_of_medians min_of_minima runs"
  rows "$1" "$2" | sort -n -k1,1 -k2,2 |
    awk -v n="$1" '
      function flush() {
        if (c == 0) return
        med = (c % 2) ? m[(c + 1) / 2] : (m[c / 2] + m[c / 2 + 1]) / 2
        printf "%d %d %.1f %.1f %d\n", n, b, med, lo, c
      }
      $1 != b { flush(); b = $1; c = 0; lo = 1e300 }
      { m[++c] = $2; if ($3 < lo) lo = $3 }
      END { flush() }'
}

for n in $ranks_list; do
  for algo in $algos; do
    summary "$n" "$algo" > "$out/summary_n${n}_${algo}.txt"
    echo
    echo "## summary: $n ranks, algorithm $algo, $repeats runs (GB/s = 1e9 B/s)"
    awk 'BEGIN { printf "%12s %12s %12s %10s %10s %5s\n", "bytes", "median_us", "min_us",
                 "algbw_GBps", "busbw_GBps", "runs" }
         { alg = $2 / $3 / 1e3; bus = alg * 2 * ($1 - 1) / $1
           printf "%12d %12.1f %12.1f %10.3f %10.3f %5d\n", $2, $3, $4, alg, bus, $5 }' \
      "$out/summary_n${n}_${algo}.txt" | tee "$out/summary_n${n}_${algo}.table"
  done
done

# --- fit: t = 2(n-1) alpha + 2(n-1)/n * S / B on the 2-rank medians -----------------------
# Ordinary least squares is dominated by the largest messages (absolute errors of ms); the
# relative fit (weights 1/t^2) balances the small and large ends. Both are printed.
fit() {  # fit FILE COLUMN LABEL
  awk -v col="$2" -v label="$3" -v fmax="$fit_max" '
    { n = $1; S[NR] = $2; t[NR] = $col * 1e-6 }
    END {
      k = 2 * (n - 1); f = 2 * (n - 1) / n
      range = (fmax > 0) ? "<= " fmax " bytes" : "all"
      for (pass = 0; pass < 2; pass++) {
        sw = sx = sy = sxx = sxy = 0
        for (i = 1; i <= NR; i++) {
          if (fmax > 0 && S[i] > fmax) continue
          w = pass ? 1 / (t[i] * t[i]) : 1; x = f * S[i]
          sw += w; sx += w * x; sy += w * t[i]; sxx += w * x * x; sxy += w * x * t[i]
        }
        b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx); a = (sy - b * sx) / sw
        printf "%s, sizes %s, %s fit: alpha = %.2f us, B = %.3f GB/s (1/slope), intercept 2(n-1)alpha = %.2f us\n",
               label, range, pass ? "relative (1/t^2)" : "ordinary", a / k * 1e6, 1 / b / 1e9, a * 1e6
        printf "%12s %12s %12s %9s\n", "bytes", "measured_us", "model_us", "resid_%"
        for (i = 1; i <= NR; i++) {
          mdl = a + b * f * S[i]
          printf "%12d %12.1f %12.1f %+9.1f%s\n", S[i], t[i] * 1e6, mdl * 1e6,
                 100 * (t[i] - mdl) / mdl, (fmax > 0 && S[i] > fmax) ? "  (not fitted)" : ""
        }
      }
    }' "$1"
}

for algo in $algos; do
  file="$out/summary_n2_${algo}.txt"
  [[ -s "$file" ]] || continue
  echo
  fit "$file" 3 "2 ranks, $algo, median of medians" | tee "$out/fit_n2_${algo}_median.txt"
  echo
  fit "$file" 4 "2 ranks, $algo, min of minima" | tee "$out/fit_n2_${algo}_min.txt"
done
echo
echo "results in $out"
