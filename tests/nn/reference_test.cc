// Tests of the reference kernels: small cases checked by hand, and every backward pass
// checked against central differences of its forward pass. The whole-model test
// chains the kernels in MiniVGG order, so the oracle for the oneDNN model is checked
// end to end too.
#include "epochal/nn/reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "epochal/core/rng.h"

namespace epochal::nn::ref {
namespace {

// h of the central difference (f(x+h) - f(x-h)) / 2h. In double precision the
// truncation error (~h^2) and the rounding error (~1e-16 |f| / h) are both far below
// the tolerance.
constexpr double kStep = 1e-6;
// Bound on max|analytic - numeric| / max(1, max|numeric|).
constexpr double kTolerance = 1e-7;
constexpr uint64_t kSeed = 0x5EEDu;
// Keras' default batch norm epsilon.
constexpr double kEpsilon = 1e-3;

CounterRng TestRng(uint64_t case_id) {
  return CounterRng(kSeed, StreamId({static_cast<uint64_t>(RngTag::kTest), case_id}));
}

// Uniform in [lo, hi).
Array RandomArray(std::vector<int64_t> shape, CounterRng* rng, double lo = -1, double hi = 1) {
  Array a(std::move(shape));
  for (double& x : a.data) x = lo + (hi - lo) * static_cast<double>(rng->NextUniform());
  return a;
}

// Uniform in (-1, -margin] U [margin, 1): keeps ReLU inputs away from the kink.
Array AwayFromZero(std::vector<int64_t> shape, CounterRng* rng, double margin) {
  Array a = RandomArray(std::move(shape), rng);
  for (double& x : a.data) x = x < 0 ? x * (1 - margin) - margin : x * (1 - margin) + margin;
  return a;
}

// The values 0, spacing, 2 * spacing, ... shuffled: no two elements within `spacing`.
Array DistinctShuffled(std::vector<int64_t> shape, CounterRng* rng, double spacing) {
  Array a(std::move(shape));
  for (int64_t i = 0; i < a.size(); ++i) a[i] = static_cast<double>(i) * spacing - 1;
  for (int64_t i = a.size() - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(rng->NextBelow(static_cast<uint64_t>(i + 1)));
    std::swap(a[i], a[j]);
  }
  return a;
}

// A 0/1 keep mask: each element kept with probability 1 - rate.
Array KeepMask(std::vector<int64_t> shape, CounterRng* rng, double rate) {
  Array a(std::move(shape));
  for (double& x : a.data) x = static_cast<double>(rng->NextUniform()) >= rate ? 1.0 : 0.0;
  return a;
}

double Dot(const Array& a, const Array& b) {
  EXPECT_EQ(a.shape, b.shape);
  double sum = 0;
  for (int64_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

double MinAbs(const Array& a) {
  double m = std::numeric_limits<double>::infinity();
  for (double x : a.data) m = std::min(m, std::abs(x));
  return m;
}

// Smallest gap, over all pooling windows, between the window maximum and the largest
// value strictly below it. Exactly equal values (ReLU zeros after batch norm) move
// together under any perturbation, so only distinct values can swap order.
double MaxPoolMargin(const Array& src, int kernel, int stride) {
  double margin = std::numeric_limits<double>::infinity();
  const int64_t oh_size = OutputSize(src.dim(2), kernel, stride, 0, 0);
  const int64_t ow_size = OutputSize(src.dim(3), kernel, stride, 0, 0);
  for (int64_t n = 0; n < src.dim(0); ++n) {
    for (int64_t c = 0; c < src.dim(1); ++c) {
      for (int64_t oh = 0; oh < oh_size; ++oh) {
        for (int64_t ow = 0; ow < ow_size; ++ow) {
          std::vector<double> window;
          for (int64_t kh = 0; kh < kernel; ++kh) {
            for (int64_t kw = 0; kw < kernel; ++kw) {
              window.push_back(src.at(n, c, oh * stride + kh, ow * stride + kw));
            }
          }
          const double top = *std::max_element(window.begin(), window.end());
          for (double x : window) {
            if (x < top) margin = std::min(margin, top - x);
          }
        }
      }
    }
  }
  return margin;
}

// Compares `analytic` (d objective / d x) with central differences of `objective`,
// perturbing *x in place one element at a time (and restoring it).
void ExpectMatchesNumericGradient(const std::function<double()>& objective, Array* x,
                                  const Array& analytic, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(analytic.shape, x->shape);
  double max_diff = 0, max_numeric = 0;
  int64_t worst = -1;
  for (int64_t i = 0; i < x->size(); ++i) {
    const double saved = (*x)[i];
    (*x)[i] = saved + kStep;
    const double f_plus = objective();
    (*x)[i] = saved - kStep;
    const double f_minus = objective();
    (*x)[i] = saved;
    const double numeric = (f_plus - f_minus) / (2 * kStep);
    max_numeric = std::max(max_numeric, std::abs(numeric));
    if (std::abs(analytic[i] - numeric) > max_diff) {
      max_diff = std::abs(analytic[i] - numeric);
      worst = i;
    }
  }
  const double error = max_diff / std::max(1.0, max_numeric);
  EXPECT_LT(error, kTolerance) << "worst element " << worst << " analytic "
                               << (worst >= 0 ? analytic[worst] : 0.0);
  // A gradient that is zero everywhere would pass trivially; every check here has some
  // non-zero gradient.
  EXPECT_GT(max_numeric, 0.0);
}

void ExpectArrayNear(const Array& actual, const std::vector<int64_t>& shape,
                     const std::vector<double>& expected, double tolerance = 1e-12) {
  ASSERT_EQ(actual.shape, shape);
  ASSERT_EQ(actual.data.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual.data[i], expected[i], tolerance) << "element " << i;
  }
}

// ---------------------------------------------------------------------------------------
// Geometry

TEST(RefGeometryTest, SamePaddingMatchesKeras) {
  EXPECT_EQ(SamePadding(28, 3, 1), std::make_pair(1, 1));
  EXPECT_EQ(SamePadding(28, 3, 2), std::make_pair(0, 1));
  EXPECT_EQ(SamePadding(7, 2, 2), std::make_pair(0, 1));
  EXPECT_EQ(SamePadding(8, 5, 2), std::make_pair(1, 2));
  EXPECT_EQ(SamePadding(7, 5, 2), std::make_pair(2, 2));
  EXPECT_EQ(SamePadding(14, 2, 2), std::make_pair(0, 0));
  EXPECT_EQ(SamePadding(5, 1, 1), std::make_pair(0, 0));
  EXPECT_EQ(SamePadding(4, 5, 1), std::make_pair(2, 2));
  EXPECT_EQ(SamePadding(2, 3, 3), std::make_pair(0, 1));
  EXPECT_EQ(SamePadding(9, 2, 3), std::make_pair(0, 0));  // total would be -1
}

TEST(RefGeometryTest, SamePaddingGivesCeilOutputSize) {
  for (int64_t in = 1; in <= 12; ++in) {
    for (int kernel = 1; kernel <= 5; ++kernel) {
      for (int stride = 1; stride <= 3; ++stride) {
        const auto [lo, hi] = SamePadding(in, kernel, stride);
        if (in + lo + hi < kernel) continue;
        EXPECT_EQ(OutputSize(in, kernel, stride, lo, hi), (in + stride - 1) / stride)
            << "in " << in << " kernel " << kernel << " stride " << stride;
      }
    }
  }
}

TEST(RefGeometryTest, OutputSizeAndSameGeometry) {
  EXPECT_EQ(OutputSize(28, 3, 1, 0, 0), 26);
  EXPECT_EQ(OutputSize(28, 2, 2, 0, 0), 14);
  EXPECT_EQ(OutputSize(7, 3, 2, 0, 0), 3);
  const ConvGeometry g = SameGeometry(8, 7, 5, 5, 2);
  EXPECT_EQ(g.stride, 2);
  EXPECT_EQ(g.pad_top, 1);
  EXPECT_EQ(g.pad_bottom, 2);
  EXPECT_EQ(g.pad_left, 2);
  EXPECT_EQ(g.pad_right, 2);
}

TEST(RefArrayTest, TensorRoundTrip) {
  Array a({2, 3});
  for (int64_t i = 0; i < a.size(); ++i) a[i] = 0.5 * static_cast<double>(i) - 1;
  const Tensor t = TensorFromArray(a);
  EXPECT_EQ(t.shape(), Shape({2, 3}));
  EXPECT_EQ(t[5], 1.5f);
  const Array b = ArrayFromTensor(t);
  EXPECT_EQ(b.shape, a.shape);
  EXPECT_EQ(b.data, a.data);
  EXPECT_EQ(a.at(1, 2), a[5]);
}

// ---------------------------------------------------------------------------------------
// Convolution

TEST(RefConvTest, ForwardMatchesHandComputed) {
  // 1..9 in a 3x3 image, a 3x3 kernel of ones, "same" padding: each output is the sum of
  // the pixel's in-image neighbourhood, plus the bias.
  Array src({1, 1, 3, 3});
  for (int64_t i = 0; i < 9; ++i) src[i] = static_cast<double>(i + 1);
  const Array weights({1, 1, 3, 3}, 1.0);
  const Array bias({1}, 0.5);
  Array dst;
  Conv2DForward(src, weights, &bias, SameGeometry(3, 3, 3, 3, 1), &dst);
  ExpectArrayNear(dst, {1, 1, 3, 3}, {12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5});
  Conv2DForward(src, weights, nullptr, ConvGeometry{}, &dst);
  ExpectArrayNear(dst, {1, 1, 1, 1}, {45});
}

TEST(RefConvTest, ForwardStride2AsymmetricPadding) {
  // A 5x5 image of ones, a 2x2 kernel of ones, stride 2, "same" padding (0 top/left,
  // 1 bottom/right): the last row and column of windows hang over the zero padding.
  const Array src({1, 1, 5, 5}, 1.0);
  const Array weights({1, 1, 2, 2}, 1.0);
  const ConvGeometry g = SameGeometry(5, 5, 2, 2, 2);
  ASSERT_EQ(g.pad_top, 0);
  ASSERT_EQ(g.pad_bottom, 1);
  Array dst;
  Conv2DForward(src, weights, nullptr, g, &dst);
  ExpectArrayNear(dst, {1, 1, 3, 3}, {4, 4, 2, 4, 4, 2, 2, 2, 1});
}

struct ConvCase {
  int64_t n, c, h, w, o, kernel;
  ConvGeometry geometry;
  bool with_bias;
};

void CheckConvGradients(const ConvCase& k, uint64_t case_id) {
  CounterRng rng = TestRng(case_id);
  Array src = RandomArray({k.n, k.c, k.h, k.w}, &rng);
  Array weights = RandomArray({k.o, k.c, k.kernel, k.kernel}, &rng);
  Array bias = RandomArray({k.o}, &rng);
  Array dst;
  Conv2DForward(src, weights, k.with_bias ? &bias : nullptr, k.geometry, &dst);
  const Array r = RandomArray(dst.shape, &rng);
  auto objective = [&] {
    Array out;
    Conv2DForward(src, weights, k.with_bias ? &bias : nullptr, k.geometry, &out);
    return Dot(out, r);
  };
  Array diff_src, diff_weights, diff_bias;
  Conv2DBackward(src, weights, r, k.geometry, &diff_src, &diff_weights,
                 k.with_bias ? &diff_bias : nullptr);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
  ExpectMatchesNumericGradient(objective, &weights, diff_weights, "diff_weights");
  if (k.with_bias) ExpectMatchesNumericGradient(objective, &bias, diff_bias, "diff_bias");
}

TEST(RefConvTest, BackwardMatchesNumericGradientSame3x3) {
  CheckConvGradients({2, 3, 6, 5, 4, 3, SameGeometry(6, 5, 3, 3, 1), true}, 1);
}

TEST(RefConvTest, BackwardMatchesNumericGradientValid3x3) {
  CheckConvGradients({2, 1, 7, 6, 2, 3, ConvGeometry{}, true}, 2);
}

TEST(RefConvTest, BackwardMatchesNumericGradientStride2Same5x5) {
  // 8 rows: padding (1, 2), asymmetric; 7 columns: padding (2, 2).
  const ConvGeometry g = SameGeometry(8, 7, 5, 5, 2);
  ASSERT_NE(g.pad_top, g.pad_bottom);
  CheckConvGradients({2, 3, 8, 7, 2, 5, g, true}, 3);
}

TEST(RefConvTest, BackwardMatchesNumericGradientPointwise1x1) {
  CheckConvGradients({2, 3, 4, 4, 2, 1, ConvGeometry{}, true}, 4);
}

TEST(RefConvTest, BackwardMatchesNumericGradientSingleChannelNoBias) {
  CheckConvGradients({2, 1, 5, 5, 3, 3, SameGeometry(5, 5, 3, 3, 1), false}, 5);
}

// ---------------------------------------------------------------------------------------
// Dense

TEST(RefDenseTest, ForwardMatchesHandComputed) {
  Array src({1, 2});
  src.data = {1, 2};
  Array weights({2, 2});
  weights.data = {1, 0, 0.5, -1};
  Array bias({2});
  bias.data = {0.1, 0.2};
  Array dst;
  DenseForward(src, weights, bias, &dst);
  ExpectArrayNear(dst, {1, 2}, {1.1, -1.3});
}

void CheckDenseGradients(std::vector<int64_t> src_shape, int64_t o, uint64_t case_id) {
  CounterRng rng = TestRng(case_id);
  Array src = RandomArray(src_shape, &rng);
  Array weights = RandomArray({o, src.size() / src.dim(0)}, &rng);
  Array bias = RandomArray({o}, &rng);
  const Array r = RandomArray({src.dim(0), o}, &rng);
  auto objective = [&] {
    Array out;
    DenseForward(src, weights, bias, &out);
    return Dot(out, r);
  };
  Array diff_src, diff_weights, diff_bias;
  DenseBackward(src, weights, r, &diff_src, &diff_weights, &diff_bias);
  EXPECT_EQ(diff_src.shape, src_shape);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
  ExpectMatchesNumericGradient(objective, &weights, diff_weights, "diff_weights");
  ExpectMatchesNumericGradient(objective, &bias, diff_bias, "diff_bias");
}

TEST(RefDenseTest, BackwardMatchesNumericGradient2D) { CheckDenseGradients({3, 7}, 4, 10); }

TEST(RefDenseTest, BackwardMatchesNumericGradient4D) { CheckDenseGradients({2, 2, 3, 2}, 3, 11); }

// ---------------------------------------------------------------------------------------
// ReLU

TEST(RefReluTest, ForwardClampsNegatives) {
  Array src({4});
  src.data = {-2, -0.5, 0.5, 3};
  Array dst;
  ReluForward(src, &dst);
  ExpectArrayNear(dst, {4}, {0, 0, 0.5, 3});
}

TEST(RefReluTest, BackwardMatchesNumericGradient) {
  CounterRng rng = TestRng(20);
  Array src = AwayFromZero({2, 3, 4, 4}, &rng, 0.05);
  const Array r = RandomArray(src.shape, &rng);
  auto objective = [&] {
    Array out;
    ReluForward(src, &out);
    return Dot(out, r);
  };
  Array diff_src;
  ReluBackward(src, r, &diff_src);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
}

// ---------------------------------------------------------------------------------------
// Max pool

TEST(RefMaxPoolTest, ForwardAndTiesGoToFirstMaximum) {
  Array src({1, 1, 2, 4});
  src.data = {1, 5, 7, 7,  //
              3, 2, 7, 7};
  Array dst;
  MaxPoolForward(src, 2, 2, &dst);
  ExpectArrayNear(dst, {1, 1, 1, 2}, {5, 7});
  Array diff_dst({1, 1, 1, 2});
  diff_dst.data = {10, 20};
  Array diff_src;
  MaxPoolBackward(src, 2, 2, diff_dst, &diff_src);
  ExpectArrayNear(diff_src, {1, 1, 2, 4}, {0, 10, 20, 0, 0, 0, 0, 0});
}

TEST(RefMaxPoolTest, OddSizeDropsTheLastRowAndColumn) {
  Array src({1, 1, 3, 3});
  src.data = {1, 2, 0, 3, 4, 0, 0, 0, 99};
  Array dst;
  MaxPoolForward(src, 2, 2, &dst);
  ExpectArrayNear(dst, {1, 1, 1, 1}, {4});
}

void CheckMaxPoolGradients(std::vector<int64_t> shape, int kernel, int stride, uint64_t case_id) {
  CounterRng rng = TestRng(case_id);
  Array src = DistinctShuffled(std::move(shape), &rng, 0.01);
  Array dst;
  MaxPoolForward(src, kernel, stride, &dst);
  const Array r = RandomArray(dst.shape, &rng);
  auto objective = [&] {
    Array out;
    MaxPoolForward(src, kernel, stride, &out);
    return Dot(out, r);
  };
  Array diff_src;
  MaxPoolBackward(src, kernel, stride, r, &diff_src);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
}

TEST(RefMaxPoolTest, BackwardMatchesNumericGradient2x2Stride2) {
  CheckMaxPoolGradients({2, 3, 6, 6}, 2, 2, 30);
}

TEST(RefMaxPoolTest, BackwardMatchesNumericGradient3x3Stride2) {
  // Overlapping windows: one element can be the maximum of several.
  CheckMaxPoolGradients({2, 2, 7, 7}, 3, 2, 31);
}

// ---------------------------------------------------------------------------------------
// Batch norm

TEST(RefBatchNormTest, InferenceForwardMatchesHandComputed) {
  // Channel 0: (x - 1) / sqrt(3 + 1) * 2 + 0.5; channel 1: (x + 2) / sqrt(8 + 1) * -3 + 1.
  Array src({2, 2, 1, 1});
  src.data = {5, 1, -3, -5};
  Array gamma({2}), beta({2}), mean({2}), variance({2});
  gamma.data = {2, -3};
  beta.data = {0.5, 1};
  mean.data = {1, -2};
  variance.data = {3, 8};
  Array dst;
  BatchNormForwardInference(src, gamma, beta, mean, variance, 1.0, &dst);
  ExpectArrayNear(dst, {2, 2, 1, 1}, {4.5, -2, -3.5, 4});
}

TEST(RefBatchNormTest, TrainingForwardUsesBiasedBatchStatistics) {
  // One channel, values 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5.
  Array src({2, 1, 1, 2});
  src.data = {1, 2, 3, 6};
  const Array gamma({1}, 2.0), beta({1}, 1.0);
  Array dst, mean, variance;
  BatchNormForwardTraining(src, gamma, beta, 0.5, &dst, &mean, &variance);
  ExpectArrayNear(mean, {1}, {3});
  ExpectArrayNear(variance, {1}, {3.5});
  // sqrt(3.5 + 0.5) = 2, so dst = (x - 3) * 2 / 2 + 1 = x - 2.
  ExpectArrayNear(dst, {2, 1, 1, 2}, {-1, 0, 1, 4});
}

void CheckBatchNormGradients(std::vector<int64_t> shape, uint64_t case_id) {
  CounterRng rng = TestRng(case_id);
  Array src = RandomArray(std::move(shape), &rng, -2, 3);
  Array gamma = RandomArray({src.dim(1)}, &rng, 0.5, 1.5);
  Array beta = RandomArray({src.dim(1)}, &rng);
  const Array r = RandomArray(src.shape, &rng);
  auto objective = [&] {
    Array out, m, v;
    BatchNormForwardTraining(src, gamma, beta, kEpsilon, &out, &m, &v);
    return Dot(out, r);
  };
  Array dst, mean, variance;
  BatchNormForwardTraining(src, gamma, beta, kEpsilon, &dst, &mean, &variance);
  Array diff_src, diff_gamma, diff_beta;
  BatchNormBackward(src, gamma, mean, variance, r, kEpsilon, &diff_src, &diff_gamma, &diff_beta);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
  ExpectMatchesNumericGradient(objective, &gamma, diff_gamma, "diff_gamma");
  ExpectMatchesNumericGradient(objective, &beta, diff_beta, "diff_beta");
}

TEST(RefBatchNormTest, TrainingBackwardMatchesNumericGradient4D) {
  CheckBatchNormGradients({3, 2, 3, 4}, 40);
}

TEST(RefBatchNormTest, TrainingBackwardMatchesNumericGradient2D) {
  CheckBatchNormGradients({5, 3}, 41);
}

// ---------------------------------------------------------------------------------------
// Dropout

TEST(RefDropoutTest, ScalesKeptUnitsAndZerosDropped) {
  Array src({1, 4});
  src.data = {1, -2, 3, 4};
  Array mask({1, 4});
  mask.data = {1, 0, 1, 0};
  Array dst;
  DropoutForward(src, mask, 0.75, &dst);
  ExpectArrayNear(dst, {1, 4}, {4, 0, 12, 0});
  Array diff_src;
  DropoutBackward(mask, 0.75, src, &diff_src);
  ExpectArrayNear(diff_src, {1, 4}, {4, 0, 12, 0});
  DropoutForward(src, Array({1, 4}, 1.0), 0.0, &dst);
  EXPECT_EQ(dst.data, src.data);
}

TEST(RefDropoutTest, BackwardMatchesNumericGradient) {
  constexpr double kRate = 0.3;
  CounterRng rng = TestRng(50);
  Array src = RandomArray({3, 2, 3, 3}, &rng);
  const Array mask = KeepMask(src.shape, &rng, kRate);
  const Array r = RandomArray(src.shape, &rng);
  auto objective = [&] {
    Array out;
    DropoutForward(src, mask, kRate, &out);
    return Dot(out, r);
  };
  Array diff_src;
  DropoutBackward(mask, kRate, r, &diff_src);
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
  for (int64_t i = 0; i < mask.size(); ++i) {
    EXPECT_DOUBLE_EQ(diff_src[i], mask[i] * r[i] / (1 - kRate));
  }
}

// ---------------------------------------------------------------------------------------
// Softmax cross-entropy

TEST(RefSoftmaxCrossEntropyTest, LossMatchesHandComputed) {
  Array logits({2, 3});
  logits.data = {1, 2, 3, 1, 1, 1};
  Array diff_logits, probabilities;
  const double loss = SoftmaxCrossEntropy(logits, {2, 0}, &diff_logits, &probabilities);
  // Row 0: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2); row 1: log 3.
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0);
  const double expected = (std::log(1 + e1 + e2) + std::log(3.0)) / 2;
  EXPECT_NEAR(loss, expected, 1e-14);
  const double z = 1 + e1 + e2;
  ExpectArrayNear(probabilities, {2, 3}, {e2 / z, e1 / z, 1 / z, 1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-15);
  ExpectArrayNear(diff_logits, {2, 3},
                  {e2 / z / 2, e1 / z / 2, (1 / z - 1) / 2, (1.0 / 3 - 1) / 2, 1.0 / 6, 1.0 / 6},
                  1e-15);
}

TEST(RefSoftmaxCrossEntropyTest, StableForLargeLogits) {
  Array logits({3, 3});
  logits.data = {1000, 1000, 0, 1000, 0, -1000, 1000, 0, -1000};
  Array diff_logits, probabilities;
  const double loss = SoftmaxCrossEntropy(logits, {0, 0, 1}, &diff_logits, &probabilities);
  // Row losses: log 2 (+ e^-1000), ~e^-1000, 1000 (+ log(1 + e^-1000 ...)).
  EXPECT_NEAR(loss, (std::log(2.0) + 0 + 1000) / 3, 1e-10);
  for (double x : probabilities.data) EXPECT_TRUE(std::isfinite(x));
  for (double x : diff_logits.data) EXPECT_TRUE(std::isfinite(x));
  EXPECT_NEAR(probabilities.at(0, 0), 0.5, 1e-15);
  EXPECT_NEAR(probabilities.at(1, 0), 1.0, 1e-15);
  EXPECT_NEAR(diff_logits.at(2, 1), -1.0 / 3, 1e-15);
  EXPECT_NEAR(diff_logits.at(2, 0), 1.0 / 3, 1e-15);
}

TEST(RefSoftmaxCrossEntropyTest, BackwardMatchesNumericGradient) {
  CounterRng rng = TestRng(60);
  Array logits = RandomArray({4, 5}, &rng, -3, 3);
  const std::vector<int> labels = {0, 4, 2, 2};
  auto objective = [&] { return SoftmaxCrossEntropy(logits, labels, nullptr, nullptr); };
  Array diff_logits;
  SoftmaxCrossEntropy(logits, labels, &diff_logits, nullptr);
  ExpectMatchesNumericGradient(objective, &logits, diff_logits, "diff_logits");
}

// ---------------------------------------------------------------------------------------
// A tiny MiniVGG, built from the kernels in the order the real model uses:
// conv3x3 same -> ReLU -> BN -> conv3x3 same -> ReLU -> BN -> maxpool 2 -> dropout ->
// dense -> ReLU -> BN -> dropout -> dense -> softmax cross-entropy.

constexpr int64_t kBatch = 3, kImage = 8, kFilters1 = 3, kFilters2 = 4, kHidden = 5, kClasses = 3;
constexpr double kDropRate = 0.25;

struct MiniVgg {
  Array conv1_weights, conv1_bias, bn1_gamma, bn1_beta;
  Array conv2_weights, conv2_bias, bn2_gamma, bn2_beta;
  Array dense1_weights, dense1_bias, bn3_gamma, bn3_beta;
  Array dense2_weights, dense2_bias;
  Array mask1, mask2;  // fixed dropout keep masks

  // The parameters in a fixed order; gradients come back in the same order.
  std::vector<std::pair<std::string, Array*>> Parameters() {
    return {{"conv1_weights", &conv1_weights},   {"conv1_bias", &conv1_bias},
            {"bn1_gamma", &bn1_gamma},           {"bn1_beta", &bn1_beta},
            {"conv2_weights", &conv2_weights},   {"conv2_bias", &conv2_bias},
            {"bn2_gamma", &bn2_gamma},           {"bn2_beta", &bn2_beta},
            {"dense1_weights", &dense1_weights}, {"dense1_bias", &dense1_bias},
            {"bn3_gamma", &bn3_gamma},           {"bn3_beta", &bn3_beta},
            {"dense2_weights", &dense2_weights}, {"dense2_bias", &dense2_bias}};
  }
};

MiniVgg MakeMiniVgg(CounterRng* rng) {
  MiniVgg m;
  m.conv1_weights = RandomArray({kFilters1, 1, 3, 3}, rng);
  m.conv1_bias = RandomArray({kFilters1}, rng, -0.2, 0.2);
  m.bn1_gamma = RandomArray({kFilters1}, rng, 0.5, 1.5);
  m.bn1_beta = RandomArray({kFilters1}, rng, -0.2, 0.2);
  m.conv2_weights = RandomArray({kFilters2, kFilters1, 3, 3}, rng, -0.5, 0.5);
  m.conv2_bias = RandomArray({kFilters2}, rng, -0.2, 0.2);
  m.bn2_gamma = RandomArray({kFilters2}, rng, 0.5, 1.5);
  m.bn2_beta = RandomArray({kFilters2}, rng, -0.2, 0.2);
  const int64_t flat = kFilters2 * (kImage / 2) * (kImage / 2);
  m.dense1_weights = RandomArray({kHidden, flat}, rng, -0.3, 0.3);
  m.dense1_bias = RandomArray({kHidden}, rng, -0.2, 0.2);
  m.bn3_gamma = RandomArray({kHidden}, rng, 0.5, 1.5);
  m.bn3_beta = RandomArray({kHidden}, rng, -0.2, 0.2);
  m.dense2_weights = RandomArray({kClasses, kHidden}, rng);
  m.dense2_bias = RandomArray({kClasses}, rng, -0.2, 0.2);
  m.mask1 = KeepMask({kBatch, kFilters2, kImage / 2, kImage / 2}, rng, kDropRate);
  m.mask2 = KeepMask({kBatch, kHidden}, rng, kDropRate);
  return m;
}

// What the forward pass keeps for backward, and for the kink checks.
struct MiniVggCache {
  Array conv1, relu1, bn1, mean1, var1;
  Array conv2, relu2, bn2, mean2, var2;
  Array pool, drop1, dense1, relu3, bn3, mean3, var3, drop2, logits;
};

// Forward, and backward when `parameter_grads` is not null (diff_src may be null).
double MiniVggLoss(const MiniVgg& m, const Array& src, const std::vector<int>& labels,
                   MiniVggCache* cache, std::vector<Array>* parameter_grads, Array* diff_src) {
  MiniVggCache& c = *cache;
  const ConvGeometry same = SameGeometry(kImage, kImage, 3, 3, 1);
  Conv2DForward(src, m.conv1_weights, &m.conv1_bias, same, &c.conv1);  // N,3,8,8
  ReluForward(c.conv1, &c.relu1);
  BatchNormForwardTraining(c.relu1, m.bn1_gamma, m.bn1_beta, kEpsilon, &c.bn1, &c.mean1, &c.var1);
  Conv2DForward(c.bn1, m.conv2_weights, &m.conv2_bias, same, &c.conv2);  // N,4,8,8
  ReluForward(c.conv2, &c.relu2);
  BatchNormForwardTraining(c.relu2, m.bn2_gamma, m.bn2_beta, kEpsilon, &c.bn2, &c.mean2, &c.var2);
  MaxPoolForward(c.bn2, 2, 2, &c.pool);                               // N,4,4,4
  DropoutForward(c.pool, m.mask1, kDropRate, &c.drop1);               // N,4,4,4
  DenseForward(c.drop1, m.dense1_weights, m.dense1_bias, &c.dense1);  // N,5
  ReluForward(c.dense1, &c.relu3);
  BatchNormForwardTraining(c.relu3, m.bn3_gamma, m.bn3_beta, kEpsilon, &c.bn3, &c.mean3, &c.var3);
  DropoutForward(c.bn3, m.mask2, kDropRate, &c.drop2);                // N,5
  DenseForward(c.drop2, m.dense2_weights, m.dense2_bias, &c.logits);  // N,3
  Array diff_logits;
  const double loss = SoftmaxCrossEntropy(c.logits, labels, &diff_logits, nullptr);
  if (parameter_grads == nullptr) return loss;

  std::vector<Array>& g = *parameter_grads;
  g.assign(14, Array());
  Array d_drop2, d_bn3, d_relu3, d_dense1, d_drop1, d_pool, d_bn2, d_relu2, d_conv2, d_bn1, d_relu1,
      d_conv1;
  DenseBackward(c.drop2, m.dense2_weights, diff_logits, &d_drop2, &g[12], &g[13]);
  DropoutBackward(m.mask2, kDropRate, d_drop2, &d_bn3);
  BatchNormBackward(c.relu3, m.bn3_gamma, c.mean3, c.var3, d_bn3, kEpsilon, &d_relu3, &g[10],
                    &g[11]);
  ReluBackward(c.dense1, d_relu3, &d_dense1);
  DenseBackward(c.drop1, m.dense1_weights, d_dense1, &d_drop1, &g[8], &g[9]);
  DropoutBackward(m.mask1, kDropRate, d_drop1, &d_pool);
  MaxPoolBackward(c.bn2, 2, 2, d_pool, &d_bn2);
  BatchNormBackward(c.relu2, m.bn2_gamma, c.mean2, c.var2, d_bn2, kEpsilon, &d_relu2, &g[6], &g[7]);
  ReluBackward(c.conv2, d_relu2, &d_conv2);
  Conv2DBackward(c.bn1, m.conv2_weights, d_conv2, same, &d_bn1, &g[4], &g[5]);
  BatchNormBackward(c.relu1, m.bn1_gamma, c.mean1, c.var1, d_bn1, kEpsilon, &d_relu1, &g[2], &g[3]);
  ReluBackward(c.conv1, d_relu1, &d_conv1);
  Conv2DBackward(src, m.conv1_weights, d_conv1, same, diff_src, &g[0], &g[1]);
  return loss;
}

TEST(RefModelTest, MiniVggGradientsMatchNumericGradient) {
  CounterRng rng = TestRng(70);
  MiniVgg model = MakeMiniVgg(&rng);
  Array src = RandomArray({kBatch, 1, kImage, kImage}, &rng, 0, 1);
  const std::vector<int> labels = {0, 2, 1};

  MiniVggCache cache;
  std::vector<Array> grads;
  Array diff_src;
  const double loss = MiniVggLoss(model, src, labels, &cache, &grads, &diff_src);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_GT(loss, 0.0);

  // Central differences are only valid away from the ReLU kinks and from max-pool order
  // changes; step effects are ~1e-6, so a margin of 1e-5 keeps every one smooth.
  EXPECT_GT(MinAbs(cache.conv1), 1e-5);
  EXPECT_GT(MinAbs(cache.conv2), 1e-5);
  EXPECT_GT(MinAbs(cache.dense1), 1e-5);
  EXPECT_GT(MaxPoolMargin(cache.bn2, 2, 2), 1e-5);

  auto objective = [&] {
    MiniVggCache scratch;
    return MiniVggLoss(model, src, labels, &scratch, nullptr, nullptr);
  };
  const auto parameters = model.Parameters();
  ASSERT_EQ(parameters.size(), grads.size());
  for (size_t i = 0; i < parameters.size(); ++i) {
    ExpectMatchesNumericGradient(objective, parameters[i].second, grads[i], parameters[i].first);
  }
  ExpectMatchesNumericGradient(objective, &src, diff_src, "diff_src");
}

}  // namespace
}  // namespace epochal::nn::ref
