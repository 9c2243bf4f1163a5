#include "epochal/nn/batch_norm.h"

#include "epochal/core/error.h"

namespace epochal::nn {

using dnnl::memory;
using dnnl::normalization_flags;

class BatchNormPlan final : public LayerPlan {
 public:
  BatchNormPlan(BatchNorm& layer, DnnlContext& ctx, const memory::desc& src_md)
      : layer_(layer), ctx_(ctx) {
    const memory::dims dims = src_md.dims();
    const int64_t channels = dims[1];
    if (layer.channels_ == 0) {
      layer.channels_ = channels;
      const memory::desc c_md = PlainDesc({channels});
      layer.gamma_.value = ZeroedMemory(c_md, ctx.engine);
      layer.gamma_.grad = ZeroedMemory(c_md, ctx.engine);
      layer.beta_.value = ZeroedMemory(c_md, ctx.engine);
      layer.beta_.grad = ZeroedMemory(c_md, ctx.engine);
      layer.running_mean_.value.assign(static_cast<size_t>(channels), 0.0f);
      layer.running_variance_.value.assign(static_cast<size_t>(channels), 1.0f);
    }
    EPOCHAL_CHECK(layer.channels_ == channels, layer.name(), ": channel count changed");
    int64_t reduced = 1;  // Elements per channel in one batch.
    for (size_t i = 0; i < dims.size(); ++i) reduced *= i == 1 ? 1 : dims[i];
    variance_correction_ = dims.size() == 4 && reduced > 1
                               ? static_cast<float>(reduced) / static_cast<float>(reduced - 1)
                               : 1.0f;

    const float eps = layer.options_.epsilon;
    const auto scale_shift = normalization_flags::use_scale | normalization_flags::use_shift;
    dnnl::batch_normalization_forward::desc train_desc(dnnl::prop_kind::forward_training, src_md,
                                                       eps, scale_shift);
    train_pd_ = dnnl::batch_normalization_forward::primitive_desc(train_desc, ctx.engine);
    train_ = dnnl::batch_normalization_forward(train_pd_);
    dnnl::batch_normalization_forward::desc infer_desc(
        dnnl::prop_kind::forward_inference, src_md, eps,
        scale_shift | normalization_flags::use_global_stats);
    infer_ = dnnl::batch_normalization_forward(
        dnnl::batch_normalization_forward::primitive_desc(infer_desc, ctx.engine));
    dnnl::batch_normalization_backward::desc bwd_desc(dnnl::prop_kind::backward, src_md, src_md,
                                                      eps, scale_shift);
    bwd_ = dnnl::batch_normalization_backward(
        dnnl::batch_normalization_backward::primitive_desc(bwd_desc, ctx.engine, train_pd_));

    dst_ = ZeroedMemory(train_pd_.dst_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    mean_ = ZeroedMemory(train_pd_.mean_desc(), ctx.engine);
    variance_ = ZeroedMemory(train_pd_.variance_desc(), ctx.engine);
    running_mean_ = memory(train_pd_.mean_desc(), ctx.engine, layer.running_mean_.value.data());
    running_variance_ =
        memory(train_pd_.variance_desc(), ctx.engine, layer.running_variance_.value.data());
  }

  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }

  void Forward(const StepContext& ctx, const memory& src) override {
    if (train_args_.empty()) {
      train_args_ = {{DNNL_ARG_SRC, src},
                     {DNNL_ARG_SCALE, layer_.gamma_.value},
                     {DNNL_ARG_SHIFT, layer_.beta_.value},
                     {DNNL_ARG_MEAN, mean_},
                     {DNNL_ARG_VARIANCE, variance_},
                     {DNNL_ARG_DST, dst_}};
      infer_args_ = train_args_;
      infer_args_[DNNL_ARG_MEAN] = running_mean_;
      infer_args_[DNNL_ARG_VARIANCE] = running_variance_;
    }
    train_args_[DNNL_ARG_SRC] = src;
    infer_args_[DNNL_ARG_SRC] = src;
    if (!UsesBatchStatistics(ctx.mode)) {
      infer_.execute(ctx_.stream, infer_args_);
      return;
    }
    train_.execute(ctx_.stream, train_args_);
    if (ctx.mode == Mode::kTrain) {
      ctx_.stream.wait();
      const float m = layer_.options_.momentum;
      const float* mean = Data(mean_);
      const float* var = Data(variance_);
      float* running_mean = layer_.running_mean_.value.data();
      float* running_var = layer_.running_variance_.value.data();
      for (int64_t c = 0; c < layer_.channels_; ++c) {
        running_mean[c] = m * running_mean[c] + (1.0f - m) * mean[c];
        running_var[c] = m * running_var[c] + (1.0f - m) * var[c] * variance_correction_;
      }
    }
  }

  void Backward(const StepContext&, const memory& src, const memory& diff_dst, bool) override {
    // The scale and shift gradients are always needed, so diff_src is always computed.
    if (bwd_args_.empty()) {
      bwd_args_ = {{DNNL_ARG_SRC, src},
                   {DNNL_ARG_MEAN, mean_},
                   {DNNL_ARG_VARIANCE, variance_},
                   {DNNL_ARG_DIFF_DST, diff_dst},
                   {DNNL_ARG_SCALE, layer_.gamma_.value},
                   {DNNL_ARG_SHIFT, layer_.beta_.value},
                   {DNNL_ARG_DIFF_SRC, diff_src_},
                   {DNNL_ARG_DIFF_SCALE, layer_.gamma_.grad},
                   {DNNL_ARG_DIFF_SHIFT, layer_.beta_.grad}};
    }
    bwd_args_[DNNL_ARG_SRC] = src;
    bwd_args_[DNNL_ARG_DIFF_DST] = diff_dst;
    bwd_.execute(ctx_.stream, bwd_args_);
  }

 private:
  BatchNorm& layer_;
  DnnlContext& ctx_;
  float variance_correction_ = 1.0f;
  dnnl::batch_normalization_forward::primitive_desc train_pd_;
  dnnl::batch_normalization_forward train_, infer_;
  dnnl::batch_normalization_backward bwd_;
  memory dst_, diff_src_, mean_, variance_, running_mean_, running_variance_;
  std::unordered_map<int, memory> train_args_, infer_args_, bwd_args_;
};

BatchNorm::BatchNorm(std::string name, BatchNormOptions options)
    : Layer(std::move(name)), options_(options) {
  EPOCHAL_CHECK(options_.epsilon > 0 && options_.momentum >= 0 && options_.momentum < 1);
  gamma_.name = this->name() + "/gamma";
  beta_.name = this->name() + "/beta";
  running_mean_.name = this->name() + "/moving_mean";
  running_variance_.name = this->name() + "/moving_variance";
}

std::unique_ptr<LayerPlan> BatchNorm::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<BatchNormPlan>(*this, ctx, src_md);
}

void BatchNorm::InitializeParameters(DnnlContext&, uint64_t) {
  std::fill_n(Data(gamma_.value), channels_, 1.0f);
  std::fill_n(Data(beta_.value), channels_, 0.0f);
  std::fill(running_mean_.value.begin(), running_mean_.value.end(), 0.0f);
  std::fill(running_variance_.value.begin(), running_variance_.value.end(), 1.0f);
}

}  // namespace epochal::nn
