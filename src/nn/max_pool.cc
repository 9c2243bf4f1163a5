#include "epochal/nn/max_pool.h"

#include <algorithm>
#include <bit>
#include <type_traits>

#include "epochal/core/bf16.h"
#include "epochal/core/error.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

float AsFloat(float v) { return v; }
float AsFloat(Bf16Bits v) { return Bf16ToFloat(v); }
// Back from float, for a value that came from T (so a bf16 one converts exactly).
template <typename T>
T FromExactFloat(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return static_cast<Bf16Bits>(std::bit_cast<uint32_t>(v) >> 16);
  }
}

// 2 x 2 windows at stride 2 over a channel-blocked tensor (N, C/B, H, W, B lanes), H and W
// even, so the windows tile the input: one row of `ow` windows, from input rows `top`
// and `bottom`. Each lane's maximum and its place in the window (0 to 3, row by row),
// the first of equal maxima as the reference kernel and oneDNN take it. The maximum is
// one of the inputs, so it is exact in any type; the compare is in float. One clone per
// ISA, plain fallback; the lane loops vectorize.
template <typename T, int B>
__attribute__((target_clones("avx512f", "avx2", "default"))) void Pool2x2ForwardRow(
    const T* top, const T* bottom, T* out, uint8_t* where, int64_t ow) {
  for (int64_t x = 0; x < ow; ++x) {
    const T* a = top + 2 * x * B;
    const T* c = bottom + 2 * x * B;
#pragma omp simd
    for (int l = 0; l < B; ++l) {
      // Selects written as masks and std::max, which GCC vectorizes (not ?: here).
      float m = AsFloat(a[l]);
      const float f1 = AsFloat(a[B + l]), f2 = AsFloat(c[l]), f3 = AsFloat(c[B + l]);
      const int g1 = f1 > m;
      m = std::max(m, f1);
      const int g2 = f2 > m;
      m = std::max(m, f2);
      const int g3 = f3 > m;
      m = std::max(m, f3);
      int k = g1;
      k ^= (k ^ 2) & -g2;
      k ^= (k ^ 3) & -g3;
      out[x * B + l] = FromExactFloat<T>(m);
      where[x * B + l] = static_cast<uint8_t>(k);
    }
  }
}

// Each diff_dst lane goes to its window's maximum; the other three get +0. Every input
// element is written once, so nothing is zeroed first.
template <typename T, int B>
__attribute__((target_clones("avx512f", "avx2", "default"))) void Pool2x2BackwardRow(
    const T* in, const uint8_t* where, T* top, T* bottom, int64_t ow) {
  for (int64_t x = 0; x < ow; ++x) {
    T* a = top + 2 * x * B;
    T* c = bottom + 2 * x * B;
#pragma omp simd
    for (int l = 0; l < B; ++l) {
      const T d = in[x * B + l];
      const uint8_t k = where[x * B + l];
      a[l] = k == 0 ? d : T{0};
      a[B + l] = k == 1 ? d : T{0};
      c[l] = k == 2 ? d : T{0};
      c[B + l] = k == 3 ? d : T{0};
    }
  }
}

template <typename T, int B>
void Pool2x2Forward(const T* src, T* dst, uint8_t* arg, int64_t planes, int64_t oh, int64_t ow) {
  const int64_t iw = 2 * ow;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t y = 0; y < oh; ++y) {
      const T* top = src + (p * 2 * oh + 2 * y) * iw * B;
      const int64_t o = (p * oh + y) * ow * B;
      Pool2x2ForwardRow<T, B>(top, top + iw * B, dst + o, arg + o, ow);
    }
  }
}

template <typename T, int B>
void Pool2x2Backward(const T* diff_dst, const uint8_t* arg, T* diff_src, int64_t planes, int64_t oh,
                     int64_t ow) {
  const int64_t iw = 2 * ow;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t y = 0; y < oh; ++y) {
      T* top = diff_src + (p * 2 * oh + 2 * y) * iw * B;
      const int64_t o = (p * oh + y) * ow * B;
      Pool2x2BackwardRow<T, B>(diff_dst + o, arg + o, top, top + iw * B, ow);
    }
  }
}

// The lane count of a channel-blocked layout the hand kernels take (aBcd16b or aBcd8b,
// f32 or bf16, C a multiple of the block, H and W even), else 0.
int HandKernelBlock(const memory::desc& md, int64_t pool, int64_t stride) {
  const memory::dims d = md.dims();
  if (pool != 2 || stride != 2 || d.size() != 4 || d[2] % 2 != 0 || d[3] % 2 != 0) return 0;
  const dt type = md.data_type();
  if (type != dt::f32 && type != dt::bf16) return 0;
  for (const int b : {16, 8}) {
    const auto tag = b == 16 ? memory::format_tag::aBcd16b : memory::format_tag::aBcd8b;
    if (d[1] % b == 0 && md == memory::desc(d, type, tag)) return b;
  }
  return 0;
}

// MaxPool2D's plan for the 2 x 2, stride 2 pools of VGG-style nets on blocked layouts:
// one pass over the input each way, the backward writing every element of diff_src
// once. On MiniVGGNet's pool1 (f32, 2 threads) oneDNN 2.6's primitives took 0.58-0.64 ms
// forward and 0.64-0.70 ms backward, these 0.36-0.40 and 0.29-0.40 (docs/benchmarks.md).
// dst has src's layout, as oneDNN's plan gives it.
class BlockedPool2x2Plan final : public LayerPlan {
 public:
  BlockedPool2x2Plan(DnnlContext& ctx, const memory::desc& src_md, int block)
      : ctx_(ctx), block_(block) {
    const memory::dims d = src_md.dims();
    planes_ = d[0] * (d[1] / block);
    oh_ = d[2] / 2;
    ow_ = d[3] / 2;
    bf16_ = src_md.data_type() == dt::bf16;
    const auto tag = block == 16 ? memory::format_tag::aBcd16b : memory::format_tag::aBcd8b;
    dst_ = ZeroedMemory(memory::desc({d[0], d[1], oh_, ow_}, src_md.data_type(), tag), ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    arg_.assign(static_cast<size_t>(planes_ * oh_ * ow_ * block), 0);
  }
  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }
  void Forward(const StepContext&, const memory& src) override {
    ctx_.stream.wait();  // src may come from a queued primitive.
    if (bf16_) {
      Run<Bf16Bits>(true, src.get_data_handle(), dst_.get_data_handle());
    } else {
      Run<float>(true, src.get_data_handle(), dst_.get_data_handle());
    }
  }
  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    ctx_.stream.wait();
    if (bf16_) {
      Run<Bf16Bits>(false, diff_dst.get_data_handle(), diff_src_.get_data_handle());
    } else {
      Run<float>(false, diff_dst.get_data_handle(), diff_src_.get_data_handle());
    }
  }

 private:
  template <typename T>
  void Run(bool forward, const void* in, void* out) {
    const auto* i = static_cast<const T*>(in);
    auto* o = static_cast<T*>(out);
    if (forward) {
      (block_ == 16 ? Pool2x2Forward<T, 16> : Pool2x2Forward<T, 8>)(i, o, arg_.data(), planes_, oh_,
                                                                    ow_);
    } else {
      (block_ == 16 ? Pool2x2Backward<T, 16> : Pool2x2Backward<T, 8>)(i, arg_.data(), o, planes_,
                                                                      oh_, ow_);
    }
  }

  DnnlContext& ctx_;
  int block_;
  bool bf16_ = false;
  int64_t planes_ = 0, oh_ = 0, ow_ = 0;
  memory dst_, diff_src_;
  std::vector<uint8_t> arg_;  // Per output element: its maximum's place in the window.
};

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

bool MaxPool2D::UsesHandKernel(const memory::desc& src_md) const {
  return HandKernelBlock(src_md, pool_, stride_) != 0;
}

std::unique_ptr<LayerPlan> MaxPool2D::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  const memory::dims dst_dims = DstDims(src_md.dims());
  if (const int block = HandKernelBlock(src_md, pool_, stride_)) {
    return std::make_unique<BlockedPool2x2Plan>(ctx, src_md, block);
  }
  return std::make_unique<MaxPoolPlan>(ctx, src_md, dst_dims, pool_, stride_);
}

}  // namespace epochal::nn
