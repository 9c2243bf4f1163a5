// Events the trainer publishes. Reporting, metrics and control subscribe to them, so the
// training loop itself never includes a console, Prometheus or gRPC header.
// Observers run on the training thread, between steps: they must be quick.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "epochal/train/history.h"
#include "epochal/train/rank_timing.h"

namespace epochal::train {

struct StepEvent {
  int epoch = 0;                 // 1-based.
  int64_t step_in_epoch = 0;     // 1-based.
  int64_t global_step = 0;       // Steps done since the run started, this one included.
  int64_t samples_in_epoch = 0;  // Samples trained so far this epoch.
  int64_t samples_per_epoch = 0;
  double epoch_progress = 0.0;  // Fractional epoch, e.g. 0.5 half-way through epoch 1.
  double batch_loss = 0.0;      // Mean loss of this step's global batch.
  double running_loss = 0.0;    // Mean loss of the epoch so far (Keras `loss`).
  double running_accuracy = 0.0;
  double learning_rate = 0.0;
  int64_t batch_samples = 0;  // Samples in this step's global batch.
  int64_t batch_correct = 0;  // Of which classified correctly.
};

// A validation pass: mean loss, accuracy and the confusion matrix (row = true label).
struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  int64_t count = 0;
  // Standard error of `loss` as a mean of per-sample losses: sd / sqrt(count).
  double loss_se = 0.0;
  std::vector<int64_t> confusion;  // classes x classes, row-major.
  std::vector<double> class_loss;  // Mean loss of the samples of each true class.
  // Accuracy of each true class (recall); 0 for a class without samples.
  std::vector<double> ClassAccuracy() const;
};

class TrainingObserver {
 public:
  virtual ~TrainingObserver() = default;
  virtual void OnEpochStart(int /*epoch*/, int /*total_epochs*/, int64_t /*samples*/) {}
  virtual void OnStep(const StepEvent&) {}
  // After validation; `history` already holds `record` as its last epoch.
  virtual void OnEpochEnd(const EpochRecord& /*record*/, const EvalResult& /*validation*/,
                          const History& /*history*/) {}
  virtual void OnTrainingEnd(const History& /*history*/, const EvalResult& /*validation*/) {}
  // A control word took effect (pause, resume, stop, new learning rate, checkpoint).
  // For a checkpoint or stop this comes before the checkpoint is written.
  virtual void OnControl(const ControlEvent& /*event*/) {}
  // Rank 0, once a checkpoint is durable (written, fsynced and renamed into place): its
  // path, why it was written ("epoch", "steps", "control", "stop") and its global step.
  virtual void OnCheckpoint(const std::string& /*path*/, const std::string& /*reason*/,
                            int64_t /*global_step*/) {}
  // Rank 0, after the ranks' step timings were gathered (every few seconds when
  // Trainer::SetRankTimingInterval asks for it, and at every epoch end): the increments
  // of each rank's histograms since the previous snapshot.
  virtual void OnRankTimings(const RankTimingSnapshot& /*snapshot*/) {}
};

}  // namespace epochal::train
