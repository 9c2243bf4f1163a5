#include "epochal/optim/sgd.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "epochal/core/error.h"

namespace epochal::optim {
namespace {

void RequireFiniteNonNegative(const char* field, float value) {
  if (!std::isfinite(value) || value < 0.0f) {
    throw InputError(
        detail::StrCat("SgdOptions.", field, " must be a finite number >= 0, got ", value));
  }
}

// The three update rules over one tensor. Restrict-qualified parameters (GCC ignores
// restrict on local pointers) let the compiler vectorize without aliasing checks.
// wd = 0 for params without weight decay keeps one loop shape per rule.
void PlainUpdate(float* __restrict w, const float* __restrict g, size_t n, float lr, float wd) {
  for (size_t j = 0; j < n; ++j) w[j] -= lr * (g[j] + wd * w[j]);
}

void MomentumUpdate(float* __restrict w, const float* __restrict g, float* __restrict v, size_t n,
                    float lr, float wd, float m) {
  for (size_t j = 0; j < n; ++j) {
    v[j] = m * v[j] - lr * (g[j] + wd * w[j]);
    w[j] += v[j];
  }
}

void NesterovUpdate(float* __restrict w, const float* __restrict g, float* __restrict v, size_t n,
                    float lr, float wd, float m) {
  for (size_t j = 0; j < n; ++j) {
    const float step = lr * (g[j] + wd * w[j]);
    v[j] = m * v[j] - step;
    w[j] += m * v[j] - step;
  }
}

}  // namespace

void SgdOptions::Validate() const {
  RequireFiniteNonNegative("learning_rate", learning_rate);
  if (!std::isfinite(momentum) || momentum < 0.0f || momentum >= 1.0f) {
    throw InputError(detail::StrCat("SgdOptions.momentum must be in [0, 1), got ", momentum));
  }
  RequireFiniteNonNegative("weight_decay", weight_decay);
  RequireFiniteNonNegative("decay", decay);
}

Sgd::Sgd(SgdOptions options, std::vector<ParamView> params)
    : options_(options),
      schedule_(options.learning_rate, options.decay),
      params_(std::move(params)) {
  options_.Validate();
  velocity_.reserve(params_.size());
  for (const ParamView& p : params_) {
    if (p.value.empty()) {
      throw InputError(detail::StrCat("Sgd: parameter '", p.name, "' is empty"));
    }
    if (p.grad.size() != p.value.size()) {
      throw InputError(detail::StrCat("Sgd: parameter '", p.name, "' has ", p.value.size(),
                                      " values but ", p.grad.size(), " gradients"));
    }
    velocity_.emplace_back(p.value.size(), 0.0f);
  }
}

double Sgd::CurrentLearningRate() const {
  return override_ ? *override_ : schedule_.LearningRate(iterations_);
}

void Sgd::SetIterations(int64_t iterations) {
  if (iterations < 0) {
    throw InputError(detail::StrCat("Sgd: iterations must be >= 0, got ", iterations));
  }
  iterations_ = iterations;
}

void Sgd::SetLearningRateOverride(std::optional<double> learning_rate) {
  if (learning_rate && (!std::isfinite(*learning_rate) || *learning_rate < 0.0)) {
    throw InputError(detail::StrCat(
        "Sgd: learning-rate override must be a finite number >= 0, got ", *learning_rate));
  }
  override_ = learning_rate;
}

double L2Penalty(std::span<const ParamView> params, float weight_decay) {
  if (weight_decay == 0.0f) return 0.0;
  double sum = 0.0;
  for (const ParamView& p : params) {
    if (!p.apply_weight_decay) continue;
    for (float w : p.value) sum += static_cast<double>(w) * static_cast<double>(w);
  }
  return 0.5 * static_cast<double>(weight_decay) * sum;
}

double Sgd::L2Penalty() const { return optim::L2Penalty(params_, options_.weight_decay); }

void Sgd::Step() noexcept {
  const float lr = static_cast<float>(CurrentLearningRate());
  const float m = options_.momentum;
  // Elementwise, so any split gives the same bits: large tensors are cut into chunks
  // that the threads share (a 1.6M-element dense kernel dominates MiniVGGNet).
  constexpr size_t kChunk = 1 << 16;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamView& p = params_[i];
    const float wd = p.apply_weight_decay ? options_.weight_decay : 0.0f;
    const size_t n = p.value.size();
    const auto chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t begin = static_cast<size_t>(c) * kChunk;
      const size_t len = std::min(kChunk, n - begin);
      float* w = p.value.data() + begin;
      const float* g = p.grad.data() + begin;
      if (m == 0.0f) {
        PlainUpdate(w, g, len, lr, wd);
      } else if (options_.nesterov) {
        NesterovUpdate(w, g, velocity_[i].data() + begin, len, lr, wd, m);
      } else {
        MomentumUpdate(w, g, velocity_[i].data() + begin, len, lr, wd, m);
      }
    }
  }
  ++iterations_;
}

}  // namespace epochal::optim
