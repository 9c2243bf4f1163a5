// Dropout against the reference kernel with its own mask; the mask depends on the sample,
// not on the layout or the batch position.
#include "epochal/nn/dropout.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Blocked;
using testing::kTolerance;
using testing::RandomArray;
using testing::RelativeError;
using testing::ToFloat;

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
      // The counter's low word wraps inside a sample: 2739137 * 1568 blocks (size 6272)
      // at a group of 16 blocks, 252645135 * 17 blocks (size 65) one block after
      // 2^32 - 1, inside a group.
      for (const int64_t id :
           {int64_t{0}, int64_t{7}, int64_t{59999}, int64_t{2739137}, int64_t{252645135}}) {
        std::vector<uint8_t> slow(size), fast((size + 3) / 4 * 4), portable(fast.size());
        dropout.SampleMask(11, 2, id, slow);
        dropout.FastSampleMask(11, 2, id, fast);  // AVX-512 where this CPU has it
        dropout.FastSampleMask(11, 2, id, portable, false);
        fast.resize(size);
        portable.resize(size);
        ASSERT_EQ(fast, slow) << "rate " << rate << " size " << size << " id " << id;
        ASSERT_EQ(portable, slow) << "rate " << rate << " size " << size << " id " << id;
      }
    }
  }
}

}  // namespace
}  // namespace epochal::nn
