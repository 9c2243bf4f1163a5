// Saving and loading a model's parameters and running statistics (weights.proto).
#pragma once

#include <string>

#include "epochal/nn/model.h"
#include "epochal/v1/weights.pb.h"

namespace epochal::train {

// Writes every parameter and state buffer of `model` to `path` atomically
// (WriteFileAtomic). Throws SystemError naming the path on failure.
void SaveWeights(nn::Model& model, const std::string& config_name, int epochs_completed,
                 const std::string& path);
// Reads `path` into `model`. Every tensor of the model must be present with matching
// dims; InputError names the file and the tensor otherwise.
// The file may hold at most kMaxProtobufFileBytes.
void LoadWeights(nn::Model& model, const std::string& path);
// Same, from weights already decoded (a checkpoint's); `path` names them in errors.
void LoadWeights(nn::Model& model, const v1::ModelWeights& weights, const std::string& path);

}  // namespace epochal::train
