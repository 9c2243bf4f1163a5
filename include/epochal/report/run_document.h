// The run document: one JSON object holding what the live page and report.html draw
// (docs/dashboard.md lists every field). The live page fetches it from /api/run; the
// report carries it inline. Epoch objects are exactly history.json's (EpochsJson), so a
// reader of one reads the other, and a gap term added to history (gap_<term>, with its
// standard error gap_<term>_se) reaches both without a change here.
// Thread safety: the functions are reentrant.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/history.h"

namespace epochal::report {

// Pairs of the leakage scan drawn as images; the counts always cover every pair.
inline constexpr size_t kMaxLeakageImagePairs = 24;

struct LeakageView {
  int64_t exact = 0;
  int64_t near = 0;
  // The transformed kinds (data::LeakageReport's counts).
  int64_t photometric = 0, shifted = 0, mirrored = 0;
  int64_t label_conflicts = 0;
  int64_t pair_count = 0;
  int64_t val_samples = 0;
  int64_t train_samples = 0;
  double near_rmse = 0;
  // Sample geometry of the images.
  int64_t channels = 0, height = 0, width = 0;
  struct Pair {
    int64_t train_index = 0;
    int64_t val_index = 0;
    double rmse = 0;
    std::string kind;  // exact, near, photometric, shifted, mirrored
    bool label_conflict = false;
    // Raw bytes [C, H, W], base64; empty when the images are not at hand.
    std::string train_image, val_image;
  };
  std::vector<Pair> pairs;
};

// The view of a scan: counts, and the first kMaxLeakageImagePairs pairs with their
// images when `train` and `val` are the scanned datasets (null: pairs without images).
LeakageView MakeLeakageView(const data::LeakageReport& report, const data::Dataset* train,
                            const data::Dataset* val);

struct RankThroughput {
  int rank = 0;
  double images_per_second = 0;
  double step_ms = 0;
  double data_ms = 0;
  double allreduce_wait_ms = 0;
};

// Per-rank throughput from an epoch's rank timings: each rank trains `per_rank_batch`
// samples per step of step_ms.
std::vector<RankThroughput> ThroughputFromEpoch(const train::EpochRecord& record,
                                                double per_rank_batch);

// Where a live run stands (absent in a report).
struct RunProgress {
  int epoch = 0;
  double epoch_progress = 0;
  int64_t global_step = 0;
  double running_loss = 0;
  double running_accuracy = 0;
  double lr = 0;
};

struct RunDocument {
  std::string run;          // The run directory's name.
  std::string config_name;  // The config's `name`.
  // starting, training, paused, stopped, finished.
  std::string state = "starting";
  int world_size = 1;
  int epochs_planned = 0;
  std::optional<RunProgress> progress;
  // A JSON array of epoch objects, as EpochsJson writes it ("[]" when empty).
  std::string epochs_json = "[]";
  // A stopped run's unfinished epoch as one such object (empty: none), and the terms the
  // model cannot have (History's fields).
  std::string partial_epoch_json;
  std::vector<std::string> absent_terms;
  // The config as a JSON object (empty: none), and as text (report only).
  std::string config_json;
  std::string config_text;
  // Batches [batches_offset, batches_offset + batches.size()) of the run.
  int64_t batches_offset = 0;
  std::vector<train::BatchRecord> batches;
  std::vector<train::Finding> findings;
  std::optional<LeakageView> leakage;
  std::vector<RankThroughput> ranks;
  std::string classification_report;  // Report only.
  std::string generated_at;           // UTC, ISO 8601.
};

// The document as one JSON object (no newline at the end).
std::string RunDocumentJson(const RunDocument& doc);

// "2026-12-01T23:59:59Z" for the current time.
std::string UtcTimestamp();

// RFC 4648 base64 of `bytes`.
std::string Base64(std::string_view bytes);

}  // namespace epochal::report
