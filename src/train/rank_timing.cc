#include "epochal/train/rank_timing.h"

#include <algorithm>
#include <cmath>

namespace epochal::train {
namespace {

constexpr size_t kBuckets = kTimingBucketBounds.size() + 1;
constexpr size_t kKinds = RankTimingIncrements::kNumKinds;
// Layout: per kind, kBuckets counts then the sum; then the sample count.
constexpr size_t kPerKind = kBuckets + 1;
constexpr size_t kPacked = kKinds * kPerKind + 1;

size_t BucketOf(double seconds) {
  const auto it = std::lower_bound(kTimingBucketBounds.begin(), kTimingBucketBounds.end(), seconds);
  return static_cast<size_t>(it - kTimingBucketBounds.begin());
}

}  // namespace

RankTimingHistograms::RankTimingHistograms() : values_(kPacked, 0.0) {}

size_t RankTimingHistograms::PackedSize() { return kPacked; }

void RankTimingHistograms::Add(double step_seconds, double data_seconds,
                               double allreduce_wait_seconds, int64_t samples) {
  const double seconds[kKinds] = {step_seconds, data_seconds, allreduce_wait_seconds};
  for (size_t k = 0; k < kKinds; ++k) {
    double* kind = values_.data() + k * kPerKind;
    kind[BucketOf(seconds[k])] += 1.0;
    kind[kBuckets] += seconds[k];
  }
  values_[kPacked - 1] += static_cast<double>(samples);
}

void RankTimingHistograms::Reset() { std::fill(values_.begin(), values_.end(), 0.0); }

RankTimingSnapshot RankTimingHistograms::Unpack(std::span<const double> gathered) {
  RankTimingSnapshot snapshot;
  for (size_t r = 0; (r + 1) * kPacked <= gathered.size(); ++r) {
    const double* v = gathered.data() + r * kPacked;
    RankTimingIncrements inc;
    inc.rank = static_cast<int>(r);
    for (size_t k = 0; k < kKinds; ++k) {
      inc.counts[k].assign(v + k * kPerKind, v + k * kPerKind + kBuckets);
      inc.sums[k] = v[k * kPerKind + kBuckets];
    }
    inc.samples = v[kPacked - 1];
    snapshot.ranks.push_back(std::move(inc));
  }
  return snapshot;
}

}  // namespace epochal::train
