// "auto" precision's probe: a bf16 training step against an f32 one (model.h).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/nn/model.h"

namespace epochal::nn {

double MeasureBf16StepSpeedup(const v1::ModelSpec& spec, int64_t batch_size, uint64_t seed,
                              int steps) {
  EPOCHAL_CHECK(steps >= 1 && batch_size >= 1, "bf16 probe: steps and batch_size must be >= 1");
  Model f32(spec, batch_size, seed, Precision::kF32);
  Model bf16(spec, batch_size, seed, Precision::kBf16);
  const auto& in = spec.input();
  const int64_t sample = static_cast<int64_t>(in.channels()) * in.height() * in.width();
  // Images in [0, 1) from a fixed integer hash, labels cycling through the classes: real
  // enough for every layer to do its full work (no all-zero shortcut), and the same for
  // both models.
  std::vector<float> images(static_cast<size_t>(batch_size * sample));
  for (size_t i = 0; i < images.size(); ++i) {
    const uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    images[i] = static_cast<float>(h >> 8) * 0x1p-24f;
  }
  std::vector<int32_t> labels(static_cast<size_t>(batch_size));
  std::vector<int64_t> ids(static_cast<size_t>(batch_size));
  for (int64_t n = 0; n < batch_size; ++n) {
    labels[static_cast<size_t>(n)] = static_cast<int32_t>(n % spec.num_classes());
    ids[static_cast<size_t>(n)] = n;
  }
  StepContext ctx;
  ctx.mode = Mode::kTrain;
  ctx.seed = seed;
  ctx.sample_ids = ids;
  const float grad_scale = 1.0f / static_cast<float>(batch_size);
  using Clock = std::chrono::steady_clock;
  auto step = [&](Model& m) {
    const auto start = Clock::now();
    m.Forward(ctx, images.data(), labels);
    m.Backward(ctx, grad_scale);
    m.Synchronize();
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  step(f32);
  step(bf16);
  double best_f32 = std::numeric_limits<double>::infinity(), best_bf16 = best_f32;
  for (int i = 0; i < steps; ++i) {
    best_f32 = std::min(best_f32, step(f32));
    best_bf16 = std::min(best_bf16, step(bf16));
  }
  return best_f32 / best_bf16;
}

}  // namespace epochal::nn
