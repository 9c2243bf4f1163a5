// What the metrics exporter costs the training loop: the per-step observer call, a
// timing snapshot's ingestion (every few seconds), and one scrape's serialization (on the
// exposer's thread, once per scrape interval), with and without a live scraper.
// Compare with a step's time (tens of milliseconds for MiniVGGNet at batch 32; see
// docs/benchmarks.md): the exporter's share of a step is the first figure divided by it.
#include <benchmark/benchmark.h>

#include <atomic>
#include <thread>

#include "epochal/metrics/exporter.h"
#include "epochal/train/rank_timing.h"

namespace {

using epochal::metrics::MetricsExporter;

epochal::train::StepEvent Event(int64_t step) {
  epochal::train::StepEvent e;
  e.epoch = 1;
  e.global_step = step;
  e.batch_loss = 0.5;
  e.batch_samples = 64;
  e.batch_correct = 40;
  e.learning_rate = 0.01;
  e.epoch_progress = 0.001 * static_cast<double>(step);
  return e;
}

void BM_OnStep(benchmark::State& state) {
  MetricsExporter exporter;
  int64_t step = 0;
  for (auto _ : state) exporter.OnStep(Event(++step));
}
BENCHMARK(BM_OnStep);

// OnStep while another thread scrapes as fast as it can (contention on the metrics).
void BM_OnStepWhileScraped(benchmark::State& state) {
  MetricsExporter exporter;
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load()) benchmark::DoNotOptimize(exporter.Scrape());
  });
  int64_t step = 0;
  for (auto _ : state) exporter.OnStep(Event(++step));
  stop = true;
  scraper.join();
}
BENCHMARK(BM_OnStepWhileScraped);

void BM_OnRankTimings(benchmark::State& state) {
  MetricsExporter exporter;
  const int ranks = static_cast<int>(state.range(0));
  epochal::train::RankTimingHistograms h;
  for (int i = 0; i < 100; ++i) h.Add(0.03, 0.001, 0.002, 32);
  std::vector<double> gathered;
  for (int r = 0; r < ranks; ++r)
    gathered.insert(gathered.end(), h.Packed().begin(), h.Packed().end());
  for (auto _ : state) {
    exporter.OnRankTimings(epochal::train::RankTimingHistograms::Unpack(gathered));
  }
}
BENCHMARK(BM_OnRankTimings)->Arg(2)->Arg(16);

void BM_Scrape(benchmark::State& state) {
  MetricsExporter exporter;
  epochal::train::RankTimingHistograms h;
  h.Add(0.03, 0.001, 0.002, 32);
  std::vector<double> gathered;
  for (int r = 0; r < state.range(0); ++r) {
    gathered.insert(gathered.end(), h.Packed().begin(), h.Packed().end());
  }
  exporter.OnRankTimings(epochal::train::RankTimingHistograms::Unpack(gathered));
  exporter.OnStep(Event(1));
  size_t bytes = 0;
  for (auto _ : state) bytes = exporter.Scrape().size();
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Scrape)->Arg(2)->Arg(16);

}  // namespace

BENCHMARK_MAIN();
