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

}  // namespace
}  // namespace epochal::optim
