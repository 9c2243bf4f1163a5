#include "epochal/control/control_server.h"

#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>

#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/core/logging.h"

namespace epochal::control {
namespace {

constexpr int kHandshakeTimeoutMs = 5000;

std::string ReadWholeFile(const std::string& path, const std::string& what,
                          uint64_t max_bytes = kMaxPemFileBytes) {
  return ReadFileCapped(path, max_bytes, what);
}

// IPv6 literals need brackets in a gRPC address.
std::string HostPort(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos && !host.starts_with("[");
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

void RouteGrpcLogsToDebug() {
  static std::once_flag once;
  std::call_once(once, [] {
    gpr_set_log_function([](gpr_log_func_args* args) {
      EPOCHAL_LOG(kDebug, "grpc ", args->file, ":", args->line, ": ", args->message);
    });
  });
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

void ValidateServerOptions(const ServerOptions& o) {
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    throw InputError("--control-tls-cert and --control-tls-key go together: give both or neither");
  }
  const bool tls = !o.tls_cert_file.empty();
  if (!o.tls_client_ca_file.empty() && !tls) {
    throw InputError(
        "--control-tls-client-ca (mutual TLS) needs --control-tls-cert and --control-tls-key");
  }
  if (o.has_token && !tls && !IsLoopback(o.bind)) {
    throw InputError("refusing to serve the control plane on " + o.bind +
                     " with a token but without TLS: the token would cross the network in "
                     "clear text. Give --control-tls-cert/--control-tls-key, or bind to "
                     "127.0.0.1 and tunnel (docs/control.md)");
  }
  if (o.port < 0 || o.port > 65535) {
    throw InputError("--control-port must be in 0..65535, got " + std::to_string(o.port));
  }
}

std::string ReadTokenFile(const std::string& path) {
  std::string token = ReadWholeFile(path, "token file", kMaxTokenFileBytes);
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  if (first == std::string::npos) throw InputError("token file " + path + " is empty");
  return token.substr(first, last - first + 1);
}

ControlServer::ControlServer(const ServerOptions& options, ControlService* service)
    : service_(service), host_(options.bind) {
  ValidateServerOptions(options);
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (!options.tls_cert_file.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({ReadWholeFile(options.tls_key_file, "TLS key"),
                                      ReadWholeFile(options.tls_cert_file, "TLS certificate")});
    if (!options.tls_client_ca_file.empty()) {
      ssl.pem_root_certs = ReadWholeFile(options.tls_client_ca_file, "TLS client CA");
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(ssl);
    tls_ = true;
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  RouteGrpcLogsToDebug();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // A client that opens a TLS connection and never finishes the handshake (a wrong CA
  // retries, a port scanner) holds the listener until the handshake times out, and
  // Shutdown waits for it: keep that bounded, so the job exits promptly after training.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, kHandshakeTimeoutMs);
  const std::string address = HostPort(options.bind, options.port);
  builder.AddListeningPort(address, credentials, &port_);
  builder.RegisterService(service);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    throw SystemError("cannot serve the control plane on " + address +
                      " (address in use, or not an address of this host)");
  }
}

ControlServer::~ControlServer() {
  service_->state().Shutdown();
  // Streams end on their own once the state is shut down; a call stuck writing to a
  // client that does not read is cancelled after the grace period.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

std::string ControlServer::address() const { return HostPort(host_, port_); }

}  // namespace epochal::control
