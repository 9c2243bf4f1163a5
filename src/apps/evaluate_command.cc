// `epochal evaluate`: saved weights on the validation split, and with --probe the gap
// terms the weights show, measured by the same Evaluator training uses.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <tuple>
#include <vector>

#include "commands.h"
#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/nn/model.h"
#include "epochal/nn/precision.h"
#include "epochal/report/classification_report.h"
#include "epochal/train/checkpoint.h"
#include "epochal/train/config.h"
#include "epochal/train/evaluator.h"
#include "epochal/train/trainer.h"
#include "epochal/train/weights_io.h"
#include "export_command.h"
#include "flags.h"
#include "run_setup.h"
#include "startup.h"

namespace epochal::apps {

int Evaluate(const dist::Communicator& comm, int argc, char** argv) {
  Flags f("epochal evaluate",
          "Evaluates saved weights on the validation split of --config and prints the loss,\n"
          "the accuracy and a per-class report.");
  AddDataFlags(f);
  f.Value("weights", "FILE", "weights.pb written by 'epochal train'");
  f.Value("checkpoint", "FILE", "a checkpoint (.epck) written by 'epochal train': its weights");
  f.Switch("json", "print one JSON object (full precision) instead of the report");
  f.Value("limit-train", "N", "with --probe: use only the first N training samples", "all");
  f.Switch("probe",
           "also evaluate the training probe (its three modes) and print the dropout, batch-norm "
           "and data terms of the loss gap for these weights, with standard errors");
  f.Value("probe-samples", "N", "with --probe: training samples in the probe",
          "config's analysis.probe_samples, else 5000");
  f.Value("probe-seed", "S", "with --probe: seed of the probe's choice of samples",
          "config's analysis.probe_seed, else derived from the seed");
  f.Value("logits-out", "FILE",
          "also write every validation sample's logits as float32 NumPy [N, K] (the "
          "reference an exported model is checked against)");
  f.Value("precision", "MODE",
          "conv and dense arithmetic: auto (as `epochal train --precision auto`), f32 or bf16",
          "config's, else f32");
  if (!f.Parse(argc, argv, 2)) return 0;
  SetThreadsPerRank(f, comm.is_root());
  v1::ExperimentConfig config = LoadConfig(f);
  if (auto v = f.Get("precision")) {
    config.mutable_training()->set_precision(*v);
    train::ValidateExperimentConfig(config, "--precision", nullptr);
  }
  if (auto v = f.GetInt("probe-samples", 1)) config.mutable_analysis()->set_probe_samples(*v);
  if (auto v = f.GetInt("probe-seed", 0)) {
    config.mutable_analysis()->set_probe_seed(static_cast<uint64_t>(*v));
  }
  const auto weights = f.Get("weights");
  const auto checkpoint_path = f.Get("checkpoint");
  if (weights.has_value() == checkpoint_path.has_value()) {
    throw InputError("give one of --weights FILE (weights.pb) or --checkpoint FILE (.epck)");
  }
  std::optional<v1::Checkpoint> checkpoint;
  if (checkpoint_path) {
    try {
      checkpoint = train::ReadCheckpointFile(*checkpoint_path);
    } catch (const train::CheckpointError& e) {
      throw InputError(std::string("--checkpoint: ") + e.what() +
                       " (a weights.pb goes with --weights)");
    }
  }
  const data::Dataset val_set = LoadSplit(config, false);
  const bool probe = f.Has("probe");
  const data::Dataset train_set = probe ? LoadSplit(config, true) : data::Dataset{};
  train::CheckDatasetMatchesModel(val_set, config.model());
  if (probe) train::CheckDatasetMatchesModel(train_set, config.model());
  const train::BatchSplit batch = train::SplitBatch(config.training(), comm.size());
  const nn::PrecisionChoice precision = train::ResolveJobPrecision(config, batch.per_rank, comm);
  if (comm.is_root() && !config.training().precision().empty()) {
    EPOCHAL_LOG(kInfo, precision.reason);
  }
  nn::Model model(config.model(), batch.per_rank, config.training().seed(), precision.precision);
  if (checkpoint) {
    train::LoadWeights(model, checkpoint->weights(), *checkpoint_path);
  } else {
    train::LoadWeights(model, *weights);
  }
  train::Evaluator evaluator(config, model, comm, probe ? &train_set : nullptr, batch.per_rank);
  const train::EvalResult r = evaluator.Evaluate(val_set);
  const train::ProbeLosses p = probe ? evaluator.MeasureProbes() : train::ProbeLosses{};
  std::vector<std::string> class_names(config.model().class_names().begin(),
                                       config.model().class_names().end());
  if (!comm.is_root()) return 0;
  if (auto path = f.Get("logits-out")) {
    const double top1 = WriteLogitsNpy(model, val_set, 256, *path);
    std::fprintf(stderr, "logits: %s (%lld x %lld, top-1 accuracy %.6f)\n", path->c_str(),
                 static_cast<long long>(val_set.size()),
                 static_cast<long long>(model.num_classes()), top1);
  }
  train::EpochRecord gap;  // The gap terms these weights show (no training loss here).
  gap.val_loss = r.loss;
  train::Evaluator::SetGapTerms(p, r, &gap);
  const auto probe_n = static_cast<long long>(evaluator.probe_indices().size());
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
                    ", \"probe_train_loss\": %.17g, \"probe_train_loss_se\": %.17g, "
                    "\"probe_nodrop_loss\": %.17g, \"probe_eval_loss\": %.17g, "
                    "\"probe_eval_loss_se\": %.17g, \"val_loss_se\": %.17g, "
                    "\"probe_samples\": %lld",
                    p.train, p.train_se, p.nodrop, p.eval, p.eval_se, r.loss_se, probe_n);
      json += line;
      for (const auto& [name, value, se] :
           {std::tuple{"dropout", gap.gap_dropout, gap.gap_dropout_se},
            {"batchnorm", gap.gap_batchnorm, gap.gap_batchnorm_se},
            {"regularization", gap.gap_regularization, gap.gap_regularization_se},
            {"data", gap.gap_data, gap.gap_data_se}}) {
        std::snprintf(line, sizeof line, ", \"gap_%s\": %.17g, \"gap_%s_se\": %.17g", name, *value,
                      name, *se);
        json += line;
      }
    }
    std::cout << json << "}\n";
    return 0;
  }
  std::snprintf(line, sizeof line, "val_loss: %.4f - val_accuracy: %.4f (%lld samples)\n", r.loss,
                r.accuracy, static_cast<long long>(r.count));
  std::cout << line;
  if (probe) {
    std::snprintf(line, sizeof line,
                  "probe (%lld training samples): P_train %.4f, P_nodrop %.4f, P_eval %.4f\n",
                  probe_n, p.train, p.nodrop, p.eval);
    std::cout << line;
    const std::vector<std::string> absent =
        train::RegularizationTraits::FromConfig(config).AbsentTerms();
    std::cout << "gap terms:";
    for (const auto& [name, value, se] :
         {std::tuple{"dropout", gap.gap_dropout, gap.gap_dropout_se},
          {"batchnorm", gap.gap_batchnorm, gap.gap_batchnorm_se},
          {"data", gap.gap_data, gap.gap_data_se}}) {
      if (std::find(absent.begin(), absent.end(), name) != absent.end()) {
        std::cout << " " << name << " (not present)";
        continue;
      }
      std::snprintf(line, sizeof line, " %s %+.4f \u00b1 %.4f", name, *value, *se);
      std::cout << line;
    }
    std::cout << "\n";
  }
  std::cout << report::ClassificationReport(r.confusion, class_names);
  return 0;
}

}  // namespace epochal::apps
