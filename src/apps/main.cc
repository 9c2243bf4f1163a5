// The epochal command-line tool: `epochal train`, `epochal evaluate`.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

#include "checkpoint_flags.h"
#include "control_command.h"
#include "dashboard_flags.h"
#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/data/idx.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/mpi_environment.h"
#include "epochal/report/atomic_file.h"
#include "epochal/report/classification_report.h"
#include "epochal/report/console_reporter.h"
#include "epochal/report/history_reader.h"
#include "epochal/report/leakage_json.h"
#include "epochal/report/plots.h"
#include "epochal/report/progress_bar.h"
#include "epochal/train/config.h"
#include "epochal/train/stop_signal.h"
#include "epochal/train/trainer.h"
#include "epochal/train/weights_io.h"
#include "export_command.h"
#include "flags.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "html_report_command.h"
#include "metrics_setup.h"
#include "scan_command.h"
#include "startup.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;

constexpr char kUsage[] = R"(usage: epochal <command> [flags]

epochal trains convolutional networks with oneDNN and explains, every epoch, why the
validation loss sits where it does against the training loss.

commands:
  train      train a model described by a config file (configs/*.textproto)
  evaluate   evaluate saved weights on the validation split
  scan       look for validation samples that leak from the training set
  report     re-render a run's plots and print its table, decomposition and diagnosis;
             --html writes one self-contained report.html
  export     write trained weights as an ONNX model (--format onnx)
  ctl        steer a running job (train --control-port): status, pause, set-lr, stop...

Run 'epochal <command> --help' for the flags of a command.
)";

void AddDataFlags(Flags& f) {
  f.Value("config", "FILE", "experiment config in Protobuf text format (required)");
  f.Value("data-dir", "DIR", "directory holding the four IDX files",
          "config's data.data_dir, else /usr/share/datasets/fashion-mnist");
  f.Value("limit-val", "N", "use only the first N validation samples", "all");
  f.Value("threads", "T", "oneDNN/OpenMP threads", "all cores");
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
  return config;
}

std::string DataPath(const v1::DataConfig& d, const std::string& file) {
  return (fs::path(d.data_dir()) / file).string();
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

std::string DefaultRunDir() {
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return std::string("runs/") + stamp;
}

// Saves weights.pb after every epoch, so an interrupted run keeps its last epoch.
class WeightsSaver final : public train::TrainingObserver {
 public:
  WeightsSaver(train::Trainer& trainer, std::string name, std::string path)
      : trainer_(trainer), name_(std::move(name)), path_(std::move(path)) {}
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult&,
                  const train::History&) override {
    train::SaveWeights(trainer_.model(), name_, record.epoch, path_);
  }

 private:
  train::Trainer& trainer_;
  std::string name_, path_;
};

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
  f.Value("out", "DIR", "output directory", "runs/<timestamp>");
  f.Value("limit-train", "N", "use only the first N training samples", "all");
  f.Switch("sync-batch-norm", "synchronize batch-norm statistics over ranks");
  f.Switch("fixed-global-batch", "--batch-size is the global batch, shared by the ranks");
  f.Value("stop-after-steps", "N", "stop every rank after global step N (as a control word would)");
  f.Switch("no-scan", "skip the leakage scan before training");
  f.Value("bucket-bytes", "N", "gradient fusion bucket threshold", "config's, else 64 KiB");
  f.Value("allreduce-progress", "MODE",
          "how all-reduces advance during backward: auto (= poll), poll or thread",
          "config's, else auto");
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
    SetThreadsPerRank(f);
    config = LoadConfig(f);
    if (f.Has("sync-batch-norm")) config.mutable_training()->set_sync_batch_norm(true);
    if (f.Has("fixed-global-batch")) config.mutable_training()->set_fixed_global_batch(true);
    if (auto v = f.GetInt("bucket-bytes", 1)) config.mutable_training()->set_bucket_bytes(*v);
    if (auto v = f.Get("allreduce-progress")) {
      config.mutable_training()->set_allreduce_progress(*v);
    }
    ApplyCheckpointFlags(f, &config);
    train::ValidateExperimentConfig(config, "command-line checkpoint flags", nullptr);
    if (comm.is_root()) {
      out = f.Get("out").value_or(DefaultRunDir());
      std::error_code ec;
      fs::create_directories(out, ec);
      if (ec) throw InputError("cannot create output directory " + out + ": " + ec.message());
      std::string text;
      google::protobuf::TextFormat::PrintToString(config, &text);
      report::WriteTextFileAtomic(fs::path(out) / "config.textproto", text);
      checkpoints = PrepareCheckpoints(f, config, out, comm.size());
    }
    train_set = LoadSplit(config, true);
    val_set = LoadSplit(config, false);
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
    trainer.SetLeakage({leak.exact, leak.near, leak.label_conflicts, val_set.size()});
    if (exporter) exporter->SetLeakage(leak.exact, leak.near, leak.label_conflicts);
    if (page) page->SetLeakage(leak, &train_set, &val_set);
    if (comm.is_root()) {
      report::WriteTextFileAtomic(fs::path(out) / "leakage.json", report::LeakageJson(leak));
      std::cout << "leakage scan: " << leak.exact << " exact and " << leak.near
                << " near duplicates of training samples in the validation set ("
                << leak.label_conflicts << " with another label), " << leak.seconds
                << " s; details in " << (fs::path(out) / "leakage.json").string() << "\n";
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
  const train::EvalResult final_val = trainer.Evaluate(val_set);
  if (comm.size() > 1) {
    EPOCHAL_LOG(kInfo, "rank ", comm.rank(), ": finished after global step ", trainer.global_step(),
                trainer.stopped() ? " (stopped by control word)" : "");
  }
  if (comm.is_root() && trainer.stopped() && train::StopSignalReceived()) {
    std::cout << "epochal: stopped on signal " << train::StopSignalNumber() << " after global step "
              << trainer.global_step()
              << (config.checkpoint().disabled() ? " (checkpoints are disabled)"
                                                 : "; continue with --resume auto")
              << "\n";
  }
  if (comm.is_root()) {
    std::cout << "\nClassification report (validation):\n"
              << report::ClassificationReport(final_val.confusion, class_names)
              << "\nRun files: " << out << "/{history.json,history.csv,batches.csv,report.txt,"
              << "weights.pb}\n";
    if (exporter) LingerForMetrics(f, *exporter);
    if (page) LingerForDashboard(f, *page);
  }
  return 0;
}

int Evaluate(const dist::Communicator& comm, int argc, char** argv) {
  Flags f("epochal evaluate",
          "Evaluates saved weights on the validation split of --config and prints the loss,\n"
          "the accuracy and a per-class report.");
  AddDataFlags(f);
  f.Value("weights", "FILE", "weights.pb written by 'epochal train'");
  f.Value("checkpoint", "FILE", "same as --weights (a run's weights.pb)");
  f.Switch("json", "print one JSON object (full precision) instead of the report");
  f.Value("limit-train", "N", "with --probe: use only the first N training samples", "all");
  f.Switch("probe",
           "also evaluate the training probe (both modes) and print the regularization and "
           "data terms of the loss gap for these weights");
  f.Value("logits-out", "FILE",
          "also write every validation sample's logits as float32 NumPy [N, K] (the "
          "reference an exported model is checked against)");
  if (!f.Parse(argc, argv, 2)) return 0;
  SetThreadsPerRank(f);
  const v1::ExperimentConfig config = LoadConfig(f);
  const auto weights = f.Get("weights") ? f.Get("weights") : f.Get("checkpoint");
  if (!weights) throw InputError("--weights FILE (or --checkpoint FILE) is required");
  const data::Dataset val_set = LoadSplit(config, false);
  const bool probe = f.Has("probe");
  const data::Dataset train_set = probe ? LoadSplit(config, true) : data::Dataset{};
  train::Trainer trainer(config, probe ? train_set : val_set, val_set, &comm);
  train::LoadWeights(trainer.model(), *weights);
  const train::EvalResult r = trainer.Evaluate(val_set);
  const train::Trainer::ProbeLosses p =
      probe ? trainer.MeasureProbes() : train::Trainer::ProbeLosses{};
  std::vector<std::string> class_names(config.model().class_names().begin(),
                                       config.model().class_names().end());
  if (!comm.is_root()) return 0;
  if (auto path = f.Get("logits-out")) {
    const double top1 = WriteLogitsNpy(trainer.model(), val_set, 256, *path);
    std::fprintf(stderr, "logits: %s (%lld x %lld, top-1 accuracy %.6f)\n", path->c_str(),
                 static_cast<long long>(val_set.size()),
                 static_cast<long long>(trainer.model().num_classes()), top1);
  }
  const double regularization = p.eval - p.train, data_term = r.loss - p.eval;
  const auto probe_n = static_cast<long long>(trainer.probe_indices().size());
  char line[400];
  if (f.Has("json")) {
    std::string json = "{";
    std::snprintf(line, sizeof line,
                  "\"val_loss\": %.17g, \"val_accuracy\": %.17g, \"samples\": %lld, "
                  "\"ranks\": %d",
                  r.loss, r.accuracy, static_cast<long long>(r.count), comm.size());
    json += line;
    if (probe) {
      std::snprintf(line, sizeof line,
                    ", \"probe_train_loss\": %.17g, \"probe_eval_loss\": %.17g, "
                    "\"gap_regularization\": %.17g, \"gap_data\": %.17g, "
                    "\"probe_samples\": %lld",
                    p.train, p.eval, regularization, data_term, probe_n);
      json += line;
    }
    std::cout << json << "}\n";
    return 0;
  }
  std::snprintf(line, sizeof line, "val_loss: %.4f - val_accuracy: %.4f (%lld samples)\n", r.loss,
                r.accuracy, static_cast<long long>(r.count));
  std::cout << line;
  if (probe) {
    std::snprintf(line, sizeof line,
                  "probe (%lld training samples): P_train %.4f, P_eval %.4f; gap terms: "
                  "regularization %+.4f, data %+.4f\n",
                  probe_n, p.train, p.eval, regularization, data_term);
    std::cout << line;
  }
  std::cout << report::ClassificationReport(r.confusion, class_names);
  return 0;
}

// Reads leakage.json's counts, if the run has one.
std::optional<train::LeakageSummary> ReadLeakage(const fs::path& path, int64_t val_size) {
  if (!fs::exists(path)) return std::nullopt;
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  google::protobuf::Struct root;
  if (!google::protobuf::util::JsonStringToMessage(text.str(), &root).ok()) {
    throw InputError(path.string() + ": not valid JSON");
  }
  const auto number = [&root](const char* key) -> int64_t {
    auto it = root.fields().find(key);
    return it == root.fields().end() ? 0 : static_cast<int64_t>(it->second.number_value());
  };
  const int64_t scanned = number("val_samples");
  return train::LeakageSummary{number("exact"), number("near"), number("label_conflicts"),
                               scanned > 0 ? scanned : val_size};
}

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
  train::Diagnosis diagnosis(train::DiagnosisThresholds::FromConfig(run.config.analysis()));
  const int64_t val_size = run.config.data().limit_val();
  if (auto leak = ReadLeakage(dir / "leakage.json", val_size)) diagnosis.SetLeakage(*leak);
  train::History replay = h;
  replay.epochs.clear();
  for (train::EpochRecord& e : h.epochs) {
    replay.epochs.push_back(e);
    e.findings.clear();
    for (const train::Finding& finding : diagnosis.Update(replay)) {
      e.findings.push_back(finding.name + ": " + finding.explanation);
    }
  }
  report::WritePlots(h, dir);

  std::printf("%5s %8s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "epoch", "loss", "acc", "val_loss",
              "val_acc", "P_train", "P_eval", "timing", "regular.", "data", "aligned");
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
    std::printf("%5d %8.4f %8.4f %8.4f %8.4f %s %s %s %s %s %s\n", e.epoch, e.loss, e.accuracy,
                e.val_loss, e.val_accuracy, opt(e.probe_train_loss).c_str(),
                opt(e.probe_eval_loss).c_str(), opt(e.gap_timing).c_str(),
                opt(e.gap_regularization).c_str(), opt(e.gap_data).c_str(),
                opt(e.aligned_train_loss).c_str());
  }
  std::printf("\nDecomposition (val_loss - loss = timing + regularization + data):\n");
  for (const train::EpochRecord& e : h.epochs) {
    const std::string line = train::GapLine(e);
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

}  // namespace
}  // namespace epochal::apps

int main(int argc, char** argv) {
  using namespace epochal;
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "ctl") {  // A client: no MPI.
    try {
      return apps::Ctl(argc, argv);
    } catch (const std::exception& e) {
      std::cerr << "epochal ctl: error: " << e.what() << "\n";
      return 2;
    }
  }
  // MPI only when a launcher started us: a plain `epochal train` needs no MPI at all.
  std::optional<dist::MpiEnvironment> mpi;
  std::optional<dist::Communicator> comm;
  try {
    // MPI_THREAD_MULTIPLE when available lets the gradient all-reduce progress on its own
    // thread (training.allreduce_progress); the main thread alone needs only FUNNELED.
    if (dist::MpiEnvironment::LaunchedByMpi()) {
      mpi.emplace(&argc, &argv, MPI_THREAD_FUNNELED, MPI_THREAD_MULTIPLE);
    }
    comm.emplace(dist::Communicator::WorldOrSolo());
  } catch (const std::exception& e) {
    std::cerr << "epochal: cannot start MPI: " << e.what() << "\n";
    return 1;
  }
  const std::string who =
      comm->size() > 1 ? " (rank " + std::to_string(comm->rank()) + ")" : std::string();
  int code = 0;
  std::string error;
  try {
    if (command == "train") return apps::Train(*comm, argc, argv);
    if (command == "evaluate") return apps::Evaluate(*comm, argc, argv);
    if (command == "scan") return apps::Scan(*comm, argc, argv);
    if (command == "report") return apps::Report(*comm, argc, argv);
    if (command == "export") return apps::Export(*comm, argc, argv);
    if (command == "--help" || command == "-h" || command == "help") {
      if (comm->is_root()) std::cout << apps::kUsage;
      return 0;
    }
    if (comm->is_root()) {
      std::cerr << (command.empty() ? "epochal: no command given\n"
                                    : "epochal: unknown command '" + command + "'\n")
                << apps::kUsage;
    }
    return 2;
  } catch (const apps::StartupFailure& f) {
    // Every rank agreed on the failure; the first failing rank says why.
    if (!f.message.empty()) std::cerr << "epochal " << command << ": error: " << f.message << "\n";
    return f.exit_code;
  } catch (const InputError& e) {
    error = e.what();
    code = 2;
  } catch (const std::exception& e) {
    error = e.what();
    code = 1;
  }
  std::cerr << "epochal " << command << who << ": error: " << error << "\n";
  // A failure on one rank after start-up would leave the others blocked in their next
  // collective: end the whole job now.
  if (comm->size() > 1) comm->Abort(code);
  return code;
}
