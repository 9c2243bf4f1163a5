// `epochal train`.
#include <omp.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint_flags.h"
#include "commands.h"
#include "ctl_command.h"
#include "dashboard_flags.h"
#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/report/classification_report.h"
#include "epochal/report/console_reporter.h"
#include "epochal/report/leakage_json.h"
#include "epochal/report/leakage_svg.h"
#include "epochal/report/plots.h"
#include "epochal/report/progress_bar.h"
#include "epochal/train/config.h"
#include "epochal/train/stop_signal.h"
#include "epochal/train/trainer.h"
#include "epochal/train/weights_io.h"
#include "flags.h"
#include "google/protobuf/text_format.h"
#include "metrics_setup.h"
#include "run_setup.h"
#include "scan_command.h"
#include "startup.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

// Saves weights.pb after every epoch, so an interrupted run keeps its last epoch, and
// after a stop (the weights it stopped with; their epoch is not validated).
class WeightsSaver final : public train::TrainingObserver {
 public:
  WeightsSaver(train::Trainer& trainer, std::string name, std::string path)
      : trainer_(trainer), name_(std::move(name)), path_(std::move(path)) {}
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult&,
                  const train::History&) override {
    train::SaveWeights(trainer_.model(), name_, record.epoch, path_);
  }
  void OnTrainingEnd(const train::History& history, const train::EvalResult&) override {
    if (trainer_.stopped()) {
      train::SaveWeights(trainer_.model(), name_, static_cast<int>(history.epochs.size()), path_);
    }
  }

 private:
  train::Trainer& trainer_;
  std::string name_, path_;
};

}  // namespace

int Train(const dist::Communicator& comm, int argc, char** argv) {
  Flags f("epochal train",
          "Trains the model of --config on its data, validating after every epoch. Writes\n"
          "history.json, history.csv, batches.csv, weights.pb and report.txt to --out.\n"
          "Under mpirun/mpiexec (or srun) every rank trains a replica on its share of each\n"
          "global batch; rank 0 prints and writes the files.");
  AddDataFlags(f);
  f.Value("epochs", "N", "number of epochs", "config's training.epochs");
  f.Value("batch-size", "N", "samples per step and rank", "config's training.batch_size");
  f.Value("lr", "X", "initial learning rate", "config's optimizer.learning_rate");
  f.Value("seed", "S", "seed for initialization, shuffling and dropout", "config's seed");
  f.Value("out", "DIR", "output directory; one that is not empty needs --resume or --overwrite",
          "runs/<timestamp>");
  f.Value("limit-train", "N", "use only the first N training samples", "all");
  f.Switch("sync-batch-norm", "synchronize batch-norm statistics over ranks");
  f.Switch("fixed-global-batch", "--batch-size is the global batch, shared by the ranks");
  f.Value("recompute-bn-stats", "N",
          "before each validation, recompute batch norm's running statistics over N training "
          "batches (precise batch norm)",
          "config's, else off");
  f.Value("stop-after-steps", "N", "stop every rank after global step N (as a control word would)");
  f.Switch("no-scan", "skip the leakage scan before training");
  f.Value("bucket-bytes", "N", "gradient fusion bucket threshold", "config's, else 64 KiB");
  f.Value("allreduce-progress", "MODE",
          "how all-reduces advance during backward: auto (= poll), poll or thread",
          "config's, else auto");
  f.Value("precision", "MODE",
          "conv and dense arithmetic: auto (bf16 where oneDNN has native bf16 and a timed "
          "bf16 step of the model is at least 1.2x as fast as f32), f32 or bf16",
          "config's, else f32");
  f.Value("allreduce-precision", "MODE",
          "what the gradient all-reduce sends: f32 or bf16 (half the bytes, rounded; the "
          "loss and counts stay f32)",
          "config's, else f32");
  AddCheckpointFlags(f);
  AddMetricsFlags(f);
  AddControlFlags(f);
  AddDashboardFlags(f);
  if (!f.Parse(argc, argv, 2)) return 0;
  // SIGTERM/SIGINT from here on: checkpoint at the next step boundary, then exit 0.
  train::InstallStopSignalHandlers();

  v1::ExperimentConfig config;
  data::Dataset train_set, val_set;
  std::string out;
  CheckpointSetup checkpoints;
  train::FaultPlan faults;
  std::unique_ptr<metrics::MetricsExporter> exporter;
  std::unique_ptr<dashboard::DashboardServer> page;
  AgreeOnStartup(comm, [&] {
    faults = train::FaultPlan::FromEnvironment();
    SetThreadsPerRank(f, comm.is_root());
    config = LoadConfig(f);
    if (f.Has("sync-batch-norm")) config.mutable_training()->set_sync_batch_norm(true);
    if (f.Has("fixed-global-batch")) config.mutable_training()->set_fixed_global_batch(true);
    if (auto v = f.GetInt("recompute-bn-stats", 0, 1000000)) {
      config.mutable_training()->set_recompute_bn_stats(static_cast<int32_t>(*v));
    }
    if (auto v = f.GetInt("bucket-bytes", 1)) config.mutable_training()->set_bucket_bytes(*v);
    if (auto v = f.Get("allreduce-progress")) {
      if (*v != "auto" && *v != "poll" && *v != "thread") {
        throw InputError("--allreduce-progress must be auto, poll or thread, got '" + *v + "'");
      }
      config.mutable_training()->set_allreduce_progress(*v);
    }
    if (auto v = f.Get("precision")) config.mutable_training()->set_precision(*v);
    if (auto v = f.Get("allreduce-precision")) {
      if (*v != "f32" && *v != "bf16") {
        throw InputError("--allreduce-precision must be f32 or bf16, got '" + *v + "'");
      }
      config.mutable_training()->set_allreduce_precision(*v);
    }
    ApplyCheckpointFlags(f, &config);
    train::ValidateExperimentConfig(config, *f.Get("config") + " (with command-line flags)",
                                    nullptr);
    if (comm.is_root()) {
      out = PrepareRunDir(f, config);
      // The checkpoint to resume is chosen (and may be refused) before config.textproto,
      // which says what run the directory holds, is replaced.
      checkpoints = PrepareCheckpoints(f, config, out, comm.size());
      std::string text;
      google::protobuf::TextFormat::PrintToString(config, &text);
      WriteFileAtomic(fs::path(out) / "config.textproto", text);
    }
    train_set = LoadSplit(config, true);
    val_set = LoadSplit(config, false);
    const auto& t = config.training();
    const int64_t global_batch =
        t.fixed_global_batch() ? t.batch_size() : int64_t{t.batch_size()} * comm.size();
    if (t.drop_last() && global_batch > train_set.size()) {
      throw InputError("training.drop_last: the global batch of " + std::to_string(global_batch) +
                       " samples is larger than the " + std::to_string(train_set.size()) +
                       " training samples, so every batch would be dropped; lower --batch-size "
                       "or turn drop_last off");
    }
    exporter = StartMetrics(f, comm.is_root());
    page = StartDashboard(f, comm.is_root(), config, out, comm.size());
  });
  if (comm.is_root()) {
    std::cout << "epochal: " << config.name() << ": " << train_set.size() << " training and "
              << val_set.size() << " validation samples from " << config.data().data_dir() << ", "
              << comm.size() << (comm.size() == 1 ? " rank" : " ranks") << " x "
              << omp_get_max_threads() << " threads, output in " << out << "\n";
  }

  train::Trainer trainer(config, train_set, val_set, &comm);
  trainer.SetFaultPlan(faults);
  trainer.EnableCheckpoints(checkpoints.store.get());
  if (f.Has("resume")) {
    trainer.Restore(checkpoints.resume ? &checkpoints.resume->checkpoint : nullptr);
  }
  if (!f.Has("no-scan") && !config.analysis().no_scan()) {
    data::LeakageOptions options;
    if (config.analysis().has_near_rmse()) options.near_rmse = config.analysis().near_rmse();
    const data::LeakageReport leak = ShardedLeakageScan(comm, train_set, val_set, options);
    trainer.SetLeakage({.exact = leak.exact,
                        .near = leak.near,
                        .label_conflicts = leak.label_conflicts,
                        .val_size = val_set.size(),
                        .photometric = leak.photometric,
                        .shifted = leak.shifted,
                        .mirrored = leak.mirrored});
    if (exporter) {
      exporter->SetLeakage({.exact = leak.exact,
                            .near = leak.near,
                            .photometric = leak.photometric,
                            .shifted = leak.shifted,
                            .mirrored = leak.mirrored,
                            .label_conflicts = leak.label_conflicts});
    }
    if (page) page->SetLeakage(leak, &train_set, &val_set);
    if (comm.is_root()) {
      WriteFileAtomic(fs::path(out) / "leakage.json", report::LeakageJson(leak));
      WriteFileAtomic(fs::path(out) / "leakage_pairs.svg",
                      report::LeakagePairsSvg(leak, train_set, val_set));
      std::cout << "leakage scan: " << leak.flagged()
                << " validation samples copy training samples (" << leak.exact << " exact, "
                << leak.near << " near, " << leak.photometric << " photometric, " << leak.shifted
                << " shifted, " << leak.mirrored << " mirrored; " << leak.label_conflicts
                << " pairs with another label), " << leak.seconds << " s; details in "
                << (fs::path(out) / "leakage.json").string() << " and leakage_pairs.svg\n";
    }
  }
  std::vector<std::string> class_names(config.model().class_names().begin(),
                                       config.model().class_names().end());
  report::ConsoleReporter console(std::cout, report::IsTerminal(stdout));
  report::RunFilesWriter files(out, class_names, &trainer.diagnosis());
  WeightsSaver saver(trainer, config.name(), (fs::path(out) / "weights.pb").string());
  std::optional<train::StopAtStep> stop;
  if (auto v = f.GetInt("stop-after-steps", 1)) stop.emplace(*v);
  std::unique_ptr<ControlPlane> control;
  AgreeOnStartup(comm, [&] {
    control = StartControlPlane(f, comm, config, &trainer.diagnosis(),
                                f.GetInt("stop-after-steps", 1).value_or(0));
  });
  if (comm.is_root()) {
    std::cout << trainer.model().Summary();
    std::cout.flush();
    trainer.AddObserver(&console);
    trainer.AddObserver(&saver);
    trainer.AddObserver(&files);
    if (control) {
      trainer.AddObserver(control->observer());
      trainer.SetControlSource(control->source());
    } else if (stop) {
      trainer.SetControlSource(&*stop);
    }
    if (page) AttachDashboard(*page, trainer);
    if (exporter) AttachMetrics(f, *exporter, trainer, out, config);
  }
  trainer.Run();
  // A stop ends without a validation (the resumed run does it), so the ranks exit within
  // a launcher's grace period; every rank knows it stopped.
  const train::EvalResult final_val =
      trainer.stopped() ? train::EvalResult{} : trainer.evaluator().Evaluate(val_set);
  if (comm.size() > 1) {
    EPOCHAL_LOG(kInfo, "rank ", comm.rank(), ": finished after global step ", trainer.global_step(),
                trainer.stopped() ? " (stopped by control word)" : "");
  }
  if (comm.is_root() && trainer.stopped()) {
    const std::string why = train::StopSignalReceived()
                                ? "on signal " + std::to_string(train::StopSignalNumber())
                                : std::string("by a stop control word");
    std::cout << "epochal: stopped " << why << " after global step " << trainer.global_step();
    if (config.checkpoint().disabled()) {
      std::cout << " (checkpoints are disabled)\n";
    } else {
      std::cout << "; continue with"
                << (comm.size() > 1
                        ? " (under the same launcher, " + std::to_string(comm.size()) + " ranks)"
                        : std::string())
                << ":\n  " << ResumeCommand(f, argc, argv, out) << "\n";
    }
  }
  if (comm.is_root()) {
    if (!final_val.confusion.empty()) {
      std::cout << "\nClassification report (validation):\n"
                << report::ClassificationReport(final_val.confusion, class_names);
    }
    std::cout << "\nRun files: " << out << "/{history.json,history.csv,batches.csv,"
              << (final_val.confusion.empty() ? "" : "report.txt,") << "weights.pb}\n";
    if (exporter) LingerForMetrics(f, *exporter);
    if (page) LingerForDashboard(f, *page);
  }
  return 0;
}

}  // namespace epochal::apps
