#include "epochal/nn/batch_norm.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <type_traits>

#include "epochal/core/bf16.h"
#include "epochal/core/error.h"

namespace epochal::nn {

using dnnl::memory;
using dnnl::normalization_flags;

namespace {

// The global mean and biased variance from the summed [sum x | sum x^2 | count] of every
// process (SynchronizedStatistics and BatchNorm::ForwardWithoutSamples alike, so every
// replica computes the same bits). Returns the global count.
int64_t GlobalStatistics(std::span<const double> sums, int64_t channels, float* mean, float* var) {
  const double count = sums[static_cast<size_t>(2 * channels)];
  for (int64_t c = 0; c < channels; ++c) {
    const double m = sums[static_cast<size_t>(c)] / count;
    mean[c] = static_cast<float>(m);
    var[c] =
        static_cast<float>(std::max(0.0, sums[static_cast<size_t>(channels + c)] / count - m * m));
  }
  return static_cast<int64_t>(count);
}

// running = momentum * running + (1 - momentum) * batch, over `count` elements per channel.
// kTrain: running = momentum * running + (1 - momentum) * batch. kRecomputeStatistics adds
// the batch's statistics to a sum instead (running = running + batch), which the caller
// zeroed and later divides by the batch count (Model::RecomputeBatchNormStatistics).
void UpdateRunningStatistics(const BatchNormOptions& options, Mode mode, bool is_4d, int64_t count,
                             int64_t channels, const float* mean, const float* var,
                             float* running_mean, float* running_var) {
  // Keras' fused kernel takes the Bessel-corrected variance for 4-D inputs.
  const float correction =
      is_4d && count > 1 ? static_cast<float>(count) / static_cast<float>(count - 1) : 1.0f;
  const bool sum = mode == Mode::kRecomputeStatistics;
  const float m = sum ? 1.0f : options.momentum;
  const float w = sum ? 1.0f : 1.0f - options.momentum;
  for (int64_t c = 0; c < channels; ++c) {
    running_mean[c] = m * running_mean[c] + w * mean[c];
    running_var[c] = m * running_var[c] + w * var[c] * correction;
  }
}

// Element access for the synchronized statistics' hand loops, on f32 or bf16 activations.
inline float AsFloat(float v) { return v; }
inline float AsFloat(Bf16Bits v) { return Bf16ToFloat(v); }
inline void StoreFloat(float* p, float v) { *p = v; }
inline void StoreFloat(Bf16Bits* p, float v) { *p = FloatToBf16(v); }

}  // namespace

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
    is_4d_ = dims.size() == 4;
    layer.input_is_4d_ = is_4d_;
    layer.idle_sums_.resize(static_cast<size_t>(2 * channels + 1));
    layer.idle_mean_.resize(static_cast<size_t>(channels));
    layer.idle_variance_.resize(static_cast<size_t>(channels));

    // oneDNN 2.6 runs a bf16 batch norm over plain N x C data in a slow reference kernel.
    // N x C with C a multiple of 16 is, element for element, the blocked N x C x 1 x 1
    // layout (aBcd16b) its JIT kernel takes, so the primitives run on that view of the
    // same buffers.
    const bool view = src_md.data_type() == dt::bf16 && dims.size() == 2 && channels % 16 == 0 &&
                      src_md == PlainDesc(dims, dt::bf16);
    const memory::desc md =
        view ? memory::desc({dims[0], channels, 1, 1}, dt::bf16, tag::aBcd16b) : src_md;
    const float eps = layer.options_.epsilon;
    const auto scale_shift = normalization_flags::use_scale | normalization_flags::use_shift;
    dnnl::batch_normalization_forward::desc train_desc(dnnl::prop_kind::forward_training, md, eps,
                                                       scale_shift);
    train_pd_ = dnnl::batch_normalization_forward::primitive_desc(train_desc, ctx.engine);
    train_ = dnnl::batch_normalization_forward(train_pd_);
    dnnl::batch_normalization_forward::desc infer_desc(
        dnnl::prop_kind::forward_inference, md, eps,
        scale_shift | normalization_flags::use_global_stats);
    infer_ = dnnl::batch_normalization_forward(
        dnnl::batch_normalization_forward::primitive_desc(infer_desc, ctx.engine));
    dnnl::batch_normalization_backward::desc bwd_desc(dnnl::prop_kind::backward, md, md, eps,
                                                      scale_shift);
    bwd_ = dnnl::batch_normalization_backward(
        dnnl::batch_normalization_backward::primitive_desc(bwd_desc, ctx.engine, train_pd_));

    // Synchronized statistics: normalize with given (all-reduced) statistics, and a
    // backward that treats them as constants; the statistics' own gradient terms are
    // added by hand with globally summed reductions.
    const auto global = scale_shift | normalization_flags::use_global_stats;
    dnnl::batch_normalization_forward::desc sync_desc(dnnl::prop_kind::forward_training, md, eps,
                                                      global);
    dnnl::batch_normalization_forward::primitive_desc sync_pd(sync_desc, ctx.engine);
    sync_fwd_ = dnnl::batch_normalization_forward(sync_pd);
    dnnl::batch_normalization_backward::desc sync_bwd_desc(dnnl::prop_kind::backward, md, md, eps,
                                                           global);
    sync_bwd_ = dnnl::batch_normalization_backward(
        dnnl::batch_normalization_backward::primitive_desc(sync_bwd_desc, ctx.engine, sync_pd));
    batch_ = dims[0];
    channel_of_physical_ = SampleLogicalIndex(src_md);
    const int64_t spatial = reduced / dims[0];
    for (int32_t& c : channel_of_physical_) {
      if (c >= 0) c = static_cast<int32_t>(c / spatial);
    }
    elements_per_channel_ = reduced;
    bf16_ = src_md.data_type() == dt::bf16;
    EPOCHAL_CHECK(bf16_ || src_md.data_type() == dt::f32, layer.name(),
                  ": batch norm takes f32 or bf16 activations");
    sums_.resize(static_cast<size_t>(2 * channels + 1));

    dst_ = ZeroedMemory(view ? src_md : train_pd_.dst_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    view_ = view;
    if (view) {
      src_view_ = memory(md, ctx.engine, DNNL_MEMORY_NONE);
      diff_dst_view_ = memory(md, ctx.engine, DNNL_MEMORY_NONE);
    }
    // What the primitives write: dst_ and diff_src_ themselves, or their views.
    dst_arg_ = view ? memory(md, ctx.engine, dst_.get_data_handle()) : dst_;
    diff_src_arg_ = view ? memory(md, ctx.engine, diff_src_.get_data_handle()) : diff_src_;
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
                     {DNNL_ARG_DST, dst_arg_}};
      infer_args_ = train_args_;
      infer_args_[DNNL_ARG_MEAN] = running_mean_;
      infer_args_[DNNL_ARG_VARIANCE] = running_variance_;
    }
    const memory& src_arg = Viewed(src_view_, src);
    train_args_[DNNL_ARG_SRC] = src_arg;
    infer_args_[DNNL_ARG_SRC] = src_arg;
    synced_ = false;
    if (!UsesBatchStatistics(ctx.mode)) {
      infer_.execute(ctx_.stream, infer_args_);
      return;
    }
    int64_t count = elements_per_channel_;
    if (layer_.reducer_ != nullptr) {
      count = SynchronizedStatistics(src);
      sync_fwd_.execute(ctx_.stream, train_args_);
      synced_ = true;
    } else {
      train_.execute(ctx_.stream, train_args_);
    }
    if (ctx.mode == Mode::kTrain || ctx.mode == Mode::kRecomputeStatistics) {
      ctx_.stream.wait();
      UpdateRunningStatistics(layer_.options_, ctx.mode, is_4d_, count, layer_.channels_,
                              Data(mean_), Data(variance_), layer_.running_mean_.value.data(),
                              layer_.running_variance_.value.data());
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
                   {DNNL_ARG_DIFF_SRC, diff_src_arg_},
                   {DNNL_ARG_DIFF_SCALE, layer_.gamma_.grad},
                   {DNNL_ARG_DIFF_SHIFT, layer_.beta_.grad}};
    }
    bwd_args_[DNNL_ARG_SRC] = Viewed(src_view_, src);
    bwd_args_[DNNL_ARG_DIFF_DST] = Viewed(diff_dst_view_, diff_dst);
    if (!synced_) {
      bwd_.execute(ctx_.stream, bwd_args_);
      return;
    }
    sync_bwd_.execute(ctx_.stream, bwd_args_);
    ctx_.stream.wait();
    SynchronizedBackwardCorrection(src, diff_dst);
  }

 private:
  // `m` itself, or (on the N x C x 1 x 1 view) `view` pointed at m's buffer.
  const memory& Viewed(memory& view, const memory& m) {
    if (!view_) return m;
    view.set_data_handle(m.get_data_handle());
    return view;
  }

  // Sums per-channel sum and sum of squares over all processes, writes the global mean
  // and biased variance into mean_/variance_, and returns the global element count.
  int64_t SynchronizedStatistics(const memory& src) {
    ctx_.stream.wait();
    const int64_t channels = layer_.channels_;
    std::fill(sums_.begin(), sums_.end(), 0.0);
    if (bf16_) {
      AccumulateLocalSums(static_cast<const Bf16Bits*>(src.get_data_handle()));
    } else {
      AccumulateLocalSums(Data(src));
    }
    sums_[static_cast<size_t>(2 * channels)] = static_cast<double>(elements_per_channel_);
    layer_.reducer_->AllreduceSum(sums_);
    return GlobalStatistics(sums_, channels, Data(mean_), Data(variance_));
  }

  // oneDNN's backward with given statistics wrote diff_src = gamma * rstd * dy and the
  // local sums diff_beta = sum dy, diff_gamma = sum dy * x_hat. The full gradient also
  // flows through the batch statistics:
  //   dx = gamma * rstd * (dy - (sum dy + x_hat * sum dy x_hat) / M)
  // with sums and M over all processes.
  void SynchronizedBackwardCorrection(const memory& src, const memory& diff_dst) {
    const int64_t channels = layer_.channels_;
    const float* dgamma = Data(layer_.gamma_.grad);
    const float* dbeta = Data(layer_.beta_.grad);
    for (int64_t c = 0; c < channels; ++c) {
      sums_[static_cast<size_t>(c)] = dbeta[c];
      sums_[static_cast<size_t>(channels + c)] = dgamma[c];
    }
    sums_[static_cast<size_t>(2 * channels)] = static_cast<double>(elements_per_channel_);
    layer_.reducer_->AllreduceSum(sums_);
    if (bf16_) {
      ApplyCorrection(static_cast<const Bf16Bits*>(src.get_data_handle()),
                      static_cast<const Bf16Bits*>(diff_dst.get_data_handle()),
                      static_cast<Bf16Bits*>(diff_src_.get_data_handle()));
    } else {
      ApplyCorrection(Data(src), Data(diff_dst), Data(diff_src_));
    }
  }

  // This process's per-channel sum and sum of squares into sums_ (zeroed by the caller).
  template <typename T>
  void AccumulateLocalSums(const T* x) {
    const int64_t channels = layer_.channels_;
    const auto per_sample = static_cast<int64_t>(channel_of_physical_.size());
    for (int64_t n = 0; n < batch_; ++n) {
      const T* xs = x + n * per_sample;
      for (int64_t p = 0; p < per_sample; ++p) {
        const int32_t c = channel_of_physical_[static_cast<size_t>(p)];
        if (c < 0) continue;
        const double v = AsFloat(xs[p]);
        sums_[static_cast<size_t>(c)] += v;
        sums_[static_cast<size_t>(channels + c)] += v * v;
      }
    }
  }

  // dx -= gamma * rstd * (sum dy + x_hat * sum dy x_hat) / M, with the global sums in sums_.
  // In bf16, dx is recomputed from dy (exact in f32) instead: subtracting from oneDNN's
  // rounded gamma * rstd * dy would round twice, and the subtraction cancels most of it,
  // so the first rounding's error would be large against what remains.
  template <typename T>
  void ApplyCorrection(const T* x, const T* dy, T* dx) {
    const int64_t channels = layer_.channels_;
    const double count = sums_[static_cast<size_t>(2 * channels)];
    const float eps = layer_.options_.epsilon;
    const float* gamma = Data(layer_.gamma_.value);
    const float* mean = Data(mean_);
    const float* var = Data(variance_);
    const auto per_sample = static_cast<int64_t>(channel_of_physical_.size());
    for (int64_t n = 0; n < batch_; ++n) {
      for (int64_t p = 0; p < per_sample; ++p) {
        const int32_t c = channel_of_physical_[static_cast<size_t>(p)];
        if (c < 0) continue;
        const auto i = static_cast<size_t>(c);
        const int64_t at = n * per_sample + p;
        const double rstd = 1.0 / std::sqrt(static_cast<double>(var[c]) + eps);
        const double x_hat = (AsFloat(x[at]) - mean[c]) * rstd;
        const double correction =
            gamma[c] * rstd * (sums_[i] + x_hat * sums_[static_cast<size_t>(channels) + i]) / count;
        if constexpr (std::is_same_v<T, float>) {
          dx[at] -= static_cast<float>(correction);
        } else {
          StoreFloat(dx + at, static_cast<float>(gamma[c] * rstd * AsFloat(dy[at]) - correction));
        }
      }
    }
  }

  BatchNorm& layer_;
  DnnlContext& ctx_;
  dnnl::batch_normalization_forward::primitive_desc train_pd_;
  dnnl::batch_normalization_forward train_, infer_;
  dnnl::batch_normalization_backward bwd_;
  dnnl::batch_normalization_forward sync_fwd_;
  dnnl::batch_normalization_backward sync_bwd_;
  int64_t batch_ = 0;
  int64_t elements_per_channel_ = 0;  // Per process: N * H * W.
  bool is_4d_ = false;
  bool bf16_ = false;    // bf16 activations (src, dst and their diffs); statistics stay f32.
  bool synced_ = false;  // The last forward used synchronized statistics.
  std::vector<int32_t> channel_of_physical_;  // Per physical element of a sample; -1: padding.
  std::vector<double> sums_;                  // [2 * channels + 1] reduction buffer.
  memory dst_, diff_src_, mean_, variance_, running_mean_, running_variance_;
  bool view_ = false;  // The primitives run on an N x C x 1 x 1 view (see the constructor).
  memory src_view_, diff_dst_view_, dst_arg_, diff_src_arg_;
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

void BatchNorm::ForwardWithoutSamples(const StepContext& ctx) {
  idle_synced_ = false;
  if (reducer_ == nullptr || !UsesBatchStatistics(ctx.mode)) return;
  EPOCHAL_CHECK(channels_ > 0, name(), ": ForwardWithoutSamples before the first plan");
  std::fill(idle_sums_.begin(), idle_sums_.end(), 0.0);
  reducer_->AllreduceSum(idle_sums_);
  const int64_t count =
      GlobalStatistics(idle_sums_, channels_, idle_mean_.data(), idle_variance_.data());
  idle_synced_ = true;
  if (ctx.mode == Mode::kTrain) {
    UpdateRunningStatistics(options_, ctx.mode, input_is_4d_, count, channels_, idle_mean_.data(),
                            idle_variance_.data(), running_mean_.value.data(),
                            running_variance_.value.data());
  }
}

void BatchNorm::BackwardWithoutSamples(const StepContext&) {
  if (!idle_synced_) return;
  // No local gradient sums and no samples whose gradient the global sums would correct.
  std::fill(idle_sums_.begin(), idle_sums_.end(), 0.0);
  reducer_->AllreduceSum(idle_sums_);
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
