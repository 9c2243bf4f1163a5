#include "epochal/report/epoch_summary.h"

#include <gtest/gtest.h>

namespace epochal::report {
namespace {

TEST(EpochSummaryTest, MatchesKerasStyleLine) {
  train::EpochRecord r;
  r.epoch = 3;
  r.seconds = 131.4;
  r.images_per_second = 457.6;
  r.loss = 0.29412;
  r.accuracy = 0.89431;
  r.val_loss = 0.27219;
  r.val_accuracy = 0.897;
  EXPECT_EQ(EpochSummaryLine(r, 25),
            "Epoch 3/25 - 131s - 458 img/s - loss: 0.2941 - accuracy: 0.8943 - val_loss: "
            "0.2722 - val_accuracy: 0.8970");
}

}  // namespace
}  // namespace epochal::report
