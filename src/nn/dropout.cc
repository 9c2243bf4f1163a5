#include "epochal/nn/dropout.h"

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "epochal/core/bf16.h"
#include "epochal/core/error.h"
#include "epochal/core/hash.h"
#include "epochal/core/rng.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

// Keep flags of `blocks` consecutive Philox4x32-10 blocks from counter `first`, four
// flags a block: keep = (word >> 8) >= threshold, which is UniformFloat(word) >= rate
// exactly (UniformFloat is (word >> 8) * 2^-24, exact in float). The same function as
// Philox4x32 in core/rng.cc, computed 16 counters at a time in lane arrays so the
// compiler turns each round into a few vector multiplies; one clone per ISA, picked at
// load time, with a plain x86-64 fallback. Dropout.FastMaskMatchesSampleMask pins it to
// the scalar generator.
__attribute__((target_clones("avx512f", "avx2", "default"))) void KeepFlags(
    uint64_t seed, uint64_t stream, uint64_t first, uint64_t blocks, uint32_t threshold,
    uint8_t* flags) {
  constexpr int kLanes = 16;
  for (uint64_t b0 = 0; b0 < blocks; b0 += kLanes) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t counter = first + b0 + static_cast<uint64_t>(l);
      c0[l] = static_cast<uint32_t>(counter);
      c1[l] = static_cast<uint32_t>(counter >> 32);
      c2[l] = static_cast<uint32_t>(stream);
      c3[l] = static_cast<uint32_t>(stream >> 32);
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) {
        const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0[l];
        const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2[l];
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
        c0[l] = n0;
        c1[l] = static_cast<uint32_t>(p1);
        c2[l] = n2;
        c3[l] = static_cast<uint32_t>(p0);
      }
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    const int n = static_cast<int>(std::min<uint64_t>(kLanes, blocks - b0));
    uint8_t* f = flags + b0 * 4;
    for (int l = 0; l < n; ++l) {
      f[4 * l + 0] = (c0[l] >> 8) >= threshold;
      f[4 * l + 1] = (c1[l] >> 8) >= threshold;
      f[4 * l + 2] = (c2[l] >> 8) >= threshold;
      f[4 * l + 3] = (c3[l] >> 8) >= threshold;
    }
  }
}

// The high and low 32 bits of each lane's 64-bit product a * m (m the same in every lane).
__attribute__((target("avx512f"))) inline void MulHiLoAvx512(__m512i a, __m512i m, __m512i* hi,
                                                             __m512i* lo) {
  // The zero-masking forms with every lane on: the plain ones pass GCC 12 an undefined
  // source that -Wmaybe-uninitialized reports.
  constexpr __mmask8 kAll = 0xFF;
  const __m512i even = _mm512_maskz_mul_epu32(kAll, a, m);  // lanes 0, 2, ...
  const __m512i odd = _mm512_maskz_mul_epu32(kAll, _mm512_maskz_srli_epi64(kAll, a, 32), m);
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_maskz_srli_epi64(kAll, even, 32), odd);
  *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_maskz_slli_epi64(kAll, odd, 32));
}

// 1 << (8 * byte) in each lane whose word keeps its element, else 0.
__attribute__((target("avx512f"))) inline __m512i KeepByteAvx512(__m512i c, __m512i limit,
                                                                 int byte) {
  return _mm512_maskz_mov_epi32(
      _mm512_cmpge_epu32_mask(_mm512_maskz_srli_epi32(0xFFFF, c, 8), limit),
      _mm512_set1_epi32(1 << (8 * byte)));
}

// KeepFlags on AVX-512, written with intrinsics: GCC's vectorization of the portable
// version spends most of its time packing the flags into bytes and splitting the
// 32 x 32 -> 64-bit products: 0.70 ms for the masks of a MiniVGGNet drop1 batch on one
// thread, against 0.13 ms here. Same counters, rounds and comparison, so the same flags
// bit for bit (DropoutTest.FastMaskMatchesSampleMask checks both against SampleMask).
__attribute__((target("avx512f"))) void KeepFlagsAvx512(uint64_t seed, uint64_t stream,
                                                        uint64_t first, uint64_t blocks,
                                                        uint32_t threshold, uint8_t* flags) {
  const __m512i mul0 = _mm512_set1_epi32(static_cast<int>(kMul0));
  const __m512i mul1 = _mm512_set1_epi32(static_cast<int>(kMul1));
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i limit = _mm512_set1_epi32(static_cast<int>(threshold));
  const __m512i s0 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  const __m512i s1 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  for (uint64_t b0 = 0; b0 < blocks; b0 += 16) {
    const uint64_t base = first + b0;
    const __m512i low = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base)));
    __m512i c0 = _mm512_add_epi32(low, lanes);
    // A lane whose low word wrapped carries into the high word.
    const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, low);
    const __m512i high = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
    __m512i c1 = _mm512_mask_add_epi32(high, carry, high, _mm512_set1_epi32(1));
    __m512i c2 = s0, c3 = s1;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      __m512i hi0, lo0, hi1, lo1;
      MulHiLoAvx512(c0, mul0, &hi0, &lo0);
      MulHiLoAvx512(c2, mul1, &hi1, &lo1);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c1 = lo1;
      c3 = lo0;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    // Block l's four flags are bytes 4l .. 4l + 3: one 32-bit lane, stored in one go.
    const __m512i out = _mm512_or_si512(
        _mm512_or_si512(KeepByteAvx512(c0, limit, 0), KeepByteAvx512(c1, limit, 1)),
        _mm512_or_si512(KeepByteAvx512(c2, limit, 2), KeepByteAvx512(c3, limit, 3)));
    const uint64_t n = std::min<uint64_t>(16, blocks - b0);
    _mm512_mask_storeu_epi32(flags + b0 * 4, static_cast<__mmask16>((1u << n) - 1u), out);
  }
}

// dst[p] = src[p] * factor[index[p]] where that factor is not zero, else exactly 0
// (never -0 or NaN from a dropped element): branch-free, so it vectorizes, as the
// index-and-test loop it replaces did not. One clone per ISA, plain fallback.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ScaleGathered(
    const float* src, const float* factor, const int32_t* index, int64_t count, float* dst) {
#pragma omp simd
  for (int64_t p = 0; p < count; ++p) {
    const float k = factor[index[p]];
    dst[p] = k != 0.0f ? src[p] * k : 0.0f;
  }
}

// The same on bf16 activations: the product is formed in f32 and rounded to nearest even
// once, as a bf16 primitive would (core/bf16.h's FloatToBf16); a dropped element is +0.
// Written without branches so it vectorizes. FloatToBf16's NaN select is not needed: a
// NaN product here is a bf16 NaN times a finite factor, whose low 16 bits are zero, so
// rounding cannot carry out of its significand.
__attribute__((target_clones("avx512f", "avx2", "default"))) void ScaleGatheredBf16(
    const Bf16Bits* src, const float* factor, const int32_t* index, int64_t count, Bf16Bits* dst) {
#pragma omp simd
  for (int64_t p = 0; p < count; ++p) {
    const float k = factor[index[p]];
    const float v = std::bit_cast<float>(static_cast<uint32_t>(src[p]) << 16) * k;
    const uint32_t u = std::bit_cast<uint32_t>(v);
    const uint32_t keep = 0u - static_cast<uint32_t>(k != 0.0f);
    dst[p] = static_cast<Bf16Bits>(((u + 0x7FFFu + ((u >> 16) & 1u)) & keep) >> 16);
  }
}

class DropoutPlan final : public LayerPlan {
 public:
  DropoutPlan(const Dropout& layer, DnnlContext& ctx, const memory::desc& src_md)
      : layer_(layer), ctx_(ctx), logical_of_physical_(SampleLogicalIndex(src_md)) {
    const memory::dims dims = src_md.dims();
    batch_ = dims[0];
    physical_per_sample_ = static_cast<int64_t>(logical_of_physical_.size());
    logical_per_sample_ = 1;
    for (size_t i = 1; i < dims.size(); ++i) logical_per_sample_ *= dims[i];
    // dst_ never owns its buffer: it points at own_dst_ in training and at src in
    // inference (setting a handle frees a memory's own buffer).
    own_dst_ = ZeroedMemory(src_md, ctx.engine);
    dst_ = memory(src_md, ctx.engine, own_dst_.get_data_handle());
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    // Whole Philox blocks per sample: the fast generator writes four flags a block.
    mask_stride_ = (logical_per_sample_ + 3) / 4 * 4;
    logical_mask_.resize(static_cast<size_t>(batch_ * mask_stride_));
    // Per sample, the factor of each logical element plus a zero that padding points at.
    factor_stride_ = logical_per_sample_ + 1;
    factors_.assign(static_cast<size_t>(batch_ * factor_stride_), 0.0f);
    gather_index_.resize(logical_of_physical_.size());
    for (size_t p = 0; p < logical_of_physical_.size(); ++p) {
      const int32_t l = logical_of_physical_[p];
      gather_index_[p] = l >= 0 ? l : static_cast<int32_t>(logical_per_sample_);
    }
    scale_ = 1.0f / (1.0f - layer.rate());
    bf16_ = src_md.data_type() == dt::bf16;
    EPOCHAL_CHECK(bf16_ || src_md.data_type() == dt::f32, layer.name(),
                  ": dropout takes f32 or bf16 activations");
    sample_bytes_ = static_cast<size_t>(physical_per_sample_) * ElementBytes(src_md);
  }

  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }

  void Forward(const StepContext& ctx, const memory& src) override {
    ctx_.stream.wait();  // The loops below read src on this thread.
    active_ = UsesDropout(ctx.mode) && layer_.rate() > 0.0f;
    if (!active_) {
      // Identity: dst is src's buffer, no copy (the next layer reads it before src
      // changes, as Flatten's view does).
      dst_.set_data_handle(src.get_data_handle());
      return;
    }
    if (dst_.get_data_handle() != own_dst_.get_data_handle()) {
      dst_.set_data_handle(own_dst_.get_data_handle());
    }
    auto* in = static_cast<const char*>(src.get_data_handle());
    auto* out = static_cast<char*>(dst_.get_data_handle());
    EPOCHAL_CHECK(static_cast<int64_t>(ctx.sample_ids.size()) == batch_,
                  "dropout needs one sample id per batch row");
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch_; ++n) {
      uint8_t* mask = logical_mask_.data() + n * mask_stride_;
      layer_.FastSampleMask(ctx.seed, ctx.epoch, ctx.sample_ids[static_cast<size_t>(n)],
                            {mask, static_cast<size_t>(mask_stride_)});
      float* factor = factors_.data() + n * factor_stride_;
      // 1 * scale or 0 * scale (+0): branch-free, so it vectorizes.
      const float scale = scale_;
#pragma omp simd
      for (int64_t l = 0; l < logical_per_sample_; ++l)
        factor[l] = static_cast<float>(mask[l]) * scale;
      Scale(in + n * sample_bytes_, factor, out + n * sample_bytes_);
    }
  }

  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    ctx_.stream.wait();
    auto* in = static_cast<const char*>(diff_dst.get_data_handle());
    auto* out = static_cast<char*>(diff_src_.get_data_handle());
    if (!active_) {
      std::memcpy(out, in, static_cast<size_t>(batch_) * sample_bytes_);
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch_; ++n) {
      Scale(in + n * sample_bytes_, factors_.data() + n * factor_stride_, out + n * sample_bytes_);
    }
  }

 private:
  // One sample's elements times their factors, in the activations' type.
  void Scale(const char* in, const float* factor, char* out) const {
    if (bf16_) {
      ScaleGatheredBf16(reinterpret_cast<const Bf16Bits*>(in), factor, gather_index_.data(),
                        physical_per_sample_, reinterpret_cast<Bf16Bits*>(out));
    } else {
      ScaleGathered(reinterpret_cast<const float*>(in), factor, gather_index_.data(),
                    physical_per_sample_, reinterpret_cast<float*>(out));
    }
  }

  const Dropout& layer_;
  DnnlContext& ctx_;
  std::vector<int32_t> logical_of_physical_;
  int64_t batch_ = 0, physical_per_sample_ = 0, logical_per_sample_ = 0, mask_stride_ = 0;
  float scale_ = 1.0f;
  bool active_ = false;
  bool bf16_ = false;        // bf16 activations (else f32).
  size_t sample_bytes_ = 0;  // One sample's physical elements, in bytes.
  memory own_dst_, dst_, diff_src_;
  std::vector<uint8_t> logical_mask_;  // [batch, mask_stride], 1 = keep.
  int64_t factor_stride_ = 0;
  std::vector<float> factors_;         // [batch, logical + 1]: scale or 0; last is 0.
  std::vector<int32_t> gather_index_;  // Per physical element: logical index, or the 0.
};

}  // namespace

Dropout::Dropout(std::string name, float rate) : Layer(std::move(name)), rate_(rate) {
  EPOCHAL_CHECK(rate_ >= 0.0f && rate_ < 1.0f, "dropout rate must be in [0, 1)");
  name_key_ = Fnv1a(this->name());  // Stable across builds, unlike std::hash.
  // UniformFloat(w) >= rate  <=>  (w >> 8) >= rate * 2^24 (exact in double).
  keep_threshold_ = static_cast<uint32_t>(std::ceil(static_cast<double>(rate_) * 16777216.0));
}

void Dropout::SampleMask(uint64_t seed, int64_t epoch, int64_t sample_id,
                         std::span<uint8_t> mask) const {
  const uint64_t stream =
      StreamId({static_cast<uint64_t>(RngTag::kDropout), static_cast<uint64_t>(epoch), name_key_});
  const uint64_t blocks = (mask.size() + 3) / 4;
  const uint64_t first = static_cast<uint64_t>(sample_id) * blocks;
  for (uint64_t b = 0; b < blocks; ++b) {
    const auto words = Philox4x32(seed, stream, first + b);
    for (uint64_t k = 0; k < 4 && b * 4 + k < mask.size(); ++k) {
      mask[b * 4 + k] = UniformFloat(words[k]) >= rate_ ? 1 : 0;
    }
  }
}

void Dropout::FastSampleMask(uint64_t seed, int64_t epoch, int64_t sample_id,
                             std::span<uint8_t> mask, bool allow_avx512) const {
  EPOCHAL_CHECK(mask.size() % 4 == 0, "the fast mask takes whole blocks of four");
  const uint64_t stream =
      StreamId({static_cast<uint64_t>(RngTag::kDropout), static_cast<uint64_t>(epoch), name_key_});
  const uint64_t blocks = mask.size() / 4;
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  (avx512 && allow_avx512 ? KeepFlagsAvx512 : KeepFlags)(seed, stream,
                                                         static_cast<uint64_t>(sample_id) * blocks,
                                                         blocks, keep_threshold_, mask.data());
}

std::unique_ptr<LayerPlan> Dropout::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<DropoutPlan>(*this, ctx, src_md);
}

}  // namespace epochal::nn
