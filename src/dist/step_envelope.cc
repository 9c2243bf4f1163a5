#include "epochal/dist/step_envelope.h"

#include <algorithm>
#include <cmath>

#include "epochal/core/error.h"

namespace epochal::dist {
namespace {

enum Slot : size_t {
  kLossSum = 0,
  kCorrect,
  kCount,
  kControlAction,
  kControlRate,  // Three slots (PackedRate).
  kGatherTimings = kControlRate + 3,
  kArrivalBase,
};

}  // namespace

size_t StepEnvelope::Size(int world_size) { return kArrivalBase + static_cast<size_t>(world_size); }

StepEnvelope::StepEnvelope(int world_size) : arrival_ms(static_cast<size_t>(world_size), 0.0f) {}

void StepEnvelope::Pack(std::span<float> extras) const {
  EPOCHAL_CHECK(extras.size() == Size(static_cast<int>(arrival_ms.size())),
                "step envelope: extras of the wrong size");
  extras[kLossSum] = static_cast<float>(loss_sum);
  extras[kCorrect] = static_cast<float>(correct);
  extras[kCount] = static_cast<float>(count);
  extras[kControlAction] = static_cast<float>(control.action);
  const PackedRate rate = PackRate(control.learning_rate);
  std::copy_n(rate.part, 3, &extras[kControlRate]);
  extras[kGatherTimings] = gather_timings ? 1.0f : 0.0f;
  std::copy(arrival_ms.begin(), arrival_ms.end(), &extras[kArrivalBase]);
}

void StepEnvelope::Unpack(std::span<const float> extras, const StepEnvelope& sent) {
  EPOCHAL_CHECK(extras.size() == Size(static_cast<int>(arrival_ms.size())),
                "step envelope: extras of the wrong size");
  const bool solo = arrival_ms.size() == 1;
  loss_sum = solo ? sent.loss_sum : extras[kLossSum];
  correct = solo ? sent.correct : static_cast<int64_t>(extras[kCorrect]);
  count = solo ? sent.count : static_cast<int64_t>(extras[kCount]);
  control.action = static_cast<int32_t>(std::lround(extras[kControlAction]));
  control.learning_rate = UnpackRate(&extras[kControlRate]);
  gather_timings = extras[kGatherTimings] > 0.5f;
  std::copy_n(&extras[kArrivalBase], arrival_ms.size(), arrival_ms.begin());
}

float StepEnvelope::SlowestArrivalMs() const {
  float slowest = 0.0f;
  for (const float a : arrival_ms) slowest = std::max(slowest, a);
  return slowest;
}

}  // namespace epochal::dist
