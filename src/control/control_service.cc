#include "epochal/control/control_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string_view>

namespace epochal::control {
namespace {

// How long a WatchEvents handler waits for an event before checking for cancellation.
constexpr auto kWatchPollInterval = std::chrono::milliseconds(200);

std::string Format(const char* fmt, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, value);
  return buf;
}

}  // namespace

bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  // Walk the longer string whole, so the time does not reveal a matching prefix.
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff = static_cast<unsigned char>(diff | (x ^ y));
  }
  return diff == 0;
}

grpc::Status ControlService::Authorize(const grpc::ServerContext* context) const {
  const std::string& token = state_.options().token;
  if (token.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return {grpc::StatusCode::UNAUTHENTICATED,
            "this server requires a bearer token (metadata 'authorization: Bearer <token>')"};
  }
  const std::string value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  const std::string presented = value.starts_with(kBearer) ? value.substr(kBearer.size()) : "";
  if (!ConstantTimeEquals(presented, token)) {
    return {grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token"};
  }
  return grpc::Status::OK;
}

grpc::Status ControlService::GetStatus(grpc::ServerContext* context, const v1::GetStatusRequest*,
                                       v1::Status* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  state_.GetStatus(reply);
  return grpc::Status::OK;
}

grpc::Status ControlService::Pause(grpc::ServerContext* context, const v1::PauseRequest*,
                                   v1::CommandReply* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  return state_.Pause(context->deadline(), reply);
}

grpc::Status ControlService::Resume(grpc::ServerContext* context, const v1::ResumeRequest*,
                                    v1::CommandReply* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  return state_.Resume(context->deadline(), reply);
}

grpc::Status ControlService::Stop(grpc::ServerContext* context, const v1::StopRequest*,
                                  v1::CommandReply* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  return state_.Stop(context->deadline(), reply);
}

grpc::Status ControlService::SetLearningRate(grpc::ServerContext* context,
                                             const v1::SetLearningRateRequest* request,
                                             v1::CommandReply* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  const double rate = request->learning_rate();
  if (!std::isfinite(rate) || rate <= 0) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "the learning rate must be finite and positive, got " + Format("%g", rate)};
  }
  const double max_rate = state_.options().max_learning_rate;
  if (rate > max_rate) {
    return {grpc::StatusCode::INVALID_ARGUMENT,
            "the learning rate " + Format("%g", rate) + " exceeds the maximum " +
                Format("%g", max_rate) + " (epochal train --control-max-lr raises it)"};
  }
  return state_.SetLearningRate(rate, context->deadline(), reply);
}

grpc::Status ControlService::SaveCheckpoint(grpc::ServerContext* context,
                                            const v1::SaveCheckpointRequest*,
                                            v1::CommandReply* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  return state_.SaveCheckpoint(context->deadline(), reply);
}

grpc::Status ControlService::GetHistory(grpc::ServerContext* context,
                                        const v1::GetHistoryRequest* request, v1::History* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  state_.GetHistory(request->include_batches(), reply);
  return grpc::Status::OK;
}

grpc::Status ControlService::GetDiagnosis(grpc::ServerContext* context,
                                          const v1::GetDiagnosisRequest*, v1::Diagnosis* reply) {
  if (auto s = Authorize(context); !s.ok()) return s;
  state_.GetDiagnosis(reply);
  return grpc::Status::OK;
}

grpc::Status ControlService::WatchEvents(grpc::ServerContext* context,
                                         const v1::WatchEventsRequest* request,
                                         grpc::ServerWriter<v1::Event>* writer) {
  if (auto s = Authorize(context); !s.ok()) return s;
  const std::shared_ptr<EventQueue> queue = state_.Subscribe(request->skip_batches());
  while (!context->IsCancelled()) {
    std::optional<v1::Event> event = queue->Pop(kWatchPollInterval);
    if (!event) {
      if (queue->closed()) break;
      if (state_.finished()) break;  // Shut down before this subscriber was registered.
      continue;
    }
    // Blocks only this handler's thread when the client reads slowly.
    if (!writer->Write(*event)) break;
  }
  state_.Unsubscribe(queue);
  if (context->IsCancelled()) return grpc::Status::CANCELLED;
  return grpc::Status::OK;
}

}  // namespace epochal::control
