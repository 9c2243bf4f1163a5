#include "epochal/nn/model.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "epochal/core/error.h"
#include "epochal/core/rng.h"
#include "epochal/nn/batch_norm.h"
#include "epochal/nn/conv2d.h"
#include "epochal/nn/dense.h"
#include "epochal/nn/dropout.h"
#include "epochal/nn/flatten.h"
#include "epochal/nn/max_pool.h"
#include "epochal/nn/reference.h"
#include "epochal/nn/relu.h"
#include "layer_test_util.h"

namespace epochal::nn {
namespace {

// MiniVGGNet's structure at a size where central differences stay cheap.
constexpr char kTinyMiniVgg[] = R"pb(
  input { channels: 1 height: 8 width: 8 }
  num_classes: 3
  layers { conv { filters: 4 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { conv { filters: 4 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { max_pool { pool: 2 } }
  layers { dropout { rate: 0.25 } }
  layers { conv { filters: 8 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { max_pool { pool: 2 } }
  layers { dropout { rate: 0.25 } }
  layers { flatten {} }
  layers { dense { units: 6 } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { dropout { rate: 0.5 } }
  layers { dense { units: 3 } }
  layers { softmax_cross_entropy {} }
)pb";

// MiniVGGNet as the reference config builds it.
constexpr char kMiniVgg[] = R"pb(
  input { channels: 1 height: 28 width: 28 }
  num_classes: 10
  layers { conv { filters: 32 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { conv { filters: 32 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { max_pool { pool: 2 } }
  layers { dropout { rate: 0.25 } }
  layers { conv { filters: 64 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { conv { filters: 64 kernel: 3 padding: "same" } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { max_pool { pool: 2 } }
  layers { dropout { rate: 0.25 } }
  layers { flatten {} }
  layers { dense { units: 512 } }
  layers { relu {} }
  layers { batch_norm {} }
  layers { dropout { rate: 0.5 } }
  layers { dense { units: 10 } }
  layers { softmax_cross_entropy {} }
)pb";

v1::ModelSpec Spec(const char* text) {
  v1::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec));
  return spec;
}

struct Batch {
  std::vector<float> images;
  std::vector<int32_t> labels;
  std::vector<int64_t> ids;
};

Batch RandomBatch(int64_t n, int64_t sample_size, int classes) {
  Batch b;
  CounterRng rng(5, 6);
  b.images.resize(static_cast<size_t>(n * sample_size));
  for (float& v : b.images) v = rng.NextUniform();
  for (int64_t i = 0; i < n; ++i) {
    b.labels.push_back(static_cast<int32_t>(i % classes));
    b.ids.push_back(100 + i);
  }
  return b;
}

// The mean loss as a double, with the running statistics frozen and dropout masks fixed
// by the step context, so repeated evaluations see the same function.
double Loss(Model& model, const Batch& b) {
  StepContext ctx{Mode::kTrainFrozen, 11, 2, b.ids};
  const BatchResult r = model.Forward(ctx, b.images.data(), b.labels);
  return r.loss_sum / static_cast<double>(r.count);
}

// Runs `model`'s layers with the double-precision reference kernels, on the model's own
// parameters and dropout masks, and returns d(mean loss)/d(parameter) in plain layout.
std::vector<ref::Array> ReferenceGradients(Model& model, const Batch& b, uint64_t seed,
                                           int64_t epoch) {
  const int64_t n = static_cast<int64_t>(b.labels.size());
  const auto& in = model.input_dims();
  ref::Array x({n, in[0], in[1], in[2]});
  std::copy(b.images.begin(), b.images.end(), x.data.begin());
  auto plain = [&](const dnnl::memory& m) {
    const auto v = ToPlain(model.dnnl(), m);
    ref::Array a(m.get_desc().dims());
    std::copy(v.begin(), v.end(), a.data.begin());
    return a;
  };
  // Forward, keeping every layer's input and what its backward needs.
  struct Saved {
    ref::Array src, pre_relu, mean, variance, mask;
  };
  std::vector<Saved> saved;
  for (const auto& layer : model.layers()) {
    Saved s;
    s.src = x;
    ref::Array y;
    if (auto* conv = dynamic_cast<Conv2D*>(layer.get())) {
      const Padding2D p = conv->PaddingFor({n, x.dim(1), x.dim(2), x.dim(3)});
      ref::ConvGeometry g{static_cast<int>(conv->options().stride), static_cast<int>(p.top),
                          static_cast<int>(p.left), static_cast<int>(p.bottom),
                          static_cast<int>(p.right)};
      const ref::Array bias = plain(conv->parameters()[1]->value);
      ref::Conv2DForward(x, plain(conv->parameters()[0]->value), &bias, g, &y);
      if (conv->options().fuse_relu) {
        s.pre_relu = y;
        ref::ReluForward(s.pre_relu, &y);
      }
    } else if (auto* dense = dynamic_cast<Dense*>(layer.get())) {
      ref::DenseForward(x, plain(dense->parameters()[0]->value),
                        plain(dense->parameters()[1]->value), &y);
      if (dense->options().fuse_relu) {
        s.pre_relu = y;
        ref::ReluForward(s.pre_relu, &y);
      }
    } else if (auto* bn = dynamic_cast<BatchNorm*>(layer.get())) {
      ref::BatchNormForwardTraining(x, plain(bn->parameters()[0]->value),
                                    plain(bn->parameters()[1]->value), bn->options().epsilon, &y,
                                    &s.mean, &s.variance);
    } else if (dynamic_cast<ReLU*>(layer.get())) {
      ref::ReluForward(x, &y);
    } else if (auto* pool = dynamic_cast<MaxPool2D*>(layer.get())) {
      ref::MaxPoolForward(x, static_cast<int>(pool->pool()), static_cast<int>(pool->stride()), &y);
    } else if (auto* drop = dynamic_cast<Dropout*>(layer.get())) {
      s.mask = ref::Array(x.shape);
      const int64_t per_sample = x.size() / n;
      std::vector<uint8_t> m(static_cast<size_t>(per_sample));
      for (int64_t i = 0; i < n; ++i) {
        drop->SampleMask(seed, epoch, b.ids[static_cast<size_t>(i)], m);
        for (int64_t j = 0; j < per_sample; ++j)
          s.mask[i * per_sample + j] = m[static_cast<size_t>(j)];
      }
      ref::DropoutForward(x, s.mask, drop->rate(), &y);
    } else if (dynamic_cast<Flatten*>(layer.get())) {
      y = x;
      y.shape = {n, x.size() / n};
    } else {
      ADD_FAILURE() << "no reference for " << layer->kind();
    }
    saved.push_back(std::move(s));
    x = std::move(y);
  }
  ref::Array diff;
  ref::SoftmaxCrossEntropy(x, std::vector<int>(b.labels.begin(), b.labels.end()), &diff, nullptr);
  // Backward, collecting parameter gradients in model.parameters() order (reversed).
  std::vector<ref::Array> grads;
  for (size_t li = model.layers().size(); li-- > 0;) {
    Layer* layer = model.layers()[li].get();
    Saved& s = saved[li];
    ref::Array dx;
    if (auto* conv = dynamic_cast<Conv2D*>(layer)) {
      if (conv->options().fuse_relu) ref::ReluBackward(s.pre_relu, ref::Array(diff), &diff);
      const Padding2D p = conv->PaddingFor({n, s.src.dim(1), s.src.dim(2), s.src.dim(3)});
      ref::ConvGeometry g{static_cast<int>(conv->options().stride), static_cast<int>(p.top),
                          static_cast<int>(p.left), static_cast<int>(p.bottom),
                          static_cast<int>(p.right)};
      ref::Array dw, db;
      ref::Conv2DBackward(s.src, plain(conv->parameters()[0]->value), diff, g, &dx, &dw, &db);
      grads.push_back(db);
      grads.push_back(dw);
    } else if (auto* dense = dynamic_cast<Dense*>(layer)) {
      if (dense->options().fuse_relu) ref::ReluBackward(s.pre_relu, ref::Array(diff), &diff);
      ref::Array dw, db;
      ref::DenseBackward(s.src, plain(dense->parameters()[0]->value), diff, &dx, &dw, &db);
      grads.push_back(db);
      grads.push_back(dw);
    } else if (auto* bn = dynamic_cast<BatchNorm*>(layer)) {
      ref::Array dg, dbeta;
      ref::BatchNormBackward(s.src, plain(bn->parameters()[0]->value), s.mean, s.variance, diff,
                             bn->options().epsilon, &dx, &dg, &dbeta);
      grads.push_back(dbeta);
      grads.push_back(dg);
    } else if (dynamic_cast<ReLU*>(layer)) {
      ref::ReluBackward(s.src, diff, &dx);
    } else if (auto* pool = dynamic_cast<MaxPool2D*>(layer)) {
      ref::MaxPoolBackward(s.src, static_cast<int>(pool->pool()), static_cast<int>(pool->stride()),
                           diff, &dx);
    } else if (auto* drop = dynamic_cast<Dropout*>(layer)) {
      ref::DropoutBackward(s.mask, drop->rate(), diff, &dx);
    } else if (dynamic_cast<Flatten*>(layer)) {
      dx = diff;
      dx.shape = s.src.shape;
    }
    diff = std::move(dx);
  }
  std::reverse(grads.begin(), grads.end());
  return grads;
}

// The whole network's gradient equals the reference kernels' gradient of the same
// function; the reference model itself is checked against central differences in
// reference_test.cc (RefModelTest), where double precision makes that check tight.
TEST(ModelTest, WholeMiniVggGradientsMatchTheReferenceModel) {
  Model model(Spec(kTinyMiniVgg), 4, 3);
  const Batch b = RandomBatch(4, 64, 3);
  StepContext ctx{Mode::kTrainFrozen, 11, 2, b.ids};
  model.Forward(ctx, b.images.data(), b.labels);
  model.Backward(ctx, 1.0f / 4);
  const std::vector<ref::Array> expected = ReferenceGradients(model, b, 11, 2);
  const auto params = model.parameters();
  ASSERT_EQ(params.size(), expected.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_LT(testing::RelativeError(ToPlain(model.dnnl(), params[i]->grad), expected[i]), 1e-4)
        << params[i]->name;
  }
}

// "auto" precision's probe times real steps of both models and returns a finite,
// positive ratio (measured on MiniVGGNet at batch 32: 0.7-0.8 on an AVX512-BF16 Xeon
// without AMX, 1.5-1.8 on a Zen 4). A step count below one is refused.
TEST(ModelTest, Bf16SpeedupProbeTimesBothPrecisions) {
  REQUIRE_NATIVE_BF16();
  const double speedup = MeasureBf16StepSpeedup(Spec(kMiniVgg), 8, 3, 2);
  RecordProperty("bf16_speedup", std::to_string(speedup));
  EXPECT_TRUE(std::isfinite(speedup)) << speedup;
  EXPECT_GT(speedup, 0.05);
  EXPECT_LT(speedup, 100.0);
  EXPECT_THROW(MeasureBf16StepSpeedup(Spec(kMiniVgg), 8, 3, 0), Error);
}

// The same network in bf16, with bf16 activations between layers, against the f32 model
// (which the test above pins to the reference) with the same weights, batch and masks.
// The layer tests bound each bf16 layer elementwise (bf16_test.cc,
// bf16_activations_test.cc). Through the whole network the gradient is not close
// elementwise: batch norm's backward subtracts from each channel's gradient its mean and
// its projection on the normalized input, and at initialization most of the gradient
// cancels that way, so the ~2^-7 relative error of every layer becomes 15-35% of what is
// left (measured here; bf16 operands with f32 activations give 12-25%). What training
// needs is the direction: every parameter's bf16 gradient must keep a cosine of at least
// 0.9 with the f32 one (so a step along it still descends by at least 90% of the f32
// step's first-order gain), and the loss must agree to 1%. Some parameter must differ
// from f32 by more than f32 rounding would (1e-4), or the model did not run in bf16.
TEST(ModelTest, WholeMiniVggGradientsInBf16KeepTheDirectionOfF32) {
  if (!DispatchedIsaHasBf16()) {
    GTEST_SKIP() << "oneDNN dispatches " << DispatchedIsaName()
                 << " here: no native bf16, so the bf16 path is not available";
  }
  const Batch b = RandomBatch(32, 28 * 28, 10);
  StepContext ctx{Mode::kTrainFrozen, 11, 2, b.ids};
  std::vector<std::vector<float>> grads[2];
  double loss[2] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    Model model(Spec(kMiniVgg), 32, 3, i == 0 ? Precision::kF32 : Precision::kBf16);
    loss[i] = model.Forward(ctx, b.images.data(), b.labels).loss_sum;
    model.Backward(ctx, 1.0f / 32);
    for (Parameter* p : model.parameters()) grads[i].push_back(ToPlain(model.dnnl(), p->grad));
  }
  EXPECT_NEAR(loss[1] / loss[0], 1.0, 0.01);
  double worst_cos = 1, worst_rel = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    double diff = 0, dot = 0, n0 = 0, n1 = 0;
    for (size_t k = 0; k < grads[0][i].size(); ++k) {
      const double g0 = grads[0][i][k], g1 = grads[1][i][k];
      diff += (g1 - g0) * (g1 - g0);
      dot += g0 * g1;
      n0 += g0 * g0;
      n1 += g1 * g1;
    }
    const double cos = dot / std::sqrt(std::max(n0 * n1, 1e-300));
    EXPECT_GT(cos, 0.9) << "parameter " << i;
    worst_cos = std::min(worst_cos, cos);
    worst_rel = std::max(worst_rel, std::sqrt(diff / std::max(n0, 1e-300)));
  }
  EXPECT_GT(worst_rel, 1e-4) << "every gradient matches f32: bf16 did not run";
  std::printf(
      "bf16 model against f32: loss ratio %.5f, lowest gradient cosine %.4f, largest "
      "norm-wise gradient error %.4f\n",
      loss[1] / loss[0], worst_cos, worst_rel);
}

// A direct central-difference check of the oneDNN model in float, on a network without
// kinks (no ReLU, no max pool), where float differences are accurate to about 1e-3.
TEST(ModelTest, SmoothNetworkMatchesCentralDifferences) {
  Model model(Spec(R"pb(
                input { channels: 1 height: 8 width: 8 }
                num_classes: 3
                layers { conv { filters: 8 kernel: 3 padding: "same" } }
                layers { batch_norm {} }
                layers { dropout { rate: 0.25 } }
                layers { conv { filters: 4 kernel: 3 stride: 2 padding: "same" } }
                layers { flatten {} }
                layers { dense { units: 6 } }
                layers { batch_norm {} }
                layers { dense { units: 3 } }
                layers { softmax_cross_entropy {} }
              )pb"),
              8, 3);
  const Batch b = RandomBatch(8, 64, 3);
  StepContext ctx{Mode::kTrainFrozen, 11, 2, b.ids};
  model.Forward(ctx, b.images.data(), b.labels);
  model.Backward(ctx, 1.0f / 8);
  int checked = 0;
  for (Parameter* p : model.parameters()) {
    const std::vector<float> grad = ToPlain(model.dnnl(), p->grad);
    std::vector<float> value = ToPlain(model.dnnl(), p->value);
    for (size_t i = 0; i < grad.size(); i += std::max<size_t>(1, grad.size() / 5)) {
      const float eps = 1e-3f;
      const float saved = value[i];
      value[i] = saved + eps;
      FromPlain(model.dnnl(), value, p->value);
      const double plus = Loss(model, b);
      value[i] = saved - eps;
      FromPlain(model.dnnl(), value, p->value);
      const double minus = Loss(model, b);
      value[i] = saved;
      FromPlain(model.dnnl(), value, p->value);
      const double numeric = (plus - minus) / (2.0 * eps);
      EXPECT_NEAR(grad[i], numeric, 1e-2 * std::abs(numeric) + 1e-3) << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

TEST(ModelTest, ReferenceMiniVggBuildsWithFusedReluAndKerasParameterCount) {
  v1::ModelSpec spec = Spec(kMiniVgg);
  Model model(spec, 32, 1);
  // Keras' model.summary() for MiniVGGNet: 1,679,082 parameters in total, of which the
  // batch-norm moving statistics (2 x (32+32+64+64+512) = 1,408) are non-trainable.
  EXPECT_EQ(model.NumParameters(), 1679082 - 1408);
  int64_t state = 0;
  for (StateBuffer* s : model.state()) state += static_cast<int64_t>(s->value.size());
  EXPECT_EQ(state, 1408);
  EXPECT_EQ(model.layers().size(), 17u);  // 4 ReLUs after conv and 1 after dense fused.
  // conv 2*(28*28*32*9 + 28*28*32*288 + 14*14*64*288 + 14*14*64*576) + dense 2*(3136*512 + 5120)
  EXPECT_DOUBLE_EQ(model.ForwardFlopsPerSample(),
                   2.0 * (28 * 28 * 32 * 9 + 28 * 28 * 32 * 288 + 14 * 14 * 64 * 288 +
                          14 * 14 * 64 * 576 + 3136 * 512 + 5120));
}

TEST(ModelTest, PartialBatchUsesItsOwnPlanAndAgreesWithTheFullOne) {
  Model model(Spec(kTinyMiniVgg), 4, 3);
  const Batch b = RandomBatch(4, 64, 3);
  StepContext infer;
  infer.mode = Mode::kInference;
  model.Forward(infer, b.images.data(), b.labels);
  const std::vector<float> full(model.sample_losses().begin(), model.sample_losses().end());
  // The first three samples alone, through a second plan: inference is per sample.
  model.Forward(infer, b.images.data(), std::span<const int32_t>(b.labels.data(), 3));
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(model.sample_losses()[i], full[i], 1e-5);
}

TEST(ModelTest, SameSeedSameWeightsOtherSeedOtherWeights) {
  Model a(Spec(kTinyMiniVgg), 4, 3), b(Spec(kTinyMiniVgg), 8, 3), c(Spec(kTinyMiniVgg), 4, 4);
  for (size_t i = 0; i < a.parameters().size(); ++i) {
    const auto wa = ToPlain(a.dnnl(), a.parameters()[i]->value);
    EXPECT_EQ(wa, ToPlain(b.dnnl(), b.parameters()[i]->value)) << a.parameters()[i]->name;
    if (a.parameters()[i]->apply_weight_decay) {
      EXPECT_NE(wa, ToPlain(c.dnnl(), c.parameters()[i]->value)) << a.parameters()[i]->name;
    }
  }
}

TEST(ModelTest, RejectsSpecsItCannotBuild) {
  EXPECT_THROW(Model(Spec(R"pb(
                       input { channels: 1 height: 8 width: 8 }
                       num_classes: 3
                       layers { flatten {} }
                       layers { dense { units: 4 } }
                       layers { softmax_cross_entropy {} }
                     )pb"),
                     2, 1),
               InputError);
  EXPECT_THROW(Model(Spec(R"pb(
                       input { channels: 1 height: 8 width: 8 }
                       num_classes: 3
                       layers { conv { filters: 2 kernel: 9 padding: "valid" } }
                       layers { flatten {} }
                       layers { dense { units: 3 } }
                       layers { softmax_cross_entropy {} }
                     )pb"),
                     2, 1),
               InputError);
}

}  // namespace
}  // namespace epochal::nn
