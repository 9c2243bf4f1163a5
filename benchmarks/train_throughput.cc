// epochal_bench: how fast and how lean one training step of a model is on this machine.
//
// In one run it prints
//   1. the oneDNN sgemm peak (best GFLOP/s of dnnl_sgemm over square sizes), and the
//      oneDNN matmul peak in the run's precision (f32, or bf16 operands with f32
//      results): the yardsticks for what the CPU can do with the same threads;
//   2. the model's forward and training FLOPs per image (Model::*FlopsPerSample);
//   3. training throughput: images/s, ms/step, achieved GFLOP/s and its ratio to the
//      sgemm peak and to the matmul peak of the same precision, with the step split
//      into data, forward, backward and optimizer;
//   4. a per-layer forward/backward breakdown (separate plans on the model's layers);
//   5. the peak resident set size (VmHWM) against the 1 GiB target.
// --json adds one machine-readable line with every figure. docs/benchmarks.md explains
// the figures and records measured values.
//
// Timing: steady_clock around each phase. Model::Forward and Model::Backward return
// with the stream drained (dropout and the loss read results on the host), and the
// optimizer runs on the host, so a phase's time is the work it queued; Synchronize()
// after Forward is kept anyway so the split stays honest if that ever changes.

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/data/idx.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/layer.h"
#include "epochal/nn/model.h"
#include "epochal/nn/precision.h"
#include "epochal/optim/sgd.h"
#include "epochal/v1/config.pb.h"

#ifndef EPOCHAL_SOURCE_DIR
#define EPOCHAL_SOURCE_DIR "."
#endif

namespace epochal::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The figure the issue sets for a training step (fraction of the sgemm peak).
constexpr double kTargetPeakFraction = 0.40;
// The figure the issue sets for memory: peak RSS below 1 GiB.
constexpr double kTargetRssMiB = 1024.0;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Options {
  int threads = 0;  // 0: every core.
  int64_t steps = 200;
  int64_t warmup = 10;
  int64_t batch_size = 0;  // 0: the config's training.batch_size, else 32.
  int64_t limit = 4096;    // Fashion-MNIST samples to load.
  std::string config = EPOCHAL_SOURCE_DIR "/configs/fashion_mnist_minivggnet.textproto";
  std::string data_dir;  // Empty: the config's data_dir, else the Debian package's.
  bool per_layer = true;
  bool sgemm = true;
  bool json = false;
  std::string precision = "f32";  // auto, f32 or bf16 (nn/precision.h).
};

constexpr const char* kUsage =
    "usage: epochal_bench [--threads T] [--steps N] [--warmup N] [--batch-size B]\n"
    "                     [--config FILE] [--data-dir DIR] [--limit N]\n"
    "                     [--no-per-layer] [--no-sgemm] [--json]\n"
    "                     [--precision auto|f32|bf16]\n"
    "Prints the oneDNN sgemm peak, the model's training FLOPs per image, training\n"
    "throughput with a forward/backward/optimizer split, a per-layer breakdown and the\n"
    "peak RSS. See docs/benchmarks.md.\n";

int64_t ParseInt(const std::string& flag, const char* value, int64_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < min) {
    throw InputError(detail::StrCat(flag, ": expected an integer >= ", min, ", got '", value, "'"));
  }
  return static_cast<int64_t>(v);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) throw InputError(a + ": missing value");
      return argv[++i];
    };
    if (a == "--threads") {
      o.threads = static_cast<int>(ParseInt(a, value(), 1));
    } else if (a == "--steps") {
      o.steps = ParseInt(a, value(), 1);
    } else if (a == "--warmup") {
      o.warmup = ParseInt(a, value(), 0);
    } else if (a == "--batch-size") {
      o.batch_size = ParseInt(a, value(), 1);
    } else if (a == "--limit") {
      o.limit = ParseInt(a, value(), 1);
    } else if (a == "--config") {
      o.config = value();
    } else if (a == "--data-dir") {
      o.data_dir = value();
    } else if (a == "--no-per-layer") {
      o.per_layer = false;
    } else if (a == "--no-sgemm") {
      o.sgemm = false;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--precision") {
      o.precision = value();
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      throw InputError("unknown flag '" + a + "' (see --help)");
    }
  }
  return o;
}

// Collects text-format errors so the message names the file, line and column.
class ConfigErrors final : public google::protobuf::io::ErrorCollector {
 public:
  explicit ConfigErrors(std::string path) : path_(std::move(path)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (!first_.empty()) return;
    first_ = detail::StrCat(path_, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string path_;
  std::string first_;
};

v1::ExperimentConfig LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("config " + path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  v1::ExperimentConfig config;
  google::protobuf::TextFormat::Parser parser;
  ConfigErrors errors(path);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text.str(), &config)) {
    throw InputError("config " + (errors.first().empty() ? path : errors.first()));
  }
  return config;
}

// Peak resident set size of this process so far, MiB (VmHWM from /proc/self/status).
double PeakRssMiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      return static_cast<double>(std::strtoll(line.c_str() + 6, nullptr, 10)) / 1024.0;
    }
  }
  return -1.0;
}

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(std::min(colon + 2, line.size()));
    }
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------
// 1. sgemm peak.

struct SgemmPoint {
  int64_t n = 0;
  double gflops = 0;  // Best repetition.
};

struct SgemmResult {
  std::vector<SgemmPoint> points;
  SgemmPoint best;
};

// Times `call`, an n x n x n GEMM, after one warm-up call: the best of at least 3 calls
// and at least 0.25 s, as GFLOP/s.
SgemmPoint TimeSquareGemm(int64_t n, const std::function<void()>& call) {
  call();
  double best_s = 1e30, total_s = 0;
  for (int rep = 0; rep < 3 || total_s < 0.25; ++rep) {
    const auto t0 = Clock::now();
    call();
    const double s = Seconds(t0, Clock::now());
    best_s = std::min(best_s, s);
    total_s += s;
  }
  const double flops =
      2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  return {n, flops / best_s / 1e9};
}

// Times C = A * B (row-major, no transposes) for each size: one warm-up call, then
// repetitions until at least 0.25 s and 3 calls have run; the best call counts.
SgemmResult MeasureSgemmPeak(std::span<const int64_t> sizes) {
  const int64_t max_n = *std::max_element(sizes.begin(), sizes.end());
  const auto elems = static_cast<size_t>(max_n * max_n);
  std::vector<float> a(elems), b(elems), c(elems, 0.0f);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t i = 0; i < elems; ++i) {
    a[i] = u(rng);
    b[i] = u(rng);
  }
  SgemmResult result;
  for (const int64_t n : sizes) {
    auto call = [&] {
      const dnnl_status_t st =
          dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
      if (st != dnnl_success) {
        throw SystemError(
            detail::StrCat("dnnl_sgemm(n=", n, ") failed with status ", static_cast<int>(st)));
      }
    };
    const SgemmPoint p = TimeSquareGemm(n, call);
    result.points.push_back(p);
    if (p.gflops > result.best.gflops) result.best = p;
  }
  return result;
}

// The oneDNN matmul peak for one precision: square C[f32] = A * B with A and B in `type`
// (weights in the layout the primitive prefers, as the model's are), the same timing
// rule as MeasureSgemmPeak. `impl` receives the implementation oneDNN chose for the
// best size (for example "brg:avx512_core_amx_bf16").
SgemmResult MeasureMatmulPeak(std::span<const int64_t> sizes, dnnl::memory::data_type type,
                              std::string* impl) {
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  SgemmResult result;
  for (const int64_t n : sizes) {
    const memory::desc a_md({n, n}, type, memory::format_tag::ab);
    const memory::desc b_md({n, n}, type, memory::format_tag::any);
    const memory::desc c_md({n, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), engine);
    const dnnl::matmul mm(pd);
    memory a = nn::ZeroedMemory(pd.src_desc(), engine);
    memory b = nn::ZeroedMemory(pd.weights_desc(), engine);
    memory c = nn::ZeroedMemory(pd.dst_desc(), engine);
    {
      // Random operands, converted by reorders from f32.
      std::mt19937 rng(1);
      std::uniform_real_distribution<float> u(-1.0f, 1.0f);
      std::vector<float> values(static_cast<size_t>(n * n));
      for (float& v : values) v = u(rng);
      const memory::desc plain({n, n}, memory::data_type::f32, memory::format_tag::ab);
      memory src(plain, engine, values.data());
      dnnl::reorder(src, a).execute(stream, src, a);
      dnnl::reorder(src, b).execute(stream, src, b);
      stream.wait();
    }
    const std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
    auto call = [&] {
      mm.execute(stream, args);
      stream.wait();
    };
    const SgemmPoint p = TimeSquareGemm(n, call);
    result.points.push_back(p);
    if (p.gflops > result.best.gflops) {
      result.best = p;
      *impl = pd.impl_info_str();
    }
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// 3. Training throughput.

// A pool of batches to cycle through: real Fashion-MNIST when it is installed, else
// uniform noise with random labels (the arithmetic, hence the speed, is the same).
struct BatchSource {
  std::string description;
  int64_t pool = 0;                 // Samples in the pool.
  std::vector<float> images;        // [pool, C, H, W]
  std::vector<int32_t> labels;      // [pool]
  std::vector<int64_t> sample_ids;  // [pool], for dropout masks
};

BatchSource MakeBatchSource(const v1::ExperimentConfig& config, const Options& o,
                            const nn::Model& model, int64_t batch) {
  BatchSource src;
  const std::vector<int64_t>& dims = model.input_dims();
  const int64_t sample = dims[0] * dims[1] * dims[2];
  std::string dir = o.data_dir;
  if (dir.empty()) dir = config.data().data_dir();
  if (dir.empty()) dir = data::DefaultFashionMnistDir();
  const data::FashionMnistFiles files = data::FashionMnistPaths(dir);
  const bool have_data = std::ifstream(files.train_images).good() &&
                         std::ifstream(files.train_labels).good() && dims[0] == 1 &&
                         dims[1] == 28 && dims[2] == 28;
  if (have_data) {
    const data::Dataset ds = data::LoadFashionMnist(dir, data::Split::kTrain, o.limit);
    src.pool = ds.size() / batch * batch;
    if (src.pool == 0) throw InputError("--limit is smaller than one batch");
    src.images.resize(static_cast<size_t>(src.pool * sample));
    src.labels.resize(static_cast<size_t>(src.pool));
    src.sample_ids.resize(static_cast<size_t>(src.pool));
    std::iota(src.sample_ids.begin(), src.sample_ids.end(), int64_t{0});
    data::GatherBatch(ds, src.sample_ids, src.images.data(), src.labels.data());
    src.description = detail::StrCat(ds.name, " (", src.pool, " samples from ", dir, ")");
  } else {
    src.pool = std::max<int64_t>(batch, o.limit / batch * batch);
    src.images.resize(static_cast<size_t>(src.pool * sample));
    src.labels.resize(static_cast<size_t>(src.pool));
    src.sample_ids.resize(static_cast<size_t>(src.pool));
    std::iota(src.sample_ids.begin(), src.sample_ids.end(), int64_t{0});
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (float& x : src.images) x = u(rng);
    std::uniform_int_distribution<int32_t> label(0, static_cast<int32_t>(model.num_classes()) - 1);
    for (int32_t& l : src.labels) l = label(rng);
    src.description = detail::StrCat("random data (", src.pool, " samples; ", dir, " not found)");
  }
  return src;
}

struct PhaseTimes {
  double data = 0, forward = 0, backward = 0, optimizer = 0;
  double total() const { return data + forward + backward + optimizer; }
};

struct TrainResult {
  PhaseTimes seconds;  // Summed over the timed steps.
  int64_t steps = 0;
  double last_loss = 0;  // Mean loss of the last timed batch (a sanity check).
  // Whole-step times, sorted: the median and the minimum are less sensitive than the
  // mean to other processes competing for the cores.
  std::vector<double> step_seconds;
  double Median() const { return step_seconds[step_seconds.size() / 2]; }
  double Min() const { return step_seconds.front(); }
};

// Runs `warmup` untimed and `steps` timed training steps. The "data" phase copies the
// next batch out of the pool, as a trainer's gather would.
TrainResult RunTraining(nn::Model& model, optim::Sgd& sgd, const BatchSource& src, int64_t batch,
                        int64_t warmup, int64_t steps, uint64_t seed) {
  const std::vector<int64_t>& dims = model.input_dims();
  const int64_t sample = dims[0] * dims[1] * dims[2];
  std::vector<float> images(static_cast<size_t>(batch * sample));
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  std::vector<int64_t> ids(static_cast<size_t>(batch));
  const float grad_scale = 1.0f / static_cast<float>(batch);
  nn::StepContext ctx;
  ctx.mode = nn::Mode::kTrain;
  ctx.seed = seed;
  ctx.sample_ids = ids;
  TrainResult r;
  r.step_seconds.reserve(static_cast<size_t>(steps));
  int64_t cursor = 0;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    const bool timed = step >= warmup;
    const auto t0 = Clock::now();
    const auto offset = static_cast<size_t>(cursor);
    std::memcpy(images.data(), src.images.data() + offset * static_cast<size_t>(sample),
                images.size() * sizeof(float));
    std::memcpy(labels.data(), src.labels.data() + offset, labels.size() * sizeof(int32_t));
    std::memcpy(ids.data(), src.sample_ids.data() + offset, ids.size() * sizeof(int64_t));
    cursor += batch;
    if (cursor + batch > src.pool) {
      cursor = 0;
      ++ctx.epoch;
    }
    const auto t1 = Clock::now();
    const nn::BatchResult br = model.Forward(ctx, images.data(), labels);
    model.Synchronize();
    const auto t2 = Clock::now();
    model.Backward(ctx, grad_scale);
    model.Synchronize();
    const auto t3 = Clock::now();
    sgd.Step();
    const auto t4 = Clock::now();
    if (!timed) continue;
    r.seconds.data += Seconds(t0, t1);
    r.seconds.forward += Seconds(t1, t2);
    r.seconds.backward += Seconds(t2, t3);
    r.seconds.optimizer += Seconds(t3, t4);
    r.step_seconds.push_back(Seconds(t0, t4));
    ++r.steps;
    r.last_loss = br.loss_sum / static_cast<double>(batch);
  }
  std::sort(r.step_seconds.begin(), r.step_seconds.end());
  return r;
}

// ---------------------------------------------------------------------------------------
// 4. Per-layer breakdown.

struct LayerTiming {
  std::string name;
  std::string kind;
  double forward_flops = 0;   // Per sample.
  double backward_flops = 0;  // Per sample: weights, plus data unless first.
  double forward_ms = 0;      // Per batch.
  double backward_ms = 0;
};

// Builds a second set of plans on the model's own layers and parameters (same batch
// size, hence the same layouts) and times each plan's Forward and Backward, draining
// the stream after each so one layer's time is its own. The loss is left out; the
// chain is otherwise the model's: diff_src of layer i+1 feeds layer i.
std::vector<LayerTiming> MeasureLayers(nn::Model& model, const BatchSource& src, int64_t batch,
                                       int64_t reps, uint64_t seed) {
  nn::DnnlContext& dnnl_ctx = model.dnnl();
  const std::vector<int64_t>& dims = model.input_dims();
  const dnnl::memory::desc input_md = nn::PlainDesc({batch, dims[0], dims[1], dims[2]});
  dnnl::memory input(input_md, dnnl_ctx.engine,
                     const_cast<float*>(src.images.data()));  // The first batch of the pool.
  std::vector<int64_t> ids(src.sample_ids.begin(), src.sample_ids.begin() + batch);
  nn::StepContext ctx;
  ctx.mode = nn::Mode::kTrain;
  ctx.seed = seed;
  ctx.sample_ids = ids;

  const auto& layers = model.layers();
  std::vector<std::unique_ptr<nn::LayerPlan>> plans;
  std::vector<dnnl::memory::desc> src_descs;
  dnnl::memory::desc md = input_md;
  for (const auto& layer : layers) {
    src_descs.push_back(md);
    plans.push_back(layer->MakePlan(dnnl_ctx, md));
    md = plans.back()->dst().get_desc();
  }
  // The loss gradient stand-in: small values in the last layer's dst layout.
  dnnl::memory top_diff(md, dnnl_ctx.engine);
  {
    std::span<float> d = nn::Span(top_diff);
    for (size_t i = 0; i < d.size(); ++i) {
      d[i] = (static_cast<float>(i % 7) - 3.0f) / static_cast<float>(batch);
    }
  }

  std::vector<LayerTiming> out(layers.size());
  bool first_with_weights = true;
  for (size_t i = 0; i < layers.size(); ++i) {
    out[i].name = layers[i]->name();
    out[i].kind = layers[i]->kind();
    out[i].forward_flops = layers[i]->ForwardFlopsPerSample(src_descs[i].dims());
    if (out[i].forward_flops > 0) {
      out[i].backward_flops = (first_with_weights ? 1.0 : 2.0) * out[i].forward_flops;
      first_with_weights = false;
    }
  }
  for (int64_t rep = -1; rep < reps; ++rep) {  // rep -1 warms up.
    for (size_t i = 0; i < plans.size(); ++i) {
      const dnnl::memory& s = i == 0 ? input : plans[i - 1]->dst();
      const auto t0 = Clock::now();
      plans[i]->Forward(ctx, s);
      dnnl_ctx.stream.wait();
      if (rep >= 0) out[i].forward_ms += Seconds(t0, Clock::now()) * 1e3;
    }
    for (size_t i = plans.size(); i-- > 0;) {
      const dnnl::memory& s = i == 0 ? input : plans[i - 1]->dst();
      // Backward may overwrite `diff` in place (a fused ReLU); the repeats see the same
      // values again, as the same dst masks the same elements.
      const dnnl::memory& diff = i + 1 == plans.size() ? top_diff : plans[i + 1]->diff_src();
      const auto t0 = Clock::now();
      plans[i]->Backward(ctx, s, diff, i > 0);
      dnnl_ctx.stream.wait();
      if (rep >= 0) out[i].backward_ms += Seconds(t0, Clock::now()) * 1e3;
    }
  }
  for (LayerTiming& t : out) {
    t.forward_ms /= static_cast<double>(reps);
    t.backward_ms /= static_cast<double>(reps);
  }
  return out;
}

// GFLOP/s of `flops_per_sample` x batch done in `ms`; 0 when there is nothing to rate.
double Rate(double flops_per_sample, int64_t batch, double ms) {
  if (flops_per_sample <= 0 || ms <= 0) return 0;
  return flops_per_sample * static_cast<double>(batch) / (ms * 1e-3) / 1e9;
}

// Rate() as table text: "-" for layers without multiply-adds.
std::string RateText(double flops_per_sample, int64_t batch, double ms) {
  const double r = Rate(flops_per_sample, batch, ms);
  if (r <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", r);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(ch));
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

int Run(const Options& o) {
  const int threads = o.threads > 0 ? o.threads : omp_get_num_procs();
  // Before any oneDNN call, so both sgemm and the model's primitives use this count.
  omp_set_num_threads(threads);
  const int omp_threads = omp_get_max_threads();
  std::printf("epochal_bench: %s, %d OpenMP threads (%d cores online)\n", CpuModel().c_str(),
              omp_threads, omp_get_num_procs());

  // 1. The sgemm peak.
  SgemmResult sgemm;
  if (o.sgemm) {
    const std::vector<int64_t> sizes = {256, 512, 1024, 2048};
    sgemm = MeasureSgemmPeak(sizes);
    std::printf("sgemm:");
    for (const SgemmPoint& p : sgemm.points) {
      std::printf(" n=%lld %.1f", static_cast<long long>(p.n), p.gflops);
    }
    std::printf(" GFLOP/s\n");
    std::printf("sgemm peak (%d threads): %.1f GFLOP/s (n=%lld)\n", omp_threads, sgemm.best.gflops,
                static_cast<long long>(sgemm.best.n));
  }

  // The precision ("auto" times the model in both, as `epochal train` does), and the
  // matmul peak in it.
  const v1::ExperimentConfig config = LoadConfig(o.config);
  int64_t batch = o.batch_size;
  if (batch == 0) batch = config.training().batch_size() > 0 ? config.training().batch_size() : 32;
  const uint64_t seed = config.training().seed();
  const nn::PrecisionChoice precision = nn::ResolvePrecision(o.precision, "--precision", [&] {
    return nn::MeasureBf16StepSpeedup(config.model(), batch, seed);
  });
  std::printf("%s\n", precision.reason.c_str());
  const bool bf16 = precision.precision == nn::Precision::kBf16;
  SgemmResult matmul;
  std::string matmul_impl;
  if (o.sgemm) {
    const std::vector<int64_t> sizes = {256, 512, 1024, 2048};
    matmul = MeasureMatmulPeak(sizes, bf16 ? nn::dt::bf16 : nn::dt::f32, &matmul_impl);
    std::printf("matmul %s:", nn::PrecisionName(precision.precision));
    for (const SgemmPoint& p : matmul.points) {
      std::printf(" n=%lld %.1f", static_cast<long long>(p.n), p.gflops);
    }
    std::printf(" GFLOP/s\n");
    std::printf("matmul %s peak (%d threads): %.1f GFLOP/s (n=%lld, %s)\n",
                nn::PrecisionName(precision.precision), omp_threads, matmul.best.gflops,
                static_cast<long long>(matmul.best.n), matmul_impl.c_str());
  }

  // 2. The model and its FLOPs.
  nn::Model model(config.model(), batch, seed, precision.precision);
  const std::string model_name = config.name().empty() ? "model" : config.name();
  const double fwd_flops = model.ForwardFlopsPerSample();
  const double train_flops = model.TrainingFlopsPerSample();
  std::printf("%s: %lld parameters, batch %lld, precision %s\n", model_name.c_str(),
              static_cast<long long>(model.NumParameters()), static_cast<long long>(batch),
              nn::PrecisionName(precision.precision));
  std::printf("%s training FLOPs/image: %.1f MFLOP (forward %.1f MFLOP)\n", model_name.c_str(),
              train_flops / 1e6, fwd_flops / 1e6);

  // 3. Training throughput.
  optim::SgdOptions sgd_options;
  sgd_options.learning_rate = config.optimizer().learning_rate();
  sgd_options.momentum = config.optimizer().momentum();
  sgd_options.nesterov = config.optimizer().nesterov();
  sgd_options.weight_decay = config.optimizer().weight_decay();
  sgd_options.decay = config.optimizer().decay();
  std::vector<optim::ParamView> views;
  for (nn::Parameter* p : model.parameters()) {
    views.push_back({p->name, nn::Span(p->value), nn::Span(p->grad), p->apply_weight_decay});
  }
  optim::Sgd sgd(sgd_options, std::move(views));

  const BatchSource src = MakeBatchSource(config, o, model, batch);
  std::printf("data: %s\n", src.description.c_str());
  const TrainResult tr = RunTraining(model, sgd, src, batch, o.warmup, o.steps, seed);
  const double rss_after_training = PeakRssMiB();
  const double total_s = tr.seconds.total();
  const double images_per_s = static_cast<double>(tr.steps * batch) / total_s;
  const double ms_per_step = total_s / static_cast<double>(tr.steps) * 1e3;
  const double achieved_gflops = images_per_s * train_flops / 1e9;
  auto share = [&](double s) { return 100.0 * s / total_s; };
  auto per_step_ms = [&](double s) { return s / static_cast<double>(tr.steps) * 1e3; };
  std::printf("training: %lld steps after %lld warm-up, mean loss of the last batch %.4f\n",
              static_cast<long long>(tr.steps), static_cast<long long>(o.warmup), tr.last_loss);
  std::printf(
      "training: %.1f images/s, %.2f ms/step (forward %.0f%%, backward %.0f%%, optimizer "
      "%.0f%%, data %.0f%%)\n",
      images_per_s, ms_per_step, share(tr.seconds.forward), share(tr.seconds.backward),
      share(tr.seconds.optimizer), share(tr.seconds.data));
  std::printf(
      "phases per step: forward %.2f ms, backward %.2f ms, optimizer %.2f ms, data %.2f ms\n",
      per_step_ms(tr.seconds.forward), per_step_ms(tr.seconds.backward),
      per_step_ms(tr.seconds.optimizer), per_step_ms(tr.seconds.data));
  std::printf(
      "step time: mean %.2f ms, median %.2f ms (%.1f images/s), fastest %.2f ms (%.1f images/s)\n",
      ms_per_step, tr.Median() * 1e3, static_cast<double>(batch) / tr.Median(), tr.Min() * 1e3,
      static_cast<double>(batch) / tr.Min());
  const double fraction = sgemm.best.gflops > 0 ? achieved_gflops / sgemm.best.gflops : 0;
  if (o.sgemm) {
    std::printf("achieved: %.1f GFLOP/s = %.1f%% of sgemm peak (target >= %.0f%%: %s)\n",
                achieved_gflops, 100.0 * fraction, 100.0 * kTargetPeakFraction,
                fraction >= kTargetPeakFraction ? "met" : "NOT met");
  } else {
    std::printf("achieved: %.1f GFLOP/s (sgemm peak not measured)\n", achieved_gflops);
  }
  const double matmul_fraction = matmul.best.gflops > 0 ? achieved_gflops / matmul.best.gflops : 0;
  if (o.sgemm) {
    std::printf("achieved: %.3f TFLOP/s = %.1f%% of the %s matmul peak %.3f TFLOP/s\n",
                achieved_gflops / 1e3, 100.0 * matmul_fraction,
                nn::PrecisionName(precision.precision), matmul.best.gflops / 1e3);
  }

  // 4. Per layer.
  std::vector<LayerTiming> layer_times;
  if (o.per_layer) {
    const int64_t reps = std::max<int64_t>(10, std::min<int64_t>(o.steps, 50));
    layer_times = MeasureLayers(model, src, batch, reps, seed);
    double fwd_sum = 0, bwd_sum = 0;
    for (const LayerTiming& t : layer_times) {
      fwd_sum += t.forward_ms;
      bwd_sum += t.backward_ms;
    }
    std::printf("per layer (batch %lld, mean of %lld runs; GFLOP/s for conv and dense):\n",
                static_cast<long long>(batch), static_cast<long long>(reps));
    std::printf("  %-10s %-12s %9s %7s %8s %9s %7s %8s\n", "layer", "kind", "fwd ms", "fwd %",
                "GFLOP/s", "bwd ms", "bwd %", "GFLOP/s");
    for (const LayerTiming& t : layer_times) {
      std::printf("  %-10s %-12s %9.3f %6.1f%% %8s %9.3f %6.1f%% %8s\n", t.name.c_str(),
                  t.kind.c_str(), t.forward_ms, 100.0 * t.forward_ms / fwd_sum,
                  RateText(t.forward_flops, batch, t.forward_ms).c_str(), t.backward_ms,
                  100.0 * t.backward_ms / bwd_sum,
                  RateText(t.backward_flops, batch, t.backward_ms).c_str());
    }
    std::printf("  %-10s %-12s %9.3f %7s %8s %9.3f\n", "sum", "", fwd_sum, "", "", bwd_sum);
    std::printf("  (model step, for comparison: forward %.3f ms, backward %.3f ms incl. loss)\n",
                per_step_ms(tr.seconds.forward), per_step_ms(tr.seconds.backward));
  }

  // 5. Memory.
  const double rss = PeakRssMiB();
  const bool rss_met = rss < kTargetRssMiB;
  std::printf("peak RSS after training steps: %.0f MiB\n", rss_after_training);
  std::printf("peak RSS: %.0f MiB (target < %.0f MiB: %s)\n", rss, kTargetRssMiB,
              rss_met ? "met" : "NOT met");

  if (o.json) {
    std::ostringstream js;
    js.setf(std::ios::fixed);
    js.precision(4);
    js << "{\"model\":" << JsonString(model_name) << ",\"cpu\":" << JsonString(CpuModel())
       << ",\"threads\":" << omp_threads << ",\"batch\":" << batch << ",\"steps\":" << tr.steps
       << ",\"precision\":" << JsonString(nn::PrecisionName(precision.precision))
       << ",\"matmul_peak_gflops\":" << matmul.best.gflops
       << ",\"matmul_impl\":" << JsonString(matmul_impl)
       << ",\"matmul_peak_fraction\":" << matmul_fraction
       << ",\"data\":" << JsonString(src.description) << ",\"sgemm_gflops\":{";
    for (size_t i = 0; i < sgemm.points.size(); ++i) {
      js << (i ? "," : "") << "\"" << sgemm.points[i].n << "\":" << sgemm.points[i].gflops;
    }
    js << "},\"sgemm_peak_gflops\":" << sgemm.best.gflops << ",\"sgemm_peak_n\":" << sgemm.best.n
       << ",\"forward_mflop_per_image\":" << fwd_flops / 1e6
       << ",\"training_mflop_per_image\":" << train_flops / 1e6
       << ",\"images_per_s\":" << images_per_s << ",\"ms_per_step\":" << ms_per_step
       << ",\"median_ms_per_step\":" << tr.Median() * 1e3
       << ",\"min_ms_per_step\":" << tr.Min() * 1e3
       << ",\"forward_ms\":" << per_step_ms(tr.seconds.forward)
       << ",\"backward_ms\":" << per_step_ms(tr.seconds.backward)
       << ",\"optimizer_ms\":" << per_step_ms(tr.seconds.optimizer)
       << ",\"data_ms\":" << per_step_ms(tr.seconds.data)
       << ",\"achieved_gflops\":" << achieved_gflops << ",\"peak_fraction\":" << fraction
       << ",\"peak_fraction_target\":" << kTargetPeakFraction
       << ",\"peak_fraction_met\":" << (fraction >= kTargetPeakFraction ? "true" : "false")
       << ",\"layers\":[";
    for (size_t i = 0; i < layer_times.size(); ++i) {
      const LayerTiming& t = layer_times[i];
      js << (i ? "," : "") << "{\"name\":" << JsonString(t.name)
         << ",\"kind\":" << JsonString(t.kind) << ",\"forward_ms\":" << t.forward_ms
         << ",\"backward_ms\":" << t.backward_ms
         << ",\"forward_mflop_per_image\":" << t.forward_flops / 1e6
         << ",\"backward_mflop_per_image\":" << t.backward_flops / 1e6 << "}";
    }
    js << "],\"peak_rss_after_training_mib\":" << rss_after_training << ",\"peak_rss_mib\":" << rss
       << ",\"peak_rss_target_mib\":" << kTargetRssMiB
       << ",\"peak_rss_met\":" << (rss_met ? "true" : "false") << "}";
    std::printf("%s\n", js.str().c_str());
  }
  return 0;
}

}  // namespace
}  // namespace epochal::bench

int main(int argc, char** argv) {
  try {
    return epochal::bench::Run(epochal::bench::ParseFlags(argc, argv));
  } catch (const epochal::InputError& e) {
    std::fprintf(stderr, "epochal_bench: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "epochal_bench: error: %s\n", e.what());
    return 1;
  }
}
