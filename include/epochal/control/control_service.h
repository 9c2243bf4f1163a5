// ControlService: the gRPC TrainingControl service of a running job (rank 0).
//
// A thin layer over a ControlState: each rpc checks the caller's bearer token and its
// arguments, then asks the state, which owns everything the job's control plane knows
// and the commands waiting for a step boundary (see control_state.h). WatchEvents drains
// the subscriber queue the state hands it, so a slow client blocks only its own handler
// thread.
//
// Thread safety: every rpc may be called from any gRPC thread.
#pragma once

#include <string>

#include "epochal/control/control_state.h"
#include "epochal/v1/control.grpc.pb.h"

namespace epochal::control {

class ControlService final : public v1::TrainingControl::Service {
 public:
  // `state` (not owned) must outlive the service, and the server that serves it.
  explicit ControlService(ControlState& state) : state_(state) {}
  ControlService(const ControlService&) = delete;
  ControlService& operator=(const ControlService&) = delete;

  ControlState& state() const { return state_; }

  grpc::Status GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest* request,
                         v1::Status* reply) override;
  grpc::Status Pause(grpc::ServerContext* context, const v1::PauseRequest* request,
                     v1::CommandReply* reply) override;
  grpc::Status Resume(grpc::ServerContext* context, const v1::ResumeRequest* request,
                      v1::CommandReply* reply) override;
  grpc::Status Stop(grpc::ServerContext* context, const v1::StopRequest* request,
                    v1::CommandReply* reply) override;
  grpc::Status SetLearningRate(grpc::ServerContext* context,
                               const v1::SetLearningRateRequest* request,
                               v1::CommandReply* reply) override;
  grpc::Status SaveCheckpoint(grpc::ServerContext* context,
                              const v1::SaveCheckpointRequest* request,
                              v1::CommandReply* reply) override;
  grpc::Status GetHistory(grpc::ServerContext* context, const v1::GetHistoryRequest* request,
                          v1::History* reply) override;
  grpc::Status GetDiagnosis(grpc::ServerContext* context, const v1::GetDiagnosisRequest* request,
                            v1::Diagnosis* reply) override;
  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  ControlState& state_;
};

// Constant-time equality of two secrets: the time taken depends on their lengths only.
bool ConstantTimeEquals(const std::string& a, const std::string& b);

}  // namespace epochal::control
