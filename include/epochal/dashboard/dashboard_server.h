// The live page (`epochal train --dashboard-port P`): rank 0 serves, with CivetWeb,
//
//   /                the page (src/report/assets/live_page.html)
//   /run_view.js     its renderer, /run_view.css its style (the same as report.html's)
//   /api/run         the run document (report/run_document.h) as JSON; ?since=N sends
//                    only the batches from index N on, so a poller fetches each batch once
//
// everything from the binary (no CDN, works offline); docs/dashboard.md has the JSON.
//
// Serving never slows a step. The trainer's thread publishes a snapshot at step
// boundaries through the observer calls; OnStep appends the batch to a local buffer and
// hands it over only when the snapshot's lock is free (try_lock), so a step never waits
// for a request. The epoch documents are rendered once per epoch, on the training
// thread, and requests copy them under the lock and serialize outside it. CivetWeb runs
// a fixed number of worker threads (Options::threads), so at most that many requests are
// served at once; the rest wait in its queue.
//
// Access follows the metrics endpoint's rules: loopback by default, an explicit bind
// address otherwise (IPv4), optional HTTP basic auth (constant-time comparison), and no
// TLS (prometheus-cpp's exposer has none either; use an SSH tunnel or a TLS proxy).
//
// Thread safety: the On* callbacks and Set* run on the training thread; request handlers
// run on CivetWeb's threads; RunJson may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "epochal/data/leakage.h"
#include "epochal/metrics/exporter.h"
#include "epochal/report/run_document.h"
#include "epochal/train/diagnosis.h"
#include "epochal/train/observer.h"

struct mg_context;
struct mg_connection;

namespace epochal::dashboard {

struct DashboardOptions {
  std::string bind_address = "127.0.0.1";
  int port = 0;  // 0: a free port, chosen by the system.
  std::optional<metrics::BasicAuth> auth;
  int threads = 4;  // Requests served at once.
};

// What does not change during the run.
struct RunInfo {
  std::string run;
  std::string config_name;
  int world_size = 1;
  int epochs_planned = 0;
  double per_rank_batch = 0;  // Samples per step and rank, for the throughput panel.
};

class DashboardServer final : public train::TrainingObserver {
 public:
  explicit DashboardServer(RunInfo info);
  ~DashboardServer() override;
  DashboardServer(const DashboardServer&) = delete;
  DashboardServer& operator=(const DashboardServer&) = delete;

  // Starts serving; returns the bound port. Throws InputError when the address cannot
  // be bound (in use, not local, malformed).
  int Listen(const DashboardOptions& options);
  int port() const { return port_; }

  // The leakage scan, with the datasets it scanned for the pairs' images (may be null).
  void SetLeakage(const data::LeakageReport& report, const data::Dataset* train,
                  const data::Dataset* val);
  // Findings with their epoch ranges are read from `diagnosis` at each epoch end (not
  // owned; may be null).
  void WatchDiagnosis(const train::Diagnosis* diagnosis) { diagnosis_ = diagnosis; }

  // The run document with the batches from index `since` on.
  std::string RunJson(int64_t since) const;

  void OnEpochStart(int epoch, int total_epochs, int64_t samples) override;
  void OnStep(const train::StepEvent& event) override;
  void OnEpochEnd(const train::EpochRecord& record, const train::EvalResult& validation,
                  const train::History& history) override;
  void OnTrainingEnd(const train::History& history, const train::EvalResult& validation) override;
  void OnControl(const train::ControlEvent& event) override;
  void OnRankTimings(const train::RankTimingSnapshot& snapshot) override;

 private:
  static int HandleRequest(mg_connection* conn, void* self);
  bool Authorized(mg_connection* conn) const;
  void Publish(const train::History& history, bool final);
  void FlushPending();  // Caller holds mutex_.

  RunInfo info_;
  std::optional<metrics::BasicAuth> auth_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
  const train::Diagnosis* diagnosis_ = nullptr;

  // Training thread only: batches and progress not yet handed to the snapshot.
  std::vector<train::BatchRecord> pending_;
  report::RunProgress pending_progress_;
  bool pending_progress_set_ = false;

  mutable std::mutex mutex_;  // Guards doc_ and batches_.
  report::RunDocument doc_;   // Without batches.
  std::vector<train::BatchRecord> batches_;
};

}  // namespace epochal::dashboard
