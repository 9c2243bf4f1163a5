// The layer interface.
//
// A Layer holds what does not depend on the batch size: its configuration, its
// parameters and running statistics. A LayerPlan holds what does: oneDNN primitive
// descriptors, primitives, reorders and the activation buffers for one input shape.
// A Model makes one plan per distinct batch size it sees and reuses it every step, so
// the hot path never creates a primitive or allocates.
//
// Every plan follows the same contract (llm.c style forward/backward pairs):
//   Forward(ctx, src)             writes dst(); caches what backward needs;
//   Backward(ctx, src, diff_dst)  writes diff_src() (if asked) and the parameter
//                                 gradients, which it overwrites (no accumulation).
// `src` is the previous plan's dst(); `diff_dst` has the layout of this plan's dst();
// diff_src() has the layout of `src`.
// Thread safety: none; a model and its plans are used by one thread at a time (oneDNN
// parallelizes inside each primitive).
#pragma once

#include <cstdint>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <span>
#include <string>
#include <vector>

#include "epochal/nn/dnnl_util.h"

namespace epochal::nn {

enum class Mode {
  // Dropout on, batch statistics, running statistics updated.
  kTrain,
  // As kTrain, but nothing is updated (the loss-gap probe's "training-mode" loss P_train).
  kTrainFrozen,
  // Batch statistics, no dropout, nothing updated (the probe's P_nodrop).
  kBatchStatisticsFrozen,
  // Batch statistics, no dropout; each batch's statistics are added to the running ones,
  // which the caller zeroed and later divides by the batch count (precise batch norm:
  // Model::BeginStatisticsRecompute).
  kRecomputeStatistics,
  // No dropout, running statistics.
  kInference,
};

inline bool UsesBatchStatistics(Mode m) { return m != Mode::kInference; }
inline bool UsesDropout(Mode m) { return m == Mode::kTrain || m == Mode::kTrainFrozen; }

// Per-step inputs a layer may need beyond its tensors.
struct StepContext {
  Mode mode = Mode::kTrain;
  uint64_t seed = 0;
  // Keys dropout masks together with the sample id, so masks do not depend on the
  // rank count or on where a run resumed.
  int64_t epoch = 0;
  // Dataset index of each sample in the batch, in batch order.
  std::span<const int64_t> sample_ids;
};

// Sums vectors over all processes of a data-parallel job, in place. Every process calls
// it the same number of times in the same order (it is a collective). Used by
// synchronized batch norm; implemented outside nn (see dist).
class StatisticsReducer {
 public:
  virtual ~StatisticsReducer() = default;
  virtual void AllreduceSum(std::span<double> values) = 0;
};

// A trainable tensor: value and gradient in the layout the layer's primitives prefer,
// plus the plain logical layout (oihw, oi, x) used for export and initialization.
struct Parameter {
  std::string name;
  dnnl::memory value;
  dnnl::memory grad;
  bool apply_weight_decay = false;
};

// A non-trainable tensor that belongs to the model state (batch-norm running statistics).
struct StateBuffer {
  std::string name;
  std::vector<float> value;
};

class LayerPlan {
 public:
  virtual ~LayerPlan() = default;
  LayerPlan() = default;
  LayerPlan(const LayerPlan&) = delete;
  LayerPlan& operator=(const LayerPlan&) = delete;

  virtual const dnnl::memory& dst() const = 0;
  virtual const dnnl::memory& diff_src() const = 0;
  virtual void Forward(const StepContext& ctx, const dnnl::memory& src) = 0;
  // Reads diff_dst and may overwrite it: a conv or dense layer with a fused ReLU applies
  // the ReLU's derivative to it in place (one pass less over the largest gradients), so
  // the caller must not read diff_dst afterwards. The model never does: diff_dst is the
  // next layer's diff_src, rewritten on the next step.
  virtual void Backward(const StepContext& ctx, const dnnl::memory& src,
                        const dnnl::memory& diff_dst, bool need_diff_src) = 0;
};

class Layer {
 public:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  // Short kind name ("conv", "batch_norm", ...).
  virtual std::string kind() const = 0;
  // Builds the primitives for input `src_md` (dims[0] is the batch size). The first
  // call also creates the parameters in the layout its primitives prefer.
  virtual std::unique_ptr<LayerPlan> MakePlan(DnnlContext& dnnl_ctx,
                                              const dnnl::memory::desc& src_md) = 0;
  // Initializes parameters (Glorot-uniform kernels, zero biases, unit/zero batch norm).
  // Valid after the first MakePlan.
  virtual void InitializeParameters(DnnlContext&, uint64_t /*seed*/) {}
  virtual std::vector<Parameter*> parameters() { return {}; }
  virtual std::vector<StateBuffer*> state() { return {}; }
  // Multiply-adds x 2 for one sample's forward pass with input dims `src_dims`
  // (batch dim included but ignored); elementwise layers count 0.
  virtual double ForwardFlopsPerSample(const dnnl::memory::dims& /*src_dims*/) const { return 0; }
  // A process without samples in this step (its share of a data-parallel global batch
  // is empty) still takes part in every collective the layer's Forward and Backward make,
  // contributing nothing, so the other processes do not wait for it forever. Layers
  // without collectives do nothing. Valid after the first MakePlan.
  virtual void ForwardWithoutSamples(const StepContext& /*ctx*/) {}
  virtual void BackwardWithoutSamples(const StepContext& /*ctx*/) {}

 private:
  std::string name_;
};

// Glorot-uniform values (plain layout) for a kernel with the given fans, keyed by
// (seed, layer name) so initialization does not depend on layer creation order.
std::vector<float> GlorotUniform(uint64_t seed, const std::string& layer_name, int64_t count,
                                 int64_t fan_in, int64_t fan_out);

}  // namespace epochal::nn
