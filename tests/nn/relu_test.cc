// ReLU against the reference kernel, in plain and blocked layouts.
#include "epochal/nn/relu.h"

#include <gtest/gtest.h>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Blocked;
using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

TEST(ReluTest, MatchesReference) {
  for (const auto& md : {PlainDesc({2, 3, 5, 5}), Blocked({2, 16, 3, 3})}) {
    testing::PlanHarness h;
    ReLU relu("relu");
    auto plan = relu.MakePlan(h.ctx, md);
    const ref::Array src = RandomArray(md.dims(), 1);
    dnnl::memory src_m = h.Like(md, src);
    StepContext step;
    plan->Forward(step, src_m);
    ref::Array expected;
    ref::ReluForward(src, &expected);
    EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), expected), kTolerance);
    const ref::Array diff = RandomArray(md.dims(), 2);
    plan->Backward(step, src_m, h.Like(md, diff), true);
    ref::Array diff_src;
    ref::ReluBackward(src, diff, &diff_src);
    EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);
  }
}

}  // namespace
}  // namespace epochal::nn
