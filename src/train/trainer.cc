#include "epochal/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>
#include <thread>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/data/sampler.h"
#include "epochal/dist/gradient_bucketer.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/nn/precision.h"
#include "epochal/train/config.h"
#include "epochal/train/stop_signal.h"

namespace epochal::train {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Batches used for validation; inference results do not depend on the batch size.
constexpr int64_t kEvalBatchSize = 128;
constexpr int64_t kDefaultProbeSamples = 10000;
// Small buckets let the conv layers' gradients leave layer by layer instead of in one
// exposed tail bucket (docs/scaling.md, "How the trainer follows these notes").
constexpr size_t kDefaultBucketBytes = 64 << 10;
// Dropout mask key of the training-mode probe: fixed, so P_train changes only because
// the weights do (training epochs are 1-based, so this never collides).
constexpr int64_t kProbeMaskEpoch = -1;
// While paused, rank 0 asks its control source this often; the other ranks test for its
// word this often (sleeping in between: a paused rank must not spin a core).
constexpr auto kPausePollInterval = std::chrono::milliseconds(20);
constexpr auto kPausedTestInterval = std::chrono::milliseconds(2);

// What rides in the last gradient bucket besides gradients.
enum Extra : size_t {
  kLossSum = 0,
  kCorrect,
  kCount,
  kControlAction,  // Rank 0's control word; every other rank contributes zeros.
  kControlRate,    // Three slots: the rate's bits, exactly (dist::PackRate), so every
  kControlRate1,   // rank applies the same double as rank 0 reports.
  kControlRate2,
  kGatherTimings,  // 1 when rank 0 asks every rank to gather its step timings now.
  // Then one float per rank: the milliseconds that rank took, in the previous step, from
  // leaving Wait() to entering it again. The slowest rank sets when the last bucket can
  // complete, so the others' difference to it is straggler wait, not communication.
  kArrivalBase,
};

optim::SgdOptions SgdOptionsFrom(const v1::OptimizerConfig& o) {
  optim::SgdOptions s;
  s.learning_rate = o.learning_rate();
  s.momentum = o.momentum();
  s.nesterov = o.nesterov();
  s.weight_decay = o.weight_decay();
  s.decay = o.decay();
  return s;
}

const char* ControlActionName(int32_t action) {
  switch (action) {
    case dist::ControlWord::kPause:
      return "pause";
    case dist::ControlWord::kStop:
      return "stop";
    case dist::ControlWord::kSetLearningRate:
      return "set_learning_rate";
    case dist::ControlWord::kCheckpoint:
      return "checkpoint";
    default:
      return "continue";
  }
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

Trainer::Trainer(const v1::ExperimentConfig& config, const data::Dataset& train_set,
                 const data::Dataset& val_set, const dist::Communicator* comm)
    : config_(config),
      train_set_(train_set),
      val_set_(val_set),
      solo_(dist::Communicator::Solo()),
      comm_(comm != nullptr ? comm : &solo_),
      diagnosis_(DiagnosisThresholds::FromConfig(config.analysis())) {
  history_.config_json = ConfigToJson(config_);
  history_.world_size = comm_->size();
  CheckDatasetMatchesModel(train_set_, config_.model());
  CheckDatasetMatchesModel(val_set_, config_.model());
  const auto& t = config_.training();
  const int64_t world = comm_->size();
  if (t.fixed_global_batch()) {
    global_batch_ = t.batch_size();
    per_rank_batch_ = (global_batch_ + world - 1) / world;
  } else {
    per_rank_batch_ = t.batch_size();
    global_batch_ = per_rank_batch_ * world;
  }
  // "" is f32 (config.proto's training.precision says why auto is not the default).
  const nn::PrecisionChoice precision =
      nn::ResolvePrecision(t.precision().empty() ? "f32" : t.precision(), "training.precision");
  if (comm_->is_root() && !t.precision().empty()) EPOCHAL_LOG(kInfo, precision.reason);
  model_ =
      std::make_unique<nn::Model>(config_.model(), per_rank_batch_, t.seed(), precision.precision);
  // Synchronized batch norm runs its own (double-precision) statistics even on one rank,
  // so one rank and N ranks compute the same thing the same way.
  if (t.sync_batch_norm()) {
    reducer_ = std::make_unique<Reducer>(*comm_);
    model_->SetStatisticsReducer(reducer_.get());
  }
  std::vector<optim::ParamView> views;
  std::vector<std::span<float>> grads;
  for (nn::Parameter* p : model_->parameters()) {
    views.push_back({p->name, nn::Span(p->value), nn::Span(p->grad), p->apply_weight_decay});
    grads.push_back(nn::Span(p->grad));
  }
  sgd_ = std::make_unique<optim::Sgd>(SgdOptionsFrom(config_.optimizer()), std::move(views));
  if (t.lr_scaling() == "linear" && world > 1) {
    const data::EpochSampler sampler(train_set_.size(), global_batch_, t.drop_last());
    const auto warmup = static_cast<int64_t>(
        std::llround(t.warmup_epochs() * static_cast<double>(sampler.num_batches())));
    sgd_->SetLearningRateScaling(static_cast<double>(world), warmup);
  }
  const auto bucket_bytes =
      t.bucket_bytes() > 0 ? static_cast<size_t>(t.bucket_bytes()) : kDefaultBucketBytes;
  const std::string& progress_name = t.allreduce_progress();
  dist::Progress progress = dist::Progress::kPolling;
  if (progress_name == "thread") {
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
  bucketer_ = std::make_unique<dist::GradientBucketer>(
      *comm_, std::move(grads), bucket_bytes, static_cast<size_t>(kArrivalBase + world), progress);
  if (world > 1) BroadcastState();
  const auto& a = config_.analysis();
  const int64_t probe_n =
      std::min(a.has_probe_samples() ? a.probe_samples() : kDefaultProbeSamples, train_set_.size());
  if (probe_n > 0) {
    // A seeded choice, sorted so that probe mini-batches read the data in order.
    std::vector<int64_t> order =
        data::EpochPermutation(t.seed() ^ 0x70726f6265ull, /*epoch=*/0, train_set_.size());
    probe_.assign(order.begin(), order.begin() + probe_n);
    std::sort(probe_.begin(), probe_.end());
  }
  const int64_t max_batch = std::max(per_rank_batch_, kEvalBatchSize);
  images_.resize(static_cast<size_t>(max_batch * train_set_.sample_size()));
  labels_.resize(static_cast<size_t>(max_batch));
}

Trainer::~Trainer() = default;

void Trainer::BroadcastState() {
  for (nn::Parameter* p : model_->parameters()) {
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

std::string Trainer::WeightsHash() {
  uint64_t h = 0xcbf29ce484222325ull;
  auto add = [&h](const float* data, size_t n) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  };
  for (nn::Parameter* p : model_->parameters()) {
    const std::vector<float> plain = nn::ToPlain(model_->dnnl(), p->value);
    add(plain.data(), plain.size());
  }
  for (nn::StateBuffer* s : model_->state()) add(s->value.data(), s->value.size());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
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
  ControlEvent event{step + 1, ControlActionName(word.action), word.learning_rate};
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
    case dist::ControlWord::kPause: {
      history_.control_events.push_back(event);
      for (auto* o : observers_) o->OnControl(event);
      // Wait at the step boundary until rank 0's source says otherwise; every rank
      // receives the same sequence of words. The other ranks wait in a non-blocking
      // broadcast that they test between sleeps, so a paused rank uses no core.
      const Clock::time_point paused = Clock::now();
      EPOCHAL_LOG(kInfo, "rank ", comm_->rank(), ": paused after global step ", step);
      dist::ControlWord next = word;
      while (next.action == dist::ControlWord::kPause) {
        if (comm_->is_root()) {
          std::this_thread::sleep_for(kPausePollInterval);
          next = RootControlWord(step + 1);
        }
        next = dist::SyncControlWordIdle(*comm_, next, kPausedTestInterval);
      }
      EPOCHAL_LOG(kInfo, "rank ", comm_->rank(), ": resumed at global step ", step + 1, " after ",
                  Seconds(paused, Clock::now()), " s paused");
      event = ControlEvent{step + 1, "resume", 0.0};
      history_.control_events.push_back(event);
      for (auto* o : observers_) o->OnControl(event);
      ApplyControl(next, step);
      return;
    }
    default:
      break;
  }
  EPOCHAL_LOG(kInfo, "rank ", comm_->rank(), ": ", event.action, " from global step ", event.step);
  history_.control_events.push_back(event);
  for (auto* o : observers_) o->OnControl(event);
}

void Trainer::TrainEpoch(int epoch, EpochRecord* record) {
  const auto& t = config_.training();
  const int rank = comm_->rank(), world = comm_->size();
  data::EpochSampler sampler(train_set_.size(), global_batch_, t.drop_last());
  sampler.Shuffle(t.seed(), epoch);
  if (sampler.dropped() > 0 && comm_->is_root()) {
    EPOCHAL_LOG(kInfo, "epoch ", epoch, ": drop_last skips ", sampler.dropped(),
                " samples (a different set each epoch)");
  }
  for (auto* o : observers_) o->OnEpochStart(epoch, t.epochs(), sampler.samples_per_epoch());

  const auto params = model_->parameters();
  bool poison = false;  // Test-only: a NaN in this rank's gradient (FaultPlan::nan_grad).
  const auto ready = [this, &params, &poison](size_t first, size_t end) {
    if (poison && end == params.size()) {
      nn::Data(params[end - 1]->grad)[0] = std::numeric_limits<float>::quiet_NaN();
      poison = false;
    }
    for (size_t i = end; i-- > first;) bucketer_->MarkReady(i);
    bucketer_->Poll();
  };
  const Clock::time_point epoch_start = Clock::now();
  double loss_sum = 0.0, data_s = 0.0, compute_s = 0.0, wait_s = 0.0, allreduce_s = 0.0;
  int64_t correct = 0, seen = 0, steps = 0, first_batch = 0;
  if (resume_ && resume_->epoch == epoch) {  // Continue a checkpointed epoch.
    first_batch = resume_->batches_done;
    loss_sum = resume_->sums.loss_sum;
    correct = resume_->sums.correct;
    seen = resume_->sums.seen;
    steps = resume_->sums.steps;
    record->lr = resume_->sums.last_lr;
    resume_.reset();
  }
  // Straggler accounting lags one step (a step's arrival is known only once its last
  // bucket was sent): the previous step's arrival and wait on this rank.
  double straggler_s = 0.0, previous_arrival_ms = 0.0, previous_wait_s = 0.0;
  int64_t straggler_steps = 0;
  Clock::time_point previous_end = epoch_start;
  const double l2 = config_.optimizer().weight_decay() > 0 ? 1.0 : 0.0;
  for (int64_t b = first_batch; b < sampler.num_batches() && !stopped_; ++b) {
    const Clock::time_point t0 = Clock::now();
    const std::span<const int64_t> global_ids = sampler.Batch(b);
    const std::span<const int64_t> ids = data::Shard(global_ids, rank, world);
    const auto n = static_cast<int64_t>(ids.size());
    data::GatherBatch(train_set_, ids, images_.data(), labels_.data());
    const Clock::time_point t1 = Clock::now();

    bucketer_->BeginStep();
    dist::ControlWord word;
    if (comm_->is_root()) word = RootControlWord(global_step_ + 1);
    nn::StepContext ctx{nn::Mode::kTrain, t.seed(), epoch, ids};
    const std::span<const int32_t> labels(labels_.data(), static_cast<size_t>(n));
    // The rate this step uses, read before Step() advances the schedule.
    const double lr = sgd_->CurrentLearningRate();
    nn::BatchResult r;
    if (n > 0) r = model_->Forward(ctx, images_.data(), labels);
    std::span<float> extras = bucketer_->extras();
    extras[kLossSum] = static_cast<float>(r.loss_sum);
    extras[kCorrect] = static_cast<float>(r.correct);
    extras[kCount] = static_cast<float>(n);
    extras[kControlAction] = static_cast<float>(word.action);
    const dist::PackedRate rate = dist::PackRate(word.learning_rate);
    std::copy_n(rate.part, 3, &extras[kControlRate]);
    for (int i = 0; i < world; ++i) {
      extras[kArrivalBase + static_cast<size_t>(i)] =
          i == rank && b > first_batch ? static_cast<float>(previous_arrival_ms) : 0.0f;
    }
    // Rank 0 asks for a timing gather when the interval has passed; it rides with the
    // control word, so every rank gathers after the same step and no step pays for an
    // extra collective.
    extras[kGatherTimings] = comm_->is_root() && timing_interval_ > 0 &&
                                     Seconds(last_timing_gather_, t1) >= timing_interval_
                                 ? 1.0f
                                 : 0.0f;
    const float grad_scale = 1.0f / static_cast<float>(global_ids.size());
    poison = faults_.nan_step == global_step_ + 1 && faults_.nan_rank == rank;
    if (n > 0) {
      model_->Backward(ctx, grad_scale, ready);
    } else {  // A global batch smaller than the rank count leaves this rank idle.
      for (nn::Parameter* p : params)
        std::fill_n(nn::Data(p->grad), nn::Span(p->grad).size(), 0.0f);
      ready(0, params.size());
    }
    const Clock::time_point t2 = Clock::now();
    bucketer_->Wait();
    const Clock::time_point t3 = Clock::now();
    if (world > 1 && b > first_batch) {
      float slowest = 0.0f;
      for (int i = 0; i < world; ++i) {
        slowest = std::max(slowest, extras[kArrivalBase + static_cast<size_t>(i)]);
      }
      const double behind_s = (static_cast<double>(slowest) - previous_arrival_ms) / 1000.0;
      straggler_s += std::clamp(behind_s, 0.0, previous_wait_s);
      ++straggler_steps;
    }
    previous_arrival_ms = 1000.0 * Seconds(previous_end, t2);
    previous_wait_s = Seconds(t2, t3);
    previous_end = t3;

    // Global sums of this step (exact in float: counts are small integers).
    const double step_loss = world == 1 ? r.loss_sum : extras[kLossSum];
    const auto step_correct = world == 1 ? r.correct : static_cast<int64_t>(extras[kCorrect]);
    const auto step_count = static_cast<int64_t>(global_ids.size());
    double batch_loss = step_loss / static_cast<double>(step_count);
    if (l2 > 0) batch_loss += sgd_->L2Penalty();
    // Gradients are all-reduced, so every rank finds the same thing here and stops at
    // the same step; the weights are not updated and no checkpoint is written.
    const char* bad_gradient = FirstNonFiniteGradient(params);
    if (!std::isfinite(batch_loss) || bad_gradient != nullptr) {
      throw Error(detail::StrCat(
          "training diverged at epoch ", epoch, ", step ", b + 1, " (global step ",
          global_step_ + 1, "): loss ", batch_loss,
          bad_gradient != nullptr ? detail::StrCat(", non-finite gradient of ", bad_gradient)
                                  : std::string(),
          "; stopped before the update, the last checkpoint is intact; lower the learning rate "
          "or check the data"));
    }
    sgd_->Step();
    ++global_step_;
    ++steps;
    loss_sum += batch_loss * static_cast<double>(step_count);
    correct += step_correct;
    seen += step_count;
    data_s += Seconds(t0, t1);
    compute_s += Seconds(t1, t2);
    wait_s += Seconds(t2, t3);
    allreduce_s += bucketer_->allreduce_seconds();
    rank_timing_.Add(Seconds(t0, t3), Seconds(t0, t1), Seconds(t2, t3), n);

    StepEvent ev;
    ev.epoch = epoch;
    ev.step_in_epoch = b + 1;
    ev.global_step = global_step_;
    ev.samples_in_epoch = seen;
    ev.samples_per_epoch = sampler.samples_per_epoch();
    ev.epoch_progress =
        (epoch - 1) + static_cast<double>(seen) / static_cast<double>(sampler.samples_per_epoch());
    ev.batch_loss = batch_loss;
    ev.running_loss = loss_sum / static_cast<double>(seen);
    ev.running_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    ev.learning_rate = lr;
    ev.batch_samples = step_count;
    ev.batch_correct = step_correct;
    history_.batches.push_back({ev.epoch_progress, batch_loss, lr});
    // Half-way through epoch e+1 the aligned loss of boundary e is known.
    if (epoch > 1 && ev.epoch_progress >= epoch - 0.5 &&
        !history_.epochs[static_cast<size_t>(epoch - 2)].aligned_train_loss) {
      SetAlignedLoss(epoch - 1);
    }
    for (auto* o : observers_) o->OnStep(ev);
    record->lr = lr;

    if (extras[kGatherTimings] > 0.5f) GatherRankTimings();
    dist::ControlWord received;
    received.action = static_cast<int32_t>(std::lround(extras[kControlAction]));
    received.learning_rate = dist::UnpackRate(&extras[kControlRate]);
    received.step = global_step_;
    ApplyControl(received, global_step_);
    AfterStep(epoch, b + 1, sampler.num_batches(), {loss_sum, correct, seen, steps, lr});
  }
  record->seconds = Seconds(epoch_start, Clock::now());
  record->loss = seen > 0 ? loss_sum / static_cast<double>(seen) : 0.0;
  record->accuracy = seen > 0 ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0;
  record->images_per_second = static_cast<double>(seen) / record->seconds;

  // Per-rank timings, gathered on rank 0.
  const double k = steps > 0 ? 1000.0 / static_cast<double>(steps) : 0.0;
  const double straggler_ms =
      straggler_steps > 0 ? 1000.0 * straggler_s / static_cast<double>(straggler_steps) : 0.0;
  const double mine[] = {(data_s + compute_s + wait_s) * k,
                         data_s * k,
                         compute_s * k,
                         wait_s * k,
                         allreduce_s * k,
                         straggler_ms};
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
  comm_->Gather(rank_timing_.Packed(), &all);
  rank_timing_.Reset();
  last_timing_gather_ = Clock::now();
  if (!comm_->is_root()) return;
  const RankTimingSnapshot snapshot = RankTimingHistograms::Unpack(all);
  for (auto* o : observers_) o->OnRankTimings(snapshot);
}

const History& Trainer::Run() {
  const int epochs = config_.training().epochs();
  EvalResult val;
  int first_epoch = 1;
  if (resume_) {
    first_epoch = resume_->epoch;
    // The diagnosis holds findings across epochs: rebuild it from the restored history.
    History prefix = history_;
    prefix.epochs.clear();
    for (const EpochRecord& e : history_.epochs) {
      prefix.epochs.push_back(e);
      diagnosis_.Update(prefix);
    }
  }
  for (int epoch = first_epoch; epoch <= epochs && !stopped_; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    TrainEpoch(epoch, &record);
    if (comm_->size() > 1 && !config_.training().sync_batch_norm()) AverageRunningStatistics();
    const Clock::time_point validation_start = Clock::now();
    val = Evaluate(val_set_);
    if (faults_.kill_in_validation == epoch && comm_->is_root()) KillSelf();
    record.val_loss = val.loss;
    record.val_accuracy = val.accuracy;
    const Clock::time_point probe_start = Clock::now();
    MeasureGap(&record, val);
    record.validation_seconds = Seconds(validation_start, probe_start);
    record.probe_seconds = Seconds(probe_start, Clock::now());
    if (comm_->size() > 1) {
      const uint64_t h = std::stoull(WeightsHash(), nullptr, 16);
      const double halves[] = {static_cast<double>(h >> 32), static_cast<double>(h & 0xffffffffu)};
      std::vector<double> all;
      comm_->Gather(halves, &all);
      for (size_t i = 0; i + 1 < all.size(); i += 2) {
        char hex[17];
        std::snprintf(hex, sizeof hex, "%08llx%08llx", static_cast<unsigned long long>(all[i]),
                      static_cast<unsigned long long>(all[i + 1]));
        record.replica_hashes.push_back(hex);
        if (record.replica_hashes.back() != record.replica_hashes.front()) {
          EPOCHAL_LOG(kError, "epoch ", epoch, ": rank ", i / 2, "'s weights differ from rank 0's");
        }
      }
    }
    history_.epochs.push_back(record);
    for (const Finding& f : diagnosis_.Update(history_)) {
      history_.epochs.back().findings.push_back(f.name + ": " + f.explanation);
    }
    for (auto* o : observers_) o->OnEpochEnd(history_.epochs.back(), val, history_);
    const int every =
        config_.checkpoint().has_every_epochs() ? config_.checkpoint().every_epochs() : 1;
    if (checkpoints_ && !stopped_ && (epoch == epochs || (every > 0 && epoch % every == 0))) {
      WriteCheckpoint(epoch + 1, 0, 0, {}, "epoch");
    }
  }
  // Resumed from the end of training: nothing ran, but the observers want a validation.
  if (val.confusion.empty()) val = Evaluate(val_set_);
  for (auto* o : observers_) o->OnTrainingEnd(history_, val);
  return history_;
}

std::vector<double> EvalResult::ClassAccuracy() const {
  const auto classes = static_cast<size_t>(std::llround(std::sqrt(confusion.size())));
  std::vector<double> out(classes, 0.0);
  for (size_t c = 0; c < classes; ++c) {
    int64_t row = 0;
    for (size_t k = 0; k < classes; ++k) row += confusion[c * classes + k];
    out[c] =
        row > 0 ? static_cast<double>(confusion[c * classes + c]) / static_cast<double>(row) : 0.0;
  }
  return out;
}

void Trainer::EvaluateBatches(const data::Dataset& dataset, std::span<const int64_t> ids,
                              int64_t batch, nn::Mode mode, int64_t mask_epoch, double* sums,
                              EvalResult* result, std::vector<double>* class_loss_sums) {
  const int64_t classes = model_->num_classes();
  for (size_t begin = 0; begin < ids.size(); begin += static_cast<size_t>(batch)) {
    const auto batch_ids =
        ids.subspan(begin, std::min<size_t>(static_cast<size_t>(batch), ids.size() - begin));
    const auto n = static_cast<int64_t>(batch_ids.size());
    data::GatherBatch(dataset, batch_ids, images_.data(), labels_.data());
    nn::StepContext ctx{mode, config_.training().seed(), mask_epoch, batch_ids};
    const std::span<const int32_t> labels(labels_.data(), static_cast<size_t>(n));
    const nn::BatchResult r = model_->Forward(ctx, images_.data(), labels);
    sums[0] += r.loss_sum;
    sums[1] += static_cast<double>(r.correct);
    sums[2] += static_cast<double>(n);
    const auto predictions = model_->predictions();
    const auto losses = model_->sample_losses();
    for (int64_t i = 0; i < n; ++i) {
      const auto label = static_cast<size_t>(labels[static_cast<size_t>(i)]);
      ++result->confusion[label * static_cast<size_t>(classes) +
                          static_cast<size_t>(predictions[static_cast<size_t>(i)])];
      (*class_loss_sums)[label] += losses[static_cast<size_t>(i)];
    }
  }
}

void Trainer::FinishEvaluation(double* sums, EvalResult* result,
                               std::vector<double>* class_loss_sums) {
  comm_->AllreduceSum(std::span<double>(sums, 3));
  comm_->AllreduceSum(std::span<int64_t>(result->confusion));
  comm_->AllreduceSum(std::span<double>(*class_loss_sums));
  result->count = static_cast<int64_t>(sums[2]);
  result->loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
  result->accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
  const auto classes = class_loss_sums->size();
  result->class_loss.assign(classes, 0.0);
  for (size_t c = 0; c < classes; ++c) {
    int64_t row = 0;
    for (size_t k = 0; k < classes; ++k) row += result->confusion[c * classes + k];
    result->class_loss[c] = row > 0 ? (*class_loss_sums)[c] / static_cast<double>(row) : 0.0;
  }
}

EvalResult Trainer::Evaluate(const data::Dataset& dataset, nn::Mode mode) {
  const auto classes = static_cast<size_t>(model_->num_classes());
  EvalResult result;
  result.confusion.assign(classes * classes, 0);
  std::vector<double> class_loss_sums(classes, 0.0);
  const data::IndexRange shard = data::ShardRange(dataset.size(), comm_->rank(), comm_->size());
  std::vector<int64_t> ids(static_cast<size_t>(shard.size()));
  for (int64_t i = 0; i < shard.size(); ++i) ids[static_cast<size_t>(i)] = shard.begin + i;
  double sums[3] = {0.0, 0.0, 0.0};  // loss, correct, count
  EvaluateBatches(dataset, ids, kEvalBatchSize, mode, 0, sums, &result, &class_loss_sums);
  FinishEvaluation(sums, &result, &class_loss_sums);
  return result;
}

EvalResult Trainer::EvaluateProbe(nn::Mode mode) {
  const auto classes = static_cast<size_t>(model_->num_classes());
  EvalResult result;
  result.confusion.assign(classes * classes, 0);
  std::vector<double> class_loss_sums(classes, 0.0);
  double sums[3] = {0.0, 0.0, 0.0};
  // Training-mode statistics depend on which samples share a mini-batch: cut the probe
  // into mini-batches of the per-rank training batch size and give whole mini-batches
  // to ranks, so every rank count sees the same mini-batches.
  const int64_t batch = per_rank_batch_;
  const int64_t batches = (static_cast<int64_t>(probe_.size()) + batch - 1) / batch;
  const data::IndexRange mine = data::ShardRange(batches, comm_->rank(), comm_->size());
  const int64_t begin = std::min<int64_t>(mine.begin * batch, static_cast<int64_t>(probe_.size()));
  const int64_t end = std::min<int64_t>(mine.end * batch, static_cast<int64_t>(probe_.size()));
  const std::span<const int64_t> ids(probe_.data() + begin, static_cast<size_t>(end - begin));
  // Synchronized batch norm would make every mini-batch a collective, but ranks hold
  // different numbers of probe mini-batches: probes use each mini-batch's own statistics.
  if (reducer_) model_->SetStatisticsReducer(nullptr);
  EvaluateBatches(train_set_, ids, mode == nn::Mode::kInference ? kEvalBatchSize : batch, mode,
                  kProbeMaskEpoch, sums, &result, &class_loss_sums);
  if (reducer_) model_->SetStatisticsReducer(reducer_.get());
  FinishEvaluation(sums, &result, &class_loss_sums);
  return result;
}

Trainer::ProbeLosses Trainer::MeasureProbes() {
  ProbeLosses out;
  if (probe_.empty()) return out;
  const EvalResult train_mode = EvaluateProbe(nn::Mode::kTrainFrozen);
  out.eval_result = EvaluateProbe(nn::Mode::kInference);
  // The L2 penalty is part of the training loss (L_run includes it), not of inference.
  const double l2 = config_.optimizer().weight_decay() > 0 ? sgd_->L2Penalty() : 0.0;
  out.train = train_mode.loss + l2;
  out.eval = out.eval_result.loss;
  return out;
}

void Trainer::MeasureGap(EpochRecord* record, const EvalResult& val) {
  record->val_class_loss = val.class_loss;
  record->val_class_accuracy = val.ClassAccuracy();
  if (probe_.empty()) return;
  const ProbeLosses probes = MeasureProbes();
  const double p_train = probes.train;
  const double p_eval = probes.eval;
  const EvalResult& eval_mode = probes.eval_result;
  record->probe_train_loss = p_train;
  record->probe_eval_loss = p_eval;
  record->gap_timing = p_train - record->loss;
  record->gap_regularization = p_eval - p_train;
  record->gap_data = record->val_loss - p_eval;
  record->probe_class_loss = eval_mode.class_loss;
  record->probe_class_accuracy = eval_mode.ClassAccuracy();
  const std::pair<double, const char*> terms[] = {{*record->gap_timing, "timing"},
                                                  {*record->gap_regularization, "regularization"},
                                                  {*record->gap_data, "data"}};
  const auto* dominant = &terms[0];
  for (const auto& term : terms) {
    if (std::abs(term.first) > std::abs(dominant->first)) dominant = &term;
  }
  record->dominant_term = dominant->second;
}

void Trainer::SetAlignedLoss(int boundary_epoch) {
  if (boundary_epoch < 1 || boundary_epoch > static_cast<int>(history_.epochs.size())) return;
  // The mean of the per-batch losses within half an epoch on each side of the boundary.
  const double lo = boundary_epoch - 0.5, hi = boundary_epoch + 0.5;
  double sum = 0.0;
  int64_t n = 0;
  for (auto it = history_.batches.rbegin(); it != history_.batches.rend(); ++it) {
    if (it->epoch_progress <= lo) break;
    if (it->epoch_progress <= hi) {
      sum += it->loss;
      ++n;
    }
  }
  if (n > 0)
    history_.epochs[static_cast<size_t>(boundary_epoch - 1)].aligned_train_loss =
        sum / static_cast<double>(n);
}

}  // namespace epochal::train
