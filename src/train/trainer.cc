#include "epochal/train/trainer.h"

#include <chrono>
#include <cmath>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/data/sampler.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/train/config.h"

namespace epochal::train {
namespace {

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Batches used for validation; inference results do not depend on the batch size.
constexpr int64_t kEvalBatchSize = 128;

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
                 const data::Dataset& val_set)
    : config_(config), train_set_(train_set), val_set_(val_set) {
  history_.config_json = ConfigToJson(config_);
  CheckDatasetMatchesModel(train_set_, config_.model());
  CheckDatasetMatchesModel(val_set_, config_.model());
  const int64_t batch = config_.training().batch_size();
  model_ = std::make_unique<nn::Model>(config_.model(), batch, config_.training().seed());
  std::vector<optim::ParamView> views;
  for (nn::Parameter* p : model_->parameters()) {
    views.push_back({p->name, nn::Span(p->value), nn::Span(p->grad), p->apply_weight_decay});
  }
  sgd_ = std::make_unique<optim::Sgd>(SgdOptionsFrom(config_.optimizer()), std::move(views));
  const int64_t max_batch = std::max(batch, kEvalBatchSize);
  images_.resize(static_cast<size_t>(max_batch * train_set_.sample_size()));
  labels_.resize(static_cast<size_t>(max_batch));
}

Trainer::~Trainer() = default;

void Trainer::TrainEpoch(int epoch, EpochRecord* record) {
  const auto& t = config_.training();
  data::EpochSampler sampler(train_set_.size(), t.batch_size(), t.drop_last());
  sampler.Shuffle(t.seed(), epoch);
  if (sampler.dropped() > 0) {
    EPOCHAL_LOG(kInfo, "epoch ", epoch, ": drop_last skips ", sampler.dropped(),
                " samples (a different set each epoch)");
  }
  for (auto* o : observers_) o->OnEpochStart(epoch, t.epochs(), sampler.samples_per_epoch());

  const double start = Seconds();
  double loss_sum = 0.0;
  int64_t correct = 0, seen = 0;
  const double l2 = config_.optimizer().weight_decay() > 0 ? 1.0 : 0.0;
  for (int64_t b = 0; b < sampler.num_batches(); ++b) {
    const std::span<const int64_t> ids = sampler.Batch(b);
    const auto n = static_cast<int64_t>(ids.size());
    data::GatherBatch(train_set_, ids, images_.data(), labels_.data());
    nn::StepContext ctx{nn::Mode::kTrain, t.seed(), epoch, ids};
    const std::span<const int32_t> labels(labels_.data(), static_cast<size_t>(n));
    // The rate this step uses, read before Step() advances the schedule.
    const double lr = sgd_->CurrentLearningRate();
    const nn::BatchResult r = model_->Forward(ctx, images_.data(), labels);
    double batch_loss = r.loss_sum / static_cast<double>(n);
    if (l2 > 0) batch_loss += sgd_->L2Penalty();
    if (!std::isfinite(batch_loss)) {
      throw Error(detail::StrCat("loss became ", batch_loss, " at epoch ", epoch, ", step ", b + 1,
                                 " (global step ", global_step_ + 1,
                                 "); lower the learning rate or check the data"));
    }
    model_->Backward(ctx, 1.0f / static_cast<float>(n));
    sgd_->Step();
    ++global_step_;
    loss_sum += batch_loss * static_cast<double>(n);
    correct += r.correct;
    seen += n;

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
    history_.batches.push_back({ev.epoch_progress, batch_loss, lr});
    for (auto* o : observers_) o->OnStep(ev);
    record->lr = lr;
  }
  record->seconds = Seconds() - start;
  record->loss = loss_sum / static_cast<double>(seen);
  record->accuracy = static_cast<double>(correct) / static_cast<double>(seen);
  record->images_per_second = static_cast<double>(seen) / record->seconds;
}

const History& Trainer::Run() {
  const int epochs = config_.training().epochs();
  EvalResult val;
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    EpochRecord record;
    record.epoch = epoch;
    TrainEpoch(epoch, &record);
    val = Evaluate(val_set_);
    record.val_loss = val.loss;
    record.val_accuracy = val.accuracy;
    history_.epochs.push_back(record);
    for (auto* o : observers_) o->OnEpochEnd(history_.epochs.back(), val, history_);
  }
  for (auto* o : observers_) o->OnTrainingEnd(history_, val);
  return history_;
}

EvalResult Trainer::Evaluate(const data::Dataset& dataset, nn::Mode mode) {
  const int64_t classes = model_->num_classes();
  EvalResult result;
  result.confusion.assign(static_cast<size_t>(classes * classes), 0);
  std::vector<int64_t> ids(static_cast<size_t>(kEvalBatchSize));
  double loss_sum = 0.0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < dataset.size(); begin += kEvalBatchSize) {
    const int64_t n = std::min(kEvalBatchSize, dataset.size() - begin);
    for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = begin + i;
    const std::span<const int64_t> batch_ids(ids.data(), static_cast<size_t>(n));
    data::GatherBatch(dataset, batch_ids, images_.data(), labels_.data());
    nn::StepContext ctx{mode, config_.training().seed(), 0, batch_ids};
    const std::span<const int32_t> labels(labels_.data(), static_cast<size_t>(n));
    const nn::BatchResult r = model_->Forward(ctx, images_.data(), labels);
    loss_sum += r.loss_sum;
    correct += r.correct;
    const auto predictions = model_->predictions();
    for (int64_t i = 0; i < n; ++i) {
      ++result.confusion[static_cast<size_t>(labels[static_cast<size_t>(i)] * classes +
                                             predictions[static_cast<size_t>(i)])];
    }
  }
  result.count = dataset.size();
  result.loss = loss_sum / static_cast<double>(dataset.size());
  result.accuracy = static_cast<double>(correct) / static_cast<double>(dataset.size());
  return result;
}

}  // namespace epochal::train
