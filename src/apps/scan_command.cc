#include "scan_command.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"
#include "epochal/data/sampler.h"
#include "epochal/report/leakage_json.h"
#include "epochal/report/leakage_svg.h"
#include "flags.h"
#include "startup.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A partial report as doubles for Communicator::Gather: a header of counts, then
// kPairSize doubles per pair. Indices and counts stay exact below 2^53.
constexpr size_t kHeaderSize = 14;
constexpr size_t kPairSize = 10;

void Pack(const data::LeakageReport& r, std::vector<double>* out) {
  out->clear();
  auto d = [](int64_t v) { return static_cast<double>(v); };
  out->insert(out->end(), {d(r.val_scanned), d(r.exact), d(r.near), d(r.photometric), d(r.shifted),
                           d(r.mirrored), d(r.label_conflicts), d(r.pair_count), d(r.gemm_flops),
                           d(r.candidates), d(r.transform_gemm_flops), d(r.transform_candidates),
                           r.transform_seconds, d(static_cast<int64_t>(r.pairs.size()))});
  for (const data::LeakagePair& p : r.pairs) {
    out->insert(out->end(),
                {d(p.train_index), d(p.val_index), p.rmse, p.label_conflict ? 1.0 : 0.0,
                 static_cast<double>(p.kind), p.mirrored ? 1.0 : 0.0, static_cast<double>(p.dx),
                 static_cast<double>(p.dy), p.gain, p.offset});
  }
}

// Reads one packed report from `in` at *offset and advances it. `like` supplies the
// fields every rank shares (thresholds, max_pairs, training size).
data::LeakageReport Unpack(std::span<const double> in, size_t* offset,
                           const data::LeakageReport& like) {
  EPOCHAL_CHECK(*offset + kHeaderSize <= in.size(), "truncated partial leakage report");
  const double* h = in.data() + *offset;
  auto count = [](double d) { return static_cast<int64_t>(d); };
  data::LeakageReport r;
  r.near_rmse = like.near_rmse;
  r.max_pairs = like.max_pairs;
  r.transforms = like.transforms;
  r.transformed_rmse = like.transformed_rmse;
  r.max_shift = like.max_shift;
  r.train_samples = like.train_samples;
  r.val_scanned = count(h[0]);
  r.exact = count(h[1]);
  r.near = count(h[2]);
  r.photometric = count(h[3]);
  r.shifted = count(h[4]);
  r.mirrored = count(h[5]);
  r.label_conflicts = count(h[6]);
  r.pair_count = count(h[7]);
  r.gemm_flops = count(h[8]);
  r.candidates = count(h[9]);
  r.transform_gemm_flops = count(h[10]);
  r.transform_candidates = count(h[11]);
  r.transform_seconds = h[12];
  const auto num_pairs = static_cast<size_t>(h[13]);
  *offset += kHeaderSize;
  EPOCHAL_CHECK(*offset + kPairSize * num_pairs <= in.size(), "truncated partial leakage report");
  for (size_t i = 0; i < num_pairs; ++i) {
    const double* p = in.data() + *offset + kPairSize * i;
    data::LeakagePair q{count(p[0]), count(p[1]), p[2], p[3] != 0};
    const int64_t kind = count(p[4]);
    EPOCHAL_CHECK(kind >= 0 && kind < data::kLeakageKinds, "leakage pair kind ", kind);
    q.kind = static_cast<data::LeakageKind>(kind);
    q.mirrored = p[5] != 0;
    q.dx = static_cast<int>(p[6]);
    q.dy = static_cast<int>(p[7]);
    q.gain = p[8];
    q.offset = p[9];
    r.pairs.push_back(q);
  }
  *offset += kPairSize * num_pairs;
  return r;
}

std::string Summary(const data::LeakageReport& r, const data::Dataset& train,
                    const data::Dataset& val, int ranks) {
  std::ostringstream os;
  char line[1024];
  os << "epochal scan: " << val.size() << " validation samples (" << val.name << ") against "
     << train.size() << " training samples (" << train.name << "), " << train.channels << "x"
     << train.height << "x" << train.width << ", " << ranks << (ranks == 1 ? " rank" : " ranks")
     << " x " << omp_get_max_threads() << " threads\n";
  std::snprintf(line, sizeof line,
                "  exact duplicates    %lld validation samples have a byte-identical training "
                "twin\n"
                "  near duplicates     %lld more have a training twin with RMSE < %g (pixels on "
                "[0, 1])\n",
                static_cast<long long>(r.exact), static_cast<long long>(r.near), r.near_rmse);
  os << line;
  if (r.transforms) {
    std::snprintf(line, sizeof line,
                  "  photometric         %lld more are a training sample with gain/offset "
                  "changed\n"
                  "  shifted             %lld more are a training sample shifted by up to %d "
                  "pixels\n"
                  "  mirrored            %lld more are a training sample mirrored left-right\n"
                  "                      (transformed twins: RMSE < %g after the transform)\n",
                  static_cast<long long>(r.photometric), static_cast<long long>(r.shifted),
                  r.max_shift, static_cast<long long>(r.mirrored), r.transformed_rmse);
    os << line;
  } else {
    os << "  transformed         not searched (--transformed-rmse 0)\n";
  }
  std::snprintf(line, sizeof line,
                "  flagged             %lld validation samples in all\n"
                "  pairs               %lld, %lld of them with different labels\n",
                static_cast<long long>(r.flagged()), static_cast<long long>(r.pair_count),
                static_cast<long long>(r.label_conflicts));
  os << line;
  std::snprintf(line, sizeof line,
                "  within training     %lld samples repeat an earlier one (%lld distinct images)\n"
                "  within validation   %lld samples repeat an earlier one (%lld distinct images)\n"
                "  class balance       chi-square %.4f, %d degrees of freedom, p = %.4g\n"
                "  scan time           %.2f s (%.2f s of it for the transformed kinds)\n",
                static_cast<long long>(r.train_duplicates.exact_duplicate_samples),
                static_cast<long long>(r.train_duplicates.groups),
                static_cast<long long>(r.val_duplicates.exact_duplicate_samples),
                static_cast<long long>(r.val_duplicates.groups), r.chi_square, r.degrees_of_freedom,
                r.p_value, r.seconds, r.transform_seconds);
  os << line;
  const size_t shown = std::min<size_t>(10, r.pairs.size());
  if (shown > 0) {
    os << "  first " << shown << " of " << r.pair_count << " pairs:\n"
       << "      train      val      rmse  kind          transform               labels\n";
    for (size_t i = 0; i < shown; ++i) {
      const data::LeakagePair& p = r.pairs[i];
      char transform[64] = "";
      if (p.kind != data::LeakageKind::kExact && p.kind != data::LeakageKind::kNear) {
        std::snprintf(transform, sizeof transform, "%sdx %+d dy %+d x%.2f %+.2f",
                      p.mirrored ? "mirror " : "", p.dx, p.dy, p.gain, p.offset);
      }
      std::snprintf(line, sizeof line, "    %7lld  %7lld  %8.5f  %-12s  %-22s  %d / %d%s\n",
                    static_cast<long long>(p.train_index), static_cast<long long>(p.val_index),
                    p.rmse, data::LeakageKindName(p.kind), transform, train.labels[p.train_index],
                    val.labels[p.val_index], p.label_conflict ? "  (label conflict)" : "");
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
  int64_t counts[6] = {total.exact,   total.near,     total.photometric,
                       total.shifted, total.mirrored, total.label_conflicts};
  comm.Broadcast(std::span<int64_t>(counts));
  total.exact = counts[0];
  total.near = counts[1];
  total.photometric = counts[2];
  total.shifted = counts[3];
  total.mirrored = counts[4];
  total.label_conflicts = counts[5];
  total.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return total;
}

std::string LeakageSummary(const data::LeakageReport& report, const data::Dataset& train,
                           const data::Dataset& val, int ranks) {
  return Summary(report, train, val, ranks);
}

namespace {

// True when `path` starts with the gzip magic.
bool IsGzip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

// --write-clean-val: the validation set without its flagged samples, as IDX files named
// like the inputs, compressed when they are. Returns the two paths.
std::pair<std::string, std::string> WriteCleanVal(const data::LeakageReport& report,
                                                  const data::Dataset& val, const fs::path& dir,
                                                  const std::string& images_in,
                                                  const std::string& labels_in) {
  if (report.pair_count > static_cast<int64_t>(report.pairs.size())) {
    throw InputError("--write-clean-val: the report keeps " + std::to_string(report.pairs.size()) +
                     " of " + std::to_string(report.pair_count) +
                     " pairs; raise --max-pairs to at least " + std::to_string(report.pair_count));
  }
  const data::Dataset clean = data::WithoutLeakedSamples(val, report, val.name + " (clean)");
  const fs::path images = dir / fs::path(images_in).filename();
  const fs::path labels = dir / fs::path(labels_in).filename();
  for (const auto& [out, in] : {std::pair{images, images_in}, std::pair{labels, labels_in}}) {
    std::error_code ec;
    if (fs::exists(out) && fs::equivalent(out, in, ec)) {
      throw InputError("--write-clean-val " + dir.string() + ": would overwrite the input " + in);
    }
  }
  data::IdxArray image_array;
  image_array.dims = {clean.size(), clean.height, clean.width};
  image_array.data = clean.pixels;
  data::IdxArray label_array;
  label_array.dims = {clean.size()};
  label_array.data = clean.labels;
  data::WriteIdx(images.string(), image_array, IsGzip(images_in));
  data::WriteIdx(labels.string(), label_array, IsGzip(labels_in));
  return {images.string(), labels.string()};
}

fs::path CheckedDir(const std::string& flag, const std::string& value) {
  std::error_code ec;
  fs::create_directories(value, ec);
  if (ec || !fs::is_directory(value)) {
    throw InputError("--" + flag + " " + value + ": cannot create the directory" +
                     (ec ? ": " + ec.message() : std::string()));
  }
  return value;
}

}  // namespace

int Scan(const dist::Communicator& comm, int argc, char** argv) {
  const data::FashionMnistFiles defaults = data::FashionMnistPaths(data::DefaultFashionMnistDir());
  Flags f("epochal scan",
          "Looks for validation samples that leak from the training set, each labelled with\n"
          "its kind:\n"
          "  exact        byte-identical (hash of the raw bytes, confirmed byte by byte);\n"
          "  near         per-pixel RMSE on [0, 1] below --near-rmse (oneDNN GEMMs, confirmed\n"
          "               exactly);\n"
          "  photometric  a training sample with brightness/contrast changed (gain in\n"
          "               [0.7, 1.3], offset up to 0.25, clipped);\n"
          "  shifted      a training sample shifted by up to --max-shift pixels in x and y\n"
          "               (any fill), maybe with gain/offset changed;\n"
          "  mirrored     a training sample mirrored left-right, maybe shifted or changed.\n"
          "A transformed twin has RMSE below --transformed-rmse after the best transform,\n"
          "over the pixels the shifted training image covers; candidates come from\n"
          "shift-, gain- and mirror-tolerant signatures and every pair is verified on the raw\n"
          "bytes. Also reports duplicates within each split and a chi-square test of the\n"
          "class balance. --out writes leakage.json and leakage_pairs.svg (an image grid of\n"
          "the pairs, to check them by eye); --write-clean-val writes the validation set\n"
          "without its flagged samples. Under mpirun/mpiexec each rank scans a share of the\n"
          "validation samples; rank 0 prints and writes the files.");
  f.Value("train-images", "FILE", "training images (IDX, optionally gzipped)",
          defaults.train_images);
  f.Value("train-labels", "FILE", "training labels", defaults.train_labels);
  f.Value("val-images", "FILE", "validation images", defaults.test_images);
  f.Value("val-labels", "FILE", "validation labels", defaults.test_labels);
  f.Value("num-classes", "N", "number of classes (labels must be below it)", "10");
  f.Value("near-rmse", "X", "near-duplicate threshold on per-pixel RMSE, pixels on [0, 1]", "0.01");
  f.Value("transformed-rmse", "X",
          "threshold on the RMSE after the transform for the photometric, shifted and mirrored "
          "kinds; 0 turns them off",
          "0.01");
  f.Value("max-shift", "N", "largest shift tried in x and y, pixels (0..4)", "2");
  f.Value("max-pairs", "N", "pairs kept in the report (the counts cover all)", "100000");
  f.Value("limit-train", "N", "use only the first N training samples", "all");
  f.Value("limit-val", "N", "use only the first N validation samples", "all");
  f.Value("json", "FILE", "also write the report as JSON to FILE (replaced atomically)");
  f.Value("out", "DIR", "write DIR/leakage.json and DIR/leakage_pairs.svg (created if missing)");
  f.Value("write-clean-val", "DIR",
          "write the validation set without its flagged samples to DIR, as IDX files named like "
          "--val-images and --val-labels (gzipped when they are); give them to `epochal train` "
          "as data.val_images and data.val_labels");
  f.Value("threads", "T", "oneDNN/OpenMP threads per rank, at most this rank's cores",
          "all cores, shared by local ranks");
  f.Switch("oversubscribe-threads", "keep a --threads above this rank's cores");
  if (!f.Parse(argc, argv, 2)) return 0;

  data::LeakageOptions options;
  data::Dataset train, val;
  std::string json_path;
  std::optional<fs::path> out_dir, clean_dir;
  const std::string val_images = f.Get("val-images").value_or(defaults.test_images);
  const std::string val_labels = f.Get("val-labels").value_or(defaults.test_labels);
  AgreeOnStartup(comm, [&] {
    SetThreadsPerRank(f, comm.is_root());
    if (auto v = f.GetDouble("near-rmse")) {
      if (*v < 0) throw InputError("--near-rmse must be >= 0, got " + *f.Get("near-rmse"));
      options.near_rmse = *v;
    }
    if (auto v = f.GetDouble("transformed-rmse")) {
      if (!(*v >= 0)) {
        throw InputError("--transformed-rmse must be >= 0, got " + *f.Get("transformed-rmse"));
      }
      options.transformed_rmse = *v;
      options.transforms = *v > 0;
    }
    if (auto v = f.GetInt("max-shift", 0, 4)) options.max_shift = static_cast<int>(*v);
    if (auto v = f.GetInt("max-pairs", 0)) options.max_pairs = *v;
    const int num_classes = static_cast<int>(f.GetInt("num-classes", 1, 256).value_or(10));
    if (auto v = f.Get("json"); v && comm.is_root()) {
      json_path = *v;
      const fs::path dir = fs::path(json_path).parent_path();
      if (!dir.empty() && !fs::is_directory(dir)) {
        throw InputError("--json " + json_path + ": no directory " + dir.string());
      }
    }
    if (auto v = f.Get("out"); v && comm.is_root()) out_dir = CheckedDir("out", *v);
    if (auto v = f.Get("write-clean-val"); v && comm.is_root()) {
      clean_dir = CheckedDir("write-clean-val", *v);
    }
    train = data::LoadIdxDataset(f.Get("train-images").value_or(defaults.train_images),
                                 f.Get("train-labels").value_or(defaults.train_labels), num_classes,
                                 f.GetInt("limit-train", 1).value_or(0));
    val = data::LoadIdxDataset(val_images, val_labels, num_classes,
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
  if (out_dir) {
    WriteFileAtomic(*out_dir / "leakage.json", report::LeakageJson(total));
    WriteFileAtomic(*out_dir / "leakage_pairs.svg", report::LeakagePairsSvg(total, train, val));
    std::cout << "  report              " << (*out_dir / "leakage.json").string() << "\n"
              << "  pairs, as images    " << (*out_dir / "leakage_pairs.svg").string() << "\n";
  }
  if (clean_dir) {
    const auto [images, labels] = WriteCleanVal(total, val, *clean_dir, val_images, val_labels);
    std::cout << "  clean validation    " << val.size() - total.flagged() << " samples in "
              << images << " and " << labels << "\n"
              << "                      (train on them with data { val_images: \"" << images
              << "\" val_labels: \"" << labels << "\" })\n";
  }
  std::cout.flush();
  return 0;
}

}  // namespace epochal::apps
