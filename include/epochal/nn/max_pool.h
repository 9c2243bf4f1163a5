// 2-D max pooling on oneDNN ("valid": no padding). The forward keeps oneDNN's
// workspace (the arg-max) for the backward pass.
#pragma once

#include "epochal/nn/layer.h"

namespace epochal::nn {

class MaxPool2D final : public Layer {
 public:
  MaxPool2D(std::string name, int64_t pool, int64_t stride);
  std::string kind() const override { return "max_pool"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  dnnl::memory::dims DstDims(const dnnl::memory::dims& src_dims) const;
  int64_t pool() const { return pool_; }
  int64_t stride() const { return stride_; }

 private:
  int64_t pool_;
  int64_t stride_;
};

}  // namespace epochal::nn
