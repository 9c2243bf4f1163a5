// ONNX export of a trained sequential model (`epochal export --format onnx`).
//
// The graph is the model in inference form: conv (with its fused ReLU as a Relu node),
// BatchNormalization with the running statistics, Relu, MaxPool, Flatten, Gemm for dense
// layers; dropout is left out (it is the identity in inference); a Softmax ends the graph.
// Input "input" is float [batch, C, H, W] (batch symbolic) holding the pixels scaled as
// training scales them (0..255 / 255); outputs are "probabilities" [batch, K] (softmax)
// and "logits" [batch, K] (the last dense layer's output). Opset 13, IR version 7. The
// messages come from the onnx.proto that Debian's libonnx-dev installs, compiled by
// protoc at build time (nothing vendored).
// Thread safety: reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "epochal/nn/layer.h"
#include "epochal/v1/weights.pb.h"

namespace epochal::onnx_export {

inline constexpr int64_t kOpsetVersion = 13;
inline constexpr int64_t kIrVersion = 7;
inline constexpr char kInputName[] = "input";
inline constexpr char kProbabilitiesName[] = "probabilities";
inline constexpr char kLogitsName[] = "logits";

struct ModelDescription {
  std::vector<const nn::Layer*> layers;  // In order, the loss excluded; not owned.
  std::vector<int64_t> input_dims;       // C, H, W.
  int64_t num_classes = 0;
  std::string name;  // The graph's name (the config's).
};

// The serialized onnx.ModelProto. `weights` supplies every parameter and running
// statistic by name ("<layer>/kernel", ...), in plain layout. Throws InputError naming
// the layer for a layer type ONNX export does not support, and naming the tensor for a
// missing tensor or one whose size does not fit the layer.
std::string ExportOnnx(const ModelDescription& model, const v1::ModelWeights& weights);

}  // namespace epochal::onnx_export
