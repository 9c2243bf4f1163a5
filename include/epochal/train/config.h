// Loading an experiment config: Protobuf text format in, a defaulted and validated
// v1::ExperimentConfig out. Every problem is reported as an epochal::InputError whose
// message starts "PATH:LINE:COLUMN: " (1-based) and names the field path, e.g.
//   configs/x.textproto:17:30: model.layers[3].conv.filters: must be > 0 (got -3)
// A field that is required but absent is reported at its enclosing message (line 1,
// column 1 for the top level) as "missing".
//
// Proto3 cannot tell an explicit 0 (or "") from an absent field, so for every field
// with a documented default, 0 means "use the default" (see ApplyDefaults).
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
// InputError naming the path when the file is missing, is a directory or cannot be
// read, and "PATH:LINE:COLUMN: ..." for syntax errors, unknown fields and invalid values.
v1::ExperimentConfig LoadExperimentConfig(const std::string& path);

// Same as LoadExperimentConfig on `text`; `source_name` takes the place of PATH in
// messages.
v1::ExperimentConfig ParseExperimentConfig(const std::string& text, const std::string& source_name);

// Fills the documented defaults of fields left unset (zero or empty):
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

// Renders `config` as compact JSON with the proto field names (learning_rate, not
// learningRate) and every scalar field printed, defaults included; for history.json.
// 64-bit integers (seed, limit_train, limit_val) are JSON strings, as the proto3 JSON
// mapping prescribes.
std::string ConfigToJson(const v1::ExperimentConfig& config);

}  // namespace epochal::train
