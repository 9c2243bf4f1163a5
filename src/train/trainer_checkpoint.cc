// The Trainer's checkpoint side: taking a snapshot of everything a run needs to continue
// exactly (checkpoint.proto), writing it on rank 0, and restoring it on every rank.
// docs/fault-tolerance.md explains where checkpoints sit in the loop.
#include <chrono>
#include <csignal>
#include <cstring>
#include <map>

#include "epochal/core/error.h"
#include "epochal/core/logging.h"
#include "epochal/data/sampler.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/train/checkpoint.h"
#include "epochal/train/trainer.h"

namespace epochal::train {
namespace {

using detail::StrCat;

void ToProto(const History& h, v1::HistoryProto* out) {
  for (const EpochRecord& e : h.epochs) {
    v1::EpochRecordProto* p = out->add_epochs();
    p->set_epoch(e.epoch);
    p->set_loss(e.loss);
    p->set_accuracy(e.accuracy);
    p->set_val_loss(e.val_loss);
    p->set_val_accuracy(e.val_accuracy);
    p->set_seconds(e.seconds);
    p->set_images_per_second(e.images_per_second);
    p->set_lr(e.lr);
    if (e.probe_train_loss) p->set_probe_train_loss(*e.probe_train_loss);
    if (e.probe_eval_loss) p->set_probe_eval_loss(*e.probe_eval_loss);
    if (e.gap_timing) p->set_gap_timing(*e.gap_timing);
    if (e.gap_regularization) p->set_gap_regularization(*e.gap_regularization);
    if (e.gap_data) p->set_gap_data(*e.gap_data);
    if (e.aligned_train_loss) p->set_aligned_train_loss(*e.aligned_train_loss);
    for (const auto& f : e.findings) p->add_findings(f);
    p->mutable_val_class_loss()->Add(e.val_class_loss.begin(), e.val_class_loss.end());
    p->mutable_val_class_accuracy()->Add(e.val_class_accuracy.begin(), e.val_class_accuracy.end());
    p->mutable_probe_class_loss()->Add(e.probe_class_loss.begin(), e.probe_class_loss.end());
    p->mutable_probe_class_accuracy()->Add(e.probe_class_accuracy.begin(),
                                           e.probe_class_accuracy.end());
    p->set_dominant_term(e.dominant_term);
    for (const auto& t : e.rank_timings) {
      for (double v : {t.step_ms, t.data_ms, t.compute_ms, t.allreduce_wait_ms, t.allreduce_ms,
                       t.straggler_wait_ms}) {
        p->add_rank_timings(v);
      }
    }
    for (const auto& hash : e.replica_hashes) p->add_replica_hashes(hash);
    p->set_validation_seconds(e.validation_seconds);
    p->set_probe_seconds(e.probe_seconds);
  }
  for (const BatchRecord& b : h.batches) {
    v1::BatchRecordProto* p = out->add_batches();
    p->set_epoch_progress(b.epoch_progress);
    p->set_loss(b.loss);
    p->set_lr(b.lr);
  }
  for (const ControlEvent& c : h.control_events) {
    v1::ControlEventProto* p = out->add_control_events();
    p->set_step(c.step);
    p->set_action(c.action);
    p->set_learning_rate(c.learning_rate);
  }
}

void FromProto(const v1::HistoryProto& in, History* h) {
  h->epochs.clear();
  h->batches.clear();
  h->control_events.clear();
  for (const v1::EpochRecordProto& p : in.epochs()) {
    EpochRecord e;
    e.epoch = p.epoch();
    e.loss = p.loss();
    e.accuracy = p.accuracy();
    e.val_loss = p.val_loss();
    e.val_accuracy = p.val_accuracy();
    e.seconds = p.seconds();
    e.images_per_second = p.images_per_second();
    e.lr = p.lr();
    if (p.has_probe_train_loss()) e.probe_train_loss = p.probe_train_loss();
    if (p.has_probe_eval_loss()) e.probe_eval_loss = p.probe_eval_loss();
    if (p.has_gap_timing()) e.gap_timing = p.gap_timing();
    if (p.has_gap_regularization()) e.gap_regularization = p.gap_regularization();
    if (p.has_gap_data()) e.gap_data = p.gap_data();
    if (p.has_aligned_train_loss()) e.aligned_train_loss = p.aligned_train_loss();
    e.findings.assign(p.findings().begin(), p.findings().end());
    e.val_class_loss.assign(p.val_class_loss().begin(), p.val_class_loss().end());
    e.val_class_accuracy.assign(p.val_class_accuracy().begin(), p.val_class_accuracy().end());
    e.probe_class_loss.assign(p.probe_class_loss().begin(), p.probe_class_loss().end());
    e.probe_class_accuracy.assign(p.probe_class_accuracy().begin(), p.probe_class_accuracy().end());
    e.dominant_term = p.dominant_term();
    for (int i = 0; i + 5 < p.rank_timings_size(); i += 6) {
      e.rank_timings.push_back({p.rank_timings(i), p.rank_timings(i + 1), p.rank_timings(i + 2),
                                p.rank_timings(i + 3), p.rank_timings(i + 4),
                                p.rank_timings(i + 5)});
    }
    e.validation_seconds = p.validation_seconds();
    e.probe_seconds = p.probe_seconds();
    e.replica_hashes.assign(p.replica_hashes().begin(), p.replica_hashes().end());
    h->epochs.push_back(std::move(e));
  }
  for (const v1::BatchRecordProto& p : in.batches()) {
    h->batches.push_back({p.epoch_progress(), p.loss(), p.lr()});
  }
  for (const v1::ControlEventProto& p : in.control_events()) {
    h->control_events.push_back({p.step(), p.action(), p.learning_rate()});
  }
}

v1::NamedTensor* AddTensor(google::protobuf::RepeatedPtrField<v1::NamedTensor>* to,
                           const std::string& name, const std::vector<int64_t>& dims,
                           std::span<const float> values) {
  v1::NamedTensor* t = to->Add();
  t->set_name(name);
  for (int64_t d : dims) t->add_dims(d);
  t->mutable_values()->Add(values.begin(), values.end());
  return t;
}

bool AllFinite(std::span<const float> values) {
  uint32_t bad = 0;
  for (const float v : values) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// The tensors of `from` by name; Error naming `what` and the tensor when one is missing
// or has another size.
class TensorIndex {
 public:
  TensorIndex(const google::protobuf::RepeatedPtrField<v1::NamedTensor>& from, std::string what)
      : what_(std::move(what)) {
    for (const auto& t : from) by_name_[t.name()] = &t;
  }
  std::span<const float> Get(const std::string& name, size_t size) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      throw Error(StrCat("checkpoint: ", what_, " lacks tensor ", name, " (another model?)"));
    }
    const v1::NamedTensor& t = *it->second;
    if (static_cast<size_t>(t.values_size()) != size) {
      throw Error(StrCat("checkpoint: ", what_, " tensor ", name, " holds ", t.values_size(),
                         " values, the model needs ", size));
    }
    return {t.values().data(), size};
  }

 private:
  std::string what_;
  std::map<std::string, const v1::NamedTensor*> by_name_;
};

size_t NumElements(const dnnl::memory::dims& dims) {
  size_t n = 1;
  for (auto d : dims) n *= static_cast<size_t>(d);
  return n;
}

}  // namespace

void Trainer::EnableCheckpoints(CheckpointStore* store_at_root) {
  checkpoints_ = !config_.checkpoint().disabled();
  checkpoint_store_ = comm_->is_root() ? store_at_root : nullptr;
  EPOCHAL_CHECK(!checkpoints_ || !comm_->is_root() || checkpoint_store_ != nullptr,
                "rank 0 needs a checkpoint store");
}

const char* Trainer::FirstNonFiniteGradient(const std::vector<nn::Parameter*>& params) const {
  for (nn::Parameter* p : params) {
    if (!AllFinite(nn::Span(p->grad))) return p->name.c_str();
  }
  return nullptr;
}

void Trainer::AfterStep(int epoch, int64_t batches_done, int64_t /*batches_per_epoch*/,
                        const EpochSums& sums) {
  const int64_t every = config_.checkpoint().every_steps();
  const bool due = every > 0 && global_step_ % every == 0;
  if (checkpoints_ && (checkpoint_requested_ || due)) {
    WriteCheckpoint(epoch, batches_done, 0, sums,
                    stopped_ ? "stop" : (checkpoint_requested_ ? "control" : "steps"));
  }
  checkpoint_requested_ = false;
  if (faults_.kill_after_step == global_step_ && comm_->is_root()) KillSelf();
  if (faults_.term_after_step == global_step_) std::raise(SIGTERM);
}

void Trainer::WriteCheckpoint(int epoch, int64_t batches_done, int64_t /*batches_per_epoch*/,
                              const EpochSums& sums, const std::string& reason) {
  const auto start = std::chrono::steady_clock::now();
  // Running statistics are rank-local until averaged at the end of an epoch (without
  // synchronized batch norm): gather them, a collective every rank issues here.
  const std::vector<nn::StateBuffer*> state = model_->state();
  std::vector<double> local, all;
  for (const nn::StateBuffer* s : state)
    local.insert(local.end(), s->value.begin(), s->value.end());
  comm_->Gather(local, &all);
  if (!comm_->is_root()) return;

  const auto& t = config_.training();
  const data::EpochSampler sampler(train_set_.size(), global_batch_, t.drop_last());
  v1::Checkpoint c;
  *c.mutable_config() = config_;
  c.set_world_size(comm_->size());
  c.set_reason(reason);
  v1::TrainingPosition* pos = c.mutable_position();
  pos->set_epoch(epoch);
  pos->set_batches_done(batches_done);
  pos->set_global_step(global_step_);
  pos->set_epochs_completed(static_cast<int32_t>(history_.epochs.size()));
  pos->set_batches_per_epoch(sampler.num_batches());
  v1::EpochAccumulators* acc = c.mutable_accumulators();
  acc->set_loss_sum(sums.loss_sum);
  acc->set_correct(sums.correct);
  acc->set_seen(sums.seen);
  acc->set_steps(sums.steps);
  acc->set_last_lr(sums.last_lr);

  std::string non_finite;
  v1::ModelWeights* w = c.mutable_weights();
  w->set_config_name(config_.name());
  w->set_epochs_completed(static_cast<int32_t>(history_.epochs.size()));
  const std::vector<nn::Parameter*> params = model_->parameters();
  v1::OptimizerState* opt = c.mutable_optimizer();
  for (size_t i = 0; i < params.size(); ++i) {
    nn::Parameter* p = params[i];
    const auto dims = p->value.get_desc().dims();
    const std::vector<int64_t> d(dims.begin(), dims.end());
    const std::vector<float> value = nn::ToPlain(model_->dnnl(), p->value);
    const dnnl::memory velocity(p->value.get_desc(), model_->dnnl().engine,
                                sgd_->velocity(i).data());
    const std::vector<float> v = nn::ToPlain(model_->dnnl(), velocity);
    if (non_finite.empty() && !AllFinite(value)) non_finite = p->name;
    if (non_finite.empty() && !AllFinite(v)) non_finite = p->name + " (momentum)";
    AddTensor(w->mutable_tensors(), p->name, d, value);
    AddTensor(opt->mutable_velocity(), p->name, d, v);
  }
  for (const nn::StateBuffer* s : state) {
    if (non_finite.empty() && !AllFinite(s->value)) non_finite = s->name;
    AddTensor(w->mutable_tensors(), s->name, {static_cast<int64_t>(s->value.size())}, s->value);
  }
  opt->set_iterations(sgd_->iterations());
  if (auto lr = sgd_->learning_rate_override()) opt->set_learning_rate_override(*lr);
  for (int r = 0; r < comm_->size(); ++r) {
    v1::RankState* rs = c.add_rank_state();
    size_t offset = static_cast<size_t>(r) * local.size();
    for (const nn::StateBuffer* s : state) {
      std::vector<float> values(
          all.begin() + static_cast<std::ptrdiff_t>(offset),
          all.begin() + static_cast<std::ptrdiff_t>(offset + s->value.size()));
      offset += s->value.size();
      if (non_finite.empty() && !AllFinite(values))
        non_finite = s->name + " of rank " + std::to_string(r);
      AddTensor(rs->mutable_tensors(), s->name, {static_cast<int64_t>(values.size())}, values);
    }
  }
  if (!non_finite.empty()) {
    throw Error(StrCat("refusing to write a checkpoint at global step ", global_step_, ": ",
                       non_finite, " holds non-finite values; the last checkpoint is intact"));
  }
  ToProto(history_, c.mutable_history());
  c.set_state_sha256(StateDigest(c));
  ++checkpoint_writes_;
  std::function<void()> hook;
  if (faults_.kill_in_checkpoint_write == checkpoint_writes_) hook = [] { KillSelf(); };
  try {
    const auto path = checkpoint_store_->Save(c, hook);
    EPOCHAL_LOG(kInfo, "checkpoint ", path.string(), " (", reason, ", epoch ", epoch, ", batch ",
                batches_done, ", global step ", global_step_, "; ",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                " s)");
  } catch (const SystemError& e) {
    throw SystemError(StrCat(e.what(), "; the checkpoints already in ",
                             checkpoint_store_->dir().string(), " are intact"));
  }
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

  const auto& t = config_.training();
  const data::EpochSampler sampler(train_set_.size(), global_batch_, t.drop_last());
  const auto& pos = c.position();
  if (pos.batches_per_epoch() != sampler.num_batches()) {
    throw Error(StrCat("checkpoint: its epochs have ", pos.batches_per_epoch(),
                       " batches, this run's have ", sampler.num_batches(),
                       " (another data limit, batch size or rank count?)"));
  }
  if (pos.batches_done() < 0 || pos.batches_done() > sampler.num_batches() || pos.epoch() < 1 ||
      pos.global_step() < 0 || pos.epochs_completed() != c.history().epochs_size()) {
    throw Error("checkpoint: inconsistent training position");
  }
  const TensorIndex weights(c.weights().tensors(), "weights");
  const TensorIndex velocity(c.optimizer().velocity(), "optimizer state");
  const std::vector<nn::Parameter*> params = model_->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    nn::Parameter* p = params[i];
    const size_t n = NumElements(p->value.get_desc().dims());
    nn::FromPlain(model_->dnnl(), weights.Get(p->name, n), p->value);
    const dnnl::memory v(p->value.get_desc(), model_->dnnl().engine, sgd_->velocity(i).data());
    nn::FromPlain(model_->dnnl(), velocity.Get(p->name, n), v);
  }
  // Each rank its own running statistics when the writer had as many ranks.
  const bool own = c.rank_state_size() == comm_->size();
  const TensorIndex state(own ? c.rank_state(comm_->rank()).tensors() : c.weights().tensors(),
                          "running statistics");
  for (nn::StateBuffer* s : model_->state()) {
    const auto values = state.Get(s->name, s->value.size());
    std::copy(values.begin(), values.end(), s->value.begin());
  }
  sgd_->SetIterations(c.optimizer().iterations());
  sgd_->SetLearningRateOverride(c.optimizer().has_learning_rate_override()
                                    ? std::optional<double>(c.optimizer().learning_rate_override())
                                    : std::nullopt);
  FromProto(c.history(), &history_);
  global_step_ = pos.global_step();
  ResumePoint point;
  point.epoch = pos.epoch();
  point.batches_done = pos.batches_done();
  const auto& acc = c.accumulators();
  point.sums = {acc.loss_sum(), acc.correct(), acc.seen(), acc.steps(), acc.last_lr()};
  resume_ = point;
  if (comm_->is_root()) {
    EPOCHAL_LOG(kInfo, "resuming at epoch ", pos.epoch(), ", batch ", pos.batches_done(), " of ",
                pos.batches_per_epoch(), " (global step ", pos.global_step(), ")",
                c.paused() ? "; the run was paused when checkpointed and now runs" : "");
  }
  return true;
}

}  // namespace epochal::train
