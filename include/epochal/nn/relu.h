// Standalone ReLU on oneDNN (eltwise, backward from the saved dst). The model fuses a
// ReLU that directly follows a conv or dense layer into that layer instead.
#pragma once

#include "epochal/nn/layer.h"

namespace epochal::nn {

class ReLU final : public Layer {
 public:
  explicit ReLU(std::string name) : Layer(std::move(name)) {}
  std::string kind() const override { return "relu"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
};

}  // namespace epochal::nn
