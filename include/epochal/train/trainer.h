// The training loop, single-process or data-parallel over MPI.
//
// Every rank runs the same model replica on its own contiguous share of each global
// batch. A step is: batch, forward, backward into buckets, wait, step, publish, control
// (docs/design-decisions.md, "How a step flows"). Gradients are all-reduced in fusion
// buckets that start while backward is still running (dist::GradientBucketer); the
// step's sums, rank 0's control word, its timing-gather request and every rank's arrival
// time ride in the last bucket as a dist::StepEnvelope, so a step costs no collective
// beyond the gradient all-reduce. Where the time goes is the StepClock's business; what
// is measured after an epoch (validation, probes, gap terms, replica hashes) is the
// Evaluator's; what a checkpoint holds is a RunState (training_state.h).
//
// Collective contract: every rank constructs the Trainer and calls Run() / Restore() and
// the evaluator's members in the same order with the same config. Every random choice is
// a pure function of (seed, epoch, sample id), so a run is reproducible for a given rank
// and thread count.
// Thread safety: a Trainer is driven by one thread.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/data/sampler.h"
#include "epochal/dist/communicator.h"
#include "epochal/dist/control_word.h"
#include "epochal/dist/step_envelope.h"
#include "epochal/nn/model.h"
#include "epochal/optim/sgd.h"
#include "epochal/train/control_source.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/evaluator.h"
#include "epochal/train/fault_plan.h"
#include "epochal/train/history.h"
#include "epochal/train/observer.h"
#include "epochal/train/step_clock.h"
#include "epochal/train/training_state.h"
#include "epochal/v1/checkpoint.pb.h"
#include "epochal/v1/config.pb.h"

namespace epochal::dist {
class GradientBucketer;
}

namespace epochal::train {

class CheckpointStore;

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
  // them to the observers (OnRankTimings). The request rides in the step's envelope.
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

  // What the leakage scan found; feeds the LEAKAGE finding.
  void SetLeakage(const LeakageSummary& leakage) { diagnosis_.SetLeakage(leakage); }
  const Diagnosis& diagnosis() const { return diagnosis_; }

  // Validation and probes of the current weights (collectives, see evaluator.h).
  Evaluator& evaluator() { return *evaluator_; }
  nn::Model& model() { return *model_; }
  optim::Sgd& optimizer() { return *sgd_; }
  const History& history() const { return state_.history; }
  const dist::Communicator& comm() const { return *comm_; }
  int64_t global_step() const { return state_.global_step; }
  int64_t per_rank_batch() const { return per_rank_batch_; }
  int64_t global_batch() const { return global_batch_; }
  bool stopped() const { return stopped_; }

 private:
  class Reducer;
  // This rank's share of one global batch, gathered into images_ and labels_.
  struct Batch {
    std::span<const int64_t> global_ids;  // The whole global batch.
    std::span<const int64_t> ids;         // This rank's shard of it (may be empty).
    std::span<const int32_t> labels;
  };

  // One epoch of training; fills the training fields of `record`.
  void TrainEpoch(int epoch, EpochRecord* record);
  // The epoch's shuffled sampler; tells the observers the epoch starts.
  data::EpochSampler StartEpoch(int epoch);
  // The first batch to run: where Restore() left the epoch (with its sums), else 0.
  int64_t ResumeOrReset();
  // The step's parts, in order.
  Batch NextBatch(const data::EpochSampler& sampler, int64_t b);
  nn::BatchResult Forward(const nn::StepContext& ctx, const Batch& batch);
  // Packs this rank's envelope (rank 0 polls the control source here) into the extras.
  void SendEnvelope(const nn::BatchResult& r, const Batch& batch);
  void BackwardIntoBuckets(const nn::StepContext& ctx, const Batch& batch);
  // Marks parameters [first, end) ready (backward's callback).
  void MarkReady(size_t first, size_t end);
  // The global batch loss; checks it and the gradients, updates the weights and sums.
  double Step(int epoch, int64_t b);
  // The step event to observers and the history; the aligned loss when it becomes known.
  void Publish(int epoch, int64_t b, const data::EpochSampler& sampler, double batch_loss,
               double lr);
  // Acts on what the envelope brought (timing gather, control word), then checkpoints
  // when one is due and runs the faults planned for this step.
  void AtStepBoundary(int epoch, int64_t b);
  // Fills the epoch's training fields of `record` and gathers the ranks' timings.
  void FinishEpoch(EpochRecord* record);

  // Applies the control word every rank received after step `step`.
  void ApplyControl(const dist::ControlWord& word, int64_t step);
  // A kPause word: waits at the step boundary, applying the rate changes and
  // checkpoints that arrive meanwhile, until a resume or a stop.
  void PauseAtStepBoundary(const dist::ControlWord& word, int64_t step);
  // Rank 0: the control source's word for global step `step`, turned into a stop when
  // SIGTERM/SIGINT arrived (in the loop and while paused alike).
  dist::ControlWord RootControlWord(int64_t step);
  // Writes precision_ into the history (history.json's "precision").
  void RecordPrecision();
  // Makes every rank's weights, running statistics and optimizer state rank 0's.
  void BroadcastState();
  // Averages running statistics over ranks (without synchronized batch norm each rank
  // estimates them from its own samples).
  void AverageRunningStatistics();
  // Collective: gathers every rank's step-timing histograms to rank 0, zeroes them, and
  // hands the snapshot to the observers.
  void GatherRankTimings();
  // Collective: checkpoints state_ (rank 0 writes it, then tells the observers). Throws
  // Error instead when the replicas' weights differ (Evaluator::StopIfReplicasDiverged).
  void WriteCheckpoint(const std::string& reason, bool paused = false);
  int64_t BatchesPerEpoch() const;

  v1::ExperimentConfig config_;
  const data::Dataset& train_set_;
  const data::Dataset& val_set_;
  dist::Communicator solo_;
  const dist::Communicator* comm_;
  int64_t per_rank_batch_ = 0;
  int64_t global_batch_ = 0;
  std::unique_ptr<Reducer> reducer_;
  std::unique_ptr<nn::Model> model_;
  std::unique_ptr<optim::Sgd> sgd_;
  std::unique_ptr<dist::GradientBucketer> bucketer_;
  std::unique_ptr<Evaluator> evaluator_;
  RunState state_;
  bool resuming_ = false;  // Restore() set state_; the next epoch continues it.
  std::vector<TrainingObserver*> observers_;
  ControlSource* control_ = nullptr;
  bool stopped_ = false;
  bool checkpoints_ = false;                     // Same on every rank.
  bool checkpoint_requested_ = false;            // By a kCheckpoint or kStop word.
  CheckpointStore* checkpoint_store_ = nullptr;  // Rank 0 only.
  int checkpoint_writes_ = 0;
  FaultPlan faults_;
  bool poison_ = false;  // Test-only: a NaN in this rank's gradient (FaultPlan::nan_grad).
  Diagnosis diagnosis_;
  StepClock clock_;
  double timing_interval_ = 0;
  // This step's envelope as sent and as received (sized once for the rank count).
  dist::StepEnvelope sent_, received_;
  std::vector<nn::Parameter*> params_;
  nn::PrecisionChoice precision_;  // What the model runs in, and why.
  // Per-step buffers, sized once for the training batch.
  std::vector<float> images_;
  std::vector<int32_t> labels_;
};

// Checks that `dataset` fits the model spec (sample shape and label range); throws
// InputError naming the dataset otherwise.
void CheckDatasetMatchesModel(const data::Dataset& dataset, const v1::ModelSpec& spec);

// training.precision for the whole job ("" is f32). "auto" is decided once for every
// process, so all build the same model: f32 if any process lacks native bf16, else every
// process times the model in both precisions (nn::MeasureBf16StepSpeedup at
// `per_rank_batch`) and all decide on the mean speedup. A collective for "auto" with
// more than one process. Throws InputError as nn::ResolvePrecision does.
nn::PrecisionChoice ResolveJobPrecision(const v1::ExperimentConfig& config, int64_t per_rank_batch,
                                        const dist::Communicator& comm);

}  // namespace epochal::train
