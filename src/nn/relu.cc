#include "epochal/nn/relu.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

class ReLUPlan final : public LayerPlan {
 public:
  ReLUPlan(DnnlContext& ctx, const memory::desc& src_md) : ctx_(ctx) {
    const auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    dnnl::eltwise_forward::desc fwd_desc(dnnl::prop_kind::forward_training, alg, src_md, 0.0f,
                                         0.0f);
    dnnl::eltwise_forward::primitive_desc fwd_pd(fwd_desc, ctx.engine);
    fwd_ = dnnl::eltwise_forward(fwd_pd);
    dnnl::eltwise_backward::desc bwd_desc(alg, src_md, fwd_pd.dst_desc(), 0.0f, 0.0f);
    bwd_ = dnnl::eltwise_backward(
        dnnl::eltwise_backward::primitive_desc(bwd_desc, ctx.engine, fwd_pd));
    dst_ = ZeroedMemory(fwd_pd.dst_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
  }
  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }
  void Forward(const StepContext&, const memory& src) override {
    if (fwd_args_.empty()) fwd_args_ = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst_}};
    fwd_args_[DNNL_ARG_SRC] = src;
    fwd_.execute(ctx_.stream, fwd_args_);
  }
  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    if (bwd_args_.empty()) {
      bwd_args_ = {
          {DNNL_ARG_DST, dst_}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src_}};
    }
    bwd_args_[DNNL_ARG_DIFF_DST] = diff_dst;
    bwd_.execute(ctx_.stream, bwd_args_);
  }

 private:
  DnnlContext& ctx_;
  dnnl::eltwise_forward fwd_;
  dnnl::eltwise_backward bwd_;
  memory dst_, diff_src_;
  std::unordered_map<int, memory> fwd_args_, bwd_args_;
};

}  // namespace

std::unique_ptr<LayerPlan> ReLU::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<ReLUPlan>(ctx, src_md);
}

}  // namespace epochal::nn
