#include "epochal/nn/conv2d.h"

#include "epochal/core/error.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

memory::desc BiasDesc(int64_t filters) { return PlainDesc({filters}); }

}  // namespace

void SamePadding1D(int64_t input, int64_t kernel, int64_t stride, int64_t* lo, int64_t* hi) {
  const int64_t out = (input + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((out - 1) * stride + kernel - input, 0);
  *lo = total / 2;
  *hi = total - *lo;
}

class Conv2DPlan final : public LayerPlan {
 public:
  Conv2DPlan(Conv2D& layer, DnnlContext& ctx, const memory::desc& src_md)
      : layer_(layer), ctx_(ctx), src_md_(src_md) {
    const auto& o = layer.options_;
    const memory::dims src_dims = src_md.dims();
    const memory::dims dst_dims = layer.DstDims(src_dims);
    const Padding2D p = layer.PaddingFor(src_dims);
    const memory::dims strides = {o.stride, o.stride};
    const memory::dims pad_l = {p.top, p.left};
    const memory::dims pad_r = {p.bottom, p.right};
    const memory::dims w_dims = {o.filters, src_dims[1], o.kernel, o.kernel};
    const memory::desc bias_md = o.bias ? BiasDesc(o.filters) : memory::desc();

    dnnl::primitive_attr attr;
    if (o.fuse_relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      attr.set_post_ops(ops);
    }
    // Mixed precision: bf16 operands, f32 accumulation; dst in bf16 when the next layers
    // run on bf16 activations (bf16_dst), diff_src in src's type.
    const bool bf16 = o.precision == Precision::kBf16;
    const dt op_dt = bf16 ? dt::bf16 : dt::f32;
    const dt dst_dt = bf16 && o.bf16_dst ? dt::bf16 : dt::f32;
    const dt src_dt = src_md.data_type();
    dnnl::convolution_forward::desc fwd_desc(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
        AnyDesc(src_dims, op_dt), AnyDesc(w_dims, op_dt), bias_md, AnyDesc(dst_dims, dst_dt),
        strides, pad_l, pad_r);
    fwd_pd_ = dnnl::convolution_forward::primitive_desc(fwd_desc, attr, ctx.engine);
    fwd_ = dnnl::convolution_forward(fwd_pd_);

    auto make_parameters = [&](const memory::desc& master_md) {
      layer.in_channels_ = src_dims[1];
      layer.weights_.value = ZeroedMemory(master_md, ctx.engine);
      layer.weights_.grad = ZeroedMemory(master_md, ctx.engine);
      if (o.bias) {
        layer.bias_.value = ZeroedMemory(bias_md, ctx.engine);
        layer.bias_.grad = ZeroedMemory(bias_md, ctx.engine);
      }
    };
    // f32 keeps the weights in the forward's layout; bf16 in the f32 layout that
    // backward-weights writes (below), so no step reorders the f32 gradient.
    if (!layer.weights_.value && !bf16) make_parameters(fwd_pd_.weights_desc());
    src_fwd_ = ReorderIfNeeded(src_md, fwd_pd_.src_desc(), ctx.engine);
    dst_ = ZeroedMemory(fwd_pd_.dst_desc(), ctx.engine);

    // Backward: the ReLU's derivative from the saved dst, then data and weights.
    if (o.fuse_relu) relu_bwd_ = FusedReluBackward(fwd_pd_.dst_desc(), ctx.engine);
    dnnl::convolution_backward_data::desc bwd_data_desc(
        dnnl::algorithm::convolution_direct, AnyDesc(src_dims, src_dt), AnyDesc(w_dims, op_dt),
        AnyDesc(dst_dims, op_dt), strides, pad_l, pad_r);
    bwd_data_pd_ =
        dnnl::convolution_backward_data::primitive_desc(bwd_data_desc, ctx.engine, fwd_pd_);
    bwd_data_ = dnnl::convolution_backward_data(bwd_data_pd_);
    // bf16 backward-data reads the forward's bf16 copy of the weights.
    weights_data_ = ReorderIfNeeded(bf16 ? fwd_pd_.weights_desc() : layer.weights_.value.get_desc(),
                                    bwd_data_pd_.weights_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    diff_src_out_ = OutputReorder(bwd_data_pd_.diff_src_desc(), diff_src_, ctx.engine);

    dnnl::convolution_backward_weights::desc bwd_w_desc(
        dnnl::algorithm::convolution_direct, AnyDesc(src_dims, op_dt), AnyDesc(w_dims), bias_md,
        AnyDesc(dst_dims, op_dt), strides, pad_l, pad_r);
    bwd_w_pd_ = dnnl::convolution_backward_weights::primitive_desc(bwd_w_desc, ctx.engine, fwd_pd_);
    bwd_w_ = dnnl::convolution_backward_weights(bwd_w_pd_);
    if (!layer.weights_.value) make_parameters(bwd_w_pd_.diff_weights_desc());
    EPOCHAL_CHECK(layer.in_channels_ == src_dims[1], layer.name(), ": channel count changed");
    weights_fwd_ =
        ReorderIfNeeded(layer.weights_.value.get_desc(), fwd_pd_.weights_desc(), ctx.engine);
    src_w_ = ReorderIfNeeded(fwd_pd_.src_desc(), bwd_w_pd_.src_desc(), ctx.engine);
    diff_dst_w_ = ReorderIfNeeded(fwd_pd_.dst_desc(), bwd_w_pd_.diff_dst_desc(), ctx.engine);
    // In bf16 diff_dst is converted (an f32 diff_dst) or reordered at most once, for
    // backward-weights; backward-data starts from that bf16 copy.
    diff_data_from_w_ = bf16;
    diff_dst_data_ = ReorderIfNeeded(bf16 ? bwd_w_pd_.diff_dst_desc() : fwd_pd_.dst_desc(),
                                     bwd_data_pd_.diff_dst_desc(), ctx.engine);
    diff_weights_out_ =
        OutputReorder(bwd_w_pd_.diff_weights_desc(), layer.weights_.grad, ctx.engine);
  }

  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }

  void Forward(const StepContext&, const memory& src) override {
    auto& s = ctx_.stream;
    const memory& src_in = src_fwd_.Apply(s, src);
    const memory& w = weights_fwd_.Apply(s, layer_.weights_.value);
    if (fwd_key_ != src.get()) {  // Built once per input memory, then reused.
      fwd_key_ = src.get();
      fwd_args_ = {{DNNL_ARG_SRC, src_in}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst_}};
      if (layer_.options_.bias) fwd_args_[DNNL_ARG_BIAS] = layer_.bias_.value;
      saved_src_ = src_in;
      fwd_weights_ = w;
    }
    fwd_.execute(s, fwd_args_);
  }

  void Backward(const StepContext&, const memory&, const memory& diff_dst,
                bool need_diff_src) override {
    auto& s = ctx_.stream;
    const memory& diff = layer_.options_.fuse_relu ? relu_bwd_.Apply(s, dst_, diff_dst) : diff_dst;
    const memory& diff_w_in = diff_dst_w_.Apply(s, diff);
    const memory& src_w = src_w_.Apply(s, saved_src_);
    if (wargs_.empty()) {
      wargs_ = {{DNNL_ARG_SRC, src_w},
                {DNNL_ARG_DIFF_DST, diff_w_in},
                {DNNL_ARG_DIFF_WEIGHTS, diff_weights_out_.memory()}};
      if (layer_.options_.bias) wargs_[DNNL_ARG_DIFF_BIAS] = layer_.bias_.grad;
    }
    wargs_[DNNL_ARG_SRC] = src_w;
    wargs_[DNNL_ARG_DIFF_DST] = diff_w_in;
    bwd_w_.execute(s, wargs_);
    diff_weights_out_.Commit(s);
    if (need_diff_src) {
      const memory& diff_d_in = diff_dst_data_.Apply(s, diff_data_from_w_ ? diff_w_in : diff);
      const memory& w =
          weights_data_.Apply(s, diff_data_from_w_ ? fwd_weights_ : layer_.weights_.value);
      if (dargs_.empty()) {
        dargs_ = {{DNNL_ARG_DIFF_DST, diff_d_in},
                  {DNNL_ARG_WEIGHTS, w},
                  {DNNL_ARG_DIFF_SRC, diff_src_out_.memory()}};
      }
      dargs_[DNNL_ARG_DIFF_DST] = diff_d_in;
      dargs_[DNNL_ARG_WEIGHTS] = w;
      bwd_data_.execute(s, dargs_);
      diff_src_out_.Commit(s);
    }
  }

 private:
  Conv2D& layer_;
  DnnlContext& ctx_;
  memory::desc src_md_;
  dnnl::convolution_forward::primitive_desc fwd_pd_;
  dnnl::convolution_forward fwd_;
  ReorderIfNeeded src_fwd_, weights_fwd_;
  memory dst_;
  memory saved_src_;    // The forward's src in the forward primitive's layout.
  memory fwd_weights_;  // The weights the forward read (the bf16 copy in bf16).
  // Execution arguments, built on first use and reused (the memories they name are
  // fixed for the plan's lifetime; assigning an existing key does not allocate).
  dnnl_memory_t fwd_key_ = nullptr;
  std::unordered_map<int, memory> fwd_args_, wargs_, dargs_;
  FusedReluBackward relu_bwd_;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd_;
  dnnl::convolution_backward_data bwd_data_;
  ReorderIfNeeded diff_dst_data_, weights_data_;
  bool diff_data_from_w_ = false;
  memory diff_src_;
  OutputReorder diff_src_out_;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd_;
  dnnl::convolution_backward_weights bwd_w_;
  ReorderIfNeeded src_w_, diff_dst_w_;
  OutputReorder diff_weights_out_;
};

Conv2D::Conv2D(std::string name, Conv2DOptions options)
    : Layer(std::move(name)), options_(options) {
  EPOCHAL_CHECK(options_.filters > 0 && options_.kernel > 0 && options_.stride > 0);
  weights_.name = this->name() + "/kernel";
  weights_.apply_weight_decay = true;
  bias_.name = this->name() + "/bias";
}

Padding2D Conv2D::PaddingFor(const dnnl::memory::dims& src_dims) const {
  Padding2D p;
  if (options_.pad) {
    p.top = p.bottom = p.left = p.right = *options_.pad;
  } else if (options_.same) {
    SamePadding1D(src_dims[2], options_.kernel, options_.stride, &p.top, &p.bottom);
    SamePadding1D(src_dims[3], options_.kernel, options_.stride, &p.left, &p.right);
  }
  return p;
}

dnnl::memory::dims Conv2D::DstDims(const dnnl::memory::dims& src_dims) const {
  EPOCHAL_CHECK(src_dims.size() == 4, name(), ": conv needs N,C,H,W input");
  const Padding2D p = PaddingFor(src_dims);
  const int64_t oh = (src_dims[2] + p.top + p.bottom - options_.kernel) / options_.stride + 1;
  const int64_t ow = (src_dims[3] + p.left + p.right - options_.kernel) / options_.stride + 1;
  if (oh <= 0 || ow <= 0) {
    throw InputError(detail::StrCat(name(), ": kernel ", options_.kernel, " does not fit input ",
                                    src_dims[2], "x", src_dims[3]));
  }
  return {src_dims[0], options_.filters, oh, ow};
}

std::unique_ptr<LayerPlan> Conv2D::MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) {
  return std::make_unique<Conv2DPlan>(*this, ctx, src_md);
}

void Conv2D::InitializeParameters(DnnlContext& ctx, uint64_t seed) {
  const int64_t k2 = options_.kernel * options_.kernel;
  const int64_t count = options_.filters * in_channels_ * k2;
  FromPlain(ctx, GlorotUniform(seed, name(), count, in_channels_ * k2, options_.filters * k2),
            weights_.value);
  if (options_.bias) std::fill_n(Data(bias_.value), options_.filters, 0.0f);
}

std::vector<Parameter*> Conv2D::parameters() {
  if (options_.bias) return {&weights_, &bias_};
  return {&weights_};
}

double Conv2D::ForwardFlopsPerSample(const dnnl::memory::dims& src_dims) const {
  const auto d = DstDims(src_dims);
  return 2.0 * static_cast<double>(d[1] * d[2] * d[3]) *
         static_cast<double>(src_dims[1] * options_.kernel * options_.kernel);
}

}  // namespace epochal::nn
