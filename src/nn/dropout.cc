#include "epochal/nn/dropout.h"

#include <cstring>

#include "epochal/core/error.h"
#include "epochal/core/hash.h"
#include "epochal/core/rng.h"

namespace epochal::nn {
namespace {

using dnnl::memory;

class DropoutPlan final : public LayerPlan {
 public:
  DropoutPlan(const Dropout& layer, DnnlContext& ctx, const memory::desc& src_md)
      : layer_(layer), ctx_(ctx), logical_of_physical_(SampleLogicalIndex(src_md)) {
    const memory::dims dims = src_md.dims();
    batch_ = dims[0];
    physical_per_sample_ = static_cast<int64_t>(logical_of_physical_.size());
    logical_per_sample_ = 1;
    for (size_t i = 1; i < dims.size(); ++i) logical_per_sample_ *= dims[i];
    dst_ = ZeroedMemory(src_md, ctx.engine);
    diff_src_ = ZeroedMemory(src_md, ctx.engine);
    logical_mask_.resize(static_cast<size_t>(batch_ * logical_per_sample_));
    scale_ = 1.0f / (1.0f - layer.rate());
  }

  const memory& dst() const override { return dst_; }
  const memory& diff_src() const override { return diff_src_; }

  void Forward(const StepContext& ctx, const memory& src) override {
    ctx_.stream.wait();  // The loops below read src on this thread.
    const float* in = Data(src);
    float* out = Data(dst_);
    active_ = ctx.mode != Mode::kInference && layer_.rate() > 0.0f;
    if (!active_) {
      std::memcpy(out, in, static_cast<size_t>(batch_ * physical_per_sample_) * sizeof(float));
      return;
    }
    EPOCHAL_CHECK(static_cast<int64_t>(ctx.sample_ids.size()) == batch_,
                  "dropout needs one sample id per batch row");
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch_; ++n) {
      uint8_t* mask = logical_mask_.data() + n * logical_per_sample_;
      layer_.SampleMask(ctx.seed, ctx.epoch, ctx.sample_ids[static_cast<size_t>(n)],
                        {mask, static_cast<size_t>(logical_per_sample_)});
      const float* s = in + n * physical_per_sample_;
      float* d = out + n * physical_per_sample_;
      for (int64_t p = 0; p < physical_per_sample_; ++p) {
        const int32_t l = logical_of_physical_[static_cast<size_t>(p)];
        d[p] = l >= 0 && mask[l] ? s[p] * scale_ : 0.0f;
      }
    }
  }

  void Backward(const StepContext&, const memory&, const memory& diff_dst, bool) override {
    ctx_.stream.wait();
    const float* in = Data(diff_dst);
    float* out = Data(diff_src_);
    if (!active_) {
      std::memcpy(out, in, static_cast<size_t>(batch_ * physical_per_sample_) * sizeof(float));
      return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < batch_; ++n) {
      const uint8_t* mask = logical_mask_.data() + n * logical_per_sample_;
      const float* s = in + n * physical_per_sample_;
      float* d = out + n * physical_per_sample_;
      for (int64_t p = 0; p < physical_per_sample_; ++p) {
        const int32_t l = logical_of_physical_[static_cast<size_t>(p)];
        d[p] = l >= 0 && mask[l] ? s[p] * scale_ : 0.0f;
      }
    }
  }

 private:
  const Dropout& layer_;
  DnnlContext& ctx_;
  std::vector<int32_t> logical_of_physical_;
  int64_t batch_ = 0, physical_per_sample_ = 0, logical_per_sample_ = 0;
  float scale_ = 1.0f;
  bool active_ = false;
  memory dst_, diff_src_;
  std::vector<uint8_t> logical_mask_;  // [batch, logical_per_sample], 1 = keep.
};

}  // namespace

Dropout::Dropout(std::string name, float rate) : Layer(std::move(name)), rate_(rate) {
  EPOCHAL_CHECK(rate_ >= 0.0f && rate_ < 1.0f, "dropout rate must be in [0, 1)");
  name_key_ = Fnv1a(this->name());  // Stable across builds, unlike std::hash.
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

std::unique_ptr<LayerPlan> Dropout::MakePlan(DnnlContext& ctx, const memory::desc& src_md) {
  return std::make_unique<DropoutPlan>(*this, ctx, src_md);
}

}  // namespace epochal::nn
