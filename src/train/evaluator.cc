#include "epochal/train/evaluator.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "epochal/core/error.h"
#include "epochal/core/hash.h"
#include "epochal/core/logging.h"
#include "epochal/data/sampler.h"
#include "epochal/nn/dnnl_util.h"

namespace epochal::train {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Batches used for validation; inference results do not depend on the batch size.
constexpr int64_t kEvalBatchSize = 128;
// 5,000 samples give the terms standard errors of a few thousandths (docs/loss-gap.md,
// "Cost") at under 8 % of a reference epoch for the three passes.
constexpr int64_t kDefaultProbeSamples = 5000;
// Dropout mask key of the training-mode probe: fixed, so P_train changes only because
// the weights do (training epochs are 1-based, so this never collides).
constexpr int64_t kProbeMaskEpoch = -1;

// Dropout key of the precise-batch-norm batches (never a training epoch's).
constexpr int64_t kRecomputeMaskEpoch = -2;

// sum and sum of squares of n values -> the standard error of their mean.
double StandardError(double sum, double sum_sq, double n) {
  if (n < 2) return 0.0;
  const double mean = sum / n;
  const double var = std::max(0.0, (sum_sq - n * mean * mean) / (n - 1));
  return std::sqrt(var / n);
}

}  // namespace

std::vector<optim::ParamView> ParamViews(nn::Model& model) {
  std::vector<optim::ParamView> views;
  for (nn::Parameter* p : model.parameters()) {
    views.push_back({p->name, nn::Span(p->value), nn::Span(p->grad), p->apply_weight_decay});
  }
  return views;
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

Evaluator::Evaluator(const v1::ExperimentConfig& config, nn::Model& model,
                     const dist::Communicator& comm, const data::Dataset* probe_source,
                     int64_t per_rank_batch, nn::StatisticsReducer* reducer)
    : config_(config),
      model_(model),
      comm_(comm),
      probe_source_(probe_source),
      per_rank_batch_(per_rank_batch),
      reducer_(reducer),
      traits_(RegularizationTraits::FromConfig(config)),
      views_(ParamViews(model)) {
  const auto& a = config_.analysis();
  if (probe_source_ != nullptr) {
    const int64_t probe_n = std::min(
        a.has_probe_samples() ? a.probe_samples() : kDefaultProbeSamples, probe_source_->size());
    if (probe_n > 0) {
      // A seeded choice, sorted so that probe mini-batches read the data in order.
      const uint64_t seed =
          a.has_probe_seed() ? a.probe_seed() : config_.training().seed() ^ 0x70726f6265ull;
      std::vector<int64_t> order = data::EpochPermutation(seed, /*epoch=*/0, probe_source_->size());
      probe_.assign(order.begin(), order.begin() + probe_n);
      std::sort(probe_.begin(), probe_.end());
    }
  }
  const auto& in = config_.model().input();
  const int64_t sample_size = int64_t{in.channels()} * in.height() * in.width();
  const int64_t max_batch = std::max(per_rank_batch_, kEvalBatchSize);
  images_.resize(static_cast<size_t>(max_batch * sample_size));
  labels_.resize(static_cast<size_t>(max_batch));
}

void Evaluator::EvaluateBatches(const data::Dataset& dataset, std::span<const int64_t> ids,
                                int64_t batch, nn::Mode mode, int64_t mask_epoch, double* sums,
                                EvalResult* result, std::vector<double>* class_loss_sums,
                                std::vector<double>* per_sample) {
  const int64_t classes = model_.num_classes();
  for (size_t begin = 0; begin < ids.size(); begin += static_cast<size_t>(batch)) {
    const auto batch_ids =
        ids.subspan(begin, std::min<size_t>(static_cast<size_t>(batch), ids.size() - begin));
    const auto n = static_cast<int64_t>(batch_ids.size());
    data::GatherBatch(dataset, batch_ids, images_.data(), labels_.data());
    nn::StepContext ctx{mode, config_.training().seed(), mask_epoch, batch_ids};
    const std::span<const int32_t> labels(labels_.data(), static_cast<size_t>(n));
    const nn::BatchResult r = model_.Forward(ctx, images_.data(), labels);
    sums[0] += r.loss_sum;
    sums[1] += static_cast<double>(r.correct);
    sums[2] += static_cast<double>(n);
    const auto predictions = model_.predictions();
    const auto losses = model_.sample_losses();
    for (int64_t i = 0; i < n; ++i) {
      const auto label = static_cast<size_t>(labels[static_cast<size_t>(i)]);
      ++result->confusion[label * static_cast<size_t>(classes) +
                          static_cast<size_t>(predictions[static_cast<size_t>(i)])];
      const double loss = losses[static_cast<size_t>(i)];
      (*class_loss_sums)[label] += loss;
      sums[3] += loss * loss;
      if (per_sample != nullptr) per_sample->push_back(loss);
    }
  }
}

void Evaluator::FinishEvaluation(double* sums, EvalResult* result,
                                 std::vector<double>* class_loss_sums) {
  comm_.AllreduceSum(std::span<double>(sums, 4));
  comm_.AllreduceSum(std::span<int64_t>(result->confusion));
  comm_.AllreduceSum(std::span<double>(*class_loss_sums));
  result->count = static_cast<int64_t>(sums[2]);
  result->loss = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
  result->loss_se = StandardError(sums[0], sums[3], sums[2]);
  result->accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
  const auto classes = class_loss_sums->size();
  result->class_loss.assign(classes, 0.0);
  for (size_t c = 0; c < classes; ++c) {
    int64_t row = 0;
    for (size_t k = 0; k < classes; ++k) row += result->confusion[c * classes + k];
    result->class_loss[c] = row > 0 ? (*class_loss_sums)[c] / static_cast<double>(row) : 0.0;
  }
}

EvalResult Evaluator::Evaluate(const data::Dataset& dataset, nn::Mode mode) {
  const auto classes = static_cast<size_t>(model_.num_classes());
  EvalResult result;
  result.confusion.assign(classes * classes, 0);
  std::vector<double> class_loss_sums(classes, 0.0);
  const data::IndexRange shard = data::ShardRange(dataset.size(), comm_.rank(), comm_.size());
  std::vector<int64_t> ids(static_cast<size_t>(shard.size()));
  for (int64_t i = 0; i < shard.size(); ++i) ids[static_cast<size_t>(i)] = shard.begin + i;
  double sums[4] = {0.0, 0.0, 0.0, 0.0};  // loss, correct, count, squared loss
  EvaluateBatches(dataset, ids, kEvalBatchSize, mode, 0, sums, &result, &class_loss_sums);
  FinishEvaluation(sums, &result, &class_loss_sums);
  return result;
}

EvalResult Evaluator::EvaluateProbe(nn::Mode mode) { return EvaluateProbe(mode, nullptr); }

EvalResult Evaluator::EvaluateProbe(nn::Mode mode, std::vector<double>* per_sample) {
  const auto classes = static_cast<size_t>(model_.num_classes());
  EvalResult result;
  result.confusion.assign(classes * classes, 0);
  std::vector<double> class_loss_sums(classes, 0.0);
  double sums[4] = {0.0, 0.0, 0.0, 0.0};
  // Training-mode statistics depend on which samples share a mini-batch: cut the probe
  // into mini-batches of the per-rank training batch size and give whole mini-batches
  // to ranks, so every rank count sees the same mini-batches.
  const int64_t batch = per_rank_batch_;
  const int64_t batches = (static_cast<int64_t>(probe_.size()) + batch - 1) / batch;
  const data::IndexRange mine = data::ShardRange(batches, comm_.rank(), comm_.size());
  const int64_t begin = std::min<int64_t>(mine.begin * batch, static_cast<int64_t>(probe_.size()));
  const int64_t end = std::min<int64_t>(mine.end * batch, static_cast<int64_t>(probe_.size()));
  const std::span<const int64_t> ids(probe_.data() + begin, static_cast<size_t>(end - begin));
  // Synchronized batch norm would make every mini-batch a collective, but ranks hold
  // different numbers of probe mini-batches: probes use each mini-batch's own statistics.
  if (reducer_ != nullptr) model_.SetStatisticsReducer(nullptr);
  if (!ids.empty()) {
    EvaluateBatches(*probe_source_, ids, mode == nn::Mode::kInference ? kEvalBatchSize : batch,
                    mode, kProbeMaskEpoch, sums, &result, &class_loss_sums, per_sample);
  }
  if (reducer_ != nullptr) model_.SetStatisticsReducer(reducer_);
  FinishEvaluation(sums, &result, &class_loss_sums);
  return result;
}

ProbeLosses Evaluator::MeasureProbes() {
  ProbeLosses out;
  if (probe_.empty()) return out;
  // Each pass gives this rank's per-sample losses in the same order (its share of the
  // probe), so differences pair sample with sample. A pass the model makes identical to
  // another is not run: without dropout, P_nodrop's forward pass is P_train's; without
  // batch norm as well, P_eval's is P_nodrop's.
  std::vector<double> train_losses, nodrop_losses, eval_losses;
  const EvalResult train_mode = EvaluateProbe(nn::Mode::kTrainFrozen, &train_losses);
  EvalResult nodrop_mode;
  if (!traits_.dropout_rates.empty()) {
    nodrop_mode = EvaluateProbe(nn::Mode::kBatchStatisticsFrozen, &nodrop_losses);
  } else {
    nodrop_mode = train_mode;
    nodrop_losses = train_losses;
  }
  if (traits_.has_batchnorm_term()) {
    out.eval_result = EvaluateProbe(nn::Mode::kInference, &eval_losses);
  } else {
    out.eval_result = nodrop_mode;
    eval_losses = nodrop_losses;
  }
  // The L2 penalty is part of the training loss (L_run includes it), not of inference.
  const float weight_decay = config_.optimizer().weight_decay();
  const double l2 = weight_decay > 0 ? optim::L2Penalty(views_, weight_decay) : 0.0;
  out.train = train_mode.loss + l2;
  out.nodrop = nodrop_mode.loss;
  out.eval = out.eval_result.loss;
  out.train_se = train_mode.loss_se;
  out.eval_se = out.eval_result.loss_se;
  // Paired differences: sum and sum of squares of nodrop - train, eval - nodrop and
  // eval - train, over every rank's samples.
  double d[7] = {0, 0, 0, 0, 0, 0, static_cast<double>(train_losses.size())};
  for (size_t i = 0; i < train_losses.size(); ++i) {
    const double a = nodrop_losses[i] - train_losses[i];
    const double b = eval_losses[i] - nodrop_losses[i];
    const double c = eval_losses[i] - train_losses[i];
    d[0] += a;
    d[1] += a * a;
    d[2] += b;
    d[3] += b * b;
    d[4] += c;
    d[5] += c * c;
  }
  comm_.AllreduceSum(std::span<double>(d, 7));
  out.dropout_se = StandardError(d[0], d[1], d[6]);
  out.batchnorm_se = StandardError(d[2], d[3], d[6]);
  out.regularization_se = StandardError(d[4], d[5], d[6]);
  return out;
}

void Evaluator::RecomputeBatchNormStatistics(int64_t batches, int epoch) {
  const std::vector<nn::StateBuffer*> state = model_.state();
  if (batches <= 0 || probe_source_ == nullptr || !traits_.has_batchnorm_term() || state.empty()) {
    return;
  }
  // Batch statistics over the first `batches` global batches of a seeded permutation of
  // the training set; each rank takes its share of every batch, as in training. Every
  // rank runs the same number of forward passes (an empty share adds nothing), so the
  // sums below are complete.
  const int64_t global_batch = per_rank_batch_ * comm_.size();
  const std::vector<int64_t> order = data::EpochPermutation(
      config_.training().seed() ^ 0x707265636973ull, epoch, probe_source_->size());
  for (nn::StateBuffer* s : state) std::fill(s->value.begin(), s->value.end(), 0.0f);
  if (reducer_ != nullptr) model_.SetStatisticsReducer(nullptr);
  double counted = 0;  // Forward passes of this rank.
  for (int64_t b = 0; b < batches; ++b) {
    const int64_t begin = (b * global_batch) % static_cast<int64_t>(order.size());
    const int64_t n = std::min<int64_t>(global_batch, static_cast<int64_t>(order.size()) - begin);
    const std::span<const int64_t> global_ids(order.data() + begin, static_cast<size_t>(n));
    const std::span<const int64_t> ids = data::Shard(global_ids, comm_.rank(), comm_.size());
    if (ids.size() < 2) continue;  // One sample has no variance to contribute.
    data::GatherBatch(*probe_source_, ids, images_.data(), labels_.data());
    const nn::StepContext ctx{nn::Mode::kRecomputeStatistics, config_.training().seed(),
                              kRecomputeMaskEpoch, ids};
    model_.Forward(ctx, images_.data(), std::span<const int32_t>(labels_.data(), ids.size()));
    counted += 1;
  }
  model_.Synchronize();
  if (reducer_ != nullptr) model_.SetStatisticsReducer(reducer_);
  comm_.AllreduceSum(std::span<double>(&counted, 1));
  const float inv = counted > 0 ? static_cast<float>(1.0 / counted) : 0.0f;
  for (nn::StateBuffer* s : state) {
    comm_.AllreduceSum(std::span<float>(s->value));
    for (float& v : s->value) v *= inv;
  }
}

void Evaluator::SetGapTerms(const ProbeLosses& probes, const EvalResult& val, EpochRecord* record) {
  record->probe_train_loss = probes.train;
  record->probe_nodrop_loss = probes.nodrop;
  record->probe_eval_loss = probes.eval;
  record->gap_timing = probes.train - record->loss;
  record->gap_dropout = probes.nodrop - probes.train;
  record->gap_batchnorm = probes.eval - probes.nodrop;
  record->gap_regularization = probes.eval - probes.train;
  record->gap_data = record->val_loss - probes.eval;
  // L_run is the exact mean of the epoch's training losses; the probe is a sample.
  record->gap_timing_se = probes.train_se;
  record->gap_dropout_se = probes.dropout_se;
  record->gap_batchnorm_se = probes.batchnorm_se;
  record->gap_regularization_se = probes.regularization_se;
  // Two independent samples: validation and the probe.
  record->gap_data_se = std::hypot(val.loss_se, probes.eval_se);
  record->probe_class_loss = probes.eval_result.class_loss;
  record->probe_class_accuracy = probes.eval_result.ClassAccuracy();
  const std::pair<double, const char*> terms[] = {{*record->gap_timing, "timing"},
                                                  {*record->gap_dropout, "dropout"},
                                                  {*record->gap_batchnorm, "batchnorm"},
                                                  {*record->gap_data, "data"}};
  const auto* dominant = &terms[0];
  for (const auto& term : terms) {
    if (std::abs(term.first) > std::abs(dominant->first)) dominant = &term;
  }
  record->dominant_term = dominant->second;
}

EvalResult Evaluator::MeasureEpoch(const data::Dataset& val_set, EpochRecord* record,
                                   const std::function<void()>& after_validation) {
  const Clock::time_point validation_start = Clock::now();
  RecomputeBatchNormStatistics(config_.training().recompute_bn_stats(), record->epoch);
  const EvalResult val = Evaluate(val_set);
  if (after_validation) after_validation();
  record->val_loss = val.loss;
  record->val_accuracy = val.accuracy;
  const Clock::time_point probe_start = Clock::now();
  record->val_class_loss = val.class_loss;
  record->val_class_accuracy = val.ClassAccuracy();
  if (!probe_.empty()) SetGapTerms(MeasureProbes(), val, record);
  record->validation_seconds = Seconds(validation_start, probe_start);
  record->probe_seconds = Seconds(probe_start, Clock::now());
  if (comm_.size() > 1) {
    record->replica_hashes = ReplicaHashes();
    StopIfReplicasDiverged(record->replica_hashes,
                           detail::StrCat("at the end of epoch ", record->epoch));
  }
  return val;
}

void Evaluator::StopIfReplicasDiverged(const std::vector<std::string>& hashes,
                                       const std::string& when) {
  std::string message;
  if (comm_.is_root()) {
    size_t first = 0, differing = 0;
    for (size_t r = 1; r < hashes.size(); ++r) {
      if (hashes[r] == hashes.front()) continue;
      if (first == 0) first = r;
      ++differing;
    }
    if (differing > 0) {
      message = detail::StrCat(
          "replicas diverged ", when, ": rank ", first, "'s weights (hash ", hashes[first],
          ") differ from rank 0's (", hashes.front(), "), ", differing, " of ", hashes.size() - 1,
          " other ranks differ; stopped without checkpointing them, so the newest checkpoint is "
          "the last good one (--resume auto continues from it); replicas drift apart only "
          "through a bug or a hardware fault (docs/fault-tolerance.md)");
    }
  }
  comm_.Broadcast(&message);  // Every rank stops, with the same message.
  if (!message.empty()) throw Error(message);
}

void Evaluator::SetAlignedLoss(int boundary_epoch, History* history) {
  if (boundary_epoch < 1 || boundary_epoch > static_cast<int>(history->epochs.size())) return;
  const double lo = boundary_epoch - 0.5, hi = boundary_epoch + 0.5;
  double sum = 0.0, n = 0.0;
  for (auto it = history->batches.rbegin(); it != history->batches.rend(); ++it) {
    if (it->epoch_progress <= lo) break;
    if (it->epoch_progress <= hi) {
      const double w = it->samples > 0 ? static_cast<double>(it->samples) : 1.0;
      sum += w * it->loss;
      n += w;
    }
  }
  if (n > 0) history->epochs[static_cast<size_t>(boundary_epoch - 1)].aligned_train_loss = sum / n;
}

std::string Evaluator::WeightsHash(bool with_state) {
  uint64_t h = kFnv1aOffset;
  for (nn::Parameter* p : model_.parameters()) {
    const std::vector<float> plain = nn::ToPlain(model_.dnnl(), p->value);
    h = Fnv1a(plain.data(), plain.size() * sizeof(float), h);
  }
  for (nn::StateBuffer* s : model_.state()) {
    if (!with_state) break;
    h = Fnv1a(s->value.data(), s->value.size() * sizeof(float), h);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::vector<std::string> Evaluator::ReplicaHashes(bool with_state) {
  const uint64_t h = std::stoull(WeightsHash(with_state), nullptr, 16);
  // Two exact halves: a double holds 53 bits, not 64.
  const double halves[] = {static_cast<double>(h >> 32), static_cast<double>(h & 0xffffffffu)};
  std::vector<double> all;
  comm_.Gather(halves, &all);
  std::vector<std::string> hashes;
  for (size_t i = 0; i + 1 < all.size(); i += 2) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%08llx%08llx", static_cast<unsigned long long>(all[i]),
                  static_cast<unsigned long long>(all[i + 1]));
    hashes.push_back(hex);
  }
  return hashes;
}

}  // namespace epochal::train
