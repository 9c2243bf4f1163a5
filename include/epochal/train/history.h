// The record of a run: one EpochRecord per epoch, one BatchRecord per logged step, and
// the rendered config. The coordinator (rank 0) appends to it; report writes it out as
// history.json / history.csv / batches.csv. Plain values, header-only.
// Thread safety: none; owned by the coordinator thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace epochal::train {

// Everything known about one epoch. Losses are per-sample means (categorical
// cross-entropy, plus the L2 penalty where training computes it).
struct EpochRecord {
  // 1-based; epoch e spans fractional epochs (e-1, e].
  int epoch = 0;
  // L_run(e): mean of the per-sample training losses seen during the epoch (Keras `loss`).
  double loss = 0.0;
  // Training accuracy over the same samples.
  double accuracy = 0.0;
  // V(e): validation loss in inference mode after the epoch.
  double val_loss = 0.0;
  double val_accuracy = 0.0;
  // Wall-clock seconds of the epoch (training only, excluding validation and probes).
  double seconds = 0.0;
  // Wall-clock seconds of the validation pass and of the two probe passes after it.
  double validation_seconds = 0.0;
  double probe_seconds = 0.0;
  // Training throughput over all ranks.
  double images_per_second = 0.0;
  // Learning rate of the epoch's last step.
  double lr = 0.0;
  // Of the epoch's steps, the share that ran: 1 for a complete epoch, less for the last
  // epoch of a stopped run (History::partial_epoch).
  double epoch_fraction = 1.0;
  // P_train(e): probe subset loss computed as training computes it (dropout on, batch
  // statistics, L2 penalty), with no update. Absent when probes are off.
  std::optional<double> probe_train_loss;
  // P_nodrop(e): the same probe with batch statistics but dropout off and no penalty.
  std::optional<double> probe_nodrop_loss;
  // P_eval(e): the same probe subset in inference mode.
  std::optional<double> probe_eval_loss;
  // The four terms (docs/loss-gap.md); together they sum to val_loss - loss:
  //   timing     P_train - L_run
  //   dropout    P_nodrop - P_train   (dropout and the L2 penalty)
  //   batchnorm  P_eval - P_nodrop    (running instead of batch statistics)
  //   data       V - P_eval
  // and regularization = dropout + batchnorm. A term the model cannot have (no dropout
  // and no L2; no batch norm) is exactly 0 with a standard error of 0.
  std::optional<double> gap_timing;
  std::optional<double> gap_dropout;
  std::optional<double> gap_batchnorm;
  std::optional<double> gap_regularization;
  std::optional<double> gap_data;
  // Their standard errors, from the per-sample losses (paired where one set of samples
  // gives both sides of a difference).
  std::optional<double> gap_timing_se;
  std::optional<double> gap_dropout_se;
  std::optional<double> gap_batchnorm_se;
  std::optional<double> gap_regularization_se;
  std::optional<double> gap_data_se;
  // Mean per-sample training loss over the half epoch on each side of the boundary at
  // the end of this epoch (batches weighted by their samples); known half-way through the
  // next epoch, absent until then (and for the last epoch).
  std::optional<double> aligned_train_loss;
  // Diagnosis findings raised this epoch, e.g. "TIMING: ...".
  std::vector<std::string> findings;
  // Per true class (label order): mean loss and accuracy on the validation set and on
  // the probe subset (inference mode). Empty when not measured.
  std::vector<double> val_class_loss, val_class_accuracy;
  std::vector<double> probe_class_loss, probe_class_accuracy;
  // The term with the largest magnitude ("timing", "dropout", "batchnorm", "data"), if
  // any.
  std::string dominant_term;
  // Data-parallel runs: one entry per rank, in rank order.
  struct RankTiming {
    double step_ms = 0;            // Mean wall time of a step.
    double data_ms = 0;            // Of which: gathering the batch.
    double compute_ms = 0;         // Forward and backward.
    double allreduce_wait_ms = 0;  // Exposed gradient all-reduce wait (not hidden).
    double allreduce_ms = 0;       // All-reduce time from start to completion, hidden or not.
    // Of allreduce_wait_ms: waiting for a slower rank to finish its backward pass (load
    // imbalance or noise), not for the network. Measured with a one-step lag, over the
    // epoch's steps but its first.
    double straggler_wait_ms = 0;
  };
  std::vector<RankTiming> rank_timings;
  // Hash of each rank's weights and running statistics after the epoch (hex); all equal
  // when the replicas agree.
  std::vector<std::string> replica_hashes;
};

// One logged training step (global: all ranks combined).
struct BatchRecord {
  // Fractional epoch at the end of the step, e.g. 0.5 half-way through epoch 1.
  double epoch_progress = 0.0;
  // Mean per-sample loss of the global batch.
  double loss = 0.0;
  // Rate the step used.
  double lr = 0.0;
  // Samples in the global batch (0 when unknown: a history written before it was kept).
  int64_t samples = 0;
};

// A change made through the control word, recorded with the step it took effect at.
struct ControlEvent {
  int64_t step = 0;  // The first global step the change applies to.
  std::string action;
  double learning_rate = 0.0;
};

struct History {
  // The run's config, already rendered as a JSON object; empty when unknown.
  std::string config_json;
  // Ranks in the job.
  int world_size = 1;
  // The arithmetic the run used ("f32" or "bf16"; empty when unknown: a history written
  // before it was kept) and the resolver's one-line reason ("precision auto: f32, ...").
  // A resumed run records its own, which --precision auto may have chosen differently.
  std::string precision;
  std::string precision_reason;
  std::vector<ControlEvent> control_events;
  std::vector<EpochRecord> epochs;
  std::vector<BatchRecord> batches;
  // The terms this model cannot have ("dropout": no dropout layer and no L2 penalty;
  // "batchnorm": no batch norm), reported as not present.
  std::vector<std::string> absent_terms;
  // A stopped run's last epoch, cut short: its training figures and epoch_fraction,
  // without validation, probes or findings (the resumed run evaluates the full epoch).
  std::optional<EpochRecord> partial_epoch;
};

}  // namespace epochal::train
