#include "epochal/optim/schedule.h"

#include <gtest/gtest.h>

namespace epochal::optim {
namespace {

TEST(TimeDecayScheduleTest, FirstStepUsesInitialRate) {
  TimeDecaySchedule schedule(0.01, 0.01 / 25);
  EXPECT_DOUBLE_EQ(schedule.LearningRate(0), 0.01);
}

TEST(TimeDecayScheduleTest, DecaysAsKerasAfterTwentyFiveEpochs) {
  // The reference run: 1875 steps an epoch, 25 epochs, decay = 0.01 / 25 = 0.0004.
  TimeDecaySchedule schedule(0.01, 0.0004);
  EXPECT_DOUBLE_EQ(schedule.LearningRate(1875 * 25), 0.01 / (1.0 + 0.0004 * 46875));
  // 1 + 0.0004 * 46875 = 19.75.
  EXPECT_NEAR(schedule.LearningRate(46875), 0.01 / 19.75, 1e-15);
}

TEST(TimeDecayScheduleTest, ZeroDecayIsConstant) {
  TimeDecaySchedule schedule(0.1, 0.0);
  EXPECT_EQ(schedule.LearningRate(0), 0.1);
  EXPECT_EQ(schedule.LearningRate(1000000), 0.1);
}

TEST(TimeDecayScheduleTest, LinearScalingRampsOverTheWarmup) {
  TimeDecaySchedule s(0.01, 0.0);
  s.SetScaling(4.0, 100);
  EXPECT_DOUBLE_EQ(s.LearningRate(0), 0.01);
  EXPECT_DOUBLE_EQ(s.LearningRate(50), 0.01 * 2.5);
  EXPECT_DOUBLE_EQ(s.LearningRate(100), 0.04);
  EXPECT_DOUBLE_EQ(s.LearningRate(1000), 0.04);
  TimeDecaySchedule d(0.01, 0.0004);
  d.SetScaling(2.0, 0);
  EXPECT_DOUBLE_EQ(d.LearningRate(10), 0.02 / (1.0 + 0.0004 * 10));
}

}  // namespace
}  // namespace epochal::optim
