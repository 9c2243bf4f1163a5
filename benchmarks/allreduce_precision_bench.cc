// epochal_allreduce_precision_bench: what the bf16 gradient all-reduce
// (training.allreduce_precision "bf16") costs in accuracy and saves in time, on real
// gradients.
//
// Each rank builds the MiniVGGNet model of --config (the same seed everywhere, as the
// trainer's broadcast makes it), runs forward and backward on its own batch of real
// Fashion-MNIST training images (rank r takes samples r*B .. r*B+B-1) and keeps the
// gradients. Those are then all-reduced through dist::GradientBucketer exactly as the
// trainer does (buckets of --bucket-bytes, the step envelope's extras, marked last layer
// first), once in f32 and once in bf16, and compared:
//   - rel_l2: ||bf16 - f32|| / ||f32|| over every gradient element;
//   - max_rel: max |bf16 - f32| / |f32| over the elements with |f32| >= 1e-3 * max |f32|
//     (below that, cancellation makes relative errors meaningless);
//   - the same two for f32 itself against a double-precision sum (f32's own rounding);
//   - time per all-reduce: from the first MarkReady to the end of Wait (conversion and
//     unpacking included, as a step pays them), slowest rank, median of --iters after a
//     barrier each.
// Rank 0 prints one table row per precision.
//
//   mpiexec -n 2 [--mca btl tcp,self] epochal_allreduce_precision_bench
//       [--config F] [--data-dir D] [--batch B] [--bucket-bytes N] [--iters N]
//
// Without the dataset it says so and exits 1: the point is real gradients.
#include <google/protobuf/text_format.h>
#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/gradient_bucketer.h"
#include "epochal/dist/step_envelope.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/layer.h"
#include "epochal/nn/model.h"
#include "epochal/v1/config.pb.h"

namespace {

using namespace epochal;  // NOLINT(google-build-using-namespace): a benchmark's main file
using Clock = std::chrono::steady_clock;

struct Options {
  std::string config =
      std::string(EPOCHAL_SOURCE_DIR) + "/configs/fashion_mnist_minivggnet.textproto";
  std::string data_dir;
  int64_t batch = 32;
  int64_t bucket_bytes = static_cast<int64_t>(dist::kDefaultBucketBytes);
  int iters = 30;
};

[[noreturn]] void Fail(int rank, const std::string& why) {
  if (rank == 0) std::fprintf(stderr, "epochal_allreduce_precision_bench: %s\n", why.c_str());
  MPI_Finalize();
  std::exit(why.rfind("usage", 0) == 0 ? 2 : 1);
}

int64_t ParsePositive(std::string_view text, int64_t hi, int rank, const char* flag) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos ||
      text.size() > 12) {
    Fail(rank, std::string("usage: bad ") + flag);
  }
  const int64_t v = std::strtoll(std::string(text).c_str(), nullptr, 10);
  if (v <= 0 || v > hi) Fail(rank, std::string("usage: bad ") + flag);
  return v;
}

Options ParseOptions(int argc, char** argv, int rank) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) Fail(rank, "usage: missing value for " + std::string(arg));
    const std::string_view value = argv[++i];
    if (arg == "--config") {
      o.config = std::string(value);
    } else if (arg == "--data-dir") {
      o.data_dir = std::string(value);
    } else if (arg == "--batch") {
      o.batch = ParsePositive(value, 4096, rank, "--batch");
    } else if (arg == "--bucket-bytes") {
      o.bucket_bytes = ParsePositive(value, int64_t{1} << 30, rank, "--bucket-bytes");
    } else if (arg == "--iters") {
      o.iters = static_cast<int>(ParsePositive(value, 10000, rank, "--iters"));
    } else {
      Fail(rank,
           "usage: epochal_allreduce_precision_bench [--config F] [--data-dir D] [--batch B] "
           "[--bucket-bytes N] [--iters N]");
    }
  }
  return o;
}

v1::ExperimentConfig LoadConfig(const std::string& path, int rank) {
  std::ifstream in(path);
  if (!in) Fail(rank, "cannot open " + path);
  std::stringstream text;
  text << in.rdbuf();
  v1::ExperimentConfig config;
  if (!google::protobuf::TextFormat::ParseFromString(text.str(), &config)) {
    Fail(rank, "cannot parse " + path);
  }
  return config;
}

struct Errors {
  double rel_l2 = 0;   // ||a - ref|| / ||ref||
  double max_rel = 0;  // over |ref| >= 1e-3 max |ref|
  int64_t considered = 0;
};

template <typename T>
Errors Compare(const std::vector<float>& a, const std::vector<T>& ref) {
  double diff2 = 0, ref2 = 0, ref_max = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = static_cast<double>(ref[i]);
    const double d = static_cast<double>(a[i]) - r;
    diff2 += d * d;
    ref2 += r * r;
    ref_max = std::max(ref_max, std::fabs(r));
  }
  Errors e;
  e.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : 0.0;
  const double floor = 1e-3 * ref_max;
  for (size_t i = 0; i < a.size(); ++i) {
    const double r = static_cast<double>(ref[i]);
    if (std::fabs(r) < floor || r == 0) continue;
    e.max_rel = std::max(e.max_rel, std::fabs(static_cast<double>(a[i]) - r) / std::fabs(r));
    ++e.considered;
  }
  return e;
}

struct Run {
  std::vector<float> sums;  // every gradient, concatenated, after the all-reduce
  double median_s = 0;
  double min_s = 0;
  size_t wire_bytes = 0;
  size_t buckets = 0;
};

// All-reduces `local` (this rank's gradients, per parameter) `iters` + 2 times through a
// bucketer in `wire`; the first two are warm-up.
Run AllReduce(const dist::Communicator& world, const std::vector<std::vector<float>>& local,
              dist::WirePrecision wire, const Options& o) {
  std::vector<std::vector<float>> grads = local;
  std::vector<std::span<float>> spans;
  for (auto& g : grads) spans.emplace_back(g);
  const size_t extras = dist::StepEnvelope::Size(world.size());
  dist::GradientBucketer bucketer(world, spans, static_cast<size_t>(o.bucket_bytes), extras,
                                  dist::Progress::kPolling, std::chrono::microseconds(200), wire);
  Run run;
  run.buckets = bucketer.num_buckets();
  for (size_t b = 0; b < bucketer.num_buckets(); ++b)
    run.wire_bytes += bucketer.bucket_wire_bytes(b);
  std::vector<double> times;
  for (int it = 0; it < o.iters + 2; ++it) {
    for (size_t p = 0; p < grads.size(); ++p)
      std::copy(local[p].begin(), local[p].end(), grads[p].begin());
    MPI_Barrier(world.comm());
    const Clock::time_point t0 = Clock::now();
    bucketer.BeginStep();
    std::fill(bucketer.extras().begin(), bucketer.extras().end(), 1.0f);
    for (size_t p = grads.size(); p-- > 0;) {
      bucketer.MarkReady(p);
      bucketer.Poll();
    }
    bucketer.Wait();
    double local_s = std::chrono::duration<double>(Clock::now() - t0).count();
    double slowest = 0;
    MPI_Allreduce(&local_s, &slowest, 1, MPI_DOUBLE, MPI_MAX, world.comm());
    if (it >= 2) times.push_back(slowest);
    for (float x : bucketer.extras()) {
      if (x != static_cast<float>(world.size()))
        Fail(world.rank(), "extras were not summed exactly");
    }
  }
  std::sort(times.begin(), times.end());
  run.median_s = times[times.size() / 2];
  run.min_s = times.front();
  for (const auto& g : grads) run.sums.insert(run.sums.end(), g.begin(), g.end());
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const Options o = ParseOptions(argc, argv, rank);
  omp_set_num_threads(1);  // ranks share the machine's cores

  const v1::ExperimentConfig config = LoadConfig(o.config, rank);
  std::string dir = o.data_dir;
  if (dir.empty()) dir = config.data().data_dir();
  if (dir.empty()) dir = data::DefaultFashionMnistDir();
  if (!std::ifstream(data::FashionMnistPaths(dir).train_images).good()) {
    Fail(rank, "no Fashion-MNIST training images in " + dir + " (real gradients need them)");
  }
  const data::Dataset ds = data::LoadFashionMnist(dir, data::Split::kTrain, o.batch * size);
  if (ds.size() < o.batch * size) Fail(rank, "fewer training samples than ranks x --batch");

  // One batch's gradients on this rank: the same weights everywhere (same seed), its own
  // samples.
  nn::Model model(config.model(), o.batch, config.training().seed());
  std::vector<int64_t> ids(static_cast<size_t>(o.batch));
  std::iota(ids.begin(), ids.end(), int64_t{rank} * o.batch);
  std::vector<float> images(static_cast<size_t>(o.batch * ds.sample_size()));
  std::vector<int32_t> labels(static_cast<size_t>(o.batch));
  data::GatherBatch(ds, ids, images.data(), labels.data());
  nn::StepContext ctx;
  ctx.mode = nn::Mode::kTrain;
  ctx.seed = config.training().seed();
  ctx.sample_ids = ids;
  const nn::BatchResult br = model.Forward(ctx, images.data(), labels);
  // The trainer scales by the global batch, so the all-reduced sum is the mean gradient.
  model.Backward(ctx, 1.0f / static_cast<float>(o.batch * size));
  model.Synchronize();
  std::vector<std::vector<float>> local;
  size_t total = 0;
  for (nn::Parameter* p : model.parameters()) {
    const std::span<float> g = nn::Span(p->grad);
    local.emplace_back(g.begin(), g.end());
    total += g.size();
  }

  // The reference: the same sum in double.
  std::vector<double> exact;
  exact.reserve(total);
  for (const auto& g : local) exact.insert(exact.end(), g.begin(), g.end());
  MPI_Allreduce(MPI_IN_PLACE, exact.data(), static_cast<int>(exact.size()), MPI_DOUBLE, MPI_SUM,
                MPI_COMM_WORLD);

  const dist::Communicator world;
  const Run f32 = AllReduce(world, local, dist::WirePrecision::kF32, o);
  const Run bf16 = AllReduce(world, local, dist::WirePrecision::kBf16, o);
  const Errors f32_err = Compare(f32.sums, exact);
  const Errors bf16_err = Compare(bf16.sums, f32.sums);
  const Errors bf16_exact = Compare(bf16.sums, exact);

  if (rank == 0) {
    char library[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int len = 0;
    MPI_Get_library_version(library, &len);
    std::string lib(library);
    lib = lib.substr(0, lib.find_first_of(",\n"));
    std::printf(
        "# %d ranks, %s; %zu gradient floats in %zu buckets of <= %lld bytes; batch %lld "
        "per rank (loss %.4f on rank 0); %d timed all-reduces\n",
        size, lib.c_str(), total, f32.buckets, static_cast<long long>(o.bucket_bytes),
        static_cast<long long>(o.batch), br.loss_sum / static_cast<double>(o.batch), o.iters);
    std::printf(
        "# rel_l2 = ||x - ref|| / ||ref||; max_rel over |ref| >= 1e-3 max|ref| (%lld of %zu "
        "elements); time: slowest rank, first MarkReady to end of Wait\n",
        static_cast<long long>(bf16_err.considered), total);
    std::printf("%-6s %-6s %12s %12s %12s %12s %10s\n", "wire", "ref", "rel_l2", "max_rel",
                "wire_bytes", "median_us", "min_us");
    std::printf("%-6s %-6s %12.3e %12.3e %12zu %12.1f %10.1f\n", "f32", "double", f32_err.rel_l2,
                f32_err.max_rel, f32.wire_bytes, f32.median_s * 1e6, f32.min_s * 1e6);
    std::printf("%-6s %-6s %12.3e %12.3e %12zu %12.1f %10.1f\n", "bf16", "f32", bf16_err.rel_l2,
                bf16_err.max_rel, bf16.wire_bytes, bf16.median_s * 1e6, bf16.min_s * 1e6);
    std::printf("%-6s %-6s %12.3e %12.3e\n", "bf16", "double", bf16_exact.rel_l2,
                bf16_exact.max_rel);
    std::printf("bf16/f32 time: %.2f\n", bf16.median_s / f32.median_s);
    std::fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}
