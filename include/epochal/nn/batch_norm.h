// Batch normalization over the channel axis (axis 1) on oneDNN, Keras semantics:
// training normalizes with the batch statistics and updates the running ones as
// running = momentum * running + (1 - momentum) * batch; inference uses the running
// statistics. As in Keras, the running variance takes the Bessel-corrected batch
// variance for 4-D inputs (TensorFlow's fused kernel) and the biased one for 2-D inputs.
// Optionally synchronized over processes (set_statistics_reducer).
#pragma once

#include <vector>

#include "epochal/nn/layer.h"

namespace epochal::nn {

struct BatchNormOptions {
  float epsilon = 1e-3f;
  float momentum = 0.99f;
};

class BatchNorm final : public Layer {
 public:
  BatchNorm(std::string name, BatchNormOptions options);
  std::string kind() const override { return "batch_norm"; }
  std::unique_ptr<LayerPlan> MakePlan(DnnlContext& ctx, const dnnl::memory::desc& src_md) override;
  void InitializeParameters(DnnlContext& ctx, uint64_t seed) override;
  std::vector<Parameter*> parameters() override { return {&gamma_, &beta_}; }
  std::vector<StateBuffer*> state() override { return {&running_mean_, &running_variance_}; }
  const BatchNormOptions& options() const { return options_; }
  // Synchronized batch norm: training statistics (and their gradients) are summed over
  // all processes through `reducer`, so N processes with batch B/N compute what one
  // process with batch B would. The parameter gradients stay local sums; the gradient
  // all-reduce adds them up like every other gradient. Null: local statistics.
  void set_statistics_reducer(StatisticsReducer* reducer) { reducer_ = reducer; }
  // Synchronized batch norm on a process without samples: the same two reductions as a
  // forward and backward, with zero sums and a zero count, and the same running-statistics
  // update from the global statistics, so the replicas stay identical.
  void ForwardWithoutSamples(const StepContext& ctx) override;
  void BackwardWithoutSamples(const StepContext& ctx) override;

 private:
  friend class BatchNormPlan;
  BatchNormOptions options_;
  int64_t channels_ = 0;
  bool input_is_4d_ = false;  // Set by the first MakePlan.
  // ForwardWithoutSamples' buffers (sized by the first MakePlan) and whether it reduced.
  std::vector<double> idle_sums_;
  std::vector<float> idle_mean_, idle_variance_;
  bool idle_synced_ = false;
  Parameter gamma_;
  Parameter beta_;
  StateBuffer running_mean_;
  StateBuffer running_variance_;
  StatisticsReducer* reducer_ = nullptr;
};

}  // namespace epochal::nn
