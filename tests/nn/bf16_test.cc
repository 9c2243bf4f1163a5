// bf16 mixed precision of the conv and dense layers against the f32/double reference
// kernels.
//
// Tolerance, from bf16's 8-bit significand (unit roundoff u = 2^-8): each operand is
// rounded once to bf16, so each product x*w carries a relative error of at most
// (1 + u)^2 - 1 = 2u + u^2; oneDNN accumulates in f32, which adds at most K * 2^-24 of
// the sum of |products| over K terms. The error of an output element is therefore
// bounded by (2u + u^2 + K 2^-24) * sum |x| |w|, and that sum is the reference kernel
// itself run on |src|, |weights| (and |diff_dst|) - so every element is checked
// against its own bound, not a global guess. The bias is added in f32 and costs
// nothing measurable. With a fused ReLU, the forward bound holds as is (ReLU is
// 1-Lipschitz); its backward mask is taken from the layer's own dst, because an
// output within its error bound of zero may legitimately fall either side.
//
// On a CPU where oneDNN dispatches no native bf16 (AVX2, plain AVX-512, or
// ONEDNN_MAX_CPU_ISA below AVX512_CORE_BF16) these tests skip and say why; the
// "without native bf16" CTest entry runs them that way on every machine.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>

#include "epochal/core/error.h"
#include "epochal/nn/conv2d.h"
#include "epochal/nn/dense.h"
#include "epochal/nn/model.h"
#include "epochal/nn/precision.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

using testing::Abs;
using testing::RandomArray;
using testing::ToFloat;

constexpr double kU = 1.0 / 256.0;  // bf16 unit roundoff, 2^-8.

// Checks |actual - expected| <= (2u + u^2 + K 2^-24) * bound elementwise; returns the
// largest error as a fraction of its bound (for the log).
double ExpectWithinBound(const std::vector<float>& actual, const ref::Array& expected,
                         const ref::Array& bound, int64_t k, const char* what) {
  EXPECT_EQ(actual.size(), expected.data.size()) << what;
  const double rel = 2 * kU + kU * kU + static_cast<double>(k) * std::ldexp(1.0, -24);
  double worst = 0;
  int failures = 0;
  for (size_t i = 0; i < actual.size() && i < expected.data.size(); ++i) {
    const double err = std::abs(actual[i] - expected.data[i]);
    const double allowed = rel * bound.data[i] + 1e-6;
    worst = std::max(worst, err / allowed);
    if (err > allowed && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: " << actual[i] << " vs " << expected.data[i]
                    << ", allowed " << allowed;
    }
  }
  return worst;
}

// Fraction of elements that differ from the f32 reference by more than f32 would: a
// bf16 path that silently ran in f32 would pass the bound but not this.
double FractionOffF32(const std::vector<float>& actual, const ref::Array& expected) {
  int64_t off = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    off += std::abs(actual[i] - expected.data[i]) > 1e-5 * (1 + std::abs(expected.data[i]));
  }
  return static_cast<double>(off) / static_cast<double>(std::max<size_t>(actual.size(), 1));
}

struct ConvCase {
  int64_t n, c, h, w, filters, kernel, stride;
  bool same, fuse_relu;
};

class Bf16ConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Bf16ConvTest, ForwardAndBackwardWithinTheBf16BoundOfTheReference) {
  REQUIRE_NATIVE_BF16();
  const ConvCase p = GetParam();
  testing::PlanHarness h;
  Conv2D conv("conv", {.filters = p.filters,
                       .kernel = p.kernel,
                       .stride = p.stride,
                       .pad = {},
                       .same = p.same,
                       .bias = true,
                       .fuse_relu = p.fuse_relu,
                       .precision = Precision::kBf16});
  const ref::Array src = RandomArray({p.n, p.c, p.h, p.w}, 1);
  auto plan = conv.MakePlan(h.ctx, PlainDesc(src.shape));
  auto params = conv.parameters();
  // Master weights and their gradients stay f32.
  ASSERT_EQ(params[0]->value.get_desc().data_type(), dt::f32);
  ASSERT_EQ(params[0]->grad.get_desc().data_type(), dt::f32);
  ASSERT_EQ(plan->dst().get_desc().data_type(), dt::f32);
  const ref::Array weights = RandomArray({p.filters, p.c, p.kernel, p.kernel}, 2);
  const ref::Array bias = RandomArray({p.filters}, 3);
  FromPlain(h.ctx, ToFloat(weights), params[0]->value);
  FromPlain(h.ctx, ToFloat(bias), params[1]->value);
  dnnl::memory src_m = h.Plain(src);
  StepContext step;
  plan->Forward(step, src_m);

  const Padding2D pad = conv.PaddingFor(src_m.get_desc().dims());
  const ref::ConvGeometry g{.stride = static_cast<int>(p.stride),
                            .pad_top = static_cast<int>(pad.top),
                            .pad_left = static_cast<int>(pad.left),
                            .pad_bottom = static_cast<int>(pad.bottom),
                            .pad_right = static_cast<int>(pad.right)};
  const int64_t k_fwd = p.c * p.kernel * p.kernel;
  ref::Array expected, bound;
  ref::Conv2DForward(src, weights, &bias, g, &expected);
  const ref::Array abs_bias = Abs(bias);
  ref::Conv2DForward(Abs(src), Abs(weights), &abs_bias, g, &bound);
  if (p.fuse_relu) {
    ref::Array pre = expected;
    ref::ReluForward(pre, &expected);
  }
  const std::vector<float> dst = ToFloat(h.Read(plan->dst()));
  const double fwd_worst = ExpectWithinBound(dst, expected, bound, k_fwd, "dst");
  EXPECT_GT(FractionOffF32(dst, expected), 0.0) << "the layer did not round to bf16";

  const ref::Array diff_dst = RandomArray(expected.shape, 4);
  plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff_dst), true);
  ref::Array diff_pre = diff_dst;
  if (p.fuse_relu) {
    for (size_t i = 0; i < dst.size(); ++i) diff_pre.data[i] = dst[i] > 0 ? diff_dst.data[i] : 0;
  }
  ref::Array diff_src, diff_w, diff_b, bound_src, bound_w, bound_b;
  ref::Conv2DBackward(src, weights, diff_pre, g, &diff_src, &diff_w, &diff_b);
  ref::Conv2DBackward(Abs(src), Abs(weights), Abs(diff_pre), g, &bound_src, &bound_w, &bound_b);
  const int64_t oh = expected.dim(2), ow = expected.dim(3);
  const double bwd_worst =
      std::max({ExpectWithinBound(ToFloat(h.Read(plan->diff_src())), diff_src, bound_src,
                                  p.filters * p.kernel * p.kernel, "diff_src"),
                ExpectWithinBound(ToFloat(h.Read(params[0]->grad)), diff_w, bound_w, p.n * oh * ow,
                                  "diff_weights"),
                ExpectWithinBound(ToFloat(h.Read(params[1]->grad)), diff_b, bound_b, p.n * oh * ow,
                                  "diff_bias")});
  RecordProperty("worst_error_over_bound_forward", std::to_string(fwd_worst));
  RecordProperty("worst_error_over_bound_backward", std::to_string(bwd_worst));
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16ConvTest,
                         ::testing::Values(ConvCase{2, 1, 28, 28, 32, 3, 1, true,
                                                    true},  // MiniVGG's first conv
                                           ConvCase{3, 32, 14, 14, 64, 3, 1, true, true},
                                           ConvCase{2, 32, 28, 28, 32, 3, 1, true, false},
                                           ConvCase{2, 3, 9, 9, 8, 3, 1, false, false},
                                           ConvCase{2, 3, 11, 10, 5, 5, 2, true, false},
                                           ConvCase{4, 8, 7, 7, 16, 3, 2, false, true}));

struct DenseCase {
  std::vector<int64_t> src_shape;
  int64_t units;
  bool fuse_relu, blocked;
};

class Bf16DenseTest : public ::testing::TestWithParam<DenseCase> {};

TEST_P(Bf16DenseTest, ForwardAndBackwardWithinTheBf16BoundOfTheReference) {
  REQUIRE_NATIVE_BF16();
  const DenseCase p = GetParam();
  testing::PlanHarness h;
  Dense dense("dense", {.units = p.units, .fuse_relu = p.fuse_relu, .precision = Precision::kBf16});
  const auto md =
      p.blocked ? dnnl::memory::desc(p.src_shape, dt::f32, tag::aBcd8b) : PlainDesc(p.src_shape);
  auto plan = dense.MakePlan(h.ctx, md);
  ASSERT_EQ(dense.parameters()[0]->value.get_desc().data_type(), dt::f32);
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
  ref::Array expected, bound;
  ref::DenseForward(src, weights, bias, &expected);
  ref::DenseForward(Abs(src), Abs(weights), Abs(bias), &bound);
  if (p.fuse_relu) {
    ref::Array pre = expected;
    ref::ReluForward(pre, &expected);
  }
  const std::vector<float> dst = ToFloat(h.Read(plan->dst()));
  ExpectWithinBound(dst, expected, bound, k, "dst");
  EXPECT_GT(FractionOffF32(dst, expected), 0.0) << "the layer did not round to bf16";

  const ref::Array diff = RandomArray(expected.shape, 4);
  plan->Backward(step, src_m, h.Like(plan->dst().get_desc(), diff), true);
  ref::Array diff_pre = diff;
  if (p.fuse_relu) {
    for (size_t i = 0; i < dst.size(); ++i) diff_pre.data[i] = dst[i] > 0 ? diff.data[i] : 0;
  }
  ref::Array diff_src, diff_w, diff_b, bound_src, bound_w, bound_b;
  ref::DenseBackward(src, weights, diff_pre, &diff_src, &diff_w, &diff_b);
  ref::DenseBackward(Abs(src), Abs(weights), Abs(diff_pre), &bound_src, &bound_w, &bound_b);
  ExpectWithinBound(ToFloat(h.Read(plan->diff_src())), diff_src, bound_src, p.units, "diff_src");
  ExpectWithinBound(ToFloat(h.Read(dense.parameters()[0]->grad)), diff_w, bound_w, p.src_shape[0],
                    "diff_weights");
  ExpectWithinBound(ToFloat(h.Read(dense.parameters()[1]->grad)), diff_b, bound_b, p.src_shape[0],
                    "diff_bias");
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16DenseTest,
                         ::testing::Values(DenseCase{{4, 3136}, 512, true, false},  // fc1
                                           DenseCase{{4, 512}, 10, false, false},   // fc2
                                           DenseCase{{3, 16, 5, 5}, 12, true, true},
                                           DenseCase{{2, 7}, 3, false, false}));

TEST(Bf16PrecisionTest, AutoFollowsTheDispatchedIsaAndSaysWhy) {
  const PrecisionChoice c = ResolvePrecision("auto", "--precision");
  EXPECT_EQ(c.precision, DispatchedIsaHasBf16() ? Precision::kBf16 : Precision::kF32);
  EXPECT_NE(c.reason.find(DispatchedIsaName()), std::string::npos) << c.reason;
  std::printf("%s\n", c.reason.c_str());
  EXPECT_EQ(ResolvePrecision("f32", "--precision").precision, Precision::kF32);
  EXPECT_THROW(ResolvePrecision("fp16", "--precision"), InputError);
}

// The decision alone, on every machine: a native ISA is necessary, a measured gain of at
// least kAutoBf16MinSpeedup is needed where one was measured.
TEST(Bf16PrecisionTest, AutoPicksBf16OnlyWhereItMeasuresFaster) {
  EXPECT_EQ(ChooseAutoPrecision("avx2", false, std::nullopt).precision, Precision::kF32);
  EXPECT_EQ(ChooseAutoPrecision("avx2", false, 3.0).precision, Precision::kF32);
  EXPECT_EQ(ChooseAutoPrecision("avx512_core_amx", true, std::nullopt).precision, Precision::kBf16);
  const PrecisionChoice fast = ChooseAutoPrecision("avx512_core_amx", true, 3.1);
  EXPECT_EQ(fast.precision, Precision::kBf16);
  EXPECT_NE(fast.reason.find("3.10x"), std::string::npos) << fast.reason;
  EXPECT_EQ(ChooseAutoPrecision("avx512_core_bf16", true, kAutoBf16MinSpeedup).precision,
            Precision::kBf16);
  // The Xeon whose AMX was hidden: native bf16, slower than f32.
  const PrecisionChoice slow = ChooseAutoPrecision("avx512_core_bf16", true, 0.77);
  EXPECT_EQ(slow.precision, Precision::kF32);
  EXPECT_NE(slow.reason.find("avx512_core_bf16"), std::string::npos) << slow.reason;
  EXPECT_NE(slow.reason.find("0.77x"), std::string::npos) << slow.reason;
  EXPECT_NE(slow.reason.find("1.20x"), std::string::npos) << slow.reason;
  EXPECT_EQ(ChooseAutoPrecision("avx512_core_bf16", true, 1.19).precision, Precision::kF32);
  EXPECT_EQ(ChooseAutoPrecision("avx512_core_bf16", true, std::nan("")).precision, Precision::kF32);
}

// ResolvePrecision asks the probe only where the ISA has native bf16, and follows it.
TEST(Bf16PrecisionTest, AutoCallsTheProbeOnlyWhereBf16IsNative) {
  int calls = 0;
  const PrecisionChoice fast = ResolvePrecision("auto", "--precision", [&] {
    ++calls;
    return 2.0;
  });
  const PrecisionChoice slow = ResolvePrecision("", "--precision", [&] {
    ++calls;
    return 0.5;
  });
  EXPECT_EQ(ResolvePrecision("f32", "--precision", [&] { return ++calls, 2.0; }).precision,
            Precision::kF32);
  EXPECT_EQ(slow.precision, Precision::kF32);
  if (!DispatchedIsaHasBf16()) {
    EXPECT_EQ(calls, 0);
    EXPECT_EQ(fast.precision, Precision::kF32);
    return;
  }
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(fast.precision, Precision::kBf16);
}

TEST(Bf16PrecisionTest, Bf16WithoutNativeSupportIsAClearError) {
  if (DispatchedIsaHasBf16()) {
    EXPECT_EQ(ResolvePrecision("bf16", "--precision").precision, Precision::kBf16);
    GTEST_SKIP() << "oneDNN dispatches " << DispatchedIsaName()
                 << ": bf16 is supported here, so the error cannot be shown (the "
                    "nn_bf16_without_native_bf16 CTest entry shows it)";
  }
  try {
    ResolvePrecision("bf16", "--precision");
    ADD_FAILURE() << "bf16 was accepted on " << DispatchedIsaName();
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--precision"), std::string::npos) << what;
    EXPECT_NE(what.find(DispatchedIsaName()), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace epochal::nn
