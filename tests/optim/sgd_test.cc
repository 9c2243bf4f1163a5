#include "epochal/optim/sgd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "epochal/core/error.h"

namespace epochal::optim {
namespace {

// Float updates against double hand arithmetic: a few float ulps around 1.0.
constexpr float kTol = 1e-6f;

std::vector<ParamView> OneParam(std::vector<float>* w, const std::vector<float>* g,
                                bool decay = false) {
  return {ParamView{"w", *w, *g, decay}};
}

std::string ValidateMessage(const SgdOptions& options) {
  try {
    options.Validate();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// Keras SGD(lr=0.01, momentum=0.9, decay=0.01/25), w = 1, g = 0.5 every step.
TEST(SgdTest, MomentumWithTimeDecayMatchesKerasByHand) {
  std::vector<float> w{1.0f};
  const std::vector<float> g{0.5f};
  Sgd sgd({.learning_rate = 0.01f, .momentum = 0.9f, .decay = 0.0004f}, OneParam(&w, &g));

  // Step 1, t = 0: lr = 0.01 / (1 + 0.0004 * 0) = 0.01.
  //   v = 0.9 * 0 - 0.01 * 0.5 = -0.005;  w = 1 + (-0.005) = 0.995.
  EXPECT_DOUBLE_EQ(sgd.CurrentLearningRate(), static_cast<double>(0.01f));
  sgd.Step();
  EXPECT_EQ(sgd.iterations(), 1);
  EXPECT_NEAR(sgd.velocity(0)[0], -0.005f, kTol);
  EXPECT_NEAR(w[0], 0.995f, kTol);

  // Step 2, t = 1: lr = 0.01 / 1.0004 = 0.0099960015993602...
  //   lr * g = 0.0049980007996801...
  //   v = 0.9 * (-0.005) - 0.0049980007996801 = -0.0045 - 0.0049980007996801
  //     = -0.0094980007996801
  //   w = 0.995 - 0.0094980007996801 = 0.9855019992003199
  EXPECT_NEAR(sgd.CurrentLearningRate(), 0.0099960015993602, 1e-9);
  sgd.Step();
  EXPECT_NEAR(sgd.velocity(0)[0], -0.0094980007996801f, kTol);
  EXPECT_NEAR(w[0], 0.9855019992003199f, kTol);

  // Step 3, t = 2: lr = 0.01 / 1.0008 = 0.0099920063948841; lr * g = 0.0049960031974420
  //   v = 0.9 * (-0.0094980007996801) - 0.0049960031974420
  //     = -0.0085482007197121 - 0.0049960031974420 = -0.0135442039171542
  //   w = 0.9855019992003199 - 0.0135442039171542 = 0.9719577952831657
  sgd.Step();
  EXPECT_EQ(sgd.iterations(), 3);
  EXPECT_NEAR(sgd.velocity(0)[0], -0.0135442039171542f, kTol);
  EXPECT_NEAR(w[0], 0.9719577952831657f, kTol);
}

TEST(SgdTest, NesterovMatchesKerasByHand) {
  std::vector<float> w{1.0f};
  const std::vector<float> g{0.5f};
  Sgd sgd({.learning_rate = 0.01f, .momentum = 0.9f, .nesterov = true, .decay = 0.0004f},
          OneParam(&w, &g));

  // Step 1: v = -0.005;  w = 1 + 0.9 * (-0.005) - 0.005 = 1 - 0.0045 - 0.005 = 0.9905.
  sgd.Step();
  EXPECT_NEAR(sgd.velocity(0)[0], -0.005f, kTol);
  EXPECT_NEAR(w[0], 0.9905f, kTol);

  // Step 2: lr * g = 0.0049980007996801;  v = -0.0094980007996801 (as without Nesterov)
  //   w = 0.9905 + 0.9 * (-0.0094980007996801) - 0.0049980007996801
  //     = 0.9905 - 0.0085482007197121 - 0.0049980007996801 = 0.9769537984806078
  sgd.Step();
  EXPECT_NEAR(sgd.velocity(0)[0], -0.0094980007996801f, kTol);
  EXPECT_NEAR(w[0], 0.9769537984806078f, kTol);
}

TEST(SgdTest, PlainSgdWithoutMomentum) {
  std::vector<float> w{1.0f, -2.0f};
  const std::vector<float> g{0.5f, -1.0f};
  Sgd sgd({.learning_rate = 0.1f}, OneParam(&w, &g));
  // w -= 0.1 * g: 1 - 0.05 = 0.95, -2 + 0.1 = -1.9; then 0.9, -1.8.
  sgd.Step();
  EXPECT_NEAR(w[0], 0.95f, kTol);
  EXPECT_NEAR(w[1], -1.9f, kTol);
  sgd.Step();
  EXPECT_NEAR(w[0], 0.9f, kTol);
  EXPECT_NEAR(w[1], -1.8f, kTol);
  EXPECT_EQ(sgd.velocity(0)[0], 0.0f);
  EXPECT_EQ(sgd.velocity(0)[1], 0.0f);
}

TEST(SgdTest, WeightDecayOnlyOnFlaggedParams) {
  std::vector<float> kernel{2.0f};
  std::vector<float> bias{2.0f};
  const std::vector<float> g{0.5f};
  Sgd sgd({.learning_rate = 0.1f, .weight_decay = 0.1f},
          {ParamView{"kernel", kernel, g, true}, ParamView{"bias", bias, g, false}});

  // Penalty 0.5 * 0.1 * 2^2 = 0.2; the bias does not count.
  EXPECT_NEAR(sgd.L2Penalty(), 0.2, 1e-7);
  sgd.Step();
  // kernel: g' = 0.5 + 0.1 * 2 = 0.7; w = 2 - 0.1 * 0.7 = 1.93.  bias: 2 - 0.05 = 1.95.
  EXPECT_NEAR(kernel[0], 1.93f, kTol);
  EXPECT_NEAR(bias[0], 1.95f, kTol);
  // 0.5 * 0.1 * 1.93^2 = 0.05 * 3.7249 = 0.186245.
  EXPECT_NEAR(sgd.L2Penalty(), 0.186245, 1e-6);
}

TEST(SgdTest, L2PenaltySumsSquaresOverDecayedParams) {
  std::vector<float> a{1.0f, 2.0f};
  std::vector<float> b{3.0f};
  std::vector<float> c{10.0f};
  const std::vector<float> ga(2, 0.0f), gb(1, 0.0f);
  Sgd sgd({.weight_decay = 0.1f},
          {ParamView{"a", a, ga, true}, ParamView{"b", b, gb, true}, ParamView{"c", c, gb, false}});
  // 0.5 * 0.1 * (1 + 4 + 9) = 0.7.
  EXPECT_NEAR(sgd.L2Penalty(), 0.7, 1e-7);

  Sgd no_decay({}, {ParamView{"a", a, ga, true}});
  EXPECT_EQ(no_decay.L2Penalty(), 0.0);
}

TEST(SgdTest, OverrideReplacesScheduleUntilCleared) {
  std::vector<float> w{1.0f};
  const std::vector<float> g{1.0f};
  Sgd sgd({.learning_rate = 0.01f, .decay = 0.5f}, OneParam(&w, &g));
  sgd.SetLearningRateOverride(0.25);
  EXPECT_EQ(sgd.CurrentLearningRate(), 0.25);
  sgd.Step();  // w = 1 - 0.25 = 0.75
  EXPECT_NEAR(w[0], 0.75f, kTol);
  EXPECT_EQ(sgd.iterations(), 1);
  EXPECT_EQ(sgd.CurrentLearningRate(), 0.25);

  sgd.SetLearningRateOverride(std::nullopt);
  // Schedule resumes at t = 1: 0.01 / (1 + 0.5) = 0.00666...
  EXPECT_NEAR(sgd.CurrentLearningRate(), 0.01f / 1.5, 1e-9);
  sgd.Step();
  EXPECT_NEAR(w[0], 0.75f - 0.01f / 1.5f, kTol);

  EXPECT_THROW(sgd.SetLearningRateOverride(-1.0), InputError);
  EXPECT_THROW(sgd.SetLearningRateOverride(NAN), InputError);
}

TEST(SgdTest, DecayedRateAtEndOfReferenceRun) {
  std::vector<float> w{1.0f};
  const std::vector<float> g{1.0f};
  Sgd sgd({.learning_rate = 0.01f, .momentum = 0.9f, .decay = 0.01f / 25}, OneParam(&w, &g));
  sgd.SetIterations(1875 * 25);
  const double expected = 0.01 / (1 + 0.0004 * 46875);
  // Options are float, so lr0 and decay carry float rounding (relative ~1e-8).
  EXPECT_NEAR(sgd.CurrentLearningRate(), expected, expected * 1e-7);
  EXPECT_THROW(sgd.SetIterations(-1), InputError);
}

TEST(SgdTest, ValidateNamesTheBadField) {
  EXPECT_NO_THROW(SgdOptions{}.Validate());
  EXPECT_NE(ValidateMessage({.learning_rate = -0.1f}).find("learning_rate"), std::string::npos);
  EXPECT_NE(ValidateMessage({.momentum = 1.0f}).find("momentum"), std::string::npos);
  EXPECT_NE(ValidateMessage({.momentum = -0.5f}).find("momentum"), std::string::npos);
  EXPECT_NE(ValidateMessage({.weight_decay = -1.0f}).find("weight_decay"), std::string::npos);
  EXPECT_NE(ValidateMessage({.decay = -0.01f}).find("decay"), std::string::npos);
  EXPECT_NE(ValidateMessage({.learning_rate = INFINITY}).find("learning_rate"), std::string::npos);
}

TEST(SgdTest, ConstructorRejectsBadOptionsAndMismatchedViews) {
  std::vector<float> w{1.0f, 2.0f};
  const std::vector<float> g{1.0f};
  EXPECT_THROW(Sgd({.learning_rate = -1.0f}, {}), InputError);
  EXPECT_THROW(Sgd({}, {ParamView{"w", w, g, false}}), InputError);
  std::vector<float> empty;
  EXPECT_THROW(Sgd({}, {ParamView{"e", empty, g, false}}), InputError);
}

TEST(SgdTest, VelocityAllocatedPerParam) {
  std::vector<float> a(5, 1.0f), b(3, 1.0f);
  const std::vector<float> ga(5, 1.0f), gb(3, 1.0f);
  Sgd sgd({.momentum = 0.5f}, {ParamView{"a", a, ga}, ParamView{"b", b, gb}});
  ASSERT_EQ(sgd.size(), 2u);
  EXPECT_EQ(sgd.velocity(0).size(), 5u);
  EXPECT_EQ(sgd.velocity(1).size(), 3u);
  EXPECT_EQ(sgd.param(1).name, "b");
  // Restoring velocity from a checkpoint: writes go into the optimizer's state.
  sgd.velocity(1)[2] = -1.0f;
  sgd.Step();  // v = 0.5 * (-1) - 0.01 * 1 = -0.51
  EXPECT_NEAR(sgd.velocity(1)[2], -0.51f, kTol);
  EXPECT_NEAR(b[2], 1.0f - 0.51f, kTol);
}

}  // namespace
}  // namespace epochal::optim
