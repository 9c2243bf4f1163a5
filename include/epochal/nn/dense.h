// Fully connected layer (oneDNN inner product) with bias and an optional fused ReLU.
// Accepts N,K or N,C,H,W input (weights O,K or O,C,H,W: the same values in plain
// order). Weights live in the layout the forward primitive prefers.
#pragma once

#include "epochal/nn/layer.h"
#include "epochal/nn/precision.h"

namespace epochal::nn {

struct DenseOptions {
  int64_t units = 0;
  bool fuse_relu = false;
  // As Conv2DOptions::precision and bf16_dst.
  Precision precision = Precision::kF32;
  bool bf16_dst = false;
};

class Dense final : public Layer {
 public:
  Dense(std::string name, DenseOptions options);
  std::string kind() const override { return "dense"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  void InitializeParameters(DnnlContext& ctx, uint64_t seed) override;
  std::vector<Parameter*> parameters() override { return {&weights_, &bias_}; }
  double ForwardFlopsPerSample(const dnnl::memory::dims& src_dims) const override;
  const DenseOptions& options() const { return options_; }

 private:
  friend class DensePlan;
  DenseOptions options_;
  int64_t in_features_ = 0;
  Parameter weights_;
  Parameter bias_;
};

}  // namespace epochal::nn
