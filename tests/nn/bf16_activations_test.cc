// bf16 activations between layers (Precision::kBf16 with bf16_dst): every layer that reads
// or writes bf16 tensors against its double-precision reference kernel.
//
// Inputs are rounded to bf16 before the reference sees them, so the reference computes on
// exactly the values the layer reads; what remains is the layer's own arithmetic and the
// one rounding of each bf16 output. Rounding to nearest with bf16's 8-bit significand
// moves a value by at most u = 2^-8 of itself (half an ulp, 2^-9, would do for nearest
// rounding; 2^-8 leaves room for the f32 work in front of it). So:
//  - max pool, which only selects and routes values, must be exact;
//  - dropout multiplies once in f32 and rounds once: within u |value| of the reference;
//  - batch norm computes in f32 (statistics over at most a few thousand elements, so
//    f32's 2^-24 costs under 1e-4 of the scale) and rounds once: within
//    u |reference| + 1e-4 max |reference|;
//  - conv and dense keep bf16_test.cc's product bound and add the output rounding.
// The tests skip with their reason where oneDNN dispatches no native bf16 (dropout's
// loops are plain C++ and run everywhere).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "epochal/core/bf16.h"
#include "epochal/core/rng.h"
#include "epochal/nn/batch_norm.h"
#include "epochal/nn/conv2d.h"
#include "epochal/nn/dense.h"
#include "epochal/nn/dropout.h"
#include "epochal/nn/max_pool.h"
#include "epochal/nn/model.h"
#include "epochal/nn/precision.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Abs;
using testing::RandomArray;
using testing::RoundedToBf16;
using testing::ToFloat;

constexpr double kU = 1.0 / 256.0;

dnnl::memory::desc Bf16(const std::vector<int64_t>& shape, tag t) {
  return dnnl::memory::desc(shape, dt::bf16, t);
}

// |actual - expected| <= u |expected| + absolute, elementwise.
void ExpectWithinRounding(const std::vector<float>& actual, const ref::Array& expected,
                          double absolute, const char* what) {
  ASSERT_EQ(actual.size(), expected.data.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double allowed = kU * std::abs(expected.data[i]) + absolute;
    if (std::abs(actual[i] - expected.data[i]) > allowed && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: " << actual[i] << " vs " << expected.data[i]
                    << ", allowed " << allowed;
    }
  }
}

double MaxAbs(const ref::Array& a) {
  double m = 0;
  for (double v : a.data) m = std::max(m, std::abs(v));
  return m;
}

// Every value a bf16 memory holds is a bf16 number: reading it back and rounding again
// changes nothing. (A layer that wrote f32 into a memory described as bf16 would fail.)
void ExpectBf16(const dnnl::memory& m) { ASSERT_EQ(m.get_desc().data_type(), dt::bf16); }

struct BnCase {
  std::vector<int64_t> shape;
  tag layout;
};

class Bf16BatchNormTest : public ::testing::TestWithParam<BnCase> {};

// A single process's "all-reduce": its sums are already the global ones, so the
// synchronized path must agree with the plain one.
class SoloReducer : public StatisticsReducer {
 public:
  void AllreduceSum(std::span<double>) override { ++calls; }
  int calls = 0;
};

TEST_P(Bf16BatchNormTest, TrainingInferenceAndBackwardWithinOneRoundingOfTheReference) {
  REQUIRE_NATIVE_BF16();
  const BnCase p = GetParam();
  const int64_t c = p.shape[1];
  const ref::Array src = RoundedToBf16(RandomArray(p.shape, 1, -2, 3));
  const ref::Array gamma = RandomArray({c}, 2, 0.5, 1.5);
  const ref::Array beta = RandomArray({c}, 3);
  const ref::Array diff_dst = RoundedToBf16(RandomArray(p.shape, 4));
  ref::Array expected, mean, variance, diff_src, diff_gamma, diff_beta;
  ref::BatchNormForwardTraining(src, gamma, beta, 1e-3, &expected, &mean, &variance);
  ref::BatchNormBackward(src, gamma, mean, variance, diff_dst, 1e-3, &diff_src, &diff_gamma,
                         &diff_beta);
  for (const bool synchronized : {false, true}) {
    SCOPED_TRACE(synchronized ? "synchronized statistics" : "local statistics");
    testing::PlanHarness h;
    BatchNorm bn("bn", {});
    SoloReducer reducer;
    if (synchronized) bn.set_statistics_reducer(&reducer);
    const auto src_md = Bf16(p.shape, p.layout);
    auto plan = bn.MakePlan(h.ctx, src_md);
    FromPlain(h.ctx, ToFloat(gamma), bn.parameters()[0]->value);
    FromPlain(h.ctx, ToFloat(beta), bn.parameters()[1]->value);
    dnnl::memory src_m = h.Like(src_md, src);
    StepContext train;
    plan->Forward(train, src_m);
    ExpectBf16(plan->dst());
    EXPECT_EQ(plan->dst().get_desc().dims(), src_md.dims());
    ExpectWithinRounding(ToFloat(h.Read(plan->dst())), expected, 1e-4 * MaxAbs(expected), "dst");

    plan->Backward(train, src_m, h.Like(plan->dst().get_desc(), diff_dst), true);
    ExpectBf16(plan->diff_src());
    ExpectWithinRounding(ToFloat(h.Read(plan->diff_src())), diff_src, 1e-4 * MaxAbs(diff_src),
                         "diff_src");
    // The parameter gradients are f32 sums of exact products of bf16 inputs.
    ExpectWithinRounding(ToFloat(h.Read(bn.parameters()[0]->grad)), diff_gamma,
                         1e-4 * MaxAbs(diff_gamma), "diff_gamma");
    ExpectWithinRounding(ToFloat(h.Read(bn.parameters()[1]->grad)), diff_beta,
                         1e-4 * MaxAbs(diff_beta), "diff_beta");
    if (synchronized) {
      EXPECT_EQ(reducer.calls, 2) << "statistics and their gradient sums";
    }

    StepContext infer;
    infer.mode = Mode::kInference;
    plan->Forward(infer, src_m);
    ref::Array rm({c}), rv({c}), inferred;
    for (int64_t k = 0; k < c; ++k) {
      rm[k] = bn.state()[0]->value[static_cast<size_t>(k)];
      rv[k] = bn.state()[1]->value[static_cast<size_t>(k)];
    }
    ref::BatchNormForwardInference(src, gamma, beta, rm, rv, 1e-3, &inferred);
    ExpectWithinRounding(ToFloat(h.Read(plan->dst())), inferred, 1e-4 * MaxAbs(inferred),
                         "inference dst");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Bf16BatchNormTest,
    ::testing::Values(BnCase{{2, 32, 6, 6}, tag::aBcd16b},  // after a bf16 conv
                      BnCase{{3, 16, 5, 5}, tag::abcd},
                      BnCase{{8, 512}, tag::ab},  // after fc1: the N x C x 1 x 1 view
                      BnCase{{5, 20}, tag::ab}));

TEST(Bf16MaxPoolTest, SelectsAndRoutesExactly) {
  REQUIRE_NATIVE_BF16();
  // Distinct small integers in every 2 x 2 window, so the maximum is unique and every
  // value is exact in bf16.
  const std::vector<int64_t> shape = {2, 16, 6, 6};
  ref::Array src(shape);
  CounterRng rng(7, 1);
  for (int64_t plane = 0; plane < 2 * 16; ++plane) {
    for (int64_t wy = 0; wy < 3; ++wy) {
      for (int64_t wx = 0; wx < 3; ++wx) {
        int order[4] = {0, 1, 2, 3};
        for (int i = 3; i > 0; --i) {
          std::swap(
              order[i],
              order[static_cast<int>(rng.NextUniform() * static_cast<double>(i + 1)) % (i + 1)]);
        }
        const double base = std::floor(rng.NextUniform() * 200.0) - 100.0;
        for (int k = 0; k < 4; ++k) {
          src[plane * 36 + (2 * wy + k / 2) * 6 + 2 * wx + k % 2] = base + order[k];
        }
      }
    }
  }
  for (const tag layout : {tag::aBcd16b, tag::abcd}) {
    testing::PlanHarness h;
    MaxPool2D pool("pool", 2, 2);
    const auto src_md = Bf16(shape, layout);
    auto plan = pool.MakePlan(h.ctx, src_md);
    dnnl::memory src_m = h.Like(src_md, src);
    StepContext step;
    plan->Forward(step, src_m);
    ExpectBf16(plan->dst());
    ref::Array expected, diff_src;
    ref::MaxPoolForward(src, 2, 2, &expected);
    EXPECT_EQ(ToFloat(h.Read(plan->dst())), ToFloat(expected));
    const ref::Array diff = RoundedToBf16(RandomArray(expected.shape, 2));
    plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
    ExpectBf16(plan->diff_src());
    ref::MaxPoolBackward(src, 2, 2, diff, &diff_src);
    EXPECT_EQ(ToFloat(h.Read(plan->diff_src())), ToFloat(diff_src));
  }
}

TEST(Bf16DropoutTest, ScalesOnceAndRoundsOnceWithTheF32Mask) {
  const std::vector<int64_t> shape = {3, 16, 4, 4};
  const std::vector<int64_t> ids = {17, 4, 123456};
  const float rate = 0.25f;
  const ref::Array src = RoundedToBf16(RandomArray(shape, 1));
  const ref::Array diff = RoundedToBf16(RandomArray(shape, 2));
  for (const tag layout : {tag::aBcd16b, tag::abcd}) {
    testing::PlanHarness h;
    Dropout dropout("drop", rate);
    const auto md = Bf16(shape, layout);
    auto plan = dropout.MakePlan(h.ctx, md);
    dnnl::memory src_m = h.Like(md, src);
    StepContext step{.mode = Mode::kTrain, .seed = 9, .epoch = 3, .sample_ids = ids};
    plan->Forward(step, src_m);
    ExpectBf16(plan->dst());
    ref::Array mask(shape);
    const int64_t per_sample = 16 * 4 * 4;
    std::vector<uint8_t> m(static_cast<size_t>(per_sample));
    for (size_t n = 0; n < ids.size(); ++n) {
      dropout.SampleMask(9, 3, ids[n], m);
      for (int64_t j = 0; j < per_sample; ++j) {
        mask[static_cast<int64_t>(n) * per_sample + j] = m[static_cast<size_t>(j)];
      }
    }
    ref::Array expected, diff_src;
    ref::DropoutForward(src, mask, rate, &expected);
    const std::vector<float> out = ToFloat(h.Read(plan->dst()));
    ExpectWithinRounding(out, expected, 0.0, "dst");
    // Exactly the f32 product rounded once, and dropped elements exactly +0.
    for (size_t i = 0; i < out.size(); ++i) {
      const float want = mask.data[i] != 0
                             ? Bf16ToFloat(FloatToBf16(static_cast<float>(src.data[i]) / 0.75f))
                             : 0.0f;
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(want)) << i;
    }
    plan->Backward(step, src_m, h.Like(md, diff), true);
    ExpectBf16(plan->diff_src());
    ref::DropoutBackward(mask, rate, diff, &diff_src);
    ExpectWithinRounding(ToFloat(h.Read(plan->diff_src())), diff_src, 0.0, "diff_src");

    StepContext infer;
    infer.mode = Mode::kInference;
    plan->Forward(infer, src_m);
    EXPECT_EQ(ToFloat(h.Read(plan->dst())), ToFloat(src)) << "inference is the identity";
  }
}

// bf16_test.cc's bound for the products, plus one rounding of the output.
void ExpectProductBound(const std::vector<float>& actual, const ref::Array& expected,
                        const ref::Array& bound, int64_t k, bool rounded_output, const char* what) {
  ASSERT_EQ(actual.size(), expected.data.size()) << what;
  const double rel = 2 * kU + kU * kU + static_cast<double>(k) * std::ldexp(1.0, -24);
  int failures = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double product = rel * bound.data[i];
    const double rounding = rounded_output ? kU * (std::abs(expected.data[i]) + product) : 0.0;
    const double allowed = product + rounding + 1e-6;
    if (std::abs(actual[i] - expected.data[i]) > allowed && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: " << actual[i] << " vs " << expected.data[i]
                    << ", allowed " << allowed;
    }
  }
}

TEST(Bf16ConvActivationsTest, Bf16InBf16OutWithinTheProductBoundAndOneRounding) {
  REQUIRE_NATIVE_BF16();
  for (const bool bf16_src : {true, false}) {  // false: the model's first conv (f32 images)
    SCOPED_TRACE(bf16_src ? "bf16 src" : "f32 src");
    testing::PlanHarness h;
    Conv2D conv("conv", {.filters = 32,
                         .kernel = 3,
                         .stride = 1,
                         .pad = {},
                         .same = true,
                         .bias = true,
                         .fuse_relu = true,
                         .precision = Precision::kBf16,
                         .bf16_dst = true});
    const std::vector<int64_t> shape = {2, 16, 9, 9};
    const ref::Array src = RoundedToBf16(RandomArray(shape, 1));
    const auto src_md = bf16_src ? Bf16(shape, tag::aBcd16b) : PlainDesc(shape);
    auto plan = conv.MakePlan(h.ctx, src_md);
    auto params = conv.parameters();
    ASSERT_EQ(params[0]->value.get_desc().data_type(), dt::f32);
    const ref::Array weights = RandomArray({32, 16, 3, 3}, 2);
    const ref::Array bias = RandomArray({32}, 3);
    FromPlain(h.ctx, ToFloat(weights), params[0]->value);
    FromPlain(h.ctx, ToFloat(bias), params[1]->value);
    dnnl::memory src_m = h.Like(src_md, src);
    StepContext step;
    plan->Forward(step, src_m);
    ExpectBf16(plan->dst());
    const ref::ConvGeometry g{
        .stride = 1, .pad_top = 1, .pad_left = 1, .pad_bottom = 1, .pad_right = 1};
    ref::Array pre, expected, bound;
    ref::Conv2DForward(src, weights, &bias, g, &pre);
    ref::ReluForward(pre, &expected);
    const ref::Array abs_bias = Abs(bias);
    ref::Conv2DForward(Abs(src), Abs(weights), &abs_bias, g, &bound);
    const std::vector<float> dst = ToFloat(h.Read(plan->dst()));
    ExpectProductBound(dst, expected, bound, 16 * 9, true, "dst");

    const ref::Array diff = RoundedToBf16(RandomArray(expected.shape, 4));
    plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
    EXPECT_EQ(plan->diff_src().get_desc().data_type(), src_md.data_type());
    ref::Array diff_pre = diff;
    for (size_t i = 0; i < dst.size(); ++i) diff_pre.data[i] = dst[i] > 0 ? diff.data[i] : 0;
    ref::Array diff_src, diff_w, diff_b, bound_src, bound_w, bound_b;
    ref::Conv2DBackward(src, weights, diff_pre, g, &diff_src, &diff_w, &diff_b);
    ref::Conv2DBackward(Abs(src), Abs(weights), Abs(diff_pre), g, &bound_src, &bound_w, &bound_b);
    ExpectProductBound(ToFloat(h.Read(plan->diff_src())), diff_src, bound_src, 32 * 9, bf16_src,
                       "diff_src");
    ExpectProductBound(ToFloat(h.Read(params[0]->grad)), diff_w, bound_w, 2 * 81, false,
                       "diff_weights");
    ExpectProductBound(ToFloat(h.Read(params[1]->grad)), diff_b, bound_b, 2 * 81, false,
                       "diff_bias");
  }
}

TEST(Bf16DenseActivationsTest, Bf16InBf16OutWithinTheProductBoundAndOneRounding) {
  REQUIRE_NATIVE_BF16();
  testing::PlanHarness h;
  Dense dense("dense",
              {.units = 64, .fuse_relu = true, .precision = Precision::kBf16, .bf16_dst = true});
  const std::vector<int64_t> shape = {4, 96};
  const auto src_md = Bf16(shape, tag::ab);
  auto plan = dense.MakePlan(h.ctx, src_md);
  const ref::Array src = RoundedToBf16(RandomArray(shape, 1));
  const ref::Array weights = RandomArray({64, 96}, 2, -0.2, 0.2);
  const ref::Array bias = RandomArray({64}, 3);
  FromPlain(h.ctx, ToFloat(weights), dense.parameters()[0]->value);
  FromPlain(h.ctx, ToFloat(bias), dense.parameters()[1]->value);
  dnnl::memory src_m = h.Like(src_md, src);
  StepContext step;
  plan->Forward(step, src_m);
  ExpectBf16(plan->dst());
  ref::Array pre, expected, bound;
  ref::DenseForward(src, weights, bias, &pre);
  ref::ReluForward(pre, &expected);
  ref::DenseForward(Abs(src), Abs(weights), Abs(bias), &bound);
  const std::vector<float> dst = ToFloat(h.Read(plan->dst()));
  ExpectProductBound(dst, expected, bound, 96, true, "dst");
  const ref::Array diff = RoundedToBf16(RandomArray(expected.shape, 4));
  plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
  ExpectBf16(plan->diff_src());
  ref::Array diff_pre = diff;
  for (size_t i = 0; i < dst.size(); ++i) diff_pre.data[i] = dst[i] > 0 ? diff.data[i] : 0;
  ref::Array diff_src, diff_w, diff_b, bound_src, bound_w, bound_b;
  ref::DenseBackward(src, weights, diff_pre, &diff_src, &diff_w, &diff_b);
  ref::DenseBackward(Abs(src), Abs(weights), Abs(diff_pre), &bound_src, &bound_w, &bound_b);
  ExpectProductBound(ToFloat(h.Read(plan->diff_src())), diff_src, bound_src, 64, true, "diff_src");
  ExpectProductBound(ToFloat(h.Read(dense.parameters()[0]->grad)), diff_w, bound_w, 4, false,
                     "diff_weights");
}

}  // namespace
}  // namespace epochal::nn
