#include "epochal/control/control_state.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "epochal/train/epoch_fields.h"

namespace epochal::control {
namespace {

using Clock = std::chrono::steady_clock;

// Steps per frozen chunk of the served history: a publish copies at most this many.
constexpr size_t kBatchChunkRows = 4096;

const char* StateName(v1::State s) { return v1::State_Name(s).c_str(); }

std::string Format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

void CopyEpoch(const train::EpochRecord& r, v1::EpochRecord* out) {
  // The message carries some of the fields, by the same names.
  train::EpochFieldsToMessage(r, train::EpochFieldCoverage::kThoseItHas, out);
  // Without proto3 `optional` there, a flag says the probes ran and set the gap terms.
  out->set_has_gaps(r.gap_timing && r.gap_regularization && r.gap_data);
  for (const std::string& f : r.findings) out->add_findings(f);
}

}  // namespace

ControlState::ControlState(ServiceOptions options, const train::Diagnosis* diagnosis)
    : options_(std::move(options)), diagnosis_(diagnosis), start_(Clock::now()) {
  epoch_start_ = start_;
  history_.set_world_size(options_.world_size);
  stop_accepted_ = false;
  PublishHistory(true);
}

ControlState::~ControlState() { Shutdown(); }

double ControlState::Uptime() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

std::optional<grpc::Status> ControlState::RefuseIfEnding() const {
  if (finished_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "training has finished");
  }
  if (stop_accepted_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the job is stopping; no further commands are accepted");
  }
  return std::nullopt;
}

ControlState::Outcome ControlState::WaitFor(std::unique_lock<std::mutex>& lock, uint64_t id,
                                            Deadline client_deadline) {
  auto deadline = Clock::now() + options_.command_wait;
  // Leave the client a moment to receive a "pending" reply before its own deadline (a
  // client without a deadline has one in the far future).
  const auto client_left = client_deadline - std::chrono::system_clock::now();
  if (client_left < options_.command_wait) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(client_left) -
               std::chrono::milliseconds(200);
  }
  const auto done = [&] {
    return applied_.count(id) > 0 ||
           std::find(cancelled_.begin(), cancelled_.end(), id) != cancelled_.end() || finished_;
  };
  changed_.wait_until(lock, deadline, done);
  if (applied_.count(id) > 0) return Outcome::kApplied;
  if (std::find(cancelled_.begin(), cancelled_.end(), id) != cancelled_.end()) {
    return Outcome::kCancelled;
  }
  if (finished_) return Outcome::kFinished;
  return Outcome::kPending;
}

grpc::Status ControlState::Reply(Outcome outcome, uint64_t id, const std::string& what,
                                 v1::CommandReply* reply) {
  reply->set_state(state_);
  reply->set_learning_rate(learning_rate_);
  switch (outcome) {
    case Outcome::kApplied: {
      const train::ControlEvent& e = applied_.at(id);
      reply->set_applied(true);
      reply->set_effective_step(e.step);
      reply->set_message(what + " from global step " + std::to_string(e.step));
      const auto path = checkpoint_paths_.find(id);
      if (path != checkpoint_paths_.end()) {
        reply->set_checkpoint_path(path->second);
        reply->set_message(reply->message() + "; checkpoint " + path->second + " is on disk");
      } else if (e.action == "stop") {
        reply->set_message(reply->message() +
                           "; no checkpoint written (checkpoints are disabled for this job)");
      }
      return grpc::Status::OK;
    }
    case Outcome::kPending:
      reply->set_message(what + " requested; it takes effect at the next step boundary");
      return grpc::Status::OK;
    case Outcome::kCancelled:
      reply->set_message(what + " cancelled before it took effect");
      return {grpc::StatusCode::ABORTED, reply->message()};
    case Outcome::kFinished:
      break;
  }
  return {grpc::StatusCode::ABORTED, "training ended before the " + what + " took effect"};
}

void ControlState::GetStatus(v1::Status* reply) const {
  std::lock_guard lock(mu_);
  reply->set_state(state_);
  reply->set_epoch(epoch_);
  reply->set_total_epochs(options_.total_epochs);
  reply->set_step(step_);
  reply->set_epoch_progress(epoch_progress_);
  reply->set_learning_rate(learning_rate_);
  reply->set_learning_rate_overridden(overridden_);
  reply->set_last_batch_loss(last_batch_loss_);
  reply->set_running_loss(running_loss_);
  for (const v1::EpochRecord& e : history_.epochs()) {
    reply->add_epoch_losses(e.loss());
    reply->add_epoch_val_losses(e.val_loss());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - epoch_start_).count();
  reply->set_images_per_second(
      seconds > 0 && state_ == v1::RUNNING ? static_cast<double>(samples_in_epoch_) / seconds : 0);
  reply->set_world_size(options_.world_size);
  reply->set_uptime_seconds(Uptime());
  reply->set_paused_at_step(paused_at_step_);
}

grpc::Status ControlState::Pause(Deadline client_deadline, v1::CommandReply* reply) {
  std::unique_lock lock(mu_);
  if (auto refused = RefuseIfEnding()) return *refused;
  if (want_pause_) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            in_pause_loop_ ? "already paused" : "a pause is already pending"};
  }
  if (in_pause_loop_) {
    // A resume is pending but not yet handed out: take it back.
    want_pause_ = true;
    if (resume_) cancelled_.push_back(resume_->id);
    resume_.reset();
    changed_.notify_all();
    reply->set_applied(true);
    reply->set_effective_step(paused_at_step_);
    reply->set_state(state_);
    reply->set_learning_rate(learning_rate_);
    reply->set_message("still paused (the pending resume was cancelled)");
    return grpc::Status::OK;
  }
  want_pause_ = true;
  const uint64_t id = next_id_++;
  dist::ControlWord word;
  word.action = dist::ControlWord::kPause;
  queue_.push_back({id, word, "pause"});
  const grpc::Status status = Reply(WaitFor(lock, id, client_deadline), id, "paused", reply);
  if (reply->applied()) {
    reply->set_message("paused after global step " + std::to_string(reply->effective_step() - 1) +
                       " on every rank");
  }
  return status;
}

grpc::Status ControlState::Resume(Deadline client_deadline, v1::CommandReply* reply) {
  std::unique_lock lock(mu_);
  if (auto refused = RefuseIfEnding()) return *refused;
  if (!want_pause_) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            std::string("the job is not paused (state ") + StateName(state_) + ")"};
  }
  want_pause_ = false;
  // A pause still queued is simply withdrawn.
  const auto queued = std::find_if(queue_.begin(), queue_.end(),
                                   [](const Command& c) { return c.action == "pause"; });
  if (queued != queue_.end()) {
    cancelled_.push_back(queued->id);
    queue_.erase(queued);
    changed_.notify_all();
    reply->set_state(state_);
    reply->set_learning_rate(learning_rate_);
    reply->set_message("the pending pause was cancelled; training never stopped");
    return grpc::Status::OK;
  }
  const uint64_t id = next_id_++;
  resume_ = Command{id, {}, "resume"};
  return Reply(WaitFor(lock, id, client_deadline), id, "resumed", reply);
}

grpc::Status ControlState::Stop(Deadline client_deadline, v1::CommandReply* reply) {
  std::unique_lock lock(mu_);
  if (auto refused = RefuseIfEnding()) return *refused;
  stop_accepted_ = true;
  const uint64_t id = next_id_++;
  dist::ControlWord word;
  word.action = dist::ControlWord::kStop;
  stop_ = Command{id, word, "stop"};
  return Reply(WaitFor(lock, id, client_deadline), id, "stopped", reply);
}

grpc::Status ControlState::SetLearningRate(double rate, Deadline client_deadline,
                                           v1::CommandReply* reply) {
  std::unique_lock lock(mu_);
  if (auto refused = RefuseIfEnding()) return *refused;
  const uint64_t id = next_id_++;
  dist::ControlWord word;
  word.action = dist::ControlWord::kSetLearningRate;
  word.learning_rate = rate;
  queue_.push_back({id, word, "set_learning_rate"});
  return Reply(WaitFor(lock, id, client_deadline), id, "learning rate " + Format("%.17g", rate),
               reply);
}

grpc::Status ControlState::SaveCheckpoint(Deadline client_deadline, v1::CommandReply* reply) {
  std::unique_lock lock(mu_);
  if (auto refused = RefuseIfEnding()) return *refused;
  if (!options_.checkpoints) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "checkpoints are disabled for this job (--no-checkpoints or checkpoint.disabled); "
            "nothing would be written"};
  }
  const uint64_t id = next_id_++;
  dist::ControlWord word;
  word.action = dist::ControlWord::kCheckpoint;
  queue_.push_back({id, word, "checkpoint"});
  return Reply(WaitFor(lock, id, client_deadline), id, "checkpoint", reply);
}

void ControlState::GetHistory(bool include_batches, v1::History* reply) const {
  std::shared_ptr<const HistorySnapshot> snapshot;
  {
    std::lock_guard lock(snapshot_mu_);
    snapshot = history_snapshot_;
  }
  // The copy, however large, holds no lock the training thread takes.
  if (history_copy_hook_) history_copy_hook_();
  *reply = *snapshot->head;
  if (!include_batches) return;
  size_t rows = snapshot->tail.size();
  for (const auto& chunk : snapshot->chunks) rows += chunk->size();
  reply->mutable_batches()->Reserve(static_cast<int>(rows));
  const auto add = [&](const BatchChunk& chunk) {
    for (const BatchRow& row : chunk) {
      v1::BatchRecord* b = reply->add_batches();
      b->set_epoch_progress(row.epoch_progress);
      b->set_loss(row.loss);
      b->set_lr(row.lr);
      b->set_samples(row.samples);
    }
  };
  for (const auto& chunk : snapshot->chunks) add(*chunk);
  add(snapshot->tail);
}

void ControlState::PublishHistory(bool head_changed) {
  if (head_changed || published_head_ == nullptr) {
    std::lock_guard lock(mu_);
    published_head_ = std::make_shared<const v1::History>(history_);
  }
  auto snapshot = std::make_shared<HistorySnapshot>();
  snapshot->head = published_head_;
  snapshot->chunks = batch_chunks_;
  snapshot->tail = batch_tail_;
  last_history_publish_ = Clock::now();
  std::lock_guard lock(snapshot_mu_);
  history_snapshot_ = std::move(snapshot);
}

void ControlState::GetDiagnosis(v1::Diagnosis* reply) const {
  std::lock_guard lock(mu_);
  *reply = diagnosis_snapshot_;
}

std::shared_ptr<EventQueue> ControlState::Subscribe(bool skip_batches) {
  auto queue = std::make_shared<EventQueue>(options_.watch_queue_capacity);
  {
    v1::Event first;
    std::lock_guard lock(mu_);
    first.set_time_seconds(Uptime());
    first.mutable_state()->set_state(state_);
    first.mutable_state()->set_action("subscribed");
    first.mutable_state()->set_step(step_);
    first.mutable_state()->set_learning_rate(learning_rate_);
    queue->Push(first);
    if (finished_) queue->Close();
  }
  std::lock_guard lock(subs_mu_);
  subscribers_.push_back({queue, skip_batches});
  return queue;
}

void ControlState::Unsubscribe(const std::shared_ptr<EventQueue>& queue) {
  std::lock_guard lock(subs_mu_);
  dropped_by_gone_ += queue->dropped();
  std::erase_if(subscribers_, [&](const Subscriber& s) { return s.queue == queue; });
}

bool ControlState::finished() const {
  std::lock_guard lock(mu_);
  return finished_;
}

dist::ControlWord ControlState::Poll(int64_t step) {
  std::lock_guard lock(mu_);
  dist::ControlWord word;
  word.step = step;
  const auto hand_out = [&](Command command) {
    command.word.step = step;
    in_flight_.push_back(command);
    return command.word;
  };
  // Commands accepted before a stop go first, in order (a stop refuses later ones), and
  // while paused too: a rate change or checkpoint sent then takes effect then.
  if (!queue_.empty() && !(in_pause_loop_ && queue_.front().action == "pause")) {
    Command c = std::move(queue_.front());
    queue_.pop_front();
    return hand_out(std::move(c));
  }
  if (stop_) {
    Command c = std::move(*stop_);
    stop_.reset();
    return hand_out(std::move(c));
  }
  if (options_.stop_after_step > 0 && step == options_.stop_after_step && !stop_accepted_) {
    stop_accepted_ = true;
    word.action = dist::ControlWord::kStop;
    return word;
  }
  if (in_pause_loop_) {
    if (want_pause_) {
      word.action = dist::ControlWord::kPause;
      return word;
    }
    if (resume_) {
      Command c = std::move(*resume_);
      resume_.reset();
      return hand_out(std::move(c));  // kContinue ends the pause on every rank.
    }
    return word;
  }
  return word;
}

void ControlState::Publish(v1::Event event, bool is_batch) {
  event.set_time_seconds(Uptime());
  std::lock_guard lock(subs_mu_);
  for (const Subscriber& s : subscribers_) {
    if (!(is_batch && s.skip_batches)) s.queue->Push(event);
  }
}

void ControlState::PublishState(const std::string& action, int64_t step, double learning_rate) {
  v1::Event event;
  v1::StateEvent* s = event.mutable_state();
  {
    std::lock_guard lock(mu_);
    s->set_state(state_);
  }
  s->set_action(action);
  s->set_step(step);
  s->set_learning_rate(learning_rate);
  Publish(std::move(event), false);
}

void ControlState::OnEpochStart(int epoch, int, int64_t) {
  std::lock_guard lock(mu_);
  epoch_ = epoch;
  samples_in_epoch_ = 0;
  epoch_start_ = Clock::now();
}

void ControlState::OnStep(const train::StepEvent& e) {
  {
    std::lock_guard lock(mu_);
    epoch_ = e.epoch;
    step_ = e.global_step;
    samples_in_epoch_ = e.samples_in_epoch;
    epoch_progress_ = e.epoch_progress;
    if (!overridden_) learning_rate_ = e.learning_rate;
    last_batch_loss_ = e.batch_loss;
    running_loss_ = e.running_loss;
  }
  // The history GetHistory serves (training thread only, no lock).
  batch_tail_.push_back({e.epoch_progress, e.batch_loss, e.learning_rate, e.batch_samples});
  if (batch_tail_.size() >= kBatchChunkRows) {
    batch_chunks_.push_back(std::make_shared<const BatchChunk>(std::move(batch_tail_)));
    batch_tail_ = {};
    batch_tail_.reserve(kBatchChunkRows);
  }
  if (Clock::now() - last_history_publish_ >= options_.history_publish_interval) {
    PublishHistory(false);
  }
  v1::Event event;
  v1::BatchEvent* b = event.mutable_batch();
  b->set_epoch(e.epoch);
  b->set_step(e.global_step);
  b->set_epoch_progress(e.epoch_progress);
  b->set_loss(e.batch_loss);
  b->set_learning_rate(e.learning_rate);
  Publish(std::move(event), true);
}

void ControlState::OnEpochEnd(const train::EpochRecord& record, const train::EvalResult&,
                              const train::History&) {
  v1::Diagnosis snapshot;
  if (diagnosis_ != nullptr) {
    for (const train::Finding& f : diagnosis_->findings()) {
      v1::Finding* out = snapshot.add_findings();
      out->set_name(f.name);
      out->set_first_epoch(f.first_epoch);
      out->set_last_epoch(f.last_epoch);
      out->set_explanation(f.explanation);
      for (const auto& [name, value] : f.numbers) (*out->mutable_numbers())[name] = value;
    }
  }
  snapshot.set_dominant_term(record.dominant_term);
  snapshot.set_epoch(record.epoch);
  v1::Event event;
  CopyEpoch(record, event.mutable_epoch()->mutable_record());
  {
    std::lock_guard lock(mu_);
    *history_.add_epochs() = event.epoch().record();
    diagnosis_snapshot_ = std::move(snapshot);
  }
  PublishHistory(true);
  Publish(event, false);
  for (const std::string& f : record.findings) {
    v1::Event finding;
    finding.mutable_finding()->set_epoch(record.epoch);
    finding.mutable_finding()->set_finding(f);
    Publish(std::move(finding), false);
  }
}

void ControlState::OnControl(const train::ControlEvent& e) {
  {
    std::lock_guard lock(mu_);
    if (e.action == "pause") {
      in_pause_loop_ = true;
      state_ = v1::PAUSED;
      paused_at_step_ = e.step;
    } else if (e.action == "resume") {
      in_pause_loop_ = false;
      want_pause_ = false;
      state_ = v1::RUNNING;
    } else if (e.action == "stop") {
      stop_accepted_ = true;
      state_ = v1::STOPPING;
    } else if (e.action == "set_learning_rate") {
      learning_rate_ = e.learning_rate;
      overridden_ = true;
    }
    auto* history = history_.add_control_events();
    history->set_step(e.step);
    history->set_action(e.action);
    history->set_learning_rate(e.learning_rate);
    // The command this event confirms (a resume that a stop caused confirms nothing).
    // A checkpoint, and a stop that checkpoints, are confirmed once the file is durable
    // (OnCheckpoint).
    if (!in_flight_.empty() && in_flight_.front().action == e.action) {
      const uint64_t id = in_flight_.front().id;
      in_flight_.pop_front();
      if (e.action == "checkpoint" || (e.action == "stop" && options_.checkpoints)) {
        awaiting_checkpoint_.emplace(id, e);
      } else {
        applied_[id] = e;
      }
    }
  }
  PublishHistory(true);
  changed_.notify_all();
  PublishState(e.action, e.step, e.learning_rate);
}

void ControlState::OnCheckpoint(const std::string& path, const std::string&, int64_t) {
  {
    std::lock_guard lock(mu_);
    if (!awaiting_checkpoint_) return;
    const auto& [id, event] = *awaiting_checkpoint_;
    checkpoint_paths_[id] = path;
    applied_[id] = event;
    awaiting_checkpoint_.reset();
  }
  changed_.notify_all();
}

void ControlState::OnTrainingEnd(const train::History&, const train::EvalResult&) {
  int64_t step = 0;
  {
    std::lock_guard lock(mu_);
    state_ = v1::FINISHED;
    step = step_;
  }
  PublishHistory(true);
  PublishState("finished", step, 0.0);
  Shutdown();
}

void ControlState::Shutdown() {
  {
    std::lock_guard lock(mu_);
    finished_ = true;
    state_ = v1::FINISHED;
  }
  changed_.notify_all();
  std::lock_guard lock(subs_mu_);
  for (const Subscriber& s : subscribers_) s.queue->Close();
}

size_t ControlState::subscribers() const {
  std::lock_guard lock(subs_mu_);
  return subscribers_.size();
}

uint64_t ControlState::dropped_events() const {
  std::lock_guard lock(subs_mu_);
  uint64_t n = dropped_by_gone_;
  for (const Subscriber& s : subscribers_) n += s.queue->dropped();
  return n;
}

}  // namespace epochal::control
