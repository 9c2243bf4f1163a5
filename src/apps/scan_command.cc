#include "scan_command.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"
#include "epochal/data/sampler.h"
#include "epochal/report/leakage_json.h"
#include "flags.h"
#include "startup.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A partial report as doubles for Communicator::Gather: a header of counts, then four
// doubles per pair. Indices and counts stay exact below 2^53.
constexpr size_t kHeaderSize = 8;

void Pack(const data::LeakageReport& r, std::vector<double>* out) {
  out->clear();
  out->insert(out->end(), {static_cast<double>(r.val_scanned), static_cast<double>(r.exact),
                           static_cast<double>(r.near), static_cast<double>(r.label_conflicts),
                           static_cast<double>(r.pair_count), static_cast<double>(r.gemm_flops),
                           static_cast<double>(r.candidates), static_cast<double>(r.pairs.size())});
  for (const data::LeakagePair& p : r.pairs) {
    out->insert(out->end(), {static_cast<double>(p.train_index), static_cast<double>(p.val_index),
                             p.rmse, p.label_conflict ? 1.0 : 0.0});
  }
}

// Reads one packed report from `in` at *offset and advances it. `like` supplies the
// fields every rank shares (threshold, max_pairs, training size).
data::LeakageReport Unpack(std::span<const double> in, size_t* offset,
                           const data::LeakageReport& like) {
  EPOCHAL_CHECK(*offset + kHeaderSize <= in.size(), "truncated partial leakage report");
  const double* h = in.data() + *offset;
  auto count = [](double d) { return static_cast<int64_t>(d); };
  data::LeakageReport r;
  r.near_rmse = like.near_rmse;
  r.max_pairs = like.max_pairs;
  r.train_samples = like.train_samples;
  r.val_scanned = count(h[0]);
  r.exact = count(h[1]);
  r.near = count(h[2]);
  r.label_conflicts = count(h[3]);
  r.pair_count = count(h[4]);
  r.gemm_flops = count(h[5]);
  r.candidates = count(h[6]);
  const auto num_pairs = static_cast<size_t>(h[7]);
  *offset += kHeaderSize;
  EPOCHAL_CHECK(*offset + 4 * num_pairs <= in.size(), "truncated partial leakage report");
  for (size_t i = 0; i < num_pairs; ++i) {
    const double* p = in.data() + *offset + 4 * i;
    r.pairs.push_back({count(p[0]), count(p[1]), p[2], p[3] != 0});
  }
  *offset += 4 * num_pairs;
  return r;
}

std::string Summary(const data::LeakageReport& r, const data::Dataset& train,
                    const data::Dataset& val, int ranks) {
  std::ostringstream os;
  char line[256];
  os << "epochal scan: " << val.size() << " validation samples (" << val.name << ") against "
     << train.size() << " training samples (" << train.name << "), " << train.channels << "x"
     << train.height << "x" << train.width << ", " << ranks << (ranks == 1 ? " rank" : " ranks")
     << " x " << omp_get_max_threads() << " threads\n";
  std::snprintf(line, sizeof line,
                "  exact duplicates    %lld validation samples have a byte-identical training "
                "twin\n"
                "  near duplicates     %lld more have a training twin with RMSE < %g (pixels on "
                "[0, 1])\n"
                "  pairs               %lld (exact and near), %lld of them with different "
                "labels\n",
                static_cast<long long>(r.exact), static_cast<long long>(r.near), r.near_rmse,
                static_cast<long long>(r.pair_count), static_cast<long long>(r.label_conflicts));
  os << line;
  std::snprintf(line, sizeof line,
                "  within training     %lld samples repeat an earlier one (%lld distinct images)\n"
                "  within validation   %lld samples repeat an earlier one (%lld distinct images)\n"
                "  class balance       chi-square %.4f, %d degrees of freedom, p = %.4g\n"
                "  scan time           %.2f s\n",
                static_cast<long long>(r.train_duplicates.exact_duplicate_samples),
                static_cast<long long>(r.train_duplicates.groups),
                static_cast<long long>(r.val_duplicates.exact_duplicate_samples),
                static_cast<long long>(r.val_duplicates.groups), r.chi_square, r.degrees_of_freedom,
                r.p_value, r.seconds);
  os << line;
  const size_t shown = std::min<size_t>(10, r.pairs.size());
  if (shown > 0) {
    os << "  first " << shown << " of " << r.pair_count << " pairs:\n"
       << "      train      val      rmse  labels\n";
    for (size_t i = 0; i < shown; ++i) {
      const data::LeakagePair& p = r.pairs[i];
      std::snprintf(line, sizeof line, "    %7lld  %7lld  %8.5f  %d / %d%s\n",
                    static_cast<long long>(p.train_index), static_cast<long long>(p.val_index),
                    p.rmse, train.labels[p.train_index], val.labels[p.val_index],
                    p.label_conflict ? "  (label conflict)" : "");
      os << line;
    }
  }
  return os.str();
}

}  // namespace

data::LeakageReport ShardedLeakageScan(const dist::Communicator& comm, const data::Dataset& train,
                                       const data::Dataset& val,
                                       const data::LeakageOptions& options) {
  const auto start = Clock::now();
  const data::IndexRange share = data::ShardRange(val.size(), comm.rank(), comm.size());
  const data::LeakageReport part = data::ScanLeakage(train, val, options, share.begin, share.end);
  data::LeakageReport total;
  // Rank 0 adds the split statistics while the others may still be scanning.
  if (comm.is_root()) data::AddSplitStatistics(train, val, &total);
  std::vector<double> packed;
  Pack(part, &packed);
  std::vector<double> gathered;
  comm.Gather(packed, comm.is_root() ? &gathered : nullptr);
  if (comm.is_root()) {
    size_t offset = 0;
    for (int rank = 0; rank < comm.size(); ++rank) {
      data::MergeInto(&total, Unpack(gathered, &offset, part));
    }
    EPOCHAL_CHECK(offset == gathered.size(), "leftover data after ", comm.size(),
                  " partial reports");
  }
  // Every rank learns the totals (they feed the LEAKAGE finding on every rank).
  int64_t counts[3] = {total.exact, total.near, total.label_conflicts};
  comm.Broadcast(std::span<int64_t>(counts));
  total.exact = counts[0];
  total.near = counts[1];
  total.label_conflicts = counts[2];
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return total;
}

std::string LeakageSummary(const data::LeakageReport& report, const data::Dataset& train,
                           const data::Dataset& val, int ranks) {
  return Summary(report, train, val, ranks);
}

int Scan(const dist::Communicator& comm, int argc, char** argv) {
  const data::FashionMnistFiles defaults = data::FashionMnistPaths(data::DefaultFashionMnistDir());
  Flags f("epochal scan",
          "Looks for validation samples that leak from the training set: byte-identical twins\n"
          "(hash of the raw bytes) and near twins (per-pixel RMSE on [0, 1] below\n"
          "--near-rmse, found with oneDNN GEMMs and confirmed exactly), duplicates within\n"
          "each split, and a chi-square test of the class balance. Under mpirun/mpiexec each\n"
          "rank scans a share of the validation samples; rank 0 prints and writes --json.");
  f.Value("train-images", "FILE", "training images (IDX, optionally gzipped)",
          defaults.train_images);
  f.Value("train-labels", "FILE", "training labels", defaults.train_labels);
  f.Value("val-images", "FILE", "validation images", defaults.test_images);
  f.Value("val-labels", "FILE", "validation labels", defaults.test_labels);
  f.Value("num-classes", "N", "number of classes (labels must be below it)", "10");
  f.Value("near-rmse", "X", "near-duplicate threshold on per-pixel RMSE, pixels on [0, 1]", "0.01");
  f.Value("max-pairs", "N", "pairs kept in the report (the counts cover all)", "100000");
  f.Value("limit-train", "N", "use only the first N training samples", "all");
  f.Value("limit-val", "N", "use only the first N validation samples", "all");
  f.Value("json", "FILE", "also write the report as JSON to FILE (replaced atomically)");
  f.Value("threads", "T", "oneDNN/OpenMP threads per rank, at most this rank's cores",
          "all cores, shared by local ranks");
  f.Switch("oversubscribe-threads", "keep a --threads above this rank's cores");
  if (!f.Parse(argc, argv, 2)) return 0;

  data::LeakageOptions options;
  data::Dataset train, val;
  std::string json_path;
  AgreeOnStartup(comm, [&] {
    SetThreadsPerRank(f, comm.is_root());
    if (auto v = f.GetDouble("near-rmse")) {
      if (*v < 0) throw InputError("--near-rmse must be >= 0, got " + *f.Get("near-rmse"));
      options.near_rmse = *v;
    }
    if (auto v = f.GetInt("max-pairs", 0)) options.max_pairs = *v;
    const int num_classes = static_cast<int>(f.GetInt("num-classes", 1, 256).value_or(10));
    if (auto v = f.Get("json"); v && comm.is_root()) {
      json_path = *v;
      const fs::path dir = fs::path(json_path).parent_path();
      if (!dir.empty() && !fs::is_directory(dir)) {
        throw InputError("--json " + json_path + ": no directory " + dir.string());
      }
    }
    train = data::LoadIdxDataset(f.Get("train-images").value_or(defaults.train_images),
                                 f.Get("train-labels").value_or(defaults.train_labels), num_classes,
                                 f.GetInt("limit-train", 1).value_or(0));
    val = data::LoadIdxDataset(f.Get("val-images").value_or(defaults.test_images),
                               f.Get("val-labels").value_or(defaults.test_labels), num_classes,
                               f.GetInt("limit-val", 1).value_or(0));
    // An empty range checks the shapes and the options without scanning anything.
    data::ScanLeakage(train, val, options, 0, 0);
  });

  const data::LeakageReport total = ShardedLeakageScan(comm, train, val, options);
  if (!comm.is_root()) return 0;
  std::cout << Summary(total, train, val, comm.size());
  if (!json_path.empty()) {
    WriteFileAtomic(json_path, report::LeakageJson(total));
    std::cout << "  report              " << json_path << "\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace epochal::apps
