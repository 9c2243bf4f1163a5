// Validation walks the config and, in step, the ParseInfoTree the text parser filled, so
// that every error can point at the text that caused it. A field the text never set has
// no location of its own; such errors point at the enclosing message, the nearest place
// where the user can add the field.
#include "epochal/train/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/util/json_util.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/core/file_read.h"

namespace epochal::train {
namespace {

using detail::StrCat;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::TextFormat;
using ParseInfoTree = TextFormat::ParseInfoTree;

constexpr int32_t kDefaultEpochs = 25;
constexpr int32_t kDefaultBatchSize = 32;
constexpr float kDefaultLearningRate = 0.01f;
constexpr char kDefaultDataDir[] = "/usr/share/datasets/fashion-mnist";
constexpr char kDefaultTrainImages[] = "train-images-idx3-ubyte.gz";
constexpr char kDefaultTrainLabels[] = "train-labels-idx1-ubyte.gz";
constexpr char kDefaultValImages[] = "t10k-images-idx3-ubyte.gz";
constexpr char kDefaultValLabels[] = "t10k-labels-idx1-ubyte.gz";
constexpr float kDefaultBatchNormEpsilon = 1e-3f;
constexpr float kDefaultBatchNormMomentum = 0.99f;
// Above this many classes, default names would cost more memory than they are worth.
constexpr int32_t kMaxDefaultClassNames = 100000;
// The evaluation batch the trainer plans beside the training batch (kEvalBatchSize in
// src/train/trainer.cc); part of the memory estimate.
constexpr double kEstimateEvalBatch = 128;
// Errors beyond this many are counted, not listed.
constexpr size_t kMaxListedErrors = 20;

// The descriptor of field `number` of message type M; numbers come from the generated
// k...FieldNumber constants, so a misspelt field fails to compile.
template <typename M>
const FieldDescriptor* Field(int number) {
  const FieldDescriptor* field = M::descriptor()->FindFieldByNumber(number);
  EPOCHAL_CHECK(field != nullptr, M::descriptor()->full_name(), " field ", number);
  return field;
}

// The oneof member name of the layer's kind ("conv", "max_pool", ...); empty if unset.
std::string KindName(const v1::LayerSpec& layer) {
  if (layer.kind_case() == v1::LayerSpec::KIND_NOT_SET) return "";
  return v1::LayerSpec::descriptor()->FindFieldByNumber(layer.kind_case())->name();
}

// "12.3 M", "1.67 G", "950": a large count, readable.
std::string FormatCount(double n) {
  char text[32];
  if (n >= 1e9) {
    std::snprintf(text, sizeof text, "%.3g G", n / 1e9);
  } else if (n >= 1e6) {
    std::snprintf(text, sizeof text, "%.3g M", n / 1e6);
  } else {
    std::snprintf(text, sizeof text, "%.0f", n);
  }
  return text;
}

// "8 GiB", "223 MiB", "1.43 TiB": a byte count, readable.
std::string FormatSize(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  size_t unit = 0;
  while (bytes >= 1024 && unit + 1 < std::size(units)) {
    bytes /= 1024;
    ++unit;
  }
  char text[48];
  std::snprintf(text, sizeof text, bytes >= 1000 ? "%.0f %s" : "%.3g %s", bytes, units[unit]);
  return text;
}

// A 0-based text position as protobuf reports it; line -1 when unknown.
struct Location {
  int line = -1;
  int column = -1;
};

// "SOURCE:LINE:COLUMN: " (1-based), or "SOURCE: " when the location is unknown.
std::string Prefix(const std::string& source, const Location& at) {
  std::string prefix = source;
  if (at.line >= 0) prefix += StrCat(":", at.line + 1, ":", at.column + 1);
  if (!prefix.empty()) prefix += ": ";
  return prefix;
}

// Collects the text parser's errors (syntax, unknown fields, out-of-range values).
class ParseErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  explicit ParseErrorCollector(const std::string& source) : source_(source) {}

  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    std::string text = Prefix(source_, {line, line >= 0 ? column : -1}) + message;
    // The tokenizer names the unexpected token, which at the end of the text is empty.
    if (text.ends_with("got: ")) text += "end of input";
    errors_.push_back(std::move(text));
  }

  // All errors, one per line.
  std::string Text() const {
    std::string text;
    for (const std::string& error : errors_) {
      if (!text.empty()) text += "\n";
      text += error;
    }
    return text;
  }

 private:
  const std::string& source_;
  std::vector<std::string> errors_;
};

// One message of the config under validation, with where the text put it.
struct Node {
  const Message* message = nullptr;
  // Locations of the message's own fields; null without locations or when the text did
  // not set this message.
  const ParseInfoTree* tree = nullptr;
  // Where the message starts in the text (its field name); the enclosing message's
  // location when the text did not set it.
  Location at;
  // Field path from the top level, e.g. "model.layers[3].conv"; empty at the top level.
  std::string path;
};

// Walks a config, collecting every violated constraint with its location.
class Validator {
 public:
  Validator(const std::string& source, const ParseInfoTree* locations)
      : source_(source), locations_(locations) {}

  Node Root(const v1::ExperimentConfig& config) const {
    Node root;
    root.message = &config;
    root.tree = locations_;
    if (locations_ != nullptr) root.at = {0, 0};
    return root;
  }

  // The message held in `field` of `parent` (element `index` when repeated).
  Node Child(const Node& parent, const FieldDescriptor* field, const Message& child,
             int index = -1) const {
    Node node;
    node.message = &child;
    node.at = FieldLocation(parent, field, index);
    node.path = FieldPath(parent, field, index);
    if (parent.tree != nullptr) node.tree = parent.tree->GetTreeForNested(field, index);
    return node;
  }

  // Where the text set `field` of `parent`, or the parent's location if it did not.
  static Location FieldLocation(const Node& parent, const FieldDescriptor* field, int index) {
    if (parent.tree == nullptr) return parent.at;
    TextFormat::ParseLocation found;
    if (!field->is_repeated()) {
      found = parent.tree->GetLocation(field, -1);
    } else {
      const int size = parent.message->GetReflection()->FieldSize(*parent.message, field);
      if (index < 0 || index >= size) return parent.at;
      // The parser records one location per occurrence of the field name, so the list
      // syntax `f: [a, b]` gives one location for several values. Use per-value
      // locations only when there is exactly one per value; else point at the first.
      const bool one_per_value = parent.tree->GetLocation(field, size - 1).line >= 0 &&
                                 parent.tree->GetLocation(field, size).line < 0;
      found = parent.tree->GetLocation(field, one_per_value ? index : 0);
    }
    if (found.line < 0) return parent.at;
    return {found.line, found.column};
  }

  static std::string FieldPath(const Node& parent, const FieldDescriptor* field, int index) {
    std::string path = parent.path.empty() ? field->name() : parent.path + "." + field->name();
    if (index >= 0) path += StrCat("[", index, "]");
    return path;
  }

  // Reports a problem with `field` of `parent`.
  void Fail(const Node& parent, const FieldDescriptor* field, const std::string& what,
            int index = -1) {
    Fail(FieldLocation(parent, field, index), FieldPath(parent, field, index), what);
  }

  // Reports a problem with the message `node` as a whole.
  void Fail(const Node& node, const std::string& what) { Fail(node.at, node.path, what); }

  // Fails unless `ok`; `what` describes the rule, the value is appended.
  template <typename T>
  void Require(bool ok, const Node& parent, const FieldDescriptor* field, const char* what,
               T value) {
    if (!ok) Fail(parent, field, StrCat(what, " (got ", value, ")"));
  }

  void Positive(const Node& parent, const FieldDescriptor* field, int64_t value) {
    Require(value > 0, parent, field, "must be > 0", value);
  }
  void NonNegative(const Node& parent, const FieldDescriptor* field, int64_t value) {
    Require(value >= 0, parent, field, "must be >= 0", value);
  }
  void NonNegativeFinite(const Node& parent, const FieldDescriptor* field, float value) {
    Require(value >= 0 && std::isfinite(value), parent, field, "must be finite and >= 0", value);
  }
  void PositiveFinite(const Node& parent, const FieldDescriptor* field, float value) {
    Require(value > 0 && std::isfinite(value), parent, field, "must be finite and > 0", value);
  }
  // [0, 1]; written so that NaN fails.
  void ClosedUnitInterval(const Node& parent, const FieldDescriptor* field, float value) {
    Require(value >= 0 && value <= 1, parent, field, "must be in [0, 1]", value);
  }
  // [0, 1); written so that NaN fails.
  void UnitInterval(const Node& parent, const FieldDescriptor* field, float value) {
    Require(value >= 0 && value < 1, parent, field, "must be in [0, 1)", value);
  }

  // Reports a problem at `at` with the value at `path`.
  void Fail(const Location& at, const std::string& path, const std::string& what) {
    errors_.push_back(Prefix(source_, at) + (path.empty() ? "" : path + ": ") + what);
  }

  size_t error_count() const { return errors_.size(); }

  void ThrowIfFailed() const {
    if (errors_.empty()) return;
    std::string text;
    for (size_t i = 0; i < errors_.size() && i < kMaxListedErrors; ++i) {
      if (i > 0) text += "\n";
      text += errors_[i];
    }
    if (errors_.size() > kMaxListedErrors) {
      text += StrCat("\n(", errors_.size() - kMaxListedErrors, " more errors not shown)");
    }
    throw InputError(text);
  }

 private:
  const std::string& source_;
  const ParseInfoTree* locations_;
  std::vector<std::string> errors_;
};

// What one layer turns its input into, as the model (src/nn/model.cc) will build it.
// Image shapes are C x H x W; after flatten or dense the sample is `features` values.
struct LayerShape {
  bool flat = false;
  int64_t channels = 0, height = 0, width = 0;
  // Values per sample: C*H*W, or the feature count when flat. A double, because a
  // mistaken config can exceed int64 here; such a model fails the memory limit.
  double values = 0;
  // Trainable parameters of the layer (weights and biases).
  double parameters = 0;
  // The layer keeps no buffers of its own: a ReLU fused into the conv or dense layer
  // before it, or a flatten (a view).
  bool no_buffers = false;
};

std::string ShapeText(const LayerShape& s) {
  if (s.flat) return StrCat(s.values, " features");
  return StrCat(s.channels, "x", s.height, "x", s.width);
}

LayerShape ImageShape(int64_t c, int64_t h, int64_t w) {
  LayerShape s;
  s.channels = c, s.height = h, s.width = w;
  s.values = static_cast<double>(c) * static_cast<double>(h) * static_cast<double>(w);
  return s;
}

// The output height or width of a conv along one axis, as Conv2D computes it.
int64_t ConvOutput(int64_t input, const v1::Conv2D& conv) {
  const int64_t kernel = conv.kernel(), stride = conv.stride();
  int64_t lo = 0, hi = 0;
  if (conv.pad() > 0) {
    lo = hi = conv.pad();
  } else if (conv.padding() != "valid") {
    const int64_t out = (input + stride - 1) / stride;
    const int64_t total = std::max<int64_t>((out - 1) * stride + kernel - input, 0);
    lo = total / 2;
    hi = total - lo;
  }
  const int64_t span = input + lo + hi - kernel;
  return span < 0 ? 0 : span / stride + 1;
}

// The shapes a valid layer stack produces, one per layer before the loss, or the first
// problem: `error` says what is wrong with layer `error_layer`. Expects the per-layer
// values (sizes, strides) to be valid already.
struct ShapeWalk {
  std::vector<LayerShape> shapes;  // Output of model.layers[i], for each i that succeeded.
  LayerShape input;
  int error_layer = -1;
  std::string error;
};

ShapeWalk WalkShapes(const v1::ModelSpec& model) {
  ShapeWalk walk;
  const v1::InputShape& in = model.input();
  walk.input = ImageShape(in.channels(), in.height(), in.width());
  LayerShape shape = walk.input;
  const auto fail = [&walk](int i, std::string what) {
    walk.error_layer = i;
    walk.error = std::move(what);
    return walk;
  };
  const int n = model.layers_size();
  for (int i = 0; i + 1 < n; ++i) {
    const v1::LayerSpec& layer = model.layers(i);
    const std::string input_text = StrCat("its input is ", ShapeText(shape));
    LayerShape out = shape;
    out.parameters = 0;
    out.no_buffers = false;
    switch (layer.kind_case()) {
      case v1::LayerSpec::kConv: {
        const v1::Conv2D& conv = layer.conv();
        if (shape.flat) {
          return fail(i, StrCat("a conv needs a channels x height x width input, but ", input_text,
                                " (a conv must come before flatten and dense layers)"));
        }
        const int64_t oh = ConvOutput(shape.height, conv), ow = ConvOutput(shape.width, conv);
        if (oh <= 0 || ow <= 0) {
          return fail(i, StrCat("kernel ", conv.kernel(), " does not fit ", input_text));
        }
        out = ImageShape(conv.filters(), oh, ow);
        out.parameters = static_cast<double>(conv.filters()) * static_cast<double>(shape.channels) *
                             static_cast<double>(conv.kernel()) *
                             static_cast<double>(conv.kernel()) +
                         (conv.no_bias() ? 0.0 : static_cast<double>(conv.filters()));
        break;
      }
      case v1::LayerSpec::kMaxPool: {
        const v1::MaxPool2D& pool = layer.max_pool();
        if (shape.flat) {
          return fail(i,
                      StrCat("max_pool needs a channels x height x width input, but ", input_text));
        }
        if (shape.height < pool.pool() || shape.width < pool.pool()) {
          return fail(i, StrCat("pool ", pool.pool(), " does not fit ", input_text));
        }
        out = ImageShape(shape.channels, (shape.height - pool.pool()) / pool.stride() + 1,
                         (shape.width - pool.pool()) / pool.stride() + 1);
        break;
      }
      case v1::LayerSpec::kDense:
        if (!shape.flat) {
          // oneDNN would take it as a 4-D inner product, correct but many times slower.
          return fail(i, StrCat("a dense layer needs a flat input, but ", input_text,
                                "; add a flatten layer before it"));
        }
        out.flat = true;
        out.values = static_cast<double>(layer.dense().units());
        out.parameters = (shape.values + 1) * out.values;
        break;
      case v1::LayerSpec::kFlatten:
        out.flat = true;
        out.no_buffers = true;
        break;
      case v1::LayerSpec::kBatchNorm:
        out.parameters = 2 * (shape.flat ? shape.values : static_cast<double>(shape.channels));
        break;
      case v1::LayerSpec::kRelu:
        // As Model fuses it (src/nn/model.cc).
        out.no_buffers =
            i > 0 && (model.layers(i - 1).has_conv() || model.layers(i - 1).has_dense());
        break;
      case v1::LayerSpec::kDropout:
      case v1::LayerSpec::kSoftmaxCrossEntropy:
      case v1::LayerSpec::KIND_NOT_SET:
        break;
    }
    walk.shapes.push_back(out);
    shape = out;
  }
  if (!shape.flat) {
    return fail(n - 1, StrCat("softmax_cross_entropy needs num_classes = ", model.num_classes(),
                              " values per sample, but its input is ", ShapeText(shape),
                              " (add flatten and dense layers before it)"));
  }
  if (shape.values != static_cast<double>(model.num_classes())) {
    return fail(n - 1, StrCat("softmax_cross_entropy needs num_classes = ", model.num_classes(),
                              " values per sample, but its input is ", ShapeText(shape)));
  }
  return walk;
}

// Checks the layer stack with shapes, reporting the first layer that cannot take its
// input at that layer's kind (its line in the text).
void ValidateShapes(Validator& v, const Node& m, const v1::ModelSpec& model) {
  const ShapeWalk walk = WalkShapes(model);
  if (walk.error.empty()) return;
  const FieldDescriptor* layers_field = Field<v1::ModelSpec>(v1::ModelSpec::kLayersFieldNumber);
  const v1::LayerSpec& layer = model.layers(walk.error_layer);
  const Node l = v.Child(m, layers_field, layer, walk.error_layer);
  const FieldDescriptor* kind_field =
      v1::LayerSpec::descriptor()->FindFieldByNumber(static_cast<int>(layer.kind_case()));
  const std::string name = layer.name().empty() ? "" : StrCat(" (\"", layer.name(), "\")");
  v.Fail(Validator::FieldLocation(l, kind_field, -1), Validator::FieldPath(l, kind_field, -1),
         StrCat("layer ", walk.error_layer, name, ": ", walk.error));
}

// The length of the valid UTF-8 sequence at `s[i]`, or 0 if it is not one (overlong
// forms, surrogates and code points above U+10FFFF are invalid, as in RFC 3629).
size_t Utf8SequenceLength(const std::string& s, size_t i) {
  const auto byte = [&s](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t length = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // Allowed range of the second byte.
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + length > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return length;
}

// The offset of the first byte of `s` that is not valid UTF-8, or npos.
size_t FirstInvalidUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const size_t length = Utf8SequenceLength(s, i);
    if (length == 0) return i;
    i += length;
  }
  return std::string::npos;
}

// Proto3 strings must be UTF-8; the JSON writers (history.json) and the reports need it.
// Walks every string of the message and its sub-messages.
void ValidateUtf8(Validator& v, const Node& node) {
  const Message& message = *node.message;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const int count = field->is_repeated() ? reflection->FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      const int index = field->is_repeated() ? i : -1;
      if (field->type() == FieldDescriptor::TYPE_STRING) {
        const std::string value = field->is_repeated()
                                      ? reflection->GetRepeatedString(message, field, i)
                                      : reflection->GetString(message, field);
        const size_t bad = FirstInvalidUtf8(value);
        if (bad != std::string::npos) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(value[bad]));
          v.Fail(node, field, StrCat("is not valid UTF-8 (byte ", bad, " is ", hex, ")"), index);
        }
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const Message& child = field->is_repeated()
                                   ? reflection->GetRepeatedMessage(message, field, i)
                                   : reflection->GetMessage(message, field);
        ValidateUtf8(v, v.Child(node, field, child, index));
      }
    }
  }
}

void ValidateAnalysis(Validator& v, const Node& root, const v1::AnalysisConfig& a) {
  using A = v1::AnalysisConfig;
  const Node n =
      v.Child(root, Field<v1::ExperimentConfig>(v1::ExperimentConfig::kAnalysisFieldNumber), a);
  if (a.has_probe_samples())
    v.NonNegative(n, Field<A>(A::kProbeSamplesFieldNumber), a.probe_samples());
  if (a.has_term_threshold()) {
    v.NonNegativeFinite(n, Field<A>(A::kTermThresholdFieldNumber), a.term_threshold());
  }
  if (a.has_overfit_threshold()) {
    v.NonNegativeFinite(n, Field<A>(A::kOverfitThresholdFieldNumber), a.overfit_threshold());
  }
  if (a.has_overfit_rise()) {
    v.NonNegativeFinite(n, Field<A>(A::kOverfitRiseFieldNumber), a.overfit_rise());
  }
  if (a.has_over_regularized_ratio()) {
    v.NonNegativeFinite(n, Field<A>(A::kOverRegularizedRatioFieldNumber),
                        a.over_regularized_ratio());
  }
  if (a.has_over_regularized_gap_ratio()) {
    v.NonNegativeFinite(n, Field<A>(A::kOverRegularizedGapRatioFieldNumber),
                        a.over_regularized_gap_ratio());
  }
  if (a.has_leakage_fraction()) {
    v.ClosedUnitInterval(n, Field<A>(A::kLeakageFractionFieldNumber), a.leakage_fraction());
  }
  if (a.has_near_rmse()) {
    // Pixels are on [0, 1], so no RMSE exceeds 1.
    v.ClosedUnitInterval(n, Field<A>(A::kNearRmseFieldNumber), a.near_rmse());
  }
}

void ValidateLayer(Validator& v, const Node& layer_node, const v1::LayerSpec& layer) {
  if (layer.kind_case() == v1::LayerSpec::KIND_NOT_SET) {
    v.Fail(layer_node,
           "no layer kind set (expected one of conv, batch_norm, relu, max_pool, dropout, dense, "
           "flatten, softmax_cross_entropy)");
    return;
  }
  const FieldDescriptor* kind_field =
      v1::LayerSpec::descriptor()->FindFieldByNumber(static_cast<int>(layer.kind_case()));
  switch (layer.kind_case()) {
    case v1::LayerSpec::kConv: {
      using C = v1::Conv2D;
      const C& conv = layer.conv();
      const Node n = v.Child(layer_node, kind_field, conv);
      v.Positive(n, Field<C>(C::kFiltersFieldNumber), conv.filters());
      v.Positive(n, Field<C>(C::kKernelFieldNumber), conv.kernel());
      v.Positive(n, Field<C>(C::kStrideFieldNumber), conv.stride());
      v.NonNegative(n, Field<C>(C::kPadFieldNumber), conv.pad());
      if (!conv.padding().empty() && conv.padding() != "same" && conv.padding() != "valid") {
        v.Fail(n, Field<C>(C::kPaddingFieldNumber),
               StrCat("must be \"same\" or \"valid\" (got \"", conv.padding(), "\")"));
      }
      break;
    }
    case v1::LayerSpec::kBatchNorm: {
      using B = v1::BatchNorm;
      const B& bn = layer.batch_norm();
      const Node n = v.Child(layer_node, kind_field, bn);
      v.PositiveFinite(n, Field<B>(B::kEpsilonFieldNumber), bn.epsilon());
      v.UnitInterval(n, Field<B>(B::kMomentumFieldNumber), bn.momentum());
      break;
    }
    case v1::LayerSpec::kMaxPool: {
      using P = v1::MaxPool2D;
      const P& pool = layer.max_pool();
      const Node n = v.Child(layer_node, kind_field, pool);
      v.Positive(n, Field<P>(P::kPoolFieldNumber), pool.pool());
      v.Positive(n, Field<P>(P::kStrideFieldNumber), pool.stride());
      break;
    }
    case v1::LayerSpec::kDropout: {
      using D = v1::Dropout;
      const Node n = v.Child(layer_node, kind_field, layer.dropout());
      v.UnitInterval(n, Field<D>(D::kRateFieldNumber), layer.dropout().rate());
      break;
    }
    case v1::LayerSpec::kDense: {
      using D = v1::Dense;
      const Node n = v.Child(layer_node, kind_field, layer.dense());
      v.Positive(n, Field<D>(D::kUnitsFieldNumber), layer.dense().units());
      break;
    }
    case v1::LayerSpec::kRelu:
    case v1::LayerSpec::kFlatten:
    case v1::LayerSpec::kSoftmaxCrossEntropy:
    case v1::LayerSpec::KIND_NOT_SET:
      break;
  }
}

void ValidateModel(Validator& v, const Node& root, const v1::ExperimentConfig& config) {
  using M = v1::ModelSpec;
  const FieldDescriptor* model_field =
      Field<v1::ExperimentConfig>(v1::ExperimentConfig::kModelFieldNumber);
  if (!config.has_model()) {
    v.Fail(root, model_field, "missing");
    return;
  }
  const M& model = config.model();
  const Node m = v.Child(root, model_field, model);
  const size_t errors_before = v.error_count();

  const FieldDescriptor* input_field = Field<M>(M::kInputFieldNumber);
  if (!model.has_input()) {
    v.Fail(m, input_field, "missing");
  } else {
    using I = v1::InputShape;
    const Node in = v.Child(m, input_field, model.input());
    v.Positive(in, Field<I>(I::kChannelsFieldNumber), model.input().channels());
    v.Positive(in, Field<I>(I::kHeightFieldNumber), model.input().height());
    v.Positive(in, Field<I>(I::kWidthFieldNumber), model.input().width());
  }

  const int32_t num_classes = model.num_classes();
  v.Require(num_classes >= 2, m, Field<M>(M::kNumClassesFieldNumber), "must be >= 2", num_classes);
  if (model.class_names_size() != 0 && model.class_names_size() != num_classes) {
    // Points at the first value: the list syntax gives one location for all of them.
    const FieldDescriptor* names_field = Field<M>(M::kClassNamesFieldNumber);
    const int count = model.class_names_size();
    v.Fail(Validator::FieldLocation(m, names_field, 0), Validator::FieldPath(m, names_field, -1),
           StrCat("has ", count, count == 1 ? " entry" : " entries", ", but num_classes is ",
                  num_classes));
  }

  const FieldDescriptor* layers_field = Field<M>(M::kLayersFieldNumber);
  const int n = model.layers_size();
  if (n == 0) {
    v.Fail(m, layers_field,
           "missing (a model needs at least one layer, the last softmax_cross_entropy)");
    return;
  }
  int last_dense = -1;
  std::map<std::string, int> names;
  for (int i = 0; i < n; ++i) {
    const v1::LayerSpec& layer = model.layers(i);
    const Node l = v.Child(m, layers_field, layer, i);
    ValidateLayer(v, l, layer);
    if (layer.has_dense()) last_dense = i;
    if (layer.has_softmax_cross_entropy() && i != n - 1) {
      v.Fail(l, Field<v1::LayerSpec>(v1::LayerSpec::kSoftmaxCrossEntropyFieldNumber),
             StrCat("must be the last layer only (found at index ", i, " of ", n, " layers)"));
    }
    if (!layer.name().empty()) {
      const auto [it, inserted] = names.emplace(layer.name(), i);
      if (!inserted) {
        v.Fail(l, Field<v1::LayerSpec>(v1::LayerSpec::kNameFieldNumber),
               StrCat("duplicate layer name \"", layer.name(), "\" (also ", m.path, ".layers[",
                      it->second, "])"));
      }
    }
  }
  const v1::LayerSpec& last = model.layers(n - 1);
  if (!last.has_softmax_cross_entropy()) {
    const std::string kind = KindName(last);
    v.Fail(v.Child(m, layers_field, last, n - 1),
           StrCat("the last layer must be softmax_cross_entropy (got ",
                  kind.empty() ? "no kind" : kind, ")"));
  }
  if (last_dense >= 0) {
    const v1::Dense& dense = model.layers(last_dense).dense();
    if (dense.units() > 0 && num_classes >= 2 && dense.units() != num_classes) {
      const Node l = v.Child(m, layers_field, model.layers(last_dense), last_dense);
      const Node d = v.Child(l, Field<v1::LayerSpec>(v1::LayerSpec::kDenseFieldNumber), dense);
      v.Fail(d, Field<v1::Dense>(v1::Dense::kUnitsFieldNumber),
             StrCat("the last dense layer must have num_classes = ", num_classes, " units (got ",
                    dense.units(), ")"));
    }
  }
  // Shapes only mean something once every layer's own values are valid.
  if (v.error_count() == errors_before) ValidateShapes(v, m, model);
}

std::string ReadConfigFile(const std::string& path) {
  if (path.empty()) throw InputError("config path is empty");
  return ReadFileCapped(path, kMaxConfigFileBytes, "config");
}

}  // namespace

v1::ExperimentConfig LoadExperimentConfig(const std::string& path) {
  return ParseExperimentConfig(ReadConfigFile(path), path);
}

v1::ExperimentConfig ParseExperimentConfig(const std::string& text,
                                           const std::string& source_name) {
  v1::ExperimentConfig config;
  ParseInfoTree locations;
  ParseErrorCollector errors(source_name);
  TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&locations);
  if (!parser.ParseFromString(text, &config)) {
    const std::string message = errors.Text();
    throw InputError(message.empty() ? Prefix(source_name, {}) + "cannot parse config" : message);
  }
  ApplyDefaults(&config);
  ValidateExperimentConfig(config, source_name, &locations);
  return config;
}

void ApplyDefaults(v1::ExperimentConfig* config) {
  v1::TrainingConfig* training = config->mutable_training();
  if (!training->has_epochs()) training->set_epochs(kDefaultEpochs);
  if (!training->has_batch_size()) training->set_batch_size(kDefaultBatchSize);

  v1::OptimizerConfig* optimizer = config->mutable_optimizer();
  if (!optimizer->has_learning_rate()) optimizer->set_learning_rate(kDefaultLearningRate);

  v1::DataConfig* data = config->mutable_data();
  if (data->data_dir().empty()) data->set_data_dir(kDefaultDataDir);
  if (data->train_images().empty()) data->set_train_images(kDefaultTrainImages);
  if (data->train_labels().empty()) data->set_train_labels(kDefaultTrainLabels);
  if (data->val_images().empty()) data->set_val_images(kDefaultValImages);
  if (data->val_labels().empty()) data->set_val_labels(kDefaultValLabels);

  if (!config->has_model()) return;
  v1::ModelSpec* model = config->mutable_model();
  if (model->class_names_size() == 0 && model->num_classes() >= 2 &&
      model->num_classes() <= kMaxDefaultClassNames) {
    for (int32_t k = 0; k < model->num_classes(); ++k) model->add_class_names(std::to_string(k));
  }
  for (int i = 0; i < model->layers_size(); ++i) {
    v1::LayerSpec* layer = model->mutable_layers(i);
    if (layer->name().empty() && layer->kind_case() != v1::LayerSpec::KIND_NOT_SET) {
      layer->set_name(StrCat(KindName(*layer), "_", i));
    }
    switch (layer->kind_case()) {
      case v1::LayerSpec::kConv:
        if (!layer->conv().has_stride()) layer->mutable_conv()->set_stride(1);
        break;
      case v1::LayerSpec::kMaxPool:
        if (!layer->max_pool().has_stride()) {
          layer->mutable_max_pool()->set_stride(layer->max_pool().pool());
        }
        break;
      case v1::LayerSpec::kBatchNorm:
        if (!layer->batch_norm().has_epsilon()) {
          layer->mutable_batch_norm()->set_epsilon(kDefaultBatchNormEpsilon);
        }
        if (!layer->batch_norm().has_momentum()) {
          layer->mutable_batch_norm()->set_momentum(kDefaultBatchNormMomentum);
        }
        break;
      default:
        break;
    }
  }
}

void ValidateExperimentConfig(const v1::ExperimentConfig& config, const std::string& source_name,
                              const TextFormat::ParseInfoTree* locations) {
  using E = v1::ExperimentConfig;
  Validator v(source_name, locations);
  const Node root = v.Root(config);
  ValidateUtf8(v, root);
  ValidateModel(v, root, config);
  ValidateAnalysis(v, root, config.analysis());

  {
    using O = v1::OptimizerConfig;
    const O& opt = config.optimizer();
    const Node n = v.Child(root, Field<E>(E::kOptimizerFieldNumber), opt);
    const float lr = opt.learning_rate();
    v.Require(lr > 0 && std::isfinite(lr), n, Field<O>(O::kLearningRateFieldNumber),
              "must be finite and > 0", lr);
    v.UnitInterval(n, Field<O>(O::kMomentumFieldNumber), opt.momentum());
    v.NonNegativeFinite(n, Field<O>(O::kWeightDecayFieldNumber), opt.weight_decay());
    v.NonNegativeFinite(n, Field<O>(O::kDecayFieldNumber), opt.decay());
  }
  {
    using D = v1::DataConfig;
    const D& data = config.data();
    const Node n = v.Child(root, Field<E>(E::kDataFieldNumber), data);
    v.NonNegative(n, Field<D>(D::kLimitTrainFieldNumber), data.limit_train());
    v.NonNegative(n, Field<D>(D::kLimitValFieldNumber), data.limit_val());
  }
  {
    using T = v1::TrainingConfig;
    const T& training = config.training();
    const Node n = v.Child(root, Field<E>(E::kTrainingFieldNumber), training);
    v.Positive(n, Field<T>(T::kEpochsFieldNumber), training.epochs());
    v.Positive(n, Field<T>(T::kBatchSizeFieldNumber), training.batch_size());
    const std::string& scaling = training.lr_scaling();
    if (!scaling.empty() && scaling != "none" && scaling != "linear") {
      v.Fail(n, Field<T>(T::kLrScalingFieldNumber),
             "must be \"none\" or \"linear\" (got \"" + scaling + "\")");
    }
    v.NonNegativeFinite(n, Field<T>(T::kWarmupEpochsFieldNumber), training.warmup_epochs());
    v.NonNegative(n, Field<T>(T::kBucketBytesFieldNumber), training.bucket_bytes());
    v.NonNegative(n, Field<T>(T::kRecomputeBnStatsFieldNumber), training.recompute_bn_stats());
    const std::string& progress = training.allreduce_progress();
    if (!progress.empty() && progress != "auto" && progress != "thread" && progress != "poll") {
      v.Fail(n, Field<T>(T::kAllreduceProgressFieldNumber),
             "must be \"auto\", \"thread\" or \"poll\" (got \"" + progress + "\")");
    }
    const std::string& precision = training.precision();
    if (!precision.empty() && precision != "auto" && precision != "f32" && precision != "bf16") {
      v.Fail(n, Field<T>(T::kPrecisionFieldNumber),
             "must be \"auto\", \"f32\" or \"bf16\" (got \"" + precision + "\")");
    }
    const std::string& wire = training.allreduce_precision();
    if (!wire.empty() && wire != "f32" && wire != "bf16") {
      v.Fail(n, Field<T>(T::kAllreducePrecisionFieldNumber),
             "must be \"f32\" or \"bf16\" (got \"" + wire + "\")");
    }
  }
  {
    using C = v1::CheckpointConfig;
    const C& checkpoint = config.checkpoint();
    const Node n = v.Child(root, Field<E>(E::kCheckpointFieldNumber), checkpoint);
    v.NonNegative(n, Field<C>(C::kEveryStepsFieldNumber), checkpoint.every_steps());
    if (checkpoint.has_every_epochs()) {
      v.NonNegative(n, Field<C>(C::kEveryEpochsFieldNumber), checkpoint.every_epochs());
    }
    if (checkpoint.has_keep_last()) {
      v.Positive(n, Field<C>(C::kKeepLastFieldNumber), checkpoint.keep_last());
    }
  }
  v.ThrowIfFailed();
}

ModelMemoryEstimate EstimateModelMemory(const v1::ExperimentConfig& config) {
  const ShapeWalk walk = WalkShapes(config.model());
  EPOCHAL_CHECK(walk.error.empty(), "EstimateModelMemory needs a validated config: ", walk.error);
  ModelMemoryEstimate e;
  e.batch_size = config.training().batch_size();
  double activations = walk.input.values;
  for (size_t i = 0; i < walk.shapes.size(); ++i) {
    const LayerShape& s = walk.shapes[i];
    e.parameters += s.parameters;
    if (s.no_buffers) continue;
    activations += s.values;
    if (s.values > e.largest_layer_values) {
      e.largest_layer_values = s.values;
      e.largest_layer = static_cast<int>(i);
    }
  }
  e.activation_values_per_sample = activations;
  // Every activation has a value and a gradient, in the training plan and in the
  // evaluation plan the trainer builds beside it; every parameter a value, a gradient and
  // a momentum buffer. All f32.
  const double samples = static_cast<double>(e.batch_size) + kEstimateEvalBatch;
  e.bytes = 4.0 * (3.0 * e.parameters + 2.0 * samples * activations);
  return e;
}

void CheckModelMemory(const v1::ExperimentConfig& config, double max_bytes,
                      const std::string& source_name) {
  const ModelMemoryEstimate e = EstimateModelMemory(config);
  if (e.bytes <= max_bytes) return;
  std::string largest;
  if (e.largest_layer >= 0) {
    const v1::LayerSpec& layer = config.model().layers(e.largest_layer);
    largest = StrCat("; the largest layer is model.layers[", e.largest_layer, "] (\"", layer.name(),
                     "\", ", KindName(layer), ") with ", FormatCount(e.largest_layer_values),
                     " values per sample");
  }
  throw InputError(StrCat(
      source_name, ": the model needs about ", FormatSize(e.bytes), " per rank (",
      FormatCount(e.parameters), " parameters, ", FormatCount(e.activation_values_per_sample),
      " activation values per sample at batch_size ", e.batch_size, largest,
      "), above the limit of ", FormatSize(max_bytes),
      "; make the model or the batch smaller, or raise the limit with --max-model-memory"));
}

std::string ConfigToJson(const v1::ExperimentConfig& config) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(config, &json, options);
  if (!status.ok()) {
    throw Error(StrCat("cannot render the config as JSON: ", status.ToString()));
  }
  return json;
}

BatchSplit SplitBatch(const v1::TrainingConfig& training, int world) {
  BatchSplit split;
  if (training.fixed_global_batch()) {
    split.global = training.batch_size();
    split.per_rank = (split.global + world - 1) / world;
  } else {
    split.per_rank = training.batch_size();
    split.global = split.per_rank * world;
  }
  return split;
}

}  // namespace epochal::train
