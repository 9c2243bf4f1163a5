// Stochastic gradient descent exactly as Keras 2 `SGD` computes it.
//
// Design. The network owns every parameter and its gradient; the optimizer is handed
// one ParamView per parameter tensor, once, at construction, and keeps only those views
// plus its own per-parameter state (the velocity). The views must stay valid for the
// optimizer's lifetime. Step() walks the views with a plain loop per tensor that the
// compiler vectorizes; it neither allocates nor throws, because every buffer is sized in
// the constructor. In data-parallel training every rank holds an identical Sgd and calls
// Step() on identical (all-reduced) gradients, so the replicas stay bit-identical.
//
// The update, with t = iterations() (steps completed before this one) and
// lr_t = lr0 / (1 + decay * t) from a TimeDecaySchedule, or the override when set:
//   g' = g + weight_decay * w            (only for params with apply_weight_decay)
//   momentum == 0:  w -= lr_t * g'
//   momentum  > 0:  v = momentum * v - lr_t * g';  w += v
//   nesterov:       v = momentum * v - lr_t * g';  w += momentum * v - lr_t * g'
// then iterations() increases by one (also when an override is in force).
//
// L2 weight decay is coupled (added to the gradient, as a Keras kernel_regularizer
// would), not decoupled as in AdamW. Adding weight_decay * w to the gradient is the
// gradient of the penalty 0.5 * weight_decay * |w|^2; that penalty is part of the
// training loss and L2Penalty() returns it, so the trainer can add it to the reported
// loss. Note Keras' `l2(l)` regularizer is l * |w|^2, i.e. weight_decay = 2 * l.
//
// Arithmetic: the rate is computed in double and rounded to float once per step; the
// update itself is in float, like the Keras/TensorFlow float32 kernels.
//
// Thread safety: none. One thread (the training loop) owns the optimizer; a control
// plane changes the rate only through the loop, at a step boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "epochal/optim/schedule.h"

namespace epochal::optim {

// A parameter tensor as the optimizer sees it. Storage is owned by the network.
struct ParamView {
  // For messages and checkpoints, e.g. "conv1.weights".
  std::string name;
  // The weights, updated in place by Step().
  std::span<float> value;
  // The gradient of the loss (without the L2 term) for `value`; same size.
  std::span<const float> grad;
  // True for kernels (conv and dense weights); false for biases and batch-norm
  // scale/shift, which Keras does not regularize.
  bool apply_weight_decay = false;
};

struct SgdOptions {
  // lr0, the rate of the first step. >= 0.
  float learning_rate = 0.01f;
  // Momentum coefficient, in [0, 1). 0 means plain SGD.
  float momentum = 0.0f;
  // Nesterov momentum (Keras `nesterov=True`).
  bool nesterov = false;
  // L2 coefficient: the loss gains 0.5 * weight_decay * |w|^2 for decayed params. >= 0.
  float weight_decay = 0.0f;
  // Keras time decay of the rate per iteration: lr0 / (1 + decay * t). >= 0.
  float decay = 0.0f;

  // Throws epochal::InputError naming the offending field.
  void Validate() const;
};

// 0.5 * weight_decay * sum of |w|^2 over `params` with apply_weight_decay, summed in
// double in view order (0 when weight_decay is 0). What Sgd::L2Penalty returns, for code
// that holds views but no optimizer (train::Evaluator).
double L2Penalty(std::span<const ParamView> params, float weight_decay);

class Sgd {
 public:
  // Validates `options` and every view (non-empty, grad.size() == value.size()) and
  // allocates the velocity buffers (zero). Throws epochal::InputError otherwise.
  Sgd(SgdOptions options, std::vector<ParamView> params);

  Sgd(const Sgd&) = delete;
  Sgd& operator=(const Sgd&) = delete;
  Sgd(Sgd&&) noexcept = default;
  Sgd& operator=(Sgd&&) noexcept = default;

  // Applies one update to every parameter from its current gradient and advances
  // iterations() by one. Never allocates, never throws.
  void Step() noexcept;

  // The rate the next Step() will use: the override if set, else the schedule at
  // iterations().
  double CurrentLearningRate() const;
  // The scheduled rate alone, ignoring any override.
  double ScheduledLearningRate() const { return schedule_.LearningRate(iterations_); }

  // Steps taken so far (Keras `optimizer.iterations`).
  int64_t iterations() const { return iterations_; }
  // For resuming from a checkpoint. Throws epochal::InputError if negative.
  void SetIterations(int64_t iterations);

  // When set, replaces the scheduled rate for every following step until cleared with
  // std::nullopt; the schedule keeps counting iterations underneath. Throws
  // epochal::InputError for a negative or non-finite rate.
  void SetLearningRateOverride(std::optional<double> learning_rate);
  // See TimeDecaySchedule::SetScaling.
  void SetLearningRateScaling(double factor, int64_t warmup_iterations) {
    schedule_.SetScaling(factor, warmup_iterations);
  }
  std::optional<double> learning_rate_override() const { return override_; }

  // L2Penalty(views, weight_decay) of this optimizer's views.
  double L2Penalty() const;

  size_t size() const { return params_.size(); }
  const ParamView& param(size_t i) const { return params_.at(i); }
  // Momentum buffer of param i (same size as its value; stays zero when momentum == 0).
  // Writable so a checkpoint can restore it.
  std::span<float> velocity(size_t i) { return velocity_.at(i); }
  std::span<const float> velocity(size_t i) const { return velocity_.at(i); }

  const SgdOptions& options() const { return options_; }
  const TimeDecaySchedule& schedule() const { return schedule_; }

 private:
  SgdOptions options_;
  TimeDecaySchedule schedule_;
  std::vector<ParamView> params_;
  std::vector<std::vector<float>> velocity_;  // one per param, sized at construction
  int64_t iterations_ = 0;
  std::optional<double> override_;
};

}  // namespace epochal::optim
