// The TrainingControl service in one process: a real gRPC server on a free loopback port
// and a real client stub, with a small stand-in for the trainer's loop that polls the
// state and reports back exactly as train::Trainer does (Poll before a step, OnStep,
// OnControl once the word took effect, OnCheckpoint once a checkpoint is written, the
// pause loop, which applies rate changes and checkpoints while paused). The multi-rank behaviour
// with the real trainer is tested end to end in control_mpi_test.
#include "epochal/control/control_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "epochal/control/control_server.h"
#include "epochal/core/error.h"

namespace epochal::control {
namespace {

using std::chrono::milliseconds;

// Steps as fast as `step_sleep` allows, applying control words like Trainer::ApplyControl.
class FakeTrainer {
 public:
  FakeTrainer(ControlState* service, milliseconds step_sleep, int64_t max_steps = 1000000)
      : service_(service), step_sleep_(step_sleep), max_steps_(max_steps) {
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeTrainer() {
    quit_ = true;
    thread_.join();
  }
  int64_t steps() const { return steps_; }
  bool done() const { return done_; }

 private:
  void Apply(const dist::ControlWord& w, int64_t step) {
    const char* action = dist::ActionName(w.action);
    if (w.action == dist::ControlWord::kContinue) return;
    service_->OnControl({step + 1, action, w.learning_rate});
    if (w.action == dist::ControlWord::kStop) stopped_ = true;
    if (w.action == dist::ControlWord::kStop || w.action == dist::ControlWord::kCheckpoint) {
      service_->OnCheckpoint("ckpt-" + std::to_string(step) + ".epck", action, step);
    }
    if (w.action == dist::ControlWord::kPause) {
      dist::ControlWord next = w;
      while (next.action == dist::ControlWord::kPause && !quit_) {
        std::this_thread::sleep_for(milliseconds(5));
        next = service_->Poll(step + 1);
        if (next.action == dist::ControlWord::kSetLearningRate ||
            next.action == dist::ControlWord::kCheckpoint) {
          Apply(next, step);
          next.action = dist::ControlWord::kPause;
        }
      }
      service_->OnControl({step + 1, "resume", 0.0});
      Apply(next, step);
    }
  }
  void Run() {
    service_->OnEpochStart(1, 1, max_steps_);
    for (int64_t step = 1; step <= max_steps_ && !stopped_ && !quit_; ++step) {
      const dist::ControlWord w = service_->Poll(step);
      if (step_sleep_.count() > 0) std::this_thread::sleep_for(step_sleep_);
      train::StepEvent e;
      e.epoch = 1;
      e.global_step = step;
      e.step_in_epoch = step;
      e.learning_rate = 0.01;
      e.batch_loss = 1.0;
      service_->OnStep(e);
      steps_ = step;
      Apply(w, step);
    }
    service_->OnTrainingEnd({}, {});
    done_ = true;
  }

  ControlState* service_;
  milliseconds step_sleep_;
  int64_t max_steps_;
  std::atomic<bool> quit_{false}, done_{false};
  std::atomic<int64_t> steps_{0};
  bool stopped_ = false;
  std::thread thread_;
};

// A control state, the service over it and its server on a free port of 127.0.0.1, and a client.
struct Harness {
  explicit Harness(ServiceOptions options = {}, std::string token = {})
      : state(WithToken(std::move(options), token)),
        service(state),
        server(ServerFor(token), &service) {
    channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
    stub = v1::TrainingControl::NewStub(channel);
  }
  static ServiceOptions WithToken(ServiceOptions o, const std::string& token) {
    o.token = token;
    o.command_wait = milliseconds(20000);
    return o;
  }
  static ServerOptions ServerFor(const std::string& token) {
    ServerOptions s;
    s.has_token = !token.empty();
    return s;
  }
  std::unique_ptr<grpc::ClientContext> Context(const std::string& token = {}) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
    return c;
  }
  grpc::Status SetLr(double rate, v1::CommandReply* reply = nullptr) {
    v1::SetLearningRateRequest r;
    r.set_learning_rate(rate);
    v1::CommandReply ignored;
    return stub->SetLearningRate(Context().get(), r, reply != nullptr ? reply : &ignored);
  }

  ControlState state;
  ControlService service;
  ControlServer server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::TrainingControl::Stub> stub;
};

TEST(ControlServiceTest, SetLearningRateRejectsBadRates) {
  ServiceOptions o;
  o.max_learning_rate = 10;
  Harness h(o);
  FakeTrainer trainer(&h.state, milliseconds(1));
  for (double bad :
       {std::nan(""), -1.0, 0.0, 1e30, std::numeric_limits<double>::infinity(), 10.5}) {
    const grpc::Status s = h.SetLr(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad << ": " << s.error_message();
  }
  v1::CommandReply reply;
  ASSERT_TRUE(h.SetLr(0.005, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_GT(reply.effective_step(), 1);
  EXPECT_EQ(reply.learning_rate(), 0.005);
  v1::Status status;
  ASSERT_TRUE(h.stub->GetStatus(h.Context().get(), {}, &status).ok());
  EXPECT_EQ(status.learning_rate(), 0.005);
  EXPECT_TRUE(status.learning_rate_overridden());
}

TEST(ControlServiceTest, CommandsInTheWrongStateFailPrecondition) {
  Harness h;
  FakeTrainer trainer(&h.state, milliseconds(1));
  v1::CommandReply reply;
  grpc::Status s = h.stub->Resume(h.Context().get(), {}, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  ASSERT_TRUE(h.stub->Pause(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_EQ(reply.state(), v1::PAUSED);
  s = h.stub->Pause(h.Context().get(), {}, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  // Paused: the step counter holds.
  const int64_t frozen = trainer.steps();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(trainer.steps(), frozen);
  ASSERT_TRUE(h.stub->Resume(h.Context().get(), {}, &reply).ok());
  EXPECT_EQ(reply.state(), v1::RUNNING);

  ASSERT_TRUE(h.stub->Stop(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  s = h.stub->Stop(h.Context().get(), {}, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  s = h.stub->Pause(h.Context().get(), {}, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  s = h.SetLr(0.1);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  v1::History history;
  ASSERT_TRUE(h.stub->GetHistory(h.Context().get(), {}, &history).ok());
  ASSERT_EQ(history.control_events_size(), 3);
  EXPECT_EQ(history.control_events(0).action(), "pause");
  EXPECT_EQ(history.control_events(1).action(), "resume");
  EXPECT_EQ(history.control_events(2).action(), "stop");
}

TEST(ControlServiceTest, TokenIsRequiredOnEveryRpc) {
  Harness h({}, "s3cret-token");
  FakeTrainer trainer(&h.state, milliseconds(1));
  for (const std::string& token : {std::string(), std::string("wrong"), std::string("s3cret")}) {
    v1::Status status;
    v1::CommandReply reply;
    v1::History history;
    v1::Diagnosis diagnosis;
    v1::SetLearningRateRequest lr;
    lr.set_learning_rate(0.1);
    const grpc::Status results[] = {
        h.stub->GetStatus(h.Context(token).get(), {}, &status),
        h.stub->Pause(h.Context(token).get(), {}, &reply),
        h.stub->Resume(h.Context(token).get(), {}, &reply),
        h.stub->Stop(h.Context(token).get(), {}, &reply),
        h.stub->SetLearningRate(h.Context(token).get(), lr, &reply),
        h.stub->SaveCheckpoint(h.Context(token).get(), {}, &reply),
        h.stub->GetHistory(h.Context(token).get(), {}, &history),
        h.stub->GetDiagnosis(h.Context(token).get(), {}, &diagnosis),
    };
    for (const grpc::Status& s : results) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "token '" << token << "'";
    }
    auto context = h.Context(token);
    auto reader = h.stub->WatchEvents(context.get(), {});
    v1::Event event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  v1::Status status;
  EXPECT_TRUE(h.stub->GetStatus(h.Context("s3cret-token").get(), {}, &status).ok());
  v1::CommandReply reply;
  EXPECT_TRUE(h.stub->Pause(h.Context("s3cret-token").get(), {}, &reply).ok());
  EXPECT_TRUE(h.stub->Resume(h.Context("s3cret-token").get(), {}, &reply).ok());
}

TEST(ControlServiceTest, StalledSubscriberDoesNotBlockTraining) {
  ServiceOptions o;
  o.watch_queue_capacity = 64;
  Harness h(o);
  // A subscriber that never reads: once the transport's buffers are full its handler
  // blocks in Write, and its queue overflows.
  grpc::ClientContext stalled;
  auto stalled_reader = h.stub->WatchEvents(&stalled, {});
  // A subscriber that reads everything.
  grpc::ClientContext live;
  auto live_reader = h.stub->WatchEvents(&live, {});
  const auto wait_until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (h.state.subscribers() < 2 && std::chrono::steady_clock::now() < wait_until) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_EQ(h.state.subscribers(), 2u);
  std::atomic<int64_t> live_events{0};
  std::thread reader([&] {
    v1::Event e;
    while (live_reader->Read(&e)) ++live_events;
  });
  constexpr int64_t kSteps = 200000;
  {
    FakeTrainer trainer(&h.state, milliseconds(0), kSteps);
    while (!trainer.done() &&
           std::chrono::steady_clock::now() < wait_until + std::chrono::seconds(40)) {
      std::this_thread::sleep_for(milliseconds(10));
    }
    // Every step ran although one subscriber has not read a byte.
    EXPECT_TRUE(trainer.done());
    EXPECT_EQ(trainer.steps(), kSteps);
  }
  EXPECT_GT(h.state.dropped_events(), 0u);
  reader.join();  // The live stream ends (OK) with training.
  EXPECT_GT(live_events.load(), 0);
  EXPECT_TRUE(live_reader->Finish().ok());
  stalled.TryCancel();
}

// Checkpoint answers once the trainer reports the file, with its path; while paused it
// and a rate change take effect, and a stop after them drops neither.
TEST(ControlServiceTest, CommandsWhilePausedApplyAndCheckpointNamesItsFile) {
  Harness h;
  FakeTrainer trainer(&h.state, milliseconds(1));
  v1::CommandReply reply;
  ASSERT_TRUE(h.stub->SaveCheckpoint(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_EQ(reply.checkpoint_path(),
            "ckpt-" + std::to_string(reply.effective_step() - 1) + ".epck");
  ASSERT_TRUE(h.stub->Pause(h.Context().get(), {}, &reply).ok());
  const int64_t paused = reply.effective_step();
  ASSERT_TRUE(h.SetLr(0.005, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_EQ(reply.state(), v1::PAUSED);
  ASSERT_TRUE(h.stub->SaveCheckpoint(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_EQ(reply.effective_step(), paused);
  EXPECT_FALSE(reply.checkpoint_path().empty());
  ASSERT_TRUE(h.stub->Stop(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_FALSE(reply.checkpoint_path().empty());
  v1::History history;
  ASSERT_TRUE(h.stub->GetHistory(h.Context().get(), {}, &history).ok());
  std::vector<std::string> actions;
  for (const auto& e : history.control_events()) actions.push_back(e.action());
  const std::vector<std::string> expected = {"checkpoint", "pause",  "set_learning_rate",
                                             "checkpoint", "resume", "stop"};
  EXPECT_EQ(actions, expected);
}

TEST(ControlServiceTest, WithoutCheckpointsCheckpointFailsAndStopSaysSo) {
  ServiceOptions o;
  o.checkpoints = false;
  Harness h(o);
  FakeTrainer trainer(&h.state, milliseconds(1));
  v1::CommandReply reply;
  const grpc::Status s = h.stub->SaveCheckpoint(h.Context().get(), {}, &reply);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  ASSERT_TRUE(h.stub->Stop(h.Context().get(), {}, &reply).ok());
  EXPECT_TRUE(reply.applied());
  EXPECT_EQ(reply.checkpoint_path(), "");
  EXPECT_NE(reply.message().find("no checkpoint written"), std::string::npos) << reply.message();
}

// GetHistory copies from a snapshot the training thread published, holding no lock the
// training thread takes: while one GetHistory is held up in the middle of its copy, steps
// (Poll, OnStep) still go through. Before, the copy ran under the step's mutex.
TEST(ControlStateTest, GetHistoryDoesNotHoldUpTheTrainingThread) {
  ServiceOptions o;
  o.history_publish_interval = milliseconds(0);  // Publish at every step.
  ControlState state(o);
  train::StepEvent e;
  e.epoch = 1;
  constexpr int64_t kSteps = 10000;  // More than one frozen chunk.
  for (int64_t i = 1; i <= kSteps; ++i) {
    e.global_step = i;
    e.epoch_progress = static_cast<double>(i);
    state.OnStep(e);
  }
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  state.SetHistoryCopyHookForTesting([&] {
    entered.set_value();
    released.wait();
  });
  int rows = -1;
  std::thread reader([&] {
    v1::History h;
    state.GetHistory(true, &h);
    rows = h.batches_size();
  });
  const bool in_copy =
      entered.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  std::future<void> steps = std::async(std::launch::async, [&] {
    for (int64_t i = kSteps + 1; i <= kSteps + 100; ++i) {
      state.Poll(i);
      e.global_step = i;
      e.epoch_progress = static_cast<double>(i);
      state.OnStep(e);
    }
  });
  const bool stepped = steps.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  release.set_value();
  reader.join();
  steps.get();
  EXPECT_TRUE(in_copy);
  EXPECT_TRUE(stepped) << "the training thread waited for GetHistory's copy";
  EXPECT_EQ(rows, kSteps) << "the snapshot published before the copy began";
  state.SetHistoryCopyHookForTesting({});
  v1::History all;
  state.GetHistory(true, &all);
  ASSERT_EQ(all.batches_size(), kSteps + 100);
  for (int i = 0; i < all.batches_size(); ++i) {
    ASSERT_EQ(all.batches(i).epoch_progress(), static_cast<double>(i + 1)) << "row " << i;
  }
  v1::History epochs_only;
  state.GetHistory(false, &epochs_only);
  EXPECT_EQ(epochs_only.batches_size(), 0);
}

TEST(ControlServerTest, RefusesATokenWithoutTlsOffLoopback) {
  ServerOptions o;
  o.bind = "0.0.0.0";
  o.has_token = true;
  try {
    ValidateServerOptions(o);
    FAIL() << "accepted a clear-text token on 0.0.0.0";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("TLS"), std::string::npos) << e.what();
  }
  o.bind = "127.0.0.1";
  EXPECT_NO_THROW(ValidateServerOptions(o));
  o.bind = "0.0.0.0";
  o.has_token = false;
  EXPECT_NO_THROW(ValidateServerOptions(o));
  o.tls_cert_file = "cert.pem";  // Half a pair.
  EXPECT_THROW(ValidateServerOptions(o), InputError);
}

TEST(ControlServerTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace epochal::control
