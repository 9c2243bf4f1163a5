// Inverted dropout. The keep mask of element j of sample g is a pure function of
// (seed, epoch, layer name, g, j) through the counter-based RNG, with j the element's
// logical (plain C,H,W order) index, so masks do not depend on the rank count, the
// thread count, the memory layout or where a run resumed.
#pragma once

#include "epochal/nn/layer.h"

namespace epochal::nn {

class Dropout final : public Layer {
 public:
  Dropout(std::string name, float rate);
  std::string kind() const override { return "dropout"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  float rate() const { return rate_; }
  // The keep mask (1 keep, 0 drop) for one sample, in logical order.
  void SampleMask(uint64_t seed, int64_t epoch, int64_t sample_id, std::span<uint8_t> mask) const;
  // The same mask, vectorized, for a span rounded up to a multiple of 4 (the flags
  // past the sample's logical size are the next draws of its last block). The plan
  // uses this one; SampleMask is its reference. AVX-512 intrinsics where the CPU has
  // them, else portable loops; `allow_avx512` false forces the portable ones (tests).
  void FastSampleMask(uint64_t seed, int64_t epoch, int64_t sample_id, std::span<uint8_t> mask,
                      bool allow_avx512 = true) const;

 private:
  float rate_;
  uint64_t name_key_;
  uint32_t keep_threshold_ = 0;
};

}  // namespace epochal::nn
