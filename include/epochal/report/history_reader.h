// Reads a run's history.json back (for `epochal report`): the epoch and batch records
// and the embedded config. Strict: a key that is present must have its type (an epoch a
// positive integer, a loss a finite number, a list a list), the embedded config must
// parse and validate, and the file is capped at kMaxHistoryFileBytes; errors name the
// file and the key ("RUN/history.json: epochs is a string, not a list").
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
