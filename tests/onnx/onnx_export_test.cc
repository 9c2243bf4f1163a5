#include "epochal/onnx/onnx_export.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/core/tensor.h"
#include "epochal/nn/model.h"
#include "onnx/onnx.pb.h"

namespace epochal::onnx_export {
namespace {

// MiniVGGNet's structure, small, with a strided "same" conv (asymmetric padding) and a
// "valid" one.
constexpr char kSpec[] = R"pb(
  input { channels: 1 height: 9 width: 9 }
  num_classes: 3
  layers {
    name: "c1"
    conv { filters: 4 kernel: 3 padding: "same" stride: 2 }
  }
  layers { relu {} }
  layers {
    name: "b1"
    batch_norm { epsilon: 0.002 }
  }
  layers {
    name: "c2"
    conv { filters: 4 kernel: 2 padding: "valid" }
  }
  layers {
    name: "r2"
    relu {}
  }
  layers {
    name: "p1"
    max_pool { pool: 2 }
  }
  layers {
    name: "d1"
    dropout { rate: 0.25 }
  }
  layers {
    name: "f"
    flatten {}
  }
  layers {
    name: "fc1"
    dense { units: 6 }
  }
  layers { relu {} }
  layers {
    name: "b2"
    batch_norm {}
  }
  layers {
    name: "d2"
    dropout { rate: 0.5 }
  }
  layers {
    name: "fc2"
    dense { units: 3 }
  }
  layers { softmax_cross_entropy {} }
)pb";

struct Fixture {
  Fixture() {
    v1::ModelSpec spec;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(kSpec, &spec));
    model = std::make_unique<nn::Model>(spec, 2, 7);
    for (nn::Parameter* p : model->parameters()) {
      v1::NamedTensor* t = weights.add_tensors();
      t->set_name(p->name);
      for (float v : nn::ToPlain(model->dnnl(), p->value)) t->add_values(v);
    }
    for (nn::StateBuffer* s : model->state()) {
      v1::NamedTensor* t = weights.add_tensors();
      t->set_name(s->name);
      for (float v : s->value) t->add_values(v);
    }
    for (const auto& layer : model->layers()) description.layers.push_back(layer.get());
    description.input_dims = model->input_dims();
    description.num_classes = model->num_classes();
    description.name = "tiny";
  }
  std::unique_ptr<nn::Model> model;
  v1::ModelWeights weights;
  ModelDescription description;
};

const ::onnx::AttributeProto* Attribute(const ::onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

TEST(OnnxExportTest, WritesTheInferenceGraph) {
  Fixture fx;
  ::onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(ExportOnnx(fx.description, fx.weights)));
  EXPECT_EQ(proto.ir_version(), kIrVersion);
  ASSERT_EQ(proto.opset_import_size(), 1);
  EXPECT_EQ(proto.opset_import(0).version(), 13);
  std::vector<std::string> ops;
  for (const auto& n : proto.graph().node()) ops.push_back(n.op_type());
  const std::vector<std::string> expected = {
      "Conv", "Relu", "BatchNormalization", "Conv", "Relu",   "MaxPool", "Flatten",
      "Gemm", "Relu", "BatchNormalization", "Gemm", "Softmax"};
  EXPECT_EQ(ops, expected);
  // "same" with stride 2 on 9 pixels: output 5, padding 1 on each side.
  const auto* pads = Attribute(proto.graph().node(0), "pads");
  ASSERT_NE(pads, nullptr);
  EXPECT_EQ(std::vector<int64_t>(pads->ints().begin(), pads->ints().end()),
            (std::vector<int64_t>{1, 1, 1, 1}));
  const auto* eps = Attribute(proto.graph().node(2), "epsilon");
  ASSERT_NE(eps, nullptr);
  EXPECT_FLOAT_EQ(eps->f(), 0.002f);
  EXPECT_EQ(proto.graph().node(10).output(0), kLogitsName);
  EXPECT_EQ(proto.graph().node(11).output(0), kProbabilitiesName);
  ASSERT_EQ(proto.graph().output_size(), 2);
  EXPECT_EQ(proto.graph().output(0).name(), kProbabilitiesName);
  EXPECT_EQ(proto.graph().input(0).name(), kInputName);
  // Every parameter and running statistic is an initializer, with its values.
  EXPECT_EQ(proto.graph().initializer_size(), fx.weights.tensors_size());
  for (const auto& init : proto.graph().initializer()) {
    int64_t count = 1;
    for (int64_t d : init.dims()) count *= d;
    EXPECT_EQ(init.raw_data().size(), static_cast<size_t>(count) * sizeof(float)) << init.name();
  }
}

TEST(OnnxExportTest, MissingTensorNamesTheLayerAndTensor) {
  Fixture fx;
  fx.weights.mutable_tensors()->erase(fx.weights.mutable_tensors()->begin());
  try {
    ExportOnnx(fx.description, fx.weights);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'c1'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("c1/kernel"), std::string::npos) << e.what();
  }
}

// A layer kind the exporter does not know.
class MysteryLayer final : public nn::Layer {
 public:
  MysteryLayer() : Layer("odd1") {}
  std::string kind() const override { return "mystery"; }
  std::unique_ptr<nn::LayerPlan> MakePlan(nn::DnnlContext&, const dnnl::memory::desc&) override {
    return nullptr;
  }
};

TEST(OnnxExportTest, UnsupportedLayerTypeNamesTheLayer) {
  Fixture fx;
  MysteryLayer odd;
  fx.description.layers.insert(fx.description.layers.begin() + 2, &odd);
  try {
    ExportOnnx(fx.description, fx.weights);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("layer 'odd1' (mystery)"), std::string::npos) << what;
    EXPECT_NE(what.find("does not support"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace epochal::onnx_export
