// epochal_control_load: load on a running job's control plane. N clients poll GetStatus
// at a fixed rate, M subscribers read WatchEvents (K of them stalled: they subscribe and
// never read), for a given time; prints the GetStatus latency percentiles and what the
// subscribers received. benchmarks/control_load.sh runs it against a training job and
// compares the job's throughput with an unloaded run (docs/control.md, "Load").
//
// usage: epochal_control_load --target HOST:PORT [--pollers 64] [--hz 10] [--watchers 8]
//                             [--stalled 1] [--seconds 20]
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "epochal/v1/control.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

// Set by SIGINT/SIGTERM: stop early and print what was measured.
std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051";
  int pollers = 64, watchers = 8, stalled = 1;
  double hz = 10, seconds = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* v = argv[i + 1];
    if (flag == "--target") {
      target = v;
    } else if (flag == "--pollers") {
      pollers = std::atoi(v);
    } else if (flag == "--hz") {
      hz = std::atof(v);
    } else if (flag == "--watchers") {
      watchers = std::atoi(v);
    } else if (flag == "--stalled") {
      stalled = std::atoi(v);
    } else if (flag == "--seconds") {
      seconds = std::atof(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  std::mutex mu;  // Guards latencies_us.
  std::vector<double> latencies_us;
  std::atomic<int64_t> errors{0};
  std::vector<std::thread> threads;
  // Each client its own channel (a separate connection), as separate tools would be.
  for (int p = 0; p < pollers; ++p) {
    threads.emplace_back([&, p] {
      auto stub = epochal::v1::TrainingControl::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
      const auto period =
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / hz));
      // Spread the pollers over one period.
      auto next = Clock::now() + period * p / std::max(1, pollers);
      std::vector<double> mine;
      while (next < end && !g_stop) {
        std::this_thread::sleep_until(next);
        next += period;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        epochal::v1::Status status;
        const auto t0 = Clock::now();
        const grpc::Status s = stub->GetStatus(&context, {}, &status);
        if (s.ok()) {
          mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        } else if (s.error_code() == grpc::StatusCode::UNAVAILABLE && !mine.empty()) {
          break;  // The job ended.
        } else {
          ++errors;
        }
      }
      std::lock_guard lock(mu);
      latencies_us.insert(latencies_us.end(), mine.begin(), mine.end());
    });
  }
  std::vector<std::unique_ptr<grpc::ClientContext>> watch_contexts;
  std::vector<std::atomic<int64_t>> received(static_cast<size_t>(watchers));
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<grpc::ClientReader<epochal::v1::Event>>> stalled_readers;
  std::vector<std::unique_ptr<epochal::v1::TrainingControl::Stub>> stalled_stubs;
  for (int w = 0; w < watchers; ++w) {
    watch_contexts.push_back(std::make_unique<grpc::ClientContext>());
    grpc::ClientContext* context = watch_contexts.back().get();
    if (w < stalled) {
      // Subscribes and never reads.
      stalled_stubs.push_back(epochal::v1::TrainingControl::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials())));
      stalled_readers.push_back(stalled_stubs.back()->WatchEvents(context, {}));
      continue;
    }
    threads.emplace_back([&, w, context] {
      auto stub = epochal::v1::TrainingControl::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
      auto reader = stub->WatchEvents(context, {});
      epochal::v1::Event event;
      while (reader->Read(&event)) ++received[static_cast<size_t>(w)];
      (void)reader->Finish();
    });
  }
  while (Clock::now() < end && !g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (auto& c : watch_contexts) c->TryCancel();
  for (auto& t : threads) t.join();
  std::sort(latencies_us.begin(), latencies_us.end());
  const auto pct = [&](double q) {
    if (latencies_us.empty()) return 0.0;
    return latencies_us[std::min(
        latencies_us.size() - 1,
        static_cast<size_t>(q * static_cast<double>(latencies_us.size())))];
  };
  std::printf(
      "GetStatus: %zu calls from %d pollers at %.0f Hz, %lld errors; latency p50 %.0f us, "
      "p99 %.0f us, max %.0f us\n",
      latencies_us.size(), pollers, hz, static_cast<long long>(errors.load()), pct(0.5), pct(0.99),
      latencies_us.empty() ? 0.0 : latencies_us.back());
  for (int w = stalled; w < watchers; ++w) {
    std::printf("watcher %d received %lld events\n", w,
                static_cast<long long>(received[static_cast<size_t>(w)].load()));
  }
  std::printf("%d stalled watcher(s) never read\n", stalled);
  return 0;
}
