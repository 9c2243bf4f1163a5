// The Prometheus exporter: every `epochal_*` metric family of docs/metrics.md, fed by the
// trainer's events on rank 0 and served at http://ADDR:PORT/metrics by prometheus-cpp's
// civetweb-based Exposer.
//
// Exactness. Loss and accuracy are exported as monotone sums (the `epochal_train_loss`
// summary's `_sum`, `epochal_train_samples_total`, `epochal_train_correct_total`), so
// rate(epochal_train_loss_sum[w]) / rate(epochal_train_samples_total[w]) is the exact
// mean per-sample training loss over any window w, whatever the scrape interval: no
// step is lost between scrapes, as a sampled gauge would lose it.
//
// Per-rank timing histograms (`epochal_step_seconds`, `epochal_data_wait_seconds`,
// `epochal_allreduce_wait_seconds`, label `rank`) are filled from the snapshots the
// trainer gathers to rank 0 every few seconds (Trainer::SetRankTimingInterval).
//
// Thread safety: the On* callbacks run on the training thread; the exposer's threads
// read the metrics concurrently (prometheus-cpp's metrics are thread-safe, and the loss
// summary takes its own lock). Scrape() may be called from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "epochal/train/observer.h"

namespace prometheus {
class Registry;
class Exposer;
}  // namespace prometheus

namespace epochal::metrics {

// Who may scrape: HTTP basic auth credentials.
struct BasicAuth {
  std::string user;
  std::string password;
};

// Reads a `user:password` line (the first non-empty, non-# line of `path`; the password
// is everything after the first colon). Throws InputError naming the file when it cannot
// be read or has no such line.
BasicAuth ReadBasicAuthFile(const std::string& path);

// Compares without an early exit, so the time taken does not reveal where two strings
// first differ (only, at most, whether their lengths differ).
bool ConstantTimeEquals(const std::string& a, const std::string& b);

// What the job is, exported as `epochal_job_info{...} 1`.
struct JobInfo {
  std::string run;     // Run name (the output directory's name).
  std::string config;  // The config's `name`.
  int ranks = 1;
  int64_t per_rank_batch = 0;
  int64_t global_batch = 0;
  int epochs = 0;
};

struct ExporterOptions {
  std::string bind_address = "127.0.0.1";
  int port = 0;  // 0: a free port, chosen by the system.
  std::optional<BasicAuth> auth;
};

class MetricsExporter final : public train::TrainingObserver {
 public:
  // Creates every metric family; serves nothing until Listen().
  MetricsExporter();
  ~MetricsExporter() override;
  MetricsExporter(const MetricsExporter&) = delete;
  MetricsExporter& operator=(const MetricsExporter&) = delete;

  // Starts the HTTP server on options.bind_address:options.port; returns the bound port.
  // Throws InputError when the address cannot be bound (in use, not local, malformed).
  int Listen(const ExporterOptions& options);
  // The port Listen() bound; 0 before.
  int port() const { return port_; }

  // The exposition text of every family, as a scrape would see it (tests, benchmarks).
  std::string Scrape() const;
  // The name of every family this exporter defines (without _sum/_count/_bucket).
  std::vector<std::string> FamilyNames() const;

  // The job's labels (epochal_job_info); call once.
  void SetJobInfo(const JobInfo& job);
  // The leakage scan's counts (epochal_leakage_duplicates{kind}): validation samples by
  // the simplest kind of training twin they have, and the label conflicts.
  struct LeakageCounts {
    int64_t exact = 0, near = 0, photometric = 0, shifted = 0, mirrored = 0;
    int64_t label_conflicts = 0;
  };
  void SetLeakage(const LeakageCounts& counts);
  // The trainer's history, read in OnStep to publish an aligned training loss as soon as
  // it is known (half-way through the next epoch). Not owned; may be null.
  void WatchHistory(const train::History* history) { history_ = history; }

  void OnEpochStart(int epoch, int total_epochs, int64_t samples) override;
  void OnStep(const train::StepEvent& event) override;
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult& validation,
                  const train::History& history) override;
  void OnTrainingEnd(const train::History& history, const train::EvalResult& validation) override;
  void OnControl(const train::ControlEvent& event) override;
  void OnRankTimings(const train::RankTimingSnapshot& snapshot) override;

 private:
  struct Families;
  class LossSummary;
  void SetState(const std::string& state);
  void PublishAligned(const train::History& history);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<LossSummary> loss_;
  std::unique_ptr<Families> f_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  const train::History* history_ = nullptr;
  int aligned_published_ = 0;  // Last boundary whose aligned loss is exported.
  int port_ = 0;
};

}  // namespace epochal::metrics
