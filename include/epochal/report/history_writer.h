// History files of a run: history.json, history.csv and batches.csv (see DESIGN.md).
//
// history.json = {"config": <config_json, or {} when empty>, "epochs": [...],
//                 "batches": [...]}; each epoch object starts with the keys of
// kEpochColumns in that order (absent optionals and non-finite numbers are null,
// findings an array of strings), then the other fields; each batch object has the
// keys of kBatchColumns.
// The CSV files have a header row of the same keys and one row per record; a null is an
// empty cell, findings are joined with ';', and a cell containing ',', '"' or a line
// break is quoted as RFC 4180 says.
// Thread safety: the functions are reentrant; the caller must not mutate the History
// while they run.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <string_view>

#include "epochal/train/epoch_fields.h"
#include "epochal/train/history.h"

namespace epochal::report {

// The column fields of train::kEpochFields, then "findings".
inline constexpr std::array<std::string_view, train::kEpochColumnFields + 1> kEpochColumns = [] {
  std::array<std::string_view, train::kEpochColumnFields + 1> columns{};
  size_t n = 0;
  for (const train::EpochField& f : train::kEpochFields) {
    if (f.column) columns[n++] = f.name;
  }
  columns[n] = "findings";
  return columns;
}();
inline constexpr std::array<std::string_view, 4> kBatchColumns = {"epoch_progress", "loss", "lr",
                                                                  "samples"};

// The documents, for writing and for the control plane's GetHistory.
std::string HistoryJson(const train::History& history, int indent = 2);
std::string HistoryCsv(const train::History& history);
std::string BatchesCsv(const train::History& history);
// history.json's "epochs" array alone (the live page's snapshot of the epochs).
std::string EpochsJson(const train::History& history, int indent = 0);
// history.partial_epoch as one epoch object, or "" when there is none.
std::string PartialEpochJson(const train::History& history, int indent = 0);

// Writes history.json, history.csv and batches.csv into `dir` (which must exist), each
// one atomically (WriteFileAtomic). Throws epochal::SystemError naming the file.
void WriteHistoryFiles(const train::History& history, const std::filesystem::path& dir);

}  // namespace epochal::report
