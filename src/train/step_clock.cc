#include "epochal/train/step_clock.h"

#include <algorithm>

namespace epochal::train {
namespace {

double Seconds(StepClock::Clock::time_point a, StepClock::Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

void StepClock::StartEpoch() {
  epoch_start_ = Clock::now();
  previous_end_ = epoch_start_;
  data_s_ = compute_s_ = wait_s_ = allreduce_s_ = straggler_s_ = 0;
  steps_ = straggler_steps_ = 0;
  previous_arrival_ms_ = previous_wait_s_ = 0;
}

void StepClock::StartStep() { start_ = Clock::now(); }
void StepClock::DataReady() { data_ready_ = Clock::now(); }
void StepClock::BackwardDone() { backward_done_ = Clock::now(); }

void StepClock::WaitDone(double allreduce_seconds, int64_t samples,
                         std::span<const float> arrivals_ms) {
  wait_done_ = Clock::now();
  if (arrivals_ms.size() > 1 && steps_ > 0) {
    float slowest = 0.0f;
    for (const float a : arrivals_ms) slowest = std::max(slowest, a);
    const double behind_s = (static_cast<double>(slowest) - previous_arrival_ms_) / 1000.0;
    straggler_s_ += std::clamp(behind_s, 0.0, previous_wait_s_);
    ++straggler_steps_;
  }
  previous_arrival_ms_ = 1000.0 * Seconds(previous_end_, backward_done_);
  previous_wait_s_ = Seconds(backward_done_, wait_done_);
  previous_end_ = wait_done_;
  ++steps_;
  data_s_ += Seconds(start_, data_ready_);
  compute_s_ += Seconds(data_ready_, backward_done_);
  wait_s_ += Seconds(backward_done_, wait_done_);
  allreduce_s_ += allreduce_seconds;
  histograms_.Add(Seconds(start_, wait_done_), Seconds(start_, data_ready_),
                  Seconds(backward_done_, wait_done_), samples);
}

bool StepClock::GatherDue(double interval) const {
  return interval > 0 && Seconds(last_gather_, data_ready_) >= interval;
}

double StepClock::EpochSeconds() const { return Seconds(epoch_start_, Clock::now()); }

EpochRecord::RankTiming StepClock::EpochMeans() const {
  const double k = steps_ > 0 ? 1000.0 / static_cast<double>(steps_) : 0.0;
  const double straggler_ms =
      straggler_steps_ > 0 ? 1000.0 * straggler_s_ / static_cast<double>(straggler_steps_) : 0.0;
  return {(data_s_ + compute_s_ + wait_s_) * k,
          data_s_ * k,
          compute_s_ * k,
          wait_s_ * k,
          allreduce_s_ * k,
          straggler_ms};
}

}  // namespace epochal::train
