// The training loop, single-process or data-parallel over MPI.
//
// Every rank runs the same model replica on its own contiguous share of each global
// batch. Gradients are all-reduced in fusion buckets that start while backward is still
// running (dist::GradientBucketer); the step's loss sum, correct count and sample count,
// and rank 0's control word, ride in the last bucket, so a step costs no collective
// beyond the gradient all-reduce. A flag in the same extras lets rank 0 ask, every few
// seconds, for one gather of every rank's step-timing histograms (rank_timing.h) at that
// step boundary. Validation is sharded over all ranks and its sums reduced in double
// precision, so its result does not depend on the rank count.
//
// Collective contract: every rank constructs the Trainer and calls Run() / Evaluate()
// in the same order with the same config. Every random choice is a pure function of
// (seed, epoch, sample id), so a run is reproducible for a given rank and thread count.
// Thread safety: a Trainer is driven by one thread.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/control_word.h"
#include "epochal/nn/model.h"
#include "epochal/optim/sgd.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/fault_plan.h"
#include "epochal/train/history.h"
#include "epochal/train/observer.h"
#include "epochal/train/rank_timing.h"
#include "epochal/v1/checkpoint.pb.h"
#include "epochal/v1/config.pb.h"

namespace epochal::dist {
class GradientBucketer;
}

namespace epochal::train {

class CheckpointStore;

// Decides, on rank 0 at each step boundary, what every rank does next (the gRPC
// control plane implements it; tests inject a stop at a given step).
class ControlSource {
 public:
  virtual ~ControlSource() = default;
  // Called on rank 0 before global step `step` (1-based) runs; the word takes effect on
  // every rank once that step has finished.
  virtual dist::ControlWord Poll(int64_t step) = 0;
};

// Stops the run after global step `step` (tests, and `--stop-after-steps`).
class StopAtStep final : public ControlSource {
 public:
  explicit StopAtStep(int64_t step) : step_(step) {}
  dist::ControlWord Poll(int64_t step) override {
    dist::ControlWord w;
    if (step == step_) w.action = dist::ControlWord::kStop;
    w.step = step;
    return w;
  }

 private:
  int64_t step_;
};

class Trainer {
 public:
  // `config` must be validated (LoadExperimentConfig). The datasets must match the
  // model's input shape and class count. `comm` (not owned; null: single process)
  // must outlive the trainer. Rank 0's initial weights are broadcast to every rank.
  Trainer(const v1::ExperimentConfig& config, const data::Dataset& train_set,
          const data::Dataset& val_set, const dist::Communicator* comm = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Observers are not owned and must outlive Run(). Usually attached on rank 0 only.
  void AddObserver(TrainingObserver* observer) { observers_.push_back(observer); }
  // Rank 0 only: gather every rank's step-timing histograms at the first step boundary
  // after `seconds` have passed since the last gather (0: only at epoch ends) and hand
  // them to the observers (OnRankTimings). The request rides in the step's control extras.
  void SetRankTimingInterval(double seconds) { timing_interval_ = seconds; }
  // Consulted on rank 0 only; not owned.
  void SetControlSource(ControlSource* source) { control_ = source; }

  // Checkpoints (docs/fault-tolerance.md): every rank calls this before Run(); rank 0
  // passes the store it writes to (not owned, must outlive Run()), the others null. The
  // cadence comes from config.checkpoint; a kCheckpoint or kStop control word (and so
  // SIGTERM) also writes one. Writing is a collective: rank-local state is gathered.
  void EnableCheckpoints(CheckpointStore* store_at_root);
  // Collective: continues from rank 0's `at_root` (others pass null; rank 0 may pass
  // null too, then nothing happens). Returns true when state was restored. The config
  // must have been checked with CheckResumeCompatible; throws Error if the checkpoint
  // does not fit the model.
  bool Restore(const v1::Checkpoint* at_root);
  // Test-only faults (fault_plan.h); the same plan on every rank.
  void SetFaultPlan(const FaultPlan& plan) { faults_ = plan; }

  // Trains config.training.epochs epochs, or until a stop control word; returns the
  // history (complete on every rank). Throws Error (naming the step) if the loss stops
  // being finite.
  const History& Run();

  // Mean loss, accuracy and confusion matrix of the model on `dataset` in `mode`, each
  // rank evaluating its contiguous shard. A collective.
  EvalResult Evaluate(const data::Dataset& dataset, nn::Mode mode = nn::Mode::kInference);

  // The loss-gap probe: the fixed training subset evaluated after every epoch. In
  // training mode (kTrainFrozen: dropout on with a fixed mask key, batch statistics
  // over mini-batches of the training batch size, the L2 penalty added, nothing
  // updated) it gives P_train; in inference mode P_eval. Mini-batches are cut from the
  // probe the same way for any rank count and each is evaluated whole by one rank, so
  // the result does not depend on N. A collective.
  EvalResult EvaluateProbe(nn::Mode mode);
  const std::vector<int64_t>& probe_indices() const { return probe_; }

  // P_train (training-mode probe loss plus the L2 penalty when weight decay is on) and
  // P_eval (inference mode) of the current weights, with the inference-mode result for
  // the per-class figures. A collective; empty probes give zeros.
  struct ProbeLosses {
    double train = 0.0;
    double eval = 0.0;
    EvalResult eval_result;
  };
  ProbeLosses MeasureProbes();

  // FNV-1a hash (hex) of this rank's parameters and running statistics in plain layout.
  std::string WeightsHash();

  // What the leakage scan found; feeds the LEAKAGE finding.
  void SetLeakage(const LeakageSummary& leakage) { diagnosis_.SetLeakage(leakage); }
  const Diagnosis& diagnosis() const { return diagnosis_; }

  nn::Model& model() { return *model_; }
  optim::Sgd& optimizer() { return *sgd_; }
  const History& history() const { return history_; }
  const dist::Communicator& comm() const { return *comm_; }
  int64_t global_step() const { return global_step_; }
  int64_t per_rank_batch() const { return per_rank_batch_; }
  int64_t global_batch() const { return global_batch_; }
  bool stopped() const { return stopped_; }

 private:
  class Reducer;
  // One epoch of training; fills the training fields of `record`.
  void TrainEpoch(int epoch, EpochRecord* record);
  // Applies the control word every rank received after step `step`.
  void ApplyControl(const dist::ControlWord& word, int64_t step);
  // Rank 0: the control source's word for global step `step`, turned into a stop when
  // SIGTERM/SIGINT arrived (in the loop and while paused alike).
  dist::ControlWord RootControlWord(int64_t step);
  // Makes every rank's weights, running statistics and optimizer state rank 0's.
  void BroadcastState();
  // Averages running statistics over ranks (without synchronized batch norm each rank
  // estimates them from its own samples).
  void AverageRunningStatistics();

  // Sums one rank's evaluation over `ids` in mini-batches of `batch` into `sums`
  // (loss, correct, count) and the per-class arrays of `result`.
  void EvaluateBatches(const data::Dataset& dataset, std::span<const int64_t> ids, int64_t batch,
                       nn::Mode mode, int64_t mask_epoch, double* sums, EvalResult* result,
                       std::vector<double>* class_loss_sums);
  // Completes a result from the all-reduced sums.
  void FinishEvaluation(double* sums, EvalResult* result, std::vector<double>* class_loss_sums);
  // Fills the probe losses, the three gap terms and the per-class figures of `record`.
  void MeasureGap(EpochRecord* record, const EvalResult& val);
  // Sets the aligned training loss of the boundary at the end of `boundary_epoch`.
  void SetAlignedLoss(int boundary_epoch);
  // Collective: gathers every rank's step-timing histograms to rank 0, zeroes them, and
  // hands the snapshot to the observers.
  void GatherRankTimings();

  // The running sums of the epoch in progress (what a mid-epoch checkpoint keeps).
  struct EpochSums {
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0, steps = 0;
    double last_lr = 0.0;
  };
  // Where Restore() left the run: the epoch and batch to continue from, and its sums.
  struct ResumePoint {
    int epoch = 1;
    int64_t batches_done = 0;
    EpochSums sums;
  };
  // After every step: writes a checkpoint when one is due (collective), then runs the
  // faults planned for this step.
  void AfterStep(int epoch, int64_t batches_done, int64_t batches_per_epoch, const EpochSums& sums);
  // Collective: the complete state at (epoch, batches_done) as a checkpoint, filled on
  // rank 0 (empty elsewhere), and written by rank 0.
  void WriteCheckpoint(int epoch, int64_t batches_done, int64_t batches_per_epoch,
                       const EpochSums& sums, const std::string& reason);
  // Name of the first parameter whose gradient holds a non-finite value, or null.
  const char* FirstNonFiniteGradient(const std::vector<nn::Parameter*>& params) const;

  v1::ExperimentConfig config_;
  const data::Dataset& train_set_;
  const data::Dataset& val_set_;
  dist::Communicator solo_;
  const dist::Communicator* comm_;
  std::unique_ptr<Reducer> reducer_;
  std::unique_ptr<nn::Model> model_;
  std::unique_ptr<optim::Sgd> sgd_;
  std::unique_ptr<dist::GradientBucketer> bucketer_;
  History history_;
  std::vector<TrainingObserver*> observers_;
  ControlSource* control_ = nullptr;
  int64_t global_step_ = 0;
  int64_t per_rank_batch_ = 0;
  int64_t global_batch_ = 0;
  bool stopped_ = false;
  bool checkpoints_ = false;                     // Same on every rank.
  bool checkpoint_requested_ = false;            // By a kCheckpoint or kStop word.
  CheckpointStore* checkpoint_store_ = nullptr;  // Rank 0 only.
  int checkpoint_writes_ = 0;
  std::optional<ResumePoint> resume_;
  FaultPlan faults_;
  std::vector<int64_t> probe_;  // Training-set indices of the probe subset, sorted.
  Diagnosis diagnosis_;
  RankTimingHistograms rank_timing_;
  double timing_interval_ = 0;
  std::chrono::steady_clock::time_point last_timing_gather_ = std::chrono::steady_clock::now();
  // Per-step buffers, sized once for the largest batch.
  std::vector<float> images_;
  std::vector<int32_t> labels_;
};

// Checks that `dataset` fits the model spec (sample shape and label range); throws
// InputError naming the dataset otherwise.
void CheckDatasetMatchesModel(const data::Dataset& dataset, const v1::ModelSpec& spec);

}  // namespace epochal::train
