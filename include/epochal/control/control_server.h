// ControlServer: the gRPC server that exposes a ControlService (rank 0 of a job), with
// server reflection, an optional bearer token and optional TLS / mutual TLS.
//
// Security model (docs/control.md): loopback by default; a token, when configured, is
// checked on every TrainingControl rpc in constant time; a token over plain TCP on a
// non-loopback address would travel in the clear, so it is refused at startup.
//
// Thread safety: construct and destroy on one thread; port() and address() from any.
#pragma once

#include <memory>
#include <string>

#include "epochal/control/control_service.h"

namespace grpc {
class Server;
}

namespace epochal::control {

struct ServerOptions {
  // Address to listen on (IPv4, IPv6 or a host name).
  std::string bind = "127.0.0.1";
  // TCP port; 0 picks a free one (port() says which).
  int port = 0;
  // Whether the service requires a token (the token itself lives in ServiceOptions).
  bool has_token = false;
  // PEM files: server certificate chain and key (TLS on when both are set), and the CA
  // that client certificates must chain to (mutual TLS on when set).
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool IsLoopback(const std::string& host);

// Sends gRPC's own log lines (a JSON error blob for a port in use, resolver details) to
// the debug log, so that users see epochal's message about the failure, not gRPC's
// internals. Idempotent; call before the first gRPC object is made.
void RouteGrpcLogsToDebug();

// Throws InputError for inconsistent options: half a TLS pair, a client CA without TLS,
// a token without TLS on a non-loopback address.
void ValidateServerOptions(const ServerOptions& options);

// The token in `path` with surrounding whitespace removed; InputError (naming the file)
// when it cannot be read or is empty.
std::string ReadTokenFile(const std::string& path);

class ControlServer {
 public:
  // Validates `options`, then starts serving `service` (not owned; must outlive this).
  // Throws InputError for bad options or unreadable certificate files, SystemError when
  // the address cannot be bound.
  ControlServer(const ServerOptions& options, ControlService* service);
  // Ends the streams of the service's state and shuts the server down (in-flight calls get 1 s).
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  int port() const { return port_; }
  // "HOST:PORT" as a client would dial it.
  std::string address() const;
  bool tls() const { return tls_; }

 private:
  ControlService* service_;
  std::unique_ptr<grpc::Server> server_;
  std::string host_;
  int port_ = 0;
  bool tls_ = false;
};

}  // namespace epochal::control
