// StepClock: where a rank's step time goes, for the epoch record and the metrics.
//
// A step is cut at four instants: start, data ready (the batch is gathered), backward
// done (entering the gradient wait) and wait done. The clock sums data, compute (forward
// and backward), exposed all-reduce wait and all-reduce time over an epoch, feeds the
// per-rank histograms (rank_timing.h), and does the straggler accounting: a rank's
// arrival is the time from leaving one wait to entering the next; the slowest rank's
// arrival sets when the last bucket can complete, so the difference to it is straggler
// wait, not communication. An arrival is known only once its step's last bucket was
// sent, so the accounting lags one step: the previous step's arrivals ride in this
// step's envelope (dist::StepEnvelope), and the epoch's first step contributes none.
//
// Numbers only: nothing the clock measures feeds back into training.
// Thread safety: none; owned by the training thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "epochal/train/history.h"
#include "epochal/train/rank_timing.h"

namespace epochal::train {

class StepClock {
 public:
  using Clock = std::chrono::steady_clock;

  // Zeroes the epoch's sums; the next step is the first of the epoch.
  void StartEpoch();
  void StartStep();
  void DataReady();
  void BackwardDone();
  // The wait returned. `allreduce_seconds`: the bucketer's all-reduce time of the step;
  // `samples`: this rank's share of the batch; `arrivals_ms`: every rank's arrival in the
  // previous step, from the global envelope (ignored with one rank).
  void WaitDone(double allreduce_seconds, int64_t samples, std::span<const float> arrivals_ms);

  // This rank's arrival in the previous step, in milliseconds (0 at an epoch's first step).
  float previous_arrival_ms() const {
    return steps_ > 0 ? static_cast<float>(previous_arrival_ms_) : 0.0f;
  }
  // True when `interval` seconds (> 0) passed, at data ready, since the last gather.
  bool GatherDue(double interval) const;
  void MarkGathered() { last_gather_ = Clock::now(); }

  // Seconds since StartEpoch.
  double EpochSeconds() const;
  // Per-step means over the epoch's steps, in milliseconds.
  EpochRecord::RankTiming EpochMeans() const;
  RankTimingHistograms& histograms() { return histograms_; }

 private:
  Clock::time_point epoch_start_, start_, data_ready_, backward_done_, wait_done_;
  Clock::time_point last_gather_ = Clock::now();
  double data_s_ = 0, compute_s_ = 0, wait_s_ = 0, allreduce_s_ = 0, straggler_s_ = 0;
  int64_t steps_ = 0, straggler_steps_ = 0;
  double previous_arrival_ms_ = 0, previous_wait_s_ = 0;
  Clock::time_point previous_end_;
  RankTimingHistograms histograms_;
};

}  // namespace epochal::train
