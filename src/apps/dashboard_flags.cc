#include "dashboard_flags.h"

#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "epochal/core/error.h"
#include "epochal/train/stop_signal.h"

namespace epochal::apps {
namespace {
// How often the trainer gathers the ranks' timings for the throughput panel when no
// metrics flag set it.
constexpr double kGatherSeconds = 5.0;
}  // namespace

void AddDashboardFlags(Flags& f) {
  f.Value("dashboard-port", "P",
          "serve the live page on rank 0 at http://ADDR:P/; 0 picks a free port (printed)",
          "no page");
  f.Value("dashboard-bind", "ADDR", "IPv4 address the live page listens on", "127.0.0.1");
  f.Value("dashboard-auth-file", "FILE",
          "require HTTP basic auth for the page; FILE holds one line user:password", "no auth");
  f.Value("dashboard-linger", "S", "keep serving the final page S seconds after training", "0");
}

std::unique_ptr<dashboard::DashboardServer> StartDashboard(const Flags& f, bool is_root,
                                                           const v1::ExperimentConfig& config,
                                                           const std::string& run_dir,
                                                           int world_size) {
  const auto port = f.GetInt("dashboard-port", 0, 65535);
  const auto linger = f.GetDouble("dashboard-linger");
  if (linger && *linger < 0) throw InputError("--dashboard-linger must not be negative");
  if (!port) {
    for (const char* name : {"dashboard-bind", "dashboard-auth-file", "dashboard-linger"}) {
      if (f.Has(name)) throw InputError(std::string("--") + name + " needs --dashboard-port");
    }
    return nullptr;
  }
  if (!is_root) return nullptr;
  dashboard::DashboardOptions options;
  options.port = static_cast<int>(*port);
  if (auto v = f.Get("dashboard-bind")) options.bind_address = *v;
  if (auto v = f.Get("dashboard-auth-file")) options.auth = metrics::ReadBasicAuthFile(*v);
  dashboard::RunInfo info;
  info.run = std::filesystem::path(run_dir).filename().string();
  info.config_name = config.name();
  info.world_size = world_size;
  info.epochs_planned = config.training().epochs();
  const auto& t = config.training();
  info.per_rank_batch = t.fixed_global_batch()
                            ? static_cast<double>(t.batch_size()) / std::max(world_size, 1)
                            : static_cast<double>(t.batch_size());
  auto server = std::make_unique<dashboard::DashboardServer>(info);
  const int bound = server->Listen(options);
  std::cout << "dashboard: http://" << options.bind_address << ":" << bound << "/"
            << (options.auth ? " (basic auth)" : "") << std::endl;
  return server;
}

void AttachDashboard(dashboard::DashboardServer& server, train::Trainer& trainer) {
  server.WatchDiagnosis(&trainer.diagnosis());
  if (trainer.comm().size() > 1) trainer.SetRankTimingInterval(kGatherSeconds);
  trainer.AddObserver(&server);
}

void LingerForDashboard(const Flags& f, const dashboard::DashboardServer& server) {
  const double seconds = f.GetDouble("dashboard-linger").value_or(0.0);
  if (seconds <= 0) return;
  std::cout << "dashboard: serving the final page on port " << server.port() << " for " << seconds
            << " s" << std::endl;
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until && !train::StopSignalReceived()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace epochal::apps
