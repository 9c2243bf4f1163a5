// Saving and loading a model's parameters and running statistics (weights.proto).
#pragma once

#include <string>

#include "epochal/nn/model.h"

namespace epochal::train {

// Writes every parameter and state buffer of `model` to `path` atomically
// (WriteFileAtomic). Throws SystemError naming the path on failure.
void SaveWeights(nn::Model& model, const std::string& config_name, int epochs_completed,
                 const std::string& path);
// Reads `path` into `model`. Every tensor of the model must be present with matching
// dims; InputError names the file and the tensor otherwise.
void LoadWeights(nn::Model& model, const std::string& path);

}  // namespace epochal::train
