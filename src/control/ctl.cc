#include "epochal/control/ctl.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "epochal/control/control_server.h"
#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/v1/control.grpc.pb.h"

namespace epochal::control {
namespace {

std::string ReadPem(const std::string& path, const std::string& what) {
  return ReadFileCapped(path, kMaxPemFileBytes, what);
}

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string s;
  (void)google::protobuf::util::MessageToJsonString(m, &s, o);
  return s;
}

std::string Num(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

std::string StateText(v1::State s) { return v1::State_Name(s); }

void PrintStatus(const v1::Status& s, std::ostream& out) {
  out << "state:          " << StateText(s.state()) << "\n"
      << "epoch:          " << s.epoch() << "/" << s.total_epochs() << " (progress "
      << Num("%.3f", s.epoch_progress()) << ")\n"
      << "step:           " << s.step() << "\n"
      << "learning rate:  " << Num("%.6g", s.learning_rate())
      << (s.learning_rate_overridden() ? " (set by control)" : "") << "\n"
      << "last batch loss:" << Num(" %.4f", s.last_batch_loss()) << "  (epoch so far "
      << Num("%.4f", s.running_loss()) << ")\n";
  if (s.epoch_losses_size() > 0) {
    out << "epoch losses:  ";
    for (int i = 0; i < s.epoch_losses_size(); ++i) {
      out << " " << i + 1 << ": " << Num("%.4f", s.epoch_losses(i));
      if (i < s.epoch_val_losses_size())
        out << " (val " << Num("%.4f", s.epoch_val_losses(i)) << ")";
    }
    out << "\n";
  }
  out << "images/s:       " << Num("%.1f", s.images_per_second()) << "\n"
      << "ranks:          " << s.world_size() << "\n"
      << "uptime:         " << Num("%.1f", s.uptime_seconds()) << " s\n";
  if (s.paused_at_step() > 0) out << "last paused at: step " << s.paused_at_step() << "\n";
}

void PrintHistory(const v1::History& h, std::ostream& out) {
  out << "epoch     loss      acc  val_loss  val_acc   timing  dropout batchnrm     data       "
         "lr\n";
  for (const v1::EpochRecord& e : h.epochs()) {
    const auto opt = [](bool has, double v) { return has ? Num("%8.4f", v) : "       -"; };
    out << Num("%5.0f", e.epoch()) << " " << Num("%8.4f", e.loss()) << " "
        << Num("%8.4f", e.accuracy()) << " " << Num("%8.4f", e.val_loss()) << " "
        << Num("%8.4f", e.val_accuracy()) << " " << opt(e.has_gaps(), e.gap_timing()) << " "
        << opt(e.has_gaps(), e.gap_dropout()) << " " << opt(e.has_gaps(), e.gap_batchnorm()) << " "
        << opt(e.has_gaps(), e.gap_data()) << " " << Num("%8.4g", e.lr()) << "\n";
  }
  if (h.control_events_size() > 0) out << "control events:\n";
  for (const v1::ControlEvent& c : h.control_events()) {
    out << "  step " << c.step() << ": " << c.action();
    if (c.action() == "set_learning_rate") out << " " << Num("%.17g", c.learning_rate());
    out << "\n";
  }
  if (h.batches_size() > 0) out << h.batches_size() << " step records\n";
}

void PrintDiagnosis(const v1::Diagnosis& d, std::ostream& out) {
  if (d.epoch() == 0) {
    out << "no epoch has finished yet\n";
    return;
  }
  out << "after epoch " << d.epoch();
  if (!d.dominant_term().empty()) out << ", dominant gap term: " << d.dominant_term();
  out << "\n";
  if (d.findings_size() == 0) out << "no finding crossed its threshold\n";
  for (const v1::Finding& f : d.findings()) {
    out << "  " << f.name() << " (epochs " << f.first_epoch() << "-" << f.last_epoch()
        << "): " << f.explanation() << "\n";
  }
}

void PrintEvent(const v1::Event& e, std::ostream& out) {
  if (e.dropped_before() > 0) out << "(" << e.dropped_before() << " events dropped)\n";
  out << Num("%8.2f", e.time_seconds()) << " s  ";
  switch (e.kind_case()) {
    case v1::Event::kBatch:
      out << "step " << e.batch().step() << "  epoch " << Num("%.3f", e.batch().epoch_progress())
          << "  loss " << Num("%.4f", e.batch().loss()) << "  lr "
          << Num("%.6g", e.batch().learning_rate());
      break;
    case v1::Event::kEpoch: {
      const v1::EpochRecord& r = e.epoch().record();
      out << "epoch " << r.epoch() << " done: loss " << Num("%.4f", r.loss()) << "  val_loss "
          << Num("%.4f", r.val_loss()) << "  val_acc " << Num("%.4f", r.val_accuracy());
      break;
    }
    case v1::Event::kFinding:
      out << "finding (epoch " << e.finding().epoch() << "): " << e.finding().finding();
      break;
    case v1::Event::kState:
      out << "state " << StateText(e.state().state()) << " (" << e.state().action() << " at step "
          << e.state().step() << ")";
      break;
    default:
      out << "(unknown event)";
  }
  out << "\n";
}

class Client {
 public:
  explicit Client(const CtlOptions& o) : options_(o) {
    RouteGrpcLogsToDebug();
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    if (o.tls || !o.tls_ca.empty() || !o.tls_cert.empty() || !o.tls_key.empty()) {
      if (o.tls_cert.empty() != o.tls_key.empty()) {
        throw InputError("--tls-cert and --tls-key go together (mutual TLS)");
      }
      grpc::SslCredentialsOptions ssl;
      if (!o.tls_ca.empty()) ssl.pem_root_certs = ReadPem(o.tls_ca, "CA file");
      if (!o.tls_cert.empty()) {
        ssl.pem_cert_chain = ReadPem(o.tls_cert, "client certificate");
        ssl.pem_private_key = ReadPem(o.tls_key, "client key");
      }
      credentials = grpc::SslCredentials(ssl);
    } else {
      credentials = grpc::InsecureChannelCredentials();
    }
    stub_ = v1::TrainingControl::NewStub(grpc::CreateChannel(o.target, credentials));
  }

  // A context with the token and a deadline of `seconds` (none when <= 0).
  std::unique_ptr<grpc::ClientContext> Context(double seconds) const {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!options_.token.empty()) c->AddMetadata("authorization", "Bearer " + options_.token);
    if (seconds > 0) {
      c->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    }
    return c;
  }

  v1::TrainingControl::Stub& stub() { return *stub_; }

 private:
  const CtlOptions& options_;
  std::unique_ptr<v1::TrainingControl::Stub> stub_;
};

int Finish(const CtlOptions& o, const grpc::Status& status, std::ostream& out, std::ostream& err) {
  if (status.ok()) return 0;
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    message = "cannot reach the control server at " + o.target + " (" + message +
              "); is the job running with --control-port, and do --target and TLS match?";
  } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = "no answer from " + o.target + " within the deadline (" + message + ")";
  }
  const int code = static_cast<int>(status.error_code());
  const std::string name = [&] {
    switch (status.error_code()) {
      case grpc::StatusCode::INVALID_ARGUMENT:
        return "INVALID_ARGUMENT";
      case grpc::StatusCode::FAILED_PRECONDITION:
        return "FAILED_PRECONDITION";
      case grpc::StatusCode::UNAUTHENTICATED:
        return "UNAUTHENTICATED";
      case grpc::StatusCode::UNAVAILABLE:
        return "UNAVAILABLE";
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        return "DEADLINE_EXCEEDED";
      case grpc::StatusCode::ABORTED:
        return "ABORTED";
      case grpc::StatusCode::CANCELLED:
        return "CANCELLED";
      default:
        return "ERROR";
    }
  }();
  if (o.json) {
    google::protobuf::Struct s;
    (*s.mutable_fields())["code"].set_number_value(code);
    (*s.mutable_fields())["status"].set_string_value(name);
    (*s.mutable_fields())["error"].set_string_value(message);
    out << Json(s) << "\n";
  }
  err << "epochal ctl " << o.command << ": " << name << ": " << message << "\n";
  return code;
}

double ParseRate(const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end == nullptr || *end != '\0') {
    throw InputError("set-lr: '" + text + "' is not a number");
  }
  return v;
}

}  // namespace

int RunCtl(const CtlOptions& o, std::ostream& out, std::ostream& err) {
  const std::string& c = o.command;
  const size_t want_args = c == "set-lr" ? 1 : 0;
  if (o.args.size() != want_args) {
    throw InputError(c == "set-lr" ? "set-lr takes one learning rate, e.g. 'set-lr 0.005'"
                                   : "'" + c + "' takes no argument");
  }
  Client client(o);
  auto& stub = client.stub();
  const auto print = [&](const google::protobuf::Message& m, auto human) {
    if (o.json) {
      out << Json(m) << "\n";
    } else {
      human();
    }
  };
  grpc::Status status;
  if (c == "status") {
    v1::Status reply;
    status = stub.GetStatus(client.Context(o.timeout_seconds).get(), {}, &reply);
    if (status.ok()) print(reply, [&] { PrintStatus(reply, out); });
  } else if (c == "pause" || c == "resume" || c == "stop" || c == "set-lr" || c == "checkpoint") {
    v1::CommandReply reply;
    auto context = client.Context(o.timeout_seconds);
    if (c == "pause") {
      status = stub.Pause(context.get(), {}, &reply);
    } else if (c == "resume") {
      status = stub.Resume(context.get(), {}, &reply);
    } else if (c == "stop") {
      status = stub.Stop(context.get(), {}, &reply);
    } else if (c == "checkpoint") {
      status = stub.SaveCheckpoint(context.get(), {}, &reply);
    } else {
      v1::SetLearningRateRequest request;
      request.set_learning_rate(ParseRate(o.args[0]));
      status = stub.SetLearningRate(context.get(), request, &reply);
    }
    if (status.ok()) print(reply, [&] { out << reply.message() << "\n"; });
  } else if (c == "history") {
    v1::GetHistoryRequest request;
    request.set_include_batches(o.include_batches);
    v1::History reply;
    status = stub.GetHistory(client.Context(o.timeout_seconds).get(), request, &reply);
    if (status.ok()) print(reply, [&] { PrintHistory(reply, out); });
  } else if (c == "diagnose") {
    v1::Diagnosis reply;
    status = stub.GetDiagnosis(client.Context(o.timeout_seconds).get(), {}, &reply);
    if (status.ok()) print(reply, [&] { PrintDiagnosis(reply, out); });
  } else if (c == "watch") {
    v1::WatchEventsRequest request;
    request.set_skip_batches(o.skip_batches);
    auto context = client.Context(o.watch_seconds);
    auto reader = stub.WatchEvents(context.get(), request);
    v1::Event event;
    while (reader->Read(&event)) {
      print(event, [&] { PrintEvent(event, out); });
      out.flush();
    }
    status = reader->Finish();
    // A bounded watch that ran its course is a success.
    if (o.watch_seconds > 0 && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      status = grpc::Status::OK;
    }
  } else {
    throw InputError("unknown ctl command '" + c + "'; expected one of " + kCtlCommands);
  }
  return Finish(o, status, out, err);
}

}  // namespace epochal::control
