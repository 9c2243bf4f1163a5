#include "epochal/onnx/onnx_export.h"

#include <cstring>
#include <map>

#include "epochal/core/error.h"
#include "epochal/nn/batch_norm.h"
#include "epochal/nn/conv2d.h"
#include "epochal/nn/dense.h"
#include "epochal/nn/max_pool.h"
#include "onnx/onnx.pb.h"

namespace epochal::onnx_export {
namespace {

// Builds the graph node by node, tracking the current tensor and its shape.
class GraphBuilder {
 public:
  GraphBuilder(::onnx::GraphProto* graph, const v1::ModelWeights& weights) : graph_(graph) {
    for (const v1::NamedTensor& t : weights.tensors()) tensors_[t.name()] = &t;
  }

  // The weights tensor `layer`/`kind` as an initializer named like it, with `dims`
  // (the stored values, reshaped: their count must match). Returns its name.
  std::string Initializer(const nn::Layer& layer, const std::string& kind,
                          const std::vector<int64_t>& dims) {
    const std::string name = layer.name() + "/" + kind;
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      throw InputError("layer '" + layer.name() + "': the weights have no tensor " + name);
    }
    int64_t count = 1;
    for (int64_t d : dims) count *= d;
    if (it->second->values_size() != count) {
      throw InputError("layer '" + layer.name() + "': tensor " + name + " has " +
                       std::to_string(it->second->values_size()) + " values, the layer needs " +
                       std::to_string(count));
    }
    ::onnx::TensorProto* t = graph_->add_initializer();
    t->set_name(name);
    t->set_data_type(::onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    std::string raw(static_cast<size_t>(count) * sizeof(float), '\0');
    std::memcpy(raw.data(), it->second->values().data(), raw.size());
    t->set_raw_data(std::move(raw));
    return name;
  }

  // Appends op(current, extra...) -> a new tensor named `output`, which becomes current.
  ::onnx::NodeProto* Node(const std::string& op, const std::string& name,
                          const std::vector<std::string>& extra_inputs,
                          const std::string& output = "") {
    ::onnx::NodeProto* node = graph_->add_node();
    node->set_op_type(op);
    node->set_name(name);
    node->add_input(current_);
    for (const std::string& in : extra_inputs) node->add_input(in);
    current_ = output.empty() ? name + ":out" : output;
    node->add_output(current_);
    return node;
  }

  static void Ints(::onnx::NodeProto* node, const char* name, const std::vector<int64_t>& v) {
    ::onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void Int(::onnx::NodeProto* node, const char* name, int64_t v) {
    ::onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void Float(::onnx::NodeProto* node, const char* name, float v) {
    ::onnx::AttributeProto* a = node->add_attribute();
    a->set_name(name);
    a->set_type(::onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }

  std::string current_ = kInputName;
  // N, C, H, W (4-D) or N, K (2-D); N is 1 here, symbolic in the graph.
  std::vector<int64_t> shape_;

 private:
  ::onnx::GraphProto* graph_;
  std::map<std::string, const v1::NamedTensor*> tensors_;
};

void AddValueInfo(::onnx::ValueInfoProto* v, const std::string& name,
                  const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* tensor = v->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(::onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

std::string Unsupported(const nn::Layer& layer) {
  return "layer '" + layer.name() + "' (" + layer.kind() +
         "): ONNX export does not support this layer type (supported: conv, batch_norm, relu, "
         "max_pool, dropout, flatten, dense)";
}

}  // namespace

std::string ExportOnnx(const ModelDescription& model, const v1::ModelWeights& weights) {
  if (model.input_dims.size() != 3) throw InputError("model.input: expected C, H, W");
  ::onnx::ModelProto proto;
  proto.set_ir_version(kIrVersion);
  proto.set_producer_name("epochal");
  proto.set_producer_version("0.1.0");
  proto.set_doc_string(
      "Exported by epochal export: inference form (running batch-norm "
      "statistics, no dropout), softmax at the end.");
  ::onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpsetVersion);
  ::onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name(model.name.empty() ? "epochal" : model.name);
  AddValueInfo(graph->add_input(), kInputName, model.input_dims);

  GraphBuilder g(graph, weights);
  g.shape_ = {1, model.input_dims[0], model.input_dims[1], model.input_dims[2]};
  const nn::Layer* last_dense = nullptr;
  for (size_t i = 0; i < model.layers.size(); ++i) {
    const nn::Layer& layer = *model.layers[i];
    const std::string& name = layer.name();
    const std::string kind = layer.kind();
    const bool is_last = i + 1 == model.layers.size();
    if (const auto* conv = dynamic_cast<const nn::Conv2D*>(&layer)) {
      if (g.shape_.size() != 4)
        throw InputError("layer '" + name + "' (conv): needs N,C,H,W input");
      const auto& o = conv->options();
      const dnnl::memory::dims src(g.shape_.begin(), g.shape_.end());
      const nn::Padding2D pad = conv->PaddingFor(src);
      std::vector<std::string> inputs = {
          g.Initializer(layer, "kernel", {o.filters, g.shape_[1], o.kernel, o.kernel})};
      if (o.bias) inputs.push_back(g.Initializer(layer, "bias", {o.filters}));
      ::onnx::NodeProto* node = g.Node("Conv", name, inputs);
      GraphBuilder::Ints(node, "kernel_shape", {o.kernel, o.kernel});
      GraphBuilder::Ints(node, "strides", {o.stride, o.stride});
      GraphBuilder::Ints(node, "pads", {pad.top, pad.left, pad.bottom, pad.right});
      GraphBuilder::Ints(node, "dilations", {1, 1});
      GraphBuilder::Int(node, "group", 1);
      const dnnl::memory::dims dst = conv->DstDims(src);
      g.shape_.assign(dst.begin(), dst.end());
      if (o.fuse_relu) g.Node("Relu", name + "/relu", {});
    } else if (const auto* bn = dynamic_cast<const nn::BatchNorm*>(&layer)) {
      const int64_t c = g.shape_[1];
      ::onnx::NodeProto* node = g.Node(
          "BatchNormalization", name,
          {g.Initializer(layer, "gamma", {c}), g.Initializer(layer, "beta", {c}),
           g.Initializer(layer, "moving_mean", {c}), g.Initializer(layer, "moving_variance", {c})});
      GraphBuilder::Float(node, "epsilon", bn->options().epsilon);
    } else if (kind == "relu") {
      g.Node("Relu", name, {});
    } else if (const auto* pool = dynamic_cast<const nn::MaxPool2D*>(&layer)) {
      if (g.shape_.size() != 4) {
        throw InputError("layer '" + name + "' (max_pool): needs N,C,H,W input");
      }
      ::onnx::NodeProto* node = g.Node("MaxPool", name, {});
      GraphBuilder::Ints(node, "kernel_shape", {pool->pool(), pool->pool()});
      GraphBuilder::Ints(node, "strides", {pool->stride(), pool->stride()});
      g.shape_ = {g.shape_[0], g.shape_[1], (g.shape_[2] - pool->pool()) / pool->stride() + 1,
                  (g.shape_[3] - pool->pool()) / pool->stride() + 1};
    } else if (kind == "dropout") {
      continue;  // The identity in inference.
    } else if (kind == "flatten") {
      GraphBuilder::Int(g.Node("Flatten", name, {}), "axis", 1);
      int64_t k = 1;
      for (size_t d = 1; d < g.shape_.size(); ++d) k *= g.shape_[d];
      g.shape_ = {g.shape_[0], k};
    } else if (const auto* dense = dynamic_cast<const nn::Dense*>(&layer)) {
      if (g.shape_.size() != 2) {
        GraphBuilder::Int(g.Node("Flatten", name + "/flatten", {}), "axis", 1);
        int64_t k = 1;
        for (size_t d = 1; d < g.shape_.size(); ++d) k *= g.shape_[d];
        g.shape_ = {g.shape_[0], k};
      }
      const int64_t units = dense->options().units;
      const bool produces_logits = is_last;
      ::onnx::NodeProto* node =
          g.Node("Gemm", name,
                 {g.Initializer(layer, "kernel", {units, g.shape_[1]}),
                  g.Initializer(layer, "bias", {units})},
                 produces_logits && !dense->options().fuse_relu ? kLogitsName : "");
      GraphBuilder::Int(node, "transB", 1);
      g.shape_ = {g.shape_[0], units};
      if (dense->options().fuse_relu) {
        g.Node("Relu", name + "/relu", {}, produces_logits ? kLogitsName : "");
      }
      last_dense = dense;
    } else {
      throw InputError(Unsupported(layer));
    }
  }
  if (g.current_ != kLogitsName) {
    // The loss takes whatever the last layer produced (a dropout or batch norm after the
    // last dense layer, say): name it the logits.
    if (last_dense == nullptr) throw InputError("model: no dense layer produces the logits");
    g.Node("Identity", "logits", {}, kLogitsName);
  }
  if (g.shape_.size() != 2 || g.shape_[1] != model.num_classes) {
    throw InputError("model: the last layer gives " + std::to_string(g.shape_.back()) +
                     " outputs, not num_classes = " + std::to_string(model.num_classes));
  }
  GraphBuilder::Int(g.Node("Softmax", "softmax", {}, kProbabilitiesName), "axis", 1);
  AddValueInfo(graph->add_output(), kProbabilitiesName, {model.num_classes});
  AddValueInfo(graph->add_output(), kLogitsName, {model.num_classes});
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) throw Error("ONNX model: serialization failed");
  return bytes;
}

}  // namespace epochal::onnx_export
