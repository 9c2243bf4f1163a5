// `epochal export`: the trained model in another format (ONNX), and the reference outputs
// an exported model is checked against (`epochal evaluate --logits-out`).
#pragma once

#include <string>

#include "epochal/data/idx.h"
#include "epochal/dist/communicator.h"
#include "epochal/nn/model.h"

namespace epochal::apps {

// `epochal export RUN_DIR|--weights F --config C --format onnx --out model.onnx`.
int Export(const dist::Communicator& comm, int argc, char** argv);

// Runs `model` in inference mode over every sample of `ds` and writes the logits as a
// float32 NumPy file [N, K] (format 1.0, little-endian) to `path`, atomically. Returns
// the top-1 accuracy of those logits (argmax, first index on ties).
double WriteLogitsNpy(nn::Model& model, const data::Dataset& ds, int64_t batch_size,
                      const std::string& path);

}  // namespace epochal::apps
