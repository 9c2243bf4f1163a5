#include "epochal/nn/max_pool.h"

#include "epochal/core/error.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

class MaxPoolPlan final : public LayerPlan {
 public:
  MaxPoolPlan(DnnlContext& ctx, const memory::desc& src_md, const memory::dims& dst_dims,
              int64_t pool, int64_t stride)
      : ctx_(ctx) {
    const memory::dims strides = {stride, stride}, kernel = {pool, pool}, pad = {0, 0};
    dnnl::pooling_forward::desc fwd_desc(
        dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max, src_md,
        AnyDesc(dst_dims, src_md.data_type()), strides, kernel, pad, pad);
    dnnl::pooling_forward::primitive_desc fwd_pd(fwd_desc, ctx.engine);
    fwd_ = dnnl::pooling_forward(fwd_pd);
    dnnl::pooling_backward::desc bwd_desc(dnnl::algorithm::pooling_max, src_md, fwd_pd.dst_desc(),
                                          strides, kernel, pad, pad);
    bwd_ = dnnl::pooling_backward(
        dnnl::pooling_backward::primitive_desc(bwd_desc, ctx.engine, fwd_pd));
    dst_ = ZeroedMemory(fwd_pd.dst_desc(), ctx.engine);
    workspace_ = ZeroedMemory(fwd_pd.workspace_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
  }
  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }
  void Forward(const StepContext&, const memory& src) override {
    if (fwd_args_.empty()) {
      fwd_args_ = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst_}, {DNNL_ARG_WORKSPACE, workspace_}};
    }
    fwd_args_[DNNL_ARG_SRC] = src;
    fwd_.execute(ctx_.stream, fwd_args_);
  }
  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    if (bwd_args_.empty()) {
      bwd_args_ = {{DNNL_ARG_DIFF_DST, diff_dst},
                   {DNNL_ARG_DIFF_SRC, diff_src_},
                   {DNNL_ARG_WORKSPACE, workspace_}};
    }
    bwd_args_[DNNL_ARG_DIFF_DST] = diff_dst;
    bwd_.execute(ctx_.stream, bwd_args_);
  }

 private:
  DnnlContext& ctx_;
  dnnl::pooling_forward fwd_;
  dnnl::pooling_backward bwd_;
  memory dst_, workspace_, diff_src_;
  std::unordered_map<int, memory> fwd_args_, bwd_args_;
};

}  // namespace

MaxPool2D::MaxPool2D(std::string name, int64_t pool, int64_t stride)
    : Layer(std::move(name)), pool_(pool), stride_(stride) {
  EPOCHAL_CHECK(pool_ > 0 && stride_ > 0);
}

memory::dims MaxPool2D::DstDims(const memory::dims& src_dims) const {
  EPOCHAL_CHECK(src_dims.size() == 4, name(), ": max pool needs N,C,H,W input");
  if (src_dims[2] < pool_ || src_dims[3] < pool_) {
    throw InputError(detail::StrCat(name(), ": pool ", pool_, " does not fit input ", src_dims[2],
                                    "x", src_dims[3]));
  }
  return {src_dims[0], src_dims[1], (src_dims[2] - pool_) / stride_ + 1,
          (src_dims[3] - pool_) / stride_ + 1};
}

std::unique_ptr<LayerPlan> MaxPool2D::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<MaxPoolPlan>(ctx, src_md, DstDims(src_md.dims()), pool_, stride_);
}

}  // namespace epochal::nn
