#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in their own build directory, then runs each for a while,
# starting from its seed corpus (tests/fuzz/corpus/<name>/, never modified here).
#   bash scripts/fuzz.sh                 every target, FUZZ_SECONDS (default 60) each
#   bash scripts/fuzz.sh checkpoint_fuzz one target
# Environment: FUZZ_SECONDS, FUZZ_BUILD_DIR (default build-fuzz), JOBS (default 2).
# A crash leaves its input in $FUZZ_BUILD_DIR/artifacts/<target>/ and makes the script
# fail; keep such an input in tests/fuzz/corpus/<name>/ once fixed, so that the replay
# tests of every ordinary build run it (docs/fault-tolerance.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
seconds="${FUZZ_SECONDS:-60}"
build_dir="${FUZZ_BUILD_DIR:-build-fuzz}"
jobs="${JOBS:-2}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx_fuzz config_fuzz checkpoint_fuzz)

CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEPOCHAL_FUZZ=ON -DEPOCHAL_BUILD_TESTS=OFF -DEPOCHAL_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}"

status=0
for t in "${targets[@]}"; do
  corpus="tests/fuzz/corpus/${t%_fuzz}"
  work="$build_dir/corpus/$t"
  artifacts="$build_dir/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t for ${seconds} s (seeds: $corpus)"
  # -rss_limit_mb: room for ASan's own overhead above the parsers' bounded allocations.
  if ! "$build_dir/tests/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "$corpus" \
      >"$build_dir/$t.log" 2>&1; then
    echo "fuzz: $t FAILED; input and log: $artifacts/, $build_dir/$t.log" >&2
    tail -n 40 "$build_dir/$t.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb" \
      "$build_dir/$t.log" | sed "s/^/fuzz: $t: /"
  fi
done
exit $status
