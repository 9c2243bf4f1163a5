// Per-rank step timings as histograms, for the metrics exporter's `rank`-labelled
// step / data-wait / exposed all-reduce-wait histograms.
//
// Every rank adds its own step's three times to a RankTimingHistograms (a few additions
// per step, no allocation). Now and then every rank sends its accumulated bucket counts to
// rank 0 in one MPI gather and starts again from zero; rank 0 turns the gathered counts
// into a RankTimingSnapshot (the increments since the previous gather, per rank) and hands
// it to the observers (TrainingObserver::OnRankTimings). When that gather happens is
// decided by rank 0 and announced in the step's control extras (see Trainer), so it costs
// no collective on the steps in between.
//
// Thread safety: none; used by the training thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace epochal::train {

// Upper bounds (seconds) of the timing histograms' buckets; a last +Inf bucket follows.
// From half a millisecond (a data wait) to ten seconds (a large step on a slow node).
inline constexpr std::array<double, 15> kTimingBucketBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0};

// Increments of one rank's histograms since the previous gather.
struct RankTimingIncrements {
  enum Kind : size_t { kStep = 0, kDataWait, kAllreduceWait, kNumKinds };
  int rank = 0;
  // Per kind: kTimingBucketBounds.size() + 1 non-cumulative counts (the last is +Inf),
  // and the sum of the observed seconds.
  std::array<std::vector<double>, kNumKinds> counts;
  std::array<double, kNumKinds> sums{};
  // Samples this rank trained (its share of the global batches).
  double samples = 0;
};

// What rank 0 hands the observers after a gather: every rank, in rank order.
struct RankTimingSnapshot {
  std::vector<RankTimingIncrements> ranks;
};

class RankTimingHistograms {
 public:
  RankTimingHistograms();
  // One step of this rank: total wall time, of which waiting for data and waiting for
  // the gradient all-reduce (the exposed part); `samples` it trained.
  void Add(double step_seconds, double data_seconds, double allreduce_wait_seconds,
           int64_t samples);
  // The counts as one flat array (what the gather sends); Reset() zeroes them.
  std::span<const double> Packed() const { return values_; }
  void Reset();
  // Splits gathered Packed() arrays (rank order) into per-rank increments.
  static RankTimingSnapshot Unpack(std::span<const double> gathered);
  // Doubles one rank sends.
  static size_t PackedSize();

 private:
  std::vector<double> values_;
};

}  // namespace epochal::train
