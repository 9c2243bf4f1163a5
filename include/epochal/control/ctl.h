// The `epochal ctl` client: one TrainingControl rpc per invocation (or a WatchEvents
// stream), printed for people or, with `json`, as one JSON object per line for scripts.
// The result is the gRPC status code, which `epochal ctl` exits with.
//
// Thread safety: RunCtl may run on any thread; it shares nothing.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace epochal::control {

// The port `epochal train` documents for its control plane (scripts/bootstrap.sh uses it)
// and the client's default target.
inline constexpr int kDefaultControlPort = 50051;
// The environment variable that holds the bearer token when no token file is given
// (read by both `epochal train` and `epochal ctl`).
inline constexpr char kTokenEnvVar[] = "EPOCHAL_CONTROL_TOKEN";

struct CtlOptions {
  std::string target = "127.0.0.1:" + std::to_string(kDefaultControlPort);
  std::string token;  // Empty: send none.
  bool json = false;
  // TLS: on when `tls` or any file is set; `tls_ca` verifies the server (system roots
  // otherwise); `tls_cert` + `tls_key` identify the client (mutual TLS).
  bool tls = false;
  std::string tls_ca, tls_cert, tls_key;
  // Deadline of a unary call, seconds; `watch` runs until the stream ends (or this many
  // seconds if `watch_seconds` > 0).
  double timeout_seconds = 30;
  double watch_seconds = 0;
  bool include_batches = false;  // history: also the per-step records.
  bool skip_batches = false;     // watch: leave out per-step events.
  // status|pause|resume|stop|set-lr|checkpoint|history|diagnose|watch and its arguments.
  std::string command;
  std::vector<std::string> args;
};

// The commands, for usage text.
inline constexpr char kCtlCommands[] =
    "status|pause|resume|stop|set-lr X|checkpoint|history|diagnose|watch";

// Runs one command against `options.target`; prints the result on `out`, errors on `err`.
// Returns the gRPC status code (0 = OK); throws InputError for an unknown command or a
// missing/unparsable argument, or an unreadable TLS file.
int RunCtl(const CtlOptions& options, std::ostream& out, std::ostream& err);

}  // namespace epochal::control
