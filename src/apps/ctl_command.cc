#include "ctl_command.h"

#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "epochal/control/control_server.h"
#include "epochal/control/control_service.h"
#include "epochal/control/control_state.h"
#include "epochal/control/ctl.h"
#include "epochal/core/error.h"

namespace epochal::apps {
namespace {

class RunningControlPlane final : public ControlPlane {
 public:
  RunningControlPlane(control::ServiceOptions service_options,
                      const control::ServerOptions& server_options,
                      const train::Diagnosis* diagnosis)
      : state_(std::move(service_options), diagnosis),
        service_(state_),
        server_(server_options, &service_) {}
  train::ControlSource* source() override { return &state_; }
  train::TrainingObserver* observer() override { return &state_; }
  const control::ControlServer& server() const { return server_; }

 private:
  control::ControlState state_;
  control::ControlService service_;
  control::ControlServer server_;  // Declared last: shut down before the service goes.
};

// The token from --token-file/--control-token-file, else $EPOCHAL_CONTROL_TOKEN, else none.
std::string Token(const Flags& f, const std::string& flag) {
  if (auto path = f.Get(flag)) return control::ReadTokenFile(*path);
  const char* env = std::getenv(control::kTokenEnvVar);
  return env != nullptr ? std::string(env) : std::string();
}

// --target as HOST:PORT ([V6]:PORT, or a gRPC "unix:PATH"), so that a typo gets a
// message instead of gRPC's resolver internals.
void CheckTarget(const std::string& target) {
  const auto bad = [&target](const std::string& why) {
    return InputError("--target must be HOST:PORT, e.g. 127.0.0.1:" +
                      std::to_string(control::kDefaultControlPort) + " (" + why + "), got '" +
                      target + "'");
  };
  if (target.starts_with("unix:") && target.size() > 5) return;
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos) throw bad("no port");
  const std::string host = target.substr(0, colon), port = target.substr(colon + 1);
  if (host.empty() || host == "[]") throw bad("no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    throw bad("the port must be a number in 1..65535");
  }
  for (const unsigned char c : host) {
    if (c <= ' ' || c >= 0x7F) throw bad("the host holds a space or a control character");
  }
}

}  // namespace

void AddControlFlags(Flags& f) {
  f.Value("control-port", "P",
          "serve the gRPC control plane (epochal ctl) on rank 0 at this port; 0 picks a free "
          "one; the address is printed as 'control: HOST:PORT'",
          "off");
  f.Value("control-bind", "ADDR", "address the control plane listens on", "127.0.0.1");
  f.Value("control-token-file", "FILE",
          std::string("bearer token clients must present (else $") + control::kTokenEnvVar +
              " if set; else no token)");
  f.Value("control-tls-cert", "PEM", "TLS certificate chain of the control plane");
  f.Value("control-tls-key", "PEM", "TLS private key of the control plane");
  f.Value("control-tls-client-ca", "PEM", "require client certificates from this CA (mTLS)");
  f.Value("control-max-lr", "X", "largest learning rate 'ctl set-lr' accepts", "1");
}

std::unique_ptr<ControlPlane> StartControlPlane(const Flags& f, const dist::Communicator& comm,
                                                const v1::ExperimentConfig& config,
                                                const train::Diagnosis* diagnosis,
                                                int64_t stop_after_step) {
  const auto port = f.GetInt("control-port", 0, 65535);
  if (!port) {
    for (const char* flag : {"control-bind", "control-token-file", "control-tls-cert",
                             "control-tls-key", "control-tls-client-ca", "control-max-lr"}) {
      if (f.Has(flag)) throw InputError(std::string("--") + flag + " needs --control-port");
    }
    return nullptr;
  }
  // Only rank 0 serves, so only rank 0 needs the token and certificate files (they may
  // exist on its node only); a failure there still ends every rank (AgreeOnStartup).
  if (!comm.is_root()) return nullptr;
  control::ServiceOptions service;
  service.token = Token(f, "control-token-file");
  if (auto v = f.GetDouble("control-max-lr")) {
    if (!(*v > 0))
      throw InputError("--control-max-lr must be positive, got " + *f.Get("control-max-lr"));
    service.max_learning_rate = *v;
  }
  service.world_size = comm.size();
  service.total_epochs = config.training().epochs();
  service.stop_after_step = stop_after_step;
  service.checkpoints = !config.checkpoint().disabled();
  control::ServerOptions server;
  server.bind = f.Get("control-bind").value_or("127.0.0.1");
  server.port = static_cast<int>(*port);
  server.has_token = !service.token.empty();
  server.tls_cert_file = f.Get("control-tls-cert").value_or("");
  server.tls_key_file = f.Get("control-tls-key").value_or("");
  server.tls_client_ca_file = f.Get("control-tls-client-ca").value_or("");
  auto plane = std::make_unique<RunningControlPlane>(std::move(service), server, diagnosis);
  std::cout << "control: " << plane->server().address() << (plane->server().tls() ? " (TLS)" : "")
            << (server.has_token ? " (token required)" : "") << std::endl;
  return plane;
}

int Ctl(int argc, char** argv) {
  Flags f("epochal ctl",
          std::string("Steers a running 'epochal train --control-port P' job.\n"
                      "usage: epochal ctl [flags] ") +
              control::kCtlCommands +
              "\n"
              "  status      state, epoch, step, learning rate, losses, images/s\n"
              "  pause       pause every rank at the next step boundary\n"
              "  resume      resume a paused job\n"
              "  stop        checkpoint and stop at the next step boundary (history\n"
              "              written; without checkpoints it stops and says none was written)\n"
              "  set-lr X    use learning rate X from the next step on, on every rank\n"
              "              (while paused: applied at once, the job stays paused)\n"
              "  checkpoint  checkpoint at the next step boundary (or at once while paused);\n"
              "              replies with the file's path once it is on disk;\n"
              "              FAILED_PRECONDITION when the job runs with --no-checkpoints\n"
              "  history     per-epoch records and control events so far\n"
              "  diagnose    the loss-gap findings so far\n"
              "  watch       stream step, epoch, finding and state events\n"
              "The exit status is the gRPC status code (0 OK, 3 INVALID_ARGUMENT,\n"
              "9 FAILED_PRECONDITION, 14 UNAVAILABLE, 16 UNAUTHENTICATED); 2 for bad usage.");
  f.Value("target", "HOST:PORT", "the job's control address",
          "127.0.0.1:" + std::to_string(control::kDefaultControlPort));
  f.Value("token-file", "FILE",
          std::string("bearer token to present (else $") + control::kTokenEnvVar + " if set)");
  f.Switch("json", "print JSON (one object per line) instead of text");
  f.Switch("tls", "connect with TLS, verifying the server against the system CAs");
  f.Value("tls-ca", "PEM", "connect with TLS, verifying the server against this CA");
  f.Value("tls-cert", "PEM", "client certificate for mutual TLS");
  f.Value("tls-key", "PEM", "client key for mutual TLS");
  f.Value("timeout", "S", "deadline of a call in seconds", "30");
  f.Value("for", "S", "watch: stop after S seconds", "until training ends");
  f.Switch("batches", "history: include the per-step records");
  f.Switch("no-batches", "watch: leave out per-step events");
  // Split positional words (the command and its argument) from the flags.
  static const std::set<std::string> kValueFlags = {"target",  "token-file", "tls-ca", "tls-cert",
                                                    "tls-key", "timeout",    "for"};
  std::vector<char*> flag_argv = {argv[0], argv[1]};
  std::vector<std::string> words;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--") || arg == "-h") {
      flag_argv.push_back(argv[i]);
      const std::string name = arg.substr(2);
      if (kValueFlags.count(name) > 0 && i + 1 < argc) flag_argv.push_back(argv[++i]);
    } else {
      words.push_back(arg);
    }
  }
  if (!f.Parse(static_cast<int>(flag_argv.size()), flag_argv.data(), 2)) return 0;
  if (words.empty()) {
    throw InputError(std::string("a command is required: epochal ctl ") + control::kCtlCommands);
  }
  control::CtlOptions o;
  if (auto v = f.Get("target")) {
    CheckTarget(*v);
    o.target = *v;
  }
  o.token = Token(f, "token-file");
  o.json = f.Has("json");
  o.tls = f.Has("tls");
  o.tls_ca = f.Get("tls-ca").value_or("");
  o.tls_cert = f.Get("tls-cert").value_or("");
  o.tls_key = f.Get("tls-key").value_or("");
  if (auto v = f.GetDouble("timeout")) o.timeout_seconds = *v;
  if (auto v = f.GetDouble("for")) o.watch_seconds = *v;
  o.include_batches = f.Has("batches");
  o.skip_batches = f.Has("no-batches");
  o.command = words[0];
  o.args.assign(words.begin() + 1, words.end());
  return control::RunCtl(o, std::cout, std::cerr);
}

}  // namespace epochal::apps
