#include "metrics_setup.h"

#include <arpa/inet.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "epochal/core/error.h"

namespace epochal::apps {
namespace {
constexpr double kDefaultGatherSeconds = 5.0;

// A numeric IPv4 or IPv6 address, checked strictly: the HTTP server's own resolver takes
// "999.1.1.1" and listens on whatever it wraps to.
void CheckBindAddress(const std::string& flag, const std::string& address) {
  unsigned char buffer[sizeof(struct in6_addr)];
  if (::inet_pton(AF_INET, address.c_str(), buffer) == 1) return;
  if (::inet_pton(AF_INET6, address.c_str(), buffer) == 1) return;
  throw InputError("--" + flag + " '" + address +
                   "' is not a numeric IPv4 or IPv6 address (e.g. 127.0.0.1, 0.0.0.0, ::1)");
}
}  // namespace

void AddMetricsFlags(Flags& f) {
  f.Value("metrics-port", "P",
          "serve Prometheus metrics on rank 0 at http://ADDR:P/metrics; 0 picks a free port "
          "(printed)",
          "no metrics");
  f.Value("metrics-bind", "ADDR", "numeric IPv4 or IPv6 address the metrics server listens on",
          "127.0.0.1");
  f.Value("metrics-auth-file", "FILE", "require HTTP basic auth; FILE holds one line user:password",
          "no auth");
  f.Value("metrics-gather-seconds", "S",
          "how often rank 0 gathers the ranks' step-timing histograms", "5");
  f.Value("metrics-linger", "S", "keep serving the final metrics S seconds after training", "0");
}

std::unique_ptr<metrics::MetricsExporter> StartMetrics(const Flags& f, bool is_root) {
  const auto port = f.GetInt("metrics-port", 0, 65535);
  const auto gather = f.GetDouble("metrics-gather-seconds");
  if (gather && *gather <= 0) throw InputError("--metrics-gather-seconds must be positive");
  const auto linger = f.GetDouble("metrics-linger");
  if (linger && *linger < 0) throw InputError("--metrics-linger must not be negative");
  if (!port) {
    for (const char* name :
         {"metrics-bind", "metrics-auth-file", "metrics-gather-seconds", "metrics-linger"}) {
      if (f.Has(name)) throw InputError(std::string("--") + name + " needs --metrics-port");
    }
    return nullptr;
  }
  if (auto v = f.Get("metrics-bind")) CheckBindAddress("metrics-bind", *v);
  if (!is_root) return nullptr;
  metrics::ExporterOptions options;
  options.port = static_cast<int>(*port);
  if (auto v = f.Get("metrics-bind")) options.bind_address = *v;
  if (auto v = f.Get("metrics-auth-file")) options.auth = metrics::ReadBasicAuthFile(*v);
  auto exporter = std::make_unique<metrics::MetricsExporter>();
  const int bound = exporter->Listen(options);
  const bool v6 = options.bind_address.find(':') != std::string::npos;
  std::cout << "metrics: http://" << (v6 ? "[" + options.bind_address + "]" : options.bind_address)
            << ":" << bound << "/metrics" << (options.auth ? " (basic auth)" : "") << std::endl;
  return exporter;
}

void AttachMetrics(const Flags& f, metrics::MetricsExporter& exporter, train::Trainer& trainer,
                   const std::string& run_dir, const v1::ExperimentConfig& config) {
  metrics::JobInfo job;
  job.run = std::filesystem::path(run_dir).filename().string();
  job.config = config.name();
  job.ranks = trainer.comm().size();
  job.per_rank_batch = trainer.per_rank_batch();
  job.global_batch = trainer.global_batch();
  job.epochs = config.training().epochs();
  exporter.SetJobInfo(job);
  exporter.WatchHistory(&trainer.history());
  trainer.SetRankTimingInterval(
      f.GetDouble("metrics-gather-seconds").value_or(kDefaultGatherSeconds));
  trainer.AddObserver(&exporter);
}

void LingerForMetrics(const Flags& f, const metrics::MetricsExporter& exporter) {
  const double seconds = f.GetDouble("metrics-linger").value_or(0.0);
  if (seconds <= 0) return;
  std::cout << "metrics: serving the final values on port " << exporter.port() << " for " << seconds
            << " s" << std::endl;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

}  // namespace epochal::apps
