// `epochal report RUN_DIR --html`: RUN_DIR/report.html, one self-contained page with the
// live page's panels at their final values plus the epoch table, the decomposition table,
// the classification report and the config (docs/dashboard.md).
#pragma once

#include <filesystem>
#include <vector>

#include "epochal/report/history_reader.h"
#include "epochal/train/diagnosis.h"

namespace epochal::apps {

// Writes report.html into `dir` atomically and returns its path. `run` is the history
// read back (with the replayed findings on its epochs) and `findings` the replay's
// findings with their epoch ranges. Reads leakage.json, report.txt and config.textproto
// from `dir` when present, and the scanned datasets (for the leakage pairs' images) when
// the config's data files are readable. Throws InputError naming a malformed file.
std::filesystem::path WriteHtmlReport(const std::filesystem::path& dir,
                                      const report::RunHistory& run,
                                      const std::vector<train::Finding>& findings);

}  // namespace epochal::apps
