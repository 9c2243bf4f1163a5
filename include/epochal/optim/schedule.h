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

  // The rate for the step that follows `iteration` completed steps.
  double LearningRate(int64_t iteration) const {
    return initial_learning_rate_ / (1.0 + decay_ * static_cast<double>(iteration));
  }

  double initial_learning_rate() const { return initial_learning_rate_; }
  double decay() const { return decay_; }

 private:
  double initial_learning_rate_;
  double decay_;
};

}  // namespace epochal::optim
