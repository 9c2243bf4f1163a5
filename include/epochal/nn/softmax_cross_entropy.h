// Softmax cross-entropy against integer labels: oneDNN's log-softmax forward, then
// per-sample losses -log p[label] and the gradient (p - onehot) * grad_scale, where
// grad_scale is 1 / (global batch size) for a batch-mean loss.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "epochal/nn/dnnl_util.h"

namespace epochal::nn {

class SoftmaxCrossEntropyPlan {
 public:
  SoftmaxCrossEntropyPlan(DnnlContext& ctx, const dnnl::memory::desc& logits_md);
  SoftmaxCrossEntropyPlan(const SoftmaxCrossEntropyPlan&) = delete;
  SoftmaxCrossEntropyPlan& operator=(const SoftmaxCrossEntropyPlan&) = delete;

  // Computes probabilities, per-sample losses and predictions for `labels` (one per
  // row, each in [0, classes)). Returns the sum of the per-sample losses.
  double Forward(const dnnl::memory& logits, std::span<const int32_t> labels);
  // Writes diff_src() = (p - onehot(label)) * grad_scale, in the logits' layout.
  void Backward(std::span<const int32_t> labels, float grad_scale);

  const dnnl::memory& diff_src() const { return diff_src_; }
  // [batch, classes] row-major.
  std::span<const float> probabilities() const { return probabilities_; }
  std::span<const float> sample_losses() const { return sample_losses_; }
  std::span<const int32_t> predictions() const { return predictions_; }
  int64_t correct() const { return correct_; }

 private:
  DnnlContext& ctx_;
  int64_t batch_, classes_;
  ReorderIfNeeded to_plain_;
  dnnl::logsoftmax_forward logsoftmax_;
  dnnl::memory log_probs_;  // plain [batch, classes]
  dnnl::memory diff_plain_;
  dnnl::memory diff_src_;
  ReorderIfNeeded diff_to_logits_;
  std::unordered_map<int, dnnl::memory> args_;
  std::vector<float> probabilities_, sample_losses_;
  std::vector<int32_t> predictions_;
  int64_t correct_ = 0;
};

}  // namespace epochal::nn
