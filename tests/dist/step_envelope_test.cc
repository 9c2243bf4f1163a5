// StepEnvelope without MPI: its layout, a pack/unpack round trip, and the sum two ranks'
// envelopes make (what the all-reduce does to the extras).
#include "epochal/dist/step_envelope.h"

#include <gtest/gtest.h>

#include <vector>

namespace epochal::dist {
namespace {

TEST(StepEnvelopeTest, SizeIsTheFixedSlotsPlusOneArrivalPerRank) {
  EXPECT_EQ(StepEnvelope::Size(1), 9u);
  EXPECT_EQ(StepEnvelope::Size(4), 12u);
  EXPECT_EQ(StepEnvelope(3).arrival_ms.size(), 3u);
}

TEST(StepEnvelopeTest, OneRankKeepsItsDoubleSumsAndTheControlWord) {
  StepEnvelope sent(1);
  sent.loss_sum = 12.345678901234567;  // Not representable in float.
  sent.correct = 17;
  sent.count = 32;
  sent.control.action = ControlWord::kSetLearningRate;
  sent.control.learning_rate = 0.0123456789012345;
  sent.gather_timings = true;
  sent.arrival_ms[0] = 2.5f;
  std::vector<float> extras(StepEnvelope::Size(1));
  sent.Pack(extras);
  StepEnvelope got(1);
  got.Unpack(extras, sent);
  EXPECT_EQ(got.loss_sum, sent.loss_sum);
  EXPECT_EQ(got.correct, 17);
  EXPECT_EQ(got.count, 32);
  EXPECT_EQ(got.control.action, ControlWord::kSetLearningRate);
  EXPECT_EQ(got.control.learning_rate, sent.control.learning_rate);  // Bitwise.
  EXPECT_TRUE(got.gather_timings);
  EXPECT_EQ(got.arrival_ms[0], 2.5f);
}

TEST(StepEnvelopeTest, SummedExtrasOfTwoRanksGiveTheGlobalEnvelope) {
  // Rank 0 carries the control word and the gather flag; rank 1 contributes zeros there.
  StepEnvelope rank0(2), rank1(2);
  rank0.loss_sum = 10.5;
  rank0.correct = 3;
  rank0.count = 16;
  rank0.control.action = ControlWord::kPause;
  rank0.control.learning_rate = 0.05;
  rank0.gather_timings = true;
  rank0.arrival_ms[0] = 4.0f;
  rank1.loss_sum = 9.25;
  rank1.correct = 5;
  rank1.count = 15;
  rank1.arrival_ms[1] = 7.5f;
  std::vector<float> a(StepEnvelope::Size(2)), b(StepEnvelope::Size(2));
  rank0.Pack(a);
  rank1.Pack(b);
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  StepEnvelope global(2);
  global.Unpack(a, rank1);
  EXPECT_EQ(global.loss_sum, 19.75);
  EXPECT_EQ(global.correct, 8);
  EXPECT_EQ(global.count, 31);
  EXPECT_EQ(global.control.action, ControlWord::kPause);
  EXPECT_EQ(global.control.learning_rate, 0.05);
  EXPECT_TRUE(global.gather_timings);
  EXPECT_EQ(global.arrival_ms, (std::vector<float>{4.0f, 7.5f}));
  EXPECT_EQ(global.SlowestArrivalMs(), 7.5f);
}

TEST(StepEnvelopeTest, ExtrasOfAnotherRankCountAreRefused) {
  const StepEnvelope e(2);
  std::vector<float> extras(StepEnvelope::Size(3));
  EXPECT_ANY_THROW(e.Pack(extras));
}

}  // namespace
}  // namespace epochal::dist
