// Reads a run's history.json back (for `epochal report`): the epoch and batch records
// and the embedded config. Errors name the file and the key.
#pragma once

#include <filesystem>

#include "epochal/train/history.h"
#include "epochal/v1/config.pb.h"

namespace epochal::report {

struct RunHistory {
  train::History history;
  v1::ExperimentConfig config;  // Empty when the history has no config.
};

RunHistory ReadHistoryJson(const std::filesystem::path& path);

}  // namespace epochal::report
