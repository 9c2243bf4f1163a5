#include "epochal/nn/softmax_cross_entropy.h"

#include <cmath>
#include <cstring>

#include "epochal/core/error.h"

namespace epochal::nn {

using dnnl::memory;

SoftmaxCrossEntropyPlan::SoftmaxCrossEntropyPlan(DnnlContext& ctx, const memory::desc& logits_md)
    : ctx_(ctx) {
  const memory::dims dims = logits_md.dims();
  EPOCHAL_CHECK(dims.size() == 2, "softmax cross-entropy needs N,K logits");
  batch_ = dims[0];
  classes_ = dims[1];
  const memory::desc plain_md = PlainDesc(dims);
  to_plain_ = ReorderIfNeeded(logits_md, plain_md, ctx.engine);
  dnnl::logsoftmax_forward::desc desc(dnnl::prop_kind::forward_inference, plain_md, 1);
  logsoftmax_ =
      dnnl::logsoftmax_forward(dnnl::logsoftmax_forward::primitive_desc(desc, ctx.engine));
  log_probs_ = ZeroedMemory(plain_md, ctx.engine);
  diff_plain_ = ZeroedMemory(plain_md, ctx.engine);
  diff_to_logits_ = ReorderIfNeeded(plain_md, logits_md, ctx.engine);
  diff_src_ = diff_to_logits_.needed() ? ZeroedMemory(logits_md, ctx.engine) : diff_plain_;
  const auto n = static_cast<size_t>(batch_);
  probabilities_.resize(n * static_cast<size_t>(classes_));
  sample_losses_.resize(n);
  predictions_.resize(n);
}

double SoftmaxCrossEntropyPlan::Forward(const memory& logits, std::span<const int32_t> labels) {
  EPOCHAL_CHECK(static_cast<int64_t>(labels.size()) == batch_, "expected ", batch_, " labels");
  const memory& plain = to_plain_.Apply(ctx_.stream, logits);
  if (args_.empty()) args_ = {{DNNL_ARG_DST, log_probs_}};
  args_[DNNL_ARG_SRC] = plain;
  logsoftmax_.execute(ctx_.stream, args_);
  ctx_.stream.wait();
  const float* lp = Data(log_probs_);
  double loss_sum = 0.0;
  correct_ = 0;
  for (int64_t n = 0; n < batch_; ++n) {
    const float* row = lp + n * classes_;
    float* prob = probabilities_.data() + n * classes_;
    int32_t best = 0;
    for (int64_t k = 0; k < classes_; ++k) {
      prob[k] = std::exp(row[k]);
      if (row[k] > row[best]) best = static_cast<int32_t>(k);
    }
    const int32_t label = labels[static_cast<size_t>(n)];
    const float loss = -row[label];
    sample_losses_[static_cast<size_t>(n)] = loss;
    predictions_[static_cast<size_t>(n)] = best;
    correct_ += best == label;
    loss_sum += loss;
  }
  return loss_sum;
}

void SoftmaxCrossEntropyPlan::Backward(std::span<const int32_t> labels, float grad_scale) {
  float* diff = Data(diff_plain_);
  for (int64_t n = 0; n < batch_; ++n) {
    const float* prob = probabilities_.data() + n * classes_;
    float* d = diff + n * classes_;
    for (int64_t k = 0; k < classes_; ++k) d[k] = prob[k] * grad_scale;
    d[labels[static_cast<size_t>(n)]] -= grad_scale;
  }
  if (diff_to_logits_.needed()) {
    const memory& out = diff_to_logits_.Apply(ctx_.stream, diff_plain_);
    ctx_.stream.wait();
    std::memcpy(Data(diff_src_), Data(out), out.get_desc().get_size());
  }
}

}  // namespace epochal::nn
