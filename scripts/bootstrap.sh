#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root, or with sudo available):
#   bash scripts/bootstrap.sh train   install what is missing, build, train the reference run
#   bash scripts/bootstrap.sh test    install what is missing, build, run the whole test suite
#   bash scripts/bootstrap.sh build   install what is missing and build only
# Extra arguments after `train` go to `epochal train` (e.g. --epochs 1).
# Environment: BUILD_DIR (default build), JOBS (default: all cores), FUZZ_SECONDS (per fuzz
# target in `test` mode, default 60; 0 skips the fuzz pass), METRICS_PORT (default 9464:
# where `train` serves Prometheus metrics, see docs/metrics.md), CONTROL_PORT (the
# training run's `epochal ctl` port, default 50051; docs/control.md), DASHBOARD_PORT (the
# live page, default 9465; docs/dashboard.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
mode="${1:-}"
shift || true
build_dir="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"

# Debian 12 packages only (docs/dependencies.md says what each one is for).
packages=(
  build-essential cmake pkg-config
  libdnnl-dev ocl-icd-opencl-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  libopenmpi-dev openmpi-bin
  prometheus-cpp-dev prometheus
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev libomp-14-dev
  dataset-fashion-mnist
  openssl python3-grpcio python3-grpc-tools python3-pkg-resources
  python3-yaml iproute2 shellcheck
  libcivetweb-dev libonnx-dev python3-onnx python3-opencv chromium
)
# The local-Slurm test starts daemons and edits /etc/hosts, so it is opt-in, and so are its
# packages (tests/deploy/slurm_local_test.sh).
if [ "$mode" = test ] && [ "${EPOCHAL_TEST_SLURM:-0}" = 1 ]; then
  packages+=(slurm-wlm munge)
fi

install_packages() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "bootstrap: all ${#packages[@]} packages present"
    return
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: run as root to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "bootstrap: installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEPOCHAL_WERROR=ON
  cmake --build "$build_dir" -j "$jobs"
}

case "$mode" in
  build)
    install_packages
    build
    ;;
  test)
    install_packages
    build
    # Heavy tests are marked RUN_SERIAL, so -j only overlaps the light ones.
    ctest --test-dir "$build_dir" --output-on-failure --timeout 1800 -j "$jobs"
    # A short libFuzzer pass under ASan and UBSan over the file parsers (scripts/fuzz.sh).
    if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
      FUZZ_SECONDS="${FUZZ_SECONDS:-60}" JOBS="$jobs" bash scripts/fuzz.sh
    fi
    ;;
  train)
    install_packages
    build
    out="runs/$(date +%Y%m%d-%H%M%S)"
    metrics_port="${METRICS_PORT:-9464}"
    # The control plane listens on loopback at a fixed port (docs/control.md).
    control_port="${CONTROL_PORT:-50051}"
    dashboard_port="${DASHBOARD_PORT:-9465}"
    # Port 0 means a free port, which epochal prints once it listens.
    shown_metrics="$metrics_port" shown_control="$control_port" shown_dashboard="$dashboard_port"
    [ "$metrics_port" != 0 ] || shown_metrics="PORT"
    [ "$control_port" != 0 ] || shown_control="PORT"
    [ "$dashboard_port" != 0 ] || shown_dashboard="PORT"
    echo "bootstrap: training MiniVGGNet on Fashion-MNIST; output in $out"
    echo "bootstrap: Prometheus metrics at http://127.0.0.1:$shown_metrics/metrics" \
      "(scrape config: deploy/prometheus/prometheus.yml; dashboard: deploy/grafana/)"
    echo "bootstrap: live page at http://127.0.0.1:$shown_dashboard/ (docs/dashboard.md)"
    echo "bootstrap: steer it from another terminal with $build_dir/src/apps/epochal ctl" \
      "--target 127.0.0.1:$shown_control status|pause|resume|set-lr X|stop|watch"
    exec "$build_dir/src/apps/epochal" train \
      --config configs/fashion_mnist_minivggnet.textproto --out "$out" \
      --metrics-port "$metrics_port" --control-port "$control_port" \
      --dashboard-port "$dashboard_port" "$@"
    ;;
  *)
    echo "usage: bash scripts/bootstrap.sh train|test|build [epochal train flags...]" >&2
    exit 2
    ;;
esac
