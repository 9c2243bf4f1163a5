#include "epochal/nn/conv2d.h"

#include <gtest/gtest.h>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;

struct ConvCase {
  int64_t n, c, h, w, filters, kernel, stride;
  bool same;
  bool fuse_relu;
};

class ConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvTest, MatchesReferenceForwardAndBackward) {
  const ConvCase p = GetParam();
  testing::PlanHarness h;
  Conv2DOptions o{.filters = p.filters,
                  .kernel = p.kernel,
                  .stride = p.stride,
                  .pad = {},
                  .same = p.same,
                  .bias = true,
                  .fuse_relu = p.fuse_relu};
  Conv2D conv("conv", o);
  const ref::Array src = RandomArray({p.n, p.c, p.h, p.w}, 1);
  auto plan = conv.MakePlan(h.ctx, PlainDesc(src.shape));
  const ref::Array weights = RandomArray({p.filters, p.c, p.kernel, p.kernel}, 2);
  const ref::Array bias = RandomArray({p.filters}, 3);
  auto params = conv.parameters();
  FromPlain(h.ctx, testing::ToFloat(weights), params[0]->value);
  FromPlain(h.ctx, testing::ToFloat(bias), params[1]->value);

  dnnl::memory src_m = h.Plain(src);
  StepContext step;
  plan->Forward(step, src_m);

  const Padding2D pad = conv.PaddingFor(src_m.get_desc().dims());
  ref::ConvGeometry g{.stride = static_cast<int>(p.stride),
                      .pad_top = static_cast<int>(pad.top),
                      .pad_left = static_cast<int>(pad.left),
                      .pad_bottom = static_cast<int>(pad.bottom),
                      .pad_right = static_cast<int>(pad.right)};
  ref::Array expected;
  ref::Conv2DForward(src, weights, &bias, g, &expected);
  ref::Array pre_relu = expected;
  if (p.fuse_relu) ref::ReluForward(pre_relu, &expected);
  EXPECT_LT(RelativeError(testing::ToFloat(h.Read(plan->dst())), expected), kTolerance);

  const ref::Array diff_dst = RandomArray(expected.shape, 4);
  dnnl::memory diff_dst_m = h.Like(plan->dst().get_desc(), diff_dst);
  plan->Backward(step, src_m, diff_dst_m, true);
  ref::Array diff_pre = diff_dst;
  if (p.fuse_relu) ref::ReluBackward(pre_relu, diff_dst, &diff_pre);
  ref::Array diff_src, diff_w, diff_b;
  ref::Conv2DBackward(src, weights, diff_pre, g, &diff_src, &diff_w, &diff_b);
  EXPECT_LT(RelativeError(testing::ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
  EXPECT_LT(RelativeError(testing::ToFloat(h.Read(params[0]->grad)), diff_w), kTolerance);
  EXPECT_LT(RelativeError(testing::ToFloat(h.Read(params[1]->grad)), diff_b), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvTest,
    ::testing::Values(ConvCase{2, 1, 28, 28, 32, 3, 1, true, true},  // MiniVGG's first conv
                      ConvCase{3, 32, 14, 14, 64, 3, 1, true, true},
                      ConvCase{2, 3, 9, 9, 8, 3, 1, false, false},   // valid
                      ConvCase{2, 3, 11, 10, 5, 5, 2, true, false},  // asymmetric same padding
                      ConvCase{1, 16, 6, 6, 8, 1, 1, true, true},    // 1x1
                      ConvCase{4, 8, 7, 7, 16, 3, 2, false, true},
                      ConvCase{4, 1, 8, 8, 4, 3, 1, true, true}));

TEST(ConvLayerTest, SamePaddingMatchesKeras) {
  int64_t lo, hi;
  SamePadding1D(28, 3, 1, &lo, &hi);
  EXPECT_EQ(lo, 1);
  EXPECT_EQ(hi, 1);
  SamePadding1D(28, 3, 2, &lo, &hi);
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 1);
  SamePadding1D(7, 2, 2, &lo, &hi);
  EXPECT_EQ(lo, 0);
  EXPECT_EQ(hi, 1);
}

TEST(ConvLayerTest, GlorotUniformRangeAndDeterminism) {
  testing::PlanHarness h;
  Conv2DOptions o;
  o.filters = 32;
  Conv2D conv("c", o);
  auto plan = conv.MakePlan(h.ctx, PlainDesc({2, 16, 8, 8}));
  conv.InitializeParameters(h.ctx, 7);
  const auto w = ToPlain(h.ctx, conv.parameters()[0]->value);
  const double limit = std::sqrt(6.0 / (16 * 9 + 32 * 9));
  double max_abs = 0, sum = 0;
  for (float v : w) {
    max_abs = std::max(max_abs, static_cast<double>(std::abs(v)));
    sum += v;
  }
  EXPECT_LE(max_abs, limit);
  EXPECT_GT(max_abs, 0.95 * limit);
  EXPECT_NEAR(sum / static_cast<double>(w.size()), 0.0, 0.01);
  conv.InitializeParameters(h.ctx, 7);
  EXPECT_EQ(ToPlain(h.ctx, conv.parameters()[0]->value), w);
  for (float b : ToPlain(h.ctx, conv.parameters()[1]->value)) EXPECT_EQ(b, 0.0f);
}

}  // namespace
}  // namespace epochal::nn
