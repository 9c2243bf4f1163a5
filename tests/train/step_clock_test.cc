// StepClock: the epoch means add up, and the straggler accounting starts at an epoch's
// second step and only with more than one rank.
#include "epochal/train/step_clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace epochal::train {
namespace {

void RunStep(StepClock& clock, std::span<const float> arrivals) {
  clock.StartStep();
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  clock.DataReady();
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  clock.BackwardDone();
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  clock.WaitDone(0.0005, 8, arrivals);
}

TEST(StepClockTest, EpochMeansAddUpToTheStep) {
  StepClock clock;
  clock.StartEpoch();
  EXPECT_EQ(clock.previous_arrival_ms(), 0.0f);  // Nothing to report at the first step.
  const std::vector<float> one_rank = {0.0f};
  for (int i = 0; i < 3; ++i) RunStep(clock, one_rank);
  const EpochRecord::RankTiming t = clock.EpochMeans();
  EXPECT_NEAR(t.step_ms, t.data_ms + t.compute_ms + t.allreduce_wait_ms, 1e-9);
  EXPECT_GT(t.data_ms, 0.0);
  EXPECT_GT(t.compute_ms, t.data_ms * 0.5);
  EXPECT_DOUBLE_EQ(t.allreduce_ms, 0.5);
  EXPECT_EQ(t.straggler_wait_ms, 0.0);  // One rank has no straggler.
  EXPECT_GT(clock.previous_arrival_ms(), 0.0f);
  EXPECT_GE(clock.EpochSeconds(), 0.012);
}

TEST(StepClockTest, StragglerWaitIsBoundedByTheWaitAndSkipsTheFirstStep) {
  StepClock clock;
  clock.StartEpoch();
  // A slower peer arrived a second after this rank: its whole wait counts, no more.
  const std::vector<float> peer_slow = {0.0f, 1000.0f};
  RunStep(clock, peer_slow);
  EXPECT_EQ(clock.EpochMeans().straggler_wait_ms, 0.0);  // First step: no arrivals yet.
  RunStep(clock, peer_slow);
  const EpochRecord::RankTiming t = clock.EpochMeans();
  EXPECT_GT(t.straggler_wait_ms, 0.0);
  EXPECT_LE(t.straggler_wait_ms, 2 * t.allreduce_wait_ms + 1e-9);
  clock.StartEpoch();
  EXPECT_EQ(clock.EpochMeans().step_ms, 0.0);
}

TEST(StepClockTest, GatherIsDueOnlyAfterTheInterval) {
  StepClock clock;
  clock.StartEpoch();
  clock.MarkGathered();
  clock.StartStep();
  clock.DataReady();
  EXPECT_FALSE(clock.GatherDue(0.0));  // 0: only at epoch ends.
  EXPECT_FALSE(clock.GatherDue(60.0));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  clock.DataReady();
  EXPECT_TRUE(clock.GatherDue(0.001));
}

TEST(StepClockTest, HistogramsCountEveryStep) {
  StepClock clock;
  clock.StartEpoch();
  const std::vector<float> one_rank = {0.0f};
  RunStep(clock, one_rank);
  RunStep(clock, one_rank);
  std::vector<double> packed(clock.histograms().Packed().begin(),
                             clock.histograms().Packed().end());
  const RankTimingSnapshot s = RankTimingHistograms::Unpack(packed);
  ASSERT_EQ(s.ranks.size(), 1u);
  EXPECT_EQ(s.ranks[0].samples, 16.0);
}

}  // namespace
}  // namespace epochal::train
