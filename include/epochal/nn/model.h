// A sequential model built from a ModelSpec (proto/epochal/v1/config.proto).
//
// The model owns its layers (parameters, running statistics) and, per distinct batch
// size, a plan: the oneDNN primitives and activation buffers for that shape, made on
// first use and reused on every later step. A ReLU that directly follows a conv or
// dense layer is fused into it as a post-op. The last layer of the spec must be
// softmax cross-entropy; it is kept apart from the layer list as the loss.
// Thread safety: none; one thread drives a model (oneDNN threads inside primitives).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "epochal/nn/layer.h"
#include "epochal/nn/precision.h"
#include "epochal/nn/softmax_cross_entropy.h"
#include "epochal/v1/config.pb.h"

namespace epochal::nn {

struct BatchResult {
  double loss_sum = 0.0;  // Sum of per-sample cross-entropy losses.
  int64_t correct = 0;
  int64_t count = 0;
};

class Model {
 public:
  // Builds the layers, makes the plan for `batch_size` (which fixes the parameter
  // layouts) and initializes parameters from `seed`. Throws InputError for a spec
  // that cannot be built, naming the layer. `precision` sets the conv and dense layers'
  // arithmetic (precision.h); parameters, state and everything else stay f32.
  Model(const v1::ModelSpec& spec, int64_t batch_size, uint64_t seed,
        Precision precision = Precision::kF32);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Runs the forward pass and the loss on `labels.size()` samples. `images` holds
  // [B, C, H, W] floats in plain layout and must stay valid until Backward returns.
  BatchResult Forward(const StepContext& ctx, const float* images, std::span<const int32_t> labels);
  // Called during Backward as soon as a layer's parameter gradients are final, with the
  // range [first, end) of indices into parameters(); layers run last to first, so
  // ranges arrive in decreasing order. Data-parallel training starts all-reducing them
  // while the remaining layers run.
  using GradientsReady = std::function<void(size_t first, size_t end)>;

  // Backward pass of the last Forward: parameter gradients of the loss
  // grad_scale * sum of per-sample losses (grad_scale = 1/global batch for a mean).
  void Backward(const StepContext& ctx, float grad_scale, const GradientsReady& ready = {});

  // A data-parallel process whose share of this step's global batch is empty: takes part
  // in every collective Forward and Backward would make (synchronized batch norm), with
  // nothing to add, so the other processes are not left waiting. BackwardWithoutSamples
  // zeroes the parameter gradients and calls `ready` for the same ranges, in the same
  // order, as Backward.
  void ForwardWithoutSamples(const StepContext& ctx);
  void BackwardWithoutSamples(const StepContext& ctx, const GradientsReady& ready = {});

  // Makes every batch-norm layer normalize with statistics summed over all processes
  // through `reducer` (synchronized batch norm). Null turns it off. Not owned.
  void SetStatisticsReducer(StatisticsReducer* reducer);
  // Waits for every queued primitive.
  void Synchronize() { dnnl_.stream.wait(); }

  // Outputs of the last Forward, [B, K] and [B].
  std::span<const float> probabilities() const;
  std::span<const float> sample_losses() const;
  std::span<const int32_t> predictions() const;
  // The last Forward's logits (the input of the softmax), [B, K] row-major, copied out
  // of the primitives' layout (ONNX export checks; not for the hot path).
  std::vector<float> Logits();

  std::vector<Parameter*> parameters();
  std::vector<StateBuffer*> state();
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  int64_t NumParameters();
  // Forward multiply-adds x 2 per sample, and the training total (forward, backward
  // data except for the first layer, backward weights).
  double ForwardFlopsPerSample() const;
  double TrainingFlopsPerSample() const;
  int64_t num_classes() const { return num_classes_; }
  const std::vector<int64_t>& input_dims() const { return input_dims_; }  // C, H, W
  // A Keras-style summary table: layer, output shape, parameters.
  std::string Summary();
  DnnlContext& dnnl() { return dnnl_; }
  Precision precision() const { return precision_; }

 private:
  struct Plan;
  Plan& PlanFor(int64_t batch_size);

  DnnlContext dnnl_;
  Precision precision_ = Precision::kF32;
  int64_t num_classes_ = 0;
  std::vector<int64_t> input_dims_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::map<int64_t, std::unique_ptr<Plan>> plans_;
  // parameters() index of each layer's first parameter, plus the total at the end.
  std::vector<size_t> first_param_;
  Plan* last_plan_ = nullptr;
  std::span<const int32_t> last_labels_;
};

// How many times as fast a training step (forward and backward, no optimizer) of `spec`
// at `batch_size` runs in bf16 as in f32 on this machine and thread count: "auto"
// precision's probe (precision.h). Builds one model of each precision, runs one warm-up
// step each (oneDNN makes its kernels there), then `steps` steps of each, alternating, so
// that a burst of load from other processes falls on both alike, and divides the fastest
// f32 step by the fastest bf16 step. Synthetic images and labels; nothing is kept. Takes
// about 2 * (steps + 1) steps' time. Needs native bf16 (DispatchedIsaHasBf16).
double MeasureBf16StepSpeedup(const v1::ModelSpec& spec, int64_t batch_size, uint64_t seed,
                              int steps = 4);

}  // namespace epochal::nn
