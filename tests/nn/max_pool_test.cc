// Max pooling against the reference kernel, over shapes, strides and layouts.
#include "epochal/nn/max_pool.h"

#include <gtest/gtest.h>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Blocked;
using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
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

INSTANTIATE_TEST_SUITE_P(Shapes, MaxPoolTest,
                         ::testing::Values(PoolCase{{2, 32, 28, 28}, 2, 2, true},
                                           PoolCase{{2, 3, 7, 7}, 2, 2, false},
                                           PoolCase{{1, 8, 9, 9}, 3, 2, true},
                                           PoolCase{{3, 2, 6, 5}, 3, 3, false}));

}  // namespace
}  // namespace epochal::nn
