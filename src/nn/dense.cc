#include "epochal/nn/dense.h"

#include "epochal/core/error.h"

namespace epochal::nn {

using dnnl::memory;

class DensePlan final : public LayerPlan {
 public:
  DensePlan(Dense& layer, DnnlContext& ctx, const memory::desc& src_md) : layer_(layer), ctx_(ctx) {
    const auto& o = layer.options_;
    const memory::dims src_dims = src_md.dims();
    memory::dims w_dims = src_dims;
    w_dims[0] = o.units;
    const memory::dims dst_dims = {src_dims[0], o.units};
    const memory::desc bias_md = PlainDesc({o.units});
    int64_t in_features = 1;
    for (size_t i = 1; i < src_dims.size(); ++i) in_features *= src_dims[i];

    dnnl::primitive_attr attr;
    if (o.fuse_relu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      attr.set_post_ops(ops);
    }
    // Mixed precision: bf16 operands, f32 accumulation; dst in bf16 when the next layers
    // run on bf16 activations (bf16_dst), diff_src in src's type.
    bf16_ = o.precision == Precision::kBf16;
    const dt op_dt = bf16_ ? dt::bf16 : dt::f32;
    const dt dst_dt = bf16_ && o.bf16_dst ? dt::bf16 : dt::f32;
    const dt src_dt = src_md.data_type();
    dnnl::inner_product_forward::desc fwd_desc(
        dnnl::prop_kind::forward_training, bf16_ ? AnyDesc(src_dims, op_dt) : src_md,
        AnyDesc(w_dims, op_dt), bias_md, AnyDesc(dst_dims, dst_dt));
    fwd_pd_ = dnnl::inner_product_forward::primitive_desc(fwd_desc, attr, ctx.engine);
    fwd_ = dnnl::inner_product_forward(fwd_pd_);
    auto make_parameters = [&](const memory::desc& master_md) {
      layer.in_features_ = in_features;
      layer.weights_.value = ZeroedMemory(master_md, ctx.engine);
      layer.weights_.grad = ZeroedMemory(master_md, ctx.engine);
      layer.bias_.value = ZeroedMemory(bias_md, ctx.engine);
      layer.bias_.grad = ZeroedMemory(bias_md, ctx.engine);
    };
    // f32 keeps the weights in the forward's layout; bf16 in the f32 layout that
    // backward-weights writes (below), so no step reorders the f32 gradient: the one
    // pass per step is the forward's f32-to-bf16 conversion, which is needed anyway.
    if (!layer.weights_.value && !bf16_) make_parameters(fwd_pd_.weights_desc());
    src_fwd_ = ReorderIfNeeded(src_md, fwd_pd_.src_desc(), ctx.engine);
    dst_ = ZeroedMemory(fwd_pd_.dst_desc(), ctx.engine);

    if (o.fuse_relu) relu_bwd_ = FusedReluBackward(fwd_pd_.dst_desc(), ctx.engine);
    // Ask backward-data for the weights in their stored layout first: otherwise the
    // 1.6M-element kernel of MiniVGGNet's fc1 would be reordered on every step. In bf16
    // that is the forward's bf16 copy, and diff_dst is bf16 too.
    const memory::desc data_w_md = bf16_ ? fwd_pd_.weights_desc() : layer.weights_.value.get_desc();
    const memory::desc data_diff_dst_md =
        bf16_ ? AnyDesc(dst_dims, op_dt) : memory::desc(fwd_pd_.dst_desc());
    try {
      dnnl::inner_product_backward_data::desc data_desc(AnyDesc(src_dims, src_dt), data_w_md,
                                                        data_diff_dst_md);
      bwd_data_pd_ =
          dnnl::inner_product_backward_data::primitive_desc(data_desc, ctx.engine, fwd_pd_);
    } catch (const dnnl::error&) {
      dnnl::inner_product_backward_data::desc data_desc(AnyDesc(src_dims, src_dt),
                                                        AnyDesc(w_dims, op_dt), data_diff_dst_md);
      bwd_data_pd_ =
          dnnl::inner_product_backward_data::primitive_desc(data_desc, ctx.engine, fwd_pd_);
    }
    bwd_data_ = dnnl::inner_product_backward_data(bwd_data_pd_);
    weights_data_ = ReorderIfNeeded(data_w_md, bwd_data_pd_.weights_desc(), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    diff_src_out_ = OutputReorder(bwd_data_pd_.diff_src_desc(), diff_src_, ctx.engine);

    dnnl::inner_product_backward_weights::desc w_desc(
        AnyDesc(src_dims, op_dt), AnyDesc(w_dims), bias_md,
        bf16_ ? AnyDesc(dst_dims, op_dt) : memory::desc(fwd_pd_.dst_desc()));
    bwd_w_pd_ = dnnl::inner_product_backward_weights::primitive_desc(w_desc, ctx.engine, fwd_pd_);
    bwd_w_ = dnnl::inner_product_backward_weights(bwd_w_pd_);
    if (!layer.weights_.value) make_parameters(bwd_w_pd_.diff_weights_desc());
    EPOCHAL_CHECK(layer.in_features_ == in_features, layer.name(), ": input size changed");
    weights_fwd_ =
        ReorderIfNeeded(layer.weights_.value.get_desc(), fwd_pd_.weights_desc(), ctx.engine);
    src_w_ = ReorderIfNeeded(fwd_pd_.src_desc(), bwd_w_pd_.src_desc(), ctx.engine);
    diff_dst_w_ = ReorderIfNeeded(fwd_pd_.dst_desc(), bwd_w_pd_.diff_dst_desc(), ctx.engine);
    // In bf16 diff_dst is converted (an f32 diff_dst) or reordered at most once, for
    // backward-weights; backward-data starts from that bf16 copy.
    diff_dst_data_ = ReorderIfNeeded(bf16_ ? bwd_w_pd_.diff_dst_desc() : fwd_pd_.dst_desc(),
                                     bwd_data_pd_.diff_dst_desc(), ctx.engine);
    diff_weights_out_ =
        OutputReorder(bwd_w_pd_.diff_weights_desc(), layer.weights_.grad, ctx.engine);
  }

  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }

  void Forward(const StepContext&, const memory& src) override {
    auto& s = ctx_.stream;
    saved_src_ = src_fwd_.Apply(s, src);
    const memory& w = weights_fwd_.Apply(s, layer_.weights_.value);
    if (fwd_args_.empty()) {
      fwd_args_ = {{DNNL_ARG_SRC, saved_src_},
                   {DNNL_ARG_WEIGHTS, w},
                   {DNNL_ARG_BIAS, layer_.bias_.value},
                   {DNNL_ARG_DST, dst_}};
    }
    fwd_args_[DNNL_ARG_SRC] = saved_src_;
    fwd_args_[DNNL_ARG_WEIGHTS] = w;
    if (bf16_) fwd_weights_ = w;
    fwd_.execute(s, fwd_args_);
  }

  void Backward(const StepContext&, const memory&, const memory& diff_dst,
                bool need_diff_src) override {
    auto& s = ctx_.stream;
    const memory* diff =
        layer_.options_.fuse_relu ? &relu_bwd_.Apply(s, dst_, diff_dst) : &diff_dst;
    const memory& diff_w_in = diff_dst_w_.Apply(s, *diff);
    const memory& src_w = src_w_.Apply(s, saved_src_);
    if (wargs_.empty()) {
      wargs_ = {{DNNL_ARG_DIFF_WEIGHTS, diff_weights_out_.memory()},
                {DNNL_ARG_DIFF_BIAS, layer_.bias_.grad}};
    }
    wargs_[DNNL_ARG_SRC] = src_w;
    wargs_[DNNL_ARG_DIFF_DST] = diff_w_in;
    bwd_w_.execute(s, wargs_);
    diff_weights_out_.Commit(s);
    if (need_diff_src) {
      const memory& diff_d_in = diff_dst_data_.Apply(s, bf16_ ? diff_w_in : *diff);
      const memory& w = weights_data_.Apply(s, bf16_ ? fwd_weights_ : layer_.weights_.value);
      if (dargs_.empty()) dargs_ = {{DNNL_ARG_DIFF_SRC, diff_src_out_.memory()}};
      dargs_[DNNL_ARG_DIFF_DST] = diff_d_in;
      dargs_[DNNL_ARG_WEIGHTS] = w;
      bwd_data_.execute(s, dargs_);
      diff_src_out_.Commit(s);
    }
  }

 private:
  Dense& layer_;
  DnnlContext& ctx_;
  dnnl::inner_product_forward::primitive_desc fwd_pd_;
  dnnl::inner_product_forward fwd_;
  ReorderIfNeeded src_fwd_, weights_fwd_;
  bool bf16_ = false;
  memory dst_, saved_src_;
  memory fwd_weights_;  // bf16: the forward's bf16 copy of the weights.
  FusedReluBackward relu_bwd_;
  dnnl::inner_product_backward_data::primitive_desc bwd_data_pd_;
  dnnl::inner_product_backward_data bwd_data_;
  ReorderIfNeeded weights_data_, diff_dst_data_;
  memory diff_src_;
  OutputReorder diff_src_out_;
  dnnl::inner_product_backward_weights::primitive_desc bwd_w_pd_;
  dnnl::inner_product_backward_weights bwd_w_;
  ReorderIfNeeded src_w_, diff_dst_w_;
  OutputReorder diff_weights_out_;
  // Execution arguments, built on first use; later assignments reuse the map's nodes.
  std::unordered_map<int, memory> fwd_args_, wargs_, dargs_;
};

Dense::Dense(std::string name, DenseOptions options) : Layer(std::move(name)), options_(options) {
  EPOCHAL_CHECK(options_.units > 0);
  weights_.name = this->name() + "/kernel";
  weights_.apply_weight_decay = true;
  bias_.name = this->name() + "/bias";
}

std::unique_ptr<LayerPlan> Dense::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<DensePlan>(*this, ctx, src_md);
}

void Dense::InitializeParameters(DnnlContext& ctx, uint64_t seed) {
  FromPlain(
      ctx, GlorotUniform(seed, name(), options_.units * in_features_, in_features_, options_.units),
      weights_.value);
  std::fill_n(Data(bias_.value), options_.units, 0.0f);
}

double Dense::ForwardFlopsPerSample(const memory::dims& src_dims) const {
  double k = 1;
  for (size_t i = 1; i < src_dims.size(); ++i) k *= static_cast<double>(src_dims[i]);
  return 2.0 * k * static_cast<double>(options_.units);
}

}  // namespace epochal::nn
