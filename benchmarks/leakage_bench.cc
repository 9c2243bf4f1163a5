// epochal_leakage_bench: the leakage scan of Fashion-MNIST's test split (10k) against its
// training split (60k), timed, with the figures that explain the time.
//
//   epochal_leakage_bench [--data-dir=DIR] [--near-rmse=X] [--transformed-rmse=X]
//                         [--val-block=N] [--train-block=N] [--no-pruning] [--repeat=R]
//                         [--threads=T] [--plant=N] [--svg=FILE] [--list=N]
//                         [--min-similarity=X] [--candidates=K]
//
// Prints the machine's load average (the figures mean little on a busy machine), the
// oneDNN sgemm rate of one scan-shaped GEMM right now, then per repetition the scan's wall
// time (and the part of it the transformed kinds took), the GEMM work it ran after norm
// pruning against the brute-force 2 * 10k * 60k * 784 flops, the rate both imply, and the
// counts it found per kind. The target is 10 s or less on 2 cores (--threads=2).
//
// --plant=N replaces 4 N test images with transformed copies of random training images
// (N shifted by 1-2 pixels in x and/or y, zero or edge fill; N with gain in [0.7, 1.3] and
// offset in [-0.1, 0.1]; N mirrored; N mirrored and shifted) and prints the recall per
// kind: the planted copies whose source pair is found, and those labelled with their kind.
// --svg writes the first run's leakage_pairs.svg; --list prints its first N pairs.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "epochal/core/atomic_file.h"
#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"
#include "epochal/report/leakage_svg.h"

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

struct Plant {
  epochal::data::LeakagePair pair;  // source, position, transform
  epochal::data::LeakageKind kind;  // the kind it should be labelled with
};

// Plants 4 n transformed copies into `val` (see the file comment).
std::vector<Plant> PlantCopies(const epochal::data::Dataset& train, epochal::data::Dataset* val,
                               int64_t n, uint64_t seed) {
  using epochal::data::LeakageKind;
  std::mt19937_64 rng(seed);
  std::vector<int64_t> positions(static_cast<size_t>(val->size()));
  for (int64_t i = 0; i < val->size(); ++i) positions[i] = i;
  std::shuffle(positions.begin(), positions.end(), rng);
  std::uniform_int_distribution<int64_t> source(0, train.size() - 1);
  std::uniform_int_distribution<int> shift(-2, 2);
  std::uniform_real_distribution<double> gain(0.7, 1.3), offset(-0.1, 0.1);
  std::vector<Plant> plants;
  for (int group = 0; group < 4; ++group) {
    for (int64_t i = 0; i < n; ++i) {
      Plant p;
      p.pair.train_index = source(rng);
      p.pair.val_index = positions.at(plants.size());
      if (group == 0 || group == 3) {
        do {
          p.pair.dx = shift(rng);
          p.pair.dy = shift(rng);
        } while (p.pair.dx == 0 && p.pair.dy == 0);
      }
      if (group == 1) {
        p.pair.gain = gain(rng);
        p.pair.offset = offset(rng);
      }
      p.pair.mirrored = group >= 2;
      p.kind = group == 0   ? LeakageKind::kShifted
               : group == 1 ? LeakageKind::kPhotometric
                            : LeakageKind::kMirrored;
      std::vector<uint8_t> out(static_cast<size_t>(train.sample_size()));
      epochal::data::TransformSample(train, p.pair, (i % 2) == 1,
                                     train.Sample(p.pair.train_index).data(), out.data());
      std::copy(out.begin(), out.end(),
                val->pixels.begin() + p.pair.val_index * val->sample_size());
      val->labels[p.pair.val_index] = train.labels[p.pair.train_index];
      plants.push_back(p);
    }
  }
  return plants;
}

// Recall per planted group: found (a pair with the source) and labelled right.
void PrintRecall(const std::vector<Plant>& plants, const epochal::data::LeakageReport& r,
                 const epochal::data::Dataset& train) {
  using epochal::data::LeakageKind;
  const char* names[4] = {"shifted", "photometric", "mirrored", "mirrored+shifted"};
  const size_t n = plants.size() / 4;
  for (size_t g = 0; g < 4; ++g) {
    int found = 0, right = 0, simpler = 0;
    for (size_t i = g * n; i < (g + 1) * n; ++i) {
      const Plant& p = plants[i];
      bool hit = false;
      int best = epochal::data::kLeakageKinds;
      for (const auto& q : r.pairs) {
        if (q.val_index != p.pair.val_index) continue;
        best = std::min(best, static_cast<int>(q.kind));
        if (q.train_index == p.pair.train_index) hit = true;
      }
      found += hit;
      if (!hit && std::getenv("LEAKAGE_BENCH_MISSES")) {
        std::printf("    missed val %lld train %lld dx %+d dy %+d mirror %d gain %.2f label %d\n",
                    static_cast<long long>(p.pair.val_index),
                    static_cast<long long>(p.pair.train_index), p.pair.dx, p.pair.dy,
                    p.pair.mirrored ? 1 : 0, p.pair.gain, train.labels[p.pair.train_index]);
      }
      right += hit && best == static_cast<int>(p.kind);
      simpler += hit && best < static_cast<int>(p.kind);
    }
    std::printf("  planted %-17s %4zu: found %4d (%.2f%%), labelled %s %4d, simpler kind %d\n",
                names[g], n, found, 100.0 * found / static_cast<double>(n),
                epochal::data::LeakageKindName(plants[g * n].kind), right, simpler);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace epochal::data;
  std::string dir = DefaultFashionMnistDir();
  LeakageOptions options;
  int repeat = 3;
  int64_t plant = 0, list = 0;
  std::string svg;
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
    } else if (const char* v6 = value("--transformed-rmse")) {
      options.transformed_rmse = std::atof(v6);
      options.transforms = options.transformed_rmse > 0;
    } else if (const char* v10 = value("--min-similarity")) {
      options.min_similarity = std::atof(v10);
    } else if (const char* v11 = value("--candidates")) {
      options.candidates_per_sample = std::atoi(v11);
    } else if (const char* v7 = value("--plant")) {
      plant = std::max(0LL, std::atoll(v7));
    } else if (const char* v8 = value("--svg")) {
      svg = v8;
    } else if (const char* v9 = value("--list")) {
      list = std::max(0LL, std::atoll(v9));
    } else if (arg == "--no-pruning") {
      options.pruning = false;
    } else {
      std::cerr << "usage: epochal_leakage_bench [--data-dir=DIR] [--near-rmse=X] "
                   "[--transformed-rmse=X] [--val-block=N] [--train-block=N] [--no-pruning] "
                   "[--repeat=R] [--threads=T] [--plant=N] [--svg=FILE] [--list=N] "
                   "[--min-similarity=X] [--candidates=K]\n";
      return 2;
    }
  }
  try {
    const auto load_start = Clock::now();
    const Dataset train = LoadFashionMnist(dir, Split::kTrain);
    Dataset val = LoadFashionMnist(dir, Split::kTest);
    std::vector<Plant> plants;
    if (plant > 0) plants = PlantCopies(train, &val, plant, 1);
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
          "run %d: %.3f s (transformed kinds %.3f s); GEMM %.1f GFLOP = %.1f%% of brute force "
          "%.1f GFLOP; %.1f GFLOP/s run, %.1f GFLOP/s brute-force equivalent; %lld candidates; "
          "signature GEMM %.1f GFLOP, %lld transformed candidates verified\n",
          rep + 1, r.seconds, r.transform_seconds, gemm / 1e9, 100.0 * gemm / brute, brute / 1e9,
          gemm / r.seconds / 1e9, brute / r.seconds / 1e9, static_cast<long long>(r.candidates),
          static_cast<double>(r.transform_gemm_flops) / 1e9,
          static_cast<long long>(r.transform_candidates));
      if (rep == 0) {
        std::printf(
            "  flagged %lld: exact %lld, near %lld, photometric %lld, shifted %lld, "
            "mirrored %lld\n",
            static_cast<long long>(r.flagged()), static_cast<long long>(r.exact),
            static_cast<long long>(r.near), static_cast<long long>(r.photometric),
            static_cast<long long>(r.shifted), static_cast<long long>(r.mirrored));
        if (!plants.empty()) PrintRecall(plants, r, train);
        for (int64_t i = 0; i < std::min<int64_t>(list, static_cast<int64_t>(r.pairs.size()));
             ++i) {
          const LeakagePair& p = r.pairs[i];
          std::printf(
              "  pair train %5lld val %5lld labels %d/%d %-11s rmse %.4f mirror %d "
              "dx %+d dy %+d gain %.3f offset %+.3f\n",
              static_cast<long long>(p.train_index), static_cast<long long>(p.val_index),
              train.labels[p.train_index], val.labels[p.val_index], LeakageKindName(p.kind), p.rmse,
              p.mirrored ? 1 : 0, p.dx, p.dy, p.gain, p.offset);
        }
        if (!svg.empty())
          epochal::WriteFileAtomic(svg, epochal::report::LeakagePairsSvg(r, train, val));
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
