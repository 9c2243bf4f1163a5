// 2-D convolution on oneDNN, optionally with a fused ReLU (an eltwise post-op; its
// backward runs eltwise_relu_use_dst_for_bwd on the saved dst). Weights live in the
// layout the forward primitive prefers (blocked on AVX2/AVX-512), so no reorder runs
// on the hot path for the training batch size. In bf16 the f32 master weights use the
// layout backward-weights writes its f32 gradient in; the forward converts them to bf16
// once a step.
#pragma once

#include <optional>

#include "epochal/nn/layer.h"
#include "epochal/nn/precision.h"

namespace epochal::nn {

// Padding per spatial dim: {top, bottom} for height, {left, right} for width.
struct Padding2D {
  int64_t top = 0, bottom = 0, left = 0, right = 0;
};

// Keras/TensorFlow "same" padding: output = ceil(input / stride), the extra row or
// column going to the bottom/right.
void SamePadding1D(int64_t input, int64_t kernel, int64_t stride, int64_t* lo, int64_t* hi);

struct Conv2DOptions {
  int64_t filters = 0;
  int64_t kernel = 3;
  int64_t stride = 1;
  // When set, symmetric explicit padding; otherwise "same" if `same` else "valid".
  std::optional<int64_t> pad;
  bool same = true;
  bool bias = true;
  bool fuse_relu = false;
  // kBf16: bf16 src, weights and diff_dst, f32 accumulation and gradients; the weights
  // are kept in f32 (layer.h's Parameter) and converted on use. diff_src has src's
  // data type (bf16 after a bf16 layer, f32 after the f32 input).
  Precision precision = Precision::kF32;
  // With kBf16: dst (and so the diff_dst that comes back) is bf16, and the layers after
  // it run on bf16 activations; false keeps dst f32 (Model does so for the last conv or
  // dense layer, whose output feeds the f32 loss). Ignored in f32.
  bool bf16_dst = false;
};

class Conv2D final : public Layer {
 public:
  Conv2D(std::string name, Conv2DOptions options);
  std::string kind() const override { return "conv"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  void InitializeParameters(DnnlContext& ctx, uint64_t seed) override;
  std::vector<Parameter*> parameters() override;
  double ForwardFlopsPerSample(const dnnl::memory::dims& src_dims) const override;

  const Conv2DOptions& options() const { return options_; }
  Padding2D PaddingFor(const dnnl::memory::dims& src_dims) const;
  // dst dims {N, filters, OH, OW} for src dims {N, C, H, W}.
  dnnl::memory::dims DstDims(const dnnl::memory::dims& src_dims) const;

 private:
  friend class Conv2DPlan;
  Conv2DOptions options_;
  int64_t in_channels_ = 0;
  Parameter weights_;
  Parameter bias_;
};

}  // namespace epochal::nn
