// The diagnosis: turns each epoch's loss-gap decomposition into named findings with the
// numbers behind them and one sentence a practitioner understands. Thresholds come from
// the config's `analysis` message; docs/loss-gap.md explains each finding.
// Thread safety: a Diagnosis is used by one thread.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "epochal/train/history.h"
#include "epochal/v1/config.pb.h"

namespace epochal::train {

// A term-based finding needs its term past `term` and past kStandardErrors of its
// standard errors (docs/loss-gap.md, "Uncertainty").
inline constexpr double kStandardErrors = 2.0;

struct DiagnosisThresholds {
  double term = 0.02;
  double overfit = 0.05;
  double overfit_rise = 0.01;
  // OVER_REGULARIZED: the cost of dropout and L2 as a share of the clean training loss,
  // and as a multiple of the generalization gap (config.proto's AnalysisConfig).
  double over_regularized_ratio = 0.35;
  double over_regularized_gap_ratio = 3.0;
  double leakage_fraction = 0.001;
  static DiagnosisThresholds FromConfig(const v1::AnalysisConfig& config);
};

// Which train/inference differences a model has: the terms it cannot have are exactly 0.
struct RegularizationTraits {
  std::vector<float> dropout_rates;  // Of the dropout layers with a rate above 0.
  float weight_decay = 0.0f;
  int batch_norm_layers = 0;
  float batch_norm_momentum = 0.0f;  // The largest (slowest to forget), when any.
  bool has_dropout_term() const { return !dropout_rates.empty() || weight_decay > 0; }
  bool has_batchnorm_term() const { return batch_norm_layers > 0; }
  // "dropout" and/or "batchnorm": the terms this model cannot have.
  std::vector<std::string> AbsentTerms() const;
  static RegularizationTraits FromConfig(const v1::ExperimentConfig& config);
};

// What the leakage scan found before training: validation samples by the simplest kind
// of training twin they have (each sample counts once).
struct LeakageSummary {
  int64_t exact = 0;  // Validation samples with a byte-identical training twin.
  int64_t near = 0;   // With a near twin only.
  int64_t label_conflicts = 0;
  int64_t val_size = 0;
  int64_t photometric = 0;  // A training sample with gain/offset changed.
  int64_t shifted = 0;      // Shifted by a few pixels.
  int64_t mirrored = 0;     // Mirrored left-right.

  // LEAKAGE needs at least this many flagged samples besides the fraction: one or two
  // twins say little about how a small validation set was drawn (docs/loss-gap.md).
  static constexpr int64_t kMinFlagged = 3;

  int64_t flagged() const { return exact + near + photometric + shifted + mirrored; }
  // Whether the flagged samples are at least `fraction` of the validation set and at
  // least kMinFlagged.
  bool Raises(double fraction) const {
    return val_size > 0 && flagged() >= kMinFlagged &&
           static_cast<double>(flagged()) >= fraction * static_cast<double>(val_size);
  }
};

struct Finding {
  std::string name;  // TIMING, REGULARIZATION, VALIDATION_EASIER, LEAKAGE, ...
  int first_epoch = 0;
  int last_epoch = 0;
  std::string explanation;                // One sentence, with the numbers.
  std::map<std::string, double> numbers;  // The figures behind it, at last_epoch.
};

class Diagnosis {
 public:
  explicit Diagnosis(DiagnosisThresholds thresholds, RegularizationTraits traits = {})
      : thresholds_(thresholds), traits_(std::move(traits)) {}
  // The run's precise-batch-norm setting (training.recompute_bn_stats), which the batch-norm
  // finding's advice depends on.
  void SetRecomputedBatchNorm(int64_t batches) { recompute_bn_batches_ = batches; }
  void SetLeakage(const LeakageSummary& leakage) { leakage_ = leakage; }

  // Evaluates the last epoch of `history`; returns the findings that hold there (and
  // extends the epoch ranges of findings that held at the previous epoch too).
  std::vector<Finding> Update(const History& history);
  // Rebuilds the findings from `history` epoch by epoch, as training raised them (a
  // resumed run, `epochal report`); returns each epoch's findings, in epoch order.
  std::vector<std::vector<Finding>> Replay(const History& history);
  // Every finding, with the epoch range where it held, in order of first appearance.
  const std::vector<Finding>& findings() const { return findings_; }
  // diagnosis.json: thresholds, leakage, findings and a per-epoch line.
  std::string Json(const History& history) const;
  const DiagnosisThresholds& thresholds() const { return thresholds_; }

 private:
  // Whether the leakage scan flagged enough of the validation set to raise LEAKAGE.
  bool LeakageFlagged() const;
  // REGULARIZATION's sentence, naming the parts this model has.
  std::string RegularizationSentence(const EpochRecord& r) const;
  // OVER_REGULARIZED's conditions on epoch index `i` of `history` (docs/loss-gap.md);
  // with `require_slowing`, also that validation loss improved less than the cost there.
  bool OverRegularizedAt(const History& history, size_t i, bool require_slowing) const;

  DiagnosisThresholds thresholds_;
  RegularizationTraits traits_;
  int64_t recompute_bn_batches_ = 0;
  std::optional<LeakageSummary> leakage_;
  std::vector<Finding> findings_;
};

// "val_loss - loss = -0.2152 = timing -0.1201 ± 0.0040 + dropout -0.0652 ± 0.0021 +
// batchnorm -0.0100 ± 0.0015 + data -0.0199 ± 0.0052 (dominant: timing)", a term in
// `absent_terms` written "batchnorm: not present"; an empty string when the epoch has no
// decomposition.
std::string GapLine(const EpochRecord& record, const std::vector<std::string>& absent_terms = {});

}  // namespace epochal::train
