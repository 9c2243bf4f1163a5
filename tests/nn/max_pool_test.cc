// Max pooling against the reference kernel, over shapes, strides and layouts.
#include "epochal/nn/max_pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "epochal/core/bf16.h"
#include "epochal/nn/precision.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Blocked;
using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::RoundedToBf16;
using testing::ToFloat;

struct PoolCase {
  std::vector<int64_t> shape;
  int64_t pool, stride;
  bool blocked;
};

class MaxPoolTest : public ::testing::TestWithParam<PoolCase> {};

TEST_P(MaxPoolTest, MatchesReference) {
  const PoolCase p = GetParam();
  testing::PlanHarness h;
  MaxPool2D pool("pool", p.pool, p.stride);
  const auto md = p.blocked ? Blocked(p.shape) : PlainDesc(p.shape);
  auto plan = pool.MakePlan(h.ctx, md);
  const ref::Array src = RandomArray(p.shape, 1);  // Continuous values: no ties.
  dnnl::memory src_m = h.Like(md, src);
  StepContext step;
  plan->Forward(step, src_m);
  ref::Array expected;
  ref::MaxPoolForward(src, static_cast<int>(p.pool), static_cast<int>(p.stride), &expected);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);
  const ref::Array diff = RandomArray(expected.shape, 2);
  plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
  ref::Array diff_src;
  ref::MaxPoolBackward(src, static_cast<int>(p.pool), static_cast<int>(p.stride), diff, &diff_src);
  EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
}

// The first case runs on the hand-written kernels, the others on oneDNN.
INSTANTIATE_TEST_SUITE_P(Shapes, MaxPoolTest,
                         ::testing::Values(PoolCase{{2, 32, 28, 28}, 2, 2, true},
                                           PoolCase{{2, 3, 7, 7}, 2, 2, false},
                                           PoolCase{{1, 8, 9, 9}, 3, 2, true},
                                           PoolCase{{3, 2, 6, 5}, 3, 3, false},
                                           PoolCase{{2, 16, 7, 7}, 2, 2, true}));

// The hand-written 2 x 2 kernels (nChw16c and nChw8c, even H and W) on inputs full of
// ties, as batch norm after a ReLU makes them (every zero of a channel maps to one
// value): the first maximum of each window, row by row, must win, as in the reference.
// Backward runs twice with different gradients, so a value the first pass left behind
// would show.
TEST(MaxPoolHandKernelTest, TiesGoToTheFirstMaximumAndEveryGradientIsWritten) {
  using tag = dnnl::memory::format_tag;
  using type = dnnl::memory::data_type;
  for (const type dtype : {type::f32, type::bf16}) {
    if (dtype == type::bf16 && !DispatchedIsaHasBf16()) continue;  // bf16 memory needs native bf16.
    for (const tag layout : {tag::aBcd16b, tag::aBcd8b}) {
      for (const std::vector<int64_t>& shape :
           {std::vector<int64_t>{2, 32, 6, 4}, std::vector<int64_t>{3, 16, 2, 8}}) {
        SCOPED_TRACE(::testing::PrintToString(shape) + (layout == tag::aBcd16b ? " 16b" : " 8b"));
        testing::PlanHarness h;
        MaxPool2D pool("pool", 2, 2);
        const dnnl::memory::desc md(shape, dtype, layout);
        ASSERT_TRUE(pool.UsesHandKernel(md));
        auto plan = pool.MakePlan(h.ctx, md);
        ref::Array src = RandomArray(shape, 5);
        // Four values, -2 to 1: ties in most windows, some windows all equal.
        for (double& v : src.data) v = std::floor(v * 1.5);
        dnnl::memory src_m = h.Like(md, src);
        StepContext step;
        plan->Forward(step, src_m);
        ref::Array expected;
        ref::MaxPoolForward(src, 2, 2, &expected);
        EXPECT_EQ(ToFloat(h.Read(plan->dst())), ToFloat(expected));
        EXPECT_TRUE(plan->dst().get_desc() == dnnl::memory::desc(expected.shape, dtype, layout));
        for (const uint64_t seed : {6u, 7u}) {
          ref::Array diff = RandomArray(expected.shape, seed);
          if (dtype == type::bf16) diff = RoundedToBf16(diff);
          plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
          ref::Array diff_src;
          ref::MaxPoolBackward(src, 2, 2, diff, &diff_src);
          if (dtype == type::bf16) diff_src = RoundedToBf16(diff_src);
          EXPECT_EQ(ToFloat(h.Read(plan->diff_src())), ToFloat(diff_src)) << "seed " << seed;
        }
      }
    }
  }
}

// Everything else stays on oneDNN's primitives (MaxPoolTest covers them).
TEST(MaxPoolHandKernelTest, OtherShapesAndLayoutsUseOneDnn) {
  using tag = dnnl::memory::format_tag;
  const auto f32 = dnnl::memory::data_type::f32;
  MaxPool2D two("pool", 2, 2), three("pool", 3, 2);
  EXPECT_TRUE(two.UsesHandKernel(dnnl::memory::desc({2, 32, 28, 28}, f32, tag::aBcd16b)));
  EXPECT_FALSE(two.UsesHandKernel(dnnl::memory::desc({2, 32, 28, 28}, f32, tag::abcd)));
  EXPECT_FALSE(two.UsesHandKernel(dnnl::memory::desc({2, 32, 7, 7}, f32, tag::aBcd16b)));
  EXPECT_FALSE(two.UsesHandKernel(dnnl::memory::desc({2, 12, 8, 8}, f32, tag::aBcd8b)));
  EXPECT_FALSE(three.UsesHandKernel(dnnl::memory::desc({2, 32, 28, 28}, f32, tag::aBcd16b)));
  EXPECT_FALSE(two.UsesHandKernel(
      dnnl::memory::desc({2, 32, 28, 28}, dnnl::memory::data_type::s8, tag::aBcd16b)));
}

}  // namespace
}  // namespace epochal::nn
