// Loading an experiment config: Protobuf text format in, a defaulted and validated
// v1::ExperimentConfig out. Every problem is reported as an epochal::InputError whose
// message starts "PATH:LINE:COLUMN: " (1-based) and names the field path, e.g.
//   configs/x.textproto:17:30: model.layers[3].conv.filters: must be > 0 (got -3)
// A field that is required but absent is reported at its enclosing message (line 1,
// column 1 for the top level) as "missing".
//
// Fields whose default is not zero are proto3 `optional`, so an explicit 0 is told apart
// from an absent field: absent takes the default (see ApplyDefaults), and 0 is checked
// like any other value ("training.epochs: must be > 0 (got 0)"). Strings must be UTF-8.
// Before anything is allocated, the layer stack is checked with shapes (a conv after a
// dense layer, a dense layer without a flatten before it, a kernel larger than its input
// are errors naming the layer and its line), and EstimateModelMemory tells what the model
// will need.
//
// Thread safety: the functions share no state and may be called concurrently.
#pragma once

#include <google/protobuf/text_format.h>

#include <cstdint>
#include <string>

#include "epochal/v1/config.pb.h"

namespace epochal::train {

// The batch each rank trains on and the global batch of one step on `world` ranks:
// training.batch_size per rank, or with fixed_global_batch the global batch shared by the
// ranks (the per-rank batch rounded up; the last ranks may get fewer samples).
struct BatchSplit {
  int64_t per_rank = 0;
  int64_t global = 0;
};
BatchSplit SplitBatch(const v1::TrainingConfig& training, int world);

// Reads the text-format config at `path`, applies defaults and validates it. Throws
// InputError naming the path when the file is missing, is a directory, cannot be read or
// is larger than kMaxConfigFileBytes (1 MiB), and "PATH:LINE:COLUMN: ..." for syntax errors,
// unknown fields and invalid values.
v1::ExperimentConfig LoadExperimentConfig(const std::string& path);

// Same as LoadExperimentConfig on `text`; `source_name` takes the place of PATH in
// messages.
v1::ExperimentConfig ParseExperimentConfig(const std::string& text, const std::string& source_name);

// Fills the documented defaults of fields left unset (absent `optional` fields; empty
// strings and zero where the schema gives 0 or "" that meaning):
//   training.epochs 25, training.batch_size 32 (training.seed is kept as given: 0 is a
//   seed like any other);
//   optimizer.learning_rate 0.01;
//   data.data_dir "/usr/share/datasets/fashion-mnist" and the four Fashion-MNIST gzip
//   file names (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
//   t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz);
//   model.class_names "0".."K-1" for K = num_classes (when 2 <= K <= 100000);
//   each layer's name "<kind>_<index>" (0-based index into model.layers, e.g. "conv_0");
//   conv.stride 1, max_pool.stride = pool, batch_norm.epsilon 1e-3 and momentum 0.99.
// Does not create `model` when absent, so that validation can report it. Idempotent.
void ApplyDefaults(v1::ExperimentConfig* config);

// Checks the semantic constraints documented in config.proto (positive sizes, rates in
// range, softmax_cross_entropy last and only last, the last dense layer has num_classes
// units, unique layer names, ...). Call after ApplyDefaults. Throws one InputError
// listing every problem found, one per line. `source_name` prefixes each message; with
// `locations` (filled by TextFormat::Parser::WriteLocationsTo while parsing the same
// config) each message also carries the line and column of the offending field.
// Without locations — e.g. after command-line overrides — messages are
// "SOURCE: field.path: ...".
void ValidateExperimentConfig(const v1::ExperimentConfig& config, const std::string& source_name,
                              const google::protobuf::TextFormat::ParseInfoTree* locations);

// What a model needs in memory on one rank, estimated from the validated layer shapes.
struct ModelMemoryEstimate {
  double parameters = 0;                    // trainable values (weights and biases)
  double activation_values_per_sample = 0;  // input plus every layer's output
  int64_t batch_size = 0;                   // training.batch_size
  int largest_layer = -1;                   // index into model.layers; -1 if none
  double largest_layer_values = 0;          // its output values per sample
  // 4 bytes x (3 x parameters (value, gradient, momentum) + 2 x activations (value and
  // gradient) x (batch_size + the evaluation batch of 128)). oneDNN's own scratch and
  // reorder buffers come on top; the estimate is a floor, not a ceiling.
  double bytes = 0;
};

// Default of --max-model-memory: far above the reference model (MiniVGGNet on 28x28 at
// batch 32 needs about 229 MiB) and below what a typical node can give one rank.
inline constexpr double kDefaultMaxModelMemoryBytes = 8.0 * 1024 * 1024 * 1024;

// The estimate for a config that passed ValidateExperimentConfig.
ModelMemoryEstimate EstimateModelMemory(const v1::ExperimentConfig& config);

// Throws InputError, prefixed "SOURCE: ", when the estimate exceeds `max_bytes`, naming
// the estimate, the largest layer, the limit and --max-model-memory.
void CheckModelMemory(const v1::ExperimentConfig& config, double max_bytes,
                      const std::string& source_name);

// Renders `config` as compact JSON with the proto field names (learning_rate, not
// learningRate) and every scalar field printed, defaults included; for history.json.
// 64-bit integers (seed, limit_train, limit_val) are JSON strings, as the proto3 JSON
// mapping prescribes.
std::string ConfigToJson(const v1::ExperimentConfig& config);

}  // namespace epochal::train
