#include "epochal/nn/batch_norm.h"

#include <gtest/gtest.h>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

class BatchNormTest : public ::testing::TestWithParam<std::vector<int64_t>> {};

// The 4-D cases use the blocked layout a conv would hand over, as in the real model.
dnnl::memory::desc SrcDesc(const std::vector<int64_t>& shape) {
  if (shape.size() == 4 && shape[1] % 8 == 0) {
    return dnnl::memory::desc(shape, dt::f32, tag::aBcd8b);
  }
  return PlainDesc(shape);
}

TEST_P(BatchNormTest, MatchesReferenceInTrainingAndInference) {
  const auto shape = GetParam();
  testing::PlanHarness h;
  BatchNorm bn("bn", {});
  const dnnl::memory::desc src_md = SrcDesc(shape);
  auto plan = bn.MakePlan(h.ctx, src_md);
  const int64_t c = shape[1];
  const ref::Array src = RandomArray(shape, 1, -2, 3);
  const ref::Array gamma = RandomArray({c}, 2, 0.5, 1.5);
  const ref::Array beta = RandomArray({c}, 3);
  FromPlain(h.ctx, ToFloat(gamma), bn.parameters()[0]->value);
  FromPlain(h.ctx, ToFloat(beta), bn.parameters()[1]->value);
  dnnl::memory src_m = h.Like(src_md, src);

  StepContext train;
  plan->Forward(train, src_m);
  ref::Array expected, mean, variance;
  ref::BatchNormForwardTraining(src, gamma, beta, 1e-3, &expected, &mean, &variance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);

  // Running statistics: one Keras update from (0, 1).
  int64_t reduced = src.size() / c;
  const double correction = shape.size() == 4 ? double(reduced) / double(reduced - 1) : 1.0;
  for (int64_t k = 0; k < c; ++k) {
    EXPECT_NEAR(bn.state()[0]->value[static_cast<size_t>(k)], 0.01 * mean[k], 1e-5);
    EXPECT_NEAR(bn.state()[1]->value[static_cast<size_t>(k)],
                0.99 + 0.01 * variance[k] * correction, 1e-5);
  }

  const ref::Array diff_dst = RandomArray(shape, 4);
  dnnl::memory diff_m = h.Like(plan->dst().get_desc(), diff_dst);
  plan->Backward(train, src_m, diff_m, true);
  ref::Array diff_src, diff_gamma, diff_beta;
  ref::BatchNormBackward(src, gamma, mean, variance, diff_dst, 1e-3, &diff_src, &diff_gamma,
                         &diff_beta);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(bn.parameters()[0]->grad)), diff_gamma), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(bn.parameters()[1]->grad)), diff_beta), kTolerance);

  // Inference uses the running statistics; a frozen training pass leaves them alone.
  const std::vector<float> running_mean = bn.state()[0]->value;
  StepContext frozen;
  frozen.mode = Mode::kTrainFrozen;
  plan->Forward(frozen, src_m);
  EXPECT_EQ(bn.state()[0]->value, running_mean);
  StepContext infer;
  infer.mode = Mode::kInference;
  plan->Forward(infer, src_m);
  ref::Array rm({c}), rv({c});
  for (int64_t k = 0; k < c; ++k) {
    rm[k] = bn.state()[0]->value[static_cast<size_t>(k)];
    rv[k] = bn.state()[1]->value[static_cast<size_t>(k)];
  }
  ref::BatchNormForwardInference(src, gamma, beta, rm, rv, 1e-3, &expected);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormTest,
                         ::testing::Values(std::vector<int64_t>{4, 8, 5, 5},
                                           std::vector<int64_t>{2, 32, 7, 7},
                                           std::vector<int64_t>{3, 3, 4, 6},
                                           std::vector<int64_t>{16, 40}));

}  // namespace
}  // namespace epochal::nn
