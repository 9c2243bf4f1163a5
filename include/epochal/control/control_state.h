// ControlState: what the control plane knows about a running job (rank 0), and the
// queue of commands waiting for a step boundary.
//
// It sits between two threads of control. The training thread calls Poll() once per
// step (train::ControlSource) and the observer hooks (train::TrainingObserver); the
// gRPC handler threads of ControlService call the command and query members. Commands
// never touch the trainer: a command queues a control word, Poll() hands it out at the
// next step boundary, the trainer broadcasts it to every rank in the step's last
// gradient bucket, and once every rank has applied it the trainer reports it back
// through OnControl() with the step it took effect at, which is what the waiting
// command returns.
//
// The training thread never waits for a client: Poll() and the observer hooks only take
// `mu_` (held for bookkeeping, never across I/O or a wait), and each subscriber gets a
// bounded drop-oldest EventQueue that its handler thread drains.
//
// Thread safety: every public member may be called from any thread.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "epochal/control/event_queue.h"
#include "epochal/dist/control_word.h"
#include "epochal/train/control_source.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/observer.h"
#include "epochal/v1/control.pb.h"

namespace epochal::control {

struct ServiceOptions {
  // Bearer token every rpc must carry; empty: no authentication.
  std::string token;
  // SetLearningRate refuses rates above this (INVALID_ARGUMENT).
  double max_learning_rate = 1.0;
  // How long a command rpc waits for the step boundary where it takes effect before it
  // replies "pending" (it still takes effect there).
  std::chrono::milliseconds command_wait{10000};
  // Events each WatchEvents subscriber may hold before the oldest are dropped.
  size_t watch_queue_capacity = 1024;
  // Ranks in the job and epochs configured, for GetStatus.
  int world_size = 1;
  int total_epochs = 0;
  // Also stop after this global step (`--stop-after-steps`); 0: never.
  int64_t stop_after_step = 0;
  // The job writes checkpoints. Off (--no-checkpoints): SaveCheckpoint is refused
  // (FAILED_PRECONDITION) and Stop says it stops without one.
  bool checkpoints = true;
  // At most this often the training thread publishes the per-step history that
  // GetHistory serves (besides at every epoch end and control event).
  std::chrono::milliseconds history_publish_interval{100};
};

class ControlState final : public train::ControlSource, public train::TrainingObserver {
 public:
  // The wall-clock deadline of the client that sent a command.
  using Deadline = std::chrono::system_clock::time_point;

  // `diagnosis` (not owned; may be null) is read on the training thread only, in
  // OnEpochEnd, and must outlive the training run.
  explicit ControlState(ServiceOptions options, const train::Diagnosis* diagnosis = nullptr);
  ~ControlState() override;
  ControlState(const ControlState&) = delete;
  ControlState& operator=(const ControlState&) = delete;

  const ServiceOptions& options() const { return options_; }

  // --- queries (gRPC threads) ---
  void GetStatus(v1::Status* reply) const;
  void GetHistory(bool include_batches, v1::History* reply) const;
  void GetDiagnosis(v1::Diagnosis* reply) const;

  // --- commands (gRPC threads) ---
  // Each queues its control word, then waits until it took effect, training finished,
  // or the wait bound (or just before `client_deadline`) passed, and fills `reply`. A
  // precondition error when the command cannot be accepted now.
  grpc::Status Pause(Deadline client_deadline, v1::CommandReply* reply);
  grpc::Status Resume(Deadline client_deadline, v1::CommandReply* reply);
  grpc::Status Stop(Deadline client_deadline, v1::CommandReply* reply);
  // `rate` must already be checked (finite, positive, at most max_learning_rate).
  grpc::Status SetLearningRate(double rate, Deadline client_deadline, v1::CommandReply* reply);
  // Replies once the checkpoint file is durable, with its path.
  grpc::Status SaveCheckpoint(Deadline client_deadline, v1::CommandReply* reply);

  // --- events (gRPC threads) ---
  // A new subscriber's queue, holding first a state event that says where the job
  // stands (and closed at once if training has finished).
  std::shared_ptr<EventQueue> Subscribe(bool skip_batches);
  // Forgets `queue`, counting what it dropped.
  void Unsubscribe(const std::shared_ptr<EventQueue>& queue);
  // Training has finished, or Shutdown() was called.
  bool finished() const;

  // --- train::ControlSource (training thread, rank 0) ---
  dist::ControlWord Poll(int64_t step) override;

  // --- train::TrainingObserver (training thread, rank 0) ---
  void OnEpochStart(int epoch, int total_epochs, int64_t samples) override;
  void OnStep(const train::StepEvent& event) override;
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult& validation,
                  const train::History& history) override;
  void OnTrainingEnd(const train::History& history, const train::EvalResult& validation) override;
  void OnControl(const train::ControlEvent& event) override;
  void OnCheckpoint(const std::string& path, const std::string& reason,
                    int64_t global_step) override;

  // Ends every subscriber's queue and releases waiting commands; state becomes FINISHED
  // if training has not said so. Call before shutting the gRPC server down.
  void Shutdown();

  // Subscribers connected now (tests, benchmarks).
  size_t subscribers() const;
  // Events dropped over all subscribers so far.
  uint64_t dropped_events() const;
  // Tests: runs inside GetHistory while it copies a snapshot into its reply, holding no
  // lock that the training thread takes.
  void SetHistoryCopyHookForTesting(std::function<void()> hook) { history_copy_hook_ = hook; }

 private:
  struct Command {
    uint64_t id = 0;
    dist::ControlWord word;
    std::string action;  // The ControlEvent action that confirms it.
  };
  // One step of the history (v1::BatchRecord's fields, without a message per step).
  struct BatchRow {
    double epoch_progress, loss, lr;
    int64_t samples;
  };
  using BatchChunk = std::vector<BatchRow>;
  // What GetHistory serves: immutable once published, shared with the readers.
  struct HistorySnapshot {
    std::shared_ptr<const v1::History> head;  // Everything but the batches.
    std::vector<std::shared_ptr<const BatchChunk>> chunks;
    BatchChunk tail;
  };
  struct Subscriber {
    std::shared_ptr<EventQueue> queue;
    bool skip_batches = false;
  };
  // The outcome of a queued command once the wait is over.
  enum class Outcome { kApplied, kPending, kCancelled, kFinished };

  // Waits (holding `lock` on mu_) until command `id` took effect, training finished, or
  // the wait bound (or the client's deadline) passed.
  Outcome WaitFor(std::unique_lock<std::mutex>& lock, uint64_t id, Deadline client_deadline);
  // Fills `reply` for command `id` after WaitFor; needs mu_.
  grpc::Status Reply(Outcome outcome, uint64_t id, const std::string& what,
                     v1::CommandReply* reply);
  // A precondition error if no command can be accepted now (stopping or finished); needs mu_.
  std::optional<grpc::Status> RefuseIfEnding() const;
  double Uptime() const;
  void Publish(v1::Event event, bool is_batch);
  void PublishState(const std::string& action, int64_t step, double learning_rate);
  // Training thread: publishes a new HistorySnapshot, with a new head when `head_changed`.
  void PublishHistory(bool head_changed);

  const ServiceOptions options_;
  const train::Diagnosis* const diagnosis_;
  const std::chrono::steady_clock::time_point start_;

  mutable std::mutex mu_;            // Guards every member below up to subs_mu_.
  std::condition_variable changed_;  // A command took effect, or training ended.
  v1::State state_ = v1::RUNNING;
  uint64_t next_id_ = 1;
  std::deque<Command> queue_;      // Accepted, not yet handed to the trainer.
  std::deque<Command> in_flight_;  // Handed out, not yet confirmed by OnControl.
  std::map<uint64_t, train::ControlEvent> applied_;
  std::vector<uint64_t> cancelled_;
  std::optional<Command> stop_;    // A stop not yet handed out.
  std::optional<Command> resume_;  // A resume not yet handed out.
  bool stop_accepted_ = false;     // Stop requested (by an rpc or stop_after_step).
  bool want_pause_ = false;        // Paused, or a pause is queued.
  bool in_pause_loop_ = false;     // The trainer is waiting at a step boundary.
  bool finished_ = false;
  // Status, as of the last step.
  int epoch_ = 0;
  int64_t step_ = 0;
  int64_t samples_in_epoch_ = 0;
  std::chrono::steady_clock::time_point epoch_start_;
  double epoch_progress_ = 0;
  double learning_rate_ = 0;
  bool overridden_ = false;
  double last_batch_loss_ = 0;
  double running_loss_ = 0;
  int64_t paused_at_step_ = 0;
  v1::History history_;  // Epochs and control events; the batches are kept apart below.
  v1::Diagnosis diagnosis_snapshot_;
  // A stop or checkpoint command that took effect and waits for its checkpoint file.
  std::optional<std::pair<uint64_t, train::ControlEvent>> awaiting_checkpoint_;
  std::map<uint64_t, std::string> checkpoint_paths_;  // By command id.

  // The training thread's own (no lock): the per-step history, in chunks that are frozen
  // once full, and when it last published them.
  std::vector<std::shared_ptr<const BatchChunk>> batch_chunks_;
  BatchChunk batch_tail_;
  std::shared_ptr<const v1::History> published_head_;
  std::chrono::steady_clock::time_point last_history_publish_;

  // Guards only the pointer to the newest snapshot: the training thread swaps it in,
  // GetHistory takes a reference and copies from it without any lock.
  mutable std::mutex snapshot_mu_;
  std::shared_ptr<const HistorySnapshot> history_snapshot_;
  std::function<void()> history_copy_hook_;

  mutable std::mutex subs_mu_;  // Guards subscribers_ (the list, not the queues).
  std::vector<Subscriber> subscribers_;
  uint64_t dropped_by_gone_ = 0;  // Drops counted by subscribers that left.
};

}  // namespace epochal::control
