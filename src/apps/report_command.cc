// `epochal report RUN_DIR`: re-renders a run's plots and prints its epoch table, the
// loss-gap decomposition and the diagnosis, rebuilt from the run's own thresholds.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "commands.h"
#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/report/history_reader.h"
#include "epochal/report/plots.h"
#include "epochal/train/diagnosis.h"
#include "flags.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "html_report_command.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

// Reads leakage.json's counts, if the run has one.
std::optional<train::LeakageSummary> ReadLeakage(const fs::path& path, int64_t val_size) {
  if (!fs::exists(path)) return std::nullopt;
  const std::string text = ReadFileCapped(path, kMaxLeakageFileBytes, "leakage report");
  google::protobuf::Struct root;
  if (!google::protobuf::util::JsonStringToMessage(text, &root).ok()) {
    throw InputError(path.string() + ": not valid JSON");
  }
  const auto number = [&root](const char* key) -> int64_t {
    auto it = root.fields().find(key);
    return it == root.fields().end() ? 0 : static_cast<int64_t>(it->second.number_value());
  };
  const int64_t scanned = number("val_samples");
  return train::LeakageSummary{.exact = number("exact"),
                               .near = number("near"),
                               .label_conflicts = number("label_conflicts"),
                               .val_size = scanned > 0 ? scanned : val_size,
                               .photometric = number("photometric"),
                               .shifted = number("shifted"),
                               .mirrored = number("mirrored")};
}

}  // namespace

int Report(const dist::Communicator& comm, int argc, char** argv) {
  Flags f("epochal report",
          "Reads RUN_DIR/history.json, re-renders loss_shift.svg and gap.svg, and prints the\n"
          "epoch table, the loss-gap decomposition and the diagnosis.\n"
          "usage: epochal report RUN_DIR [--html]");
  f.Switch("html", "also write RUN_DIR/report.html: every panel and table in one file");
  if (argc < 3 || std::string(argv[2]).rfind("--", 0) == 0) {
    if (!f.Parse(argc, argv, 2)) return 0;
    throw InputError("a run directory is required: epochal report RUN_DIR");
  }
  if (!f.Parse(argc, argv, 3)) return 0;
  if (!comm.is_root()) return 0;
  const fs::path dir = argv[2];
  if (!fs::is_directory(dir)) throw InputError(dir.string() + ": not a directory");
  report::RunHistory run = report::ReadHistoryJson(dir / "history.json");
  train::History& h = run.history;
  // The diagnosis again, from the records and the run's own thresholds.
  train::Diagnosis diagnosis(train::DiagnosisThresholds::FromConfig(run.config.analysis()),
                             train::RegularizationTraits::FromConfig(run.config));
  diagnosis.SetRecomputedBatchNorm(run.config.training().recompute_bn_stats());
  const int64_t val_size = run.config.data().limit_val();
  if (auto leak = ReadLeakage(dir / "leakage.json", val_size)) diagnosis.SetLeakage(*leak);
  const std::vector<std::vector<train::Finding>> replayed = diagnosis.Replay(h);
  for (size_t i = 0; i < h.epochs.size(); ++i) {
    h.epochs[i].findings.clear();
    for (const train::Finding& finding : replayed[i]) {
      h.epochs[i].findings.push_back(finding.name + ": " + finding.explanation);
    }
  }
  report::WritePlots(h, dir);

  std::printf("%5s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "epoch", "loss", "acc",
              "val_loss", "val_acc", "P_train", "P_nodrop", "P_eval", "timing", "dropout",
              "batchnrm", "data", "aligned");
  const auto opt = [](const std::optional<double>& v) {
    char buf[32];
    if (v) {
      std::snprintf(buf, sizeof buf, "%8.4f", *v);
    } else {
      std::snprintf(buf, sizeof buf, "%8s", "-");
    }
    return std::string(buf);
  };
  for (const train::EpochRecord& e : h.epochs) {
    std::printf("%5d %8.4f %8.4f %8.4f %8.4f %s %s %s %s %s %s %s %s\n", e.epoch, e.loss,
                e.accuracy, e.val_loss, e.val_accuracy, opt(e.probe_train_loss).c_str(),
                opt(e.probe_nodrop_loss).c_str(), opt(e.probe_eval_loss).c_str(),
                opt(e.gap_timing).c_str(), opt(e.gap_dropout).c_str(), opt(e.gap_batchnorm).c_str(),
                opt(e.gap_data).c_str(), opt(e.aligned_train_loss).c_str());
  }
  if (h.partial_epoch) {
    std::printf("%5d %8.4f %8.4f  partial: stopped at %.1f%% of the epoch; not validated\n",
                h.partial_epoch->epoch, h.partial_epoch->loss, h.partial_epoch->accuracy,
                100.0 * h.partial_epoch->epoch_fraction);
  }
  std::printf(
      "\nDecomposition (val_loss - loss = timing + dropout + batchnorm + data, each \u00b1 its "
      "standard error):\n");
  for (const train::EpochRecord& e : h.epochs) {
    const std::string line = train::GapLine(e, h.absent_terms);
    std::printf("  epoch %d: %s\n", e.epoch, line.empty() ? "(no probes)" : line.c_str());
  }
  std::printf("\nDiagnosis:\n");
  if (diagnosis.findings().empty()) std::printf("  no finding crossed its threshold\n");
  for (const train::Finding& finding : diagnosis.findings()) {
    std::printf("  %s (epochs %d-%d): %s\n", finding.name.c_str(), finding.first_epoch,
                finding.last_epoch, finding.explanation.c_str());
  }
  std::printf("\nPlots: %s, %s\n", (dir / "loss_shift.svg").c_str(), (dir / "gap.svg").c_str());
  if (f.Has("html")) {
    std::printf("Report: %s\n", WriteHtmlReport(dir, run, diagnosis.findings()).c_str());
  }
  return 0;
}

}  // namespace epochal::apps
