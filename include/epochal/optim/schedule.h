// Learning-rate schedules. A schedule maps the number of optimizer steps already taken
// to the rate the next step uses; it holds no other state, so it can be recomputed on
// every rank and after a resume from the iteration count alone.
// Thread safety: immutable after construction; safe to share between threads.
#pragma once

#include <cstdint>

namespace epochal::optim {

// Keras time-based decay: lr(t) = lr0 / (1 + decay * t), where t counts the steps
// completed before the one that uses the rate (Keras `iterations`). With decay = 0 the
// rate is constant. Step, cosine and warmup schedules will sit beside this class.
class TimeDecaySchedule {
 public:
  // Preconditions (checked by SgdOptions::Validate for the optimizer's schedule):
  // initial_learning_rate >= 0 and decay >= 0, both finite.
  TimeDecaySchedule(double initial_learning_rate, double decay)
      : initial_learning_rate_(initial_learning_rate), decay_(decay) {}

  // Large-batch scaling (Goyal et al., 2017): multiply the rate by `factor` (N ranks
  // under the linear rule), ramping the multiplier linearly from 1 to `factor` over the
  // first `warmup_iterations` steps. factor >= 1; warmup_iterations >= 0.
  void SetScaling(double factor, int64_t warmup_iterations) {
    scale_ = factor;
    warmup_iterations_ = warmup_iterations;
  }
  double Multiplier(int64_t iteration) const {
    if (iteration < warmup_iterations_) {
      return 1.0 + (scale_ - 1.0) * static_cast<double>(iteration) /
                       static_cast<double>(warmup_iterations_);
    }
    return scale_;
  }

  // The rate for the step that follows `iteration` completed steps.
  double LearningRate(int64_t iteration) const {
    return initial_learning_rate_ * Multiplier(iteration) /
           (1.0 + decay_ * static_cast<double>(iteration));
  }

  double initial_learning_rate() const { return initial_learning_rate_; }
  double decay() const { return decay_; }

 private:
  double initial_learning_rate_;
  double decay_;
  double scale_ = 1.0;
  int64_t warmup_iterations_ = 0;
};

}  // namespace epochal::optim
