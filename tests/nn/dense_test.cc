#include "epochal/nn/dense.h"

#include <gtest/gtest.h>

#include "epochal/nn/softmax_cross_entropy.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

struct DenseCase {
  std::vector<int64_t> src_shape;
  int64_t units;
  bool fuse_relu;
  bool blocked;
};

class DenseTest : public ::testing::TestWithParam<DenseCase> {};

TEST_P(DenseTest, MatchesReferenceForwardAndBackward) {
  const DenseCase p = GetParam();
  testing::PlanHarness h;
  Dense dense("dense", {.units = p.units, .fuse_relu = p.fuse_relu});
  const auto md =
      p.blocked ? dnnl::memory::desc(p.src_shape, dt::f32, tag::aBcd8b) : PlainDesc(p.src_shape);
  auto plan = dense.MakePlan(h.ctx, md);
  int64_t k = 1;
  for (size_t i = 1; i < p.src_shape.size(); ++i) k *= p.src_shape[i];
  const ref::Array src = RandomArray(p.src_shape, 1);
  const ref::Array weights = RandomArray({p.units, k}, 2, -0.2, 0.2);
  const ref::Array bias = RandomArray({p.units}, 3);
  FromPlain(h.ctx, ToFloat(weights), dense.parameters()[0]->value);
  FromPlain(h.ctx, ToFloat(bias), dense.parameters()[1]->value);
  dnnl::memory src_m = h.Like(md, src);
  StepContext step;
  plan->Forward(step, src_m);
  ref::Array expected;
  ref::DenseForward(src, weights, bias, &expected);
  const ref::Array pre = expected;
  if (p.fuse_relu) ref::ReluForward(pre, &expected);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);

  const ref::Array diff = RandomArray(expected.shape, 4);
  plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
  ref::Array diff_pre = diff;
  if (p.fuse_relu) ref::ReluBackward(pre, diff, &diff_pre);
  ref::Array diff_src, diff_w, diff_b;
  ref::DenseBackward(src, weights, diff_pre, &diff_src, &diff_w, &diff_b);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(dense.parameters()[0]->grad)), diff_w), kTolerance);
  EXPECT_LT(RelativeError(ToFloat(h.Read(dense.parameters()[1]->grad)), diff_b), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Shapes, DenseTest,
                         ::testing::Values(DenseCase{{4, 3136}, 512, true, false},
                                           DenseCase{{5, 512}, 10, false, false},
                                           DenseCase{{3, 7}, 3, false, false},
                                           DenseCase{{2, 16, 3, 3}, 12, true, true}));

TEST(SoftmaxCrossEntropyTest, MatchesReference) {
  testing::PlanHarness h;
  const ref::Array logits = RandomArray({6, 10}, 1, -5, 5);
  const std::vector<int32_t> labels = {0, 9, 3, 3, 7, 1};
  SoftmaxCrossEntropyPlan loss(h.ctx, PlainDesc({6, 10}));
  const double sum = loss.Forward(h.Plain(logits), labels);
  ref::Array diff, prob;
  const double mean = ref::SoftmaxCrossEntropy(logits, {0, 9, 3, 3, 7, 1}, &diff, &prob);
  EXPECT_NEAR(sum / 6, mean, 1e-5);
  EXPECT_LT(RelativeError(
                std::vector<float>(loss.probabilities().begin(), loss.probabilities().end()), prob),
            kTolerance);
  loss.Backward(labels, 1.0f / 6);
  EXPECT_LT(RelativeError(ToFloat(h.Read(loss.diff_src())), diff), kTolerance);
  int64_t correct = 0;
  for (int n = 0; n < 6; ++n) {
    int best = 0;
    for (int k = 1; k < 10; ++k) best = prob.at(n, k) > prob.at(n, best) ? k : best;
    EXPECT_EQ(loss.predictions()[static_cast<size_t>(n)], best);
    correct += best == labels[static_cast<size_t>(n)];
  }
  EXPECT_EQ(loss.correct(), correct);
}

TEST(SoftmaxCrossEntropyTest, StableForHugeLogits) {
  testing::PlanHarness h;
  ref::Array logits({1, 3});
  logits[0] = 1000;
  logits[1] = -1000;
  logits[2] = 999;
  SoftmaxCrossEntropyPlan loss(h.ctx, PlainDesc({1, 3}));
  const std::vector<int32_t> labels = {2};
  const double l = loss.Forward(h.Plain(logits), labels);
  EXPECT_NEAR(l, std::log(1 + std::exp(-1.0)) + 1.0, 1e-4);
}

}  // namespace
}  // namespace epochal::nn
