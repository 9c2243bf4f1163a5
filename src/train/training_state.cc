#include "epochal/train/training_state.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "epochal/core/error.h"
#include "epochal/nn/dnnl_util.h"
#include "epochal/train/checkpoint.h"
#include "epochal/train/epoch_fields.h"

namespace epochal::train {
namespace {

using detail::StrCat;

void ToProto(const History& h, v1::HistoryProto* out) {
  for (const EpochRecord& e : h.epochs) {
    v1::EpochRecordProto* p = out->add_epochs();
    EpochFieldsToMessage(e, EpochFieldCoverage::kAll, p);
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
  }
  for (const BatchRecord& b : h.batches) {
    v1::BatchRecordProto* p = out->add_batches();
    p->set_epoch_progress(b.epoch_progress);
    p->set_loss(b.loss);
    p->set_lr(b.lr);
    p->set_samples(b.samples);
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
    EpochFieldsFromMessage(p, &e);
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
    e.replica_hashes.assign(p.replica_hashes().begin(), p.replica_hashes().end());
    h->epochs.push_back(std::move(e));
  }
  for (const v1::BatchRecordProto& p : in.batches()) {
    h->batches.push_back({p.epoch_progress(), p.loss(), p.lr(), p.samples()});
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

bool AllFinite(std::span<const float> values) {
  uint32_t bad = 0;
  for (const float v : values) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

v1::Checkpoint SnapshotState(const v1::ExperimentConfig& config, const dist::Communicator& comm,
                             nn::Model& model, optim::Sgd& sgd, const RunState& state,
                             int64_t batches_per_epoch, const std::string& reason) {
  // Running statistics are rank-local until averaged at the end of an epoch (without
  // synchronized batch norm): gather them, a collective every rank issues here.
  const std::vector<nn::StateBuffer*> buffers = model.state();
  std::vector<double> local, all;
  for (const nn::StateBuffer* s : buffers)
    local.insert(local.end(), s->value.begin(), s->value.end());
  comm.Gather(local, &all);
  v1::Checkpoint c;
  if (!comm.is_root()) return c;

  *c.mutable_config() = config;
  c.set_world_size(comm.size());
  c.set_reason(reason);
  c.set_run_id(state.run_id);
  const auto epochs_completed = static_cast<int32_t>(state.history.epochs.size());
  v1::TrainingPosition* pos = c.mutable_position();
  pos->set_epoch(state.epoch);
  pos->set_batches_done(state.batches_done);
  pos->set_global_step(state.global_step);
  pos->set_epochs_completed(epochs_completed);
  pos->set_batches_per_epoch(batches_per_epoch);
  v1::EpochAccumulators* acc = c.mutable_accumulators();
  acc->set_loss_sum(state.sums.loss_sum);
  acc->set_correct(state.sums.correct);
  acc->set_seen(state.sums.seen);
  acc->set_steps(state.sums.steps);
  acc->set_last_lr(state.sums.last_lr);

  std::string non_finite;
  v1::ModelWeights* w = c.mutable_weights();
  w->set_config_name(config.name());
  w->set_epochs_completed(epochs_completed);
  const std::vector<nn::Parameter*> params = model.parameters();
  v1::OptimizerState* opt = c.mutable_optimizer();
  for (size_t i = 0; i < params.size(); ++i) {
    nn::Parameter* p = params[i];
    const auto dims = p->value.get_desc().dims();
    const std::vector<int64_t> d(dims.begin(), dims.end());
    const std::vector<float> value = nn::ToPlain(model.dnnl(), p->value);
    const dnnl::memory velocity(p->value.get_desc(), model.dnnl().engine, sgd.velocity(i).data());
    const std::vector<float> v = nn::ToPlain(model.dnnl(), velocity);
    if (non_finite.empty() && !AllFinite(value)) non_finite = p->name;
    if (non_finite.empty() && !AllFinite(v)) non_finite = p->name + " (momentum)";
    AddTensor(w->mutable_tensors(), p->name, d, value);
    AddTensor(opt->mutable_velocity(), p->name, d, v);
  }
  for (const nn::StateBuffer* s : buffers) {
    if (non_finite.empty() && !AllFinite(s->value)) non_finite = s->name;
    AddTensor(w->mutable_tensors(), s->name, {static_cast<int64_t>(s->value.size())}, s->value);
  }
  opt->set_iterations(sgd.iterations());
  if (auto lr = sgd.learning_rate_override()) opt->set_learning_rate_override(*lr);
  for (int r = 0; r < comm.size(); ++r) {
    v1::RankState* rs = c.add_rank_state();
    size_t offset = static_cast<size_t>(r) * local.size();
    for (const nn::StateBuffer* s : buffers) {
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
    throw Error(StrCat("refusing to write a checkpoint at global step ", state.global_step, ": ",
                       non_finite, " holds non-finite values; the last checkpoint is intact"));
  }
  ToProto(state.history, c.mutable_history());
  c.set_state_sha256(StateDigest(c));
  return c;
}

void RestoreState(const v1::Checkpoint& c, const dist::Communicator& comm, nn::Model& model,
                  optim::Sgd& sgd, int64_t batches_per_epoch, RunState* out) {
  const auto& pos = c.position();
  if (pos.batches_per_epoch() != batches_per_epoch) {
    throw Error(StrCat("checkpoint: its epochs have ", pos.batches_per_epoch(),
                       " batches, this run's have ", batches_per_epoch,
                       " (another data limit, batch size or rank count?)"));
  }
  if (pos.batches_done() < 0 || pos.batches_done() > batches_per_epoch || pos.epoch() < 1 ||
      pos.global_step() < 0 || pos.epochs_completed() != c.history().epochs_size()) {
    throw Error("checkpoint: inconsistent training position");
  }
  const TensorIndex weights(c.weights().tensors(), "weights");
  const TensorIndex velocity(c.optimizer().velocity(), "optimizer state");
  const std::vector<nn::Parameter*> params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    nn::Parameter* p = params[i];
    const size_t n = NumElements(p->value.get_desc().dims());
    nn::FromPlain(model.dnnl(), weights.Get(p->name, n), p->value);
    const dnnl::memory v(p->value.get_desc(), model.dnnl().engine, sgd.velocity(i).data());
    nn::FromPlain(model.dnnl(), velocity.Get(p->name, n), v);
  }
  // Each rank its own running statistics when the writer had as many ranks.
  const bool own = c.rank_state_size() == comm.size();
  const TensorIndex state(own ? c.rank_state(comm.rank()).tensors() : c.weights().tensors(),
                          "running statistics");
  for (nn::StateBuffer* s : model.state()) {
    const auto values = state.Get(s->name, s->value.size());
    std::copy(values.begin(), values.end(), s->value.begin());
  }
  sgd.SetIterations(c.optimizer().iterations());
  sgd.SetLearningRateOverride(c.optimizer().has_learning_rate_override()
                                  ? std::optional<double>(c.optimizer().learning_rate_override())
                                  : std::nullopt);
  FromProto(c.history(), &out->history);
  out->run_id = c.run_id();
  out->epoch = pos.epoch();
  out->batches_done = pos.batches_done();
  out->global_step = pos.global_step();
  const auto& acc = c.accumulators();
  out->sums = {acc.loss_sum(), acc.correct(), acc.seen(), acc.steps(), acc.last_lr()};
}

}  // namespace epochal::train
