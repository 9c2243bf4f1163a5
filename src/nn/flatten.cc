#include "epochal/nn/flatten.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

// dst is a 2-D view of a plain buffer: src's own buffer when src is plain (no copy),
// else a buffer that one reorder fills. Backward mirrors it.
class FlattenPlan final : public LayerPlan {
 public:
  FlattenPlan(DnnlContext& ctx, const memory::desc& src_md) : ctx_(ctx) {
    const memory::dims dims = src_md.dims();
    int64_t features = 1;
    for (size_t i = 1; i < dims.size(); ++i) features *= dims[i];
    const memory::desc plain_md = PlainDesc(dims, src_md.data_type());
    const memory::desc flat_md = PlainDesc({dims[0], features}, src_md.data_type());
    reorder_needed_ = src_md != plain_md;
    plain_ = ZeroedMemory(plain_md, ctx.engine);
    dst_ = memory(flat_md, ctx.engine, plain_.get_data_handle());
    diff_plain_ = memory(plain_md, ctx.engine, DNNL_MEMORY_NONE);
    if (reorder_needed_) {
      diff_src_ = ZeroedMemory(src_md, ctx.engine);
      to_plain_ =
          dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, src_md, ctx.engine, plain_md));
      from_plain_ =
          dnnl::reorder(dnnl::reorder::primitive_desc(ctx.engine, plain_md, ctx.engine, src_md));
    } else {
      diff_src_ = memory(src_md, ctx.engine, DNNL_MEMORY_NONE);
    }
  }
  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }
  void Forward(const StepContext&, const memory& src) override {
    if (reorder_needed_) {
      to_plain_.execute(ctx_.stream, const_cast<memory&>(src), plain_);
    } else {
      dst_.set_data_handle(src.get_data_handle());
    }
  }
  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    if (reorder_needed_) {
      diff_plain_.set_data_handle(diff_dst.get_data_handle());
      from_plain_.execute(ctx_.stream, diff_plain_, diff_src_);
    } else {
      diff_src_.set_data_handle(diff_dst.get_data_handle());
    }
  }

 private:
  DnnlContext& ctx_;
  bool reorder_needed_ = false;
  memory plain_, dst_, diff_plain_, diff_src_;
  dnnl::reorder to_plain_, from_plain_;
};

}  // namespace

std::unique_ptr<LayerPlan> Flatten::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<FlattenPlan>(ctx, src_md);
}

}  // namespace epochal::nn
