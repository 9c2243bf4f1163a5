// 2-D max pooling ("valid": no padding). The forward keeps the arg-max for the backward
// pass. 2 x 2 windows at stride 2 on a channel-blocked layout (nChw16c or nChw8c, as the
// convs before them write, f32 or bf16, even H and W) run on hand-written loops that
// write the backward's diff_src in one pass; everything else runs on oneDNN's pooling
// primitives. Ties go to the first maximum of the window, row by row, on both paths. On
// the hand-written path a NaN is picked as the reference kernel picks it: only from a
// window's first place (every comparison with NaN is false).
#pragma once

#include "epochal/nn/layer.h"

namespace epochal::nn {

class MaxPool2D final : public Layer {
 public:
  MaxPool2D(std::string name, int64_t pool, int64_t stride);
  std::string kind() const override { return "max_pool"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  dnnl::memory::dims DstDims(const dnnl::memory::dims& src_dims) const;
  // Whether a plan for `src_md` runs on the hand-written 2 x 2 kernels.
  bool UsesHandKernel(const dnnl::memory::desc& src_md) const;
  int64_t pool() const { return pool_; }
  int64_t stride() const { return stride_; }

 private:
  int64_t pool_;
  int64_t stride_;
};

}  // namespace epochal::nn
