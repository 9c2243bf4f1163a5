#include "epochal/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iterator>
#include <limits>
#include <thread>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/dist/gradient_bucketer.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/precision.h"
#include "epochal/train/checkpoint.h"
#include "epochal/train/config.h"
#include "epochal/train/stop_signal.h"

namespace epochal::train {
namespace {

using Clock = std::chrono::steady_clock;

// While paused, rank 0 asks its control source this often; the other ranks test for its
// word this often (sleeping in between: a paused rank must not spin a core).
constexpr auto kPausePollInterval = std::chrono::milliseconds(20);
constexpr auto kPausedTestInterval = std::chrono::milliseconds(2);

optim::SgdOptions SgdOptionsFrom(const v1::OptimizerConfig& o) {
  optim::SgdOptions s;
  s.learning_rate = o.learning_rate();
  s.momentum = o.momentum();
  s.nesterov = o.nesterov();
  s.weight_decay = o.weight_decay();
  s.decay = o.decay();
  return s;
}

}  // namespace

// Synchronized batch norm's reductions, over the trainer's communicator.
class Trainer::Reducer final : public nn::StatisticsReducer {
 public:
  explicit Reducer(const dist::Communicator& comm) : comm_(comm) {}
  void AllreduceSum(std::span<double> values) override { comm_.AllreduceSum(values); }

 private:
  const dist::Communicator& comm_;
};

void CheckDatasetMatchesModel(const data::Dataset& dataset, const v1::ModelSpec& spec) {
  const auto& in = spec.input();
  if (dataset.channels != in.channels() || dataset.height != in.height() ||
      dataset.width != in.width()) {
    throw InputError(detail::StrCat(dataset.name, ": samples are ", dataset.channels, "x",
                                    dataset.height, "x", dataset.width, ", the model expects ",
                                    in.channels(), "x", in.height(), "x", in.width()));
  }
  if (dataset.num_classes > spec.num_classes()) {
    throw InputError(detail::StrCat(dataset.name, ": labels range over ", dataset.num_classes,
                                    " classes, the model has ", spec.num_classes()));
  }
  if (dataset.size() == 0) throw InputError(dataset.name + ": no samples");
}

nn::PrecisionChoice ResolveJobPrecision(const v1::ExperimentConfig& config, int64_t per_rank_batch,
                                        const dist::Communicator& comm) {
  const auto& t = config.training();
  if (t.precision().empty()) return {nn::Precision::kF32, "precision f32: the default"};
  const std::string& requested = t.precision();
  if (requested != "auto") return nn::ResolvePrecision(requested, "training.precision");
  // Every process must build the same model: auto is decided for the job. A process
  // without native bf16 makes it f32 for all; otherwise every process times the probe (a
  // collective from here on) and they decide on the mean.
  if (comm.size() > 1 && comm.AllreduceMin(nn::DispatchedIsaHasBf16() ? 1 : 0) == 0) {
    return {nn::Precision::kF32,
            "precision auto: f32, a process of this job runs where oneDNN "
            "dispatches no native bf16"};
  }
  return nn::ResolvePrecision("auto", "training.precision", [&] {
    if (comm.is_root()) {
      EPOCHAL_LOG(kInfo, "precision auto: timing training steps of the model in bf16 and f32");
    }
    double speedup[1] = {nn::MeasureBf16StepSpeedup(config.model(), per_rank_batch, t.seed())};
    comm.AllreduceSum(speedup);
    speedup[0] /= comm.size();
    // MPI does not promise every rank the same bits of a sum; rank 0's mean decides.
    comm.Broadcast(std::span<double>(speedup));
    return speedup[0];
  });
}

Trainer::Trainer(const v1::ExperimentConfig& config, const data::Dataset& train_set,
                 const data::Dataset& val_set, const dist::Communicator* comm)
    : config_(config),
      train_set_(train_set),
      val_set_(val_set),
      solo_(dist::Communicator::Solo()),
      comm_(comm != nullptr ? comm : &solo_),
      diagnosis_(DiagnosisThresholds::FromConfig(config.analysis()),
                 RegularizationTraits::FromConfig(config)),
      sent_(comm_->size()),
      received_(comm_->size()) {
  state_.history.config_json = ConfigToJson(config_);
  state_.history.world_size = comm_->size();
  state_.history.absent_terms = RegularizationTraits::FromConfig(config_).AbsentTerms();
  diagnosis_.SetRecomputedBatchNorm(config_.training().recompute_bn_stats());
  CheckDatasetMatchesModel(train_set_, config_.model());
  CheckDatasetMatchesModel(val_set_, config_.model());
  const auto& t = config_.training();
  const int world = comm_->size();
  const BatchSplit split = SplitBatch(t, world);
  per_rank_batch_ = split.per_rank;
  global_batch_ = split.global;
  // "" is f32 (config.proto's training.precision says why auto is not the default).
  precision_ = ResolveJobPrecision(config_, per_rank_batch_, *comm_);
  const nn::PrecisionChoice& precision = precision_;
  if (comm_->is_root() && !t.precision().empty()) EPOCHAL_LOG(kInfo, precision.reason);
  RecordPrecision();
  model_ =
      std::make_unique<nn::Model>(config_.model(), per_rank_batch_, t.seed(), precision.precision);
  // Synchronized batch norm runs its own (double-precision) statistics even on one rank,
  // so one rank and N ranks compute the same thing the same way.
  if (t.sync_batch_norm()) {
    reducer_ = std::make_unique<Reducer>(*comm_);
    model_->SetStatisticsReducer(reducer_.get());
  }
  params_ = model_->parameters();
  std::vector<std::span<float>> grads;
  for (nn::Parameter* p : params_) grads.push_back(nn::Span(p->grad));
  sgd_ = std::make_unique<optim::Sgd>(SgdOptionsFrom(config_.optimizer()), ParamViews(*model_));
  if (t.lr_scaling() == "linear" && world > 1) {
    const auto warmup = static_cast<int64_t>(
        std::llround(t.warmup_epochs() * static_cast<double>(BatchesPerEpoch())));
    sgd_->SetLearningRateScaling(static_cast<double>(world), warmup);
  }
  const auto bucket_bytes =
      t.bucket_bytes() > 0 ? static_cast<size_t>(t.bucket_bytes()) : dist::kDefaultBucketBytes;
  dist::Progress progress = dist::Progress::kPolling;
  if (t.allreduce_progress() == "thread") {
    if (world > 1 && !dist::ThreadProgressAvailable()) {
      throw InputError(
          "training.allreduce_progress \"thread\" needs MPI_THREAD_MULTIPLE, which this MPI "
          "did not grant; use \"auto\" or \"poll\"");
    }
    progress = dist::Progress::kThread;
  }
  // "auto" polls: with the progress thread, Open MPI 4.1's TCP transport between separate
  // hosts (network namespaces in tests/deploy) hung at the first collectives, while
  // loopback and shared memory worked (docs/distributed.md).
  // bf16 halves the bytes of the gradients; the envelope stays f32 (config.proto's
  // training.allreduce_precision). The config was validated: "" and "f32" are f32.
  const dist::WirePrecision wire =
      t.allreduce_precision() == "bf16" ? dist::WirePrecision::kBf16 : dist::WirePrecision::kF32;
  if (comm_->is_root() && world > 1 && wire == dist::WirePrecision::kBf16) {
    EPOCHAL_LOG(kInfo, "gradient all-reduce in bf16 (the step's sums and counts stay f32)");
  }
  bucketer_ = std::make_unique<dist::GradientBucketer>(*comm_, std::move(grads), bucket_bytes,
                                                       dist::StepEnvelope::Size(world), progress,
                                                       std::chrono::microseconds(200), wire);
  if (world > 1) BroadcastState();
  evaluator_ = std::make_unique<Evaluator>(config_, *model_, *comm_, &train_set_, per_rank_batch_,
                                           reducer_.get());
  images_.resize(static_cast<size_t>(per_rank_batch_ * train_set_.sample_size()));
  labels_.resize(static_cast<size_t>(per_rank_batch_));
}

Trainer::~Trainer() = default;

int64_t Trainer::BatchesPerEpoch() const {
  return data::EpochSampler(train_set_.size(), global_batch_, config_.training().drop_last())
      .num_batches();
}

void Trainer::BroadcastState() {
  for (nn::Parameter* p : params_) {
    std::vector<float> plain = nn::ToPlain(model_->dnnl(), p->value);
    comm_->Broadcast(std::span<float>(plain));
    if (!comm_->is_root()) nn::FromPlain(model_->dnnl(), plain, p->value);
  }
  for (nn::StateBuffer* s : model_->state()) comm_->Broadcast(std::span<float>(s->value));
  for (size_t i = 0; i < sgd_->size(); ++i) comm_->Broadcast(sgd_->velocity(i));
}

void Trainer::AverageRunningStatistics() {
  const float inv = 1.0f / static_cast<float>(comm_->size());
  for (nn::StateBuffer* s : model_->state()) {
    comm_->AllreduceSum(std::span<float>(s->value));
    for (float& v : s->value) v *= inv;
  }
}

dist::ControlWord Trainer::RootControlWord(int64_t step) {
  dist::ControlWord word;
  if (control_ != nullptr) word = control_->Poll(step);
  // SIGTERM/SIGINT (stop_signal.h) stop the run, with a checkpoint, instead of continuing
  // or pausing; a pending checkpoint or rate change still applies first.
  if (StopSignalReceived() &&
      (word.action == dist::ControlWord::kContinue || word.action == dist::ControlWord::kPause)) {
    word.action = dist::ControlWord::kStop;
    word.step = step;
  }
  return word;
}

void Trainer::ApplyControl(const dist::ControlWord& word, int64_t step) {
  if (word.action == dist::ControlWord::kContinue) return;
  if (word.action == dist::ControlWord::kPause) {
    PauseAtStepBoundary(word, step);
    return;
  }
  ControlEvent event{step + 1, dist::ActionName(word.action), word.learning_rate};
  switch (word.action) {
    case dist::ControlWord::kStop:
      stopped_ = true;
      checkpoint_requested_ = true;  // Stop means "checkpoint, then stop".
      break;
    case dist::ControlWord::kCheckpoint:
      checkpoint_requested_ = true;
      break;
    case dist::ControlWord::kSetLearningRate:
      sgd_->SetLearningRateOverride(word.learning_rate);
      break;
    default:
      break;
  }
  EPOCHAL_LOG(
      kInfo, "rank ", comm_->rank(), ": ", event.action, " from global step ", event.step,
      checkpoint_requested_ && !checkpoints_ ? " (checkpoints are disabled: none written)" : "");
  state_.history.control_events.push_back(event);
  for (auto* o : observers_) o->OnControl(event);
}

void Trainer::PauseAtStepBoundary(const dist::ControlWord& word, int64_t step) {
  ControlEvent event{step + 1, dist::ActionName(word.action), word.learning_rate};
  state_.history.control_events.push_back(event);
  for (auto* o : observers_) o->OnControl(event);
  // Wait at the step boundary until rank 0's source says otherwise; every rank receives
  // the same sequence of words. The other ranks wait in a non-blocking broadcast that
  // they test between sleeps, so a paused rank uses no core.
  const Clock::time_point paused = Clock::now();
  EPOCHAL_LOG(kInfo, "rank ", comm_->rank(), ": paused after global step ", step);
  dist::ControlWord next = word;
  while (true) {
    if (comm_->is_root()) {
      std::this_thread::sleep_for(kPausePollInterval);
      next = RootControlWord(step + 1);
    }
    next = dist::SyncControlWordIdle(*comm_, next, kPausedTestInterval);
    if (next.action == dist::ControlWord::kSetLearningRate ||
        next.action == dist::ControlWord::kCheckpoint) {
      // A command sent while paused takes effect now, and the job stays paused: the
      // new rate applies from the next step, the checkpoint is written here.
      ApplyControl(next, step);
      if (checkpoint_requested_ && checkpoints_) WriteCheckpoint("control", /*paused=*/true);
      checkpoint_requested_ = false;
      next.action = dist::ControlWord::kPause;
      continue;
    }
    if (next.action != dist::ControlWord::kPause) break;
  }
  EPOCHAL_LOG(kInfo, "rank ", comm_->rank(), ": resumed at global step ", step + 1, " after ",
              std::chrono::duration<double>(Clock::now() - paused).count(), " s paused");
  event = ControlEvent{step + 1, "resume", 0.0};
  state_.history.control_events.push_back(event);
  for (auto* o : observers_) o->OnControl(event);
  ApplyControl(next, step);
}

// One step reads: batch -> forward -> backward into buckets -> wait -> step -> publish ->
// control. docs/design-decisions.md ("How a step flows") names each call.
void Trainer::TrainEpoch(int epoch, EpochRecord* record) {
  const data::EpochSampler sampler = StartEpoch(epoch);
  clock_.StartEpoch();
  const int64_t first_batch = ResumeOrReset();
  for (int64_t b = first_batch; b < sampler.num_batches() && !stopped_; ++b) {
    clock_.StartStep();
    const Batch batch = NextBatch(sampler, b);
    clock_.DataReady();
    bucketer_->BeginStep();
    const double lr = sgd_->CurrentLearningRate();  // Before Step() advances the schedule.
    const nn::StepContext ctx{nn::Mode::kTrain, config_.training().seed(), epoch, batch.ids};
    const nn::BatchResult r = Forward(ctx, batch);
    SendEnvelope(r, batch);
    BackwardIntoBuckets(ctx, batch);
    clock_.BackwardDone();
    bucketer_->Wait();
    received_.Unpack(bucketer_->extras(), sent_);
    clock_.WaitDone(bucketer_->allreduce_seconds(), static_cast<int64_t>(batch.ids.size()),
                    received_.arrival_ms);
    const double batch_loss = Step(epoch, b);
    Publish(epoch, b, sampler, batch_loss, lr);
    AtStepBoundary(epoch, b);
  }
  FinishEpoch(record);
}

data::EpochSampler Trainer::StartEpoch(int epoch) {
  const auto& t = config_.training();
  data::EpochSampler sampler(train_set_.size(), global_batch_, t.drop_last());
  sampler.Shuffle(t.seed(), epoch);
  if (sampler.dropped() > 0 && comm_->is_root()) {
    EPOCHAL_LOG(kInfo, "epoch ", epoch, ": drop_last skips ", sampler.dropped(),
                " samples (a different set each epoch)");
  }
  for (auto* o : observers_) o->OnEpochStart(epoch, t.epochs(), sampler.samples_per_epoch());
  return sampler;
}

int64_t Trainer::ResumeOrReset() {
  if (!resuming_) {
    state_.batches_done = 0;
    state_.sums = {};
    return 0;
  }
  resuming_ = false;  // Continue a checkpointed epoch, with its sums.
  return state_.batches_done;
}

Trainer::Batch Trainer::NextBatch(const data::EpochSampler& sampler, int64_t b) {
  Batch batch;
  batch.global_ids = sampler.Batch(b);
  batch.ids = data::Shard(batch.global_ids, comm_->rank(), comm_->size());
  data::GatherBatch(train_set_, batch.ids, images_.data(), labels_.data());
  batch.labels = std::span<const int32_t>(labels_.data(), batch.ids.size());
  return batch;
}

nn::BatchResult Trainer::Forward(const nn::StepContext& ctx, const Batch& batch) {
  // A global batch smaller than the rank count leaves some ranks without samples; they
  // still make every collective of the step (synchronized batch norm's), with zero counts.
  if (batch.ids.empty()) {
    model_->ForwardWithoutSamples(ctx);
    return {};
  }
  return model_->Forward(ctx, images_.data(), batch.labels);
}

void Trainer::SendEnvelope(const nn::BatchResult& r, const Batch& batch) {
  sent_.loss_sum = r.loss_sum;
  sent_.correct = r.correct;
  sent_.count = static_cast<int64_t>(batch.ids.size());
  sent_.control = comm_->is_root() ? RootControlWord(state_.global_step + 1) : dist::ControlWord{};
  // Rank 0 asks for a timing gather when the interval has passed; every rank gathers
  // after the same step and no step pays for an extra collective.
  sent_.gather_timings = comm_->is_root() && clock_.GatherDue(timing_interval_);
  std::fill(sent_.arrival_ms.begin(), sent_.arrival_ms.end(), 0.0f);
  sent_.arrival_ms[static_cast<size_t>(comm_->rank())] = clock_.previous_arrival_ms();
  sent_.Pack(bucketer_->extras());
}

void Trainer::MarkReady(size_t first, size_t end) {
  if (poison_ && end == params_.size()) {
    nn::Data(params_[end - 1]->grad)[0] = std::numeric_limits<float>::quiet_NaN();
    poison_ = false;
  }
  for (size_t i = end; i-- > first;) bucketer_->MarkReady(i);
  bucketer_->Poll();
}

void Trainer::BackwardIntoBuckets(const nn::StepContext& ctx, const Batch& batch) {
  const float grad_scale = 1.0f / static_cast<float>(batch.global_ids.size());
  poison_ = faults_.nan_step == state_.global_step + 1 && faults_.nan_rank == comm_->rank();
  const auto ready = [this](size_t first, size_t end) { MarkReady(first, end); };
  if (!batch.ids.empty()) {
    model_->Backward(ctx, grad_scale, ready);
    return;
  }
  // An idle rank contributes zero gradients, bucket by bucket as the others do.
  model_->BackwardWithoutSamples(ctx, ready);
}

double Trainer::Step(int epoch, int64_t b) {
  const int64_t count = received_.count;
  double batch_loss = received_.loss_sum / static_cast<double>(count);
  if (config_.optimizer().weight_decay() > 0) batch_loss += sgd_->L2Penalty();
  // Gradients are all-reduced, so every rank finds the same thing here and stops at
  // the same step; the weights are not updated and no checkpoint is written.
  const char* bad_gradient = nullptr;
  for (const nn::Parameter* p : params_) {
    if (!AllFinite(nn::Span(p->grad))) {
      bad_gradient = p->name.c_str();
      break;
    }
  }
  if (!std::isfinite(batch_loss) || bad_gradient != nullptr) {
    throw Error(detail::StrCat(
        "training diverged at epoch ", epoch, ", step ", b + 1, " (global step ",
        state_.global_step + 1, "): loss ", batch_loss,
        bad_gradient != nullptr ? detail::StrCat(", non-finite gradient of ", bad_gradient)
                                : std::string(),
        "; stopped before the update, the last checkpoint is intact; lower the learning rate "
        "or check the data"));
  }
  sgd_->Step();
  ++state_.global_step;
  EpochSums& sums = state_.sums;
  ++sums.steps;
  sums.loss_sum += batch_loss * static_cast<double>(count);
  sums.correct += received_.correct;
  sums.seen += count;
  return batch_loss;
}

void Trainer::Publish(int epoch, int64_t b, const data::EpochSampler& sampler, double batch_loss,
                      double lr) {
  const EpochSums& sums = state_.sums;
  StepEvent ev;
  ev.epoch = epoch;
  ev.step_in_epoch = b + 1;
  ev.global_step = state_.global_step;
  ev.samples_in_epoch = sums.seen;
  ev.samples_per_epoch = sampler.samples_per_epoch();
  ev.epoch_progress = (epoch - 1) + static_cast<double>(sums.seen) /
                                        static_cast<double>(sampler.samples_per_epoch());
  ev.batch_loss = batch_loss;
  ev.running_loss = sums.loss_sum / static_cast<double>(sums.seen);
  ev.running_accuracy = static_cast<double>(sums.correct) / static_cast<double>(sums.seen);
  ev.learning_rate = lr;
  ev.batch_samples = received_.count;
  ev.batch_correct = received_.correct;
  History& history = state_.history;
  history.batches.push_back({ev.epoch_progress, batch_loss, lr, received_.count});
  // Half-way through epoch e+1 the aligned loss of boundary e is known.
  if (epoch > 1 && ev.epoch_progress >= epoch - 0.5 &&
      !history.epochs[static_cast<size_t>(epoch - 2)].aligned_train_loss) {
    Evaluator::SetAlignedLoss(epoch - 1, &history);
  }
  for (auto* o : observers_) o->OnStep(ev);
  state_.sums.last_lr = lr;
}

void Trainer::AtStepBoundary(int epoch, int64_t b) {
  if (received_.gather_timings) GatherRankTimings();
  // The position first: a checkpoint written while paused (in ApplyControl) holds it.
  state_.epoch = epoch;
  state_.batches_done = b + 1;
  dist::ControlWord word = received_.control;
  word.step = state_.global_step;
  ApplyControl(word, state_.global_step);
  if (faults_.perturb_step == state_.global_step && faults_.perturb_rank == comm_->rank()) {
    nn::Data(params_.front()->value)[0] += 1e-3f;
  }
  const int64_t every = config_.checkpoint().every_steps();
  const bool due = every > 0 && state_.global_step % every == 0;
  if (checkpoints_ && (checkpoint_requested_ || due)) {
    WriteCheckpoint(stopped_ ? "stop" : (checkpoint_requested_ ? "control" : "steps"));
  }
  checkpoint_requested_ = false;
  if (faults_.kill_after_step == state_.global_step && comm_->is_root()) KillSelf();
  if (faults_.term_after_step == state_.global_step) std::raise(SIGTERM);
}

void Trainer::FinishEpoch(EpochRecord* record) {
  const EpochSums& sums = state_.sums;
  record->seconds = clock_.EpochSeconds();
  record->lr = sums.last_lr;
  record->loss = sums.seen > 0 ? sums.loss_sum / static_cast<double>(sums.seen) : 0.0;
  record->accuracy =
      sums.seen > 0 ? static_cast<double>(sums.correct) / static_cast<double>(sums.seen) : 0.0;
  record->images_per_second = static_cast<double>(sums.seen) / record->seconds;
  // Per-rank timings, gathered on rank 0.
  const EpochRecord::RankTiming t = clock_.EpochMeans();
  const double mine[] = {t.step_ms,           t.data_ms,      t.compute_ms,
                         t.allreduce_wait_ms, t.allreduce_ms, t.straggler_wait_ms};
  constexpr size_t kFields = std::size(mine);
  std::vector<double> all;
  comm_->Gather(mine, &all);
  for (size_t i = 0; i + kFields <= all.size(); i += kFields) {
    record->rank_timings.push_back(
        {all[i], all[i + 1], all[i + 2], all[i + 3], all[i + 4], all[i + 5]});
  }
  // Every epoch end (a point all ranks reach together) flushes the timing histograms.
  GatherRankTimings();
}

void Trainer::GatherRankTimings() {
  std::vector<double> all;
  comm_->Gather(clock_.histograms().Packed(), &all);
  clock_.histograms().Reset();
  clock_.MarkGathered();
  if (!comm_->is_root()) return;
  const RankTimingSnapshot snapshot = RankTimingHistograms::Unpack(all);
  for (auto* o : observers_) o->OnRankTimings(snapshot);
}

const History& Trainer::Run() {
  const int epochs = config_.training().epochs();
  History& history = state_.history;
  // The diagnosis holds findings across epochs: a resumed run rebuilds it.
  if (resuming_) diagnosis_.Replay(history);
  EvalResult val;
  for (int epoch = state_.epoch; epoch <= epochs && !stopped_; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    TrainEpoch(epoch, &record);
    if (stopped_) {
      // A stop (signal or control word) was checkpointed at its step boundary; validating
      // and probing the partial epoch would only delay the exit past a launcher's grace
      // period. That epoch's evaluation belongs to the run that resumes it. What ran is
      // kept as the partial epoch: its training figures and its share of the epoch, never
      // diagnosed (docs/loss-gap.md, "Partial epochs").
      record.epoch_fraction =
          static_cast<double>(state_.batches_done) / static_cast<double>(BatchesPerEpoch());
      record.val_loss = record.val_accuracy = std::numeric_limits<double>::quiet_NaN();
      history.partial_epoch = record;
      break;
    }
    if (comm_->size() > 1 && !config_.training().sync_batch_norm()) AverageRunningStatistics();
    val = evaluator_->MeasureEpoch(val_set_, &record, [&] {
      if (faults_.kill_in_validation == epoch && comm_->is_root()) KillSelf();
    });
    history.epochs.push_back(record);
    for (const Finding& f : diagnosis_.Update(history)) {
      history.epochs.back().findings.push_back(f.name + ": " + f.explanation);
    }
    for (auto* o : observers_) o->OnEpochEnd(history.epochs.back(), val, history);
    state_.epoch = epoch + 1;
    state_.batches_done = 0;
    state_.sums = {};
    const int every =
        config_.checkpoint().has_every_epochs() ? config_.checkpoint().every_epochs() : 1;
    if (checkpoints_ && !stopped_ && (epoch == epochs || (every > 0 && epoch % every == 0))) {
      WriteCheckpoint("epoch");
    }
  }
  resuming_ = false;
  // Resumed from the end of training: nothing ran, but the observers want a validation.
  // After a stop they get none (an empty confusion matrix): the weights moved on since the
  // last one.
  if (stopped_) {
    val = EvalResult{};
  } else if (val.confusion.empty()) {
    val = evaluator_->Evaluate(val_set_);
  }
  for (auto* o : observers_) o->OnTrainingEnd(state_.history, val);
  return state_.history;
}

void Trainer::EnableCheckpoints(CheckpointStore* store_at_root) {
  checkpoints_ = !config_.checkpoint().disabled();
  checkpoint_store_ = comm_->is_root() ? store_at_root : nullptr;
  EPOCHAL_CHECK(!checkpoints_ || !comm_->is_root() || checkpoint_store_ != nullptr,
                "rank 0 needs a checkpoint store");
  if (checkpoint_store_ != nullptr) state_.run_id = checkpoint_store_->run_id();
}

void Trainer::WriteCheckpoint(const std::string& reason, bool paused) {
  const auto start = Clock::now();
  // Replicas that disagree are not checkpointed: the last good checkpoint stays the
  // newest one, for --resume. Without synchronized batch norm the running statistics
  // differ between ranks until the epoch end averages them, so only the parameters
  // count then.
  if (comm_->size() > 1) {
    evaluator_->StopIfReplicasDiverged(
        evaluator_->ReplicaHashes(/*with_state=*/config_.training().sync_batch_norm()),
        detail::StrCat("before the checkpoint at global step ", state_.global_step));
  }
  v1::Checkpoint c =
      SnapshotState(config_, *comm_, *model_, *sgd_, state_, BatchesPerEpoch(), reason);
  if (!comm_->is_root()) return;
  c.set_paused(paused);
  ++checkpoint_writes_;
  std::function<void()> hook;
  if (faults_.kill_in_checkpoint_write == checkpoint_writes_) hook = [] { KillSelf(); };
  std::function<void(const std::filesystem::path&)> written;
  if (faults_.corrupt_checkpoint_write == checkpoint_writes_) written = CorruptFile;
  try {
    const auto path = checkpoint_store_->Save(c, hook, written);
    EPOCHAL_LOG(kInfo, "checkpoint ", path.string(), " (", reason, ", epoch ", state_.epoch,
                ", batch ", state_.batches_done, ", global step ", state_.global_step, "; ",
                std::chrono::duration<double>(Clock::now() - start).count(), " s)");
    // Save returned: the file is fsynced and renamed into place.
    for (auto* o : observers_) o->OnCheckpoint(path.string(), reason, state_.global_step);
  } catch (const SystemError& e) {
    throw SystemError(detail::StrCat(e.what(), "; the checkpoints already in ",
                                     checkpoint_store_->dir().string(), " are intact"));
  }
}

void Trainer::RecordPrecision() {
  state_.history.precision = nn::PrecisionName(precision_.precision);
  state_.history.precision_reason = precision_.reason;
}

bool Trainer::Restore(const v1::Checkpoint* at_root) {
  std::string payload;
  if (comm_->is_root() && at_root != nullptr && !at_root->SerializeToString(&payload)) {
    throw Error("cannot serialize the checkpoint to share it");
  }
  comm_->Broadcast(&payload);
  if (payload.empty()) return false;
  v1::Checkpoint c;
  if (!c.ParseFromString(payload)) throw Error("checkpoint: cannot parse the shared copy");
  RestoreState(c, *comm_, *model_, *sgd_, BatchesPerEpoch(), &state_);
  RecordPrecision();  // The checkpoint's history does not carry it; this run's applies.
  resuming_ = true;
  if (comm_->is_root()) {
    const auto& pos = c.position();
    EPOCHAL_LOG(kInfo, "resuming at epoch ", pos.epoch(), ", batch ", pos.batches_done(), " of ",
                pos.batches_per_epoch(), " (global step ", pos.global_step(), ")",
                c.paused() ? "; the run was paused when checkpointed and now runs" : "");
  }
  return true;
}

}  // namespace epochal::train
