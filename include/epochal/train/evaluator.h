// Evaluator: the coordinator's measurements (DESIGN.md, "Gap decomposition"). After
// every epoch it runs validation, the two probe passes over a fixed training subset, the
// three gap terms and the per-class figures, and it keeps the aligned training loss and
// the replicas' weight hashes. `epochal evaluate` uses it on saved weights, without a
// Trainer.
//
// Every pass is sharded over all ranks and its sums reduced in double precision, so the
// result does not depend on the rank count. Collective contract: every rank calls the
// same members in the same order.
//
// Ownership: the model, communicator and datasets are borrowed and must outlive the
// evaluator. Thread safety: driven by one thread, the one that drives the model.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/dist/communicator.h"
#include "epochal/nn/model.h"
#include "epochal/optim/sgd.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/history.h"
#include "epochal/train/observer.h"
#include "epochal/v1/config.pb.h"

namespace epochal::train {

// The probe losses of the current weights on one fixed training subset:
//   train   P_train: training mode (dropout on, batch statistics) plus the L2 penalty;
//   nodrop  P_nodrop: batch statistics, no dropout, no penalty;
//   eval    P_eval: inference mode;
// with standard errors from the per-sample losses: of P_train and P_eval, and of the
// per-sample differences nodrop - train, eval - nodrop and eval - train (paired: the
// same samples give both sides). The inference-mode result gives the per-class figures.
struct ProbeLosses {
  double train = 0.0;
  double nodrop = 0.0;
  double eval = 0.0;
  double train_se = 0.0;
  double eval_se = 0.0;
  double dropout_se = 0.0;
  double batchnorm_se = 0.0;
  double regularization_se = 0.0;
  EvalResult eval_result;
};

class Evaluator {
 public:
  // `probe_source` (may be null: no probes) is the training set the probe subset is drawn
  // from; `per_rank_batch` is the training batch each rank trains on (the probe's
  // training-mode mini-batches have that size). `reducer` (may be null) is the
  // synchronized batch norm's, which the probes turn off and put back.
  Evaluator(const v1::ExperimentConfig& config, nn::Model& model, const dist::Communicator& comm,
            const data::Dataset* probe_source, int64_t per_rank_batch,
            nn::StatisticsReducer* reducer = nullptr);

  // Mean loss, accuracy and confusion matrix of the model on `dataset` in `mode`, each
  // rank evaluating its contiguous shard. A collective.
  EvalResult Evaluate(const data::Dataset& dataset, nn::Mode mode = nn::Mode::kInference);

  // The loss-gap probe: the fixed training subset. In training mode (kTrainFrozen:
  // dropout on with a fixed mask key, batch statistics over mini-batches of the training
  // batch size, nothing updated) it gives P_train without the penalty; in inference mode
  // P_eval. Mini-batches are cut from the probe the same way for any rank count and each
  // is evaluated whole by one rank, so the result does not depend on N. A collective.
  EvalResult EvaluateProbe(nn::Mode mode);
  // The three probes (a pass the model makes identical to another is not run); a
  // collective. Empty probes give zeros.
  ProbeLosses MeasureProbes();
  // Precise batch norm: replaces the running statistics with the mean of the batch
  // statistics of `batches` training batches of the training batch size (a fixed seeded
  // choice for `epoch`; forward only, no dropout, nothing else changes), averaged over
  // the ranks so that every replica holds the same values. A collective; nothing to do
  // without batch norm.
  void RecomputeBatchNormStatistics(int64_t batches, int epoch);
  const std::vector<int64_t>& probe_indices() const { return probe_; }

  // The end-of-epoch measurements into `record` (whose training fields are filled):
  // validation on `val_set`, then `after_validation` (tests kill the process there), the
  // probes, the gap terms, the per-class figures, the seconds each took, and on more than
  // one rank every replica's weights hash (throwing Error on every rank when they differ:
  // StopIfReplicasDiverged). Returns the validation result. A collective.
  EvalResult MeasureEpoch(const data::Dataset& val_set, EpochRecord* record,
                          const std::function<void()>& after_validation = {});

  // The four gap terms of `record` from its losses and the probes, their sum
  // gap_regularization, their standard errors (`val` gives V's), and the dominant term.
  static void SetGapTerms(const ProbeLosses& probes, const EvalResult& val, EpochRecord* record);
  // Sets the aligned training loss of the boundary at the end of `boundary_epoch`: the
  // mean per-sample loss of the batches within half an epoch on each side of it (each
  // batch weighted by its samples; by one where a history does not know them).
  static void SetAlignedLoss(int boundary_epoch, History* history);
  const RegularizationTraits& traits() const { return traits_; }

  // FNV-1a hash (hex) of this rank's parameters and (`with_state`) running statistics in
  // plain layout.
  std::string WeightsHash(bool with_state = true);
  // Every rank's WeightsHash, in rank order, complete on rank 0. A collective.
  std::vector<std::string> ReplicaHashes(bool with_state = true);
  // A collective: throws Error on every rank, naming `when` and the first rank that
  // differs, when `hashes` (ReplicaHashes(), read on rank 0) are not all equal.
  void StopIfReplicasDiverged(const std::vector<std::string>& hashes, const std::string& when);

 private:
  // Sums one rank's evaluation over `ids` in mini-batches of `batch` into `sums` (loss,
  // correct, count, squared loss) and the per-class arrays of `result`.
  // With `per_sample`, also appends each sample's loss to it, in `ids` order.
  void EvaluateBatches(const data::Dataset& dataset, std::span<const int64_t> ids, int64_t batch,
                       nn::Mode mode, int64_t mask_epoch, double* sums, EvalResult* result,
                       std::vector<double>* class_loss_sums,
                       std::vector<double>* per_sample = nullptr);
  // EvaluateProbe with this rank's per-sample losses.
  EvalResult EvaluateProbe(nn::Mode mode, std::vector<double>* per_sample);
  // Completes a result from the all-reduced sums.
  void FinishEvaluation(double* sums, EvalResult* result, std::vector<double>* class_loss_sums);

  const v1::ExperimentConfig& config_;
  nn::Model& model_;
  const dist::Communicator& comm_;
  const data::Dataset* probe_source_;
  int64_t per_rank_batch_;
  nn::StatisticsReducer* reducer_;
  RegularizationTraits traits_;
  std::vector<optim::ParamView> views_;  // For the L2 penalty.
  std::vector<int64_t> probe_;           // Training-set indices of the probe subset, sorted.
  // Batch buffers, sized once for the largest batch.
  std::vector<float> images_;
  std::vector<int32_t> labels_;
};

// The optimizer's view of every parameter of `model`, in registration order.
std::vector<optim::ParamView> ParamViews(nn::Model& model);

}  // namespace epochal::train
