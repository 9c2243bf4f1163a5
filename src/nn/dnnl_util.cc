#include "epochal/nn/dnnl_util.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "epochal/core/bf16.h"
#include "epochal/core/error.h"

namespace epochal::nn {

dnnl::memory::desc PlainDesc(const dnnl::memory::dims& dims, dt type) {
  static constexpr tag kTags[] = {tag::undef, tag::a, tag::ab, tag::abc, tag::abcd, tag::abcde};
  EPOCHAL_CHECK(!dims.empty() && dims.size() <= 5, "unsupported rank ", dims.size());
  return dnnl::memory::desc(dims, type, kTags[dims.size()]);
}

dnnl::memory::desc AnyDesc(const dnnl::memory::dims& dims, dt type) {
  return dnnl::memory::desc(dims, type, tag::any);
}

dnnl::memory ZeroedMemory(const dnnl::memory::desc& md, const dnnl::engine& engine) {
  dnnl::memory m(md, engine);
  std::memset(m.get_data_handle(), 0, md.get_size());
  return m;
}

size_t ElementBytes(const dnnl::memory::desc& md) {
  return dnnl::memory::data_type_size(md.data_type());
}

int64_t PhysicalSize(const dnnl::memory::desc& md) {
  return static_cast<int64_t>(md.get_size() / ElementBytes(md));
}

std::span<float> Span(const dnnl::memory& m) {
  EPOCHAL_CHECK(m.get_desc().data_type() == dt::f32, "Span() needs an f32 memory");
  return {Data(m), static_cast<size_t>(PhysicalSize(m.get_desc()))};
}

int64_t PhysicalOffset(const dnnl::memory::desc& md, std::span<const int64_t> idx) {
  const dnnl_memory_desc_t& d = md.data;
  EPOCHAL_CHECK(d.format_kind == dnnl_blocked, "layout is not blocked");
  EPOCHAL_CHECK(static_cast<int>(idx.size()) == d.ndims);
  const dnnl_blocking_desc_t& blk = d.format_desc.blocking;
  int64_t pos[DNNL_MAX_NDIMS];
  for (int i = 0; i < d.ndims; ++i) pos[i] = idx[static_cast<size_t>(i)] + d.padded_offsets[i];
  int64_t inner = 0;
  int64_t inner_stride = 1;
  for (int k = blk.inner_nblks - 1; k >= 0; --k) {
    const int dim = static_cast<int>(blk.inner_idxs[k]);
    const int64_t block = blk.inner_blks[k];
    inner += (pos[dim] % block) * inner_stride;
    inner_stride *= block;
    pos[dim] /= block;
  }
  int64_t offset = d.offset0 + inner;
  for (int i = 0; i < d.ndims; ++i) offset += pos[i] * blk.strides[i];
  return offset;
}

std::vector<int32_t> SampleLogicalIndex(const dnnl::memory::desc& md) {
  const dnnl::memory::dims dims = md.dims();
  const int64_t batch = dims[0];
  const int64_t per_sample_physical = PhysicalSize(md) / batch;
  int64_t logical_count = 1;
  for (size_t i = 1; i < dims.size(); ++i) logical_count *= dims[i];
  std::vector<int32_t> map(static_cast<size_t>(per_sample_physical), -1);
  std::vector<int64_t> idx(dims.size(), 0);
  for (int64_t l = 0; l < logical_count; ++l) {
    int64_t rest = l;
    for (size_t i = dims.size() - 1; i >= 1; --i) {
      idx[i] = rest % dims[i];
      rest /= dims[i];
    }
    const int64_t p = PhysicalOffset(md, idx);
    EPOCHAL_CHECK(p >= 0 && p < per_sample_physical, "batch dim is not outermost in this layout");
    map[static_cast<size_t>(p)] = static_cast<int32_t>(l);
  }
  return map;
}

namespace {

// f32 to bf16 as oneDNN's reorder converts: subnormal inputs become a zero of their sign
// (as VCVTNEPS2BF16 does, and as bf16 dot products read them anyway), the rest rounds to
// nearest even (core/bf16.h).
inline Bf16Bits FloatToBf16FlushingSubnormals(float v) {
  const uint32_t u = std::bit_cast<uint32_t>(v);
  const bool subnormal = (u & 0x7fffffffu) < 0x00800000u;
  return FloatToBf16(std::bit_cast<float>(subnormal ? u & 0x80000000u : u));
}

// One block of `Ab` x 16 weights: f32 [16 b][Ab a] to bf16 [8][Ab a][2 b], the pairs of b
// that bf16 dot products take together. One clone per ISA, plain fallback.
template <int Ab>
__attribute__((target_clones("avx512f", "avx2", "default"))) void PairInterleaveBlock(
    const float* in, Bf16Bits* out) {
  for (int k = 0; k < 8; ++k) {
    const float* even = in + 2 * k * Ab;
    const float* odd = even + Ab;
    Bf16Bits* o = out + 2 * k * Ab;
#pragma omp simd
    for (int a = 0; a < Ab; ++a) {
      o[2 * a] = FloatToBf16FlushingSubnormals(even[a]);
      o[2 * a + 1] = FloatToBf16FlushingSubnormals(odd[a]);
    }
  }
}

// The A-block of an f32 AB16b<Ab>a to bf16 AB8b<Ab>a2b reorder of the same dims (dense
// weights: f32 as the optimizer keeps them, bf16 as the forward reads them), else 0.
int PairInterleaveABlock(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  const dnnl::memory::dims d = from.dims();
  if (d.size() != 2 || to.dims() != d || from.data_type() != dt::f32 ||
      to.data_type() != dt::bf16) {
    return 0;
  }
  static constexpr struct {
    tag f32, bf16;
    int a_block;
  } kPairs[] = {{tag::AB16b64a, tag::AB8b64a2b, 64},
                {tag::AB16b32a, tag::AB8b32a2b, 32},
                {tag::AB16b16a, tag::AB8b16a2b, 16}};
  for (const auto& p : kPairs) {
    if (from == dnnl::memory::desc(d, dt::f32, p.f32) &&
        to == dnnl::memory::desc(d, dt::bf16, p.bf16)) {
      return p.a_block;
    }
  }
  return 0;
}

}  // namespace

ReorderIfNeeded::ReorderIfNeeded(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                                 const dnnl::engine& engine)
    : needed_(from != to) {
  if (!needed_) return;
  buffer_ = ZeroedMemory(to, engine);
  pair_a_block_ = PairInterleaveABlock(from, to);
  if (pair_a_block_ != 0) {
    // Both layouts keep the same blocks in the same order, padding included.
    blocks_ = static_cast<int64_t>(from.get_size() / sizeof(float)) / (16 * pair_a_block_);
    return;
  }
  reorder_ = dnnl::reorder(dnnl::reorder::primitive_desc(engine, from, engine, to));
}

const dnnl::memory& ReorderIfNeeded::Apply(dnnl::stream& stream, const dnnl::memory& src) {
  if (!needed_) return src;
  if (pair_a_block_ == 0) {
    reorder_.execute(stream, const_cast<dnnl::memory&>(src), buffer_);
    return buffer_;
  }
  stream.wait();  // src may still be written by a queued primitive.
  const auto* in = static_cast<const float*>(src.get_data_handle());
  auto* out = static_cast<Bf16Bits*>(buffer_.get_data_handle());
  const int64_t block = 16 * pair_a_block_;
  const int a_block = pair_a_block_;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks_; ++b) {
    if (a_block == 64) {
      PairInterleaveBlock<64>(in + b * block, out + b * block);
    } else if (a_block == 32) {
      PairInterleaveBlock<32>(in + b * block, out + b * block);
    } else {
      PairInterleaveBlock<16>(in + b * block, out + b * block);
    }
  }
  return buffer_;
}

OutputReorder::OutputReorder(const dnnl::memory::desc& produced, const dnnl::memory& target,
                             const dnnl::engine& engine)
    : needed_(produced != target.get_desc()), target_(target) {
  if (needed_) {
    buffer_ = ZeroedMemory(produced, engine);
    reorder_ =
        dnnl::reorder(dnnl::reorder::primitive_desc(engine, produced, engine, target.get_desc()));
  }
}

void OutputReorder::Commit(dnnl::stream& stream) {
  if (needed_) reorder_.execute(stream, buffer_, target_);
}

FusedReluBackward::FusedReluBackward(const dnnl::memory::desc& dst_md, const dnnl::engine& engine) {
  const auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
  dnnl::eltwise_forward::desc hint_desc(dnnl::prop_kind::forward_training, alg, dst_md, 0.0f, 0.0f);
  dnnl::eltwise_forward::primitive_desc hint(hint_desc, engine);
  dnnl::eltwise_backward::desc desc(alg, dst_md, dst_md, 0.0f, 0.0f);
  primitive_ = dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc(desc, engine, hint));
  dst_md_ = dst_md;
}

const dnnl::memory& FusedReluBackward::Apply(dnnl::stream& stream, const dnnl::memory& dst,
                                             const dnnl::memory& diff_dst) {
  // The primitive reads diff_dst in dst's layout; anything else would be misread.
  EPOCHAL_CHECK(diff_dst.get_desc() == dst_md_,
                "fused ReLU backward: diff_dst must have dst's layout");
  // oneDNN's eltwise backward may run in place (diff_src = diff_dst).
  args_[DNNL_ARG_DST] = dst;  // Assigning an existing key reuses its node.
  args_[DNNL_ARG_DIFF_DST] = diff_dst;
  args_[DNNL_ARG_DIFF_SRC] = diff_dst;
  primitive_.execute(stream, args_);
  return diff_dst;
}

std::vector<float> ToPlain(DnnlContext& ctx, const dnnl::memory& m) {
  const auto plain_md = PlainDesc(m.get_desc().dims());
  std::vector<float> out(static_cast<size_t>(PhysicalSize(plain_md)));
  dnnl::memory plain(plain_md, ctx.engine, out.data());
  dnnl::reorder(m, plain).execute(ctx.stream, const_cast<dnnl::memory&>(m), plain);
  ctx.stream.wait();
  return out;
}

void FromPlain(DnnlContext& ctx, std::span<const float> plain, const dnnl::memory& m) {
  const auto plain_md = PlainDesc(m.get_desc().dims());
  EPOCHAL_CHECK(static_cast<int64_t>(plain.size()) == PhysicalSize(plain_md), "expected ",
                PhysicalSize(plain_md), " values, got ", plain.size());
  std::memset(m.get_data_handle(), 0, m.get_desc().get_size());
  dnnl::memory src(plain_md, ctx.engine, const_cast<float*>(plain.data()));
  dnnl::reorder(src, m).execute(ctx.stream, src, const_cast<dnnl::memory&>(m));
  ctx.stream.wait();
}

}  // namespace epochal::nn
