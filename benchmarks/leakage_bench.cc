// epochal_leakage_bench: the leakage scan of Fashion-MNIST's test split (10k) against its
// training split (60k), timed, with the figures that explain the time.
//
//   epochal_leakage_bench [--data-dir=DIR] [--near-rmse=X] [--val-block=N]
//                         [--train-block=N] [--no-pruning] [--repeat=R] [--threads=T]
//
// Prints the machine's load average (the figures mean little on a busy machine), the
// oneDNN sgemm rate of one scan-shaped GEMM right now, then per repetition the scan's wall
// time, the GEMM work it ran after norm pruning against the brute-force 2 * 10k * 60k * 784
// flops, the rate both imply, and the counts it found.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"

namespace {

using Clock = std::chrono::steady_clock;

std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string one, five, fifteen;
  f >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

// GFLOP/s of oneDNN's f32 matmul on the scan's GEMM shape, best of a few runs.
double SgemmRate(int64_t m, int64_t n, int64_t k) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::memory::desc src_md({m, k}, dt::f32, tag::ab);
  const dnnl::memory::desc weights_md({k, n}, dt::f32, tag::ba);
  const dnnl::memory::desc dst_md({m, n}, dt::f32, tag::ab);
  dnnl::matmul matmul(
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, weights_md, dst_md), engine));
  std::vector<float> src(static_cast<size_t>(m * k), 0.5f),
      weights(static_cast<size_t>(k * n), 0.25f), dst(static_cast<size_t>(m * n));
  dnnl::memory src_mem(src_md, engine, src.data()), weights_mem(weights_md, engine, weights.data()),
      dst_mem(dst_md, engine, dst.data());
  double best = 0;
  for (int rep = 0; rep < 8; ++rep) {
    const auto start = Clock::now();
    matmul.execute(
        stream,
        {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, weights_mem}, {DNNL_ARG_DST, dst_mem}});
    stream.wait();
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (rep > 0) best = std::max(best, 2.0 * static_cast<double>(m * n * k) / s / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace epochal::data;
  std::string dir = DefaultFashionMnistDir();
  LeakageOptions options;
  int repeat = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&](const char* prefix) -> const char* {
      const std::string p = std::string(prefix) + "=";
      return arg.rfind(p, 0) == 0 ? argv[i] + p.size() : nullptr;
    };
    if (const char* v = value("--data-dir")) {
      dir = v;
    } else if (const char* v1 = value("--near-rmse")) {
      options.near_rmse = std::atof(v1);
    } else if (const char* v2 = value("--val-block")) {
      options.val_block = std::atoll(v2);
    } else if (const char* v3 = value("--train-block")) {
      options.train_block = std::atoll(v3);
    } else if (const char* v4 = value("--repeat")) {
      repeat = std::max(1, std::atoi(v4));
    } else if (const char* v5 = value("--threads")) {
      omp_set_num_threads(std::max(1, std::atoi(v5)));
    } else if (arg == "--no-pruning") {
      options.pruning = false;
    } else {
      std::cerr << "usage: epochal_leakage_bench [--data-dir=DIR] [--near-rmse=X] "
                   "[--val-block=N] [--train-block=N] [--no-pruning] [--repeat=R] "
                   "[--threads=T]\n";
      return 2;
    }
  }
  try {
    const auto load_start = Clock::now();
    const Dataset train = LoadFashionMnist(dir, Split::kTrain);
    const Dataset val = LoadFashionMnist(dir, Split::kTest);
    const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
    const double brute = 2.0 * static_cast<double>(train.size()) * static_cast<double>(val.size()) *
                         static_cast<double>(train.sample_size());
    std::printf(
        "leakage scan: %lld validation x %lld training samples of %lld pixels, "
        "near_rmse %g, blocks %lld x %lld, pruning %s\n",
        static_cast<long long>(val.size()), static_cast<long long>(train.size()),
        static_cast<long long>(train.sample_size()), options.near_rmse,
        static_cast<long long>(options.val_block), static_cast<long long>(options.train_block),
        options.pruning ? "on" : "off");
    std::printf("machine: %d OpenMP threads, %d cores, load average %s; data loaded in %.2f s\n",
                omp_get_max_threads(), omp_get_num_procs(), LoadAverage().c_str(), load_s);
    std::printf("oneDNN sgemm on the scan's shape (%lld x %lld x %lld): %.1f GFLOP/s now\n",
                static_cast<long long>(options.val_block),
                static_cast<long long>(options.train_block),
                static_cast<long long>(train.sample_size()),
                SgemmRate(options.val_block, options.train_block, train.sample_size()));
    for (int rep = 0; rep < repeat; ++rep) {
      const LeakageReport r = ScanLeakage(train, val, options);
      const double gemm = static_cast<double>(r.gemm_flops);
      std::printf(
          "run %d: %.3f s; GEMM %.1f GFLOP = %.1f%% of brute force %.1f GFLOP; "
          "%.1f GFLOP/s run, %.1f GFLOP/s brute-force equivalent; %lld candidates\n",
          rep + 1, r.seconds, gemm / 1e9, 100.0 * gemm / brute, brute / 1e9, gemm / r.seconds / 1e9,
          brute / r.seconds / 1e9, static_cast<long long>(r.candidates));
      if (rep == 0) {
        std::printf(
            "  exact %lld, near %lld, pairs %lld, label conflicts %lld; duplicates "
            "within train %lld (%lld groups), within test %lld (%lld groups); "
            "chi-square %.4f (df %d), p %.4g\n",
            static_cast<long long>(r.exact), static_cast<long long>(r.near),
            static_cast<long long>(r.pair_count), static_cast<long long>(r.label_conflicts),
            static_cast<long long>(r.train_duplicates.exact_duplicate_samples),
            static_cast<long long>(r.train_duplicates.groups),
            static_cast<long long>(r.val_duplicates.exact_duplicate_samples),
            static_cast<long long>(r.val_duplicates.groups), r.chi_square, r.degrees_of_freedom,
            r.p_value);
      }
    }
    std::printf("load average after: %s\n", LoadAverage().c_str());
  } catch (const std::exception& e) {
    std::cerr << "epochal_leakage_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
