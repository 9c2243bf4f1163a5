#include "run_setup.h"

#include <filesystem>
#include <limits>
#include <string>

#include "epochal/core/error.h"
#include "epochal/train/config.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

std::string DataPath(const v1::DataConfig& d, const std::string& file) {
  return (fs::path(d.data_dir()) / file).string();
}

}  // namespace

void AddDataFlags(Flags& f) {
  f.Value("config", "FILE", "experiment config in Protobuf text format (required)");
  f.Value("data-dir", "DIR", "directory holding the four IDX files",
          "config's data.data_dir, else /usr/share/datasets/fashion-mnist");
  f.Value("limit-val", "N", "use only the first N validation samples", "all");
  f.Value("threads", "T", "oneDNN/OpenMP threads, at most this rank's cores", "this rank's cores");
  f.Switch("oversubscribe-threads", "keep a --threads above this rank's cores");
  f.Value("max-model-memory", "BYTES",
          "refuse a model whose estimated memory per rank exceeds this (8G, 512M, ...)", "8G");
}

// Loads the config and applies the flags that override it.
v1::ExperimentConfig LoadConfig(const Flags& f) {
  const auto path = f.Get("config");
  if (!path) throw InputError(std::string("--config FILE is required (see --help)"));
  v1::ExperimentConfig config = train::LoadExperimentConfig(*path);
  auto* d = config.mutable_data();
  auto* t = config.mutable_training();
  if (auto v = f.Get("data-dir")) d->set_data_dir(*v);
  if (auto v = f.GetInt("limit-train", 0)) d->set_limit_train(*v);
  if (auto v = f.GetInt("limit-val", 0)) d->set_limit_val(*v);
  constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
  if (auto v = f.GetInt("epochs", 1, kMaxInt32)) t->set_epochs(static_cast<int32_t>(*v));
  if (auto v = f.GetInt("batch-size", 1, kMaxInt32)) t->set_batch_size(static_cast<int32_t>(*v));
  if (auto v = f.GetInt("seed", 0)) t->set_seed(static_cast<uint64_t>(*v));
  if (auto v = f.GetDouble("lr")) {
    if (*v <= 0) throw InputError("--lr must be positive, got " + *f.Get("lr"));
    config.mutable_optimizer()->set_learning_rate(static_cast<float>(*v));
  }
  // The flags may have changed validated fields.
  train::ValidateExperimentConfig(config, *path + " (with command-line overrides)", nullptr);
  train::CheckModelMemory(
      config, f.GetBytes("max-model-memory").value_or(train::kDefaultMaxModelMemoryBytes), *path);
  return config;
}

data::Dataset LoadSplit(const v1::ExperimentConfig& config, bool train) {
  const auto& d = config.data();
  const std::string images = DataPath(d, train ? d.train_images() : d.val_images());
  data::Dataset ds =
      data::LoadIdxDataset(images, DataPath(d, train ? d.train_labels() : d.val_labels()),
                           config.model().num_classes(), train ? d.limit_train() : d.limit_val());
  ds.name = std::string(train ? "training set " : "validation set ") + images;
  return ds;
}

}  // namespace epochal::apps
