// Flatten: blocked input comes out in plain order, and the gradient goes back unchanged.
#include "epochal/nn/flatten.h"

#include <gtest/gtest.h>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Blocked;
using testing::RandomArray;
using testing::ToFloat;

TEST(FlattenTest, BlockedInputComesOutInPlainOrder) {
  const std::vector<int64_t> shape = {2, 16, 3, 3};
  for (const auto& md : {PlainDesc(shape), Blocked(shape)}) {
    testing::PlanHarness h;
    Flatten flatten("flat");
    auto plan = flatten.MakePlan(h.ctx, md);
    const ref::Array src = RandomArray(shape, 1);
    dnnl::memory src_m = h.Like(md, src);
    StepContext step;
    plan->Forward(step, src_m);
    EXPECT_EQ(plan->dst().get_desc().dims(), (dnnl::memory::dims{2, 144}));
    EXPECT_EQ(ToFloat(h.Read(plan->dst())), ToFloat(src));
    const ref::Array diff = RandomArray({2, 144}, 2);
    // diff_src may alias diff_dst, which must outlive it (as the next layer's does).
    dnnl::memory diff_m = h.Like(PlainDesc({2, 144}), diff);
    plan->Backward(step, src_m, diff_m, true);
    EXPECT_EQ(ToFloat(h.Read(plan->diff_src())), ToFloat(diff));
  }
}

}  // namespace
}  // namespace epochal::nn
