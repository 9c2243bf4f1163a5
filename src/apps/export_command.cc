#include "export_command.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/onnx/onnx_export.h"
#include "epochal/train/config.h"
#include "epochal/train/weights_io.h"
#include "epochal/v1/weights.pb.h"
#include "flags.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

// A weights file is the model's floats plus names: 1 GiB is far beyond any model here.
constexpr uintmax_t kMaxWeightsBytes = uintmax_t{1} << 30;

v1::ModelWeights ReadWeightsProto(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) throw InputError("cannot read weights file " + path + ": " + ec.message());
  if (size > kMaxWeightsBytes) {
    throw InputError(path + ": " + std::to_string(size) +
                     " bytes, more than a weights file may have");
  }
  std::ifstream in(path, std::ios::binary);
  v1::ModelWeights w;
  if (!in || !w.ParseFromIstream(&in)) {
    throw InputError(path + ": not a weights file (protobuf epochal.v1.ModelWeights expected)");
  }
  return w;
}

}  // namespace

double WriteLogitsNpy(nn::Model& model, const data::Dataset& ds, int64_t batch_size,
                      const std::string& path) {
  const int64_t n = ds.size();
  const int64_t k = model.num_classes();
  std::vector<float> logits;
  logits.reserve(static_cast<size_t>(n * k));
  std::vector<float> images(static_cast<size_t>(batch_size * ds.sample_size()));
  std::vector<int32_t> labels(static_cast<size_t>(batch_size));
  std::vector<int64_t> ids(static_cast<size_t>(batch_size));
  int64_t correct = 0;
  for (int64_t first = 0; first < n; first += batch_size) {
    const int64_t b = std::min(batch_size, n - first);
    const auto count = static_cast<size_t>(b);
    std::iota(ids.begin(), ids.begin() + b, first);
    data::GatherBatch(ds, std::span<const int64_t>(ids.data(), count), images.data(),
                      labels.data());
    nn::StepContext ctx;
    ctx.mode = nn::Mode::kInference;
    ctx.sample_ids = std::span<const int64_t>(ids.data(), count);
    model.Forward(ctx, images.data(), std::span<const int32_t>(labels.data(), count));
    const std::vector<float> out = model.Logits();
    for (int64_t i = 0; i < b; ++i) {
      const float* row = out.data() + i * k;
      if (std::max_element(row, row + k) - row == labels[static_cast<size_t>(i)]) ++correct;
    }
    logits.insert(logits.end(), out.begin(), out.begin() + b * k);
  }
  // NumPy format 1.0: magic, version, header length, a dict padded to a multiple of 64.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(n) +
                       ", " + std::to_string(k) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string file("\x93NUMPY\x01\x00", 8);
  file.push_back(static_cast<char>(header.size() & 0xff));
  file.push_back(static_cast<char>(header.size() >> 8));
  file += header;
  const size_t offset = file.size();
  file.resize(offset + logits.size() * sizeof(float));
  std::memcpy(file.data() + offset, logits.data(), logits.size() * sizeof(float));
  WriteFileAtomic(path, file);
  return n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
}

int Export(const dist::Communicator& comm, int argc, char** argv) {
  Flags f("epochal export",
          "Writes a trained model in another format. ONNX (opset 13): batch norm in inference\n"
          "form, dropout removed, softmax at the end; outputs 'probabilities' and 'logits',\n"
          "input 'input' [batch, C, H, W] with pixels / 255.\n"
          "usage: epochal export RUN_DIR --format onnx --out model.onnx\n"
          "       epochal export --weights FILE --config FILE --format onnx --out model.onnx");
  f.Value("weights", "FILE", "weights.pb to export", "RUN_DIR/weights.pb");
  f.Value("config", "FILE", "the config the weights were trained with", "RUN_DIR/config.textproto");
  f.Value("format", "FMT", "output format: onnx (required)");
  f.Value("out", "FILE", "where to write the model (required)");
  std::string run_dir;
  int first = 2;
  if (argc > 2 && std::string(argv[2]).rfind("--", 0) != 0) {
    run_dir = argv[2];
    first = 3;
  }
  if (!f.Parse(argc, argv, first)) return 0;
  if (!comm.is_root()) return 0;
  const auto format = f.Get("format");
  if (!format) throw InputError("--format is required (onnx)");
  if (*format != "onnx") throw InputError("--format " + *format + ": only onnx is supported");
  const auto out = f.Get("out");
  if (!out) throw InputError("--out FILE is required");
  if (run_dir.empty() && !f.Has("weights")) {
    throw InputError("give a run directory or --weights FILE: epochal export RUN_DIR ...");
  }
  if (!run_dir.empty() && !fs::is_directory(run_dir)) {
    throw InputError(run_dir + ": not a directory");
  }
  const std::string weights_path =
      f.Get("weights").value_or((fs::path(run_dir) / "weights.pb").string());
  const auto config_flag = f.Get("config");
  if (!config_flag && run_dir.empty()) throw InputError("--weights needs --config FILE");
  const std::string config_path =
      config_flag.value_or((fs::path(run_dir) / "config.textproto").string());
  const v1::ExperimentConfig config = train::LoadExperimentConfig(config_path);

  nn::Model model(config.model(), /*batch_size=*/1, config.training().seed());
  // Checks every tensor's presence and shape against the config, naming the file.
  train::LoadWeights(model, weights_path);
  const v1::ModelWeights weights = ReadWeightsProto(weights_path);

  onnx_export::ModelDescription description;
  for (const auto& layer : model.layers()) description.layers.push_back(layer.get());
  description.input_dims = model.input_dims();
  description.num_classes = model.num_classes();
  description.name = config.name();
  const std::string bytes = onnx_export::ExportOnnx(description, weights);
  WriteFileAtomic(*out, bytes);
  std::cout << "export: " << *out << " (ONNX opset " << onnx_export::kOpsetVersion << ", "
            << bytes.size() << " bytes; " << weights.epochs_completed() << " epochs of "
            << (config.name().empty() ? "the model" : config.name()) << "): input '"
            << onnx_export::kInputName << "' [batch, " << model.input_dims()[0] << ", "
            << model.input_dims()[1] << ", " << model.input_dims()[2] << "], outputs '"
            << onnx_export::kProbabilitiesName << "' and '" << onnx_export::kLogitsName
            << "' [batch, " << model.num_classes() << "]\n";
  return 0;
}

}  // namespace epochal::apps
