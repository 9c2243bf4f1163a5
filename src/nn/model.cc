#include "epochal/nn/model.h"

#include <algorithm>
#include <sstream>

#include "epochal/core/error.h"
#include "epochal/core/tensor.h"
#include "epochal/nn/batch_norm.h"
#include "epochal/nn/conv2d.h"
#include "epochal/nn/dense.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/dropout.h"
#include "epochal/nn/flatten.h"
#include "epochal/nn/max_pool.h"
#include "epochal/nn/relu.h"

namespace epochal::nn {

using dnnl::memory;

struct Model::Plan {
  memory input;
  std::vector<memory::desc> src_descs;  // Input desc of each layer.
  std::vector<std::unique_ptr<LayerPlan>> layers;
  std::unique_ptr<SoftmaxCrossEntropyPlan> loss;
};

namespace {

std::string DefaultName(const v1::LayerSpec& spec, size_t index) {
  if (!spec.name().empty()) return spec.name();
  std::string kind;
  switch (spec.kind_case()) {
    case v1::LayerSpec::kConv:
      kind = "conv";
      break;
    case v1::LayerSpec::kBatchNorm:
      kind = "batch_norm";
      break;
    case v1::LayerSpec::kRelu:
      kind = "relu";
      break;
    case v1::LayerSpec::kMaxPool:
      kind = "max_pool";
      break;
    case v1::LayerSpec::kDropout:
      kind = "dropout";
      break;
    case v1::LayerSpec::kDense:
      kind = "dense";
      break;
    case v1::LayerSpec::kFlatten:
      kind = "flatten";
      break;
    case v1::LayerSpec::kSoftmaxCrossEntropy:
      kind = "softmax_cross_entropy";
      break;
    case v1::LayerSpec::KIND_NOT_SET:
      kind = "layer";
      break;
  }
  return kind + "_" + std::to_string(index);
}

}  // namespace

Model::Model(const v1::ModelSpec& spec, int64_t batch_size, uint64_t seed, Precision precision)
    : precision_(precision) {
  if (precision == Precision::kBf16 && !DispatchedIsaHasBf16()) {
    throw InputError("model: bf16 needs a CPU with AVX512-BF16 or AMX, but oneDNN dispatches " +
                     DispatchedIsaName());
  }
  const auto& in = spec.input();
  if (in.channels() <= 0 || in.height() <= 0 || in.width() <= 0) {
    throw InputError("model.input: channels, height and width must be positive");
  }
  input_dims_ = {in.channels(), in.height(), in.width()};
  num_classes_ = spec.num_classes();
  if (num_classes_ < 2) throw InputError("model.num_classes must be at least 2");
  const int n = spec.layers_size();
  if (n == 0 || spec.layers(n - 1).kind_case() != v1::LayerSpec::kSoftmaxCrossEntropy) {
    throw InputError("model.layers: the last layer must be softmax_cross_entropy");
  }
  // In bf16, every conv and dense layer but the last writes bf16 activations, so the
  // layers between them (batch norm, pooling, dropout, flatten) read and write bf16 too;
  // the last one's f32 output feeds the f32 loss.
  int last_weighted = -1;
  for (int i = 0; i + 1 < n; ++i) {
    const auto kind = spec.layers(i).kind_case();
    if (kind == v1::LayerSpec::kConv || kind == v1::LayerSpec::kDense) last_weighted = i;
  }
  for (int i = 0; i + 1 < n; ++i) {
    const v1::LayerSpec& l = spec.layers(i);
    const bool bf16_dst = precision == Precision::kBf16 && i != last_weighted;
    const std::string name = DefaultName(l, static_cast<size_t>(i));
    const bool relu_next = i + 1 < n && spec.layers(i + 1).kind_case() == v1::LayerSpec::kRelu;
    switch (l.kind_case()) {
      case v1::LayerSpec::kConv: {
        Conv2DOptions o;
        o.filters = l.conv().filters();
        o.kernel = l.conv().kernel();
        o.stride = l.conv().stride() > 0 ? l.conv().stride() : 1;
        if (l.conv().pad() > 0) o.pad = l.conv().pad();
        o.same = l.conv().padding() != "valid";
        o.bias = !l.conv().no_bias();
        o.fuse_relu = relu_next;
        o.precision = precision;
        o.bf16_dst = bf16_dst;
        layers_.push_back(std::make_unique<Conv2D>(name, o));
        if (relu_next) ++i;
        break;
      }
      case v1::LayerSpec::kDense: {
        DenseOptions o;
        o.units = l.dense().units();
        o.fuse_relu = relu_next;
        o.precision = precision;
        o.bf16_dst = bf16_dst;
        layers_.push_back(std::make_unique<Dense>(name, o));
        if (relu_next) ++i;
        break;
      }
      case v1::LayerSpec::kBatchNorm: {
        BatchNormOptions o;
        if (l.batch_norm().has_epsilon()) o.epsilon = l.batch_norm().epsilon();
        if (l.batch_norm().has_momentum()) o.momentum = l.batch_norm().momentum();
        layers_.push_back(std::make_unique<BatchNorm>(name, o));
        break;
      }
      case v1::LayerSpec::kRelu:
        layers_.push_back(std::make_unique<ReLU>(name));
        break;
      case v1::LayerSpec::kMaxPool: {
        const int64_t pool = l.max_pool().pool();
        layers_.push_back(std::make_unique<MaxPool2D>(
            name, pool, l.max_pool().stride() > 0 ? l.max_pool().stride() : pool));
        break;
      }
      case v1::LayerSpec::kDropout:
        layers_.push_back(std::make_unique<Dropout>(name, l.dropout().rate()));
        break;
      case v1::LayerSpec::kFlatten:
        layers_.push_back(std::make_unique<Flatten>(name));
        break;
      case v1::LayerSpec::kSoftmaxCrossEntropy:
        throw InputError(
            detail::StrCat("model.layers[", i, "]: softmax_cross_entropy must be the last layer"));
      case v1::LayerSpec::KIND_NOT_SET:
        throw InputError(detail::StrCat("model.layers[", i, "]: no layer kind set"));
    }
  }
  Plan& plan = PlanFor(batch_size);
  size_t n_params_so_far = 0;
  const memory::dims logits = plan.layers.back()->dst().get_desc().dims();
  if (logits.size() != 2 || logits[1] != num_classes_) {
    throw InputError(detail::StrCat("model: the last layer before the loss outputs ",
                                    logits.size() == 2 ? logits[1] : -1,
                                    " values per sample, but num_classes is ", num_classes_));
  }
  for (auto& layer : layers_) {
    first_param_.push_back(n_params_so_far);
    n_params_so_far += layer->parameters().size();
    layer->InitializeParameters(dnnl_, seed);
  }
  first_param_.push_back(n_params_so_far);
  dnnl_.stream.wait();
}

Model::~Model() = default;

Model::Plan& Model::PlanFor(int64_t batch_size) {
  auto it = plans_.find(batch_size);
  if (it != plans_.end()) return *it->second;
  EPOCHAL_CHECK(batch_size > 0);
  auto plan = std::make_unique<Plan>();
  const memory::desc input_md =
      PlainDesc({batch_size, input_dims_[0], input_dims_[1], input_dims_[2]});
  plan->input = memory(input_md, dnnl_.engine, DNNL_MEMORY_NONE);
  memory::desc src_md = input_md;
  for (auto& layer : layers_) {
    plan->src_descs.push_back(src_md);
    try {
      plan->layers.push_back(layer->MakePlan(dnnl_, src_md));
    } catch (const dnnl::error& e) {
      throw InputError(detail::StrCat("layer ", layer->name(),
                                      ": oneDNN cannot build it for input ",
                                      Shape(src_md.dims()).ToString(), ": ", e.what()));
    }
    src_md = plan->layers.back()->dst().get_desc();
  }
  if (src_md.dims().size() != 2) {
    throw InputError(
        "model: the layer before softmax_cross_entropy must output N x classes "
        "(add flatten and dense layers)");
  }
  plan->loss = std::make_unique<SoftmaxCrossEntropyPlan>(dnnl_, src_md);
  return *plans_.emplace(batch_size, std::move(plan)).first->second;
}

BatchResult Model::Forward(const StepContext& ctx, const float* images,
                           std::span<const int32_t> labels) {
  const auto batch = static_cast<int64_t>(labels.size());
  Plan& plan = PlanFor(batch);
  plan.input.set_data_handle(const_cast<float*>(images));
  const memory* src = &plan.input;
  for (auto& layer : plan.layers) {
    layer->Forward(ctx, *src);
    src = &layer->dst();
  }
  BatchResult r;
  r.loss_sum = plan.loss->Forward(*src, labels);
  r.correct = plan.loss->correct();
  r.count = batch;
  last_plan_ = &plan;
  last_labels_ = labels;
  return r;
}

void Model::SetStatisticsReducer(StatisticsReducer* reducer) {
  for (auto& layer : layers_) {
    if (auto* bn = dynamic_cast<BatchNorm*>(layer.get())) bn->set_statistics_reducer(reducer);
  }
}

void Model::Backward(const StepContext& ctx, float grad_scale, const GradientsReady& ready) {
  EPOCHAL_CHECK(last_plan_ != nullptr, "Backward before Forward");
  Plan& plan = *last_plan_;
  plan.loss->Backward(last_labels_, grad_scale);
  const memory* diff = &plan.loss->diff_src();
  for (size_t i = plan.layers.size(); i-- > 0;) {
    const memory& src = i == 0 ? plan.input : plan.layers[i - 1]->dst();
    plan.layers[i]->Backward(ctx, src, *diff, i > 0);
    diff = &plan.layers[i]->diff_src();
    if (ready && first_param_[i] != first_param_[i + 1]) {
      dnnl_.stream.wait();  // The gradients must be in memory before anyone reads them.
      ready(first_param_[i], first_param_[i + 1]);
    }
  }
  dnnl_.stream.wait();
}

void Model::ForwardWithoutSamples(const StepContext& ctx) {
  for (auto& layer : layers_) layer->ForwardWithoutSamples(ctx);
  last_plan_ = nullptr;  // Nothing for Backward, Logits or the outputs to read.
}

void Model::BackwardWithoutSamples(const StepContext& ctx, const GradientsReady& ready) {
  for (size_t i = layers_.size(); i-- > 0;) {
    layers_[i]->BackwardWithoutSamples(ctx);
    for (Parameter* p : layers_[i]->parameters()) {
      const std::span<float> grad = Span(p->grad);
      std::fill(grad.begin(), grad.end(), 0.0f);
    }
    if (ready && first_param_[i] != first_param_[i + 1])
      ready(first_param_[i], first_param_[i + 1]);
  }
}

std::vector<float> Model::Logits() {
  EPOCHAL_CHECK(last_plan_ != nullptr, "Logits() before Forward()");
  return ToPlain(dnnl_, last_plan_->layers.back()->dst());
}

std::span<const float> Model::probabilities() const { return last_plan_->loss->probabilities(); }
std::span<const float> Model::sample_losses() const { return last_plan_->loss->sample_losses(); }
std::span<const int32_t> Model::predictions() const { return last_plan_->loss->predictions(); }

std::vector<Parameter*> Model::parameters() {
  std::vector<Parameter*> out;
  for (auto& layer : layers_) {
    for (Parameter* p : layer->parameters()) out.push_back(p);
  }
  return out;
}

std::vector<StateBuffer*> Model::state() {
  std::vector<StateBuffer*> out;
  for (auto& layer : layers_) {
    for (StateBuffer* s : layer->state()) out.push_back(s);
  }
  return out;
}

int64_t Model::NumParameters() {
  int64_t n = 0;
  for (Parameter* p : parameters()) n += Shape(p->value.get_desc().dims()).NumElements();
  return n;
}

double Model::ForwardFlopsPerSample() const {
  const Plan& plan = *plans_.begin()->second;
  double flops = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    flops += layers_[i]->ForwardFlopsPerSample(plan.src_descs[i].dims());
  }
  return flops;
}

double Model::TrainingFlopsPerSample() const {
  const Plan& plan = *plans_.begin()->second;
  double flops = 0;
  bool first_with_weights = true;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const double f = layers_[i]->ForwardFlopsPerSample(plan.src_descs[i].dims());
    if (f == 0) continue;
    // Forward and backward-weights always; backward-data except for the first such
    // layer, whose input gradient nobody needs.
    flops += (first_with_weights ? 2.0 : 3.0) * f;
    first_with_weights = false;
  }
  return flops;
}

std::string Model::Summary() {
  const Plan& plan = *plans_.begin()->second;
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "%-28s %-22s %12s\n", "Layer (type)", "Output shape", "Params");
  os << line;
  int64_t total = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    memory::dims d = plan.layers[i]->dst().get_desc().dims();
    d[0] = -1;
    int64_t params = 0;
    for (Parameter* p : layers_[i]->parameters()) {
      params += Shape(p->value.get_desc().dims()).NumElements();
    }
    total += params;
    std::string shape = Shape(d).ToString();
    std::snprintf(line, sizeof line, "%-28s %-22s %12lld\n",
                  (layers_[i]->name() + " (" + layers_[i]->kind() + ")").c_str(), shape.c_str(),
                  static_cast<long long>(params));
    os << line;
  }
  os << "Total parameters: " << total << "\n";
  return os.str();
}

}  // namespace epochal::nn
