// ReLU, max pool, dropout and flatten against the reference kernels.
#include <gtest/gtest.h>

#include "epochal/nn/dropout.h"
#include "epochal/nn/flatten.h"
#include "epochal/nn/max_pool.h"
#include "epochal/nn/relu.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

dnnl::memory::desc Blocked(const std::vector<int64_t>& shape) {
  return dnnl::memory::desc(shape, dt::f32, tag::aBcd8b);
}

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

TEST(DropoutTest, MatchesReferenceWithItsMaskInAnyLayout) {
  const std::vector<int64_t> shape = {3, 16, 4, 4};
  const std::vector<int64_t> ids = {17, 4, 123456};
  const float rate = 0.25f;
  std::vector<float> plain_out;
  for (const auto& md : {PlainDesc(shape), Blocked(shape)}) {
    testing::PlanHarness h;
    Dropout dropout("drop", rate);
    auto plan = dropout.MakePlan(h.ctx, md);
    const ref::Array src = RandomArray(shape, 1);
    dnnl::memory src_m = h.Like(md, src);
    StepContext step{.mode = Mode::kTrain, .seed = 9, .epoch = 3, .sample_ids = ids};
    plan->Forward(step, src_m);
    // The layer's own mask, in logical order, drives the reference.
    ref::Array mask(shape);
    const int64_t per_sample = 16 * 4 * 4;
    std::vector<uint8_t> m(static_cast<size_t>(per_sample));
    int64_t kept = 0;
    for (size_t n = 0; n < ids.size(); ++n) {
      dropout.SampleMask(9, 3, ids[n], m);
      for (int64_t j = 0; j < per_sample; ++j) {
        mask[static_cast<int64_t>(n) * per_sample + j] = m[static_cast<size_t>(j)];
        kept += m[static_cast<size_t>(j)];
      }
    }
    const double keep_share = double(kept) / double(3 * per_sample);
    EXPECT_NEAR(keep_share, 1.0 - rate, 0.05);
    ref::Array expected;
    ref::DropoutForward(src, mask, rate, &expected);
    const auto out = ToFloat(h.Read(plan->dst()));
    EXPECT_LT(RelativeError(out, expected), kTolerance);
    if (plain_out.empty()) {
      plain_out = out;
    } else {
      EXPECT_EQ(out, plain_out) << "the mask must not depend on the memory layout";
    }
    const ref::Array diff = RandomArray(shape, 2);
    plan->Backward(step, src_m, h.Like(md, diff), true);
    ref::Array diff_src;
    ref::DropoutBackward(mask, rate, diff, &diff_src);
    EXPECT_LT(RelativeError(ToFloat(h.Read(plan->diff_src())), diff_src), kTolerance);

    // Inference is the identity; another epoch draws another mask.
    StepContext infer;
    infer.mode = Mode::kInference;
    plan->Forward(infer, src_m);
    EXPECT_LT(RelativeError(ToFloat(h.Read(plan->dst())), src), kTolerance);
    StepContext other = step;
    other.epoch = 4;
    plan->Forward(other, src_m);
    EXPECT_NE(ToFloat(h.Read(plan->dst())), out);
  }
}

TEST(DropoutTest, MaskDependsOnSampleNotOnBatchPosition) {
  Dropout dropout("drop", 0.5f);
  std::vector<uint8_t> a(100), b(100), c(100);
  dropout.SampleMask(1, 0, 42, a);
  dropout.SampleMask(1, 0, 42, b);
  dropout.SampleMask(1, 0, 43, c);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

// The plan's vectorized mask generator against the scalar Philox one it replaces: same
// flags for every size (whole blocks and a partial last block), rate and sample.
TEST(DropoutTest, FastMaskMatchesSampleMask) {
  for (const float rate : {0.0f, 0.1f, 0.25f, 0.5f, 0.9f}) {
    Dropout dropout("drop" + std::to_string(rate), rate);
    for (const size_t size : {1u, 3u, 4u, 5u, 63u, 64u, 65u, 6272u, 3136u * 4 + 2}) {
      for (const int64_t id : {int64_t{0}, int64_t{7}, int64_t{59999}}) {
        std::vector<uint8_t> slow(size), fast((size + 3) / 4 * 4);
        dropout.SampleMask(11, 2, id, slow);
        dropout.FastSampleMask(11, 2, id, fast);
        fast.resize(size);
        ASSERT_EQ(fast, slow) << "rate " << rate << " size " << size << " id " << id;
      }
    }
  }
}

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
