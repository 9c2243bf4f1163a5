// Flattens N,C,H,W into N,C*H*W in plain (C,H,W) order. When the input is already
// plain this costs nothing but a copy-free view; a blocked input is reordered once.
#pragma once

#include "epochal/nn/layer.h"

namespace epochal::nn {

class Flatten final : public Layer {
 public:
  explicit Flatten(std::string name) : Layer(std::move(name)) {}
  std::string kind() const override { return "flatten"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
};

}  // namespace epochal::nn
